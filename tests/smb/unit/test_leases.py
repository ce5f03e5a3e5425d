"""Leases, sans-IO: the lease manager (core/leases.py) over the real object store (files
in a temporary share) and real sans-IO Connections (notifications come out of
Connection.poll as bytes).  One test per step of MS-SMB2 3.3.4.7 (LB-1 ... LB-8), the
Lease Break Acknowledgment (3.3.5.22.2) and the acknowledgment timer (3.3.2.5); plus the
wire path (RqLs on CREATE, lease break and acknowledgment) against a real server."""
from __future__ import annotations

import os

import pytest

from wsd_smb.core.connection import Connection, Send
from wsd_smb.core.leases import LeaseManager
from wsd_smb.core.oplocks import OplockManager
from wsd_smb.core.state import Server, ServerConfig
from wsd_smb.ntstatus import NtStatusError
from wsd_smb.store import ObjectStore, Share
from wsd_smb.wire import commands as w
from wsd_smb.wire import contexts as cx
from wsd_smb.wire.header import SMB2_FLAGS_SIGNED, Command, Smb2Header

R, H, W = 0x01, 0x02, 0x04
ACK_REQUIRED = 0x01
GUID, KEY = b"G" * 16, b"K" * 16


class World:
    """A server, its managers, a share and connections of one ClientGuid."""

    def __init__(self, tmp_path):
        self.server = Server(ServerConfig())
        self.store = ObjectStore()
        (tmp_path / "s").mkdir()
        self.share = Share("s", str(tmp_path / "s"))
        self.closed: list = []
        self.oplocks = OplockManager(self.server, ObjectStore._share_conflict, self.closed.append)
        self.leases = LeaseManager(self.server, self.oplocks, self.close, ObjectStore._share_conflict)

    def close(self, o) -> None:
        self.closed.append(o)
        self.store.close(o)
        self.leases.open_closed(o)

    def connection(self, guid=GUID, dialect=0x0311) -> Connection:
        c = Connection(self.server, "127.0.0.1:1", now=0.0)
        c.client_guid, c.dialect = guid, dialect
        return c

    def open(self, name="f.dat", conn=None, state=R | H | W, version=2, key=KEY, guid=GUID, epoch=0):
        o = self.store.create(self.share, name, desired_access=0x0012019F, share_access=7,
                              create_disposition=3).open
        o.connection = conn
        if version == 2:
            req = cx.LeaseRequestV2(lease_key=key, lease_state=state, flags=0, parent_lease_key=b"\0" * 16,
                                    epoch=epoch)
        else:
            req = cx.LeaseRequest(lease_key=key, lease_state=state, lease_flags=0)
        lease, _ = self.leases.grant(o, req, version, guid, name)
        return o, lease


def notes(conn: Connection) -> list[tuple[Smb2Header, w.LeaseBreakNotification]]:
    out = []
    for ev in conn.poll(0.0):
        assert isinstance(ev, Send)
        h = Smb2Header.unpack(ev.data)
        out.append((h, w.LeaseBreakNotification.unpack(ev.data, 64)))
    return out


@pytest.fixture
def world(tmp_path):
    return World(tmp_path)


def test_lb1_no_lease_table_or_lease(world):
    """LB-1."""
    c = world.connection()
    world.open(conn=c)
    out = world.leases.object_store_lease_break(b"X" * 16, KEY, R, 1.0)
    assert out.new_state == 0 and not out.sent
    out = world.leases.object_store_lease_break(GUID, b"Y" * 16, R, 1.0)
    assert out.new_state == 0 and not out.sent
    assert notes(c) == []


def test_lb2_lease_without_opens(world):
    """LB-2."""
    c = world.connection()
    o, lease = world.open(conn=c)
    lease.lease_opens.clear()
    out = world.leases.object_store_lease_break(GUID, KEY, R, 1.0)
    assert out.new_state == 0 and lease.lease_state == 0 and notes(c) == []


def test_lb3_no_connection_closes_non_durable_and_durable_without_h(world):
    """LB-3."""
    o1, lease = world.open()  # no connection
    o2 = world.store.create(world.share, "f.dat", desired_access=0x0012019F, share_access=7,
                            create_disposition=3).open
    world.leases.grant(o2, cx.LeaseRequestV2(lease_key=KEY, lease_state=R | H, flags=0,
                                             parent_lease_key=b"\0" * 16, epoch=0), 2, GUID, "f.dat")
    o2.is_durable = True
    # new state with H: the durable open stays, the plain one is closed
    out = world.leases.object_store_lease_break(GUID, KEY, R | H, 1.0)
    assert world.closed == [o1] and out.closed == [o1] and not o2.closed
    # new state without H: the durable one goes too
    out = world.leases.object_store_lease_break(GUID, KEY, R, 2.0)
    assert world.closed == [o1, o2] and o2.closed


def test_lb4_notification_header_and_body(world):
    """LB-4."""
    c = world.connection()
    o, lease = world.open(conn=c, state=R | H | W)
    world.leases.object_store_lease_break(GUID, KEY, R | H, 1.0)
    [(h, n)] = notes(c)
    assert h.command == Command.SMB2_OPLOCK_BREAK and h.message_id == 0xFFFFFFFFFFFFFFFF
    assert h.session_id == 0 and h.tree_id == 0 and not h.flags & SMB2_FLAGS_SIGNED
    assert bytes(n.lease_key) == KEY and n.current_lease_state == R | H | W and n.new_lease_state == R | H


def test_lb5_read_only_lease_needs_no_ack(world):
    """LB-5."""
    c = world.connection()
    o, lease = world.open(conn=c, state=R)
    out = world.leases.object_store_lease_break(GUID, KEY, 0, 1.0)
    [(h, n)] = notes(c)
    assert n.flags == 0 and not lease.breaking and o.oplock_state == "None"
    assert out.new_state == 0 and lease.lease_state == 0


def test_lb5_other_lease_needs_ack_with_timeout(world):
    """LB-5."""
    c = world.connection()
    o, lease = world.open(conn=c, state=R | H)
    out = world.leases.object_store_lease_break(GUID, KEY, R, 10.0)
    [(h, n)] = notes(c)
    assert n.flags == ACK_REQUIRED and lease.breaking and lease.break_to_lease_state == R
    assert o.oplock_state == "Breaking" and lease.lease_state == R | H  # until acknowledged
    assert lease.lease_break_timeout == 10.0 + world.server.config.oplock_break_timeout
    assert out.new_state is None and out.ack_required


def test_lb6_epoch_v2_on_smb3_else_zero(world, tmp_path):
    """LB-6."""
    c = world.connection(dialect=0x0311)
    o, lease = world.open(conn=c, state=R | H | W, epoch=5)
    assert lease.epoch == 6  # a new lease: the request's Epoch + 1
    world.leases.object_store_lease_break(GUID, KEY, R | H, 1.0)
    [(h, n)] = notes(c)
    assert n.new_epoch == 7 and lease.epoch == 7
    c2 = world.connection(guid=b"V" * 16, dialect=0x0210)
    o2, l2 = world.open(name="g.dat", conn=c2, state=R | H, version=1, key=b"L" * 16, guid=b"V" * 16)
    world.leases.object_store_lease_break(b"V" * 16, b"L" * 16, R, 1.0)
    [(h, n)] = notes(c2)
    assert n.new_epoch == 0 and l2.epoch == 0


def test_lb7_first_available_connection_then_alternate_and_ack_timer(world):
    """LB-7."""
    dead = world.connection()
    alive = world.connection()
    dead.closed = True  # sending on it fails
    o, lease = world.open(conn=alive, state=R | H)
    out = world.leases.object_store_lease_break(GUID, KEY, R, 3.0)
    assert out.sent and notes(alive) and dead.poll(0.0) == []
    assert lease.break_notification is None
    assert world.oplocks.next_deadline() == lease.lease_break_timeout  # the ack timer runs


def test_lb8_cannot_send(world):
    """LB-8."""
    other = world.connection(guid=b"O" * 16)  # the open's connection is alive, but no
    o, lease = world.open(conn=other, state=R | H)  # connection has the lease's ClientGuid
    out = world.leases.object_store_lease_break(GUID, KEY, R, 1.0)
    assert out.new_state == 0 and not out.sent
    assert not lease.breaking and not lease.held and lease.break_notification is None
    assert o.oplock_state == "None" and lease.lease_state == 0


def test_lb8_persistent_open_keeps_waiting(world):
    """LB-8."""
    other = world.connection(guid=b"O" * 16)
    o, lease = world.open(conn=other, state=R | H)
    o.is_persistent = True
    out = world.leases.object_store_lease_break(GUID, KEY, R, 1.0)
    assert out.new_state is None and lease.breaking and lease.lease_state == R | H


def test_ack_3_3_5_22_2(world):
    c = world.connection()
    o, lease = world.open(conn=c, state=R | H)
    with pytest.raises(NtStatusError) as e:
        world.leases.acknowledge(GUID, b"Z" * 16, R)
    assert e.value.status == 0xC0000034  # OBJECT_NAME_NOT_FOUND
    with pytest.raises(NtStatusError) as e:
        world.leases.acknowledge(GUID, KEY, R)
    assert e.value.status == 0xC0000001  # UNSUCCESSFUL: no break in progress
    world.leases.object_store_lease_break(GUID, KEY, R, 1.0)
    fired = []
    assert world.oplocks.wait({lease}, lambda: fired.append(1)) is not None
    lease2 = world.leases.acknowledge(GUID, KEY, R)
    assert lease2 is lease and lease.lease_state == R and not lease.breaking and fired == [1]
    # acknowledging more than BreakToLeaseState
    o2, l2 = world.open(name="h.dat", conn=c, state=R | H, key=b"M" * 16)
    world.leases.object_store_lease_break(GUID, b"M" * 16, R, 1.0)
    with pytest.raises(NtStatusError) as e:
        world.leases.acknowledge(GUID, b"M" * 16, R | H)
    assert e.value.status == 0xC00000D0  # REQUEST_NOT_ACCEPTED; the break stays in progress
    assert l2.breaking and l2.lease_state == R | H
    assert world.leases.acknowledge(GUID, b"M" * 16, 0).lease_state == 0  # within R: accepted


def test_ack_timer_3_3_2_5(world):
    c = world.connection()
    o, lease = world.open(conn=c, state=R | H | W)
    world.leases.object_store_lease_break(GUID, KEY, R | H, 5.0)
    deadline = world.oplocks.next_deadline()
    fired = []
    world.oplocks.wait({lease}, lambda: fired.append(1))
    world.oplocks.on_timer(deadline - 0.1)
    assert lease.breaking and fired == []
    world.oplocks.on_timer(deadline)
    assert not lease.breaking and lease.lease_state == 0 and fired == [1]
    assert world.oplocks.next_deadline() is None


def test_grant_rules(world):
    """Request without R -> nothing; W only alone; upgrade only by a superset; the same
    key on another open file refused."""
    c = world.connection()
    o, lease = world.open(conn=c, state=H | W)
    assert lease.lease_state == 0
    world.close(o)
    o1, l1 = world.open(conn=c, state=R | H)
    o2, l1b = world.open(conn=c, state=R | H | W)  # same key: upgrade
    assert l1b is l1 and l1.lease_state == R | H | W
    o3, l3 = world.open(conn=c, state=R | H | W, key=b"Q" * 16)  # other key, file shared
    assert l3.lease_state == R | H
    with pytest.raises(NtStatusError):
        world.leases.check_key(GUID, KEY, None)  # KEY is in use on f.dat


def test_lease_on_the_wire(smbd):
    """RqLs v2 on CREATE -> lease response; a second client's open breaks RWH to RH
    (notification, async CREATE), the acknowledgment (2.2.24.2) answers 2.2.25.2."""
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).parent))
    from test_oplocks import client, recv_one

    c1, t1 = client(smbd)
    c2, t2 = client(smbd)
    k1, k2 = os.urandom(16), os.urandom(16)

    def create(c, t, key):
        data = cx.LeaseRequestV2(lease_key=key, lease_state=R | H | W, flags=0, parent_lease_key=b"\0" * 16,
                                 epoch=0).pack(0)
        req = w.CreateRequest(requested_oplock_level=0xFF, impersonation_level=2, desired_access=0x0012019F,
                              file_attributes=0x80, share_access=7, create_disposition=3, create_options=0x40,
                              name="lw.dat".encode("utf-16-le"),
                              create_contexts=w.pack_create_contexts([w.CreateContext(name=b"RqLs", data=data)]))
        c.send_raw(c.compound([c.build(Command.SMB2_CREATE, req.pack(), tree_id=t)]))

    create(c1, t1, k1)
    r = recv_one(c1)
    b = w.CreateResponse.unpack(r.raw)
    ls = cx.LeaseResponseV2.unpack(bytes(w.unpack_create_contexts(b.create_contexts)[0].data), 0)
    assert b.oplock_level == 0xFF and bytes(ls.lease_key) == k1 and ls.lease_state == R | H | W and ls.epoch == 1
    create(c2, t2, k2)
    assert recv_one(c2).status == 0x103  # pending
    note = recv_one(c1)
    n = w.LeaseBreakNotification.unpack(note.raw)
    assert n.flags == ACK_REQUIRED and n.current_lease_state == R | H | W and n.new_lease_state == R | H
    assert n.new_epoch == 2
    ack = c1.request(Command.SMB2_OPLOCK_BREAK, w.LeaseBreakAcknowledgment(lease_key=k1, lease_state=R | H))
    assert ack.status == 0
    rsp = w.LeaseBreakResponse.unpack(ack.raw)
    assert bytes(rsp.lease_key) == k1 and rsp.lease_state == R | H
    final = recv_one(c2)
    b2 = w.CreateResponse.unpack(final.raw)
    ls2 = cx.LeaseResponseV2.unpack(bytes(w.unpack_create_contexts(b2.create_contexts)[0].data), 0)
    assert final.status == 0 and ls2.lease_state == R | H


@pytest.mark.parametrize("dialect,leasing", [(0x0202, False), (0x0210, True), (0x0300, True), (0x0311, True)])
def test_leasing_per_dialect(smbd, dialect, leasing):
    """SMB2_GLOBAL_CAP_LEASING from 2.1 on; on 2.0.2 a lease request gets no lease (and,
    asked with OplockLevel LEASE, no oplock either)."""
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).parent))
    from test_oplocks import client

    c, t = client(smbd, dialects=(dialect,))
    assert bool(c.negotiate_response.capabilities & 0x02) is leasing
    data = cx.LeaseRequest(lease_key=os.urandom(16), lease_state=R | H | W, lease_flags=0).pack(0)
    req = w.CreateRequest(requested_oplock_level=0xFF, impersonation_level=2, desired_access=0x0012019F,
                          file_attributes=0x80, share_access=7, create_disposition=3, create_options=0x40,
                          name=f"d{dialect:x}.dat".encode("utf-16-le"),
                          create_contexts=w.pack_create_contexts([w.CreateContext(name=b"RqLs", data=data)]))
    r = c.request(Command.SMB2_CREATE, req, tree_id=t)
    b = w.CreateResponse.unpack(r.raw)
    assert r.status == 0
    if leasing:
        assert b.oplock_level == 0xFF and b.create_contexts
    else:
        assert b.oplock_level == 0 and not b.create_contexts


def test_rename_breaks_handle_caching_of_other_leases(smbd):
    """A rename through one lease's handle removes H from the file's other leases first
    (ACK_REQUIRED: RH -> R) and the SET_INFO waits (STATUS_PENDING) for the ack."""
    import struct
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).parent))
    from test_oplocks import client, recv_one

    from wsd_smb.wire.base import FileId

    c1, t1 = client(smbd)
    c2, t2 = client(smbd)
    k1, k2 = os.urandom(16), os.urandom(16)

    def open_leased(c, t, key):
        data = cx.LeaseRequest(lease_key=key, lease_state=R | H, lease_flags=0).pack(0)
        req = w.CreateRequest(requested_oplock_level=0xFF, impersonation_level=2, desired_access=0x0013019F,
                              file_attributes=0x80, share_access=7, create_disposition=3, create_options=0x40,
                              name="ren.dat".encode("utf-16-le"),
                              create_contexts=w.pack_create_contexts([w.CreateContext(name=b"RqLs", data=data)]))
        r = c.request(Command.SMB2_CREATE, req, tree_id=t)
        b = w.CreateResponse.unpack(r.raw)
        assert r.status == 0 and b.oplock_level == 0xFF
        return b

    b1 = open_leased(c1, t1, k1)
    open_leased(c2, t2, k2)
    new = "ren2.dat".encode("utf-16-le")
    info = struct.pack("<B7sQI", 1, b"\0" * 7, 0, len(new)) + new
    req = w.SetInfoRequest(info_type=1, file_info_class=10, additional_information=0,
                           file_id=FileId(*b1.file_id), buffer=info)
    c1.send_raw(c1.compound([c1.build(Command.SMB2_SET_INFO, req.pack(), tree_id=t1)]))
    assert recv_one(c1).status == 0x103  # pending until LEASE2 acknowledges
    n = w.LeaseBreakNotification.unpack(recv_one(c2).raw)
    assert bytes(n.lease_key) == k2 and n.current_lease_state == R | H and n.new_lease_state == R
    assert n.flags == ACK_REQUIRED
    assert c2.request(Command.SMB2_OPLOCK_BREAK, w.LeaseBreakAcknowledgment(lease_key=k2, lease_state=R)).status == 0
    final = recv_one(c1)
    assert final.status == 0 and final.header.command == Command.SMB2_SET_INFO
