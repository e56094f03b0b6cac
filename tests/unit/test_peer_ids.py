"""New group and channel ids stay where clients tell chats from channels correctly."""

from __future__ import annotations

from telethon import utils
from telethon.tl import types as tt

from teamgram.service.biz.peer_ids import MAX_PEER_ID, new_peer_id


def test_ids_are_in_range() -> None:
    ids = [new_peer_id() for _ in range(10_000)]
    assert all(1 <= i < MAX_PEER_ID for i in ids)
    assert len(set(ids)) == len(ids)


def test_telethon_reads_the_extremes_as_the_right_peer() -> None:
    for i in (1, MAX_PEER_ID - 1):
        assert utils.resolve_id(-i) == (i, tt.PeerChat)
        assert utils.resolve_id(-(10**12 + i)) == (i, tt.PeerChannel)
        assert utils.get_peer_id(tt.PeerChat(i)) == -i
        assert utils.get_peer_id(tt.PeerChannel(i)) == -(10**12 + i)
