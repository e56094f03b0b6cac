"""notify settings: per user and peer (or scope), kept across restarts

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notify_settings",
        sa.Column("user_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("peer_key", sa.String(64), primary_key=True),
        sa.Column("settings", sa.LargeBinary, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("notify_settings")
