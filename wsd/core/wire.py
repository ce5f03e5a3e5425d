"""Wire structures of the switch's session protocol (what two switches say over a SAN connection).

The WSD documents fix the behaviour (WSD-N1..N4, WSD-D1) but not the bytes;
these layouts are ours, documented in docs/session-protocol.md, little-endian.
"""
from __future__ import annotations

from .structure import Field, Reserved, Structure

__all__ = [
    "NEGOTIATION_MAX", "NegotiateMessage", "NEG_FLAG_RESPONSE", "NEG_FLAG_RDMA_READ", "NEG_FLAG_RDMA_WRITE",
    "ControlHeader", "MSG_DATA", "MSG_RDMA_READ_ADVERT", "MSG_RDMA_READ_DONE", "MSG_RDMA_WRITE_REQUEST",
    "MSG_RDMA_WRITE_ADVERT", "MSG_RDMA_WRITE_DONE", "MSG_CREDIT", "MSG_DISCONNECT", "MSG_NAMES",
    "RdmaAdvert", "RdmaDone", "RdmaWriteRequest",
]

#: WSD-N3: a session-negotiation message is at most 256 bytes.
NEGOTIATION_MAX = 256

NEG_FLAG_RESPONSE = 0x0001    # set in the accepting switch's answer
NEG_FLAG_RDMA_READ = 0x0002   # the sender's NIC can RDMA-read from its peer
NEG_FLAG_RDMA_WRITE = 0x0004  # the sender's NIC can RDMA-write into its peer


class NegotiateMessage(Structure):
    """Session-negotiation message (WSD-N1, N3, N4), 32 bytes, at most 256 on the wire.

    ``posted_receives`` is the number of receive buffers the sender has posted
    for the peer's messages *after* this exchange (the buffer the negotiation
    message itself lands in is reposted and counted); ``receive_size`` is the
    size of each, so every later message on the connection is at most that
    long (WSD-N4).
    """

    FIELDS = (
        Field("signature", "4s", const=b"WSDN"),
        Field("version", "H", const=1),
        Field("flags", "H"),
        Field("posted_receives", "I"),
        Field("receive_size", "I"),
        Reserved("reserved", "16s"),
    )


MSG_DATA = 1
MSG_RDMA_READ_ADVERT = 2
MSG_RDMA_READ_DONE = 3
MSG_RDMA_WRITE_REQUEST = 4
MSG_RDMA_WRITE_ADVERT = 5
MSG_RDMA_WRITE_DONE = 6
MSG_CREDIT = 7
MSG_DISCONNECT = 8
MSG_NAMES = {MSG_DATA: "DATA", MSG_RDMA_READ_ADVERT: "RDMA_READ_ADVERT", MSG_RDMA_READ_DONE: "RDMA_READ_DONE",
             MSG_RDMA_WRITE_REQUEST: "RDMA_WRITE_REQUEST", MSG_RDMA_WRITE_ADVERT: "RDMA_WRITE_ADVERT",
             MSG_RDMA_WRITE_DONE: "RDMA_WRITE_DONE", MSG_CREDIT: "CREDIT", MSG_DISCONNECT: "DISCONNECT"}


class ControlHeader(Structure):
    """Header of every session-protocol control message (WSD-D1), 8 bytes.

    ``credits`` grants the peer that many more sends (receive buffers the
    sender has reposted since its last grant); ``length`` is the payload
    length that follows the header and must match the received byte count.
    """

    FIELDS = (
        Field("type", "B"),
        Reserved("flags", "B"),
        Field("credits", "H"),
        Field("length", "I"),
    )


class RdmaAdvert(Structure):
    """Payload of RDMA_READ_ADVERT / RDMA_WRITE_ADVERT (WSD-D1): a registered region for the peer.

    Followed by ``descriptor_length`` bytes of the provider's RDMA descriptor
    (from ``WSPRegisterRdmaMemory``).  READ_ADVERT: the sender's data, for the
    receiver to RDMA-read; WRITE_ADVERT: the receiver's buffer, for the sender
    to RDMA-write.
    """

    FIELDS = (
        Field("cookie", "I"),
        Field("descriptor_length", "H"),
        Reserved("reserved", "H"),
        Field("length", "Q"),
    )


class RdmaDone(Structure):
    """Payload of RDMA_READ_DONE / RDMA_WRITE_DONE: the transfer ``cookie`` is finished (status 0 or WSA code)."""

    FIELDS = (
        Field("cookie", "I"),
        Field("status", "I"),
        Field("length", "Q"),
    )


class RdmaWriteRequest(Structure):
    """Payload of RDMA_WRITE_REQUEST: the sender has ``length`` bytes and asks for a region to write into."""

    FIELDS = (
        Field("cookie", "I"),
        Reserved("reserved", "I"),
        Field("length", "Q"),
    )
