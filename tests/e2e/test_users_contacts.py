"""Users, profiles, usernames, contacts and blocks, driven by real Telethon clients.

Clients are signed in with :mod:`tests.e2e.accounts` (no ``auth.*`` RPCs), so
these tests depend only on the accounts area.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from telethon import TelegramClient, errors, events, functions
from telethon.tl import types as tt

from teamgram.server import Server
from teamgram.service.biz.contacts import contacts_hash
from tests.e2e.accounts import another_device, signed_in, wait_for

Factory = Callable[..., Awaitable[TelegramClient]]


async def resolve(client: TelegramClient, username: str) -> tt.User:
    found = await client(functions.contacts.ResolveUsernameRequest(username=username))
    assert isinstance(found.peer, tt.PeerUser)
    (user,) = found.users
    return user


def input_user(user: tt.User) -> tt.InputUser:
    return tt.InputUser(user_id=user.id, access_hash=user.access_hash)


async def test_get_me_and_update_state(server: Server, telethon_for: Factory) -> None:
    a, rec = await signed_in(server, telethon_for, "Alice", "Adams", phone="15550001")
    me = await a.get_me()
    assert me.is_self and me.id == rec.id
    assert (me.first_name, me.last_name, me.phone) == ("Alice", "Adams", "15550001")
    state = await a(functions.updates.GetStateRequest())
    assert (state.pts, state.qts, state.seq) == (1, 0, 0)
    diff = await a(
        functions.updates.GetDifferenceRequest(pts=state.pts, date=state.date, qts=state.qts)
    )
    assert isinstance(diff, tt.updates.DifferenceEmpty)
    full = await a(functions.users.GetFullUserRequest(tt.InputUserSelf()))
    assert full.full_user.id == rec.id and not full.full_user.blocked
    assert isinstance(full.full_user.notify_settings, tt.PeerNotifySettings)


async def test_profile_and_username_seen_by_another_user(
    server: Server, telethon_for: Factory
) -> None:
    a, ua = await signed_in(server, telethon_for, "Alice")
    b, _ub = await signed_in(server, telethon_for, "Bob")
    me = await a(
        functions.account.UpdateProfileRequest(
            first_name="Alicia", last_name="Smith", about="Hello there"
        )
    )
    assert (me.first_name, me.last_name) == ("Alicia", "Smith")
    assert await a(functions.account.CheckUsernameRequest("alicia_s"))
    me = await a(functions.account.UpdateUsernameRequest("Alicia_S"))
    assert me.username == "Alicia_S"

    seen = await resolve(b, "alicia_s")  # case-insensitive
    assert seen.id == ua.id and seen.username == "Alicia_S"
    assert (seen.first_name, seen.last_name) == ("Alicia", "Smith")
    assert not seen.is_self and not seen.contact and seen.phone is None
    (again,) = await b(functions.users.GetUsersRequest([input_user(seen)]))
    assert again.first_name == "Alicia" and again.access_hash == seen.access_hash
    full = await b(functions.users.GetFullUserRequest(input_user(seen)))
    assert full.full_user.about == "Hello there"
    assert [u.id for u in full.users] == [ua.id]

    # Telethon's own resolution path works too.
    entity = await b.get_entity("alicia_s")
    assert entity.id == ua.id


async def test_profile_errors(server: Server, telethon_for: Factory) -> None:
    a, _ua = await signed_in(server, telethon_for, "Alice")
    b, _ub = await signed_in(server, telethon_for, "Bob")
    with pytest.raises(errors.FirstNameInvalidError):
        await a(functions.account.UpdateProfileRequest(first_name="   "))
    with pytest.raises(errors.AboutTooLongError):
        await a(functions.account.UpdateProfileRequest(about="x" * 71))
    for bad in ("abc", "1abcde", "_abcde", "abcde_", "ab__cd", "abc-def", "a" * 33):
        with pytest.raises(errors.UsernameInvalidError):
            await a(functions.account.UpdateUsernameRequest(bad))
        with pytest.raises(errors.UsernameInvalidError):
            await a(functions.account.CheckUsernameRequest(bad))
    await a(functions.account.UpdateUsernameRequest("taken_name"))
    with pytest.raises(errors.UsernameNotModifiedError):
        await a(functions.account.UpdateUsernameRequest("taken_name"))
    assert not await b(functions.account.CheckUsernameRequest("TAKEN_name"))
    with pytest.raises(errors.UsernameOccupiedError):
        await b(functions.account.UpdateUsernameRequest("Taken_Name"))
    with pytest.raises(errors.UsernameNotOccupiedError):
        await b(functions.contacts.ResolveUsernameRequest("nobody_here"))
    with pytest.raises(errors.UsernameInvalidError):
        await b(functions.contacts.ResolveUsernameRequest("bad name!"))
    # Removing frees it for someone else.
    me = await a(functions.account.UpdateUsernameRequest(""))
    assert me.username is None
    me = await b(functions.account.UpdateUsernameRequest("taken_name"))
    assert me.username == "taken_name"


async def test_other_device_and_contacts_get_update_user_name(
    server: Server, telethon_for: Factory
) -> None:
    a1, ua = await signed_in(server, telethon_for, "Alice")
    a2 = await another_device(server, telethon_for, ua.id)
    b, _ub = await signed_in(server, telethon_for, "Bob")
    got: dict[str, list[tt.UpdateUserName]] = {"a1": [], "a2": [], "b": []}

    def collect(name: str) -> Callable[[tt.UpdateUserName], Awaitable[None]]:
        async def handler(update: tt.UpdateUserName) -> None:
            got[name].append(update)

        return handler

    a1.add_event_handler(collect("a1"), events.Raw(tt.UpdateUserName))
    a2.add_event_handler(collect("a2"), events.Raw(tt.UpdateUserName))
    b.add_event_handler(collect("b"), events.Raw(tt.UpdateUserName))
    # Bob has Alice as a contact (by phone, without a saved name of his own).
    await b(
        functions.contacts.ImportContactsRequest(
            [tt.InputPhoneContact(client_id=1, phone="+" + ua.phone, first_name="", last_name="")]
        )
    )

    await a1(functions.account.UpdateProfileRequest(first_name="Alicia", last_name="K"))
    await wait_for(lambda: got["a2"] and got["b"])
    (upd,) = got["a2"]
    assert (upd.user_id, upd.first_name, upd.last_name) == (ua.id, "Alicia", "K")
    assert got["b"][0].first_name == "Alicia"

    await a1(functions.account.UpdateUsernameRequest("alicia_k"))
    await wait_for(lambda: len(got["a2"]) == 2 and len(got["b"]) == 2)
    assert [u.username for u in got["a2"][1].usernames] == ["alicia_k"]
    assert got["a2"][1].usernames[0].editable
    assert [u.username for u in got["b"][1].usernames] == ["alicia_k"]
    assert not got["b"][1].usernames[0].editable
    assert got["a1"] == []  # the calling session has the answer instead


async def test_import_contacts_mutual_and_hash(server: Server, telethon_for: Factory) -> None:
    a, _ua = await signed_in(server, telethon_for, "Alice", phone="15550101")
    b, ub = await signed_in(server, telethon_for, "Bob", phone="15550102")

    res = await a(
        functions.contacts.ImportContactsRequest(
            [
                tt.InputPhoneContact(
                    client_id=7, phone="+1 555 0102", first_name="Bobby", last_name=""
                ),
                tt.InputPhoneContact(
                    client_id=8, phone="+15559999", first_name="Ghost", last_name=""
                ),
            ]
        )
    )
    assert [(i.user_id, i.client_id) for i in res.imported] == [(ub.id, 7)]
    assert res.retry_contacts == []
    (bob,) = res.users
    assert bob.contact and not bob.mutual_contact
    assert bob.first_name == "Bobby"  # the name Alice saved
    assert bob.phone == "15550102"  # Alice knows the number she imported
    # Messageable at once: the returned hash is valid for Alice.
    (again,) = await a(functions.users.GetUsersRequest([input_user(bob)]))
    assert again.id == ub.id

    res = await b(
        functions.contacts.ImportContactsRequest(
            [tt.InputPhoneContact(client_id=1, phone="15550101", first_name="Al", last_name="")]
        )
    )
    (alice,) = res.users
    assert alice.contact and alice.mutual_contact

    contacts = await a(functions.contacts.GetContactsRequest(hash=0))
    assert isinstance(contacts, tt.contacts.Contacts)
    assert [(c.user_id, c.mutual) for c in contacts.contacts] == [(ub.id, True)]
    client_hash = contacts_hash(
        [contacts.saved_count, *sorted(c.user_id for c in contacts.contacts)]
    )
    not_modified = await a(functions.contacts.GetContactsRequest(hash=client_hash))
    assert isinstance(not_modified, tt.contacts.ContactsNotModified)
    ids = await a(functions.contacts.GetContactIDsRequest(hash=0))
    assert ids == [ub.id]
    statuses = await a(functions.contacts.GetStatusesRequest())
    assert [s.user_id for s in statuses] == [ub.id]

    # Delete: the answer carries Bob as a non-contact; the hash changes.
    upd = await a(functions.contacts.DeleteContactsRequest([input_user(bob)]))
    assert [(u.id, u.contact) for u in upd.users] == [(ub.id, False)]
    contacts = await a(functions.contacts.GetContactsRequest(hash=client_hash))
    assert isinstance(contacts, tt.contacts.Contacts) and contacts.contacts == []
    (alice,) = await b(functions.users.GetUsersRequest([input_user(alice)]))
    assert alice.contact and not alice.mutual_contact


async def test_add_contact_by_username_and_search(server: Server, telethon_for: Factory) -> None:
    a, ua = await signed_in(server, telethon_for, "Alice", "Walker")
    b, ub = await signed_in(server, telethon_for, "Bob", "Builder")
    c, _uc = await signed_in(server, telethon_for, "Carol", "Walker")
    await b(functions.account.UpdateUsernameRequest("bob_builder"))
    await c(functions.account.UpdateUsernameRequest("carol_w"))
    bob = await resolve(a, "bob_builder")

    upd = await a(
        functions.contacts.AddContactRequest(
            id=input_user(bob), first_name="Bob", last_name="B", phone=""
        )
    )
    assert isinstance(upd, tt.Updates)
    (bob,) = upd.users
    assert bob.contact and bob.last_name == "B"
    assert bob.phone is None  # default privacy: contacts only, and Bob has not added Alice

    found = await a(functions.contacts.SearchRequest(q="bob", limit=10))
    assert [p.user_id for p in found.my_results] == [ub.id]
    assert found.results == []
    found = await a(functions.contacts.SearchRequest(q="carol_", limit=10))
    assert found.my_results == [] and len(found.results) == 1
    (carol,) = [u for u in found.users if u.id == found.results[0].user_id]
    assert carol.username == "carol_w"
    found = await a(functions.contacts.SearchRequest(q="walker", limit=10))
    assert [p.user_id for p in found.results] == [carol.id]  # by name, has a username
    found = await b(functions.contacts.SearchRequest(q="alice", limit=10))
    assert found.results == []  # no username: not found by name by strangers
    with pytest.raises(errors.UserIdInvalidError):
        await a(
            functions.contacts.AddContactRequest(
                id=tt.InputUser(user_id=ua.id + 999, access_hash=1),
                first_name="X",
                last_name="",
                phone="",
            )
        )


async def test_block_unblock(server: Server, telethon_for: Factory) -> None:
    a1, ua = await signed_in(server, telethon_for, "Alice")
    a2 = await another_device(server, telethon_for, ua.id)
    b, _ub = await signed_in(server, telethon_for, "Bob")
    await b(functions.account.UpdateUsernameRequest("bob_blocked"))
    bob = await resolve(a1, "bob_blocked")
    seen: list[tt.UpdatePeerBlocked] = []

    async def on_blocked(update: tt.UpdatePeerBlocked) -> None:
        seen.append(update)

    a2.add_event_handler(on_blocked, events.Raw(tt.UpdatePeerBlocked))
    peer = tt.InputPeerUser(user_id=bob.id, access_hash=bob.access_hash)
    assert await a1(functions.contacts.BlockRequest(id=peer))
    await wait_for(lambda: seen)
    assert seen[0].blocked and seen[0].peer_id == tt.PeerUser(bob.id)

    blocked = await a1(functions.contacts.GetBlockedRequest(offset=0, limit=10))
    assert isinstance(blocked, tt.contacts.Blocked)
    assert [p.peer_id.user_id for p in blocked.blocked] == [bob.id]
    assert [u.id for u in blocked.users] == [bob.id]
    sliced = await a1(functions.contacts.GetBlockedRequest(offset=1, limit=10))
    assert isinstance(sliced, tt.contacts.BlockedSlice) and sliced.count == 1
    full = await a1(functions.users.GetFullUserRequest(input_user(bob)))
    assert full.full_user.blocked

    # Bob, blocked, sees Alice's last seen as "a long time ago".
    await a1(functions.account.UpdateUsernameRequest("alice_blocker"))
    alice = await resolve(b, "alice_blocker")
    assert isinstance(alice.status, tt.UserStatusEmpty)

    assert await a1(functions.contacts.UnblockRequest(id=peer))
    await wait_for(lambda: len(seen) == 2)
    assert not seen[1].blocked
    blocked = await a1(functions.contacts.GetBlockedRequest(offset=0, limit=10))
    assert blocked.blocked == []
    with pytest.raises(errors.ContactIdInvalidError):
        await a1(functions.contacts.BlockRequest(id=tt.InputPeerSelf()))


async def test_wrong_access_hash(server: Server, telethon_for: Factory) -> None:
    a, _ua = await signed_in(server, telethon_for, "Alice")
    b, _ub = await signed_in(server, telethon_for, "Bob")
    c, _uc = await signed_in(server, telethon_for, "Carol")
    await b(functions.account.UpdateUsernameRequest("bob_hash"))
    bob_for_a = await resolve(a, "bob_hash")
    bob_for_c = await resolve(c, "bob_hash")
    assert bob_for_a.access_hash != bob_for_c.access_hash  # per viewer

    wrong = tt.InputUser(user_id=bob_for_a.id, access_hash=bob_for_a.access_hash ^ 1)
    with pytest.raises(errors.UserIdInvalidError):
        await a(functions.users.GetUsersRequest([wrong]))
    with pytest.raises(errors.UserIdInvalidError):
        await a(functions.users.GetFullUserRequest(wrong))
    # A hash another viewer was given is no use to Alice.
    with pytest.raises(errors.UserIdInvalidError):
        await a(functions.users.GetUsersRequest([input_user(bob_for_c)]))
    bad_peer = tt.InputPeerUser(user_id=bob_for_a.id, access_hash=bob_for_c.access_hash)
    with pytest.raises(errors.PeerIdInvalidError):
        await a(functions.contacts.BlockRequest(id=bad_peer))
    with pytest.raises(errors.PeerIdInvalidError):
        await a(functions.account.GetNotifySettingsRequest(peer=tt.InputNotifyPeer(bad_peer)))
    (ok,) = await a(functions.users.GetUsersRequest([input_user(bob_for_a)]))
    assert ok.id == bob_for_a.id


async def test_notify_settings_and_devices(server: Server, telethon_for: Factory) -> None:
    a1, ua = await signed_in(server, telethon_for, "Alice")
    a2 = await another_device(server, telethon_for, ua.id)
    seen: list[tt.UpdateNotifySettings] = []

    async def on_notify(update: tt.UpdateNotifySettings) -> None:
        seen.append(update)

    a2.add_event_handler(on_notify, events.Raw(tt.UpdateNotifySettings))
    settings = await a1(functions.account.GetNotifySettingsRequest(peer=tt.InputNotifyUsers()))
    # Telethon reads mute_until as a datetime.
    assert settings.mute_until.timestamp() == 0 and settings.show_previews
    assert await a1(
        functions.account.UpdateNotifySettingsRequest(
            peer=tt.InputNotifyUsers(), settings=tt.InputPeerNotifySettings(mute_until=2**31 - 1)
        )
    )
    settings = await a1(functions.account.GetNotifySettingsRequest(peer=tt.InputNotifyUsers()))
    assert settings.mute_until.timestamp() == 2**31 - 1
    await wait_for(lambda: seen)
    assert isinstance(seen[0].peer, tt.NotifyUsers)
    assert await a1(
        functions.account.RegisterDeviceRequest(
            token_type=2, token="tok", app_sandbox=False, secret=b"", other_uids=[]
        )
    )
    assert await a1(
        functions.account.UnregisterDeviceRequest(token_type=2, token="tok", other_uids=[])
    )


async def test_accept_contact_and_delete_by_phones(server: Server, telethon_for: Factory) -> None:
    a, _ua = await signed_in(server, telethon_for, "Alice", phone="15557001")
    b, ub = await signed_in(server, telethon_for, "Bob", phone="15557002")
    await b(functions.account.UpdateUsernameRequest("bob_accept"))
    bob = await resolve(a, "bob_accept")
    with pytest.raises(errors.ContactReqMissingError):  # Bob has not added Alice
        await a(functions.contacts.AcceptContactRequest(input_user(bob)))
    await b(
        functions.contacts.ImportContactsRequest(
            [tt.InputPhoneContact(client_id=1, phone="15557001", first_name="Al", last_name="")]
        )
    )
    upd = await a(functions.contacts.AcceptContactRequest(input_user(bob)))
    (bob,) = upd.users
    assert bob.contact and bob.mutual_contact and bob.first_name == "Bob"
    # Accepting shares Alice's phone with Bob (he saved it anyway here).
    rules = await a(functions.account.GetPrivacyRequest(tt.InputPrivacyKeyPhoneNumber()))
    assert [u.id for u in rules.users] == [ub.id]

    assert await b(functions.contacts.DeleteByPhonesRequest(["+1 555 7001"]))
    assert await b(functions.contacts.GetContactIDsRequest(hash=0)) == []
    assert await b(functions.contacts.GetSavedRequest()) == []
    contacts = await a(functions.contacts.GetContactsRequest(hash=0))
    assert [(c.user_id, c.mutual) for c in contacts.contacts] == [(ub.id, False)]
