"""Shared plumbing for the network benches: a server process, client processes, tables.

The server runs as its own process (``python -m teamgram.cli serve``) on free
loopback ports, so its CPU time and memory are measured apart from the clients'
(read from ``/proc/PID/stat`` and ``/proc/PID/status``), as under real load.
Client load runs in one or more worker processes driven over pipes::

    with ServerProcess(env={"TEAMGRAM_...": "..."}) as srv:
        run = run_clients(worker, [spec] * procs, srv)   # one process per spec
        run.results, run.server.cpu_s, run.server.rss_kib, run.client_cpu_s

A worker is ``worker(conn, spec)`` (module level, picklable): it prepares (opens
connections...), sends ``("ready", None)``, waits for ``"go"``, runs, sends
``("done", result)`` and exits; :func:`worker_main` does that dance around an
async ``prepare``/``run`` pair. Every wait has a timeout and the server and the
workers are always stopped, even on errors or Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import multiprocessing as mp
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from types import TracebackType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PR_SET_PDEATHSIG = 1
# Extra interpreter flags for the server process (the server runs as shipped).
SERVER_PYTHON_FLAGS: tuple[str, ...] = ()
# Bytecode is cached here, not in the tree, even if PYTHONDONTWRITEBYTECODE is set:
# compiling the generated TL classes at every start costs seconds and ~60 MiB of RSS
# a deployed server (with .pyc files) does not have.
PYCACHE = Path(tempfile.gettempdir()) / "teamgram-bench-pycache"


# --------------------------------------------------------------------------- stats


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


@dataclass(frozen=True)
class ProcSample:
    """One look at a process: CPU seconds so far, resident and peak memory (KiB)."""

    at: float
    cpu_s: float
    rss_kib: int
    hwm_kib: int

    def __sub__(self, other: ProcSample) -> ProcUsage:
        return ProcUsage(
            wall_s=self.at - other.at,
            cpu_s=self.cpu_s - other.cpu_s,
            rss_kib=self.rss_kib,
            hwm_kib=self.hwm_kib,
        )


@dataclass(frozen=True)
class ProcUsage:
    """What a process used between two samples (memory as of the later one)."""

    wall_s: float
    cpu_s: float
    rss_kib: int
    hwm_kib: int

    @property
    def cpu_share(self) -> float:
        """CPU seconds per wall second (1.0 = one core busy all the time)."""
        return self.cpu_s / self.wall_s if self.wall_s > 0 else float("nan")


def sample_process(pid: int) -> ProcSample:
    """utime+stime from /proc/PID/stat, VmRSS and VmHWM from /proc/PID/status."""
    at = time.perf_counter()
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
    cpu = (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime, stime (fields 14, 15)
    rss = hwm = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    return ProcSample(at, cpu, rss, hwm)


def machine_busy_s() -> float:
    """CPU seconds every core of the machine has spent busy so far (/proc/stat)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = v
    return (user + nice + system + irq + softirq + steal) / _CLK_TCK


def free_ports(n: int) -> list[int]:
    """``n`` distinct loopback ports that were free a moment ago."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


# --------------------------------------------------------------------------- server


def use_bytecode_cache() -> None:
    """Make this process's children (server, clients) read and write cached bytecode."""
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = str(PYCACHE)


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM if the bench dies (even by SIGKILL)."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class ServerError(RuntimeError):
    """The server did not start, or died."""


class ServerProcess:
    """``teamgramd serve`` in a temporary data directory on free loopback ports.

    ``env`` adds ``TEAMGRAM_*`` settings (any already in the environment are
    dropped, so a bench measures the defaults plus what it says it changed).
    Starting also points this process's environment at :data:`PYCACHE`, so the
    client processes spawned later find compiled bytecode too.
    """

    def __init__(
        self,
        *,
        env: Mapping[str, str] | None = None,
        log_level: str = "INFO",
        python_flags: Sequence[str] = SERVER_PYTHON_FLAGS,
        start_timeout: float = START_TIMEOUT,
    ) -> None:
        self.env_overrides = dict(env or {})
        self.python_flags = list(python_flags)
        self.log_level = log_level
        self.start_timeout = start_timeout
        self.data_dir: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.host = "127.0.0.1"
        self.tcp_port = self.ws_port = self.http_port = 0
        self.key_pem = b""
        self.log_tail: deque[str] = deque(maxlen=200)
        self.log_counts: dict[str, int] = {}
        self._ready = threading.Event()
        self._reader: threading.Thread | None = None

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise ServerError("server not started")
        return self.proc.pid

    def __enter__(self) -> ServerProcess:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        self.data_dir = Path(tempfile.mkdtemp(prefix="teamgram-bench-"))
        self.tcp_port, self.ws_port, self.http_port = free_ports(3)
        cmd = [
            sys.executable,
            *self.python_flags,
            "-m",
            "teamgram.cli",
            "serve",
            "--data-dir",
            str(self.data_dir),
            "--host",
            self.host,
            "--tcp-port",
            str(self.tcp_port),
            "--ws-port",
            str(self.ws_port),
            "--http-port",
            str(self.http_port),
            "--log-level",
            self.log_level,
        ]
        use_bytecode_cache()
        env = {k: v for k, v in os.environ.items() if not k.startswith("TEAMGRAM_")}
        env.update(self.env_overrides)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        for flags, module in ((self.python_flags, "teamgram.cli"), ([], "teamgram.testing")):
            # compile (once) what the server and the clients import, outside the timing
            subprocess.run(
                [sys.executable, *flags, "-c", f"import {module}, teamgram.server"],
                cwd=ROOT,
                env=env,
                check=True,
                timeout=self.start_timeout,
            )
        self.proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=_die_with_parent,  # runs before exec; our threads hold no locks yet
        )
        self._reader = threading.Thread(target=self._read_log, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + self.start_timeout
        while not self._ready.wait(0.1):
            if self.proc.poll() is not None:
                raise ServerError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise ServerError(f"server not ready in {self.start_timeout:.0f} s:\n{self.log()}")
        pem = self.data_dir / "server_key.pem"
        self.key_pem = pem.read_bytes()

    def _read_log(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        level = re.compile(r" (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")
        for raw in self.proc.stderr:
            line = raw.decode(errors="replace").rstrip()
            self.log_tail.append(line)
            m = level.search(line)
            if m:
                self.log_counts[m.group(1)] = self.log_counts.get(m.group(1), 0) + 1
            if " ready: " in line:
                self._ready.set()

    def describe(self, client_procs: int) -> str:
        return (
            f"server pid {self.pid} (python{''.join(' ' + f for f in self.python_flags)}) on "
            f"{self.host}:{self.tcp_port}; {machine_note(client_procs)}"
        )

    def log(self, lines: int = 30) -> str:
        return "\n".join(list(self.log_tail)[-lines:])

    def log_lines(self, contains: str) -> list[str]:
        return [line for line in self.log_tail if contains in line]

    def sample(self) -> ProcSample:
        if self.proc is None or self.proc.poll() is not None:
            raise ServerError(f"server is not running:\n{self.log()}")
        return sample_process(self.pid)

    def check_alive(self) -> None:
        self.sample()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after STOP_TIMEOUT; remove the data directory."""
        proc, self.proc = self.proc, None
        if proc is not None:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
            if self._reader is not None:
                self._reader.join(2)
            if proc.stderr is not None:
                proc.stderr.close()
            self.proc = None
        if self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.data_dir = None


# --------------------------------------------------------------------------- clients


class WorkerError(RuntimeError):
    """A client process failed, or missed a deadline."""


def _recv(conn: Connection, timeout: float, who: str) -> tuple[str, Any]:
    if not conn.poll(max(0.0, timeout)):
        raise WorkerError(f"{who}: no answer in {timeout:.0f} s")
    try:
        kind, value = conn.recv()
    except EOFError:
        raise WorkerError(f"{who}: exited without an answer") from None
    if kind == "error":
        raise WorkerError(f"{who} failed:\n{value}")
    return kind, value


@dataclass
class ClientRun:
    """Results of one scenario: one dict per worker, and the window they ran in."""

    results: list[dict[str, Any]]
    server: ProcUsage
    machine_busy_s: float  # busy CPU seconds of the whole machine in the same window

    @property
    def client_cpu_s(self) -> float:
        return sum(float(r["client_cpu_s"]) for r in self.results)

    @property
    def other_cpu_share(self) -> float:
        """Cores kept busy by anything but this server and these clients (noise)."""
        other = self.machine_busy_s - self.server.cpu_s - self.client_cpu_s
        return max(0.0, other) / self.server.wall_s if self.server.wall_s > 0 else float("nan")


def run_clients(
    target: Callable[[Connection, dict[str, Any]], None],
    specs: Sequence[dict[str, Any]],
    server: ServerProcess,
    *,
    prepare_timeout: float = 60.0,
    run_timeout: float = 60.0,
) -> ClientRun:
    """Start one process per spec; when all are prepared, say go; collect results.

    The server's usage is sampled right before "go" and right after the last result.
    """
    ctx = mp.get_context("spawn")
    procs: list[tuple[Any, Connection]] = []
    finished = False
    try:
        for i, spec in enumerate(specs):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=target, args=(child, spec), name=f"bench-client-{i}")
            p.daemon = True
            p.start()
            child.close()
            procs.append((p, parent))
        deadline = time.monotonic() + prepare_timeout
        for i, (_, conn) in enumerate(procs):
            _recv(conn, deadline - time.monotonic(), f"client process {i} (prepare)")
        server.check_alive()
        busy = machine_busy_s()
        before = server.sample()
        for _, conn in procs:
            conn.send(("go", None))
        results = []
        deadline = time.monotonic() + run_timeout
        for i, (_, conn) in enumerate(procs):
            _, value = _recv(conn, deadline - time.monotonic(), f"client process {i} (run)")
            results.append(value)
        used = server.sample() - before
        busy = machine_busy_s() - busy
        for _, conn in procs:
            with contextlib.suppress(Exception):
                conn.send(("exit", None))
        finished = True
        return ClientRun(results, used, busy)
    finally:
        for p, conn in procs:
            p.join(10 if finished else 0)  # on errors and signals: stop them now
            if p.is_alive():
                p.terminate()
                p.join(5)
            if p.is_alive():
                p.kill()
                p.join(5)
            conn.close()


def worker_main(
    conn: Connection,
    prepare: Callable[[], Awaitable[Any]],
    run: Callable[[Any], Awaitable[dict[str, Any]]],
    cleanup: Callable[[Any], Awaitable[None]],
    *,
    exit_timeout: float = 30.0,
) -> None:
    """Body of a client process: prepare, "ready", wait for "go", run, "done", clean up."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        state = await prepare()
        try:
            conn.send(("ready", None))
            kind, _ = await loop.run_in_executor(None, _recv, conn, 120.0, "bench (go)")
            if kind != "go":
                return
            cpu0 = _own_cpu()
            result = await run(state)
            result["client_cpu_s"] = _own_cpu() - cpu0
            conn.send(("done", result))
            await loop.run_in_executor(None, _recv, conn, exit_timeout, "bench (exit)")
        finally:
            await asyncio.wait_for(cleanup(state), exit_timeout)

    try:
        with contextlib.suppress(ImportError):
            import uvloop

            uvloop.install()
        asyncio.run(main())
    except BaseException:
        with contextlib.suppress(Exception):
            conn.send(("error", traceback.format_exc()))
        raise
    finally:
        conn.close()


def _own_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def split(total: int, parts: int) -> list[int]:
    """``total`` spread over ``parts`` as evenly as possible (no zeros unless total < parts)."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts) if base or i < extra]


# --------------------------------------------------------------------------- output


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A Markdown table, right-aligned numbers."""
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for n, r in enumerate(cells):
        lines.append("| " + " | ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) + " |")
        if n == 0:
            lines.append("|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|")
    return "\n".join(lines)


def _cell(v: object) -> str:
    if isinstance(v, float):
        if v != v:
            return "-"
        if abs(v) >= 100:
            return f"{v:,.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        return f"{v:.2f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def machine_note(client_procs: int) -> str:
    cores = os.cpu_count() or 1
    note = (
        f"{cores} cores shared by the server (1 process) and {client_procs} client "
        "process(es) on this machine"
    )
    if client_procs + 1 >= cores:
        note += ": client CPU competes with the server's, so rates are machine-bound"
    return note


def install_sigterm() -> None:
    """The first SIGTERM or SIGINT ends the bench (SystemExit, KeyboardInterrupt), so
    ``finally`` blocks stop the server; later ones are ignored, so that cleanup
    (bounded by timeouts) is not cut short. ``timeout`` and a terminal's Ctrl-C
    signal the whole process group, and a repeated signal used to land inside
    ServerProcess.stop before it removed the server's data directory.
    """

    def handler(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
