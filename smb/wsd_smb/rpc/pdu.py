"""DCE/RPC connection-oriented PDUs (C706 chapter 12.6, MS-RPCE 2.2.2), little-endian
data representation only.

Fixed parts are declared with the project's structure mechanism (``wire.base.Plain``:
one ``F`` per field, reserved fields checked on receipt); the variable parts (context
lists, result lists, the secondary address, stub data) are handled by each PDU class.
Every PDU class has ``pack(call_id, pfc_flags) -> bytes`` and a ``parse`` used by
:func:`parse_pdu`; malformed input raises :class:`RpcProtocolError`.
"""
from __future__ import annotations

import struct
import uuid as _uuid
from dataclasses import dataclass, field
from typing import ClassVar

from ..ntstatus import NtStatusError
from ..wire.base import F, Plain, U8, U16, U32, Bytes

# ---------------------------------------------------------------- PTYPE (C706 12.6.4)
REQUEST = 0
RESPONSE = 2
FAULT = 3
BIND = 11
BIND_ACK = 12
BIND_NAK = 13
ALTER_CONTEXT = 14
ALTER_CONTEXT_RESP = 15
SHUTDOWN = 17
CO_CANCEL = 18
ORPHANED = 19

# ---------------------------------------------------------------- pfc_flags (C706 12.6.3.1, MS-RPCE 2.2.2.3)
PFC_FIRST_FRAG = 0x01
PFC_LAST_FRAG = 0x02
PFC_PENDING_CANCEL = 0x04  # PFC_SUPPORT_HEADER_SIGN in bind / bind_ack (MS-RPCE)
PFC_CONC_MPX = 0x10
PFC_DID_NOT_EXECUTE = 0x20
PFC_MAYBE = 0x40
PFC_OBJECT_UUID = 0x80

# ---------------------------------------------------------------- p_cont_def_result_t / reasons (C706 12.6.3.1)
ACCEPTANCE = 0
USER_REJECTION = 1
PROVIDER_REJECTION = 2
NEGOTIATE_ACK = 3  # MS-RPCE 2.2.2.4 (bind time feature negotiation)

REASON_NOT_SPECIFIED = 0
ABSTRACT_SYNTAX_NOT_SUPPORTED = 1
PROPOSED_TRANSFER_SYNTAXES_NOT_SUPPORTED = 2
LOCAL_LIMIT_EXCEEDED = 3

# bind_nak p_reject_reason_t (C706 12.6.3.1; MS-RPCE 2.2.2.5)
NAK_REASON_NOT_SPECIFIED = 0
NAK_TEMPORARY_CONGESTION = 1
NAK_LOCAL_LIMIT_EXCEEDED = 2
NAK_PROTOCOL_VERSION_NOT_SUPPORTED = 4  # MS-RPCE: PROTOCOL_VERSION_NOT_SPECIFIED (protocol error)
NAK_AUTHENTICATION_TYPE_NOT_RECOGNIZED = 8
NAK_INVALID_CHECKSUM = 9

# BindTimeFeatureNegotiationBitmask (MS-RPCE 2.2.2.14)
SECURITY_CONTEXT_MULTIPLEXING_SUPPORTED = 0x01
KEEP_CONNECTION_ON_ORPHAN_SUPPORTED = 0x02

# fault status (C706 appendix E, MS-RPCE 2.2.2.11 / MS-ERREF)
NCA_S_FAULT_ACCESS_DENIED = 0x00000005
NCA_S_FAULT_NDR = 0x000006F7
NCA_S_FAULT_CONTEXT_MISMATCH = 0x1C00001A
NCA_S_FAULT_REMOTE_NO_MEMORY = 0x1C00001B
NCA_S_OP_RNG_ERROR = 0x1C010002
NCA_S_UNK_IF = 0x1C010003
NCA_S_PROTO_ERROR = 0x1C01000B

#: packed_drep: integer little-endian, ASCII characters, IEEE floats (C706 14.1)
DREP_LE = b"\x10\x00\x00\x00"
COMMON_HEADER_SIZE = 16
#: MustRecvFragSize (C706 12.6.3.2): every implementation receives fragments of at least this size
MUST_RECV_FRAG_SIZE = 1432


class RpcProtocolError(ValueError):
    """A PDU that cannot be parsed or violates C706 (-> fault nca_s_proto_error / bind_nak)."""


# ====================================================================== syntax ids
@dataclass(frozen=True)
class SyntaxId:
    """p_syntax_id_t (C706 12.6.3.1): if_uuid (16 bytes, NDR little-endian GUID) and
    if_version (u32: major in the low 16 bits, minor in the high 16 bits)."""

    uuid: bytes
    version: int

    @classmethod
    def of(cls, text: str, major: int, minor: int = 0) -> "SyntaxId":
        return cls(_uuid.UUID(text).bytes_le, major | (minor << 16))

    @property
    def major(self) -> int:
        return self.version & 0xFFFF

    @property
    def minor(self) -> int:
        return self.version >> 16

    def pack(self) -> bytes:
        return self.uuid + struct.pack("<I", self.version)

    @classmethod
    def unpack(cls, b: bytes, off: int) -> "SyntaxId":
        return cls(bytes(b[off:off + 16]), struct.unpack_from("<I", b, off + 16)[0])

    def __str__(self) -> str:
        return f"{_uuid.UUID(bytes_le=self.uuid)} v{self.major}.{self.minor}"


SYNTAX_SIZE = 20
NDR20 = SyntaxId.of("8a885d04-1ceb-11c9-9fe8-08002b104860", 2)
NULL_SYNTAX = SyntaxId(b"\0" * 16, 0)
#: bind time feature negotiation: the transfer syntax's if_uuid starts with this (MS-RPCE 3.3.1.5.3)
BTFN_PREFIX = _uuid.UUID("6cb71c2c-9812-4540-0000-000000000000").bytes_le[:8]


# ====================================================================== fixed parts
class CommonHeader(Plain):
    """The common header of every connection-oriented PDU (C706 12.6.3.1)."""

    FIELDS = (
        F("rpc_vers", U8, 5),
        F("rpc_vers_minor", U8, 0),
        F("PTYPE", U8),
        F("pfc_flags", U8),
        F("packed_drep", Bytes(4), DREP_LE),
        F("frag_length", U16),
        F("auth_length", U16),
        F("call_id", U32),
    )


class _BindFixed(Plain):
    """bind / alter_context after the common header (C706 12.6.4.3, 12.6.4.1):
    max_xmit_frag, max_recv_frag, assoc_group_id, p_context_elem's n_context_elem."""

    FIELDS = (
        F("max_xmit_frag", U16),
        F("max_recv_frag", U16),
        F("assoc_group_id", U32),
        F("n_context_elem", U8),
        F("reserved", U8, 0, reserved=True, ignore=True),
        F("reserved2", U16, 0, reserved=True, ignore=True),
    )


class _ContElemFixed(Plain):
    """p_cont_elem_t head (C706 12.6.3.1): p_cont_id, n_transfer_syn, reserved."""

    FIELDS = (
        F("p_cont_id", U16),
        F("n_transfer_syn", U8),
        F("reserved", U8, 0, reserved=True, ignore=True),
    )


class _RequestFixed(Plain):
    """request after the common header (C706 12.6.4.9): alloc_hint, p_cont_id, opnum."""

    FIELDS = (F("alloc_hint", U32), F("p_cont_id", U16), F("opnum", U16))


class _ResponseFixed(Plain):
    """response after the common header (C706 12.6.4.10)."""

    FIELDS = (F("alloc_hint", U32), F("p_cont_id", U16), F("cancel_count", U8),
              F("reserved", U8, 0, reserved=True, ignore=True))


class _FaultFixed(Plain):
    """fault after the common header (C706 12.6.4.7): alloc_hint, p_cont_id,
    cancel_count, reserved, status, reserved (4 octets)."""

    FIELDS = (F("alloc_hint", U32), F("p_cont_id", U16), F("cancel_count", U8),
              F("reserved", U8, 0, reserved=True, ignore=True), F("status", U32),
              F("reserved2", U32, 0, reserved=True, ignore=True))


class SecTrailer(Plain):
    """sec_trailer of an auth_verifier (C706 13.2.6.1, MS-RPCE 2.2.2.11)."""

    FIELDS = (F("auth_type", U8), F("auth_level", U8), F("auth_pad_length", U8),
              F("auth_reserved", U8, 0, reserved=True, ignore=True), F("auth_context_id", U32))


def _unpack(cls, b: bytes, off: int, end: int):
    try:
        return cls.unpack(b, off, end)
    except NtStatusError as e:  # the structure mechanism raises STATUS_INVALID_PARAMETER
        raise RpcProtocolError(str(e)) from None


# ====================================================================== PDUs
@dataclass
class Pdu:
    """Base: the common header values a PDU was received with (``call_id``, ``pfc_flags``,
    ``auth_length``) and the raw ``auth_verifier`` (sec_trailer + auth_value) if any."""

    PTYPE: ClassVar[int] = -1

    call_id: int = field(default=0, kw_only=True)
    pfc_flags: int = field(default=PFC_FIRST_FRAG | PFC_LAST_FRAG, kw_only=True)
    auth_verifier: bytes = field(default=b"", kw_only=True)
    rpc_vers_minor: int = field(default=0, kw_only=True)

    def body(self) -> bytes:
        raise NotImplementedError

    def pack(self) -> bytes:
        """The whole PDU: common header (frag_length computed) + body (+ auth_verifier)."""
        body = self.body()
        auth_len = max(0, len(self.auth_verifier) - SecTrailer.FIXED_SIZE) if self.auth_verifier else 0
        hdr = CommonHeader(rpc_vers_minor=self.rpc_vers_minor, ptype=self.PTYPE, pfc_flags=self.pfc_flags,
                           packed_drep=DREP_LE, frag_length=COMMON_HEADER_SIZE + len(body) + len(self.auth_verifier),
                           auth_length=auth_len, call_id=self.call_id).pack(0)
        return hdr + body + self.auth_verifier

    @classmethod
    def parse_body(cls, b: bytes, off: int, end: int, hdr: CommonHeader) -> "Pdu":
        raise NotImplementedError


@dataclass
class ContextElem:
    """p_cont_elem_t (C706 12.6.3.1)."""

    p_cont_id: int
    abstract_syntax: SyntaxId
    transfer_syntaxes: list[SyntaxId]

    def pack(self) -> bytes:
        return (_ContElemFixed(p_cont_id=self.p_cont_id, n_transfer_syn=len(self.transfer_syntaxes)).pack(0)
                + self.abstract_syntax.pack() + b"".join(t.pack() for t in self.transfer_syntaxes))


@dataclass
class Bind(Pdu):
    """bind (C706 12.6.4.3)."""

    PTYPE: ClassVar[int] = BIND

    max_xmit_frag: int = 4280
    max_recv_frag: int = 4280
    assoc_group_id: int = 0
    contexts: list[ContextElem] = field(default_factory=list)

    def body(self) -> bytes:
        return (_BindFixed(max_xmit_frag=self.max_xmit_frag, max_recv_frag=self.max_recv_frag,
                           assoc_group_id=self.assoc_group_id, n_context_elem=len(self.contexts)).pack(0)
                + b"".join(c.pack() for c in self.contexts))

    @classmethod
    def parse_body(cls, b: bytes, off: int, end: int, hdr: CommonHeader) -> "Bind":
        f = _unpack(_BindFixed, b, off, end)
        pos = off + _BindFixed.FIXED_SIZE
        contexts = []
        for _ in range(f.n_context_elem):
            ce = _unpack(_ContElemFixed, b, pos, end)
            pos += _ContElemFixed.FIXED_SIZE
            need = SYNTAX_SIZE * (1 + ce.n_transfer_syn)
            if pos + need > end:
                raise RpcProtocolError("p_cont_elem_t runs past the PDU")
            abstract = SyntaxId.unpack(b, pos)
            pos += SYNTAX_SIZE
            ts = []
            for _ in range(ce.n_transfer_syn):
                ts.append(SyntaxId.unpack(b, pos))
                pos += SYNTAX_SIZE
            contexts.append(ContextElem(ce.p_cont_id, abstract, ts))
        return cls(max_xmit_frag=f.max_xmit_frag, max_recv_frag=f.max_recv_frag,
                   assoc_group_id=f.assoc_group_id, contexts=contexts)


@dataclass
class AlterContext(Bind):
    """alter_context (C706 12.6.4.1): the same body as bind."""

    PTYPE: ClassVar[int] = ALTER_CONTEXT


@dataclass
class Result:
    """p_result_t (C706 12.6.3.1; ``reason`` carries the feature bitmask for negotiate_ack)."""

    result: int
    reason: int
    transfer_syntax: SyntaxId = NULL_SYNTAX

    def pack(self) -> bytes:
        return struct.pack("<HH", self.result, self.reason) + self.transfer_syntax.pack()


@dataclass
class BindAck(Pdu):
    """bind_ack (C706 12.6.4.4): max_xmit_frag, max_recv_frag, assoc_group_id,
    sec_addr (port_spec_t: u16 length incl. NUL + the string), padding to 4, p_result_list."""

    PTYPE: ClassVar[int] = BIND_ACK

    max_xmit_frag: int = 4280
    max_recv_frag: int = 4280
    assoc_group_id: int = 0
    sec_addr: bytes = b""  # with its NUL, e.g. b"\\PIPE\\srvsvc\0"; empty: length 0
    results: list[Result] = field(default_factory=list)

    def body(self) -> bytes:
        head = struct.pack("<HHIH", self.max_xmit_frag, self.max_recv_frag, self.assoc_group_id,
                           len(self.sec_addr)) + self.sec_addr
        head += b"\0" * ((-(COMMON_HEADER_SIZE + len(head))) % 4)
        return head + struct.pack("<BBH", len(self.results), 0, 0) + b"".join(r.pack() for r in self.results)

    @classmethod
    def parse_body(cls, b: bytes, off: int, end: int, hdr: CommonHeader) -> "BindAck":
        if off + 10 > end:
            raise RpcProtocolError("bind_ack truncated")
        xmit, recv, group, alen = struct.unpack_from("<HHIH", b, off)
        pos = off + 10
        if pos + alen > end:
            raise RpcProtocolError("bind_ack sec_addr runs past the PDU")
        addr = bytes(b[pos:pos + alen])
        pos += alen
        pos += (-pos) % 4
        if pos + 4 > end:
            raise RpcProtocolError("bind_ack result list truncated")
        n = b[pos]
        pos += 4
        if pos + n * (4 + SYNTAX_SIZE) > end:
            raise RpcProtocolError("bind_ack results run past the PDU")
        results = []
        for _ in range(n):
            r, reason = struct.unpack_from("<HH", b, pos)
            results.append(Result(r, reason, SyntaxId.unpack(b, pos + 4)))
            pos += 4 + SYNTAX_SIZE
        return cls(max_xmit_frag=xmit, max_recv_frag=recv, assoc_group_id=group, sec_addr=addr, results=results)


@dataclass
class AlterContextResp(BindAck):
    """alter_context_response (C706 12.6.4.2): the same body as bind_ack."""

    PTYPE: ClassVar[int] = ALTER_CONTEXT_RESP


@dataclass
class BindNak(Pdu):
    """bind_nak (C706 12.6.4.5): provider_reject_reason, p_rt_versions_supported
    (n_protocols, then major/minor octet pairs)."""

    PTYPE: ClassVar[int] = BIND_NAK

    provider_reject_reason: int = NAK_REASON_NOT_SPECIFIED
    versions: list[tuple[int, int]] = field(default_factory=lambda: [(5, 0)])

    def body(self) -> bytes:
        return struct.pack("<HB", self.provider_reject_reason, len(self.versions)) + b"".join(
            struct.pack("<BB", ma, mi) for ma, mi in self.versions)

    @classmethod
    def parse_body(cls, b: bytes, off: int, end: int, hdr: CommonHeader) -> "BindNak":
        if off + 3 > end:
            raise RpcProtocolError("bind_nak truncated")
        reason, n = struct.unpack_from("<HB", b, off)
        if off + 3 + 2 * n > end:
            raise RpcProtocolError("bind_nak versions run past the PDU")
        vs = [tuple(b[off + 3 + 2 * i:off + 5 + 2 * i]) for i in range(n)]
        return cls(provider_reject_reason=reason, versions=vs)  # type: ignore[arg-type]


@dataclass
class Request(Pdu):
    """request (C706 12.6.4.9): alloc_hint, p_cont_id, opnum, optional object UUID
    (PFC_OBJECT_UUID), stub data."""

    PTYPE: ClassVar[int] = REQUEST

    alloc_hint: int = 0
    p_cont_id: int = 0
    opnum: int = 0
    object: bytes | None = None
    stub: bytes = b""

    def body(self) -> bytes:
        return (_RequestFixed(alloc_hint=self.alloc_hint, p_cont_id=self.p_cont_id, opnum=self.opnum).pack(0)
                + (self.object or b"") + self.stub)

    @classmethod
    def parse_body(cls, b: bytes, off: int, end: int, hdr: CommonHeader) -> "Request":
        f = _unpack(_RequestFixed, b, off, end)
        pos = off + _RequestFixed.FIXED_SIZE
        obj = None
        if hdr.pfc_flags & PFC_OBJECT_UUID:
            if pos + 16 > end:
                raise RpcProtocolError("request object UUID truncated")
            obj = bytes(b[pos:pos + 16])
            pos += 16
        return cls(alloc_hint=f.alloc_hint, p_cont_id=f.p_cont_id, opnum=f.opnum, object=obj,
                   stub=bytes(b[pos:end]))


@dataclass
class Response(Pdu):
    """response (C706 12.6.4.10): alloc_hint, p_cont_id, cancel_count, stub data."""

    PTYPE: ClassVar[int] = RESPONSE

    alloc_hint: int = 0
    p_cont_id: int = 0
    cancel_count: int = 0
    stub: bytes = b""

    def body(self) -> bytes:
        return _ResponseFixed(alloc_hint=self.alloc_hint, p_cont_id=self.p_cont_id,
                              cancel_count=self.cancel_count).pack(0) + self.stub

    @classmethod
    def parse_body(cls, b: bytes, off: int, end: int, hdr: CommonHeader) -> "Response":
        f = _unpack(_ResponseFixed, b, off, end)
        return cls(alloc_hint=f.alloc_hint, p_cont_id=f.p_cont_id, cancel_count=f.cancel_count,
                   stub=bytes(b[off + _ResponseFixed.FIXED_SIZE:end]))


@dataclass
class Fault(Pdu):
    """fault (C706 12.6.4.7)."""

    PTYPE: ClassVar[int] = FAULT

    alloc_hint: int = 0
    p_cont_id: int = 0
    cancel_count: int = 0
    status: int = NCA_S_PROTO_ERROR
    stub: bytes = b""

    def body(self) -> bytes:
        return _FaultFixed(alloc_hint=self.alloc_hint, p_cont_id=self.p_cont_id, cancel_count=self.cancel_count,
                           status=self.status).pack(0) + self.stub

    @classmethod
    def parse_body(cls, b: bytes, off: int, end: int, hdr: CommonHeader) -> "Fault":
        f = _unpack(_FaultFixed, b, off, end)
        return cls(alloc_hint=f.alloc_hint, p_cont_id=f.p_cont_id, cancel_count=f.cancel_count, status=f.status,
                   stub=bytes(b[off + _FaultFixed.FIXED_SIZE:end]))


@dataclass
class Simple(Pdu):
    """A PDU whose body this server ignores (shutdown, co_cancel, orphaned: C706 12.6.4.8,
    12.6.4.11, 12.6.4.12 -- header only)."""

    ptype: int = ORPHANED

    def body(self) -> bytes:
        return b""

    def pack(self) -> bytes:  # PTYPE comes from the instance
        return CommonHeader(rpc_vers_minor=self.rpc_vers_minor, ptype=self.ptype, pfc_flags=self.pfc_flags,
                            packed_drep=DREP_LE, frag_length=COMMON_HEADER_SIZE, auth_length=0,
                            call_id=self.call_id).pack(0)


_BY_TYPE: dict[int, type[Pdu]] = {
    BIND: Bind, ALTER_CONTEXT: AlterContext, BIND_ACK: BindAck, ALTER_CONTEXT_RESP: AlterContextResp,
    BIND_NAK: BindNak, REQUEST: Request, RESPONSE: Response, FAULT: Fault,
}


def peek_frag_length(buf: bytes | bytearray) -> int | None:
    """frag_length of the PDU starting at buf[0], or None when fewer than 16 bytes are there.
    Raises RpcProtocolError when the header cannot start a PDU (the stream is lost)."""
    if len(buf) < COMMON_HEADER_SIZE:
        return None
    if buf[0] != 5:
        raise RpcProtocolError(f"rpc_vers {buf[0]}")
    # frag_length in the sender's integer representation, so that a big-endian PDU can
    # still be cut out of the stream and refused (bind_nak / fault) instead of desynchronising it
    n = struct.unpack_from("<H" if buf[4] & 0xF0 else ">H", buf, 8)[0]
    if n < COMMON_HEADER_SIZE:
        raise RpcProtocolError(f"frag_length {n}")
    return n


def parse_header(b: bytes) -> CommonHeader:
    """The common header of the PDU *b* (exactly frag_length bytes), checked: version 5.0/5.1,
    little-endian integers, frag_length, auth_length within the PDU."""
    h = _unpack(CommonHeader, b, 0, len(b))
    if h.rpc_vers_minor not in (0, 1):
        raise RpcProtocolError(f"rpc_vers_minor {h.rpc_vers_minor}")
    if (h.packed_drep[0] & 0xF0) != 0x10:
        raise RpcProtocolError(f"packed_drep {h.packed_drep.hex()}: only little-endian integers are supported")
    if h.frag_length != len(b):
        raise RpcProtocolError(f"frag_length {h.frag_length} != {len(b)}")
    if h.auth_length and COMMON_HEADER_SIZE + SecTrailer.FIXED_SIZE + h.auth_length > len(b):
        raise RpcProtocolError(f"auth_length {h.auth_length} larger than the PDU")
    return h


def parse_pdu(b: bytes) -> Pdu:
    """One whole PDU (frag_length bytes) -> its Pdu object.  Unknown PTYPEs give a
    :class:`Simple`.  The auth_verifier (if auth_length) is split off the body."""
    h = parse_header(b)
    end = len(b)
    verifier = b""
    if h.auth_length:
        start = end - h.auth_length - SecTrailer.FIXED_SIZE
        verifier = bytes(b[start:])
        pad = b[start + 2]
        end = start - pad
        if end < COMMON_HEADER_SIZE:
            raise RpcProtocolError("auth padding runs into the header")
    cls = _BY_TYPE.get(h.ptype)
    if cls is None:
        pdu: Pdu = Simple(ptype=h.ptype)
    else:
        pdu = cls.parse_body(b, COMMON_HEADER_SIZE, end, h)
    pdu.call_id, pdu.pfc_flags, pdu.auth_verifier, pdu.rpc_vers_minor = h.call_id, h.pfc_flags, verifier, \
        h.rpc_vers_minor
    return pdu


__all__ = [
    "AlterContext", "AlterContextResp", "Bind", "BindAck", "BindNak", "CommonHeader", "ContextElem", "Fault", "Pdu",
    "Request", "Response", "Result", "RpcProtocolError", "SecTrailer", "Simple", "SyntaxId", "NDR20", "NULL_SYNTAX",
    "parse_header", "parse_pdu", "peek_frag_length",
]
