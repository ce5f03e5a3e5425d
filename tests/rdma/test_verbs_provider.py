"""The ``verbs`` provider's SPI on a real RDMA device, without the switch.

Two provider instances (two verbs contexts, two CM event channels, two progress
threads) in this process: one listens, one connects.  Work requests and
completions are real: SEND/RECV into posted registered buffers, RDMA READ and
RDMA WRITE with the peer's rkey, WSAENOBUFS when registration is refused,
FD_CLOSE with WSAECONNRESET and flushed receives when the peer closes.
"""
from __future__ import annotations

import os
import random
import time

import pytest

from rdma_probe import rdma_skip_reason

_reason = rdma_skip_reason()
if _reason:
    pytest.skip(_reason, allow_module_level=True)

from wsd import errors  # noqa: E402
from wsd.events import CompletionQueue, EventObject, Overlapped  # noqa: E402
from wsd.spi import CF_ACCEPT, FD_ACCEPT, FD_CLOSE, FD_CONNECT, MEM_READ, MEM_WRITE  # noqa: E402
from wsd_verbs import DESCRIPTOR, VerbsProvider  # noqa: E402


class Upcalls:
    def __init__(self):
        self.handles = {}
        self.calls = []

    def WPUCreateSocketHandle(self, provider_name, provider_socket):
        h = 0x1000 + 4 * len(self.handles)
        self.handles[h] = provider_socket
        return h

    def WPUCloseSocketHandle(self, h):
        self.handles.pop(h, None)

    def SetEvent(self, ev):
        self.calls.append(("SetEvent", ev.name))
        ev.set()

    def ResetEvent(self, ev):
        self.calls.append(("ResetEvent", ev.name))
        ev.reset()


def wait_cq(cq: CompletionQueue, n: int, timeout: float = 60.0):
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < n:
        left = deadline - time.monotonic()
        assert left > 0, f"only {len(got)} of {n} completions"
        from wsd.events import wait_any
        wait_any([cq], min(left, 0.5))
        got += cq.poll()
    return got


@pytest.fixture
def pair(request):
    """(acceptor provider, its socket, connector provider, its socket), connected.

    ``@pytest.mark.parametrize("pair", [(opts_a, opts_b)], indirect=True)`` gives the two providers
    options."""
    opts_a, opts_b = getattr(request, "param", ({}, {}))
    a, b = VerbsProvider(**opts_a), VerbsProvider(**opts_b)
    ua, ub = Upcalls(), Upcalls()
    a.WSPStartup(ua)
    b.WSPStartup(ub)
    port = random.randrange(20000, 60000)
    ls = a.WSPSocket()
    a.WSPBind(ls, ("127.0.0.1", port))
    a.WSPListen(ls, 4)
    acc_ev = EventObject("accept")
    a.WSPEventSelect(ls, acc_ev, FD_ACCEPT)
    cs = b.WSPSocket()
    b.WSPBind(cs, ("0.0.0.0", 0))
    con_ev = EventObject("connect")
    b.WSPEventSelect(cs, con_ev, FD_CONNECT | FD_CLOSE)
    with pytest.raises(errors.WSAEWOULDBLOCK):
        b.WSPConnect(cs, ("127.0.0.1", port))
    assert acc_ev.wait(30), "no FD_ACCEPT"
    assert a.WSPEnumNetworkEvents(ls).network_events & FD_ACCEPT
    s = a.WSPAccept(ls, lambda *args: CF_ACCEPT, None)
    assert a.WSPSwitchSocket(s) in ua.handles
    assert con_ev.wait(30), "no FD_CONNECT"
    ne = b.WSPEnumNetworkEvents(cs)
    assert ne.network_events & FD_CONNECT and ne.error(FD_CONNECT) == 0
    yield a, s, b, cs
    for p in (a, b):
        p.WSPCleanup()


def test_send_recv_rdma_read_write_with_real_keys(pair):
    a, s, b, cs = pair
    cq_a, cq_b = CompletionQueue("a"), CompletionQueue("b")
    # a posts registered receive buffers; b sends from registered memory
    rbuf = bytearray(4 * 4096)
    ha = a.WSPRegisterMemory(s, rbuf, MEM_WRITE)
    views = [memoryview(rbuf)[i * 4096:(i + 1) * 4096] for i in range(4)]
    for i, v in enumerate(views):
        a.WSPRecv(s, [v], Overlapped(cq_a, ("r", i)))
    sbuf = bytearray(os.urandom(3000))
    hb = b.WSPRegisterMemory(cs, sbuf, MEM_READ)
    b.WSPSend(cs, [memoryview(sbuf)], Overlapped(cq_b, "s"))
    b.WSPSend(cs, [b"unregistered bytes"], Overlapped(cq_b, "s2"))      # bounce-copied
    (c1, c2) = wait_cq(cq_a, 2)
    assert (c1.overlapped.context, c1.error, c1.transferred) == (("r", 0), 0, 3000)
    assert bytes(views[0][:3000]) == bytes(sbuf)
    assert (c2.overlapped.context, c2.error, c2.transferred) == (("r", 1), 0, 18)
    assert bytes(views[1][:18]) == b"unregistered bytes"
    assert sorted(c.overlapped.context for c in wait_cq(cq_b, 2)) == ["s", "s2"]

    # RDMA READ: b reads a's region with the rkey in a's descriptor
    src = bytearray(os.urandom(1 << 20))
    desc = a.WSPRegisterRdmaMemory(s, src, MEM_READ)
    magic, addr, length, rkey, flags = DESCRIPTOR.unpack(desc)
    assert magic == b"WSDv" and length == 1 << 20 and rkey and flags == MEM_READ
    target = bytearray(1 << 20)
    ht = b.WSPRegisterMemory(cs, target, MEM_WRITE)
    b.WSPRdmaRead(cs, [memoryview(target)], desc, 0, Overlapped(cq_b, "read"))
    (c,) = wait_cq(cq_b, 1)
    assert (c.overlapped.context, c.error, c.transferred) == ("read", 0, 1 << 20)
    assert target == src

    # RDMA WRITE at an offset into a region registered for remote write
    dst = bytearray(1 << 16)
    wdesc = a.WSPRegisterRdmaMemory(s, dst, MEM_WRITE)
    payload = bytearray(os.urandom(1000))
    hp = b.WSPRegisterMemory(cs, payload, MEM_READ)
    b.WSPRdmaWrite(cs, [memoryview(payload)], wdesc, 5000, Overlapped(cq_b, "write"))
    (c,) = wait_cq(cq_b, 1)
    assert (c.overlapped.context, c.error, c.transferred) == ("write", 0, 1000)
    assert dst[5000:6000] == payload and dst[:5000] == bytes(5000)
    # beyond the advertised length: refused before anything is posted
    with pytest.raises(errors.WSAEINVAL):
        b.WSPRdmaWrite(cs, [memoryview(payload)], wdesc, (1 << 16) - 10, Overlapped(cq_b, "oob"))
    for h in (hb, ht, hp):
        b.WSPDeregisterMemory(cs, h)
    a.WSPDeregisterMemory(s, ha)
    a.WSPDeregisterRdmaMemory(s, desc)
    a.WSPDeregisterRdmaMemory(s, wdesc)
    with pytest.raises(errors.WSAEINVAL):
        a.WSPDeregisterRdmaMemory(s, wdesc)


def test_registration_beyond_the_limit_is_WSAENOBUFS():
    p = VerbsProvider(max_registered_bytes=1 << 20)
    p.WSPStartup(Upcalls())
    try:
        s = p.WSPSocket()
        ok = p.WSPRegisterRdmaMemory(s, bytearray(1 << 19), MEM_READ)
        with pytest.raises(errors.WSAENOBUFS):
            p.WSPRegisterRdmaMemory(s, bytearray(1 << 20), MEM_READ)
        p.WSPDeregisterRdmaMemory(s, ok)
        p.WSPDeregisterRdmaMemory(s, p.WSPRegisterRdmaMemory(s, bytearray(1 << 20), MEM_READ))
    finally:
        p.WSPCleanup()


def test_send_before_the_receive_is_posted_waits_for_it_RNR_flow_control(pair):
    """WSD-N2 with NIC flow control: a SEND that finds no receive is retried until one is posted."""
    a, s, b, cs = pair
    cq_a, cq_b = CompletionQueue("a"), CompletionQueue("b")
    b.WSPSend(cs, [b"early"], Overlapped(cq_b, "early"))
    time.sleep(1.0)
    assert len(cq_a) == 0 and len(cq_b) == 0        # nothing delivered, nothing lost, send not completed
    buf = bytearray(256)
    a.WSPRecv(s, [memoryview(buf)], Overlapped(cq_a, "r"))
    (c,) = wait_cq(cq_a, 1)
    assert c.error == 0 and bytes(buf[:c.transferred]) == b"early"
    (c,) = wait_cq(cq_b, 1)
    assert c.overlapped.context == "early" and c.error == 0


def test_peer_close_gives_FD_CLOSE_and_flushes_receives_WSAECONNRESET(pair):
    a, s, b, cs = pair
    cq_a = CompletionQueue("a")
    ev = EventObject("close")
    a.WSPEventSelect(s, ev, FD_CLOSE)
    bufs = [bytearray(128) for _ in range(3)]
    for i, buf in enumerate(bufs):
        a.WSPRecv(s, [memoryview(buf)], Overlapped(cq_a, i))
    b.WSPCloseSocket(cs)
    assert ev.wait(30), "no FD_CLOSE"
    ne = a.WSPEnumNetworkEvents(s)
    assert ne.network_events & FD_CLOSE and ne.error(FD_CLOSE) == errors.WSAECONNRESET.wsa_code
    comps = wait_cq(cq_a, 3)
    assert sorted(c.overlapped.context for c in comps) == [0, 1, 2]
    assert {c.error for c in comps} == {errors.WSAECONNRESET.wsa_code}
    with pytest.raises(errors.WSAECONNRESET):
        a.WSPSend(s, [b"x"], Overlapped(cq_a, "late"))


def test_connect_to_a_port_without_listener_is_refused():
    p = VerbsProvider()
    p.WSPStartup(Upcalls())
    try:
        cs = p.WSPSocket()
        ev = EventObject("c")
        p.WSPEventSelect(cs, ev, FD_CONNECT)
        with pytest.raises(errors.WSAEWOULDBLOCK):
            p.WSPConnect(cs, ("127.0.0.1", random.randrange(20000, 60000)))
        assert ev.wait(30)
        ne = p.WSPEnumNetworkEvents(cs)
        assert ne.error(FD_CONNECT) in (errors.WSAECONNREFUSED.wsa_code, errors.WSAEHOSTUNREACH.wsa_code)
    finally:
        p.WSPCleanup()


def test_unavailable_device_gives_a_one_line_reason():
    av = VerbsProvider(device="no-such-rdma-dev").availability()
    assert not av.ok and "RDMA device no-such-rdma-dev not found" in av.reason and "\n" not in av.reason
    with pytest.raises(errors.WSAEPROVIDERFAILEDINIT):
        VerbsProvider(device="no-such-rdma-dev").WSPStartup(Upcalls())


def _sends_in_order(cq, n: int, timeout: float = 60.0):
    comps = wait_cq(cq, n, timeout)
    assert len(comps) == n
    return comps


_PYVERBS_OBJECTS = {"fast_poll": False, "wr_templates": False}     # pyverbs' own WC/WR objects throughout


@pytest.mark.parametrize("pair", [({}, {"signal_every": 4}),
                                  ({}, {"signal_every": 4, "fence_delay": 0.05}),
                                  (_PYVERBS_OBJECTS, dict(_PYVERBS_OBJECTS, signal_every=4))],
                         indirect=True, ids=["fast_paths", "fence_delay", "pyverbs_objects"])
def test_burst_ending_on_unsignaled_sends_completes_every_overlapped_in_order(pair):
    """Selective signalling: most SENDs are unsignalled; each still completes, in posting order,
    including the tail that no signalled SEND follows (covered by a fence)."""
    a, s, b, cs = pair
    cq_a, cq_b = CompletionQueue("a"), CompletionQueue("b")
    n, size = 23, 200
    rbuf = bytearray(n * 256)
    a.WSPRegisterMemory(s, rbuf, MEM_WRITE)
    for i in range(n):
        a.WSPRecv(s, [memoryview(rbuf)[i * 256:(i + 1) * 256]], Overlapped(cq_a, i))
    sbuf = bytearray(os.urandom(n * size))
    b.WSPRegisterMemory(cs, sbuf, MEM_READ)
    for i in range(n):
        b.WSPSend(cs, [memoryview(sbuf)[i * size:(i + 1) * size]], Overlapped(cq_b, i))
    sent = _sends_in_order(cq_b, n)
    assert [(c.overlapped.context, c.error, c.transferred) for c in sent] == [(i, 0, size) for i in range(n)]
    got = wait_cq(cq_a, n)
    assert [(c.overlapped.context, c.error, c.transferred) for c in got] == [(i, 0, size) for i in range(n)]
    for i in range(n):
        assert rbuf[i * 256:i * 256 + size] == sbuf[i * size:(i + 1) * size]
    assert b.stats["unsignaled"] > 0            # the burst was selectively signalled
    assert b.stats["send"] == n
    fast = b.fast_poll
    assert (b.stats["fast_poll"], b.stats["wr_templates"], a.stats["wr_templates"]) == (fast, fast, fast)
    time.sleep(0.3)
    assert len(cq_b) == 0                       # each overlapped completed exactly once
    # a lone send after the burst (no signalled one pending) completes without waiting for a fence
    b.WSPSend(cs, [memoryview(sbuf)[:10]], Overlapped(cq_b, "lone"))
    a.WSPRecv(s, [memoryview(rbuf)[:256]], Overlapped(cq_a, "r"))
    (c,) = wait_cq(cq_b, 1)
    assert (c.overlapped.context, c.error, c.transferred) == ("lone", 0, 10)


@pytest.mark.parametrize("pair", [({}, {"signal_every": 64})], indirect=True)
def test_error_mid_burst_fails_every_outstanding_send(pair):
    """A SEND that fails (the receiver's posted buffer is too small) completes the unsignalled SENDs
    before it successfully, fails itself, and fails every SEND after it; the receiver's too-small
    receive and every receive after it fail."""
    a, s, b, cs = pair
    cq_a, cq_b = CompletionQueue("a"), CompletionQueue("b")
    ev_b = EventObject("close-b")
    b.WSPEventSelect(cs, ev_b, FD_CLOSE)
    rbuf = bytearray(8 * 256)
    a.WSPRegisterMemory(s, rbuf, MEM_WRITE)
    sizes = [256, 256, 256, 16, 256, 256, 256, 256]       # the 4th receive is too small for 100 bytes
    off = 0
    for i, n in enumerate(sizes):
        a.WSPRecv(s, [memoryview(rbuf)[off:off + n]], Overlapped(cq_a, i))
        off += n
    sbuf = bytearray(os.urandom(100))
    b.WSPRegisterMemory(cs, sbuf, MEM_READ)
    for i in range(8):
        b.WSPSend(cs, [memoryview(sbuf)], Overlapped(cq_b, i))
    comps = _sends_in_order(cq_b, 8)
    assert [c.overlapped.context for c in comps] == list(range(8))
    assert [(c.error, c.transferred) for c in comps[:3]] == [(0, 100)] * 3
    assert all(c.error != 0 and c.transferred == 0 for c in comps[3:])
    assert comps[3].error in (errors.WSAEMSGSIZE.wsa_code, errors.WSAECONNABORTED.wsa_code)
    assert ev_b.wait(30), "no FD_CLOSE on the sender"
    got = {c.overlapped.context: c for c in wait_cq(cq_a, 8)}
    assert [(got[i].error, got[i].transferred) for i in range(3)] == [(0, 100)] * 3
    assert all(got[i].error != 0 and got[i].transferred == 0 for i in range(3, 8))
    with pytest.raises(errors.WSAECONNRESET):
        b.WSPSend(cs, [memoryview(sbuf)], Overlapped(cq_b, "late"))
    time.sleep(0.3)
    assert len(cq_b) == 0                       # nothing completed twice


def test_send_lookup_across_registrations_and_the_send_queue_backlog():
    """More sends than the send queue holds wait in the backlog and complete in order; sends from
    several registered regions (and a view inside one) find their own region's key."""
    a, b = VerbsProvider(max_send_wr=4, signal_every=3), VerbsProvider()
    ua, ub = Upcalls(), Upcalls()
    a.WSPStartup(ua)
    b.WSPStartup(ub)
    try:
        port = random.randrange(20000, 60000)
        ls = b.WSPSocket()
        b.WSPBind(ls, ("127.0.0.1", port))
        b.WSPListen(ls, 4)
        acc_ev = EventObject("accept")
        b.WSPEventSelect(ls, acc_ev, FD_ACCEPT)
        cs = a.WSPSocket()
        a.WSPBind(cs, ("0.0.0.0", 0))
        con_ev = EventObject("connect")
        a.WSPEventSelect(cs, con_ev, FD_CONNECT)
        with pytest.raises(errors.WSAEWOULDBLOCK):
            a.WSPConnect(cs, ("127.0.0.1", port))
        assert acc_ev.wait(30)
        s = b.WSPAccept(ls, None, None)
        assert con_ev.wait(30) and a.WSPEnumNetworkEvents(cs).error(FD_CONNECT) == 0
        cq_a, cq_b = CompletionQueue("a"), CompletionQueue("b")
        rbuf = bytearray(20 * 64)
        b.WSPRegisterMemory(s, rbuf, MEM_WRITE)
        for i in range(20):
            b.WSPRecv(s, [memoryview(rbuf)[i * 64:(i + 1) * 64]], Overlapped(cq_b, i))
        regions = [bytearray(os.urandom(64)) for _ in range(3)]
        for r in regions:
            a.WSPRegisterMemory(cs, r, MEM_READ)
        big = bytearray(os.urandom(4096))
        a.WSPRegisterMemory(cs, big, MEM_READ)
        payloads = [regions[i % 3] for i in range(16)] + [memoryview(big)[1000:1064]] * 4
        for i, p in enumerate(payloads):
            a.WSPSend(cs, [memoryview(p)], Overlapped(cq_a, i))
        assert a.stats["send_backlog"] > 0
        comps = wait_cq(cq_a, 20)
        assert [(c.overlapped.context, c.error, c.transferred) for c in comps] == [(i, 0, 64) for i in range(20)]
        got = wait_cq(cq_b, 20)
        assert [c.overlapped.context for c in got] == list(range(20))
        for i, p in enumerate(payloads):
            assert rbuf[i * 64:(i + 1) * 64] == bytes(p)
        assert a.stats["bounce_copies"] == 0 and a.stats["temp_registrations"] == 0
    finally:
        a.WSPCleanup()
        b.WSPCleanup()


@pytest.mark.parametrize("pair", [({}, {"signal_every": 64}), ({}, dict(_PYVERBS_OBJECTS, signal_every=64))],
                         indirect=True, ids=["fast_paths", "pyverbs_objects"])
def test_unsignaled_tail_is_completed_by_a_fence(pair):
    """The first SEND (signalled) waits for a receive (RNR), so the 5 after it go unsignalled; when it
    completes nothing signalled follows them, and the fence's completion completes them, in order."""
    a, s, b, cs = pair
    cq_a, cq_b = CompletionQueue("a"), CompletionQueue("b")
    sbuf = bytearray(os.urandom(6 * 32))
    b.WSPRegisterMemory(cs, sbuf, MEM_READ)
    for i in range(6):
        b.WSPSend(cs, [memoryview(sbuf)[i * 32:(i + 1) * 32]], Overlapped(cq_b, i))
    assert b.stats["unsignaled"] == 5
    time.sleep(0.3)
    assert len(cq_b) == 0
    rbuf = bytearray(6 * 64)
    a.WSPRegisterMemory(s, rbuf, MEM_WRITE)
    for i in range(6):
        a.WSPRecv(s, [memoryview(rbuf)[i * 64:(i + 1) * 64]], Overlapped(cq_a, i))
    comps = wait_cq(cq_b, 6)
    assert [(c.overlapped.context, c.error, c.transferred) for c in comps] == [(i, 0, 32) for i in range(6)]
    assert b.stats["fence"] == 1 and b.stats["send"] == 6
    got = wait_cq(cq_a, 6)
    assert [(c.overlapped.context, c.transferred) for c in got] == [(i, 32) for i in range(6)]
    assert all(rbuf[i * 64:i * 64 + 32] == sbuf[i * 32:(i + 1) * 32] for i in range(6))
