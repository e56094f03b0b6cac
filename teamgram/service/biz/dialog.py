"""biz/dialog: each user's conversations (what ``messages.getDialogs`` lists).

A dialog row keeps what a message box alone does not say cheaply: the top
message, read positions both ways, the unread count, the draft, pin position and
unread mark. The msg service changes it inside the same transaction as the
messages it describes (the ``Tx`` methods), so a dialog never points at a message
that was rolled back. Ordering follows Telegram: pinned dialogs first, in their
pinned order, then by the date of the top message, newest first.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from teamgram.infra.database import upsert, upsert_many
from teamgram.infra.group_commit import Tx
from teamgram.service.biz.peers import PEER_CHANNEL, PeerKey
from teamgram.service.biz.tables import dialogs
from teamgram.tl import decode

# Channel id -> (top message id, its date), from msg's channel boxes.
ChannelTops = Callable[[list[int]], Awaitable[dict[int, tuple[int, int]]]]

# Telegram's limit of pinned dialogs in the main list for a non-premium account.
PINNED_MAX = 5


@dataclass(slots=True)
class DialogRecord:
    user_id: int
    peer_type: int
    peer_id: int
    top_message: int = 0
    top_date: int = 0
    read_inbox_max_id: int = 0
    read_outbox_max_id: int = 0
    unread_count: int = 0
    unread_mark: bool = False
    pinned: int = 0
    folder_id: int = 0
    draft: bytes | None = None

    @property
    def peer(self) -> PeerKey:
        return self.peer_type, self.peer_id

    def draft_tl(self) -> Any:
        return decode(self.draft) if self.draft else None


def _record(row: Any) -> DialogRecord:
    return DialogRecord(
        user_id=row.user_id,
        peer_type=row.peer_type,
        peer_id=row.peer_id,
        top_message=row.top_message,
        top_date=row.top_date,
        read_inbox_max_id=row.read_inbox_max_id,
        read_outbox_max_id=row.read_outbox_max_id,
        unread_count=row.unread_count,
        unread_mark=bool(row.unread_mark),
        pinned=row.pinned,
        folder_id=row.folder_id,
        draft=row.draft,
    )


def _where(user_id: int, peer: PeerKey) -> Any:
    t = dialogs
    return sa.and_(t.c.user_id == user_id, t.c.peer_type == peer[0], t.c.peer_id == peer[1])


class DialogService:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    # ------------------------------------------------------- in a transaction
    async def on_message(
        self, tx: Tx, user_id: int, peer: PeerKey, msg_id: int, date: int, incoming: bool
    ) -> None:
        """A new message ``msg_id`` is the dialog's top; incoming ones count as unread.

        Staged in memory and written in one statement per batch (many messages of a
        batch share dialogs); any read of dialogs in the batch writes them first.
        """
        staged: dict[tuple[int, int, int], list[int]] | None = tx.scratch.get("dialog.tops")
        if staged is None:
            staged = tx.scratch["dialog.tops"] = {}
            tx.add_flusher("dialog.tops", self._write_tops)
        slot = staged.get((user_id, *peer))
        if slot is None:
            staged[(user_id, *peer)] = [msg_id, date, int(incoming)]
        else:
            slot[0], slot[1] = msg_id, date
            slot[2] += int(incoming)

    async def _write_tops(self, tx: Tx) -> None:
        staged: dict[tuple[int, int, int], list[int]] = tx.scratch.get("dialog.tops") or {}
        if not staged:
            return
        rows = [
            {
                "user_id": k[0],
                "peer_type": k[1],
                "peer_id": k[2],
                "top_message": v[0],
                "top_date": v[1],
                "unread_count": v[2],
            }
            for k, v in staged.items()
        ]
        staged.clear()
        stmt = upsert_many(
            tx.conn.dialect.name, dialogs, ("top_message", "top_date"), ("unread_count",)
        )
        await tx.conn.execute(stmt, rows)

    async def get_in(self, tx: Tx, user_id: int, peer: PeerKey) -> DialogRecord | None:
        await tx.flush()
        row = (await tx.conn.execute(sa.select(dialogs).where(_where(user_id, peer)))).first()
        return _record(row) if row is not None else None

    async def update_in(self, tx: Tx, user_id: int, peer: PeerKey, **values: Any) -> bool:
        """Set columns of an existing dialog; False when there is none."""
        await tx.flush()
        res = await tx.conn.execute(dialogs.update().where(_where(user_id, peer)).values(**values))
        return bool(res.rowcount)

    async def ensure_in(self, tx: Tx, user_id: int, peer: PeerKey, **values: Any) -> None:
        """Set columns, creating the dialog (empty) if needed: drafts and pins need no message."""
        await tx.flush()
        stmt = upsert(
            tx.conn.dialect.name,
            dialogs,
            {"user_id": user_id, "peer_type": peer[0], "peer_id": peer[1], **values},
            values,
        )
        await tx.conn.execute(stmt)

    async def delete_in(self, tx: Tx, user_id: int, peer: PeerKey) -> None:
        await tx.flush()
        await tx.conn.execute(dialogs.delete().where(_where(user_id, peer)))

    async def pinned_in(self, tx: Tx, user_id: int, folder_id: int = 0) -> list[DialogRecord]:
        await tx.flush()
        t = dialogs
        rows = await tx.conn.execute(
            sa.select(t)
            .where(t.c.user_id == user_id, t.c.pinned > 0, t.c.folder_id == folder_id)
            .order_by(t.c.pinned)
        )
        return [_record(r) for r in rows]

    # ------------------------------------------------------------------ reads
    async def get(self, user_id: int, peer: PeerKey) -> DialogRecord | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(sa.select(dialogs).where(_where(user_id, peer)))).first()
        return _record(row) if row is not None else None

    async def get_many(self, user_id: int, peers: list[PeerKey]) -> dict[PeerKey, DialogRecord]:
        if not peers:
            return {}
        t = dialogs
        conds = [sa.and_(t.c.peer_type == p[0], t.c.peer_id == p[1]) for p in set(peers)]
        async with self.engine.connect() as conn:
            rows = await conn.execute(sa.select(t).where(t.c.user_id == user_id, sa.or_(*conds)))
            return {(r.peer_type, r.peer_id): _record(r) for r in rows}

    async def pinned(self, user_id: int, folder_id: int = 0) -> list[DialogRecord]:
        t = dialogs
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                sa.select(t)
                .where(t.c.user_id == user_id, t.c.pinned > 0, t.c.folder_id == folder_id)
                .order_by(t.c.pinned)
            )
            return [_record(r) for r in rows]

    async def page(
        self,
        user_id: int,
        folder_id: int,
        offset_date: int,
        offset_id: int,
        limit: int,
        exclude_pinned: bool,
        channel_tops: ChannelTops | None = None,
    ) -> tuple[list[DialogRecord], int]:
        """One page of the dialog list and the total number of listed dialogs.

        The first page (no offset) starts with the pinned dialogs unless excluded;
        the rest go by (top date, top message) descending, strictly below the offset.
        A channel's top message lives with the channel (``channel_tops`` gives it),
        not in each member's row: channel dialogs are ordered in memory.
        """
        t = dialogs
        listed = sa.and_(t.c.user_id == user_id, t.c.folder_id == folder_id, t.c.top_message > 0)
        out: list[DialogRecord] = []
        first_page = not offset_date and not offset_id

        def below(top_date: int, top_message: int) -> bool:
            if first_page:
                return True
            if offset_date:
                return top_date < offset_date or (
                    top_date == offset_date and top_message < offset_id
                )
            return top_message < offset_id

        async with self.engine.connect() as conn:
            boxed = sa.and_(listed, t.c.peer_type != PEER_CHANNEL)
            total = (
                await conn.execute(sa.select(sa.func.count()).select_from(t).where(boxed))
            ).scalar_one()
            channel_rows = [
                _record(r)
                for r in await conn.execute(
                    sa.select(t).where(listed, t.c.peer_type == PEER_CHANNEL)
                )
            ]
            if channel_tops is not None and channel_rows:
                tops = await channel_tops([d.peer_id for d in channel_rows])
                for d in channel_rows:
                    if d.peer_id in tops:
                        d.top_message, d.top_date = tops[d.peer_id]
            total += len(channel_rows)
            if first_page and not exclude_pinned:
                rows = await conn.execute(
                    sa.select(t).where(listed, t.c.pinned > 0).order_by(t.c.pinned).limit(limit)
                )
                out = [_record(r) for r in rows]
                live = {d.peer: d for d in channel_rows}
                out = [live.get(d.peer, d) for d in out]
            cond = [boxed, t.c.pinned == 0] if not exclude_pinned else [boxed]
            if not first_page:
                cond.append(
                    sa.or_(
                        t.c.top_date < offset_date,
                        sa.and_(t.c.top_date == offset_date, t.c.top_message < offset_id),
                    )
                    if offset_date
                    else t.c.top_message < offset_id
                )
            if len(out) < limit:
                rows = await conn.execute(
                    sa.select(t)
                    .where(*cond)
                    .order_by(t.c.top_date.desc(), t.c.top_message.desc())
                    .limit(limit - len(out))
                )
                rest = [_record(r) for r in rows]
                rest += [
                    d
                    for d in channel_rows
                    if (exclude_pinned or d.pinned == 0) and below(d.top_date, d.top_message)
                ]
                rest.sort(key=lambda d: (d.top_date, d.top_message), reverse=True)
                out.extend(rest[: limit - len(out)])
        return out, int(total)

    async def unread_total(self, user_id: int) -> int:
        t = dialogs
        async with self.engine.connect() as conn:
            n = (
                await conn.execute(
                    sa.select(sa.func.coalesce(sa.func.sum(t.c.unread_count), 0)).where(
                        t.c.user_id == user_id
                    )
                )
            ).scalar_one()
        return int(n)

    async def with_drafts(self, user_id: int) -> list[DialogRecord]:
        t = dialogs
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                sa.select(t).where(t.c.user_id == user_id, t.c.draft.is_not(None))
            )
            return [_record(r) for r in rows]

    async def unread_marked(self, user_id: int) -> list[DialogRecord]:
        t = dialogs
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                sa.select(t).where(t.c.user_id == user_id, t.c.unread_mark == sa.true())
            )
            return [_record(r) for r in rows]
