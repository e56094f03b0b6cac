"""bff ``account.*``: profile, username, privacy, online status, notification settings.

A change the caller makes reaches their other sessions as an update (the calling
session has the answer); name and username changes also reach users who have
the caller as a contact.
"""

from __future__ import annotations

from teamgram.bff.rpc import RequestContext, Router
from teamgram.bff.users import me, push_to_other_devices, push_user_name
from teamgram.errors import RpcError
from teamgram.service.biz import privacy as pv
from teamgram.tl import TLObject, types
from teamgram.tl import functions as fn

router = Router()


# -------------------------------------------------------------------- profile
@router(fn.account.UpdateProfile)
async def update_profile(ctx: RequestContext, req: fn.account.UpdateProfile) -> types.User:
    users = ctx.server.users
    before = await users.get(me(ctx))
    old_names = (before.first_name, before.last_name) if before else None
    rec = await users.update_profile(me(ctx), req.first_name, req.last_name, req.about)
    if (rec.first_name, rec.last_name) != old_names:
        await push_user_name(ctx.server, me(ctx), exclude=ctx.session)
    return await users.user_for(me(ctx), me(ctx))


@router(fn.account.CheckUsername)
async def check_username(ctx: RequestContext, req: fn.account.CheckUsername) -> bool:
    return await ctx.server.users.check_username(me(ctx), req.username)


@router(fn.account.UpdateUsername)
async def update_username(ctx: RequestContext, req: fn.account.UpdateUsername) -> types.User:
    users = ctx.server.users
    await users.set_username(me(ctx), req.username)
    await push_user_name(ctx.server, me(ctx), exclude=ctx.session)
    return await users.user_for(me(ctx), me(ctx))


# -------------------------------------------------------------------- privacy
async def _privacy_rules(ctx: RequestContext, rules: list[TLObject]) -> types.account.PrivacyRules:
    named = pv.mentioned_users(rules)
    users = await ctx.server.users.users_for(me(ctx), named) if named else []
    return types.account.PrivacyRules(rules=rules, chats=[], users=users)


@router(fn.account.GetPrivacy)
async def get_privacy(
    ctx: RequestContext, req: fn.account.GetPrivacy
) -> types.account.PrivacyRules:
    key = pv.key_name(req.key)
    return await _privacy_rules(ctx, await ctx.server.privacy.get_rules(me(ctx), key))


@router(fn.account.SetPrivacy)
async def set_privacy(
    ctx: RequestContext, req: fn.account.SetPrivacy
) -> types.account.PrivacyRules:
    key = pv.key_name(req.key)
    users = ctx.server.users
    rules = pv.from_input_rules(req.rules, lambda u: users.resolve_input_user(me(ctx), u))
    rules = await ctx.server.privacy.set_rules(me(ctx), key, rules)
    push_to_other_devices(ctx, types.UpdatePrivacy(key=pv.key_object(key), rules=rules))
    if key == pv.STATUS_TIMESTAMP:
        # What contacts see of the caller's last seen changed: tell them.
        await ctx.server.status.announce(me(ctx), exact_only=False)
    return await _privacy_rules(ctx, rules)


# --------------------------------------------------------------------- status
@router(fn.account.UpdateStatus)
async def update_status(ctx: RequestContext, req: fn.account.UpdateStatus) -> bool:
    if req.offline:
        await ctx.server.status.set_offline(me(ctx))
    else:
        await ctx.server.status.set_online(me(ctx))
    return True


# -------------------------------------------------------------- notifications
def _notify_key(ctx: RequestContext, peer: TLObject) -> tuple[str, TLObject]:
    """The stored key of an ``InputNotifyPeer`` and the ``NotifyPeer`` it answers as."""
    if isinstance(peer, types.InputNotifyPeer):
        uid = ctx.server.users.resolve_input_peer_user(me(ctx), peer.peer)
        return f"peer:{uid}", types.NotifyPeer(peer=types.PeerUser(user_id=uid))
    if isinstance(peer, types.InputNotifyUsers):
        return "users", types.NotifyUsers()
    if isinstance(peer, types.InputNotifyChats):
        return "chats", types.NotifyChats()
    if isinstance(peer, types.InputNotifyBroadcasts):
        return "broadcasts", types.NotifyBroadcasts()
    raise RpcError(400, "PEER_ID_INVALID")  # forum topics: no forums here yet


def _settings(inp: types.InputPeerNotifySettings) -> types.PeerNotifySettings:
    return types.PeerNotifySettings(
        show_previews=True if inp.show_previews is None else inp.show_previews,
        silent=False if inp.silent is None else inp.silent,
        mute_until=inp.mute_until or 0,
        ios_sound=inp.sound,
        android_sound=inp.sound,
        other_sound=inp.sound,
        stories_muted=inp.stories_muted,
        stories_hide_sender=inp.stories_hide_sender,
        stories_ios_sound=inp.stories_sound,
        stories_android_sound=inp.stories_sound,
        stories_other_sound=inp.stories_sound,
    )


@router(fn.account.GetNotifySettings)
async def get_notify_settings(ctx: RequestContext, req: fn.account.GetNotifySettings) -> TLObject:
    key, _peer = _notify_key(ctx, req.peer)
    return await ctx.server.users.get_notify_settings(me(ctx), key)


@router(fn.account.UpdateNotifySettings)
async def update_notify_settings(ctx: RequestContext, req: fn.account.UpdateNotifySettings) -> bool:
    key, peer = _notify_key(ctx, req.peer)
    if not isinstance(req.settings, types.InputPeerNotifySettings):
        raise RpcError(400, "SETTINGS_INVALID")
    settings = _settings(req.settings)
    await ctx.server.users.set_notify_settings(me(ctx), key, settings)
    push_to_other_devices(ctx, types.UpdateNotifySettings(peer=peer, notify_settings=settings))
    return True


# ------------------------------------------------------------------------ push
# No push service (APNs/FCM) is wired up: devices are accepted and forgotten.
@router(fn.account.RegisterDevice, fn.account.UnregisterDevice, status="empty")
async def register_device(
    ctx: RequestContext, req: fn.account.RegisterDevice | fn.account.UnregisterDevice
) -> bool:
    return True
