"""Tables owned by the authsession service (created by migrations 0001-0003)."""

import sqlalchemy as sa

from teamgram.infra.database import metadata

KEY_PERM = 0
KEY_TEMP = 1

auth_keys = sa.Table(
    "auth_keys",
    metadata,
    sa.Column("auth_key_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("auth_key", sa.LargeBinary(256), nullable=False),
    sa.Column("key_type", sa.SmallInteger, nullable=False),
    sa.Column("dc_id", sa.Integer, nullable=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("expires_at", sa.BigInteger, nullable=True),
    sa.Column("perm_auth_key_id", sa.BigInteger, nullable=True),
    sa.Column("layer", sa.Integer, nullable=False, server_default="0"),
    sa.Column("api_id", sa.Integer, nullable=False, server_default="0"),
    sa.Column("device_model", sa.String(255), nullable=False, server_default=""),
    sa.Column("system_version", sa.String(255), nullable=False, server_default=""),
    sa.Column("app_version", sa.String(255), nullable=False, server_default=""),
    sa.Column("system_lang_code", sa.String(64), nullable=False, server_default=""),
    sa.Column("lang_pack", sa.String(64), nullable=False, server_default=""),
    sa.Column("lang_code", sa.String(64), nullable=False, server_default=""),
    sa.Column("client_ip", sa.String(64), nullable=False, server_default=""),
    sa.Index("ix_auth_keys_perm", "perm_auth_key_id"),
)

# A signed-in device: the permanent auth key it signed in with, and its user.
authorizations = sa.Table(
    "authorizations",
    metadata,
    sa.Column("auth_key_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("user_id", sa.BigInteger, nullable=False, index=True),
    # account.getAuthorizations / resetAuthorization identify devices by this.
    sa.Column("hash", sa.BigInteger, nullable=False, unique=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("active_at", sa.BigInteger, nullable=False),
    # 2FA: signed in with the code, the password is still to be checked.
    sa.Column("password_pending", sa.Boolean, nullable=False, server_default=sa.false()),
)

# Login codes sent by auth.sendCode (expiring, with an attempt counter).
phone_codes = sa.Table(
    "phone_codes",
    metadata,
    sa.Column("phone_code_hash", sa.String(64), primary_key=True),
    sa.Column("phone", sa.String(32), nullable=False, index=True),
    sa.Column("code", sa.String(16), nullable=False),
    sa.Column("auth_key_id", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("expires_at", sa.BigInteger, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("canceled", sa.Boolean, nullable=False, server_default=sa.false()),
    # auth.signIn accepted the code for a phone with no account: auth.signUp may follow.
    sa.Column("verified", sa.Boolean, nullable=False, server_default=sa.false()),
)

# QR login: auth.exportLoginToken on the new device, acceptLoginToken on a signed-in one.
login_tokens = sa.Table(
    "login_tokens",
    metadata,
    # VARBINARY on MySQL/MariaDB: a BLOB cannot be a key there.
    sa.Column(
        "token",
        sa.LargeBinary(32).with_variant(sa.VARBINARY(32), "mysql", "mariadb"),
        primary_key=True,
    ),
    sa.Column("auth_key_id", sa.BigInteger, nullable=False, index=True),
    sa.Column("expires_at", sa.BigInteger, nullable=False),
    sa.Column("accepted_user_id", sa.BigInteger, nullable=True),
)

# 2FA (SRP): the client's final KdfAlgo and the verifier v = g^x mod p.
user_passwords = sa.Table(
    "user_passwords",
    metadata,
    sa.Column("user_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("salt1", sa.LargeBinary(256), nullable=False),
    sa.Column("salt2", sa.LargeBinary(256), nullable=False),
    sa.Column("verifier", sa.LargeBinary(256), nullable=False),
    sa.Column("hint", sa.String(255), nullable=False, server_default=""),
    sa.Column("email", sa.String(255), nullable=False, server_default=""),
)

# Flood control: attempts per key ("send:<phone>", "code_fail:<phone>"...) in a
# fixed window, and a block set once a limit is crossed. Persisted, so a restart
# does not hand a code guesser a fresh budget.
auth_floods = sa.Table(
    "auth_floods",
    metadata,
    sa.Column("flood_key", sa.String(96), primary_key=True),
    sa.Column("hits", sa.Integer, nullable=False),
    sa.Column("window_start", sa.BigInteger, nullable=False),
    sa.Column("blocked_until", sa.BigInteger, nullable=False, server_default="0"),
)

# account.setAccountTTL: delete the account after this many days without a signed-in
# device being active (kept beside the authorizations that say when that was).
account_ttl = sa.Table(
    "account_ttl",
    metadata,
    sa.Column("user_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("days", sa.Integer, nullable=False),
)
