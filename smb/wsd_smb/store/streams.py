"""Named data streams (MS-FSCC 2.1.5.1 ``file:stream:$DATA``) kept in Linux user xattrs
``user.wsd.stream.<name>`` of the file or directory, as Samba's ``streams_xattr`` does:
the value is the stream's data, so a stream is limited to what the file system allows
for one xattr value (64 KiB on ext4; a larger write is STATUS_DISK_FULL).  Stream names
are case-insensitive and case-preserving."""
from __future__ import annotations

import errno
import os

PREFIX = "user.wsd.stream."
_NO = (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP)


def list_streams(path: str) -> list[tuple[str, int]]:
    """(name, size) of the named streams of *path* (an fd_path), sorted by name."""
    try:
        names = [n for n in os.listxattr(path) if n.startswith(PREFIX)]
    except OSError as e:
        if e.errno in _NO:
            return []
        raise
    out = []
    for n in sorted(names):
        try:
            out.append((n[len(PREFIX):], len(os.getxattr(path, n))))
        except OSError as e:
            if e.errno not in _NO:
                raise
    return out


def find_stream(path: str, name: str) -> str | None:
    """The stored spelling of stream *name* (case-insensitive), or None."""
    want = name.casefold()
    for n, _ in list_streams(path):
        if n.casefold() == want:
            return n
    return None


def read_stream(path: str, name: str) -> bytes:
    try:
        return os.getxattr(path, PREFIX + name)
    except OSError as e:
        if e.errno == errno.ENODATA:
            return b""
        raise


def write_stream(path: str, name: str, data: bytes) -> None:
    """Store the whole stream; E2BIG/ENOSPC become OSError(ENOSPC) (STATUS_DISK_FULL)."""
    try:
        os.setxattr(path, PREFIX + name, bytes(data))
    except OSError as e:
        if e.errno in (errno.E2BIG, errno.ENOSPC, errno.ERANGE):
            raise OSError(errno.ENOSPC, "stream larger than an xattr can hold") from None
        raise


def remove_stream(path: str, name: str) -> None:
    try:
        os.removexattr(path, PREFIX + name)
    except OSError as e:
        if e.errno != errno.ENODATA:
            raise
