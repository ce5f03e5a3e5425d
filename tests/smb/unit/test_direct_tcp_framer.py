"""Direct TCP framing (MS-SMB2 2.1): the sans-IO framer of wsd-smbd's driver."""
from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wsd_smb.server.transport import DirectTcpFramer


def _stream(msgs):
    return b"".join(DirectTcpFramer.frame(m) for m in msgs)


def test_golden_frame():
    assert DirectTcpFramer.frame(b"\xfeSMB") == b"\x00\x00\x00\x04\xfeSMB"
    assert DirectTcpFramer.frame(b"x" * 0x012345)[:4] == b"\x00\x01\x23\x45"


def test_every_split_point_gives_the_same_messages():
    msgs = [b"\xfeSMB" + os.urandom(60), b"", os.urandom(1000), b"z"]
    data = _stream(msgs)
    for cut in range(len(data) + 1):
        f = DirectTcpFramer()
        got = f.feed(data[:cut]) + f.feed(data[cut:])
        assert [bytes(m) for m in got] == msgs, cut


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=3000), max_size=12), st.lists(st.integers(1, 5000), min_size=1, max_size=30))
def test_random_chunking(msgs, chunks):
    data = _stream(msgs)
    f = DirectTcpFramer()
    got, pos, i = [], 0, 0
    while pos < len(data):
        n = chunks[i % len(chunks)]
        got += f.feed(memoryview(data)[pos : pos + n])
        pos += n
        i += 1
    assert [bytes(m) for m in got] == msgs


def test_big_message_in_small_reads_is_assembled_once():
    big = os.urandom(8 << 20)
    data = _stream([big])
    f = DirectTcpFramer()
    out = []
    for p in range(0, len(data), 256 * 1024):
        out += f.feed(data[p : p + 256 * 1024])
    assert len(out) == 1 and isinstance(out[0], bytearray) and out[0] == big


def test_bad_header_byte_and_oversize_frame_are_refused():
    with pytest.raises(ValueError, match="header byte"):
        DirectTcpFramer().feed(b"\x85\x00\x00\x00")  # a NetBIOS keep-alive type is not Direct TCP
    with pytest.raises(ValueError, match="exceeds"):
        DirectTcpFramer(max_message_size=100).feed(b"\x00\x00\x00\x65")
