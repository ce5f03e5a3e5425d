"""The vocabulary of the session protocol's sans-IO core (core/session.py): its
configuration, the actions it hands the driver and the events it reports, and the
send operations it queues.  The driver (``wsd.switch``) reads these; the table of
what the driver does with each action is in core/session.py's docstring."""
from __future__ import annotations

import enum
from dataclasses import dataclass

from wsd_ring import record_size

from .. import errors
from .wire import NEGOTIATION_MAX

MIN_RECEIVE_SIZE = 64


class Role(enum.Enum):
    CONNECTOR = "connector"
    ACCEPTOR = "acceptor"


class State(enum.Enum):
    IDLE = "idle"
    NEGOTIATING = "negotiating"
    CONNECTED = "connected"
    CLOSED = "closed"


@dataclass
class SessionConfig:
    recv_count: int = 32               # receive buffers posted per connection
    recv_size: int = 16384             # size of each (every message fits: WSD-N4)
    send_count: int = 32               # registered send buffers per connection
    negotiation_timeout: float = 5.0   # seconds to complete WSD-N1..N4
    rdma_threshold: int = 65536        # sends this large or larger go by RDMA
    zcopy_threshold: int = 1 << 20     # RDMA sends smaller than this are copied to a bounce buffer first,
                                       # so the application's send returns once the transfer is announced
                                       # (pipelining); larger ones use the application's buffer (zero copy)
    max_rdma_length: int = 1 << 30     # largest single RDMA transfer accepted from a peer
    rdma_timeout: float = 30.0         # an RDMA transfer must finish within this
    can_rdma_read: bool = True         # from the provider's capabilities
    can_rdma_write: bool = True

    def validate(self) -> None:
        if self.recv_count < 2 or self.send_count < 2:
            raise errors.WSAEINVAL("recv_count and send_count must be at least 2")
        if self.recv_size < max(MIN_RECEIVE_SIZE, NEGOTIATION_MAX):
            raise errors.WSAEINVAL(f"recv_size must be at least {NEGOTIATION_MAX}")


def recv_ring_capacity(config: "SessionConfig") -> int:
    """Ring bytes for a connection's receive ring: every slot posted at once plus
    one span's worth of slack for the PAD at the end of a lap, as a power of two."""
    need = (config.recv_count + 2) * record_size(config.recv_size)
    return max(4096, 1 << (need - 1).bit_length())


# --- actions -------------------------------------------------------------------
@dataclass(slots=True)
class PostRecv:
    index: int


@dataclass(slots=True)
class PostSend:
    index: int
    length: int
    kind: int


@dataclass(slots=True)
class RegisterRdma:
    cookie: int
    view: memoryview
    flags: int


@dataclass(slots=True)
class DeregisterRdma:
    descriptor: bytes


@dataclass(slots=True)
class RdmaRead:
    cookie: int
    target: memoryview
    descriptor: bytes


@dataclass(slots=True)
class RdmaWrite:
    cookie: int
    source: memoryview
    descriptor: bytes


@dataclass(slots=True)
class Negotiated:
    peer_posted: int
    peer_receive_size: int
    peer_flags: int


@dataclass(slots=True)
class SendDone:
    op: "SendOp"


@dataclass(slots=True)
class Closed:
    error: int
    reason: str


@dataclass(slots=True)
class Trace:
    step: str
    fields: dict


@dataclass(eq=False)
class SendOp:
    """One application send, in order with the others."""

    data: memoryview
    mode: str                      # "inline" | "rdma_read" | "rdma_write"
    offset: int = 0
    cookie: int = 0
    state: str = "new"
    descriptor: bytes | None = None
    done: bool = False
    error: int = 0
    deadline: float | None = None
    bounced: bool = False

    def __len__(self) -> int:
        return len(self.data)
