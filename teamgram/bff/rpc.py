"""Routing of TL requests to bff handlers, one module per API area.

Each area module makes a :class:`Router` and decorates its handlers with the TL
function class they answer; the server collects the routers into a
:class:`Dispatcher`. A handler gets a :class:`RequestContext` and the request,
and returns a TL object (or bool / list for Bool / Vector results) or raises
:class:`~teamgram.errors.RpcError`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from teamgram.errors import RpcError
from teamgram.tl import TLFunction

if TYPE_CHECKING:
    from teamgram.server import Server
    from teamgram.service.authsession.service import AuthKeyInfo

Handler = Callable[["RequestContext", Any], Awaitable[Any]]


@dataclass(slots=True)
class RequestContext:
    """What a handler knows about the request it answers."""

    server: Server
    auth_key: AuthKeyInfo
    session_id: int
    msg_id: int
    layer: int
    client_ip: str = ""
    user_id: int | None = None
    # The session host's record of the calling session (HostedSession), so a
    # handler can exclude it when pushing updates to the user's other devices.
    session: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Route:
    handler: Handler
    # May be called without a signed-in user (auth.*, help.*...).
    allow_anonymous: bool
    # May be called with a temporary key that is not yet bound (PFS).
    allow_unbound_temp: bool
    # "implemented" (real behaviour) or "empty" (a well-formed empty answer where
    # this server has no such data), for the method table in docs/methods.md.
    status: str = "implemented"


class Router:
    def __init__(self) -> None:
        self.routes: dict[type[TLFunction], Route] = {}

    def __call__(
        self,
        *functions: type[TLFunction],
        anonymous: bool = False,
        unbound_temp: bool = False,
        status: str = "implemented",
    ) -> Callable[[Handler], Handler]:
        def deco(handler: Handler) -> Handler:
            for f in functions:
                self.routes[f] = Route(handler, anonymous, unbound_temp, status)
            return handler

        return deco


class Dispatcher:
    def __init__(self, *routers: Router) -> None:
        self.routes: dict[type[TLFunction], Route] = {}
        for r in routers:
            self.routes.update(r.routes)

    def route(self, query: TLFunction) -> Route:
        route = self.routes.get(type(query))
        if route is None:
            # Known to the schema but not served by this server.
            raise RpcError(400, "METHOD_NOT_SUPPORTED")
        return route
