"""``teamgramd``: the command line (a stable contract: scripts and checks rely on it).

``teamgramd`` alone is ``teamgramd serve``: the all-in-one server in the foreground
on the embedded default. ``teamgramd keys`` creates the server key if missing and
prints its public key and fingerprint, for patching clients.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

from teamgram.config import ConfigError, ServerConfig, load_config


def _add_serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        action="append",
        type=Path,
        default=[],
        metavar="FILE",
        help="YAML config file (repeatable; later files override earlier ones)",
    )
    p.add_argument("--data-dir", type=Path, help="data directory (default ./data)")
    p.add_argument("--host", help="listen address for every listener (default 0.0.0.0)")
    p.add_argument(
        "--tcp-port",
        type=int,
        action="append",
        metavar="P",
        help="MTProto TCP port (repeatable; default 10443 and 5222)",
    )
    p.add_argument("--ws-port", type=int, metavar="P", help="WebSocket port (default 11443)")
    p.add_argument("--http-port", type=int, metavar="P", help="HTTP port (default 8801)")
    p.add_argument("--public-host", metavar="H", help="address advertised to clients")
    p.add_argument(
        "--dev-login-code",
        metavar="CODE",
        help="make every login code this value (development and tests only)",
    )
    p.add_argument("--log-level", help="DEBUG, INFO, WARNING... (default INFO)")


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    o: dict[str, Any] = {}
    gnetway: dict[str, Any] = {}
    http: dict[str, Any] = {}
    if args.data_dir is not None:
        o["data_dir"] = str(args.data_dir)
    if args.host is not None:
        gnetway["host"] = args.host
        http["host"] = args.host
    if args.tcp_port:
        gnetway["tcp_ports"] = args.tcp_port
    if args.ws_port is not None:
        gnetway["ws_port"] = args.ws_port
    if args.http_port is not None:
        http["port"] = args.http_port
    if args.public_host is not None:
        o["public_host"] = args.public_host
    if args.dev_login_code is not None:
        o["dev_login_code"] = args.dev_login_code
    if args.log_level is not None:
        o["log_level"] = args.log_level
    if gnetway:
        o["gnetway"] = gnetway
    if http:
        o["httpserver"] = http
    return o


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def cmd_serve(cfg: ServerConfig) -> int:
    from teamgram.server import run_forever

    _setup_logging(cfg.log_level)
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        pass
    return asyncio.run(run_forever(cfg))


def cmd_keys(cfg: ServerConfig) -> int:
    from teamgram.mtproto.crypto.rsa import load_or_create_server_key

    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    for name in cfg.rsa_keys:
        key = load_or_create_server_key(cfg.data_dir / name)
        fp = key.fingerprint
        print(key.public_pem().strip())
        print(f"fingerprint: {fp} (hex {fp & 0xFFFFFFFFFFFFFFFF:016x})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="teamgramd", description="teamgram-py: a self-hosted Telegram-compatible server"
    )
    sub = parser.add_subparsers(dest="command")
    _add_serve_args(sub.add_parser("serve", help="run the all-in-one server (default)"))
    keys = sub.add_parser("keys", help="create the server key if missing; print it")
    keys.add_argument("--data-dir", type=Path)
    keys.add_argument("--config", action="append", type=Path, default=[], metavar="FILE")

    argv = sys.argv[1:] if argv is None else argv
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        argv = ["serve", *argv]
    args = parser.parse_args(argv)
    try:
        if args.command == "keys":
            o = {"data_dir": str(args.data_dir)} if args.data_dir else {}
            return cmd_keys(load_config(args.config, overrides=o))
        return cmd_serve(load_config(args.config, overrides=_overrides(args)))
    except ConfigError as exc:
        print(f"teamgramd: configuration error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
