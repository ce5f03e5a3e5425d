"""One data path: every connected switch socket receives into its own native ring.

SAN providers (zmq, shm; verbs in the softRoCE VM): the buffers the switch posts
with ``WSPRecv`` are spans of the connection's ``recv_ring``, and every message
the provider delivered is committed there (the ring's head moves by exactly the
records of the messages received).  TCP: the provider's ``recv_into`` writes
into the free span of the connection's ring.  The providers are real; the
spies below only record what the switch hands them and call through.
"""
import hashlib
import time

import pytest

import wsd_ring
from wsd import errors
from wsd_ring._ring import ffi
from switch_env import SAN, table_for
from peer import pattern
from test_e2e import finish, listener, start_peer

SIZES = [1, 64, 1000, 9000, 40000]       # inline sizes (under the RDMA threshold)


def address(view) -> int:
    """Start address of a (writable or read-only) buffer."""
    with ffi.from_buffer(memoryview(view)) as p:
        return int(ffi.cast("uintptr_t", p))


def inside(view, ring: wsd_ring.Ring) -> bool:
    base = address(ring.memory)
    a = address(view)
    return base + wsd_ring.HDR_SIZE <= a and a + len(view) <= base + len(ring.memory)


def spy_recv(provider, calls: list):
    real = provider.WSPRecv

    def WSPRecv(s, buffers, overlapped=None):
        calls.append((s, buffers[0]))
        return real(s, buffers, overlapped) if overlapped is not None else real(s, buffers)
    provider.WSPRecv = WSPRecv        # instance attribute: the real method still does the work
    return real


@pytest.mark.parametrize("provider", SAN)
def test_san_provider_delivers_into_the_connection_ring(provider, switches):
    sw = switches(table_for(provider))
    calls: list = []
    spy_recv(sw.providers[provider], calls)
    l, port = listener(sw)
    peer = start_peer({"provider": provider, "addr": ["127.0.0.1", port], "sizes": SIZES, "expect_reply": 64})
    s, _ = l.accept()
    conn = s._conn
    core = conn.core
    ring = core.recv_ring
    assert isinstance(ring, wsd_ring.Ring)
    got = bytearray()
    while len(got) < sum(SIZES):
        d = s.recv(1 << 20)
        assert d, "early EOF"
        got += d
    assert got == b"".join(pattern(n, i) for i, n in enumerate(SIZES))
    # every buffer the switch posted to this provider socket is a span of the connection's ring
    mine = [b for (ps, b) in calls if ps == conn.ps]
    assert len(mine) >= core.config.recv_count + len(SIZES)
    assert all(inside(b, ring) and len(b) == core.config.recv_size for b in mine)
    # the spans are distinct places in the ring (posted one after the other, not one reused buffer)
    assert len({address(b) for b in mine[:core.config.recv_count]}) == core.config.recv_count
    # each message received was committed to the ring with its real length: the head moved by
    # at least the records of the negotiation message and every DATA message (header + payload)
    data_records = sum(wsd_ring.record_size(8 + n) for n in SIZES)
    assert ring.head >= data_records + wsd_ring.record_size(32)
    assert core.stats["msgs_in"] >= len(SIZES)
    s.sendall(hashlib.sha256(got).hexdigest().encode())
    rc, lines, err = finish(peer)
    assert rc == 0
    s.close()
    l.close()


def test_unread_data_stays_in_the_ring_until_consumed(switches):
    """A DATA message is read straight out of its span: before the application's recv the
    span holds the payload; consuming it releases the span's slot (reposted = a credit)."""
    provider = SAN[0] if SAN else pytest.skip("no SAN provider available")
    sw = switches(table_for(provider))
    l, port = listener(sw)
    peer = start_peer({"provider": provider, "addr": ["127.0.0.1", port], "sizes": [5000],
                       "expect_reply": 64})
    s, _ = l.accept()
    conn = s._conn
    core = conn.core
    deadline = time.monotonic() + 20
    while not core._incoming and time.monotonic() < deadline:
        conn.progress()
        time.sleep(0.001)
    e = core._incoming[0]
    assert inside(e.view, core.recv_ring)        # the payload is in the ring, not a copy
    assert bytes(e.view) == pattern(5000, 0)
    slot = e.slot
    assert slot not in core._posted              # held until the application reads it
    assert s.recv(10000) == pattern(5000, 0)
    assert slot in core._posted                  # reposted: a fresh span of the ring
    assert inside(core.recv_buffers[slot], core.recv_ring)
    s.sendall(b"x" * 64)
    finish(peer)
    s.close()
    l.close()


def test_tcp_recv_into_targets_the_ring_free_span(switches):
    sw = switches([])
    calls: list = []
    spy_recv(sw.tcp, calls)
    l, port = listener(sw)
    sizes = [1, 64, 1000, 70000, 300000]
    peer = start_peer({"provider": "tcp", "addr": ["127.0.0.1", port], "sizes": sizes, "expect_reply": 64})
    s, _ = l.accept()
    conn = s._conn
    assert conn.ring is None                      # taken from the switch's pool at the first receive
    got = bytearray()
    buf = bytearray(7000)                         # smaller than what arrives: the rest waits in the ring
    while len(got) < sum(sizes):
        n = s.recv_into(buf)
        assert n, "early EOF"
        got += buf[:n]
    ring = conn.ring
    assert got == b"".join(pattern(n, i) for i, n in enumerate(sizes))
    mine = [b for (ps, b) in calls if ps == conn.ps and len(b)]
    assert mine and all(inside(b, ring) for b in mine)
    assert all(address(b) != address(buf) for b in mine)
    # the head moved by every byte received (each recv_into is committed as one message)
    assert ring.head >= sum(sizes) and ring.tail <= ring.head
    s.sendall(hashlib.sha256(got).hexdigest().encode())
    rc, lines, err = finish(peer)
    assert rc == 0
    s.close()
    assert sw._tcp_rings == [ring] and ring.used == 0    # emptied and kept for the next connection
    with pytest.raises(errors.WSAENOTSOCK):
        conn.try_recv_into(bytearray(10))                # a closed connection takes no ring again
    assert sw._tcp_rings == [ring]
    l.close()


def test_tcp_recv_view_is_zero_copy(switches):
    sw = switches([])
    l, port = listener(sw)
    sizes = [3000, 5000]
    peer = start_peer({"provider": "tcp", "addr": ["127.0.0.1", port], "sizes": sizes, "expect_reply": 64})
    s, _ = l.accept()
    conn = s._conn
    got = bytearray()
    while len(got) < sum(sizes):
        v = s.recv_view(4096)
        assert len(v), "early EOF"
        assert v.readonly and inside(v, conn.ring)
        got += v
    assert got == pattern(3000, 0) + pattern(5000, 1)
    del v
    s.sendall(b"y" * 64)
    finish(peer)
    s.close()
    l.close()


@pytest.mark.parametrize("provider", SAN)
def test_san_recv_view_is_zero_copy(provider, switches):
    sw = switches(table_for(provider))
    l, port = listener(sw)
    sizes = [3000, 5000]
    peer = start_peer({"provider": provider, "addr": ["127.0.0.1", port], "sizes": sizes, "expect_reply": 64})
    s, _ = l.accept()
    conn = s._conn
    got = bytearray()
    while len(got) < sum(sizes):
        v = s.recv_view(4096)
        assert len(v), "early EOF"
        assert v.readonly and inside(v, conn.core.recv_ring)
        got += v
    assert got == pattern(3000, 0) + pattern(5000, 1)
    s.sendall(b"y" * 64)
    finish(peer)
    s.close()
    l.close()


def _kernel_client(port: int, first: bytes, rest: bytes = b"", gate=None):
    """A plain-socket client thread: sends ``first``, waits for ``gate`` (if any), sends
    ``rest``, shuts down its side and waits for the server's end of stream."""
    import socket
    import threading

    def client():
        with socket.create_connection(("127.0.0.1", port)) as c:
            c.sendall(first)
            if gate is not None:
                gate.wait(20)
            c.sendall(rest)
            c.shutdown(socket.SHUT_WR)
            c.settimeout(20)
            assert c.recv(1) == b""
    t = threading.Thread(target=client)
    t.start()
    return t


def _in_ring(view, ring) -> bool:
    base = int(ffi.cast("uintptr_t", ffi.from_buffer(ring.memory)))
    addr = int(ffi.cast("uintptr_t", ffi.from_buffer(view)))
    return base <= addr and addr + len(view) <= base + len(ring.memory)


async def _aio_tcp_accept(sw, initial_size: int, first: bytes, rest: bytes = b"", gate=None):
    """An asyncio listener on the switch's TCP path, a kernel client, the accepted streams."""
    import asyncio
    from wsd import aio

    lst = aio.AsyncListener(sw, "127.0.0.1", 0)
    t = _kernel_client(lst.getsockname()[1], first, rest, gate)
    conn, peer, initial = await asyncio.wait_for(lst.accept_ex(initial_size), 20)
    return lst, t, conn, initial


async def _aio_finish(writer, lst, t):
    import asyncio

    writer.close()
    lst.close()
    await asyncio.get_running_loop().run_in_executor(None, t.join, 20)


def test_asyncio_streams_get_what_the_ring_already_holds(switches):
    """wsd.aio hands a TCP connection's kernel socket to asyncio's own transport; bytes the
    ring already holds (AcceptEx read more than its initial size) come first, in order."""
    import asyncio
    from wsd import aio

    sw = switches([])
    payload = pattern(50000, 7)

    async def main():
        lst, t, conn, initial = await _aio_tcp_accept(sw, 10, payload)
        assert initial == payload[:10]
        assert conn.buffered > 0                  # the first receive read more into the ring
        reader, writer = await aio._streams_for(conn, sw, 1 << 16, initial)
        got = await asyncio.wait_for(reader.read(), 20)
        await _aio_finish(writer, lst, t)
        return got

    assert asyncio.run(main()) == payload


def test_asyncio_tcp_reads_land_in_the_ring(switches):
    """After the hand-over, asyncio's transport recv_into()s the free span of a ring from the
    switch's pool (RingStreamProtocol.get_buffer), 1 MiB arrives intact through it, and the
    ring goes back to the pool when the connection is lost."""
    import asyncio
    from wsd import aio

    sw = switches([])
    payload = pattern(1 << 20, 3)
    lent = []

    async def main():
        lst, t, conn, initial = await _aio_tcp_accept(sw, 0, payload)
        reader, writer = await aio._streams_for(conn, sw, 1 << 16, initial)
        protocol = writer._protocol
        assert isinstance(protocol, aio.RingStreamProtocol)
        ring = protocol._ring
        get_buffer = protocol.get_buffer

        def spy(sizehint):
            span = get_buffer(sizehint)
            lent.append(_in_ring(span, ring))
            return span
        protocol.get_buffer = spy
        got = await asyncio.wait_for(reader.read(), 20)
        head = ring.head
        await _aio_finish(writer, lst, t)
        await writer.wait_closed()
        return got, head, ring

    got, head, ring = asyncio.run(main())
    assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
    assert lent and all(lent)                     # every kernel read went into the ring's span
    assert head > 0                               # the ring's producer index moved
    assert ring in sw._tcp_rings                  # back in the pool after connection_lost


def test_asyncio_ring_sink_gets_every_byte_then_eof(switches):
    """RingStreamProtocol.set_sink: bytes the reader already holds come first, then every
    kernel read as a view of the ring span, in order, then None at end of stream."""
    import asyncio
    import threading
    from wsd import aio

    sw = switches([])
    payload = pattern(3 << 20, 9)

    async def main():
        go = threading.Event()
        lst, t, conn, initial = await _aio_tcp_accept(sw, 0, payload[:1000], payload[1000:], go)
        reader, writer = await aio._streams_for(conn, sw, 1 << 16, initial)
        await asyncio.wait_for(reader.readexactly(10), 20)          # the reader may hold more of the first 1000
        got, ended, done = bytearray(payload[:10]), [], asyncio.Event()
        ring = writer._protocol._ring
        in_ring = []

        def sink(view):
            if view is None:
                ended.append(True)
                done.set()
                return
            in_ring.append(_in_ring(view, ring))
            got.extend(view)
        writer._protocol.set_sink(sink)
        go.set()
        await asyncio.wait_for(done.wait(), 30)
        await _aio_finish(writer, lst, t)
        return bytes(got), ended, in_ring

    got, ended, in_ring = asyncio.run(main())
    assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
    assert ended
    assert in_ring and all(in_ring[1:])   # the reader's leftover (if any) first, then ring spans
