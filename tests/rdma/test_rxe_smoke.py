"""Smoke tests of real verbs on a real RDMA device (rdma_rxe in the VM harness).

They prove what the verbs provider will rely on, from Python, with pyverbs:
the device opens and its port is active with a RoCE GID for the address;
rdma_cm connect/accept and reject across two processes with non-blocking
event channels; SEND/RECV, RDMA READ and RDMA WRITE of a few KiB with real
MRs and rkeys, every byte checked on both sides.
"""

from __future__ import annotations

import ipaddress
import json
import random
import selectors
import subprocess
import sys
import time

import pytest

from rdma_probe import rdma_skip_reason

_reason = rdma_skip_reason()
if _reason:
    pytest.skip(_reason, allow_module_level=True)

import rxe_verbs as rv  # noqa: E402  (needs pyverbs)

SIZE = 4096


class Peer:
    """The passive side (tests/rdma/cm_peer.py) in its own process."""

    def __init__(self, script, addr: str, port: int, mode: str, seed: int, timeout: float = 60.0):
        self.proc = subprocess.Popen(
            [sys.executable, str(script), "--addr", addr, "--port", str(port), "--mode", mode,
             "--size", str(SIZE), "--seed", str(seed), "--timeout", str(timeout)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.proc.stdout, selectors.EVENT_READ)
        self.buf = b""
        self.events: list[dict] = []

    def expect(self, name: str, timeout: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            while b"\n" in self.buf:
                line, self.buf = self.buf.split(b"\n", 1)
                msg = json.loads(line)
                self.events.append(msg)
                if msg.get("event") == name:
                    return msg
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"peer did not report {name!r}; saw {self.events}; {self.stderr()}")
            if self.sel.select(min(left, 0.5)):
                chunk = self.proc.stdout.read1(65536)
                if not chunk:
                    raise AssertionError(f"peer exited before {name!r} (status {self.proc.wait()}): "
                                         f"saw {self.events}; {self.stderr()}")
                self.buf += chunk

    def stderr(self) -> str:
        if self.proc.poll() is None:
            return "(peer still running)"
        return "stderr: " + self.proc.stderr.read().decode(errors="replace")[-2000:]

    def finish(self, timeout: float = 30.0) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.sel.close()
        self.proc.stdout.close()
        self.proc.stderr.close()


@pytest.fixture
def peer_factory(peer_script, rdma_gid_index_addr):
    peers = []
    _gidx, addr = rdma_gid_index_addr

    def make(mode: str, seed: int):
        port = random.randrange(20000, 60000)
        p = Peer(peer_script, addr, port, mode, seed)
        peers.append(p)
        p.expect("listening")
        return p, addr, port

    yield make
    for p in peers:
        p.close()


def _connect_active(addr: str, port: int):
    """Resolve and create the active side's endpoint (not yet connected)."""
    import pyverbs.cm_enums as ce
    from pyverbs.cmid import CMID

    ch = rv.EventChannel()
    cid = CMID(creator=ch.channel, port_space=ce.RDMA_PS_TCP)
    cid.resolve_addr(rv.addr_info(addr, port, passive=False), 2000)
    ch.expect(ce.RDMA_CM_EVENT_ADDR_RESOLVED).close()
    cid.resolve_route(2000)
    ch.expect(ce.RDMA_CM_EVENT_ROUTE_RESOLVED).close()
    return ch, cid, rv.Endpoint(cid, SIZE)


def test_device_port_and_gid(rdma_dev, rdma_gid_index_addr):
    import pyverbs.device as d
    import pyverbs.enums as e
    from pyverbs.pd import PD
    from pyverbs.mr import MR

    gidx, addr = rdma_gid_index_addr
    names = [dev.name.decode() for dev in d.get_device_list()]
    assert rdma_dev in names
    with d.Context(name=rdma_dev) as ctx:
        attr = ctx.query_device()
        assert attr.phys_port_cnt >= 1
        assert attr.max_qp > 0 and attr.max_mr > 0 and attr.max_qp_rd_atom >= 1
        port = ctx.query_port(1)
        assert port.state == e.IBV_PORT_ACTIVE
        assert port.active_mtu >= e.IBV_MTU_1024
        gid = ipaddress.IPv6Address(str(ctx.query_gid(1, gidx)))
        assert gid == rv.ipv4_mapped_gid(addr)
        with PD(ctx) as pd:
            with MR(pd, SIZE, rv.ACCESS_ALL) as mr:
                assert mr.length == SIZE and mr.lkey and mr.rkey
                data = rv.pattern(3, SIZE)
                mr.write(data, SIZE)
                assert mr.read(SIZE, 0) == data


def test_cm_reject_reaches_connector(peer_factory):
    import pyverbs.cm_enums as ce

    peer, addr, port = peer_factory("reject", seed=11)
    ch, cid, ep = _connect_active(addr, port)
    cid.connect(ep.conn_param())
    ev = ch.get()
    try:
        assert rv.event_name(ev.event_type) == "RDMA_CM_EVENT_REJECTED"
    finally:
        ev.close()
    peer.expect("rejected")
    assert peer.finish() == 0
    ep.close()
    cid.close()


def test_cm_connect_send_read_write(peer_factory):
    import pyverbs.cm_enums as ce
    import pyverbs.enums as e

    seed = random.randrange(1, 1 << 30)
    peer, addr, port = peer_factory("accept", seed=seed)
    ch, cid, ep = _connect_active(addr, port)
    ep.post_recv(9, 0, 256)                        # the peer's buffer descriptor
    cid.connect(ep.conn_param())
    ch.expect(ce.RDMA_CM_EVENT_CONNECT_RESPONSE).close()
    ep.to_rtr_rts()
    cid.establish()
    peer.expect("established")
    (wc,) = ep.completions(1)
    assert (wc.status, wc.opcode, wc.wr_id, wc.byte_len) == (e.IBV_WC_SUCCESS, e.IBV_WC_RECV, 9,
                                                             rv.MR_INFO.size)
    remote_addr, rkey, length = rv.MR_INFO.unpack(ep.recv_mr.read(rv.MR_INFO.size, 0))
    assert length == SIZE and rkey != 0
    ep.post_recv(10, SIZE, 256)                    # the peer's verdict message

    # SEND -> the peer's posted RECV; it checks the bytes.
    ep.post_send(1, rv.pattern(seed, SIZE))
    (wc,) = ep.completions(1)
    assert (wc.status, wc.opcode, wc.wr_id) == (e.IBV_WC_SUCCESS, e.IBV_WC_SEND, 1)
    got = peer.expect("recv_ok")
    assert got["ok"] and got["byte_len"] == SIZE

    # RDMA READ of the peer's buffer with its rkey.
    ep.post_rdma(2, e.IBV_WR_RDMA_READ, SIZE, remote_addr, rkey)
    (wc,) = ep.completions(1)
    assert (wc.status, wc.opcode, wc.wr_id) == (e.IBV_WC_SUCCESS, e.IBV_WC_RDMA_READ, 2)
    assert ep.mr.read(SIZE, 0) == rv.pattern(seed + 1, SIZE)

    # RDMA WRITE into the peer's buffer, then a SEND that tells it to look.
    ep.mr.write(rv.pattern(seed + 2, SIZE), SIZE)
    ep.post_rdma(3, e.IBV_WR_RDMA_WRITE, SIZE, remote_addr, rkey)
    (wc,) = ep.completions(1)
    assert (wc.status, wc.opcode, wc.wr_id) == (e.IBV_WC_SUCCESS, e.IBV_WC_RDMA_WRITE, 3)
    ep.post_send(4, b"done")
    wcs = ep.completions(2)                        # our SEND and the peer's verdict
    by_id = {w.wr_id: w for w in wcs}
    assert by_id[4].status == e.IBV_WC_SUCCESS
    assert by_id[10].status == e.IBV_WC_SUCCESS and by_id[10].opcode == e.IBV_WC_RECV
    assert ep.recv_mr.read(by_id[10].byte_len, SIZE) == b"verified"
    got = peer.expect("write_ok")
    assert got["ok"], got

    cid.disconnect()
    ch.expect(ce.RDMA_CM_EVENT_DISCONNECTED).close()
    peer.expect("disconnected")
    assert peer.finish() == 0
    ep.close()
    cid.close()
