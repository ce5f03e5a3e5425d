"""Leases (SMB 2.1+): the lease table (MS-SMB2 3.3.1.12/3.3.1.13: GlobalLeaseTableList by
ClientGuid, LeaseTable.LeaseList by LeaseKey), lease acquisition (3.3.5.9.8 RqLs v1,
3.3.5.9.11 RqLs v2), the object store's lease break (3.3.4.7, LB-1 ... LB-8), Lease Break
Acknowledgment (3.3.5.22.2) and the lease break acknowledgment timer (3.3.2.5).

Lease states are combinations of SMB2_LEASE_READ_CACHING (R), SMB2_LEASE_HANDLE_CACHING
(H) and SMB2_LEASE_WRITE_CACHING (W).  The object store's granular-oplock rules (MS-FSA
2.1.5.17.2, 2.1.4.12) in the simplified form implemented here:

* **Grant**: a request without R is granted nothing; W only while no open of the file
  outside the lease exists; R and H otherwise (not while another open holds a BATCH or
  EXCLUSIVE oplock).  A second open with the same LeaseKey shares the lease and may
  upgrade it; during a break the current state is returned with
  SMB2_LEASE_FLAG_BREAK_IN_PROGRESS.
* **Directory leases** (SMB 3.x, ``ServerConfig.directory_leases``; MS-FSA 2.1.5.17.2:
  a directory takes R and RH, never W): a request is granted what it asks for within
  RH (RWH -> RH, RW -> R).  A change to the directory's contents made through a child
  open -- a create, an overwrite, a delete, a rename into or out of it, a set-info of a
  child's times/size, the close of a child that was written -- breaks the directory's
  leases to NONE (MS-FSA 2.1.4.12 with PARENT_OBJECT; :meth:`break_parent`) without
  making the operation wait, except the lease whose key the child open carries as its
  ParentLeaseKey (same ClientGuid: MS-FSA 2.1.4.12.2).  Sharing violations and deletes
  of the directory itself break H as for files (``before_open``, ``before_rename``).  A
  change while the lease breaks is remembered and breaks it on to NONE after the
  acknowledgment (``Lease.parent_break_pending``).
* **Breaks on open** (``before_open``): an open whose share mode conflicts with the
  lease's opens removes H only (so that the client can close its cached handles; the
  open is then retried) and nothing else; otherwise an open from outside the lease
  removes W, an overwriting one everything.  The new open waits
  for breaks that need an acknowledgment (LB-5: all but READ-only).
* **Breaks on write/size change**: other leases lose R (and W).
* LeaseBreakTimeout: ``ServerConfig.oplock_break_timeout`` (35 s); at the deadline the
  lease drops to NONE (3.3.2.5) and what waited for it proceeds.

Epochs (v2, 3.x): a new lease answers the request's Epoch + 1; every state change
increments Lease.Epoch (LB-6 for breaks).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable

from ..ntstatus import STATUS_INVALID_PARAMETER, STATUS_OBJECT_NAME_NOT_FOUND, NtStatusError
from ..store.constants import FILE_ALL_ACCESS, FILE_WRITE_DATA, MAXIMUM_ALLOWED
from ..wire.commands import (
    SMB2_LEASE_HANDLE_CACHING,
    SMB2_LEASE_NONE,
    SMB2_LEASE_READ_CACHING,
    SMB2_LEASE_WRITE_CACHING,
    SMB2_NOTIFY_BREAK_LEASE_FLAG_ACK_REQUIRED,
    SMB2_OPLOCK_LEVEL_LEASE,
    LeaseBreakNotification,
)
from ..wire.contexts import (
    SMB2_CREATE_REQUEST_LEASE,
    SMB2_LEASE_FLAG_BREAK_IN_PROGRESS,
    SMB2_LEASE_FLAG_PARENT_LEASE_KEY_SET,
    LeaseRequest,
    LeaseRequestV2,
    LeaseResponse,
    LeaseResponseV2,
)
from ..wire.commands import CreateContext
from ..wire.header import Command
from .oplocks import OVERWRITING, OplockManager, is_stat_open

log = logging.getLogger("wsd_smb.leases")

R, H, W = SMB2_LEASE_READ_CACHING, SMB2_LEASE_HANDLE_CACHING, SMB2_LEASE_WRITE_CACHING
STATUS_UNSUCCESSFUL = 0xC0000001
STATUS_REQUEST_NOT_ACCEPTED = 0xC00000D0


def state_name(s: int) -> str:
    return "".join(c for c, b in (("R", R), ("H", H), ("W", W)) if s & b) or "NONE"


@dataclass(eq=False)
class Lease:
    """Per Lease, MS-SMB2 3.3.1.13."""

    lease_key: bytes
    client_guid: bytes
    file_name: str
    file: Any  # the object store's FileObject the lease is on
    version: int = 1
    lease_state: int = SMB2_LEASE_NONE
    break_to_lease_state: int = SMB2_LEASE_NONE
    lease_break_timeout: float = 0.0
    lease_opens: list = field(default_factory=list)
    breaking: bool = False
    held: bool = True
    break_notification: LeaseBreakNotification | None = None
    file_delete_on_close: bool = False
    epoch: int = 0
    parent_lease_key: bytes = b"\0" * 16
    #: opens that conflict with the break in progress wait for its acknowledgment
    #: (False for an overwrite's break of a lease without W: smbtorture lease.breaking4)
    break_blocking: bool = True
    #: a directory lease whose directory changed while a break of it was in progress: once
    #: that break is acknowledged with R still held, it is broken again to NONE
    parent_break_pending: bool = False


@dataclass
class BreakOutcome:
    """What :meth:`LeaseManager.object_store_lease_break` did (for the caller and tests)."""

    new_state: int | None  # the state the break completed with at once (None: still breaking)
    sent: bool = False
    ack_required: bool = False
    closed: list = field(default_factory=list)


class LeaseManager:
    """The GlobalLeaseTableList of one server.  *close_open(open)* closes an open that
    lost its connection (LB-3)."""

    def __init__(self, server: Any, oplocks: OplockManager, close_open: Callable[[Any], None],
                 share_conflict: Callable[[list, int, int], bool]) -> None:
        self.server = server
        self.oplocks = oplocks
        self._close_open = close_open
        self._share_conflict = share_conflict
        self.lock = oplocks.lock  # one lock for oplock and lease state
        #: GlobalLeaseTableList: ClientGuid -> LeaseTable.LeaseList (LeaseKey -> Lease)
        self.global_lease_table_list: dict[bytes, dict[bytes, Lease]] = {}
        #: leased directories: the directory's FileObject.key -> its leases; empty unless a
        #: directory lease exists, so that child changes cost one truthiness test otherwise
        self.dir_leases: dict[tuple, list[Lease]] = {}

    # ------------------------------------------------------------ lookup
    def lookup(self, client_guid: bytes, lease_key: bytes) -> Lease | None:
        with self.lock:
            return self.global_lease_table_list.get(client_guid, {}).get(lease_key)

    # ------------------------------------------------------------ acquisition
    @staticmethod
    def parse_request(data: bytes, dialect: int) -> tuple[LeaseRequest | LeaseRequestV2, int]:
        """RqLs data: version 2 (52 bytes) on SMB 3.x, else version 1 (32 bytes)."""
        if dialect >= 0x0300 and len(data) >= LeaseRequestV2.FIXED_SIZE:
            return LeaseRequestV2.unpack(data, 0), 2
        if len(data) >= LeaseRequest.FIXED_SIZE:
            return LeaseRequest.unpack(data[:LeaseRequest.FIXED_SIZE], 0), 1
        raise NtStatusError(STATUS_INVALID_PARAMETER, "RqLs context too short")

    def check_key(self, client_guid: bytes, lease_key: bytes, fobj: Any) -> None:
        """3.3.5.9.8: a LeaseKey already used by this client for another file (*fobj*:
        the open file about to be opened, None if it has no opens) ->
        STATUS_INVALID_PARAMETER."""
        lease = self.lookup(client_guid, lease_key)
        if lease is not None and lease.file is not fobj and lease.lease_opens:
            raise NtStatusError(STATUS_INVALID_PARAMETER, "LeaseKey in use for another file")

    def grant(self, o: Any, req: Any, version: int, client_guid: bytes, name: str,
              directory_leasing: bool = False) -> tuple[Lease | None, int]:
        """Lease acquisition for a new open; returns (lease, response flags).  None: no
        lease (a directory when *directory_leasing* is off for the connection, or the
        lease key names another file).  *directory_leasing*: the connection is 3.x and the
        server offers SMB2_GLOBAL_CAP_DIRECTORY_LEASING."""
        if o.is_directory and not directory_leasing:
            return None, 0
        key = bytes(req.lease_key)
        requested = req.lease_state & (R | H | W)
        if o.is_directory:
            requested &= R | H  # never W on a directory (MS-FSA 2.1.5.17.2)
        if not requested & R:
            requested = SMB2_LEASE_NONE  # W/H without R are not granted (MS-FSA 2.1.5.17.2)
        with self.lock:
            table = self.global_lease_table_list.setdefault(client_guid, {})
            lease = table.get(key)
            if lease is not None and lease.file is not o.file:
                if lease.lease_opens:
                    raise NtStatusError(STATUS_INVALID_PARAMETER, "LeaseKey in use for another file")
                lease = None
            flags = 0
            new = lease is None
            if new:
                lease = Lease(key, client_guid, name, o.file, version=version)
                if version == 2:
                    # 3.3.5.9.11: ParentLeaseKey is kept when the client says it is set and the
                    # server does directory leasing (what breaks of the parent compare with)
                    if directory_leasing and req.flags & SMB2_LEASE_FLAG_PARENT_LEASE_KEY_SET:
                        lease.parent_lease_key = bytes(req.parent_lease_key)
                    lease.epoch = getattr(req, "epoch", 0)
                table[key] = lease
                self.oplocks.held += 1
                if o.is_directory:
                    self.dir_leases.setdefault(o.file.key, []).append(lease)
            lease.lease_opens.append(o)
            o.lease = lease
            o.oplock_level = SMB2_OPLOCK_LEVEL_LEASE
            o.oplock_state = "Held"
            if lease.breaking:
                flags |= SMB2_LEASE_FLAG_BREAK_IN_PROGRESS
                return lease, flags
            # stat opens (attributes only) do not count (smbtorture smb2.lease.statopen*)
            # (stat opens without a lease of their own do not count: smb2.lease.statopen*)
            others = [x for x in list(o.file.opens) if x is not o and not x.closed and x.lease is not lease
                      and not (x.lease is None and is_stat_open(x.granted_access, lease=True))]
            if new:
                grant = requested
            elif requested & lease.lease_state != lease.lease_state:
                grant = lease.lease_state  # no downgrade, and no "sidegrade" (RH + RW stays RH)
            elif not others:
                grant = requested  # an upgrade: the request keeps every current bit
            else:
                # next to other opens an upgrade happens only as a whole and only to a state
                # that can be shared (no W; R only next to oplock holders): smb2.lease.upgrade3
                shareable = R if any(x.oplock_level in (0x01, 0x08, 0x09) for x in others) else R | H
                grant = requested if not requested & ~shareable else lease.lease_state
            if others:
                grant &= ~W  # W only while no open outside the lease exists
                if any(x.oplock_level in (0x01, 0x08, 0x09) for x in others):
                    grant &= R  # next to oplock holders: R only (smbtorture smb2.lease.oplock)
            if not grant & R:
                grant = SMB2_LEASE_NONE
            if grant != lease.lease_state or new:
                if lease.version == 2:  # the lease's version, whatever the request's (v2_epoch2)
                    lease.epoch = (lease.epoch + 1) & 0xFFFF
                lease.lease_state = grant
            if o.delete_on_close:
                lease.file_delete_on_close = True
            return lease, flags

    def response_context(self, lease: Lease, flags: int = 0) -> CreateContext:
        """SMB2_CREATE_RESPONSE_LEASE (2.2.14.2.10) or _V2 (2.2.14.2.11)."""
        if lease.breaking:
            flags |= SMB2_LEASE_FLAG_BREAK_IN_PROGRESS
        if lease.version == 2:
            if lease.parent_lease_key != b"\0" * 16:
                flags |= SMB2_LEASE_FLAG_PARENT_LEASE_KEY_SET
            data = LeaseResponseV2(lease_key=lease.lease_key, lease_state=lease.lease_state, flags=flags,
                                   parent_lease_key=lease.parent_lease_key, epoch=lease.epoch).pack(0)
        else:
            data = LeaseResponse(lease_key=lease.lease_key, lease_state=lease.lease_state,
                                 lease_flags=flags).pack(0)
        return CreateContext(name=SMB2_CREATE_REQUEST_LEASE, data=data)

    def open_closed(self, o: Any) -> None:
        """3.3.4.17: the open leaves Lease.LeaseOpens; an empty lease leaves its table."""
        lease = o.lease
        if lease is None:
            return
        with self.lock:
            if o in lease.lease_opens:
                lease.lease_opens.remove(o)
            if lease.lease_opens:
                return
            table = self.global_lease_table_list.get(lease.client_guid, {})
            if table.get(lease.lease_key) is lease:
                del table[lease.lease_key]
                self.oplocks.held -= 1
                if not table:
                    self.global_lease_table_list.pop(lease.client_guid, None)
            self._forget_dir_lease(lease)
            lease.breaking = False
            lease.lease_state = SMB2_LEASE_NONE
        self.oplocks.break_done(lease)

    def _forget_dir_lease(self, lease: Lease) -> None:
        """(under the lock) *lease* leaves the directory-lease index."""
        if not self.dir_leases or not getattr(lease.file, "is_directory", False):
            return
        leases = self.dir_leases.get(lease.file.key)
        if leases is not None and lease in leases:
            leases.remove(lease)
            if not leases:
                del self.dir_leases[lease.file.key]

    # ------------------------------------------------------------ breaks
    def break_parent(self, share: Any, rel: list[str], origin: Any, now: float) -> list[Lease]:
        """The entry *rel* (share-relative components) of a directory in *share* was
        created, removed, renamed or changed through the open *origin* (None: not
        through an open): break the leases of its parent directory to NONE (MS-FSA
        2.1.4.12 with PARENT_OBJECT), but not the lease whose LeaseKey *origin* carries
        as its ParentLeaseKey, from the same ClientGuid (2.1.4.12.2).  The change does
        not wait for the acknowledgments.  Returns the leases broken."""
        if not self.dir_leases or not rel:
            return []
        parent = [c.lower() for c in rel[:-1]]
        spared = None
        ol = getattr(origin, "lease", None)
        if ol is not None and ol.parent_lease_key != b"\0" * 16:
            spared = (ol.client_guid, ol.parent_lease_key)
        targets: list[Lease] = []
        with self.lock:
            for leases in self.dir_leases.values():
                f = leases[0].file
                if f.share.path != share.path or len(f.rel) != len(parent) or \
                        [c.lower() for c in f.rel] != parent:
                    continue
                targets += [x for x in leases if (x.client_guid, x.lease_key) != spared]
        broken = []
        for lease in targets:
            if not lease.lease_state:
                continue  # nothing cached
            if self.oplocks.is_breaking(lease) or lease.breaking:
                # a break already under way (e.g. RH -> R for a share-mode conflict): a
                # further one cannot start before its acknowledgment (3.3.4.7); it follows it
                if lease.break_to_lease_state:
                    lease.parent_break_pending = True
                continue
            self.object_store_lease_break(lease.client_guid, lease.lease_key, SMB2_LEASE_NONE, now)
            broken.append(lease)
        return broken

    def leases_on(self, fobj: Any) -> list[Lease]:
        out: list[Lease] = []
        for x in list(fobj.opens):
            if x.lease is not None and x.lease not in out and not x.closed:
                out.append(x.lease)
        return out

    def before_open(self, fobj: Any, access: int, share_access: int, disposition: int, client_guid: bytes,
                    lease_key: bytes | None, now: float, delete_on_close: bool = False,
                    retried: bool = False) -> set:
        """Break the leases a new open (from *client_guid*, with *lease_key* or none)
        conflicts with; return those whose breaks the open must wait for.  An open with
        FILE_DELETE_ON_CLOSE (an unlink) removes H too (smbtorture smb2.lease.unlink)."""
        wait: set = set()
        if getattr(fobj, "delete_pending", False):  # the open fails with DELETE_PENDING
            return wait
        overwrite = disposition in OVERWRITING
        check = access | (FILE_WRITE_DATA if overwrite else 0)
        if access & MAXIMUM_ALLOWED:
            check |= FILE_ALL_ACCESS
        for lease in self.leases_on(fobj):
            if lease.client_guid == client_guid and lease.lease_key == lease_key:
                continue  # the open's own lease
            if self.oplocks.is_breaking(lease):
                if lease.break_blocking:
                    wait.add(lease)
                continue
            new = lease.lease_state
            blocking = True  # does the open wait for the acknowledgment?
            if not any(x.connection is not None and not x.connection.closed for x in lease.lease_opens):
                # only disconnected durable opens: broken to NONE, which closes them (LB-3),
                # as Windows gives the file to the new opener (smbtorture durable-open.lease)
                new = SMB2_LEASE_NONE
            elif self._share_conflict(lease.lease_opens, check, share_access):
                # the open would fail with SHARING_VIOLATION: only H is broken (so that the
                # client can close cached handles), nothing else (smb2.lease.break_twice)
                new &= ~H
            elif not is_stat_open(access, lease=True):
                if overwrite and retried and new & H and not new & W:
                    # an overwrite that already waited for a break: H first (acknowledged),
                    # then R (smbtorture smb2.lease.breaking3)
                    new &= ~H
                elif overwrite:
                    # straight to NONE; the open waits only when W is lost (breaking2),
                    # not for RH/R (breaking4)
                    blocking = bool(new & W)
                    new = SMB2_LEASE_NONE
                else:
                    new &= ~W
                    if delete_on_close:
                        new &= ~H
            if new == lease.lease_state:
                continue
            out = self.object_store_lease_break(lease.client_guid, lease.lease_key, new, now)
            if out.new_state is None and out.ack_required:
                lease.break_blocking = blocking
                if blocking:
                    wait.add(lease)
        return wait

    def before_rename(self, fobj: Any, origin: Any, now: float) -> set:
        """A rename through *origin* removes H from the file's other leases (their
        clients must close cached handles first); returns the leases to wait for."""
        wait: set = set()
        for lease in self.leases_on(fobj):
            if origin in lease.lease_opens:
                continue
            if self.oplocks.is_breaking(lease):
                wait.add(lease)
            elif lease.lease_state & H:
                out = self.object_store_lease_break(lease.client_guid, lease.lease_key, lease.lease_state & ~H, now)
                if out.new_state is None and out.ack_required:
                    wait.add(lease)
        return wait

    def break_on_write(self, fobj: Any, origin: Any, now: float) -> None:
        """A write / size change through *origin* breaks the other leases holding R to
        NONE (smbtorture smb2.lease.timeout / complex1: RH -> NONE); the write does not
        wait for the acknowledgment."""
        for lease in self.leases_on(fobj):
            if origin in lease.lease_opens or not lease.lease_state & R or self.oplocks.is_breaking(lease):
                continue
            self.object_store_lease_break(lease.client_guid, lease.lease_key, SMB2_LEASE_NONE, now)

    def object_store_lease_break(self, client_guid: bytes, lease_key: bytes, new_state: int,
                                 now: float) -> BreakOutcome:
        """MS-SMB2 3.3.4.7, step by step (LB-1 ... LB-8)."""
        closing: list = []
        with self.lock:
            # LB-1: GlobalLeaseTableList by ClientGuid, then LeaseList by LeaseKey
            lease = self.global_lease_table_list.get(client_guid, {}).get(lease_key)
            if lease is None:
                return BreakOutcome(SMB2_LEASE_NONE)
            # LB-2: a lease without opens completes with NONE
            if not lease.lease_opens:
                lease.lease_state = SMB2_LEASE_NONE
                return BreakOutcome(SMB2_LEASE_NONE)
            # LB-3: no connection for any of its opens
            if not any(x.connection is not None and not x.connection.closed for x in lease.lease_opens):
                for x in list(lease.lease_opens):
                    if not (x.is_durable or x.is_resilient or x.is_persistent) or (
                            x.is_durable and not new_state & H):
                        closing.append(x)
                outcome = BreakOutcome(new_state if not closing else SMB2_LEASE_NONE, closed=closing)
                lease.lease_state = new_state
            else:
                outcome = None
        if outcome is not None:
            for x in closing:
                self._close_open(x)
            return outcome
        with self.lock:
            # LB-4: the notification (header built by Connection.send_notification:
            # OPLOCK_BREAK, MessageId all ones, SessionId 0, TreeId 0, not signed)
            note = LeaseBreakNotification(lease_key=lease.lease_key, current_lease_state=lease.lease_state,
                                          new_lease_state=new_state)
            # LB-5
            ack_required = lease.lease_state != R
            if not ack_required:
                note.flags = 0
                for x in lease.lease_opens:
                    x.oplock_state = "None"
                lease.breaking = False
            else:
                note.flags = SMB2_NOTIFY_BREAK_LEASE_FLAG_ACK_REQUIRED
                for x in lease.lease_opens:
                    x.oplock_state = "Breaking"
                lease.breaking = True
                lease.break_to_lease_state = new_state
                lease.lease_break_timeout = now + self.server.config.oplock_break_timeout
            # LB-6: epoch (SMB 3.x, version 2)
            conns = self._connections(client_guid)
            if lease.version == 2 and any(c.dialect >= 0x0300 for c in conns):
                lease.epoch = (lease.epoch + 1) & 0xFFFF
                note.new_epoch = lease.epoch
            else:
                lease.epoch = 0
                note.new_epoch = 0
            lease.break_notification = note
            if not ack_required:
                lease.lease_state = new_state  # nothing to wait for
        # LB-7: the first connection of this ClientGuid that takes it, else the next
        sent = False
        for conn in conns:
            session = next((x.session for x in lease.lease_opens if x.connection is conn), None)
            if conn.send_notification(Command.SMB2_OPLOCK_BREAK, note, session=session):
                sent = True
                break
        log.debug("event=lease_break key=%s %s->%s ack=%d sent=%d", lease.lease_key.hex(),
                  state_name(note.current_lease_state), state_name(new_state), ack_required, sent)
        with self.lock:
            if sent:
                lease.break_notification = None
                if ack_required:  # the lease break acknowledgment timer (3.3.2.5)
                    self.oplocks.breaking(lease, lease.lease_break_timeout, lambda: self._ack_timeout(lease))
                    return BreakOutcome(None, sent=True, ack_required=True)
                return BreakOutcome(new_state, sent=True)
            # LB-8: could not be sent
            if any(x.is_persistent for x in lease.lease_opens) and lease.lease_state != R:
                return BreakOutcome(None, ack_required=ack_required)
            lease.breaking = False
            lease.held = False
            for x in lease.lease_opens:
                x.oplock_state = "None"
            lease.break_notification = None
            lease.lease_state = SMB2_LEASE_NONE
            return BreakOutcome(SMB2_LEASE_NONE)

    def _connections(self, client_guid: bytes) -> list:
        return [c for c in list(self.server.connection_list)
                if c.client_guid == client_guid and not c.closed and c.dialect >= 0x0210]

    def _ack_timeout(self, lease: Lease) -> None:
        """3.3.2.5 (called under the lock): the unacknowledged break completes to NONE."""
        log.info("event=lease_break_timeout key=%s", lease.lease_key.hex())
        lease.breaking = False
        lease.lease_state = SMB2_LEASE_NONE
        lease.parent_break_pending = False
        for x in lease.lease_opens:
            x.oplock_state = "None"

    # ------------------------------------------------------------ acknowledgment (3.3.5.22.2)
    def acknowledge(self, client_guid: bytes, lease_key: bytes, state: int, now: float = 0.0) -> Lease:
        """The lease located by the connection's ClientGuid and the LeaseKey; the
        acknowledged state must lie within Lease.BreakToLeaseState.  A directory lease
        whose directory changed during the break is then broken on to NONE (*now*: for
        that break's acknowledgment timer)."""
        with self.lock:
            lease = self.global_lease_table_list.get(client_guid, {}).get(lease_key)
            if lease is None:
                raise NtStatusError(STATUS_OBJECT_NAME_NOT_FOUND, "no such lease")
            if not lease.breaking:
                raise NtStatusError(STATUS_UNSUCCESSFUL, "no lease break in progress")
            if state & ~lease.break_to_lease_state:
                # refused; the break stays in progress (smbtorture smb2.lease.breaking2
                # acknowledges wrongly several times, then correctly)
                raise NtStatusError(STATUS_REQUEST_NOT_ACCEPTED,
                                    f"{state_name(state)} not within {state_name(lease.break_to_lease_state)}")
            lease.lease_state = state
            lease.breaking = False
            for x in lease.lease_opens:
                x.oplock_state = "Held" if lease.lease_state else "None"
            again = lease.parent_break_pending and bool(state)
            lease.parent_break_pending = False
        self.oplocks.break_done(lease)
        if again:
            self.object_store_lease_break(lease.client_guid, lease.lease_key, SMB2_LEASE_NONE, now)
        return lease


__all__ = ["Lease", "LeaseManager", "BreakOutcome", "state_name", "R", "H", "W"]
