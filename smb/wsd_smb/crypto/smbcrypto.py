"""SMB2/3 cryptography (MS-SMB2 3.1.4.1 signing, 3.1.4.2 KDF, 3.1.4.3 encryption, 3.3.5.5.3 keys).

All primitives come from ``cryptography``; the KDF is SP800-108 counter mode with
HMAC-SHA256 (r = 32, L = 128 or 256), as MS-SMB2 3.1.4.2 specifies.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import struct

from cryptography.hazmat.primitives import cmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESCCM, AESGCM
from cryptography.exceptions import InvalidTag

__all__ = [
    "kdf", "derive_session_keys", "sign", "sign_in_place", "verify_signature", "encrypt_message", "decrypt_message",
    "preauth_hash", "SessionKeys", "CIPHER_KEY_SIZE", "DecryptError",
]

HMAC_SHA256, AES_CMAC, AES_GMAC = 0x0000, 0x0001, 0x0002
AES_128_CCM, AES_128_GCM, AES_256_CCM, AES_256_GCM = 0x0001, 0x0002, 0x0003, 0x0004
CIPHER_KEY_SIZE = {AES_128_CCM: 16, AES_128_GCM: 16, AES_256_CCM: 32, AES_256_GCM: 32}


class DecryptError(Exception):
    """A TRANSFORM message failed authentication or was malformed."""


def kdf(key: bytes, label: bytes, context: bytes, length: int = 16) -> bytes:
    """SP800-108 KDF in counter mode, PRF = HMAC-SHA256, i and L 32-bit big-endian
    (MS-SMB2 3.1.4.2).  *length* in bytes (16 or 32)."""
    out = b""
    i = 1
    while len(out) < length:
        out += hmac.new(key, struct.pack(">I", i) + label + b"\0" + context + struct.pack(">I", length * 8),
                        hashlib.sha256).digest()
        i += 1
    return out[:length]


class SessionKeys:
    """Session.SigningKey, EncryptionKey, DecryptionKey, ApplicationKey (MS-SMB2 3.3.5.5.3)."""

    def __init__(self, signing_key: bytes, encryption_key: bytes, decryption_key: bytes, application_key: bytes):
        self.signing_key = signing_key
        self.encryption_key = encryption_key
        self.decryption_key = decryption_key
        self.application_key = application_key


def derive_session_keys(session_key: bytes, dialect: int, preauth_hash: bytes = b"",
                        cipher: int = AES_128_CCM, full_session_key: bytes | None = None) -> SessionKeys:
    """Keys of a 3.x session.  3.0/3.0.2 use the fixed labels/contexts; 3.1.1 uses the
    session's PreauthIntegrityHashValue as the context.  For AES-256 ciphers the
    encryption keys are 32 bytes, derived from the full session key (MS-SMB2 3.3.5.5.3)."""
    ks = CIPHER_KEY_SIZE.get(cipher, 16)
    enc_in = full_session_key if (ks == 32 and full_session_key) else session_key
    if dialect >= 0x0311:
        return SessionKeys(
            kdf(session_key, b"SMBSigningKey\0", preauth_hash),
            kdf(enc_in, b"SMBS2CCipherKey\0", preauth_hash, ks),
            kdf(enc_in, b"SMBC2SCipherKey\0", preauth_hash, ks),
            kdf(session_key, b"SMBAppKey\0", preauth_hash),
        )
    return SessionKeys(
        kdf(session_key, b"SMB2AESCMAC\0", b"SmbSign\0"),
        kdf(session_key, b"SMB2AESCCM\0", b"ServerOut\0"),
        kdf(session_key, b"SMB2AESCCM\0", b"ServerIn \0"),
        kdf(session_key, b"SMB2APP\0", b"SmbRpc\0"),
    )


def _mac(key: bytes, zeroed, algorithm: int) -> bytes:
    """Signature of a message whose Signature field is already zero (MS-SMB2 3.1.4.1)."""
    if algorithm == HMAC_SHA256:
        return hmac.new(key, zeroed, hashlib.sha256).digest()[:16]
    if algorithm == AES_CMAC:
        c = cmac.CMAC(algorithms.AES(key))
        c.update(zeroed)
        return c.finalize()
    if algorithm == AES_GMAC:
        # nonce = MessageId (8) + 4 bytes: bit 0 = response, bit 1 = CANCEL
        message_id = bytes(zeroed[24:32])
        flags = struct.unpack_from("<I", zeroed, 16)[0]
        command = struct.unpack_from("<H", zeroed, 12)[0]
        role = (1 if flags & 0x1 else 0) | (2 if command == 0x000C else 0)
        return AESGCM(key).encrypt(message_id + struct.pack("<I", role), b"", zeroed)[-16:]
    raise ValueError(f"unknown signing algorithm {algorithm}")


def sign_in_place(key: bytes, b: bytearray, algorithm: int) -> None:
    """Set SMB2_FLAGS_SIGNED and the Signature of the message in *b* (no copy)."""
    struct.pack_into("<I", b, 16, struct.unpack_from("<I", b, 16)[0] | 0x8)
    b[48:64] = bytes(16)
    b[48:64] = _mac(key, b, algorithm)


def sign(key: bytes, msg: bytes, algorithm: int) -> bytes:
    """Return *msg* (one SMB2 message, header first) with SMB2_FLAGS_SIGNED set and its
    Signature filled in (MS-SMB2 3.1.4.1).  One copy of the message."""
    b = bytearray(msg)
    struct.pack_into("<I", b, 16, struct.unpack_from("<I", b, 16)[0] | 0x8)
    b[48:64] = bytes(16)
    b[48:64] = _mac(key, b, algorithm)
    return bytes(b) if len(b) < 65536 else b  # large messages stay a bytearray (no second copy)


_ZERO_SIGNATURE = bytes(16)


def _mac_parts(key: bytes, msg, algorithm: int) -> bytes:
    """_mac() of *msg* as if its Signature field were zero, without copying the message:
    the MAC runs over header[:48], 16 zero bytes, and the rest in place."""
    mv = memoryview(msg)
    parts = (mv[:48], _ZERO_SIGNATURE, mv[64:])
    if algorithm == HMAC_SHA256:
        h = hmac.new(key, digestmod=hashlib.sha256)
        for p in parts:
            h.update(p)
        return h.digest()[:16]
    if algorithm == AES_CMAC:
        c = cmac.CMAC(algorithms.AES(key))
        for p in parts:
            c.update(p)
        return c.finalize()
    if algorithm == AES_GMAC:
        flags = struct.unpack_from("<I", mv, 16)[0]
        command = struct.unpack_from("<H", mv, 12)[0]
        role = (1 if flags & 0x1 else 0) | (2 if command == 0x000C else 0)
        enc = Cipher(algorithms.AES(key), modes.GCM(bytes(mv[24:32]) + struct.pack("<I", role))).encryptor()
        for p in parts:
            enc.authenticate_additional_data(p)
        enc.finalize()
        return enc.tag[:16]
    raise ValueError(f"unknown signing algorithm {algorithm}")


def verify_signature(key: bytes, msg: bytes, algorithm: int) -> bool:
    """True if the Signature of *msg* (MS-SMB2 3.1.4.1) is right; the message is not copied."""
    if len(msg) < 64:
        return False
    return hmac.compare_digest(_mac_parts(key, msg, algorithm), bytes(memoryview(msg)[48:64]))


def encrypt_message(key: bytes, session_id: int, msg: bytes, cipher: int, nonce: bytes | None = None) -> bytes:
    """Wrap *msg* in an SMB2 TRANSFORM_HEADER (MS-SMB2 3.1.4.3)."""
    if cipher in (AES_128_CCM, AES_256_CCM):
        nonce = nonce or os.urandom(11)
        nonce_field = nonce + b"\0" * 5
        aead = AESCCM(key, tag_length=16)
    else:
        nonce = nonce or os.urandom(12)
        nonce_field = nonce + b"\0" * 4
        aead = AESGCM(key)
    aad = nonce_field + struct.pack("<IHHQ", len(msg), 0, 1, session_id)
    ct = aead.encrypt(nonce, msg, aad)
    mv = memoryview(ct)
    return b"".join((b"\xfdSMB", mv[-16:], aad, mv[:-16]))


def decrypt_message(key: bytes, transform: bytes, cipher: int) -> bytes:
    """Decrypt a TRANSFORM message; raise DecryptError on any failure."""
    if len(transform) < 52 or transform[:4] != b"\xfdSMB":
        raise DecryptError("not a TRANSFORM message")
    sig = transform[4:20]
    aad = transform[20:52]
    size, _res, flags, _sid = struct.unpack_from("<IHHQ", transform, 36)
    ct = transform[52:]
    if flags != 1 or size != len(ct):
        raise DecryptError("bad TRANSFORM header")
    try:
        if cipher in (AES_128_CCM, AES_256_CCM):
            return AESCCM(key, tag_length=16).decrypt(aad[:11], ct + sig, aad)
        return AESGCM(key).decrypt(aad[:12], ct + sig, aad)
    except (InvalidTag, ValueError) as e:
        raise DecryptError(f"decryption failed: {type(e).__name__}") from None


def preauth_hash(previous: bytes, message: bytes) -> bytes:
    """PreauthIntegrityHashValue update, SHA-512 (MS-SMB2 3.3.5.4 / 3.3.5.5)."""
    return hashlib.sha512(previous + message).digest()
