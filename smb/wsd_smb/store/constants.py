"""Constants of the object store: access masks (MS-SMB2 2.2.13.1, MS-DTYP 2.4.3),
share access, create dispositions/options/actions (MS-SMB2 2.2.13, 2.2.14),
file attributes (MS-FSCC 2.6), information classes (MS-FSCC 2.4, 2.5) and
lock flags (MS-SMB2 2.2.26.1)."""
from __future__ import annotations

import enum

# ---------------------------------------------------------------- access mask
FILE_READ_DATA = 0x00000001  # == FILE_LIST_DIRECTORY
FILE_LIST_DIRECTORY = 0x00000001
FILE_WRITE_DATA = 0x00000002  # == FILE_ADD_FILE
FILE_ADD_FILE = 0x00000002
FILE_APPEND_DATA = 0x00000004  # == FILE_ADD_SUBDIRECTORY
FILE_ADD_SUBDIRECTORY = 0x00000004
FILE_READ_EA = 0x00000008
FILE_WRITE_EA = 0x00000010
FILE_EXECUTE = 0x00000020  # == FILE_TRAVERSE
FILE_TRAVERSE = 0x00000020
FILE_DELETE_CHILD = 0x00000040
FILE_READ_ATTRIBUTES = 0x00000080
FILE_WRITE_ATTRIBUTES = 0x00000100
DELETE = 0x00010000
READ_CONTROL = 0x00020000
WRITE_DAC = 0x00040000
WRITE_OWNER = 0x00080000
SYNCHRONIZE = 0x00100000
ACCESS_SYSTEM_SECURITY = 0x01000000
MAXIMUM_ALLOWED = 0x02000000
GENERIC_ALL = 0x10000000
GENERIC_EXECUTE = 0x20000000
GENERIC_WRITE = 0x40000000
GENERIC_READ = 0x80000000

STANDARD_RIGHTS_REQUIRED = DELETE | READ_CONTROL | WRITE_DAC | WRITE_OWNER
#: MS-SMB2 2.2.13.1.1 / winnt.h generic mapping for files and directories
FILE_ALL_ACCESS = STANDARD_RIGHTS_REQUIRED | SYNCHRONIZE | 0x1FF  # 0x001F01FF
FILE_GENERIC_READ = READ_CONTROL | FILE_READ_DATA | FILE_READ_ATTRIBUTES | FILE_READ_EA | SYNCHRONIZE
FILE_GENERIC_WRITE = (
    READ_CONTROL | FILE_WRITE_DATA | FILE_WRITE_ATTRIBUTES | FILE_WRITE_EA | FILE_APPEND_DATA | SYNCHRONIZE
)
FILE_GENERIC_EXECUTE = READ_CONTROL | FILE_READ_ATTRIBUTES | FILE_EXECUTE | SYNCHRONIZE

#: Every bit a client may put into DesiredAccess (MS-SMB2 3.3.5.9: others -> INVALID_PARAMETER)
VALID_ACCESS_BITS = 0x001F01FF | ACCESS_SYSTEM_SECURITY | MAXIMUM_ALLOWED | 0xF0000000

#: Access that modifies the object (denied on read-only shares)
WRITE_ACCESS_BITS = (
    FILE_WRITE_DATA | FILE_APPEND_DATA | FILE_WRITE_EA | FILE_DELETE_CHILD | FILE_WRITE_ATTRIBUTES
    | DELETE | WRITE_DAC | WRITE_OWNER
)
#: Access bits that take part in share-mode checks (MS-FSA 2.1.5.1.2.1)
DATA_ACCESS_BITS = FILE_READ_DATA | FILE_WRITE_DATA | FILE_APPEND_DATA | FILE_EXECUTE | DELETE


def map_generic(access: int) -> int:
    """Map GENERIC_* bits to file rights (MS-DTYP 2.4.3, file generic mapping)."""
    out = access & ~(GENERIC_ALL | GENERIC_EXECUTE | GENERIC_WRITE | GENERIC_READ)
    if access & GENERIC_READ:
        out |= FILE_GENERIC_READ
    if access & GENERIC_WRITE:
        out |= FILE_GENERIC_WRITE
    if access & GENERIC_EXECUTE:
        out |= FILE_GENERIC_EXECUTE
    if access & GENERIC_ALL:
        out |= FILE_ALL_ACCESS
    return out


# ---------------------------------------------------------------- share access
FILE_SHARE_READ = 0x00000001
FILE_SHARE_WRITE = 0x00000002
FILE_SHARE_DELETE = 0x00000004
FILE_SHARE_VALID = 0x00000007


# ---------------------------------------------------------------- dispositions
class CreateDisposition(enum.IntEnum):
    """MS-SMB2 2.2.13 CreateDisposition."""

    FILE_SUPERSEDE = 0
    FILE_OPEN = 1
    FILE_CREATE = 2
    FILE_OPEN_IF = 3
    FILE_OVERWRITE = 4
    FILE_OVERWRITE_IF = 5


class CreateAction(enum.IntEnum):
    """MS-SMB2 2.2.14 CreateAction."""

    FILE_SUPERSEDED = 0
    FILE_OPENED = 1
    FILE_CREATED = 2
    FILE_OVERWRITTEN = 3


# ---------------------------------------------------------------- create options
FILE_DIRECTORY_FILE = 0x00000001
FILE_WRITE_THROUGH = 0x00000002
FILE_SEQUENTIAL_ONLY = 0x00000004
FILE_NO_INTERMEDIATE_BUFFERING = 0x00000008
FILE_SYNCHRONOUS_IO_ALERT = 0x00000010
FILE_SYNCHRONOUS_IO_NONALERT = 0x00000020
FILE_NON_DIRECTORY_FILE = 0x00000040
FILE_COMPLETE_IF_OPLOCKED = 0x00000100
FILE_NO_EA_KNOWLEDGE = 0x00000200
FILE_OPEN_REMOTE_INSTANCE = 0x00000400
FILE_RANDOM_ACCESS = 0x00000800
FILE_DELETE_ON_CLOSE = 0x00001000
FILE_OPEN_BY_FILE_ID = 0x00002000
FILE_OPEN_FOR_BACKUP_INTENT = 0x00004000
FILE_NO_COMPRESSION = 0x00008000
FILE_OPEN_REQUIRING_OPLOCK = 0x00010000
FILE_DISALLOW_EXCLUSIVE = 0x00020000
FILE_RESERVE_OPFILTER = 0x00100000
FILE_OPEN_REPARSE_POINT = 0x00200000
FILE_OPEN_NO_RECALL = 0x00400000
FILE_OPEN_FOR_FREE_SPACE_QUERY = 0x00800000
#: bits MS-SMB2 3.3.5.9 says the server MUST reject (STATUS_NOT_SUPPORTED)
CREATE_OPTIONS_NOT_SUPPORTED = FILE_OPEN_BY_FILE_ID  # handled by the caller per 3.3.5.9
#: bits reported by FileModeInformation (MS-FSCC 2.4.26)
MODE_INFORMATION_BITS = (
    FILE_WRITE_THROUGH | FILE_SEQUENTIAL_ONLY | FILE_NO_INTERMEDIATE_BUFFERING
    | FILE_SYNCHRONOUS_IO_ALERT | FILE_SYNCHRONOUS_IO_NONALERT | FILE_DELETE_ON_CLOSE
)

# ---------------------------------------------------------------- attributes (MS-FSCC 2.6)
FILE_ATTRIBUTE_READONLY = 0x00000001
FILE_ATTRIBUTE_HIDDEN = 0x00000002
FILE_ATTRIBUTE_SYSTEM = 0x00000004
FILE_ATTRIBUTE_DIRECTORY = 0x00000010
FILE_ATTRIBUTE_ARCHIVE = 0x00000020
FILE_ATTRIBUTE_NORMAL = 0x00000080
FILE_ATTRIBUTE_TEMPORARY = 0x00000100
FILE_ATTRIBUTE_SPARSE_FILE = 0x00000200
FILE_ATTRIBUTE_REPARSE_POINT = 0x00000400
FILE_ATTRIBUTE_COMPRESSED = 0x00000800
FILE_ATTRIBUTE_OFFLINE = 0x00001000
FILE_ATTRIBUTE_NOT_CONTENT_INDEXED = 0x00002000
FILE_ATTRIBUTE_ENCRYPTED = 0x00004000
FILE_ATTRIBUTE_INTEGRITY_STREAM = 0x00008000
FILE_ATTRIBUTE_NO_SCRUB_DATA = 0x00020000
#: attributes a client may set and that we keep (in an xattr; READONLY in the mode bits)
SETTABLE_ATTRIBUTES = (
    FILE_ATTRIBUTE_READONLY | FILE_ATTRIBUTE_HIDDEN | FILE_ATTRIBUTE_SYSTEM | FILE_ATTRIBUTE_ARCHIVE
    | FILE_ATTRIBUTE_TEMPORARY | FILE_ATTRIBUTE_OFFLINE | FILE_ATTRIBUTE_NOT_CONTENT_INDEXED
)


# ---------------------------------------------------------------- info types (MS-SMB2 2.2.37)
SMB2_0_INFO_FILE = 0x01
SMB2_0_INFO_FILESYSTEM = 0x02
SMB2_0_INFO_SECURITY = 0x03
SMB2_0_INFO_QUOTA = 0x04


class FileInformationClass(enum.IntEnum):
    """MS-FSCC 2.4 file information classes (the ones we know by number)."""

    FileDirectoryInformation = 1
    FileFullDirectoryInformation = 2
    FileBothDirectoryInformation = 3
    FileBasicInformation = 4
    FileStandardInformation = 5
    FileInternalInformation = 6
    FileEaInformation = 7
    FileAccessInformation = 8
    FileNameInformation = 9
    FileRenameInformation = 10
    FileLinkInformation = 11
    FileNamesInformation = 12
    FileDispositionInformation = 13
    FilePositionInformation = 14
    FileFullEaInformation = 15
    FileModeInformation = 16
    FileAlignmentInformation = 17
    FileAllInformation = 18
    FileAllocationInformation = 19
    FileEndOfFileInformation = 20
    FileAlternateNameInformation = 21
    FileStreamInformation = 22
    FilePipeInformation = 23
    FilePipeLocalInformation = 24
    FilePipeRemoteInformation = 25
    FileCompressionInformation = 28
    FileNetworkOpenInformation = 34
    FileAttributeTagInformation = 35
    FileIdBothDirectoryInformation = 37
    FileIdFullDirectoryInformation = 38
    FileValidDataLengthInformation = 39
    FileShortNameInformation = 40
    FileSfioReserveInformation = 44
    FileNormalizedNameInformation = 48
    FileIdInformation = 59
    FileId64ExtdDirectoryInformation = 60
    FileDispositionInformationEx = 64
    FileRenameInformationEx = 65


class FsInformationClass(enum.IntEnum):
    """MS-FSCC 2.5 file system information classes."""

    FileFsVolumeInformation = 1
    FileFsLabelInformation = 2
    FileFsSizeInformation = 3
    FileFsDeviceInformation = 4
    FileFsAttributeInformation = 5
    FileFsControlInformation = 6
    FileFsFullSizeInformation = 7
    FileFsObjectIdInformation = 8
    FileFsDriverPathInformation = 9
    FileFsVolumeFlagsInformation = 10
    FileFsSectorSizeInformation = 11


# FileDispositionInformationEx flags (MS-FSCC 2.4.12)
FILE_DISPOSITION_DO_NOT_DELETE = 0x00000000
FILE_DISPOSITION_DELETE = 0x00000001
FILE_DISPOSITION_POSIX_SEMANTICS = 0x00000002
FILE_DISPOSITION_FORCE_IMAGE_SECTION_CHECK = 0x00000004
FILE_DISPOSITION_ON_CLOSE = 0x00000008
FILE_DISPOSITION_IGNORE_READONLY_ATTRIBUTE = 0x00000010

# security information (MS-DTYP 2.4.7 / MS-SMB2 2.2.37 AdditionalInformation)
OWNER_SECURITY_INFORMATION = 0x00000001
GROUP_SECURITY_INFORMATION = 0x00000002
DACL_SECURITY_INFORMATION = 0x00000004
SACL_SECURITY_INFORMATION = 0x00000008

# QUERY_DIRECTORY flags (MS-SMB2 2.2.33)
SMB2_RESTART_SCANS = 0x01
SMB2_RETURN_SINGLE_ENTRY = 0x02
SMB2_INDEX_SPECIFIED = 0x04
SMB2_REOPEN = 0x10

# LOCK element flags (MS-SMB2 2.2.26.1)
SMB2_LOCKFLAG_SHARED_LOCK = 0x00000001
SMB2_LOCKFLAG_EXCLUSIVE_LOCK = 0x00000002
SMB2_LOCKFLAG_UNLOCK = 0x00000004
SMB2_LOCKFLAG_FAIL_IMMEDIATELY = 0x00000010

# FS attribute flags (MS-FSCC 2.5.1)
FILE_CASE_SENSITIVE_SEARCH = 0x00000001
FILE_CASE_PRESERVED_NAMES = 0x00000002
FILE_UNICODE_ON_DISK = 0x00000004
FILE_PERSISTENT_ACLS = 0x00000008
FILE_SUPPORTS_SPARSE_FILES = 0x00000040
FILE_SUPPORTS_OBJECT_IDS = 0x00010000
FILE_READ_ONLY_VOLUME = 0x00080000

# device (MS-FSCC 2.5.10)
FILE_DEVICE_DISK = 0x00000007
FILE_READ_ONLY_DEVICE = 0x00000002
FILE_DEVICE_IS_MOUNTED = 0x00000020
