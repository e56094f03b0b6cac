#!/usr/bin/env python3
"""Fetch Telegram's published TL schema from a pinned public registry package.

The schema is protocol data, not client code: we take the `.tl` text files that
the `kurigram` source distribution on PyPI ships, check the archive's SHA-256,
and write them under ``teamgram/tl/schema/`` with a header naming the package,
version, file and layer. Run it again to refresh; then run
``python -m teamgram.tl.generator`` to regenerate the classes.

Usage: python tools/update_schema.py [--version 2.2.26]
"""

from __future__ import annotations

import argparse
import hashlib
import html
import re
import tarfile
import tempfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_DIR = ROOT / "teamgram" / "tl" / "schema"

# Pinned packages: version -> sha256 of the sdist. A new pin is a reviewed change.
KURIGRAM_SDISTS = {
    "2.2.26": "83b64fd7ab37122d920b1e7c0e221b599d7c52dd5d0d24c79956f01273020c49",
}
SOURCE_DIR = "compiler/api/source"

# sys_msgs.tl leaves these MTProto definitions commented out ("Parsed manually")
# because kurigram hand-writes them; they are part of Telegram's published MTProto
# schema and our generator handles them, so they are restored verbatim.
RESTORE_COMMENTED = ("future_salt#", "future_salts#")


def download_sdist(version: str, dest: Path) -> Path:
    """Download the sdist listed by PyPI's simple index and check it against the pin."""
    index_url = "https://pypi.org/simple/kurigram/"
    with urllib.request.urlopen(index_url, timeout=60) as resp:
        page = resp.read().decode()
    filename = f"kurigram-{version}.tar.gz"
    match = re.search(rf'href="([^"#]*/{re.escape(filename)})(?:#[^"]*)?"', page)
    if not match:
        raise SystemExit(f"{filename} not listed at {index_url}")
    archive = dest / filename
    with urllib.request.urlopen(html.unescape(match.group(1)), timeout=120) as resp:
        archive.write_bytes(resp.read())
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    expected = KURIGRAM_SDISTS[version]
    if digest != expected:
        raise SystemExit(f"sha256 mismatch for {archive.name}: {digest} != {expected}")
    return archive


def read_member(tar: tarfile.TarFile, suffix: str) -> str:
    for member in tar.getmembers():
        if member.name.endswith(suffix):
            f = tar.extractfile(member)
            assert f is not None
            return f.read().decode("utf-8")
    raise SystemExit(f"{suffix} not found in the archive")


def header(version: str, member: str, layer: int, note: str = "") -> str:
    lines = [
        f"// source: PyPI kurigram=={version} sdist "
        f"(sha256 {KURIGRAM_SDISTS[version]}), file {member}",
        f"// layer: {layer}",
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", default="2.2.26", choices=sorted(KURIGRAM_SDISTS))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        archive = download_sdist(args.version, Path(tmp))
        with tarfile.open(archive) as tar:
            api = read_member(tar, f"{SOURCE_DIR}/main_api.tl")
            auth_key = read_member(tar, f"{SOURCE_DIR}/auth_key.tl")
            sys_msgs = read_member(tar, f"{SOURCE_DIR}/sys_msgs.tl")

    match = re.search(r"//\s*LAYER\s+(\d+)", api)
    if not match:
        raise SystemExit("no LAYER line in main_api.tl")
    layer = int(match.group(1))

    SCHEMA_DIR.mkdir(parents=True, exist_ok=True)
    api_path = SCHEMA_DIR / f"api.{layer}.tl"
    api_path.write_text(header(args.version, f"{SOURCE_DIR}/main_api.tl", layer) + api)
    mtproto = (
        header(
            args.version,
            f"{SOURCE_DIR}/auth_key.tl + sys_msgs.tl",
            layer,
            "future_salt/future_salts restored from their commented-out lines.",
        )
        + auth_key
        + "\n"
        + restore_commented(sys_msgs)
    )
    (SCHEMA_DIR / "mtproto.tl").write_text(mtproto)
    print(f"wrote {api_path.relative_to(ROOT)} (layer {layer}) and schema/mtproto.tl")


if __name__ == "__main__":
    main()
