"""The administrator's side of MS-SRVS over the real IPC$ pipe of an in-process wsd-smbd:
open files (NetrFileEnum/NetrFileGetInfo/NetrFileClose, MS-SRVS 3.1.4.2-3.1.4.4 on the SMB2
server's MS-SMB2 3.3.4.20 / 3.3.4.17), tree connects (NetrConnectionEnum, 3.1.4.1 on
3.3.4.19) and closing sessions (NetrSessionDel, 3.1.4.6 on 3.3.4.12).

The files are opened by smbprotocol and impacket, the calls made by impacket's srvs client
(its NDR decodes the replies); the effects are checked from the clients' side (the closed
open answers STATUS_FILE_CLOSED, the deleted session STATUS_USER_SESSION_DELETED) and
from the server's state.  Levels impacket cannot encode go through wsd_smb.rpc.ndr."""
from __future__ import annotations

import time
import uuid

import pytest
from rawclient import RawClient
from smbunit import PASSWORD, USER
from test_rpc_srvs import Rpc

from wsd_smb.rpc import win32
from wsd_smb.rpc.ndr import DWORD, LPWSTR, marshal, unmarshal
from wsd_smb.wire import commands as w
from wsd_smb.wire.header import Command
from wsd_smb.rpc.srvsvc import (CONNECT_ENUM_STRUCT, FILE_ENUM_STRUCT, FILE_INFO_UNION, PDWORD, SRVSVC_HANDLE,
                                STYPE_DISKTREE, STYPE_IPC, STYPE_SPECIAL)

pytest.importorskip("impacket")
pytest.importorskip("smbprotocol")
from impacket.dcerpc.v5 import srvs  # noqa: E402
from impacket.dcerpc.v5.rpcrt import DCERPCException  # noqa: E402
from smbprotocol.connection import Connection  # noqa: E402
from smbprotocol.exceptions import SMBResponseException  # noqa: E402
from smbprotocol.open import (CreateDisposition, CreateOptions, FileAttributes,  # noqa: E402
                              FilePipePrinterAccessMask, ImpersonationLevel, Open, ShareAccess)
from smbprotocol.session import Session  # noqa: E402
from smbprotocol.tree import TreeConnect  # noqa: E402

MAX = 0xFFFFFFFF
BOB, BOBPW = "bob", "bobpw"  # non-administrator (smbunit.make_config)
STATUS_FILE_CLOSED = 0xC0000128
STATUS_USER_SESSION_DELETED = 0xC0000203
READ_WRITE = FilePipePrinterAccessMask.FILE_READ_DATA | FilePipePrinterAccessMask.FILE_WRITE_DATA


class Admin(Rpc):
    """An impacket session with a bound srvsvc association (test_rpc_srvs.Rpc), plus
    NetrFileEnum through impacket."""

    def files(self, level: int = 3, base=srvs.NULL, user=srvs.NULL) -> list:
        r = srvs.hNetrFileEnum(self.dce, _z(base), _z(user), level)
        return r["InfoStruct"]["FileInfo"][f"Level{level}"]["Buffer"]


class Client:
    """smbprotocol: a session and tree connect that holds files open."""

    def __init__(self, smbd, user: str = USER, password: str = PASSWORD):
        self.conn = Connection(uuid.uuid4(), "127.0.0.1", smbd.port)
        self.conn.connect(timeout=10)
        # signed, not encrypted: a TRANSFORM for a session that is gone ends the connection
        # (MS-SMB2 3.3.5.2.1.1), a signed request gets STATUS_USER_SESSION_DELETED
        self.session = Session(self.conn, user, password, require_encryption=False)
        self.session.connect()
        self.tree = TreeConnect(self.session, r"\\127.0.0.1\share")
        self.tree.connect()

    def open(self, name: str) -> Open:
        o = Open(self.tree, name)
        o.create(ImpersonationLevel.Impersonation, READ_WRITE, FileAttributes.FILE_ATTRIBUTE_NORMAL,
                 ShareAccess.FILE_SHARE_READ | ShareAccess.FILE_SHARE_WRITE, CreateDisposition.FILE_OPEN_IF,
                 CreateOptions.FILE_NON_DIRECTORY_FILE)
        return o

    def close(self) -> None:
        self.conn.disconnect(True)


def _z(v):
    """impacket sends [string] arguments as given: the NUL terminator is ours to add."""
    return v + "\0" if isinstance(v, str) else v


def _s(v) -> str:
    return v[:-1] if isinstance(v, str) and v.endswith("\0") else v


def _code(e: DCERPCException) -> int:
    return e.get_error_code()


@pytest.fixture
def admin(smbd):
    a = Admin(smbd)
    yield a
    a.close()


def test_file_enum_lists_every_open_with_path_user_access_and_locks(smbd, admin, tmp_path):
    """FILE_INFO_3 of each open is the SMB2 server's open query (MS-SMB2 3.3.4.20)."""
    c = Client(smbd)
    try:
        a = c.open("a.txt")
        a.write(b"0123456789", 0)
        c.open("b.txt")
        a.lock([_lock(0, 4)])
        got = {_s(e["fi3_path_name"]): e for e in admin.files()}
        share = str((tmp_path / "share").resolve()).replace("/", "\\")
        pa, pb = f"C:{share}\\a.txt", f"C:{share}\\b.txt"
        assert pa in got and pb in got and "\\PIPE\\srvsvc" in got  # our own pipe is an open too
        assert got[pa]["fi3_num_locks"] == 1 and got[pb]["fi3_num_locks"] == 0
        assert got[pa]["fi3_permissions"] & READ_WRITE == READ_WRITE
        assert _s(got[pa]["fi3_username"]) == USER
        ids = [e["fi3_id"] for e in admin.files()]
        assert len(set(ids)) == len(ids) and all(ids)
        # level 2 carries the same ids
        assert sorted(e["fi2_id"] for e in admin.files(2)) == sorted(ids)
        # the server's own view
        view = smbd.call(lambda: {(i.path_name, i.file_global_id) for i in smbd.server.open_infos()})
        assert {(p, e["fi3_id"]) for p, e in got.items()} == view
    finally:
        c.close()


def _lock(offset, length):
    from smbprotocol.open import SMB2LockElement, LockFlags
    el = SMB2LockElement()
    el["offset"], el["length"] = offset, length
    el["flags"] = LockFlags.SMB2_LOCKFLAG_EXCLUSIVE_LOCK | LockFlags.SMB2_LOCKFLAG_FAIL_IMMEDIATELY
    return el


def test_file_enum_qualifiers_base_path_user_and_client(smbd, admin, tmp_path):
    alice, bob = Client(smbd), Client(smbd, BOB, BOBPW)
    try:
        (tmp_path / "share" / "d").mkdir()
        alice.open("d\\x.txt")
        bob.open("y.txt")
        share = str((tmp_path / "share").resolve()).replace("/", "\\")
        under_d = admin.files(base=f"C:{share}\\D")  # a prefix, case-insensitive
        assert [_s(e["fi3_path_name"]) for e in under_d] == [f"C:{share}\\d\\x.txt"]
        assert {_s(e["fi3_path_name"]) for e in admin.files(user=BOB)} == {f"C:{share}\\y.txt"}
        by_client = admin.files(user="\\\\127.0.0.1")
        assert len(by_client) == len(admin.files())  # every session comes from 127.0.0.1
        assert not admin.files(user="\\\\no-such-client") and not admin.files(user="nobody")
    finally:
        alice.close()
        bob.close()


def test_file_enum_pages_with_resume_handle(smbd, admin):
    c = Client(smbd)
    try:
        for i in range(6):
            c.open(f"f{i}.txt")
        everything = [e["fi2_id"] for e in admin.files(2)]
        assert len(everything) >= 7
        seen, resume = [], 0
        for _ in range(20):
            stub = marshal([(SRVSVC_HANDLE, None), (LPWSTR, None), (LPWSTR, None),
                            (FILE_ENUM_STRUCT, {"Level": 2, "FileInfo": (2, {"EntriesRead": 0, "Buffer": None})}),
                            (DWORD, 8), (PDWORD, resume)])
            info, total, resume, status = unmarshal([FILE_ENUM_STRUCT, DWORD, PDWORD, DWORD], admin.raw(9, stub))
            page = [e["fi2_id"] for e in info["FileInfo"][1]["Buffer"] or []]
            assert page and total == len(everything) - len(seen)
            seen += page
            if status == win32.NERR_Success:
                assert resume == 0
                break
            assert status == win32.ERROR_MORE_DATA
        assert seen == everything
    finally:
        c.close()


def test_file_get_info_and_close_end_the_clients_open(smbd, admin):
    c = Client(smbd)
    try:
        o = c.open("victim.txt")
        o.write(b"data", 0)
        (entry,) = [e for e in admin.files() if _s(e["fi3_path_name"]).endswith("\\victim.txt")]
        fid = entry["fi3_id"]
        r = srvs.hNetrFileGetInfo(admin.dce, fid, 3)
        assert r["InfoStruct"]["FileInfo3"]["fi3_id"] == fid
        assert _s(r["InfoStruct"]["FileInfo3"]["fi3_path_name"]) == _s(entry["fi3_path_name"])
        srvs.hNetrFileClose(admin.dce, fid)
        with pytest.raises(SMBResponseException) as e:
            o.read(0, 4)
        assert e.value.status == STATUS_FILE_CLOSED
        assert not [x for x in admin.files() if x["fi3_id"] == fid]
        # gone: both calls answer NERR_FileIdNotFound
        for call in (lambda: srvs.hNetrFileClose(admin.dce, fid), lambda: srvs.hNetrFileGetInfo(admin.dce, fid, 3)):
            with pytest.raises(DCERPCException) as e:
                call()
            assert _code(e.value) == win32.NERR_FileIdNotFound
        # the rest of the session goes on: a new open works
        c.open("victim.txt").read(0, 4)
    finally:
        c.close()


def test_file_get_info_other_level_is_error_invalid_level(admin):
    status = unmarshal([FILE_INFO_UNION, DWORD],
                       admin.raw(10, marshal([(SRVSVC_HANDLE, None), (DWORD, 1), (DWORD, 1)])))[-1]
    assert status == win32.ERROR_INVALID_LEVEL


def test_connection_enum_by_share_and_by_client(smbd, admin):
    c = Client(smbd)
    try:
        c.open("c.txt")
        r = srvs.hNetrConnectionEnum(admin.dce, _z("share"), 1)
        (conn,) = r["InfoStruct"]["ConnectInfo"]["Level1"]["Buffer"]
        assert conn["coni1_type"] == STYPE_DISKTREE and conn["coni1_num_opens"] == 1
        assert conn["coni1_num_users"] == 1 and _s(conn["coni1_username"]) == USER
        assert _s(conn["coni1_netname"]) == "127.0.0.1"  # the other side of a share qualifier
        r = srvs.hNetrConnectionEnum(admin.dce, _z("\\\\127.0.0.1"), 1)
        trees = r["InfoStruct"]["ConnectInfo"]["Level1"]["Buffer"]
        kinds = {(_s(t["coni1_netname"]), t["coni1_type"]) for t in trees}
        assert ("share", STYPE_DISKTREE) in kinds and ("IPC$", STYPE_IPC | STYPE_SPECIAL) in kinds
        r0 = srvs.hNetrConnectionEnum(admin.dce, _z("\\\\127.0.0.1"), 0)
        assert sorted(t["coni0_id"] for t in r0["InfoStruct"]["ConnectInfo"]["Level0"]["Buffer"]) == \
            sorted(t["coni1_id"] for t in trees)
        for qualifier, code in (("nosuchshare", win32.NERR_NetNameNotFound),
                                ("\\\\no-such-client", win32.NERR_ClientNameNotFound)):
            with pytest.raises(DCERPCException) as e:
                srvs.hNetrConnectionEnum(admin.dce, _z(qualifier), 1)
            assert _code(e.value) == code
        stub = marshal([(SRVSVC_HANDLE, None), (LPWSTR, None),
                        (CONNECT_ENUM_STRUCT, {"Level": 1, "ConnectInfo": (1, {"EntriesRead": 0, "Buffer": None})}),
                        (DWORD, MAX), (PDWORD, 0)])
        status = unmarshal([CONNECT_ENUM_STRUCT, DWORD, PDWORD, DWORD], admin.raw(8, stub))[-1]
        assert status == win32.ERROR_INVALID_PARAMETER
    finally:
        c.close()


def test_session_del_closes_the_users_sessions_and_their_opens(smbd, admin, tmp_path):
    bob = RawClient("127.0.0.1", smbd.port)
    try:
        bob.negotiate(dialects=(0x0311,))
        assert bob.session_setup(BOB, BOBPW).status == 0
        tid = bob.tree_connect("share").header.tree_id
        r = bob.request(Command.SMB2_CREATE, w.CreateRequest(
            requested_oplock_level=0, impersonation_level=2, desired_access=0x12019F, file_attributes=0x80,
            share_access=7, create_disposition=3, create_options=0x40, name="bob.txt".encode("utf-16-le")),
            tree_id=tid)
        assert r.status == 0
        assert [e for e in admin.files(user=BOB) if _s(e["fi3_path_name"]).endswith("\\bob.txt")]
        srvs.hNetrSessionDel(admin.dce, srvs.NULL, _z(BOB))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and smbd.call(
                lambda: any(s.user_name == BOB for s in smbd.server.global_session_table.values())):
            time.sleep(0.02)
        assert not smbd.call(lambda: [s for s in smbd.server.global_session_table.values() if s.user_name == BOB])
        assert bob.tree_connect("share").status == STATUS_USER_SESSION_DELETED  # 3.3.5.2.9: no such session
        # its open was closed (MS-SMB2 3.3.4.12 closes every open of the session)
        assert not admin.files(user=BOB)
        assert (tmp_path / "share" / "bob.txt").exists()
        assert admin.files()  # the administrator's own session is untouched
        for client, user, code in ((srvs.NULL, "nobody", win32.NERR_UserNotFound),
                                   ("\\\\no-such-client", srvs.NULL, win32.NERR_ClientNameNotFound),
                                   ("127.0.0.1", srvs.NULL, win32.NERR_InvalidComputer),
                                   (srvs.NULL, srvs.NULL, win32.ERROR_INVALID_PARAMETER)):
            with pytest.raises(DCERPCException) as e:
                srvs.hNetrSessionDel(admin.dce, _z(client), _z(user))
            assert _code(e.value) == code
    finally:
        bob.close()


def test_only_administrators_may_list_close_or_delete(smbd, admin):
    c = Client(smbd)
    plain = Admin(smbd, BOB, BOBPW)
    try:
        c.open("z.txt")
        fid = admin.files()[0]["fi3_id"]
        for call in (lambda: srvs.hNetrFileEnum(plain.dce, srvs.NULL, srvs.NULL, 3),
                     lambda: srvs.hNetrFileGetInfo(plain.dce, fid, 3),
                     lambda: srvs.hNetrFileClose(plain.dce, fid),
                     lambda: srvs.hNetrConnectionEnum(plain.dce, _z("share"), 1),
                     lambda: srvs.hNetrSessionDel(plain.dce, srvs.NULL, _z(USER))):
            with pytest.raises(DCERPCException) as e:
                call()
            assert _code(e.value) == win32.ERROR_ACCESS_DENIED
        assert any(x["fi3_id"] == fid for x in admin.files())  # nothing was closed
    finally:
        plain.close()
        c.close()
