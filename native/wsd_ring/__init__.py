"""Python face of the native single-producer/single-consumer ring.

A :class:`Ring` is a power-of-two byte area plus a 256-byte header, in
anonymous shared memory (``Ring.create(cap)``, shared with children across
``fork``) or in a POSIX shm segment ``/dev/shm/<name>`` that another process
opens with ``Ring.attach(name)``. Messages are variable-size records; all the
index arithmetic and memory ordering lives in C (``native/ring.c``), and the
views this module hands out are zero-copy slices of the mapping.

One process (one handle) is the producer, one the consumer. A handle takes a
role the first time it uses an operation of that role; a second live process
trying to take a held role gets :class:`RingBusy`. In one process a single
handle may play both roles (for tests and in-process queues).

Producer::

    view = ring.reserve(65536)          # writable memoryview, or None if full
    n = sock.recv_into(view)            # receive straight into the ring
    if n: ring.commit(n)                # publish the first n bytes as a message
    else: ring.cancel()

    ring.push(b"payload")               # copy one message in (False if full)
    ring.push_batch([b"a", b"bc", ...]) # one C call for the lot; returns count

Consumer::

    views = ring.peek(64)               # read-only memoryviews, oldest first
    ...                                 # valid until release()
    ring.release(len(views))
    ring.pop()                          # one message as bytes, or None
    lens = ring.pop_batch_into(buf)     # copy many back to back into buf

Waiting: ``wait_readable(timeout)`` / ``wait_writable(timeout)`` spin a
bounded number of checks in C, then sleep on an eventfd. The sleeper raises a
``waiting`` flag in the shared header before its final check, the other side
writes the eventfd only when it sees that flag after publishing (the protocol
and its ordering are in docs/ring.md). Both sides must use the same two
eventfds: inherited across ``fork``, passed to a child with
``subprocess.Popen(pass_fds=...)`` or over a unix socket with
:meth:`Ring.send_eventfds` / :func:`recv_eventfds`, and adopted with
``Ring.attach(name, eventfds=(readable_fd, writable_fd))`` or
:meth:`Ring.adopt_eventfds`. Without them the waits poll with a short backoff.

For selectors/asyncio: ``arm_readable()`` then wait on ``readable_fd``, then
``ack_readable()`` (see :meth:`Ring.wait_readable_async`).
"""

from __future__ import annotations

import asyncio
import errno
import mmap
import os
import select
import socket
import time
import weakref
from array import array
from typing import Iterable, Sequence

from ._ring import ffi, lib

__all__ = [
    "Ring",
    "RingError",
    "RingBusy",
    "RingCorrupt",
    "RingFormatError",
    "RingClosed",
    "MessageTooLarge",
    "recv_eventfds",
    "HDR_SIZE",
    "REC_HDR",
    "PAD_LEN",
    "FILL_LEN",
    "record_size",
    "MAGIC",
    "VERSION",
]

HDR_SIZE: int = lib.WSD_RING_HDR_SIZE
REC_HDR: int = lib.WSD_RING_REC_HDR
PAD_LEN: int = lib.WSD_RING_PAD_LEN
FILL_LEN: int = lib.WSD_RING_FILL_LEN
MAGIC: int = lib.WSD_RING_MAGIC
VERSION: int = lib.WSD_RING_VERSION



def record_size(n: int) -> int:
    """Ring bytes a message of n payload bytes occupies (header + payload padded to 8)."""
    return REC_HDR + ((n + 7) & ~7)


SHM_DIR = "/dev/shm"
_SCRATCH = 1024  # max messages per peek / pop_batch_into call
_SMALL = 2048  # pop() copies messages up to this size through one C call
_IOV_MIN = 4096  # push_batch: average size from which buffers go by pointer
_SLICE = 0.05  # longest single sleep: bounds dead-peer detection latency
_EAGAIN = -errno.EAGAIN


# ---------------------------------------------------------------- errors


class RingError(OSError):
    """A ring operation failed; ``errno`` carries the C code."""


class RingBusy(RingError):
    """The role (producer or consumer) is held by another live process."""


class RingCorrupt(RingError):
    """The shared memory does not hold a consistent ring (EPROTO)."""


class RingFormatError(RingError):
    """The segment is not (yet) a ring: bad magic, version or size."""


class RingClosed(RingError):
    """The other side has closed (EPIPE) or this handle is closed."""


class MessageTooLarge(RingError):
    """The message can never fit in this ring (EMSGSIZE)."""


_ERRORS: dict[int, type[RingError]] = {
    errno.EBUSY: RingBusy,
    errno.EPROTO: RingCorrupt,
    errno.EBADMSG: RingFormatError,
    errno.EPIPE: RingClosed,
    errno.EMSGSIZE: MessageTooLarge,
}


def _raise(rc: int) -> None:
    code = -rc
    raise _ERRORS.get(code, RingError)(code, os.strerror(code))


def _check(rc: int) -> int:
    if rc < 0:
        _raise(rc)
    return rc


# ---------------------------------------------------------------- helpers


def _shm_path(name: str) -> str:
    if not isinstance(name, str):
        raise TypeError("shm name must be a str")
    bare = name[1:] if name.startswith("/") else name
    if not bare or "/" in bare or bare in (".", "..") or len(bare) > 255 or "\0" in bare:
        raise ValueError(f"invalid POSIX shm name {name!r}")
    return os.path.join(SHM_DIR, bare)


def _pid_alive(pid: int) -> bool:
    """Is pid a running (not zombie) process? 0 means 'nobody yet'."""
    if pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return False
    # "pid (comm) S ...": the state follows the last ')'.
    state = stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3]
    return state not in (b"Z", b"X", b"x")


def _drain(fd: int) -> None:
    try:
        os.eventfd_read(fd)
    except BlockingIOError:
        pass


def _new_eventfd() -> int:
    return os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)


def recv_eventfds(sock: socket.socket) -> tuple[int, int]:
    """Receive the (readable_fd, writable_fd) pair sent with Ring.send_eventfds."""
    msg, fds, _flags, _addr = socket.recv_fds(sock, 64, 2)
    if msg != b"wsd-ring-eventfds" or len(fds) != 2:
        for fd in fds:
            os.close(fd)
        raise RingError(errno.EPROTO, "expected a wsd ring eventfd pair")
    return fds[0], fds[1]


_live: "weakref.WeakSet[Ring]" = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # A forked child holds no role until it uses one: the parent keeps its own.
    for ring in list(_live):
        ring._forked()


os.register_at_fork(after_in_child=_after_fork_in_child)


# ---------------------------------------------------------------- the ring


class Ring:
    """A SPSC message ring over shared memory. See the module docstring."""

    #: Full readiness checks done in C before sleeping on the eventfd.
    spin = 64

    def __init__(self, mm: mmap.mmap, *, name: str | None, created: bool,
                 eventfds: tuple[int, int] | None, own_fds: bool) -> None:
        self._mm = mm
        self._name = name
        self._created_by = os.getpid() if created else 0
        self._base = ffi.from_buffer(mm)
        r = ffi.new("wsd_ring *")
        rc = lib.wsd_ring_open(r, self._base, len(mm))
        if rc < 0:
            ffi.release(self._base)
            _raise(rc)
        self._r = r
        self._mv = memoryview(mm)
        self._ro = self._mv.toreadonly()
        self._offs = ffi.new("uint64_t[]", _SCRATCH)
        self._lens = ffi.new("uint32_t[]", _SCRATCH)
        self._one_off = ffi.new("uint64_t[1]")
        self._small = ffi.new("char[]", _SMALL)
        self._rfd = self._wfd = -1
        self._own_fds = False
        self._rpoll = self._wpoll = None
        if eventfds is not None:
            self._set_fds(eventfds[0], eventfds[1], own_fds)
        _live.add(self)

    # ------------------------------------------------------------ opening

    @classmethod
    def create(cls, capacity: int, name: str | None = None, *, mode: int = 0o600,
               eventfds: bool = True) -> "Ring":
        """Make an empty ring of ``capacity`` data bytes (a power of two >= 64).

        ``name=None``: anonymous shared memory (MAP_SHARED, inherited by fork).
        A name: a new POSIX shm segment /dev/shm/<name>, created O_EXCL
        (FileExistsError if it exists). Two fresh eventfds come with it,
        unless ``eventfds=False`` (a ring whose producer and consumer are the
        same thread never sleeps on it: the switch's per-connection receive
        rings).
        """
        size = lib.wsd_ring_map_size(capacity)
        if size == 0:
            raise ValueError(f"capacity must be a power of two between 64 and 2**40, not {capacity}")
        if name is None:
            mm = mmap.mmap(-1, size)
        else:
            path = _shm_path(name)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
            try:
                os.ftruncate(fd, size)
                mm = mmap.mmap(fd, size)
            except OSError:
                os.unlink(path)
                raise
            finally:
                os.close(fd)
        with ffi.from_buffer(mm) as base:
            rc = lib.wsd_ring_format(base, size, capacity)
        if rc < 0:
            mm.close()
            _raise(rc)
        fds = (_new_eventfd(), _new_eventfd()) if eventfds else None
        return cls(mm, name=name, created=True, eventfds=fds, own_fds=eventfds)

    @classmethod
    def attach(cls, name: str, *, eventfds: tuple[int, int] | None = None) -> "Ring":
        """Open the ring in /dev/shm/<name>. ``eventfds``: the creator's
        (readable_fd, writable_fd) received by inheritance or SCM_RIGHTS; the
        ring takes ownership and closes them on close()."""
        path = _shm_path(name)
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        try:
            size = os.fstat(fd).st_size
            if size < HDR_SIZE:
                raise RingFormatError(errno.EBADMSG, f"{path} is too small to hold a ring")
            mm = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        try:
            return cls(mm, name=name, created=False, eventfds=eventfds, own_fds=True)
        except RingError:
            mm.close()
            if eventfds is not None:
                for efd in eventfds:
                    os.close(efd)
            raise

    def _set_fds(self, rfd: int, wfd: int, own: bool) -> None:
        self._close_fds()
        self._rfd, self._wfd, self._own_fds = rfd, wfd, own
        lib.wsd_ring_set_fds(self._r, rfd, wfd)
        self._rpoll = select.poll()
        self._rpoll.register(rfd, select.POLLIN)
        self._wpoll = select.poll()
        self._wpoll.register(wfd, select.POLLIN)

    def _close_fds(self) -> None:
        if self._own_fds:
            for fd in (self._rfd, self._wfd):
                if fd >= 0:
                    os.close(fd)
        self._rfd = self._wfd = -1
        self._own_fds = False
        self._rpoll = self._wpoll = None

    def adopt_eventfds(self, readable_fd: int, writable_fd: int, *, own: bool = True) -> None:
        """Use eventfds received from elsewhere (closing the ones we had).
        readable_fd is the one the consumer sleeps on (the producer writes
        it); writable_fd the one the producer sleeps on."""
        self._need_open()
        self._set_fds(readable_fd, writable_fd, own)

    def send_eventfds(self, sock: socket.socket) -> None:
        """Send (readable_fd, writable_fd) over a unix socket (SCM_RIGHTS)."""
        self._need_open()
        if self._rfd < 0:
            raise RingError(errno.EBADF, "this ring has no eventfds to send")
        socket.send_fds(sock, [b"wsd-ring-eventfds"], [self._rfd, self._wfd])

    def _forked(self) -> None:
        if self._r is not None:
            lib.wsd_ring_forked(self._r)

    def _need_open(self) -> None:
        if self._r is None:
            raise RingClosed(errno.EBADF, "ring is closed")

    # ------------------------------------------------------------ closing

    def close(self) -> None:
        """Mark this handle's side(s) closed (the peer sees EOF / EPIPE), wake
        the peer, unmap and close our eventfds. Views still alive keep the
        mapping until they are gone (no dangling memory)."""
        r = self._r
        if r is None:
            return
        lib.wsd_ring_close(r)
        self._r = None
        _live.discard(self)
        ffi.release(self._base)
        self._close_fds()
        try:
            self._ro.release()
            self._mv.release()
            self._mm.close()
        except BufferError:
            # Someone still holds a peeked/reserved view: the mmap object
            # unmaps itself when the last view is dropped.
            pass

    def unlink(self) -> None:
        """Remove the /dev/shm name (the mapping stays valid until closed)."""
        if self._name is not None:
            self.unlink_name(self._name)

    @staticmethod
    def unlink_name(name: str) -> None:
        try:
            os.unlink(_shm_path(name))
        except FileNotFoundError:
            pass

    def __enter__(self) -> "Ring":
        return self

    def __exit__(self, *exc: object) -> None:
        """Close; the process that created a named ring also unlinks it."""
        self.close()
        if self._created_by == os.getpid():
            self.unlink()

    def __del__(self) -> None:
        # No implicit close: a dropped handle must not mark its side closed
        # (a forked child that never used it would otherwise close the parent's
        # side). Only release the eventfds we own.
        if getattr(self, "_r", None) is not None:
            try:
                self._close_fds()
            except OSError:
                pass

    def __repr__(self) -> str:
        if self._r is None:
            return f"<Ring {self._name or 'anonymous'} closed>"
        return (f"<Ring {self._name or 'anonymous'} capacity={self.capacity} "
                f"used={self.used} head={self.head} tail={self.tail}>")

    # ------------------------------------------------------------ properties

    @property
    def name(self) -> str | None:
        return self._name

    @property
    def capacity(self) -> int:
        return len(self._mm) - HDR_SIZE

    @property
    def max_message(self) -> int:
        self._need_open()
        return lib.wsd_ring_max_msg(self._r)

    @property
    def readable_fd(self) -> int:
        """eventfd the consumer waits on (written by the producer)."""
        return self._rfd

    @property
    def writable_fd(self) -> int:
        """eventfd the producer waits on (written by the consumer)."""
        return self._wfd

    def fileno(self) -> int:
        """The consumer's eventfd, for select()/selectors."""
        return self._rfd

    @property
    def eventfds(self) -> tuple[int, int]:
        return self._rfd, self._wfd

    @property
    def head(self) -> int:
        self._need_open()
        return lib.wsd_ring_head(self._r)

    @property
    def tail(self) -> int:
        self._need_open()
        return lib.wsd_ring_tail(self._r)

    @property
    def used(self) -> int:
        """Bytes between tail and head (records, headers and PADs)."""
        self._need_open()
        t = lib.wsd_ring_tail(self._r)
        return lib.wsd_ring_head(self._r) - t

    @property
    def producer_pid(self) -> int:
        self._need_open()
        return lib.wsd_ring_producer_pid(self._r)

    @property
    def consumer_pid(self) -> int:
        self._need_open()
        return lib.wsd_ring_consumer_pid(self._r)

    @property
    def producer_closed(self) -> bool:
        self._need_open()
        return bool(lib.wsd_ring_producer_closed(self._r))

    @property
    def consumer_closed(self) -> bool:
        self._need_open()
        return bool(lib.wsd_ring_consumer_closed(self._r))

    @property
    def producer_alive(self) -> bool:
        """False once a producer has claimed the ring and then died without
        closing (also False before any producer claimed it)."""
        return _pid_alive(self.producer_pid)

    @property
    def consumer_alive(self) -> bool:
        return _pid_alive(self.consumer_pid)

    def _producer_gone(self) -> bool:
        pid = lib.wsd_ring_producer_pid(self._r)
        return bool(lib.wsd_ring_producer_closed(self._r)) or (pid > 0 and not _pid_alive(pid))

    def _consumer_gone(self) -> bool:
        pid = lib.wsd_ring_consumer_pid(self._r)
        return bool(lib.wsd_ring_consumer_closed(self._r)) or (pid > 0 and not _pid_alive(pid))

    @property
    def eof(self) -> bool:
        """No message left and the producer closed or died: nothing more will come."""
        self._need_open()
        gone = self._producer_gone()  # first, then look for data (see ring.c readable)
        return gone and _check(lib.wsd_ring_peek(self._r, 1, self._offs, self._lens)) == 0

    # ------------------------------------------------------------ producer

    def reserve(self, n: int) -> memoryview | None:
        """A writable view of n bytes for the next message, or None if the
        ring has no room now. Fill it, then commit(nbytes <= n) or cancel()."""
        r = self._r
        if r is None:
            self._need_open()
        off = lib.wsd_ring_reserve(r, n)
        if off < 0:
            if off == _EAGAIN:
                return None
            _raise(off)
        return self._mv[off : off + n]

    def commit(self, nbytes: int) -> None:
        """Publish the reserved message with its real length."""
        r = self._r
        if r is None:
            self._need_open()
        rc = lib.wsd_ring_commit(r, nbytes)
        if rc < 0:
            if rc == -errno.EINVAL:
                raise ValueError("commit without a reservation, or longer than reserved")
            _raise(rc)

    def cancel(self) -> None:
        """Drop the pending reservation; nothing becomes visible."""
        self._need_open()
        lib.wsd_ring_cancel(self._r)

    def reserve_batch(self, sizes: Sequence[int]) -> list[memoryview]:
        """Reserve up to len(sizes) messages in one C call; returns writable
        views for those that fit (a prefix). Then commit_batch(k)."""
        r = self._r
        if r is None:
            self._need_open()
        count = min(len(sizes), _SCRATCH)
        szs = ffi.new("uint32_t[]", list(sizes[:count]))
        k = lib.wsd_ring_reserve_batch(r, szs, count, self._offs)
        if k < 0:
            _raise(k)
        mv, offs = self._mv, self._offs
        return [mv[offs[i] : offs[i] + sizes[i]] for i in range(k)]

    def commit_batch(self, k: int) -> None:
        """Publish the first k messages of the pending batch reservation."""
        r = self._r
        if r is None:
            self._need_open()
        rc = lib.wsd_ring_commit_batch(r, k)
        if rc < 0:
            if rc == -errno.EINVAL:
                raise ValueError("commit_batch: more messages than reserved")
            _raise(rc)

    def post(self, n: int) -> memoryview | None:
        """Posted spans (a receive ring): a writable view of n bytes after the
        spans already posted, or None if the ring has no room now. Nothing is
        visible to the consumer until commit_posted(). Hand the view to
        whatever receives into it (a NIC, a socket); reserve(), push() and
        cancel() drop every posted span."""
        r = self._r
        if r is None:
            self._need_open()
        off = lib.wsd_ring_post(r, n)
        if off < 0:
            if off == _EAGAIN:
                return None
            _raise(off)
        return self._mv[off : off + n]

    def commit_posted(self, lengths: Sequence[int]) -> None:
        """Publish the len(lengths) oldest posted spans, in posting order, each
        with its real length (<= its posted size), with one head store. The
        unused rest of each span becomes a FILL record the consumer skips, so
        a short message never exposes stale bytes."""
        r = self._r
        if r is None:
            self._need_open()
        k = len(lengths)
        if k == 1:
            self._lens[0] = lengths[0]
        else:
            self._lens[0:k] = lengths
        rc = lib.wsd_ring_commit_posted(r, self._lens, k)
        if rc < 0:
            if rc == -errno.EINVAL:
                raise ValueError("commit_posted: more spans than posted, or a length larger than its span")
            _raise(rc)

    def commit_posted_one(self, nbytes: int) -> None:
        """commit_posted([nbytes]) without building a list (the per-message fast path)."""
        r = self._r
        if r is None:
            self._need_open()
        lens = self._lens
        lens[0] = nbytes
        if lib.wsd_ring_commit_posted(r, lens, 1) < 0:
            raise ValueError("commit_posted: nothing posted, or a length larger than its span")

    @property
    def posted(self) -> int:
        """Posted spans not yet committed."""
        self._need_open()
        return lib.wsd_ring_posted(self._r)

    @property
    def memory(self) -> memoryview:
        """A writable view of the whole mapping (header and data area): one
        stable buffer, e.g. to register with a NIC so that every posted span
        lies inside the registered region."""
        self._need_open()
        return self._mv

    def push(self, data: bytes | bytearray | memoryview) -> bool:
        """Copy one message in; False if the ring is full now."""
        r = self._r
        if r is None:
            self._need_open()
        if type(data) is bytes:
            rc = lib.wsd_ring_push(r, data, len(data))
        else:
            buf = ffi.from_buffer(data)
            rc = lib.wsd_ring_push(r, buf, len(buf))
        if rc < 0:
            _raise(rc)
        return rc == 1

    def push_batch(self, buffers: Iterable[bytes | bytearray | memoryview]) -> int:
        """Copy many messages in with one C call and one head publish.
        Returns how many went in (a prefix; 0 when full). Buffers are taken as
        bytes (their len() must be their size). Small messages are joined and
        passed with a sizes array; large ones (>= 4 KiB on average) as an
        array of pointers, so they are copied only once, into the ring."""
        r = self._r
        if r is None:
            self._need_open()
        if not isinstance(buffers, (list, tuple)):
            buffers = list(buffers)
        count = len(buffers)
        lens = array("I", map(len, buffers))
        total = sum(lens)
        if total >= _IOV_MIN * count:
            keep = [ffi.from_buffer(b) for b in buffers]
            if any(len(c) != n for c, n in zip(keep, lens)):
                raise ValueError("push_batch buffers must be byte-sized (len() == nbytes)")
            k = lib.wsd_ring_push_iov(r, ffi.new("char *[]", keep), ffi.from_buffer("uint32_t[]", lens), count)
        else:
            data = b"".join(buffers)
            if len(data) != total:
                raise ValueError("push_batch buffers must be byte-sized (len() == nbytes)")
            k = lib.wsd_ring_push_packed(r, data, ffi.from_buffer("uint32_t[]", lens), count)
        if k < 0:
            _raise(k)
        return k

    def put(self, data: bytes | bytearray | memoryview, timeout: float | None = None) -> None:
        """Blocking push: wait for room (TimeoutError after timeout seconds,
        RingClosed if the consumer closed or died)."""
        if self.push(data):
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        n = len(data) if type(data) is bytes else memoryview(data).nbytes
        while not self.push(data):
            left = None if deadline is None else deadline - time.monotonic()
            if (left is not None and left <= 0) or not self.wait_writable(left, n):
                raise TimeoutError("ring full")
            if self._consumer_gone():
                raise RingClosed(errno.EPIPE, "consumer closed or died")

    # ------------------------------------------------------------ consumer

    def peek(self, max_n: int = _SCRATCH) -> list[memoryview]:
        """Read-only views of up to max_n oldest messages (empty list if
        none). They stay valid until release(); peeking again returns the same
        messages first."""
        r = self._r
        if r is None:
            self._need_open()
        offs, lens = self._offs, self._lens
        k = lib.wsd_ring_peek(r, min(max_n, _SCRATCH), offs, lens)
        if k <= 0:
            if k < 0:
                _raise(k)
            return []
        ro = self._ro
        return [ro[offs[i] : offs[i] + lens[i]] for i in range(k)]

    def release(self, n: int) -> None:
        """Give back the n oldest (peeked) messages' space to the producer."""
        r = self._r
        if r is None:
            self._need_open()
        rc = lib.wsd_ring_release(r, n)
        if rc < 0:
            if rc == -errno.EINVAL:
                raise ValueError("release: more messages than available")
            _raise(rc)

    def pop(self) -> bytes | None:
        """The oldest message as bytes (copied out and released), or None."""
        r = self._r
        if r is None:
            self._need_open()
        n = lib.wsd_ring_pop_one(r, self._small, _SMALL, self._one_off)
        if n <= _SMALL:
            if n >= 0:
                return ffi.unpack(self._small, n)
            if n == _EAGAIN:
                return None
            _raise(n)
        # Larger than the scratch buffer: copy straight from the ring.
        off = self._one_off[0]
        data = self._mm[off : off + n]
        lib.wsd_ring_release(r, 1)
        return data

    def pop_batch_into(self, buf: bytearray | memoryview, max_n: int = _SCRATCH) -> list[int]:
        """Copy up to max_n messages back to back into buf (one C call) and
        release them; returns their lengths. Raises MessageTooLarge if the
        oldest message alone does not fit in buf."""
        r = self._r
        if r is None:
            self._need_open()
        out = ffi.from_buffer(buf, require_writable=True)
        k = lib.wsd_ring_pop_packed(r, out, len(out), self._lens, min(max_n, _SCRATCH))
        if k <= 0:
            if k < 0:
                _raise(k)
            return []
        return ffi.unpack(self._lens, k)

    def pop_batch(self, max_n: int = _SCRATCH) -> list[bytes]:
        """Up to max_n messages as bytes, released."""
        r = self._r
        if r is None:
            self._need_open()
        offs, lens = self._offs, self._lens
        k = lib.wsd_ring_peek(r, min(max_n, _SCRATCH), offs, lens)
        if k <= 0:
            if k < 0:
                _raise(k)
            return []
        mm = self._mm
        out = [mm[offs[i] : offs[i] + lens[i]] for i in range(k)]
        lib.wsd_ring_release(r, k)
        return out

    def get(self, timeout: float | None = None) -> bytes | None:
        """Blocking pop: a message, or None at EOF (producer closed or died);
        TimeoutError after timeout seconds."""
        data = self.pop()
        if data is not None:
            return data
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self.eof:
                return None
            left = None if deadline is None else deadline - time.monotonic()
            if (left is not None and left <= 0) or not self.wait_readable(left):
                raise TimeoutError("ring empty")
            data = self.pop()
            if data is not None:
                return data

    # ------------------------------------------------------------ waiting

    def readable(self) -> bool:
        """A message is waiting, or the producer has closed."""
        self._need_open()
        return bool(_check(lib.wsd_ring_readable(self._r)))

    def writable(self, nbytes: int = 0) -> bool:
        """A message of nbytes could be reserved now (or the consumer closed).
        Like every producer wait, this drops a pending (uncommitted)
        reservation: commit or cancel before waiting."""
        self._need_open()
        return bool(_check(lib.wsd_ring_writable(self._r, nbytes)))

    def arm_readable(self) -> bool:
        """Before waiting on readable_fd yourself: drain it, announce the
        wait in the header and re-check. True means "already readable, do not
        wait". After the fd fires (or on giving up) call ack_readable()."""
        self._need_open()
        if self._rfd >= 0:
            _drain(self._rfd)
        return bool(_check(lib.wsd_ring_arm_readable(self._r)))

    def ack_readable(self) -> None:
        self._need_open()
        lib.wsd_ring_disarm_readable(self._r)
        if self._rfd >= 0:
            _drain(self._rfd)

    def arm_writable(self, nbytes: int = 0) -> bool:
        self._need_open()
        if self._wfd >= 0:
            _drain(self._wfd)
        return bool(_check(lib.wsd_ring_arm_writable(self._r, nbytes)))

    def ack_writable(self) -> None:
        self._need_open()
        lib.wsd_ring_disarm_writable(self._r)
        if self._wfd >= 0:
            _drain(self._wfd)

    def wait_readable(self, timeout: float | None = None) -> bool:
        """Block until a message is waiting or the producer closed or died.
        Returns False on timeout. Spins `spin` checks, then sleeps."""
        r = self._r
        if r is None:
            self._need_open()
        if _check(lib.wsd_ring_spin_readable(r, self.spin)):
            return True
        return self._sleep(timeout, True, 0)

    def wait_writable(self, timeout: float | None = None, nbytes: int = 0) -> bool:
        """Block until a message of nbytes fits, or the consumer closed or
        died. Returns False on timeout. Drops a pending reservation."""
        r = self._r
        if r is None:
            self._need_open()
        if _check(lib.wsd_ring_spin_writable(r, nbytes, self.spin)):
            return True
        return self._sleep(timeout, False, nbytes)

    def _sleep(self, timeout: float | None, readable: bool, nbytes: int) -> bool:
        r = self._r
        deadline = None if timeout is None else time.monotonic() + timeout
        if readable:
            fd, poller, gone = self._rfd, self._rpoll, self._producer_gone
            arm = lambda: lib.wsd_ring_arm_readable(r)  # noqa: E731
            disarm = lambda: lib.wsd_ring_disarm_readable(r)  # noqa: E731
            ready = lambda: lib.wsd_ring_readable(r)  # noqa: E731
        else:
            fd, poller, gone = self._wfd, self._wpoll, self._consumer_gone
            arm = lambda: lib.wsd_ring_arm_writable(r, nbytes)  # noqa: E731
            disarm = lambda: lib.wsd_ring_disarm_writable(r)  # noqa: E731
            ready = lambda: lib.wsd_ring_writable(r, nbytes)  # noqa: E731
        backoff = 0.0001
        while True:
            # Drain before arming: a wake-up written after the arm must stay.
            if fd >= 0:
                _drain(fd)
            if _check(arm()):
                return True
            left = _SLICE if deadline is None else min(_SLICE, deadline - time.monotonic())
            if left <= 0:
                disarm()
                return False
            if poller is not None:
                poller.poll(left * 1000.0)
            else:
                time.sleep(min(left, backoff))
                backoff = min(backoff * 2, 0.002)
            disarm()
            if _check(ready()):
                return True
            if gone():
                return True

    async def wait_readable_async(self, timeout: float | None = None) -> bool:
        """asyncio form of wait_readable, using loop.add_reader(readable_fd)."""
        self._need_open()
        if self._rfd < 0:
            raise RingError(errno.EBADF, "wait_readable_async needs the eventfds")
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            if self.arm_readable():
                return True
            fut = loop.create_future()
            loop.add_reader(self._rfd, lambda: fut.done() or fut.set_result(None))
            left = _SLICE if deadline is None else min(_SLICE, deadline - loop.time())
            try:
                if left > 0:
                    await asyncio.wait({fut}, timeout=left)
            finally:
                loop.remove_reader(self._rfd)
                self.ack_readable()
            if self.readable() or self._producer_gone():
                return True
            if deadline is not None and loop.time() >= deadline:
                return False
