"""media: photos, documents, profile photos, and the media a message holds

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

from teamgram.infra.database import BLOB

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "photos",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("access_hash", sa.BigInteger, nullable=False),
        sa.Column("owner_id", sa.BigInteger, nullable=False),
        sa.Column("date", sa.BigInteger, nullable=False),
        sa.Column("width", sa.Integer, nullable=False),
        sa.Column("height", sa.Integer, nullable=False),
        sa.Column("sizes", BLOB, nullable=False),
        sa.Column("profile", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    op.create_index("ix_photos_owner", "photos", ["owner_id", "profile", "date"])
    op.create_table(
        "documents",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("access_hash", sa.BigInteger, nullable=False),
        sa.Column("owner_id", sa.BigInteger, nullable=False),
        sa.Column("date", sa.BigInteger, nullable=False),
        sa.Column("mime_type", sa.String(255), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("bucket", sa.String(32), nullable=False),
        sa.Column("attributes", BLOB, nullable=False),
        sa.Column("thumbs", BLOB, nullable=True),
    )
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("photo_id", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("photo_stripped", sa.LargeBinary, nullable=True))
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("media_id", sa.BigInteger, nullable=True))
    op.create_index("ix_messages_media", "messages", ["user_id", "media_id"])


def downgrade() -> None:
    op.drop_index("ix_messages_media", "messages")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("media_id")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("photo_stripped")
        batch.drop_column("photo_id")
    op.drop_table("documents")
    op.drop_index("ix_photos_owner", "photos")
    op.drop_table("photos")
