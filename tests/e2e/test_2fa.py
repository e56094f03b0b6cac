"""Two-step verification (SRP) end to end with Telethon: set, sign in with, change,
remove, and the limits on guessing.

A sign-in with the right code on an account with a password binds the key with the
password pending: 401 SESSION_PASSWORD_NEEDED, every call but the 2FA ones is
refused, and auth.checkPassword finishes the sign-in.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from telethon import TelegramClient, errors, functions, types
from telethon import password as pwd_mod

from teamgram.server import Server
from tests.e2e.accounts import new_client

Telethon = Callable[..., Awaitable[TelegramClient]]

CODE = "13579"
PHONE = "15550200001"


async def sign_up(client: TelegramClient, phone: str = PHONE) -> Any:
    sent = await client.send_code_request(phone)
    with pytest.raises(errors.PhoneNumberUnoccupiedError):
        await client.sign_in(phone, CODE, phone_code_hash=sent.phone_code_hash)
    auth = await client(functions.auth.SignUpRequest(phone, sent.phone_code_hash, "Two", "Fa"))
    return await client._on_login(auth.user)


async def code_step(client: TelegramClient, phone: str = PHONE) -> None:
    """Sign in with the right code, which stops at the password."""
    sent = await client.send_code_request(phone)
    with pytest.raises(errors.SessionPasswordNeededError):
        await client.sign_in(phone, CODE, phone_code_hash=sent.phone_code_hash)


async def signed_in(client: TelegramClient) -> bool:
    try:
        await client(functions.account.GetAuthorizationsRequest())
    except errors.AuthKeyUnregisteredError:
        return False
    return True


async def test_set_sign_in_with_change_and_remove_password(
    start_server: Any, telethon_for: Telethon
) -> None:
    async with start_server(dev_login_code=CODE) as srv:
        main = await new_client(telethon_for, srv)
        user = await sign_up(main)
        pwd = await main(functions.account.GetPasswordRequest())
        assert not pwd.has_password and pwd.srp_id is None

        assert await main.edit_2fa(new_password="correct horse", hint="the horse")
        pwd = await main(functions.account.GetPasswordRequest())
        assert pwd.has_password and pwd.hint == "the horse" and pwd.srp_B and pwd.srp_id

        # A new device: the code is right, the password is still needed.
        dev = await new_client(telethon_for, srv, device_model="2FA laptop")
        await code_step(dev)
        assert not await signed_in(dev)
        auths = (await main(functions.account.GetAuthorizationsRequest())).authorizations
        pending = [a for a in auths if a.password_pending]
        assert [a.device_model for a in pending] == ["2FA laptop"]
        # getPassword works for the pending device, with its hint.
        assert (await dev(functions.account.GetPasswordRequest())).hint == "the horse"
        with pytest.raises(errors.PasswordHashInvalidError):
            await dev.sign_in(password="wrong horse")
        assert not await signed_in(dev)
        me = await dev.sign_in(password="correct horse")
        assert me.id == user.id
        assert await signed_in(dev)
        auths = (await main(functions.account.GetAuthorizationsRequest())).authorizations
        assert len(auths) == 2 and not any(a.password_pending for a in auths)

        # The password's settings need the password.
        settings = await main(
            functions.account.GetPasswordSettingsRequest(
                await _check(main, "correct horse"),
            )
        )
        assert isinstance(settings, types.account.PasswordSettings)
        with pytest.raises(errors.PasswordHashInvalidError):
            await main(functions.account.GetPasswordSettingsRequest(await _check(main, "nope")))

        # Change: the current password must be right.
        with pytest.raises(errors.PasswordHashInvalidError):
            await main.edit_2fa(current_password="wrong", new_password="battery staple")
        assert await main.edit_2fa(current_password="correct horse", new_password="battery staple")
        dev2 = await new_client(telethon_for, srv)
        await code_step(dev2)
        with pytest.raises(errors.PasswordHashInvalidError):
            await dev2.sign_in(password="correct horse")
        assert (await dev2.sign_in(password="battery staple")).id == user.id

        # Setting a password needs the current one when one exists.
        with pytest.raises(errors.PasswordHashInvalidError):
            await main.edit_2fa(new_password="sneaky")

        # Remove: code alone signs in again.
        assert await main.edit_2fa(current_password="battery staple")
        assert not (await main(functions.account.GetPasswordRequest())).has_password
        dev3 = await new_client(telethon_for, srv)
        sent = await dev3.send_code_request(PHONE)
        assert (await dev3.sign_in(PHONE, CODE, phone_code_hash=sent.phone_code_hash)).id == (
            user.id
        )


async def _check(client: TelegramClient, password: str) -> Any:
    pwd = await client(functions.account.GetPasswordRequest())
    return pwd_mod.compute_check(pwd, password)


async def test_password_pending_device_is_not_signed_in(
    start_server: Any, telethon_for: Telethon
) -> None:
    async with start_server(dev_login_code=CODE) as srv:
        main = await new_client(telethon_for, srv)
        await sign_up(main)
        assert await main.edit_2fa(new_password="pw")
        dev = await new_client(telethon_for, srv)
        await code_step(dev)
        for request in (
            functions.account.GetAuthorizationsRequest(),
            functions.account.GetAccountTTLRequest(),
            functions.auth.ResetAuthorizationsRequest(),
        ):
            with pytest.raises(errors.AuthKeyUnregisteredError):
                await dev(request)
        # Giving up: auth.logOut drops the half-finished sign-in.
        await dev(functions.auth.LogOutRequest())
        with pytest.raises(errors.AuthKeyUnregisteredError):
            await dev(functions.account.GetPasswordRequest())
        auths = (await main(functions.account.GetAuthorizationsRequest())).authorizations
        assert len(auths) == 1


async def test_wrong_passwords_are_flood_wait(start_server: Any, telethon_for: Telethon) -> None:
    async with start_server(dev_login_code=CODE, auth={"max_password_attempts": 3}) as srv:
        main = await new_client(telethon_for, srv)
        await sign_up(main)
        assert await main.edit_2fa(new_password="pw")
        dev = await new_client(telethon_for, srv)
        await code_step(dev)
        for _ in range(2):
            with pytest.raises(errors.PasswordHashInvalidError):
                await dev.sign_in(password="guess")
        with pytest.raises(errors.FloodWaitError) as info:
            await dev.sign_in(password="guess")
        assert info.value.seconds == srv.config.auth.failure_flood_wait_seconds
        dev._flood_waited_requests.clear()
        with pytest.raises(errors.FloodWaitError):
            await dev.sign_in(password="pw")


async def test_password_survives_a_restart(start_server: Any, telethon_for: Telethon) -> None:
    async with start_server(dev_login_code=CODE) as srv:
        main = await new_client(telethon_for, srv)
        await sign_up(main)
        assert await main.edit_2fa(new_password="kept")
        config = srv.config
    srv = Server(config)
    await srv.start()
    try:
        dev = await new_client(telethon_for, srv)
        await code_step(dev)
        await dev.sign_in(password="kept")
        assert await signed_in(dev)
        await dev.disconnect()
    finally:
        await srv.stop()


async def test_password_recovery_is_not_available(
    start_server: Any, telethon_for: Telethon
) -> None:
    """No mail goes out from this server: Telegram's PASSWORD_RECOVERY_NA."""
    async with start_server(dev_login_code=CODE) as srv:
        main = await new_client(telethon_for, srv)
        await sign_up(main)
        with pytest.raises(errors.PasswordEmptyError):
            await main(functions.auth.RequestPasswordRecoveryRequest())
        assert await main.edit_2fa(new_password="pw", email=None)
        dev = await new_client(telethon_for, srv)
        await code_step(dev)
        with pytest.raises(errors.PasswordRecoveryNaError):
            await dev(functions.auth.RequestPasswordRecoveryRequest())
