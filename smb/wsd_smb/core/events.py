"""The events the sans-IO connection (:mod:`.connection`) hands its driver, and the
exception after which MS-SMB2 says to disconnect."""
from __future__ import annotations

import errno
import logging
import struct
from dataclasses import dataclass
from typing import Any, Callable

from .. import ntstatus
from ..ntstatus import NtStatusError

log = logging.getLogger("wsd_smb.core")


# ------------------------------------------------------------------ events
@dataclass
class Send:
    data: bytes


@dataclass
class Close:
    reason: str


@dataclass
class Cleanup:
    """Blocking clean-up for the driver's thread pool that answers no request (the
    file layer's hooks after a session was closed from outside, MS-SMB2 3.3.4.12)."""

    fn: Callable[[], Any]


@dataclass
class Work:
    """A blocking call for the driver's thread pool.  run() never raises for the
    exceptions a handler is expected to raise; it stores the outcome."""

    fn: Callable[[], Any]
    result: Any = None
    error: NtStatusError | None = None
    token: Any = None

    def run(self) -> None:
        try:
            self.result = self.fn()
        except NtStatusError as e:
            self.error = e
        except OSError as e:
            self.error = NtStatusError(_errno_status(e))
        except (ValueError, KeyError, TypeError, AttributeError, LookupError, ArithmeticError, struct.error,
                UnicodeError, NotImplementedError, AssertionError, RuntimeError) as e:
            log.error("event=handler_bug error=%r", e, exc_info=True)
            self.error = NtStatusError(ntstatus.STATUS_INTERNAL_ERROR)


def _errno_status(e: OSError) -> int:
    return {
        errno.ENOENT: ntstatus.STATUS_OBJECT_NAME_NOT_FOUND,
        errno.EEXIST: ntstatus.STATUS_OBJECT_NAME_COLLISION,
        errno.EACCES: ntstatus.STATUS_ACCESS_DENIED,
        errno.EPERM: ntstatus.STATUS_ACCESS_DENIED,
        errno.ENOTDIR: ntstatus.STATUS_NOT_A_DIRECTORY,
        errno.EISDIR: ntstatus.STATUS_FILE_IS_A_DIRECTORY,
        errno.ENOTEMPTY: ntstatus.STATUS_DIRECTORY_NOT_EMPTY,
        errno.ENOSPC: ntstatus.STATUS_DISK_FULL,
        errno.EROFS: ntstatus.STATUS_MEDIA_WRITE_PROTECTED,
        errno.ENAMETOOLONG: ntstatus.STATUS_NAME_TOO_LONG,
    }.get(e.errno or 0, ntstatus.STATUS_UNEXPECTED_IO_ERROR)


class ProtocolViolation(Exception):
    """Input after which MS-SMB2 says to disconnect."""
