"""Golden bytes of the session-protocol wire structures (WSD-N3, WSD-D1)."""
import pytest

from wsd.core.structure import MalformedStructure
from wsd.core.wire import (
    NEG_FLAG_RDMA_READ, NEG_FLAG_RESPONSE, NEGOTIATION_MAX, ControlHeader, NegotiateMessage, RdmaAdvert, RdmaDone,
    RdmaWriteRequest,
)


def test_negotiate_message_golden_WSD_N3():
    m = NegotiateMessage(flags=NEG_FLAG_RESPONSE | NEG_FLAG_RDMA_READ, posted_receives=16, receive_size=0x4000)
    b = m.pack()
    assert b == (b"WSDN" + b"\x01\x00" + b"\x03\x00" + b"\x10\x00\x00\x00" + b"\x00\x40\x00\x00" + b"\0" * 16)
    assert len(b) == 32 <= NEGOTIATION_MAX
    assert NegotiateMessage.unpack(b) == m


def test_negotiate_message_checks_signature_version_reserved():
    good = NegotiateMessage(posted_receives=2, receive_size=256).pack()
    with pytest.raises(MalformedStructure):
        NegotiateMessage.unpack(b"XXXX" + good[4:])
    with pytest.raises(MalformedStructure):
        NegotiateMessage.unpack(good[:4] + b"\x02\x00" + good[6:])
    with pytest.raises(MalformedStructure):
        NegotiateMessage.unpack(good[:-1] + b"\x01")
    with pytest.raises(MalformedStructure):
        NegotiateMessage.unpack(good[:20])


def test_control_header_golden_WSD_D1():
    h = ControlHeader(type=1, credits=0x0102, length=0x0A0B0C0D)
    assert h.pack() == b"\x01\x00\x02\x01\x0d\x0c\x0b\x0a"
    with pytest.raises(MalformedStructure):
        ControlHeader.unpack(b"\x01\x01\x00\x00\x00\x00\x00\x00")   # reserved flags


def test_rdma_payloads_golden():
    assert RdmaAdvert(cookie=7, descriptor_length=36, length=1 << 20).pack() == (
        b"\x07\0\0\0" + b"\x24\x00" + b"\0\0" + (1 << 20).to_bytes(8, "little"))
    assert RdmaDone(cookie=1, status=10055, length=5).pack() == (
        b"\x01\0\0\0" + (10055).to_bytes(4, "little") + b"\x05" + b"\0" * 7)
    assert RdmaWriteRequest(cookie=2, length=65536).pack() == b"\x02\0\0\0" + b"\0" * 4 + (65536).to_bytes(8, "little")
    with pytest.raises(MalformedStructure):
        RdmaWriteRequest.unpack(b"\x02\0\0\0\x01\0\0\0" + b"\0" * 8)
