"""Parse Telegram's TL schema text into plain definitions.

The generator (and the layer adapters) work from these definitions, so the parser
keeps everything the wire format needs: constructor ids, parameter order, flag
fields and bits, vector/bare markers and generic (`!X`) parameters.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path

SCHEMA_DIR = Path(__file__).resolve().parent / "schema"

# Types the codec reads and writes natively (never as generated classes).
CORE_TYPES = frozenset(
    {"int", "long", "double", "string", "bytes", "int128", "int256", "Bool", "true", "#"}
)


class SchemaError(ValueError):
    """A line of the schema could not be understood."""


@dataclass(frozen=True, slots=True)
class TLArg:
    """One parameter of a constructor or function."""

    name: str
    type: str  # element type for vectors, e.g. "long" for Vector<long>
    is_vector: bool = False
    bare_vector: bool = False  # vector<T> (no 0x1cb5c415 header) vs Vector<T>
    bare_type: bool = False  # %T or lowercase constructor name: no constructor id
    flag_field: str | None = None  # "flags" / "flags2" when conditional
    flag_bit: int = -1
    is_flags: bool = False  # the "#" field itself
    is_generic: bool = False  # !X: any TL object (a function for the invoke* wrappers)

    @property
    def is_true_flag(self) -> bool:
        return self.flag_field is not None and self.type == "true"


@dataclass(slots=True)
class TLDef:
    """A constructor (``is_function`` False) or a function of the schema."""

    name: str  # full name, e.g. "messages.sendMessage"
    id: int  # unsigned 32-bit constructor id
    args: list[TLArg]
    result: str  # the boxed type (or function result type), e.g. "Updates"
    is_function: bool
    layer_source: str = ""
    generic_result: bool = field(default=False)  # result type is {X:Type}

    @property
    def namespace(self) -> str | None:
        return self.name.split(".", 1)[0] if "." in self.name else None

    @property
    def short_name(self) -> str:
        return self.name.rsplit(".", 1)[-1]


_LINE_RE = re.compile(
    r"^(?P<name>[\w.]+)(?:#(?P<id>[0-9a-fA-F]{1,8}))?\s*"
    r"(?P<generics>(?:\{[^}]*\}\s*)*)"
    r"(?P<args>.*?)\s*=\s*(?P<result>[^;]+);$"
)
_ARG_RE = re.compile(r"^(?P<name>\w+):(?P<type>.+)$")
_FLAG_RE = re.compile(r"^(?P<field>\w+)\.(?P<bit>\d+)\?(?P<type>.+)$")
_VECTOR_RE = re.compile(r"^(?P<v>[Vv]ector)<(?P<elem>.+)>$")

# Lines that define the codec's own primitives rather than schema types.
_SKIP_NAMES = frozenset({"vector", "boolFalse", "boolTrue", "true", "error", "null"})


def _normalise(line: str) -> str:
    return re.sub(r"\s+", " ", line).strip()


def _tl_crc(line: str) -> int:
    """The constructor id Telegram derives from a definition with no explicit #id."""
    text = re.sub(r"[a-zA-Z0-9_]+:flags\.\d+\?true", "", line)
    text = text.replace("<", " ").replace(">", " ").replace("{", "").replace("}", "")
    text = re.sub(r"\s+", " ", text).replace(" ;", "").strip().rstrip(";").strip()
    return zlib.crc32(text.encode()) & 0xFFFFFFFF


def _parse_arg(token: str, generics: set[str]) -> TLArg:
    if token == "#":
        raise SchemaError(f"unnamed flags field {token!r}")
    m = _ARG_RE.match(token)
    if not m:
        raise SchemaError(f"cannot parse argument {token!r}")
    name, typ = m.group("name"), m.group("type")
    flag_field: str | None = None
    flag_bit = -1
    fm = _FLAG_RE.match(typ)
    if fm:
        flag_field, flag_bit, typ = fm.group("field"), int(fm.group("bit")), fm.group("type")
    if typ == "#":
        return TLArg(name=name, type="#", is_flags=True)
    if typ.startswith("!"):
        if typ[1:] not in generics:
            raise SchemaError(f"generic {typ!r} not declared")
        return TLArg(name=name, type="Object", is_generic=True)
    is_vector = bare_vector = bare_type = False
    vm = _VECTOR_RE.match(typ)
    if vm:
        is_vector = True
        bare_vector = vm.group("v") == "vector"
        typ = vm.group("elem")
    if typ.startswith("%"):
        bare_type = True
        typ = typ[1:]
    elif typ not in CORE_TYPES and typ.rsplit(".", 1)[-1][:1].islower():
        bare_type = True  # a constructor name used as a bare type, e.g. vector<future_salt>
    if typ in generics:
        typ = "Object"
    return TLArg(
        name=name,
        type=typ,
        is_vector=is_vector,
        bare_vector=bare_vector,
        bare_type=bare_type,
        flag_field=flag_field,
        flag_bit=flag_bit,
    )


def parse_line(line: str, is_function: bool, source: str = "") -> TLDef | None:
    """Parse one definition; returns None for lines the codec handles natively."""
    line = _normalise(line)
    m = _LINE_RE.match(line)
    if not m:
        raise SchemaError(f"cannot parse {line!r}")
    name = m.group("name")
    if name in _SKIP_NAMES:
        return None
    generics = set(re.findall(r"\{(\w+):Type\}", m.group("generics")))
    args = [_parse_arg(tok, generics) for tok in m.group("args").split()]
    result = m.group("result").strip()
    cid = int(m.group("id"), 16) if m.group("id") else _tl_crc(line)
    return TLDef(
        name=name,
        id=cid,
        args=args,
        result=result,
        is_function=is_function,
        layer_source=source,
        generic_result=result in generics,
    )


def parse_text(text: str, source: str = "") -> list[TLDef]:
    """Parse a whole schema file (``---types---`` / ``---functions---`` sections)."""
    defs: list[TLDef] = []
    is_function = False
    pending = ""
    for raw in text.splitlines():
        line = raw.split("//", 1)[0].strip()
        if not line:
            continue
        if line == "---functions---":
            is_function = True
            continue
        if line == "---types---":
            is_function = False
            continue
        if line.startswith("---"):
            continue
        pending = f"{pending} {line}" if pending else line
        if not pending.endswith(";"):
            continue  # a definition split over lines
        parsed = parse_line(pending, is_function, source)
        pending = ""
        if parsed is not None:
            defs.append(parsed)
    if pending:
        raise SchemaError(f"unterminated definition {pending!r}")
    return defs


def schema_layer(text: str) -> int | None:
    m = re.search(r"^//\s*layer:\s*(\d+)", text, re.MULTILINE) or re.search(
        r"//\s*LAYER\s+(\d+)", text
    )
    return int(m.group(1)) if m else None


def available_layers() -> list[int]:
    return sorted(int(p.name.split(".")[1]) for p in SCHEMA_DIR.glob("api.*.tl"))


def load_schema(layer: int | None = None) -> tuple[int, list[TLDef]]:
    """The API schema of ``layer`` (default: newest carried) plus the MTProto schema."""
    layer = layer or max(available_layers())
    api_path = SCHEMA_DIR / f"api.{layer}.tl"
    defs = parse_text(api_path.read_text(), source=api_path.name)
    mtproto_path = SCHEMA_DIR / "mtproto.tl"
    defs += parse_text(mtproto_path.read_text(), source=mtproto_path.name)
    return layer, defs
