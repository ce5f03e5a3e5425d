"""Resilient handles against a real wsd-smbd on loopback: FSCTL_LMR_REQUEST_RESILIENCY
(MS-SMB2 3.3.5.15.9, NETWORK_RESILIENCY_REQUEST 2.2.31.3), the open kept over a lost
connection for Open.ResiliencyTimeout (3.3.7.1) and reconnected with DHnC (3.3.5.9.7,
DH-6e), and the lock sequence replay check it turns on (3.3.5.14)."""
from __future__ import annotations

import struct
import time
import uuid

import pytest
from rawclient import RawClient
from smbunit import PASSWORD, USER

from wsd_smb.wire import commands as w
from wsd_smb.wire import contexts as cx
from wsd_smb.wire.base import FileId
from wsd_smb.wire.header import Command
from wsd_smb.wire.resiliency import FSCTL_LMR_REQUEST_RESILIENCY, NetworkResiliencyRequest

OK, INVALID_PARAMETER, INVALID_DEVICE_REQUEST = 0, 0xC000000D, 0xC0000010
NOT_FOUND, SHARING_VIOLATION, LOCK_NOT_GRANTED = 0xC0000034, 0xC0000043, 0xC0000055
ALL = 0x001F01FF


def client(smbd, dialects=(0x0210,), guid=None):
    c = RawClient(smbd.host, smbd.port)
    assert c.negotiate(dialects=dialects, client_guid=guid).status == 0
    assert c.session_setup(USER, PASSWORD).status == 0
    return c, c.tree_connect("share").header.tree_id


def create(c, tid, name, share_access=0, contexts=b"", disposition=3):
    r = c.request(Command.SMB2_CREATE, w.CreateRequest(
        requested_oplock_level=0, impersonation_level=2, desired_access=ALL, file_attributes=0x80,
        share_access=share_access, create_disposition=disposition, create_options=0x40,
        name=name.encode("utf-16-le"), create_contexts=contexts), tree_id=tid)
    if r.status:
        return r.status, None
    return 0, tuple(w.CreateResponse.unpack(r.raw).file_id)


def resiliency(c, tid, fid, data):
    """(status, IOCTL response or None)."""
    r = c.request(Command.SMB2_IOCTL, w.IoctlRequest(ctl_code=FSCTL_LMR_REQUEST_RESILIENCY, file_id=FileId(*fid),
                                                     input=data, output=b"", max_input_response=0,
                                                     max_output_response=0, flags=1), tree_id=tid)
    if struct.unpack_from("<H", r.raw, 64)[0] == 49:
        return r.status, w.IoctlResponse.unpack(r.raw)
    return r.status, None


def server_open(smbd, persistent):
    return smbd.call(lambda: smbd.server.global_open_table.get(persistent))


def wait_disconnected(smbd, persistent, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        o = server_open(smbd, persistent)
        if o is None or o.session is None:
            return o
        time.sleep(0.02)
    raise AssertionError("the server did not process the disconnect")


def test_request_sets_open_is_resilient(smbd):
    c, t = client(smbd)
    st, fid = create(c, t, "r.dat")
    st, resp = resiliency(c, t, fid, NetworkResiliencyRequest(timeout=1500).pack(0))
    assert st == OK and resp.ctl_code == FSCTL_LMR_REQUEST_RESILIENCY and tuple(resp.file_id) == fid
    assert bytes(resp.output) == b"" and bytes(resp.input) == b"" and resp.flags == 0
    o = server_open(smbd, fid[0])
    assert o.is_resilient and not o.is_durable and o.resiliency_timeout == 1.5
    assert o.durable_owner.endswith(USER.lower())
    # Timeout 0: the server's default (resiliency_default_timeout)
    assert resiliency(c, t, fid, NetworkResiliencyRequest(timeout=0).pack(0))[0] == OK
    assert server_open(smbd, fid[0]).resiliency_timeout == smbd.server.config.resiliency_default_timeout
    # Reserved is ignored; input longer than the structure is fine
    assert resiliency(c, t, fid, struct.pack("<II", 2000, 0xFFFFFFFF) + b"xx")[0] == OK
    assert server_open(smbd, fid[0]).resiliency_timeout == 2.0


@pytest.mark.parametrize("data", [b"", b"\xe8\x03\x00\x00", b"\xe8\x03\x00\x00\x00\x00\x00"])
def test_short_input_is_invalid_parameter(smbd, data):
    c, t = client(smbd, dialects=(0x0311,))
    fid = create(c, t, "short.dat")[1]
    assert resiliency(c, t, fid, data)[0] == INVALID_PARAMETER
    assert not server_open(smbd, fid[0]).is_resilient


def test_timeout_above_max_resiliency_timeout_is_refused(smbd_factory):
    smbd = smbd_factory(max_resiliency_timeout=10.0)
    c, t = client(smbd)
    fid = create(c, t, "max.dat")[1]
    assert resiliency(c, t, fid, NetworkResiliencyRequest(timeout=10001).pack(0))[0] == INVALID_PARAMETER
    assert not server_open(smbd, fid[0]).is_resilient
    assert resiliency(c, t, fid, NetworkResiliencyRequest(timeout=10000).pack(0))[0] == OK


def test_smb202_is_invalid_device_request(smbd):
    c, t = client(smbd, dialects=(0x0202,))
    fid = create(c, t, "202.dat")[1]
    assert resiliency(c, t, fid, NetworkResiliencyRequest(timeout=1000).pack(0))[0] == INVALID_DEVICE_REQUEST


def test_resilient_open_survives_disconnect_and_reconnects(smbd):
    """No oplock, no durable context: only the resiliency request keeps the open (and its
    share mode) over the lost connection; DHnC on a new connection re-attaches it."""
    guid = uuid.uuid4().bytes
    c, t = client(smbd, guid=guid)
    fid = create(c, t, "keep.dat")[1]  # share mode: none
    assert c.request(Command.SMB2_WRITE, w.WriteRequest(offset=0, file_id=FileId(*fid), data=b"resilient",
                                                         channel=0, remaining_bytes=0, flags=0),
                     tree_id=t).status == OK
    assert resiliency(c, t, fid, NetworkResiliencyRequest(timeout=30000).pack(0))[0] == OK
    c.close()
    o = wait_disconnected(smbd, fid[0])
    assert o is not None and not o.closed and o.session is None and o.connection is None
    # still open: its share mode keeps others out
    c2, t2 = client(smbd, guid=guid)
    assert create(c2, t2, "keep.dat", share_access=7, disposition=1)[0] == SHARING_VIOLATION
    # the durable reconnect of 3.3.5.9.7 takes resilient opens (DH-6e)
    st, fid2 = create(c2, t2, "keep.dat", contexts=w.pack_create_contexts(
        [w.CreateContext(name=b"DHnC", data=cx.DurableHandleReconnect(data=FileId(*fid)).pack(0))]), disposition=1)
    assert st == OK and fid2[0] == fid[0]
    r = c2.request(Command.SMB2_READ, w.ReadRequest(padding=0x50, flags=0, length=64, offset=0,
                                                     file_id=FileId(*fid2), minimum_count=0, channel=0,
                                                     remaining_bytes=0), tree_id=t2)
    assert r.status == OK and bytes(w.ReadResponse.unpack(r.raw).data) == b"resilient"
    assert server_open(smbd, fid[0]).session is not None


def test_plain_open_is_closed_on_disconnect(smbd):
    c, t = client(smbd)
    fid = create(c, t, "plain.dat")[1]
    c.close()
    assert wait_disconnected(smbd, fid[0]) is None


def test_disconnected_resilient_open_is_scavenged_after_resiliency_timeout(smbd, tmp_path):
    c, t = client(smbd, dialects=(0x0300,))
    fid = create(c, t, "scav.dat")[1]
    assert resiliency(c, t, fid, NetworkResiliencyRequest(timeout=300).pack(0))[0] == OK
    c.close()
    o = wait_disconnected(smbd, fid[0])
    assert o is not None and not o.closed
    deadline = time.monotonic() + 5
    while server_open(smbd, fid[0]) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server_open(smbd, fid[0]) is None and o.closed
    c2, t2 = client(smbd)
    assert create(c2, t2, "scav.dat", disposition=1)[0] == OK  # the share mode went with it


def test_lock_sequence_replay_on_resilient_open_smb21(smbd):
    """3.3.5.14: on 2.1 the lock sequence is checked for resilient opens only: a repeated
    (index, number) is a replay answered with success; without resiliency it is not."""
    c, t = client(smbd)
    fid = create(c, t, "lock.dat")[1]

    def lock(seq):
        return c.request(Command.SMB2_LOCK, w.LockRequest(lock_sequence=seq, file_id=FileId(*fid), locks=[
            w.LockElement(offset=0, length=1, flags=0x12)]), tree_id=t).status  # EXCLUSIVE|FAIL_IMMEDIATELY

    assert lock((1 << 4) | 1) == OK
    assert lock((1 << 4) | 1) == LOCK_NOT_GRANTED  # not resilient: no replay detection
    assert resiliency(c, t, fid, NetworkResiliencyRequest(timeout=1000).pack(0))[0] == OK
    assert lock((2 << 4) | 3) == LOCK_NOT_GRANTED  # already locked, the entry is not valid
    fid2 = create(c, t, "lock2.dat")[1]
    assert resiliency(c, t, fid2, NetworkResiliencyRequest(timeout=1000).pack(0))[0] == OK
    fid = fid2
    assert lock((5 << 4) | 7) == OK
    assert lock((5 << 4) | 7) == OK                # replay: success without locking again
    assert lock((5 << 4) | 8) == LOCK_NOT_GRANTED  # another number: a real lock request


@pytest.mark.parametrize("multi_channel", [True, False])
def test_lock_sequence_on_smb3_follows_multi_channel_capability(smbd_factory, multi_channel):
    """3.3.5.14: on 3.x the check also covers plain opens when ServerCapabilities include
    SMB2_GLOBAL_CAP_MULTI_CHANNEL (Samba's default; Windows skips it, <314>, which is what
    smbtorture smb2.lock.replay_broken_windows probes and then skips itself)."""
    smbd = smbd_factory(multi_channel=multi_channel)
    c, t = client(smbd, dialects=(0x0311,))
    fid = create(c, t, "mc.dat")[1]

    def lock(seq):
        return c.request(Command.SMB2_LOCK, w.LockRequest(lock_sequence=seq, file_id=FileId(*fid), locks=[
            w.LockElement(offset=0, length=1, flags=0x12)]), tree_id=t).status

    assert lock((3 << 4) | 5) == OK
    assert lock((3 << 4) | 5) == (OK if multi_channel else LOCK_NOT_GRANTED)
