"""Server-side copy FSCTL buffers (MS-SMB2 2.2.31.1, 2.2.31.1.1, 2.2.32.1, 2.2.32.3).

FSCTL_SRV_REQUEST_RESUME_KEY hands out a 24-byte key naming the source open;
FSCTL_SRV_COPYCHUNK / FSCTL_SRV_COPYCHUNK_WRITE carry that key and an array of chunks
(source offset, target offset, length) and are answered with a copy-chunk response.
All little-endian, packed with ``pack(0)`` and parsed with ``unpack(b, 0)`` (``Plain``).
"""
from __future__ import annotations

from .base import U32, U64, Bytes, F, Plain

FSCTL_SRV_REQUEST_RESUME_KEY = 0x00140078
FSCTL_SRV_COPYCHUNK = 0x001440F2
FSCTL_SRV_COPYCHUNK_WRITE = 0x001480F2

RESUME_KEY_SIZE = 24


class SrvRequestResumeKeyResponse(Plain):
    """SRV_REQUEST_RESUME_KEY Response, MS-SMB2 2.2.32.3: ResumeKey (24 bytes), ContextLength
    (unused, 0) and Context (reserved).  Context is sent as 4 zero bytes, the 32-byte reply
    Samba gives and smbtorture's smb2.ioctl parses (it asks for MaxOutputResponse 32)."""

    FIELDS = (
        F("ResumeKey", Bytes(RESUME_KEY_SIZE), b"\0" * RESUME_KEY_SIZE),
        F("ContextLength", U32, 0, reserved=True, ignore=True),  # "unused ... MUST be set to 0"
        F("Context", Bytes(4), b"\0" * 4, reserved=True, ignore=True),
    )


class SrvCopychunkCopy(Plain):
    """SRV_COPYCHUNK_COPY, MS-SMB2 2.2.31.1 (fixed part, 32 bytes): SourceKey, ChunkCount,
    Reserved; ChunkCount SRV_COPYCHUNK entries follow (:func:`unpack_chunks`)."""

    FIELDS = (
        F("SourceKey", Bytes(RESUME_KEY_SIZE), b"\0" * RESUME_KEY_SIZE),
        F("ChunkCount", U32),
        F("Reserved", U32, 0, reserved=True, ignore=True),  # "ignored by the server"
    )


class SrvCopychunk(Plain):
    """SRV_COPYCHUNK, MS-SMB2 2.2.31.1.1 (24 bytes): one range to copy."""

    FIELDS = (
        F("SourceOffset", U64),
        F("TargetOffset", U64),
        F("Length", U32),
        F("Reserved", U32, 0, reserved=True, ignore=True),  # "MUST be ignored by the server"
    )


class SrvCopychunkResponse(Plain):
    """SRV_COPYCHUNK_RESPONSE, MS-SMB2 2.2.32.1 (12 bytes).  With Status
    STATUS_INVALID_PARAMETER the three fields carry the server's limits instead
    (3.3.5.15.6.2): max chunks, max chunk size, max total bytes."""

    FIELDS = (
        F("ChunksWritten", U32),
        F("ChunkBytesWritten", U32),
        F("TotalBytesWritten", U32),
    )


def unpack_chunks(buf: bytes, count: int) -> list[SrvCopychunk] | None:
    """The *count* SRV_COPYCHUNK entries after the fixed part of a SRV_COPYCHUNK_COPY in *buf*,
    or None when *buf* is too short to hold them (3.3.5.15.6: answered with the limits)."""
    start = SrvCopychunkCopy.FIXED_SIZE
    if len(buf) < start + count * SrvCopychunk.FIXED_SIZE:
        return None
    return [SrvCopychunk.unpack(buf, start + i * SrvCopychunk.FIXED_SIZE) for i in range(count)]
