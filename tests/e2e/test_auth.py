"""Signing in end to end with Telethon: codes, sign-up, devices, sign-out, limits.

Servers run with ``dev_login_code`` where the code itself does not matter; the
random-code and test-number paths are covered too. Telethon's own follow-up calls
after a sign-in (updates.getState, users.getUsers for ``get_me``) belong to other
services: the helpers below use them when this server serves them and otherwise
prove a device is signed in with a call that needs a user.
"""

from __future__ import annotations

import asyncio
import logging
import re
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from telethon import TelegramClient, errors, events, functions, types
from telethon.network.connection import ConnectionTcpFull

from teamgram.server import Server
from tests.e2e.accounts import new_client

Telethon = Callable[..., Awaitable[TelegramClient]]

CODE = "24680"
PHONE_A = "15550100001"
PHONE_B = "15550100002"


# --------------------------------------------------------------------------- helpers


def key_id(client: TelegramClient) -> int:
    unsigned = client.session.auth_key.key_id
    return int(struct.unpack("<q", struct.pack("<Q", unsigned))[0])


async def whoami(srv: Server, client: TelegramClient) -> int:
    """The signed-in user's id, from the client (users.getUsers) and the server's record."""
    me = await client.get_me()
    assert me is not None
    assert await srv.authsession.user_for_key(key_id(client)) == me.id
    return int(me.id)


async def sign_up(
    client: TelegramClient, phone: str, code: str = CODE, first: str = "First", last: str = ""
) -> Any:
    """Telethon's sign-up dance: signIn answers signUpRequired, then auth.signUp."""
    sent = await client.send_code_request(phone)
    with pytest.raises(errors.PhoneNumberUnoccupiedError):
        await client.sign_in(phone, code, phone_code_hash=sent.phone_code_hash)
    auth = await client(functions.auth.SignUpRequest(phone, sent.phone_code_hash, first, last))
    return await client._on_login(auth.user)


async def sign_in(client: TelegramClient, phone: str, code: str = CODE) -> Any:
    sent = await client.send_code_request(phone)
    return await client.sign_in(phone, code, phone_code_hash=sent.phone_code_hash)


def dev_server(start_server: Any, **auth: Any) -> Any:
    return start_server(dev_login_code=CODE, auth=auth)


# --------------------------------------------------------------------------- sign-up, devices


async def test_sign_up_two_users_and_a_second_device(
    start_server: Any, telethon_for: Telethon
) -> None:
    async with dev_server(start_server, fresh_reset_seconds=0) as srv:
        a = await new_client(telethon_for, srv, device_model="Phone A", app_version="1.0")
        b = await new_client(telethon_for, srv)
        user_a = await sign_up(a, PHONE_A, first="Alice")
        user_b = await sign_up(b, "+1 (555) 010-0002", first="Bob", last="B")
        assert user_a.id != user_b.id
        assert (user_a.first_name, user_a.phone) == ("Alice", PHONE_A)
        assert (user_b.first_name, user_b.last_name, user_b.phone) == ("Bob", "B", PHONE_B)
        assert await whoami(srv, a) == user_a.id
        assert await whoami(srv, b) == user_b.id

        # The same phone on a new key: signed in, not signed up again.
        a2 = await new_client(telethon_for, srv, device_model="Laptop A2", app_version="2.5")
        again = await sign_in(a2, PHONE_A)
        assert again.id == user_a.id
        assert await whoami(srv, a2) == user_a.id
        assert await whoami(srv, a) == user_a.id

        auths = (await a(functions.account.GetAuthorizationsRequest())).authorizations
        assert len(auths) == 2
        current = [x for x in auths if x.current]
        other = [x for x in auths if not x.current]
        assert [x.device_model for x in current] == ["Phone A"]
        assert current[0].app_version == "1.0" and current[0].hash == 0
        assert [(x.device_model, x.app_version) for x in other] == [("Laptop A2", "2.5")]
        assert (
            other[0].hash != 0
            and other[0].date_created.timestamp() > 0
            and other[0].ip == "127.0.0.1"
        )
        assert other[0].api_id == 12345

        # Signing the other device out: its next call is refused at once.
        assert await a(functions.account.ResetAuthorizationRequest(other[0].hash))
        with pytest.raises(errors.AuthKeyUnregisteredError):
            await a2(functions.account.GetAuthorizationsRequest())
        assert await whoami(srv, a) == user_a.id
        auths = (await a(functions.account.GetAuthorizationsRequest())).authorizations
        assert [x.device_model for x in auths] == ["Phone A"]
        with pytest.raises(errors.HashInvalidError):
            await a(functions.account.ResetAuthorizationRequest(other[0].hash))
        with pytest.raises(errors.HashInvalidError):  # not the current device either
            await a(functions.account.ResetAuthorizationRequest(0))

        # B's devices are B's alone.
        b_auths = (await b(functions.account.GetAuthorizationsRequest())).authorizations
        assert len(b_auths) == 1 and b_auths[0].current


async def test_reset_authorizations_signs_out_every_other_device(
    start_server: Any, telethon_for: Telethon
) -> None:
    async with dev_server(start_server, fresh_reset_seconds=0) as srv:
        main = await new_client(telethon_for, srv)
        await sign_up(main, PHONE_A)
        others = [await new_client(telethon_for, srv) for _ in range(2)]
        for other in others:
            await sign_in(other, PHONE_A)
        assert await main(functions.auth.ResetAuthorizationsRequest())
        for other in others:
            with pytest.raises(errors.AuthKeyUnregisteredError):
                await other(functions.account.GetAuthorizationsRequest())
        auths = (await main(functions.account.GetAuthorizationsRequest())).authorizations
        assert len(auths) == 1 and auths[0].current
        # A signed-out device may sign in again.
        await sign_in(others[0], PHONE_A)
        assert await whoami(srv, others[0]) == await whoami(srv, main)


async def test_log_out(start_server: Any, telethon_for: Telethon) -> None:
    async with dev_server(start_server) as srv:
        a = await new_client(telethon_for, srv)
        keep = await new_client(telethon_for, srv)
        user = await sign_up(a, PHONE_A)
        await sign_in(keep, PHONE_A)
        # Telethon takes the request's ack for a True answer (old servers sent no result).
        result = await a(functions.auth.LogOutRequest())
        assert result is True or isinstance(result, types.auth.LoggedOut)
        with pytest.raises(errors.AuthKeyUnregisteredError):
            await a(functions.account.GetAuthorizationsRequest())
        assert await whoami(srv, keep) == user.id
        auths = (await keep(functions.account.GetAuthorizationsRequest())).authorizations
        assert len(auths) == 1
        # Telethon's own log_out (auth.logOut, then disconnect).
        assert await keep.log_out()
        # It returned on the request's ack: the server may still be at work.
        for _ in range(100):
            if not await srv.authsession.authorizations_of(user.id):
                break
            await asyncio.sleep(0.05)
        assert await srv.authsession.authorizations_of(user.id) == []


async def test_sign_in_survives_a_restart(start_server: Any, telethon_for: Telethon) -> None:
    async with dev_server(start_server) as srv:
        a = await new_client(telethon_for, srv)
        user = await sign_up(a, PHONE_A)
        session = a.session.save()
        await a.disconnect()
        config = srv.config
    # The same data directory, a new process's worth of state (and new ports).
    srv = Server(config)
    await asyncio.wait_for(srv.start(), 30)
    try:
        again = await telethon_for(
            srv, ConnectionTcpFull, session=session, connect=False, flood_sleep_threshold=0
        )
        again.session.set_dc(srv.config.dc_id, "127.0.0.1", srv.gateway.tcp_ports[0])
        await asyncio.wait_for(again.connect(), 20)
        assert await whoami(srv, again) == user.id
        await again.disconnect()
    finally:
        await asyncio.wait_for(srv.stop(), 15)


# --------------------------------------------------------------------------- codes


async def test_random_code_is_logged_and_works(
    server: Server, telethon_for: Telethon, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="teamgram")
    client = await new_client(telethon_for, server)
    sent = await client.send_code_request(PHONE_A)
    assert isinstance(sent.type, types.auth.SentCodeTypeSms) and sent.type.length == 5
    assert sent.timeout == server.config.auth.resend_timeout_seconds
    lines = [r.getMessage() for r in caplog.records if f"+{PHONE_A}" in r.getMessage()]
    assert len(lines) == 1
    match = re.search(r"login code for \+\d+: (\d{5})$", lines[0])
    assert match is not None
    with pytest.raises(errors.PhoneNumberUnoccupiedError):
        await client.sign_in(PHONE_A, match.group(1), phone_code_hash=sent.phone_code_hash)


async def test_telegram_test_numbers(server: Server, telethon_for: Telethon) -> None:
    client = await new_client(telethon_for, server)
    user = await sign_up(client, "9996621234", code="22222")
    other = await new_client(telethon_for, server)
    assert (await sign_in(other, "+999 66 2 1234", code="22222")).id == user.id
    third = await new_client(telethon_for, server)
    with pytest.raises(errors.PhoneCodeInvalidError):
        await sign_in(third, "9996621234", code="11111")


async def test_invalid_phone_numbers(server: Server, telethon_for: Telethon) -> None:
    client = await new_client(telethon_for, server)
    for phone in ("1234", "12345678901234567", "abcdefgh", "+1 555 CALL NOW", "١٢٣٤٥٦٧"):
        with pytest.raises(errors.PhoneNumberInvalidError):
            await client(functions.auth.SendCodeRequest(phone, 1, "x", types.CodeSettings()))


async def test_wrong_code_five_times_is_flood_wait(
    start_server: Any, telethon_for: Telethon
) -> None:
    async with dev_server(start_server) as srv:
        client = await new_client(telethon_for, srv)
        sent = await client.send_code_request(PHONE_A)
        for _ in range(4):
            with pytest.raises(errors.PhoneCodeInvalidError):
                await client.sign_in(PHONE_A, "11111", phone_code_hash=sent.phone_code_hash)
        with pytest.raises(errors.FloodWaitError) as info:
            await client.sign_in(PHONE_A, "11111", phone_code_hash=sent.phone_code_hash)
        assert info.value.seconds == srv.config.auth.failure_flood_wait_seconds
        # Blocked: the right code, a new code, another device: all wait.
        with pytest.raises(errors.FloodWaitError):
            await client.sign_in(PHONE_A, CODE, phone_code_hash=sent.phone_code_hash)
        with pytest.raises(errors.FloodWaitError):
            await client.send_code_request(PHONE_A)
        other = await new_client(telethon_for, srv)
        with pytest.raises(errors.FloodWaitError):
            await other.send_code_request(PHONE_A)
        # Other phones are not affected.
        await sign_up(await new_client(telethon_for, srv), PHONE_B)


async def test_expired_code(start_server: Any, telethon_for: Telethon) -> None:
    async with dev_server(start_server, code_ttl_seconds=1) as srv:
        client = await new_client(telethon_for, srv)
        sent = await client.send_code_request(PHONE_A)
        await asyncio.sleep(2.1)
        with pytest.raises(errors.PhoneCodeExpiredError):
            await client.sign_in(PHONE_A, CODE, phone_code_hash=sent.phone_code_hash)
        # A new code works (given the time to use it: lifetimes are whole seconds).
        srv.authsession.config.code_ttl_seconds = 60
        await sign_up(client, PHONE_A)


async def test_bad_sign_in_input(start_server: Any, telethon_for: Telethon) -> None:
    async with dev_server(start_server) as srv:
        client = await new_client(telethon_for, srv)
        other = await new_client(telethon_for, srv)
        sent_a = await client.send_code_request(PHONE_A)
        sent_b = await client.send_code_request(PHONE_B)
        sent_other = await other.send_code_request(PHONE_A)
        # Another phone's hash, an unknown hash, another device's hash.
        for phone, code_hash in (
            (PHONE_A, sent_b.phone_code_hash),
            (PHONE_A, "0123456789abcdef01"),
            (PHONE_A, sent_other.phone_code_hash),
        ):
            with pytest.raises(errors.PhoneCodeExpiredError):
                await client(functions.auth.SignInRequest(phone, code_hash, CODE))
        with pytest.raises(errors.PhoneCodeHashEmptyError):
            await client(functions.auth.SignInRequest(PHONE_A, "", CODE))
        with pytest.raises(errors.PhoneCodeEmptyError):
            await client(functions.auth.SignInRequest(PHONE_A, sent_a.phone_code_hash, ""))
        with pytest.raises(errors.PhoneNumberInvalidError):
            await client(functions.auth.SignInRequest("12", sent_a.phone_code_hash, CODE))
        # auth.signUp before auth.signIn accepted the code.
        with pytest.raises(errors.PhoneCodeInvalidError):
            await client(functions.auth.SignUpRequest(PHONE_A, sent_a.phone_code_hash, "A", ""))
        # The hashes were not spent by all that.
        with pytest.raises(errors.PhoneNumberUnoccupiedError):
            await client.sign_in(PHONE_A, CODE, phone_code_hash=sent_a.phone_code_hash)
        with pytest.raises(errors.FirstNameInvalidError):
            await client(functions.auth.SignUpRequest(PHONE_A, sent_a.phone_code_hash, "  ", ""))
        with pytest.raises(errors.FirstNameInvalidError):
            await client(
                functions.auth.SignUpRequest(PHONE_A, sent_a.phone_code_hash, "x" * 65, "")
            )
        # Two devices verified codes for one new phone: the second sign-up is refused.
        with pytest.raises(errors.PhoneNumberUnoccupiedError):
            await other.sign_in(PHONE_A, CODE, phone_code_hash=sent_other.phone_code_hash)
        await client(functions.auth.SignUpRequest(PHONE_A, sent_a.phone_code_hash, "A", ""))
        with pytest.raises(errors.PhoneNumberOccupiedError):
            await other(functions.auth.SignUpRequest(PHONE_A, sent_other.phone_code_hash, "A", ""))
        # A code that signed someone in is spent.
        with pytest.raises(errors.PhoneCodeExpiredError):
            await client(functions.auth.SignInRequest(PHONE_A, sent_a.phone_code_hash, CODE))


async def test_resend_and_cancel(start_server: Any, telethon_for: Telethon) -> None:
    async with dev_server(start_server) as srv:
        client = await new_client(telethon_for, srv)
        sent = await client.send_code_request(PHONE_A)
        with pytest.raises(errors.FloodWaitError):  # before sentCode.timeout
            await client(functions.auth.ResendCodeRequest(PHONE_A, sent.phone_code_hash))
    async with dev_server(start_server, resend_timeout_seconds=0) as srv:
        client = await new_client(telethon_for, srv)
        sent = await client.send_code_request(PHONE_A)
        again = await client(functions.auth.ResendCodeRequest(PHONE_A, sent.phone_code_hash))
        assert again.phone_code_hash == sent.phone_code_hash
        assert await client(functions.auth.CancelCodeRequest(PHONE_A, sent.phone_code_hash))
        with pytest.raises(errors.PhoneCodeExpiredError):
            await client.sign_in(PHONE_A, CODE, phone_code_hash=sent.phone_code_hash)
        with pytest.raises(errors.PhoneCodeExpiredError):
            await client(functions.auth.ResendCodeRequest(PHONE_A, sent.phone_code_hash))
        # A newer code replaces this device's older one.
        first = await client.send_code_request(PHONE_B)
        second = await client(functions.auth.SendCodeRequest(PHONE_B, 1, "x", types.CodeSettings()))
        with pytest.raises(errors.PhoneCodeExpiredError):
            await client.sign_in(PHONE_B, CODE, phone_code_hash=first.phone_code_hash)
        with pytest.raises(errors.PhoneNumberUnoccupiedError):
            await client.sign_in(PHONE_B, CODE, phone_code_hash=second.phone_code_hash)


async def test_send_code_limits(start_server: Any, telethon_for: Telethon) -> None:
    async with dev_server(start_server, send_code_per_phone=2, send_code_per_ip=3) as srv:
        client = await new_client(telethon_for, srv)

        async def send(phone: str) -> Any:
            # Raw requests: Telethon would turn a repeat into auth.resendCode, and
            # remembers a FLOOD_WAIT per request type.
            client._flood_waited_requests.clear()
            return await client(functions.auth.SendCodeRequest(phone, 1, "x", types.CodeSettings()))

        await send(PHONE_A)
        await send(PHONE_A)
        with pytest.raises(errors.FloodWaitError) as info:
            await send(PHONE_A)
        assert 0 < info.value.seconds <= srv.config.auth.send_window_seconds
        await send(PHONE_B)  # the 3rd counted from this address
        with pytest.raises(errors.FloodWaitError):
            await send("15550100003")


# --------------------------------------------------------------------------- account TTL


async def test_account_ttl(start_server: Any, telethon_for: Telethon) -> None:
    async with dev_server(start_server) as srv:
        client = await new_client(telethon_for, srv)
        with pytest.raises(errors.AuthKeyUnregisteredError):
            await client(functions.account.GetAccountTTLRequest())
        await sign_up(client, PHONE_A)
        assert (await client(functions.account.GetAccountTTLRequest())).days == 365
        assert await client(functions.account.SetAccountTTLRequest(types.AccountDaysTTL(180)))
        assert (await client(functions.account.GetAccountTTLRequest())).days == 180
        with pytest.raises(errors.TtlDaysInvalidError):
            await client(functions.account.SetAccountTTLRequest(types.AccountDaysTTL(5)))


# --------------------------------------------------------------------------- code in the app


async def test_login_code_arrives_from_777000_on_signed_in_devices(
    start_server: Any, telethon_for: Telethon
) -> None:
    """Telegram's sentCodeTypeApp: the code is a message from the service account."""
    async with dev_server(start_server) as srv:
        first = await new_client(telethon_for, srv)
        user = await sign_up(first, PHONE_A)  # (nobody signed in: no app delivery)
        got: list[Any] = []
        first.add_event_handler(lambda e: got.append(e.message), events.NewMessage())

        second = await new_client(telethon_for, srv)
        sent = await second.send_code_request(PHONE_A)
        assert isinstance(sent.type, types.auth.SentCodeTypeApp)
        deadline = asyncio.get_running_loop().time() + 10
        while not got and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        (message,) = got
        assert message.sender_id == 777000 and not message.out
        match = re.search(r"Login code: (\d+)\.", message.message)
        assert match is not None and match.group(1) == CODE
        assert message.entities and message.entities[0].length == len(CODE)
        me = await second.sign_in(PHONE_A, match.group(1), phone_code_hash=sent.phone_code_hash)
        assert me.id == user.id
        sender = await first.get_entity(777000)
        assert sender.first_name == "Telegram" and sender.verified


async def test_a_fresh_device_may_not_sign_out_the_others(
    start_server: Any, telethon_for: Telethon
) -> None:
    """Telegram's rule against a stolen code: a new sign-in cannot end older sessions."""
    async with dev_server(start_server) as srv:
        old = await new_client(telethon_for, srv)
        await sign_up(old, PHONE_A)
        fresh = await new_client(telethon_for, srv)
        await sign_in(fresh, PHONE_A)
        with pytest.raises(errors.RPCError) as info:
            await fresh(functions.auth.ResetAuthorizationsRequest())
        assert info.value.code == 406
        auths = (await fresh(functions.account.GetAuthorizationsRequest())).authorizations
        other = next(x for x in auths if not x.current)
        with pytest.raises(errors.RPCError) as info:
            await fresh(functions.account.ResetAuthorizationRequest(other.hash))
        assert info.value.code == 406
        assert await whoami(srv, old) != 0  # still signed in
