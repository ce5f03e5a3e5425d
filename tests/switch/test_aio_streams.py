"""wsd.aio: start_server / open_connection with asyncio's stream contracts, over every path
(tcp, and each SAN provider available here), both ends in this process on one loop."""
from __future__ import annotations

import asyncio
import hashlib

import pytest

from peer import pattern
from switch_env import ALL, table_for
from wsd import aio


@pytest.mark.parametrize("provider", ALL)
def test_echo_1mib_both_ways_and_eof(switches, provider):
    sw = switches(table_for(provider))
    payload = pattern(1 << 20, 5)

    async def echo(reader, writer):
        while True:
            chunk = await reader.read(1 << 16)
            if not chunk:
                break
            writer.write(chunk)
            await writer.drain()
        writer.close()

    async def main():
        server = await aio.start_server(echo, "127.0.0.1", 0, switch=sw)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.wait_for(aio.open_connection("127.0.0.1", port, switch=sw), 20)
        path = writer.get_extra_info("wsd_path") or "tcp"

        async def send():
            for i in range(0, len(payload), 100_000):
                writer.write(payload[i:i + 100_000])
                await writer.drain()
            writer.write_eof()
        sender = asyncio.create_task(send())
        got = await asyncio.wait_for(reader.read(), 60)     # to EOF: the echo closes after ours
        await sender
        writer.close()
        server.close()
        await server.wait_closed()
        return path, got

    path, got = asyncio.run(main())
    assert path == provider
    assert len(got) == len(payload) and hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
