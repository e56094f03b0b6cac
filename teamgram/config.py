"""Server configuration: defaults, YAML files under ``etc/``, ``TEAMGRAM_*`` overrides.

Precedence (lowest to highest): dataclass defaults, the YAML file(s), environment
variables, command-line flags. Every leaf is reachable from the environment as
``TEAMGRAM_<SECTION>_<KEY>`` (top-level keys as ``TEAMGRAM_<KEY>``), e.g.
``TEAMGRAM_DATA_DIR=/srv/tg`` or ``TEAMGRAM_GNETWAY_TCP_PORTS=10443,5222``.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass
class GnetwayConfig:
    """Client-facing MTProto listeners (TCP and WebSocket)."""

    host: str = "0.0.0.0"
    tcp_ports: list[int] = field(default_factory=lambda: [10443, 5222])
    ws_port: int = 11443
    ws_path: str = "/apiws"
    max_packet: int = 4 * 1024 * 1024
    # Packets per second one connection may send before it gets -429 and is closed.
    flood_packets_per_second: int = 10000
    # Concurrent connections from one address before new ones are refused with -429.
    max_connections_per_ip: int = 1000


@dataclass
class HttpServerConfig:
    """HTTP transport (``POST /api``) and, later, the Bot API."""

    host: str = "0.0.0.0"
    port: int = 8801


@dataclass
class SessionConfig:
    """MTProto session layer."""

    # Unacknowledged server messages are kept this long for a reconnecting client.
    resend_window_seconds: int = 600
    max_pending_per_session: int = 4096
    salt_lifetime_seconds: int = 3600
    # msg_id must be within this many seconds of the server's clock.
    msg_id_past_seconds: int = 300
    msg_id_future_seconds: int = 30
    # Answers larger than this are sent gzip_packed.
    gzip_threshold: int = 1024


@dataclass
class DatabaseConfig:
    """Business data. Empty url: SQLite in the data directory."""

    url: str = ""


@dataclass
class AuthConfig:
    """Signing in: login codes, their delivery, and the limits on guessing them."""

    # Digits in a login code.
    code_length: int = 5
    # A device signed in for less than this may not sign others out
    # (FRESH_RESET_AUTHORISATION_FORBIDDEN, as on Telegram); 0: no such rule.
    fresh_reset_seconds: int = 86400
    # A code (and a verified code awaiting auth.signUp) is valid this long.
    code_ttl_seconds: int = 300
    # Telegram's test numbers 99966XYYYY always take the code XXXXX (shared test
    # accounts: anyone may sign in to them). Turn off on a public server.
    test_phone_numbers: bool = True
    # sentCode.timeout: auth.resendCode earlier than this gets FLOOD_WAIT.
    resend_timeout_seconds: int = 60
    # Wrong codes for one phone (or wrong 2FA passwords for one account) within
    # failure_window_seconds before every attempt gets FLOOD_WAIT for
    # failure_flood_wait_seconds.
    max_code_attempts: int = 5
    max_password_attempts: int = 5
    failure_window_seconds: int = 3600
    failure_flood_wait_seconds: int = 3600
    # auth.sendCode/resendCode per phone, and per client address, within
    # send_window_seconds; past that: FLOOD_WAIT until the window ends.
    # (Clients behind one proxy or NAT share an address: raise the latter.)
    send_code_per_phone: int = 10
    send_code_per_ip: int = 100
    send_window_seconds: int = 3600
    # QR login: how long an exported login token may be accepted.
    login_token_ttl_seconds: int = 30
    # account.getAccountTTL for accounts that never set one.
    account_ttl_days: int = 365
    # Code delivery besides the server log (INFO): a shell command run with
    # TEAMGRAM_LOGIN_PHONE and TEAMGRAM_LOGIN_CODE in its environment, and/or a URL
    # that gets a JSON POST {"phone": ..., "code": ...}. Both run in the
    # background; failures are logged and never delay the client's answer.
    code_command: str = ""
    code_webhook: str = ""
    code_delivery_timeout_seconds: int = 10


@dataclass
class MessagesConfig:
    """Messaging limits (Telegram's for a regular account where it has one)."""

    # Longest message text (help.getConfig's message_length_max).
    message_length_max: int = 4096
    # Sends one account may make per second on average, and in a burst, before
    # FLOOD_WAIT_X (sendMessage, forwardMessages: each message counts).
    send_per_second: float = 30.0
    send_burst: int = 300
    # Updates in one updates.getDifference answer before it becomes a slice.
    difference_limit: int = 100
    # Updates are kept this many days for devices that were away; a device away
    # longer gets differenceTooLong and reloads its dialogs (0: keep forever).
    update_log_days: int = 30


@dataclass
class FilesConfig:
    """Uploads, downloads and where files are kept (the dfs and media services)."""

    # "local": a directory; "s3": any S3-compatible store (MinIO, SeaweedFS, AWS S3).
    storage: str = "local"
    # local: where objects live; empty: <data_dir>/files.
    local_dir: str = ""
    # s3: endpoint URL (e.g. http://127.0.0.1:8333), region and credentials.
    s3_endpoint: str = ""
    s3_region: str = "us-east-1"
    s3_access_key: str = ""
    s3_secret_key: str = ""
    # s3: bucket names are <prefix><name> for documents, photos, videos, encryptedfiles.
    s3_bucket_prefix: str = ""
    # Where uploaded parts wait until the file is used; empty: <data_dir>/uploads.
    upload_dir: str = ""
    # Parts of an upload nobody used are deleted after this long.
    upload_ttl_seconds: int = 86400
    # A file_reference handed to a client works this long (then FILE_REFERENCE_EXPIRED).
    file_reference_ttl_seconds: int = 3600
    # Largest file, in bytes (Telegram's 2 GB: 4000 parts of 512 KB).
    max_file_size: int = 2097152000


@dataclass
class ClusterConfig:
    """Split mode (#9): this process's part of a cluster. Empty ``services``: the
    embedded default, every service in this one process on its own engines."""

    # Which services this process runs (``teamgramd run gnetway,session,bff``).
    services: list[str] = field(default_factory=list)
    # Unique per process; empty: <hostname>-<pid>.
    instance_id: str = ""
    # gRPC listener for the calls other processes make to this one.
    rpc_host: str = "127.0.0.1"
    rpc_port: int = 0
    # Address other processes use to reach the gRPC listener; empty: rpc_host:port.
    rpc_advertise: str = ""
    # Names this cluster's keys in the shared engines (Redis keys, JetStream
    # streams, etcd prefix), so several clusters can share them.
    namespace: str = "teamgram"
    # Cache, session routes, cache invalidation (Redis).
    redis_url: str = ""
    # Event pipeline (NATS JetStream); empty: updates go straight to the sessions.
    nats_url: str = ""
    # Discovery: etcd endpoints (host:port); empty: static (``static_instances``).
    etcd_endpoints: list[str] = field(default_factory=list)
    # Static discovery: "<host:port>" of every session process's rpc listener (its
    # instance id in the session routes, too).
    static_sessions: list[str] = field(default_factory=list)
    # Seconds an instance outlives its last keep-alive (etcd lease).
    etcd_ttl: int = 5
    # How updates reach other processes' sessions: "pipeline" (JetStream, then
    # the sync process) or "direct" (gRPC from the writing process).
    delivery: str = "pipeline"

    @property
    def enabled(self) -> bool:
        return bool(self.services)


@dataclass
class ServerConfig:
    data_dir: Path = Path("./data")
    dc_id: int = 2
    # Address advertised to clients in help.getConfig; default: the listen host,
    # or 127.0.0.1 when listening on every interface.
    public_host: str = ""
    # RSA key files (PEM, private) inside the data directory; the first signs
    # new handshakes' answers, all are accepted (key rotation).
    rsa_keys: list[str] = field(default_factory=lambda: ["server_key.pem"])
    dev_login_code: str = ""
    log_level: str = "INFO"
    gnetway: GnetwayConfig = field(default_factory=GnetwayConfig)
    httpserver: HttpServerConfig = field(default_factory=HttpServerConfig)
    session: SessionConfig = field(default_factory=SessionConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    messages: MessagesConfig = field(default_factory=MessagesConfig)
    files: FilesConfig = field(default_factory=FilesConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)

    @property
    def advertised_host(self) -> str:
        if self.public_host:
            return self.public_host
        host = self.gnetway.host
        return "127.0.0.1" if host in ("", "0.0.0.0", "::") else host

    @property
    def database_url(self) -> str:
        return self.database.url or f"sqlite+aiosqlite:///{self.data_dir / 'teamgram.db'}"


class ConfigError(ValueError):
    """A configuration value has the wrong shape."""


def _convert(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return None if value is None else _convert(value, args[0], where)
    if origin is list:
        (elem,) = typing.get_args(tp)
        if isinstance(value, str):
            value = [v for v in (p.strip() for p in value.split(",")) if v]
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list")
        return [_convert(v, elem, where) for v in value]
    if tp is bool:
        if isinstance(value, str):
            return value.strip().lower() in ("1", "true", "yes", "on")
        return bool(value)
    if tp in (int, str, float):
        try:
            return tp(value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: {exc}") from exc
    if tp is Path:
        return Path(value)
    return value


def _apply(obj: Any, data: Mapping[str, Any], where: str) -> None:
    hints = typing.get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    for key, value in data.items():
        if key not in names:
            raise ConfigError(f"unknown setting {where}{key}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{where}{key}: expected a mapping")
            _apply(current, value, f"{where}{key}.")
        else:
            setattr(obj, key, _convert(value, hints[key], f"{where}{key}"))


def _apply_env(obj: Any, env: Mapping[str, str], prefix: str) -> None:
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        name = f"{prefix}_{f.name.upper()}"
        current = getattr(obj, f.name)
        if dataclasses.is_dataclass(current):
            _apply_env(current, env, name)
        elif name in env:
            setattr(obj, f.name, _convert(env[name], hints[f.name], name))


def load_config(
    paths: list[Path] | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> ServerConfig:
    """Build the configuration from defaults, YAML files, environment and overrides.

    A YAML file may hold the whole tree (``etc/teamgramd.yaml``) or one service's
    section at top level under its own name (``etc/gnetway.yaml``: ``gnetway: ...``).
    """
    cfg = ServerConfig()
    for path in paths or []:
        data = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(data, Mapping):
            raise ConfigError(f"{path}: expected a mapping at top level")
        _apply(cfg, data, "")
    _apply_env(cfg, os.environ if env is None else env, "TEAMGRAM")
    if overrides:
        _apply(cfg, overrides, "")
    return cfg
