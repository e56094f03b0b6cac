"""media: photos and documents made from uploads, and serving their bytes.

A photo becomes Telegram's ladder of JPEG sizes plus a stripped thumbnail
(imaging.py, run in a thread); a document is stored as uploaded, with a
thumbnail when the client sent one or the file is an image. Rows here hold the
metadata; the object store (dfs) holds the bytes.

``file_reference``: every Photo/Document a client receives carries a fresh
reference, ``issued time (4 bytes) | HMAC(secret, kind, id, time)[:16]``. It
needs no storage, works in every process that has the secret, and expires
after ``file_reference_ttl_seconds``: a client then gets FILE_REFERENCE_EXPIRED
and refetches the message (or profile) for a new one, as on Telegram.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import struct
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from teamgram.errors import RpcError
from teamgram.messenger.msg.records import (
    MEDIA_AUDIO,
    MEDIA_DOCUMENT,
    MEDIA_GIF,
    MEDIA_ROUND,
    MEDIA_VIDEO,
    MEDIA_VOICE,
    pack_vector,
    unpack,
)
from teamgram.service.dfs.store import ObjectStore
from teamgram.service.dfs.uploads import UploadService
from teamgram.service.media import imaging
from teamgram.service.media.tables import documents, photos
from teamgram.tl import TLObject, types

log = logging.getLogger(__name__)

KIND_PHOTO = 1
KIND_DOCUMENT = 2
_REF_LEN = 20
_CACHE_MAX = 20_000
IMAGING_CONCURRENCY = 2

# Telegram's upload.getFile rules: 4 KiB alignment, limits that divide 1 MiB, and a
# request never crossing a 1 MiB boundary; ``precise`` relaxes them to 1 KiB.
MIB = 1 << 20


def check_file_range(offset: int, limit: int, precise: bool) -> None:
    if offset < 0:
        raise RpcError(400, "OFFSET_INVALID")
    if limit <= 0 or limit > MIB:
        raise RpcError(400, "LIMIT_INVALID")
    if precise:
        if offset % 1024:
            raise RpcError(400, "OFFSET_INVALID")
        if limit % 1024:
            raise RpcError(400, "LIMIT_INVALID")
        return
    if offset % 4096:
        raise RpcError(400, "OFFSET_INVALID")
    if limit % 4096 or MIB % limit:
        raise RpcError(400, "LIMIT_INVALID")
    if offset // MIB != (offset + limit - 1) // MIB:
        raise RpcError(400, "LIMIT_INVALID")


@dataclass(slots=True)
class PhotoRecord:
    id: int
    access_hash: int
    owner_id: int
    date: int
    width: int
    height: int
    sizes: list[Any]  # PhotoSize / PhotoStrippedSize TL objects
    profile: bool = False

    @property
    def stripped(self) -> bytes | None:
        for s in self.sizes:
            if isinstance(s, types.PhotoStrippedSize):
                return bytes(s.bytes)
        return None

    def size_types(self) -> list[str]:
        return [s.type for s in self.sizes if isinstance(s, types.PhotoSize)]


@dataclass(slots=True)
class DocumentRecord:
    id: int
    access_hash: int
    owner_id: int
    date: int
    mime_type: str
    size: int
    bucket: str
    attributes: list[Any]
    thumbs: list[Any]

    @property
    def media_kind(self) -> int:
        return document_kind(self.mime_type, self.attributes)


def document_kind(mime_type: str, attributes: list[Any]) -> int:
    """The search-filter kind of a document (video, voice, music, gif, round...)."""
    for a in attributes:
        if isinstance(a, types.DocumentAttributeVideo):
            return MEDIA_ROUND if a.round_message else MEDIA_VIDEO
        if isinstance(a, types.DocumentAttributeAudio):
            return MEDIA_VOICE if a.voice else MEDIA_AUDIO
        if isinstance(a, types.DocumentAttributeAnimated):
            return MEDIA_GIF
    return MEDIA_DOCUMENT


def _photo_record(row: Any) -> PhotoRecord:
    return PhotoRecord(
        id=row.id,
        access_hash=row.access_hash,
        owner_id=row.owner_id,
        date=row.date,
        width=row.width,
        height=row.height,
        sizes=list(unpack(row.sizes) or []),
        profile=bool(row.profile),
    )


def _document_record(row: Any) -> DocumentRecord:
    return DocumentRecord(
        id=row.id,
        access_hash=row.access_hash,
        owner_id=row.owner_id,
        date=row.date,
        mime_type=row.mime_type,
        size=row.size,
        bucket=row.bucket,
        attributes=list(unpack(row.attributes) or []),
        thumbs=list(unpack(row.thumbs) or []),
    )


def _new_id() -> int:
    return secrets.randbits(62) + 1


# Who may download: (user, media id) -> bool, asked after the owner check fails
# (the msg service knows which boxes hold a message with the media).
AccessCheck = Callable[[int, int], Awaitable[bool]]


class MediaService:
    def __init__(
        self,
        engine: AsyncEngine,
        store: ObjectStore,
        uploads: UploadService,
        secret: bytes,
        dc_id: int,
        ref_ttl: int,
    ) -> None:
        self.engine = engine
        self.store = store
        self.uploads = uploads
        self._secret = hashlib.sha256(b"file_reference" + secret).digest()
        self.dc_id = dc_id
        self.ref_ttl = ref_ttl
        self._photos: OrderedDict[int, PhotoRecord] = OrderedDict()
        self._documents: OrderedDict[int, DocumentRecord] = OrderedDict()
        self.can_see_message_media: AccessCheck | None = None
        # Decoding a big image takes hundreds of MB for a moment: a few at a time.
        self._imaging = asyncio.Semaphore(IMAGING_CONCURRENCY)

    # -------------------------------------------------------- file references
    def file_reference(self, kind: int, media_id: int, now: int | None = None) -> bytes:
        ts = int(time.time()) if now is None else now
        head = struct.pack("<I", ts & 0xFFFFFFFF)
        mac = hmac.new(self._secret, struct.pack("<Bq", kind, media_id) + head, "sha256")
        return head + mac.digest()[:16]

    def check_reference(self, kind: int, media_id: int, ref: bytes) -> None:
        """FILE_REFERENCE_EXPIRED for an old or foreign reference (clients refetch)."""
        ref = bytes(ref)
        if len(ref) != _REF_LEN:
            raise RpcError(400, "FILE_REFERENCE_EXPIRED")
        (ts,) = struct.unpack_from("<I", ref)
        if not hmac.compare_digest(ref, self.file_reference(kind, media_id, ts)):
            raise RpcError(400, "FILE_REFERENCE_EXPIRED")
        if int(time.time()) - ts > self.ref_ttl:
            raise RpcError(400, "FILE_REFERENCE_EXPIRED")

    # ----------------------------------------------------------------- photos
    async def upload_photo(
        self, owner_id: int, input_file: Any, *, profile: bool = False
    ) -> PhotoRecord:
        """A photo from an uploaded file: the size ladder into the store, the row here."""
        assembled = await self.uploads.take(owner_id, input_file)
        try:
            ladder = imaging.PROFILE_LADDER if profile else imaging.PHOTO_LADDER
            try:
                async with self._imaging:
                    processed = await asyncio.to_thread(
                        imaging.process_photo, assembled.path, ladder
                    )
            except imaging.ImageTooLargeError as exc:
                raise RpcError(400, "PHOTO_INVALID_DIMENSIONS") from exc
            except imaging.ImageError as exc:
                raise RpcError(400, "IMAGE_PROCESS_FAILED") from exc
        finally:
            await assembled.discard()
        # Used: the parts go (after a failure they stay, for a retry, until they expire).
        await self.uploads.release(owner_id, input_file)
        photo_id = _new_id()
        sizes: list[Any] = [types.PhotoStrippedSize(type="i", bytes=processed.stripped)]
        for s in processed.sizes:
            await self.store.put_bytes("photos", f"{photo_id}_{s.type}", s.data)
            sizes.append(types.PhotoSize(type=s.type, w=s.w, h=s.h, size=len(s.data)))
        rec = PhotoRecord(
            id=photo_id,
            access_hash=secrets.randbits(63),
            owner_id=owner_id,
            date=int(time.time()),
            width=processed.width,
            height=processed.height,
            sizes=sizes,
            profile=profile,
        )
        async with self.engine.begin() as conn:
            await conn.execute(
                photos.insert().values(
                    id=rec.id,
                    access_hash=rec.access_hash,
                    owner_id=rec.owner_id,
                    date=rec.date,
                    width=rec.width,
                    height=rec.height,
                    sizes=pack_vector(rec.sizes),
                    profile=profile,
                )
            )
        self._remember(self._photos, rec.id, rec)
        return rec

    async def photo(self, photo_id: int) -> PhotoRecord | None:
        rec = self._photos.get(photo_id)
        if rec is not None:
            return rec
        async with self.engine.connect() as conn:
            row = (await conn.execute(sa.select(photos).where(photos.c.id == photo_id))).first()
        if row is None:
            return None
        rec = _photo_record(row)
        self._remember(self._photos, rec.id, rec)
        return rec

    def photo_tl(self, rec: PhotoRecord) -> types.Photo:
        return types.Photo(
            id=rec.id,
            access_hash=rec.access_hash,
            file_reference=self.file_reference(KIND_PHOTO, rec.id),
            date=rec.date,
            sizes=list(rec.sizes),
            dc_id=self.dc_id,
        )

    async def resolve_input_photo(self, input_photo: Any, check_ref: bool = True) -> PhotoRecord:
        if not isinstance(input_photo, types.InputPhoto):
            raise RpcError(400, "PHOTO_INVALID")
        rec = await self.photo(input_photo.id)
        if rec is None or rec.access_hash != input_photo.access_hash:
            raise RpcError(400, "PHOTO_INVALID")
        if check_ref:
            self.check_reference(KIND_PHOTO, rec.id, input_photo.file_reference)
        return rec

    async def set_profile(self, photo_ids: list[int], profile: bool) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                photos.update().where(photos.c.id.in_(photo_ids)).values(profile=profile)
            )
        for pid in photo_ids:
            if pid in self._photos:
                self._photos[pid].profile = profile

    async def profile_photos(
        self, owner_id: int, offset: int, max_id: int, limit: int
    ) -> tuple[list[PhotoRecord], int]:
        """The owner's profile photos, newest first, and how many there are."""
        t = photos
        cond = [t.c.owner_id == owner_id, t.c.profile == sa.true()]
        async with self.engine.connect() as conn:
            total = (
                await conn.execute(sa.select(sa.func.count()).select_from(t).where(*cond))
            ).scalar_one()
            q = sa.select(t).where(*cond).order_by(t.c.date.desc(), t.c.id.desc())
            if max_id:
                q = q.where(t.c.id != max_id)
            rows = await conn.execute(q.offset(max(offset, 0)).limit(limit))
            return [_photo_record(r) for r in rows], int(total)

    # -------------------------------------------------------------- documents
    async def upload_document(
        self,
        owner_id: int,
        input_file: Any,
        mime_type: str,
        attributes: list[Any],
        thumb: Any = None,
    ) -> DocumentRecord:
        """A document from an uploaded file (streamed into the store) and its thumbnail."""
        assembled = await self.uploads.take(owner_id, input_file)
        doc_id = _new_id()
        mime_type = (mime_type or "application/octet-stream")[:255]
        attrs = list(attributes)
        if not any(isinstance(a, types.DocumentAttributeFilename) for a in attrs):
            name = getattr(input_file, "name", "") or ""
            if name:
                attrs.append(types.DocumentAttributeFilename(file_name=name))
        bucket = "videos" if mime_type.startswith("video/") else "documents"
        thumbs: list[Any] = []
        try:
            source: Path | None = None
            thumb_assembled = None
            if thumb is not None:
                thumb_assembled = await self.uploads.take(owner_id, thumb)
                source = thumb_assembled.path
            elif mime_type.startswith("image/"):
                source = assembled.path
            if source is not None:
                try:
                    async with self._imaging:
                        sized = await asyncio.to_thread(imaging.image_thumbnail, source, 320, "m")
                    await self.store.put_bytes("photos", f"d{doc_id}_{sized.type}", sized.data)
                    thumbs.append(
                        types.PhotoSize(type=sized.type, w=sized.w, h=sized.h, size=len(sized.data))
                    )
                    if mime_type.startswith("image/") and not any(
                        isinstance(a, types.DocumentAttributeImageSize) for a in attrs
                    ):
                        w, h = await asyncio.to_thread(imaging.image_size, assembled.path)
                        attrs.append(types.DocumentAttributeImageSize(w=w, h=h))
                except imaging.ImageError:
                    pass  # not an image after all: a document without a thumbnail
                finally:
                    if thumb_assembled is not None:
                        await thumb_assembled.discard()
                        await self.uploads.release(owner_id, thumb)
            size = await self.store.put_file(bucket, str(doc_id), assembled.path, move=True)
        finally:
            await assembled.discard()
        await self.uploads.release(owner_id, input_file)
        rec = DocumentRecord(
            id=doc_id,
            access_hash=secrets.randbits(63),
            owner_id=owner_id,
            date=int(time.time()),
            mime_type=mime_type,
            size=size,
            bucket=bucket,
            attributes=attrs,
            thumbs=thumbs,
        )
        async with self.engine.begin() as conn:
            await conn.execute(
                documents.insert().values(
                    id=rec.id,
                    access_hash=rec.access_hash,
                    owner_id=rec.owner_id,
                    date=rec.date,
                    mime_type=rec.mime_type,
                    size=rec.size,
                    bucket=rec.bucket,
                    attributes=pack_vector(rec.attributes) or b"",
                    thumbs=pack_vector(rec.thumbs),
                )
            )
        self._remember(self._documents, rec.id, rec)
        return rec

    async def document(self, doc_id: int) -> DocumentRecord | None:
        rec = self._documents.get(doc_id)
        if rec is not None:
            return rec
        async with self.engine.connect() as conn:
            row = (await conn.execute(sa.select(documents).where(documents.c.id == doc_id))).first()
        if row is None:
            return None
        rec = _document_record(row)
        self._remember(self._documents, rec.id, rec)
        return rec

    def document_tl(self, rec: DocumentRecord) -> types.Document:
        return types.Document(
            id=rec.id,
            access_hash=rec.access_hash,
            file_reference=self.file_reference(KIND_DOCUMENT, rec.id),
            date=rec.date,
            mime_type=rec.mime_type,
            size=rec.size,
            dc_id=self.dc_id,
            attributes=list(rec.attributes),
            thumbs=list(rec.thumbs) or None,
        )

    async def resolve_input_document(
        self, input_document: Any, check_ref: bool = True
    ) -> DocumentRecord:
        if not isinstance(input_document, types.InputDocument):
            raise RpcError(400, "DOCUMENT_INVALID")
        rec = await self.document(input_document.id)
        if rec is None or rec.access_hash != input_document.access_hash:
            raise RpcError(400, "DOCUMENT_INVALID")
        if check_ref:
            self.check_reference(KIND_DOCUMENT, rec.id, input_document.file_reference)
        return rec

    # ----------------------------------------------------------- in messages
    def refresh(self, media: Any) -> Any:
        """A stored MessageMedia with fresh file references (what a client is given)."""
        if isinstance(media, types.MessageMediaPhoto) and isinstance(media.photo, types.Photo):
            media.photo.file_reference = self.file_reference(KIND_PHOTO, media.photo.id)
        elif isinstance(media, types.MessageMediaDocument) and isinstance(
            media.document, types.Document
        ):
            media.document.file_reference = self.file_reference(KIND_DOCUMENT, media.document.id)
        return media

    def message_media_photo(self, rec: PhotoRecord) -> types.MessageMediaPhoto:
        return types.MessageMediaPhoto(photo=self.photo_tl(rec))

    def message_media_document(self, rec: DocumentRecord) -> types.MessageMediaDocument:
        kind = rec.media_kind
        return types.MessageMediaDocument(
            document=self.document_tl(rec),
            video=kind in (MEDIA_VIDEO, MEDIA_ROUND),
            round=kind == MEDIA_ROUND,
            voice=kind == MEDIA_VOICE,
        )

    # --------------------------------------------------------------- download
    async def _may_read(self, user_id: int, owner_id: int, media_id: int, profile: bool) -> bool:
        if user_id == owner_id or profile:
            return True
        check = self.can_see_message_media
        return check is not None and await check(user_id, media_id)

    async def read_photo(
        self, user_id: int, loc: Any, offset: int, limit: int, precise: bool
    ) -> types.upload.File:
        rec = await self.photo(loc.id)
        if rec is None or rec.access_hash != loc.access_hash:
            raise RpcError(400, "FILE_ID_INVALID")
        self.check_reference(KIND_PHOTO, rec.id, loc.file_reference)
        if not await self._may_read(user_id, rec.owner_id, rec.id, rec.profile):
            raise RpcError(400, "FILE_ID_INVALID")
        return await self._read_size(rec, loc.thumb_size, offset, limit, precise)

    async def read_profile_photo(
        self, rec: PhotoRecord, big: bool, offset: int, limit: int, precise: bool
    ) -> types.upload.File:
        kinds = rec.size_types()
        wanted = kinds[-1] if big else kinds[0]
        return await self._read_size(rec, wanted, offset, limit, precise)

    async def _read_size(
        self, rec: PhotoRecord, size_type: str, offset: int, limit: int, precise: bool
    ) -> types.upload.File:
        check_file_range(offset, limit, precise)
        if size_type not in rec.size_types():
            raise RpcError(400, "LOCATION_INVALID")
        data = await self.store.read("photos", f"{rec.id}_{size_type}", offset, limit)
        return types.upload.File(type=types.storage.FileJpeg(), mtime=rec.date, bytes=data)

    async def read_document(
        self, user_id: int, loc: Any, offset: int, limit: int, precise: bool
    ) -> types.upload.File:
        rec = await self.document(loc.id)
        if rec is None or rec.access_hash != loc.access_hash:
            raise RpcError(400, "FILE_ID_INVALID")
        self.check_reference(KIND_DOCUMENT, rec.id, loc.file_reference)
        if not await self._may_read(user_id, rec.owner_id, rec.id, False):
            raise RpcError(400, "FILE_ID_INVALID")
        check_file_range(offset, limit, precise)
        if loc.thumb_size:
            if loc.thumb_size not in {t.type for t in rec.thumbs if isinstance(t, types.PhotoSize)}:
                raise RpcError(400, "LOCATION_INVALID")
            data = await self.store.read("photos", f"d{rec.id}_{loc.thumb_size}", offset, limit)
            return types.upload.File(type=types.storage.FileJpeg(), mtime=rec.date, bytes=data)
        data = await self.store.read(rec.bucket, str(rec.id), offset, limit)
        return types.upload.File(type=_storage_type(rec.mime_type), mtime=rec.date, bytes=data)

    async def document_hashes(self, user_id: int, loc: Any, offset: int) -> list[Any]:
        """SHA-256 of the 128 KiB pieces of the MiB at ``offset`` (upload.getFileHashes)."""
        rec = await self.document(loc.id)
        if rec is None or rec.access_hash != loc.access_hash:
            raise RpcError(400, "FILE_ID_INVALID")
        if not await self._may_read(user_id, rec.owner_id, rec.id, False):
            raise RpcError(400, "FILE_ID_INVALID")
        if offset < 0 or offset % (128 * 1024):
            raise RpcError(400, "OFFSET_INVALID")
        out: list[Any] = []
        start = offset - offset % MIB
        for piece in range(start, min(start + MIB, rec.size), 128 * 1024):
            data = await self.store.read(rec.bucket, str(rec.id), piece, 128 * 1024)
            if not data:
                break
            out.append(
                types.FileHash(offset=piece, limit=len(data), hash=hashlib.sha256(data).digest())
            )
        return out

    # ------------------------------------------------------------------ cache
    @staticmethod
    def _remember(cache: OrderedDict[int, Any], key: int, value: Any) -> None:
        cache[key] = value
        cache.move_to_end(key)
        while len(cache) > _CACHE_MAX:
            cache.popitem(last=False)


_STORAGE_TYPES: dict[str, Callable[[], TLObject]] = {
    "image/jpeg": types.storage.FileJpeg,
    "image/gif": types.storage.FileGif,
    "image/png": types.storage.FilePng,
    "image/webp": types.storage.FileWebp,
    "application/pdf": types.storage.FilePdf,
    "audio/mpeg": types.storage.FileMp3,
    "video/quicktime": types.storage.FileMov,
    "video/mp4": types.storage.FileMp4,
}


def _storage_type(mime: str) -> TLObject:
    make = _STORAGE_TYPES.get(mime)
    return make() if make is not None else types.storage.FileUnknown()
