"""Where the SMB server listens: through the switch's asyncio API.

`wsd.aio.start_server` has asyncio.start_server's contract (callback gets
StreamReader/StreamWriter-compatible objects; returns a server with close(),
wait_closed() and sockets).  Until the switch provides it, asyncio.start_server is used.
"""
from __future__ import annotations

import asyncio
import importlib
import os

from ..buffers import MessageBufferPool


def _switch_start_server():
    try:
        aio = importlib.import_module("wsd.aio")
    except ImportError:
        return None
    return getattr(aio, "start_server", None)


async def start_server(client_connected_cb, host: str, port: int, **kw):
    """Listen through the switch (wsd.aio); WSD_SMB_TRANSPORT=asyncio forces plain asyncio
    (for comparing the two paths)."""
    start = None if os.environ.get("WSD_SMB_TRANSPORT") == "asyncio" else _switch_start_server()
    return await (start or asyncio.start_server)(client_connected_cb, host, port, **kw)


class DirectTcpFramer:
    """Direct TCP transport framing (MS-SMB2 2.1): each message is preceded by a 4-byte
    header, a zero byte and a 24-bit big-endian length.  Sans-IO: feed bytes, get messages.

    Each message is assembled in a ``bytearray`` of its final size, so every byte is
    copied once, from the received chunk into the message (an 8 MiB WRITE arriving in
    256 KiB reads is not re-joined or re-sliced); with :meth:`lend` the kernel's read is
    that one copy.  Big message buffers come from a :class:`MessageBufferPool` if one is
    given (no zero fill, no page faults for each 8 MiB WRITE)."""

    #: the rest of a message at least this big is worth reading straight into it (:meth:`lend`)
    LEND_MIN = 128 * 1024

    def __init__(self, max_message_size: int = 16 * 1024 * 1024 + 4096, pool: MessageBufferPool | None = None):
        self.max = max_message_size
        self._pool = pool
        self._hdr = bytearray()
        self._msg: bytearray | None = None
        self._filled = 0

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytearray]:
        """Return the messages completed by *data*; raise ValueError on a bad frame header."""
        out = []
        view = memoryview(data)
        pos, end = 0, len(view)
        while pos < end:
            msg = self._msg
            if msg is None:
                take = min(4 - len(self._hdr), end - pos)
                self._hdr += view[pos : pos + take]
                pos += take
                if len(self._hdr) < 4:
                    break
                hdr = self._hdr
                if hdr[0] != 0:
                    raise ValueError(f"bad Direct TCP frame header byte 0x{hdr[0]:02x}")
                n = int.from_bytes(hdr[1:4], "big")
                if n > self.max:
                    raise ValueError(f"frame of {n} bytes exceeds {self.max}")
                self._hdr = bytearray()
                msg = self._msg = bytearray(n) if self._pool is None else self._pool.take(n)
                self._filled = 0
            take = min(len(msg) - self._filled, end - pos)
            msg[self._filled : self._filled + take] = view[pos : pos + take]
            self._filled += take
            pos += take
            if self._filled == len(msg):
                out.append(msg)
                self._msg = None
        return out

    def lend(self) -> memoryview | None:
        """The unfilled rest of the message being assembled, if it is at least ``LEND_MIN``
        bytes: a transport that can read into a buffer of the consumer's (asyncio's
        buffered protocols) reads the kernel's bytes straight into it, then calls
        :meth:`filled`.  None: read into your own buffer and :meth:`feed` it."""
        msg = self._msg
        if msg is None or len(msg) - self._filled < self.LEND_MIN:
            return None
        return memoryview(msg)[self._filled:]

    def filled(self, nbytes: int) -> list[bytearray]:
        """*nbytes* were read into the buffer :meth:`lend` gave; the message if it is complete."""
        msg = self._msg
        if msg is None or nbytes < 0 or self._filled + nbytes > len(msg):
            raise ValueError(f"filled({nbytes}) beyond the lent buffer")
        self._filled += nbytes
        if self._filled < len(msg):
            return []
        self._msg = None
        return [msg]

    @staticmethod
    def frame(message: bytes) -> bytes:
        if len(message) >= 1 << 24:
            raise ValueError("message too large for Direct TCP")
        return len(message).to_bytes(4, "big") + message
