"""Privacy rule evaluation, rule conversion and storage, and the rounded last seen."""

from __future__ import annotations

from pathlib import Path

import pytest

from teamgram.errors import RpcError
from teamgram.infra.database import open_database
from teamgram.service.biz import privacy as pv
from teamgram.service.biz.contacts import contacts_hash
from teamgram.service.biz.users import (
    approximate_status,
    exact_status,
    normalize_phone,
    valid_username,
)
from teamgram.tl import TLObject, types

VIEWER = 42
OTHER = 43

ALL = types.PrivacyValueAllowAll()
NOBODY = types.PrivacyValueDisallowAll()
CONTACTS = types.PrivacyValueAllowContacts()

STRANGER = pv.Relation()
CONTACT = pv.Relation(is_contact=True)
BOT = pv.Relation(is_bot=True)


def allowed(rules: list[TLObject], rel: pv.Relation = STRANGER, viewer: int = VIEWER) -> bool:
    return pv.evaluate(rules, viewer, rel)


def test_everybody_nobody_and_empty() -> None:
    assert allowed([ALL])
    assert not allowed([NOBODY])
    assert not allowed([])  # nothing matches: not allowed


def test_my_contacts() -> None:
    rules = [CONTACTS, NOBODY]
    assert allowed(rules, CONTACT)
    assert not allowed(rules, STRANGER)


def test_everybody_except_contacts() -> None:
    rules = [types.PrivacyValueDisallowContacts(), ALL]
    assert not allowed(rules, CONTACT)
    assert allowed(rules, STRANGER)


def test_named_users_win_over_categories() -> None:
    rules = [types.PrivacyValueDisallowUsers(users=[VIEWER]), CONTACTS, ALL]
    assert not allowed(rules, CONTACT)
    assert allowed(rules, CONTACT, viewer=OTHER)
    rules = [types.PrivacyValueAllowUsers(users=[VIEWER]), NOBODY]
    assert allowed(rules)
    assert not allowed(rules, viewer=OTHER)
    # Disallow wins when a user is named by both.
    both = [
        types.PrivacyValueAllowUsers(users=[VIEWER]),
        types.PrivacyValueDisallowUsers(users=[VIEWER]),
        ALL,
    ]
    assert not allowed(both)


def test_chat_participants() -> None:
    in_chat = pv.Relation(chat_ids=frozenset({7}))
    assert allowed([types.PrivacyValueAllowChatParticipants(chats=[7]), NOBODY], in_chat)
    assert not allowed([types.PrivacyValueAllowChatParticipants(chats=[8]), NOBODY], in_chat)
    assert not allowed([types.PrivacyValueDisallowChatParticipants(chats=[7]), ALL], in_chat)
    # A named user outranks a chat.
    assert allowed(
        [
            types.PrivacyValueAllowUsers(users=[VIEWER]),
            types.PrivacyValueDisallowChatParticipants(chats=[7]),
        ],
        in_chat,
    )


def test_bots_close_friends_premium() -> None:
    assert not allowed([types.PrivacyValueDisallowBots(), ALL], BOT)
    assert allowed([types.PrivacyValueAllowBots(), NOBODY], BOT)
    assert allowed([types.PrivacyValueDisallowBots(), ALL], STRANGER)
    assert allowed(
        [types.PrivacyValueAllowCloseFriends(), NOBODY], pv.Relation(is_close_friend=True)
    )
    assert not allowed([types.PrivacyValueAllowCloseFriends(), NOBODY], CONTACT)
    assert allowed([types.PrivacyValueAllowPremium(), NOBODY], pv.Relation(is_premium=True))


def test_defaults_are_telegrams() -> None:
    phone = pv.DEFAULTS[pv.PHONE_NUMBER]()
    assert allowed(phone, CONTACT) and not allowed(phone, STRANGER)
    for key in (pv.STATUS_TIMESTAMP, pv.PROFILE_PHOTO, pv.ABOUT):
        assert allowed(pv.DEFAULTS[key](), STRANGER)
    assert set(pv.DEFAULTS) == set(pv.KEYS)


def test_keys_round_trip() -> None:
    for name, (inp, out) in pv.KEYS.items():
        assert pv.key_name(inp()) == name
        assert isinstance(pv.key_object(name), out)
    with pytest.raises(RpcError) as exc:
        pv.key_name(types.PrivacyKeyPhoneNumber())  # an output key is not an input one
    assert exc.value.message == "PRIVACY_KEY_INVALID"


def test_from_input_rules() -> None:
    def resolve(u: TLObject) -> int:
        if isinstance(u, types.InputUser) and u.access_hash == 1:
            return int(u.user_id)
        raise RpcError(400, "USER_ID_INVALID")

    rules = pv.from_input_rules(
        [
            types.InputPrivacyValueAllowUsers(
                users=[types.InputUser(user_id=5, access_hash=1)] * 2
            ),
            types.InputPrivacyValueDisallowChatParticipants(chats=[9]),
            types.InputPrivacyValueAllowContacts(),
            types.InputPrivacyValueAllowCloseFriends(),
            types.InputPrivacyValueDisallowAll(),
        ],
        resolve,
    )
    assert rules == [
        types.PrivacyValueAllowUsers(users=[5]),
        types.PrivacyValueDisallowChatParticipants(chats=[9]),
        types.PrivacyValueAllowContacts(),
        types.PrivacyValueAllowCloseFriends(),
        types.PrivacyValueDisallowAll(),
    ]
    assert pv.mentioned_users(rules) == [5]
    with pytest.raises(RpcError):
        pv.from_input_rules(
            [types.InputPrivacyValueAllowUsers(users=[types.InputUser(user_id=5, access_hash=2)])],
            resolve,
        )


def test_with_user_allowed() -> None:
    rules = pv.with_user_allowed([types.PrivacyValueDisallowUsers(users=[VIEWER]), NOBODY], VIEWER)
    assert rules == [types.PrivacyValueAllowUsers(users=[VIEWER]), NOBODY]
    assert allowed(rules)
    again = pv.with_user_allowed(rules, VIEWER)
    assert again == rules
    more = pv.with_user_allowed(rules, OTHER)
    assert more == [types.PrivacyValueAllowUsers(users=[VIEWER, OTHER]), NOBODY]


def test_rounded_last_seen() -> None:
    now = 1_700_000_000
    assert isinstance(approximate_status(0, now), types.UserStatusEmpty)
    assert approximate_status(now - 60, now) == types.UserStatusRecently()
    assert approximate_status(now - 60, now, by_me=True) == types.UserStatusRecently(by_me=True)
    assert isinstance(approximate_status(now - 5 * 86400, now), types.UserStatusLastWeek)
    assert isinstance(approximate_status(now - 20 * 86400, now), types.UserStatusLastMonth)
    assert isinstance(approximate_status(now - 90 * 86400, now), types.UserStatusEmpty)
    assert exact_status(now + 300, now - 10, now) == types.UserStatusOnline(expires=now + 300)
    assert exact_status(0, now - 10, now) == types.UserStatusOffline(was_online=now - 10)
    assert isinstance(exact_status(0, 0, now), types.UserStatusEmpty)


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("alice", True),
        ("Alice_2000", True),
        ("a" * 32, True),
        ("abcd", False),
        ("a" * 33, False),
        ("1alice", False),
        ("_alice", False),
        ("alice_", False),
        ("ali__ce", False),
        ("ali-ce", False),
        ("alicé", False),
    ],
)
def test_username_rules(name: str, ok: bool) -> None:
    assert valid_username(name) is ok


def test_phone_normalization_and_list_hash() -> None:
    assert normalize_phone("+1 (555) 010-2") == "15550102"
    assert contacts_hash([]) == 0
    assert contacts_hash([5]) == 5
    # Every step stays a signed 64-bit value.
    h = contacts_hash([0, *range(100_000_000, 100_000_050)])
    assert -(1 << 63) <= h < 1 << 63
    assert h != contacts_hash([0, *range(100_000_000, 100_000_049)])


async def test_rules_stored_as_tl(tmp_path: Path) -> None:
    engine = await open_database(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    try:
        store = pv.PrivacyService(engine)
        assert await store.get_rules(1, pv.PHONE_NUMBER) == pv.DEFAULTS[pv.PHONE_NUMBER]()
        rules: list[TLObject] = [
            types.PrivacyValueAllowUsers(users=[2, 3]),
            types.PrivacyValueAllowChatParticipants(chats=[4]),
            types.PrivacyValueAllowPremium(),
            types.PrivacyValueDisallowAll(),
        ]
        await store.set_rules(1, pv.PHONE_NUMBER, rules)
        await store.set_rules(1, pv.PHONE_NUMBER, rules)  # an update, not a second row
        fresh = pv.PrivacyService(engine)  # nothing cached: read back from the table
        assert await fresh.get_rules(1, pv.PHONE_NUMBER) == rules
        many = await fresh.rules_of_many([1, 2], pv.STATUS_TIMESTAMP)
        assert many == {1: [types.PrivacyValueAllowAll()], 2: [types.PrivacyValueAllowAll()]}
        await fresh.allow_user(1, pv.PHONE_NUMBER, 9)
        got = await pv.PrivacyService(engine).get_rules(1, pv.PHONE_NUMBER)
        assert got[0] == types.PrivacyValueAllowUsers(users=[2, 3, 9])
    finally:
        await engine.dispose()
