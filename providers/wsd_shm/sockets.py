"""Per-socket state of the shm provider (a listening, connecting or connected socket) and
a connection request waiting for WSPAccept."""
from __future__ import annotations

import collections
import logging

from wsd.sanbase import SanSocketState

log = logging.getLogger("wsd.shm")


def recv_control(sock, what: str) -> bytes | None:
    """A short message on a connection's Unix control socket (non-blocking): None when
    nothing is there yet, b"" at its end or on an error (logged with *what*)."""
    try:
        return sock.recv(256)
    except (BlockingIOError, InterruptedError):
        return None
    except OSError as e:
        log.info("shm: %s: %s", what, e)
        return b""


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
