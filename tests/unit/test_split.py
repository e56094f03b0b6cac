"""Which services may share a process in split mode, and which engines it needs."""

from __future__ import annotations

import pytest

from teamgram.config import ClusterConfig
from teamgram.split import PlanError, check_engines, plan

MARIADB = "mysql+asyncmy://root@127.0.0.1/test"


def test_edge_and_sync_plans() -> None:
    edge = plan(["gnetway", "session", "bff"])
    assert edge.gateway and edge.edge and not edge.http and not edge.sync
    full = plan(["gnetway", "session", "bff", "httpserver", "msg", "biz", "sync"])
    assert full.gateway and full.http and full.sync
    http_only = plan(["httpserver", "session", "bff"])
    assert http_only.edge and not http_only.gateway
    sync = plan(["sync"])
    assert sync.sync and not sync.edge


@pytest.mark.parametrize(
    ("services", "says"),
    [
        (["nosuch"], "unknown service nosuch"),
        (["gnetway", "bff"], "run it with session"),
        (["session", "bff"], "needs a transport"),
        (["msg"], "in-process, as libraries"),
        (["biz", "idgen"], "in-process, as libraries"),
    ],
)
def test_refused_plans_say_why(services: list[str], says: str) -> None:
    with pytest.raises(PlanError, match=says):
        plan(services)


def test_engines_checked() -> None:
    ok = ClusterConfig(
        services=["sync"],
        redis_url="redis://127.0.0.1:6379/0",
        nats_url="nats://127.0.0.1:4222",
        etcd_endpoints=["127.0.0.1:2379"],
    )
    check_engines(ok, MARIADB)
    with pytest.raises(PlanError, match="not SQLite"):
        check_engines(ok, "sqlite+aiosqlite:///x.db")
    direct = ClusterConfig(
        services=["sync"],
        redis_url="redis://x",
        static_sessions=["127.0.0.1:1"],
        delivery="direct",
    )
    check_engines(direct, MARIADB)  # no NATS needed without the pipeline
    with pytest.raises(PlanError, match=r"cluster\.nats_url"):
        check_engines(
            ClusterConfig(services=["sync"], redis_url="redis://x", static_sessions=["a:1"]),
            MARIADB,
        )
    with pytest.raises(PlanError, match="'pipeline' or 'direct'"):
        check_engines(
            ClusterConfig(
                services=["sync"],
                redis_url="redis://x",
                static_sessions=["a:1"],
                delivery="carrier pigeon",
            ),
            MARIADB,
        )
