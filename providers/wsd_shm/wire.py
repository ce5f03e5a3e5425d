"""Wire structures of the ``shm`` provider (docs/shm.md).

They never leave the host: the connection request and reply travel over a
Unix ``SOCK_SEQPACKET`` rendezvous socket, the RDMA descriptor travels inside
the switch's session messages (WSD-D1, ``RDMA_READ_ADVERT`` /
``RDMA_WRITE_ADVERT``), and the region header sits at offset 0 of every
registered-memory segment.  The WSD documents fix the behaviour (accept /
reject, WSD-A5..A8; registered memory, ``WSPRegisterRdmaMemory``) but not these
bytes; the layouts are ours, little-endian, with reserved fields checked.
"""
from __future__ import annotations

from wsd.core.structure import Field, MalformedStructure, Reserved, Structure

__all__ = [
    "ConnectRequest", "ConnectReply", "RdmaDescriptor", "RegionHeader", "NAME_LEN", "HOST_LEN",
    "MAX_CALLER_DATA", "text", "padded", "MalformedStructure",
]

NAME_LEN = 48          # POSIX shm names: "wsd-shm-<pid>-<nic>-..." NUL-padded
HOST_LEN = 46          # INET6_ADDRSTRLEN
MAX_CALLER_DATA = 1024


def padded(s: str, size: int) -> bytes:
    b = s.encode("ascii")
    if len(b) > size:
        raise ValueError(f"{s!r} longer than {size} bytes")
    return b + b"\0" * (size - len(b))


def text(b: bytes) -> str:
    """A NUL-padded ASCII field: no byte after the first NUL may be non-zero."""
    s, _, rest = b.partition(b"\0")
    if rest.strip(b"\0"):
        raise MalformedStructure("text field has bytes after its terminator")
    try:
        return s.decode("ascii")
    except UnicodeDecodeError:
        raise MalformedStructure("text field is not ASCII") from None


class ConnectRequest(Structure):
    """Connection request (connector -> listener), 240 bytes + ``caller_data_length`` bytes.

    Sent as one SEQPACKET message on a fresh connection to the listener's
    rendezvous socket, with four eventfds in ``SCM_RIGHTS`` (c2a readable,
    c2a writable, a2c readable, a2c writable).  The connector created both
    rings (``c2a_name``: connector -> acceptor, ``a2c_name``: back) and
    unlinks their names once the reply arrives (the acceptor has mapped them
    by then).  The answer comes only after the listening application's
    condition function ran (WSD-A8).
    """

    FIELDS = (
        Field("signature", "4s", const=b"WSHQ"),
        Field("version", "H", const=1),
        Reserved("reserved1", "H"),
        Field("connector_pid", "I"),
        Reserved("reserved2", "I"),
        Field("connector_socket", "Q"),
        Field("ring_capacity", "Q"),
        Field("listen_host", f"{HOST_LEN}s", default=b"\0" * HOST_LEN),
        Field("listen_port", "H"),
        Field("source_host", f"{HOST_LEN}s", default=b"\0" * HOST_LEN),
        Field("source_port", "H"),
        Field("c2a_name", f"{NAME_LEN}s", default=b"\0" * NAME_LEN),
        Field("a2c_name", f"{NAME_LEN}s", default=b"\0" * NAME_LEN),
        Field("caller_data_length", "H"),
        Reserved("reserved3", "14s"),
    )


class ConnectReply(Structure):
    """Connection reply (listener side -> connector), 88 bytes.

    ``status`` 0: accepted, the rings are mapped and the SEQPACKET connection
    stays open as the connection's liveness channel (end of file = the peer
    closed its socket or died).  Otherwise a WSA code (``WSAECONNREFUSED``) and
    the listener side closes the connection after sending it.
    """

    FIELDS = (
        Field("signature", "4s", const=b"WSHP"),
        Field("version", "H", const=1),
        Reserved("reserved1", "H"),
        Field("status", "I"),
        Field("acceptor_pid", "I"),
        Field("acceptor_socket", "Q"),
        Field("local_host", f"{HOST_LEN}s", default=b"\0" * HOST_LEN),
        Field("local_port", "H"),
        Reserved("reserved2", "16s"),
    )


class RdmaDescriptor(Structure):
    """The RDMA descriptor ``WSPRegisterRdmaMemory`` returns, 76 bytes.

    Names the owner's shm segment; ``key`` must equal the key in the
    segment's :class:`RegionHeader` (a deregistered or reused region has
    another key), ``length`` is the registered length and ``access`` the
    ``MEM_READ``/``MEM_WRITE`` bits.
    """

    FIELDS = (
        Field("signature", "4s", const=b"WSHD"),
        Field("version", "H", const=1),
        Field("access", "H"),
        Field("key", "Q"),
        Field("length", "Q"),
        Field("segment", f"{NAME_LEN}s", default=b"\0" * NAME_LEN),
        Reserved("reserved", "4s"),
    )


class RegionHeader(Structure):
    """Header at offset 0 of a registered-memory segment, 64 bytes; the data follows.

    ``key`` 0 means "not registered": the owner clears it before the region
    goes back to its pool, so a stale descriptor's access fails with
    ``WSAEACCES``.  The owner writes ``key`` last when registering.
    """

    FIELDS = (
        Field("signature", "4s", const=b"WSHR"),
        Field("version", "H", const=1),
        Field("access", "H"),
        Field("key", "Q"),
        Field("length", "Q"),
        Field("capacity", "Q"),
        Field("owner_pid", "I"),
        Reserved("reserved", "28s"),
    )
