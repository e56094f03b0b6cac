"""A stored message copy and its TL form.

A row is one copy in one user's box, so it turns into the ``Message`` its owner
sees without knowing who asks: ``out``, ``peer_id`` and the box id are already
the owner's.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from teamgram.service.biz.peers import PEER_USER, PeerKey, peer_tl
from teamgram.tl import TLObject, decode, types
from teamgram.tl.core import write_vector_objects

# flags column
FLAG_SILENT = 1
FLAG_PINNED = 2
FLAG_HAS_URL = 4  # search filter "url"
FLAG_REACTIONS = 8  # someone reacted: reactions are looked up for this message
FLAG_MEDIA_UNREAD = 16
FLAG_NO_WEBPAGE = 32

# media_kind column, for search filters (files and media fill these in).
MEDIA_NONE = 0
MEDIA_PHOTO = 1
MEDIA_DOCUMENT = 2
MEDIA_VIDEO = 3
MEDIA_AUDIO = 4
MEDIA_VOICE = 5
MEDIA_GIF = 6
MEDIA_ROUND = 7
MEDIA_OTHER = 9

_URL_RE = re.compile(r"(?i)\b(?:https?://|www\.)\S")
_URL_ENTITIES = (types.MessageEntityUrl, types.MessageEntityTextUrl)


MediaHook = Callable[[Any], Any]


def has_url(text: str, entities: list[Any] | None) -> bool:
    return any(isinstance(e, _URL_ENTITIES) for e in entities or ()) or bool(_URL_RE.search(text))


def pack_vector(items: list[Any] | None) -> bytes | None:
    if not items:
        return None
    b = bytearray()
    write_vector_objects(b, items)
    return bytes(b)


def unpack(data: bytes | None) -> Any:
    return decode(data) if data else None


@dataclass(slots=True)
class MessageRecord:
    user_id: int
    id: int
    peer_type: int
    peer_id: int
    from_id: int
    out: bool
    date: int
    shared_id: int
    pts: int = 0
    text: str = ""
    entities: bytes | None = None
    reply_to_id: int | None = None
    fwd_from: bytes | None = None
    media: bytes | None = None
    media_kind: int = MEDIA_NONE
    action: bytes | None = None
    edit_date: int | None = None
    flags: int = 0
    grouped_id: int | None = None
    random_id: int | None = None
    media_id: int | None = None

    @property
    def peer(self) -> PeerKey:
        return self.peer_type, self.peer_id

    def row(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "id": self.id,
            "peer_type": self.peer_type,
            "peer_id": self.peer_id,
            "from_id": self.from_id,
            "out": self.out,
            "date": self.date,
            "shared_id": self.shared_id,
            "random_id": self.random_id,
            "pts": self.pts,
            "text": self.text,
            "entities": self.entities,
            "reply_to_id": self.reply_to_id,
            "fwd_from": self.fwd_from,
            "media": self.media,
            "media_kind": self.media_kind,
            "action": self.action,
            "edit_date": self.edit_date,
            "flags": self.flags,
            "grouped_id": self.grouped_id,
            "media_id": self.media_id,
        }

    def user_ids(self) -> set[int]:
        """Users a client needs to show this message."""
        ids = {self.from_id}
        if self.peer_type == PEER_USER:
            ids.add(self.peer_id)
        if self.fwd_from:
            fwd = unpack(self.fwd_from)
            for p in (fwd.from_id, fwd.saved_from_peer, fwd.saved_from_id):
                if isinstance(p, types.PeerUser):
                    ids.add(p.user_id)
        return ids

    def to_tl(
        self, reactions: TLObject | None = None, media_hook: MediaHook | None = None
    ) -> TLObject:
        """The owner's Message; ``media_hook`` gives stored media fresh file references."""
        peer = peer_tl(self.peer_type, self.peer_id)
        # Telegram (layer 119+): incoming private messages carry no from_id.
        from_peer = (
            None
            if self.peer_type == PEER_USER and not self.out
            else types.PeerUser(user_id=self.from_id)
        )
        reply_to = (
            types.MessageReplyHeader(reply_to_msg_id=self.reply_to_id) if self.reply_to_id else None
        )
        media = unpack(self.media)
        if media is not None and media_hook is not None:
            media = media_hook(media)
        if self.action is not None:
            return types.MessageService(
                id=self.id,
                peer_id=peer,
                date=self.date,
                action=unpack(self.action),
                out=self.out,
                silent=bool(self.flags & FLAG_SILENT),
                from_id=from_peer,
                reply_to=reply_to,
                reactions=reactions,
            )
        return types.Message(
            id=self.id,
            peer_id=peer,
            date=self.date,
            message=self.text,
            out=self.out,
            silent=bool(self.flags & FLAG_SILENT),
            pinned=bool(self.flags & FLAG_PINNED),
            media_unread=bool(self.flags & FLAG_MEDIA_UNREAD),
            from_id=from_peer,
            fwd_from=unpack(self.fwd_from),
            reply_to=reply_to,
            media=media_hook(unpack(self.media))
            if media_hook and self.media
            else unpack(self.media),
            entities=unpack(self.entities),
            edit_date=self.edit_date,
            grouped_id=self.grouped_id,
            reactions=reactions,
        )


def record_from_row(row: Any) -> MessageRecord:
    return MessageRecord(
        user_id=row.user_id,
        id=row.id,
        peer_type=row.peer_type,
        peer_id=row.peer_id,
        from_id=row.from_id,
        out=bool(row.out),
        date=row.date,
        shared_id=row.shared_id,
        pts=row.pts,
        text=row.text,
        entities=row.entities,
        reply_to_id=row.reply_to_id,
        fwd_from=row.fwd_from,
        media=row.media,
        media_kind=row.media_kind,
        action=row.action,
        edit_date=row.edit_date,
        flags=row.flags,
        grouped_id=row.grouped_id,
        random_id=row.random_id,
        media_id=row.media_id,
    )
