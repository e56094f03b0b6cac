"""Tables owned by idgen (migration 0002)."""

import sqlalchemy as sa

from teamgram.infra.database import metadata

# Named sequences ("user_id", ...): handed out in blocks, so most ids cost no I/O.
id_sequences = sa.Table(
    "id_sequences",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.BigInteger, nullable=False),
)
