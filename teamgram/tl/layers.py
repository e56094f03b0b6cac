"""Per-layer codecs: how one server speaks to clients of different layers.

Handlers are written once, against the canonical classes (the newest layer the
project carries, :data:`teamgram.tl.LAYER`). At the edge, the layer a client
declared with ``invokeWithLayer`` (remembered per auth key) picks a
:class:`LayerCodec`: it reads that layer's requests into canonical objects and
writes canonical answers and updates in the form that layer knows.

:class:`SchemaLayerCodec` does this for an older layer from the two schemas
(``gen/layerNNN.py``, see :mod:`teamgram.tl.layerdata`), by constructor name:

- reading, each of the layer's constructors becomes the canonical one of the same
  name, field by field (fields the layer lacks get their canonical default: None,
  False, 0, empty); a constructor only the old layer has needs a hand-written
  adapter (:mod:`teamgram.tl.adapt`), else it is refused with
  :class:`~teamgram.tl.core.UnknownConstructorError`, which the session answers
  with ``INPUT_CONSTRUCTOR_INVALID`` / ``INPUT_METHOD_INVALID_<id>``;
- writing, each canonical object is written with the layer's id and field list
  (fields it lacks dropped, flags recomputed, fields only it has filled with a
  default or by an adapter); a constructor the layer does not know goes through
  an adapter or a per-type placeholder, or is left out of its vector.

Converters are generated as Python source per constructor (like the canonical
classes) on first use and cached; constructors identical in both layers, with
nested types identical too, use the canonical readers and writers directly.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Protocol

from teamgram.tl import adapt, layerdata
from teamgram.tl.core import (
    BOOL_FALSE_BYTES,
    BOOL_FALSE_ID,
    BOOL_TRUE_BYTES,
    BOOL_TRUE_ID,
    CLASSES,
    GZIP_PACKED_ID,
    MAX_DEPTH,
    READERS,
    VECTOR_BYTES,
    VECTOR_ID,
    Reader,
    TLDecodeError,
    TLEncodeError,
    TLFunction,
    TLObject,
    UnknownConstructorError,
    decode,
    inflate,
    pack_d,
    pack_I,
    pack_i,
    pack_q,
    unpack_I,
    unpack_i,
    write_bytes,
    write_fixed,
    write_string,
    write_vector_int,
    write_vector_long,
    write_vector_objects,
)
from teamgram.tl.gen import LAYER
from teamgram.tl.gen import functions as _fn
from teamgram.tl.generator import READ_PRIMITIVE, attr_name
from teamgram.tl.parser import CORE_TYPES, TLArg, TLDef

INVOKE_WITH_LAYER_ID = _fn.InvokeWithLayer.CONSTRUCTOR_ID
_INVOKE_WITH_LAYER_BYTES = pack_I(INVOKE_WITH_LAYER_ID)


class LayerCodec(Protocol):
    layer: int

    def decode(self, data: bytes) -> Any:
        """Read a boxed object of this layer into its canonical form."""

    def read_query(self, r: Reader) -> Any:
        """Read the boxed query of an ``invokeWithLayer`` (that declared this layer)."""

    def encode(self, obj: TLObject) -> bytes:
        """Write a canonical object as this layer knows it."""

    def encode_result(self, function: type[TLFunction], value: Any) -> bytes:
        """Write the result of ``function`` (object, bool or vector) for this layer."""


def _guarded(r: Reader, fn: Callable[[Reader], Any]) -> Any:
    try:
        return fn(r)
    except TLDecodeError:
        raise
    except (
        struct.error,
        IndexError,
        KeyError,
        ValueError,
        TypeError,
        AttributeError,
        RecursionError,
    ) as exc:
        raise TLDecodeError(f"malformed input near offset {r.pos}: {exc}") from exc


class CanonicalCodec:
    """The newest layer: the generated classes read and write themselves.

    The one thing it adds: an ``invokeWithLayer`` naming another layer (a client's
    first request, before its layer is remembered) has its query read by that
    layer's codec.
    """

    layer = LAYER

    def decode(self, data: bytes) -> Any:
        if data.startswith(_INVOKE_WITH_LAYER_BYTES) and len(data) >= 8:
            layer = unpack_i(data, 4)[0]
            r = Reader(data, 8)
            query = _guarded(r, codec_for(layer).read_query)
            return _fn.InvokeWithLayer(layer=layer, query=query)
        return decode(data)

    def read_query(self, r: Reader) -> Any:
        start = r.pos
        try:
            return r.object()
        except UnknownConstructorError as exc:
            if exc.offset != start:
                raise
            raise UnknownConstructorError(exc.constructor_id, start, function=True) from None

    def encode(self, obj: TLObject) -> bytes:
        return obj.to_bytes()

    def encode_result(self, function: type[TLFunction], value: Any) -> bytes:
        b = bytearray()
        function.write_result(b, value)
        return bytes(b)


# --------------------------------------------------------------------------- helpers


class _Drop(Exception):  # control flow: never escapes the codec
    """Raised by a writer whose object has no form in the layer."""


class _Lazy(dict[Any, Any]):
    """A table whose entries are built on first lookup (a KeyError: no entry)."""

    def __init__(self, build: Callable[[Any], Any]) -> None:
        super().__init__()
        self.build = build

    def __missing__(self, key: Any) -> Any:
        value = self.build(key)
        self[key] = value
        return value


_PRIMITIVE_DEFAULTS = {
    "int": "0",
    "long": "0",
    "double": "0.0",
    "string": '""',
    "bytes": 'b""',
    "int128": "bytes(16)",
    "int256": "bytes(32)",
    "Bool": "False",
}
_PRIMITIVE_VALUES: dict[str, Any] = {
    "int": 0,
    "long": 0,
    "double": 0.0,
    "string": "",
    "bytes": b"",
    "int128": bytes(16),
    "int256": bytes(32),
    "Bool": False,
}
_VECTOR_RE = re.compile(r"^[Vv]ector<(.+)>$")


def _is_object_type(a: TLArg) -> bool:
    return a.type not in CORE_TYPES


def _compatible(la: TLArg, ca: TLArg) -> bool:
    """Can a value of canonical field ``ca`` stand for the layer's field ``la`` as is?"""
    if la.type == "true" or ca.type == "true":
        return la.type == ca.type
    if la.is_vector != ca.is_vector:
        return False
    if la.type == ca.type:
        return True
    # Two object types: nested objects are converted by whoever reads/writes them.
    return _is_object_type(la) and _is_object_type(ca) and not (la.bare_type or ca.bare_type)


def _safe_fixpoint(
    schema: layerdata.LayerSchema, start: set[str], generic_ok: bool = False
) -> set[str]:
    """The constructors of ``start`` whose nested types hold only such constructors.

    Worklist over the reverse references: a constructor outside ``start`` taints its
    type, which taints every constructor with a field of that type, and so on.
    """
    raw = schema._raw
    users_of_type: dict[str, list[str]] = {}
    users_of_name: dict[str, list[str]] = {}
    unsafe: set[str] = set()
    for n, r in raw.items():
        bad = n not in start
        for _, typ, _, _, kind in r[4]:
            if kind & layerdata.K_FLAGS or typ in CORE_TYPES:
                continue
            if kind & layerdata.K_GENERIC or typ == "Object":
                bad = bad or not generic_ok
            elif kind & layerdata.K_BARE_TYPE:
                users_of_name.setdefault(typ, []).append(n)
                bad = bad or typ not in raw
            else:
                users_of_type.setdefault(typ, []).append(n)
                bad = bad or typ not in schema.type_names
        if bad:
            unsafe.add(n)
    queue = list(unsafe)
    tainted: set[str] = set()
    while queue:
        n = queue.pop()
        dependents = users_of_name.get(n, [])
        r = raw[n]
        if not r[2] & 1 and r[3] not in tainted:
            tainted.add(r[3])
            dependents = dependents + users_of_type.get(r[3], [])
        for m in dependents:
            if m not in unsafe:
                unsafe.add(m)
                queue.append(m)
    return start - unsafe


class SchemaLayerCodec:
    """Reads and writes an older layer, converting to and from the canonical classes."""

    def __init__(self, layer: int) -> None:
        self.layer = layer
        self._ready = False

    # ------------------------------------------------------------------ setup
    def _setup(self) -> None:
        if self._ready:
            return
        self.L = layerdata.load(self.layer)
        self.C = layerdata.load(LAYER)
        self.classes = {c.TL_NAME: c for c in CLASSES.values()}
        self.adapters = adapt.applicable(self)
        same = {n for n, raw in self.C._raw.items() if self.L._raw.get(n) == raw}
        decode_adapted = {a.name for a in self.adapters["decode_ctor"].values()}
        decode_adapted |= {a.name for a in self.adapters["decode_field"].values()}
        replaced = {a.name for a in self.adapters["encode_ctor"].values()}
        encode_adapted = replaced | {a.name for a in self.adapters["encode_field"].values()}
        # Constructors the canonical classes read / write exactly as this layer does.
        self._read_safe = {self.L._raw[n][1] for n in _safe_fixpoint(self.L, same - decode_adapted)}
        write_safe = _safe_fixpoint(self.C, same - encode_adapted)
        self._write_safe_types = {
            t for t, names in self.C.type_names.items() if all(n in write_safe for n in names)
        }
        self._write_safe = {self.classes[n] for n in write_safe if n in self.classes}
        # Canonical classes this layer writes as its constructor of the same name.
        self._known = frozenset(
            cls
            for name, cls in self.classes.items()
            if name in self.L and not self.L.is_function(name) and name not in replaced
        )
        self._allowed: dict[str, frozenset[int]] = {}
        self._R: _Lazy = _Lazy(self._make_reader)
        self._W: _Lazy = _Lazy(self._make_writer)
        self._Wgen: _Lazy = _Lazy(self._make_plain_writer)
        self._results: dict[type[TLFunction], Callable[[Any], bytes]] = {}
        self._R[BOOL_TRUE_ID] = READERS[BOOL_TRUE_ID]
        self._R[BOOL_FALSE_ID] = READERS[BOOL_FALSE_ID]
        self._R[VECTOR_ID] = self._read_bare_vector
        self._R[GZIP_PACKED_ID] = self._read_gzip
        self._R[INVOKE_WITH_LAYER_ID] = self._read_invoke_with_layer
        self._ready = True

    # Context for the adapters ------------------------------------------------
    def has(self, name: str) -> bool:
        return name in self.L

    def differs(self, name: str) -> bool:
        return self.L._raw.get(name) != self.C._raw.get(name)

    def field_differs(self, name: str, field: str) -> bool:
        ld, cd = self.L.get(name), self.C.get(name)
        la = _arg(ld, field) if ld else None
        ca = _arg(cd, field) if cd else None
        if la is None:
            return False  # nothing of this layer to read or write
        if ca is None:
            return True
        return (la.type, la.is_vector, la.bare_vector, la.bare_type) != (
            ca.type,
            ca.is_vector,
            ca.bare_vector,
            ca.bare_type,
        )

    def result_differs(self, name: str) -> bool:
        return self.L.result_of(name) != self.C.result_of(name)

    # ----------------------------------------------------------------- public
    def decode(self, data: bytes) -> Any:
        if not self._ready:
            self._setup()
        r = Reader(data)
        return _guarded(r, self._read_object)

    def read_query(self, r: Reader) -> Any:
        if not self._ready:
            self._setup()
        return self._read_object(r, function=True)

    def encode(self, obj: TLObject) -> bytes:
        if not self._ready:
            self._setup()
        b = bytearray()
        try:
            self._W[type(obj)](obj, b)
        except _Drop:
            if getattr(obj, "TL_TYPE", "") == "Updates":  # a push: nothing this layer shows
                return self.encode(adapt.empty_updates(getattr(obj, "date", None)))
            raise TLEncodeError(f"{obj.TL_NAME} has no form in layer {self.layer}") from None
        except (struct.error, TypeError, AttributeError, KeyError) as exc:
            name = getattr(obj, "TL_NAME", type(obj).__name__)
            raise TLEncodeError(f"cannot serialize {name} for layer {self.layer}: {exc}") from exc
        return bytes(b)

    def encode_result(self, function: type[TLFunction], value: Any) -> bytes:
        if not self._ready:
            self._setup()
        w = self._results.get(function)
        if w is None:
            w = self._results[function] = self._make_result_writer(function)
        try:
            return w(value)
        except _Drop:
            raise TLEncodeError(
                f"the result of {function.TL_NAME} has no form in layer {self.layer}"
            ) from None
        except (struct.error, TypeError, AttributeError, KeyError) as exc:
            raise TLEncodeError(
                f"cannot serialize the result of {function.TL_NAME} for layer {self.layer}: {exc}"
            ) from exc

    def writable(self, obj: Any) -> bool:
        """``obj`` has a form in this layer (else a vector it is in leaves it out)."""
        if not self._ready:
            self._setup()
        try:
            self._W[type(obj)](obj, bytearray())
        except _Drop:
            return False
        return True

    def knows(self, cls: type) -> bool:
        """This layer writes ``cls`` as its own constructor of the same name (field by field,
        not through a replacement or placeholder)."""
        if not self._ready:
            self._setup()
        return cls in self._known

    # ---------------------------------------------------------------- reading
    def _read_object(self, r: Reader, function: bool = False) -> Any:
        p = r.pos
        if p + 4 > r.end:
            r._need(4)
        cid = unpack_I(r.data, p)[0]
        try:
            reader = self._R[cid]
        except KeyError:
            raise UnknownConstructorError(cid, p, function=function) from None
        r.pos = p + 4
        depth = r.depth + 1
        if depth > MAX_DEPTH:
            raise TLDecodeError("objects nested too deeply")
        r.depth = depth
        try:
            return reader(r)
        finally:
            r.depth = depth - 1

    def _read_typed(self, r: Reader, allowed: frozenset[int]) -> Any:
        p = r.pos
        if p + 4 > r.end:
            r._need(4)
        cid = unpack_I(r.data, p)[0]
        if cid not in allowed:
            if cid == GZIP_PACKED_ID:
                if r.depth >= MAX_DEPTH:
                    raise TLDecodeError("objects nested too deeply")
                r.pos = p + 4
                inner = Reader(inflate(r.bytes()))
                inner.depth = r.depth + 1
                return self._read_typed(inner, allowed)
            name = self.L.names_by_id.get(cid)
            if name is not None:
                raise TLDecodeError(f"constructor {name} is not of the expected type at offset {p}")
            raise UnknownConstructorError(cid, p)
        r.pos = p + 4
        depth = r.depth + 1
        if depth > MAX_DEPTH:
            raise TLDecodeError("objects nested too deeply")
        r.depth = depth
        try:
            return self._R[cid](r)
        finally:
            r.depth = depth - 1

    def _read_gzip(self, r: Reader) -> Any:
        inner = Reader(inflate(r.bytes()))
        inner.depth = r.depth
        return self._read_object(inner)

    def _read_bare_vector(self, r: Reader) -> list[Any]:
        n = r._check_count(r.int())
        return [self._read_object(r) for _ in range(n)]

    def _read_invoke_with_layer(self, r: Reader) -> Any:
        layer = r.int()
        codec = codec_for(layer)
        query = codec.read_query(r) if codec is not self else self._read_object(r, True)
        return _fn.InvokeWithLayer(layer=layer, query=query)

    def _allowed_ids(self, tl_type: str) -> frozenset[int]:
        ids = self._allowed.get(tl_type)
        if ids is None:
            ids = self._allowed[tl_type] = self.L.type_ids(tl_type)
        return ids

    def _make_reader(self, cid: int) -> Callable[[Reader], Any]:
        name = self.L.names_by_id.get(cid)
        if name is None:
            raise KeyError(cid)
        if cid in self._read_safe:
            return READERS[cid]
        d = self.L[name]
        ad = self.adapters["decode_ctor"].get(name)
        cls = self.classes.get(name)
        if ad is None and (cls is None or self.C.is_function(name) != d.is_function):

            def refuse(r: Reader) -> Any:
                raise UnknownConstructorError(cid, r.pos - 4, function=d.is_function)

            return refuse
        return _ReaderBuilder(self, d, cls, ad).build()

    # ---------------------------------------------------------------- writing
    def _make_writer(self, cls: type) -> Callable[[Any, bytearray], None]:
        if cls is adapt.Foreign:
            return self._write_foreign
        name = getattr(cls, "TL_NAME", None)
        if name is None:
            raise TLEncodeError(f"cannot write {cls.__name__} as a TL object")
        ad = self.adapters["encode_ctor"].get(name)
        in_layer = name in self.L and self.L.is_function(name) == issubclass(cls, TLFunction)
        if ad is not None:
            return self._adapting_writer(cls, ad.fn, self._Wgen[cls] if in_layer else None)
        fb = self.adapters["fallback"].get(getattr(cls, "TL_TYPE", ""))
        if in_layer:
            plain: Callable[[Any, bytearray], None] = self._Wgen[cls]
            if fb is None or cls in self._write_safe:
                return plain
            return self._falling_back_writer(cls, plain, fb.fn)
        return self._adapting_writer(cls, fb.fn if fb else None, None)

    def _falling_back_writer(
        self,
        cls: type,
        plain: Callable[[Any, bytearray], None],
        fn: Callable[[Any, Any], Any],
    ) -> Callable[[Any, bytearray], None]:
        """A known constructor holding, deep down, something this layer has no form for:
        the placeholder of its type instead (e.g. an action whose group call it lacks)."""
        W = self._W

        def write(o: Any, b: bytearray) -> None:
            mark = len(b)
            try:
                plain(o, b)
            except _Drop:
                del b[mark:]
                rep = fn(o, self)
                if rep is None or type(rep) is cls:
                    raise
                W[type(rep)](rep, b)

        return write

    def _adapting_writer(
        self,
        cls: type,
        fn: Callable[[Any, Any], Any] | None,
        plain: Callable[[Any, bytearray], None] | None,
    ) -> Callable[[Any, bytearray], None]:
        W = self._W

        def write(o: Any, b: bytearray) -> None:
            rep = fn(o, self) if fn is not None else None
            if rep is None:
                raise _Drop
            if type(rep) is cls and (plain is not None or rep is o):
                if plain is None:
                    raise _Drop
                plain(rep, b)
            else:  # a placeholder, an older equivalent or a nested value: adapted in turn
                W[type(rep)](rep, b)

        return write

    def _make_plain_writer(self, cls: type) -> Callable[[Any, bytearray], None]:
        """The field-by-field writer of a class this layer has a constructor for."""
        if cls in self._write_safe:
            return cls._write  # type: ignore[attr-defined,no-any-return]
        name = cls.TL_NAME  # type: ignore[attr-defined]
        return _WriterBuilder(self, self.L[name], self.C.get(name), cls).build()

    def _write_vector_drop(self, b: bytearray, items: list[Any]) -> None:
        """A vector of objects, leaving out those this layer has no form for."""
        start = len(b)
        b += VECTOR_BYTES
        b += pack_i(len(items))
        W = self._W
        try:  # the common case: every element has a form
            for x in items:
                W[type(x)](x, b)
            return
        except _Drop:
            del b[start + 8 :]
        n = 0
        for x in items:
            mark = len(b)
            try:
                W[type(x)](x, b)
                n += 1
            except _Drop:
                del b[mark:]
        b[start + 4 : start + 8] = pack_i(n)

    def _write_bare(self, v: Any, b: bytearray) -> None:
        tmp = bytearray()
        self._W[type(v)](v, tmp)
        b += memoryview(tmp)[4:]

    def _adapt(self, v: Any) -> Any:
        """An object of a class this layer may lack, replaced as the writer would (None: drop)."""
        cls = type(v)
        if cls in self._known or cls is adapt.Foreign:
            return v
        name = getattr(cls, "TL_NAME", "")
        ad = self.adapters["encode_ctor"].get(name)
        if ad is None:
            if name in self.L:
                return v
            ad = self.adapters["fallback"].get(getattr(cls, "TL_TYPE", ""))
            if ad is None:
                return None
        rep = ad.fn(v, self)
        if rep is None or type(rep) is cls:
            return rep
        return self._adapt(rep)

    def _write_foreign(self, o: adapt.Foreign, b: bytearray) -> None:
        d = self.L.get(o.name)
        if d is None:
            raise _Drop
        self._write_generic(d, o.fields, b)

    def _write_generic(
        self, d: TLDef, fields: dict[str, Any], b: bytearray, depth: int = 0
    ) -> None:
        """Write ``d`` from a dict of TL field names (slow path: Foreign, default objects)."""
        b += pack_I(d.id)
        for a in d.args:
            if a.is_flags:
                flags = 0
                for o in d.args:
                    if o.flag_field == a.name:
                        v = fields.get(o.name)
                        if bool(v) if o.type == "true" else v is not None:
                            flags |= 1 << o.flag_bit
                b += pack_I(flags)
                continue
            v = fields.get(a.name)
            if a.flag_field is not None:
                if a.type == "true" or v is None:
                    continue
            elif v is None:
                v = self._default_value(a, depth)
            self._write_arg(a, v, b)

    def _default_value(self, a: TLArg, depth: int = 0) -> Any:
        if a.is_vector:
            return []
        if a.type in _PRIMITIVE_VALUES:
            return _PRIMITIVE_VALUES[a.type]
        return self._default_object(a.type, depth)

    def _default_object(self, tl_type: str, depth: int = 0) -> Any:
        """A value for a required field of ``tl_type`` the canonical object has nothing for."""
        factory = adapt.DEFAULT_OBJECTS.get(tl_type)
        if factory is not None:
            v = self._adapt(factory())
            if v is not None:
                return v
        if depth > 4:
            raise _Drop
        candidates = self.L.constructors(tl_type)
        if not candidates:
            raise _Drop

        def cost(d: TLDef) -> tuple[int, int]:
            required = [a for a in d.args if not a.is_flags and a.flag_field is None]
            objects = sum(1 for a in required if not a.is_vector and _is_object_type(a))
            return (objects, len(required))

        best = min(candidates, key=cost)
        fields: dict[str, Any] = {}
        for a in best.args:
            if not a.is_flags and a.flag_field is None:
                fields[a.name] = self._default_value(a, depth + 1)
        return adapt.Foreign(best.name, fields)

    def _write_arg(self, a: TLArg, v: Any, b: bytearray) -> None:
        if a.is_vector:
            if not a.bare_vector:
                b += VECTOR_BYTES
            if a.type in CORE_TYPES or a.bare_type:
                b += pack_i(len(v))
                for x in v:
                    self._write_one(a, x, b)
            else:
                start = len(b)
                b += b"\0\0\0\0"
                n = 0
                for x in v:
                    mark = len(b)
                    try:
                        self._write_one(a, x, b)
                        n += 1
                    except _Drop:
                        del b[mark:]
                b[start : start + 4] = pack_i(n)
        else:
            self._write_one(a, v, b)

    def _write_one(self, a: TLArg, v: Any, b: bytearray) -> None:
        t = a.type
        if t == "int":
            b += pack_i(v)
        elif t == "long":
            b += pack_q(v)
        elif t == "double":
            b += pack_d(v)
        elif t == "string":
            write_string(b, v)
        elif t == "bytes":
            write_bytes(b, v)
        elif t == "int128":
            write_fixed(b, v, 16)
        elif t == "int256":
            write_fixed(b, v, 32)
        elif t == "Bool":
            b += BOOL_TRUE_BYTES if v else BOOL_FALSE_BYTES
        elif a.bare_type:
            self._write_bare(v, b)
        else:
            self._W[type(v)](v, b)

    # ---------------------------------------------------------------- results
    def _make_result_writer(self, function: type[TLFunction]) -> Callable[[Any], bytes]:
        name = function.TL_NAME
        result = self.L.result_of(name) if self.L.is_function(name) else None
        if result is None:
            result = function.TL_TYPE
        ad = self.adapters["encode_result"].get(name)
        conv = ad.fn if ad is not None else None
        m = _VECTOR_RE.match(result)
        elem = m.group(1) if m else None
        W = self._W
        vector_drop = self._write_vector_drop

        def write(value: Any) -> bytes:
            if conv is not None:
                value = conv(value, self)
            b = bytearray()
            if value is True:
                b += BOOL_TRUE_BYTES
            elif value is False:
                b += BOOL_FALSE_BYTES
            elif isinstance(value, list):
                if elem == "int":
                    write_vector_int(b, value)
                elif elem == "long":
                    write_vector_long(b, value)
                elif elem in ("string", "bytes", "Bool"):
                    b += VECTOR_BYTES
                    b += pack_i(len(value))
                    for x in value:
                        if elem == "string":
                            write_string(b, x)
                        elif elem == "bytes":
                            write_bytes(b, x)
                        else:
                            b += BOOL_TRUE_BYTES if x else BOOL_FALSE_BYTES
                else:
                    vector_drop(b, value)
            elif isinstance(value, TLObject) or type(value) is adapt.Foreign:
                try:
                    W[type(value)](value, b)
                except _Drop:
                    if result != "Updates":
                        raise
                    b.clear()
                    empty = adapt.empty_updates(getattr(value, "date", None))
                    W[type(empty)](empty, b)
            else:
                raise TLEncodeError(f"cannot write {type(value).__name__} as a TL value")
            return bytes(b)

        return write


def _arg(d: TLDef, name: str) -> TLArg | None:
    for a in d.args:
        if a.name == name and not a.is_flags:
            return a
    return None


# --------------------------------------------------------------------- code generation


class _Namespace:
    """Names the generated source of one converter refers to."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self._n = 0

    def add(self, value: Any, prefix: str = "_c") -> str:
        for k, v in self.values.items():
            if v is value and k.startswith(prefix):
                return k
        self._n += 1
        name = f"{prefix}{self._n}"
        self.values[name] = value
        return name


def _compile(src: str, ns: dict[str, Any], name: str) -> Any:
    code = compile(src, f"<layer converter {name}>", "exec")
    exec(code, ns)  # source generated from the schemas above
    f = ns["_f"]
    f.source = src  # for debugging: print(codec._W[cls].source)
    return f


class _ReaderBuilder:
    """Source of a function reading one constructor of the layer into its canonical form."""

    def __init__(
        self,
        codec: SchemaLayerCodec,
        d: TLDef,
        cls: type | None,
        ad: adapt.Adapter | None,
    ) -> None:
        self.codec = codec
        self.d = d
        self.cls = cls
        self.ad = ad
        self.ns = _Namespace()
        self.ns.values.update(
            _new=object.__new__,
            _typed=codec._read_typed,
            _obj=codec._read_object,
            _R=codec._R,
            _ctx=codec,
        )

    def read_one(self, a: TLArg) -> str:
        t = a.type
        if a.is_generic or t == "Object":
            return "_obj(r, True)" if a.is_generic else "_obj(r)"
        if t in READ_PRIMITIVE:
            return READ_PRIMITIVE[t]
        if a.bare_type:
            cid = self.codec.L[t].id
            return f"_R[{cid:#010x}](r)"
        allowed = self.codec._allowed_ids(t)
        if not allowed:
            return "_obj(r)"
        if allowed <= self.codec._read_safe:  # the canonical readers read it as is
            return f"r.typed({self.ns.add(allowed, '_T')})"
        return f"_typed(r, {self.ns.add(allowed, '_T')})"

    def read_expr(self, a: TLArg) -> str:
        if not a.is_vector:
            return self.read_one(a)
        t = a.type
        if not a.bare_vector:
            if t in ("int", "long", "string", "bytes"):
                return f"r.vector_{t}()"
            one = self.read_one(a)
            if one.startswith("r.typed("):
                return f"r.vector_object({one[8:-1]})"
            return f"[{one} for _ in range(r.vector_len())]"
        return f"[{self.read_one(a)} for _ in range(r.count())]"

    def default_expr(self, ca: TLArg) -> str:
        if ca.flag_field is not None:
            return "False" if ca.type == "true" else "None"
        if ca.is_vector:
            return "[]"
        if ca.type in _PRIMITIVE_DEFAULTS:
            return _PRIMITIVE_DEFAULTS[ca.type]
        factory = adapt.DEFAULT_OBJECTS.get(ca.type)
        if factory is None:
            factory = _canonical_default_factory(self.codec, ca.type)
        return f"{self.ns.add(factory, '_D')}()" if factory is not None else "None"

    def build(self) -> Callable[[Reader], Any]:
        d = self.d
        lines = ["def _f(r):"]

        def value(a: TLArg) -> str:
            if a.flag_field is not None:
                mask = 1 << a.flag_bit
                if a.type == "true":
                    return f"(_f_{a.flag_field} & {mask}) != 0"
                return f"({self.read_expr(a)} if _f_{a.flag_field} & {mask} else None)"
            return self.read_expr(a)

        if self.ad is not None:  # hand-written: the fields as a dict
            lines.append("    d = {}")
            for a in d.args:
                if a.is_flags:
                    lines.append(f"    _f_{a.name} = r.uint()")
                else:
                    lines.append(f"    d[{a.name!r}] = {value(a)}")
            self.ns.values["_ad"] = self.ad.fn
            lines.append(f"    return _ad({d.name!r}, d, _ctx)")
        else:
            assert self.cls is not None
            self.ns.values["_C"] = self.cls
            cd = self.codec.C[d.name]
            canon = {a.name: a for a in cd.args if not a.is_flags}
            decoders = self.codec.adapters["decode_field"]
            lines.append("    o = _new(_C)")
            done: set[str] = set()
            for a in d.args:
                if a.is_flags:
                    lines.append(f"    _f_{a.name} = r.uint()")
                    continue
                ca = canon.get(a.name)
                fd = decoders.get((d.name, a.name))
                if fd is not None and ca is not None:
                    f = self.ns.add(fd.fn, "_fd")
                    lines.append(f"    o.{attr_name(a.name)} = {f}({value(a)}, _ctx)")
                    done.add(a.name)
                elif ca is not None and _compatible(a, ca):
                    v = value(a)
                    if a.flag_field is not None and ca.flag_field is None and a.type != "true":
                        v = f"_v if (_v := {v}) is not None else {self.default_expr(ca)}"
                    lines.append(f"    o.{attr_name(a.name)} = {v}")
                    done.add(a.name)
                else:
                    lines.append(f"    {value(a)}")  # read past a field the canonical form lacks
            for ca in canon.values():
                if ca.name in done:
                    continue
                partner = next(
                    (
                        x
                        for x in canon.values()
                        if x.name in done
                        and x.type != "true"
                        and ca.type != "true"
                        and ca.flag_field is not None
                        and (x.flag_field, x.flag_bit) == (ca.flag_field, ca.flag_bit)
                    ),
                    None,
                )
                dflt = self.default_expr(ca)
                if partner is not None:
                    # shares its flag bit with a field the layer has: set with it
                    filled = self.default_expr(replace(ca, flag_field=None, flag_bit=-1))
                    dflt = f"({filled} if o.{attr_name(partner.name)} is not None else None)"
                lines.append(f"    o.{attr_name(ca.name)} = {dflt}")
            lines.append("    return o")
        return _compile("\n".join(lines) + "\n", self.ns.values, d.name)  # type: ignore[no-any-return]


def _canonical_default_factory(codec: SchemaLayerCodec, tl_type: str) -> Callable[[], Any] | None:
    """A canonical constructor of ``tl_type`` with no required fields, if there is one."""
    best = None
    for d in codec.C.constructors(tl_type):
        if all(a.is_flags or a.flag_field is not None for a in d.args):
            if best is None or any(w in d.name for w in ("Empty", "Default")):
                best = d
    if best is None:
        return None
    return codec.classes.get(best.name)


class _WriterBuilder:
    """Source of a function writing one canonical class as the layer's constructor."""

    def __init__(self, codec: SchemaLayerCodec, d: TLDef, cd: TLDef | None, cls: type) -> None:
        self.codec = codec
        self.d = d
        self.cd = cd
        self.cls = cls
        self.ns = _Namespace()
        self.ns.values.update(
            _W=codec._W,
            _OK=codec._known,
            _adapt=codec._adapt,
            _ctx=codec,
            _pack_i=pack_i,
            _pack_I=pack_I,
            _pack_q=pack_q,
            _pack_d=pack_d,
            _VEC=VECTOR_BYTES,
            _TRUE=BOOL_TRUE_BYTES,
            _FALSE=BOOL_FALSE_BYTES,
            _write_string=write_string,
            _write_bytes=write_bytes,
            _write_fixed=write_fixed,
            _write_vector_int=write_vector_int,
            _write_vector_long=write_vector_long,
            _write_vector_objects=write_vector_objects,
            _wvec=codec._write_vector_drop,
            _wbare=codec._write_bare,
            _default=codec._default_object,
        )

    def write_one(self, a: TLArg, v: str, safe: bool) -> str:
        t = a.type
        if t == "int":
            return f"b += _pack_i({v})"
        if t == "long":
            return f"b += _pack_q({v})"
        if t == "double":
            return f"b += _pack_d({v})"
        if t == "string":
            return f"_write_string(b, {v})"
        if t == "bytes":
            return f"_write_bytes(b, {v})"
        if t == "int128":
            return f"_write_fixed(b, {v}, 16)"
        if t == "int256":
            return f"_write_fixed(b, {v}, 32)"
        if t == "Bool":
            return f"b += _TRUE if {v} else _FALSE"
        if a.bare_type:
            return f"_wbare({v}, b)"
        if safe:
            return f"{v}._write(b)"
        return f"_W[type({v})]({v}, b)"

    def write_stmts(self, a: TLArg, v: str, indent: str, safe: bool) -> list[str]:
        if not a.is_vector:
            return [indent + self.write_one(a, v, safe)]
        t = a.type
        if not a.bare_vector:
            if t == "int":
                return [f"{indent}_write_vector_int(b, {v})"]
            if t == "long":
                return [f"{indent}_write_vector_long(b, {v})"]
            if t not in CORE_TYPES and not a.bare_type:
                if safe:
                    return [f"{indent}_write_vector_objects(b, {v})"]
                return [f"{indent}_wvec(b, {v})"]
            head = [f"{indent}b += _VEC"]
        else:
            head = []
        return [
            *head,
            f"{indent}b += _pack_i(len({v}))",
            f"{indent}for _x in {v}:",
            f"{indent}    {self.write_one(a, '_x', safe)}",
        ]

    def default_expr(self, a: TLArg) -> str:
        if a.is_vector:
            return "[]"
        if a.type in _PRIMITIVE_DEFAULTS:
            return _PRIMITIVE_DEFAULTS[a.type]
        return f"_default({a.type!r})"

    def build(self) -> Callable[[Any, bytearray], None]:
        d, cd = self.d, self.cd
        codec = self.codec
        canon = {a.name: a for a in cd.args if not a.is_flags} if cd else {}
        encoders = codec.adapters["encode_field"]
        pre: list[str] = []
        body: list[str] = []
        values: dict[str, str | None] = {}  # layer field -> expression (None: nothing)
        safe: dict[str, bool] = {}
        for i, a in enumerate(d.args):
            if a.is_flags:
                continue
            ca = canon.get(a.name)
            fe = encoders.get((d.name, a.name))
            v: str | None
            if fe is not None:
                f = self.ns.add(fe.fn, "_fe")
                pre.append(f"    _v{i} = {f}(o, _ctx)")
                v = f"_v{i}"
                safe[a.name] = False
            elif ca is not None and _compatible(a, ca):
                v = f"o.{attr_name(ca.name)}"
                obj_safe = (
                    not _is_object_type(a)
                    or (ca.type == a.type and ca.type in codec._write_safe_types)
                    or a.bare_type
                )
                safe[a.name] = obj_safe
                if _is_object_type(a) and not obj_safe and not a.is_vector and a.flag_field:
                    # an optional object the layer may not know: adapt before the flags
                    pre.append(f"    _v{i} = {v}")
                    pre.append(f"    if _v{i} is not None and type(_v{i}) not in _OK:")
                    pre.append(f"        _v{i} = _adapt(_v{i})")
                    v = f"_v{i}"
                if a.flag_field is None and ca.flag_field is not None and a.type != "true":
                    # required here, optional in the canonical form
                    safe[a.name] = safe[a.name] and not _is_object_type(a)
                    pre.append(f"    _v{i} = {v}")
                    pre.append(f"    if _v{i} is None:")
                    pre.append(f"        _v{i} = {self.default_expr(a)}")
                    v = f"_v{i}"
            else:
                v = None
                safe[a.name] = False
            values[a.name] = v

        # Optional fields sharing one flag bit are all on the wire or none: the bit is
        # set when any of them has a value, and the others are written as defaults.
        groups: dict[tuple[str, int], list[TLArg]] = {}
        for a in d.args:
            if a.flag_field is not None:
                groups.setdefault((a.flag_field, a.flag_bit), []).append(a)
        present: dict[tuple[str, int], str | None] = {}
        for key, members in groups.items():
            tests = []
            for o in members:
                v = values.get(o.name)
                if v is not None:
                    tests.append(v if o.type == "true" else f"{v} is not None")
            if not tests:
                present[key] = None
            elif len(members) == 1:
                present[key] = tests[0]
            else:
                g = f"_g{len(present)}"
                pre.append(f"    {g} = {' or '.join(f'({t})' for t in tests)}")
                present[key] = g

        for a in d.args:
            if a.is_flags:
                bits = []
                for key, test in present.items():
                    if key[0] == a.name and test is not None:
                        bits.append(f"({1 << key[1]} if {test} else 0)")
                body.append(f"    b += _pack_I({' | '.join(bits) if bits else '0'})")
                continue
            v = values[a.name]
            if a.flag_field is not None:
                key = (a.flag_field, a.flag_bit)
                test = present[key]
                if a.type == "true" or test is None:
                    continue
                if len(groups[key]) == 1:
                    assert v is not None
                    body.append(f"    if {test}:")
                    body.extend(self.write_stmts(a, v, "        ", safe[a.name]))
                    continue
                body.append(f"    if {test}:")
                dflt = self.default_expr(a)
                if v is None:
                    body.extend(self.write_stmts(a, dflt, "        ", False))
                else:
                    body.append(f"        _y = {v}")
                    body.append("        if _y is None:")
                    body.append(f"            _y = {dflt}")
                    body.extend(self.write_stmts(a, "_y", "        ", False))
            else:
                if v is None:
                    v = self.default_expr(a)
                body.extend(self.write_stmts(a, v, "    ", safe[a.name]))
        head = ["def _f(o, b):", f"    b += {d.id.to_bytes(4, 'little')!r}"]
        src = "\n".join(head + pre + body) + "\n"
        return _compile(src, self.ns.values, d.name)  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- registry

CANONICAL = CanonicalCodec()
_CODECS: dict[int, LayerCodec] = {LAYER: CANONICAL}


def register_codec(codec: LayerCodec) -> None:
    # Forget resolved fallbacks: the new codec may be nearer for some layers.
    for layer in [n for n, c in _CODECS.items() if c.layer != n]:
        del _CODECS[layer]
    _CODECS[codec.layer] = codec


def codec_for(layer: int) -> LayerCodec:
    """The codec for a client's declared layer (0: not declared yet: the canonical one).

    A layer without a codec of its own gets the nearest newer one (the nearest
    older one past the newest), which is what Telegram does for layers it has dropped.
    """
    codec = _CODECS.get(layer)
    if codec is None:  # resolved once per layer (this runs for every message)
        if layer <= 0:
            return CANONICAL
        newer = [n for n in _CODECS if n >= layer]
        codec = _CODECS[layer] = _CODECS[min(newer)] if newer else CANONICAL
    return codec


# Older layers carried with their schema (schema/api.<layer>.tl, gen/layer<layer>.py).
SCHEMA_LAYERS = (198, 227)
for _layer in SCHEMA_LAYERS:
    register_codec(SchemaLayerCodec(_layer))
