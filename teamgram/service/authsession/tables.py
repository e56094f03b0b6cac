"""Tables owned by the authsession service (created by migration 0001)."""

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
)
