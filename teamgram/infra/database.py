"""Business-data engine: SQLAlchemy async on SQLite (default), MySQL/MariaDB or PostgreSQL.

Every service defines its tables on the shared :data:`metadata` (each service
owns its own tables and never reads another's); Alembic migrations under
``teamgram/migrations`` create them, run at startup by :func:`open_database`.

URLs (``database.url`` / ``TEAMGRAM_DATABASE_URL``)::

    sqlite+aiosqlite:///data/teamgram.db            (the default, in the data directory)
    mysql+asyncmy://USER:PASSWORD@HOST:3306/DB      (MySQL 8 or MariaDB 10.5+)
    postgresql+asyncpg://USER:PASSWORD@HOST:5432/DB (PostgreSQL 13+)

A URL without a driver (``mysql://``, ``mariadb://``, ``postgresql://``,
``postgres://``, ``sqlite://``) gets the async driver above. See docs/database.md.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

log = logging.getLogger("teamgram.database")

metadata = sa.MetaData()
# Binary column for serialized TL that may exceed 64 KiB (MySQL's BLOB): MEDIUMBLOB there.
BLOB = sa.LargeBinary().with_variant(mysql.MEDIUMBLOB(), "mysql", "mariadb")
# Text up to 16 MiB on MySQL (TEXT stops at 64 KiB); TEXT elsewhere.
LONG_TEXT = sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")
MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"

# Driver for a URL that names none; every engine needs an asyncio driver here.
ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "mysql": "mysql+asyncmy",
    "mariadb": "mariadb+asyncmy",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",  # Heroku-style spelling SQLAlchemy does not accept
}

# MySQL/MariaDB: the only charset that stores all of Unicode (utf8/utf8mb3 loses emoji),
# and a binary collation so strings compare exactly, as on SQLite and PostgreSQL.
MYSQL_CHARSET = "utf8mb4"
MYSQL_COLLATION = "utf8mb4_bin"
# Strict: an over-long value is an error (as on PostgreSQL), never silently truncated.
# The modes MySQL 8 and MariaDB 10.2+ both know (and default to, less ONLY_FULL_GROUP_BY).
MYSQL_SQL_MODE = "STRICT_TRANS_TABLES,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION"
# Below MySQL's default wait_timeout (8 h) and typical proxy/firewall idle limits.
POOL_RECYCLE_SECONDS = 1800


class DatabaseError(RuntimeError):
    """The configured database cannot be used as it is (the message says why and what to do)."""


def normalize_url(url: str | URL) -> URL:
    """The URL with its async driver filled in and, for MySQL, ``charset=utf8mb4``."""
    u = make_url(url)
    if "+" not in u.drivername and u.drivername in ASYNC_DRIVERS:
        u = u.set(drivername=ASYNC_DRIVERS[u.drivername])
    if u.get_backend_name() in ("mysql", "mariadb"):
        charset = u.query.get("charset")
        if charset is None:
            u = u.update_query_dict({"charset": MYSQL_CHARSET})
        elif charset != MYSQL_CHARSET:
            raise DatabaseError(
                f"database url: charset={charset!r}; teamgram needs charset={MYSQL_CHARSET} "
                "(any other MySQL charset cannot store every character of a name or message)"
            )
    return u


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # WAL + NORMAL: durable across process crashes, group-committed, ~4.5 us/row batched.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.close()


class _AlembicPkNameNote(logging.Filter):
    """Drops MySQL's note that the name of alembic_version's primary key is ignored
    (a MySQL primary key is always named PRIMARY); asyncmy logs it as a warning."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "alembic_version_pkc" not in record.getMessage()


_PK_NAME_NOTE = _AlembicPkNameNote()


def _mysql_session(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute(f"SET SESSION sql_mode = '{MYSQL_SQL_MODE}'")
    cur.close()


def _mysql_database_charset(sync_conn: sa.Connection) -> None:
    """Make the database's default charset utf8mb4/utf8mb4_bin, so the tables the
    migrations create get it (they name no charset of their own).

    Only tables created afterwards are affected: on a database the migrations already
    ran on, this changes nothing that exists. Needs the ALTER privilege on the
    database (tools/create_mysql_user.sh grants it and creates the database so).
    """
    name, charset, collation = sync_conn.exec_driver_sql(
        "SELECT DATABASE(), @@character_set_database, @@collation_database"
    ).one()
    if name is None:
        raise DatabaseError("database url names no database (mysql+asyncmy://USER@HOST/DB)")
    if (charset, collation) == (MYSQL_CHARSET, MYSQL_COLLATION):
        return
    quoted = sync_conn.dialect.identifier_preparer.quote_identifier(name)
    try:
        sync_conn.exec_driver_sql(
            f"ALTER DATABASE {quoted} CHARACTER SET {MYSQL_CHARSET} COLLATE {MYSQL_COLLATION}"
        )
    except DBAPIError as exc:
        if charset == MYSQL_CHARSET:
            log.warning(
                "database %s: default collation %s, not %s (no privilege to change it: %s); "
                "strings compare as that collation does",
                name,
                collation,
                MYSQL_COLLATION,
                exc.orig,
            )
            return
        raise DatabaseError(
            f"database {name} has default charset {charset}, and it could not be changed "
            f"({exc.orig}); run: ALTER DATABASE {quoted} CHARACTER SET {MYSQL_CHARSET} "
            f"COLLATE {MYSQL_COLLATION}"
        ) from exc
    log.warning(
        "database %s: default charset/collation changed from %s/%s to %s/%s",
        name,
        charset,
        collation,
        MYSQL_CHARSET,
        MYSQL_COLLATION,
    )


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def _upgrade(sync_conn: sa.Connection) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = sync_conn
    command.upgrade(cfg, "head")


def make_engine(url: str | URL) -> AsyncEngine:
    """The engine for ``url`` with this project's per-dialect settings; no migrations."""
    u = normalize_url(url)
    backend = u.get_backend_name()
    kwargs: dict[str, Any] = {}
    if backend == "sqlite":
        if u.database and u.database != ":memory:" and not u.database.startswith("file:"):
            Path(u.database).parent.mkdir(parents=True, exist_ok=True)
    else:
        # A server may drop idle connections (restart, wait_timeout, a proxy): test each
        # connection on checkout and replace it after a while instead of failing a request.
        kwargs.update(pool_pre_ping=True, pool_recycle=POOL_RECYCLE_SECONDS)
        if backend in ("mysql", "mariadb"):
            # PostgreSQL's default: InnoDB's REPEATABLE READ takes gap locks, and two
            # sign-ups (a range DELETE of old codes, an INSERT after an UPDATE that
            # matched nothing) deadlocked each other (answered 500 INTERNAL).
            kwargs["isolation_level"] = "READ COMMITTED"
    engine = create_async_engine(u, **kwargs)
    if backend == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    elif backend in ("mysql", "mariadb"):
        event.listen(engine.sync_engine, "connect", _mysql_session)
        logging.getLogger(u.get_driver_name()).addFilter(_PK_NAME_NOTE)  # repeats are ignored
    return engine


async def open_database(url: str | URL) -> AsyncEngine:
    """Create the engine and bring the schema to the newest migration."""
    engine = make_engine(url)
    try:
        dialect = engine.dialect.name
        if dialect in ("mysql", "mariadb"):
            # Processes of a cluster start together: one migrates, the others wait
            # for it (a named lock held by a connection of its own) and find it done.
            async with engine.connect() as lock:
                got = await lock.scalar(sa.text("SELECT GET_LOCK('teamgram_migrate', 120)"))
                if got != 1:
                    raise DatabaseError("another process held the migration lock for 120 s")
                try:
                    async with engine.connect() as conn:  # DDL: MySQL commits it by itself
                        await conn.run_sync(_mysql_database_charset)
                    async with engine.begin() as conn:
                        await conn.run_sync(_upgrade)
                finally:
                    await lock.execute(sa.text("SELECT RELEASE_LOCK('teamgram_migrate')"))
        else:
            async with engine.begin() as conn:
                if dialect == "postgresql":  # held until this transaction ends
                    await conn.execute(sa.text("SELECT pg_advisory_xact_lock(7270523)"))
                await conn.run_sync(_upgrade)
    except BaseException:
        await engine.dispose()
        raise
    log.info(
        "database: %s (%s %s)",
        engine.url.render_as_string(hide_password=True),
        engine.dialect.name,
        ".".join(map(str, engine.dialect.server_version_info or ())),
    )
    return engine


def upsert(dialect: str, table: sa.Table, values: dict[str, Any], update: dict[str, Any]) -> Any:
    """INSERT ... or UPDATE on a primary-key conflict, in ``dialect``'s own syntax.

    ``update`` values may use the table's columns (``t.c.n + 1``): they name the
    existing row's values on every engine.
    """
    if dialect in ("mysql", "mariadb"):
        from sqlalchemy.dialects.mysql import insert as mysql_insert

        return mysql_insert(table).values(**values).on_duplicate_key_update(**update)
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return (
            pg_insert(table)
            .values(**values)
            .on_conflict_do_update(index_elements=list(table.primary_key.columns), set_=update)
        )
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return (
        sqlite_insert(table)
        .values(**values)
        .on_conflict_do_update(index_elements=list(table.primary_key.columns), set_=update)
    )


_UPSERTS: dict[tuple[str, str, tuple[str, ...], tuple[str, ...]], Any] = {}


def upsert_many(
    dialect: str, table: sa.Table, replace: tuple[str, ...], add: tuple[str, ...] = ()
) -> Any:
    """An upsert for ``conn.execute(stmt, rows)`` (executemany), built once per shape.

    On a primary-key conflict the ``replace`` columns take the new row's value and
    the ``add`` columns add it to what is stored (counters).
    """
    key = (dialect, table.name, replace, add)
    stmt = _UPSERTS.get(key)
    if stmt is not None:
        return stmt
    if dialect in ("mysql", "mariadb"):
        from sqlalchemy.dialects.mysql import insert as mysql_insert

        ins = mysql_insert(table)
        new = ins.inserted
        stmt = ins.on_duplicate_key_update(
            {**{c: new[c] for c in replace}, **{c: table.c[c] + new[c] for c in add}}
        )
    elif dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        pg = pg_insert(table)
        stmt = pg.on_conflict_do_update(
            index_elements=list(table.primary_key.columns),
            set_={
                **{c: pg.excluded[c] for c in replace},
                **{c: table.c[c] + pg.excluded[c] for c in add},
            },
        )
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        lite = sqlite_insert(table)
        stmt = lite.on_conflict_do_update(
            index_elements=list(table.primary_key.columns),
            set_={
                **{c: lite.excluded[c] for c in replace},
                **{c: table.c[c] + lite.excluded[c] for c in add},
            },
        )
    _UPSERTS[key] = stmt
    return stmt
