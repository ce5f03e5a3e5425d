"""Sans-IO core of the switch's session protocol over one SAN connection.

It covers session negotiation (WSD-N1..N4) and data transfer (WSD-D1):
control messages built in a per-socket pool of registered send buffers,
receives into a pool of posted receive buffers, credit flow control, small
sends inline, large sends by RDMA read (or RDMA write where the peer cannot
read).  It does no I/O: the driver (``wsd.switch``) feeds it completions and
``now`` and carries out the actions it returns (defined, with the configuration,
the events and SendOp, in core/actions.py; re-exported here):

==================  =========================================================
action              driver does
==================  =========================================================
``PostRecv(i)``     ``WSPRecv`` of ``recv_buffers[i]`` (a span of ``recv_ring``);
                    completion -> :meth:`on_recv_complete`
``PostSend(i, n)``  ``WSPSend`` of ``send_buffers[i][:n]``; completion ->
                    :meth:`on_send_complete`
``RegisterRdma``    ``WSPRegisterRdmaMemory``; -> :meth:`on_rdma_registered`
                    or :meth:`on_rdma_register_failed`
``DeregisterRdma``  ``WSPDeregisterRdmaMemory``
``RdmaRead/Write``  ``WSPRdmaRead``/``WSPRdmaWrite``; -> :meth:`on_rdma_complete`
``Negotiated``      (event) the session is up
``SendDone``        (event) an application send no longer needs its buffer
``Closed``          (event) the connection ended: ``error`` 0 = orderly
``Trace``           (event) a step for diagnostics (``wsd-accept``)
==================  =========================================================

Credits: ``send_credits`` is how many messages we may still send (receive
buffers the peer has posted for us); every message carries ``credits`` = the
receive buffers we reposted since our last grant.  Messages that carry data
(DATA, RDMA_READ_ADVERT, RDMA_WRITE_REQUEST) keep one credit in reserve;
control messages (the DONEs, WRITE_ADVERT, CREDIT, DISCONNECT) may use the
last one, so the peer can always be told about finished transfers and new
credits.  A peer that sends more than it was granted is aborted
(``WSAECONNABORTED``).

Receive memory: one native ring per connection (``recv_ring``, a
:class:`wsd_ring.Ring`).  A posted receive buffer is a span *posted* in that
ring (``Ring.post(recv_size)``), so every provider delivers into the same
structure; a completion commits the span with the message's real length
(``Ring.commit_posted``: the unused rest becomes a FILL record), in posting
order.  Control messages are done with at once; a DATA message's span stays
in the ring until the application consumed it, and the ring's space is
released (``Ring.release``) in ring order once every span before it is done.
Slots (``PostRecv(i)``, ``recv_buffers[i]``) are what the credits count,
exactly as with fixed buffers: reposting slot ``i`` (posting a fresh span for
it) is what grants a credit.  If the ring has no room for a fresh span
because consumed control messages sit behind unread data, the unread data is
copied out of the ring (rare; ``stats["ring_copy_out"]``).  The ring is a
buffer, not I/O: the core stays sans-IO.
"""
from __future__ import annotations

import collections
import logging

from wsd_ring import Ring

from .. import errors
from ..spi import MEM_READ, MEM_WRITE
from .actions import (  # noqa: F401  (re-exported: the driver and tests use session.X)
    MIN_RECEIVE_SIZE, Closed, DeregisterRdma, Negotiated, PostRecv, PostSend, RdmaRead, RdmaWrite,
    RegisterRdma, Role, SendDone, SendOp, SessionConfig, State, Trace, recv_ring_capacity,
)
from .structure import MalformedStructure
from .wire import (
    MSG_CREDIT, MSG_DATA, MSG_DISCONNECT, MSG_NAMES, MSG_RDMA_READ_ADVERT, MSG_RDMA_READ_DONE,
    MSG_RDMA_WRITE_ADVERT, MSG_RDMA_WRITE_DONE, MSG_RDMA_WRITE_REQUEST, NEG_FLAG_RDMA_READ,
    NEG_FLAG_RDMA_WRITE, NEG_FLAG_RESPONSE, NEGOTIATION_MAX, ControlHeader, NegotiateMessage, RdmaAdvert,
    RdmaDone, RdmaWriteRequest,
)

log = logging.getLogger("wsd.session")

__all__ = [
    "recv_ring_capacity",
    "SessionConfig", "SessionProtocol", "Role", "State", "SendOp",
    "PostRecv", "PostSend", "RegisterRdma", "DeregisterRdma", "RdmaRead", "RdmaWrite",
    "Negotiated", "SendDone", "Closed", "Trace",
]

HEADER = ControlHeader.SIZE
_hdr_struct = ControlHeader._struct


# One span of the receive ring (a list, for speed: one per message received), in ring order:
# [slot it was posted for, length received (-1: not yet), committed to the ring, done (its space
# may be released), the _Incoming holding its DATA until consumed]
_SLOT, _LEN, _COMMITTED, _DONE, _ENTRY = range(5)


class _Incoming:
    """One entry of the receive queue, in arrival order."""

    __slots__ = ("view", "pos", "slot", "ready", "cookie", "staging", "descriptor", "deadline")

    def __init__(self, view=None, slot=-1, ready=True):
        self.view = view
        self.pos = 0
        self.slot = slot
        self.ready = ready
        self.cookie = 0
        self.staging = None
        self.descriptor = None
        self.deadline = None


class ProtocolViolation(Exception):
    def __init__(self, wsa_code: int, reason: str):
        super().__init__(reason)
        self.wsa_code = wsa_code
        self.reason = reason


class SessionProtocol:
    """The session protocol of one SAN connection; see the module docstring."""

    def __init__(self, role: Role, config: SessionConfig | None = None, *, name: str = "", recv_ring=None):
        """``recv_ring``: the connection's receive ring (an empty :class:`wsd_ring.Ring` of at
        least :func:`recv_ring_capacity` bytes; in private or shared memory); by default a
        private one (anonymous memory, no eventfds).  The provider only ever sees the spans
        posted in it (``recv_buffers[i]``)."""
        self.role = role
        self.config = config or SessionConfig()
        self.config.validate()
        self.name = name
        c = self.config
        need = recv_ring_capacity(c)
        if recv_ring is None:
            recv_ring = Ring.create(need, eventfds=False)
        elif recv_ring.capacity < need or recv_ring.used or recv_ring.posted:
            raise errors.WSAEINVAL(f"recv_ring must be empty and hold at least {need} bytes")
        #: the receive ring every posted buffer is a span of
        self.recv_ring = recv_ring
        #: one stable buffer holding every span (what a NIC registers)
        self.recv_memory = recv_ring.memory
        self._send_mem = bytearray(c.send_count * c.recv_size)
        sm = memoryview(self._send_mem)
        #: the receive buffer of each slot, as posted (``PostRecv(i)``): a span of ``recv_ring``
        self.recv_buffers: list = [None] * c.recv_count
        self._slot_span: list = [None] * c.recv_count
        self._spans: collections.deque[list] = collections.deque()     # unreleased, ring order
        self._uncommitted: collections.deque[list] = collections.deque()  # posted, posting order
        self._ring_post = recv_ring.post
        self._ring_commit = recv_ring.commit_posted
        self._ring_commit_one = recv_ring.commit_posted_one
        #: the pool of registered send buffers (``PostSend(i, n)``); peer's receive_size bounds use
        self.send_buffers = [sm[i * c.recv_size:(i + 1) * c.recv_size] for i in range(c.send_count)]
        self.state = State.IDLE
        self.error = 0
        self.close_reason = ""
        self.deadline: float | None = None
        # negotiated
        self.peer_posted = 0
        self.peer_receive_size = 0
        self.peer_flags = 0
        self.max_inline = 0
        # credits (one owner: this object)
        self.send_credits = 0       # messages we may still send
        self.owed_credits = 0       # reposted receive buffers not yet granted to the peer
        self.peer_credits = 0       # messages the peer may still send us (for overrun checks)
        # buffers
        self._free_send = collections.deque(range(c.send_count))
        self._posted = set()        # receive buffers currently posted
        # queues
        self._sends: collections.deque[SendOp] = collections.deque()   # not yet fully issued
        self._inflight: dict[int, SendOp] = {}                          # RDMA sends awaiting the peer
        self._control: collections.deque[tuple] = collections.deque()   # pending control messages
        self._credit_queued = False
        self._incoming: collections.deque[_Incoming] = collections.deque()
        self._rdma_in: dict[int, _Incoming] = {}                       # by our cookie for reads
        self._write_in: dict[int, _Incoming] = {}                      # by the peer's cookie
        self._next_cookie = 1
        self._lent_span = None      # the span a recv_view lent out of: not released before the next call
        self._loan_done = False     # ...and it held nothing else (done once the loan ends)
        self._deferred: collections.deque = collections.deque()   # (slot, grant) waiting for ring room
        self._stash: list = []
        self.peer_eof = False
        self.local_closed = False
        self.disconnect_sent = False
        self.first_data_seen = False
        self.stats = collections.Counter()
        self._trace_out: list = []

    # ------------------------------------------------------------------ helpers
    def _cookie(self) -> int:
        c = self._next_cookie
        self._next_cookie = (c + 1) & 0xFFFFFFFF or 1
        return c

    @property
    def readable(self) -> bool:
        """True if :meth:`recv_into` would return without waiting (data, EOF or an error)."""
        q = self._incoming
        if q:
            return q[0].ready or (self.state is State.CLOSED and bool(self.error))
        return self.peer_eof or self.state is State.CLOSED

    @property
    def connected(self) -> bool:
        return self.state is State.CONNECTED

    def next_deadline(self) -> float | None:
        ds = [d for d in (self.deadline,) if d is not None]
        ds += [op.deadline for op in self._inflight.values() if op.deadline is not None]
        ds += [e.deadline for e in self._rdma_in.values() if e.deadline is not None]
        return min(ds) if ds else None

    # ------------------------------------------------------------------ start
    def start(self, now: float) -> list:
        """Post the receive buffers; the connector also sends its negotiation message (WSD-N1)."""
        if self.state is not State.IDLE:
            raise errors.WSAEINVAL("session already started")
        self.state = State.NEGOTIATING
        self.deadline = now + self.config.negotiation_timeout
        out: list = []
        for i in range(self.config.recv_count):
            self._post_span(i)      # (always fits: the ring holds every slot, recv_ring_capacity)
            self._posted.add(i)
            out.append(PostRecv(i))
        if self.role is Role.CONNECTOR:
            out.append(self._negotiation_message(now, response=False))
            out.extend(self._trace_out)
            self._trace_out.clear()
        return out

    def _flags(self) -> int:
        f = 0
        if self.config.can_rdma_read:
            f |= NEG_FLAG_RDMA_READ
        if self.config.can_rdma_write:
            f |= NEG_FLAG_RDMA_WRITE
        return f

    def _negotiation_message(self, now: float, response: bool):
        msg = NegotiateMessage(flags=self._flags() | (NEG_FLAG_RESPONSE if response else 0),
                               posted_receives=self.config.recv_count, receive_size=self.config.recv_size)
        i = self._free_send.popleft()
        n = msg.pack_into(self.send_buffers[i], 0)
        self._trace_out.append(Trace("negotiation_out", {
            "bytes": n, "posted_receives": msg.posted_receives, "receive_size": msg.receive_size,
            "response": response}))
        return PostSend(i, n, 0)

    # ------------------------------------------------------------------ completions
    def _finish(self, out: list) -> list:
        if self._stash:
            out[:0] = self._stash          # actions of a receive that then said WSAEWOULDBLOCK
            self._stash = []
        if self._trace_out:
            out[:0] = self._trace_out      # steps first, in the order they happened
            self._trace_out.clear()
        return out

    def take_actions(self) -> list:
        """Actions left by a ``recv_into``/``recv_view`` that raised (ending a loan reposts
        slots, which must reach the provider now): the driver runs them on WSAEWOULDBLOCK.
        Any later call returns them too, so none is lost."""
        out, self._stash = self._stash, []
        return out

    def _stash_actions(self, out: list, now: float) -> None:
        if out:
            if self.state is State.CONNECTED:
                self._pump(now, out)
            self._stash.extend(out)

    def on_recv_complete(self, index: int, nbytes: int, now: float) -> list:
        """A posted receive buffer got a message of ``nbytes``."""
        out: list = []
        if self.state is State.CLOSED:
            return out
        self._posted.discard(index)
        sp = self._slot_span[index]
        uc = self._uncommitted
        if uc and uc[0] is sp and (len(uc) == 1 or uc[1][_LEN] < 0):     # in order: commit it alone
            uc.popleft()
            sp[_LEN] = nbytes
            sp[_COMMITTED] = True
            self._ring_commit_one(nbytes)
        else:
            self._commit_span(index, nbytes)
        buf = self.recv_buffers[index]
        try:
            if self.state is State.NEGOTIATING:
                self._on_negotiation(index, buf, nbytes, now, out)
            else:
                self._on_message(index, buf, nbytes, now, out)
            if self._deferred:
                self._flush_deferred(out)
            self._pump(now, out)
        except ProtocolViolation as v:
            self._abort(v.wsa_code, v.reason, out)
        return self._finish(out)

    def on_recv_failed(self, index: int, error: int, now: float) -> list:
        self._posted.discard(index)
        sp = self._slot_span[index]
        if sp is not None and sp[_LEN] < 0:
            self._commit_span(index, 0)
            sp[_DONE] = True
        if self.peer_eof:       # receives flushed after the peer's DISCONNECT: the orderly end
            return self.on_transport_closed(error, now)
        out: list = []
        if self.state is not State.CLOSED:
            reason = "peer vanished" if self.state is State.NEGOTIATING else "receive failed"
            self._abort(error or errors.WSAECONNRESET.wsa_code, f"{reason} ({errors.code_name(error)})", out)
        return self._finish(out)

    def on_send_complete(self, index: int, now: float) -> list:
        self._free_send.append(index)
        out: list = []
        if self.state is State.CONNECTED:
            self._pump(now, out)
        return self._finish(out)

    def on_send_failed(self, index: int, error: int, now: float) -> list:
        self._free_send.append(index)
        out: list = []
        if self.state is not State.CLOSED:
            self._abort(error or errors.WSAECONNRESET.wsa_code, f"send failed ({errors.code_name(error)})", out)
        return self._finish(out)

    def on_peer_reset(self, error: int, now: float, reason: str = "peer reset the connection") -> list:
        out: list = []
        if self.state is not State.CLOSED:
            if self.state is State.NEGOTIATING:
                reason = "peer vanished during negotiation"
            self._abort(error or errors.WSAECONNRESET.wsa_code, reason, out)
        return self._finish(out)

    def on_transport_closed(self, error: int, now: float) -> list:
        """The provider says the connection is gone (``FD_CLOSE``).

        After the peer's DISCONNECT this is the orderly end; otherwise an abort
        (``WSAECONNRESET`` unless the provider gave another code).
        """
        out: list = []
        if self.state is State.CLOSED:
            return out
        if self.peer_eof and not self._inflight and not self._rdma_in:
            self.state = State.CLOSED
            self.close_reason = "closed by peer"
            out.append(Closed(0, self.close_reason))
            return self._finish(out)
        return self.on_peer_reset(error or errors.WSAECONNRESET.wsa_code, now)

    def on_timer(self, now: float) -> list:
        out: list = []
        if self.state is State.NEGOTIATING and self.deadline is not None and now >= self.deadline:
            self._abort(errors.WSAETIMEDOUT.wsa_code, "session negotiation did not complete in time", out)
        elif self.state is State.CONNECTED:
            late = [op for op in self._inflight.values() if op.deadline is not None and now >= op.deadline]
            late += [e for e in self._rdma_in.values() if e.deadline is not None and now >= e.deadline]
            if late:
                self._abort(errors.WSAETIMEDOUT.wsa_code, "RDMA transfer did not complete in time", out)
        return self._finish(out)

    # ------------------------------------------------------------------ negotiation
    def _on_negotiation(self, index: int, buf: memoryview, nbytes: int, now: float, out: list) -> None:
        if nbytes > NEGOTIATION_MAX:
            raise ProtocolViolation(errors.WSAEMSGSIZE.wsa_code,
                                    f"negotiation message of {nbytes} bytes exceeds {NEGOTIATION_MAX}")
        try:
            msg = NegotiateMessage.unpack(buf[:nbytes])
        except MalformedStructure as e:
            raise ProtocolViolation(errors.WSAECONNABORTED.wsa_code, f"bad negotiation message: {e}") from None
        is_response = bool(msg.flags & NEG_FLAG_RESPONSE)
        if is_response != (self.role is Role.CONNECTOR):
            raise ProtocolViolation(errors.WSAECONNABORTED.wsa_code, "negotiation message of the wrong direction")
        if msg.posted_receives < 2 or msg.receive_size < max(MIN_RECEIVE_SIZE, NEGOTIATION_MAX):
            raise ProtocolViolation(errors.WSAECONNABORTED.wsa_code,
                                    f"peer posted {msg.posted_receives} x {msg.receive_size} B: too few/small")
        self._trace_out.append(Trace("negotiation_in", {
            "bytes": nbytes, "posted_receives": msg.posted_receives, "receive_size": msg.receive_size,
            "response": is_response}))
        self.peer_posted = msg.posted_receives
        self.peer_receive_size = msg.receive_size
        self.peer_flags = msg.flags
        self.max_inline = min(msg.receive_size, self.config.recv_size) - HEADER
        # the buffer the negotiation message used is reposted and counted in what we advertise
        self._repost(index, out, grant=False)
        self.peer_credits = self.config.recv_count
        if self.role is Role.ACCEPTOR:
            # WSD-N4: our receives are posted (start()) before we answer; the answer lands in one
            # of the connector's buffers, which it will grant back.
            out.append(self._negotiation_message(now, response=True))
            self.send_credits = msg.posted_receives - 1
        else:
            self.send_credits = msg.posted_receives
            self.owed_credits = 1   # the buffer the answer used
        self.state = State.CONNECTED
        self.deadline = None
        out.append(Negotiated(msg.posted_receives, msg.receive_size, msg.flags))

    # ------------------------------------------------------------------ messages
    def _on_message(self, index: int, buf: memoryview, nbytes: int, now: float, out: list) -> None:
        if nbytes < HEADER:
            raise ProtocolViolation(errors.WSAECONNABORTED.wsa_code, f"truncated control message ({nbytes} bytes)")
        mtype, flags, credits, length = _hdr_struct.unpack_from(buf, 0)
        if flags:
            raise ProtocolViolation(errors.WSAECONNABORTED.wsa_code, "reserved header flags set")
        if length != nbytes - HEADER:
            raise ProtocolViolation(errors.WSAECONNABORTED.wsa_code,
                                    f"control message length {length} != {nbytes - HEADER} received")
        self.peer_credits -= 1
        if self.peer_credits - self.owed_credits < 0:
            raise ProtocolViolation(errors.WSAECONNABORTED.wsa_code, "credit overrun: peer sent more than granted")
        if credits:
            self.send_credits += credits
            if self.send_credits > self.peer_posted:
                raise ProtocolViolation(errors.WSAECONNABORTED.wsa_code,
                                        f"peer granted {self.send_credits} credits but posted {self.peer_posted}")
        self.stats["msgs_in"] += 1
        payload = buf[HEADER:nbytes]
        if mtype == MSG_DATA:
            if self.peer_eof:
                raise ProtocolViolation(errors.WSAECONNABORTED.wsa_code, "data after DISCONNECT")
            if length == 0:
                self._repost(index, out)
                return
            e = _Incoming(payload, index, True)
            self._slot_span[index][_ENTRY] = e
            self._incoming.append(e)
            self._note_first_data(length, "inline")
        elif mtype == MSG_RDMA_READ_ADVERT:
            adv, desc = self._parse_advert(payload)
            self._repost(index, out)
            if not self.config.can_rdma_read:
                raise ProtocolViolation(errors.WSAECONNABORTED.wsa_code, "RDMA read advertised but we cannot read")
            staging = memoryview(bytearray(adv.length))
            e = _Incoming(None, -1, False)
            e.cookie = self._cookie()
            e.staging = staging
            e.descriptor = adv.cookie  # the peer's cookie, echoed in READ_DONE
            e.deadline = now + self.config.rdma_timeout
            self._rdma_in[e.cookie] = e
            self._incoming.append(e)
            out.append(RdmaRead(e.cookie, staging, desc))
        elif mtype == MSG_RDMA_WRITE_REQUEST:
            try:
                req = RdmaWriteRequest.unpack(payload)
            except MalformedStructure as e:
                raise ProtocolViolation(errors.WSAECONNABORTED.wsa_code, f"bad RDMA_WRITE_REQUEST: {e}") from None
            self._check_length(req.length, len(payload), RdmaWriteRequest.SIZE)
            self._repost(index, out)
            staging = memoryview(bytearray(req.length))
            e = _Incoming(None, -1, False)
            e.cookie = self._cookie()
            e.staging = staging
            e.deadline = now + self.config.rdma_timeout
            self._write_in[req.cookie] = e
            self._rdma_in[e.cookie] = e
            self._incoming.append(e)
            e.descriptor = req.cookie
            out.append(RegisterRdma(e.cookie, staging, MEM_WRITE))
        elif mtype == MSG_RDMA_WRITE_ADVERT:
            adv, desc = self._parse_advert(payload)
            self._repost(index, out)
            op = self._inflight.get(adv.cookie)
            if op is None or op.mode != "rdma_write" or op.state != "requested" or adv.length != len(op):
                raise ProtocolViolation(errors.WSAECONNABORTED.wsa_code, "RDMA_WRITE_ADVERT for no pending write")
            op.state = "writing"
            out.append(RdmaWrite(op.cookie, op.data, desc))
        elif mtype in (MSG_RDMA_READ_DONE, MSG_RDMA_WRITE_DONE):
            try:
                done = RdmaDone.unpack(payload)
            except MalformedStructure as e:
                raise ProtocolViolation(errors.WSAECONNABORTED.wsa_code, f"bad {MSG_NAMES[mtype]}: {e}") from None
            self._repost(index, out)
            if mtype == MSG_RDMA_READ_DONE:
                op = self._inflight.pop(done.cookie, None)
                if op is None or op.mode != "rdma_read":
                    raise ProtocolViolation(errors.WSAECONNABORTED.wsa_code, "RDMA_READ_DONE for no pending read")
                if op.descriptor is not None:
                    out.append(DeregisterRdma(op.descriptor))
                self._complete_op(op, done.status, out)
            else:
                e = self._write_in.pop(done.cookie, None)
                if e is None or done.length != len(e.staging):
                    raise ProtocolViolation(errors.WSAECONNABORTED.wsa_code, "RDMA_WRITE_DONE for no pending write")
                self._rdma_in.pop(e.cookie, None)
                if e.descriptor is not None and isinstance(e.descriptor, bytes):
                    out.append(DeregisterRdma(e.descriptor))
                if done.status:
                    raise ProtocolViolation(done.status, "peer's RDMA write failed")
                e.view, e.ready, e.deadline = e.staging, True, None
                self._note_first_data(done.length, "rdma_write")
        elif mtype == MSG_CREDIT:
            if length:
                raise ProtocolViolation(errors.WSAECONNABORTED.wsa_code, "CREDIT with a payload")
            self._repost(index, out)
        elif mtype == MSG_DISCONNECT:
            self._repost(index, out, grant=False)
            self.peer_eof = True
            self._trace_out.append(Trace("peer_disconnect", {}))
        else:
            raise ProtocolViolation(errors.WSAECONNABORTED.wsa_code, f"unknown control message type {mtype}")

    def _check_length(self, length: int, got: int, need: int) -> None:
        if got != need:
            raise ProtocolViolation(errors.WSAECONNABORTED.wsa_code, "control payload of the wrong size")
        if length == 0 or length > self.config.max_rdma_length:
            raise ProtocolViolation(errors.WSAECONNABORTED.wsa_code, f"RDMA length {length} out of range")

    def _parse_advert(self, payload: memoryview):
        try:
            adv = RdmaAdvert.unpack(payload)
        except MalformedStructure as e:
            raise ProtocolViolation(errors.WSAECONNABORTED.wsa_code, f"bad RDMA advert: {e}") from None
        self._check_length(adv.length, len(payload), RdmaAdvert.SIZE + adv.descriptor_length)
        return adv, bytes(payload[RdmaAdvert.SIZE:])

    def _note_first_data(self, length: int, how: str) -> None:
        self.stats["bytes_in"] += length
        if not self.first_data_seen:
            self.first_data_seen = True
            self._trace_out.append(Trace("first_data", {"bytes": length, "via": how}))

    # ------------------------------------------------------------------ the receive ring
    def _post_span(self, slot: int) -> bool:
        """Post a fresh span of the ring as slot's receive buffer; False if the ring has no room:
        only while a span lent by recv_view (or one posted before a receive that completed out
        of posting order) keeps the spans behind it from being released."""
        size = self.config.recv_size
        v = self._ring_post(size)
        if v is None:
            self._reclaim(False)
            v = self._ring_post(size)
            if v is None:
                self._reclaim(True)
                v = self._ring_post(size)
                if v is None:
                    return False
        sp = [slot, -1, False, False, None]
        self._spans.append(sp)
        self._uncommitted.append(sp)
        self._slot_span[slot] = sp
        self.recv_buffers[slot] = v
        return True

    def _commit_span(self, slot: int, nbytes: int) -> None:
        """Slot's span received nbytes: commit every completed span at the front, in order."""
        sp = self._slot_span[slot]
        if sp is None or sp[_LEN] >= 0:
            return
        sp[_LEN] = nbytes
        uc = self._uncommitted
        if uc[0] is sp and (len(uc) == 1 or uc[1][_LEN] < 0):
            uc.popleft()
            sp[_COMMITTED] = True
            self._ring_commit((nbytes,))
            return
        lens = []           # out-of-order completion: commit the completed prefix
        while uc and uc[0][_LEN] >= 0:
            s0 = uc.popleft()
            s0[_COMMITTED] = True
            lens.append(s0[_LEN])
        if lens:
            self._ring_commit(lens)

    def _reclaim(self, copy_out: bool) -> None:
        """Release the ring's space of the done spans at its front.  With ``copy_out``,
        unread DATA in front of posted spans is first copied out of the ring, so that
        consumed control messages behind it can be released too."""
        spans = self._spans
        k = 0
        for sp in spans:
            if not sp[_COMMITTED] or sp is self._lent_span:
                break
            if not sp[_DONE]:
                if not copy_out:
                    break
                e = sp[_ENTRY]
                if e is not None:
                    e.view = memoryview(bytes(e.view))
                    sp[_ENTRY] = None
                    self.stats["ring_copy_out"] += 1
                sp[_DONE] = True
                if self._slot_span[sp[_SLOT]] is sp:
                    self._slot_span[sp[_SLOT]] = None
            k += 1
        if k:
            self.recv_ring.release(k)
            for _ in range(k):
                spans.popleft()

    def close_ring(self) -> None:
        """The connection is gone: unmap the receive ring (views still alive keep it mapped)."""
        self.recv_buffers = [None] * self.config.recv_count
        self.recv_memory = None
        self.recv_ring.close()

    def _repost(self, index: int, out: list, grant: bool = True, keep: bool = False) -> None:
        """Post a fresh span for slot ``index`` (granting a credit unless ``grant`` is False);
        its old span is done (its space may be released) unless ``keep``: lent by recv_view."""
        sp = self._slot_span[index]
        if sp is not None:
            sp[_DONE] = not keep
            sp[_ENTRY] = None
        if self.state is State.CLOSED:
            return
        v = self._ring_post(self.config.recv_size)
        if v is None:
            if self._deferred or not self._post_span(index):
                # no room until the application's next receive ends a loan (or a receive completed
                # out of posting order is done): the slot is posted, and its credit granted, then
                self._deferred.append((index, grant))
                self.stats["repost_deferred"] += 1
                return
        else:
            sp = [index, -1, False, False, None]
            self._spans.append(sp)
            self._uncommitted.append(sp)
            self._slot_span[index] = sp
            self.recv_buffers[index] = v
        self._slot_posted(index, out, grant)

    def _flush_deferred(self, out: list) -> None:
        d = self._deferred
        while d and self.state is not State.CLOSED:
            index, grant = d[0]
            if not self._post_span(index):
                break
            d.popleft()
            self._slot_posted(index, out, grant)

    def _slot_posted(self, index: int, out: list, grant: bool) -> None:
        self._posted.add(index)
        out.append(PostRecv(index))
        if grant:
            self.owed_credits += 1
            self.peer_credits += 1
            # grant promptly if the peer is (nearly) out of credits or we owe many
            if not self._credit_queued and (self.peer_credits - self.owed_credits <= 1
                                            or self.owed_credits >= max(1, self.config.recv_count // 2)):
                self._credit_queued = True
                self._control.append((MSG_CREDIT, b""))

    # ------------------------------------------------------------------ RDMA completions
    def on_rdma_registered(self, cookie: int, descriptor: bytes, now: float) -> list:
        out: list = []
        op = self._inflight.get(cookie)
        if op is not None and op.state == "registering":
            op.descriptor = descriptor
            op.state = "registered"
        else:
            e = self._rdma_in.get(cookie)
            if e is None or e.ready:
                out.append(DeregisterRdma(descriptor))
                return self._finish(out)
            # receiver side of an RDMA write: advertise our buffer
            e.slot = -2
            peer_cookie = e.descriptor
            e.descriptor = descriptor
            adv = RdmaAdvert(cookie=peer_cookie, descriptor_length=len(descriptor), length=len(e.staging))
            self._control.append((MSG_RDMA_WRITE_ADVERT, adv.pack() + descriptor))
        self._pump(now, out)
        return self._finish(out)

    def on_rdma_register_failed(self, cookie: int, error: int, now: float) -> list:
        """``WSPRegisterRdmaMemory`` failed: the send fails with that error (``WSAENOBUFS``)."""
        out: list = []
        op = self._inflight.pop(cookie, None)
        if op is not None:
            if self._sends and self._sends[0] is op:
                self._sends.popleft()
            self._complete_op(op, error or errors.WSAENOBUFS.wsa_code, out)
            self._pump(now, out)
        elif cookie in self._rdma_in:
            self._abort(error or errors.WSAENOBUFS.wsa_code, "cannot register memory for an RDMA write", out)
        return self._finish(out)

    def on_rdma_complete(self, cookie: int, error: int, now: float) -> list:
        out: list = []
        e = self._rdma_in.get(cookie)
        if e is not None and not e.ready and e.slot == -1:      # our RDMA read of the peer's data
            del self._rdma_in[cookie]
            if error:
                self._abort(error, f"RDMA read failed ({errors.code_name(error)})", out)
                return self._finish(out)
            e.view, e.ready, e.deadline = e.staging, True, None
            self._note_first_data(len(e.staging), "rdma_read")
            done = RdmaDone(cookie=e.descriptor, status=0, length=len(e.staging))
            self._control.append((MSG_RDMA_READ_DONE, done.pack()))
        else:
            op = self._inflight.get(cookie)
            if op is None or op.state != "writing":
                return self._finish(out)
            del self._inflight[cookie]
            if error:
                self._complete_op(op, error, out)
                self._abort(error, f"RDMA write failed ({errors.code_name(error)})", out)
                return self._finish(out)
            done = RdmaDone(cookie=cookie, status=0, length=len(op))
            self._control.append((MSG_RDMA_WRITE_DONE, done.pack()))
            self._complete_op(op, 0, out)
        self._pump(now, out)
        return self._finish(out)

    # ------------------------------------------------------------------ application side
    def send(self, data, now: float) -> tuple[SendOp, list]:
        """Queue an application send; the op is ``done`` when its buffer is no longer needed."""
        if self.state is State.CLOSED:
            raise errors.from_code(self.error or errors.WSAENOTCONN.wsa_code, self.close_reason or None)
        if self.local_closed:
            raise errors.WSAESHUTDOWN("send after close")
        view = memoryview(data).cast("B") if not isinstance(data, memoryview) else data.cast("B")
        mode = "inline"
        if len(view) >= self.config.rdma_threshold and self.state is State.CONNECTED:
            if self.peer_flags & NEG_FLAG_RDMA_READ:
                mode = "rdma_read"
            elif self.config.can_rdma_write:
                mode = "rdma_write"
        op = SendOp(view, mode)
        if mode != "inline":
            op.cookie = self._cookie()
            if len(view) < self.config.zcopy_threshold:
                op.data = memoryview(bytearray(view))     # bounce copy: the caller's buffer is free now
                op.bounced = True
        out: list = []
        if len(view) == 0:
            op.done = True
            return op, out
        self._sends.append(op)
        if self.state is State.CONNECTED:
            self._pump(now, out)
        return op, self._finish(out)

    def recv_into(self, target, now: float) -> tuple[int, list]:
        """Copy queued data into ``target``; returns (count, actions). 0 means end of stream.

        Raises the connection's error if it was aborted and no data is left.
        """
        out: list = []
        if self._lent_span is not None:
            self._end_loan()
        if self._deferred:
            self._flush_deferred(out)
        tv = memoryview(target).cast("B")
        want = len(tv)
        n = 0
        q = self._incoming
        while n < want and q and q[0].ready:
            e = q[0]
            avail = len(e.view) - e.pos
            take = min(avail, want - n)
            tv[n:n + take] = e.view[e.pos:e.pos + take]
            n += take
            e.pos += take
            if e.pos == len(e.view):
                q.popleft()
                if e.slot >= 0:
                    self._repost(e.slot, out)
        if n == 0 and want:
            try:
                self._nothing_ready()
            except errors.WsaError:
                self._stash_actions(out, now)
                raise
        self.stats["bytes_read"] += n
        if out and self.state is State.CONNECTED:
            self._pump(now, out)
        return n, self._finish(out)

    def _nothing_ready(self) -> None:
        """No data is ready: WSAEWOULDBLOCK, the connection's error, or (returning) end of stream."""
        if self._incoming:   # the next data is an RDMA transfer still under way: never EOF before it
            if self.state is State.CLOSED and self.error:
                raise errors.from_code(self.error, self.close_reason)
            raise errors.WSAEWOULDBLOCK()
        if self.state is State.CLOSED and self.error and not self.peer_eof:
            raise errors.from_code(self.error, self.close_reason)
        if not (self.peer_eof or self.state is State.CLOSED):
            raise errors.WSAEWOULDBLOCK()

    def _end_loan(self) -> None:
        if self._loan_done:             # the loan ended the span's data: its space may go now
            self._lent_span[_DONE] = True
        self._lent_span = None

    def recv_view(self, nbytes: int, now: float) -> tuple[memoryview, list]:
        """Zero copy: a read-only view of up to ``nbytes`` of the next received data (inside the
        receive ring for inline data), consumed at once (its slot is reposted with a fresh span)
        but its memory kept until the next ``recv_view``/``recv_into``.  An empty view means end
        of stream; raises like :meth:`recv_into`."""
        out: list = []
        if self._lent_span is not None:
            self._end_loan()
        if self._deferred:
            self._flush_deferred(out)
        q = self._incoming
        if q and q[0].ready and nbytes > 0:
            e = q[0]
            take = min(len(e.view) - e.pos, nbytes)
            view = e.view[e.pos:e.pos + take].toreadonly()
            e.pos += take
            self.stats["bytes_read"] += take
            if e.slot >= 0:
                # the span stays put (never released nor copied out) until the next receive call
                self._lent_span = self._slot_span[e.slot]
                self._loan_done = e.pos == len(e.view)
            if e.pos == len(e.view):
                q.popleft()
                if e.slot >= 0:
                    self._repost(e.slot, out, keep=True)
        else:
            if nbytes > 0:
                try:
                    self._nothing_ready()
                except errors.WsaError:
                    self._stash_actions(out, now)
                    raise
            view = memoryview(b"")
        if out and self.state is State.CONNECTED:
            self._pump(now, out)
        return view, self._finish(out)

    def close(self, now: float) -> list:
        """Orderly close: a DISCONNECT goes after every queued send."""
        out: list = []
        if self.local_closed or self.state is State.CLOSED:
            return out
        self.local_closed = True
        if self.state is State.CONNECTED:
            self._pump(now, out)
        else:
            self.state = State.CLOSED
            self.close_reason = "closed before negotiation completed"
            out.append(Closed(errors.WSAECONNABORTED.wsa_code, self.close_reason))
        return self._finish(out)

    @property
    def close_done(self) -> bool:
        """True once nothing more needs to go out (DISCONNECT sent, or the connection is dead)."""
        return self.state is State.CLOSED or (self.disconnect_sent and len(self._free_send) == self.config.send_count
                                              and not self._inflight)

    # ------------------------------------------------------------------ sending
    def _can_send(self, control: bool) -> bool:
        if not self._free_send:
            return False
        if control:
            return self.send_credits >= 1
        return self.send_credits >= 2

    def _emit(self, mtype: int, payload, out: list) -> None:
        i = self._free_send.popleft()
        buf = self.send_buffers[i]
        plen = len(payload)
        grant = min(self.owed_credits, 0xFFFF)
        self.owed_credits -= grant
        _hdr_struct.pack_into(buf, 0, mtype, 0, grant, plen)
        if plen:
            buf[HEADER:HEADER + plen] = payload
        self.send_credits -= 1
        self.stats["msgs_out"] += 1
        out.append(PostSend(i, HEADER + plen, mtype))

    def _pump(self, now: float, out: list) -> None:
        """Send whatever credits and send buffers allow: control messages first, then data in order."""
        if self.state is not State.CONNECTED:
            return
        ctl = self._control
        while ctl and self._can_send(control=True):
            mtype, payload = ctl.popleft()
            if mtype == MSG_CREDIT:
                self._credit_queued = False
                if self.owed_credits == 0:
                    continue
            self._emit(mtype, payload, out)
        sends = self._sends
        while sends:
            op = sends[0]
            if op.mode == "inline":
                data, mi = op.data, self.max_inline
                while op.offset < len(data) and self._can_send(control=False):
                    chunk = data[op.offset:op.offset + mi]
                    self._emit(MSG_DATA, chunk, out)
                    op.offset += len(chunk)
                if op.offset < len(data):
                    break
                sends.popleft()
                self._complete_op(op, 0, out)
            elif op.mode == "rdma_read":
                if op.state == "new":
                    op.state = "registering"
                    self._inflight[op.cookie] = op
                    out.append(RegisterRdma(op.cookie, op.data, MEM_READ))
                    break
                if op.state == "registering" or not self._can_send(control=False):
                    break
                adv = RdmaAdvert(cookie=op.cookie, descriptor_length=len(op.descriptor), length=len(op))
                self._emit(MSG_RDMA_READ_ADVERT, adv.pack() + op.descriptor, out)
                op.state = "advertised"
                op.deadline = now + self.config.rdma_timeout
                sends.popleft()
                if op.bounced:
                    self._complete_op(op, 0, out)
            else:  # rdma_write
                if not self._can_send(control=False):
                    break
                req = RdmaWriteRequest(cookie=op.cookie, length=len(op))
                self._emit(MSG_RDMA_WRITE_REQUEST, req.pack(), out)
                op.state = "requested"
                op.deadline = now + self.config.rdma_timeout
                self._inflight[op.cookie] = op
                sends.popleft()
                if op.bounced:
                    self._complete_op(op, 0, out)
        if (self.local_closed and not self.disconnect_sent and not sends and not ctl
                and self._can_send(control=True)):
            self._emit(MSG_DISCONNECT, b"", out)
            self.disconnect_sent = True

    def _complete_op(self, op: SendOp, error: int, out: list) -> None:
        # (deadlines matter only while an op is in _inflight; leaving it is what ends them)
        if op.done:          # a bounced send was completed for the application already
            return
        op.done = True
        op.error = error
        out.append(SendDone(op))

    # ------------------------------------------------------------------ abort
    def _abort(self, code: int, reason: str, out: list) -> None:
        if self.state is State.CLOSED:
            return
        log.warning("session %s aborted: %s (%s)", self.name or self.role.value, reason, errors.code_name(code))
        self.state = State.CLOSED
        self.error = code
        self.close_reason = reason
        self.deadline = None
        for op in list(self._sends) + list(self._inflight.values()):
            self._complete_op(op, code, out)
            if op.descriptor is not None:
                out.append(DeregisterRdma(op.descriptor))
                op.descriptor = None
        self._sends.clear()
        self._inflight.clear()
        for e in self._rdma_in.values():
            if isinstance(e.descriptor, bytes):
                out.append(DeregisterRdma(e.descriptor))
        self._rdma_in.clear()
        # keep the ready data already received (never lost); drop unfinished transfers
        self._incoming = collections.deque(e for e in self._incoming if e.ready)
        out.append(Closed(code, reason))
