"""Shares and path resolution confined to a share.

SMB2 names are share-relative, ``\\``-separated (MS-SMB2 2.2.13 / 3.3.5.9).  A name is
split into components and checked (MS-FSCC 2.1.5 naming rules): no empty component, no
``.``, none of ``" * / : < > ? |`` or control characters, at most 255 characters each.
A ``..`` component removes the component before it, on the name, before anything is
looked up (as Windows' and Samba's servers canonicalise a path); one with nothing left to
remove would leave the share and is STATUS_OBJECT_PATH_SYNTAX_BAD.  A trailing
``::$DATA`` (the default data stream) is accepted and dropped; other streams are refused (the store has no alternate data streams).

Resolution walks the components with ``openat``-style calls from a directory fd of the
share root: every intermediate directory is opened with ``O_NOFOLLOW | O_DIRECTORY``
relative to its parent, so a component swapped for a symlink between the check and the
open fails instead of being followed.  Symlinks are followed by the resolver itself:
their target (relative, or absolute under the share's real path) is pushed back onto the
component queue; a target that would leave the share (``..`` above the root, an absolute
path outside it) ends the resolution with STATUS_ACCESS_DENIED, as Samba does with
``wide links = no``.  At most 40 symlinks are followed per resolution.

Case: a component that does not exist with its exact spelling is looked up
case-insensitively in its directory (``str.casefold``), like Samba's default
``case sensitive = auto`` for SMB2 clients; names are created as the client spelled them
(case preserving).  ``Share(case_sensitive=True)`` switches the fallback off.
A component that is an 8.3 mangled name (shortname.py) finds the long name it stands for.
"""
from __future__ import annotations

import ctypes
import os
import stat as stat_mod
import threading
from collections import deque
from dataclasses import dataclass, field

from .namepolicy import NamePatterns
from .shortname import is_8_3, looks_mangled, short_name
from .errors import (
    STATUS_ACCESS_DENIED,
    STATUS_INVALID_PARAMETER,
    STATUS_OBJECT_NAME_INVALID,
    STATUS_OBJECT_NAME_NOT_FOUND,
    STATUS_OBJECT_PATH_NOT_FOUND,
    STATUS_OBJECT_PATH_SYNTAX_BAD,
    fail,
    from_oserror,
)

MAX_COMPONENT = 255
MAX_SYMLINKS = 40
_BAD_CHARS = frozenset('"*/:<>?|') | frozenset(chr(c) for c in range(0x20))
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass
class Share:
    """A disk share of the object store: a name, a root directory and options.

    read_only: every modifying access is refused (STATUS_ACCESS_DENIED).
    case_sensitive: no case-insensitive fallback in lookups (see module docstring).
    hide_dot_files: names beginning with '.' carry FILE_ATTRIBUTE_HIDDEN (Samba default).

    Namespace policy (store/namepolicy.py; None / False = off, the default):
    hide_files: names carrying FILE_ATTRIBUTE_HIDDEN (Samba ``hide files``).
    veto_files: names neither listed nor openable (Samba ``veto files``).
    delete_veto_files: removing a directory that holds only vetoed names removes them too
    (Samba ``delete veto files``); otherwise such a directory is not empty.
    hide_unreadable: Share.DoAccessBasedDirectoryEnumeration (MS-SMB2 3.3.1.6), Samba
    ``hide unreadable``: QUERY_DIRECTORY leaves out entries the session may not read.
    """

    name: str
    path: str
    read_only: bool = False
    case_sensitive: bool = False
    hide_dot_files: bool = True
    options: dict = field(default_factory=dict)
    # namespace policy (config: hide_files, veto_files, delete_veto_files, hide_unreadable)
    hide_files: "NamePatterns | None" = None
    veto_files: "NamePatterns | None" = None
    delete_veto_files: bool = False
    hide_unreadable: bool = False

    def __post_init__(self) -> None:
        self.path = os.path.realpath(self.path)
        if not os.path.isdir(self.path):
            raise ValueError(f"share {self.name}: {self.path} is not a directory")

    def open_root(self) -> int:
        """A new directory fd of the share root (caller closes), opened relative to the
        kept root fd (no walk of the share's own path)."""
        return os.open(".", _DIR_FLAGS, dir_fd=self.root_fd())

    def root_fd(self) -> int:
        """The share root's directory fd that path walks start from: opened once and kept
        for the server's life (never closed by a :class:`Resolved`), so a lookup does not
        walk the share's own path each time (as smbd keeps its share directory open)."""
        fd = _ROOT_FDS.get(self.path)
        if fd is None:
            with _ROOT_LOCK:
                fd = _ROOT_FDS.get(self.path)
                if fd is None:
                    fd = _ROOT_FDS[self.path] = os.open(self.path, _DIR_FLAGS)
        return fd


#: share path -> its kept root fd (Share.root_fd); shares with the same path share one
_ROOT_FDS: dict[str, int] = {}
_ROOT_LOCK = threading.Lock()


# ---------------------------------------------------------------- cached-only lookups
# openat2(2) (Linux 5.6; RESOLVE_CACHED since 5.12): a path walk that fails with EAGAIN
# instead of doing I/O when a component is not in the dentry cache.
_SYS_OPENAT2 = 437  # the same number on every Linux architecture (asm-generic table)
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_NO_SYMLINKS = 0x04
_RESOLVE_BENEATH = 0x08
_RESOLVE_CACHED = 0x20


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def _load_openat2():
    """libc's syscall() if openat2 with RESOLVE_CACHED works here, else None."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        syscall = libc.syscall
    except (OSError, AttributeError):
        return None
    syscall.restype = ctypes.c_long
    how = _OpenHow(os.O_PATH | os.O_CLOEXEC, 0, _RESOLVE_CACHED | _RESOLVE_BENEATH)
    fd = syscall(_SYS_OPENAT2, ctypes.c_int(-100), b".", ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how)))
    if fd < 0:  # ENOSYS (no openat2) or EINVAL (no RESOLVE_CACHED): no cached-only lookups
        return None
    os.close(fd)
    return syscall


_openat2 = _load_openat2()
_CACHED_HOW = _OpenHow(os.O_PATH | os.O_CLOEXEC, 0,
                       _RESOLVE_CACHED | _RESOLVE_BENEATH | _RESOLVE_NO_SYMLINKS | _RESOLVE_NO_MAGICLINKS)
_CACHED_HOW_REF = ctypes.byref(_CACHED_HOW)
_CACHED_HOW_SIZE = ctypes.c_size_t(ctypes.sizeof(_CACHED_HOW))

#: file systems whose metadata calls on cached objects (fstat, f*xattr, close of a
#: read-only fd) are served from memory; network and FUSE file systems are not listed
LOCAL_FS_TYPES = frozenset({"ext2", "ext3", "ext4", "xfs", "btrfs", "tmpfs", "f2fs", "overlay", "zfs", "jfs"})


def fs_type(path: str) -> str | None:
    """The file-system type of the mount holding *path* (from /proc/self/mountinfo)."""
    best, best_type = "", None
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                left, _, right = line.partition(" - ")
                fields = left.split()
                if len(fields) < 5 or not right:
                    continue
                mnt = fields[4].replace("\\040", " ")
                if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
                    best, best_type = mnt, right.split()[0]
    except OSError:
        return None
    return best_type


def cached_lookup_ok(path: str) -> bool:
    """Cached-only lookups can be trusted under *path* (a share's directory): openat2
    RESOLVE_CACHED works and the path is on a local file system."""
    return _openat2 is not None and fs_type(os.path.realpath(path)) in LOCAL_FS_TYPES


def path_cached(share: "Share", parts: list[str]) -> bool:
    """*parts* (exact on-disk names, no symlinks) exist under the share root and every
    component is in the kernel's dentry cache, so resolving them does no I/O.  False for
    anything else (not cached, missing, a symlink on the way, other case on disk):
    the caller then does the full lookup where blocking is allowed."""
    if not parts:
        return True
    if _openat2 is None:
        return False
    fd = _openat2(_SYS_OPENAT2, ctypes.c_int(share.root_fd()), "/".join(parts).encode("utf-8", "surrogateescape"),
                  _CACHED_HOW_REF, _CACHED_HOW_SIZE)
    if fd < 0:
        return False
    os.close(fd)
    return True


_BAD_STREAM_CHARS = frozenset("\\/:\0")  # NTFS stream names may hold anything else


def split_name(name: str, *, leading_separator_ok: bool = False) -> list[str]:
    """Check and split an SMB2 share-relative name into components ([] = share root);
    a named stream is refused (STATUS_OBJECT_NAME_INVALID)."""
    parts, stream = split_name_stream(name, leading_separator_ok=leading_separator_ok)
    if stream:
        raise fail(STATUS_OBJECT_NAME_INVALID, f"stream name not allowed here: {name!r}")
    return parts


def split_name_stream(name: str, *, leading_separator_ok: bool = False) -> tuple[list[str], str | None]:
    """Like :func:`split_name`, for names that may end in ``:stream[:$DATA]``: returns
    (components, stream name or None).  ``name::$DATA`` (the file's data stream, named
    explicitly) gives the stream name ``""``."""
    if leading_separator_ok:
        name = name.lstrip("\\")
    elif name.startswith("\\"):
        # MS-SMB2 3.3.5.9: a name beginning with a separator is invalid
        raise fail(STATUS_INVALID_PARAMETER, "name begins with a path separator")
    if name.endswith("\\"):
        name = name[:-1]
    if not name:
        return [], None
    parts = name.split("\\")
    last = parts[-1]
    stream_name = None
    if ":" in last:
        base, _, stream = last.partition(":")
        sname, typed, stype = stream.partition(":")
        if (typed and stype.upper() != "$DATA") or (not sname and not typed):
            raise fail(STATUS_OBJECT_NAME_INVALID, f"bad stream syntax: {last!r}")
        if not sname:
            stream_name = ""  # name::$DATA
        if sname:
            if len(sname) > MAX_COMPONENT or any(c in _BAD_STREAM_CHARS for c in sname):
                raise fail(STATUS_OBJECT_NAME_INVALID, f"bad stream name {sname!r}")
            stream_name = sname
        if not base:
            if not stream_name:  # "::$DATA" alone, or ":"
                raise fail(STATUS_OBJECT_NAME_INVALID, f"bad path component {last!r}")
            parts = parts[:-1]  # a stream of the directory named by the rest ("dir\:s" / ":s")
        else:
            parts[-1] = base
    out: list[str] = []
    for p in parts:
        if p == "..":
            # ".." names the previous component's parent, resolved on the name as Windows'
            # and Samba's servers do (smb2.notify.tree opens "dir\\sub\\.."); one that
            # would climb above the share root is STATUS_OBJECT_PATH_SYNTAX_BAD.  The name
            # never reaches the file system with a ".." in it.
            if not out:
                raise fail(STATUS_OBJECT_PATH_SYNTAX_BAD, f"'..' leaves the share: {name!r}")
            out.pop()
            continue
        if p in ("", "."):
            raise fail(STATUS_OBJECT_NAME_INVALID, f"bad path component {p!r}")
        if len(p) > MAX_COMPONENT:
            raise fail(STATUS_OBJECT_NAME_INVALID, "component longer than 255 characters")
        if any(c in _BAD_CHARS for c in p):
            raise fail(STATUS_OBJECT_NAME_INVALID, f"bad character in {p!r}")
        out.append(p)
    return out, stream_name


@dataclass
class Resolved:
    """Result of a resolution.

    rel:       share-relative components as they are on disk (after symlinks and case
               folding); [] is the share root.
    parent_fd: directory fd of the parent (None for the root); owned by this object.
    name:      last component as on disk (or as given, when it does not exist).
    st:        lstat of the object, None if it does not exist.
    """

    share: Share
    rel: list[str]
    parent_fd: int | None
    name: str | None
    st: os.stat_result | None
    _fds: list[int] = field(default_factory=list, repr=False)

    @property
    def exists(self) -> bool:
        return self.st is not None

    def close(self) -> None:
        root = _ROOT_FDS.get(self.share.path)
        for fd in self._fds:
            if fd != root:  # the share's kept root fd stays open
                os.close(fd)
        self._fds.clear()

    def __enter__(self) -> "Resolved":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _lookup(share: Share, dir_fd: int, comp: str) -> tuple[str, os.stat_result] | None:
    """The on-disk name and lstat of *comp* in *dir_fd*, or None."""
    try:
        return comp, os.stat(comp, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        pass
    except OSError as e:
        raise from_oserror(e) from None
    if share.case_sensitive:
        return None
    want = comp.casefold()
    try:
        names = sorted(n for n in os.listdir(dir_fd) if n.casefold() == want)
    except OSError as e:
        raise from_oserror(e) from None
    if not names and looks_mangled(comp):
        up = comp.upper()
        try:
            names = [n for n in os.listdir(dir_fd) if not is_8_3(n) and short_name(n) == up]
        except OSError as e:
            raise from_oserror(e) from None
    for n in names:
        try:
            return n, os.stat(n, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            continue
        except OSError as e:
            raise from_oserror(e) from None
    return None


def resolve(share: Share, parts: list[str], *, follow_last: bool = True) -> Resolved:
    """Resolve *parts* (from :func:`split_name`) inside *share* (see module docstring).

    A missing last component gives ``st=None`` (the caller may create it); a missing
    intermediate one raises STATUS_OBJECT_PATH_NOT_FOUND."""
    root = share.root_fd()
    fds = [root]
    rel: list[str] = []
    queue = deque(parts)
    hops = 0
    try:
        while queue:
            comp = queue.popleft()
            last = not queue
            if comp in ("", "."):
                if last:
                    break
                continue
            if comp == "..":  # only from symlink targets
                if not rel:
                    raise fail(STATUS_ACCESS_DENIED, "symlink leads out of the share")
                os.close(fds.pop())
                rel.pop()
                continue
            found = _lookup(share, fds[-1], comp)
            if found is None:
                if last:
                    return Resolved(share, rel + [comp], fds[-1], comp, None, fds)
                raise fail(STATUS_OBJECT_PATH_NOT_FOUND, f"{comp!r} not found")
            actual, st = found
            if stat_mod.S_ISLNK(st.st_mode) and (follow_last or not last):
                hops += 1
                if hops > MAX_SYMLINKS:
                    raise fail(STATUS_ACCESS_DENIED, "too many symlinks")
                try:
                    target = os.readlink(actual, dir_fd=fds[-1])
                except OSError as e:
                    raise from_oserror(e) from None
                if target.startswith("/"):
                    t = os.path.normpath(target)
                    if t != share.path and not t.startswith(share.path.rstrip("/") + "/"):
                        raise fail(STATUS_ACCESS_DENIED, "symlink points outside the share")
                    tparts = [p for p in t[len(share.path):].split("/") if p]
                    for fd in fds[1:]:
                        os.close(fd)
                    del fds[1:]
                    rel.clear()
                else:
                    tparts = [p for p in target.split("/") if p]
                queue.extendleft(reversed(tparts))
                if not queue:  # symlink to "." of its own directory: the directory itself
                    break
                continue
            if last:
                return Resolved(share, rel + [actual], fds[-1], actual, st, fds)
            if not stat_mod.S_ISDIR(st.st_mode):
                raise fail(STATUS_OBJECT_PATH_NOT_FOUND, f"{actual!r} is not a directory")
            try:
                fd = os.open(actual, _DIR_FLAGS, dir_fd=fds[-1])
            except OSError as e:  # ELOOP/ENOTDIR: swapped for a symlink meanwhile
                raise from_oserror(e) from None
            fds.append(fd)
            rel.append(actual)
        # the path named a directory already open at the top of fds
        st = os.fstat(fds[-1])
        if not rel:
            return Resolved(share, [], None, None, st, fds)
        # parent fd: re-walk is unnecessary, fds[-2] is the parent directory
        return Resolved(share, list(rel), fds[-2], rel[-1], st, fds)
    except BaseException:
        for fd in fds:
            if fd != root:
                os.close(fd)
        raise


def resolve_existing(share: Share, parts: list[str]) -> Resolved:
    r = resolve(share, parts)
    if not r.exists:
        r.close()
        raise fail(STATUS_OBJECT_NAME_NOT_FOUND, "\\".join(parts))
    return r
