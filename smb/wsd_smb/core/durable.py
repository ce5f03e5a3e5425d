"""Durable handles, version 1 and 2 (MS-SMB2 3.3.5.9.6 DHnQ, 3.3.5.9.7 DHnC, 3.3.5.9.10
DH2Q, 3.3.5.9.12 DH2C), their preservation when the connection or session goes away
(3.3.7.1, 3.3.5.6) and the durable open scavenger timer (3.3.2.4).

* A durable request is granted when the open got a BATCH oplock or a lease with
  SMB2_LEASE_HANDLE_CACHING (3.3.5.9.6 / 3.3.5.9.10); persistent handles are never
  granted (no continuously available shares here): the DH2Q response has Flags 0.
* Open.DurableOpenTimeout: v1 ``ServerConfig.durable_v1_timeout`` (960 s, as Windows);
  v2 the requested Timeout capped at ``durable_v2_max_timeout`` (300 s), or
  ``durable_v2_default_timeout`` (60 s) when 0 is asked for.
* Resilient opens (FSCTL_LMR_REQUEST_RESILIENCY, 3.3.5.15.9, :func:`request_resiliency`):
  Open.IsResilient, kept like a durable open for Open.ResiliencyTimeout whatever their
  oplock or lease; the requested Timeout may not exceed ``max_resiliency_timeout``.
* When its session ends without a CLOSE (connection lost, LOGOFF, a new session naming
  it as PreviousSessionId) a durable open that still holds BATCH / a handle-caching lease
  is kept in GlobalOpenTable with Open.Session/Connection/TreeConnect = None until
  ``now + Open.DurableOpenTimeout`` (the scavenger closes it then), or until a reconnect
  (:func:`reconnect`, DH-1 ... DH-15) re-attaches it, or a conflicting open breaks its
  oplock/lease (core/oplocks.py closes it then).  An explicit TREE_DISCONNECT closes it.

Sans-IO: the scavenger deadline is reported by :meth:`DurableTable.next_deadline` and
fired by ``Server.handle_timers(now)``.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any, Callable

from ..ntstatus import (STATUS_ACCESS_DENIED, STATUS_INVALID_PARAMETER, STATUS_OBJECT_NAME_NOT_FOUND,
                        NtStatusError)
from ..wire.commands import SMB2_LEASE_HANDLE_CACHING, SMB2_OPLOCK_LEVEL_BATCH
from ..wire.contexts import (
    SMB2_CREATE_DURABLE_HANDLE_RECONNECT,
    SMB2_CREATE_DURABLE_HANDLE_RECONNECT_V2,
    SMB2_CREATE_DURABLE_HANDLE_REQUEST,
    SMB2_CREATE_DURABLE_HANDLE_REQUEST_V2,
    SMB2_CREATE_REQUEST_LEASE,
    DurableHandleReconnect,
    DurableHandleReconnectV2,
    DurableHandleRequest,
    DurableHandleRequestV2,
)

log = logging.getLogger("wsd_smb.durable")

STATUS_DUPLICATE_OBJECTID = 0xC000022A
DHNQ, DHNC = SMB2_CREATE_DURABLE_HANDLE_REQUEST, SMB2_CREATE_DURABLE_HANDLE_RECONNECT
DH2Q, DH2C = SMB2_CREATE_DURABLE_HANDLE_REQUEST_V2, SMB2_CREATE_DURABLE_HANDLE_RECONNECT_V2
RQLS = SMB2_CREATE_REQUEST_LEASE


@dataclass
class DurableRequest:
    """A DHnQ (version 1) or DH2Q (version 2) request."""

    version: int
    timeout_ms: int = 0
    flags: int = 0
    create_guid: bytes = b""


@dataclass
class DurableReconnect:
    """A DHnC (version 1) or DH2C (version 2) reconnect."""

    version: int
    persistent: int
    volatile: int
    create_guid: bytes = b""
    flags: int = 0


def _data(contexts: dict, name: bytes, cls: Any) -> Any:
    data = bytes(contexts[name].data)
    if len(data) < cls.FIXED_SIZE:
        raise NtStatusError(STATUS_INVALID_PARAMETER, f"{name!r} context of {len(data)} bytes")
    return cls.unpack(data, 0)


def parse(contexts: dict, dialect: int) -> tuple[DurableRequest | None, DurableReconnect | None]:
    """Which durable context applies, with the combination rules of 3.3.5.9.6/7/10/12.
    Version 2 contexts are SMB 3.x only (ignored on 2.x)."""
    v2 = dialect >= 0x0300
    has_dh2q = v2 and DH2Q in contexts
    has_dh2c = v2 and DH2C in contexts
    if DHNC in contexts:
        # DH-1: a DHnQ next to it is ignored; DH-2: DH2Q/DH2C next to it -> INVALID_PARAMETER
        if has_dh2q or has_dh2c:
            raise NtStatusError(STATUS_INVALID_PARAMETER, "DHnC with a version 2 durable context (DH-2)")
        c = _data(contexts, DHNC, DurableHandleReconnect)
        return None, DurableReconnect(1, c.data.persistent, c.data.volatile)
    if has_dh2c:
        # 3.3.5.9.12: DHnQ / DHnC next to it -> INVALID_PARAMETER; a DH2Q is ignored
        if DHNQ in contexts:
            raise NtStatusError(STATUS_INVALID_PARAMETER, "DH2C with DHnQ")
        if has_dh2q:
            raise NtStatusError(STATUS_INVALID_PARAMETER, "DH2C with DH2Q")
        c = _data(contexts, DH2C, DurableHandleReconnectV2)
        return None, DurableReconnect(2, c.file_id.persistent, c.file_id.volatile, bytes(c.create_guid), c.flags)
    if has_dh2q:
        if DHNQ in contexts:  # 3.3.5.9.10
            raise NtStatusError(STATUS_INVALID_PARAMETER, "DH2Q with DHnQ")
        c = _data(contexts, DH2Q, DurableHandleRequestV2)
        return DurableRequest(2, c.timeout, c.flags, bytes(c.create_guid)), None
    if DHNQ in contexts:
        _data(contexts, DHNQ, DurableHandleRequest)
        return DurableRequest(1), None
    return None, None


def eligible(o: Any) -> bool:
    """Can the open be (or stay) durable: BATCH oplock or a lease with HANDLE caching."""
    lease = getattr(o, "lease", None)
    if lease is not None:
        return bool(lease.lease_state & SMB2_LEASE_HANDLE_CACHING)
    return o.oplock_level == SMB2_OPLOCK_LEVEL_BATCH


def grant(o: Any, req: DurableRequest, cfg: Any, owner: str) -> bool:
    """3.3.5.9.6 / 3.3.5.9.10 after oplock acquisition: set Open.IsDurable and friends."""
    if o.is_directory and req.version == 1:
        return False
    if not eligible(o):
        return False
    o.is_durable = True
    o.is_persistent = False  # no continuously available shares (SMB2_DHANDLE_FLAG_PERSISTENT never granted)
    o.durable_owner = owner
    if req.version == 1:
        o.durable_open_timeout = cfg.durable_v1_timeout
    else:
        t = req.timeout_ms / 1000.0
        o.durable_open_timeout = cfg.durable_v2_default_timeout if t == 0 else min(t, cfg.durable_v2_max_timeout)
        o.create_guid = req.create_guid
    return True


def request_resiliency(o: Any, timeout_ms: int, cfg: Any, owner: str) -> None:
    """MS-SMB2 3.3.5.15.9 after the input was parsed: a Timeout above MaxResiliencyTimeout
    is STATUS_INVALID_PARAMETER; otherwise Open.IsDurable = FALSE, Open.IsResilient = TRUE,
    Open.ResiliencyTimeout = Timeout (0: ``resiliency_default_timeout``) and
    Open.DurableOwner = the requesting user.  The open is then kept over a lost
    connection like a durable one (:func:`kept_on_disconnect`) for ResiliencyTimeout,
    whatever its oplock or lease, and can be reconnected with DHnC/DH2C (DH-6e)."""
    t = timeout_ms / 1000.0
    if t > cfg.max_resiliency_timeout:
        raise NtStatusError(STATUS_INVALID_PARAMETER,
                            f"resiliency Timeout {timeout_ms} ms > MaxResiliencyTimeout {cfg.max_resiliency_timeout} s")
    o.is_durable = False
    o.is_resilient = True
    o.resiliency_timeout = t if t else cfg.resiliency_default_timeout
    o.durable_owner = owner


def kept_on_disconnect(o: Any) -> bool:
    """Does the open outlive its session (3.3.7.1 / 3.3.5.6): a durable open that still
    holds BATCH or a handle-caching lease, or any resilient open."""
    return o.is_resilient or (o.is_durable and eligible(o))


def keep_timeout(o: Any) -> float:
    """Seconds a disconnected open is kept: Open.ResiliencyTimeout for a resilient open,
    Open.DurableOpenTimeout otherwise."""
    return o.resiliency_timeout if o.is_resilient else o.durable_open_timeout


def v2_timeout_ms(o: Any) -> int:
    return int(round(o.durable_open_timeout * 1000))


def owner_of(session: Any) -> str:
    """Open.DurableOwner: the user of Session.SecurityContext (domain\\user, case-insensitive)."""
    sc = session.security_context
    if sc is None:
        return ""
    return f"{sc.domain_name}\\{sc.user_name}".lower() if not sc.is_anonymous else "\\anonymous"


def find_create_guid(server: Any, client_guid: bytes, create_guid: bytes) -> Any:
    """The open in GlobalOpenTable with this CreateGuid from this client that is still
    eligible for replay (Open.IsReplayEligible: no request has named it since its
    CREATE, core/replay.py), MS-SMB2 3.3.5.9.10."""
    for o in list(server.global_open_table.values()):
        if (getattr(o, "create_guid", b"") == create_guid and getattr(o, "client_guid", None) == client_guid
                and getattr(o, "is_replay_eligible", False) and not getattr(o, "closed", True)):
            return o
    return None


def _fail(status: int, step: str, msg: str) -> NtStatusError:
    e = NtStatusError(status, f"{step}: {msg}")
    e.step = step  # type: ignore[attr-defined]
    return e


def reconnect(ctx: Any, name: str, contexts: dict, rc: DurableReconnect, lease_req: Any,
              lease_version: int) -> Any:
    """MS-SMB2 3.3.5.9.7 (DH-3 ... DH-13; DH-1/DH-2 are in :func:`parse`) and 3.3.5.9.12
    for version 2.  *lease_req* is the parsed RqLs context (or None), *lease_version* 1
    or 2.  Returns the re-attached open; the caller builds the response (DH-14/DH-15)."""
    server = ctx.server
    # DH-3: look up GlobalOpenTable by FileId.Persistent
    o = server.global_open_table.get(rc.persistent)
    if o is None or getattr(o, "closed", True) or not hasattr(o, "file"):
        raise _fail(STATUS_OBJECT_NAME_NOT_FOUND, "DH-3", f"no open 0x{rc.persistent:x}")
    if rc.version == 2:
        # 3.3.5.9.12: CreateGuid must match (a version 1 open has the all-zero CreateGuid)
        if (o.create_guid or b"\0" * 16) != rc.create_guid:
            raise _fail(STATUS_OBJECT_NAME_NOT_FOUND, "DH-3", "CreateGuid does not match")
    lease = o.lease
    # DH-4: a leased open belongs to its ClientGuid
    if lease is not None and o.client_guid != ctx.connection.client_guid:
        raise _fail(STATUS_OBJECT_NAME_NOT_FOUND, "DH-4", "ClientGuid differs")
    # DH-6a/6b first: without the lease context the name is not looked at (Windows and
    # Samba answer OBJECT_NAME_NOT_FOUND for a leased open reconnected without RqLs
    # whatever the name; smbtorture durable-open.reopen2-lease)
    if lease is not None and lease_req is None:
        raise _fail(STATUS_OBJECT_NAME_NOT_FOUND, "DH-6a", "leased open, no lease context")
    if lease is None and lease_req is not None:
        raise _fail(STATUS_OBJECT_NAME_NOT_FOUND, "DH-6b", "lease context for an open without lease")
    # DH-5: the lease's file name must match the request's
    if lease is not None and not lease.file_delete_on_close and lease.file_name.lower() != name.lower():
        raise _fail(STATUS_INVALID_PARAMETER, "DH-5", f"name {name!r} is not {lease.file_name!r}")
    # DH-6: the remaining bullets
    if o.is_durable and lease is None and o.oplock_level != SMB2_OPLOCK_LEVEL_BATCH:
        raise _fail(STATUS_OBJECT_NAME_NOT_FOUND, "DH-6c", "oplock is no longer BATCH")
    if o.is_durable and lease is not None and not lease.lease_state & SMB2_LEASE_HANDLE_CACHING:
        raise _fail(STATUS_OBJECT_NAME_NOT_FOUND, "DH-6d", "lease lost HANDLE caching")
    if not o.is_durable and not o.is_resilient:
        raise _fail(STATUS_OBJECT_NAME_NOT_FOUND, "DH-6e", "not durable")
    if o.session is not None:
        raise _fail(STATUS_OBJECT_NAME_NOT_FOUND, "DH-6f", "the open still has a session")
    if lease is not None and lease_req is not None and bytes(lease_req.lease_key) != lease.lease_key:
        step = "DH-6g" if lease_version == 2 else "DH-6h"
        raise _fail(STATUS_OBJECT_NAME_NOT_FOUND, step, "LeaseKey differs")
    # DH-7: lease version must match the context's
    if lease is not None and lease.version != lease_version:
        raise _fail(STATUS_OBJECT_NAME_NOT_FOUND, "DH-7", f"lease v{lease.version}, context v{lease_version}")
    # DH-8: same user
    if o.durable_owner != owner_of(ctx.session):
        raise _fail(STATUS_ACCESS_DENIED, "DH-8", "another user")
    return o


def lock_sequence(o: Any, dialect: int, lock_sequence: int, multi_channel: bool = False) -> tuple[int, bool]:
    """MS-SMB2 3.3.5.14 lock sequence verification: on 2.1 for resilient opens, on 3.x for
    durable, resilient and persistent opens, and for every open when the connection's
    ServerCapabilities include SMB2_GLOBAL_CAP_MULTI_CHANNEL (*multi_channel*).  Returns
    (LockSequenceIndex or 0 when not checked, replay).  A replay (the entry is valid and
    holds this LockSequenceNumber) is answered with success without locking again; an
    entry that does not match is invalidated until the request succeeds."""
    if not ((dialect == 0x0210 and o.is_resilient)
            or (dialect >= 0x0300 and (o.is_durable or o.is_resilient or o.is_persistent or multi_channel))):
        return 0, False
    number, index = lock_sequence & 0xF, (lock_sequence >> 4) & 0x0FFFFFFF
    if not 1 <= index <= 64:
        return 0, False
    if o.lock_sequence_array.get(index) == number:
        return index, True
    o.lock_sequence_array.pop(index, None)
    return index, False


def lock_sequence_done(o: Any, lock_sequence: int, index: int) -> None:
    """The lock request with a checked sequence succeeded: remember its number."""
    if index:
        o.lock_sequence_array[index] = lock_sequence & 0xF


class DurableTable:
    """Disconnected durable opens and the scavenger timer (3.3.2.4)."""

    def __init__(self, close: Callable[[Any], None]) -> None:
        self._close = close
        self._lock = threading.Lock()
        self.disconnected: set = set()

    def preserve(self, o: Any, now: float) -> None:
        """The open outlives its session: Open.Connection/Session/TreeConnect = None,
        scavenged at now + Open.DurableOpenTimeout."""
        o.session = None
        o.connection = None
        o.tree_connect = None
        o.durable_open_scavenger_timeout = now + keep_timeout(o)
        with self._lock:
            self.disconnected.add(o)
        log.info("event=durable_open_preserved file=%s resilient=%d timeout=%.0fs", o.path, int(o.is_resilient),
                 keep_timeout(o))

    def reattached(self, o: Any) -> None:
        with self._lock:
            self.disconnected.discard(o)

    def forget(self, o: Any) -> None:
        with self._lock:
            self.disconnected.discard(o)

    def next_deadline(self) -> float | None:
        with self._lock:
            if not self.disconnected:
                return None
            return min(o.durable_open_scavenger_timeout for o in self.disconnected)

    def on_timer(self, now: float) -> None:
        with self._lock:
            expired = [o for o in self.disconnected if o.durable_open_scavenger_timeout <= now]
            for o in expired:
                self.disconnected.discard(o)
        for o in expired:
            if o.session is None and not o.closed:
                log.info("event=durable_open_scavenged file=%s", o.path)
                self._close(o)


__all__ = ["DurableRequest", "DurableReconnect", "DurableTable", "parse", "grant", "eligible", "reconnect",
           "request_resiliency", "kept_on_disconnect", "keep_timeout",
           "owner_of", "v2_timeout_ms", "find_create_guid", "STATUS_DUPLICATE_OBJECTID"]
