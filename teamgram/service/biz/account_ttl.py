"""Accounts that were away longer than their TTL are deleted, as Telegram does.

``account.setAccountTTL`` (30 to 730 days) says how long an account may go
unused before it is deleted. A periodic job looks at accounts idle for at least
the shortest TTL, in bounded batches, and deletes those past their own TTL: the
profile is emptied and marked deleted (others see "Deleted Account"), the phone
number is freed for a new sign-up, and every device is signed out at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from contextlib import suppress

from teamgram.service.authsession.service import ACCOUNT_TTL_MIN_DAYS, AuthSessionService
from teamgram.service.biz.users import UserService
from teamgram.service.status.service import StatusService

log = logging.getLogger(__name__)

DAY = 86400
# How often the job runs, and how many accounts one run may look at.
INTERVAL_SECONDS = 3600
BATCH = 200


class AccountReaper:
    def __init__(
        self,
        users: UserService,
        auth: AuthSessionService,
        status: StatusService,
        signed_out: Callable[[int], None],
        interval: float = INTERVAL_SECONDS,
    ) -> None:
        self.users = users
        self.auth = auth
        self.status = status
        self.signed_out = signed_out  # auth key -> its sessions end (session host)
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.run_once()
            except Exception:
                log.exception("account TTL job failed")

    async def run_once(self, now: int | None = None) -> list[int]:
        """Delete the accounts past their TTL among the longest idle; returns their ids."""
        now = int(time.time()) if now is None else now
        idle = await self.users.idle_since(now - ACCOUNT_TTL_MIN_DAYS * DAY, BATCH)
        deleted: list[int] = []
        for rec in idle:
            if self.status.is_online(rec.id, now):
                continue
            last = max(rec.last_seen_at, rec.created_at)
            if now - last <= await self.auth.get_account_ttl(rec.id) * DAY:
                continue
            keys = await self.auth.unbind_others(rec.id, 0)
            await self.users.delete_account(rec.id)
            for key in keys:
                self.signed_out(key)
            log.info("account %d deleted after %d idle days", rec.id, (now - last) // DAY)
            deleted.append(rec.id)
        return deleted
