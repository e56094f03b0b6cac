"""Tables owned by media: photo and document metadata (migration 0005).

The bytes live in the object store (dfs): a photo's sizes in bucket ``photos``
as ``<id>_<type>``; a document in ``documents`` (or ``videos``) as ``<id>``, its
thumbnails in ``photos`` as ``d<id>_<type>``.
"""

import sqlalchemy as sa

from teamgram.infra.database import BLOB, metadata

photos = sa.Table(
    "photos",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("access_hash", sa.BigInteger, nullable=False),
    sa.Column("owner_id", sa.BigInteger, nullable=False),
    sa.Column("date", sa.BigInteger, nullable=False),
    sa.Column("width", sa.Integer, nullable=False),
    sa.Column("height", sa.Integer, nullable=False),
    # Vector<PhotoSize>: photoSize (w, h, size per type) and photoStrippedSize.
    sa.Column("sizes", BLOB, nullable=False),
    # One of the owner's profile photos (photos.getUserPhotos lists these).
    sa.Column("profile", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Index("ix_photos_owner", "owner_id", "profile", "date"),
)

documents = sa.Table(
    "documents",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("access_hash", sa.BigInteger, nullable=False),
    sa.Column("owner_id", sa.BigInteger, nullable=False),
    sa.Column("date", sa.BigInteger, nullable=False),
    sa.Column("mime_type", sa.String(255), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("bucket", sa.String(32), nullable=False),
    sa.Column("attributes", BLOB, nullable=False),  # Vector<DocumentAttribute>
    sa.Column("thumbs", BLOB, nullable=True),  # Vector<PhotoSize>
)
