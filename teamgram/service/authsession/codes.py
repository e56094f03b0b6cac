"""Login codes: phone numbers, the codes themselves, and how they reach the user.

A code is random digits (``auth.code_length``, 5 by default) unless the operator
set ``dev_login_code`` (every code is that value: development and tests), or the
phone is one of Telegram's test numbers ``99966XYYYY`` (the code is X five times,
so test scripts written for Telegram's test DCs work unchanged).

Delivery always writes one INFO line with phone and code to the server log (so a
self-hosted server works with no SMS gateway), then, in the background, runs the
operator's ``code_command`` and POSTs to ``code_webhook``. A failed or slow
delivery is logged and never delays or fails the client's ``auth.sendCode``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import re
import secrets
import signal
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import aiohttp

from teamgram.config import AuthConfig
from teamgram.errors import RpcError

log = logging.getLogger(__name__)

PHONE_MIN_DIGITS = 5
PHONE_MAX_DIGITS = 15  # E.164
TEST_PHONE = re.compile(r"99966(\d)\d{4}")
TEST_CODE_REPEAT = 5
# Separators people (and GramJS's leading "+") put in a phone number.
_PHONE_SEPARATORS = str.maketrans("", "", "+ -()\t")

# Environment variables the code command gets (never interpolated into the command).
ENV_PHONE = "TEAMGRAM_LOGIN_PHONE"
ENV_CODE = "TEAMGRAM_LOGIN_CODE"

# (user_id, phone, code) -> True if the code reached the account's signed-in devices.
InAppSender = Callable[[int, str, str], Awaitable[bool]]


def normalize_phone(raw: str) -> str:
    """Digits only, as stored: ``+1 (555) 010-99`` -> ``155501099``; else PHONE_NUMBER_INVALID."""
    phone = raw.translate(_PHONE_SEPARATORS)
    if not (phone.isascii() and phone.isdigit()):
        raise RpcError(400, "PHONE_NUMBER_INVALID")
    if not PHONE_MIN_DIGITS <= len(phone) <= PHONE_MAX_DIGITS:
        raise RpcError(400, "PHONE_NUMBER_INVALID")
    return phone


def fixed_test_code(phone: str) -> str | None:
    """The fixed code of a Telegram test number (99966XYYYY -> XXXXX), else None."""
    m = TEST_PHONE.fullmatch(phone)
    return m.group(1) * TEST_CODE_REPEAT if m else None


def new_code(length: int) -> str:
    """Uniformly random digits from the OS CSPRNG (a guessable code is a stolen account)."""
    return "".join(secrets.choice("0123456789") for _ in range(max(1, length)))


def choose_code(
    phone: str, *, length: int, dev_login_code: str = "", test_numbers: bool = True
) -> str:
    """The code to issue for ``phone`` under this configuration."""
    if test_numbers:
        fixed = fixed_test_code(phone)
        if fixed is not None:
            return fixed
    return dev_login_code or new_code(length)


def codes_match(expected: str, given: str) -> bool:
    """Constant-time comparison: the check must not leak how many digits were right."""
    return hmac.compare_digest(expected.encode(), given.strip().encode())


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


class CodeDelivery:
    """Sends codes out: the log at once, command and webhook in background tasks."""

    def __init__(self, config: AuthConfig) -> None:
        self.config = config
        # Set by the server to msg's ServiceNotices.login_code: the code as a
        # message from the service user 777000 to the account's signed-in devices
        # (Telegram's sentCodeTypeApp). Unset (or no device signed in): the log /
        # command / webhook only, and sendCode answers sentCodeTypeSms.
        self.in_app: InAppSender | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def deliver_in_app(self, user_id: int, phone: str, code: str) -> bool:
        """Hook for delivery inside Telegram (from 777000); False while there is none.

        Called by auth.sendCode for a phone that already has an account.
        """
        if self.in_app is None:
            return False
        try:
            return await self.in_app(user_id, phone, code)
        except Exception:
            log.exception("in-app delivery of the login code for +%s failed", phone)
            return False

    def deliver(self, phone: str, code: str) -> None:
        """Log the code and start the configured deliveries; returns at once."""
        log.info("login code for +%s: %s", phone, code)
        if self.config.code_command:
            self._spawn(self._run_command(phone, code))
        if self.config.code_webhook:
            self._spawn(self._post_webhook(phone, code))

    async def close(self) -> None:
        """Stop deliveries still running (server shutdown)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def drain(self) -> None:
        """Wait for deliveries in flight (tests)."""
        await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_command(self, phone: str, code: str) -> None:
        env = {**os.environ, ENV_PHONE: phone, ENV_CODE: code}
        timeout = self.config.code_delivery_timeout_seconds
        try:
            # Its own process group: a timeout kills what the command started too
            # (a child left holding stderr would keep it "running").
            proc = await asyncio.create_subprocess_shell(
                self.config.code_command,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            log.warning("code_command for +%s could not start: %s", phone, exc)
            return
        try:
            _, err = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            _kill_group(proc.pid)
            await proc.wait()
            log.warning("code_command for +%s killed after %ss", phone, timeout)
            return
        except asyncio.CancelledError:
            _kill_group(proc.pid)
            await proc.wait()  # reaped while the loop runs (shutdown waits for this)
            raise
        if proc.returncode != 0:
            log.warning(
                "code_command for +%s exited with %s: %s",
                phone,
                proc.returncode,
                err.decode(errors="replace").strip()[:500],
            )

    async def _post_webhook(self, phone: str, code: str) -> None:
        timeout = aiohttp.ClientTimeout(total=self.config.code_delivery_timeout_seconds)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as http,
                http.post(self.config.code_webhook, json={"phone": phone, "code": code}) as resp,
            ):
                if resp.status >= 300:
                    log.warning("code_webhook for +%s answered HTTP %s", phone, resp.status)
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            log.warning("code_webhook for +%s failed: %s", phone, str(exc) or type(exc).__name__)
