"""bff sticker, emoji, reaction and other per-user listings clients load at startup.

Most live under ``messages.*``; the account/stories/contacts/payments listings a
client fetches in the same burst are here too until their areas exist. This
server has no stickers, reactions, themes or stories yet, so each answer is the
well-formed empty one. Hash-cached lists follow Telegram: an empty list hashes
to 0, and a client that sends the current hash gets the ``...NotModified``
constructor instead of the list.
"""

from __future__ import annotations

import hashlib
import zlib
from typing import TypeVar

from teamgram.bff.rpc import RequestContext, Router
from teamgram.errors import RpcError
from teamgram.tl import TLObject, types
from teamgram.tl import functions as fn

router = Router()

EMPTY_HASH = 0

_N = TypeVar("_N", bound=TLObject)
_F = TypeVar("_F", bound=TLObject)


def cached(client_hash: int, not_modified: _N, full: _F, current: int = EMPTY_HASH) -> _N | _F:
    """``not_modified`` when the client already holds the content hashed ``current``."""
    return not_modified if client_hash == current else full


# ------------------------------------------------------------------ sticker sets
def _id64(name: str) -> int:
    """A stable signed 64-bit id (set ids, access hashes) derived from a name."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little", signed=True)


def _hash32(name: str) -> int:
    """A stable non-zero signed 32-bit content hash: 0 would read as "not cached"."""
    crc = zlib.crc32(name.encode())
    return (crc - (1 << 32) if crc >= 1 << 31 else crc) or 1


def _system_set(short_name: str, title: str, *, emojis: bool = False) -> types.StickerSet:
    return types.StickerSet(
        id=_id64(f"stickerset:{short_name}"),
        access_hash=_id64(f"stickerset-access:{short_name}"),
        title=title,
        short_name=short_name,
        count=0,
        hash=_hash32(f"stickerset:{short_name}:0"),
        official=True,
        emojis=emojis,
    )


# The special sets clients ask for by kind (animated emoji, status emoji, dice...).
# They exist, empty, so clients fall back to plain emoji instead of retrying an
# error at every start.
SYSTEM_SETS: dict[type[TLObject], types.StickerSet] = {
    types.InputStickerSetAnimatedEmoji: _system_set("AnimatedEmojies", "Animated Emoji"),
    types.InputStickerSetAnimatedEmojiAnimations: _system_set(
        "EmojiAnimations", "Animated Emoji Animations"
    ),
    types.InputStickerSetPremiumGifts: _system_set("GiftsPremium", "Premium Gifts"),
    types.InputStickerSetTonGifts: _system_set("GiftsTon", "TON Gifts"),
    types.InputStickerSetEmojiGenericAnimations: _system_set(
        "EmojiGenericAnimations", "Generic Animations"
    ),
    types.InputStickerSetEmojiDefaultStatuses: _system_set(
        "StatusEmojiDefault", "Default Statuses", emojis=True
    ),
    types.InputStickerSetEmojiDefaultTopicIcons: _system_set(
        "TopicIconsDefault", "Default Topic Icons", emojis=True
    ),
    types.InputStickerSetEmojiChannelDefaultStatuses: _system_set(
        "ChannelStatusEmojiDefault", "Default Channel Statuses", emojis=True
    ),
}
# The dice Telegram clients can send; each has its own animation set.
DICE_EMOTICONS = ("🎲", "🎯", "🏀", "⚽", "🎰", "🎳")
DICE_SETS: dict[str, types.StickerSet] = {
    e: _system_set(f"Dice{e.encode().hex()}", e) for e in DICE_EMOTICONS
}
_ALL_SETS = [*SYSTEM_SETS.values(), *DICE_SETS.values()]
SETS_BY_ID: dict[int, types.StickerSet] = {s.id: s for s in _ALL_SETS}
SETS_BY_NAME: dict[str, types.StickerSet] = {s.short_name.lower(): s for s in _ALL_SETS}


def find_sticker_set(inp: TLObject) -> types.StickerSet:
    """The set an ``InputStickerSet`` names, or STICKERSET_INVALID."""
    found: types.StickerSet | None = None
    if isinstance(inp, types.InputStickerSetID):
        found = SETS_BY_ID.get(inp.id)
        if found is not None and found.access_hash != inp.access_hash:
            found = None
    elif isinstance(inp, types.InputStickerSetShortName):
        found = SETS_BY_NAME.get(inp.short_name.lower())
    elif isinstance(inp, types.InputStickerSetDice):
        found = DICE_SETS.get(inp.emoticon)
    else:
        found = SYSTEM_SETS.get(type(inp))
    if found is None:
        raise RpcError(400, "STICKERSET_INVALID")
    return found


@router(fn.messages.GetStickerSet, status="empty")
async def get_sticker_set(
    ctx: RequestContext, req: fn.messages.GetStickerSet
) -> types.messages.StickerSet | types.messages.StickerSetNotModified:
    found = find_sticker_set(req.stickerset)
    return cached(
        req.hash,
        types.messages.StickerSetNotModified(),
        types.messages.StickerSet(set=found, packs=[], keywords=[], documents=[]),
        current=found.hash,
    )


# -------------------------------------------------------------- sticker lists
@router(fn.messages.GetStickers, status="empty")
async def get_stickers(
    ctx: RequestContext, req: fn.messages.GetStickers
) -> types.messages.Stickers | types.messages.StickersNotModified:
    return cached(
        req.hash,
        types.messages.StickersNotModified(),
        types.messages.Stickers(hash=EMPTY_HASH, stickers=[]),
    )


@router(
    fn.messages.GetAllStickers,
    fn.messages.GetEmojiStickers,
    fn.messages.GetMaskStickers,
    status="empty",
)
async def get_all_stickers(
    ctx: RequestContext,
    req: fn.messages.GetAllStickers | fn.messages.GetEmojiStickers | fn.messages.GetMaskStickers,
) -> types.messages.AllStickers | types.messages.AllStickersNotModified:
    return cached(
        req.hash,
        types.messages.AllStickersNotModified(),
        types.messages.AllStickers(hash=EMPTY_HASH, sets=[]),
    )


@router(
    fn.messages.GetFeaturedStickers,
    fn.messages.GetFeaturedEmojiStickers,
    fn.messages.GetOldFeaturedStickers,
    status="empty",
)
async def get_featured_stickers(
    ctx: RequestContext,
    req: fn.messages.GetFeaturedStickers
    | fn.messages.GetFeaturedEmojiStickers
    | fn.messages.GetOldFeaturedStickers,
) -> types.messages.FeaturedStickers | types.messages.FeaturedStickersNotModified:
    return cached(
        req.hash,
        types.messages.FeaturedStickersNotModified(count=0),
        types.messages.FeaturedStickers(hash=EMPTY_HASH, count=0, sets=[], unread=[]),
    )


@router(fn.messages.GetArchivedStickers, status="empty")
async def get_archived_stickers(
    ctx: RequestContext, req: fn.messages.GetArchivedStickers
) -> types.messages.ArchivedStickers:
    return types.messages.ArchivedStickers(count=0, sets=[])


@router(fn.messages.GetRecentStickers, status="empty")
async def get_recent_stickers(
    ctx: RequestContext, req: fn.messages.GetRecentStickers
) -> types.messages.RecentStickers | types.messages.RecentStickersNotModified:
    return cached(
        req.hash,
        types.messages.RecentStickersNotModified(),
        types.messages.RecentStickers(hash=EMPTY_HASH, packs=[], stickers=[], dates=[]),
    )


@router(fn.messages.GetFavedStickers, status="empty")
async def get_faved_stickers(
    ctx: RequestContext, req: fn.messages.GetFavedStickers
) -> types.messages.FavedStickers | types.messages.FavedStickersNotModified:
    return cached(
        req.hash,
        types.messages.FavedStickersNotModified(),
        types.messages.FavedStickers(hash=EMPTY_HASH, packs=[], stickers=[]),
    )


@router(fn.messages.GetSavedGifs, status="empty")
async def get_saved_gifs(
    ctx: RequestContext, req: fn.messages.GetSavedGifs
) -> types.messages.SavedGifs | types.messages.SavedGifsNotModified:
    return cached(
        req.hash,
        types.messages.SavedGifsNotModified(),
        types.messages.SavedGifs(hash=EMPTY_HASH, gifs=[]),
    )


# ---------------------------------------------------------------------- emoji
@router(fn.messages.GetEmojiKeywords, status="empty")
async def get_emoji_keywords(
    ctx: RequestContext, req: fn.messages.GetEmojiKeywords
) -> types.EmojiKeywordsDifference:
    return types.EmojiKeywordsDifference(
        lang_code=req.lang_code, from_version=0, version=0, keywords=[]
    )


@router(fn.messages.GetEmojiKeywordsDifference, status="empty")
async def get_emoji_keywords_difference(
    ctx: RequestContext, req: fn.messages.GetEmojiKeywordsDifference
) -> types.EmojiKeywordsDifference:
    # Never a version older than the client's: it would look like a rollback.
    return types.EmojiKeywordsDifference(
        lang_code=req.lang_code,
        from_version=req.from_version,
        version=max(req.from_version, 0),
        keywords=[],
    )


@router(fn.messages.GetEmojiKeywordsLanguages, status="empty")
async def get_emoji_keywords_languages(
    ctx: RequestContext, req: fn.messages.GetEmojiKeywordsLanguages
) -> list[types.EmojiLanguage]:
    return []  # keywords exist for no language: clients use their built-in ones


@router(
    fn.messages.GetEmojiGroups,
    fn.messages.GetEmojiStatusGroups,
    fn.messages.GetEmojiProfilePhotoGroups,
    fn.messages.GetEmojiStickerGroups,
    status="empty",
)
async def get_emoji_groups(
    ctx: RequestContext,
    req: fn.messages.GetEmojiGroups
    | fn.messages.GetEmojiStatusGroups
    | fn.messages.GetEmojiProfilePhotoGroups
    | fn.messages.GetEmojiStickerGroups,
) -> types.messages.EmojiGroups | types.messages.EmojiGroupsNotModified:
    return cached(
        req.hash,
        types.messages.EmojiGroupsNotModified(),
        types.messages.EmojiGroups(hash=EMPTY_HASH, groups=[]),
    )


@router(
    fn.account.GetDefaultEmojiStatuses,
    fn.account.GetRecentEmojiStatuses,
    fn.account.GetChannelDefaultEmojiStatuses,
    fn.account.GetCollectibleEmojiStatuses,
    status="empty",
)
async def get_emoji_statuses(
    ctx: RequestContext,
    req: fn.account.GetDefaultEmojiStatuses
    | fn.account.GetRecentEmojiStatuses
    | fn.account.GetChannelDefaultEmojiStatuses
    | fn.account.GetCollectibleEmojiStatuses,
) -> types.account.EmojiStatuses | types.account.EmojiStatusesNotModified:
    return cached(
        req.hash,
        types.account.EmojiStatusesNotModified(),
        types.account.EmojiStatuses(hash=EMPTY_HASH, statuses=[]),
    )


@router(
    fn.account.GetDefaultProfilePhotoEmojis,
    fn.account.GetDefaultGroupPhotoEmojis,
    fn.account.GetDefaultBackgroundEmojis,
    fn.account.GetChannelRestrictedStatusEmojis,
    status="empty",
)
async def get_emoji_list(
    ctx: RequestContext,
    req: fn.account.GetDefaultProfilePhotoEmojis
    | fn.account.GetDefaultGroupPhotoEmojis
    | fn.account.GetDefaultBackgroundEmojis
    | fn.account.GetChannelRestrictedStatusEmojis,
) -> types.EmojiList | types.EmojiListNotModified:
    return cached(
        req.hash,
        types.EmojiListNotModified(),
        types.EmojiList(hash=EMPTY_HASH, document_id=[]),
    )


# ------------------------------------------------------------------ reactions
@router(fn.messages.GetAvailableReactions, status="empty")
async def get_available_reactions(
    ctx: RequestContext, req: fn.messages.GetAvailableReactions
) -> types.messages.AvailableReactions | types.messages.AvailableReactionsNotModified:
    return cached(
        req.hash,
        types.messages.AvailableReactionsNotModified(),
        types.messages.AvailableReactions(hash=EMPTY_HASH, reactions=[]),
    )


@router(
    fn.messages.GetTopReactions,
    fn.messages.GetRecentReactions,
    fn.messages.GetDefaultTagReactions,
    status="empty",
)
async def get_reactions(
    ctx: RequestContext,
    req: fn.messages.GetTopReactions
    | fn.messages.GetRecentReactions
    | fn.messages.GetDefaultTagReactions,
) -> types.messages.Reactions | types.messages.ReactionsNotModified:
    return cached(
        req.hash,
        types.messages.ReactionsNotModified(),
        types.messages.Reactions(hash=EMPTY_HASH, reactions=[]),
    )


@router(fn.messages.GetSavedReactionTags, status="empty")
async def get_saved_reaction_tags(
    ctx: RequestContext, req: fn.messages.GetSavedReactionTags
) -> types.messages.SavedReactionTags | types.messages.SavedReactionTagsNotModified:
    return cached(
        req.hash,
        types.messages.SavedReactionTagsNotModified(),
        types.messages.SavedReactionTags(tags=[], hash=EMPTY_HASH),
    )


@router(fn.account.GetReactionsNotifySettings, status="empty")
async def get_reactions_notify_settings(
    ctx: RequestContext, req: fn.account.GetReactionsNotifySettings
) -> types.ReactionsNotifySettings:
    # Conservative defaults until settings are stored: contacts' reactions notify.
    return types.ReactionsNotifySettings(
        sound=types.NotificationSoundDefault(),
        show_previews=True,
        messages_notify_from=types.ReactionNotificationsFromContacts(),
        stories_notify_from=types.ReactionNotificationsFromContacts(),
    )


# ------------------------------------------------------- chat-list furniture
@router(fn.messages.GetAttachMenuBots, status="empty")
async def get_attach_menu_bots(
    ctx: RequestContext, req: fn.messages.GetAttachMenuBots
) -> types.AttachMenuBots | types.AttachMenuBotsNotModified:
    return cached(
        req.hash,
        types.AttachMenuBotsNotModified(),
        types.AttachMenuBots(hash=EMPTY_HASH, bots=[], users=[]),
    )


@router(fn.messages.GetDefaultHistoryTTL, status="empty")
async def get_default_history_ttl(
    ctx: RequestContext, req: fn.messages.GetDefaultHistoryTTL
) -> types.DefaultHistoryTTL:
    return types.DefaultHistoryTTL(period=0)  # 0: new chats do not auto-delete


@router(fn.messages.GetDialogFilters, status="empty")
async def get_dialog_filters(
    ctx: RequestContext, req: fn.messages.GetDialogFilters
) -> types.messages.DialogFilters:
    return types.messages.DialogFilters(filters=[])


@router(fn.messages.GetSuggestedDialogFilters, status="empty")
async def get_suggested_dialog_filters(
    ctx: RequestContext, req: fn.messages.GetSuggestedDialogFilters
) -> list[types.DialogFilterSuggested]:
    return []


@router(fn.messages.GetQuickReplies, status="empty")
async def get_quick_replies(
    ctx: RequestContext, req: fn.messages.GetQuickReplies
) -> types.messages.QuickReplies | types.messages.QuickRepliesNotModified:
    return cached(
        req.hash,
        types.messages.QuickRepliesNotModified(),
        types.messages.QuickReplies(quick_replies=[], messages=[], chats=[], users=[]),
    )


# -------------------------------------------------------------------- account
@router(fn.account.GetThemes, fn.account.GetChatThemes, status="empty")
async def get_themes(
    ctx: RequestContext, req: fn.account.GetThemes | fn.account.GetChatThemes
) -> types.account.Themes | types.account.ThemesNotModified:
    return cached(
        req.hash,
        types.account.ThemesNotModified(),
        types.account.Themes(hash=EMPTY_HASH, themes=[]),
    )


@router(fn.account.GetWallPapers, status="empty")
async def get_wall_papers(
    ctx: RequestContext, req: fn.account.GetWallPapers
) -> types.account.WallPapers | types.account.WallPapersNotModified:
    return cached(
        req.hash,
        types.account.WallPapersNotModified(),
        types.account.WallPapers(hash=EMPTY_HASH, wallpapers=[]),
    )


@router(fn.account.GetSavedRingtones, status="empty")
async def get_saved_ringtones(
    ctx: RequestContext, req: fn.account.GetSavedRingtones
) -> types.account.SavedRingtones | types.account.SavedRingtonesNotModified:
    return cached(
        req.hash,
        types.account.SavedRingtonesNotModified(),
        types.account.SavedRingtones(hash=EMPTY_HASH, ringtones=[]),
    )


@router(fn.account.GetContentSettings, status="empty")
async def get_content_settings(
    ctx: RequestContext, req: fn.account.GetContentSettings
) -> types.account.ContentSettings:
    # Nothing is filtered as sensitive, so there is no switch to offer.
    return types.account.ContentSettings()


@router(fn.account.GetGlobalPrivacySettings, status="empty")
async def get_global_privacy_settings(
    ctx: RequestContext, req: fn.account.GetGlobalPrivacySettings
) -> types.GlobalPrivacySettings:
    return types.GlobalPrivacySettings()  # every option at its default (off)


# -------------------------------------------------------------------- stories
# Opaque to clients; it changes when the set of peers with stories changes.
STORIES_STATE = "teamgram-stories-0"


@router(fn.stories.GetAllStories, status="empty")
async def get_all_stories(
    ctx: RequestContext, req: fn.stories.GetAllStories
) -> types.stories.AllStories | types.stories.AllStoriesNotModified:
    stealth = types.StoriesStealthMode()
    # A state without `next` asks "anything new since?"; with `next` it paginates.
    if req.state == STORIES_STATE and not req.next:
        return types.stories.AllStoriesNotModified(state=STORIES_STATE, stealth_mode=stealth)
    return types.stories.AllStories(
        count=0,
        state=STORIES_STATE,
        peer_stories=[],
        chats=[],
        users=[],
        stealth_mode=stealth,
    )


@router(fn.stories.GetPeerMaxIDs, status="empty")
async def get_peer_max_ids(
    ctx: RequestContext, req: fn.stories.GetPeerMaxIDs
) -> list[types.RecentStory]:
    # One entry per peer asked, in order; no max_id: nobody has posted a story.
    return [types.RecentStory() for _ in req.id]


# ------------------------------------------------------------------- contacts
@router(fn.contacts.GetTopPeers, status="empty")
async def get_top_peers(
    ctx: RequestContext, req: fn.contacts.GetTopPeers
) -> types.contacts.TopPeers | types.contacts.TopPeersNotModified:
    # Empty rather than topPeersDisabled: disabled would flip the client's setting.
    return cached(
        req.hash,
        types.contacts.TopPeersNotModified(),
        types.contacts.TopPeers(categories=[], chats=[], users=[]),
    )


@router(fn.contacts.GetBirthdays, status="empty")
async def get_birthdays(
    ctx: RequestContext, req: fn.contacts.GetBirthdays
) -> types.contacts.ContactBirthdays:
    return types.contacts.ContactBirthdays(contacts=[], users=[])


# ------------------------------------------------------------------- payments
@router(fn.payments.GetStarsStatus, status="empty")
async def get_stars_status(
    ctx: RequestContext, req: fn.payments.GetStarsStatus
) -> types.payments.StarsStatus:
    balance: TLObject = (
        types.StarsTonAmount(amount=0) if req.ton else types.StarsAmount(amount=0, nanos=0)
    )
    return types.payments.StarsStatus(balance=balance, chats=[], users=[])
