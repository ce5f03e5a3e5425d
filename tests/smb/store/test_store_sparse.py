"""Sparse files in the object store (store/sparse.py): FSCTL_SET_SPARSE, FSCTL_QUERY_ALLOCATED_RANGES
and FSCTL_SET_ZERO_DATA on a real directory (the test's tmp_path; holes are the file
system's, seen with SEEK_DATA / SEEK_HOLE, and skipped where it has none)."""
from __future__ import annotations

import os

import pytest
from conftest import create, status_of

from wsd_smb.store.constants import (
    FILE_APPEND_DATA,
    FILE_ATTRIBUTE_ARCHIVE,
    FILE_ATTRIBUTE_HIDDEN,
    FILE_ATTRIBUTE_SPARSE_FILE,
    FILE_DIRECTORY_FILE,
    FILE_READ_ATTRIBUTES,
    FILE_READ_DATA,
    FILE_WRITE_ATTRIBUTES,
    FILE_WRITE_DATA,
    FILE_WRITE_EA,
    SMB2_LOCKFLAG_EXCLUSIVE_LOCK,
    SMB2_LOCKFLAG_FAIL_IMMEDIATELY,
    CreateDisposition as D,
)
from wsd_smb.store.errors import (
    STATUS_ACCESS_DENIED,
    STATUS_FILE_LOCK_CONFLICT,
    STATUS_INVALID_PARAMETER,
)
from wsd_smb.store.objects import STATUS_BUFFER_OVERFLOW_, STATUS_BUFFER_TOO_SMALL_
from wsd_smb.store.sparse import punches_holes

BLOCK = 4096
STATUS_BUFFER_TOO_SMALL = STATUS_BUFFER_TOO_SMALL_
STATUS_BUFFER_OVERFLOW = STATUS_BUFFER_OVERFLOW_


@pytest.fixture
def holes(root):
    if not punches_holes(str(root)):
        pytest.skip("the file system under the test directory has no holes")


def test_set_sparse_toggles_the_attribute_and_persists(store, share):
    o = create(store, share, "f").open
    assert not store.stat(o).attributes & FILE_ATTRIBUTE_SPARSE_FILE
    store.set_sparse(o, True)
    assert store.stat(o).attributes == FILE_ATTRIBUTE_ARCHIVE | FILE_ATTRIBUTE_SPARSE_FILE
    assert store.is_sparse(o)
    # another open sees it; SET_INFO attributes neither set nor clear it
    o2 = create(store, share, "f", disposition=D.FILE_OPEN).open
    assert store.stat(o2).attributes & FILE_ATTRIBUTE_SPARSE_FILE
    store.set_basic(o2, 0, 0, 0, 0, FILE_ATTRIBUTE_HIDDEN)
    assert store.stat(o).attributes == FILE_ATTRIBUTE_HIDDEN | FILE_ATTRIBUTE_SPARSE_FILE
    store.close(o2)
    store.set_sparse(o, False)
    assert store.stat(o).attributes == FILE_ATTRIBUTE_HIDDEN
    store.set_basic(o, 0, 0, 0, 0, FILE_ATTRIBUTE_ARCHIVE | FILE_ATTRIBUTE_SPARSE_FILE)
    assert store.stat(o).attributes == FILE_ATTRIBUTE_ARCHIVE
    store.close(o)


def test_create_attribute_and_overwrite_do_not_make_sparse(store, share):
    o = create(store, share, "f", attributes=FILE_ATTRIBUTE_SPARSE_FILE).open
    assert not store.stat(o).attributes & FILE_ATTRIBUTE_SPARSE_FILE
    store.set_sparse(o, True)
    store.close(o)
    o = create(store, share, "f", disposition=D.FILE_OVERWRITE_IF).open
    assert not store.stat(o).attributes & FILE_ATTRIBUTE_SPARSE_FILE
    store.close(o)


def test_set_sparse_access_and_directory(store, share):
    create(store, share, "f").open
    for access in (FILE_WRITE_DATA, FILE_APPEND_DATA, FILE_WRITE_ATTRIBUTES):
        o = create(store, share, "f", access=access, disposition=D.FILE_OPEN).open
        store.set_sparse(o, True)
    ea = create(store, share, "f", access=FILE_WRITE_EA, disposition=D.FILE_OPEN).open
    assert status_of(store.set_sparse, ea, False) == STATUS_ACCESS_DENIED
    d = create(store, share, "d", options=FILE_DIRECTORY_FILE).open
    assert status_of(store.set_sparse, d, True) == STATUS_INVALID_PARAMETER


def test_non_sparse_file_reports_the_queried_range_clipped_to_eof(store, share):
    o = create(store, share, "f").open
    assert store.query_allocated_ranges(o, 0, 1024, 4) == ([], 0)  # empty file
    store.write(o, 0, b"a" * 10000)
    assert store.query_allocated_ranges(o, 0, 1 << 20, 4) == ([(0, 10000)], 0)
    assert store.query_allocated_ranges(o, 1, 9998, 4) == ([(1, 9998)], 0)
    assert store.query_allocated_ranges(o, 10000, 5, 4) == ([], 0)  # at EOF
    assert store.query_allocated_ranges(o, 5, 0, 4) == ([], 0)  # nothing asked
    # an answer with no room: STATUS_BUFFER_TOO_SMALL; an empty one needs none
    assert status_of(store.query_allocated_ranges, o, 0, 10, 0) == STATUS_BUFFER_TOO_SMALL
    assert store.query_allocated_ranges(o, 20000, 10, 0) == ([], 0)
    for off, n in ((-1, 5), (5, -1), (512, 0x7FFFFFFFFFFFFFFF)):
        assert status_of(store.query_allocated_ranges, o, off, n, 4) == STATUS_INVALID_PARAMETER
    ra = create(store, share, "f", access=FILE_READ_ATTRIBUTES, disposition=D.FILE_OPEN).open
    assert status_of(store.query_allocated_ranges, ra, 0, 10, 4) == STATUS_ACCESS_DENIED
    rd = create(store, share, "f", access=FILE_READ_DATA, disposition=D.FILE_OPEN).open
    assert store.query_allocated_ranges(rd, 0, 10, 4) == ([(0, 10)], 0)


def test_sparse_file_reports_its_data_ranges(store, share, root, holes):
    o = create(store, share, "f").open
    store.set_sparse(o, True)
    far = 1 << 30  # 1 GiB: a large hole before the data
    store.write(o, far, b"z" * 100)
    store.write(o, 3 * BLOCK, b"y" * BLOCK)
    assert os.stat(root / "f").st_size == far + 100
    assert store.query_allocated_ranges(o, 0, far + 100, 8) == ([(3 * BLOCK, BLOCK), (far, 100)], 0)
    # clipped to the query
    assert store.query_allocated_ranges(o, 3 * BLOCK + 1, far - 3 * BLOCK, 8) == ([(3 * BLOCK + 1, BLOCK - 1), (far, 1)], 0)
    assert store.query_allocated_ranges(o, 0, 3 * BLOCK, 8) == ([], 0)
    # more ranges than room: STATUS_BUFFER_OVERFLOW with those that fit
    assert store.query_allocated_ranges(o, 0, far + 100, 1) == ([(3 * BLOCK, BLOCK)], STATUS_BUFFER_OVERFLOW)
    # AllocationSize counts the blocks, not the size
    assert store.stat(o).allocation_size < 64 * BLOCK
    store.close(o)


@pytest.mark.parametrize("access", [0x0012019F, FILE_WRITE_ATTRIBUTES])  # FILE_GENERIC_READ|WRITE; attributes only
def test_clearing_sparse_allocates_the_holes(store, share, root, holes, access):
    o = create(store, share, "f").open
    store.set_sparse(o, True)
    store.write(o, 8 * BLOCK, b"w" * 100)
    store.write(o, 2 * BLOCK, b"v" * BLOCK)
    size = 8 * BLOCK + 100
    assert store.stat(o).allocation_size == 2 * BLOCK
    c = create(store, share, "f", access=access, disposition=D.FILE_OPEN).open
    store.set_sparse(c, False)  # (an attributes-only open has no writable fd: reopened for this)
    # as NTFS: every hole now has blocks, the file is one range, the data is unchanged
    assert store.stat(o).allocation_size == 9 * BLOCK
    assert not store.stat(o).attributes & FILE_ATTRIBUTE_SPARSE_FILE
    assert store.query_allocated_ranges(o, 0, size, 8) == ([(0, size)], 0)
    assert store.read(o, 0, size) == bytes(2 * BLOCK) + b"v" * BLOCK + bytes(5 * BLOCK) + b"w" * 100
    assert os.stat(root / "f").st_size == size
    store.close(c)
    store.close(o)


def test_zero_data_punches_sparse_and_zeroes_non_sparse(store, share, root, holes):
    data = bytes(range(256)) * 64  # 16 KiB
    o = create(store, share, "f").open
    store.write(o, 0, data)
    # non-sparse: zeros, size unchanged, still one allocated range
    store.zero_data(o, BLOCK, 2 * BLOCK)
    assert store.read(o, 0, len(data)) == data[:BLOCK] + bytes(BLOCK) + data[2 * BLOCK:]
    assert os.stat(root / "f").st_size == len(data)
    assert store.query_allocated_ranges(o, 0, len(data), 8) == ([(0, len(data))], 0)
    # sparse: the zeroed blocks become a hole
    store.set_sparse(o, True)
    store.zero_data(o, 2 * BLOCK, 3 * BLOCK)
    ranges, _ = store.query_allocated_ranges(o, 0, len(data), 8)
    covered = {b for off, n in ranges for b in range(off // BLOCK, (off + n + BLOCK - 1) // BLOCK)}
    # block 1, zeroed while the file was not sparse, may stay allocated (as on NTFS) or not
    assert covered - {1} == {0, 3}
    # a partial block is zeroed but stays allocated; beyond EOF is a no-op
    store.zero_data(o, 10, 20)
    store.zero_data(o, len(data), len(data) + 100)
    store.zero_data(o, 5, 5)
    got = store.read(o, 0, len(data))
    assert got[:10] == data[:10] and got[10:20] == bytes(10) and got[20:BLOCK] == data[20:BLOCK]
    assert os.stat(root / "f").st_size == len(data)
    store.close(o)


def test_zero_data_parameters_access_and_locks(store, share):
    o = create(store, share, "f").open
    store.write(o, 0, b"q" * 8192)
    assert status_of(store.zero_data, o, 4096, 4095) == STATUS_INVALID_PARAMETER
    assert status_of(store.zero_data, o, -1, 10) == STATUS_INVALID_PARAMETER
    d = create(store, share, "d", options=FILE_DIRECTORY_FILE).open
    assert status_of(store.zero_data, d, 0, 10) == STATUS_INVALID_PARAMETER
    for access in (FILE_APPEND_DATA, FILE_WRITE_ATTRIBUTES, FILE_WRITE_EA):
        a = create(store, share, "f", access=access, disposition=D.FILE_OPEN).open
        assert status_of(store.zero_data, a, 0, 10) == STATUS_ACCESS_DENIED
    other = create(store, share, "f", disposition=D.FILE_OPEN).open
    store.lock(other, [(0, 4096, SMB2_LOCKFLAG_EXCLUSIVE_LOCK | SMB2_LOCKFLAG_FAIL_IMMEDIATELY)])
    assert status_of(store.zero_data, o, 100, 200) == STATUS_FILE_LOCK_CONFLICT
    assert store.read(o, 4096, 10) == b"q" * 10
    store.zero_data(o, 4096, 8192)  # outside the lock
    assert store.read(o, 4096, 4096) == bytes(4096)
    store.zero_data(other, 0, 10)  # the lock's own open may
    assert store.read(other, 0, 12) == bytes(10) + b"qq"


def test_named_stream_is_queried_and_zeroed_as_non_sparse(store, share):
    o = create(store, share, "f:s").open
    store.write(o, 0, b"abcdefgh")
    assert store.query_allocated_ranges(o, 2, 100, 4) == ([(2, 6)], 0)
    store.zero_data(o, 1, 3)
    assert store.read(o, 0, 8) == b"a\0\0defgh"
    store.close(o)


def test_zeros_written_by_hand_cross_chunk_boundaries(root):
    """The fallback of FSCTL_SET_ZERO_DATA where fallocate cannot (1 MiB pwrites)."""
    from wsd_smb.store.sparse import _write_zeros

    p = root / "z"
    data = os.urandom(5 * (1 << 20) // 2)  # 2.5 MiB
    p.write_bytes(data)
    fd = os.open(p, os.O_RDWR)
    try:
        _write_zeros(fd, 7, len(data) - 9)
    finally:
        os.close(fd)
    assert p.read_bytes() == data[:7] + bytes(len(data) - 16) + data[-9:]


def test_read_only_share_is_write_protected_but_queryable(store, root):
    from wsd_smb.store import Share
    from wsd_smb.store.constants import MAXIMUM_ALLOWED
    from wsd_smb.store.errors import STATUS_MEDIA_WRITE_PROTECTED

    (root / "f").write_bytes(b"r" * 100)
    ro = Share("ro", str(root), read_only=True)
    o = create(store, ro, "f", access=MAXIMUM_ALLOWED, disposition=D.FILE_OPEN).open
    # MS-FSA 2.1.5.10.38 / .39: Volume.IsReadOnly comes before the access check
    assert status_of(store.set_sparse, o, True) == STATUS_MEDIA_WRITE_PROTECTED
    assert status_of(store.zero_data, o, 0, 10) == STATUS_MEDIA_WRITE_PROTECTED
    assert store.query_allocated_ranges(o, 0, 1000, 4) == ([(0, 100)], 0)
    assert (root / "f").read_bytes() == b"r" * 100
    store.close(o)


@pytest.mark.parametrize("where", ["test dir", "/dev/shm"])
def test_zero_range_on_each_file_system(root, where):
    """zero_range on the real file systems at hand: ext4 (the test directory) has
    ZERO_RANGE; tmpfs has only PUNCH_HOLE, so a non-sparse file gets a hole that is
    allocated again.  Either way: zeros, the same size, the blocks kept."""
    import tempfile

    from wsd_smb.store.sparse import zero_range

    d = str(root) if where == "test dir" else where
    if not os.path.isdir(d):
        pytest.skip(f"no {d}")
    data = os.urandom(16 * BLOCK)
    with tempfile.NamedTemporaryFile(dir=d) as f:
        f.write(data)
        f.flush()
        fd = f.fileno()
        blocks = os.fstat(fd).st_blocks
        how = zero_range(fd, BLOCK + 5, 9 * BLOCK, sparse=False)
        assert how in ("zero-range", "punch+allocate", "written")
        assert os.pread(fd, len(data), 0) == data[:BLOCK + 5] + bytes(8 * BLOCK - 5) + data[9 * BLOCK:]
        assert os.fstat(fd).st_size == len(data)
        assert os.fstat(fd).st_blocks >= blocks  # not sparse: nothing given back
        how = zero_range(fd, 10 * BLOCK, 12 * BLOCK, sparse=True)
        assert how in ("punch", "written")
        if how == "punch":
            assert os.fstat(fd).st_blocks < blocks
        assert os.pread(fd, 4 * BLOCK, 9 * BLOCK) == data[9 * BLOCK:10 * BLOCK] + bytes(2 * BLOCK) \
            + data[12 * BLOCK:13 * BLOCK]
        assert os.fstat(fd).st_size == len(data)


def test_clearing_sparse_when_the_holes_do_not_fit(store, share, root):
    """The holes of a file bigger than the free space: STATUS_DISK_FULL at once (not after
    filling the disk), and the file stays sparse."""
    from wsd_smb.store.objects import STATUS_DISK_FULL

    vfs = os.statvfs(root)
    size = 4 * vfs.f_bavail * vfs.f_frsize
    if not 0 < size < 15 << 40:  # ext4's largest file is 16 TiB
        pytest.skip("free space does not allow the experiment")
    o = create(store, share, "huge").open
    store.set_sparse(o, True)
    store.set_end_of_file(o, size)
    assert status_of(store.set_sparse, o, False) == STATUS_DISK_FULL
    assert store.is_sparse(o)
    assert store.stat(o).allocation_size == 0
    assert store.query_allocated_ranges(o, 0, size, 4) == ([], 0)
    store.close(o)
