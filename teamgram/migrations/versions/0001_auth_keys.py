"""authsession: auth keys (permanent and temporary) and their client info

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "auth_keys",
        sa.Column("auth_key_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("auth_key", sa.LargeBinary(256), nullable=False),
        sa.Column("key_type", sa.SmallInteger, nullable=False),  # 0 perm, 1 temp
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
    op.create_index("ix_auth_keys_perm", "auth_keys", ["perm_auth_key_id"])


def downgrade() -> None:
    op.drop_index("ix_auth_keys_perm", "auth_keys")
    op.drop_table("auth_keys")
