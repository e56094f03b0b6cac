"""bff ``auth.*`` and the signed-in-device half of ``account.*``.

Signing in (https://core.telegram.org/api/auth): auth.sendCode issues a code,
auth.signIn checks it and either signs the key in, answers
auth.authorizationSignUpRequired for a phone with no account (auth.signUp follows,
naming the same phone_code_hash), or, when the account has a 2FA password, binds
the key with the password pending and answers 401 SESSION_PASSWORD_NEEDED until
auth.checkPassword proves it (SRP: https://core.telegram.org/api/srp). QR login
(https://core.telegram.org/api/qr-login): a new device exports a token, a signed-in
device accepts it, the new device hears updateLoginToken and exports again to
collect auth.loginTokenSuccess. Binding temporary keys (PFS) lives here too.

Sign-ins are recorded by authsession on the *permanent* key (``effective_id``) and
reach every live session of it through the session host.
"""

from __future__ import annotations

import struct
import time

from teamgram.bff.rpc import RequestContext, Router
from teamgram.errors import RpcError
from teamgram.mtproto.envelope import decrypt_binding_message
from teamgram.service.authsession.codes import normalize_phone
from teamgram.service.authsession.service import AuthorizationRecord, ClientInfo, PhoneCode
from teamgram.tl import TLDecodeError, TLObject, decode, types
from teamgram.tl import functions as fn

router = Router()

NAME_MAX = 64
# Clients of layers before 104 learn of an unknown phone by this error instead of
# auth.authorizationSignUpRequired.
SIGN_UP_REQUIRED_LAYER = 104
# account.authorizations.authorization_ttl_days: Telegram's default.
AUTHORIZATION_TTL_DAYS = 180


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


# ------------------------------------------------------------------------ helpers


async def _self_user(ctx: RequestContext, user_id: int) -> types.User:
    users = await ctx.server.users.users_for(user_id, [user_id])
    if not users:
        raise RpcError(400, "USER_ID_INVALID")
    return users[0]


async def _signed_in(ctx: RequestContext, user_id: int) -> types.auth.Authorization:
    """The code (or QR token) was right: sign the key in, or stop at the 2FA password."""
    auth = ctx.server.authsession
    key = ctx.auth_key.effective_id
    if await auth.get_password(user_id) is not None:
        await auth.bind_user(key, user_id, password_pending=True)
        ctx.server.sessions.bind_user(key, None)
        raise RpcError(401, "SESSION_PASSWORD_NEEDED")
    await auth.bind_user(key, user_id)
    ctx.server.sessions.bind_user(key, user_id)
    return types.auth.Authorization(user=await _self_user(ctx, user_id))


def _sent_code(ctx: RequestContext, rec: PhoneCode, in_app: bool) -> types.auth.SentCode:
    length = len(rec.code)
    return types.auth.SentCode(
        type=types.auth.SentCodeTypeApp(length=length)
        if in_app
        else types.auth.SentCodeTypeSms(length=length),
        phone_code_hash=rec.phone_code_hash,
        next_type=types.auth.CodeTypeSms() if in_app else None,
        timeout=ctx.server.config.auth.resend_timeout_seconds,
    )


def _user_id(ctx: RequestContext) -> int:
    if ctx.user_id is None:  # the router lets no anonymous call through; for mypy
        raise RpcError(401, "AUTH_KEY_UNREGISTERED")
    return ctx.user_id


async def _password_user(ctx: RequestContext) -> tuple[int, bool]:
    """The user a 2FA call is about, and whether the key still waits for the password."""
    if ctx.user_id is not None:
        return ctx.user_id, False
    pending = await ctx.server.authsession.pending_password_user(ctx.auth_key.effective_id)
    if pending is None:
        raise RpcError(401, "AUTH_KEY_UNREGISTERED")
    return pending, True


# ------------------------------------------------------------------------ codes


@router(fn.auth.SendCode, anonymous=True)
async def send_code(ctx: RequestContext, req: fn.auth.SendCode) -> types.auth.SentCode:
    # api_id / api_hash are not checked: a self-hosted server serves any app.
    phone = normalize_phone(req.phone_number)
    auth = ctx.server.authsession
    rec = await auth.send_code(phone, ctx.auth_key.effective_id, ctx.client_ip)
    user = await ctx.server.users.by_phone(phone)
    in_app = user is not None and await auth.delivery.deliver_in_app(user.id, phone, rec.code)
    return _sent_code(ctx, rec, in_app)


@router(fn.auth.ResendCode, anonymous=True)
async def resend_code(ctx: RequestContext, req: fn.auth.ResendCode) -> types.auth.SentCode:
    phone = normalize_phone(req.phone_number)
    rec = await ctx.server.authsession.resend_code(
        phone, req.phone_code_hash, ctx.auth_key.effective_id, ctx.client_ip
    )
    return _sent_code(ctx, rec, in_app=False)


@router(fn.auth.CancelCode, anonymous=True)
async def cancel_code(ctx: RequestContext, req: fn.auth.CancelCode) -> bool:
    phone = normalize_phone(req.phone_number)
    if not req.phone_code_hash:
        raise RpcError(400, "PHONE_CODE_HASH_EMPTY")
    await ctx.server.authsession.cancel_code(phone, req.phone_code_hash, ctx.auth_key.effective_id)
    return True


# ---------------------------------------------------------------- sign in / up / out


@router(fn.auth.SignIn, anonymous=True)
async def sign_in(
    ctx: RequestContext, req: fn.auth.SignIn
) -> types.auth.Authorization | types.auth.AuthorizationSignUpRequired:
    phone = normalize_phone(req.phone_number)
    if not req.phone_code_hash:
        raise RpcError(400, "PHONE_CODE_HASH_EMPTY")
    if not req.phone_code:  # email_verification: no login e-mail on this server
        raise RpcError(400, "PHONE_CODE_EMPTY")
    auth = ctx.server.authsession
    rec = await auth.check_code(
        phone, req.phone_code_hash, req.phone_code, ctx.auth_key.effective_id
    )
    user = await ctx.server.users.by_phone(phone)
    if user is None:
        await auth.mark_code_verified(rec.phone_code_hash)
        if 0 < ctx.layer < SIGN_UP_REQUIRED_LAYER:
            raise RpcError(400, "PHONE_NUMBER_UNOCCUPIED")
        return types.auth.AuthorizationSignUpRequired()
    await auth.consume_code(rec.phone_code_hash)
    return await _signed_in(ctx, user.id)


@router(fn.auth.SignUp, anonymous=True)
async def sign_up(ctx: RequestContext, req: fn.auth.SignUp) -> types.auth.Authorization:
    phone = normalize_phone(req.phone_number)
    if not req.phone_code_hash:
        raise RpcError(400, "PHONE_CODE_HASH_EMPTY")
    first, last = req.first_name.strip(), req.last_name.strip()
    if not first or len(first) > NAME_MAX:
        raise RpcError(400, "FIRSTNAME_INVALID")
    if len(last) > NAME_MAX:
        raise RpcError(400, "LASTNAME_INVALID")
    auth = ctx.server.authsession
    rec = await auth.verified_code(phone, req.phone_code_hash, ctx.auth_key.effective_id)
    # TODO(contacts): unless no_joined_notifications, tell the users who have this
    # phone in their contacts that it joined (updateNewMessage "joined Telegram").
    user = await ctx.server.users.create(phone, first, last)  # PHONE_NUMBER_OCCUPIED
    await auth.consume_code(rec.phone_code_hash)
    return await _signed_in(ctx, user.id)


@router(fn.auth.LogOut, anonymous=True)
async def log_out(ctx: RequestContext, req: fn.auth.LogOut) -> types.auth.LoggedOut:
    """Signs the key out (or abandons a sign-in waiting for its 2FA password)."""
    auth = ctx.server.authsession
    key = ctx.auth_key.effective_id
    # Before any await: the session may acknowledge this request before answering
    # it, Telethon takes that ack for the answer, and its next call must find the
    # key signed out.
    ctx.server.sessions.bind_user(key, None)
    if await auth.unbind_key(key) is None:
        raise RpcError(401, "AUTH_KEY_UNREGISTERED")
    await auth.drop_login_tokens(key)
    return types.auth.LoggedOut()


async def _not_fresh(ctx: RequestContext) -> None:
    """Telegram: a device signed in moments ago (maybe a thief's) may not end the others."""
    limit = ctx.server.config.auth.fresh_reset_seconds
    if limit <= 0:
        return
    rec = await ctx.server.authsession.authorization_of_key(ctx.auth_key.effective_id)
    if rec is not None and time.time() - rec.created_at < limit:
        raise RpcError(406, "FRESH_RESET_AUTHORISATION_FORBIDDEN")


@router(fn.auth.ResetAuthorizations)
async def reset_authorizations(ctx: RequestContext, req: fn.auth.ResetAuthorizations) -> bool:
    """Every other device of the account is signed out at once."""
    await _not_fresh(ctx)
    keys = await ctx.server.authsession.unbind_others(_user_id(ctx), ctx.auth_key.effective_id)
    for key in keys:
        ctx.server.sessions.revoke_key(key)
    return True


# ------------------------------------------------------------------------ 2FA


@router(
    fn.auth.RequestPasswordRecovery,
    fn.auth.CheckRecoveryPassword,
    fn.auth.RecoverPassword,
    anonymous=True,
)
async def password_recovery(ctx: RequestContext, req: TLObject) -> TLObject:
    """No mail goes out from this server, so recovery by email is never available:
    Telegram's answer for an account without a confirmed recovery email."""
    user_id, _pending = await _password_user(ctx)
    if await ctx.server.authsession.get_password(user_id) is None:
        raise RpcError(400, "PASSWORD_EMPTY")
    raise RpcError(400, "PASSWORD_RECOVERY_NA")


@router(fn.auth.CheckPassword, anonymous=True)
async def check_password(
    ctx: RequestContext, req: fn.auth.CheckPassword
) -> types.auth.Authorization:
    user_id, pending = await _password_user(ctx)
    auth = ctx.server.authsession
    await auth.check_password(user_id, req.password)
    if pending:
        key = ctx.auth_key.effective_id
        if await auth.confirm_password(key) != user_id:  # signed out meanwhile
            raise RpcError(401, "AUTH_KEY_UNREGISTERED")
        ctx.server.sessions.bind_user(key, user_id)
    return types.auth.Authorization(user=await _self_user(ctx, user_id))


@router(fn.account.GetPassword, anonymous=True)
async def get_password(ctx: RequestContext, req: fn.account.GetPassword) -> types.account.Password:
    """Also before sign-in completes: the 2FA step of signing in needs the challenge."""
    user_id, _ = await _password_user(ctx)
    return await ctx.server.authsession.password_info(user_id)


@router(fn.account.GetPasswordSettings)
async def get_password_settings(
    ctx: RequestContext, req: fn.account.GetPasswordSettings
) -> types.account.PasswordSettings:
    user_id = _user_id(ctx)
    auth = ctx.server.authsession
    await auth.check_password(user_id, req.password)
    rec = await auth.get_password(user_id)
    return types.account.PasswordSettings(email=(rec.email or None) if rec else None)


@router(fn.account.UpdatePasswordSettings)
async def update_password_settings(
    ctx: RequestContext, req: fn.account.UpdatePasswordSettings
) -> bool:
    settings = req.new_settings
    if not isinstance(settings, types.account.PasswordInputSettings):
        raise RpcError(400, "NEW_SETTINGS_INVALID")
    await ctx.server.authsession.update_password(_user_id(ctx), req.password, settings)
    return True


# ------------------------------------------------------------------- devices


async def _authorization_view(
    ctx: RequestContext, rec: AuthorizationRecord, client: ClientInfo, current: bool
) -> types.Authorization:
    # A device online now: its last request, and the address it speaks from.
    active, ip = rec.active_at, client.client_ip
    live = await ctx.server.sessions.key_activity(rec.auth_key_id)
    if live is not None:
        active = max(active, int(live[0]))
        ip = live[1] or ip
    return types.Authorization(
        current=current,
        password_pending=rec.password_pending,
        # Telegram's convention: the current device's hash is 0 (it cannot reset itself).
        hash=0 if current else rec.hash,
        device_model=client.device_model,
        platform=client.lang_pack,
        system_version=client.system_version,
        api_id=client.api_id,
        app_name=client.lang_pack or f"api_id {client.api_id}",
        app_version=client.app_version,
        date_created=rec.created_at,
        date_active=active,
        ip=ip,
        country="",
        region="",
    )


@router(fn.account.GetAuthorizations)
async def get_authorizations(
    ctx: RequestContext, req: fn.account.GetAuthorizations
) -> types.account.Authorizations:
    auth = ctx.server.authsession
    me = ctx.auth_key.effective_id
    out: list[types.Authorization] = []
    for rec in await auth.authorizations_of(_user_id(ctx)):
        client = await auth.get_client_info(rec.auth_key_id) or ClientInfo()
        view = await _authorization_view(ctx, rec, client, current=rec.auth_key_id == me)
        if view.current:
            out.insert(0, view)
        else:
            out.append(view)
    return types.account.Authorizations(
        authorization_ttl_days=AUTHORIZATION_TTL_DAYS, authorizations=out
    )


@router(fn.account.ResetAuthorization)
async def reset_authorization(ctx: RequestContext, req: fn.account.ResetAuthorization) -> bool:
    """That device is signed out at once: its next call gets 401 AUTH_KEY_UNREGISTERED."""
    auth = ctx.server.authsession
    target = None
    for rec in await auth.authorizations_of(_user_id(ctx)):
        if rec.hash == req.hash and rec.auth_key_id != ctx.auth_key.effective_id:
            target = rec
    if target is None:
        raise RpcError(400, "HASH_INVALID")
    await _not_fresh(ctx)
    await auth.unbind_key(target.auth_key_id)
    await auth.drop_login_tokens(target.auth_key_id)
    ctx.server.sessions.revoke_key(target.auth_key_id)
    return True


@router(fn.account.GetAccountTTL)
async def get_account_ttl(
    ctx: RequestContext, req: fn.account.GetAccountTTL
) -> types.AccountDaysTTL:
    return types.AccountDaysTTL(days=await ctx.server.authsession.get_account_ttl(_user_id(ctx)))


@router(fn.account.SetAccountTTL)
async def set_account_ttl(ctx: RequestContext, req: fn.account.SetAccountTTL) -> bool:
    if not isinstance(req.ttl, types.AccountDaysTTL):
        raise RpcError(400, "TTL_DAYS_INVALID")
    # TODO(accounts): nothing deletes inactive accounts yet; the value is kept for it.
    await ctx.server.authsession.set_account_ttl(_user_id(ctx), req.ttl.days)
    return True


# ------------------------------------------------------------------- QR login


async def _login_token_answer(ctx: RequestContext) -> types.auth.LoginTokenSuccess | None:
    """loginTokenSuccess if a signed-in device accepted this key's token, else None.

    Accepting bound the key with the sign-in pending; collecting it here completes
    the sign-in, or stops at the 2FA password (SESSION_PASSWORD_NEEDED, then
    auth.checkPassword) when the account has one.
    """
    auth = ctx.server.authsession
    key = ctx.auth_key.effective_id
    tok = await auth.accepted_login_token(key)
    if tok is None or tok.accepted_user_id is None:
        return None
    await auth.drop_login_tokens(key)
    user_id = tok.accepted_user_id
    if await auth.pending_password_user(key) != user_id:
        return None  # signed out (or in as someone else) in between: start over
    if await auth.get_password(user_id) is not None:
        raise RpcError(401, "SESSION_PASSWORD_NEEDED")
    await auth.confirm_password(key)
    ctx.server.sessions.bind_user(key, user_id)
    return types.auth.LoginTokenSuccess(
        authorization=types.auth.Authorization(user=await _self_user(ctx, user_id))
    )


@router(fn.auth.ExportLoginToken, anonymous=True)
async def export_login_token(
    ctx: RequestContext, req: fn.auth.ExportLoginToken
) -> types.auth.LoginToken | types.auth.LoginTokenSuccess:
    done = await _login_token_answer(ctx)
    if done is not None:
        return done
    tok = await ctx.server.authsession.new_login_token(ctx.auth_key.effective_id)
    return types.auth.LoginToken(expires=tok.expires_at, token=tok.token)


@router(fn.auth.ImportLoginToken, anonymous=True)
async def import_login_token(
    ctx: RequestContext, req: fn.auth.ImportLoginToken
) -> types.auth.LoginToken | types.auth.LoginTokenSuccess:
    """After loginTokenMigrateTo (never sent: one DC); answered as export would."""
    tok = await ctx.server.authsession.login_token(req.token)
    if tok is None or tok.auth_key_id != ctx.auth_key.effective_id:
        raise RpcError(400, "AUTH_TOKEN_INVALID")
    done = await _login_token_answer(ctx)
    if done is not None:
        return done
    if tok.expires_at < time.time():
        raise RpcError(400, "AUTH_TOKEN_EXPIRED")
    return types.auth.LoginToken(expires=tok.expires_at, token=tok.token)


@router(fn.auth.AcceptLoginToken)
async def accept_login_token(
    ctx: RequestContext, req: fn.auth.AcceptLoginToken
) -> types.Authorization:
    """A signed-in device scanned the QR code: the exporting device's sign-in is
    recorded (pending until it collects it with exportLoginToken), and that device
    is told by updateLoginToken. The answer describes the new device."""
    user_id = _user_id(ctx)
    auth = ctx.server.authsession
    tok = await auth.accept_login_token(req.token, user_id)
    key = tok.auth_key_id
    await auth.bind_user(key, user_id, password_pending=True)
    ctx.server.sessions.bind_user(key, None)
    update = types.UpdateShort(update=types.UpdateLoginToken(), date=int(time.time()))
    ctx.server.sessions.push_to_key(key, update)
    rec = await auth.authorization_of_key(key)
    client = await auth.get_client_info(key) or ClientInfo()
    if rec is None:  # signed out by a racing call; report what was accepted
        now = int(time.time())
        rec = AuthorizationRecord(key, user_id, 0, now, now)
    # Pending here means what it means to the user: the device still needs the password.
    rec.password_pending = await auth.get_password(user_id) is not None
    return await _authorization_view(ctx, rec, client, current=False)
