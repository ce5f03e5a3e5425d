"""The CREATE handler (MS-SMB2 3.3.5.9): create contexts, oplocks and leases, durable and
resilient reconnects, app instance ids, named pipes on IPC$, and the breaks an open must
wait for; the object store does the file system part (store/create.py)."""
from __future__ import annotations

import logging
from typing import Any

from ..ntstatus import STATUS_FILE_NOT_AVAILABLE, NtStatusError
from ..store import info as sinfo
from ..store.security import token_for
from ..store.eas import parse_full as parse_full_eas
from ..store.constants import (
    FILE_OPEN_BY_FILE_ID,
    FILE_RESERVE_OPFILTER,
    MAXIMUM_ALLOWED,
    WRITE_ACCESS_BITS,
    map_generic,
)
from ..store.errors import (
    STATUS_ACCESS_DENIED,
    STATUS_INVALID_PARAMETER,
    STATUS_NOT_SUPPORTED,
    STATUS_OBJECT_NAME_NOT_FOUND,
    STATUS_SUCCESS,
    WouldBlock,
    fail,
)
from ..wire import (
    SMB2_OPLOCK_LEVEL_BATCH,
    SMB2_OPLOCK_LEVEL_LEASE,
    Command,
    CreateContext,
    CreateRequest,
    CreateResponse,
    FileId,
    pack_create_contexts,
)
from ..wire.commands import SMB2_GLOBAL_CAP_DIRECTORY_LEASING
from ..wire.header import SMB2_FLAGS_REPLAY_OPERATION
from ..wire.contexts import (SMB2_CREATE_APP_INSTANCE_ID, AllocationSize, AppInstanceId, DurableHandleResponse,
                             DurableHandleResponseV2, QueryMaximalAccessResponse, QueryOnDiskIdResponse)
from . import durable as dur
from . import leases as lsm
from . import notify as ntf
from .dispatch import AsyncOp, RequestContext, Response, register
from .files import (PIPES, _close_open, _last_in_chain, _name, _name_bits, _notify, _PipeOpen, _State, _traced,
                    _wait_for_breaks, state_of)

log = logging.getLogger("wsd_smb.files")

STATUS_BAD_IMPERSONATION_LEVEL = 0xC00000A5
#: CreateOptions bits a client may send (MS-SMB2 2.2.13; others -> INVALID_PARAMETER)
VALID_CREATE_OPTIONS = 0x00FFFFFF
#: FILE_CREATE_TREE_CONNECTION (0x80), FILE_OPEN_BY_FILE_ID, FILE_RESERVE_OPFILTER
UNSUPPORTED_CREATE_OPTIONS = 0x00000080 | FILE_OPEN_BY_FILE_ID | FILE_RESERVE_OPFILTER
#: DesiredAccess bits with no meaning (MS-DTYP 2.4.3): Windows answers ACCESS_DENIED
RESERVED_ACCESS_BITS = 0x0CE0FE00
#: FileAttributes a client may pass to CREATE (MS-FSCC 2.6 without VOLUME/DEVICE)
VALID_CREATE_ATTRIBUTES = 0x00007FB7
FILE_ATTRIBUTE_ENCRYPTED = 0x00004000


# ====================================================================== CREATE
def _create_contexts(req: CreateRequest) -> dict[bytes, CreateContext]:
    out = {}
    for c in req.contexts:
        if len(c.name) < 4:  # MS-SMB2 2.2.13.2 names are at least 4 bytes
            raise fail(STATUS_INVALID_PARAMETER, f"create context name {bytes(c.name)!r}")
        out[bytes(c.name)] = c
    return out


@register(Command.SMB2_CREATE, inline_first=True)
@_traced
def create(ctx: RequestContext, req: CreateRequest) -> Response:
    """MS-SMB2 3.3.5.9."""
    st = state_of(ctx.server)
    tc = ctx.tree_connect
    if ctx.inline and (tc.share.type == "pipe" or not _inline_contexts_only(req)):
        raise WouldBlock()  # on the loop only plain opens (no pipes, EAs, SDs, durability, ...)
    name = _name(req.name)
    if tc.share.type != "pipe" and req.create_contexts:
        durable_req, durable_rc = dur.parse(_create_contexts(req), ctx.connection.dialect)
        if durable_rc is not None:  # a reconnect skips the request's other fields (3.3.5.9.7)
            return _create_reconnect(ctx, st, name, _create_contexts(req), durable_rc)
    else:
        durable_req = None
    if req.impersonation_level > 3:
        raise NtStatusError(STATUS_BAD_IMPERSONATION_LEVEL)
    # order as Windows checks (smbtorture smb2.create.gentest): access mask, options, attributes
    if req.desired_access & RESERVED_ACCESS_BITS:
        raise fail(STATUS_ACCESS_DENIED, f"DesiredAccess 0x{req.desired_access:x}")
    if req.create_options & ~VALID_CREATE_OPTIONS:
        raise fail(STATUS_INVALID_PARAMETER, f"CreateOptions 0x{req.create_options:x}")
    if req.create_options & UNSUPPORTED_CREATE_OPTIONS:
        raise fail(STATUS_NOT_SUPPORTED, f"CreateOptions 0x{req.create_options:x}")
    if req.file_attributes & ~VALID_CREATE_ATTRIBUTES:
        raise fail(STATUS_INVALID_PARAMETER, f"FileAttributes 0x{req.file_attributes:x}")
    if req.file_attributes & FILE_ATTRIBUTE_ENCRYPTED:
        raise fail(STATUS_ACCESS_DENIED, "no encryption on this server")  # as a standalone Windows server
    contexts = _create_contexts(req)
    if tc.share.type == "pipe":
        return _create_pipe(ctx, st, name)
    if durable_req is not None and durable_req.version == 2:
        # 3.3.5.9.10: an open of this client with this CreateGuid that is still eligible
        # for replay: a replayed CREATE gets it back, any other CREATE fails
        is_replay = bool(ctx.header.flags & SMB2_FLAGS_REPLAY_OPERATION)
        client_guid = ctx.connection.client_guid
        if is_replay and st.pending_creates.is_pending(client_guid, durable_req.create_guid):
            raise fail(STATUS_FILE_NOT_AVAILABLE, "replay of a CREATE still waiting for breaks (core/replay.py)")
        other = dur.find_create_guid(ctx.server, client_guid, durable_req.create_guid)
        if other is not None:
            if not is_replay:
                raise fail(dur.STATUS_DUPLICATE_OBJECTID, "CreateGuid in use")
            return _create_replay(ctx, st, req, other, contexts)
    if b"TWrp" in contexts:
        raise fail(STATUS_OBJECT_NAME_NOT_FOUND, "no previous versions")
    eas = None
    if b"ExtA" in contexts:  # SMB2_CREATE_EA_BUFFER (MS-SMB2 2.2.13.2.1)
        eas = parse_full_eas(bytes(contexts[b"ExtA"].data))
    access = req.desired_access
    mapped = map_generic(access) & ~MAXIMUM_ALLOWED
    if mapped & ~tc.maximal_access & 0x001F01FF:
        raise fail(STATUS_ACCESS_DENIED, "beyond the tree connect's maximal access")
    alloc = 0
    if b"AlSi" in contexts:  # SMB2_CREATE_ALLOCATION_SIZE (MS-SMB2 2.2.13.2.6)
        data = bytes(contexts[b"AlSi"].data)
        if len(data) != AllocationSize.FIXED_SIZE:
            raise fail(STATUS_INVALID_PARAMETER, "AlSi context size")
        alloc = AllocationSize.unpack(data, 0).allocation_size
    result = _create_open(ctx, st, req, name, contexts, eas, alloc, durable_req)
    if isinstance(result, AsyncOp) and durable_req is not None and durable_req.version == 2:
        st.pending_creates.hold(ctx.connection.client_guid, durable_req.create_guid, result)
    return result


def session_token(ctx: RequestContext) -> Any:
    """The security identity (store/security.py Token) of the request's session: what
    the object store checks stored security descriptors against."""
    sc = ctx.session.security_context
    if sc is None:
        return token_for(ctx.config.server_name, "", is_anonymous=True)
    return token_for(ctx.config.server_name, sc.user_name, sc.is_admin, sc.is_guest, sc.is_anonymous,
                     sc.privileges)


#: create contexts a CREATE attempted on the event loop may carry (they only read state)
_INLINE_CREATE_CONTEXTS = frozenset({b"MxAc", b"QFid"})


def _inline_contexts_only(req: CreateRequest) -> bool:
    return all(bytes(c.name) in _INLINE_CREATE_CONTEXTS for c in req.contexts)


def _create_open(ctx: RequestContext, st: _State, req: CreateRequest, name: str, contexts: dict,
                 eas: Any, alloc: int, durable_req: Any = None) -> Response | AsyncOp:
    """Open execution, oplock acquisition and response construction (MS-SMB2 3.3.5.9).
    When the open must first break other opens' oplocks (core/oplocks.py) the request
    goes async and this runs again once the breaks are done."""
    tc = ctx.tree_connect
    mgr = st.oplocks
    app_id = _app_instance_id(ctx, contexts)
    if app_id is not None:
        _close_app_instance(st, app_id, tc, name)
    lease_req, lease_version = _lease_request(ctx, req, contexts)
    client_guid = ctx.connection.client_guid
    if ctx.inline and mgr.active():
        raise WouldBlock()  # breaks to arrange: not on the loop
    if mgr.active():
        fobj = st.store.file_of(tc.store, name)
        lease_key = bytes(lease_req.lease_key) if lease_req is not None else None
        if lease_key is not None:
            st.leases.check_key(client_guid, lease_key, fobj)
        if fobj is not None:
            access = map_generic(req.desired_access)
            breaking = mgr.before_open(fobj, access, req.share_access, req.create_disposition, ctx.now)
            breaking |= st.leases.before_open(fobj, access, req.share_access, req.create_disposition,
                                              client_guid, lease_key, ctx.now,
                                              delete_on_close=bool(req.create_options & 0x00001000),
                                              retried=ctx._async is not None)
            if breaking and _last_in_chain(ctx):
                return _wait_for_breaks(ctx, st, breaking,
                                        lambda: _create_open(ctx, st, req, name, contexts, eas, alloc, durable_req))
            # inside a compound (not its last request) an open cannot go async: the breaks
            # are sent and the open proceeds at once (smbtorture smb2.compound.compound-break)
    result = st.store.create(tc.store, name, desired_access=req.desired_access, share_access=req.share_access,
                             create_disposition=req.create_disposition, create_options=req.create_options,
                             file_attributes=req.file_attributes, allocation_size=alloc, eas=eas,
                             security_descriptor=bytes(contexts[b"SecD"].data) if b"SecD" in contexts else None,
                             cached_only=ctx.inline, token=session_token(ctx))
    o = result.open
    if result.create_action == 2:  # FILE_CREATED
        _notify(st, o.file, ntf.FILE_ACTION_ADDED, _name_bits(o.file))
    elif result.create_action in (0, 3):  # FILE_SUPERSEDED, FILE_OVERWRITTEN
        _notify(st, o.file, ntf.FILE_ACTION_MODIFIED, ntf.FILE_NOTIFY_CHANGE_ATTRIBUTES
                | ntf.FILE_NOTIFY_CHANGE_SIZE | ntf.FILE_NOTIFY_CHANGE_LAST_WRITE)
    o.session = ctx.session
    o.tree_connect = tc
    # (a CREATE that waited for breaks may finish after its channel was lost: the open
    # then belongs to a channel of the session that is left, core/connection.py)
    o.connection = ctx.connection if not ctx.connection.closed else (ctx.session.connection or ctx.connection)
    o.is_durable = False
    o.client_guid = ctx.connection.client_guid
    o.create_action = int(result.create_action)  # what a replay of this CREATE answers
    if ctx.connection.dialect >= 0x0300:
        o.channel_sequence = ctx.header.channel_sequence  # Open.ChannelSequence (3.3.5.2.10)
        o.is_replay_eligible = True
    if durable_req is not None and durable_req.version == 2:
        o.create_guid = durable_req.create_guid  # 3.3.5.9.10, granted durability or not
    o.file_global_id = ctx.server.allocate_global_id()
    o.open_time = ctx.now
    ctx.session.open_table[o.file_id_volatile] = o
    ctx.server.global_open_table[o.file_id_persistent] = o
    tc.open_count += 1
    if mgr.active() and result.create_action in (0, 3):  # FILE_SUPERSEDED / FILE_OVERWRITTEN
        mgr.break_level2(o.file, o, ctx.now)
    out_ctx = []
    if lease_req is not None:  # 3.3.5.9.8 / 3.3.5.9.11
        lease, lease_flags = st.leases.grant(o, lease_req, lease_version, client_guid, name,
                                             directory_leasing=_directory_leasing(ctx))
        oplock_level = SMB2_OPLOCK_LEVEL_LEASE if lease is not None else 0
        if lease is not None:
            out_ctx.append(st.leases.response_context(lease, lease_flags))
    else:
        oplock_level = mgr.grant(o, req.requested_oplock_level)
    if st.leases.dir_leases and result.create_action in (0, 2, 3) and o.file.stream is None:
        # a new entry, or one whose size/times changed: the parent directory's leases
        # (after the grant, so that the open's ParentLeaseKey is known)
        st.leases.break_parent(o.file.share, list(o.file.rel), o, ctx.now)
    o.app_instance_id = app_id
    s = st.store.stat(o, eas=False)  # the CREATE response has no EaSize
    if durable_req is not None and dur.grant(o, durable_req, ctx.config, dur.owner_of(ctx.session)):
        out_ctx.append(_durable_response(o, durable_req.version))
    out_ctx += _query_contexts(o, s, tc, contexts)
    return _create_response(o, s, oplock_level, int(result.create_action), out_ctx)


def _query_contexts(o: Any, s: Any, tc: Any, contexts: dict) -> list:
    """The MxAc (3.3.5.9.5) and QFid (3.3.5.9.9) response contexts a request asked for."""
    out = []
    if b"MxAc" in contexts:  # by the file's descriptor where it has one, within the share's
        maximal = tc.maximal_access if o.maximal_access is None else o.maximal_access & tc.maximal_access
        out.append(CreateContext(name=b"MxAc", data=QueryMaximalAccessResponse(
            query_status=STATUS_SUCCESS, maximal_access=maximal).pack(0)))
    if b"QFid" in contexts:
        out.append(CreateContext(name=b"QFid", data=QueryOnDiskIdResponse(
            disk_file_id=s.index_number, volume_id=sinfo.volume_serial(o.share.name)).pack(0)))
    return out


def _create_response(o: Any, s: Any, oplock_level: int, create_action: int, out_ctx: list) -> Response:
    return Response(CreateResponse(
        oplock_level=oplock_level, flags=0, create_action=create_action,
        creation_time=s.creation_time, last_access_time=s.last_access_time,
        last_write_time=s.last_write_time, change_time=s.change_time,
        allocation_size=s.allocation_size, end_of_file=s.end_of_file, file_attributes=s.attributes,
        file_id=FileId(o.file_id_persistent, o.file_id_volatile),
        create_contexts=pack_create_contexts(out_ctx) if out_ctx else b""))


def _create_replay(ctx: RequestContext, st: _State, req: CreateRequest, o: Any, contexts: dict) -> Response:
    """A replayed CREATE (SMB2_FLAGS_REPLAY_OPERATION) naming, by its CreateGuid, an open
    of this client still eligible for replay (MS-SMB2 3.3.5.9.10): no open execution and
    no oplock acquisition; the response describes the existing open.

    * Another session's open (a replay comes on a channel of the same session):
      STATUS_ACCESS_DENIED.
    * A lease asked for on an open without one, none asked for on a leased open, or
      another LeaseKey: STATUS_ACCESS_DENIED (as Windows and Samba, smbtorture
      smb2.replay.replay-dhv2-oplock-lease / -lease3).
    * Leased: OplockLevel LEASE with the lease's current state (an upgrade made by
      another open of the lease shows, replay-dhv2-lease1/2).
    * Oplock: the lower of the requested level and the open's own; the open keeps its
      oplock (replay-dhv2-oplock2).
    * The durable v2 response context when the open is durable and the answered
      oplock/lease still qualifies (BATCH, or HANDLE caching).
    * CreateAction is the original CREATE's; the other fields are the file's now.
    * ShareAccess, DesiredAccess, CreateDisposition and FileAttributes of the replay are
      not looked at (replay-dhv2-oplock3, replay6: Windows and Samba ignore them too).
    """
    if o.session is not ctx.session:
        raise fail(STATUS_ACCESS_DENIED, "replay of another session's open")
    lease_req, _version = _lease_request(ctx, req, contexts)
    if (lease_req is None) != (o.lease is None):
        raise fail(STATUS_ACCESS_DENIED, "replay asks for a lease the open does not have, or none for its lease")
    out_ctx = []
    if o.lease is not None:
        if bytes(lease_req.lease_key) != o.lease.lease_key:
            raise fail(STATUS_ACCESS_DENIED, "replay with another LeaseKey")
        oplock_level = SMB2_OPLOCK_LEVEL_LEASE
        out_ctx.append(st.leases.response_context(o.lease))
        durable = o.is_durable and dur.eligible(o)
    else:
        oplock_level = min(req.requested_oplock_level, o.oplock_level)
        durable = o.is_durable and oplock_level == SMB2_OPLOCK_LEVEL_BATCH
    if durable:
        out_ctx.append(_durable_response(o, 2))
    s = st.store.stat(o, eas=False)
    out_ctx += _query_contexts(o, s, ctx.tree_connect, contexts)
    log.info("event=create_replayed file=%s oplock=0x%x", o.path, oplock_level)
    return _create_response(o, s, oplock_level, getattr(o, "create_action", 1), out_ctx)


def _directory_leasing(ctx: RequestContext) -> bool:
    """Directory leases on this connection: SMB 3.x with SMB2_GLOBAL_CAP_DIRECTORY_LEASING
    offered (core/negotiate.py)."""
    return bool(getattr(ctx.connection, "server_capabilities", 0) & SMB2_GLOBAL_CAP_DIRECTORY_LEASING)


def _lease_request(ctx: RequestContext, req: CreateRequest, contexts: dict) -> tuple[Any, int]:
    """The RqLs context when a lease is asked for and this server leases (2.1+)."""
    c = contexts.get(b"RqLs")
    if (c is None or req.requested_oplock_level != SMB2_OPLOCK_LEVEL_LEASE or ctx.connection.dialect < 0x0210
            or not ctx.config.leasing):
        return None, 0
    return lsm.LeaseManager.parse_request(bytes(c.data), ctx.connection.dialect)


def _app_instance_id(ctx: RequestContext, contexts: dict) -> bytes | None:
    """SMB2_CREATE_APP_INSTANCE_ID (2.2.13.2.13), SMB 3.x only."""
    c = contexts.get(SMB2_CREATE_APP_INSTANCE_ID)
    if c is None or ctx.connection.dialect < 0x0300:
        return None
    data = bytes(c.data)
    if len(data) != AppInstanceId.FIXED_SIZE:
        raise fail(STATUS_INVALID_PARAMETER, "AppInstanceId context size")
    return bytes(AppInstanceId.unpack(data, 0).app_instance_id)


def _close_app_instance(st: _State, app_id: bytes, tc: Any, name: str) -> None:
    """MS-SMB2 3.3.5.9.13: an open of the same file under the same AppInstanceId (a
    failed-over application instance) is closed instead of being broken."""
    key = name.lower()
    for o in list(tc.session.connection.server.global_open_table.values()):
        if getattr(o, "app_instance_id", None) != app_id or isinstance(o, _PipeOpen) or o.closed:
            continue
        if o.share.path != tc.store.path or o.path.lower() != key:  # same root, through any tree
            continue
        log.info("event=app_instance_close file=%s", o.path)
        if o.session is None:
            st.close_disconnected(o)
        else:
            _close_open(st, o.session, o)


def _durable_response(o: Any, version: int) -> CreateContext:
    """SMB2_CREATE_DURABLE_HANDLE_RESPONSE (2.2.14.2.3) or _V2 (2.2.14.2.12)."""
    if version == 1:
        return CreateContext(name=dur.DHNQ, data=DurableHandleResponse().pack(0))
    return CreateContext(name=dur.DH2Q, data=DurableHandleResponseV2(timeout=dur.v2_timeout_ms(o), flags=0).pack(0))


def _create_reconnect(ctx: RequestContext, st: _State, name: str, contexts: dict,
                      rc: Any) -> Response:
    """Durable reconnect (MS-SMB2 3.3.5.9.7 DH-3 ... DH-15, 3.3.5.9.12): no path name
    validation or open execution; the preserved open is re-attached."""
    lease_req, lease_version = None, 0
    if b"RqLs" in contexts and ctx.connection.dialect >= 0x0210 and ctx.config.leasing:
        lease_req, lease_version = lsm.LeaseManager.parse_request(bytes(contexts[b"RqLs"].data),
                                                                   ctx.connection.dialect)
    o = dur.reconnect(ctx, name, contexts, rc, lease_req, lease_version)
    tc = ctx.tree_connect
    if tc.store is not None and tc.store.read_only and o.granted_access & WRITE_ACCESS_BITS:
        # a tree connect that is read-only (TreeConnect.MaximalAccess: read_only share, or the
        # user is in read_list now) cannot take over an open with write access
        raise fail(STATUS_ACCESS_DENIED, "durable reconnect of a writable open through a read-only tree")
    st.durable.reattached(o)
    o.connection = ctx.connection  # DH-9
    o.session = ctx.session  # DH-10
    o.tree_connect = tc  # DH-11
    tc.open_count += 1
    o.file_id_volatile = st.store.new_volatile_id(o)  # DH-12
    ctx.session.open_table[o.file_id_volatile] = o  # DH-13
    # DH-14: no open initialisation, no oplock acquisition; DH-15: the response
    s = st.store.stat(o)
    # no DHnQ/DH2Q response context (the MAY of DH-15 is not taken, as Windows and Samba:
    # smbtorture durable-open.delete_on_close2, durable-v2-open.reopen1a/reopen2 check it)
    out_ctx: list = []
    if o.lease is not None:
        out_ctx.append(st.leases.response_context(o.lease))
    log.info("event=durable_reconnect file=%s version=%d", o.path, rc.version)
    return Response(CreateResponse(
        oplock_level=o.oplock_level, flags=0, create_action=1,  # FILE_OPENED
        creation_time=s.creation_time, last_access_time=s.last_access_time,
        last_write_time=s.last_write_time, change_time=s.change_time,
        allocation_size=s.allocation_size, end_of_file=s.end_of_file, file_attributes=s.attributes,
        file_id=FileId(o.file_id_persistent, o.file_id_volatile),
        create_contexts=pack_create_contexts(out_ctx) if out_ctx else b""))


def _create_pipe(ctx: RequestContext, st: _State, name: str) -> Response:
    pname = name.lower()
    if pname.startswith("pipe\\"):
        pname = pname[5:]
    factory = PIPES.get(pname)
    if factory is None:
        raise fail(STATUS_OBJECT_NAME_NOT_FOUND, f"pipe {name!r}")
    ep = factory(ctx)
    pid = st.new_pipe_id()
    o = _PipeOpen(ep, pid, pid)
    o.session, o.tree_connect, o.connection = ctx.session, ctx.tree_connect, ctx.connection
    o.open_time = ctx.now
    o.file_global_id = ctx.server.allocate_global_id()
    ctx.session.open_table[o.file_id_volatile] = o
    ctx.server.global_open_table[o.file_id_persistent] = o
    ctx.tree_connect.open_count += 1
    return Response(CreateResponse(
        oplock_level=0, flags=0, create_action=1, creation_time=0, last_access_time=0, last_write_time=0,
        change_time=0, allocation_size=4096, end_of_file=0, file_attributes=0x80,
        file_id=FileId(o.file_id_persistent, o.file_id_volatile)))
