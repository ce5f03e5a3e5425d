"""``shm``: a same-host SAN over POSIX shared memory (docs/shm.md).

Each connection is a pair of native SPSC rings (:mod:`wsd_ring`), one per
direction, in two POSIX shm segments; the NIC "firmware" is this module:

* **Rendezvous.**  A listening socket is a Unix ``SOCK_SEQPACKET`` socket at
  ``<dir>/l-<host>-<port>`` (``dir`` = ``$WSD_SHM_DIR`` or
  ``/tmp/wsd-shm-<uid>``).  The connector creates both rings, connects there
  and sends a :class:`~wsd_shm.wire.ConnectRequest` with the rings' eventfds
  (``SCM_RIGHTS``); the listener side maps the rings, queues the request and
  signals ``FD_ACCEPT`` (WSD-A2).  ``WSPAccept`` runs the switch's condition
  function on the calling thread (WSD-A3) and only then answers (WSD-A8):
  ``CF_REJECT`` -> the peer's ``FD_CONNECT`` carries ``WSAECONNREFUSED`` and
  ``WSPAccept`` raises it (WSD-A7); ``CF_ACCEPT`` -> ``ResetEvent`` on the
  listening socket's event (``SetEvent`` again if more requests wait, WSD-A6),
  ``WPUCreateSocketHandle`` (WSD-A5), then the reply.  The connector unlinks
  the ring names when the reply arrives: from then on nothing of the
  connection has a name in ``/dev/shm``.
* **Data.**  ``WSPSend`` copies the message into the peer's ring (one copy)
  and completes.  The receiving side copies ring messages into posted
  receive buffers, in order, one message per buffer; a message that arrives
  before a receive is posted simply stays in the ring: the ring is the
  NIC's private receive buffer (WSD-N2, no flow control, never an abort).
  Messages are moved inline by ``WSPRecv`` when they are already there, and
  otherwise by the provider's progress thread, which sleeps in ``epoll`` on
  the rings' eventfds (the ring's wake-up protocol: a producer writes the
  eventfd only when the consumer announced it sleeps).
* **Registered memory.**  ``WSPRegisterRdmaMemory`` copies the buffer into a
  shm region (from a per-provider pool of segments; the copy is the
  registration's cost, see docs/shm.md) and returns a descriptor naming the
  segment and a random key.  ``WSPRdmaRead``/``WSPRdmaWrite`` map the peer's
  segment by name (cached per connection) and copy directly between it and
  the local buffer, after checking signature, key, access and bounds
  (``WSAEACCES`` otherwise).  Regions registered for ``MEM_WRITE`` are copied
  back into the caller's buffer at deregistration.
* **End of a connection.**  The SEQPACKET connection stays open for the
  connection's life; ``WSPCloseSocket`` closes it, and the kernel closes it
  when a process dies, so the peer sees end of file at once: it delivers what
  is left in the ring into posted receives, then fails the rest with
  ``WSAECONNRESET`` and signals ``FD_CLOSE`` (``WSAECONNRESET``).  Segments of a
  dead process (``wsd-shm-<pid>-...``) are unlinked by the survivor.

Options: ``ring_bytes`` (per direction, power of two, default 1 MiB),
``connect_timeout`` (s), ``rdma_read``/``rdma_write`` (capabilities),
``shm_dir``, ``pool_bytes`` (registered-region pool kept for reuse), and
``faults``: ``delay_post`` (seconds before posted receives become visible),
``reject`` (refuse every connection request), ``max_registered_bytes``
(RDMA registrations beyond it fail with ``WSAENOBUFS``).
"""
from __future__ import annotations

import collections
import errno
import heapq
import itertools
import logging
import os
import secrets
import select
import socket
import threading
import time

from wsd import errors
from wsd.sanbase import SanProviderBase
from wsd.spi import FD_CLOSE, Availability, ProviderCapabilities

from .wire import HOST_LEN

try:
    import wsd_ring
    from wsd_ring import RingError
except ImportError as _e:      # the native ring is not built: availability() says why
    wsd_ring = None
    _ring_import_error = str(_e)
else:
    _ring_import_error = ""

from .memory import MemoryMixin
from .rendezvous import RendezvousMixin
from .sockets import _Conn, recv_control
from .segments import PREFIX, SHM_DIR, _Segment, _pid_alive, segments_of, sweep_dead_segments

log = logging.getLogger("wsd.shm")

__all__ = ["ShmProvider", "SHM_DIR", "PREFIX", "sweep_dead_segments", "segments_of"]


class ShmProvider(RendezvousMixin, MemoryMixin, SanProviderBase):
    name = "shm"
    is_san = True

    def __init__(self, ring_bytes: int = 1 << 20, connect_timeout: float = 5.0, rdma_read: bool = True,
                 rdma_write: bool = True, shm_dir: str | None = None, pool_bytes: int = 64 << 20,
                 faults: dict | None = None, **options):
        super().__init__(**options)
        if ring_bytes < 4096 or ring_bytes & (ring_bytes - 1):
            raise errors.WSAEINVAL(f"ring_bytes must be a power of two >= 4096, not {ring_bytes}")
        self.ring_bytes = ring_bytes
        self.connect_timeout = connect_timeout
        self.shm_dir = shm_dir or os.environ.get("WSD_SHM_DIR") or f"/tmp/wsd-shm-{os.getuid()}"
        self.pool_bytes = pool_bytes
        self.faults = dict(faults or {})
        # "RDMA" here is extra copies through shm regions: ask the switch to send up to 64 KiB inline
        # (receive buffers of 64 KiB + header) and to use RDMA only from 256 KiB on
        self.capabilities = ProviderCapabilities(rdma_read=rdma_read, rdma_write=rdma_write, flow_control=False,
                                                 max_message=ring_bytes - 8,
                                                 receive_size=min(65536 + 64, ring_bytes // 4),
                                                 rdma_threshold=256 << 10)
        self.stats = collections.Counter()
        self.nic = secrets.token_hex(4)
        self._ports = itertools.count(40000)
        self._seg_ids = itertools.count(1)
        self._local_mem: dict[int, memoryview] = {}
        self._local_ids = itertools.count(1)
        self._regions: dict[int, tuple] = {}      # key -> (segment, view, flags, length)
        self._pool: dict[int, list[_Segment]] = {}
        self._pool_total = 0
        self._registered_bytes = 0
        self._fdmap: dict[int, tuple] = {}
        self._timers: list = []
        self._tseq = itertools.count()
        self._started = False
        self._thread = None
        self._ep = None
        self._wake_fd = -1
        self._stop = False

    # ------------------------------------------------------------------ life cycle
    def availability(self) -> Availability:
        if wsd_ring is None:
            return Availability(False, f"the native ring (wsd_ring) is not built: {_ring_import_error}")
        if not os.access(SHM_DIR, os.W_OK):
            return Availability(False, f"{SHM_DIR} is not writable")
        return Availability(True, f"POSIX shm rings of {self.ring_bytes} B per direction")

    def WSPStartup(self, upcalls) -> None:
        super().WSPStartup(upcalls)
        if self._started:
            return
        if wsd_ring is None:
            raise errors.WSAEPROVIDERFAILEDINIT(_ring_import_error)
        os.makedirs(self.shm_dir, mode=0o700, exist_ok=True)
        sweep_dead_segments()
        self._sweep_stale_listeners()
        self._ep = select.epoll()
        self._wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._register(self._wake_fd, ("wake", None))
        self._stop = False
        self._thread = threading.Thread(target=self._loop, name=f"shm-nic-{self.nic}", daemon=True)
        self._started = True
        self._thread.start()

    def WSPCleanup(self) -> None:
        if not self._started:
            return
        with self._lock:
            for c in list(self._conns.values()):
                self._close_conn(c, errors.WSA_OPERATION_ABORTED.wsa_code)
            self._conns.clear()
        self._stop = True
        self._wake()
        self._thread.join(5)
        with self._lock:
            for seg, _, _, _ in self._regions.values():
                seg.destroy()
            self._regions.clear()
            self._registered_bytes = 0
            for segs in self._pool.values():
                for seg in segs:
                    seg.destroy()
            self._pool.clear()
            self._pool_total = 0
            self._ep.close()
            os.close(self._wake_fd)
            self._wake_fd = -1
            self._fdmap.clear()
        self._started = False

    # ------------------------------------------------------------------ progress thread
    def _register(self, fd: int, handler: tuple, events: int = select.EPOLLIN) -> None:
        self._fdmap[fd] = handler
        self._ep.register(fd, events)

    def _unregister(self, fd: int) -> None:
        if self._fdmap.pop(fd, None) is not None:
            try:
                self._ep.unregister(fd)
            except (OSError, ValueError):
                pass

    def _wake(self) -> None:
        if self._wake_fd >= 0:
            try:
                os.eventfd_write(self._wake_fd, 1)
            except OSError:
                pass

    def _at(self, when: float, fn, *args) -> None:
        heapq.heappush(self._timers, (when, next(self._tseq), fn, args))
        self._wake()

    def _loop(self) -> None:
        try:
            self._run_loop()
        except BaseException:
            # a bug in the NIC thread must not leave anyone waiting forever: fail everything, re-raise
            log.critical("shm NIC thread died; failing every connection", exc_info=True)
            with self._lock:
                for c in list(self._conns.values()):
                    if c.state == "connected":
                        self._reset_local(c, errors.WSAENETDOWN.wsa_code, "shm NIC thread died")
                    elif c.state == "connecting":
                        self._connect_failed(c, errors.WSAENETDOWN.wsa_code, "shm NIC thread died")
            raise

    def _run_loop(self) -> None:
        ep = self._ep
        while not self._stop:
            with self._lock:
                timeout = -1
                if self._timers:
                    timeout = max(0.0, self._timers[0][0] - time.monotonic())
            try:
                ready = ep.poll(timeout)
            except InterruptedError:
                continue
            except (OSError, ValueError):
                if self._stop:
                    return
                raise
            with self._lock:
                if self._stop:
                    return
                for fd, ev in ready:
                    h = self._fdmap.get(fd)
                    if h is None:
                        continue
                    kind, obj = h
                    if kind == "rx":
                        if obj.state == "connected":
                            obj.rx.ack_readable()
                            self._pump_rx(obj)
                    elif kind == "tx":
                        if obj.state == "connected":
                            obj.tx.ack_writable()
                            self._pump_tx(obj)
                    elif kind == "ctl":
                        self._on_ctl(obj)
                    elif kind == "connecting":
                        self._on_reply(obj)
                    elif kind == "req":
                        self._on_request(obj)
                    elif kind == "listen":
                        self._on_listen(obj)
                    elif kind == "wake":
                        try:
                            os.eventfd_read(self._wake_fd)
                        except BlockingIOError:
                            pass
                now = time.monotonic()
                while self._timers and self._timers[0][0] <= now:
                    _, _, fn, args = heapq.heappop(self._timers)
                    fn(*args)

    # ------------------------------------------------------------------ sockets
    def _new_socket_state(self, sid: int) -> _Conn:
        return _Conn(sid)

    def _check_started(self) -> None:
        if not self._started:
            raise errors.WSAENETDOWN("shm provider not started")

    def WSPBind(self, s, addr) -> None:
        c = self._get(s)
        host, port = addr[0] or "0.0.0.0", int(addr[1])
        if len(host) > HOST_LEN:
            raise errors.WSAEINVAL("host name too long")
        if port == 0:
            port = next(self._ports)
        c.local = (host, port)
        c.state = "bound"

    def _listen_path(self, host: str, port: int) -> str:
        return os.path.join(self.shm_dir, f"l-{host}-{port}")

    def WSPListen(self, s, backlog) -> None:
        c = self._get(s)
        host, port = c.local
        path = self._listen_path(host, port)
        ls = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        try:
            try:
                ls.bind(path)
            except OSError as e:
                if e.errno != errno.EADDRINUSE or not self._stale(path):
                    raise errors.WSAEADDRINUSE(f"{path}: {e}") from None
                os.unlink(path)
                ls.bind(path)
            ls.listen(max(1, min(backlog, 4096)))
            ls.setblocking(False)
        except OSError as e:
            ls.close()
            raise errors.from_errno(e) from None
        with self._lock:
            c.lsock, c.path = ls, path
            c.listening = True
            c.backlog = max(1, backlog)
            c.state = "listening"
            self._register(ls.fileno(), ("listen", c))

    def _sweep_stale_listeners(self) -> None:
        """Remove rendezvous files whose listener died without closing (nobody accepts on them)."""
        try:
            names = [n for n in os.listdir(self.shm_dir) if n.startswith("l-")]
        except OSError:
            return
        for n in names:
            path = os.path.join(self.shm_dir, n)
            if self._stale(path):
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass

    @staticmethod
    def _stale(path: str) -> bool:
        """A rendezvous socket file nobody listens on (its process died)."""
        t = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        t.settimeout(0.2)           # a live listener with a full backlog: not stale
        try:
            t.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            return True
        except OSError:
            return False
        finally:
            t.close()
        return False

    def _events_reported(self, c: _Conn, ne) -> None:
        if ne.network_events & FD_CLOSE:
            c.close_reported = True

    # ------------------------------------------------------------------ connection end
    def _on_ctl(self, c: _Conn) -> None:
        if c.state != "connected" or c.peer_gone:
            return
        msg = recv_control(c.sock, f"connection {c.id} liveness channel")
        if msg is None:
            return
        if msg:
            log.warning("shm: connection %d: unexpected %d bytes on the liveness channel", c.id, len(msg))
            return
        self._peer_gone(c, "peer closed its socket or died")

    def _peer_gone(self, c: _Conn, why: str) -> None:
        """The peer closed or vanished: deliver what is in the ring, then fail receives, FD_CLOSE."""
        if c.peer_gone:
            return
        c.peer_gone = True
        log.info("shm: connection %d: %s", c.id, why)
        if c.sock is not None:
            self._unregister(c.sock.fileno())
        self._pump_rx(c)
        if not c.close_signalled and not c.posted:
            # nothing posted (or everything delivered): tell the switch now; later receives still get
            # whatever is left in the ring first
            c.close_signalled = True
            self._signal(c, FD_CLOSE, errors.WSAECONNRESET.wsa_code)
        self._pump_tx(c)
        if c.peer_pid:
            self._sweep_when_dead(c.peer_pid, 0)

    def _sweep_when_dead(self, pid: int, tries: int) -> None:
        """Unlink a vanished peer's segments once its process is really gone.

        The kernel closes a killed process's sockets before the process is
        dead in /proc, so end of file may come first: look again every 50 ms,
        for up to 5 s (a peer that merely closed its socket stays alive and
        keeps its segments).
        """
        if not _pid_alive(pid):
            sweep_dead_segments(pid)
        elif tries < 100:
            self._at(time.monotonic() + 0.05, self._sweep_when_dead, pid, tries + 1)

    def _reset_local(self, c: _Conn, error: int, why: str) -> None:
        """We end the connection (a protocol fault of the peer): it sees EOF, we see FD_CLOSE."""
        log.warning("shm: connection %d reset: %s", c.id, why)
        if c.sock is not None:
            self._unregister(c.sock.fileno())
            c.sock.close()
            c.sock = None
        c.peer_gone = True
        posted = list(c.posted)
        c.posted.clear()
        for view, ov in posted:
            ov.cq.post(ov, error, 0)
        if not c.close_signalled:
            c.close_signalled = True
            self._signal(c, FD_CLOSE, error)
        self._pump_tx(c)

    def _close_conn(self, c: _Conn, error: int) -> None:
        for fd in c.fds:
            self._unregister(fd)
        c.fds = []
        if c.sock is not None:
            self._unregister(c.sock.fileno())
            c.sock.close()
            c.sock = None
        if c.lsock is not None:
            self._unregister(c.lsock.fileno())
            c.lsock.close()
            c.lsock = None
            try:
                os.unlink(c.path)
            except FileNotFoundError:
                pass
            for req in list(c.queue):
                self._refuse(req.sock, "listening socket closed")
                self._drop_request(req)
            c.queue.clear()
        for r in (c.rx, c.tx):
            if r is not None:
                r.close()
        c.rx = c.tx = None
        self._unlink_rings(c)
        for pm in c.peer_maps.values():
            pm.close()
        c.peer_maps.clear()
        c.listening = False
        c.state = "closed"
        posted, txq = list(c.posted), list(c.txq)
        c.posted.clear()
        c.txq.clear()
        for _, ov in posted + txq:
            ov.cq.post(ov, error, 0)

    def WSPCloseSocket(self, s) -> None:
        with self._lock:
            c = self._conns.pop(s, None)
            if c is None:
                raise errors.WSAENOTSOCK(f"shm provider has no socket {s}")
            self._close_conn(c, errors.WSA_OPERATION_ABORTED.wsa_code)

    # ------------------------------------------------------------------ data
    def WSPSend(self, s, buffers, overlapped=None):
        if overlapped is None:
            raise errors.WSAEOPNOTSUPP("shm SAN sends are overlapped")
        c = self._conns.get(s)
        if c is None:
            raise errors.WSAENOTSOCK(f"shm provider has no socket {s}")
        data = buffers[0] if len(buffers) == 1 else b"".join(bytes(b) for b in buffers)
        if type(data) is not bytes:
            data = memoryview(data).cast("B")
        with self._lock:
            if c.state != "connected":
                raise errors.WSAENOTCONN()
            if c.peer_gone:
                if c.close_reported:
                    raise errors.WSAECONNRESET("peer closed or died")
                # like a TCP send after the peer closed: it completes and the bytes are dropped; the end
                # is reported by FD_CLOSE and failed receives, after every message the peer sent
                self.stats["dropped_after_peer_gone"] += 1
                overlapped.cq.post(overlapped, 0, len(data))
                return None
            if not c.txq:
                try:
                    ok = c.tx.push(data)
                except wsd_ring.MessageTooLarge:
                    raise errors.WSAEMSGSIZE(f"message larger than the ring ({c.tx.max_message} B)") from None
                except RingError as e:
                    raise errors.WSAECONNRESET(f"ring: {e}") from None
                if ok:
                    overlapped.cq.post(overlapped, 0, len(data))
                    return None
            self.stats["send_waits"] += 1
            c.txq.append((data, overlapped))
            self._pump_tx(c)
        return None

    def _pump_tx(self, c: _Conn) -> None:
        q = c.txq
        while q:
            data, ov = q[0]
            if c.peer_gone or c.state != "connected":
                q.popleft()
                ov.cq.post(ov, errors.WSAECONNRESET.wsa_code if c.close_reported else 0, 0)
                continue
            try:
                ok = c.tx.push(data)
            except RingError:
                ok, c.peer_gone = False, True
                continue
            if ok:
                q.popleft()
                ov.cq.post(ov, 0, memoryview(data).nbytes)
                continue
            n = memoryview(data).nbytes
            if c.tx.arm_writable(n):
                if c.tx.consumer_closed:
                    c.peer_gone = True
                continue
            return

    def WSPRecv(self, s, buffers, overlapped=None):
        if overlapped is None:
            raise errors.WSAEOPNOTSUPP("shm SAN receives are overlapped")
        c = self._conns.get(s)
        if c is None:
            raise errors.WSAENOTSOCK(f"shm provider has no socket {s}")
        with self._lock:
            if c.state != "connected":
                raise errors.WSAENOTCONN()
            c.posted.append((buffers[0], overlapped))
            self._pump_rx(c)
        return None

    def _pump_rx(self, c: _Conn) -> None:
        """Copy ring messages into posted receives, in order (WSD-N2); under the lock."""
        posted = c.posted
        if not posted or c.state != "connected":
            return
        if c.post_delay_until:
            now = time.monotonic()
            if now < c.post_delay_until:
                if not c.delay_timer:
                    c.delay_timer = True
                    self._at(c.post_delay_until, self._delay_over, c)
                return
        rx = c.rx
        while posted:
            try:
                closed = c.peer_gone or rx.producer_closed     # first, then look for data (docs/ring.md)
                views = rx.peek(len(posted))
            except RingError as e:
                self._reset_local(c, errors.WSAECONNABORTED.wsa_code, f"receive ring: {e}")
                return
            if not views:
                if closed and not c.peer_gone:
                    self._peer_gone(c, "peer closed its ring")
                    return
                if closed:
                    left = list(posted)
                    posted.clear()
                    for _, ov in left:
                        ov.cq.post(ov, errors.WSAECONNRESET.wsa_code, 0)
                    if not c.close_signalled:
                        c.close_signalled = True
                        self._signal(c, FD_CLOSE, errors.WSAECONNRESET.wsa_code)
                    return
                if rx.arm_readable():
                    continue
                return
            done = []
            bad = None
            for v in views:
                dst, ov = posted.popleft()
                n = len(v)
                if n > len(dst):
                    bad = (ov, n, len(dst))
                    break
                dst[:n] = v
                done.append((ov, n))
            del v, views
            rx.release(len(done) + (1 if bad else 0))
            self.stats["moved"] += len(done)
            for ov, n in done:
                ov.cq.post(ov, 0, n)
            if bad is not None:
                ov, n, size = bad
                ov.cq.post(ov, errors.WSAEMSGSIZE.wsa_code, 0)
                self._reset_local(c, errors.WSAEMSGSIZE.wsa_code, f"message of {n} bytes > posted buffer {size}")
                return

    def _delay_over(self, c: _Conn) -> None:
        c.delay_timer = False
        c.post_delay_until = 0.0
        self._pump_rx(c)
        if c.peer_gone and not c.close_signalled and not c.posted:
            c.close_signalled = True
            self._signal(c, FD_CLOSE, errors.WSAECONNRESET.wsa_code)
