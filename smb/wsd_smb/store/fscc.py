"""MS-FSCC information structures: file (2.4), directory-enumeration (2.4) and file
system (2.5) information classes, declared with the shared structure mechanism
(``wsd_smb.wire.base``: fixed fields in wire order, little-endian, reserved fields
packed as zero and checked on receipt, a trailing name located by its length field).

Names are UTF-16LE; lengths are in bytes.  Every class cites its MS-FSCC section.
"""
from __future__ import annotations

import struct
from typing import Iterable

from ..wire.base import Buf, Bytes, F, Plain, U8, U16, U32, U64

I64 = "q"


def _name(s: str) -> bytes:
    return s.encode("utf-16-le", "surrogatepass")


# ====================================================================== FSCTL buffers
class FileObjectIdBuffer(Plain):
    """MS-FSCC 2.1.3 FILE_OBJECTID_BUFFER (64 bytes), type 1: the reply of
    FSCTL_CREATE_OR_GET_OBJECT_ID (2.3.2) and FSCTL_GET_OBJECT_ID (2.3.26)."""

    FIELDS = (
        F("ObjectId", Bytes(16), b"\0" * 16),
        F("BirthVolumeId", Bytes(16), b"\0" * 16),
        F("BirthObjectId", Bytes(16), b"\0" * 16),
        F("DomainId", Bytes(16), b"\0" * 16),  # "reserved; MUST be zero" (2.1.3.1)
    )


# ====================================================================== file information
class FileBasicInformation(Plain):
    """MS-FSCC 2.4.7 FILE_BASIC_INFORMATION (40 bytes)."""

    FIELDS = (
        F("CreationTime", U64),
        F("LastAccessTime", U64),
        F("LastWriteTime", U64),
        F("ChangeTime", U64),
        F("FileAttributes", U32),
        F("Reserved", U32, reserved=True, ignore=True),  # "MUST be ignored on receipt"
    )


class FileStandardInformation(Plain):
    """MS-FSCC 2.4.41 FILE_STANDARD_INFORMATION (24 bytes)."""

    FIELDS = (
        F("AllocationSize", U64),
        F("EndOfFile", U64),
        F("NumberOfLinks", U32),
        F("DeletePending", U8),
        F("Directory", U8),
        F("Reserved", U16, reserved=True, ignore=True),
    )


class FileInternalInformation(Plain):
    """MS-FSCC 2.4.22 FILE_INTERNAL_INFORMATION."""

    FIELDS = (F("IndexNumber", U64),)


class FileEaInformation(Plain):
    """MS-FSCC 2.4.13 FILE_EA_INFORMATION."""

    FIELDS = (F("EaSize", U32),)


class FileAccessInformation(Plain):
    """MS-FSCC 2.4.1 FILE_ACCESS_INFORMATION."""

    FIELDS = (F("AccessFlags", U32),)


class FilePositionInformation(Plain):
    """MS-FSCC 2.4.35 FILE_POSITION_INFORMATION (query and set)."""

    FIELDS = (F("CurrentByteOffset", U64),)


class FileModeInformation(Plain):
    """MS-FSCC 2.4.26 FILE_MODE_INFORMATION."""

    FIELDS = (F("Mode", U32),)


class FileAlignmentInformation(Plain):
    """MS-FSCC 2.4.3 FILE_ALIGNMENT_INFORMATION."""

    FIELDS = (F("AlignmentRequirement", U32),)


class FileNameInformation(Plain):
    """MS-FSCC 2.4.28 FILE_NAME_INFORMATION."""

    FIELDS = (F("FileNameLength", U32),)
    BUFFERS = (Buf("FileName", None, "FileNameLength"),)


class FileAllInformation:
    """MS-FSCC 2.4.2 FILE_ALL_INFORMATION: Basic, Standard, Internal, EA, Access,
    Position, Mode, Alignment, Name (100 fixed bytes + the name)."""

    PARTS = (
        "basic", "standard", "internal", "ea", "access", "position", "mode", "alignment", "name",
    )
    FIXED_SIZE = 100

    def __init__(self, *, basic: FileBasicInformation, standard: FileStandardInformation,
                 internal: FileInternalInformation, ea: FileEaInformation, access: FileAccessInformation,
                 position: FilePositionInformation, mode: FileModeInformation,
                 alignment: FileAlignmentInformation, name: FileNameInformation) -> None:
        self.basic, self.standard, self.internal, self.ea = basic, standard, internal, ea
        self.access, self.position, self.mode, self.alignment, self.name = access, position, mode, alignment, name

    def pack(self, base: int = 0) -> bytes:
        return b"".join(getattr(self, p).pack(0) for p in self.PARTS)


class FileNetworkOpenInformation(Plain):
    """MS-FSCC 2.4.29 FILE_NETWORK_OPEN_INFORMATION (56 bytes)."""

    FIELDS = (
        F("CreationTime", U64),
        F("LastAccessTime", U64),
        F("LastWriteTime", U64),
        F("ChangeTime", U64),
        F("AllocationSize", U64),
        F("EndOfFile", U64),
        F("FileAttributes", U32),
        F("Reserved", U32, reserved=True, ignore=True),
    )


class FileAttributeTagInformation(Plain):
    """MS-FSCC 2.4.6 FILE_ATTRIBUTE_TAG_INFORMATION."""

    FIELDS = (F("FileAttributes", U32), F("ReparseTag", U32))


class FileStreamInformation(Plain):
    """MS-FSCC 2.4.43 FILE_STREAM_INFORMATION entry (24 bytes + StreamName)."""

    FIELDS = (
        F("NextEntryOffset", U32),
        F("StreamNameLength", U32),
        F("StreamSize", U64),
        F("StreamAllocationSize", U64),
    )
    BUFFERS = (Buf("StreamName", None, "StreamNameLength"),)


class FileCompressionInformation(Plain):
    """MS-FSCC 2.4.9 FILE_COMPRESSION_INFORMATION (16 bytes)."""

    FIELDS = (
        F("CompressedFileSize", U64),
        F("CompressionFormat", U16),
        F("CompressionUnitShift", U8),
        F("ChunkShift", U8),
        F("ClusterShift", U8),
        F("Reserved", Bytes(3), b"\0\0\0", reserved=True, ignore=True),
    )


class FileEndOfFileInformation(Plain):
    """MS-FSCC 2.4.14 FILE_END_OF_FILE_INFORMATION (set)."""

    FIELDS = (F("EndOfFile", U64),)


class FileAllocationInformation(Plain):
    """MS-FSCC 2.4.4 FILE_ALLOCATION_INFORMATION (set)."""

    FIELDS = (F("AllocationSize", U64),)


class FileDispositionInformation(Plain):
    """MS-FSCC 2.4.11 FILE_DISPOSITION_INFORMATION (set)."""

    FIELDS = (F("DeletePending", U8),)


class FileDispositionInformationEx(Plain):
    """MS-FSCC 2.4.12 FILE_DISPOSITION_INFORMATION_EX (set)."""

    FIELDS = (F("Flags", U32),)


class FileRenameInformation(Plain):
    """MS-FSCC 2.4.37.2 FILE_RENAME_INFORMATION_TYPE_2 (the SMB2 form, set).

    RootDirectory MUST be 0 for SMB2 (a non-zero value is rejected by the caller)."""

    FIELDS = (
        F("ReplaceIfExists", U8),
        F("Reserved", Bytes(7), b"\0" * 7, reserved=True, ignore=True),
        F("RootDirectory", U64),
        F("FileNameLength", U32),
    )
    BUFFERS = (Buf("FileName", None, "FileNameLength"),)


class FileValidDataLengthInformation(Plain):
    """MS-FSCC 2.4.49 FILE_VALID_DATA_LENGTH_INFORMATION (set)."""

    FIELDS = (F("ValidDataLength", U64),)


# ============================================================ directory enumeration
class FileDirectoryInformation(Plain):
    """MS-FSCC 2.4.10 FILE_DIRECTORY_INFORMATION (64 bytes + FileName)."""

    FIELDS = (
        F("NextEntryOffset", U32),
        F("FileIndex", U32),
        F("CreationTime", U64),
        F("LastAccessTime", U64),
        F("LastWriteTime", U64),
        F("ChangeTime", U64),
        F("EndOfFile", U64),
        F("AllocationSize", U64),
        F("FileAttributes", U32),
        F("FileNameLength", U32),
    )
    BUFFERS = (Buf("FileName", None, "FileNameLength"),)


class FileFullDirectoryInformation(Plain):
    """MS-FSCC 2.4.17 FILE_FULL_DIR_INFORMATION (68 bytes + FileName)."""

    FIELDS = FileDirectoryInformation.FIELDS + (F("EaSize", U32),)
    BUFFERS = (Buf("FileName", None, "FileNameLength"),)


class FileIdFullDirectoryInformation(Plain):
    """MS-FSCC 2.4.20 FILE_ID_FULL_DIR_INFORMATION (80 bytes + FileName)."""

    FIELDS = FileDirectoryInformation.FIELDS + (
        F("EaSize", U32),
        F("Reserved", U32, reserved=True, ignore=True),
        F("FileId", U64),
    )
    BUFFERS = (Buf("FileName", None, "FileNameLength"),)


class FileBothDirectoryInformation(Plain):
    """MS-FSCC 2.4.8 FILE_BOTH_DIR_INFORMATION (94 bytes + FileName)."""

    FIELDS = FileDirectoryInformation.FIELDS + (
        F("EaSize", U32),
        F("ShortNameLength", U8),
        F("Reserved1", U8, reserved=True, ignore=True),
        F("ShortName", Bytes(24), b"\0" * 24),
    )
    BUFFERS = (Buf("FileName", None, "FileNameLength"),)


class FileIdBothDirectoryInformation(Plain):
    """MS-FSCC 2.4.18 FILE_ID_BOTH_DIR_INFORMATION (104 bytes + FileName)."""

    FIELDS = FileBothDirectoryInformation.FIELDS + (
        F("Reserved2", U16, reserved=True, ignore=True),
        F("FileId", U64),
    )
    BUFFERS = (Buf("FileName", None, "FileNameLength"),)


class FileNamesInformation(Plain):
    """MS-FSCC 2.4.33 FILE_NAMES_INFORMATION (12 bytes + FileName)."""

    FIELDS = (F("NextEntryOffset", U32), F("FileIndex", U32), F("FileNameLength", U32))
    BUFFERS = (Buf("FileName", None, "FileNameLength"),)


def pack_entry_list(entries: Iterable[Plain], limit: int | None = None) -> tuple[bytes, int]:
    """Chain entries with NextEntryOffset (each entry 8-byte aligned, MS-FSCC 2.4),
    taking as many as fit into *limit* bytes.  Returns (bytes, number packed).
    The last entry has NextEntryOffset 0 and no trailing padding."""
    out = bytearray()
    last = -1
    n = 0
    for e in entries:
        e.next_entry_offset = 0
        b = e.pack(0)
        start = len(out) + ((-len(out)) % 8)
        if limit is not None and start + len(b) > limit:
            break
        out += b"\0" * (start - len(out))
        if last >= 0:
            struct.pack_into("<I", out, last, start - last)
        out += b
        last = start
        n += 1
    return bytes(out), n


# ============================================================ file system information
class FileFsVolumeInformation(Plain):
    """MS-FSCC 2.5.9 FILE_FS_VOLUME_INFORMATION (18 bytes + VolumeLabel)."""

    FIELDS = (
        F("VolumeCreationTime", U64),
        F("VolumeSerialNumber", U32),
        F("VolumeLabelLength", U32),
        F("SupportsObjects", U8),
        F("Reserved", U8, reserved=True, ignore=True),
    )
    BUFFERS = (Buf("VolumeLabel", None, "VolumeLabelLength"),)


class FileFsSizeInformation(Plain):
    """MS-FSCC 2.5.8 FILE_FS_SIZE_INFORMATION (24 bytes)."""

    FIELDS = (
        F("TotalAllocationUnits", U64),
        F("AvailableAllocationUnits", U64),
        F("SectorsPerAllocationUnit", U32),
        F("BytesPerSector", U32),
    )


class FileFsControlInformation(Plain):
    """MS-FSCC 2.5.2 FILE_FS_CONTROL_INFORMATION (48 bytes; quota settings)."""

    FIELDS = (
        F("FreeSpaceStartFiltering", I64),
        F("FreeSpaceThreshold", I64),
        F("FreeSpaceStopFiltering", I64),
        F("DefaultQuotaThreshold", U64),
        F("DefaultQuotaLimit", U64),
        F("FileSystemControlFlags", U32),
        F("Padding", U32, reserved=True, ignore=True),
    )


class FileFsFullSizeInformation(Plain):
    """MS-FSCC 2.5.4 FILE_FS_FULL_SIZE_INFORMATION (32 bytes)."""

    FIELDS = (
        F("TotalAllocationUnits", U64),
        F("CallerAvailableAllocationUnits", U64),
        F("ActualAvailableAllocationUnits", U64),
        F("SectorsPerAllocationUnit", U32),
        F("BytesPerSector", U32),
    )


class FileFsAttributeInformation(Plain):
    """MS-FSCC 2.5.1 FILE_FS_ATTRIBUTE_INFORMATION (12 bytes + FileSystemName)."""

    FIELDS = (
        F("FileSystemAttributes", U32),
        F("MaximumComponentNameLength", U32),
        F("FileSystemNameLength", U32),
    )
    BUFFERS = (Buf("FileSystemName", None, "FileSystemNameLength"),)


class FileFsDeviceInformation(Plain):
    """MS-FSCC 2.5.10 FILE_FS_DEVICE_INFORMATION (8 bytes)."""

    FIELDS = (F("DeviceType", U32), F("Characteristics", U32))


class FileFsSectorSizeInformation(Plain):
    """MS-FSCC 2.5.7 FILE_FS_SECTOR_SIZE_INFORMATION (28 bytes)."""

    FIELDS = (
        F("LogicalBytesPerSector", U32),
        F("PhysicalBytesPerSectorForAtomicity", U32),
        F("PhysicalBytesPerSectorForPerformance", U32),
        F("FileSystemEffectivePhysicalBytesPerSectorForAtomicity", U32),
        F("Flags", U32),
        F("ByteOffsetForSectorAlignment", U32),
        F("ByteOffsetForPartitionAlignment", U32),
    )


class FileFsObjectIdInformation(Plain):
    """MS-FSCC 2.5.6 FILE_FS_OBJECTID_INFORMATION (64 bytes)."""

    FIELDS = (F("ObjectId", Bytes(16), b"\0" * 16), F("ExtendedInfo", Bytes(48), b"\0" * 48))


#: SSINFO flags (MS-FSCC 2.5.7)
SSINFO_FLAGS_ALIGNED_DEVICE = 0x00000001
SSINFO_FLAGS_PARTITION_ALIGNED_ON_DEVICE = 0x00000002
