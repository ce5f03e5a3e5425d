"""QUERY_DIRECTORY in the object store (MS-FSA 2.1.5.5): searches, patterns, restarts and
resume positions over real directories."""
from __future__ import annotations

import errno
import logging
import os
import stat as stat_mod
from typing import Any, Callable

from .attrs import FileStat, fd_path, file_stat
from .constants import (
    FILE_LIST_DIRECTORY,
    SMB2_REOPEN,
    SMB2_RESTART_SCANS,
    SMB2_RETURN_SINGLE_ENTRY,
)
from .errors import (
    STATUS_ACCESS_DENIED,
    STATUS_FILE_CLOSED,
    STATUS_INFO_LENGTH_MISMATCH,
    STATUS_INVALID_PARAMETER,
    STATUS_NO_MORE_FILES,
    STATUS_NO_SUCH_FILE,
    fail,
    from_oserror,
)
from ..ntstatus import NtStatusError
from .namepolicy import ABE_READ_ACCESS
from .paths import resolve
from .security import Token, access_check
from .wildcard import is_name_in_expression

from .objects import DirSearch, Open, _entry_allocation, entry_size

log = logging.getLogger("wsd_smb.store")


class QueryDirectoryMixin:
    """Directory enumeration of the object store (mixed into :class:`~.objectstore.ObjectStore`)."""

    # ------------------------------------------------------------------ QUERY_DIRECTORY
    def query_directory(self, o: Open, flags: int, pattern: str, max_output: int,
                        build: Callable[[str, FileStat], Any], min_entry: int,
                        token: Token | None = None) -> list[Any]:
        """Enumerate (MS-FSA 2.1.5.6.3, MS-SMB2 3.3.5.18).  *build(name, stat)* makes an
        entry structure; entries are packed by the caller, which tells us through
        *max_output* how many bytes fit (entries are 8-byte aligned).  Returns the list of
        entries for this call; raises STATUS_NO_SUCH_FILE (first call, no match),
        STATUS_NO_MORE_FILES (end), STATUS_INFO_LENGTH_MISMATCH (buffer below one entry).

        Namespace policy (store/namepolicy.py): names matching the share's ``veto_files``
        are never listed; on a share with ``hide_unreadable``
        (Share.DoAccessBasedDirectoryEnumeration, MS-SMB2 3.3.5.18) an entry whose stored
        security descriptor does not grant *token* ABE_READ_ACCESS is left out ("." and
        ".." and entries without a stored descriptor are listed)."""
        if not o.is_directory:
            raise fail(STATUS_INVALID_PARAMETER, "QUERY_DIRECTORY on a file")
        if not o.granted_access & FILE_LIST_DIRECTORY:
            raise fail(STATUS_ACCESS_DENIED, "no FILE_LIST_DIRECTORY")
        if max_output < min_entry:
            raise fail(STATUS_INFO_LENGTH_MISMATCH, "output buffer smaller than an entry")
        with o.io_lock:
            if o.closed:
                raise fail(STATUS_FILE_CLOSED)
            s = o.search
            if s is None or flags & (SMB2_RESTART_SCANS | SMB2_REOPEN):
                if s is not None and not pattern:
                    pattern = s.pattern
                try:
                    names = sorted(os.listdir(o.fd), key=lambda n: (n.casefold(), n))
                except OSError as e:
                    raise from_oserror(e) from None
                veto = o.share.veto_files
                if veto is not None:
                    names = [n for n in names if not veto.match(n)]
                s = o.search = DirSearch(pattern or "*", [".", ".."] + names)
            out: list[Any] = []
            used = 0
            abe = token if o.share.hide_unreadable else None
            while s.index < len(s.names):
                name = s.names[s.index]
                if not is_name_in_expression(name, s.pattern):
                    s.index += 1
                    continue
                st = self._entry_stat(o, name)
                if st is None or (abe is not None and not self._abe_visible(o, name, abe)):
                    s.index += 1
                    continue
                entry = build(name, st)
                size = entry_size(entry)
                start = used + ((-used) % 8) if out else 0
                if start + size > max_output:
                    if not out:
                        raise fail(STATUS_INFO_LENGTH_MISMATCH, "entry larger than the output buffer")
                    break
                out.append(entry)
                used = start + size
                s.index += 1
                if flags & SMB2_RETURN_SINGLE_ENTRY:
                    break
            if not out:
                raise fail(STATUS_NO_MORE_FILES if s.returned_any else STATUS_NO_SUCH_FILE)
            s.returned_any = True
            return out

    def _abe_visible(self, o: Open, name: str, token: Token) -> bool:
        """Access-based enumeration (MS-SMB2 3.3.5.18, Samba ``hide unreadable``): does the
        entry *name*'s stored descriptor grant *token* ABE_READ_ACCESS?  "." and "..", and
        entries without a stored descriptor (the share's default rules: everyone may read),
        are visible; one that vanished meanwhile is not."""
        if name in (".", ".."):
            return True
        path = f"{fd_path(o.fd)}/{name}"
        try:
            st = os.stat(path)
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                return False
            raise from_oserror(e) from None
        sd = self._stored_sd(path, st)
        return sd is None or not access_check(sd, token, ABE_READ_ACCESS)

    def _entry_stat(self, o: Open, name: str) -> FileStat | None:
        """Stat of a directory entry as enumeration reports it (symlinks followed inside
        the share; dangling or escaping ones, and non-UTF-16-able names, are skipped)."""
        try:
            name.encode("utf-16-le")
        except UnicodeEncodeError:
            return None
        hide = o.share.hide_dot_files
        hf = o.share.hide_files
        try:
            if name == "." or (name == ".." and not o.file.rel):
                st = os.fstat(o.fd)
                fs = file_stat(st, name, fd_path(o.fd), hide, hide_files=hf)
            elif name == "..":
                st = os.stat("..", dir_fd=o.fd)
                fs = file_stat(st, "..", f"{fd_path(o.fd)}/..", hide, hide_files=hf)
            else:
                st = os.stat(name, dir_fd=o.fd, follow_symlinks=False)
                if stat_mod.S_ISLNK(st.st_mode):
                    try:
                        with resolve(o.share, o.file.rel + [name]) as r:
                            if not r.exists or stat_mod.S_ISLNK(r.st.st_mode):
                                return None
                            st = r.st
                            xp = f"{fd_path(r.parent_fd)}/{r.name}" if r.parent_fd is not None else None
                            fs = file_stat(st, name, xp, hide, False, hide_files=hf)
                            if r.parent_fd is not None:
                                fs.allocation_size = _entry_allocation(r.parent_fd, r.name, st)
                    except NtStatusError:
                        return None
                elif stat_mod.S_ISREG(st.st_mode) or stat_mod.S_ISDIR(st.st_mode):
                    fs = file_stat(st, name, f"{fd_path(o.fd)}/{name}", hide, False, hide_files=hf)
                    fs.allocation_size = _entry_allocation(o.fd, name, st)
                else:
                    return None
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                return None
            raise from_oserror(e) from None
        with self.mutex:
            fobj = self.files.get((st.st_dev, st.st_ino))
            if fobj is not None:
                fs = fobj.apply_overrides(st, fs)
            else:
                ov = self.kept_change_time((st.st_dev, st.st_ino), st)
                if ov is not None:
                    fs.change_time = ov[0]
        return fs
