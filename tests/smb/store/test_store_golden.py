"""Byte-exact golden tests of the MS-FSCC / MS-DTYP encoders (hex written from the
specifications' layouts), plus QUERY_INFO / SET_INFO through the store."""
from __future__ import annotations

import os

import pytest
from conftest import create, status_of

from wsd_smb.store import fscc
from wsd_smb.store.constants import (
    DACL_SECURITY_INFORMATION,
    FILE_DIRECTORY_FILE,
    FILE_READ_ATTRIBUTES,
    GROUP_SECURITY_INFORMATION,
    OWNER_SECURITY_INFORMATION,
    SMB2_0_INFO_FILE,
    SMB2_0_INFO_FILESYSTEM,
    SMB2_0_INFO_SECURITY,
    CreateDisposition as D,
    FileInformationClass as FIC,
    FsInformationClass as FSC,
)
from wsd_smb.store.errors import (
    STATUS_ACCESS_DENIED,
    STATUS_BUFFER_OVERFLOW,
    STATUS_INFO_LENGTH_MISMATCH,
    STATUS_INVALID_INFO_CLASS,
    STATUS_SUCCESS,
)
from wsd_smb.store.filetime import from_filetime, to_filetime
from wsd_smb.store.info import NeedBuffer, query_info, set_file_info
from wsd_smb.store.security import security_descriptor


def h(s: str) -> bytes:
    return bytes.fromhex("".join(s.split()))


def test_filetime():
    assert to_filetime(0) == 116444736000000000          # 1970-01-01 in FILETIME
    assert to_filetime(946684800 * 10**9) == 125911584000000000  # 2000-01-01
    assert from_filetime(125911584000000000) == 946684800 * 10**9
    assert to_filetime(-20_000_000_000 * 10**9) == 0     # before 1601: clamped
    assert from_filetime(to_filetime(1_234_567_891_234_567_800)) == 1_234_567_891_234_567_800


def test_basic_information():
    b = fscc.FileBasicInformation(creation_time=0x0102030405060708, last_access_time=0x1112131415161718,
                                  last_write_time=0x2122232425262728, change_time=0x3132333435363738,
                                  file_attributes=0x20)
    assert b.pack(0) == h("0807060504030201 1817161514131211 2827262524232221 3837363534333231"
                          "20000000 00000000")
    assert fscc.FileBasicInformation.unpack(b.pack(0), 0) == b


def test_object_id_buffer():
    """MS-FSCC 2.1.3 FILE_OBJECTID_BUFFER: four 16-byte GUIDs, ObjectId first."""
    b = fscc.FileObjectIdBuffer(object_id=bytes(range(16)), birth_volume_id=bytes(range(16, 32)),
                                birth_object_id=bytes(range(16)))
    assert b.pack(0) == bytes(range(32)) + bytes(range(16)) + b"\0" * 16
    assert fscc.FileObjectIdBuffer.FIXED_SIZE == 64
    assert fscc.FileObjectIdBuffer.unpack(b.pack(0), 0) == b


def test_standard_information():
    s = fscc.FileStandardInformation(allocation_size=4096, end_of_file=5, number_of_links=1,
                                     delete_pending=1, directory=0)
    assert s.pack(0) == h("0010000000000000 0500000000000000 01000000 01 00 0000")


def test_network_open_information():
    n = fscc.FileNetworkOpenInformation(creation_time=1, last_access_time=2, last_write_time=3,
                                        change_time=4, allocation_size=0x1000, end_of_file=0x10,
                                        file_attributes=0x80)
    assert n.pack(0) == h("0100000000000000 0200000000000000 0300000000000000 0400000000000000"
                          "0010000000000000 1000000000000000 80000000 00000000")


def test_small_fixed_classes():
    assert fscc.FileInternalInformation(index_number=0x1234).pack(0) == h("3412000000000000")
    assert fscc.FileAttributeTagInformation(file_attributes=0x10, reparse_tag=0).pack(0) == h("10000000 00000000")
    assert fscc.FileCompressionInformation(compressed_file_size=7, compression_format=0, compression_unit_shift=0,
                                           chunk_shift=0, cluster_shift=0).pack(0) == h("0700000000000000 0000 00 00 00 000000")
    assert fscc.FileFsDeviceInformation(device_type=7, characteristics=0x20).pack(0) == h("07000000 20000000")
    assert fscc.FileFsSizeInformation(total_allocation_units=100, available_allocation_units=50,
                                      sectors_per_allocation_unit=8, bytes_per_sector=512).pack(0) \
        == h("6400000000000000 3200000000000000 08000000 00020000")


def test_name_and_stream_information():
    assert fscc.FileNameInformation(file_name="\\a".encode("utf-16-le")).pack(0) == h("04000000 5c00 6100")
    s = fscc.FileStreamInformation(stream_size=5, stream_allocation_size=4096,
                                   stream_name="::$DATA".encode("utf-16-le"))
    assert s.pack(0) == h("00000000 0e000000 0500000000000000 0010000000000000"
                          "3a003a002400440041005400 4100")


def test_fs_attribute_and_volume():
    a = fscc.FileFsAttributeInformation(file_system_attributes=0x0E, maximum_component_name_length=255,
                                        file_system_name="NTFS".encode("utf-16-le"))
    assert a.pack(0) == h("0e000000 ff000000 08000000 4e00540046005300")
    v = fscc.FileFsVolumeInformation(volume_creation_time=2, volume_serial_number=0xAABBCCDD,
                                     supports_objects=0, volume_label="D".encode("utf-16-le"))
    assert v.pack(0) == h("0200000000000000 ddccbbaa 02000000 00 00 4400")


def test_directory_entries_and_chaining():
    e = fscc.FileDirectoryInformation(file_index=0, creation_time=1, last_access_time=2, last_write_time=3,
                                      change_time=4, end_of_file=5, allocation_size=6, file_attributes=0x20,
                                      file_name="a".encode("utf-16-le"))
    assert e.pack(0) == h("00000000 00000000 0100000000000000 0200000000000000 0300000000000000"
                          "0400000000000000 0500000000000000 0600000000000000 20000000 02000000 6100")
    a = fscc.FileNamesInformation(file_index=0, file_name="a".encode("utf-16-le"))
    bc = fscc.FileNamesInformation(file_index=0, file_name="bc".encode("utf-16-le"))
    data, n = fscc.pack_entry_list([a, bc])
    # "a" is 14 bytes, padded to 16 (8-byte alignment); the last entry is not padded
    assert n == 2 and data == h("10000000 00000000 02000000 6100 0000"
                                "00000000 00000000 04000000 6200 6300")
    data, n = fscc.pack_entry_list([a, bc], limit=20)
    assert n == 1 and data == h("00000000 00000000 02000000 6100")


def test_both_directory_sizes():
    assert fscc.FileBothDirectoryInformation.FIXED_SIZE == 94
    assert fscc.FileIdBothDirectoryInformation.FIXED_SIZE == 104
    assert fscc.FileIdFullDirectoryInformation.FIXED_SIZE == 80
    assert fscc.FileFullDirectoryInformation.FIXED_SIZE == 68
    e = fscc.FileIdBothDirectoryInformation(file_id=0x99, file_name="x".encode("utf-16-le"))
    b = e.pack(0)
    assert len(b) == 106 and b[60:64] == h("02000000") and b[96:104] == h("9900000000000000") and b[104:] == b"x\0"


def test_rename_information_parse():
    raw = h("01 00000000000000 0000000000000000 06000000 6e00 6500 7700")
    r = fscc.FileRenameInformation.unpack(raw, 0)
    assert r.replace_if_exists == 1 and r.root_directory == 0 and bytes(r.file_name).decode("utf-16-le") == "new"


def test_security_descriptor_golden():
    sd = security_descriptor(0, 0, OWNER_SECURITY_INFORMATION | GROUP_SECURITY_INFORMATION
                             | DACL_SECURITY_INFORMATION)
    assert sd == h(
        "01 00 0480 14000000 24000000 00000000 34000000"     # header: self-relative, DACL present
        "01 02 000000000016 01000000 00000000"               # owner S-1-22-1-0
        "01 02 000000000016 02000000 00000000"               # group S-1-22-2-0
        "02 00 1c00 0100 0000"                               # ACL rev 2, size 28, one ACE
        "00 00 1400 ff011f00 01 01 000000000001 00000000"    # ACCESS_ALLOWED Everyone FILE_ALL_ACCESS
    )
    only_dacl = security_descriptor(1000, 1000, DACL_SECURITY_INFORMATION)
    assert only_dacl[:20] == h("01 00 0480 00000000 00000000 00000000 14000000")
    owner = security_descriptor(1000, 50, OWNER_SECURITY_INFORMATION)
    assert owner == h("01 00 0080 14000000 00000000 00000000 00000000 01 02 000000000016 01000000 e8030000")


# ---------------------------------------------------------------- through the store
def test_query_file_info_values(store, share, root):
    (root / "d").mkdir()
    o = create(store, share, "d\\f.bin").open
    store.write(o, 0, b"x" * 100)
    st = os.stat(root / "d" / "f.bin")
    data, status = query_info(store, o, SMB2_0_INFO_FILE, FIC.FileAllInformation, 0, 4096)
    assert status == STATUS_SUCCESS and len(data) == 100 + len("\\d\\f.bin") * 2
    basic = fscc.FileBasicInformation.unpack(data, 0)
    assert basic.last_write_time == to_filetime(st.st_mtime_ns) and basic.file_attributes == 0x20
    std = fscc.FileStandardInformation.unpack(data, 40)
    assert std.end_of_file == 100 and std.directory == 0 and std.delete_pending == 0
    assert fscc.FileInternalInformation.unpack(data, 64).index_number == st.st_ino
    assert data[100:].decode("utf-16-le") == "\\d\\f.bin"
    data, _ = query_info(store, o, SMB2_0_INFO_FILE, FIC.FileStreamInformation, 0, 4096)
    s = fscc.FileStreamInformation.unpack(data, 0)
    assert s.stream_size == 100 and bytes(s.stream_name).decode("utf-16-le") == "::$DATA"
    store.set_disposition(o, True)
    data, _ = query_info(store, o, SMB2_0_INFO_FILE, FIC.FileStandardInformation, 0, 4096)
    assert fscc.FileStandardInformation.unpack(data, 0).delete_pending == 1


def test_query_output_buffer_rules(store, share):
    o = create(store, share, "name").open
    # Windows wants room for the fixed part plus 4 bytes of the name (104) before it
    # answers a truncated FileAllInformation with STATUS_BUFFER_OVERFLOW
    data, status = query_info(store, o, SMB2_0_INFO_FILE, FIC.FileAllInformation, 0, 104)
    assert status == STATUS_BUFFER_OVERFLOW and len(data) == 104
    assert status_of(query_info, store, o, SMB2_0_INFO_FILE, FIC.FileAllInformation, 0, 103) \
        == STATUS_INFO_LENGTH_MISMATCH
    assert status_of(query_info, store, o, SMB2_0_INFO_FILE, FIC.FileBasicInformation, 0, 39) \
        == STATUS_INFO_LENGTH_MISMATCH
    assert status_of(query_info, store, o, SMB2_0_INFO_FILE, 200, 0, 4096) == STATUS_INVALID_INFO_CLASS
    with pytest.raises(NeedBuffer) as ei:
        query_info(store, o, SMB2_0_INFO_SECURITY, 0, 7, 20)
    assert ei.value.needed == 80


def test_query_needs_read_attributes(store, share, root):
    (root / "f").write_text("x")
    o = create(store, share, "f", access=0x1, disposition=D.FILE_OPEN).open  # FILE_READ_DATA only
    assert status_of(query_info, store, o, SMB2_0_INFO_FILE, FIC.FileBasicInformation, 0, 4096) \
        == STATUS_ACCESS_DENIED
    query_info(store, o, SMB2_0_INFO_FILE, FIC.FileStandardInformation, 0, 4096)
    assert status_of(query_info, store, o, SMB2_0_INFO_SECURITY, 0, 7, 4096) == STATUS_ACCESS_DENIED


def test_query_fs_info(store, share):
    d = create(store, share, "", access=FILE_READ_ATTRIBUTES, disposition=D.FILE_OPEN,
               options=FILE_DIRECTORY_FILE).open
    vfs = os.statvfs(share.path)
    data, _ = query_info(store, d, SMB2_0_INFO_FILESYSTEM, FSC.FileFsFullSizeInformation, 0, 4096)
    f = fscc.FileFsFullSizeInformation.unpack(data, 0)
    assert f.total_allocation_units == vfs.f_blocks and f.bytes_per_sector * f.sectors_per_allocation_unit \
        == vfs.f_frsize
    data, _ = query_info(store, d, SMB2_0_INFO_FILESYSTEM, FSC.FileFsVolumeInformation, 0, 4096)
    assert bytes(fscc.FileFsVolumeInformation.unpack(data, 0).volume_label).decode("utf-16-le") == "data"
    for klass, size in [(FSC.FileFsSizeInformation, 24), (FSC.FileFsDeviceInformation, 8),
                        (FSC.FileFsSectorSizeInformation, 28), (FSC.FileFsObjectIdInformation, 64)]:
        data, _ = query_info(store, d, SMB2_0_INFO_FILESYSTEM, klass, 0, 4096)
        assert len(data) == size
    data, _ = query_info(store, d, SMB2_0_INFO_FILESYSTEM, FSC.FileFsAttributeInformation, 0, 4096)
    assert data[12:].decode("utf-16-le") == "NTFS"


def test_set_file_info_dispatch(store, share, root):
    o = create(store, share, "f").open
    store.write(o, 0, b"abcdef")
    set_file_info(store, o, FIC.FileEndOfFileInformation, h("0300000000000000"))
    assert (root / "f").read_bytes() == b"abc"
    set_file_info(store, o, FIC.FileRenameInformation,
                  h("00 00000000000000 0000000000000000 04000000") + "g2".encode("utf-16-le"))
    assert os.listdir(root) == ["g2"]
    set_file_info(store, o, FIC.FilePositionInformation, h("0a00000000000000"))
    assert o.current_offset == 10
    set_file_info(store, o, FIC.FileDispositionInformation, h("01"))
    assert status_of(set_file_info, store, o, FIC.FileEndOfFileInformation, h("0300")) \
        == STATUS_INFO_LENGTH_MISMATCH
    store.close(o)
    assert os.listdir(root) == []


# ---------------------------------------------------------------- stored descriptors
def test_security_descriptor_set_merge_query(store, share):
    from wsd_smb.store.security import Descriptor, EVERYONE, access_allowed_ace, acl, unix_user_sid

    o = create(store, share, "f", access=0x001F01FF).open
    default = store.get_security(o, 7)
    assert default == security_descriptor(os.getuid(), os.getgid(), 7)
    # a new DACL: Everyone read, S-1-22-1-1000 full
    dacl = acl([access_allowed_ace(EVERYONE, 0x120089), access_allowed_ace(unix_user_sid(1000), 0x1F01FF)])
    new = h("01 00 0480 00000000 00000000 00000000 14000000") + dacl
    set_security = store.set_security
    set_security(o, DACL_SECURITY_INFORMATION, new)
    got = Descriptor.parse(store.get_security(o, 7))
    assert got.dacl == dacl
    assert got.owner == Descriptor.parse(default).owner  # untouched part kept
    # a NULL DACL (present, no ACL) round-trips
    set_security(o, DACL_SECURITY_INFORMATION, h("01 00 0480 00000000 00000000 00000000 00000000"))
    got = Descriptor.parse(store.get_security(o, DACL_SECURITY_INFORMATION))
    assert got.dacl is None and got.control & 0x0004
    # malformed input and missing rights
    assert status_of(set_security, o, DACL_SECURITY_INFORMATION, h("01 00 0480 00000000")) == 0xC0000079
    assert status_of(set_security, o, DACL_SECURITY_INFORMATION,
                     h("01 00 0480 00000000 00000000 00000000 14000000 02 00 ff00 0100 0000")) == 0xC0000079
    r = create(store, share, "f", access=0x00020000, disposition=D.FILE_OPEN).open  # READ_CONTROL only
    assert status_of(set_security, r, DACL_SECURITY_INFORMATION, new) == STATUS_ACCESS_DENIED
    assert status_of(store.get_security, r, 8) == STATUS_ACCESS_DENIED  # SACL


def test_security_descriptor_on_create(store, share):
    from wsd_smb.store.security import Descriptor, EVERYONE, access_allowed_ace, acl

    dacl = acl([access_allowed_ace(EVERYONE, 0x120089)])
    sd = h("01 00 0480 00000000 00000000 00000000 14000000") + dacl
    o = store.create(share, "n", desired_access=0x001F01FF, share_access=7, create_disposition=D.FILE_CREATE,
                     security_descriptor=sd).open
    assert Descriptor.parse(store.get_security(o, DACL_SECURITY_INFORMATION)).dacl == dacl
