"""dfs LocalStore: layout, atomic writes, reads, and open_store's configuration checks.

The store contract shared with S3 is in tests/integration/test_object_store.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from pathlib import Path

import pytest

from teamgram.config import FilesConfig
from teamgram.service.dfs import BUCKETS, LocalStore, ObjectNotFound, check_key, open_store
from teamgram.service.dfs.store import S3Store

MiB = 1024 * 1024


@pytest.fixture
async def store(tmp_path: Path) -> LocalStore:
    local = LocalStore(tmp_path / "objects")
    await local.start()
    return local


def leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob(".*") if p.is_file()]


async def test_layout(store: LocalStore) -> None:
    assert sorted(p.name for p in store.root.iterdir()) == sorted(BUCKETS)
    await store.put_bytes("photos", "123_x", b"abc")
    path = store.path_of("photos", "123_x")
    assert path.read_bytes() == b"abc"
    fan_1, fan_2 = path.relative_to(store.root / "photos").parts[:2]
    assert len(fan_1) == len(fan_2) == 2
    assert leftovers(store.root) == []


async def test_put_read_size_delete(store: LocalStore) -> None:
    await store.put_bytes("documents", "a", b"hello world")
    assert await store.size("documents", "a") == 11
    assert await store.read("documents", "a", 0, 5) == b"hello"
    assert await store.read("documents", "a", 6, 100) == b"world"
    assert await store.read("documents", "a", 11, 10) == b""
    assert await store.read("documents", "a", 1000, 10) == b""
    await store.delete("documents", "a")
    assert await store.size("documents", "a") is None
    with pytest.raises(ObjectNotFound):
        await store.read("documents", "a", 0, 1)
    await store.delete("documents", "a")


async def test_put_file_streams_and_replaces_atomically(store: LocalStore, tmp_path: Path) -> None:
    source = tmp_path / "source"
    data = os.urandom(3 * MiB + 17)
    source.write_bytes(data)
    assert await store.put_file("videos", "v1", source) == len(data)
    assert store.path_of("videos", "v1").read_bytes() == data
    source.write_bytes(b"new")
    assert await store.put_file("videos", "v1", source) == 3
    assert await store.read("videos", "v1", 0, 100) == b"new"
    assert source.read_bytes() == b"new"  # copied, not moved
    assert leftovers(store.root) == []


async def test_failed_put_leaves_nothing(store: LocalStore, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        await store.put_file("documents", "gone", tmp_path / "no-such-file")
    assert await store.size("documents", "gone") is None

    await store.put_bytes("documents", "keep", b"old")
    with pytest.raises(TypeError):
        await store.put_bytes("documents", "keep", 12345)  # type: ignore[arg-type]
    assert await store.read("documents", "keep", 0, 10) == b"old"
    assert leftovers(store.root) == []


@pytest.mark.parametrize(
    ("bucket", "key"),
    [
        ("nope", "a"),
        ("documents", ""),
        ("documents", "../etc"),
        ("documents", "a/b"),
        ("documents", ".hidden"),
        ("documents", "a b"),
        ("documents", "x" * 201),
        ("documents", "é"),
    ],
)
async def test_bad_names(store: LocalStore, bucket: str, key: str) -> None:
    with pytest.raises(ValueError):
        check_key(bucket, key)
    with pytest.raises(ValueError):
        await store.put_bytes(bucket, key, b"x")
    with pytest.raises(ValueError):
        await store.read(bucket, key, 0, 1)


async def test_bad_ranges(store: LocalStore) -> None:
    await store.put_bytes("documents", "a", b"abc")
    with pytest.raises(ValueError):
        await store.read("documents", "a", -1, 1)
    with pytest.raises(ValueError):
        await store.read("documents", "a", 0, -1)
    assert await store.read("documents", "a", 0, 0) == b""


async def test_without_fsync(tmp_path: Path) -> None:
    store = LocalStore(tmp_path, fsync=False)
    await store.put_bytes("documents", "a", b"abc")
    assert await store.read("documents", "a", 0, 3) == b"abc"


async def test_big_put_does_not_hold_the_loop(store: LocalStore, tmp_path: Path) -> None:
    source = tmp_path / "big"
    with open(source, "wb") as f:
        for _ in range(64):
            f.write(os.urandom(MiB))
    lag = 0.0
    running = True

    async def ticker() -> None:
        nonlocal lag
        while running:
            start = time.perf_counter()
            await asyncio.sleep(0.001)
            lag = max(lag, time.perf_counter() - start - 0.001)

    tick = asyncio.ensure_future(ticker())
    try:
        assert await store.put_file("videos", "big", source) == 64 * MiB
        digest = hashlib.sha256()
        offset = 0
        while chunk := await store.read("videos", "big", offset, MiB):
            digest.update(chunk)
            offset += len(chunk)
    finally:
        running = False
        await tick
    assert digest.digest() == hashlib.sha256(source.read_bytes()).digest()
    assert lag < 0.05, lag


# --------------------------------------------------------------------------- open_store


async def test_open_store_local_defaults_to_the_data_dir(tmp_path: Path) -> None:
    store = await open_store(FilesConfig(), tmp_path)
    assert isinstance(store, LocalStore) and store.root == tmp_path / "files"
    assert (tmp_path / "files" / "documents").is_dir()
    await store.close()
    other = await open_store(FilesConfig(local_dir=str(tmp_path / "elsewhere")), tmp_path)
    assert isinstance(other, LocalStore) and other.root == tmp_path / "elsewhere"


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"storage": "ftp"}, "files.storage"),
        ({"storage": "s3"}, "files.s3_endpoint"),
        ({"storage": "s3", "s3_endpoint": "127.0.0.1:8333"}, "http"),
        (
            {"storage": "s3", "s3_endpoint": "http://h:1", "s3_access_key": "k"},
            "files.s3_secret_key",
        ),
        (
            {"storage": "s3", "s3_endpoint": "http://h:1", "s3_bucket_prefix": "Upper-"},
            "files.s3_bucket_prefix",
        ),
        (
            {"storage": "s3", "s3_endpoint": "http://h:1", "s3_bucket_prefix": "x" * 60},
            "files.s3_bucket_prefix",
        ),
    ],
)
async def test_open_store_explains_a_bad_config(
    tmp_path: Path, fields: dict[str, str], says: str
) -> None:
    with pytest.raises(ValueError, match=says.replace(".", r"\.")):
        await open_store(FilesConfig(**fields), tmp_path)  # type: ignore[arg-type]


async def test_open_store_s3_unreachable_is_a_clear_error(tmp_path: Path) -> None:
    cfg = FilesConfig(
        storage="s3",
        s3_endpoint="http://127.0.0.1:9",  # discard port: nothing listens
        s3_access_key="k",
        s3_secret_key="s",
    )
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="cannot use bucket 'documents'"):
        await open_store(cfg, tmp_path)
    assert time.monotonic() - started < 30


def test_s3_part_size_floor() -> None:
    with pytest.raises(ValueError):
        S3Store("http://h:1", "us-east-1", "k", "s", part_size=MiB)


async def test_put_file_move_takes_the_file_itself(store: LocalStore, tmp_path: Path) -> None:
    """The assembled upload is renamed into place, not copied (same filesystem)."""
    source = tmp_path / "assembled.bin"
    data = os.urandom(300_000)
    source.write_bytes(data)
    assert await store.put_file("documents", "moved", source, move=True) == len(data)
    assert not source.exists()
    assert await store.read("documents", "moved", 0, len(data)) == data
