"""DCE/RPC connection-oriented PDUs (wsd_smb.rpc.pdu, C706 12.6 / MS-RPCE 2.2.2) and the
sans-IO pipe association (wsd_smb.rpc.pipe): golden bytes, presentation-context
negotiation, fragments in both directions, faults and naks, message-mode reads, and a
hypothesis fuzz (whatever is written, the pipe answers with PDUs; nothing escapes)."""
from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wsd_smb.core.state import Server, ServerConfig, Share
from wsd_smb.ntstatus import NtStatusError
from wsd_smb.rpc import pdu as P
from wsd_smb.rpc.ndr import DWORD, marshal, unmarshal
from wsd_smb.rpc.pipe import STATUS_PIPE_EMPTY, RpcPipe
from wsd_smb.rpc.srvsvc import (
    PDWORD,
    SHARE_ENUM_STRUCT,
    SRVSVC,
    SRVSVC_HANDLE,
    SRVSVC_SYNTAX,
    Caller,
)

H = bytes.fromhex
SRVSVC_UUID_LE = H("c84f324b7016d30112785a47bf6ee188")
NDR20_LE = H("045d888aeb1cc9119fe808002b104860")
NDR64 = P.SyntaxId.of("71710533-beba-4937-8319-b5dbef9ccc36", 1)
BTFN = P.SyntaxId.of("6cb71c2c-9812-4540-0300-000000000000", 1)
UNKNOWN_IF = P.SyntaxId.of("12345778-1234-abcd-ef00-0123456789ab", 1)

#: bind for srvsvc v3.0 / NDR20, call_id 1, frags 4280, assoc group 0x12345678 (C706 12.6.4.3)
BIND_GOLDEN = H(
    "05000b03" "10000000" "4800" "0000" "01000000"   # common header: v5.0 bind, FIRST|LAST, LE, 72 bytes
    "b810" "b810" "78563412"                          # max_xmit_frag, max_recv_frag, assoc_group_id
    "01" "00" "0000"                                  # n_context_elem, reserved, reserved2
    "0000" "01" "00"                                  # p_cont_id 0, n_transfer_syn 1, reserved
    "c84f324b7016d30112785a47bf6ee188" "03000000"     # srvsvc v3.0
    "045d888aeb1cc9119fe808002b104860" "02000000")    # NDR v2

#: our bind_ack for it (C706 12.6.4.4): sec_addr "\PIPE\srvsvc", 1 pad octet, one acceptance
BIND_ACK_GOLDEN = H(
    "05000c03" "10000000" "4400" "0000" "01000000"
    "b810" "b810" "78563412"
    "0d00" + b"\\PIPE\\srvsvc\0".hex() + "00"
    "01" "00" "0000"
    "0000" "0000" "045d888aeb1cc9119fe808002b104860" "02000000")


def server_with_shares(n: int = 0) -> Server:
    cfg = ServerConfig()
    cfg.add_share(Share("share", "/srv/share", remark="the share"))
    for i in range(n):
        cfg.add_share(Share(f"extra-share-number-{i:03d}", f"/srv/extra/{i}", remark="x" * 40))
    return Server(cfg)


def new_pipe(server: Server | None = None) -> RpcPipe:
    return RpcPipe("srvsvc", [SRVSVC], caller=Caller(server or server_with_shares()))


def drain(pipe: RpcPipe) -> list[P.Pdu]:
    out = []
    while pipe.pending():
        out.append(P.parse_pdu(pipe.read(1 << 20)))
    return out


def bind(pipe: RpcPipe, *contexts: P.ContextElem, call_id: int = 1, max_frag: int = 4280) -> P.Pdu:
    if not contexts:
        contexts = (P.ContextElem(0, SRVSVC_SYNTAX, [P.NDR20]),)
    pipe.write(P.Bind(call_id=call_id, max_xmit_frag=max_frag, max_recv_frag=max_frag,
                      contexts=list(contexts)).pack())
    (reply,) = drain(pipe)
    return reply


def share_enum_stub(level: int = 1, pref: int = 0xFFFFFFFF, resume=None) -> bytes:
    return marshal([(SRVSVC_HANDLE, "\\\\server"),
                    (SHARE_ENUM_STRUCT, {"Level": level, "ShareInfo": (level, {"EntriesRead": 0, "Buffer": None})}),
                    (DWORD, pref), (PDWORD, resume)])


def share_enum_reply(stub: bytes) -> list:
    return unmarshal([SHARE_ENUM_STRUCT, DWORD, PDWORD, DWORD], stub)


# ====================================================================== golden PDUs
def test_pdu_bind_golden():
    b = P.parse_pdu(BIND_GOLDEN)
    assert isinstance(b, P.Bind) and b.call_id == 1 and b.assoc_group_id == 0x12345678
    assert b.contexts == [P.ContextElem(0, P.SyntaxId(SRVSVC_UUID_LE, 3), [P.SyntaxId(NDR20_LE, 2)])]
    assert b.contexts[0].abstract_syntax == SRVSVC_SYNTAX
    assert P.Bind(call_id=1, assoc_group_id=0x12345678, contexts=b.contexts).pack() == BIND_GOLDEN


def test_pdu_bind_from_impacket_parses():
    """impacket's own bind encoder (a third-party client) against our parser."""
    from impacket.dcerpc.v5.rpcrt import MSRPCBind, CtxItem, MSRPCHeader, MSRPC_BIND, PFC_FIRST_FRAG, PFC_LAST_FRAG
    from impacket.dcerpc.v5 import srvs
    from impacket import uuid

    bind = MSRPCBind()
    item = CtxItem()
    item["AbstractSyntax"] = srvs.MSRPC_UUID_SRVS
    item["TransferSyntax"] = uuid.uuidtup_to_bin(("8a885d04-1ceb-11c9-9fe8-08002b104860", "2.0"))
    item["ContextID"] = 0
    item["TransItems"] = 1
    bind.addCtxItem(item)
    pkt = MSRPCHeader()
    pkt["type"] = MSRPC_BIND
    pkt["flags"] = PFC_FIRST_FRAG | PFC_LAST_FRAG
    pkt["call_id"] = 7
    pkt["pduData"] = bind.getData()
    b = P.parse_pdu(pkt.get_packet())
    assert isinstance(b, P.Bind) and b.call_id == 7
    assert b.contexts[0].abstract_syntax == SRVSVC_SYNTAX and b.contexts[0].transfer_syntaxes == [P.NDR20]


def test_pipe_bind_ack_golden():
    pipe = new_pipe()
    pipe.write(BIND_GOLDEN)
    assert pipe.read(4280) == BIND_ACK_GOLDEN
    ack = P.parse_pdu(BIND_ACK_GOLDEN)
    assert ack == P.BindAck(call_id=1, max_xmit_frag=4280, max_recv_frag=4280, assoc_group_id=0x12345678,
                            sec_addr=b"\\PIPE\\srvsvc\0", results=[P.Result(P.ACCEPTANCE, 0, P.NDR20)])


def test_pdu_request_response_fault_nak_golden():
    req = P.Request(call_id=2, alloc_hint=4, p_cont_id=1, opnum=15, stub=H("aabbccdd"))
    assert req.pack() == H("05000003" "10000000" "1c00" "0000" "02000000" "04000000" "0100" "0f00" "aabbccdd")
    assert P.parse_pdu(req.pack()) == req
    obj = P.Request(call_id=3, pfc_flags=0x83, opnum=1, object=bytes(range(16)), stub=b"")
    assert P.parse_pdu(obj.pack()).object == bytes(range(16))
    resp = P.Response(call_id=2, alloc_hint=8, p_cont_id=1, stub=b"\x01" * 8)
    assert resp.pack() == H("05000203" "10000000" "2000" "0000" "02000000" "08000000" "0100" "00" "00") + b"\x01" * 8
    fault = P.Fault(call_id=9, pfc_flags=0x23, status=P.NCA_S_OP_RNG_ERROR)
    assert fault.pack() == H("05000323" "10000000" "2000" "0000" "09000000"
                             "00000000" "0000" "00" "00" "0200011c" "00000000")
    assert P.parse_pdu(fault.pack()) == fault
    nak = P.BindNak(call_id=1, provider_reject_reason=P.NAK_AUTHENTICATION_TYPE_NOT_RECOGNIZED)
    assert nak.pack() == H("05000d03" "10000000" "1500" "0000" "01000000" "0800" "01" "0500")
    assert P.parse_pdu(nak.pack()) == nak


@pytest.mark.parametrize("mutate, field", [
    (lambda b: b[:1] + b"\x02" + b[2:], "rpc_vers_minor"),
    (lambda b: b[:4] + b"\x00\x00\x00\x00" + b[8:], "packed_drep big-endian"),
    (lambda b: b[:8] + struct.pack("<H", len(b) + 4) + b[10:], "frag_length"),
    (lambda b: b[:10] + struct.pack("<H", 200) + b[12:], "auth_length"),
])
def test_pdu_header_checks(mutate, field):
    with pytest.raises(P.RpcProtocolError):
        P.parse_pdu(mutate(BIND_GOLDEN))


def test_pdu_truncated_bodies_raise():
    for cut in range(17, len(BIND_GOLDEN)):
        raw = BIND_GOLDEN[:cut]
        raw = raw[:8] + struct.pack("<H", cut) + raw[10:]
        with pytest.raises(P.RpcProtocolError):
            P.parse_pdu(raw)


# ====================================================================== bind / negotiation
def test_pipe_negotiates_each_context():
    """C706 12.6.3.1 / MS-RPCE 3.3.1.5.6: per p_cont_elem, NDR20 accepted; NDR64 only ->
    proposed_transfer_syntaxes_not_supported; unknown interface -> abstract_syntax_not_supported;
    the bind time feature negotiation element -> negotiate_ack with our bitmask (3.3.1.5.3)."""
    pipe = new_pipe()
    ack = bind(pipe,
               P.ContextElem(0, SRVSVC_SYNTAX, [NDR64]),
               P.ContextElem(1, UNKNOWN_IF, [P.NDR20]),
               P.ContextElem(2, SRVSVC_SYNTAX, [NDR64, P.NDR20]),
               P.ContextElem(3, SRVSVC_SYNTAX, [BTFN]),
               P.ContextElem(4, P.SyntaxId(SRVSVC_SYNTAX.uuid, 2), [P.NDR20]))
    assert isinstance(ack, P.BindAck)
    assert [(r.result, r.reason) for r in ack.results] == [
        (P.PROVIDER_REJECTION, P.PROPOSED_TRANSFER_SYNTAXES_NOT_SUPPORTED),
        (P.PROVIDER_REJECTION, P.ABSTRACT_SYNTAX_NOT_SUPPORTED),
        (P.ACCEPTANCE, 0),
        (P.NEGOTIATE_ACK, P.KEEP_CONNECTION_ON_ORPHAN_SUPPORTED),
        (P.PROVIDER_REJECTION, P.ABSTRACT_SYNTAX_NOT_SUPPORTED),  # major version 2 != 3
    ]
    assert ack.results[2].transfer_syntax == P.NDR20
    assert ack.results[0].transfer_syntax == ack.results[3].transfer_syntax == P.NULL_SYNTAX
    assert sorted(pipe.contexts) == [2]


def test_pipe_bind_naks():
    pipe = new_pipe()
    b = P.Bind(call_id=1, contexts=[P.ContextElem(0, SRVSVC_SYNTAX, [P.NDR20])],
               auth_verifier=P.SecTrailer(auth_type=10, auth_level=2, auth_pad_length=0,
                                          auth_context_id=0).pack(0) + b"NTLMSSP\0" + b"\0" * 8)
    pipe.write(b.pack())
    (nak,) = drain(pipe)
    assert isinstance(nak, P.BindNak) and nak.provider_reject_reason == P.NAK_AUTHENTICATION_TYPE_NOT_RECOGNIZED
    assert nak.versions == [(5, 0)]
    pipe.write(P.Bind(call_id=2, contexts=[]).pack())
    (nak,) = drain(pipe)
    assert isinstance(nak, P.BindNak) and nak.provider_reject_reason == P.NAK_REASON_NOT_SPECIFIED
    assert isinstance(bind(pipe, call_id=3), P.BindAck)
    second = bind(pipe, call_id=4)
    assert isinstance(second, P.BindNak) and second.provider_reject_reason == P.NAK_PROTOCOL_VERSION_NOT_SUPPORTED
    bad = bytearray(BIND_GOLDEN)
    bad[4] = 0x00  # big-endian data representation: frag_length (and everything) big-endian
    bad[8:10] = struct.pack(">H", len(bad))
    pipe2 = new_pipe()
    pipe2.write(bytes(bad))
    (nak,) = drain(pipe2)
    assert isinstance(nak, P.BindNak) and nak.provider_reject_reason == P.NAK_PROTOCOL_VERSION_NOT_SUPPORTED


def test_pipe_fragment_sizes_are_clamped():
    pipe = new_pipe()
    ack = bind(pipe, max_frag=100)
    assert ack.max_xmit_frag == ack.max_recv_frag == P.MUST_RECV_FRAG_SIZE
    pipe = new_pipe()
    ack = bind(pipe, max_frag=65000)
    assert ack.max_xmit_frag == ack.max_recv_frag == RpcPipe.MAX_FRAG


def test_pipe_alter_context():
    pipe = new_pipe()
    pipe.write(P.AlterContext(call_id=1, contexts=[P.ContextElem(5, SRVSVC_SYNTAX, [P.NDR20])]).pack())
    (f,) = drain(pipe)
    assert isinstance(f, P.Fault) and f.status == P.NCA_S_PROTO_ERROR  # before bind
    bind(pipe, P.ContextElem(0, UNKNOWN_IF, [P.NDR20]))
    assert not pipe.contexts
    pipe.write(P.AlterContext(call_id=2, contexts=[P.ContextElem(5, SRVSVC_SYNTAX, [P.NDR20])]).pack())
    (resp,) = drain(pipe)
    assert isinstance(resp, P.AlterContextResp) and resp.results == [P.Result(P.ACCEPTANCE, 0, P.NDR20)]
    assert resp.sec_addr == b""
    pipe.write(P.Request(call_id=3, p_cont_id=5, opnum=15, stub=share_enum_stub()).pack())
    (r,) = drain(pipe)
    assert isinstance(r, P.Response) and share_enum_reply(r.stub)[3] == 0


# ====================================================================== requests, faults
def call(pipe: RpcPipe, opnum: int, stub: bytes, call_id: int = 5, p_cont_id: int = 0, **kw) -> P.Pdu:
    pipe.write(P.Request(call_id=call_id, p_cont_id=p_cont_id, opnum=opnum, stub=stub, **kw).pack())
    out = drain(pipe)
    assert len(out) == 1
    assert out[0].call_id == call_id
    return out[0]


def test_pipe_faults():
    pipe = new_pipe()
    f = call(pipe, 15, share_enum_stub())
    assert isinstance(f, P.Fault) and f.status == P.NCA_S_PROTO_ERROR  # no bind yet
    assert f.pfc_flags & P.PFC_DID_NOT_EXECUTE
    bind(pipe)
    f = call(pipe, 15, share_enum_stub(), p_cont_id=9)
    assert isinstance(f, P.Fault) and f.status == P.NCA_S_UNK_IF
    f = call(pipe, 99, b"")
    assert isinstance(f, P.Fault) and f.status == P.NCA_S_OP_RNG_ERROR and f.pfc_flags & P.PFC_DID_NOT_EXECUTE
    f = call(pipe, 15, share_enum_stub()[:-6])
    assert isinstance(f, P.Fault) and f.status == P.NCA_S_FAULT_NDR
    auth = P.SecTrailer(auth_type=10, auth_level=6, auth_pad_length=0, auth_context_id=0).pack(0) + b"\0" * 16
    f = call(pipe, 15, share_enum_stub(), auth_verifier=auth)
    assert isinstance(f, P.Fault) and f.status == P.NCA_S_FAULT_ACCESS_DENIED
    r = call(pipe, 15, share_enum_stub())  # the association still works
    assert isinstance(r, P.Response) and r.pfc_flags & 3 == 3


def test_pipe_unexpected_pdu_types_fault():
    pipe = new_pipe()
    bind(pipe)
    pipe.write(P.Response(call_id=8, stub=b"").pack())
    (f,) = drain(pipe)
    assert isinstance(f, P.Fault) and f.call_id == 8 and f.status == P.NCA_S_PROTO_ERROR
    pipe.write(P.Simple(call_id=9, ptype=P.CO_CANCEL).pack())
    assert drain(pipe) == []


def test_pipe_request_fragments_reassembled():
    stub = share_enum_stub(level=1)
    whole = new_pipe()
    bind(whole)
    expected = call(whole, 15, stub)
    pipe = new_pipe()
    bind(pipe)
    parts = [stub[:8], stub[8:16], stub[16:]]
    flags = [P.PFC_FIRST_FRAG, 0, P.PFC_LAST_FRAG]
    for part, fl in zip(parts, flags):
        pipe.write(P.Request(call_id=5, pfc_flags=fl, opnum=15, alloc_hint=len(stub), stub=part).pack())
        if fl != P.PFC_LAST_FRAG:
            assert pipe.pending() == 0
    (got,) = drain(pipe)
    assert got == expected


def test_pipe_fragment_of_another_call_is_a_protocol_error():
    pipe = new_pipe()
    bind(pipe)
    pipe.write(P.Request(call_id=5, pfc_flags=P.PFC_FIRST_FRAG, opnum=15, stub=b"\0" * 8).pack())
    pipe.write(P.Request(call_id=6, pfc_flags=0, opnum=15, stub=b"\0" * 8).pack())
    pipe.write(P.Request(call_id=6, pfc_flags=P.PFC_LAST_FRAG, opnum=15, stub=b"\0" * 8).pack())
    (f,) = drain(pipe)
    assert isinstance(f, P.Fault) and f.call_id == 6 and f.status == P.NCA_S_PROTO_ERROR
    # the orphaned PDU discards the call being reassembled
    pipe.write(P.Request(call_id=7, pfc_flags=P.PFC_FIRST_FRAG, opnum=15, stub=share_enum_stub()[:8]).pack())
    pipe.write(P.Simple(call_id=7, ptype=P.ORPHANED, pfc_flags=3).pack())
    pipe.write(P.Request(call_id=7, pfc_flags=P.PFC_LAST_FRAG, opnum=15, stub=share_enum_stub()[8:]).pack())
    (f,) = drain(pipe)
    assert isinstance(f, P.Fault) and f.status == P.NCA_S_PROTO_ERROR


def test_pipe_oversized_request_faults_once():
    pipe = new_pipe()
    bind(pipe)
    pipe.MAX_REQUEST = 64
    for i in range(6):
        fl = (P.PFC_FIRST_FRAG if i == 0 else 0) | (P.PFC_LAST_FRAG if i == 5 else 0)
        pipe.write(P.Request(call_id=3, pfc_flags=fl, opnum=15, stub=b"\0" * 24).pack())
    out = drain(pipe)
    assert len(out) == 1 and isinstance(out[0], P.Fault) and out[0].status == P.NCA_S_PROTO_ERROR
    assert isinstance(call(pipe, 15, share_enum_stub(), call_id=4), P.Response)


def test_pipe_response_fragmented_to_max_xmit_frag():
    """C706 12.6 fragmentation: every fragment <= the negotiated size, stub chunks
    8-octet multiples, alloc_hint = stub bytes left, FIRST on the first, LAST on the last."""
    server = server_with_shares(60)
    pipe = new_pipe(server)
    ack = bind(pipe, max_frag=1432)
    assert ack.max_xmit_frag == 1432
    pipe.write(P.Request(call_id=5, opnum=15, stub=share_enum_stub(level=1)).pack())
    frags = drain(pipe)
    assert len(frags) > 3
    total = sum(len(f.stub) for f in frags)
    left = total
    for i, f in enumerate(frags):
        assert isinstance(f, P.Response) and f.call_id == 5
        assert len(f.pack()) <= 1432
        assert bool(f.pfc_flags & P.PFC_FIRST_FRAG) == (i == 0)
        assert bool(f.pfc_flags & P.PFC_LAST_FRAG) == (i == len(frags) - 1)
        assert f.alloc_hint == left
        if i < len(frags) - 1:
            assert len(f.stub) % 8 == 0
        left -= len(f.stub)
    info, total_entries, _resume, status = share_enum_reply(b"".join(f.stub for f in frags))
    assert status == 0 and total_entries == 62
    names = [e["shi1_netname"] for e in info["ShareInfo"][1]["Buffer"]]
    assert {"IPC$", "share"} <= set(names) and len(names) == 62


# ====================================================================== pipe reads
def test_pipe_reads_are_message_mode():
    pipe = new_pipe()
    pipe.write(BIND_GOLDEN)
    pipe.write(P.Request(call_id=2, opnum=15, stub=share_enum_stub()).pack())
    first = pipe.read(10)
    assert first == BIND_ACK_GOLDEN[:10]
    assert pipe.read(4096) == BIND_ACK_GOLDEN[10:]  # the rest of that PDU, not more
    resp = pipe.read(4096)
    assert isinstance(P.parse_pdu(resp), P.Response)
    assert pipe.read(0) == b""
    with pytest.raises(NtStatusError) as ei:
        pipe.read(10)
    assert ei.value.status == STATUS_PIPE_EMPTY


def test_pipe_transceive_overflow_leaves_the_rest_for_read():
    """FSCTL_PIPE_TRANSCEIVE with a short output buffer: the SMB layer sends max_output
    bytes with STATUS_BUFFER_OVERFLOW (it sees one byte more than fits), the remainder is READ."""
    pipe = new_pipe()
    out = pipe.transceive(BIND_GOLDEN, 20)
    assert len(out) == 21 and out[:20] == BIND_ACK_GOLDEN[:20]
    assert pipe.read(4096) == BIND_ACK_GOLDEN[20:]
    full = pipe.transceive(P.Request(call_id=2, opnum=15, stub=share_enum_stub()).pack(), 4280)
    assert isinstance(P.parse_pdu(full), P.Response) and pipe.pending() == 0


def test_pipe_pdu_split_across_writes_and_glued_together():
    pipe = new_pipe()
    req = P.Request(call_id=2, opnum=15, stub=share_enum_stub()).pack()
    stream = BIND_GOLDEN + req
    for i in range(0, len(stream), 7):
        pipe.write(stream[i:i + 7])
    out = drain(pipe)
    assert isinstance(out[0], P.BindAck) and isinstance(out[1], P.Response)


def test_pipe_garbage_stream_faults_and_recovers():
    pipe = new_pipe()
    pipe.write(b"\x04" + b"\xff" * 40)  # rpc_vers 4: the stream cannot be framed
    (f,) = drain(pipe)
    assert isinstance(f, P.Fault) and f.status == P.NCA_S_PROTO_ERROR
    pipe.write(H("05000b03100000000800") + b"\0" * 6)  # frag_length 8 < 16
    (f,) = drain(pipe)
    assert isinstance(f, P.Fault)
    assert isinstance(bind(pipe), P.BindAck)


def test_pipe_close_drops_everything():
    pipe = new_pipe()
    pipe.write(BIND_GOLDEN)
    pipe.close()
    assert pipe.pending() == 0
    pipe.write(BIND_GOLDEN)
    assert pipe.pending() == 0


def test_pipe_flow_control_when_replies_are_not_read():
    """A client that writes many requests without reading: replies queue up to MAX_QUEUED,
    the rest of the input waits (and is answered as the client reads); a further write
    while whole PDUs wait is refused with STATUS_INSUFFICIENT_RESOURCES."""
    pipe = new_pipe()
    bind(pipe)
    pipe.MAX_QUEUED = 300
    reqs = b"".join(P.Request(call_id=10 + i, opnum=15, stub=share_enum_stub()).pack() for i in range(20))
    pipe.write(reqs)
    assert 300 <= pipe.pending() < 300 + 400
    with pytest.raises(NtStatusError) as ei:
        pipe.write(P.Request(call_id=99, opnum=15, stub=share_enum_stub()).pack())
    assert ei.value.status == 0xC000009A
    got = []
    for _ in range(100):
        if not pipe.pending():
            break
        got.append(P.parse_pdu(pipe.read(1 << 16)))
    assert [r.call_id for r in got] == list(range(10, 30))
    assert all(isinstance(r, P.Response) for r in got)


# ====================================================================== fuzz
def _valid_pdus() -> list[bytes]:
    stub = share_enum_stub()
    return [
        BIND_GOLDEN,
        P.Bind(call_id=2, contexts=[P.ContextElem(0, SRVSVC_SYNTAX, [BTFN]),
                                    P.ContextElem(1, SRVSVC_SYNTAX, [P.NDR20])]).pack(),
        P.AlterContext(call_id=3, contexts=[P.ContextElem(1, SRVSVC_SYNTAX, [P.NDR20])]).pack(),
        P.Request(call_id=4, opnum=15, stub=stub).pack(),
        P.Request(call_id=5, opnum=12, stub=stub).pack(),
        P.Request(call_id=6, opnum=16, stub=stub).pack(),
        P.Request(call_id=7, opnum=21, stub=H("0000000065000000")).pack(),
        P.Request(call_id=8, opnum=28, stub=H("00000000")).pack(),
        P.Request(call_id=9, pfc_flags=P.PFC_FIRST_FRAG, opnum=15, stub=stub[:16]).pack(),
        P.Request(call_id=9, pfc_flags=P.PFC_LAST_FRAG, opnum=15, stub=stub[16:]).pack(),
    ]


def _check_outputs(pipe: RpcPipe) -> None:
    while pipe.pending():
        raw = pipe.read(1 << 16)
        pdu = P.parse_pdu(raw)
        assert isinstance(pdu, (P.BindAck, P.BindNak, P.AlterContextResp, P.Response, P.Fault))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=200), max_size=6))
def test_fuzz_pipe_random_bytes(chunks):
    pipe = new_pipe()
    pipe.write(BIND_GOLDEN)
    for c in chunks:
        assert pipe.write(c) == len(c)
        _check_outputs(pipe)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 9), st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)),
                                                       max_size=4), st.integers(0, 3)), min_size=1, max_size=8))
def test_fuzz_pipe_mutated_pdus(ops):
    """Valid PDUs with bytes overwritten (header fields, counts, union tags, referent ids),
    truncated or extended: every write gives well-formed PDUs back, never an exception."""
    valid = _valid_pdus()
    pipe = new_pipe(server_with_shares(3))
    for idx, mutations, cut in ops:
        raw = bytearray(valid[idx])
        for pos, val in mutations:
            if pos < len(raw):
                raw[pos] = val
        if cut == 1:
            raw = raw[:len(raw) // 2]
        elif cut == 2:
            raw += b"\x00" * 9
        pipe.write(bytes(raw))
        _check_outputs(pipe)
