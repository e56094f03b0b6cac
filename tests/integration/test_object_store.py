"""The object store contract, the same on every engine: LocalStore and a real S3
server (SeaweedFS, started once per session by tests/seaweedfs.py)."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from teamgram.config import FilesConfig
from teamgram.service.dfs import BUCKETS, ObjectNotFound, ObjectStore, S3Store, open_store
from tests.seaweedfs import SeaweedFS, s3_store_config_fixture, seaweedfs_fixture  # noqa: F401

MiB = 1024 * 1024


@pytest.fixture(params=["local", "s3"])
def files_config(request: pytest.FixtureRequest, tmp_path: Path) -> FilesConfig:
    if request.param == "local":
        return FilesConfig(storage="local", local_dir=str(tmp_path / "objects"))
    return FilesConfig(**request.getfixturevalue("s3_store_config"))


@pytest.fixture
async def store(files_config: FilesConfig, tmp_path: Path) -> AsyncIterator[ObjectStore]:
    opened = await open_store(files_config, tmp_path)
    try:
        yield opened
    finally:
        await opened.close()


def write_random(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            block = os.urandom(min(left, MiB))
            digest.update(block)
            f.write(block)
            left -= len(block)
    return digest.hexdigest()


async def read_all(store: ObjectStore, bucket: str, key: str, chunk: int = MiB) -> str:
    digest = hashlib.sha256()
    offset = 0
    while data := await store.read(bucket, key, offset, chunk):
        assert len(data) <= chunk
        digest.update(data)
        offset += len(data)
    return digest.hexdigest()


async def test_bytes_round_trip(store: ObjectStore) -> None:
    await store.put_bytes("documents", "k1", b"hello world")
    assert await store.size("documents", "k1") == 11
    assert await store.read("documents", "k1", 0, 5) == b"hello"
    assert await store.read("documents", "k1", 4, 3) == b"o w"
    assert await store.read("documents", "k1", 6, 100) == b"world"  # short at the end
    assert await store.read("documents", "k1", 10, 1) == b"d"
    assert await store.read("documents", "k1", 11, 10) == b""  # at the end
    assert await store.read("documents", "k1", 12345, 10) == b""  # after it
    assert await store.read("documents", "k1", 0, 0) == b""


async def test_overwrite(store: ObjectStore) -> None:
    await store.put_bytes("photos", "k", b"first version")
    await store.put_bytes("photos", "k", b"second")
    assert await store.size("photos", "k") == 6
    assert await store.read("photos", "k", 0, 100) == b"second"


async def test_missing_objects(store: ObjectStore) -> None:
    assert await store.size("videos", "never") is None
    with pytest.raises(ObjectNotFound):
        await store.read("videos", "never", 0, 10)
    await store.delete("videos", "never")  # no error


async def test_delete(store: ObjectStore) -> None:
    await store.put_bytes("encryptedfiles", "e", b"x" * 100)
    await store.delete("encryptedfiles", "e")
    assert await store.size("encryptedfiles", "e") is None
    with pytest.raises(ObjectNotFound):
        await store.read("encryptedfiles", "e", 0, 1)


async def test_empty_object(store: ObjectStore, tmp_path: Path) -> None:
    await store.put_bytes("documents", "empty", b"")
    assert await store.size("documents", "empty") == 0
    assert await store.read("documents", "empty", 0, 10) == b""
    (tmp_path / "empty").write_bytes(b"")
    assert await store.put_file("documents", "empty2", tmp_path / "empty") == 0
    assert await store.size("documents", "empty2") == 0


async def test_buckets_are_separate(store: ObjectStore) -> None:
    for bucket in BUCKETS:
        await store.put_bytes(bucket, "same-key", bucket.encode())
    for bucket in BUCKETS:
        assert await store.read(bucket, "same-key", 0, 100) == bucket.encode()
    await store.delete("photos", "same-key")
    assert await store.size("documents", "same-key") == len("documents")


@pytest.mark.parametrize("size", [1, 1000, 8 * MiB, 8 * MiB + 1, 21 * MiB + 12345])
async def test_put_file(store: ObjectStore, tmp_path: Path, size: int) -> None:
    """Small files and big ones (a multipart upload on S3: 8 MiB parts)."""
    source = tmp_path / "source.bin"
    digest = write_random(source, size)
    assert await store.put_file("videos", "file-1", source) == size
    assert await store.size("videos", "file-1") == size
    assert await read_all(store, "videos", "file-1") == digest
    with open(source, "rb") as f:
        for offset in {0, size // 2, max(0, size - 10), 8 * MiB - 5}:
            if offset >= size:
                continue
            f.seek(offset)
            want = f.read(4096)
            assert await store.read("videos", "file-1", offset, 4096) == want, offset


async def test_put_file_missing_source(store: ObjectStore, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        await store.put_file("documents", "nothing", tmp_path / "no-such-file")
    assert await store.size("documents", "nothing") is None


async def test_bad_names_are_refused_alike(store: ObjectStore) -> None:
    for bucket, key in (("nope", "a"), ("documents", "a/b"), ("documents", ".x")):
        with pytest.raises(ValueError):
            await store.put_bytes(bucket, key, b"x")
        with pytest.raises(ValueError):
            await store.size(bucket, key)


async def test_concurrent_use(store: ObjectStore) -> None:
    blobs = {f"c{i}": os.urandom(1000 + i * 4096) for i in range(16)}
    await asyncio.gather(*(store.put_bytes("documents", k, v) for k, v in blobs.items()))
    got = await asyncio.gather(*(store.read("documents", k, 0, 10**6) for k in blobs))
    assert got == list(blobs.values())
    await asyncio.gather(*(store.delete("documents", k) for k in blobs))
    assert await asyncio.gather(*(store.size("documents", k) for k in blobs)) == [None] * 16


# --------------------------------------------------------------------------- S3 only


async def test_s3_creates_the_buckets(s3_store_config: dict[str, Any], tmp_path: Path) -> None:
    cfg = FilesConfig(**s3_store_config)
    first = await open_store(cfg, tmp_path)
    try:
        assert isinstance(first, S3Store)
        names = {b["Name"] for b in (await first.client.list_buckets())["Buckets"]}
        assert {cfg.s3_bucket_prefix + b for b in BUCKETS} <= names
        await first.put_bytes("photos", "p", b"kept")
    finally:
        await first.close()
    again = await open_store(cfg, tmp_path)  # buckets already there: fine, data kept
    try:
        assert await again.read("photos", "p", 0, 10) == b"kept"
    finally:
        await again.close()


async def test_s3_wrong_secret_is_refused(s3_store_config: dict[str, Any], tmp_path: Path) -> None:
    cfg = FilesConfig(**{**s3_store_config, "s3_secret_key": "not-the-secret"})
    with pytest.raises(RuntimeError, match="cannot use bucket"):
        await open_store(cfg, tmp_path)


async def test_s3_failed_multipart_upload_is_aborted(
    s3_store_config: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await open_store(FilesConfig(**s3_store_config), tmp_path)
    assert isinstance(store, S3Store)
    try:
        source = tmp_path / "big"
        write_random(source, 20 * MiB)
        real = store.client.upload_part
        calls = 0

        async def flaky(**kwargs: Any) -> Any:
            nonlocal calls
            calls += 1
            if calls == 2:
                raise ConnectionError("network gone")
            return await real(**kwargs)

        monkeypatch.setattr(store.client, "upload_part", flaky)
        with pytest.raises(ConnectionError):
            await store.put_file("videos", "half", source)
        monkeypatch.undo()
        assert await store.size("videos", "half") is None
        bucket = store.bucket_name("videos")
        pending = await store.client.list_multipart_uploads(Bucket=bucket)
        assert not pending.get("Uploads")
    finally:
        await store.close()


def test_seaweedfs_listens_on_loopback_only(seaweedfs: SeaweedFS) -> None:
    assert seaweedfs.endpoint.startswith("http://127.0.0.1:")
