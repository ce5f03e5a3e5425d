"""Fuzzing the sans-IO core (hypothesis): random bytes, mutated headers/lengths/offsets
and compound chains, before and after authentication.  Whatever arrives, the core must
answer with SMB2 messages or a disconnect: no exception, no hang, nothing else."""
from __future__ import annotations

import os
import struct
import time
from collections import deque

import pytest
from smbunit import PASSWORD, USER, make_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rawclient import RawClient

from wsd_smb.core.connection import Close, Connection, Send, Work
from wsd_smb.core.state import Server
from wsd_smb.server.driver import load_file_handlers
from wsd_smb.wire import commands as w
from wsd_smb.wire.base import FileId
from wsd_smb.wire.header import SMB2_FLAGS_RELATED_OPERATIONS, SMB2_FLAGS_SERVER_TO_REDIR, Command, Smb2Header


def drive(conn: Connection, msg: bytes) -> list:
    """Feed one message; run Work synchronously (as the driver's pool would); collect output."""
    t0 = time.monotonic()
    out = []
    events = deque(conn.receive_message(msg, time.time()))
    while events:
        ev = events.popleft()
        if isinstance(ev, Work):
            ev.run()
            events.extend(conn.work_done(ev, time.time()))
        elif isinstance(ev, Send):
            out.append(ev.data)
        elif isinstance(ev, Close):
            out.append(None)
        else:
            raise AssertionError(f"unexpected event {ev!r}")
        assert time.monotonic() - t0 < 10, "core took too long"
    out.extend(ev.data for ev in conn.poll(time.time()) if isinstance(ev, Send))
    return out


def check_output(conn: Connection, out: list) -> None:
    for data in out:
        if data is None:
            assert conn.closed
            continue
        assert data[:4] in (b"\xfeSMB", b"\xfdSMB")
        if data[:4] == b"\xfdSMB":
            continue
        pos = 0
        while True:  # every element is a well-formed response header
            h = Smb2Header.unpack(data, pos)
            assert h.flags & SMB2_FLAGS_SERVER_TO_REDIR
            if not h.next_command:
                break
            assert h.next_command % 8 == 0
            pos += h.next_command


class SansClient(RawClient):
    """RawClient talking to a sans-IO Connection in memory."""

    def __init__(self, conn: Connection):  # noqa: super().__init__ opens a socket
        self.conn = conn
        self.inbox: deque = deque()
        self.mid = 0
        self.dialect = 0
        self.session_id = 0
        self.session_key = b""
        self.signing_key = self.encryption_key = self.decryption_key = b""
        self.signing_alg = 0
        self.cipher = 0
        self.preauth = b"\0" * 64
        self.session_preauth = b""
        self.sign = True
        self.encrypt = False

    def send_raw(self, data: bytes) -> None:
        out = drive(self.conn, data)
        check_output(self.conn, out)
        self.inbox.extend(o for o in out if o is not None)

    def recv_raw(self) -> bytes:
        return self.inbox.popleft()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    load_file_handlers()
    return Server(make_config(tmp_path_factory.mktemp("fuzz")))


def fresh(server, auth: bool, dialect: int = 0x0311):
    conn = Connection(server, "fuzz:1")
    c = SansClient(conn)
    if auth:
        c.negotiate(dialects=(dialect,))
        assert c.session_setup(USER, PASSWORD).status == 0
        r = c.tree_connect("share")
        assert r.status == 0
        c.tid = r.header.tree_id
    return conn, c


def templates(c: SansClient) -> list[bytes]:
    fid = FileId(1, 2)
    name = "dir\\file.txt".encode("utf-16-le")
    bodies = [
        (Command.SMB2_ECHO, w.EchoRequest()),
        (Command.SMB2_TREE_CONNECT, w.TreeConnectRequest(path="\\\\h\\share".encode("utf-16-le"))),
        (Command.SMB2_CREATE, w.CreateRequest(desired_access=0x12019F, create_disposition=3, name=name,
                                              create_contexts=w.pack_create_contexts([w.CreateContext(name=b"MxAc")]))),
        (Command.SMB2_READ, w.ReadRequest(length=4096, file_id=fid)),
        (Command.SMB2_WRITE, w.WriteRequest(file_id=fid, data=b"hello")),
        (Command.SMB2_CLOSE, w.CloseRequest(file_id=fid)),
        (Command.SMB2_FLUSH, w.FlushRequest(file_id=fid)),
        (Command.SMB2_QUERY_INFO, w.QueryInfoRequest(info_type=1, file_info_class=5, output_buffer_length=4096,
                                                     file_id=fid)),
        (Command.SMB2_SET_INFO, w.SetInfoRequest(info_type=1, file_info_class=4, file_id=fid, buffer=b"\0" * 40)),
        (Command.SMB2_QUERY_DIRECTORY, w.QueryDirectoryRequest(file_information_class=37, file_id=fid,
                                                               file_name="*".encode("utf-16-le"),
                                                               output_buffer_length=65536)),
        (Command.SMB2_IOCTL, w.IoctlRequest(ctl_code=0x00140204, file_id=fid, input=b"\0" * 26, flags=1)),
        (Command.SMB2_LOCK, w.LockRequest(file_id=fid, locks=[w.LockElement(offset=0, length=1, flags=0x12)])),
        (Command.SMB2_CHANGE_NOTIFY, w.ChangeNotifyRequest(output_buffer_length=1024, file_id=fid)),
        (Command.SMB2_OPLOCK_BREAK, w.OplockBreakAcknowledgment(file_id=fid)),
        (Command.SMB2_SESSION_SETUP, w.SessionSetupRequest(security_buffer=b"\x60\x03\x06\x01\x00")),
        (Command.SMB2_LOGOFF, w.LogoffRequest()),
        (Command.SMB2_CANCEL, w.CancelRequest()),
    ]
    return [c.build(cmd, body.pack(), tree_id=getattr(c, "tid", 0), message_id=0) for cmd, body in bodies]


def _finish(c: SansClient, msgs: list[bytes], sign: bool) -> bytes:
    fixed = []
    for m in msgs:  # give each element the next MessageId so most chains pass the window check
        m = bytearray(m)
        struct.pack_into("<Q", m, 24, c.mid)
        c.mid += 1
        fixed.append(bytes(m))
    return c.compound(fixed, sign)


# WSD_FUZZ_EXAMPLES=N runs a longer campaign (CI uses the default)
SETTINGS = settings(max_examples=int(os.environ.get("WSD_FUZZ_EXAMPLES", "150")), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                               HealthCheck.too_slow])


PREFIXES = st.sampled_from([b"", b"\xfeSMB", b"\xfdSMB", b"\xffSMB", b"\xfcSMB", b"\xfeSMB\x40\x00"])


@SETTINGS
@given(prefix=PREFIXES, data=st.binary(max_size=600))
def test_random_bytes_first_message(server, prefix, data):
    conn, _ = fresh(server, auth=False)
    check_output(conn, drive(conn, prefix + data))
    check_output(conn, drive(conn, prefix + data))


@SETTINGS
@given(prefix=PREFIXES, data=st.binary(max_size=400))
def test_random_bytes_after_logon(server, prefix, data):
    """Garbage (including forged TRANSFORM and SMB1 headers) on an authenticated 3.1.1 connection."""
    conn, c = fresh(server, auth=True)
    check_output(conn, drive(conn, prefix + data))


@SETTINGS
@given(header=st.binary(min_size=64, max_size=64), body=st.binary(max_size=200))
def test_random_header_after_negotiate(server, header, body):
    conn, c = fresh(server, auth=False)
    c.negotiate(dialects=(0x0302,))
    msg = b"\xfeSMB" + header[4:] + body
    check_output(conn, drive(conn, msg))


mutation = st.tuples(st.integers(min_value=0, max_value=400), st.integers(min_value=0, max_value=255))


@SETTINGS
@given(picks=st.lists(st.integers(min_value=0, max_value=16), min_size=1, max_size=4),
       related=st.lists(st.booleans(), min_size=4, max_size=4),
       muts=st.lists(mutation, max_size=6), cut=st.integers(min_value=0, max_value=64),
       sign=st.booleans(), dialect=st.sampled_from([0x0202, 0x0302, 0x0311]))
def test_mutated_chains_after_logon(server, picks, related, muts, cut, sign, dialect):
    conn, c = fresh(server, auth=True, dialect=dialect)
    t = templates(c)
    msgs = []
    for i, p in enumerate(picks):
        m = bytearray(t[p])
        if related[i] and i:
            struct.pack_into("<I", m, 16, struct.unpack_from("<I", m, 16)[0] | SMB2_FLAGS_RELATED_OPERATIONS)
        msgs.append(bytes(m))
    data = bytearray(_finish(c, msgs, sign))
    for pos, val in muts:  # mutate header fields, lengths and offsets after signing
        if pos < len(data):
            data[pos] = val
    if cut:
        data = data[:-cut] if cut < len(data) else data
    out = drive(conn, bytes(data))
    check_output(conn, out)
    if not conn.closed:  # the connection is still usable
        check_output(conn, drive(conn, _finish(c, [templates(c)[0]], True)))


@SETTINGS
@given(off=st.integers(min_value=0, max_value=0xFFFF), length=st.integers(min_value=0, max_value=0xFFFFFFFF),
       which=st.sampled_from(["create_name", "create_ctx", "write", "qi", "ss"]))
def test_offsets_and_lengths(server, off, length, which):
    conn, c = fresh(server, auth=True)
    t = templates(c)
    m = bytearray(t[{"create_name": 2, "create_ctx": 2, "write": 4, "qi": 7, "ss": 14}[which]])
    b = 64
    if which == "create_name":
        struct.pack_into("<HH", m, b + 44, off, length & 0xFFFF)
    elif which == "create_ctx":
        struct.pack_into("<II", m, b + 48, off, length)
    elif which == "write":
        struct.pack_into("<HI", m, b + 2, off, length)
    elif which == "qi":
        struct.pack_into("<H", m, b + 8, off)
        struct.pack_into("<I", m, b + 12, length)
    else:
        struct.pack_into("<HH", m, b + 12, off, length & 0xFFFF)
    check_output(conn, drive(conn, _finish(c, [bytes(m)], True)))


@SETTINGS
@given(blob=st.binary(max_size=300), second=st.binary(max_size=300))
def test_random_security_blobs(server, blob, second):
    conn, c = fresh(server, auth=False)
    c.negotiate(dialects=(0x0311,))
    r = c.request(Command.SMB2_SESSION_SETUP, w.SessionSetupRequest(security_buffer=blob), session_id=0)
    if r.status == 0xC0000016:  # MORE_PROCESSING_REQUIRED: send a second random token on the session
        c.request(Command.SMB2_SESSION_SETUP, w.SessionSetupRequest(security_buffer=second),
                  session_id=r.header.session_id)
    assert not [s for s in server.global_session_table.values()
                if s.connection is conn and s.state.name == "Valid"]  # garbage never logs anyone on


@SETTINGS
@given(muts=st.lists(st.tuples(st.integers(min_value=0, max_value=2000), st.integers(min_value=0, max_value=255)),
                     min_size=1, max_size=4))
def test_mutated_ntlm_authenticate(server, muts):
    """Real NTLM/SPNEGO exchange (pyspnego initiator) with the AUTHENTICATE token mutated."""
    import spnego

    conn, c = fresh(server, auth=False)
    c.negotiate(dialects=(0x0311,))
    ctx = spnego.client(USER, PASSWORD, hostname="wsd", protocol="negotiate")
    r = c.request(Command.SMB2_SESSION_SETUP, w.SessionSetupRequest(security_buffer=ctx.step()), session_id=0)
    assert r.status == 0xC0000016
    tok = bytearray(ctx.step(w.SessionSetupResponse.unpack(r.raw).security_buffer))
    changed = False
    for pos, val in muts:
        if pos < len(tok) and tok[pos] != val:
            tok[pos] = val
            changed = True
    r2 = c.request(Command.SMB2_SESSION_SETUP, w.SessionSetupRequest(security_buffer=bytes(tok)),
                   session_id=r.header.session_id)
    if changed:
        # a changed byte either breaks the token or the proof/MIC; it can only still log on if the
        # byte was outside everything that is authenticated (e.g. the unused LM response); a
        # broken AV_PAIR list in the NTLMv2 response is INVALID_PARAMETER (Samba bug 14932)
        assert r2.status in (0, 0xC000006D, 0xC000000D)
    else:
        assert r2.status == 0
