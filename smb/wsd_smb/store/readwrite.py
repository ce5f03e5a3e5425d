"""READ, WRITE, FLUSH and the server-side copy of the object store (MS-FSA 2.1.5.2, 2.1.5.3, 2.1.5.6;
MS-SMB2 3.3.5.15.6), under the byte-range lock rules."""
from __future__ import annotations

import errno
import logging
import os

from . import locks as brl
from .attrs import fd_path
from .constants import (
    FILE_APPEND_DATA,
    FILE_EXECUTE,
    FILE_READ_DATA,
    FILE_WRITE_DATA,
)
from .errors import (
    STATUS_ACCESS_DENIED,
    STATUS_END_OF_FILE,
    STATUS_FILE_CLOSED,
    STATUS_FILE_LOCK_CONFLICT,
    STATUS_INVALID_DEVICE_REQUEST,
    STATUS_INVALID_PARAMETER,
    fail,
    from_oserror,
)
from ..buffers import HeadroomBuffer
from ..ntstatus import NtStatusError
from .streams import read_stream, write_stream

from .objects import MAX_FILE_SIZE, MAX_OFFSET, Open, STATUS_DISK_FULL, STATUS_INVALID_VIEW_SIZE

log = logging.getLogger("wsd_smb.store")


class ReadWriteMixin:
    """Data I/O of the object store (mixed into :class:`~.objectstore.ObjectStore`)."""

    # ------------------------------------------------------------------ READ / WRITE
    def _check_io(self, o: Open, offset: int, length: int, write: bool) -> None:
        with self.mutex:
            if brl.conflicts(o.file.locks, offset, length, write, False, o):
                raise fail(STATUS_FILE_LOCK_CONFLICT)

    def read(self, o: Open, offset: int, length: int, minimum_count: int = 0, headroom: int = 0) -> bytes:
        """MS-SMB2 3.3.5.12: read up to *length* bytes at *offset*.  With *headroom*, the data
        is read straight into a :class:`HeadroomBuffer` with that many spare bytes in front
        and returned as a memoryview of it (the response is then assembled around it)."""
        if o.is_directory:
            raise fail(STATUS_INVALID_DEVICE_REQUEST, "read of a directory")
        if not o.granted_access & (FILE_READ_DATA | FILE_EXECUTE):
            raise fail(STATUS_ACCESS_DENIED, "no FILE_READ_DATA")
        if offset > MAX_OFFSET or offset + length > MAX_OFFSET:
            raise fail(STATUS_INVALID_PARAMETER, "read beyond 2**63 - 1")
        if length:
            self._check_io(o, offset, length, False)
        with o.io_lock:
            if o.closed:
                raise fail(STATUS_FILE_CLOSED)
            if headroom and o.stream is None and length:
                return self._read_into_headroom(o, offset, length, minimum_count, headroom)
            try:
                chunks = []
                got = 0
                if o.stream is not None:
                    chunks.append(read_stream(fd_path(o.fd), o.stream)[offset:offset + length])
                    got = length
                while got < length:
                    b = os.pread(o.fd, length - got, offset + got)
                    if not b:
                        break
                    chunks.append(b)
                    got += len(b)
            except OSError as e:
                raise from_oserror(e) from None
        data = b"".join(chunks)
        if length and not data:
            raise fail(STATUS_END_OF_FILE)
        if len(data) < minimum_count:
            raise fail(STATUS_END_OF_FILE, "less than MinimumCount")
        o.current_offset = offset + len(data)  # synchronous I/O moves the position
        return data

    def _read_into_headroom(self, o: Open, offset: int, length: int, minimum_count: int,
                            headroom: int) -> memoryview:
        buf = HeadroomBuffer(headroom, length)
        got = 0
        with memoryview(buf) as whole:
            try:
                while got < length:
                    n = os.preadv(o.fd, [whole[headroom + got:]], offset + got)
                    if not n:
                        break
                    got += n
            except OSError as e:
                raise from_oserror(e) from None
        if not got:
            raise fail(STATUS_END_OF_FILE)
        if got < minimum_count:
            raise fail(STATUS_END_OF_FILE, "less than MinimumCount")
        del buf[headroom + got:]           # the payload runs to the end of the buffer
        o.current_offset = offset + got    # synchronous I/O moves the position
        return memoryview(buf)[headroom:]

    def write(self, o: Open, offset: int, data: bytes | memoryview) -> int:
        """MS-SMB2 3.3.5.13: write *data* at *offset* (0xFFFFFFFFFFFFFFFF: append)."""
        if o.is_directory:
            raise fail(STATUS_INVALID_DEVICE_REQUEST, "write to a directory")
        if not o.granted_access & (FILE_WRITE_DATA | FILE_APPEND_DATA):
            raise fail(STATUS_ACCESS_DENIED, "no FILE_WRITE_DATA")
        with o.io_lock:
            if o.closed:
                raise fail(STATUS_FILE_CLOSED)
            try:
                if not o.granted_access & FILE_WRITE_DATA:  # append-only open: at the end
                    offset = os.fstat(o.fd).st_size
                if offset > MAX_OFFSET or offset + len(data) > MAX_OFFSET:
                    raise fail(STATUS_INVALID_PARAMETER, "write beyond 2**63 - 1")
                if len(data) and offset + len(data) > MAX_FILE_SIZE:
                    # NTFS's largest file (16 TiB - 64 KiB): beyond is invalid, reaching it is full
                    raise fail(STATUS_INVALID_PARAMETER if offset + len(data) > MAX_FILE_SIZE + 1
                               else STATUS_DISK_FULL, "beyond the maximum file size")
                if len(data):
                    self._check_io(o, offset, len(data), True)
                mv = memoryview(data)
                done = 0
                if o.stream is not None and len(mv):
                    cur = read_stream(fd_path(o.fd), o.stream)
                    if offset > len(cur):
                        cur += b"\0" * (offset - len(cur))
                    write_stream(fd_path(o.fd), o.stream, cur[:offset] + bytes(mv) + cur[offset + len(mv):])
                    done = len(mv)
                while done < len(mv):
                    n = os.pwrite(o.fd, mv[done:], offset + done)
                    if n <= 0:
                        break
                    done += n
                if done and (o.user_set_write_time is not None or o.user_set_change_time):
                    self._keep_user_times(o)
            except OSError as e:
                raise from_oserror(e) from None
        o.current_offset = offset + done
        return done

    def copy_chunks(self, src: Open, dst: Open, chunks: list[tuple[int, int, int]]) -> tuple[int, int, NtStatusError | None]:
        """Server-side copy (MS-SMB2 3.3.5.15.6): copy each (source offset, target offset,
        length) chunk from *src* to *dst* in order, as a READ then a WRITE would: byte-range
        locks are honoured (STATUS_FILE_LOCK_CONFLICT) and a chunk reaching beyond the
        source's end fails with STATUS_INVALID_VIEW_SIZE (as Windows and Samba).  The caller
        checked access.  Returns (chunks written, bytes written, the error that stopped
        the copy or None); a failing chunk writes nothing.

        Both opens' io_locks are held for the whole request, taken in FileId.Volatile
        order (src and dst may be one open).  Different files copy with
        os.copy_file_range (in-kernel, reflink where the file system can); the same file
        (ranges may overlap) and streams go through a buffer of one chunk."""
        if src.is_directory or dst.is_directory:
            return 0, 0, fail(STATUS_INVALID_DEVICE_REQUEST, "copy chunk on a directory")
        held = sorted({id(src): src, id(dst): dst}.values(), key=lambda o: o.file_id_volatile)
        for o in held:
            o.io_lock.acquire()
        written = total = 0
        try:
            for s_off, d_off, length in chunks:
                if src.closed or dst.closed:
                    return written, total, fail(STATUS_FILE_CLOSED)
                if d_off + length > MAX_FILE_SIZE:
                    return written, total, fail(STATUS_INVALID_PARAMETER if d_off + length > MAX_FILE_SIZE + 1
                                                else STATUS_DISK_FULL, "beyond the maximum file size")
                if s_off + length > MAX_OFFSET:
                    return written, total, fail(STATUS_INVALID_PARAMETER, "source beyond 2**63 - 1")
                try:
                    self._check_io(src, s_off, length, False)
                    self._check_io(dst, d_off, length, True)
                except NtStatusError as e:
                    return written, total, e
                try:
                    self._copy_one(src, dst, s_off, d_off, length)
                except NtStatusError as e:
                    return written, total, e
                except OSError as e:
                    return written, total, from_oserror(e)
                written += 1
                total += length
            if total and (dst.user_set_write_time is not None or dst.user_set_change_time):
                try:
                    self._keep_user_times(dst)
                except OSError as e:
                    return written, total, from_oserror(e)
            return written, total, None
        finally:
            for o in reversed(held):
                o.io_lock.release()

    def _copy_one(self, src: Open, dst: Open, s_off: int, d_off: int, length: int) -> None:
        """One chunk; the caller holds both io_locks.  Raises STATUS_INVALID_VIEW_SIZE when the
        source does not hold *length* bytes at *s_off*."""
        if src.stream is not None:
            size = len(read_stream(fd_path(src.fd), src.stream))
        else:
            size = os.fstat(src.fd).st_size
        if s_off + length > size:
            raise fail(STATUS_INVALID_VIEW_SIZE, "chunk beyond the end of the source")
        if src.stream is None and dst.stream is None and src.file is not dst.file:
            done = 0
            while done < length:
                try:
                    n = os.copy_file_range(src.fd, dst.fd, length - done, s_off + done, d_off + done)
                except OSError as e:
                    if e.errno in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP) and done == 0:
                        break  # not on this file system: the buffered copy below
                    raise
                if n <= 0:
                    raise fail(STATUS_INVALID_VIEW_SIZE, "source shrank during the copy")
                done += n
            else:
                return
        if src.stream is not None:
            data = read_stream(fd_path(src.fd), src.stream)[s_off:s_off + length]
        else:
            parts, got = [], 0
            while got < length:
                b = os.pread(src.fd, length - got, s_off + got)
                if not b:
                    raise fail(STATUS_INVALID_VIEW_SIZE, "source shrank during the copy")
                parts.append(b)
                got += len(b)
            data = b"".join(parts)
        if dst.stream is not None:
            cur = read_stream(fd_path(dst.fd), dst.stream)
            if d_off > len(cur):
                cur += b"\0" * (d_off - len(cur))
            write_stream(fd_path(dst.fd), dst.stream, cur[:d_off] + data + cur[d_off + len(data):])
            return
        mv = memoryview(data)
        done = 0
        while done < len(mv):
            n = os.pwrite(dst.fd, mv[done:], d_off + done)
            if n <= 0:
                raise fail(STATUS_DISK_FULL, "short write")
            done += n

    def flush(self, o: Open) -> None:
        """MS-SMB2 3.3.5.11."""
        if not o.is_directory and not o.granted_access & (FILE_WRITE_DATA | FILE_APPEND_DATA):
            raise fail(STATUS_ACCESS_DENIED, "flush without write access")
        with o.io_lock:
            if o.closed:
                raise fail(STATUS_FILE_CLOSED)
            if o.fd_writable:
                try:
                    os.fsync(o.fd)
                except OSError as e:
                    raise from_oserror(e) from None
