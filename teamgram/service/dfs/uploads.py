"""Uploads: file parts (``upload.saveFilePart`` / ``saveBigFilePart``) until a file is used.

A client cuts a file into parts of one size (a multiple of 1 KiB that divides
512 KiB; only the last part may be shorter), numbers them from 0 and sends them,
in any order and in parallel, under a random ``file_id``. Then it names the file
in a request (``InputFile`` / ``InputFileBig``) and the server puts it together.

Parts are spooled to disk, ``spool_dir/<owner_id>/<file_id>/<part>`` (each written
to a temporary name and renamed, so a re-sent part replaces the old one whole);
no file is ever held in memory, only its bookkeeping: which parts are there, the
common part size, and the last part's number and size. Every part is checked on
arrival against the parts already there, so the spool always holds a file that
can still become valid; :meth:`UploadService.take` then checks it is complete.

Using a file (:meth:`UploadService.take`) does not consume it: Telegram lets a
client send the same uploaded file again until it expires (Telethon: "usable
during less than a day"), so each ``take`` assembles a fresh temporary copy and
the parts stay until :meth:`UploadService.release` or until nobody has added a
part for ``ttl_seconds`` (the janitor). ``take`` does not extend that time.

Ownership is the directory: an upload is found only under the owner that saved
it, so another user's ``file_id`` looks like a file with no parts.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from teamgram.errors import bad_request

log = logging.getLogger(__name__)

T = TypeVar("T")

PART_SIZE_MAX = 512 * 1024
MAX_PARTS = 4000  # 0..3999: 2000 MiB in 512 KiB parts (Telegram's non-premium limit)

ASSEMBLY_DIR = ".assembly"  # temporary assembled files (not an owner id: never clashes)
TOTAL_FILE = ".total"  # a saveBigFilePart upload's total (-1: not known yet), for restarts

# Janitor: a run looks at this many upload directories and deletes at most this
# many uploads, then yields; the next run continues where this one stopped.
SCAN_BUDGET = 2000
DELETE_BUDGET = 200


def _valid_part_size(size: int) -> bool:
    """Telegram's rule for every part but the last: size % 1024 == 0, 524288 % size == 0."""
    return size > 0 and size % 1024 == 0 and PART_SIZE_MAX % size == 0


@dataclass
class AssembledFile:
    """A used upload, put together in a temporary file that belongs to the caller.

    Move it into the store (``ObjectStore.put_file``), then :meth:`discard` it (or
    use ``async with``). ``md5`` is the content's hex MD5 for ``InputFile`` (and
    the encrypted ``*Uploaded`` forms, which carry ``md5_checksum``); ``""`` for
    ``InputFileBig``, whose content is not hashed.
    """

    path: Path
    size: int
    name: str
    md5: str

    async def discard(self) -> None:
        await asyncio.to_thread(_unlink, self.path)

    async def __aenter__(self) -> AssembledFile:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.discard()


@dataclass
class _Upload:
    """One upload's bookkeeping; the parts themselves are files in ``dir``."""

    dir: Path
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    loaded: bool = False
    users: int = 0  # tasks holding or waiting for the lock
    present: bytearray = field(default_factory=lambda: bytearray(MAX_PARTS))
    count: int = 0
    last: int = -1  # the highest part number saved
    last_size: int = 0
    part_size: int | None = None  # the size of every part below `last` (None: none yet)
    big: bool = False  # saved with saveBigFilePart
    total_parts: int | None = None  # saveBigFilePart's file_total_parts, once known
    touched: float = 0.0  # when the last part was saved

    def reset(self) -> None:
        self.present = bytearray(MAX_PARTS)
        self.count, self.last, self.last_size = 0, -1, 0
        self.part_size = self.total_parts = None
        self.big = False

    def size_bound(self) -> int:
        """The smallest size the file can still have, given its parts so far."""
        if self.count == 0:
            return 0
        common = self.part_size if self.part_size is not None else self.last_size
        least = self.last * common + self.last_size
        if self.total_parts is not None and self.total_parts - 1 > self.last:
            least = max(least, (self.total_parts - 1) * common + 1)
        return least


class UploadService:
    def __init__(
        self,
        spool_dir: Path,
        max_file_size: int,
        ttl_seconds: int,
        *,
        sweep_interval: float | None = None,
    ) -> None:
        self.spool_dir = Path(spool_dir)
        self.max_file_size = max_file_size
        self.ttl_seconds = ttl_seconds
        # A quarter of the TTL (at most 10 minutes): an upload outlives its TTL by
        # at most that much.
        self.sweep_interval = (
            sweep_interval if sweep_interval is not None else max(1.0, min(ttl_seconds / 4, 600))
        )
        self._uploads: dict[tuple[int, int], _Upload] = {}
        self._janitor: asyncio.Task[None] | None = None
        self._sweep_lock = asyncio.Lock()
        self._walker: Iterator[tuple[int, int, float]] | None = None

    @property
    def assembly_dir(self) -> Path:
        return self.spool_dir / ASSEMBLY_DIR

    def _dir(self, owner_id: int, file_id: int) -> Path:
        return self.spool_dir / str(int(owner_id)) / str(int(file_id))

    @contextlib.asynccontextmanager
    async def _locked(self, owner_id: int, file_id: int) -> AsyncIterator[_Upload]:
        """The upload's state under its lock, loaded from disk on first use (restarts)."""
        key = (owner_id, file_id)
        upload = self._uploads.get(key)
        if upload is None:
            upload = self._uploads[key] = _Upload(self._dir(owner_id, file_id))
        upload.users += 1
        try:
            async with upload.lock:
                if not upload.loaded:
                    await asyncio.to_thread(_load, upload)
                    upload.loaded = True
                yield upload
        finally:
            upload.users -= 1
            if upload.users == 0 and upload.count == 0 and self._uploads.get(key) is upload:
                del self._uploads[key]

    # ----------------------------------------------------------------------- parts

    async def save_part(
        self,
        owner_id: int,
        file_id: int,
        part: int,
        data: bytes,
        total_parts: int | None = None,
    ) -> None:
        """Spool one part; ``total_parts`` given means ``upload.saveBigFilePart``.

        ``total_parts == -1`` is a streamed upload's "not known yet" (TDLib sends it
        while the file is still being written, then the real total); a known total
        may not change. Raises RpcError(400) with Telegram's names:
        FILE_PART_INVALID (number out of range), FILE_PARTS_INVALID (bad or changed
        total, saveFilePart and saveBigFilePart mixed, or the file would exceed
        max_file_size), FILE_PART_EMPTY, FILE_PART_TOO_BIG, FILE_PART_SIZE_INVALID
        (a part that is not the last has a size Telegram does not allow),
        FILE_PART_SIZE_CHANGED (parts of different sizes).
        """
        if not 0 <= part < MAX_PARTS:
            raise bad_request("FILE_PART_INVALID")
        big = total_parts is not None
        known = total_parts if total_parts != -1 else None
        if known is not None:
            if not 0 < known <= MAX_PARTS:
                raise bad_request("FILE_PARTS_INVALID")
            if part >= known:
                raise bad_request("FILE_PART_INVALID")
        if not data:
            raise bad_request("FILE_PART_EMPTY")
        if len(data) > PART_SIZE_MAX:
            raise bad_request("FILE_PART_TOO_BIG")
        async with self._locked(owner_id, file_id) as upload:
            if upload.count:
                if upload.big != big:
                    raise bad_request("FILE_PARTS_INVALID")  # saveFilePart <-> saveBigFilePart
                if known is not None and upload.total_parts not in (None, known):
                    raise bad_request("FILE_PARTS_INVALID")  # the total changed
                if known is not None and upload.last >= known:
                    raise bad_request("FILE_PARTS_INVALID")  # parts beyond the total exist
            total = known if known is not None else upload.total_parts if upload.count else None
            new = _after_part(upload, part, len(data), total)
            new.big = big
            if new.size_bound() > self.max_file_size:
                raise bad_request("FILE_PARTS_INVALID")
            record = upload.count == 0 or new.total_parts != upload.total_parts
            total_record = (total if total is not None else -1) if big else None
            try:
                await _settled(_write_part, upload.dir, part, data, total_record, record)
            except BaseException:
                upload.loaded = False  # the disk knows whether the part landed: reread it
                raise
            upload.present, upload.count = new.present, new.count
            upload.last, upload.last_size = new.last, new.last_size
            upload.part_size, upload.total_parts = new.part_size, new.total_parts
            upload.big = new.big
            upload.touched = time.time()

    # ----------------------------------------------------------------------- use

    async def take(self, owner_id: int, input_file: Any) -> AssembledFile:
        """Put the uploaded file together; the parts stay (see the module docstring).

        ``input_file``: ``InputFile`` or ``InputFileBig`` (or any object with ``id``,
        ``parts`` and, to check the content, ``md5_checksum``, such as
        ``InputEncryptedFileUploaded``). Raises RpcError(400): FILE_PARTS_INVALID
        (bad ``parts``, or not the number of parts saved), FILE_PART_<n>_MISSING (the
        first missing part; FILE_PART_0_MISSING when nothing was saved, or it was
        saved by someone else), MD5_CHECKSUM_INVALID.
        """
        file_id, parts = int(input_file.id), int(input_file.parts)
        expected_md5: str | None = getattr(input_file, "md5_checksum", None)
        name = str(getattr(input_file, "name", ""))
        if not 0 < parts <= MAX_PARTS:
            raise bad_request("FILE_PARTS_INVALID")
        async with self._locked(owner_id, file_id) as upload:
            if upload.count == 0:
                raise bad_request("FILE_PART_0_MISSING")
            if upload.last >= parts or (
                upload.total_parts is not None and upload.total_parts != parts
            ):
                raise bad_request("FILE_PARTS_INVALID")
            missing = upload.present.find(0, 0, parts)
            if missing != -1:
                raise bad_request(f"FILE_PART_{missing}_MISSING")
            size = upload.size_bound()
            if size > self.max_file_size:
                raise bad_request("FILE_PARTS_INVALID")
            common = upload.part_size if upload.part_size is not None else upload.last_size
            try:
                path, md5 = await _settled(
                    _assemble,
                    upload.dir,
                    self.assembly_dir,
                    parts,
                    common,
                    upload.last_size,
                    expected_md5 is not None,
                    abandon=lambda result: _unlink(result[0]),
                )
            except _PartMissing as exc:  # removed (or damaged) behind our back
                raise bad_request(f"FILE_PART_{exc.part}_MISSING") from None
        assembled = AssembledFile(path, size, name, md5)
        if expected_md5 and expected_md5.strip().lower() != md5:
            await assembled.discard()
            raise bad_request("MD5_CHECKSUM_INVALID")
        return assembled

    async def release(
        self, owner_id: int, file: int | Any, assembled: AssembledFile | None = None
    ) -> None:
        """Delete the upload's parts now (no error if there are none).

        ``file``: the file_id, or the ``InputFile``-like object naming it. With
        ``assembled`` (what ``take`` returned), its temporary file goes too. After
        this, the same ``InputFile`` gets FILE_PART_0_MISSING; without it, the parts
        last until the janitor's TTL, and the file can be sent again meanwhile.
        """
        file_id = int(file) if isinstance(file, int) else int(file.id)
        if assembled is not None:
            await assembled.discard()
        async with self._locked(owner_id, file_id) as upload:
            await self._remove(upload)

    async def _remove(self, upload: _Upload) -> None:
        try:
            await _settled(_rmtree, upload.dir)
        finally:
            upload.reset()
            upload.loaded = False  # whatever a cancelled removal left is reread

    # ----------------------------------------------------------------------- janitor

    def start(self) -> None:
        """Start the janitor (a task on the running loop)."""
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        if self._janitor is None:
            self._janitor = asyncio.get_running_loop().create_task(
                self._janitor_loop(), name="dfs-upload-janitor"
            )

    async def stop(self) -> None:
        task, self._janitor = self._janitor, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _janitor_loop(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_interval)
            try:
                await self.sweep()
            except Exception:
                log.exception("upload janitor run failed")

    async def sweep(self, now: float | None = None) -> int:
        """One bounded janitor run: delete uploads untouched for ttl_seconds.

        Looks at up to SCAN_BUDGET upload directories (continuing where the last run
        stopped) and deletes up to DELETE_BUDGET uploads; also removes assembled
        temporaries that old (a caller that died before discarding them). Returns
        the number of uploads deleted.
        """
        cutoff = (time.time() if now is None else now) - self.ttl_seconds
        async with self._sweep_lock:
            stale = await _settled(self._scan, cutoff)  # one thread on the walker at a time
            deleted = 0
            for owner_id, file_id in stale:
                async with self._locked(owner_id, file_id) as upload:
                    if upload.count and upload.touched >= cutoff:
                        continue  # a part arrived meanwhile
                    await self._remove(upload)
                    deleted += 1
            return deleted

    def _scan(self, cutoff: float) -> list[tuple[int, int]]:
        """(In a thread.) Stale uploads from the next SCAN_BUDGET directories."""
        stale: list[tuple[int, int]] = []
        for _ in range(SCAN_BUDGET):
            if self._walker is None:
                self._walker = self._walk(cutoff)
            entry = next(self._walker, None)
            if entry is None:
                self._walker = None
                break
            owner_id, file_id, mtime = entry
            if mtime < cutoff:
                stale.append((owner_id, file_id))
                if len(stale) >= DELETE_BUDGET:
                    break
        return stale

    def _walk(self, cutoff: float) -> Iterator[tuple[int, int, float]]:
        """Every upload directory as (owner, file_id, mtime); tidies as it goes.

        A part's rename updates its directory's mtime, so the mtime is the time
        the last part arrived (also after a restart). ``cutoff`` is the first
        run's: good enough for temporaries and empty owner directories.
        """
        try:
            owners = os.scandir(self.spool_dir)
        except FileNotFoundError:
            return
        with owners:
            yield from self._walk_owners(owners, cutoff)

    def _walk_owners(
        self, owners: Iterator[os.DirEntry[str]], cutoff: float
    ) -> Iterator[tuple[int, int, float]]:
        for owner in owners:
            if owner.name == ASSEMBLY_DIR:
                _remove_older(owner.path, cutoff)
                continue
            owner_id = _int(owner.name)
            if owner_id is None or not owner.is_dir(follow_symlinks=False):
                continue
            seen = 0
            try:
                with os.scandir(owner.path) as uploads:
                    for entry in uploads:
                        file_id = _int(entry.name)
                        if file_id is None:
                            continue
                        seen += 1
                        try:
                            mtime = entry.stat(follow_symlinks=False).st_mtime
                        except FileNotFoundError:
                            continue
                        yield owner_id, file_id, mtime
            except FileNotFoundError:
                continue
            if not seen:
                with contextlib.suppress(OSError):  # not empty (any more), or gone
                    if os.stat(owner.path).st_mtime < cutoff:
                        os.rmdir(owner.path)


# --------------------------------------------------------------------------- rules


def _after_part(upload: _Upload, part: int, size: int, total_parts: int | None) -> _Upload:
    """The upload's bookkeeping with this part added, or RpcError if that breaks a rule.

    The invariant kept: every part below ``last`` has ``part_size`` bytes (a valid
    part size), and ``last`` has at most that many. A part that is known not to be
    the last (a higher part exists, or the total says so) must be full-sized.
    """
    new = _Upload(
        upload.dir,
        present=bytearray(upload.present),
        count=upload.count,
        last=upload.last,
        last_size=upload.last_size,
        part_size=upload.part_size,
        total_parts=total_parts,
    )
    if not new.present[part]:
        new.present[part] = 1
        new.count += 1

    def join_full(join_size: int) -> None:
        """A part below the last one, of join_size bytes."""
        if not _valid_part_size(join_size):
            raise bad_request("FILE_PART_SIZE_INVALID")
        if new.part_size is None:
            new.part_size = join_size
        elif join_size != new.part_size:
            raise bad_request("FILE_PART_SIZE_CHANGED")

    if upload.count == 0 or (upload.count == 1 and upload.present[part]):
        new.last, new.last_size = part, size  # the first part (or it again)
    elif part > upload.last:  # the old last part is not the last after all
        join_full(upload.last_size)
        new.last, new.last_size = part, size
    elif part == upload.last:
        new.last_size = size
    else:
        join_full(size)
    if new.part_size is not None and new.last_size > new.part_size:
        raise bad_request("FILE_PART_SIZE_CHANGED")
    if total_parts is not None and part < total_parts - 1:  # surely not the last
        if not _valid_part_size(size):
            raise bad_request("FILE_PART_SIZE_INVALID")
        if new.part_size is not None and size != new.part_size:
            raise bad_request("FILE_PART_SIZE_CHANGED")
    return new


async def _settled(
    func: Callable[..., T], *args: Any, abandon: Callable[[T], None] | None = None
) -> T:
    """``asyncio.to_thread(func, *args)`` that, when cancelled, lets the thread finish
    before the cancellation goes on, so the caller's lock still covers the thread's
    disk work; ``abandon(result)`` then disposes of a result nobody will get."""
    future = asyncio.ensure_future(asyncio.to_thread(func, *args))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        if not future.done():
            await asyncio.wait([future])
        if abandon is not None and not future.cancelled() and future.exception() is None:
            await asyncio.to_thread(abandon, future.result())
        raise


# --------------------------------------------------------------------------- disk
# Everything below runs in worker threads.


class _PartMissing(Exception):
    def __init__(self, part: int) -> None:
        super().__init__(part)
        self.part = part


def _int(name: str) -> int | None:
    try:
        return int(name)
    except ValueError:
        return None


def _load(upload: _Upload) -> None:
    """Rebuild the bookkeeping from the upload's directory (after a restart)."""
    upload.reset()
    sizes: dict[int, int] = {}
    try:
        with os.scandir(upload.dir) as entries:
            for entry in entries:
                if entry.name == TOTAL_FILE:
                    with contextlib.suppress(OSError, ValueError):
                        total = int(Path(entry.path).read_text())
                        upload.big = True
                        upload.total_parts = total if total > 0 else None
                    continue
                number = _int(entry.name)
                if number is not None and 0 <= number < MAX_PARTS:
                    sizes[number] = entry.stat(follow_symlinks=False).st_size
        upload.touched = os.stat(upload.dir).st_mtime
    except FileNotFoundError:
        return
    if not sizes:
        return
    for number in sizes:
        upload.present[number] = 1
    upload.count = len(sizes)
    upload.last = max(sizes)
    upload.last_size = sizes[upload.last]
    below = {size for number, size in sizes.items() if number != upload.last}
    # Mixed sizes cannot be written by save_part; should a damaged spool have them,
    # the largest is kept and take() finds the parts of other sizes missing.
    upload.part_size = max(below) if below else None


def _write_part(
    directory: Path, part: int, data: bytes, total_record: int | None, record: bool
) -> None:
    """Write one part; with ``record``, first write the total record (-1: big, total
    not known; None: no record, a saveFilePart upload)."""
    for attempt in range(3):  # the janitor may remove an empty owner directory meanwhile
        try:
            directory.mkdir(parents=True, exist_ok=True)
            if record and total_record is not None:
                _write_replace(directory, TOTAL_FILE, str(total_record).encode())
            elif record:
                _unlink(directory / TOTAL_FILE)
            _write_replace(directory, str(part), data)
            return
        except FileNotFoundError:
            if attempt == 2:
                raise


def _write_replace(directory: Path, name: str, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, directory / name)
    except BaseException:
        _unlink(Path(tmp))
        raise


def _assemble(
    directory: Path,
    assembly_dir: Path,
    parts: int,
    part_size: int,
    last_size: int,
    hash_md5: bool,
) -> tuple[Path, str]:
    """Concatenate parts 0..parts-1 into a new temporary file; (path, hex md5 or "")."""
    assembly_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="upload-", suffix=".tmp", dir=assembly_dir)
    md5 = hashlib.md5(usedforsecurity=False) if hash_md5 else None
    try:
        with os.fdopen(fd, "wb") as out:
            for part in range(parts):
                expected = last_size if part == parts - 1 else part_size
                try:
                    with open(directory / str(part), "rb") as f:
                        data = f.read(PART_SIZE_MAX + 1)
                except FileNotFoundError:
                    raise _PartMissing(part) from None
                if len(data) != expected:
                    raise _PartMissing(part)
                if md5 is not None:
                    md5.update(data)
                out.write(data)
    except BaseException:
        _unlink(Path(tmp))
        raise
    return Path(tmp), md5.hexdigest() if md5 is not None else ""


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _rmtree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _remove_older(directory: str, cutoff: float) -> None:
    with contextlib.suppress(FileNotFoundError), os.scandir(directory) as entries:
        for entry in entries:
            with contextlib.suppress(OSError):
                if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                    os.unlink(entry.path)
