"""Messages from the service account (777000, "Telegram") to a user.

Telegram delivers a login code for an account that is already signed in
somewhere as such a message (``auth.sentCodeTypeApp``): every signed-in device
sees it, and the device that asked types the code in.
"""

from __future__ import annotations

from teamgram.messenger.msg.records import pack_vector
from teamgram.messenger.msg.service import MsgService, NewMessage
from teamgram.service.authsession.service import AuthSessionService
from teamgram.service.biz.peers import PEER_USER
from teamgram.service.biz.users import SERVICE_USER_ID, UserService
from teamgram.tl import types

LOGIN_CODE_TEXT = (
    "Login code: {code}. Do not give this code to anyone, even if they say they "
    "are from Telegram!\n\n"
    "This code can be used to log in to your account. We never ask for it for "
    "anything else.\n\n"
    "If you didn't request this code by trying to log in on another device, "
    "simply ignore this message."
)


class ServiceNotices:
    def __init__(self, msg: MsgService, users: UserService, auth: AuthSessionService) -> None:
        self.msg = msg
        self.users = users
        self.auth = auth

    async def send_text(
        self, user_id: int, text: str, entities: list[object] | None = None
    ) -> None:
        await self.users.ensure_service_user()
        views = {user_id: await self.users.users_for(user_id, [SERVICE_USER_ID, user_id])}
        item = NewMessage(text=text, entities=pack_vector(entities))
        await self.msg.send(SERVICE_USER_ID, (PEER_USER, user_id), [item], views, None)

    async def login_code(self, user_id: int, phone: str, code: str) -> bool:
        """Deliver a login code in the app; False when no device is signed in to see it."""
        if not await self.auth.authorizations_of(user_id):
            return False
        text = LOGIN_CODE_TEXT.format(code=code)
        start = len("Login code: ")
        bold = types.MessageEntityBold(offset=start, length=len(code))
        await self.send_text(user_id, text, [bold])
        return True
