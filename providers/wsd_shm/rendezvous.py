"""Connection set-up of the shm provider (docs/shm.md "Rendezvous"): the listening side
(connection requests on the rendezvous socket, FD_ACCEPT, WSPAccept with the switch's
condition function, the reply) and the connecting side (rings, the request with their
eventfds, the reply or the timeout)."""
from __future__ import annotations

import logging
import os
import secrets
import select
import socket
import time

from wsd import errors
from wsd.spi import FD_CONNECT

from .wire import (HOST_LEN, MAX_CALLER_DATA, NAME_LEN, ConnectReply, ConnectRequest, MalformedStructure,
                   padded, text)

try:
    from wsd_ring import Ring, RingError
except ImportError:  # the native ring is not built: ShmProvider.availability() says why
    Ring = RingError = None

from .segments import PREFIX, _NAME_RE
from .sockets import _Conn, _Request, recv_control

log = logging.getLogger("wsd.shm")

_FD_COUNT = 4
_RECV_BUF = ConnectRequest.SIZE + MAX_CALLER_DATA


class RendezvousMixin:
    """ShmProvider's connection set-up (mixed into :class:`wsd_shm.ShmProvider`)."""

    # ------------------------------------------------------------------ listening side
    def _on_listen(self, lst: _Conn) -> None:
        for _ in range(64):
            if lst.lsock is None:
                return
            try:
                sock, _ = lst.lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                log.warning("shm: accept on %s failed: %s", lst.path, e)
                return
            sock.setblocking(False)
            req = _Request(sock, lst)
            self._register(sock.fileno(), ("req", req))

    def _refuse(self, sock, why: str, status: int = errors.WSAECONNREFUSED.wsa_code) -> None:
        log.info("shm: refused a connection request (%s)", why)
        try:
            sock.send(ConnectReply(status=status, acceptor_pid=os.getpid()).pack())
        except OSError:
            pass

    def _drop_request(self, req: _Request) -> None:
        self._unregister(req.sock.fileno())
        req.sock.close()
        for r in (req.c2a, req.a2c):
            if r is not None:
                r.close()
        req.c2a = req.a2c = None
        req.done = True

    def _on_request(self, req: _Request) -> None:
        try:
            msg, fds, flags, _ = socket.recv_fds(req.sock, _RECV_BUF, _FD_COUNT)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            msg, fds, flags = b"", [], 0
            log.info("shm: connection request socket error: %s", e)
        lst = req.listener
        if not msg:
            # the connector closed or died before WSPAccept took its request
            for f in fds:
                os.close(f)
            if req in lst.queue:
                lst.queue.remove(req)
            if req.peer_pid:
                self._sweep_when_dead(req.peer_pid, 0)
            self._drop_request(req)
            return
        if req.hdr is not None:
            for f in fds:
                os.close(f)
            log.warning("shm: unexpected message on a queued connection request; dropped the request")
            if req in lst.queue:
                lst.queue.remove(req)
            self._drop_request(req)
            return
        try:
            if flags & (socket.MSG_CTRUNC | socket.MSG_TRUNC) or len(fds) != _FD_COUNT:
                raise MalformedStructure(f"connection request with {len(fds)} descriptors (flags {flags:#x})")
            hdr = ConnectRequest.unpack(msg)
            if len(msg) != ConnectRequest.SIZE + hdr.caller_data_length or hdr.caller_data_length > MAX_CALLER_DATA:
                raise MalformedStructure("connection request length does not match its caller data")
            names = (text(hdr.c2a_name), text(hdr.a2c_name))
            for n in names:
                if not _NAME_RE.match(n) or not n.startswith(f"{PREFIX}{hdr.connector_pid}-"):
                    raise MalformedStructure(f"bad ring name {n!r}")
            source = (text(hdr.source_host), hdr.source_port)
        except MalformedStructure as e:
            for f in fds:
                os.close(f)
            log.warning("shm: malformed connection request: %s", e)
            self._refuse(req.sock, f"malformed: {e}")
            self._drop_request(req)
            return
        req.hdr, req.peer_pid, req.source = hdr, hdr.connector_pid, source
        req.caller_data = bytes(msg[ConnectRequest.SIZE:])
        if lst.state != "listening" or self.faults.get("reject") or len(lst.queue) >= lst.backlog:
            for f in fds:
                os.close(f)
            why = ("fault: reject" if self.faults.get("reject") else
                   "backlog full" if lst.state == "listening" else "listener closed")
            self._refuse(req.sock, why)
            self._drop_request(req)
            return
        try:
            req.c2a = Ring.attach(names[0], eventfds=(fds[0], fds[1]))
            fds = fds[2:]
            req.a2c = Ring.attach(names[1], eventfds=(fds[0], fds[1]))
            fds = []
        except (OSError, RingError) as e:
            for f in fds:
                os.close(f)
            log.warning("shm: cannot map the rings of a connection request: %s", e)
            self._refuse(req.sock, f"rings: {e}")
            self._drop_request(req)
            return
        self._queue_request(lst, req)        # WSD-A2: queue it, signal FD_ACCEPT
        self.stats["requests"] += 1

    # accept mediation (WSD-A3..A8) is SanProviderBase.WSPAccept; these are the fabric's parts
    def _request_gone(self, req: _Request) -> bool:
        return req.done       # the connector vanished while its request was queued

    def _refuse_request(self, lst: _Conn, req: _Request) -> None:
        self._refuse(req.sock, "rejected by the condition function")
        self._drop_request(req)

    def _accept_request(self, lst: _Conn, req: _Request) -> _Conn:
        c = self._add_socket()
        c.state = "connected"
        c.peer, c.local, c.peer_pid = req.source, lst.local, req.peer_pid
        c.sock, c.rx, c.tx = req.sock, req.c2a, req.a2c
        req.c2a = req.a2c = None
        self._unregister(req.sock.fileno())
        if self.faults.get("delay_post"):
            c.post_delay_until = time.monotonic() + float(self.faults["delay_post"])
        return c

    def _complete_accept(self, lst: _Conn, c: _Conn, req: _Request) -> None:
        with self._lock:
            self._attach_fds(c)
            try:
                c.sock.send(ConnectReply(status=0, acceptor_pid=os.getpid(), acceptor_socket=c.id,
                                         local_host=padded(lst.local[0], HOST_LEN),
                                         local_port=lst.local[1]).pack())
            except OSError as e:
                self._peer_gone(c, f"reply failed: {e}")
        self.stats["accepted"] += 1

    def _attach_fds(self, c: _Conn) -> None:
        c.fds = [c.sock.fileno(), c.rx.readable_fd, c.tx.writable_fd]
        self._register(c.fds[0], ("ctl", c), select.EPOLLIN | select.EPOLLRDHUP)
        self._register(c.fds[1], ("rx", c))
        self._register(c.fds[2], ("tx", c))

    # ------------------------------------------------------------------ connecting side
    def WSPConnect(self, s, addr, caller_data=None) -> None:
        c = self._get(s)
        host, port = addr[0], int(addr[1])
        caller_data = bytes(caller_data or b"")
        if len(caller_data) > MAX_CALLER_DATA or len(host) > HOST_LEN:
            raise errors.WSAEINVAL("caller data or host name too long")
        with self._lock:
            if c.state in ("connecting", "connected"):
                raise errors.WSAEISCONN()
            if c.local[0] == "0.0.0.0":
                c.local = ("127.0.0.1", c.local[1] or next(self._ports))
            c.peer = (host, port)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        sock.settimeout(2.0)
        err = None
        for path in (self._listen_path(host, port), self._listen_path("0.0.0.0", port)):
            try:
                sock.connect(path)
                err = None
                break
            except (FileNotFoundError, ConnectionRefusedError) as e:
                err = e
            except OSError as e:     # EAGAIN/timeout: the listener's backlog is full
                err = e
                break
        if err is not None:
            sock.close()
            with self._lock:
                self._signal(c, FD_CONNECT, errors.WSAECONNREFUSED.wsa_code)
            raise errors.WSAEWOULDBLOCK("connect in progress")
        base = f"{PREFIX}{os.getpid()}-{self.nic}-c{c.id}-{secrets.token_hex(2)}"
        rings = []
        try:
            for d in ("ca", "ac"):
                rings.append(Ring.create(self.ring_bytes, f"{base}-{d}"))
        except OSError as e:
            for r in rings:
                r.close()
                r.unlink()
            sock.close()
            raise errors.WSAENOBUFS(f"cannot create the connection's rings: {e}") from None
        tx, rx = rings
        req = ConnectRequest(connector_pid=os.getpid(), connector_socket=c.id, ring_capacity=self.ring_bytes,
                             listen_host=padded(host, HOST_LEN), listen_port=port,
                             source_host=padded(c.local[0], HOST_LEN), source_port=c.local[1],
                             c2a_name=padded(tx.name, NAME_LEN), a2c_name=padded(rx.name, NAME_LEN),
                             caller_data_length=len(caller_data))
        try:
            socket.send_fds(sock, [req.pack() + caller_data], [*tx.eventfds, *rx.eventfds])
        except OSError as e:
            for r in rings:
                r.close()
                r.unlink()
            sock.close()
            with self._lock:
                self._signal(c, FD_CONNECT, errors.WSAECONNREFUSED.wsa_code)
            log.info("shm: connection request to %s:%d not sent: %s", host, port, e)
            raise errors.WSAEWOULDBLOCK("connect in progress") from None
        sock.setblocking(False)
        with self._lock:
            c.sock, c.tx, c.rx = sock, tx, rx
            c.ring_names = (tx.name, rx.name)
            c.state = "connecting"
            c.connect_deadline = time.monotonic() + self.connect_timeout
            self._register(sock.fileno(), ("connecting", c), select.EPOLLIN | select.EPOLLRDHUP)
            self._at(c.connect_deadline, self._connect_timeout, c)
        raise errors.WSAEWOULDBLOCK("connect in progress")

    def _unlink_rings(self, c: _Conn) -> None:
        for n in c.ring_names:
            Ring.unlink_name(n)
        c.ring_names = ()

    def _connect_failed(self, c: _Conn, status: int, why: str) -> None:
        log.info("shm: connect %d failed: %s", c.id, why)
        self._unregister(c.sock.fileno())
        c.sock.close()
        c.sock = None
        for r in (c.rx, c.tx):
            r.close()
        c.rx = c.tx = None
        self._unlink_rings(c)
        c.state = "new"
        c.connect_deadline = None
        self._signal(c, FD_CONNECT, status)

    def _connect_timeout(self, c: _Conn) -> None:
        if c.state == "connecting" and c.connect_deadline and time.monotonic() >= c.connect_deadline:
            self._connect_failed(c, errors.WSAETIMEDOUT.wsa_code, "no reply in time")

    def _on_reply(self, c: _Conn) -> None:
        if c.state != "connecting":
            return
        msg = recv_control(c.sock, f"connect {c.id}")
        if msg is None:
            return
        if not msg:
            self._connect_failed(c, errors.WSAECONNREFUSED.wsa_code, "listener closed the request")
            return
        try:
            rep = ConnectReply.unpack(msg)
            if len(msg) != ConnectReply.SIZE:
                raise MalformedStructure("connection reply of the wrong length")
            local_host = text(rep.local_host)
        except MalformedStructure as e:
            log.warning("shm: malformed connection reply: %s", e)
            self._connect_failed(c, errors.WSAECONNREFUSED.wsa_code, f"malformed reply: {e}")
            return
        if rep.status:
            self._connect_failed(c, rep.status, f"refused ({errors.code_name(rep.status)})")
            return
        # the acceptor has mapped both rings: no name is needed any more
        self._unlink_rings(c)
        self._unregister(c.sock.fileno())
        c.state = "connected"
        c.connect_deadline = None
        c.peer_pid = rep.acceptor_pid
        if local_host and c.peer is not None:
            c.peer = (c.peer[0], rep.local_port or c.peer[1])
        if self.faults.get("delay_post"):
            c.post_delay_until = time.monotonic() + float(self.faults["delay_post"])
        self._attach_fds(c)
        self._signal(c, FD_CONNECT)
        self._pump_rx(c)
