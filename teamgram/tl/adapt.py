"""Hand-written layer adapters: where the schemas alone cannot say how to convert.

The layer codecs (:mod:`teamgram.tl.layers`) convert between an older layer and the
canonical one field by field, by name, from the schemas. This module holds the few
places where that is not enough because the meaning changed between layers: a field
whose type changed, a value that moved to another field, a constructor the old
layer has no equivalent for. Every adapter is registered with a predicate saying
when it applies (by default: when the two layers' definitions differ), so the same
adapter serves every older layer that needs it. ``docs/layers.md`` lists them all,
in a table ``python -m teamgram.tl.adapt`` writes from :data:`REGISTRY` and the
docstrings below (``tests/unit/test_layers.py`` checks it is current).

Kinds of adapters (``ctx`` is the layer codec, see :class:`Context`):

- ``decode_ctor``: an old constructor (or function) with no field-by-field canonical
  form; gets the fields read from the wire (already converted) and returns the
  canonical object.
- ``decode_field``: converts one field's value read from the wire.
- ``encode_ctor``: replaces a canonical object before it is written: by a canonical
  object the layer knows, by a :class:`Foreign` object (a constructor only the old
  layer has), or by None (dropped from a vector).
- ``encode_field``: computes the value of one field of the old layer's constructor
  from the canonical object.
- ``encode_result``: converts a method's result whose type changed.
- ``fallback``: for a canonical constructor the layer does not know at all, by type:
  a placeholder it does know (``messageMediaUnsupported``...) or None (dropped).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from teamgram.tl.core import CLASSES, TLObject
from teamgram.tl.gen import functions as fn
from teamgram.tl.gen import types
from teamgram.tl.generator import attr_name


class Context(Protocol):
    """What adapters may ask the codec of the layer they convert for."""

    layer: int

    def has(self, name: str) -> bool:
        """The layer has a constructor or function of this name."""

    def differs(self, name: str) -> bool:
        """The layer's definition of ``name`` differs from the canonical one (or is missing)."""

    def field_differs(self, name: str, field: str) -> bool:
        """The layer has the field, and the canonical form lacks it or types it otherwise."""

    def result_differs(self, name: str) -> bool:
        """The function's result type differs from the canonical one."""


class Foreign:
    """A constructor of an older layer with no canonical class, for that layer's writer."""

    __slots__ = ("fields", "name")

    def __init__(self, name: str, fields: dict[str, Any] | None = None) -> None:
        self.name = name
        self.fields = fields or {}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Foreign):
            return NotImplemented
        return self.name == other.name and self.fields == other.fields

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Foreign({self.name!r}, {self.fields!r})"


When = Callable[[Context], bool]


@dataclass(frozen=True, slots=True)
class Adapter:
    kind: str  # decode_ctor, decode_field, encode_ctor, encode_field, encode_result, fallback
    name: str  # constructor, function or (fallback) type name
    field: str | None
    fn: Callable[..., Any]
    when: When | None  # None: the default predicate of the kind
    doc: str

    def applies(self, ctx: Context) -> bool:
        if self.when is not None:
            return self.when(ctx)
        if self.kind in ("decode_field", "encode_field"):
            assert self.field is not None
            return ctx.field_differs(self.name, self.field)
        if self.kind == "encode_result":
            return ctx.result_differs(self.name)
        if self.kind == "fallback":
            return True
        return ctx.differs(self.name)


REGISTRY: list[Adapter] = []


def _register(kind: str, names: tuple[str, ...], field: str | None, when: When | None) -> Any:
    def deco(f: Callable[..., Any]) -> Callable[..., Any]:
        doc = " ".join((f.__doc__ or "").split())
        for name in names:
            REGISTRY.append(Adapter(kind, name, field, f, when, doc))
        return f

    return deco


def decode_ctor(*names: str, when: When | None = None) -> Any:
    """``f(name, fields, ctx) -> canonical object`` for these old constructors."""
    return _register("decode_ctor", names, None, when)


def decode_field(name: str, field: str, when: When | None = None) -> Any:
    """``f(value, ctx) -> canonical value`` for one field read from the wire."""
    return _register("decode_field", (name,), field, when)


def encode_ctor(*names: str, when: When | None = None) -> Any:
    """``f(obj, ctx) -> replacement`` (canonical object, Foreign, or None to drop)."""
    return _register("encode_ctor", names, None, when)


def encode_field(*names: str, field: str, when: When | None = None) -> Any:
    """``f(obj, ctx) -> value of the old layer's field`` (None: absent)."""
    return _register("encode_field", names, field, when)


def encode_result(*names: str, when: When | None = None) -> Any:
    """``f(value, ctx) -> value in the old layer's result type``."""
    return _register("encode_result", names, None, when)


def fallback(*tl_types: str) -> Any:
    """``f(obj, ctx) -> placeholder or None`` for constructors of these types the layer lacks."""
    return _register("fallback", tl_types, None, None)


# -- helpers -------------------------------------------------------------------------

_BY_NAME: dict[str, type[TLObject]] = {}


def canonical_class(name: str) -> type[TLObject] | None:
    if not _BY_NAME:
        _BY_NAME.update((c.TL_NAME, c) for c in CLASSES.values())
    return _BY_NAME.get(name)


def make(name: str, fields: dict[str, Any]) -> Any:
    """The canonical ``name`` built from TL field names (absent optionals: unset)."""
    cls = canonical_class(name)
    if cls is None:
        raise ValueError(f"no canonical constructor {name}")
    slots = cls.__slots__
    kwargs = {attr_name(k): v for k, v in fields.items()}
    return cls(**{k: v for k, v in kwargs.items() if k in slots})


def fields_of(obj: TLObject) -> dict[str, Any]:
    """A canonical object's fields by TL name (keyword-escaped attributes unescaped)."""
    return {s.removesuffix("_"): getattr(obj, s) for s in obj.__slots__}


def _lacks_inline_keyboards(ctx: Context) -> bool:
    return not ctx.has("keyboardInlineButton")


# Default objects for a required field of this type that the other layer lacks.
DEFAULT_OBJECTS: dict[str, Callable[[], Any]] = {
    "ButtonType": types.ButtonTypeDefault,
    "InputChatTheme": types.InputChatThemeEmpty,
    "PaidReactionPrivacy": types.PaidReactionPrivacyDefault,
    "StarsAmount": lambda: types.StarsAmount(amount=0, nanos=0),
    "ChatTheme": lambda: types.ChatTheme(emoticon=""),
    "PeerColor": types.PeerColor,
}


def empty_updates(date: int | None = None) -> Any:
    return types.Updates(
        updates=[], users=[], chats=[], date=int(time.time()) if date is None else date, seq=0
    )


# -- keyboards (layers before 229: one KeyboardButton type, a constructor per kind) --

# Old constructor -> the canonical button type it becomes, for reply keyboards...
REPLY_BUTTONS = {
    "keyboardButtonRequestPhone": "buttonTypeRequestPhone",
    "keyboardButtonRequestGeoLocation": "buttonTypeRequestGeoLocation",
    "keyboardButtonRequestPoll": "buttonTypeRequestPoll",
    "keyboardButtonSimpleWebView": "buttonTypeSimpleWebView",
    "keyboardButtonRequestPeer": "buttonTypeRequestPeer",
    "inputKeyboardButtonRequestPeer": "inputButtonTypeRequestPeer",
}
# ... and for inline keyboards.
INLINE_BUTTONS = {
    "keyboardButtonUrl": "inlineButtonTypeUrl",
    "keyboardButtonCallback": "inlineButtonTypeCallback",
    "keyboardButtonSwitchInline": "inlineButtonTypeSwitchInline",
    "keyboardButtonGame": "inlineButtonTypeGame",
    "keyboardButtonBuy": "inlineButtonTypeBuy",
    "keyboardButtonUrlAuth": "inlineButtonTypeUrlAuth",
    "inputKeyboardButtonUrlAuth": "inputInlineButtonTypeUrlAuth",
    "inputKeyboardButtonUserProfile": "inputInlineButtonTypeUserProfile",
    "keyboardButtonUserProfile": "inlineButtonTypeUserProfile",
    "keyboardButtonWebView": "inlineButtonTypeWebView",
    "keyboardButtonCopy": "inlineButtonTypeCopy",
}
_BUTTON_OF_TYPE = {v: k for k, v in (REPLY_BUTTONS | INLINE_BUTTONS).items()}


@decode_ctor(*REPLY_BUTTONS, *INLINE_BUTTONS)
def _button_in(name: str, fields: dict[str, Any], ctx: Context) -> Any:
    """An old keyboard button constructor (keyboardButtonUrl, ...RequestPhone...) becomes a
    keyboardButton / keyboardInlineButton whose ``type`` holds the kind-specific fields."""
    text, style = fields.pop("text"), fields.pop("style", None)
    if name in REPLY_BUTTONS:
        return types.KeyboardButton(text=text, type=make(REPLY_BUTTONS[name], fields), style=style)
    return types.KeyboardInlineButton(
        text=text, type=make(INLINE_BUTTONS[name], fields), style=style
    )


def _as_inline(b: Any) -> Any:
    if isinstance(b, types.KeyboardInlineButton):
        return b
    # A reply-keyboard button in an inline keyboard (Telegram refuses those).
    return types.KeyboardInlineButton(text=b.text, type=types.InlineButtonTypeDisabled())


def _as_reply(b: Any) -> Any:
    if isinstance(b, types.KeyboardButton):
        return b
    return types.KeyboardButton(text=b.text, type=types.ButtonTypeDefault(), style=b.style)


@decode_field("replyInlineMarkup", "rows", when=_lacks_inline_keyboards)
def _inline_rows_in(rows: list[Any], ctx: Context) -> list[Any]:
    """Old inline keyboards are rows of keyboardButtonRow: they become
    keyboardInlineButtonRow of keyboardInlineButton."""
    return [
        types.KeyboardInlineButtonRow(buttons=[_as_inline(b) for b in row.buttons]) for row in rows
    ]


@decode_field("replyKeyboardMarkup", "rows", when=_lacks_inline_keyboards)
def _reply_rows_in(rows: list[Any], ctx: Context) -> list[Any]:
    """Rows of a reply keyboard keep only reply-keyboard buttons (an inline kind becomes
    a plain text button)."""
    return [types.KeyboardButtonRow(buttons=[_as_reply(b) for b in row.buttons]) for row in rows]


def _button_out(obj: Any) -> Any:
    kind = obj.type
    if isinstance(kind, types.ButtonTypeDefault) and isinstance(obj, types.KeyboardButton):
        return obj  # the layer's own keyboardButton, field by field
    name = _BUTTON_OF_TYPE.get(kind.TL_NAME, "keyboardButton")
    return Foreign(name, {**fields_of(kind), "text": obj.text, "style": obj.style})


@encode_ctor("keyboardButton", "keyboardInlineButton", when=_lacks_inline_keyboards)
def _button_out_adapter(obj: Any, ctx: Context) -> Any:
    """keyboardButton / keyboardInlineButton with a ``type`` are written as the old
    per-kind constructor (keyboardButtonUrl, keyboardButtonRequestPhone...);
    inlineButtonTypeDisabled, which has none, as a plain keyboardButton."""
    return _button_out(obj)


@encode_ctor("keyboardInlineButtonRow", when=_lacks_inline_keyboards)
def _inline_row_out(obj: Any, ctx: Context) -> Any:
    """keyboardInlineButtonRow is written as keyboardButtonRow."""
    return types.KeyboardButtonRow(buttons=obj.buttons)


# -- fields whose type or meaning changed ---------------------------------------------


@decode_field("messages.sendPaidReaction", "private")
@decode_field("messages.togglePaidReactionPrivacy", "private")
def _paid_privacy_in(value: Any, ctx: Context) -> Any:
    """``private:Bool`` (layer 198) becomes paidReactionPrivacyAnonymous (true) or
    paidReactionPrivacyDefault (false)."""
    if value is None:
        return None
    return types.PaidReactionPrivacyAnonymous() if value else types.PaidReactionPrivacyDefault()


@encode_field("updatePaidReactionPrivacy", field="private")
def _paid_privacy_out(obj: Any, ctx: Context) -> bool:
    """updatePaidReactionPrivacy's PaidReactionPrivacy is written as ``private:Bool``
    (true for anonymous)."""
    return isinstance(obj.private, types.PaidReactionPrivacyAnonymous)


@decode_ctor("account.updateColor")
def _update_color_in(name: str, fields: dict[str, Any], ctx: Context) -> Any:
    """account.updateColor's ``color:int`` + ``background_emoji_id:long`` (layer 198)
    become one peerColor."""
    color, emoji = fields.get("color"), fields.get("background_emoji_id")
    peer_color = None
    if color is not None or emoji is not None:
        peer_color = types.PeerColor(color=color, background_emoji_id=emoji)
    return fn.account.UpdateColor(for_profile=bool(fields.get("for_profile")), color=peer_color)


@decode_ctor("messages.setChatTheme")
def _set_chat_theme_in(name: str, fields: dict[str, Any], ctx: Context) -> Any:
    """messages.setChatTheme's ``emoticon:string`` (layer 198) becomes inputChatTheme
    (inputChatThemeEmpty for an empty emoticon)."""
    emoticon = fields.get("emoticon") or ""
    theme = types.InputChatTheme(emoticon=emoticon) if emoticon else types.InputChatThemeEmpty()
    return fn.messages.SetChatTheme(peer=fields["peer"], theme=theme)


def _poll_answers_changed(ctx: Context) -> bool:
    return ctx.field_differs("inputMediaPoll", "correct_answers")


@decode_ctor("inputMediaPoll", when=_poll_answers_changed)
def _poll_in(name: str, fields: dict[str, Any], ctx: Context) -> Any:
    """inputMediaPoll's ``correct_answers`` were answer options (bytes, layer 198);
    now they are indexes into the poll's answers."""
    correct = fields.pop("correct_answers", None)
    if correct is not None:
        options = set(correct)
        answers = fields["poll"].answers
        fields["correct_answers"] = [
            i for i, a in enumerate(answers) if getattr(a, "option", None) in options
        ]
    return make("inputMediaPoll", fields)


@encode_field("user", "channel", field="stories_max_id")
def _stories_max_id_out(obj: Any, ctx: Context) -> int | None:
    """``stories_max_id`` is a recentStory now, an int before."""
    story = obj.stories_max_id
    return None if story is None else story.max_id


@encode_field("messageActionSetChatTheme", field="emoticon")
def _chat_theme_emoticon_out(obj: Any, ctx: Context) -> str:
    """messageActionSetChatTheme's ``theme`` is written as the older ``emoticon``
    (empty for a gift theme, which has none)."""
    return getattr(obj.theme, "emoticon", "") or ""


@encode_field("userFull", field="theme_emoticon")
def _user_theme_emoticon_out(obj: Any, ctx: Context) -> str | None:
    """userFull's ``theme`` (chatTheme) is written as the older ``theme_emoticon``."""
    return getattr(obj.theme, "emoticon", None)


@encode_field(
    "messageActionGiftPremium", "messageActionGiftCode", "payments.checkedGiftCode", field="months"
)
def _months_out(obj: Any, ctx: Context) -> int:
    """Premium gifts counted ``months`` before they counted ``days`` (30 days a month)."""
    return max(1, round(obj.days / 30)) if obj.days else 0


@encode_field("starsTransaction", field="stars")
def _stars_out(obj: Any, ctx: Context) -> Any:
    """starsTransaction's ``amount`` was called ``stars``."""
    return obj.amount


# Rarity of an attribute in per mille, for the named rarities of newer layers.
RARITY_PERMILLE = {
    "starGiftAttributeRarityUncommon": 150,
    "starGiftAttributeRarityRare": 50,
    "starGiftAttributeRarityEpic": 15,
    "starGiftAttributeRarityLegendary": 5,
}


@encode_field(
    "starGiftAttributeModel",
    "starGiftAttributePattern",
    "starGiftAttributeBackdrop",
    field="rarity_permille",
)
def _rarity_out(obj: Any, ctx: Context) -> int:
    """``rarity`` (starGiftAttributeRarity*) is written as the older ``rarity_permille``
    (named rarities at a representative per-mille value)."""
    rarity = obj.rarity
    permille = getattr(rarity, "permille", None)
    if permille is not None:
        return int(permille)
    return RARITY_PERMILLE.get(getattr(rarity, "TL_NAME", ""), 0)


@encode_field("updateGroupCall", field="chat_id")
def _group_call_chat_out(obj: Any, ctx: Context) -> int | None:
    """updateGroupCall's ``peer`` is written as the older ``chat_id`` (basic groups and
    channels; absent for a user's call)."""
    peer = obj.peer
    if isinstance(peer, types.PeerChat):
        return int(peer.chat_id)
    if isinstance(peer, types.PeerChannel):
        return int(peer.channel_id)
    return None


# -- results whose type changed -------------------------------------------------------


@encode_result("messages.importChatInvite", "channels.joinChannel")
def _join_result_out(value: Any, ctx: Context) -> Any:
    """messages.ChatInviteJoinResult is answered as the Updates it carries (an empty
    Updates for a bot web view, which older layers cannot open here)."""
    if isinstance(value, types.messages.ChatInviteJoinResultOk):
        return value.updates
    return value if isinstance(value, TLObject) and value.TL_TYPE == "Updates" else empty_updates()


@encode_result("stories.canSendStory")
def _can_send_story_out(value: Any, ctx: Context) -> Any:
    """stories.canSendStoryCount is answered as Bool (true while stories remain)."""
    if isinstance(value, types.stories.CanSendStoryCount):
        return value.count_remains > 0
    return value


@encode_result("stories.getPeerMaxIDs")
def _peer_max_ids_out(value: Any, ctx: Context) -> Any:
    """Vector<RecentStory> is answered as the older Vector<int> of max ids."""
    return [int(getattr(s, "max_id", None) or 0) for s in value]


# -- placeholders for constructors a layer does not know -------------------------------


@fallback("MessageMedia")
def _media_fallback(obj: Any, ctx: Context) -> Any:
    """A media kind the layer lacks: messageMediaUnsupported (what Telegram sends)."""
    return types.MessageMediaUnsupported()


@fallback("MessageAction")
def _action_fallback(obj: Any, ctx: Context) -> Any:
    """A service-message action the layer lacks: messageActionEmpty."""
    return types.MessageActionEmpty()


@fallback("MessageEntity")
def _entity_fallback(obj: Any, ctx: Context) -> Any:
    """An entity kind the layer lacks: messageEntityUnknown over the same range."""
    return types.MessageEntityUnknown(offset=obj.offset, length=obj.length)


@fallback("RichText")
def _rich_text_fallback(obj: Any, ctx: Context) -> Any:
    """Rich text the layer lacks: its inner text (textPlain for a string), else textEmpty."""
    text = getattr(obj, "text", None)
    if isinstance(text, str):
        return types.TextPlain(text=text)
    if isinstance(text, TLObject):
        return text
    return types.TextEmpty()


@fallback("PageBlock")
def _page_block_fallback(obj: Any, ctx: Context) -> Any:
    """An Instant View block the layer lacks: pageBlockUnsupported."""
    return types.PageBlockUnsupported()


@fallback("SendMessageAction")
def _typing_fallback(obj: Any, ctx: Context) -> Any:
    """A chat action the layer lacks (text draft streaming...): sendMessageTypingAction."""
    return types.SendMessageTypingAction()


@fallback("Chat")
def _chat_fallback(obj: Any, ctx: Context) -> Any:
    """A chat kind the layer lacks (community): chatForbidden with its id and title."""
    return types.ChatForbidden(id=obj.id, title=getattr(obj, "title", "") or "")


@fallback("StarsAmount")
def _stars_amount_fallback(obj: Any, ctx: Context) -> Any:
    """A TON amount where the layer knows only stars: starsAmount 0."""
    return types.StarsAmount(amount=0, nanos=0)


@fallback("PeerColor")
def _peer_color_fallback(obj: Any, ctx: Context) -> Any:
    """A collectible color the layer lacks: the default peerColor."""
    return types.PeerColor()


@fallback("Update", "Dialog")
def _drop_fallback(obj: Any, ctx: Context) -> None:
    """An update or dialog kind the layer lacks is left out (Telegram does the same).
    Any other unknown constructor in a vector is left out too; elsewhere its
    container is (up to the nearest vector), or a push becomes an empty Updates."""
    return None


def applicable(ctx: Context) -> dict[str, dict[Any, Adapter]]:
    """The adapters that apply to ``ctx``'s layer, by kind, keyed by name or (name, field)."""
    out: dict[str, dict[Any, Adapter]] = {
        k: {}
        for k in (
            "decode_ctor",
            "decode_field",
            "encode_ctor",
            "encode_field",
            "encode_result",
            "fallback",
        )
    }
    for a in REGISTRY:
        if a.applies(ctx):
            key = (a.name, a.field) if a.field is not None else a.name
            out[a.kind][key] = a
    return out


# -- the list in docs/layers.md --------------------------------------------------------

DOC_BEGIN = "<!-- adapters: generated by python -m teamgram.tl.adapt; do not edit -->"
DOC_END = "<!-- adapters: end -->"
_KIND_LABELS = {
    "decode_ctor": "request constructor",
    "decode_field": "request field",
    "encode_ctor": "answer constructor",
    "encode_field": "answer field",
    "encode_result": "method result",
    "fallback": "placeholder (by type)",
}


def _relevant(a: Adapter, ctx: Any) -> bool:
    if a.kind != "fallback":
        return a.applies(ctx)
    # a placeholder matters where the layer lacks constructors of the type
    return any(not ctx.has(n) for n in ctx.C.type_names.get(a.name, ()))


def markdown() -> str:
    """The table of hand-written adapters, with the layers each one serves."""
    from teamgram.tl.layers import SCHEMA_LAYERS, codec_for

    codecs = [codec_for(layer) for layer in SCHEMA_LAYERS]
    lines = [
        DOC_BEGIN,
        "",
        "| kind | constructor / method (.field) | layers | what and why |",
        "| --- | --- | --- | --- |",
    ]
    groups: dict[tuple[str, Any], list[Adapter]] = {}
    for a in REGISTRY:  # one row per adapter function
        groups.setdefault((a.kind, a.fn), []).append(a)
    for (kind, _), members in groups.items():
        served = []
        for c in codecs:
            c._setup()  # type: ignore[attr-defined]
            if any(_relevant(a, c) for a in members):
                served.append(str(c.layer))
        labels = ", ".join(f"`{a.name}.{a.field}`" if a.field else f"`{a.name}`" for a in members)
        doc = members[0].doc.replace("|", "\\|")
        lines.append(f"| {_KIND_LABELS[kind]} | {labels} | {', '.join(served) or '-'} | {doc} |")
    lines += ["", DOC_END]
    return "\n".join(lines)


def update_doc(path: str, check: bool = False) -> bool:
    """Rewrite the generated part of ``path``; with ``check``, only say if it is current."""
    from pathlib import Path

    p = Path(path)
    text = p.read_text(encoding="utf-8")
    begin, end = text.index(DOC_BEGIN), text.index(DOC_END) + len(DOC_END)
    new = text[:begin] + markdown() + text[end:]
    if check:
        return new == text
    p.write_text(new, encoding="utf-8")
    return True


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Write the adapter table of docs/layers.md")
    parser.add_argument("--doc", default="docs/layers.md")
    parser.add_argument("--check", action="store_true", help="exit 1 if the table is stale")
    args = parser.parse_args()
    ok = update_doc(args.doc, check=args.check)
    if args.check and not ok:
        raise SystemExit(f"{args.doc} is out of date: run python -m teamgram.tl.adapt")


if __name__ == "__main__":
    # Run through the imported module: the codecs use its registry, not __main__'s.
    from teamgram.tl import adapt as _adapt

    _adapt.main()
