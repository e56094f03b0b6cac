"""Test tooling: an MTProto client for tests, benches and smoke checks (not for end users).

Names are imported lazily, so ``python -m teamgram.testing.mtclient`` runs cleanly.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from teamgram.testing.mtclient import (
        AuthState,
        BadMessageError,
        ClientStats,
        MTClient,
        RpcErrorReply,
        TransportErrorReply,
        public_keys,
    )

__all__ = [
    "AuthState",
    "BadMessageError",
    "ClientStats",
    "MTClient",
    "RpcErrorReply",
    "TransportErrorReply",
    "public_keys",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("teamgram.testing.mtclient"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
