"""A two-sided harness for the sans-IO session core: no sockets, no threads.

It plays the NIC between two :class:`SessionProtocol` objects: a PostSend is
delivered into one of the peer's posted receive buffers (or held privately
when none is posted, as a NIC without flow control would), RDMA registrations
are a dict, RDMA read/write are memory copies.  Tests reach in to drop,
reorder or forge messages.
"""
from __future__ import annotations

import collections

from wsd.core import session as S


class Side:
    def __init__(self, proto: S.SessionProtocol):
        self.p = proto
        self.posted = collections.deque()   # receive buffer indices in posting order
        self.private = collections.deque()  # messages held because no receive was posted (WSD-N2)
        self.events = []
        self.sent = []                      # (mtype, bytes) for inspection
        self.regs = {}
        self.reg_fail = False


class Pair:
    def __init__(self, cfg_c=None, cfg_a=None, now=0.0):
        self.now = now
        self.c = Side(S.SessionProtocol(S.Role.CONNECTOR, cfg_c or S.SessionConfig(), name="c"))
        self.a = Side(S.SessionProtocol(S.Role.ACCEPTOR, cfg_a or S.SessionConfig(), name="a"))
        self.wire = collections.deque()     # (dst Side, bytes)
        self.rdma = collections.deque()     # pending RDMA ops to run
        self.next_desc = 1
        self.drop_next = 0

    def other(self, side):
        return self.a if side is self.c else self.c

    def apply(self, side: Side, actions):
        for act in actions:
            if isinstance(act, S.PostRecv):
                side.posted.append(act.index)
                if side.private:          # copy private buffers 1:1 in order (WSD-N2)
                    self.deliver(side, side.private.popleft())
            elif isinstance(act, S.PostSend):
                data = bytes(side.p.send_buffers[act.index][:act.length])
                side.sent.append((act.kind, data))
                if self.drop_next:
                    self.drop_next -= 1
                else:
                    self.wire.append((self.other(side), data))
                self.apply(side, side.p.on_send_complete(act.index, self.now))
            elif isinstance(act, S.RegisterRdma):
                if side.reg_fail:
                    self.apply(side, side.p.on_rdma_register_failed(act.cookie, 10055, self.now))
                else:
                    d = self.next_desc.to_bytes(8, "little")
                    self.next_desc += 1
                    side.regs[d] = act.view
                    self.apply(side, side.p.on_rdma_registered(act.cookie, d, self.now))
            elif isinstance(act, S.DeregisterRdma):
                side.regs.pop(act.descriptor)
            elif isinstance(act, S.RdmaRead):
                self.rdma.append(("read", side, act))
            elif isinstance(act, S.RdmaWrite):
                self.rdma.append(("write", side, act))
            else:
                side.events.append(act)

    def deliver(self, side: Side, data: bytes):
        if not side.posted:
            side.private.append(data)
            return
        i = side.posted.popleft()
        side.p.recv_buffers[i][:len(data)] = data
        self.apply(side, side.p.on_recv_complete(i, len(data), self.now))

    def run(self, limit=100000):
        n = 0
        while (self.wire or self.rdma) and n < limit:
            n += 1
            if self.wire:
                dst, data = self.wire.popleft()
                self.deliver(dst, data)
            else:
                kind, side, act = self.rdma.popleft()
                peer = self.other(side)
                if kind == "read":
                    src = peer.regs[act.descriptor]
                    act.target[:] = src
                else:
                    dst = peer.regs[act.descriptor]
                    dst[:] = act.source
                self.apply(side, side.p.on_rdma_complete(act.cookie, 0, self.now))
        assert n < limit, "harness did not settle"

    def start(self, accept_posts_late=False):
        if accept_posts_late:
            self.apply(self.c, self.c.p.start(self.now))
            self.run()                        # NEG arrives before the acceptor posted: held privately
            self.apply(self.a, self.a.p.start(self.now))
        else:
            self.apply(self.a, self.a.p.start(self.now))
            self.apply(self.c, self.c.p.start(self.now))
        self.run()

    def read_all(self, side: Side, bufsize=1 << 20):
        out = bytearray()
        buf = bytearray(bufsize)
        while side.p.readable:
            try:
                n, acts = side.p.recv_into(buf, self.now)
            except BlockingIOError:
                break
            self.apply(side, acts)
            if n == 0:
                break
            out += buf[:n]
            self.run()
        return bytes(out)

    def send(self, side: Side, data):
        op, acts = side.p.send(data, self.now)
        self.apply(side, acts)
        self.run()
        return op
