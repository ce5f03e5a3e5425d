"""Requests run straight from the read callback while the connection's task is idle
(driver._MessageSource._run_inline) and by the task otherwise.  A client that pipelines
reads whose answers (40 MiB) it does not collect forces the switch-over both ways: every
answer must still come back, complete, in order, and the server must stop reading
rather than buffer without bound."""
from __future__ import annotations

import os
import time

from rawclient import RawClient, echo
from smbunit import PASSWORD, USER

from wsd_smb.server.driver import _INLINE_WRITE_LIMIT
from wsd_smb.wire import commands as w
from wsd_smb.wire.base import FileId
from wsd_smb.wire.header import Command

MIB = 1024 * 1024
N_READS = 40


def _connect(smbd):
    c = RawClient(smbd.host, smbd.port, timeout=30)
    c.negotiate(dialects=(0x0311,))
    assert c.session_setup(USER, PASSWORD).status == 0
    return c, c.tree_connect("share").header.tree_id


def _counts(smbd):
    return smbd.call(lambda: (smbd.smb.messages_inline, smbd.smb.messages_queued))


def _wait_for_backlog(smbd, limit: float = 10.0):
    """Until answers the client has not read wait in the server's write buffer (the kernel's
    socket buffers are full), at most *limit* seconds."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if smbd.call(lambda: max((wr.transport.get_write_buffer_size() for wr in smbd.smb._writers), default=0)) \
                > _INLINE_WRITE_LIMIT:
            return
        time.sleep(0.02)
    raise AssertionError("the server never had answers waiting to be written")


def test_a_quiet_connection_runs_its_requests_from_the_read_callback(smbd):
    c, _ = _connect(smbd)
    before = _counts(smbd)
    for _ in range(20):
        assert echo(c).status == 0
    inline, queued = (a - b for a, b in zip(_counts(smbd), before))
    assert inline >= 19 and inline + queued == 20
    c.close()


def test_pipelined_reads_nobody_collects_come_back_whole_and_in_order(smbd, tmp_path):
    data = os.urandom(MIB)
    (tmp_path / "share" / "big.bin").write_bytes(data)
    c, tid = _connect(smbd)
    # enough credits for the whole burst (each 1 MiB READ charges 16)
    for _ in range(2):
        assert echo(c, credit=N_READS * 16).status == 0
    r = c.request(Command.SMB2_CREATE, w.CreateRequest(
        requested_oplock_level=0, impersonation_level=2, desired_access=0x1, file_attributes=0x80,
        share_access=7, create_disposition=1, create_options=0x40, name="big.bin".encode("utf-16-le")),
        tree_id=tid)
    assert r.status == 0, hex(r.status)
    fid = FileId(*w.CreateResponse.unpack(r.raw).file_id)
    before = _counts(smbd)
    mids = []
    for i in range(N_READS):
        if i == N_READS // 2:
            _wait_for_backlog(smbd)
        mids.append(c.mid)
        req = w.ReadRequest(padding=0x50, flags=0, length=MIB, offset=0, file_id=fid, minimum_count=0,
                            channel=0, remaining_bytes=0, read_channel_info=b"")
        c.send_raw(c.compound([c.build(Command.SMB2_READ, req.pack(), tree_id=tid, credit_charge=16,
                                       credit=16)]))
    got = []
    for _ in range(N_READS):
        (reply,) = c.recv()
        assert reply.status == 0, hex(reply.status)
        rsp = w.ReadResponse.unpack(reply.raw)
        assert bytes(rsp.data) == data
        got.append(reply.header.message_id)
    assert got == mids
    # the second half came while answers piled up: the task took it, waiting for the drain
    inline, queued = (a - b for a, b in zip(_counts(smbd), before))
    assert inline + queued == N_READS and queued > 0
    assert echo(c).status == 0  # and the connection goes on as before
    c.close()
