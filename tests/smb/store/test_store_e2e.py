"""End to end: smbprotocol's low-level API against wsd-smbd on loopback (the
``wsd_smbd`` fixture of tests/smb/conftest.py runs the server from this tree).

Replies are decoded with smbprotocol's own structures, and effects are checked on the
share's directory on disk.  Each test works in its own sub-directory of the share.
"""
from __future__ import annotations

import os
import threading
import time
import uuid

import pytest

smbprotocol = pytest.importorskip("smbprotocol")
from smbprotocol.connection import Connection  # noqa: E402
from smbprotocol.exceptions import SMBResponseException  # noqa: E402
from smbprotocol.file_info import (  # noqa: E402
    FileEndOfFileInformation,
    FileInformationClass,
    FileRenameInformation,
    FileStandardInformation,
    InfoType,
)
from smbprotocol.open import (  # noqa: E402
    CreateDisposition,
    CreateOptions,
    DirectoryAccessMask,
    FileAttributes,
    FilePipePrinterAccessMask,
    ImpersonationLevel,
    LockFlags,
    Open,
    ShareAccess,
    SMB2LockElement,
    SMB2QueryInfoRequest,
    SMB2QueryInfoResponse,
    SMB2SetInfoRequest,
)
from smbprotocol.session import Session  # noqa: E402
from smbprotocol.tree import TreeConnect  # noqa: E402

STATUS_OBJECT_NAME_COLLISION = 0xC0000035
STATUS_OBJECT_NAME_NOT_FOUND = 0xC0000034
STATUS_SHARING_VIOLATION = 0xC0000043
STATUS_DELETE_PENDING = 0xC0000056
STATUS_LOCK_NOT_GRANTED = 0xC0000055
STATUS_FILE_LOCK_CONFLICT = 0xC0000054
STATUS_NO_MORE_FILES = 0x80000006
STATUS_NO_SUCH_FILE = 0xC000000F
STATUS_ACCESS_DENIED = 0xC0000022
ALL = ShareAccess.FILE_SHARE_READ | ShareAccess.FILE_SHARE_WRITE | ShareAccess.FILE_SHARE_DELETE
RW = FilePipePrinterAccessMask.GENERIC_READ | FilePipePrinterAccessMask.GENERIC_WRITE | \
    FilePipePrinterAccessMask.DELETE


class Client:
    def __init__(self, srv):
        self.conn = Connection(uuid.uuid4(), srv.host, srv.port, require_signing=True)
        self.conn.connect(timeout=30)
        self.session = Session(self.conn, srv.user, srv.password)
        self.session.connect()
        self.tree = TreeConnect(self.session, rf"\\{srv.host}\{srv.share}")
        self.tree.connect()

    def open(self, name, access=RW, share=ALL, disposition=CreateDisposition.FILE_OPEN_IF, options=0,
             attributes=FileAttributes.FILE_ATTRIBUTE_NORMAL):
        o = Open(self.tree, name)
        o.create(ImpersonationLevel.Impersonation, access, attributes, share, disposition, options)
        return o

    def query(self, o, klass, out_cls, max_len=4096):
        req = SMB2QueryInfoRequest()
        req["info_type"] = InfoType.SMB2_0_INFO_FILE
        req["file_info_class"] = klass
        req["output_buffer_length"] = max_len
        req["file_id"] = o.file_id
        r = self.conn.send(req, self.session.session_id, self.tree.tree_connect_id)
        resp = SMB2QueryInfoResponse()
        resp.unpack(self.conn.receive(r)["data"].get_value())
        out = out_cls()
        out.unpack(resp["buffer"].get_value())
        return out

    def set(self, o, klass, info):
        req = SMB2SetInfoRequest()
        req["info_type"] = InfoType.SMB2_0_INFO_FILE
        req["file_info_class"] = klass
        req["file_id"] = o.file_id
        req["buffer"] = info
        r = self.conn.send(req, self.session.session_id, self.tree.tree_connect_id)
        self.conn.receive(r)

    def close(self):
        self.conn.disconnect(True)


def status(fn, *a, **kw) -> int:
    try:
        fn(*a, **kw)
    except SMBResponseException as e:
        return e.status
    raise AssertionError("request succeeded")


@pytest.fixture
def env(wsd_smbd):
    base = f"b{uuid.uuid4().hex[:8]}"
    (wsd_smbd.share_path / base).mkdir(parents=True)
    c = Client(wsd_smbd)
    yield c, base, wsd_smbd.share_path / base
    c.close()


def test_dispositions_and_create_actions(env):
    c, base, disk = env
    f = c.open(rf"{base}\f.txt", disposition=CreateDisposition.FILE_CREATE)
    assert f.create_action == 2  # FILE_CREATED
    f.write(b"hello", 0)
    f.close()
    assert (disk / "f.txt").read_bytes() == b"hello"
    assert status(c.open, rf"{base}\f.txt", disposition=CreateDisposition.FILE_CREATE) \
        == STATUS_OBJECT_NAME_COLLISION
    assert status(c.open, rf"{base}\nope", disposition=CreateDisposition.FILE_OPEN) \
        == STATUS_OBJECT_NAME_NOT_FOUND
    f = c.open(rf"{base}\f.txt", disposition=CreateDisposition.FILE_OPEN)
    assert f.create_action == 1 and f.end_of_file == 5
    f.close()
    f = c.open(rf"{base}\f.txt", disposition=CreateDisposition.FILE_OVERWRITE_IF)
    assert f.create_action == 3 and f.end_of_file == 0
    f.close()
    assert (disk / "f.txt").read_bytes() == b""
    d = c.open(rf"{base}\sub", access=DirectoryAccessMask.GENERIC_ALL,
               disposition=CreateDisposition.FILE_CREATE, options=CreateOptions.FILE_DIRECTORY_FILE)
    assert d.create_action == 2 and (disk / "sub").is_dir()
    d.close()


def test_share_modes(env):
    c, base, disk = env
    a = c.open(rf"{base}\s", access=FilePipePrinterAccessMask.FILE_READ_DATA, share=ShareAccess.FILE_SHARE_READ)
    assert status(c.open, rf"{base}\s", access=FilePipePrinterAccessMask.FILE_WRITE_DATA) \
        == STATUS_SHARING_VIOLATION
    b = c.open(rf"{base}\s", access=FilePipePrinterAccessMask.FILE_READ_DATA, share=ALL)
    b.close()
    a.close()
    c.open(rf"{base}\s", access=FilePipePrinterAccessMask.FILE_WRITE_DATA).close()


def test_delete_on_close_and_disposition(env):
    c, base, disk = env
    f = c.open(rf"{base}\doc", options=CreateOptions.FILE_DELETE_ON_CLOSE)
    f.write(b"x", 0)
    assert (disk / "doc").exists()
    f.close()
    assert not (disk / "doc").exists()
    # FileDispositionInformation: pending delete refuses new opens, unlink at last close
    g = c.open(rf"{base}\g")
    c.set(g, FileInformationClass.FILE_DISPOSITION_INFORMATION, b"\x01")
    assert status(c.open, rf"{base}\g") == STATUS_DELETE_PENDING
    std = c.query(g, FileInformationClass.FILE_STANDARD_INFORMATION, FileStandardInformation)
    assert std["delete_pending"].get_value()
    g.close()
    assert not (disk / "g").exists()


def test_query_directory_patterns_and_buffer_limits(env):
    c, base, disk = env
    names = [f"file{i:03d}.txt" for i in range(40)] + ["other.dat"]
    for n in names:
        (disk / n).write_bytes(b"z" * 3)
    d = c.open(base, access=DirectoryAccessMask.FILE_LIST_DIRECTORY | DirectoryAccessMask.FILE_READ_ATTRIBUTES,
               disposition=CreateDisposition.FILE_OPEN, options=CreateOptions.FILE_DIRECTORY_FILE)
    seen = []
    for _ in range(100):  # small buffers: entries carry over to the next call
        try:
            entries = d.query_directory("*.txt", FileInformationClass.FILE_ID_BOTH_DIRECTORY_INFORMATION,
                                        max_output=300)
        except SMBResponseException as e:
            assert e.status == STATUS_NO_MORE_FILES
            break
        assert 0 < len(entries) <= 3
        for e in entries:
            seen.append(e["file_name"].get_value().decode("utf-16-le"))
            assert e["end_of_file"].get_value() == 3
    assert seen == sorted(n for n in names if n.endswith(".txt"))
    assert status(d.query_directory, "*.xls", FileInformationClass.FILE_NAMES_INFORMATION, flags=0x10) \
        == STATUS_NO_SUCH_FILE
    one = d.query_directory("OTHER.*", FileInformationClass.FILE_DIRECTORY_INFORMATION, flags=0x01)
    assert [e["file_name"].get_value().decode("utf-16-le") for e in one] == ["other.dat"]
    d.close()


def _lock(o, offset, length, flags, wait=True):
    el = SMB2LockElement()
    el["offset"] = offset
    el["length"] = length
    el["flags"] = flags
    return o.lock([el], wait=wait)


def test_byte_range_locks_and_blocking_wait(wsd_smbd, env):
    c, base, disk = env
    a = c.open(rf"{base}\lk")
    a.write(b"0123456789" * 10, 0)
    b = c.open(rf"{base}\lk")
    X, FI, U = LockFlags.SMB2_LOCKFLAG_EXCLUSIVE_LOCK, LockFlags.SMB2_LOCKFLAG_FAIL_IMMEDIATELY, \
        LockFlags.SMB2_LOCKFLAG_UNLOCK
    _lock(a, 0, 10, X | FI)
    assert status(_lock, b, 5, 10, X | FI) == STATUS_LOCK_NOT_GRANTED
    assert status(b.read, 0, 5) == STATUS_FILE_LOCK_CONFLICT
    assert a.read(0, 5) == b"01234"
    # a blocking lock from a second connection waits (STATUS_PENDING) until a unlocks
    c2 = Client(wsd_smbd)
    try:
        b2 = c2.open(rf"{base}\lk")
        done = []
        t = threading.Thread(target=lambda: done.append(_lock(b2, 0, 10, X)))
        t.start()
        time.sleep(0.5)
        assert not done  # still waiting
        _lock(a, 0, 10, U)
        t.join(20)
        assert done, "blocking lock was not granted after the unlock"
        assert status(_lock, a, 0, 1, X | FI) == STATUS_LOCK_NOT_GRANTED
        b2.close()  # closing releases b2's lock
        _lock(a, 0, 1, X | FI)
    finally:
        c2.close()
    a.close()
    b.close()


def test_query_and_set_info(env):
    c, base, disk = env
    f = c.open(rf"{base}\info.bin")
    f.write(b"a" * 100, 0)
    eof = FileEndOfFileInformation()
    eof["end_of_file"] = 10
    c.set(f, FileInformationClass.FILE_END_OF_FILE_INFORMATION, eof)
    std = c.query(f, FileInformationClass.FILE_STANDARD_INFORMATION, FileStandardInformation)
    assert std["end_of_file"].get_value() == 10 and not std["directory"].get_value()
    assert os.path.getsize(disk / "info.bin") == 10
    ren = FileRenameInformation()
    ren["replace_if_exists"] = False
    ren["file_name"] = rf"{base}\renamed.bin".encode("utf-16-le")
    c.set(f, FileInformationClass.FILE_RENAME_INFORMATION, ren)
    assert sorted(os.listdir(disk)) == ["renamed.bin"]
    f.close()


def test_escape_attempts_are_refused(env, wsd_smbd):
    c, base, disk = env
    outside = wsd_smbd.share_path.parent / f"outside-{base}"
    outside.write_text("secret")
    try:
        os.symlink(str(outside), disk / "escape")
        assert status(c.open, rf"{base}\escape", disposition=CreateDisposition.FILE_OPEN) == STATUS_ACCESS_DENIED
        assert status(c.open, rf"{base}\..\..\outside-{base}", disposition=CreateDisposition.FILE_OPEN) \
            == 0xC000003B  # STATUS_OBJECT_PATH_SYNTAX_BAD (as Samba)
        assert status(c.open, rf"..\outside-{base}", disposition=CreateDisposition.FILE_OPEN) == 0xC000003B
        assert status(c.open, rf"{base}\..\..\new-{base}", disposition=CreateDisposition.FILE_CREATE) \
            == 0xC000003B
        assert not (wsd_smbd.share_path.parent / f"new-{base}").exists()
        assert outside.read_text() == "secret"
        # ".." that stays inside the share names the parent (smb2.notify.tree opens "dir\sub\..")
        (disk / "sub").mkdir()
        (disk / "f").write_bytes(b"in base")
        d = c.open(rf"{base}\sub\..", access=DirectoryAccessMask.FILE_LIST_DIRECTORY,
                   disposition=CreateDisposition.FILE_OPEN, options=CreateOptions.FILE_DIRECTORY_FILE)
        d.close()
        f = c.open(rf"{base}\sub\..\f", disposition=CreateDisposition.FILE_OPEN)
        assert f.read(0, 7) == b"in base"
        f.close()
    finally:
        outside.unlink()


# ------------------------------------------------------------------ handler-level behaviour
def _ioctl(c, o, code, max_out=1024):
    from smbprotocol.ioctl import IOCTLFlags, SMB2IOCTLRequest

    req = SMB2IOCTLRequest()
    req["ctl_code"] = code
    req["file_id"] = o.file_id
    req["max_input_response"] = 0
    req["max_output_response"] = max_out
    req["flags"] = IOCTLFlags.SMB2_0_IOCTL_IS_FSCTL
    req["buffer"] = b""
    r = c.conn.send(req, c.session.session_id, c.tree.tree_connect_id)
    return c.conn.receive(r)


def test_sparse_fsctls_through_smbprotocol(env):
    """FSCTL_SET_SPARSE, FSCTL_QUERY_ALLOCATED_RANGES and FSCTL_SET_ZERO_DATA sent by
    smbprotocol (a third-party client), checked on disk."""
    import struct

    from smbprotocol.ioctl import CtlCode, IOCTLFlags, SMB2IOCTLRequest, SMB2IOCTLResponse

    def fsctl(o, code, buf, max_out=0):
        req = SMB2IOCTLRequest()
        req["ctl_code"] = code
        req["file_id"] = o.file_id
        req["max_input_response"] = 0
        req["max_output_response"] = max_out
        req["flags"] = IOCTLFlags.SMB2_0_IOCTL_IS_FSCTL
        req["buffer"] = buf
        r = c.conn.receive(c.conn.send(req, c.session.session_id, c.tree.tree_connect_id))
        rsp = SMB2IOCTLResponse()
        rsp.unpack(r["data"].get_value())
        return rsp["buffer"].get_value()

    c, base, disk = env
    f = c.open(rf"{base}\sp.bin", disposition=CreateDisposition.FILE_OVERWRITE_IF)
    fsctl(f, CtlCode.FSCTL_SET_SPARSE, b"\x01")
    far = 1 << 31
    f.write(b"tail", far)
    f.write(b"h" * 4096, 8192)
    size = far + 4
    out = fsctl(f, CtlCode.FSCTL_QUERY_ALLOCATED_RANGES, struct.pack("<qq", 0, size), 1024)
    assert [struct.unpack_from("<qq", out, i) for i in range(0, len(out), 16)] == [(8192, 4096), (far, 4)]
    fsctl(f, CtlCode.FSCTL_SET_ZERO_DATA, struct.pack("<qq", 8192, 8192 + 4096))
    assert f.read(8192, 4096) == bytes(4096)
    out = fsctl(f, CtlCode.FSCTL_QUERY_ALLOCATED_RANGES, struct.pack("<qq", 0, size), 1024)
    assert out == struct.pack("<qq", far, 4)
    assert os.path.getsize(disk / "sp.bin") == size and os.stat(disk / "sp.bin").st_blocks * 512 < 1 << 20
    f.close()


def test_ioctl_answers(env):
    c, base, disk = env
    f = c.open(rf"{base}\io")
    assert status(_ioctl, c, f, 0x000900A8) == 0xC0000275  # GET_REPARSE_POINT: STATUS_NOT_A_REPARSE_POINT
    assert status(_ioctl, c, f, 0x000900A4) == 0xC0000010  # SET_REPARSE_POINT: STATUS_INVALID_DEVICE_REQUEST
    # QUERY_ALLOCATED_RANGES without its FILE_ALLOCATED_RANGE_BUFFER: STATUS_INVALID_PARAMETER
    assert status(_ioctl, c, f, 0x000940CF) == 0xC000000D
    assert status(_ioctl, c, f, 0x00098208) == 0xC00000BB  # FILE_LEVEL_TRIM: STATUS_NOT_SUPPORTED
    f.close()


def test_close_postquery_and_maximal_access(env):
    from smbprotocol.create_contexts import (
        CreateContextName,
        SMB2CreateContextRequest,
        SMB2CreateQueryMaximalAccessRequest,
    )

    c, base, disk = env
    ctx = SMB2CreateContextRequest()
    ctx["buffer_name"] = CreateContextName.SMB2_CREATE_QUERY_MAXIMAL_ACCESS_REQUEST
    ctx["buffer_data"] = SMB2CreateQueryMaximalAccessRequest()
    o = Open(c.tree, rf"{base}\pq")
    resp = o.create(ImpersonationLevel.Impersonation, RW, FileAttributes.FILE_ATTRIBUTE_NORMAL, ALL,
                    CreateDisposition.FILE_OPEN_IF, 0, create_contexts=[ctx])
    mxac = [r for r in resp if r["query_status"].get_value() == 0] if resp else []
    assert mxac and mxac[0]["maximal_access"].get_value() == 0x001F01FF
    o.write(b"x" * 1234, 0)
    o.close(get_attributes=True)
    assert o.end_of_file == 1234 and o.file_attributes & FileAttributes.FILE_ATTRIBUTE_ARCHIVE


def test_tree_disconnect_closes_opens_and_bad_share(wsd_smbd, env):
    c, base, disk = env
    t2 = TreeConnect(c.session, rf"\\{wsd_smbd.host}\{wsd_smbd.share}")
    t2.connect()
    o = Open(t2, rf"{base}\held")
    o.create(ImpersonationLevel.Impersonation, RW, FileAttributes.FILE_ATTRIBUTE_NORMAL, 0,
             CreateDisposition.FILE_OPEN_IF, 0)
    assert status(c.open, rf"{base}\held") == STATUS_SHARING_VIOLATION
    t2.disconnect()  # closes the tree's opens
    c.session.open_table.pop(o.file_id, None)  # (the client does not know that)
    c.open(rf"{base}\held").close()
    bad = TreeConnect(c.session, rf"\\{wsd_smbd.host}\no-such-share")
    assert status(bad.connect) == 0xC00000CC  # STATUS_BAD_NETWORK_NAME


def test_concurrent_clients(wsd_smbd, env):
    """Four connections at once, each creating/writing/reading/renaming/deleting its own
    files and taking turns on one shared lock range; bounded loop, no errors, nothing left."""
    c, base, disk = env
    errors = []
    X, U = LockFlags.SMB2_LOCKFLAG_EXCLUSIVE_LOCK, LockFlags.SMB2_LOCKFLAG_UNLOCK
    c.open(rf"{base}\shared").close()

    def worker(i):
        try:
            w = Client(wsd_smbd)
            try:
                sh = w.open(rf"{base}\shared")
                for j in range(15):
                    name = rf"{base}\w{i}-{j}"
                    f = w.open(name, disposition=CreateDisposition.FILE_CREATE)
                    payload = os.urandom(3000 + j)
                    f.write(payload, 0)
                    assert f.read(0, len(payload)) == payload
                    f.close()
                    g = w.open(name, disposition=CreateDisposition.FILE_OPEN)
                    ren = FileRenameInformation()
                    ren["replace_if_exists"] = False
                    ren["file_name"] = (name + ".r").encode("utf-16-le")
                    w.set(g, FileInformationClass.FILE_RENAME_INFORMATION, ren)
                    w.set(g, FileInformationClass.FILE_DISPOSITION_INFORMATION, b"\x01")
                    g.close()
                    _lock(sh, 0, 1, X)          # blocking: waits for the others
                    _lock(sh, 0, 1, U)
                sh.close()
            finally:
                w.close()
        except Exception as e:  # noqa: BLE001 - collected and asserted below
            errors.append(repr(e))

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    assert not errors
    assert sorted(os.listdir(disk)) == ["shared"]


def test_rename_rules_for_the_open_parent_directory(env):
    """smbtorture smb2.notify.mask-change/rec and smb2.rename.*: the directory holding the
    target name is what a rename checks (as if opened for FILE_ADD_FILE sharing read and
    write), not the source's directory."""
    c, base, disk = env
    sub = c.open(rf"{base}\sub", access=DirectoryAccessMask.FILE_LIST_DIRECTORY,
                 disposition=CreateDisposition.FILE_CREATE, options=CreateOptions.FILE_DIRECTORY_FILE)
    sub.close()
    data_access = (DirectoryAccessMask.FILE_LIST_DIRECTORY | DirectoryAccessMask.FILE_ADD_FILE
                   | DirectoryAccessMask.FILE_ADD_SUBDIRECTORY | DirectoryAccessMask.FILE_TRAVERSE
                   | DirectoryAccessMask.FILE_READ_ATTRIBUTES)
    # the test's parent handle: all file rights, sharing read and write but not delete
    parent = c.open(base, access=data_access, share=ShareAccess.FILE_SHARE_READ | ShareAccess.FILE_SHARE_WRITE,
                    disposition=CreateDisposition.FILE_OPEN, options=CreateOptions.FILE_DIRECTORY_FILE)

    def rename(o, new):
        ren = FileRenameInformation()
        ren["replace_if_exists"] = True
        ren["file_name"] = new.encode("utf-16-le")
        c.set(o, FileInformationClass.FILE_RENAME_INFORMATION, ren)

    f = c.open(rf"{base}\sub\name2", disposition=CreateDisposition.FILE_CREATE)
    rename(f, rf"{base}\name2-r")  # out of the subdirectory into the open parent
    rename(f, rf"{base}\name3-r")  # within the open parent
    assert sorted(os.listdir(disk)) == ["name3-r", "sub"]
    parent.close()
    # the parent open with DELETE access: a sharing violation (smb2.oplock.exclusive6)
    parent = c.open(base, access=data_access | DirectoryAccessMask.DELETE, share=ALL,
                    disposition=CreateDisposition.FILE_OPEN, options=CreateOptions.FILE_DIRECTORY_FILE)
    assert status(rename, f, rf"{base}\name4-r") == STATUS_SHARING_VIOLATION
    rename(f, rf"{base}\sub\name4-r")  # the source's directory takes no part
    assert os.listdir(disk / "sub") == ["name4-r"]
    parent.close()
    # sharing nothing: refused with data access, allowed with attribute access only (smb2.rename.msword)
    parent = c.open(base, access=data_access, share=0, disposition=CreateDisposition.FILE_OPEN,
                    options=CreateOptions.FILE_DIRECTORY_FILE)
    assert status(rename, f, rf"{base}\name5-r") == STATUS_SHARING_VIOLATION
    parent.close()
    parent = c.open(base, access=DirectoryAccessMask.FILE_READ_ATTRIBUTES | DirectoryAccessMask.SYNCHRONIZE,
                    share=0, disposition=CreateDisposition.FILE_OPEN, options=CreateOptions.FILE_DIRECTORY_FILE)
    rename(f, rf"{base}\name5-r")
    assert sorted(os.listdir(disk)) == ["name5-r", "sub"]
    parent.close()
    f.close()
