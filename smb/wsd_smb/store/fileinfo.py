"""QUERY_INFO / SET_INFO of file information in the object store (MS-FSA 2.1.5.11, 2.1.5.14):
attributes, times, end of file, allocation, disposition, rename, links, EAs."""
from __future__ import annotations

import logging
import os
import stat as stat_mod

from .attrs import FileStat, allocated_bytes, fd_path, file_stat, read_dosinfo, write_dosinfo
from .eas import Ea, read_eas, write_eas
from .eas import pack_full as pack_eas
from .constants import (
    FILE_ATTRIBUTE_ARCHIVE,
    FILE_ATTRIBUTE_DIRECTORY,
    FILE_ATTRIBUTE_NORMAL,
    FILE_ATTRIBUTE_READONLY,
    FILE_ATTRIBUTE_SPARSE_FILE,
    FILE_ATTRIBUTE_TEMPORARY,
    FILE_READ_EA,
    FILE_WRITE_ATTRIBUTES,
    FILE_WRITE_DATA,
    FILE_WRITE_EA,
    FILE_NO_INTERMEDIATE_BUFFERING,
    FILE_SEQUENTIAL_ONLY,
    FILE_WRITE_THROUGH,
    SETTABLE_ATTRIBUTES,
)
from .errors import (
    STATUS_ACCESS_DENIED,
    STATUS_FILE_CLOSED,
    STATUS_INVALID_PARAMETER,
    fail,
    from_oserror,
)
from .filetime import FILETIME_RESUME, FILETIME_SUSPEND, from_filetime, to_filetime
from .streams import list_streams, read_stream, write_stream

from .objects import (Open, STATUS_BUFFER_OVERFLOW_, STATUS_BUFFER_TOO_SMALL_, STATUS_NO_EAS_ON_FILE,
                      STATUS_NO_MORE_EAS, reserve)

log = logging.getLogger("wsd_smb.store")


class FileInfoMixin:
    """File information of the object store (mixed into :class:`~.objectstore.ObjectStore`)."""

    # ------------------------------------------------------------------ info (query side)
    def stat(self, o: Open, eas: bool = True) -> FileStat:
        """The open's FileStat; with eas=False its ea_size is 0 (not read)."""
        with o.io_lock:
            if o.closed:
                raise fail(STATUS_FILE_CLOSED)
            try:
                return self._stat_of(o, eas)
            except OSError as e:
                raise from_oserror(e) from None

    def stat_base(self, o: Open) -> FileStat:
        """Stat of the file an open belongs to (the file itself for a stream open)."""
        with o.io_lock:
            if o.closed:
                raise fail(STATUS_FILE_CLOSED)
            try:
                st = os.fstat(o.fd)
                fs = file_stat(st, o.file.rel[-1] if o.file.rel else "", o.fd, o.share.hide_dot_files,
                               hide_files=o.share.hide_files)
                if not fs.is_directory:
                    fs.allocation_size = allocated_bytes(o.fd, st)
                return fs
            except OSError as e:
                raise from_oserror(e) from None

    def list_streams(self, o: Open) -> list[tuple[str, int]]:
        """The named streams of the file of *o*: (name, size)."""
        with o.io_lock:
            if o.closed:
                raise fail(STATUS_FILE_CLOSED)
            try:
                return list_streams(fd_path(o.fd))
            except OSError as e:
                raise from_oserror(e) from None

    # ------------------------------------------------------------------ set info
    def set_basic(self, o: Open, creation_time: int, last_access_time: int, last_write_time: int,
                  change_time: int, file_attributes: int) -> None:
        """FileBasicInformation (MS-FSA 2.1.5.14.2): times 0/-1/-2 leave the value alone;
        attributes 0 leave them alone."""
        if not o.granted_access & FILE_WRITE_ATTRIBUTES:
            raise fail(STATUS_ACCESS_DENIED, "no FILE_WRITE_ATTRIBUTES")
        if o.share.read_only:
            raise fail(STATUS_ACCESS_DENIED, "read-only share")
        if file_attributes & FILE_ATTRIBUTE_DIRECTORY and not o.is_directory:
            raise fail(STATUS_INVALID_PARAMETER, "DIRECTORY attribute on a file")
        if file_attributes & FILE_ATTRIBUTE_TEMPORARY and o.is_directory:
            raise fail(STATUS_INVALID_PARAMETER, "TEMPORARY attribute on a directory")
        if file_attributes & ~(SETTABLE_ATTRIBUTES | FILE_ATTRIBUTE_DIRECTORY | FILE_ATTRIBUTE_NORMAL | 0x7FFFF):
            raise fail(STATUS_INVALID_PARAMETER, "bad attributes")
        skip = (0, FILETIME_SUSPEND, FILETIME_RESUME)
        with o.io_lock:
            if o.closed:
                raise fail(STATUS_FILE_CLOSED)
            p = fd_path(o.fd)
            try:
                st = os.fstat(o.fd)
                stored, ctime = read_dosinfo(p)
                new_ctime = ctime if creation_time in skip else creation_time
                if file_attributes:
                    a = file_attributes & SETTABLE_ATTRIBUTES
                    if stored is not None and not o.is_directory:
                        a |= stored & FILE_ATTRIBUTE_SPARSE_FILE  # only FSCTL_SET_SPARSE changes it
                    write_dosinfo(p, a, new_ctime or to_filetime(min(st.st_mtime_ns, st.st_ctime_ns)),
                                  o.is_directory)
                    if not o.is_directory:
                        mode = stat_mod.S_IMODE(st.st_mode)
                        if a & FILE_ATTRIBUTE_READONLY:
                            mode &= ~0o222
                        elif not mode & stat_mod.S_IWUSR:
                            mode |= stat_mod.S_IWUSR
                        if mode != stat_mod.S_IMODE(st.st_mode):
                            os.chmod(p, mode)
                elif creation_time not in skip:
                    default = (stored if stored is not None else
                               (0 if o.is_directory else FILE_ATTRIBUTE_ARCHIVE))
                    write_dosinfo(p, default, creation_time, o.is_directory)
                at = None if last_access_time in skip else from_filetime(last_access_time)
                wt = None if last_write_time in skip else from_filetime(last_write_time)
                if at is not None or wt is not None:
                    st = os.fstat(o.fd)
                    os.utime(p, ns=(st.st_atime_ns if at is None else at, st.st_mtime_ns if wt is None else wt))
                if wt is not None:
                    o.user_set_write_time = wt
                if change_time not in skip:
                    o.user_set_change_time = True
                    with self.mutex:
                        o.file.change_time_override = (change_time, os.fstat(o.fd).st_ctime_ns)
                else:
                    self._keep_user_times(o, restore_write=False)
            except OSError as e:
                raise from_oserror(e) from None

    def set_eas(self, o: Open, eas: list) -> None:
        """FileFullEaInformation set (MS-FSA 2.1.5.14.4)."""
        if not o.granted_access & FILE_WRITE_EA:
            raise fail(STATUS_ACCESS_DENIED, "no FILE_WRITE_EA")
        if o.share.read_only:
            raise fail(STATUS_ACCESS_DENIED, "read-only share")
        with o.io_lock:
            if o.closed:
                raise fail(STATUS_FILE_CLOSED)
            try:
                write_eas(fd_path(o.fd), eas)
            except OSError as e:
                raise from_oserror(e) from None

    def query_eas(self, o: Open, names: list[str], restart: bool, single: bool, index: int | None,
                  max_len: int) -> bytes:
        """FileFullEaInformation query (MS-FSA 2.1.5.11.6 / MS-SMB2 3.3.5.20.1): the EAs
        named in *names* (missing ones with an empty value), or all of them from
        Open.CurrentEaIndex on."""
        if not o.granted_access & FILE_READ_EA:
            raise fail(STATUS_ACCESS_DENIED, "no FILE_READ_EA")
        with o.io_lock:
            if o.closed:
                raise fail(STATUS_FILE_CLOSED)
            try:
                have = read_eas(fd_path(o.fd))
            except OSError as e:
                raise from_oserror(e) from None
        if names:
            by = {ea.name: ea for ea in have}
            chosen = [by.get(n, Ea(n, b"")) for n in names]
            data, n = pack_eas(chosen, max_len)
            if n < len(chosen):
                raise fail(STATUS_BUFFER_OVERFLOW_ if n else STATUS_BUFFER_TOO_SMALL_)
            return data
        if not have:
            raise fail(STATUS_NO_EAS_ON_FILE)
        if restart:
            o.current_ea_index = 0
        if index is not None:
            o.current_ea_index = max(0, index - 1)
        rest = have[o.current_ea_index:]
        if not rest:
            raise fail(STATUS_NO_MORE_EAS)
        data, n = pack_eas(rest[:1] if single else rest, max_len)
        if n == 0:
            raise fail(STATUS_BUFFER_TOO_SMALL_)
        o.current_ea_index += n
        return data

    def _keep_user_times(self, o: Open, restore_write: bool = True) -> None:
        """After a change made through *o*: put back the times its client set (MS-FSA
        UserSetModificationTime / UserSetChangeTime).  Caller holds o.io_lock."""
        if restore_write and o.user_set_write_time is not None:
            st = os.fstat(o.fd)
            if st.st_mtime_ns != o.user_set_write_time:
                os.utime(fd_path(o.fd), ns=(st.st_atime_ns, o.user_set_write_time))
        if o.user_set_change_time:
            with self.mutex:
                ov = o.file.change_time_override
                if ov is not None:
                    o.file.change_time_override = (ov[0], os.fstat(o.fd).st_ctime_ns)

    def set_end_of_file(self, o: Open, size: int) -> None:
        """FileEndOfFileInformation (MS-FSA 2.1.5.14.5)."""
        if o.is_directory:
            raise fail(STATUS_INVALID_PARAMETER, "end of file of a directory")
        if not o.granted_access & FILE_WRITE_DATA:
            raise fail(STATUS_ACCESS_DENIED, "no FILE_WRITE_DATA")
        if size > 0x7FFFFFFFFFFFFFFF:
            raise fail(STATUS_INVALID_PARAMETER, "EndOfFile too large")
        with o.io_lock:
            if o.closed:
                raise fail(STATUS_FILE_CLOSED)
            if o.stream is not None:
                try:
                    cur = read_stream(fd_path(o.fd), o.stream)
                    write_stream(fd_path(o.fd), o.stream, cur[:size] + b"\0" * max(0, size - len(cur)))
                except OSError as e:
                    raise from_oserror(e) from None
                return
            try:
                os.ftruncate(o.fd, size)
                self._keep_user_times(o)
            except OSError as e:
                raise from_oserror(e) from None

    def set_allocation(self, o: Open, size: int) -> None:
        """FileAllocationInformation (MS-FSA 2.1.5.14.1): shrinking below EndOfFile
        truncates; growing reserves blocks without changing EndOfFile."""
        if o.is_directory:
            raise fail(STATUS_INVALID_PARAMETER, "allocation of a directory")
        if not o.granted_access & FILE_WRITE_DATA:
            raise fail(STATUS_ACCESS_DENIED, "no FILE_WRITE_DATA")
        with o.io_lock:
            if o.closed:
                raise fail(STATUS_FILE_CLOSED)
            if o.stream is not None:
                try:
                    cur = read_stream(fd_path(o.fd), o.stream)
                    if size < len(cur):
                        write_stream(fd_path(o.fd), o.stream, cur[:size])
                except OSError as e:
                    raise from_oserror(e) from None
                return
            try:
                st = os.fstat(o.fd)
                if size < st.st_size:
                    os.ftruncate(o.fd, size)
                if size > allocated_bytes(o.fd, st):
                    reserve(o.fd, size)
                else:  # give back blocks reserved beyond EOF (a shrinking truncate frees them;
                    # ext4 does not punch holes past EOF), then reserve up to *size* again
                    eof = min(size, st.st_size)
                    os.ftruncate(o.fd, eof + 1)
                    os.ftruncate(o.fd, eof)
                    if size > eof:
                        reserve(o.fd, size)
                self._keep_user_times(o)
            except OSError as e:
                raise from_oserror(e) from None

    def set_position(self, o: Open, offset: int) -> None:
        """FilePositionInformation (MS-FSA 2.1.5.14.9)."""
        if offset > 0x7FFFFFFFFFFFFFFF:
            raise fail(STATUS_INVALID_PARAMETER, "position")
        o.current_offset = offset

    def set_mode(self, o: Open, mode: int) -> None:
        """FileModeInformation (MS-FSA 2.1.5.14.8): only the buffering hints may change."""
        if mode & ~(FILE_WRITE_THROUGH | FILE_SEQUENTIAL_ONLY | FILE_NO_INTERMEDIATE_BUFFERING):
            raise fail(STATUS_INVALID_PARAMETER, f"Mode 0x{mode:x}")
        o.mode = (o.mode & ~0xE) | mode
