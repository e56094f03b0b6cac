"""Split mode (#9): what one process of a cluster runs, and the engines it shares.

A cluster is made of two kinds of process, as Synapse's workers are:

- **edge** (``gnetway,session,bff``, optionally ``httpserver``): a gateway and
  its session host, with bff and the domain services (biz, msg, authsession,
  media, dfs, status, idgen) in-process as libraries over the shared engines.
  Several edges serve one user base; each registers its session host in
  discovery as ``interface.session`` and serves the calls other processes make
  to it (pushes, sign-in binds, revocations) over gRPC.
- **sync** (``sync``): takes the updates the edges commit from the event
  pipeline and delivers them to the edges holding each user's connected keys;
  it also runs the cluster's periodic jobs (update-log retention, account TTL).

The domain services keep one async interface each and stay direct calls inside
a process: their interfaces are fine-grained (a request makes tens of calls),
and a gRPC hop costs 100-270 µs of CPU on each side here (``bench/rpc.py``), so
the cut between processes is where calls are coarse: one per batch of pushes.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from teamgram.config import ClusterConfig

if TYPE_CHECKING:
    from teamgram.server import Server

log = logging.getLogger(__name__)

SERVICES = (
    "gnetway",
    "session",
    "bff",
    "authsession",
    "biz",
    "msg",
    "sync",
    "dfs",
    "media",
    "idgen",
    "status",
    "httpserver",
)
# Services that run in-process, as libraries, in every process that calls them.
LIBRARIES = frozenset({"bff", "authsession", "biz", "msg", "dfs", "media", "idgen", "status"})
SESSION_SERVICE = "interface.session"


class PlanError(ValueError):
    """The services named cannot run together in one process."""


@dataclass(frozen=True)
class ProcessPlan:
    """What this process starts besides the domain services (always in-process)."""

    gateway: bool  # MTProto over TCP and WebSocket (gnetway)
    http: bool  # MTProto over HTTP (httpserver)
    sync: bool  # the delivery worker and the periodic jobs

    @property
    def edge(self) -> bool:
        return self.gateway or self.http


def plan(services: list[str]) -> ProcessPlan:
    names = set(services)
    unknown = sorted(names - set(SERVICES))
    if unknown:
        raise PlanError(f"unknown service {', '.join(unknown)} (known: {', '.join(SERVICES)})")
    transports = names & {"gnetway", "httpserver"}
    if transports and "session" not in names:
        raise PlanError(
            f"{', '.join(sorted(transports))} hands every frame to the session host in "
            "the same process: run it with session (e.g. gnetway,session,bff)"
        )
    if "session" in names and not transports:
        raise PlanError("session needs a transport in its process: add gnetway or httpserver")
    if not transports and "sync" not in names:
        raise PlanError(
            f"{', '.join(sorted(names))}: these run in-process, as libraries, inside the "
            "edge (gnetway,session,bff) and sync processes that call them; run those"
        )
    return ProcessPlan(gateway="gnetway" in names, http="httpserver" in names, sync="sync" in names)


def instance_id(cfg: ClusterConfig) -> str:
    return cfg.instance_id or f"{socket.gethostname()}-{os.getpid()}"


def check_engines(cfg: ClusterConfig, database_url: str) -> None:
    """A cluster shares its state: refuse to start a process on private engines."""
    missing = []
    if database_url.startswith("sqlite"):
        missing.append("database.url (MariaDB/MySQL or PostgreSQL; not SQLite)")
    if not cfg.redis_url:
        missing.append("cluster.redis_url")
    if not cfg.etcd_endpoints and not cfg.static_sessions:
        missing.append("cluster.etcd_endpoints (or cluster.static_sessions)")
    if cfg.delivery not in ("pipeline", "direct"):
        missing.append(f"cluster.delivery: 'pipeline' or 'direct', not {cfg.delivery!r}")
    elif cfg.delivery == "pipeline" and not cfg.nats_url:
        missing.append("cluster.nats_url (or cluster.delivery: direct)")
    if missing:
        raise PlanError("split mode needs shared engines: " + "; ".join(missing))


class SplitParts:
    """The cross-process parts one process of a cluster holds (closed in reverse)."""

    def __init__(self) -> None:
        self.instance_id = ""
        self.push: Callable[[int, Any, int | None], None] = lambda u, x, k: None
        self._closers: list[Callable[[], Awaitable[Any]]] = []

    def on_close(self, closer: Callable[[], Awaitable[Any]]) -> None:
        self._closers.append(closer)

    async def close(self) -> None:
        for closer in reversed(self._closers):
            try:
                await closer()
            except Exception:
                log.warning("split mode: closing %r failed", closer, exc_info=True)
        self._closers.clear()


async def start_parts(server: Server, plan: ProcessPlan) -> SplitParts:
    """Connect this process to the cluster: discovery, session routes, the session
    peers, cache invalidation, shared presence, and where committed updates go."""
    from teamgram.infra.discovery import Discovery, EtcdDiscovery, StaticDiscovery
    from teamgram.infra.invalidation import RedisInvalidations, new_instance_id
    from teamgram.infra.rpc import Channels, RpcServer
    from teamgram.interface.session.cluster import (
        ClusterDirectory,
        RouteRecorder,
        SessionPeer,
        SessionPeers,
        connect_nats,
        session_subject,
    )
    from teamgram.service.status.routes import open_routes

    cfg = server.config.cluster
    prefix = f"{cfg.namespace}:"
    parts = SplitParts()
    host = server.session_host
    try:
        parts.instance_id = instance_id(cfg)
        rpc: RpcServer | None = None
        peer: SessionPeer | None = None
        if plan.edge:
            # Listen first: static discovery names an instance by its address.
            rpc = RpcServer(cfg.rpc_host, cfg.rpc_port)
            peer = SessionPeer(host)
            peer.serve(rpc, SESSION_SERVICE)
            await rpc.start()
            parts.on_close(rpc.stop)
            if not cfg.etcd_endpoints and not cfg.instance_id:
                parts.instance_id = cfg.rpc_advertise or rpc.address
        nc = None
        if cfg.nats_url:
            # Pushes between instances go over NATS core (a quarter of a gRPC call's
            # CPU); sign-in binds, revocations and questions stay on gRPC.
            nc = await connect_nats(cfg.nats_url, name=f"teamgram-session {parts.instance_id}")
            parts.on_close(nc.close)
            if peer is not None:
                await peer.subscribe(nc, session_subject(cfg.namespace, parts.instance_id))
                parts.on_close(peer.close)
                await nc.flush()  # subscribed at the server before discovery lists us
        routes = open_routes(cfg.redis_url, prefix=prefix)
        parts.on_close(routes.close)
        discovery: Discovery
        if cfg.etcd_endpoints:
            discovery = EtcdDiscovery(cfg.etcd_endpoints, ttl=cfg.etcd_ttl, prefix=f"/{prefix}")
        else:
            discovery = StaticDiscovery({SESSION_SERVICE: cfg.static_sessions})
        await discovery.start()
        parts.on_close(discovery.close)
        channels = Channels()
        parts.on_close(channels.close)
        peers = SessionPeers(routes, discovery, channels, nats=nc, subject_prefix=cfg.namespace)
        parts.on_close(peers.close)

        invalidations = RedisInvalidations(
            cfg.redis_url, prefix, instance_id=new_instance_id(parts.instance_id)
        )
        for svc in (
            server.users,
            server.chats,
            server.channels,
            server.privacy,
            server.contacts,
            server.authsession,
        ):
            svc.use_invalidations(invalidations)
        await invalidations.start()
        parts.on_close(invalidations.close)
        server.status.share(invalidations)

        directory = ClusterDirectory(host, peers, parts.instance_id)
        server.sessions = directory
        if rpc is not None:
            recorder = RouteRecorder(host, routes, parts.instance_id)
            # Offline once the user's last connection anywhere is gone, not here.
            host.on_user_offline.remove(server.status.on_user_offline)
            recorder.on_user_offline.append(server.status.on_user_offline)
            recorder.start()
            parts.on_close(recorder.stop)
            address = cfg.rpc_advertise or rpc.address
            registration = await discovery.register(SESSION_SERVICE, parts.instance_id, address)
            parts.on_close(registration.close)
        parts.on_close(directory.close)  # drains queued pushes before its peers close

        if cfg.delivery == "pipeline":
            from teamgram.infra.pipeline import JetStreamPipeline
            from teamgram.messenger.sync.delivery import (
                DeliveryWorker,
                PipelinePublisher,
                open_dedup,
            )

            # A restarted sync process takes over unacknowledged events after
            # ack_wait: seconds, not the default half-minute.
            pipeline = JetStreamPipeline(cfg.nats_url, stream_prefix=cfg.namespace, ack_wait=5.0)
            await pipeline.start()
            parts.on_close(pipeline.close)
            # This process's own sessions get their pushes at once; the sync
            # process delivers the rest (it skips the origin instance).
            origin = parts.instance_id if rpc is not None else ""
            publisher = PipelinePublisher(pipeline, origin=origin)
            parts.on_close(publisher.close)

            def push(user_id: int, updates: Any, exclude_key: int | None) -> None:
                if origin:
                    host.push_to_user(user_id, updates, exclude_key=exclude_key)
                publisher.push(user_id, updates, exclude_key)

            parts.push = push
            if plan.sync:
                dedup = open_dedup(cfg.redis_url, prefix)
                parts.on_close(dedup.close)
                worker = DeliveryWorker(pipeline, peers, dedup=dedup)
                await worker.start()
                parts.on_close(worker.close)
        else:

            def direct(user_id: int, updates: Any, exclude_key: int | None) -> None:
                directory.push_to_user(user_id, updates, exclude_key=exclude_key)

            parts.push = direct
    except BaseException:
        await parts.close()
        raise
    log.info(
        "split mode: instance %s, %s, delivery %s",
        parts.instance_id,
        discovery.describe(),
        cfg.delivery,
    )
    return parts
