"""bff ``langpack.*``: localization packs clients fetch before and after sign-in.

This server carries no translations: it offers one language, English, whose cloud
pack is empty, so every client falls back to the strings built into it. Any
language code is answered with an empty pack rather than an error, because an
empty pack means exactly "use your built-in strings" in every language.
"""

from __future__ import annotations

from teamgram.bff.rpc import RequestContext, Router
from teamgram.errors import RpcError
from teamgram.tl import functions as fn
from teamgram.tl import types

router = Router()

# Version of every (empty) pack; help.getConfig advertises lang_pack_version 0 too,
# so clients never see a newer version and never ask for a difference.
LANG_PACK_VERSION = 0
# A lang_code is short ("en", "pt-br", "zh-hans-raw"); anything else is garbage.
MAX_LANG_CODE = 32


def _english() -> types.LangPackLanguage:
    """The one language offered: official, with no cloud strings."""
    return types.LangPackLanguage(
        name="English",
        native_name="English",
        lang_code="en",
        plural_code="en",
        strings_count=0,
        translated_count=0,
        translations_url="",
        official=True,
    )


def _check_lang_code(lang_code: str) -> None:
    """Refuse codes no client would send (empty or oversized), as Telegram does."""
    if not lang_code or len(lang_code) > MAX_LANG_CODE:
        raise RpcError(400, "LANG_CODE_INVALID")


@router(fn.langpack.GetLangPack, anonymous=True, status="empty")
async def get_lang_pack(
    ctx: RequestContext, req: fn.langpack.GetLangPack
) -> types.LangPackDifference:
    _check_lang_code(req.lang_code)
    # The code is echoed as sent: clients match the answer to the pack they asked for.
    return types.LangPackDifference(
        lang_code=req.lang_code, from_version=0, version=LANG_PACK_VERSION, strings=[]
    )


@router(fn.langpack.GetDifference, anonymous=True, status="empty")
async def get_difference(
    ctx: RequestContext, req: fn.langpack.GetDifference
) -> types.LangPackDifference:
    _check_lang_code(req.lang_code)
    # Never answer a version older than the client's: it would look like a rollback.
    version = max(req.from_version, LANG_PACK_VERSION)
    return types.LangPackDifference(
        lang_code=req.lang_code, from_version=req.from_version, version=version, strings=[]
    )


@router(fn.langpack.GetStrings, anonymous=True, status="empty")
async def get_strings(
    ctx: RequestContext, req: fn.langpack.GetStrings
) -> list[types.LangPackString]:
    _check_lang_code(req.lang_code)
    # No cloud value for any key: the client keeps its built-in strings.
    return []


@router(fn.langpack.GetLanguages, anonymous=True, status="empty")
async def get_languages(
    ctx: RequestContext, req: fn.langpack.GetLanguages
) -> list[types.LangPackLanguage]:
    return [_english()]


@router(fn.langpack.GetLanguage, anonymous=True, status="empty")
async def get_language(ctx: RequestContext, req: fn.langpack.GetLanguage) -> types.LangPackLanguage:
    _check_lang_code(req.lang_code)
    if req.lang_code.lower() != "en":
        # Only English is offered (see getLanguages).
        raise RpcError(400, "LANG_CODE_NOT_SUPPORTED")
    return _english()
