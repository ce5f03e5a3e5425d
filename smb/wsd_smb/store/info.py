"""QUERY_INFO / SET_INFO / QUERY_DIRECTORY payloads built from the store
(MS-SMB2 3.3.5.18, 3.3.5.20, 3.3.5.21; structures of MS-FSCC 2.4 / 2.5 in fscc.py).

Output-buffer rule (MS-SMB2 3.3.5.20.1/.2): a buffer too small for the fixed part of a
class gives STATUS_INFO_LENGTH_MISMATCH; a variable-length answer that does not fit is
truncated and carries STATUS_BUFFER_OVERFLOW.  For security descriptors (3.3.5.20.3) a
short buffer gives STATUS_BUFFER_TOO_SMALL with the needed size (:class:`NeedBuffer`).
"""
from __future__ import annotations

import hashlib
import os
import zlib
from typing import Any, Callable

from . import fscc
from .attrs import FileStat, fd_path
from .constants import (
    FILE_CASE_PRESERVED_NAMES,
    FILE_CASE_SENSITIVE_SEARCH,
    FILE_DEVICE_DISK,
    FILE_DEVICE_IS_MOUNTED,
    FILE_PERSISTENT_ACLS,
    FILE_READ_ATTRIBUTES,
    FILE_READ_ONLY_DEVICE,
    FILE_READ_ONLY_VOLUME,
    FILE_SUPPORTS_SPARSE_FILES,
    FILE_UNICODE_ON_DISK,
    SMB2_0_INFO_FILE,
    SMB2_0_INFO_FILESYSTEM,
    SMB2_0_INFO_QUOTA,
    SMB2_0_INFO_SECURITY,
    FileInformationClass as FIC,
    FsInformationClass as FSC,
)
from .errors import (
    STATUS_ACCESS_DENIED,
    STATUS_BUFFER_OVERFLOW,
    STATUS_INFO_LENGTH_MISMATCH,
    STATUS_INVALID_INFO_CLASS,
    STATUS_INVALID_PARAMETER,
    STATUS_NOT_SUPPORTED,
    STATUS_OBJECT_NAME_NOT_FOUND,
    STATUS_SUCCESS,
    fail,
)
from .objectstore import ObjectStore, Open
from .eas import parse_full as parse_full_eas
from .eas import parse_get as parse_get_eas
from .shortname import short_name

STATUS_BUFFER_TOO_SMALL = 0xC0000023


class NeedBuffer(Exception):
    """QUERY_INFO SECURITY with a short buffer: STATUS_BUFFER_TOO_SMALL, and the error
    response's ErrorData is the 4-byte size needed (MS-SMB2 3.3.5.20.3)."""

    status = STATUS_BUFFER_TOO_SMALL

    def __init__(self, needed: int) -> None:
        super().__init__(needed)
        self.needed = needed


def _n(s: str) -> bytes:
    return s.encode("utf-16-le", "surrogatepass")


#: Smallest OutputBufferLength Windows accepts for the variable-length classes: the
#: fixed part plus room for the first characters of the name (smbtorture
#: getinfo.qfs_buffercheck / qfile_buffercheck record these); below it the answer is
#: STATUS_INFO_LENGTH_MISMATCH, above it a truncated answer with STATUS_BUFFER_OVERFLOW.
MIN_FILE_OUTPUT = {9: 8, 18: 104, 21: 8, 22: 32, 48: 8}
MIN_FS_OUTPUT = {1: 24, 5: 16}


def fit(data: bytes, fixed: int, max_len: int) -> tuple[bytes, int]:
    """Apply the output-buffer rule: (payload, status)."""
    fixed = min(fixed, len(data))
    if max_len < fixed:
        raise fail(STATUS_INFO_LENGTH_MISMATCH, f"OutputBufferLength {max_len} < {fixed}")
    if len(data) > max_len:
        return data[:max_len], STATUS_BUFFER_OVERFLOW
    return data, STATUS_SUCCESS


# ============================================================== file information
def _basic(s: FileStat) -> fscc.FileBasicInformation:
    return fscc.FileBasicInformation(creation_time=s.creation_time, last_access_time=s.last_access_time,
                                     last_write_time=s.last_write_time, change_time=s.change_time,
                                     file_attributes=s.attributes)


def _standard(s: FileStat, delete_pending: bool) -> fscc.FileStandardInformation:
    return fscc.FileStandardInformation(allocation_size=s.allocation_size, end_of_file=s.end_of_file,
                                        number_of_links=s.number_of_links, delete_pending=int(delete_pending),
                                        directory=int(s.is_directory))


def file_name_of(o: Open) -> str:
    """The name FileNameInformation reports: '\\' + share-relative path."""
    return "\\" + o.path


def query_file_info(store: ObjectStore, o: Open, info_class: int, max_len: int,
                    input_buffer: bytes = b"", flags: int = 0, dialect: int = 0x0311) -> tuple[bytes, int]:
    """SMB2_0_INFO_FILE (MS-SMB2 3.3.5.20.1)."""
    try:
        klass = FIC(info_class)
    except ValueError:
        raise fail(STATUS_INVALID_INFO_CLASS, f"file info class {info_class}") from None
    if klass == FIC.FileFullEaInformation:
        # Flags: SL_RESTART_SCAN 1, SL_RETURN_SINGLE_ENTRY 2, SL_INDEX_SPECIFIED 4 (MS-SMB2 2.2.37)
        names = parse_get_eas(input_buffer) if input_buffer else []
        data = store.query_eas(o, names, bool(flags & 1), bool(flags & 2), None, max_len)
        return data, STATUS_SUCCESS
    needs_attr = {FIC.FileBasicInformation, FIC.FileAllInformation, FIC.FileNetworkOpenInformation,
                  FIC.FileAttributeTagInformation}
    if klass in needs_attr and not o.granted_access & FILE_READ_ATTRIBUTES:
        raise fail(STATUS_ACCESS_DENIED, "no FILE_READ_ATTRIBUTES")
    s = store.stat(o)
    dp = o.file.delete_pending
    if klass == FIC.FileBasicInformation:
        st: Any = _basic(s)
    elif klass == FIC.FileStandardInformation:
        st = _standard(s, dp)
    elif klass == FIC.FileInternalInformation:
        st = fscc.FileInternalInformation(index_number=s.index_number)
    elif klass == FIC.FileEaInformation:
        st = fscc.FileEaInformation(ea_size=s.ea_size)
    elif klass == FIC.FileAccessInformation:
        st = fscc.FileAccessInformation(access_flags=o.granted_access)
    elif klass == FIC.FilePositionInformation:
        st = fscc.FilePositionInformation(current_byte_offset=o.current_offset)
    elif klass == FIC.FileModeInformation:
        st = fscc.FileModeInformation(mode=o.mode)
    elif klass == FIC.FileAlignmentInformation:
        st = fscc.FileAlignmentInformation(alignment_requirement=0)
    elif klass == FIC.FileNameInformation:
        st = fscc.FileNameInformation(file_name=_n(file_name_of(o)))
    elif klass == FIC.FileNormalizedNameInformation:
        # MS-FSCC 2.4.30: offered from SMB 3.1.1 on (Windows 10 1803+); the share-relative
        # path with the on-disk case, no leading separator (empty for the root)
        if dialect < 0x0311:
            raise fail(STATUS_NOT_SUPPORTED, "FileNormalizedNameInformation before SMB 3.1.1")
        st = fscc.FileNameInformation(file_name=_n(o.path))
    elif klass == FIC.FileAllInformation:
        st = fscc.FileAllInformation(
            basic=_basic(s), standard=_standard(s, dp),
            internal=fscc.FileInternalInformation(index_number=s.index_number),
            ea=fscc.FileEaInformation(ea_size=s.ea_size),
            access=fscc.FileAccessInformation(access_flags=o.granted_access),
            position=fscc.FilePositionInformation(current_byte_offset=o.current_offset),
            mode=fscc.FileModeInformation(mode=o.mode),
            alignment=fscc.FileAlignmentInformation(alignment_requirement=0),
            name=fscc.FileNameInformation(file_name=_n(file_name_of(o))),
        )
    elif klass == FIC.FileNetworkOpenInformation:
        st = fscc.FileNetworkOpenInformation(
            creation_time=s.creation_time, last_access_time=s.last_access_time,
            last_write_time=s.last_write_time, change_time=s.change_time,
            allocation_size=s.allocation_size, end_of_file=s.end_of_file, file_attributes=s.attributes)
    elif klass == FIC.FileAttributeTagInformation:
        st = fscc.FileAttributeTagInformation(file_attributes=s.attributes, reparse_tag=0)
    elif klass == FIC.FileStreamInformation:
        entries = []
        base = store.stat_base(o)
        if not base.is_directory:
            entries.append(fscc.FileStreamInformation(stream_size=base.end_of_file,
                                                      stream_allocation_size=base.allocation_size,
                                                      stream_name=_n("::$DATA")))
        for name, size in store.list_streams(o):
            entries.append(fscc.FileStreamInformation(stream_size=size, stream_allocation_size=(size + 4095) & ~4095,
                                                      stream_name=_n(f":{name}:$DATA")))
        if not entries:
            return fit(b"", 0, max_len)
        data, _ = fscc.pack_entry_list(entries)
        return fit(data, MIN_FILE_OUTPUT[klass], max_len)
    elif klass == FIC.FileCompressionInformation:
        st = fscc.FileCompressionInformation(compressed_file_size=s.end_of_file, compression_format=0,
                                             compression_unit_shift=0, chunk_shift=0, cluster_shift=0)
    elif klass == FIC.FileIdInformation:
        serial = volume_serial(o.share.name)
        return fit(serial.to_bytes(8, "little") + s.index_number.to_bytes(16, "little"), 24, max_len)
    elif klass == FIC.FileAlternateNameInformation:
        if not o.file.rel:
            raise fail(STATUS_OBJECT_NAME_NOT_FOUND, "the share root has no short name")
        st = fscc.FileNameInformation(file_name=_n(short_name(o.file.rel[-1])))
    else:
        raise fail(STATUS_NOT_SUPPORTED, f"query {klass.name}")
    data = st.pack(0)
    fixed = MIN_FILE_OUTPUT.get(klass, st.FIXED_SIZE)
    return fit(data, fixed, max_len)


# ============================================================== file system information
def volume_serial(share_name: str) -> int:
    return zlib.crc32(share_name.upper().encode()) & 0xFFFFFFFF


def query_fs_info(store: ObjectStore, o: Open, info_class: int, max_len: int) -> tuple[bytes, int]:
    """SMB2_0_INFO_FILESYSTEM (MS-SMB2 3.3.5.20.2)."""
    try:
        klass = FSC(info_class)
    except ValueError:
        raise fail(STATUS_INVALID_INFO_CLASS, f"fs info class {info_class}") from None
    share = o.share
    if klass == FSC.FileFsVolumeInformation:
        root = os.stat(share.path)
        from .filetime import to_filetime

        st: Any = fscc.FileFsVolumeInformation(
            volume_creation_time=to_filetime(min(root.st_mtime_ns, root.st_ctime_ns)),
            volume_serial_number=volume_serial(share.name), supports_objects=0,
            volume_label=_n(share.name))
    elif klass in (FSC.FileFsSizeInformation, FSC.FileFsFullSizeInformation):
        with o.io_lock:
            vfs = os.statvfs(fd_path(o.fd)) if not o.closed else os.statvfs(share.path)
        bps = 512
        spu = max(1, vfs.f_frsize // bps)
        if klass == FSC.FileFsSizeInformation:
            st = fscc.FileFsSizeInformation(total_allocation_units=vfs.f_blocks,
                                            available_allocation_units=vfs.f_bavail,
                                            sectors_per_allocation_unit=spu, bytes_per_sector=bps)
        else:
            st = fscc.FileFsFullSizeInformation(total_allocation_units=vfs.f_blocks,
                                                caller_available_allocation_units=vfs.f_bavail,
                                                actual_available_allocation_units=vfs.f_bfree,
                                                sectors_per_allocation_unit=spu, bytes_per_sector=bps)
    elif klass == FSC.FileFsAttributeInformation:
        flags = (FILE_CASE_PRESERVED_NAMES | FILE_UNICODE_ON_DISK | FILE_PERSISTENT_ACLS
                 | FILE_SUPPORTS_SPARSE_FILES)  # store/sparse.py
        if share.case_sensitive:
            flags |= FILE_CASE_SENSITIVE_SEARCH
        if share.read_only:
            flags |= FILE_READ_ONLY_VOLUME
        st = fscc.FileFsAttributeInformation(file_system_attributes=flags, maximum_component_name_length=255,
                                             file_system_name=_n("NTFS"))
    elif klass == FSC.FileFsDeviceInformation:
        ch = FILE_DEVICE_IS_MOUNTED | (FILE_READ_ONLY_DEVICE if share.read_only else 0)
        st = fscc.FileFsDeviceInformation(device_type=FILE_DEVICE_DISK, characteristics=ch)
    elif klass == FSC.FileFsSectorSizeInformation:
        st = fscc.FileFsSectorSizeInformation(
            logical_bytes_per_sector=512, physical_bytes_per_sector_for_atomicity=512,
            physical_bytes_per_sector_for_performance=512,
            file_system_effective_physical_bytes_per_sector_for_atomicity=512,
            flags=fscc.SSINFO_FLAGS_ALIGNED_DEVICE | fscc.SSINFO_FLAGS_PARTITION_ALIGNED_ON_DEVICE,
            byte_offset_for_sector_alignment=0, byte_offset_for_partition_alignment=0)
    elif klass == FSC.FileFsControlInformation:
        # no quotas: thresholds and limits "none" (-1), quotas off
        st = fscc.FileFsControlInformation(free_space_start_filtering=0, free_space_threshold=0,
                                           free_space_stop_filtering=0,
                                           default_quota_threshold=0xFFFFFFFFFFFFFFFF,
                                           default_quota_limit=0xFFFFFFFFFFFFFFFF, file_system_control_flags=0)
    elif klass == FSC.FileFsObjectIdInformation:
        st = fscc.FileFsObjectIdInformation(object_id=hashlib.md5(share.path.encode()).digest(),
                                            extended_info=b"\0" * 48)
    else:
        raise fail(STATUS_NOT_SUPPORTED, f"query {klass.name}")
    return fit(st.pack(0), MIN_FS_OUTPUT.get(klass, st.FIXED_SIZE), max_len)


def query_security(store: ObjectStore, o: Open, additional_information: int, max_len: int) -> bytes:
    """SMB2_0_INFO_SECURITY (MS-SMB2 3.3.5.20.3)."""
    sd = store.get_security(o, additional_information)
    if len(sd) > max_len:
        raise NeedBuffer(len(sd))
    return sd


def query_info(store: ObjectStore, o: Open, info_type: int, info_class: int, additional_information: int,
               max_len: int, input_buffer: bytes = b"", flags: int = 0,
               dialect: int = 0x0311) -> tuple[bytes, int]:
    if info_type == SMB2_0_INFO_FILE:
        return query_file_info(store, o, info_class, max_len, input_buffer, flags, dialect)
    if info_type == SMB2_0_INFO_FILESYSTEM:
        return query_fs_info(store, o, info_class, max_len)
    if info_type == SMB2_0_INFO_SECURITY:
        return query_security(store, o, additional_information, max_len), STATUS_SUCCESS
    if info_type == SMB2_0_INFO_QUOTA:
        raise fail(STATUS_NOT_SUPPORTED, "quota")
    raise fail(STATUS_INVALID_PARAMETER, f"InfoType {info_type}")


# ============================================================== SET_INFO
def _parse(cls: type, buf: bytes) -> Any:
    if len(buf) < cls.FIXED_SIZE:
        raise fail(STATUS_INFO_LENGTH_MISMATCH, f"{cls.__name__}: {len(buf)} bytes")
    return cls.unpack(buf, 0)


def set_file_info(store: ObjectStore, o: Open, info_class: int, buf: bytes) -> None:
    """SMB2_0_INFO_FILE set (MS-SMB2 3.3.5.21.1, MS-FSA 2.1.5.14)."""
    try:
        klass = FIC(info_class)
    except ValueError:
        raise fail(STATUS_INVALID_INFO_CLASS, f"file info class {info_class}") from None
    if klass == FIC.FileBasicInformation:
        b = _parse(fscc.FileBasicInformation, buf)
        store.set_basic(o, b.creation_time, b.last_access_time, b.last_write_time, b.change_time,
                        b.file_attributes)
    elif klass == FIC.FileEndOfFileInformation:
        store.set_end_of_file(o, _parse(fscc.FileEndOfFileInformation, buf).end_of_file)
    elif klass == FIC.FileAllocationInformation:
        store.set_allocation(o, _parse(fscc.FileAllocationInformation, buf).allocation_size)
    elif klass == FIC.FilePositionInformation:
        store.set_position(o, _parse(fscc.FilePositionInformation, buf).current_byte_offset)
    elif klass == FIC.FileModeInformation:
        store.set_mode(o, _parse(fscc.FileModeInformation, buf).mode)
    elif klass == FIC.FileDispositionInformation:
        store.set_disposition(o, bool(_parse(fscc.FileDispositionInformation, buf).delete_pending))
    elif klass == FIC.FileDispositionInformationEx:
        store.set_disposition_ex(o, _parse(fscc.FileDispositionInformationEx, buf).flags)
    elif klass == FIC.FileRenameInformation:
        r = _parse(fscc.FileRenameInformation, buf)
        if r.root_directory != 0:
            raise fail(STATUS_INVALID_PARAMETER, "RootDirectory must be 0 in SMB2")
        if len(r.file_name) % 2 or not r.file_name:
            raise fail(STATUS_INVALID_PARAMETER, "bad FileName")
        try:
            name = bytes(r.file_name).decode("utf-16-le")
        except UnicodeDecodeError:
            raise fail(STATUS_INVALID_PARAMETER, "FileName not UTF-16") from None
        store.rename(o, name, bool(r.replace_if_exists))
    elif klass == FIC.FileValidDataLengthInformation:
        v = _parse(fscc.FileValidDataLengthInformation, buf)
        s = store.stat(o)
        if v.valid_data_length > s.end_of_file:
            raise fail(STATUS_INVALID_PARAMETER, "ValidDataLength beyond EndOfFile")
    elif klass == FIC.FileFullEaInformation:
        store.set_eas(o, parse_full_eas(buf))
    else:
        raise fail(STATUS_NOT_SUPPORTED, f"set {klass.name}")


# ============================================================== QUERY_DIRECTORY entries
_DIR_CLASSES: dict[int, type] = {
    FIC.FileDirectoryInformation: fscc.FileDirectoryInformation,
    FIC.FileFullDirectoryInformation: fscc.FileFullDirectoryInformation,
    FIC.FileBothDirectoryInformation: fscc.FileBothDirectoryInformation,
    FIC.FileIdBothDirectoryInformation: fscc.FileIdBothDirectoryInformation,
    FIC.FileIdFullDirectoryInformation: fscc.FileIdFullDirectoryInformation,
    FIC.FileNamesInformation: fscc.FileNamesInformation,
}


def dir_entry_builder(info_class: int) -> tuple[Callable[[str, FileStat], Any], int]:
    """(build(name, stat) -> entry, fixed size) for a QUERY_DIRECTORY class."""
    cls = _DIR_CLASSES.get(info_class)
    if cls is None:
        raise fail(STATUS_INVALID_INFO_CLASS, f"directory info class {info_class}")
    names = set(cls._attrs)

    def build(name: str, s: FileStat) -> Any:
        kw: dict[str, Any] = {"file_name": _n(name), "file_index": 0}
        if "creation_time" in names:
            kw.update(creation_time=s.creation_time, last_access_time=s.last_access_time,
                      last_write_time=s.last_write_time, change_time=s.change_time,
                      end_of_file=s.end_of_file, allocation_size=s.allocation_size,
                      file_attributes=s.attributes)
        if "ea_size" in names:
            kw["ea_size"] = s.ea_size
        if "file_id" in names:
            kw["file_id"] = s.index_number
        if "short_name" in names and name not in (".", ".."):
            sn = _n(short_name(name))
            kw["short_name"] = sn + b"\0" * (24 - len(sn))
            kw["short_name_length"] = len(sn)
        return cls(**kw)

    return build, cls.FIXED_SIZE


def query_directory(store: ObjectStore, o: Open, info_class: int, flags: int, pattern: str,
                    max_len: int, token: Any = None) -> bytes:
    """*token*: the session's identity, for access-based enumeration (Share.hide_unreadable)."""
    build, fixed = dir_entry_builder(info_class)
    entries = store.query_directory(o, flags, pattern, max_len, build, fixed, token)
    data, n = fscc.pack_entry_list(entries, max_len)
    assert n == len(entries)
    return data


__all__ = [
    "NeedBuffer", "fit", "query_info", "query_file_info", "query_fs_info", "query_security",
    "set_file_info", "query_directory", "dir_entry_builder", "volume_serial",
]
