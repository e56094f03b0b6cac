"""The conditions messages.search / searchGlobal put on a box (msg's own table).

Handlers pass the request's text, filter, dates and sender; what they mean in
columns (text, flags, media_kind, date, from_id) stays inside msg.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from teamgram.messenger.msg.records import (
    FLAG_HAS_URL,
    FLAG_PINNED,
    MEDIA_AUDIO,
    MEDIA_DOCUMENT,
    MEDIA_GIF,
    MEDIA_PHOTO,
    MEDIA_ROUND,
    MEDIA_VIDEO,
    MEDIA_VOICE,
)
from teamgram.messenger.msg.tables import messages
from teamgram.tl import types

_FILTER_KINDS: dict[type, tuple[int, ...]] = {
    types.InputMessagesFilterPhotos: (MEDIA_PHOTO,),
    types.InputMessagesFilterVideo: (MEDIA_VIDEO,),
    types.InputMessagesFilterPhotoVideo: (MEDIA_PHOTO, MEDIA_VIDEO),
    types.InputMessagesFilterDocument: (MEDIA_DOCUMENT,),
    types.InputMessagesFilterGif: (MEDIA_GIF,),
    types.InputMessagesFilterVoice: (MEDIA_VOICE,),
    types.InputMessagesFilterMusic: (MEDIA_AUDIO,),
    types.InputMessagesFilterRoundVoice: (MEDIA_ROUND, MEDIA_VOICE),
    types.InputMessagesFilterRoundVideo: (MEDIA_ROUND,),
}


def search_filters(
    q: str,
    flt: Any,
    min_date: int,
    max_date: int,
    from_id: int | None,
    table: sa.Table = messages,
) -> list[Any]:
    """WHERE terms for :meth:`MsgService.history` (service messages never match);
    ``table``: a user's box (``messages``) or a channel's (``channel_messages``)."""
    m = table
    where: list[Any] = []
    if q:
        escaped = q.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        where.append(m.c.text.isnot(None))
        where.append(sa.func.lower(m.c.text).like(f"%{escaped}%", escape="\\"))
    if isinstance(flt, types.InputMessagesFilterUrl):
        where.append(m.c.flags.op("&")(FLAG_HAS_URL) != 0)
    elif isinstance(flt, types.InputMessagesFilterPinned):
        where.append(m.c.flags.op("&")(FLAG_PINNED) != 0)
    elif type(flt) in _FILTER_KINDS:
        where.append(m.c.media_kind.in_(_FILTER_KINDS[type(flt)]))
    elif not isinstance(flt, types.InputMessagesFilterEmpty):
        where.append(m.c.id < 0)  # a kind of content this server never stores: nothing
    if min_date:
        where.append(m.c.date >= min_date)
    if max_date:
        where.append(m.c.date <= max_date)
    if from_id is not None:
        where.append(m.c.from_id == from_id)
    where.append(m.c.action.is_(None))
    return where
