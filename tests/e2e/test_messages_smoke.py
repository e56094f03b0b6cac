from __future__ import annotations

from collections.abc import Awaitable, Callable

from telethon import TelegramClient, events, functions
from telethon.tl import types as tt

from teamgram.server import Server
from tests.e2e.accounts import another_device, signed_in, wait_for

Factory = Callable[..., Awaitable[TelegramClient]]


async def test_smoke(server: Server, telethon_for: Factory) -> None:
    a, ua = await signed_in(server, telethon_for, "Alice")
    b, ub = await signed_in(server, telethon_for, "Bob")
    a2 = await another_device(server, telethon_for, ua.id)
    got_b: list[str] = []
    got_a2: list[str] = []
    b.add_event_handler(lambda e: got_b.append(e.raw_text), events.NewMessage())
    a2.add_event_handler(lambda e: got_a2.append(e.raw_text), events.NewMessage())
    # Alice learns Bob's access hash
    imported = await a(functions.contacts.ImportContactsRequest([tt.InputPhoneContact(0, ub.phone, "Bob", "")]))
    bob_user = imported.users[0]
    m = await a.send_message(bob_user, "hello bob")
    print("sent", m.id, m.text)
    await wait_for(lambda: got_b and got_a2)
    print(got_b, got_a2)
    hist = await b.get_messages(ua.id, limit=10)
    print([x.text for x in hist])
    r = await b.send_message(ua.id, "hi alice")
    msgs = await a.get_messages(bob_user, limit=10)
    print([(x.id, x.text, x.out) for x in msgs])
    dialogs = await a.get_dialogs()
    print([(d.name, d.message.text, d.unread_count) for d in dialogs])
    await b.send_read_acknowledge(ua.id)
    await m.edit("hello bob (edited)")
    await a.delete_messages(bob_user, [m.id], revoke=True)
    st = await b(functions.updates.GetStateRequest())
    print(st)
