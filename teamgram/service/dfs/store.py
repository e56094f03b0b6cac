"""Object storage for the dfs service: one small async interface, two engines.

Objects live in four buckets (:data:`BUCKETS`) under short opaque keys chosen by
the caller (letters, digits, ``.``, ``_``, ``-``; see :func:`check_key`).

- :class:`LocalStore` (the embedded default): a directory tree,
  ``root/<bucket>/<2 hex>/<2 hex>/<key>`` (the fan-out keeps directories small).
  Writes go to a temporary file in the same directory, are fsynced and renamed
  over the final name, so a reader sees the old object or the new one, never half
  of one, and a crash leaves no torn object. All file I/O runs in worker threads
  (``asyncio.to_thread``), so the event loop only ever waits for a hand-off.
- :class:`S3Store`: any S3-compatible server (SeaweedFS, MinIO, AWS S3) through
  aiobotocore, path-style addressing, bucket names ``<prefix><bucket>``. Files are
  read and MD5-summed in worker threads and sent with ``Content-MD5`` (the server
  checks the body; the header is signed), so no hashing of large bodies happens on
  the event loop: payload signing and botocore's own CRC32 are turned off.

:func:`open_store` builds the one the configuration asks for.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import hashlib
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from teamgram.config import FilesConfig

BUCKETS = ("documents", "photos", "videos", "encryptedfiles")

MiB = 1024 * 1024
# Copy buffer for LocalStore.put_file: big enough for full disk speed, small in memory.
COPY_CHUNK = MiB

_KEY = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}")
# S3 bucket naming rules (lowercase, digits, dots, hyphens; 3..63; alphanumeric ends).
_S3_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


class ObjectNotFound(LookupError):
    """``read`` of an object that does not exist."""


class ObjectStore(Protocol):
    async def put_file(self, bucket: str, key: str, path: Path, move: bool = False) -> int:
        """Store the file at ``path`` (streamed, never read whole); returns its size.

        ``move``: the caller no longer needs ``path``; a store on the same
        filesystem may take the file itself instead of copying it.
        """
        ...

    async def put_bytes(self, bucket: str, key: str, data: bytes) -> None: ...

    async def read(self, bucket: str, key: str, offset: int, limit: int) -> bytes:
        """Up to ``limit`` bytes from ``offset``: short at the end, ``b""`` at/after it.

        Raises :class:`ObjectNotFound` for a missing object (``limit == 0`` returns
        ``b""`` without looking).
        """
        ...

    async def size(self, bucket: str, key: str) -> int | None:
        """The object's size in bytes, ``None`` if there is no such object."""
        ...

    async def delete(self, bucket: str, key: str) -> None:
        """Remove the object; no error if it is missing."""
        ...

    async def close(self) -> None: ...


def check_key(bucket: str, key: str) -> None:
    """Reject an unknown bucket or a key that is not a plain, short name (ValueError).

    Both engines accept exactly the same keys, so code tested on one works on the
    other; path separators and leading dots never reach the filesystem.
    """
    if bucket not in BUCKETS:
        raise ValueError(f"unknown bucket {bucket!r} (one of {', '.join(BUCKETS)})")
    if not _KEY.fullmatch(key):
        raise ValueError(f"invalid object key {key!r}: 1..200 of [A-Za-z0-9._-], no leading '.'")


def _check_range(offset: int, limit: int) -> None:
    if offset < 0 or limit < 0:
        raise ValueError(f"negative offset or limit ({offset}, {limit})")


# --------------------------------------------------------------------------- local


class LocalStore:
    """Objects as files under ``root``; see the module docstring for the layout."""

    def __init__(self, root: Path, *, fsync: bool = True) -> None:
        self.root = Path(root)
        # fsync before the rename (and the directory after): an object whose id is
        # committed to the database must survive a power cut. Tests may turn it off.
        self.fsync = fsync

    async def start(self) -> None:
        await asyncio.to_thread(self._make_buckets)

    def _make_buckets(self) -> None:
        for bucket in BUCKETS:
            (self.root / bucket).mkdir(parents=True, exist_ok=True)

    def path_of(self, bucket: str, key: str) -> Path:
        check_key(bucket, key)
        fan = hashlib.md5(key.encode(), usedforsecurity=False).hexdigest()
        return self.root / bucket / fan[:2] / fan[2:4] / key

    async def put_file(self, bucket: str, key: str, path: Path, move: bool = False) -> int:
        final = self.path_of(bucket, key)
        if move:
            moved = await asyncio.to_thread(self._move_file, final, Path(path))
            if moved is not None:
                return moved
        return await asyncio.to_thread(self._put_file, final, Path(path))

    def _move_file(self, final: Path, source: Path) -> int | None:
        """Rename ``source`` into place (durably); None across filesystems (copy instead)."""
        final.parent.mkdir(parents=True, exist_ok=True)
        with open(source, "rb") as f:
            if self.fsync:
                os.fsync(f.fileno())
            size = os.fstat(f.fileno()).st_size
        try:
            os.replace(source, final)
        except OSError as exc:
            if exc.errno == errno.EXDEV:
                return None
            raise
        if self.fsync:
            _fsync_dir(final.parent)
        return size

    def _put_file(self, final: Path, source: Path) -> int:
        with open(source, "rb") as src:

            def fill(dst: BinaryIO) -> int:
                size = 0
                while chunk := src.read(COPY_CHUNK):
                    dst.write(chunk)
                    size += len(chunk)
                return size

            return self._write_atomic(final, fill)

    async def put_bytes(self, bucket: str, key: str, data: bytes) -> None:
        final = self.path_of(bucket, key)
        await asyncio.to_thread(self._write_atomic, final, lambda dst: dst.write(data))

    def _write_atomic(self, final: Path, fill: Callable[[BinaryIO], int]) -> int:
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
        try:
            with os.fdopen(fd, "wb") as dst:
                size = fill(dst)
                if self.fsync:
                    dst.flush()
                    os.fsync(dst.fileno())
            os.replace(tmp, final)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        if self.fsync:
            _fsync_dir(final.parent)
        return size

    async def read(self, bucket: str, key: str, offset: int, limit: int) -> bytes:
        _check_range(offset, limit)
        path = self.path_of(bucket, key)
        if limit == 0:
            return b""
        return await asyncio.to_thread(_pread, path, offset, limit)

    async def size(self, bucket: str, key: str) -> int | None:
        path = self.path_of(bucket, key)
        return await asyncio.to_thread(_size, path)

    async def delete(self, bucket: str, key: str) -> None:
        path = self.path_of(bucket, key)
        await asyncio.to_thread(_unlink, path)

    async def close(self) -> None:
        return None


def _pread(path: Path, offset: int, limit: int) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise ObjectNotFound(str(path)) from None
    try:
        return os.pread(fd, limit, offset)
    finally:
        os.close(fd)


def _size(path: Path) -> int | None:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return None


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- S3


class S3Store:
    """An S3-compatible store. Call :meth:`start` (creates missing buckets) first."""

    def __init__(
        self,
        endpoint: str,
        region: str,
        access_key: str,
        secret_key: str,
        bucket_prefix: str = "",
        *,
        part_size: int = 8 * MiB,
        concurrency: int = 2,
        max_parts_in_flight: int = 8,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
    ) -> None:
        if part_size < 5 * MiB:
            raise ValueError("S3 multipart parts must be at least 5 MiB")
        self.endpoint = endpoint
        self.region = region
        self.bucket_prefix = bucket_prefix
        # Files up to part_size go in one PutObject, bigger ones as a multipart
        # upload of part_size parts, `concurrency` at once per file. A part in
        # flight costs about twice its size in memory (aiohttp copies the body), so
        # the whole store sends at most max_parts_in_flight parts (or small files)
        # at once: 8 x 8 MiB parts, ~130 MiB at worst, however many files arrive.
        self.part_size = part_size
        self.concurrency = concurrency
        self._in_flight = asyncio.Semaphore(max_parts_in_flight)
        # Connections: the uploads above plus downloads (upload.getFile reads).
        self._pool = max(32, 2 * max_parts_in_flight)
        self._access_key = access_key
        self._secret_key = secret_key
        self._timeouts = (connect_timeout, read_timeout)
        self._stack = contextlib.AsyncExitStack()
        self._client: Any = None

    def bucket_name(self, bucket: str) -> str:
        return self.bucket_prefix + bucket

    @property
    def client(self) -> Any:
        if self._client is None:
            raise RuntimeError("S3Store.start() was not called (or close() was)")
        return self._client

    async def start(self) -> None:
        from aiobotocore.config import AioConfig
        from aiobotocore.session import get_session

        connect_timeout, read_timeout = self._timeouts
        config = AioConfig(
            s3={"addressing_style": "path", "payload_signing_enabled": False},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"max_attempts": 3, "mode": "standard"},
            max_pool_connections=self._pool,
        )
        credentials = {}
        if self._access_key:  # else botocore's chain: environment, ~/.aws, instance role
            credentials = {
                "aws_access_key_id": self._access_key,
                "aws_secret_access_key": self._secret_key,
            }
        self._client = await self._stack.enter_async_context(
            get_session().create_client(
                "s3",
                endpoint_url=self.endpoint or None,
                region_name=self.region or None,
                config=config,
                **credentials,
            )
        )
        try:
            for bucket in BUCKETS:
                await self._ensure_bucket(self.bucket_name(bucket))
        except BaseException:
            await self.close()
            raise

    async def _ensure_bucket(self, name: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            try:
                await self.client.head_bucket(Bucket=name)
                return
            except ClientError as exc:
                if _status(exc) != 404:
                    raise
            extra: dict[str, Any] = {}
            if self.region and self.region != "us-east-1":
                extra["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
            try:
                await self.client.create_bucket(Bucket=name, **extra)
            except ClientError as exc:
                if _code(exc) != "BucketAlreadyOwnedByYou":  # a concurrent start made it
                    raise
        except (ClientError, BotoCoreError) as exc:
            raise RuntimeError(
                f"S3 store at {self.endpoint or 'AWS'}: cannot use bucket {name!r}: {exc}"
                " (check files.s3_endpoint, s3_access_key, s3_secret_key, s3_bucket_prefix)"
            ) from exc

    async def put_file(self, bucket: str, key: str, path: Path, move: bool = False) -> int:
        check_key(bucket, key)
        name = self.bucket_name(bucket)
        fd, size = await asyncio.to_thread(_open_sized, Path(path))
        try:
            if size <= self.part_size:
                async with self._in_flight:
                    data, md5 = await asyncio.to_thread(_read_chunk, fd, 0, size)
                    await self.client.put_object(Bucket=name, Key=key, Body=data, ContentMD5=md5)
                return len(data)
            await self._put_multipart(name, key, fd, size)
            return size
        finally:
            os.close(fd)

    async def _put_multipart(self, name: str, key: str, fd: int, size: int) -> None:
        # S3 allows 10000 parts: grow the part for (far) bigger files than ours.
        part_size = max(self.part_size, -(-size // 10000))
        count = -(-size // part_size)
        upload = await self.client.create_multipart_upload(Bucket=name, Key=key)
        upload_id = upload["UploadId"]
        etags: dict[int, str] = {}
        next_part = iter(range(1, count + 1))

        async def worker() -> None:
            for number in next_part:  # shared iterator: each part is taken once
                offset = (number - 1) * part_size
                async with self._in_flight:
                    data, md5 = await asyncio.to_thread(_read_chunk, fd, offset, part_size)
                    answer = await self.client.upload_part(
                        Bucket=name,
                        Key=key,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=data,
                        ContentMD5=md5,
                    )
                    del data
                etags[number] = answer["ETag"]

        try:
            try:
                async with asyncio.TaskGroup() as group:
                    for _ in range(min(self.concurrency, count)):
                        group.create_task(worker())
            except BaseExceptionGroup as failed:  # callers expect the error itself
                raise failed.exceptions[0] from None
            parts = [{"ETag": etags[n], "PartNumber": n} for n in range(1, count + 1)]
            await self.client.complete_multipart_upload(
                Bucket=name, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            # Do not leave the parts behind (they cost space until the bucket's
            # lifecycle rules, if any, remove them).
            with contextlib.suppress(Exception):
                await asyncio.shield(
                    self.client.abort_multipart_upload(Bucket=name, Key=key, UploadId=upload_id)
                )
            raise

    async def put_bytes(self, bucket: str, key: str, data: bytes) -> None:
        check_key(bucket, key)
        md5 = await asyncio.to_thread(_md5_b64, data) if len(data) > 65536 else _md5_b64(data)
        await self.client.put_object(
            Bucket=self.bucket_name(bucket), Key=key, Body=data, ContentMD5=md5
        )

    async def read(self, bucket: str, key: str, offset: int, limit: int) -> bytes:
        from botocore.exceptions import ClientError

        check_key(bucket, key)
        _check_range(offset, limit)
        if limit == 0:
            return b""
        try:
            answer = await self.client.get_object(
                Bucket=self.bucket_name(bucket),
                Key=key,
                Range=f"bytes={offset}-{offset + limit - 1}",
            )
        except ClientError as exc:
            if _code(exc) in ("NoSuchKey", "NotFound", "404"):
                raise ObjectNotFound(f"{bucket}/{key}") from None
            if _code(exc) == "InvalidRange" or _status(exc) == 416:
                return b""  # at or after the end (or an empty object)
            raise
        async with answer["Body"] as body:
            data: bytes = await body.read()
        if answer["ResponseMetadata"]["HTTPStatusCode"] == 200:  # Range ignored: whole body
            data = data[offset : offset + limit]
        return data

    async def size(self, bucket: str, key: str) -> int | None:
        from botocore.exceptions import ClientError

        check_key(bucket, key)
        try:
            head = await self.client.head_object(Bucket=self.bucket_name(bucket), Key=key)
        except ClientError as exc:
            if _status(exc) == 404 or _code(exc) in ("NoSuchKey", "NotFound", "404"):
                return None
            raise
        return int(head["ContentLength"])

    async def delete(self, bucket: str, key: str) -> None:
        from botocore.exceptions import ClientError

        check_key(bucket, key)
        try:
            await self.client.delete_object(Bucket=self.bucket_name(bucket), Key=key)
        except ClientError as exc:
            if _code(exc) != "NoSuchKey":
                raise

    async def close(self) -> None:
        self._client = None
        await self._stack.aclose()


def _open_sized(path: Path) -> tuple[int, int]:
    fd = os.open(path, os.O_RDONLY)
    return fd, os.fstat(fd).st_size


def _read_chunk(fd: int, offset: int, length: int) -> tuple[bytes, str]:
    """``length`` bytes at ``offset`` (fewer at the end) and their base64 MD5."""
    data = os.pread(fd, length, offset)
    return data, _md5_b64(data)


def _md5_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()


def _code(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: Any) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


# --------------------------------------------------------------------------- factory


async def open_store(cfg: FilesConfig, data_dir: Path) -> ObjectStore:
    """The store ``cfg.storage`` names, started; ValueError saying what to set if wrong."""
    kind = cfg.storage.strip().lower()
    if kind == "local":
        local = LocalStore(Path(cfg.local_dir) if cfg.local_dir else Path(data_dir) / "files")
        await local.start()
        return local
    if kind == "s3":
        _check_s3_config(cfg)
        s3 = S3Store(
            cfg.s3_endpoint,
            cfg.s3_region,
            cfg.s3_access_key,
            cfg.s3_secret_key,
            cfg.s3_bucket_prefix,
        )
        await s3.start()
        return s3
    raise ValueError(
        f"files.storage is {cfg.storage!r}: set it to 'local' (a directory, files.local_dir)"
        " or 's3' (files.s3_endpoint and credentials)"
    )


def _check_s3_config(cfg: FilesConfig) -> None:
    if not cfg.s3_endpoint:
        raise ValueError(
            "files.storage is 's3' but files.s3_endpoint is empty: set it (or"
            " TEAMGRAM_FILES_S3_ENDPOINT) to the S3 server's URL, e.g. http://127.0.0.1:8333"
            " (AWS: https://s3.<region>.amazonaws.com)"
        )
    if not re.match(r"https?://[^/\s]+", cfg.s3_endpoint):
        raise ValueError(f"files.s3_endpoint {cfg.s3_endpoint!r} is not an http:// or https:// URL")
    if bool(cfg.s3_access_key) != bool(cfg.s3_secret_key):
        raise ValueError(
            "set both files.s3_access_key and files.s3_secret_key (or neither, to use the"
            " AWS credential chain: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, ~/.aws)"
        )
    for bucket in BUCKETS:
        name = cfg.s3_bucket_prefix + bucket
        if not _S3_BUCKET.fullmatch(name) or ".." in name:
            raise ValueError(
                f"files.s3_bucket_prefix {cfg.s3_bucket_prefix!r} makes the bucket name"
                f" {name!r} invalid: use lowercase letters, digits, '-' and '.' (at most"
                f" {63 - len(bucket)} characters)"
            )
