"""bff ``users.*``, and the profile-change fan-out the account and contacts areas share.

Every ``InputUser`` goes through :meth:`UserService.resolve_input_user`, so a hash
not issued to this viewer is USER_ID_INVALID.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from teamgram.bff.rpc import RequestContext, Router
from teamgram.tl import TLObject, types
from teamgram.tl import functions as fn

if TYPE_CHECKING:
    from teamgram.server import Server

router = Router()

# Telegram's cap on one users.getUsers call.
GET_USERS_MAX = 200


def me(ctx: RequestContext) -> int:
    """The signed-in caller (the router only lets signed-in calls through)."""
    assert ctx.user_id is not None
    return ctx.user_id


def short(update: TLObject) -> types.UpdateShort:
    return types.UpdateShort(update=update, date=int(time.time()))


def push_to_other_devices(ctx: RequestContext, update: TLObject) -> None:
    """Tell the caller's other sessions (not the calling one) about a change they made."""
    ctx.server.sessions.push_to_user(me(ctx), short(update), exclude=ctx.session)


async def online_users(server: Server, ids: set[int] | list[int]) -> list[int]:
    """Those of ``ids`` with a live session (nobody else can be pushed to)."""
    sessions = server.sessions
    return sorted([u for u in ids if await sessions.online(u)])


async def push_user_name(server: Server, user_id: int, exclude: Any = None) -> None:
    """``updateUserName`` to the user's devices and to users who have them as a contact.

    Each recipient gets the names as they see them (a contact keeps the name they
    saved); ``exclude`` is the session that made the change (it has the answer).
    """
    watchers = await server.contacts.owners_having(user_id)
    for viewer in await online_users(server, {user_id} | watchers):
        view = await server.users.user_for(viewer, user_id)
        usernames = (
            [types.Username(username=view.username, editable=viewer == user_id, active=True)]
            if view.username
            else []
        )
        update = types.UpdateUserName(
            user_id=user_id,
            first_name=view.first_name or "",
            last_name=view.last_name or "",
            usernames=usernames,
        )
        server.sessions.push_to_user(
            viewer, short(update), exclude=exclude if viewer == user_id else None
        )


@router(fn.users.GetUsers)
async def get_users(ctx: RequestContext, req: fn.users.GetUsers) -> list[types.User]:
    users = ctx.server.users
    ids = [users.resolve_input_user(me(ctx), u) for u in req.id[:GET_USERS_MAX]]
    return await users.users_for(me(ctx), ids)


@router(fn.users.GetFullUser)
async def get_full_user(ctx: RequestContext, req: fn.users.GetFullUser) -> types.users.UserFull:
    users = ctx.server.users
    user_id = users.resolve_input_user(me(ctx), req.id)
    full = await users.full_user_for(me(ctx), user_id)
    if user_id != me(ctx) and isinstance(full.full_user, types.UserFull):
        full.full_user.common_chats_count = len(await ctx.server.chats.common(me(ctx), user_id))
    return full
