"""MS-SRVS over the real IPC$ pipe of an in-process wsd-smbd (SRVS-1 ... SRVS-7 in
/work/shared/spec/README.md), plus NetrShareEnum/NetrShareGetInfo/NetrServerGetInfo/
NetrRemoteTOD.

Sessions are real NTLM logons (impacket, or the raw client for a half-finished one);
impacket carries the DCE/RPC calls over SMB2.  Requests that impacket cannot encode
(unknown info levels, names longer than 1024 characters, NULL resume handles) are
marshalled with wsd_smb.rpc.ndr and sent as raw stubs; replies are decoded both ways.
"""
from __future__ import annotations

import logging
import time

import pytest
from rawclient import RawClient
from smbunit import PASSWORD, USER

from wsd_smb.rpc import win32
from wsd_smb.rpc.ndr import DWORD, LPWSTR, WSTR, marshal, unmarshal
from wsd_smb.rpc.srvsvc import (
    PDWORD,
    SERVER_INFO_UNION,
    SESSION_ENUM_STRUCT,
    SESSION_INFO,
    SHARE_ENUM_STRUCT,
    SHARE_INFO_UNION,
    SRVSVC_HANDLE,
    STYPE_IPC,
    STYPE_SPECIAL,
    TIME_OF_DAY_INFO,
    host_of,
)
from wsd_smb.rpc.ndr import Pointer

impacket = pytest.importorskip("impacket")
from impacket.dcerpc.v5 import srvs, transport  # noqa: E402
from impacket.smbconnection import SMBConnection  # noqa: E402

MAX = 0xFFFFFFFF
BOB, BOBPW = "bob", "bobpw"  # non-administrator (smbunit.make_config)


class Rpc:
    """One SMB session with a bound srvsvc association."""

    def __init__(self, smbd, user: str = USER, password: str = PASSWORD):
        self.smb = SMBConnection("127.0.0.1", "127.0.0.1", sess_port=smbd.port, timeout=15)
        self.smb.login(user, password)
        t = transport.SMBTransport("127.0.0.1", smbd.port, filename=r"\srvsvc", smb_connection=self.smb)
        self.dce = t.get_dce_rpc()
        self.dce.connect()
        self.dce.bind(srvs.MSRPC_UUID_SRVS)

    def raw(self, opnum: int, stub: bytes) -> bytes:
        self.dce.call(opnum, stub)
        return self.dce.recv()

    def session_enum(self, level: int, client=None, user=None, pref: int = MAX, resume=None,
                     server="\\\\wsd", tag: int | None = None):
        """NetrSessionEnum with our marshaller -> (InfoStruct, TotalEntries, ResumeHandle, status)."""
        tag = level if tag is None else tag
        arm = {"EntriesRead": 0, "Buffer": None} if tag in SESSION_INFO else None
        stub = marshal([(SRVSVC_HANDLE, server), (LPWSTR, client), (LPWSTR, user),
                        (SESSION_ENUM_STRUCT, {"Level": level, "SessionInfo": (tag, arm)}), (DWORD, pref),
                        (PDWORD, resume)])
        return unmarshal([SESSION_ENUM_STRUCT, DWORD, PDWORD, DWORD], self.raw(12, stub))

    def close(self) -> None:
        self.dce.disconnect()
        self.smb.close()


def entries(info) -> list[dict]:
    container = info["SessionInfo"][1]
    return (container or {}).get("Buffer") or []


def login(smbd, user=USER, password=PASSWORD) -> SMBConnection:
    c = SMBConnection("127.0.0.1", "127.0.0.1", sess_port=smbd.port, timeout=15)
    c.login(user, password)
    return c


@pytest.fixture
def rpc(smbd):
    r = Rpc(smbd)
    yield r
    r.close()


def server_view(smbd) -> list:
    """The sessions as the server's session-information query (MS-SMB2 3.3.4.18) sees them."""
    return smbd.call(lambda: smbd.server.session_infos())


# ====================================================================== SRVS-1
@pytest.mark.parametrize("level", [0, 1, 2, 10, 502])
def test_srvs1_levels_fill_from_session_info_502(smbd, rpc, level):
    """SRVS-1: each level's fields are the SESSION_INFO_502 fields of 3.1.4.5's mapping,
    decoded by impacket's NDR (third-party) and by ours; ServerName is ignored."""
    other = login(smbd, BOB, BOBPW)
    try:
        info, total, _resume, status = rpc.session_enum(level, server="\\\\not-this-server")
        assert status == 0 and total == 2 and info["Level"] == level
        got = entries(info)
        assert len(got) == 2
        view = {(host_of(s.client_address), s.user_name) for s in server_view(smbd)}
        for e in got:
            assert set(e) == {n for n, _ in SESSION_INFO[level].fields}
            assert e[f"sesi{level}_cname"] == "127.0.0.1"
            if level != 0:
                assert (e[f"sesi{level}_cname"], e[f"sesi{level}_username"]) in view
                assert e[f"sesi{level}_time"] >= e[f"sesi{level}_idle_time"] >= 0
            if level in (1, 2, 502):
                assert e[f"sesi{level}_user_flags"] == 0
            if level in (2, 502):
                assert e[f"sesi{level}_cltype_name"] == ""
            if level == 502:
                assert e["sesi502_transport"] == "tcp"
        # impacket decodes the same reply
        r = srvs.hNetrSessionEnum(rpc.dce, srvs.NULL, srvs.NULL, level)
        imp = r["InfoStruct"]["SessionInfo"][f"Level{level}"]["Buffer"]
        assert sorted(x[f"sesi{level}_cname"][:-1] for x in imp) == sorted(e[f"sesi{level}_cname"] for e in got)
    finally:
        other.close()


@pytest.mark.parametrize("level", [3, 11, 101, 501, 503, 0xFFFFFFFF])
def test_srvs1_other_levels_error_invalid_level(rpc, level):
    """SRVS-1: any level other than 0/1/2/10/502 -> ERROR_INVALID_LEVEL (in the return value)."""
    info, total, resume, status = rpc.session_enum(level, resume=0)
    assert status == win32.ERROR_INVALID_LEVEL
    assert info == {"Level": level, "SessionInfo": (level, None)} and total == 0 and resume == 0


def test_srvs1_level_and_union_tag_must_agree(rpc):
    _info, _t, _r, status = rpc.session_enum(10, tag=1)
    assert status == win32.ERROR_INVALID_PARAMETER


# ====================================================================== SRVS-2
def test_srvs2_client_name_must_start_with_backslashes(rpc):
    assert rpc.session_enum(10, client="127.0.0.1")[3] == win32.NERR_InvalidComputer
    assert rpc.session_enum(10, client="\\127.0.0.1")[3] == win32.NERR_InvalidComputer
    assert rpc.session_enum(10, client="\\\\127.0.0.1")[3] == 0
    assert rpc.session_enum(10, client="")[3] == 0  # a zero-length string is no qualifier


def test_srvs2_name_lengths(rpc):
    """1,024 characters including the terminator is the limit for ClientName and UserName."""
    ok_client = "\\\\" + "c" * (1023 - 2)
    assert rpc.session_enum(10, client=ok_client)[3] == win32.NERR_ClientNameNotFound
    assert rpc.session_enum(10, client=ok_client + "c")[3] == win32.ERROR_INVALID_PARAMETER
    assert rpc.session_enum(10, user="u" * 1023)[3] == win32.NERR_UserNotFound
    assert rpc.session_enum(10, user="u" * 1024)[3] == win32.ERROR_INVALID_PARAMETER


# ====================================================================== SRVS-2b
def test_srvs2b_sessions_come_from_the_session_information_query(smbd, rpc):
    """The SessionList is the server's valid sessions, each answered by session_info():
    opens and idle time are live; a half-authenticated session (InProgress) is not listed;
    a logged-off one disappears."""
    other = login(smbd)
    try:
        tid = other.connectTree("share")
        fid = other.openFile(tid, "f.txt", desiredAccess=0x12019F, creationDisposition=5)
        half = RawClient("127.0.0.1", smbd.port)
        half.negotiate()
        import spnego

        from wsd_smb.wire import commands as w
        from wsd_smb.wire.header import Command
        token = spnego.client(USER, PASSWORD, hostname="wsd", protocol="ntlm").step()
        half.send_raw(half.build(Command.SMB2_SESSION_SETUP,
                                 w.SessionSetupRequest(security_mode=1, security_buffer=token).pack(), session_id=0))
        assert half.recv()[0].status == 0xC0000016  # MORE_PROCESSING_REQUIRED: session InProgress
        time.sleep(1.2)
        info, total, _r, status = rpc.session_enum(502)
        assert status == 0 and total == 2  # me + other; not the InProgress one
        view = server_view(smbd)
        assert len(view) == 2
        opens = sorted(e["sesi502_num_opens"] for e in entries(info))
        assert opens == sorted(s.num_opens for s in view)
        assert max(opens) >= 1  # other's file (plus its IPC$ pipe opens, if any)
        idle = [e["sesi502_idle_time"] for e in entries(info)]
        assert max(idle) >= 1  # other has been idle for more than a second
        other.closeFile(tid, fid)
        other.logoff()
        info, total, _r, _s = rpc.session_enum(10)
        assert total == 1
        half.close()
    finally:
        other.close()


# ====================================================================== SRVS-3
def test_srvs3_qualifiers(smbd, rpc):
    other = login(smbd, BOB, BOBPW)
    try:
        info, total, _r, status = rpc.session_enum(10, client="\\\\127.0.0.1", user=BOB.upper())
        assert status == 0 and total == 1 and entries(info)[0]["sesi10_username"] == BOB
        info, total, _r, status = rpc.session_enum(10, client="\\\\127.0.0.1")
        assert status == 0 and total == 2
        assert rpc.session_enum(10, client="\\\\127.0.0.2")[3] == win32.NERR_ClientNameNotFound
        assert rpc.session_enum(10, user="nobody")[3] == win32.NERR_UserNotFound
        assert rpc.session_enum(10, client="\\\\127.0.0.1", user="nobody")[3] == win32.NERR_UserNotFound
        assert rpc.session_enum(10, client="\\\\127.0.0.2", user=BOB)[3] == win32.NERR_ClientNameNotFound
    finally:
        other.close()


# ====================================================================== SRVS-4, -5, -6
def test_srvs4_prefered_maximum_length(smbd, rpc):
    others = [login(smbd) for _ in range(3)]
    try:
        _i, total, _r, status = rpc.session_enum(10, pref=MAX)
        assert status == 0 and total == 4 and len(entries(_i)) == 4
        info, total, _r, status = rpc.session_enum(10, pref=1)
        assert status == win32.ERROR_MORE_DATA and total == 4 and len(entries(info)) == 1
        # exactly two entries' worth: 4 fields x 4 bytes + "127.0.0.1\0" + "alice\0" in UTF-16
        one = 16 + 2 * (len("127.0.0.1") + 1) + 2 * (len(USER) + 1)
        info, total, _r, status = rpc.session_enum(10, pref=2 * one)
        assert status == win32.ERROR_MORE_DATA and len(entries(info)) == 2
        info, total, _r, status = rpc.session_enum(10, pref=4 * one)
        assert status == 0 and len(entries(info)) == 4
    finally:
        for o in others:
            o.close()


def test_srvs5_srvs6_resume_walk(smbd, rpc):
    """SRVS-5: TotalEntries counts from the resume position; SRVS-6: resume handles
    walk the list once, ERROR_MORE_DATA sets the handle, past the end -> zero entries."""
    others = [login(smbd) for _ in range(3)]
    try:
        seen, resume, totals = [], 0, []
        for _ in range(10):
            info, total, resume, status = rpc.session_enum(10, pref=1, resume=resume)
            totals.append(total)
            seen += entries(info)
            if status == 0:
                break
            assert status == win32.ERROR_MORE_DATA and resume == len(seen)
        assert len(seen) == 4 and totals == [4, 3, 2, 1]
        assert resume == 0  # finished
        info, total, resume, status = rpc.session_enum(10, resume=2)
        assert status == 0 and total == 2 and len(entries(info)) == 2
        info, total, resume, status = rpc.session_enum(10, resume=4)
        assert status == 0 and total == 0 and entries(info) == [] and resume == 4
        info, total, resume, status = rpc.session_enum(10, resume=1000)
        assert status == 0 and total == 0 and entries(info) == []
        info, total, resume, status = rpc.session_enum(10, pref=1, resume=None)
        assert status == win32.ERROR_MORE_DATA and resume is None  # NULL: no handle stored
    finally:
        for o in others:
            o.close()


# ====================================================================== SRVS-7
@pytest.mark.parametrize("level, allowed", [(0, True), (10, True), (1, False), (2, False), (502, False)])
def test_srvs7_non_administrators(smbd, level, allowed):
    bob = Rpc(smbd, BOB, BOBPW)
    try:
        info, total, _r, status = bob.session_enum(level)
        if allowed:
            assert status == 0 and total == 1
        else:
            assert status == win32.ERROR_ACCESS_DENIED and total == 0 and entries(info) == []
    finally:
        bob.close()


# ====================================================================== NetrShareEnum / GetInfo
def share_enum(r: Rpc, level: int, pref: int = MAX, resume=None, opnum: int = 15):
    stub = marshal([(SRVSVC_HANDLE, None),
                    (SHARE_ENUM_STRUCT, {"Level": level, "ShareInfo": (level, {"EntriesRead": 0, "Buffer": None})
                                         if level in (0, 1, 2, 501, 502, 503) else (level, None)}),
                    (DWORD, pref), (PDWORD, resume)])
    return unmarshal([SHARE_ENUM_STRUCT, DWORD, PDWORD, DWORD], r.raw(opnum, stub))


@pytest.mark.parametrize("level", [0, 1, 2, 501, 502, 503])
def test_share_enum_levels(smbd, rpc, level):
    info, total, _r, status = share_enum(rpc, level)
    assert status == 0 and total == 2
    got = {e[f"shi{level}_netname"]: e for e in info["ShareInfo"][1]["Buffer"]}
    assert set(got) == {"share", "IPC$"}
    if level != 0:
        assert got["IPC$"][f"shi{level}_type"] == STYPE_IPC | STYPE_SPECIAL
        assert got["share"][f"shi{level}_type"] == 0
        assert got["IPC$"][f"shi{level}_remark"] == "IPC Service"
    if level in (2, 502, 503):
        assert got["share"][f"shi{level}_path"].startswith("C:\\")
        assert got["share"][f"shi{level}_max_uses"] == MAX
    # impacket's decoder agrees (levels it knows)
    r = srvs.hNetrShareEnum(rpc.dce, level)
    names = [s[f"shi{level}_netname"][:-1] for s in r["InfoStruct"]["ShareInfo"][f"Level{level}"]["Buffer"]]
    assert sorted(names) == sorted(got)


def test_share_enum_sticky_and_errors(smbd, rpc):
    info, total, _r, status = share_enum(rpc, 1, opnum=36)  # NetrShareEnumSticky: no special shares
    assert status == 0 and [e["shi1_netname"] for e in info["ShareInfo"][1]["Buffer"]] == ["share"]
    assert share_enum(rpc, 7)[3] == win32.ERROR_INVALID_LEVEL
    info, total, resume, status = share_enum(rpc, 1, pref=1, resume=0)
    assert status == win32.ERROR_MORE_DATA and total == 2 and resume == 1
    info, total, resume, status = share_enum(rpc, 1, resume=resume)
    assert status == 0 and total == 1 and len(info["ShareInfo"][1]["Buffer"]) == 1
    bob = Rpc(smbd, BOB, BOBPW)
    try:
        assert share_enum(bob, 1)[3] == 0
        for level in (2, 502, 503):
            assert share_enum(bob, level)[3] == win32.ERROR_ACCESS_DENIED
    finally:
        bob.close()


def share_get_info(r: Rpc, name: str, level: int):
    stub = marshal([(SRVSVC_HANDLE, None), (WSTR, name), (DWORD, level)])
    return unmarshal([SHARE_INFO_UNION, DWORD], r.raw(16, stub))


def test_share_get_info(rpc):
    (tag, si), status = share_get_info(rpc, "SHARE", 2)
    assert status == 0 and tag == 2 and si["shi2_netname"] == "share" and si["shi2_current_uses"] == 0
    (tag, si), status = share_get_info(rpc, "ipc$", 1)
    assert status == 0 and si["shi1_type"] == STYPE_IPC | STYPE_SPECIAL
    (tag, si), status = share_get_info(rpc, "share", 1005)
    assert status == 0 and si == {"shi1005_flags": 0}
    assert share_get_info(rpc, "nosuch", 1) == [(1, None), win32.NERR_NetNameNotFound]
    assert share_get_info(rpc, "share", 1501) == [(1501, None), win32.ERROR_INVALID_LEVEL]
    assert share_get_info(rpc, "share", 77) == [(77, None), win32.ERROR_INVALID_LEVEL]
    r = srvs.hNetrShareGetInfo(rpc.dce, "share\x00", 1)
    assert r["InfoStruct"]["ShareInfo1"]["shi1_netname"] == "share\x00"


# ====================================================================== NetrServerGetInfo / NetrRemoteTOD
def test_server_get_info(smbd, rpc):
    def get(r, level):
        return unmarshal([SERVER_INFO_UNION, DWORD], r.raw(21, marshal([(SRVSVC_HANDLE, None), (DWORD, level)])))

    (tag, v), status = get(rpc, 101)
    assert status == 0 and v["sv101_name"] == smbd.server.config.server_name and v["sv101_platform_id"] == 500
    (tag, v), status = get(rpc, 102)
    assert status == 0 and v["sv102_users"] == 2 and v["sv102_disc"] == -1
    assert get(rpc, 103) == [(103, None), win32.ERROR_INVALID_LEVEL]
    assert get(rpc, 9) == [(9, None), win32.ERROR_INVALID_LEVEL]
    r = srvs.hNetrServerGetInfo(rpc.dce, 100)
    assert r["InfoStruct"]["ServerInfo100"]["sv100_name"] == smbd.server.config.server_name + "\x00"
    bob = Rpc(smbd, BOB, BOBPW)
    try:
        assert get(bob, 101)[1] == 0
        assert get(bob, 102) == [(102, None), win32.ERROR_ACCESS_DENIED]
    finally:
        bob.close()


def test_remote_tod(rpc):
    before = int(time.time())
    tod, status = unmarshal([Pointer(TIME_OF_DAY_INFO), DWORD], rpc.raw(28, marshal([(SRVSVC_HANDLE, None)])))
    after = int(time.time())
    assert status == 0 and before <= tod["tod_elapsedt"] <= after
    t = time.gmtime(tod["tod_elapsedt"])
    assert (tod["tod_year"], tod["tod_month"], tod["tod_day"], tod["tod_hours"]) == \
        (t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour)
    r = srvs.hNetrRemoteTOD(rpc.dce)
    assert abs(r["BufferPtr"]["tod_elapsedt"] - tod["tod_elapsedt"]) <= 2


# ====================================================================== junk over the real pipe
def test_junk_written_to_the_pipe_over_smb(smbd, caplog):
    """Random and mutated PDUs through SMB2 WRITE/READ on \\srvsvc: every READ gives PDUs or
    STATUS_PIPE_EMPTY, the server logs no handler bug and keeps serving."""
    import random

    from impacket.smbconnection import SessionError

    from wsd_smb.rpc import pdu as P

    rng = random.Random(1234)
    c = login(smbd)
    try:
        tid = c.connectTree("IPC$")
        fid = c.openFile(tid, "srvsvc", desiredAccess=0x0012019F, creationOption=0, fileAttributes=0)
        bind_pdu = P.Bind(call_id=1, contexts=[P.ContextElem(0, P.SyntaxId.of(
            "4b324fc8-1670-01d3-1278-5a47bf6ee188", 3), [P.NDR20])]).pack()
        samples = [bind_pdu, P.Request(call_id=2, opnum=15, stub=b"\0" * 40).pack(), b"\x05\x00\x00\x03"]
        for i in range(60):
            raw = bytearray(rng.choice(samples))
            for _ in range(rng.randint(0, 4)):
                raw[rng.randrange(len(raw))] = rng.randrange(256)
            if rng.random() < 0.3:
                raw = bytearray(rng.randbytes(rng.randint(1, 300)))
            c.writeFile(tid, fid, bytes(raw))
            for _ in range(50):
                try:
                    data = c.readFile(tid, fid, 0, 4280)
                except SessionError as e:
                    assert e.getErrorCode() == 0xC00000D9  # STATUS_PIPE_EMPTY
                    break
                assert data[:1] == b"\x05" and len(data) >= 16
        c.closeFile(tid, fid)
        r = Rpc(smbd)
        assert r.session_enum(10)[3] == 0
        r.close()
    finally:
        c.close()
    bugs = [rec.getMessage() for rec in caplog.records if "handler_bug" in rec.getMessage()
            or rec.levelno >= logging.ERROR]
    assert not bugs


def test_a_pipe_read_shorter_than_the_message_says_buffer_overflow(smbd):
    """A READ on \\srvsvc smaller than the queued reply PDU gets the part that fits with
    STATUS_BUFFER_OVERFLOW (MS-SMB2 3.3.5.12, message-mode pipe); the next READ gets the
    rest with STATUS_SUCCESS, and the two parts make the whole bind_ack."""
    from wsd_smb.rpc import pdu as P
    from wsd_smb.wire import commands as w
    from wsd_smb.wire.base import FileId
    from wsd_smb.wire.header import Command

    c = RawClient(smbd.host, smbd.port)
    c.negotiate(dialects=(0x0311,))
    assert c.session_setup(USER, PASSWORD).status == 0
    r = c.tree_connect("IPC$")
    assert r.status == 0
    tid = r.header.tree_id
    r = c.request(Command.SMB2_CREATE, w.CreateRequest(
        requested_oplock_level=0, impersonation_level=2, desired_access=0x0012019F, file_attributes=0,
        share_access=3, create_disposition=1, create_options=0, name="srvsvc".encode("utf-16-le")), tree_id=tid)
    assert r.status == 0
    fid = w.CreateResponse.unpack(r.raw).file_id
    bind = P.Bind(call_id=1, contexts=[P.ContextElem(0, P.SyntaxId.of(
        "4b324fc8-1670-01d3-1278-5a47bf6ee188", 3), [P.NDR20])]).pack()
    assert c.request(Command.SMB2_WRITE, w.WriteRequest(offset=0, file_id=FileId(*fid), data=bind),
                     tree_id=tid).status == 0
    r1 = c.request(Command.SMB2_READ, w.ReadRequest(length=16, offset=0, file_id=FileId(*fid)), tree_id=tid)
    assert r1.status == 0x80000005  # STATUS_BUFFER_OVERFLOW
    part1 = bytes(w.ReadResponse.unpack(r1.raw).data)
    assert len(part1) == 16
    frag_length = int.from_bytes(part1[8:10], "little")
    assert frag_length > 16
    r2 = c.request(Command.SMB2_READ, w.ReadRequest(length=4280, offset=0, file_id=FileId(*fid)), tree_id=tid)
    assert r2.status == 0
    part2 = bytes(w.ReadResponse.unpack(r2.raw).data)
    assert len(part1 + part2) == frag_length and part1[2] == 12  # a whole bind_ack
    r3 = c.request(Command.SMB2_READ, w.ReadRequest(length=4280, offset=0, file_id=FileId(*fid)), tree_id=tid)
    assert r3.status == 0xC00000D9  # STATUS_PIPE_EMPTY
    c.close()
