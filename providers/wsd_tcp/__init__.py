"""The TCP/IP service provider: the switch's non-SAN path and its fallback (WSD-A1, WSD-C1).

Sockets are kernel sockets in non-blocking mode.  ``WSPSend``/``WSPRecv`` are
called without an overlapped and behave like non-blocking sockets; the switch
waits on ``WSPGetReadyFd``.  ``WSPEnumNetworkEvents`` reads the kernel's
readiness (readable listener -> ``FD_ACCEPT``, finished connect ->
``FD_CONNECT`` with ``SO_ERROR``, readable -> ``FD_READ``, hang-up ->
``FD_CLOSE``).

A connection refused by the application's condition function is reset (the
kernel has completed the handshake already), so the peer sees
``WSAECONNRESET`` or end of stream, not ``WSAECONNREFUSED``: that distinction
exists only on SAN paths, where the provider answers the request itself.
"""
from __future__ import annotations

import errno
import itertools
import select
import socket
import struct
import threading

from wsd import errors
from wsd.spi import (
    CF_ACCEPT, FD_ACCEPT, FD_CLOSE, FD_CONNECT, FD_READ, FD_WRITE, Availability, NetworkEvents,
    ServiceProvider,
)

__all__ = ["TcpProvider"]


class _Sock:
    __slots__ = ("sock", "listening", "connecting", "event", "mask", "switch_handle")

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.listening = False
        self.connecting = False
        self.event = None
        self.mask = 0
        self.switch_handle = None


class TcpProvider(ServiceProvider):
    name = "tcp"
    is_san = False

    def __init__(self, **options):
        super().__init__(**options)
        self._socks: dict[int, _Sock] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def availability(self) -> Availability:
        return Availability(True, "kernel TCP/IP")

    def _get(self, s: int) -> _Sock:
        try:
            return self._socks[s]
        except KeyError:
            raise errors.WSAENOTSOCK(f"tcp provider has no socket {s}") from None

    def _new(self, sock: socket.socket) -> int:
        sock.setblocking(False)
        with self._lock:
            s = next(self._ids)
            self._socks[s] = _Sock(sock)
        return s

    def WSPSocket(self, family=socket.AF_INET, type=socket.SOCK_STREAM, protocol=0) -> int:
        try:
            sock = socket.socket(family, type, protocol)
        except OSError as e:
            raise errors.from_errno(e) from None
        return self._new(sock)

    def WSPBind(self, s, addr):
        e = self._get(s)
        e.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            e.sock.bind(addr)
        except OSError as ex:
            raise errors.from_errno(ex) from None

    def WSPGetSockName(self, s):
        return self._get(s).sock.getsockname()[:2]

    def WSPGetPeerName(self, s):
        try:
            return self._get(s).sock.getpeername()[:2]
        except OSError as ex:
            raise errors.from_errno(ex) from None

    def WSPListen(self, s, backlog):
        e = self._get(s)
        try:
            e.sock.listen(backlog)
        except OSError as ex:
            raise errors.from_errno(ex) from None
        e.listening = True

    def WSPEventSelect(self, s, event, network_events):
        e = self._get(s)
        e.event, e.mask = event, network_events

    def WSPGetReadyFd(self, s) -> int:
        return self._get(s).sock.fileno()

    def WSPEnumNetworkEvents(self, s) -> NetworkEvents:
        e = self._get(s)
        ne = NetworkEvents()
        p = select.poll()
        p.register(e.sock.fileno(), select.POLLIN | select.POLLOUT)
        ready = p.poll(0)
        flags = ready[0][1] if ready else 0
        if e.listening:
            if flags & select.POLLIN:
                ne.network_events |= FD_ACCEPT
        elif e.connecting:
            if flags & (select.POLLOUT | select.POLLERR | select.POLLHUP):
                err = e.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                e.connecting = False
                ne.network_events |= FD_CONNECT
                if err:
                    ne.error_codes[FD_CONNECT] = errors.from_errno(OSError(err, "")).wsa_code
        else:
            if flags & select.POLLIN:
                ne.network_events |= FD_READ
            if flags & select.POLLOUT:
                ne.network_events |= FD_WRITE
            if flags & (select.POLLHUP | select.POLLERR):
                ne.network_events |= FD_CLOSE
        if e.mask:
            ne.network_events &= e.mask
        if e.event is not None:
            self.upcalls.ResetEvent(e.event)
        return ne

    def WSPAccept(self, s, condition, callback_data) -> int:
        e = self._get(s)
        try:
            conn, peer = e.sock.accept()
        except BlockingIOError:
            raise errors.WSAEWOULDBLOCK() from None
        except OSError as ex:
            raise errors.from_errno(ex) from None
        if condition is not None:
            verdict = condition(peer[:2], None, e.sock.getsockname()[:2], None, callback_data)
            if verdict != CF_ACCEPT:
                # reset: the handshake is already complete on a TCP path
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()
                raise errors.WSAECONNREFUSED("rejected by the condition function")
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        ns = self._new(conn)
        self._socks[ns].switch_handle = self.upcalls.WPUCreateSocketHandle(self.name, ns)
        return ns

    def WSPSwitchSocket(self, s):
        return self._get(s).switch_handle

    def WSPConnect(self, s, addr, caller_data=None):
        e = self._get(s)
        e.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        err = e.sock.connect_ex(addr)
        if err in (0,):
            return None
        if err in (errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN):
            e.connecting = True
            raise errors.WSAEWOULDBLOCK("connect in progress")
        raise errors.from_errno(OSError(err, errno.errorcode.get(err, "")))

    def WSPSend(self, s, buffers, overlapped=None):
        sock = self._get(s).sock
        try:
            if len(buffers) == 1:
                return sock.send(buffers[0])
            return sock.sendmsg(buffers)
        except BlockingIOError:
            raise errors.WSAEWOULDBLOCK() from None
        except OSError as ex:
            raise errors.from_errno(ex) from None

    def WSPRecv(self, s, buffers, overlapped=None):
        sock = self._get(s).sock
        try:
            return sock.recv_into(buffers[0])
        except BlockingIOError:
            raise errors.WSAEWOULDBLOCK() from None
        except OSError as ex:
            raise errors.from_errno(ex) from None

    def WSPShutdown(self, s, how):
        try:
            self._get(s).sock.shutdown(how)
        except OSError as ex:
            raise errors.from_errno(ex) from None

    def WSPCloseSocket(self, s):
        with self._lock:
            e = self._socks.pop(s, None)
        if e is None:
            raise errors.WSAENOTSOCK(f"tcp provider has no socket {s}")
        e.sock.close()

    def detach_kernel_socket(self, s) -> socket.socket:
        """Hand the kernel socket to an asyncio transport (the asyncio flavour's TCP path)."""
        with self._lock:
            e = self._socks.pop(s)
        return e.sock

    def WSPCleanup(self):
        for s in list(self._socks):
            self.WSPCloseSocket(s)
