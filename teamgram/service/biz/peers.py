"""Peers as stored: ``(peer_type, peer_id)`` pairs, and their TL forms."""

from __future__ import annotations

from typing import Any

from teamgram.tl import TLObject, types

PEER_USER = 1
PEER_CHAT = 2
PEER_CHANNEL = 3

PeerKey = tuple[int, int]


def peer_key(peer: Any) -> PeerKey:
    """``(type, id)`` of a ``Peer`` TL object."""
    if isinstance(peer, types.PeerUser):
        return PEER_USER, int(peer.user_id)
    if isinstance(peer, types.PeerChat):
        return PEER_CHAT, int(peer.chat_id)
    if isinstance(peer, types.PeerChannel):
        return PEER_CHANNEL, int(peer.channel_id)
    raise TypeError(f"not a peer: {type(peer).__name__}")


def peer_tl(peer_type: int, peer_id: int) -> TLObject:
    if peer_type == PEER_USER:
        return types.PeerUser(user_id=peer_id)
    if peer_type == PEER_CHAT:
        return types.PeerChat(chat_id=peer_id)
    return types.PeerChannel(channel_id=peer_id)
