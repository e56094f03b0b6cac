"""The session service: the encrypted side of every client connection.

gnetway hands it each encrypted packet with the connection it came on. The host
finds the auth key, decrypts, feeds the sans-IO :class:`MTProtoSession`, runs
queries through bff, and writes answers back encrypted. A session outlives its
connection: unacknowledged messages are re-sent when the client comes back on a
new connection (same key + session id) within the resend window, and pushed
updates follow the connection that last sent a request.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from teamgram.bff.rpc import Dispatcher, RequestContext
from teamgram.errors import RpcError
from teamgram.interface.session.salts import CachedSalts, SaltSchedule
from teamgram.mtproto.envelope import decrypt_client_message, encrypt_server_message
from teamgram.mtproto.session import (
    CloseAfter,
    HttpWait,
    MsgIdClock,
    MTProtoSession,
    RpcCall,
    SessionDestroyed,
    SessionLimits,
)
from teamgram.service.authsession.service import AuthKeyInfo, AuthSessionService, ClientInfo
from teamgram.tl import TLFunction, types
from teamgram.tl import functions as fn
from teamgram.tl.layers import codec_for

if TYPE_CHECKING:
    from teamgram.server import Server

log = logging.getLogger(__name__)

# Calls an unbound temporary key may make (PFS): the rest get AUTH_KEY_PERM_EMPTY.
_WRAPPERS = (
    fn.InvokeWithLayer,
    fn.InitConnection,
    fn.InvokeWithoutUpdates,
    fn.InvokeWithMessagesRange,
    fn.InvokeWithTakeout,
    fn.InvokeWithBusinessConnection,
    fn.InvokeWithGooglePlayIntegrity,
    fn.InvokeWithApnsSecret,
    fn.InvokeWithReCaptcha,
)


class Connection(Protocol):
    """What the session service needs from a gateway connection."""

    conn_id: int
    client_ip: str

    @property
    def closed(self) -> bool: ...

    @property
    def writable(self) -> bool:
        """Whether output may leave now (HTTP: a request is waiting); else it stays queued."""
        ...

    def send_packets(self, packets: list[bytes]) -> None: ...

    def send_quick_ack(self, token: int) -> None: ...

    def send_transport_error(self, code: int) -> None: ...

    def close_after(self, seconds: float) -> None: ...

    def http_wait(self, max_delay: int, wait_after: int, max_wait: int) -> None: ...


@dataclass(eq=False)
class HostedSession:
    key: AuthKeyInfo
    mt: MTProtoSession
    conn: Connection | None = None
    flush_scheduled: bool = False
    running: dict[int, asyncio.Future[None]] = field(default_factory=dict)
    user_id: int | None = None
    user_checked: bool = False  # the key's authorization was looked up
    # The lookup in flight: calls that arrive meanwhile (a client resending its
    # queue after a reconnect) wait for it instead of being refused.
    user_lookup: asyncio.Future[int | None] | None = None


class SessionHost:
    def __init__(self, server: Server, dispatcher: Dispatcher) -> None:
        self.server = server
        self.config = server.config.session
        self.auth: AuthSessionService = server.authsession
        self.dispatcher = dispatcher
        self.salts = SaltSchedule.from_data_dir(
            server.config.data_dir, self.config.salt_lifetime_seconds
        )
        self.clock = MsgIdClock()
        self.limits = SessionLimits(
            msg_id_past=self.config.msg_id_past_seconds,
            msg_id_future=self.config.msg_id_future_seconds,
            resend_window=float(self.config.resend_window_seconds),
            max_pending=self.config.max_pending_per_session,
            gzip_threshold=self.config.gzip_threshold,
        )
        self.sessions: dict[tuple[int, int], HostedSession] = {}
        # signed-in user -> its live sessions, for pushing updates to every device
        self.by_user: dict[int, set[HostedSession]] = {}
        # called with a user id when that user's last open connection closes
        self.on_user_offline: list[Callable[[int], None]] = []
        # called with (user id, auth key id) when that signed-in key may have gained
        # its first live connection here or lost its last one (split mode records
        # session routes from it: cluster.RouteRecorder); the key is the effective one
        self.on_key_routes: list[Callable[[int, int], None]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._janitor: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self._janitor = asyncio.get_running_loop().create_task(self._expire_loop())

    async def stop(self) -> None:
        if self._janitor:
            self._janitor.cancel()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _expire_loop(self) -> None:
        while True:
            await asyncio.sleep(30)
            cutoff = time.time() - self.limits.resend_window
            for k, s in list(self.sessions.items()):
                if (s.conn is None or s.conn.closed) and s.mt.last_seen < cutoff:
                    del self.sessions[k]
                    self._attach(s, None)

    def connection_lost(self, conn: Connection) -> None:
        """Forget the connection; its sessions keep their unacked messages.

        When it was a user's last open connection, ``on_user_offline`` listeners
        hear of it (the status service marks the user offline).
        """
        users: set[int] = set()
        for s in self.sessions.values():
            if s.conn is conn:
                s.conn = None
                if s.user_id is not None:
                    users.add(s.user_id)
                    self._key_routes(s.user_id, s.key.effective_id)
        for user_id in users:
            if not any(
                h.conn is not None and not h.conn.closed for h in self.by_user.get(user_id, ())
            ):
                for listener in self.on_user_offline:
                    listener(user_id)

    # -------------------------------------------------------------------- inbound
    def try_packet(self, conn: Connection, packet: bytes, quick_ack: bool) -> bool:
        """Handle a packet synchronously if its key is cached; False: use on_packet.

        The common case costs no task and no await (a task per read costs ~3 us).
        """
        if len(packet) < 8:
            conn.send_transport_error(-404)
            return True
        key = self.auth.cached_key(struct.unpack_from("<q", packet)[0])
        if key is None:
            return False
        self._handle(conn, key, packet, quick_ack, time.time())
        return True

    async def on_packet(self, conn: Connection, packet: bytes, quick_ack: bool) -> None:
        if self.try_packet(conn, packet, quick_ack):
            return
        now = time.time()
        key = await self.auth.get_key(struct.unpack_from("<q", packet)[0], now)
        if key is None:
            conn.send_transport_error(-404)
            return
        self._handle(conn, key, packet, quick_ack, now)

    def _handle(
        self, conn: Connection, key: AuthKeyInfo, packet: bytes, quick_ack: bool, now: float
    ) -> None:
        if key.expires_at is not None and key.expires_at < now:
            conn.send_transport_error(-404)  # an expired temporary key
            return
        key_id = key.auth_key_id
        extra = (len(packet) - 24) % 16
        if extra:  # padded intermediate: 0..15 bytes of transport padding
            packet = packet[:-extra]
        dec = decrypt_client_message(key.auth_key, packet)
        if dec is None:
            conn.send_transport_error(-404)
            return
        if quick_ack:
            conn.send_quick_ack(dec.quick_ack_token)
        sk = (key_id, dec.session_id)
        hosted = self.sessions.get(sk)
        if hosted is None:
            salts = CachedSalts(self.salts, key_id)
            mt = MTProtoSession(
                session_id=dec.session_id,
                auth_key_id=key_id,
                clock=self.clock,
                salt_ok=salts.ok,
                current_salt=salts.current,
                future_salts=salts.future,
                limits=self.limits,
                decoder=_layer_decoder(key),
            )
            hosted = HostedSession(key=key, mt=mt)
            self.sessions[sk] = hosted
            user_id = self.auth.cached_user(key.effective_id)
            if user_id is not None:
                self._attach(hosted, user_id)
        if hosted.conn is not conn:
            prev = hosted.conn
            hosted.conn = conn
            # The client came back on a new connection: what the old one may have
            # lost is sent again. Not when the old one is still open (browsers
            # spread one session over several HTTP connections).
            if (prev is None and hosted.mt.created) or (prev is not None and prev.closed):
                hosted.mt.resend_unacked(now)
            if hosted.user_id is not None:
                self._key_routes(hosted.user_id, key.effective_id)
        events = hosted.mt.receive(dec.salt, dec.msg_id, dec.seqno, dec.body, now)
        for ev in events:
            if isinstance(ev, RpcCall):
                fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                hosted.running[ev.msg_id] = fut
                self._spawn(self._run_call(hosted, ev, fut))
            elif isinstance(ev, CloseAfter):
                conn.close_after(ev.seconds)
            elif isinstance(ev, SessionDestroyed):
                self._destroy_session(hosted, ev.session_id, now)
            elif isinstance(ev, HttpWait):
                conn.http_wait(ev.max_delay, ev.wait_after, ev.max_wait)
        self._schedule_flush(hosted)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _destroy_session(self, hosted: HostedSession, session_id: int, now: float) -> None:
        other = self.sessions.pop((hosted.key.auth_key_id, session_id), None)
        if other is not None and other is not hosted:
            self._attach(other, None)
            body = types.DestroySessionOk(session_id=session_id).to_bytes()
        else:
            if other is hosted:  # a client may not destroy the session it speaks on
                self.sessions[(hosted.key.auth_key_id, session_id)] = hosted
            body = types.DestroySessionNone(session_id=session_id).to_bytes()
        hosted.mt.add_bare(body, now)

    # ----------------------------------------------------------------------- RPC
    async def _run_call(
        self, hosted: HostedSession, call: RpcCall, done: asyncio.Future[None]
    ) -> None:
        try:
            for dep in call.after:
                waiter = hosted.running.get(dep)
                if waiter is not None and waiter is not done:
                    await asyncio.shield(waiter)
            result = await self._invoke(hosted, call.msg_id, call.query)
            query = _innermost(call.query)
            data = codec_for(hosted.key.layer).encode_result(type(query), result)
            hosted.mt.add_result(call.msg_id, data, time.time())
        except RpcError as exc:
            hosted.mt.add_error(call.msg_id, exc.code, exc.message, time.time())
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("internal error answering %s", type(call.query).__name__)
            hosted.mt.add_error(call.msg_id, 500, "INTERNAL", time.time())
        finally:
            if not done.done():
                done.set_result(None)
            hosted.running.pop(call.msg_id, None)
            self._schedule_flush(hosted)

    async def _invoke(self, hosted: HostedSession, msg_id: int, query: TLFunction) -> Any:
        key = hosted.key
        conn = hosted.conn
        # Unwrap invokeWithLayer / initConnection / ... remembering what they say.
        while isinstance(query, _WRAPPERS):
            if isinstance(query, fn.InvokeWithLayer):
                await self.auth.set_layer(key.auth_key_id, query.layer)
            elif isinstance(query, fn.InitConnection):
                await self.auth.set_client_info(
                    key.auth_key_id,
                    ClientInfo(
                        api_id=query.api_id,
                        device_model=query.device_model,
                        system_version=query.system_version,
                        app_version=query.app_version,
                        system_lang_code=query.system_lang_code,
                        lang_pack=query.lang_pack,
                        lang_code=query.lang_code,
                        client_ip=conn.client_ip if conn else "",
                    ),
                )
            elif isinstance(query, fn.InvokeWithoutUpdates):
                hosted.mt.no_updates = True
            query = query.query
            if not isinstance(query, TLFunction):
                raise RpcError(400, "INPUT_METHOD_INVALID")
        if isinstance(query, fn.DestroyAuthKey):
            return await self._destroy_auth_key(hosted)
        if isinstance(query, fn.Ping | fn.PingDelayDisconnect):
            # A ping inside invokeWithoutUpdates/invokeWithLayer comes as an RPC.
            if isinstance(query, fn.PingDelayDisconnect) and conn is not None:
                conn.close_after(query.disconnect_delay)
            return types.Pong(msg_id=msg_id, ping_id=query.ping_id)
        route = self.dispatcher.routes.get(type(query))
        if key.is_temp and not key.perm_auth_key_id and not (route and route.allow_unbound_temp):
            # PFS: an unbound temporary key may only call what Telegram allows.
            raise RpcError(401, "AUTH_KEY_PERM_EMPTY")
        if hosted.user_id is None and not hosted.user_checked:
            # Not cached here (another process signed it in, or the entry was
            # dropped): ask the database before refusing.
            await self._look_up_user(hosted)
        if route is None:
            # Telegram answers 401 to every non-auth method before sign-in.
            if hosted.user_id is None:
                raise RpcError(401, "AUTH_KEY_UNREGISTERED")
            route = self.dispatcher.route(query)
        ctx = RequestContext(
            server=self.server,
            auth_key=key,
            session_id=hosted.mt.session_id,
            msg_id=msg_id,
            layer=key.layer,
            client_ip=conn.client_ip if conn else "",
            user_id=hosted.user_id,
            session=hosted,
        )
        if ctx.user_id is None and not route.allow_anonymous:
            raise RpcError(401, "AUTH_KEY_UNREGISTERED")
        return await route.handler(ctx, query)

    async def _look_up_user(self, hosted: HostedSession) -> None:
        lookup = hosted.user_lookup
        if lookup is None:
            lookup = hosted.user_lookup = asyncio.ensure_future(
                self.auth.user_for_key(hosted.key.effective_id)
            )
        try:
            user_id = await asyncio.shield(lookup)
        finally:
            if hosted.user_lookup is lookup and lookup.done():
                hosted.user_lookup = None
        if not hosted.user_checked:  # the first waiter (a sign-in meanwhile wins)
            if user_id is not None:
                self._attach(hosted, user_id)
            hosted.user_checked = True

    async def _destroy_auth_key(self, hosted: HostedSession) -> Any:
        key_id = hosted.key.auth_key_id
        ok = await self.auth.destroy_key(key_id)
        for k in [k for k in self.sessions if k[0] == key_id]:
            s = self.sessions.pop(k)
            self._attach(s, None)
            if s is not hosted and s.conn is not None:
                s.conn.send_transport_error(-404)
        return types.DestroyAuthKeyOk() if ok else types.DestroyAuthKeyNone()

    # ------------------------------------------------------------------- users
    def _attach(self, hosted: HostedSession, user_id: int | None) -> None:
        old = hosted.user_id
        if old is not None:
            peers = self.by_user.get(old)
            if peers is not None:
                peers.discard(hosted)
                if not peers:
                    del self.by_user[old]
        hosted.user_id = user_id
        hosted.user_checked = True
        if user_id is not None:
            self.by_user.setdefault(user_id, set()).add(hosted)
        if old != user_id:
            key_id = hosted.key.effective_id
            if old is not None:
                self._key_routes(old, key_id)
            if user_id is not None:
                self._key_routes(user_id, key_id)

    def _key_routes(self, user_id: int, auth_key_id: int) -> None:
        for listener in self.on_key_routes:
            listener(user_id, auth_key_id)

    def key_connected(self, user_id: int, auth_key_id: int) -> bool:
        """A session of ``user_id`` on ``auth_key_id`` (the effective key) has a live
        connection here now: what split mode announces as the key's route."""
        for hosted in self.by_user.get(user_id, ()):
            conn = hosted.conn
            if hosted.key.effective_id == auth_key_id and conn is not None and not conn.closed:
                return True
        return False

    def connected_keys(self) -> list[tuple[int, int]]:
        """Every (user id, effective auth key id) with a live connection here now."""
        out: set[tuple[int, int]] = set()
        for user_id, sessions in self.by_user.items():
            for hosted in sessions:
                conn = hosted.conn
                if conn is not None and not conn.closed:
                    out.add((user_id, hosted.key.effective_id))
        return list(out)

    def _sessions_of_key(self, auth_key_id: int) -> list[HostedSession]:
        """Sessions on this key, and on temporary keys bound to it."""
        return [s for s in self.sessions.values() if s.key.effective_id == auth_key_id]

    def bind_user(self, auth_key_id: int, user_id: int | None) -> None:
        """A sign-in (or sign-out, None) on a permanent key reaches all its sessions."""
        for hosted in self._sessions_of_key(auth_key_id):
            self._attach(hosted, user_id)

    def revoke_key(self, auth_key_id: int) -> None:
        """The key's authorization was reset: its sessions are signed out at once."""
        self.bind_user(auth_key_id, None)

    # --------------------------------------------- SessionDirectory (directory.py)
    def push_to_key(self, auth_key_id: int, updates: Any) -> None:
        for hosted in self._sessions_of_key(auth_key_id):
            self.push(hosted, codec_for(hosted.key.layer).encode(updates))

    async def online(self, user_id: int) -> bool:
        return bool(self.by_user.get(user_id))

    async def connected_among(self, user_ids: Iterable[int]) -> list[int]:
        return self.connected_among_now(user_ids)

    def connected_among_now(self, user_ids: Iterable[int]) -> list[int]:
        """:meth:`connected_among` without an await (this process's sessions only)."""
        ids = user_ids if isinstance(user_ids, set | frozenset | dict) else set(user_ids)
        online = self.by_user
        if len(online) < len(ids):
            found = [u for u in online if u in ids]
        else:
            found = [u for u in ids if u in online]
        return [u for u in found if self.connected(u)]

    async def key_activity(self, auth_key_id: int) -> tuple[float, str] | None:
        return self.key_activity_now(auth_key_id)

    def key_activity_now(self, auth_key_id: int) -> tuple[float, str] | None:
        """:meth:`key_activity` without an await (this process's sessions only)."""
        last, ip, seen = 0.0, "", False
        for hosted in self._sessions_of_key(auth_key_id):
            seen = True
            last = max(last, hosted.mt.last_seen)
            if hosted.conn is not None and not hosted.conn.closed:
                ip = hosted.conn.client_ip or ip
        return (last, ip) if seen else None

    def connected(self, user_id: int) -> bool:
        """A session of the user has a live connection now (not one kept for resending
        after its connection closed)."""
        for hosted in self.by_user.get(user_id, ()):
            conn = hosted.conn
            if conn is not None and not conn.closed:
                return True
        return False

    def sessions_of_user(self, user_id: int) -> list[HostedSession]:
        return list(self.by_user.get(user_id, ()))

    def push_to_user(
        self,
        user_id: int,
        updates: Any,
        exclude: HostedSession | None = None,
        exclude_key: int | None = None,
    ) -> None:
        """Send an ``Updates`` object to every live session of a user.

        ``exclude_key``: skip the device (auth key, temporary keys included) that
        caused the update; it learns of it from its answer.
        """
        now = time.time()
        for hosted in self.by_user.get(user_id, ()):
            if hosted is exclude or hosted.mt.no_updates:
                continue
            if exclude_key is not None and hosted.key.effective_id == exclude_key:
                continue
            hosted.mt.add_update(codec_for(hosted.key.layer).encode(updates), now)
            self._schedule_flush(hosted)

    # ------------------------------------------------------------------- outbound
    def _schedule_flush(self, hosted: HostedSession) -> None:
        if hosted.flush_scheduled or not hosted.mt.has_output():
            return
        hosted.flush_scheduled = True
        asyncio.get_running_loop().call_soon(self._flush, hosted)

    def _flush(self, hosted: HostedSession) -> None:
        hosted.flush_scheduled = False
        conn = hosted.conn
        if conn is None or conn.closed or not conn.writable:
            return  # kept (content-related ones) until the client comes back
        now = time.time()
        key = hosted.key
        salt = hosted.mt.current_salt(now)
        sid = hosted.mt.session_id
        packets = [
            encrypt_server_message(key.auth_key, key.id_bytes, salt, sid, m.msg_id, m.seqno, m.body)
            for m in hosted.mt.flush(now)
        ]
        if packets:
            conn.send_packets(packets)

    def flush(self, hosted: HostedSession) -> None:
        """Flush now: a transport that holds output back calls this once it can carry it."""
        self._flush(hosted)

    def push(self, hosted: HostedSession, update_body: bytes) -> None:
        """Queue an update for one session (sync service calls this)."""
        if hosted.mt.no_updates:
            return
        hosted.mt.add_update(update_body, time.time())
        self._schedule_flush(hosted)


def _layer_decoder(key: AuthKeyInfo) -> Callable[[bytes], Any]:
    """Looked up per message: the client's first request declares its layer.

    A layer seen in an ``invokeWithLayer`` counts at once for the messages after
    it (a container may carry more requests before ``set_layer`` has stored it).
    """
    declared = 0

    def decode(data: bytes) -> Any:
        nonlocal declared
        obj = codec_for(key.layer or declared).decode(data)
        if isinstance(obj, fn.InvokeWithLayer):
            declared = obj.layer
        return obj

    return decode


def _innermost(query: TLFunction) -> TLFunction:
    while isinstance(query, _WRAPPERS):
        query = query.query
    return query
