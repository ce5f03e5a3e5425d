"""Byte-range locks (MS-FSA 2.1.4.10, 2.1.5.8, 2.1.5.9).

Locks belong to an open (SMB2 has no lock key: it is always 0).  Conflict rules, from
MS-FSA 2.1.4.10:

* the {0, 0} range never conflicts, and a lock over {0, 0} overlaps nothing;
* ranges overlap when ``off1 <= last2 and last1 >= off2`` with ``last = off + len - 1``
  (so a zero-length range at X conflicts only with locks strictly containing X - 1 and X);
* an overlapping exclusive lock conflicts with any access by another open, and with a
  new exclusive lock of the same open;
* an overlapping shared lock conflicts with exclusive intent (an exclusive lock request
  or a write), whoever holds it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MAX_U64 = 0xFFFFFFFFFFFFFFFF


@dataclass(eq=False)
class ByteRangeLock:
    """MS-FSA 2.1.1.3 ByteRangeLock: LockOffset, LockLength, IsExclusive, OwnerOpen."""

    owner: Any
    offset: int
    length: int
    exclusive: bool


def range_valid(offset: int, length: int) -> bool:
    """MS-FSA 2.1.5.8: a range reaching past 2**64 - 1 is STATUS_INVALID_LOCK_RANGE."""
    return length == 0 or offset + length - 1 <= MAX_U64


def conflicts(locks: list[ByteRangeLock], offset: int, length: int, exclusive: bool,
              lock_intent: bool, open_: Any) -> bool:
    """MS-FSA 2.1.4.10: does the access conflict with *locks*?"""
    if offset == 0 and length == 0:
        return False
    last1 = offset + length - 1
    for lk in locks:
        if lk.offset == 0 and lk.length == 0:
            continue
        last2 = lk.offset + lk.length - 1
        if offset <= last2 and last1 >= lk.offset:
            if lk.exclusive:
                if lk.owner is not open_:
                    return True
                if lock_intent and exclusive:
                    return True
            elif exclusive:
                return True
    return False


def find_unlock(locks: list[ByteRangeLock], offset: int, length: int, open_: Any) -> ByteRangeLock | None:
    """MS-FSA 2.1.5.9: the lock an unlock removes (an exclusive one is preferred)."""
    found = None
    for lk in locks:
        if lk.offset == offset and lk.length == length and lk.owner is open_:
            found = lk
            if lk.exclusive:
                break
    return found
