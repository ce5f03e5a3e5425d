"""Buffer types shared by the object store and the message assembly."""
from __future__ import annotations


class HeadroomBuffer(bytearray):
    """A payload buffer with ``headroom`` spare bytes in front of the payload, which starts
    at ``headroom`` and runs to the end.  A payload read this way (a READ response's data,
    ``memoryview(buf)[buf.headroom:]``) lets the message assembly write the SMB2 header and
    the response's fixed part into the headroom instead of copying the payload."""

    __slots__ = ("headroom",)

    def __init__(self, headroom: int, size: int) -> None:
        super().__init__(headroom + size)
        self.headroom = headroom
