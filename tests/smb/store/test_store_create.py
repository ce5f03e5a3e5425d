"""CREATE: dispositions and create actions, options, access mapping, share modes,
delete-on-close (MS-FSA 2.1.5.1, MS-SMB2 3.3.5.9)."""
from __future__ import annotations

import os
import stat

import pytest
from conftest import RW, SHARE_ALL, create, status_of

from wsd_smb.store import Share
from wsd_smb.store.constants import (
    DELETE,
    FILE_ALL_ACCESS,
    FILE_ATTRIBUTE_READONLY,
    FILE_DELETE_ON_CLOSE,
    FILE_DIRECTORY_FILE,
    FILE_GENERIC_READ,
    FILE_GENERIC_WRITE,
    FILE_NON_DIRECTORY_FILE,
    FILE_READ_ATTRIBUTES,
    FILE_READ_DATA,
    FILE_SHARE_DELETE,
    FILE_SHARE_READ,
    FILE_SHARE_WRITE,
    FILE_WRITE_DATA,
    GENERIC_ALL,
    GENERIC_READ,
    GENERIC_WRITE,
    MAXIMUM_ALLOWED,
    CreateAction,
    CreateDisposition as D,
)
from wsd_smb.store.errors import (
    STATUS_ACCESS_DENIED,
    STATUS_CANNOT_DELETE,
    STATUS_DELETE_PENDING,
    STATUS_DIRECTORY_NOT_EMPTY,
    STATUS_FILE_CLOSED,
    STATUS_FILE_IS_A_DIRECTORY,
    STATUS_INVALID_PARAMETER,
    STATUS_NOT_A_DIRECTORY,
    STATUS_OBJECT_NAME_COLLISION,
    STATUS_OBJECT_NAME_NOT_FOUND,
    STATUS_SHARING_VIOLATION,
)


# ---------------------------------------------------------------- dispositions
@pytest.mark.parametrize("disp, action", [
    (D.FILE_SUPERSEDE, CreateAction.FILE_SUPERSEDED),
    (D.FILE_OPEN, CreateAction.FILE_OPENED),
    (D.FILE_OPEN_IF, CreateAction.FILE_OPENED),
    (D.FILE_OVERWRITE, CreateAction.FILE_OVERWRITTEN),
    (D.FILE_OVERWRITE_IF, CreateAction.FILE_OVERWRITTEN),
])
def test_disposition_on_existing_file(store, share, root, disp, action):
    (root / "f").write_bytes(b"old content")
    r = create(store, share, "f", disposition=disp)
    assert r.create_action == action
    expect = b"old content" if action == CreateAction.FILE_OPENED else b""
    assert (root / "f").read_bytes() == expect


@pytest.mark.parametrize("disp", [D.FILE_SUPERSEDE, D.FILE_CREATE, D.FILE_OPEN_IF, D.FILE_OVERWRITE_IF])
def test_disposition_creates_missing_file(store, share, root, disp):
    r = create(store, share, "new", disposition=disp)
    assert r.create_action == CreateAction.FILE_CREATED
    assert (root / "new").is_file()


@pytest.mark.parametrize("disp", [D.FILE_OPEN, D.FILE_OVERWRITE])
def test_disposition_missing_file_not_found(store, share, root, disp):
    assert status_of(create, store, share, "nope", disposition=disp) == STATUS_OBJECT_NAME_NOT_FOUND
    assert not (root / "nope").exists()


def test_create_existing_collides(store, share, root):
    (root / "f").write_text("x")
    assert status_of(create, store, share, "f", disposition=D.FILE_CREATE) == STATUS_OBJECT_NAME_COLLISION


def test_bad_disposition_and_share_access(store, share):
    assert status_of(create, store, share, "f", disposition=6) == STATUS_INVALID_PARAMETER
    assert status_of(create, store, share, "f", share_access=8) == STATUS_INVALID_PARAMETER
    assert status_of(create, store, share, "f", access=0) == STATUS_ACCESS_DENIED


# ---------------------------------------------------------------- directories
def test_mkdir_and_directory_options(store, share, root):
    r = create(store, share, "d", disposition=D.FILE_CREATE, options=FILE_DIRECTORY_FILE)
    assert r.create_action == CreateAction.FILE_CREATED and (root / "d").is_dir()
    assert r.open.is_directory
    assert status_of(create, store, share, "d", options=FILE_NON_DIRECTORY_FILE) == STATUS_FILE_IS_A_DIRECTORY
    (root / "f").write_text("x")
    assert status_of(create, store, share, "f", options=FILE_DIRECTORY_FILE) == STATUS_NOT_A_DIRECTORY
    assert status_of(create, store, share, "g", options=FILE_DIRECTORY_FILE | FILE_NON_DIRECTORY_FILE) \
        == STATUS_INVALID_PARAMETER
    assert status_of(create, store, share, "g", disposition=D.FILE_OVERWRITE_IF,
                     options=FILE_DIRECTORY_FILE) == STATUS_INVALID_PARAMETER
    assert status_of(create, store, share, "d", disposition=D.FILE_OVERWRITE_IF) == STATUS_INVALID_PARAMETER


# ---------------------------------------------------------------- access
def test_generic_mapping_and_maximum_allowed(store, share, root):
    assert create(store, share, "a", access=GENERIC_READ).open.granted_access == FILE_GENERIC_READ
    assert create(store, share, "a", access=GENERIC_WRITE).open.granted_access == FILE_GENERIC_WRITE
    assert create(store, share, "a", access=GENERIC_ALL).open.granted_access == FILE_ALL_ACCESS
    assert create(store, share, "a", access=MAXIMUM_ALLOWED).open.granted_access == FILE_ALL_ACCESS


def test_read_only_share(store, root):
    (root / "f").write_text("x")
    ro = Share("ro", str(root), read_only=True)
    assert status_of(create, store, ro, "f", access=GENERIC_WRITE, disposition=D.FILE_OPEN) == STATUS_ACCESS_DENIED
    assert status_of(create, store, ro, "new", access=GENERIC_READ, disposition=D.FILE_CREATE) \
        == STATUS_ACCESS_DENIED
    assert status_of(create, store, ro, "f", access=GENERIC_READ, disposition=D.FILE_OVERWRITE) \
        == STATUS_ACCESS_DENIED
    assert status_of(create, store, ro, "f", access=GENERIC_READ | DELETE, disposition=D.FILE_OPEN) \
        == STATUS_ACCESS_DENIED
    o = create(store, ro, "f", access=MAXIMUM_ALLOWED, disposition=D.FILE_OPEN).open
    assert o.granted_access & FILE_READ_DATA and not o.granted_access & FILE_WRITE_DATA
    assert store.read(o, 0, 10) == b"x"
    assert not (root / "new").exists()


def test_readonly_attribute(store, share, root):
    r = create(store, share, "ro", disposition=D.FILE_CREATE, attributes=FILE_ATTRIBUTE_READONLY)
    store.close(r.open)
    assert not os.stat(root / "ro").st_mode & stat.S_IWUSR
    assert status_of(create, store, share, "ro", access=GENERIC_WRITE, disposition=D.FILE_OPEN) \
        == STATUS_ACCESS_DENIED
    assert status_of(create, store, share, "ro", access=GENERIC_READ | DELETE, disposition=D.FILE_OPEN,
                     options=FILE_DELETE_ON_CLOSE) == STATUS_CANNOT_DELETE
    o = create(store, share, "ro", access=MAXIMUM_ALLOWED, disposition=D.FILE_OPEN).open
    assert not o.granted_access & FILE_WRITE_DATA


# ---------------------------------------------------------------- share modes
@pytest.mark.parametrize("first_access, first_share, second_access, second_share, ok", [
    (FILE_READ_DATA, FILE_SHARE_READ, FILE_READ_DATA, FILE_SHARE_READ, True),
    (FILE_READ_DATA, FILE_SHARE_READ, FILE_WRITE_DATA, SHARE_ALL, False),   # first does not share write
    (FILE_WRITE_DATA, SHARE_ALL, FILE_READ_DATA, FILE_SHARE_READ, False),   # second does not share write
    (FILE_READ_DATA, 0, FILE_READ_DATA, SHARE_ALL, False),
    (FILE_READ_DATA, 0, FILE_READ_ATTRIBUTES, 0, True),  # attribute-only opens take no part
    (FILE_READ_ATTRIBUTES, 0, FILE_READ_DATA, 0, True),
    (DELETE, FILE_SHARE_READ, FILE_READ_DATA, FILE_SHARE_READ, False),     # second lacks SHARE_DELETE
    (FILE_READ_DATA, FILE_SHARE_READ, DELETE, SHARE_ALL, False),           # first lacks SHARE_DELETE
    (FILE_READ_DATA, FILE_SHARE_READ | FILE_SHARE_DELETE, DELETE, SHARE_ALL, True),
    (FILE_WRITE_DATA, FILE_SHARE_WRITE, FILE_WRITE_DATA, FILE_SHARE_WRITE, True),
])
def test_share_modes(store, share, root, first_access, first_share, second_access, second_share, ok):
    (root / "f").write_text("x")
    create(store, share, "f", access=first_access, share_access=first_share, disposition=D.FILE_OPEN)
    if ok:
        create(store, share, "f", access=second_access, share_access=second_share, disposition=D.FILE_OPEN)
    else:
        assert status_of(create, store, share, "f", access=second_access, share_access=second_share,
                         disposition=D.FILE_OPEN) == STATUS_SHARING_VIOLATION


def test_share_mode_released_on_close(store, share, root):
    (root / "f").write_text("x")
    r = create(store, share, "f", access=FILE_READ_DATA, share_access=0, disposition=D.FILE_OPEN)
    assert status_of(create, store, share, "f", access=FILE_READ_DATA, disposition=D.FILE_OPEN) \
        == STATUS_SHARING_VIOLATION
    store.close(r.open)
    create(store, share, "f", access=FILE_READ_DATA, disposition=D.FILE_OPEN)


def test_overwrite_needs_share_write(store, share, root):
    (root / "f").write_text("x")
    create(store, share, "f", access=FILE_READ_DATA, share_access=FILE_SHARE_READ, disposition=D.FILE_OPEN)
    assert status_of(create, store, share, "f", access=FILE_READ_DATA, disposition=D.FILE_OVERWRITE) \
        == STATUS_SHARING_VIOLATION
    assert (root / "f").read_text() == "x"


# ---------------------------------------------------------------- delete-on-close
def test_delete_on_close_option(store, share, root):
    r = create(store, share, "f", disposition=D.FILE_CREATE, options=FILE_DELETE_ON_CLOSE)
    r2 = create(store, share, "f", disposition=D.FILE_OPEN)  # still openable until that close
    store.close(r.open)
    assert (root / "f").exists()  # another open remains
    assert status_of(create, store, share, "f", disposition=D.FILE_OPEN) == STATUS_DELETE_PENDING
    store.close(r2.open)
    assert not (root / "f").exists()


def test_delete_on_close_needs_delete_access(store, share, root):
    assert status_of(create, store, share, "f", access=GENERIC_READ | GENERIC_WRITE,
                     options=FILE_DELETE_ON_CLOSE) == STATUS_ACCESS_DENIED


def test_set_disposition_and_undo(store, share, root):
    (root / "f").write_text("x")
    r = create(store, share, "f", disposition=D.FILE_OPEN)
    store.set_disposition(r.open, True)
    assert status_of(create, store, share, "f", disposition=D.FILE_OPEN) == STATUS_DELETE_PENDING
    assert store.stat(r.open).number_of_links == 0  # NTFS no longer counts the name
    store.set_disposition(r.open, False)
    assert store.stat(r.open).number_of_links == 1
    store.close(r.open)
    assert (root / "f").exists()
    r = create(store, share, "f", disposition=D.FILE_OPEN)
    store.set_disposition(r.open, True)
    store.close(r.open)
    assert not (root / "f").exists()


def test_set_disposition_needs_delete_access(store, share, root):
    (root / "f").write_text("x")
    r = create(store, share, "f", access=GENERIC_READ, disposition=D.FILE_OPEN)
    assert status_of(store.set_disposition, r.open, True) == STATUS_ACCESS_DENIED


def test_delete_nonempty_directory(store, share, root):
    (root / "d").mkdir()
    (root / "d" / "f").write_text("x")
    r = create(store, share, "d", options=FILE_DIRECTORY_FILE, disposition=D.FILE_OPEN)
    assert status_of(store.set_disposition, r.open, True) == STATUS_DIRECTORY_NOT_EMPTY
    os.unlink(root / "d" / "f")
    store.set_disposition(r.open, True)
    store.close(r.open)
    assert not (root / "d").exists()


def test_rmdir_via_delete_on_close_option(store, share, root):
    (root / "d").mkdir()
    r = create(store, share, "d", options=FILE_DIRECTORY_FILE | FILE_DELETE_ON_CLOSE, disposition=D.FILE_OPEN)
    store.close(r.open)
    assert not (root / "d").exists()


def test_create_in_delete_pending_directory(store, share, root):
    (root / "d").mkdir()
    r = create(store, share, "d", options=FILE_DIRECTORY_FILE, disposition=D.FILE_OPEN)
    store.set_disposition(r.open, True)
    assert status_of(create, store, share, "d\\new", disposition=D.FILE_CREATE) == STATUS_DELETE_PENDING


def test_closed_open_is_file_closed(store, share):
    r = create(store, share, "f")
    store.close(r.open)
    assert status_of(store.close, r.open) == STATUS_FILE_CLOSED
    assert status_of(store.read, r.open, 0, 1) == STATUS_FILE_CLOSED
    assert status_of(store.get, r.open.file_id_volatile) == STATUS_FILE_CLOSED


def test_file_ids_unique_and_tables(store, share):
    a = create(store, share, "a").open
    b = create(store, share, "b").open
    assert a.file_id != b.file_id
    assert store.get(a.file_id_volatile, a.file_id_persistent) is a
    assert store.by_persistent[b.file_id_persistent] is b
    assert status_of(store.get, a.file_id_volatile, b.file_id_persistent) == STATUS_FILE_CLOSED


def test_access_modes_rw(store, share, root):
    r = create(store, share, "f", access=RW)
    store.write(r.open, 0, b"abc")
    ro = create(store, share, "f", access=GENERIC_READ, disposition=D.FILE_OPEN).open
    assert status_of(store.write, ro, 0, b"x") == STATUS_ACCESS_DENIED
    wo = create(store, share, "f", access=FILE_WRITE_DATA, disposition=D.FILE_OPEN).open
    assert status_of(store.read, wo, 0, 1) == STATUS_ACCESS_DENIED


def test_closing_on_failure_owns_the_fds_until_the_block_finishes(tmp_path):
    """store.errors.closing_on_failure: fds stay open after a block that finishes, are closed
    when it fails; an OSError leaves as its NTSTATUS, an NtStatusError unchanged."""
    import errno as _errno
    import os as _os

    from wsd_smb.ntstatus import NtStatusError
    from wsd_smb.store.errors import STATUS_SHARING_VIOLATION, closing_on_failure, fail

    def fresh():
        return _os.open(tmp_path, _os.O_RDONLY | _os.O_DIRECTORY)

    def is_open(fd):
        try:
            _os.fstat(fd)
            return True
        except OSError as e:
            assert e.errno == _errno.EBADF
            return False

    fd = fresh()
    with closing_on_failure(fd):
        pass
    assert is_open(fd)
    _os.close(fd)

    fd = fresh()
    with pytest.raises(NtStatusError) as e:
        with closing_on_failure(fd):
            raise FileNotFoundError(_errno.ENOENT, "gone")
    assert e.value.status == 0xC0000034 and not is_open(fd)  # STATUS_OBJECT_NAME_NOT_FOUND

    a, b = fresh(), fresh()
    with pytest.raises(NtStatusError) as e:
        with closing_on_failure(a, b):
            raise fail(STATUS_SHARING_VIOLATION, "test")
    assert e.value.status == STATUS_SHARING_VIOLATION and not is_open(a) and not is_open(b)
