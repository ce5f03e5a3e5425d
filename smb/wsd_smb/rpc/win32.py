"""Win32 error codes and NERR codes (MS-ERREF 2.2) as an exception registry, the way
``wsd_smb.ntstatus`` does it for NTSTATUS.

Every code has an integer constant named as in MS-ERREF / lmerr.h (``ERROR_INVALID_LEVEL``)
and an exception class (``ErrorInvalidLevel``, ``NerrUserNotFound``) deriving from
:class:`Win32Error`.  ``Win32Error(code)`` returns an instance of the registered subclass.
RPC methods (MS-SRVS) return these in their NET_API_STATUS return value, never as faults.
"""
from __future__ import annotations

from typing import ClassVar

from ..coded import CodedError

_CODES: dict[str, int] = {
    "NERR_Success": 0,
    "ERROR_ACCESS_DENIED": 5,
    "ERROR_NOT_ENOUGH_MEMORY": 8,
    "ERROR_NOT_SUPPORTED": 50,
    "ERROR_INVALID_PARAMETER": 87,
    "ERROR_INVALID_NAME": 123,
    "ERROR_INVALID_LEVEL": 124,
    "ERROR_MORE_DATA": 234,
    "NERR_UserNotFound": 2221,
    "NERR_NetNameNotFound": 2310,
    "NERR_ClientNameNotFound": 2312,
    "NERR_FileIdNotFound": 2314,
    "NERR_InvalidComputer": 2351,
}

NAMES: dict[int, str] = {v: k for k, v in _CODES.items()}

NERR_Success = 0
ERROR_ACCESS_DENIED = 5
ERROR_NOT_ENOUGH_MEMORY = 8
ERROR_NOT_SUPPORTED = 50
ERROR_INVALID_PARAMETER = 87
ERROR_INVALID_NAME = 123
ERROR_INVALID_LEVEL = 124
ERROR_MORE_DATA = 234
NERR_UserNotFound = 2221
NERR_NetNameNotFound = 2310
NERR_ClientNameNotFound = 2312
NERR_FileIdNotFound = 2314
NERR_InvalidComputer = 2351


def error_name(code: int) -> str:
    return NAMES.get(code, f"0x{code:08X}")


class Win32Error(CodedError, root=True):
    """A Win32/NERR code carried as an exception; ``Win32Error(code)`` returns the
    registered subclass instance for *code*."""

    code: ClassVar[int] = 0x1F  # ERROR_GEN_FAILURE

    def __str__(self) -> str:
        return error_name(self.status) + (f": {self.message}" if self.message else "")


def _camel(name: str) -> str:
    prefix, _, rest = name.partition("_")
    return prefix.capitalize() + "".join(p[:1].upper() + p[1:].lower() if p.isupper() else p for p in rest.split("_"))


Win32Error.define(_CODES, _camel, globals(), doc=lambda n, v: f"{n} ({v})", skip=lambda v: v == 0)

ErrorAccessDenied = Win32Error._registry[ERROR_ACCESS_DENIED]
ErrorInvalidParameter = Win32Error._registry[ERROR_INVALID_PARAMETER]
ErrorInvalidLevel = Win32Error._registry[ERROR_INVALID_LEVEL]
ErrorMoreData = Win32Error._registry[ERROR_MORE_DATA]
NerrUserNotFound = Win32Error._registry[NERR_UserNotFound]
NerrNetNameNotFound = Win32Error._registry[NERR_NetNameNotFound]
NerrClientNameNotFound = Win32Error._registry[NERR_ClientNameNotFound]
NerrFileIdNotFound = Win32Error._registry[NERR_FileIdNotFound]
NerrInvalidComputer = Win32Error._registry[NERR_InvalidComputer]
