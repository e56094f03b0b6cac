"""A whole split-mode cluster for tests and benches: ``teamgramd cluster`` in a subprocess.

The cluster runs on the real engines (MariaDB, Redis, NATS JetStream, etcd,
SeaweedFS), each given names of its own (a new database, a namespace for Redis
keys, JetStream streams and etcd keys), so clusters of parallel runs never meet.
The supervisor's output goes to ``cluster.log`` in the work directory; each
process logs ``ready: ... pid P`` when it serves, which is how the tests learn
its pid (to kill it) and when a restarted process is back.

:class:`Balancer` is a loopback TCP balancer in front of the gateways, as an
operator would run one: a client that loses its gateway reconnects to the same
address and lands on a live one.

Benches use the same class: ``files=None`` keeps objects in a local directory
under the data directory (no S3 for text), ``env`` replaces any ``TEAMGRAM_*``
settings of the caller's environment, ``python_flags`` and ``process_env`` wrap
each process (``bench/_commit_stats.py``), and :meth:`Cluster.pids` lists the
supervisor and every process below it (to add up their CPU).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from teamgram.testing.children import free_ports

READY = re.compile(r"^\[(?P<name>[\w-]+)\.(?P<index>\d+)\] .*ready: .*\bpid (?P<pid>\d+)")


class Cluster:
    """``teamgramd cluster`` with ``edges`` gateway+session processes and one sync."""

    def __init__(
        self,
        workdir: Path,
        *,
        database_url: str,
        redis_url: str,
        nats_url: str,
        etcd_endpoints: list[str],
        files: dict[str, Any] | None = None,
        edges: int = 2,
        delivery: str = "pipeline",
        login_code: str = "12345",
        env: Mapping[str, str] | None = None,
        python_flags: Sequence[str] = (),
        process_env: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        """``files``: the ``files`` config section (None: a local directory in the data
        directory). ``env``: when given, the cluster's environment is ours without any
        ``TEAMGRAM_*`` variable, plus ``env``. ``python_flags`` go between the
        interpreter and ``-m teamgram.cli run`` of every process; ``process_env`` adds
        variables per process name (``edge0``, ``edge1``..., ``sync``)."""
        self.workdir = workdir
        self.edges = edges
        self.namespace = f"t{secrets.token_hex(4)}"
        ports = free_ports(3 * edges)
        self.tcp_ports = ports[:edges]
        self.rpc_ports = ports[edges : 2 * edges]
        self.http_ports = ports[2 * edges :]
        self.login_code = login_code
        self.data_dir = workdir / "data"
        self.log_path = workdir / "cluster.log"
        self.env = None if env is None else dict(env)
        if files is None:
            files = {"storage": "local", "local_dir": str(self.data_dir / "files")}
        common = {
            "data_dir": str(self.data_dir),
            "dev_login_code": login_code,
            # Bursts of a thousand messages from one client (the fault tests).
            "messages": {"send_per_second": 10000, "send_burst": 10000},
            "log_level": "INFO",
            "database": {"url": database_url},
            "files": {**files, "upload_dir": str(workdir / "uploads")},
            "gnetway": {"host": "127.0.0.1", "ws_port": 0},
            "httpserver": {"host": "127.0.0.1"},
            "cluster": {
                "namespace": self.namespace,
                "redis_url": redis_url,
                "nats_url": nats_url,
                "etcd_endpoints": etcd_endpoints,
                # Without etcd: the session processes' rpc addresses, listed.
                "static_sessions": []
                if etcd_endpoints
                else [f"127.0.0.1:{p}" for p in self.rpc_ports],
                "etcd_ttl": 2,
                "delivery": delivery,
            },
        }
        (workdir / "common.yaml").write_text(yaml.safe_dump(common))
        topology: dict[str, Any] = {"config": [str(workdir / "common.yaml")]}

        # Per-index ports: the topology's {N+i} form, from the first free port of each
        # kind, only works when the free ports are consecutive; list each edge instead.
        def command(services: str) -> dict[str, Any]:
            if not python_flags:
                return {}
            return {
                "command": [sys.executable, *python_flags, "-m", "teamgram.cli", "run", services]
            }

        def extra_env(name: str) -> dict[str, Any]:
            got = (process_env or {}).get(name)
            return {"env": dict(got)} if got else {}

        edge_services = "gnetway,session,bff,httpserver"
        topology["processes"] = [
            {
                "name": f"edge{i}",
                "run": edge_services,
                **command(edge_services),
                **extra_env(f"edge{i}"),
                "args": [
                    "--tcp-port",
                    str(self.tcp_ports[i]),
                    "--http-port",
                    str(self.http_ports[i]),
                    "--rpc-port",
                    str(self.rpc_ports[i]),
                    # Static discovery names an instance by its rpc address.
                    *(["--instance-id", f"{self.namespace}-edge{i}"] if etcd_endpoints else []),
                ],
            }
            for i in range(edges)
        ] + [
            {
                "name": "sync",
                "run": "sync",
                **command("sync"),
                **extra_env("sync"),
                "args": ["--instance-id", f"{self.namespace}-sync"],
            }
        ]
        self.topology_path = workdir / "cluster.yaml"
        self.topology_path.write_text(yaml.safe_dump(topology))
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    # -- lifecycle ---------------------------------------------------------------

    async def start(self, timeout: float = 60.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # The RSA key and secrets exist before the processes start (they would agree
        # anyway: creation is atomic), so the test can read the key.
        subprocess.run(
            [sys.executable, "-m", "teamgram.cli", "keys", "--data-dir", str(self.data_dir)],
            check=True,
            capture_output=True,
        )
        self._log = self.log_path.open("ab")
        env = None
        if self.env is not None:
            env = {k: v for k, v in os.environ.items() if not k.startswith("TEAMGRAM_")}
            env.update(self.env)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "teamgram.cli", "cluster", str(self.topology_path)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            env=env,
            start_new_session=True,
        )
        names = [f"edge{i}" for i in range(self.edges)] + ["sync"]
        await self.wait_ready(names, timeout=timeout)

    async def stop(self, timeout: float = 20.0) -> int | None:
        if self.proc is None:
            return None
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if self._log is not None:
            self._log.close()
        return proc.returncode

    # -- what the processes said ---------------------------------------------------

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def ready_pids(self) -> dict[str, list[int]]:
        """Each process name's pids, in the order they said ready (restarts append)."""
        out: dict[str, list[int]] = {}
        for line in self.log_text().splitlines():
            m = READY.match(line)
            if m:
                out.setdefault(m["name"], []).append(int(m["pid"]))
        return out

    async def wait_ready(self, names: list[str], timeout: float, after: int = 0) -> None:
        """Until each of ``names`` has said ready more than ``after`` times."""
        deadline = time.monotonic() + timeout
        while True:
            pids = self.ready_pids()
            if all(len(pids.get(n, [])) > after for n in names):
                return
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"the cluster exited:\n{self.log_text()[-6000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"not ready in {timeout} s: {names}\n{self.log_text()[-6000:]}")
            await asyncio.sleep(0.1)

    def pid(self, name: str) -> int:
        return self.ready_pids()[name][-1]

    @property
    def supervisor_pid(self) -> int:
        if self.proc is None:
            raise RuntimeError("the cluster is not running")
        return self.proc.pid

    def pids(self) -> list[int]:
        """The supervisor and every live process below it (children, theirs...)."""
        out: list[int] = []
        todo = [self.supervisor_pid]
        while todo:
            pid = todo.pop()
            out.append(pid)
            for task in Path(f"/proc/{pid}/task").glob("*/children"):
                with contextlib.suppress(OSError):
                    todo += [int(x) for x in task.read_text().split()]
        return out

    async def kill(self, name: str) -> int:
        """kill -9 the process ``name``; returns how many times it had said ready."""
        count = len(self.ready_pids()[name])
        os.kill(self.pid(name), signal.SIGKILL)
        return count


class Balancer:
    """A loopback TCP balancer: each new connection goes to the first backend that
    accepts it, starting from a rotating position (as a round-robin LB with health
    checks would)."""

    def __init__(self, backends: list[int]) -> None:
        self.backends = backends
        self.port = 0
        self._turn = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.connections: list[int] = []  # backend port of each connection made

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        n = len(self.backends)
        for k in range(n):
            port = self.backends[(self._turn + k) % n]
            try:
                upstream = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                continue
            self.connections.append(port)
            break
        self._turn += 1
        if upstream is None:
            writer.close()
            return
        up_reader, up_writer = upstream

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    dst.close()

        a = asyncio.ensure_future(pipe(reader, up_writer))
        b = asyncio.ensure_future(pipe(up_reader, writer))
        self._tasks |= {a, b}
        await asyncio.wait({a, b}, return_when=asyncio.FIRST_COMPLETED)
        a.cancel()
        b.cancel()
        self._tasks -= {a, b}

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for t in list(self._tasks):
            t.cancel()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
