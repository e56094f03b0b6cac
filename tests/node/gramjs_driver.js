#!/usr/bin/env node
// GramJS (npm `telegram`, pinned in package.json) driven by tests/e2e/test_gramjs.py.
//
// Protocol: JSON lines. The test writes commands to stdin, one per line:
//     {"id": 1, "cmd": "start", ...arguments}
// and reads from stdout, one object per line, either the answer to a command
//     {"id": 1, "ok": true, "result": {...}}  or  {"id": 1, "ok": false, "error": {...}}
// or an event the driver reports by itself:
//     {"event": "request", "phase": "sent" | "ok" | "error", "seq": N, "method": "...", ...}
//     {"event": "message", "id": ..., "text": ..., "senderId": ..., "chatId": ..., "peer": ...,
//      "channelId": ... | null, "post": ..., "photo": {...} | null}
//     {"event": "update", "className": ..., "channelId": ..., "messageId": ..., "pts": ...}
//     {"event": "log", "level": "...", "message": "..."}
// Everything else (GramJS's own console output) goes to stderr.
"use strict";

const crypto = require("crypto");
const readline = require("readline");

// GramJS prints with console.log: keep stdout for the protocol only.
console.log = (...args) => console.error(...args);

const bigInt = require("big-integer");
const { TelegramClient, Api } = require("telegram");
const { MemorySession } = require("telegram/sessions");
const { ConnectionTCPFull, ConnectionTCPObfuscated } = require("telegram/network");
const { PromisedWebSockets } = require("telegram/extensions/PromisedWebSockets");
const { Logger, LogLevel } = require("telegram/extensions/Logger");
const { NewMessage, Raw } = require("telegram/events");
const { MessagePacker } = require("telegram/extensions/MessagePacker");
const RSA = require("telegram/crypto/RSA");

function emit(obj) {
    process.stdout.write(JSON.stringify(obj) + "\n");
}

// JSON for values GramJS uses: big-integer and Buffer become strings.
function plain(value) {
    return JSON.parse(
        JSON.stringify(value, (_key, v) => {
            if (bigInt.isInstance(v)) return v.toString();
            if (v && v.type === "Buffer" && Array.isArray(v.data)) return `<${v.data.length} bytes>`;
            return v;
        }),
    );
}

function describeError(err) {
    if (!(err instanceof Object)) return { name: typeof err, message: String(err) };
    return {
        name: err.constructor ? err.constructor.name : typeof err,
        message: String(err.message || err),
        errorMessage: err.errorMessage, // RPCError: "PHONE_NUMBER_INVALID"...
        code: err.code,
        stack: err.stack ? String(err.stack).split("\n").slice(0, 6).join("\n") : undefined,
    };
}

// --- the server's RSA key ---------------------------------------------------
// Telegram's fingerprint: the low 64 bits of sha1(TL bytes(n) + TL bytes(e)),
// read as a signed little-endian int64; GramJS keys its table by its decimal text.
function tlBytes(b) {
    const head = b.length < 254 ? Buffer.from([b.length]) : Buffer.from([254, b.length & 255, (b.length >> 8) & 255, b.length >> 16]);
    const pad = Buffer.alloc((4 - ((head.length + b.length) % 4)) % 4);
    return Buffer.concat([head, b, pad]);
}

function addServerKey(pem) {
    const jwk = crypto.createPublicKey(pem).export({ format: "jwk" });
    const n = Buffer.from(jwk.n, "base64url");
    const e = Buffer.from(jwk.e, "base64url");
    const digest = crypto.createHash("sha1").update(Buffer.concat([tlBytes(n), tlBytes(e)])).digest();
    const fingerprint = digest.subarray(12).readBigInt64LE().toString();
    RSA._serverKeys.set(fingerprint, { n: bigInt(n.toString("hex"), 16), e: Number(bigInt(e.toString("hex"), 16)) });
    return fingerprint;
}

// --- every request GramJS sends, on every sender (main and file senders) -----
// Every request reaches a sender's send queue (MessagePacker.append) as a
// RequestState. A resent one comes back the same way: it is reported once, and
// its outcome followed on its current promise (a retry resets the promise,
// rejecting the old one with no error). The method is the innermost request:
// invokeWithLayer(initConnection(help.getConfig)) is help.GetConfig, wrappers listed.
let requestSeq = 0;
const originalAppend = MessagePacker.prototype.append;
MessagePacker.prototype.append = function append(state, ...rest) {
    if (state && state.request && state.request.className !== "MsgsAck") {
        let inner = state.request;
        const wrappers = [];
        while (inner.query && inner.query.className) {
            wrappers.push(inner.className);
            inner = inner.query;
        }
        const method = inner.className;
        if (!state._e2eSeq) {
            state._e2eSeq = ++requestSeq;
            emit({ event: "request", phase: "sent", seq: state._e2eSeq, method, wrappers });
        }
        if (state._e2ePromise !== state.promise) {
            const seq = state._e2eSeq;
            state._e2ePromise = state.promise;
            state.promise.then(
                (result) => emit({ event: "request", phase: "ok", seq, method, result: result && result.className }),
                (err) => err !== undefined && emit({ event: "request", phase: "error", seq, method, error: describeError(err) }),
            );
        }
    }
    return originalAppend.call(this, state, ...rest);
};

// GramJS's log lines, to stderr and (info and above) as events: "Type ... not
// found" (a constructor it cannot read) is only logged at info level.
class ReportingLogger extends Logger {
    log(level, message, _color) {
        console.error(`[gramjs ${level}] ${message}`);
        if (level !== LogLevel.DEBUG) emit({ event: "log", level, message: String(message) });
    }
}

// GramJS dials port 80 (443 for WSS) whatever the session says: force ours.
function withPort(Base, port) {
    return class extends Base {
        constructor(opts) {
            super({ ...opts, port });
        }
    };
}

// --- state --------------------------------------------------------------------
let client = null;
const users = new Map(); // user id (string) -> Api.User, from importContacts
const messages = new Map(); // message id (string) -> Api.Message, from NewMessage events
const channels = new Map(); // channel id (string) -> Api.Channel (not min: with its access hash)

// Remember every (non-min) channel an answer or an update carries, with its access hash.
function rememberChats(obj) {
    const seen = [];
    const walk = (o) => {
        if (!o || typeof o !== "object") return;
        if (Array.isArray(o.chats)) seen.push(...o.chats);
        if (o.updates && !Array.isArray(o.updates)) walk(o.updates); // messages.invitedUsers
    };
    walk(obj);
    for (const c of seen) {
        if (c instanceof Api.Channel && !c.min && c.accessHash !== undefined && c.accessHash !== null) {
            channels.set(c.id.toString(), c);
        }
    }
}

function inputChannel(channelId) {
    const c = channels.get(String(channelId));
    if (!c) throw new Error(`unknown channel ${channelId}: no access hash seen for it`);
    return new Api.InputChannel({ channelId: c.id, accessHash: c.accessHash });
}

function inputPeerChannel(channelId) {
    const c = inputChannel(channelId);
    return new Api.InputPeerChannel({ channelId: c.channelId, accessHash: c.accessHash });
}

function peerJson(peer) {
    if (!peer) return null;
    if (peer instanceof Api.PeerChannel) return { type: "channel", id: peer.channelId.toString() };
    if (peer instanceof Api.PeerChat) return { type: "chat", id: peer.chatId.toString() };
    if (peer instanceof Api.PeerUser) return { type: "user", id: peer.userId.toString() };
    return { type: peer.className, id: null };
}

function channelJson(c) {
    if (!(c instanceof Api.Channel)) return { className: c.className, id: c.id ? c.id.toString() : null };
    return {
        className: c.className,
        id: c.id.toString(),
        title: c.title,
        username: c.username || null,
        megagroup: !!c.megagroup,
        broadcast: !!c.broadcast,
        creator: !!c.creator,
        left: !!c.left,
        min: !!c.min,
        hasAccessHash: c.accessHash !== undefined && c.accessHash !== null,
        participantsCount: c.participantsCount === undefined ? null : c.participantsCount,
    };
}

function messageJson(m) {
    return {
        className: m.className,
        id: m.id,
        text: m.message === undefined ? null : m.message,
        peer: peerJson(m.peerId),
        fromId: peerJson(m.fromId),
        out: !!m.out,
        post: !!m.post,
        action: m.action ? m.action.className : null,
    };
}

// The single updates of an Updates-like answer (the Updates of messages.invitedUsers too).
function updatesOf(res) {
    if (!res) return [];
    if (res instanceof Api.messages.InvitedUsers) return updatesOf(res.updates);
    if (res instanceof Api.Updates || res instanceof Api.UpdatesCombined) return res.updates;
    if (res instanceof Api.UpdateShort) return [res.update];
    return [];
}

function updatesJson(res) {
    return updatesOf(res).map((u) => ({
        className: u.className,
        message: u.message && u.message.className ? messageJson(u.message) : null,
        pts: u.pts === undefined ? null : u.pts,
        ptsCount: u.ptsCount === undefined ? null : u.ptsCount,
        channelId: u.channelId !== undefined && u.channelId !== null ? u.channelId.toString() : null,
    }));
}

function chatsOf(res) {
    const chats = (res && res.chats) || (res && res.updates && res.updates.chats) || [];
    return chats.map(channelJson);
}

function updateEvent(update) {
    if (!update || !update.className) return; // UpdateConnectionState
    rememberChats(update._entities ? { chats: [...update._entities.values()] } : null);
    const channelId =
        update.channelId !== undefined && update.channelId !== null
            ? update.channelId.toString()
            : update.message && update.message.peerId instanceof Api.PeerChannel
              ? update.message.peerId.channelId.toString()
              : null;
    emit({
        event: "update",
        className: update.className,
        channelId,
        messageId: update.message && update.message.id !== undefined ? update.message.id : null,
        action: update.message && update.message.action ? update.message.action.className : null,
        pts: update.pts === undefined ? null : update.pts,
    });
}

function messageEvent(event) {
    const m = event.message;
    messages.set(String(m.id), m);
    let photo = null;
    if (m.photo instanceof Api.Photo) {
        const sizes = (m.photo.sizes || [])
            .filter((s) => s instanceof Api.PhotoSize || s instanceof Api.PhotoSizeProgressive)
            .map((s) => ({ type: s.type, w: s.w, h: s.h }));
        photo = { id: m.photo.id.toString(), dcId: m.photo.dcId, sizes };
    }
    emit({
        event: "message",
        id: m.id,
        text: m.message,
        senderId: m.senderId ? m.senderId.toString() : null,
        chatId: m.chatId ? m.chatId.toString() : null,
        peer: peerJson(m.peerId),
        channelId: m.peerId instanceof Api.PeerChannel ? m.peerId.channelId.toString() : null,
        post: !!m.post,
        out: !!m.out,
        media: m.media ? m.media.className : null,
        photo,
    });
}

// --- commands -----------------------------------------------------------------
const commands = {
    // Connect, sign in (or sign up) with the dev login code.
    async start(a) {
        const fingerprint = addServerKey(a.pem);
        const session = new MemorySession();
        session.setDC(a.dcId, a.host, a.port);
        const opts = {
            baseLogger: new ReportingLogger(a.logLevel || process.env.GRAMJS_LOG_LEVEL || LogLevel.INFO),
            connectionRetries: 1,
            requestRetries: 1,
            autoReconnect: false,
            timeout: 10,
            deviceModel: a.deviceModel,
            appVersion: "e2e",
            systemVersion: process.version,
        };
        if (a.transport === "ws") {
            // Browser-style: obfuscated2 inside WebSocket frames, ws://host:port/apiws.
            opts.connection = withPort(ConnectionTCPObfuscated, a.port);
            opts.networkSocket = PromisedWebSockets;
            opts.useWSS = false;
        } else {
            opts.connection = withPort(ConnectionTCPFull, a.port);
        }
        client = new TelegramClient(session, a.apiId, a.apiHash, opts);
        client.addEventHandler(messageEvent, new NewMessage({ incoming: true }));
        client.addEventHandler(updateEvent, new Raw({}));
        await client.start({
            phoneNumber: a.phone,
            phoneCode: async () => a.code,
            firstAndLastNames: async () => [a.firstName, a.lastName || ""],
            onError: async (err) => {
                throw err; // stop at the first error, and report it
            },
        });
        const me = await client.getMe();
        return { fingerprint, id: me.id.toString(), phone: me.phone, firstName: me.firstName };
    },

    // contacts.importContacts: makes the user known (with its access hash).
    async importContact(a) {
        const res = await client.invoke(
            new Api.contacts.ImportContacts({
                contacts: [
                    new Api.InputPhoneContact({ clientId: bigInt(1), phone: a.phone, firstName: a.firstName, lastName: "" }),
                ],
            }),
        );
        if (!res.users.length) throw new Error(`importContacts returned no user: ${JSON.stringify(plain(res))}`);
        const user = res.users[0];
        users.set(user.id.toString(), user);
        return { userId: user.id.toString() };
    },

    async sendMessage(a) {
        const user = users.get(String(a.userId));
        if (!user) throw new Error(`unknown user ${a.userId}: importContact first`);
        const sent = await client.sendMessage(user, { message: a.text });
        return { id: sent.id, text: sent.message };
    },

    // The largest size of a received message's photo (GramJS's default choice).
    async download(a) {
        const message = messages.get(String(a.messageId));
        if (!message) throw new Error(`no received message ${a.messageId}`);
        const data = await client.downloadMedia(message, {});
        return { size: data.length, base64: Buffer.from(data).toString("base64") };
    },

    // --- channels ---

    // channels.createChannel (megagroup unless broadcast): the Updates GramJS read.
    async createChannel(a) {
        const res = await client.invoke(
            new Api.channels.CreateChannel({
                title: a.title,
                about: a.about || "",
                megagroup: a.broadcast ? undefined : true,
                broadcast: a.broadcast ? true : undefined,
            }),
        );
        rememberChats(res);
        return { className: res.className, chats: chatsOf(res), updates: updatesJson(res) };
    },

    // channels.inviteToChannel with users known from importContact.
    async inviteToChannel(a) {
        const inputs = a.userIds.map((id) => {
            const u = users.get(String(id));
            if (!u) throw new Error(`unknown user ${id}: importContact first`);
            return new Api.InputUser({ userId: u.id, accessHash: u.accessHash });
        });
        const res = await client.invoke(new Api.channels.InviteToChannel({ channel: inputChannel(a.channelId), users: inputs }));
        rememberChats(res);
        return {
            className: res.className,
            updatesClassName: res.updates ? res.updates.className : null,
            missingInvitees: (res.missingInvitees || []).map((m) => m.userId.toString()),
            chats: chatsOf(res.updates || res),
            updates: updatesJson(res),
        };
    },

    // messages.sendMessage to a channel, raw: the Updates GramJS read.
    async sendChannelMessage(a) {
        const res = await client.invoke(
            new Api.messages.SendMessage({
                peer: inputPeerChannel(a.channelId),
                message: a.text,
                randomId: bigInt(crypto.randomBytes(7).toString("hex"), 16),
            }),
        );
        rememberChats(res);
        const updates = updatesJson(res);
        const stored = updates.find((u) => u.className === "UpdateNewChannelMessage");
        return { className: res.className, updates, id: stored && stored.message ? stored.message.id : null };
    },

    async getHistory(a) {
        const res = await client.invoke(
            new Api.messages.GetHistory({
                peer: inputPeerChannel(a.channelId),
                offsetId: 0,
                offsetDate: 0,
                addOffset: 0,
                limit: a.limit || 100,
                maxId: 0,
                minId: 0,
                hash: bigInt(0),
            }),
        );
        rememberChats(res);
        return {
            className: res.className,
            count: res.count === undefined ? null : res.count,
            pts: res.pts === undefined ? null : res.pts,
            messages: res.messages.map(messageJson),
            chats: chatsOf(res),
        };
    },

    async getFullChannel(a) {
        const res = await client.invoke(new Api.channels.GetFullChannel({ channel: inputChannel(a.channelId) }));
        rememberChats(res);
        const f = res.fullChat;
        return {
            className: res.className,
            fullChatClassName: f.className,
            id: f.id.toString(),
            about: f.about,
            participantsCount: f.participantsCount === undefined ? null : f.participantsCount,
            pts: f.pts,
            readInboxMaxId: f.readInboxMaxId,
            unreadCount: f.unreadCount,
            canViewParticipants: !!f.canViewParticipants,
            chats: chatsOf(res),
        };
    },

    async checkUsername(a) {
        return { ok: await client.invoke(new Api.channels.CheckUsername({ channel: inputChannel(a.channelId), username: a.username })) };
    },

    async updateUsername(a) {
        return { ok: await client.invoke(new Api.channels.UpdateUsername({ channel: inputChannel(a.channelId), username: a.username })) };
    },

    async resolveUsername(a) {
        const res = await client.invoke(new Api.contacts.ResolveUsername({ username: a.username }));
        rememberChats(res);
        return { className: res.className, peer: peerJson(res.peer), chats: chatsOf(res) };
    },

    // channels.joinChannel: layer 198 reads Updates (layer 229 has messages.ChatInviteJoinResult).
    async joinChannel(a) {
        const res = await client.invoke(new Api.channels.JoinChannel({ channel: inputChannel(a.channelId) }));
        rememberChats(res);
        return { className: res.className, chats: chatsOf(res), updates: updatesJson(res) };
    },

    async getChannelDifference(a) {
        const res = await client.invoke(
            new Api.updates.GetChannelDifference({
                channel: inputChannel(a.channelId),
                filter: new Api.ChannelMessagesFilterEmpty(),
                pts: a.pts,
                limit: a.limit || 100,
                force: true,
            }),
        );
        rememberChats(res);
        return {
            className: res.className,
            final: !!res.final,
            pts: res.pts === undefined ? (res.dialog ? res.dialog.pts : null) : res.pts,
            timeout: res.timeout === undefined ? null : res.timeout,
            newMessages: (res.newMessages || res.messages || []).map(messageJson),
            otherUpdates: (res.otherUpdates || []).map((u) => u.className),
            chats: chatsOf(res),
        };
    },

    // Drop the connection (the auth key and session stay), and connect again.
    async disconnect() {
        await client.disconnect();
        return { connected: !!client.connected };
    },

    async connect() {
        await client.connect();
        const state = await client.invoke(new Api.updates.GetState());
        return { connected: !!client.connected, pts: state.pts };
    },

    async quit() {
        if (client) await client.destroy();
        return {};
    },
};

// One command at a time, in order; exit when stdin closes or after "quit".
async function main() {
    const lines = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
    for await (const line of lines) {
        if (!line.trim()) continue;
        const { id, cmd, ...args } = JSON.parse(line);
        try {
            if (!commands[cmd]) throw new Error(`unknown command ${cmd}`);
            emit({ id, ok: true, result: await commands[cmd](args) });
        } catch (err) {
            emit({ id, ok: false, error: describeError(err) });
        }
        if (cmd === "quit") break;
    }
    process.exit(0);
}

process.on("unhandledRejection", (err) => {
    console.error("unhandled rejection:", err);
    emit({ event: "log", level: "unhandled", message: String((err && err.stack) || err) });
});

main().catch((err) => {
    console.error(err);
    process.exit(1);
});
