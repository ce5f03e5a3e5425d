"""Resilient handles: the FSCTL_LMR_REQUEST_RESILIENCY input buffer (MS-SMB2 2.2.31.3).

The server side is MS-SMB2 3.3.5.15.9 (core/files.py ``_request_resiliency``); the
response carries no output buffer.  Little-endian, packed with ``pack(0)`` and parsed
with ``unpack(b, 0)`` (``Plain``).
"""
from __future__ import annotations

from .base import U32, F, Plain

FSCTL_LMR_REQUEST_RESILIENCY = 0x001401D4


class NetworkResiliencyRequest(Plain):
    """NETWORK_RESILIENCY_REQUEST, MS-SMB2 2.2.31.3 (8 bytes): Timeout, the time in
    milliseconds the server keeps the open after a disconnect; Reserved ("the server
    MUST ignore it on receipt")."""

    FIELDS = (
        F("Timeout", U32),
        F("Reserved", U32, 0, reserved=True, ignore=True),
    )


__all__ = ["FSCTL_LMR_REQUEST_RESILIENCY", "NetworkResiliencyRequest"]
