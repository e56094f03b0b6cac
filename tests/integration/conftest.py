"""Database engines for the integration tests: a fresh, empty database per module and engine.

Every test that uses :func:`database_url` (or :func:`new_database`, :func:`db`) runs
once per engine in :data:`ENGINES`. SQLite lives in a temporary directory; on
MariaDB and PostgreSQL a uniquely named database (``tg_test_<random>``) is created
through an administrative connection and dropped when the module is done.

Where the servers are (defaults: this machine's MariaDB and PostgreSQL)::

    TEAMGRAM_TEST_MARIADB_URL     mysql+asyncmy://root@127.0.0.1:3306/
    TEAMGRAM_TEST_POSTGRESQL_URL  postgresql+asyncpg://postgres@127.0.0.1:5432/postgres

The user in those URLs must be allowed to create and drop databases. An engine
that cannot be reached fails its tests when ``CI=true`` (CI promises all three),
and skips them, with the reason, anywhere else.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import secrets
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from teamgram.infra.database import normalize_url, open_database

# Reused from the end-to-end suite: the GC guard for Telethon failure reports and the
# session's RSA key (both register as this directory's hook and fixture).
from tests.e2e.conftest import pytest_runtest_makereport, server_key_pem  # noqa: F401

ENGINES = ["sqlite", "mariadb", "postgresql"]
ADMIN_URLS = {
    "mariadb": os.environ.get("TEAMGRAM_TEST_MARIADB_URL", "mysql+asyncmy://root@127.0.0.1:3306/"),
    "postgresql": os.environ.get(
        "TEAMGRAM_TEST_POSTGRESQL_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
    ),
}
CONNECT_TIMEOUT = 10.0
ADMIN_TIMEOUT = 60.0

# Why an engine could not be used, per engine, so a dead server costs one timeout per run.
_unreachable: dict[str, str] = {}


def in_ci() -> bool:
    return os.environ.get("CI") == "true"


def unavailable(engine: str, reason: str) -> NoReturn:
    """CI: fail (the suite promises every engine there); elsewhere: skip."""
    message = f"{engine} is not available: {reason}"
    if in_ci():
        pytest.fail(f"{message} (CI=true: every engine must be there)", pytrace=False)
    pytest.skip(message)


def run_private(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run ``coro`` to completion on a loop of its own, in a thread of its own.

    Works from synchronous fixtures and from inside a running test loop alike (which
    it blocks meanwhile); the loops pytest-asyncio manages are left alone.
    """
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="tg-test-admin") as pool:
        return pool.submit(asyncio.run, asyncio.wait_for(coro, ADMIN_TIMEOUT)).result()


def _admin_engine(admin: URL) -> AsyncEngine:
    connect_args: dict[str, Any] = (
        {"connect_timeout": int(CONNECT_TIMEOUT)}
        if admin.get_backend_name() in ("mysql", "mariadb")
        else {"timeout": CONNECT_TIMEOUT}
    )
    return create_async_engine(
        admin, isolation_level="AUTOCOMMIT", poolclass=NullPool, connect_args=connect_args
    )


async def _admin(admin: URL, statements: list[str]) -> None:
    engine = _admin_engine(admin)
    try:
        async with engine.connect() as conn:
            for statement in statements:
                await conn.exec_driver_sql(statement)
    finally:
        await engine.dispose()


def create_database(engine: str) -> URL:
    """A new empty database on ``engine`` (mariadb, postgresql); returns its URL."""
    admin = normalize_url(ADMIN_URLS[engine])
    name = f"tg_test_{secrets.token_hex(6)}"
    if engine == "mariadb":
        create = f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
    else:
        create = f"CREATE DATABASE \"{name}\" ENCODING 'UTF8' TEMPLATE template0"
    run_private(_admin(admin, [create]))
    return admin.set(database=name)


def drop_database(url: URL) -> None:
    """Drop a database :func:`create_database` made (by its URL)."""
    name = url.database
    assert name is not None and name.startswith("tg_test_"), name
    if url.get_backend_name() in ("mysql", "mariadb"):
        drop = f"DROP DATABASE IF EXISTS `{name}`"
        admin = normalize_url(ADMIN_URLS["mariadb"])
    else:
        drop = f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'  # PostgreSQL 13+
        admin = normalize_url(ADMIN_URLS["postgresql"])
    run_private(_admin(admin, [drop]))


def check_reachable(engine: str) -> None:
    """Fail or skip (see :func:`unavailable`) unless ``engine``'s server answers."""
    if engine == "sqlite":
        return
    if engine not in _unreachable:
        try:
            admin = normalize_url(ADMIN_URLS[engine])
            run_private(_admin(admin, ["SELECT 1"]))
            _unreachable[engine] = ""
        except Exception as exc:  # no driver, no server, no permission: all the same here
            first_line = (str(exc).splitlines() or [""])[0]  # not SQLAlchemy's link line
            _unreachable[engine] = f"{ADMIN_URLS[engine]}: {type(exc).__name__}: {first_line}"
    if _unreachable[engine]:
        unavailable(engine, _unreachable[engine])


@pytest.fixture(scope="module", params=ENGINES)
def engine_name(request: pytest.FixtureRequest) -> str:
    """The engine under test: sqlite, mariadb or postgresql."""
    name: str = request.param
    check_reachable(name)
    return name


@pytest.fixture(scope="module")
def new_database(
    engine_name: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[], str]]:
    """``new_database()``: the URL of another empty database; all dropped after the module."""
    created: list[URL] = []
    directory: Path | None = None

    def factory() -> str:
        nonlocal directory
        if engine_name == "sqlite":
            if directory is None:
                directory = tmp_path_factory.mktemp("sqlite")
            path = directory / f"tg_test_{secrets.token_hex(6)}.db"
            return f"sqlite+aiosqlite:///{path}"
        url = create_database(engine_name)
        created.append(url)
        return url.render_as_string(hide_password=False)

    try:
        yield factory
    finally:
        errors: list[str] = []
        for url in created:
            try:
                drop_database(url)
            except Exception as exc:
                errors.append(f"{url.database}: {exc}")
        if errors:
            pytest.fail("could not drop test databases: " + "; ".join(errors), pytrace=False)


@pytest.fixture(scope="module")
def database_url(new_database: Callable[[], str]) -> str:
    """A fresh, empty database for this test module on the engine under test."""
    return new_database()


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[AsyncEngine]:
    """The module's database, migrated to head; disposed after the test."""
    engine = await open_database(database_url)
    try:
        yield engine
    finally:
        await engine.dispose()
