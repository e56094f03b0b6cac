"""``teamgramd``: the command line (a stable contract: scripts and checks rely on it).

``teamgramd`` alone is ``teamgramd serve``: the all-in-one server in the foreground
on the embedded default. ``teamgramd keys`` creates the server key if missing and
prints its public key and fingerprint, for patching clients.

Split mode (#9): ``teamgramd run SERVICES`` runs some services in one process
(``serve``'s flags, plus ``--instance-id``, ``--rpc-host``, ``--rpc-port``); without
``--config`` it reads ``etc/<service>.yaml`` (relative to the working directory) for
each named service that has one. ``teamgramd cluster FILE`` runs a topology of such
processes and supervises them (``teamgram/supervisor.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

from teamgram.config import ConfigError, ServerConfig, load_config
from teamgram.supervisor import (
    SERVICES,
    Supervisor,
    TopologyError,
    load_topology,
    parse_services,
)


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


def _services_arg(value: str) -> tuple[str, ...]:
    try:
        return parse_services(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "services",
        type=_services_arg,
        metavar="SERVICES",
        help=f"comma list of services to run in this process, among: {', '.join(SERVICES)}",
    )
    _add_serve_args(p)
    p.add_argument(
        "--instance-id",
        metavar="ID",
        help="this process's unique name in the cluster (default <hostname>-<pid>)",
    )
    p.add_argument(
        "--rpc-host", metavar="ADDR", help="listen address for calls from other processes"
    )
    p.add_argument("--rpc-port", type=int, metavar="P", help="port for calls from other processes")


def service_config_files(services: tuple[str, ...], etc: Path = Path("etc")) -> list[Path]:
    """``etc/<service>.yaml`` of each service that has one, in the order named."""
    return [etc / f"{name}.yaml" for name in services if (etc / f"{name}.yaml").is_file()]


def _run_overrides(args: argparse.Namespace) -> dict[str, Any]:
    o = _overrides(args)
    cluster: dict[str, Any] = {"services": list(args.services)}
    if args.instance_id is not None:
        cluster["instance_id"] = args.instance_id
    if args.rpc_host is not None:
        cluster["rpc_host"] = args.rpc_host
    if args.rpc_port is not None:
        cluster["rpc_port"] = args.rpc_port
    o["cluster"] = cluster
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


def cmd_cluster(path: Path, grace: float | None) -> int:
    if grace is not None and not grace >= 0:
        raise ConfigError(f"--grace: expected seconds >= 0, got {grace}")
    topology = load_topology(path)
    missing = topology.missing_files()
    if missing:
        raise ConfigError(f"{path}: config file(s) not found: {', '.join(missing)}")
    _setup_logging("INFO")
    return asyncio.run(Supervisor(topology, grace=grace).run())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="teamgramd", description="teamgram-py: a self-hosted Telegram-compatible server"
    )
    sub = parser.add_subparsers(dest="command")
    _add_serve_args(sub.add_parser("serve", help="run the all-in-one server (default)"))
    keys = sub.add_parser("keys", help="create the server key if missing; print it")
    keys.add_argument("--data-dir", type=Path)
    keys.add_argument("--config", action="append", type=Path, default=[], metavar="FILE")
    _add_run_args(
        sub.add_parser(
            "run",
            help="run some services in this process (split mode)",
            description="Run the named services in this process. Without --config, "
            "etc/<service>.yaml (relative to the working directory) is read for each "
            "named service that has one; with --config, only the files given are read.",
        )
    )
    cluster = sub.add_parser(
        "cluster",
        help="run and supervise a topology of processes (split mode)",
        description="Start the processes a topology file lists, restart those that "
        "exit, stop them all on SIGINT/SIGTERM (see etc/cluster.example.yaml).",
    )
    cluster.add_argument("file", type=Path, metavar="FILE", help="topology file (YAML)")
    cluster.add_argument(
        "--grace",
        type=float,
        metavar="S",
        help="seconds between SIGTERM and SIGKILL at stop (default: the file's grace, or 10)",
    )

    argv = sys.argv[1:] if argv is None else argv
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        argv = ["serve", *argv]
    args = parser.parse_args(argv)
    try:
        if args.command == "keys":
            o = {"data_dir": str(args.data_dir)} if args.data_dir else {}
            return cmd_keys(load_config(args.config, overrides=o))
        if args.command == "cluster":
            return cmd_cluster(args.file, args.grace)
        if args.command == "run":
            paths = args.config or service_config_files(args.services)
            return cmd_serve(load_config(paths, overrides=_run_overrides(args)))
        return cmd_serve(load_config(args.config, overrides=_overrides(args)))
    except ConfigError as exc:
        print(f"teamgramd: configuration error: {exc}", file=sys.stderr)
        return 2
    except TopologyError as exc:
        print(f"teamgramd: topology error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
