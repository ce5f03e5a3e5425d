"""NTSTATUS values (MS-ERREF 2.3.1) as an exception registry.

Every code has an integer constant named as in MS-ERREF (``STATUS_ACCESS_DENIED``)
and an exception class (``StatusAccessDenied``) deriving from :class:`NtStatusError`.
``NtStatusError(code)`` looks the code up and returns an instance of the registered
subclass (or of NtStatusError itself for an unknown code), so handlers can either
``raise StatusAccessDenied()`` or ``raise NtStatusError(STATUS_ACCESS_DENIED)``.

Success and warning codes (STATUS_PENDING, STATUS_BUFFER_OVERFLOW, ...) are in the
table too; they are normally carried in a response, not raised.
"""
from __future__ import annotations

from typing import ClassVar

# name -> value.  Values from MS-ERREF 2.3.1.
_CODES: dict[str, int] = {
    "STATUS_SUCCESS": 0x00000000,
    "STATUS_PENDING": 0x00000103,
    "STATUS_NOTIFY_CLEANUP": 0x0000010B,
    "STATUS_NOTIFY_ENUM_DIR": 0x0000010C,
    "STATUS_BUFFER_OVERFLOW": 0x80000005,
    "STATUS_NO_MORE_FILES": 0x80000006,
    "STATUS_STOPPED_ON_SYMLINK": 0x8000002D,
    "STATUS_UNSUCCESSFUL": 0xC0000001,
    "STATUS_NOT_IMPLEMENTED": 0xC0000002,
    "STATUS_INVALID_INFO_CLASS": 0xC0000003,
    "STATUS_INFO_LENGTH_MISMATCH": 0xC0000004,
    "STATUS_INVALID_HANDLE": 0xC0000008,
    "STATUS_INVALID_PARAMETER": 0xC000000D,
    "STATUS_NO_SUCH_DEVICE": 0xC000000E,
    "STATUS_NO_SUCH_FILE": 0xC000000F,
    "STATUS_INVALID_DEVICE_REQUEST": 0xC0000010,
    "STATUS_END_OF_FILE": 0xC0000011,
    "STATUS_MORE_PROCESSING_REQUIRED": 0xC0000016,
    "STATUS_NO_MEMORY": 0xC0000017,
    "STATUS_ACCESS_DENIED": 0xC0000022,
    "STATUS_BUFFER_TOO_SMALL": 0xC0000023,
    "STATUS_OBJECT_TYPE_MISMATCH": 0xC0000024,
    "STATUS_OBJECT_NAME_INVALID": 0xC0000033,
    "STATUS_OBJECT_NAME_NOT_FOUND": 0xC0000034,
    "STATUS_OBJECT_NAME_COLLISION": 0xC0000035,
    "STATUS_OBJECT_PATH_INVALID": 0xC0000039,
    "STATUS_OBJECT_PATH_NOT_FOUND": 0xC000003A,
    "STATUS_OBJECT_PATH_SYNTAX_BAD": 0xC000003B,
    "STATUS_DATA_ERROR": 0xC000003E,
    "STATUS_SHARING_VIOLATION": 0xC0000043,
    "STATUS_EA_TOO_LARGE": 0xC0000050,
    "STATUS_NONEXISTENT_EA_ENTRY": 0xC0000051,
    "STATUS_NO_EAS_ON_FILE": 0xC0000052,
    "STATUS_DELETE_PENDING": 0xC0000056,
    "STATUS_PRIVILEGE_NOT_HELD": 0xC0000061,
    "STATUS_WRONG_PASSWORD": 0xC000006A,
    "STATUS_LOGON_FAILURE": 0xC000006D,
    "STATUS_ACCOUNT_RESTRICTION": 0xC000006E,
    "STATUS_PASSWORD_EXPIRED": 0xC0000071,
    "STATUS_ACCOUNT_DISABLED": 0xC0000072,
    "STATUS_NONE_MAPPED": 0xC0000073,
    "STATUS_RANGE_NOT_LOCKED": 0xC000007E,
    "STATUS_DISK_FULL": 0xC000007F,
    "STATUS_FILE_INVALID": 0xC0000098,
    "STATUS_INSUFFICIENT_RESOURCES": 0xC000009A,
    "STATUS_MEDIA_WRITE_PROTECTED": 0xC00000A2,
    "STATUS_FILE_IS_A_DIRECTORY": 0xC00000BA,
    "STATUS_NOT_SUPPORTED": 0xC00000BB,
    "STATUS_NETWORK_NAME_DELETED": 0xC00000C9,
    "STATUS_NETWORK_ACCESS_DENIED": 0xC00000CA,
    "STATUS_BAD_DEVICE_TYPE": 0xC00000CB,
    "STATUS_BAD_NETWORK_NAME": 0xC00000CC,
    "STATUS_REQUEST_NOT_ACCEPTED": 0xC00000D0,
    "STATUS_OPLOCK_NOT_GRANTED": 0xC00000E2,
    "STATUS_INTERNAL_ERROR": 0xC00000E5,
    "STATUS_DIRECTORY_NOT_EMPTY": 0xC0000101,
    "STATUS_NOT_A_DIRECTORY": 0xC0000103,
    "STATUS_CANCELLED": 0xC0000120,
    "STATUS_CANNOT_DELETE": 0xC0000121,
    "STATUS_FILE_CLOSED": 0xC0000128,
    "STATUS_PIPE_BROKEN": 0xC000014B,
    "STATUS_INVALID_LEVEL": 0xC0000148,
    "STATUS_FS_DRIVER_REQUIRED": 0xC000019C,
    "STATUS_USER_SESSION_DELETED": 0xC0000203,
    "STATUS_INSUFF_SERVER_RESOURCES": 0xC0000205,
    "STATUS_NOT_FOUND": 0xC0000225,
    "STATUS_DUPLICATE_OBJECTID": 0xC000022A,
    "STATUS_LOCK_NOT_GRANTED": 0xC0000055,
    "STATUS_FILE_LOCK_CONFLICT": 0xC0000054,
    "STATUS_NOT_SAME_DEVICE": 0xC00000D4,
    "STATUS_INVALID_DEVICE_STATE": 0xC0000184,
    "STATUS_NETWORK_SESSION_EXPIRED": 0xC000035C,
    "STATUS_SMB_BAD_CLUSTER_DIALECT": 0xC05D0001,
    "STATUS_INVALID_NETWORK_RESPONSE": 0xC00000C3,
    "STATUS_USER_MAPPED_FILE": 0xC0000243,
    "STATUS_BAD_IMPERSONATION_LEVEL": 0xC00000A5,
    "STATUS_IO_TIMEOUT": 0xC00000B5,
    "STATUS_FILE_NOT_AVAILABLE": 0xC0000467,
    "STATUS_HASH_NOT_PRESENT": 0xC000A100,
    "STATUS_NO_SUCH_USER": 0xC0000064,
    "STATUS_TOO_MANY_OPENED_FILES": 0xC000011F,
    "STATUS_OBJECTID_NOT_FOUND": 0xC00002F0,
    "STATUS_REPARSE_POINT_NOT_RESOLVED": 0xC0000280,
    "STATUS_NOT_A_REPARSE_POINT": 0xC0000275,
    "STATUS_EAS_NOT_SUPPORTED": 0xC000004F,
    "STATUS_TOO_MANY_LINKS": 0xC0000265,
    "STATUS_NAME_TOO_LONG": 0xC0000106,
    "STATUS_INVALID_OPLOCK_PROTOCOL": 0xC00000E3,
    "STATUS_INVALID_VIEW_SIZE": 0xC000001F,
    "STATUS_SECTION_TOO_BIG": 0xC0000040,
    "STATUS_UNEXPECTED_IO_ERROR": 0xC00000E9,
    "STATUS_IO_DEVICE_ERROR": 0xC0000185,
}

STATUS_NAMES: dict[int, str] = {}
for _name, _value in _CODES.items():
    globals()[_name] = _value
    STATUS_NAMES.setdefault(_value, _name)

STATUS_SUCCESS = 0x00000000
STATUS_PENDING = 0x00000103
STATUS_BUFFER_OVERFLOW = 0x80000005
STATUS_MORE_PROCESSING_REQUIRED = 0xC0000016
STATUS_INVALID_PARAMETER = 0xC000000D
STATUS_NOT_SUPPORTED = 0xC00000BB
STATUS_ACCESS_DENIED = 0xC0000022
STATUS_LOGON_FAILURE = 0xC000006D
STATUS_USER_SESSION_DELETED = 0xC0000203
STATUS_NETWORK_SESSION_EXPIRED = 0xC000035C
STATUS_CANCELLED = 0xC0000120
STATUS_FILE_CLOSED = 0xC0000128
STATUS_NETWORK_NAME_DELETED = 0xC00000C9
STATUS_INVALID_HANDLE = 0xC0000008
STATUS_END_OF_FILE = 0xC0000011
STATUS_NO_MORE_FILES = 0x80000006
STATUS_BAD_NETWORK_NAME = 0xC00000CC
STATUS_OBJECT_NAME_NOT_FOUND = 0xC0000034
STATUS_REQUEST_NOT_ACCEPTED = 0xC00000D0
STATUS_INVALID_DEVICE_REQUEST = 0xC0000010
STATUS_INSUFFICIENT_RESOURCES = 0xC000009A
STATUS_INTERNAL_ERROR = 0xC00000E5


def status_name(code: int) -> str:
    """MS-ERREF name of *code*, or its hex form."""
    return STATUS_NAMES.get(code, f"0x{code:08X}")


def is_error(code: int) -> bool:
    """Severity bits 11 (error), MS-ERREF 2.3."""
    return (code >> 30) == 3


class NtStatusError(Exception):
    """An NTSTATUS carried as an exception.  ``NtStatusError(code)`` returns the
    registered subclass instance for *code*."""

    code: ClassVar[int] = 0xC0000001
    _registry: ClassVar[dict[int, type["NtStatusError"]]] = {}

    def __new__(cls, *args, **kwargs):
        if cls is NtStatusError and args and isinstance(args[0], int):
            sub = NtStatusError._registry.get(args[0])
            if sub is not None:
                return Exception.__new__(sub)
        return Exception.__new__(cls)

    def __init__(self, *args, message: str | None = None):
        if args and isinstance(args[0], int):
            code = args[0]
            args = args[1:]
        else:
            code = type(self).code
        self.status = code
        self.message = message or (args[0] if args else "")
        super().__init__(code, self.message)

    def __str__(self) -> str:
        return f"{status_name(self.status)}" + (f": {self.message}" if self.message else "")


def _camel(name: str) -> str:
    return "Status" + "".join(p.capitalize() for p in name[len("STATUS_"):].split("_"))


for _name, _value in _CODES.items():
    if _value in NtStatusError._registry:
        continue
    _cls = type(_camel(_name), (NtStatusError,), {"code": _value, "__doc__": f"{_name} (0x{_value:08X})"})
    NtStatusError._registry[_value] = _cls
    globals()[_cls.__name__] = _cls

# Explicit names so static readers (and B's code) see them.
StatusAccessDenied = NtStatusError._registry[STATUS_ACCESS_DENIED]
StatusInvalidParameter = NtStatusError._registry[STATUS_INVALID_PARAMETER]
StatusNotSupported = NtStatusError._registry[STATUS_NOT_SUPPORTED]
StatusFileClosed = NtStatusError._registry[STATUS_FILE_CLOSED]
StatusInvalidHandle = NtStatusError._registry[STATUS_INVALID_HANDLE]
StatusObjectNameNotFound = NtStatusError._registry[STATUS_OBJECT_NAME_NOT_FOUND]
StatusBadNetworkName = NtStatusError._registry[STATUS_BAD_NETWORK_NAME]
StatusEndOfFile = NtStatusError._registry[STATUS_END_OF_FILE]
StatusCancelled = NtStatusError._registry[STATUS_CANCELLED]
StatusLogonFailure = NtStatusError._registry[STATUS_LOGON_FAILURE]
StatusUserSessionDeleted = NtStatusError._registry[STATUS_USER_SESSION_DELETED]
StatusNetworkSessionExpired = NtStatusError._registry[STATUS_NETWORK_SESSION_EXPIRED]
StatusNetworkNameDeleted = NtStatusError._registry[STATUS_NETWORK_NAME_DELETED]
StatusInvalidDeviceRequest = NtStatusError._registry[STATUS_INVALID_DEVICE_REQUEST]
StatusInsufficientResources = NtStatusError._registry[STATUS_INSUFFICIENT_RESOURCES]
StatusInternalError = NtStatusError._registry[STATUS_INTERNAL_ERROR]
StatusRequestNotAccepted = NtStatusError._registry[STATUS_REQUEST_NOT_ACCEPTED]
StatusNoMoreFiles = NtStatusError._registry[STATUS_NO_MORE_FILES]
