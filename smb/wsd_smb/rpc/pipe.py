"""A DCE/RPC connection-oriented server association over an SMB named pipe, sans-IO.

:class:`RpcPipe` is a :class:`~wsd_smb.core.files.PipeEndpoint`: the SMB layer hands it
the bytes a client WRITEs (or sends in FSCTL_PIPE_TRANSCEIVE) and READs back what it
queued.  Inside, C706 chapter 12 with the MS-RPCE 3.3.1.5 extensions:

* framing: PDUs are cut out of the byte stream by frag_length (a PDU may span writes);
  a stream that cannot be framed (rpc_vers != 5, frag_length < 16) is dropped with a
  fault nca_s_proto_error;
* bind / alter_context: presentation-context negotiation per p_cont_elem (NDR 2.0 is the
  only transfer syntax; unknown interface -> provider_rejection /
  abstract_syntax_not_supported; no NDR20 -> proposed_transfer_syntaxes_not_supported;
  the bind time feature negotiation element -> negotiate_ack, MS-RPCE 3.3.1.5.3);
  fragment sizes (at least MustRecvFragSize, at most :attr:`RpcPipe.MAX_FRAG`); a bind
  carrying an auth_verifier -> bind_nak authentication_type_not_recognized (no RPC-level
  security here: SMB authenticated the caller); a second bind -> bind_nak;
* request: fragment reassembly (PFC_FIRST_FRAG ... PFC_LAST_FRAG, same call_id, at most
  :attr:`RpcPipe.MAX_REQUEST` bytes of stub), dispatch by p_cont_id and opnum; unknown
  context -> fault nca_s_unk_if, unknown opnum -> nca_s_op_rng_error, undecodable stub ->
  nca_s_fault_ndr, auth_verifier present -> nca_s_fault_access_denied;
* response: the stub is cut into fragments of the negotiated max_xmit_frag (stub chunks
  8-octet multiples, alloc_hint = bytes remaining);
* orphaned discards the call being reassembled, co_cancel is ignored (calls run to
  completion synchronously).

Reads follow message-mode pipe semantics: one READ returns at most the rest of one PDU;
a PDU longer than the read is returned over several reads.
"""
from __future__ import annotations

import logging
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

from ..core.files import PipeEndpoint
from ..ntstatus import NtStatusError
from . import pdu as P
from .ndr import U32, NdrError, NdrType, marshal, unmarshal
from .win32 import Win32Error, error_name

log = logging.getLogger("wsd_smb.rpc")

STATUS_PIPE_EMPTY = 0xC00000D9
STATUS_INSUFFICIENT_RESOURCES = 0xC000009A


class RpcFault(Exception):
    """Raised inside a call to answer with a fault PDU carrying *status*."""

    def __init__(self, status: int, message: str = "", did_not_execute: bool = True) -> None:
        super().__init__(f"0x{status:08x} {message}")
        self.status, self.did_not_execute = status, did_not_execute


@dataclass
class Operation:
    """One method of an interface: opnum, NDR types of the [in] and [out] parameters
    (in IDL order, without the return value), the handler, and what to send for the
    [out] parameters when the handler raises a :class:`Win32Error`.

    ``handler(binding, ins) -> (outs, status)``: *binding* is what the interface's
    ``bind`` returned for this presentation context; *status* goes into the NDR return
    value (NET_API_STATUS)."""

    opnum: int
    name: str
    in_params: list[NdrType]
    out_params: list[NdrType]
    handler: Callable[[Any, list], tuple[list, int]]
    error_outs: Callable[[list], list]
    returns: NdrType = U32


class Interface:
    """An RPC interface: abstract syntax (if_uuid + version) and its operations."""

    def __init__(self, name: str, syntax: P.SyntaxId, operations: list[Operation]) -> None:
        self.name, self.syntax = name, syntax
        self.operations = {op.opnum: op for op in operations}

    def matches(self, s: P.SyntaxId) -> bool:
        """Interface version compatibility (C706 interface versioning): same if_uuid, same
        major version, the client's minor version not above ours."""
        return s.uuid == self.syntax.uuid and s.major == self.syntax.major and s.minor <= self.syntax.minor

    def bind(self, caller: Any) -> Any:
        """Per-context state handed to the operations (default: the caller)."""
        return caller

    def invoke(self, op: Operation, binding: Any, stub: bytes) -> bytes:
        try:
            ins = unmarshal(op.in_params, stub)
        except NdrError as e:
            raise RpcFault(P.NCA_S_FAULT_NDR, f"{op.name}: {e}") from None
        try:
            outs, status = op.handler(binding, ins)
        except Win32Error as e:
            outs, status = op.error_outs(ins), e.status
            log.debug("event=rpc_error op=%s status=%s detail=%r", op.name, error_name(e.status), e.message)
        try:
            return marshal(list(zip(op.out_params, outs)) + [(op.returns, status)])
        except (ValueError, KeyError, TypeError) as e:  # a bug of ours in building the reply
            log.error("event=rpc_marshal_bug op=%s error=%r", op.name, str(e))
            raise RpcFault(P.NCA_S_FAULT_NDR, "reply marshalling", did_not_execute=False) from None


class RpcPipe(PipeEndpoint):
    """The sans-IO server side of one DCE/RPC association on one pipe open."""

    #: what we announce for both directions (MS-RPCE: Windows uses 4280 on named pipes)
    MAX_FRAG = 4280
    #: largest reassembled request stub accepted
    MAX_REQUEST = 4 * 1024 * 1024
    #: replies queued for reading beyond which input is left unprocessed until the client reads
    MAX_QUEUED = 1024 * 1024
    _assoc_groups = iter(range(0x1000, 0x7FFFFFFF))
    _assoc_lock = threading.Lock()

    def __init__(self, name: str, interfaces: list[Interface], caller: Any = None,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(name)
        self.interfaces = list(interfaces)
        self.caller = caller
        self.clock = clock
        self._in = bytearray()
        self._out: deque[bytes] = deque()
        self._queued = 0  # bytes in _out
        self._lock = threading.Lock()
        self.bound = False
        self.closed = False
        self.max_xmit_frag = self.max_recv_frag = self.MAX_FRAG
        self.assoc_group_id = 0
        self.features = 0
        #: p_cont_id -> (Interface, binding)
        self.contexts: dict[int, tuple[Interface, Any]] = {}
        self._frag: dict | None = None  # request being reassembled
        self._discard_call: int | None = None  # call whose remaining fragments are dropped

    # ------------------------------------------------------------ PipeEndpoint
    def write(self, data: bytes) -> int:
        """Feed bytes written by the client.  Flow control: while MAX_QUEUED bytes of replies
        wait to be read, complete PDUs stay unprocessed; a write arriving while a whole PDU is
        still waiting that way is refused (STATUS_INSUFFICIENT_RESOURCES), so a client that
        writes without reading cannot make us queue without bound."""
        with self._lock:
            if self._queued >= self.MAX_QUEUED and self._complete_pdu_waiting():
                raise NtStatusError(STATUS_INSUFFICIENT_RESOURCES, "RPC replies are not being read")
            self._in += data
            self._process()
        return len(data)

    def read(self, length: int) -> bytes:
        """At most *length* bytes of the next queued PDU (the rest stays for the next read)."""
        return self.read_message(length)[0]

    def read_message(self, length: int) -> tuple[bytes, bool]:
        """At most *length* bytes of the next queued PDU, and whether more of that PDU is
        left (the rest stays for the next read; the SMB layer says STATUS_BUFFER_OVERFLOW)."""
        with self._lock:
            if length <= 0:
                return b"", False
            if not self._out:
                raise NtStatusError(STATUS_PIPE_EMPTY, "no RPC reply queued")
            head = self._out[0]
            more = len(head) > length
            if not more:
                out = self._pop()
            else:
                self._out[0] = head[length:]
                self._queued -= length
                out = head[:length]
            self._process()  # input held back by flow control
            return out, more

    def transceive(self, data: bytes, max_output: int) -> bytes:
        """Write *data*, return the next queued PDU.  When it is longer than *max_output*
        the SMB layer sends only *max_output* bytes with STATUS_BUFFER_OVERFLOW
        (MS-SMB2 3.3.5.15.1); the bytes after that stay queued for READ, so we hand back
        one byte more than fits to make the layer see the overflow."""
        self.write(data)
        with self._lock:
            if not self._out:
                raise NtStatusError(STATUS_PIPE_EMPTY, "the request produced no reply")
            head = self._out[0]
            if len(head) <= max_output:
                out = self._pop()
            else:
                self._out[0] = head[max_output:]
                self._queued -= max_output
                out = head[:max_output + 1]
            self._process()
            return out

    def close(self) -> None:
        with self._lock:
            self.closed = True
            self._out.clear()
            self._queued = 0
            self._in.clear()
            self._frag = None

    def pending(self) -> int:
        """Bytes queued for reading."""
        with self._lock:
            return self._queued

    def _pop(self) -> bytes:
        b = self._out.popleft()
        self._queued -= len(b)
        return b

    # ------------------------------------------------------------ framing
    def _complete_pdu_waiting(self) -> bool:
        try:
            n = P.peek_frag_length(self._in)
        except P.RpcProtocolError:
            return False
        return n is not None and len(self._in) >= n

    def _process(self) -> None:
        while self._queued < self.MAX_QUEUED:
            try:
                n = P.peek_frag_length(self._in)
            except P.RpcProtocolError as e:
                call_id = struct.unpack_from("<I", self._in, 12)[0] if len(self._in) >= 16 else 0
                log.info("event=rpc_bad_stream pipe=%s error=%r dropped=%d", self.name, str(e), len(self._in))
                self._in.clear()
                self._frag = None
                self._fault(call_id, P.NCA_S_PROTO_ERROR)
                return
            if n is None or len(self._in) < n:
                return
            raw = bytes(self._in[:n])
            del self._in[:n]
            self._handle(raw)

    def _handle(self, raw: bytes) -> None:
        call_id = struct.unpack_from("<I", raw, 12)[0]
        try:
            pdu = P.parse_pdu(raw)
        except P.RpcProtocolError as e:
            log.info("event=rpc_bad_pdu pipe=%s ptype=%d error=%r", self.name, raw[2], str(e))
            if raw[2] == P.BIND:
                self._queue(P.BindNak(provider_reject_reason=P.NAK_PROTOCOL_VERSION_NOT_SUPPORTED, call_id=call_id))
            else:
                self._fault(call_id, P.NCA_S_PROTO_ERROR)
            return
        if isinstance(pdu, P.AlterContext):
            self._alter_context(pdu)
        elif isinstance(pdu, P.Bind):
            self._bind(pdu)
        elif isinstance(pdu, P.Request):
            self._request(pdu)
        elif isinstance(pdu, P.Simple) and pdu.ptype == P.ORPHANED:
            if self._frag is not None and self._frag["call_id"] == pdu.call_id:
                self._frag = None
        elif isinstance(pdu, P.Simple) and pdu.ptype == P.CO_CANCEL:
            pass  # calls complete synchronously; nothing to cancel
        else:
            log.info("event=rpc_unexpected_pdu pipe=%s ptype=%d", self.name, raw[2])
            self._fault(call_id, P.NCA_S_PROTO_ERROR)

    # ------------------------------------------------------------ output
    def _queue(self, pdu: P.Pdu) -> None:
        if not self.closed:
            b = pdu.pack()
            self._out.append(b)
            self._queued += len(b)

    def _fault(self, call_id: int, status: int, p_cont_id: int = 0, did_not_execute: bool = True) -> None:
        flags = P.PFC_FIRST_FRAG | P.PFC_LAST_FRAG | (P.PFC_DID_NOT_EXECUTE if did_not_execute else 0)
        log.debug("event=rpc_fault pipe=%s call_id=%d status=0x%08x", self.name, call_id, status)
        self._queue(P.Fault(call_id=call_id, pfc_flags=flags, p_cont_id=p_cont_id, status=status))

    # ------------------------------------------------------------ bind / alter_context
    def _negotiate(self, contexts: list[P.ContextElem]) -> list[P.Result]:
        """Presentation context negotiation (C706 12.6.3.1 p_result_list, MS-RPCE 3.3.1.5.6)."""
        results = []
        feature_seen = False
        for ce in contexts:
            ts = ce.transfer_syntaxes
            if ts and ts[0].uuid[:8] == P.BTFN_PREFIX and not feature_seen:
                # MS-RPCE 3.3.1.5.3: the 8 octets after the prefix are BindTimeFeatureNegotiationBitmask;
                # we support keeping the connection after an orphaned PDU, not security context multiplexing.
                feature_seen = True
                self.features = ts[0].uuid[8] & P.KEEP_CONNECTION_ON_ORPHAN_SUPPORTED
                results.append(P.Result(P.NEGOTIATE_ACK, self.features))
                continue
            iface = next((i for i in self.interfaces if i.matches(ce.abstract_syntax)), None)
            if iface is None:
                results.append(P.Result(P.PROVIDER_REJECTION, P.ABSTRACT_SYNTAX_NOT_SUPPORTED))
            elif P.NDR20 in ts:
                self.contexts[ce.p_cont_id] = (iface, iface.bind(self.caller))
                results.append(P.Result(P.ACCEPTANCE, 0, P.NDR20))
            else:
                results.append(P.Result(P.PROVIDER_REJECTION, P.PROPOSED_TRANSFER_SYNTAXES_NOT_SUPPORTED))
        return results

    def _bind(self, pdu: P.Bind) -> None:
        def nak(reason: int) -> None:
            log.info("event=rpc_bind_nak pipe=%s reason=%d", self.name, reason)
            self._queue(P.BindNak(provider_reject_reason=reason, call_id=pdu.call_id))

        if self.bound:
            return nak(P.NAK_PROTOCOL_VERSION_NOT_SUPPORTED)  # bind only once per association
        if pdu.auth_verifier:
            return nak(P.NAK_AUTHENTICATION_TYPE_NOT_RECOGNIZED)
        if not pdu.contexts:
            return nak(P.NAK_REASON_NOT_SPECIFIED)
        self.max_xmit_frag = max(P.MUST_RECV_FRAG_SIZE, min(pdu.max_recv_frag, self.MAX_FRAG))
        self.max_recv_frag = max(P.MUST_RECV_FRAG_SIZE, min(pdu.max_xmit_frag, self.MAX_FRAG))
        with self._assoc_lock:
            self.assoc_group_id = pdu.assoc_group_id or next(self._assoc_groups)
        results = self._negotiate(pdu.contexts)
        self.bound = True
        log.debug("event=rpc_bind pipe=%s results=%s", self.name, [(r.result, r.reason) for r in results])
        self._queue(P.BindAck(call_id=pdu.call_id, max_xmit_frag=self.max_xmit_frag,
                              max_recv_frag=self.max_recv_frag, assoc_group_id=self.assoc_group_id,
                              sec_addr=b"\\PIPE\\" + self.name.encode("ascii", "replace") + b"\0",
                              results=results))

    def _alter_context(self, pdu: P.AlterContext) -> None:
        if not self.bound:
            return self._fault(pdu.call_id, P.NCA_S_PROTO_ERROR)
        if pdu.auth_verifier:
            return self._fault(pdu.call_id, P.NCA_S_FAULT_ACCESS_DENIED)
        results = self._negotiate(pdu.contexts)
        self._queue(P.AlterContextResp(call_id=pdu.call_id, max_xmit_frag=self.max_xmit_frag,
                                       max_recv_frag=self.max_recv_frag, assoc_group_id=self.assoc_group_id,
                                       sec_addr=b"", results=results))

    # ------------------------------------------------------------ request
    def _request(self, pdu: P.Request) -> None:
        first = bool(pdu.pfc_flags & P.PFC_FIRST_FRAG)
        last = bool(pdu.pfc_flags & P.PFC_LAST_FRAG)
        if self._discard_call is not None:
            if pdu.call_id == self._discard_call and not first:
                if last:
                    self._discard_call = None
                return
            self._discard_call = None
        if pdu.auth_verifier:
            self._frag = None
            if not last:
                self._discard_call = pdu.call_id
            return self._fault(pdu.call_id, P.NCA_S_FAULT_ACCESS_DENIED, pdu.p_cont_id)
        if first:
            self._frag = {"call_id": pdu.call_id, "p_cont_id": pdu.p_cont_id, "opnum": pdu.opnum,
                          "chunks": [pdu.stub], "size": len(pdu.stub)}
        else:
            f = self._frag
            if f is None or f["call_id"] != pdu.call_id:
                self._frag = None
                if not last:
                    self._discard_call = pdu.call_id
                return self._fault(pdu.call_id, P.NCA_S_PROTO_ERROR, pdu.p_cont_id)
            f["chunks"].append(pdu.stub)
            f["size"] += len(pdu.stub)
        f = self._frag
        if f["size"] > self.MAX_REQUEST:
            self._frag = None
            if not last:
                self._discard_call = pdu.call_id
            return self._fault(pdu.call_id, P.NCA_S_PROTO_ERROR, pdu.p_cont_id)
        if not last:
            return
        self._frag = None
        self._execute(f["call_id"], f["p_cont_id"], f["opnum"], b"".join(f["chunks"]))

    def _execute(self, call_id: int, p_cont_id: int, opnum: int, stub: bytes) -> None:
        if not self.bound:
            return self._fault(call_id, P.NCA_S_PROTO_ERROR, p_cont_id)
        ctx = self.contexts.get(p_cont_id)
        if ctx is None:
            return self._fault(call_id, P.NCA_S_UNK_IF, p_cont_id)
        iface, binding = ctx
        op = iface.operations.get(opnum)
        if op is None:
            return self._fault(call_id, P.NCA_S_OP_RNG_ERROR, p_cont_id)
        try:
            out = iface.invoke(op, binding, stub)
        except RpcFault as e:
            log.info("event=rpc_call_fault pipe=%s op=%s status=0x%08x detail=%r", self.name, op.name, e.status,
                     str(e))
            return self._fault(call_id, e.status, p_cont_id, e.did_not_execute)
        self._respond(call_id, p_cont_id, out)

    def _respond(self, call_id: int, p_cont_id: int, stub: bytes) -> None:
        room = ((self.max_xmit_frag - P.COMMON_HEADER_SIZE - 8) // 8) * 8
        pos = 0
        while True:
            chunk = stub[pos:pos + room]
            flags = (P.PFC_FIRST_FRAG if pos == 0 else 0) | (P.PFC_LAST_FRAG if pos + room >= len(stub) else 0)
            self._queue(P.Response(call_id=call_id, pfc_flags=flags, alloc_hint=len(stub) - pos,
                                   p_cont_id=p_cont_id, stub=chunk))
            pos += room
            if pos >= len(stub):
                return


__all__ = ["Interface", "Operation", "RpcFault", "RpcPipe", "STATUS_PIPE_EMPTY"]
