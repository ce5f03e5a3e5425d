"""Oplocks: acquisition (MS-SMB2 3.3.5.9 "Oplock Acquisition"), breaks (3.3.4.6 object
store indicates an oplock break), acknowledgments (3.3.5.22.1) and the oplock break
acknowledgment timer (3.3.2.1).

The object store's oplock rules (MS-FSA 2.1.5.17, 2.1.4.12) are implemented in this
simplified, documented form (what Windows and Samba do, as smbtorture's smb2.oplock and
smb2.session cases check them):

* **Grant** (``grant``): no oplock on a directory or when none is asked for; the level
  asked for (II, EXCLUSIVE, BATCH) when no other open of the same stream exists;
  LEVEL_II when others exist and none of them holds EXCLUSIVE/BATCH; else none.
* **Break on open** (``before_open``): a new open of a stream whose other open holds
  BATCH or EXCLUSIVE breaks it first -- to NONE when the new open overwrites
  (SUPERSEDE/OVERWRITE/OVERWRITE_IF), else to LEVEL_II -- and waits for the
  acknowledgment, the holder's close or the timeout.  Exceptions: an open asking only
  for FILE_READ_ATTRIBUTES/FILE_WRITE_ATTRIBUTES/SYNCHRONIZE (a "stat open") breaks
  nothing unless it overwrites; an EXCLUSIVE holder whose share mode the new open
  violates is not broken (the open fails with SHARING_VIOLATION, as Windows), a BATCH
  holder is (so that the client can close its cached handle).
* **Level II breaks** (``break_level2``): a write, a size change, a byte-range lock or
  an overwriting open breaks every LEVEL_II oplock of the file (the writer's own too)
  to NONE; no acknowledgment is expected (MS-SMB2 2.2.24.1).
* **Timeout** (``on_timer``): an unacknowledged break completes to NONE at
  Open.OplockTimeout (ServerConfig.oplock_break_timeout, 35 s by default), and what
  waited for it proceeds.
* A break that cannot be delivered (the holder's connection is gone: a disconnected
  durable open) completes at once; a disconnected durable open whose BATCH oplock is
  broken is closed (its state cannot be kept consistent with the new opener's).

Sans-IO: notifications leave through ``Connection.send_notification`` (queued for the
driver); timers are Open.OplockTimeout deadlines reported by :meth:`next_deadline` and
fired by the driver through ``Server.handle_timers(now)``.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable

from ..ntstatus import STATUS_INVALID_PARAMETER, NtStatusError
from ..store.constants import FILE_ALL_ACCESS, FILE_WRITE_DATA, MAXIMUM_ALLOWED
from ..wire.base import FileId
from ..wire.commands import (
    SMB2_OPLOCK_LEVEL_BATCH,
    SMB2_OPLOCK_LEVEL_EXCLUSIVE,
    SMB2_OPLOCK_LEVEL_II,
    SMB2_OPLOCK_LEVEL_LEASE,
    SMB2_OPLOCK_LEVEL_NONE,
    OplockBreakNotification,
)
from ..wire.header import Command

log = logging.getLogger("wsd_smb.oplocks")

STATUS_INVALID_DEVICE_STATE = 0xC0000184
STATUS_INVALID_OPLOCK_PROTOCOL = 0xC00000E3

#: Open.OplockState values (MS-SMB2 3.3.1.10)
OPLOCK_STATE_NONE = "None"
OPLOCK_STATE_HELD = "Held"
OPLOCK_STATE_BREAKING = "Breaking"

#: access that does not break oplocks (a "stat open": MS-FSA 2.1.5.1.2.1); for leases
#: READ_CONTROL counts too (smbtorture smb2.oplock.statopen1 vs smb2.lease.statopen4)
FILE_READ_ATTRIBUTES = 0x00000080
FILE_WRITE_ATTRIBUTES = 0x00000100
READ_CONTROL = 0x00020000
SYNCHRONIZE = 0x00100000
STAT_OPEN_ACCESS = FILE_READ_ATTRIBUTES | FILE_WRITE_ATTRIBUTES | SYNCHRONIZE
LEASE_STAT_OPEN_ACCESS = STAT_OPEN_ACCESS | READ_CONTROL

#: CreateDisposition values that overwrite (MS-SMB2 2.2.13)
FILE_SUPERSEDE = 0
FILE_OVERWRITE = 4
FILE_OVERWRITE_IF = 5
OVERWRITING = frozenset({FILE_SUPERSEDE, FILE_OVERWRITE, FILE_OVERWRITE_IF})

_EXCLUSIVE_LEVELS = (SMB2_OPLOCK_LEVEL_EXCLUSIVE, SMB2_OPLOCK_LEVEL_BATCH)


class _Waiter:
    """A request waiting for breaks of *opens* to complete (then *fire* runs once)."""

    __slots__ = ("opens", "fire", "done")

    def __init__(self, opens: set, fire: Callable[[], None]) -> None:
        self.opens = opens
        self.fire = fire
        self.done = False


def is_stat_open(access: int, lease: bool = False) -> bool:
    return not access & ~(LEASE_STAT_OPEN_ACCESS if lease else STAT_OPEN_ACCESS)


class OplockManager:
    """Oplock state of one server's opens (the fields live on the Opens themselves:
    open.oplock_level, open.oplock_state, open.oplock_timeout, open.oplock_break_to).

    *close_disconnected(open)* closes a disconnected durable open (files.py)."""

    def __init__(self, server: Any, share_conflict: Callable[[list, int, int], bool],
                 close_disconnected: Callable[[Any], None]) -> None:
        self.server = server
        self.lock = threading.RLock()
        self._share_conflict = share_conflict
        self._close_disconnected = close_disconnected
        #: what is breaking with an acknowledgment due: opens (OplockState Breaking) and
        #: leases (Lease.Breaking, core/leases.py) -> (deadline, called when it passes)
        self._breaking: dict[Any, tuple[float, Callable[[], None]]] = {}
        self._waiters: list[_Waiter] = []
        #: opens holding an oplock now (a cheap "anything to do?" test on hot paths)
        self.held = 0

    # ------------------------------------------------------------ acquisition
    def grant(self, o: Any, requested: int) -> int:
        """Oplock acquisition for a new open (3.3.5.9): set and return open.oplock_level."""
        level = SMB2_OPLOCK_LEVEL_NONE
        if (self.server.config.oplocks and requested in (SMB2_OPLOCK_LEVEL_II, SMB2_OPLOCK_LEVEL_EXCLUSIVE,
                                                          SMB2_OPLOCK_LEVEL_BATCH)
                and not o.is_directory):
            others = [x for x in list(o.file.opens) if x is not o and not x.closed]
            if not others:
                level = requested
            elif not any(x.oplock_level in _EXCLUSIVE_LEVELS or (
                    x.lease is not None and x.lease.lease_state & 0x02) for x in others):
                # LEVEL_II next to plain opens, level II holders and leases without
                # HANDLE caching (smbtorture smb2.lease.oplock)
                level = SMB2_OPLOCK_LEVEL_II
        with self.lock:
            o.oplock_level = level
            o.oplock_state = OPLOCK_STATE_HELD if level else OPLOCK_STATE_NONE
            if level:
                self.held += 1
        return level

    def active(self) -> bool:
        """Does any open hold (or break) an oplock?  False: nothing can need a break."""
        return self.held > 0 or bool(self._breaking)

    # ------------------------------------------------------------ breaks
    def before_open(self, fobj: Any, access: int, share_access: int, disposition: int, now: float) -> set:
        """Break what a new open of *fobj* must break first; return the opens whose
        breaks are still in progress (the new open waits for them)."""
        wait: set = set()
        overwrite = disposition in OVERWRITING
        if is_stat_open(access) and not overwrite:  # an overwriting stat open breaks (batch13/14/16)
            return wait
        if getattr(fobj, "delete_pending", False):  # the open fails with DELETE_PENDING, no break (doc)
            return wait
        check = access | (FILE_WRITE_DATA if overwrite else 0)
        if access & MAXIMUM_ALLOWED:  # the store grants what it can: judge the share modes on all
            check |= FILE_ALL_ACCESS
        to = SMB2_OPLOCK_LEVEL_NONE if overwrite else SMB2_OPLOCK_LEVEL_II
        undeliverable = []
        with self.lock:
            for h in list(fobj.opens):
                if h.closed or h.oplock_level not in _EXCLUSIVE_LEVELS:
                    continue
                if h.oplock_state == OPLOCK_STATE_BREAKING:
                    wait.add(h)
                    continue
                if h.oplock_level == SMB2_OPLOCK_LEVEL_EXCLUSIVE and self._share_conflict([h], check, share_access):
                    continue  # SHARING_VIOLATION follows, without a break (Windows)
                if self._start_break(h, to, now):
                    wait.add(h)
                else:
                    undeliverable.append(h)
        for h in undeliverable:
            self._undeliverable(h)
        return wait

    def break_level2(self, fobj: Any, origin: Any, now: float) -> None:
        """A write / size change / lock through *origin* (or an overwriting open) breaks
        every LEVEL_II oplock of the file to NONE, the writer's own included (smbtorture
        smb2.oplock.batch6: two breaks); no acknowledgment."""
        with self.lock:
            targets = [h for h in list(fobj.opens)
                       if not h.closed and h.oplock_level == SMB2_OPLOCK_LEVEL_II]
            for h in targets:
                h.oplock_level = SMB2_OPLOCK_LEVEL_NONE
                h.oplock_state = OPLOCK_STATE_NONE
                h.oplock_broken_from_level2 = True
                self.held -= 1
        for h in targets:
            self._notify(h, SMB2_OPLOCK_LEVEL_NONE)

    def _start_break(self, h: Any, to: int, now: float) -> bool:
        """3.3.4.6 with acknowledgment required; False if it could not be sent."""
        h.oplock_state = OPLOCK_STATE_BREAKING
        h.oplock_break_to = to
        h.oplock_timeout = now + self.server.config.oplock_break_timeout
        if not self._notify(h, to):
            return False
        self._breaking[h] = (h.oplock_timeout, lambda: self._drop(h))
        log.debug("event=oplock_break file=%s level=%d to=%d", h.path_name or h.path, h.oplock_level, to)
        return True

    def _notify(self, h: Any, level: int) -> bool:
        conn = h.connection
        if conn is None or conn.closed:
            return False
        body = OplockBreakNotification(oplock_level=level, file_id=FileId(h.file_id_persistent, h.file_id_volatile))
        return conn.send_notification(Command.SMB2_OPLOCK_BREAK, body, session=h.session)

    def _undeliverable(self, h: Any) -> None:
        """No connection for the holder: the break completes with NONE at once; a
        disconnected durable open is closed (MS-SMB2 3.3.4.6).  Disconnected means no
        session any more, or a connection already lost whose clean-up (preserving the
        open for a reconnect) has not run yet: the new opener must not find it still
        there, holding nothing (smbtorture smb2.durable-open.oplock)."""
        with self.lock:
            self._drop(h)
        conn = h.connection
        disconnected = h.session is None or conn is None or conn.closed
        if h.is_durable and disconnected and not h.closed:
            log.info("event=durable_open_closed reason=oplock_break file=%s", h.path)
            self._close_disconnected(h)

    def _drop(self, h: Any) -> None:
        if h.oplock_level and h.oplock_level != SMB2_OPLOCK_LEVEL_LEASE:  # leases count per Lease (leases.py)
            self.held -= 1
        h.oplock_level = SMB2_OPLOCK_LEVEL_NONE
        h.oplock_state = OPLOCK_STATE_NONE
        self._breaking.pop(h, None)

    # ------------------------------------------------------------ acknowledgment
    def acknowledge(self, o: Any, level: int) -> int:
        """MS-SMB2 3.3.5.22.1 after the open was found: returns the level granted."""
        try:
            with self.lock:
                if o.oplock_state != OPLOCK_STATE_BREAKING:
                    if o.oplock_broken_from_level2:  # a LEVEL_II -> NONE break takes no ack (2.2.24.1)
                        o.oplock_broken_from_level2 = False
                        raise NtStatusError(STATUS_INVALID_OPLOCK_PROTOCOL, "LEVEL_II break acknowledged")
                    raise NtStatusError(STATUS_INVALID_DEVICE_STATE, "no oplock break in progress")
                if level == SMB2_OPLOCK_LEVEL_LEASE:
                    self._drop(o)
                    raise NtStatusError(STATUS_INVALID_PARAMETER, "lease level in an oplock acknowledgment")
                if level not in (SMB2_OPLOCK_LEVEL_NONE, SMB2_OPLOCK_LEVEL_II) or level > o.oplock_break_to:
                    self._drop(o)
                    raise NtStatusError(STATUS_INVALID_OPLOCK_PROTOCOL,
                                        f"acknowledged level {level} above {o.oplock_break_to}")
                if level == SMB2_OPLOCK_LEVEL_NONE:
                    self._drop(o)
                else:
                    o.oplock_level = level
                    o.oplock_state = OPLOCK_STATE_HELD
                    self._breaking.pop(o, None)
            return level
        finally:
            self._release()

    def open_closed(self, o: Any) -> None:
        """The open is gone: its oplock goes with it, waiters may proceed."""
        with self.lock:
            if o.oplock_level or o in self._breaking:
                self._drop(o)
        self._release()

    # ------------------------------------------------------------ waiting
    def breaking(self, x: Any, deadline: float, expire: Callable[[], None]) -> None:
        """*x* (a lease) now breaks with an acknowledgment due by *deadline*; *expire*
        (called under the manager's lock) completes it when the deadline passes."""
        with self.lock:
            self._breaking[x] = (deadline, expire)

    def is_breaking(self, x: Any) -> bool:
        return x in self._breaking

    def break_done(self, x: Any) -> None:
        """The break of *x* is over (acknowledged, given up): waiters may proceed."""
        with self.lock:
            self._breaking.pop(x, None)
        self._release()

    def wait(self, opens: set, fire: Callable[[], None]) -> _Waiter | None:
        """Run *fire* once none of *opens* is breaking any more.  None: nothing to wait
        for now (the caller goes on at once)."""
        with self.lock:
            pending = {h for h in opens if h in self._breaking}
            if not pending:
                return None
            w = _Waiter(pending, fire)
            self._waiters.append(w)
            return w

    def cancel_wait(self, w: _Waiter) -> bool:
        with self.lock:
            if w.done:
                return False
            w.done = True
            if w in self._waiters:
                self._waiters.remove(w)
            return True

    def _release(self) -> None:
        with self.lock:
            ready = [w for w in self._waiters if not any(h in self._breaking for h in w.opens)]
            for w in ready:
                w.done = True
                self._waiters.remove(w)
        # newest first: a later conflicting open may need a further break, which the
        # earlier ones then wait for too (smbtorture smb2.lease.breaking3: RH -> R -> NONE
        # while both opens stay pending)
        for w in reversed(ready):
            w.fire()

    # ------------------------------------------------------------ timer (3.3.2.1)
    def next_deadline(self) -> float | None:
        with self.lock:
            if not self._breaking:
                return None
            return min(d for d, _ in self._breaking.values())

    def on_timer(self, now: float) -> None:
        with self.lock:
            expired = [(x, fn) for x, (d, fn) in self._breaking.items() if d <= now]
            for x, fn in expired:
                log.info("event=break_timeout what=%s", type(x).__name__)
                self._breaking.pop(x, None)
                fn()
        if expired:
            self._release()


__all__ = ["OplockManager", "OPLOCK_STATE_NONE", "OPLOCK_STATE_HELD", "OPLOCK_STATE_BREAKING",
           "STATUS_INVALID_OPLOCK_PROTOCOL", "STATUS_INVALID_DEVICE_STATE", "is_stat_open"]
