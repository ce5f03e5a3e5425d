"""Where the SMB server listens: through the switch's asyncio API.

`wsd.aio.start_server` has asyncio.start_server's contract (callback gets
StreamReader/StreamWriter-compatible objects; returns a server with close(),
wait_closed() and sockets).  Until the switch provides it, asyncio.start_server is used.
"""
from __future__ import annotations

import asyncio
import importlib
import os


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
    256 KiB reads is not re-joined or re-sliced)."""

    def __init__(self, max_message_size: int = 16 * 1024 * 1024 + 4096):
        self.max = max_message_size
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
                msg = self._msg = bytearray(n)
                self._filled = 0
            take = min(len(msg) - self._filled, end - pos)
            msg[self._filled : self._filled + take] = view[pos : pos + take]
            self._filled += take
            pos += take
            if self._filled == len(msg):
                out.append(msg)
                self._msg = None
        return out

    @staticmethod
    def frame(message: bytes) -> bytes:
        if len(message) >= 1 << 24:
            raise ValueError("message too large for Direct TCP")
        return len(message).to_bytes(4, "big") + message
