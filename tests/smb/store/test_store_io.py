"""READ/WRITE/FLUSH, set-info (end of file, allocation, basic, position) and rename."""
from __future__ import annotations

import os
import stat
import threading

import pytest
from conftest import create, status_of

from wsd_smb.store.constants import (
    DELETE,
    FILE_APPEND_DATA,
    FILE_ATTRIBUTE_ARCHIVE,
    FILE_ATTRIBUTE_HIDDEN,
    FILE_ATTRIBUTE_READONLY,
    FILE_DIRECTORY_FILE,
    FILE_EXECUTE,
    FILE_READ_ATTRIBUTES,
    FILE_READ_DATA,
    FILE_SHARE_DELETE,
    FILE_SHARE_READ,
    FILE_SHARE_WRITE,
    FILE_WRITE_DATA,
    GENERIC_READ,
    SYNCHRONIZE,
    CreateDisposition as D,
)
from wsd_smb.store.errors import (
    STATUS_ACCESS_DENIED,
    STATUS_DISK_FULL,
    STATUS_END_OF_FILE,
    STATUS_INVALID_DEVICE_REQUEST,
    STATUS_INVALID_PARAMETER,
    STATUS_OBJECT_NAME_COLLISION,
    STATUS_OBJECT_PATH_NOT_FOUND,
    STATUS_SHARING_VIOLATION,
)
from wsd_smb.store.filetime import from_filetime, to_filetime


def test_read_write_offsets_and_eof(store, share, root):
    o = create(store, share, "f").open
    assert store.write(o, 10, b"xyz") == 3
    assert (root / "f").read_bytes() == b"\0" * 10 + b"xyz"
    assert store.read(o, 9, 10) == b"\0xyz"
    assert status_of(store.read, o, 13, 1) == STATUS_END_OF_FILE
    assert status_of(store.read, o, 100, 5) == STATUS_END_OF_FILE
    assert status_of(store.read, o, 11, 5, 3) == STATUS_END_OF_FILE  # MinimumCount not met
    assert store.read(o, 11, 5, 2) == b"yz"
    assert store.read(o, 13, 0) == b""


def test_large_io_roundtrip(store, share):
    o = create(store, share, "big").open
    data = os.urandom(3 * 1024 * 1024 + 17)
    assert store.write(o, 0, data) == len(data)
    assert store.read(o, 0, len(data)) == data


def test_append_only_open_writes_at_end(store, share, root):
    (root / "log").write_bytes(b"abc")
    o = create(store, share, "log", access=FILE_APPEND_DATA, disposition=D.FILE_OPEN).open
    store.write(o, 0, b"def")
    assert (root / "log").read_bytes() == b"abcdef"
    store.write(o, 0xFFFFFFFFFFFFFFFF, b"!")  # the "end of file" offset of an append-only open
    assert (root / "log").read_bytes() == b"abcdef!"
    o2 = create(store, share, "log", disposition=D.FILE_OPEN).open
    assert status_of(store.write, o2, 0xFFFFFFFFFFFFFFFF, b"!") == STATUS_INVALID_PARAMETER


def test_offset_limits_and_position(store, share):
    """smbtorture smb2.rw.invalid / smb2.read.position rules."""
    big = 0x7FFFFFFFFFFFFFFF
    o = create(store, share, "f").open
    store.write(o, 0, b"x" * 20)
    assert o.current_offset == 20
    assert store.read(o, 0, 10) == b"x" * 10 and o.current_offset == 10
    assert store.read(o, big, 0) == b""
    assert status_of(store.read, o, big - 1, 1) == STATUS_END_OF_FILE
    assert status_of(store.read, o, big, 1) == STATUS_INVALID_PARAMETER
    assert status_of(store.read, o, big + 1, 0) == STATUS_INVALID_PARAMETER
    assert store.write(o, big, b"") == 0
    assert status_of(store.write, o, big, b"x") == STATUS_INVALID_PARAMETER
    assert status_of(store.write, o, 0xFFFFFFF0000, b"x") == STATUS_INVALID_PARAMETER
    assert status_of(store.write, o, 0xFFFFFFF0000 - 1, b"x") == STATUS_DISK_FULL
    assert store.write(o, 0xFFFFFFF0000, b"") == 0


def test_directory_io_refused(store, share):
    d = create(store, share, "d", options=FILE_DIRECTORY_FILE, disposition=D.FILE_CREATE).open
    assert status_of(store.read, d, 0, 1) == STATUS_INVALID_DEVICE_REQUEST
    assert status_of(store.write, d, 0, b"x") == STATUS_INVALID_DEVICE_REQUEST


def test_flush(store, share):
    o = create(store, share, "f").open
    store.write(o, 0, b"data")
    store.flush(o)
    ro = create(store, share, "f", access=GENERIC_READ, disposition=D.FILE_OPEN).open
    assert status_of(store.flush, ro) == STATUS_ACCESS_DENIED


def test_end_of_file_and_allocation(store, share, root):
    o = create(store, share, "f").open
    store.write(o, 0, b"0123456789")
    store.set_end_of_file(o, 4)
    assert (root / "f").read_bytes() == b"0123"
    store.set_end_of_file(o, 6)
    assert (root / "f").read_bytes() == b"0123\0\0"
    store.set_allocation(o, 1 << 20)  # growing: size unchanged
    assert os.path.getsize(root / "f") == 6
    store.set_allocation(o, 2)
    assert (root / "f").read_bytes() == b"01"
    ro = create(store, share, "f", access=GENERIC_READ, disposition=D.FILE_OPEN).open
    assert status_of(store.set_end_of_file, ro, 0) == STATUS_ACCESS_DENIED


def test_set_basic_times_and_attributes(store, share, root):
    o = create(store, share, "f").open
    t_write = to_filetime(1_500_000_000 * 10**9)
    t_access = to_filetime(1_400_000_000 * 10**9)
    t_create = to_filetime(1_300_000_000 * 10**9)
    store.set_basic(o, t_create, t_access, t_write, 0, 0)
    st = os.stat(root / "f")
    assert st.st_mtime_ns == from_filetime(t_write)
    assert st.st_atime_ns == from_filetime(t_access)
    s = store.stat(o)
    assert (s.creation_time, s.last_access_time, s.last_write_time) == (t_create, t_access, t_write)
    # 0 and -1 leave values alone
    store.set_basic(o, 0, 0xFFFFFFFFFFFFFFFF, 0, 0, 0)
    assert store.stat(o).last_write_time == t_write
    store.set_basic(o, 0, 0, 0, 0, FILE_ATTRIBUTE_HIDDEN | FILE_ATTRIBUTE_READONLY)
    s = store.stat(o)
    assert s.attributes == FILE_ATTRIBUTE_HIDDEN | FILE_ATTRIBUTE_READONLY
    assert not os.stat(root / "f").st_mode & stat.S_IWUSR
    assert s.creation_time == t_create
    store.set_basic(o, 0, 0, 0, 0, FILE_ATTRIBUTE_ARCHIVE)
    assert store.stat(o).attributes == FILE_ATTRIBUTE_ARCHIVE
    assert os.stat(root / "f").st_mode & stat.S_IWUSR
    ra = create(store, share, "f", access=FILE_READ_ATTRIBUTES, disposition=D.FILE_OPEN).open
    assert status_of(store.set_basic, ra, 0, 0, 0, 0, FILE_ATTRIBUTE_ARCHIVE) == STATUS_ACCESS_DENIED


def test_position_and_mode(store, share):
    o = create(store, share, "f", options=0x2).open  # FILE_WRITE_THROUGH
    store.set_position(o, 1234)
    assert o.current_offset == 1234
    assert o.mode == 0x2
    store.set_mode(o, 0x4)
    assert o.mode == 0x4
    assert status_of(store.set_mode, o, 0x1) == STATUS_INVALID_PARAMETER


# ---------------------------------------------------------------- rename
def test_rename_simple_and_into_directory(store, share, root):
    (root / "sub").mkdir()
    o = create(store, share, "a.txt").open
    store.write(o, 0, b"payload")
    store.rename(o, "b.txt", False)
    assert sorted(os.listdir(root)) == ["b.txt", "sub"]
    assert o.path == "b.txt"
    store.rename(o, "\\sub\\c.txt", False)  # leading separator accepted for targets
    assert (root / "sub" / "c.txt").read_bytes() == b"payload"
    assert o.path == "sub\\c.txt"
    assert store.read(o, 0, 100) == b"payload"


def test_rename_collision_and_replace(store, share, root):
    (root / "target").write_bytes(b"old")
    o = create(store, share, "src").open
    store.write(o, 0, b"new")
    assert status_of(store.rename, o, "target", False) == STATUS_OBJECT_NAME_COLLISION
    store.rename(o, "target", True)
    assert (root / "target").read_bytes() == b"new"
    assert not (root / "src").exists()


def test_rename_over_open_file_refused(store, share, root):
    create(store, share, "target")
    o = create(store, share, "src").open
    assert status_of(store.rename, o, "target", True) == STATUS_ACCESS_DENIED


def test_rename_over_directory_refused(store, share, root):
    (root / "dir").mkdir()
    o = create(store, share, "src").open
    assert status_of(store.rename, o, "dir", True) == STATUS_ACCESS_DENIED


def test_rename_needs_delete_access(store, share, root):
    (root / "f").write_text("x")
    o = create(store, share, "f", access=GENERIC_READ, disposition=D.FILE_OPEN).open
    assert status_of(store.rename, o, "g", False) == STATUS_ACCESS_DENIED


def test_rename_case_only(store, share, root):
    o = create(store, share, "name.txt").open
    store.rename(o, "NAME.TXT", False)
    assert os.listdir(root) == ["NAME.TXT"]


def test_rename_directory_with_open_child_refused(store, share, root):
    d = create(store, share, "d", options=FILE_DIRECTORY_FILE, disposition=D.FILE_CREATE).open
    child = create(store, share, "d\\child").open
    assert status_of(store.rename, d, "e", False) == STATUS_ACCESS_DENIED
    store.close(child)
    store.rename(d, "e", False)
    assert (root / "e" / "child").exists()


def test_rename_to_missing_directory(store, share):
    o = create(store, share, "f").open
    assert status_of(store.rename, o, "no\\f", False) == STATUS_OBJECT_PATH_NOT_FOUND


def test_rename_then_delete_on_close_uses_new_name(store, share, root):
    o = create(store, share, "f").open
    store.rename(o, "g", False)
    store.set_disposition(o, True)
    store.close(o)
    assert os.listdir(root) == []


def test_concurrent_creates_and_closes(store, share, root):
    """The open table stays consistent under threads (share-mode state is locked)."""
    errors = []

    def worker(i):
        try:
            for j in range(30):
                r = create(store, share, f"f{i}", access=FILE_READ_DATA | 0x2, share_access=7)
                store.write(r.open, j, b"x")
                store.close(r.open)
        except Exception as e:  # noqa: BLE001 - collected and asserted below
            errors.append(e)

    ts = [threading.Thread(target=worker, args=(i % 3,)) for i in range(6)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    assert not errors
    assert not store.opens and not store.files


def test_allocation_reserve_and_release(store, share, root):
    """AllocationSize is reserved without moving EndOfFile, and given back (fallocate);
    the xattrs that hold attributes/EAs do not count (FIEMAP, not st_blocks)."""
    from wsd_smb.store.eas import Ea

    o = create(store, share, "f", eas=[Ea("A" * 40, b"v" * 60), Ea("B" * 40, b"w" * 60)]).open
    assert store.stat(o).allocation_size == 0
    store.set_allocation(o, 1 << 20)
    s = store.stat(o)
    assert s.allocation_size == 1 << 20 and s.end_of_file == 0
    store.set_allocation(o, 4096)
    assert store.stat(o).allocation_size == 4096
    store.set_allocation(o, 0)
    assert store.stat(o).allocation_size == 0
    r = create(store, share, "g", allocation_size=65536, disposition=D.FILE_CREATE)
    assert store.stat(r.open).allocation_size == 65536 and store.stat(r.open).end_of_file == 0


def test_user_set_times_are_sticky_per_open(store, share):
    o = create(store, share, "f").open
    t = to_filetime(1_600_000_000 * 10**9)
    store.set_basic(o, 0, 0, t, t, 0)
    store.write(o, 0, b"data")                       # through the same open: times stay
    store.set_basic(o, 0, 0, 0, 0, FILE_ATTRIBUTE_HIDDEN)
    s = store.stat(o)
    assert s.last_write_time == t and s.change_time == t


def test_read_with_headroom_matches_plain_read(store, share):
    """store.read(headroom=N): the same bytes and statuses as a plain read, as a view that
    runs to the end of a HeadroomBuffer with N spare bytes in front (a READ response is then
    assembled around the payload without copying it)."""
    from wsd_smb.buffers import HeadroomBuffer

    o = create(store, share, "h").open
    data = os.urandom(1 << 20)
    store.write(o, 0, data)
    for off, n in ((0, 1 << 20), (1000, 5000), ((1 << 20) - 10, 100)):
        v = store.read(o, off, n, headroom=80)
        assert bytes(v) == store.read(o, off, n) == data[off:off + n]
        assert isinstance(v.obj, HeadroomBuffer) and v.obj.headroom == 80
        assert len(v.obj) == 80 + len(v)                      # short read at EOF: trimmed
    assert status_of(store.read, o, 1 << 20, 5, 0, 80) == STATUS_END_OF_FILE
    assert status_of(store.read, o, (1 << 20) - 2, 5, 3, 80) == STATUS_END_OF_FILE   # MinimumCount


# The sharing rule of a rename for the directory that receives the name: Windows opens
# it for FILE_ADD_FILE|SYNCHRONIZE sharing read and write before the rename (smb2.rename.*,
# smb2.oplock.exclusive6, smb2.notify.mask-change/rec; MS-FSA 2.1.5.1.2.1 share check).
_DIR_DATA = FILE_READ_DATA | FILE_WRITE_DATA | FILE_APPEND_DATA | FILE_EXECUTE | FILE_READ_ATTRIBUTES


@pytest.mark.parametrize("access,share_access,expected", [
    (_DIR_DATA, FILE_SHARE_READ | FILE_SHARE_WRITE, 0),                    # notify.mask-change: no DELETE sharing
    (_DIR_DATA, FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE, 0),  # share_delete_no_delete_access
    (_DIR_DATA | DELETE, FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE,
     STATUS_SHARING_VIOLATION),                                           # share_delete_and_delete_access
    (_DIR_DATA | DELETE, 0, STATUS_SHARING_VIOLATION),                     # no_share_delete_but_delete_access
    (_DIR_DATA, 0, STATUS_SHARING_VIOLATION),                             # no_share_delete_no_delete_access
    (FILE_READ_DATA, FILE_SHARE_READ, STATUS_SHARING_VIOLATION),         # data access without write sharing
    (SYNCHRONIZE | FILE_READ_ATTRIBUTES, 0, 0),                          # msword: no data access, no part
])
def test_rename_target_directory_sharing(store, share, root, access, share_access, expected):
    (root / "d").mkdir()
    f = create(store, share, "d\\f", share_access=0).open
    dh = create(store, share, "d", access=access, share_access=share_access, options=FILE_DIRECTORY_FILE,
                disposition=D.FILE_OPEN).open
    if expected:
        assert status_of(store.rename, f, "d\\g", False) == expected
        assert os.listdir(root / "d") == ["f"]
    else:
        store.rename(f, "d\\g", False)
        assert os.listdir(root / "d") == ["g"]
    store.close(dh)
    store.close(f)


def test_rename_out_of_a_directory_open_without_delete_sharing(store, share, root):
    """Only the target's directory counts: moving a file out of a directory that is open
    without FILE_SHARE_DELETE (even share none) works, moving it into one does not."""
    (root / "src").mkdir()
    (root / "dst").mkdir()
    sdir = create(store, share, "src", access=_DIR_DATA, share_access=0, options=FILE_DIRECTORY_FILE,
                  disposition=D.FILE_OPEN).open
    f = create(store, share, "src\\f").open
    store.rename(f, "dst\\f", False)
    assert os.listdir(root / "dst") == ["f"] and os.listdir(root / "src") == []
    ddir = create(store, share, "dst", access=_DIR_DATA, share_access=FILE_SHARE_READ, options=FILE_DIRECTORY_FILE,
                  disposition=D.FILE_OPEN).open
    # back into src (open with share none, data access): refused; within dst: refused too
    assert status_of(store.rename, f, "src\\f", False) == STATUS_SHARING_VIOLATION
    assert status_of(store.rename, f, "dst\\g", False) == STATUS_SHARING_VIOLATION
    store.close(sdir)
    store.rename(f, "src\\f", False)  # dst (the source's directory now) does not matter
    assert os.listdir(root / "src") == ["f"]
    for o in (f, ddir):
        store.close(o)


def test_rename_directory_uses_add_subdirectory(store, share, root):
    """A directory moves with FILE_ADD_SUBDIRECTORY: the same share check (needs write sharing)."""
    (root / "p").mkdir()
    d = create(store, share, "p\\sub", options=FILE_DIRECTORY_FILE, disposition=D.FILE_CREATE).open
    ph = create(store, share, "p", access=FILE_APPEND_DATA, share_access=FILE_SHARE_READ,
                options=FILE_DIRECTORY_FILE, disposition=D.FILE_OPEN).open
    assert status_of(store.rename, d, "p\\sub2", False) == STATUS_SHARING_VIOLATION
    store.close(ph)
    ph = create(store, share, "p", access=FILE_APPEND_DATA, share_access=FILE_SHARE_READ | FILE_SHARE_WRITE,
                options=FILE_DIRECTORY_FILE, disposition=D.FILE_OPEN).open
    store.rename(d, "p\\sub2", False)
    assert os.listdir(root / "p") == ["sub2"]
    for o in (d, ph):
        store.close(o)


def test_set_change_time_survives_the_last_close(store, share):
    """smbtorture smb2.timestamps.time_t_*: a ChangeTime set through SET_INFO is still
    reported after the file is closed and opened again (and in a directory listing), until
    the inode really changes."""
    o = create(store, share, "ct").open
    t = to_filetime(1 * 10**9)                       # 1970-01-01 00:00:01
    store.set_basic(o, t, 0, t, t, 0)
    store.close(o)
    o = create(store, share, "ct", disposition=D.FILE_OPEN).open
    s = store.stat(o)
    assert (s.creation_time, s.last_write_time, s.change_time) == (t, t, t)
    store.close(o)
    o = create(store, share, "ct", disposition=D.FILE_OPEN).open
    store.write(o, 0, b"x")                          # a real change: the real ctime again
    assert store.stat(o).change_time != t
    store.close(o)
