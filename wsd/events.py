"""Win32-style event objects and completion queues, pollable through eventfd.

An :class:`EventObject` is a manual-reset event (``SetEvent``/``ResetEvent``)
backed by a Linux eventfd: it is readable while signalled, so a selector or an
asyncio loop can wait on many of them at once (``fileno()``).

A :class:`CompletionQueue` is where a provider reports finished overlapped
operations (``WSPSend``/``WSPRecv``/``WSPRdmaRead``/``WSPRdmaWrite``); it owns an
eventfd that is readable while completions are queued.
"""
from __future__ import annotations

import collections
import os
import select
import threading
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = ["EventObject", "CompletionQueue", "Completion", "Overlapped", "wait_any"]


class EventObject:
    """A manual-reset event object (Win32 ``CreateEvent(NULL, TRUE, FALSE, NULL)``)."""

    __slots__ = ("_fd", "_lock", "_signalled", "name", "__weakref__")

    def __init__(self, name: str = ""):
        self._fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._lock = threading.Lock()
        self._signalled = False
        self.name = name

    def fileno(self) -> int:
        return self._fd

    def set(self) -> None:
        """``SetEvent``: signal; stays signalled until :meth:`reset`."""
        with self._lock:
            if not self._signalled and self._fd >= 0:
                self._signalled = True
                os.eventfd_write(self._fd, 1)

    def reset(self) -> None:
        """``ResetEvent``: back to non-signalled."""
        with self._lock:
            if self._signalled and self._fd >= 0:
                self._signalled = False
                try:
                    os.eventfd_read(self._fd)
                except BlockingIOError:
                    pass

    def is_set(self) -> bool:
        return self._signalled

    def wait(self, timeout: float | None = None) -> bool:
        if self._signalled:
            return True
        wait_any([self], timeout)
        return self._signalled

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def __repr__(self) -> str:
        return f"<EventObject {self.name!r} {'signalled' if self._signalled else 'clear'}>"


def wait_any(objs, timeout: float | None) -> list:
    """Wait until any of ``objs`` (things with ``fileno()``) is readable; return the ready ones."""
    poller = select.poll()
    by_fd = {}
    for o in objs:
        fd = o.fileno()
        if fd >= 0:
            poller.register(fd, select.POLLIN)
            by_fd[fd] = o
    ms = None if timeout is None else max(0, int(timeout * 1000 + 0.999))
    while True:
        try:
            ready = poller.poll(ms)
            break
        except InterruptedError:
            continue
    return [by_fd[fd] for fd, _ in ready if fd in by_fd]


@dataclass(slots=True)
class Overlapped:
    """The switch's handle on one overlapped request (Win32 ``WSAOVERLAPPED``).

    ``cq`` is where the provider posts the completion; ``context`` is the
    switch's own cookie (opaque to the provider).
    """

    cq: "CompletionQueue"
    context: Any = None


@dataclass(slots=True)
class Completion:
    """One finished overlapped request: ``error`` is 0 or a WSA code."""

    overlapped: Overlapped
    error: int = 0
    transferred: int = 0
    flags: int = 0
    posted_at: float = field(default=0.0)


class CompletionQueue:
    """Completions of overlapped requests; readable fd while non-empty. Thread-safe."""

    def __init__(self, name: str = ""):
        self.name = name
        self._q: collections.deque[Completion] = collections.deque()
        self._fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._lock = threading.Lock()
        self._armed = False

    def fileno(self) -> int:
        return self._fd

    def post(self, overlapped: Overlapped, error: int = 0, transferred: int = 0, flags: int = 0) -> None:
        """Called by a provider (any thread) when a request finishes."""
        c = Completion(overlapped, error, transferred, flags, time.monotonic())
        with self._lock:
            self._q.append(c)
            if not self._armed and self._fd >= 0:
                self._armed = True
                os.eventfd_write(self._fd, 1)

    def poll(self, max_n: int = 64) -> list[Completion]:
        """Take up to ``max_n`` completions without blocking."""
        with self._lock:
            out = []
            q = self._q
            while q and len(out) < max_n:
                out.append(q.popleft())
            if not q and self._armed:
                self._armed = False
                try:
                    os.eventfd_read(self._fd)
                except BlockingIOError:
                    pass
            return out

    def __len__(self) -> int:
        return len(self._q)

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
