"""SESSION_SETUP status for a malformed NTLMv2 response (MS-NLMP 2.2.2.7
NTLMv2_CLIENT_CHALLENGE; MS-SMB2 3.3.5.5.3): an AV_PAIR list that runs past the end of the
response is STATUS_INVALID_PARAMETER (Windows, Samba bug 14932), a wrong proof with a
well-formed list stays STATUS_LOGON_FAILURE.  pyspnego makes the real AUTHENTICATE_MESSAGE;
the test then damages one AV_PAIR header in place."""
from __future__ import annotations

import struct

import pytest
import spnego
from smbunit import PASSWORD, USER
from rawclient import RawClient

from wsd_smb import ntstatus
from wsd_smb.auth.md4 import md4
from wsd_smb.auth.ntlm import Credential, NtlmAcceptor, NtlmError, NtlmMalformed
from wsd_smb.wire import commands as w
from wsd_smb.wire.header import Command


def _auth_with(damage: str) -> tuple[NtlmAcceptor, bytes]:
    acc = NtlmAcceptor(lambda n: Credential(USER, md4(PASSWORD.encode("utf-16-le"))) if n.lower() == USER else None)
    ctx = spnego.client(USER, PASSWORD, hostname="wsd", protocol="ntlm")
    chal = acc.challenge(ctx.step())
    auth = bytearray(ctx.step(chal))
    nt_len, _, nt_off = struct.unpack_from("<HHI", auth, 20)
    av = nt_off + 16 + 28  # NTProofStr, then the fixed part of NTLMv2_CLIENT_CHALLENGE
    if damage == "truncated_av_pair":
        struct.pack_into("<HH", auth, av, 0xA211, 0xFFFF)
    elif damage == "proof":
        auth[nt_off] ^= 0xFF
    return acc, bytes(auth)


def test_nlmp_2_2_2_7_av_pair_past_the_end_is_malformed():
    acc, auth = _auth_with("truncated_av_pair")
    with pytest.raises(NtlmMalformed):
        acc.authenticate(auth)


def test_nlmp_wrong_proof_is_a_plain_logon_failure():
    acc, auth = _auth_with("proof")
    with pytest.raises(NtlmError) as ei:
        acc.authenticate(auth)
    assert not isinstance(ei.value, NtlmMalformed)


def test_smb2_3_3_5_5_3_malformed_ntlmv2_response_is_invalid_parameter(smbd):
    c = RawClient(smbd.host, smbd.port)
    c.negotiate(dialects=(0x0311,))
    ctx = spnego.client(USER, PASSWORD, hostname="wsd", protocol="ntlm")
    r = c.request(Command.SMB2_SESSION_SETUP, w.SessionSetupRequest(security_mode=1, security_buffer=ctx.step()),
                  sign=False)
    assert r.status == ntstatus.STATUS_MORE_PROCESSING_REQUIRED
    sid = r.header.session_id
    auth = bytearray(ctx.step(w.SessionSetupResponse.unpack(r.raw).security_buffer))
    _, _, nt_off = struct.unpack_from("<HHI", auth, 20)
    struct.pack_into("<HH", auth, nt_off + 16 + 28, 0xA211, 0xFFFF)
    r = c.request(Command.SMB2_SESSION_SETUP, w.SessionSetupRequest(security_mode=1, security_buffer=bytes(auth)),
                  session_id=sid, sign=False)
    assert r.status == ntstatus.STATUS_INVALID_PARAMETER
    c.close()
