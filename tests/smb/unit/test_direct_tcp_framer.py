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


def _read_like_a_buffered_protocol(f: DirectTcpFramer, data: bytes, chunk: int) -> tuple[list, int]:
    """What RingStreamProtocol does: read into the framer's lent buffer when it lends one,
    else into a scratch buffer that is fed.  Returns the messages and the bytes lent."""
    out, pos, lent = [], 0, 0
    while pos < len(data):
        buf = f.lend()
        n = min(chunk, len(data) - pos)
        if buf is not None:
            n = min(n, len(buf))
            buf[:n] = data[pos : pos + n]
            out += f.filled(n)
            lent += n
        else:
            out += f.feed(data[pos : pos + n])
        pos += n
    return out, lent


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from([0, 5, 64, DirectTcpFramer.LEND_MIN - 1, DirectTcpFramer.LEND_MIN + 3, 600_000]),
                max_size=6),
       st.sampled_from([7, 1000, 65536, 300_000]))
def test_lent_reads_give_the_same_messages(sizes, chunk):
    msgs = [os.urandom(n) for n in sizes]
    f = DirectTcpFramer()
    got, lent = _read_like_a_buffered_protocol(f, _stream(msgs), chunk)
    assert [bytes(m) for m in got] == msgs
    assert f.lend() is None  # nothing half-assembled


def test_only_the_rest_of_a_big_message_is_lent():
    f = DirectTcpFramer()
    assert f.lend() is None                       # between messages: header bytes go through feed
    assert f.feed(DirectTcpFramer.frame(b"x" * 100)[:50]) == []
    assert f.lend() is None                       # a small message is not worth it
    f = DirectTcpFramer()
    big = os.urandom(1 << 20)
    assert f.feed(DirectTcpFramer.frame(big)[:4 + 1000]) == []
    buf = f.lend()
    assert len(buf) == (1 << 20) - 1000
    buf[:] = big[1000:]
    [msg] = f.filled(len(buf))
    assert msg == big and f.lend() is None
    with pytest.raises(ValueError):
        f.filled(1)                               # nothing was lent


def test_pooled_message_buffers_are_reused_only_when_free():
    from wsd_smb.buffers import MessageBufferPool

    pool = MessageBufferPool(min_size=1 << 16, max_bytes=3 << 20)
    f = DirectTcpFramer(pool=pool)
    data = _stream([os.urandom(1 << 20)])
    [m1] = f.feed(data)
    [m2] = f.feed(data)
    assert m1 is not m2 and m1 == m2              # m1 still held: a new buffer
    view = memoryview(m1)
    del m1
    [m3] = f.feed(data)
    assert m3 is not m2 and view.obj is not m3    # a live view keeps its buffer out of reuse
    del view
    del m3
    before = pool.reused
    [m4] = f.feed(data)
    assert pool.reused == before + 1 and m4 == m2
    assert pool.pooled_bytes <= pool.max_bytes
    small = f.feed(_stream([b"tiny"]))[0]
    assert small == b"tiny" and pool.pooled_bytes <= pool.max_bytes
