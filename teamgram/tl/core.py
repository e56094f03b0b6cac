"""The TL wire codec shared by every generated class.

Generated classes hold only straight-line code; everything that needs bounds
checks or dispatch lives here. Reading raises :class:`TLDecodeError` for any
malformed input (the public :func:`decode` wraps low-level errors), so callers
never see an ``IndexError`` from deep inside a message.
"""

from __future__ import annotations

import struct
import zlib
from builtins import bytes as _bytes
from builtins import int as _int
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

VECTOR_ID = 0x1CB5C415
BOOL_TRUE_ID = 0x997275B5
BOOL_FALSE_ID = 0xBC799737
GZIP_PACKED_ID = 0x3072CFA1
MSG_CONTAINER_ID = 0x73F1F8DC
RPC_RESULT_ID = 0xF35C6D01

VECTOR_BYTES = struct.pack("<I", VECTOR_ID)
BOOL_TRUE_BYTES = struct.pack("<I", BOOL_TRUE_ID)
BOOL_FALSE_BYTES = struct.pack("<I", BOOL_FALSE_ID)

# A gzip_packed body larger than this after inflation is refused (zip bombs).
MAX_INFLATED = 16 * 1024 * 1024
# Nesting deeper than this is refused (hostile input, not a real object).
MAX_DEPTH = 64

_S_i = struct.Struct("<i")
_S_I = struct.Struct("<I")
_S_q = struct.Struct("<q")
_S_d = struct.Struct("<d")
pack_i = _S_i.pack
pack_I = _S_I.pack
pack_q = _S_q.pack
pack_d = _S_d.pack
unpack_i = _S_i.unpack_from
unpack_I = _S_I.unpack_from
unpack_q = _S_q.unpack_from
unpack_d = _S_d.unpack_from


class TLDecodeError(ValueError):
    """Input is not a valid TL serialization (truncated, unknown id, wrong type...)."""


class TLEncodeError(ValueError):
    """An object cannot be serialized (a field holds a value of the wrong kind)."""


# constructor id -> function reading the body that follows the id
READERS: dict[int, Callable[[Reader], Any]] = {}
# constructor id -> class, for introspection (layer adapters, tests, docs)
CLASSES: dict[int, type[TLObject]] = {}


def register(*classes: type[TLObject]) -> None:
    for cls in classes:
        READERS[cls.CONSTRUCTOR_ID] = cls._read
        CLASSES[cls.CONSTRUCTOR_ID] = cls


class TLObject:
    """Base of every generated constructor and function."""

    __slots__: tuple[str, ...] = ()
    CONSTRUCTOR_ID: ClassVar[int] = 0
    TL_NAME: ClassVar[str] = ""
    TL_TYPE: ClassVar[str] = ""

    def _write(self, b: bytearray) -> None:  # pragma: no cover - generated
        raise NotImplementedError

    @classmethod
    def _read(cls, r: Reader) -> Any:  # pragma: no cover - generated
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        b = bytearray()
        try:
            self._write(b)
        except (struct.error, TypeError, AttributeError) as exc:
            raise TLEncodeError(f"cannot serialize {self.TL_NAME}: {exc}") from exc
        return bytes(b)

    def _write_bare(self, b: bytearray) -> None:
        """Write without the constructor id (for %Type / bare vector elements)."""
        tmp = bytearray()
        self._write(tmp)
        b += memoryview(tmp)[4:]

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, f) == getattr(other, f) for f in self.__slots__)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        parts = []
        for f in self.__slots__:
            v = getattr(self, f)
            if v is None or v is False:
                continue
            parts.append(f"{f}={v!r}")
        return f"{type(self).__name__}({', '.join(parts)})"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"_": self.TL_NAME}
        for f in self.__slots__:
            out[f] = _to_plain(getattr(self, f))
        return out


def _to_plain(v: Any) -> Any:
    if isinstance(v, TLObject):
        return v.to_dict()
    if isinstance(v, list):
        return [_to_plain(x) for x in v]
    return v


class TLFunction(TLObject):
    """A request. ``RESULT_ELEM`` says how a ``Vector`` result is written."""

    __slots__ = ()
    RESULT_TYPE: ClassVar[str] = ""
    # None: the result is an object (or Bool); otherwise the element kind of a
    # Vector result: "int", "long", "string", "bytes", "object".
    RESULT_ELEM: ClassVar[str | None] = None

    @classmethod
    def write_result(cls, b: bytearray, value: Any) -> None:
        write_value(b, value, cls.RESULT_ELEM)

    @classmethod
    def read_result(cls, data: bytes) -> Any:
        r = Reader(data)
        try:
            if cls.RESULT_ELEM is None or cls.RESULT_ELEM == "object":
                return r.object()
            n = r.vector_len()
            if cls.RESULT_ELEM == "int":
                return r.ints(n)
            if cls.RESULT_ELEM == "long":
                return r.longs(n)
            if cls.RESULT_ELEM == "string":
                return [r.string() for _ in range(n)]
            return [r.bytes() for _ in range(n)]
        except TLDecodeError:
            raise
        except (struct.error, IndexError, KeyError, ValueError, RecursionError) as exc:
            raise TLDecodeError(f"bad {cls.TL_NAME} result: {exc}") from exc


def write_value(b: bytearray, value: Any, elem: str | None = None) -> None:
    """Write an RPC result: a TL object, a Python bool, or a Vector of ``elem``."""
    if isinstance(value, TLObject):
        value._write(b)
    elif value is True:
        b += BOOL_TRUE_BYTES
    elif value is False:
        b += BOOL_FALSE_BYTES
    elif isinstance(value, list):
        b += VECTOR_BYTES
        b += pack_i(len(value))
        if elem == "int":
            b += struct.pack(f"<{len(value)}i", *value)
        elif elem == "long":
            b += struct.pack(f"<{len(value)}q", *value)
        elif elem == "string":
            for s in value:
                write_string(b, s)
        elif elem == "bytes":
            for s in value:
                write_bytes(b, s)
        else:
            for x in value:
                x._write(b)
    else:
        raise TLEncodeError(f"cannot write {type(value).__name__} as a TL value")


def write_bytes(b: bytearray, data: bytes) -> None:
    n = len(data)
    if n < 254:
        b.append(n)
        b += data
        pad = (-(n + 1)) & 3
    else:
        if n >= 1 << 24:
            raise TLEncodeError("bytes value longer than 16 MiB")
        b += pack_I((n << 8) | 254)
        b += data
        pad = (-n) & 3
    if pad:
        b += b"\0" * pad


def write_string(b: bytearray, s: str | bytes) -> None:
    # Some TL "string" fields carry raw bytes (msgs_state_info.info): accept both.
    write_bytes(b, s.encode("utf-8") if type(s) is str else s)  # type: ignore[arg-type]


def write_fixed(b: bytearray, data: bytes, size: int) -> None:
    if len(data) != size:
        raise TLEncodeError(f"expected {size} bytes, got {len(data)}")
    b += data


def write_vector_objects(b: bytearray, items: Iterable[TLObject]) -> None:
    items = list(items)
    b += VECTOR_BYTES
    b += pack_i(len(items))
    for x in items:
        x._write(b)


def write_vector_long(b: bytearray, items: list[int]) -> None:
    b += VECTOR_BYTES
    b += pack_i(len(items))
    b += struct.pack(f"<{len(items)}q", *items)


def write_vector_int(b: bytearray, items: list[int]) -> None:
    b += VECTOR_BYTES
    b += pack_i(len(items))
    b += struct.pack(f"<{len(items)}i", *items)


class Reader:
    """A cursor over one serialized message. Cheap to create; not thread-safe."""

    __slots__ = ("data", "depth", "end", "pos")

    def __init__(self, data: _bytes, pos: _int = 0, end: _int | None = None) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end
        self.depth = 0

    def _need(self, n: _int) -> _int:
        p = self.pos
        if p + n > self.end:
            raise TLDecodeError(f"truncated: need {n} bytes at offset {p}, have {self.end - p}")
        self.pos = p + n
        return p

    # The fixed-size readers inline _need: they run for nearly every field.
    def int(self) -> _int:
        p = self.pos
        if p + 4 > self.end:
            self._need(4)  # raises
        self.pos = p + 4
        return unpack_i(self.data, p)[0]

    def uint(self) -> _int:
        p = self.pos
        if p + 4 > self.end:
            self._need(4)
        self.pos = p + 4
        return unpack_I(self.data, p)[0]

    def long(self) -> _int:
        p = self.pos
        if p + 8 > self.end:
            self._need(8)
        self.pos = p + 8
        return unpack_q(self.data, p)[0]

    def double(self) -> float:
        p = self.pos
        if p + 8 > self.end:
            self._need(8)
        self.pos = p + 8
        return unpack_d(self.data, p)[0]

    def raw(self, n: _int) -> _bytes:
        p = self._need(n)
        return bytes(self.data[p : p + n])

    def bytes(self) -> _bytes:
        data = self.data
        p = self.pos
        if p >= self.end:
            raise TLDecodeError(f"truncated: bytes header at offset {p}")
        n = data[p]
        if n < 254:
            start = p + 1
            total = (n + 4) & ~3  # header byte + data, padded to 4
        else:
            if p + 4 > self.end:
                raise TLDecodeError(f"truncated: bytes header at offset {p}")
            n = data[p + 1] | (data[p + 2] << 8) | (data[p + 3] << 16)
            start = p + 4
            total = 4 + ((n + 3) & ~3)
        if p + total > self.end:
            raise TLDecodeError(f"truncated: {n}-byte value at offset {p}")
        self.pos = p + total
        return bytes(data[start : start + n])

    def string(self) -> str:
        data = self.data
        p = self.pos
        if p < self.end:
            n = data[p]
            total = (n + 4) & ~3
            if n < 254 and p + total <= self.end:  # the common short form, inlined
                self.pos = p + total
                return str(data[p + 1 : p + 1 + n], "utf-8", "replace")
        return str(self.bytes(), "utf-8", "replace")

    def bool(self) -> bool:
        cid = unpack_I(self.data, self._need(4))[0]
        if cid == BOOL_TRUE_ID:
            return True
        if cid == BOOL_FALSE_ID:
            return False
        raise TLDecodeError(f"expected Bool, got constructor {cid:#010x} at {self.pos - 4}")

    def vector_len(self) -> _int:
        p = self._need(8)
        cid, n = struct.unpack_from("<Ii", self.data, p)
        if cid != VECTOR_ID:
            raise TLDecodeError(f"expected Vector, got constructor {cid:#010x} at offset {p}")
        return self._check_count(n)

    def count(self) -> _int:
        """Element count of a bare ``vector<T>``."""
        return self._check_count(unpack_i(self.data, self._need(4))[0])

    def _check_count(self, n: _int) -> _int:
        # Every element takes at least 4 bytes: refuse counts the input cannot hold.
        if n < 0 or n * 4 > self.end - self.pos:
            raise TLDecodeError(f"bad vector length {n} at offset {self.pos}")
        return n

    def ints(self, n: _int) -> list[_int]:
        p = self._need(4 * n)
        return list(struct.unpack_from(f"<{n}i", self.data, p))

    def longs(self, n: _int) -> list[_int]:
        p = self._need(8 * n)
        return list(struct.unpack_from(f"<{n}q", self.data, p))

    def vector_int(self) -> list[_int]:
        return self.ints(self.vector_len())

    def vector_long(self) -> list[_int]:
        return self.longs(self.vector_len())

    def vector_string(self) -> list[str]:
        return [self.string() for _ in range(self.vector_len())]

    def vector_bytes(self) -> list[_bytes]:
        return [self.bytes() for _ in range(self.vector_len())]

    def vector_object(self, allowed: frozenset[_int] | None = None) -> list[Any]:
        n = self.vector_len()
        if allowed is None:
            return [self.object() for _ in range(n)]
        return [self.typed(allowed) for _ in range(n)]

    def object(self) -> Any:
        """Read any boxed object (dispatching on its constructor id)."""
        p = self._need(4)
        cid = unpack_I(self.data, p)[0]
        reader = READERS.get(cid)
        if reader is None:
            raise UnknownConstructorError(cid, p)
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise TLDecodeError("objects nested too deeply")
        try:
            return reader(self)
        finally:
            self.depth -= 1

    def typed(self, allowed: frozenset[_int]) -> Any:
        """Read a boxed object that must be one of ``allowed`` constructors."""
        p = self.pos
        if p + 4 <= self.end:
            cid = unpack_I(self.data, p)[0]
            if cid == GZIP_PACKED_ID:
                # the packed object must be of the expected type too
                obj = self.object()
                if getattr(type(obj), "CONSTRUCTOR_ID", None) not in allowed:
                    raise TLDecodeError(
                        f"gzip_packed object at offset {p} is not of the expected type"
                    )
                return obj
            if cid not in allowed:
                if cid in READERS:
                    raise TLDecodeError(
                        f"constructor {CLASSES[cid].TL_NAME if cid in CLASSES else hex(cid)}"
                        f" is not of the expected type at offset {p}"
                    )
                raise UnknownConstructorError(cid, p)
            reader = READERS.get(cid)
            if reader is not None:  # object() inlined: one call less per nested object
                depth = self.depth + 1
                if depth > MAX_DEPTH:
                    raise TLDecodeError("objects nested too deeply")
                self.depth = depth
                self.pos = p + 4
                try:
                    return reader(self)
                finally:
                    self.depth = depth - 1
        return self.object()


class UnknownConstructorError(TLDecodeError):
    """The input names a constructor id this layer does not know (or cannot serve).

    ``function`` is True when the id stood where a query was expected (a function
    the layer lacks, e.g. inside ``invokeWithLayer``): Telegram answers those with
    ``INPUT_METHOD_INVALID_<id>`` rather than ``INPUT_CONSTRUCTOR_INVALID``.
    """

    def __init__(self, constructor_id: int, offset: int, *, function: bool = False) -> None:
        what = "function" if function else "constructor"
        super().__init__(f"unknown {what} {constructor_id:#010x} at offset {offset}")
        self.constructor_id = constructor_id
        self.offset = offset
        self.function = function


def _read_gzip(r: Reader) -> Any:
    inner = Reader(inflate(r.bytes()))
    inner.depth = r.depth
    return inner.object()


def inflate(packed: bytes) -> bytes:
    """The body of a gzip_packed object, refusing bombs and cut streams."""
    inflater = zlib.decompressobj(wbits=zlib.MAX_WBITS | 32)
    try:
        data = inflater.decompress(packed, MAX_INFLATED)
        # At the limit: fine only if the stream ends there with no more output.
        if not inflater.eof and len(data) >= MAX_INFLATED:
            if inflater.decompress(inflater.unconsumed_tail, 1) or not inflater.eof:
                raise TLDecodeError("gzip_packed data inflates beyond the limit")
    except zlib.error as exc:
        raise TLDecodeError(f"bad gzip_packed data: {exc}") from exc
    if not inflater.eof:  # a cut stream inflates to a prefix without any zlib.error
        raise TLDecodeError("gzip_packed data is truncated")
    return data


def _read_true(r: Reader) -> bool:
    return True


def _read_false(r: Reader) -> bool:
    return False


def _read_vector(r: Reader) -> list[Any]:
    # Reached only for a bare Vector of boxed objects (e.g. an RPC result).
    n = r._check_count(r.int())
    return [r.object() for _ in range(n)]


READERS[GZIP_PACKED_ID] = _read_gzip
READERS[BOOL_TRUE_ID] = _read_true
READERS[BOOL_FALSE_ID] = _read_false
READERS[VECTOR_ID] = _read_vector


def gzip_packed(data: bytes) -> bytes:
    """Wrap serialized ``data`` in gzip_packed (for large answers)."""
    b = bytearray(pack_I(GZIP_PACKED_ID))
    write_bytes(b, zlib.compress(data, 6, wbits=31))
    return bytes(b)


def decode(data: bytes) -> Any:
    """Read one boxed object from the start of ``data``.

    Bytes after the object are ignored: MTProto bodies may carry transport padding;
    callers that need an exact fit use :func:`decode_prefix` and compare offsets.
    """
    r = Reader(data)
    return _guarded(r, r.object)


def decode_prefix(data: bytes, pos: int = 0, end: int | None = None) -> tuple[Any, int]:
    """Read one boxed object from ``data[pos:end]``; returns it and the end offset."""
    r = Reader(data, pos, end)
    obj = _guarded(r, r.object)
    return obj, r.pos


def _guarded(r: Reader, fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except TLDecodeError:
        raise
    except (struct.error, IndexError, KeyError, ValueError, TypeError, RecursionError) as exc:
        raise TLDecodeError(f"malformed input near offset {r.pos}: {exc}") from exc


def encode(obj: TLObject) -> bytes:
    return obj.to_bytes()
