"""bff ``help.*``: server configuration and the other calls clients make at startup.

Where a method takes a ``hash``, the answer carries the hash of what we would
send and the ``...NotModified`` constructor comes back when the client already
holds it; an empty list hashes to 0, as in Telegram, so a client asking with 0
is told nothing changed.
"""

from __future__ import annotations

import time
import zlib

from teamgram.bff.rpc import RequestContext, Router
from teamgram.tl import TLObject, types
from teamgram.tl import functions as fn

router = Router()

DC_IDS = (1, 2, 3, 4, 5)
CONFIG_TTL = 3600


def dc_options(ctx: RequestContext) -> list[types.DcOption]:
    """Every DC points at this server, so a client that migrates lands here."""
    cfg = ctx.server.config
    host = cfg.advertised_host
    # The ports actually bound (a configured 0 means "any free port").
    gateway = ctx.server.gateway
    ports = (gateway.tcp_ports if gateway else None) or cfg.gnetway.tcp_ports or [10443]
    ipv6 = ":" in host
    return [
        types.DcOption(id=dc, ip_address=host, port=port, ipv6=ipv6)
        for dc in DC_IDS
        for port in ports[:1]
    ]


@router(fn.help.GetConfig, anonymous=True, unbound_temp=True)
async def get_config(ctx: RequestContext, req: fn.help.GetConfig) -> types.Config:
    now = int(time.time())
    return types.Config(
        date=now,
        expires=now + CONFIG_TTL,
        test_mode=False,
        this_dc=ctx.server.config.dc_id,
        dc_options=dc_options(ctx),
        dc_txt_domain_name="",
        chat_size_max=200,
        megagroup_size_max=200000,
        forwarded_count_max=100,
        online_update_period_ms=210000,
        offline_blur_timeout_ms=5000,
        offline_idle_timeout_ms=30000,
        online_cloud_timeout_ms=300000,
        notify_cloud_delay_ms=30000,
        notify_default_delay_ms=1500,
        push_chat_period_ms=60000,
        push_chat_limit=2,
        edit_time_limit=172800,
        revoke_time_limit=2147483647,
        revoke_pm_time_limit=2147483647,
        rating_e_decay=2419200,
        stickers_recent_limit=200,
        channels_read_media_period=604800,
        tmp_sessions=None,
        call_receive_timeout_ms=20000,
        call_ring_timeout_ms=90000,
        call_connect_timeout_ms=30000,
        call_packet_timeout_ms=10000,
        me_url_prefix="https://t.me/",
        caption_length_max=1024,
        message_length_max=ctx.server.config.messages.message_length_max,
        webfile_dc_id=ctx.server.config.dc_id,
        suggested_lang_code="en",
        lang_pack_version=0,
        base_lang_pack_version=0,
    )


@router(fn.help.GetNearestDc, anonymous=True, unbound_temp=True)
async def get_nearest_dc(ctx: RequestContext, req: fn.help.GetNearestDc) -> types.NearestDc:
    dc = ctx.server.config.dc_id
    return types.NearestDc(country="", this_dc=dc, nearest_dc=dc)


PROMO_TTL = 3600
TOS_TTL = 86400
EMPTY_HASH = 0


def content_hash(*objs: TLObject) -> int:
    """A signed 32-bit hash of serialized content that is never 0 (0 means "empty")."""
    crc = 0
    for obj in objs:
        crc = zlib.crc32(obj.to_bytes(), crc)
    value = crc - (1 << 32) if crc >= 1 << 31 else crc
    return value or 1


# --------------------------------------------------------------------- app config
# An empty JSON object: clients use their built-in defaults for every key.
APP_CONFIG = types.JsonObject(value=[])
APP_CONFIG_HASH = content_hash(APP_CONFIG)


@router(fn.help.GetAppConfig, anonymous=True, status="empty")
async def get_app_config(
    ctx: RequestContext, req: fn.help.GetAppConfig
) -> types.help.AppConfig | types.help.AppConfigNotModified:
    if req.hash == APP_CONFIG_HASH:
        return types.help.AppConfigNotModified()
    return types.help.AppConfig(hash=APP_CONFIG_HASH, config=APP_CONFIG)


# ---------------------------------------------------------------- countries list
def _country(
    iso2: str,
    name: str,
    code: str,
    patterns: list[str],
    prefixes: list[str] | None = None,
) -> types.help.Country:
    return types.help.Country(
        iso2=iso2,
        default_name=name,
        country_codes=[types.help.CountryCode(code, prefixes=prefixes, patterns=patterns)],
    )


# Real calling codes and the usual grouping of the national number ("X" a digit);
# prefixes split a shared calling code (+7: Kazakhstan numbers start with 6 or 7).
COUNTRIES: list[types.help.Country] = sorted(
    [
        _country("AU", "Australia", "61", ["XXX XXX XXX"]),
        _country("BR", "Brazil", "55", ["XX XXXXX XXXX"]),
        _country("CN", "China", "86", ["XXX XXXX XXXX"]),
        _country("ES", "Spain", "34", ["XXX XXX XXX"]),
        _country("FR", "France", "33", ["X XX XX XX XX"]),
        _country("DE", "Germany", "49", ["XXXX XXXXXXX"]),
        _country("IN", "India", "91", ["XXXXX XXXXX"]),
        _country("IT", "Italy", "39", ["XXX XXX XXXX"]),
        _country("JP", "Japan", "81", ["XX XXXX XXXX"]),
        _country("KZ", "Kazakhstan", "7", ["XXX XXX XXXX"], prefixes=["6", "7"]),
        _country("NL", "Netherlands", "31", ["X XX XX XX XX"]),
        _country("RU", "Russian Federation", "7", ["XXX XXX XXXX"]),
        _country("UA", "Ukraine", "380", ["XX XXX XX XX"]),
        _country("GB", "United Kingdom", "44", ["XXXX XXXXXX"]),
        _country("US", "USA", "1", ["XXX XXX XXXX"]),
    ],
    key=lambda c: c.default_name,
)
COUNTRIES_HASH = content_hash(*COUNTRIES)


@router(fn.help.GetCountriesList, anonymous=True)  # real (static) data
async def get_countries_list(
    ctx: RequestContext, req: fn.help.GetCountriesList
) -> types.help.CountriesList | types.help.CountriesListNotModified:
    # lang_code would pick localized names; only the default (English) names exist.
    if req.hash == COUNTRIES_HASH:
        return types.help.CountriesListNotModified()
    return types.help.CountriesList(countries=list(COUNTRIES), hash=COUNTRIES_HASH)


# ------------------------------------------------------------- startup probes
@router(fn.help.GetPromoData, anonymous=True, status="empty")
async def get_promo_data(
    ctx: RequestContext, req: fn.help.GetPromoData
) -> types.help.PromoDataEmpty:
    # No sponsored proxy channel or PSA; the client asks again after `expires`.
    return types.help.PromoDataEmpty(expires=int(time.time()) + PROMO_TTL)


@router(fn.help.HidePromoData, status="empty")
async def hide_promo_data(ctx: RequestContext, req: fn.help.HidePromoData) -> bool:
    return True  # nothing is promoted, so there is nothing to hide


@router(fn.help.GetTermsOfServiceUpdate, anonymous=True, status="empty")
async def get_terms_of_service_update(
    ctx: RequestContext, req: fn.help.GetTermsOfServiceUpdate
) -> types.help.TermsOfServiceUpdateEmpty:
    # No terms to accept; the client checks again after `expires`.
    return types.help.TermsOfServiceUpdateEmpty(expires=int(time.time()) + TOS_TTL)


@router(fn.help.AcceptTermsOfService, status="empty")
async def accept_terms_of_service(ctx: RequestContext, req: fn.help.AcceptTermsOfService) -> bool:
    return True  # no terms are ever pending


@router(fn.help.GetAppUpdate, anonymous=True, status="empty")
async def get_app_update(ctx: RequestContext, req: fn.help.GetAppUpdate) -> types.help.NoAppUpdate:
    # Client updates come from wherever the client was installed from, not from us.
    return types.help.NoAppUpdate()


@router(fn.help.GetInviteText, anonymous=True, status="empty")
async def get_invite_text(ctx: RequestContext, req: fn.help.GetInviteText) -> types.help.InviteText:
    return types.help.InviteText(message="Join me on this Telegram-compatible server.")


@router(fn.help.GetSupportName, status="empty")
async def get_support_name(
    ctx: RequestContext, req: fn.help.GetSupportName
) -> types.help.SupportName:
    return types.help.SupportName(name="Support")


@router(fn.help.GetCdnConfig, anonymous=True, status="empty")
async def get_cdn_config(ctx: RequestContext, req: fn.help.GetCdnConfig) -> types.CdnConfig:
    # No CDN DCs: every file is served by the main DC.
    return types.CdnConfig(public_keys=[])


@router(fn.help.GetRecentMeUrls, status="empty")
async def get_recent_me_urls(
    ctx: RequestContext, req: fn.help.GetRecentMeUrls
) -> types.help.RecentMeUrls:
    return types.help.RecentMeUrls(urls=[], chats=[], users=[])


@router(fn.help.GetDeepLinkInfo, anonymous=True, status="empty")
async def get_deep_link_info(
    ctx: RequestContext, req: fn.help.GetDeepLinkInfo
) -> types.help.DeepLinkInfoEmpty:
    # Unknown tg:// links: the client handles them itself.
    return types.help.DeepLinkInfoEmpty()


@router(fn.help.GetPremiumPromo, anonymous=True, status="empty")
async def get_premium_promo(
    ctx: RequestContext, req: fn.help.GetPremiumPromo
) -> types.help.PremiumPromo:
    return types.help.PremiumPromo(
        status_text="",
        status_entities=[],
        video_sections=[],
        videos=[],
        period_options=[],
        users=[],
    )


# ----------------------------------------------------- lists cached by hash
@router(fn.help.GetPeerColors, fn.help.GetPeerProfileColors, anonymous=True, status="empty")
async def get_peer_colors(
    ctx: RequestContext, req: fn.help.GetPeerColors | fn.help.GetPeerProfileColors
) -> types.help.PeerColors | types.help.PeerColorsNotModified:
    # No palette beyond the colors built into every client.
    if req.hash == EMPTY_HASH:
        return types.help.PeerColorsNotModified()
    return types.help.PeerColors(hash=EMPTY_HASH, colors=[])


@router(fn.help.GetTimezonesList, anonymous=True, status="empty")
async def get_timezones_list(
    ctx: RequestContext, req: fn.help.GetTimezonesList
) -> types.help.TimezonesList | types.help.TimezonesListNotModified:
    if req.hash == EMPTY_HASH:
        return types.help.TimezonesListNotModified()
    return types.help.TimezonesList(timezones=[], hash=EMPTY_HASH)


# No per-country document languages: an empty JSON object, as a DataJSON string.
PASSPORT_LANGS = types.DataJSON(data="{}")
PASSPORT_CONFIG_HASH = content_hash(PASSPORT_LANGS)


@router(fn.help.GetPassportConfig, anonymous=True, status="empty")
async def get_passport_config(
    ctx: RequestContext, req: fn.help.GetPassportConfig
) -> types.help.PassportConfig | types.help.PassportConfigNotModified:
    if req.hash == PASSPORT_CONFIG_HASH:
        return types.help.PassportConfigNotModified()
    return types.help.PassportConfig(hash=PASSPORT_CONFIG_HASH, countries_langs=PASSPORT_LANGS)


# ------------------------------------------------------------ acknowledgements
@router(fn.help.DismissSuggestion, status="empty")
async def dismiss_suggestion(ctx: RequestContext, req: fn.help.DismissSuggestion) -> bool:
    return True  # no suggestions are made, so a dismissal changes nothing


@router(fn.help.SaveAppLog, anonymous=True, status="empty")
async def save_app_log(ctx: RequestContext, req: fn.help.SaveAppLog) -> bool:
    # Client telemetry is accepted and dropped: this server keeps no analytics.
    return True
