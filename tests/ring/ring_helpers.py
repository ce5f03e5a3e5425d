"""Message helpers for the ring tests: sequence numbers and checksums."""

from __future__ import annotations

import random
import struct
import zlib

MSG_HDR = struct.Struct("<QII")  # seq, payload length, crc32(payload)


def make_msg(seq: int, size: int, rng: random.Random | None = None) -> bytes:
    """A message of exactly max(size, 16) bytes carrying seq and a checksum."""
    n = max(size - MSG_HDR.size, 0)
    payload = (rng or random.Random(seq)).randbytes(n)
    return MSG_HDR.pack(seq, n, zlib.crc32(payload)) + payload


def check_msg(data: bytes | memoryview, want_seq: int) -> None:
    seq, n, crc = MSG_HDR.unpack_from(data)
    payload = bytes(data[MSG_HDR.size:])
    assert seq == want_seq, f"got message {seq}, expected {want_seq}"
    assert n == len(payload), f"message {seq}: length {len(payload)}, header says {n}"
    assert zlib.crc32(payload) == crc, f"message {seq}: checksum mismatch (torn or corrupt)"
