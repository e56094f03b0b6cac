"""Tables owned by biz: users, privacy, contacts, blocks (0002), dialogs (0004), notify
(0006), basic groups (0007)."""

import sqlalchemy as sa

from teamgram.infra.database import BLOB, metadata

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("phone", sa.String(32), nullable=False, unique=True),
    sa.Column("first_name", sa.String(128), nullable=False, server_default=""),
    sa.Column("last_name", sa.String(128), nullable=False, server_default=""),
    # Lower-cased for uniqueness checks; the display form is `username`.
    sa.Column("username", sa.String(64), nullable=True),
    sa.Column("username_lower", sa.String(64), nullable=True, unique=True),
    sa.Column("about", sa.String(255), nullable=False, server_default=""),
    sa.Column("is_bot", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("deleted", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("last_seen_at", sa.BigInteger, nullable=False, server_default="0"),
    # The current profile photo (media's photos.id) and its stripped thumbnail (0005).
    sa.Column("photo_id", sa.BigInteger, nullable=True),
    sa.Column("photo_stripped", sa.LargeBinary, nullable=True),
)

# One row per (user, privacy key): the rules as Telegram's TL privacy rules,
# serialized (a Vector<PrivacyRule>), so every rule kind round-trips.
user_privacy = sa.Table(
    "user_privacy",
    metadata,
    sa.Column("user_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("key", sa.String(32), primary_key=True),
    sa.Column("rules", sa.LargeBinary, nullable=False),
)

contacts = sa.Table(
    "contacts",
    metadata,
    sa.Column("owner_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("contact_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("first_name", sa.String(128), nullable=False, server_default=""),
    sa.Column("last_name", sa.String(128), nullable=False, server_default=""),
    sa.Column("phone", sa.String(32), nullable=False, server_default=""),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Index("ix_contacts_contact", "contact_id"),
)

blocked = sa.Table(
    "blocked",
    metadata,
    sa.Column("owner_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("peer_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
)

# One row per (user, peer) conversation: what getDialogs lists (migration 0004).
dialogs = sa.Table(
    "dialogs",
    metadata,
    sa.Column("user_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("peer_type", sa.SmallInteger, primary_key=True, autoincrement=False),
    sa.Column("peer_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("top_message", sa.Integer, nullable=False, server_default="0"),
    sa.Column("top_date", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("read_inbox_max_id", sa.Integer, nullable=False, server_default="0"),
    sa.Column("read_outbox_max_id", sa.Integer, nullable=False, server_default="0"),
    sa.Column("unread_count", sa.Integer, nullable=False, server_default="0"),
    sa.Column("unread_mark", sa.Boolean, nullable=False, server_default=sa.false()),
    # 0: not pinned; otherwise the position among pinned dialogs (1 = top).
    sa.Column("pinned", sa.Integer, nullable=False, server_default="0"),
    sa.Column("folder_id", sa.Integer, nullable=False, server_default="0"),
    sa.Column("draft", sa.LargeBinary, nullable=True),  # DraftMessage
    sa.Index("ix_dialogs_order", "user_id", "top_date"),
)

# Per (user, peer or scope) notification settings: PeerNotifySettings serialized;
# peer_key "peer:<id>", "users", "chats" or "broadcasts" (migration 0006).
notify_settings = sa.Table(
    "notify_settings",
    metadata,
    sa.Column("user_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("peer_key", sa.String(64), primary_key=True),
    sa.Column("settings", sa.LargeBinary, nullable=False),
)

# Basic groups (migration 0007): their members are in chat_participants.
chats = sa.Table(
    "chats",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("title", sa.String(255), nullable=False),
    sa.Column("creator_id", sa.BigInteger, nullable=False),
    sa.Column("date", sa.BigInteger, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("deactivated", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("photo_id", sa.BigInteger, nullable=True),
    sa.Column("photo_stripped", sa.LargeBinary, nullable=True),
    sa.Column("banned_rights", sa.LargeBinary, nullable=True),  # ChatBannedRights
    # The supergroup it became (messages.migrateChat, 0008).
    sa.Column("migrated_to", sa.BigInteger, nullable=True),
)

# Invite links of basic groups and channels: https://t.me/+<hash>.
chat_invites = sa.Table(
    "chat_invites",
    metadata,
    sa.Column("hash", sa.String(32), primary_key=True),
    sa.Column("chat_id", sa.BigInteger, nullable=False),
    sa.Column("admin_id", sa.BigInteger, nullable=False),
    sa.Column("date", sa.BigInteger, nullable=False),
    sa.Column("expire_date", sa.BigInteger, nullable=True),
    sa.Column("usage_limit", sa.Integer, nullable=True),
    sa.Column("usage", sa.Integer, nullable=False, server_default="0"),
    sa.Column("revoked", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("title", sa.String(255), nullable=True),
    # 2: a basic group, 3: a channel or supergroup (0008; chat_id is then its id).
    sa.Column("peer_type", sa.SmallInteger, nullable=False, server_default="2"),
    sa.Index("ix_chat_invites_chat", "chat_id"),
)

chat_participants = sa.Table(
    "chat_participants",
    metadata,
    sa.Column("chat_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("user_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("inviter_id", sa.BigInteger, nullable=False),
    sa.Column("date", sa.BigInteger, nullable=False),
    sa.Column("admin", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Index("ix_chat_participants_user", "user_id"),
)

# Supergroups and broadcast channels (migration 0008). Their messages are stored
# once per channel by msg (channel_messages), not in every member's box.
channels = sa.Table(
    "channels",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("title", sa.String(255), nullable=False),
    sa.Column("about", sa.Text, nullable=False, server_default=""),
    sa.Column("creator_id", sa.BigInteger, nullable=False),
    sa.Column("date", sa.BigInteger, nullable=False),
    sa.Column("broadcast", sa.Boolean, nullable=False),
    sa.Column("megagroup", sa.Boolean, nullable=False),
    sa.Column("username", sa.String(64), nullable=True),
    # Usernames are unique without regard to case (and shared with users').
    sa.Column("username_lower", sa.String(64), nullable=True, unique=True),
    sa.Column("photo_id", sa.BigInteger, nullable=True),
    sa.Column("photo_stripped", sa.LargeBinary, nullable=True),
    sa.Column("signatures", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("slowmode_seconds", sa.Integer, nullable=False, server_default="0"),
    sa.Column("banned_rights", sa.LargeBinary, nullable=True),  # default ChatBannedRights
    sa.Column("deleted", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("migrated_from_chat_id", sa.BigInteger, nullable=True),
    sa.Column("migrated_from_max_id", sa.Integer, nullable=True),
)

# One row per member, admin, creator, restricted or kicked user (role column);
# leaving deletes the row.
channel_participants = sa.Table(
    "channel_participants",
    metadata,
    sa.Column("channel_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("user_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("role", sa.SmallInteger, nullable=False),
    sa.Column("inviter_id", sa.BigInteger, nullable=False),
    sa.Column("date", sa.BigInteger, nullable=False),
    sa.Column("admin_rights", sa.LargeBinary, nullable=True),  # ChatAdminRights
    sa.Column("rank", sa.String(32), nullable=True),
    sa.Column("promoted_by", sa.BigInteger, nullable=True),
    sa.Column("banned_rights", sa.LargeBinary, nullable=True),  # ChatBannedRights
    sa.Column("kicked_by", sa.BigInteger, nullable=True),
    sa.Index("ix_channel_participants_user", "user_id"),
)

# channels.getAdminLog: one row per admin action (ChannelAdminLogEventAction).
channel_admin_log = sa.Table(
    "channel_admin_log",
    metadata,
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("channel_id", sa.BigInteger, nullable=False),
    sa.Column("user_id", sa.BigInteger, nullable=False),
    sa.Column("date", sa.BigInteger, nullable=False),
    sa.Column("kind", sa.String(64), nullable=False),  # the action's constructor name
    sa.Column("action", BLOB, nullable=False),
    sa.Index("ix_channel_admin_log", "channel_id", "id"),
)
