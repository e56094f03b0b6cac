"""status: who is online, and telling their contacts when that changes.

Online state lives in memory; in split mode each process tells the others its
users' changes over the cache-invalidation bus (topic ``presence``, keys
``"<user>:<expires>"``), so a user's status reads the same on every edge, and a
user is offline only once no edge holds a connection of theirs.
``account.updateStatus(offline=false)`` makes a user online for
:data:`ONLINE_TTL` seconds (clients repeat it every few minutes), and
``offline=true``, the last connection closing, or the time running out makes
them offline. Going offline writes the time to the user's row (last seen), so it
survives a restart.

Each change is pushed as ``updateUserStatus`` (in ``updateShort``) to users who
have this user as a contact and may see the exact status; a rounded view
("recently") does not change when the user comes and goes, so nothing is sent
to those who see one (that would leak it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from teamgram.service.biz.contacts import ContactService
from teamgram.service.biz.users import UserService
from teamgram.tl import TLObject, types

if TYPE_CHECKING:
    from teamgram.infra.invalidation import Invalidations

log = logging.getLogger(__name__)
PRESENCE_TOPIC = "presence"

# Telegram's online_cloud_timeout: online this long after the last update.
ONLINE_TTL = 300

Push = Callable[[int, TLObject], None]


class StatusService:
    def __init__(self, users: UserService, contacts: ContactService, push: Push) -> None:
        self.users = users
        self.contacts = contacts
        self.push = push  # (user_id, Updates): to every live session of the user
        self._online: dict[int, int] = {}  # user -> unix time online expires
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._bus: Invalidations | None = None

    def share(self, bus: Invalidations) -> None:
        """Split mode: send this process's presence changes to the others, and
        apply theirs (no announcements: the process that saw the change sends them)."""
        self._bus = bus
        bus.subscribe(PRESENCE_TOPIC, self._heard)

    def _heard(self, keys: list[Any] | None) -> None:
        for key in keys or ():
            user, _, expires = str(key).partition(":")
            with contextlib.suppress(ValueError):
                if int(expires):
                    self._online[int(user)] = int(expires)
                else:
                    self._online.pop(int(user), None)

    def _tell(self, user_id: int, expires: int) -> None:
        if self._bus is not None:
            self._bus.publish(PRESENCE_TOPIC, [f"{user_id}:{expires}"])

    def online_until(self, user_id: int) -> int:
        return self._online.get(user_id, 0)

    def is_online(self, user_id: int, now: float | None = None) -> bool:
        return self._online.get(user_id, 0) > (now or time.time())

    async def set_online(self, user_id: int) -> None:
        """The user is active: online for ONLINE_TTL more seconds."""
        now = int(time.time())
        was_online = self.is_online(user_id, now)
        self._online[user_id] = now + ONLINE_TTL
        self._tell(user_id, now + ONLINE_TTL)
        self._arm_timer(user_id)
        if not was_online:
            await self.announce(user_id)

    async def set_offline(self, user_id: int, when: int | None = None) -> None:
        """The user left (or stopped updating): last seen ``when`` (default now)."""
        now = int(time.time())
        expires = self._online.pop(user_id, 0)
        self._tell(user_id, 0)
        timer = self._timers.pop(user_id, None)
        if timer is not None:
            timer.cancel()
        await self.users.set_last_seen(user_id, min(when or now, now))
        if expires:  # contacts saw "online" (or it just ran out): now they see last seen
            await self.announce(user_id)

    def on_user_offline(self, user_id: int) -> None:
        """The user's last open connection closed (split mode: on every edge, as the
        RouteRecorder hears it; otherwise the session host)."""
        self._spawn(self.set_offline(user_id))

    def _arm_timer(self, user_id: int) -> None:
        old = self._timers.pop(user_id, None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()
        self._timers[user_id] = loop.call_later(ONLINE_TTL + 1, self._expired, user_id)

    def _expired(self, user_id: int) -> None:
        self._timers.pop(user_id, None)
        expires = self._online.get(user_id, 0)
        if expires and expires <= time.time():
            self._spawn(self.set_offline(user_id, when=expires))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("status update failed", exc_info=task.exception())

    async def announce(self, user_id: int, exact_only: bool = True) -> None:
        """Push the user's status, as each contact-holder sees it, to them.

        ``exact_only=False`` (after a privacy change) sends rounded views too: there
        the view itself changed.
        """
        watchers = await self.contacts.owners_having(user_id)
        if not watchers:
            return
        now = int(time.time())
        for viewer, (status, exact) in (await self.users.status_views(user_id, watchers)).items():
            if exact or not exact_only:
                update = types.UpdateUserStatus(user_id=user_id, status=status)
                self.push(viewer, types.UpdateShort(update=update, date=now))

    async def close(self, timeout: float = 5.0) -> None:
        """Stop the timers; let pending last-seen writes finish (the server is stopping)."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        pending = list(self._tasks)
        if pending:
            _done, late = await asyncio.wait(pending, timeout=timeout)
            for task in late:
                task.cancel()
