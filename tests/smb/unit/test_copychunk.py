"""Server-side copy through SMB2 IOCTL: FSCTL_SRV_REQUEST_RESUME_KEY and
FSCTL_SRV_COPYCHUNK / FSCTL_SRV_COPYCHUNK_WRITE (MS-SMB2 3.3.5.15.5, 3.3.5.15.6,
3.3.5.15.6.2).  Files are filled and checked on the share's real directory."""
from __future__ import annotations

import os
import struct

import pytest
from rawclient import RawClient
from smbunit import PASSWORD, USER

from wsd_smb.wire import commands as w
from wsd_smb.wire.base import FileId
from wsd_smb.wire.copychunk import (FSCTL_SRV_COPYCHUNK, FSCTL_SRV_COPYCHUNK_WRITE, FSCTL_SRV_REQUEST_RESUME_KEY,
                                    SrvCopychunk, SrvCopychunkCopy, SrvCopychunkResponse)
from wsd_smb.wire.header import Command

STATUS_INVALID_PARAMETER = 0xC000000D
STATUS_ACCESS_DENIED = 0xC0000022
STATUS_OBJECT_NAME_NOT_FOUND = 0xC0000034
STATUS_FILE_LOCK_CONFLICT = 0xC0000054
STATUS_INVALID_VIEW_SIZE = 0xC000001F
FILE_READ_DATA, FILE_WRITE_DATA, FILE_APPEND_DATA = 0x1, 0x2, 0x4
ALL = 0x001F01FF  # FILE_ALL_ACCESS
LIMITS = (256, 1024 * 1024, 16 * 1024 * 1024)


def _pattern(n: int, seed: int = 0) -> bytes:
    return bytes((i * 7 + seed) & 0xFF for i in range(n))


def _connect(smbd, user=USER, password=PASSWORD):
    c = RawClient(smbd.host, smbd.port)
    c.negotiate(dialects=(0x0311,))
    assert c.session_setup(user, password).status == 0
    return c, c.tree_connect("share").header.tree_id


def _open(c, tid, name, access=ALL, disposition=3):
    r = c.request(Command.SMB2_CREATE, w.CreateRequest(
        requested_oplock_level=0, impersonation_level=2, desired_access=access, file_attributes=0x80,
        share_access=7, create_disposition=disposition, create_options=0x40, name=name.encode("utf-16-le")),
        tree_id=tid)
    assert r.status == 0, hex(r.status)
    return FileId(*w.CreateResponse.unpack(r.raw).file_id)


def _ioctl(c, tid, fid, code, data=b"", max_out=64):
    """(status, output): output is the IOCTL response's buffer when the server sent an IOCTL
    response (also with an error status, as copy chunk does), else None."""
    r = c.request(Command.SMB2_IOCTL, w.IoctlRequest(ctl_code=code, file_id=fid, input=data, output=b"",
                                                     max_input_response=0, max_output_response=max_out,
                                                     flags=1), tree_id=tid)
    if struct.unpack_from("<H", r.raw, 64)[0] == 49:  # an IOCTL response, not an ERROR response (9)
        return r.status, bytes(w.IoctlResponse.unpack(r.raw).output)
    return r.status, None


def _key(c, tid, fid):
    status, out = _ioctl(c, tid, fid, FSCTL_SRV_REQUEST_RESUME_KEY, max_out=32)
    assert status == 0 and len(out) == 32
    return out[:24]


def _copy(c, tid, dst, key, chunks, code=FSCTL_SRV_COPYCHUNK, max_out=12, count=None):
    body = SrvCopychunkCopy(source_key=key, chunk_count=len(chunks) if count is None else count).pack(0)
    body += b"".join(SrvCopychunk(source_offset=s, target_offset=t, length=n).pack(0) for s, t, n in chunks)
    status, out = _ioctl(c, tid, dst, code, body, max_out)
    if out is None:
        return status, None
    r = SrvCopychunkResponse.unpack(out, 0)
    return status, (r.chunks_written, r.chunk_bytes_written, r.total_bytes_written)


def test_resume_key_is_per_open_and_stable(smbd, tmp_path):
    c, tid = _connect(smbd)
    (tmp_path / "share" / "a.bin").write_bytes(b"x" * 10)
    fa, fb = _open(c, tid, "a.bin"), _open(c, tid, "a.bin")
    k1 = _key(c, tid, fa)
    assert _key(c, tid, fa) == k1                     # the same key twice for one open
    assert _key(c, tid, fb) != k1                     # another open of the same file: its own key
    status, out = _ioctl(c, tid, fa, FSCTL_SRV_REQUEST_RESUME_KEY, max_out=31)
    assert status == STATUS_INVALID_PARAMETER and out is None
    # no data access is needed to ask for a key (smbtorture's bad_access asks with READ_ATTRIBUTES only)
    _key(c, tid, _open(c, tid, "a.bin", access=0x80))
    c.close()


def test_copy_chunks_bytes_land_on_disk(smbd, tmp_path):
    share = tmp_path / "share"
    src_data = _pattern(3 * 65536 + 100)
    (share / "src.bin").write_bytes(src_data)
    c, tid = _connect(smbd)
    src, dst = _open(c, tid, "src.bin"), _open(c, tid, "dst.bin", disposition=5)
    key = _key(c, tid, src)
    chunks = [(0, 0, 65536), (65536, 65536, 65536), (0, 200000, 100), (2 * 65536, 300000, 65636)]
    status, rsp = _copy(c, tid, dst, key, chunks)
    assert status == 0 and rsp == (4, 0, sum(n for _, _, n in chunks))
    got = (share / "dst.bin").read_bytes()
    assert len(got) == 300000 + 65636
    assert got[:131072] == src_data[:131072]
    assert got[131072:200000] == bytes(200000 - 131072)         # the gap reads as zeros
    assert got[200000:200100] == src_data[:100]
    assert got[300000:] == src_data[131072:]
    # the same through SMB2 READ on the target open
    r = c.request(Command.SMB2_READ, w.ReadRequest(length=100, offset=200000, file_id=dst), tree_id=tid)
    assert r.status == 0 and bytes(w.ReadResponse.unpack(r.raw).data) == src_data[:100]
    c.close()


def test_source_is_target_with_overlap(smbd, tmp_path):
    share = tmp_path / "share"
    data = _pattern(4096)
    (share / "same.bin").write_bytes(data)
    c, tid = _connect(smbd)
    f = _open(c, tid, "same.bin")
    # the whole chunk is read before it is written: overlapping ranges copy the original bytes
    status, rsp = _copy(c, tid, f, _key(c, tid, f), [(0, 2040, 2048)])
    assert status == 0 and rsp == (1, 0, 2048)
    assert (share / "same.bin").read_bytes() == data[:2040] + data[:2048] + data[4088:]
    c.close()


def test_limits_response(smbd, tmp_path):
    (tmp_path / "share" / "src.bin").write_bytes(b"s" * 4096)
    c, tid = _connect(smbd)
    src, dst = _open(c, tid, "src.bin"), _open(c, tid, "dst.bin", disposition=5)
    key = _key(c, tid, src)
    for chunks, count in (
        ([(0, 0, 0xFFFFFFFF)], None),                       # one chunk over 1 MiB
        ([(0, 0, 0)], None),                                # zero length
        ([(0, 0, 1)] * 257, None),                          # more than 256 chunks
        ([(0, i << 20, 1 << 20) for i in range(17)], None),  # 17 MiB in all
        ([(0, 0, 10)], 2),                                  # ChunkCount says 2, one present
    ):
        status, rsp = _copy(c, tid, dst, key, chunks, count=count)
        assert (status, rsp) == (STATUS_INVALID_PARAMETER, LIMITS)
    assert os.path.getsize(tmp_path / "share" / "dst.bin") == 0     # nothing copied
    # MaxOutputResponse below 12 bytes: a plain INVALID_PARAMETER
    assert _copy(c, tid, dst, key, [(0, 0, 10)], max_out=11) == (STATUS_INVALID_PARAMETER, None)
    c.close()


def test_bad_or_stale_key(smbd, tmp_path):
    (tmp_path / "share" / "src.bin").write_bytes(b"s" * 4096)
    c, tid = _connect(smbd)
    src, dst = _open(c, tid, "src.bin"), _open(c, tid, "dst.bin", disposition=5)
    key = _key(c, tid, src)
    assert _copy(c, tid, dst, b"deadbeefdeadbeefdeadbeef", [(0, 0, 10)])[0] == STATUS_OBJECT_NAME_NOT_FOUND
    assert _copy(c, tid, dst, key[:8] + bytes(16), [(0, 0, 10)])[0] == STATUS_OBJECT_NAME_NOT_FOUND
    assert c.request(Command.SMB2_CLOSE, w.CloseRequest(file_id=src), tree_id=tid).status == 0
    assert _copy(c, tid, dst, key, [(0, 0, 10)])[0] == STATUS_OBJECT_NAME_NOT_FOUND   # source closed
    c.close()


def test_access_rules(smbd, tmp_path):
    (tmp_path / "share" / "src.bin").write_bytes(b"s" * 4096)
    c, tid = _connect(smbd)
    dst = _open(c, tid, "dst.bin", disposition=5)
    # source: FILE_READ_DATA or FILE_EXECUTE
    for access, want in ((0x80 | FILE_READ_DATA, 0), (0x80 | 0x20, 0), (0x80, STATUS_ACCESS_DENIED)):
        src = _open(c, tid, "src.bin", access=access)
        assert _copy(c, tid, dst, _key(c, tid, src), [(0, 0, 16)])[0] == want
    key = _key(c, tid, _open(c, tid, "src.bin", access=0x80 | FILE_READ_DATA))
    # target: FILE_WRITE_DATA; COPYCHUNK (not _WRITE) also FILE_READ_DATA
    no_write = _open(c, tid, "dst.bin", access=ALL & ~(FILE_WRITE_DATA | FILE_APPEND_DATA))
    assert _copy(c, tid, no_write, key, [(0, 0, 16)])[0] == STATUS_ACCESS_DENIED
    no_read = _open(c, tid, "dst.bin", access=ALL & ~FILE_READ_DATA)
    assert _copy(c, tid, no_read, key, [(0, 0, 16)])[0] == STATUS_ACCESS_DENIED
    assert _copy(c, tid, no_read, key, [(0, 0, 16)], code=FSCTL_SRV_COPYCHUNK_WRITE) == (0, (1, 0, 16))
    c.close()


def test_key_of_another_session_is_refused(smbd, tmp_path):
    (tmp_path / "share" / "src.bin").write_bytes(b"s" * 4096)
    c, tid = _connect(smbd)
    key = _key(c, tid, _open(c, tid, "src.bin"))
    c2, tid2 = _connect(smbd)
    dst = _open(c2, tid2, "dst.bin", disposition=5)
    assert _copy(c2, tid2, dst, key, [(0, 0, 16)])[0] == STATUS_ACCESS_DENIED
    assert os.path.getsize(tmp_path / "share" / "dst.bin") == 0
    c.close()
    c2.close()


def test_source_end_and_lock_conflicts(smbd, tmp_path):
    share = tmp_path / "share"
    data = _pattern(8192)
    (share / "src.bin").write_bytes(data)
    c, tid = _connect(smbd)
    src, dst = _open(c, tid, "src.bin"), _open(c, tid, "dst.bin", disposition=5)
    key = _key(c, tid, src)
    # the second chunk reaches past the source's end: the first is written, the status says why
    status, rsp = _copy(c, tid, dst, key, [(0, 0, 4096), (4096, 4096, 8192)])
    assert (status, rsp) == (STATUS_INVALID_VIEW_SIZE, (1, 0, 4096))
    assert (share / "dst.bin").read_bytes() == data[:4096]

    # another open holds an exclusive lock on the source range: a copy reads like a READ
    other = _open(c, tid, "src.bin")
    lock = w.LockRequest(lock_sequence=0, file_id=other, locks=[w.LockElement(offset=0, length=4096, flags=0x02)])
    assert c.request(Command.SMB2_LOCK, lock, tree_id=tid).status == 0
    assert _copy(c, tid, dst, key, [(0, 0, 4096)]) == (STATUS_FILE_LOCK_CONFLICT, (0, 0, 0))
    unlock = w.LockRequest(lock_sequence=0, file_id=other, locks=[w.LockElement(offset=0, length=4096, flags=0x04)])
    assert c.request(Command.SMB2_LOCK, unlock, tree_id=tid).status == 0
    assert _copy(c, tid, dst, key, [(4096, 0, 4096)]) == (0, (1, 0, 4096))
    # ... and writes like a WRITE on the target
    other_dst = _open(c, tid, "dst.bin")
    lock = w.LockRequest(lock_sequence=0, file_id=other_dst, locks=[w.LockElement(offset=100, length=1, flags=0x02)])
    assert c.request(Command.SMB2_LOCK, lock, tree_id=tid).status == 0
    assert _copy(c, tid, dst, key, [(0, 0, 4096)])[0] == STATUS_FILE_LOCK_CONFLICT
    assert (share / "dst.bin").read_bytes() == data[4096:8192]
    c.close()


def test_stream_to_stream(smbd, tmp_path):
    c, tid = _connect(smbd)
    src, dst = _open(c, tid, "s.bin:foo", disposition=5), _open(c, tid, "d.bin:foo", disposition=5)
    data = _pattern(256)
    assert c.request(Command.SMB2_WRITE, w.WriteRequest(offset=0, file_id=src, data=data), tree_id=tid).status == 0
    assert _copy(c, tid, dst, _key(c, tid, src), [(0, 10, 256)]) == (0, (1, 0, 256))
    r = c.request(Command.SMB2_READ, w.ReadRequest(length=266, offset=0, file_id=dst), tree_id=tid)
    assert r.status == 0 and bytes(w.ReadResponse.unpack(r.raw).data) == bytes(10) + data
    c.close()


def test_smbprotocol_copyfile_uses_server_side_copy(smbd, tmp_path):
    """Interop: smbprotocol's smbclient.copyfile (PyPI, written by others) copies with
    FSCTL_SRV_REQUEST_RESUME_KEY + FSCTL_SRV_COPYCHUNK_WRITE in 1 MiB chunks."""
    smbclient = pytest.importorskip("smbclient")
    share = tmp_path / "share"
    data = os.urandom(3 * 1024 * 1024 + 123)
    (share / "big.bin").write_bytes(data)
    cache: dict = {}
    kw = dict(port=smbd.port, connection_cache=cache)
    smbclient.register_session(smbd.host, username=USER, password=PASSWORD, connection_timeout=10, **kw)
    try:
        unc = rf"\\{smbd.host}\share"
        smbclient.copyfile(unc + r"\big.bin", unc + r"\copy.bin", **kw)
        assert (share / "copy.bin").read_bytes() == data
    finally:
        smbclient.reset_connection_cache(connection_cache=cache)
