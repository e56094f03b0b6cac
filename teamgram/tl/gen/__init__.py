"""Generated TL classes for layer 229 (teamgram.tl.generator). Do not edit."""

LAYER = 229

from . import functions, types  # noqa: E402,F401
