"""SMB2 file-command handlers over the object store (``wsd_smb.store``).

TREE_CONNECT/TREE_DISCONNECT (MS-SMB2 3.3.5.7/3.3.5.8), CREATE (3.3.5.9), CLOSE
(3.3.5.10), FLUSH (3.3.5.11), READ (3.3.5.12), WRITE (3.3.5.13), LOCK (3.3.5.14),
IOCTL (3.3.5.15), QUERY_DIRECTORY (3.3.5.18), CHANGE_NOTIFY (3.3.5.19), QUERY_INFO
(3.3.5.20), SET_INFO (3.3.5.21).  The interface is described in docs/smb-handlers.md,
the store in docs/smb-store.md.

State: one :class:`~wsd_smb.store.ObjectStore` per server (the GlobalOpenTable of
opens, share modes, locks).  Every open is also recorded per MS-SMB2 3.3.1.10:
``Session.OpenTable[FileId.Volatile]``, ``Server.GlobalOpenTable[FileId.Persistent]``,
``Open.Session/TreeConnect/Connection``, ``TreeConnect.OpenCount``; ``Open.IsDurable``
is always False (no durable handles yet) and no oplock or lease is ever granted.
"""
from __future__ import annotations

import logging
import struct
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any, Callable

from .. import ntstatus
from ..ntstatus import NtStatusError
from ..store import ObjectStore, Open, Share
from ..store import info as sinfo
from ..store.constants import (
    FILE_ALL_ACCESS,
    SMB2_0_INFO_FILE,
    SMB2_0_INFO_FILESYSTEM,
    SMB2_0_INFO_QUOTA,
    SMB2_0_INFO_SECURITY,
)
from ..store.errors import (
    STATUS_INVALID_PARAMETER,
    STATUS_NOT_SUPPORTED,
    STATUS_OBJECT_NAME_INVALID,
    STATUS_SUCCESS,
    WouldBlock,
    fail,
)
from ..wire import (
    SMB2_CLOSE_FLAG_POSTQUERY_ATTRIB,
    SMB2_SHARE_TYPE_DISK,
    SMB2_SHARE_TYPE_PIPE,
    SMB2_SHAREFLAG_ENCRYPT_DATA,
    SMB2_SHAREFLAG_NO_CACHING,
    SMB2_WRITEFLAG_WRITE_THROUGH,
    ChangeNotifyResponse,
    CloseRequest,
    CloseResponse,
    Command,
    ErrorResponse,
    FileId,
    FlushRequest,
    FlushResponse,
    LockRequest,
    LeaseBreakAcknowledgment,
    LeaseBreakResponse,
    LockResponse,
    OplockBreakResponse,
    QueryDirectoryRequest,
    QueryDirectoryResponse,
    QueryInfoRequest,
    QueryInfoResponse,
    ReadRequest,
    ReadResponse,
    SetInfoRequest,
    SetInfoResponse,
    TreeConnectRequest,
    TreeConnectResponse,
    TreeDisconnectRequest,
    TreeDisconnectResponse,
    WriteRequest,
    WriteResponse,
)
from ..wire.header import HEADER_SIZE
from ..wire.commands import SMB2_GLOBAL_CAP_MULTI_CHANNEL
from ..wire.commands import SMB2_SHAREFLAG_ACCESS_BASED_DIRECTORY_ENUM
from ..store.namepolicy import NamePatterns
from . import durable as dur
from . import leases as lsm
from . import notify as ntf
from . import oplocks as opl
from . import replay as rp
from .dispatch import AsyncOp, RequestContext, Response, register
from .state import SessionState
from . import shareaccess as sa

log = logging.getLogger("wsd_smb.files")

STATUS_INVALID_DEVICE_REQUEST = 0xC0000010
STATUS_BUFFER_OVERFLOW = 0x80000005
FSCTL_PIPE_TRANSCEIVE = 0x0011C017  # FSCTL codes: MS-FSCC 2.3, MS-SMB2 2.2.31


def _traced(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Log the detail of an NTSTATUS error at debug level (the core logs only the code)."""

    def wrapper(ctx: RequestContext, req: Any) -> Any:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("event=file_request handler=%s class=%s", fn.__name__,
                      getattr(req, "file_info_class", getattr(req, "file_information_class", "")))
        try:
            return fn(ctx, req)
        except NtStatusError as e:
            if log.isEnabledFor(logging.DEBUG):
                log.debug("event=file_error handler=%s status=%s detail=%r", fn.__name__,
                          ntstatus.status_name(e.status), e.message)
            raise

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


# ====================================================================== per-server state
@dataclass(eq=False)
class PipeEndpoint:
    """A named pipe opened on IPC$ (``PIPES`` registry).  Subclass and implement
    ``transceive`` (FSCTL_PIPE_TRANSCEIVE), ``write``/``read`` and ``close``."""

    name: str

    def write(self, data: bytes) -> int:
        raise fail(STATUS_NOT_SUPPORTED)

    def read(self, length: int) -> bytes:
        raise fail(STATUS_NOT_SUPPORTED)

    def read_message(self, length: int) -> tuple[bytes, bool]:
        """(at most *length* bytes of the next message, whether more of that message is
        left): a message-mode pipe whose message does not fit the READ answers
        STATUS_BUFFER_OVERFLOW with the part that fits, as Windows does (ERROR_MORE_DATA).
        The default: :meth:`read`, never more."""
        return self.read(length), False

    def transceive(self, data: bytes, max_output: int) -> bytes:
        raise fail(STATUS_NOT_SUPPORTED)

    def close(self) -> None:
        pass


#: IPC$ pipe name (lower case, e.g. "srvsvc") -> factory(ctx) returning a PipeEndpoint.
#: Empty by default: opening a pipe answers STATUS_OBJECT_NAME_NOT_FOUND.
PIPES: dict[str, Callable[[RequestContext], PipeEndpoint]] = {}


class _PipeOpen:
    """A CREATE on IPC$: the MS-SMB2 Open fields plus the endpoint."""

    def __init__(self, endpoint: PipeEndpoint, persistent: int, volatile: int) -> None:
        self.endpoint = endpoint
        self.file_id_persistent = persistent
        self.file_id_volatile = volatile
        self.session = self.tree_connect = self.connection = None
        self.is_durable = False
        self.granted_access = FILE_ALL_ACCESS
        self.path_name = endpoint.name


class _State:
    def __init__(self, server: Any) -> None:
        self.server = server
        self.store = ObjectStore()
        self.shares: dict[tuple, Share] = {}  # (NAME, local path, read_only) -> store Share
        self.lock = threading.Lock()
        self._pipe_ids = iter(range(0x7000_0001, 0x7FFF_FFFF))
        self.oplocks = opl.OplockManager(server, ObjectStore._share_conflict, self.close_disconnected)
        server.timer_sources.append(self.oplocks)
        self.durable = dur.DurableTable(self.close_disconnected)
        server.timer_sources.append(self.durable)
        self.leases = lsm.LeaseManager(server, self.oplocks, self.close_any, ObjectStore._share_conflict)
        #: durable v2 CREATEs waiting for breaks, whose replays are answered at once (core/replay.py)
        self.pending_creates = rp.PendingCreates()
        server.on_tree_disconnected.append(self.tree_disconnected)
        server.on_session_closed.append(self.session_closed)
        server.open_closer = self.close_any  # MS-SMB2 3.3.4.17 (srvsvc NetrFileClose)
        #: CHANGE_NOTIFY watches (core/notify.py), fed by the _notify hooks below
        self.notify = ntf.NotifyManager(lambda data, status: Response(ChangeNotifyResponse(output_buffer=data),
                                                                      status=status))

    def close_any(self, o: Any) -> None:
        """Close an open from outside its own request flow (LB-3, AppInstanceId)."""
        if o.session is None:
            self.close_disconnected(o)
        else:
            _close_open(self, o.session, o)

    def close_disconnected(self, o: Any) -> None:
        """Close an open that has no session (a disconnected durable open)."""
        self.server.global_open_table.pop(o.file_id_persistent, None)
        self.durable.forget(o)
        try:
            self.store.close(o)
        except NtStatusError:
            pass  # closed meanwhile
        self.leases.open_closed(o)
        self.oplocks.open_closed(o)

    def share_for(self, share: Any, read_only: bool | None = None) -> Share:
        """The object store's Share for a configured share as one tree connect sees it:
        *read_only* is the tree's (TreeConnect.MaximalAccess without write access: a
        read_only share, or a read_list user; default the share's own read_only).  So a
        share has up to two store Shares (read-only and writable, the same root); the
        store identifies files by inode, not by Share, so opens through both meet in share
        modes, locks, leases and change notifications.  A configuration reload that gives
        the name another path or namespace policy gets new ones."""
        ro = bool(share.read_only) if read_only is None else bool(read_only)
        key = (share.name.upper(), share.local_path, ro, share.namespace_policy())
        with self.lock:
            s = self.shares.get(key)
            if s is None:
                s = Share(share.name, share.local_path, read_only=ro)
                # namespace policy (store/namepolicy.py): patterns compiled once per share
                s.hide_dot_files = share.hide_dot_files
                s.hide_files = NamePatterns.compile(share.hide_files, s.case_sensitive)
                s.veto_files = NamePatterns.compile(share.veto_files, s.case_sensitive)
                s.delete_veto_files = share.delete_veto_files
                s.hide_unreadable = share.do_access_based_directory_enumeration
                self.shares[key] = s
            return s

    def new_pipe_id(self) -> int:
        with self.lock:
            return next(self._pipe_ids)

    # cleanup hooks (called by the core in its thread pool)
    def tree_disconnected(self, tc: Any) -> None:
        session = tc.session
        for fid, o in list(session.open_table.items()):
            if o.tree_connect is tc:
                self._end(session, o)

    def session_closed(self, session: Any) -> None:
        for fid, o in list(session.open_table.items()):
            self._end(session, o)

    def _end(self, session: Any, o: Any) -> None:
        """An open whose session or tree connect goes away: closed, unless the session
        ended without LOGOFF-free CLOSEs (connection lost, LOGOFF, PreviousSessionId:
        the session is Expired then) and the open is durable with BATCH / a handle lease,
        or resilient, which is kept for a durable reconnect (core/durable.py)."""
        if (session.state is SessionState.Expired and not isinstance(o, _PipeOpen)
                and not o.closed and dur.kept_on_disconnect(o) and not self.oplocks.is_breaking(o)
                and not (o.lease is not None and self.oplocks.is_breaking(o.lease))):
            # (an open whose oplock/lease break is still outstanding is closed: the break
            # cannot be acknowledged any more and the waiting opener proceeds)
            session.open_table.pop(o.file_id_volatile, None)
            tc = o.tree_connect
            if tc is not None:
                tc.open_count = max(0, tc.open_count - 1)
            self.durable.preserve(o, time.time())  # the hooks run without a request's `now`
            return
        _close_open(self, session, o)


_states: "weakref.WeakKeyDictionary[Any, _State]" = weakref.WeakKeyDictionary()
_states_lock = threading.Lock()


def state_of(server: Any) -> _State:
    with _states_lock:
        st = _states.get(server)
        if st is None:
            st = _states[server] = _State(server)
        return st


def _notify(st: _State, fobj: Any, action: int, bits: int, rel: list[str] | None = None) -> None:
    """Tell CHANGE_NOTIFY watches (core/notify.py) that *fobj* (at *rel*, default its
    current path) changed: FILE_ACTION_* *action*, CompletionFilter *bits*."""
    rel = list(fobj.rel) if rel is None else rel
    if rel and fobj.stream is None:
        st.notify.report(fobj.share, [(rel[:-1], rel[-1], action)], bits)


def _name_bits(fobj: Any) -> int:
    return ntf.FILE_NOTIFY_CHANGE_DIR_NAME if fobj.is_directory else ntf.FILE_NOTIFY_CHANGE_FILE_NAME


def _close_open(st: _State, session: Any, o: Any, postquery: bool = False, cached_only: bool = False):
    """Close *o* and drop it from the session's and server's tables.  *cached_only* (the
    attempt on the event loop): the object store closes first and raises WouldBlock
    before anything changes unless the close needs no I/O and no waiting (see
    ObjectStore.close); it excludes delete-on-close, so the bookkeeping after it is
    the same as below."""
    if cached_only:
        if isinstance(o, _PipeOpen) or (st.leases.dir_leases and o.written):
            raise WouldBlock()  # (a written file's close breaks its directory's leases: not on the loop)
        try:
            r = st.store.close(o, postquery, cached_only=True)
        except NtStatusError:  # already closed by a concurrent close
            r = None
        st.notify.open_closed(o)
        _notify_renamed_closed(st, o)
        _drop_open(session, o)
        st.leases.open_closed(o)
        st.oplocks.open_closed(o)
        return r
    if not isinstance(o, _PipeOpen):
        st.notify.open_closed(o)  # its pending CHANGE_NOTIFYs: STATUS_NOTIFY_CLEANUP
        f = o.file
        deleting = (o.delete_on_close or f.delete_pending) and len(f.opens) == 1 and f.opens[0] is o
        gone = (f, list(f.rel)) if deleting else None
    _drop_open(session, o)
    if isinstance(o, _PipeOpen):
        o.endpoint.close()
        return None
    try:
        r = st.store.close(o, postquery)
        if st.leases.dir_leases and f.stream is None and (gone is not None or o.written):
            # the entry went away, or its size/times changed: the parent directory's leases
            st.leases.break_parent(f.share, gone[1] if gone is not None else list(f.rel), o, time.time())
        if gone is not None:
            _notify(st, gone[0], ntf.FILE_ACTION_REMOVED, _name_bits(gone[0]), gone[1])
        elif f.delete_pending and f.is_directory:
            st.notify.delete_pending(f)
        else:
            _notify_renamed_closed(st, o)
        return r
    except NtStatusError:  # already closed by a concurrent close
        return None
    finally:
        st.leases.open_closed(o)
        st.oplocks.open_closed(o)


def _notify_renamed_closed(st: _State, o: Any) -> None:
    """A file renamed through *o*: Windows (NTFS) sets FILE_ATTRIBUTE_ARCHIVE on a renamed
    file and reports that attribute change when the handle is closed, as
    FILE_ACTION_MODIFIED with FILE_NOTIFY_CHANGE_ATTRIBUTES on its current name
    (directories: nothing).  What smbtorture smb2.notify.mask-change expects (one
    MODIFIED per renamed-and-closed file for an ATTRIBUTES watch) and smb2.notify.rec
    allows (no MODIFIED while the renamed handles stay open)."""
    if getattr(o, "renamed_file", False) and not o.file.is_directory and o.file.stream is None:
        o.renamed_file = False
        _notify(st, o.file, ntf.FILE_ACTION_MODIFIED, ntf.FILE_NOTIFY_CHANGE_ATTRIBUTES)


def _drop_open(session: Any, o: Any) -> None:
    """Remove *o* from Session.OpenTable and GlobalOpenTable; one open fewer on its tree."""
    session.open_table.pop(o.file_id_volatile, None)
    server = session.connection.server if session.connection is not None else None
    if server is not None:
        server.global_open_table.pop(o.file_id_persistent, None)
    tc = o.tree_connect
    if tc is not None:
        tc.open_count = max(0, tc.open_count - 1)


def _lookup(ctx: RequestContext, file_id: Any) -> Any:
    """The Open of *file_id* in Session.OpenTable, on this tree (else STATUS_FILE_CLOSED)."""
    fid = FileId(*file_id)
    o = ctx.session.open_table.get(fid.volatile)
    if o is None or o.file_id_persistent != fid.persistent or o.tree_connect is not ctx.tree_connect:
        raise ntstatus.StatusFileClosed()
    return o


def _disk_open(ctx: RequestContext, file_id: Any) -> Open:
    o = _lookup(ctx, file_id)
    if isinstance(o, _PipeOpen):
        raise fail(STATUS_INVALID_DEVICE_REQUEST, "not supported on a pipe")
    return o


def _name(raw: bytes) -> str:
    if len(raw) % 2:
        raise fail(STATUS_INVALID_PARAMETER, "odd name length")
    try:
        return bytes(raw).decode("utf-16-le")
    except UnicodeDecodeError:
        # an unpaired surrogate: NTFS would keep it, but the name has no UTF-8 form on disk;
        # MS-FSA 2.1.5.1: a name with a character the file system cannot take is invalid
        raise fail(STATUS_OBJECT_NAME_INVALID, "name is not valid UTF-16 (unpaired surrogate)") from None


def _last_in_chain(ctx: RequestContext) -> bool:
    chain = ctx.chain
    return chain is None or not chain.elements or ctx.header is chain.elements[-1].header


def _wait_for_breaks(ctx: RequestContext, st: _State, breaking: set,
                     again: Callable[[], Response | AsyncOp]) -> Response | AsyncOp:
    """Go async (STATUS_PENDING) until the oplock/lease breaks of *breaking* are done,
    then run *again* (on the thread that completed the last break) and complete the
    request with its outcome."""
    from .connection import Work

    holder: dict[str, Any] = {"waiter": None}

    def on_cancel(op: AsyncOp) -> None:
        w = holder["waiter"]
        if w is None or st.oplocks.cancel_wait(w):
            op.complete(ntstatus.NtStatusError(ntstatus.STATUS_CANCELLED))

    op = ctx.go_async(on_cancel=on_cancel)

    def fire() -> None:
        if op.done or op.cancelled:
            return
        work = Work(again)
        work.run()
        if work.error is not None:
            op.complete(work.error)
        elif work.result is not op:
            op.complete(work.result)

    w = st.oplocks.wait(breaking, fire)
    if w is None:  # the breaks finished meanwhile
        return again()
    holder["waiter"] = w
    return op


# ====================================================================== TREE_CONNECT
def share_name_of(path: bytes) -> str:
    """The share name of a TREE_CONNECT path (MS-SMB2 2.2.9: "\\\\server\\share" in
    UTF-16LE); a path that is not of that form -> STATUS_BAD_NETWORK_NAME."""
    try:
        text = path.decode("utf-16-le")
    except UnicodeDecodeError:
        raise ntstatus.StatusBadNetworkName("path not UTF-16") from None
    parts = text.lstrip("\\").split("\\")
    if len(parts) != 2 or not parts[1]:
        raise ntstatus.StatusBadNetworkName(text)
    return parts[1]


@register(Command.SMB2_TREE_CONNECT, blocking=True, needs_tree=False)
@_traced
def tree_connect(ctx: RequestContext, req: TreeConnectRequest) -> Response:
    """MS-SMB2 3.3.5.7: look the share up (STATUS_BAD_NETWORK_NAME), check the session may
    connect (the share's access policy, core/shareaccess.py: STATUS_ACCESS_DENIED) and
    Share.MaxUses (STATUS_REQUEST_NOT_ACCEPTED), then create the TreeConnect with its
    MaximalAccess (read-only per read_only / read_list / write_list), which also decides
    whether the tree's opens may modify anything (its object-store share is read-only
    or not).  ShareFlags (2.2.10): the share's caching policy (csc_policy) and
    SMB2_SHAREFLAG_ENCRYPT_DATA."""
    share = ctx.config.share(share_name_of(req.path))
    if share is None:
        raise ntstatus.StatusBadNetworkName()
    try:
        maximal = sa.check_tree_connect(share, ctx.session)
    except NtStatusError as e:
        log.info("event=tree_connect_refused user=%s share=%s status=%s detail=%r", ctx.session.user_name,
                 share.name, ntstatus.status_name(e.status), e.message)
        raise
    st = state_of(ctx.server)
    store_share = None
    if share.type != "pipe":
        try:
            store_share = st.share_for(share, read_only=sa.is_read_only(maximal))
        except (ValueError, OSError) as e:
            log.warning("event=tree_connect share=%s error=%r", share.name, str(e))
            raise ntstatus.StatusBadNetworkName() from None
    tc = ctx.session.add_tree_connect(share, ctx.now, maximal_access=maximal)
    tc.store = store_share
    ctx.header.tree_id = tc.tree_id
    flags = sa.share_flags(share) if share.type != "pipe" else SMB2_SHAREFLAG_NO_CACHING
    if share.encrypt_data and ctx.connection.dialect >= 0x0300:
        flags |= SMB2_SHAREFLAG_ENCRYPT_DATA
    if share.do_access_based_directory_enumeration:  # MS-SMB2 3.3.5.7
        flags |= SMB2_SHAREFLAG_ACCESS_BASED_DIRECTORY_ENUM
    return Response(TreeConnectResponse(
        share_type=SMB2_SHARE_TYPE_PIPE if share.type == "pipe" else SMB2_SHARE_TYPE_DISK,
        share_flags=flags, capabilities=0, maximal_access=maximal))


@register(Command.SMB2_TREE_DISCONNECT, blocking=True)
@_traced
def tree_disconnect(ctx: RequestContext, req: TreeDisconnectRequest) -> Response:
    """MS-SMB2 3.3.5.8: close the tree's opens, remove it from the session."""
    state_of(ctx.server)  # make sure our hook is installed
    tc = ctx.session.remove_tree_connect(ctx.tree_connect.tree_id)
    if tc is not None:
        for hook in list(ctx.server.on_tree_disconnected):
            hook(tc)
    return Response(TreeDisconnectResponse())


# ====================================================================== CLOSE / FLUSH
@register(Command.SMB2_CLOSE, inline_first=True)
@_traced
def close(ctx: RequestContext, req: CloseRequest) -> Response:
    """MS-SMB2 3.3.5.10 (SMB2_CLOSE_FLAG_POSTQUERY_ATTRIB: attributes after the close)."""
    st = state_of(ctx.server)
    o = _lookup(ctx, req.file_id)
    postquery = bool(req.flags & SMB2_CLOSE_FLAG_POSTQUERY_ATTRIB)
    s = _close_open(st, ctx.session, o, postquery, cached_only=ctx.inline)
    if postquery and s is not None:
        return Response(CloseResponse(
            flags=SMB2_CLOSE_FLAG_POSTQUERY_ATTRIB, creation_time=s.creation_time,
            last_access_time=s.last_access_time, last_write_time=s.last_write_time,
            change_time=s.change_time, allocation_size=s.allocation_size, end_of_file=s.end_of_file,
            file_attributes=s.attributes))
    return Response(CloseResponse(flags=0, creation_time=0, last_access_time=0, last_write_time=0,
                                  change_time=0, allocation_size=0, end_of_file=0, file_attributes=0))


@register(Command.SMB2_FLUSH)
@_traced
def flush(ctx: RequestContext, req: FlushRequest) -> Response:
    """MS-SMB2 3.3.5.11."""
    o = _lookup(ctx, req.file_id)
    if not isinstance(o, _PipeOpen):
        state_of(ctx.server).store.flush(o)
    return Response(FlushResponse())


# ====================================================================== READ / WRITE
@register(Command.SMB2_READ)
@_traced
def read(ctx: RequestContext, req: ReadRequest) -> Response:
    """MS-SMB2 3.3.5.12."""
    if req.length > ctx.connection.max_read_size:
        raise fail(STATUS_INVALID_PARAMETER, "Length > MaxReadSize")
    o = _lookup(ctx, req.file_id)
    if isinstance(o, _PipeOpen):
        data, more = o.endpoint.read_message(req.length)
        if more:  # the rest of the message stays for the next READ (MS-SMB2 3.3.5.12)
            return Response(ReadResponse(data=data, data_remaining=0), status=STATUS_BUFFER_OVERFLOW)
    else:
        # read into a buffer with room for the SMB2 header and the response's fixed part
        data = state_of(ctx.server).store.read(o, req.offset, req.length, req.minimum_count,
                                               headroom=HEADER_SIZE + ReadResponse.FIXED_SIZE)
    return Response(ReadResponse(data=data, data_remaining=0))


@register(Command.SMB2_WRITE)
@_traced
def write(ctx: RequestContext, req: WriteRequest) -> Response:
    """MS-SMB2 3.3.5.13."""
    if len(req.data) > ctx.connection.max_write_size:
        raise fail(STATUS_INVALID_PARAMETER, "Length > MaxWriteSize")
    o = _lookup(ctx, req.file_id)
    if isinstance(o, _PipeOpen):
        n = o.endpoint.write(bytes(req.data))
    else:
        st = state_of(ctx.server)
        store = st.store
        n = store.write(o, req.offset, req.data)
        if n:
            o.written = True  # its close breaks the parent directory's leases (core/leases.py)
            _notify(st, o.file, ntf.FILE_ACTION_MODIFIED, ntf.FILE_NOTIFY_CHANGE_LAST_WRITE | ntf.FILE_NOTIFY_CHANGE_SIZE)
        if req.flags & SMB2_WRITEFLAG_WRITE_THROUGH:
            store.flush(o)
        if st.oplocks.active():
            st.oplocks.break_level2(o.file, o, ctx.now)
            st.leases.break_on_write(o.file, o, ctx.now)
    return Response(WriteResponse(count=n, remaining=0, write_channel_info_offset=0,
                                  write_channel_info_length=0))


# ====================================================================== LOCK
@register(Command.SMB2_LOCK)
@_traced
def lock(ctx: RequestContext, req: LockRequest) -> Response | AsyncOp:
    """MS-SMB2 3.3.5.14: a request that must wait goes async (STATUS_PENDING) and is
    completed when granted; SMB2 CANCEL completes it with STATUS_CANCELLED, closing the
    open with STATUS_RANGE_NOT_LOCKED."""
    st = state_of(ctx.server)
    store = st.store
    o = _disk_open(ctx, req.file_id)
    seq_index, replay = dur.lock_sequence(o, ctx.connection.dialect, req.lock_sequence, bool(
        ctx.connection.server_capabilities & SMB2_GLOBAL_CAP_MULTI_CHANNEL))
    if replay:  # a replayed request of a durable open: already done (3.3.5.14)
        return Response(LockResponse())
    elements = [(e.offset, e.length, e.flags) for e in req.locks]
    if st.oplocks.active():
        st.oplocks.break_level2(o.file, o, ctx.now)
        st.leases.break_on_write(o.file, o, ctx.now)  # a lock breaks other leases (smb2.lease.lock1)
    guard = threading.Lock()
    holder: dict[str, Any] = {"op": None, "status": None}

    def result(status: int) -> Response | NtStatusError:
        if status == STATUS_SUCCESS:
            dur.lock_sequence_done(o, req.lock_sequence, seq_index)
            return Response(LockResponse())
        return NtStatusError(status)

    def on_complete(status: int) -> None:
        with guard:
            op = holder["op"]
            if op is None:
                holder["status"] = status
                return
        op.complete(result(status))

    pending = store.lock(o, elements, on_complete=on_complete)
    if pending is None:
        dur.lock_sequence_done(o, req.lock_sequence, seq_index)
        return Response(LockResponse())

    def on_cancel(op: AsyncOp) -> None:
        # An SMB2 CANCEL cancels the wait.  When the session is going away (LOGOFF), the
        # core's teardown closes its opens next; like Windows we let that settle the wait
        # (granted when the holder's handle closes, RANGE_NOT_LOCKED when ours does).
        if op.session is not None and op.session.state is not SessionState.Valid and not o.closed:
            return
        store.cancel_lock(pending)

    op = ctx.go_async(on_cancel=on_cancel)
    with guard:
        holder["op"] = op
        early = holder["status"]
    if early is not None:
        op.complete(result(early))
    return op


# ====================================================================== QUERY_DIRECTORY
@register(Command.SMB2_QUERY_DIRECTORY)
@_traced
def query_directory(ctx: RequestContext, req: QueryDirectoryRequest) -> Response:
    """MS-SMB2 3.3.5.18."""
    if req.output_buffer_length > ctx.connection.max_transact_size:
        raise fail(STATUS_INVALID_PARAMETER, "OutputBufferLength > MaxTransactSize")
    o = _disk_open(ctx, req.file_id)
    pattern = _name(req.file_name)
    # access-based enumeration (MS-SMB2 3.3.5.18) needs the session's identity
    token = _create_handlers.session_token(ctx) if o.share.hide_unreadable else None
    data = sinfo.query_directory(state_of(ctx.server).store, o, req.file_information_class, req.flags,
                                 pattern, req.output_buffer_length, token)
    return Response(QueryDirectoryResponse(output_buffer=data))


@register(Command.SMB2_CHANGE_NOTIFY)
@_traced
def change_notify(ctx: RequestContext, req: Any) -> Response | AsyncOp:
    """MS-SMB2 3.3.5.19 (core/notify.py): buffered changes at once, else STATUS_PENDING."""
    o = _lookup(ctx, req.file_id)
    if isinstance(o, _PipeOpen):
        raise fail(STATUS_INVALID_PARAMETER, "CHANGE_NOTIFY on a pipe")
    return state_of(ctx.server).notify.request(ctx, o, req.flags, req.output_buffer_length, req.completion_filter,
                                               ctx.connection.max_transact_size)


# ====================================================================== QUERY_INFO / SET_INFO
@register(Command.SMB2_QUERY_INFO)
@_traced
def query_info(ctx: RequestContext, req: QueryInfoRequest) -> Response:
    """MS-SMB2 3.3.5.20."""
    if req.output_buffer_length > ctx.connection.max_transact_size:
        raise fail(STATUS_INVALID_PARAMETER, "OutputBufferLength > MaxTransactSize")
    o = _lookup(ctx, req.file_id)
    if isinstance(o, _PipeOpen):
        raise fail(STATUS_NOT_SUPPORTED, "QUERY_INFO on a pipe")
    try:
        data, status = sinfo.query_info(state_of(ctx.server).store, o, req.info_type, req.file_info_class,
                                        req.additional_information, req.output_buffer_length,
                                        bytes(req.input_buffer), req.flags, ctx.connection.dialect)
    except sinfo.NeedBuffer as nb:
        # MS-SMB2 3.3.5.20.3: ErrorData carries the size needed
        return Response(ErrorResponse(error_data=struct.pack("<I", nb.needed)), status=nb.status)
    return Response(QueryInfoResponse(output_buffer=data), status=status)


@register(Command.SMB2_SET_INFO)
@_traced
def set_info(ctx: RequestContext, req: SetInfoRequest) -> Response | AsyncOp:
    """MS-SMB2 3.3.5.21."""
    if len(req.buffer) > ctx.connection.max_transact_size:
        raise fail(STATUS_INVALID_PARAMETER, "BufferLength > MaxTransactSize")
    o = _lookup(ctx, req.file_id)
    if isinstance(o, _PipeOpen):
        raise fail(STATUS_NOT_SUPPORTED, "SET_INFO on a pipe")
    if req.info_type == SMB2_0_INFO_FILE:
        st = state_of(ctx.server)
        if req.file_info_class == _FILE_RENAME_INFORMATION and st.oplocks.active():
            # a rename breaks HANDLE caching of the file's other leases first (smb2.lease.v2_rename)
            breaking = st.leases.before_rename(o.file, o, ctx.now)
            if breaking and _last_in_chain(ctx):
                return _wait_for_breaks(ctx, st, breaking, lambda: set_info(ctx, req))
        before = list(o.file.rel)
        sinfo.set_file_info(st.store, o, req.file_info_class, bytes(req.buffer))
        _notify_set_info(st, o, req.file_info_class, before)
        if st.leases.dir_leases and req.file_info_class in _PARENT_BREAKING_INFO and o.file.stream is None:
            _break_parents(st, o, before, ctx.now)
        if req.file_info_class in (_FILE_ALLOCATION_INFORMATION, _FILE_END_OF_FILE_INFORMATION) \
                and st.oplocks.active():
            st.oplocks.break_level2(o.file, o, ctx.now)
            st.leases.break_on_write(o.file, o, ctx.now)
    elif req.info_type == SMB2_0_INFO_SECURITY:
        st = state_of(ctx.server)
        st.store.set_security(o, req.additional_information, bytes(req.buffer))
        _notify(st, o.file, ntf.FILE_ACTION_MODIFIED, ntf.FILE_NOTIFY_CHANGE_SECURITY)
    elif req.info_type in (SMB2_0_INFO_FILESYSTEM, SMB2_0_INFO_QUOTA):
        raise fail(STATUS_NOT_SUPPORTED, f"SET_INFO InfoType {req.info_type}")
    else:
        raise fail(STATUS_INVALID_PARAMETER, f"InfoType {req.info_type}")
    return Response(SetInfoResponse())


_FILE_RENAME_INFORMATION = 10
_FILE_ALLOCATION_INFORMATION = 19
_FILE_END_OF_FILE_INFORMATION = 20
#: what a SET_INFO of a FileInformationClass changes, as CompletionFilter bits (MS-FSA 2.1.5.14)
_SET_INFO_NOTIFY = {
    4: ntf.FILE_NOTIFY_CHANGE_ATTRIBUTES | ntf.FILE_NOTIFY_CHANGE_LAST_WRITE  # FileBasicInformation
    | ntf.FILE_NOTIFY_CHANGE_LAST_ACCESS | ntf.FILE_NOTIFY_CHANGE_CREATION,
    15: ntf.FILE_NOTIFY_CHANGE_EA,  # FileFullEaInformation
    _FILE_ALLOCATION_INFORMATION: ntf.FILE_NOTIFY_CHANGE_SIZE,
    _FILE_END_OF_FILE_INFORMATION: ntf.FILE_NOTIFY_CHANGE_SIZE | ntf.FILE_NOTIFY_CHANGE_LAST_WRITE,
}


#: SET_INFO classes that change a directory entry of the file (its name, times, size):
#: FileBasicInformation, FileRenameInformation, FileAllocationInformation, FileEndOfFileInformation
_PARENT_BREAKING_INFO = frozenset({4, _FILE_RENAME_INFORMATION, _FILE_ALLOCATION_INFORMATION,
                                   _FILE_END_OF_FILE_INFORMATION})


def _break_parents(st: _State, o: Any, before: list[str], now: float) -> None:
    """A SET_INFO through *o* changed the file's entry: break the leases of its directory,
    and after a rename into another directory those of the one it left too."""
    after = list(o.file.rel)
    st.leases.break_parent(o.file.share, after, o, now)
    if before and [c.lower() for c in before[:-1]] != [c.lower() for c in after[:-1]]:
        st.leases.break_parent(o.file.share, before, o, now)


def _notify_set_info(st: _State, o: Any, cls: int, before: list[str]) -> None:
    """CHANGE_NOTIFY reports of a SET_INFO (MS-FSA 2.1.5.14.11: a rename within a directory
    is RENAMED_OLD_NAME + RENAMED_NEW_NAME, across directories REMOVED + ADDED)."""
    f = o.file
    if cls == _FILE_RENAME_INFORMATION:
        after = list(f.rel)
        if after == before or not before or not after or f.stream is not None:
            return
        bits = _name_bits(f)
        if not f.is_directory:
            o.renamed_file = True  # reported at close (_notify_renamed_closed)
        if [c.lower() for c in before[:-1]] == [c.lower() for c in after[:-1]]:
            st.notify.report(f.share, [(before[:-1], before[-1], ntf.FILE_ACTION_RENAMED_OLD_NAME),
                                       (after[:-1], after[-1], ntf.FILE_ACTION_RENAMED_NEW_NAME)], bits)
        else:
            _notify(st, f, ntf.FILE_ACTION_REMOVED, bits, before)
            _notify(st, f, ntf.FILE_ACTION_ADDED, bits, after)
    elif cls in _SET_INFO_NOTIFY:
        _notify(st, f, ntf.FILE_ACTION_MODIFIED, _SET_INFO_NOTIFY[cls])


# ====================================================================== OPLOCK_BREAK
@register(Command.SMB2_OPLOCK_BREAK, needs_tree=False)
@_traced
def oplock_break(ctx: RequestContext, req: Any) -> Response:
    """MS-SMB2 3.3.5.22: Oplock Break Acknowledgment (2.2.24.1 -> response 2.2.25.1,
    3.3.5.22.1) or Lease Break Acknowledgment (2.2.24.2 -> 2.2.25.2, 3.3.5.22.2)."""
    st = state_of(ctx.server)
    if isinstance(req, LeaseBreakAcknowledgment):
        if ctx.connection.dialect < 0x0210:
            raise fail(STATUS_INVALID_PARAMETER, "lease acknowledgment before SMB 2.1")
        lease = st.leases.acknowledge(ctx.connection.client_guid, bytes(req.lease_key), req.lease_state, ctx.now)
        # the acknowledged state (a waiting open may already have started the next break)
        return Response(LeaseBreakResponse(lease_key=lease.lease_key, lease_state=req.lease_state))
    tc = ctx.session.tree_connect_table.get(ctx.header.tree_id)
    if tc is None:
        raise ntstatus.NtStatusError(ntstatus.STATUS_NETWORK_NAME_DELETED)
    ctx.tree_connect = tc
    o = _lookup(ctx, req.file_id)
    if isinstance(o, _PipeOpen):
        raise fail(STATUS_INVALID_PARAMETER, "oplock acknowledgment on a pipe")
    level = st.oplocks.acknowledge(o, req.oplock_level)
    return Response(OplockBreakResponse(oplock_level=level, file_id=FileId(o.file_id_persistent,
                                                                           o.file_id_volatile)))


__all__ = ["PIPES", "PipeEndpoint", "state_of"]


# the handlers of CREATE and IOCTL register themselves with the dispatch table on import
from . import create as _create_handlers  # noqa: E402,F401
from . import ioctl as _ioctl_handlers  # noqa: E402,F401
