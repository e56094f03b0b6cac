"""Telegram's history paging, for a user's box and for a channel's alike."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa


async def history_page(
    conn: Any,
    table: sa.Table,
    base: list[Any],
    *,
    offset_id: int = 0,
    offset_date: int = 0,
    add_offset: int = 0,
    limit: int = 100,
    max_id: int = 0,
    min_id: int = 0,
) -> tuple[list[Any], int]:
    """Rows of a page, newest first, and the total matching ``base``.

    Messages "before" the offset have ids below ``offset_id`` (dates below
    ``offset_date``); a negative ``add_offset`` starts that many messages after it.
    """
    m = table
    bounded = list(base)
    if max_id:
        bounded.append(m.c.id < max_id)
    if min_id:
        bounded.append(m.c.id > min_id)
    older = list(bounded)
    newer = list(bounded)
    # offset_id wins over offset_date (clients send both: the last message's id
    # and date; ids within one second would be lost to a date bound).
    if offset_id:
        older.append(m.c.id < offset_id)
        newer.append(m.c.id >= offset_id)
    elif offset_date:
        older.append(m.c.date < offset_date)
        newer.append(m.c.date >= offset_date)
    total = (
        await conn.execute(sa.select(sa.func.count()).select_from(m).where(*base))
    ).scalar_one()
    page: list[Any] = []
    if add_offset < 0 and (offset_id or offset_date):
        first = list(
            await conn.execute(sa.select(m).where(*newer).order_by(m.c.id).limit(-add_offset))
        )
        page = first[::-1][: max(limit, 0)]
        rest = limit + add_offset
        if rest > 0:
            page += list(
                await conn.execute(sa.select(m).where(*older).order_by(m.c.id.desc()).limit(rest))
            )
    elif limit > 0:
        page = list(
            await conn.execute(
                sa.select(m)
                .where(*older)
                .order_by(m.c.id.desc())
                .offset(max(add_offset, 0))
                .limit(limit)
            )
        )
    return page, int(total)
