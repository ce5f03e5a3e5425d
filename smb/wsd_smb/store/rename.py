"""Delete-on-close and rename in the object store (MS-FSA 2.1.5.14.3 FileDispositionInformation,
2.1.5.14.11 FileRenameInformation): the disposition, the sharing rule of the target directory,
the access checks of stored descriptors, renames of named streams."""
from __future__ import annotations

import logging
import os
import stat as stat_mod

from .attrs import fd_path, read_dosinfo
from .constants import (
    FILE_DELETE_CHILD,
    DELETE,
    FILE_ADD_FILE,
    FILE_ADD_SUBDIRECTORY,
    FILE_ALL_ACCESS,
    FILE_ATTRIBUTE_READONLY,
    FILE_SHARE_READ,
    FILE_SHARE_WRITE,
    SYNCHRONIZE,
)
from .errors import (
    STATUS_ACCESS_DENIED,
    STATUS_CANNOT_DELETE,
    STATUS_DELETE_PENDING,
    STATUS_DIRECTORY_NOT_EMPTY,
    STATUS_FILE_CLOSED,
    STATUS_INVALID_PARAMETER,
    STATUS_OBJECT_NAME_COLLISION,
    STATUS_OBJECT_NAME_INVALID,
    STATUS_OBJECT_NAME_NOT_FOUND,
    STATUS_SHARING_VIOLATION,
    fail,
    from_oserror,
)
from .namepolicy import check_veto
from .paths import Resolved, resolve, split_name, split_name_stream
from .streams import find_stream, read_stream, remove_stream, write_stream
from .security import (
    Token,
    maximum_allowed,
)

from .objects import Open, STATUS_NOT_SUPPORTED_

log = logging.getLogger("wsd_smb.store")


class RenameMixin:
    """Disposition and rename of the object store (mixed into :class:`~.objectstore.ObjectStore`)."""

    def set_disposition(self, o: Open, delete: bool) -> None:
        """FileDispositionInformation (MS-FSA 2.1.5.14.3)."""
        if not o.granted_access & DELETE:
            raise fail(STATUS_ACCESS_DENIED, "no DELETE access")
        if o.share.read_only:
            raise fail(STATUS_ACCESS_DENIED, "read-only share")
        with o.io_lock, self.mutex:
            if o.closed:
                raise fail(STATUS_FILE_CLOSED)
            fobj = o.file
            if not delete:
                fobj.delete_pending = False
                o.delete_on_close = False
                return
            if not fobj.rel:
                raise fail(STATUS_CANNOT_DELETE, "share root")
            st = os.fstat(o.fd)
            if not fobj.is_directory and not st.st_mode & stat_mod.S_IWUSR:
                raise fail(STATUS_CANNOT_DELETE, "FILE_ATTRIBUTE_READONLY")
            if fobj.is_directory and (read_dosinfo(fd_path(o.fd))[0] or 0) & FILE_ATTRIBUTE_READONLY:
                # MS-FSA 2.1.5.14.3: READONLY blocks delete, a directory's too
                raise fail(STATUS_CANNOT_DELETE, "FILE_ATTRIBUTE_READONLY directory")
            if fobj.is_directory:
                try:
                    not_empty = self.directory_not_empty(o.share, o.fd)
                except OSError as e:
                    raise from_oserror(e) from None
                if not_empty:
                    raise fail(STATUS_DIRECTORY_NOT_EMPTY, fobj.path)
            fobj.delete_pending = True

    def set_disposition_ex(self, o: Open, flags: int) -> None:
        """FileDispositionInformationEx (MS-FSCC 2.4.12): DELETE [| ON_CLOSE] [| IGNORE_READONLY]."""
        from .constants import (
            FILE_DISPOSITION_DELETE,
            FILE_DISPOSITION_IGNORE_READONLY_ATTRIBUTE,
            FILE_DISPOSITION_ON_CLOSE,
        )

        if flags & ~0x1F:
            raise fail(STATUS_INVALID_PARAMETER, f"disposition flags 0x{flags:x}")
        if flags & FILE_DISPOSITION_ON_CLOSE:
            if not o.granted_access & DELETE:
                raise fail(STATUS_ACCESS_DENIED, "no DELETE access")
            o.delete_on_close = bool(flags & FILE_DISPOSITION_DELETE)
            return
        if flags & FILE_DISPOSITION_DELETE and flags & FILE_DISPOSITION_IGNORE_READONLY_ATTRIBUTE:
            with o.io_lock:
                st = os.fstat(o.fd)
                if not o.is_directory and not st.st_mode & stat_mod.S_IWUSR:
                    os.chmod(fd_path(o.fd), stat_mod.S_IMODE(st.st_mode) | stat_mod.S_IWUSR)
        # FILE_DISPOSITION_POSIX_SEMANTICS: the name still goes at the last close here
        self.set_disposition(o, bool(flags & FILE_DISPOSITION_DELETE))

    def rename(self, o: Open, new_name: str, replace_if_exists: bool) -> None:
        """FileRenameInformation (MS-FSA 2.1.5.14.11): *new_name* is share-relative."""
        if not o.granted_access & DELETE:
            raise fail(STATUS_ACCESS_DENIED, "no DELETE access")
        if o.share.read_only:
            raise fail(STATUS_ACCESS_DENIED, "read-only share")
        if new_name.startswith(":"):
            return self._rename_stream(o, new_name, replace_if_exists)
        if o.stream is not None:
            raise fail(STATUS_INVALID_PARAMETER, "a stream can only be renamed to another stream")
        parts = split_name(new_name, leading_separator_ok=True)
        if not parts:
            raise fail(STATUS_OBJECT_NAME_INVALID, "empty target name")
        if o.share.veto_files is not None:  # a vetoed name cannot be a rename target (namepolicy.py)
            check_veto(o.share.veto_files, parts)
        with o.io_lock, self.mutex:
            if o.closed:
                raise fail(STATUS_FILE_CLOSED)
            fobj = o.file
            if not fobj.rel:
                raise fail(STATUS_ACCESS_DENIED, "cannot rename the share root")
            if fobj.delete_pending:
                raise fail(STATUS_DELETE_PENDING, fobj.path)
            if fobj.is_directory:
                prefix = fobj.rel
                for other in self.files.values():
                    if other is not fobj and other.share.path == fobj.share.path and other.rel[:len(prefix)] == prefix:
                        raise fail(STATUS_ACCESS_DENIED, "a file below the directory is open")
            with resolve(o.share, parts, follow_last=False) as dst, \
                    resolve(o.share, list(fobj.rel), follow_last=False) as src:
                if not src.exists or (src.st.st_dev, src.st.st_ino) != fobj.key:
                    raise fail(STATUS_OBJECT_NAME_NOT_FOUND, "source changed on disk")
                self._check_rename_target_directory(dst.parent_fd, fobj.is_directory)
                same_file = dst.exists and (dst.st.st_dev, dst.st.st_ino) == fobj.key
                if o.token is not None and not same_file:
                    self._check_rename_target(o.token, dst, fobj.is_directory)
                if dst.exists and not same_file:
                    if not replace_if_exists:
                        raise fail(STATUS_OBJECT_NAME_COLLISION, "\\".join(dst.rel))
                    if stat_mod.S_ISDIR(dst.st.st_mode):
                        raise fail(STATUS_ACCESS_DENIED, "target is a directory")
                    tobj = self.files.get((dst.st.st_dev, dst.st.st_ino))
                    if tobj is not None and tobj.opens:
                        raise fail(STATUS_ACCESS_DENIED, "target is open")
                    if not stat_mod.S_ISLNK(dst.st.st_mode) and not dst.st.st_mode & stat_mod.S_IWUSR:
                        raise fail(STATUS_ACCESS_DENIED, "target is read-only")
                target_name = parts[-1] if not dst.exists or same_file else dst.name
                try:
                    os.rename(src.name, target_name, src_dir_fd=src.parent_fd, dst_dir_fd=dst.parent_fd)
                except OSError as e:
                    raise from_oserror(e) from None
                fobj.rel = dst.rel[:-1] + [target_name]
                for oo in fobj.opens:
                    oo.path_name = fobj.path

    def _check_rename_target(self, token: Token, dst: Resolved, is_dir: bool) -> None:
        """MS-FSA 2.1.5.14.11: the target directory must allow adding the entry
        (FILE_ADD_FILE / FILE_ADD_SUBDIRECTORY), and a file being replaced must allow
        DELETE (or its directory FILE_DELETE_CHILD).  Stored descriptors only."""
        assert dst.parent_fd is not None
        try:
            pst = os.fstat(dst.parent_fd)
        except OSError as e:
            raise from_oserror(e) from None
        psd = self._stored_sd(dst.parent_fd, pst)
        pmax = FILE_ALL_ACCESS if psd is None else maximum_allowed(psd, token)
        need = FILE_ADD_SUBDIRECTORY if is_dir else FILE_ADD_FILE
        if need & ~pmax:
            raise fail(STATUS_ACCESS_DENIED, "the target directory denies adding the entry")
        if dst.exists and not pmax & FILE_DELETE_CHILD:
            tsd = self._stored_sd(dst, dst.st)
            if tsd is not None and not maximum_allowed(tsd, token) & DELETE:
                raise fail(STATUS_ACCESS_DENIED, "the file to replace denies DELETE")

    def _check_rename_target_directory(self, parent_fd: int, is_directory: bool) -> None:
        """The sharing rule of a rename for the directory that receives the new name.

        Windows' I/O manager opens the target's parent directory (IO_OPEN_TARGET_DIRECTORY)
        before it hands a FileRenameInformation to the file system (MS-FSA 2.1.5.14.11,
        2.1.5.15.11 in later editions, DestinationDirectory): DesiredAccess FILE_ADD_FILE
        (FILE_ADD_SUBDIRECTORY when a directory moves) | SYNCHRONIZE, ShareAccess
        READ | WRITE.  That open goes
        through the ordinary share check (MS-FSA 2.1.5.1.2.1), so an open of the target
        directory that holds DELETE, or that has data access and does not share write,
        makes the rename a sharing violation; opens without data access (e.g. only
        FILE_READ_ATTRIBUTES) and opens that share write and hold no DELETE do not.
        The source's directory takes no part (a file moves out of a directory that is
        open without FILE_SHARE_DELETE, as on Windows and Samba).  Caller holds the mutex."""
        pst = os.fstat(parent_fd)
        parent = self.files.get((pst.st_dev, pst.st_ino))
        if parent is None:
            return
        access = (FILE_ADD_SUBDIRECTORY if is_directory else FILE_ADD_FILE) | SYNCHRONIZE
        if self._share_conflict(parent.opens, access, FILE_SHARE_READ | FILE_SHARE_WRITE):
            held = ", ".join(f"access=0x{x.granted_access:x} share={x.share_access}" for x in parent.opens
                             if self._share_conflict([x], access, FILE_SHARE_READ | FILE_SHARE_WRITE))
            raise fail(STATUS_SHARING_VIOLATION,
                       f"target directory is open with DELETE or without write sharing ({held})")

    def _rename_stream(self, o: Open, new_name: str, replace_if_exists: bool) -> None:
        """Rename a named stream to ``:new[:$DATA]`` of the same file (MS-FSA 2.1.5.14.11)."""
        _, new = split_name_stream("x" + new_name)
        if not new:
            raise fail(STATUS_NOT_SUPPORTED_, "renaming to or from the data stream")
        if o.stream is None:
            raise fail(STATUS_NOT_SUPPORTED_, "renaming the data stream")
        with o.io_lock, self.mutex:
            if o.closed:
                raise fail(STATUS_FILE_CLOSED)
            p = fd_path(o.fd)
            try:
                existing = find_stream(p, new)
                if existing is not None and existing.casefold() != o.stream.casefold():
                    if not replace_if_exists:
                        raise fail(STATUS_OBJECT_NAME_COLLISION, f":{existing}")
                    tkey = o.file.key[:2] + (existing.casefold(),)
                    if tkey in self.files and self.files[tkey].opens:
                        raise fail(STATUS_ACCESS_DENIED, "target stream is open")
                    remove_stream(p, existing)
                data = read_stream(p, o.stream)
                write_stream(p, new, data)
                if new != o.stream:
                    remove_stream(p, o.stream)
            except OSError as e:
                raise from_oserror(e) from None
            fobj = o.file
            self.files.pop(fobj.key, None)
            fobj.key = fobj.key[:2] + (new.casefold(),)
            fobj.stream = new
            self.files[fobj.key] = fobj
            for oo in fobj.opens:
                oo.path_name = fobj.path
