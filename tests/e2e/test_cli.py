"""The real ``teamgramd`` process, as users run it (uvloop, CLI flags, signals).

In-process tests use the standard asyncio loop; this one catches what only the
shipped entry point does (it once reset every connection under uvloop).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from telethon import TelegramClient, connection, functions
from telethon.crypto import rsa
from telethon.sessions import StringSession

API_ID, API_HASH = 12345, "0123456789abcdef0123456789abcdef"


def free_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def teamgramd(*args: str) -> list[str]:
    return [sys.executable, "-m", "teamgram.cli", *args]


@pytest.fixture
def daemon(tmp_path: Path):  # type: ignore[no-untyped-def]
    tcp1, tcp2, ws, http = free_ports(4)
    log = tmp_path / "server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TEAMGRAM_")}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            teamgramd(
                "serve", "--data-dir", str(tmp_path / "data"), "--host", "127.0.0.1",
                "--tcp-port", str(tcp1), "--tcp-port", str(tcp2),
                "--ws-port", str(ws), "--http-port", str(http),
            ),
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while "ready" not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield proc, tmp_path / "data", {"tcp": [tcp1, tcp2], "ws": ws, "http": http}, log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


async def test_daemon_serves_telethon_and_stops_on_sigterm(daemon) -> None:  # type: ignore[no-untyped-def]
    proc, data, ports, log = daemon
    keys = subprocess.run(
        teamgramd("keys", "--data-dir", str(data)), capture_output=True, text=True, timeout=60
    )
    assert keys.returncode == 0, keys.stderr
    pem = keys.stdout[: keys.stdout.index("-----END RSA PUBLIC KEY-----") + 29]
    assert pem.startswith("-----BEGIN RSA PUBLIC KEY-----")
    assert "fingerprint:" in keys.stdout
    rsa.add_key(pem, old=False)

    targets = [(connection.ConnectionTcpFull, p) for p in ports["tcp"]]
    targets.append((connection.ConnectionTcpObfuscated, ports["tcp"][0]))
    for conn_cls, port in targets:
        TelegramClient._config = None
        client = TelegramClient(StringSession(), API_ID, API_HASH, connection=conn_cls)
        client.session.set_dc(2, "127.0.0.1", port)
        try:
            await asyncio.wait_for(client.connect(), 30)
            cfg = await asyncio.wait_for(client(functions.help.GetConfigRequest()), 10)
            assert cfg.this_dc == 2
            assert {o.port for o in cfg.dc_options} <= set(ports["tcp"])
            pong = await asyncio.wait_for(client(functions.PingRequest(ping_id=7)), 10)
            assert pong.ping_id == 7
        finally:
            await client.disconnect()

    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0, log.read_text()
    assert time.monotonic() - started < 10
    assert "Traceback" not in log.read_text(), log.read_text()
