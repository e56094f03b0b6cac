"""basic groups: chats, their members and invite links

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "chats",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("title", sa.String(255), nullable=False),
        sa.Column("creator_id", sa.BigInteger, nullable=False),
        sa.Column("date", sa.BigInteger, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("deactivated", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("photo_id", sa.BigInteger, nullable=True),
        sa.Column("photo_stripped", sa.LargeBinary, nullable=True),
        sa.Column("banned_rights", sa.LargeBinary, nullable=True),
    )
    op.create_table(
        "chat_invites",
        sa.Column("hash", sa.String(32), primary_key=True),
        sa.Column("chat_id", sa.BigInteger, nullable=False),
        sa.Column("admin_id", sa.BigInteger, nullable=False),
        sa.Column("date", sa.BigInteger, nullable=False),
        sa.Column("expire_date", sa.BigInteger, nullable=True),
        sa.Column("usage_limit", sa.Integer, nullable=True),
        sa.Column("usage", sa.Integer, nullable=False, server_default="0"),
        sa.Column("revoked", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("title", sa.String(255), nullable=True),
    )
    op.create_index("ix_chat_invites_chat", "chat_invites", ["chat_id"])
    op.create_table(
        "chat_participants",
        sa.Column("chat_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("user_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("inviter_id", sa.BigInteger, nullable=False),
        sa.Column("date", sa.BigInteger, nullable=False),
        sa.Column("admin", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    op.create_index("ix_chat_participants_user", "chat_participants", ["user_id"])


def downgrade() -> None:
    op.drop_index("ix_chat_participants_user", "chat_participants")
    op.drop_table("chat_participants")
    op.drop_index("ix_chat_invites_chat", "chat_invites")
    op.drop_table("chat_invites")
    op.drop_table("chats")
