"""Directory enumeration: DOS wildcards (MS-FSA 2.1.4.4), flags, output-buffer limits,
STATUS_NO_SUCH_FILE / STATUS_NO_MORE_FILES (MS-SMB2 3.3.5.18)."""
from __future__ import annotations

import os

import pytest
from conftest import create, status_of

from wsd_smb.store import fscc
from wsd_smb.store.constants import (
    FILE_DIRECTORY_FILE,
    FILE_READ_ATTRIBUTES,
    SMB2_REOPEN,
    SMB2_RESTART_SCANS,
    SMB2_RETURN_SINGLE_ENTRY,
    CreateDisposition as D,
    FileInformationClass as FIC,
)
from wsd_smb.store.errors import (
    STATUS_ACCESS_DENIED,
    STATUS_INFO_LENGTH_MISMATCH,
    STATUS_INVALID_INFO_CLASS,
    STATUS_INVALID_PARAMETER,
    STATUS_NO_MORE_FILES,
    STATUS_NO_SUCH_FILE,
)
from wsd_smb.store.info import query_directory
from wsd_smb.store.wildcard import is_name_in_expression as match


@pytest.mark.parametrize("name, expr, ok", [
    ("anything.txt", "*", True),
    ("a.txt", "*.txt", True),
    ("a.TXT", "*.txt", True),          # case-insensitive
    ("a.txt.bak", "*.txt", False),
    ("abc", "a?c", True),
    ("ac", "a?c", False),
    ("abc", "abc", True),
    ("abd", "abc", False),
    # DOS_STAR '<': up to the final period
    ("foo", "<", True),
    ("foo.txt", "<", False),
    ("a.b.txt", "<.txt", True),
    ("readme", "<.txt", False),
    ("a.b.c", "<.c", True),
    # DOS_QM '>': one char, or nothing at a period / the end
    ("ab", ">>>", True),
    ("abcd", ">>>", False),
    ("ab.x", ">>>.x", True),
    ("abcd.x", ">>>.x", False),
    # DOS_DOT '"': a period, or nothing at the end
    ("foo", 'foo"', True),
    ("foo.", 'foo"', True),
    ("foox", 'foo"', False),
    # the classic translation of "*.*" by Windows clients
    ("noext", '<"*', True),
    ("with.ext", '<"*', True),
])
def test_wildcards(name, expr, ok):
    assert match(name, expr) is ok


def _names(data: bytes, cls=fscc.FileNamesInformation) -> list[str]:
    out, off = [], 0
    while True:
        e = cls.unpack(data, off)
        out.append(bytes(e.file_name).decode("utf-16-le"))
        if not e.next_entry_offset:
            return out
        off += e.next_entry_offset


@pytest.fixture
def tree(store, share, root):
    for n in ["a.txt", "b.txt", "c.doc", "Upper.TXT", "sub"]:
        if n == "sub":
            (root / n).mkdir()
        else:
            (root / n).write_bytes(b"x" * 10)
    return create(store, share, "", access=0x1 | FILE_READ_ATTRIBUTES, disposition=D.FILE_OPEN,
                  options=FILE_DIRECTORY_FILE).open


def test_enumerate_all_then_no_more_files(store, tree):
    data = query_directory(store, tree, FIC.FileNamesInformation, 0, "*", 65536)
    assert _names(data) == [".", "..", "a.txt", "b.txt", "c.doc", "sub", "Upper.TXT"]
    assert status_of(query_directory, store, tree, FIC.FileNamesInformation, 0, "*", 65536) \
        == STATUS_NO_MORE_FILES


def test_pattern_and_no_such_file(store, tree):
    data = query_directory(store, tree, FIC.FileNamesInformation, 0, "*.txt", 65536)
    assert _names(data) == ["a.txt", "b.txt", "Upper.TXT"]
    assert status_of(query_directory, store, tree, FIC.FileNamesInformation, SMB2_REOPEN, "*.xls", 65536) \
        == STATUS_NO_SUCH_FILE
    data = query_directory(store, tree, FIC.FileNamesInformation, SMB2_RESTART_SCANS, "c.doc", 65536)
    assert _names(data) == ["c.doc"]


def test_buffer_limits_spread_entries_over_calls(store, tree):
    cls = fscc.FileIdBothDirectoryInformation
    # room for exactly two entries with short names: 104+2 -> padded 112, then 104+2
    limit = 112 + 104 + 2
    seen = []
    for _ in range(10):
        try:
            data = query_directory(store, tree, FIC.FileIdBothDirectoryInformation, 0, "*", limit)
        except Exception as e:  # noqa: BLE001
            assert getattr(e, "status", None) == STATUS_NO_MORE_FILES
            break
        assert len(data) <= limit
        seen += _names(data, cls)
    assert seen == [".", "..", "a.txt", "b.txt", "c.doc", "sub", "Upper.TXT"]


def test_single_entry_and_restart(store, tree):
    one = query_directory(store, tree, FIC.FileNamesInformation, SMB2_RETURN_SINGLE_ENTRY, "*", 65536)
    assert _names(one) == ["."]
    two = query_directory(store, tree, FIC.FileNamesInformation, SMB2_RETURN_SINGLE_ENTRY, "", 65536)
    assert _names(two) == [".."]
    again = query_directory(store, tree, FIC.FileNamesInformation,
                            SMB2_RESTART_SCANS | SMB2_RETURN_SINGLE_ENTRY, "", 65536)
    assert _names(again) == ["."]


def test_tiny_buffer_and_bad_class(store, tree):
    assert status_of(query_directory, store, tree, FIC.FileBothDirectoryInformation, 0, "*", 50) \
        == STATUS_INFO_LENGTH_MISMATCH
    assert status_of(query_directory, store, tree, FIC.FileBasicInformation, 0, "*", 5000) \
        == STATUS_INVALID_INFO_CLASS


def test_entry_contents(store, tree, root):
    data = query_directory(store, tree, FIC.FileIdBothDirectoryInformation, 0, "a.txt", 65536)
    e = fscc.FileIdBothDirectoryInformation.unpack(data, 0)
    st = os.stat(root / "a.txt")
    assert e.end_of_file == 10 and e.file_id == st.st_ino and e.file_attributes == 0x20
    assert e.next_entry_offset == 0 and e.short_name_length == 10
    assert bytes(e.short_name)[:10].decode("utf-16-le") == "A.TXT" and bytes(e.short_name)[10:] == b"\0" * 14
    data = query_directory(store, tree, FIC.FileDirectoryInformation, SMB2_REOPEN, "sub", 65536)
    e = fscc.FileDirectoryInformation.unpack(data, 0)
    assert e.file_attributes == 0x10 and e.end_of_file == 0


def test_enumeration_hides_escaping_symlinks(store, share, root):
    outside = root.parent / "outside.txt"
    outside.write_text("x")
    os.symlink(str(outside), root / "escape")
    os.symlink("inside.txt", root / "link")
    (root / "inside.txt").write_text("hello")
    d = create(store, share, "", access=0x1, disposition=D.FILE_OPEN, options=FILE_DIRECTORY_FILE).open
    data = query_directory(store, d, FIC.FileDirectoryInformation, 0, "*", 65536)
    assert _names(data, fscc.FileDirectoryInformation) == [".", "..", "inside.txt", "link"]


def test_enumeration_access_and_type(store, share, root):
    (root / "f").write_text("x")
    d = create(store, share, "", access=FILE_READ_ATTRIBUTES, disposition=D.FILE_OPEN,
               options=FILE_DIRECTORY_FILE).open
    assert status_of(query_directory, store, d, FIC.FileNamesInformation, 0, "*", 4096) == STATUS_ACCESS_DENIED
    f = create(store, share, "f", disposition=D.FILE_OPEN).open
    assert status_of(query_directory, store, f, FIC.FileNamesInformation, 0, "*", 4096) \
        == STATUS_INVALID_PARAMETER
