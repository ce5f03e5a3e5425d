"""The worker threads that run wsd-smbd's blocking handlers, with completions handed
back to the event loop in batches.

``concurrent.futures.ThreadPoolExecutor`` plus ``call_soon_threadsafe`` costs, per
request, a Future with its condition variable, an idle semaphore, a callback list and
one self-pipe write and read.  Here a job is a tuple on a ``queue.SimpleQueue``; a
finished job goes on a deque, and one ``eventfd`` write wakes the loop for however many
jobs finish before the loop gets to them (the loop drains them all in one callback).
"""
from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
from collections import deque
from typing import Any, Callable

log = logging.getLogger("wsd_smb.server")


class WorkerPool:
    """*workers* threads running jobs for one asyncio loop.

    :meth:`submit` ``(fn, done)`` runs ``fn()`` on a worker, then ``done(result, exc)`` on
    the loop thread (exactly one of them is meaningful: *exc* is the exception ``fn``
    raised, or None).  Jobs start in submission order; they may finish in any order.
    Must be created on the loop's thread."""

    def __init__(self, workers: int = 8, name: str = "smb-io") -> None:
        if workers < 1:
            raise ValueError("workers must be >= 1")
        self._loop = asyncio.get_running_loop()
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._done: deque = deque()
        self._efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._signalled = False      # an eventfd write is pending: later finishers need not write
        self._closed = False
        self._running = workers          # the last worker to exit closes the eventfd
        self._exit_lock = threading.Lock()
        self._loop.add_reader(self._efd, self._drain)
        self._threads = [threading.Thread(target=self._work, name=f"{name}_{i}", daemon=True)
                         for i in range(workers)]
        for t in self._threads:
            t.start()

    def submit(self, fn: Callable[[], Any], done: Callable[[Any, BaseException | None], None]) -> None:
        if self._closed:
            raise RuntimeError("worker pool is shut down")
        self._jobs.put((fn, done))

    async def run(self, fn: Callable[[], Any]) -> Any:
        """Await ``fn()`` run on a worker (for the rare jobs outside the request path)."""
        fut = self._loop.create_future()

        def done(result: Any, exc: BaseException | None) -> None:
            if fut.cancelled():
                return
            if exc is not None:
                fut.set_exception(exc)
            else:
                fut.set_result(result)

        self.submit(fn, done)
        return await fut

    def _work(self) -> None:
        jobs, finished = self._jobs, self._done
        while True:
            job = jobs.get()
            if job is None:
                with self._exit_lock:
                    self._running -= 1
                    if self._running == 0:
                        os.close(self._efd)
                return
            fn, done = job
            try:
                result, exc = fn(), None
            except BaseException as e:  # handed to the loop as the job's outcome, never lost
                result, exc = None, e
            finished.append((done, result, exc))
            # an idle worker must not keep its last job (and the request buffers it
            # refers to) alive until the next one comes
            del job, fn, done, result, exc
            # after the append: either the loop has not reset the flag yet (and will drain
            # this job in the pass it is about to make), or this write wakes it again
            if not self._signalled:
                self._signalled = True
                os.eventfd_write(self._efd, 1)

    def _drain(self) -> None:
        try:
            os.eventfd_read(self._efd)
        except BlockingIOError:
            pass
        self._signalled = False
        finished = self._done
        while finished:
            done, result, exc = finished.popleft()
            done(result, exc)

    def shutdown(self) -> None:
        """Stop the workers once the jobs already queued are done (the eventfd is closed
        when the last one exits); completions arriving after this are dropped."""
        if self._closed:
            return
        self._closed = True
        for _ in self._threads:
            self._jobs.put(None)
        try:
            self._loop.remove_reader(self._efd)
        except (RuntimeError, ValueError):  # the loop is closed already
            pass
