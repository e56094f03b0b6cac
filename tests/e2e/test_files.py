"""Files and media with Telethon: photos, big documents, thumbnails, profile photos, bad input.

Every test runs against the embedded default (objects in a local directory) and,
through ``storage``, against a real S3 store (SeaweedFS started for the session).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from PIL import Image
from telethon import TelegramClient, errors, functions, utils
from telethon.tl import types as tt

from teamgram.server import Server
from tests.e2e.accounts import signed_in, wait_for
from tests.seaweedfs import s3_store_config_fixture, seaweedfs_fixture  # noqa: F401

Factory = Callable[..., Awaitable[TelegramClient]]

MB = 1024 * 1024


def jpeg_bytes(width: int, height: int, seed: int = 1, quality: int = 95) -> bytes:
    """A noisy JPEG (noise keeps it from compressing to nothing)."""
    rnd = random.Random(seed)
    img = Image.effect_noise((width, height), 60).convert("RGB")
    tint = Image.new("RGB", (width, height), (rnd.randrange(256), 90, 160))
    img = Image.blend(img, tint, 0.4)
    out = io.BytesIO()
    img.save(out, "JPEG", quality=quality)
    return out.getvalue()


def photo_of_size(target: int) -> bytes:
    """A JPEG of roughly ``target`` bytes."""
    side = 1200
    while True:
        data = jpeg_bytes(side, side * 3 // 4, quality=97)
        if len(data) >= target:
            return data
        side = int(side * 1.3)


@pytest.fixture(params=["local", "s3"])
async def files_server(
    request: pytest.FixtureRequest, start_server: Callable[..., Any]
) -> AsyncIterator[Server]:
    """A server storing objects locally, or in SeaweedFS."""
    overrides: dict[str, Any] = {"messages": {"send_per_second": 1000, "send_burst": 1000}}
    if request.param == "s3":
        overrides["files"] = request.getfixturevalue("s3_store_config")
    async with start_server(**overrides) as srv:
        yield srv


async def pair(srv: Server, telethon_for: Factory) -> tuple[TelegramClient, TelegramClient, Any]:
    a, _ua = await signed_in(srv, telethon_for, "Alice")
    b, ub = await signed_in(srv, telethon_for, "Bob")
    imported = await a(
        functions.contacts.ImportContactsRequest([tt.InputPhoneContact(0, ub.phone, "Bob", "")])
    )
    return a, b, imported.users[0]


async def test_photo_and_big_document_reach_the_other_side_intact(
    files_server: Server, telethon_for: Factory, tmp_path: Any
) -> None:
    srv = files_server
    a, b, bob = await pair(srv, telethon_for)
    photo = photo_of_size(3 * MB)
    doc = os.urandom(25 * MB)  # > 10 MB: saveBigFilePart
    photo_path = tmp_path / "photo.jpg"
    photo_path.write_bytes(photo)
    doc_path = tmp_path / "blob.bin"
    doc_path.write_bytes(doc)

    got: list[Any] = []
    from telethon import events

    b.add_event_handler(lambda e: got.append(e.message), events.NewMessage())
    sent_photo = await a.send_file(bob, str(photo_path), caption="a photo")
    sent_doc = await a.send_file(bob, str(doc_path), force_document=True, caption="a blob")
    await wait_for(lambda: len(got) >= 2, timeout=30)
    in_photo, in_doc = got[0], got[1]
    assert in_photo.message == "a photo" and isinstance(in_photo.media, tt.MessageMediaPhoto)
    assert in_doc.message == "a blob" and isinstance(in_doc.media, tt.MessageMediaDocument)
    assert in_doc.document.size == len(doc)
    assert sent_photo.photo.id == in_photo.photo.id

    # The photo: Telegram's size ladder, each decodable; the largest is the original's size.
    sizes = {s.type: s for s in in_photo.photo.sizes if isinstance(s, tt.PhotoSize)}
    assert {"s", "m", "x", "y"} <= set(sizes)
    biggest = await b.download_media(in_photo, file=bytes)
    assert isinstance(biggest, bytes)
    img = Image.open(io.BytesIO(biggest))
    largest = max(sizes.values(), key=lambda s: s.w * s.h)
    assert img.size == (largest.w, largest.h)
    stripped = [s for s in in_photo.photo.sizes if isinstance(s, tt.PhotoStrippedSize)]
    assert stripped
    Image.open(io.BytesIO(utils.stripped_photo_to_jpg(stripped[0].bytes))).load()
    small = await b.download_media(in_photo, file=bytes, thumb=sizes["s"])
    assert Image.open(io.BytesIO(small)).size == (sizes["s"].w, sizes["s"].h)

    # The document: byte-identical (downloaded in Telethon's aligned parts).
    out = tmp_path / "down.bin"
    await b.download_media(in_doc, file=str(out))
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(doc).digest()
    assert sent_doc.document.id == in_doc.document.id

    # History and the search filters see both.
    found = await b(
        functions.messages.SearchRequest(
            peer=await b.get_input_entity(in_photo.sender_id),
            q="",
            filter=tt.InputMessagesFilterPhotos(),
            min_date=None,
            max_date=None,
            offset_id=0,
            add_offset=0,
            limit=10,
            max_id=0,
            min_id=0,
            hash=0,
        )
    )
    assert [m.id for m in found.messages] == [in_photo.id]


async def test_documents_with_thumbnails_and_albums(
    files_server: Server, telethon_for: Factory, tmp_path: Any
) -> None:
    srv = files_server
    a, b, bob = await pair(srv, telethon_for)
    png = io.BytesIO()
    Image.new("RGBA", (600, 400), (10, 200, 30, 128)).save(png, "PNG")
    png_path = tmp_path / "pic.png"
    png_path.write_bytes(png.getvalue())
    sent = await a.send_file(bob, str(png_path), force_document=True)
    doc = sent.document
    assert doc.mime_type == "image/png"
    thumbs = [t for t in doc.thumbs or [] if isinstance(t, tt.PhotoSize)]
    assert thumbs, "an image document gets a thumbnail"
    thumb = await a.download_media(sent, file=bytes, thumb=thumbs[0])
    Image.open(io.BytesIO(thumb)).load()
    names = [a_.file_name for a_ in doc.attributes if isinstance(a_, tt.DocumentAttributeFilename)]
    assert names == ["pic.png"]

    # An album of two photos: one grouped_id, both delivered.
    paths = []
    for i in range(2):
        p = tmp_path / f"al{i}.jpg"
        p.write_bytes(jpeg_bytes(400, 300, seed=i))
        paths.append(str(p))
    album = await a.send_file(bob, paths)
    assert len(album) == 2 and album[0].grouped_id and album[0].grouped_id == album[1].grouped_id
    history = await b.get_messages((await a.get_me()).id, limit=5)
    assert sum(1 for m in history if m.grouped_id == album[0].grouped_id) == 2


async def test_profile_photo_set_seen_by_a_contact_and_deleted(
    files_server: Server, telethon_for: Factory, tmp_path: Any
) -> None:
    srv = files_server
    a, b, _bob = await pair(srv, telethon_for)
    me = await a.get_me()
    b_contacts = await b(
        functions.contacts.ImportContactsRequest([tt.InputPhoneContact(0, me.phone, "A", "")])
    )
    alice_for_b = b_contacts.users[0]
    path = tmp_path / "me.jpg"
    path.write_bytes(jpeg_bytes(800, 800, seed=7))
    result = await a(
        functions.photos.UploadProfilePhotoRequest(file=await a.upload_file(str(path)))
    )
    photo = result.photo
    assert {s.type for s in photo.sizes if isinstance(s, tt.PhotoSize)} >= {"a", "c"}
    seen = await b.get_entity(alice_for_b.id)
    assert isinstance(seen.photo, tt.UserProfilePhoto) and seen.photo.photo_id == photo.id
    assert seen.photo.stripped_thumb
    big = await b.download_profile_photo(seen, file=bytes, download_big=True)
    assert Image.open(io.BytesIO(big)).size[0] >= 640 or Image.open(io.BytesIO(big)).size[0] == 800
    listed = await b(functions.photos.GetUserPhotosRequest(seen, 0, 0, 10))
    assert [p.id for p in listed.photos] == [photo.id]
    full = await b(functions.users.GetFullUserRequest(seen))
    assert full.full_user.profile_photo.id == photo.id

    deleted = await a(
        functions.photos.DeletePhotosRequest(
            [tt.InputPhoto(photo.id, photo.access_hash, photo.file_reference)]
        )
    )
    assert deleted == [photo.id]
    seen = await b.get_entity(alice_for_b.id)
    assert seen.photo is None or isinstance(seen.photo, tt.UserProfilePhotoEmpty)
    listed = await b(functions.photos.GetUserPhotosRequest(seen, 0, 0, 10))
    assert listed.photos == []


async def test_bad_uploads_and_downloads(server: Server, telethon_for: Factory) -> None:
    a, _b, bob = await pair(server, telethon_for)
    part = os.urandom(512 * 1024)
    # A part bigger than 512 KiB.
    with pytest.raises(errors.FilePartTooBigError):
        await a(functions.upload.SaveFilePartRequest(1, 0, os.urandom(600 * 1024)))
    # A missing part.
    await a(functions.upload.SaveFilePartRequest(2, 0, part))
    await a(functions.upload.SaveFilePartRequest(2, 2, part))
    with pytest.raises(errors.FilePartMissingError) as missing:
        await a(
            functions.messages.SendMediaRequest(
                bob,
                tt.InputMediaUploadedDocument(
                    tt.InputFile(2, 3, "x.bin", ""), "application/octet-stream", []
                ),
                "",
            )
        )
    assert missing.value.which == 1
    # A wrong MD5.
    await a(functions.upload.SaveFilePartRequest(3, 0, part))
    with pytest.raises(errors.Md5ChecksumInvalidError):
        await a(
            functions.messages.SendMediaRequest(
                bob,
                tt.InputMediaUploadedDocument(
                    tt.InputFile(3, 1, "x.bin", "0" * 32), "application/octet-stream", []
                ),
                "",
            )
        )

    # A document sent to Bob; Carol (not in the chat) cannot download it.
    sent = await a.send_file(bob, os.urandom(300 * 1024), force_document=True)
    doc = sent.document
    carol, _uc = await signed_in(server, telethon_for, "Carol")
    loc = tt.InputDocumentFileLocation(doc.id, doc.access_hash, doc.file_reference, "")
    with pytest.raises(errors.FileIdInvalidError):
        await carol(functions.upload.GetFileRequest(loc, 0, 128 * 1024))
    # Misaligned requests.
    with pytest.raises(errors.OffsetInvalidError):
        await a(functions.upload.GetFileRequest(loc, 1000, 128 * 1024))
    with pytest.raises(errors.LimitInvalidError):
        await a(functions.upload.GetFileRequest(loc, 0, 100 * 1024))
    with pytest.raises(errors.LimitInvalidError):  # crosses a 1 MiB boundary
        await a(functions.upload.GetFileRequest(loc, 1024 * 1024 - 4096, 8192))
    # precise relaxes the alignment to 1 KiB.
    got = await a(functions.upload.GetFileRequest(loc, 1024, 3072, precise=True))
    assert len(got.bytes) == 3072
    # A stale file reference.
    stale = tt.InputDocumentFileLocation(doc.id, doc.access_hash, b"\0" * 20, "")
    with pytest.raises(errors.FileReferenceExpiredError):
        await a(functions.upload.GetFileRequest(stale, 0, 4096))
    await asyncio.sleep(0)


async def test_file_references_expire_and_refetching_the_message_renews_them(
    start_server: Callable[..., Any], telethon_for: Factory
) -> None:
    async with start_server(files={"file_reference_ttl_seconds": 1}) as srv:
        a, b, bob = await pair(srv, telethon_for)
        data = os.urandom(200 * 1024)
        sent = await a.send_file(bob, data, force_document=True)
        (incoming,) = await b.get_messages((await a.get_me()).id, limit=1)
        doc = incoming.document
        loc = tt.InputDocumentFileLocation(doc.id, doc.access_hash, doc.file_reference, "")
        assert len((await b(functions.upload.GetFileRequest(loc, 0, 4096))).bytes) == 4096
        hashes = await b(functions.upload.GetFileHashesRequest(loc, 0))
        assert hashes[0].hash == hashlib.sha256(data[: 128 * 1024]).digest()
        await asyncio.sleep(2.2)
        with pytest.raises(errors.FileReferenceExpiredError):
            await b(functions.upload.GetFileRequest(loc, 0, 4096))
        (again,) = await b.get_messages((await a.get_me()).id, ids=[incoming.id])
        fresh = again.document.file_reference
        assert fresh != doc.file_reference
        loc = tt.InputDocumentFileLocation(doc.id, doc.access_hash, fresh, "")
        assert (await b(functions.upload.GetFileRequest(loc, 0, 4096))).bytes == data[:4096]
        assert sent.document.id == doc.id
