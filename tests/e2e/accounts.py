"""Signed-in Telethon clients without the ``auth.*`` RPCs.

Tests of signed-in features should not depend on the sign-in flow: the user is
made with :meth:`UserService.create` and the client's auth key is bound to it the
way a successful ``auth.signIn`` does (authsession's authorization, then the
session host's live sessions). The client then learns itself as after a real
sign-in (``users.getUsers([inputUserSelf])``, then ``updates.getState`` /
``getDifference`` so its update state is loaded).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from typing import Any

from telethon import TelegramClient
from telethon.network.connection import ConnectionTcpFull
from telethon.tl import types as tt

from teamgram.mtproto.crypto.kdf import auth_key_id
from teamgram.server import Server
from teamgram.service.biz.users import UserRecord

_phones = itertools.count(1)
# Telethon drops the leading zero bytes of g_ab, so about one handshake in 256
# makes a key the server (which keeps all 256 bytes) disagrees with: Telethon
# retries that in normal use, but the test clients are built with no retries.
CONNECT_ATTEMPTS = 3


def new_phone() -> str:
    """A phone number no other test of the run uses (digits only, as stored)."""
    return f"999662{next(_phones):05d}"


async def sign_in_as(server: Server, client: TelegramClient, user_id: int) -> tt.User:
    """Bind a connected client's auth key to ``user_id``; returns the self User."""
    assert client.session.auth_key is not None, "connect the client first"
    key_id = auth_key_id(client.session.auth_key.key)
    await server.authsession.bind_user(key_id, user_id)
    server.session_host.bind_user(key_id, user_id)
    me = await client.get_me()
    assert me is not None and me.id == user_id
    # What Telethon does after a real sign-in: remember itself, load update state.
    await client._on_login(me)
    return me


async def connected(
    server: Server, telethon_for: Callable[..., Awaitable[TelegramClient]], **client_kwargs: Any
) -> TelegramClient:
    """A connected Telethon client, with a new auth key (tried again if the handshake failed)."""
    for attempt in range(1, CONNECT_ATTEMPTS + 1):
        try:
            return await telethon_for(server, ConnectionTcpFull, **client_kwargs)
        except ConnectionError:
            if attempt == CONNECT_ATTEMPTS:
                raise
    raise AssertionError("unreachable")


async def signed_in(
    server: Server,
    telethon_for: Callable[..., Awaitable[TelegramClient]],
    first_name: str = "Test",
    last_name: str = "",
    phone: str | None = None,
    **client_kwargs: Any,
) -> tuple[TelegramClient, UserRecord]:
    """A new account and a connected Telethon client signed in to it."""
    user = await server.users.create(phone or new_phone(), first_name, last_name)
    client = await connected(server, telethon_for, **client_kwargs)
    await sign_in_as(server, client, user.id)
    return client, user


async def another_device(
    server: Server,
    telethon_for: Callable[..., Awaitable[TelegramClient]],
    user_id: int,
    **client_kwargs: Any,
) -> TelegramClient:
    """A second connected client (its own auth key) signed in to an existing account."""
    client = await connected(server, telethon_for, **client_kwargs)
    await sign_in_as(server, client, user_id)
    return client


async def wait_for(predicate: Callable[[], Any], timeout: float = 5.0) -> None:
    """Poll until ``predicate()`` is truthy (updates arrive asynchronously)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def new_client(
    telethon_for: Callable[..., Awaitable[TelegramClient]], srv: Server, **kwargs: Any
) -> TelegramClient:
    """A connected, signed-out Telethon client that raises FLOOD_WAIT (never sleeps on it),
    tried again when Telethon's 1-in-256 handshake quirk hits."""
    kwargs.setdefault("flood_sleep_threshold", 0)
    for attempt in range(1, CONNECT_ATTEMPTS + 1):
        client = await telethon_for(srv, ConnectionTcpFull, connect=False, **kwargs)
        try:
            await asyncio.wait_for(client.connect(), 20)
            return client
        except ConnectionError:
            if attempt == CONNECT_ATTEMPTS:
                raise
    raise AssertionError("unreachable")
