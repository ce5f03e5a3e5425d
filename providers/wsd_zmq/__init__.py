"""``zmq``: an emulated SAN fabric over ZeroMQ, for hosts without RDMA.

Each provider instance is one emulated NIC: a ROUTER socket (its receive
port) bound at a NIC endpoint, a background thread that plays the NIC's
firmware (it answers RDMA reads, applies RDMA writes, places arriving sends
into posted receive buffers), and DEALER sockets to the peers' NICs (used
under a lock by whichever thread sends).  Endpoints are ``ipc://`` on one host
(default) or ``tcp://`` across hosts (``transport="tcp"``; listeners at
``port + tcp_port_offset``).

SAN semantics offered to the switch:

* connection requests that the switch accepts or rejects through
  ``WSPAccept``'s condition function; the requester learns the verdict only
  afterwards (WSD-A8) and its ``FD_CONNECT`` carries ``WSAECONNREFUSED``;
* sends land in posted receive buffers, in order, one message per buffer;
* a NIC **without** flow control (default) holds a message that arrives before
  a receive is posted in private buffers and copies them 1:1, in order, into
  the next posted buffers (WSD-N2); a NIC **with** flow control
  (``flow_control=True``) leaves the sender's send uncompleted until a buffer
  is posted (receiver-not-ready retry);
* RDMA read and write of regions registered with ``WSPRegisterRdmaMemory``
  (bounds and access checked by the owning NIC);
* peer death is noticed through ZeroMQ's socket monitor (``FD_CLOSE`` with
  ``WSAECONNRESET``, posted receives fail).

Fault injection (``faults={...}``) for tests: ``delay_post`` (seconds before
posted receives become visible), ``drop`` / ``delay`` (``{"kind": "send",
"nth": N[, "seconds": s]}``: the Nth outgoing message of that kind), ``reject``
(the NIC refuses every connection request itself), ``max_registered_bytes``
(RDMA registrations beyond it fail with ``WSAENOBUFS``).
"""
from __future__ import annotations

import collections
import heapq
import itertools
import logging
import os
import struct
import threading
import time
import uuid

import zmq

from wsd import errors
from wsd.sanbase import SanProviderBase, SanSocketState
from wsd.spi import FD_CLOSE, FD_CONNECT, MEM_READ, MEM_WRITE, Availability, ProviderCapabilities

log = logging.getLogger("wsd.zmq")

__all__ = ["ZmqProvider"]

# frame-0 message kinds between emulated NICs
K_CONNREQ, K_CONNREP, K_SEND, K_ACK, K_READREQ, K_READRSP, K_WRITE, K_WRITEACK, K_DISC = (
    b"Q", b"P", b"S", b"A", b"R", b"r", b"W", b"w", b"D")
_KIND_NAMES = {b"Q": "connreq", b"P": "connrep", b"S": "send", b"A": "ack", b"R": "readreq", b"r": "readrsp",
               b"W": "write", b"w": "writeack", b"D": "disc"}
_u64 = struct.Struct("<Q")
_send_hdr = struct.Struct("<QQ")          # dst conn, msg id (0 = no ack wanted)
_ack_hdr = struct.Struct("<QQ")
_rdma_req = struct.Struct("<QQQQQ")       # dst conn, token, region, offset, length
_rdma_rsp = struct.Struct("<QQI")         # dst conn, token, status
_connrep = struct.Struct("<QQI")          # connector's conn, acceptor's conn, status
_desc = struct.Struct("<16sQQI")          # nic uuid, region id, length, access
DESC_SIZE = _desc.size
MAX_PRIVATE_BYTES = 64 << 20


class _Request:
    """A queued connection request (``caller``/``caller_data`` as the base class expects)."""

    __slots__ = ("req_conn", "reply_nic", "caller", "caller_data")

    def __init__(self, req_conn: int, reply_nic: str, caller: tuple, caller_data: bytes):
        self.req_conn, self.reply_nic, self.caller, self.caller_data = req_conn, reply_nic, caller, caller_data


class _Conn(SanSocketState):
    __slots__ = ("peer_nic", "peer_conn", "posted", "private", "private_bytes", "rnr", "endpoint",
                 "connect_deadline", "post_delay_until")

    def __init__(self, cid: int):
        super().__init__(cid)
        self.peer_nic = None
        self.peer_conn = 0
        self.posted = collections.deque()     # (view, overlapped)
        self.private = collections.deque()    # bytes held before a receive was posted (WSD-N2)
        self.private_bytes = 0
        self.rnr = collections.deque()        # (bytes, sender nic, msg id): flow-controlled, unacked
        self.endpoint = None
        self.connect_deadline = None
        self.post_delay_until = 0.0


class ZmqProvider(SanProviderBase):
    name = "zmq"
    is_san = True

    def __init__(self, transport: str = "ipc", ipc_dir: str | None = None, nic_ip: str = "127.0.0.1",
                 tcp_port_offset: int = 20000, flow_control: bool = False, rdma_read: bool = True,
                 rdma_write: bool = True, connect_timeout: float = 5.0, faults: dict | None = None, **options):
        super().__init__(**options)
        if transport not in ("ipc", "tcp"):
            raise errors.WSAEINVAL(f"zmq transport must be ipc or tcp, not {transport!r}")
        self.transport = transport
        self.ipc_dir = ipc_dir or os.environ.get("WSD_ZMQ_DIR") or f"/tmp/wsd-zmq-{os.getuid()}"
        self.nic_ip = nic_ip
        self.tcp_port_offset = tcp_port_offset
        self.flow_control = flow_control
        self.connect_timeout = connect_timeout
        self.faults = dict(faults or {})
        self.capabilities = ProviderCapabilities(rdma_read=rdma_read, rdma_write=rdma_write,
                                                 flow_control=flow_control)
        self.stats = collections.Counter()
        self.nic_id = uuid.uuid4().bytes
        self._ports = itertools.count(40000)
        self._regions: dict[int, tuple[memoryview, int]] = {}
        self._region_ids = itertools.count(1)
        self._registered_bytes = 0
        self._local_mem: dict[int, memoryview] = {}
        self._tokens = itertools.count(1)
        self._pending_rdma: dict[int, tuple] = {}
        self._msg_ids = itertools.count(1)
        self._pending_sends: dict[int, tuple] = {}
        self._fault_counts = collections.Counter()
        self._ctx = None
        self._thread = None
        self._started = False
        self._closing = False

    # ------------------------------------------------------------------ life cycle
    def availability(self) -> Availability:
        return Availability(True, f"zmq {zmq.zmq_version()} over {self.transport}")

    def WSPStartup(self, upcalls) -> None:
        super().WSPStartup(upcalls)
        if self._started:
            return
        self._ctx = zmq.Context()
        self._rx = self._ctx.socket(zmq.ROUTER)
        self._rx.setsockopt(zmq.LINGER, 0)
        self._rx.setsockopt(zmq.RCVHWM, 0)
        if self.transport == "ipc":
            os.makedirs(self.ipc_dir, mode=0o700, exist_ok=True)
            self.nic_endpoint = f"ipc://{self.ipc_dir}/n-{os.getpid()}-{self.nic_id.hex()[:12]}"
            self._rx.bind(self.nic_endpoint)
        else:
            port = self._rx.bind_to_random_port(f"tcp://{self.nic_ip}")
            self.nic_endpoint = f"tcp://{self.nic_ip}:{port}"
        self._tx: dict[str, zmq.Socket] = {}
        self._tx_lock = threading.Lock()
        self._monitors: dict = {}
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._cmds = collections.deque()
        self._timers: list = []
        self._stop = False
        self._thread = threading.Thread(target=self._nic_loop, name=f"zmq-nic-{self.nic_id.hex()[:6]}",
                                        daemon=True)
        self._thread.start()
        self._started = True

    def WSPCleanup(self) -> None:
        if not self._started:
            return
        with self._lock:
            for c in list(self._conns.values()):
                if c.state == "connected":
                    self._send_to(c.peer_nic, [K_DISC, _u64.pack(c.peer_conn)])
        self._stop = True
        self._wake()
        self._thread.join(5)
        with self._tx_lock:
            self._closing = True       # no new fabric sockets from any thread from now on
            for s in self._tx.values():
                s.close(linger=1000)   # let queued replies (a CONNREP, a DISC) reach the peer
            self._tx.clear()
        for m in self._monitors:
            m.close(0)
        self._rx.close(0)
        # destroy, not term: it closes any socket still open, so termination cannot block
        self._ctx.destroy(linger=1000)
        os.close(self._wake_r)
        os.close(self._wake_w)
        self._started = False
        if self.transport == "ipc":
            self._unlink(self.nic_endpoint)

    @staticmethod
    def _unlink(endpoint: str) -> None:
        if endpoint.startswith("ipc://"):
            try:
                os.unlink(endpoint[6:])
            except FileNotFoundError:
                pass

    # ------------------------------------------------------------------ NIC thread
    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):
            pass

    def _call_in_nic(self, fn, *args) -> None:
        self._cmds.append((fn, args))
        self._wake()

    def _at(self, when: float, fn, *args) -> None:
        self._call_in_nic(lambda: heapq.heappush(self._timers, (when, next(self._tokens), fn, args)))

    def _nic_loop(self) -> None:
        poller = zmq.Poller()
        poller.register(self._rx, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        self._poller = poller
        while not self._stop:
            timeout = None
            if self._timers:
                timeout = max(0, (self._timers[0][0] - time.monotonic()) * 1000)
            timeout = 200 if timeout is None else min(timeout, 200)
            events = dict(poller.poll(timeout))
            if self._wake_r in events:
                try:
                    os.read(self._wake_r, 4096)
                except BlockingIOError:
                    pass
            while self._cmds:
                fn, args = self._cmds.popleft()
                fn(*args)
            if self._rx in events:
                for _ in range(256):
                    try:
                        frames = self._rx.recv_multipart(zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    self._on_frames(frames)
            for m, ep in list(self._monitors.items()):
                if m in events:
                    self._on_monitor(m, ep)
            now = time.monotonic()
            while self._timers and self._timers[0][0] <= now:
                _, _, fn, args = heapq.heappop(self._timers)
                fn(*args)
            self._check_connect_deadlines(now)

    def _on_monitor(self, m, endpoint) -> None:
        from zmq.utils.monitor import recv_monitor_message
        while True:
            try:
                msg = recv_monitor_message(m, zmq.NOBLOCK)
            except zmq.Again:
                return
            if msg["event"] == zmq.EVENT_DISCONNECTED:
                with self._lock:
                    for c in list(self._conns.values()):
                        if c.peer_nic == endpoint and c.state in ("connected", "connecting"):
                            self._reset(c, errors.WSAECONNRESET.wsa_code, "peer NIC disconnected")

    def _check_connect_deadlines(self, now: float) -> None:
        with self._lock:
            for c in self._conns.values():
                if c.state == "connecting" and c.connect_deadline and now >= c.connect_deadline:
                    c.state = "new"
                    self._signal(c, FD_CONNECT, errors.WSAETIMEDOUT.wsa_code)

    def _frame_kind(self, kind: bytes) -> str:
        return _KIND_NAMES.get(kind, "?")

    def _on_frames(self, frames) -> None:
        # frames[0] is the ROUTER's routing id of the sending DEALER
        kind = frames[1].bytes
        body = frames[2:]
        try:
            if kind == K_SEND:
                dst, msg_id = _send_hdr.unpack(body[0].bytes)
                reply_to = body[1].bytes.decode() if msg_id else None
                self._on_send(dst, body[-1], msg_id, reply_to)
            elif kind == K_ACK:
                _, msg_id = _ack_hdr.unpack(body[0].bytes)
                ent = self._pending_sends.pop(msg_id, None)
                if ent is not None:
                    ov, n = ent
                    ov.cq.post(ov, 0, n)
            elif kind == K_READREQ:
                self._on_readreq(*_rdma_req.unpack(body[0].bytes), reply_to=body[1].bytes.decode())
            elif kind == K_READRSP:
                dst, token, status = _rdma_rsp.unpack(body[0].bytes)
                self._on_rdma_done(token, status, body[1] if len(body) > 1 else None)
            elif kind == K_WRITE:
                dst, token, region, offset, length = _rdma_req.unpack(body[0].bytes)
                self._on_write(dst, token, region, offset, body[1], body[2].bytes.decode())
            elif kind == K_WRITEACK:
                dst, token, status = _rdma_rsp.unpack(body[0].bytes)
                self._on_rdma_done(token, status, None)
            elif kind == K_CONNREQ:
                self._on_connreq(body)
            elif kind == K_CONNREP:
                self._on_connrep(*_connrep.unpack(body[0].bytes), nic=body[1].bytes.decode(),
                                 addr=body[2].bytes.decode())
            elif kind == K_DISC:
                (dst,) = _u64.unpack(body[0].bytes)
                with self._lock:
                    c = self._conns.get(dst)
                    if c is not None and c.state == "connected":
                        self._reset(c, errors.WSAECONNRESET.wsa_code, "peer closed its SAN socket")
            else:
                log.warning("zmq NIC: dropped a frame of unknown kind %r", kind)
        except (struct.error, IndexError, UnicodeDecodeError) as e:
            log.warning("zmq NIC: dropped a malformed %s frame: %s", self._frame_kind(kind), e)

    # ------------------------------------------------------------------ fabric sends
    def _tx_socket(self, endpoint: str) -> zmq.Socket:
        s = self._tx.get(endpoint)
        if s is None:
            s = self._ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.SNDHWM, 0)
            if endpoint.startswith("tcp://"):
                s.setsockopt(zmq.HEARTBEAT_IVL, 1000)
                s.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3000)
            mon = s.get_monitor_socket(zmq.EVENT_DISCONNECTED)
            s.connect(endpoint)
            self._tx[endpoint] = s
            self._monitors[mon] = endpoint
            self._call_in_nic(self._poller_register, mon)
        return s

    def _poller_register(self, sock) -> None:
        self._poller.register(sock, zmq.POLLIN)

    def _fault(self, kind: str) -> tuple[str, float] | None:
        for action in ("drop", "delay"):
            f = self.faults.get(action)
            if f and f.get("kind") == kind:
                self._fault_counts[(action, kind)] += 1
                if self._fault_counts[(action, kind)] == f.get("nth", 1):
                    return action, float(f.get("seconds", 0))
        return None

    def _send_to(self, endpoint: str, frames: list, kind: str | None = None) -> None:
        if kind is not None and self.faults:
            f = self._fault(kind)
            if f is not None:
                if f[0] == "drop":
                    self.stats[f"dropped_{kind}"] += 1
                    log.info("zmq NIC fault: dropped a %s message", kind)
                    return
                self.stats[f"delayed_{kind}"] += 1
                frames = [bytes(x) for x in frames]
                self._at(time.monotonic() + f[1], self._send_to, endpoint, frames)
                return
        with self._tx_lock:
            if self._closing:
                log.debug("zmq NIC: provider closing, %s message not sent", kind or "control")
                return
            s = self._tx_socket(endpoint)
            s.send_multipart(frames, copy=len(frames[-1]) < 65536)

    # ------------------------------------------------------------------ sockets
    def _new_socket_state(self, sid: int) -> _Conn:
        return _Conn(sid)

    def _check_started(self) -> None:
        if not self._started:
            raise errors.WSAENETDOWN("zmq provider not started")

    def WSPBind(self, s, addr) -> None:
        c = self._get(s)
        host, port = addr[0] or "0.0.0.0", int(addr[1])
        if port == 0:
            port = next(self._ports)
        c.local = (host, port)
        c.state = "bound"

    def _listen_endpoint(self, host: str, port: int) -> str:
        if self.transport == "ipc":
            return f"ipc://{self.ipc_dir}/l-{host}-{port}"
        return f"tcp://{'*' if host == '0.0.0.0' else host}:{port + self.tcp_port_offset}"

    def WSPListen(self, s, backlog) -> None:
        c = self._get(s)
        host, port = c.local
        ep = self._listen_endpoint(host, port)
        done = threading.Event()
        err = []

        def bind():
            try:
                self._rx.bind(ep)
            except zmq.ZMQError as e:
                err.append(e)
            done.set()
        self._call_in_nic(bind)
        if not done.wait(5):
            raise errors.WSAENETDOWN("zmq NIC thread did not answer")
        if err:
            raise errors.WSAEADDRINUSE(f"{ep}: {err[0]}")
        c.endpoint = ep
        c.listening = True
        c.backlog = max(1, backlog)
        c.state = "listening"

    # ------------------------------------------------------------------ connection requests
    def _on_connreq(self, body) -> None:
        (req_conn,) = _u64.unpack(body[0].bytes)
        reply_nic = body[1].bytes.decode()
        listen_addr = body[2].bytes.decode()
        src_addr = body[3].bytes.decode()
        caller_data = body[4].bytes if len(body) > 4 else b""
        host, _, port = listen_addr.rpartition(":")
        with self._lock:
            lst = None
            for c in self._conns.values():
                if c.listening and c.local[1] == int(port) and c.local[0] in (host, "0.0.0.0"):
                    lst = c
                    break
            if lst is None or self.faults.get("reject") or len(lst.queue) >= lst.backlog:
                why = "no listener" if lst is None else ("fault: reject" if self.faults.get("reject")
                                                          else "backlog full")
                log.info("zmq NIC: refused a connection request for %s (%s)", listen_addr, why)
                self._send_to(reply_nic, [K_CONNREP, _connrep.pack(req_conn, 0, errors.WSAECONNREFUSED.wsa_code),
                                          self.nic_endpoint.encode(), listen_addr.encode()])
                return
            sh, _, sp = src_addr.rpartition(":")
            # WSD-A2: queue it and signal the event object registered for FD_ACCEPT
            self._queue_request(lst, _Request(req_conn, reply_nic, (sh, int(sp)), caller_data))

    # accept mediation (WSD-A3..A8) is SanProviderBase.WSPAccept; these are the fabric's parts
    def _refuse_request(self, lst: _Conn, req: _Request) -> None:
        self._send_to(req.reply_nic, [K_CONNREP, _connrep.pack(req.req_conn, 0, errors.WSAECONNREFUSED.wsa_code),
                                      self.nic_endpoint.encode(), f"{lst.local[0]}:{lst.local[1]}".encode()])

    def _accept_request(self, lst: _Conn, req: _Request) -> _Conn:
        c = self._add_socket()
        c.state = "connected"
        c.peer_nic = req.reply_nic
        c.peer_conn = req.req_conn
        c.peer = req.caller
        c.local = lst.local
        if self.faults.get("delay_post"):
            c.post_delay_until = time.monotonic() + float(self.faults["delay_post"])
        return c

    def _complete_accept(self, lst: _Conn, c: _Conn, req: _Request) -> None:
        self._send_to(req.reply_nic, [K_CONNREP, _connrep.pack(req.req_conn, c.id, 0), self.nic_endpoint.encode(),
                                      f"{lst.local[0]}:{lst.local[1]}".encode()])

    def WSPConnect(self, s, addr, caller_data=None) -> None:
        c = self._get(s)
        host, port = addr[0], int(addr[1])
        ep = self._listen_endpoint(host, port)
        if self.transport == "ipc" and not os.path.exists(ep[6:]):
            wild = self._listen_endpoint("0.0.0.0", port)
            if os.path.exists(wild[6:]):
                ep = wild
            else:
                with self._lock:
                    self._signal(c, FD_CONNECT, errors.WSAECONNREFUSED.wsa_code)
                raise errors.WSAEWOULDBLOCK("connect in progress")
        with self._lock:
            if c.local[0] == "0.0.0.0":
                c.local = (self.nic_ip if self.transport == "tcp" else "127.0.0.1", c.local[1])
            c.state = "connecting"
            c.peer = (host, port)
            c.connect_deadline = time.monotonic() + self.connect_timeout
        self._send_to(ep, [K_CONNREQ, _u64.pack(c.id), self.nic_endpoint.encode(), f"{host}:{port}".encode(),
                           f"{c.local[0]}:{c.local[1]}".encode(), caller_data or b""])
        raise errors.WSAEWOULDBLOCK("connect in progress")

    def _on_connrep(self, req_conn, acc_conn, status, nic, addr) -> None:
        with self._lock:
            c = self._conns.get(req_conn)
            if c is None or c.state != "connecting":
                if status == 0:   # we gave up already: tell the acceptor
                    self._send_to(nic, [K_DISC, _u64.pack(acc_conn)])
                return
            c.connect_deadline = None
            if status:
                c.state = "new"
                self._signal(c, FD_CONNECT, status)
                return
            c.state = "connected"
            c.peer_nic = nic
            c.peer_conn = acc_conn
            if self.faults.get("delay_post"):
                c.post_delay_until = time.monotonic() + float(self.faults["delay_post"])
            self._signal(c, FD_CONNECT)

    def WSPCloseSocket(self, s) -> None:
        with self._lock:
            c = self._conns.pop(s, None)
            if c is None:
                raise errors.WSAENOTSOCK(f"zmq provider has no socket {s}")
            if c.state == "connected":
                self._send_to(c.peer_nic, [K_DISC, _u64.pack(c.peer_conn)])
            if c.listening and c.endpoint:
                ep = c.endpoint
                for req in c.queue:
                    self._refuse_request(c, req)
                c.queue.clear()

                def unbind():
                    try:
                        self._rx.unbind(ep)
                    except zmq.ZMQError:
                        pass
                    self._unlink(ep)
                self._call_in_nic(unbind)
            c.state = "closed"
            posted = list(c.posted)
            c.posted.clear()
        for view, ov in posted:
            ov.cq.post(ov, errors.WSA_OPERATION_ABORTED.wsa_code, 0)

    def _reset(self, c: _Conn, error: int, why: str) -> None:
        """The connection died (peer closed or vanished): fail posted receives, signal FD_CLOSE."""
        if c.state == "reset":
            return
        c.state = "reset"
        log.info("zmq NIC: connection %d reset: %s", c.id, why)
        if not c.private and not c.rnr:
            posted = list(c.posted)
            c.posted.clear()
            for view, ov in posted:
                ov.cq.post(ov, error, 0)
        # else: messages already held privately are still copied into posted buffers (never lost)
        self._signal(c, FD_CLOSE, error)

    # ------------------------------------------------------------------ data
    def WSPSend(self, s, buffers, overlapped=None):
        if overlapped is None:
            raise errors.WSAEOPNOTSUPP("zmq SAN sends are overlapped")
        c = self._get(s)
        if c.state != "connected":
            raise errors.from_code(errors.WSAECONNRESET.wsa_code if c.state == "reset"
                                   else errors.WSAENOTCONN.wsa_code)
        data = buffers[0] if len(buffers) == 1 else b"".join(bytes(b) for b in buffers)
        n = len(data)
        if self.flow_control:
            mid = next(self._msg_ids)
            self._pending_sends[mid] = (overlapped, n)
            self._send_to(c.peer_nic, [K_SEND, _send_hdr.pack(c.peer_conn, mid), self.nic_endpoint.encode(),
                                       bytes(data)], "send")
        else:
            self._send_to(c.peer_nic, [K_SEND, _send_hdr.pack(c.peer_conn, 0), bytes(data)], "send")
            overlapped.cq.post(overlapped, 0, n)
        self.stats["sends"] += 1
        return None

    def _on_send(self, dst: int, frame, msg_id: int, reply_to: str | None) -> None:
        with self._lock:
            c = self._conns.get(dst)
            if c is None or c.state != "connected":
                return
            data = frame.buffer
            if c.posted and not c.private and not c.rnr and time.monotonic() >= c.post_delay_until:
                view, ov = c.posted.popleft()
                self._place(c, view, ov, data)
                if msg_id:
                    self._send_to(reply_to, [K_ACK, _ack_hdr.pack(0, msg_id)])
                return
            if msg_id:
                # flow-controlled link, receiver not ready: the sender's NIC keeps retrying and its
                # send stays uncompleted until a receive is posted
                c.rnr.append((bytes(data), reply_to, msg_id))
                self.stats["rnr_held"] += 1
            else:
                # WSD-N2: no flow control -> hold in private receive buffers
                c.private.append(bytes(data))
                c.private_bytes += len(data)
                self.stats["private_buffered"] += 1
                tr = getattr(self.upcalls, "trace", None)
                if tr is not None:
                    tr("private_buffer", provider=self.name, socket=c.id, bytes=len(data))
                if c.private_bytes > MAX_PRIVATE_BYTES:
                    self._reset(c, errors.WSAENOBUFS.wsa_code, "private receive buffers exhausted")
                    return
            if c.post_delay_until:
                self._at(c.post_delay_until, self._drain, c)

    def _place(self, c: _Conn, view, ov, data) -> None:
        n = len(data)
        if n > len(view):
            ov.cq.post(ov, errors.WSAEMSGSIZE.wsa_code, 0)
            self._reset(c, errors.WSAEMSGSIZE.wsa_code, f"message of {n} bytes > posted buffer {len(view)}")
            return
        view[:n] = data
        ov.cq.post(ov, 0, n)

    def _drain(self, c: _Conn) -> None:
        """Copy private (or RNR-held) messages 1:1 into posted buffers, in order (WSD-N2)."""
        with self._lock:
            if time.monotonic() < c.post_delay_until:
                self._at(c.post_delay_until, self._drain, c)
                return
            while c.posted and c.private:
                data = c.private.popleft()
                c.private_bytes -= len(data)
                view, ov = c.posted.popleft()
                self.stats["private_copied"] += 1
                self._place(c, view, ov, data)
            while c.posted and c.rnr:
                data, reply_to, mid = c.rnr.popleft()
                view, ov = c.posted.popleft()
                self._place(c, view, ov, data)
                self._send_to(reply_to, [K_ACK, _ack_hdr.pack(0, mid)])

    def WSPRecv(self, s, buffers, overlapped=None):
        if overlapped is None:
            raise errors.WSAEOPNOTSUPP("zmq SAN receives are overlapped")
        c = self._get(s)
        with self._lock:
            if c.state in ("closed",):
                raise errors.WSAENOTCONN()
            c.posted.append((buffers[0], overlapped))
            if c.state == "reset" and not c.private:
                c.posted.pop()
                overlapped.cq.post(overlapped, errors.WSAECONNRESET.wsa_code, 0)
                return None
            if c.private or c.rnr:
                if time.monotonic() >= c.post_delay_until:
                    self._drain(c)
                else:
                    self._at(c.post_delay_until, self._drain, c)
        return None

    # ------------------------------------------------------------------ memory
    def WSPRegisterMemory(self, s, buffer, flags=3):
        h = next(self._region_ids)
        self._local_mem[h] = memoryview(buffer)
        return h

    def WSPDeregisterMemory(self, s, handle) -> None:
        if self._local_mem.pop(handle, None) is None:
            raise errors.WSAEINVAL("unknown memory handle")

    def WSPRegisterRdmaMemory(self, s, buffer, flags=MEM_READ) -> bytes:
        view = memoryview(buffer).cast("B")
        limit = self.faults.get("max_registered_bytes")
        with self._lock:
            if limit is not None and self._registered_bytes + len(view) > limit:
                raise errors.WSAENOBUFS(f"cannot register {len(view)} bytes (limit {limit})")
            rid = next(self._region_ids)
            self._regions[rid] = (view, flags)
            self._registered_bytes += len(view)
        return _desc.pack(self.nic_id, rid, len(view), flags)

    def WSPDeregisterRdmaMemory(self, s, descriptor: bytes) -> None:
        nic, rid, length, flags = _desc.unpack(descriptor)
        with self._lock:
            ent = self._regions.pop(rid, None)
            if ent is None or nic != self.nic_id:
                raise errors.WSAEINVAL("unknown RDMA descriptor")
            self._registered_bytes -= len(ent[0])

    def _parse_remote(self, remote: bytes):
        if len(remote) != DESC_SIZE:
            raise errors.WSAEINVAL("bad RDMA descriptor")
        return _desc.unpack(remote)

    def WSPRdmaRead(self, s, local, remote, offset, overlapped) -> None:
        c = self._get(s)
        if c.state != "connected":
            raise errors.WSAENOTCONN()
        nic, rid, length, flags = self._parse_remote(remote)
        target = local[0]
        token = next(self._tokens)
        self._pending_rdma[token] = (target, overlapped)
        self._send_to(c.peer_nic, [K_READREQ, _rdma_req.pack(c.peer_conn, token, rid, offset, len(target)),
                                   self.nic_endpoint.encode()], "rdma_read")

    def _on_readreq(self, dst, token, rid, offset, length, reply_to) -> None:
        ent = self._regions.get(rid)
        status = 0
        if ent is None or not ent[1] & MEM_READ or offset + length > len(ent[0]):
            status = errors.WSAEACCES.wsa_code
        frames = [K_READRSP, _rdma_rsp.pack(dst, token, status)]
        if not status:
            frames.append(ent[0][offset:offset + length])
        self._send_to(reply_to, frames)

    def WSPRdmaWrite(self, s, local, remote, offset, overlapped) -> None:
        c = self._get(s)
        if c.state != "connected":
            raise errors.WSAENOTCONN()
        nic, rid, length, flags = self._parse_remote(remote)
        token = next(self._tokens)
        self._pending_rdma[token] = (None, overlapped)
        src = local[0]
        self._send_to(c.peer_nic, [K_WRITE, _rdma_req.pack(c.peer_conn, token, rid, offset, len(src)), src,
                                   self.nic_endpoint.encode()], "rdma_write")

    def _on_write(self, dst, token, rid, offset, frame, reply_to) -> None:
        ent = self._regions.get(rid)
        data = frame.buffer
        status = 0
        if ent is None or not ent[1] & MEM_WRITE or offset + len(data) > len(ent[0]):
            status = errors.WSAEACCES.wsa_code
        else:
            ent[0][offset:offset + len(data)] = data
        self._send_to(reply_to, [K_WRITEACK, _rdma_rsp.pack(dst, token, status)])

    def _on_rdma_done(self, token, status, frame) -> None:
        ent = self._pending_rdma.pop(token, None)
        if ent is None:
            return
        target, ov = ent
        n = 0
        if not status and target is not None and frame is not None:
            data = frame.buffer
            n = len(data)
            target[:n] = data
        ov.cq.post(ov, status, n)
