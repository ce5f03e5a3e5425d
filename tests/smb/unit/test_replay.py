"""Replay detection against a real wsd-smbd on loopback: replayed CREATEs with a durable v2
request (MS-SMB2 3.3.5.9.10, Open.IsReplayEligible), the replay of a CREATE still waiting
for an oplock break, and the channel sequence of an open (3.3.5.2.10, core/replay.py)."""
from __future__ import annotations

import os
import time
from types import SimpleNamespace

import pytest
from rawclient import RawClient, create_contexts, create_request, open_file
from smbunit import PASSWORD, USER

from wsd_smb.core import replay as rp
from wsd_smb.core.files import state_of
from wsd_smb.ntstatus import NtStatusError
from wsd_smb.wire import commands as w
from wsd_smb.wire import contexts as cx
from wsd_smb.wire.base import FileId
from wsd_smb.wire.header import SMB2_FLAGS_ASYNC_COMMAND, SMB2_FLAGS_REPLAY_OPERATION, Command

BATCH, LEVEL_II, NONE, LEASE = 0x09, 0x01, 0x00, 0xFF
RWH, RH = 0x07, 0x03
OK, DENIED, DUPLICATE, NOT_AVAILABLE, PENDING = 0, 0xC0000022, 0xC000022A, 0xC0000467, 0x103
FILE_CREATED, FILE_OPENED = 2, 1
REPLAY = SMB2_FLAGS_REPLAY_OPERATION


def client(smbd, guid: bytes | None = None):
    c = RawClient(smbd.host, smbd.port)
    assert c.negotiate(dialects=(0x0300, 0x0302, 0x0311), client_guid=guid).status == 0
    assert c.session_setup(USER, PASSWORD).status == 0
    r = c.tree_connect("share")
    assert r.status == 0
    return c, r.header.tree_id


ctxs = create_contexts


def dh2q(guid: bytes) -> tuple:
    return (b"DH2Q", cx.DurableHandleRequestV2(timeout=0xFFFFFFFF, flags=0, create_guid=guid).pack(0))


def rqls(key: bytes, state=RWH) -> tuple:
    return (b"RqLs", cx.LeaseRequest(lease_key=key, lease_state=state, lease_flags=0).pack(0))


def create_req(name, oplock=BATCH, contexts=b"", share=7, disposition=3) -> w.CreateRequest:
    return create_request(name, oplock=oplock, contexts=contexts, share=share, disposition=disposition)


def create(c, tid, name, oplock=BATCH, contexts=b"", flags=0, **kw):
    return open_file(c, tid, name, oplock=oplock, contexts=contexts, flags=flags, **kw)


def server_open(smbd, persistent):
    return smbd.call(lambda: smbd.server.global_open_table.get(persistent))


def query_position(c, tid, fid, **kw) -> int:
    req = w.QueryInfoRequest(info_type=1, file_info_class=14, output_buffer_length=8, additional_information=0,
                             flags=0, file_id=FileId(*fid), input_buffer=b"")
    return c.request(Command.SMB2_QUERY_INFO, req, tree_id=tid, **kw).status


def write(c, tid, fid, **kw) -> int:
    return c.request(Command.SMB2_WRITE, w.WriteRequest(offset=0, file_id=FileId(*fid), data=b"abc"),
                     tree_id=tid, **kw).status


def read(c, tid, fid, **kw) -> int:
    return c.request(Command.SMB2_READ, w.ReadRequest(length=3, offset=0, file_id=FileId(*fid)),
                     tree_id=tid, **kw).status


def set_position(c, tid, fid, **kw) -> int:
    req = w.SetInfoRequest(info_type=1, file_info_class=14, additional_information=0, file_id=FileId(*fid),
                           buffer=(0x1000).to_bytes(8, "little"))
    return c.request(Command.SMB2_SET_INFO, req, tree_id=tid, **kw).status


def recv_one(c: RawClient, timeout: float = 5.0):
    c.sock.settimeout(timeout)
    try:
        return c.recv()[0]
    finally:
        c.sock.settimeout(10)


# ---------------------------------------------------------------- replayed CREATEs
def test_replay_returns_the_open_of_the_create_guid(smbd):
    """3.3.5.9.10: a replay with the CreateGuid of an eligible open gets that open back:
    its FileId, the original CreateAction, its oplock and the durable v2 context; nothing
    is opened again."""
    c, t = client(smbd)
    guid = os.urandom(16)
    st, b1, out1 = create(c, t, "r1.dat", BATCH, ctxs(dh2q(guid)), share=0)
    assert st == OK and b1.create_action == FILE_CREATED and b"DH2Q" in out1
    st, b2, out2 = create(c, t, "r1.dat", BATCH, ctxs(dh2q(guid)), flags=REPLAY, share=0)
    assert st == OK
    assert tuple(b2.file_id) == tuple(b1.file_id)
    assert b2.create_action == FILE_CREATED and b2.oplock_level == BATCH
    assert cx.DurableHandleResponseV2.unpack(out2[b"DH2Q"], 0).timeout == 300000
    o = server_open(smbd, b1.file_id[0])
    assert len(o.file.opens) == 1  # no second open (share_access 0 would have refused one)


def test_replay_with_a_lower_oplock_answers_that_level(smbd):
    """A replay asking for no oplock is answered without one (and so without durability);
    the open keeps its BATCH oplock (smbtorture replay-dhv2-oplock2)."""
    c, t = client(smbd)
    guid = os.urandom(16)
    st, b1, _ = create(c, t, "r2.dat", BATCH, ctxs(dh2q(guid)))
    st, b2, out2 = create(c, t, "r2.dat", NONE, ctxs(dh2q(guid)), flags=REPLAY)
    assert st == OK and tuple(b2.file_id) == tuple(b1.file_id)
    assert b2.oplock_level == NONE and b"DH2Q" not in out2
    assert server_open(smbd, b1.file_id[0]).oplock_level == BATCH


def test_create_guid_in_use_without_the_replay_flag(smbd):
    """The same CreateGuid without SMB2_FLAGS_REPLAY_OPERATION: STATUS_DUPLICATE_OBJECTID."""
    c, t = client(smbd)
    guid = os.urandom(16)
    assert create(c, t, "r3.dat", BATCH, ctxs(dh2q(guid)))[0] == OK
    assert create(c, t, "r3.dat", BATCH, ctxs(dh2q(guid)))[0] == DUPLICATE
    assert create(c, t, "r3b.dat", BATCH, ctxs(dh2q(guid)))[0] == DUPLICATE  # whatever the name


def test_replay_with_another_create_guid_is_a_new_open(smbd):
    """A replay whose CreateGuid names no open (or that has no DH2Q at all) is executed as
    a new open."""
    c, t = client(smbd)
    st, b1, _ = create(c, t, "r4.dat", NONE, ctxs(dh2q(os.urandom(16))))
    assert st == OK
    st, b2, _ = create(c, t, "r4.dat", NONE, ctxs(dh2q(os.urandom(16))), flags=REPLAY)
    assert st == OK and tuple(b2.file_id) != tuple(b1.file_id) and b2.create_action == FILE_OPENED
    st, b3, _ = create(c, t, "r4.dat", NONE, flags=REPLAY)
    assert st == OK and tuple(b3.file_id) not in (tuple(b1.file_id), tuple(b2.file_id))


def test_create_guid_of_another_client_is_not_replayed(smbd):
    """Open.ClientGuid must match the replaying connection's ClientGuid."""
    c1, t1 = client(smbd)
    c2, t2 = client(smbd)
    guid = os.urandom(16)
    st, b1, _ = create(c1, t1, "r5.dat", NONE, ctxs(dh2q(guid)))
    st, b2, _ = create(c2, t2, "r5.dat", NONE, ctxs(dh2q(guid)), flags=REPLAY)
    assert st == OK and tuple(b2.file_id) != tuple(b1.file_id)


def test_a_request_on_the_open_ends_replay_eligibility(smbd):
    """Open.IsReplayEligible goes FALSE with the first request naming the open: a later
    replay is a new open, which then holds the CreateGuid (smbtorture replay6)."""
    c, t = client(smbd)
    guid = os.urandom(16)
    st, b1, _ = create(c, t, "r6.dat", NONE, ctxs(dh2q(guid)))
    assert query_position(c, t, b1.file_id) == OK
    st, b2, _ = create(c, t, "r6.dat", NONE, ctxs(dh2q(guid)), flags=REPLAY)
    assert st == OK and tuple(b2.file_id) != tuple(b1.file_id) and b2.create_action == FILE_OPENED
    assert create(c, t, "r6.dat", NONE, ctxs(dh2q(guid)))[0] == DUPLICATE  # the new open is eligible
    st, b3, _ = create(c, t, "r6.dat", NONE, ctxs(dh2q(guid)), flags=REPLAY)
    assert st == OK and tuple(b3.file_id) == tuple(b2.file_id)


def test_replay_lease_mismatch_is_access_denied(smbd):
    """A replay asking for a lease of an open holding an oplock, or with another LeaseKey
    than the open's lease: STATUS_ACCESS_DENIED; with the open's key it gets the lease's
    current state."""
    c, t = client(smbd)
    g1, g2, key = os.urandom(16), os.urandom(16), os.urandom(16)
    assert create(c, t, "r7a.dat", BATCH, ctxs(dh2q(g1)))[0] == OK
    assert create(c, t, "r7a.dat", LEASE, ctxs(dh2q(g1), rqls(os.urandom(16))), flags=REPLAY)[0] == DENIED
    st, b1, out1 = create(c, t, "r7b.dat", LEASE, ctxs(dh2q(g2), rqls(key, RH)))
    assert st == OK and b"DH2Q" in out1
    assert create(c, t, "r7b.dat", LEASE, ctxs(dh2q(g2), rqls(os.urandom(16), RH)), flags=REPLAY)[0] == DENIED
    assert create(c, t, "r7b.dat", BATCH, ctxs(dh2q(g2)), flags=REPLAY)[0] == DENIED
    st, b2, out2 = create(c, t, "r7b.dat", LEASE, ctxs(dh2q(g2), rqls(key, 0x01)), flags=REPLAY)
    assert st == OK and tuple(b2.file_id) == tuple(b1.file_id) and b2.oplock_level == LEASE
    assert cx.LeaseResponse.unpack(out2[b"RqLs"], 0).lease_state == RH and b"DH2Q" in out2


# ---------------------------------------------------------------- pending CREATE
def test_replay_of_a_create_waiting_for_a_break(smbd):
    """A CREATE with DH2Q waiting for an oplock break: its replay is answered at once with
    STATUS_FILE_NOT_AVAILABLE; once it completed, a replay gets its open."""
    c1, t1 = client(smbd)
    st, b1, _ = create(c1, t1, "p1.dat", BATCH)
    assert st == OK
    c2, t2 = client(smbd)
    guid = os.urandom(16)
    r = c2.request(Command.SMB2_CREATE, create_req("p1.dat", BATCH, ctxs(dh2q(guid))), tree_id=t2,
                   no_wait_final=True)
    assert r.status == PENDING and r.header.flags & SMB2_FLAGS_ASYNC_COMMAND
    note = recv_one(c1)  # the break of c1's BATCH oplock, not acknowledged yet
    assert note.header.command == Command.SMB2_OPLOCK_BREAK
    t0 = time.monotonic()
    assert create(c2, t2, "p1.dat", BATCH, ctxs(dh2q(guid)), flags=REPLAY)[0] == NOT_AVAILABLE
    assert time.monotonic() - t0 < 2
    assert smbd.call(lambda: len(state_of(smbd.server).pending_creates)) == 1
    closed = c1.request(Command.SMB2_CLOSE, w.CloseRequest(flags=0, file_id=FileId(*b1.file_id)), tree_id=t1)
    assert closed.status == OK
    final = recv_one(c2)
    assert final.status == OK
    b2 = w.CreateResponse.unpack(final.raw)
    assert b2.create_action == FILE_OPENED and b2.oplock_level == BATCH
    assert smbd.call(lambda: len(state_of(smbd.server).pending_creates)) == 0
    st, b3, out3 = create(c2, t2, "p1.dat", BATCH, ctxs(dh2q(guid)), flags=REPLAY)
    assert st == OK and tuple(b3.file_id) == tuple(b2.file_id) and b3.create_action == FILE_OPENED
    assert b"DH2Q" in out3


def test_pending_entry_goes_when_the_waiting_create_fails(smbd):
    """The waiting CREATE fails (share conflict once the break is acknowledged): the
    CreateGuid is free again, a replay is executed as a new open."""
    c1, t1 = client(smbd)
    st, b1, _ = create(c1, t1, "p2.dat", BATCH, share=0)
    c2, t2 = client(smbd)
    guid = os.urandom(16)
    r = c2.request(Command.SMB2_CREATE, create_req("p2.dat", NONE, ctxs(dh2q(guid))), tree_id=t2,
                   no_wait_final=True)
    assert r.status == PENDING
    assert recv_one(c1).header.command == Command.SMB2_OPLOCK_BREAK
    ack = c1.request(Command.SMB2_OPLOCK_BREAK,
                     w.OplockBreakAcknowledgment(oplock_level=LEVEL_II, file_id=FileId(*b1.file_id)), tree_id=t1)
    assert ack.status == OK
    assert recv_one(c2).status == 0xC0000043  # STATUS_SHARING_VIOLATION
    assert smbd.call(lambda: len(state_of(smbd.server).pending_creates)) == 0
    assert create(c2, t2, "p2.dat", NONE, ctxs(dh2q(guid)), flags=REPLAY)[0] == 0xC0000043


# ---------------------------------------------------------------- channel sequence
def test_channel_sequence_of_an_open(smbd):
    """3.3.5.2.10 over the wire: a stale ChannelSequence fails WRITE and SET_INFO with
    STATUS_FILE_NOT_AVAILABLE, READ and QUERY_INFO proceed; a newer one is taken over."""
    c, t = client(smbd)
    st, b, _ = create(c, t, "cs.dat", BATCH, ctxs(dh2q(os.urandom(16))))
    fid = tuple(b.file_id)
    assert write(c, t, fid) == OK
    assert write(c, t, fid, channel_sequence=0x8000) == NOT_AVAILABLE  # 0x8000 ahead: older
    assert read(c, t, fid, channel_sequence=1) == OK  # newer: Open.ChannelSequence = 1
    assert server_open(smbd, fid[0]).channel_sequence == 1
    assert write(c, t, fid, channel_sequence=0) == NOT_AVAILABLE
    assert write(c, t, fid, channel_sequence=0, flags=REPLAY) == NOT_AVAILABLE
    assert set_position(c, t, fid, channel_sequence=0) == NOT_AVAILABLE
    assert read(c, t, fid, channel_sequence=0) == OK
    assert query_position(c, t, fid, channel_sequence=0) == OK
    assert write(c, t, fid, channel_sequence=1, flags=REPLAY) == OK
    assert write(c, t, fid, channel_sequence=0xFFFF) == NOT_AVAILABLE
    o = server_open(smbd, fid[0])
    assert o.outstanding_request_count == 0 and o.outstanding_pre_request_count == 0


def test_channel_sequence_not_checked_below_smb3(smbd):
    """Dialects 2.0.2 / 2.1 skip 3.3.5.2.10."""
    c = RawClient(smbd.host, smbd.port)
    assert c.negotiate(dialects=(0x0210,)).status == 0
    assert c.session_setup(USER, PASSWORD).status == 0
    t = c.tree_connect("share").header.tree_id
    st, b, _ = create(c, t, "cs2.dat", NONE)
    assert write(c, t, tuple(b.file_id), channel_sequence=0x8000) == OK


def _open():
    return SimpleNamespace(is_persistent=False, is_replay_eligible=True, channel_sequence=0,
                           outstanding_request_count=0, outstanding_pre_request_count=0, channel_generation=0)


@pytest.mark.parametrize("seq,ok", [(0, True), (1, True), (0x7FFF, True), (0x8000, False), (0xFFFF, False)])
def test_verify_channel_sequence_window(seq, ok):
    """The unsigned 16-bit difference from Open.ChannelSequence decides (0 ... 0x7FFF: same or newer)."""
    o = _open()
    if ok:
        c = rp.verify_channel_sequence(o, Command.SMB2_WRITE, seq, False)
        assert o.channel_sequence == seq and o.outstanding_request_count == 1 and not o.is_replay_eligible
        rp.release(c)
        assert o.outstanding_request_count == 0
    else:
        with pytest.raises(NtStatusError) as e:
            rp.verify_channel_sequence(o, Command.SMB2_WRITE, seq, False)
        assert e.value.status == NOT_AVAILABLE and o.channel_sequence == 0
        assert rp.verify_channel_sequence(o, Command.SMB2_READ, seq, False) is None  # not a modifying command


def test_outstanding_counts_follow_the_channel_generation():
    """A request counted under ChannelSequence 0 and answered after the open went
    0 -> 30000 -> 60000 -> 0 is given back to the "pre" count (smbtorture replay7)."""
    o = _open()
    notify = rp.verify_channel_sequence(o, Command.SMB2_CHANGE_NOTIFY, 0, False)
    for seq in (30000, 60000, 0):
        rp.release(rp.verify_channel_sequence(o, Command.SMB2_QUERY_INFO, seq, False))
    assert (o.outstanding_request_count, o.outstanding_pre_request_count) == (0, 1)
    rp.release(notify)
    rp.release(notify)  # once only
    assert (o.outstanding_request_count, o.outstanding_pre_request_count) == (0, 0)


def test_replay_refused_while_older_requests_are_outstanding():
    """With SMB2_FLAGS_REPLAY_OPERATION, a modifying request is refused while requests of
    an older channel generation are outstanding; without the flag it proceeds."""
    o = _open()
    old = rp.verify_channel_sequence(o, Command.SMB2_WRITE, 0, False)
    new = rp.verify_channel_sequence(o, Command.SMB2_WRITE, 1, False)  # moves `old` to the pre count
    assert o.outstanding_pre_request_count == 1
    with pytest.raises(NtStatusError):
        rp.verify_channel_sequence(o, Command.SMB2_WRITE, 1, True)
    with pytest.raises(NtStatusError):  # newer, replayed, older requests outstanding (the SHOULD)
        rp.verify_channel_sequence(o, Command.SMB2_SET_INFO, 2, True)
    assert o.channel_sequence == 2 and o.outstanding_request_count == 0
    rp.release(old)
    rp.release(new)
    assert rp.verify_channel_sequence(o, Command.SMB2_WRITE, 2, True) is not None


def test_waiting_create_survives_the_loss_of_its_channel(smbd):
    """A DH2Q CREATE waiting for a break on a channel that is lost, while its session lives
    on over another channel: it is not cancelled; replays on the other channel get
    FILE_NOT_AVAILABLE while it waits, then the open it made (smbtorture dhv2-pending2*)."""
    from test_session_binding import _bind

    holder, th = client(smbd)
    st, hb, _ = create(holder, th, "mc.dat", BATCH)
    assert st == OK
    guid = os.urandom(16)
    c1 = RawClient(smbd.host, smbd.port)
    assert c1.negotiate(dialects=(0x0311,)).status == 0
    assert c1.session_setup(USER, PASSWORD).status == 0
    t = c1.tree_connect("share").header.tree_id
    c2 = RawClient(smbd.host, smbd.port)
    assert c2.negotiate(dialects=(0x0311,), client_guid=c1.client_guid).status == 0
    r, key = _bind(c2, c1)
    assert r.status == OK
    c2.session_id, c2.session_key, c2.signing_key = c1.session_id, c1.session_key, key
    r = c1.request(Command.SMB2_CREATE, create_req("mc.dat", BATCH, ctxs(dh2q(guid))), tree_id=t,
                   no_wait_final=True)
    assert r.status == PENDING
    assert recv_one(holder).header.command == Command.SMB2_OPLOCK_BREAK
    c1.close()  # the channel the CREATE waits on goes away
    session = smbd.call(lambda: smbd.server.global_session_table.get(c2.session_id))
    deadline = time.monotonic() + 5
    while len(session.channel_list) != 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(session.channel_list) == 1
    assert create(c2, t, "mc.dat", BATCH, ctxs(dh2q(guid)), flags=REPLAY)[0] == NOT_AVAILABLE
    assert holder.request(Command.SMB2_CLOSE, w.CloseRequest(flags=0, file_id=FileId(*hb.file_id)),
                          tree_id=th).status == OK
    deadline = time.monotonic() + 5
    while smbd.call(lambda: len(state_of(smbd.server).pending_creates)) and time.monotonic() < deadline:
        time.sleep(0.02)
    st, b, out = create(c2, t, "mc.dat", BATCH, ctxs(dh2q(guid)), flags=REPLAY)
    assert st == OK and b.create_action == FILE_OPENED and b.oplock_level == BATCH and b"DH2Q" in out
    o = server_open(smbd, b.file_id[0])
    assert o.session is session and not o.connection.closed  # on the channel that is left
    assert c2.request(Command.SMB2_CLOSE, w.CloseRequest(flags=0, file_id=FileId(*b.file_id)), tree_id=t).status == OK
