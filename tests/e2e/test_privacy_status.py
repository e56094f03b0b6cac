"""Privacy rules as others see them, and online status reaching contacts (Telethon)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from telethon import TelegramClient, errors, events, functions
from telethon.tl import types as tt

from teamgram.server import Server
from teamgram.service.status import service as status_service
from tests.e2e.accounts import another_device, signed_in, wait_for

Factory = Callable[..., Awaitable[TelegramClient]]

PHONE = tt.InputPrivacyKeyPhoneNumber()
LAST_SEEN = tt.InputPrivacyKeyStatusTimestamp()


async def named(client: TelegramClient, username: str) -> tt.User:
    await client(functions.account.UpdateUsernameRequest(username))
    return await client.get_me()


async def view(client: TelegramClient, username: str) -> tt.User:
    found = await client(functions.contacts.ResolveUsernameRequest(username=username))
    (user,) = found.users
    return user


def as_input(user: tt.User) -> tt.InputUser:
    return tt.InputUser(user_id=user.id, access_hash=user.access_hash)


async def set_privacy(
    client: TelegramClient, key: object, *rules: object
) -> tt.account.PrivacyRules:
    return await client(functions.account.SetPrivacyRequest(key=key, rules=list(rules)))


async def test_default_privacy_rules(server: Server, telethon_for: Factory) -> None:
    a, _ua = await signed_in(server, telethon_for, "Alice")
    phone = await a(functions.account.GetPrivacyRequest(PHONE))
    assert [type(r) for r in phone.rules] == [
        tt.PrivacyValueAllowContacts,
        tt.PrivacyValueDisallowAll,
    ]
    last_seen = await a(functions.account.GetPrivacyRequest(LAST_SEEN))
    assert [type(r) for r in last_seen.rules] == [tt.PrivacyValueAllowAll]
    photo = await a(functions.account.GetPrivacyRequest(tt.InputPrivacyKeyProfilePhoto()))
    assert [type(r) for r in photo.rules] == [tt.PrivacyValueAllowAll]


async def test_phone_privacy(server: Server, telethon_for: Factory) -> None:
    a, ua = await signed_in(server, telethon_for, "Alice", phone="15551001")
    b, _ub = await signed_in(server, telethon_for, "Bob", phone="15551002")
    c, _uc = await signed_in(server, telethon_for, "Carol", phone="15551003")
    await named(a, "alice_phone")
    bob = await view(a, (await named(b, "bob_phone")).username)
    carol = await view(a, (await named(c, "carol_phone")).username)

    # Default "my contacts": hidden from Bob until Alice adds him.
    assert (await view(b, "alice_phone")).phone is None
    await a(functions.contacts.AddContactRequest(as_input(bob), "Bob", "", ""))
    assert (await view(b, "alice_phone")).phone == "15551001"
    assert (await view(c, "alice_phone")).phone is None

    # Nobody: hidden even from her contact.
    await set_privacy(a, PHONE, tt.InputPrivacyValueDisallowAll())
    assert (await view(b, "alice_phone")).phone is None
    # An exception by name shows it to Bob only.
    rules = await set_privacy(
        a, PHONE, tt.InputPrivacyValueAllowUsers([as_input(bob)]), tt.InputPrivacyValueDisallowAll()
    )
    assert [u.id for u in rules.users] == [bob.id]
    assert (await view(b, "alice_phone")).phone == "15551001"
    assert (await view(c, "alice_phone")).phone is None
    got = await a(functions.account.GetPrivacyRequest(PHONE))
    assert isinstance(got.rules[0], tt.PrivacyValueAllowUsers) and got.rules[0].users == [bob.id]

    # addContact(add_phone_privacy_exception) lets Carol see it despite "nobody".
    await set_privacy(a, PHONE, tt.InputPrivacyValueDisallowAll())
    await a(
        functions.contacts.AddContactRequest(
            as_input(carol), "Carol", "", "", add_phone_privacy_exception=True
        )
    )
    assert (await view(c, "alice_phone")).phone == "15551001"
    assert (await view(b, "alice_phone")).phone is None

    # Who saved the number keeps seeing it.
    res = await b(
        functions.contacts.ImportContactsRequest(
            [tt.InputPhoneContact(client_id=1, phone="+15551001", first_name="A", last_name="")]
        )
    )
    assert res.users[0].phone == "15551001"

    # A user in a rule must be given with this viewer's hash.
    with pytest.raises(errors.UserIdInvalidError):
        await set_privacy(
            a,
            PHONE,
            tt.InputPrivacyValueAllowUsers([tt.InputUser(ua.id + 1, 12345)]),
        )


async def test_last_seen_privacy(server: Server, telethon_for: Factory) -> None:
    a, _ua = await signed_in(server, telethon_for, "Alice")
    b, _ub = await signed_in(server, telethon_for, "Bob")
    await named(a, "alice_seen")
    await named(b, "bob_seen")
    assert await a(functions.account.UpdateStatusRequest(offline=False))
    assert isinstance((await view(b, "alice_seen")).status, tt.UserStatusOnline)
    own = await a.get_me()
    assert isinstance(own.status, tt.UserStatusOnline)

    await set_privacy(a, LAST_SEEN, tt.InputPrivacyValueDisallowAll())
    status = (await view(b, "alice_seen")).status
    assert isinstance(status, tt.UserStatusRecently) and not status.by_me

    # Reciprocity: Bob hides his own last seen, so he sees Alice's rounded, "by me".
    await set_privacy(a, LAST_SEEN, tt.InputPrivacyValueAllowAll())
    await set_privacy(b, LAST_SEEN, tt.InputPrivacyValueDisallowAll())
    status = (await view(b, "alice_seen")).status
    assert isinstance(status, tt.UserStatusRecently) and status.by_me

    # Offline: the exact time for those allowed.
    await set_privacy(b, LAST_SEEN, tt.InputPrivacyValueAllowAll())
    assert await a(functions.account.UpdateStatusRequest(offline=True))
    status = (await view(b, "alice_seen")).status
    assert isinstance(status, tt.UserStatusOffline)
    rec = await server.users.get(own.id)
    assert rec is not None and rec.last_seen_at == int(status.was_online.timestamp())


async def test_status_pushed_to_contacts(server: Server, telethon_for: Factory) -> None:
    a, ua = await signed_in(server, telethon_for, "Alice", phone="15552001")
    b, _ub = await signed_in(server, telethon_for, "Bob")
    c, _uc = await signed_in(server, telethon_for, "Carol")
    statuses: dict[str, list[tt.UpdateUserStatus]] = {"b": [], "c": []}

    def collect(name: str) -> Callable[[tt.UpdateUserStatus], Awaitable[None]]:
        async def handler(update: tt.UpdateUserStatus) -> None:
            if update.user_id == ua.id:
                statuses[name].append(update)

        return handler

    b.add_event_handler(collect("b"), events.Raw(tt.UpdateUserStatus))
    c.add_event_handler(collect("c"), events.Raw(tt.UpdateUserStatus))
    # Telethon's own event type sees them too.
    user_updates: list[events.UserUpdate.Event] = []

    async def on_user_update(event: events.UserUpdate.Event) -> None:
        if event.user_id == ua.id:
            user_updates.append(event)

    b.add_event_handler(on_user_update, events.UserUpdate)
    await b(
        functions.contacts.ImportContactsRequest(
            [tt.InputPhoneContact(client_id=1, phone="15552001", first_name="Al", last_name="")]
        )
    )

    await a(functions.account.UpdateStatusRequest(offline=False))
    await wait_for(lambda: statuses["b"])
    assert isinstance(statuses["b"][0].status, tt.UserStatusOnline)
    await wait_for(lambda: user_updates)
    assert user_updates[0].online

    # A repeated "online" while online is not news.
    await a(functions.account.UpdateStatusRequest(offline=False))

    # Disconnecting (the last connection) makes Alice offline.
    await a.disconnect()
    await wait_for(lambda: len(statuses["b"]) == 2)
    offline = statuses["b"][1].status
    assert isinstance(offline, tt.UserStatusOffline)
    rec = await server.users.get(ua.id)
    assert rec is not None and rec.last_seen_at == int(offline.was_online.timestamp())
    assert statuses["c"] == []  # Carol does not have Alice as a contact


async def test_status_privacy_change_reaches_contacts_and_devices(
    server: Server, telethon_for: Factory
) -> None:
    a1, ua = await signed_in(server, telethon_for, "Alice", phone="15553001")
    a2 = await another_device(server, telethon_for, ua.id)
    b, _ub = await signed_in(server, telethon_for, "Bob")
    pushed: list[tt.UpdateUserStatus] = []
    privacy: list[tt.UpdatePrivacy] = []

    async def on_status(update: tt.UpdateUserStatus) -> None:
        pushed.append(update)

    async def on_privacy(update: tt.UpdatePrivacy) -> None:
        privacy.append(update)

    b.add_event_handler(on_status, events.Raw(tt.UpdateUserStatus))
    a2.add_event_handler(on_privacy, events.Raw(tt.UpdatePrivacy))
    await b(
        functions.contacts.ImportContactsRequest(
            [tt.InputPhoneContact(client_id=1, phone="15553001", first_name="Al", last_name="")]
        )
    )
    await a1(functions.account.UpdateStatusRequest(offline=False))
    await wait_for(lambda: pushed)

    await set_privacy(a1, LAST_SEEN, tt.InputPrivacyValueDisallowAll())
    await wait_for(lambda: len(pushed) == 2 and privacy)
    assert isinstance(pushed[1].status, tt.UserStatusRecently)
    assert isinstance(privacy[0].key, tt.PrivacyKeyStatusTimestamp)
    assert [type(r) for r in privacy[0].rules] == [tt.PrivacyValueDisallowAll]

    # Hidden: going offline is not pushed (it would leak what the rule hides).
    await a1(functions.account.UpdateStatusRequest(offline=True))
    # A push queued for Bob would reach him before this answer; then let it dispatch.
    await b(functions.updates.GetStateRequest())
    await asyncio.sleep(0.2)
    assert len(pushed) == 2


async def test_online_runs_out(
    server: Server, telethon_for: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without another updateStatus, "online" ends at its expiry (clients repeat it)."""
    monkeypatch.setattr(status_service, "ONLINE_TTL", 1)
    a, ua = await signed_in(server, telethon_for, "Alice", phone="15554001")
    b, _ub = await signed_in(server, telethon_for, "Bob")
    pushed: list[tt.UpdateUserStatus] = []

    async def on_status(update: tt.UpdateUserStatus) -> None:
        pushed.append(update)

    b.add_event_handler(on_status, events.Raw(tt.UpdateUserStatus))
    await b(
        functions.contacts.ImportContactsRequest(
            [tt.InputPhoneContact(client_id=1, phone="15554001", first_name="Al", last_name="")]
        )
    )
    await a(functions.account.UpdateStatusRequest(offline=False))
    await wait_for(lambda: len(pushed) == 2, timeout=10)
    online, offline = (u.status for u in pushed)
    assert isinstance(online, tt.UserStatusOnline) and isinstance(offline, tt.UserStatusOffline)
    assert offline.was_online == online.expires
    assert not server.status.is_online(ua.id)
