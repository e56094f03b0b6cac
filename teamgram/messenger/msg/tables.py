"""Tables owned by msg: message boxes and reactions (migration 0004).

Telegram's model: every user has a message box; a private message is stored
twice, once in the sender's box and once in the recipient's, each copy with
that box's own id. ``shared_id`` ties the copies together (edits, revoking
deletes, read receipts, reactions find the other copies through it).
"""

import sqlalchemy as sa

from teamgram.infra.database import BLOB, LONG_TEXT, metadata

# The last id handed out in each user's box.
message_boxes = sa.Table(
    "message_boxes",
    metadata,
    sa.Column("user_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("last_id", sa.Integer, nullable=False),
)

messages = sa.Table(
    "messages",
    metadata,
    sa.Column("user_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    # The dialog the copy belongs to, from the owner's side: 1 user, 2 chat, 3 channel.
    sa.Column("peer_type", sa.SmallInteger, nullable=False),
    sa.Column("peer_id", sa.BigInteger, nullable=False),
    sa.Column("from_id", sa.BigInteger, nullable=False),
    sa.Column("out", sa.Boolean, nullable=False),
    sa.Column("date", sa.BigInteger, nullable=False),
    sa.Column("shared_id", sa.BigInteger, nullable=False),
    # The sender's random_id (sender's copy only): a resend returns the first message.
    sa.Column("random_id", sa.BigInteger, nullable=True),
    # The owner's pts right after this copy arrived.
    sa.Column("pts", sa.Integer, nullable=False),
    sa.Column("text", LONG_TEXT, nullable=False),
    sa.Column("entities", BLOB, nullable=True),  # Vector<MessageEntity>
    sa.Column("reply_to_id", sa.Integer, nullable=True),
    sa.Column("fwd_from", BLOB, nullable=True),  # MessageFwdHeader
    sa.Column("media", BLOB, nullable=True),  # MessageMedia
    sa.Column("media_kind", sa.SmallInteger, nullable=False, server_default="0"),
    sa.Column("action", BLOB, nullable=True),  # MessageAction: a service message
    sa.Column("edit_date", sa.BigInteger, nullable=True),
    sa.Column("flags", sa.Integer, nullable=False, server_default="0"),
    sa.Column("grouped_id", sa.BigInteger, nullable=True),
    # The photo or document in ``media`` (0005): who may download it.
    sa.Column("media_id", sa.BigInteger, nullable=True),
    sa.Index("ix_messages_dialog", "user_id", "peer_type", "peer_id", "id"),
    sa.Index("ix_messages_media", "user_id", "media_id"),
    sa.Index("ix_messages_shared", "shared_id"),
    sa.UniqueConstraint("user_id", "random_id", name="uq_messages_random"),
)

# One row per user reacting to a message (all copies share it through shared_id).
message_reactions = sa.Table(
    "message_reactions",
    metadata,
    sa.Column("shared_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("user_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("emoticon", sa.String(32), primary_key=True),
    sa.Column("date", sa.BigInteger, nullable=False),
)

# Supergroups and channels (0008): every message is stored once, in its channel's
# own box, whoever reads it. ``shared_id`` keys reactions as for box copies.
channel_boxes = sa.Table(
    "channel_boxes",
    metadata,
    sa.Column("channel_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("last_id", sa.Integer, nullable=False),
)

channel_messages = sa.Table(
    "channel_messages",
    metadata,
    sa.Column("channel_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("from_id", sa.BigInteger, nullable=False),
    sa.Column("date", sa.BigInteger, nullable=False),
    sa.Column("shared_id", sa.BigInteger, nullable=False),
    sa.Column("random_id", sa.BigInteger, nullable=True),
    # The channel's pts right after this message arrived.
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
    sa.Index("ix_channel_messages_media", "media_id"),
    sa.UniqueConstraint("channel_id", "from_id", "random_id", name="uq_channel_messages_random"),
)
