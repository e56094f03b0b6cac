"""Per-layer codecs: how one server speaks to clients of different layers.

Handlers are written once, against the canonical classes (the newest layer the
project carries, :data:`teamgram.tl.LAYER`). At the edge, the layer a client
declared with ``invokeWithLayer`` (remembered per auth key) picks a
:class:`LayerCodec`: it reads that layer's requests into canonical objects and
writes canonical answers and updates in the form that layer knows.

Today only the canonical codec exists; older layers (198, 227...) register an
adapter codec here, generated from their schemas by the same parser
(``teamgram.tl.parser.load_schema(layer)``): same name with a different id maps
field by field, and hand-written adapters cover changed semantics.
"""

from __future__ import annotations

from typing import Any, Protocol

from teamgram.tl.core import TLFunction, TLObject, decode
from teamgram.tl.gen import LAYER


class LayerCodec(Protocol):
    layer: int

    def decode(self, data: bytes) -> Any:
        """Read a boxed object of this layer into its canonical form."""

    def encode(self, obj: TLObject) -> bytes:
        """Write a canonical object as this layer knows it."""

    def encode_result(self, function: type[TLFunction], value: Any) -> bytes:
        """Write the result of ``function`` (object, bool or vector) for this layer."""


class CanonicalCodec:
    """The newest layer: the generated classes read and write themselves."""

    layer = LAYER

    def decode(self, data: bytes) -> Any:
        return decode(data)

    def encode(self, obj: TLObject) -> bytes:
        return obj.to_bytes()

    def encode_result(self, function: type[TLFunction], value: Any) -> bytes:
        b = bytearray()
        function.write_result(b, value)
        return bytes(b)


CANONICAL = CanonicalCodec()
_CODECS: dict[int, LayerCodec] = {LAYER: CANONICAL}


def register_codec(codec: LayerCodec) -> None:
    # Forget resolved fallbacks: the new codec may be nearer for some layers.
    for layer in [n for n, c in _CODECS.items() if c.layer != n]:
        del _CODECS[layer]
    _CODECS[codec.layer] = codec


def codec_for(layer: int) -> LayerCodec:
    """The codec for a client's declared layer (0: not declared yet).

    Until adapters for older layers exist, every client gets the canonical codec,
    the nearest newer one, which is what Telegram does for layers it has dropped.
    """
    codec = _CODECS.get(layer)
    if codec is None:  # resolved once per layer (this runs for every message)
        newer = [n for n in _CODECS if n >= layer]
        codec = _CODECS[layer] = _CODECS[min(newer)] if newer else CANONICAL
    return codec
