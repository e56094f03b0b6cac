"""Clients of layers 198, 227 and 229 through the per-layer codecs (teamgram.tl.layers).

The reference here is independent of the codec: a small interpretive TL writer and
reader driven by each layer's schema as :mod:`teamgram.tl.parser` reads the
``.tl`` file (not the generated tables the codec uses).

* requests: for every method the server implements that the layer has, requests
  are built as a client of that layer would (random but valid values from the
  layer's schema), written by the reference writer, read by the layer's codec,
  and must come out as the canonical class with the same values wherever both
  layers have the field;
* answers and updates: canonical values (random, from the canonical schema, and
  built like the handlers build them) are written by the layer's codec and must be
  read back by the reference reader as that layer's result type, consuming every
  byte, with the same values wherever both layers have the field;
* unknown constructors get precise errors; random bytes only ever raise
  TLDecodeError; the hand-written adapters do what docs/layers.md says;
* cross-checks against Telethon (layer 229) and, when Node.js and the GramJS
  package of tests/node are there, GramJS (layer 198).
"""

from __future__ import annotations

import functools
import json
import math
import random
import shutil
import struct
import subprocess
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_tl_roundtrip import ValueGen

from teamgram.tl import (
    LAYER,
    TLDecodeError,
    TLEncodeError,
    TLFunction,
    TLObject,
    UnknownConstructorError,
    adapt,
    layerdata,
    types,
)
from teamgram.tl import functions as fn
from teamgram.tl.core import gzip_packed, pack_I
from teamgram.tl.generator import attr_name
from teamgram.tl.layers import CANONICAL, CanonicalCodec, SchemaLayerCodec, codec_for
from teamgram.tl.parser import CORE_TYPES, TLArg, TLDef, load_schema

ROOT = Path(__file__).resolve().parents[2]
OLD_LAYERS = (198, 227)
LAYERS = (*OLD_LAYERS, LAYER)
MANUAL_IDS = layerdata.MANUAL_IDS
INT_MIN, INT_MAX = -(2**31), 2**31 - 1
LONG_MIN, LONG_MAX = -(2**63), 2**63 - 1


def schema_codec(layer: int) -> SchemaLayerCodec:
    codec = codec_for(layer)
    assert isinstance(codec, SchemaLayerCodec)
    codec._setup()
    return codec


# ------------------------------------------------------------------ reference schema


@dataclass
class Obj:
    """A constructor of some layer as the reference sees it: name and TL field values."""

    name: str
    fields: dict[str, Any]


class RefSchema:
    def __init__(self, layer: int) -> None:
        _, defs = load_schema(layer)
        defs = [d for d in defs if d.id not in MANUAL_IDS]
        self.layer = layer
        self.by_name = {d.name: d for d in defs}
        self.by_id = {d.id: d for d in defs}
        self.by_type: dict[str, list[TLDef]] = defaultdict(list)
        for d in defs:
            if not d.is_function:
                self.by_type[d.result].append(d)


@functools.cache
def ref(layer: int) -> RefSchema:
    return RefSchema(layer)


def _tl_bytes(b: bytearray, data: bytes) -> None:
    n = len(data)
    if n < 254:
        b += bytes([n]) + data + b"\0" * ((-(n + 1)) % 4)
    else:
        b += bytes([254]) + n.to_bytes(3, "little") + data + b"\0" * ((-n) % 4)


def ref_write(s: RefSchema, o: Obj, b: bytearray | None = None, boxed: bool = True) -> bytes:
    out = bytearray() if b is None else b
    d = s.by_name[o.name]
    if boxed:
        out += struct.pack("<I", d.id)
    for a in d.args:
        if a.is_flags:
            flags = 0
            for x in d.args:
                if x.flag_field == a.name:
                    v = o.fields.get(x.name)
                    if (v is True) if x.type == "true" else (v is not None):
                        flags |= 1 << x.flag_bit
            out += struct.pack("<I", flags)
            continue
        v = o.fields.get(a.name)
        if a.flag_field is not None and (a.type == "true" or v is None):
            continue
        if a.is_vector:
            if not a.bare_vector:
                out += struct.pack("<I", 0x1CB5C415)
            out += struct.pack("<i", len(v))
            for x in v:
                _ref_write_one(s, a, x, out)
        else:
            _ref_write_one(s, a, v, out)
    return bytes(out)


def _ref_write_one(s: RefSchema, a: TLArg, v: Any, b: bytearray) -> None:
    t = a.type
    if t == "int":
        b += struct.pack("<i", v)
    elif t == "long":
        b += struct.pack("<q", v)
    elif t == "double":
        b += struct.pack("<d", v)
    elif t == "string":
        _tl_bytes(b, v.encode())
    elif t == "bytes":
        _tl_bytes(b, v)
    elif t in ("int128", "int256"):
        b += v
    elif t == "Bool":
        b += struct.pack("<I", 0x997275B5 if v else 0xBC799737)
    else:
        ref_write(s, v, b, boxed=not a.bare_type)


class RefReader:
    def __init__(self, s: RefSchema, data: bytes) -> None:
        self.s = s
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        assert self.pos + n <= len(self.data), "truncated"
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u32(self) -> int:
        return int(struct.unpack("<I", self.take(4))[0])

    def tl_bytes(self) -> bytes:
        n = self.take(1)[0]
        if n < 254:
            data = self.take(n)
            self.take((-(n + 1)) % 4)
        else:
            n = int.from_bytes(self.take(3), "little")
            data = self.take(n)
            self.take((-n) % 4)
        return data

    def boxed(self, expected: str | None) -> Any:
        cid = self.u32()
        if expected == "Bool":
            assert cid in (0x997275B5, 0xBC799737), f"not a Bool: {cid:#x}"
            return cid == 0x997275B5
        d = self.s.by_id.get(cid)
        assert d is not None, f"constructor {cid:#010x} unknown to layer {self.s.layer}"
        assert not d.is_function
        assert expected is None or d.result == expected, f"{d.name} is not a {expected}"
        return self.body(d)

    def body(self, d: TLDef) -> Obj:
        fields: dict[str, Any] = {}
        flags: dict[str, int] = {}
        for a in d.args:
            if a.is_flags:
                flags[a.name] = self.u32()
                continue
            if a.flag_field is not None:
                on = flags[a.flag_field] >> a.flag_bit & 1
                if a.type == "true":
                    fields[a.name] = bool(on)
                    continue
                if not on:
                    fields[a.name] = None
                    continue
            fields[a.name] = self.value(a)
        return Obj(d.name, fields)

    def value(self, a: TLArg) -> Any:
        if not a.is_vector:
            return self.one(a)
        if not a.bare_vector:
            assert self.u32() == 0x1CB5C415, "not a Vector"
        n = struct.unpack("<i", self.take(4))[0]
        assert 0 <= n <= len(self.data)
        return [self.one(a) for _ in range(n)]

    def one(self, a: TLArg) -> Any:
        t = a.type
        if t == "int":
            return struct.unpack("<i", self.take(4))[0]
        if t == "long":
            return struct.unpack("<q", self.take(8))[0]
        if t == "double":
            return struct.unpack("<d", self.take(8))[0]
        if t == "string":
            return self.tl_bytes().decode()
        if t == "bytes":
            return self.tl_bytes()
        if t == "int128":
            return self.take(16)
        if t == "int256":
            return self.take(32)
        if t == "Bool":
            return self.boxed("Bool")
        if t == "Object" or a.is_generic:
            return self.boxed(None)
        if a.bare_type:
            return self.body(self.s.by_name[t])
        return self.boxed(t)

    def result(self, result_type: str) -> Any:
        if result_type.startswith(("Vector<", "vector<")):
            elem = result_type[7:-1]
            assert self.u32() == 0x1CB5C415
            n = struct.unpack("<i", self.take(4))[0]
            a = TLArg(name="x", type=elem)
            return [self.one(a) for _ in range(n)]
        if result_type == "Bool":
            return self.boxed("Bool")
        return self.boxed(result_type)


def ref_read(layer: int, data: bytes, result_type: str | None) -> Any:
    r = RefReader(ref(layer), data)
    value = r.result(result_type) if result_type else r.boxed(None)
    assert r.pos == len(data), f"{len(data) - r.pos} bytes left over"
    return value


# ------------------------------------------------------- requests as a layer writes them


@functools.cache
def _options(layer: int) -> dict[str, list[TLDef]]:
    """Constructors per type a client of ``layer`` may send (not those the codec refuses)."""
    s = ref(layer)
    refused: set[str] = set()
    if layer != LAYER:
        codec = schema_codec(layer)
        canon = ref(LAYER).by_name
        refused = {
            n for n in s.by_name if n not in canon and n not in codec.adapters["decode_ctor"]
        }
    return {t: [d for d in ds if d.name not in refused] for t, ds in s.by_type.items()}


class LayerValueGen:
    """Random but valid constructors of one layer's schema, as Obj trees."""

    def __init__(self, layer: int, seed: int, fill: float = 0.6, max_depth: int = 3) -> None:
        self.s = ref(layer)
        self.rng = random.Random(seed)
        self.fill = fill
        self.max_depth = max_depth
        self.options = _options(layer)

    def primitive(self, t: str) -> Any:
        rng = self.rng
        if t == "int":
            return rng.choice([0, 1, -1, INT_MAX, INT_MIN, rng.randint(INT_MIN, INT_MAX)])
        if t == "long":
            return rng.choice([0, -1, LONG_MAX, LONG_MIN, rng.randint(LONG_MIN, LONG_MAX)])
        if t == "double":
            return rng.choice([0.0, -2.5, 1e300, rng.uniform(-1e9, 1e9)])
        if t == "string":
            return rng.choice(["", "hi", "Привет 😀", "x" * 300, "+79991234567"])
        if t == "bytes":
            return rng.randbytes(rng.choice([0, 3, 16, 300]))
        if t == "int128":
            return rng.randbytes(16)
        if t == "int256":
            return rng.randbytes(32)
        if t == "Bool":
            return rng.random() < 0.5
        raise AssertionError(t)

    def cheapest(self, ds: list[TLDef]) -> TLDef:
        def cost(d: TLDef) -> tuple[int, int]:
            req = [a for a in d.args if not a.is_flags and a.flag_field is None]
            return (sum(1 for a in req if a.type not in CORE_TYPES and not a.is_vector), len(req))

        return min(ds, key=cost)

    def of_type(self, t: str, depth: int) -> Obj:
        ds = self.options[t] or self.s.by_type[t]  # a type only the old layer has
        d = self.cheapest(ds) if depth >= self.max_depth else self.rng.choice(ds)
        return self.build(d, depth)

    def one(self, a: TLArg, depth: int) -> Any:
        if a.type in CORE_TYPES:
            return self.primitive(a.type)
        if a.is_generic or a.type == "Object":
            return self.build(self.s.by_name["help.getConfig"], depth + 1)
        if a.bare_type:
            return self.build(self.s.by_name[a.type], depth + 1)
        return self.of_type(a.type, depth + 1)

    def build(self, d: TLDef, depth: int = 0) -> Obj:
        groups: dict[tuple[str, int], bool] = {}
        fields: dict[str, Any] = {}
        for a in d.args:
            if a.is_flags:
                continue
            if a.flag_field is not None:
                key = (a.flag_field, a.flag_bit)
                if key not in groups:
                    groups[key] = depth < self.max_depth and self.rng.random() < self.fill
                if a.type == "true":
                    fields[a.name] = groups[key]
                    continue
                if not groups[key]:
                    fields[a.name] = None
                    continue
            if a.is_vector:
                n = 0 if depth >= self.max_depth else self.rng.randint(0, 2)
                fields[a.name] = [self.one(a, depth) for _ in range(n)]
            else:
                fields[a.name] = self.one(a, depth)
        return Obj(d.name, fields)


def _same_kind(a: TLArg, ca: TLArg) -> bool:
    """The test's own rule for "both layers have the field": same type, or two object types."""
    if a.is_vector != ca.is_vector or (a.type == "true") != (ca.type == "true"):
        return False
    objects = a.type not in CORE_TYPES and ca.type not in CORE_TYPES
    return a.type == ca.type or (objects and not a.bare_type and not ca.bare_type)


def _canonical_default(ca: TLArg) -> tuple[Any, ...]:
    if ca.flag_field is not None:
        return (None, False, 0, "", b"", [])  # unset, or set with a shared-bit partner
    if ca.is_vector:
        return ([],)
    return (
        {"int": 0, "long": 0, "double": 0.0, "string": "", "bytes": b"", "Bool": False}.get(
            ca.type
        ),
    )


def check_decoded(layer: int, want: Any, got: Any, path: str = "") -> None:
    """``got`` (canonical, from the codec) holds ``want``'s values (reference, layer L)."""
    if isinstance(want, Obj):
        s, c = ref(layer), ref(LAYER)
        if layer != LAYER:
            codec = schema_codec(layer)
            if want.name in codec.adapters["decode_ctor"]:
                assert isinstance(got, TLObject), path  # hand-written: tested below
                return
        else:
            codec = None
        assert isinstance(got, TLObject), f"{path}: {got!r}"
        assert got.TL_NAME == want.name, f"{path}: {got.TL_NAME} != {want.name}"
        ld, cd = s.by_name[want.name], c.by_name[want.name]
        canon = {a.name: a for a in cd.args if not a.is_flags}
        seen = set()
        for a in ld.args:
            ca = canon.get(a.name)
            if a.is_flags or ca is None:
                continue
            if codec is not None and (want.name, a.name) in codec.adapters["decode_field"]:
                seen.add(a.name)
                continue
            if not _same_kind(a, ca):
                continue
            seen.add(a.name)
            v, cv = want.fields[a.name], getattr(got, attr_name(a.name))
            if v is None:
                assert cv in _canonical_default(ca) or ca.flag_field is None, f"{path}.{a.name}"
                continue
            check_decoded(layer, v, cv, f"{path}.{a.name}")
        for ca in canon.values():  # fields this layer lacks: the canonical default
            if ca.name not in seen:
                cv = getattr(got, attr_name(ca.name))
                if ca.type in CORE_TYPES or ca.is_vector or ca.flag_field is not None:
                    assert cv in _canonical_default(ca), f"{path}.{ca.name} = {cv!r}"
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), path
        for i, (x, y) in enumerate(zip(want, got, strict=True)):
            check_decoded(layer, x, y, f"{path}[{i}]")
    elif isinstance(want, float) and math.isnan(want):
        assert math.isnan(got)
    else:
        assert want == got, f"{path}: {want!r} != {got!r}"


def check_encoded(layer: int, canon: Any, got: Any, path: str = "", top: bool = True) -> None:
    """``got`` (reference, read from the codec's bytes) holds ``canon``'s values."""
    if layer == LAYER:
        codec = None
    else:
        codec = schema_codec(layer)
    if top and isinstance(canon, TLObject) and canon.TL_TYPE == "Updates":
        if codec is not None and not codec.writable(canon):  # a push with nothing to show
            assert got.name == "updates" and got.fields["updates"] == [], path
            return
    if isinstance(canon, TLObject):
        assert isinstance(got, Obj), f"{path}: {got!r}"
        if codec is not None and not codec.knows(type(canon)):
            return  # an adapter or placeholder wrote it: the reader checked its type
        if codec is not None and got.name != canon.TL_NAME:
            # the placeholder of its type: something deep inside has no form here
            assert _has_no_own_form(codec, canon), f"{path}: {got.name} != {canon.TL_NAME}"
            return
        assert got.name == canon.TL_NAME, f"{path}: {got.name} != {canon.TL_NAME}"
        s, c = ref(layer), ref(LAYER)
        ld, cd = s.by_name[got.name], c.by_name[got.name]
        canon_args = {a.name: a for a in cd.args if not a.is_flags}
        shared = defaultdict(int)
        for a in ld.args:
            if a.flag_field is not None:
                shared[(a.flag_field, a.flag_bit)] += 1
        for a in ld.args:
            ca = canon_args.get(a.name)
            if a.is_flags or ca is None or not _same_kind(a, ca):
                continue
            if codec is not None and (got.name, a.name) in codec.adapters["encode_field"]:
                continue
            cv, v = getattr(canon, attr_name(a.name)), got.fields[a.name]
            if cv is None or (cv is False and ca.type == "true"):
                if a.flag_field is not None and shared[(a.flag_field, a.flag_bit)] == 1:
                    assert v in (None, False), f"{path}.{a.name}: {v!r}"
                continue  # else a default stands in for it
            if v is None:  # dropped: an object this layer has no form for
                assert codec is not None and codec._adapt(cv) is None, f"{path}.{a.name}"
                continue
            check_encoded(layer, cv, v, f"{path}.{a.name}", False)
    elif isinstance(canon, list):
        assert isinstance(got, list), path
        kept = [
            x for x in canon if codec is None or not isinstance(x, TLObject) or codec.writable(x)
        ]
        assert len(got) == len(kept), f"{path}: {len(got)} != {len(kept)}"
        for i, (x, y) in enumerate(zip(kept, got, strict=True)):
            check_encoded(layer, x, y, f"{path}[{i}]", False)
    elif isinstance(canon, float) and math.isnan(canon):
        assert math.isnan(got)
    else:
        assert canon == got, f"{path}: {canon!r} != {got!r}"


def _has_no_own_form(codec: SchemaLayerCodec, obj: TLObject) -> bool:
    try:
        codec._Wgen[type(obj)](obj, bytearray())
    except Exception:
        return True
    return False


# ------------------------------------------------------- what the server implements


@functools.cache
def implemented() -> list[type[TLFunction]]:
    """The API methods routed with status "implemented" (as tools/method_table.py counts)."""
    from teamgram.bff.rpc import Dispatcher
    from teamgram.server import ROUTERS

    routes = Dispatcher(*ROUTERS).routes
    found = [cls for cls, r in routes.items() if r.status == "implemented"]
    return sorted(found, key=lambda c: c.TL_NAME)


def test_implemented_methods_found() -> None:
    names = {c.TL_NAME for c in implemented()}
    assert {"messages.sendMessage", "updates.getDifference", "auth.signIn"} <= names


# ------------------------------------------------------------------- codec selection


def test_codec_for_layers() -> None:
    assert codec_for(0) is CANONICAL
    assert codec_for(LAYER) is CANONICAL
    assert isinstance(CANONICAL, CanonicalCodec)
    for layer in OLD_LAYERS:
        assert isinstance(codec_for(layer), SchemaLayerCodec)
        assert codec_for(layer).layer == layer
    assert codec_for(150).layer == 198  # older than any carried: the oldest
    assert codec_for(210).layer == 227  # in between: the nearest newer
    assert codec_for(228) is CANONICAL
    assert codec_for(500) is CANONICAL


def test_layer_tables_match_the_schemas() -> None:
    """gen/layerNNN.py is what the generator makes of schema/api.NNN.tl (regenerate if not)."""
    for layer in LAYERS:
        mod = __import__(f"teamgram.tl.gen.layer{layer}", fromlist=["DEFS"])
        _, defs = load_schema(layer)
        want = [layerdata.to_raw(d) for d in defs if d.id not in MANUAL_IDS]
        assert list(mod.DEFS) == want, f"run python -m teamgram.tl.layerdata (layer {layer})"


def test_schema_headers() -> None:
    for layer in LAYERS:
        head = (ROOT / f"teamgram/tl/schema/api.{layer}.tl").read_text().splitlines()[:3]
        assert head[0].startswith("// source: ") and "sha256 " in head[0]
        assert head[1] == f"// layer: {layer}"


# ------------------------------------------------------------------------ (a) requests


@pytest.mark.parametrize("layer", LAYERS)
def test_requests_of_each_layer_decode_to_canonical(layer: int) -> None:
    s = ref(layer)
    codec = codec_for(layer)
    checked = 0
    for cls in implemented():
        d = s.by_name.get(cls.TL_NAME)
        if d is None or not d.is_function:
            continue
        for seed in range(4):
            gen = LayerValueGen(layer, seed * 7919 + d.id, fill=(0.0, 1.0, 0.5, 0.5)[seed])
            want = gen.build(d)
            data = ref_write(s, want)
            got = codec.decode(data)
            assert type(got) is cls, f"{cls.TL_NAME}: {type(got).__name__}"
            check_decoded(layer, want, got, cls.TL_NAME)
            if seed == 0:  # gzip_packed, as clients send big requests
                assert type(codec.decode(gzip_packed(data))) is cls
        checked += 1
    assert checked >= 80, checked


@pytest.mark.parametrize("layer", LAYERS)
def test_first_request_switches_to_the_declared_layer(layer: int) -> None:
    """invokeWithLayer(L, initConnection(query)) is read with L's codec, whatever the key's
    layer was (0 on a new key, another one if the client changed)."""
    s = ref(layer)
    send = LayerValueGen(layer, 5, fill=1.0).build(s.by_name["messages.sendMessage"])
    init = LayerValueGen(layer, 6, fill=0.0).build(s.by_name["initConnection"])
    init.fields["query"] = send
    data = ref_write(s, Obj("invokeWithLayer", {"layer": layer, "query": init}))
    for current in (0, *LAYERS):
        got = codec_for(current).decode(data)
        assert type(got) is fn.InvokeWithLayer and got.layer == layer
        assert type(got.query) is fn.InitConnection
        check_decoded(layer, send, got.query.query, "query")


@pytest.mark.parametrize("layer", OLD_LAYERS)
def test_every_constructor_of_the_layer_decodes(layer: int) -> None:
    """Beyond the implemented methods: every function and constructor of the layer, filled
    at random, reads into its canonical form, or is refused when only that layer has it."""
    s = ref(layer)
    codec = schema_codec(layer)
    refused = {n for n in s.by_name if n not in ref(LAYER).by_name}
    refused -= set(codec.adapters["decode_ctor"])
    for d in s.by_name.values():
        want = LayerValueGen(layer, d.id, fill=0.5).build(d)
        data = ref_write(s, want)
        if d.name in refused:
            with pytest.raises(UnknownConstructorError) as info:
                codec.decode(data)
            assert (info.value.offset, info.value.function) == (0, d.is_function)
            continue
        try:
            got = codec.decode(data)
        except UnknownConstructorError as exc:  # holds a type only this layer has
            assert exc.offset > 0 and s.by_id[exc.constructor_id].name in refused, d.name
            continue
        check_decoded(layer, want, got, d.name)


def test_request_fields_the_old_layer_lacks_get_defaults() -> None:
    s = ref(198)
    want = LayerValueGen(198, 1, fill=1.0).build(s.by_name["messages.getPollResults"])
    got = codec_for(198).decode(ref_write(s, want))
    assert type(got) is fn.messages.GetPollResults and got.poll_hash == 0
    want = LayerValueGen(198, 2, fill=1.0).build(s.by_name["channels.toggleForum"])
    got = codec_for(198).decode(ref_write(s, want))
    assert got.tabs is False and got.enabled == want.fields["enabled"]


# --------------------------------------------------------------- (b) answers and updates


def _canonical_result(cls: type[TLFunction], gen: ValueGen) -> Any:
    rt = cls.TL_TYPE
    if rt == "Bool":
        return gen.rng.random() < 0.5
    if rt.startswith(("Vector<", "vector<")):
        elem = rt[7:-1]
        n = gen.rng.randint(0, 3)
        if elem in CORE_TYPES:
            return [gen.primitive(elem) for _ in range(n)]
        return [gen.of_type(elem, 1) for _ in range(n)]
    return gen.of_type(rt, 0)


@pytest.mark.parametrize("layer", LAYERS)
def test_answers_decode_under_each_layer(layer: int) -> None:
    s = ref(layer)
    codec = codec_for(layer)
    checked = 0
    for cls in implemented():
        d = s.by_name.get(cls.TL_NAME)
        if d is None or not d.is_function or d.generic_result:
            continue
        for seed in range(3):
            gen = ValueGen(seed * 31 + cls.CONSTRUCTOR_ID, fill=(0.3, 0.9, 0.6)[seed], max_depth=3)
            value = _canonical_result(cls, gen)
            try:
                data = codec.encode_result(cls, value)
            except TLEncodeError:
                # only when the answer itself has no form in this layer
                assert layer != LAYER and isinstance(value, TLObject)
                assert not schema_codec(layer).writable(value)
                continue
            got = ref_read(layer, data, d.result)
            if layer != LAYER and cls.TL_NAME in schema_codec(layer).adapters["encode_result"]:
                continue  # a hand-written result conversion: tested below
            check_encoded(layer, value, got, cls.TL_NAME)
        checked += 1
    assert checked >= 80


@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("seed", range(12))
def test_updates_decode_under_each_layer(layer: int, seed: int) -> None:
    gen = ValueGen(seed * 101 + layer, fill=0.7, max_depth=4, max_len=4)
    updates = gen.of_type("Updates", 0)
    data = codec_for(layer).encode(updates)
    got = ref_read(layer, data, "Updates")
    check_encoded(layer, updates, got, "updates")


def _holds_unknown(codec: SchemaLayerCodec, obj: Any) -> bool:
    """Some object in the tree has no constructor of its name in the codec's layer."""
    if isinstance(obj, list):
        return any(_holds_unknown(codec, x) for x in obj)
    if isinstance(obj, TLObject):
        if not codec.has(obj.TL_NAME):
            return True
        return any(_holds_unknown(codec, getattr(obj, s)) for s in obj.__slots__)
    return False


@pytest.mark.parametrize("layer", OLD_LAYERS)
def test_every_canonical_constructor_encodes_under_each_layer(layer: int) -> None:
    """Each canonical constructor, filled at random, is written so that the layer reads it
    (as itself, as a placeholder, or not at all when nothing of it exists there)."""
    codec = schema_codec(layer)
    c = ref(LAYER)
    written = total = 0
    for d in c.by_name.values():
        if d.is_function or d.name == "rpc_result":  # rpc_result is the session's
            continue
        total += 1
        obj = ValueGen(d.id, fill=0.5, max_depth=3).build(d)
        try:
            data = codec.encode(obj)
        except TLEncodeError:
            assert _holds_unknown(codec, obj), d.name
            continue
        check_encoded(layer, obj, ref_read(layer, data, None), d.name)
        written += 1
    assert written > 0.8 * total


def _message(i: int, media: Any = None, **kw: Any) -> Any:
    return types.Message(
        id=100 + i,
        peer_id=types.PeerUser(user_id=42),
        from_id=types.PeerUser(user_id=7),
        date=1_700_000_000 + i,
        message=f"message {i} 😀",
        out=i % 2 == 0,
        media=media,
        entities=[
            types.MessageEntityBold(offset=0, length=4),
            types.MessageEntityTextUrl(offset=5, length=2, url="https://example.com"),
        ],
        reply_to=types.MessageReplyHeader(reply_to_msg_id=99) if i % 3 == 0 else None,
        **kw,
    )


def _photo() -> Any:
    return types.Photo(
        id=5_000_000_001,
        access_hash=-123,
        file_reference=b"\x01ref",
        date=1_700_000_000,
        sizes=[
            types.PhotoStrippedSize(type="i", bytes=b"\x01\x28\x28" + bytes(20)),
            types.PhotoSize(type="m", w=320, h=240, size=12345),
            types.PhotoSizeProgressive(type="y", w=1280, h=960, sizes=[1000, 5000, 20000]),
        ],
        dc_id=2,
        has_stickers=False,
    )


def _document() -> Any:
    return types.Document(
        id=6_000_000_001,
        access_hash=77,
        file_reference=b"\x02ref",
        date=1_700_000_000,
        mime_type="video/mp4",
        size=10_000_000,
        dc_id=2,
        thumbs=[types.PhotoSize(type="s", w=90, h=90, size=1000)],
        attributes=[
            types.DocumentAttributeVideo(duration=12.5, w=1280, h=720, supports_streaming=True),
            types.DocumentAttributeFilename(file_name="clip.mp4"),
        ],
    )


def _user(i: int) -> Any:
    return types.User(
        id=1000 + i,
        access_hash=99 + i,
        first_name=f"User {i}",
        username=f"user{i}",
        phone="15550100001",
        contact=True,
        photo=types.UserProfilePhoto(photo_id=5, dc_id=2, stripped_thumb=b"\x01\x02"),
        status=types.UserStatusOffline(was_online=1_700_000_000),
        stories_max_id=types.RecentStory(max_id=12),
    )


def server_objects() -> list[tuple[str, type[TLFunction] | None, Any]]:
    """Answers and updates as the handlers build them: (label, method or None, value)."""
    photo_msg = _message(1, types.MessageMediaPhoto(photo=_photo()))
    doc_msg = _message(2, types.MessageMediaDocument(document=_document()))
    todo_msg = _message(  # a media kind layer 198 lacks
        3,
        types.MessageMediaToDo(
            todo=types.TodoList(title=types.TextWithEntities(text="t", entities=[]), list=[])
        ),
    )
    service = types.MessageService(
        id=200,
        peer_id=types.PeerUser(user_id=42),
        date=1_700_000_000,
        action=types.MessageActionSuggestBirthday(
            birthday=types.Birthday(day=1, month=2)
        ),  # an action layer 198 lacks
    )
    dialog = types.Dialog(
        peer=types.PeerUser(user_id=42),
        top_message=101,
        read_inbox_max_id=100,
        read_outbox_max_id=100,
        unread_count=1,
        unread_mentions_count=0,
        unread_reactions_count=0,
        unread_poll_votes_count=0,
        notify_settings=types.PeerNotifySettings(),
    )
    users = [_user(i) for i in range(3)]
    chats = [
        types.Chat(
            id=9,
            title="group",
            photo=types.ChatPhotoEmpty(),
            participants_count=3,
            date=1_700_000_000,
            version=1,
        )
    ]
    msgs = [_message(0), photo_msg, doc_msg, todo_msg, service]
    updates = types.Updates(
        updates=[
            types.UpdateNewMessage(message=m, pts=10 + i, pts_count=1) for i, m in enumerate(msgs)
        ]
        + [
            types.UpdateReadHistoryInbox(
                peer=types.PeerUser(user_id=42),
                max_id=101,
                still_unread_count=0,
                pts=20,
                pts_count=1,
            ),
            types.UpdateUserTyping(
                user_id=42,
                action=types.SendMessageTextDraftAction(
                    random_id=1, text=types.TextWithEntities(text="x", entities=[])
                ),
            ),
            types.UpdateSentPhoneCode(  # no form in 198: left out
                sent_code=types.auth.SentCode(
                    type=types.auth.SentCodeTypeApp(length=5), phone_code_hash="h"
                )
            ),
        ],
        users=users,
        chats=chats,
        date=1_700_000_000,
        seq=0,
    )
    return [
        ("updates", None, updates),
        (
            "updateShortMessage",
            None,
            types.UpdateShortMessage(
                id=5, user_id=42, message="hi", pts=3, pts_count=1, date=1_700_000_000
            ),
        ),
        ("updateShort", None, types.UpdateShort(update=types.UpdateLoginToken(), date=1)),
        (
            "updateShort of an update 198 lacks",
            None,
            types.UpdateShort(
                update=types.UpdateSentPhoneCode(
                    sent_code=types.auth.SentCode(
                        type=types.auth.SentCodeTypeApp(length=5), phone_code_hash="h"
                    )
                ),
                date=1,
            ),
        ),
        (
            "getHistory",
            fn.messages.GetHistory,
            types.messages.Messages(messages=msgs, topics=[], chats=chats, users=users),
        ),
        (
            "getDialogs",
            fn.messages.GetDialogs,
            types.messages.Dialogs(dialogs=[dialog], messages=msgs, chats=chats, users=users),
        ),
        ("getUsers", fn.users.GetUsers, users),
        (
            "getFullUser",
            fn.users.GetFullUser,
            types.users.UserFull(
                full_user=types.UserFull(
                    id=1000,
                    settings=types.PeerSettings(),
                    notify_settings=types.PeerNotifySettings(),
                    common_chats_count=0,
                    profile_photo=_photo(),
                ),
                chats=[],
                users=users[:1],
            ),
        ),
        (
            "getUserPhotos",
            fn.photos.GetUserPhotos,
            types.photos.Photos(photos=[_photo()], users=users[:1]),
        ),
        (
            "getState",
            fn.updates.GetState,
            types.updates.State(pts=1, qts=0, date=2, seq=0, unread_count=0),
        ),
        (
            "getDifference",
            fn.updates.GetDifference,
            types.updates.Difference(
                new_messages=msgs,
                new_encrypted_messages=[],
                other_updates=updates.updates,
                chats=chats,
                users=users,
                state=types.updates.State(pts=30, qts=0, date=3, seq=0, unread_count=0),
            ),
        ),
        (
            "signIn",
            fn.auth.SignIn,
            types.auth.Authorization(user=users[0]),
        ),
        ("getContactIDs", fn.contacts.GetContactIDs, [1001, 1002]),
        (
            "readHistory",
            fn.messages.ReadHistory,
            types.messages.AffectedMessages(pts=5, pts_count=1),
        ),
        ("updateStatus", fn.account.UpdateStatus, True),
    ]


@pytest.mark.parametrize("layer", LAYERS)
def test_server_objects_decode_under_each_layer(layer: int) -> None:
    codec = codec_for(layer)
    for label, method, value in server_objects():
        if method is None:
            data = codec.encode(value)
            got = ref_read(layer, data, "Updates")
        else:
            data = codec.encode_result(method, value)
            got = ref_read(layer, data, ref(layer).by_name[method.TL_NAME].result)
        if label == "updateShort of an update 198 lacks" and layer == 198:
            assert got.name == "updates" and got.fields["updates"] == []
            continue
        check_encoded(layer, value, got, label)


def test_layer_198_placeholders() -> None:
    """What layer 198 gets for things it has no constructor for."""
    (_, _, updates), *_ = server_objects()
    got = ref_read(198, codec_for(198).encode(updates), "Updates")
    ups = got.fields["updates"]
    assert len(ups) == len(updates.updates) - 1  # updateSentPhoneCode left out
    media = [u.fields["message"].fields.get("media") for u in ups[:5]]
    assert [m.name if m else None for m in media] == [
        None,
        "messageMediaPhoto",
        "messageMediaDocument",
        "messageMediaUnsupported",
        None,
    ]
    assert ups[4].fields["message"].fields["action"].name == "messageActionEmpty"
    typing = ups[6].fields["action"]
    assert typing.name == "sendMessageTypingAction"
    user = got.fields["users"][0]
    assert user.name == "user" and user.fields["stories_max_id"] == 12
    # 227 knows these
    got = ref_read(227, codec_for(227).encode(updates), "Updates")
    assert len(got.fields["updates"]) == len(updates.updates)


# ---------------------------------------------------------------- hand-written adapters


def _inline_markup_198() -> Obj:
    row = Obj(
        "keyboardButtonRow",
        {
            "buttons": [
                Obj("keyboardButtonUrl", {"text": "open", "url": "https://t.me"}),
                Obj(
                    "keyboardButtonCallback",
                    {"requires_password": True, "text": "cb", "data": b"\x01"},
                ),
            ]
        },
    )
    return Obj("replyInlineMarkup", {"rows": [row]})


@pytest.mark.parametrize("layer", OLD_LAYERS)
def test_keyboards_both_ways(layer: int) -> None:
    codec = codec_for(layer)
    s = ref(layer)
    markup = _inline_markup_198()
    if layer == 227:
        for b in markup.fields["rows"][0].fields["buttons"]:
            b.fields["style"] = None
    got = codec.decode(ref_write(s, markup))
    assert got == types.ReplyInlineMarkup(
        rows=[
            types.KeyboardInlineButtonRow(
                buttons=[
                    types.KeyboardInlineButton(
                        text="open", type=types.InlineButtonTypeUrl(url="https://t.me")
                    ),
                    types.KeyboardInlineButton(
                        text="cb",
                        type=types.InlineButtonTypeCallback(requires_password=True, data=b"\x01"),
                    ),
                ]
            )
        ]
    )
    back = ref_read(layer, codec.encode(got), "ReplyMarkup")
    assert back == markup
    reply = types.ReplyKeyboardMarkup(
        rows=[
            types.KeyboardButtonRow(
                buttons=[
                    types.KeyboardButton(text="plain", type=types.ButtonTypeDefault()),
                    types.KeyboardButton(text="phone", type=types.ButtonTypeRequestPhone()),
                ]
            )
        ],
        resize=True,
    )
    back = ref_read(layer, codec.encode(reply), "ReplyMarkup")
    names = [b.name for b in back.fields["rows"][0].fields["buttons"]]
    assert names == ["keyboardButton", "keyboardButtonRequestPhone"]
    assert codec.decode(ref_write(s, back)) == reply


def test_layer_198_request_adapters() -> None:
    codec = codec_for(198)
    s = ref(198)
    peer = Obj("inputPeerSelf", {})
    got = codec.decode(
        ref_write(
            s,
            Obj(
                "messages.sendPaidReaction",
                {"peer": peer, "msg_id": 1, "count": 2, "random_id": 3, "private": True},
            ),
        )
    )
    assert got.private == types.PaidReactionPrivacyAnonymous()
    got = codec.decode(
        ref_write(
            s,
            Obj(
                "account.updateColor",
                {"for_profile": True, "color": 5, "background_emoji_id": None},
            ),
        )
    )
    assert got == fn.account.UpdateColor(for_profile=True, color=types.PeerColor(color=5))
    got = codec.decode(ref_write(s, Obj("messages.setChatTheme", {"peer": peer, "emoticon": "🎉"})))
    assert got == fn.messages.SetChatTheme(
        peer=types.InputPeerSelf(), theme=types.InputChatTheme(emoticon="🎉")
    )
    text = Obj("textWithEntities", {"text": "q", "entities": []})
    answers = [Obj("pollAnswer", {"text": text, "option": bytes([i])}) for i in range(3)]
    poll = Obj(
        "poll",
        {
            "id": 1,
            "closed": False,
            "public_voters": False,
            "multiple_choice": False,
            "quiz": True,
            "question": text,
            "answers": answers,
            "close_period": None,
            "close_date": None,
        },
    )
    got = codec.decode(
        ref_write(
            s,
            Obj(
                "inputMediaPoll",
                {
                    "poll": poll,
                    "correct_answers": [b"\x02"],
                    "solution": None,
                    "solution_entities": None,
                },
            ),
        )
    )
    assert got.correct_answers == [2] and got.poll.hash == 0


def test_layer_198_answer_adapters() -> None:
    codec = codec_for(198)
    action = types.MessageActionGiftPremium(currency="USD", amount=100, days=90)
    got = ref_read(198, codec.encode(action), "MessageAction")
    assert got.fields["months"] == 3
    theme = types.MessageActionSetChatTheme(theme=types.ChatTheme(emoticon="🌸"))
    assert ref_read(198, codec.encode(theme), "MessageAction").fields["emoticon"] == "🌸"
    ok = types.messages.ChatInviteJoinResultOk(updates=types.UpdatesTooLong())
    got = ref_read(198, codec.encode_result(fn.channels.JoinChannel, ok), "Updates")
    assert got.name == "updatesTooLong"
    got = ref_read(
        198,
        codec.encode_result(
            fn.stories.GetPeerMaxIDs, [types.RecentStory(max_id=4), types.RecentStory()]
        ),
        "Vector<int>",
    )
    assert got == [4, 0]
    privacy = types.UpdatePaidReactionPrivacy(private=types.PaidReactionPrivacyAnonymous())
    assert ref_read(198, codec.encode(privacy), "Update").fields["private"] is True


def test_every_adapter_is_documented() -> None:
    """docs/layers.md carries the generated table (python -m teamgram.tl.adapt)."""
    doc = ROOT / "docs/layers.md"
    assert adapt.update_doc(str(doc), check=True), "run python -m teamgram.tl.adapt"
    text = doc.read_text()
    for a in adapt.REGISTRY:
        label = f"{a.name}.{a.field}" if a.field else a.name
        assert f"`{label}`" in text, label


# ----------------------------------------------------------------------------- (c) errors

UNKNOWN_ID = 0x0BADC0DE


@pytest.mark.parametrize("layer", LAYERS)
def test_unknown_constructors_are_precise(layer: int) -> None:
    codec = codec_for(layer)
    s = ref(layer)
    assert UNKNOWN_ID not in s.by_id
    with pytest.raises(UnknownConstructorError) as info:
        codec.decode(pack_I(UNKNOWN_ID) + bytes(8))
    assert (info.value.constructor_id, info.value.offset) == (UNKNOWN_ID, 0)
    # nested: messages.getHistory's peer
    want = LayerValueGen(layer, 1, fill=0.0).build(s.by_name["messages.getHistory"])
    data = bytearray(ref_write(s, want))
    data[4:8] = pack_I(UNKNOWN_ID)
    with pytest.raises(UnknownConstructorError) as info:
        codec.decode(bytes(data))
    assert (info.value.offset, info.value.function) == (4, False)
    # a constructor of another type where a peer is expected
    data[4:8] = pack_I(s.by_name["userEmpty"].id)
    with pytest.raises(TLDecodeError) as err:
        codec.decode(bytes(data))
    assert not isinstance(err.value, UnknownConstructorError)
    # an unknown query inside invokeWithLayer: a method error
    data = struct.pack("<Ii", 0xDA9B0D0D, layer) + pack_I(UNKNOWN_ID)
    for current in (0, layer):
        with pytest.raises(UnknownConstructorError) as info:
            codec_for(current).decode(data)
        assert (info.value.offset, info.value.function) == (8, True)


def test_methods_only_the_old_layer_has_are_refused() -> None:
    s = ref(198)
    d = s.by_name["channels.getForumTopicsByID"]  # moved to messages.* later
    want = LayerValueGen(198, 3, fill=0.0).build(d)
    with pytest.raises(UnknownConstructorError) as info:
        codec_for(198).decode(ref_write(s, want))
    assert (info.value.constructor_id, info.value.offset, info.value.function) == (d.id, 0, True)
    wrapped = struct.pack("<Ii", 0xDA9B0D0D, 198) + ref_write(s, want)
    with pytest.raises(UnknownConstructorError) as info:
        CANONICAL.decode(wrapped)
    assert (info.value.constructor_id, info.value.offset, info.value.function) == (d.id, 8, True)


def test_session_answers_unknown_constructors_and_stays_up() -> None:
    from test_session import Harness, results

    h = Harness()
    h.mt.decoder = codec_for(198).decode
    h.open()
    s = ref(198)
    topics = ref_write(
        s, LayerValueGen(198, 3, fill=0.0).build(s.by_name["channels.getForumTopicsByID"])
    )
    mid, _ = h.send(topics)
    d = s.by_name["channels.getForumTopicsByID"]
    err = types.RpcError(error_code=400, error_message=f"INPUT_METHOD_INVALID_{d.id}")
    assert results(h.flush()) == {mid: err}
    body = bytearray(ref_write(s, LayerValueGen(198, 1).build(s.by_name["messages.getHistory"])))
    body[4:8] = pack_I(UNKNOWN_ID)
    mid, _ = h.send(bytes(body))
    err = types.RpcError(error_code=400, error_message="INPUT_CONSTRUCTOR_INVALID")
    assert results(h.flush()) == {mid: err}
    mid, _ = h.send(fn.Ping(ping_id=7))
    assert any(type(o.obj) is types.Pong for o in h.flush())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200), st.sampled_from(OLD_LAYERS))
def test_fuzz_random_bytes_only_raise_decode_errors(data: bytes, layer: int) -> None:
    codec = codec_for(layer)
    s = ref(layer)
    # random bytes behind a real constructor id, so the fuzz goes past the first word
    ids = sorted(s.by_id)
    for body in (data, pack_I(ids[len(data) % len(ids)]) + data):
        try:
            codec.decode(body)
        except TLDecodeError:
            pass


@pytest.mark.parametrize("seed", range(40))
def test_fuzz_mutated_requests_only_raise_decode_errors(seed: int) -> None:
    rng = random.Random(seed)
    s = ref(198)
    names = [c.TL_NAME for c in implemented() if c.TL_NAME in s.by_name]
    want = LayerValueGen(198, seed, fill=0.7).build(s.by_name[rng.choice(names)])
    data = bytearray(ref_write(s, want))
    for _ in range(20):
        mutated = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        cut = bytes(mutated[: rng.randint(0, len(mutated))])
        for body in (bytes(mutated), cut):
            try:
                codec_for(198).decode(body)
            except TLDecodeError:
                pass


# --------------------------------------------------------------------- cross-checks


def test_telethon_reads_canonical_answers_and_writes_requests() -> None:
    pytest.importorskip("telethon")
    from telethon.extensions import BinaryReader
    from telethon.tl import functions as tfn
    from telethon.tl import types as tty

    codec = codec_for(LAYER)
    for label, method, value in server_objects():
        data = codec.encode(value) if method is None else codec.encode_result(method, value)
        if isinstance(value, list) and not isinstance(value[0], TLObject):
            continue  # a vector of ints: Telethon reads it only knowing the method
        got = BinaryReader(data).tgread_object()
        if isinstance(value, list):
            assert isinstance(got, list) and len(got) == len(value), label
        elif isinstance(value, TLObject):
            assert got.CONSTRUCTOR_ID == value.CONSTRUCTOR_ID, label
    req = tfn.InvokeWithLayerRequest(
        LAYER,
        tfn.InitConnectionRequest(
            api_id=1,
            device_model="d",
            system_version="s",
            app_version="a",
            system_lang_code="en",
            lang_pack="",
            lang_code="en",
            query=tfn.messages.SendMessageRequest(
                peer=tty.InputPeerUser(user_id=5, access_hash=6), message="hi", random_id=7
            ),
        ),
    )
    got = codec.decode(bytes(req))
    assert got.query.query == fn.messages.SendMessage(
        peer=types.InputPeerUser(user_id=5, access_hash=6), message="hi", random_id=7
    )


GRAMJS_DIR = ROOT / "tests" / "node"
GRAMJS_READ = """
const {BinaryReader} = require('telegram/extensions');
const input = JSON.parse(require('fs').readFileSync(0, 'utf8'));
const out = input.map((hex) => {
  try {
    const r = new BinaryReader(Buffer.from(hex, 'hex'));
    const o = r.tgReadObject();
    const left = r.getBuffer().length - r.tellPosition();
    const cls = Array.isArray(o) ? o.map((x) => x.className) : o.className;
    const ups = (o && o.updates) || [];
    return {cls, left, media: ups.map((u) => (u.message && u.message.media
                                              ? u.message.media.className : null))};
  } catch (e) {
    return {error: String(e)};
  }
});
process.stdout.write(JSON.stringify(out));
"""


def _gramjs_read(blobs: list[bytes]) -> list[dict[str, Any]]:
    node = shutil.which("node")
    if node is None or not (GRAMJS_DIR / "node_modules" / "telegram").is_dir():
        pytest.skip("node or tests/node/node_modules/telegram missing")
    proc = subprocess.run(
        [node, "-e", GRAMJS_READ],
        input=json.dumps([b.hex() for b in blobs]),
        capture_output=True,
        text=True,
        cwd=GRAMJS_DIR,
        timeout=60,
        check=True,
    )
    out: list[dict[str, Any]] = json.loads(proc.stdout)
    return out


def _gramjs_name(tl_name: str) -> str:
    ns, _, short = tl_name.rpartition(".")
    return (f"{ns}." if ns else "") + short[:1].upper() + short[1:]


def _nonzero_message_ids(obj: Any) -> None:
    """GramJS refuses a message with id 0 (its Message class tests ``!id``)."""
    if isinstance(obj, list):
        for x in obj:
            _nonzero_message_ids(x)
    elif isinstance(obj, TLObject):
        if isinstance(obj, types.Message | types.MessageService) and not obj.id:
            obj.id = 1
        for slot in obj.__slots__:
            _nonzero_message_ids(getattr(obj, slot))


def test_gramjs_reads_layer_198_answers_and_updates() -> None:
    """Optional: GramJS 2.26.22 (layer 198) itself parses what the 198 codec writes:
    the server's answers and random canonical Updates, every byte consumed."""
    codec = codec_for(198)
    blobs, want = [], []
    for _, method, value in server_objects():
        if isinstance(value, bool) or (isinstance(value, list) and not value):
            continue
        if isinstance(value, list) and not isinstance(value[0], TLObject):
            continue
        data = codec.encode(value) if method is None else codec.encode_result(method, value)
        blobs.append(data)
        want.append(
            ref_read(
                198,
                data,
                None if method is None else "Vector<User>" if isinstance(value, list) else None,
            )
        )
    for seed in range(30):
        updates = ValueGen(seed * 13 + 5, fill=0.7, max_depth=4).of_type("Updates", 0)
        _nonzero_message_ids(updates)
        data = codec.encode(updates)
        blobs.append(data)
        want.append(ref_read(198, data, "Updates"))
    out = _gramjs_read(blobs)
    for got, ref_obj in zip(out, want, strict=True):
        assert "error" not in got, got
        assert got["left"] == 0
        if isinstance(ref_obj, list):
            assert got["cls"] == [_gramjs_name(x.name) for x in ref_obj]
        else:
            assert got["cls"] == _gramjs_name(ref_obj.name)
    assert out[0]["media"][:4] == [
        None,
        "MessageMediaPhoto",
        "MessageMediaDocument",
        "MessageMediaUnsupported",
    ]


GRAMJS_WRITE = """
const {Api} = require('telegram');
const bigInt = require('big-integer');
const peer = new Api.InputPeerUser({userId: bigInt(5), accessHash: bigInt(-6)});
const reqs = [
  new Api.InvokeWithLayer({layer: 198, query: new Api.InitConnection({
    apiId: 1, deviceModel: 'd', systemVersion: 's', appVersion: 'a', systemLangCode: 'en',
    langPack: '', langCode: 'en', query: new Api.help.GetConfig()})}),
  new Api.auth.SendCode({phoneNumber: '+15550100001', apiId: 1, apiHash: 'h',
    settings: new Api.CodeSettings({})}),
  new Api.messages.SendMessage({peer, message: 'hi 😀', randomId: bigInt(7), noWebpage: true,
    entities: [new Api.MessageEntityBold({offset: 0, length: 2})],
    replyTo: new Api.InputReplyToMessage({replyToMsgId: 3})}),
  new Api.messages.GetHistory({peer, offsetId: 0, offsetDate: 0, addOffset: 0, limit: 20,
    maxId: 0, minId: 0, hash: bigInt(0)}),
  new Api.messages.SendMedia({peer, message: '', randomId: bigInt(8),
    media: new Api.InputMediaUploadedPhoto({file: new Api.InputFile({id: bigInt(9),
      parts: 1, name: 'a.jpg', md5Checksum: ''})})}),
  new Api.upload.GetFile({location: new Api.InputPhotoFileLocation({id: bigInt(1),
    accessHash: bigInt(2), fileReference: Buffer.from('ab'), thumbSize: 'y'}),
    offset: bigInt(0), limit: 524288}),
];
process.stdout.write(JSON.stringify(reqs.map((r) => r.getBytes().toString('hex'))));
"""


def test_layer_198_codec_reads_gramjs_requests() -> None:
    """Optional: requests as GramJS 2.26.22 itself writes them."""
    node = shutil.which("node")
    if node is None or not (GRAMJS_DIR / "node_modules" / "telegram").is_dir():
        pytest.skip("node or tests/node/node_modules/telegram missing")
    proc = subprocess.run(
        [node, "-e", GRAMJS_WRITE],
        capture_output=True,
        text=True,
        cwd=GRAMJS_DIR,
        timeout=60,
        check=True,
    )
    blobs = [bytes.fromhex(h) for h in json.loads(proc.stdout)]
    got = [CANONICAL.decode(blobs[0])] + [codec_for(198).decode(b) for b in blobs[1:]]
    init = got[0]
    assert init.layer == 198 and type(init.query.query) is fn.help.GetConfig
    assert got[1].phone_number == "+15550100001"  # bff's normalize_phone strips the "+"
    peer = types.InputPeerUser(user_id=5, access_hash=-6)
    assert got[2] == fn.messages.SendMessage(
        peer=peer,
        message="hi 😀",
        random_id=7,
        no_webpage=True,
        entities=[types.MessageEntityBold(offset=0, length=2)],
        reply_to=types.InputReplyToMessage(reply_to_msg_id=3),
    )
    assert got[3] == fn.messages.GetHistory(
        peer=peer, offset_id=0, offset_date=0, add_offset=0, limit=20, max_id=0, min_id=0, hash=0
    )
    assert type(got[4].media) is types.InputMediaUploadedPhoto
    assert got[4].media.file == types.InputFile(id=9, parts=1, name="a.jpg", md5_checksum="")
    assert got[5].location.file_reference == b"ab" and got[5].limit == 524288
