"""Provider-side WSD mechanics shared by SAN providers.

Every SAN provider keeps a socket table, records network events and signals
the switch's event objects, and mediates connection requests the same way
(WSD-A3..A8).  :class:`SanProviderBase` does that once; a provider supplies
the fabric-specific hooks:

``_new_socket_state(sid)``
    a :class:`SanSocketState` (or subclass) for a new descriptor;
``_refuse_request(listener, request)``
    tell the requesting peer "refused" (called with the lock held);
``_accept_request(listener, request)``
    create the accepting socket's state (lock held) and return it;
``_complete_accept(listener, conn, request)``
    tell the peer "accepted" (after ``WPUCreateSocketHandle``, lock not held);
``_request_gone(request)``
    optional: True if the requester vanished while it was queued;
``_events_reported(conn, network_events)``
    optional: see what ``WSPEnumNetworkEvents`` reports.

Requests are any object with ``caller`` (address) and ``caller_data``.
"""
from __future__ import annotations

import collections
import itertools
import threading
from typing import Any

from . import errors
from .spi import CF_ACCEPT, FD_ACCEPT, NetworkEvents, ServiceProvider

__all__ = ["SanSocketState", "SanProviderBase"]


class SanSocketState:
    """What every SAN provider keeps per socket."""

    __slots__ = ("id", "switch_handle", "event", "mask", "events", "errors", "local", "peer", "listening",
                 "queue", "backlog", "state", "__weakref__")

    def __init__(self, sid: int):
        self.id = sid
        self.switch_handle = None
        self.event = None
        self.mask = 0
        self.events = 0
        self.errors: dict[int, int] = {}
        self.local = ("0.0.0.0", 0)
        self.peer = None
        self.listening = False
        self.queue: collections.deque = collections.deque()   # connection requests (listening sockets)
        self.backlog = 0
        self.state = "new"


class SanProviderBase(ServiceProvider):
    """Socket table, network events and accept mediation for SAN providers."""

    is_san = True

    def __init__(self, **options: Any):
        super().__init__(**options)
        self._lock = threading.RLock()
        self._conns: dict[int, SanSocketState] = {}
        self._ids = itertools.count(1)

    # -- hooks ---------------------------------------------------------------------------
    def _new_socket_state(self, sid: int) -> SanSocketState:
        return SanSocketState(sid)

    def _check_started(self) -> None:
        """Raise WSAENETDOWN if the provider cannot create sockets now."""

    def _refuse_request(self, listener: SanSocketState, request: Any) -> None:
        raise NotImplementedError

    def _accept_request(self, listener: SanSocketState, request: Any) -> SanSocketState:
        raise NotImplementedError

    def _complete_accept(self, listener: SanSocketState, conn: SanSocketState, request: Any) -> None:
        raise NotImplementedError

    def _request_gone(self, request: Any) -> bool:
        return False

    def _events_reported(self, c: SanSocketState, ne: NetworkEvents) -> None:
        """Called (lock held) with what WSPEnumNetworkEvents is about to report."""

    # -- the socket table ------------------------------------------------------------------
    def _get(self, s: int) -> SanSocketState:
        c = self._conns.get(s)
        if c is None:
            raise errors.WSAENOTSOCK(f"{self.name} provider has no socket {s}")
        return c

    def _add_socket(self) -> SanSocketState:
        """A new socket state in the table (lock held by the caller or not: it takes it)."""
        with self._lock:
            c = self._new_socket_state(next(self._ids))
            self._conns[c.id] = c
        return c

    def WSPSocket(self, family=None, type=None, protocol=0) -> int:
        self._check_started()
        c = self._add_socket()
        c.switch_handle = self.upcalls.WPUCreateSocketHandle(self.name, c.id)
        return c.id

    def WSPSwitchSocket(self, s):
        return self._get(s).switch_handle

    def WSPGetSockName(self, s):
        return self._get(s).local

    def WSPGetPeerName(self, s):
        c = self._get(s)
        if c.peer is None:
            raise errors.WSAENOTCONN()
        return c.peer

    # -- network events ----------------------------------------------------------------------
    def WSPEventSelect(self, s, event, network_events) -> None:
        c = self._get(s)
        with self._lock:
            c.event, c.mask = event, network_events
            if c.events & network_events and event is not None:
                self.upcalls.SetEvent(event)

    def _signal(self, c: SanSocketState, bit: int, error: int = 0) -> None:
        """Record a network event and signal the registered event object (WSD-A2)."""
        c.events |= bit
        if error:
            c.errors[bit] = error
        if c.event is not None and c.mask & bit:
            self.upcalls.SetEvent(c.event)

    def WSPEnumNetworkEvents(self, s) -> NetworkEvents:
        c = self._get(s)
        with self._lock:
            ne = NetworkEvents(c.events & (c.mask or ~0), dict(c.errors))
            self._events_reported(c, ne)
            c.events = 0
            c.errors = {}
            # a listening socket with queued requests keeps FD_ACCEPT until they are taken
            if c.listening and c.queue:
                c.events |= FD_ACCEPT
            elif c.event is not None:
                self.upcalls.ResetEvent(c.event)
        return ne

    # -- connection requests -------------------------------------------------------------------
    def _queue_request(self, listener: SanSocketState, request: Any) -> None:
        """A connection request arrived for ``listener`` (lock held): queue it and signal FD_ACCEPT."""
        listener.queue.append(request)
        self._signal(listener, FD_ACCEPT)

    def WSPAccept(self, s, condition, callback_data) -> int:
        lst = self._get(s)
        with self._lock:
            if not lst.listening:
                raise errors.WSAEINVAL("socket is not listening")
            while lst.queue and self._request_gone(lst.queue[0]):
                lst.queue.popleft()
            if not lst.queue:
                raise errors.WSAEWOULDBLOCK()
            req = lst.queue.popleft()
        # WSD-A3: the condition function runs on this thread, before WSPAccept returns
        verdict = CF_ACCEPT
        if condition is not None:
            verdict = condition(req.caller, req.caller_data or None, lst.local, None, callback_data)
        with self._lock:
            # WSD-A6: reset the event; signal again at once if more requests are queued
            if lst.event is not None:
                self.upcalls.ResetEvent(lst.event)
                if lst.queue:
                    self._signal(lst, FD_ACCEPT)
            if self._request_gone(req):
                raise errors.WSAEWOULDBLOCK("the connecting peer went away before the accept")
            if verdict != CF_ACCEPT:
                # WSD-A7/A8: tell the peer only now, then fail WSPAccept
                self._refuse_request(lst, req)
                raise errors.WSAECONNREFUSED("rejected by the condition function")
            # WSD-A5: internal state for the accepting socket ...
            c = self._accept_request(lst, req)
        # ... the switch's descriptor for it, stored; then the peer learns "accepted" (WSD-A8)
        c.switch_handle = self.upcalls.WPUCreateSocketHandle(self.name, c.id)
        self._complete_accept(lst, c, req)
        return c.id
