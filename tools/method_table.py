#!/usr/bin/env python3
"""Write ``docs/methods.md``: every API method of the schema and what the server answers.

The table is derived, never edited by hand: the methods are the generated
function classes (``teamgram.tl.CLASSES``) minus the MTProto service functions
(those of ``schema/mtproto.tl``, answered by the session layer), and each one's
status comes from the routers the server really mounts (``teamgram.server.ROUTERS``)
through the same :class:`~teamgram.bff.rpc.Dispatcher`. Adding a router to
``ROUTERS`` and running this script again is all it takes to update the table.
The output depends only on the code, so it is byte-for-byte reproducible and
``--check`` can guard it in CI.

Usage: python tools/method_table.py [--output docs/methods.md] [--check]
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a plain script from anywhere
    sys.path.insert(0, str(ROOT))

from teamgram.bff.rpc import Dispatcher, Route, Router  # noqa: E402
from teamgram.interface.session import host  # noqa: E402
from teamgram.server import ROUTERS  # noqa: E402
from teamgram.tl import CLASSES, LAYER, TLFunction  # noqa: E402
from teamgram.tl import functions as fn  # noqa: E402
from teamgram.tl.parser import SCHEMA_DIR, parse_text  # noqa: E402

DEFAULT_OUTPUT = ROOT / "docs" / "methods.md"

IMPLEMENTED = "implemented"
EMPTY = "answered empty"
UNSUPPORTED = "unsupported"
STATUS_ORDER = (IMPLEMENTED, EMPTY, UNSUPPORTED)
# Route.status values -> labels of the table.
ROUTE_LABELS = {"implemented": IMPLEMENTED, "empty": EMPTY}

# What the session host answers before routing (teamgram/interface/session/host.py).
NOT_SIGNED_IN = "401 AUTH_KEY_UNREGISTERED"
NOT_SUPPORTED = "400 METHOD_NOT_SUPPORTED"
ANSWERED = "answered"
UNWRAPPED = "unwrapped"


def session_layer_functions() -> frozenset[type[TLFunction]]:
    """Wrappers the session layer unwraps itself: they never reach a router.

    ``invokeWithLayer``/``initConnection``/... are unwrapped by the session host;
    ``invokeAfterMsg(s)`` are ordered by the MTProto session (mtproto/session.py).
    """
    wrappers: tuple[type[TLFunction], ...] = getattr(host, "_WRAPPERS", ())
    return frozenset((*wrappers, fn.InvokeAfterMsg, fn.InvokeAfterMsgs))


def mtproto_function_ids() -> frozenset[int]:
    """Constructor ids of the functions of the MTProto service schema."""
    defs = parse_text((SCHEMA_DIR / "mtproto.tl").read_text(), source="mtproto.tl")
    return frozenset(d.id for d in defs if d.is_function)


def api_functions() -> list[type[TLFunction]]:
    """Every API function of the carried layer, sorted by TL name."""
    service = mtproto_function_ids()
    found = [
        cls
        for cid, cls in CLASSES.items()
        if isinstance(cls, type) and issubclass(cls, TLFunction) and cid not in service
    ]
    return sorted(found, key=lambda c: c.TL_NAME)


@dataclass(frozen=True, slots=True)
class Row:
    name: str
    namespace: str
    status: str
    before_sign_in: str
    after_sign_in: str
    # Callable with a temporary key not yet bound to a permanent one (PFS).
    unbound_temp: bool = False


def namespace_of(tl_name: str) -> str:
    return tl_name.split(".", 1)[0] if "." in tl_name else "(root)"


def classify(
    cls: type[TLFunction], routes: dict[type[TLFunction], Route], wrappers: frozenset[type]
) -> Row:
    """What a client gets for ``cls``, mirroring the session host's checks in order."""
    name = cls.TL_NAME
    ns = namespace_of(name)
    if cls in wrappers:
        return Row(name, ns, IMPLEMENTED, UNWRAPPED, UNWRAPPED, unbound_temp=True)
    route = routes.get(cls)
    if route is None:
        return Row(name, ns, UNSUPPORTED, NOT_SIGNED_IN, NOT_SUPPORTED)
    status = ROUTE_LABELS.get(route.status, route.status)
    before = ANSWERED if route.allow_anonymous else NOT_SIGNED_IN
    return Row(name, ns, status, before, ANSWERED, unbound_temp=route.allow_unbound_temp)


def build_rows(routers: Iterable[Router] = ROUTERS) -> list[Row]:
    """One row per API method, for the server that mounts ``routers``."""
    dispatcher = Dispatcher(*routers)
    wrappers = session_layer_functions()
    return [classify(cls, dispatcher.routes, wrappers) for cls in api_functions()]


def _status_counts(rows: list[Row]) -> Counter[str]:
    return Counter(r.status for r in rows)


def _ordered_statuses(counts: Counter[str]) -> list[str]:
    """The known statuses first (always shown), then any other, alphabetically."""
    extra = sorted(s for s in counts if s not in STATUS_ORDER)
    return [*STATUS_ORDER, *extra]


def _pct(n: int, total: int) -> str:
    return f"{100 * n / total:.1f}%" if total else "0.0%"


def render(rows: list[Row]) -> str:
    total = len(rows)
    counts = _status_counts(rows)
    statuses = _ordered_statuses(counts)
    by_ns: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        by_ns[r.namespace].append(r)
    namespaces = sorted(by_ns, key=lambda n: "" if n == "(root)" else n)

    out: list[str] = [
        "# API methods",
        "",
        "<!-- Generated by tools/method_table.py; do not edit. -->",
        "",
        f"Every API function of layer {LAYER} (MTProto service functions excluded) and "
        "what this server answers.",
        "",
        f"**{total} methods:** "
        + ", ".join(f"{counts[s]} {s} ({_pct(counts[s], total)})" for s in statuses)
        + ".",
        "",
        "- **implemented**: real behaviour.",
        "- **answered empty**: a well-formed empty answer (this server has no such data yet),",
        "  so clients that call it at startup carry on.",
        f"- **unsupported**: `{NOT_SIGNED_IN}` before sign-in, `{NOT_SUPPORTED}` after.",
        f"- Before sign-in, a method that needs a user gets `{NOT_SIGNED_IN}`; "
        "wrappers (`invokeWithLayer`, `initConnection`...) are unwrapped by the session layer.",
        "- With a temporary key not yet bound (PFS), every method gets "
        "`401 AUTH_KEY_PERM_EMPTY` except the wrappers and "
        + ", ".join(f"`{r.name}`" for r in rows if r.unbound_temp and r.before_sign_in != UNWRAPPED)
        + ".",
        "",
        "## Summary by namespace",
        "",
        "| Namespace | Methods | " + " | ".join(s.capitalize() for s in statuses) + " |",
        "| --- | ---: | " + " | ".join("---:" for _ in statuses) + " |",
    ]
    for ns in namespaces:
        c = _status_counts(by_ns[ns])
        cells = " | ".join(str(c[s]) for s in statuses)
        out.append(f"| [{ns}](#{_anchor(ns)}) | {len(by_ns[ns])} | {cells} |")
    out.append(
        f"| **all** | **{total}** | " + " | ".join(f"**{counts[s]}**" for s in statuses) + " |"
    )
    for ns in namespaces:
        out += [
            "",
            f"## {ns}",
            "",
            "| Method | Status | Before sign-in | After sign-in |",
            "| --- | --- | --- | --- |",
        ]
        for r in by_ns[ns]:
            before, after = _cell(r.before_sign_in), _cell(r.after_sign_in)
            out.append(f"| `{r.name}` | {r.status} | {before} | {after} |")
    out.append("")
    return "\n".join(out)


def _cell(answer: str) -> str:
    """Errors in code style, plain words as they are."""
    return answer if answer in (ANSWERED, UNWRAPPED) else f"`{answer}`"


def _anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped."""
    return "".join(ch for ch in heading.lower() if ch.isalnum() or ch in "-_ ").replace(" ", "-")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    ap.add_argument(
        "--check", action="store_true", help="exit 1 if the file is not up to date; write nothing"
    )
    args = ap.parse_args(argv)
    rows = build_rows()
    text = render(rows)
    path: Path = args.output
    if args.check:
        current = path.read_text(encoding="utf-8") if path.exists() else ""
        if current != text:
            print(f"{path} is out of date: run python tools/method_table.py", file=sys.stderr)
            return 1
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8", newline="\n")
    counts = _status_counts(rows)
    summary = ", ".join(f"{counts[s]} {s}" for s in _ordered_statuses(counts))
    print(f"wrote {path}: {sum(counts.values())} methods ({summary})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
