"""The calls clients make right after connecting get valid, wire-correct answers.

Every handler of the startup routers (``langpack``, ``help``, ``stickers``)
is called through a :class:`Dispatcher` with a fake request context; each answer
must serialize as its function's result (``write_result``), decode back equal
(``read_result``) and be of the function's result type. Hash-cached methods must
answer their ``...NotModified`` constructor when the client's hash is current.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from teamgram.bff import help, langpack, stickers
from teamgram.bff.rpc import Dispatcher, RequestContext
from teamgram.config import ServerConfig
from teamgram.errors import RpcError
from teamgram.service.authsession.service import AuthKeyInfo
from teamgram.tl import LAYER, TLFunction, TLObject, types
from teamgram.tl import functions as fn
from teamgram.tl.layers import CANONICAL

ROUTERS = (langpack.router, help.router, stickers.router)
DISPATCHER = Dispatcher(*ROUTERS)

ME = types.InputPeerSelf()
SOMEONE = types.InputPeerUser(user_id=2, access_hash=3)
ANY_HASH = 0x1234  # a hash no empty list has: asks for the full answer

# One sensible request per registered method.
REQUESTS: list[TLFunction] = [
    # langpack.*
    fn.langpack.GetLangPack(lang_pack="tdesktop", lang_code="en"),
    fn.langpack.GetStrings(lang_pack="android", lang_code="en", keys=["lng_intro", "Cancel"]),
    fn.langpack.GetDifference(lang_pack="tdesktop", lang_code="en", from_version=0),
    fn.langpack.GetLanguages(lang_pack="tdesktop"),
    fn.langpack.GetLanguage(lang_pack="", lang_code="en"),
    # help.*
    fn.help.GetConfig(),
    fn.help.GetNearestDc(),
    fn.help.GetAppConfig(hash=0),
    fn.help.GetCountriesList(lang_code="en", hash=0),
    fn.help.GetPromoData(),
    fn.help.HidePromoData(peer=SOMEONE),
    fn.help.GetTermsOfServiceUpdate(),
    fn.help.AcceptTermsOfService(id=types.DataJSON(data='{"id":"tos"}')),
    fn.help.GetInviteText(),
    fn.help.GetAppUpdate(source=""),
    fn.help.GetPeerColors(hash=ANY_HASH),
    fn.help.GetPeerProfileColors(hash=ANY_HASH),
    fn.help.GetTimezonesList(hash=ANY_HASH),
    fn.help.GetPremiumPromo(),
    fn.help.GetSupportName(),
    fn.help.GetCdnConfig(),
    fn.help.GetRecentMeUrls(referer=""),
    fn.help.GetDeepLinkInfo(path="settings"),
    fn.help.GetPassportConfig(hash=0),
    fn.help.DismissSuggestion(peer=types.InputPeerEmpty(), suggestion="VALIDATE_PHONE_NUMBER"),
    fn.help.SaveAppLog(
        events=[
            types.InputAppEvent(
                time=1700000000.5, type="app_start", peer=0, data=types.JsonObject(value=[])
            )
        ]
    ),
    # messages.* stickers, emoji, reactions
    fn.messages.GetAvailableReactions(hash=ANY_HASH),
    fn.messages.GetStickers(emoticon="👍", hash=ANY_HASH),
    fn.messages.GetAllStickers(hash=ANY_HASH),
    fn.messages.GetEmojiStickers(hash=ANY_HASH),
    fn.messages.GetMaskStickers(hash=ANY_HASH),
    fn.messages.GetFeaturedStickers(hash=ANY_HASH),
    fn.messages.GetFeaturedEmojiStickers(hash=ANY_HASH),
    fn.messages.GetOldFeaturedStickers(offset=0, limit=20, hash=ANY_HASH),
    fn.messages.GetArchivedStickers(offset_id=0, limit=20, emojis=True),
    fn.messages.GetRecentStickers(hash=ANY_HASH, attached=True),
    fn.messages.GetFavedStickers(hash=ANY_HASH),
    fn.messages.GetSavedGifs(hash=ANY_HASH),
    fn.messages.GetEmojiKeywords(lang_code="en"),
    fn.messages.GetEmojiKeywordsDifference(lang_code="en", from_version=3),
    fn.messages.GetEmojiKeywordsLanguages(lang_codes=["en", "de"]),
    fn.messages.GetEmojiGroups(hash=ANY_HASH),
    fn.messages.GetEmojiStatusGroups(hash=ANY_HASH),
    fn.messages.GetEmojiProfilePhotoGroups(hash=ANY_HASH),
    fn.messages.GetEmojiStickerGroups(hash=ANY_HASH),
    fn.messages.GetTopReactions(limit=50, hash=ANY_HASH),
    fn.messages.GetRecentReactions(limit=50, hash=ANY_HASH),
    fn.messages.GetDefaultTagReactions(hash=ANY_HASH),
    fn.messages.GetSavedReactionTags(hash=ANY_HASH, peer=ME),
    fn.messages.GetStickerSet(stickerset=types.InputStickerSetAnimatedEmoji(), hash=0),
    fn.messages.GetAttachMenuBots(hash=ANY_HASH),
    fn.messages.GetDefaultHistoryTTL(),
    fn.messages.GetDialogFilters(),
    fn.messages.GetSuggestedDialogFilters(),
    fn.messages.GetQuickReplies(hash=ANY_HASH),
    # account.*
    fn.account.GetDefaultEmojiStatuses(hash=ANY_HASH),
    fn.account.GetRecentEmojiStatuses(hash=ANY_HASH),
    fn.account.GetChannelDefaultEmojiStatuses(hash=ANY_HASH),
    fn.account.GetCollectibleEmojiStatuses(hash=ANY_HASH),
    fn.account.GetDefaultProfilePhotoEmojis(hash=ANY_HASH),
    fn.account.GetDefaultGroupPhotoEmojis(hash=ANY_HASH),
    fn.account.GetDefaultBackgroundEmojis(hash=ANY_HASH),
    fn.account.GetChannelRestrictedStatusEmojis(hash=ANY_HASH),
    fn.account.GetThemes(format="tdesktop", hash=ANY_HASH),
    fn.account.GetChatThemes(hash=ANY_HASH),
    fn.account.GetWallPapers(hash=ANY_HASH),
    fn.account.GetSavedRingtones(hash=ANY_HASH),
    fn.account.GetContentSettings(),
    fn.account.GetGlobalPrivacySettings(),
    fn.account.GetReactionsNotifySettings(),
    # stories.*, contacts.*, payments.*
    fn.stories.GetAllStories(),
    fn.stories.GetPeerMaxIDs(id=[ME, SOMEONE]),
    fn.contacts.GetTopPeers(offset=0, limit=20, hash=ANY_HASH, correspondents=True),
    fn.contacts.GetBirthdays(),
    fn.payments.GetStarsStatus(peer=ME),
]

# help.* and langpack.* a client may call before signing in.
ANONYMOUS = {
    fn.langpack.GetLangPack,
    fn.langpack.GetStrings,
    fn.langpack.GetDifference,
    fn.langpack.GetLanguages,
    fn.langpack.GetLanguage,
    fn.help.GetAppConfig,
    fn.help.GetCountriesList,
    fn.help.GetPromoData,
    fn.help.GetTermsOfServiceUpdate,
    fn.help.GetInviteText,
    fn.help.GetAppUpdate,
    fn.help.GetPeerColors,
    fn.help.GetPeerProfileColors,
    fn.help.GetTimezonesList,
    fn.help.GetPremiumPromo,
    fn.help.GetCdnConfig,
    fn.help.GetDeepLinkInfo,
    fn.help.GetPassportConfig,
    fn.help.SaveAppLog,
    fn.help.GetConfig,
    fn.help.GetNearestDc,
}


def make_ctx(user_id: int | None = 1) -> RequestContext:
    server = SimpleNamespace(config=ServerConfig(), gateway=SimpleNamespace(tcp_ports=[10443]))
    return RequestContext(
        server=cast(Any, server),
        auth_key=AuthKeyInfo(auth_key_id=1, auth_key=bytes(256), layer=LAYER),
        session_id=7,
        msg_id=(1700000000 << 32) | 4,
        layer=229,
        client_ip="127.0.0.1",
        user_id=user_id,
    )


async def call(req: TLFunction, user_id: int | None = 1) -> Any:
    route = DISPATCHER.route(req)
    return await route.handler(make_ctx(user_id), req)


def roundtrip(req: TLFunction, result: Any) -> Any:
    """The answer as the client reads it back off the wire."""
    data = CANONICAL.encode_result(type(req), result)
    return type(req).read_result(data)


def assert_result_type(req: TLFunction, result: Any) -> None:
    expected = req.TL_TYPE
    if expected == "Bool":
        assert isinstance(result, bool)
    elif expected.startswith("Vector<"):
        elem = expected[len("Vector<") : -1]
        assert isinstance(result, list)
        assert all(isinstance(x, TLObject) and x.TL_TYPE == elem for x in result)
    else:
        assert isinstance(result, TLObject)
        assert result.TL_TYPE == expected


def test_every_registered_method_has_a_request() -> None:
    assert {type(r) for r in REQUESTS} == set(DISPATCHER.routes)
    assert len({type(r) for r in REQUESTS}) == len(REQUESTS)


def test_routes_flags() -> None:
    for cls, route in DISPATCHER.routes.items():
        assert route.allow_anonymous == (cls in ANONYMOUS), cls.TL_NAME
        # Only what Telegram allows on a not-yet-bound temporary key (PFS).
        unbound_ok = cls in (fn.help.GetConfig, fn.help.GetNearestDc)
        assert route.allow_unbound_temp == unbound_ok, cls.TL_NAME
        implemented = (fn.help.GetCountriesList, fn.help.GetConfig, fn.help.GetNearestDc)
        expected = "implemented" if cls in implemented else "empty"
        assert route.status == expected, cls.TL_NAME


@pytest.mark.parametrize("req", REQUESTS, ids=lambda r: r.TL_NAME)
async def test_answer_serializes_and_decodes(req: TLFunction) -> None:
    result = await call(req)
    assert_result_type(req, result)
    assert roundtrip(req, result) == result


# ---------------------------------------------------------------- NotModified
def _current_hash(full: Any) -> int:
    """The hash a client would keep from a full answer (0 where none is carried)."""
    if isinstance(full, types.messages.StickerSet):
        assert isinstance(full.set, types.StickerSet)
        return full.set.hash
    return int(getattr(full, "hash", 0))


HASHED = [r for r in REQUESTS if "hash" in type(r).__slots__]


@pytest.mark.parametrize("req", HASHED, ids=lambda r: r.TL_NAME)
async def test_not_modified_on_current_hash(req: TLFunction) -> None:
    names = cast(tuple[str, ...], type(req).__slots__)
    fields: dict[str, Any] = {f: getattr(req, f) for f in names}
    fields["hash"] = ANY_HASH
    full = await call(type(req)(**fields))
    assert not type(full).__name__.endswith("NotModified")
    fields["hash"] = _current_hash(full)
    same = await call(type(req)(**fields))
    assert type(same).__name__.endswith("NotModified"), type(same).__name__
    assert_result_type(req, same)
    assert roundtrip(req, same) == same


async def test_empty_lists_hash_to_zero() -> None:
    # Telegram's rule: an empty list's hash is 0, so a fresh client is told "not modified".
    res = await call(fn.messages.GetSavedGifs(hash=0))
    assert isinstance(res, types.messages.SavedGifsNotModified)
    res = await call(fn.messages.GetFeaturedStickers(hash=0))
    assert res == types.messages.FeaturedStickersNotModified(count=0)


async def test_content_hashes_are_not_zero() -> None:
    # A client with nothing cached sends 0 and must get the content itself.
    cfg = await call(fn.help.GetAppConfig(hash=0))
    assert isinstance(cfg, types.help.AppConfig)
    assert cfg.hash != 0
    assert cfg.config == types.JsonObject(value=[])
    countries = await call(fn.help.GetCountriesList(lang_code="en", hash=0))
    assert isinstance(countries, types.help.CountriesList)
    assert countries.hash != 0


# ---------------------------------------------------------------- specifics
async def test_countries_list_has_real_calling_codes() -> None:
    res = await call(fn.help.GetCountriesList(lang_code="en", hash=0))
    codes = {c.iso2: [cc.country_code for cc in c.country_codes] for c in res.countries}
    for iso2, code in {
        "US": "1",
        "GB": "44",
        "DE": "49",
        "RU": "7",
        "IN": "91",
        "BR": "55",
        "CN": "86",
        "FR": "33",
    }.items():
        assert codes[iso2] == [code]
    for c in res.countries:
        for cc in c.country_codes:
            assert cc.patterns and all(set(p) <= {"X", " "} for p in cc.patterns)
    names = [c.default_name for c in res.countries]
    assert names == sorted(names)


async def test_langpack_offers_english_only() -> None:
    langs = await call(fn.langpack.GetLanguages(lang_pack="android"))
    assert [lang.lang_code for lang in langs] == ["en"]
    with pytest.raises(RpcError) as exc:
        await call(fn.langpack.GetLanguage(lang_pack="", lang_code="de"))
    assert (exc.value.code, exc.value.message) == (400, "LANG_CODE_NOT_SUPPORTED")
    with pytest.raises(RpcError) as exc:
        await call(fn.langpack.GetLangPack(lang_pack="", lang_code=""))
    assert exc.value.message == "LANG_CODE_INVALID"


async def test_langpack_other_codes_get_an_empty_pack() -> None:
    # An empty pack makes the client use its built-in strings, in any language.
    res = await call(fn.langpack.GetLangPack(lang_pack="tdesktop", lang_code="pt-br"), None)
    assert res == types.LangPackDifference(lang_code="pt-br", from_version=0, version=0, strings=[])
    diff = await call(fn.langpack.GetDifference(lang_pack="", lang_code="en", from_version=5))
    assert (diff.from_version, diff.version) == (5, 5)


async def test_sticker_sets() -> None:
    animated = await call(
        fn.messages.GetStickerSet(stickerset=types.InputStickerSetAnimatedEmoji(), hash=0)
    )
    assert isinstance(animated, types.messages.StickerSet)
    s = animated.set
    assert isinstance(s, types.StickerSet)
    by_id = await call(
        fn.messages.GetStickerSet(
            stickerset=types.InputStickerSetID(id=s.id, access_hash=s.access_hash), hash=0
        )
    )
    assert by_id == animated
    by_name = await call(
        fn.messages.GetStickerSet(
            stickerset=types.InputStickerSetShortName(short_name=s.short_name.upper()), hash=0
        )
    )
    assert by_name == animated
    dice = await call(
        fn.messages.GetStickerSet(stickerset=types.InputStickerSetDice(emoticon="🎲"), hash=0)
    )
    assert isinstance(dice, types.messages.StickerSet)
    assert isinstance(dice.set, types.StickerSet)
    assert dice.set.id != s.id
    for bad in (
        types.InputStickerSetEmpty(),
        types.InputStickerSetShortName(short_name="NoSuchPack"),
        types.InputStickerSetID(id=s.id, access_hash=s.access_hash ^ 1),
        types.InputStickerSetID(id=42, access_hash=0),
        types.InputStickerSetDice(emoticon="🦄"),
    ):
        with pytest.raises(RpcError) as exc:
            await call(fn.messages.GetStickerSet(stickerset=bad, hash=0))
        assert (exc.value.code, exc.value.message) == (400, "STICKERSET_INVALID")


async def test_all_stories_state() -> None:
    first = await call(fn.stories.GetAllStories())
    assert isinstance(first, types.stories.AllStories)
    assert first.state
    again = await call(fn.stories.GetAllStories(state=first.state))
    assert isinstance(again, types.stories.AllStoriesNotModified)
    assert roundtrip(fn.stories.GetAllStories(), again) == again
    page = await call(fn.stories.GetAllStories(next=True, state=first.state))
    assert isinstance(page, types.stories.AllStories)
    assert not page.has_more


async def test_peer_max_ids_one_per_peer() -> None:
    res = await call(fn.stories.GetPeerMaxIDs(id=[ME, SOMEONE, ME]))
    assert res == [types.RecentStory()] * 3


async def test_stars_status_currency() -> None:
    stars = await call(fn.payments.GetStarsStatus(peer=ME))
    assert stars.balance == types.StarsAmount(amount=0, nanos=0)
    ton = await call(fn.payments.GetStarsStatus(peer=ME, ton=True))
    assert ton.balance == types.StarsTonAmount(amount=0)


# ---------------------------------------------------------------- method table
def _method_table() -> Any:
    root = Path(__file__).resolve().parents[2]
    sys.path.insert(0, str(root / "tools"))
    try:
        import method_table
    finally:
        sys.path.remove(str(root / "tools"))
    return method_table


def test_method_table_lists_startup_routes() -> None:
    mt = _method_table()
    from teamgram.server import ROUTERS as SERVER_ROUTERS

    rows = mt.build_rows((*SERVER_ROUTERS, *ROUTERS))
    by_name = {r.name: r for r in rows}
    assert by_name["help.getAppConfig"].status == "answered empty"
    assert by_name["help.getAppConfig"].before_sign_in == "answered"
    assert by_name["help.getCountriesList"].status == "implemented"
    assert by_name["messages.getSavedGifs"].before_sign_in == "401 AUTH_KEY_UNREGISTERED"
    assert by_name["help.getConfig"].status == "implemented"
    assert "ping" not in by_name and "req_pq_multi" not in by_name  # MTProto service
    assert by_name["invokeWithLayer"].before_sign_in == "unwrapped"
    # Deterministic: same rows, same bytes.
    assert mt.render(rows) == mt.render(mt.build_rows((*SERVER_ROUTERS, *ROUTERS)))
