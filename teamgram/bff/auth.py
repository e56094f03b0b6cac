"""bff ``auth.*``. Here: binding temporary keys to permanent ones (PFS).

Sign-up/sign-in arrive with the accounts issue.
"""

from __future__ import annotations

import struct
import time

from teamgram.bff.rpc import RequestContext, Router
from teamgram.errors import RpcError
from teamgram.mtproto.envelope import decrypt_binding_message
from teamgram.tl import TLDecodeError, decode, types
from teamgram.tl import functions as fn

router = Router()


@router(fn.auth.BindTempAuthKey, anonymous=True, unbound_temp=True)
async def bind_temp_auth_key(ctx: RequestContext, req: fn.auth.BindTempAuthKey) -> bool:
    temp = ctx.auth_key
    if not temp.is_temp:
        raise RpcError(400, "TEMP_AUTH_KEY_EMPTY")
    if temp.perm_auth_key_id and temp.perm_auth_key_id != req.perm_auth_key_id:
        raise RpcError(400, "TEMP_AUTH_KEY_ALREADY_BOUND")
    auth = ctx.server.authsession
    perm = await auth.get_key(req.perm_auth_key_id)
    if perm is None or perm.is_temp:
        raise RpcError(400, "PERM_AUTH_KEY_EMPTY")
    data = req.encrypted_message
    if len(data) < 8 or struct.unpack_from("<q", data)[0] != perm.auth_key_id:
        raise RpcError(400, "ENCRYPTED_MESSAGE_INVALID")
    opened = decrypt_binding_message(perm.auth_key, data)
    if opened is None:
        raise RpcError(400, "ENCRYPTED_MESSAGE_INVALID")
    msg_id, _seqno, body = opened
    try:
        inner = decode(body)
    except TLDecodeError as exc:
        raise RpcError(400, "ENCRYPTED_MESSAGE_INVALID") from exc
    if (
        not isinstance(inner, types.BindAuthKeyInner)
        or msg_id != ctx.msg_id
        or inner.nonce != req.nonce
        or inner.temp_auth_key_id != temp.auth_key_id
        or inner.perm_auth_key_id != req.perm_auth_key_id
        or inner.temp_session_id != ctx.session_id
        or inner.expires_at != req.expires_at
    ):
        raise RpcError(400, "ENCRYPTED_MESSAGE_INVALID")
    if req.expires_at < time.time():
        raise RpcError(400, "EXPIRES_AT_INVALID")
    # A temp key cannot outlive what the handshake granted.
    expires = min(req.expires_at, temp.expires_at or req.expires_at)
    await auth.bind_temp_key(temp.auth_key_id, perm.auth_key_id, expires)
    return True
