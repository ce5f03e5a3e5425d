"""Sparse files in the object store: FSCTL_SET_SPARSE, FSCTL_QUERY_ALLOCATED_RANGES and
FSCTL_SET_ZERO_DATA (MS-FSA 2.1.5.10.38, 2.1.5.10.22, 2.1.5.10.39; MS-FSCC 2.6
FILE_ATTRIBUTE_SPARSE_FILE).

* Open.Stream.IsSparse is FILE_ATTRIBUTE_SPARSE_FILE in the file's DOS attributes
  (``user.wsd.dosinfo``, attrs.py): set and cleared only by FSCTL_SET_SPARSE, kept by
  SET_INFO FileBasicInformation, dropped when CREATE overwrites or supersedes the file.
  A named stream (kept in an xattr) is never sparse itself: its opens see the file's
  attribute but query and zero it as a non-sparse stream.
* Allocated ranges of a sparse file come from lseek(SEEK_DATA / SEEK_HOLE) on the file
  system (ext4: 4 KiB blocks, so a zeroed or unwritten 4 KiB block is a hole); a
  non-sparse file reports one range covering the queried part of the file, as NTFS does
  (its zeroed ranges stay allocated).  Clearing the sparse state allocates the holes
  (fallocate KEEP_SIZE: unwritten extents, nothing is written), as MS-FSA 2.1.5.10.38
  allocates the unallocated extents; a file system without fallocate keeps its holes.
* Zeroing punches a hole (fallocate PUNCH_HOLE | KEEP_SIZE) in a sparse file and
  zeroes with the blocks kept (fallocate ZERO_RANGE | KEEP_SIZE, or a punched hole
  allocated again where ZERO_RANGE is missing, as on tmpfs) in a non-sparse one; where
  the file system can do neither, zeros are written (:func:`zero_range`).  Byte-range locks are honoured
  as by WRITE.

These are blocking calls: the IOCTL handler runs them in the core's worker threads.
"""
from __future__ import annotations

import ctypes
import errno
import logging
import os

from . import locks as brl
from .attrs import allocated_bytes, fd_path, read_dosinfo, write_dosinfo
from .constants import (
    FILE_APPEND_DATA,
    FILE_ATTRIBUTE_ARCHIVE,
    FILE_ATTRIBUTE_SPARSE_FILE,
    FILE_READ_DATA,
    FILE_WRITE_ATTRIBUTES,
    FILE_WRITE_DATA,
)
from .errors import (
    STATUS_ACCESS_DENIED,
    STATUS_FILE_CLOSED,
    STATUS_FILE_LOCK_CONFLICT,
    STATUS_INVALID_DEVICE_REQUEST,
    STATUS_INVALID_PARAMETER,
    STATUS_MEDIA_WRITE_PROTECTED,
    fail,
    from_oserror,
)
from .filetime import to_filetime
from .objects import MAX_OFFSET, STATUS_BUFFER_OVERFLOW_, STATUS_BUFFER_TOO_SMALL_, STATUS_DISK_FULL, Open
from .streams import read_stream, write_stream

log = logging.getLogger("wsd_smb.store")

FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_ZERO_RANGE = 0x10
#: fallocate errors that mean "this file system cannot": zeros are written instead
_FALLOC_UNSUPPORTED = (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)
#: bytes written per pwrite when zeros are written by hand
_ZERO_CHUNK = 1 << 20

_libc: ctypes.CDLL | None = None


def fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    """fallocate(2) (os has posix_fallocate only); raises OSError."""
    global _libc
    if _libc is None:
        lib = ctypes.CDLL(None, use_errno=True)
        lib.fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
        lib.fallocate.restype = ctypes.c_int
        _libc = lib
    if _libc.fallocate(fd, mode, offset, length) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def punches_holes(directory: str, block: int = 4096) -> bool:
    """Does the file system under *directory* punch holes and report them to SEEK_DATA?
    (ext4, xfs, btrfs, tmpfs do; some FUSE and network file systems do not.)  Writes and
    removes a probe file of a few blocks."""
    p = os.path.join(directory, f".wsd-holeprobe-{os.getpid()}")
    fd = os.open(p, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.pwrite(fd, b"x" * 4 * block, 0)
        os.fsync(fd)
        fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 2 * block)
        return os.lseek(fd, 0, os.SEEK_DATA) == 2 * block
    except OSError:
        return False
    finally:
        os.close(fd)
        os.unlink(p)


def data_ranges(fd: int, start: int, end: int, limit: int) -> list[tuple[int, int]]:
    """The (offset, length) ranges holding data in [start, end) of *fd*, by SEEK_DATA /
    SEEK_HOLE, at most *limit* of them; the whole range where the file system cannot
    tell holes (EINVAL)."""
    out: list[tuple[int, int]] = []
    pos = start
    while pos < end and len(out) < limit:
        try:
            d = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as e:
            if e.errno == errno.ENXIO:  # no data at or after pos
                break
            if e.errno == errno.EINVAL and not out and pos == start:
                return [(start, end - start)]
            raise
        if d >= end:
            break
        h = min(os.lseek(fd, d, os.SEEK_HOLE), end)
        if h <= d:  # cannot happen on a sane file system; never loop on it
            h = end
        out.append((d, h - d))
        pos = h
    return out


class SparseMixin:
    """The sparse-file FSCTLs of the object store (mixed into :class:`~.objectstore.ObjectStore`)."""

    def is_sparse(self, o: Open) -> bool:
        """Open.Stream.IsSparse of the file's data (a named stream: False)."""
        if o.is_directory or o.stream is not None:
            return False
        stored, _ = read_dosinfo(fd_path(o.fd))
        return bool((stored or 0) & FILE_ATTRIBUTE_SPARSE_FILE)

    # ------------------------------------------------------------------ FSCTL_SET_SPARSE
    def set_sparse(self, o: Open, sparse: bool) -> None:
        """FSCTL_SET_SPARSE (MS-FSA 2.1.5.10.38): set or clear FILE_ATTRIBUTE_SPARSE_FILE.
        A directory is STATUS_INVALID_PARAMETER; the open needs FILE_WRITE_DATA or
        FILE_WRITE_ATTRIBUTES -- or FILE_APPEND_DATA, which Windows also accepts
        (smbtorture smb2.ioctl.sparse_perms).  Clearing allocates the file's holes first
        (STATUS_DISK_FULL when they do not fit: the file stays sparse)."""
        if o.is_directory:
            raise fail(STATUS_INVALID_PARAMETER, "FSCTL_SET_SPARSE on a directory")
        if o.share.read_only:
            raise fail(STATUS_MEDIA_WRITE_PROTECTED, "read-only share")
        if not o.granted_access & (FILE_WRITE_DATA | FILE_APPEND_DATA | FILE_WRITE_ATTRIBUTES):
            raise fail(STATUS_ACCESS_DENIED, "FSCTL_SET_SPARSE without write access")
        with o.io_lock:
            if o.closed:
                raise fail(STATUS_FILE_CLOSED)
            p = fd_path(o.fd)
            try:
                stored, ctime = read_dosinfo(p)
                was = stored if stored is not None else FILE_ATTRIBUTE_ARCHIVE
                now = was | FILE_ATTRIBUTE_SPARSE_FILE if sparse else was & ~FILE_ATTRIBUTE_SPARSE_FILE
                if now == was and stored is not None:
                    return
                if was & FILE_ATTRIBUTE_SPARSE_FILE and not sparse and o.stream is None:
                    self._allocate_holes(o)
                if not ctime:
                    st = os.fstat(o.fd)
                    ctime = to_filetime(min(st.st_mtime_ns, st.st_ctime_ns))
                if not write_dosinfo(p, now, ctime):
                    # MS-FSA: an object store without the feature answers STATUS_INVALID_DEVICE_REQUEST
                    raise fail(STATUS_INVALID_DEVICE_REQUEST, "no extended attributes to keep the sparse state in")
                if o.user_set_change_time:
                    self._keep_user_times(o, restore_write=False)
            except OSError as e:
                raise from_oserror(e) from None
        log.debug("event=set_sparse path=%s sparse=%s", o.path, sparse)

    def _allocate_holes(self, o: Open) -> None:
        """Give every hole of the file blocks (fallocate KEEP_SIZE over the whole size: the
        holes become unwritten extents that read as zeros).  An open without a writable fd
        (FILE_WRITE_ATTRIBUTES only) reopens the file for writing through /proc.  Caller
        holds o.io_lock."""
        if not os.fstat(o.fd).st_size:
            return
        fd = o.fd if o.fd_writable else os.open(fd_path(o.fd), os.O_WRONLY | os.O_CLOEXEC)
        try:
            st = os.fstat(fd)
            vfs = os.fstatvfs(fd)
            if st.st_size - allocated_bytes(fd, st) > vfs.f_bavail * vfs.f_frsize:
                # refused before ext4 would fill the disk to its last block and fail anyway
                raise fail(STATUS_DISK_FULL, "the holes of the file do not fit on the disk")
            fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, st.st_size)
        except OSError as e:
            if e.errno not in _FALLOC_UNSUPPORTED:
                raise
            log.debug("event=sparse_clear_without_allocation path=%s errno=%s", o.path,
                      errno.errorcode.get(e.errno))
        finally:
            if fd != o.fd:
                os.close(fd)

    # ------------------------------------------------------------------ FSCTL_QUERY_ALLOCATED_RANGES
    def query_allocated_ranges(self, o: Open, offset: int, length: int,
                               max_ranges: int) -> tuple[list[tuple[int, int]], int]:
        """FSCTL_QUERY_ALLOCATED_RANGES (MS-FSA 2.1.5.10.22): the allocated ranges of
        [offset, offset + length) clipped to the end of the file, at most *max_ranges*
        (what the output buffer holds).  Returns (ranges, status): STATUS_SUCCESS, or
        STATUS_BUFFER_OVERFLOW with the ranges that fit when there are more.  An empty
        answer needs no room; a non-empty one with no room for one range is
        STATUS_BUFFER_TOO_SMALL."""
        if o.is_directory:
            raise fail(STATUS_INVALID_PARAMETER, "FSCTL_QUERY_ALLOCATED_RANGES on a directory")
        if offset < 0 or length < 0 or offset + length > MAX_OFFSET:
            raise fail(STATUS_INVALID_PARAMETER, f"allocated ranges of {offset}+{length}")
        if not o.granted_access & FILE_READ_DATA:
            raise fail(STATUS_ACCESS_DENIED, "FSCTL_QUERY_ALLOCATED_RANGES without FILE_READ_DATA")
        with o.io_lock:
            if o.closed:
                raise fail(STATUS_FILE_CLOSED)
            try:
                if o.stream is not None:
                    size = len(read_stream(fd_path(o.fd), o.stream))
                else:
                    size = os.fstat(o.fd).st_size
                end = min(offset + length, size)
                if length == 0 or offset >= end:
                    return [], 0
                if not self.is_sparse(o):
                    ranges = [(offset, end - offset)]
                else:
                    ranges = data_ranges(o.fd, offset, end, max(0, max_ranges) + 1)
            except OSError as e:
                raise from_oserror(e) from None
        if ranges and max_ranges < 1:
            # as Windows and Samba: only an answer with something in it needs room
            raise fail(STATUS_BUFFER_TOO_SMALL_, "no room for one FILE_ALLOCATED_RANGE_BUFFER")
        if len(ranges) > max_ranges:
            return ranges[:max_ranges], STATUS_BUFFER_OVERFLOW_
        return ranges, 0

    # ------------------------------------------------------------------ FSCTL_SET_ZERO_DATA
    def zero_data(self, o: Open, offset: int, beyond_final_zero: int) -> None:
        """FSCTL_SET_ZERO_DATA (MS-FSA 2.1.5.10.39): zero [offset, beyond_final_zero)
        clipped to the end of the file (the size never changes).  Needs FILE_WRITE_DATA;
        a byte-range lock of another open over the range is STATUS_FILE_LOCK_CONFLICT."""
        if o.is_directory:
            raise fail(STATUS_INVALID_PARAMETER, "FSCTL_SET_ZERO_DATA on a directory")
        if offset < 0 or beyond_final_zero < 0 or offset > beyond_final_zero:
            raise fail(STATUS_INVALID_PARAMETER, f"zero data {offset}..{beyond_final_zero}")
        if o.share.read_only:
            raise fail(STATUS_MEDIA_WRITE_PROTECTED, "read-only share")
        if not o.granted_access & FILE_WRITE_DATA:
            raise fail(STATUS_ACCESS_DENIED, "FSCTL_SET_ZERO_DATA without FILE_WRITE_DATA")
        with o.io_lock:
            if o.closed:
                raise fail(STATUS_FILE_CLOSED)
            try:
                if o.stream is not None:
                    cur = read_stream(fd_path(o.fd), o.stream)
                    end = min(beyond_final_zero, len(cur))
                    if offset >= end:
                        return
                    self._check_zero_locks(o, offset, end)
                    write_stream(fd_path(o.fd), o.stream, cur[:offset] + bytes(end - offset) + cur[end:])
                    return
                end = min(beyond_final_zero, os.fstat(o.fd).st_size)
                if offset >= end:
                    return
                self._check_zero_locks(o, offset, end)
                sparse = self.is_sparse(o)
                how = zero_range(o.fd, offset, end, sparse)
                if how != "punch" and how != "zero-range":
                    log.debug("event=zero_data_fallback path=%s how=%s", o.path, how)
                if o.user_set_write_time is not None or o.user_set_change_time:
                    self._keep_user_times(o)
            except OSError as e:
                raise from_oserror(e) from None
        log.debug("event=zero_data path=%s offset=%d end=%d sparse=%s", o.path, offset, end, sparse)

    def _check_zero_locks(self, o: Open, offset: int, end: int) -> None:
        with self.mutex:
            if brl.conflicts(o.file.locks, offset, end - offset, True, False, o):
                raise fail(STATUS_FILE_LOCK_CONFLICT, "zero data over a locked range")


def zero_range(fd: int, offset: int, end: int, sparse: bool) -> str:
    """Zero [offset, end) of *fd* without changing its size; returns how:

    * sparse: "punch" (fallocate PUNCH_HOLE | KEEP_SIZE: whole blocks freed, partial
      blocks zeroed), else "written";
    * not sparse: "zero-range" (fallocate ZERO_RANGE | KEEP_SIZE: zeros, blocks kept), else
      "punch+allocate" (a hole punched, then its blocks allocated again: tmpfs has no
      ZERO_RANGE), else "written" (1 MiB pwrites of zeros)."""
    n = end - offset
    if not sparse:
        try:
            fallocate(fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, offset, n)
            return "zero-range"
        except OSError as e:
            if e.errno not in _FALLOC_UNSUPPORTED:
                raise
    try:
        fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, n)
    except OSError as e:
        if e.errno not in _FALLOC_UNSUPPORTED:
            raise
        _write_zeros(fd, offset, end)
        return "written"
    if sparse:
        return "punch"
    try:
        fallocate(fd, FALLOC_FL_KEEP_SIZE, offset, n)
    except OSError as e:
        if e.errno not in _FALLOC_UNSUPPORTED:
            raise
        _write_zeros(fd, offset, end)  # the range is a hole already: this allocates it
        return "written"
    return "punch+allocate"


def _write_zeros(fd: int, offset: int, end: int) -> None:
    zeros = bytes(min(_ZERO_CHUNK, end - offset))
    pos = offset
    while pos < end:
        n = os.pwrite(fd, memoryview(zeros)[:min(len(zeros), end - pos)], pos)
        if n <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        pos += n
