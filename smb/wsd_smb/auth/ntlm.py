"""NTLM acceptor (server side of MS-NLMP), NTLMv2 only.

The NTProofStr is verified over the NTLMv2 response blob exactly as received (MS-NLMP
3.3.2), so clients that omit the trailing padding of the blob (impacket) are accepted.
The session key follows MS-NLMP 3.4.5.1 (KeyExchangeKey = SessionBaseKey for NTLMv2,
ExportedSessionKey = RC4(KeyExchangeKey, EncryptedRandomSessionKey) with KEY_EXCH);
signing/sealing keys and the MAC (3.4.4.2, extended session security) are provided for
the SPNEGO mechListMIC.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import struct
import time
from dataclasses import dataclass
from typing import Callable

from .md4 import RC4, rc4

NTLMSSP_SIGNATURE = b"NTLMSSP\0"

NTLMSSP_NEGOTIATE_UNICODE = 0x00000001
NTLM_NEGOTIATE_OEM = 0x00000002
NTLMSSP_REQUEST_TARGET = 0x00000004
NTLMSSP_NEGOTIATE_SIGN = 0x00000010
NTLMSSP_NEGOTIATE_SEAL = 0x00000020
NTLMSSP_NEGOTIATE_LM_KEY = 0x00000080
NTLMSSP_NEGOTIATE_NTLM = 0x00000200
NTLMSSP_ANONYMOUS = 0x00000800
NTLMSSP_NEGOTIATE_ALWAYS_SIGN = 0x00008000
NTLMSSP_TARGET_TYPE_DOMAIN = 0x00010000
NTLMSSP_TARGET_TYPE_SERVER = 0x00020000
NTLMSSP_NEGOTIATE_EXTENDED_SESSIONSECURITY = 0x00080000
NTLMSSP_NEGOTIATE_IDENTIFY = 0x00100000
NTLMSSP_NEGOTIATE_TARGET_INFO = 0x00800000
NTLMSSP_NEGOTIATE_VERSION = 0x02000000
NTLMSSP_NEGOTIATE_128 = 0x20000000
NTLMSSP_NEGOTIATE_KEY_EXCH = 0x40000000
NTLMSSP_NEGOTIATE_56 = 0x80000000

MsvAvEOL, MsvAvNbComputerName, MsvAvNbDomainName, MsvAvDnsComputerName, MsvAvDnsDomainName = 0, 1, 2, 3, 4
MsvAvDnsTreeName, MsvAvFlags, MsvAvTimestamp, MsvAvSingleHost, MsvAvTargetName, MsvAvChannelBindings = 5, 6, 7, 8, 9, 10

#: flags the acceptor is willing to agree to (the CHALLENGE carries client & these)
_SUPPORTED = (NTLMSSP_NEGOTIATE_UNICODE | NTLMSSP_REQUEST_TARGET | NTLMSSP_NEGOTIATE_SIGN | NTLMSSP_NEGOTIATE_SEAL
              | NTLMSSP_NEGOTIATE_NTLM | NTLMSSP_NEGOTIATE_ALWAYS_SIGN | NTLMSSP_NEGOTIATE_EXTENDED_SESSIONSECURITY
              | NTLMSSP_NEGOTIATE_TARGET_INFO | NTLMSSP_NEGOTIATE_VERSION | NTLMSSP_NEGOTIATE_128
              | NTLMSSP_NEGOTIATE_KEY_EXCH | NTLMSSP_NEGOTIATE_56 | NTLMSSP_NEGOTIATE_IDENTIFY)

# Windows Server 2022 style VERSION (MS-NLMP 2.2.2.10): 10.0 build 20348, NTLMSSP_REVISION_W2K3
SERVER_VERSION = struct.pack("<BBH3sB", 10, 0, 20348, b"\0\0\0", 0x0F)


class NtlmError(Exception):
    """Authentication failed (the SMB layer maps this to STATUS_LOGON_FAILURE)."""


class NtlmMalformed(NtlmError):
    """The AUTHENTICATE_MESSAGE is not well formed: an NTLMv2_CLIENT_CHALLENGE (MS-NLMP
    2.2.2.7) whose AV_PAIR list runs past its end.  Windows and Samba answer such a logon
    with STATUS_INVALID_PARAMETER rather than LOGON_FAILURE (Samba bug 14932: the
    "net diag" style response; smbtorture smb2.session.ntlmssp_bug14932)."""


def _hmac_md5(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.md5).digest()


def ntowfv2(nt_hash: bytes, user: str, domain: str) -> bytes:
    """NTOWFv2 (MS-NLMP 3.3.2) from the NT hash (MD4 of the UTF-16LE password)."""
    return _hmac_md5(nt_hash, (user.upper() + domain).encode("utf-16-le"))


def filetime(now: float | None = None) -> int:
    t = time.time() if now is None else now
    return int(t * 10_000_000) + 116444736000000000


def _field(msg: bytes, pos: int) -> bytes:
    """A (Len, MaxLen, Offset) payload field (MS-NLMP 2.2.1)."""
    if pos + 8 > len(msg):
        raise NtlmError("NTLM message truncated")
    length, _maxlen, off = struct.unpack_from("<HHI", msg, pos)
    if length == 0:
        return b""
    if off + length > len(msg):
        raise NtlmError("NTLM field outside message")
    return msg[off : off + length]


def parse_av_pairs(data: bytes) -> list[tuple[int, bytes]]:
    out = []
    pos = 0
    while pos + 4 <= len(data):
        av_id, av_len = struct.unpack_from("<HH", data, pos)
        pos += 4
        if av_id == MsvAvEOL:
            return out
        if pos + av_len > len(data):
            raise NtlmError("AV pair truncated")
        out.append((av_id, data[pos : pos + av_len]))
        pos += av_len
    return out  # no EOL: tolerated (some clients pad oddly)


def pack_av_pairs(pairs: list[tuple[int, bytes]]) -> bytes:
    out = b"".join(struct.pack("<HH", i, len(v)) + v for i, v in pairs)
    return out + struct.pack("<HH", MsvAvEOL, 0)


@dataclass
class Credential:
    """What the acceptor needs to know about an account."""

    user_name: str
    nt_hash: bytes
    is_admin: bool = False
    privileges: frozenset = frozenset()  # privilege names (store/security.py), for the session's token


class NtlmSecurity:
    """Signing/sealing state for one NTLM context (MS-NLMP 3.4.4, 3.4.5.2-3.4.5.3)."""

    def __init__(self, exported_session_key: bytes, flags: int):
        k = exported_session_key
        self.flags = flags
        if flags & NTLMSSP_NEGOTIATE_128:
            seal = k
        elif flags & NTLMSSP_NEGOTIATE_56:
            seal = k[:7]
        else:
            seal = k[:5]
        self.client_signing_key = hashlib.md5(k + b"session key to client-to-server signing key magic constant\0").digest()
        self.server_signing_key = hashlib.md5(k + b"session key to server-to-client signing key magic constant\0").digest()
        self.client_sealing_key = hashlib.md5(seal + b"session key to client-to-server sealing key magic constant\0").digest()
        self.server_sealing_key = hashlib.md5(seal + b"session key to server-to-client sealing key magic constant\0").digest()
        self._client_handle = RC4(self.client_sealing_key)
        self._server_handle = RC4(self.server_sealing_key)
        self.client_seq = 0
        self.server_seq = 0

    def _mac(self, key: bytes, handle: RC4, seq: int, message: bytes) -> bytes:
        seqb = struct.pack("<I", seq)
        checksum = _hmac_md5(key, seqb + message)[:8]
        if self.flags & NTLMSSP_NEGOTIATE_KEY_EXCH:
            checksum = handle.update(checksum)
        return struct.pack("<I", 1) + checksum + seqb

    def sign(self, message: bytes) -> bytes:
        """Server-to-client MAC (MS-NLMP 3.4.4.2)."""
        sig = self._mac(self.server_signing_key, self._server_handle, self.server_seq, message)
        self.server_seq += 1
        return sig

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Check a client-to-server MAC."""
        expect = self._mac(self.client_signing_key, self._client_handle, self.client_seq, message)
        self.client_seq += 1
        return hmac.compare_digest(expect, signature)


class NtlmAcceptor:
    """Server side of one NTLM exchange: NEGOTIATE -> CHALLENGE, AUTHENTICATE -> result.

    lookup(user_name) returns a Credential or None.  On success the attributes user_name,
    domain_name, workstation, session_key (ExportedSessionKey), is_anonymous, is_guest,
    flags and security (NtlmSecurity, for MICs) are set.
    """

    def __init__(self, lookup: Callable[[str], Credential | None], *, server_name: str = "WSD",
                 domain_name: str = "WORKGROUP", allow_anonymous: bool = False, allow_guest: bool = False,
                 guest_user: str = "guest", now: float | None = None, challenge: bytes | None = None):
        self.lookup = lookup
        self.server_name = server_name.upper()
        self.domain_name = domain_name.upper()
        self.allow_anonymous = allow_anonymous
        self.allow_guest = allow_guest
        self.guest_user = guest_user.lower()
        self.now = now
        self.server_challenge = challenge or os.urandom(8)
        self.negotiate_message = b""
        self.challenge_message = b""
        self.flags = 0
        self.complete = False
        self.user_name = ""
        self.domain_name_client = ""
        self.workstation = ""
        self.session_key = b""
        self.is_anonymous = False
        self.is_guest = False
        self.is_admin = False
        self.privileges: frozenset = frozenset()
        self.security: NtlmSecurity | None = None
        self.mic_present = False

    # -------------------------------------------------------------- NEGOTIATE
    def challenge(self, negotiate: bytes) -> bytes:
        """Process NEGOTIATE_MESSAGE (MS-NLMP 2.2.1.1), return CHALLENGE_MESSAGE (2.2.1.2)."""
        if len(negotiate) < 16 or negotiate[:8] != NTLMSSP_SIGNATURE or struct.unpack_from("<I", negotiate, 8)[0] != 1:
            raise NtlmError("not an NTLM NEGOTIATE_MESSAGE")
        cflags = struct.unpack_from("<I", negotiate, 12)[0]
        self.negotiate_message = bytes(negotiate)
        flags = (cflags & _SUPPORTED) | NTLMSSP_NEGOTIATE_TARGET_INFO | NTLMSSP_TARGET_TYPE_SERVER \
            | NTLMSSP_REQUEST_TARGET | NTLMSSP_NEGOTIATE_NTLM
        if not cflags & NTLMSSP_NEGOTIATE_UNICODE:
            raise NtlmError("client does not offer UNICODE")
        if flags & NTLMSSP_NEGOTIATE_EXTENDED_SESSIONSECURITY:
            flags &= ~NTLMSSP_NEGOTIATE_LM_KEY
        self.flags = flags
        target = self.server_name.encode("utf-16-le")
        info = pack_av_pairs([
            (MsvAvNbDomainName, self.domain_name.encode("utf-16-le")),
            (MsvAvNbComputerName, self.server_name.encode("utf-16-le")),
            (MsvAvDnsDomainName, self.domain_name.lower().encode("utf-16-le")),
            (MsvAvDnsComputerName, self.server_name.lower().encode("utf-16-le")),
            (MsvAvTimestamp, struct.pack("<Q", filetime(self.now))),
        ])
        hdr = 56
        msg = (NTLMSSP_SIGNATURE + struct.pack("<I", 2)
               + struct.pack("<HHI", len(target), len(target), hdr)
               + struct.pack("<I", flags) + self.server_challenge + b"\0" * 8
               + struct.pack("<HHI", len(info), len(info), hdr + len(target))
               + SERVER_VERSION + target + info)
        self.challenge_message = msg
        return msg

    # ----------------------------------------------------------- AUTHENTICATE
    def authenticate(self, auth: bytes) -> None:
        """Process AUTHENTICATE_MESSAGE (MS-NLMP 2.2.1.3, 3.2.5.1.2 server side).
        Raises NtlmError on failure."""
        if not self.challenge_message:
            raise NtlmError("AUTHENTICATE before CHALLENGE")
        if len(auth) < 64 or auth[:8] != NTLMSSP_SIGNATURE or struct.unpack_from("<I", auth, 8)[0] != 3:
            raise NtlmError("not an NTLM AUTHENTICATE_MESSAGE")
        lm = _field(auth, 12)
        nt = _field(auth, 20)
        domain_b = _field(auth, 28)
        user_b = _field(auth, 36)
        ws_b = _field(auth, 44)
        enc_key = _field(auth, 52)
        aflags = struct.unpack_from("<I", auth, 60)[0]
        unicode = bool(aflags & NTLMSSP_NEGOTIATE_UNICODE) or bool(self.flags & NTLMSSP_NEGOTIATE_UNICODE)
        dec = (lambda b: b.decode("utf-16-le", "replace")) if unicode else (lambda b: b.decode("latin-1"))
        self.user_name = dec(user_b)
        self.domain_name_client = dec(domain_b)
        self.workstation = dec(ws_b)
        if aflags & NTLMSSP_NEGOTIATE_KEY_EXCH:
            self.flags |= NTLMSSP_NEGOTIATE_KEY_EXCH
        elif self.flags & NTLMSSP_NEGOTIATE_KEY_EXCH and not enc_key:
            self.flags &= ~NTLMSSP_NEGOTIATE_KEY_EXCH

        # Anonymous (MS-NLMP 3.2.5.1.2: empty user, empty NT response, LM empty or one zero byte)
        if not self.user_name and not nt and lm in (b"", b"\0"):
            if not self.allow_anonymous:
                raise NtlmError("anonymous logon refused")
            self.is_anonymous = True
            self.session_key = b"\0" * 16
            self.complete = True
            return

        cred = self.lookup(self.user_name)
        if cred is None:
            if self.allow_guest:
                self.is_guest = True
                self.user_name = self.guest_user
                self.session_key = b""
                self.complete = True
                return
            raise NtlmError(f"unknown user {self.user_name!r}")
        if len(nt) <= 24:
            raise NtlmError("NTLMv1 responses are not accepted")
        nt_proof, blob = nt[:16], nt[16:]
        if len(blob) < 28 or blob[0] != 1 or blob[1] != 1:
            raise NtlmError("malformed NTLMv2 response")
        try:
            av = dict(parse_av_pairs(blob[28:]))  # the structure is checked before the proof
        except NtlmError as e:
            raise NtlmMalformed(f"NTLMv2_CLIENT_CHALLENGE: {e}") from None
        key = None
        for dom in dict.fromkeys((self.domain_name_client, self.domain_name_client.upper(), "")):
            k = ntowfv2(cred.nt_hash, self.user_name, dom)
            if hmac.compare_digest(_hmac_md5(k, self.server_challenge + blob), nt_proof):
                key = k
                break
        if key is None:
            raise NtlmError(f"wrong password for {self.user_name!r}")
        session_base_key = _hmac_md5(key, nt_proof)
        key_exchange_key = session_base_key
        if self.flags & NTLMSSP_NEGOTIATE_KEY_EXCH and enc_key:
            if len(enc_key) != 16:
                raise NtlmError("bad EncryptedRandomSessionKey")
            exported = rc4(key_exchange_key, enc_key)
        else:
            exported = key_exchange_key
        # MIC (MS-NLMP 3.2.5.1.2): present when MsvAvFlags bit 0x2 is set in the blob's AV pairs
        av_flags = struct.unpack("<I", av[MsvAvFlags])[0] if len(av.get(MsvAvFlags, b"")) == 4 else 0
        if av_flags & 0x2:
            if len(auth) < 88:
                raise NtlmError("MIC missing")
            mic = auth[72:88]
            zeroed = auth[:72] + b"\0" * 16 + auth[88:]
            expect = _hmac_md5(exported, self.negotiate_message + self.challenge_message + zeroed)
            if not hmac.compare_digest(mic, expect):
                raise NtlmError("MIC mismatch")
            self.mic_present = True
        self.session_key = exported
        self.is_admin = cred.is_admin
        self.privileges = cred.privileges
        self.user_name = cred.user_name
        self.security = NtlmSecurity(exported, self.flags)
        self.complete = True
