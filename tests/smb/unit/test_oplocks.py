"""Oplocks against a real wsd-smbd on loopback, driven by the raw test client
(MS-SMB2 3.3.5.9 oplock acquisition, 3.3.4.6 break notification, 3.3.5.22.1
acknowledgment, 3.3.2.1 break timeout; the simplified MS-FSA rules of core/oplocks.py)."""
from __future__ import annotations

import socket
import time

import pytest
from rawclient import RawClient
from smbunit import PASSWORD, USER

from wsd_smb.wire import commands as w
from wsd_smb.wire.base import FileId
from wsd_smb.wire.header import SMB2_FLAGS_ASYNC_COMMAND, SMB2_FLAGS_SIGNED, Command

BATCH, EXCLUSIVE, LEVEL_II, NONE = 0x09, 0x08, 0x01, 0x00
STATUS_PENDING = 0x00000103
STATUS_SHARING_VIOLATION = 0xC0000043
STATUS_INVALID_DEVICE_STATE = 0xC0000184
STATUS_INVALID_OPLOCK_PROTOCOL = 0xC00000E3
SHARE_ALL = 7
FILE_OPEN_IF, FILE_OVERWRITE_IF = 3, 5
GENERIC_RW = 0x0012019F


def client(smbd, dialects=(0x0210, 0x0300, 0x0302, 0x0311)) -> tuple[RawClient, int]:
    c = RawClient(smbd.host, smbd.port)
    assert c.negotiate(dialects=dialects).status == 0
    assert c.session_setup(USER, PASSWORD).status == 0
    r = c.tree_connect("share")
    assert r.status == 0
    return c, r.header.tree_id


def create_req(name: str, oplock: int, *, access: int = GENERIC_RW, share: int = SHARE_ALL,
               disposition: int = FILE_OPEN_IF, contexts: bytes = b"", options: int = 0x40) -> w.CreateRequest:
    return w.CreateRequest(requested_oplock_level=oplock, impersonation_level=2, desired_access=access,
                           file_attributes=0x80, share_access=share, create_disposition=disposition,
                           create_options=options, name=name.encode("utf-16-le"), create_contexts=contexts)


def create(c: RawClient, tid: int, name: str, oplock: int, **kw):
    r = c.request(Command.SMB2_CREATE, create_req(name, oplock, **kw), tree_id=tid)
    body = w.CreateResponse.unpack(r.raw) if r.status == 0 else None
    return r, body


def send_create(c: RawClient, tid: int, name: str, oplock: int, **kw) -> None:
    c.send_raw(c.compound([c.build(Command.SMB2_CREATE, create_req(name, oplock, **kw).pack(), tree_id=tid)]))


def recv_one(c: RawClient, timeout: float = 5.0):
    c.sock.settimeout(timeout)
    try:
        return c.recv()[0]
    finally:
        c.sock.settimeout(10)


def nothing_arrives(c: RawClient, timeout: float = 0.5) -> bool:
    c.sock.settimeout(timeout)
    try:
        c.sock.recv(1, socket.MSG_PEEK)
        return False
    except (socket.timeout, TimeoutError):
        return True
    finally:
        c.sock.settimeout(10)


def ack(c: RawClient, tid: int, fid, level: int):
    return c.request(Command.SMB2_OPLOCK_BREAK, w.OplockBreakAcknowledgment(oplock_level=level, file_id=FileId(*fid)),
                     tree_id=tid)


def close(c: RawClient, tid: int, fid) -> int:
    return c.request(Command.SMB2_CLOSE, w.CloseRequest(flags=0, file_id=FileId(*fid)), tree_id=tid).status


def test_batch_granted_when_alone_level2_when_shared(smbd):
    """3.3.5.9 oplock acquisition: BATCH on a file nobody else has open; a second open
    (after the break) gets LEVEL_II."""
    c1, t1 = client(smbd)
    r, b = create(c1, t1, "alone.dat", BATCH)
    assert r.status == 0 and b.oplock_level == BATCH
    # a directory never gets one
    r, d = create(c1, t1, "", BATCH, access=0x00100081, options=0)
    assert r.status == 0 and d.oplock_level == NONE
    # no oplock asked: none given
    r, n = create(c1, t1, "other.dat", NONE)
    assert r.status == 0 and n.oplock_level == NONE


def test_break_notification_async_create_and_ack(smbd):
    """A conflicting open breaks BATCH to LEVEL_II (3.3.4.6): unsolicited OPLOCK_BREAK,
    MessageId all ones, SessionId 0, not signed; the CREATE goes async (STATUS_PENDING)
    and completes with LEVEL_II once the holder acknowledges (2.2.24.1 -> 2.2.25.1)."""
    c1, t1 = client(smbd)
    c2, t2 = client(smbd)
    r, b1 = create(c1, t1, "brk.dat", BATCH)
    assert b1.oplock_level == BATCH
    send_create(c2, t2, "brk.dat", BATCH)
    interim = recv_one(c2)
    assert interim.status == STATUS_PENDING and interim.header.flags & SMB2_FLAGS_ASYNC_COMMAND
    note = recv_one(c1)
    assert note.header.command == Command.SMB2_OPLOCK_BREAK
    assert note.header.message_id == 0xFFFFFFFFFFFFFFFF
    assert note.header.session_id == 0 and note.header.tree_id == 0
    assert not note.header.flags & SMB2_FLAGS_SIGNED
    n = w.OplockBreakNotification.unpack(note.raw)
    assert n.oplock_level == LEVEL_II and tuple(n.file_id) == tuple(b1.file_id)
    assert nothing_arrives(c2)  # still waiting for the acknowledgment
    a = ack(c1, t1, b1.file_id, LEVEL_II)
    assert a.status == 0
    assert w.OplockBreakResponse.unpack(a.raw).oplock_level == LEVEL_II
    final = recv_one(c2)
    assert final.status == 0 and final.header.async_id == interim.header.async_id
    assert w.CreateResponse.unpack(final.raw).oplock_level == LEVEL_II
    # a second acknowledgment: no break in progress (3.3.5.22.1)
    assert ack(c1, t1, b1.file_id, LEVEL_II).status == STATUS_INVALID_DEVICE_STATE


def test_break_completes_when_holder_closes(smbd):
    c1, t1 = client(smbd)
    c2, t2 = client(smbd)
    _, b1 = create(c1, t1, "cl.dat", BATCH, share=0)
    send_create(c2, t2, "cl.dat", BATCH, share=0)
    assert recv_one(c2).status == STATUS_PENDING
    assert recv_one(c1).header.command == Command.SMB2_OPLOCK_BREAK
    assert close(c1, t1, b1.file_id) == 0
    final = recv_one(c2)
    assert final.status == 0
    assert w.CreateResponse.unpack(final.raw).oplock_level == BATCH  # alone again


def test_batch_broken_even_on_sharing_violation_exclusive_not(smbd):
    """BATCH holders are broken before the share check; EXCLUSIVE holders whose share
    mode the new open violates are not (SHARING_VIOLATION at once, no notification)."""
    c1, t1 = client(smbd)
    c2, t2 = client(smbd)
    _, e = create(c1, t1, "excl.dat", EXCLUSIVE, share=0)
    assert e.oplock_level == EXCLUSIVE
    r, _ = create(c2, t2, "excl.dat", BATCH)
    assert r.status == STATUS_SHARING_VIOLATION
    assert nothing_arrives(c1)
    _, b = create(c1, t1, "batch.dat", BATCH, share=0)
    send_create(c2, t2, "batch.dat", NONE)
    assert recv_one(c2).status == STATUS_PENDING
    assert recv_one(c1).header.command == Command.SMB2_OPLOCK_BREAK
    assert ack(c1, t1, b.file_id, LEVEL_II).status == 0
    assert recv_one(c2).status == STATUS_SHARING_VIOLATION  # the holder kept its handle


def test_overwrite_breaks_to_none_and_ack_above_is_refused(smbd):
    c1, t1 = client(smbd)
    c2, t2 = client(smbd)
    _, b = create(c1, t1, "ow.dat", BATCH)
    send_create(c2, t2, "ow.dat", NONE, disposition=FILE_OVERWRITE_IF)
    assert recv_one(c2).status == STATUS_PENDING
    note = w.OplockBreakNotification.unpack(recv_one(c1).raw)
    assert note.oplock_level == NONE
    # acknowledging LEVEL_II when NONE was offered (3.3.5.22.1)
    assert ack(c1, t1, b.file_id, LEVEL_II).status == STATUS_INVALID_OPLOCK_PROTOCOL
    final = recv_one(c2)
    assert final.status == 0 and w.CreateResponse.unpack(final.raw).create_action == 3  # FILE_OVERWRITTEN


def test_stat_open_breaks_nothing(smbd):
    c1, t1 = client(smbd)
    c2, t2 = client(smbd)
    _, b = create(c1, t1, "stat.dat", BATCH)
    r, s = create(c2, t2, "stat.dat", NONE, access=0x00100080)  # READ_ATTRIBUTES | SYNCHRONIZE
    assert r.status == 0
    assert nothing_arrives(c1)


def test_level2_broken_to_none_by_write_without_ack(smbd):
    """A write breaks the file's LEVEL_II holders to NONE; no acknowledgment is
    expected (MS-SMB2 2.2.24.1)."""
    c1, t1 = client(smbd)
    c2, t2 = client(smbd)
    _, b1 = create(c1, t1, "l2.dat", LEVEL_II)
    assert b1.oplock_level == LEVEL_II
    _, b2 = create(c2, t2, "l2.dat", LEVEL_II)
    assert b2.oplock_level == LEVEL_II
    assert nothing_arrives(c1)
    c2.send_raw(c2.compound([c2.build(Command.SMB2_WRITE, w.WriteRequest(
        offset=0, file_id=FileId(*b2.file_id), data=b"x" * 10).pack(), tree_id=t2)]))
    # the writer's own LEVEL_II is broken too (smbtorture smb2.oplock.batch6): its
    # notification and the WRITE response arrive in either order
    got = sorted((recv_one(c2), recv_one(c2)), key=lambda r: r.header.command)
    assert [r.header.command for r in got] == [Command.SMB2_WRITE, Command.SMB2_OPLOCK_BREAK]
    assert got[0].status == 0
    assert w.OplockBreakNotification.unpack(got[1].raw).oplock_level == NONE
    n = w.OplockBreakNotification.unpack(recv_one(c1).raw)
    assert n.oplock_level == NONE and tuple(n.file_id) == tuple(b1.file_id)
    # a LEVEL_II -> NONE break takes no acknowledgment: one is a protocol error
    assert ack(c1, t1, b1.file_id, NONE).status == STATUS_INVALID_OPLOCK_PROTOCOL
    assert ack(c1, t1, b1.file_id, NONE).status == STATUS_INVALID_DEVICE_STATE  # nothing in progress


def test_break_timeout_completes_the_waiting_open(smbd_factory):
    """3.3.2.1: an unacknowledged break completes (to NONE) at Open.OplockTimeout."""
    smbd = smbd_factory(oplock_break_timeout=1.0)
    c1, t1 = client(smbd)
    c2, t2 = client(smbd)
    _, b = create(c1, t1, "to.dat", BATCH)
    t0 = time.monotonic()
    send_create(c2, t2, "to.dat", BATCH)
    assert recv_one(c2).status == STATUS_PENDING
    assert recv_one(c1).header.command == Command.SMB2_OPLOCK_BREAK
    final = recv_one(c2, timeout=5)
    elapsed = time.monotonic() - t0
    assert final.status == 0 and 0.9 <= elapsed < 4
    assert w.CreateResponse.unpack(final.raw).oplock_level == LEVEL_II
    assert ack(c1, t1, b.file_id, NONE).status == STATUS_INVALID_DEVICE_STATE


def test_cancel_of_a_waiting_create(smbd):
    c1, t1 = client(smbd)
    c2, t2 = client(smbd)
    create(c1, t1, "cx.dat", BATCH)
    send_create(c2, t2, "cx.dat", BATCH)
    interim = recv_one(c2)
    assert interim.status == STATUS_PENDING
    c2.send_raw(c2.compound([c2.build(Command.SMB2_CANCEL, w.CancelRequest().pack(), tree_id=t2,
                                      flags=SMB2_FLAGS_ASYNC_COMMAND, async_id=interim.header.async_id,
                                      message_id=interim.header.message_id)], sign=False))
    assert recv_one(c2).status == 0xC0000120  # STATUS_CANCELLED


@pytest.mark.parametrize("dialect", [0x0202, 0x0311])
def test_oplocks_on_every_dialect(smbd, dialect):
    c1, t1 = client(smbd, dialects=(dialect,))
    _, b = create(c1, t1, f"d{dialect:x}.dat", EXCLUSIVE)
    assert b.oplock_level == EXCLUSIVE
