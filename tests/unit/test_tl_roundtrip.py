"""Every generated TL class survives ``decode(obj.to_bytes()) == obj``.

Values come from the parsed schema (``TLDef``/``TLArg``), so the test follows the
layer automatically: optional fields set and unset, ``true`` flags, flag bits shared
by several fields, vectors (empty and not), nested boxed objects of a constructor
the field's type allows, long strings (the 4-byte length form), non-ASCII text,
``int128``/``int256``, generic ``!X`` queries and RPC results.

``ValueGen`` is also used by ``test_tl_telethon.py``.
"""

from __future__ import annotations

import math
import random
import struct
from collections import defaultdict
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from teamgram.tl import (
    CLASSES,
    TLEncodeError,
    TLFunction,
    TLObject,
    decode,
    decode_prefix,
    functions,
    types,
)
from teamgram.tl.core import Reader, gzip_packed, write_value
from teamgram.tl.generator import attr_name
from teamgram.tl.parser import TLArg, TLDef, load_schema

# -- schema tables ---------------------------------------------------------------------

LAYER, _ALL_DEFS = load_schema()
DEFS: dict[int, TLDef] = {d.id: d for d in _ALL_DEFS if d.id in CLASSES}
BY_TYPE: dict[str, list[TLDef]] = defaultdict(list)
BY_NAME: dict[str, TLDef] = {}
for _d in sorted(DEFS.values(), key=lambda d: d.id):
    if not _d.is_function:
        BY_TYPE[_d.result].append(_d)
        BY_NAME[_d.name] = _d
FUNCTION_DEFS = [d for d in sorted(DEFS.values(), key=lambda d: d.id) if d.is_function]

PRIMITIVES = frozenset(
    {"int", "long", "double", "string", "bytes", "int128", "int256", "Bool", "true"}
)
INT_MIN, INT_MAX = -(2**31), 2**31 - 1
LONG_MIN, LONG_MAX = -(2**63), 2**63 - 1


def _is_object_arg(a: TLArg) -> bool:
    return a.type not in PRIMITIVES and a.type != "Object"


def _cheapest(defs: list[TLDef], cost: dict[int, float]) -> TLDef:
    return min(defs, key=lambda d: (cost[d.id], len(d.args), d.id))


def _compute_costs() -> dict[int, float]:
    """Objects needed to build a constructor with every optional field unset.

    A fixed point over the schema: vectors may be empty and optionals unset, so only
    required scalar object fields count. Used to stop recursion at depth limits.
    """
    cost: dict[int, float] = dict.fromkeys(DEFS, math.inf)
    changed = True
    while changed:
        changed = False
        cheapest_fn = min((cost[d.id] for d in FUNCTION_DEFS), default=math.inf)
        for d in DEFS.values():
            c = 1.0
            for a in d.args:
                if a.is_flags or a.flag_field is not None or a.is_vector:
                    continue
                if a.type == "Object":
                    c += cheapest_fn
                elif a.bare_type:
                    c += cost[BY_NAME[a.type].id]
                elif _is_object_arg(a):
                    c += min(cost[x.id] for x in BY_TYPE[a.type])
            if c < cost[d.id]:
                cost[d.id] = c
                changed = True
    return cost


COST = _compute_costs()
CHEAP_FUNCTIONS = sorted(FUNCTION_DEFS, key=lambda d: (COST[d.id], d.id))[:20]


def flag_groups(d: TLDef) -> dict[tuple[str, int], list[TLArg]]:
    """Optional fields by (flags field, bit). A group shares one bit on the wire, so
    its fields must be set (or unset) together to survive a round trip."""
    groups: dict[tuple[str, int], list[TLArg]] = defaultdict(list)
    for a in d.args:
        if a.flag_field is not None:
            groups[(a.flag_field, a.flag_bit)].append(a)
    return groups


# -- deterministic value generator ------------------------------------------------------

STRING_POOL = [
    "",
    "a",
    "hello, world",
    "Привет, мир",
    "日本語のテキスト",
    "emoji 😀👍🏽🇺🇦 and ZWJ 👨‍👩‍👧",
    "x" * 253,  # longest 1-byte-length form
    "y" * 254,  # shortest 4-byte-length form
    "ж" * 127,  # 254 bytes of UTF-8
    "long message text with ünïcödé " * 40,
    "\x00nul and\ttabs\n",
]
INT_POOL = [0, 1, -1, 7, INT_MAX, INT_MIN, 1_700_000_000, 123456]
LONG_POOL = [0, 1, -1, LONG_MAX, LONG_MIN, 2**32, 1_234_567_890_123_456_789]
DOUBLE_POOL = [0.0, -0.0, 1.5, -2.25, 1e308, -1e-308, 5e-324, math.inf, -math.inf, 55.7558]


class ValueGen:
    """Builds instances of generated classes with values chosen from the schema.

    ``fill`` is the chance that an optional flag group is set and that a vector is
    non-empty; below ``full_depth`` every group is set (``fill`` 1 there makes a
    "maximal" object), from ``max_depth`` on objects are minimal (cheapest
    constructor, nothing optional). ``telethon`` avoids values Telethon cannot
    express the same way (it writes an optional ``Bool`` set to False as unset).
    """

    def __init__(
        self,
        seed: int,
        *,
        fill: float = 0.5,
        max_depth: int = 3,
        max_len: int = 3,
        telethon: bool = False,
    ) -> None:
        self.rng = random.Random(seed)
        self.fill = fill
        self.max_depth = max_depth
        self.max_len = max_len
        self.telethon = telethon

    # primitives
    def string(self) -> str:
        rng = self.rng
        if rng.random() < 0.75:
            return rng.choice(STRING_POOL)
        n = rng.choice([1, 5, 40, 260, 700])
        return "".join(
            chr(rng.choice([rng.randrange(32, 127), rng.randrange(0x400, 0x4FF)])) for _ in range(n)
        )

    def bytes_(self) -> bytes:
        n = self.rng.choice([0, 1, 3, 4, 16, 253, 254, 255, 256, 1000, 70000])
        return self.rng.randbytes(n)

    def primitive(self, t: str) -> Any:
        rng = self.rng
        if t == "int":
            return rng.choice(INT_POOL) if rng.random() < 0.5 else rng.randint(INT_MIN, INT_MAX)
        if t == "long":
            return rng.choice(LONG_POOL) if rng.random() < 0.5 else rng.randint(LONG_MIN, LONG_MAX)
        if t == "double":
            return rng.choice(DOUBLE_POOL) if rng.random() < 0.5 else rng.uniform(-1e9, 1e9)
        if t == "string":
            return self.string()
        if t == "bytes":
            return self.bytes_()
        if t == "int128":
            return rng.randbytes(16)
        if t == "int256":
            return rng.randbytes(32)
        if t == "Bool":
            return rng.random() < 0.5
        raise AssertionError(t)

    # objects
    def of_type(self, tl_type: str, depth: int) -> TLObject:
        options = BY_TYPE[tl_type]
        if depth >= self.max_depth:
            return self.build(_cheapest(options, COST), depth)
        return self.build(self.rng.choice(options), depth)

    def function(self, depth: int) -> TLFunction:
        if depth >= self.max_depth:
            return self.build(self.rng.choice(CHEAP_FUNCTIONS), depth)
        return self.build(self.rng.choice(FUNCTION_DEFS), depth)

    def one(self, a: TLArg, depth: int) -> Any:
        if a.type in PRIMITIVES:
            return self.primitive(a.type)
        if a.type == "Object":
            return self.function(depth + 1)
        if a.bare_type:
            return self.build(BY_NAME[a.type], depth + 1)
        return self.of_type(a.type, depth + 1)

    def value(self, a: TLArg, depth: int) -> Any:
        if not a.is_vector:
            return self.one(a, depth)
        if depth >= self.max_depth or self.rng.random() >= self.fill:
            n = 0
        else:
            n = self.rng.randint(1, self.max_len)
        return [self.one(a, depth) for _ in range(n)]

    def kwargs(self, d: TLDef, depth: int = 0, full_depth: int = 0) -> dict[str, Any]:
        present: dict[tuple[str, int], bool] = {}
        for key in flag_groups(d):
            if depth >= self.max_depth:
                on = False
            elif depth < full_depth:
                on = True
            else:
                on = self.rng.random() < self.fill
            present[key] = on
        out: dict[str, Any] = {}
        for a in d.args:
            if a.is_flags:
                continue
            name = attr_name(a.name)
            if a.flag_field is not None:
                on = present[(a.flag_field, a.flag_bit)]
                if a.type == "true":
                    out[name] = on
                    continue
                if not on:
                    out[name] = None
                    continue
                if a.type == "Bool" and self.telethon:
                    out[name] = True
                    continue
            out[name] = self.value(a, depth)
        return out

    def build(self, d: TLDef, depth: int = 0, full_depth: int = 0) -> Any:
        return CLASSES[d.id](**self.kwargs(d, depth, full_depth))


# -- helpers -----------------------------------------------------------------------------


def assert_roundtrip(obj: TLObject) -> bytes:
    data = obj.to_bytes()
    assert len(data) % 4 == 0
    assert data[:4] == struct.pack("<I", obj.CONSTRUCTOR_ID)
    back = decode(data)
    assert type(back) is type(obj)
    assert back == obj
    assert back.to_bytes() == data
    # decode_prefix reports where the object ends inside a larger buffer
    got, end = decode_prefix(b"\x11" * 8 + data + b"\0" * 8, 8)
    assert got == obj and end == 8 + len(data)
    return data


def _id(cid: int) -> str:
    return f"{CLASSES[cid].TL_NAME}#{cid:08x}"


ALL_IDS = sorted(CLASSES)


# -- every class, deterministic variants -------------------------------------------------


def test_schema_matches_generated_classes() -> None:
    assert set(DEFS) == set(CLASSES)
    assert len(CLASSES) > 2000
    for cid, d in DEFS.items():
        cls = CLASSES[cid]
        assert cls.CONSTRUCTOR_ID == cid
        assert cls.TL_NAME == d.name
        assert issubclass(cls, TLFunction) == d.is_function
        assert list(cls.__slots__) == [attr_name(a.name) for a in d.args if not a.is_flags]
    # every type a field refers to can be built
    assert all(math.isfinite(c) for c in COST.values())


@pytest.mark.parametrize("cid", ALL_IDS, ids=_id)
def test_roundtrip_every_class(cid: int) -> None:
    d = DEFS[cid]
    # minimal: nothing optional, every vector empty
    assert_roundtrip(ValueGen(cid, fill=0.0).build(d))
    # maximal: every optional group set and vectors non-empty two levels down
    assert_roundtrip(ValueGen(cid + 1, fill=1.0, max_depth=3, max_len=2).build(d, full_depth=2))
    # random mixes
    for seed in range(3):
        assert_roundtrip(ValueGen(cid * 7 + seed, fill=0.5).build(d))


@pytest.mark.parametrize("cid", [d.id for d in FUNCTION_DEFS], ids=_id)
def test_rpc_result_roundtrip(cid: int) -> None:
    """``write_result``/``read_result`` for each function's declared result type."""
    d = DEFS[cid]
    fn = CLASSES[cid]
    assert isinstance(fn, type) and issubclass(fn, TLFunction)
    gen = ValueGen(cid, fill=0.5, max_depth=2)
    result = d.result
    vector = result.startswith(("Vector<", "vector<"))
    elem = result[7:-1] if vector else result
    if d.generic_result or elem in ("X", "Object"):
        value: Any = gen.function(0)
    else:
        arg = TLArg(name="r", type=elem)

        def one() -> Any:
            return gen.one(arg, 0) if elem in PRIMITIVES else gen.of_type(elem, 0)

        value = [one() for _ in range(3)] if vector else one()
    b = bytearray()
    fn.write_result(b, value)
    assert fn.read_result(bytes(b)) == value
    if vector:
        b2 = bytearray()
        fn.write_result(b2, [])
        assert fn.read_result(bytes(b2)) == []


# -- targeted encodings -----------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 2, 3, 4, 5, 252, 253, 254, 255, 256, 257, 1000, 65536, 2**20])
def test_bytes_length_forms(n: int) -> None:
    payload = bytes(range(256)) * (n // 256) + bytes(range(n % 256))
    obj = types.SecureData(data=payload, data_hash=b"h" * 32, secret=b"")
    data = assert_roundtrip(obj)
    body = data[4:]
    if n < 254:
        assert body[0] == n
        field_len = (n + 1 + 3) // 4 * 4
        assert body[1 : 1 + n] == payload
    else:
        assert body[0] == 254 and int.from_bytes(body[1:4], "little") == n
        field_len = 4 + (n + 3) // 4 * 4
        assert body[4 : 4 + n] == payload
    header = 1 if n < 254 else 4
    assert body[header + n : field_len] == b"\0" * (field_len - header - n)  # zero padding
    assert decode(data).data == payload
    text = "ы" * (n // 2) + "x" * (n % 2)  # n bytes of UTF-8
    assert decode(assert_roundtrip(types.DataJSON(data=text))).data == text


@pytest.mark.parametrize("text", STRING_POOL, ids=lambda s: f"{len(s.encode())}B")
def test_strings(text: str) -> None:
    msg = types.Message(id=1, peer_id=types.PeerUser(user_id=5), date=0, message=text)
    assert_roundtrip(msg)
    assert decode(msg.to_bytes()).message == text


def test_int128_int256_fields() -> None:
    nonce, server_nonce, new_nonce = bytes(range(16)), bytes(range(16, 32)), bytes(range(32))
    res = types.ResPQ(
        nonce=nonce,
        server_nonce=server_nonce,
        pq=b"\x17\xed\x48\x94\x1a\x08\xf9\x81",
        server_public_key_fingerprints=[-4344800451088585951, 0],
    )
    data = assert_roundtrip(res)
    assert data[4:20] == nonce and data[20:36] == server_nonce
    inner = types.PQInnerData(
        pq=b"pq", p=b"p", q=b"q", nonce=nonce, server_nonce=server_nonce, new_nonce=new_nonce
    )
    data = assert_roundtrip(inner)
    assert new_nonce in data
    assert_roundtrip(functions.ReqPqMulti(nonce=nonce))
    with pytest.raises(ValueError):
        functions.ReqPqMulti(nonce=b"short").to_bytes()


def test_true_flags_and_shared_bits() -> None:
    # bot (true) and bot_info_version share flags.14
    u = types.User(id=42, bot=True, bot_info_version=3, first_name="Bot", self=True)
    back = decode(assert_roundtrip(u))
    assert back.bot is True and back.bot_info_version == 3 and back.self is True
    assert back.contact is False and back.last_name is None
    # views/forwards share flags.10
    m = types.Message(
        id=1, peer_id=types.PeerChat(chat_id=1), date=0, message="", views=0, forwards=0
    )
    assert decode(assert_roundtrip(m)).views == 0
    # flags2 fields
    full = ValueGen(1, fill=1.0, max_depth=2).build(BY_NAME["userFull"])
    assert_roundtrip(full)


def test_generic_query_nesting() -> None:
    q = functions.InvokeWithLayer(
        layer=LAYER,
        query=functions.InitConnection(
            api_id=6,
            device_model="PC",
            system_version="Linux",
            app_version="1.0",
            system_lang_code="en",
            lang_pack="",
            lang_code="en",
            query=functions.InvokeWithoutUpdates(query=functions.help.GetConfig()),
        ),
    )
    back = decode(assert_roundtrip(q))
    assert isinstance(back.query.query.query, functions.help.GetConfig)


def test_gzip_packed_field_is_transparent() -> None:
    inner = types.Updates(
        updates=[],
        users=[types.User(id=i, first_name="u" * 300) for i in range(20)],
        chats=[],
        date=1,
        seq=2,
    )
    assert decode(gzip_packed(inner.to_bytes())) == inner
    # a gzip_packed value may stand for a typed field
    body = types.UpdateShort(update=types.UpdateConfig(), date=5).to_bytes()
    data = body[:4] + gzip_packed(types.UpdateConfig().to_bytes()) + body[8:]
    assert decode(data) == types.UpdateShort(update=types.UpdateConfig(), date=5)


def test_vector_results() -> None:
    users = [types.User(id=i, first_name=f"user{i}") for i in range(5)]
    b = bytearray()
    write_value(b, users, "object")
    assert functions.users.GetUsers.read_result(bytes(b)) == users
    assert decode(bytes(b)) == users  # a bare top-level Vector of boxed objects
    b = bytearray()
    functions.messages.GetMessagesViews.write_result(
        b, types.messages.MessageViews(views=[], chats=[], users=users)
    )
    assert decode(bytes(b)).users == users
    for fn, vals in [
        (functions.contacts.GetContactIDs, [1, -1, INT_MAX, INT_MIN]),
        (functions.messages.ReceivedQueue, [LONG_MAX, LONG_MIN, 0]),
    ]:
        b = bytearray()
        fn.write_result(b, vals)
        assert fn.read_result(bytes(b)) == vals
    reader = Reader(bytes(b))
    assert reader.vector_long() == [LONG_MAX, LONG_MIN, 0]


def test_equality_and_repr() -> None:
    a = types.PeerUser(user_id=1)
    assert a == types.PeerUser(user_id=1)
    assert a != types.PeerUser(user_id=2)
    assert a != types.PeerChat(chat_id=1)
    assert "user_id=1" in repr(a)
    assert a.to_dict() == {"_": "peerUser", "user_id": 1}


# -- hypothesis: a strategy per TL type ---------------------------------------------------

H_MAX_DEPTH = 3

_PRIM_ST: dict[str, st.SearchStrategy[Any]] = {
    "int": st.integers(INT_MIN, INT_MAX),
    "long": st.integers(LONG_MIN, LONG_MAX),
    "double": st.floats(allow_nan=False),
    "string": st.one_of(st.text(max_size=12), st.text(min_size=254, max_size=320)),
    "bytes": st.one_of(st.binary(max_size=12), st.binary(min_size=250, max_size=600)),
    "int128": st.binary(min_size=16, max_size=16),
    "int256": st.binary(min_size=32, max_size=32),
    "Bool": st.booleans(),
}
_OBJ_ST: dict[tuple[int, int], st.SearchStrategy[Any]] = {}
_TYPE_ST: dict[tuple[str, int], st.SearchStrategy[Any]] = {}


def object_strategy(d: TLDef, depth: int = 0) -> st.SearchStrategy[Any]:
    key = (d.id, depth)
    if key not in _OBJ_ST:
        _OBJ_ST[key] = _object(d, depth)
    return _OBJ_ST[key]


def type_strategy(tl_type: str, depth: int) -> st.SearchStrategy[Any]:
    key = (tl_type, depth)
    if key not in _TYPE_ST:
        options = BY_TYPE[tl_type]
        if depth >= H_MAX_DEPTH:
            options = [_cheapest(options, COST)]
        _TYPE_ST[key] = st.sampled_from(options).flatmap(lambda d: object_strategy(d, depth))
    return _TYPE_ST[key]


def _one_st(a: TLArg, depth: int) -> st.SearchStrategy[Any]:
    if a.type in _PRIM_ST:
        return _PRIM_ST[a.type]
    if a.type == "Object":
        fns = FUNCTION_DEFS if depth < H_MAX_DEPTH else CHEAP_FUNCTIONS
        return st.sampled_from(fns).flatmap(lambda d: object_strategy(d, depth + 1))
    if a.bare_type:
        return object_strategy(BY_NAME[a.type], depth + 1)
    return type_strategy(a.type, depth + 1)


def _arg_st(a: TLArg, depth: int) -> st.SearchStrategy[Any]:
    one = _one_st(a, depth)
    if not a.is_vector:
        return one
    return st.lists(one, max_size=0 if depth >= H_MAX_DEPTH else 3)


def _object(d: TLDef, depth: int) -> st.SearchStrategy[Any]:
    cls = CLASSES[d.id]
    groups = flag_groups(d)
    keys = list(groups)
    required = {
        attr_name(a.name): _arg_st(a, depth)
        for a in d.args
        if not a.is_flags and a.flag_field is None
    }
    # a value strategy per optional non-true field; the group's bit decides presence
    optional = {
        attr_name(a.name): (a.flag_field, a.flag_bit, _arg_st(a, depth))
        for a in d.args
        if a.flag_field is not None and a.type != "true"
    }
    trues = {attr_name(a.name): (a.flag_field, a.flag_bit) for a in d.args if a.is_true_flag}

    @st.composite
    def build(draw: st.DrawFn) -> Any:
        on = {k: (depth < H_MAX_DEPTH and draw(st.booleans())) for k in keys}
        kw: dict[str, Any] = {n: draw(s) for n, s in required.items()}
        for n, (f, bit) in trues.items():
            kw[n] = on[(f, bit)]
        for n, (f, bit, s) in optional.items():
            kw[n] = draw(s) if on[(f, bit)] else None
        return cls(**kw)

    return build()


any_object = st.sampled_from(ALL_IDS).flatmap(lambda cid: object_strategy(DEFS[cid]))


@settings(
    max_examples=600,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(obj=any_object)
def test_hypothesis_any_class(obj: TLObject) -> None:
    assert_roundtrip(obj)


_HOT_TYPES = [
    "Message",
    "Update",
    "Updates",
    "User",
    "Chat",
    "MessageMedia",
    "InputMedia",
    "MessageEntity",
    "ReplyMarkup",
    "PageBlock",
    "RichText",
    "MessageAction",
]


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(obj=st.sampled_from(_HOT_TYPES).flatmap(lambda t: type_strategy(t, 0)))
def test_hypothesis_hot_types(obj: TLObject) -> None:
    assert_roundtrip(obj)


@pytest.mark.parametrize(
    "obj",
    [
        types.User(id=1, bot=True),  # bot:flags.14?true without bot_info_version
        types.User(id=1, bot_info_version=2),
        types.Message(id=1, peer_id=types.PeerUser(user_id=1), date=0, message="", views=5),
        types.CodeSettings(token="t"),  # token and app_sandbox share flags.8
    ],
    ids=["true-only", "value-only", "views-without-forwards", "token-without-sandbox"],
)
def test_shared_flag_bit_mismatch_is_refused(obj: TLObject) -> None:
    """Writing one field of a shared-bit group alone would yield unparseable bytes."""
    with pytest.raises(TLEncodeError, match="must be set together"):
        obj.to_bytes()


def test_shared_flag_groups_are_checked_for_every_class() -> None:
    for d in DEFS.values():
        for (_, _), members in flag_groups(d).items():
            if len(members) < 2:
                continue
            kw = ValueGen(d.id, fill=0.0).kwargs(d)
            first = members[0]
            gen = ValueGen(d.id + 1, fill=0.0)
            kw[attr_name(first.name)] = True if first.type == "true" else gen.value(first, 9)
            with pytest.raises(TLEncodeError):
                CLASSES[d.id](**kw).to_bytes()
