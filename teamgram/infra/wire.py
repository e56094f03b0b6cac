"""A compact, safe binary codec for the arguments and results of service calls.

Split mode (#9) sends service calls between processes; pickle would let any peer
that can reach a port run code in ours, so this codec knows a closed set of kinds
and builds nothing else:

    None, bool, int (any size), float, str, bytes, list, tuple, dict, set,
    frozenset, TL objects (their own serialization), RpcError (code, message),
    and the dataclasses and enums registered with :func:`register`.

Types are kept exactly: a tuple comes back a tuple, a frozenset a frozenset, and
a subclass of a supported type (an ``IntEnum`` that was not registered, a
``bytearray``) is refused rather than silently turned into its base class.

Every value is a one-byte tag and a body; counts and lengths are unsigned LEB128
varints, ints that fit 64 bits a zigzag varint. Decoding checks every length
against the input, the nesting depth and that nothing follows the value, and
raises :class:`WireError` for anything else (never IndexError or struct.error).

A registered dataclass is written as its wire name and ``(field name, value)``
pairs, so field order may change between versions. Decoding is strict: an
unknown field name or a missing field without a default is a WireError, so a
peer running another version fails loudly instead of getting half an object.
"""

from __future__ import annotations

import dataclasses
import enum
import struct
from collections.abc import Callable
from typing import Any, TypeVar, cast, overload

from teamgram.errors import RpcError
from teamgram.tl import TLDecodeError, TLObject, decode

__all__ = ["WireError", "dumps", "loads", "register", "registered_name"]

# Nesting deeper than this is refused (hostile input, not a real argument).
MAX_DEPTH = 100

T = TypeVar("T")


class WireError(ValueError):
    """Bytes that are not a valid encoding (truncated, unknown tag, unknown class...)."""


# Tags: one byte before every value. Never renumber: peers of other versions read them.
NONE = 0x00
FALSE = 0x01
TRUE = 0x02
INT = 0x03  # zigzag varint, |value| < 2**63
BIGINT = 0x04  # varint length + signed little-endian two's complement
FLOAT = 0x05  # IEEE 754 double, little-endian
STR = 0x06  # varint length + UTF-8
BYTES = 0x07  # varint length + bytes
LIST = 0x08  # varint count + values
TUPLE = 0x09
DICT = 0x0A  # varint count + (key, value) pairs
SET = 0x0B
FROZENSET = 0x0C
TL = 0x0D  # varint length + the object's TL serialization (boxed)
DATACLASS = 0x0E  # wire name (str body) + varint count + (field name, value) pairs
ENUM = 0x0F  # wire name (str body) + the member's value
RPC_ERROR = 0x10  # zigzag varint code + message (str body)

_DOUBLE = struct.Struct("<d")
_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1


# --- registry -----------------------------------------------------------------------

# wire name -> class, and back; filled by register().
_BY_NAME: dict[str, type] = {}
_NAMES: dict[type, str] = {}
# dataclass -> (fields passed to __init__, fields set afterwards), names of each
_FIELDS: dict[type, tuple[tuple[str, ...], tuple[str, ...]]] = {}


@overload
def register(cls: type[T], *, name: str | None = None) -> type[T]: ...
@overload
def register(cls: None = None, *, name: str | None = None) -> Callable[[type[T]], type[T]]: ...
def register(cls: type[T] | None = None, *, name: str | None = None) -> Any:
    """Allow a dataclass or an Enum on the wire (``@register`` or ``register(Cls)``).

    ``name`` is what travels; it defaults to ``module.QualName``. Give one that does
    not change when the class moves, if processes of two versions may talk. The
    same class may be registered twice under the same name; a name taken by another
    class is a ValueError.
    """

    def apply(c: type[T]) -> type[T]:
        if not isinstance(c, type):
            raise TypeError(f"wire.register takes a class, not {c!r}")
        is_enum = issubclass(c, enum.Enum)
        if not is_enum and not dataclasses.is_dataclass(c):
            raise TypeError(f"wire.register: {c.__qualname__} is neither a dataclass nor an Enum")
        wire_name = name or f"{c.__module__}.{c.__qualname__}"
        owner = _BY_NAME.get(wire_name)
        if owner is not None and owner is not c:
            raise ValueError(f"wire name {wire_name!r} is already taken by {owner!r}")
        old = _NAMES.get(c)
        if old is not None and old != wire_name:
            raise ValueError(f"{c!r} is already registered as {old!r}")
        _BY_NAME[wire_name] = c
        _NAMES[c] = wire_name
        if not is_enum:
            fields = dataclasses.fields(cast(Any, c))
            _FIELDS[c] = (
                tuple(f.name for f in fields if f.init),
                tuple(f.name for f in fields if not f.init),
            )
        return c

    return apply if cls is None else apply(cls)


def registered_name(cls: type) -> str | None:
    """The wire name of a registered class, or None."""
    return _NAMES.get(cls)


# --- encoding -----------------------------------------------------------------------


def dumps(value: Any) -> bytes:
    """Encode ``value``; TypeError for anything the codec does not carry."""
    out = bytearray()
    _write(out, value, 0)
    return bytes(out)


def _varint(out: bytearray, n: int) -> None:
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _write_str_body(out: bytearray, s: str) -> None:
    data = s.encode("utf-8", "surrogatepass")
    _varint(out, len(data))
    out += data


def _write(out: bytearray, v: Any, depth: int) -> None:
    t = type(v)
    # The common kinds first, by exact type: subclasses go through the slow path.
    if t is str:
        out.append(STR)
        _write_str_body(out, v)
    elif t is int:
        if _INT64_MIN <= v <= _INT64_MAX:
            out.append(INT)
            _varint(out, (v << 1) ^ (v >> 63))
        else:
            data = v.to_bytes((v.bit_length() + 8) // 8, "little", signed=True)
            out.append(BIGINT)
            _varint(out, len(data))
            out += data
    elif v is None:
        out.append(NONE)
    elif v is True:
        out.append(TRUE)
    elif v is False:
        out.append(FALSE)
    elif t is bytes:
        out.append(BYTES)
        _varint(out, len(v))
        out += v
    elif isinstance(v, TLObject):
        data = v.to_bytes()
        out.append(TL)
        _varint(out, len(data))
        out += data
    elif t is float:
        out.append(FLOAT)
        out += _DOUBLE.pack(v)
    else:
        if depth >= MAX_DEPTH:
            raise ValueError(f"wire: value nested deeper than {MAX_DEPTH}")
        _write_container(out, v, t, depth + 1)


_SEQUENCE_TAGS: dict[type, int] = {
    list: LIST,
    tuple: TUPLE,
    set: SET,
    frozenset: FROZENSET,
}


def _write_container(out: bytearray, v: Any, t: type, depth: int) -> None:
    tag = _SEQUENCE_TAGS.get(t)
    if tag is not None:
        out.append(tag)
        _varint(out, len(v))
        for x in v:
            _write(out, x, depth)
    elif t is dict:
        out.append(DICT)
        _varint(out, len(v))
        for k, x in v.items():
            _write(out, k, depth)
            _write(out, x, depth)
    elif t is RpcError:
        out.append(RPC_ERROR)
        code = int(v.code)
        if not _INT64_MIN <= code <= _INT64_MAX:
            raise ValueError(f"wire: RpcError code {code} out of range")
        _varint(out, (code << 1) ^ (code >> 63))
        _write_str_body(out, str(v.message))
    else:
        name = _NAMES.get(t)
        if name is None:
            raise TypeError(
                f"wire: cannot encode {t.__module__}.{t.__qualname__}"
                " (register dataclasses and enums with teamgram.infra.wire.register)"
            )
        if isinstance(v, enum.Enum):
            out.append(ENUM)
            _write_str_body(out, name)
            _write(out, v.value, depth)
            return
        init, later = _FIELDS[t]
        out.append(DATACLASS)
        _write_str_body(out, name)
        _varint(out, len(init) + len(later))
        for f in init:
            _write_str_body(out, f)
            _write(out, getattr(v, f), depth)
        for f in later:
            _write_str_body(out, f)
            _write(out, getattr(v, f), depth)


# --- decoding -----------------------------------------------------------------------


def loads(data: bytes | bytearray | memoryview) -> Any:
    """Decode one value that must span all of ``data``; WireError for anything else."""
    r = _Reader(bytes(data))
    try:
        value = r.value(0)
    except WireError:
        raise
    except (TypeError, ValueError, RecursionError) as exc:
        # unhashable dict keys / set members, a class rejecting its fields, bad UTF-8
        raise WireError(f"wire: malformed input near offset {r.pos}: {exc}") from exc
    if r.pos != len(r.data):
        raise WireError(f"wire: {len(r.data) - r.pos} bytes after the value")
    return value


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        p = self.pos
        if n > len(self.data) - p:
            raise WireError(f"wire: truncated: need {n} bytes at offset {p}")
        self.pos = p + n
        return self.data[p : p + n]

    def varint(self) -> int:
        data = self.data
        p = self.pos
        n = 0
        shift = 0
        while True:
            if p >= len(data):
                raise WireError(f"wire: truncated varint at offset {self.pos}")
            b = data[p]
            p += 1
            n |= (b & 0x7F) << shift
            if b < 0x80:
                break
            shift += 7
            if shift > 63:  # 10 bytes carry 64 bits: longer is not ours
                raise WireError(f"wire: varint too long at offset {self.pos}")
        self.pos = p
        return n

    def count(self) -> int:
        # Every element takes at least one byte: refuse counts the input cannot hold.
        n = self.varint()
        if n > len(self.data) - self.pos:
            raise WireError(f"wire: count {n} exceeds the input at offset {self.pos}")
        return n

    def str_body(self) -> str:
        return self.take(self.varint()).decode("utf-8", "surrogatepass")

    def value(self, depth: int) -> Any:
        p = self.pos
        if p >= len(self.data):
            raise WireError(f"wire: truncated: value expected at offset {p}")
        tag = self.data[p]
        self.pos = p + 1
        if tag == STR:
            return self.str_body()
        if tag == INT:
            z = self.varint()
            return (z >> 1) ^ -(z & 1)
        if tag == NONE:
            return None
        if tag == TRUE:
            return True
        if tag == FALSE:
            return False
        if tag == BYTES:
            return self.take(self.varint())
        if tag == TL:
            body = self.take(self.varint())
            try:
                return decode(body)
            except TLDecodeError as exc:
                raise WireError(f"wire: bad TL object at offset {p}: {exc}") from exc
        if tag == FLOAT:
            return _DOUBLE.unpack(self.take(8))[0]
        if tag == BIGINT:
            return int.from_bytes(self.take(self.varint()), "little", signed=True)
        if depth >= MAX_DEPTH:
            raise WireError(f"wire: value nested deeper than {MAX_DEPTH}")
        depth += 1
        if tag == LIST:
            return [self.value(depth) for _ in range(self.count())]
        if tag == TUPLE:
            return tuple([self.value(depth) for _ in range(self.count())])
        if tag == DICT:
            n = self.count()
            d = {}
            for _ in range(n):
                k = self.value(depth)
                d[k] = self.value(depth)
            return d
        if tag == SET:
            return {self.value(depth) for _ in range(self.count())}
        if tag == FROZENSET:
            return frozenset([self.value(depth) for _ in range(self.count())])
        if tag == RPC_ERROR:
            z = self.varint()
            return RpcError((z >> 1) ^ -(z & 1), self.str_body())
        if tag == DATACLASS:
            return self.dataclass(p, depth)
        if tag == ENUM:
            cls = self.registered(p)
            if not issubclass(cls, enum.Enum):
                raise WireError(f"wire: {_NAMES[cls]!r} is not an Enum (offset {p})")
            return cls(self.value(depth))
        raise WireError(f"wire: unknown tag {tag:#04x} at offset {p}")

    def registered(self, p: int) -> type:
        name = self.str_body()
        cls = _BY_NAME.get(name)
        if cls is None:
            raise WireError(f"wire: unknown class {name!r} at offset {p} (not registered here)")
        return cls

    def dataclass(self, p: int, depth: int) -> Any:
        cls = self.registered(p)
        spec = _FIELDS.get(cls)
        if spec is None:
            raise WireError(f"wire: {_NAMES[cls]!r} is not a dataclass (offset {p})")
        init, later = spec
        kwargs: dict[str, Any] = {}
        after: dict[str, Any] = {}
        for _ in range(self.count()):
            f = self.str_body()
            if f in init:
                kwargs[f] = self.value(depth)
            elif f in later:
                after[f] = self.value(depth)
            else:
                raise WireError(f"wire: {_NAMES[cls]!r} has no field {f!r} (offset {p})")
        obj = cls(**kwargs)
        for f, v in after.items():
            object.__setattr__(obj, f, v)  # init=False fields, frozen classes too
        return obj
