"""TL codec throughput on a realistic mix of objects.

    .venv/bin/python bench/tl_codec.py [--seconds 0.8] [--profile ROW]

Prints, per object kind, the serialized size and encode/decode throughput in
objects/s and MB/s (MB = 10**6 bytes). Each figure is the best of several timed
batches of about ``--seconds / 4`` each, so a row takes roughly 2 x ``--seconds``.
Rows marked ``@198`` go through the layer-198 codec (teamgram.tl.layers): canonical
objects written as a GramJS client reads them, and its requests read into
canonical objects. ``--layers`` compares the two codecs head to head instead
(alternating timed batches, best of each, which cancels out a busy machine).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from teamgram.tl import decode, functions, types
from teamgram.tl.core import write_value
from teamgram.tl.layers import codec_for

TEXT = (
    "Hello! Here is a link to https://example.com/some/page?id=42 and some *bold* text, "
    "с кириллицей и эмодзи 🎉, #hashtag @username — a typical chat message."  # noqa: RUF001
)


def _entities() -> list[Any]:
    return [
        types.MessageEntityUrl(offset=21, length=34),
        types.MessageEntityBold(offset=69, length=6),
        types.MessageEntityHashtag(offset=119, length=8),
        types.MessageEntityMention(offset=128, length=9),
        types.MessageEntityTextUrl(offset=0, length=5, url="https://t.me/teamgram"),
    ]


def send_message() -> Any:
    return functions.messages.SendMessage(
        peer=types.InputPeerChannel(channel_id=1_234_567_890, access_hash=-8_765_432_109_876),
        message=TEXT,
        random_id=-5_432_198_765_432_198,
        reply_to=types.InputReplyToMessage(reply_to_msg_id=4321, top_msg_id=1),
        entities=_entities(),
        clear_draft=True,
    )


def message(i: int = 0) -> Any:
    return types.Message(
        id=100_000 + i,
        peer_id=types.PeerChannel(channel_id=1_234_567_890),
        date=1_700_000_000 + i,
        message=TEXT,
        out=i % 2 == 0,
        from_id=types.PeerUser(user_id=777_000 + i % 20),
        fwd_from=types.MessageFwdHeader(
            date=1_690_000_000, from_id=types.PeerChannel(channel_id=42), channel_post=99
        ),
        reply_to=types.MessageReplyHeader(reply_to_msg_id=99_999, quote_text="quoted"),
        entities=_entities(),
        views=1234,
        forwards=5,
        edit_date=1_700_000_100,
        replies=types.MessageReplies(replies=3, replies_pts=100, recent_repliers=[]),
        reactions=types.MessageReactions(
            results=[
                types.ReactionCount(reaction=types.ReactionEmoji(emoticon="👍"), count=10),
                types.ReactionCount(reaction=types.ReactionEmoji(emoticon="❤"), count=3),
            ]
        ),
    )


def user(i: int) -> Any:
    return types.User(
        id=1_000_000 + i,
        access_hash=-(2**60) + i,
        first_name=f"User{i}",
        last_name="Lastname",
        username=f"user_{i}",
        phone="79990000000",
        contact=i % 3 == 0,
        photo=types.UserProfilePhoto(photo_id=5_000_000 + i, dc_id=2),
        status=types.UserStatusOffline(was_online=1_700_000_000 - i),
        lang_code="en",
    )


def updates(n: int = 50) -> Any:
    return types.Updates(
        updates=[
            types.UpdateNewMessage(message=message(i), pts=10_000 + i, pts_count=1)
            for i in range(n)
        ],
        users=[user(i) for i in range(20)],
        chats=[
            types.Channel(
                id=1_234_567_890,
                title="Channel",
                photo=types.ChatPhotoEmpty(),
                date=1_600_000_000,
                access_hash=77,
                megagroup=True,
                participants_count=5000,
            )
        ],
        date=1_700_000_000,
        seq=0,
    )


class Row:
    def __init__(
        self, name: str, encode: Callable[[], bytes], decode_: Callable[[bytes], Any]
    ) -> None:
        self.name = name
        self.encode = encode
        self.decode = decode_


def rows() -> list[Row]:
    send, msg, upd = send_message(), message(), updates()
    users = [user(i) for i in range(100)]

    def enc_users() -> bytes:
        b = bytearray()
        write_value(b, users, "object")
        return bytes(b)

    old = codec_for(198)

    def enc_users_198() -> bytes:
        return old.encode_result(functions.users.GetUsers, users)

    out = [
        Row("messages.sendMessage", send.to_bytes, decode),
        Row("messages.sendMessage @198", lambda: old.encode(send), old.decode),
        Row("message (entities, reply, fwd)", msg.to_bytes, decode),
        Row("message @198", lambda: old.encode(msg), old.decode),
        Row("updates (50 messages)", upd.to_bytes, decode),
        Row("updates (50 messages) @198", lambda: old.encode(upd), old.decode),
        Row("Vector<User> x100", enc_users, functions.users.GetUsers.read_result),
        Row("Vector<User> x100 @198", enc_users_198, old.decode),
    ]
    # sanity: every row round-trips
    assert decode(send.to_bytes()) == send
    assert decode(msg.to_bytes()) == msg
    assert decode(upd.to_bytes()) == upd
    assert functions.users.GetUsers.read_result(enc_users()) == users
    assert old.decode(old.encode(send)) == send
    assert old.decode(old.encode(upd)) == upd
    assert old.decode(enc_users_198()) == users
    return out


def _rate(fn: Callable[[], Any], seconds: float) -> float:
    """Best calls/s over several batches of about seconds/4."""
    n = 1
    while True:  # calibrate
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        dt = time.perf_counter() - t0
        if dt > 0.05:
            break
        n *= 2
    per_batch = max(1, int(n * (seconds / 4) / dt))
    best = 0.0
    for _ in range(4):
        t0 = time.perf_counter()
        for _ in range(per_batch):
            fn()
        best = max(best, per_batch / (time.perf_counter() - t0))
    return best


def run(seconds: float) -> None:
    header = (
        f"{'object':<32} {'bytes':>7} | {'encode obj/s':>12} {'MB/s':>7} | "
        f"{'decode obj/s':>12} {'MB/s':>7}"
    )
    print(f"Python {sys.version.split()[0]}")
    print(header)
    print("-" * len(header))
    for row in rows():
        data = row.encode()
        enc = _rate(row.encode, seconds)
        dec = _rate(lambda row=row, data=data: row.decode(data), seconds)
        size = len(data)
        print(
            f"{row.name:<32} {size:>7} | {enc:>12,.0f} {enc * size / 1e6:>7.1f} | "
            f"{dec:>12,.0f} {dec * size / 1e6:>7.1f}"
        )


def compare_layers(seconds: float, layer: int = 198) -> None:
    """Per-object cost of the layer codec against the canonical one, batches alternating."""
    from teamgram.tl.layers import CANONICAL

    old = codec_for(layer)
    send, msg, upd = send_message(), message(), updates()
    users = [user(i) for i in range(100)]
    get_users = functions.users.GetUsers
    cases: list[tuple[str, Callable[[], Any], Callable[[], Any]]] = [
        ("encode updates (50 messages)", lambda: CANONICAL.encode(upd), lambda: old.encode(upd)),
        ("encode message", lambda: CANONICAL.encode(msg), lambda: old.encode(msg)),
        (
            "encode_result Vector<User> x100",
            lambda: CANONICAL.encode_result(get_users, users),
            lambda: old.encode_result(get_users, users),
        ),
    ]
    for label, obj in (("decode messages.sendMessage", send), ("decode updates (50 msgs)", upd)):
        canon_data, old_data = CANONICAL.encode(obj), old.encode(obj)
        cases.append(
            (
                label,
                lambda d=canon_data: CANONICAL.decode(d),
                lambda d=old_data: old.decode(d),
            )
        )
    print(f"Python {sys.version.split()[0]}, layer {layer} codec vs canonical")
    header = f"{'operation':<34} {'canonical':>12} {f'layer {layer}':>12} {'ratio':>6}"
    print(header)
    print("-" * len(header))
    for label, canon_fn, old_fn in cases:
        n = 1
        while True:  # calibrate a batch to ~seconds/40
            t0 = time.perf_counter()
            for _ in range(n):
                canon_fn()
            if time.perf_counter() - t0 > seconds / 40:
                break
            n *= 2
        best = [float("inf"), float("inf")]
        for _ in range(20):
            for i, f in enumerate((canon_fn, old_fn)):
                t0 = time.perf_counter()
                for _ in range(n):
                    f()
                best[i] = min(best[i], (time.perf_counter() - t0) / n)
        print(
            f"{label:<34} {best[0] * 1e6:>9.1f} us {best[1] * 1e6:>9.1f} us "
            f"{best[1] / best[0]:>6.2f}"
        )


def profile(index: int) -> None:
    row = rows()[index]
    data = row.encode()
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(2000):
        row.encode()
        row.decode(data)
    prof.disable()
    pstats.Stats(prof).sort_stats("tottime").print_stats(15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.8, help="time per figure")
    parser.add_argument("--profile", type=int, metavar="ROW", help="cProfile one row (0-7)")
    parser.add_argument(
        "--layers", action="store_true", help="layer-198 codec vs canonical, head to head"
    )
    args = parser.parse_args()
    if args.profile is not None:
        profile(args.profile)
    elif args.layers:
        compare_layers(args.seconds)
    else:
        run(args.seconds)


if __name__ == "__main__":
    main()
