"""messages: message boxes, reactions, dialogs, update state and update log

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

from teamgram.infra.database import BLOB, LONG_TEXT

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "message_boxes",
        sa.Column("user_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("last_id", sa.Integer, nullable=False),
    )
    op.create_table(
        "messages",
        sa.Column("user_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("peer_type", sa.SmallInteger, nullable=False),
        sa.Column("peer_id", sa.BigInteger, nullable=False),
        sa.Column("from_id", sa.BigInteger, nullable=False),
        sa.Column("out", sa.Boolean, nullable=False),
        sa.Column("date", sa.BigInteger, nullable=False),
        sa.Column("shared_id", sa.BigInteger, nullable=False),
        sa.Column("random_id", sa.BigInteger, nullable=True),
        sa.Column("pts", sa.Integer, nullable=False),
        sa.Column("text", LONG_TEXT, nullable=False),
        sa.Column("entities", BLOB, nullable=True),
        sa.Column("reply_to_id", sa.Integer, nullable=True),
        sa.Column("fwd_from", BLOB, nullable=True),
        sa.Column("media", BLOB, nullable=True),
        sa.Column("media_kind", sa.SmallInteger, nullable=False, server_default="0"),
        sa.Column("action", BLOB, nullable=True),
        sa.Column("edit_date", sa.BigInteger, nullable=True),
        sa.Column("flags", sa.Integer, nullable=False, server_default="0"),
        sa.Column("grouped_id", sa.BigInteger, nullable=True),
        sa.UniqueConstraint("user_id", "random_id", name="uq_messages_random"),
    )
    op.create_index("ix_messages_dialog", "messages", ["user_id", "peer_type", "peer_id", "id"])
    op.create_index("ix_messages_shared", "messages", ["shared_id"])
    op.create_table(
        "message_reactions",
        sa.Column("shared_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("user_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("emoticon", sa.String(32), primary_key=True),
        sa.Column("date", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "dialogs",
        sa.Column("user_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("peer_type", sa.SmallInteger, primary_key=True, autoincrement=False),
        sa.Column("peer_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("top_message", sa.Integer, nullable=False, server_default="0"),
        sa.Column("top_date", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("read_inbox_max_id", sa.Integer, nullable=False, server_default="0"),
        sa.Column("read_outbox_max_id", sa.Integer, nullable=False, server_default="0"),
        sa.Column("unread_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("unread_mark", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("pinned", sa.Integer, nullable=False, server_default="0"),
        sa.Column("folder_id", sa.Integer, nullable=False, server_default="0"),
        sa.Column("draft", sa.LargeBinary, nullable=True),
    )
    op.create_index("ix_dialogs_order", "dialogs", ["user_id", "top_date"])
    op.create_table(
        "user_update_state",
        sa.Column("user_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("pts", sa.Integer, nullable=False),
        sa.Column("qts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("seq", sa.Integer, nullable=False, server_default="0"),
        sa.Column("log_id", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("date", sa.BigInteger, nullable=False, server_default="0"),
    )
    op.create_table(
        "user_updates",
        sa.Column("user_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("log_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("pts", sa.Integer, nullable=False),
        sa.Column("pts_count", sa.Integer, nullable=False),
        sa.Column("date", sa.BigInteger, nullable=False),
        sa.Column("body", BLOB, nullable=False),
    )
    op.create_index("ix_user_updates_pts", "user_updates", ["user_id", "pts"])


def downgrade() -> None:
    op.drop_table("user_updates")
    op.drop_table("user_update_state")
    op.drop_table("dialogs")
    op.drop_table("message_reactions")
    op.drop_table("messages")
    op.drop_table("message_boxes")
