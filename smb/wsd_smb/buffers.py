"""Buffer types shared by the object store and the message assembly."""
from __future__ import annotations

from sys import getrefcount


class HeadroomBuffer(bytearray):
    """A payload buffer with ``headroom`` spare bytes in front of the payload, which starts
    at ``headroom`` and runs to the end.  A payload read this way (a READ response's data,
    ``memoryview(buf)[buf.headroom:]``) lets the message assembly write the SMB2 header and
    the response's fixed part into the headroom instead of copying the payload."""

    __slots__ = ("headroom",)

    def __init__(self, headroom: int, size: int) -> None:
        super().__init__(headroom + size)
        self.headroom = headroom


class MessageBufferPool:
    """Large receive buffers (an 8 MiB WRITE's message) used again instead of allocated anew.

    A fresh ``bytearray(n)`` of megabytes costs a zero fill and, for memory the allocator
    has just handed back to the kernel, a page fault per page; a buffer taken from here is
    already resident and is not cleared (the message overwrites it completely).

    A buffer is free again once nothing but the pool refers to it: no message, request,
    handler or ``memoryview`` of it is alive (CPython's reference count says so exactly),
    so nobody has to give buffers back and a buffer a handler kept is never reused under
    it.  Used from one thread (the event loop's); other threads only drop references.
    Buffers smaller than ``min_size`` are not pooled; at most ``max_bytes`` are kept."""

    def __init__(self, min_size: int = 1 << 20, max_bytes: int = 64 << 20) -> None:
        self.min_size = min_size
        self.max_bytes = max_bytes
        self._buffers: list[bytearray] = []
        self._bytes = 0
        self.reused = 0     # statistics: buffers handed out again / allocated
        self.allocated = 0

    def _free(self, i: int) -> bool:
        """Only the pool refers to buffer *i* (referents: the list and getrefcount's argument)."""
        return getrefcount(self._buffers[i]) == 2

    def take(self, size: int) -> bytearray:
        """A bytearray of exactly *size* bytes whose contents are undefined."""
        if size < self.min_size:
            return bytearray(size)
        bufs = self._buffers
        for i in range(len(bufs)):
            if len(bufs[i]) == size and self._free(i):
                self.reused += 1
                return bufs[i]
        buf = bytearray(size)
        self.allocated += 1
        # make room: drop free buffers until this one fits under max_bytes
        i = len(bufs) - 1
        while self._bytes + size > self.max_bytes and i >= 0:
            if self._free(i):
                self._bytes -= len(bufs.pop(i))
            i -= 1
        if self._bytes + size <= self.max_bytes:
            bufs.append(buf)
            self._bytes += size
        return buf

    @property
    def pooled_bytes(self) -> int:
        return self._bytes
