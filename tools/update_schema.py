#!/usr/bin/env python3
"""Fetch Telegram's published TL schemas from pinned public registry packages.

The schema is protocol data, not client code. Each layer the server speaks comes
from one pinned package whose archive's SHA-256 is checked before anything is read:

- the canonical layer (229) and the MTProto schema: the `.tl` files of the
  ``kurigram`` source distribution on PyPI (``compiler/api/source/``);
- layer 227: an earlier ``kurigram`` sdist, whose ``main_api.tl`` is that layer;
- layer 198: the npm package ``telegram`` (GramJS), which ships the raw schema as
  a JavaScript template string in ``tl/apiTl.js``.

Each file is written under ``teamgram/tl/schema/`` as ``api.<layer>.tl`` with a
header naming the package, version, archive digest, file and layer. Run it again
to refresh; then run ``python -m teamgram.tl.generator`` to regenerate the
canonical classes and the layer codecs' tables (``gen/layer<N>.py``), and
``python -m teamgram.tl.adapt`` to refresh the adapter table of docs/layers.md.

Usage: python tools/update_schema.py [--only 229 --only 198 ...]
"""

from __future__ import annotations

import argparse
import hashlib
import html
import io
import re
import tarfile
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_DIR = ROOT / "teamgram" / "tl" / "schema"

SOURCE_DIR = "compiler/api/source"


@dataclass(frozen=True)
class Pin:
    """One pinned registry package and the layer its schema must declare."""

    registry: str  # "pypi" or "npm"
    package: str
    version: str
    sha256: str  # of the downloaded archive
    layer: int
    canonical: bool = False  # also writes schema/mtproto.tl

    @property
    def label(self) -> str:
        if self.registry == "pypi":
            return f"PyPI {self.package}=={self.version} sdist"
        return f"npm {self.package}@{self.version} tarball"


# Pinned packages, by layer. A new pin (or a changed digest) is a reviewed change.
PINS: dict[int, Pin] = {
    229: Pin(
        "pypi",
        "kurigram",
        "2.2.26",
        "83b64fd7ab37122d920b1e7c0e221b599d7c52dd5d0d24c79956f01273020c49",
        229,
        canonical=True,
    ),
    227: Pin(
        "pypi",
        "kurigram",
        "2.2.24",
        "535644dcb23696ae7d838a2f8c14675a5b3fa50906d51dc1434a29620d62813b",
        227,
    ),
    198: Pin(
        "npm",
        "telegram",
        "2.26.22",
        "a17acb4933510998bcd0ef00ef41f579d90e7aa194492224217932d4705f74be",
        198,
    ),
}
# The GramJS file holding the raw API schema, and the one declaring its layer.
GRAMJS_SCHEMA = "package/tl/apiTl.js"
GRAMJS_LAYER = "package/tl/AllTLObjects.js"

# sys_msgs.tl leaves these MTProto definitions commented out ("Parsed manually")
# because kurigram hand-writes them; they are part of Telegram's published MTProto
# schema and our generator handles them, so they are restored verbatim.
RESTORE_COMMENTED = ("future_salt#", "future_salts#")


def _get(url: str, timeout: float = 120) -> bytes:
    req = urllib.request.Request(url, headers={"User-Agent": "teamgram-py update_schema"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        data: bytes = resp.read()
        return data


def archive_url(pin: Pin) -> str:
    if pin.registry == "npm":
        name = pin.package.rsplit("/", 1)[-1]
        return f"https://registry.npmjs.org/{pin.package}/-/{name}-{pin.version}.tgz"
    # PyPI: the sdist as listed by the simple index.
    index_url = f"https://pypi.org/simple/{pin.package}/"
    page = _get(index_url, timeout=60).decode()
    filename = f"{pin.package}-{pin.version}.tar.gz"
    match = re.search(rf'href="([^"#]*/{re.escape(filename)})(?:#[^"]*)?"', page)
    if not match:
        raise SystemExit(f"{filename} not listed at {index_url}")
    return urllib.parse.urljoin(index_url, html.unescape(match.group(1)))


def download(pin: Pin) -> tarfile.TarFile:
    """The pinned archive, checked against its digest before it is opened."""
    data = _get(archive_url(pin))
    digest = hashlib.sha256(data).hexdigest()
    if digest != pin.sha256:
        raise SystemExit(f"sha256 mismatch for {pin.label}: {digest} != {pin.sha256}")
    return tarfile.open(fileobj=io.BytesIO(data), mode="r:gz")


def read_member(tar: tarfile.TarFile, suffix: str) -> str:
    for member in tar.getmembers():
        if member.name.endswith(suffix):
            f = tar.extractfile(member)
            assert f is not None
            return f.read().decode("utf-8")
    raise SystemExit(f"{suffix} not found in the archive")


def js_template_string(source: str) -> str:
    """The text of ``module.exports = `...`;`` (a JS template literal, no substitutions)."""
    match = re.search(r"module\.exports\s*=\s*`((?:[^`\\]|\\.)*)`", source, re.DOTALL)
    if not match:
        raise SystemExit("no module.exports template string in apiTl.js")
    body = match.group(1)
    if "${" in body.replace("\\${", ""):
        raise SystemExit("apiTl.js: template substitutions are not expected in a schema")
    # The only escapes a template literal of plain text can hold.
    return re.sub(r"\\([`\\$])", r"\1", body)


def header(pin: Pin, member: str, note: str = "") -> str:
    lines = [
        f"// source: {pin.label} (sha256 {pin.sha256}), file {member}",
        f"// layer: {pin.layer}",
        "// Telegram's published TL schema (protocol data), fetched by tools/update_schema.py.",
    ]
    if note:
        lines.append(f"// {note}")
    return "\n".join(lines) + "\n\n"


def restore_commented(text: str) -> str:
    out = []
    for line in text.splitlines():
        stripped = line.lstrip("/ ").strip()
        if line.startswith("//") and stripped.startswith(RESTORE_COMMENTED):
            line = stripped.split("//")[0].strip()
        out.append(line)
    return "\n".join(out) + "\n"


def check_layer(pin: Pin, found: int | None, where: str) -> None:
    if found != pin.layer:
        raise SystemExit(f"{pin.label}: {where} declares layer {found}, expected {pin.layer}")


def fetch_kurigram(pin: Pin) -> list[Path]:
    with download(pin) as tar:
        api = read_member(tar, f"{SOURCE_DIR}/main_api.tl")
        if pin.canonical:
            auth_key = read_member(tar, f"{SOURCE_DIR}/auth_key.tl")
            sys_msgs = read_member(tar, f"{SOURCE_DIR}/sys_msgs.tl")
    match = re.search(r"//\s*LAYER\s+(\d+)", api)
    check_layer(pin, int(match.group(1)) if match else None, "main_api.tl")
    api_path = SCHEMA_DIR / f"api.{pin.layer}.tl"
    api_path.write_text(header(pin, f"{SOURCE_DIR}/main_api.tl") + api)
    written = [api_path]
    if pin.canonical:
        mtproto = (
            header(
                pin,
                f"{SOURCE_DIR}/auth_key.tl + sys_msgs.tl",
                "future_salt/future_salts restored from their commented-out lines.",
            )
            + auth_key
            + "\n"
            + restore_commented(sys_msgs)
        )
        mtproto_path = SCHEMA_DIR / "mtproto.tl"
        mtproto_path.write_text(mtproto)
        written.append(mtproto_path)
    return written


def fetch_gramjs(pin: Pin) -> list[Path]:
    with download(pin) as tar:
        api_js = read_member(tar, GRAMJS_SCHEMA)
        layer_js = read_member(tar, GRAMJS_LAYER)
    match = re.search(r"exports\.LAYER\s*=\s*(\d+)", layer_js)
    check_layer(pin, int(match.group(1)) if match else None, GRAMJS_LAYER)
    api = js_template_string(api_js)
    if "---functions---" not in api:
        raise SystemExit(f"{GRAMJS_SCHEMA}: no ---functions--- section")
    api_path = SCHEMA_DIR / f"api.{pin.layer}.tl"
    note = "The schema text of GramJS's module.exports template string; LAYER from "
    note += GRAMJS_LAYER.removeprefix("package/") + "."
    api_path.write_text(header(pin, GRAMJS_SCHEMA.removeprefix("package/"), note) + api)
    return [api_path]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only",
        type=int,
        action="append",
        choices=sorted(PINS),
        help="fetch only this layer (repeatable; default: every pinned layer)",
    )
    args = parser.parse_args()
    SCHEMA_DIR.mkdir(parents=True, exist_ok=True)
    for layer in sorted(args.only or PINS, reverse=True):
        pin = PINS[layer]
        paths = fetch_kurigram(pin) if pin.registry == "pypi" else fetch_gramjs(pin)
        names = ", ".join(str(p.relative_to(ROOT)) for p in paths)
        print(f"layer {layer}: {pin.label} -> {names}")


if __name__ == "__main__":
    main()
