"""Sans-IO crypto primitives of the MTProto core (no sockets, no asyncio).

* :mod:`.aes` - AES-256-IGE (cryptg)
* :mod:`.kdf` - msg_key / AES key+IV (2.0 and 1.0), auth_key_id, handshake hashes
* :mod:`.rsa` - the server RSA key, fingerprint, req_DH_params decryption (RSA_PAD + old)
* :mod:`.dh` - Telegram's 2048-bit DH group, g_a / auth_key, g_b range checks
* :mod:`.pq` - the pq proof-of-work challenge and big-endian int helpers
"""

from __future__ import annotations

from .aes import decrypt_ige, encrypt_ige
from .dh import (
    DH_G,
    DH_PRIME,
    DH_PRIME_BYTES,
    check_g_b,
    compute_auth_key,
    compute_g_a,
    generate_dh_a,
    generate_dh_pair,
)
from .kdf import (
    X_CLIENT,
    X_SERVER,
    aes_key_iv_v1,
    aes_key_iv_v2,
    auth_key_aux_hash,
    auth_key_id,
    ct_eq,
    msg_key_v1,
    msg_key_v2,
    new_nonce_hash,
    tmp_aes_key_iv,
)
from .pq import bytes_to_int_be, generate_pq, int_to_bytes_be
from .rsa import (
    InnerData,
    ServerKey,
    compute_fingerprint,
    decrypt_inner_data,
    decrypt_old_scheme,
    decrypt_rsa_pad,
    generate_server_key,
    load_or_create_server_key,
    load_server_key,
    old_scheme_check,
    old_scheme_split,
    rsa_pad_unwrap,
)

__all__ = [
    "DH_G",
    "DH_PRIME",
    "DH_PRIME_BYTES",
    "X_CLIENT",
    "X_SERVER",
    "InnerData",
    "ServerKey",
    "aes_key_iv_v1",
    "aes_key_iv_v2",
    "auth_key_aux_hash",
    "auth_key_id",
    "bytes_to_int_be",
    "check_g_b",
    "compute_auth_key",
    "compute_fingerprint",
    "compute_g_a",
    "ct_eq",
    "decrypt_ige",
    "decrypt_inner_data",
    "decrypt_old_scheme",
    "decrypt_rsa_pad",
    "encrypt_ige",
    "generate_dh_a",
    "generate_dh_pair",
    "generate_pq",
    "generate_server_key",
    "int_to_bytes_be",
    "load_or_create_server_key",
    "load_server_key",
    "msg_key_v1",
    "msg_key_v2",
    "new_nonce_hash",
    "old_scheme_check",
    "old_scheme_split",
    "rsa_pad_unwrap",
    "tmp_aes_key_iv",
]
