"""A minimal SPNEGO (RFC 4178) DER codec and the acceptor that wraps NTLM.

Only what SMB needs: the server's initial NegTokenInit (sent in the NEGOTIATE response,
MS-SPNG 3.2.5.2 "NegTokenInit2" without hints), the client's NegTokenInit with an
optimistic NTLM token, NegTokenResp in both directions, and the mechListMIC over the
DER of the client's MechTypeList (RFC 4178 5, MS-SPNG 3.2.5.1).
"""
from __future__ import annotations

from dataclasses import dataclass

from .ntlm import NTLMSSP_SIGNATURE, NtlmAcceptor, NtlmError

OID_SPNEGO = bytes.fromhex("2b0601050502")  # 1.3.6.1.5.5.2
OID_NTLMSSP = bytes.fromhex("2b06010401823702020a")  # 1.3.6.1.4.1.311.2.2.10

ACCEPT_COMPLETED, ACCEPT_INCOMPLETE, REJECT, REQUEST_MIC = 0, 1, 2, 3


class SpnegoError(Exception):
    pass


# ------------------------------------------------------------------ DER
def der(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        ln = bytes([n])
    else:
        b = n.to_bytes((n.bit_length() + 7) // 8, "big")
        ln = bytes([0x80 | len(b)]) + b
    return bytes([tag]) + ln + content


def tlv(data: bytes, pos: int, end: int | None = None) -> tuple[int, int, int]:
    """Read one TLV at *pos*: (tag, content_start, content_end)."""
    end = len(data) if end is None else end
    if pos + 2 > end:
        raise SpnegoError("DER truncated")
    tag = data[pos]
    ln = data[pos + 1]
    p = pos + 2
    if ln & 0x80:
        k = ln & 0x7F
        if k == 0 or k > 4 or p + k > end:
            raise SpnegoError("bad DER length")
        ln = int.from_bytes(data[p : p + k], "big")
        p += k
    if p + ln > end:
        raise SpnegoError("DER content outside buffer")
    return tag, p, p + ln


def children(data: bytes, start: int, end: int) -> list[tuple[int, int, int, int]]:
    """The TLVs inside [start, end): list of (tag, content_start, content_end, tlv_start)."""
    out = []
    p = start
    while p < end:
        tag, cs, ce = tlv(data, p, end)
        out.append((tag, cs, ce, p))
        p = ce
        if len(out) > 64:
            raise SpnegoError("too many DER elements")
    return out


@dataclass
class ClientToken:
    mech_types: list[bytes]
    mech_types_der: bytes  # DER of MechTypeList as received (for the mechListMIC)
    mech_token: bytes
    mech_list_mic: bytes
    is_init: bool


def parse_client_token(data: bytes) -> ClientToken:
    """Parse a NegTokenInit (GSS-wrapped, [APPLICATION 0]) or NegTokenResp ([1])."""
    tag, cs, ce = tlv(data, 0)
    if tag == 0x60:
        kids = children(data, cs, ce)
        if not kids or kids[0][0] != 0x06 or data[kids[0][1] : kids[0][2]] != OID_SPNEGO:
            raise SpnegoError("not SPNEGO")
        if len(kids) < 2 or kids[1][0] != 0xA0:
            raise SpnegoError("no NegTokenInit")
        t, s, e = tlv(data, kids[1][1], kids[1][2])
        if t != 0x30:
            raise SpnegoError("NegTokenInit not a SEQUENCE")
        tok = ClientToken([], b"", b"", b"", True)
        for t2, s2, e2, _ in children(data, s, e):
            if t2 == 0xA0:
                t3, s3, e3 = tlv(data, s2, e2)
                if t3 != 0x30:
                    raise SpnegoError("mechTypes not a SEQUENCE")
                tok.mech_types_der = data[s2:e3]
                tok.mech_types = [data[a:b] for (t4, a, b, _) in children(data, s3, e3) if t4 == 0x06]
            elif t2 == 0xA2:
                t3, s3, e3 = tlv(data, s2, e2)
                if t3 != 0x04:
                    raise SpnegoError("mechToken not an OCTET STRING")
                tok.mech_token = data[s3:e3]
            elif t2 == 0xA3:
                t3, s3, e3 = tlv(data, s2, e2)
                if t3 == 0x04:
                    tok.mech_list_mic = data[s3:e3]
        return tok
    if tag == 0xA1:
        t, s, e = tlv(data, cs, ce)
        if t != 0x30:
            raise SpnegoError("NegTokenResp not a SEQUENCE")
        tok = ClientToken([], b"", b"", b"", False)
        for t2, s2, e2, _ in children(data, s, e):
            if t2 in (0xA2, 0xA3):
                t3, s3, e3 = tlv(data, s2, e2)
                if t3 != 0x04:
                    raise SpnegoError("expected OCTET STRING")
                if t2 == 0xA2:
                    tok.mech_token = data[s3:e3]
                else:
                    tok.mech_list_mic = data[s3:e3]
        return tok
    raise SpnegoError(f"unknown SPNEGO token tag 0x{tag:02x}")


def neg_token_init_server() -> bytes:
    """The NegTokenInit the server puts in its NEGOTIATE response (offers NTLMSSP)."""
    mech_types = der(0x30, der(0x06, OID_NTLMSSP))
    hints = der(0xA3, der(0x30, der(0xA0, der(0x1B, b"not_defined_in_RFC4178@please_ignore"))))
    init = der(0x30, der(0xA0, mech_types) + hints)
    return der(0x60, der(0x06, OID_SPNEGO) + der(0xA0, init))


def neg_token_resp(state: int | None, *, supported_mech: bytes | None = None, response_token: bytes = b"",
                   mech_list_mic: bytes = b"") -> bytes:
    body = b""
    if state is not None:
        body += der(0xA0, der(0x0A, bytes([state])))
    if supported_mech is not None:
        body += der(0xA1, der(0x06, supported_mech))
    if response_token:
        body += der(0xA2, der(0x04, response_token))
    if mech_list_mic:
        body += der(0xA3, der(0x04, mech_list_mic))
    return der(0xA1, der(0x30, body))


class SpnegoAcceptor:
    """Drives one SPNEGO(NTLM) or raw-NTLMSSP exchange.

    step(token) -> (out_token, done).  Raises NtlmError/SpnegoError on failure.
    """

    def __init__(self, ntlm: NtlmAcceptor):
        self.ntlm = ntlm
        self.raw = False
        self.mech_types_der = b""
        self.mic_required = False
        self.stage = 0
        self.done = False

    def step(self, token: bytes) -> tuple[bytes, bool]:
        if self.done:
            raise SpnegoError("exchange already complete")
        if token[:8] == NTLMSSP_SIGNATURE:
            self.raw = True
            return self._raw_step(token)
        if self.raw:
            raise SpnegoError("mixed raw NTLMSSP and SPNEGO")
        tok = parse_client_token(token)
        if self.stage == 0:
            if not tok.is_init:
                raise SpnegoError("first token must be a NegTokenInit")
            if OID_NTLMSSP not in tok.mech_types:
                return neg_token_resp(REJECT), True
            self.mech_types_der = tok.mech_types_der
            self.stage = 1
            if tok.mech_types[0] != OID_NTLMSSP or not tok.mech_token:
                # optimistic token is for another mech (or absent): select NTLM, ask for a MIC
                self.mic_required = tok.mech_types[0] != OID_NTLMSSP
                return neg_token_resp(REQUEST_MIC if self.mic_required else ACCEPT_INCOMPLETE,
                                      supported_mech=OID_NTLMSSP), False
            challenge = self.ntlm.challenge(tok.mech_token)
            self.stage = 2
            return neg_token_resp(ACCEPT_INCOMPLETE, supported_mech=OID_NTLMSSP, response_token=challenge), False
        if self.stage == 1:
            if not tok.mech_token:
                raise SpnegoError("expected the NTLM NEGOTIATE message")
            challenge = self.ntlm.challenge(tok.mech_token)
            self.stage = 2
            return neg_token_resp(ACCEPT_INCOMPLETE, response_token=challenge), False
        # stage 2: AUTHENTICATE
        if not tok.mech_token:
            raise SpnegoError("expected the NTLM AUTHENTICATE message")
        self.ntlm.authenticate(tok.mech_token)
        mic_out = b""
        sec = self.ntlm.security
        if tok.mech_list_mic and sec is None and (self.ntlm.is_guest or self.ntlm.is_anonymous):
            pass  # guest/anonymous: there is no key to check the MIC with (the client's MIC is ignored)
        elif tok.mech_list_mic:
            if sec is None:
                raise SpnegoError("mechListMIC without a session key")
            if not sec.verify(self.mech_types_der, tok.mech_list_mic):
                raise NtlmError("SPNEGO mechListMIC mismatch")
            mic_out = sec.sign(self.mech_types_der)
        elif self.mic_required and sec is not None:
            # RFC 4178 5: the mech was not the client's first choice, so the MIC is mandatory
            raise NtlmError("SPNEGO mechListMIC missing")
        self.done = True
        return neg_token_resp(ACCEPT_COMPLETED, mech_list_mic=mic_out), True

    def _raw_step(self, token: bytes) -> tuple[bytes, bool]:
        if self.stage == 0:
            self.stage = 2
            return self.ntlm.challenge(token), False
        self.ntlm.authenticate(token)
        self.done = True
        return b"", True
