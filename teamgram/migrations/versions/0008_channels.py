"""supergroups and channels: channels, participants, admin log, channel messages and pts

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

from teamgram.infra.database import BLOB, LONG_TEXT

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("chats", sa.Column("migrated_to", sa.BigInteger, nullable=True))
    op.add_column(
        "chat_invites",
        sa.Column("peer_type", sa.SmallInteger, nullable=False, server_default="2"),
    )
    op.create_table(
        "channels",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("title", sa.String(255), nullable=False),
        sa.Column("about", sa.Text, nullable=False, server_default=""),
        sa.Column("creator_id", sa.BigInteger, nullable=False),
        sa.Column("date", sa.BigInteger, nullable=False),
        sa.Column("broadcast", sa.Boolean, nullable=False),
        sa.Column("megagroup", sa.Boolean, nullable=False),
        sa.Column("username", sa.String(64), nullable=True),
        sa.Column("username_lower", sa.String(64), nullable=True, unique=True),
        sa.Column("photo_id", sa.BigInteger, nullable=True),
        sa.Column("photo_stripped", sa.LargeBinary, nullable=True),
        sa.Column("signatures", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("slowmode_seconds", sa.Integer, nullable=False, server_default="0"),
        sa.Column("banned_rights", sa.LargeBinary, nullable=True),
        sa.Column("deleted", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("migrated_from_chat_id", sa.BigInteger, nullable=True),
        sa.Column("migrated_from_max_id", sa.Integer, nullable=True),
    )
    op.create_table(
        "channel_participants",
        sa.Column("channel_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("user_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("role", sa.SmallInteger, nullable=False),
        sa.Column("inviter_id", sa.BigInteger, nullable=False),
        sa.Column("date", sa.BigInteger, nullable=False),
        sa.Column("admin_rights", sa.LargeBinary, nullable=True),
        sa.Column("rank", sa.String(32), nullable=True),
        sa.Column("promoted_by", sa.BigInteger, nullable=True),
        sa.Column("banned_rights", sa.LargeBinary, nullable=True),
        sa.Column("kicked_by", sa.BigInteger, nullable=True),
    )
    op.create_index("ix_channel_participants_user", "channel_participants", ["user_id"])
    op.create_table(
        "channel_admin_log",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("channel_id", sa.BigInteger, nullable=False),
        sa.Column("user_id", sa.BigInteger, nullable=False),
        sa.Column("date", sa.BigInteger, nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("action", BLOB, nullable=False),
    )
    op.create_index("ix_channel_admin_log", "channel_admin_log", ["channel_id", "id"])
    op.create_table(
        "channel_boxes",
        sa.Column("channel_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("last_id", sa.Integer, nullable=False),
    )
    op.create_table(
        "channel_messages",
        sa.Column("channel_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("from_id", sa.BigInteger, nullable=False),
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
        sa.Column("media_id", sa.BigInteger, nullable=True),
        sa.Column("views", sa.Integer, nullable=False, server_default="0"),
        sa.Column("forwards", sa.Integer, nullable=False, server_default="0"),
        sa.Column("post_author", sa.String(128), nullable=True),
        sa.UniqueConstraint(
            "channel_id", "from_id", "random_id", name="uq_channel_messages_random"
        ),
    )
    op.create_index("ix_channel_messages_media", "channel_messages", ["media_id"])
    op.create_table(
        "channel_update_state",
        sa.Column("channel_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("pts", sa.Integer, nullable=False),
        sa.Column("date", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "channel_updates",
        sa.Column("channel_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("pts", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("pts_count", sa.Integer, nullable=False),
        sa.Column("date", sa.BigInteger, nullable=False),
        sa.Column("body", BLOB, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("channel_updates")
    op.drop_table("channel_update_state")
    op.drop_index("ix_channel_messages_media", "channel_messages")
    op.drop_table("channel_messages")
    op.drop_table("channel_boxes")
    op.drop_index("ix_channel_admin_log", "channel_admin_log")
    op.drop_table("channel_admin_log")
    op.drop_index("ix_channel_participants_user", "channel_participants")
    op.drop_table("channel_participants")
    op.drop_table("channels")
    with op.batch_alter_table("chat_invites") as batch:
        batch.drop_column("peer_type")
    with op.batch_alter_table("chats") as batch:
        batch.drop_column("migrated_to")
