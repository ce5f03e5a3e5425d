"""Two processes on one ring: fork (anonymous MAP_SHARED memory), a separate
interpreter attaching by shm name with eventfds passed via pass_fds, and
producers killed with SIGKILL in the middle of writing."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import random
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import wsd_ring
from wsd_ring import REC_HDR, Ring, RingClosed

from ring_helpers import check_msg, make_msg

ctx = multiprocessing.get_context("fork")


@pytest.fixture
def no_slice_polling(monkeypatch):
    monkeypatch.setattr(wsd_ring, "_SLICE", 30.0)


def run_child(target, *args):
    p = ctx.Process(target=target, args=args)
    p.start()
    return p


def finish(p, timeout=30):
    p.join(timeout)
    if p.is_alive():
        p.kill()
        p.join(5)
    code = p.exitcode
    p.close()
    return code


def sizes_for(seed: int, n: int, lo: int, hi: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(lo, hi) for _ in range(n)]


def produce(ring: Ring, sizes: list[int], batch: int) -> None:
    seq = 0
    while seq < len(sizes):
        if batch == 1:
            ring.put(make_msg(seq, sizes[seq]), timeout=30)
            seq += 1
        else:
            chunk = [make_msg(s, sizes[s]) for s in range(seq, min(seq + batch, len(sizes)))]
            while chunk:
                k = ring.push_batch(chunk)
                seq += k
                chunk = chunk[k:]
                if chunk and not ring.wait_writable(30, len(chunk[0])):
                    raise TimeoutError
    ring.close()


@pytest.mark.parametrize("batch", [1, 64])
def test_fork_producer_every_message_once_in_order(batch, no_slice_polling):
    n = 20_000
    sizes = sizes_for(batch, n, 16, 600)
    with Ring.create(8192) as ring:
        p = run_child(produce, ring, sizes, batch)
        got = 0
        t0 = time.monotonic()
        while True:
            views = ring.peek(256)
            if not views:
                if ring.eof:
                    break
                assert ring.wait_readable(30), "no message and no EOF for 30 s"
                continue
            for v in views:
                assert len(v) == max(sizes[got], 16)
                check_msg(v, got)
                got += 1
            ring.release(len(views))
        assert got == n
        assert finish(p) == 0
        assert time.monotonic() - t0 < 30


def consume_into_queue(ring: Ring, result) -> None:
    h = hashlib.sha256()
    count = 0
    while True:
        data = ring.get(timeout=30)
        if data is None:
            break
        check_msg(data, count)
        h.update(data)
        count += 1
    result.send((count, h.hexdigest()))
    result.close()
    ring.close()


def test_fork_consumer_slow_reader_small_ring(no_slice_polling):
    """The consumer lags (sleeps now and then): the producer blocks on
    wait_writable and every message still arrives once, in order."""
    n = 3000
    sizes = sizes_for(7, n, 16, 200)
    rx, tx = ctx.Pipe(duplex=False)
    with Ring.create(1024) as ring:
        def slow_consumer():
            rng = random.Random(3)
            orig_get = ring.get

            def get(timeout=None):
                if rng.random() < 0.01:
                    time.sleep(0.002)
                return orig_get(timeout)
            ring.get = get
            consume_into_queue(ring, tx)

        p = run_child(slow_consumer)
        tx.close()
        h = hashlib.sha256()
        for seq in range(n):
            m = make_msg(seq, sizes[seq])
            h.update(m)
            ring.put(m, timeout=30)
        ring.close()
        assert rx.poll(30)
        count, digest = rx.recv()
        rx.close()
        assert finish(p) == 0
    assert (count, digest) == (n, h.hexdigest())


CHILD_CONSUMER = textwrap.dedent("""
    import hashlib, sys, zlib, struct
    from wsd_ring import Ring
    name, rfd, wfd = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    ring = Ring.attach(name, eventfds=(rfd, wfd))
    h = hashlib.sha256(); n = 0
    buf = bytearray(1 << 16)
    while True:
        lens = ring.pop_batch_into(buf)
        if not lens:
            if ring.eof:
                break
            if not ring.wait_readable(30):
                sys.exit("timeout")
            continue
        off = 0
        for ln in lens:
            m = bytes(buf[off:off + ln]); off += ln
            seq, plen, crc = struct.unpack_from("<QII", m)
            assert seq == n and zlib.crc32(m[16:]) == crc, (seq, n)
            h.update(m); n += 1
    ring.close()
    print(n, h.hexdigest())
""")


def test_separate_interpreter_attaches_by_name_with_passed_eventfds(shm_name):
    n = 5000
    sizes = sizes_for(11, n, 16, 3000)
    with Ring.create(1 << 14, shm_name) as ring:
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD_CONSUMER, shm_name, str(ring.readable_fd), str(ring.writable_fd)],
            pass_fds=ring.eventfds, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            h = hashlib.sha256()
            msgs = [make_msg(seq, sizes[seq]) for seq in range(n)]
            i = 0
            while i < n:
                k = ring.push_batch(msgs[i:i + 32])
                for m in msgs[i:i + k]:
                    h.update(m)
                i += k
                if k == 0:
                    assert ring.wait_writable(30, len(msgs[i])), "consumer stopped reading"
                    if ring.consumer_closed:
                        break
            ring.close()
            out, err = child.communicate(timeout=60)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        assert child.returncode == 0, err.decode()
        assert out.decode().split() == [str(n), h.hexdigest()]


# ------------------------------------------------------------------ killed producers


def producer_dies_mid_reservation(name: str, k: int, ready) -> None:
    ring = Ring.attach(name)
    for seq in range(k):
        assert ring.push(make_msg(seq, 100))
    view = ring.reserve(4000)
    # Half a message, including bytes that look like a record header.
    view[:8] = struct.pack("<II", 3992, 0)
    view[8:2000] = b"\xee" * 1992
    ready.send(b"x")
    time.sleep(60)


def test_sigkill_during_reservation_exposes_no_partial_message(shm_name):
    k = 5
    rx, tx = ctx.Pipe(duplex=False)
    with Ring.create(1 << 14, shm_name) as ring:
        p = run_child(producer_dies_mid_reservation, shm_name, k, tx)
        tx.close()
        assert rx.poll(20)
        rx.recv()
        rx.close()
        head_before = ring.head
        os.kill(p.pid, signal.SIGKILL)
        p.join(10)
        assert p.exitcode == -signal.SIGKILL
        p.close()
        assert ring.head == head_before == k * (REC_HDR + 104)
        assert not ring.producer_alive and not ring.producer_closed
        assert ring.wait_readable(5)
        views = ring.peek()
        assert len(views) == k
        for seq, v in enumerate(views):
            check_msg(v, seq)
        ring.release(k)
        assert ring.peek() == [] and ring.eof
        # A new producer can take over the dead one's role and continue.
        assert ring.push(make_msg(k, 50))
        check_msg(ring.pop(), k)


def blast(ring: Ring, size: int) -> None:
    seq = 0
    rng = random.Random(os.getpid())
    while True:
        if ring.push(make_msg(seq, size, rng)):  # memcpy of the payload happens in C
            seq += 1
        else:
            ring.wait_writable(1, size)


@pytest.mark.parametrize("delay", [0.01, 0.03, 0.07, 0.11, 0.19])
def test_sigkill_at_random_time_while_pushing(delay):
    """Kill a producer that pushes 48 KiB messages flat out; whatever point
    the kill hits, the consumer sees only whole messages, in order."""
    size = 48 * 1024
    with Ring.create(1 << 18) as ring:
        p = run_child(blast, ring, size)
        try:
            got = 0
            assert ring.wait_readable(10)  # the child is pushing: start the clock
            end = time.monotonic() + delay
            while time.monotonic() < end:
                views = ring.peek(16)
                for v in views:
                    check_msg(v, got)
                    got += 1
                ring.release(len(views))
        finally:
            os.kill(p.pid, signal.SIGKILL)
            p.join(10)
            p.close()
        while True:
            views = ring.peek(16)
            if not views:
                break
            for v in views:
                check_msg(v, got)
                got += 1
            ring.release(len(views))
        assert ring.eof and not ring.producer_alive
        assert got > 0


def idle_producer(name: str, ready) -> None:
    ring = Ring.attach(name)
    ring.push(b"hello")
    ready.send(b"x")
    time.sleep(60)


def test_consumer_waiting_forever_notices_a_dead_producer(shm_name):
    rx, tx = ctx.Pipe(duplex=False)
    with Ring.create(4096, shm_name) as ring:
        p = run_child(idle_producer, shm_name, tx)
        tx.close()
        assert rx.poll(20)
        rx.recv()
        rx.close()
        assert ring.pop() == b"hello"
        killer = threading.Timer(0.2, os.kill, args=(p.pid, signal.SIGKILL))
        t0 = time.monotonic()
        killer.start()
        assert ring.wait_readable(None)  # returns: the producer is gone
        elapsed = time.monotonic() - t0
        killer.join()
        p.join(10)
        p.close()
        assert elapsed < 5
        assert ring.eof
        assert ring.get(1) is None


def idle_consumer(ring: Ring, ready) -> None:
    ring.peek()
    ready.send(b"x")
    time.sleep(60)


def test_producer_blocked_on_full_ring_notices_a_dead_consumer():
    rx, tx = ctx.Pipe(duplex=False)
    with Ring.create(256) as ring:
        p = run_child(idle_consumer, ring, tx)
        tx.close()
        assert rx.poll(20)
        rx.recv()
        rx.close()
        while ring.push(b"x" * 56):
            pass
        killer = threading.Timer(0.2, os.kill, args=(p.pid, signal.SIGKILL))
        killer.start()
        with pytest.raises(RingClosed):
            ring.put(b"x" * 56, timeout=10)
        killer.join()
        p.join(10)
        p.close()
        assert not ring.consumer_alive
