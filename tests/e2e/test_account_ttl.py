"""Idle accounts are deleted after their TTL (account.setAccountTTL), as on Telegram."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import pytest
from telethon import TelegramClient, errors, functions
from telethon.tl import types as tt

from teamgram.server import Server
from tests.e2e.accounts import signed_in

Factory = Callable[..., Awaitable[TelegramClient]]
DAY = 86400


async def test_idle_accounts_past_their_ttl_are_deleted(
    server: Server, telethon_for: Factory
) -> None:
    idle, idle_user = await signed_in(server, telethon_for, "Idle")
    phone = idle_user.phone
    await idle(functions.account.SetAccountTTLRequest(tt.AccountDaysTTL(days=30)))
    patient, patient_user = await signed_in(server, telethon_for, "Patient")  # 365 days
    online, online_user = await signed_in(server, telethon_for, "Online")
    await online(functions.account.SetAccountTTLRequest(tt.AccountDaysTTL(days=30)))
    now = int(time.time())
    long_ago = now - 40 * DAY
    for rec in (idle_user, patient_user, online_user):
        await server.status.set_offline(rec.id, long_ago)
        await server.users._update_row(rec.id, last_seen_at=long_ago, created_at=long_ago)
    await server.status.set_online(online_user.id)

    assert await server.reaper.run_once(now) == [idle_user.id]

    with pytest.raises(errors.AuthKeyUnregisteredError):
        await idle(functions.users.GetUsersRequest([tt.InputUserSelf()]))
    gone = await server.users.get(idle_user.id)
    assert gone is not None and gone.deleted and not gone.first_name and gone.username is None
    # The number is free for a new account; the others are untouched.
    again = await server.users.create(phone, "New")
    assert again.id != idle_user.id
    assert (await patient.get_me()).id == patient_user.id
    assert (await online.get_me()).id == online_user.id
    assert await server.reaper.run_once(now) == []
