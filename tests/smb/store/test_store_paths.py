"""Path checks and resolution confined to the share (symlink and '..' escapes)."""
from __future__ import annotations

import os

import pytest
from conftest import create, status_of

from wsd_smb.store import Share, resolve, split_name
from wsd_smb.store.constants import FILE_DIRECTORY_FILE, CreateDisposition
from wsd_smb.store.errors import (
    STATUS_ACCESS_DENIED,
    STATUS_INVALID_PARAMETER,
    STATUS_OBJECT_NAME_INVALID,
    STATUS_OBJECT_NAME_NOT_FOUND,
    STATUS_OBJECT_PATH_NOT_FOUND,
    STATUS_OBJECT_PATH_SYNTAX_BAD,
)

OPEN = CreateDisposition.FILE_OPEN


def test_split_name_components():
    assert split_name("") == []
    assert split_name("a") == ["a"]
    assert split_name("dir\\sub\\f.txt") == ["dir", "sub", "f.txt"]
    assert split_name("dir\\") == ["dir"]
    assert split_name("f.txt::$DATA") == ["f.txt"]
    assert split_name("\\a\\b", leading_separator_ok=True) == ["a", "b"]
    # ".." inside the share is resolved on the name (as Samba and Windows do)
    assert split_name("a\\b\\..") == ["a"]
    assert split_name("a\\..") == []
    assert split_name("a\\b\\..\\..\\c") == ["c"]
    assert split_name("a\\missing\\..\\f") == ["a", "f"]
    assert split_name("\\a\\..\\b", leading_separator_ok=True) == ["b"]


@pytest.mark.parametrize("name, status", [
    ("\\abs", STATUS_INVALID_PARAMETER),
    ("..", STATUS_OBJECT_PATH_SYNTAX_BAD),
    ("..\\x", STATUS_OBJECT_PATH_SYNTAX_BAD),
    ("a\\..\\..", STATUS_OBJECT_PATH_SYNTAX_BAD),
    ("a\\..\\..\\etc", STATUS_OBJECT_PATH_SYNTAX_BAD),
    ("a\\b\\..\\..\\..\\etc", STATUS_OBJECT_PATH_SYNTAX_BAD),
    (".", STATUS_OBJECT_NAME_INVALID),
    ("a\\.\\b", STATUS_OBJECT_NAME_INVALID),
    ("a\\\\b", STATUS_OBJECT_NAME_INVALID),
    ("a/b", STATUS_OBJECT_NAME_INVALID),
    ("a*b", STATUS_OBJECT_NAME_INVALID),
    ("a?", STATUS_OBJECT_NAME_INVALID),
    ("a<b", STATUS_OBJECT_NAME_INVALID),
    ("a|b", STATUS_OBJECT_NAME_INVALID),
    ("bell\x07", STATUS_OBJECT_NAME_INVALID),
    ("f.txt:stream:$DATA", STATUS_OBJECT_NAME_INVALID),
    ("x" * 256, STATUS_OBJECT_NAME_INVALID),
])
def test_split_name_rejects(name, status):
    assert status_of(split_name, name) == status


def test_dotdot_cannot_escape(store, share, root):
    (root.parent / "secret").write_text("top secret")
    (root / "d").mkdir()
    assert status_of(create, store, share, "..\\secret", disposition=OPEN) == STATUS_OBJECT_PATH_SYNTAX_BAD
    assert status_of(create, store, share, "d\\..\\..\\secret", disposition=OPEN) == STATUS_OBJECT_PATH_SYNTAX_BAD
    assert status_of(create, store, share, "d\\..\\..\\new", disposition=CreateDisposition.FILE_CREATE) \
        == STATUS_OBJECT_PATH_SYNTAX_BAD
    assert sorted(os.listdir(root.parent)) == ["secret", "share"]


def test_dotdot_inside_the_share_opens_the_parent(store, share, root):
    (root / "d" / "sub").mkdir(parents=True)
    (root / "d" / "f").write_bytes(b"in d")
    r = create(store, share, "d\\sub\\..", disposition=OPEN, options=FILE_DIRECTORY_FILE)
    assert r.open.path == "d" and r.open.is_directory
    r2 = create(store, share, "d\\sub\\..\\f", disposition=OPEN)
    assert store.read(r2.open, 0, 10) == b"in d"
    r3 = create(store, share, "d\\..", disposition=OPEN, options=FILE_DIRECTORY_FILE)
    assert r3.open.path == ""  # the share root
    r4 = create(store, share, "d\\sub\\..\\new", disposition=CreateDisposition.FILE_CREATE)
    assert (root / "d" / "new").exists() and not (root / "d" / "sub" / "new").exists()
    for x in (r, r2, r3, r4):
        store.close(x.open)


def test_absolute_symlink_out_is_refused(store, share, root):
    secret = root.parent / "secret"
    secret.write_text("top secret")
    os.symlink(str(secret), root / "link")
    assert status_of(create, store, share, "link", disposition=OPEN) == STATUS_ACCESS_DENIED
    assert secret.read_text() == "top secret"


def test_relative_symlink_out_is_refused(store, share, root):
    (root.parent / "secret").write_text("x")
    (root / "d").mkdir()
    os.symlink("../../secret", root / "d" / "up")
    assert status_of(create, store, share, "d\\up", disposition=OPEN) == STATUS_ACCESS_DENIED


def test_symlinked_directory_out_is_refused_as_intermediate(store, share, root):
    outside = root.parent / "outside"
    outside.mkdir()
    (outside / "f").write_text("x")
    os.symlink(str(outside), root / "out")
    assert status_of(create, store, share, "out\\f", disposition=OPEN) == STATUS_ACCESS_DENIED
    # and creating through it must not leave a file outside
    assert status_of(create, store, share, "out\\new", disposition=CreateDisposition.FILE_CREATE) \
        == STATUS_ACCESS_DENIED
    assert sorted(os.listdir(outside)) == ["f"]


def test_symlink_to_root_parent_via_dotdot_refused(store, share, root):
    os.symlink("..", root / "parent")
    assert status_of(create, store, share, "parent", disposition=OPEN) == STATUS_ACCESS_DENIED


def test_symlink_inside_share_is_followed(store, share, root):
    (root / "real").mkdir()
    (root / "real" / "f.txt").write_bytes(b"inside")
    os.symlink("real", root / "alias")
    os.symlink(str(root / "real" / "f.txt"), root / "abs-alias")
    r = create(store, share, "alias\\f.txt", disposition=OPEN)
    assert store.read(r.open, 0, 100) == b"inside"
    assert r.open.path == "real\\f.txt"
    r2 = create(store, share, "abs-alias", disposition=OPEN)
    assert store.read(r2.open, 0, 100) == b"inside"


def test_symlink_loop_is_bounded(store, share, root):
    os.symlink("b", root / "a")
    os.symlink("a", root / "b")
    assert status_of(create, store, share, "a", disposition=OPEN) == STATUS_ACCESS_DENIED


def test_dangling_symlink_is_not_found(store, share, root):
    os.symlink("nowhere", root / "dangling")
    assert status_of(create, store, share, "dangling", disposition=OPEN) == STATUS_OBJECT_NAME_NOT_FOUND


def test_missing_intermediate_is_path_not_found(store, share, root):
    (root / "file").write_text("x")
    assert status_of(create, store, share, "nodir\\f", disposition=OPEN) == STATUS_OBJECT_PATH_NOT_FOUND
    assert status_of(create, store, share, "file\\f", disposition=OPEN) == STATUS_OBJECT_PATH_NOT_FOUND


def test_case_insensitive_lookup_preserves_disk_name(store, share, root):
    (root / "Dir").mkdir()
    (root / "Dir" / "ReadMe.TXT").write_bytes(b"case")
    r = create(store, share, "dir\\README.txt", disposition=OPEN)
    assert store.read(r.open, 0, 10) == b"case"
    assert r.open.path == "Dir\\ReadMe.TXT"
    # a new name is created as spelled
    r2 = create(store, share, "DIR\\New.Txt", disposition=CreateDisposition.FILE_CREATE)
    assert r2.open.path == "Dir\\New.Txt"
    assert (root / "Dir" / "New.Txt").exists()


def test_case_sensitive_share(store, root):
    (root / "Name").write_text("x")
    cs = Share("cs", str(root), case_sensitive=True)
    assert status_of(create, store, cs, "name", disposition=OPEN) == STATUS_OBJECT_NAME_NOT_FOUND
    create(store, cs, "Name", disposition=OPEN)


def test_resolve_root_and_directory(share, root):
    (root / "d").mkdir()
    with resolve(share, []) as r:
        assert r.rel == [] and r.exists and r.name is None
    with resolve(share, ["d"]) as r:
        assert r.rel == ["d"] and r.exists


def test_open_share_root_directory(store, share):
    r = create(store, share, "", access=0x80, disposition=OPEN, options=FILE_DIRECTORY_FILE)
    assert r.open.is_directory and r.open.path == ""
