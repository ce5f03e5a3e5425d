"""The shm provider's POSIX shared-memory segments: registered-memory regions of our own
(``/dev/shm/wsd-shm-<pid>-...``), mappings of a peer's regions, and the sweep of segments
whose process died (docs/shm.md)."""
from __future__ import annotations

import logging
import mmap
import os
import re

from wsd import errors

from .wire import RegionHeader

log = logging.getLogger("wsd.shm")

SHM_DIR = "/dev/shm"
PREFIX = "wsd-shm-"
_SEG_RE = re.compile(r"^wsd-shm-(\d+)-")
_NAME_RE = re.compile(r"^wsd-shm-\d+-[0-9a-f]{8}-[a-z0-9-]+$")
REGION_HDR = RegionHeader.SIZE


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return False
    state = stat[stat.rfind(b")") + 2: stat.rfind(b")") + 3]
    return state not in (b"Z", b"X", b"x")


def segments_of(pid: int | None = None) -> list[str]:
    """Names in /dev/shm made by this provider (by process ``pid``, or by anyone)."""
    try:
        names = os.listdir(SHM_DIR)
    except FileNotFoundError:
        return []
    out = []
    for n in names:
        m = _SEG_RE.match(n)
        if m and (pid is None or int(m.group(1)) == pid):
            out.append(n)
    return sorted(out)


def sweep_dead_segments(pid: int | None = None) -> list[str]:
    """Unlink segments whose creating process is dead (all such, or only ``pid``'s); returns the names."""
    gone = []
    alive: dict[int, bool] = {}
    for n in segments_of(pid):
        p = int(_SEG_RE.match(n).group(1))
        if p not in alive:
            alive[p] = _pid_alive(p)
        if not alive[p]:
            try:
                os.unlink(os.path.join(SHM_DIR, n))
                gone.append(n)
            except FileNotFoundError:
                pass
    if gone:
        log.info("shm: unlinked %d segment(s) of dead process(es): %s", len(gone), ", ".join(gone[:8]))
    return gone


class _Segment:
    """One registered-memory segment of ours: /dev/shm/<name>, header + data area."""

    __slots__ = ("name", "mm", "mv", "capacity", "data")

    def __init__(self, name: str, capacity: int):
        path = os.path.join(SHM_DIR, name)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.ftruncate(fd, REGION_HDR + capacity)
            self.mm = mmap.mmap(fd, REGION_HDR + capacity)
        except OSError:
            os.unlink(path)
            raise
        finally:
            os.close(fd)
        self.name = name
        self.capacity = capacity
        self.mv = memoryview(self.mm)
        self.data = self.mv[REGION_HDR:]

    def destroy(self) -> None:
        try:
            os.unlink(os.path.join(SHM_DIR, self.name))
        except FileNotFoundError:
            pass
        self.data.release()
        self.mv.release()
        self.mm.close()


class _PeerMap:
    __slots__ = ("mm", "mv")

    def __init__(self, name: str):
        fd = os.open(os.path.join(SHM_DIR, name), os.O_RDWR | os.O_CLOEXEC)
        try:
            size = os.fstat(fd).st_size
            if size < REGION_HDR:
                raise errors.WSAEACCES(f"segment {name} is too small")
            self.mm = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        self.mv = memoryview(self.mm)

    def close(self) -> None:
        self.mv.release()
        self.mm.close()
