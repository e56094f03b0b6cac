"""Errors that carry Telegram's error names across every service boundary."""

from __future__ import annotations


class RpcError(Exception):
    """Answered to the client as ``rpc_error`` (code, Telegram's error name)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code} {message}")
        self.code = code
        self.message = message


def bad_request(message: str) -> RpcError:
    return RpcError(400, message)


def unauthorized(message: str = "AUTH_KEY_UNREGISTERED") -> RpcError:
    return RpcError(401, message)


def flood_wait(seconds: int) -> RpcError:
    return RpcError(420, f"FLOOD_WAIT_{max(1, int(seconds))}")


def internal(message: str = "INTERNAL") -> RpcError:
    return RpcError(500, message)
