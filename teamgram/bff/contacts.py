"""bff ``contacts.*``: the contact list, import by phone, usernames, search, blocks.

Imported users come back with this viewer's access hash, so they are messageable
at once. ``hash`` arguments use Telegram's list hash over what the client holds
(:func:`~teamgram.service.biz.contacts.contacts_hash`), computed the way clients
compute it, so a client with an up-to-date list gets ``contactsNotModified``.
"""

from __future__ import annotations

import time

from teamgram.bff.rpc import RequestContext, Router
from teamgram.bff.users import me
from teamgram.errors import RpcError
from teamgram.service.biz import privacy as pv
from teamgram.service.biz.contacts import contacts_hash
from teamgram.service.biz.users import NAME_MAX, normalize_phone
from teamgram.tl import TLObject, types
from teamgram.tl import functions as fn

router = Router()

SEARCH_MAX = 100
BLOCKED_PAGE_MAX = 100
IMPORT_MAX = 5000
# Phone-book entries kept server-side (contacts.getSaved): none on this server.
SAVED_COUNT = 0
_INT32_MAX = (1 << 31) - 1


def _updates(users: list[types.User], updates: list[TLObject] | None = None) -> types.Updates:
    """The ``Updates`` a contact change answers with (seq 0: not part of the sequence)."""
    return types.Updates(updates=updates or [], users=users, chats=[], date=int(time.time()), seq=0)


def _tell_other_devices(ctx: RequestContext, answer: types.Updates) -> None:
    ctx.server.sessions.push_to_user(me(ctx), answer, exclude=ctx.session)


# ------------------------------------------------------------------ usernames
@router(fn.contacts.ResolveUsername)
async def resolve_username(
    ctx: RequestContext, req: fn.contacts.ResolveUsername
) -> types.contacts.ResolvedPeer:
    name = req.username.strip().lstrip("@")
    channel = await ctx.server.channels.by_username(name) if name else None
    if channel is not None:  # public channels and supergroups share the namespace
        return types.contacts.ResolvedPeer(
            peer=types.PeerChannel(channel_id=channel.id),
            chats=[ctx.server.channels.view(channel, me(ctx))],
            users=[],
        )
    rec = await ctx.server.users.resolve_username(req.username)
    user = await ctx.server.users.user_for(me(ctx), rec.id)
    return types.contacts.ResolvedPeer(peer=types.PeerUser(user_id=rec.id), chats=[], users=[user])


def _matches(query: str, *fields: str | None) -> bool:
    """Whether some word of some field starts with the query (case-insensitive)."""
    for f in fields:
        if not f:
            continue
        low = f.lower()
        if low.startswith(query) or any(w.startswith(query) for w in low.split()):
            return True
    return False


@router(fn.contacts.Search)
async def search(ctx: RequestContext, req: fn.contacts.Search) -> types.contacts.Found:
    """My contacts matching by name or username, then others by public username.

    Channels and supergroups come too: the caller's own by title, public ones by
    username or title.
    """
    q = req.q.strip().lstrip("@").lower()
    if not q:
        raise RpcError(400, "QUERY_TOO_SHORT")
    limit = max(1, min(req.limit, SEARCH_MAX))
    users = ctx.server.users
    uid = me(ctx)
    mine = await ctx.server.contacts.contacts_of(uid)
    recs = await users.get_many(list(mine))
    my_ids = [
        c.contact_id
        for c in mine.values()
        if c.contact_id in recs
        and _matches(
            q,
            c.first_name,
            c.last_name,
            recs[c.contact_id].first_name,
            recs[c.contact_id].last_name,
            recs[c.contact_id].username,
        )
    ][:limit]
    found = await users.search(q, limit, {uid, *mine})
    other_ids = [r.id for r in found]
    views = await users.users_for(uid, my_ids + other_ids)
    chans = ctx.server.channels
    own = [
        c
        for c in await chans.get_many(sorted(await chans.channels_of(uid)))
        if _matches(q, c.title, c.username)
    ][:limit]
    own_ids = {c.id for c in own}
    public = [c for c in await chans.search_public(q, limit) if c.id not in own_ids]
    return types.contacts.Found(
        my_results=[types.PeerUser(user_id=u) for u in my_ids]
        + [types.PeerChannel(channel_id=c.id) for c in own],
        results=[types.PeerUser(user_id=u) for u in other_ids]
        + [types.PeerChannel(channel_id=c.id) for c in public],
        chats=[chans.view(c, uid) for c in own + public],
        users=views,
    )


# ---------------------------------------------------------------- the list
async def _sorted_ids(ctx: RequestContext) -> list[int]:
    return sorted(await ctx.server.contacts.contacts_of(me(ctx)))


@router(fn.contacts.GetContacts)
async def get_contacts(ctx: RequestContext, req: fn.contacts.GetContacts) -> TLObject:
    ids = await _sorted_ids(ctx)
    # Telegram: the hash of saved_count followed by the sorted contact ids.
    if req.hash and req.hash == contacts_hash([SAVED_COUNT, *ids]):
        return types.contacts.ContactsNotModified()
    views = await ctx.server.users.users_for(me(ctx), ids)
    return types.contacts.Contacts(
        contacts=[types.Contact(user_id=u.id, mutual=u.mutual_contact) for u in views],
        saved_count=SAVED_COUNT,
        users=views,
    )


@router(fn.contacts.GetContactIDs)
async def get_contact_ids(ctx: RequestContext, req: fn.contacts.GetContactIDs) -> list[int]:
    """Always the whole list (the ids that fit this pre-64-bit ``Vector<int>``).

    A Vector has no "not modified" form: an empty answer to a current hash would
    read as "no contacts".
    """
    return [u for u in await _sorted_ids(ctx) if u <= _INT32_MAX]


@router(fn.contacts.GetStatuses)
async def get_statuses(ctx: RequestContext, req: fn.contacts.GetStatuses) -> list[TLObject]:
    views = await ctx.server.users.users_for(me(ctx), await _sorted_ids(ctx))
    return [
        types.ContactStatus(user_id=u.id, status=u.status or types.UserStatusEmpty()) for u in views
    ]


@router(fn.contacts.ImportContacts)
async def import_contacts(
    ctx: RequestContext, req: fn.contacts.ImportContacts
) -> types.contacts.ImportedContacts:
    """Phones with an account become contacts; the rest are simply not imported.

    ``retry_contacts`` is Telegram's "try again later" list (a server-side limit),
    not "no such account": clients would re-send those forever, so it stays empty.
    """
    if len(req.contacts) > IMPORT_MAX:
        raise RpcError(400, "CONTACTS_TOO_MANY")
    uid = me(ctx)
    users = ctx.server.users
    imported: list[TLObject] = []
    ids: list[int] = []
    for c in req.contacts:
        if not isinstance(c, types.InputPhoneContact):
            continue
        phone = normalize_phone(c.phone)
        rec = await users.by_phone(phone) if phone else None
        if rec is None or rec.deleted or rec.id == uid:
            continue
        await ctx.server.contacts.add(
            uid, rec.id, c.first_name.strip()[:NAME_MAX], c.last_name.strip()[:NAME_MAX], phone
        )
        imported.append(types.ImportedContact(user_id=rec.id, client_id=c.client_id))
        ids.append(rec.id)
    views = await users.users_for(uid, list(dict.fromkeys(ids)))
    if views:
        _tell_other_devices(ctx, _updates(views))
    return types.contacts.ImportedContacts(
        imported=imported, popular_invites=[], retry_contacts=[], users=views
    )


async def _add(
    ctx: RequestContext, target: int, first: str, last: str, phone: str, share_phone: bool
) -> types.Updates:
    uid = me(ctx)
    if target == uid:
        raise RpcError(400, "CONTACT_ID_INVALID")
    first, last = first.strip()[:NAME_MAX], last.strip()[:NAME_MAX]
    if not first and not last:
        raise RpcError(400, "CONTACT_NAME_EMPTY")
    await ctx.server.contacts.add(uid, target, first, last, normalize_phone(phone))
    if share_phone:
        await ctx.server.privacy.allow_user(uid, pv.PHONE_NUMBER, target)
    user = await ctx.server.users.user_for(uid, target)
    answer = _updates(
        [user],
        [
            types.UpdatePeerSettings(
                peer=types.PeerUser(user_id=target), settings=types.PeerSettings()
            )
        ],
    )
    _tell_other_devices(ctx, answer)
    return answer


@router(fn.contacts.AddContact)
async def add_contact(ctx: RequestContext, req: fn.contacts.AddContact) -> types.Updates:
    target = ctx.server.users.resolve_input_user(me(ctx), req.id)
    return await _add(
        ctx, target, req.first_name, req.last_name, req.phone, req.add_phone_privacy_exception
    )


@router(fn.contacts.AcceptContact)
async def accept_contact(ctx: RequestContext, req: fn.contacts.AcceptContact) -> types.Updates:
    """Add back someone who added me, sharing my phone with them (Telegram's button)."""
    target = ctx.server.users.resolve_input_user(me(ctx), req.id)
    if not await ctx.server.contacts.is_contact(target, me(ctx)):
        raise RpcError(400, "CONTACT_REQ_MISSING")
    rec = await ctx.server.users.get(target)
    if rec is None:
        raise RpcError(400, "USER_ID_INVALID")
    return await _add(ctx, target, rec.first_name, rec.last_name, "", share_phone=True)


@router(fn.contacts.DeleteContacts)
async def delete_contacts(ctx: RequestContext, req: fn.contacts.DeleteContacts) -> types.Updates:
    users = ctx.server.users
    ids = [users.resolve_input_user(me(ctx), u) for u in req.id]
    await ctx.server.contacts.delete(me(ctx), ids)
    answer = _updates(await users.users_for(me(ctx), list(dict.fromkeys(ids))))
    _tell_other_devices(ctx, answer)
    return answer


@router(fn.contacts.DeleteByPhones)
async def delete_by_phones(ctx: RequestContext, req: fn.contacts.DeleteByPhones) -> bool:
    phones = {normalize_phone(p) for p in req.phones} - {""}
    mine = await ctx.server.contacts.contacts_of(me(ctx))
    recs = await ctx.server.users.get_many(list(mine))
    gone = [u for u, r in recs.items() if r.phone in phones]
    if gone:
        await ctx.server.contacts.delete(me(ctx), gone)
        _tell_other_devices(ctx, _updates(await ctx.server.users.users_for(me(ctx), gone)))
    return True


@router(fn.contacts.GetSaved, status="empty")
async def get_saved(ctx: RequestContext, req: fn.contacts.GetSaved) -> list[TLObject]:
    return []  # no phone-book entries are kept server-side


@router(fn.contacts.ResetSaved, status="empty")
async def reset_saved(ctx: RequestContext, req: fn.contacts.ResetSaved) -> bool:
    return True


# --------------------------------------------------------------------- blocks
def _blocked_update(target: int, blocked: bool) -> types.UpdateShort:
    update = types.UpdatePeerBlocked(peer_id=types.PeerUser(user_id=target), blocked=blocked)
    return types.UpdateShort(update=update, date=int(time.time()))


async def _set_blocked(ctx: RequestContext, peer: TLObject, stories: bool, block: bool) -> bool:
    target = ctx.server.users.resolve_input_peer_user(me(ctx), peer)
    if target == me(ctx):
        raise RpcError(400, "CONTACT_ID_INVALID")
    if stories:
        return True  # no stories on this server: nothing to hide them from
    svc = ctx.server.contacts
    changed = await (svc.block(me(ctx), target) if block else svc.unblock(me(ctx), target))
    if changed:
        ctx.server.sessions.push_to_user(
            me(ctx), _blocked_update(target, block), exclude=ctx.session
        )
    return True


@router(fn.contacts.Block)
async def block(ctx: RequestContext, req: fn.contacts.Block) -> bool:
    return await _set_blocked(ctx, req.id, req.my_stories_from, block=True)


@router(fn.contacts.Unblock)
async def unblock(ctx: RequestContext, req: fn.contacts.Unblock) -> bool:
    return await _set_blocked(ctx, req.id, req.my_stories_from, block=False)


@router(fn.contacts.GetBlocked)
async def get_blocked(ctx: RequestContext, req: fn.contacts.GetBlocked) -> TLObject:
    if req.my_stories_from:
        return types.contacts.Blocked(blocked=[], chats=[], users=[])
    limit = max(0, min(req.limit, BLOCKED_PAGE_MAX))
    offset = max(0, req.offset)
    total, page = await ctx.server.contacts.blocked_page(me(ctx), offset, limit)
    blocked = [types.PeerBlocked(peer_id=types.PeerUser(user_id=p), date=d) for p, d in page]
    views = await ctx.server.users.users_for(me(ctx), [p for p, _d in page])
    if offset == 0 and total == len(page):
        return types.contacts.Blocked(blocked=blocked, chats=[], users=views)
    return types.contacts.BlockedSlice(count=total, blocked=blocked, chats=[], users=views)
