"""Sans-IO MTProto TCP transports: bytes in, packets out; packets in, bytes out.

:class:`ServerTransport` detects the client's framing (abridged, intermediate,
padded intermediate, full, each but full optionally obfuscated2) and decodes
and encodes frames. :class:`ClientTransport` is its counterpart for tests and
tools. Neither touches a socket or an event loop.
"""

from .client import ClientTransport
from .framing import DEFAULT_MAX_PACKET, ERROR_NOT_FOUND, Packet, TransportError
from .server import ServerTransport

__all__ = [
    "DEFAULT_MAX_PACKET",
    "ERROR_NOT_FOUND",
    "ClientTransport",
    "Packet",
    "ServerTransport",
    "TransportError",
]
