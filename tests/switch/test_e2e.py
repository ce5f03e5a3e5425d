"""End to end across two real processes, over every provider (WSD-A*, WSD-N2, WSD-X*, WSD-D1).

The test process is the accepting application; tests/switch/peer.py, in
another process, is the connecting one.  Real sockets on 127.0.0.1, real
ZeroMQ (and every other available SAN provider).
"""
import hashlib
import json
import os
import subprocess
import sys
import threading
import time

import pytest

from switch_env import ALL, SAN, table_for
from peer import pattern
from wsd import errors
from wsd.spi import CF_ACCEPT, CF_REJECT

HERE = os.path.dirname(__file__)
SIZES = [64, 65536, 3 << 20]


def start_peer(cfg: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, os.path.join(HERE, "peer.py"), json.dumps(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())


def finish(proc: subprocess.Popen, timeout=60):
    out, err = proc.communicate(timeout=timeout)
    assert "Traceback" not in err, err
    lines = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
    return proc.returncode, lines, err


def listener(sw, host="127.0.0.1"):
    l = sw.socket()
    l.bind((host, 0))
    l.listen()
    l.settimeout(30)
    return l, l.getsockname()[1]


def steps_of(records):
    return [r.step for r in records]


@pytest.mark.parametrize("provider", ALL)
def test_accept_mediation_and_transfer(provider, switches):
    """WSD-A1 (tcp path), WSD-A2..A6 (order of steps), WSD-A3 (same thread), WSD-A4 (CF_ACCEPT), WSD-D1 (64 B .. 3 MiB)."""
    sw = switches(table_for(provider))
    trace = []
    sw.trace_sinks.append(trace.append)
    l, port = listener(sw)
    me = threading.get_ident()
    seen = {}

    def condition(caller_id, caller_data, callee_id, callee_data, callback_data):
        seen["thread"] = threading.get_ident()
        seen["callback_data"] = callback_data
        return CF_ACCEPT

    peer = start_peer({"provider": provider, "addr": ["127.0.0.1", port], "sizes": SIZES, "expect_reply": 64})
    s, addr = l.accept(condition, callback_data="cb")
    assert s.path == provider
    # WSD-A3: the application's condition function ran on the thread that called accept/WSPAccept
    assert seen == {"thread": me, "callback_data": "cb"}
    got = bytearray()
    total = sum(SIZES)
    while len(got) < total:
        d = s.recv(1 << 20)
        assert d, "early EOF"
        got += d
    expect = b"".join(pattern(n, i) for i, n in enumerate(SIZES))
    assert got == expect
    s.sendall(hashlib.sha256(got).hexdigest().encode())
    rc, lines, err = finish(peer)
    assert rc == 0 and lines[-1]["reply"] == hashlib.sha256(expect).hexdigest()
    s.close()
    l.close()
    st = steps_of(trace)
    assert "listen" in st
    if provider == "tcp":
        # WSD-A1: a non-SAN request is handled by the TCP/IP provider alone
        assert "tcp_FD_ACCEPT" in st and "WSPAccept" not in st and "negotiated" not in st
    else:
        # WSD-A2..A6 in order: event signalled, FD_ACCEPT, WSPAccept, condition, handle, ResetEvent, negotiation
        order = ["SetEvent", "WSPEnumNetworkEvents", "WSPAccept", "condition", "ResetEvent",
                 "WPUCreateSocketHandle", "WSPAccept_returned", "negotiation_in", "negotiation_out", "accepted"]
        pos = st.index("SetEvent")
        for step in order:
            pos = st.index(step, pos) + 1          # raises if a step is missing or out of order
        enum = next(r for r in trace if r.step == "WSPEnumNetworkEvents")
        assert "FD_ACCEPT" in enum.fields["events"]
        cond = next(r for r in trace if r.step == "condition")
        assert cond.fields["same_thread_as_WSPAccept"] is True
        # WSD-A5: the provider stored the switch's descriptor and returned its own
        ret = next(r for r in trace if r.step == "WSPAccept_returned")
        made = next(r for r in trace if r.step == "WPUCreateSocketHandle"
                    and r.fields["provider_socket"] == ret.fields["provider_socket"])
        assert made.fields["switch_socket"] == ret.fields["switch_socket"]
        assert sw.WPUQuerySocketHandle(ret.fields["switch_socket"]) is None   # closed now: released


@pytest.mark.parametrize("provider", SAN)
def test_reject_gives_peer_WSAECONNREFUSED_after_condition_WSD_A7_A8(provider, switches):
    """WSD-A4 (CF_REJECT), WSD-A7 (WSPAccept fails with WSAECONNREFUSED), WSD-A8 (peer told only afterwards)."""
    sw = switches(table_for(provider))
    l, port = listener(sw)
    marks = {}

    def condition(*args):
        marks["start"] = time.monotonic()
        time.sleep(0.3)                       # the peer must not learn the verdict before we return
        marks["end"] = time.monotonic()
        return CF_REJECT

    peer = start_peer({"provider": provider, "addr": ["127.0.0.1", port]})
    with pytest.raises(errors.WSAECONNREFUSED):
        l.accept(condition)
    rc, lines, err = finish(peer)
    assert rc == 1 and lines[0] == {"connected": False, "error": "WSAECONNREFUSED", "t": lines[0]["t"]}
    assert lines[0]["t"] >= marks["end"]      # WSD-A8
    l.close()


def test_reject_on_tcp_path_resets_the_peer(switches):
    sw = switches()
    l, port = listener(sw)
    peer = start_peer({"provider": "tcp", "addr": ["127.0.0.1", port], "hold": 5})
    with pytest.raises(errors.WSAECONNREFUSED):
        l.accept(lambda *a: CF_REJECT)
    rc, lines, err = finish(peer)
    r = lines[0]
    # the kernel completed the handshake before the condition ran, so the peer sees a reset or EOF
    # (at connect or at its first receive), never a successful exchange
    assert (r.get("error") == "WSAECONNRESET" or r.get("recv_error") == "WSAECONNRESET"
            or r.get("recv") == 0), lines
    l.close()


@pytest.mark.parametrize("provider", SAN)
def test_queued_requests_are_not_lost_WSD_A6(provider, switches):
    """WSD-A6: ResetEvent then SetEvent again while requests are queued: none is lost."""
    sw = switches(table_for(provider))
    l, port = listener(sw)
    peers = [start_peer({"provider": provider, "addr": ["127.0.0.1", port], "sizes": [8]}) for _ in range(4)]
    time.sleep(1.0)                           # let all four requests queue up before the first accept
    got = []
    for _ in range(4):
        s, _ = l.accept()
        got.append(s.recv(8))
        s.close()
    assert got == [pattern(8, 0)] * 4
    for p in peers:
        assert finish(p)[0] == 0
    l.close()


@pytest.mark.parametrize("provider", [p for p in SAN if p == "zmq"])
@pytest.mark.parametrize("flow_control", [False, True])
def test_negotiation_before_receives_posted_is_delivered_in_order_WSD_N2(provider, flow_control, switches):
    """WSD-N2: the negotiation message (and data) arriving before any receive is posted is held and delivered."""
    sw = switches(table_for(provider), provider_options={provider: {"faults": {"delay_post": 0.4},
                                                                    "flow_control": flow_control}})
    l, port = listener(sw)
    peer = start_peer({"provider": provider, "addr": ["127.0.0.1", port], "sizes": [100] * 20 + [70000],
                       "opts": {"flow_control": flow_control}})
    s, _ = l.accept()
    got = bytearray()
    want = b"".join(pattern(n, i) for i, n in enumerate([100] * 20 + [70000]))
    while len(got) < len(want):
        d = s.recv(1 << 20)
        assert d
        got += d
    assert got == want
    stats = sw.providers[provider].stats
    if flow_control:
        assert stats["rnr_held"] >= 1 and stats["private_buffered"] == 0
    else:
        assert stats["private_buffered"] >= 1 and stats["private_copied"] == stats["private_buffered"]
    assert finish(peer)[0] == 0
    s.close()
    l.close()


@pytest.mark.parametrize("provider", ALL)
def test_accept_ex_completes_with_first_data_WSD_X1(provider, switches):
    """WSD-X1: AcceptEx with an initial buffer completes only with the peer's first data."""
    sw = switches(table_for(provider))
    l, port = listener(sw)
    peer = start_peer({"provider": provider, "addr": ["127.0.0.1", port], "sizes": [300],
                       "delay_before_send": 0.5})
    t0 = time.monotonic()
    s, addr, first = l.accept_ex(4096)
    assert time.monotonic() - t0 >= 0.45          # it waited for the data, not just the connection
    assert first == pattern(300, 0)
    assert finish(peer)[0] == 0
    s.close()
    l.close()


@pytest.mark.parametrize("provider", SAN)
def test_cancel_closes_the_accepting_san_socket_WSD_X2(provider, switches):
    """WSD-X2: cancelling the accept calls WSPCloseSocket on the accepting SAN socket."""
    sw = switches(table_for(provider))
    trace = []
    sw.trace_sinks.append(trace.append)
    l, port = listener(sw)
    peer = start_peer({"provider": provider, "addr": ["127.0.0.1", port], "hold": 10})
    result = {}

    def run():
        try:
            l.accept_ex(100)
        except errors.WsaError as e:
            result["error"] = e
    t = threading.Thread(target=run)
    t.start()
    # the bound covers the peer process's start-up, which takes 3-20 s in the TCG guest (verbs)
    deadline = time.monotonic() + 60
    while "negotiated" not in steps_of(trace) and time.monotonic() < deadline and t.is_alive():
        time.sleep(0.02)
    assert "negotiated" in steps_of(trace)
    l.cancel()
    t.join(10)
    assert isinstance(result.get("error"), errors.WSA_OPERATION_ABORTED)
    close = [r for r in trace if r.step == "WSPCloseSocket"]
    assert close and close[0].fields["reason"] == "accept cancelled"
    ps = close[0].fields["socket"]
    with pytest.raises(errors.WSAENOTSOCK):        # the provider's accepting socket is gone
        sw.providers[provider].WSPGetSockName(ps)
    rc, lines, err = finish(peer)
    assert lines[-1].get("recv_error") in ("WSAECONNRESET", "WSAECONNABORTED") or lines[-1].get("recv") == 0
    l.close()


@pytest.mark.parametrize("provider", [p for p in SAN if p == "zmq"])
def test_rdma_write_path_when_acceptor_cannot_read_WSD_D1(provider, switches):
    sw = switches(table_for(provider), provider_options={provider: {"rdma_read": False}})
    l, port = listener(sw)
    peer = start_peer({"provider": provider, "addr": ["127.0.0.1", port], "sizes": [1 << 20]})
    s, _ = l.accept()
    got = bytearray()
    while len(got) < 1 << 20:
        got += s.recv(1 << 20)
    assert got == pattern(1 << 20, 0)
    assert s.connection.core.stats["bytes_in"] == 1 << 20
    assert finish(peer)[0] == 0
    s.close()
    l.close()


@pytest.mark.parametrize("provider", [p for p in SAN if p == "zmq"])
def test_unregistrable_memory_gives_WSAENOBUFS_WSD_D1(provider, switches):
    sw = switches(table_for(provider), provider_options={provider: {"faults": {"max_registered_bytes": 1 << 20}}})
    l, port = listener(sw)
    c = switches(table_for(provider), provider_options={provider: {"faults": {"max_registered_bytes": 1 << 20}}})
    s = c.socket()
    s.settimeout(20)
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("a", l.accept()))   # a SAN connect waits for accept
    t.start()
    s.connect(("127.0.0.1", port))
    t.join(20)
    a, _ = box["a"]
    with pytest.raises(errors.WSAENOBUFS):
        s.sendall(os.urandom(2 << 20))
    s.sendall(b"still fine")
    assert a.recv(100) == b"still fine"
    s.close()
    a.close()
    l.close()
