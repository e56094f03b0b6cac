"""wire: exact round trips of every kind it carries, strict refusal of everything else."""

from __future__ import annotations

import dataclasses
import enum
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from teamgram.errors import RpcError
from teamgram.infra import wire
from teamgram.infra.wire import WireError, dumps, loads
from teamgram.tl import types


@wire.register
@dataclasses.dataclass(frozen=True, slots=True)
class Point:
    x: int
    y: int = 0


@wire.register(name="test.Box")
@dataclasses.dataclass
class Box:
    label: str
    items: list[Any]
    where: Point | None = None
    peer: Any = None
    size: int = dataclasses.field(default=0, init=False)


class Color(enum.IntEnum):
    RED = 1
    GREEN = 2


wire.register(Color)


@dataclasses.dataclass
class Unregistered:
    a: int


def exact(a: Any, b: Any) -> bool:
    """Equal and of the same types all the way down (1 == 1.0 == True would pass ==)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(exact(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(
            exact(k1, k2) and exact(a[k1], b[k2]) for k1, k2 in zip(a, b, strict=True)
        )
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return bool(a == b)


def roundtrip(v: Any) -> Any:
    out = loads(dumps(v))
    assert exact(v, out), (v, out)
    return out


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        False,
        0,
        1,
        -1,
        2**63 - 1,
        -(2**63),
        2**63,
        -(2**63) - 1,
        2**64,
        -(2**200) + 12345,
        10**400,
        0.0,
        -0.0,
        1.5,
        float("inf"),
        -float("inf"),
        1e-310,
        "",
        "hello",
        "кириллица 🎉 \x00",
        "\ud800",  # a lone surrogate survives
        b"",
        b"\x00\xff" * 1000,
        [],
        [1, "a", None],
        (),
        (1, (2, (3,))),
        {},
        {"a": 1, 2: "b", (1, 2): [3], None: None, frozenset({1}): b"x", True: 0},
        set(),
        {1, "a", (1, 2)},
        frozenset({b"x", 3}),
        [{"k": [(1, 2.5, {3, 4})]}],
        "x" * 100_000,
    ],
)
def test_roundtrip(value: Any) -> None:
    roundtrip(value)


def test_nan() -> None:
    assert math.isnan(loads(dumps(float("nan"))))


def test_bool_and_int_stay_apart() -> None:
    out = loads(dumps([True, 1, False, 0, 1.0]))
    assert [type(x) for x in out] == [bool, int, bool, int, float]


def test_small_values_are_compact() -> None:
    assert len(dumps(None)) == 1
    assert len(dumps(5)) == 2
    assert len(dumps("abc")) == 5
    assert len(dumps((1, {"a": 2}))) == 11


def test_tl_objects_nested() -> None:
    msg = types.Message(
        id=7,
        peer_id=types.PeerUser(user_id=10),
        date=1_700_000_000,
        message="hi " * 300,
        entities=[types.MessageEntityBold(offset=0, length=2)],
    )
    value = {
        "msgs": [msg, types.PeerChannel(channel_id=2**40)],
        "peer": (types.PeerUser(user_id=1),),
    }
    out = roundtrip(value)
    assert out["msgs"][0].entities[0] == types.MessageEntityBold(offset=0, length=2)


def test_registered_dataclasses() -> None:
    box = Box("b", [Point(1, 2), Point(3)], where=Point(-5, 2**70), peer=types.PeerUser(user_id=9))
    box.size = 42  # an init=False field travels too
    out = roundtrip(box)
    assert out.size == 42 and type(out.where) is Point
    assert wire.registered_name(Box) == "test.Box"
    assert wire.registered_name(Point) == f"{__name__}.Point"


def test_registered_enum() -> None:
    out = roundtrip([Color.GREEN, 2])
    assert out[0] is Color.GREEN and type(out[1]) is int


def test_rpc_error() -> None:
    out = loads(dumps({"error": RpcError(420, "FLOOD_WAIT_30")}))["error"]
    assert type(out) is RpcError and (out.code, out.message) == (420, "FLOOD_WAIT_30")
    neg = loads(dumps(RpcError(-503, "Timeout")))
    assert (neg.code, neg.message) == (-503, "Timeout")


@pytest.mark.parametrize(
    "value",
    [
        Unregistered(1),
        [Unregistered(1)],
        object(),
        bytearray(b"x"),
        memoryview(b"x"),
        enum.Enum("E", "A").A,  # type: ignore[attr-defined]
        type("MyStr", (str,), {})("s"),
        type("MyErr", (RpcError,), {})(400, "X"),
        1 + 2j,
        len,
    ],
)
def test_refuses_what_it_does_not_carry(value: Any) -> None:
    with pytest.raises(TypeError):
        dumps(value)


def test_register_refuses() -> None:
    with pytest.raises(TypeError):
        wire.register(int)
    with pytest.raises(ValueError):

        @wire.register(name="test.Box")
        @dataclasses.dataclass
        class Other:
            a: int

    wire.register(Box, name="test.Box")  # again, same name: fine
    with pytest.raises(ValueError):
        wire.register(Box, name="test.Box2")


def test_cycles_are_refused() -> None:
    a: list[Any] = []
    a.append(a)
    with pytest.raises(ValueError):
        dumps(a)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x99",  # unknown tag
        b"\x06\x05ab",  # truncated str
        b"\x03",  # truncated varint
        b"\x03" + b"\xff" * 11,  # varint too long
        b"\x08\xff\xff\x03",  # count larger than the input
        b"\x07\x02\x00",  # truncated bytes
        b"\x05\x00\x00",  # truncated float
        b"\x0d\x04\x00\x00\x00\x00",  # TL with an unknown constructor
        b"\x0e\x03abc\x00",  # unknown dataclass
        b"\x0a\x01\x08\x00\x00",  # an unhashable dict key
        b"\x0b\x01\x08\x00",  # an unhashable set member
        b"\x06\x01\xff",  # bad UTF-8
        b"\x00\x00",  # trailing bytes
        b"\x08\x01" * 200 + b"\x00",  # nested too deeply
    ],
)
def test_malformed_input(data: bytes) -> None:
    with pytest.raises(WireError):
        loads(data)


def test_dataclass_field_mismatch() -> None:
    name = "test.Box"
    body = bytearray([wire.DATACLASS, len(name)]) + name.encode()
    unknown = body + bytes([1, 4]) + b"nope" + bytes([wire.NONE])
    with pytest.raises(WireError, match="no field"):
        loads(bytes(unknown))
    missing = body + bytes([0])  # 'label' and 'items' have no default
    with pytest.raises(WireError):
        loads(bytes(missing))


def test_enum_bad_value() -> None:
    data = dumps(Color.RED).replace(bytes([wire.INT, 2]), bytes([wire.INT, 20]))
    with pytest.raises(WireError):
        loads(data)


def test_every_truncation_is_a_wire_error() -> None:
    data = dumps([Box("b", [Point(1, 2)], peer=types.PeerUser(user_id=1)), {"x": 2**80}, 1.5])
    for n in range(len(data)):
        with pytest.raises(WireError):
            loads(data[:n])


plain = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary(),
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.lists(inner, max_size=5).map(tuple)
        | st.dictionaries(st.text(max_size=5) | st.integers(), inner, max_size=5)
        | st.frozensets(st.integers() | st.text(max_size=5), max_size=5)
    ),
    max_leaves=30,
)


@given(plain)
def test_roundtrip_property(value: Any) -> None:
    roundtrip(value)


@given(st.binary(max_size=64))
def test_garbage_never_escapes_as_another_error(data: bytes) -> None:
    try:
        loads(data)
    except WireError:
        pass
