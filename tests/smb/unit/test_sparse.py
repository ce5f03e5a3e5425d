"""Sparse files through SMB2 IOCTL: FSCTL_SET_SPARSE, FSCTL_QUERY_ALLOCATED_RANGES and
FSCTL_SET_ZERO_DATA (MS-FSA 2.1.5.10, MS-SMB2 3.3.5.15) with a raw client against a real
server on loopback; holes are checked on the share's directory with SEEK_DATA."""
from __future__ import annotations

import os
import struct

import pytest
from rawclient import RawClient, open_file
from smbunit import PASSWORD, USER

from wsd_smb.wire import commands as w
from wsd_smb.store.sparse import punches_holes
from wsd_smb.wire.base import FileId
from wsd_smb.wire.header import Command
from wsd_smb.wire.sparse import (FSCTL_QUERY_ALLOCATED_RANGES, FSCTL_SET_SPARSE, FSCTL_SET_ZERO_DATA,
                                 FileAllocatedRangeBuffer, FileSetSparseBuffer, FileZeroDataInformation)

STATUS_BUFFER_OVERFLOW = 0x80000005
STATUS_INVALID_PARAMETER = 0xC000000D
STATUS_BUFFER_TOO_SMALL = 0xC0000023
STATUS_FILE_LOCK_CONFLICT = 0xC0000054
FILE_ATTRIBUTE_SPARSE_FILE = 0x200
FILE_SUPPORTS_SPARSE_FILES = 0x40
BLOCK = 4096
GIB = 1 << 30


@pytest.fixture
def share(tmp_path):
    d = tmp_path / "share"
    d.mkdir(exist_ok=True)
    if not punches_holes(str(d)):
        pytest.skip("no holes on the file system under the test directory")
    return d


def _connect(smbd):
    c = RawClient(smbd.host, smbd.port)
    c.negotiate(dialects=(0x0311,))
    assert c.session_setup(USER, PASSWORD).status == 0
    return c, c.tree_connect("share").header.tree_id


def _open(c, tid, name, **kw):
    status, body, _ = open_file(c, tid, name, **kw)
    assert status == 0, hex(status)
    return FileId(*body.file_id), body


def _ioctl(c, tid, fid, code, data=b"", max_out=1024):
    """(status, output or None when the server sent an ERROR response)."""
    r = c.request(Command.SMB2_IOCTL, w.IoctlRequest(ctl_code=code, file_id=fid, input=data, output=b"",
                                                     max_input_response=0, max_output_response=max_out,
                                                     flags=1), tree_id=tid)
    if struct.unpack_from("<H", r.raw, 64)[0] == 49:
        return r.status, bytes(w.IoctlResponse.unpack(r.raw).output)
    return r.status, None


def _qar(c, tid, fid, offset, length, max_out=1024):
    status, out = _ioctl(c, tid, fid, FSCTL_QUERY_ALLOCATED_RANGES,
                         FileAllocatedRangeBuffer(file_offset=offset, length=length).pack(0), max_out)
    if out is None:
        return status, None
    assert len(out) % 16 == 0
    ranges = [FileAllocatedRangeBuffer.unpack(out, i) for i in range(0, len(out), 16)]
    return status, [(x.file_offset, x.length) for x in ranges]


def _zero(c, tid, fid, offset, beyond):
    return _ioctl(c, tid, fid, FSCTL_SET_ZERO_DATA,
                  FileZeroDataInformation(file_offset=offset, beyond_final_zero=beyond).pack(0), 0)[0]


def _write(c, tid, fid, offset, data):
    r = c.request(Command.SMB2_WRITE, w.WriteRequest(offset=offset, file_id=fid, data=data), tree_id=tid)
    assert r.status == 0, hex(r.status)


def _read(c, tid, fid, offset, length):
    r = c.request(Command.SMB2_READ, w.ReadRequest(length=length, offset=offset, file_id=fid), tree_id=tid)
    assert r.status == 0, hex(r.status)
    return bytes(w.ReadResponse.unpack(r.raw).data)


def _query(c, tid, fid, info_type, klass):
    r = c.request(Command.SMB2_QUERY_INFO, w.QueryInfoRequest(info_type=info_type, file_info_class=klass,
                                                              output_buffer_length=4096, file_id=fid), tree_id=tid)
    assert r.status == 0, hex(r.status)
    return bytes(w.QueryInfoResponse.unpack(r.raw).output_buffer)


def test_sparse_file_far_write_ranges_and_zeroing(smbd, share):
    c, tid = _connect(smbd)
    f, body = _open(c, tid, "sparse.bin", disposition=5)  # FILE_OVERWRITE_IF
    assert not body.file_attributes & FILE_ATTRIBUTE_SPARSE_FILE
    # FileFsAttributeInformation (2.5.1): FileSystemAttributes first
    assert struct.unpack_from("<I", _query(c, tid, f, 2, 5))[0] & FILE_SUPPORTS_SPARSE_FILES
    # FSCTL_SET_SPARSE without a buffer sets
    assert _ioctl(c, tid, f, FSCTL_SET_SPARSE, b"", 0) == (0, b"")
    basic = _query(c, tid, f, 1, 4)  # FileBasicInformation: FileAttributes at 32
    assert struct.unpack_from("<I", basic, 32)[0] & FILE_ATTRIBUTE_SPARSE_FILE
    far = 3 * GIB
    tail = b"far away" * 16
    near = bytes(range(256)) * 16  # one block
    _write(c, tid, f, far, tail)
    _write(c, tid, f, 16 * BLOCK, near)
    size = far + len(tail)
    assert os.path.getsize(share / "sparse.bin") == size
    # the allocated ranges are exactly what was written (both block aligned; the last ends at EOF)
    assert _qar(c, tid, f, 0, size) == (0, [(16 * BLOCK, BLOCK), (far, len(tail))])
    assert _qar(c, tid, f, 0, 1 << 62) == (0, [(16 * BLOCK, BLOCK), (far, len(tail))])
    assert _qar(c, tid, f, 17 * BLOCK, far - 17 * BLOCK) == (0, [])
    # AllocationSize counts the blocks, EndOfFile the size (FileStandardInformation)
    alloc, eof = struct.unpack_from("<QQ", _query(c, tid, f, 1, 5))
    assert eof == size and 0 < alloc < 1 << 20
    # a reopen reports the attribute in the CREATE response
    f2, body = _open(c, tid, "sparse.bin", disposition=1)
    assert body.file_attributes & FILE_ATTRIBUTE_SPARSE_FILE
    # zero the near block: it becomes a hole and reads as zeros; the size stays
    assert _zero(c, tid, f2, 16 * BLOCK, 17 * BLOCK) == 0
    assert _read(c, tid, f, 16 * BLOCK, BLOCK) == bytes(BLOCK)
    assert _qar(c, tid, f, 0, size) == (0, [(far, len(tail))])
    fd = os.open(share / "sparse.bin", os.O_RDONLY)
    try:
        assert os.lseek(fd, 0, os.SEEK_DATA) == far  # a hole on disk, not written zeros
    finally:
        os.close(fd)
    assert os.path.getsize(share / "sparse.bin") == size
    assert _read(c, tid, f, far, len(tail)) == tail
    # the attribute in a directory listing (FileDirectoryInformation: FileAttributes at 56)
    d, _ = _open(c, tid, "", options=0x1, access=0x1, disposition=1)  # FILE_DIRECTORY_FILE, LIST_DIRECTORY
    r = c.request(Command.SMB2_QUERY_DIRECTORY, w.QueryDirectoryRequest(
        file_information_class=1, file_id=d, file_name="sparse.bin".encode("utf-16-le"),
        output_buffer_length=4096), tree_id=tid)
    assert r.status == 0, hex(r.status)
    entry = bytes(w.QueryDirectoryResponse.unpack(r.raw).output_buffer)
    assert struct.unpack_from("<I", entry, 56)[0] & FILE_ATTRIBUTE_SPARSE_FILE
    c.close()


def test_clearing_sparse_reports_one_allocated_range(smbd, share):
    c, tid = _connect(smbd)
    f, _ = _open(c, tid, "small.bin", disposition=5)
    assert _ioctl(c, tid, f, FSCTL_SET_SPARSE, b"\x01", 0)[0] == 0
    _write(c, tid, f, 10 * BLOCK, b"e" * 10)
    size = 10 * BLOCK + 10
    assert _qar(c, tid, f, 0, size) == (0, [(10 * BLOCK, 10)])
    assert _ioctl(c, tid, f, FSCTL_SET_SPARSE, FileSetSparseBuffer(set_sparse=0).pack(0), 0)[0] == 0
    assert not struct.unpack_from("<I", _query(c, tid, f, 1, 4), 32)[0] & FILE_ATTRIBUTE_SPARSE_FILE
    # the whole file is one range again (NTFS's non-sparse answer), its holes have blocks
    assert _qar(c, tid, f, 5, size) == (0, [(5, size - 5)])
    alloc, eof = struct.unpack_from("<QQ", _query(c, tid, f, 1, 5))
    assert (alloc, eof) == (11 * BLOCK, size)
    assert _read(c, tid, f, 0, size) == bytes(10 * BLOCK) + b"e" * 10
    c.close()


def test_allocated_ranges_output_limits(smbd, share):
    c, tid = _connect(smbd)
    f, _ = _open(c, tid, "multi.bin", disposition=5)
    assert _ioctl(c, tid, f, FSCTL_SET_SPARSE, b"\x01", 0)[0] == 0
    for i in range(3):
        _write(c, tid, f, i * 4 * BLOCK, b"d" * BLOCK)
    every = [(i * 4 * BLOCK, BLOCK) for i in range(3)]
    assert _qar(c, tid, f, 0, 12 * BLOCK) == (0, every)
    # room for two of three: STATUS_BUFFER_OVERFLOW in an IOCTL response carrying those two
    assert _qar(c, tid, f, 0, 12 * BLOCK, max_out=47) == (STATUS_BUFFER_OVERFLOW, every[:2])
    # no room at all: STATUS_BUFFER_TOO_SMALL; an empty answer needs none
    assert _qar(c, tid, f, 0, 12 * BLOCK, max_out=0) == (STATUS_BUFFER_TOO_SMALL, None)
    assert _qar(c, tid, f, BLOCK, 2 * BLOCK, max_out=0) == (0, [])
    # malformed input: short, negative, wrapping
    assert _ioctl(c, tid, f, FSCTL_QUERY_ALLOCATED_RANGES, bytes(15))[0] == STATUS_INVALID_PARAMETER
    assert _qar(c, tid, f, 512, -1)[0] == STATUS_INVALID_PARAMETER
    assert _qar(c, tid, f, -1, 10)[0] == STATUS_INVALID_PARAMETER
    assert _zero(c, tid, f, 10, 5) == STATUS_INVALID_PARAMETER
    assert _ioctl(c, tid, f, FSCTL_SET_ZERO_DATA, bytes(8), 0)[0] == STATUS_INVALID_PARAMETER
    c.close()


def test_zero_data_on_a_non_sparse_file_and_under_a_lock(smbd, share):
    c, tid = _connect(smbd)
    data = bytes(range(256)) * 32  # 8 KiB
    f, _ = _open(c, tid, "plain.bin", disposition=5)
    _write(c, tid, f, 0, data)
    other, _ = _open(c, tid, "plain.bin", disposition=1)
    r = c.request(Command.SMB2_LOCK, w.LockRequest(lock_sequence=0, file_id=other, locks=[w.LockElement(
        offset=0, length=100, flags=0x2 | 0x10)]), tree_id=tid)  # EXCLUSIVE | FAIL_IMMEDIATELY
    assert r.status == 0, hex(r.status)
    assert _zero(c, tid, f, 50, 150) == STATUS_FILE_LOCK_CONFLICT
    assert _read(c, tid, other, 0, 200) == data[:200]  # (the lock keeps f from reading it too)
    assert _zero(c, tid, f, 100, 5000) == 0
    assert _zero(c, tid, f, 9000, 10000) == 0  # beyond EOF: nothing, the size stays
    assert (share / "plain.bin").read_bytes() == data[:100] + bytes(4900) + data[5000:]
    # not sparse: one range over the whole file, zeros and all
    assert _qar(c, tid, f, 0, 1 << 20) == (0, [(0, len(data))])
    c.close()
