"""Tables owned by sync: each user's update state and update log (migration 0004)."""

import sqlalchemy as sa

from teamgram.infra.database import BLOB, metadata

# One row per user: the pts/qts/seq a device compares against, and the log cursor.
user_update_state = sa.Table(
    "user_update_state",
    metadata,
    sa.Column("user_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("pts", sa.Integer, nullable=False),
    sa.Column("qts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("seq", sa.Integer, nullable=False, server_default="0"),
    # Position of the newest log entry (entries without pts have one too).
    sa.Column("log_id", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("date", sa.BigInteger, nullable=False, server_default="0"),
)

# Every update a user's devices must be able to catch up on, in order. ``pts`` is
# the user's pts after the update (unchanged, with pts_count 0, for updates that
# carry none, e.g. drafts); ``body`` is the Update serialized in the newest layer.
user_updates = sa.Table(
    "user_updates",
    metadata,
    sa.Column("user_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("log_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("pts", sa.Integer, nullable=False),
    sa.Column("pts_count", sa.Integer, nullable=False),
    sa.Column("date", sa.BigInteger, nullable=False),
    sa.Column("body", BLOB, nullable=False),
    sa.Index("ix_user_updates_pts", "user_id", "pts"),
)

# Channels and supergroups (0008): one pts per channel, shared by every member,
# and the channel's update log (every entry advances the pts).
channel_update_state = sa.Table(
    "channel_update_state",
    metadata,
    sa.Column("channel_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("pts", sa.Integer, nullable=False),
    sa.Column("date", sa.BigInteger, nullable=False),
)

channel_updates = sa.Table(
    "channel_updates",
    metadata,
    sa.Column("channel_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("pts", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("pts_count", sa.Integer, nullable=False),
    sa.Column("date", sa.BigInteger, nullable=False),
    sa.Column("body", BLOB, nullable=False),
)
