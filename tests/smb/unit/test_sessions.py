"""MS-SMB2 3.3.1.8 per-session state (SESS-1, SESS-2) read back from the server after
real logons by smbprotocol, impacket and a raw client (pyspnego as NTLM initiator)."""
from __future__ import annotations

import hashlib
import time
import uuid

import pytest
from smbunit import PASSWORD, USER
from rawclient import RawClient, echo

from wsd_smb import ntstatus
from wsd_smb.core.connection import Connection
from wsd_smb.core.state import SessionState, TreeConnect
from wsd_smb.crypto import smbcrypto as cr
from wsd_smb.wire import commands as w
from wsd_smb.wire.header import Command

smbprotocol = pytest.importorskip("smbprotocol")
from smbprotocol.connection import Connection as SpConnection  # noqa: E402
from smbprotocol.connection import Dialects  # noqa: E402
from smbprotocol.session import Session as SpSession  # noqa: E402
from smbprotocol.tree import TreeConnect as SpTree  # noqa: E402


def _sp_logon(st, dialect, encrypt=False, user=USER, password=PASSWORD):
    conn = SpConnection(uuid.uuid4(), st.host, st.port)
    conn.connect(dialect)
    sess = SpSession(conn, user, password, require_encryption=encrypt)
    sess.connect()
    return conn, sess


def _only_session(st):
    sessions = st.call(lambda: list(st.server.global_session_table.values()))
    assert len(sessions) == 1
    return sessions[0]


@pytest.mark.parametrize("dialect", [Dialects.SMB_3_1_1, Dialects.SMB_3_0_2, Dialects.SMB_3_0_0])
def test_sess1_sess2_fields_after_smbprotocol_logon(smbd, dialect):
    """SESS-1 and SESS-2: every field of the session record after a real smbprotocol logon."""
    before = time.time()
    conn, sess = _sp_logon(smbd, dialect)
    after = time.time()
    try:
        s = _only_session(smbd)
        # SESS-1
        assert s.session_id == sess.session_id and smbd.server.global_session_table[sess.session_id] is s
        assert s.state is SessionState.Valid
        assert s.security_context.user_name == USER and s.security_context.is_admin
        assert s.is_anonymous is False and s.is_guest is False
        assert s.session_key == sess.session_key and len(s.session_key) == 16
        assert s.signing_required is True  # server default: RequireMessageSigning
        assert s.open_table == {} and list(s.open_table.values()) == []
        assert s.tree_connect_table == {}
        assert s.expiration_time == float("inf")  # no session lifetime configured
        assert isinstance(s.connection, Connection)
        local = conn.transport._sock.getsockname() if hasattr(conn.transport, "_sock") else None
        if local:
            assert s.connection.client_address == f"{local[0]}:{local[1]}"
        assert 0 < s.session_global_id < 2 ** 32
        assert before <= s.creation_time <= after
        assert s.user_name == USER
        idle0 = s.idle_time
        assert before <= idle0 <= after
        tree = SpTree(sess, rf"\\{smbd.host}\IPC$")
        tree.connect()
        # TreeConnectTable indexed by TreeId, enumerable
        assert list(s.tree_connect_table) == [tree.tree_connect_id]
        tc = s.tree_connect_table[tree.tree_connect_id]
        assert isinstance(tc, TreeConnect) and tc.share.name == "IPC$" and tc.session is s
        assert s.idle_time >= idle0  # IdleTime follows the most recent request
        # SESS-2 (3.x): keys agree with what the client derived independently
        assert s.signing_key == sess.signing_key
        assert s.encryption_key == sess.decryption_key  # server->client
        assert s.decryption_key == sess.encryption_key  # client->server
        assert s.application_key == sess.application_key
        assert all(len(k) == 16 for k in (s.signing_key, s.encryption_key, s.decryption_key, s.application_key))
        assert len(s.channel_list) == 1 and s.channel_list[0].connection is s.connection
        assert s.channel_list[0].signing_key == s.signing_key
        assert s.encrypt_data is False
        if dialect == Dialects.SMB_3_1_1:
            h = b"\0" * 64
            for m in conn.preauth_integrity_hash_value + sess.preauth_integrity_hash_value:
                h = hashlib.sha512(h + m).digest()
            assert s.preauth_integrity_hash_value == h
            assert cr.kdf(s.session_key, b"SMBSigningKey\0", h) == s.signing_key
        else:
            assert s.preauth_integrity_hash_value == b""
        tree.disconnect()
        assert s.tree_connect_table == {}
    finally:
        sess.disconnect()
        conn.disconnect()
    assert smbd.call(lambda: dict(smbd.server.global_session_table)) == {}


def test_sess2_encrypt_data_session(smbd):
    conn, sess = _sp_logon(smbd, Dialects.SMB_3_1_1, encrypt=True)
    try:
        s = _only_session(smbd)
        tree = SpTree(sess, rf"\\{smbd.host}\IPC$")
        tree.connect()  # carried encrypted because the client asked
        assert s.encryption_key == sess.decryption_key and s.decryption_key == sess.encryption_key
        tree.disconnect()
    finally:
        sess.disconnect()
        conn.disconnect()


def test_server_requires_encryption(smbd_factory):
    st = smbd_factory(encrypt_data=True)
    c = RawClient(st.host, st.port)
    c.negotiate(dialects=(0x0311,))
    r = c.session_setup(USER, PASSWORD)
    assert r.status == 0 and c.session_flags & w.SMB2_SESSION_FLAG_ENCRYPT_DATA
    s = _only_session(st)
    assert s.encrypt_data is True
    # a plaintext (signed) request on an EncryptData session is refused
    assert c.tree_connect().status == ntstatus.STATUS_ACCESS_DENIED
    c.encrypt = True
    r = c.tree_connect()
    assert r.status == 0 and r.header.tree_id in s.tree_connect_table
    c.close()


def test_sess1_impacket_logon(smbd):
    from impacket.smbconnection import SMBConnection

    c = SMBConnection(smbd.host, smbd.host, sess_port=smbd.port)
    c.login(USER, PASSWORD)
    try:
        s = _only_session(smbd)
        assert s.user_name == USER and s.state is SessionState.Valid
        assert s.application_key == c.getSessionKey()  # impacket returns Session.ApplicationKey on 3.x
        tid = c.connectTree("IPC$")
        assert tid in s.tree_connect_table
    finally:
        c.logoff()
    assert smbd.call(lambda: dict(smbd.server.global_session_table)) == {}


@pytest.mark.parametrize("dialect", [0x0202, 0x0311])
def test_reauthentication_keeps_session(smbd, dialect):
    c = RawClient(smbd.host, smbd.port)
    c.negotiate(dialects=(dialect,))
    assert c.session_setup(USER, PASSWORD).status == 0
    s = _only_session(smbd)
    created, key, sid = s.creation_time, s.session_key, s.session_id
    signing_key = s.signing_key
    tid = c.tree_connect().header.tree_id
    time.sleep(0.05)
    r = c.session_setup(USER, PASSWORD, session_id=c.session_id)
    assert r.status == 0 and r.header.session_id == sid
    assert all(c.verify(x) for x in c.setup_replies)  # re-authentication is answered signed
    assert s.state is SessionState.Valid and s.session_id == sid and s.creation_time == created
    assert s.session_key == key and s.signing_key == signing_key  # keys stay (MS-SMB2 3.3.5.5.3)
    assert tid in s.tree_connect_table  # the session kept its tree connects
    assert echo(c).status == 0
    c.close()


def test_session_expiry_and_reauth(smbd_factory):
    st = smbd_factory(session_lifetime=0.5)
    c = RawClient(st.host, st.port)
    c.negotiate(dialects=(0x0311,))
    t0 = time.time()
    assert c.session_setup(USER, PASSWORD).status == 0
    s = _only_session(st)
    assert t0 + 0.5 <= s.expiration_time <= time.time() + 0.5
    assert c.tree_connect().status == 0
    time.sleep(0.7)
    r = c.tree_connect()
    assert r.status == ntstatus.STATUS_NETWORK_SESSION_EXPIRED
    assert s.state is SessionState.Expired
    before = time.time()
    assert c.session_setup(USER, PASSWORD, session_id=c.session_id).status == 0
    assert s.state is SessionState.Valid and s.expiration_time >= before + 0.5
    assert c.tree_connect().status == 0
    c.close()


def test_wrong_password_refused_and_no_session_left(smbd):
    c = RawClient(smbd.host, smbd.port)
    c.negotiate()
    r = c.session_setup(USER, "wrong")
    assert r.status == ntstatus.STATUS_LOGON_FAILURE
    assert smbd.call(lambda: dict(smbd.server.global_session_table)) == {}
    r = c.session_setup("nobody", "x")
    assert r.status == ntstatus.STATUS_LOGON_FAILURE
    c.close()
    with pytest.raises(Exception) as ei:
        _sp_logon(smbd, Dialects.SMB_3_1_1, password="bad")
    assert "LOGON_FAILURE" in str(ei.value) or "0xc000006d" in str(ei.value).lower()


def test_unauthenticated_requests_refused(smbd):
    c = RawClient(smbd.host, smbd.port)
    c.negotiate()
    assert c.tree_connect(session_id=0).status == ntstatus.STATUS_USER_SESSION_DELETED
    assert c.tree_connect(session_id=0x1234).status == ntstatus.STATUS_USER_SESSION_DELETED
    assert c.request(Command.SMB2_LOGOFF, w.LogoffRequest(), session_id=77).status == \
        ntstatus.STATUS_USER_SESSION_DELETED
    assert echo(c, session_id=0).status == 0  # ECHO needs no session
    c.close()


def test_unsigned_and_badly_signed_requests_refused(smbd):
    c = RawClient(smbd.host, smbd.port)
    c.negotiate(dialects=(0x0300,))
    assert c.session_setup(USER, PASSWORD).status == 0
    assert c.tree_connect(sign=False).status == ntstatus.STATUS_ACCESS_DENIED
    good = c.compound([c.build(Command.SMB2_TREE_CONNECT, w.TreeConnectRequest(
        path="\\\\h\\IPC$".encode("utf-16-le")).pack())])
    bad = bytearray(good)
    bad[60] ^= 0xFF  # corrupt the signature
    c.send_raw(bytes(bad))
    assert c.recv()[0].status == ntstatus.STATUS_ACCESS_DENIED
    assert c.tree_connect().status == 0
    c.close()


def test_311_unsigned_tree_connect_refused_even_without_signing_required(smbd_factory):
    st = smbd_factory(signing_required=False)
    c = RawClient(st.host, st.port)
    c.negotiate(dialects=(0x0311,))
    assert c.session_setup(USER, PASSWORD).status == 0
    assert _only_session(st).signing_required is False
    assert c.tree_connect(sign=False).status == ntstatus.STATUS_ACCESS_DENIED
    assert c.tree_connect(sign=True).status == 0
    assert echo(c, sign=False).status == 0
    c.close()


def test_guest_and_anonymous_refused_by_default_allowed_when_configured(smbd_factory):
    from impacket.smbconnection import SMBConnection, SessionError

    st = smbd_factory()
    c = SMBConnection(st.host, st.host, sess_port=st.port)
    with pytest.raises(SessionError):
        c.login("", "")  # anonymous
    c = RawClient(st.host, st.port)
    c.negotiate()
    assert c.session_setup("stranger", "pw").status == ntstatus.STATUS_LOGON_FAILURE
    c.close()

    st = smbd_factory(allow_guest=True, allow_anonymous=True, signing_required=False)
    c = RawClient(st.host, st.port)
    c.negotiate(dialects=(0x0302,))
    r = c.session_setup("stranger", "pw")
    assert r.status == 0 and c.session_flags & w.SMB2_SESSION_FLAG_IS_GUEST
    s = _only_session(st)
    assert s.is_guest and not s.is_anonymous and s.signing_required is False and s.signing_key == b""
    c.sign = False
    assert c.tree_connect().status == 0  # guest sessions are not signed
    c.close()
    ic = SMBConnection(st.host, st.host, sess_port=st.port)
    ic.login("", "")
    anon = [x for x in st.call(lambda: list(st.server.global_session_table.values())) if x.is_anonymous]
    assert len(anon) == 1 and anon[0].signing_required is False
    ic.logoff()


def test_logoff_removes_session(smbd):
    c = RawClient(smbd.host, smbd.port)
    c.negotiate()
    c.session_setup(USER, PASSWORD)
    assert c.tree_connect().status == 0
    r = c.request(Command.SMB2_LOGOFF, w.LogoffRequest())
    assert r.status == 0
    assert smbd.call(lambda: dict(smbd.server.global_session_table)) == {}
    assert c.tree_connect().status == ntstatus.STATUS_USER_SESSION_DELETED
    c.close()


def test_session_information_query(smbd):
    conn, sess = _sp_logon(smbd, Dialects.SMB_3_1_1)
    try:
        s = _only_session(smbd)
        ids = smbd.server.session_global_ids()
        assert ids == [s.session_global_id]
        time.sleep(0.05)
        info = smbd.server.session_info(s.session_global_id)
        assert info.user_name == USER and info.num_opens == 0 and not info.is_guest and not info.is_encrypted
        assert info.client_address == s.connection.client_address and info.client_address.startswith("127.0.0.1:")
        assert info.connected_time >= 0.05 and info.idle_time >= 0.05
        assert smbd.server.session_info(0xDEAD) is None
        assert [i.session_global_id for i in smbd.server.session_infos()] == [s.session_global_id]
    finally:
        sess.disconnect()
        conn.disconnect()


def test_previous_session_id_closes_old_session(smbd):
    c1 = RawClient(smbd.host, smbd.port)
    c1.negotiate()
    c1.session_setup(USER, PASSWORD)
    old = c1.session_id
    c2 = RawClient(smbd.host, smbd.port)
    c2.negotiate()
    ctx_req = None  # PreviousSessionId rides on the first SESSION_SETUP request of the new session
    import spnego
    ctx = spnego.client(USER, PASSWORD, hostname="wsd")
    tok = ctx.step()
    sid = 0
    while True:
        ctx_req = w.SessionSetupRequest(security_mode=1, security_buffer=tok, previous_session_id=old)
        c2.send_raw(c2.build(Command.SMB2_SESSION_SETUP, ctx_req.pack(), session_id=sid))
        r = c2.recv()[0]
        sid = r.header.session_id
        if r.status != ntstatus.STATUS_MORE_PROCESSING_REQUIRED:
            break
        tok = ctx.step(w.SessionSetupResponse.unpack(r.raw).security_buffer)
    assert r.status == 0
    table = smbd.call(lambda: dict(smbd.server.global_session_table))
    assert old not in table and sid in table
    c1.close()
    c2.close()


def test_session_expiry_seen_by_smbprotocol(smbd_factory):
    """SESS-1 ExpirationTime/State with a real client: after the lifetime its requests get
    STATUS_NETWORK_SESSION_EXPIRED and the record says Expired."""
    from smbprotocol.exceptions import SMBResponseException

    st = smbd_factory(session_lifetime=0.4)
    conn, sess = _sp_logon(st, Dialects.SMB_3_1_1)
    s = _only_session(st)
    assert s.expiration_time <= time.time() + 0.4
    time.sleep(0.6)
    with pytest.raises(SMBResponseException) as ei:
        SpTree(sess, rf"\\{st.host}\IPC$").connect()
    assert ei.value.status == ntstatus.STATUS_NETWORK_SESSION_EXPIRED
    assert s.state is SessionState.Expired
    conn.disconnect()


def _anonymous_reauth(c: RawClient) -> int:
    """Re-authenticate the client's session as anonymous with raw NTLMSSP (MS-NLMP 3.2.5.1.2:
    empty user, empty NtChallengeResponse, LmChallengeResponse one zero byte)."""
    import struct as _s
    neg = b"NTLMSSP\0" + _s.pack("<II", 1, 0x62088215) + b"\0" * 16
    c.send_raw(c.sign_msg(c.build(Command.SMB2_SESSION_SETUP, w.SessionSetupRequest(security_buffer=neg).pack())))
    r = c.recv()[0]
    assert r.status == ntstatus.STATUS_MORE_PROCESSING_REQUIRED
    hdr = 64
    auth = (b"NTLMSSP\0" + _s.pack("<I", 3) + _s.pack("<HHI", 1, 1, hdr) + _s.pack("<HHI", 0, 0, hdr + 1)
            + _s.pack("<HHI", 0, 0, hdr + 1) * 4 + _s.pack("<I", 0x62088A15) + b"\0")
    c.send_raw(c.sign_msg(c.build(Command.SMB2_SESSION_SETUP, w.SessionSetupRequest(security_buffer=auth).pack())))
    return c.recv()[0].status


def test_reauth_as_anonymous_and_back_keeps_keys_and_signing(smbd_factory):
    """smbtorture smb2.session.reauth2-5 pattern: the identity changes, the keys do not."""
    st = smbd_factory(allow_anonymous=True)
    c = RawClient(st.host, st.port)
    c.negotiate(dialects=(0x0311,))
    assert c.session_setup(USER, PASSWORD).status == 0
    s = _only_session(st)
    keys = (s.session_key, s.signing_key, s.encryption_key)
    assert _anonymous_reauth(c) == 0
    assert s.is_anonymous and s.user_name == "" and s.state is SessionState.Valid
    assert (s.session_key, s.signing_key, s.encryption_key) == keys and s.signing_required
    r = c.tree_connect()  # still signed with the first logon's key, and answered signed
    assert r.status == 0 and cr.verify_signature(c.signing_key, r.raw, c.signing_alg)
    assert c.tree_connect(sign=False).status == ntstatus.STATUS_ACCESS_DENIED
    assert c.session_setup(USER, PASSWORD, session_id=c.session_id).status == 0
    assert not s.is_anonymous and s.user_name == USER and s.security_context.user_name == USER
    c.close()


def test_failed_reauth_deletes_the_session(smbd):
    c = RawClient(smbd.host, smbd.port)
    c.negotiate(dialects=(0x0311,))
    assert c.session_setup(USER, PASSWORD).status == 0
    assert c.session_setup(USER, "wrong", session_id=c.session_id).status == ntstatus.STATUS_LOGON_FAILURE
    # every response of the re-authentication, the failure included, is signed with the session's key
    assert len(c.setup_replies) == 2 and all(c.verify(r) for r in c.setup_replies)
    assert smbd.call(lambda: dict(smbd.server.global_session_table)) == {}
    assert c.tree_connect().status == ntstatus.STATUS_USER_SESSION_DELETED
    c.close()


@pytest.mark.parametrize("d1,d2,expect", [
    (0x0210, 0x0210, ntstatus.STATUS_REQUEST_NOT_ACCEPTED),
    (0x0210, 0x0311, ntstatus.STATUS_INVALID_PARAMETER),
    (0x0311, 0x0210, ntstatus.STATUS_REQUEST_NOT_ACCEPTED),
    (0x0302, 0x0311, ntstatus.STATUS_INVALID_PARAMETER),
])
def test_session_binding_refused_signed_with_the_global_session_key(smbd, d1, d2, expect):
    """MS-SMB2 3.3.5.5.2: a bind below 3.0 or across dialects gets the spec's status, signed
    with the key of the session found in GlobalSessionTable by that session's signing
    algorithm; the first session lives on."""
    c1 = RawClient(smbd.host, smbd.port)
    c1.negotiate(dialects=(d1,))
    assert c1.session_setup(USER, PASSWORD).status == 0
    c2 = RawClient(smbd.host, smbd.port)
    c2.negotiate(dialects=(d2,))
    c2.session_id = c1.session_id
    c2.session_key, c2.signing_key = c1.session_key, c1.signing_key or c1.session_key
    bind = w.SessionSetupRequest(flags=w.SMB2_SESSION_FLAG_BINDING, security_mode=1, security_buffer=b"\x60\x00")
    raw = c2.build(Command.SMB2_SESSION_SETUP, bind.pack())
    c2.send_raw(cr.sign(c2.signing_key, raw, c2.signing_alg))
    r = c2.recv()[0]
    assert r.status == expect
    assert cr.verify_signature(c2.signing_key, r.raw, c1.signing_alg)
    # the same session id without BINDING on the other connection: not this connection's session
    r = c2.request(Command.SMB2_SESSION_SETUP, w.SessionSetupRequest(security_buffer=b"\x60\x00"), sign=False)
    assert r.status == ntstatus.STATUS_USER_SESSION_DELETED
    assert c1.tree_connect().status == 0  # the original session is unharmed
    c1.close()
    c2.close()


def test_logons_in_progress_are_bounded(smbd):
    import spnego
    c = RawClient(smbd.host, smbd.port)
    c.negotiate()
    statuses = []
    for _ in range(70):
        tok = spnego.client(USER, PASSWORD, hostname="wsd").step()
        statuses.append(c.request(Command.SMB2_SESSION_SETUP, w.SessionSetupRequest(security_buffer=tok),
                                  session_id=0).status)
    assert statuses[:64] == [ntstatus.STATUS_MORE_PROCESSING_REQUIRED] * 64
    assert set(statuses[64:]) == {ntstatus.STATUS_REQUEST_NOT_ACCEPTED}
    c.close()
