"""The service-provider interface (SPI) between the switch and its providers.

Modelled on the Windows Sockets Direct SAN service-provider SPI: a provider
implements the ``WSP*`` functions below; the switch gives it an upcall table
(:class:`Upcalls`: ``WPUCreateSocketHandle``, ``SetEvent``, ``ResetEvent``...)
at ``WSPStartup``.  Descriptors are small integers: the provider's own ones are
passed *to* the provider, the switch's ones (from ``WPUCreateSocketHandle``)
are passed *to* the switch (WSD-A5).

Two data-transfer styles share the interface:

* SAN providers (``is_san = True``) are overlapped: ``WSPSend``/``WSPRecv``/
  ``WSPRdmaRead``/``WSPRdmaWrite`` take an :class:`~wsd.events.Overlapped`
  and report completion on its :class:`~wsd.events.CompletionQueue`.  Receive
  buffers are posted before data arrives; a message lands in exactly one
  posted buffer.
* The TCP/IP provider (``is_san = False``) is the non-SAN path: its
  ``WSPSend``/``WSPRecv`` are called without an overlapped and behave like
  non-blocking kernel sockets (return a count or raise ``WSAEWOULDBLOCK``);
  ``WSPGetReadyFd`` gives the fd to wait on.

Providers are found through the ``wsd.providers`` entry-point group
(:mod:`wsd.registry`).
"""
from __future__ import annotations

import abc
import socket as _socket
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from .events import CompletionQueue, EventObject, Overlapped

__all__ = [
    "FD_READ", "FD_WRITE", "FD_OOB", "FD_ACCEPT", "FD_CONNECT", "FD_CLOSE", "FD_NAMES",
    "CF_ACCEPT", "CF_REJECT", "CF_DEFER",
    "MEM_READ", "MEM_WRITE", "MEM_READWRITE",
    "Address", "NetworkEvents", "Availability", "Upcalls", "ConditionFunction",
    "ServiceProvider", "ProviderCapabilities", "RegisteredMemory",
    "Overlapped", "CompletionQueue", "EventObject", "fd_names",
]

# Network event bits (winsock2.h values).
FD_READ = 0x01
FD_WRITE = 0x02
FD_OOB = 0x04
FD_ACCEPT = 0x08
FD_CONNECT = 0x10
FD_CLOSE = 0x20
FD_NAMES = {FD_READ: "FD_READ", FD_WRITE: "FD_WRITE", FD_OOB: "FD_OOB", FD_ACCEPT: "FD_ACCEPT",
            FD_CONNECT: "FD_CONNECT", FD_CLOSE: "FD_CLOSE"}

# Condition-function results (winsock2.h values).
CF_ACCEPT = 0x0000
CF_REJECT = 0x0001
CF_DEFER = 0x0002

# Memory registration access (ws2san.h values).
MEM_READ = 1
MEM_WRITE = 2
MEM_READWRITE = 3

Address = tuple  # (host: str, port: int) as for Python sockets


def fd_names(bits: int) -> str:
    return "|".join(n for b, n in FD_NAMES.items() if bits & b) or "0"


@dataclass(slots=True)
class NetworkEvents:
    """``WSANETWORKEVENTS``: which events occurred, and an error code per event bit."""

    network_events: int = 0
    error_codes: dict[int, int] = field(default_factory=dict)

    def error(self, bit: int) -> int:
        return self.error_codes.get(bit, 0)


@dataclass(slots=True, frozen=True)
class Availability:
    ok: bool
    reason: str = ""


@dataclass(slots=True, frozen=True)
class ProviderCapabilities:
    """What a SAN provider's NIC can do; exchanged in session negotiation where it matters."""

    rdma_read: bool = True        # can this side RDMA-read from the peer?
    rdma_write: bool = True
    flow_control: bool = False     # does the NIC hold sends until a receive is posted?
    max_message: int = 1 << 20     # largest single send the NIC accepts
    # where inline messages are cheaper than RDMA on this fabric (shared memory: "RDMA" is more
    # copies), the provider may ask for bigger receive buffers and a higher RDMA threshold
    receive_size: int | None = None
    rdma_threshold: int | None = None


@dataclass(slots=True)
class RegisteredMemory:
    """A region registered with ``WSPRegisterMemory``: the buffer and the provider's handle."""

    view: memoryview
    handle: Any


# (caller_id, caller_data, callee_id, callee_data, callback_data) -> CF_ACCEPT | CF_REJECT
ConditionFunction = Callable[[Address, bytes | None, Address, bytes | None, Any], int]


class Upcalls(Protocol):
    """The switch's upcall table handed to ``WSPStartup`` (the WPU functions)."""

    def WPUCreateSocketHandle(self, provider_name: str, provider_socket: int) -> int: ...
    def WPUCloseSocketHandle(self, switch_socket: int) -> None: ...
    def SetEvent(self, event: EventObject) -> None: ...
    def ResetEvent(self, event: EventObject) -> None: ...


class ServiceProvider(abc.ABC):
    """Base class of every provider. Subclasses are registered in ``wsd.providers``."""

    name: str = "?"
    is_san: bool = True

    def __init__(self, **options: Any):
        self.options = options
        self.upcalls: Upcalls | None = None
        self.capabilities = ProviderCapabilities()

    # -- life cycle ---------------------------------------------------------
    def availability(self) -> Availability:
        """Can this provider run here? (e.g. the verbs provider without an RDMA device: no, with a reason)."""
        return Availability(True)

    def WSPStartup(self, upcalls: Upcalls) -> None:
        self.upcalls = upcalls

    def WSPCleanup(self) -> None:
        """Release everything (threads, endpoints)."""

    # -- sockets --------------------------------------------------------------
    @abc.abstractmethod
    def WSPSocket(self, family: int = _socket.AF_INET, type: int = _socket.SOCK_STREAM, protocol: int = 0) -> int: ...

    @abc.abstractmethod
    def WSPBind(self, s: int, addr: Address) -> None: ...

    @abc.abstractmethod
    def WSPGetSockName(self, s: int) -> Address: ...

    def WSPGetPeerName(self, s: int) -> Address:
        raise NotImplementedError

    @abc.abstractmethod
    def WSPListen(self, s: int, backlog: int) -> None: ...

    @abc.abstractmethod
    def WSPEventSelect(self, s: int, event: EventObject | None, network_events: int) -> None:
        """Signal ``event`` (through the ``SetEvent`` upcall) when any of ``network_events`` occurs."""

    @abc.abstractmethod
    def WSPEnumNetworkEvents(self, s: int) -> NetworkEvents:
        """Report and clear the recorded network events of ``s``."""

    @abc.abstractmethod
    def WSPAccept(self, s: int, condition: ConditionFunction | None, callback_data: Any) -> int:
        """Take the next connection request of listening socket ``s``.

        SAN providers call ``condition`` on the calling thread before returning
        (WSD-A3); on ``CF_ACCEPT`` they call ``WPUCreateSocketHandle``, call
        ``ResetEvent`` on the listening socket's event and return their own
        descriptor (WSD-A5, A6); on ``CF_REJECT`` they raise ``WSAECONNREFUSED``
        (WSD-A7).  The peer learns the outcome only after the condition function
        returned (WSD-A8).  ``WSAEWOULDBLOCK`` when nothing is pending.
        """

    @abc.abstractmethod
    def WSPConnect(self, s: int, addr: Address, caller_data: bytes | None = None) -> None:
        """Start connecting; SAN providers raise ``WSAEWOULDBLOCK`` and report ``FD_CONNECT`` later."""

    @abc.abstractmethod
    def WSPCloseSocket(self, s: int) -> None: ...

    def WSPShutdown(self, s: int, how: int) -> None:
        raise NotImplementedError

    def WSPSwitchSocket(self, s: int) -> int | None:
        """The switch descriptor stored for ``s`` (from ``WPUCreateSocketHandle``), if any."""
        return None

    # -- data (SAN: overlapped; TCP: non-blocking stream) ----------------------
    @abc.abstractmethod
    def WSPSend(self, s: int, buffers: list, overlapped: Overlapped | None = None) -> int | None: ...

    @abc.abstractmethod
    def WSPRecv(self, s: int, buffers: list, overlapped: Overlapped | None = None) -> int | None: ...

    def WSPGetReadyFd(self, s: int) -> int:
        """Non-SAN providers: the fd that becomes readable/writable for ``s``."""
        raise NotImplementedError

    # -- memory and RDMA (SAN providers) -----------------------------------------
    def WSPRegisterMemory(self, s: int, buffer, flags: int = MEM_READWRITE) -> Any:
        """Register a buffer for use with ``WSPSend``/``WSPRecv``; returns a handle."""
        raise NotImplementedError

    def WSPDeregisterMemory(self, s: int, handle: Any) -> None:
        raise NotImplementedError

    def WSPRegisterRdmaMemory(self, s: int, buffer, flags: int = MEM_READ) -> bytes:
        """Register a buffer for remote access; returns the RDMA descriptor to give the peer.

        Raises ``WSAENOBUFS`` if the memory cannot be registered.
        """
        raise NotImplementedError

    def WSPDeregisterRdmaMemory(self, s: int, descriptor: bytes) -> None:
        raise NotImplementedError

    def WSPRdmaRead(self, s: int, local: list, remote: bytes, offset: int, overlapped: Overlapped) -> None:
        """Read ``sum(len(b) for b in local)`` bytes from the peer's registered region ``remote``."""
        raise NotImplementedError

    def WSPRdmaWrite(self, s: int, local: list, remote: bytes, offset: int, overlapped: Overlapped) -> None:
        """Write ``local`` into the peer's registered region ``remote`` at ``offset``."""
        raise NotImplementedError
