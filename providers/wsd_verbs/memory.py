"""Memory registration of the verbs provider (docs/verbs.md): MRs for WSPRegisterMemory and
the RDMA regions whose descriptors go to the peer, found again by address for work
requests."""
from __future__ import annotations

import bisect
import logging

from wsd import errors
from wsd.spi import MEM_READ, MEM_WRITE

from .pv import PV
from .sockets import DESCRIPTOR, _MAGIC

log = logging.getLogger("wsd.verbs")


class MemoryMixin:
    """VerbsProvider's memory registration (mixed into :class:`wsd_verbs.VerbsProvider`)."""

    # ------------------------------------------------------------------ memory
    def _find_mr(self, addr: int, n: int):
        start, end, mr = self._mem_last
        if start <= addr and addr + n <= end:
            return mr
        idx = self._mem_index
        i = bisect.bisect_right(idx, (addr, float("inf"))) - 1
        if i >= 0:
            ent = idx[i]
            if ent[0] <= addr and addr + n <= ent[1]:
                self._mem_last = ent
                return ent[2]
        for ent in idx:                     # regions that overlap (a buffer registered twice, nested views)
            if ent[0] <= addr and addr + n <= ent[1]:
                self._mem_last = ent
                return ent[2]
        return None

    def _reindex_mem(self) -> None:
        self._mem_index = sorted(((start, end, mr) for start, end, mr, _obj in self._mem.values()
                                  if mr is not None), key=lambda t: (t[0], t[1]))
        self._mem_last = (0, 0, None)

    def _register(self, addr: int, n: int, access: int):
        MR = PV.MR
        PyverbsError = PV.PyverbsError
        if self.max_registered_bytes is not None and self._registered_bytes + n > self.max_registered_bytes:
            raise errors.WSAENOBUFS(f"cannot register {n} bytes (max_registered_bytes "
                                    f"{self.max_registered_bytes})")
        try:
            mr = MR(self._pd, n, access, address=addr)
        except PyverbsError as e:
            raise errors.WSAENOBUFS(f"ibv_reg_mr of {n} bytes failed: {e}") from None
        self._registered_bytes += n
        self.stats["registrations"] += 1
        return mr

    def _unregister(self, mr, n: int) -> None:
        mr.close()
        self._registered_bytes -= n

    def _addr(self, buffer) -> tuple[int, int, bool]:
        try:
            return self._glue.buffer_address(buffer)
        except (BufferError, TypeError) as e:
            raise errors.WSAEFAULT(f"not a contiguous buffer: {e}") from None

    def WSPRegisterMemory(self, s, buffer, flags=3):
        addr, n, writable = self._addr(buffer)
        e = self._e
        access = e.IBV_ACCESS_LOCAL_WRITE if writable else 0
        with self._lock:
            mr = self._register(addr, n, access) if n else None
            h = next(self._mem_ids)
            self._mem[h] = (addr, addr + n, mr, buffer)
            self._reindex_mem()
        return h

    def WSPDeregisterMemory(self, s, handle) -> None:
        with self._lock:
            ent = self._mem.pop(handle, None)
            if ent is None:
                raise errors.WSAEINVAL("unknown memory handle")
            self._reindex_mem()
            if ent[2] is not None:
                self._unregister(ent[2], ent[1] - ent[0])

    def WSPRegisterRdmaMemory(self, s, buffer, flags=MEM_READ) -> bytes:
        addr, n, writable = self._addr(buffer)
        e = self._e
        access = 0
        if flags & MEM_READ:
            access |= e.IBV_ACCESS_REMOTE_READ
        if flags & MEM_WRITE:
            if not writable:
                raise errors.WSAEFAULT("a read-only buffer cannot be registered for RDMA write")
            access |= e.IBV_ACCESS_REMOTE_WRITE | e.IBV_ACCESS_LOCAL_WRITE
        elif writable:
            access |= e.IBV_ACCESS_LOCAL_WRITE
        if n == 0:
            raise errors.WSAEINVAL("cannot register an empty buffer")
        with self._lock:
            mr = self._register(addr, n, access)
            self._rdma[(addr, mr.rkey)] = (mr, buffer, n)
            self.stats["rdma_register_write" if flags & MEM_WRITE else "rdma_register_read"] += 1
        return DESCRIPTOR.pack(_MAGIC, addr, n, mr.rkey, flags)

    def WSPDeregisterRdmaMemory(self, s, descriptor: bytes) -> None:
        magic, addr, n, rkey, flags = self._parse(descriptor)
        with self._lock:
            ent = self._rdma.pop((addr, rkey), None)
            if ent is None:
                raise errors.WSAEINVAL("unknown RDMA descriptor")
            self._unregister(ent[0], ent[2])

    @staticmethod
    def _parse(descriptor: bytes):
        if len(descriptor) != DESCRIPTOR.size:
            raise errors.WSAEINVAL(f"bad RDMA descriptor ({len(descriptor)} bytes)")
        d = DESCRIPTOR.unpack(descriptor)
        if d[0] != _MAGIC:
            raise errors.WSAEINVAL("not a verbs RDMA descriptor")
        return d
