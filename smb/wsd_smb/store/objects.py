"""The object store's records (MS-FSA 2.1.1: File, Open, byte-range lock waiters, directory
searches) and the constants its parts share."""
from __future__ import annotations

import errno
import logging
import os
import stat as stat_mod
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from . import locks as brl
from .attrs import FileStat, allocated_bytes
from .paths import Share

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
    #: Open.IsReplayEligible: a replayed CREATE with Open.CreateGuid may get this open back
    #: (3.3.5.9.10) until a request names it (core/replay.py)
    is_replay_eligible: bool = False
    #: Open.ChannelSequence, Open.OutstandingRequestCount, Open.OutstandingPreRequestCount
    #: (MS-SMB2 3.3.5.2.10), and the generation that moves with ChannelSequence (core/replay.py)
    channel_sequence: int = 0
    outstanding_request_count: int = 0
    outstanding_pre_request_count: int = 0
    channel_generation: int = 0
    #: data was written through this open (its close breaks the parent directory's
    #: leases, core/leases.py break_parent)
    written: bool = False
    #: the CreateAction of the CREATE that made the open (what a replay of it answers)
    create_action: int = 1
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
    #: when the CREATE that made it finished (seconds since the epoch; the SMB2 layer sets it,
    #: the status report shows it)
    open_time: float = 0.0

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
