"""CHANGE_NOTIFY (MS-SMB2 3.3.5.19, MS-FSA 2.1.5.10 / 2.1.4.1, MS-FSCC 2.7.1
FILE_NOTIFY_INFORMATION): golden bytes of the entry chain, then a real wsd-smbd on
loopback driven by the raw client: interim STATUS_PENDING, completion by another
connection's change, SMB2 CANCEL (also one that overtakes its request),
STATUS_NOTIFY_CLEANUP on close and on LOGOFF, STATUS_NOTIFY_ENUM_DIR, buffering between
requests, WATCH_TREE, renames, deletes, the checks of the request."""
from __future__ import annotations

import pytest
from rawclient import RawClient
from test_oplocks import client, close, create, nothing_arrives, recv_one

from wsd_smb.core import notify as ntf
from wsd_smb.store.fscc import FileRenameInformation
from wsd_smb.wire import commands as w
from wsd_smb.wire.base import FileId
from wsd_smb.wire.header import SMB2_FLAGS_ASYNC_COMMAND, Command

STATUS_PENDING = 0x103
STATUS_CANCELLED = 0xC0000120
STATUS_INVALID_PARAMETER = 0xC000000D
DIRECTORY, NON_DIRECTORY = 0x01, 0x40
FILE_OPEN, FILE_CREATE = 1, 2
NAME = ntf.FILE_NOTIFY_CHANGE_FILE_NAME | ntf.FILE_NOTIFY_CHANGE_DIR_NAME


def test_fscc_2_7_1_file_notify_information_golden():
    data = ntf.pack_notify_entries([(ntf.FILE_ACTION_ADDED, "a"), (ntf.FILE_ACTION_RENAMED_NEW_NAME, "bc")])
    assert data == bytes.fromhex(
        "10000000" "01000000" "02000000" "6100" "0000"          # NextEntryOffset 16 (14 padded to 4)
        "00000000" "05000000" "04000000" "62006300")            # last entry: NextEntryOffset 0
    assert ntf.unpack_notify_entries(data) == [(1, "a"), (5, "bc")]
    assert ntf.pack_notify_entries([]) == b""


def _mkdir(c: RawClient, tid: int, name: str):
    r, b = create(c, tid, name, 0, options=DIRECTORY, disposition=FILE_CREATE)
    assert r.status == 0, hex(r.status)
    return b.file_id


def _notify_req(fid, flt=NAME, length=1000, tree=False) -> w.ChangeNotifyRequest:
    return w.ChangeNotifyRequest(flags=ntf.SMB2_WATCH_TREE if tree else 0, output_buffer_length=length,
                                 file_id=FileId(*fid), completion_filter=flt)


def _pending(c: RawClient, tid: int, fid, **kw):
    r = c.request(Command.SMB2_CHANGE_NOTIFY, _notify_req(fid, **kw), tree_id=tid, no_wait_final=True)
    assert r.status == STATUS_PENDING and r.header.flags & SMB2_FLAGS_ASYNC_COMMAND and r.header.async_id
    return r


def _entries(r) -> list[tuple[int, str]]:
    return ntf.unpack_notify_entries(bytes(w.ChangeNotifyResponse.unpack(r.raw).output_buffer))


@pytest.fixture
def two(smbd):
    a, ta = client(smbd)
    b, tb = client(smbd)
    yield a, ta, b, tb
    a.close()
    b.close()


def test_smb2_3_3_5_19_pending_then_completed_by_another_connections_create(two):
    a, ta, b, tb = two
    d = _mkdir(a, ta, "w1")
    interim = _pending(a, ta, d)
    assert nothing_arrives(a, 0.3)
    r, f = create(b, tb, "w1\\new.txt", 0, options=NON_DIRECTORY, disposition=FILE_CREATE,
                  access=0x0012019F | 0x00010000)  # GENERIC_RW | DELETE
    assert r.status == 0
    final = recv_one(a)
    assert final.status == 0 and final.header.async_id == interim.header.async_id
    assert final.header.message_id == interim.header.message_id
    assert _entries(final) == [(ntf.FILE_ACTION_ADDED, "new.txt")]
    # delete-on-close of the file: REMOVED, at the last close
    _pending(a, ta, d)
    assert b.request(Command.SMB2_SET_INFO, w.SetInfoRequest(info_type=1, file_info_class=13, buffer=b"\x01",
                                                              file_id=FileId(*f.file_id)), tree_id=tb).status == 0
    assert nothing_arrives(a, 0.3)
    assert close(b, tb, f.file_id) == 0
    assert _entries(recv_one(a)) == [(ntf.FILE_ACTION_REMOVED, "new.txt")]


def test_smb2_3_3_5_16_cancel_completes_with_status_cancelled(two):
    a, ta, _, _ = two
    d = _mkdir(a, ta, "w2")
    interim = _pending(a, ta, d)
    a.send_raw(a.build(Command.SMB2_CANCEL, w.CancelRequest().pack(), tree_id=ta, flags=SMB2_FLAGS_ASYNC_COMMAND,
                       message_id=0, async_id=interim.header.async_id))
    r = recv_one(a)
    assert r.status == STATUS_CANCELLED and r.header.message_id == interim.header.message_id


def test_smb2_3_3_5_16_cancel_that_overtakes_its_request(two):
    """CHANGE_NOTIFY and a CANCEL by MessageId in one write: the CANCEL is seen before the
    request went async; the request still ends CANCELLED (interim first, then final)."""
    a, ta, _, _ = two
    d = _mkdir(a, ta, "w3")
    req = a.build(Command.SMB2_CHANGE_NOTIFY, _notify_req(d).pack(), tree_id=ta)
    mid = a.mid - 1
    cancel = a.build(Command.SMB2_CANCEL, w.CancelRequest().pack(), tree_id=ta, message_id=mid)
    a.send_raw(a.compound([req]))
    a.send_raw(a.compound([cancel]))
    statuses = [recv_one(a).status for _ in range(2)]
    assert statuses == [STATUS_PENDING, STATUS_CANCELLED]


def test_logoff_completes_pending_notify_with_notify_cleanup(two):
    a, ta, _, _ = two
    d = _mkdir(a, ta, "w4")
    interim = _pending(a, ta, d)
    a.send_raw(a.compound([a.build(Command.SMB2_LOGOFF, w.LogoffRequest().pack())]))
    replies = {}
    for _ in range(2):
        r = recv_one(a)
        replies[r.header.command] = r
    assert replies[Command.SMB2_CHANGE_NOTIFY].status == ntf.STATUS_NOTIFY_CLEANUP
    assert replies[Command.SMB2_CHANGE_NOTIFY].header.async_id == interim.header.async_id
    assert replies[Command.SMB2_LOGOFF].status == 0


def test_close_completes_pending_notify_with_notify_cleanup(two):
    a, ta, _, _ = two
    d = _mkdir(a, ta, "w5")
    interim = _pending(a, ta, d)
    a.send_raw(a.compound([a.build(Command.SMB2_CLOSE, w.CloseRequest(flags=0, file_id=FileId(*d)).pack(),
                                   tree_id=ta)]))
    replies = {}
    for _ in range(2):
        r = recv_one(a)
        replies[r.header.command] = r
    n = replies[Command.SMB2_CHANGE_NOTIFY]
    assert n.status == ntf.STATUS_NOTIFY_CLEANUP and n.header.async_id == interim.header.async_id
    assert replies[Command.SMB2_CLOSE].status == 0


def test_changes_between_requests_are_buffered_and_overflow_is_enum_dir(two):
    a, ta, b, tb = two
    d = _mkdir(a, ta, "w6")
    interim = _pending(a, ta, d, length=100)  # the first request sets the watch's buffer size
    a.send_raw(a.build(Command.SMB2_CANCEL, w.CancelRequest().pack(), tree_id=ta, flags=SMB2_FLAGS_ASYNC_COMMAND,
                       message_id=0, async_id=interim.header.async_id))
    assert recv_one(a).status == STATUS_CANCELLED
    for n in ("x1", "x2"):
        assert create(b, tb, f"w6\\{n}", 0, options=NON_DIRECTORY, disposition=FILE_CREATE)[0].status == 0
    r = a.request(Command.SMB2_CHANGE_NOTIFY, _notify_req(d, length=100), tree_id=ta)
    assert r.status == 0 and _entries(r) == [(1, "x1"), (1, "x2")]  # answered at once
    for i in range(10):  # 10 entries of 12 + 2*10 bytes: beyond the 100-byte buffer
        assert create(b, tb, f"w6\\file-{i:05d}", 0, options=NON_DIRECTORY,
                      disposition=FILE_CREATE)[0].status == 0
    r = a.request(Command.SMB2_CHANGE_NOTIFY, _notify_req(d, length=100), tree_id=ta)
    assert r.status == ntf.STATUS_NOTIFY_ENUM_DIR and w.ChangeNotifyResponse.unpack(r.raw).output_buffer == b""


def test_completion_too_big_for_the_request_is_enum_dir(two):
    a, ta, b, tb = two
    d = _mkdir(a, ta, "w7")
    _pending(a, ta, d, length=8)
    assert create(b, tb, "w7\\longer-than-eight", 0, options=NON_DIRECTORY, disposition=FILE_CREATE)[0].status == 0
    r = recv_one(a)
    assert r.status == ntf.STATUS_NOTIFY_ENUM_DIR


def test_watch_tree_and_filter_and_rename(two):
    a, ta, b, tb = two
    d = _mkdir(a, ta, "w8")
    _mkdir(b, tb, "w8\\sub")
    # without WATCH_TREE a change in a subdirectory is not reported; a matching one is
    _pending(a, ta, d, flt=ntf.FILE_NOTIFY_CHANGE_FILE_NAME)
    r, f = create(b, tb, "w8\\sub\\deep", 0, options=NON_DIRECTORY, disposition=FILE_CREATE,
                  access=0x0012019F | 0x00010000)
    assert nothing_arrives(a, 0.3)
    _mkdir(b, tb, "w8\\dir-only")  # a directory: DIR_NAME, not in the filter
    assert nothing_arrives(a, 0.3)
    assert create(b, tb, "w8\\top", 0, options=NON_DIRECTORY, disposition=FILE_CREATE)[0].status == 0
    assert _entries(recv_one(a)) == [(1, "top")]
    # WATCH_TREE on another open: relative names with backslashes; a rename within a directory
    r, d2 = create(a, ta, "w8", 0, options=DIRECTORY, disposition=FILE_OPEN)
    _pending(a, ta, d2.file_id, tree=True)
    info = FileRenameInformation(replace_if_exists=0, root_directory=0,
                                 file_name="w8\\sub\\renamed".encode("utf-16-le"))
    assert b.request(Command.SMB2_SET_INFO, w.SetInfoRequest(info_type=1, file_info_class=10, buffer=info.pack(0),
                                                              file_id=FileId(*f.file_id)), tree_id=tb).status == 0
    assert _entries(recv_one(a)) == [(ntf.FILE_ACTION_RENAMED_OLD_NAME, "sub\\deep"),
                                     (ntf.FILE_ACTION_RENAMED_NEW_NAME, "sub\\renamed")]


def test_request_checks(two):
    a, ta, _, _ = two
    r, f = create(a, ta, "plain.txt", 0, options=NON_DIRECTORY, disposition=FILE_CREATE)
    r = a.request(Command.SMB2_CHANGE_NOTIFY, _notify_req(f.file_id), tree_id=ta)
    assert r.status == STATUS_INVALID_PARAMETER  # not a directory
    d = _mkdir(a, ta, "w9")
    r = a.request(Command.SMB2_CHANGE_NOTIFY, _notify_req(d, length=a.negotiate_response.max_transact_size + 1),
                  tree_id=ta)
    assert r.status == STATUS_INVALID_PARAMETER  # beyond MaxTransactSize


def _rename(c: RawClient, tid: int, fid, new: str) -> int:
    info = FileRenameInformation(replace_if_exists=1, root_directory=0, file_name=new.encode("utf-16-le"))
    return c.request(Command.SMB2_SET_INFO, w.SetInfoRequest(info_type=1, file_info_class=10, buffer=info.pack(0),
                                                              file_id=FileId(*fid)), tree_id=tid).status


def test_filter_and_watch_tree_stay_those_of_the_first_request(two):
    """MS-FSA 2.1.5.10: the open's watch keeps the first request's CompletionFilter and
    WatchTree (smbtorture smb2.notify.rec / mask-change ask again with other values)."""
    a, ta, b, tb = two
    d = _mkdir(a, ta, "wa")
    _mkdir(b, tb, "wa\\sub")
    _pending(a, ta, d, flt=NAME, tree=True)
    assert create(b, tb, "wa\\sub\\one", 0, options=NON_DIRECTORY, disposition=FILE_CREATE)[0].status == 0
    assert _entries(recv_one(a)) == [(ntf.FILE_ACTION_ADDED, "sub\\one")]
    # asked again without WATCH_TREE and for attributes only: still the tree, still names
    _pending(a, ta, d, flt=ntf.FILE_NOTIFY_CHANGE_ATTRIBUTES, tree=False)
    assert create(b, tb, "wa\\sub\\two", 0, options=NON_DIRECTORY, disposition=FILE_CREATE)[0].status == 0
    assert _entries(recv_one(a)) == [(ntf.FILE_ACTION_ADDED, "sub\\two")]


def test_renamed_file_reports_attributes_modified_at_close(two):
    """A file renamed through a handle: FILE_ACTION_MODIFIED / FILE_NOTIFY_CHANGE_ATTRIBUTES
    on its new name when that handle is closed (Windows' behaviour in smbtorture
    smb2.notify.mask-change); nothing while it stays open, nothing for a directory."""
    a, ta, b, tb = two
    d = _mkdir(a, ta, "wb")
    _mkdir(b, tb, "wb\\sub")
    _pending(a, ta, d, flt=ntf.FILE_NOTIFY_CHANGE_ATTRIBUTES, tree=True)
    r, f = create(b, tb, "wb\\sub\\f", 0, options=NON_DIRECTORY, disposition=FILE_CREATE,
                  access=0x0012019F | 0x00010000)
    assert r.status == 0
    assert _rename(b, tb, f.file_id, "wb\\f-r") == 0   # out of the subdirectory
    r, sd = create(b, tb, "wb\\sub\\dir", 0, options=DIRECTORY, disposition=FILE_CREATE,
                   access=0x0012019F | 0x00010000)
    assert _rename(b, tb, sd.file_id, "wb\\sub\\dir-r") == 0  # a directory
    close(b, tb, sd.file_id)
    assert nothing_arrives(a, 0.3)                     # renamed, still open; the directory: nothing
    close(b, tb, f.file_id)
    assert _entries(recv_one(a)) == [(ntf.FILE_ACTION_MODIFIED, "f-r")]
