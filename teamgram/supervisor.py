"""``teamgramd cluster``: run a topology of ``teamgramd run`` processes and keep them up.

A topology file (YAML) names process entries; each entry runs ``count`` copies of
``teamgramd run <services>`` with its own flags::

    config: [etc/cluster-common.yaml]   # --config files every process gets (optional)
    env: {KEY: value}                   # environment for every process (optional)
    grace: 10                           # seconds between SIGTERM and SIGKILL (optional)
    processes:
      - name: edge
        run: gnetway,session,bff        # services (a comma list or a YAML list)
        count: 2
        args: ["--tcp-port", "{10443+i}", "--instance-id", "edge-{i}"]
        config: [etc/edge.yaml]         # extra --config files (optional)
        env: {}                         # extra environment (optional)
      - name: sync
        run: sync

In every string of ``args``, ``config``, ``env`` values and ``command``, ``{i}`` is
the copy's index (0, 1...) and ``{N+i}`` is N plus it; ``{{`` and ``}}`` are
literal braces; anything else in braces is an error. Relative paths are relative
to the working directory the supervisor runs in (children inherit it), as on the
command line. ``command: [...]`` replaces the ``python -m teamgram.cli run
<services>`` prefix (wrappers, tests); ``--config`` files and ``args`` are still
appended to it.

Supervision: children start in file order; each child's stdout and stderr lines
go to the supervisor's stdout and stderr prefixed with ``[name.i] ``. A child that
exits while the supervisor is not stopping (whatever its exit code) is started
again after a backoff: 0.5 s, doubling up to 10 s, back to 0.5 s once a run has
lasted 30 s. SIGINT or SIGTERM: every child gets SIGTERM, those still running
after ``grace`` seconds get SIGKILL, and the supervisor exits 0 (a second
SIGINT, Ctrl-C pressed again, kills at once).

Each child runs in a process group of its own (a terminal's Ctrl-C reaches the
supervisor only, which then stops the children in order; stop signals reach a
child's own children too). On Linux each child also asks the kernel (prctl
``PR_SET_PDEATHSIG``) for SIGKILL when the supervisor dies, so a supervisor killed
with SIGKILL (or by the OOM killer) leaves no orphan holding ports: their state is
durable, and a restarted supervisor needs those ports at once. The death signal
follows the thread that forked the child: here the event loop's thread, which
lives as long as the supervisor. Grandchildren are not covered by it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import yaml

from teamgram.split import SERVICES

log = logging.getLogger("teamgram.supervisor")

DEFAULT_GRACE = 15.0  # the server's own stop takes up to 10 s
BACKOFF_INITIAL = 0.5
BACKOFF_MAX = 10.0
STABLE_AFTER = 30.0
# Longer lines are forwarded in pieces of this many bytes (a child printing a huge
# blob without a newline must not make the supervisor buffer without bound).
MAX_LINE = 65536
# After a child exits, how long its pipes may stay open (held by its own children).
DRAIN_TIMEOUT = 2.0
# A second SIGINT this long after the first kills the children at once.
REPEAT_INTERVAL = 0.5

_NAME = re.compile(r"[A-Za-z0-9_-]+\Z")
_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_EXPR = re.compile(r"\s*(?:(\d+)\s*\+\s*)?i\s*\Z")


class TopologyError(ValueError):
    """The topology file (or a template in it) has the wrong shape."""


def parse_services(value: str | Sequence[str]) -> tuple[str, ...]:
    """``"gnetway,session"`` (or a list) -> known service names, duplicates dropped."""
    items = value.split(",") if isinstance(value, str) else list(value)
    out: list[str] = []
    for raw in items:
        if not isinstance(raw, str):
            raise ValueError(f"service names are strings, not {raw!r}")
        name = raw.strip()
        if not name:
            raise ValueError(f"empty service name in {value!r}")
        if name not in SERVICES:
            raise ValueError(f"unknown service {name!r} (services: {', '.join(SERVICES)})")
        if name not in out:
            out.append(name)
    if not out:
        raise ValueError("no service named")
    return tuple(out)


def expand(template: str, index: int) -> str:
    """Fill ``{i}`` and ``{N+i}`` with the copy's index; ``{{``/``}}`` are braces."""

    def sub(m: re.Match[str]) -> str:
        token = m.group(0)
        if token == "{{":
            return "{"
        if token == "}}":
            return "}"
        expr = m.group(1)
        if expr is None:
            raise TopologyError(f"unmatched {token!r} in {template!r} (write {token * 2})")
        e = _EXPR.match(expr)
        if e is None:
            raise TopologyError(f"{{{expr}}} in {template!r}: only {{i}} and {{N+i}} are allowed")
        return str(int(e.group(1) or 0) + index)

    return _TOKEN.sub(sub, template)


@dataclass(frozen=True)
class ProcessSpec:
    """One ``processes`` entry: ``count`` copies of one command."""

    name: str
    run: tuple[str, ...]
    count: int = 1
    args: tuple[str, ...] = ()
    config: tuple[str, ...] = ()
    env: Mapping[str, str | None] = field(default_factory=dict)
    command: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Topology:
    """A whole cluster file, validated."""

    processes: tuple[ProcessSpec, ...]
    config: tuple[str, ...] = ()
    env: Mapping[str, str | None] = field(default_factory=dict)
    grace: float = DEFAULT_GRACE

    def argv(self, spec: ProcessSpec, index: int) -> list[str]:
        """The command line of copy ``index`` of ``spec``."""
        if spec.command is not None:
            argv = [expand(a, index) for a in spec.command]
        else:
            argv = [sys.executable, "-m", "teamgram.cli", "run", ",".join(spec.run)]
        for path in (*self.config, *spec.config):
            argv += ["--config", expand(path, index)]
        argv += [expand(a, index) for a in spec.args]
        return argv

    def environ(
        self, spec: ProcessSpec, index: int, base: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        """The environment of copy ``index``: ``base`` (default: ours), then the
        topology's, then the entry's; a null value removes a variable."""
        env = dict(os.environ if base is None else base)
        # Children's prints reach the supervisor line by line, not at exit.
        env.setdefault("PYTHONUNBUFFERED", "1")
        for layer in (self.env, spec.env):
            for key, value in layer.items():
                if value is None:
                    env.pop(key, None)
                else:
                    env[key] = expand(value, index)
        return env

    def config_files(self) -> list[str]:
        """Every ``--config`` path, expanded for every copy (to check they exist)."""
        out: list[str] = []
        for spec in self.processes:
            for index in range(spec.count):
                for path in (*self.config, *spec.config):
                    p = expand(path, index)
                    if p not in out:
                        out.append(p)
        return out

    def missing_files(self, cwd: Path | None = None) -> list[str]:
        base = Path.cwd() if cwd is None else cwd
        return [p for p in self.config_files() if not (base / p).is_file()]


# -- loading -------------------------------------------------------------------------


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise TopologyError(f"{where}: expected a list")
    out = []
    for k, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, str | int):
            hint = ' (quote templates: "{10443+i}")' if isinstance(item, dict) else ""
            raise TopologyError(f"{where}[{k}]: expected a string, got {item!r}{hint}")
        out.append(str(item))
    return tuple(out)


def _env(value: Any, where: str) -> dict[str, str | None]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TopologyError(f"{where}: expected a mapping")
    out: dict[str, str | None] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not key:
            raise TopologyError(f"{where}: variable names are strings, not {key!r}")
        if item is None:
            out[key] = None
        elif isinstance(item, bool):
            out[key] = "true" if item else "false"
        elif isinstance(item, str | int | float):
            out[key] = str(item)
        else:
            raise TopologyError(f"{where}.{key}: expected a string, got {item!r}")
    return out


def _check_templates(strings: Iterable[str], where: str) -> None:
    for s in strings:
        try:
            expand(s, 0)
        except TopologyError as exc:
            raise TopologyError(f"{where}: {exc}") from None


_PROCESS_KEYS = {"name", "run", "count", "args", "config", "env", "command"}
_TOP_KEYS = {"config", "env", "grace", "processes"}


def _process(data: Any, where: str) -> ProcessSpec:
    if not isinstance(data, Mapping):
        raise TopologyError(f"{where}: expected a mapping")
    unknown = set(data) - _PROCESS_KEYS
    if unknown:
        raise TopologyError(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
    name = data.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise TopologyError(f"{where}.name: expected letters, digits, '-' or '_', got {name!r}")
    where = f"{where} ({name})"
    command = None
    if data.get("command") is not None:
        command = _strings(data["command"], f"{where}.command")
        if not command:
            raise TopologyError(f"{where}.command: empty")
    run: tuple[str, ...] = ()
    if data.get("run") is not None:
        if not isinstance(data["run"], str | list):
            raise TopologyError(f"{where}.run: expected a comma list of services")
        try:
            run = parse_services(data["run"])
        except ValueError as exc:
            raise TopologyError(f"{where}.run: {exc}") from None
    elif command is None:
        raise TopologyError(f"{where}.run: missing (which services this process runs)")
    count = data.get("count", 1)
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise TopologyError(f"{where}.count: expected a positive integer, got {count!r}")
    spec = ProcessSpec(
        name=name,
        run=run,
        count=count,
        args=_strings(data.get("args"), f"{where}.args"),
        config=_strings(data.get("config"), f"{where}.config"),
        env=_env(data.get("env"), f"{where}.env"),
        command=command,
    )
    for part, strings in (
        ("args", spec.args),
        ("config", spec.config),
        ("env", [v for v in spec.env.values() if v is not None]),
        ("command", spec.command or ()),
    ):
        _check_templates(strings, f"{where}.{part}")
    return spec


def parse_topology(data: Any, source: str = "topology") -> Topology:
    """Validate a parsed topology document; errors name the offending entry."""
    try:
        return _parse_topology(data)
    except TopologyError as exc:
        raise TopologyError(f"{source}: {exc}") from None


def _parse_topology(data: Any) -> Topology:
    if not isinstance(data, Mapping):
        raise TopologyError("expected a mapping at top level")
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise TopologyError(f"unknown key(s) {', '.join(sorted(map(str, unknown)))}")
    raw = data.get("processes")
    if not isinstance(raw, list) or not raw:
        raise TopologyError("processes: expected a non-empty list")
    processes = tuple(_process(p, f"processes[{k}]") for k, p in enumerate(raw))
    names = [p.name for p in processes]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise TopologyError(f"processes: duplicate name(s) {', '.join(dupes)}")
    grace = data.get("grace", DEFAULT_GRACE)
    if isinstance(grace, bool) or not isinstance(grace, int | float) or grace < 0:
        raise TopologyError(f"grace: expected seconds (a number >= 0), got {grace!r}")
    config = _strings(data.get("config"), "config")
    env = _env(data.get("env"), "env")
    _check_templates(config, "config")
    _check_templates([v for v in env.values() if v is not None], "env")
    return Topology(processes=processes, config=config, env=env, grace=float(grace))


def load_topology(path: Path) -> Topology:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise TopologyError(f"{path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise TopologyError(f"{path}: not YAML: {exc}") from None
    return parse_topology(data, str(path))


# -- running -------------------------------------------------------------------------

PR_SET_PDEATHSIG = 1


def _death_signal_setup() -> Callable[[], None] | None:
    """A preexec_fn that makes the kernel SIGKILL the child when we die (Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    parent = os.getpid()
    kill = int(signal.SIGKILL)

    def setup() -> None:
        prctl(PR_SET_PDEATHSIG, kill, 0, 0, 0)
        # The supervisor died between fork and prctl: nobody would signal us.
        if os.getppid() != parent:
            os._exit(1)

    return setup


class Child:
    """Copy ``index`` of a process entry, restarted in place (``name.index``)."""

    def __init__(self, name: str, index: int, argv: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.index = index
        self.argv = argv
        self.env = env
        self.process: asyncio.subprocess.Process | None = None
        # Starts after the first one (whether or not the new process came up).
        self.restarts = 0
        # Processes spawned so far.
        self.starts = 0
        self.returncode: int | None = None  # of the last process that exited
        self.started_at = 0.0  # time.monotonic() of the current process's start
        self.start_times: deque[float] = deque(maxlen=32)
        self.changed = asyncio.Condition()
        self.task: asyncio.Task[None] | None = None
        self.pumps: list[asyncio.Task[None]] = []

    @property
    def label(self) -> str:
        return f"{self.name}.{self.index}"

    @property
    def pid(self) -> int | None:
        """The running process's pid; None between an exit and the next start."""
        p = self.process
        return p.pid if p is not None and p.returncode is None else None

    def __repr__(self) -> str:
        return f"<Child {self.label} pid={self.pid} restarts={self.restarts}>"


class Supervisor:
    """Starts a :class:`Topology`'s children, forwards their output, restarts them."""

    def __init__(
        self,
        topology: Topology,
        *,
        grace: float | None = None,
        stdout: BinaryIO | None = None,
        stderr: BinaryIO | None = None,
        backoff_initial: float = BACKOFF_INITIAL,
        backoff_max: float = BACKOFF_MAX,
        stable_after: float = STABLE_AFTER,
        base_env: Mapping[str, str] | None = None,
    ) -> None:
        self.topology = topology
        self.grace = topology.grace if grace is None else grace
        self._stdout = stdout
        self._stderr = stderr
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.stable_after = stable_after
        self.children = [
            Child(spec.name, i, topology.argv(spec, i), topology.environ(spec, i, base_env))
            for spec in topology.processes
            for i in range(spec.count)
        ]
        self._stopping = False
        self._stop_event = asyncio.Event()
        self._preexec = _death_signal_setup()

    def child(self, name: str, index: int = 0) -> Child:
        for c in self.children:
            if c.name == name and c.index == index:
                return c
        raise KeyError(f"{name}.{index}")

    def pids(self) -> dict[str, int | None]:
        return {c.label: c.pid for c in self.children}

    @property
    def stopping(self) -> bool:
        return self._stopping

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        """Spawn every child in file order; returns once each has a pid (or failed)."""
        for c in self.children:
            await self._spawn(c)
            c.task = asyncio.create_task(self._watch(c), name=f"supervise {c.label}")

    async def stop(self) -> None:
        """SIGTERM every child, SIGKILL those left after ``grace``; wait for all."""
        if self._stopping:
            tasks = [c.task for c in self.children if c.task is not None]
            if tasks:
                await asyncio.wait(tasks)
            return
        self._stopping = True
        self._stop_event.set()
        running = [c for c in self.children if c.pid is not None]
        if running:
            log.info("stopping %d processes (grace %.1f s)", len(running), self.grace)
        for c in running:
            self._signal(c, signal.SIGTERM)
        tasks = [c.task for c in self.children if c.task is not None]
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=self.grace)
        if pending:
            self.kill_all()
            await asyncio.wait(pending)
        log.info("every process stopped")

    def kill_all(self) -> None:
        """SIGKILL every running child now (after the grace time, or a second signal)."""
        for c in self.children:
            if c.pid is not None:
                log.warning("[%s] still running: SIGKILL (pid %d)", c.label, c.pid)
                self._signal(c, signal.SIGKILL)

    async def run(self) -> int:
        """Foreground mode: start, wait for SIGINT/SIGTERM, stop; exit status 0."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        first = 0.0

        def on_signal(sig: signal.Signals) -> None:
            nonlocal first
            if not stop.is_set():
                log.info("%s: stopping", sig.name)
                first = time.monotonic()
                stop.set()
            elif sig == signal.SIGINT and time.monotonic() - first >= REPEAT_INTERVAL:
                # A second Ctrl-C. (A repeated SIGTERM is not a person asking twice:
                # `timeout` and some managers signal both the process and its group.)
                log.warning("SIGINT again: killing every process now")
                self.kill_all()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal, sig)
        try:
            await self.start()
            await stop.wait()
            await self.stop()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
        return 0

    # -- for tests and tools --------------------------------------------------------

    async def wait_started(
        self, name: str, index: int = 0, *, starts: int = 1, timeout: float = 10.0
    ) -> Child:
        """Until the child has been spawned ``starts`` times and is running."""
        c = self.child(name, index)

        def ready() -> bool:
            return c.starts >= starts and c.pid is not None

        async with c.changed:
            await asyncio.wait_for(c.changed.wait_for(ready), timeout)
        return c

    async def wait_restarted(
        self, name: str, index: int = 0, *, restarts: int | None = None, timeout: float = 10.0
    ) -> Child:
        """Until the child has been restarted ``restarts`` times (default: once more
        than now) and the new process is running."""
        c = self.child(name, index)
        target = c.restarts + 1 if restarts is None else restarts

        def ready() -> bool:
            return c.restarts >= target and c.pid is not None

        async with c.changed:
            await asyncio.wait_for(c.changed.wait_for(ready), timeout)
        return c

    # -- internals ------------------------------------------------------------------

    def _signal(self, c: Child, sig: signal.Signals) -> None:
        p = c.process
        if p is None or p.returncode is not None:
            return
        try:
            os.killpg(p.pid, sig)  # the child's group: it and its own children
        except ProcessLookupError:
            pass
        except PermissionError:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(sig)

    async def _notify(self, c: Child) -> None:
        async with c.changed:
            c.changed.notify_all()

    async def _spawn(self, c: Child) -> None:
        c.process = None
        try:
            proc = await asyncio.create_subprocess_exec(
                *c.argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=c.env,
                process_group=0,
                preexec_fn=self._preexec,
            )
        except OSError as exc:
            log.error("[%s] cannot start %s: %s", c.label, c.argv[0], exc)
            await self._notify(c)
            return
        c.process = proc
        c.starts += 1
        c.started_at = time.monotonic()
        c.start_times.append(c.started_at)
        prefix = f"[{c.label}] ".encode()
        assert proc.stdout is not None and proc.stderr is not None
        c.pumps = [
            asyncio.create_task(self._pump(proc.stdout, self._stdout, sys.stdout, prefix)),
            asyncio.create_task(self._pump(proc.stderr, self._stderr, sys.stderr, prefix)),
        ]
        log.info("[%s] started: pid %d", c.label, proc.pid)
        if self._stopping:  # stop() ran while we were spawning
            self._signal(c, signal.SIGTERM)
        await self._notify(c)

    async def _watch(self, c: Child) -> None:
        delay = self.backoff_initial
        while True:
            uptime = 0.0
            if c.process is not None:
                code = await c.process.wait()
                uptime = time.monotonic() - c.started_at
                c.returncode = code
                if c.pumps:
                    _, late = await asyncio.wait(c.pumps, timeout=DRAIN_TIMEOUT)
                    for t in late:
                        t.cancel()
                await self._notify(c)
                if self._stopping:
                    log.info("[%s] exited with %s", c.label, _describe(code))
                    return
                if uptime >= self.stable_after:
                    delay = self.backoff_initial
                log.warning(
                    "[%s] exited with %s after %.1f s; restarting in %.1f s",
                    c.label,
                    _describe(code),
                    uptime,
                    delay,
                )
            if self._stopping:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_event.wait(), delay)
            if self._stopping:
                return
            delay = min(delay * 2, self.backoff_max)
            c.restarts += 1
            await self._spawn(c)

    @staticmethod
    async def _pump(
        reader: asyncio.StreamReader, sink: BinaryIO | None, fallback: Any, prefix: bytes
    ) -> None:
        """Copy a child's stream line by line, each line prefixed, one write per chunk."""
        pending = b""

        def emit(lines: list[bytes]) -> None:
            out = sink if sink is not None else fallback.buffer
            try:
                out.write(b"".join(prefix + line + b"\n" for line in lines))
                out.flush()
            except (OSError, ValueError):
                pass  # our own output is gone: keep draining the child's pipe anyway

        while True:
            chunk = await reader.read(MAX_LINE)
            if not chunk:
                break
            lines = (pending + chunk).split(b"\n")
            pending = lines.pop()
            if len(pending) >= MAX_LINE:
                lines.append(pending)
                pending = b""
            if any(len(line) > MAX_LINE for line in lines):
                lines = [
                    line[k : k + MAX_LINE]
                    for line in lines
                    for k in range(0, max(len(line), 1), MAX_LINE)
                ]
            if lines:
                emit(lines)
        if pending:
            emit([pending])


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"code {code}"
