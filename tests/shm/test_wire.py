"""Golden bytes of the shm provider's wire structures (docs/shm.md)."""
import struct

import pytest

from wsd_shm.wire import (
    HOST_LEN, NAME_LEN, ConnectReply, ConnectRequest, MalformedStructure, RdmaDescriptor, RegionHeader, padded,
    text,
)


def test_connect_reply_golden():
    r = ConnectReply(status=10061, acceptor_pid=0x1234, acceptor_socket=7, local_host=padded("127.0.0.1", HOST_LEN),
                     local_port=5000)
    b = r.pack()
    assert b == (b"WSHP" + b"\x01\x00" + b"\x00\x00" + struct.pack("<I", 10061) + b"\x34\x12\x00\x00"
                 + b"\x07" + b"\0" * 7 + b"127.0.0.1" + b"\0" * (HOST_LEN - 9) + b"\x88\x13" + b"\0" * 16)
    assert len(b) == ConnectReply.SIZE == 88
    assert ConnectReply.unpack(b) == r


def test_connect_request_golden_and_checks():
    q = ConnectRequest(connector_pid=99, connector_socket=3, ring_capacity=1 << 20,
                       listen_host=padded("127.0.0.1", HOST_LEN), listen_port=80,
                       source_host=padded("127.0.0.1", HOST_LEN), source_port=40000,
                       c2a_name=padded("wsd-shm-99-0000abcd-c3-ffff-ca", NAME_LEN),
                       a2c_name=padded("wsd-shm-99-0000abcd-c3-ffff-ac", NAME_LEN), caller_data_length=5)
    b = q.pack()
    assert len(b) == ConnectRequest.SIZE == 240
    assert b[:24] == b"WSHQ\x01\x00\x00\x00" + b"\x63\x00\x00\x00" + b"\0" * 4 + b"\x03" + b"\0" * 7
    assert b[24:32] == b"\x00\x00\x10\x00\x00\x00\x00\x00"
    assert b[32:41] == b"127.0.0.1" and b[78:80] == b"\x50\x00"
    assert b[224:226] == b"\x05\x00" and b[226:] == b"\0" * 14
    assert ConnectRequest.unpack(b) == q
    assert text(ConnectRequest.unpack(b).c2a_name) == "wsd-shm-99-0000abcd-c3-ffff-ca"
    with pytest.raises(MalformedStructure):
        ConnectRequest.unpack(b"WSHX" + b[4:])
    with pytest.raises(MalformedStructure):
        ConnectRequest.unpack(b[:6] + b"\x01\x00" + b[8:])         # reserved1
    with pytest.raises(MalformedStructure):
        ConnectRequest.unpack(b[:-1] + b"\x01")                    # reserved3
    with pytest.raises(MalformedStructure):
        ConnectRequest.unpack(b[:100])


def test_rdma_descriptor_and_region_header_golden():
    d = RdmaDescriptor(access=1, key=0x0102030405060708, length=65536, segment=padded("wsd-shm-1-aaaaaaaa-r1", NAME_LEN))
    b = d.pack()
    assert b == (b"WSHD\x01\x00\x01\x00" + bytes.fromhex("0807060504030201") + b"\x00\x00\x01\x00\x00\x00\x00\x00"
                 + b"wsd-shm-1-aaaaaaaa-r1" + b"\0" * (NAME_LEN - 21) + b"\0" * 4)
    assert len(b) == RdmaDescriptor.SIZE == 76
    h = RegionHeader(access=3, key=5, length=10, capacity=65536, owner_pid=2)
    hb = h.pack()
    assert hb == (b"WSHR\x01\x00\x03\x00" + b"\x05" + b"\0" * 7 + b"\x0a" + b"\0" * 7 + b"\x00\x00\x01\x00" + b"\0" * 4
                  + b"\x02\x00\x00\x00" + b"\0" * 28)
    assert len(hb) == RegionHeader.SIZE == 64
    assert hb[8:16] == struct.pack("<Q", 5)                         # the provider zeroes key at [8:16]


def test_text_fields_are_checked():
    assert text(b"abc\0\0") == "abc"
    with pytest.raises(MalformedStructure):
        text(b"abc\0x")
    with pytest.raises(MalformedStructure):
        text(b"\xff\0")
