"""wsd-smbd's worker pool (server/workers.py): jobs on threads, completions on the loop."""
from __future__ import annotations

import asyncio
import os
import threading
import time

import pytest

from wsd_smb.server.workers import WorkerPool


def _is_eventfd(fd: int) -> bool:
    try:
        return os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:[eventfd]"
    except OSError:
        return False


def test_results_and_exceptions_come_back_on_the_loop_thread():
    async def main():
        pool = WorkerPool(3)
        loop_thread = threading.get_ident()
        got: list = []
        done_all = asyncio.Event()

        def done(i):
            def cb(result, exc):
                got.append((i, result, type(exc).__name__ if exc else None, threading.get_ident() == loop_thread))
                if len(got) == 200:
                    done_all.set()
            return cb

        def job(i):
            if i % 50 == 7:
                raise KeyError(i)
            return i * i, threading.get_ident()

        for i in range(200):
            pool.submit(lambda i=i: job(i), done(i))
        await asyncio.wait_for(done_all.wait(), 10)
        assert sorted(g[0] for g in got) == list(range(200))
        for i, result, exc, on_loop in got:
            assert on_loop
            if i % 50 == 7:
                assert result is None and exc == "KeyError"
            else:
                assert result[0] == i * i and exc is None and result[1] != loop_thread
        assert await pool.run(lambda: 41 + 1) == 42
        with pytest.raises(ZeroDivisionError):
            await pool.run(lambda: 1 / 0)
        pool.shutdown()
        with pytest.raises(RuntimeError):
            pool.submit(lambda: None, lambda r, e: None)

    asyncio.run(main())


def test_blocking_jobs_run_in_parallel_and_do_not_stall_the_loop():
    async def main():
        pool = WorkerPool(4)
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.005)
                ticks += 1

        t = asyncio.get_running_loop().create_task(ticker())
        start = time.monotonic()
        await asyncio.gather(*(pool.run(lambda: time.sleep(0.3)) for _ in range(4)))
        elapsed = time.monotonic() - start
        t.cancel()
        pool.shutdown()
        assert elapsed < 1.0          # four 0.3 s sleeps side by side, not one after another
        assert ticks >= 10            # the loop kept running meanwhile

    asyncio.run(main())


def test_shutdown_lets_queued_jobs_finish_and_closes_the_eventfd():
    async def main():
        pool = WorkerPool(2)
        efd = pool._efd
        ran = []
        for i in range(6):
            pool.submit(lambda i=i: (time.sleep(0.01), ran.append(i)), lambda r, e: None)
        pool.shutdown()
        deadline = time.monotonic() + 5
        while any(t.is_alive() for t in pool._threads) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert sorted(ran) == list(range(6))
        assert not any(t.is_alive() for t in pool._threads)
        assert not _is_eventfd(efd)

    asyncio.run(main())
