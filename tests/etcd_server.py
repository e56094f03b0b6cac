"""A throwaway etcd for the tests of split-mode discovery.

``etcd`` comes from ``PATH`` (Debian: ``apt-get install -y etcd-server``; 3.4 or
later). It runs as a child process on 127.0.0.1 only, on free client and peer
ports, as a one-member cluster with a temporary data directory. It can be stopped
and started again on the same ports and data directory (a fault test: clients see
the same endpoint go away and come back with the same data), or wiped in between
(the same endpoint comes back empty). It is killed at the end of its fixture (and by
the kernel if the test process dies first).

When ``etcd`` is missing or does not come up, the tests that use it fail under
``CI=true`` and are skipped, with the reason, anywhere else.

The fixtures are ``etcd`` (module scope: one server for a test module, which tests
share by using key prefixes of their own) and ``etcd_private`` (function scope: a
server the test may stop, restart or wipe). To use them in a test module (or a
conftest.py), import their functions, which register them under those names::

    from tests.etcd_server import etcd_fixture, etcd_private_fixture  # noqa: F401
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from teamgram.testing.children import die_with_parent, free_ports

START_TIMEOUT = 20.0  # seconds until /health says true (a leader was elected)
STOP_TIMEOUT = 10.0  # seconds SIGTERM gets before SIGKILL
INSTALL_HINT = "install it: apt-get install -y etcd-server"


class EtcdUnavailable(RuntimeError):
    """``etcd`` is missing or did not start; the message says why."""


def in_ci() -> bool:
    return os.environ.get("CI") == "true"


def unavailable(reason: str) -> NoReturn:
    """CI: fail (the suite promises etcd there); elsewhere: skip."""
    message = f"etcd is not available: {reason} ({INSTALL_HINT})"
    if in_ci():
        pytest.fail(f"{message}; CI=true: it must be there", pytrace=False)
    pytest.skip(message)


class EtcdProcess:
    """One single-member etcd; :meth:`start` and :meth:`stop` may alternate.

    The ports are chosen on the first start and kept, so a restarted server is the
    same endpoint to its clients.
    """

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.log_path = workdir / "etcd.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.client_port = 0
        self.peer_port = 0

    @property
    def endpoint(self) -> str:
        """``host:port`` of the client API (what etcd clients are given)."""
        return f"127.0.0.1:{self.client_port}"

    @property
    def client_url(self) -> str:
        return f"http://{self.endpoint}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def command(self, binary: str) -> list[str]:
        peer_url = f"http://127.0.0.1:{self.peer_port}"
        return [
            binary,
            "--name=test",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={self.client_url}",
            f"--advertise-client-urls={self.client_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=test={peer_url}",
            "--initial-cluster-state=new",
            "--logger=zap",
            "--log-outputs=stderr",
            "--log-level=warn",
        ]

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start (or start again, on the same ports and data) and wait until healthy."""
        if self.running:
            return
        binary = shutil.which("etcd")
        if binary is None:
            raise EtcdUnavailable("no `etcd` binary on PATH")
        if not self.client_port:
            self.client_port, self.peer_port = free_ports(2)
        self.workdir.mkdir(parents=True, exist_ok=True)
        main_thread = threading.current_thread() is threading.main_thread()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.command(binary),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a ^C of the test run does not reach it first
                # PDEATHSIG follows the starting *thread*: only safe from the main one.
                preexec_fn=die_with_parent if main_thread else None,
            )
        try:
            self._wait_healthy(time.monotonic() + timeout)
        except BaseException:
            self.kill()
            raise

    def _wait_healthy(self, deadline: float) -> None:
        last = "no answer yet"
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise EtcdUnavailable(
                    f"etcd exited with {self.proc.returncode}: {self._log_tail()}"
                )
            try:
                with urllib.request.urlopen(f"{self.client_url}/health", timeout=2) as resp:
                    body = json.loads(resp.read())
                if body.get("health") == "true":
                    return
                last = f"health: {body}"
            except (OSError, ValueError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            time.sleep(0.05)
        raise EtcdUnavailable(f"etcd at {self.endpoint} not healthy in time ({last})")

    def _log_tail(self, lines: int = 5) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "no log"
        return "log: " + " | ".join(text[-lines:])

    def stop(self) -> None:
        """Stop it as an operator would (SIGTERM), keeping the data directory."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(timeout=STOP_TIMEOUT)

    def kill(self) -> None:
        """Stop it as a crash would (SIGKILL), keeping the data directory."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(timeout=STOP_TIMEOUT)

    def wipe(self) -> None:
        """(Stopped.) Forget every key and lease: the next start is a new cluster."""
        assert not self.running, "stop etcd before wiping its data"
        shutil.rmtree(self.data_dir, ignore_errors=True)


def _started(workdir: Path) -> EtcdProcess:
    process = EtcdProcess(workdir)
    try:
        process.start()
    except (EtcdUnavailable, OSError) as exc:
        unavailable(str(exc))
    return process


@pytest.fixture(scope="module", name="etcd")
def etcd_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdProcess]:
    """One etcd for the module (tests share it: give each its own key prefix)."""
    process = _started(tmp_path_factory.mktemp("etcd"))
    try:
        yield process
    finally:
        process.kill()


@pytest.fixture(name="etcd_private")
def etcd_private_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdProcess]:
    """An etcd of this test's own, which it may stop, restart and wipe."""
    process = _started(tmp_path_factory.mktemp("etcd-private"))
    try:
        yield process
    finally:
        process.kill()
