"""Byte-range LOCK and UNLOCK in the object store (MS-FSA 2.1.5.7, 2.1.5.8), with waiting
requests that a later unlock or close grants."""
from __future__ import annotations

import logging
from typing import Callable

from . import locks as brl
from .constants import (
    SMB2_LOCKFLAG_EXCLUSIVE_LOCK,
    SMB2_LOCKFLAG_FAIL_IMMEDIATELY,
    SMB2_LOCKFLAG_SHARED_LOCK,
    SMB2_LOCKFLAG_UNLOCK,
)
from .errors import (
    STATUS_CANCELLED,
    STATUS_FILE_CLOSED,
    STATUS_INVALID_LOCK_RANGE,
    STATUS_INVALID_PARAMETER,
    STATUS_LOCK_NOT_GRANTED,
    STATUS_RANGE_NOT_LOCKED,
    STATUS_SUCCESS,
    fail,
)

from .objects import FileObject, Open, PendingLock

log = logging.getLogger("wsd_smb.store")


class LockMixin:
    """Byte-range locking of the object store (mixed into :class:`~.objectstore.ObjectStore`)."""

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
