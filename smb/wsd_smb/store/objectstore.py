"""The object store: opens, share modes, delete-on-close, I/O, rename, byte-range
locks and directory enumeration over real directories (MS-FSA 2.1.5 semantics,
as far as an SMB2 server needs them).

Blocking code (it does OS I/O): the SMB2 core runs it in a thread pool.  One store lock
(``ObjectStore.mutex``) guards the open table, the per-file state (opens, share modes,
delete-pending, locks, waiting lock requests); each open has an ``io_lock`` held around
its OS I/O and its close, so an fd is never closed under a running read.  Lock order:
``open.io_lock`` before ``store.mutex``.
"""
from __future__ import annotations

import itertools
import logging
import os
import stat as stat_mod
import threading
from collections import OrderedDict

from .attrs import FileStat, allocated_bytes, fd_path, file_stat
from .constants import (
    DATA_ACCESS_BITS,
    DELETE,
    FILE_ALL_ACCESS,
    FILE_APPEND_DATA,
    FILE_EXECUTE,
    FILE_GENERIC_EXECUTE,
    FILE_GENERIC_READ,
    FILE_READ_DATA,
    FILE_SHARE_DELETE,
    FILE_SHARE_READ,
    FILE_SHARE_WRITE,
    FILE_WRITE_DATA,
)
from ..ntstatus import NtStatusError
from .errors import STATUS_FILE_CLOSED, STATUS_RANGE_NOT_LOCKED, WouldBlock, fail
from .paths import Share, resolve
from .streams import read_stream, remove_stream
from .security import Descriptor
from .create import CreateMixin
from .fileinfo import FileInfoMixin
from .lockops import LockMixin
from .objects import CreateResult, DirSearch, FileObject, Open, PendingLock  # noqa: F401  (the public records)
from .querydir import QueryDirectoryMixin
from .readwrite import ReadWriteMixin
from .rename import RenameMixin
from .secinfo import SecurityInfoMixin
from .sparse import SparseMixin

log = logging.getLogger("wsd_smb.store")


class ObjectStore(CreateMixin, ReadWriteMixin, FileInfoMixin, SecurityInfoMixin, RenameMixin, LockMixin,
                  QueryDirectoryMixin, SparseMixin):
    """The object store for all shares of a server.  ``opens`` is the global open table
    (by FileId.Volatile); ``by_persistent`` indexes it by FileId.Persistent."""

    def __init__(self) -> None:
        self.mutex = threading.RLock()
        self._inline_ok: dict[str, bool] = {}  # share path -> cached-only attempts make sense there
        self.opens: dict[int, Open] = {}
        self.by_persistent: dict[int, Open] = {}
        self.files: dict[tuple[int, int], FileObject] = {}
        self._ids = itertools.count(1)
        # persistent ids differ from volatile ones so that a client mixing them up fails
        self._pids = itertools.count(0x1000_0001)
        #: (st_dev, st_ino) -> (st_ctime_ns, stored Descriptor or None): whether a file has
        #: a stored security descriptor, without an xattr read per open.  A setxattr moves
        #: ctime; the store's own SD writes update the entry explicitly (ctime is coarse).
        self._sd_cache: dict[tuple[int, int], tuple[int, Descriptor | None]] = {}
        #: (st_dev, st_ino) -> FileObject.change_time_override of files nobody has open any
        #: more: a ChangeTime a client set stays reported after the last close, for as long
        #: as the inode's ctime has not moved (bounded; lost on restart: Linux cannot store it)
        self._kept_change_times: OrderedDict[tuple[int, int], tuple[int, int]] = OrderedDict()

    # ------------------------------------------------------------------ helpers
    def get(self, volatile: int, persistent: int | None = None) -> Open:
        o = self.opens.get(volatile)
        if o is None or o.closed or (persistent is not None and o.file_id_persistent != persistent):
            raise fail(STATUS_FILE_CLOSED)
        return o

    @staticmethod
    def _max_allowed(share: Share, readonly_file: bool) -> int:
        access = FILE_ALL_ACCESS
        if share.read_only:
            access = FILE_GENERIC_READ | FILE_GENERIC_EXECUTE
        if readonly_file:
            access &= ~(FILE_WRITE_DATA | FILE_APPEND_DATA)
        return access

    @staticmethod
    def _share_conflict(opens: list[Open], access: int, share_access: int) -> bool:
        """MS-FSA 2.1.5.1.2.1 check sharing access (opens without data access take no part)."""
        if not access & DATA_ACCESS_BITS:
            return False
        for o in opens:
            oa = o.granted_access
            if not oa & DATA_ACCESS_BITS:
                continue
            if oa & (FILE_READ_DATA | FILE_EXECUTE) and not share_access & FILE_SHARE_READ:
                return True
            if oa & (FILE_WRITE_DATA | FILE_APPEND_DATA) and not share_access & FILE_SHARE_WRITE:
                return True
            if oa & DELETE and not share_access & FILE_SHARE_DELETE:
                return True
            if access & (FILE_READ_DATA | FILE_EXECUTE) and not o.share_access & FILE_SHARE_READ:
                return True
            if access & (FILE_WRITE_DATA | FILE_APPEND_DATA) and not o.share_access & FILE_SHARE_WRITE:
                return True
            if access & DELETE and not o.share_access & FILE_SHARE_DELETE:
                return True
        return False

    def _stat_of(self, o: Open, eas: bool = True) -> FileStat:
        """*eas*: also read the EAs for FileStat.ea_size (a CREATE or CLOSE response does
        not carry it: one flistxattr and a getxattr per EA fewer)."""
        st = os.fstat(o.fd)
        fs = file_stat(st, o.file.rel[-1] if o.file.rel else "", o.fd, o.share.hide_dot_files, eas=eas,
                       hide_files=o.share.hide_files)
        if o.stream is not None:  # a named stream: its own size, no directory
            size = len(read_stream(fd_path(o.fd), o.stream))
            fs.end_of_file, fs.allocation_size = size, (size + 4095) & ~4095
            fs.is_directory = False
            fs.number_of_links = st.st_nlink if not stat_mod.S_ISDIR(st.st_mode) else 1
            return o.file.apply_overrides(st, fs)
        if not fs.is_directory:
            fs.allocation_size = allocated_bytes(o.fd, st)
        return o.file.apply_overrides(st, fs)

    # ------------------------------------------------------------------ CLOSE
    def close(self, o: Open, postquery: bool = False, cached_only: bool = False) -> FileStat | None:
        """Close an open (MS-FSA 2.1.5.4): drop its locks (waking waiters), fail its
        waiting lock requests, and on the last close of a delete-pending file unlink it.
        Returns the file's attributes before the close if *postquery*.

        *cached_only* (an attempt on the event loop): only the close of a read-only fd
        (no data to flush) of a file on a local file system that nobody is deleting,
        and only if no worker holds the open's or the store's lock; anything else raises
        :class:`WouldBlock` before any change is made."""
        if cached_only:
            if o.fd_writable or o.stream is not None or not self.inline_ok(o.share):
                raise WouldBlock()
            if not o.io_lock.acquire(blocking=False):
                raise WouldBlock()
            if not self.mutex.acquire(blocking=False):
                o.io_lock.release()
                raise WouldBlock()
            try:
                if o.delete_on_close or o.file.delete_pending:
                    raise WouldBlock()
                info, wake = self._close_locked(o, postquery)
            finally:
                self.mutex.release()
                o.io_lock.release()
        else:
            with o.io_lock:
                with self.mutex:
                    info, wake = self._close_locked(o, postquery)
        for p, status in wake:
            p.on_complete(status)
        return info

    def _close_locked(self, o: Open, postquery: bool) -> tuple[FileStat | None, list]:
        """The close itself; the caller holds ``o.io_lock`` and the store's mutex and, after
        releasing them, completes the returned waiting lock requests."""
        wake: list[tuple[PendingLock, int]] = []
        if o.closed:
            raise fail(STATUS_FILE_CLOSED)
        info = None
        if postquery:
            try:
                info = self._stat_of(o, eas=False)  # for the CLOSE response: no EaSize
            except OSError:
                info = None
        o.closed = True
        fobj = o.file
        for p in list(o.pending_locks):
            if not p.done:
                p.done = True
                wake.append((p, STATUS_RANGE_NOT_LOCKED))
            if p in fobj.waiters:
                fobj.waiters.remove(p)
        o.pending_locks.clear()
        had_locks = any(lk.owner is o for lk in fobj.locks)
        fobj.locks = [lk for lk in fobj.locks if lk.owner is not o]
        if o.delete_on_close:
            fobj.delete_pending = True
        fobj.opens.remove(o)
        self.opens.pop(o.file_id_volatile, None)
        self.by_persistent.pop(o.file_id_persistent, None)
        try:
            os.close(o.fd)
        except OSError as e:
            log.warning("close(%d) of %s: %s", o.fd, fobj.path, e)
        if not fobj.opens:
            if fobj.delete_pending and fobj.stream is None and self._streams_open(fobj.key):
                pass  # the file goes when its last open stream closes (kept delete-pending)
            else:
                if fobj.delete_pending:
                    self._unlink(fobj)
                elif fobj.change_time_override is not None and fobj.stream is None:
                    self.keep_change_time(fobj.key, fobj.change_time_override)
                self.files.pop(fobj.key, None)
            if fobj.stream is not None:
                base = self.files.get(fobj.key[:2])
                if base is not None and not base.opens and base.delete_pending \
                        and not self._streams_open(base.key):
                    self._unlink(base)
                    self.files.pop(base.key, None)
        elif had_locks:
            wake += self._retry_waiters(fobj)
        return info, wake

    _KEPT_CHANGE_TIMES_MAX = 4096

    def keep_change_time(self, key: tuple, override: tuple[int, int]) -> None:
        """Remember a set ChangeTime of a file whose last open closes (store mutex held)."""
        kept = self._kept_change_times
        kept[key] = override
        kept.move_to_end(key)
        while len(kept) > self._KEPT_CHANGE_TIMES_MAX:
            kept.popitem(last=False)

    def kept_change_time(self, key: tuple, st: os.stat_result) -> tuple[int, int] | None:
        """The kept ChangeTime override of *key* if its ctime is still *st*'s (mutex held)."""
        ov = self._kept_change_times.get(key)
        if ov is not None and ov[1] != st.st_ctime_ns:
            del self._kept_change_times[key]
            return None
        return ov

    def _streams_open(self, key: tuple) -> bool:
        """Does any named stream of the file *key* (dev, ino) have opens?"""
        return any(len(k) == 3 and k[:2] == key and f.opens for k, f in self.files.items())

    def _unlink(self, fobj: FileObject) -> None:
        if fobj.stream is not None:
            try:
                with resolve(fobj.share, list(fobj.rel), follow_last=False) as r:
                    if r.exists and (r.st.st_dev, r.st.st_ino) == fobj.key[:2]:
                        fd = os.open(r.name if r.name else ".", os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
                                     dir_fd=r.parent_fd) if r.parent_fd is not None else fobj.share.open_root()
                        try:
                            remove_stream(fd_path(fd), fobj.stream)
                        finally:
                            os.close(fd)
            except (OSError, NtStatusError) as e:
                log.warning("delete-on-close of stream %s failed: %s", fobj.path, e)
            return
        if not fobj.rel:
            log.warning("share %s: refusing to delete the share root", fobj.share.name)
            return
        self._sd_cache.pop(fobj.key, None)
        try:
            with resolve(fobj.share, list(fobj.rel), follow_last=False) as r:
                if not r.exists or (r.st.st_dev, r.st.st_ino) != fobj.key:
                    log.warning("delete-on-close: %s changed on disk, not deleted", fobj.path)
                    return
                if fobj.is_directory:
                    if fobj.share.delete_veto_files and fobj.share.veto_files is not None:
                        self._remove_vetoed(fobj.share, r.parent_fd, r.name)
                    os.rmdir(r.name, dir_fd=r.parent_fd)
                else:
                    os.unlink(r.name, dir_fd=r.parent_fd)
        except OSError as e:
            log.warning("delete-on-close of %s failed: %s", fobj.path, e)
        except NtStatusError as e:  # from resolve
            log.warning("delete-on-close of %s: %s", fobj.path, e)

    @staticmethod
    def directory_not_empty(share: Share, dir_fd: int) -> bool:
        """Does the directory *dir_fd* hold anything that stops its deletion?  With
        ``delete_veto_files`` (Samba's ``delete veto files``) vetoed names do not count:
        they are removed with the directory (:meth:`_remove_vetoed`)."""
        veto = share.veto_files if share.delete_veto_files else None
        with os.scandir(dir_fd) as it:
            for entry in it:
                if veto is None or not veto.match(entry.name):
                    return True
        return False

    def _remove_vetoed(self, share: Share, parent_fd: int, name: str) -> None:
        """Before the directory *name* (in *parent_fd*) is removed: if it holds vetoed
        names only, remove them (a vetoed directory with all its contents, walked by fd
        without following symlinks); else leave it, the rmdir then fails as not empty."""
        veto = share.veto_files
        dfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent_fd)
        try:
            names = os.listdir(dfd)
            if any(not veto.match(n) for n in names):
                return
            for n in names:
                st = os.stat(n, dir_fd=dfd, follow_symlinks=False)
                if stat_mod.S_ISDIR(st.st_mode):
                    for _top, dirs, files, fd in os.fwalk(n, dir_fd=dfd, topdown=False, follow_symlinks=False):
                        for f in files:
                            os.unlink(f, dir_fd=fd)
                        for d in dirs:
                            try:
                                os.rmdir(d, dir_fd=fd)
                            except NotADirectoryError:  # a symlink to a directory
                                os.unlink(d, dir_fd=fd)
                    os.rmdir(n, dir_fd=dfd)
                else:
                    os.unlink(n, dir_fd=dfd)
                log.info("event=delete_veto_file share=%s dir=%s name=%s", share.name, name, n)
        finally:
            os.close(dfd)

    def close_all(self, opens: list[Open]) -> None:
        """Close opens (tree disconnect, logoff); already closed ones are skipped."""
        for o in opens:
            try:
                self.close(o)
            except NtStatusError:
                pass
