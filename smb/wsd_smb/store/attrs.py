"""File attributes and times from ``stat`` (MS-FSCC 2.6, MS-DTYP 2.3.3).

* FILE_ATTRIBUTE_DIRECTORY for directories;
* FILE_ATTRIBUTE_READONLY for files whose owner-write bit is clear (Samba's
  ``map readonly``); setting/clearing READONLY clears/sets the write bits; on a directory
  READONLY is only a flag (NTFS: it does not stop changes inside it), kept in the xattr;
* HIDDEN, SYSTEM, ARCHIVE, TEMPORARY, OFFLINE, NOT_CONTENT_INDEXED as last set by a client,
  kept in the extended attribute ``user.wsd.dosinfo`` (4 bytes attributes, 8 bytes
  CreationTime, little-endian); without it, files show ARCHIVE;
* SPARSE_FILE (Open.Stream.IsSparse) in the same xattr, for files only: set and cleared
  by FSCTL_SET_SPARSE alone (store/sparse.py), never by CREATE or SET_INFO attributes;
* HIDDEN for names beginning with '.' when the share hides dot files, and for names
  matching the share's ``hide_files`` patterns (store/namepolicy.py);
* FILE_ATTRIBUTE_NORMAL when nothing else applies.

CreationTime is the one kept in the xattr (set at create and by SET_INFO), else the
earlier of mtime and ctime (Linux stat has no birth time here).
"""
from __future__ import annotations

import errno
import os
import stat as stat_mod
import struct
from dataclasses import dataclass
from typing import Any

from .constants import (
    FILE_ATTRIBUTE_ARCHIVE,
    FILE_ATTRIBUTE_DIRECTORY,
    FILE_ATTRIBUTE_HIDDEN,
    FILE_ATTRIBUTE_NORMAL,
    FILE_ATTRIBUTE_READONLY,
    FILE_ATTRIBUTE_SPARSE_FILE,
    SETTABLE_ATTRIBUTES,
)

#: what the xattr keeps for a file: the settable attributes but READONLY (the mode's),
#: and FILE_ATTRIBUTE_SPARSE_FILE (FSCTL_SET_SPARSE)
_FILE_STORED = (SETTABLE_ATTRIBUTES & ~FILE_ATTRIBUTE_READONLY) | FILE_ATTRIBUTE_SPARSE_FILE
from .filetime import to_filetime

XATTR_NAME = "user.wsd.dosinfo"
_DOSINFO = struct.Struct("<IQ")
_NOT_SUPPORTED = {errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENODATA, errno.EPERM, errno.EACCES, errno.ENOENT}


def xattr_call(fn, target: str | int, *args, follow: bool = True):
    """``fn(target, *args)`` for os.getxattr/listxattr: *target* is a path or an open fd.
    An fd goes to the f*xattr call directly (no /proc path lookup); an ``O_PATH`` fd,
    which those refuse with EBADF, is retried through its :func:`fd_path`."""
    if isinstance(target, int):
        try:
            return fn(target, *args)
        except OSError as e:
            if e.errno != errno.EBADF:
                raise
        target, follow = fd_path(target), True
    return fn(target, *args, follow_symlinks=follow)


def read_dosinfo(path: str | int, follow: bool = True) -> tuple[int | None, int]:
    """(stored attributes or None, stored CreationTime or 0) of *path* (or open fd).

    *follow* must be True for ``/proc/self/fd/N`` paths (:func:`fd_path`), which are
    magic links; directory-entry paths pass False so a symlink is never followed."""
    try:
        raw = xattr_call(os.getxattr, path, XATTR_NAME, follow=follow)
    except OSError as e:
        if e.errno in _NOT_SUPPORTED:
            return None, 0
        raise
    if len(raw) != _DOSINFO.size:
        return None, 0
    a, ct = _DOSINFO.unpack(raw)
    return a, ct


def write_dosinfo(path: str, attributes: int, creation_time: int, is_directory: bool = False) -> bool:
    """Store attributes (without DIRECTORY; READONLY only for a directory, a file's is its
    mode) and CreationTime on *path* (an :func:`fd_path`); False if the file system has no
    user xattrs."""
    keep = SETTABLE_ATTRIBUTES if is_directory else _FILE_STORED
    data = _DOSINFO.pack(attributes & keep, creation_time)
    try:
        os.setxattr(path, XATTR_NAME, data, follow_symlinks=True)
    except OSError as e:
        if e.errno in _NOT_SUPPORTED:
            return False
        raise
    return True


@dataclass
class FileStat:
    """What the information classes report about one object."""

    creation_time: int
    last_access_time: int
    last_write_time: int
    change_time: int
    end_of_file: int
    allocation_size: int
    attributes: int
    number_of_links: int
    is_directory: bool
    index_number: int
    uid: int
    gid: int
    ea_size: int = 0


def dos_attributes(st: os.stat_result, name: str, stored: int | None, hide_dot_files: bool = True,
                   hide_files: Any = None) -> int:
    """MS-FSCC 2.6 attributes of a file.  *hide_files*: the share's ``hide_files``
    patterns (store/namepolicy.py NamePatterns) or None; a matching *name* is HIDDEN."""
    is_dir = stat_mod.S_ISDIR(st.st_mode)
    a = FILE_ATTRIBUTE_DIRECTORY if is_dir else 0
    if stored is not None:
        a |= stored & (SETTABLE_ATTRIBUTES if is_dir else _FILE_STORED)
    elif not is_dir:
        a |= FILE_ATTRIBUTE_ARCHIVE
    if not is_dir and not st.st_mode & stat_mod.S_IWUSR:
        a |= FILE_ATTRIBUTE_READONLY
    if hide_dot_files and name.startswith(".") and name not in (".", ".."):
        a |= FILE_ATTRIBUTE_HIDDEN
    if hide_files is not None and name not in (".", "..") and name and hide_files.match(name):
        a |= FILE_ATTRIBUTE_HIDDEN
    return a or FILE_ATTRIBUTE_NORMAL


def file_stat(st: os.stat_result, name: str, xattr_path: str | int | None, hide_dot_files: bool = True,
              follow: bool = True, eas: bool = True, hide_files: Any = None) -> FileStat:
    """*xattr_path*: where the DOS attributes and EAs are read (a path or an open fd);
    with *eas* False the EAs are not read (ea_size 0).  *hide_files*: see dos_attributes."""
    from .eas import ea_size, read_eas

    has_xattrs = xattr_path is not None and xattr_path != ""
    stored, ctime = read_dosinfo(xattr_path, follow) if has_xattrs else (None, 0)
    eas = ea_size(read_eas(xattr_path, follow)) if has_xattrs and eas else 0
    is_dir = stat_mod.S_ISDIR(st.st_mode)
    if not ctime:
        ctime = to_filetime(min(st.st_mtime_ns, st.st_ctime_ns))
    return FileStat(
        creation_time=ctime,
        last_access_time=to_filetime(st.st_atime_ns),
        last_write_time=to_filetime(st.st_mtime_ns),
        change_time=to_filetime(st.st_ctime_ns),
        end_of_file=0 if is_dir else st.st_size,
        allocation_size=0 if is_dir else st.st_blocks * 512,
        attributes=dos_attributes(st, name, stored, hide_dot_files, hide_files),
        number_of_links=1 if is_dir else st.st_nlink,
        is_directory=is_dir,
        index_number=st.st_ino,
        uid=st.st_uid,
        gid=st.st_gid,
        ea_size=eas,
    )


_FS_IOC_FIEMAP = 0xC020660B
_FIEMAP_HDR = struct.Struct("<QQIIII")  # fm_start, fm_length, fm_flags, fm_mapped_extents, fm_extent_count, reserved
_FIEMAP_EXT = struct.Struct("<QQQQQIIII")  # logical, physical, length, reserved64[2], flags, reserved[3]
_FIEMAP_EXTENT_LAST = 0x1
_fiemap_ok = True


def allocated_bytes(fd: int, st: os.stat_result) -> int:
    """Bytes of data extents of *fd* (FS_IOC_FIEMAP), which unlike st_blocks leaves out
    the block an ext4 inode may use for extended attributes; st_blocks * 512 where the
    file system has no FIEMAP."""
    global _fiemap_ok
    if not _fiemap_ok or not st.st_blocks or not stat_mod.S_ISREG(st.st_mode):
        return st.st_blocks * 512
    import fcntl

    total, start, count = 0, 0, 64
    for _ in range(1024):  # bounded: 64 extents per call
        buf = bytearray(_FIEMAP_HDR.size + count * _FIEMAP_EXT.size)
        _FIEMAP_HDR.pack_into(buf, 0, start, 0xFFFFFFFFFFFFFFFF - start, 0, 0, count, 0)
        try:
            fcntl.ioctl(fd, _FS_IOC_FIEMAP, buf, True)
        except OSError as e:
            if e.errno in (errno.EOPNOTSUPP, errno.ENOTTY, errno.EINVAL):
                _fiemap_ok = False
                return st.st_blocks * 512
            raise
        mapped = _FIEMAP_HDR.unpack_from(buf, 0)[3]
        last = None
        for i in range(mapped):
            ext = _FIEMAP_EXT.unpack_from(buf, _FIEMAP_HDR.size + i * _FIEMAP_EXT.size)
            total += ext[2]
            last = ext
        if not mapped or last[5] & _FIEMAP_EXTENT_LAST or mapped < count:
            break
        start = last[0] + last[2]
    return total


def fd_path(fd: int) -> str:
    """A path naming the object behind *fd* (works for O_PATH fds too)."""
    return f"/proc/self/fd/{fd}"
