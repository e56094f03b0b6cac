"""bff ``help.*``: server configuration clients fetch at startup and on migration."""

from __future__ import annotations

import time

from teamgram.bff.rpc import RequestContext, Router
from teamgram.tl import functions as fn
from teamgram.tl import types

router = Router()

DC_IDS = (1, 2, 3, 4, 5)
CONFIG_TTL = 3600


def dc_options(ctx: RequestContext) -> list[types.DcOption]:
    """Every DC points at this server, so a client that migrates lands here."""
    cfg = ctx.server.config
    host = cfg.advertised_host
    # The ports actually bound (a configured 0 means "any free port").
    ports = ctx.server.gateway.tcp_ports or cfg.gnetway.tcp_ports or [10443]
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
        message_length_max=4096,
        webfile_dc_id=ctx.server.config.dc_id,
        suggested_lang_code="en",
        lang_pack_version=0,
        base_lang_pack_version=0,
    )


@router(fn.help.GetNearestDc, anonymous=True, unbound_temp=True)
async def get_nearest_dc(ctx: RequestContext, req: fn.help.GetNearestDc) -> types.NearestDc:
    dc = ctx.server.config.dc_id
    return types.NearestDc(country="", this_dc=dc, nearest_dc=dc)
