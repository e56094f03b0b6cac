"""sign-in: verified login codes, flood counters, account TTL

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("phone_codes") as batch:
        # auth.signIn accepted the code for a phone with no account: auth.signUp may follow.
        batch.add_column(
            sa.Column("verified", sa.Boolean, nullable=False, server_default=sa.false())
        )
    op.create_table(
        "auth_floods",
        sa.Column("flood_key", sa.String(96), primary_key=True),
        sa.Column("hits", sa.Integer, nullable=False),
        sa.Column("window_start", sa.BigInteger, nullable=False),
        sa.Column("blocked_until", sa.BigInteger, nullable=False, server_default="0"),
    )
    op.create_table(
        "account_ttl",
        sa.Column("user_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("days", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("account_ttl")
    op.drop_table("auth_floods")
    with op.batch_alter_table("phone_codes") as batch:
        batch.drop_column("verified")
