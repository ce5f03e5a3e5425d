"""Directory leases (SMB 3.x): SMB2_GLOBAL_CAP_DIRECTORY_LEASING in NEGOTIATE, R / RH
granted on directories (never W), and the breaks of a directory's lease when its
contents change through another open (MS-SMB2 3.3.4.7, MS-FSA 2.1.4.12 with
PARENT_OBJECT, 2.1.4.12.2): create, delete, rename out of it, the close of a written
child -- not for the client whose child open carries the directory's LeaseKey as its
ParentLeaseKey.  Real server on 127.0.0.1, raw SMB2 client; plus the sans-IO index of
leased directories (core/leases.py LeaseManager.dir_leases)."""
from __future__ import annotations

import os
import struct
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from smbunit import PASSWORD, USER  # noqa: E402
from rawclient import RawClient  # noqa: E402
from test_oplocks import close, nothing_arrives, recv_one  # noqa: E402

from wsd_smb.core.leases import LeaseManager  # noqa: E402
from wsd_smb.core.oplocks import OplockManager  # noqa: E402
from wsd_smb.core.state import Server, ServerConfig  # noqa: E402
from wsd_smb.store import ObjectStore, Share  # noqa: E402
from wsd_smb.wire import commands as w  # noqa: E402
from wsd_smb.wire import contexts as cx  # noqa: E402
from wsd_smb.wire.base import FileId  # noqa: E402
from wsd_smb.wire.header import Command  # noqa: E402

R, H, W = 0x01, 0x02, 0x04
ACK_REQUIRED = 0x01
PARENT_LEASE_KEY_SET = 0x04
CAP_LEASING, CAP_DIRECTORY_LEASING = 0x02, 0x20
STATUS_PENDING, STATUS_SHARING_VIOLATION = 0x00000103, 0xC0000043
DIR_ACCESS = 0x00120089 | 0x00010000  # FILE_GENERIC_READ on a directory, DELETE
FILE_DIRECTORY_FILE, FILE_NON_DIRECTORY_FILE, FILE_DELETE_ON_CLOSE = 0x01, 0x40, 0x1000


#: the client's NEGOTIATE Capabilities: LEASING | DIRECTORY_LEASING | LARGE_MTU | ENCRYPTION
CLIENT_CAPS = 0x02 | 0x20 | 0x04 | 0x40


def client(smbd, dialects=(0x0210, 0x0300, 0x0302, 0x0311), capabilities=CLIENT_CAPS):
    c = RawClient(smbd.host, smbd.port)
    assert c.negotiate(dialects=dialects, capabilities=capabilities).status == 0
    assert c.session_setup(USER, PASSWORD).status == 0
    r = c.tree_connect("share")
    assert r.status == 0
    return c, r.header.tree_id


def lease_ctx(key: bytes, state: int, parent: bytes | None = None, version: int = 2) -> bytes:
    if version == 1:
        data = cx.LeaseRequest(lease_key=key, lease_state=state, lease_flags=0).pack(0)
    else:
        data = cx.LeaseRequestV2(lease_key=key, lease_state=state,
                                 flags=PARENT_LEASE_KEY_SET if parent else 0,
                                 parent_lease_key=parent or b"\0" * 16, epoch=0).pack(0)
    return w.pack_create_contexts([w.CreateContext(name=b"RqLs", data=data)])


def create_req(name: str, *, directory: bool, lease: bytes = b"", access: int | None = None, share: int = 7,
               disposition: int = 3, options: int = 0) -> w.CreateRequest:
    return w.CreateRequest(
        requested_oplock_level=0xFF if lease else 0, impersonation_level=2,
        desired_access=access if access is not None else (DIR_ACCESS if directory else 0x0012019F),
        file_attributes=0x10 if directory else 0x80, share_access=share, create_disposition=disposition,
        create_options=options | (FILE_DIRECTORY_FILE if directory else FILE_NON_DIRECTORY_FILE),
        name=name.encode("utf-16-le"), create_contexts=lease)


#: lease break notifications that came in on a connection while it waited for a response
_pending_breaks: dict = {}


def request(c, tid, command, body):
    """Send one request and return its response; lease break notifications arriving
    first are kept for :func:`lease_break`."""
    c.send_raw(c.compound([c.build(command, body.pack(), tree_id=tid)]))
    for _ in range(10):
        r = recv_one(c)
        if r.header.command == Command.SMB2_OPLOCK_BREAK and r.header.message_id == 0xFFFFFFFFFFFFFFFF:
            _pending_breaks.setdefault(id(c), []).append(r)
            continue
        return r
    raise AssertionError("no response")


@pytest.fixture(autouse=True)
def _fresh_breaks():
    _pending_breaks.clear()
    yield
    _pending_breaks.clear()


def no_break(c, timeout: float = 0.5) -> bool:
    """No lease break notification for *c*, kept or arriving within *timeout*."""
    return not _pending_breaks.get(id(c)) and nothing_arrives(c, timeout)


def open_(c, tid, name, **kw):
    """CREATE; (status, response body or None, lease response or None)."""
    r = request(c, tid, Command.SMB2_CREATE, create_req(name, **kw))
    if r.status != 0:
        return r.status, None, None
    b = w.CreateResponse.unpack(r.raw)
    ls = None
    for x in (w.unpack_create_contexts(b.create_contexts) if b.create_contexts else []):
        if bytes(x.name) == b"RqLs":
            data = bytes(x.data)
            ls = cx.LeaseResponseV2.unpack(data, 0) if len(data) >= 52 else cx.LeaseResponse.unpack(data, 0)
    return 0, b, ls


def leased_dir(c, tid, name, key, state=R | H):
    st, b, ls = open_(c, tid, name, directory=True, lease=lease_ctx(key, state))
    assert st == 0 and b.oplock_level == 0xFF and ls.lease_state == state & (R | H)
    return b


def lease_break(c) -> w.LeaseBreakNotification:
    kept = _pending_breaks.get(id(c))
    r = kept.pop(0) if kept else recv_one(c)
    assert r.header.command == Command.SMB2_OPLOCK_BREAK and r.header.message_id == 0xFFFFFFFFFFFFFFFF
    return w.LeaseBreakNotification.unpack(r.raw)


def lease_ack(c, key, state) -> int:
    return c.request(Command.SMB2_OPLOCK_BREAK, w.LeaseBreakAcknowledgment(lease_key=key, lease_state=state)).status


def test_capability_and_grant(smbd):
    """3.x with the client's DIRECTORY_LEASING: offered; RWH -> RH, RW -> R, RH -> RH, R -> R on a directory
    (no W); 2.1: no capability and no lease on a directory (oplock level NONE)."""
    c, t = client(smbd)
    assert c.negotiate_response.capabilities & CAP_DIRECTORY_LEASING
    for asked, granted in ((R | W | H, R | H), (R | W, R), (R | H, R | H), (R, R)):
        key = os.urandom(16)
        st, b, ls = open_(c, t, "gdir", directory=True, lease=lease_ctx(key, asked))
        assert st == 0 and b.oplock_level == 0xFF
        assert bytes(ls.lease_key) == key and ls.lease_state == granted and ls.epoch == 1
        assert close(c, t, b.file_id) == 0
    c21, t21 = client(smbd, dialects=(0x0210,))
    assert c21.negotiate_response.capabilities & CAP_LEASING
    assert not c21.negotiate_response.capabilities & CAP_DIRECTORY_LEASING
    st, b, ls = open_(c21, t21, "gdir", directory=True, lease=lease_ctx(os.urandom(16), R | H, version=1))
    assert st == 0 and b.oplock_level == 0 and ls is None
    # a 3.x client that does not announce DIRECTORY_LEASING is not offered it (impacket
    # 0.13 fails every CREATE when it is) and gets no lease on a directory
    cn, tn = client(smbd, capabilities=0x44)
    assert cn.negotiate_response.capabilities & CAP_LEASING
    assert not cn.negotiate_response.capabilities & CAP_DIRECTORY_LEASING
    st, b, ls = open_(cn, tn, "gdir", directory=True, lease=lease_ctx(os.urandom(16), R | H))
    assert st == 0 and b.oplock_level == 0 and ls is None


def test_switched_off(smbd_factory):
    """[server] directory_leases = false: no capability, no lease on a directory, and the
    ParentLeaseKey of a file's lease is not kept (no PARENT_LEASE_KEY_SET)."""
    srv = smbd_factory(directory_leases=False)
    c, t = client(srv)
    assert c.negotiate_response.capabilities & CAP_LEASING
    assert not c.negotiate_response.capabilities & CAP_DIRECTORY_LEASING
    st, b, ls = open_(c, t, "offdir", directory=True, lease=lease_ctx(os.urandom(16), R | H))
    assert st == 0 and b.oplock_level == 0 and ls is None
    st, b, ls = open_(c, t, "offdir\\f.dat", directory=False, lease=lease_ctx(os.urandom(16), R | H, b"P" * 16))
    assert st == 0 and ls.lease_state == R | H and not ls.flags & PARENT_LEASE_KEY_SET
    assert bytes(ls.parent_lease_key) == b"\0" * 16


def test_parent_lease_key_echoed(smbd):
    """A file lease with ParentLeaseKey: the response carries it and PARENT_LEASE_KEY_SET
    (smbtorture smb2.lease.v2_request_parent)."""
    c, t = client(smbd)
    st, b, ls = open_(c, t, "pk.dat", directory=False, lease=lease_ctx(b"L" * 16, R | H | W, b"P" * 16))
    assert st == 0 and ls.lease_state == R | H | W
    assert ls.flags & PARENT_LEASE_KEY_SET and bytes(ls.parent_lease_key) == b"P" * 16


def test_child_create_breaks_other_client_and_ack(smbd):
    """Another client creates a file in the directory: RH -> NONE with ACK_REQUIRED, the
    CREATE completes at once (no STATUS_PENDING); the acknowledgment with NONE is taken
    (2.2.25.2); a second create finds nothing left to break."""
    c1, t1 = client(smbd)
    c2, t2 = client(smbd)
    key = os.urandom(16)
    leased_dir(c1, t1, "cdir", key)
    st, b, _ = open_(c2, t2, "cdir\\new.dat", directory=False)
    assert st == 0 and b.create_action == 2
    n = lease_break(c1)
    assert bytes(n.lease_key) == key and n.current_lease_state == R | H and n.new_lease_state == 0
    assert n.flags == ACK_REQUIRED and n.new_epoch == 2
    r = c1.request(Command.SMB2_OPLOCK_BREAK, w.LeaseBreakAcknowledgment(lease_key=key, lease_state=0))
    assert r.status == 0
    rsp = w.LeaseBreakResponse.unpack(r.raw)
    assert bytes(rsp.lease_key) == key and rsp.lease_state == 0
    st, _, _ = open_(c2, t2, "cdir\\new2.dat", directory=False)
    assert st == 0 and no_break(c1)


def test_read_only_directory_lease_break_needs_no_ack(smbd):
    """An R directory lease breaks to NONE with Flags 0 (LB-5); an acknowledgment then
    fails (no break in progress)."""
    c1, t1 = client(smbd)
    c2, t2 = client(smbd)
    key = os.urandom(16)
    leased_dir(c1, t1, "rdir", key, state=R)
    st, _, _ = open_(c2, t2, "rdir\\sub", directory=True)
    assert st == 0
    n = lease_break(c1)
    assert n.current_lease_state == R and n.new_lease_state == 0 and n.flags == 0
    assert lease_ack(c1, key, 0) != 0


def test_parent_lease_key_spares_own_lease(smbd):
    """A create in the directory by the lease's client whose child lease names the
    directory's LeaseKey as ParentLeaseKey breaks nothing; the same client without it
    does break (smbtorture smb2.lease.v2_request); another client's lease on the same
    directory is broken either way."""
    c1, t1 = client(smbd)
    c2, t2 = client(smbd)
    k1, k2 = os.urandom(16), os.urandom(16)
    leased_dir(c1, t1, "pdir", k1)
    leased_dir(c2, t2, "pdir", k2)
    st, _, ls = open_(c1, t1, "pdir\\mine.dat", directory=False, lease=lease_ctx(os.urandom(16), R | H | W, k1))
    assert st == 0 and ls.flags & PARENT_LEASE_KEY_SET and bytes(ls.parent_lease_key) == k1
    assert no_break(c1)
    n = lease_break(c2)
    assert bytes(n.lease_key) == k2 and n.new_lease_state == 0
    assert lease_ack(c2, k2, 0) == 0
    st, _, _ = open_(c1, t1, "pdir\\other.dat", directory=False, lease=lease_ctx(os.urandom(16), R | H | W))
    assert st == 0
    n = lease_break(c1)
    assert bytes(n.lease_key) == k1 and n.current_lease_state == R | H and n.new_lease_state == 0


def test_delete_and_rename_break(smbd):
    """Deleting a child (delete-on-close, at the close) and renaming a child out of the
    directory break the directory's lease; re-opening with the lease key upgrades it
    again (RH, next epoch)."""
    c1, t1 = client(smbd)
    c2, t2 = client(smbd)
    key = os.urandom(16)
    os.makedirs(Path(smbd.server.config.share("share").local_path) / "ddir")
    (Path(smbd.server.config.share("share").local_path) / "ddir" / "a.dat").write_bytes(b"a")
    (Path(smbd.server.config.share("share").local_path) / "ddir" / "b.dat").write_bytes(b"b")
    b = leased_dir(c1, t1, "ddir", key)
    st, fb, _ = open_(c2, t2, "ddir\\a.dat", directory=False, access=0x00110080, disposition=1,
                      options=FILE_DELETE_ON_CLOSE)
    assert st == 0 and no_break(c1, 0.3)  # nothing yet: the entry goes at the close
    assert close(c2, t2, fb.file_id) == 0
    n = lease_break(c1)
    assert bytes(n.lease_key) == key and n.new_lease_state == 0 and n.new_epoch == 2
    assert lease_ack(c1, key, 0) == 0
    # re-arm: another open with the same key takes RH again
    st, b2, ls = open_(c1, t1, "ddir", directory=True, lease=lease_ctx(key, R | H), disposition=1)
    assert st == 0 and ls.lease_state == R | H and ls.epoch == 3
    assert close(c1, t1, b2.file_id) == 0
    # rename b.dat out of the directory
    st, fb, _ = open_(c2, t2, "ddir\\b.dat", directory=False, access=0x00110080, disposition=1)
    assert st == 0
    new = "moved.dat".encode("utf-16-le")
    info = struct.pack("<B7sQI", 0, b"\0" * 7, 0, len(new)) + new
    r = c2.request(Command.SMB2_SET_INFO, w.SetInfoRequest(info_type=1, file_info_class=10, additional_information=0,
                                                           file_id=FileId(*fb.file_id), buffer=info), tree_id=t2)
    assert r.status == 0
    n = lease_break(c1)
    assert bytes(n.lease_key) == key and n.current_lease_state == R | H and n.new_lease_state == 0
    assert lease_ack(c1, key, 0) == 0
    assert close(c2, t2, fb.file_id) == 0
    assert close(c1, t1, b.file_id) == 0


def test_written_child_breaks_at_close_not_at_write(smbd):
    """A WRITE to a child breaks nothing; the close of the written child does (its size
    and times in the directory changed: smbtorture smb2.lease.v2_request)."""
    c1, t1 = client(smbd)
    c2, t2 = client(smbd)
    key = os.urandom(16)
    (Path(smbd.server.config.share("share").local_path) / "wdir").mkdir()
    (Path(smbd.server.config.share("share").local_path) / "wdir" / "w.dat").write_bytes(b"")
    leased_dir(c1, t1, "wdir", key)
    st, fb, _ = open_(c2, t2, "wdir\\w.dat", directory=False, disposition=1)
    assert st == 0
    r = c2.request(Command.SMB2_WRITE, w.WriteRequest(offset=0, file_id=FileId(*fb.file_id), data=b"x" * 100),
                   tree_id=t2)
    assert r.status == 0 and no_break(c1, 0.3)
    assert close(c2, t2, fb.file_id) == 0
    n = lease_break(c1)
    assert bytes(n.lease_key) == key and n.new_lease_state == 0


def test_sharing_violation_breaks_handle_caching(smbd):
    """An open of the leased directory that conflicts with its share mode: RH -> R
    (ACK_REQUIRED), the open waits for the acknowledgment, then fails with
    SHARING_VIOLATION; the lease keeps R."""
    c1, t1 = client(smbd)
    c2, t2 = client(smbd)
    key = os.urandom(16)
    leased_dir(c1, t1, "sdir", key)
    c2.send_raw(c2.compound([c2.build(Command.SMB2_CREATE, create_req("sdir", directory=True, share=0).pack(),
                                      tree_id=t2)]))
    assert recv_one(c2).status == STATUS_PENDING
    n = lease_break(c1)
    assert bytes(n.lease_key) == key and n.current_lease_state == R | H and n.new_lease_state == R
    assert n.flags == ACK_REQUIRED
    assert lease_ack(c1, key, R) == 0
    assert recv_one(c2).status == STATUS_SHARING_VIOLATION
    # the open of the directory as such (share mode compatible) breaks nothing
    st, b, _ = open_(c2, t2, "sdir", directory=True)
    assert st == 0 and no_break(c1, 0.3)


def test_dir_lease_index(tmp_path):
    """Sans-IO: a lease on a directory enters LeaseManager.dir_leases (keyed by the
    directory's file id) and leaves it with its last open; file leases never enter it,
    so child changes cost nothing while no directory is leased; break_parent finds
    the lease by the child's path (any case) and spares the ParentLeaseKey's lease."""
    server = Server(ServerConfig())
    store = ObjectStore()
    (tmp_path / "s" / "d").mkdir(parents=True)
    share = Share("s", str(tmp_path / "s"))
    oplocks = OplockManager(server, ObjectStore._share_conflict, lambda o: None)
    leases = LeaseManager(server, oplocks, lambda o: None, ObjectStore._share_conflict)

    def req(key, state, parent=None):
        return cx.LeaseRequestV2(lease_key=key, lease_state=state, flags=PARENT_LEASE_KEY_SET if parent else 0,
                                 parent_lease_key=parent or b"\0" * 16, epoch=0)

    f = store.create(share, "d\\f.dat", desired_access=0x0012019F, share_access=7, create_disposition=3).open
    lf, _ = leases.grant(f, req(b"F" * 16, R | H | W), 2, b"G" * 16, "d\\f.dat", directory_leasing=True)
    assert lf.lease_state == R | H | W and leases.dir_leases == {}
    assert leases.break_parent(share, ["d", "f.dat"], f, 1.0) == []
    d = store.create(share, "d", desired_access=DIR_ACCESS, share_access=7, create_disposition=1,
                     create_options=FILE_DIRECTORY_FILE).open
    assert leases.grant(d, req(b"D" * 16, R | H), 2, b"G" * 16, "d")[0] is None  # not 3.x / not offered
    d2 = store.create(share, "d", desired_access=DIR_ACCESS, share_access=7, create_disposition=1,
                      create_options=FILE_DIRECTORY_FILE).open
    ld, _ = leases.grant(d2, req(b"D" * 16, R | H | W), 2, b"G" * 16, "d", directory_leasing=True)
    assert ld.lease_state == R | H and leases.dir_leases == {d2.file.key: [ld]}
    child = store.create(share, "d\\c.dat", desired_access=0x0012019F, share_access=7, create_disposition=3).open
    leases.grant(child, req(b"C" * 16, R, parent=b"D" * 16), 2, b"G" * 16, "d\\c.dat", directory_leasing=True)
    assert leases.break_parent(share, ["D", "c.dat"], child, 1.0) == []  # its ParentLeaseKey: spared
    assert leases.break_parent(share, ["other", "c.dat"], None, 1.0) == []  # not this directory
    assert leases.break_parent(share, ["D", "x.dat"], f, 1.0) == [ld]  # no connection: LB-3
    store.close(d2)
    leases.open_closed(d2)
    assert leases.dir_leases == {}


def test_config_key(tmp_path):
    """`[server] directory_leases` in the TOML file; default true."""
    from wsd_smb.server.config import load

    assert load(None).server.directory_leases is True
    p = tmp_path / "c.toml"
    p.write_text("[server]\ndirectory_leases = false\n")
    assert load(str(p)).server.directory_leases is False


def test_change_during_break_follows_the_acknowledgment(smbd):
    """The directory changes while its lease breaks RH -> R (a share-mode conflict
    waiting for the acknowledgment): no second break meanwhile (3.3.4.7); once R is
    acknowledged, the lease is broken on to NONE (R only: no acknowledgment due)."""
    c1, t1 = client(smbd)
    c2, t2 = client(smbd)
    c3, t3 = client(smbd)
    key = os.urandom(16)
    leased_dir(c1, t1, "bdir", key)
    c2.send_raw(c2.compound([c2.build(Command.SMB2_CREATE, create_req("bdir", directory=True, share=0).pack(),
                                      tree_id=t2)]))
    assert recv_one(c2).status == STATUS_PENDING
    n = lease_break(c1)
    assert n.current_lease_state == R | H and n.new_lease_state == R and n.flags == ACK_REQUIRED
    st, _, _ = open_(c3, t3, "bdir\\during.dat", directory=False)
    assert st == 0 and no_break(c1, 0.3)
    r = request(c1, t1, Command.SMB2_OPLOCK_BREAK, w.LeaseBreakAcknowledgment(lease_key=key, lease_state=R))
    assert r.status == 0
    n = lease_break(c1)
    assert bytes(n.lease_key) == key and n.current_lease_state == R and n.new_lease_state == 0 and n.flags == 0
    assert recv_one(c2).status == STATUS_SHARING_VIOLATION
