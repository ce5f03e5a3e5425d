"""core/notify.py without any I/O: a real ObjectStore (files in a temporary directory), a
real sans-IO Connection whose AsyncOps carry the completions, the NotifyManager in between
(MS-SMB2 3.3.5.19, MS-FSA 2.1.4.1 / 2.1.5.10).  Reports are fed by hand, as files.py's
hooks do."""
from __future__ import annotations

import pytest

from wsd_smb.core import notify as ntf
from wsd_smb.core.connection import Connection
from wsd_smb.core.dispatch import AsyncOp, RequestContext, Response
from wsd_smb.core.state import Server
from wsd_smb.ntstatus import NtStatusError
from wsd_smb.store import ObjectStore, Share
from wsd_smb.wire.header import Command, Smb2Header

FILE_CREATE, FILE_DIRECTORY_FILE = 2, 1


@pytest.fixture
def env(tmp_path):
    store = ObjectStore()
    share = Share("s", str(tmp_path))
    d = store.create(share, "watched", desired_access=0x001F01FF, share_access=7, create_disposition=FILE_CREATE,
                     create_options=FILE_DIRECTORY_FILE, file_attributes=0x10).open
    server = Server()
    conn = Connection(server, "sansio")
    mgr = ntf.NotifyManager(lambda data, status: Response(data, status))
    mids = iter(range(1, 1000))

    def ctx() -> RequestContext:
        return RequestContext(conn, server, Smb2Header(Command.SMB2_CHANGE_NOTIFY, message_id=next(mids)), 0.0)

    return store, share, d, conn, mgr, ctx


def _completed(conn: Connection, op: AsyncOp):
    """What op.complete() handed to the connection (its final response is sent by poll)."""
    assert op.done
    for o, result in list(conn._completions) or []:
        if o is op:
            return result
    return op.early_result


def test_3_3_5_19_pending_until_a_matching_change(env):
    store, share, d, conn, mgr, ctx = env
    op = mgr.request(ctx(), d, 0, 1000, ntf.FILE_NOTIFY_CHANGE_FILE_NAME, 65536)
    assert isinstance(op, AsyncOp) and not op.done
    mgr.report(share, [(["watched"], "x", ntf.FILE_ACTION_ADDED)], ntf.FILE_NOTIFY_CHANGE_DIR_NAME)
    assert not op.done  # filter does not match
    mgr.report(share, [(["other"], "x", ntf.FILE_ACTION_ADDED)], ntf.FILE_NOTIFY_CHANGE_FILE_NAME)
    assert not op.done  # another directory
    mgr.report(share, [(["watched", "sub"], "x", ntf.FILE_ACTION_ADDED)], ntf.FILE_NOTIFY_CHANGE_FILE_NAME)
    assert not op.done  # below it, but no WATCH_TREE
    mgr.report(share, [(["Watched"], "f.txt", ntf.FILE_ACTION_ADDED)], ntf.FILE_NOTIFY_CHANGE_FILE_NAME)
    r = _completed(conn, op)
    assert r.status == 0 and ntf.unpack_notify_entries(r.body) == [(ntf.FILE_ACTION_ADDED, "f.txt")]


def test_watch_tree_buffering_overflow_and_cleanup(env):
    store, share, d, conn, mgr, ctx = env
    op = mgr.request(ctx(), d, ntf.SMB2_WATCH_TREE, 64, ntf.FILE_NOTIFY_CHANGE_FILE_NAME, 65536)
    mgr.report(share, [(["watched", "a", "b"], "deep", ntf.FILE_ACTION_REMOVED)], ntf.FILE_NOTIFY_CHANGE_FILE_NAME)
    assert ntf.unpack_notify_entries(_completed(conn, op).body) == [(ntf.FILE_ACTION_REMOVED, "a\\b\\deep")]
    # nothing pending: buffered, handed out at once by the next request (duplicates folded)
    for _ in range(2):
        mgr.report(share, [(["watched"], "n1", ntf.FILE_ACTION_MODIFIED)], ntf.FILE_NOTIFY_CHANGE_FILE_NAME)
    r = mgr.request(ctx(), d, ntf.SMB2_WATCH_TREE, 64, ntf.FILE_NOTIFY_CHANGE_FILE_NAME, 65536)
    assert isinstance(r, Response) and ntf.unpack_notify_entries(r.body) == [(ntf.FILE_ACTION_MODIFIED, "n1")]
    # more than the 64-byte watch buffer: the next request gets NOTIFY_ENUM_DIR, no data
    for i in range(5):
        mgr.report(share, [(["watched"], f"name-{i}", ntf.FILE_ACTION_ADDED)], ntf.FILE_NOTIFY_CHANGE_FILE_NAME)
    r = mgr.request(ctx(), d, ntf.SMB2_WATCH_TREE, 64, ntf.FILE_NOTIFY_CHANGE_FILE_NAME, 65536)
    assert r.status == ntf.STATUS_NOTIFY_ENUM_DIR and r.body == b""
    # close: the pending request ends with NOTIFY_CLEANUP
    op = mgr.request(ctx(), d, 0, 64, ntf.FILE_NOTIFY_CHANGE_FILE_NAME, 65536)
    mgr.open_closed(d)
    assert _completed(conn, op).status == ntf.STATUS_NOTIFY_CLEANUP
    assert mgr.watch_of(d) is None


def test_cancel_and_session_end(env):
    store, share, d, conn, mgr, ctx = env
    op = mgr.request(ctx(), d, 0, 100, ntf.FILE_NOTIFY_CHANGE_FILE_NAME, 65536)
    op.cancel()  # SMB2 CANCEL
    r = _completed(conn, op)
    assert isinstance(r, NtStatusError) and r.status == 0xC0000120
    op = mgr.request(ctx(), d, 0, 100, ntf.FILE_NOTIFY_CHANGE_FILE_NAME, 65536)
    op.cancel("session_closed")
    assert _completed(conn, op).status == ntf.STATUS_NOTIFY_CLEANUP
    # neither is handed a later change
    mgr.report(share, [(["watched"], "late", ntf.FILE_ACTION_ADDED)], ntf.FILE_NOTIFY_CHANGE_FILE_NAME)
    assert mgr.watch_of(d).events == [(ntf.FILE_ACTION_ADDED, "late")]


def test_request_checks_and_delete_pending(env, tmp_path):
    store, share, d, conn, mgr, ctx = env
    f = store.create(share, "plain", desired_access=0x001F01FF, share_access=7, create_disposition=FILE_CREATE,
                     create_options=0x40).open
    with pytest.raises(NtStatusError) as ei:
        mgr.request(ctx(), f, 0, 100, 1, 65536)
    assert ei.value.status == 0xC000000D
    with pytest.raises(NtStatusError) as ei:
        mgr.request(ctx(), d, 0, 65537, 1, 65536)
    assert ei.value.status == 0xC000000D
    op = mgr.request(ctx(), d, 0, 100, 1, 65536)
    d.file.delete_pending = True
    mgr.delete_pending(d.file)
    r = _completed(conn, op)
    assert isinstance(r, NtStatusError) and r.status == ntf.STATUS_DELETE_PENDING
    with pytest.raises(NtStatusError) as ei:
        mgr.request(ctx(), d, 0, 100, 1, 65536)
    assert ei.value.status == ntf.STATUS_DELETE_PENDING
