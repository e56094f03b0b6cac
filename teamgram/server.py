"""The all-in-one server: builds every service on the embedded default and runs it.

:class:`Server` hands each part what it depends on (as Synapse's HomeServer does),
so tests build the same graph against a temporary data directory.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from contextlib import suppress
from pathlib import Path
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from teamgram import split
from teamgram.bff import account as bff_account
from teamgram.bff import auth as bff_auth
from teamgram.bff import channels as bff_channels
from teamgram.bff import chats as bff_chats
from teamgram.bff import contacts as bff_contacts
from teamgram.bff import dialogs as bff_dialogs
from teamgram.bff import drafts as bff_drafts
from teamgram.bff import help as bff_help
from teamgram.bff import langpack as bff_langpack
from teamgram.bff import media as bff_media
from teamgram.bff import messages as bff_messages
from teamgram.bff import photos as bff_photos
from teamgram.bff import stickers as bff_stickers
from teamgram.bff import updates as bff_updates
from teamgram.bff import upload as bff_upload
from teamgram.bff import users as bff_users
from teamgram.bff.rpc import Dispatcher
from teamgram.config import ServerConfig
from teamgram.infra.database import DatabaseError, open_database
from teamgram.infra.group_commit import GroupCommit
from teamgram.infra.ratelimit import TokenBuckets
from teamgram.interface.gnetway.gateway import Gateway
from teamgram.interface.httpserver.server import HttpServer
from teamgram.interface.session.directory import SessionDirectory
from teamgram.interface.session.host import SessionHost
from teamgram.messenger.msg.channel import ChannelMessages
from teamgram.messenger.msg.notices import ServiceNotices
from teamgram.messenger.msg.service import MsgService
from teamgram.messenger.sync.channel import ChannelSync
from teamgram.messenger.sync.service import SyncService
from teamgram.mtproto.crypto.rsa import ServerKey, load_or_create_server_key
from teamgram.service.authsession.service import AuthSessionService
from teamgram.service.biz.account_ttl import AccountReaper
from teamgram.service.biz.channel import ChannelService
from teamgram.service.biz.chat import ChatService
from teamgram.service.biz.contacts import ContactService
from teamgram.service.biz.dialog import DialogService
from teamgram.service.biz.privacy import PrivacyService
from teamgram.service.biz.users import UserService, load_secret
from teamgram.service.dfs import ObjectStore, UploadService, open_store
from teamgram.service.idgen.service import IdGenService
from teamgram.service.media.service import MediaService
from teamgram.service.status.service import StatusService
from teamgram.tl import types

log = logging.getLogger("teamgram")

ROUTERS = (
    bff_auth.router,
    bff_help.router,
    bff_langpack.router,
    bff_stickers.router,
    bff_users.router,
    bff_account.router,
    bff_contacts.router,
    bff_updates.router,
    bff_messages.router,
    bff_dialogs.router,
    bff_drafts.router,
    bff_upload.router,
    bff_photos.router,
    bff_media.router,
    bff_chats.router,
    bff_channels.router,
)


class Server:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.engine: AsyncEngine | None = None
        self.server_keys: list[ServerKey] = []
        self.authsession: AuthSessionService
        self.idgen: IdGenService
        self.users: UserService
        self.contacts: ContactService
        self.privacy: PrivacyService
        self.status: StatusService
        self.writer: GroupCommit
        self.sync: SyncService
        self.dialogs: DialogService
        self.chats: ChatService
        self.msg: MsgService
        self.channels: ChannelService
        self.channel_sync: ChannelSync
        self.channel_msgs: ChannelMessages
        # (channel, user) -> when they last sent (supergroup slow mode).
        self.slowmode: dict[tuple[int, int], float] = {}
        # (member, channel, user ids) -> (until, channel version, (users, chats)):
        # the views a channel push carries, reused for a second (bff/channels.py).
        self.channel_views: dict[tuple[int, int, tuple[int, ...]], Any] = {}
        self.send_flood: TokenBuckets
        self.notices: ServiceNotices
        self.reaper: AccountReaper
        self.store: ObjectStore | None = None
        self.uploads: UploadService
        self.media: MediaService
        self.session_host: SessionHost
        # What services use of the session layer (the host itself, in one process).
        self.sessions: SessionDirectory
        self.gateway: Gateway | None = None
        self.http: HttpServer | None = None
        # Split mode (#9): what this process runs, and its cross-process parts.
        self.plan: split.ProcessPlan | None = None
        self.split: split.SplitParts | None = None

    async def start(self) -> None:
        cfg = self.config
        if cfg.cluster.enabled:
            self.plan = split.plan(cfg.cluster.services)
            split.check_engines(cfg.cluster, cfg.database_url)
        # Several processes write the same database: counters are read under row
        # locks instead of cached (see teamgram/messenger/msg/box_ids.py).
        shared = self.plan is not None
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        self.server_keys = await asyncio.to_thread(
            lambda: [load_or_create_server_key(cfg.data_dir / name) for name in cfg.rsa_keys]
        )
        self.engine = await open_database(cfg.database_url)
        self.authsession = AuthSessionService(self.engine, cfg.auth, cfg.dev_login_code)
        self.idgen = IdGenService(self.engine)
        self.users = UserService(self.engine, self.idgen, load_secret(cfg.data_dir))
        self.contacts = ContactService(self.engine)
        self.privacy = PrivacyService(self.engine)
        self.session_host = SessionHost(self, Dispatcher(*ROUTERS))
        self.sessions = self.session_host
        # Through self.sessions at call time: split mode replaces it below.
        self.status = StatusService(
            self.users,
            self.contacts,
            lambda user, updates, *a, **kw: self.sessions.push_to_user(user, updates, *a, **kw),
        )
        self.users.plug(contacts=self.contacts, privacy=self.privacy, presence=self.status)
        self.session_host.on_user_offline.append(self.status.on_user_offline)
        self.reaper = AccountReaper(
            self.users, self.authsession, self.status, lambda key: self.sessions.revoke_key(key)
        )
        jobs = self.plan is None or self.plan.sync  # periodic jobs: once per cluster
        if jobs:
            self.reaper.start()
        self.writer = GroupCommit(self.engine, shared=shared)
        self.writer.start()
        self.sync = SyncService(self.engine, self._push_update, shared=shared)
        if jobs:
            self.sync.start_retention(cfg.messages.update_log_days)
        self.dialogs = DialogService(self.engine)
        self.msg = MsgService(self.engine, self.writer, self.sync, self.dialogs, shared=shared)
        self.chats = ChatService(self.engine, cfg.dc_id)
        self.msg.chat_members = self._chat_members
        self.msg.chat_view = self._chat_view
        self.msg.chat_is_admin = self._chat_is_admin
        self.channels = ChannelService(
            self.engine, load_secret(cfg.data_dir, "channel_access_secret"), cfg.dc_id
        )
        self.channels.username_taken_by_user = self._user_has_username
        self.chats.channel_hash = self.channels.access_hash
        self.users.username_taken_elsewhere = self._channel_has_username
        self.channel_sync = ChannelSync(self.engine, shared=shared)
        self.sync.channels = self.channel_sync
        self.channel_msgs = ChannelMessages(
            self.engine, self.writer, self.sync, self.channel_sync, self.dialogs, shared=shared
        )
        self.send_flood = TokenBuckets(cfg.messages.send_per_second, cfg.messages.send_burst)
        self.notices = ServiceNotices(self.msg, self.users, self.authsession)
        self.authsession.delivery.in_app = self.notices.login_code
        files = cfg.files
        self.store = await open_store(files, cfg.data_dir)
        self.uploads = UploadService(
            Path(files.upload_dir) if files.upload_dir else cfg.data_dir / "uploads",
            files.max_file_size,
            files.upload_ttl_seconds,
        )
        self.uploads.start()
        self.media = MediaService(
            self.engine,
            self.store,
            self.uploads,
            load_secret(cfg.data_dir, "file_reference_secret"),
            cfg.dc_id,
            files.file_reference_ttl_seconds,
        )
        self.media.can_see_message_media = self.can_see_media
        self.msg.media_hook = self.media.refresh
        self.channel_msgs.media_hook = self.media.refresh
        self.users.dc_id = cfg.dc_id
        self.users.photo_of = self._profile_photo
        if self.plan is not None:
            self.split = await split.start_parts(self, self.plan)
        self.session_host.start()
        plan = self.plan
        if plan is None or plan.edge:
            # The gateway object also admits HTTP connections (per-address limits).
            self.gateway = Gateway(
                cfg.gnetway, self.server_keys, self.session_host, self.authsession
            )
            if plan is None or plan.gateway:
                await self.gateway.start()
        if plan is None or plan.http:
            self.http = HttpServer(cfg.httpserver, self)
            await self.http.start()
        key = self.server_keys[0]
        gw, http = self.gateway, self.http
        log.info(
            "ready: %s tcp %s, websocket %s%s, http %s, dc %d advertised at %s, "
            "key fingerprint %d, pid %d",
            ",".join(cfg.cluster.services) if plan else "all services,",
            ",".join(map(str, gw.tcp_ports)) if gw and gw.tcp_ports else "-",
            gw.ws_port if gw and gw.tcp_ports else "-",
            cfg.gnetway.ws_path,
            http.port if http else "-",
            cfg.dc_id,
            cfg.advertised_host,
            key.fingerprint,
            os.getpid(),
        )

    def _push_update(self, user_id: int, updates: Any, exclude_key: int | None) -> None:
        """Where sync sends what it committed: this process's sessions, or (split
        mode) the pipeline or the session processes holding the user's keys."""
        if self.split is not None:
            self.split.push(user_id, updates, exclude_key)
        else:
            self.session_host.push_to_user(user_id, updates, exclude_key=exclude_key)

    async def _chat_members(self, chat_id: int) -> list[int]:
        chat = await self.chats.get(chat_id)
        return list(chat.members) if chat is not None else []

    def _chat_view(self, chat_id: int, viewer_id: int) -> Any:
        chat = self.chats.cached(chat_id)
        return chat.chat_for(viewer_id) if chat is not None else types.ChatEmpty(id=chat_id)

    def _chat_is_admin(self, chat_id: int, user_id: int) -> bool:
        chat = self.chats.cached(chat_id)
        return chat is not None and chat.is_admin(user_id)

    async def _user_has_username(self, name: str) -> bool:
        return await self.users.by_username(name) is not None

    async def _channel_has_username(self, name: str) -> bool:
        return await self.channels.by_username(name) is not None

    async def can_see_media(self, user_id: int, media_id: int) -> bool:
        """In the user's box, or in a channel the user may read."""
        if await self.msg.has_media(user_id, media_id):
            return True
        for channel_id in await self.channel_msgs.channels_with_media(media_id):
            rec = await self.channels.get(channel_id)
            if rec is not None and rec.readable_by(user_id):
                return True
        return False

    async def _profile_photo(self, photo_id: int) -> Any:
        rec = await self.media.photo(photo_id)
        return self.media.photo_tl(rec) if rec is not None else None

    async def stop(self) -> None:
        if self.gateway is not None:
            with suppress(Exception):
                await self.gateway.stop()
        if self.http is not None:
            with suppress(Exception):
                await self.http.stop()
        with suppress(Exception):
            await self.session_host.stop()
        if self.split is not None:
            with suppress(Exception):
                await self.split.close()
        with suppress(Exception):
            await self.reaper.stop()
        with suppress(Exception):
            await self.status.close()
        with suppress(Exception):
            await self.writer.stop()
        with suppress(Exception):
            await self.sync.stop()
        with suppress(Exception):
            await self.uploads.stop()
        if self.store is not None:
            with suppress(Exception):
                await self.store.close()
        with suppress(Exception):
            await self.authsession.close()
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
    except (OSError, SQLAlchemyError, DatabaseError, ValueError, RuntimeError) as exc:
        # (split.PlanError is a ValueError: a topology that cannot run.)
        log.error("cannot start: %s", exc)
        await server.stop()
        return 1
    await stop.wait()
    log.info("stopping")
    await asyncio.wait_for(server.stop(), timeout=10)
    log.info("stopped")
    return 0
