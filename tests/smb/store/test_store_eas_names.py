"""Extended attributes (MS-FSCC 2.4.15) kept in xattrs, and 8.3 short names."""
from __future__ import annotations

import os

import pytest
from conftest import create, status_of

from wsd_smb.store import fscc
from wsd_smb.store.constants import (
    FILE_DIRECTORY_FILE,
    FILE_READ_ATTRIBUTES,
    GENERIC_READ,
    SMB2_0_INFO_FILE,
    CreateDisposition as D,
    FileInformationClass as FIC,
)
from wsd_smb.store.eas import Ea, pack_full, parse_full, parse_get
from wsd_smb.store.errors import STATUS_ACCESS_DENIED, STATUS_OBJECT_NAME_NOT_FOUND
from wsd_smb.store.info import query_directory, query_info, set_file_info
from wsd_smb.store.shortname import is_8_3, short_name

STATUS_NO_EAS_ON_FILE = 0xC0000052
STATUS_INVALID_EA_NAME = 0x80000013


def h(s: str) -> bytes:
    return bytes.fromhex("".join(s.split()))


def test_full_ea_golden():
    data, n = pack_full([Ea("AB", b"xyz"), Ea("C", b"", 0x80)])
    # entry 1: 8 + "AB\0" + "xyz" = 14 -> next at 16; entry 2: 8 + "C\0" = 10
    assert n == 2 and data == h("10000000 00 02 0300 414200 78797a 0000"
                                "00000000 80 01 0000 4300")
    assert parse_full(data) == [Ea("AB", b"xyz"), Ea("C", b"", 0x80)]


def test_get_ea_golden():
    raw = h("08000000 02 414200") + h("00000000 01 4300")  # 8-byte first entry, aligned
    assert parse_get(raw) == ["AB", "C"]


def test_bad_ea_name_rejected():
    assert status_of(parse_full, h("00000000 00 02 0100 3a3a00 78")) == STATUS_INVALID_EA_NAME


def test_eas_on_create_query_set(store, share, root):
    o = create(store, share, "f", eas=[Ea("EAONE", b"VALUE1"), Ea("secondea", b"ValueTwo")]).open
    assert sorted(n for n in os.listxattr(root / "f") if n.startswith("user.wsd.ea.")) == \
        ["user.wsd.ea.EAONE", "user.wsd.ea.SECONDEA"]
    data, _ = query_info(store, o, SMB2_0_INFO_FILE, FIC.FileFullEaInformation, 0, 4096, b"", 1)
    assert parse_full(data) == [Ea("EAONE", b"VALUE1"), Ea("SECONDEA", b"ValueTwo")]
    size = len(data)
    data, _ = query_info(store, o, SMB2_0_INFO_FILE, FIC.FileEaInformation, 0, 4096)
    assert fscc.FileEaInformation.unpack(data, 0).ea_size == size
    # remove one by setting an empty value; select by name with FILE_GET_EA_INFORMATION
    set_file_info(store, o, FIC.FileFullEaInformation, pack_full([Ea("EAONE", b"")])[0])
    data, _ = query_info(store, o, SMB2_0_INFO_FILE, FIC.FileFullEaInformation, 0, 4096,
                         h("00000000 08") + b"SECONDEA\0", 0)
    assert parse_full(data) == [Ea("SECONDEA", b"ValueTwo")]
    set_file_info(store, o, FIC.FileFullEaInformation, pack_full([Ea("SECONDEA", b"")])[0])
    assert status_of(query_info, store, o, SMB2_0_INFO_FILE, FIC.FileFullEaInformation, 0, 4096, b"", 1) \
        == STATUS_NO_EAS_ON_FILE


def test_ea_access_checks(store, share, root):
    create(store, share, "f")
    o = create(store, share, "f", access=FILE_READ_ATTRIBUTES, disposition=D.FILE_OPEN).open
    assert status_of(query_info, store, o, SMB2_0_INFO_FILE, FIC.FileFullEaInformation, 0, 4096) \
        == STATUS_ACCESS_DENIED
    r = create(store, share, "f", access=GENERIC_READ, disposition=D.FILE_OPEN).open
    assert status_of(set_file_info, store, r, FIC.FileFullEaInformation, pack_full([Ea("A", b"1")])[0]) \
        == STATUS_ACCESS_DENIED


@pytest.mark.parametrize("name, ok", [("A.TXT", True), ("readme", True), ("ABCDEFGHI", False),
                                      ("a.b.c", False), ("x.abcd", False), (".hidden", False),
                                      ("with space", False), ("A~1.TXT", True)])
def test_is_8_3(name, ok):
    assert is_8_3(name) is ok


def test_short_names_and_lookup(store, share, root):
    (root / "A Long File Name.text").write_bytes(b"long")
    sn = short_name("A Long File Name.text")
    assert is_8_3(sn) and "~" in sn and sn.endswith(".TEX") and sn == short_name("A Long File Name.text")
    o = create(store, share, sn, disposition=D.FILE_OPEN).open   # open by its short name
    assert o.path == "A Long File Name.text"
    data, _ = query_info(store, o, SMB2_0_INFO_FILE, FIC.FileAlternateNameInformation, 0, 4096)
    assert bytes(fscc.FileNameInformation.unpack(data, 0).file_name).decode("utf-16-le") == sn
    d = create(store, share, "", access=1, disposition=D.FILE_OPEN, options=FILE_DIRECTORY_FILE).open
    assert status_of(query_info, store, d, SMB2_0_INFO_FILE, FIC.FileAlternateNameInformation, 0, 4096) \
        == STATUS_OBJECT_NAME_NOT_FOUND
    data = query_directory(store, d, FIC.FileBothDirectoryInformation, 0, "A Long*", 4096)
    e = fscc.FileBothDirectoryInformation.unpack(data, 0)
    assert bytes(e.short_name)[:e.short_name_length].decode("utf-16-le") == sn


def test_xattrs_read_through_an_fd_a_path_fd_and_a_path_agree(tmp_path):
    """DOS attributes and EAs of an open are read through its fd (fgetxattr); an O_PATH fd
    (which f*xattr refuses with EBADF) falls back to its /proc path; all three agree."""
    from wsd_smb.store.attrs import fd_path, read_dosinfo, write_dosinfo
    from wsd_smb.store.eas import read_eas, write_eas

    p = tmp_path / "f.txt"
    p.write_bytes(b"x")
    fd = os.open(p, os.O_RDONLY)
    pfd = os.open(p, os.O_PATH)
    try:
        if not write_dosinfo(fd_path(fd), 0x22, 132000000000000000):
            pytest.skip("no user xattrs on this file system")
        write_eas(fd_path(fd), [Ea("COLOR", b"blue", 0)])
        by_path = (read_dosinfo(str(p), False), read_eas(str(p), False))
        assert by_path[0] == (0x22, 132000000000000000)
        assert [(e.name, e.value) for e in by_path[1]] == [("COLOR", b"blue")]
        for target in (fd, pfd):
            assert (read_dosinfo(target), read_eas(target)) == by_path
    finally:
        os.close(fd)
        os.close(pfd)
