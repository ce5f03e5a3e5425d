"""Small non-blocking helpers over pyverbs for the RDMA smoke tests.

Blocking pyverbs calls (``CMEvent(channel)`` on a blocking channel,
``CompChannel.get_cq_event``, ``CMID.get_request``) hold the GIL and freeze the
whole process, so everything here waits in ``poll()`` on the channel file
descriptors (set O_NONBLOCK) with a deadline, and only then makes the pyverbs
call, which then returns at once.  CQs are drained with ``CQ.poll``, which
never blocks.

pyverbs 44 does not expose the file descriptor of a ``CMEventChannel`` or a
``CompChannel``, so :func:`_new_fd` finds it as the one descriptor that the
constructor opened (``/dev/infiniband/rdma_cm`` for the CM channel, an
``anon_inode:[infinibandevent]`` for a completion channel).
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import select
import struct
import time

import pyverbs.cm_enums as ce
import pyverbs.enums as e
from pyverbs.cmid import AddrInfo, CMEvent, CMEventChannel, CMID, ConnParam
from pyverbs.cq import CQ, CompChannel
from pyverbs.mr import MR
from pyverbs.qp import QP, QPCap, QPInitAttr
from pyverbs.wr import SGE, RecvWR, SendWR

ACCESS_ALL = e.IBV_ACCESS_LOCAL_WRITE | e.IBV_ACCESS_REMOTE_READ | e.IBV_ACCESS_REMOTE_WRITE
# What the passive side tells the active side in the accept private data:
# address, rkey and length of its RDMA-able buffer (little-endian).
MR_INFO = struct.Struct("<QII")

EVENT_NAMES = {getattr(ce, n): n for n in dir(ce) if n.startswith("RDMA_CM_EVENT_")}


def event_name(code: int) -> str:
    return EVENT_NAMES.get(code, str(code))


def _fds() -> dict[int, str]:
    out = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            out[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            pass
    return out


def _new_fd(before: dict[int, str], match: str) -> int:
    after = _fds()
    new = [fd for fd, target in after.items() if match in target and before.get(fd) != target]
    if len(new) != 1:
        raise RuntimeError(f"cannot identify the {match} descriptor (new: {new})")
    fd = new[0]
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)
    return fd


def _wait_readable(fd: int, deadline: float, what: str) -> None:
    p = select.poll()
    p.register(fd, select.POLLIN)
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"timed out waiting for {what}")
        if p.poll(min(left, 0.5) * 1000):
            return


class EventChannel:
    """A CM event channel whose events are awaited with poll()."""

    def __init__(self):
        before = _fds()
        self.channel = CMEventChannel()
        self.fd = _new_fd(before, "rdma_cm")

    def get(self, timeout: float = 20.0) -> CMEvent:
        _wait_readable(self.fd, time.monotonic() + timeout, "a CM event")
        return CMEvent(self.channel)

    def expect(self, wanted: int, timeout: float = 20.0) -> CMEvent:
        ev = self.get(timeout)
        if ev.event_type != wanted:
            got = ev.event_type
            ev.close()
            raise AssertionError(f"expected {event_name(wanted)}, got {event_name(got)}")
        return ev


class Endpoint:
    """PD/CQ/QP/MR of one side of an RC connection (QP owned by us, not by the CMID)."""

    def __init__(self, cmid: CMID, buf_size: int, depth: int = 8):
        self.cmid = cmid
        ctx, self.pd = cmid.context, cmid.pd
        before = _fds()
        self.comp_channel = CompChannel(ctx)
        self.comp_fd = _new_fd(before, "infinibandevent")
        self.cq = CQ(ctx, 2 * depth, None, self.comp_channel, 0)
        self.cq.req_notify()
        cap = QPCap(max_send_wr=depth, max_recv_wr=depth, max_send_sge=1, max_recv_sge=1)
        self.qp = QP(self.pd, QPInitAttr(qp_type=e.IBV_QPT_RC, scq=self.cq, rcq=self.cq, cap=cap))
        self.mr = MR(self.pd, buf_size, ACCESS_ALL)           # RDMA READ/WRITE source or target
        self.recv_mr = MR(self.pd, 2 * buf_size, e.IBV_ACCESS_LOCAL_WRITE)
        self.send_mr = MR(self.pd, buf_size, e.IBV_ACCESS_LOCAL_WRITE)
        self._modify(e.IBV_QPS_INIT)

    def close(self) -> None:
        """Release in dependency order (QP before CQ before channel; MRs)."""
        for obj in (self.qp, self.cq, self.comp_channel, self.mr, self.recv_mr, self.send_mr):
            obj.close()

    def _modify(self, state: int) -> None:
        attr, mask = self.cmid.init_qp_attr(state)
        if state == e.IBV_QPS_INIT:
            attr.qp_access_flags = ACCESS_ALL
        self.qp.modify(attr, mask)

    def to_rtr_rts(self) -> None:
        self._modify(e.IBV_QPS_RTR)
        self._modify(e.IBV_QPS_RTS)

    def conn_param(self) -> ConnParam:
        # No private data: pyverbs 44's ConnParam.set_private_data() has no
        # visible effect (ConnParam.private_data reads back b"" and the peer's
        # CONNECT_RESPONSE carries zeros), so buffer descriptors travel in a
        # SEND after the connection is up, as in WSD's session protocol.
        return ConnParam(resources=4, depth=4, qp_num=self.qp.qp_num)

    def mr_info(self) -> bytes:
        return MR_INFO.pack(self.mr.buf, self.mr.rkey, self.mr.length)

    # -- work requests ------------------------------------------------------
    def post_recv(self, wr_id: int, offset: int, length: int) -> None:
        sge = SGE(self.recv_mr.buf + offset, length, self.recv_mr.lkey)
        self.qp.post_recv(RecvWR(wr_id=wr_id, num_sge=1, sg=[sge]))

    def post_send(self, wr_id: int, data: bytes) -> None:
        self.send_mr.write(data, len(data))
        sge = SGE(self.send_mr.buf, len(data), self.send_mr.lkey)
        self.qp.post_send(SendWR(wr_id=wr_id, opcode=e.IBV_WR_SEND, num_sge=1, sg=[sge],
                                 send_flags=e.IBV_SEND_SIGNALED))

    def post_rdma(self, wr_id: int, opcode: int, length: int, remote_addr: int, rkey: int) -> None:
        sge = SGE(self.mr.buf, length, self.mr.lkey)
        wr = SendWR(wr_id=wr_id, opcode=opcode, num_sge=1, sg=[sge], send_flags=e.IBV_SEND_SIGNALED)
        wr.set_wr_rdma(rkey, remote_addr)
        self.qp.post_send(wr)

    def completions(self, n: int, timeout: float = 20.0) -> list:
        """Exactly ``n`` work completions (poll the CQ; sleep on the channel fd)."""
        deadline = time.monotonic() + timeout
        got: list = []
        while len(got) < n:
            npolled, wcs = self.cq.poll(n - len(got))
            if npolled:
                got.extend(wcs[:npolled])
                continue
            _wait_readable(self.comp_fd, deadline, f"{n - len(got)} more completion(s)")
            self.comp_channel.get_cq_event(self.cq)
            self.cq.ack_events(1)
            self.cq.req_notify()
        return got


def addr_info(addr: str, port: int, passive: bool) -> AddrInfo:
    if passive:
        return AddrInfo(src=addr, src_service=str(port), port_space=ce.RDMA_PS_TCP, flags=ce.RAI_PASSIVE)
    return AddrInfo(dst=addr, dst_service=str(port), port_space=ce.RDMA_PS_TCP)


def pattern(seed: int, n: int) -> bytes:
    """Deterministic, position-dependent test bytes."""
    out = bytearray(n)
    x = seed & 0xFFFFFFFF or 1
    for i in range(n):
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        out[i] = x & 0xFF
    return bytes(out)


def ipv4_mapped_gid(addr: str) -> ipaddress.IPv6Address:
    return ipaddress.IPv6Address("::ffff:" + addr)
