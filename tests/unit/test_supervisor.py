"""``teamgramd cluster`` topologies and ``teamgramd run`` arguments, without processes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from teamgram import cli
from teamgram.config import ServerConfig
from teamgram.supervisor import (
    SERVICES,
    Topology,
    TopologyError,
    expand,
    load_topology,
    parse_services,
    parse_topology,
)

# -- templates -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "index", "expected"),
    [
        ("plain", 3, "plain"),
        ("{i}", 0, "0"),
        ("{i}", 7, "7"),
        ("{10443+i}", 0, "10443"),
        ("{10443+i}", 2, "10445"),
        ("{ 20120 + i }", 1, "20121"),
        ("edge-{i}-{100+i}", 1, "edge-1-101"),
        ("{{i}}", 5, "{i}"),
        ("a{{b}}c", 0, "a{b}c"),
        ("{{{i}}}", 4, "{4}"),
        ("", 1, ""),
    ],
)
def test_expand(template: str, index: int, expected: str) -> None:
    assert expand(template, index) == expected


@pytest.mark.parametrize(
    "template",
    ["{j}", "{i+1}", "{1-i}", "{-1+i}", "{2*i}", "{}", "{name}", "{i", "i}", "{1+i}}", "{1.5+i}"],
)
def test_expand_rejects_anything_else(template: str) -> None:
    with pytest.raises(TopologyError):
        expand(template, 0)


# -- service lists -----------------------------------------------------------------------


def test_parse_services() -> None:
    assert parse_services("gnetway,session,bff") == ("gnetway", "session", "bff")
    assert parse_services(" sync , msg,sync") == ("sync", "msg")
    assert parse_services(["dfs", "media"]) == ("dfs", "media")
    assert parse_services(",".join(SERVICES)) == SERVICES
    assert len(SERVICES) == 12
    for bad in ("nosuch", "gnetway,,bff", "", "gnetway,Session"):
        with pytest.raises(ValueError):
            parse_services(bad)


# -- topology files --------------------------------------------------------------------


def _topology(text: str) -> Topology:
    return parse_topology(yaml.safe_load(text), "t.yaml")


EXAMPLE = """
config: [etc/common.yaml]
env: {A: "1", SHARED: top, GONE: null}
processes:
  - name: edge
    run: gnetway,session,bff
    count: 2
    args: ["--tcp-port", "{10443+i}", "--rpc-port", "{20120+i}", "--instance-id", "edge-{i}"]
    config: ["etc/edge-{i}.yaml"]
    env: {SHARED: "edge-{i}", N: 5}
  - name: sync
    run: [sync]
"""


def test_arg_building() -> None:
    t = _topology(EXAMPLE)
    edge, sync = t.processes
    assert (edge.name, edge.run, edge.count) == ("edge", ("gnetway", "session", "bff"), 2)
    assert sync.count == 1
    assert t.argv(edge, 1) == [
        sys.executable, "-m", "teamgram.cli", "run", "gnetway,session,bff",
        "--config", "etc/common.yaml", "--config", "etc/edge-1.yaml",
        "--tcp-port", "10444", "--rpc-port", "20121", "--instance-id", "edge-1",
    ]  # fmt: skip
    assert t.argv(sync, 0) == [
        sys.executable, "-m", "teamgram.cli", "run", "sync", "--config", "etc/common.yaml",
    ]  # fmt: skip
    base = {"PATH": "/bin", "GONE": "x", "A": "0"}
    env = t.environ(edge, 1, base)
    assert env == {
        "PATH": "/bin",
        "A": "1",
        "SHARED": "edge-1",
        "N": "5",
        "PYTHONUNBUFFERED": "1",
    }
    assert t.environ(sync, 0, base)["SHARED"] == "top"
    assert t.config_files() == ["etc/common.yaml", "etc/edge-0.yaml", "etc/edge-1.yaml"]
    assert t.grace == 15.0


def test_missing_files(tmp_path: Path) -> None:
    t = _topology(EXAMPLE)
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "common.yaml").write_text("{}")
    (tmp_path / "etc" / "edge-0.yaml").write_text("{}")
    assert t.missing_files(tmp_path) == ["etc/edge-1.yaml"]


def test_command_replaces_the_prefix() -> None:
    t = _topology(
        """
grace: 2.5
config: [c.yaml]
processes:
  - name: dummy
    command: [python3, -c, "print({{}})", "{7+i}"]
    args: [x]
    count: 3
"""
    )
    (spec,) = t.processes
    assert spec.run == ()
    assert t.argv(spec, 2) == ["python3", "-c", "print({})", "9", "--config", "c.yaml", "x"]
    assert t.grace == 2.5


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[]", "mapping at top level"),
        ("processes: []", "non-empty list"),
        ("processes: [{name: a, run: sync}]\nextra: 1", "unknown key(s) extra"),
        ("processes: [{run: sync}]", "processes[0].name"),
        ("processes: [{name: 'a.b', run: sync}]", "processes[0].name"),
        ("processes: [{name: a}]", "processes[0] (a).run: missing"),
        ("processes: [{name: a, run: nosuch}]", "unknown service 'nosuch'"),
        ("processes: [{name: a, run: 5}]", "comma list"),
        ("processes: [{name: a, run: sync, count: 0}]", "positive integer"),
        ("processes: [{name: a, run: sync, count: 'two'}]", "positive integer"),
        ("processes: [{name: a, run: sync, count: true}]", "positive integer"),
        ("processes: [{name: a, run: sync, args: --x}]", ".args: expected a list"),
        ("processes: [{name: a, run: sync, args: [{10443+i}]}]", "quote templates"),
        ("processes: [{name: a, run: sync, args: [yes]}]", "args[0]: expected a string"),
        ("processes: [{name: a, run: sync, args: ['{j}']}]", "only {i} and {N+i}"),
        ("processes: [{name: a, run: sync, args: ['{i']}]", "unmatched '{'"),
        ("processes: [{name: a, run: sync, env: [x]}]", ".env: expected a mapping"),
        ("processes: [{name: a, run: sync, env: {X: [1]}}]", ".env.X: expected a string"),
        ("processes: [{name: a, run: sync, env: {X: '{k}'}}]", "only {i} and {N+i}"),
        ("processes: [{name: a, run: sync, command: []}]", ".command: empty"),
        ("processes: [{name: a, run: sync, restart: no}]", "unknown key(s) restart"),
        ("processes: [{name: a, run: sync}, {name: a, run: msg}]", "duplicate name(s) a"),
        ("grace: -1\nprocesses: [{name: a, run: sync}]", "grace"),
        ("config: ['{x}']\nprocesses: [{name: a, run: sync}]", "config: {x}"),
        ("env: {A: '{x}'}\nprocesses: [{name: a, run: sync}]", "env: {x}"),
    ],
)
def test_validation_errors(text: str, message: str) -> None:
    with pytest.raises(TopologyError) as err:
        _topology(text)
    assert str(err.value).startswith("t.yaml: ")
    assert message in str(err.value)


def test_load_topology_errors(tmp_path: Path) -> None:
    with pytest.raises(TopologyError, match="No such file"):
        load_topology(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("processes: [\n")
    with pytest.raises(TopologyError, match="not YAML"):
        load_topology(bad)


def test_the_example_file_is_valid() -> None:
    root = Path(__file__).resolve().parents[2]
    t = load_topology(root / "etc" / "cluster.example.yaml")
    edge, sync = t.processes
    assert edge.count == 2 and edge.run == ("gnetway", "session", "bff")
    assert "10444" in t.argv(edge, 1) and "edge-1" in t.argv(edge, 1)
    assert sync.run == ("sync",)
    assert t.missing_files(root) == []


# -- the command line -------------------------------------------------------------------


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[ServerConfig]:
    """The configurations ``cmd_serve`` would have run."""
    seen: list[ServerConfig] = []

    def fake(cfg: ServerConfig) -> int:
        seen.append(cfg)
        return 0

    monkeypatch.setattr(cli, "cmd_serve", fake)
    for name in ("TEAMGRAM_LOG_LEVEL", "TEAMGRAM_CLUSTER_SERVICES", "TEAMGRAM_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    return seen


def test_run_sets_the_cluster_overrides(
    served: list[ServerConfig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    argv = [
        "run", "gnetway,session,bff,gnetway", "--tcp-port", "1", "--tcp-port", "2",
        "--instance-id", "edge-0", "--rpc-port", "20120", "--rpc-host", "0.0.0.0",
        "--data-dir", str(tmp_path / "d"),
    ]  # fmt: skip
    assert cli.main(argv) == 0
    (cfg,) = served
    assert cfg.cluster.services == ["gnetway", "session", "bff"]
    assert cfg.cluster.instance_id == "edge-0"
    assert (cfg.cluster.rpc_host, cfg.cluster.rpc_port) == ("0.0.0.0", 20120)
    assert cfg.gnetway.tcp_ports == [1, 2]
    assert cfg.data_dir == tmp_path / "d"


def test_run_defaults_leave_the_cluster_settings(
    served: list[ServerConfig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli.main(["run", "sync"]) == 0
    (cfg,) = served
    default = ServerConfig()
    assert cfg.cluster.services == ["sync"]
    assert cfg.cluster.instance_id == default.cluster.instance_id
    assert cfg.cluster.rpc_port == default.cluster.rpc_port


def test_run_reads_etc_service_files_without_config(
    served: list[ServerConfig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "gnetway.yaml").write_text("gnetway: {ws_port: 1111, tcp_ports: [7]}\n")
    (etc / "session.yaml").write_text("gnetway: {ws_port: 2222}\nlog_level: DEBUG\n")
    (etc / "sync.yaml").write_text("log_level: ERROR\n")  # not named: not read
    # bff.yaml is missing: skipped.
    assert cli.main(["run", "gnetway,session,bff", "--tcp-port", "9"]) == 0
    cfg = served.pop()
    assert cfg.gnetway.ws_port == 2222  # later service files win
    assert cfg.gnetway.tcp_ports == [9]  # flags win over files
    assert cfg.log_level == "DEBUG"
    assert cli.service_config_files(("gnetway", "bff", "session"), etc) == [
        etc / "gnetway.yaml",
        etc / "session.yaml",
    ]

    # With --config, only the files given.
    other = tmp_path / "other.yaml"
    other.write_text("gnetway: {ws_port: 3333}\n")
    assert cli.main(["run", "gnetway,session", "--config", str(other)]) == 0
    cfg = served.pop()
    assert cfg.gnetway.ws_port == 3333
    assert cfg.gnetway.tcp_ports == ServerConfig().gnetway.tcp_ports
    assert cfg.log_level == "INFO"


def test_run_rejects_unknown_services(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["run", "nosuch"], ["run", "gnetway,nosuch"], ["run"], ["run", ""]):
        with pytest.raises(SystemExit) as exit_:
            cli.main(argv)
        assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "unknown service 'nosuch'" in err
    assert "gnetway, session, bff" in err


def test_serve_and_keys_still_parse(served: list[ServerConfig]) -> None:
    assert cli.main(["--tcp-port", "5", "--log-level", "WARNING"]) == 0
    assert cli.main(["serve", "--ws-port", "6"]) == 0
    a, b = served
    assert a.gnetway.tcp_ports == [5] and a.log_level == "WARNING"
    assert b.gnetway.ws_port == 6
    assert a.cluster.services == [] and b.cluster.services == []


def test_cluster_rejects_bad_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("processes: [{name: a, run: nosuch}]\n")
    assert cli.main(["cluster", str(bad)]) == 2
    assert "topology error" in capsys.readouterr().err
    missing = tmp_path / "missing.yaml"
    missing.write_text(f"config: [{tmp_path}/nope.yaml]\nprocesses: [{{name: a, run: sync}}]\n")
    assert cli.main(["cluster", str(missing)]) == 2
    assert "not found" in capsys.readouterr().err
    good = tmp_path / "good.yaml"
    good.write_text("processes: [{name: a, run: sync}]\n")
    assert cli.main(["cluster", str(good), "--grace", "-1"]) == 2
    assert cli.main(["cluster", str(tmp_path / "absent.yaml")]) == 2
