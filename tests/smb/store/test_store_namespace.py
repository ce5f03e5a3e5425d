"""The object store's namespace policy (store/namepolicy.py) on real directories: veto_files
at CREATE / rename / QUERY_DIRECTORY / directory delete, hide_files attributes, and the
access-based enumeration check against stored descriptors (MS-SMB2 3.3.5.18)."""
from __future__ import annotations

import os

import pytest
from conftest import RW, SHARE_ALL, create, status_of

from wsd_smb.store import Share
from wsd_smb.store.constants import (
    DELETE,
    FILE_ATTRIBUTE_HIDDEN,
    FILE_DIRECTORY_FILE,
    FILE_LIST_DIRECTORY,
    FILE_READ_ATTRIBUTES,
    READ_CONTROL,
    WRITE_DAC,
    CreateDisposition,
)
from wsd_smb.store.info import query_directory
from wsd_smb.store.namepolicy import NamePatterns
from wsd_smb.store.security import Descriptor, Sid, access_allowed_ace, acl, token_for

NAME_NOT_FOUND, PATH_NOT_FOUND, NOT_EMPTY = 0xC0000034, 0xC000003A, 0xC0000101
FILE_DIRECTORY_INFORMATION = 1


@pytest.fixture
def ns_share(root):
    s = Share("ns", str(root))
    s.hide_files = NamePatterns.compile(["*.tmp"])
    s.veto_files = NamePatterns.compile(["*.vet", "priv"])
    return s


def _names(store, share, dirname="", token=None):
    o = create(store, share, dirname, access=FILE_LIST_DIRECTORY | FILE_READ_ATTRIBUTES,
               disposition=CreateDisposition.FILE_OPEN, options=FILE_DIRECTORY_FILE).open
    try:
        data = query_directory(store, o, FILE_DIRECTORY_INFORMATION, 0, "*", 65536, token)
    finally:
        store.close(o)
    out, pos = {}, 0
    while True:  # MS-FSCC 2.4.10 FILE_DIRECTORY_INFORMATION: NextEntryOffset .. FileAttributes @56, name @64
        nxt = int.from_bytes(data[pos:pos + 4], "little")
        attrs = int.from_bytes(data[pos + 56:pos + 60], "little")
        ln = int.from_bytes(data[pos + 60:pos + 64], "little")
        out[data[pos + 64:pos + 64 + ln].decode("utf-16-le")] = attrs
        if not nxt:
            return out
        pos += nxt


def test_veto_at_create_rename_and_listing(store, ns_share, root):
    (root / "a.vet").write_bytes(b"a")
    (root / "priv").mkdir()
    (root / "priv" / "x").write_bytes(b"x")
    (root / "ok.txt").write_bytes(b"o")
    assert status_of(create, store, ns_share, "a.vet") == NAME_NOT_FOUND
    assert status_of(create, store, ns_share, "A.Vet", disposition=CreateDisposition.FILE_OPEN) == NAME_NOT_FOUND
    assert status_of(create, store, ns_share, "priv\\x") == PATH_NOT_FOUND
    assert status_of(create, store, ns_share, "new.vet", disposition=CreateDisposition.FILE_CREATE) == NAME_NOT_FOUND
    assert not (root / "new.vet").exists()
    assert set(_names(store, ns_share)) == {".", "..", "ok.txt"}
    o = create(store, ns_share, "ok.txt").open
    try:
        assert status_of(store.rename, o, "b.vet", False) == NAME_NOT_FOUND
        assert status_of(store.rename, o, "priv\\y", False) == PATH_NOT_FOUND
    finally:
        store.close(o)
    assert (root / "ok.txt").exists()
    # the same names on a share without patterns
    plain = Share("plain", str(root))
    store.close(create(store, plain, "a.vet").open)
    assert {"a.vet", "priv"} <= set(_names(store, plain))


def test_veto_by_on_disk_name(store, ns_share, root):
    """A symlink whose target is a vetoed name does not open it either."""
    (root / "real.vet").write_bytes(b"r")
    (root / "alias").symlink_to("real.vet")
    assert status_of(create, store, ns_share, "alias") == NAME_NOT_FOUND


def test_hide_files_attribute(store, ns_share, root):
    (root / "t.tmp").write_bytes(b"t")
    (root / "t.txt").write_bytes(b"t")
    names = _names(store, ns_share)
    assert names["t.tmp"] & FILE_ATTRIBUTE_HIDDEN and not names["t.txt"] & FILE_ATTRIBUTE_HIDDEN
    o = create(store, ns_share, "t.tmp").open
    try:
        assert store.stat(o).attributes & FILE_ATTRIBUTE_HIDDEN
    finally:
        store.close(o)


def test_delete_veto_files(store, ns_share, root):
    d = root / "d"
    d.mkdir()
    (d / "z.vet").write_bytes(b"z")
    o = create(store, ns_share, "d", access=RW, options=FILE_DIRECTORY_FILE).open
    try:
        assert status_of(store.set_disposition, o, True) == NOT_EMPTY  # delete_veto_files is off
    finally:
        store.close(o)
    ns_share.delete_veto_files = True
    o = create(store, ns_share, "d", access=RW | DELETE, options=FILE_DIRECTORY_FILE).open
    store.set_disposition(o, True)
    store.close(o)
    assert not d.exists()


def test_access_based_enumeration_store(store, root):
    s = Share("abe", str(root))
    s.hide_unreadable = True
    alice = token_for("WSD", "alice")
    bob = token_for("WSD", "bob")
    (root / "open.txt").write_bytes(b"o")
    o = create(store, s, "alice.txt", access=READ_CONTROL | WRITE_DAC, share_access=SHARE_ALL,
               disposition=CreateDisposition.FILE_CREATE).open
    try:
        # only alice may read it
        sd = Descriptor(0x8004, None, None, None, acl([access_allowed_ace(_sid(alice), 0x1F01FF)]))
        store._write_sd(o.fd, sd)
    finally:
        store.close(o)
    assert set(_names(store, s, token=alice)) == {".", "..", "alice.txt", "open.txt"}
    assert set(_names(store, s, token=bob)) == {".", "..", "open.txt"}
    assert set(_names(store, s, token=None)) == {".", "..", "alice.txt", "open.txt"}  # no identity: no check
    s.hide_unreadable = False
    assert "alice.txt" in _names(store, s, token=bob)
    assert os.path.exists(root / "alice.txt")


def _sid(token):
    b = token.user
    return Sid(int.from_bytes(b[2:8], "big"), *(int.from_bytes(b[8 + 4 * i:12 + 4 * i], "little")
                                                   for i in range(b[1])))
