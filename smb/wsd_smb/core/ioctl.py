"""The IOCTL handler (MS-SMB2 3.3.5.15): pipe transceive and wait, object IDs, compression,
resiliency requests, server-side copy (resume keys, copy chunk), sparse files
(FSCTL_SET_SPARSE, FSCTL_QUERY_ALLOCATED_RANGES, FSCTL_SET_ZERO_DATA) and the FSCTLs answered
NOT_SUPPORTED; FSCTL_VALIDATE_NEGOTIATE_INFO and FSCTL_QUERY_NETWORK_INTERFACE_INFO are
answered by the connection itself (negotiate.py)."""
from __future__ import annotations

import hmac
import logging
import secrets
import struct
from typing import Any

from .. import ntstatus
from ..ntstatus import NtStatusError
from ..store import Open
from ..store.fscc import FileObjectIdBuffer
from ..store.constants import (
    FILE_EXECUTE,
    FILE_READ_DATA,
    FILE_WRITE_DATA,
)
from ..store.errors import (
    STATUS_ACCESS_DENIED,
    STATUS_INVALID_PARAMETER,
    STATUS_NOT_A_REPARSE_POINT,
    STATUS_NOT_SUPPORTED,
    STATUS_OBJECT_NAME_NOT_FOUND,
    STATUS_SUCCESS,
    fail,
)
from ..wire import (
    SMB2_0_IOCTL_IS_FSCTL,
    Command,
    IoctlRequest,
    IoctlResponse,
)
from ..wire.copychunk import (FSCTL_SRV_COPYCHUNK, FSCTL_SRV_COPYCHUNK_WRITE, FSCTL_SRV_REQUEST_RESUME_KEY,
                              RESUME_KEY_SIZE, SrvCopychunkCopy, SrvCopychunkResponse, SrvRequestResumeKeyResponse,
                              unpack_chunks)
from ..wire.resiliency import FSCTL_LMR_REQUEST_RESILIENCY, NetworkResiliencyRequest
from ..wire.sparse import (FSCTL_QUERY_ALLOCATED_RANGES, FSCTL_SET_SPARSE, FSCTL_SET_ZERO_DATA,
                           FileAllocatedRangeBuffer, FileSetSparseBuffer, FileZeroDataInformation, pack_ranges)
from . import durable as dur
from .dispatch import RequestContext, Response, register
from .files import (FSCTL_PIPE_TRANSCEIVE, STATUS_BUFFER_OVERFLOW, STATUS_INVALID_DEVICE_REQUEST, _lookup, _PipeOpen,
                    _traced, state_of)

log = logging.getLogger("wsd_smb.files")

STATUS_FS_DRIVER_REQUIRED = 0xC000019C

# FSCTL codes (MS-FSCC 2.3, MS-SMB2 2.2.31)
FSCTL_DFS_GET_REFERRALS = 0x00060194
FSCTL_DFS_GET_REFERRALS_EX = 0x000601B0
FSCTL_GET_REPARSE_POINT = 0x000900A8
FSCTL_SET_REPARSE_POINT = 0x000900A4
FSCTL_DELETE_REPARSE_POINT = 0x000900AC
FSCTL_GET_COMPRESSION = 0x0009003C
FSCTL_SET_COMPRESSION = 0x0009C040
FSCTL_CREATE_OR_GET_OBJECT_ID = 0x000900C0
FSCTL_GET_OBJECT_ID = 0x0009009C


# ====================================================================== IOCTL
FSCTL_QUERY_NETWORK_INTERFACE_INFO = 0x001401FC
FSCTL_PIPE_WAIT = 0x00110018
_SERVER_LEVEL_FSCTLS = frozenset({FSCTL_QUERY_NETWORK_INTERFACE_INFO, FSCTL_PIPE_WAIT})

@register(Command.SMB2_IOCTL)
@_traced
def ioctl(ctx: RequestContext, req: IoctlRequest) -> Response:
    """MS-SMB2 3.3.5.15."""
    if req.flags != SMB2_0_IOCTL_IS_FSCTL:
        raise fail(STATUS_NOT_SUPPORTED, "IOCTL without SMB2_0_IOCTL_IS_FSCTL")
    code = req.ctl_code
    # FSCTL_VALIDATE_NEGOTIATE_INFO never reaches us: the core answers it (connection.py)
    if code in (FSCTL_DFS_GET_REFERRALS, FSCTL_DFS_GET_REFERRALS_EX):
        raise NtStatusError(STATUS_FS_DRIVER_REQUIRED)  # no DFS on this server
    if req.max_output_response > ctx.connection.max_transact_size or \
            len(req.input) > ctx.connection.max_transact_size:
        raise fail(STATUS_INVALID_PARAMETER, "IOCTL larger than MaxTransactSize")
    if tuple(req.file_id) == (0xFFFFFFFFFFFFFFFF, 0xFFFFFFFFFFFFFFFF) and code in _SERVER_LEVEL_FSCTLS:
        # server-level FSCTLs take no file (QUERY_NETWORK_INTERFACE_INFO: answered by the core
        # when multi_channel is on, else not supported, 3.3.5.15.11; PIPE_WAIT); any other FSCTL with this FileId names no open: FILE_CLOSED below
        raise fail(STATUS_NOT_SUPPORTED, f"FSCTL 0x{code:08x} without a file")
    o = _lookup(ctx, req.file_id)
    if isinstance(o, _PipeOpen):
        if code != FSCTL_PIPE_TRANSCEIVE:
            raise fail(STATUS_NOT_SUPPORTED, f"FSCTL 0x{code:08x} on a pipe")
        out = o.endpoint.transceive(bytes(req.input), req.max_output_response)
        status = STATUS_SUCCESS
        if len(out) > req.max_output_response:
            out, status = out[:req.max_output_response], STATUS_BUFFER_OVERFLOW
        return Response(IoctlResponse(ctl_code=code, file_id=req.file_id, input=b"", output=out, flags=0),
                        status=status)
    if code == FSCTL_PIPE_TRANSCEIVE:
        raise fail(STATUS_INVALID_DEVICE_REQUEST, "not a pipe")
    if code == FSCTL_GET_REPARSE_POINT:
        raise NtStatusError(STATUS_NOT_A_REPARSE_POINT)
    if code == FSCTL_DELETE_REPARSE_POINT:
        raise NtStatusError(STATUS_NOT_A_REPARSE_POINT)
    if code in (FSCTL_CREATE_OR_GET_OBJECT_ID, FSCTL_GET_OBJECT_ID):  # MS-FSA 2.1.5.10.1 / .13
        if req.max_output_response < FileObjectIdBuffer.FIXED_SIZE:
            raise fail(STATUS_INVALID_PARAMETER, "output buffer smaller than FILE_OBJECTID_BUFFER")
        out = state_of(ctx.server).store.object_id(o, create=code == FSCTL_CREATE_OR_GET_OBJECT_ID)
        return Response(IoctlResponse(ctl_code=code, file_id=req.file_id, input=b"", output=out, flags=0))
    if code == FSCTL_GET_COMPRESSION:
        if req.max_output_response < 2:
            raise NtStatusError(0xC0000023)  # STATUS_BUFFER_TOO_SMALL
        return Response(IoctlResponse(ctl_code=code, file_id=req.file_id, input=b"",
                                      output=struct.pack("<H", 0), flags=0))
    if code == FSCTL_SET_COMPRESSION:  # MS-FSCC 2.3 FSCTL_SET_COMPRESSION; this file system has no compression
        if len(req.input) < 2:
            raise fail(STATUS_INVALID_PARAMETER, "FSCTL_SET_COMPRESSION without CompressionState")
        state = struct.unpack_from("<H", bytes(req.input))[0]
        if state > 2:  # COMPRESSION_FORMAT_NONE 0, _DEFAULT 1, _LZNT1 2
            raise fail(STATUS_INVALID_PARAMETER, f"CompressionState {state}")
        if state:  # as Windows ReFS and Samba without compression: NONE is a no-op, the rest unsupported
            raise fail(STATUS_NOT_SUPPORTED, "no compression on this file system")
        return Response(IoctlResponse(ctl_code=code, file_id=req.file_id, input=b"", output=b"", flags=0))
    if code == FSCTL_SET_REPARSE_POINT:
        raise NtStatusError(STATUS_INVALID_DEVICE_REQUEST)  # the store has no reparse points
    if code in (FSCTL_SET_SPARSE, FSCTL_QUERY_ALLOCATED_RANGES, FSCTL_SET_ZERO_DATA):
        return _sparse(ctx, req, o)
    if code == FSCTL_SRV_REQUEST_RESUME_KEY:
        return _request_resume_key(ctx, req, o)
    if code in (FSCTL_SRV_COPYCHUNK, FSCTL_SRV_COPYCHUNK_WRITE):
        return _copychunk(ctx, req, o)
    if code == FSCTL_LMR_REQUEST_RESILIENCY:
        return _request_resiliency(ctx, req, o)
    raise fail(STATUS_NOT_SUPPORTED, f"FSCTL 0x{code:08x}")


def _request_resiliency(ctx: RequestContext, req: IoctlRequest, o: Open) -> Response:
    """MS-SMB2 3.3.5.15.9 Handling a Resiliency Request (2.1 and 3.x; 2.0.2 answers
    STATUS_INVALID_DEVICE_REQUEST, the MAY of the section); the open's state changes
    in core/durable.py ``request_resiliency``.  The response has no output."""
    if ctx.connection.dialect == 0x0202:
        raise fail(STATUS_INVALID_DEVICE_REQUEST, "FSCTL_LMR_REQUEST_RESILIENCY on SMB 2.0.2")
    data = bytes(req.input)
    if len(data) < NetworkResiliencyRequest.FIXED_SIZE:
        raise fail(STATUS_INVALID_PARAMETER, f"NETWORK_RESILIENCY_REQUEST of {len(data)} bytes")
    body = NetworkResiliencyRequest.unpack(data, 0)
    dur.request_resiliency(o, body.timeout, ctx.config, dur.owner_of(ctx.session))
    log.info("event=resiliency_granted file=%s timeout=%.0fs", o.path, o.resiliency_timeout)
    return Response(IoctlResponse(ctl_code=req.ctl_code, file_id=req.file_id, input=b"", output=b"", flags=0))


# ---------------------------------------------------------------------- sparse files
def _sparse(ctx: RequestContext, req: IoctlRequest, o: Open) -> Response:
    """The sparse-file FSCTLs (MS-FSA 2.1.5.10; the store's part in store/sparse.py).

    * FSCTL_SET_SPARSE: the FILE_SET_SPARSE_BUFFER is optional (none: set); extra input
      bytes are ignored, as Windows does.
    * FSCTL_QUERY_ALLOCATED_RANGES: input shorter than a FILE_ALLOCATED_RANGE_BUFFER is
      STATUS_INVALID_PARAMETER; the output holds MaxOutputResponse // 16 ranges, more are
      STATUS_BUFFER_OVERFLOW with the ranges that fit (MS-SMB2 3.3.5.15: sent in an IOCTL
      response, not an error response).
    * FSCTL_SET_ZERO_DATA: input shorter than FILE_ZERO_DATA_INFORMATION is
      STATUS_INVALID_PARAMETER; no output."""
    store = state_of(ctx.server).store
    data = bytes(req.input)
    code = req.ctl_code
    out = b""
    status = STATUS_SUCCESS
    if code == FSCTL_SET_SPARSE:
        sparse = True if not data else bool(FileSetSparseBuffer.unpack(data, 0).set_sparse)
        store.set_sparse(o, sparse)
    elif code == FSCTL_QUERY_ALLOCATED_RANGES:
        if len(data) < FileAllocatedRangeBuffer.FIXED_SIZE:
            raise fail(STATUS_INVALID_PARAMETER, f"FILE_ALLOCATED_RANGE_BUFFER of {len(data)} bytes")
        q = FileAllocatedRangeBuffer.unpack(data, 0)
        ranges, status = store.query_allocated_ranges(
            o, q.file_offset, q.length, req.max_output_response // FileAllocatedRangeBuffer.FIXED_SIZE)
        out = pack_ranges(ranges)
    else:
        if len(data) < FileZeroDataInformation.FIXED_SIZE:
            raise fail(STATUS_INVALID_PARAMETER, f"FILE_ZERO_DATA_INFORMATION of {len(data)} bytes")
        z = FileZeroDataInformation.unpack(data, 0)
        store.zero_data(o, z.file_offset, z.beyond_final_zero)
    return Response(IoctlResponse(ctl_code=code, file_id=req.file_id, input=b"", output=out, flags=0),
                    status=status)


# ---------------------------------------------------------------------- server-side copy
#: ServerSideCopyMaxNumberofChunks, ServerSideCopyMaxChunkSize, ServerSideCopyMaxDataSize
#: (MS-SMB2 3.3.3): Windows' and Samba's values
SERVER_SIDE_COPY_MAX_NUMBER_OF_CHUNKS = 256
SERVER_SIDE_COPY_MAX_CHUNK_SIZE = 1024 * 1024
SERVER_SIDE_COPY_MAX_DATA_SIZE = 16 * 1024 * 1024


def _request_resume_key(ctx: RequestContext, req: IoctlRequest, o: Open) -> Response:
    """MS-SMB2 3.3.5.15.5 FSCTL_SRV_REQUEST_RESUME_KEY: the open's Open.ResumeKey, made on the
    first request: FileId.Volatile (8 bytes, to find the open again) + 16 random bytes (so a
    key cannot be guessed from a FileId).  No access is needed to ask for it; the copy checks."""
    if req.max_output_response < SrvRequestResumeKeyResponse.FIXED_SIZE:
        raise fail(STATUS_INVALID_PARAMETER, "output buffer smaller than SRV_REQUEST_RESUME_KEY")
    if not o.resume_key:
        o.resume_key = struct.pack("<Q", o.file_id_volatile) + secrets.token_bytes(RESUME_KEY_SIZE - 8)
    out = SrvRequestResumeKeyResponse(resume_key=o.resume_key).pack(0)
    return Response(IoctlResponse(ctl_code=req.ctl_code, file_id=req.file_id, input=b"", output=out, flags=0))


def _source_open(ctx: RequestContext, key: bytes) -> Open | None:
    """The open whose Open.ResumeKey is *key* (3.3.5.15.6), if it is still open."""
    store = state_of(ctx.server).store
    src = store.opens.get(struct.unpack_from("<Q", key)[0])
    if src is None or src.closed or not src.resume_key or not hmac.compare_digest(src.resume_key, key):
        return None
    return src


def _copychunk_response(req: IoctlRequest, chunks: int, chunk_bytes: int, total: int,
                        status: int = STATUS_SUCCESS) -> Response:
    out = SrvCopychunkResponse(chunks_written=chunks, chunk_bytes_written=chunk_bytes,
                               total_bytes_written=total).pack(0)
    return Response(IoctlResponse(ctl_code=req.ctl_code, file_id=req.file_id, input=b"", output=out, flags=0),
                    status=status)


def _copychunk(ctx: RequestContext, req: IoctlRequest, dst: Open) -> Response:
    """MS-SMB2 3.3.5.15.6 FSCTL_SRV_COPYCHUNK / FSCTL_SRV_COPYCHUNK_WRITE: copy ranges of the
    open named by SourceKey into *dst* (the IOCTL's FileId).  A copy that stops on an error
    still answers a SRV_COPYCHUNK_RESPONSE (what was written) with that error's status."""
    data = bytes(req.input)
    src: Any = None
    if len(data) >= RESUME_KEY_SIZE:
        src = _source_open(ctx, data[:RESUME_KEY_SIZE])
        if src is None:
            raise fail(STATUS_OBJECT_NAME_NOT_FOUND, "no open with this resume key")
    if req.max_output_response < SrvCopychunkResponse.FIXED_SIZE:
        raise fail(STATUS_INVALID_PARAMETER, "output buffer smaller than SRV_COPYCHUNK_RESPONSE")
    chunks = None
    if len(data) >= SrvCopychunkCopy.FIXED_SIZE:
        head = SrvCopychunkCopy.unpack(data, 0)
        if head.chunk_count <= SERVER_SIDE_COPY_MAX_NUMBER_OF_CHUNKS:
            chunks = unpack_chunks(data, head.chunk_count)
    if chunks is None or any(not 0 < c.length <= SERVER_SIDE_COPY_MAX_CHUNK_SIZE for c in chunks) \
            or sum(c.length for c in chunks) > SERVER_SIDE_COPY_MAX_DATA_SIZE:
        # 3.3.5.15.6.2: the limits, with STATUS_INVALID_PARAMETER
        return _copychunk_response(req, SERVER_SIDE_COPY_MAX_NUMBER_OF_CHUNKS, SERVER_SIDE_COPY_MAX_CHUNK_SIZE,
                                   SERVER_SIDE_COPY_MAX_DATA_SIZE, STATUS_INVALID_PARAMETER)
    if isinstance(src, _PipeOpen):
        raise fail(STATUS_INVALID_DEVICE_REQUEST, "copy chunk from a pipe")
    if src.session is not ctx.session:
        # our choice: a key is honoured only in the session that asked for it
        raise fail(STATUS_ACCESS_DENIED, "resume key of another session")
    if not src.granted_access & (FILE_READ_DATA | FILE_EXECUTE):
        raise fail(STATUS_ACCESS_DENIED, "source open without FILE_READ_DATA")
    if not dst.granted_access & FILE_WRITE_DATA:
        raise fail(STATUS_ACCESS_DENIED, "target open without FILE_WRITE_DATA")
    if req.ctl_code == FSCTL_SRV_COPYCHUNK and not dst.granted_access & FILE_READ_DATA:
        raise fail(STATUS_ACCESS_DENIED, "FSCTL_SRV_COPYCHUNK: target open without FILE_READ_DATA")
    written, total, err = state_of(ctx.server).store.copy_chunks(
        src, dst, [(c.source_offset, c.target_offset, c.length) for c in chunks])
    if err is not None:
        log.debug("event=copychunk_stopped chunks_written=%d status=%s", written, ntstatus.status_name(err.status))
        return _copychunk_response(req, written, 0, total, err.status)
    return _copychunk_response(req, written, 0, total)
