"""Registered memory and RDMA of the shm provider (docs/shm.md "Registered memory"):
regions copied into pooled shm segments, descriptors naming the segment and a key, RDMA
READ/WRITE as checked copies between mapped segments and local buffers."""
from __future__ import annotations

import logging
import os
import secrets

from wsd import errors
from wsd.spi import MEM_READ, MEM_WRITE

from .segments import PREFIX, REGION_HDR, _NAME_RE, _PeerMap, _Segment
from .sockets import _Conn
from .wire import NAME_LEN, MalformedStructure, RdmaDescriptor, RegionHeader, padded, text

log = logging.getLogger("wsd.shm")

_PEER_MAPS = 32                  # peer regions kept mapped per connection
_MIN_REGION = 64 * 1024


class MemoryMixin:
    """ShmProvider's memory registration and RDMA (mixed into :class:`wsd_shm.ShmProvider`)."""

    # ------------------------------------------------------------------ memory
    def WSPRegisterMemory(self, s, buffer, flags=3):
        h = next(self._local_ids)
        self._local_mem[h] = buffer
        return h

    def WSPDeregisterMemory(self, s, handle) -> None:
        if self._local_mem.pop(handle, None) is None:
            raise errors.WSAEINVAL("unknown memory handle")

    def _segment(self, n: int) -> _Segment:
        cap = max(_MIN_REGION, 1 << (n - 1).bit_length())
        free = self._pool.get(cap)
        if free:
            self._pool_total -= cap
            self.stats["region_reused"] += 1
            return free.pop()
        self.stats["region_created"] += 1
        return _Segment(f"{PREFIX}{os.getpid()}-{self.nic}-r{next(self._seg_ids)}", cap)

    def _unpool(self, seg: _Segment) -> None:
        if self._pool_total + seg.capacity <= self.pool_bytes:
            self._pool.setdefault(seg.capacity, []).append(seg)
            self._pool_total += seg.capacity
        else:
            seg.destroy()

    def WSPRegisterRdmaMemory(self, s, buffer, flags=MEM_READ) -> bytes:
        view = memoryview(buffer).cast("B")
        n = len(view)
        limit = self.faults.get("max_registered_bytes")
        with self._lock:
            if limit is not None and self._registered_bytes + n > limit:
                raise errors.WSAENOBUFS(f"cannot register {n} bytes (limit {limit})")
            try:
                seg = self._segment(n)
            except OSError as e:
                raise errors.WSAENOBUFS(f"cannot create a shm region of {n} bytes: {e}") from None
            key = secrets.randbits(64) | 1
            RegionHeader(access=flags & 3, key=0, length=n, capacity=seg.capacity,
                         owner_pid=os.getpid()).pack_into(seg.mv, 0)
            if flags & MEM_READ:
                seg.data[:n] = view          # the registration copy (docs/shm.md)
            RegionHeader(access=flags & 3, key=key, length=n, capacity=seg.capacity,
                         owner_pid=os.getpid()).pack_into(seg.mv, 0)
            self._regions[key] = (seg, view, flags & 3, n)
            self._registered_bytes += n
        return RdmaDescriptor(access=flags & 3, key=key, length=n, segment=padded(seg.name, NAME_LEN)).pack()

    def WSPDeregisterRdmaMemory(self, s, descriptor: bytes) -> None:
        try:
            d = RdmaDescriptor.unpack(descriptor)
        except MalformedStructure:
            raise errors.WSAEINVAL("not an shm RDMA descriptor") from None
        with self._lock:
            ent = self._regions.pop(d.key, None)
            if ent is None:
                raise errors.WSAEINVAL("unknown RDMA descriptor")
            seg, view, flags, n = ent
            seg.mv[8:16] = b"\0" * 8                 # RegionHeader.key = 0: no more remote access
            if flags & MEM_WRITE:
                view[:n] = seg.data[:n]              # what the peer wrote goes back to the caller's buffer
            self._registered_bytes -= n
            self._unpool(seg)

    def _remote(self, c: _Conn, remote: bytes, need: int, offset: int, access: int) -> memoryview:
        """The peer's registered bytes [offset, offset + need) after every check, or WSAEACCES."""
        try:
            d = RdmaDescriptor.unpack(remote)
            name = text(d.segment)
        except MalformedStructure as e:
            raise errors.WSAEINVAL(f"bad RDMA descriptor: {e}") from None
        if len(remote) != RdmaDescriptor.SIZE or not _NAME_RE.match(name) \
                or not name.startswith(f"{PREFIX}{c.peer_pid}-"):
            raise errors.WSAEACCES(f"descriptor names {name!r}, not a region of the peer")
        pm = c.peer_maps.get(name)
        if pm is None:
            try:
                pm = _PeerMap(name)
            except OSError as e:
                raise errors.WSAEACCES(f"cannot map the peer's region {name}: {e}") from None
            c.peer_maps[name] = pm
            if len(c.peer_maps) > _PEER_MAPS:
                c.peer_maps.popitem(last=False)[1].close()
        else:
            c.peer_maps.move_to_end(name)
        try:
            h = RegionHeader.unpack(pm.mv)
        except MalformedStructure as e:
            raise errors.WSAEACCES(f"peer region {name}: {e}") from None
        if h.key != d.key or not h.key or not h.access & access or not d.access & access:
            raise errors.WSAEACCES("region not registered (any more) or without that access")
        if offset < 0 or offset + need > h.length or REGION_HDR + h.length > len(pm.mv):
            raise errors.WSAEACCES(f"{need} bytes at {offset} outside the {h.length} registered bytes")
        return pm.mv[REGION_HDR + offset: REGION_HDR + offset + need]

    def _rdma(self, s, local, remote, offset, overlapped, write: bool) -> None:
        c = self._get(s)
        with self._lock:
            if c.state != "connected":
                raise errors.WSAENOTCONN()
            if c.peer_gone:
                raise errors.WSAECONNRESET("peer closed or died")
            bufs = [memoryview(b).cast("B") for b in local]
            total = sum(len(b) for b in bufs)
            try:
                area = self._remote(c, remote, total, offset, MEM_WRITE if write else MEM_READ)
            except errors.WSAEACCES as e:
                log.info("shm: RDMA %s refused: %s", "write" if write else "read", e)
                overlapped.cq.post(overlapped, e.wsa_code, 0)
                return
            pos = 0
            for b in bufs:
                if write:
                    area[pos:pos + len(b)] = b
                else:
                    b[:] = area[pos:pos + len(b)]
                pos += len(b)
            area.release()
            self.stats["rdma_write" if write else "rdma_read"] += 1
            overlapped.cq.post(overlapped, 0, total)

    def WSPRdmaRead(self, s, local, remote, offset, overlapped) -> None:
        self._rdma(s, local, remote, offset, overlapped, write=False)

    def WSPRdmaWrite(self, s, local, remote, offset, overlapped) -> None:
        self._rdma(s, local, remote, offset, overlapped, write=True)
