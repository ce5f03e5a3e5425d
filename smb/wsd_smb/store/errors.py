"""Errors of the object store: NTSTATUS exceptions (``wsd_smb.ntstatus``) and the
mapping of POSIX errno values to them."""
from __future__ import annotations

import contextlib
import errno
import os

from ..ntstatus import NtStatusError

# Codes the store raises; values from MS-ERREF 2.3.1.  Kept here as names so that the
# store does not depend on which of them the shared registry happens to list.
STATUS_SUCCESS = 0x00000000
STATUS_BUFFER_OVERFLOW = 0x80000005
STATUS_NO_MORE_FILES = 0x80000006
STATUS_UNSUCCESSFUL = 0xC0000001
STATUS_INVALID_INFO_CLASS = 0xC0000003
STATUS_INFO_LENGTH_MISMATCH = 0xC0000004
STATUS_INVALID_HANDLE = 0xC0000008
STATUS_INVALID_PARAMETER = 0xC000000D
STATUS_NO_SUCH_FILE = 0xC000000F
STATUS_INVALID_DEVICE_REQUEST = 0xC0000010
STATUS_END_OF_FILE = 0xC0000011
STATUS_ACCESS_DENIED = 0xC0000022
STATUS_BUFFER_TOO_SMALL = 0xC0000023
STATUS_OBJECT_NAME_INVALID = 0xC0000033
STATUS_OBJECT_NAME_NOT_FOUND = 0xC0000034
STATUS_OBJECT_NAME_COLLISION = 0xC0000035
STATUS_OBJECT_PATH_NOT_FOUND = 0xC000003A
STATUS_OBJECT_PATH_SYNTAX_BAD = 0xC000003B
STATUS_SHARING_VIOLATION = 0xC0000043
STATUS_EAS_NOT_SUPPORTED = 0xC000004F
STATUS_FILE_LOCK_CONFLICT = 0xC0000054
STATUS_LOCK_NOT_GRANTED = 0xC0000055
STATUS_DELETE_PENDING = 0xC0000056
STATUS_RANGE_NOT_LOCKED = 0xC000007E
STATUS_DISK_FULL = 0xC000007F
STATUS_INSUFFICIENT_RESOURCES = 0xC000009A
STATUS_MEDIA_WRITE_PROTECTED = 0xC00000A2
STATUS_FILE_IS_A_DIRECTORY = 0xC00000BA
STATUS_NOT_SUPPORTED = 0xC00000BB
STATUS_NOT_SAME_DEVICE = 0xC00000D4
STATUS_DIRECTORY_NOT_EMPTY = 0xC0000101
STATUS_NOT_A_DIRECTORY = 0xC0000103
STATUS_NAME_TOO_LONG = 0xC0000106
STATUS_TOO_MANY_OPENED_FILES = 0xC000011F
STATUS_CANCELLED = 0xC0000120
STATUS_CANNOT_DELETE = 0xC0000121
STATUS_FILE_CLOSED = 0xC0000128
STATUS_IO_DEVICE_ERROR = 0xC0000185
STATUS_INVALID_LOCK_RANGE = 0xC00001A1
STATUS_NOT_A_REPARSE_POINT = 0xC0000275
STATUS_OBJECTID_NOT_FOUND = 0xC00002F0


class WouldBlock(Exception):
    """A cached-only attempt (``cached_only=True``, run on the event loop) found that the
    operation would have to wait: for disk or network I/O (a path not in the kernel's
    dentry cache), for a lock a worker holds, or for work that is never done inline.
    Nothing has been changed; the caller runs the same request again where blocking is
    allowed (the driver's worker threads).  Not an NTSTATUS: it never reaches a client."""


def fail(status: int, message: str = "") -> NtStatusError:
    """The exception for *status* (raise the result)."""
    return NtStatusError(status, message=message) if message else NtStatusError(status)


_ERRNO = {
    errno.ENOENT: STATUS_OBJECT_NAME_NOT_FOUND,
    errno.ENOTDIR: STATUS_OBJECT_PATH_NOT_FOUND,
    errno.EACCES: STATUS_ACCESS_DENIED,
    errno.EPERM: STATUS_ACCESS_DENIED,
    errno.ELOOP: STATUS_ACCESS_DENIED,
    errno.EXDEV: STATUS_NOT_SAME_DEVICE,
    errno.EEXIST: STATUS_OBJECT_NAME_COLLISION,
    errno.ENOTEMPTY: STATUS_DIRECTORY_NOT_EMPTY,
    errno.EISDIR: STATUS_FILE_IS_A_DIRECTORY,
    errno.ENOSPC: STATUS_DISK_FULL,
    errno.EDQUOT: STATUS_DISK_FULL,
    errno.EFBIG: STATUS_DISK_FULL,
    errno.EROFS: STATUS_MEDIA_WRITE_PROTECTED,
    errno.ENAMETOOLONG: STATUS_OBJECT_NAME_INVALID,
    errno.EINVAL: STATUS_INVALID_PARAMETER,
    errno.EMFILE: STATUS_TOO_MANY_OPENED_FILES,
    errno.ENFILE: STATUS_TOO_MANY_OPENED_FILES,
    errno.EBADF: STATUS_FILE_CLOSED,
    errno.EIO: STATUS_IO_DEVICE_ERROR,
    errno.ENOMEM: STATUS_INSUFFICIENT_RESOURCES,
    errno.EBUSY: STATUS_SHARING_VIOLATION,
    errno.ETXTBSY: STATUS_SHARING_VIOLATION,
}


def from_oserror(e: OSError, message: str = "") -> NtStatusError:
    """Map an OSError to the NTSTATUS exception a Windows server would answer."""
    status = _ERRNO.get(e.errno or 0, STATUS_UNSUCCESSFUL)
    return fail(status, message or f"{e.strerror} ({e.errno})")


@contextlib.contextmanager
def closing_on_failure(*fds: int):
    """Own *fds* for the block: if it does not finish, they are closed and an OSError leaves
    as its NTSTATUS (:func:`from_oserror`); any other exception passes unchanged."""
    done = False
    try:
        yield
        done = True
    except OSError as e:
        raise from_oserror(e) from None
    finally:
        if not done:
            for fd in fds:
                os.close(fd)

