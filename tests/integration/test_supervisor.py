"""``teamgramd cluster`` and ``teamgramd run`` as real processes.

The supervisor's children here are small Python scripts (a topology's ``command``
replaces ``teamgramd run``), so the tests prove restarts, backoff, stopping,
death with the supervisor and output prefixing without any engine. The last tests
run the real ``teamgramd run``.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from teamgram.supervisor import MAX_LINE, Supervisor, Topology, parse_topology
from teamgram.testing.children import free_ports
from tests.integration.conftest import (
    check_reachable,
    create_database,
    drop_database,
    unavailable,
)

# Prints its pid once its SIGTERM handler is in place; says bye on SIGTERM.
POLITE = """
import os, signal, sys, time
def bye(*_):
    print("bye", flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, bye)
print("ready", os.getpid(), flush=True)
print("to stderr", file=sys.stderr, flush=True)
while True:
    time.sleep(1)
"""
# Ignores SIGTERM: only SIGKILL stops it.
STUBBORN = """
import os, signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ready", os.getpid(), flush=True)
while True:
    time.sleep(1)
"""
SLEEPER = "import os, time; print('up', os.getpid(), flush=True); time.sleep(120)"


def alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


async def wait_dead(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while (left := [p for p in pids if alive(p)]) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return left


def topology(*processes: dict[str, Any], **top: Any) -> Topology:
    return parse_topology({"processes": list(processes), **top})


def py(script: str) -> list[str]:
    return [sys.executable, "-c", script]


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("TEAMGRAM_")}


# -- in process: restarts, backoff, prefixes ----------------------------------------------


@pytest.mark.timeout(60)
async def test_restart_after_kill9_with_backoff() -> None:
    sup = Supervisor(
        topology({"name": "a", "command": py(SLEEPER)}),
        stdout=io.BytesIO(),
        stderr=io.BytesIO(),
        grace=5,
    )
    await sup.start()
    try:
        c = sup.child("a")
        first = c.pid
        assert first is not None and alive(first)
        assert sup.pids() == {"a.0": first}

        killed = time.monotonic()
        os.kill(first, signal.SIGKILL)
        await sup.wait_restarted("a", timeout=10)
        second = c.pid
        assert second is not None and second != first and alive(second)
        assert c.restarts == 1 and c.starts == 2 and c.returncode == -signal.SIGKILL
        assert 0.45 <= c.start_times[-1] - killed < 3.0  # first backoff: 0.5 s

        killed = time.monotonic()
        os.kill(second, signal.SIGKILL)
        await sup.wait_restarted("a", restarts=2, timeout=10)
        assert 0.95 <= c.start_times[-1] - killed < 4.0  # doubled: 1 s
        assert not alive(first) and not alive(second)
    finally:
        await sup.stop()
    assert c.pid is None and not alive(c.process.pid if c.process else 0)


@pytest.mark.timeout(60)
async def test_backoff_doubles_to_a_cap_and_resets_after_a_stable_run() -> None:
    crash = topology({"name": "crash", "command": ["/bin/sh", "-c", "exit 3"]})
    sup = Supervisor(
        crash, stdout=io.BytesIO(), stderr=io.BytesIO(), backoff_initial=0.05, backoff_max=0.2
    )
    await sup.start()
    try:
        c = await sup.wait_started("crash", starts=6, timeout=20)
        assert c.returncode == 3
    finally:
        await sup.stop()
    times = list(c.start_times)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    for gap, delay in zip(gaps, [0.05, 0.1, 0.2, 0.2, 0.2], strict=False):
        assert delay <= gap < delay + 0.5, gaps

    # Runs of 0.4 s count as stable (stable_after 0.3 s): every restart waits 0.1 s,
    # where doubling would have made the third wait 0.4 s.
    short = topology({"name": "short", "command": ["/bin/sh", "-c", "sleep 0.4; exit 1"]})
    sup = Supervisor(
        short,
        stdout=io.BytesIO(),
        stderr=io.BytesIO(),
        backoff_initial=0.1,
        backoff_max=10,
        stable_after=0.3,
    )
    await sup.start()
    try:
        c = await sup.wait_started("short", starts=4, timeout=20)
    finally:
        await sup.stop()
    times = list(c.start_times)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(gaps) >= 3
    for gap in gaps:
        assert 0.5 <= gap < 0.75, gaps


@pytest.mark.timeout(60)
async def test_output_lines_are_prefixed() -> None:
    script = (
        "import sys, time\n"
        "sys.stdout.write('one\\ntwo\\n\\nthree'); sys.stdout.flush()\n"
        "sys.stderr.write('err line\\n'); sys.stderr.flush()\n"
        f"sys.stdout.write('x' * {MAX_LINE + 10} + '\\n'); sys.stdout.flush()\n"
        "time.sleep(120)\n"
    )
    out, err = io.BytesIO(), io.BytesIO()
    sup = Supervisor(
        topology({"name": "p", "command": py(script), "count": 2}), stdout=out, stderr=err
    )
    await sup.start()
    try:
        deadline = time.monotonic() + 20
        while err.getvalue().count(b"err line") < 2 or out.getvalue().count(b"xxx\n") < 2:
            assert time.monotonic() < deadline, (out.getvalue()[:500], err.getvalue())
            await asyncio.sleep(0.05)
    finally:
        await sup.stop()
    for i in (0, 1):
        p = f"[p.{i}] ".encode()
        lines = [line for line in out.getvalue().split(b"\n") if line.startswith(p)]
        text = [line[len(p) :] for line in lines]
        assert text[:3] == [b"one", b"two", b""]
        # "three" had no newline: it is glued to the next write, then the long line
        # is cut at MAX_LINE bytes; nothing is lost.
        rest = b"".join(text[3:])
        assert rest == b"three" + b"x" * (MAX_LINE + 10)
        assert all(len(t) <= MAX_LINE for t in text)
        assert err.getvalue().count(p + b"err line\n") == 1
    assert all(line.startswith(b"[p.") for line in out.getvalue().splitlines())


@pytest.mark.timeout(60)
async def test_unfinished_last_line_is_forwarded_at_exit() -> None:
    out = io.BytesIO()
    sup = Supervisor(
        topology({"name": "q", "command": py("print('partial', end='', flush=True)")}),
        stdout=out,
        stderr=io.BytesIO(),
        backoff_initial=5,
    )
    await sup.start()
    try:
        deadline = time.monotonic() + 20
        while sup.child("q").returncode is None:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
    finally:
        await sup.stop()
    assert out.getvalue() == b"[q.0] partial\n"


@pytest.mark.timeout(60)
async def test_a_command_that_cannot_start_is_retried() -> None:
    sup = Supervisor(
        topology({"name": "ghost", "command": ["/nonexistent/teamgram-test-binary"]}),
        stdout=io.BytesIO(),
        stderr=io.BytesIO(),
        backoff_initial=0.05,
    )
    await sup.start()
    try:
        c = sup.child("ghost")
        deadline = time.monotonic() + 10
        while c.restarts < 2:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        assert c.pid is None and c.starts == 0
    finally:
        await sup.stop()


# -- teamgramd cluster as a process --------------------------------------------------------


class ClusterProcess:
    """``teamgramd cluster FILE`` with stdout and stderr in files of their own."""

    def __init__(self, workdir: Path, topo: dict[str, Any], *args: str) -> None:
        self.file = workdir / "cluster.yaml"
        self.file.write_text(yaml.safe_dump(topo))
        self.out_path = workdir / "out.log"
        self.err_path = workdir / "err.log"
        with self.out_path.open("wb") as out, self.err_path.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "teamgram.cli", "cluster", str(self.file), *args],
                stdout=out,
                stderr=err,
                cwd=workdir,
                env=clean_env(),
                start_new_session=True,
            )

    def out(self) -> str:
        return self.out_path.read_text(errors="replace")

    def err(self) -> str:
        return self.err_path.read_text(errors="replace")

    def ready(self) -> dict[str, list[int]]:
        pids: dict[str, list[int]] = {}
        for m in re.finditer(r"^\[([\w-]+\.\d+)\] ready (\d+)$", self.out(), re.M):
            pids.setdefault(m[1], []).append(int(m[2]))
        return pids

    async def wait_ready(self, labels: list[str], timeout: float = 30) -> dict[str, int]:
        deadline = time.monotonic() + timeout
        while not all(label in self.ready() for label in labels):
            assert self.proc.poll() is None, (self.out(), self.err())
            assert time.monotonic() < deadline, (self.out(), self.err())
            await asyncio.sleep(0.05)
        return {label: pids[-1] for label, pids in self.ready().items()}

    async def wait(self, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return self.proc.poll()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Any]:
    started: list[ClusterProcess] = []

    def factory(topo: dict[str, Any], *args: str) -> ClusterProcess:
        c = ClusterProcess(tmp_path, topo, *args)
        started.append(c)
        return c

    yield factory
    for c in started:
        c.kill()


@pytest.mark.timeout(60)
async def test_sigterm_stops_every_child_and_exits_0(cluster: Any) -> None:
    c = cluster(
        {
            "processes": [
                {"name": "polite", "command": py(POLITE), "count": 2},
                {"name": "stubborn", "command": py(STUBBORN)},
            ]
        },
        "--grace",
        "1.5",
    )
    pids = await c.wait_ready(["polite.0", "polite.1", "stubborn.0"])
    assert all(alive(p) for p in pids.values())
    # Output prefixing through the real entry point: stdout to stdout, stderr to stderr.
    assert "[polite.1] to stderr" in c.err()
    assert "to stderr" not in c.out()
    assert f"[stubborn.0] started: pid {pids['stubborn.0']}" in c.err()

    started = time.monotonic()
    c.proc.send_signal(signal.SIGTERM)
    assert await c.wait(15) == 0, (c.out(), c.err())
    took = time.monotonic() - started
    assert 1.5 <= took < 8, took  # the stubborn child waited out the grace time
    assert await wait_dead(list(pids.values()), 5) == []
    out, err = c.out(), c.err()
    assert "[polite.0] bye" in out and "[polite.1] bye" in out
    assert "[stubborn.0] still running: SIGKILL" in err
    assert "restarting" not in err
    assert "Traceback" not in err


@pytest.mark.timeout(60)
async def test_sigint_stops_too(cluster: Any) -> None:
    c = cluster({"processes": [{"name": "polite", "command": py(POLITE)}]})
    pids = await c.wait_ready(["polite.0"])
    c.proc.send_signal(signal.SIGINT)
    assert await c.wait(15) == 0, (c.out(), c.err())
    assert "[polite.0] bye" in c.out()
    assert await wait_dead(list(pids.values()), 5) == []


@pytest.mark.timeout(60)
async def test_children_die_with_a_killed_supervisor(cluster: Any) -> None:
    c = cluster(
        {
            "processes": [
                {"name": "polite", "command": py(POLITE), "count": 2},
                {"name": "stubborn", "command": py(STUBBORN)},
            ]
        }
    )
    pids = await c.wait_ready(["polite.0", "polite.1", "stubborn.0"])
    os.kill(c.proc.pid, signal.SIGKILL)
    c.proc.wait(10)
    assert await wait_dead(list(pids.values()), 5) == []


@pytest.mark.timeout(60)
async def test_a_killed_child_comes_back(cluster: Any) -> None:
    c = cluster({"processes": [{"name": "polite", "command": py(POLITE)}]})
    first = (await c.wait_ready(["polite.0"]))["polite.0"]
    os.kill(first, signal.SIGKILL)
    deadline = time.monotonic() + 15
    while len(c.ready().get("polite.0", [])) < 2:
        assert time.monotonic() < deadline, (c.out(), c.err())
        await asyncio.sleep(0.05)
    second = c.ready()["polite.0"][-1]
    assert second != first and alive(second)
    assert "[polite.0] exited with signal SIGKILL" in c.err()
    c.proc.send_signal(signal.SIGTERM)
    assert await c.wait(15) == 0
    assert await wait_dead([second], 5) == []


# -- the real teamgramd run ------------------------------------------------------------------


def teamgramd(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "teamgram.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env=clean_env(),
    )


def test_run_answers_help_and_rejects_unknown_services(tmp_path: Path) -> None:
    helped = teamgramd("run", "--help", cwd=tmp_path)
    assert helped.returncode == 0, helped.stderr
    for flag in ("SERVICES", "--instance-id", "--rpc-port", "--tcp-port", "--config"):
        assert flag in helped.stdout
    bad = teamgramd("run", "nosuch", cwd=tmp_path)
    assert bad.returncode == 2
    assert "unknown service 'nosuch'" in bad.stderr
    helped = teamgramd("cluster", "--help", cwd=tmp_path)
    assert helped.returncode == 0 and "--grace" in helped.stdout


def _check_redis() -> None:
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=2).close()
    except OSError as exc:
        unavailable("redis", f"127.0.0.1:6379: {exc}")


@pytest.fixture
def postgresql_url() -> Iterator[str]:
    check_reachable("postgresql")
    url = create_database("postgresql")
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        drop_database(url)


@pytest.mark.timeout(120)
async def test_run_edge_starts_and_stops_on_sigterm(tmp_path: Path, postgresql_url: str) -> None:
    """An edge on the fewest shared engines: PostgreSQL, Redis, static discovery and
    direct delivery (no etcd, no NATS)."""
    _check_redis()
    tcp, ws, http, rpc = free_ports(4)
    config = tmp_path / "edge.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "database": {"url": postgresql_url},
                "cluster": {
                    "namespace": f"t{secrets.token_hex(4)}",
                    "redis_url": "redis://127.0.0.1:6379/0",
                    "static_sessions": [f"test-edge-0=127.0.0.1:{rpc}"],
                    "delivery": "direct",
                },
            }
        )
    )
    log = tmp_path / "run.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "teamgram.cli", "run", "gnetway,session,bff",
                "--config", str(config),
                "--data-dir", str(tmp_path / "data"), "--host", "127.0.0.1",
                "--tcp-port", str(tcp), "--ws-port", str(ws), "--http-port", str(http),
                "--rpc-port", str(rpc), "--instance-id", "test-edge-0",
            ],
            stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path, env=clean_env(),
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while "ready" not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            await asyncio.sleep(0.1)
        for port in (tcp, rpc):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        while proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert proc.poll() == 0, log.read_text()
        assert "Traceback" not in log.read_text(), log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
