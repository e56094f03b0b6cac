"""httpserver: the MTProto HTTP transport (POST /api) on port 8801."""

from __future__ import annotations

from typing import TYPE_CHECKING

from teamgram.config import HttpServerConfig

if TYPE_CHECKING:
    from teamgram.server import Server


class HttpServer:
    def __init__(self, config: HttpServerConfig, server: Server) -> None:
        self.config = config
        self.server = server
        self.port: int | None = None

    async def start(self) -> None:
        self.port = None

    async def stop(self) -> None:
        pass
