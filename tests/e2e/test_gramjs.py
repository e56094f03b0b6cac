"""GramJS (npm ``telegram`` 2.26.22, layer 198) against the server, with a Telethon user.

A Node.js driver (``tests/node/gramjs_driver.js``) runs GramJS and takes JSON-line
commands on stdin; it answers, and reports every request GramJS sends, every
message it receives and its log lines, on stdout. Each test signs a new phone
number up with the dev login code (GramJS sends it with a leading ``+``), over TCP
(``ConnectionTCPFull``) or over the WebSocket listener (``ws://.../apiws``,
obfuscated2 inside), then exchanges messages with a Telethon user and downloads a
photo the Telethon user sent. The channel tests make a layer-198 client use
supergroups and broadcast channels with a Telethon user: create, invite, live
messages both ways, history, full channel, public usernames, resolve and join
(``channels.joinChannel`` answers ``Updates`` there), and
``updates.getChannelDifference`` after a disconnection.

The node packages are installed by ``scripts/test`` (``tests/node/node_modules``).
Without ``node`` or those packages the tests skip, except under ``CI=true``, where
that is a failure.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import logging
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest
from PIL import Image
from telethon import TelegramClient, events, functions
from telethon.tl import types as tt

from teamgram.interface.session.host import HostedSession
from teamgram.server import Server
from teamgram.tl import TLFunction
from teamgram.tl import functions as fn
from teamgram.tl.layers import codec_for
from tests.e2e.accounts import new_phone, signed_in, wait_for
from tests.e2e.conftest import API_HASH, API_ID

Factory = Callable[..., Awaitable[TelegramClient]]

NODE_DIR = Path(__file__).resolve().parents[1] / "node"
DRIVER = NODE_DIR / "gramjs_driver.js"
GRAMJS_VERSION = "2.26.22"
GRAMJS_LAYER = 198
GRAMJS_DEVICE = "gramjs-e2e"  # initConnection.device_model: tells GramJS's keys apart
CODE = "24680"
START_TIMEOUT = 40.0
CALL_TIMEOUT = 20.0
QUIT_TIMEOUT = 5.0
# Before sign-in, start() asks updates.getState ("signed in?") and the connection
# event handler users.getUsers([self]): Telegram answers both with a 401 too.
EXPECTED_ERRORS = {
    ("updates.GetState", "error: AUTH_KEY_UNREGISTERED"),
    ("users.GetUsers", "error: AUTH_KEY_UNREGISTERED"),
}

pytestmark = pytest.mark.timeout(180)


# --------------------------------------------------------------------------- node


def _node_missing() -> str | None:
    """Why the GramJS tests cannot run here, or None."""
    if shutil.which("node") is None:
        return "node is not installed (GramJS tests need Node.js and npm)"
    pkg = NODE_DIR / "node_modules" / "telegram" / "package.json"
    if not pkg.exists():
        return f"GramJS is not installed in {NODE_DIR} (scripts/test installs it with npm ci)"
    version = json.loads(pkg.read_text())["version"]
    if version != GRAMJS_VERSION:
        return f"tests/node/node_modules has telegram {version}, not {GRAMJS_VERSION}"
    return None


@pytest.fixture
def node() -> str:
    """The ``node`` executable; skips (fails under CI=true) when GramJS cannot run."""
    reason = _node_missing()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    path = shutil.which("node")
    assert path is not None
    return path


class GramJSError(Exception):
    """A command the driver answered with an error (GramJS's error, as JSON)."""

    def __init__(self, cmd: str, error: dict[str, Any]) -> None:
        super().__init__(f"GramJS {cmd}: {json.dumps(error)}")
        self.error = error


@dataclass
class GramJSDriver:
    """The Node.js process running GramJS, and what it reported."""

    proc: asyncio.subprocess.Process
    stderr: IO[bytes]
    stderr_path: Path
    requests: list[dict[str, Any]] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    updates: list[dict[str, Any]] = field(default_factory=list)
    logs: list[dict[str, Any]] = field(default_factory=list)
    noise: list[str] = field(default_factory=list)
    _answers: dict[int, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    _next_id: int = 0
    _reader: asyncio.Task[None] | None = None
    _closed: bool = False

    @classmethod
    async def spawn(cls, node: str, log_dir: Path) -> GramJSDriver:
        stderr_path = log_dir / "gramjs.stderr.log"
        stderr = stderr_path.open("wb")
        proc = await asyncio.create_subprocess_exec(
            node,
            str(DRIVER),
            cwd=NODE_DIR,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
            limit=64 * 1024 * 1024,  # a downloaded photo comes back as one base64 line
        )
        driver = cls(proc, stderr, stderr_path)
        driver._reader = asyncio.get_running_loop().create_task(driver._read())
        return driver

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            try:
                obj = json.loads(line)
            except ValueError:
                self.noise.append(line.decode(errors="replace").rstrip())
                continue
            if "id" in obj and "ok" in obj:
                fut = self._answers.pop(obj["id"], None)
                if fut is not None and not fut.done():
                    fut.set_result(obj)
            elif obj.get("event") == "request":
                self.requests.append(obj)
            elif obj.get("event") == "message":
                self.messages.append(obj)
            elif obj.get("event") == "update":
                self.updates.append(obj)
            elif obj.get("event") == "log":
                self.logs.append(obj)
        for fut in self._answers.values():  # the process ended
            if not fut.done():
                fut.set_exception(ConnectionError(f"GramJS driver exited: {self.stderr_tail()}"))

    async def call(self, cmd: str, timeout: float = CALL_TIMEOUT, **args: Any) -> dict[str, Any]:
        """Run one driver command; its result, or :class:`GramJSError`."""
        assert self.proc.stdin is not None
        self._next_id += 1
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._answers[self._next_id] = fut
        line = json.dumps({"id": self._next_id, "cmd": cmd, **args})
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()
        try:
            answer = await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise AssertionError(
                f"GramJS {cmd}: no answer in {timeout} s\n{self.report()}"
            ) from None
        if not answer["ok"]:
            raise GramJSError(cmd, answer["error"])
        result: dict[str, Any] = answer["result"]
        return result

    async def wait_message(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0
    ) -> dict[str, Any]:
        """The first received message (NewMessage event) matching ``predicate``."""
        try:
            await wait_for(lambda: any(predicate(m) for m in self.messages), timeout)
        except AssertionError:
            raise AssertionError(
                f"GramJS received no such message in {timeout} s; got {self.messages}\n"
                + self.report()
            ) from None
        return next(m for m in self.messages if predicate(m))

    def request_outcomes(self) -> list[tuple[str, str]]:
        """Each request GramJS sent: (method, "ok" / the error / "no answer")."""
        done = {r["seq"]: r for r in self.requests if r["phase"] != "sent"}
        out = []
        for r in self.requests:
            if r["phase"] != "sent":
                continue
            end = done.get(r["seq"])
            if end is None:
                outcome = "no answer"
            elif end["phase"] == "ok":
                outcome = "ok"
            else:
                err = end["error"]
                what = err.get("errorMessage") or f"{err['name']}: {err['message']}"
                outcome = f"error: {what}"
            out.append((r["method"], outcome))
        return out

    def stderr_tail(self, lines: int = 30) -> str:
        if not self.stderr.closed:
            self.stderr.flush()
        text = self.stderr_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def report(self) -> str:
        reqs = "\n".join(f"  {m}: {o}" for m, o in self.request_outcomes())
        logs = "\n".join(
            f"  [{log['level']}] {log['message']}"
            for log in self.logs
            if log["level"] != "info" or "not found" in log["message"]
        )
        return (
            f"GramJS requests:\n{reqs}\nGramJS warnings/errors:\n{logs}\n"
            f"stdout noise: {self.noise[-5:]}\nstderr tail:\n{self.stderr_tail()}"
        )

    async def close(self) -> None:
        """Ask the driver to quit; kill it if it does not. Idempotent."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            if self.proc.returncode is None:
                await self.call("quit", timeout=QUIT_TIMEOUT)
        with contextlib.suppress(Exception):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), QUIT_TIMEOUT)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(BaseException):
                await self._reader
        self.stderr.close()


@pytest.fixture
async def gramjs(node: str, tmp_path: Path) -> AsyncIterator[Callable[[], Awaitable[GramJSDriver]]]:
    """``await gramjs()``: a running driver process; always stopped after the test."""
    drivers: list[GramJSDriver] = []

    async def factory() -> GramJSDriver:
        d = await GramJSDriver.spawn(node, tmp_path)
        drivers.append(d)
        return d

    try:
        yield factory
    finally:
        for d in drivers:
            await d.close()


# ------------------------------------------------------------------ server side


@dataclass
class ServerCall:
    method: str
    outcome: str


@dataclass
class CallRecorder:
    """What the session host ran for GramJS's auth keys (test-side wrapper of ``_invoke``)."""

    gramjs_keys: set[int] = field(default_factory=set)
    layers: dict[int, int] = field(default_factory=dict)
    calls: list[ServerCall] = field(default_factory=list)

    def install(self, server: Server) -> None:
        host = server.session_host
        invoke = host._invoke

        async def recording(hosted: HostedSession, msg_id: int, query: TLFunction) -> Any:
            key_id = hosted.key.auth_key_id
            inner: Any = query
            while isinstance(
                inner, fn.InvokeWithLayer | fn.InitConnection | fn.InvokeWithoutUpdates
            ):
                if isinstance(inner, fn.InitConnection) and inner.device_model == GRAMJS_DEVICE:
                    self.gramjs_keys.add(key_id)
                if isinstance(inner, fn.InvokeWithLayer):
                    self.layers[key_id] = inner.layer
                inner = inner.query
            mine = key_id in self.gramjs_keys
            try:
                result = await invoke(hosted, msg_id, query)
            except Exception as exc:
                if mine:
                    self.calls.append(ServerCall(type(inner).__name__, f"{exc!r}"))
                raise
            if mine:
                self.calls.append(ServerCall(type(inner).__name__, "ok"))
            return result

        host._invoke = recording  # type: ignore[method-assign]

    def report(self) -> str:
        lines = [f"  {c.method}: {c.outcome}" for c in self.calls]
        return "server ran for GramJS:\n" + "\n".join(lines)


# ------------------------------------------------------------------------- tests


def jpeg(width: int, height: int) -> bytes:
    img = Image.effect_noise((width, height), 50).convert("RGB")
    out = io.BytesIO()
    img.save(out, "JPEG", quality=90)
    return out.getvalue()


async def _exercise(
    srv: Server,
    transport: str,
    gramjs: Callable[[], Awaitable[GramJSDriver]],
    telethon_for: Factory,
    tmp_path: Path,
    server_errors: Callable[[], list[logging.LogRecord]],
) -> None:
    recorder = CallRecorder()
    recorder.install(srv)
    tele, tele_user = await signed_in(srv, telethon_for, "Tele")
    phone = new_phone()
    driver = await gramjs()
    port = srv.gateway.ws_port if transport == "ws" else srv.gateway.tcp_ports[0]
    assert port is not None

    def diagnose() -> str:
        errors = "\n".join(f"  {r.name}: {r.getMessage()}" for r in server_errors())
        codec = codec_for(GRAMJS_LAYER)
        return (
            f"\n{driver.report()}\n{recorder.report()}\nserver errors:\n{errors}\n"
            f"codec for layer {GRAMJS_LAYER}: {type(codec).__name__} (layer {codec.layer})"
        )

    try:
        # Sign up: GramJS sends "+<digits>"; the dev login code is accepted.
        me = await driver.call(
            "start",
            timeout=START_TIMEOUT,
            pem=srv.server_keys[0].public_pem(),
            host="127.0.0.1",
            port=port,
            dcId=srv.config.dc_id,
            transport=transport,
            phone="+" + phone,
            code=CODE,
            firstName="Gram",
            lastName="JS",
            apiId=API_ID,
            apiHash=API_HASH,
            deviceModel=GRAMJS_DEVICE,
        )
        assert int(me["fingerprint"]) == srv.server_keys[0].fingerprint
        assert me["phone"] == phone and me["firstName"] == "Gram"
        gram_id = int(me["id"])
        assert {recorder.layers[k] for k in recorder.gramjs_keys} == {GRAMJS_LAYER}

        # GramJS -> Telethon.
        got: list[Any] = []

        async def on_message(event: Any) -> None:
            got.append(event.message)

        tele.add_event_handler(on_message, events.NewMessage(incoming=True))
        imported = await driver.call("importContact", phone=tele_user.phone, firstName="Tele")
        assert int(imported["userId"]) == tele_user.id
        sent = await driver.call("sendMessage", userId=imported["userId"], text="hello from GramJS")
        assert sent["text"] == "hello from GramJS"
        await wait_for(lambda: any(m.message == "hello from GramJS" for m in got), timeout=10)
        incoming = next(m for m in got if m.message == "hello from GramJS")
        assert incoming.sender_id == gram_id

        # Telethon -> GramJS: a text, then a photo.
        contacts = await tele(
            functions.contacts.ImportContactsRequest([tt.InputPhoneContact(0, phone, "Gram", "")])
        )
        gram_user = contacts.users[0]
        assert gram_user.id == gram_id
        await tele.send_message(gram_user, "hello from Telethon")
        text = await driver.wait_message(lambda m: m["text"] == "hello from Telethon")
        assert int(text["senderId"]) == tele_user.id

        photo_path = tmp_path / "photo.jpg"
        photo_path.write_bytes(jpeg(800, 600))
        sent_photo = await tele.send_file(gram_user, str(photo_path), caption="a photo")
        pm = await driver.wait_message(lambda m: m["photo"] is not None)
        assert pm["text"] == "a photo" and int(pm["senderId"]) == tele_user.id
        assert int(pm["photo"]["id"]) == sent_photo.photo.id

        downloaded = await driver.call("download", messageId=pm["id"], timeout=30)
        data = base64.b64decode(downloaded["base64"])
        assert len(data) == downloaded["size"] > 0
        img = Image.open(io.BytesIO(data))
        img.load()
        assert img.format == "JPEG"
        largest = max(pm["photo"]["sizes"], key=lambda s: s["w"] * s["h"])
        assert img.size == (largest["w"], largest["h"])
        # The same bytes Telethon gets for the largest size.
        theirs = await tele.download_media(sent_photo, file=bytes)
        assert data == theirs
    except (AssertionError, GramJSError, KeyError) as exc:
        pytest.fail(f"{exc}\n{diagnose()}")
    finally:
        await driver.close()
        print(f"\n--- GramJS over {transport} ---{diagnose()}")  # shown with -s / on failure
    failed = [
        (m, o)
        for m, o in driver.request_outcomes()
        if o != "ok" and (m, o) not in EXPECTED_ERRORS and m != "PingDelayDisconnect"
    ]
    assert not failed, f"GramJS requests that failed: {failed}{diagnose()}"
    assert not server_errors(), diagnose()


@pytest.fixture
async def dev_server(start_server: Callable[..., Any]) -> AsyncIterator[Server]:
    """A server taking the dev login code; requested first, so it stops after the clients."""
    async with start_server(dev_login_code=CODE) as srv:
        yield srv


async def test_gramjs_over_tcp(
    dev_server: Server,
    gramjs: Callable[[], Awaitable[GramJSDriver]],
    telethon_for: Factory,
    tmp_path: Path,
    server_errors: Callable[[], list[logging.LogRecord]],
) -> None:
    await _exercise(dev_server, "tcp", gramjs, telethon_for, tmp_path, server_errors)


async def test_gramjs_over_websocket(
    dev_server: Server,
    gramjs: Callable[[], Awaitable[GramJSDriver]],
    telethon_for: Factory,
    tmp_path: Path,
    server_errors: Callable[[], list[logging.LogRecord]],
) -> None:
    await _exercise(dev_server, "ws", gramjs, telethon_for, tmp_path, server_errors)


# --------------------------------------------------------------- channels (layer 198)


@dataclass
class GramJSUser:
    """A GramJS client signed up over TCP, and what is needed to explain a failure."""

    driver: GramJSDriver
    recorder: CallRecorder
    server_errors: Callable[[], list[logging.LogRecord]]
    id: int = 0
    phone: str = ""

    async def start(self, srv: Server, first_name: str) -> None:
        self.phone = new_phone()
        me = await self.driver.call(
            "start",
            timeout=START_TIMEOUT,
            pem=srv.server_keys[0].public_pem(),
            host="127.0.0.1",
            port=srv.gateway.tcp_ports[0],
            dcId=srv.config.dc_id,
            transport="tcp",
            phone="+" + self.phone,
            code=CODE,
            firstName=first_name,
            lastName="JS",
            apiId=API_ID,
            apiHash=API_HASH,
            deviceModel=GRAMJS_DEVICE,
        )
        self.id = int(me["id"])

    def diagnose(self) -> str:
        errors = "\n".join(f"  {r.name}: {r.getMessage()}" for r in self.server_errors())
        updates = "\n".join(f"  {u}" for u in self.driver.updates)
        return (
            f"\n{self.driver.report()}\nGramJS raw updates:\n{updates}\n"
            f"{self.recorder.report()}\nserver errors:\n{errors}"
        )

    def check_clean(self) -> None:
        """No request GramJS sent failed unexpectedly, no server error was logged."""
        failed = [
            (m, o)
            for m, o in self.driver.request_outcomes()
            if o != "ok" and (m, o) not in EXPECTED_ERRORS and m != "PingDelayDisconnect"
        ]
        assert not failed, f"GramJS requests that failed: {failed}{self.diagnose()}"
        assert not self.server_errors(), self.diagnose()


@contextlib.asynccontextmanager
async def gramjs_user(
    srv: Server,
    gramjs: Callable[[], Awaitable[GramJSDriver]],
    server_errors: Callable[[], list[logging.LogRecord]],
    first_name: str = "Gram",
) -> AsyncIterator[GramJSUser]:
    """A signed-up GramJS user; a failed assertion is reported with GramJS's and the
    server's side, and at the end every GramJS request must have succeeded."""
    recorder = CallRecorder()
    recorder.install(srv)
    user = GramJSUser(await gramjs(), recorder, server_errors)
    try:
        await user.start(srv, first_name)
        yield user
    except (AssertionError, GramJSError, KeyError) as exc:
        pytest.fail(f"{exc}\n{user.diagnose()}")
    finally:
        await user.driver.close()
        print(f"\n--- GramJS channels ---{user.diagnose()}")  # shown with -s / on failure
    user.check_clean()


def _channel_in(result: dict[str, Any], cid: int | None = None) -> dict[str, Any]:
    """The one channel of an answer's chats (the one with id ``cid`` if given)."""
    found = [
        c
        for c in result["chats"]
        if c["className"] == "Channel" and (cid is None or int(c["id"]) == cid)
    ]
    assert len(found) == 1, result
    return found[0]


def _texts(messages: list[dict[str, Any]]) -> list[str]:
    return [m["text"] for m in messages if m["className"] == "Message"]


def _tele_channel_messages(got: list[Any], cid: int) -> list[Any]:
    return [m for m in got if isinstance(m.peer_id, tt.PeerChannel) and m.peer_id.channel_id == cid]


async def test_gramjs_megagroup_with_telethon(
    dev_server: Server,
    gramjs: Callable[[], Awaitable[GramJSDriver]],
    telethon_for: Factory,
    server_errors: Callable[[], list[logging.LogRecord]],
) -> None:
    """GramJS creates a megagroup and invites a Telethon user; both talk live; GramJS
    reads history and the full channel, makes it public, and after a disconnection
    gets what it missed from updates.getChannelDifference."""
    tele, tele_user = await signed_in(dev_server, telethon_for, "Tele")
    got: list[Any] = []
    raw: list[Any] = []

    async def on_message(event: Any) -> None:
        got.append(event.message)

    async def on_raw(update: Any) -> None:
        raw.append(update)

    tele.add_event_handler(on_message, events.NewMessage(incoming=True))
    tele.add_event_handler(on_raw, events.Raw())

    async with gramjs_user(dev_server, gramjs, server_errors) as gram:
        d = gram.driver
        await d.call("importContact", phone=tele_user.phone, firstName="Tele")

        # channels.createChannel: Updates with the new megagroup, GramJS its creator.
        created = await d.call("createChannel", title="Gram group", about="made by GramJS")
        assert created["className"] == "Updates", created
        ch = _channel_in(created)
        cid = int(ch["id"])
        assert ch["megagroup"] and not ch["broadcast"] and ch["creator"] and not ch["left"]
        assert ch["hasAccessHash"] and not ch["min"]

        # channels.inviteToChannel: messages.invitedUsers (layer 198 has it too).
        invited = await d.call("inviteToChannel", channelId=str(cid), userIds=[str(tele_user.id)])
        assert invited["className"] == "messages.InvitedUsers", invited
        assert invited["missingInvitees"] == []
        assert [u["message"]["action"] for u in invited["updates"] if u["message"]] == [
            "MessageActionChatAddUser"
        ], invited

        # Telethon is told live (the channel comes with the update).
        await wait_for(
            lambda: any(
                isinstance(u, tt.UpdateNewChannelMessage)
                and isinstance(u.message, tt.MessageService)
                and u.message.peer_id.channel_id == cid
                for u in raw
            ),
            timeout=10,
        )
        tele_peer = await tele.get_input_entity(tt.PeerChannel(cid))

        # GramJS -> Telethon, live.
        sent = await d.call("sendChannelMessage", channelId=str(cid), text="hi group, GramJS here")
        assert sent["className"] == "Updates" and sent["id"], sent
        await wait_for(lambda: _tele_channel_messages(got, cid), timeout=10)
        (incoming,) = _tele_channel_messages(got, cid)
        assert incoming.message == "hi group, GramJS here" and incoming.sender_id == gram.id
        assert incoming.id == sent["id"]

        # Telethon -> GramJS, live: a NewMessage event for the channel message.
        theirs = await tele.send_message(tele_peer, "hi GramJS, Telethon here")
        m = await d.wait_message(lambda m: m["channelId"] == str(cid))
        assert m["text"] == "hi GramJS, Telethon here" and m["id"] == theirs.id
        assert int(m["senderId"]) == tele_user.id and not m["out"] and not m["post"]
        assert m["peer"] == {"type": "channel", "id": str(cid)}
        assert m["chatId"] == f"-100{cid}"  # the marked id of a channel

        # messages.getHistory: newest first, the service messages of creation and invite.
        hist = await d.call("getHistory", channelId=str(cid))
        assert hist["className"] == "messages.ChannelMessages", hist
        assert _texts(hist["messages"]) == ["hi GramJS, Telethon here", "hi group, GramJS here"]
        actions = [x["action"] for x in hist["messages"] if x["className"] == "MessageService"]
        assert actions == ["MessageActionChatAddUser", "MessageActionChannelCreate"], hist
        assert all(x["peer"] == {"type": "channel", "id": str(cid)} for x in hist["messages"])
        assert hist["count"] == 4

        # channels.getFullChannel.
        info = await d.call("getFullChannel", channelId=str(cid))
        assert info["fullChatClassName"] == "ChannelFull", info
        assert info["about"] == "made by GramJS" and info["participantsCount"] == 2
        assert info["pts"] >= 4
        pts = info["pts"]

        # A public username, which Telethon resolves.
        assert (await d.call("checkUsername", channelId=str(cid), username="gram_group"))["ok"]
        assert (await d.call("updateUsername", channelId=str(cid), username="gram_group"))["ok"]
        found = await tele(functions.contacts.ResolveUsernameRequest(username="gram_group"))
        assert found.peer == tt.PeerChannel(cid)
        assert found.chats[0].username == "gram_group"
        again = await d.call("getFullChannel", channelId=str(cid))
        assert _channel_in(again, cid)["username"] == "gram_group"

        # Offline: GramJS drops its connection while Telethon writes three messages.
        await d.call("disconnect")
        missed = ["while away 1", "while away 2", "while away 3"]
        for text in missed:
            await tele.send_message(tele_peer, text)
        reconnected = await d.call("connect")
        assert reconnected["connected"]

        # updates.getChannelDifference from the pts of getFullChannel: the missed messages.
        diff = await d.call("getChannelDifference", channelId=str(cid), pts=pts)
        assert diff["className"] == "updates.ChannelDifference", diff
        assert _texts(diff["newMessages"]) == missed and diff["final"]
        assert diff["pts"] == pts + len(missed)
        # ... from a few pts earlier: the last two before too.
        earlier = await d.call("getChannelDifference", channelId=str(cid), pts=pts - 2)
        assert earlier["className"] == "updates.ChannelDifference", earlier
        assert _texts(earlier["newMessages"]) == [
            "hi group, GramJS here",
            "hi GramJS, Telethon here",
            *missed,
        ]
        assert earlier["pts"] == diff["pts"] and earlier["final"]
        # ... and nothing past the current pts.
        empty = await d.call("getChannelDifference", channelId=str(cid), pts=diff["pts"])
        assert empty["className"] == "updates.ChannelDifferenceEmpty", empty
        assert empty["pts"] == diff["pts"]

        # Connected again, GramJS gets the next message live.
        await tele.send_message(tele_peer, "welcome back")
        await d.wait_message(lambda m: m["text"] == "welcome back" and m["channelId"] == str(cid))


async def test_gramjs_joins_telethon_channels(
    dev_server: Server,
    gramjs: Callable[[], Awaitable[GramJSDriver]],
    telethon_for: Factory,
    server_errors: Callable[[], list[logging.LogRecord]],
) -> None:
    """A Telethon user invites GramJS to its megagroup, and GramJS finds a public
    broadcast channel by its username, reads it, joins it and gets a post live."""
    tele, tele_user = await signed_in(dev_server, telethon_for, "Tele")
    got: list[Any] = []

    async def on_message(event: Any) -> None:
        got.append(event.message)

    tele.add_event_handler(on_message, events.NewMessage(incoming=True))

    async with gramjs_user(dev_server, gramjs, server_errors) as gram:
        d = gram.driver
        contacts = await tele(
            functions.contacts.ImportContactsRequest([tt.InputPhoneContact(0, gram.phone, "G", "")])
        )
        gram_input = tt.InputUser(contacts.users[0].id, contacts.users[0].access_hash)

        # Telethon's megagroup; GramJS is invited and told live.
        res = await tele(
            functions.channels.CreateChannelRequest(
                title="Tele group", about="made by Telethon", megagroup=True
            )
        )
        group = res.chats[0]
        gid = group.id
        group_peer = tt.InputPeerChannel(gid, group.access_hash)
        await tele(
            functions.channels.InviteToChannelRequest(
                channel=tt.InputChannel(gid, group.access_hash), users=[gram_input]
            )
        )
        await wait_for(
            lambda: any(
                u["className"] == "UpdateNewChannelMessage"
                and u["channelId"] == str(gid)
                and u["action"] == "MessageActionChatAddUser"
                for u in d.updates
            ),
            timeout=10,
        )
        # GramJS took the channel (with its own access hash) from the update.
        info = await d.call("getFullChannel", channelId=str(gid))
        assert info["about"] == "made by Telethon" and info["participantsCount"] == 2
        mine = _channel_in(info, gid)
        assert mine["megagroup"] and not mine["creator"] and not mine["left"]

        await tele.send_message(group_peer, "welcome, GramJS")
        m = await d.wait_message(lambda m: m["channelId"] == str(gid))
        assert m["text"] == "welcome, GramJS" and int(m["senderId"]) == tele_user.id
        sent = await d.call("sendChannelMessage", channelId=str(gid), text="thanks, Telethon")
        await wait_for(lambda: _tele_channel_messages(got, gid), timeout=10)
        (back,) = _tele_channel_messages(got, gid)
        assert back.message == "thanks, Telethon" and back.sender_id == gram.id
        assert back.id == sent["id"]

        # Telethon's public broadcast channel, with two posts.
        res = await tele(
            functions.channels.CreateChannelRequest(
                title="Tele news", about="news by Telethon", broadcast=True
            )
        )
        news = res.chats[0]
        nid = news.id
        news_chan = tt.InputChannel(nid, news.access_hash)
        news_peer = tt.InputPeerChannel(nid, news.access_hash)
        assert await tele(
            functions.channels.UpdateUsernameRequest(channel=news_chan, username="tele_news")
        )
        await tele.send_message(news_peer, "post one")
        await tele.send_message(news_peer, "post two")

        # contacts.resolveUsername: the channel, not joined yet; its history is readable.
        found = await d.call("resolveUsername", username="Tele_News")
        assert found["className"] == "contacts.ResolvedPeer", found
        assert found["peer"] == {"type": "channel", "id": str(nid)}
        seen = _channel_in(found, nid)
        assert seen["broadcast"] and not seen["megagroup"] and seen["left"]
        assert seen["username"] == "tele_news" and seen["hasAccessHash"]
        hist = await d.call("getHistory", channelId=str(nid))
        assert _texts(hist["messages"]) == ["post two", "post one"], hist
        assert all(x["post"] and x["fromId"] is None for x in hist["messages"][:2])

        # channels.joinChannel: layer 229's messages.chatInviteJoinResultOk is
        # answered as the Updates it carries.
        joined = await d.call("joinChannel", channelId=str(nid))
        assert joined["className"] in ("Updates", "UpdatesCombined"), joined
        now = _channel_in(joined, nid)
        assert not now["left"] and now["broadcast"]
        info = await d.call("getFullChannel", channelId=str(nid))
        assert info["participantsCount"] == 2 and info["about"] == "news by Telethon"

        # A post is pushed live to the new subscriber.
        post = await tele.send_message(news_peer, "post three")
        m = await d.wait_message(lambda m: m["channelId"] == str(nid))
        assert m["text"] == "post three" and m["id"] == post.id and m["post"]
        assert m["peer"] == {"type": "channel", "id": str(nid)} and not m["out"]
        assert m["senderId"] == f"-100{nid}"  # a post comes from the channel
