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
    header, a zero byte and a 24-bit big-endian length.  Sans-IO: feed bytes, get messages."""

    def __init__(self, max_message_size: int = 16 * 1024 * 1024 + 4096):
        self.max = max_message_size
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """Return the complete messages; raise ValueError on a bad frame header."""
        self._buf += data
        out = []
        while len(self._buf) >= 4:
            if self._buf[0] != 0:
                raise ValueError(f"bad Direct TCP frame header byte 0x{self._buf[0]:02x}")
            n = int.from_bytes(self._buf[1:4], "big")
            if n > self.max:
                raise ValueError(f"frame of {n} bytes exceeds {self.max}")
            if len(self._buf) < 4 + n:
                break
            out.append(bytes(self._buf[4 : 4 + n]))
            del self._buf[: 4 + n]
        return out

    @staticmethod
    def frame(message: bytes) -> bytes:
        if len(message) >= 1 << 24:
            raise ValueError("message too large for Direct TCP")
        return len(message).to_bytes(4, "big") + message
