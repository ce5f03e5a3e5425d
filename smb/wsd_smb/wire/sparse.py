"""Sparse-file FSCTL buffers (MS-FSCC 2.3.51/2.3.52 FSCTL_QUERY_ALLOCATED_RANGES,
2.3.64 FSCTL_SET_SPARSE, 2.3.67 FSCTL_SET_ZERO_DATA; other editions number them
differently -- MS-FSA 2.1.5.10.38/.39 cite FILE_SET_SPARSE_BUFFER as 2.3.83 and
FILE_ZERO_DATA_INFORMATION as 2.3.89 -- so the names are what to search for).

All three carry fixed little-endian structures with no header; offsets and lengths are
signed 64-bit integers (LARGE_INTEGER) on the wire, parsed signed so that a negative
value (MS-FSA: "less than 0" -> STATUS_INVALID_PARAMETER) is seen as such.  Packed with
``pack(0)``, parsed with ``unpack(b, 0)`` (``Plain``).
"""
from __future__ import annotations

from .base import U8, F, Plain

#: MS-FSCC 2.3 control codes
FSCTL_SET_SPARSE = 0x000900C4
FSCTL_SET_ZERO_DATA = 0x000980C8
FSCTL_QUERY_ALLOCATED_RANGES = 0x000940CF

#: signed 64-bit (LARGE_INTEGER)
I64 = "q"


class FileSetSparseBuffer(Plain):
    """FILE_SET_SPARSE_BUFFER, MS-FSCC 2.3.64 (1 byte): SetSparse, a BOOLEAN -- nonzero sets
    the sparse state, zero clears it.  The buffer is optional: FSCTL_SET_SPARSE without
    input means SetSparse TRUE (MS-FSA 2.1.5.10.38); bytes beyond the first are ignored."""

    FIELDS = (
        F("SetSparse", U8, 1),
    )


class FileAllocatedRangeBuffer(Plain):
    """FILE_ALLOCATED_RANGE_BUFFER, MS-FSCC 2.3.52 (16 bytes): the input of
    FSCTL_QUERY_ALLOCATED_RANGES (the range to query, MS-FSCC 2.3.51) and each element of
    its output (an allocated range)."""

    FIELDS = (
        F("FileOffset", I64),
        F("Length", I64),
    )


class FileZeroDataInformation(Plain):
    """FILE_ZERO_DATA_INFORMATION, MS-FSCC 2.3.67 (16 bytes): the byte range
    [FileOffset, BeyondFinalZero) FSCTL_SET_ZERO_DATA zeroes."""

    FIELDS = (
        F("FileOffset", I64),
        F("BeyondFinalZero", I64),
    )


def pack_ranges(ranges: list[tuple[int, int]]) -> bytes:
    """The FSCTL_QUERY_ALLOCATED_RANGES reply (MS-FSCC 2.3.52): the array of
    FILE_ALLOCATED_RANGE_BUFFER elements, one per (offset, length)."""
    return b"".join(FileAllocatedRangeBuffer(file_offset=o, length=n).pack(0) for o, n in ranges)
