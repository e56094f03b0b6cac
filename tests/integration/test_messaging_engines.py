"""Private messaging on each engine: boxes, dialogs, pts and the update log across a restart.

The dialect-specific parts (upserts of dialogs, bulk inserts of the update log,
utf8mb4 text) only show on the engine itself, so the whole flow runs on SQLite,
MariaDB and PostgreSQL: two accounts talk, one catches up through getDifference,
and after a restart history, dialogs and pts continue where they were.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from telethon import TelegramClient, functions, types
from telethon.network.connection import ConnectionTcpFull
from telethon.sessions import StringSession

from tests.e2e.conftest import make_telethon, running_server
from tests.integration.test_engines import CLIENT_TIMEOUT, DEV_CODE, _sign_up, call

TEXT = "héllo 👋 — 你好"  # four-byte UTF-8 (utf8mb4 on MariaDB)


async def _reconnect(srv: Any, saved: str) -> TelegramClient:
    session = StringSession(saved)
    session.set_dc(srv.config.dc_id, "127.0.0.1", srv.gateway.tcp_ports[0])
    client = make_telethon(srv, ConnectionTcpFull, session.save())
    await asyncio.wait_for(client.connect(), CLIENT_TIMEOUT)
    return client


async def test_messaging_persists_on_engine(
    database_url: str, tmp_path: Path, server_key_pem: bytes
) -> None:
    data_dir = tmp_path / "messaging"
    overrides = {"database": {"url": database_url}, "dev_login_code": DEV_CODE}
    async with running_server(data_dir, server_key_pem, overrides) as srv:
        alice = make_telethon(srv, ConnectionTcpFull)
        bob = make_telethon(srv, ConnectionTcpFull)
        try:
            await asyncio.wait_for(alice.connect(), CLIENT_TIMEOUT)
            await asyncio.wait_for(bob.connect(), CLIENT_TIMEOUT)
            await asyncio.wait_for(_sign_up(alice, "15550002001", "Alice"), CLIENT_TIMEOUT)
            bob_me = await asyncio.wait_for(_sign_up(bob, "15550002002", "Bob"), CLIENT_TIMEOUT)
            imported = await call(
                alice,
                functions.contacts.ImportContactsRequest(
                    [types.InputPhoneContact(1, "15550002002", "Bob", "")]
                ),
            )
            peer = types.InputPeerUser(bob_me.id, imported.users[0].access_hash)
            first = await call(alice, functions.messages.SendMessageRequest(peer, TEXT))
            again = await call(  # the same random_id: the same message
                alice, functions.messages.SendMessageRequest(peer, TEXT, random_id=77)
            )
            dup = await call(alice, functions.messages.SendMessageRequest(peer, TEXT, random_id=77))
            assert again.id == dup.id and again.pts == dup.pts and again.id == first.id + 1
            await call(
                alice, functions.messages.EditMessageRequest(peer, first.id, message="edited")
            )
            await call(
                alice,
                functions.messages.SaveDraftRequest(peer=peer, message="draft ✍️"),
            )
            await call(
                alice,
                functions.messages.ToggleDialogPinRequest(types.InputDialogPeer(peer), True),
            )
            bob_state = await call(bob, functions.updates.GetStateRequest())
            alice_saved = alice.session.save()
            bob_saved = bob.session.save()
        finally:
            await asyncio.wait_for(alice.disconnect(), 5)
            await asyncio.wait_for(bob.disconnect(), 5)

    async with running_server(data_dir, server_key_pem, overrides) as srv:
        alice = await _reconnect(srv, alice_saved)
        bob = await _reconnect(srv, bob_saved)
        try:
            # A message after the restart continues both boxes' ids and pts.
            third = await call(alice, functions.messages.SendMessageRequest(peer, "after"))
            assert third.id == again.id + 1 and third.pts == dup.pts + 2
            # random_id 77 again, after the restart: the unique index finds the first.
            late = await call(
                alice, functions.messages.SendMessageRequest(peer, "late", random_id=77)
            )
            assert (late.id, late.pts) == (again.id, again.pts)
            history = await call(
                bob,
                functions.messages.GetHistoryRequest(types.InputPeerSelf(), 0, 0, 0, 10, 0, 0, 0),
            )
            assert history.messages == []  # Bob's Saved Messages: empty
            diff = await call(
                bob,
                functions.updates.GetDifferenceRequest(
                    pts=bob_state.pts - 3, date=bob_state.date, qts=0
                ),
            )
            texts = [m.message for m in diff.new_messages]
            assert texts == [TEXT, TEXT, "after"]
            edits = [u for u in diff.other_updates if isinstance(u, types.UpdateEditMessage)]
            assert [u.message.message for u in edits] == ["edited"]
            assert diff.state.pts == bob_state.pts + 1
            alice_user = next(u for u in diff.users if u.first_name == "Alice")
            bob_view = types.InputPeerUser(alice_user.id, alice_user.access_hash)
            history = await call(
                bob, functions.messages.GetHistoryRequest(bob_view, 0, 0, 0, 10, 0, 0, 0)
            )
            assert [m.message for m in history.messages] == ["after", TEXT, "edited"]
            dialogs = await call(
                alice,
                functions.messages.GetDialogsRequest(
                    offset_date=0, offset_id=0, offset_peer=types.InputPeerEmpty(), limit=10, hash=0
                ),
            )
            (dialog,) = dialogs.dialogs
            assert dialog.pinned and dialog.top_message == third.id
            assert dialog.draft.message == "draft ✍️"
            read = await call(bob, functions.messages.ReadHistoryRequest(bob_view, 0))
            assert read.pts_count == 1
            dialogs = await call(
                alice,
                functions.messages.GetPeerDialogsRequest([types.InputDialogPeer(peer)]),
            )
            assert dialogs.dialogs[0].read_outbox_max_id == third.id
        finally:
            await asyncio.wait_for(alice.disconnect(), 5)
            await asyncio.wait_for(bob.disconnect(), 5)
