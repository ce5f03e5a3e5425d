"""Byte-range locks (MS-FSA 2.1.4.10, 2.1.5.8, 2.1.5.9; MS-SMB2 3.3.5.14)."""
from __future__ import annotations

import threading

import pytest
from conftest import create, status_of

from wsd_smb.store.constants import (
    FILE_DIRECTORY_FILE,
    SMB2_LOCKFLAG_EXCLUSIVE_LOCK as X,
    SMB2_LOCKFLAG_FAIL_IMMEDIATELY as FI,
    SMB2_LOCKFLAG_SHARED_LOCK as S,
    SMB2_LOCKFLAG_UNLOCK as U,
    CreateDisposition as D,
)
from wsd_smb.store.errors import (
    STATUS_CANCELLED,
    STATUS_FILE_LOCK_CONFLICT,
    STATUS_INVALID_LOCK_RANGE,
    STATUS_INVALID_PARAMETER,
    STATUS_LOCK_NOT_GRANTED,
    STATUS_RANGE_NOT_LOCKED,
    STATUS_SUCCESS,
)


@pytest.fixture
def two(store, share):
    a = create(store, share, "f").open
    b = create(store, share, "f", disposition=D.FILE_OPEN).open
    store.write(a, 0, b"0123456789" * 10)
    return a, b


@pytest.mark.parametrize("held, want, same_open, ok", [
    (X, X, False, False),
    (X, S, False, False),
    (S, X, False, False),
    (S, S, False, True),
    (X, X, True, False),   # an open cannot stack two exclusive locks
    (X, S, True, True),    # shared over its own exclusive lock is fine
    (S, X, True, False),
    (S, S, True, True),
])
def test_lock_matrix(store, two, held, want, same_open, ok):
    a, b = two
    store.lock(a, [(10, 10, held | FI)])
    other = a if same_open else b
    if ok:
        assert store.lock(other, [(15, 10, want | FI)]) is None
    else:
        assert status_of(store.lock, other, [(15, 10, want | FI)]) == STATUS_LOCK_NOT_GRANTED


def test_adjacent_ranges_do_not_conflict(store, two):
    a, b = two
    store.lock(a, [(0, 10, X | FI)])
    store.lock(b, [(10, 10, X | FI)])


def test_zero_length_ranges(store, two):
    a, b = two
    store.lock(a, [(0, 0, X | FI)])       # {0,0} overlaps nothing
    store.lock(b, [(0, 5, X | FI)])
    store.lock(a, [(20, 10, X | FI)])
    store.lock(b, [(20, 0, X | FI)])      # zero length at the start of the range: no overlap
    assert status_of(store.lock, b, [(25, 0, X | FI)]) == STATUS_LOCK_NOT_GRANTED  # strictly inside


def test_invalid_range(store, two):
    a, _ = two
    assert status_of(store.lock, a, [(0xFFFFFFFFFFFFFFFF, 2, X | FI)]) == STATUS_INVALID_LOCK_RANGE
    store.lock(a, [(0xFFFFFFFFFFFFFFFF, 1, X | FI)])


def test_bad_flags_and_directory(store, share, two):
    a, _ = two
    assert status_of(store.lock, a, [(0, 1, S | X)]) == STATUS_INVALID_PARAMETER
    assert status_of(store.lock, a, [(0, 1, U | FI)]) == STATUS_INVALID_PARAMETER
    assert status_of(store.lock, a, [(0, 1, 0)]) == STATUS_INVALID_PARAMETER
    assert status_of(store.lock, a, [(0, 1, X | FI), (0, 1, U)]) == STATUS_INVALID_PARAMETER
    # LockCount > 1: every element must fail immediately
    assert status_of(store.lock, a, [(0, 1, S | FI), (5, 1, S)]) == STATUS_INVALID_PARAMETER
    assert status_of(store.lock, a, []) == STATUS_INVALID_PARAMETER
    assert not a.file.locks  # nothing left behind by the failed requests
    d = create(store, share, "d", options=FILE_DIRECTORY_FILE, disposition=D.FILE_CREATE).open
    assert status_of(store.lock, d, [(0, 1, X | FI)]) == STATUS_INVALID_PARAMETER


def test_unlock_rules(store, two):
    a, b = two
    store.lock(a, [(0, 10, X | FI)])
    assert status_of(store.lock, a, [(0, 5, U)]) == STATUS_RANGE_NOT_LOCKED   # exact range only
    assert status_of(store.lock, b, [(0, 10, U)]) == STATUS_RANGE_NOT_LOCKED  # owner only
    store.lock(a, [(0, 10, U)])
    assert status_of(store.lock, a, [(0, 10, U)]) == STATUS_RANGE_NOT_LOCKED
    store.lock(b, [(0, 10, X | FI)])


def test_mixed_requests_follow_element_order(store, two):
    """MS-SMB2 3.3.5.14.1/.2 (smbtorture smb2.lock.multiple-unlock tests 10 and 11)."""
    a, b = two
    store.lock(a, [(0, 10, X | FI)])
    # unlock then lock: the unlock is done, the lock element is invalid
    assert status_of(store.lock, a, [(0, 10, U), (10, 10, X | FI)]) == STATUS_INVALID_PARAMETER
    store.lock(b, [(0, 10, X | FI)])
    store.lock(b, [(0, 10, U)])
    # lock then unlock: the lock is rolled back, the other lock stays
    store.lock(a, [(10, 10, X | FI)])
    assert status_of(store.lock, a, [(0, 10, X | FI), (10, 10, U)]) == STATUS_INVALID_PARAMETER
    store.lock(b, [(0, 10, X | FI)])
    assert status_of(store.lock, b, [(10, 10, X | FI)]) == STATUS_LOCK_NOT_GRANTED
    # unlocks stop at the first missing range
    assert status_of(store.lock, a, [(50, 1, U), (10, 10, U)]) == STATUS_RANGE_NOT_LOCKED
    assert status_of(store.lock, b, [(10, 10, X | FI)]) == STATUS_LOCK_NOT_GRANTED


def test_zero_length_io_ignores_locks(store, two):
    a, b = two
    store.lock(a, [(0, 10, X | FI)])
    assert store.read(b, 5, 0) == b""


def test_multi_element_all_or_nothing(store, two):
    a, b = two
    store.lock(b, [(50, 10, X | FI)])
    assert status_of(store.lock, a, [(0, 10, X | FI), (55, 1, X | FI)]) == STATUS_LOCK_NOT_GRANTED
    store.lock(b, [(0, 10, X | FI)])  # a's first element was rolled back


def test_io_against_locks(store, two):
    a, b = two
    store.lock(a, [(10, 10, X | FI)])
    assert status_of(store.read, b, 15, 2) == STATUS_FILE_LOCK_CONFLICT
    assert status_of(store.write, b, 5, b"x" * 10) == STATUS_FILE_LOCK_CONFLICT
    assert store.read(b, 0, 10) == b"0123456789"
    assert store.read(a, 10, 3) == b"012"       # the owner may read and write
    store.write(a, 10, b"A")
    store.lock(a, [(10, 10, U)])
    store.lock(a, [(30, 10, S | FI)])
    assert store.read(b, 30, 5) == b"01234"      # shared: reads allowed
    assert status_of(store.write, b, 30, b"x") == STATUS_FILE_LOCK_CONFLICT
    assert status_of(store.write, a, 30, b"x") == STATUS_FILE_LOCK_CONFLICT  # even for the owner


def test_blocking_lock_waits_until_unlock(store, two):
    a, b = two
    store.lock(a, [(0, 10, X | FI)])
    done = []
    p = store.lock(b, [(0, 10, X)], on_complete=done.append)
    assert p is not None and not done
    store.lock(a, [(0, 10, U)])
    assert done == [STATUS_SUCCESS]
    assert status_of(store.lock, a, [(0, 10, X | FI)]) == STATUS_LOCK_NOT_GRANTED  # b holds it now


def test_blocking_lock_granted_when_holder_closes(store, two):
    a, b = two
    store.lock(a, [(0, 10, S | FI)])
    done = []
    store.lock(b, [(5, 1, X)], on_complete=done.append)
    store.close(a)
    assert done == [STATUS_SUCCESS]


def test_blocking_lock_cancel_and_close(store, two):
    a, b = two
    store.lock(a, [(0, 10, X | FI)])
    done = []
    p = store.lock(b, [(0, 10, X)], on_complete=done.append)
    assert store.cancel_lock(p)
    assert done == [STATUS_CANCELLED]
    assert not store.cancel_lock(p)
    store.lock(b, [(0, 10, X)], on_complete=done.append)
    store.close(b)
    assert done == [STATUS_CANCELLED, STATUS_RANGE_NOT_LOCKED]
    store.lock(a, [(0, 10, U)])  # nothing is woken any more
    assert len(done) == 2


def test_blocking_lock_without_callback_fails(store, two):
    a, b = two
    store.lock(a, [(0, 10, X | FI)])
    assert status_of(store.lock, b, [(0, 10, X)]) == STATUS_LOCK_NOT_GRANTED


def test_waiter_woken_from_another_thread(store, two):
    a, b = two
    store.lock(a, [(0, 10, X | FI)])
    ev = threading.Event()
    got = []

    def cb(status):
        got.append(status)
        ev.set()

    store.lock(b, [(0, 10, X)], on_complete=cb)
    t = threading.Thread(target=store.lock, args=(a, [(0, 10, U)]))
    t.start()
    t.join(10)
    assert ev.wait(10) and got == [STATUS_SUCCESS]
