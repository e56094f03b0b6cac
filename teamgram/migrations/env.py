"""Alembic environment: runs on the connection open_database() hands over."""

from alembic import context

import teamgram.messenger.msg.tables  # each registers its tables
import teamgram.messenger.sync.tables
import teamgram.service.authsession.tables
import teamgram.service.biz.tables
import teamgram.service.idgen.tables
import teamgram.service.media.tables  # noqa: F401
from teamgram.infra.database import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only via teamgram.infra.database
    raise RuntimeError("run migrations through teamgram.infra.database.open_database")
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
