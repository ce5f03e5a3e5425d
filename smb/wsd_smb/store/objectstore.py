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

import errno
import itertools
import logging
import os
import stat as stat_mod
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

from . import locks as brl
from .attrs import FileStat, allocated_bytes, fd_path, file_stat, read_dosinfo, write_dosinfo, xattr_call
from .fscc import FileObjectIdBuffer
from .eas import Ea, read_eas, write_eas
from .eas import pack_full as pack_eas
from .constants import (
    FILE_DELETE_CHILD,
    FILE_READ_ATTRIBUTES,
    ACCESS_SYSTEM_SECURITY,
    DATA_ACCESS_BITS,
    DELETE,
    FILE_ADD_FILE,
    FILE_ADD_SUBDIRECTORY,
    FILE_ALL_ACCESS,
    FILE_APPEND_DATA,
    FILE_ATTRIBUTE_ARCHIVE,
    FILE_ATTRIBUTE_DIRECTORY,
    FILE_ATTRIBUTE_HIDDEN,
    FILE_ATTRIBUTE_NORMAL,
    FILE_ATTRIBUTE_READONLY,
    FILE_ATTRIBUTE_SYSTEM,
    FILE_ATTRIBUTE_TEMPORARY,
    FILE_DELETE_ON_CLOSE,
    FILE_DIRECTORY_FILE,
    FILE_EXECUTE,
    FILE_GENERIC_EXECUTE,
    FILE_GENERIC_READ,
    FILE_LIST_DIRECTORY,
    FILE_NON_DIRECTORY_FILE,
    FILE_READ_DATA,
    FILE_SHARE_DELETE,
    FILE_SHARE_READ,
    FILE_SHARE_VALID,
    FILE_SHARE_WRITE,
    FILE_READ_EA,
    FILE_WRITE_ATTRIBUTES,
    FILE_WRITE_DATA,
    FILE_WRITE_EA,
    DACL_SECURITY_INFORMATION,
    GROUP_SECURITY_INFORMATION,
    OWNER_SECURITY_INFORMATION,
    READ_CONTROL,
    SACL_SECURITY_INFORMATION,
    SYNCHRONIZE,
    WRITE_DAC,
    WRITE_OWNER,
    MAXIMUM_ALLOWED,
    MODE_INFORMATION_BITS,
    FILE_NO_INTERMEDIATE_BUFFERING,
    FILE_SEQUENTIAL_ONLY,
    FILE_WRITE_THROUGH,
    SETTABLE_ATTRIBUTES,
    SMB2_LOCKFLAG_EXCLUSIVE_LOCK,
    SMB2_LOCKFLAG_FAIL_IMMEDIATELY,
    SMB2_LOCKFLAG_SHARED_LOCK,
    SMB2_LOCKFLAG_UNLOCK,
    SMB2_REOPEN,
    SMB2_RESTART_SCANS,
    SMB2_RETURN_SINGLE_ENTRY,
    VALID_ACCESS_BITS,
    WRITE_ACCESS_BITS,
    CreateAction,
    CreateDisposition,
    map_generic,
)
from .errors import (
    STATUS_ACCESS_DENIED,
    STATUS_CANCELLED,
    STATUS_CANNOT_DELETE,
    STATUS_DELETE_PENDING,
    STATUS_DIRECTORY_NOT_EMPTY,
    STATUS_END_OF_FILE,
    STATUS_FILE_CLOSED,
    STATUS_FILE_IS_A_DIRECTORY,
    STATUS_FILE_LOCK_CONFLICT,
    STATUS_INFO_LENGTH_MISMATCH,
    STATUS_INVALID_DEVICE_REQUEST,
    STATUS_INVALID_LOCK_RANGE,
    STATUS_INVALID_PARAMETER,
    STATUS_LOCK_NOT_GRANTED,
    STATUS_NO_MORE_FILES,
    STATUS_NO_SUCH_FILE,
    STATUS_NOT_A_DIRECTORY,
    STATUS_OBJECT_NAME_COLLISION,
    STATUS_OBJECT_NAME_INVALID,
    STATUS_OBJECT_NAME_NOT_FOUND,
    STATUS_RANGE_NOT_LOCKED,
    STATUS_SHARING_VIOLATION,
    STATUS_SUCCESS,
    fail,
    from_oserror,
    WouldBlock,
    STATUS_OBJECTID_NOT_FOUND,
    STATUS_MEDIA_WRITE_PROTECTED,
)
from ..buffers import HeadroomBuffer
from ..ntstatus import NtStatusError
from .filetime import FILETIME_RESUME, FILETIME_SUSPEND, from_filetime, to_filetime
from .paths import Resolved, Share, cached_lookup_ok, path_cached, resolve, split_name, split_name_stream
from .streams import find_stream, list_streams, read_stream, remove_stream, write_stream
from . import security as sec
from .security import (
    SE_DACL_PRESENT,
    SE_SELF_RELATIVE,
    XATTR_OWNER,
    XATTR_SD,
    Descriptor,
    Token,
    default_descriptor,
    inherit,
    maximum_allowed,
)
from .wildcard import is_name_in_expression

#: the xattr holding a file's ObjectId GUID (FSCTL_CREATE_OR_GET_OBJECT_ID)
XATTR_OBJECTID = "user.wsd.objectid"

log = logging.getLogger("wsd_smb.store")

STATUS_PRIVILEGE_NOT_HELD = 0xC0000061
STATUS_DISK_FULL = 0xC000007F
STATUS_NOT_SUPPORTED_ = 0xC00000BB
MAX_OFFSET = 0x7FFFFFFFFFFFFFFF
MAX_FILE_SIZE = 0xFFFFFFF0000 - 1
STATUS_NO_EAS_ON_FILE = 0xC0000052
STATUS_NO_MORE_EAS = 0x80000012
STATUS_BUFFER_OVERFLOW_ = 0x80000005
STATUS_BUFFER_TOO_SMALL_ = 0xC0000023
STATUS_INVALID_VIEW_SIZE = 0xC000001F


# ====================================================================== state records
@dataclass(eq=False)
class FileObject:
    """Per-file state shared by all opens of one file (MS-FSA 2.1.1.4 File / 2.1.1.5 Stream,
    merged: one data stream per file)."""

    key: tuple[int, int]  # (st_dev, st_ino)
    share: Share
    rel: list[str]  # current share-relative path (updated by rename)
    is_directory: bool
    opens: list["Open"] = field(default_factory=list)
    delete_pending: bool = False
    locks: list[brl.ByteRangeLock] = field(default_factory=list)
    waiters: list["PendingLock"] = field(default_factory=list)
    #: ChangeTime set by a client (FILETIME) and the inode ctime (ns) right after it was
    #: set: Linux cannot set ctime, so the value is reported while the inode's real
    #: ctime has not moved since (i.e. until the next change), and while the file is open.
    change_time_override: tuple[int, int] | None = None
    #: a named stream (its stored spelling), None for the file's data itself
    stream: str | None = None

    @property
    def path(self) -> str:
        p = "\\".join(self.rel)
        return f"{p}:{self.stream}" if self.stream else p

    def apply_overrides(self, st: os.stat_result, fs: FileStat) -> FileStat:
        if self.delete_pending and not self.is_directory:
            fs.number_of_links = max(0, fs.number_of_links - 1)  # as NTFS counts them
        ov = self.change_time_override
        if ov is not None:
            if st.st_ctime_ns == ov[1]:
                fs.change_time = ov[0]
            else:
                log.debug("event=change_time_override_dropped path=%s ctime_ns=%d was=%d", self.path,
                          st.st_ctime_ns, ov[1])
                self.change_time_override = None
        return fs


@dataclass(eq=False)
class DirSearch:
    """Enumeration state of a directory open (MS-FSA 2.1.5.6.3 QueryDirectory context)."""

    pattern: str
    names: list[str]
    index: int = 0
    returned_any: bool = False


@dataclass(eq=False)
class Open:
    """An open of a file or directory (MS-FSA 2.1.1.6 Open, plus the MS-SMB2 3.3.1.10 Open
    fields the file-command layer fills in: session, tree_connect, connection, ...)."""

    file_id_persistent: int
    file_id_volatile: int
    share: Share
    file: FileObject
    fd: int
    fd_writable: bool
    granted_access: int
    share_access: int
    create_options: int
    create_disposition: int
    delete_on_close: bool = False
    current_offset: int = 0  # FilePositionInformation
    current_ea_index: int = 0  # Open.CurrentEaIndex (MS-SMB2 3.3.1.10)
    mode: int = 0  # FileModeInformation (from CreateOptions, settable)
    #: MS-FSA Open.UserSetChangeTime / UserSetModificationTime: after a client set the
    #: time through this open, changes made through it no longer move that time
    user_set_change_time: bool = False
    user_set_write_time: int | None = None  # POSIX ns
    search: DirSearch | None = None
    closed: bool = False
    io_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    # --- MS-SMB2 3.3.1.10 fields, filled in by the SMB2 layer ---
    session: Any = None
    tree_connect: Any = None
    connection: Any = None
    is_durable: bool = False
    oplock_level: int = 0
    #: Open.OplockState: "None", "Held" or "Breaking" (MS-SMB2 3.3.1.10; core/oplocks.py)
    oplock_state: str = "None"
    #: Open.OplockTimeout: when an unacknowledged break completes by itself (3.3.2.1)
    oplock_timeout: float = 0.0
    #: the level an oplock break in progress goes to (the Notification's OplockLevel)
    oplock_break_to: int = 0
    #: the last break was LEVEL_II -> NONE (no acknowledgment allowed; an acknowledgment
    #: gets STATUS_INVALID_OPLOCK_PROTOCOL, smbtorture smb2.oplock.levelii500)
    oplock_broken_from_level2: bool = False
    #: Open.Lease (core/leases.py Lease), Open.ClientGuid, Open.IsResilient/IsPersistent
    lease: Any = None
    client_guid: bytes = b""
    is_resilient: bool = False
    is_persistent: bool = False
    #: Open.ResiliencyTimeout (seconds; FSCTL_LMR_REQUEST_RESILIENCY, MS-SMB2 3.3.5.15.9)
    resiliency_timeout: float = 0.0
    #: Open.DurableOpenTimeout (seconds), Open.DurableOpenScavengerTimeout (absolute `now`),
    #: Open.DurableOwner (user name), Open.CreateGuid, Open.DurableFileId
    durable_open_timeout: float = 0.0
    durable_open_scavenger_timeout: float = 0.0
    durable_owner: str = ""
    create_guid: bytes = b""
    #: Open.AppInstanceId (MS-SMB2 3.3.5.9.13)
    app_instance_id: bytes | None = None
    #: Open.LockSequenceArray (3.3.1.10): LockSequenceIndex -> LockSequenceNumber of the valid entries
    lock_sequence_array: dict = field(default_factory=dict)
    file_global_id: int = 0
    lock_count: int = 0
    path_name: str = ""
    pending_locks: list["PendingLock"] = field(default_factory=list)
    #: Open.ResumeKey (MS-SMB2 3.3.1.10): the 24-byte key FSCTL_SRV_REQUEST_RESUME_KEY hands
    #: out for this open (made on the first request), the SourceKey of a server-side copy
    resume_key: bytes = b""
    #: the opener's security identity (store/security.py Token; None: no access checks)
    token: Any = None
    #: the access the opener has to the file by its stored security descriptor (the MxAc
    #: create context's MaximalAccess); None when the file has none (the share's rules)
    maximal_access: int | None = None

    @property
    def file_id(self) -> tuple[int, int]:
        return (self.file_id_persistent, self.file_id_volatile)

    @property
    def path(self) -> str:
        return self.file.path

    @property
    def is_directory(self) -> bool:
        return self.file.is_directory

    @property
    def stream(self) -> str | None:
        return self.file.stream


@dataclass(eq=False)
class PendingLock:
    """A LOCK request waiting for its ranges (MS-FSA 2.1.5.8 'wait until ...')."""

    open: Open
    elements: list[tuple[int, int, int]]  # (offset, length, flags)
    on_complete: Callable[[int], None]
    done: bool = False


@dataclass
class CreateResult:
    open: Open
    create_action: int


# ====================================================================== the store
class ObjectStore:
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
        fs = file_stat(st, o.file.rel[-1] if o.file.rel else "", o.fd, o.share.hide_dot_files, eas=eas)
        if o.stream is not None:  # a named stream: its own size, no directory
            size = len(read_stream(fd_path(o.fd), o.stream))
            fs.end_of_file, fs.allocation_size = size, (size + 4095) & ~4095
            fs.is_directory = False
            fs.number_of_links = st.st_nlink if not stat_mod.S_ISDIR(st.st_mode) else 1
            return o.file.apply_overrides(st, fs)
        if not fs.is_directory:
            fs.allocation_size = allocated_bytes(o.fd, st)
        return o.file.apply_overrides(st, fs)

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
        if desired_access & ACCESS_SYSTEM_SECURITY:
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
                                                         self._max_allowed(share, readonly))
                        want_max = False
                if want_max:
                    access |= self._max_allowed(share, readonly)
                if readonly and (access & (FILE_WRITE_DATA | FILE_APPEND_DATA) or overwrite):
                    raise fail(STATUS_ACCESS_DENIED, "FILE_ATTRIBUTE_READONLY")
                fd = self._open_fd(r, is_dir, False)
                try:
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
                except OSError as e:
                    os.close(fd)
                    raise from_oserror(e) from None
                except BaseException:
                    os.close(fd)
                    raise
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
                                                 self._max_allowed(share, readonly))
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
        try:
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
        except OSError as e:
            os.close(fd)
            raise from_oserror(e) from None
        except BaseException:
            os.close(fd)
            raise
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

    def _stored_sd(self, target: Resolved | int, st: os.stat_result) -> Descriptor | None:
        """The stored security descriptor of the object *target* (resolved entry or fd)
        whose stat is *st*, None when it has none.  Known (dev, ino, ctime) answer from the cache;
        otherwise one getxattr.  A stored descriptor that does not parse denies all
        (an empty DACL) and is logged."""
        key = (st.st_dev, st.st_ino)
        hit = self._sd_cache.get(key)
        if hit is not None and hit[0] == st.st_ctime_ns:
            return hit[1]
        sd: Descriptor | None
        try:
            raw = xattr_call(os.getxattr, target if isinstance(target, int) else self._entry_path(target),
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
                  overwrite: bool, limit: int) -> tuple[int, int]:
        """MS-FSA 2.1.5.1.2.1 access check of an existing file with a stored descriptor:
        DELETE is also granted by FILE_DELETE_CHILD on the parent directory and
        FILE_READ_ATTRIBUTES by FILE_LIST_DIRECTORY there; an overwrite needs
        FILE_WRITE_DATA.  Returns (granted access, maximal access); MAXIMUM_ALLOWED grants
        the maximal access within *limit* (the share's and the READONLY attribute's)."""
        maximal = maximum_allowed(sd, token)
        if ~maximal & (DELETE | FILE_READ_ATTRIBUTES) and r.parent_fd is not None:
            pmax = self._parent_maximal(r.parent_fd, token)
            if pmax & FILE_DELETE_CHILD:
                maximal |= DELETE
            if pmax & FILE_LIST_DIRECTORY:
                maximal |= FILE_READ_ATTRIBUTES
        missing = (access | (FILE_WRITE_DATA if overwrite else 0)) & ~maximal
        if missing:
            raise fail(STATUS_ACCESS_DENIED, f"the security descriptor denies 0x{missing:x}")
        if want_max:
            access |= maximal & limit
            if not access:
                raise fail(STATUS_ACCESS_DENIED, "MAXIMUM_ALLOWED: nothing is allowed")
        return access, maximal

    @staticmethod
    def _dir_readonly(r: Resolved) -> bool:
        return False  # directories have no READONLY attribute here (see attrs.py)

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
                if need & ~maximum_allowed(psd, token):
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
            write_dosinfo(fd_path(fd), a, now_ft)
            new_sd = None
            if token is not None:
                # MS-DTYP 2.5.3.4: the creator's descriptor and/or the parent's inheritable
                # ACEs; with neither only the owner (the creating user) is recorded
                new_sd = inherit(psd, is_dir, creator, token.user, token.primary_group)
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
                    os.rmdir(r.name, dir_fd=r.parent_fd)
                else:
                    os.unlink(r.name, dir_fd=r.parent_fd)
        except OSError as e:
            log.warning("delete-on-close of %s failed: %s", fobj.path, e)
        except NtStatusError as e:  # from resolve
            log.warning("delete-on-close of %s: %s", fobj.path, e)

    def close_all(self, opens: list[Open]) -> None:
        """Close opens (tree disconnect, logoff); already closed ones are skipped."""
        for o in opens:
            try:
                self.close(o)
            except NtStatusError:
                pass

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
                fs = file_stat(st, o.file.rel[-1] if o.file.rel else "", o.fd, o.share.hide_dot_files)
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
                    write_dosinfo(p, a, new_ctime or to_filetime(min(st.st_mtime_ns, st.st_ctime_ns)))
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
                    write_dosinfo(p, default, creation_time)
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

    # ------------------------------------------------------------------ security
    def get_security(self, o: Open, info: int) -> bytes:
        """The descriptor parts named by *info* (MS-SMB2 3.3.5.20.3)."""
        if info & SACL_SECURITY_INFORMATION:
            raise fail(STATUS_ACCESS_DENIED, "SACL needs ACCESS_SYSTEM_SECURITY")
        if not o.granted_access & READ_CONTROL:
            raise fail(STATUS_ACCESS_DENIED, "no READ_CONTROL")
        with o.io_lock:
            if o.closed:
                raise fail(STATUS_FILE_CLOSED)
            try:
                return self._descriptor(o).pack(info)
            except OSError as e:
                raise from_oserror(e) from None

    def _descriptor(self, o: Open) -> Descriptor:
        try:
            raw = os.getxattr(fd_path(o.fd), XATTR_SD)
        except OSError as e:
            if e.errno not in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
                raise
            st = os.fstat(o.fd)
            sd = default_descriptor(st.st_uid, st.st_gid)
            try:  # created over SMB: owned by the user who created it
                owner = xattr_call(os.getxattr, o.fd, XATTR_OWNER)
            except OSError as e2:
                if e2.errno not in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
                    raise
            else:
                if len(owner) >= 8 and len(owner) == 8 + 4 * owner[1] and owner[0] == 1:
                    sd.owner = bytes(owner)
            return sd
        return Descriptor.parse(raw)

    def set_security(self, o: Open, info: int, buf: bytes) -> None:
        """SMB2_0_INFO_SECURITY set (MS-SMB2 3.3.5.21.3): stored in ``user.wsd.sd``; CREATE
        checks later opens against it."""
        if info & SACL_SECURITY_INFORMATION:
            raise fail(STATUS_PRIVILEGE_NOT_HELD, "SACL")
        if info & (OWNER_SECURITY_INFORMATION | GROUP_SECURITY_INFORMATION) and not o.granted_access & WRITE_OWNER:
            raise fail(STATUS_ACCESS_DENIED, "no WRITE_OWNER")
        if info & DACL_SECURITY_INFORMATION and not o.granted_access & WRITE_DAC:
            raise fail(STATUS_ACCESS_DENIED, "no WRITE_DAC")
        if o.share.read_only:
            raise fail(STATUS_ACCESS_DENIED, "read-only share")
        new = Descriptor.parse(buf)
        if info & OWNER_SECURITY_INFORMATION and o.token is not None:
            sec.check_owner(o.token, new.owner)
        with o.io_lock:
            if o.closed:
                raise fail(STATUS_FILE_CLOSED)
            try:
                merged = self._descriptor(o).merge(new, info)
                self._write_sd(o.fd, merged)
            except OSError as e:
                if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
                    raise fail(STATUS_NOT_SUPPORTED_, "no xattrs to keep the descriptor in") from None
                raise from_oserror(e) from None

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
            if fobj.is_directory:
                try:
                    with os.scandir(o.fd) as it:
                        if next(it, None) is not None:
                            raise fail(STATUS_DIRECTORY_NOT_EMPTY, fobj.path)
                except OSError as e:
                    raise from_oserror(e) from None
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
                    if other is not fobj and other.share is fobj.share and other.rel[:len(prefix)] == prefix:
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

    # ------------------------------------------------------------------ LOCK
    def lock(self, o: Open, elements: list[tuple[int, int, int]],
             on_complete: Callable[[int], None] | None = None) -> PendingLock | None:
        """MS-SMB2 3.3.5.14 / MS-FSA 2.1.5.8-9.  *elements*: (offset, length, flags).

        The first element decides the kind of request (3.3.5.14.1 / .2).  Unlocks are
        applied in order; an element that is not a plain unlock gives
        STATUS_INVALID_PARAMETER and a missing lock STATUS_RANGE_NOT_LOCKED, the earlier
        unlocks staying done.  Locks are applied in order and all-or-nothing: an invalid
        element (bad flags, or no FAIL_IMMEDIATELY when LockCount > 1) gives
        STATUS_INVALID_PARAMETER, a conflict with FAIL_IMMEDIATELY STATUS_LOCK_NOT_GRANTED,
        each after releasing what this request had locked.  A single blocking lock that
        conflicts waits: a PendingLock is returned whose *on_complete(status)* runs when it
        is granted, cancelled or its open closed."""
        if o.is_directory:
            raise fail(STATUS_INVALID_PARAMETER, "lock on a directory")
        if not elements:
            raise fail(STATUS_INVALID_PARAMETER, "LockCount 0")
        wake: list[tuple[PendingLock, int]] = []
        with self.mutex:
            if o.closed:
                raise fail(STATUS_FILE_CLOSED)
            fobj = o.file
            if elements[0][2] & SMB2_LOCKFLAG_UNLOCK:
                try:
                    for off, ln, fl in elements:
                        if fl != SMB2_LOCKFLAG_UNLOCK:
                            raise fail(STATUS_INVALID_PARAMETER, f"lock flags 0x{fl:x} in an unlock request")
                        lk = brl.find_unlock(fobj.locks, off, ln, o)
                        if lk is None:
                            raise fail(STATUS_RANGE_NOT_LOCKED)
                        fobj.locks.remove(lk)
                        o.lock_count -= 1
                finally:
                    wake = self._retry_waiters(fobj)
            else:
                granted: list[brl.ByteRangeLock] = []

                def undo() -> None:
                    for lk in granted:
                        fobj.locks.remove(lk)
                    o.lock_count -= len(granted)

                for off, ln, fl in elements:
                    base = fl & ~SMB2_LOCKFLAG_FAIL_IMMEDIATELY
                    if base not in (SMB2_LOCKFLAG_SHARED_LOCK, SMB2_LOCKFLAG_EXCLUSIVE_LOCK) or (
                            len(elements) > 1 and not fl & SMB2_LOCKFLAG_FAIL_IMMEDIATELY):
                        undo()
                        raise fail(STATUS_INVALID_PARAMETER, f"lock flags 0x{fl:x}")
                    if not brl.range_valid(off, ln):
                        undo()
                        raise fail(STATUS_INVALID_LOCK_RANGE)
                    excl = base == SMB2_LOCKFLAG_EXCLUSIVE_LOCK
                    if brl.conflicts(fobj.locks, off, ln, excl, True, o):
                        undo()
                        if fl & SMB2_LOCKFLAG_FAIL_IMMEDIATELY or on_complete is None:
                            raise fail(STATUS_LOCK_NOT_GRANTED)
                        p = PendingLock(o, list(elements), on_complete)
                        fobj.waiters.append(p)
                        o.pending_locks.append(p)
                        return p
                    lk = brl.ByteRangeLock(o, off, ln, excl)
                    fobj.locks.append(lk)
                    granted.append(lk)
                    o.lock_count += 1
                return None
        for p, status in wake:
            p.on_complete(status)
        return None

    def _try_lock(self, o: Open, elements: list[tuple[int, int, int]]) -> int | None:
        """Grant all elements or none; the index of the first conflicting one, or None."""
        fobj = o.file
        granted: list[brl.ByteRangeLock] = []
        for i, (off, ln, fl) in enumerate(elements):
            excl = bool(fl & SMB2_LOCKFLAG_EXCLUSIVE_LOCK)
            if brl.conflicts(fobj.locks, off, ln, excl, True, o):
                for lk in granted:
                    fobj.locks.remove(lk)
                o.lock_count -= len(granted)
                return i
            lk = brl.ByteRangeLock(o, off, ln, excl)
            fobj.locks.append(lk)
            granted.append(lk)
            o.lock_count += 1
        return None

    def _retry_waiters(self, fobj: FileObject) -> list[tuple[PendingLock, int]]:
        """Grant what waiting requests can now get (FIFO); caller calls back outside the lock."""
        out = []
        for p in list(fobj.waiters):
            if p.done:
                fobj.waiters.remove(p)
                continue
            if self._try_lock(p.open, p.elements) is None:
                p.done = True
                fobj.waiters.remove(p)
                if p in p.open.pending_locks:
                    p.open.pending_locks.remove(p)
                out.append((p, STATUS_SUCCESS))
        return out

    def cancel_lock(self, p: PendingLock) -> bool:
        """Cancel a waiting lock request (SMB2 CANCEL): on_complete(STATUS_CANCELLED)."""
        with self.mutex:
            if p.done:
                return False
            p.done = True
            if p in p.open.file.waiters:
                p.open.file.waiters.remove(p)
            if p in p.open.pending_locks:
                p.open.pending_locks.remove(p)
        p.on_complete(STATUS_CANCELLED)
        return True

    # ------------------------------------------------------------------ QUERY_DIRECTORY
    def query_directory(self, o: Open, flags: int, pattern: str, max_output: int,
                        build: Callable[[str, FileStat], Any], min_entry: int) -> list[Any]:
        """Enumerate (MS-FSA 2.1.5.6.3, MS-SMB2 3.3.5.18).  *build(name, stat)* makes an
        entry structure; entries are packed by the caller, which tells us through
        *max_output* how many bytes fit (entries are 8-byte aligned).  Returns the list of
        entries for this call; raises STATUS_NO_SUCH_FILE (first call, no match),
        STATUS_NO_MORE_FILES (end), STATUS_INFO_LENGTH_MISMATCH (buffer below one entry)."""
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
                s = o.search = DirSearch(pattern or "*", [".", ".."] + names)
            out: list[Any] = []
            used = 0
            while s.index < len(s.names):
                name = s.names[s.index]
                if not is_name_in_expression(name, s.pattern):
                    s.index += 1
                    continue
                st = self._entry_stat(o, name)
                if st is None:
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

    def _entry_stat(self, o: Open, name: str) -> FileStat | None:
        """Stat of a directory entry as enumeration reports it (symlinks followed inside
        the share; dangling or escaping ones, and non-UTF-16-able names, are skipped)."""
        try:
            name.encode("utf-16-le")
        except UnicodeEncodeError:
            return None
        hide = o.share.hide_dot_files
        try:
            if name == "." or (name == ".." and not o.file.rel):
                st = os.fstat(o.fd)
                fs = file_stat(st, name, fd_path(o.fd), hide)
            elif name == "..":
                st = os.stat("..", dir_fd=o.fd)
                fs = file_stat(st, "..", f"{fd_path(o.fd)}/..", hide)
            else:
                st = os.stat(name, dir_fd=o.fd, follow_symlinks=False)
                if stat_mod.S_ISLNK(st.st_mode):
                    try:
                        with resolve(o.share, o.file.rel + [name]) as r:
                            if not r.exists or stat_mod.S_ISLNK(r.st.st_mode):
                                return None
                            st = r.st
                            xp = f"{fd_path(r.parent_fd)}/{r.name}" if r.parent_fd is not None else None
                            fs = file_stat(st, name, xp, hide, False)
                            if r.parent_fd is not None:
                                fs.allocation_size = _entry_allocation(r.parent_fd, r.name, st)
                    except NtStatusError:
                        return None
                elif stat_mod.S_ISREG(st.st_mode) or stat_mod.S_ISDIR(st.st_mode):
                    fs = file_stat(st, name, f"{fd_path(o.fd)}/{name}", hide, False)
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
        return fs


def _entry_allocation(dir_fd: int, name: str, st: os.stat_result) -> int:
    """AllocationSize of a directory entry measured like an open file's (FIEMAP), so
    listings and FileAllInformation agree."""
    if not stat_mod.S_ISREG(st.st_mode):
        return 0
    if not st.st_blocks:
        return 0
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return st.st_blocks * 512
    try:
        return allocated_bytes(fd, st)
    except OSError:
        return st.st_blocks * 512
    finally:
        os.close(fd)


_libc = None


def reserve(fd: int, size: int) -> None:
    """Reserve *size* bytes of blocks for *fd* without changing its size
    (fallocate(FALLOC_FL_KEEP_SIZE)); a file system without fallocate is left alone."""
    global _libc
    if size <= 0:
        return
    if _libc is None:
        import ctypes
        import ctypes.util

        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        _libc.fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
    FALLOC_FL_KEEP_SIZE = 1
    if _libc.fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, min(size, 0x7FFFFFFFFFFFFFFF)) != 0:
        import ctypes

        err = ctypes.get_errno()
        if err in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EBADF):
            return
        raise OSError(err, os.strerror(err))


def entry_size(entry: Any) -> int:
    """Packed size of a directory entry (fixed part + name)."""
    return entry.FIXED_SIZE + len(entry.file_name)

