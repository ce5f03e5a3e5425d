"""The application's socket API (blocking flavour).

``WsdSocket`` looks like a Python socket: ``bind``/``listen``/``accept``
(optionally with a WSAAccept-style condition function)/``connect``/``send``/
``sendall``/``recv``/``recv_into``/``close``, plus ``accept_ex`` (AcceptEx
with an initial receive buffer) and ``cancel`` (cancel a pending accept from
another thread).  Errors are :class:`wsd.errors.WsaError` subclasses.

Every wait is on the objects' fds with a deadline: the socket's timeout
(``settimeout``, None = no limit) and the protocol's own deadlines
(negotiation, RDMA transfers); a disconnect ends every wait.
"""
from __future__ import annotations

import socket as _socket
import threading
import time

from . import errors
from .core import session as S
from .events import EventObject, wait_any
from .spi import FD_ACCEPT, FD_CLOSE, FD_CONNECT
from .switch import Listener, SanConnection, Switch, TcpConnection, _Fd

__all__ = ["WsdSocket", "CF_ACCEPT", "CF_REJECT"]

from .spi import CF_ACCEPT, CF_REJECT  # noqa: E402  (re-exported for applications)


def _remaining(deadline: float | None) -> float | None:
    if deadline is None:
        return None
    return max(0.0, deadline - time.monotonic())


def _min_deadline(*ds):
    ds = [d for d in ds if d is not None]
    return min(ds) if ds else None


class WsdSocket:
    """A switch socket. Create with :meth:`Switch.socket`."""

    def __init__(self, switch: Switch, family: int | None = None, type: int | None = None, _conn=None):
        self.switch = switch
        self.family = family or _socket.AF_INET
        self.type = type or _socket.SOCK_STREAM
        self._timeout: float | None = None
        self._bound: tuple | None = None
        self._tcp_ps: int | None = None
        self._listener: Listener | None = None
        self._conn = _conn
        self._closed = False
        self._send_lock = threading.Lock()
        self._recv_lock = threading.Lock()

    # -- properties -----------------------------------------------------------------------
    @property
    def path(self) -> str | None:
        """"tcp" or the SAN provider's name for a connected socket; None otherwise."""
        return self._conn.path if self._conn is not None else None

    @property
    def connection(self):
        return self._conn

    def settimeout(self, t: float | None) -> None:
        self._timeout = t

    def gettimeout(self) -> float | None:
        return self._timeout

    def _deadline(self) -> float | None:
        return None if self._timeout is None else time.monotonic() + self._timeout

    def getsockname(self):
        if self._listener is not None or self._tcp_ps is not None:
            return self.switch.tcp.WSPGetSockName(self._tcp_ps)
        if isinstance(self._conn, TcpConnection):
            return self._conn.provider.WSPGetSockName(self._conn.ps)
        if isinstance(self._conn, SanConnection):
            return self._conn.provider.WSPGetSockName(self._conn.ps)
        if self._bound:
            return self._bound
        raise errors.WSAEINVAL("socket is not bound")

    def getpeername(self):
        if self._conn is None:
            raise errors.WSAENOTCONN()
        return self._conn.peer

    # -- listening side ----------------------------------------------------------------------
    def bind(self, addr) -> None:
        if self._tcp_ps is not None or self._conn is not None:
            raise errors.WSAEINVAL("already bound")
        tcp = self.switch.tcp
        ps = tcp.WSPSocket(self.family, self.type)
        try:
            tcp.WSPBind(ps, tuple(addr))
        except errors.WsaError:
            tcp.WSPCloseSocket(ps)
            raise
        self._tcp_ps = ps
        self._bound = tcp.WSPGetSockName(ps)

    def listen(self, backlog: int = 128) -> None:
        """WSD-L1: listen through TCP/IP, then through every SAN provider matching the bound address."""
        if self._tcp_ps is None:
            self.bind(("0.0.0.0", 0))
        sw = self.switch
        sw.tcp.WSPListen(self._tcp_ps, backlog)
        host, port = self._bound[0], self._bound[1]
        sw.trace("listen", provider="tcp", addr=f"{host}:{port}")
        san = []
        for p in sw.san_providers_for_bind(host):
            ps = None
            try:
                ps = p.WSPSocket(self.family, self.type)
                p.WSPBind(ps, (host, port))
                p.WSPListen(ps, backlog)
                ev = EventObject(f"{p.name}:listen:{host}:{port}")
                p.WSPEventSelect(ps, ev, FD_ACCEPT)
            except errors.WsaError as e:
                sw.trace("san_listen_failed", provider=p.name, error=str(e))
                if ps is not None:
                    try:
                        p.WSPCloseSocket(ps)
                    except errors.WsaError:
                        pass
                continue
            sw.trace("listen", provider=p.name, addr=f"{host}:{port}", event=ev.name)
            san.append((p, ps, ev))
        if not san:
            sw.trace("listen_tcp_only", reason="no SAN provider matches " + host)
        self._listener = Listener(sw, self._tcp_ps, san, (host, port))

    def _accept(self, condition, callback_data, initial_size):
        if self._listener is None:
            raise errors.WSAEINVAL("socket is not listening")
        lst = self._listener
        deadline = self._deadline()
        while True:
            r = lst.poll_accept(condition, callback_data, initial_size)
            if r is not None:
                return WsdSocket(self.switch, self.family, self.type, _conn=r.conn), r.peer, r.initial_data
            d = _min_deadline(deadline, lst.next_deadline())
            if deadline is not None and time.monotonic() >= deadline:
                raise errors.WSAETIMEDOUT("accept timed out")
            wait_any(lst.wait_fds(), _remaining(d))

    def accept(self, condition=None, callback_data=None):
        """Accept a connection (``accept``/``WSAAccept``). ``condition`` returns CF_ACCEPT or CF_REJECT."""
        s, peer, _ = self._accept(condition, callback_data, None)
        return s, peer

    def accept_ex(self, initial_size: int, condition=None, callback_data=None):
        """AcceptEx with an initial receive buffer: returns (socket, peer, first data) (WSD-X1)."""
        if initial_size <= 0:
            raise errors.WSAEINVAL("initial_size must be positive")
        return self._accept(condition, callback_data, initial_size)

    def cancel(self) -> None:
        """Cancel a pending accept (from another thread): it raises WSA_OPERATION_ABORTED (WSD-X2)."""
        if self._listener is not None:
            self._listener.cancel()

    # -- connecting side --------------------------------------------------------------------------
    def connect(self, addr) -> None:
        """WSD-C1: through the SAN provider whose subnet holds the destination, else TCP/IP."""
        if self._conn is not None:
            raise errors.WSAEISCONN()
        sw = self.switch
        host, port = addr[0], int(addr[1])
        deadline = self._deadline()
        provider = sw.route(host)
        if provider is not None:
            ps = None
            try:
                ps = provider.WSPSocket(self.family, self.type)
                provider.WSPBind(ps, ("0.0.0.0", 0))
            except errors.WsaError as e:
                sw.trace("san_fallback_to_tcp", provider=provider.name, error=str(e))
                if ps is not None:
                    try:
                        provider.WSPCloseSocket(ps)
                    except errors.WsaError:
                        pass
                provider = None
            else:
                self._connect_san(provider, ps, (host, port), deadline)
                return
        sw.trace("connect", provider="tcp", addr=f"{host}:{port}", san_route=False)
        self._connect_tcp((host, port), deadline)

    def _connect_tcp(self, addr, deadline):
        tcp = self.switch.tcp
        ps = tcp.WSPSocket(self.family, self.type) if self._tcp_ps is None else self._tcp_ps
        self._tcp_ps = None
        try:
            try:
                tcp.WSPConnect(ps, addr)
            except errors.WSAEWOULDBLOCK:
                fd = _Fd(tcp.WSPGetReadyFd(ps))
                import select
                p = select.poll()
                p.register(fd.fd, select.POLLOUT)
                d = _min_deadline(deadline, time.monotonic() + self.switch.config.connect_timeout)
                while True:
                    ne = tcp.WSPEnumNetworkEvents(ps)
                    if ne.network_events & FD_CONNECT:
                        err = ne.error(FD_CONNECT)
                        if err:
                            raise errors.from_code(err, f"connect to {addr[0]}:{addr[1]}")
                        break
                    if time.monotonic() >= d:
                        raise errors.WSAETIMEDOUT("connect timed out")
                    p.poll(int((_remaining(d) or 0) * 1000) + 1)
        except errors.WsaError:
            tcp.WSPCloseSocket(ps)
            raise
        handle = self.switch.WPUCreateSocketHandle("tcp", ps)
        self._conn = TcpConnection(self.switch, tcp, ps, handle, (addr[0], addr[1]))

    def _connect_san(self, provider, ps, addr, deadline):
        sw = self.switch
        ev = EventObject(f"{provider.name}:{ps}:FD_CONNECT")
        handle = provider.WSPSwitchSocket(ps)
        try:
            provider.WSPEventSelect(ps, ev, FD_CONNECT | FD_CLOSE)
            sw.trace("WSPConnect", provider=provider.name, addr=f"{addr[0]}:{addr[1]}")
            d = _min_deadline(deadline, time.monotonic() + sw.config.connect_timeout)
            try:
                provider.WSPConnect(ps, addr)
            except errors.WSAEWOULDBLOCK:
                while True:
                    if ev.is_set():
                        ne = provider.WSPEnumNetworkEvents(ps)
                        if ne.network_events & FD_CONNECT:
                            err = ne.error(FD_CONNECT)
                            sw.trace("FD_CONNECT", provider=provider.name,
                                     error=errors.code_name(err) if err else 0)
                            if err:
                                raise errors.from_code(err, f"SAN connect to {addr[0]}:{addr[1]}")
                            break
                    if time.monotonic() >= d:
                        raise errors.WSAETIMEDOUT("SAN connect timed out")
                    ev.wait(_remaining(d))
        except errors.WsaError:
            provider.WSPCloseSocket(ps)
            ev.close()
            raise
        ev.close()
        if handle is None:
            handle = sw.WPUCreateSocketHandle(provider.name, ps)
        conn = SanConnection(sw, provider, ps, S.Role.CONNECTOR, handle, addr)
        conn.start(time.monotonic())     # WSD-N1: post receives, then send the negotiation message
        try:
            while not conn.negotiated:
                conn.progress()
                if conn.negotiated:
                    # one progress step may both finish negotiation and take the peer's close:
                    # the connect succeeded; the application sees the close on its first recv
                    break
                if conn.core.state is S.State.CLOSED:
                    raise errors.from_code(conn.core.error or errors.WSAECONNRESET.wsa_code, conn.core.close_reason)
                d2 = _min_deadline(deadline, conn.next_deadline())
                if deadline is not None and time.monotonic() >= deadline:
                    raise errors.WSAETIMEDOUT("negotiation timed out")
                wait_any(conn.wait_fds(), _remaining(d2))
        except errors.WsaError:
            conn.finish_close()
            raise
        self._conn = conn

    # -- data ---------------------------------------------------------------------------------------
    def _need_conn(self):
        if self._closed:
            raise errors.WSAENOTSOCK("socket is closed")
        if self._conn is None:
            raise errors.WSAENOTCONN()
        return self._conn

    def _receive(self, attempt):
        """Run ``attempt(conn)`` (a non-blocking receive step) until it returns, waiting for
        the connection between tries; honours the socket's timeout (WSAETIMEDOUT)."""
        conn = self._need_conn()
        deadline = self._deadline()
        with self._recv_lock:
            if isinstance(conn, TcpConnection):
                while True:
                    try:
                        return attempt(conn)
                    except errors.WSAEWOULDBLOCK:
                        if deadline is not None and time.monotonic() >= deadline:
                            raise errors.WSAETIMEDOUT("recv timed out") from None
                        wait_any([conn], _remaining(deadline))
            while True:
                conn.progress()
                try:
                    return attempt(conn)
                except errors.WSAEWOULDBLOCK:
                    pass
                if deadline is not None and time.monotonic() >= deadline:
                    raise errors.WSAETIMEDOUT("recv timed out")
                wait_any(conn.wait_fds(), _remaining(_min_deadline(deadline, conn.next_deadline())))

    def recv_into(self, buffer, nbytes: int = 0) -> int:
        view = memoryview(buffer).cast("B")
        if nbytes:
            view = view[:nbytes]
        return self._receive(lambda conn: conn.try_recv_into(view))

    def recv_view(self, nbytes: int) -> memoryview:
        """Zero-copy receive: a read-only view of up to ``nbytes`` received bytes, straight out
        of the connection's receive ring; valid until the next receive on this socket (which
        gives the space back).  Empty at end of stream."""
        return self._receive(lambda conn: conn.try_recv_view(nbytes))

    def recv(self, bufsize: int) -> bytes:
        buf = bytearray(bufsize)
        n = self.recv_into(buf)
        del buf[n:]
        return bytes(buf)

    def send(self, data) -> int:
        """Send; on a SAN path the whole buffer is taken (returns len(data))."""
        conn = self._need_conn()
        view = memoryview(data).cast("B")
        deadline = self._deadline()
        with self._send_lock:
            if isinstance(conn, TcpConnection):
                while True:
                    try:
                        return conn.try_send(view)
                    except errors.WSAEWOULDBLOCK:
                        if deadline is not None and time.monotonic() >= deadline:
                            raise errors.WSAETIMEDOUT("send timed out") from None
                        import select
                        p = select.poll()
                        p.register(conn.fd, select.POLLOUT)
                        r = _remaining(deadline)
                        p.poll(None if r is None else int(r * 1000) + 1)
            op = conn.start_send(view)
            while not op.done:
                conn.progress()
                if op.done:
                    break
                if conn.core.state is S.State.CLOSED and not op.done:
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    raise errors.WSAETIMEDOUT("send timed out")
                wait_any(conn.wait_fds(), _remaining(_min_deadline(deadline, conn.next_deadline())))
            if op.error:
                raise errors.from_code(op.error, conn.core.close_reason or None)
            if not op.done:
                raise errors.from_code(conn.core.error or errors.WSAENOTCONN.wsa_code, conn.core.close_reason)
            return len(view)

    def sendall(self, data) -> None:
        view = memoryview(data).cast("B")
        while view:
            n = self.send(view)
            view = view[n:]

    # -- closing ----------------------------------------------------------------------------------
    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._listener is not None:
            self._listener.close()
            self._listener = None
            self._tcp_ps = None
        if self._tcp_ps is not None:
            try:
                self.switch.tcp.WSPCloseSocket(self._tcp_ps)
            except errors.WsaError:
                pass
            self._tcp_ps = None
        conn = self._conn
        if isinstance(conn, SanConnection):
            conn.start_close()
            deadline = time.monotonic() + self.switch.config.close_timeout
            while not conn.core.close_done and time.monotonic() < deadline:
                conn.progress()
                if conn.core.close_done:
                    break
                wait_any(conn.wait_fds(), _remaining(_min_deadline(deadline, conn.next_deadline())))
            conn.finish_close()
        elif conn is not None:
            conn.finish_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        return f"<WsdSocket path={self.path} closed={self._closed}>"

