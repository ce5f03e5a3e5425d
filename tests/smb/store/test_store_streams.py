"""Named data streams kept in xattrs (``file:stream:$DATA``)."""
from __future__ import annotations

import os

from conftest import create, status_of

from wsd_smb.store import fscc
from wsd_smb.store.constants import (
    FILE_DIRECTORY_FILE,
    FILE_READ_DATA,
    SMB2_0_INFO_FILE,
    CreateAction,
    CreateDisposition as D,
    FileInformationClass as FIC,
)
from wsd_smb.store.errors import (
    STATUS_DELETE_PENDING,
    STATUS_DISK_FULL,
    STATUS_END_OF_FILE,
    STATUS_NOT_A_DIRECTORY,
    STATUS_OBJECT_NAME_COLLISION,
    STATUS_OBJECT_NAME_INVALID,
    STATUS_OBJECT_NAME_NOT_FOUND,
    STATUS_SHARING_VIOLATION,
)
from wsd_smb.store.info import query_info


def _streams(store, o):
    data, _ = query_info(store, o, SMB2_0_INFO_FILE, FIC.FileStreamInformation, 0, 4096)
    out, off = [], 0
    while data:
        e = fscc.FileStreamInformation.unpack(data, off)
        out.append((bytes(e.stream_name).decode("utf-16-le"), e.stream_size))
        if not e.next_entry_offset:
            break
        off += e.next_entry_offset
    return out


def test_stream_create_write_read_list(store, share, root):
    r = create(store, share, "f:Extra", disposition=D.FILE_CREATE)   # creates the file too
    assert r.create_action == CreateAction.FILE_CREATED and (root / "f").is_file()
    s = r.open
    assert store.write(s, 3, b"abc") == 3
    assert store.read(s, 0, 100) == b"\0\0\0abc"
    assert os.getxattr(root / "f", "user.wsd.stream.Extra") == b"\0\0\0abc"
    assert (root / "f").read_bytes() == b""            # the data stream is untouched
    assert store.stat(s).end_of_file == 6 and s.path == "f:Extra"
    f = create(store, share, "f::$DATA", disposition=D.FILE_OPEN).open
    store.write(f, 0, b"main")
    assert _streams(store, f) == [("::$DATA", 4), (":Extra:$DATA", 6)]
    # names are case-insensitive, spelled as created
    again = create(store, share, "F:EXTRA:$DATA", disposition=D.FILE_OPEN).open
    assert store.read(again, 3, 3) == b"abc" and again.path == "f:Extra"
    store.set_end_of_file(again, 2)
    assert store.read(s, 0, 10) == b"\0\0"


def test_stream_dispositions_and_errors(store, share, root):
    assert status_of(create, store, share, "nofile:s", disposition=D.FILE_OPEN) == STATUS_OBJECT_NAME_NOT_FOUND
    assert not (root / "nofile").exists()
    create(store, share, "g:s", disposition=D.FILE_CREATE)
    assert status_of(create, store, share, "g:s", disposition=D.FILE_CREATE) == STATUS_OBJECT_NAME_COLLISION
    assert status_of(create, store, share, "g:other", disposition=D.FILE_OPEN) == STATUS_OBJECT_NAME_NOT_FOUND
    assert status_of(create, store, share, "g:s", options=FILE_DIRECTORY_FILE) == STATUS_NOT_A_DIRECTORY
    assert status_of(create, store, share, "g:s:$INDEX_ALLOCATION") == STATUS_OBJECT_NAME_INVALID
    o = create(store, share, "g:s", disposition=D.FILE_OPEN).open
    store.write(o, 0, b"xyz")
    ow = create(store, share, "g:s", disposition=D.FILE_OVERWRITE_IF)
    assert ow.create_action == CreateAction.FILE_OVERWRITTEN
    assert store.stat(ow.open).end_of_file == 0
    assert status_of(store.read, o, 0, 10) == STATUS_END_OF_FILE  # the other open sees it emptied
    big = create(store, share, "g:big").open
    assert status_of(store.write, big, 0, b"x" * (1 << 20)) == STATUS_DISK_FULL  # one xattr value


def test_stream_share_modes_and_delete(store, share, root):
    a = create(store, share, "h:s", access=FILE_READ_DATA, share_access=0).open
    assert status_of(create, store, share, "h:s", access=FILE_READ_DATA, disposition=D.FILE_OPEN) \
        == STATUS_SHARING_VIOLATION
    create(store, share, "h", access=FILE_READ_DATA, disposition=D.FILE_OPEN)  # other stream: no conflict
    store.close(a)
    d = create(store, share, "h:s", disposition=D.FILE_OPEN).open
    store.set_disposition(d, True)
    assert status_of(create, store, share, "h:s", disposition=D.FILE_OPEN) == STATUS_DELETE_PENDING
    store.close(d)
    assert "user.wsd.stream.s" not in os.listxattr(root / "h") and (root / "h").exists()


def test_directory_streams(store, share, root):
    (root / "d").mkdir()
    s = create(store, share, "d:meta", disposition=D.FILE_CREATE).open
    store.write(s, 0, b"dir stream")
    d = create(store, share, "d", access=FILE_READ_DATA, disposition=D.FILE_OPEN,
               options=FILE_DIRECTORY_FILE).open
    assert _streams(store, d) == [(":meta:$DATA", 10)]


def test_stream_name_syntax_and_directory_data_stream(store, share, root):
    from wsd_smb.store.constants import FILE_DIRECTORY_FILE
    from wsd_smb.store.errors import STATUS_FILE_IS_A_DIRECTORY
    from wsd_smb.store.paths import split_name_stream

    assert split_name_stream("a:s") == (["a"], "s")
    assert split_name_stream("a::$DATA") == (["a"], "")
    for bad in ("a:s:", "a:", "a:s:$FOO", "::$DATA"):
        assert status_of(split_name_stream, bad) == STATUS_OBJECT_NAME_INVALID
    (root / "d").mkdir()
    create(store, share, "d", access=0x1f01ff, share_access=0, disposition=D.FILE_OPEN,
           options=FILE_DIRECTORY_FILE)
    # the directory's (absent) data stream: answered before any share-mode check
    assert status_of(create, store, share, "d::$DATA", disposition=D.FILE_OPEN) == STATUS_FILE_IS_A_DIRECTORY
    assert status_of(create, store, share, "d::$DATA", disposition=D.FILE_OPEN,
                     options=FILE_DIRECTORY_FILE) == STATUS_NOT_A_DIRECTORY


def test_stream_rename(store, share, root):
    s = create(store, share, "r:old", disposition=D.FILE_CREATE).open
    store.write(s, 0, b"payload")
    create(store, share, "r:taken", disposition=D.FILE_CREATE)
    assert status_of(store.rename, s, ":taken", False) == STATUS_OBJECT_NAME_COLLISION
    store.rename(s, ":New:$DATA", False)
    assert s.path == "r:New"
    assert sorted(n for n in os.listxattr(root / "r") if n.startswith("user.wsd.stream.")) == \
        ["user.wsd.stream.New", "user.wsd.stream.taken"]
    assert store.read(create(store, share, "r:new", disposition=D.FILE_OPEN).open, 0, 10) == b"payload"


def test_file_deleted_after_its_open_streams(store, share, root):
    from wsd_smb.store.constants import FILE_SHARE_DELETE, FILE_SHARE_READ, FILE_SHARE_WRITE

    sh = FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE
    s = create(store, share, "z:s", share_access=sh, disposition=D.FILE_CREATE).open
    f = create(store, share, "z", share_access=sh, disposition=D.FILE_OPEN).open
    store.set_disposition(f, True)
    store.close(f)
    assert (root / "z").exists()                       # waits for the stream's open
    assert status_of(create, store, share, "z", disposition=D.FILE_OPEN) == STATUS_DELETE_PENDING
    assert status_of(create, store, share, "z:s", disposition=D.FILE_OPEN) == STATUS_DELETE_PENDING
    store.close(s)
    assert not (root / "z").exists()
    # and a stream open that does not share delete blocks opening the file for DELETE
    t = create(store, share, "y:s", share_access=FILE_SHARE_READ, disposition=D.FILE_CREATE).open
    assert status_of(create, store, share, "y", disposition=D.FILE_OPEN) == STATUS_SHARING_VIOLATION
    store.close(t)
