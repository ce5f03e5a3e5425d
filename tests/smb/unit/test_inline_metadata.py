"""CREATE and CLOSE tried on the event loop first (ServerConfig.inline_metadata).

An open of an existing file whose path is in the kernel's dentry cache (openat2
RESOLVE_CACHED) and the close of a read-only fd run on the loop; everything that
could wait (a new file, a name in another case, a symlink, a writable fd,
delete-on-close, a lock a worker holds) raises WouldBlock before any change and runs
in the worker threads, with the same result.  Driven by smbprotocol's low-level API."""
from __future__ import annotations

import os
import threading
import time

import pytest
from smbpclient import SmbpClient

from smbprotocol.exceptions import SMBResponseException
from smbprotocol.open import CreateDisposition, CreateOptions, FilePipePrinterAccessMask

from wsd_smb.core.files import state_of
from wsd_smb.store.paths import cached_lookup_ok

READ_ATTRIBUTES = FilePipePrinterAccessMask.FILE_READ_ATTRIBUTES


class Client(SmbpClient):
    default_access = READ_ATTRIBUTES


@pytest.fixture
def share_ok(smbd, tmp_path):
    if not cached_lookup_ok(str(tmp_path / "share")):
        pytest.skip("no openat2 RESOLVE_CACHED here, or the share is not on a local file system")


def _counts(smbd):
    return smbd.call(lambda: (smbd.server.inline_done, smbd.server.inline_would_block))


def test_open_and_close_of_a_cached_file_run_on_the_loop(smbd, share_ok, tmp_path):
    (tmp_path / "share" / "cached.txt").write_bytes(b"hello")
    os.stat(tmp_path / "share" / "cached.txt")  # the dentry is in the cache now
    c = Client(smbd)
    try:
        done0, blocked0 = _counts(smbd)
        for _ in range(5):
            o = c.open("cached.txt")
            assert o.end_of_file == 5
            o.close(get_attributes=True)
        done, blocked = _counts(smbd)
        assert done - done0 == 10 and blocked == blocked0
    finally:
        c.close()


def test_what_could_wait_runs_in_the_pool_with_the_same_result(smbd, share_ok, tmp_path):
    root = tmp_path / "share"
    (root / "Mixed.txt").write_bytes(b"abc")
    os.symlink("Mixed.txt", root / "link.txt")
    c = Client(smbd)
    try:
        done0, blocked0 = _counts(smbd)
        # a new file: creating it is I/O
        o = c.open("new.txt", FilePipePrinterAccessMask.GENERIC_WRITE | FilePipePrinterAccessMask.GENERIC_READ,
                   CreateDisposition.FILE_CREATE)
        o.write(b"written", 0)
        o.close()       # a writable fd: closed in the pool too
        assert (root / "new.txt").read_bytes() == b"written"
        # another case than on disk: the case-insensitive scan reads the directory
        o = c.open("MIXED.TXT")
        assert o.end_of_file == 3
        o.close()       # a read-only fd: this close runs on the loop
        # a symlink on the way
        o = c.open("link.txt")
        assert o.end_of_file == 3
        o.close()
        # delete-on-close
        o = c.open("new.txt", FilePipePrinterAccessMask.DELETE | READ_ATTRIBUTES,
                   options=CreateOptions.FILE_DELETE_ON_CLOSE)
        o.close()
        assert not (root / "new.txt").exists()
        # a missing file: the same status from the pool
        with pytest.raises(SMBResponseException) as e:
            c.open("missing.txt")
        assert e.value.status == 0xC0000034  # STATUS_OBJECT_NAME_NOT_FOUND
        done, blocked = _counts(smbd)
        # would block: CREATE new.txt + its writable CLOSE, MIXED.TXT, link.txt, the
        # delete-on-close CLOSE, missing.txt; on the loop: the read-only closes, the
        # delete-on-close open of an existing cached file
        assert blocked - blocked0 == 6
        assert done - done0 == 3
    finally:
        c.close()


def test_a_lock_held_by_a_worker_sends_the_open_to_the_pool_and_the_loop_keeps_serving(smbd, share_ok,
                                                                                     tmp_path):
    (tmp_path / "share" / "f.txt").write_bytes(b"x")
    os.stat(tmp_path / "share" / "f.txt")
    a, b = Client(smbd), Client(smbd)
    store = state_of(smbd.server).store
    result: dict = {}
    try:
        _, blocked0 = _counts(smbd)
        store.mutex.acquire()  # as a worker in a long object-store call would hold it
        try:
            t = threading.Thread(target=lambda: result.update(o=a.open("f.txt")), daemon=True)
            t.start()
            deadline = time.monotonic() + 10
            while _counts(smbd)[1] == blocked0 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert _counts(smbd)[1] == blocked0 + 1  # the open went to the pool ...
            start = time.monotonic()
            b.conn.echo()                            # ... and the loop still answers others
            assert time.monotonic() - start < 1.0
            assert "o" not in result                 # the open waits for the lock in a worker
        finally:
            store.mutex.release()
        t.join(10)
        assert result["o"].end_of_file == 1
        result["o"].close()
    finally:
        a.close()
        b.close()


def test_inline_metadata_off_sends_everything_to_the_pool(smbd_factory, tmp_path):
    smbd = smbd_factory(inline_metadata=False)
    (tmp_path / "share" / "g.txt").write_bytes(b"y")
    c = Client(smbd)
    try:
        o = c.open("g.txt")
        o.close()
        assert _counts(smbd) == (0, 0)
    finally:
        c.close()
