"""File upload and download over the real protocol: throughput, server memory and CPU.

    .venv/bin/python bench/files.py [--sizes 1,100] [--storage local|s3] [--repeat 1]
        [--in-flight 4] [--chunk-kib 512] [--peer user|self] [--sample-ms 5]
        [--server-env TEAMGRAM_X=VALUE ...]

For each size (in MB, 10^6 bytes) a fresh ``teamgramd serve`` starts as its own
process on free loopback ports (SQLite and, with ``--storage local``, the object
store in a temporary data directory). One client process signs up over the real
protocol (one TCP connection per user, intermediate framing: handshake,
``invokeWithLayer(initConnection(auth.sendCode))``, ``auth.signIn`` with the dev
login code, ``auth.signUp``), as bench/messaging.py does: a sender and, with
``--peer user`` (the default), a recipient whose phone the sender imports (for
its access hash). A 200 KiB file then makes the whole trip once, untimed (warm-up).

Then, ``--repeat`` times per size, with fresh random content:

  upload    the sender cuts the file into parts as Telethon does: files up to 10 MiB
            with ``upload.saveFilePart`` in 128 KiB parts (then ``InputFile`` with the
            content's MD5), bigger ones with ``upload.saveBigFilePart`` in 512 KiB
            parts (``InputFileBig``); ``--in-flight`` parts outstanding at a time
  send      ``messages.sendMedia`` (``inputMediaUploadedDocument``,
            application/octet-stream) to the recipient (``--peer self``: Saved
            Messages); the server assembles the parts and stores the file here.
            The Document comes from the answer (``updates`` with
            ``updateNewMessage``); with ``--peer user`` the bench then waits (at most
            15 s, untimed) for the push to the recipient's connection
  download  the recipient (``--peer self``: the sender) reads the file back with
            ``upload.getFile`` (``inputDocumentFileLocation`` with the Document's id,
            access_hash and file_reference) in aligned ``--chunk-kib`` chunks,
            ``--in-flight`` outstanding; the bytes' SHA-256 must match the original

Columns (one row per size; with ``--repeat`` > 1 rates and times are medians,
peaks are maxima, CPU is summed over the repeats and divided by all their bytes):

  size MB             file size, 10^6 bytes
  up MB/s             size / (all parts answered + the sendMedia round trip)
  parts MB/s          size / the time until every part was answered (parts only)
  sendMedia ms        the sendMedia round trip (assemble, store, message, answer)
  down MB/s           size / the time until every getFile chunk was answered
  idle RSS MiB        server resident memory just before the size's first upload
  up/down peak MiB    the server's highest resident memory during the upload
                      (parts + sendMedia) and the download: VmRSS sampled every
                      ``--sample-ms`` from /proc, and VmHWM after resetting it at the
                      start of the phase (/proc/PID/clear_refs), whichever is higher
  up/down +MiB        that peak minus the idle RSS
  srv CPU s/100MB     server process CPU (user+sys, every thread) per 100 MB moved,
  up / down           for the upload (parts + sendMedia) and the download; /proc's
                      CPU clock ticks are 10 ms, so the 1 MB rows are coarse
  sha256              "ok" when every download matched the original

Below the table: each repeat's numbers, the client's CPU per 100 MB (it shares
the machine's cores with the server: on 2 cores, rates are machine-bound), RSS
left after the transfers, SeaweedFS's CPU (``--storage s3``), push latency, server
warnings, and any error (the request, the answer, the phase).

``--storage s3`` starts a throwaway SeaweedFS (``weed server`` with its S3
gateway, on loopback, started and killed by ``tests/seaweedfs.py``'s
``WeedProcess``; ``weed`` comes from the test extra) for the whole run, and points
each server at it with a bucket prefix of its own. The only other server setting
changed is the dev login code, plus whatever ``--server-env`` adds (to compare
settings, e.g. ``TEAMGRAM_SESSION_GZIP_THRESHOLD``). The default run (1 and
100 MB, local storage) takes about 25 s on 2 cores; ``--storage s3`` about 30 s.
The server, SeaweedFS, the client process and every temporary directory are
removed at the end, also on errors, SIGTERM and Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import random
import secrets
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _accounts import DEV_CODE, sign_up
from _server import (
    ROOT,
    ServerProcess,
    WorkerError,
    _own_cpu,
    install_sigterm,
    machine_note,
    run_clients,
    sample_process,
    table,
    worker_main,
)

from teamgram.testing.mtclient import MTClient, RpcErrorReply, load_public_key
from teamgram.tl import functions, types

T = TypeVar("T")

MB = 1_000_000
MiB = 1 << 20
KiB = 1 << 10
SMALL_PART = 128 * KiB  # Telethon's part size for files up to 100 MB
BIG_PART = 512 * KiB  # the largest part Telegram allows
BIG_FILE = 10 * MiB  # Telethon: bigger files go with saveBigFilePart
WARMUP_SIZE = 200 * KiB
CLIENT_TIMEOUT = 60.0  # one request (sendMedia of 100 MB assembles and stores it)
PUSH_TIMEOUT = 15.0  # sendMedia answered -> the recipient has the updateNewMessage
BENCH_ENV = {"TEAMGRAM_DEV_LOGIN_CODE": DEV_CODE}
MIME = "application/octet-stream"


# --------------------------------------------------------------------------- measuring


def _rss_kib(pid: int) -> int:
    """VmRSS from /proc/PID/statm (resident pages): cheaper than parsing status."""
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * _PAGE_KIB


_PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


def _hwm_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


class RssWatch:
    """The server's peak RSS per phase, from a sampling thread and a VmHWM reset.

    A thread reads VmRSS every ``interval`` seconds and keeps the highest value
    since :meth:`begin`; :meth:`begin` also resets the kernel's high-water mark
    (writing 5 to /proc/PID/clear_refs), so :meth:`end` can read the exact peak
    from VmHWM too, spikes between samples included.
    """

    def __init__(self, pid: int, interval: float) -> None:
        self.pid = pid
        self.interval = interval
        self.hwm_reset = True  # until a reset fails
        self.samples = 0
        self._peak = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-watch", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                rss = _rss_kib(self.pid)
            except OSError:
                return  # the server is gone: the bench notices elsewhere
            with self._lock:
                self.samples += 1
                self._peak = max(self._peak, rss)

    def begin(self) -> int:
        """Start a phase; returns the RSS now."""
        rss = _rss_kib(self.pid)
        if self.hwm_reset:
            try:
                with open(f"/proc/{self.pid}/clear_refs", "w") as f:
                    f.write("5")
            except OSError:
                self.hwm_reset = False
        with self._lock:
            self._peak = rss
            self.samples = 0
        return rss

    def end(self) -> tuple[int, int]:
        """The phase's peak RSS (KiB) and how many samples it got."""
        rss = _rss_kib(self.pid)
        with self._lock:
            peak, samples = max(self._peak, rss), self.samples
        if self.hwm_reset:
            peak = max(peak, _hwm_kib(self.pid))
        return peak, samples

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)


@dataclass
class Phase:
    """One timed step: wall time, CPU of the server, this client and weed, peak RSS."""

    wall_s: float = 0.0
    srv_cpu_s: float = 0.0
    cli_cpu_s: float = 0.0
    weed_cpu_s: float = 0.0
    rss_before_kib: int = 0
    peak_kib: int = 0
    samples: int = 0


class Meter:
    def __init__(self, server_pid: int, weed_pid: int, interval: float) -> None:
        self.server_pid = server_pid
        self.weed_pid = weed_pid
        self.watch = RssWatch(server_pid, interval)

    def _weed_cpu(self) -> float:
        return sample_process(self.weed_pid).cpu_s if self.weed_pid else 0.0

    async def measure(self, step: Awaitable[T]) -> tuple[T, Phase]:
        phase = Phase(rss_before_kib=self.watch.begin())
        s0, w0, c0 = sample_process(self.server_pid), self._weed_cpu(), _own_cpu()
        t0 = time.perf_counter()
        try:
            result = await step
        finally:
            phase.wall_s = time.perf_counter() - t0
            s1 = sample_process(self.server_pid)
            phase.srv_cpu_s = s1.cpu_s - s0.cpu_s
            phase.cli_cpu_s = _own_cpu() - c0
            phase.weed_cpu_s = self._weed_cpu() - w0
            phase.peak_kib, phase.samples = self.watch.end()
        return result, phase


# --------------------------------------------------------------------------- client side


class StepError(RuntimeError):
    """A request failed: which step, which request, what the server answered."""


@dataclass
class Peer:
    client: MTClient
    user_id: int
    phone: str


async def call(c: MTClient, what: str, request: Any) -> Any:
    """``c.invoke(request)``, failures turned into a StepError naming the request."""
    try:
        return await c.invoke(request, timeout=CLIENT_TIMEOUT)
    except (RpcErrorReply, TimeoutError, ConnectionError) as exc:
        raise StepError(f"{what}: {type(exc).__name__}: {exc}") from exc


async def pipelined(count: int, in_flight: int, one: Callable[[int], Awaitable[None]]) -> None:
    """``one(0) .. one(count - 1)``, at most ``in_flight`` running at a time (in order)."""
    items = iter(range(count))

    async def pump() -> None:
        for i in items:  # shared iterator: each item is taken once
            await one(i)

    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(min(in_flight, count)):
                group.create_task(pump())
    except BaseExceptionGroup as failed:  # the first failure itself, not the group
        raise failed.exceptions[0] from None


@dataclass
class Sample:
    """One file's round trip."""

    size: int
    part_size: int
    parts: int
    big: bool
    upload: Phase = field(default_factory=Phase)
    send: Phase = field(default_factory=Phase)
    download: Phase = field(default_factory=Phase)
    push_ms: float = float("nan")  # sendMedia answered -> pushed to the recipient
    sha_ok: bool = False


class FileTrip:
    """Upload, sendMedia, download for one client process."""

    def __init__(
        self,
        sender: Peer,
        recipient: Peer | None,
        peer: Any,
        in_flight: int,
        chunk: int,
    ) -> None:
        self.sender = sender
        self.recipient = recipient
        self.peer = peer
        self.in_flight = in_flight
        self.chunk = chunk
        self.pushed: dict[int, float] = {}  # document id -> when it reached the recipient
        self.other_updates = 0
        self._pushed = asyncio.Event()
        if recipient is not None:
            recipient.client.on_update = self._on_update

    def _on_update(self, obj: Any) -> None:
        now = time.perf_counter()
        items = list(obj.updates) if isinstance(obj, types.Updates) else []
        for u in items:
            if isinstance(u, types.UpdateNewMessage) and isinstance(u.message, types.Message):
                media = u.message.media
                if isinstance(media, types.MessageMediaDocument) and isinstance(
                    media.document, types.Document
                ):
                    self.pushed[int(media.document.id)] = now
                    self._pushed.set()
                    continue
            self.other_updates += 1
        if not items:
            self.other_updates += 1

    async def upload(self, data: bytes, part_size: int, big: bool) -> Any:
        """Every part saved; returns the InputFile / InputFileBig naming them."""
        c = self.sender.client
        file_id = random.getrandbits(63)
        count = -(-len(data) // part_size)

        async def part(i: int) -> None:
            piece = data[i * part_size : (i + 1) * part_size]
            if big:
                request: Any = functions.upload.SaveBigFilePart(
                    file_id=file_id, file_part=i, file_total_parts=count, bytes=piece
                )
            else:
                request = functions.upload.SaveFilePart(file_id=file_id, file_part=i, bytes=piece)
            name = "saveBigFilePart" if big else "saveFilePart"
            ok = await call(c, f"upload.{name} part {i}/{count} ({len(piece)} bytes)", request)
            if ok is not True:
                raise StepError(f"upload.{name} part {i}: answered {ok!r} (expected boolTrue)")

        await pipelined(count, self.in_flight, part)
        name = f"bench-{file_id}.bin"
        if big:
            return types.InputFileBig(id=file_id, parts=count, name=name)
        md5 = hashlib.md5(data, usedforsecurity=False).hexdigest()
        return types.InputFile(id=file_id, parts=count, name=name, md5_checksum=md5)

    async def send(self, input_file: Any) -> types.Document:
        """messages.sendMedia; the Document from the answer's updateNewMessage."""
        media = types.InputMediaUploadedDocument(
            file=input_file,
            mime_type=MIME,
            attributes=[types.DocumentAttributeFilename(file_name=input_file.name)],
        )
        request = functions.messages.SendMedia(
            peer=self.peer, media=media, message="", random_id=random.getrandbits(63)
        )
        answer = await call(self.sender.client, f"messages.sendMedia({input_file!r})", request)
        if isinstance(answer, types.Updates):
            for u in answer.updates:
                if isinstance(u, types.UpdateNewMessage) and isinstance(u.message, types.Message):
                    m = u.message.media
                    if isinstance(m, types.MessageMediaDocument) and isinstance(
                        m.document, types.Document
                    ):
                        return m.document
        raise StepError(f"messages.sendMedia: no Document in the answer: {answer!r}"[:600])

    async def wait_push(self, doc_id: int, sent_at: float) -> float:
        """Milliseconds from the sendMedia answer to the push (NaN: none in time)."""
        deadline = time.monotonic() + PUSH_TIMEOUT
        while doc_id not in self.pushed and time.monotonic() < deadline:
            self._pushed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._pushed.wait(), max(0.0, deadline - time.monotonic()))
        at = self.pushed.get(doc_id)
        return (at - sent_at) * 1000 if at is not None else float("nan")

    async def download(self, doc: types.Document) -> bytearray:
        """The document's bytes, ``chunk`` at a time at aligned offsets."""
        who = self.recipient or self.sender
        size = int(doc.size)
        loc = types.InputDocumentFileLocation(
            id=doc.id, access_hash=doc.access_hash, file_reference=doc.file_reference, thumb_size=""
        )
        out = bytearray(size)
        chunk = self.chunk

        async def one(i: int) -> None:
            offset = i * chunk
            request = functions.upload.GetFile(location=loc, offset=offset, limit=chunk)
            what = f"upload.getFile(document {doc.id}, offset={offset}, limit={chunk})"
            got = await call(who.client, what, request)
            if not isinstance(got, types.upload.File):
                raise StepError(f"{what}: answered {type(got).__name__} (expected upload.file)")
            expected = min(chunk, size - offset)
            if len(got.bytes) != expected:
                raise StepError(f"{what}: {len(got.bytes)} bytes, expected {expected}")
            out[offset : offset + expected] = got.bytes

        await pipelined(-(-size // chunk), self.in_flight, one)
        return out

    async def trip(self, size: int, meter: Meter | None) -> Sample:
        """One file of ``size`` random bytes up, sent, and down again (measured with meter)."""
        big = size > BIG_FILE
        part_size = BIG_PART if big else SMALL_PART
        data = os.urandom(size)
        digest = hashlib.sha256(data).digest()
        s = Sample(size, part_size, -(-size // part_size), big)

        async def measured(step: Awaitable[T]) -> tuple[T, Phase]:
            if meter is None:
                return await step, Phase()
            return await meter.measure(step)

        input_file, s.upload = await measured(self.upload(data, part_size, big))
        doc, s.send = await measured(self.send(input_file))
        answered = time.perf_counter()
        if int(doc.size) != size:
            raise StepError(f"messages.sendMedia: Document.size {doc.size}, uploaded {size}")
        if self.recipient is not None:
            s.push_ms = await self.wait_push(int(doc.id), answered)
        got, s.download = await measured(self.download(doc))
        s.sha_ok = hashlib.sha256(got).digest() == digest
        return s


def files_worker(conn: Connection, spec: dict[str, Any]) -> None:
    """Client process: sign up, warm up, then ``repeat`` round trips of ``size`` bytes."""
    keys = load_public_key(spec["key_pem"])
    opened: list[MTClient] = []
    meter: list[Meter] = []

    async def user(phone: str) -> Peer:
        c = await MTClient.connect(spec["host"], spec["port"], keys, timeout=CLIENT_TIMEOUT)
        opened.append(c)
        return Peer(c, await sign_up(c, phone), phone)

    async def prepare() -> tuple[FileTrip, float]:
        started = time.monotonic()
        sender = await user(spec["phone"] + "0")
        recipient: Peer | None = None
        peer: Any = types.InputPeerSelf()
        if spec["peer"] == "user":
            recipient = await user(spec["phone"] + "1")
            contact = types.InputPhoneContact(
                client_id=0, phone=recipient.phone, first_name="R", last_name=""
            )
            found = await call(
                sender.client,
                "contacts.importContacts",
                functions.contacts.ImportContacts(contacts=[contact]),
            )
            users = [u for u in found.users if isinstance(u, types.User)]
            if not users or users[0].id != recipient.user_id or users[0].access_hash is None:
                raise StepError(f"importContacts gave no access hash: {found!r}"[:300])
            peer = types.InputPeerUser(user_id=recipient.user_id, access_hash=users[0].access_hash)
        trip = FileTrip(sender, recipient, peer, spec["in_flight"], spec["chunk"])
        warm = await trip.trip(WARMUP_SIZE, None)  # the whole path once, untimed
        if not warm.sha_ok:
            raise StepError("warm-up: the downloaded file differs from the uploaded one")
        await asyncio.sleep(0.5)  # let the server settle before the idle RSS is taken
        return trip, time.monotonic() - started

    async def run(state: tuple[FileTrip, float]) -> dict[str, Any]:
        trip, prepare_s = state
        meter.append(Meter(spec["server_pid"], spec["weed_pid"], spec["sample_s"]))
        idle_kib = _rss_kib(spec["server_pid"])
        samples: list[dict[str, Any]] = []
        error = ""
        try:
            for _ in range(spec["repeat"]):
                samples.append(asdict(await trip.trip(spec["size"], meter[0])))
        except StepError as exc:
            error = str(exc)
        await asyncio.sleep(0.5)
        return {
            "samples": samples,
            "error": error,
            "idle_kib": idle_kib,
            "after_kib": _rss_kib(spec["server_pid"]),
            "hwm_reset": meter[0].watch.hwm_reset,
            "prepare_s": prepare_s,
            "other_updates": trip.other_updates,
        }

    async def cleanup(state: Any) -> None:
        for m in meter:
            m.watch.close()
        await asyncio.gather(*(c.close() for c in opened), return_exceptions=True)

    worker_main(conn, prepare, run, cleanup)


# --------------------------------------------------------------------------- SeaweedFS


class Seaweed:
    """``weed server`` with its S3 gateway, through tests/seaweedfs.py's WeedProcess."""

    def __init__(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="teamgram-bench-weed-"))
        self.process: Any = None
        self.endpoint = self.access_key = self.secret_key = self.region = ""
        self.pid = 0

    def __enter__(self) -> Seaweed:
        try:
            if str(ROOT) not in sys.path:
                sys.path.insert(0, str(ROOT))
            from tests.seaweedfs import WeedProcess  # imports pytest (the test extra)
        except ImportError as exc:
            shutil.rmtree(self.workdir, ignore_errors=True)
            raise SystemExit(
                f"--storage s3 needs tests/seaweedfs.py and the test extra (pytest, weed): {exc}"
            ) from exc
        try:
            self.process = WeedProcess(self.workdir)
            server = self.process.start()  # bounded by its START_TIMEOUT; stops on failure
        except BaseException:
            self.__exit__(None, None, None)
            raise
        self.endpoint, self.region = server.endpoint, server.region
        self.access_key, self.secret_key = server.access_key, server.secret_key
        self.pid = server.pid
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            self.process.stop()  # SIGKILL to its process group
            self.process = None
        shutil.rmtree(self.workdir, ignore_errors=True)

    def env(self) -> dict[str, str]:
        """Server settings for this SeaweedFS, with buckets of the server's own."""
        return {
            "TEAMGRAM_FILES_STORAGE": "s3",
            "TEAMGRAM_FILES_S3_ENDPOINT": self.endpoint,
            "TEAMGRAM_FILES_S3_REGION": self.region,
            "TEAMGRAM_FILES_S3_ACCESS_KEY": self.access_key,
            "TEAMGRAM_FILES_S3_SECRET_KEY": self.secret_key,
            "TEAMGRAM_FILES_S3_BUCKET_PREFIX": f"bench{secrets.token_hex(4)}-",
        }


# --------------------------------------------------------------------------- bench side


def _mb_s(size: int, seconds: float) -> float:
    return size / MB / seconds if seconds > 0 else float("nan")


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _per_100mb(seconds: float, size: int) -> float:
    return seconds / size * 100 * MB if size else float("nan")


@dataclass
class SizeResult:
    row: list[object]
    notes: list[str]


def summarize(size: int, r: dict[str, Any], weed: bool) -> SizeResult:
    samples: list[dict[str, Any]] = r["samples"]
    notes: list[str] = []
    idle = r["idle_kib"] / 1024
    up_s = [s["upload"]["wall_s"] + s["send"]["wall_s"] for s in samples]
    parts_s = [s["upload"]["wall_s"] for s in samples]
    send_s = [s["send"]["wall_s"] for s in samples]
    down_s = [s["download"]["wall_s"] for s in samples]
    up_peak = max(
        (max(s["upload"]["peak_kib"], s["send"]["peak_kib"]) / 1024 for s in samples),
        default=float("nan"),
    )
    down_peak = max((s["download"]["peak_kib"] / 1024 for s in samples), default=float("nan"))
    moved = size * len(samples)

    def cpu(key: str, *phases: str) -> float:
        return _per_100mb(sum(s[p][key] for s in samples for p in phases), moved)

    ok = sum(bool(s["sha_ok"]) for s in samples)
    sha = "ok" if samples and ok == len(samples) else f"BAD {len(samples) - ok}/{len(samples)}"
    if r["error"]:
        sha = f"{sha} (failed)" if samples else "failed"
    row: list[object] = [
        size / MB,
        _median([_mb_s(size, t) for t in up_s]),
        _median([_mb_s(size, t) for t in parts_s]),
        _median([t * 1000 for t in send_s]),
        _median([_mb_s(size, t) for t in down_s]),
        idle,
        up_peak,
        up_peak - idle,
        down_peak,
        down_peak - idle,
        cpu("srv_cpu_s", "upload", "send"),
        cpu("srv_cpu_s", "download"),
        sha,
    ]
    if samples:
        s0 = samples[0]
        how = "saveBigFilePart/InputFileBig" if s0["big"] else "saveFilePart/InputFile+md5"
        notes.append(
            f"{s0['parts']} parts of {s0['part_size'] // KiB} KiB ({how}); sign-up and warm-up "
            f"(untimed) took {r['prepare_s']:.1f} s"
        )
    for i, s in enumerate(samples):
        up, send, down = s["upload"], s["send"], s["download"]
        notes.append(
            f"run {i + 1}: parts {up['wall_s']:.2f} s ({_mb_s(size, up['wall_s']):.1f} MB/s), "
            f"sendMedia {send['wall_s'] * 1000:.0f} ms, download {down['wall_s']:.2f} s "
            f"({_mb_s(size, down['wall_s']):.1f} MB/s); server CPU parts {up['srv_cpu_s']:.2f} s,"
            f" sendMedia {send['srv_cpu_s']:.2f} s, download {down['srv_cpu_s']:.2f} s; peak RSS "
            f"parts {up['peak_kib'] / 1024:.0f}, sendMedia {send['peak_kib'] / 1024:.0f}, "
            f"download {down['peak_kib'] / 1024:.0f} MiB ({up['samples']}/{send['samples']}/"
            f"{down['samples']} samples)"
            + (
                f"; pushed to the recipient {s['push_ms']:.0f} ms after the answer"
                if s["push_ms"] == s["push_ms"]
                else ""
            )
        )
    if samples:
        notes.append(
            f"client CPU s/100MB: up {cpu('cli_cpu_s', 'upload', 'send'):.2f}, "
            f"down {cpu('cli_cpu_s', 'download'):.2f}"
            + (
                f"; SeaweedFS CPU s/100MB: up {cpu('weed_cpu_s', 'upload', 'send'):.2f}, "
                f"down {cpu('weed_cpu_s', 'download'):.2f}"
                if weed
                else ""
            )
            + f"; server RSS after the transfers {r['after_kib'] / 1024:.0f} MiB"
        )
    if not r["hwm_reset"]:
        notes.append("could not reset VmHWM (/proc/PID/clear_refs): peaks are sampled only")
    if r["other_updates"]:
        notes.append(f"other updates pushed to the recipient: {r['other_updates']}")
    if r["error"]:
        notes.append(f"FAILED: {r['error']}")
    return SizeResult(row, notes)


def run_size(size: int, args: argparse.Namespace, phone: str, weed: Seaweed | None) -> SizeResult:
    """A fresh server, one client process, ``args.repeat`` round trips of ``size`` bytes."""
    env = dict(BENCH_ENV)
    if weed is not None:
        env.update(weed.env())
    with ServerProcess(env=env) as srv:
        spec = {
            "host": srv.host,
            "port": srv.tcp_port,
            "key_pem": srv.key_pem,
            "server_pid": srv.pid,
            "weed_pid": weed.pid if weed is not None else 0,
            "size": size,
            "repeat": args.repeat,
            "in_flight": args.in_flight,
            "chunk": args.chunk_kib * KiB,
            "peer": args.peer,
            "phone": phone,
            "sample_s": args.sample_ms / 1000,
        }
        print(f"{size / MB:g} MB: server pid {srv.pid}; {args.repeat} round trip(s)...", flush=True)
        try:
            run = run_clients(
                files_worker,
                [spec],
                srv,
                prepare_timeout=90.0,
                # at least ~2 MB/s each way, plus a request timeout of slack
                run_timeout=CLIENT_TIMEOUT + 30 + args.repeat * (30 + size / MB),
            )
        except WorkerError as exc:
            notes = [f"FAILED: {exc}"[:3000], *[f"  server: {x}" for x in srv.log_lines(" ERROR ")]]
            row: list[object] = [size / MB, *["-"] * 11, "failed"]
            return SizeResult(row, notes)
        problems = [line for line in srv.log_tail if " WARNING " in line or " ERROR " in line]
    res = summarize(size, run.results[0], weed is not None)
    res.notes.append(
        f"other CPU (programs besides this server and client"
        f"{', SeaweedFS included' if weed else ''}): {run.other_cpu_share:.2f} cores"
    )
    if problems:
        res.notes.append(f"server warnings/errors logged: {len(problems)}")
        res.notes += [f"  {line[:300]}" for line in problems[:5]]
    return res


def parse_sizes(text: str) -> list[int]:
    sizes = [round(float(x) * MB) for x in text.split(",") if x.strip()]
    for n in sizes:
        if not 0 < n <= 2000 * MB:
            raise argparse.ArgumentTypeError(f"a size is in MB, above 0 and at most 2000: {n}")
    return sizes


def positive_int(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {n}")
    return n


def chunk_kib(text: str) -> int:
    n = int(text)
    if n < 4 or n % 4 or 1024 % n:
        raise argparse.ArgumentTypeError(f"a getFile limit divides 1024 KiB in 4 KiB steps: {n}")
    return n


def env_setting(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.startswith("TEAMGRAM_"):
        raise argparse.ArgumentTypeError(f"expected TEAMGRAM_<SECTION>_<KEY>=VALUE: {text!r}")
    return key, value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--sizes", type=parse_sizes, default=[1 * MB, 100 * MB], help="file sizes in MB"
    )
    parser.add_argument("--storage", choices=["local", "s3"], default="local")
    parser.add_argument("--repeat", type=positive_int, default=1, help="round trips per size")
    parser.add_argument(
        "--in-flight", type=positive_int, default=4, help="requests outstanding (parts, chunks)"
    )
    parser.add_argument(
        "--chunk-kib", type=chunk_kib, default=512, help="upload.getFile limit (KiB)"
    )
    parser.add_argument(
        "--peer",
        choices=["user", "self"],
        default="user",
        help="send to a second user, who downloads (user), or to Saved Messages (self)",
    )
    parser.add_argument("--sample-ms", type=float, default=5.0, help="server RSS sampling interval")
    parser.add_argument(
        "--server-env",
        type=env_setting,
        action="append",
        default=[],
        metavar="TEAMGRAM_X=VALUE",
        help="an extra server setting (repeatable), e.g. TEAMGRAM_SESSION_GZIP_THRESHOLD=1000000",
    )
    args = parser.parse_args(argv)
    BENCH_ENV.update(dict(args.server_env))
    install_sigterm()

    prefix = f"43{random.randrange(10**6):06d}"
    rows: list[list[object]] = []
    notes: list[str] = []
    print(machine_note(1))
    print(f"storage {args.storage}; server settings changed: {BENCH_ENV}", flush=True)
    with contextlib.ExitStack() as stack:
        weed = stack.enter_context(Seaweed()) if args.storage == "s3" else None
        if weed is not None:
            print(f"SeaweedFS pid {weed.pid} at {weed.endpoint}", flush=True)
        for i, size in enumerate(args.sizes):
            res = run_size(size, args, f"{prefix}{i:02d}", weed)
            rows.append(res.row)
            notes += [f"{size / MB:g} MB: {n}" for n in res.notes]

    print()
    print(
        table(
            [
                "size MB",
                "up MB/s",
                "parts MB/s",
                "sendMedia ms",
                "down MB/s",
                "idle RSS MiB",
                "up peak MiB",
                "up +MiB",
                "down peak MiB",
                "down +MiB",
                "srv CPU s/100MB up",
                "srv CPU s/100MB down",
                "sha256",
            ],
            rows,
        )
    )
    print()
    target = "a second user, who downloads" if args.peer == "user" else "Saved Messages"
    print(
        f"storage {args.storage}; requests in flight: {args.in_flight}; getFile chunks of "
        f"{args.chunk_kib} KiB; sent to {target}; {args.repeat} round trip(s) per size, "
        "a fresh server per size"
    )
    for n in notes:
        print(n)
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
    sys.exit(130)
