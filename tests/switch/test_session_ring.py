"""The session core's receive ring, driven with no sockets (sansio_pair plays the NIC).

Posted buffers are spans of ``recv_ring``; completions commit them with their real
length (a short message leaves no stale bytes for the ring's consumer); DATA stays
in its span until the application consumed it; credits are granted exactly when a
slot is reposted, as with fixed buffers.
"""
import struct

import pytest

import wsd_ring
from sansio_pair import Pair
from wsd import errors
from wsd.core import session as S
from wsd.core.wire import MSG_CREDIT, MSG_DATA, ControlHeader


def addr(view) -> int:
    from wsd_ring._ring import ffi
    with ffi.from_buffer(memoryview(view)) as p:
        return int(ffi.cast("uintptr_t", p))


def in_ring(view, ring) -> bool:
    base = addr(ring.memory)
    a = addr(view)
    return base + wsd_ring.HDR_SIZE <= a and a + len(view) <= base + len(ring.memory)


def test_posted_buffers_are_distinct_spans_of_the_ring():
    p = S.SessionProtocol(S.Role.ACCEPTOR, S.SessionConfig(recv_count=8, recv_size=4096))
    acts = p.start(0.0)
    assert [type(a) for a in acts] == [S.PostRecv] * 8
    bufs = [p.recv_buffers[a.index] for a in acts]
    assert all(in_ring(b, p.recv_ring) and len(b) == 4096 for b in bufs)
    starts = sorted(addr(b) for b in bufs)
    assert all(b - a >= 4096 for a, b in zip(starts, starts[1:]))       # no overlap
    assert p.recv_ring.posted == 8 and p.recv_ring.head == 0            # nothing committed yet
    assert p.recv_ring.capacity >= S.recv_ring_capacity(p.config)


def test_data_is_committed_with_its_real_length_and_read_from_the_span():
    pr = Pair(S.SessionConfig(recv_count=8, recv_size=4096), S.SessionConfig(recv_count=8, recv_size=4096))
    pr.start()
    a = pr.a.p
    ring = a.recv_ring
    head0 = ring.head
    pr.send(pr.c, b"hello")
    # one record of header + payload, then a FILL record over the rest of the 4096-byte span
    assert ring.head - head0 == wsd_ring.record_size(4096)
    e = a._incoming[0]
    assert in_ring(e.view, ring) and bytes(e.view) == b"hello"
    slot = e.slot
    assert slot not in a._posted
    buf = bytearray(100)
    n, acts = a.recv_into(buf, 0.0)
    assert buf[:n] == b"hello"
    assert any(isinstance(x, S.PostRecv) and x.index == slot for x in acts)   # reposted: a fresh span
    assert in_ring(a.recv_buffers[slot], ring) and addr(a.recv_buffers[slot]) != addr(e.view)


def test_ring_consumer_never_sees_stale_bytes_after_a_short_message():
    """A 5-byte message in a span that held 4000 stale bytes: the ring publishes exactly
    the message (header + 5 bytes); the stale rest is a FILL record peek skips."""
    a = S.SessionProtocol(S.Role.ACCEPTOR, S.SessionConfig(recv_count=4, recv_size=4096))
    acts = a.start(0.0)
    idx = acts[0].index
    from wsd.core.wire import NegotiateMessage
    neg = NegotiateMessage(posted_receives=4, receive_size=4096).pack()
    a.recv_buffers[idx][:] = b"\xee" * 4096
    a.recv_buffers[idx][:len(neg)] = neg
    a.on_recv_complete(idx, len(neg), 0.0)
    msgs = a.recv_ring.peek()
    assert [bytes(m) for m in msgs] == [neg]


def test_out_of_order_completions_commit_in_ring_order():
    """Completions for later spans first: the ring publishes nothing until the first span
    completes, then all of them at once, in posting order; data is delivered as completed."""
    pr = Pair(S.SessionConfig(recv_count=8, recv_size=1024), S.SessionConfig(recv_count=8, recv_size=1024))
    pr.start()
    a, side = pr.a.p, pr.a
    ring = a.recv_ring
    msgs = []
    for i in range(3):
        hdr = ControlHeader(type=MSG_DATA, credits=0, length=4).pack()
        msgs.append(hdr + struct.pack("<I", i))
    order = list(side.posted)[:3]
    for _ in range(3):
        side.posted.popleft()
    head0 = ring.head
    # complete the third, then the second: nothing committed (the first is still posted)
    for k in (2, 1):
        a.recv_buffers[order[k]][:len(msgs[k])] = msgs[k]
        pr.apply(side, a.on_recv_complete(order[k], len(msgs[k]), 0.0))
        assert ring.head == head0
    a.recv_buffers[order[0]][:len(msgs[0])] = msgs[0]
    pr.apply(side, a.on_recv_complete(order[0], len(msgs[0]), 0.0))
    assert ring.head - head0 == 3 * wsd_ring.record_size(1024)
    assert [bytes(v) for v in ring.peek()][-3:] == msgs              # ring order = posting order
    got = bytearray(64)
    n, acts = a.recv_into(got, 0.0)
    assert bytes(got[:n]) == struct.pack("<III", 2, 1, 0)            # completion order, as delivered


def test_credits_are_granted_exactly_when_slots_are_reposted():
    """The credit accounting is the slots': unread DATA holds its slot (no credit) however
    the ring is used; reading it reposts the slot and grants the credit."""
    cfg = S.SessionConfig(recv_count=4, recv_size=1024)
    pr = Pair(cfg, S.SessionConfig(recv_count=4, recv_size=1024))
    pr.start()
    c, a = pr.c.p, pr.a.p
    start = c.send_credits
    for i in range(start - 1):                      # data keeps one credit in reserve
        pr.send(pr.c, bytes([i]) * 10)
    assert c.send_credits == 1
    op = pr.send(pr.c, b"z" * 10)
    assert not op.done                              # blocked on credits: the receiver holds 3 slots
    assert len(a._posted) == cfg.recv_count - (start - 1)
    out = pr.read_all(pr.a)
    assert out == b"".join(bytes([i]) * 10 for i in range(start - 1)) + b"z" * 10
    assert op.done and len(a._posted) == cfg.recv_count


def test_control_messages_behind_unread_data_are_copied_out_not_lost():
    """Consumed control messages (CREDITs) pile up in the ring behind DATA the application
    has not read: when the ring has no room for a fresh span, the unread DATA is copied out
    of the ring and the space released; the data and the credits are unchanged."""
    cfg = S.SessionConfig(recv_count=4, recv_size=1024)
    pr = Pair(S.SessionConfig(recv_count=4, recv_size=1024), cfg)
    pr.start()
    a = pr.a.p
    pr.send(pr.c, b"first")                          # DATA that nobody reads for a while
    posted_before = set(a._posted)
    cap_spans = a.recv_ring.capacity // wsd_ring.record_size(1024)
    credit = ControlHeader(type=MSG_CREDIT, credits=0, length=0).pack()
    for _ in range(3 * cap_spans):                  # far more control messages than the ring holds
        i = pr.a.posted.popleft()
        a.recv_buffers[i][:len(credit)] = credit
        acts = a.on_recv_complete(i, len(credit), 0.0)
        pr.apply(pr.a, [x for x in acts if not isinstance(x, S.PostSend)])
        a.peer_credits = a.config.recv_count        # (we forge CREDITs: keep the overrun check quiet)
        a.owed_credits = 0
        assert a.state is S.State.CONNECTED
    assert a.stats["ring_copy_out"] >= 1
    assert set(a._posted) == posted_before          # the DATA slot is still held (no credit for it)
    buf = bytearray(64)
    n, acts = a.recv_into(buf, 0.0)
    assert bytes(buf[:n]) == b"first"
    assert any(isinstance(x, S.PostRecv) for x in acts)


def test_given_ring_must_be_big_enough_and_empty():
    cfg = S.SessionConfig(recv_count=4, recv_size=1024)
    small = wsd_ring.Ring.create(1024, eventfds=False)
    with pytest.raises(errors.WSAEINVAL):
        S.SessionProtocol(S.Role.ACCEPTOR, cfg, recv_ring=small)
    shared = wsd_ring.Ring.create(S.recv_ring_capacity(cfg), f"wsd-test-recvring-{id(cfg)}", eventfds=False)
    try:
        p = S.SessionProtocol(S.Role.ACCEPTOR, cfg, recv_ring=shared)   # e.g. in shared memory
        p.start(0.0)
        assert all(in_ring(p.recv_buffers[i], shared) for i in range(4))
    finally:
        shared.close()
        shared.unlink()


def test_close_ring_unmaps_without_dangling_views():
    p = S.SessionProtocol(S.Role.ACCEPTOR, S.SessionConfig(recv_count=4, recv_size=1024))
    p.start(0.0)
    v = p.recv_buffers[0]
    p.close_ring()
    assert p.recv_buffers == [None] * 4
    v[:3] = b"abc"                                   # a view still alive keeps the mapping
    assert bytes(v[:3]) == b"abc"


# --- property test: random traffic, completion orders and reads against a byte model ------------
from hypothesis import HealthCheck, event, given, settings   # noqa: E402
from hypothesis import strategies as st                     # noqa: E402

from wsd.core.wire import NegotiateMessage                  # noqa: E402

_ops = st.lists(st.one_of(
    st.tuples(st.just("data"), st.integers(0, 1016), st.integers(0, 1)),
    st.tuples(st.just("credit"), st.just(0), st.integers(0, 1)),
    st.tuples(st.just("read"), st.integers(1, 3000), st.just(0)),
    st.tuples(st.just("view"), st.integers(1, 3000), st.just(0)),
), min_size=10, max_size=300)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(recv_count=st.integers(2, 6), ops=_ops)
def test_random_traffic_keeps_bytes_credits_and_ring_consistent(recv_count, ops):
    """A forged peer sends DATA and CREDIT within its credits, completing the acceptor's
    posted buffers in posting order or with two completions swapped (the later buffer
    first); the application reads with recv_into and recv_view.
    The bytes read are the bytes sent, in completion order; slots are either posted or
    held by unread data; the ring never overflows, and control messages piling up behind
    unread data are released by copying that data out."""
    rs = 1024
    a = S.SessionProtocol(S.Role.ACCEPTOR, S.SessionConfig(recv_count=recv_count, recv_size=rs))
    ring = a.recv_ring
    posted: list[int] = []
    peer = {"credits": 0, "owes": 0}

    def handle(acts):
        for x in acts:
            if isinstance(x, S.PostRecv):
                posted.append(x.index)
            elif isinstance(x, S.PostSend):
                if x.kind:          # a control message: the peer takes its grant, owes one buffer back
                    _, _, credits, _ = struct.unpack_from("<BBHI", a.send_buffers[x.index], 0)
                    peer["credits"] += credits
                    peer["owes"] += 1
                else:               # the negotiation answer
                    peer["credits"] = recv_count
                    peer["owes"] += 1
                handle(a.on_send_complete(x.index, 0.0))
            elif isinstance(x, S.Closed):
                raise AssertionError(f"connection closed: {x.reason}")

    handle(a.start(0.0))
    neg = NegotiateMessage(posted_receives=8, receive_size=rs).pack()
    i = posted.pop(0)
    a.recv_buffers[i][:len(neg)] = neg
    handle(a.on_recv_complete(i, len(neg), 0.0))
    peer["owes"] -= 1           # the connector's buffer the answer used is owed back by the protocol itself
    assert a.connected
    sent, got = bytearray(), bytearray()
    seq = 0
    straggler = [None]        # a posted buffer passed over by a swapped completion: completed next
    swaps = [0]

    def deliver(mtype, payload, swap):
        if straggler[0] is not None:
            slot = straggler[0]
            straggler[0] = None
            posted.remove(slot)
        elif swap and len(posted) >= 2:
            swaps[0] += 1
            straggler[0] = posted[0]
            slot = posted.pop(1)
        else:
            slot = posted.pop(0)
        hdr = struct.pack("<BBHI", mtype, 0, peer["owes"], len(payload))
        peer["owes"] = 0
        peer["credits"] -= 1
        a.recv_buffers[slot][:] = b"\xee" * rs          # stale bytes the ring must never publish
        a.recv_buffers[slot][:len(hdr) + len(payload)] = hdr + payload
        handle(a.on_recv_complete(slot, len(hdr) + len(payload), 0.0))

    loan = None               # the last recv_view: its bytes must not change until the next receive
    for kind, n, skip in ops:
        if loan is not None:
            assert bytes(loan[0]) == loan[1], "a lent view changed before the next receive call"
            if kind in ("read", "view"):
                loan = None
        if kind in ("data", "credit"):
            if peer["credits"] < 1 or not posted:
                continue
            if kind == "data":
                payload = bytes((seq + k) & 0xFF for k in range(n))
                seq += n
                sent += payload
                deliver(MSG_DATA, payload, skip)
            else:
                deliver(MSG_CREDIT, b"", skip)
        elif kind == "read":
            buf = bytearray(n)
            try:
                k, acts = a.recv_into(buf, 0.0)
            except errors.WSAEWOULDBLOCK:
                handle(a.take_actions())      # what the driver does: a loan ended, slots reposted
                continue
            got += buf[:k]
            handle(acts)
        else:
            try:
                v, acts = a.recv_view(n, 0.0)
            except errors.WSAEWOULDBLOCK:
                handle(a.take_actions())
                continue
            got += v
            loan = (v, bytes(v))
            del v
            handle(acts)
        held = {e.slot for e in a._incoming if e.slot >= 0}
        waiting = {slot for slot, _ in a._deferred}    # reposts waiting for ring room (a loan)
        assert set(posted) == a._posted and not (held & a._posted), (posted, a._posted, held)
        assert len(a._posted) + len(held) + len(waiting) == recv_count
        assert 0 <= ring.used <= ring.capacity
        for m in ring.peek():                           # nothing stale is ever published
            assert b"\xee" * 8 not in bytes(m)
    loan = None
    while True:
        buf = bytearray(4096)
        try:
            k, acts = a.recv_into(buf, 0.0)
        except errors.WSAEWOULDBLOCK:
            handle(a.take_actions())
            break
        got += buf[:k]
        handle(acts)
    assert got == sent
    assert len(a._posted) == recv_count
    for what in ("ring_copy_out", "repost_deferred"):
        if a.stats[what]:
            event(what)                 # (how often each path ran: --hypothesis-show-statistics)
    if swaps[0]:
        event("completions out of posting order")
