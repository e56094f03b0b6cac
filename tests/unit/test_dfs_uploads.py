"""dfs uploads: upload.saveFilePart / saveBigFilePart rules and errors, putting files
together (byte for byte, md5), concurrency, restarts, the janitor, and memory."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import threading
import time
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import pytest

from teamgram.errors import RpcError
from teamgram.service.dfs import uploads as uploads_module
from teamgram.service.dfs.uploads import MAX_PARTS, PART_SIZE_MAX, UploadService
from teamgram.tl import types

OWNER = 1000
OTHER = 2000
KB = 1024


@pytest.fixture
async def svc(tmp_path: Path) -> AsyncIterator[UploadService]:
    service = UploadService(tmp_path / "uploads", max_file_size=64 * 1024 * KB, ttl_seconds=3600)
    yield service
    await service.stop()


async def fails(call: Awaitable[Any], name: str) -> None:
    with pytest.raises(RpcError) as info:
        await call
    assert (info.value.code, info.value.message) == (400, name)


def chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


async def upload(
    svc: UploadService,
    data: bytes,
    part_size: int,
    file_id: int,
    *,
    big: bool = False,
    owner: int = OWNER,
    shuffle: bool = False,
) -> int:
    """Save ``data`` in parts (concurrently, in random order if ``shuffle``); parts count."""
    parts = chunks(data, part_size)
    total = len(parts) if big else None
    order = list(range(len(parts)))
    if shuffle:
        random.Random(file_id).shuffle(order)
        await asyncio.gather(*(svc.save_part(owner, file_id, i, parts[i], total) for i in order))
    else:
        for i in order:
            await svc.save_part(owner, file_id, i, parts[i], total)
    return len(parts)


# --------------------------------------------------------------------------- part rules


@pytest.mark.parametrize("part", [-1, MAX_PARTS, 10**9])
async def test_part_number_out_of_range(svc: UploadService, part: int) -> None:
    await fails(svc.save_part(OWNER, 1, part, b"x" * KB), "FILE_PART_INVALID")
    await fails(svc.save_part(OWNER, 1, part, b"x" * KB, 10), "FILE_PART_INVALID")


async def test_empty_part(svc: UploadService) -> None:
    await fails(svc.save_part(OWNER, 1, 0, b""), "FILE_PART_EMPTY")
    await fails(svc.save_part(OWNER, 1, 0, b"", 3), "FILE_PART_EMPTY")


async def test_part_too_big(svc: UploadService) -> None:
    await fails(svc.save_part(OWNER, 1, 0, b"x" * (PART_SIZE_MAX + 1)), "FILE_PART_TOO_BIG")
    await fails(svc.save_part(OWNER, 1, 0, b"x" * (2 * PART_SIZE_MAX), 2), "FILE_PART_TOO_BIG")
    await svc.save_part(OWNER, 1, 0, b"x" * PART_SIZE_MAX)  # exactly 512 KiB is fine


@pytest.mark.parametrize("total", [0, -2, MAX_PARTS + 1])
async def test_total_parts_out_of_range(svc: UploadService, total: int) -> None:
    await fails(svc.save_part(OWNER, 1, 0, b"x" * KB, total), "FILE_PARTS_INVALID")


async def test_part_beyond_total(svc: UploadService) -> None:
    await fails(svc.save_part(OWNER, 1, 3, b"x" * KB, 3), "FILE_PART_INVALID")
    await svc.save_part(OWNER, 1, 2, b"x" * KB, 3)


async def test_total_parts_may_not_change(svc: UploadService) -> None:
    await svc.save_part(OWNER, 1, 0, b"x" * KB, 3)
    await fails(svc.save_part(OWNER, 1, 1, b"x" * KB, 4), "FILE_PARTS_INVALID")
    await fails(svc.save_part(OWNER, 1, 1, b"x" * KB), "FILE_PARTS_INVALID")  # saveFilePart
    await svc.save_part(OWNER, 1, 1, b"x" * KB, 3)
    # and the other way round: a saveFilePart upload cannot become a big one
    await svc.save_part(OWNER, 2, 0, b"x" * KB)
    await fails(svc.save_part(OWNER, 2, 1, b"x" * KB, 3), "FILE_PARTS_INVALID")


async def test_streamed_upload_learns_its_total_late(svc: UploadService) -> None:
    """TDLib sends file_total_parts = -1 while the file is still being written."""
    data = os.urandom(4 * 8 * KB + 123)
    parts = chunks(data, 8 * KB)
    for i in range(3):
        await svc.save_part(OWNER, 1, i, parts[i], -1)
    await svc.save_part(OWNER, 1, 3, parts[3], 5)  # now it is known
    await svc.save_part(OWNER, 1, 4, parts[4], 5)
    await svc.save_part(OWNER, 1, 1, parts[1], -1)  # a late (re)send still says -1
    await fails(svc.save_part(OWNER, 1, 2, parts[2], 6), "FILE_PARTS_INVALID")
    await fails(svc.save_part(OWNER, 1, 2, parts[2]), "FILE_PARTS_INVALID")  # saveFilePart
    await fails(svc.take(OWNER, types.InputFileBig(1, 6, "v")), "FILE_PARTS_INVALID")
    async with await svc.take(OWNER, types.InputFileBig(1, 5, "v")) as f:
        assert f.path.read_bytes() == data
    # a total below parts already saved
    for i in range(4):
        await svc.save_part(OWNER, 2, i, b"x" * KB, -1)
    await fails(svc.save_part(OWNER, 2, 1, b"x" * KB, 3), "FILE_PARTS_INVALID")
    # never told the total: the InputFileBig's count is taken
    async with await svc.take(OWNER, types.InputFileBig(2, 4, "v")) as f:
        assert f.size == 4 * KB
    # saveFilePart first, then a big part
    await svc.save_part(OWNER, 3, 0, b"x" * KB)
    await fails(svc.save_part(OWNER, 3, 1, b"x" * KB, -1), "FILE_PARTS_INVALID")


@pytest.mark.parametrize("size", [1000, 3 * KB, 100 * KB, 1025])
async def test_odd_sized_part_before_another(svc: UploadService, size: int) -> None:
    """Sizes that are no multiple of 1 KiB, or do not divide 512 KiB, only at the end."""
    await svc.save_part(OWNER, 1, 1, b"x" * 4 * KB)
    await fails(svc.save_part(OWNER, 1, 0, b"x" * size), "FILE_PART_SIZE_INVALID")


async def test_odd_sized_part_followed_by_a_higher_one(svc: UploadService) -> None:
    await svc.save_part(OWNER, 1, 0, b"x" * 4 * KB)
    await svc.save_part(OWNER, 1, 1, b"x" * 1000)  # may be the last: accepted
    await fails(svc.save_part(OWNER, 1, 2, b"x" * 4 * KB), "FILE_PART_SIZE_INVALID")


async def test_odd_sized_part_that_the_total_says_is_not_last(svc: UploadService) -> None:
    await fails(svc.save_part(OWNER, 1, 0, b"x" * 1000, 3), "FILE_PART_SIZE_INVALID")
    await fails(svc.save_part(OWNER, 1, 1, b"x" * 3 * KB, 3), "FILE_PART_SIZE_INVALID")
    await svc.save_part(OWNER, 1, 2, b"x" * 1000, 3)  # the last one may be odd


async def test_part_size_changed(svc: UploadService) -> None:
    await svc.save_part(OWNER, 1, 0, b"x" * 8 * KB)
    await svc.save_part(OWNER, 1, 1, b"x" * 8 * KB)
    await fails(svc.save_part(OWNER, 1, 2, b"x" * 16 * KB), "FILE_PART_SIZE_CHANGED")
    await fails(svc.save_part(OWNER, 1, 0, b"x" * 4 * KB), "FILE_PART_SIZE_CHANGED")
    # a part arriving below the last one, of another (valid) size
    await svc.save_part(OWNER, 2, 0, b"x" * 8 * KB)
    await svc.save_part(OWNER, 2, 2, b"x" * 8 * KB)
    await fails(svc.save_part(OWNER, 2, 1, b"x" * 4 * KB), "FILE_PART_SIZE_CHANGED")
    # a last part bigger than the others
    await svc.save_part(OWNER, 3, 0, b"x" * 4 * KB)
    await fails(svc.save_part(OWNER, 3, 1, b"x" * 8 * KB), "FILE_PART_SIZE_CHANGED")
    # saveBigFilePart: both parts are known not to be the last
    await svc.save_part(OWNER, 4, 0, b"x" * 4 * KB, 3)
    await fails(svc.save_part(OWNER, 4, 1, b"x" * 8 * KB, 3), "FILE_PART_SIZE_CHANGED")


async def test_rejected_part_leaves_the_upload_as_it_was(svc: UploadService) -> None:
    data = os.urandom(3 * 8 * KB + 500)
    await upload(svc, data, 8 * KB, 1)
    await fails(svc.save_part(OWNER, 1, 1, b"y" * 4 * KB), "FILE_PART_SIZE_CHANGED")
    await fails(svc.save_part(OWNER, 1, 5, b"y" * 8 * KB), "FILE_PART_SIZE_INVALID")
    async with await svc.take(OWNER, types.InputFile(1, 4, "a.bin", "")) as f:
        assert f.path.read_bytes() == data


async def test_last_part_arriving_first(svc: UploadService) -> None:
    """Parallel clients send parts in any order: a short last part may come first,
    and a last part of a valid but smaller size is not mistaken for the part size."""
    for file_id, tail in ((1, 300), (2, 4 * KB)):
        data = os.urandom(3 * 8 * KB + tail)
        parts = chunks(data, 8 * KB)
        for i in (3, 1, 0, 2):
            await svc.save_part(OWNER, file_id, i, parts[i])
        async with await svc.take(OWNER, types.InputFile(file_id, 4, "x", "")) as f:
            assert f.path.read_bytes() == data


async def test_file_size_limit(tmp_path: Path) -> None:
    svc = UploadService(tmp_path, max_file_size=3 * 4 * KB, ttl_seconds=60)
    part = b"x" * 4 * KB
    for i in range(3):
        await svc.save_part(OWNER, 1, i, part)  # exactly the limit
    await fails(svc.save_part(OWNER, 1, 3, b"x"), "FILE_PARTS_INVALID")
    async with await svc.take(OWNER, types.InputFile(1, 3, "x", "")) as f:
        assert f.size == 3 * 4 * KB
    # saveBigFilePart: the total alone shows the file cannot fit
    await fails(svc.save_part(OWNER, 2, 0, part, 4), "FILE_PARTS_INVALID")
    await svc.save_part(OWNER, 2, 0, part, 3)
    # a big part number with a small part: the parts below it must be as big
    await svc.save_part(OWNER, 3, 2, b"x" * 2 * KB)
    await svc.save_part(OWNER, 3, 5, b"x" * 2 * KB)  # 6 x 2 KiB: still fits
    await fails(svc.save_part(OWNER, 3, 6, b"x" * 2 * KB), "FILE_PARTS_INVALID")


async def test_resent_part_replaces_the_old_one(svc: UploadService) -> None:
    await svc.save_part(OWNER, 1, 0, b"a" * 4 * KB)
    await svc.save_part(OWNER, 1, 1, b"b" * 100)
    await svc.save_part(OWNER, 1, 0, b"c" * 4 * KB)
    await svc.save_part(OWNER, 1, 1, b"d" * 200)
    async with await svc.take(OWNER, types.InputFile(1, 2, "x", "")) as f:
        assert f.path.read_bytes() == b"c" * 4 * KB + b"d" * 200
        assert f.size == 4 * KB + 200


# --------------------------------------------------------------------------- take


async def test_reassembled_byte_for_byte_with_md5(svc: UploadService) -> None:
    data = os.urandom(37 * 16 * KB + 1234)
    parts = await upload(svc, data, 16 * KB, 42, shuffle=True)
    md5 = hashlib.md5(data).hexdigest()
    f = await svc.take(OWNER, types.InputFile(42, parts, "photo.jpg", md5))
    try:
        assert (f.size, f.name, f.md5) == (len(data), "photo.jpg", md5)
        assert f.path.read_bytes() == data
        assert f.path.is_relative_to(svc.spool_dir)
    finally:
        await f.discard()
    assert not f.path.exists()
    await f.discard()  # twice is harmless


async def test_md5_is_checked_when_given(svc: UploadService) -> None:
    data = os.urandom(3 * KB + 7)
    await upload(svc, data, KB, 1)
    await fails(svc.take(OWNER, types.InputFile(1, 4, "x", "0" * 32)), "MD5_CHECKSUM_INVALID")
    assert list(svc.assembly_dir.iterdir()) == []  # the rejected copy is gone
    upper = hashlib.md5(data).hexdigest().upper()
    async with await svc.take(OWNER, types.InputFile(1, 4, "x", upper)) as f:
        assert f.md5 == upper.lower()
    async with await svc.take(OWNER, types.InputFile(1, 4, "x", "")) as f:  # no check
        assert f.md5 == hashlib.md5(data).hexdigest()


async def test_big_file(svc: UploadService) -> None:
    data = os.urandom(9 * 32 * KB + 99)
    parts = await upload(svc, data, 32 * KB, -7, big=True, shuffle=True)
    async with await svc.take(OWNER, types.InputFileBig(-7, parts, "video.mp4")) as f:
        assert (f.size, f.name, f.md5) == (len(data), "video.mp4", "")
        assert f.path.read_bytes() == data
    await fails(svc.take(OWNER, types.InputFileBig(-7, parts - 1, "v")), "FILE_PARTS_INVALID")


async def test_encrypted_file_upload_forms(svc: UploadService) -> None:
    data = os.urandom(2 * KB + 16)
    await upload(svc, data, KB, 5)
    md5 = hashlib.md5(data).hexdigest()
    ok = types.InputEncryptedFileUploaded(id=5, parts=3, md5_checksum=md5, key_fingerprint=1)
    async with await svc.take(OWNER, ok) as f:
        assert (f.path.read_bytes(), f.name, f.md5) == (data, "", md5)
    bad = types.InputEncryptedFileUploaded(id=5, parts=3, md5_checksum="f" * 32, key_fingerprint=1)
    await fails(svc.take(OWNER, bad), "MD5_CHECKSUM_INVALID")


async def test_nothing_uploaded(svc: UploadService) -> None:
    await fails(svc.take(OWNER, types.InputFile(9, 1, "x", "")), "FILE_PART_0_MISSING")
    await fails(svc.take(OWNER, types.InputFileBig(9, 3, "x")), "FILE_PART_0_MISSING")


async def test_another_owners_upload_is_not_found(svc: UploadService) -> None:
    await upload(svc, b"z" * 3 * KB, KB, 9)
    await fails(svc.take(OTHER, types.InputFile(9, 3, "x", "")), "FILE_PART_0_MISSING")
    async with await svc.take(OWNER, types.InputFile(9, 3, "x", "")):
        pass


async def test_missing_part(svc: UploadService) -> None:
    for i in (0, 1, 2, 4, 6):
        await svc.save_part(OWNER, 1, i, b"x" * KB)
    await fails(svc.take(OWNER, types.InputFile(1, 7, "x", "")), "FILE_PART_3_MISSING")
    await svc.save_part(OWNER, 1, 3, b"x" * KB)
    await fails(svc.take(OWNER, types.InputFile(1, 7, "x", "")), "FILE_PART_5_MISSING")
    await svc.save_part(OWNER, 2, 1, b"x" * KB)
    await fails(svc.take(OWNER, types.InputFile(2, 2, "x", "")), "FILE_PART_0_MISSING")
    # more parts claimed than sent: the first one not sent is missing
    await svc.save_part(OWNER, 3, 0, b"x" * KB)
    await fails(svc.take(OWNER, types.InputFile(3, 2, "x", "")), "FILE_PART_1_MISSING")


async def test_parts_count_must_match(svc: UploadService) -> None:
    await upload(svc, b"x" * 5 * KB, KB, 1)
    await fails(svc.take(OWNER, types.InputFile(1, 4, "x", "")), "FILE_PARTS_INVALID")
    for parts in (0, -1, MAX_PARTS + 1):
        await fails(svc.take(OWNER, types.InputFile(1, parts, "x", "")), "FILE_PARTS_INVALID")
    await upload(svc, b"x" * 3 * KB, KB, 2, big=True)
    await fails(svc.take(OWNER, types.InputFileBig(2, 4, "x")), "FILE_PARTS_INVALID")


async def test_part_removed_behind_the_services_back(svc: UploadService) -> None:
    await upload(svc, b"x" * 3 * KB, KB, 1)
    (svc.spool_dir / str(OWNER) / "1" / "1").unlink()
    await fails(svc.take(OWNER, types.InputFile(1, 3, "x", "")), "FILE_PART_1_MISSING")
    assert list(svc.assembly_dir.iterdir()) == []


async def test_a_file_can_be_used_twice_until_released(svc: UploadService) -> None:
    data = os.urandom(5 * KB + 5)
    await upload(svc, data, KB, 1)
    first = await svc.take(OWNER, types.InputFile(1, 6, "x", ""))
    second = await svc.take(OWNER, types.InputFile(1, 6, "x", ""))
    assert first.path != second.path
    await first.discard()
    assert second.path.read_bytes() == data
    await second.discard()
    await svc.release(OWNER, 1)
    assert not (svc.spool_dir / str(OWNER) / "1").exists()
    await fails(svc.take(OWNER, types.InputFile(1, 6, "x", "")), "FILE_PART_0_MISSING")
    await svc.release(OWNER, 1)  # again: harmless
    # release by the InputFile, with the assembled copy
    await upload(svc, data, KB, 2)
    used = types.InputFile(2, 6, "x", "")
    third = await svc.take(OWNER, used)
    await svc.release(OWNER, used, third)
    assert not third.path.exists()
    await fails(svc.take(OWNER, used), "FILE_PART_0_MISSING")
    # the file id can be used for a new upload after release
    await upload(svc, b"n" * 100, KB, 1)
    async with await svc.take(OWNER, types.InputFile(1, 1, "x", "")) as f:
        assert f.path.read_bytes() == b"n" * 100


async def test_bookkeeping_is_dropped_after_release(svc: UploadService) -> None:
    await upload(svc, b"x" * 2 * KB, KB, 1)
    await fails(svc.take(OWNER, types.InputFile(77, 1, "x", "")), "FILE_PART_0_MISSING")
    assert list(svc._uploads) == [(OWNER, 1)]  # lookups of unknown files leave nothing
    await svc.release(OWNER, 1)
    assert svc._uploads == {}


# --------------------------------------------------------------------------- concurrency


async def test_concurrent_parts_of_one_file(svc: UploadService) -> None:
    data = os.urandom(300 * 4 * KB + 1)
    parts = await upload(svc, data, 4 * KB, 1, shuffle=True)
    async with await svc.take(OWNER, types.InputFile(1, parts, "x", "")) as f:
        assert f.path.read_bytes() == data


async def test_concurrent_uploads_and_resends(svc: UploadService) -> None:
    blobs = {file_id: os.urandom(20 * 2 * KB + file_id) for file_id in range(1, 9)}
    await asyncio.gather(
        *(upload(svc, blob, 2 * KB, file_id, shuffle=True) for file_id, blob in blobs.items()),
        *(upload(svc, blob, 2 * KB, file_id, shuffle=True) for file_id, blob in blobs.items()),
    )
    # the same part with different bytes at once: one of them wins, whole
    await asyncio.gather(*(svc.save_part(OWNER, 99, 0, bytes([i]) * 8 * KB) for i in range(20)))
    results = await asyncio.gather(
        *(svc.take(OWNER, types.InputFile(fid, 21, "x", "")) for fid in blobs),
        svc.take(OWNER, types.InputFile(99, 1, "x", "")),
    )
    for f, blob in zip(results, blobs.values(), strict=False):
        assert f.path.read_bytes() == blob
    last = results[-1].path.read_bytes()
    assert len(last) == 8 * KB and len(set(last)) == 1
    for f in results:
        await f.discard()


async def test_cancelled_save_keeps_state_and_disk_in_step(svc: UploadService) -> None:
    await svc.save_part(OWNER, 1, 0, b"x" * KB)
    task = asyncio.ensure_future(svc.save_part(OWNER, 1, 1, b"y" * KB))
    await asyncio.sleep(0)  # waiting for the thread that writes the part
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # whatever landed on disk is what the service believes
    on_disk = (svc.spool_dir / str(OWNER) / "1" / "1").exists()
    if on_disk:
        async with await svc.take(OWNER, types.InputFile(1, 2, "x", "")) as f:
            assert f.path.read_bytes() == b"x" * KB + b"y" * KB
    else:
        await fails(svc.take(OWNER, types.InputFile(1, 2, "x", "")), "FILE_PART_1_MISSING")


# --------------------------------------------------------------------------- restarts


async def test_parts_survive_a_restart(tmp_path: Path) -> None:
    data = os.urandom(6 * 4 * KB + 10)
    before = UploadService(tmp_path, max_file_size=10**9, ttl_seconds=3600)
    await upload(before, data[: 3 * 4 * KB], 4 * KB, 1, big=False)
    parts = chunks(data, 4 * KB)
    for i in range(3):
        await before.save_part(OWNER, 2, i, parts[i], len(parts))

    await before.save_part(OWNER, 3, 0, b"x" * KB, -1)

    after = UploadService(tmp_path, max_file_size=10**9, ttl_seconds=3600)
    await fails(after.save_part(OWNER, 3, 1, b"x" * KB), "FILE_PARTS_INVALID")
    await after.save_part(OWNER, 3, 1, b"x" * KB, 2)
    again = UploadService(tmp_path, max_file_size=10**9, ttl_seconds=3600)
    await fails(again.save_part(OWNER, 3, 1, b"x" * KB, 3), "FILE_PARTS_INVALID")
    for i in range(3, len(parts)):
        await after.save_part(OWNER, 2, i, parts[i], len(parts))
    await fails(after.save_part(OWNER, 2, 0, parts[0], len(parts) + 1), "FILE_PARTS_INVALID")
    await fails(after.save_part(OWNER, 1, 1, b"x" * 8 * KB), "FILE_PART_SIZE_CHANGED")
    async with await after.take(OWNER, types.InputFileBig(2, len(parts), "b")) as f:
        assert f.path.read_bytes() == data
    async with await after.take(OWNER, types.InputFile(1, 3, "s", "")) as f:
        assert f.path.read_bytes() == data[: 3 * 4 * KB]


# --------------------------------------------------------------------------- janitor


async def test_sweep_deletes_uploads_untouched_for_the_ttl(tmp_path: Path) -> None:
    svc = UploadService(tmp_path, max_file_size=10**9, ttl_seconds=60)
    await upload(svc, b"x" * 3 * KB, KB, 1)
    await upload(svc, b"y" * 3 * KB, KB, 2, owner=OTHER)
    assert await svc.sweep() == 0  # fresh
    old = time.time() - 120
    os.utime(svc.spool_dir / str(OWNER) / "1", (old, old))
    svc._uploads.clear()  # as after a restart: only the disk knows
    assert await svc.sweep() == 1
    assert not (svc.spool_dir / str(OWNER) / "1").exists()
    await fails(svc.take(OWNER, types.InputFile(1, 3, "x", "")), "FILE_PART_0_MISSING")
    async with await svc.take(OTHER, types.InputFile(2, 3, "x", "")):
        pass
    # later, everything is old; empty owner directories go too
    assert await svc.sweep(now=time.time() + 3600) == 1
    assert await svc.sweep(now=time.time() + 3600) == 0
    assert [p.name for p in svc.spool_dir.iterdir()] == [uploads_module.ASSEMBLY_DIR]


async def test_sweep_skips_an_upload_touched_meanwhile(tmp_path: Path) -> None:
    svc = UploadService(tmp_path, max_file_size=10**9, ttl_seconds=60)
    await upload(svc, b"x" * 2 * KB, KB, 1)
    old = time.time() - 120
    os.utime(svc.spool_dir / str(OWNER) / "1", (old, old))  # stale on disk, fresh in memory
    assert await svc.sweep() == 0
    async with await svc.take(OWNER, types.InputFile(1, 2, "x", "")):
        pass


async def test_sweep_removes_stale_assembled_copies(tmp_path: Path) -> None:
    svc = UploadService(tmp_path, max_file_size=10**9, ttl_seconds=60)
    await upload(svc, b"x" * 2 * KB, KB, 1)
    kept = await svc.take(OWNER, types.InputFile(1, 2, "x", ""))
    forgotten = await svc.take(OWNER, types.InputFile(1, 2, "x", ""))
    old = time.time() - 120
    os.utime(forgotten.path, (old, old))
    await svc.sweep()
    assert kept.path.exists() and not forgotten.path.exists()
    await kept.discard()


async def test_sweep_work_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(uploads_module, "DELETE_BUDGET", 3)
    monkeypatch.setattr(uploads_module, "SCAN_BUDGET", 5)
    svc = UploadService(tmp_path, max_file_size=10**9, ttl_seconds=60)
    for file_id in range(10):
        await svc.save_part(OWNER + file_id % 2, file_id, 0, b"x" * KB)
    later = time.time() + 120
    runs: list[int] = []
    while (deleted := await svc.sweep(now=later)) or not runs or runs[-1]:
        runs.append(deleted)
        assert len(runs) < 20
    assert max(runs) == 3 and sum(runs) == 10
    assert svc._uploads == {}


async def test_janitor_task_expires_uploads(tmp_path: Path) -> None:
    svc = UploadService(tmp_path, max_file_size=10**9, ttl_seconds=1, sweep_interval=0.1)
    svc.start()
    try:
        await svc.save_part(OWNER, 1, 0, b"x" * KB)
        upload_dir = svc.spool_dir / str(OWNER) / "1"
        assert upload_dir.exists()
        deadline = time.monotonic() + 5
        while upload_dir.exists() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert not upload_dir.exists()
        await fails(svc.take(OWNER, types.InputFile(1, 1, "x", "")), "FILE_PART_0_MISSING")
    finally:
        await svc.stop()
    await svc.stop()  # twice is harmless


# --------------------------------------------------------------------------- resources


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc")
async def test_assembling_50_mb_keeps_memory_and_the_loop_free(tmp_path: Path) -> None:
    svc = UploadService(tmp_path, max_file_size=10**9, ttl_seconds=3600)
    parts = 100  # 50 MiB in 512 KiB parts
    md5 = hashlib.md5()
    for i in range(parts):
        block = os.urandom(PART_SIZE_MAX)
        md5.update(block)
        await svc.save_part(OWNER, 1, i, block)
    del block

    peak = base = _rss()
    sampling = True

    def sample() -> None:
        nonlocal peak
        while sampling:
            peak = max(peak, _rss())
            time.sleep(0.001)

    lag = 0.0

    async def ticker() -> None:
        nonlocal lag
        while True:
            start = time.perf_counter()
            await asyncio.sleep(0.001)
            lag = max(lag, time.perf_counter() - start - 0.001)

    sampler = threading.Thread(target=sample)
    sampler.start()
    tick = asyncio.ensure_future(ticker())
    try:
        f = await svc.take(OWNER, types.InputFile(1, parts, "big", md5.hexdigest()))
    finally:
        sampling = False
        sampler.join()
        tick.cancel()
    try:
        assert f.size == parts * PART_SIZE_MAX
        assert f.md5 == md5.hexdigest()
        growth = peak - base
        print(f"RSS growth while assembling 50 MiB: {growth / 2**20:.1f} MiB; loop lag {lag:.4f}s")
        assert growth < 8 * 2**20
        assert lag < 0.05
    finally:
        await f.discard()
