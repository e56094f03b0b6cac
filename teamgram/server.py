"""The all-in-one server: builds every service on the embedded default and runs it.

:class:`Server` hands each part what it depends on (as Synapse's HomeServer does),
so tests build the same graph against a temporary data directory.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from contextlib import suppress

from sqlalchemy.ext.asyncio import AsyncEngine

from teamgram.bff import auth as bff_auth
from teamgram.bff import help as bff_help
from teamgram.bff import langpack as bff_langpack
from teamgram.bff import stickers as bff_stickers
from teamgram.bff.rpc import Dispatcher
from teamgram.config import ServerConfig
from teamgram.infra.database import open_database
from teamgram.interface.gnetway.gateway import Gateway
from teamgram.interface.httpserver.server import HttpServer
from teamgram.interface.session.host import SessionHost
from teamgram.mtproto.crypto.rsa import ServerKey, load_or_create_server_key
from teamgram.service.authsession.service import AuthSessionService
from teamgram.service.biz.users import UserService, load_secret
from teamgram.service.idgen.service import IdGenService

log = logging.getLogger("teamgram")

ROUTERS = (bff_auth.router, bff_help.router, bff_langpack.router, bff_stickers.router)


class Server:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.engine: AsyncEngine | None = None
        self.server_keys: list[ServerKey] = []
        self.authsession: AuthSessionService
        self.idgen: IdGenService
        self.users: UserService
        self.session_host: SessionHost
        self.gateway: Gateway
        self.http: HttpServer

    async def start(self) -> None:
        cfg = self.config
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        self.server_keys = await asyncio.to_thread(
            lambda: [load_or_create_server_key(cfg.data_dir / name) for name in cfg.rsa_keys]
        )
        self.engine = await open_database(cfg.database_url)
        self.authsession = AuthSessionService(self.engine)
        self.idgen = IdGenService(self.engine)
        self.users = UserService(self.engine, self.idgen, load_secret(cfg.data_dir))
        self.session_host = SessionHost(self, Dispatcher(*ROUTERS))
        self.session_host.start()
        self.gateway = Gateway(cfg.gnetway, self.server_keys, self.session_host, self.authsession)
        await self.gateway.start()
        self.http = HttpServer(cfg.httpserver, self)
        await self.http.start()
        key = self.server_keys[0]
        log.info(
            "ready: tcp %s, websocket %s%s, http %s, dc %d advertised at %s, key fingerprint %d",
            ",".join(map(str, self.gateway.tcp_ports)),
            self.gateway.ws_port,
            cfg.gnetway.ws_path,
            self.http.port,
            cfg.dc_id,
            cfg.advertised_host,
            key.fingerprint,
        )

    async def stop(self) -> None:
        with suppress(Exception):
            await self.gateway.stop()
        with suppress(Exception):
            await self.http.stop()
        with suppress(Exception):
            await self.session_host.stop()
        if self.engine is not None:
            await self.engine.dispose()


async def run_forever(config: ServerConfig) -> int:
    server = Server(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await server.start()
    except OSError as exc:
        log.error("cannot start: %s", exc)
        await server.stop()
        return 1
    await stop.wait()
    log.info("stopping")
    await asyncio.wait_for(server.stop(), timeout=10)
    log.info("stopped")
    return 0
