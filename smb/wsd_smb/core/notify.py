"""CHANGE_NOTIFY (MS-SMB2 3.3.5.19; MS-FSA 2.1.5.10 "Server Requests Change Notification
for a Directory", 2.1.4.1 "Server Notifies of a Change"; MS-FSCC 2.7.1
FILE_NOTIFY_INFORMATION).

The first CHANGE_NOTIFY on a directory open starts a watch (CompletionFilter,
SMB2_WATCH_TREE; later requests on the open do not change them, MS-FSA 2.1.5.10).
From then on every change the server itself makes through the object
store -- create, overwrite, delete, rename, write, set-info, by any connection -- that
falls under the watch and matches its filter is either given to a pending request
(completed at once) or buffered for the next one.  Buffered changes that no longer fit
the watch's buffer (the first request's OutputBufferLength), or a completion whose
entries exceed the request's OutputBufferLength, give STATUS_NOTIFY_ENUM_DIR with no
data ("enumerate the directory yourself").  Closing the open completes its pending
requests with STATUS_NOTIFY_CLEANUP, as does the end of the session or tree connect; an
SMB2 CANCEL completes one with STATUS_CANCELLED.

Changes made behind the server's back (directly on the local file system) are not seen:
there is no inotify here.

This module knows nothing of the wire beyond FILE_NOTIFY_INFORMATION; the file-command
layer (files.py) calls :meth:`NotifyManager.request` from its CHANGE_NOTIFY handler and
:meth:`NotifyManager.report` / :meth:`NotifyManager.open_closed` from small hooks.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from ..ntstatus import STATUS_CANCELLED, NtStatusError
from ..store.errors import STATUS_ACCESS_DENIED, STATUS_INVALID_PARAMETER, fail
from ..wire.base import Buf, F, Plain, U32

log = logging.getLogger("wsd_smb.notify")

STATUS_NOTIFY_CLEANUP = 0x0000010B
STATUS_DELETE_PENDING = 0xC0000056
STATUS_NOTIFY_ENUM_DIR = 0x0000010C

SMB2_WATCH_TREE = 0x0001

# CompletionFilter bits (MS-SMB2 2.2.35)
FILE_NOTIFY_CHANGE_FILE_NAME = 0x001
FILE_NOTIFY_CHANGE_DIR_NAME = 0x002
FILE_NOTIFY_CHANGE_ATTRIBUTES = 0x004
FILE_NOTIFY_CHANGE_SIZE = 0x008
FILE_NOTIFY_CHANGE_LAST_WRITE = 0x010
FILE_NOTIFY_CHANGE_LAST_ACCESS = 0x020
FILE_NOTIFY_CHANGE_CREATION = 0x040
FILE_NOTIFY_CHANGE_EA = 0x080
FILE_NOTIFY_CHANGE_SECURITY = 0x100
FILE_NOTIFY_CHANGE_STREAM_NAME = 0x200
FILE_NOTIFY_CHANGE_STREAM_SIZE = 0x400
FILE_NOTIFY_CHANGE_STREAM_WRITE = 0x800
FILE_NOTIFY_VALID_MASK = 0xFFF

# Action (MS-FSCC 2.7.1)
FILE_ACTION_ADDED = 1
FILE_ACTION_REMOVED = 2
FILE_ACTION_MODIFIED = 3
FILE_ACTION_RENAMED_OLD_NAME = 4
FILE_ACTION_RENAMED_NEW_NAME = 5

FILE_LIST_DIRECTORY = 0x0001


class FileNotifyInformation(Plain):
    """MS-FSCC 2.7.1 FILE_NOTIFY_INFORMATION (12 bytes + FileName, UTF-16LE)."""

    FIELDS = (F("NextEntryOffset", U32), F("Action", U32), F("FileNameLength", U32))
    BUFFERS = (Buf("FileName", None, "FileNameLength"),)


def pack_notify_entries(entries: list[tuple[int, str]]) -> bytes:
    """Chain FILE_NOTIFY_INFORMATION entries: each starts on a 4-byte boundary (NextEntryOffset
    a multiple of 4, FileName padded to the next 4-byte boundary), the last has
    NextEntryOffset 0 (MS-FSCC 2.7.1)."""
    out = bytearray()
    last = -1
    for action, name in entries:
        start = len(out) + ((-len(out)) % 4)
        out += b"\0" * (start - len(out))
        if last >= 0:
            out[last:last + 4] = (start - last).to_bytes(4, "little")
        e = FileNotifyInformation(next_entry_offset=0, action=action,
                                  file_name=name.encode("utf-16-le", "surrogatepass"))
        out += e.pack(0)
        last = start
    if out:
        out += b"\0" * ((-len(out)) % 4)
    return bytes(out)


def unpack_notify_entries(data: bytes) -> list[tuple[int, str]]:
    """The (Action, FileName) pairs of a FILE_NOTIFY_INFORMATION chain."""
    out = []
    pos = 0
    while pos < len(data):
        e = FileNotifyInformation.unpack(data, pos)
        out.append((e.action, bytes(e.file_name).decode("utf-16-le", "surrogatepass")))
        if not e.next_entry_offset:
            break
        pos += e.next_entry_offset
    return out


@dataclass(eq=False)
class Watch:
    """The change-notify state of one directory open (MS-FSA Open.File.ChangeNotifyList entry
    plus the buffered NotifyEventList)."""

    open: Any
    completion_filter: int
    watch_tree: bool
    buffer_size: int  # how much may be buffered between requests (the first OutputBufferLength)
    events: list[tuple[int, str]] = field(default_factory=list)
    buffered: int = 0  # packed size of `events`
    overflow: bool = False
    pending: list[tuple[Any, int]] = field(default_factory=list)  # (AsyncOp, OutputBufferLength), FIFO


class NotifyManager:
    """All watches of one server (thread-safe: hooks run in the driver's worker threads).

    ``respond(entries_bytes, status)`` builds the handler's answer (files.py passes a
    function making a ``Response(ChangeNotifyResponse(...), status)``), which keeps this
    module free of the handler types."""

    def __init__(self, respond: Callable[[bytes, int], Any]):
        self._respond = respond
        self._lock = threading.Lock()
        self._watches: dict[int, Watch] = {}  # id(open) -> Watch

    # ------------------------------------------------------------ 3.3.5.19
    def request(self, ctx: Any, o: Any, flags: int, output_buffer_length: int, completion_filter: int,
                max_transact_size: int) -> Any:
        """A CHANGE_NOTIFY request on open *o*: an immediate answer (buffered changes,
        overflow) or ``ctx.go_async(...)`` (the core sends STATUS_PENDING)."""
        if output_buffer_length > max_transact_size:
            raise fail(STATUS_INVALID_PARAMETER, "OutputBufferLength > MaxTransactSize")
        if not getattr(o, "is_directory", False):
            raise fail(STATUS_INVALID_PARAMETER, "CHANGE_NOTIFY on a non-directory")
        if not o.granted_access & FILE_LIST_DIRECTORY:
            raise fail(STATUS_ACCESS_DENIED, "CHANGE_NOTIFY without FILE_LIST_DIRECTORY")
        if o.file.delete_pending:
            raise fail(STATUS_DELETE_PENDING, "the watched directory is being deleted")
        # CompletionFilter is taken as it is (Windows does not check it: smbtorture smb2.notify.mask)
        watch_tree = bool(flags & SMB2_WATCH_TREE)
        with self._lock:
            w = self._watches.get(id(o))
            if w is None or w.open is not o:  # (an id of an open closed some other way, reused)
                w = self._watches[id(o)] = Watch(o, completion_filter, watch_tree, output_buffer_length)
            # else: MS-FSA 2.1.5.10 -- the open's ChangeNotifyEntry exists, its CompletionFilter
            # and WatchTree stay those of the first request until the open is closed (what
            # Windows does: smbtorture smb2.notify.mask-change, smb2.notify.rec; Samba too)
            if not w.pending:
                if w.overflow:
                    w.overflow = False
                    return self._respond(b"", STATUS_NOTIFY_ENUM_DIR)
                if w.events:
                    entries, w.events, w.buffered = w.events, [], 0
                    return self._answer(entries, output_buffer_length)
            op = ctx.go_async(on_cancel=self._on_cancel)
            w.pending.append((op, output_buffer_length))
        log.debug("event=notify_pending path=%s filter=0x%x tree=%d", o.path, completion_filter, watch_tree)
        return op

    def _answer(self, entries: list[tuple[int, str]], limit: int) -> Any:
        data = pack_notify_entries(entries)
        if len(data) > limit:
            return self._respond(b"", STATUS_NOTIFY_ENUM_DIR)
        return self._respond(data, 0)

    def _on_cancel(self, op: Any) -> None:
        with self._lock:
            for w in self._watches.values():
                w.pending = [(p, n) for p, n in w.pending if p is not op]
        if op.cancel_reason == "cancel":
            op.complete(NtStatusError(STATUS_CANCELLED))
        else:  # the session or connection went away
            op.complete(self._respond(b"", STATUS_NOTIFY_CLEANUP))

    # ------------------------------------------------------------ MS-FSA 2.1.4.1
    def report(self, share: Any, changes: list[tuple[list[str], str, int]], filter_bits: int) -> None:
        """Changes in *share*: (parent directory's share-relative components, name, Action);
        *filter_bits* are the CompletionFilter bits the change concerns.  Every watch on the
        parent (or, with SMB2_WATCH_TREE, on an ancestor) whose filter matches gets them."""
        if not self._watches:
            return
        done: list[tuple[Any, Any]] = []
        with self._lock:
            for key, w in list(self._watches.items()):
                o = w.open
                if getattr(o, "closed", False):
                    if not w.pending:
                        del self._watches[key]  # closed without open_closed (e.g. a store-level close)
                    continue
                if not (w.completion_filter & filter_bits):
                    continue
                f = o.file
                if f.share.path != share.path or f.stream is not None:  # (one root, read-only or not)
                    continue
                base = [c.lower() for c in f.rel]
                mine = []
                for parent, name, action in changes:
                    low = [c.lower() for c in parent]
                    if low == base:
                        mine.append((action, name))
                    elif w.watch_tree and len(low) > len(base) and low[:len(base)] == base:
                        mine.append((action, "\\".join(list(parent[len(base):]) + [name])))
                if not mine:
                    continue
                while w.pending and (w.pending[0][0].done or w.pending[0][0].cancelled):
                    w.pending.pop(0)
                if w.pending:
                    op, limit = w.pending.pop(0)
                    done.append((op, self._answer(mine, limit)))
                    continue
                if w.overflow:
                    continue
                for e in mine:
                    if w.events and w.events[-1] == e:
                        continue  # the same change again (e.g. several writes)
                    w.events.append(e)
                    w.buffered += 12 + 2 * len(e[1]) + 3
                if w.buffered > w.buffer_size:
                    w.events, w.buffered, w.overflow = [], 0, True
        for op, result in done:
            op.complete(result)

    def open_closed(self, o: Any) -> None:
        """The watched open is closed: its pending requests complete with STATUS_NOTIFY_CLEANUP."""
        with self._lock:
            w = self._watches.pop(id(o), None)
        if w is None:
            return
        for op, _ in w.pending:
            op.complete(self._respond(b"", STATUS_NOTIFY_CLEANUP))

    def delete_pending(self, fobj: Any) -> None:
        """The watched directory *fobj* became delete-pending while opens of it remain: pending
        requests on it complete with STATUS_DELETE_PENDING (what Windows does; smbtorture
        smb2.notify.rmdir1-4)."""
        done = []
        with self._lock:
            for w in self._watches.values():
                if w.open.file is fobj:
                    done += [op for op, _ in w.pending]
                    w.pending = []
        for op in done:
            op.complete(NtStatusError(STATUS_DELETE_PENDING))

    def watch_of(self, o: Any) -> Watch | None:
        with self._lock:
            return self._watches.get(id(o))
