"""Blocking waits and the eventfd wake-up protocol (threads in one process,
eventfds shared by dup, SCM_RIGHTS, asyncio)."""

from __future__ import annotations

import asyncio
import os
import random
import select
import socket
import threading
import time

import pytest

import wsd_ring
from wsd_ring import Ring, recv_eventfds

from ring_helpers import check_msg, make_msg


@pytest.fixture
def no_slice_polling(monkeypatch):
    """Make each sleep as long as the wait's timeout: a lost wake-up then
    shows as a missed deadline instead of being hidden by periodic polling."""
    monkeypatch.setattr(wsd_ring, "_SLICE", 30.0)


def test_wait_readable_times_out():
    with Ring.create(1024) as ring:
        t0 = time.monotonic()
        assert ring.wait_readable(0.2) is False
        assert 0.15 <= time.monotonic() - t0 < 2
        assert ring.wait_readable(0) is False


def test_wait_readable_woken_by_producer_thread(no_slice_polling):
    with Ring.create(1024) as ring:
        ring.peek()
        t = threading.Timer(0.1, ring.push, args=(b"wake",))
        t0 = time.monotonic()
        t.start()
        assert ring.wait_readable(10)
        elapsed = time.monotonic() - t0
        t.join()
        assert ring.pop() == b"wake"
        assert elapsed < 5, f"woken only after {elapsed:.2f}s"


def test_wait_writable_woken_by_consumer_thread(no_slice_polling):
    with Ring.create(256) as ring:
        while ring.push(b"f" * 24):
            pass
        t = threading.Timer(0.1, ring.pop_batch)
        t0 = time.monotonic()
        t.start()
        assert ring.wait_writable(10, 24)
        t.join()
        assert time.monotonic() - t0 < 5
        assert ring.push(b"f" * 24)


def test_no_lost_wakeup_under_ping_pong(shm_name, no_slice_polling):
    """Producer and consumer threads on separate handles, both sleeping a lot:
    every message arrives and no wait sleeps through a publish."""
    n = 3000
    with Ring.create(512, shm_name) as prod:
        cons = Ring.attach(shm_name, eventfds=(os.dup(prod.readable_fd), os.dup(prod.writable_fd)))
        errors: list[BaseException] = []

        def producer():
            rng = random.Random(1)
            try:
                for seq in range(n):
                    prod.put(make_msg(seq, rng.randrange(16, 120)), timeout=20)
                    if rng.random() < 0.02:
                        time.sleep(0.0005)
                prod.close()
            except BaseException as e:  # noqa: BLE001 - reported by the main thread
                errors.append(e)

        th = threading.Thread(target=producer)
        t0 = time.monotonic()
        th.start()
        with cons:
            for seq in range(n):
                data = cons.get(timeout=20)
                assert data is not None, f"EOF after {seq} messages"
                check_msg(data, seq)
            assert cons.get(timeout=20) is None  # EOF
        th.join(20)
        assert not errors, errors
        assert time.monotonic() - t0 < 30


def test_arm_then_select_on_readable_fd():
    with Ring.create(1024) as ring:
        assert ring.arm_readable() is False  # empty: go to sleep
        assert select.select([ring.readable_fd], [], [], 0)[0] == []
        ring.push(b"x")  # producer sees the waiting flag and writes the eventfd
        assert select.select([ring], [], [], 5)[0] == [ring]
        ring.ack_readable()
        assert select.select([ring.readable_fd], [], [], 0)[0] == []
        assert ring.arm_readable() is True  # already readable: do not sleep
        assert ring.pop() == b"x"


def test_producer_does_not_signal_a_consumer_that_is_not_waiting():
    with Ring.create(1024) as ring:
        for _ in range(10):
            ring.push(b"x")
        assert select.select([ring.readable_fd], [], [], 0)[0] == []
        ring.pop_batch()


def test_eventfds_passed_over_unix_socket(shm_name, no_slice_polling):
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b, Ring.create(1024, shm_name) as prod:
        prod.send_eventfds(a)
        fds = recv_eventfds(b)
        assert all(fd not in prod.eventfds for fd in fds)
        with Ring.attach(shm_name, eventfds=fds) as cons:
            assert cons.eventfds == fds
            cons.peek()
            t = threading.Timer(0.1, prod.push, args=(b"over scm_rights",))
            t.start()
            assert cons.wait_readable(10)
            t.join()
            assert cons.pop() == b"over scm_rights"


def test_recv_eventfds_rejects_other_messages():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        r, w = os.pipe()
        socket.send_fds(a, [b"something else"], [r])
        os.close(r)
        os.close(w)
        with pytest.raises(wsd_ring.RingError):
            recv_eventfds(b)


def test_adopt_eventfds_replaces_and_closes_old(shm_name):
    with Ring.create(1024, shm_name) as prod, Ring.attach(shm_name) as cons:
        assert cons.eventfds == (-1, -1)
        # Without eventfds the wait falls back to polling and still works.
        t = threading.Timer(0.05, prod.push, args=(b"polled",))
        t.start()
        assert cons.wait_readable(5)
        t.join()
        assert cons.pop() == b"polled"
        cons.adopt_eventfds(os.dup(prod.readable_fd), os.dup(prod.writable_fd))
        assert cons.arm_readable() is False
        prod.push(b"signalled")
        assert select.select([cons], [], [], 5)[0] == [cons]
        cons.ack_readable()
        assert cons.pop() == b"signalled"


def test_wait_readable_async():
    async def main(ring: Ring) -> list[bytes]:
        loop = asyncio.get_running_loop()
        loop.call_later(0.05, ring.push, b"one")
        loop.call_later(0.10, ring.push, b"two")
        got = []
        while len(got) < 2:
            assert await ring.wait_readable_async(5)
            got += ring.pop_batch()
        assert await ring.wait_readable_async(0.1) is False
        return got

    with Ring.create(1024) as ring:
        assert asyncio.run(main(ring)) == [b"one", b"two"]
