"""The Windows Sockets switch: routes sockets to the TCP/IP provider or a SAN provider.

* ``listen`` always goes through the TCP/IP provider; if the socket is bound to
  a SAN address or the wildcard, also through every matching SAN provider,
  with ``FD_ACCEPT`` registered by ``WSPEventSelect`` (WSD-L1).
* ``connect`` looks the destination up in the SAN subnet table; a match goes
  through that SAN provider (non-blocking, ``FD_CONNECT``), anything else -- or
  a SAN provider that fails to create or bind -- through TCP/IP (WSD-C1).
* ``accept`` always answers the application; for SAN requests the switch
  mediates (WSD-A1..A8): event signalled -> ``WSPEnumNetworkEvents`` ->
  ``FD_ACCEPT`` -> ``WSPAccept`` with the switch's condition function (which
  asks the application's) -> negotiation (WSD-N1..N4) -> optional first data
  (AcceptEx, WSD-X1); cancel closes the accepting SAN socket (WSD-X2).

Everything here is a thin driver: the session protocol is the sans-IO
:class:`wsd.core.session.SessionProtocol`.  Objects expose non-blocking
``poll``-style steps plus the fds and deadline to wait on, so the blocking API
(:mod:`wsd.api`) and the asyncio one (:mod:`wsd.aio`) share them.
"""
from __future__ import annotations

import collections
import copy
import ipaddress
import itertools
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from wsd_ring import Ring

from . import errors
from .core import session as S
from .events import CompletionQueue, EventObject, Overlapped
from .registry import create_provider
from .spi import (
    CF_ACCEPT, CF_REJECT, FD_ACCEPT, FD_CLOSE, MEM_READ, MEM_WRITE, ServiceProvider,
    fd_names,
)

log = logging.getLogger("wsd.switch")

__all__ = ["Switch", "SwitchConfig", "TraceRecord", "SanConnection", "TcpConnection", "Listener"]


@dataclass(slots=True)
class TraceRecord:
    t: float            # time.monotonic()
    step: str
    fields: dict
    thread: str


@dataclass
class SwitchConfig:
    session: S.SessionConfig = field(default_factory=S.SessionConfig)
    connect_timeout: float = 10.0     # SAN connect request -> FD_CONNECT
    close_timeout: float = 5.0        # orderly close: DISCONNECT sent and completed
    accept_first_data_timeout: float | None = None  # AcceptEx: wait for the first data (None = no limit)


_RECV, _SEND, _RDMA = 0, 1, 2


class SanConnection:
    """Driver of one SAN connection: provider calls around a :class:`SessionProtocol`."""

    def __init__(self, switch: "Switch", provider: ServiceProvider, ps: int, role: S.Role,
                 handle: int, peer: tuple | None = None):
        self.switch = switch
        self.provider = provider
        self.ps = ps
        self.handle = handle
        self.peer = peer
        self.path = provider.name
        self.cq = CompletionQueue(f"{provider.name}:{ps}")
        self.event = EventObject(f"{provider.name}:{ps}:FD_CLOSE")
        provider.WSPEventSelect(ps, self.event, FD_CLOSE)
        cfg = copy.copy(switch.config.session)
        caps = provider.capabilities
        cfg.can_rdma_read = cfg.can_rdma_read and caps.rdma_read
        cfg.can_rdma_write = cfg.can_rdma_write and caps.rdma_write
        if caps.receive_size:
            cfg.recv_size = max(cfg.recv_size, caps.receive_size)
        if caps.rdma_threshold:
            cfg.rdma_threshold = max(cfg.rdma_threshold, caps.rdma_threshold)
        self.core = S.SessionProtocol(role, cfg, name=f"{provider.name}:{ps}")
        # the receive ring's whole mapping: every posted span lies inside it (verbs registers one MR)
        self._mem = [provider.WSPRegisterMemory(ps, self.core.recv_memory, MEM_WRITE),
                     provider.WSPRegisterMemory(ps, self.core._send_mem, MEM_READ)]
        self.lock = threading.RLock()
        self.closed = False
        self.negotiated = False
        self._first_data_traced = False

    # -- driving the core ------------------------------------------------------
    def _run(self, actions: list) -> None:
        work = collections.deque(actions)
        p, ps, core, cq = self.provider, self.ps, self.core, self.cq
        trace = self.switch.trace
        while work:
            act = work.popleft()
            t = type(act)
            try:
                if t is S.PostRecv:
                    p.WSPRecv(ps, [core.recv_buffers[act.index]], Overlapped(cq, (_RECV, act.index)))
                elif t is S.PostSend:
                    p.WSPSend(ps, [core.send_buffers[act.index][:act.length]], Overlapped(cq, (_SEND, act.index)))
                elif t is S.RegisterRdma:
                    try:
                        desc = p.WSPRegisterRdmaMemory(ps, act.view, act.flags)
                    except errors.WsaError as e:
                        work.extend(core.on_rdma_register_failed(act.cookie, e.wsa_code, time.monotonic()))
                    else:
                        work.extend(core.on_rdma_registered(act.cookie, desc, time.monotonic()))
                elif t is S.DeregisterRdma:
                    p.WSPDeregisterRdmaMemory(ps, act.descriptor)
                elif t is S.RdmaRead or t is S.RdmaWrite:
                    local = act.target if t is S.RdmaRead else act.source
                    h = p.WSPRegisterMemory(ps, local, MEM_WRITE if t is S.RdmaRead else MEM_READ)
                    ov = Overlapped(cq, (_RDMA, act.cookie, h))
                    if t is S.RdmaRead:
                        p.WSPRdmaRead(ps, [local], act.descriptor, 0, ov)
                    else:
                        p.WSPRdmaWrite(ps, [local], act.descriptor, 0, ov)
                elif t is S.Trace:
                    trace(act.step, conn=self.handle, provider=self.path, **act.fields)
                elif t is S.Negotiated:
                    self.negotiated = True
                    trace("negotiated", conn=self.handle, provider=self.path, peer_posted=act.peer_posted,
                          peer_receive_size=act.peer_receive_size, send_credits=core.send_credits)
                elif t is S.Closed:
                    if act.error:
                        trace("connection_aborted", conn=self.handle, provider=self.path,
                              error=errors.code_name(act.error), reason=act.reason)
            except errors.WsaError as e:
                if core.state is not S.State.CLOSED:
                    if core.peer_eof:      # the peer said DISCONNECT already: this is the orderly end
                        work.extend(core.on_transport_closed(e.wsa_code, time.monotonic()))
                    else:
                        work.extend(core.on_peer_reset(e.wsa_code, time.monotonic(),
                                                       f"provider call failed: {e}"))

    def start(self, now: float) -> None:
        with self.lock:
            self._run(self.core.start(now))

    def progress(self, now: float | None = None) -> None:
        """Take completions and network events; never blocks."""
        if now is None:
            now = time.monotonic()
        core = self.core
        with self.lock:
            # read the event first: completions posted before FD_CLOSE must be taken before it
            closing = self.event.is_set()
            while True:
                comps = self.cq.poll(256)
                if not comps:
                    break
                for c in comps:
                    ctx = c.overlapped.context
                    kind = ctx[0]
                    if self.closed and core.state is S.State.CLOSED:
                        if kind == _RDMA:
                            self._dereg(ctx[2])
                        continue
                    if kind == _RECV:
                        acts = (core.on_recv_failed(ctx[1], c.error, now) if c.error
                                else core.on_recv_complete(ctx[1], c.transferred, now))
                    elif kind == _SEND:
                        acts = (core.on_send_failed(ctx[1], c.error, now) if c.error
                                else core.on_send_complete(ctx[1], now))
                    else:
                        self._dereg(ctx[2])
                        acts = core.on_rdma_complete(ctx[1], c.error, now)
                    if acts:
                        self._run(acts)
            if closing and not self.closed:
                ne = self.provider.WSPEnumNetworkEvents(self.ps)
                if ne.network_events & FD_CLOSE and core.state is not S.State.CLOSED:
                    err = ne.error(FD_CLOSE)
                    self.switch.trace("FD_CLOSE", conn=self.handle, provider=self.path,
                                      error=errors.code_name(err) if err else 0)
                    self._run(core.on_transport_closed(err, now))
            d = core.next_deadline()
            if d is not None and now >= d:
                self._run(core.on_timer(now))

    def _dereg(self, h) -> None:
        try:
            self.provider.WSPDeregisterMemory(self.ps, h)
        except errors.WsaError:
            pass

    def wait_fds(self) -> list:
        return [self.cq, self.event]

    def next_deadline(self) -> float | None:
        return self.core.next_deadline()

    # -- application-facing steps (non-blocking) -------------------------------------
    def _receive(self, step, arg):
        """Run a receive step of the core (``recv_into`` / ``recv_view``) and its actions; a
        step that raises still sends out the reposts it freed (``take_actions``)."""
        with self.lock:
            try:
                out, acts = step(arg, time.monotonic())
            except errors.WsaError:
                if self.core._stash:
                    self._run(self.core.take_actions())
                raise
            if acts:
                self._run(acts)
            return out

    def try_recv_into(self, buf) -> int:
        """Bytes copied, 0 at end of stream; raises WSAEWOULDBLOCK or the connection's error."""
        return self._receive(self.core.recv_into, buf)

    def try_recv_view(self, nbytes: int) -> memoryview:
        """Zero copy (see ``SessionProtocol.recv_view``): empty at end of stream; raises
        WSAEWOULDBLOCK or the connection's error."""
        return self._receive(self.core.recv_view, nbytes)

    def start_send(self, data) -> S.SendOp:
        with self.lock:
            op, acts = self.core.send(data, time.monotonic())
            if acts:
                self._run(acts)
            return op

    def start_close(self) -> None:
        with self.lock:
            self._run(self.core.close(time.monotonic()))

    def finish_close(self) -> None:
        """Release provider resources (after the orderly close finished or timed out)."""
        with self.lock:
            if self.closed:
                return
            self.closed = True
            if self.core.state is not S.State.CLOSED:
                self.core.state = S.State.CLOSED
            for h in self._mem:
                self._dereg(h)
            try:
                self.provider.WSPCloseSocket(self.ps)
            except errors.WsaError:
                pass
            self.core.close_ring()
            self.switch.WPUCloseSocketHandle(self.handle)
            self.cq.close()
            self.event.close()

    def abort(self, reason: str) -> None:
        with self.lock:
            self._run(self.core.on_peer_reset(errors.WSAECONNABORTED.wsa_code, time.monotonic(), reason))


class TcpConnection:
    """A connection on the non-SAN path: the TCP/IP provider's non-blocking stream.

    Its receive path is a native ring (``ring``, private memory, taken from the
    switch's pool at the first receive): when the ring is empty, ``WSPRecv``
    (``sock.recv_into``) writes straight into the ring's free span, which is
    committed with the number of bytes that arrived; the application's receive
    copies out of the ring (:meth:`try_recv_into`) or borrows a view of it
    (:meth:`try_recv_view`), and the space is released once consumed.
    Readiness is unchanged: a receive returns buffered bytes before it ever
    reports ``WSAEWOULDBLOCK``, so waiting on the socket's fd after
    ``WSAEWOULDBLOCK`` never misses data.
    """

    RING_CAPACITY = 1 << 19         # 512 KiB of receive ring per connection
    RECV_SPAN = 1 << 17             # at most this much per recv_into (a quarter of the ring)

    def __init__(self, switch: "Switch", provider: ServiceProvider, ps: int, handle: int, peer=None):
        self.switch = switch
        self.provider = provider
        self.ps = ps
        self.handle = handle
        self.peer = peer
        self.path = "tcp"
        self.fd = provider.WSPGetReadyFd(ps)
        self.closed = False
        self.ring: Ring | None = None   # the receive ring (from the first receive on)
        self._ring_lock = threading.Lock()  # a close on another thread waits for a receive under way
        self._msg = None            # the received, unconsumed message: a view of its span in the ring
        self._pos = 0               # bytes of it already consumed
        self._lent = 0              # bytes handed out by try_recv_view, consumed by the next call

    def fileno(self) -> int:
        return self.fd

    @property
    def buffered(self) -> int:
        """Bytes received into the ring and not yet consumed by the application."""
        return len(self._msg) - self._pos - self._lent if self._msg is not None else 0

    def _consume(self, n: int) -> None:
        pos = self._pos + n
        if pos == len(self._msg):
            self._msg = None
            self._pos = 0
            self.ring.release(1)
        else:
            self._pos = pos

    def _receive(self) -> bool:
        """The ring is empty: let the kernel write straight into its free span and commit
        what arrived (one message).  False at end of stream; raises WSAEWOULDBLOCK or the
        socket's error."""
        ring = self.ring
        if ring is None:
            ring = self.ring = self.switch._take_tcp_ring(self.RING_CAPACITY)
        span = ring.reserve(self.RECV_SPAN)       # always fits: the ring is empty
        try:
            got = self.provider.WSPRecv(self.ps, [span])
        except BaseException:
            ring.cancel()
            raise
        if not got:
            ring.cancel()
            return False
        ring.commit(got)
        self._msg = span[:got]
        self._pos = 0
        return True

    def try_recv_into(self, buf) -> int:
        """Bytes copied out of the ring, 0 at end of stream; raises WSAEWOULDBLOCK or the error."""
        tv = buf if type(buf) is memoryview and buf.format == "B" else memoryview(buf).cast("B")
        want = len(tv)
        if want == 0:
            return self.provider.WSPRecv(self.ps, [tv])
        with self._ring_lock:
            return self._recv_into(tv, want)

    def _recv_into(self, tv, want: int) -> int:
        if self.closed:
            raise errors.WSAENOTSOCK("socket closed")
        if self._lent:
            self._consume(self._lent)
            self._lent = 0
        if self._msg is None and not self._receive():
            return 0
        m, pos = self._msg, self._pos
        take = len(m) - pos
        if take > want:
            take = want
        tv[:take] = m[pos:pos + take]
        self._consume(take)
        return take

    def try_recv_view(self, nbytes: int) -> memoryview:
        """Zero copy: a read-only view of up to ``nbytes`` received bytes inside the ring (empty
        at end of stream), valid until the next receive call on this connection."""
        with self._ring_lock:
            return self._recv_view(nbytes)

    def _recv_view(self, nbytes: int) -> memoryview:
        if self.closed:
            raise errors.WSAENOTSOCK("socket closed")
        if self._lent:
            self._consume(self._lent)
            self._lent = 0
        if self._msg is None and not self._receive():
            return memoryview(b"")
        m, pos = self._msg, self._pos
        take = min(len(m) - pos, nbytes)
        self._lent = take
        return m[pos:pos + take].toreadonly()

    def take_buffered(self) -> bytes:
        """Everything received into the ring and not consumed, removed (handing the kernel
        socket to another reader, e.g. asyncio's own transport)."""
        with self._ring_lock:
            return self._take_buffered()

    def _take_buffered(self) -> bytes:
        if self._lent:
            self._consume(self._lent)
            self._lent = 0
        if self._msg is None:
            return b""
        out = bytes(self._msg[self._pos:])
        self._consume(len(self._msg) - self._pos)
        return out

    def try_send(self, data) -> int:
        return self.provider.WSPSend(self.ps, [data])

    def _drop_ring(self) -> None:
        with self._ring_lock:
            ring, self.ring = self.ring, None
            self._msg = None
            self._pos = self._lent = 0
        if ring is not None:
            self.switch._give_tcp_ring(ring)

    def finish_close(self) -> None:
        if not self.closed:
            self.closed = True
            try:
                self.provider.WSPCloseSocket(self.ps)
            except errors.WsaError:
                pass
            self.switch.WPUCloseSocketHandle(self.handle)
            self._drop_ring()


@dataclass
class _Pending:
    conn: Any
    initial_size: int | None
    deadline: float | None
    buf: bytearray | None = None
    got: int = 0


@dataclass
class AcceptResult:
    conn: Any
    peer: tuple
    initial_data: bytes | None


class Listener:
    """The accept side of a listening switch socket (WSD-A*, WSD-L1, WSD-X*)."""

    def __init__(self, switch: "Switch", tcp_ps: int, san: list, local: tuple):
        self.switch = switch
        self.tcp = switch.tcp
        self.tcp_ps = tcp_ps
        self.tcp_fd = self.tcp.WSPGetReadyFd(tcp_ps)
        self.san = san                      # [(provider, ps, EventObject)]
        self.local = local
        self.pending: list[_Pending] = []
        self.wake = EventObject("listener-wake")
        self.cancelled = False
        self.closed = False
        self.lock = threading.RLock()

    # the switch's condition function (WSD-A3, A4): asks the application's, on this thread
    def _condition(self, app_condition, thread_id):
        sw = self.switch

        def condition(caller_id, caller_data, callee_id, callee_data, callback_data):
            same = threading.get_ident() == thread_id
            verdict = CF_ACCEPT
            if app_condition is not None:
                verdict = app_condition(caller_id, caller_data, callee_id, callee_data, callback_data)
                if verdict not in (CF_ACCEPT, CF_REJECT):
                    verdict = CF_REJECT
            sw.trace("condition", result="CF_ACCEPT" if verdict == CF_ACCEPT else "CF_REJECT",
                     caller=f"{caller_id[0]}:{caller_id[1]}", same_thread_as_WSPAccept=same)
            return verdict
        return condition

    def wait_fds(self) -> list:
        fds = [self.wake, _Fd(self.tcp_fd)] + [ev for (_, _, ev) in self.san]
        for p in self.pending:
            fds.extend(p.conn.wait_fds() if isinstance(p.conn, SanConnection) else [p.conn])
        return fds

    def next_deadline(self) -> float | None:
        ds = [p.deadline for p in self.pending if p.deadline is not None]
        ds += [d for p in self.pending if isinstance(p.conn, SanConnection)
               for d in (p.conn.next_deadline(),) if d is not None]
        return min(ds) if ds else None

    def cancel(self) -> None:
        """Cancel the application's accept (WSD-X2): takes effect in the accepting thread."""
        self.cancelled = True
        self.wake.set()

    def _close_pending(self, why: str) -> None:
        for p in self.pending:
            c = p.conn
            if isinstance(c, SanConnection):
                self.switch.trace("WSPCloseSocket", provider=c.path, socket=c.ps, reason=why)
            c.finish_close()
        self.pending.clear()

    def poll_accept(self, condition=None, callback_data=None, initial_size: int | None = None) -> AcceptResult | None:
        """One non-blocking step of accept. Returns a result, or None to wait (``wait_fds``)."""
        sw = self.switch
        now = time.monotonic()
        with self.lock:
            if self.cancelled:
                self.cancelled = False
                self.wake.reset()
                self._close_pending("accept cancelled")
                raise errors.WSA_OPERATION_ABORTED("accept cancelled")
            # 1. connections already accepted: negotiation, AcceptEx first data
            for p in list(self.pending):
                r = self._advance(p, now)
                if r is not None:
                    return r
            # 2. SAN connection requests (WSD-A2..A8)
            for provider, ps, ev in self.san:
                if not ev.is_set():
                    continue
                ne = provider.WSPEnumNetworkEvents(ps)
                sw.trace("WSPEnumNetworkEvents", provider=provider.name, events=fd_names(ne.network_events))
                if not ne.network_events & FD_ACCEPT:
                    continue
                me = threading.get_ident()
                sw.trace("WSPAccept", provider=provider.name, listen_socket=ps)
                try:
                    aps = provider.WSPAccept(ps, self._condition(condition, me), callback_data)
                except errors.WSAEWOULDBLOCK:
                    continue
                except errors.WSAECONNREFUSED:
                    sw.trace("WSPAccept_returned", provider=provider.name, error="WSAECONNREFUSED")
                    raise
                handle = provider.WSPSwitchSocket(aps)
                try:
                    peer = provider.WSPGetPeerName(aps)
                except (errors.WsaError, NotImplementedError):
                    peer = ("?", 0)
                sw.trace("WSPAccept_returned", provider=provider.name, provider_socket=aps, switch_socket=handle)
                conn = SanConnection(sw, provider, aps, S.Role.ACCEPTOR, handle, peer)
                conn.start(now)                     # WSD-N2/N4: post receives before answering
                dl = None
                if initial_size and sw.config.accept_first_data_timeout:
                    dl = now + sw.config.accept_first_data_timeout
                p = _Pending(conn, initial_size, dl)
                self.pending.append(p)
                r = self._advance(p, now)
                if r is not None:
                    return r
            # 3. the TCP/IP provider (non-SAN requests; WSD-A1)
            ne = self.tcp.WSPEnumNetworkEvents(self.tcp_ps)
            if not ne.network_events & FD_ACCEPT:
                return None
            sw.trace("tcp_FD_ACCEPT", provider="tcp")
            try:
                aps = self.tcp.WSPAccept(self.tcp_ps, self._condition(condition, threading.get_ident())
                                         if condition else None, callback_data)
            except errors.WSAEWOULDBLOCK:
                return None
            handle = self.tcp.WSPSwitchSocket(aps)
            peer = self.tcp.WSPGetPeerName(aps)
            sw.trace("tcp_accepted", peer=f"{peer[0]}:{peer[1]}", switch_socket=handle)
            conn = TcpConnection(sw, self.tcp, aps, handle, peer)
            if not initial_size:
                return AcceptResult(conn, peer, None)
            p = _Pending(conn, initial_size, None)
            self.pending.append(p)
            return self._advance(p, now)

    def _advance(self, p: _Pending, now: float) -> AcceptResult | None:
        conn = p.conn
        if isinstance(conn, SanConnection):
            conn.progress(now)
            core = conn.core
            if core.state is S.State.CLOSED and not conn.negotiated:
                self.pending.remove(p)
                conn.finish_close()
                raise errors.from_code(core.error or errors.WSAECONNRESET.wsa_code, core.close_reason)
            if not conn.negotiated:
                return None
        if not p.initial_size:
            self.pending.remove(p)
            self.switch.trace("accepted", provider=conn.path, switch_socket=conn.handle)
            return AcceptResult(conn, conn.peer, None)
        # WSD-X1: AcceptEx completes only after the first data arrived
        if p.buf is None:
            p.buf = bytearray(p.initial_size)
        try:
            n = conn.try_recv_into(p.buf)
        except errors.WSAEWOULDBLOCK:
            if p.deadline is not None and now >= p.deadline:
                self.pending.remove(p)
                conn.finish_close()
                raise errors.WSAETIMEDOUT("no first data for AcceptEx") from None
            return None
        except errors.WsaError:
            self.pending.remove(p)
            conn.finish_close()
            raise
        self.pending.remove(p)
        self.switch.trace("accepted", provider=conn.path, switch_socket=conn.handle, initial_bytes=n)
        return AcceptResult(conn, conn.peer, bytes(p.buf[:n]))

    def close(self) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
            self._close_pending("listening socket closed")
            for provider, ps, ev in self.san:
                try:
                    provider.WSPCloseSocket(ps)
                except errors.WsaError:
                    pass
                ev.close()
            try:
                self.tcp.WSPCloseSocket(self.tcp_ps)
            except errors.WsaError:
                pass
            self.wake.close()


class _Fd:
    __slots__ = ("fd",)

    def __init__(self, fd: int):
        self.fd = fd

    def fileno(self) -> int:
        return self.fd


class Switch:
    """A Windows Sockets switch with its providers and SAN subnet table.

    ``san_table`` is a list of ``(subnet, provider_name)``, e.g.
    ``[("127.0.0.0/8", "zmq")]``; ``provider_options`` gives each provider its
    constructor options.  The TCP/IP provider is always loaded.
    """

    def __init__(self, san_table: Iterable[tuple[str, str]] = (), *, config: SwitchConfig | None = None,
                 provider_options: dict[str, dict] | None = None,
                 providers: dict[str, ServiceProvider] | None = None):
        self.config = config or SwitchConfig()
        self.t0 = time.monotonic()
        self.trace_sinks: list[Callable[[TraceRecord], None]] = []
        self._handles: dict[int, tuple[str, int]] = {}
        self._handle_ids = itertools.count(0x100, 4)   # like SOCKET values: multiples of 4
        self._lock = threading.Lock()
        self.providers: dict[str, ServiceProvider] = {}
        self.unavailable: dict[str, str] = {}
        self._tcp_rings: list[Ring] = []    # receive rings of closed TCP connections, for reuse
        self._tcp_rings_pid = os.getpid()
        provider_options = provider_options or {}
        given = dict(providers or {})
        self.tcp = given.pop("tcp", None) or create_provider("tcp", **provider_options.get("tcp", {}))
        self.tcp.WSPStartup(self)
        self.providers["tcp"] = self.tcp
        self.san_table: list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str]] = []
        for subnet, name in san_table:
            self.add_san_route(subnet, name, given.pop(name, None), **provider_options.get(name, {}))

    @classmethod
    def from_env(cls, **kw) -> "Switch":
        """A switch whose SAN table comes from ``WSD_SAN_TABLE`` ("127.0.0.0/8=zmq,...")."""
        import os
        table = []
        for item in filter(None, (x.strip() for x in os.environ.get("WSD_SAN_TABLE", "").split(","))):
            subnet, _, name = item.partition("=")
            table.append((subnet.strip(), name.strip()))
        return cls(table, **kw)

    def add_san_route(self, subnet: str, provider_name: str, provider: ServiceProvider | None = None,
                      **options) -> None:
        net = ipaddress.ip_network(subnet, strict=False)
        if provider_name == "tcp":
            self.trace("san_route_ignored", subnet=str(net), reason="tcp is not a SAN provider")
            return
        if provider_name not in self.providers and provider_name not in self.unavailable:
            try:
                p = provider or create_provider(provider_name, **options)
            except errors.WsaError as e:
                self.unavailable[provider_name] = str(e)
                log.warning("SAN provider %s unavailable: %s", provider_name, e)
                return
            av = p.availability()
            if not av.ok:
                self.unavailable[provider_name] = av.reason
                log.warning("SAN provider %s unavailable: %s", provider_name, av.reason)
                self.trace("provider_unavailable", provider=provider_name, reason=av.reason)
                return
            p.WSPStartup(self)
            self.providers[provider_name] = p
        if provider_name in self.providers:
            self.san_table.append((net, provider_name))

    # -- routing ------------------------------------------------------------------------
    def route(self, host: str) -> ServiceProvider | None:
        """The SAN provider for destination ``host`` (longest prefix), or None for TCP/IP."""
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return None
        best = None
        for net, name in self.san_table:
            if ip.version == net.version and ip in net and (best is None or net.prefixlen > best[0].prefixlen):
                best = (net, name)
        return self.providers[best[1]] if best else None

    def san_providers_for_bind(self, host: str) -> list[ServiceProvider]:
        """WSD-L1: SAN providers to listen through for a socket bound to ``host``."""
        try:
            ip = ipaddress.ip_address(host or "0.0.0.0")
        except ValueError:
            return []
        names: list[str] = []
        for net, name in self.san_table:
            if (ip.is_unspecified or (ip.version == net.version and ip in net)) and name not in names:
                names.append(name)
        return [self.providers[n] for n in names]

    # -- upcalls (the WPU functions a provider calls) ----------------------------------------------
    def WPUCreateSocketHandle(self, provider_name: str, provider_socket: int) -> int:
        with self._lock:
            h = next(self._handle_ids)
            self._handles[h] = (provider_name, provider_socket)
        self.trace("WPUCreateSocketHandle", provider=provider_name, provider_socket=provider_socket,
                   switch_socket=h)
        return h

    def WPUCloseSocketHandle(self, switch_socket: int) -> None:
        with self._lock:
            self._handles.pop(switch_socket, None)

    def WPUQuerySocketHandle(self, switch_socket: int) -> tuple[str, int] | None:
        return self._handles.get(switch_socket)

    def SetEvent(self, event: EventObject) -> None:
        if self.trace_sinks:
            self.trace("SetEvent", event=event.name)
        event.set()

    def ResetEvent(self, event: EventObject) -> None:
        if self.trace_sinks:
            self.trace("ResetEvent", event=event.name)
        event.reset()

    # -- receive rings of TCP connections (a ring costs an mmap: reuse them) --------------------
    _TCP_RING_POOL = 64

    def _take_tcp_ring(self, capacity: int) -> Ring:
        if self._tcp_rings_pid != os.getpid():      # a forked child: the pooled rings' roles are the parent's
            self._tcp_rings, self._tcp_rings_pid = [], os.getpid()
        try:
            ring = self._tcp_rings.pop()
        except IndexError:
            return Ring.create(capacity, eventfds=False)
        if ring.capacity == capacity:
            return ring
        ring.close()
        return Ring.create(capacity, eventfds=False)

    def _give_tcp_ring(self, ring: Ring) -> None:
        """A closed connection's ring: emptied (unread bytes dropped) and kept for the next one."""
        ring.cancel()
        left = ring.peek()
        if left:
            n = len(left)
            del left
            ring.release(n)
        if len(self._tcp_rings) < self._TCP_RING_POOL:
            self._tcp_rings.append(ring)
        else:
            ring.close()

    # -- tracing ----------------------------------------------------------------------------------
    def trace(self, step: str, **fields) -> None:
        if self.trace_sinks:
            rec = TraceRecord(time.monotonic(), step, fields, threading.current_thread().name)
            for sink in self.trace_sinks:
                sink(rec)

    # -- sockets ----------------------------------------------------------------------------------
    def socket(self, family: int | None = None, type: int | None = None):
        from .api import WsdSocket
        return WsdSocket(self, family, type)

    def close(self) -> None:
        for p in list(self.providers.values()):
            p.WSPCleanup()
        self.providers.clear()
        while self._tcp_rings:
            self._tcp_rings.pop().close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
