"""Row locks on counter rows, for several writers sharing one database (#9).

A counter (a user's pts, a channel's pts, a box's last id) lives in one row.
With one writer it is cached; with several, each reads it ``FOR UPDATE`` inside
the transaction that advances it, so the next writer waits for this one's commit
and continues from the committed value: numbers stay unique and gap-free, and
commit in the order they were handed out.

The first row of a new user or channel is created the same way by every writer:
insert it if absent (``ON DUPLICATE KEY UPDATE`` with no change / ``ON CONFLICT
DO NOTHING``: the second writer waits for the first and then finds its row), then
lock it. No writer
ever fails on a duplicate key of a counter row.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa

from teamgram.infra.database import upsert_many
from teamgram.infra.group_commit import Tx

# IN lists per statement (no engine's parameter limit comes near).
CHUNK = 500


def insert_if_absent(dialect: str, table: sa.Table) -> Any:
    """An INSERT (for executemany) that skips rows whose primary key exists."""
    if dialect in ("mysql", "mariadb"):
        from sqlalchemy.dialects.mysql import insert as mysql_insert

        # Not INSERT IGNORE: that turns every error into a warning (and the driver
        # reports each skipped duplicate as one); this no-op update skips only those.
        key = next(iter(table.primary_key.columns))
        return mysql_insert(table).on_duplicate_key_update({key.name: key})
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table).on_conflict_do_nothing()
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table).on_conflict_do_nothing()


async def lock_rows(
    tx: Tx,
    key: sa.Column[Any],
    columns: Sequence[sa.Column[Any]],
    ids: list[int],
    new_row: Callable[[int], dict[str, Any]] | None = None,
) -> dict[int, Any]:
    """Lock the rows of ``ids`` (ascending, as every writer does) and return them by id.

    ``new_row``: rows that do not exist yet are created from it first, then locked
    (so every id comes back); without it missing ids are simply absent.
    """
    table = key.table
    assert isinstance(table, sa.Table)
    found: dict[int, Any] = {}
    for part in _chunks(sorted(ids)):
        rows = await tx.conn.execute(
            sa.select(key, *columns).where(key.in_(part)).order_by(key).with_for_update()
        )
        for r in rows:
            found[r[0]] = r
    missing = [i for i in ids if i not in found]
    if missing and new_row is not None:
        await tx.conn.execute(
            insert_if_absent(tx.conn.dialect.name, table), [new_row(i) for i in missing]
        )
        for part in _chunks(missing):
            rows = await tx.conn.execute(
                sa.select(key, *columns).where(key.in_(part)).order_by(key).with_for_update()
            )
            for r in rows:
                found[r[0]] = r
    return found


def mysql_rewrite(tx: Tx) -> bool:
    """Whether rows of a counter table are best rewritten with :func:`rewrite_rows`:
    MySQL drivers run an executemany UPDATE one statement per row (a round trip
    each), an upsert as one multi-row statement."""
    return tx.conn.dialect.name in ("mysql", "mariadb")


async def rewrite_rows(
    tx: Tx, table: sa.Table, columns: tuple[str, ...], rows: list[dict[str, Any]]
) -> None:
    """Set ``columns`` of existing rows (full rows, by primary key) in one statement."""
    await tx.conn.execute(upsert_many(tx.conn.dialect.name, table, columns), rows)


def _chunks(items: list[int]) -> list[list[int]]:
    return [items[i : i + CHUNK] for i in range(0, len(items), CHUNK)]
