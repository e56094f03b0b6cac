"""AES-256-IGE, the only symmetric cipher MTProto uses.

The block cipher work is delegated to ``cryptg`` (C); this module only
enforces the length rules cryptg would otherwise paper over: cryptg silently
zero-pads a plaintext that is not a multiple of 16 bytes, which would hide a
framing bug on the encrypt side and accept truncated ciphertexts on the
decrypt side. cryptg itself rejects keys and IVs that are not 32 bytes
(``ValueError``).
"""

from __future__ import annotations

import cryptg

__all__ = ["decrypt_ige", "encrypt_ige"]

_encrypt = cryptg.encrypt_ige
_decrypt = cryptg.decrypt_ige


def encrypt_ige(plaintext: bytes, key: bytes, iv: bytes) -> bytes:
    """Encrypt ``plaintext`` (a multiple of 16 bytes) with a 32-byte key and 32-byte IV."""
    if len(plaintext) & 15:
        raise ValueError(f"IGE plaintext length {len(plaintext)} is not a multiple of 16")
    return _encrypt(plaintext, key, iv)


def decrypt_ige(ciphertext: bytes, key: bytes, iv: bytes) -> bytes:
    """Decrypt ``ciphertext`` (a multiple of 16 bytes) with a 32-byte key and 32-byte IV."""
    if len(ciphertext) & 15:
        raise ValueError(f"IGE ciphertext length {len(ciphertext)} is not a multiple of 16")
    return _decrypt(ciphertext, key, iv)
