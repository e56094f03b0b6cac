"""Hostile and broken input: the codec answers only with ``TLDecodeError``.

Truncation at every offset, unknown and misplaced constructors, absurd vector and
byte lengths, gzip bombs and broken gzip, deep nesting, and random / mutated bytes.
Nothing may escape as IndexError, struct.error, KeyError, RecursionError,
MemoryError, zlib.error...
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from teamgram.tl import (
    CLASSES,
    TLDecodeError,
    UnknownConstructorError,
    decode,
    decode_prefix,
    functions,
    gzip_packed,
    types,
)
from teamgram.tl.core import (
    BOOL_TRUE_ID,
    GZIP_PACKED_ID,
    MAX_DEPTH,
    MAX_INFLATED,
    VECTOR_ID,
    Reader,
    write_bytes,
    write_value,
)

I = struct.Struct("<I").pack  # noqa: E741
i32 = struct.Struct("<i").pack
q64 = struct.Struct("<q").pack
VEC = I(VECTOR_ID)


def _packed(raw_gzip: bytes) -> bytes:
    """A gzip_packed wrapper around arbitrary (possibly broken) compressed bytes."""
    b = bytearray(I(GZIP_PACKED_ID))
    write_bytes(b, raw_gzip)
    return bytes(b)


def _message(i: int = 1, text: str = "hello") -> Any:
    return types.Message(
        id=i,
        peer_id=types.PeerChannel(channel_id=2**40),
        date=1_700_000_000,
        message=text,
        out=True,
        from_id=types.PeerUser(user_id=7),
        fwd_from=types.MessageFwdHeader(date=5, from_name="origin"),
        reply_to=types.MessageReplyHeader(reply_to_msg_id=3, quote_text="q"),
        entities=[
            types.MessageEntityBold(offset=0, length=2),
            types.MessageEntityTextUrl(offset=2, length=3, url="https://x.y"),
        ],
        views=10,
        forwards=2,
        post_author="автор " * 50,
        grouped_id=-1,
        restriction_reason=[],
        ttl_period=0,
    )


SAMPLES: dict[str, bytes] = {
    "message": _message().to_bytes(),
    "user": types.User(
        id=1,
        first_name="Ж" * 200,
        bot=True,
        bot_info_version=3,
        usernames=[types.Username(username="a")],
    ).to_bytes(),
    "updates": types.Updates(
        updates=[types.UpdateNewMessage(message=_message(n), pts=n, pts_count=1) for n in range(3)],
        users=[types.User(id=9)],
        chats=[types.ChatEmpty(id=1)],
        date=1,
        seq=0,
    ).to_bytes(),
    "resPQ": types.ResPQ(
        nonce=b"n" * 16, server_nonce=b"s" * 16, pq=b"pq", server_public_key_fingerprints=[1, 2]
    ).to_bytes(),
    "future_salts": types.FutureSalts(
        req_msg_id=1, now=2, salts=[types.FutureSalt(valid_since=1, valid_until=2, salt=3)] * 2
    ).to_bytes(),
    "invokeWithLayer": functions.InvokeWithLayer(
        layer=229,
        query=functions.InitConnection(
            api_id=1,
            device_model="d",
            system_version="s",
            app_version="a",
            system_lang_code="en",
            lang_pack="",
            lang_code="en",
            query=functions.langpack.GetStrings(lang_pack="x", lang_code="y", keys=["k1", "k2"]),
        ),
    ).to_bytes(),
    "sendMessage": functions.messages.SendMessage(
        peer=types.InputPeerSelf(),
        message="x" * 300,
        random_id=5,
        entities=[types.MessageEntityCode(offset=0, length=1)],
    ).to_bytes(),
    "gzip_packed": gzip_packed(types.UpdateShort(update=types.UpdateConfig(), date=1).to_bytes()),
    "bool": I(BOOL_TRUE_ID),
}


def _vector_of_users() -> bytes:
    b = bytearray()
    write_value(b, [types.User(id=n, first_name="u") for n in range(3)], "object")
    return bytes(b)


SAMPLES["vector<User>"] = _vector_of_users()


# -- truncation -------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_prefix_is_rejected(name: str) -> None:
    data = SAMPLES[name]
    assert decode(data) is not None  # the whole thing is fine
    for n in range(len(data)):
        with pytest.raises(TLDecodeError):
            decode(data[:n])
        with pytest.raises(TLDecodeError):
            decode_prefix(data, 0, n)  # same through the end bound


@pytest.mark.parametrize("name", ["message", "updates", "vector<User>"])
def test_truncated_inside_gzip(name: str) -> None:
    compressed = zlib.compress(SAMPLES[name], 9, wbits=31)
    assert decode(_packed(compressed)) == decode(SAMPLES[name])
    for n in range(len(compressed)):
        with pytest.raises(TLDecodeError):
            decode(_packed(compressed[:n]))


def test_truncated_rpc_results() -> None:
    data = SAMPLES["vector<User>"]
    for n in range(len(data)):
        with pytest.raises(TLDecodeError):
            functions.users.GetUsers.read_result(data[:n])
    b = bytearray()
    functions.contacts.GetContactIDs.write_result(b, [1, 2, 3])
    for n in range(len(b)):
        with pytest.raises(TLDecodeError):
            functions.contacts.GetContactIDs.read_result(bytes(b[:n]))


# -- constructors -----------------------------------------------------------------------


def test_unknown_constructor() -> None:
    with pytest.raises(UnknownConstructorError) as exc:
        decode(I(0xDEADBEEF) + b"\0" * 16)
    assert exc.value.constructor_id == 0xDEADBEEF and exc.value.offset == 0
    # nested in a typed field (message.peer_id), reported at its offset
    data = bytearray(SAMPLES["message"])
    peer_at = data.index(I(types.PeerChannel.CONSTRUCTOR_ID))
    data[peer_at : peer_at + 4] = I(0x0BADF00D)
    with pytest.raises(UnknownConstructorError) as exc:
        decode(bytes(data))
    assert exc.value.constructor_id == 0x0BADF00D and exc.value.offset == peer_at
    # nested in a generic !X query
    inner = bytearray(
        functions.InvokeWithLayer(layer=1, query=functions.help.GetConfig()).to_bytes()
    )
    inner[-4:] = I(0x12345678)
    with pytest.raises(UnknownConstructorError):
        decode(bytes(inner))
    # in a vector of objects
    vec = bytearray(SAMPLES["vector<User>"])
    vec[8:12] = I(0xFFFFFFFF)
    with pytest.raises(UnknownConstructorError):
        functions.users.GetUsers.read_result(bytes(vec))
    assert issubclass(UnknownConstructorError, TLDecodeError)


@pytest.mark.parametrize(
    "obj",
    [
        # a User where the field type is Peer
        types.Message(id=1, peer_id=types.User(id=1), date=0, message=""),
        # an InputPeer where Peer is expected
        types.Message(id=1, peer_id=types.InputPeerSelf(), date=0, message=""),
        # a function where a constructor is expected
        types.UpdateShort(update=functions.help.GetConfig(), date=0),
        # wrong element types in a vector
        types.Updates(updates=[], users=[types.ChatEmpty(id=1)], chats=[], date=0, seq=0),
        types.Updates(updates=[types.PeerUser(user_id=1)], users=[], chats=[], date=0, seq=0),
        # optional typed field
        types.Message(
            id=1,
            peer_id=types.PeerUser(user_id=1),
            date=0,
            message="",
            fwd_from=types.MessageReplyHeader(),
        ),
    ],
    ids=[
        "user-as-peer",
        "inputpeer-as-peer",
        "function-as-update",
        "chat-in-users",
        "peer-in-updates",
        "optional-field",
    ],
)
def test_wrong_constructor_for_typed_field(obj: Any) -> None:
    data = obj.to_bytes()  # our writer does not check field types; the reader must
    with pytest.raises(TLDecodeError) as exc:
        decode(data)
    assert not isinstance(exc.value, UnknownConstructorError)
    assert "not of the expected type" in str(exc.value)


def test_wrong_type_hidden_in_gzip_packed_field() -> None:
    good = types.UpdateShort(update=types.UpdateConfig(), date=5).to_bytes()
    ok = good[:4] + gzip_packed(types.UpdateConfig().to_bytes()) + good[8:]
    assert decode(ok) == types.UpdateShort(update=types.UpdateConfig(), date=5)
    for wrong in (
        types.PeerUser(user_id=1).to_bytes(),
        I(BOOL_TRUE_ID),
        _vector_of_users(),
        functions.help.GetConfig().to_bytes(),
    ):
        bad = good[:4] + gzip_packed(wrong) + good[8:]
        with pytest.raises(TLDecodeError, match="not of the expected type"):
            decode(bad)


def test_bool_and_vector_headers_are_checked() -> None:
    # Bool field holding another constructor
    data = bytearray(
        functions.messages.GetMessagesViews(
            peer=types.InputPeerSelf(), id=[1], increment=True
        ).to_bytes()
    )
    data[-4:] = I(types.InputPeerSelf.CONSTRUCTOR_ID)
    with pytest.raises(TLDecodeError, match="expected Bool"):
        decode(bytes(data))
    # Vector header replaced
    data = bytearray(types.MsgsAck(msg_ids=[1, 2]).to_bytes())
    data[4:8] = I(0x11111111)
    with pytest.raises(TLDecodeError, match="expected Vector"):
        decode(bytes(data))
    with pytest.raises(TLDecodeError, match="expected Vector"):
        functions.contacts.GetContactIDs.read_result(types.User(id=1).to_bytes())


# -- lengths ------------------------------------------------------------------------------


@pytest.mark.parametrize("count", [-1, -(2**31), 2**31 - 1, 2**28, 3, 1_000_000])
def test_absurd_vector_lengths(count: int) -> None:
    msgs_ack = I(types.MsgsAck.CONSTRUCTOR_ID) + VEC + i32(count) + q64(1) * 2  # Vector<long>
    get_users = (
        I(functions.users.GetUsers.CONSTRUCTOR_ID)
        + VEC
        + i32(count)
        + types.InputUserSelf().to_bytes()
    )  # Vector<InputUser>
    get_strings = (
        I(functions.langpack.GetStrings.CONSTRUCTOR_ID)
        + b"\0\0\0\0" * 2
        + VEC
        + i32(count)
        + b"\x01a\0\0"
    )  # Vector<string>
    salts = I(types.FutureSalts.CONSTRUCTOR_ID) + q64(1) + i32(2) + i32(count)  # bare vector
    top = VEC + i32(count) + types.InputUserSelf().to_bytes()  # bare top-level Vector
    for data in (msgs_ack, get_users, get_strings, salts, top):
        with pytest.raises(TLDecodeError):
            decode(data)
    for fn in (
        functions.contacts.GetContactIDs,
        functions.messages.ReceivedQueue,
        functions.users.GetUsers,
        functions.langpack.GetLangPack,
    ):
        with pytest.raises(TLDecodeError):
            fn.read_result(VEC + i32(count) + b"\0" * 8)


def test_vector_length_checks_are_cheap() -> None:
    # a huge claimed count over a tiny body must fail before allocating anything
    r = Reader(VEC + i32(2**31 - 1))
    with pytest.raises(TLDecodeError, match="bad vector length"):
        r.vector_len()


@pytest.mark.parametrize(
    "header",
    [
        bytes([200]) + b"abc",  # short form: 200 bytes announced, 3 present
        bytes([253]),  # short form, nothing present
        bytes([254, 0xFF, 0xFF, 0xFF]) + b"x" * 100,  # long form: 16 MiB announced
        bytes([254, 0x00, 0x01, 0x00]) + b"x" * 255,  # long form: 256 announced, 255 present
        bytes([254, 0x01]),  # long-form header itself cut
        bytes([5]) + b"hello",  # data present but the padding is missing
    ],
)
def test_bytes_length_past_the_end(header: bytes) -> None:
    data = I(types.DataJSON.CONSTRUCTOR_ID) + header
    with pytest.raises(TLDecodeError):
        decode(data)
    data = I(types.SecureData.CONSTRUCTOR_ID) + b"\0\0\0\0" + header
    with pytest.raises(TLDecodeError):
        decode(data)


def test_invalid_utf8_is_not_an_exception() -> None:
    data = I(types.DataJSON.CONSTRUCTOR_ID) + bytes([3]) + b"\xff\xfe\x80"
    assert decode(data).data == "\ufffd" * 3


# -- gzip ---------------------------------------------------------------------------------


def test_gzip_bomb_is_refused() -> None:
    bomb = zlib.compress(b"\0" * (MAX_INFLATED + 1024), 9, wbits=31)
    assert len(bomb) < 64 * 1024
    with pytest.raises(TLDecodeError, match="beyond the limit"):
        decode(_packed(bomb))


def test_gzip_exactly_at_the_limit_is_accepted() -> None:
    # secureData: id, data (4-byte header + n bytes), two empty bytes fields (4 each)
    n = MAX_INFLATED - 16
    raw = (
        I(types.SecureData.CONSTRUCTOR_ID)
        + bytes([254])
        + n.to_bytes(3, "little")
        + b"\0" * n
        + b"\0\0\0\0" * 2
    )
    assert len(raw) == MAX_INFLATED
    got = decode(_packed(zlib.compress(raw, 1, wbits=31)))
    assert len(got.data) == n
    with pytest.raises(TLDecodeError, match="beyond the limit"):
        decode(_packed(zlib.compress(raw + b"\0\0\0\0", 1, wbits=31)))


def test_nested_gzip_bomb_is_refused() -> None:
    inner = _packed(zlib.compress(b"\0" * (MAX_INFLATED + 4), 9, wbits=31))
    outer = _packed(zlib.compress(inner, 9, wbits=31))
    with pytest.raises(TLDecodeError, match="beyond the limit"):
        decode(outer)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not gzip at all",
        b"\x1f\x8b\x08\x00" + b"\0" * 20,  # gzip header, garbage deflate stream
        zlib.compress(b"abc")[:-1],  # zlib stream missing part of its adler32
        bytes(range(256)),
    ],
    ids=["empty", "text", "bad-deflate", "cut-zlib", "noise"],
)
def test_invalid_gzip(raw: bytes) -> None:
    with pytest.raises(TLDecodeError):
        decode(_packed(raw))


def test_gzip_crc_mismatch_and_missing_trailer() -> None:
    payload = types.UpdateShort(update=types.UpdateConfig(), date=1).to_bytes()
    good = zlib.compress(payload, 6, wbits=31)
    assert decode(_packed(good)) == decode(payload)
    bad_crc = good[:-8] + bytes([good[-8] ^ 0xFF]) + good[-7:]
    with pytest.raises(TLDecodeError, match="gzip"):
        decode(_packed(bad_crc))
    # the deflate data is complete (the object inflates whole) but the trailer is gone
    for cut in (1, 4, 8):
        with pytest.raises(TLDecodeError, match="truncated"):
            decode(_packed(good[:-cut]))


def test_gzip_inflating_to_garbage() -> None:
    with pytest.raises(TLDecodeError):
        decode(_packed(zlib.compress(b"\x01\x02", wbits=31)))
    with pytest.raises(UnknownConstructorError):
        decode(_packed(zlib.compress(b"\xff" * 64, wbits=31)))


# -- nesting ------------------------------------------------------------------------------


def _nested_rich_text(depth: int) -> bytes:
    # textBold#6724abc4 text:RichText, around textPlain#744694e0 text:string
    data = types.TextPlain(text="x").to_bytes()
    return I(types.TextBold.CONSTRUCTOR_ID) * (depth - 1) + data


def test_deep_nesting_is_refused() -> None:
    assert decode(_nested_rich_text(MAX_DEPTH)) is not None
    for depth in (MAX_DEPTH + 1, 1000, 100_000):
        with pytest.raises(TLDecodeError, match="nested too deeply"):
            decode(_nested_rich_text(depth))


def test_deep_generic_nesting_is_refused() -> None:
    data = I(functions.InvokeWithoutUpdates.CONSTRUCTOR_ID) * 10_000
    data += functions.help.GetConfig().to_bytes()
    with pytest.raises(TLDecodeError, match="nested too deeply"):
        decode(data)


def test_deep_nesting_through_gzip_is_refused() -> None:
    data = types.TextPlain(text="x").to_bytes()
    for _ in range(MAX_DEPTH + 2):
        data = gzip_packed(data)
    with pytest.raises(TLDecodeError, match="nested too deeply"):
        decode(data)


def test_deep_nesting_through_vectors_is_refused() -> None:
    # top-level Vector of one Vector of one Vector ...
    data = (VEC + i32(1)) * 5000 + types.TextPlain(text="x").to_bytes()
    with pytest.raises(TLDecodeError):
        decode(data)


# -- fuzzing ------------------------------------------------------------------------------

ALL_IDS = sorted(CLASSES)
FUZZ = settings(
    max_examples=2000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _only_decode_errors(data: bytes) -> None:
    try:
        decode(data)
    except TLDecodeError:
        pass
    try:
        decode_prefix(data, 0)
    except TLDecodeError:
        pass


@FUZZ
@given(data=st.binary(max_size=512))
def test_random_bytes(data: bytes) -> None:
    _only_decode_errors(data)


@FUZZ
@given(cid=st.sampled_from(ALL_IDS), body=st.binary(max_size=512))
def test_random_body_after_a_known_constructor(cid: int, body: bytes) -> None:
    _only_decode_errors(I(cid) + body)


@FUZZ
@given(
    cid=st.sampled_from(ALL_IDS),
    words=st.lists(
        st.one_of(
            st.sampled_from(ALL_IDS),
            st.integers(-5, 300),
            st.just(VECTOR_ID),
            st.just(BOOL_TRUE_ID),
            st.integers(0, 2**32 - 1),
        ),
        max_size=64,
    ),
)
def test_random_words_after_a_known_constructor(cid: int, words: list[int]) -> None:
    """4-byte words drawn from ids, small counts and headers walk deep into readers."""
    _only_decode_errors(I(cid) + b"".join(I(w & 0xFFFFFFFF) for w in words))


@FUZZ
@given(
    name=st.sampled_from(sorted(SAMPLES)),
    edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=6),
    cut=st.integers(0, 10_000),
)
def test_mutated_valid_serializations(name: str, edits: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(SAMPLES[name])
    for pos, value in edits:
        data[pos % len(data)] = value
    _only_decode_errors(bytes(data))
    _only_decode_errors(bytes(data[: cut % (len(data) + 1)]))


@FUZZ
@given(data=st.binary(max_size=256))
def test_random_rpc_results(data: bytes) -> None:
    for fn in (
        functions.users.GetUsers,
        functions.contacts.GetContactIDs,
        functions.messages.ReceivedQueue,
        functions.help.GetConfig,
        functions.langpack.GetLangPack,
    ):
        for payload in (data, VEC + data):
            try:
                fn.read_result(payload)
            except TLDecodeError:
                pass
