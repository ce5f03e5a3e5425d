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
import mmap
import os
import re
import secrets
import select
import socket
import threading
import time

from wsd import errors
from wsd.sanbase import SanProviderBase, SanSocketState
from wsd.spi import FD_CLOSE, FD_CONNECT, MEM_READ, MEM_WRITE, Availability, ProviderCapabilities

from .wire import (
    HOST_LEN, MAX_CALLER_DATA, NAME_LEN, ConnectReply, ConnectRequest, MalformedStructure, RdmaDescriptor,
    RegionHeader, padded, text,
)

try:
    import wsd_ring
    from wsd_ring import Ring, RingError
except ImportError as _e:      # the native ring is not built: availability() says why
    wsd_ring = None
    _ring_import_error = str(_e)
else:
    _ring_import_error = ""

log = logging.getLogger("wsd.shm")

__all__ = ["ShmProvider", "SHM_DIR", "PREFIX", "sweep_dead_segments", "segments_of"]

SHM_DIR = "/dev/shm"
PREFIX = "wsd-shm-"
_SEG_RE = re.compile(r"^wsd-shm-(\d+)-")
_NAME_RE = re.compile(r"^wsd-shm-\d+-[0-9a-f]{8}-[a-z0-9-]+$")
REGION_HDR = RegionHeader.SIZE
_FD_COUNT = 4
_RECV_BUF = ConnectRequest.SIZE + MAX_CALLER_DATA
_PEER_MAPS = 32                  # peer regions kept mapped per connection
_MIN_REGION = 64 * 1024


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return False
    state = stat[stat.rfind(b")") + 2: stat.rfind(b")") + 3]
    return state not in (b"Z", b"X", b"x")


def segments_of(pid: int | None = None) -> list[str]:
    """Names in /dev/shm made by this provider (by process ``pid``, or by anyone)."""
    try:
        names = os.listdir(SHM_DIR)
    except FileNotFoundError:
        return []
    out = []
    for n in names:
        m = _SEG_RE.match(n)
        if m and (pid is None or int(m.group(1)) == pid):
            out.append(n)
    return sorted(out)


def sweep_dead_segments(pid: int | None = None) -> list[str]:
    """Unlink segments whose creating process is dead (all such, or only ``pid``'s); returns the names."""
    gone = []
    alive: dict[int, bool] = {}
    for n in segments_of(pid):
        p = int(_SEG_RE.match(n).group(1))
        if p not in alive:
            alive[p] = _pid_alive(p)
        if not alive[p]:
            try:
                os.unlink(os.path.join(SHM_DIR, n))
                gone.append(n)
            except FileNotFoundError:
                pass
    if gone:
        log.info("shm: unlinked %d segment(s) of dead process(es): %s", len(gone), ", ".join(gone[:8]))
    return gone


class _Segment:
    """One registered-memory segment of ours: /dev/shm/<name>, header + data area."""

    __slots__ = ("name", "mm", "mv", "capacity", "data")

    def __init__(self, name: str, capacity: int):
        path = os.path.join(SHM_DIR, name)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.ftruncate(fd, REGION_HDR + capacity)
            self.mm = mmap.mmap(fd, REGION_HDR + capacity)
        except OSError:
            os.unlink(path)
            raise
        finally:
            os.close(fd)
        self.name = name
        self.capacity = capacity
        self.mv = memoryview(self.mm)
        self.data = self.mv[REGION_HDR:]

    def destroy(self) -> None:
        try:
            os.unlink(os.path.join(SHM_DIR, self.name))
        except FileNotFoundError:
            pass
        self.data.release()
        self.mv.release()
        self.mm.close()


class _PeerMap:
    __slots__ = ("mm", "mv")

    def __init__(self, name: str):
        fd = os.open(os.path.join(SHM_DIR, name), os.O_RDWR | os.O_CLOEXEC)
        try:
            size = os.fstat(fd).st_size
            if size < REGION_HDR:
                raise errors.WSAEACCES(f"segment {name} is too small")
            self.mm = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        self.mv = memoryview(self.mm)

    def close(self) -> None:
        self.mv.release()
        self.mm.close()


class _Request:
    """A connection request on the listening side, from arrival to WSPAccept."""

    __slots__ = ("sock", "listener", "hdr", "caller_data", "c2a", "a2c", "peer_pid", "source", "done")

    def __init__(self, sock, listener):
        self.sock = sock
        self.listener = listener
        self.hdr = None
        self.caller_data = b""
        self.c2a = self.a2c = None
        self.peer_pid = 0
        self.source = None
        self.done = False

    @property
    def caller(self):
        return self.source


class _Conn(SanSocketState):
    __slots__ = ("path", "lsock", "sock", "rx", "tx", "ring_names", "posted", "txq", "peer_pid", "peer_gone",
                 "close_signalled", "post_delay_until", "delay_timer", "peer_maps", "connect_deadline", "fds",
                 "close_reported")

    def __init__(self, cid: int):
        super().__init__(cid)     # state: new | bound | listening | connecting | connected | closed
        self.path = None          # listening: the rendezvous socket's path
        self.lsock = None         # listening: the rendezvous socket
        self.sock = None          # connecting/connected: the SEQPACKET liveness channel
        self.rx = self.tx = None  # rings: we consume rx, produce tx
        self.ring_names = ()      # connector, until the reply: names to unlink
        self.posted: collections.deque = collections.deque()   # (view, overlapped)
        self.txq: collections.deque = collections.deque()      # (data, overlapped): ring was full
        self.peer_pid = 0
        self.peer_gone = False
        self.close_signalled = False
        self.close_reported = False
        self.post_delay_until = 0.0
        self.delay_timer = False
        self.peer_maps: collections.OrderedDict = collections.OrderedDict()
        self.connect_deadline = None
        self.fds: list[int] = []


class ShmProvider(SanProviderBase):
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
        try:
            msg = c.sock.recv(256)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            msg = b""
            log.info("shm: connect %d: %s", c.id, e)
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

    # ------------------------------------------------------------------ connection end
    def _on_ctl(self, c: _Conn) -> None:
        if c.state != "connected" or c.peer_gone:
            return
        try:
            msg = c.sock.recv(256)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            msg = b""
            log.info("shm: connection %d liveness channel: %s", c.id, e)
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

    # ------------------------------------------------------------------ memory
    def WSPRegisterMemory(self, s, buffer, flags=3):
        h = next(self._local_ids)
        self._local_mem[h] = buffer
        return h

    def WSPDeregisterMemory(self, s, handle) -> None:
        if self._local_mem.pop(handle, None) is None:
            raise errors.WSAEINVAL("unknown memory handle")

    def _segment(self, n: int) -> _Segment:
        cap = max(_MIN_REGION, 1 << (n - 1).bit_length())
        free = self._pool.get(cap)
        if free:
            self._pool_total -= cap
            self.stats["region_reused"] += 1
            return free.pop()
        self.stats["region_created"] += 1
        return _Segment(f"{PREFIX}{os.getpid()}-{self.nic}-r{next(self._seg_ids)}", cap)

    def _unpool(self, seg: _Segment) -> None:
        if self._pool_total + seg.capacity <= self.pool_bytes:
            self._pool.setdefault(seg.capacity, []).append(seg)
            self._pool_total += seg.capacity
        else:
            seg.destroy()

    def WSPRegisterRdmaMemory(self, s, buffer, flags=MEM_READ) -> bytes:
        view = memoryview(buffer).cast("B")
        n = len(view)
        limit = self.faults.get("max_registered_bytes")
        with self._lock:
            if limit is not None and self._registered_bytes + n > limit:
                raise errors.WSAENOBUFS(f"cannot register {n} bytes (limit {limit})")
            try:
                seg = self._segment(n)
            except OSError as e:
                raise errors.WSAENOBUFS(f"cannot create a shm region of {n} bytes: {e}") from None
            key = secrets.randbits(64) | 1
            RegionHeader(access=flags & 3, key=0, length=n, capacity=seg.capacity,
                         owner_pid=os.getpid()).pack_into(seg.mv, 0)
            if flags & MEM_READ:
                seg.data[:n] = view          # the registration copy (docs/shm.md)
            RegionHeader(access=flags & 3, key=key, length=n, capacity=seg.capacity,
                         owner_pid=os.getpid()).pack_into(seg.mv, 0)
            self._regions[key] = (seg, view, flags & 3, n)
            self._registered_bytes += n
        return RdmaDescriptor(access=flags & 3, key=key, length=n, segment=padded(seg.name, NAME_LEN)).pack()

    def WSPDeregisterRdmaMemory(self, s, descriptor: bytes) -> None:
        try:
            d = RdmaDescriptor.unpack(descriptor)
        except MalformedStructure:
            raise errors.WSAEINVAL("not an shm RDMA descriptor") from None
        with self._lock:
            ent = self._regions.pop(d.key, None)
            if ent is None:
                raise errors.WSAEINVAL("unknown RDMA descriptor")
            seg, view, flags, n = ent
            seg.mv[8:16] = b"\0" * 8                 # RegionHeader.key = 0: no more remote access
            if flags & MEM_WRITE:
                view[:n] = seg.data[:n]              # what the peer wrote goes back to the caller's buffer
            self._registered_bytes -= n
            self._unpool(seg)

    def _remote(self, c: _Conn, remote: bytes, need: int, offset: int, access: int) -> memoryview:
        """The peer's registered bytes [offset, offset + need) after every check, or WSAEACCES."""
        try:
            d = RdmaDescriptor.unpack(remote)
            name = text(d.segment)
        except MalformedStructure as e:
            raise errors.WSAEINVAL(f"bad RDMA descriptor: {e}") from None
        if len(remote) != RdmaDescriptor.SIZE or not _NAME_RE.match(name) \
                or not name.startswith(f"{PREFIX}{c.peer_pid}-"):
            raise errors.WSAEACCES(f"descriptor names {name!r}, not a region of the peer")
        pm = c.peer_maps.get(name)
        if pm is None:
            try:
                pm = _PeerMap(name)
            except OSError as e:
                raise errors.WSAEACCES(f"cannot map the peer's region {name}: {e}") from None
            c.peer_maps[name] = pm
            if len(c.peer_maps) > _PEER_MAPS:
                c.peer_maps.popitem(last=False)[1].close()
        else:
            c.peer_maps.move_to_end(name)
        try:
            h = RegionHeader.unpack(pm.mv)
        except MalformedStructure as e:
            raise errors.WSAEACCES(f"peer region {name}: {e}") from None
        if h.key != d.key or not h.key or not h.access & access or not d.access & access:
            raise errors.WSAEACCES("region not registered (any more) or without that access")
        if offset < 0 or offset + need > h.length or REGION_HDR + h.length > len(pm.mv):
            raise errors.WSAEACCES(f"{need} bytes at {offset} outside the {h.length} registered bytes")
        return pm.mv[REGION_HDR + offset: REGION_HDR + offset + need]

    def _rdma(self, s, local, remote, offset, overlapped, write: bool) -> None:
        c = self._get(s)
        with self._lock:
            if c.state != "connected":
                raise errors.WSAENOTCONN()
            if c.peer_gone:
                raise errors.WSAECONNRESET("peer closed or died")
            bufs = [memoryview(b).cast("B") for b in local]
            total = sum(len(b) for b in bufs)
            try:
                area = self._remote(c, remote, total, offset, MEM_WRITE if write else MEM_READ)
            except errors.WSAEACCES as e:
                log.info("shm: RDMA %s refused: %s", "write" if write else "read", e)
                overlapped.cq.post(overlapped, e.wsa_code, 0)
                return
            pos = 0
            for b in bufs:
                if write:
                    area[pos:pos + len(b)] = b
                else:
                    b[:] = area[pos:pos + len(b)]
                pos += len(b)
            area.release()
            self.stats["rdma_write" if write else "rdma_read"] += 1
            overlapped.cq.post(overlapped, 0, total)

    def WSPRdmaRead(self, s, local, remote, offset, overlapped) -> None:
        self._rdma(s, local, remote, offset, overlapped, write=False)

    def WSPRdmaWrite(self, s, local, remote, offset, overlapped) -> None:
        self._rdma(s, local, remote, offset, overlapped, write=True)
