"""Login codes: phone numbers, code choice, delivery, and the authsession rules
around them (expiry, attempts, flood windows) with an injected clock."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from teamgram.config import AuthConfig
from teamgram.errors import RpcError
from teamgram.infra.database import open_database
from teamgram.service.authsession.codes import (
    CodeDelivery,
    choose_code,
    codes_match,
    fixed_test_code,
    new_code,
    normalize_phone,
)
from teamgram.service.authsession.service import AuthKeyInfo, AuthSessionService, ClientInfo
from teamgram.service.authsession.tables import KEY_TEMP

# --------------------------------------------------------------------------- phones


@pytest.mark.parametrize(
    ("raw", "phone"),
    [
        ("15550100001", "15550100001"),
        ("+1 555 010 0001", "15550100001"),
        ("+1 (555) 010-0001", "15550100001"),
        ("+44\t20-7946-0958", "442079460958"),
        ("12345", "12345"),
        ("123456789012345", "123456789012345"),
    ],
)
def test_normalize_phone(raw: str, phone: str) -> None:
    assert normalize_phone(raw) == phone


@pytest.mark.parametrize(
    "raw",
    ["", "+", "1234", "1234567890123456", "555-CALL", "12a45", "١٢٣٤٥٦", "+1 555.010.0001"],
)
def test_invalid_phones(raw: str) -> None:
    with pytest.raises(RpcError) as info:
        normalize_phone(raw)
    assert (info.value.code, info.value.message) == (400, "PHONE_NUMBER_INVALID")


# --------------------------------------------------------------------------- codes


def test_test_numbers_have_fixed_codes() -> None:
    assert fixed_test_code("9996621234") == "22222"
    assert fixed_test_code("9996600000") == "00000"
    assert fixed_test_code("99966212345") is None  # one digit too many
    assert fixed_test_code("15550100001") is None


def test_code_choice() -> None:
    assert choose_code("9996631234", length=5) == "33333"
    assert choose_code("9996631234", length=5, dev_login_code="11111") == "33333"
    assert choose_code("9996631234", length=5, test_numbers=False, dev_login_code="1") == "1"
    assert choose_code("15550100001", length=5, dev_login_code="424242") == "424242"
    code = choose_code("15550100001", length=6)
    assert len(code) == 6 and code.isdigit()


def test_random_codes_are_digits_and_vary() -> None:
    codes = {new_code(5) for _ in range(200)}
    assert all(len(c) == 5 and c.isdigit() for c in codes)
    assert len(codes) > 150
    # Leading zeros are codes like any other.
    assert any(c.startswith("0") for c in (new_code(1) for _ in range(200)))


def test_codes_match() -> None:
    assert codes_match("12345", "12345")
    assert codes_match("12345", " 12345 ")
    assert not codes_match("12345", "12346")
    assert not codes_match("12345", "1234")
    assert not codes_match("12345", "")


# --------------------------------------------------------------------------- delivery


def _config(**kw: object) -> AuthConfig:
    cfg = AuthConfig()
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


async def test_delivery_logs_one_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="teamgram")
    delivery = CodeDelivery(_config())
    delivery.deliver("15550100001", "54321")
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("teamgram")]
    assert lines == ["login code for +15550100001: 54321"]
    await delivery.close()


async def test_command_gets_phone_and_code_in_env(tmp_path: Path) -> None:
    out = tmp_path / "sent.txt"
    cmd = f'printf "%s %s" "$TEAMGRAM_LOGIN_PHONE" "$TEAMGRAM_LOGIN_CODE" > {out}'
    delivery = CodeDelivery(_config(code_command=cmd))
    delivery.deliver("15550100001", "'; rm -rf / #")
    await asyncio.wait_for(delivery.drain(), 10)
    assert out.read_text() == "15550100001 '; rm -rf / #"


async def test_slow_or_failing_command_never_blocks(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="teamgram")
    slow = CodeDelivery(_config(code_command="sleep 30", code_delivery_timeout_seconds=1))
    started = time.monotonic()
    slow.deliver("15550100001", "11111")
    assert time.monotonic() - started < 0.5
    await asyncio.wait_for(slow.drain(), 10)
    failing = CodeDelivery(_config(code_command="echo no gateway >&2; exit 3"))
    failing.deliver("15550100002", "22222")
    await asyncio.wait_for(failing.drain(), 10)
    messages = [r.getMessage() for r in caplog.records]
    assert any("killed after 1s" in m and "15550100001" in m for m in messages)
    assert any("exited with 3: no gateway" in m for m in messages)


async def test_close_stops_deliveries_in_flight() -> None:
    delivery = CodeDelivery(_config(code_command="sleep 30", code_delivery_timeout_seconds=60))
    delivery.deliver("15550100001", "11111")
    await asyncio.sleep(0.1)
    await asyncio.wait_for(delivery.close(), 5)


@pytest.fixture
async def webhook() -> AsyncIterator[tuple[str, list[dict[str, str]]]]:
    received: list[dict[str, str]] = []

    async def handle(request: web.Request) -> web.Response:
        received.append(json.loads(await request.read()))
        return web.Response(status=204 if request.path == "/ok" else 500)

    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}", received
    finally:
        await runner.cleanup()


async def test_webhook_gets_json(
    webhook: tuple[str, list[dict[str, str]]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="teamgram")
    url, received = webhook
    delivery = CodeDelivery(_config(code_webhook=f"{url}/ok"))
    delivery.deliver("15550100001", "13579")
    await asyncio.wait_for(delivery.drain(), 10)
    assert received == [{"phone": "15550100001", "code": "13579"}]
    assert not caplog.records

    bad = CodeDelivery(_config(code_webhook=f"{url}/broken"))
    bad.deliver("15550100002", "24680")
    await asyncio.wait_for(bad.drain(), 10)
    assert any("answered HTTP 500" in r.getMessage() for r in caplog.records)


async def test_unreachable_webhook_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="teamgram")
    delivery = CodeDelivery(_config(code_webhook="http://127.0.0.1:9/", code_command=""))
    delivery.deliver("15550100001", "11111")
    await asyncio.wait_for(delivery.drain(), 15)
    assert any("code_webhook for +15550100001 failed" in r.getMessage() for r in caplog.records)


async def test_in_app_hook() -> None:
    delivery = CodeDelivery(_config())
    assert not await delivery.deliver_in_app(1, "15550100001", "11111")
    seen: list[tuple[int, str, str]] = []

    async def send(user_id: int, phone: str, code: str) -> bool:
        seen.append((user_id, phone, code))
        return True

    delivery.in_app = send
    assert await delivery.deliver_in_app(7, "15550100001", "11111")
    assert seen == [(7, "15550100001", "11111")]

    async def broken(user_id: int, phone: str, code: str) -> bool:
        raise RuntimeError("no messaging yet")

    delivery.in_app = broken
    assert not await delivery.deliver_in_app(7, "15550100001", "11111")


# --------------------------------------------------------------------------- service rules


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[AuthSessionService]:
    engine = await open_database(f"sqlite+aiosqlite:///{tmp_path / 'auth.db'}")
    cfg = _config(
        code_ttl_seconds=300,
        max_code_attempts=3,
        failure_window_seconds=600,
        failure_flood_wait_seconds=900,
        send_code_per_phone=2,
        send_code_per_ip=5,
        send_window_seconds=3600,
    )
    svc = AuthSessionService(engine, cfg, dev_login_code="55555")
    try:
        yield svc
    finally:
        await svc.close()
        await engine.dispose()


def _error(exc: pytest.ExceptionInfo[RpcError]) -> str:
    return exc.value.message


async def test_code_lifetime(service: AuthSessionService) -> None:
    t = 1_000_000
    rec = await service.send_code("15550100001", 1, "10.0.0.1", now=t)
    assert rec.code == "55555" and rec.expires_at == t + 300
    got = await service.check_code("15550100001", rec.phone_code_hash, "55555", 1, now=t + 299)
    assert got.phone_code_hash == rec.phone_code_hash
    with pytest.raises(RpcError) as info:
        await service.check_code("15550100001", rec.phone_code_hash, "55555", 1, now=t + 300)
    assert _error(info) == "PHONE_CODE_EXPIRED"
    with pytest.raises(RpcError) as info:
        await service.check_code("15550100001", "", "55555", 1, now=t)
    assert _error(info) == "PHONE_CODE_HASH_EMPTY"


async def test_failures_block_then_the_window_restarts(service: AuthSessionService) -> None:
    t = 2_000_000
    phone = "15550100001"
    rec = await service.send_code(phone, 1, now=t)
    for i in range(2):
        with pytest.raises(RpcError) as info:
            await service.check_code(phone, rec.phone_code_hash, "00000", 1, now=t + i)
        assert _error(info) == "PHONE_CODE_INVALID"
    with pytest.raises(RpcError) as info:
        await service.check_code(phone, rec.phone_code_hash, "00000", 1, now=t + 2)
    assert (info.value.code, _error(info)) == (420, "FLOOD_WAIT_900")
    # Still blocked, with the time left.
    with pytest.raises(RpcError) as info:
        await service.send_code(phone, 1, now=t + 102)
    assert _error(info) == "FLOOD_WAIT_800"
    # After the block: a fresh budget and a new code (the old one was burned).
    rec2 = await service.send_code(phone, 1, now=t + 903)
    with pytest.raises(RpcError) as info:
        await service.check_code(phone, rec.phone_code_hash, "55555", 1, now=t + 903)
    assert _error(info) == "PHONE_CODE_EXPIRED"
    await service.check_code(phone, rec2.phone_code_hash, "55555", 1, now=t + 904)


async def test_failures_outside_the_window_do_not_add_up(service: AuthSessionService) -> None:
    t = 3_000_000
    phone = "15550100001"
    for start in (t, t + 601, t + 1202):  # two failures per 600 s window
        rec = await service.send_code(phone, 1, now=start)
        for i in range(2):
            with pytest.raises(RpcError) as info:
                await service.check_code(phone, rec.phone_code_hash, "0", 1, now=start + i)
            assert _error(info) == "PHONE_CODE_INVALID"
        service.config.send_code_per_phone = 100
    # A right code clears the count.
    rec = await service.send_code(phone, 1, now=t + 1203)
    await service.check_code(phone, rec.phone_code_hash, "55555", 1, now=t + 1203)


async def test_send_limits_per_phone_and_address(service: AuthSessionService) -> None:
    t = 4_000_000
    await service.send_code("15550100001", 1, "10.0.0.1", now=t)
    await service.send_code("15550100001", 2, "10.0.0.2", now=t + 1)
    with pytest.raises(RpcError) as info:
        await service.send_code("15550100001", 3, "10.0.0.3", now=t + 10)
    assert _error(info) == "FLOOD_WAIT_3590"
    await service.send_code("15550100001", 3, "10.0.0.3", now=t + 3600)  # a new window
    for i in range(5):
        await service.send_code(f"1555020000{i}", 1, "10.0.0.9", now=t + i)
    with pytest.raises(RpcError) as info:
        await service.send_code("15550200009", 1, "10.0.0.9", now=t + 5)
    assert _error(info).startswith("FLOOD_WAIT_")


async def test_codes_belong_to_their_key_and_phone(service: AuthSessionService) -> None:
    t = 5_000_000
    rec = await service.send_code("15550100001", 1, now=t)
    for phone, key in (("15550100002", 1), ("15550100001", 2)):
        with pytest.raises(RpcError) as info:
            await service.check_code(phone, rec.phone_code_hash, "55555", key, now=t)
        assert _error(info) == "PHONE_CODE_EXPIRED"
    assert not await service.cancel_code("15550100001", rec.phone_code_hash, 2)
    assert await service.cancel_code("15550100001", rec.phone_code_hash, 1)
    with pytest.raises(RpcError) as info:
        await service.check_code("15550100001", rec.phone_code_hash, "55555", 1, now=t)
    assert _error(info) == "PHONE_CODE_EXPIRED"


async def test_sign_up_needs_a_verified_code(service: AuthSessionService) -> None:
    t = int(time.time())
    rec = await service.send_code("15550100001", 1, now=t)
    with pytest.raises(RpcError) as info:
        await service.verified_code("15550100001", rec.phone_code_hash, 1, now=t)
    assert _error(info) == "PHONE_CODE_INVALID"
    await service.check_code("15550100001", rec.phone_code_hash, "55555", 1, now=t)
    await service.mark_code_verified(rec.phone_code_hash)
    assert (await service.verified_code("15550100001", rec.phone_code_hash, 1, now=t)).verified
    await service.consume_code(rec.phone_code_hash)
    with pytest.raises(RpcError) as info:
        await service.verified_code("15550100001", rec.phone_code_hash, 1, now=t)
    assert _error(info) == "PHONE_CODE_EXPIRED"


async def test_password_pending_key_is_signed_out(service: AuthSessionService) -> None:
    await service.bind_user(10, 777, password_pending=True)
    assert await service.user_for_key(10) is None
    assert await service.pending_password_user(10) == 777
    assert await service.confirm_password(10) == 777
    assert await service.user_for_key(10) == 777
    assert await service.pending_password_user(10) is None
    assert await service.confirm_password(10) is None


async def test_device_info_of_a_pfs_client_lands_on_its_permanent_key(
    service: AuthSessionService,
) -> None:
    """account.getAuthorizations lists permanent keys; PFS clients speak on temp keys."""
    perm = AuthKeyInfo(auth_key_id=1001, auth_key=b"\x01" * 256)
    temp = AuthKeyInfo(auth_key_id=1002, auth_key=b"\x02" * 256, key_type=KEY_TEMP)
    assert await service.create_key(perm) and await service.create_key(temp)
    # initConnection wrapped around bindTempAuthKey: the info arrives before the binding.
    await service.set_client_info(1002, ClientInfo(api_id=7, device_model="Pixel"))
    await service.bind_temp_key(1002, 1001, int(time.time()) + 3600)
    got = await service.get_client_info(1001)
    assert got is not None and (got.api_id, got.device_model) == (7, "Pixel")
    # Later initConnections on the bound temp key update the permanent key too.
    await service.set_client_info(1002, ClientInfo(api_id=7, device_model="Pixel 2"))
    got = await service.get_client_info(1001)
    assert got is not None and got.device_model == "Pixel 2"


async def test_destroyed_key_leaves_no_device_behind(service: AuthSessionService) -> None:
    assert await service.create_key(AuthKeyInfo(auth_key_id=2001, auth_key=b"\x03" * 256))
    await service.bind_user(2001, 900)
    assert [a.auth_key_id for a in await service.authorizations_of(900)] == [2001]
    assert await service.destroy_key(2001)
    assert await service.authorizations_of(900) == []
    assert await service.user_for_key(2001) is None
