"""Service calls between processes: any object's async methods over gRPC (split mode, #9).

A service is a Python object with async methods. Embedded, its callers hold the
object and call it directly; split, the process that runs it serves it with
:class:`RpcServer` and the others hold a :class:`RemoteService`, whose attributes
are async callables with the same signatures. Callers type the dependency as the
service's class and never know the difference (:func:`local`, :func:`remote`).

There is no protoc step: every method is a gRPC unary call ``/<service>/<method>``
carrying bytes, arguments ``(args, kwargs)`` and results encoded with
:mod:`teamgram.infra.wire` (TL objects, registered dataclasses, plain values).

Errors keep their Telegram names: an :class:`RpcError` the service raises reaches
the caller as an RpcError with the same code and message (carried in the trailing
metadata, the gRPC status mapped from the code for observability). Failures of the
call itself are RpcErrors too, of the :class:`RemoteCallError` subclass, code 500:

=====================  ================================================================
``INTERNAL``           the service raised something else (the server logs the
                       traceback), or its result cannot be encoded
``RPC_TIMEOUT``        the deadline passed (retries included); the service may or may
                       not have done the work
``RPC_UNAVAILABLE``    nothing answered at the target (after the retries of an
                       idempotent method; at once otherwise), or the picker knows none
``RPC_METHOD_INVALID`` the target does not serve this service or method
``RPC_PAYLOAD_INVALID`` a request or reply the other side cannot decode (versions
                       that disagree on a registered class, say)
``RPC_FAILED``         any other gRPC status (the exception's ``status`` says which)
=====================  ================================================================

Deadlines: every call has one (``deadline`` seconds, per service, overridable per
method). Inside a served call, the caller's remaining time is inherited: a nested
call never outlives the call it serves (:func:`deadline` sets one for a block,
:func:`detached` drops the inherited one for work that outlives the request).

Channels are made on first use, on the running loop: use a RemoteService from one
event loop.

A non-idempotent call that fails with RPC_UNAVAILABLE or RPC_TIMEOUT may or may
not have run: UNAVAILABLE also means a connection that broke during the call.

Retries: only a method declared idempotent (``@idempotent`` on the interface, or
``idempotent=`` on the client) is retried, on UNAVAILABLE only, a few times with
a short jittered backoff, within the deadline; each retry asks the picker again, so
it may go to another instance. gRPC's own transparent retry of a request that never
left this process stays on: it cannot run anything twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import itertools
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import grpc
import grpc.aio

from teamgram.errors import RpcError
from teamgram.infra import wire

log = logging.getLogger(__name__)

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

# A call's default budget (seconds): service calls are short; a slow one is a fault.
DEFAULT_DEADLINE = 10.0
# Retries of an idempotent call on UNAVAILABLE: 50, 100, 200, 400 ms (jittered).
MAX_RETRIES = 4
RETRY_BACKOFF = 0.05
RETRY_BACKOFF_MAX = 1.0
# Largest request or reply (gRPC's default is 4 MiB; a media part is 512 KiB).
MAX_MESSAGE = 64 * 1024 * 1024
# Trailing metadata key carrying the service's RpcError (wire-encoded).
ERROR_KEY = "tg-rpc-error-bin"
# The reflective method every served service answers (its methods, idempotent ones).
DESCRIBE = "_describe"

# Channels: reconnect quickly after a peer restarts (gRPC's default first backoff is 1 s).
CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.max_send_message_length", MAX_MESSAGE),
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
)
# Servers: no SO_REUSEPORT, so a second server on a taken port fails instead of
# silently sharing it (gRPC turns it on by default on Linux).
SERVER_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.max_send_message_length", MAX_MESSAGE),
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.so_reuseport", 0),
)

# The gRPC status a service's RpcError travels with (for metrics and grpcurl; the
# caller reads the error itself from the metadata). Never UNAVAILABLE: not retried.
_STATUS_FOR_CODE = {
    303: grpc.StatusCode.FAILED_PRECONDITION,
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    406: grpc.StatusCode.FAILED_PRECONDITION,
    420: grpc.StatusCode.RESOURCE_EXHAUSTED,
    500: grpc.StatusCode.INTERNAL,
}
_NAME_FOR_STATUS = {
    grpc.StatusCode.DEADLINE_EXCEEDED: "RPC_TIMEOUT",
    grpc.StatusCode.UNAVAILABLE: "RPC_UNAVAILABLE",
    grpc.StatusCode.UNIMPLEMENTED: "RPC_METHOD_INVALID",
}

# Absolute time.monotonic() by which the current call must be answered, if any.
_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "teamgram_rpc_deadline", default=None
)


class RemoteCallError(RpcError):
    """A call that failed on its way (not an error the service raised).

    ``message`` is one of the names in the module docstring; ``status`` is the gRPC
    status when there was one. ``str()`` says which call and where, for the logs.
    """

    def __init__(
        self,
        message: str,
        detail: str,
        *,
        status: grpc.StatusCode | None = None,
    ) -> None:
        super().__init__(500, message)
        self.args = (f"500 {message} ({detail})",)
        self.status = status


def idempotent(fn: F) -> F:
    """Mark an interface method safe to run twice: its calls are retried on UNAVAILABLE."""
    fn.__rpc_idempotent__ = True  # type: ignore[attr-defined]
    return fn


def marked_idempotent(cls_or_obj: Any, methods: Iterable[str]) -> set[str]:
    """Those of ``methods`` marked with :func:`idempotent` on ``cls_or_obj``."""
    return {m for m in methods if getattr(getattr(cls_or_obj, m, None), "__rpc_idempotent__", 0)}


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Calls made in this block must be answered within ``seconds`` (or earlier)."""
    end = time.monotonic() + seconds
    outer = _deadline.get()
    token = _deadline.set(end if outer is None else min(outer, end))
    try:
        yield
    finally:
        _deadline.reset(token)


@contextlib.contextmanager
def detached() -> Iterator[None]:
    """Calls in this block ignore the deadline inherited from the call being served.

    For work that outlives the request: a task created while serving a call copies
    its context, deadline included.
    """
    token = _deadline.set(None)
    try:
        yield
    finally:
        _deadline.reset(token)


# --- server -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServiceInfo:
    """What a server exposes of one service."""

    name: str
    methods: frozenset[str]
    idempotent: frozenset[str]


class _Dispatch(grpc.GenericRpcHandler):
    """Looks a call's path up in a dict, so services may be added while serving."""

    def __init__(self) -> None:
        self.handlers: dict[str, grpc.RpcMethodHandler] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Any:
        return self.handlers.get(handler_call_details.method)


class RpcServer:
    """Serves the async methods of objects over gRPC, on one address."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        self.host = host
        self._port = port
        self._options = (*SERVER_OPTIONS, *options)
        self._dispatch = _Dispatch()
        self._services: dict[str, ServiceInfo] = {}
        self._server: grpc.aio.Server | None = None

    @property
    def port(self) -> int:
        """The bound port once started (the requested one before)."""
        return self._port

    @property
    def address(self) -> str:
        """``host:port`` as a client's target (IPv6 hosts bracketed)."""
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        return f"{host}:{self._port}"

    @property
    def services(self) -> Mapping[str, ServiceInfo]:
        return dict(self._services)

    def add(
        self,
        name: str,
        obj: object,
        methods: Iterable[str],
        idempotent: Iterable[str] | None = None,
    ) -> None:
        """Serve ``obj``'s async ``methods`` as service ``name``.

        ``idempotent`` (default: the methods marked with :func:`idempotent`) is
        informative here (clients decide what they retry) and answered by
        ``_describe`` so a deployment can check that both sides agree.
        """
        if not name or "/" in name:
            raise ValueError(f"bad service name {name!r}")
        if name in self._services:
            raise ValueError(f"service {name!r} is already served")
        methods = list(dict.fromkeys(methods))
        for m in methods:
            if not m or m.startswith("_") or "/" in m:
                raise ValueError(f"{name}: bad method name {m!r}")
            if not inspect.iscoroutinefunction(getattr(obj, m, None)):
                raise TypeError(f"{name}.{m} is not an async method of {type(obj).__qualname__}")
        idem = marked_idempotent(obj, methods) if idempotent is None else set(idempotent)
        if not idem <= set(methods):
            raise ValueError(
                f"{name}: idempotent methods not served: {sorted(idem - set(methods))}"
            )
        info = ServiceInfo(name, frozenset(methods), frozenset(idem))
        handlers = {
            f"/{name}/{m}": grpc.unary_unary_rpc_method_handler(_handler(name, m, getattr(obj, m)))
            for m in methods
        }
        described = wire.dumps({"methods": sorted(methods), "idempotent": sorted(idem)})

        async def describe(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            return described

        handlers[f"/{name}/{DESCRIBE}"] = grpc.unary_unary_rpc_method_handler(describe)
        self._services[name] = info
        self._dispatch.handlers.update(handlers)

    async def start(self) -> int:
        """Listen and serve; returns the bound port (a restart binds the same one)."""
        if self._server is not None:
            raise RuntimeError("RpcServer is already started")
        server = grpc.aio.server(options=self._options)
        server.add_generic_rpc_handlers((self._dispatch,))
        where = f"{self.host}:{self._port}" if ":" not in self.host else self.address
        try:
            port = server.add_insecure_port(where)
        except RuntimeError as exc:  # grpcio raises where older versions returned 0
            raise OSError(f"rpc: cannot listen on {where}: {exc}") from exc
        if not port:
            raise OSError(f"rpc: cannot listen on {where}")
        await server.start()
        self._server = server
        self._port = port
        log.info("rpc: serving %s on %s", ", ".join(sorted(self._services)), self.address)
        return port

    async def stop(self, grace: float | None = 1.0) -> None:
        """Stop listening; calls in flight get ``grace`` seconds, then are cancelled."""
        server, self._server = self._server, None
        if server is not None:
            await server.stop(grace)


def _handler(
    service: str, method: str, fn: Callable[..., Awaitable[Any]]
) -> Callable[[bytes, grpc.aio.ServicerContext], Awaitable[bytes]]:
    where = f"{service}.{method}"

    async def handle(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        reply, error = await _invoke(where, fn, request, context)
        if error is not None:
            # abort() raises: outside every try above, so nothing mistakes it for a failure.
            await context.abort(
                _STATUS_FOR_CODE.get(error.code, grpc.StatusCode.UNKNOWN),
                f"{error.code} {error.message}",
                trailing_metadata=((ERROR_KEY, wire.dumps(RpcError(error.code, error.message))),),
            )
        return reply

    return handle


async def _invoke(
    where: str,
    fn: Callable[..., Awaitable[Any]],
    request: bytes,
    context: grpc.aio.ServicerContext,
) -> tuple[bytes, RpcError | None]:
    try:
        args, kwargs = wire.loads(request)
        if type(args) is not tuple or type(kwargs) is not dict:
            raise wire.WireError("request is not (args, kwargs)")
    except (wire.WireError, ValueError, TypeError) as exc:
        log.warning("rpc: %s: undecodable request: %s", where, exc)
        return b"", RpcError(500, "RPC_PAYLOAD_INVALID")
    remaining = context.time_remaining()
    token = _deadline.set(
        time.monotonic() + remaining if remaining is not None and remaining < 1e9 else None
    )
    try:
        return wire.dumps(await fn(*args, **kwargs)), None
    except RpcError as exc:
        return b"", exc
    except Exception:
        log.exception("rpc: %s failed", where)
        return b"", RpcError(500, "INTERNAL")
    finally:
        _deadline.reset(token)


# --- client -------------------------------------------------------------------------

# Where calls go: one address, a list of them (round robin; a retry moves on), or a
# picker called before every attempt (service discovery) returning an address or
# None when it knows of no instance right now.
Target = str | Sequence[str] | Callable[[], str | None]


class Channels:
    """gRPC channels by address, made on first use; share one among RemoteServices
    that talk to the same processes so they share connections."""

    def __init__(self, options: Sequence[tuple[str, Any]] = ()) -> None:
        self._options = (*CHANNEL_OPTIONS, *options)
        self._channels: dict[str, grpc.aio.Channel] = {}

    def get(self, address: str) -> grpc.aio.Channel:
        channel = self._channels.get(address)
        if channel is None:
            channel = self._channels[address] = grpc.aio.insecure_channel(
                address, options=self._options
            )
        return channel

    async def drop(self, address: str, grace: float | None = None) -> None:
        """Close the channel to an address that went away (discovery's hook)."""
        channel = self._channels.pop(address, None)
        if channel is not None:
            await channel.close(grace)

    async def close(self, grace: float | None = None) -> None:
        channels, self._channels = self._channels, {}
        for channel in channels.values():
            await channel.close(grace)


class RemoteService:
    """A served object's async methods, called over gRPC: ``await svc.method(...)``.

    ``target`` is an address, a list of addresses, a picker (see :data:`Target`) or
    a ready ``grpc.aio.Channel`` (not closed by :meth:`close`). ``interface``, the
    service's class, gives the callables their signatures (arguments are bound, and
    refused, here, as a direct call would) and the :func:`idempotent` marks; then
    only its public async methods exist. Methods whose names clash with this class's
    own (``close``, ``call``, ``describe``, ``name``) are reached with :meth:`call`.
    """

    def __init__(
        self,
        name: str,
        target: Target | grpc.aio.Channel,
        *,
        deadline: float = DEFAULT_DEADLINE,
        deadlines: Mapping[str, float] | None = None,
        idempotent: Iterable[str] = (),
        interface: type | None = None,
        retries: int = MAX_RETRIES,
        channels: Channels | None = None,
    ) -> None:
        self.name = name
        self._deadline = deadline
        self._deadlines = dict(deadlines or {})
        self._retries = retries
        self._interface = interface
        self._idempotent = set(idempotent)
        self._signatures: dict[str, inspect.Signature] = {}
        if interface is not None:
            for m, fn in inspect.getmembers(interface, inspect.iscoroutinefunction):
                if not m.startswith("_"):
                    self._signatures[m] = _bound_signature(interface, m, fn)
            self._idempotent |= marked_idempotent(interface, self._signatures)
        self._channel: grpc.aio.Channel | None = None
        self._pick: Callable[[], str | None]
        if isinstance(target, grpc.aio.Channel):
            self._channel = target
            self._pick = lambda: "channel"
        elif isinstance(target, str):
            self._pick = lambda: target
        elif callable(target):
            self._pick = target
        else:
            addresses = list(target)
            if not addresses:
                raise ValueError("RemoteService: empty target list")
            turn = itertools.count()
            self._pick = lambda: addresses[next(turn) % len(addresses)]
        self._own_channels = channels is None
        self._channels = Channels() if channels is None else channels
        self._stubs: dict[tuple[str, str], Any] = {}
        self._closed = False

    def __repr__(self) -> str:
        return f"<RemoteService {self.name}>"

    def __getattr__(self, method: str) -> Callable[..., Awaitable[Any]]:
        # Only reached for names not set on the instance; dunders are never methods
        # (copy, pickle, inspect and mocks probe for them).
        if method.startswith("_"):
            raise AttributeError(method)
        sig = self._signatures.get(method)
        if self._interface is not None and sig is None:
            raise AttributeError(f"{self._interface.__qualname__} has no async method {method!r}")
        call_ = self._call

        if sig is None:

            async def remote_method(*args: Any, **kwargs: Any) -> Any:
                return await call_(method, args, kwargs)

        else:
            bind = sig.bind

            async def remote_method(*args: Any, **kwargs: Any) -> Any:
                bind(*args, **kwargs)  # the TypeError a direct call would raise
                return await call_(method, args, kwargs)

            remote_method.__signature__ = sig  # type: ignore[attr-defined]
        remote_method.__name__ = method
        remote_method.__qualname__ = f"{self.name}.{method}"
        self.__dict__[method] = remote_method
        return remote_method

    async def call(self, method: str, /, *args: Any, **kwargs: Any) -> Any:
        """Call ``method`` by name."""
        return await self._call(method, args, kwargs)

    async def describe(self) -> dict[str, list[str]]:
        """What the server serves of this service: ``{"methods": [...], "idempotent": [...]}``."""
        return cast(dict[str, list[str]], await self._call(DESCRIBE, None, None))

    async def close(self) -> None:
        """Close the channels this service made (not a shared :class:`Channels`)."""
        self._closed = True
        self._stubs.clear()
        if self._own_channels:
            await self._channels.close()

    def _stub(self, address: str, method: str) -> Any:
        stub = self._stubs.get((address, method))
        if stub is None:
            channel = self._channel or self._channels.get(address)
            stub = self._stubs[(address, method)] = channel.unary_unary(f"/{self.name}/{method}")
        return stub

    async def _call(
        self, method: str, args: tuple[Any, ...] | None, kwargs: dict[str, Any] | None
    ) -> Any:
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")
        payload = b"" if args is None else wire.dumps((args, kwargs))
        now = time.monotonic()
        end = now + self._deadlines.get(method, self._deadline)
        inherited = _deadline.get()
        if inherited is not None and inherited < end:
            end = inherited
        retryable = method in self._idempotent or method == DESCRIBE
        attempt = 0
        while True:
            remaining = end - time.monotonic()
            if remaining <= 0:
                raise RemoteCallError("RPC_TIMEOUT", f"{self.name}.{method}: no time left")
            address = self._pick()
            error: RemoteCallError
            if address is None:
                error = RemoteCallError(
                    "RPC_UNAVAILABLE",
                    f"{self.name}.{method}: no instance known",
                    status=grpc.StatusCode.UNAVAILABLE,
                )
            else:
                try:
                    reply = await self._stub(address, method)(payload, timeout=remaining)
                except grpc.aio.AioRpcError as exc:
                    carried = _carried_error(exc)
                    if carried is not None:
                        raise carried from None
                    error = _call_error(exc, f"{self.name}.{method} at {address}")
                    if error.status is not grpc.StatusCode.UNAVAILABLE:
                        raise error from exc
                else:
                    try:
                        return wire.loads(reply)
                    except wire.WireError as exc:
                        raise RemoteCallError(
                            "RPC_PAYLOAD_INVALID", f"{self.name}.{method} at {address}: {exc}"
                        ) from exc
            # UNAVAILABLE: retried only when safe, while attempts and time are left.
            delay = min(RETRY_BACKOFF * 2**attempt, RETRY_BACKOFF_MAX) * random.uniform(0.5, 1)
            if not retryable or attempt >= self._retries or time.monotonic() + delay >= end:
                raise error
            attempt += 1
            log.debug("rpc: %s; retry %d in %.0f ms", error, attempt, delay * 1000)
            await asyncio.sleep(delay)


def _bound_signature(interface: type, name: str, fn: Callable[..., Any]) -> inspect.Signature:
    """The signature of ``name`` as called on an instance (without ``self``)."""
    sig = inspect.signature(fn)
    if isinstance(inspect.getattr_static(interface, name), (staticmethod, classmethod)):
        return sig  # already without self / cls
    return sig.replace(parameters=list(sig.parameters.values())[1:])


def _carried_error(exc: grpc.aio.AioRpcError) -> RpcError | None:
    """The service's own RpcError, if the failure carries one."""
    for key, value in exc.trailing_metadata() or ():
        if key == ERROR_KEY:
            try:
                err = wire.loads(value)
            except wire.WireError:
                return None
            return err if isinstance(err, RpcError) else None
    return None


def _call_error(exc: grpc.aio.AioRpcError, where: str) -> RemoteCallError:
    status = exc.code()
    name = _NAME_FOR_STATUS.get(status, "RPC_FAILED")
    return RemoteCallError(name, f"{where}: {status.name} {exc.details()}", status=status)


# --- holding a service, local or remote ---------------------------------------------


def local(obj: T, *, through_wire: bool = False) -> T:
    """A co-located service: the object itself, so calls stay direct Python calls.

    ``through_wire=True`` wraps it so arguments and results of its async methods go
    through :mod:`~teamgram.infra.wire` (copies, as in split mode): tests of the
    embedded mode then catch what split mode could not carry.
    """
    return cast(T, _WireCopy(obj)) if through_wire else obj


def remote(interface: type[T], name: str, target: Target | grpc.aio.Channel, **options: Any) -> T:
    """A :class:`RemoteService` typed as ``interface`` (options as for RemoteService)."""
    return cast(T, RemoteService(name, target, interface=interface, **options))


async def close_ref(ref: object) -> None:
    """Close what :func:`remote` returned; nothing to do for a local service."""
    if isinstance(ref, RemoteService):
        await ref.close()


class _WireCopy:
    """Forwards to an object; its async methods see and return wire copies."""

    def __init__(self, obj: object) -> None:
        self._obj = obj

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._obj, name)
        if name.startswith("_") or not inspect.iscoroutinefunction(attr):
            return attr

        async def copied(*args: Any, **kwargs: Any) -> Any:
            args, kwargs = wire.loads(wire.dumps((args, kwargs)))
            return wire.loads(wire.dumps(await attr(*args, **kwargs)))

        copied.__name__ = name
        self.__dict__[name] = copied
        return copied
