"""Windows FILETIME (MS-DTYP 2.3.3): 100-ns intervals since 1601-01-01 UTC.

``to_filetime`` takes POSIX nanoseconds (``st_mtime_ns``) and ``from_filetime`` gives
them back, exactly (FILETIME has 100-ns resolution, so the last two digits of the
nanoseconds are dropped on the way in)."""
from __future__ import annotations

#: seconds between 1601-01-01 and 1970-01-01
EPOCH_DELTA_SECONDS = 11644473600
_DELTA_100NS = EPOCH_DELTA_SECONDS * 10_000_000

#: SET_INFO sentinels (MS-FSCC 2.4.7): 0 = leave unchanged, -1 = stop automatic
#: updates, -2 = resume them.  As unsigned 64-bit on the wire:
FILETIME_NO_CHANGE = 0
FILETIME_SUSPEND = 0xFFFFFFFFFFFFFFFF
FILETIME_RESUME = 0xFFFFFFFFFFFFFFFE


def to_filetime(posix_ns: int) -> int:
    """POSIX time in nanoseconds -> FILETIME (clamped at 0 for times before 1601)."""
    ft = posix_ns // 100 + _DELTA_100NS
    return ft if ft > 0 else 0


def from_filetime(ft: int) -> int:
    """FILETIME -> POSIX time in nanoseconds."""
    return (ft - _DELTA_100NS) * 100
