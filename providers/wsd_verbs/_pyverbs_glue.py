"""What pyverbs 44 does not expose, read from the C structures beneath it.

pyverbs (Debian's python3-pyverbs 44) wraps ``rdma_cm_event``, ``rdma_cm_id``,
``rdma_event_channel`` and ``ibv_comp_channel`` but gives Python neither the
channels' file descriptors nor an event's ``id`` / ``listen_id`` / ``status``
nor a connection's addresses.  A provider that serves many connections on one
CM event channel needs all of them, so this module reads them:

* the C pointer that each of those Cython objects holds as its first own field
  (after ``PyObject_HEAD``, ``__weakref__``, ``logger`` and the vtable pointer
  of ``PyverbsObject``/``PyverbsCM``).  :func:`calibrate` finds that offset
  once, by checking it against a fresh ``CMEventChannel`` (its
  ``rdma_event_channel`` starts with the fd, which must be the new
  ``/dev/infiniband/rdma_cm`` descriptor of this process) and a fresh
  ``CompChannel`` (``ibv_comp_channel.fd`` must be the new
  ``anon_inode:[infinibandevent]`` descriptor).  If either check fails the
  provider reports itself unavailable instead of guessing.
* fields of the librdmacm structures at their ABI offsets (``<rdma/rdma_cma.h>``,
  x86-64): ``rdma_cm_event`` = {id, listen_id, event, status, ...};
  ``rdma_cm_id`` = {verbs, channel, context, qp, route{addr{src sockaddr_storage,
  dst sockaddr_storage}, ...}, ...}.

Buffer addresses (for registering the switch's own memory with
``ibv_reg_mr`` and for every work request's scatter/gather entry) come from the
buffer protocol: through ``_cffi_backend``'s ``from_buffer`` when it is there
(≈ 3.5 µs per call in the TCG guest), else through ``ctypes.pythonapi``
(≈ 13 µs there).
"""
from __future__ import annotations

import ctypes
import os
import socket
import struct
import threading

__all__ = ["calibrate", "ptr_of", "event_fields", "cm_id_addrs", "comp_channel_fd", "event_channel_fd",
           "buffer_address", "LayoutError", "FD_CREATE_LOCK"]

_SIZE_PTR = ctypes.sizeof(ctypes.c_void_p)
_offset: int | None = None
# Channel constructors open one fd each; nothing else in this process opens rdma_cm/infinibandevent
# descriptors concurrently as long as every creation goes through this lock.
FD_CREATE_LOCK = threading.Lock()

# rdma_cm_event (x86-64): id @0, listen_id @8, event @16 (enum, int), status @20 (int)
_EV_ID, _EV_LISTEN, _EV_TYPE, _EV_STATUS = 0, 8, 16, 20
# rdma_cm_id: verbs @0, channel @8, context @16, qp @24, route.addr.src @32, route.addr.dst @160
_ID_CHANNEL, _ID_SRC, _ID_DST = 8, 32, 160


class LayoutError(RuntimeError):
    """pyverbs' objects are not laid out as this module expects."""


def _word(addr: int) -> int:
    return ctypes.c_void_p.from_address(addr).value or 0


def _int(addr: int) -> int:
    return ctypes.c_int.from_address(addr).value


def _fds(match: str) -> set[int]:
    out = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            if match in os.readlink(f"/proc/self/fd/{name}"):
                out.add(int(name))
        except OSError:
            pass
    return out


def _candidate_offsets(obj) -> list[int]:
    size = type(obj).__basicsize__
    return list(range(2 * _SIZE_PTR, size - _SIZE_PTR + 1, _SIZE_PTR))


def calibrate(ctx) -> int:
    """Find (once) the offset of the C pointer in pyverbs' wrapper objects; raises LayoutError."""
    global _offset
    if _offset is not None:
        return _offset
    from pyverbs.cmid import CMEventChannel
    from pyverbs.cq import CompChannel

    with FD_CREATE_LOCK:
        before = _fds("rdma_cm")
        ch = CMEventChannel()
        new_cm = _fds("rdma_cm") - before
        before = _fds("infinibandevent")
        cc = CompChannel(ctx)
        new_cc = _fds("infinibandevent") - before
    try:
        if len(new_cm) != 1 or len(new_cc) != 1:
            raise LayoutError(f"cannot identify the channel descriptors (rdma_cm {sorted(new_cm)}, "
                              f"comp {sorted(new_cc)})")
        (cm_fd,), (cc_fd,) = new_cm, new_cc
        referents = {id(o) for o in __import__("gc").get_referents(ch)}
        found = None
        for off in _candidate_offsets(ch):
            p = _word(id(ch) + off)
            if not p or p in referents or p == id(type(ch)):
                continue
            if p < 4096:
                continue
            if _int(p) == cm_fd and _int(_word(id(cc) + off) + _SIZE_PTR) == cc_fd:
                found = off
                break
        if found is None:
            raise LayoutError("pyverbs object layout not recognised (channel fds not found)")
        _offset = found
        return found
    finally:
        cc.close()
        ch.close()


def ptr_of(obj) -> int:
    """The C pointer held by a pyverbs CMEvent / CMID / CMEventChannel / CompChannel."""
    if _offset is None:
        raise LayoutError("calibrate() first")
    return _word(id(obj) + _offset)


def event_channel_fd(ch) -> int:
    return _int(ptr_of(ch))


def comp_channel_fd(cc) -> int:
    return _int(ptr_of(cc) + _SIZE_PTR)


def event_fields(ev) -> tuple[int, int, int, int]:
    """(id pointer, listen_id pointer, event type, status) of a CMEvent (checked against pyverbs)."""
    p = ptr_of(ev)
    if not p:
        raise LayoutError("CMEvent has no event")
    etype = _int(p + _EV_TYPE)
    if etype != ev.event_type:
        raise LayoutError(f"CMEvent layout mismatch (type {etype} != {ev.event_type})")
    return _word(p + _EV_ID), _word(p + _EV_LISTEN), etype, _int(p + _EV_STATUS)


def _sockaddr(addr: int) -> tuple[str, int] | None:
    family = ctypes.c_ushort.from_address(addr).value
    if family == socket.AF_INET:
        raw = ctypes.string_at(addr, 8)
        port = struct.unpack_from(">H", raw, 2)[0]
        return socket.inet_ntop(socket.AF_INET, raw[4:8]), port
    if family == socket.AF_INET6:
        raw = ctypes.string_at(addr, 24)
        port = struct.unpack_from(">H", raw, 2)[0]
        return socket.inet_ntop(socket.AF_INET6, raw[8:24]), port
    return None


def cm_id_addrs(id_ptr: int) -> tuple[tuple[str, int] | None, tuple[str, int] | None]:
    """(source, destination) addresses of an rdma_cm_id."""
    if not id_ptr:
        return None, None
    return _sockaddr(id_ptr + _ID_SRC), _sockaddr(id_ptr + _ID_DST)


class _PyBuffer(ctypes.Structure):
    _fields_ = [("buf", ctypes.c_void_p), ("obj", ctypes.c_void_p), ("len", ctypes.c_ssize_t),
                ("itemsize", ctypes.c_ssize_t), ("readonly", ctypes.c_int), ("ndim", ctypes.c_int),
                ("format", ctypes.c_char_p), ("shape", ctypes.c_void_p), ("strides", ctypes.c_void_p),
                ("suboffsets", ctypes.c_void_p), ("internal", ctypes.c_void_p)]


_get_buffer = ctypes.pythonapi.PyObject_GetBuffer
_get_buffer.argtypes = [ctypes.py_object, ctypes.POINTER(_PyBuffer), ctypes.c_int]
_get_buffer.restype = ctypes.c_int
_release_buffer = ctypes.pythonapi.PyBuffer_Release
_release_buffer.argtypes = [ctypes.POINTER(_PyBuffer)]
_release_buffer.restype = None


try:
    import _cffi_backend
except ImportError:                 # pragma: no cover - cffi is a dependency of wsd_ring
    _cffi_backend = None
if _cffi_backend is not None:
    _ffi = _cffi_backend.FFI()
    _from_buffer = _ffi.from_buffer
    _cast = _ffi.cast
    _UINTPTR = _ffi.typeof("uintptr_t")


def buffer_address(obj) -> tuple[int, int, bool]:
    """(address, length, writable) of a C-contiguous buffer (the caller keeps ``obj`` alive)."""
    if _cffi_backend is not None:
        t = type(obj)
        if t is memoryview:
            if obj.c_contiguous:
                cd = _from_buffer(obj)
                return int(_cast(_UINTPTR, cd)), len(cd), not obj.readonly
        elif t is bytearray:
            cd = _from_buffer(obj)
            return int(_cast(_UINTPTR, cd)), len(cd), True
        elif t is bytes:
            cd = _from_buffer(obj)
            return int(_cast(_UINTPTR, cd)), len(cd), False
    return _buffer_address_ctypes(obj)


def _buffer_address_ctypes(obj) -> tuple[int, int, bool]:
    b = _PyBuffer()
    _get_buffer(obj, ctypes.byref(b), 0)       # PyBUF_SIMPLE: contiguous bytes; raises BufferError
    try:
        return b.buf or 0, b.len, not b.readonly
    finally:
        _release_buffer(ctypes.byref(b))


# ---------------------------------------------------------------------------------------------- CQ polling
# pyverbs' CQ.poll() builds one WC object per completion (each PyverbsObject asks logging for a logger):
# ≈ 12 µs per completion in the TCG guest.  The provider's poll_cq is called here instead, through the
# ibv_context_ops table (what the static inline ibv_poll_cq() does), into a reused array of ibv_wc.
# ibv_context = {device *, ops {..., [11] poll_cq, [12] req_notify_cq, ...}, ...}  (<infiniband/verbs.h>,
# whose compat slots keep the table's layout fixed); ibv_cq = {context *, channel *, cq_context *,
# handle u32, cqe int, ...}; ibv_wc = {wr_id u64, status, opcode, vendor_err, byte_len, ...} (48 bytes).
_CTX_OPS = _SIZE_PTR
_OPS_POLL_CQ, _OPS_REQ_NOTIFY_CQ = 11, 12
_CQ_HANDLE, _CQ_CQE = 3 * _SIZE_PTR, 3 * _SIZE_PTR + 4
WC_SIZE = 48
WC = struct.Struct("<QIIII24x")          # wr_id, status, opcode, vendor_err, byte_len


class _DlInfo(ctypes.Structure):
    _fields_ = [("fname", ctypes.c_char_p), ("fbase", ctypes.c_void_p), ("sname", ctypes.c_char_p),
                ("saddr", ctypes.c_void_p)]


def _shared_object_of(addr: int) -> str | None:
    info = _DlInfo()
    try:
        dladdr = ctypes.CDLL(None).dladdr
    except (OSError, AttributeError):
        return None
    if not dladdr(ctypes.c_void_p(addr), ctypes.byref(info)) or not info.fname:
        return None
    return os.fsdecode(info.fname)


def cq_poller(cq, ctx, cc, batch: int = 64):
    """A function returning the completions of ``cq`` as (wr_id, status, opcode, vendor_err, byte_len)
    tuples (at most ``batch`` per call), calling the provider's poll_cq directly; raises LayoutError
    when the structures are not what this module expects (the caller then uses pyverbs' CQ.poll)."""
    if _cffi_backend is None:
        raise LayoutError("_cffi_backend not importable")
    p = ptr_of(cq)
    if not p or p % _SIZE_PTR:
        raise LayoutError("CQ pointer not found")
    # pyverbs prints the CQ's handle and size: they must be where ibv_cq keeps them
    text = str(cq).split()
    try:
        handle, cqe = int(text[text.index("Handle") + 2]), int(text[text.index("CQEs") + 2])
    except (ValueError, IndexError):
        raise LayoutError("CQ description not recognised") from None
    if ctypes.c_uint32.from_address(p + _CQ_HANDLE).value != handle or _int(p + _CQ_CQE) != cqe:
        raise LayoutError("ibv_cq layout not recognised (handle/cqe)")
    ctx_p = ptr_of(ctx)
    if _word(p) != ctx_p or _word(p + _SIZE_PTR) != ptr_of(cc):
        raise LayoutError("ibv_cq layout not recognised (context/channel)")
    fn = _word(ctx_p + _CTX_OPS + _OPS_POLL_CQ * _SIZE_PTR)
    notify = _word(ctx_p + _CTX_OPS + _OPS_REQ_NOTIFY_CQ * _SIZE_PTR)
    for what, addr in (("poll_cq", fn), ("req_notify_cq", notify)):
        so = _shared_object_of(addr) if addr else None
        if so is None or not ("rdmav" in so or "libibverbs" in so):
            raise LayoutError(f"ibv_context_ops.{what} does not point into an rdma-core library ({so})")
    call = _ffi.cast("int(*)(void *, int, void *)", fn)
    cq_arg = _ffi.cast("void *", p)
    buf = _ffi.new("char[]", WC_SIZE * batch)
    if call(cq_arg, 0, buf) != 0:
        raise LayoutError("poll_cq of 0 entries did not return 0")
    iter_unpack = WC.iter_unpack
    buffer = _ffi.buffer

    def poll() -> list:
        n = call(cq_arg, batch, buf)
        if n <= 0:
            if n < 0:
                raise OSError(-n, "ibv_poll_cq failed")
            return []
        return list(iter_unpack(buffer(buf, n * WC_SIZE)[:]))

    poll.keep = (cq, buf)     # the CQ object must outlive the function (the provider keeps both)
    return poll


# ---------------------------------------------------------------------------------------- work requests
# pyverbs' SendWR / RecvWR embed the C ibv_send_wr / ibv_recv_wr and copy the scatter/gather entries
# into their own array at construction; changing a buffer means a new SGE and a new WR object (≈ 30 µs in
# the TCG guest, and a logger look-up each).  One template of each is written here directly instead:
# ibv_recv_wr = {wr_id u64, next *, sg_list *, num_sge int}; ibv_send_wr = {wr_id u64, next *, sg_list *,
# num_sge int, opcode int, send_flags uint, imm_data u32, wr.rdma {remote_addr u64, rkey u32}, ...};
# ibv_sge = {addr u64, length u32, lkey u32}.  ibv_post_send/recv copy the request into the queue, so a
# template is reusable as soon as the call returns.
SGE_LAYOUT = struct.Struct("<QII")
RECV_LAYOUT = struct.Struct("<QQQi")
SEND_LAYOUT = struct.Struct("<QQQiiI4xQI")
_MAGIC_WR_ID = 0x5753_4476_7772_0001
_MAGIC_SGE = (0xA1A2_A3A4_A5A6, 0x5EED, 0x77)


class WrTemplate:
    """A pyverbs work request (``wr``) plus writable views of its C request (``hdr``) and of its one
    scatter/gather entry (``sge``, at address ``sge_ptr``).  Keep the object: the views point into it."""

    __slots__ = ("wr", "hdr", "sge", "sge_ptr")

    def __init__(self, wr, hdr, sge, sge_ptr):
        self.wr, self.hdr, self.sge, self.sge_ptr = wr, hdr, sge, sge_ptr


def _find_u64(obj, value: int, room: int) -> int:
    base = id(obj)
    size = type(obj).__basicsize__
    for off in range(2 * _SIZE_PTR, size - room + 1, _SIZE_PTR):
        if ctypes.c_uint64.from_address(base + off).value == value:
            return off
    raise LayoutError(f"{type(obj).__name__}: embedded work request not found")


def _template(wr, layout: struct.Struct, expect: dict) -> WrTemplate:
    off = _find_u64(wr, _MAGIC_WR_ID, layout.size)
    base = id(wr) + off
    fields = layout.unpack(ctypes.string_at(base, layout.size))
    next_ptr, sge_ptr = fields[1], fields[2]
    if next_ptr != 0 or not sge_ptr or fields[3] != 1:
        raise LayoutError(f"{type(wr).__name__}: next/sg_list/num_sge not where expected")
    for idx, want in expect.items():
        if fields[idx] != want:
            raise LayoutError(f"{type(wr).__name__}: field {idx} is {fields[idx]}, expected {want}")
    if SGE_LAYOUT.unpack(ctypes.string_at(sge_ptr, SGE_LAYOUT.size)) != _MAGIC_SGE:
        raise LayoutError(f"{type(wr).__name__}: scatter/gather entry not recognised")
    hdr = (ctypes.c_char * layout.size).from_address(base)
    sge = (ctypes.c_char * SGE_LAYOUT.size).from_address(sge_ptr)
    # both ways: what pyverbs sets shows in the memory, what is written shows in pyverbs
    wr.wr_id = 12345
    if ctypes.c_uint64.from_address(base).value != 12345:
        raise LayoutError(f"{type(wr).__name__}: wr_id does not follow pyverbs")
    struct.pack_into("<Q", hdr, 0, 67890)
    if wr.wr_id != 67890:
        raise LayoutError(f"{type(wr).__name__}: pyverbs does not read the written wr_id")
    return WrTemplate(wr, hdr, sge, sge_ptr)


def send_template(SendWR, SGE, opcode: int, flags: int) -> WrTemplate:
    """A SendWR whose request (SEND_LAYOUT) and scatter/gather entry (SGE_LAYOUT) are written directly."""
    wr = SendWR(wr_id=_MAGIC_WR_ID, opcode=opcode, num_sge=1, sg=[SGE(*_MAGIC_SGE)], send_flags=flags)
    return _template(wr, SEND_LAYOUT, {4: opcode, 5: flags})


def recv_template(RecvWR, SGE) -> WrTemplate:
    """A RecvWR whose request (RECV_LAYOUT) and scatter/gather entry (SGE_LAYOUT) are written directly."""
    wr = RecvWR(wr_id=_MAGIC_WR_ID, num_sge=1, sg=[SGE(*_MAGIC_SGE)])
    return _template(wr, RECV_LAYOUT, {})
