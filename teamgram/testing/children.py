"""Helpers for tests that start servers as child processes (etcd, SeaweedFS, clusters)."""

from __future__ import annotations

import contextlib
import ctypes
import signal
import socket


def free_ports(count: int) -> list[int]:
    """Loopback ports nobody listens on now (all held open together, so they differ)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def die_with_parent() -> None:
    """(In the child, before exec.) SIGKILL when the process that started it exits."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
