"""Perfect Forward Secrecy end to end: temporary keys and ``auth.bindTempAuthKey``.

Our test client makes a permanent key (p_q_inner_data) and temporary keys
(p_q_inner_data_temp) against a live server over TCP. An unbound temporary key
may only call the methods https://core.telegram.org/api/pfs lists
(help.getConfig...); anything else is 401 AUTH_KEY_PERM_EMPTY. The binding
message (bind_auth_key_inner) is encrypted with the permanent key, in MTProto 1.0
as the spec describes (SHA-1 msg_key over the unpadded plaintext) or in 2.0, and
names the msg_id the bindTempAuthKey request itself is sent under. Once bound,
the temporary key acts for the permanent one (before sign-in: 401
AUTH_KEY_UNREGISTERED). Wrong bindings are 400 errors and leave the key unbound;
a temporary key past its ``expires_in`` is unknown (-404).
"""

from __future__ import annotations

import asyncio
import os
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from hashlib import sha1
from typing import Any, ClassVar

import pytest

from teamgram.mtproto.client_handshake import HandshakeClient
from teamgram.mtproto.crypto.aes import encrypt_ige
from teamgram.mtproto.crypto.kdf import X_CLIENT, aes_key_iv_v1
from teamgram.mtproto.envelope import encrypt_client_message
from teamgram.server import Server
from teamgram.testing import (
    AuthState,
    MTClient,
    RpcErrorReply,
    TransportErrorReply,
    public_keys,
)
from teamgram.tl import TLFunction, functions, types

TEMP_EXPIRES_IN = 3600
SHORT_EXPIRES_IN = 2
CLIENT_TIMEOUT = 20.0


# --------------------------------------------------------------------------- client


class KeyClient(MTClient):
    """MTClient that can create a temporary key and choose a request's msg_id.

    ``temp_expires_in`` is a class attribute because ``connect`` builds the
    instance and runs the handshake in one go; :func:`client_class` makes a
    subclass per lifetime.
    """

    temp_expires_in: ClassVar[int | None] = None

    async def _handshake(self, rsa_pad: bool) -> AuthState:
        hs = HandshakeClient(self.keys, rsa_pad=rsa_pad, temp_expires_in=self.temp_expires_in)
        out: bytes | None = hs.start()
        while out is not None:
            await self.send_payloads([out])
            answer = await self._plain.get()
            if answer is None:
                raise self._failure()
            out = await asyncio.to_thread(hs.receive, answer)
        assert hs.result is not None
        r = hs.result
        return AuthState(r.auth_key, r.server_salt, float(r.time_offset))

    @property
    def state(self) -> AuthState:
        assert self.auth is not None
        return self.auth

    async def invoke_as(self, build: Callable[[int], TLFunction]) -> Any:
        """Send ``build(msg_id)`` under that very msg_id and return its result.

        The binding message inside bindTempAuthKey must carry the msg_id of the
        request that carries it, so the request is built once the id is chosen.
        """
        msg_id = self._next_msg_id()
        request = build(msg_id)
        body = request.to_bytes()
        fut = self._track(msg_id, body, type(request).read_result)
        await self._send_encrypted([(msg_id, self._next_seqno(True), body)])
        return await asyncio.wait_for(fut, self.timeout)


_CLASSES: dict[int | None, type[KeyClient]] = {None: KeyClient}


def client_class(expires_in: int | None) -> type[KeyClient]:
    """KeyClient for a permanent key (None) or a temporary key of ``expires_in`` seconds."""
    if expires_in not in _CLASSES:
        _CLASSES[expires_in] = type(
            f"TempKeyClient{expires_in}", (KeyClient,), {"temp_expires_in": expires_in}
        )
    return _CLASSES[expires_in]


Connect = Callable[..., Awaitable[KeyClient]]


@pytest.fixture
async def connect(server: Server) -> AsyncIterator[Connect]:
    """``await connect(expires_in=None, auth=None)``: a KeyClient on ``server``, closed after."""
    clients: list[KeyClient] = []

    async def factory(expires_in: int | None = None, auth: AuthState | None = None) -> KeyClient:
        cls = client_class(expires_in)
        client = await asyncio.wait_for(
            cls.connect(
                "127.0.0.1",
                server.gateway.tcp_ports[0],
                public_keys(server.server_keys),
                auth=auth,
                timeout=CLIENT_TIMEOUT,
            ),
            CLIENT_TIMEOUT,
        )
        assert isinstance(client, KeyClient)
        clients.append(client)
        return client

    try:
        yield factory
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


async def ready(client: KeyClient) -> None:
    """help.getConfig: allowed on any key; also replaces the handshake salt."""
    config = await client.invoke(functions.help.GetConfig())
    assert isinstance(config, types.Config)


# --------------------------------------------------------------------------- binding message


def encrypt_v1(key: bytes, key_id: int, msg_id: int, body: bytes) -> bytes:
    """MTProto 1.0 as bindTempAuthKey wants it: random int128 | msg_id | seqno 0 | len | body.

    msg_key = SHA1(plaintext without padding)[4:20]; padding to 16 bytes.
    """
    plain = os.urandom(16) + struct.pack("<qii", msg_id, 0, len(body)) + body
    msg_key = sha1(plain).digest()[4:20]
    aes_key, aes_iv = aes_key_iv_v1(key, msg_key, X_CLIENT)
    padded = plain + os.urandom(-len(plain) % 16)
    return struct.pack("<q", key_id) + msg_key + encrypt_ige(padded, aes_key, aes_iv)


def encrypt_v2(key: bytes, key_id: int, msg_id: int, body: bytes) -> bytes:
    """The same message in MTProto 2.0 (random salt and session id, seqno 0)."""
    salt, session_id = struct.unpack("<qq", os.urandom(16))
    return encrypt_client_message(key, struct.pack("<q", key_id), salt, session_id, msg_id, 0, body)


@dataclass
class Binding:
    """Everything one bindTempAuthKey needs; :meth:`request` can spoil any part of it."""

    temp: KeyClient
    perm: AuthState
    nonce: int
    expires_at: int

    @classmethod
    def new(cls, temp: KeyClient, perm: AuthState, expires_in: int = 3000) -> Binding:
        nonce = struct.unpack("<q", os.urandom(8))[0]
        return cls(temp, perm, nonce, int(time.time()) + expires_in)

    def inner(self, **changes: int) -> bytes:
        fields = {
            "nonce": self.nonce,
            "temp_auth_key_id": self.temp.state.auth_key_id,
            "perm_auth_key_id": self.perm.auth_key_id,
            "temp_session_id": self.temp.session_id,
            "expires_at": self.expires_at,
        }
        fields.update(changes)
        return types.BindAuthKeyInner(**fields).to_bytes()

    def request(
        self,
        msg_id: int,
        *,
        version: int = 1,
        body: bytes | None = None,
        message_msg_id: int | None = None,
        key: bytes | None = None,
        perm_auth_key_id: int | None = None,
        expires_at: int | None = None,
    ) -> functions.auth.BindTempAuthKey:
        encrypt = encrypt_v1 if version == 1 else encrypt_v2
        message = encrypt(
            self.perm.auth_key if key is None else key,
            self.perm.auth_key_id,
            msg_id if message_msg_id is None else message_msg_id,
            self.inner() if body is None else body,
        )
        if perm_auth_key_id is None:
            perm_auth_key_id = self.perm.auth_key_id
        return functions.auth.BindTempAuthKey(
            perm_auth_key_id=perm_auth_key_id,
            nonce=self.nonce,
            expires_at=self.expires_at if expires_at is None else expires_at,
            encrypted_message=message,
        )


async def bind(temp: KeyClient, perm: AuthState, version: int = 1) -> Any:
    b = Binding.new(temp, perm)
    return await temp.invoke_as(lambda msg_id: b.request(msg_id, version=version))


async def rpc_error(coro: Awaitable[Any]) -> tuple[int, str]:
    with pytest.raises(RpcErrorReply) as info:
        await coro
    return info.value.code, info.value.message


def needs_perm_key() -> TLFunction:
    """A method anonymous clients may call but an unbound temporary key may not."""
    return functions.help.GetCountriesList(lang_code="en", hash=0)


def needs_user() -> TLFunction:
    return functions.users.GetUsers(id=[types.InputUserSelf()])


async def stored_binding(server: Server, temp: KeyClient) -> int | None:
    info = await server.authsession.get_key(temp.state.auth_key_id)
    assert info is not None and info.is_temp
    return info.perm_auth_key_id


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize("version", [1, 2])
async def test_bind_temp_key(server: Server, connect: Connect, version: int) -> None:
    perm = await connect()
    temp = await connect(TEMP_EXPIRES_IN)
    assert temp.state.auth_key_id != perm.state.auth_key_id
    await ready(perm)
    await ready(temp)

    # Unbound: only the PFS whitelist answers.
    assert isinstance(await temp.invoke(functions.help.GetNearestDc()), types.NearestDc)
    assert await rpc_error(temp.invoke(needs_perm_key())) == (401, "AUTH_KEY_PERM_EMPTY")
    assert await stored_binding(server, temp) is None

    assert await bind(temp, perm.state, version) is True
    assert await stored_binding(server, temp) == perm.state.auth_key_id

    # Bound: the key acts for the permanent one, which is not signed in.
    countries = await temp.invoke(needs_perm_key())
    assert isinstance(countries, types.help.CountriesList | types.help.CountriesListNotModified)
    assert await rpc_error(temp.invoke(needs_user())) == (401, "AUTH_KEY_UNREGISTERED")
    await ready(temp)
    await perm.ping()

    # The binding belongs to the key, not to the connection or session.
    again = await connect(auth=AuthState(temp.state.auth_key, temp.state.server_salt))
    assert again.session_id != temp.session_id
    await ready(again)
    countries = await again.invoke(needs_perm_key())
    assert isinstance(countries, types.help.CountriesList | types.help.CountriesListNotModified)


async def test_unbound_temp_key_unrouted_method(connect: Connect) -> None:
    """Methods this server does not serve are also refused with AUTH_KEY_PERM_EMPTY.

    https://core.telegram.org/api/pfs: an unbound temporary key may only call the
    listed methods; users.getUsers is not one of them (and has no route here yet).
    """
    temp = await connect(TEMP_EXPIRES_IN)
    await ready(temp)
    assert await rpc_error(temp.invoke(needs_user())) == (401, "AUTH_KEY_PERM_EMPTY")


BindCase = Callable[[int, Binding], functions.auth.BindTempAuthKey]
INVALID = "ENCRYPTED_MESSAGE_INVALID"


def _spoiled_ciphertext(msg_id: int, b: Binding) -> functions.auth.BindTempAuthKey:
    req = b.request(msg_id)
    data = bytearray(req.encrypted_message)
    data[-1] ^= 0x01
    req.encrypted_message = bytes(data)
    return req


BAD_BINDINGS: dict[str, tuple[BindCase, str]] = {
    "nonce": (lambda m, b: b.request(m, body=b.inner(nonce=b.nonce ^ 1)), INVALID),
    "temp_session_id": (
        lambda m, b: b.request(m, body=b.inner(temp_session_id=b.temp.session_id ^ 1)),
        INVALID,
    ),
    "temp_auth_key_id": (
        lambda m, b: b.request(m, body=b.inner(temp_auth_key_id=b.perm.auth_key_id)),
        INVALID,
    ),
    "inner_perm_auth_key_id": (
        lambda m, b: b.request(m, body=b.inner(perm_auth_key_id=b.temp.state.auth_key_id)),
        INVALID,
    ),
    "inner_expires_at": (
        lambda m, b: b.request(m, body=b.inner(expires_at=b.expires_at + 1)),
        INVALID,
    ),
    "msg_id_v1": (lambda m, b: b.request(m, message_msg_id=m + 4), INVALID),
    "msg_id_v2": (lambda m, b: b.request(m, message_msg_id=m - 4, version=2), INVALID),
    "not_bind_inner": (
        lambda m, b: b.request(m, body=functions.Ping(ping_id=1).to_bytes()),
        INVALID,
    ),
    "encrypted_with_temp_key": (lambda m, b: b.request(m, key=b.temp.state.auth_key), INVALID),
    "spoiled_ciphertext": (_spoiled_ciphertext, INVALID),
    "truncated": (
        lambda m, b: functions.auth.BindTempAuthKey(
            b.perm.auth_key_id, b.nonce, b.expires_at, b.request(m).encrypted_message[:40]
        ),
        INVALID,
    ),
    "unknown_perm_key": (
        lambda m, b: b.request(m, perm_auth_key_id=b.perm.auth_key_id ^ 0x5A5A),
        "PERM_AUTH_KEY_EMPTY",
    ),
    "expires_at_past": (
        lambda m, b: Binding(b.temp, b.perm, b.nonce, int(time.time()) - 10).request(m),
        "EXPIRES_AT_INVALID",
    ),
}


@pytest.mark.parametrize("case", list(BAD_BINDINGS))
async def test_bad_binding_is_refused(server: Server, connect: Connect, case: str) -> None:
    build, message = BAD_BINDINGS[case]
    perm = await connect()
    temp = await connect(TEMP_EXPIRES_IN)
    await ready(temp)
    b = Binding.new(temp, perm.state)
    assert await rpc_error(temp.invoke_as(lambda m: build(m, b))) == (400, message)

    # Nothing was bound, and a correct binding still works.
    assert await stored_binding(server, temp) is None
    assert await rpc_error(temp.invoke(needs_perm_key())) == (401, "AUTH_KEY_PERM_EMPTY")
    assert await bind(temp, perm.state) is True
    assert await stored_binding(server, temp) == perm.state.auth_key_id


async def test_bind_twice(server: Server, connect: Connect) -> None:
    perm = await connect()
    other_perm = await connect()
    temp = await connect(TEMP_EXPIRES_IN)
    await ready(temp)
    assert await bind(temp, perm.state) is True

    code, message = await rpc_error(bind(temp, other_perm.state))
    assert (code, message) == (400, "TEMP_AUTH_KEY_ALREADY_BOUND")
    assert await stored_binding(server, temp) == perm.state.auth_key_id

    # Another temporary key may bind to the same permanent key.
    temp2 = await connect(TEMP_EXPIRES_IN)
    await ready(temp2)
    assert await bind(temp2, perm.state) is True
    assert await stored_binding(server, temp2) == perm.state.auth_key_id


async def test_new_binding_replaces_the_old_one(server: Server, connect: Connect) -> None:
    """https://core.telegram.org/method/auth.bindTempAuthKey: "Each permanent key may only
    be bound to one temporary key at a time, binding a new temporary key overwrites the
    previous one"."""
    perm = await connect()
    first = await connect(TEMP_EXPIRES_IN)
    second = await connect(TEMP_EXPIRES_IN)
    await ready(first)
    await ready(second)
    assert await bind(first, perm.state) is True
    assert await bind(second, perm.state) is True
    assert await stored_binding(server, second) == perm.state.auth_key_id
    assert await stored_binding(server, first) is None


async def test_bind_needs_temp_caller_and_perm_target(server: Server, connect: Connect) -> None:
    perm = await connect()
    other_perm = await connect()
    temp = await connect(TEMP_EXPIRES_IN)
    other_temp = await connect(TEMP_EXPIRES_IN)
    await ready(perm)
    await ready(temp)

    # Called on a permanent key.
    code, message = await rpc_error(bind(perm, other_perm.state))
    assert (code, message) == (400, "TEMP_AUTH_KEY_EMPTY")

    # A temporary key named (and encrypted with) as the "permanent" one.
    code, message = await rpc_error(bind(temp, other_temp.state))
    assert (code, message) == (400, "PERM_AUTH_KEY_EMPTY")
    assert await stored_binding(server, temp) is None


async def test_expired_temp_key_is_unknown(server: Server, connect: Connect) -> None:
    perm = await connect()
    unbound = await connect(SHORT_EXPIRES_IN)
    bound = await connect(SHORT_EXPIRES_IN)
    made = time.time()  # both keys expire at most SHORT_EXPIRES_IN after this
    await ready(unbound)
    await ready(bound)
    # A binding asking for an hour does not outlive the handshake's expires_in.
    assert await bind(bound, perm.state) is True
    states = [unbound.state, bound.state]

    await asyncio.sleep(max(0.0, made + SHORT_EXPIRES_IN + 1.5 - time.time()))
    for client in (unbound, bound):
        with pytest.raises(TransportErrorReply) as info:
            await client.invoke(functions.help.GetConfig())
        assert info.value.code == -404
        assert client.closed
    for state in states:
        with pytest.raises(TransportErrorReply) as info:
            again = await connect(auth=AuthState(state.auth_key, state.server_salt))
            await again.invoke(functions.help.GetConfig())
        assert info.value.code == -404
        assert await server.authsession.get_key(state.auth_key_id) is None
    await ready(perm)  # the permanent key is untouched
