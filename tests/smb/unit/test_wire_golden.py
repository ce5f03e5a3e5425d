"""Byte-exact golden tests of the SMB2 wire structures (MS-SMB2 2.2).

The expected bytes are assembled by hand, field by field, from the layouts in MS-SMB2
(the comments name each field), not produced by the code under test.
"""
import struct

import pytest

from wsd_smb import ntstatus
from wsd_smb.wire import (
    FILEID_RELATED, CloseRequest, CreateContext, CreateRequest, CreateResponse, EchoResponse, ErrorResponse,
    FileId, IoctlResponse, LeaseBreakNotification, LockElement, LockRequest, NegotiateContext, NegotiateRequest,
    NegotiateResponse, PreauthIntegrityCapabilities, QueryInfoRequest, ReadRequest, ReadResponse,
    SessionSetupRequest, SessionSetupResponse, SetInfoResponse, Smb2Header, TransformHeader, TreeConnectRequest,
    TreeConnectResponse, WriteRequest, pack_create_contexts, unpack_create_contexts,
)
from wsd_smb.wire.header import SMB2_FLAGS_ASYNC_COMMAND, Command

H = bytes(64)  # a placeholder header: bodies are parsed at offset 64


def test_header_sync_golden():
    # MS-SMB2 2.2.1.2 SYNC header
    expect = (b"\xfeSMB" + b"\x40\x00"  # ProtocolId, StructureSize=64
              + b"\x01\x00"  # CreditCharge
              + b"\x00\x00\x00\x00"  # Status
              + b"\x05\x00"  # Command CREATE
              + b"\x1f\x00"  # CreditRequest 31
              + b"\x08\x00\x00\x00"  # Flags SIGNED
              + b"\x00\x00\x00\x00"  # NextCommand
              + b"\x07\x00\x00\x00\x00\x00\x00\x00"  # MessageId 7
              + b"\xff\xfe\x00\x00"  # Reserved (ProcessId 0xFEFF)
              + b"\x02\x00\x00\x00"  # TreeId 2
              + b"\x11\x22\x33\x44\x55\x66\x77\x88"  # SessionId
              + bytes(range(16)))  # Signature
    h = Smb2Header(Command.SMB2_CREATE, credit_charge=1, credit=31, flags=8, message_id=7, process_id=0xFEFF,
                   tree_id=2, session_id=0x8877665544332211, signature=bytes(range(16)))
    assert h.pack() == expect
    g = Smb2Header.unpack(expect)
    assert (g.command, g.tree_id, g.session_id, g.message_id, g.credit) == (5, 2, 0x8877665544332211, 7, 31)


def test_header_async_golden():
    # MS-SMB2 2.2.1.1 ASYNC header: AsyncId replaces Reserved+TreeId
    h = Smb2Header(Command.SMB2_CHANGE_NOTIFY, status=0x103, flags=SMB2_FLAGS_ASYNC_COMMAND | 1, async_id=0x0A0B)
    raw = h.pack()
    assert raw[8:12] == b"\x03\x01\x00\x00"  # Status STATUS_PENDING
    assert raw[16:20] == b"\x03\x00\x00\x00"  # Flags
    assert raw[32:40] == b"\x0b\x0a\x00\x00\x00\x00\x00\x00"  # AsyncId
    assert Smb2Header.unpack(raw).async_id == 0x0A0B


def test_header_rejects_bad_protocol_and_size():
    raw = bytearray(Smb2Header(0).pack())
    raw[0] = 0xFF
    with pytest.raises(ntstatus.NtStatusError):
        Smb2Header.unpack(bytes(raw))
    raw = bytearray(Smb2Header(0).pack())
    raw[4] = 63
    with pytest.raises(ntstatus.StatusInvalidParameter):
        Smb2Header.unpack(bytes(raw))


def test_error_response_golden():
    # MS-SMB2 2.2.2: StructureSize 9, ErrorContextCount 0, Reserved 0, ByteCount 0, ErrorData 1 byte
    assert ErrorResponse().pack() == b"\x09\x00" + b"\x00" + b"\x00" + b"\x00\x00\x00\x00" + b"\x00"


def test_negotiate_request_311_golden():
    # MS-SMB2 2.2.3 with two dialects and one preauth context (2.2.3.1.1)
    salt = bytes(range(32))
    body = (b"\x24\x00"  # StructureSize 36
            + b"\x02\x00"  # DialectCount
            + b"\x01\x00"  # SecurityMode SIGNING_ENABLED
            + b"\x00\x00"  # Reserved
            + b"\x44\x00\x00\x00"  # Capabilities ENCRYPTION
            + b"G" * 16  # ClientGuid
            + struct.pack("<I", 64 + 36 + 4)  # NegotiateContextOffset: right after dialects (0x68, 8-aligned)
            + b"\x01\x00"  # NegotiateContextCount
            + b"\x00\x00"  # Reserved2
            + b"\x02\x02" + b"\x11\x03"  # Dialects 0x0202, 0x0311
            + b"\x01\x00" + b"\x26\x00" + b"\x00" * 4  # ContextType PREAUTH, DataLength 38, Reserved
            + b"\x01\x00" + b"\x20\x00" + b"\x01\x00" + salt)  # HashAlgorithmCount 1, SaltLength 32, SHA-512, Salt
    req = NegotiateRequest(security_mode=1, capabilities=0x44, client_guid=b"G" * 16, dialects=[0x0202, 0x0311],
                           negotiate_contexts=[NegotiateContext(context_type=1, data=PreauthIntegrityCapabilities(
                               hash_algorithms=[1], salt=salt).pack())])
    assert req.pack() == body
    got = NegotiateRequest.unpack(H + body)
    assert got.dialects == [0x0202, 0x0311]
    pc = PreauthIntegrityCapabilities.unpack(got.negotiate_contexts[0].data, 0)
    assert pc.hash_algorithms == [1] and pc.salt == salt


def test_negotiate_response_golden():
    # MS-SMB2 2.2.4, dialect 0x0210, 3-byte security buffer at 0x80
    body = (b"\x41\x00" + b"\x03\x00" + b"\x10\x02" + b"\x00\x00" + b"S" * 16
            + b"\x07\x00\x00\x00" + struct.pack("<III", 65536, 65536, 65536)
            + struct.pack("<QQ", 1, 2)
            + b"\x80\x00" + b"\x03\x00"  # SecurityBufferOffset 128, Length 3
            + b"\x00\x00\x00\x00"  # NegotiateContextOffset
            + b"abc")
    rsp = NegotiateResponse(security_mode=3, dialect_revision=0x0210, server_guid=b"S" * 16, capabilities=7,
                            max_transact_size=65536, max_read_size=65536, max_write_size=65536, system_time=1,
                            server_start_time=2, security_buffer=b"abc")
    assert rsp.pack() == body
    assert NegotiateResponse.unpack(H + body) == rsp


def test_session_setup_golden():
    # MS-SMB2 2.2.5 / 2.2.6
    req = (b"\x19\x00" + b"\x00" + b"\x01" + b"\x01\x00\x00\x00" + b"\x00\x00\x00\x00"
           + b"\x58\x00" + b"\x04\x00" + b"\x00" * 8 + b"NTLM")
    r = SessionSetupRequest.unpack(H + req)
    assert (r.security_mode, r.capabilities, r.security_buffer) == (1, 1, b"NTLM")
    assert SessionSetupRequest(security_mode=1, capabilities=1, security_buffer=b"NTLM").pack() == req
    rsp = b"\x09\x00" + b"\x01\x00" + b"\x48\x00" + b"\x02\x00" + b"ok"
    assert SessionSetupResponse(session_flags=1, security_buffer=b"ok").pack() == rsp


def test_tree_connect_golden():
    path = "\\\\h\\IPC$".encode("utf-16-le")
    req = b"\x09\x00" + b"\x00\x00" + b"\x48\x00" + struct.pack("<H", len(path)) + path
    assert TreeConnectRequest(path=path).pack() == req
    assert TreeConnectRequest.unpack(H + req).path == path
    rsp = b"\x10\x00" + b"\x02" + b"\x00" + b"\x30\x00\x00\x00" + b"\x00" * 4 + b"\xff\x01\x1f\x00"
    assert TreeConnectResponse(share_type=2, share_flags=0x30, maximal_access=0x1F01FF).pack() == rsp


def test_create_request_golden_with_contexts():
    name = "a\\b.txt".encode("utf-16-le")  # 14 bytes
    ctx = (b"\x00\x00\x00\x00" + b"\x10\x00" + b"\x04\x00" + b"\x00\x00" + b"\x00\x00" + b"\x00\x00\x00\x00"
           + b"MxAc" + b"\x00" * 4)  # 2.2.13.2: Next 0, NameOffset 16, NameLength 4, DataOffset 0, DataLength 0
    ctx = ctx[:-4]  # the last context is not padded
    body = (b"\x39\x00" + b"\x00" + b"\x09" + b"\x02\x00\x00\x00" + b"\x00" * 8 + b"\x00" * 8
            + b"\x89\x00\x12\x00"  # DesiredAccess
            + b"\x80\x00\x00\x00"  # FileAttributes NORMAL
            + b"\x07\x00\x00\x00"  # ShareAccess
            + b"\x01\x00\x00\x00"  # CreateDisposition FILE_OPEN
            + b"\x40\x00\x00\x00"  # CreateOptions NON_DIRECTORY
            + b"\x78\x00" + b"\x0e\x00"  # NameOffset 0x78, NameLength 14
            + b"\x88\x00\x00\x00" + struct.pack("<I", len(ctx))  # CreateContextsOffset 0x88 (8-aligned)
            + name + b"\x00\x00" + ctx)
    req = CreateRequest(requested_oplock_level=9, impersonation_level=2, desired_access=0x00120089,
                        file_attributes=0x80, share_access=7, create_disposition=1, create_options=0x40,
                        name=name, create_contexts=pack_create_contexts([CreateContext(name=b"MxAc")]))
    assert req.pack() == body
    got = CreateRequest.unpack(H + body)
    assert got.name == name and [c.name for c in got.contexts] == [b"MxAc"]


def test_create_context_chain_alignment():
    chain = pack_create_contexts([CreateContext(name=b"DH2Q", data=b"x" * 20), CreateContext(name=b"RqLs", data=b"y")])
    first_next = struct.unpack_from("<I", chain)[0]
    assert first_next % 8 == 0 and first_next == 16 + 4 + 4 + 20 + 4  # header, name, pad, data, pad
    assert [(c.name, c.data) for c in unpack_create_contexts(chain)] == [(b"DH2Q", b"x" * 20), (b"RqLs", b"y")]
    with pytest.raises(ntstatus.StatusInvalidParameter):
        unpack_create_contexts(b"\x03\x00\x00\x00" + chain[4:])  # Next not 8-aligned / too small


def test_create_response_golden():
    body = (b"\x59\x00" + b"\x00" + b"\x00" + b"\x01\x00\x00\x00" + struct.pack("<QQQQQQ", 1, 2, 3, 4, 4096, 10)
            + b"\x20\x00\x00\x00" + b"\x00" * 4 + struct.pack("<QQ", 5, 6) + b"\x00" * 8)
    rsp = CreateResponse(create_action=1, creation_time=1, last_access_time=2, last_write_time=3, change_time=4,
                         allocation_size=4096, end_of_file=10, file_attributes=0x20, file_id=FileId(5, 6))
    assert rsp.pack() == body + b"\x00"  # odd StructureSize 89: 1 byte of Buffer


def test_read_golden():
    body = (b"\x31\x00" + b"\x50" + b"\x00" + b"\x00\x00\x01\x00" + struct.pack("<Q", 4096)
            + struct.pack("<QQ", 1, 2) + b"\x00" * 4 + b"\x00" * 4 + b"\x00" * 4 + b"\x00\x00" + b"\x00\x00" + b"\x00")
    req = ReadRequest.unpack(H + body)
    assert (req.padding, req.length, req.offset, req.file_id) == (0x50, 65536, 4096, FileId(1, 2))
    assert ReadRequest(padding=0x50, length=65536, offset=4096, file_id=FileId(1, 2)).pack() == body
    # 2.2.20: DataOffset 0x50 (one byte), DataLength 5
    assert ReadResponse(data=b"hello").pack() == (b"\x11\x00" + b"\x50" + b"\x00" + b"\x05\x00\x00\x00"
                                                  + b"\x00" * 4 + b"\x00" * 4 + b"hello")


def test_write_request_golden():
    body = (b"\x31\x00" + b"\x70\x00" + b"\x03\x00\x00\x00" + struct.pack("<Q", 9) + struct.pack("<QQ", 1, 2)
            + b"\x00" * 4 + b"\x00" * 4 + b"\x00\x00" + b"\x00\x00" + b"\x00" * 4 + b"xyz")
    req = WriteRequest.unpack(H + body)
    assert (req.offset, req.data, req.file_id) == (9, b"xyz", FileId(1, 2))
    assert WriteRequest(offset=9, file_id=FileId(1, 2), data=b"xyz").pack() == body


def test_lock_request_golden():
    body = (b"\x30\x00" + b"\x02\x00" + b"\x00" * 4 + struct.pack("<QQ", 1, 2)
            + struct.pack("<QQII", 0, 10, 2, 0) + struct.pack("<QQII", 10, 5, 4, 0))
    req = LockRequest.unpack(H + body)
    assert req.locks == [LockElement(offset=0, length=10, flags=2), LockElement(offset=10, length=5, flags=4)]
    assert LockRequest(file_id=FileId(1, 2), locks=req.locks).pack() == body
    with pytest.raises(ntstatus.StatusInvalidParameter):
        LockRequest.unpack(H + body[:-1])  # LockCount says 2, only 1.9 elements present


def test_ioctl_response_offsets_here_when_empty():
    # 2.2.32: Windows points InputOffset/OutputOffset at 0x70 even when the buffers are empty
    body = IoctlResponse(ctl_code=0x00140204, file_id=FILEID_RELATED, output=b"OUT").pack()
    assert body[:2] == b"\x31\x00"
    assert struct.unpack_from("<IIII", body, 24) == (0x70, 0, 0x70, 3)
    assert body[48:] == b"OUT"


def test_query_info_and_set_info_golden():
    body = (b"\x29\x00" + b"\x01" + b"\x05" + b"\x00\x10\x00\x00" + b"\x00\x00" + b"\x00\x00"
            + b"\x00" * 4 + b"\x00" * 4 + b"\x00" * 4 + struct.pack("<QQ", 3, 4) + b"\x00")
    q = QueryInfoRequest.unpack(H + body)
    assert (q.info_type, q.file_info_class, q.output_buffer_length, q.file_id) == (1, 5, 4096, FileId(3, 4))
    assert QueryInfoRequest(info_type=1, file_info_class=5, output_buffer_length=4096, file_id=FileId(3, 4)).pack() == body
    assert SetInfoResponse().pack() == b"\x02\x00"
    assert EchoResponse().pack() == b"\x04\x00\x00\x00"
    assert CloseRequest(file_id=FileId(1, 1)).pack() == b"\x18\x00" + b"\x00\x00" + b"\x00" * 4 + struct.pack("<QQ", 1, 1)


def test_lease_break_notification_golden():
    body = (b"\x2c\x00" + b"\x02\x00" + b"\x01\x00\x00\x00" + b"K" * 16 + b"\x07\x00\x00\x00" + b"\x01\x00\x00\x00"
            + b"\x00" * 12)
    n = LeaseBreakNotification(new_epoch=2, flags=1, lease_key=b"K" * 16, current_lease_state=7, new_lease_state=1)
    assert n.pack() == body


def test_transform_header_golden():
    raw = (b"\xfdSMB" + b"S" * 16 + b"N" * 11 + b"\x00" * 5 + b"\x40\x00\x00\x00" + b"\x00\x00" + b"\x01\x00"
           + b"\x01\x00\x00\x00\x00\x00\x00\x00")
    t = TransformHeader(signature=b"S" * 16, nonce=b"N" * 11 + b"\x00" * 5, original_message_size=64, session_id=1)
    assert t.pack(0) == raw and len(raw) == 52
    assert TransformHeader.unpack(raw, 0) == t


def test_bad_structure_size_and_offsets_rejected():
    with pytest.raises(ntstatus.StatusInvalidParameter):
        SessionSetupRequest.unpack(H + b"\x18\x00" + bytes(30))  # StructureSize 24 != 25
    # SecurityBufferOffset pointing into the header
    bad = b"\x19\x00" + b"\x00\x01" + bytes(8) + b"\x10\x00" + b"\x04\x00" + bytes(8) + b"NTLM"
    with pytest.raises(ntstatus.StatusInvalidParameter):
        SessionSetupRequest.unpack(H + bad)
    # buffer past the end
    bad = b"\x19\x00" + b"\x00\x01" + bytes(8) + b"\x58\x00" + b"\x40\x00" + bytes(8) + b"NTLM"
    with pytest.raises(ntstatus.StatusInvalidParameter):
        SessionSetupRequest.unpack(H + bad)
    # reserved field (TreeConnectResponse.Reserved) must be zero
    with pytest.raises(ntstatus.StatusInvalidParameter):
        TreeConnectResponse.unpack(H + b"\x10\x00\x01\x05" + bytes(12))


def test_small_fixed_structures_golden():
    from wsd_smb.wire import (CancelRequest, FlushRequest, LogoffRequest, LogoffResponse, TreeDisconnectRequest,
                              WriteResponse)
    for cls in (LogoffRequest, LogoffResponse, TreeDisconnectRequest, CancelRequest):
        assert cls().pack() == b"\x04\x00\x00\x00"  # StructureSize 4, Reserved 0 (2.2.7/8/11/30)
    # 2.2.17 FLUSH: StructureSize 24, Reserved1(2), Reserved2(4), FileId
    assert FlushRequest(file_id=FileId(9, 8)).pack() == b"\x18\x00" + b"\x00" * 6 + struct.pack("<QQ", 9, 8)
    # 2.2.22 WRITE response: StructureSize 17, Reserved, Count, Remaining, WriteChannelInfoOffset/Length
    assert WriteResponse(count=5).pack() == b"\x11\x00" + b"\x00\x00" + b"\x05\x00\x00\x00" + b"\x00" * 8 + b"\x00"


def test_close_response_golden():
    from wsd_smb.wire import CloseResponse
    body = b"\x3c\x00" + b"\x01\x00" + b"\x00" * 4 + struct.pack("<QQQQQQ", 1, 2, 3, 4, 8, 7) + b"\x20\x00\x00\x00"
    r = CloseResponse(flags=1, creation_time=1, last_access_time=2, last_write_time=3, change_time=4,
                      allocation_size=8, end_of_file=7, file_attributes=0x20)
    assert r.pack() == body and CloseResponse.unpack(H + body) == r


def test_query_directory_golden():
    from wsd_smb.wire import QueryDirectoryRequest, QueryDirectoryResponse
    pat = "*".encode("utf-16-le")
    body = (b"\x21\x00" + b"\x25" + b"\x01" + b"\x00" * 4 + struct.pack("<QQ", 1, 2)
            + b"\x60\x00" + b"\x02\x00" + b"\x00\x00\x01\x00" + pat)  # FileNameOffset 0x60
    q = QueryDirectoryRequest(file_information_class=0x25, flags=1, file_id=FileId(1, 2), file_name=pat,
                              output_buffer_length=65536)
    assert q.pack() == body and QueryDirectoryRequest.unpack(H + body).file_name == pat
    # 2.2.34: StructureSize 9, OutputBufferOffset 0x48, OutputBufferLength
    assert QueryDirectoryResponse(output_buffer=b"abcd").pack() == b"\x09\x00\x48\x00\x04\x00\x00\x00abcd"


def test_change_notify_golden():
    from wsd_smb.wire import ChangeNotifyRequest, ChangeNotifyResponse
    body = b"\x20\x00" + b"\x01\x00" + b"\x00\x10\x00\x00" + struct.pack("<QQ", 5, 6) + b"\x17\x00\x00\x00" + b"\x00" * 4
    n = ChangeNotifyRequest(flags=1, output_buffer_length=4096, file_id=FileId(5, 6), completion_filter=0x17)
    assert n.pack() == body and ChangeNotifyRequest.unpack(H + body) == n
    assert ChangeNotifyResponse().pack() == b"\x09\x00\x48\x00\x00\x00\x00\x00\x00"


def test_set_info_and_ioctl_request_golden():
    from wsd_smb.wire import IoctlRequest, SetInfoRequest
    buf = b"\x01" * 8
    body = (b"\x21\x00" + b"\x01" + b"\x14" + b"\x08\x00\x00\x00" + b"\x60\x00" + b"\x00\x00"
            + b"\x00" * 4 + struct.pack("<QQ", 1, 2) + buf)
    s = SetInfoRequest(info_type=1, file_info_class=0x14, file_id=FileId(1, 2), buffer=buf)
    assert s.pack() == body and SetInfoRequest.unpack(H + body).buffer == buf
    inp = b"IN"
    body = (b"\x39\x00" + b"\x00\x00" + b"\x04\x02\x14\x00" + struct.pack("<QQ", 3, 4)
            + b"\x78\x00\x00\x00" + b"\x02\x00\x00\x00" + b"\x00" * 4  # InputOffset 0x78, InputCount 2, MaxInput
            + b"\x00" * 4 + b"\x00" * 4 + b"\x00\x01\x00\x00"  # OutputOffset 0, OutputCount 0, MaxOutput 256
            + b"\x01\x00\x00\x00" + b"\x00" * 4 + inp)
    i = IoctlRequest(ctl_code=0x00140204, file_id=FileId(3, 4), input=inp, max_output_response=256, flags=1)
    assert i.pack() == body and IoctlRequest.unpack(H + body).input == inp


def test_oplock_and_lease_break_ack_golden():
    from wsd_smb.wire import LeaseBreakAcknowledgment, OplockBreakAcknowledgment, parse_request
    ob = b"\x18\x00" + b"\x01" + b"\x00" + b"\x00" * 4 + struct.pack("<QQ", 1, 2)
    assert OplockBreakAcknowledgment(oplock_level=1, file_id=FileId(1, 2)).pack() == ob
    lb = b"\x24\x00" + b"\x00\x00" + b"\x00" * 4 + b"L" * 16 + b"\x01\x00\x00\x00" + b"\x00" * 8
    assert LeaseBreakAcknowledgment(lease_key=b"L" * 16, lease_state=1).pack() == lb
    # OPLOCK_BREAK requests are told apart by StructureSize (2.2.24.1 vs 2.2.24.2)
    assert isinstance(parse_request(Command.SMB2_OPLOCK_BREAK, H + ob), OplockBreakAcknowledgment)
    assert isinstance(parse_request(Command.SMB2_OPLOCK_BREAK, H + lb), LeaseBreakAcknowledgment)


def test_negotiate_context_capabilities_golden():
    from wsd_smb.wire import EncryptionCapabilities, SigningCapabilities
    assert EncryptionCapabilities(ciphers=[2, 1]).pack() == b"\x02\x00\x02\x00\x01\x00"  # 2.2.3.1.2
    assert SigningCapabilities(signing_algorithms=[2]).pack() == b"\x01\x00\x02\x00"  # 2.2.3.1.7
    with pytest.raises(ntstatus.StatusInvalidParameter):
        EncryptionCapabilities.unpack(b"\x05\x00\x01\x00", 0)  # count says 5, one present


def test_create_context_data_golden():
    from wsd_smb.wire import contexts as cx
    # 2.2.13.2.10 RqLs v2: LeaseKey, LeaseState, Flags, LeaseDuration, ParentLeaseKey, Epoch, Reserved
    raw = b"K" * 16 + b"\x07\x00\x00\x00" + b"\x04\x00\x00\x00" + b"\x00" * 8 + b"P" * 16 + b"\x03\x00" + b"\x00\x00"
    v2 = cx.lease_request_from(raw)
    assert isinstance(v2, cx.LeaseRequestV2) and (v2.lease_state, v2.flags, v2.epoch) == (7, 4, 3)
    assert v2.pack(0) == raw and len(raw) == 52
    v1 = cx.lease_request_from(raw[:32])
    assert isinstance(v1, cx.LeaseRequest) and v1.lease_key == b"K" * 16
    # 2.2.13.2.11 DH2Q: Timeout, Flags, Reserved, CreateGuid
    raw = b"\x60\xea\x00\x00" + b"\x02\x00\x00\x00" + b"\x00" * 8 + b"G" * 16
    d = cx.DurableHandleRequestV2.unpack(raw, 0)
    assert (d.timeout, d.flags, d.create_guid) == (60000, cx.SMB2_DHANDLE_FLAG_PERSISTENT, b"G" * 16)
    # 2.2.13.2.12 DH2C: FileId, CreateGuid, Flags
    raw = struct.pack("<QQ", 1, 2) + b"G" * 16 + b"\x00\x00\x00\x00"
    assert cx.DurableHandleReconnectV2.unpack(raw, 0).file_id == FileId(1, 2)
    # 2.2.14.2.5 MxAc response, 2.2.14.2.9 QFid response
    assert cx.QueryMaximalAccessResponse(maximal_access=0x1F01FF).pack(0) == b"\x00" * 4 + b"\xff\x01\x1f\x00"
    assert cx.QueryOnDiskIdResponse(disk_file_id=5, volume_id=9).pack(0) == struct.pack("<QQ", 5, 9) + b"\x00" * 16
    # 2.2.13.2.13 AppInstanceId: StructureSize 20 checked
    with pytest.raises(ntstatus.StatusInvalidParameter):
        cx.AppInstanceId.unpack(b"\x10\x00\x00\x00" + b"A" * 16, 0)
    with pytest.raises(ntstatus.StatusInvalidParameter):
        cx.lease_request_from(b"short")


def test_pack_parts_concatenate_to_pack_and_keep_a_big_payload_uncopied():
    """pack_parts(): the same bytes as pack(), with a READ payload passed through as is (the
    message assembly copies it once); structures that override pack() come back whole."""
    import os as _os

    from wsd_smb.wire import commands as _c

    data = _os.urandom(1 << 20)
    rsp = _c.ReadResponse(data=data)
    parts = rsp.pack_parts(64)
    assert b"".join(parts) == rsp.pack(64)
    assert any(p is data for p in parts)
    lock = _c.LockRequest(locks=[])
    assert lock.pack_parts(64) == [lock.pack(64)]


def test_read_response_assembled_in_the_payload_headroom():
    """A READ body whose payload sits in a HeadroomBuffer is assembled in place: the same
    bytes as the copying assembly, in the payload's own buffer."""
    import os as _os

    from wsd_smb.buffers import HeadroomBuffer
    from wsd_smb.core.connection import _in_headroom, _Out
    from wsd_smb.wire import commands as _c
    from wsd_smb.wire.header import Smb2Header

    payload = _os.urandom(70000)
    buf = HeadroomBuffer(80, len(payload))
    buf[80:] = payload
    body = _c.ReadResponse(data=memoryview(buf)[80:]).pack_parts(64)
    hdr = Smb2Header(8, status=0, credit=1, message_id=7)
    o = _Out(hdr, body, None, False, None)
    raw = _in_headroom(o)
    assert raw is buf
    assert bytes(raw) == hdr.pack() + _c.ReadResponse(data=payload).pack(64)
    # a payload that does not fill its buffer's tail is left to the copying path
    short = HeadroomBuffer(80, 10)
    o2 = _Out(hdr, _c.ReadResponse(data=memoryview(short)[80:85]).pack_parts(64), None, False, None)
    assert _in_headroom(o2) is None


def test_copychunk_structures_golden():
    from wsd_smb.wire.copychunk import (SrvCopychunk, SrvCopychunkCopy, SrvCopychunkResponse,
                                        SrvRequestResumeKeyResponse, unpack_chunks)
    key = bytes(range(24))
    # MS-SMB2 2.2.32.3 SRV_REQUEST_RESUME_KEY Response
    assert SrvRequestResumeKeyResponse(resume_key=key).pack(0) == (
        key                      # ResumeKey (24 bytes)
        + b"\x00\x00\x00\x00"    # ContextLength 0
        + b"\x00\x00\x00\x00")   # Context (reserved, zero)
    # MS-SMB2 2.2.31.1 SRV_COPYCHUNK_COPY with two 2.2.31.1.1 SRV_COPYCHUNK entries
    raw = (key                                    # SourceKey
           + b"\x02\x00\x00\x00"                  # ChunkCount 2
           + b"\xee\xee\xee\xee"                  # Reserved (ignored by the server)
           + b"\x00\x10\x00\x00\x00\x00\x00\x00"  # SourceOffset 4096
           + b"\x00\x00\x00\x00\x01\x00\x00\x00"  # TargetOffset 2**32
           + b"\x30\x00\x00\x00"                  # Length 48
           + b"\x00\x00\x00\x00"                  # Reserved
           + b"\x01\x00\x00\x00\x00\x00\x00\x00"  # SourceOffset 1
           + b"\x02\x00\x00\x00\x00\x00\x00\x00"  # TargetOffset 2
           + b"\x00\x00\x10\x00"                  # Length 1 MiB
           + b"\x00\x00\x00\x00")                 # Reserved
    head = SrvCopychunkCopy.unpack(raw, 0)
    assert (head.source_key, head.chunk_count) == (key, 2)
    chunks = unpack_chunks(raw, head.chunk_count)
    assert [(x.source_offset, x.target_offset, x.length) for x in chunks] == [(4096, 1 << 32, 48), (1, 2, 1 << 20)]
    assert unpack_chunks(raw[:-1], 2) is None    # the array is one byte short
    assert SrvCopychunk(source_offset=4096, target_offset=1 << 32, length=48).pack(0) == raw[32:56]
    # MS-SMB2 2.2.32.1 SRV_COPYCHUNK_RESPONSE (here: the 3.3.5.15.6.2 limits)
    assert SrvCopychunkResponse(chunks_written=256, chunk_bytes_written=1 << 20,
                                total_bytes_written=16 << 20).pack(0) == (
        b"\x00\x01\x00\x00"      # ChunksWritten 256
        + b"\x00\x00\x10\x00"    # ChunkBytesWritten 1 MiB
        + b"\x00\x00\x00\x01")   # TotalBytesWritten 16 MiB


def test_sparse_fsctl_structures_golden():
    from wsd_smb.wire.sparse import (FSCTL_QUERY_ALLOCATED_RANGES, FSCTL_SET_SPARSE, FSCTL_SET_ZERO_DATA,
                                     FileAllocatedRangeBuffer, FileSetSparseBuffer, FileZeroDataInformation,
                                     pack_ranges)
    # MS-FSCC 2.3 control codes
    assert (FSCTL_SET_SPARSE, FSCTL_QUERY_ALLOCATED_RANGES, FSCTL_SET_ZERO_DATA) == (0x900C4, 0x940CF, 0x980C8)
    # FILE_SET_SPARSE_BUFFER: one BOOLEAN byte; any nonzero value sets, bytes after it are ignored
    assert FileSetSparseBuffer(set_sparse=1).pack(0) == b"\x01"
    assert FileSetSparseBuffer.unpack(b"\xff" + bytes(99), 0).set_sparse == 0xFF
    assert FileSetSparseBuffer.unpack(b"\x00", 0).set_sparse == 0
    # FILE_ALLOCATED_RANGE_BUFFER: FileOffset, Length, signed 64-bit little-endian
    raw = (b"\x00\x10\x00\x00\x00\x00\x00\x00"     # FileOffset 4096
           + b"\x00\x04\x00\x00\x01\x00\x00\x00")  # Length 2**32 + 1024
    assert FileAllocatedRangeBuffer(file_offset=4096, length=(1 << 32) + 1024).pack(0) == raw
    q = FileAllocatedRangeBuffer.unpack(raw + raw, 0)       # an oversize input: the first one counts
    assert (q.file_offset, q.length) == (4096, (1 << 32) + 1024)
    q = FileAllocatedRangeBuffer.unpack(b"\x00\x02" + bytes(6) + b"\xff" * 8, 0)
    assert (q.file_offset, q.length) == (512, -1)           # smbtorture's qar_overflow: negative length
    assert FileAllocatedRangeBuffer.FIXED_SIZE == 16
    # the reply: an array of them
    assert pack_ranges([(4096, (1 << 32) + 1024), (0, 1)]) == raw + bytes(8) + b"\x01" + bytes(7)
    assert pack_ranges([]) == b""
    # FILE_ZERO_DATA_INFORMATION: FileOffset, BeyondFinalZero
    raw = (b"\x00\x00\x01\x00\x00\x00\x00\x00"     # FileOffset 65536
           + b"\x00\x00\x02\x00\x00\x00\x00\x00")  # BeyondFinalZero 131072
    assert FileZeroDataInformation(file_offset=65536, beyond_final_zero=131072).pack(0) == raw
    z = FileZeroDataInformation.unpack(raw, 0)
    assert (z.file_offset, z.beyond_final_zero) == (65536, 131072)


def test_network_resiliency_request_golden():
    from wsd_smb.wire.resiliency import FSCTL_LMR_REQUEST_RESILIENCY, NetworkResiliencyRequest
    assert FSCTL_LMR_REQUEST_RESILIENCY == 0x001401D4  # MS-SMB2 2.2.31 CtlCode
    # MS-SMB2 2.2.31.3 NETWORK_RESILIENCY_REQUEST: Timeout 1000 ms, Reserved
    raw = (b"\xe8\x03\x00\x00"    # Timeout 1000 (milliseconds)
           + b"\x00\x00\x00\x00")  # Reserved 0
    assert NetworkResiliencyRequest.FIXED_SIZE == 8
    assert NetworkResiliencyRequest(timeout=1000).pack(0) == raw
    assert NetworkResiliencyRequest.unpack(raw, 0).timeout == 1000
    # "the server MUST ignore it on receipt": a non-zero Reserved parses
    assert NetworkResiliencyRequest.unpack(b"\x00\x00\x01\x00\xff\xff\xff\xff", 0).timeout == 0x10000
