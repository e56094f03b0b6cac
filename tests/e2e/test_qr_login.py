"""QR login end to end with Telethon, between two devices of one account.

The new device exports a login token (``client.qr_login()``) and waits; the
signed-in device accepts it (auth.acceptLoginToken, what scanning the QR code
does); the new device hears updateLoginToken, exports again and receives
auth.loginTokenSuccess.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from telethon import TelegramClient, errors, functions, types

from tests.e2e.accounts import new_client

Telethon = Callable[..., Awaitable[TelegramClient]]

CODE = "97531"
PHONE = "15550300001"
WAIT = 10.0


async def sign_up(client: TelegramClient, phone: str = PHONE) -> Any:
    sent = await client.send_code_request(phone)
    with pytest.raises(errors.PhoneNumberUnoccupiedError):
        await client.sign_in(phone, CODE, phone_code_hash=sent.phone_code_hash)
    auth = await client(functions.auth.SignUpRequest(phone, sent.phone_code_hash, "Q", "R"))
    return await client._on_login(auth.user)


async def signed_in(client: TelegramClient) -> bool:
    try:
        await client(functions.account.GetAuthorizationsRequest())
    except errors.AuthKeyUnregisteredError:
        return False
    return True


async def test_qr_login_between_two_devices(start_server: Any, telethon_for: Telethon) -> None:
    async with start_server(dev_login_code=CODE) as srv:
        phone = await new_client(telethon_for, srv)
        user = await sign_up(phone)
        desktop = await new_client(telethon_for, srv, device_model="QR desktop", app_version="9")

        qr = await desktop.qr_login()
        assert qr.url.startswith("tg://login?token=")
        ttl = srv.config.auth.login_token_ttl_seconds
        assert abs(qr.expires.timestamp() - (time.time() + ttl)) <= 2
        waiting = asyncio.create_task(qr.wait(timeout=WAIT))
        await asyncio.sleep(0.1)  # the handler for updateLoginToken is in place
        assert not await signed_in(desktop)

        accepted = await phone(functions.auth.AcceptLoginTokenRequest(qr.token))
        assert isinstance(accepted, types.Authorization)
        assert (accepted.device_model, accepted.app_version) == ("QR desktop", "9")
        assert not accepted.current and accepted.hash != 0

        me = await asyncio.wait_for(waiting, WAIT)
        assert me.id == user.id
        assert await signed_in(desktop)
        auths = (await phone(functions.account.GetAuthorizationsRequest())).authorizations
        assert sorted(a.device_model for a in auths if not a.current) == ["QR desktop"]
        assert [a.hash for a in auths if not a.current] == [accepted.hash]

        # The token is spent.
        with pytest.raises(errors.AuthTokenInvalidError):
            await phone(functions.auth.AcceptLoginTokenRequest(qr.token))


async def test_bad_tokens(start_server: Any, telethon_for: Telethon) -> None:
    async with start_server(dev_login_code=CODE, auth={"login_token_ttl_seconds": 1}) as srv:
        phone = await new_client(telethon_for, srv)
        await sign_up(phone)
        with pytest.raises(errors.AuthTokenInvalidError):
            await phone(functions.auth.AcceptLoginTokenRequest(b"\x01" * 32))

        late = await new_client(telethon_for, srv)
        qr = await late.qr_login()
        await asyncio.sleep(2.1)
        with pytest.raises(errors.AuthTokenExpiredError):
            await phone(functions.auth.AcceptLoginTokenRequest(qr.token))
        assert not await signed_in(late)
        srv.authsession.config.login_token_ttl_seconds = 60  # whole seconds: 1 may be 0

        # Accepting needs a signed-in device.
        other = await new_client(telethon_for, srv)
        qr2 = await other.qr_login()
        with pytest.raises(errors.AuthKeyUnregisteredError):
            await late(functions.auth.AcceptLoginTokenRequest(qr2.token))

        # Accepted once only.
        await phone(functions.auth.AcceptLoginTokenRequest(qr2.token))
        with pytest.raises(errors.AuthTokenAlreadyAcceptedError):
            await phone(functions.auth.AcceptLoginTokenRequest(qr2.token))


async def test_import_login_token_answers_like_export(
    start_server: Any, telethon_for: Telethon
) -> None:
    async with start_server(dev_login_code=CODE) as srv:
        phone = await new_client(telethon_for, srv)
        user = await sign_up(phone)
        new = await new_client(telethon_for, srv)
        exported = await new(functions.auth.ExportLoginTokenRequest(1, "x", []))
        assert isinstance(exported, types.auth.LoginToken)
        again = await new(functions.auth.ImportLoginTokenRequest(exported.token))
        assert isinstance(again, types.auth.LoginToken) and again.token == exported.token
        await phone(functions.auth.AcceptLoginTokenRequest(exported.token))
        done = await new(functions.auth.ImportLoginTokenRequest(exported.token))
        assert isinstance(done, types.auth.LoginTokenSuccess)
        assert done.authorization.user.id == user.id
        assert await signed_in(new)
        with pytest.raises(errors.AuthTokenInvalidError):
            await phone(functions.auth.ImportLoginTokenRequest(exported.token))


async def test_qr_login_with_a_password(start_server: Any, telethon_for: Telethon) -> None:
    async with start_server(dev_login_code=CODE) as srv:
        phone = await new_client(telethon_for, srv)
        user = await sign_up(phone)
        assert await phone.edit_2fa(new_password="qr secret")
        desktop = await new_client(telethon_for, srv)
        qr = await desktop.qr_login()
        waiting = asyncio.create_task(qr.wait(timeout=WAIT))
        await asyncio.sleep(0.1)
        accepted = await phone(functions.auth.AcceptLoginTokenRequest(qr.token))
        assert accepted.password_pending
        with pytest.raises(errors.SessionPasswordNeededError):
            await asyncio.wait_for(waiting, WAIT)
        assert not await signed_in(desktop)
        assert (await desktop.sign_in(password="qr secret")).id == user.id
        assert await signed_in(desktop)
