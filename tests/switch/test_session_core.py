"""The sans-IO session-protocol core, driven with no sockets (WSD-N1..N4, WSD-D1, bad input)."""
import logging
import os
import struct

import pytest

from sansio_pair import Pair
from wsd import errors
from wsd.core import session as S
from wsd.core.wire import MSG_CREDIT, MSG_DATA, MSG_RDMA_READ_ADVERT, MSG_RDMA_WRITE_REQUEST, NegotiateMessage


def kinds(actions):
    return [type(a).__name__ for a in actions]


def test_connector_posts_receives_before_sending_negotiation_WSD_N1():
    p = S.SessionProtocol(S.Role.CONNECTOR, S.SessionConfig(recv_count=8))
    acts = p.start(0.0)
    names = kinds(acts)
    first_send = names.index("PostSend")
    assert names[:first_send].count("PostRecv") == 8           # every receive posted first
    send = acts[first_send]
    msg = NegotiateMessage.unpack(p.send_buffers[send.index][:send.length])
    assert msg.posted_receives == 8                             # ...and the message states how many
    assert any(isinstance(a, S.Trace) and a.step == "negotiation_out" for a in acts)


def test_acceptor_posts_before_answering_and_states_count_WSD_N4():
    """WSD-N4: receives posted before the answer; the answer states how many."""
    c = S.SessionProtocol(S.Role.CONNECTOR, S.SessionConfig(recv_count=4))
    a = S.SessionProtocol(S.Role.ACCEPTOR, S.SessionConfig(recv_count=6, recv_size=4096))
    cacts = c.start(0.0)
    neg = next(x for x in cacts if isinstance(x, S.PostSend))
    aacts = a.start(0.0)
    assert kinds(aacts) == ["PostRecv"] * 6 and not any(isinstance(x, S.PostSend) for x in aacts)
    idx = aacts[0].index
    a.recv_buffers[idx][:neg.length] = c.send_buffers[neg.index][:neg.length]
    out = a.on_recv_complete(idx, neg.length, 0.0)
    answer = next(x for x in out if isinstance(x, S.PostSend))
    # the buffer the negotiation message used is reposted before the answer goes out
    assert kinds(out).index("PostRecv") < kinds(out).index("PostSend")
    resp = NegotiateMessage.unpack(a.send_buffers[answer.index][:answer.length])
    assert resp.posted_receives == 6 and resp.receive_size == 4096
    assert a.connected and a.send_credits == 3     # the answer used one of the connector's 4


def test_negotiation_before_any_receive_posted_is_held_and_delivered_WSD_N2():
    p = Pair()
    p.start(accept_posts_late=True)
    assert p.a.p.connected and p.c.p.connected
    data = b"".join(struct.pack("<I", i) for i in range(2000))
    for i in range(0, len(data), 100):
        p.send(p.c, data[i:i + 100])
    assert p.read_all(p.a) == data                              # intact and in order


def test_negotiation_message_over_256_bytes_is_rejected_WSD_N3(caplog):
    a = S.SessionProtocol(S.Role.ACCEPTOR)
    acts = a.start(0.0)
    big = NegotiateMessage(posted_receives=4, receive_size=1024).pack() + b"\0" * 300
    a.recv_buffers[acts[0].index][:len(big)] = big
    with caplog.at_level(logging.WARNING, logger="wsd.session"):
        out = a.on_recv_complete(acts[0].index, len(big), 0.0)
    closed = [x for x in out if isinstance(x, S.Closed)]
    assert closed and closed[0].error == errors.WSAEMSGSIZE.wsa_code
    assert a.state is S.State.CLOSED
    assert "exceeds 256" in caplog.text


def test_negotiation_deadline_gives_WSAETIMEDOUT():
    c = S.SessionProtocol(S.Role.CONNECTOR, S.SessionConfig(negotiation_timeout=2.0))
    c.start(10.0)
    assert c.next_deadline() == 12.0
    assert c.on_timer(11.9) == []
    out = c.on_timer(12.0)
    assert [x.error for x in out if isinstance(x, S.Closed)] == [errors.WSAETIMEDOUT.wsa_code]


@pytest.mark.parametrize("size,mode", [(64, "inline"), (65535, "inline"), (65536, "rdma_read"), (3 << 20, "rdma_read")])
def test_small_inline_large_by_rdma_read_WSD_D1(size, mode):
    p = Pair()
    p.start()
    data = os.urandom(size)
    op = p.send(p.c, data)
    assert op.mode == mode
    assert p.read_all(p.a) == data
    assert op.done and op.error == 0
    kinds_sent = {k for k, _ in p.c.sent}
    assert (MSG_RDMA_READ_ADVERT in kinds_sent) == (mode == "rdma_read")
    assert not p.c.regs and not p.a.regs            # every registration was undone


def test_rdma_write_when_peer_cannot_read_WSD_D1():
    p = Pair(cfg_a=S.SessionConfig(can_rdma_read=False))
    p.start()
    data = os.urandom(1 << 20)
    op = p.send(p.c, data)
    assert op.mode == "rdma_write"
    assert p.read_all(p.a) == data
    assert MSG_RDMA_WRITE_REQUEST in {k for k, _ in p.c.sent}
    assert op.done and not p.a.regs


def test_unregistrable_memory_fails_send_with_WSAENOBUFS_WSD_D1():
    p = Pair()
    p.start()
    p.c.reg_fail = True
    op = p.send(p.c, os.urandom(1 << 20))
    assert op.done and op.error == errors.WSAENOBUFS.wsa_code
    p.c.reg_fail = False
    assert p.c.p.connected                     # the connection survives; later sends work
    p.send(p.c, b"after")
    assert p.read_all(p.a) == b"after"


def test_credits_bound_sends_and_are_granted_back_WSD_D1():
    p = Pair(cfg_c=S.SessionConfig(recv_count=4), cfg_a=S.SessionConfig(recv_count=4))
    p.start()
    for _ in range(50):
        p.send(p.c, b"m" * 10)
    # without the acceptor reading, at most (posted - reserve) messages are in its buffers
    held = sum(1 for k, _ in p.c.sent if k == MSG_DATA)
    assert held <= 4 - 1
    assert p.c.p.send_credits >= 0
    got = p.read_all(p.a)
    assert got == b"m" * 500                   # grants flowed back; everything arrived
    assert any(k == MSG_CREDIT for k, _ in p.a.sent) or p.c.p.send_credits > 0


def _connected_acceptor():
    p = Pair()
    p.start()
    return p


def _inject(p, raw: bytes):
    side = p.a
    i = side.posted.popleft()
    side.p.recv_buffers[i][:len(raw)] = raw
    return side.p.on_recv_complete(i, len(raw), 0.0)


@pytest.mark.parametrize("raw,why", [
    (b"\x01\x00\x00", "truncated"),
    (struct.pack("<BBHI", MSG_DATA, 0, 0, 50) + b"x" * 10, "length"),
    (struct.pack("<BBHI", 99, 0, 0, 0), "unknown control message type"),
    (struct.pack("<BBHI", MSG_DATA, 4, 0, 0), "reserved"),
    (struct.pack("<BBHI", MSG_RDMA_READ_ADVERT, 0, 0, 4) + b"abcd", "bad RDMA advert"),
])
def test_malformed_control_messages_abort_with_WSAECONNABORTED(raw, why, caplog):
    p = _connected_acceptor()
    with caplog.at_level(logging.WARNING, logger="wsd.session"):
        out = _inject(p, raw)
    closed = [x for x in out if isinstance(x, S.Closed)]
    assert closed and closed[0].error == errors.WSAECONNABORTED.wsa_code
    assert why in closed[0].reason
    assert "aborted" in caplog.text
    with pytest.raises(errors.WSAECONNABORTED):
        p.a.p.recv_into(bytearray(10), 0.0)


def test_credit_overrun_aborts():
    p = _connected_acceptor()
    a = p.a.p
    n = a.peer_credits - a.owed_credits
    msg = struct.pack("<BBHI", MSG_DATA, 0, 0, 1) + b"z"
    out = []
    for _ in range(n + 1):
        if not p.a.posted:
            break
        out += _inject(p, msg)
    # the peer had n credits; the (n+1)th message is an overrun
    if a.state is not S.State.CLOSED:
        i = 0
        a._posted.add(i)
        a.recv_buffers[i][:len(msg)] = msg
        out += a.on_recv_complete(i, len(msg), 0.0)
    closed = [x for x in out if isinstance(x, S.Closed)]
    assert closed and closed[0].error == errors.WSAECONNABORTED.wsa_code and "credit overrun" in closed[0].reason
    # data that arrived within the credits is not lost
    buf = bytearray(100)
    got, _ = a.recv_into(buf, 0.0)
    assert got == n and bytes(buf[:n]) == b"z" * n


def test_peer_reset_during_negotiation_is_WSAECONNRESET():
    a = S.SessionProtocol(S.Role.ACCEPTOR)
    a.start(0.0)
    out = a.on_recv_failed(0, errors.WSAECONNRESET.wsa_code, 0.1)
    closed = [x for x in out if isinstance(x, S.Closed)]
    assert closed[0].error == errors.WSAECONNRESET.wsa_code and "vanished" in closed[0].reason


def test_orderly_close_delivers_everything_then_eof():
    p = Pair()
    p.start()
    p.send(p.c, b"last words")
    p.apply(p.c, p.c.p.close(0.0))
    p.run()
    assert p.read_all(p.a) == b"last words"
    n, _ = p.a.p.recv_into(bytearray(10), 0.0)
    assert n == 0 and p.a.p.peer_eof


def test_bounced_rdma_send_then_close_never_reports_eof_before_the_data_WSD_D1():
    """A mid-size RDMA send completes for the application at once (bounce copy); a close right after
    must not let the receiver see end of stream before that transfer's bytes."""
    p = Pair()
    p.start()
    data = os.urandom(200_000)
    op, acts = p.c.p.send(data, 0.0)
    p.apply(p.c, acts)                             # registered and announced (no RDMA run yet)...
    assert op.bounced and op.done                  # ...so the caller's send is complete already
    p.apply(p.c, p.c.p.close(0.0))
    # deliver the wire messages (ADVERT, DISCONNECT) before running any RDMA read
    while p.wire:
        dst, raw = p.wire.popleft()
        p.deliver(dst, raw)
    assert p.a.p.peer_eof
    with pytest.raises(BlockingIOError):
        p.a.p.recv_into(bytearray(10), 0.0)       # not EOF: the RDMA read is still under way
    p.run()
    assert p.read_all(p.a) == data
    assert p.a.p.recv_into(bytearray(10), 0.0)[0] == 0
    assert p.c.p.close_done and not p.c.regs
