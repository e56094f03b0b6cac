"""accounts: ids, users, privacy, contacts, blocks, authorizations, codes, QR tokens, 2FA

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "id_sequences",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("phone", sa.String(32), nullable=False, unique=True),
        sa.Column("first_name", sa.String(128), nullable=False, server_default=""),
        sa.Column("last_name", sa.String(128), nullable=False, server_default=""),
        sa.Column("username", sa.String(64), nullable=True),
        sa.Column("username_lower", sa.String(64), nullable=True, unique=True),
        sa.Column("about", sa.String(255), nullable=False, server_default=""),
        sa.Column("is_bot", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("deleted", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("last_seen_at", sa.BigInteger, nullable=False, server_default="0"),
    )
    op.create_table(
        "user_privacy",
        sa.Column("user_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("key", sa.String(32), primary_key=True),
        sa.Column("rules", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "contacts",
        sa.Column("owner_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("contact_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("first_name", sa.String(128), nullable=False, server_default=""),
        sa.Column("last_name", sa.String(128), nullable=False, server_default=""),
        sa.Column("phone", sa.String(32), nullable=False, server_default=""),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_contacts_contact", "contacts", ["contact_id"])
    op.create_table(
        "blocked",
        sa.Column("owner_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("peer_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "authorizations",
        sa.Column("auth_key_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("user_id", sa.BigInteger, nullable=False),
        sa.Column("hash", sa.BigInteger, nullable=False, unique=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("active_at", sa.BigInteger, nullable=False),
        sa.Column("password_pending", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    op.create_index("ix_authorizations_user_id", "authorizations", ["user_id"])
    op.create_table(
        "phone_codes",
        sa.Column("phone_code_hash", sa.String(64), primary_key=True),
        sa.Column("phone", sa.String(32), nullable=False),
        sa.Column("code", sa.String(16), nullable=False),
        sa.Column("auth_key_id", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("canceled", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    op.create_index("ix_phone_codes_phone", "phone_codes", ["phone"])
    op.create_table(
        "login_tokens",
        # VARBINARY on MySQL/MariaDB: a BLOB cannot be a key there (error 1170).
        sa.Column(
            "token",
            sa.LargeBinary(32).with_variant(sa.VARBINARY(32), "mysql", "mariadb"),
            primary_key=True,
        ),
        sa.Column("auth_key_id", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
        sa.Column("accepted_user_id", sa.BigInteger, nullable=True),
    )
    op.create_index("ix_login_tokens_auth_key_id", "login_tokens", ["auth_key_id"])
    op.create_table(
        "user_passwords",
        sa.Column("user_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("salt1", sa.LargeBinary(256), nullable=False),
        sa.Column("salt2", sa.LargeBinary(256), nullable=False),
        sa.Column("verifier", sa.LargeBinary(256), nullable=False),
        sa.Column("hint", sa.String(255), nullable=False, server_default=""),
        sa.Column("email", sa.String(255), nullable=False, server_default=""),
    )


def downgrade() -> None:
    for name in (
        "user_passwords",
        "login_tokens",
        "phone_codes",
        "authorizations",
        "blocked",
        "contacts",
        "user_privacy",
        "users",
        "id_sequences",
    ):
        op.drop_table(name)
