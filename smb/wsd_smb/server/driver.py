"""The asyncio driver: sockets in, the sans-IO Connection in the middle, a bounded
thread pool for blocking handlers.  One task per connection, no thread per connection."""
from __future__ import annotations

import asyncio
import logging
import time

from ..core.connection import Cleanup, Close, Connection, Send, Work
from ..buffers import MessageBufferPool
from ..core.state import Server, SessionState
from .transport import DirectTcpFramer, start_server
from .workers import WorkerPool

log = logging.getLogger("wsd_smb.server")

_MAX_QUEUED = 64  # messages buffered per connection before we stop reading
_MAX_QUEUED_BYTES = 32 * 1024 * 1024  # ... or this many bytes of them
_COALESCE = 64 * 1024  # responses up to this size go out with their frame header in one write
_INLINE_WRITE_LIMIT = 256 * 1024  # requests run straight from the read callback while less than this waits to go out


def load_file_handlers() -> None:
    """Register the file-command handlers (files.py: TREE_CONNECT/TREE_DISCONNECT and the
    file commands) and the IPC$ named pipes (wsd_smb.rpc)."""
    try:
        from ..core import files  # noqa: F401
    except ImportError as e:
        log.warning("event=files_handlers_missing error=%r", str(e))
        return
    from .. import rpc  # noqa: F401  (registers the IPC$ pipes: srvsvc)


class SmbServer:
    """Runs a :class:`Server` on host:port."""

    def __init__(self, server: Server, *, workers: int = 8):
        load_file_handlers()
        self.server = server
        self.workers = workers
        self.pool: WorkerPool | None = None  # started with the server, on its loop
        self._listener = None
        self._ticker: asyncio.Task | None = None
        self.drain_timeout = 5.0
        self._tasks: set[asyncio.Task] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        #: big message buffers (WRITE requests) reused across connections, on the loop thread
        self.buffers = MessageBufferPool()
        #: bytes the kernel read straight into message buffers (no ring pass), all connections
        self.direct_bytes = 0
        #: messages run straight from the read callback / by the connection's task (see _MessageSource)
        self.messages_inline = 0
        self.messages_queued = 0

    async def start(self, host: str = "127.0.0.1", port: int = 4450):
        if self.pool is None:
            self.pool = WorkerPool(self.workers)
        self._listener = await start_server(self._client, host, port)
        self._ticker = asyncio.get_running_loop().create_task(self._tick())
        return self._listener

    async def _tick(self) -> None:
        """Fire the core's timers (oplock/lease break timeouts, durable-open scavenger)
        once Server.next_deadline() has passed; blocking clean-up runs in the pool."""
        while True:
            deadline, now = self.server.next_deadline(), time.time()
            if deadline is not None and deadline <= now:
                await self.pool.run(lambda: self.server.handle_timers(now))
                continue
            await asyncio.sleep(0.25 if deadline is None else min(0.25, deadline - now))

    @property
    def sockets(self):
        return self._listener.sockets if self._listener else []

    @property
    def port(self) -> int:
        return self.sockets[0].getsockname()[1]

    async def close(self, drain_timeout: float = 5.0) -> None:
        """Stop listening; on every connection stop reading, let the requests already
        received finish and their responses go out (up to *drain_timeout*), then close."""
        self.drain_timeout = drain_timeout
        if self._ticker is not None:
            self._ticker.cancel()
        if self._listener is not None:
            self._listener.close()
        for t in list(self._tasks):
            t.cancel()  # interrupts the read; the connection's finally-block drains
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=drain_timeout + 5)
        if self._listener is not None:
            await self._listener.wait_closed()
        if self.pool is not None:
            self.pool.shutdown()

    def _count_direct(self, nbytes: int) -> None:
        self.direct_bytes += nbytes

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        self._writers.add(writer)
        peer = writer.get_extra_info("peername")
        addr = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        conn = Connection(self.server, client_address=addr)
        local = writer.get_extra_info("sockname")
        conn.server_address = tuple(local) if isinstance(local, (tuple, list)) else None
        loop = asyncio.get_running_loop()
        state = _ConnState(conn, writer, loop, self.pool, self)
        conn.wakeup = lambda: loop.call_soon_threadsafe(state.on_wakeup)
        source = _MessageSource(reader, writer, DirectTcpFramer(self.server.config.max_message_size, self.buffers),
                                on_direct=self._count_direct, state=state)
        log.info("event=connect client=%s", addr)
        timeout = self.server.config.logon_timeout
        watchdog = loop.call_later(timeout, state.logon_deadline, addr) if timeout > 0 else None
        reason = "eof"
        try:
            while not state.closed:
                while (len(conn._queue) > _MAX_QUEUED or sum(len(d) for d, _ in conn._queue) > _MAX_QUEUED_BYTES) \
                        and not state.closed:
                    state.drained.clear()
                    await state.drained.wait()
                try:
                    msgs = await source.next_messages()
                except ValueError as e:
                    reason = str(e)
                    log.warning("event=disconnect client=%s reason=%r", addr, reason)
                    break
                if msgs is None:
                    break
                self.messages_queued += len(msgs)
                for m in msgs:
                    state.handle(conn.receive_message(m, time.time()))
                    if state.closed:
                        break
                await state.drain()
        except (ConnectionError, OSError) as e:
            reason = f"{type(e).__name__}: {e}"
        except asyncio.CancelledError:
            reason = "server stopping"
        finally:
            if watchdog is not None:
                watchdog.cancel()
            # drain: requests already received finish and their responses are written
            deadline = time.monotonic() + self.drain_timeout
            while not conn.closed and state.busy() and time.monotonic() < deadline:
                await state.wait_idle(max(0.01, deadline - time.monotonic()))
            await state.drain()
            state.closed = True
            works = conn.connection_lost(time.time())
            for wk in works:
                await self.pool.run(wk.run)
            try:
                writer.close()
            except (OSError, RuntimeError):
                pass
            self._writers.discard(writer)
            self._tasks.discard(task)
            log.info("event=disconnect client=%s reason=%r", addr, reason)


class _MessageSource:
    """The framed SMB2 messages of one connection.

    On the switch's TCP path the transport's protocol takes a sink
    (``wsd.aio.RingStreamProtocol.set_sink``): each kernel read lands in the switch's
    receive ring and goes from there straight into the framer, which assembles the
    message in its final buffer (one copy), with reading paused while
    ``_SINK_HIGH`` bytes of messages wait.  Elsewhere (SAN paths) the stream reader
    is read as before.  While a big message is being assembled, the protocol lends the
    message buffer itself to the kernel read (``lend``/``filled``): the bytes skip the ring."""

    _SINK_HIGH = 16 * 1024 * 1024

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, framer: DirectTcpFramer,
                 on_direct=None, state: "_ConnState | None" = None):
        self._reader = reader
        self._state = state
        self._waiting = False  # the connection's task sleeps in next_messages() with nothing ready
        self._on_direct = on_direct
        self._framer = framer
        self._transport = writer.transport
        self._ready: list = []
        self._ready_bytes = 0
        self._error: ValueError | None = None
        self._eof = False
        self._paused = False
        self._wake = asyncio.Event()
        protocol = self._transport.get_protocol()
        self._sinking = hasattr(protocol, "set_sink")
        if self._sinking:
            protocol.set_sink(self._sink, self._lend, self._filled)

    def _sink(self, view) -> None:
        if view is None:
            self._eof = True
        elif self._error is None and not self._eof:
            try:
                msgs = self._framer.feed(view)
            except ValueError as e:
                self._error = e
            else:
                if not msgs or self._run_inline(msgs):
                    return
                self._deliver(msgs)
        self._wake.set()

    def _run_inline(self, msgs: list) -> bool:
        """Run *msgs* right here, in the read callback, when the connection's task is idle
        (nothing queued before them, so the order holds) and the peer keeps up with our
        responses: this saves the task wake-up per request.  Otherwise the task takes them."""
        state = self._state
        if state is None or not self._waiting or self._ready or not state.run_inline(msgs):
            return False
        if state.closed:  # the task wakes up to finish the connection
            self._eof = True
            self._wake.set()
        return True

    def _lend(self):
        """The rest of a big message: the kernel reads straight into it (no ring pass)."""
        if self._error is None and not self._eof:
            return self._framer.lend()
        return None

    def _filled(self, nbytes: int) -> None:
        if self._on_direct is not None:
            self._on_direct(nbytes)
        msgs = self._framer.filled(nbytes)
        if msgs and not self._run_inline(msgs):
            self._deliver(msgs)
            self._wake.set()

    def _deliver(self, msgs: list) -> None:
        self._ready += msgs
        self._ready_bytes += sum(len(m) for m in msgs)
        if self._ready_bytes > self._SINK_HIGH and not self._paused:
            self._paused = True
            self._transport.pause_reading()

    async def next_messages(self) -> list | None:
        """The next complete messages; None at end of stream; ValueError on a bad frame."""
        if not self._sinking:
            data = await self._reader.read(256 * 1024)
            return self._framer.feed(data) if data else None
        while not self._ready and self._error is None and not self._eof:
            self._wake.clear()
            self._waiting = True
            try:
                await self._wake.wait()
            finally:
                self._waiting = False
        if self._ready:
            msgs, self._ready, self._ready_bytes = self._ready, [], 0
            if self._paused:
                self._paused = False
                self._transport.resume_reading()
            return msgs
        if self._error is not None:
            raise self._error
        return None


class _ConnState:
    """Runs the events of one connection on the loop."""

    def __init__(self, conn: Connection, writer: asyncio.StreamWriter, loop, pool, counters: SmbServer):
        self.conn = conn
        self.counters = counters
        self.writer = writer
        self.loop = loop
        self.pool = pool
        self.closed = False
        self.drained = asyncio.Event()
        self._work_running = 0  # handlers running on the pool
        self._idle = asyncio.Event()

    def run_inline(self, msgs: list) -> bool:
        """Process *msgs* now, on the read callback (see _MessageSource._run_inline);
        False when the task must take them: closing, requests queued behind a blocking
        handler, or responses not yet written out (the task waits for the drain)."""
        conn = self.conn
        if self.closed or self.writer.is_closing() or len(conn._queue) > _MAX_QUEUED \
                or (conn._queue and sum(len(d) for d, _ in conn._queue) > _MAX_QUEUED_BYTES) \
                or self.writer.transport.get_write_buffer_size() > _INLINE_WRITE_LIMIT:
            return False
        now = time.time()
        self.counters.messages_inline += len(msgs)
        try:
            for m in msgs:
                self.handle(conn.receive_message(m, now))
                if self.closed:
                    break
        except (ConnectionError, OSError) as e:
            log.warning("event=disconnect client=%s reason=%r", conn.client_address, f"{type(e).__name__}: {e}")
            self.closed = True
            self.writer.close()
        return True

    def handle(self, events: list) -> None:
        for ev in events:
            if isinstance(ev, Send):
                if not self.writer.is_closing():
                    if len(ev.data) >= 1 << 24:  # cannot happen with max sizes <= 8 MiB; never send it
                        log.error("event=disconnect reason='response of %d bytes exceeds a frame'", len(ev.data))
                        self.closed = True
                        self.writer.close()
                        return
                    hdr = len(ev.data).to_bytes(4, "big")  # Direct TCP header, then the message
                    if len(ev.data) <= _COALESCE:
                        self.writer.write(hdr + ev.data)  # one send() for a small message
                    else:
                        self.writer.write(hdr)  # a big READ answer is not copied again
                        self.writer.write(ev.data)
            elif isinstance(ev, Work):
                self._submit(ev)
            elif isinstance(ev, Cleanup):
                self.pool.submit(ev.fn, self._cleanup_finished)
            elif isinstance(ev, Close):
                self.closed = True
                self.writer.close()
                self.drained.set()
                return

    def _submit(self, work: Work) -> None:
        """Run a blocking handler on the pool; its completion comes back on the loop
        (batched with others that finish meanwhile, see workers.py)."""
        self._work_running += 1
        self.pool.submit(work.run, lambda _result, exc: self._work_finished(work, exc))

    @staticmethod
    def _cleanup_finished(_result, exc: BaseException | None) -> None:
        if exc is not None:  # a bug in a clean-up hook: logged, the connection goes on
            log.error("event=cleanup_failed error=%r", exc, exc_info=(type(exc), exc, exc.__traceback__))

    def _work_finished(self, work: Work, exc: BaseException | None) -> None:
        self._work_running -= 1
        if not self._work_running:
            self._idle.set()
        if exc is not None:  # something Work.run does not map (a bug): drop this connection only
            log.error("event=disconnect reason='internal error' error=%r", exc,
                      exc_info=(type(exc), exc, exc.__traceback__))
            self.closed = True
            self.writer.close()
            self.drained.set()
            return
        if self.closed and self.conn.closed:
            return
        self.handle(self.conn.work_done(work, time.time()))
        self.drained.set()

    def logon_deadline(self, addr: str) -> None:
        """No logged-on session after ServerConfig.logon_timeout: drop the connection
        (idle or half-done connections must not pin resources)."""
        if self.closed or any(s.state is SessionState.Valid for s in self.conn.session_table.values()):
            return
        log.warning("event=disconnect client=%s reason='no logon within %ss'", addr,
                    self.conn.server.config.logon_timeout)
        self.closed = True
        self.writer.close()
        self.drained.set()

    def on_wakeup(self) -> None:
        self.handle(self.conn.poll(time.time()))

    async def drain(self) -> None:
        if not self.writer.is_closing():
            try:
                await self.writer.drain()
            except (ConnectionError, OSError):
                self.closed = True

    def busy(self) -> bool:
        """A blocking handler is running or received requests wait behind one."""
        return bool(self._work_running) or bool(self.conn._queue) or self.conn._chain is not None

    async def wait_idle(self, timeout: float = 10) -> None:
        if self._work_running:
            self._idle.clear()
            try:
                await asyncio.wait_for(self._idle.wait(), timeout)
            except asyncio.TimeoutError:
                pass
        else:
            await asyncio.sleep(min(timeout, 0.01))
