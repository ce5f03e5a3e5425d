"""Single-process tests of the native ring: record layout, PAD wrap, full and
empty rings, reserve/commit, batches, errors, closing, shm naming."""

from __future__ import annotations

import mmap
import os
import socket
import struct
import threading
import time

import pytest

import wsd_ring
from wsd_ring import (HDR_SIZE, PAD_LEN, REC_HDR, MessageTooLarge, Ring, RingBusy,
                      RingClosed, RingCorrupt, RingFormatError)


def raw(name: str) -> bytes:
    with open(f"/dev/shm/{name}", "rb") as f:
        return f.read()


def rec(n: int) -> int:
    return REC_HDR + ((n + 7) & ~7)


# ------------------------------------------------------------------ layout


def test_header_and_record_layout_golden_bytes(shm_name):
    with Ring.create(256, shm_name) as ring:
        img = raw(shm_name)
        assert len(img) == HDR_SIZE + 256
        assert img[0:4] == b"WSDR"
        magic, version, capacity, hdr_size, flags = struct.unpack_from("<IIQII", img, 0)
        assert (magic, version, capacity, hdr_size, flags) == (0x52445357, 1, 256, 256, 0)
        assert struct.unpack_from("<q", img, 64)[0] == 0  # head, line 1
        assert struct.unpack_from("<q", img, 128)[0] == 0  # tail, line 2
        assert ring.push(b"abc")
        assert ring.push(b"")
        img = raw(shm_name)
        # [u32 len | u32 reserved=0 | payload padded to 8]
        assert img[HDR_SIZE:HDR_SIZE + 16] == b"\x03\x00\x00\x00\x00\x00\x00\x00abc\x00\x00\x00\x00\x00"
        assert img[HDR_SIZE + 16:HDR_SIZE + 24] == b"\x00" * 8  # empty message: header only
        assert struct.unpack_from("<Q", img, 64)[0] == 24  # head: free-running byte count
        assert struct.unpack_from("<i", img, 24)[0] == os.getpid()  # producer_pid
        assert ring.pop() == b"abc"
        assert struct.unpack_from("<Q", raw(shm_name), 128)[0] == 16
        assert struct.unpack_from("<i", raw(shm_name), 28)[0] == os.getpid()  # consumer_pid
        assert ring.pop() == b""
        assert ring.pop() is None


def test_wrap_writes_explicit_pad_record(shm_name):
    with Ring.create(256, shm_name) as ring:
        # Advance to data offset 240: 6 records of 40 bytes (32-byte payloads).
        for i in range(6):
            assert ring.push(bytes([i]) * 32)
        assert [bytes(v) for v in ring.peek()] == [bytes([i]) * 32 for i in range(6)]
        ring.release(6)
        assert ring.head == ring.tail == 240
        # A 24-byte message needs 32 bytes: 16 remain before the end -> PAD.
        assert ring.push(b"Z" * 24)
        img = raw(shm_name)
        data = img[HDR_SIZE:]
        assert data[240:248] == struct.pack("<II", PAD_LEN, 0)
        assert data[0:8] == struct.pack("<II", 24, 0)
        assert data[8:32] == b"Z" * 24
        assert ring.head == 256 + 32  # PAD (16) + record (32), never split
        # The consumer never sees the PAD.
        assert [bytes(v) for v in ring.peek()] == [b"Z" * 24]
        ring.release(1)
        assert ring.tail == ring.head == 288


def test_message_exactly_filling_to_end_needs_no_pad(shm_name):
    with Ring.create(128, shm_name) as ring:
        assert ring.push(b"a" * 56)  # 64 bytes
        assert ring.pop() == b"a" * 56
        assert ring.push(b"b" * 56)  # exactly [64, 128)
        assert ring.head == 128
        assert raw(shm_name)[HDR_SIZE + 64:HDR_SIZE + 68] == struct.pack("<I", 56)
        assert ring.pop() == b"b" * 56


# ------------------------------------------------------------------ capacity


@pytest.mark.parametrize("capacity", [0, 32, 63, 100, 3 << 10, 1 << 41])
def test_create_rejects_bad_capacity(capacity):
    with pytest.raises(ValueError):
        Ring.create(capacity)


def test_full_ring_reports_no_room_and_recovers():
    with Ring.create(1024) as ring:
        n = 0
        while ring.push(b"m" * 56):  # 64-byte records
            n += 1
        assert n == 1024 // 64
        assert ring.reserve(1) is None
        assert not ring.writable(1)
        assert ring.used == 1024
        assert ring.pop() == b"m" * 56
        assert ring.writable(56)
        assert ring.push(b"x" * 56)
        assert not ring.push(b"y")
        got = ring.pop_batch()
        assert got == [b"m" * 56] * (n - 1) + [b"x" * 56]
        assert ring.pop() is None
        assert ring.peek() == []


def test_max_message_and_too_large():
    with Ring.create(256) as ring:
        assert ring.max_message == 248
        with pytest.raises(MessageTooLarge):
            ring.push(b"x" * 249)
        with pytest.raises(MessageTooLarge):
            ring.reserve(10_000)
        assert ring.push(b"x" * 248)
        assert not ring.push(b"")  # completely full
        assert ring.pop() == b"x" * 248


def test_max_message_after_wrap_goes_through_a_published_pad():
    with Ring.create(256) as ring:
        assert ring.push(b"12345678")
        assert ring.pop() == b"12345678"  # tail = head = 16
        # Needs the whole ring: the PAD to the end is published at once...
        assert ring.reserve(248) is None
        assert ring.head == 256
        # ...the consumer skips it (no message visible) and frees the space...
        assert ring.peek() == []
        assert ring.tail == 256
        # ...and now the maximal message fits at offset 0.
        view = ring.reserve(248)
        assert view is not None and len(view) == 248
        view[:] = b"q" * 248
        ring.commit(248)
        assert ring.pop() == b"q" * 248


# ------------------------------------------------------------------ reserve / commit


def test_reserve_commit_shorter_and_cancel():
    with Ring.create(4096) as ring:
        view = ring.reserve(1000)
        view[:5] = b"hello"
        assert ring.peek() == []  # nothing visible before commit
        ring.commit(5)
        assert ring.pop() == b"hello"
        assert ring.used == 0  # a 5-byte record, not a 1000-byte one
        view = ring.reserve(10)
        view[:] = b"0123456789"
        ring.cancel()
        assert ring.peek() == [] and ring.head == ring.tail
        with pytest.raises(ValueError):
            ring.commit(1)  # nothing reserved
        ring.reserve(8)
        with pytest.raises(ValueError):
            ring.commit(9)  # longer than reserved (rounded record 16 < 24)
        ring.cancel()


def test_new_reserve_drops_earlier_uncommitted():
    with Ring.create(4096) as ring:
        ring.reserve(100)[:3] = b"old"
        v = ring.reserve(3)
        v[:] = b"new"
        ring.commit(3)
        assert ring.pop_batch() == [b"new"]


def test_recv_into_reserved_span_over_tcp_loopback():
    payload = os.urandom(200_000)
    srv = socket.create_server(("127.0.0.1", 0))
    with srv, Ring.create(1 << 16) as ring:
        cli = socket.create_connection(srv.getsockname())
        conn, _ = srv.accept()
        with cli, conn:
            sender = threading.Thread(target=cli.sendall, args=(payload,))
            sender.start()
            got = bytearray()
            deadline = time.monotonic() + 10
            while len(got) < len(payload) and time.monotonic() < deadline:
                view = ring.reserve(16384)
                if view is None:
                    for m in ring.peek():
                        got += m
                    ring.release(len(ring.peek()))
                    continue
                n = conn.recv_into(view)
                del view
                assert n > 0
                ring.commit(n)
            for m in ring.pop_batch():
                got += m
            sender.join(5)
        assert bytes(got) == payload


# ------------------------------------------------------------------ peek / release / batches


def test_peek_release_semantics():
    with Ring.create(4096) as ring:
        msgs = [bytes([i]) * i for i in range(10)]
        for m in msgs:
            assert ring.push(m)
        first = ring.peek(3)
        again = ring.peek(5)
        assert [bytes(v) for v in first] == msgs[:3]
        assert [bytes(v) for v in again] == msgs[:5]
        assert first[1].readonly
        with pytest.raises(TypeError):
            first[1][0] = 0
        ring.release(2)
        assert [bytes(v) for v in ring.peek(2)] == msgs[2:4]
        with pytest.raises(ValueError):
            ring.release(9)
        ring.release(8)
        assert ring.peek() == [] and ring.used == 0


def test_push_batch_partial_when_full_and_pop_batch_into():
    with Ring.create(256) as ring:
        msgs = [bytes([65 + i]) * 20 for i in range(20)]  # 32-byte records
        k = ring.push_batch(msgs)
        assert k == 8
        assert ring.push_batch(msgs[k:]) == 0
        buf = bytearray(100)
        lens = ring.pop_batch_into(buf)
        assert lens == [20] * 5  # 100 bytes hold five
        assert bytes(buf) == b"".join(msgs[:5])
        with pytest.raises(MessageTooLarge):
            ring.pop_batch_into(bytearray(19))
        assert ring.pop_batch_into(bytearray(100), max_n=2) == [20, 20]
        assert ring.pop_batch() == [msgs[7]]
        assert ring.pop_batch_into(buf) == []
        assert ring.push_batch(msgs[k:k + 3]) == 3  # wraps, with a PAD inside the batch
        assert ring.pop_batch() == msgs[k:k + 3]


def test_push_batch_accepts_bytearray_and_memoryview_and_rejects_wide_items():
    with Ring.create(4096) as ring:
        assert ring.push_batch([bytearray(b"ab"), memoryview(b"cde"), b"f"]) == 3
        assert ring.pop_batch() == [b"ab", b"cde", b"f"]
        with pytest.raises(ValueError):
            ring.push_batch([memoryview(b"abcdefgh").cast("I")])
        assert ring.push(bytearray(b"xyz")) and ring.pop() == b"xyz"


def test_push_batch_large_buffers_go_by_pointer_and_stop_when_full():
    with Ring.create(1 << 16) as ring:
        bufs = [bytes([i]) * 9000 for i in range(10)]  # 9008-byte records: 7 fit
        assert ring.push_batch(bufs) == 7
        assert ring.push_batch(bufs[7:]) == 0
        assert ring.pop_batch() == bufs[:7]
        mixed = [bytearray(b"a" * 5000), memoryview(b"b" * 6000), b"c" * 4000]
        assert ring.push_batch(mixed) == 3  # wraps with a PAD inside the batch
        assert ring.pop_batch() == [bytes(b) for b in mixed]
        with pytest.raises(ValueError):
            ring.push_batch([memoryview(b"abcd" * 2000).cast("I")])


def test_reserve_batch_commit_prefix():
    with Ring.create(512) as ring:
        views = ring.reserve_batch([10, 20, 30, 40])
        assert [len(v) for v in views] == [10, 20, 30, 40]
        for i, v in enumerate(views):
            v[:] = bytes([i + 1]) * len(v)
        ring.commit_batch(2)
        assert ring.pop_batch() == [b"\x01" * 10, b"\x02" * 20]
        assert ring.tail == 56  # 24 + 32: the uncommitted two were dropped
        views = ring.reserve_batch([100] * 10)
        # 112-byte records from 56: 168, 280, 392, 504; the fifth would need a
        # PAD (8) + 112 more than the 512 - (504 - 56) left.
        assert len(views) == 4
        for i, v in enumerate(views):
            v[:] = bytes([0x40 + i]) * 100
        ring.commit_batch(4)
        assert ring.pop_batch() == [bytes([0x40 + i]) * 100 for i in range(4)]
        with pytest.raises(ValueError):
            ring.commit_batch(1)


# ------------------------------------------------------------------ closing, roles, errors


def test_producer_close_is_eof_after_drain(shm_name):
    with Ring.create(4096, shm_name) as prod:
        cons = Ring.attach(shm_name, eventfds=(os.dup(prod.readable_fd), os.dup(prod.writable_fd)))
        with cons:
            assert cons.peek() == []  # consumer claims its role
            prod.push(b"last words")
            assert not cons.eof
            prod.close()
            assert cons.producer_closed
            assert cons.readable() and cons.wait_readable(1)
            assert not cons.eof  # a message is still there
            assert cons.get(1) == b"last words"
            assert cons.eof
            assert cons.get(1) is None


def test_consumer_close_breaks_the_pipe(shm_name):
    with Ring.create(4096, shm_name) as prod, Ring.attach(shm_name) as cons:
        assert prod.push(b"x")
        assert cons.pop() == b"x"
        cons.close()
        with pytest.raises(RingClosed):
            prod.push(b"y")
        assert prod.wait_writable(1)  # wakes (the consumer is gone) instead of hanging


def test_closed_handle_raises():
    ring = Ring.create(128)
    ring.close()
    ring.close()  # idempotent
    with pytest.raises(RingClosed):
        ring.push(b"a")
    with pytest.raises(RingClosed):
        ring.peek()
    with pytest.raises(RingClosed):
        ring.wait_readable(0)


def test_close_with_live_view_keeps_memory_valid():
    ring = Ring.create(128)
    ring.push(b"still here")
    view = ring.peek()[0]
    ring.close()
    assert bytes(view) == b"still here"  # mapping lives until the view is gone
    del view


def test_second_live_producer_is_refused(shm_name):
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    claimed, done = ctx.Event(), ctx.Event()

    def child():
        r = Ring.attach(shm_name)
        r.push(b"from child")
        claimed.set()
        done.wait(10)
        r.close()

    with Ring.create(4096, shm_name) as ring:
        p = ctx.Process(target=child)
        p.start()
        try:
            assert claimed.wait(10)
            assert ring.producer_pid == p.pid and ring.producer_alive
            with pytest.raises(RingBusy):
                ring.push(b"from parent")
            assert ring.pop() == b"from child"
        finally:
            done.set()
            p.join(10)
            p.close()
        assert ring.producer_closed
        assert ring.push(b"from parent")  # the closed role can be taken over
        assert ring.pop() == b"from parent"


def test_attach_errors(shm_name):
    with pytest.raises(FileNotFoundError):
        Ring.attach(shm_name)
    for bad in ("", "a/b", "..", "x" * 300):
        with pytest.raises(ValueError):
            Ring.create(128, bad)
    with Ring.create(128, shm_name):
        with pytest.raises(FileExistsError):
            Ring.create(128, shm_name)
    # A segment that is not a ring.
    with open(f"/dev/shm/{shm_name}", "wb") as f:
        f.write(b"\0" * 1024)
    with pytest.raises(RingFormatError):
        Ring.attach(shm_name)
    with open(f"/dev/shm/{shm_name}", "wb") as f:
        f.write(b"\0" * 16)
    with pytest.raises(RingFormatError):
        Ring.attach(shm_name)
    os.unlink(f"/dev/shm/{shm_name}")


def test_corrupt_shared_memory_is_detected_not_crashed(shm_name):
    with Ring.create(256, shm_name) as ring:
        ring.push(b"good")
        fd = os.open(f"/dev/shm/{shm_name}", os.O_RDWR)
        try:
            with mmap.mmap(fd, HDR_SIZE + 256) as evil:
                evil[HDR_SIZE:HDR_SIZE + 4] = struct.pack("<I", 5000)  # length past head
                with pytest.raises(RingCorrupt):
                    ring.peek()
                evil[HDR_SIZE:HDR_SIZE + 8] = struct.pack("<II", 4, 1)  # reserved word set
                with pytest.raises(RingCorrupt):
                    ring.pop()
                evil[HDR_SIZE:HDR_SIZE + 8] = struct.pack("<II", 4, 0)
                assert ring.pop() == b"good"
                evil[64:72] = struct.pack("<Q", 10_000)  # head beyond tail + capacity
                with pytest.raises(RingCorrupt):
                    ring.peek()
        finally:
            os.close(fd)


def test_unlink_and_context_manager_removes_name(shm_name):
    ring = Ring.create(128, shm_name)
    assert os.path.exists(f"/dev/shm/{shm_name}")
    ring.unlink()
    assert not os.path.exists(f"/dev/shm/{shm_name}")
    assert ring.push(b"still mapped") and ring.pop() == b"still mapped"
    ring.close()
    with Ring.create(128, shm_name) as r2:
        with Ring.attach(shm_name) as r3:
            pass  # an attacher's exit does not unlink
        assert os.path.exists(f"/dev/shm/{shm_name}")
        assert r3.name == shm_name and r2.capacity == 128
    assert not os.path.exists(f"/dev/shm/{shm_name}")


def test_many_create_close_cycles_leak_nothing(shm_name):
    before = set(os.listdir("/proc/self/fd"))
    for i in range(50):
        with Ring.create(4096, f"{shm_name}-{i}") as ring:
            ring.push(b"x")
            with Ring.attach(f"{shm_name}-{i}") as other:
                assert other.pop() == b"x"
        with Ring.create(4096) as anon:
            anon.push(b"y")
    assert set(os.listdir("/proc/self/fd")) == before
    assert not [n for n in os.listdir("/dev/shm") if n.startswith(shm_name)]


def test_module_constants_match_header():
    assert (wsd_ring.MAGIC, wsd_ring.VERSION, HDR_SIZE, REC_HDR, PAD_LEN) == (
        0x52445357, 1, 256, 8, 0xFFFFFFFF)


def test_posted_spans_commit_real_lengths_and_hide_the_rest():
    """A receive ring: spans are posted before data arrives, committed in
    posting order with their real lengths; the unused rest is a FILL record
    the consumer never returns, and the head moves only on commit."""
    with Ring.create(4096, eventfds=False) as ring:
        spans = [ring.post(512) for _ in range(4)]
        assert all(len(v) == 512 for v in spans) and ring.posted == 4
        assert ring.head == 0                       # nothing published yet
        for i, v in enumerate(spans):
            v[:] = bytes([0xEE]) * 512              # stale bytes
            v[:i + 1] = bytes([i]) * (i + 1)
        ring.commit_posted([1, 2])
        assert ring.head == 2 * (8 + 512) and ring.posted == 2
        assert [bytes(v) for v in ring.peek()] == [b"\x00", b"\x01\x01"]
        with pytest.raises(ValueError):
            ring.commit_posted([513])               # longer than its span
        with pytest.raises(ValueError):
            ring.commit_posted([1, 1, 1])           # more than posted
        ring.commit_posted([3, 4])
        assert [bytes(v) for v in ring.peek()] == [b"\x00", b"\x01\x01", b"\x02" * 3, b"\x03" * 4]
        del spans
        ring.release(4)
        assert ring.used == 0
        # wrap-around: spans keep being posted and released in a cycle
        for rnd in range(50):
            got = []
            while (v := ring.post(1000)) is not None:
                v[:2] = rnd.to_bytes(2, "little")
                got.append(v)
            assert got
            ring.commit_posted([2] * len(got))
            del got, v
            msgs = ring.peek()
            assert msgs and all(bytes(m) == rnd.to_bytes(2, "little") for m in msgs)
            n = len(msgs)
            del msgs
            ring.release(n)


def test_reserve_drops_posted_spans():
    with Ring.create(1024, eventfds=False) as ring:
        ring.post(100)
        ring.post(100)
        assert ring.posted == 2
        v = ring.reserve(10)
        assert ring.posted == 0
        v[:2] = b"ok"
        del v
        ring.commit(2)
        with pytest.raises(ValueError):
            ring.commit_posted([1])
        assert ring.pop() == b"ok"
