"""The application's socket API, asyncio flavour.

:func:`start_server` and :func:`open_connection` have the contracts of
``asyncio.start_server`` / ``asyncio.open_connection`` (callbacks get
``StreamReader``/``StreamWriter``), but go through the switch: the listening
socket listens through TCP/IP and the matching SAN providers (WSD-L1), and
connects are routed by the SAN table (WSD-C1).

On the TCP path the accepted kernel socket is handed to asyncio's own
transport.  On a SAN path a :class:`SanTransport` drives the connection's
:class:`~wsd.switch.SanConnection` from the loop: it waits on the completion
queue's and the ``FD_CLOSE`` event's fds (eventfds), so no thread is involved.

:class:`AsyncListener` gives the accept step itself (``await accept()`` /
``await accept_ex(n)``) with the same mediation as the blocking API; the
condition function runs on the loop's thread, the one calling ``WSPAccept``.
"""
from __future__ import annotations

import asyncio
import logging
import time

from . import errors
from .switch import SanConnection, Switch, TcpConnection

log = logging.getLogger("wsd.aio")

__all__ = ["start_server", "open_connection", "AsyncListener", "SanTransport", "default_switch"]

_default: Switch | None = None


def default_switch() -> Switch:
    """A process-wide switch configured from ``WSD_SAN_TABLE`` ("subnet=provider,..."); tcp only if unset."""
    global _default
    if _default is None:
        _default = Switch.from_env()
    return _default


async def _wait_readable(objs, timeout: float | None) -> None:
    loop = asyncio.get_running_loop()
    fut = loop.create_future()
    fds = []
    for o in objs:
        fd = o.fileno()
        if fd >= 0 and fd not in fds:
            fds.append(fd)
            loop.add_reader(fd, lambda: fut.done() or fut.set_result(None))
    try:
        if timeout is None:
            await fut
        else:
            try:
                await asyncio.wait_for(fut, max(0.0, timeout))
            except asyncio.TimeoutError:
                pass
    finally:
        for fd in fds:
            loop.remove_reader(fd)


class AsyncListener:
    """A listening switch socket for asyncio code."""

    def __init__(self, switch: Switch, host: str, port: int, backlog: int = 128):
        self.switch = switch
        self.sock = switch.socket()
        self.sock.bind((host, port))
        self.sock.listen(backlog)
        self.listener = self.sock._listener

    def getsockname(self):
        return self.sock.getsockname()

    async def _accept(self, condition, callback_data, initial_size):
        lst = self.listener
        while True:
            r = lst.poll_accept(condition, callback_data, initial_size)
            if r is not None:
                return r
            d = lst.next_deadline()
            await _wait_readable(lst.wait_fds(), None if d is None else d - time.monotonic())

    async def accept(self, condition=None, callback_data=None):
        """-> (connection, peer): a :class:`SanConnection` or :class:`TcpConnection`."""
        r = await self._accept(condition, callback_data, None)
        return r.conn, r.peer

    async def accept_ex(self, initial_size: int, condition=None, callback_data=None):
        r = await self._accept(condition, callback_data, initial_size)
        return r.conn, r.peer, r.initial_data

    def cancel(self) -> None:
        self.listener.cancel()

    def close(self) -> None:
        self.sock.close()


class SanTransport(asyncio.Transport):
    """An asyncio transport over a SAN connection of the switch."""

    HIGH_WATER = 4 << 20
    READ_SIZE = 1 << 18     # at most this much per data_received

    def __init__(self, loop: asyncio.AbstractEventLoop, conn: SanConnection, protocol: asyncio.Protocol,
                 initial: bytes | None = None):
        super().__init__()
        self._loop = loop
        self._conn = conn
        self._protocol = protocol
        self._ops: list = []
        self._pending_bytes = 0
        self._paused = False
        self._closing = False
        self._lost = False
        self._reading = True
        self._fds = [conn.cq.fileno(), conn.event.fileno()]
        self._timer = None
        protocol.connection_made(self)
        if initial:
            protocol.data_received(initial)
        for fd in self._fds:
            loop.add_reader(fd, self._on_ready)
        loop.call_soon(self._on_ready)

    def get_extra_info(self, name, default=None):
        if name == "peername":
            return self._conn.peer
        if name == "sockname":
            return self._conn.provider.WSPGetSockName(self._conn.ps)
        if name == "wsd_path":
            return self._conn.path
        if name == "wsd_connection":
            return self._conn
        return default

    def _schedule_timer(self) -> None:
        d = self._conn.next_deadline()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if d is not None and not self._lost:
            self._timer = self._loop.call_at(self._loop.time() + max(0.0, d - time.monotonic()), self._on_ready)

    def _on_ready(self) -> None:
        if self._lost:
            return
        conn = self._conn
        conn.progress()
        # finished sends
        if self._ops:
            still = []
            for op in self._ops:
                if op.done:
                    self._pending_bytes -= len(op)
                else:
                    still.append(op)
            self._ops = still
            if self._paused and self._pending_bytes <= self.HIGH_WATER // 4:
                self._paused = False
                self._protocol.resume_writing()
        while self._reading and not self._lost:
            try:
                view = conn.try_recv_view(self.READ_SIZE)   # the bytes in their ring span
            except errors.WSAEWOULDBLOCK:
                break
            except errors.WsaError as e:
                self._connection_lost(e)
                return
            if not view:
                keep = self._protocol.eof_received()
                if not keep or self._closing:
                    self.close()
                self._reading = False
                break
            self._protocol.data_received(bytes(view))       # one copy, out of the ring
        if self._closing and conn.core.close_done:
            self._connection_lost(None)
            return
        self._schedule_timer()

    def write(self, data) -> None:
        if self._closing or self._lost:
            return
        if not data:
            return
        try:
            op = self._conn.start_send(bytes(data))
        except errors.WsaError as e:
            self._connection_lost(e)
            return
        if not op.done:
            self._ops.append(op)
            self._pending_bytes += len(op)
            if not self._paused and self._pending_bytes > self.HIGH_WATER:
                self._paused = True
                self._protocol.pause_writing()
        self._schedule_timer()

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self._conn.start_close()

    def get_write_buffer_size(self) -> int:
        return self._pending_bytes

    def is_closing(self) -> bool:
        return self._closing or self._lost

    def pause_reading(self) -> None:
        self._reading = False

    def resume_reading(self) -> None:
        if not self._reading:
            self._reading = True
            self._loop.call_soon(self._on_ready)

    def is_reading(self) -> bool:
        return self._reading

    def close(self) -> None:
        if self._closing or self._lost:
            return
        self._closing = True
        self._conn.start_close()
        self._loop.call_later(self._conn.switch.config.close_timeout, self._force_close)
        self._loop.call_soon(self._on_ready)

    def _force_close(self) -> None:
        if not self._lost:
            self._connection_lost(None)

    def abort(self) -> None:
        self._conn.abort("transport aborted")
        self._connection_lost(None)

    def _connection_lost(self, exc) -> None:
        if self._lost:
            return
        self._lost = True
        if self._timer is not None:
            self._timer.cancel()
        for fd in self._fds:
            self._loop.remove_reader(fd)
        self._conn.finish_close()
        self._protocol.connection_lost(exc)


class RingStreamProtocol(asyncio.StreamReaderProtocol, asyncio.BufferedProtocol):
    """asyncio's stream protocol over the switch's TCP receive ring.

    asyncio's own socket transport drives the kernel socket, and as a buffered
    protocol it ``recv_into``s the buffer this protocol lends it: the free span of
    the connection's ring (:meth:`get_buffer`).  The bytes that arrived are
    committed, handed to the ``StreamReader`` and released (:meth:`buffer_updated`),
    so the asyncio API receives through the same ring as the blocking API (one data
    path), with no temporary bytes object per read.  The ring goes back to the
    switch's pool when the connection is lost."""

    def __init__(self, reader: asyncio.StreamReader, ring, give_back, span: int, loop) -> None:
        super().__init__(reader, loop=loop)
        self._ring = ring
        self._give_back = give_back
        self._span_size = span
        self._span = None       # the reserved, not yet committed span lent to the transport
        self._sink = None
        self._lend = None       # the sink's lender: () -> writable memoryview | None
        self._filled = None     # ... and its completion: (nbytes) -> None
        self._lent = False      # the buffer asyncio reads into is the sink's, not the ring's

    def set_sink(self, sink, lend=None, filled=None) -> None:
        """Deliver received bytes to ``sink(view)`` instead of the ``StreamReader``: the view
        is the ring span itself, valid only during the call (copy what you keep), and
        ``sink(None)`` says end of stream or connection lost.  A framing consumer (e.g. an
        SMB server assembling messages) saves the reader's copy this way.  Bytes the reader
        already holds are handed over first.

        With *lend* and *filled* the consumer may also lend its own buffer: before each read
        ``lend()`` returns a writable memoryview (e.g. the rest of a large message it is
        assembling) or None; the kernel's bytes then go straight into it and ``filled(n)``
        reports them, with no pass through the ring.  None means: read into the ring."""
        self._sink = sink
        self._lend, self._filled = lend, filled
        buffered = self._stream_reader._buffer      # the reader this protocol feeds (asyncio internals)
        if buffered:
            data = bytes(buffered)
            buffered.clear()
            sink(data)
        if self._stream_reader.at_eof():
            sink(None)

    def get_buffer(self, sizehint: int):
        if self._lend is not None:
            buf = self._lend()
            if buf is not None:
                self._lent = True
                return buf
            self._lent = False
        if self._span is None:  # a read that got nothing (EAGAIN) keeps its reservation
            self._span = self._ring.reserve(self._span_size)   # the ring is empty between reads
        return self._span

    def buffer_updated(self, nbytes: int) -> None:
        if self._lent:          # the bytes are in the consumer's buffer already
            self._lent = False
            self._filled(nbytes)
            return
        ring, span = self._ring, self._span
        self._span = None
        ring.commit(nbytes)
        try:
            if self._sink is not None:
                self._sink(span[:nbytes])                       # the sink copies what it keeps
            else:
                self._stream_reader.feed_data(span[:nbytes])   # the reader's one copy
        finally:
            del span
            ring.release(1)

    def eof_received(self):
        if self._sink is not None:
            self._sink(None)
        return super().eof_received()

    def connection_lost(self, exc) -> None:
        try:
            if self._sink is not None:
                sink, self._sink = self._sink, None
                self._lend = self._filled = None
                sink(None)
            super().connection_lost(exc)
        finally:
            ring, self._ring, self._span = self._ring, None, None
            if ring is not None:
                self._give_back(ring)


async def _streams_for(conn, switch: Switch, limit: int, initial: bytes | None = None):
    loop = asyncio.get_running_loop()
    if isinstance(conn, TcpConnection):
        # asyncio's own transport reads the kernel socket from here on, into the ring
        # (RingStreamProtocol); bytes already received into the ring go first
        buffered = conn.take_buffered()
        ksock = conn.provider.detach_kernel_socket(conn.ps)
        switch.WPUCloseSocketHandle(conn.handle)
        conn.closed = True
        conn._drop_ring()
        reader = asyncio.StreamReader(limit=limit, loop=loop)
        if initial:
            reader.feed_data(initial)
        if buffered:
            reader.feed_data(buffered)
        ring = switch._take_tcp_ring(TcpConnection.RING_CAPACITY)
        protocol = RingStreamProtocol(reader, ring, switch._give_tcp_ring, TcpConnection.RECV_SPAN, loop)
        transport = None
        try:
            transport, _ = await loop.create_connection(lambda: protocol, sock=ksock)
        finally:
            if transport is None:           # no transport: the ring goes straight back
                switch._give_tcp_ring(ring)
        return reader, asyncio.StreamWriter(transport, protocol, reader, loop)
    reader = asyncio.StreamReader(limit=limit, loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    transport = SanTransport(loop, conn, protocol, initial)
    writer = asyncio.StreamWriter(transport, protocol, reader, loop)
    return reader, writer


class WsdServer:
    """What :func:`start_server` returns (the subset of ``asyncio.Server`` people use)."""

    def __init__(self, listener: AsyncListener, cb, limit: int, condition):
        self._listener = listener
        self._cb = cb
        self._limit = limit
        self._condition = condition
        self._task: asyncio.Task | None = None
        self._handlers: set[asyncio.Task] = set()
        self._closed = asyncio.Event()

    @property
    def sockets(self):
        return [self._listener.sock]

    def getsockname(self):
        return self._listener.getsockname()

    def _start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._serve())

    async def _serve(self) -> None:
        sw = self._listener.switch
        try:
            while True:
                try:
                    conn, peer = await self._listener.accept(self._condition)
                except errors.WSA_OPERATION_ABORTED:
                    break
                except errors.WsaError as e:
                    log.info("accept failed: %s", e)
                    continue
                reader, writer = await _streams_for(conn, sw, self._limit)
                res = self._cb(reader, writer)
                if asyncio.iscoroutine(res):
                    t = asyncio.get_running_loop().create_task(res)
                    self._handlers.add(t)
                    t.add_done_callback(self._handlers.discard)
        finally:
            self._closed.set()

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._listener.close()

    async def wait_closed(self) -> None:
        if self._task is not None:
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    def is_serving(self) -> bool:
        return self._task is not None and not self._task.done()

    async def serve_forever(self) -> None:
        await self._closed.wait()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        self.close()
        await self.wait_closed()


async def start_server(client_connected_cb, host: str | None = None, port: int = 0, *, switch: Switch | None = None,
                       backlog: int = 128, limit: int = 1 << 16, condition=None, **_ignored) -> WsdServer:
    """Like ``asyncio.start_server``, through the switch."""
    sw = switch or default_switch()
    listener = AsyncListener(sw, host or "0.0.0.0", port, backlog)
    srv = WsdServer(listener, client_connected_cb, limit, condition)
    srv._start()
    return srv


async def open_connection(host: str, port: int, *, switch: Switch | None = None, limit: int = 1 << 16):
    """Like ``asyncio.open_connection``, routed by the switch's SAN table."""
    sw = switch or default_switch()
    loop = asyncio.get_running_loop()
    s = sw.socket()
    await loop.run_in_executor(None, s.connect, (host, port))
    conn = s._conn
    s._conn = None       # the streams own the connection now
    s._closed = True
    return await _streams_for(conn, sw, limit)
