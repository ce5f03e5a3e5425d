"""The shm SAN provider at the SPI level (WSD-A2..A8, WSD-N2, WSD-D1 registered memory), in and across processes.

Real shared memory, real Unix sockets, real child processes; the switch above the provider is a real
``wsd.Switch`` (its upcalls), driven by hand as the switch would.
"""
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from wsd import errors
from wsd.events import CompletionQueue, EventObject, Overlapped, wait_any
from wsd.spi import CF_ACCEPT, CF_REJECT, FD_ACCEPT, FD_CLOSE, FD_CONNECT, MEM_READ, MEM_WRITE
from wsd_shm import segments_of
from wsd_shm.wire import RdmaDescriptor

HERE = os.path.dirname(__file__)
PORT = 5000


@pytest.fixture
def closing():
    objs = []
    yield objs.append
    for o in objs:
        o.close()


def listen(p, closing, port=PORT, backlog=8):
    s = p.WSPSocket()
    p.WSPBind(s, ("127.0.0.1", port))
    p.WSPListen(s, backlog)
    ev = EventObject("listen")
    closing(ev)
    p.WSPEventSelect(s, ev, FD_ACCEPT)
    return s, ev


def start_connect(p, closing, port=PORT):
    s = p.WSPSocket()
    p.WSPBind(s, ("0.0.0.0", 0))
    ev = EventObject("connect")
    closing(ev)
    p.WSPEventSelect(s, ev, FD_CONNECT | FD_CLOSE)
    with pytest.raises(errors.WSAEWOULDBLOCK):
        p.WSPConnect(s, ("127.0.0.1", port))
    return s, ev


def connect_result(p, s, ev, timeout=5.0) -> int:
    assert ev.wait(timeout), "no FD_CONNECT"
    ne = p.WSPEnumNetworkEvents(s)
    assert ne.network_events & FD_CONNECT
    return ne.error(FD_CONNECT)


def accept(p, l, ev, condition=None, data=None, timeout=5.0):
    assert ev.wait(timeout), "no FD_ACCEPT"
    ne = p.WSPEnumNetworkEvents(l)
    assert ne.network_events & FD_ACCEPT                               # WSD-A2
    return p.WSPAccept(l, condition, data)


def pair(make, closing, **opts):
    a, b = make(**opts), make(**opts)
    l, lev = listen(a, closing)
    c, cev = start_connect(b, closing)
    acc = accept(a, l, lev)
    assert connect_result(b, c, cev) == 0
    return a, acc, b, c


def take(cq, n, timeout=5.0):
    """n completions from cq (in order), waiting on its eventfd."""
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        out += cq.poll(n - len(out))
        if len(out) >= n:
            break
        left = deadline - time.monotonic()
        assert left > 0, f"only {len(out)} of {n} completions"
        wait_any([cq], left)
    return out


def cq_(closing, name=""):
    cq = CompletionQueue(name)
    closing(cq)
    return cq


# ---------------------------------------------------------------- accept / reject

def test_reject_then_accept_WSD_A3_A5_A7_A8(providers, closing):
    a, b = providers(), providers()
    l, lev = listen(a, closing)
    c, cev = start_connect(b, closing)
    seen = {}

    def reject(caller, caller_data, callee, callee_data, cb):
        seen["thread"] = threading.get_ident()
        seen["args"] = (caller[0], callee, cb)
        time.sleep(0.2)
        # WSD-A8: the peer has not been told anything while the condition function runs
        seen["told_early"] = cev.is_set()
        return CF_REJECT

    with pytest.raises(errors.WSAECONNREFUSED):                        # WSD-A7
        accept(a, l, lev, reject, "cb")
    assert seen == {"thread": threading.get_ident(), "args": ("127.0.0.1", ("127.0.0.1", PORT), "cb"),
                    "told_early": False}                             # WSD-A3
    assert connect_result(b, c, cev) == errors.WSAECONNREFUSED.wsa_code
    assert not lev.is_set()                                          # WSD-A6: reset
    b.WSPCloseSocket(c)
    # a second request is accepted: WPUCreateSocketHandle gave the switch's descriptor (WSD-A5)
    c, cev = start_connect(b, closing)
    acc = accept(a, l, lev, lambda *args: CF_ACCEPT)
    assert connect_result(b, c, cev) == 0
    h = a.WSPSwitchSocket(acc)
    assert a.upcalls.WPUQuerySocketHandle(h) == ("shm", acc)
    assert a.WSPGetPeerName(acc)[0] == "127.0.0.1"
    for p, s in ((a, acc), (b, c), (a, l)):
        p.WSPCloseSocket(s)
    assert not os.listdir(a.shm_dir)                                 # listener's rendezvous socket removed


def test_queued_requests_resignal_WSD_A6(providers, closing):
    a, b = providers(), providers()
    l, lev = listen(a, closing)
    conns = [start_connect(b, closing) for _ in range(3)]
    deadline = time.monotonic() + 5
    while a.stats["requests"] < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    accepted = []
    for _ in range(3):
        accepted.append(accept(a, l, lev))          # each accept finds the event signalled again
    for s, ev in conns:
        assert connect_result(b, s, ev) == 0
    with pytest.raises(errors.WSAEWOULDBLOCK):
        a.WSPAccept(l, None, None)
    for s in accepted:
        a.WSPCloseSocket(s)
    for s, _ in conns:
        b.WSPCloseSocket(s)
    a.WSPCloseSocket(l)


def test_no_listener_and_fault_reject(providers, closing):
    b = providers()
    c, cev = start_connect(b, closing, port=PORT + 1)
    assert connect_result(b, c, cev) == errors.WSAECONNREFUSED.wsa_code
    a = providers(faults={"reject": True})
    l, lev = listen(a, closing)
    c2, cev2 = start_connect(b, closing)
    assert connect_result(b, c2, cev2) == errors.WSAECONNREFUSED.wsa_code
    assert not lev.is_set()
    for s in (c, c2):
        b.WSPCloseSocket(s)
    a.WSPCloseSocket(l)


# ---------------------------------------------------------------- data

def test_posted_receives_get_messages_in_order(providers, closing):
    a, acc, b, c = pair(providers, closing)
    rcq, scq = cq_(closing), cq_(closing)
    bufs = [bytearray(100) for _ in range(4)]
    for i, buf in enumerate(bufs):
        a.WSPRecv(acc, [memoryview(buf)], Overlapped(rcq, i))
    msgs = [b"x" * n for n in (1, 0, 100, 57)]
    for m in msgs:
        b.WSPSend(c, [m], Overlapped(scq, len(m)))
    assert [(x.error, x.transferred) for x in take(scq, 4)] == [(0, len(m)) for m in msgs]
    got = take(rcq, 4)
    assert [x.overlapped.context for x in got] == [0, 1, 2, 3]       # one message per buffer, in order
    assert [bytes(bufs[i][:x.transferred]) for i, x in enumerate(got)] == msgs
    a.WSPCloseSocket(acc)
    b.WSPCloseSocket(c)


def test_early_messages_stay_in_the_ring_and_are_copied_in_order_WSD_N2(providers, closing):
    a, acc, b, c = pair(providers, closing)
    scq, rcq = cq_(closing), cq_(closing)
    msgs = [hashlib.sha256(b"%d" % i).digest() * (1 + i % 7) for i in range(200)]
    for m in msgs:
        b.WSPSend(c, [m], Overlapped(scq))
    assert all(x.error == 0 for x in take(scq, len(msgs)))
    time.sleep(0.2)                                # nothing posted yet: the messages wait in the ring
    assert a.stats["moved"] == 0
    got = []
    for i in range(len(msgs)):                     # posted late, one at a time: copied 1:1, in order
        buf = bytearray(256)
        a.WSPRecv(acc, [memoryview(buf)], Overlapped(rcq, i))
        (x,) = take(rcq, 1)
        assert x.error == 0 and x.overlapped.context == i
        got.append(bytes(buf[:x.transferred]))
    assert got == msgs
    a.WSPCloseSocket(acc)
    b.WSPCloseSocket(c)


def test_delay_post_fault_keeps_order(providers, closing):
    a, acc, b, c = pair(providers, closing, faults={"delay_post": 0.3})
    rcq, scq = cq_(closing), cq_(closing)
    bufs = [bytearray(16) for _ in range(8)]
    for i, buf in enumerate(bufs):
        a.WSPRecv(acc, [memoryview(buf)], Overlapped(rcq, i))
    for i in range(8):
        b.WSPSend(c, [b"%02d" % i], Overlapped(scq))
    time.sleep(0.1)
    assert not rcq.poll()                          # receives not visible yet
    got = take(rcq, 8, timeout=3)
    assert [bytes(bufs[x.overlapped.context][:x.transferred]) for x in got] == [b"%02d" % i for i in range(8)]
    a.WSPCloseSocket(acc)
    b.WSPCloseSocket(c)


def test_message_larger_than_posted_buffer_resets(providers, closing):
    a, acc, b, c = pair(providers, closing)
    rcq, scq = cq_(closing), cq_(closing)
    ev = EventObject("close")
    closing(ev)
    a.WSPEventSelect(acc, ev, FD_CLOSE)
    a.WSPRecv(acc, [memoryview(bytearray(10))], Overlapped(rcq))
    b.WSPSend(c, [b"y" * 11], Overlapped(scq))
    (x,) = take(rcq, 1)
    assert x.error == errors.WSAEMSGSIZE.wsa_code
    assert ev.wait(2) and a.WSPEnumNetworkEvents(acc).error(FD_CLOSE) == errors.WSAEMSGSIZE.wsa_code
    a.WSPCloseSocket(acc)
    b.WSPCloseSocket(c)


def test_close_delivers_queued_data_then_fails_receives_with_FD_CLOSE(providers, closing):
    a, acc, b, c = pair(providers, closing)
    rcq, scq = cq_(closing), cq_(closing)
    ev = EventObject("close")
    closing(ev)
    a.WSPEventSelect(acc, ev, FD_CLOSE)
    for i in range(3):
        b.WSPSend(c, [b"last%d" % i], Overlapped(scq))
    b.WSPCloseSocket(c)
    assert ev.wait(2)
    assert a.WSPEnumNetworkEvents(acc).error(FD_CLOSE) == errors.WSAECONNRESET.wsa_code
    bufs = [bytearray(16) for _ in range(5)]
    for i, buf in enumerate(bufs):
        a.WSPRecv(acc, [memoryview(buf)], Overlapped(rcq, i))
    got = take(rcq, 5)
    assert [(x.error, bytes(bufs[i][:x.transferred])) for i, x in enumerate(got)] == [
        (0, b"last0"), (0, b"last1"), (0, b"last2"),
        (errors.WSAECONNRESET.wsa_code, b""), (errors.WSAECONNRESET.wsa_code, b"")]
    with pytest.raises(errors.WSAECONNRESET):
        a.WSPSend(acc, [b"z"], Overlapped(scq))
    a.WSPCloseSocket(acc)


# ---------------------------------------------------------------- registered memory

def test_rdma_read_and_write_in_process_with_checks_WSD_D1(providers, closing):
    a, acc, b, c = pair(providers, closing)
    cq = cq_(closing)
    src = bytearray(os.urandom(100_000))
    d = RdmaDescriptor.unpack(b.WSPRegisterRdmaMemory(c, src, MEM_READ))
    desc = d.pack()
    target = bytearray(1000)
    a.WSPRdmaRead(acc, [memoryview(target)], desc, 5000, Overlapped(cq, "r"))
    (x,) = take(cq, 1)
    assert (x.error, x.transferred) == (0, 1000) and target == src[5000:6000]
    # out of bounds, write to a read-only region, a forged key: WSAEACCES, nothing copied
    a.WSPRdmaRead(acc, [memoryview(target)], desc, 99_500, Overlapped(cq))
    a.WSPRdmaWrite(acc, [b"w" * 10], desc, 0, Overlapped(cq))
    forged = RdmaDescriptor(access=d.access, key=d.key ^ 2, length=d.length, segment=d.segment).pack()
    a.WSPRdmaRead(acc, [memoryview(target)], forged, 0, Overlapped(cq))
    assert [x.error for x in take(cq, 3)] == [errors.WSAEACCES.wsa_code] * 3
    assert src[:10] != b"w" * 10
    # a write region: the peer's bytes reach the caller's buffer at deregistration
    dst = bytearray(64)
    wdesc = b.WSPRegisterRdmaMemory(c, dst, MEM_WRITE)
    a.WSPRdmaWrite(acc, [b"hello", b" world"], wdesc, 3, Overlapped(cq))
    assert take(cq, 1)[0].error == 0
    b.WSPDeregisterRdmaMemory(c, wdesc)
    assert dst[3:14] == b"hello world"
    # after deregistration the descriptor is dead
    b.WSPDeregisterRdmaMemory(c, desc)
    a.WSPRdmaRead(acc, [memoryview(target)], desc, 0, Overlapped(cq))
    assert take(cq, 1)[0].error == errors.WSAEACCES.wsa_code
    a.WSPCloseSocket(acc)
    b.WSPCloseSocket(c)


def test_max_registered_bytes_gives_WSAENOBUFS(providers, closing):
    a, acc, b, c = pair(providers, closing, faults={"max_registered_bytes": 1 << 20})
    d1 = b.WSPRegisterRdmaMemory(c, bytearray(600_000), MEM_READ)
    with pytest.raises(errors.WSAENOBUFS):
        b.WSPRegisterRdmaMemory(c, bytearray(600_000), MEM_READ)
    b.WSPDeregisterRdmaMemory(c, d1)
    b.WSPDeregisterRdmaMemory(c, b.WSPRegisterRdmaMemory(c, bytearray(600_000), MEM_READ))
    a.WSPCloseSocket(acc)
    b.WSPCloseSocket(c)


def segments_gone(pid: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while segments_of(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _child(cfg):
    return subprocess.Popen([sys.executable, os.path.join(HERE, "child.py"), json.dumps(cfg)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _line(proc):
    line = proc.stdout.readline()
    assert line, proc.stderr.read()
    return json.loads(line)


def test_rdma_between_processes_bytes_checked_WSD_D1(providers, closing, shm_dir):
    a = providers()
    l, lev = listen(a, closing)
    size = 3 << 20
    child = _child({"mode": "rdma", "port": PORT, "dir": shm_dir, "size": size})
    try:
        acc = accept(a, l, lev, timeout=10)
        cq = cq_(closing)
        bufs = [bytearray(256) for _ in range(2)]
        for i, buf in enumerate(bufs):
            a.WSPRecv(acc, [memoryview(buf)], Overlapped(cq, i))
        got = take(cq, 2, timeout=10)
        d_read, d_write = (bytes(bufs[i][:x.transferred]) for i, x in enumerate(got))
        assert _line(child)["sent"]
        target = bytearray(size)
        a.WSPRdmaRead(acc, [memoryview(target)], d_read, 0, Overlapped(cq, "r"))
        assert take(cq, 1)[0].error == 0
        assert target == hashlib.shake_256(f"1:{size}".encode()).digest(size)
        payload = os.urandom(size)
        a.WSPRdmaWrite(acc, [payload], d_write, 0, Overlapped(cq, "w"))
        assert take(cq, 1)[0].error == 0
        child.stdin.write("done\n")
        child.stdin.flush()
        assert _line(child)["written"] == hashlib.sha256(payload).hexdigest()
        out, err = child.communicate(timeout=10)
        assert child.returncode == 0, err
        a.WSPCloseSocket(acc)
    finally:
        if child.returncode is None:
            child.kill()
            child.communicate()
    a.WSPCloseSocket(l)
    assert not segments_of(child.pid)


def test_sigkilled_peer_is_noticed_and_its_segments_unlinked(providers, closing, shm_dir):
    a = providers()
    l, lev = listen(a, closing)
    child = _child({"mode": "die", "port": PORT, "dir": shm_dir, "messages": 5})
    try:
        acc = accept(a, l, lev, timeout=10)
        ev = EventObject("close")
        closing(ev)
        a.WSPEventSelect(acc, ev, FD_CLOSE)
        info = _line(child)
        assert info["ready"] and segments_of(info["pid"])           # its registered region exists
        cq = cq_(closing)
        bufs = [bytearray(16) for _ in range(3)]
        for i, buf in enumerate(bufs):
            a.WSPRecv(acc, [memoryview(buf)], Overlapped(cq, i))
        assert [x.error for x in take(cq, 3)] == [0, 0, 0]
        t0 = time.monotonic()
        os.kill(child.pid, signal.SIGKILL)
        child.wait(5)
        assert ev.wait(2), "no FD_CLOSE after the peer was killed"
        assert time.monotonic() - t0 < 2
        assert a.WSPEnumNetworkEvents(acc).error(FD_CLOSE) == errors.WSAECONNRESET.wsa_code
        # what the peer published before it died is delivered, then receives fail
        more = [bytearray(16) for _ in range(3)]
        for i, buf in enumerate(more):
            a.WSPRecv(acc, [memoryview(buf)], Overlapped(cq, 10 + i))
        got = take(cq, 3)
        assert [(x.error, bytes(more[i][:x.transferred])) for i, x in enumerate(got)] == [
            (0, b"m3"), (0, b"m4"), (errors.WSAECONNRESET.wsa_code, b"")]
        assert segments_gone(child.pid, 2)                           # the survivor unlinked them
        a.WSPCloseSocket(acc)
    finally:
        if child.returncode is None:
            child.kill()
            child.communicate()
    a.WSPCloseSocket(l)


def test_sigkilled_connector_after_accept_leaves_no_segment(providers, closing, shm_dir):
    # the child registered a region and is killed with nothing posted on our side
    a = providers()
    l, lev = listen(a, closing)
    child = _child({"mode": "die", "port": PORT, "dir": shm_dir, "messages": 0})
    try:
        acc = accept(a, l, lev, timeout=10)
        info = _line(child)
        os.kill(info["pid"], signal.SIGKILL)
        child.wait(5)
        assert segments_gone(info["pid"], 2)
        a.WSPCloseSocket(acc)
    finally:
        if child.returncode is None:
            child.kill()
            child.communicate()
    a.WSPCloseSocket(l)


def test_stale_rendezvous_file_of_a_dead_listener_is_replaced(providers, closing, shm_dir):
    import socket
    path = os.path.join(shm_dir, f"l-127.0.0.1-{PORT}")
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    dead.bind(path)                 # bound, never listening, closed without unlink: like a killed listener
    dead.close()
    b = providers()
    c, cev = start_connect(b, closing)
    assert connect_result(b, c, cev) == errors.WSAECONNREFUSED.wsa_code
    b.WSPCloseSocket(c)
    a = providers()
    l, lev = listen(a, closing)     # the stale file is replaced
    c, cev = start_connect(b, closing)
    acc = accept(a, l, lev)
    assert connect_result(b, c, cev) == 0
    for p, s in ((a, acc), (b, c), (a, l)):
        p.WSPCloseSocket(s)
    assert not os.path.exists(path)
