"""Session binding (multichannel), MS-SMB2 3.3.5.5 / 3.3.5.5.2 / 3.3.5.5.3: a SESSION_SETUP
with SMB2_SESSION_FLAG_BINDING from a second connection adds a channel to Session.ChannelList
with its own Channel.SigningKey; refused binds carry the spec's status, signed with the
session's own key and algorithm.  Real server (smbd fixture), raw client, pyspnego as the
NTLM initiator."""
from __future__ import annotations

import pytest
import spnego
from smbunit import PASSWORD, USER
from rawclient import RawClient, Reply

from wsd_smb import ntstatus
from wsd_smb.crypto import smbcrypto as cr
from wsd_smb.wire import commands as w
from wsd_smb.wire.header import SMB2_FLAGS_SIGNED, Command


def _logon(smbd, dialects=(0x0311,), signing=(cr.AES_CMAC,)) -> RawClient:
    c = RawClient(smbd.host, smbd.port)
    c.negotiate(dialects=dialects, signing=signing)
    assert c.session_setup(USER, PASSWORD).status == 0
    return c


def _bind(c2: RawClient, c1: RawClient, user: str = USER, password: str = PASSWORD) -> tuple[Reply, bytes]:
    """NTLM bind of c2's connection to c1's session (what a multichannel client does): every
    leg signed with Session.SigningKey by the session's algorithm; returns the last reply and
    the Channel.SigningKey the client derives (3.3.5.5.3 / 3.2.5.3.1)."""
    ctx = spnego.client(user, password, hostname="wsd", protocol="ntlm")
    token = ctx.step()
    preauth = c2.preauth
    while True:
        req = w.SessionSetupRequest(flags=w.SMB2_SESSION_FLAG_BINDING, security_mode=1, security_buffer=token)
        raw = cr.sign(c1.signing_key, c2.build(Command.SMB2_SESSION_SETUP, req.pack(), session_id=c1.session_id,
                                               flags=SMB2_FLAGS_SIGNED), c1.signing_alg)
        c2.send_raw(raw)
        r = c2.recv()[0]
        preauth = cr.preauth_hash(preauth, raw)
        if r.status != ntstatus.STATUS_MORE_PROCESSING_REQUIRED:
            break
        # interim responses of a bind are signed with the session's key (the channel has none yet)
        assert cr.verify_signature(c1.signing_key, r.raw, c1.signing_alg)
        preauth = cr.preauth_hash(preauth, r.raw)
        token = ctx.step(w.SessionSetupResponse.unpack(r.raw).security_buffer)
    key = b""
    if r.status == 0:
        sk = (ctx.session_key[:16] + b"\0" * 16)[:16]
        key = cr.derive_session_keys(sk, c2.dialect, preauth, c2.cipher or cr.AES_128_CCM).signing_key
    return r, key


def _session(smbd, sid):
    return smbd.call(lambda: smbd.server.global_session_table.get(sid))


def test_bind_3_3_5_5_2_adds_a_channel_with_its_own_signing_key(smbd):
    c1 = _logon(smbd, signing=(cr.AES_CMAC,))
    c2 = RawClient(smbd.host, smbd.port)
    c2.negotiate(dialects=(0x0311,), signing=(cr.HMAC_SHA256,))  # another algorithm is fine (not GMAC)
    assert c2.negotiate_response.capabilities & w.SMB2_GLOBAL_CAP_MULTI_CHANNEL
    r, chan_key = _bind(c2, c1)
    assert r.status == 0
    assert cr.verify_signature(chan_key, r.raw, cr.HMAC_SHA256)  # final response: Channel.SigningKey
    s = _session(smbd, c1.session_id)
    assert len(s.channel_list) == 2 and s.channel_list[1].signing_key == chan_key
    assert chan_key != c1.signing_key
    # the session works over the new channel, signed with the channel key
    c2.session_id, c2.session_key, c2.signing_key = c1.session_id, c1.session_key, chan_key
    t = c2.tree_connect()
    assert t.status == 0 and c2.verify(t)
    # ... and still over the first one
    assert c1.tree_connect().status == 0
    # the first connection goes away: the session lives on over the second (3.3.7.1)
    c1.close()
    assert echo_ok(c2)
    for _ in range(50):
        if len(_session(smbd, c2.session_id).channel_list) == 1:
            break
        import time
        time.sleep(0.05)
    assert len(_session(smbd, c2.session_id).channel_list) == 1
    assert c2.tree_connect().status == 0
    c2.close()


def echo_ok(c: RawClient) -> bool:
    return c.request(Command.SMB2_ECHO, w.EchoRequest()).status == 0


@pytest.mark.parametrize("alg1,alg2,expect", [
    (cr.AES_GMAC, cr.AES_CMAC, ntstatus.STATUS_REQUEST_OUT_OF_SEQUENCE),
    (cr.AES_CMAC, cr.AES_GMAC, ntstatus.STATUS_NOT_SUPPORTED),
    (cr.HMAC_SHA256, cr.AES_GMAC, ntstatus.STATUS_NOT_SUPPORTED),
])
def test_bind_3_3_5_5_2_gmac_only_with_gmac(smbd, alg1, alg2, expect):
    """A GMAC-signed session binds only GMAC channels and a GMAC channel only GMAC sessions;
    the refusal is signed with Session.SigningKey by the session's algorithm."""
    c1 = _logon(smbd, signing=(alg1,))
    assert c1.signing_alg == alg1
    c2 = RawClient(smbd.host, smbd.port)
    c2.negotiate(dialects=(0x0311,), signing=(alg2,))
    r, _ = _bind(c2, c1)
    assert r.status == expect
    assert cr.verify_signature(c1.signing_key, r.raw, alg1)
    assert len(_session(smbd, c1.session_id).channel_list) == 1
    assert c1.tree_connect().status == 0
    c1.close()
    c2.close()


def test_bind_3_3_5_5_2_cipher_mismatch_is_invalid_parameter(smbd):
    c1 = RawClient(smbd.host, smbd.port)
    c1.negotiate(dialects=(0x0311,), ciphers=(cr.AES_128_GCM,))
    assert c1.session_setup(USER, PASSWORD).status == 0
    c2 = RawClient(smbd.host, smbd.port)
    c2.negotiate(dialects=(0x0311,), ciphers=(cr.AES_128_CCM,))
    r, _ = _bind(c2, c1)
    assert r.status == ntstatus.STATUS_INVALID_PARAMETER
    c1.close()
    c2.close()


def test_bind_as_another_user_is_access_denied_and_harmless(smbd):
    c1 = _logon(smbd)
    c2 = RawClient(smbd.host, smbd.port)
    c2.negotiate(dialects=(0x0311,))
    r, _ = _bind(c2, c1, user="bob", password="bobpw")
    assert r.status == ntstatus.STATUS_ACCESS_DENIED
    assert cr.verify_signature(c1.signing_key, r.raw, c1.signing_alg)
    assert len(_session(smbd, c1.session_id).channel_list) == 1
    # wrong password: LOGON_FAILURE, and the session is not deleted (it is not a re-authentication)
    r, _ = _bind(c2, c1, password="wrong")
    assert r.status == ntstatus.STATUS_LOGON_FAILURE
    assert c1.tree_connect().status == 0
    # the right user binds on the same connection afterwards
    r, _ = _bind(c2, c1)
    assert r.status == 0
    c1.close()
    c2.close()


def test_second_bind_on_a_bound_channel_and_unsigned_reauth_are_access_denied(smbd):
    c1 = _logon(smbd)
    c2 = RawClient(smbd.host, smbd.port)
    c2.negotiate(dialects=(0x0311,))
    r, _ = _bind(c2, c1)
    assert r.status == 0
    r, _ = _bind(c2, c1)
    assert r.status == ntstatus.STATUS_ACCESS_DENIED
    # an unsigned re-authentication on a session that requires signing (3.3.5.2.4)
    req = w.SessionSetupRequest(security_mode=1, security_buffer=b"\x60\x00")
    r = c2.request(Command.SMB2_SESSION_SETUP, req, session_id=c1.session_id, sign=False)
    assert r.status == ntstatus.STATUS_ACCESS_DENIED
    assert c1.tree_connect().status == 0
    c1.close()
    c2.close()


def test_session_of_another_connection_without_binding_is_user_session_deleted_signed_flag(smbd):
    """3.3.5.5: not in Connection.SessionTable -> USER_SESSION_DELETED; a signed request gets
    SMB2_FLAGS_SIGNED echoed (Samba's client insists on it when it signed)."""
    c1 = _logon(smbd)
    c2 = RawClient(smbd.host, smbd.port)
    c2.negotiate(dialects=(0x0311,))
    raw = c2.build(Command.SMB2_SESSION_SETUP, w.SessionSetupRequest(security_buffer=b"\x60\x00").pack(),
                   session_id=c1.session_id, flags=SMB2_FLAGS_SIGNED)
    c2.send_raw(cr.sign(c1.signing_key, raw, c1.signing_alg))
    r = c2.recv()[0]
    assert r.status == ntstatus.STATUS_USER_SESSION_DELETED and r.header.flags & SMB2_FLAGS_SIGNED
    assert c1.tree_connect().status == 0
    c1.close()
    c2.close()


def test_logoff_over_one_channel_removes_the_session_from_all(smbd):
    c1 = _logon(smbd)
    c2 = RawClient(smbd.host, smbd.port)
    c2.negotiate(dialects=(0x0311,))
    r, key = _bind(c2, c1)
    assert r.status == 0
    c2.session_id, c2.session_key, c2.signing_key = c1.session_id, c1.session_key, key
    assert c2.request(Command.SMB2_LOGOFF, w.LogoffRequest()).status == 0
    assert _session(smbd, c1.session_id) is None
    assert c1.tree_connect().status == ntstatus.STATUS_USER_SESSION_DELETED
    c1.close()
    c2.close()


def test_3_3_5_15_11_query_network_interface_info_names_the_connections_address(smbd):
    """With multichannel the server answers FSCTL_QUERY_NETWORK_INTERFACE_INFO: one
    NETWORK_INTERFACE_INFO (MS-SMB2 2.2.32.5) for the address the connection arrived on."""
    import ipaddress
    import struct

    from wsd_smb.wire.base import FileId

    c = _logon(smbd)
    t = c.tree_connect()
    assert t.status == 0
    req = w.IoctlRequest(ctl_code=0x001401FC, file_id=FileId(0xFFFFFFFFFFFFFFFF, 0xFFFFFFFFFFFFFFFF), input=b"",
                         output=b"", max_input_response=0, max_output_response=65536, flags=1)
    r = c.request(Command.SMB2_IOCTL, req, tree_id=t.header.tree_id)
    assert r.status == 0
    out = bytes(w.IoctlResponse.unpack(r.raw).output)
    assert len(out) == 152
    e = w.NetworkInterfaceInfo.unpack(out, 0)
    assert e.next == 0 and e.if_index == 1 and e.capability == 0 and e.link_speed == 10_000_000_000
    family, port = struct.unpack_from("<HH", e.sock_addr_storage, 0)
    assert (family, port) == (0x0002, 0)
    assert ipaddress.ip_address(e.sock_addr_storage[4:8]) == ipaddress.ip_address(smbd.host)
    assert e.sock_addr_storage[8:] == b"\0" * 120
    req.file_id = FileId(1, 1)  # a server-level FSCTL: any other FileId is INVALID_PARAMETER
    assert c.request(Command.SMB2_IOCTL, req, tree_id=t.header.tree_id).status == ntstatus.STATUS_INVALID_PARAMETER
    req.file_id = FileId(0xFFFFFFFFFFFFFFFF, 0xFFFFFFFFFFFFFFFF)
    req.max_output_response = 100  # too small for one entry
    assert c.request(Command.SMB2_IOCTL, req, tree_id=t.header.tree_id).status == ntstatus.STATUS_BUFFER_TOO_SMALL
    c.close()


def test_at_most_32_channels_per_session(smbd):
    """As Windows Server 2012 R2/2016: the 33rd channel is STATUS_INSUFFICIENT_RESOURCES."""
    c1 = _logon(smbd)
    extra = []
    try:
        for i in range(32):
            c = RawClient(smbd.host, smbd.port)
            c.negotiate(dialects=(0x0311,))
            extra.append(c)
            r, _ = _bind(c, c1)
            assert r.status == (0 if i < 31 else ntstatus.STATUS_INSUFFICIENT_RESOURCES), (i, hex(r.status))
        assert len(_session(smbd, c1.session_id).channel_list) == 32
    finally:
        for c in extra:
            c.close()
        c1.close()
