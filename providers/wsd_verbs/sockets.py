"""Per-socket state of the verbs provider and one overlapped request with the work request
it becomes; the descriptor format of registered RDMA memory."""
from __future__ import annotations

import collections
import struct

from wsd.sanbase import SanSocketState


#: RDMA descriptor handed to the peer: magic, address, length, rkey, access (MEM_READ/MEM_WRITE)
DESCRIPTOR = struct.Struct("<4sQQII")
_MAGIC = b"WSDv"

_OP_RECV, _OP_SEND, _OP_READ, _OP_WRITE, _OP_FENCE = "recv", "send", "rdma_read", "rdma_write", "fence"


class _Op:
    """One overlapped request (or a fence) and what its work request is built from."""
    __slots__ = ("kind", "sock", "ov", "length", "temp_mr", "keep", "wr_id", "addr", "lkey", "raddr", "rkey",
                 "signaled")

    def __init__(self, kind, sock, ov, length, temp_mr=None, keep=None, wr_id=0, addr=0, lkey=0):
        self.kind = kind
        self.sock = sock
        self.ov = ov
        self.length = length
        self.temp_mr = temp_mr
        self.keep = keep
        self.wr_id = wr_id
        self.addr = addr
        self.lkey = lkey
        self.raddr = 0
        self.rkey = 0
        self.signaled = False


class _Sock(SanSocketState):
    __slots__ = ("cmid", "cm_ptr", "qp", "qp_num", "ops", "sq", "sig_pending", "unsig_run", "send_backlog",
                 "connect_deadline", "listener", "mapped_peer")

    def __init__(self, sid: int):
        super().__init__(sid)     # state: new | bound | listening | connecting | connected | resetting | reset | closed
        self.mapped_peer = None
        self.cmid = None
        self.cm_ptr = 0
        # queue holds (child CMID, child pointer, caller address)
        self.qp = None
        self.qp_num = None
        self.ops: set[int] = set()         # outstanding work-request ids
        # the send queue, in posting order (RC completes it in order): _Ops, signalled or not, and fences
        self.sq: collections.deque[_Op] = collections.deque()
        self.sig_pending = 0               # signalled work requests in sq
        self.unsig_run = 0                 # unsignalled work requests posted since the last signalled one
        self.send_backlog: collections.deque[_Op] = collections.deque()   # waiting for a send-queue slot
        self.connect_deadline = None
        self.listener = None
