"""TL: Telegram's schema, generated classes and the wire codec.

``from teamgram.tl import types, functions`` gives the classes of the newest
layer the project carries (the canonical form handlers are written against);
``LAYER`` is its number. Older client layers are adapted at the edge.
"""

from teamgram.tl.core import (
    CLASSES,
    READERS,
    Reader,
    TLDecodeError,
    TLEncodeError,
    TLFunction,
    TLObject,
    UnknownConstructorError,
    decode,
    decode_prefix,
    encode,
    gzip_packed,
)
from teamgram.tl.gen import LAYER, functions, types

__all__ = [
    "CLASSES",
    "LAYER",
    "READERS",
    "Reader",
    "TLDecodeError",
    "TLEncodeError",
    "TLFunction",
    "TLObject",
    "UnknownConstructorError",
    "decode",
    "decode_prefix",
    "encode",
    "functions",
    "gzip_packed",
    "types",
]
