"""CREATE in the object store (MS-FSA 2.1.5.1): name resolution, dispositions, share modes, delete-on-close,
new files and directories, and the access checks against stored security descriptors (MS-DTYP 2.5.3)."""
from __future__ import annotations

import errno
import logging
import os
import stat as stat_mod
import time
import uuid

from .attrs import fd_path, read_dosinfo, write_dosinfo, xattr_call
from .fscc import FileObjectIdBuffer
from .eas import write_eas
from .constants import (
    FILE_DELETE_CHILD,
    FILE_READ_ATTRIBUTES,
    ACCESS_SYSTEM_SECURITY,
    DELETE,
    FILE_ADD_FILE,
    FILE_ADD_SUBDIRECTORY,
    FILE_ALL_ACCESS,
    FILE_APPEND_DATA,
    FILE_ATTRIBUTE_ARCHIVE,
    FILE_ATTRIBUTE_HIDDEN,
    FILE_ATTRIBUTE_READONLY,
    FILE_ATTRIBUTE_SYSTEM,
    FILE_DELETE_ON_CLOSE,
    FILE_DIRECTORY_FILE,
    FILE_LIST_DIRECTORY,
    FILE_NON_DIRECTORY_FILE,
    FILE_OPEN_FOR_BACKUP_INTENT,
    FILE_SHARE_DELETE,
    FILE_SHARE_VALID,
    FILE_WRITE_DATA,
    DACL_SECURITY_INFORMATION,
    GROUP_SECURITY_INFORMATION,
    OWNER_SECURITY_INFORMATION,
    MAXIMUM_ALLOWED,
    MODE_INFORMATION_BITS,
    SETTABLE_ATTRIBUTES,
    VALID_ACCESS_BITS,
    WRITE_ACCESS_BITS,
    CreateAction,
    CreateDisposition,
    map_generic,
)
from .errors import (
    STATUS_ACCESS_DENIED,
    STATUS_CANNOT_DELETE,
    STATUS_DELETE_PENDING,
    STATUS_FILE_CLOSED,
    STATUS_FILE_IS_A_DIRECTORY,
    STATUS_INVALID_DEVICE_REQUEST,
    STATUS_INVALID_PARAMETER,
    STATUS_NOT_A_DIRECTORY,
    STATUS_OBJECT_NAME_COLLISION,
    STATUS_OBJECT_NAME_NOT_FOUND,
    STATUS_SHARING_VIOLATION,
    closing_on_failure,
    fail,
    from_oserror,
    WouldBlock,
    STATUS_OBJECTID_NOT_FOUND,
    STATUS_MEDIA_WRITE_PROTECTED,
)
from ..ntstatus import NtStatusError
from .filetime import to_filetime
from .namepolicy import check_veto
from .paths import Resolved, Share, cached_lookup_ok, path_cached, resolve, split_name_stream
from .streams import find_stream, write_stream
from . import security as sec
from .security import (
    SE_DACL_PRESENT,
    SE_SACL_PRESENT,
    SE_SECURITY_NAME,
    SE_SELF_RELATIVE,
    XATTR_OWNER,
    XATTR_SD,
    Descriptor,
    Token,
    inherit,
    maximum_allowed,
)

from .objects import CreateResult, FileObject, Open, STATUS_PRIVILEGE_NOT_HELD, XATTR_OBJECTID, reserve

log = logging.getLogger("wsd_smb.store")


class CreateMixin:
    """ObjectStore.create and its access checks (mixed into :class:`~.objectstore.ObjectStore`)."""

    # ------------------------------------------------------------------ CREATE
    def create(self, share: Share, name: str, *, desired_access: int, share_access: int,
               create_disposition: int, create_options: int = 0, file_attributes: int = 0,
               allocation_size: int = 0, eas: list | None = None,
               security_descriptor: bytes | None = None, cached_only: bool = False,
               token: Token | None = None) -> CreateResult:
        """Open or create *name* in *share* (MS-FSA 2.1.5.1, MS-SMB2 3.3.5.9).

        *token* (the session's identity, store/security.py): access checks against stored
        security descriptors (MS-FSA 2.1.5.1.2.1; a file without one allows everything,
        the share's rules apply), FILE_ADD_FILE / FILE_ADD_SUBDIRECTORY on the parent for
        a new file, inheritance of the parent's inheritable ACEs (MS-DTYP 2.5.3.4) and the
        new file's owner.  None: no checks (the store used on its own).

        *cached_only* (an attempt on the event loop): open an existing file or directory
        only if its whole path is in the kernel's dentry cache and no worker holds the
        store's lock; anything else raises :class:`WouldBlock` before any change is made.

        Raises NtStatusError: INVALID_PARAMETER, ACCESS_DENIED, OBJECT_NAME_NOT_FOUND,
        OBJECT_PATH_NOT_FOUND, OBJECT_NAME_COLLISION, SHARING_VIOLATION, DELETE_PENDING,
        FILE_IS_A_DIRECTORY, NOT_A_DIRECTORY, CANNOT_DELETE, OBJECT_NAME_INVALID."""
        if create_disposition not in CreateDisposition.__members__.values():
            raise fail(STATUS_INVALID_PARAMETER, f"CreateDisposition {create_disposition}")
        if share_access & ~FILE_SHARE_VALID:
            raise fail(STATUS_INVALID_PARAMETER, f"ShareAccess 0x{share_access:x}")
        if desired_access & ~VALID_ACCESS_BITS:
            raise fail(STATUS_ACCESS_DENIED, f"DesiredAccess 0x{desired_access:x}")
        if desired_access == 0:
            raise fail(STATUS_ACCESS_DENIED, "DesiredAccess is 0")
        if create_options & FILE_DIRECTORY_FILE and create_options & FILE_NON_DIRECTORY_FILE:
            raise fail(STATUS_INVALID_PARAMETER, "DIRECTORY_FILE and NON_DIRECTORY_FILE")
        if create_options & FILE_DIRECTORY_FILE and create_disposition not in (
            CreateDisposition.FILE_CREATE, CreateDisposition.FILE_OPEN, CreateDisposition.FILE_OPEN_IF
        ):
            raise fail(STATUS_INVALID_PARAMETER, "DIRECTORY_FILE with an overwriting disposition")
        if desired_access & ACCESS_SYSTEM_SECURITY and (token is None or not sec.privilege_access(
                token, ACCESS_SYSTEM_SECURITY, backup_intent=bool(create_options & FILE_OPEN_FOR_BACKUP_INTENT))):
            # MS-DTYP 2.5.3.2: SeSecurityPrivilege (or backup/restore with backup intent)
            raise fail(STATUS_PRIVILEGE_NOT_HELD, "ACCESS_SYSTEM_SECURITY")
        access = map_generic(desired_access)
        want_max = bool(access & MAXIMUM_ALLOWED)
        access &= ~MAXIMUM_ALLOWED
        doc = bool(create_options & FILE_DELETE_ON_CLOSE)
        creator = Descriptor.parse(security_descriptor) if security_descriptor else None
        if creator is not None and token is not None:
            sec.check_owner(token, creator.owner)
        if doc and not (access & DELETE or want_max):
            raise fail(STATUS_ACCESS_DENIED, "DELETE_ON_CLOSE without DELETE access")
        if share.read_only and (access & WRITE_ACCESS_BITS or doc):
            raise fail(STATUS_ACCESS_DENIED, "read-only share")
        parts, stream = split_name_stream(name)
        veto = share.veto_files
        if veto is not None:  # namespace policy: a vetoed name is not there (namepolicy.py)
            check_veto(veto, parts)
        if cached_only:
            if stream is not None or create_disposition not in (CreateDisposition.FILE_OPEN,
                                                                CreateDisposition.FILE_OPEN_IF) \
                    or not self.inline_ok(share) or not path_cached(share, parts):
                raise WouldBlock()
            if not self.mutex.acquire(blocking=False):
                raise WouldBlock()
        if stream:
            return self._create_stream(share, parts, stream, access, want_max, share_access,
                                       create_disposition, create_options, token)
        if not cached_only:
            self.mutex.acquire()
        try:
            r = resolve(share, parts)
            try:
                if cached_only and not r.exists:  # gone since the probe: creating it is I/O
                    raise WouldBlock()
                if veto is not None and r.rel != parts:  # on-disk names (case, 8.3 name, symlinks)
                    check_veto(veto, r.rel)
                if stream == "" and r.exists and stat_mod.S_ISDIR(r.st.st_mode):
                    # a directory has no data stream (MS-FSA 2.1.5.1.2)
                    raise fail(STATUS_NOT_A_DIRECTORY if create_options & FILE_DIRECTORY_FILE
                               else STATUS_FILE_IS_A_DIRECTORY, f"{name!r}")
                if r.exists:
                    res = self._open_existing(share, r, access, want_max, share_access,
                                              create_disposition, create_options, file_attributes, token)
                else:
                    res = self._create_new(share, r, access, want_max, share_access,
                                           create_disposition, create_options, file_attributes,
                                           token, creator)
            finally:
                r.close()
        finally:
            self.mutex.release()
        o = res.open
        if res.create_action != CreateAction.FILE_OPENED:
            try:
                if allocation_size and not o.is_directory and o.stream is None:
                    reserve(o.fd, allocation_size)
                if eas:  # SMB2_CREATE_EA_BUFFER: set on a new or overwritten file
                    write_eas(fd_path(o.fd), eas)
                if creator is not None and res.create_action == CreateAction.FILE_CREATED \
                        and (token is None or o.stream is not None):
                    # SMB2_CREATE_SD_BUFFER without an identity: the parts present in the
                    # given descriptor over the default one (with a token _create_new did it)
                    parts = ((OWNER_SECURITY_INFORMATION if creator.owner else 0)
                             | (GROUP_SECURITY_INFORMATION if creator.group else 0)
                             | (DACL_SECURITY_INFORMATION if creator.control & SE_DACL_PRESENT else 0))
                    self._write_sd(o.fd, self._descriptor(o).merge(creator, parts))
            except OSError as e:
                self.close(o)
                raise from_oserror(e) from None
            except NtStatusError:
                self.close(o)
                raise
        return res

    def object_id(self, o: Open, create: bool) -> bytes:
        """FILE_OBJECTID_BUFFER of the open's file (MS-FSA 2.1.5.10.1 FSCTL_CREATE_OR_GET_OBJECT_ID
        with *create*, 2.1.5.10.13 FSCTL_GET_OBJECT_ID without).  The ObjectId is a GUID kept
        in the ``user.wsd.objectid`` xattr; BirthVolumeId is the share's volume GUID (derived
        from its path), BirthObjectId the ObjectId itself, DomainId zero."""
        with o.io_lock:
            if o.closed:
                raise fail(STATUS_FILE_CLOSED)
            target = o.fd
            try:
                oid = xattr_call(os.getxattr, target, XATTR_OBJECTID)
            except OSError as e:
                if e.errno not in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
                    raise from_oserror(e) from None
                oid = b""
            if len(oid) != 16:
                if not create:
                    raise fail(STATUS_OBJECTID_NOT_FOUND)
                if o.share.read_only:
                    raise fail(STATUS_MEDIA_WRITE_PROTECTED, "read-only share")
                oid = uuid.uuid4().bytes_le
                try:
                    xattr_call(os.setxattr, target, XATTR_OBJECTID, oid)
                except OSError as e:
                    if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):  # no user xattrs: no object IDs
                        raise fail(STATUS_INVALID_DEVICE_REQUEST, "no object IDs here") from None
                    raise from_oserror(e) from None
        volume = uuid.uuid5(uuid.NAMESPACE_URL, "wsd-share:" + o.share.path).bytes_le
        return FileObjectIdBuffer(object_id=oid, birth_volume_id=volume, birth_object_id=oid).pack(0)

    def inline_ok(self, share: Share) -> bool:
        """Cached-only attempts are worth making on *share* (a local file system, and
        openat2 RESOLVE_CACHED works here); computed once per share path."""
        ok = self._inline_ok.get(share.path)
        if ok is None:
            ok = self._inline_ok[share.path] = cached_lookup_ok(share.path)
        return ok

    def file_of(self, share: Share, name: str) -> FileObject | None:
        """The FileObject (with its opens) that a CREATE of *name* would open, if the
        file exists and is open now; None otherwise (used by the oplock layer to find
        the opens whose oplocks a new open may break before it runs)."""
        try:
            parts, stream = split_name_stream(name)
        except NtStatusError:
            return None
        with self.mutex:
            try:
                r = resolve(share, parts)
            except (NtStatusError, OSError):
                return None
            try:
                if not r.exists or r.st is None:
                    return None
                key: tuple = (r.st.st_dev, r.st.st_ino)
                if stream:
                    key = key + (stream.casefold(),)
                return self.files.get(key)
            finally:
                r.close()

    def _create_stream(self, share: Share, parts: list[str], stream: str, access: int, want_max: bool,
                       share_access: int, disposition: int, options: int,
                       token: Token | None = None) -> CreateResult:
        """CREATE of ``file:stream`` (MS-FSA 2.1.5.1.2): dispositions apply to the stream;
        a missing file is created (empty) when the disposition creates."""
        D = CreateDisposition
        if options & FILE_DIRECTORY_FILE:
            raise fail(STATUS_NOT_A_DIRECTORY, "a stream is not a directory")
        creates = disposition not in (D.FILE_OPEN, D.FILE_OVERWRITE)
        with self.mutex:
            with resolve(share, parts) as r:
                if not r.exists:
                    if not creates:
                        raise fail(STATUS_OBJECT_NAME_NOT_FOUND, "\\".join(r.rel))
                    if share.read_only:
                        raise fail(STATUS_ACCESS_DENIED, "read-only share")
                    try:
                        fd = os.open(r.name, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                                     0o666, dir_fd=r.parent_fd)
                        write_dosinfo(fd_path(fd), FILE_ATTRIBUTE_ARCHIVE, to_filetime(time.time_ns()))
                        os.close(fd)
                        r.st = os.stat(r.name, dir_fd=r.parent_fd, follow_symlinks=False)
                    except OSError as e:
                        raise from_oserror(e) from None
                st = r.st
                is_dir = stat_mod.S_ISDIR(st.st_mode)
                if not is_dir and not stat_mod.S_ISREG(st.st_mode):
                    raise fail(STATUS_ACCESS_DENIED, "not a regular file or directory")
                base = self.files.get((st.st_dev, st.st_ino))
                if base is not None and base.delete_pending:
                    raise fail(STATUS_DELETE_PENDING, base.path)
                readonly = not is_dir and not st.st_mode & stat_mod.S_IWUSR
                overwrite = disposition in (D.FILE_SUPERSEDE, D.FILE_OVERWRITE, D.FILE_OVERWRITE_IF)
                maximal = None
                if token is not None:  # a stream is guarded by its file's descriptor
                    sd = self._stored_sd(r, st)
                    if sd is not None:
                        access, maximal = self._sd_grant(r, sd, token, access, want_max, overwrite,
                                                         self._max_allowed(share, readonly),
                                                         bool(options & FILE_OPEN_FOR_BACKUP_INTENT))
                        want_max = False
                if want_max:
                    access |= self._max_allowed(share, readonly)
                if readonly and (access & (FILE_WRITE_DATA | FILE_APPEND_DATA) or overwrite):
                    raise fail(STATUS_ACCESS_DENIED, "FILE_ATTRIBUTE_READONLY")
                fd = self._open_fd(r, is_dir, False)
                with closing_on_failure(fd):
                    if (os.fstat(fd).st_dev, os.fstat(fd).st_ino) != (st.st_dev, st.st_ino):
                        raise fail(STATUS_SHARING_VIOLATION, "file replaced during open")
                    actual = find_stream(fd_path(fd), stream)
                    key = (st.st_dev, st.st_ino, stream.casefold())
                    sobj = self.files.get(key)
                    if sobj is not None:
                        if sobj.delete_pending:
                            raise fail(STATUS_DELETE_PENDING, sobj.path)
                        if self._share_conflict(sobj.opens, access | (FILE_WRITE_DATA if overwrite else 0),
                                                share_access):
                            raise fail(STATUS_SHARING_VIOLATION, sobj.path)
                    if actual is not None:
                        if disposition == D.FILE_CREATE:
                            raise fail(STATUS_OBJECT_NAME_COLLISION, f"{r.name}:{actual}")
                        action = CreateAction.FILE_OPENED
                        if overwrite:
                            if share.read_only:
                                raise fail(STATUS_ACCESS_DENIED, "read-only share")
                            write_stream(fd_path(fd), actual, b"")
                            action = (CreateAction.FILE_SUPERSEDED if disposition == D.FILE_SUPERSEDE
                                      else CreateAction.FILE_OVERWRITTEN)
                    else:
                        if not creates:
                            raise fail(STATUS_OBJECT_NAME_NOT_FOUND, f"{r.name}:{stream}")
                        if share.read_only:
                            raise fail(STATUS_ACCESS_DENIED, "read-only share")
                        write_stream(fd_path(fd), stream, b"")
                        actual, action = stream, CreateAction.FILE_CREATED
                if sobj is None:
                    sobj = FileObject(key, share, list(r.rel), False, stream=actual)
                    self.files[key] = sobj
                o = self._register(share, r, st, fd, False, access, share_access, options, disposition,
                                   fobj=sobj)
                o.token, o.maximal_access = token, maximal
                return CreateResult(o, action)

    def _register(self, share: Share, r: Resolved, st: os.stat_result, fd: int, writable: bool,
                  access: int, share_access: int, options: int, disposition: int,
                  fobj: FileObject | None = None) -> Open:
        key = (st.st_dev, st.st_ino)
        if fobj is None:
            fobj = self.files.get(key)
        if fobj is None:
            fobj = FileObject(key, share, list(r.rel), stat_mod.S_ISDIR(st.st_mode))
            if key in self._kept_change_times:  # (no fstat on the usual open path)
                fobj.change_time_override = self.kept_change_time(key, os.fstat(fd))
            self.files[key] = fobj
        o = Open(next(self._pids), next(self._ids), share, fobj, fd, writable, access, share_access,
                 options, disposition, delete_on_close=bool(options & FILE_DELETE_ON_CLOSE))
        o.path_name = fobj.path
        o.mode = options & MODE_INFORMATION_BITS
        fobj.opens.append(o)
        self.opens[o.file_id_volatile] = o
        self.by_persistent[o.file_id_persistent] = o
        return o

    def new_volatile_id(self, o: Open) -> int:
        """Give *o* a fresh FileId.Volatile (a durable reconnect, MS-SMB2 3.3.5.9.7 DH-12)."""
        with self.mutex:
            self.opens.pop(o.file_id_volatile, None)
            o.file_id_volatile = next(self._ids)
            self.opens[o.file_id_volatile] = o
            return o.file_id_volatile

    def _open_fd(self, r: Resolved, is_dir: bool, writable: bool, flags: int = 0) -> int:
        base = os.O_CLOEXEC | os.O_NOFOLLOW
        assert r.name is not None or r.parent_fd is None
        try:
            if r.name is None:  # share root
                return r.share.open_root()
            if is_dir:
                return os.open(r.name, base | os.O_RDONLY | os.O_DIRECTORY, dir_fd=r.parent_fd)
            if writable:
                return os.open(r.name, base | os.O_RDWR | flags, dir_fd=r.parent_fd)
            try:
                return os.open(r.name, base | os.O_RDONLY, dir_fd=r.parent_fd)
            except PermissionError:
                return os.open(r.name, base | os.O_PATH, dir_fd=r.parent_fd)
        except OSError as e:
            raise from_oserror(e) from None

    def _open_existing(self, share: Share, r: Resolved, access: int, want_max: bool, share_access: int,
                       disposition: int, options: int, attributes: int,
                       token: Token | None = None) -> CreateResult:
        D = CreateDisposition
        st = r.st
        assert st is not None
        if disposition == D.FILE_CREATE:
            raise fail(STATUS_OBJECT_NAME_COLLISION, "\\".join(r.rel))
        is_dir = stat_mod.S_ISDIR(st.st_mode)
        if not is_dir and not stat_mod.S_ISREG(st.st_mode):
            raise fail(STATUS_ACCESS_DENIED, "not a regular file or directory")
        if is_dir and options & FILE_NON_DIRECTORY_FILE:
            raise fail(STATUS_FILE_IS_A_DIRECTORY, "\\".join(r.rel))
        if not is_dir and options & FILE_DIRECTORY_FILE:
            raise fail(STATUS_NOT_A_DIRECTORY, "\\".join(r.rel))
        overwrite = disposition in (D.FILE_SUPERSEDE, D.FILE_OVERWRITE, D.FILE_OVERWRITE_IF)
        if is_dir and overwrite:
            raise fail(STATUS_INVALID_PARAMETER, "overwriting a directory")
        if share.read_only and overwrite:
            raise fail(STATUS_ACCESS_DENIED, "read-only share")
        readonly = not is_dir and not st.st_mode & stat_mod.S_IWUSR
        if readonly:  # MS-FSA 2.1.5.1.2.1: the attribute checks come before the access check
            if access & (FILE_WRITE_DATA | FILE_APPEND_DATA) or overwrite:
                raise fail(STATUS_ACCESS_DENIED, "FILE_ATTRIBUTE_READONLY")
        if options & FILE_DELETE_ON_CLOSE and (readonly or (is_dir and self._dir_readonly(r))):
            raise fail(STATUS_CANNOT_DELETE, "delete-on-close of a read-only file")
        maximal = None
        if token is not None:
            # one dict lookup for a file whose descriptor state is known (no syscall)
            sd = self._stored_sd(r, st)
            if sd is not None:
                access, maximal = self._sd_grant(r, sd, token, access, want_max, overwrite,
                                                 self._max_allowed(share, readonly),
                                                 bool(options & FILE_OPEN_FOR_BACKUP_INTENT))
                want_max = False
                if options & FILE_DELETE_ON_CLOSE and not access & DELETE:
                    raise fail(STATUS_ACCESS_DENIED, "delete-on-close without DELETE access")
        if want_max:
            access |= self._max_allowed(share, readonly)
        if overwrite:
            # MS-FSA 2.1.5.1.2.1: hidden/system files are only overwritten by a caller
            # that keeps those attributes
            stored, _ = read_dosinfo(f"{fd_path(r.parent_fd)}/{r.name}", False) if r.parent_fd is not None else (None, 0)
            old = stored or 0
            for bit in (FILE_ATTRIBUTE_HIDDEN, FILE_ATTRIBUTE_SYSTEM):
                if old & bit and not attributes & bit:
                    raise fail(STATUS_ACCESS_DENIED, "overwrite would drop HIDDEN/SYSTEM")
        fobj = self.files.get((st.st_dev, st.st_ino))
        if fobj is not None:
            if fobj.delete_pending:
                raise fail(STATUS_DELETE_PENDING, fobj.path)
            check = access | (FILE_WRITE_DATA if overwrite else 0)
            if self._share_conflict(fobj.opens, check, share_access):
                raise fail(STATUS_SHARING_VIOLATION, fobj.path)
        if access & DELETE:
            # deleting the file deletes its streams: an open stream that does not share
            # delete blocks it (smbtorture smb2.streams.delete)
            for key, sobj in self.files.items():
                if len(key) == 3 and key[:2] == (st.st_dev, st.st_ino) and any(
                        not so.share_access & FILE_SHARE_DELETE for so in sobj.opens):
                    raise fail(STATUS_SHARING_VIOLATION, f"stream {sobj.path} is open")
        writable = not is_dir and bool(access & (FILE_WRITE_DATA | FILE_APPEND_DATA) or overwrite)
        fd = self._open_fd(r, is_dir, writable)
        with closing_on_failure(fd):
            st2 = os.fstat(fd)
            if (st2.st_dev, st2.st_ino) != (st.st_dev, st.st_ino):
                raise fail(STATUS_SHARING_VIOLATION, "file replaced during open")
            action = CreateAction.FILE_OPENED
            if overwrite:
                os.ftruncate(fd, 0)
                _, ctime = read_dosinfo(fd_path(fd))
                new_attrs = (attributes & SETTABLE_ATTRIBUTES) | FILE_ATTRIBUTE_ARCHIVE
                write_dosinfo(fd_path(fd), new_attrs, ctime)
                if attributes & FILE_ATTRIBUTE_READONLY:
                    os.fchmod(fd, st2.st_mode & 0o7555)
                action = (CreateAction.FILE_SUPERSEDED if disposition == D.FILE_SUPERSEDE
                          else CreateAction.FILE_OVERWRITTEN)
        o = self._register(share, r, st, fd, writable, access, share_access, options, disposition)
        o.token, o.maximal_access = token, maximal
        return CreateResult(o, action)

    # ------------------------------------------------------------------ access checks
    @staticmethod
    def _entry_path(r: Resolved) -> str:
        """A path naming the resolved object (through its parent's fd: no new lookup of
        the directories above)."""
        if r.name is None or r.parent_fd is None:
            return r.share.path
        return f"{fd_path(r.parent_fd)}/{r.name}"

    def _stored_sd(self, target: Resolved | int | str, st: os.stat_result) -> Descriptor | None:
        """The stored security descriptor of the object *target* (resolved entry, fd or path)
        whose stat is *st*, None when it has none.  Known (dev, ino, ctime) answer from the cache;
        otherwise one getxattr.  A stored descriptor that does not parse denies all
        (an empty DACL) and is logged."""
        key = (st.st_dev, st.st_ino)
        hit = self._sd_cache.get(key)
        if hit is not None and hit[0] == st.st_ctime_ns:
            return hit[1]
        sd: Descriptor | None
        try:
            raw = xattr_call(os.getxattr, target if isinstance(target, (int, str)) else self._entry_path(target),
                             XATTR_SD)
        except OSError as e:
            if e.errno not in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
                raise from_oserror(e) from None
            sd = None
        else:
            try:
                sd = Descriptor.parse(raw)
            except NtStatusError:
                log.warning("event=bad_stored_sd dev=%d ino=%d: denying all", st.st_dev, st.st_ino)
                sd = Descriptor(SE_SELF_RELATIVE | SE_DACL_PRESENT, None, None, None, sec.acl([]))
        if len(self._sd_cache) >= 65536:
            self._sd_cache.clear()
        self._sd_cache[key] = (st.st_ctime_ns, sd)
        return sd

    def _write_sd(self, fd: int, sd: Descriptor) -> None:
        """Store *sd* as the descriptor of the object open as *fd* (and remember it)."""
        xattr_call(os.setxattr, fd, XATTR_SD, sd.pack())
        st = os.fstat(fd)
        self._sd_cache[(st.st_dev, st.st_ino)] = (st.st_ctime_ns, sd)

    def _parent_maximal(self, parent_fd: int, token: Token) -> int:
        """What *token* may do to the directory *parent_fd* (everything without a stored SD)."""
        try:
            pst = os.fstat(parent_fd)
        except OSError as e:
            raise from_oserror(e) from None
        psd = self._stored_sd(parent_fd, pst)
        return FILE_ALL_ACCESS if psd is None else maximum_allowed(psd, token)

    def _sd_grant(self, r: Resolved, sd: Descriptor, token: Token, access: int, want_max: bool,
                  overwrite: bool, limit: int, backup_intent: bool = False) -> tuple[int, int]:
        """MS-FSA 2.1.5.1.2.1 access check of an existing file with a stored descriptor:
        DELETE is also granted by FILE_DELETE_CHILD on the parent directory and
        FILE_READ_ATTRIBUTES by FILE_LIST_DIRECTORY there; an overwrite needs
        FILE_WRITE_DATA; the token's privileges grant what :func:`~.security.privilege_access`
        says (backup/restore only with *backup_intent*, FILE_OPEN_FOR_BACKUP_INTENT).
        Returns (granted access, maximal access); MAXIMUM_ALLOWED grants the maximal access
        within *limit* (the share's and the READONLY attribute's)."""
        maximal = maximum_allowed(sd, token)
        if ~maximal & (DELETE | FILE_READ_ATTRIBUTES) and r.parent_fd is not None:
            pmax = self._parent_maximal(r.parent_fd, token)
            if pmax & FILE_DELETE_CHILD:
                maximal |= DELETE
            if pmax & FILE_LIST_DIRECTORY:
                maximal |= FILE_READ_ATTRIBUTES
        asked = access | (FILE_WRITE_DATA if overwrite else 0)
        if token.privileges:
            maximal |= sec.privilege_access(token, 0, backup_intent=backup_intent, maximum=True)
            missing = asked & ~(maximal | sec.privilege_access(token, asked, backup_intent=backup_intent))
        else:
            missing = asked & ~maximal
        if missing:
            raise fail(STATUS_ACCESS_DENIED, f"the security descriptor denies 0x{missing:x}")
        if want_max:
            access |= maximal & limit
            if not access:
                raise fail(STATUS_ACCESS_DENIED, "MAXIMUM_ALLOWED: nothing is allowed")
        return access, maximal

    @staticmethod
    def _dir_readonly(r: Resolved) -> bool:
        """A directory's READONLY is a stored flag (attrs.py); it blocks delete-on-close."""
        if r.parent_fd is None or r.name is None:
            return False
        stored, _ = read_dosinfo(f"{fd_path(r.parent_fd)}/{r.name}", follow=False)
        return bool((stored or 0) & FILE_ATTRIBUTE_READONLY)

    def _create_new(self, share: Share, r: Resolved, access: int, want_max: bool, share_access: int,
                    disposition: int, options: int, attributes: int, token: Token | None = None,
                    creator: Descriptor | None = None) -> CreateResult:
        D = CreateDisposition
        if disposition in (D.FILE_OPEN, D.FILE_OVERWRITE):
            raise fail(STATUS_OBJECT_NAME_NOT_FOUND, "\\".join(r.rel))
        if share.read_only:
            raise fail(STATUS_ACCESS_DENIED, "read-only share")
        assert r.parent_fd is not None and r.name is not None
        pst = os.fstat(r.parent_fd)
        parent = self.files.get((pst.st_dev, pst.st_ino))
        if parent is not None and parent.delete_pending:
            raise fail(STATUS_DELETE_PENDING, "parent directory is being deleted")
        if options & FILE_DELETE_ON_CLOSE and attributes & FILE_ATTRIBUTE_READONLY:
            raise fail(STATUS_CANNOT_DELETE, "delete-on-close of a read-only file")
        is_dir = bool(options & FILE_DIRECTORY_FILE)
        psd = None
        if token is not None:  # MS-FSA 2.1.5.1.1: the parent must allow adding this entry
            psd = self._stored_sd(r.parent_fd, pst)
            if psd is not None:
                need = FILE_ADD_SUBDIRECTORY if is_dir else FILE_ADD_FILE
                if need & ~maximum_allowed(psd, token) & ~sec.privilege_access(
                        token, need, backup_intent=bool(options & FILE_OPEN_FOR_BACKUP_INTENT)):
                    raise fail(STATUS_ACCESS_DENIED, "the parent directory denies "
                               + ("FILE_ADD_SUBDIRECTORY" if is_dir else "FILE_ADD_FILE"))
        if want_max:
            access |= self._max_allowed(share, False)
        try:
            if is_dir:
                os.mkdir(r.name, 0o777, dir_fd=r.parent_fd)
                fd = os.open(r.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                             dir_fd=r.parent_fd)
            else:
                fd = os.open(r.name, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                             0o666, dir_fd=r.parent_fd)
        except FileExistsError:
            raise fail(STATUS_OBJECT_NAME_COLLISION, "\\".join(r.rel)) from None
        except OSError as e:
            raise from_oserror(e) from None
        try:
            now_ft = to_filetime(time.time_ns())
            a = attributes & SETTABLE_ATTRIBUTES
            if not is_dir:
                a |= FILE_ATTRIBUTE_ARCHIVE
            write_dosinfo(fd_path(fd), a, now_ft, is_dir)  # a directory keeps READONLY as a flag
            new_sd = None
            if token is not None:
                # MS-DTYP 2.5.3.4: the creator's descriptor and/or the parent's inheritable
                # ACEs; with neither only the owner (the creating user) is recorded
                new_sd = inherit(psd, is_dir, creator, token.user, token.primary_group)
                if new_sd is not None and creator is not None and creator.control & SE_SACL_PRESENT \
                        and creator.sacl is not None and SE_SECURITY_NAME in token.privileges:
                    # the creator's SACL is kept for a holder of SeSecurityPrivilege
                    # (otherwise it is dropped, as before)
                    new_sd.sacl = creator.sacl
                    new_sd.control |= SE_SACL_PRESENT
                if new_sd is not None:
                    xattr_call(os.setxattr, fd, XATTR_SD, new_sd.pack())
                else:
                    try:
                        xattr_call(os.setxattr, fd, XATTR_OWNER, token.user)
                    except OSError as e:
                        if e.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP):
                            raise
            if not is_dir and attributes & FILE_ATTRIBUTE_READONLY:
                os.fchmod(fd, os.fstat(fd).st_mode & 0o7555)
            st = os.fstat(fd)
        except OSError as e:
            os.close(fd)
            raise from_oserror(e) from None
        maximal = None
        if token is not None:
            if len(self._sd_cache) >= 65536:
                self._sd_cache.clear()
            self._sd_cache[(st.st_dev, st.st_ino)] = (st.st_ctime_ns, new_sd)
            if new_sd is not None:
                maximal = maximum_allowed(new_sd, token)
                if not maximal & DELETE and (psd is None or maximum_allowed(psd, token) & FILE_DELETE_CHILD):
                    maximal |= DELETE
        action = CreateAction.FILE_CREATED
        o = self._register(share, r, st, fd, not is_dir, access, share_access, options, disposition)
        o.token, o.maximal_access = token, maximal
        return CreateResult(o, action)
