"""Configuration: defaults, YAML files, TEAMGRAM_* environment, CLI flags, etc/ files."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml

from teamgram import cli
from teamgram.config import ConfigError, ServerConfig, load_config

ROOT = Path(__file__).resolve().parents[2]
ETC = ROOT / "etc"
SERVICES = (
    "gnetway",
    "session",
    "httpserver",
    "bff",
    "authsession",
    "biz",
    "msg",
    "sync",
    "dfs",
    "media",
    "idgen",
    "status",
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests that read os.environ must not see the caller's TEAMGRAM_* settings."""
    import os

    for name in list(os.environ):
        if name.startswith("TEAMGRAM_"):
            monkeypatch.delenv(name)


def _write(path: Path, data: Any) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


# --- defaults and files -------------------------------------------------------------


def test_defaults_without_files() -> None:
    cfg = load_config(env={})
    assert cfg == ServerConfig()
    assert cfg.data_dir == Path("data")
    assert cfg.dc_id == 2
    assert cfg.gnetway.tcp_ports == [10443, 5222]
    assert cfg.gnetway.ws_port == 11443
    assert cfg.gnetway.ws_path == "/apiws"
    assert cfg.httpserver.port == 8801
    assert cfg.session.gzip_threshold == 1024
    assert cfg.database.url == ""
    assert cfg.database_url == f"sqlite+aiosqlite:///{Path('data') / 'teamgram.db'}"
    assert cfg.advertised_host == "127.0.0.1"


def test_defaults_are_fresh_objects() -> None:
    a, b = load_config(env={}), load_config(env={})
    a.gnetway.tcp_ports.append(1)
    assert b.gnetway.tcp_ports == [10443, 5222]


def test_yaml_overrides_nested_values(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "x.yaml",
        {
            "data_dir": "/srv/tg",
            "public_host": "tg.example.org",
            "gnetway": {"tcp_ports": [443], "ws_path": "/ws"},
            "session": {"gzip_threshold": 10},
            "database": {"url": "sqlite+aiosqlite:///:memory:"},
        },
    )
    cfg = load_config([path], env={})
    assert cfg.data_dir == Path("/srv/tg")
    assert cfg.advertised_host == "tg.example.org"
    assert cfg.gnetway.tcp_ports == [443]
    assert cfg.gnetway.ws_path == "/ws"
    # Keys the file does not name keep their defaults.
    assert cfg.gnetway.ws_port == 11443
    assert cfg.gnetway.host == "0.0.0.0"
    assert cfg.session.gzip_threshold == 10
    assert cfg.session.resend_window_seconds == 600
    assert cfg.database_url == "sqlite+aiosqlite:///:memory:"


def test_later_files_win(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.yaml", {"gnetway": {"ws_port": 1, "host": "10.0.0.1"}})
    b = _write(tmp_path / "b.yaml", {"gnetway": {"ws_port": 2}})
    cfg = load_config([a, b], env={})
    assert cfg.gnetway.ws_port == 2
    assert cfg.gnetway.host == "10.0.0.1"


def test_empty_file_is_defaults(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing\n")
    assert load_config([path], env={}) == ServerConfig()


# --- environment and overrides ---------------------------------------------------------


def test_env_overrides() -> None:
    env = {
        "TEAMGRAM_DATA_DIR": "/tmp/tg-data",
        "TEAMGRAM_GNETWAY_TCP_PORTS": "1,2",
        "TEAMGRAM_SESSION_GZIP_THRESHOLD": "5",
        "TEAMGRAM_HTTPSERVER_PORT": "8080",
        "UNRELATED": "x",
    }
    cfg = load_config(env=env)
    assert cfg.data_dir == Path("/tmp/tg-data")
    assert cfg.gnetway.tcp_ports == [1, 2]
    assert cfg.session.gzip_threshold == 5
    assert cfg.httpserver.port == 8080


def test_env_read_from_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEAMGRAM_GNETWAY_WS_PORT", "12000")
    assert load_config().gnetway.ws_port == 12000


def test_env_beats_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "x.yaml", {"gnetway": {"tcp_ports": [443]}})
    cfg = load_config([path], env={"TEAMGRAM_GNETWAY_TCP_PORTS": "1,2"})
    assert cfg.gnetway.tcp_ports == [1, 2]


def test_overrides_beat_env() -> None:
    env = {"TEAMGRAM_DATA_DIR": "/from/env", "TEAMGRAM_GNETWAY_TCP_PORTS": "1,2"}
    cfg = load_config(env=env, overrides={"data_dir": "/from/flag", "gnetway": {"tcp_ports": [3]}})
    assert cfg.data_dir == Path("/from/flag")
    assert cfg.gnetway.tcp_ports == [3]


def test_bad_env_value_is_config_error() -> None:
    with pytest.raises(ConfigError, match="TEAMGRAM_SESSION_GZIP_THRESHOLD"):
        load_config(env={"TEAMGRAM_SESSION_GZIP_THRESHOLD": "lots"})


# --- errors ---------------------------------------------------------------------------


def test_unknown_top_level_key(tmp_path: Path) -> None:
    path = _write(tmp_path / "x.yaml", {"no_such_key": 1})
    with pytest.raises(ConfigError, match="no_such_key"):
        load_config([path], env={})


def test_unknown_nested_key(tmp_path: Path) -> None:
    path = _write(tmp_path / "x.yaml", {"gnetway": {"tcp_port": 1}})
    with pytest.raises(ConfigError, match=r"gnetway\.tcp_port"):
        load_config([path], env={})


def test_unknown_override_key() -> None:
    with pytest.raises(ConfigError):
        load_config(env={}, overrides={"session": {"nope": 1}})


def test_section_must_be_mapping(tmp_path: Path) -> None:
    path = _write(tmp_path / "x.yaml", {"gnetway": 5})
    with pytest.raises(ConfigError):
        load_config([path], env={})


def test_top_level_must_be_mapping(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError):
        load_config([path], env={})


# --- the shipped files in etc/ ---------------------------------------------------------


def test_etc_has_all_in_one_and_every_service() -> None:
    names = {p.stem for p in ETC.glob("*.yaml")}
    assert {"teamgramd", *SERVICES} <= names


@pytest.mark.parametrize(
    "path",
    sorted(p for p in ETC.glob("*.yaml") if not p.name.startswith("cluster")),
    ids=lambda p: p.name,
)
def test_etc_file_loads_with_default_values(path: Path) -> None:
    # The shipped files document the defaults; they must not change them.
    assert load_config([path], env={}) == ServerConfig()


def _leaves(obj: Any, prefix: str = "") -> set[str]:
    out: set[str] = set()
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            out |= _leaves(value, f"{prefix}{f.name}.")
        else:
            out.add(f"{prefix}{f.name}")
    return out


def _yaml_leaves(data: Any, prefix: str = "") -> set[str]:
    out: set[str] = set()
    for key, value in data.items():
        if isinstance(value, dict):
            out |= _yaml_leaves(value, f"{prefix}{key}.")
        else:
            out.add(f"{prefix}{key}")
    return out


def test_all_in_one_file_names_every_setting() -> None:
    data = yaml.safe_load((ETC / "teamgramd.yaml").read_text())
    missing = _leaves(ServerConfig()) - _yaml_leaves(data)
    assert not missing, f"add these settings (with defaults) to etc/teamgramd.yaml: {missing}"


# --- the command line ------------------------------------------------------------------


def _serve_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli._add_serve_args(parser)
    return parser.parse_args(argv)


def test_cli_no_flags_no_overrides() -> None:
    assert cli._overrides(_serve_args([])) == {}


def test_cli_flags_map_to_settings(tmp_path: Path) -> None:
    args = _serve_args(
        [
            "--data-dir",
            str(tmp_path),
            "--host",
            "127.0.0.2",
            "--tcp-port",
            "1000",
            "--tcp-port",
            "1001",
            "--ws-port",
            "1002",
            "--http-port",
            "1003",
            "--public-host",
            "tg.example.org",
            "--dev-login-code",
            "12345",
            "--log-level",
            "DEBUG",
        ]
    )
    cfg = load_config(env={}, overrides=cli._overrides(args))
    assert cfg.data_dir == tmp_path
    assert cfg.gnetway.host == "127.0.0.2"
    assert cfg.httpserver.host == "127.0.0.2"
    assert cfg.gnetway.tcp_ports == [1000, 1001]
    assert cfg.gnetway.ws_port == 1002
    assert cfg.httpserver.port == 1003
    assert cfg.public_host == "tg.example.org"
    assert cfg.dev_login_code == "12345"
    assert cfg.log_level == "DEBUG"


def test_cli_flags_beat_env_and_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "x.yaml", {"gnetway": {"ws_port": 1}})
    args = _serve_args(["--config", str(path), "--ws-port", "3"])
    assert args.config == [path]
    cfg = load_config(
        args.config, env={"TEAMGRAM_GNETWAY_WS_PORT": "2"}, overrides=cli._overrides(args)
    )
    assert cfg.gnetway.ws_port == 3


def test_cli_without_command_is_serve(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen: list[ServerConfig] = []

    def fake_serve(cfg: ServerConfig) -> int:
        seen.append(cfg)
        return 0

    monkeypatch.setattr(cli, "cmd_serve", fake_serve)
    path = _write(tmp_path / "x.yaml", {"session": {"gzip_threshold": 7}})
    assert cli.main(["--config", str(path), "--tcp-port", "4000"]) == 0
    assert cli.main(["serve", "--http-port", "4001"]) == 0
    assert cli.main([]) == 0
    assert seen[0].gnetway.tcp_ports == [4000]
    assert seen[0].session.gzip_threshold == 7
    assert seen[1].httpserver.port == 4001
    assert seen[2] == ServerConfig()


def test_cli_config_error_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "cmd_serve", lambda cfg: 0)
    path = _write(tmp_path / "x.yaml", {"bogus": 1})
    assert cli.main(["--config", str(path)]) == 2
    assert "bogus" in capsys.readouterr().err


def test_cli_keys_prints_stable_public_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "data"
    assert cli.main(["keys", "--data-dir", str(data_dir)]) == 0
    first = capsys.readouterr().out
    assert first.startswith("-----BEGIN RSA PUBLIC KEY-----\n")
    assert "-----END RSA PUBLIC KEY-----\n" in first
    assert any(line.startswith("fingerprint: ") for line in first.splitlines())
    assert (data_dir / "server_key.pem").is_file()

    assert cli.main(["keys", "--data-dir", str(data_dir)]) == 0
    assert capsys.readouterr().out == first
