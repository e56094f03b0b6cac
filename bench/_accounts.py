"""Signing bench clients up over the real protocol (the server runs with a dev login code)."""

from __future__ import annotations

from teamgram.testing.mtclient import MTClient
from teamgram.tl import LAYER, functions, types

DEV_CODE = "12345"
API_ID = 12345
API_HASH = "0123456789abcdef0123456789abcdef"


async def sign_up(c: MTClient, phone: str, code: str = DEV_CODE) -> int:
    """sendCode (inside invokeWithLayer/initConnection), signIn, signUp; the user id."""
    sent = await c.invoke(
        functions.InvokeWithLayer(
            layer=LAYER,
            query=functions.InitConnection(
                api_id=API_ID,
                device_model="bench",
                system_version="Linux",
                app_version="1.0",
                system_lang_code="en",
                lang_pack="",
                lang_code="en",
                query=functions.auth.SendCode(
                    phone_number=phone,
                    api_id=API_ID,
                    api_hash=API_HASH,
                    settings=types.CodeSettings(),
                ),
            ),
        )
    )
    answer = await c.invoke(
        functions.auth.SignIn(
            phone_number=phone, phone_code_hash=sent.phone_code_hash, phone_code=code
        )
    )
    if isinstance(answer, types.auth.AuthorizationSignUpRequired):
        answer = await c.invoke(
            functions.auth.SignUp(
                phone_number=phone,
                phone_code_hash=sent.phone_code_hash,
                first_name="Bench",
                last_name=phone[-4:],
            )
        )
    user = answer.user if isinstance(answer, types.auth.Authorization) else None
    if not isinstance(user, types.User):
        raise RuntimeError(f"sign-up of {phone}: unexpected {answer!r}"[:300])
    return int(user.id)
