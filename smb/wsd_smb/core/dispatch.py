"""The dispatch table and the handler interface (see docs/smb-handlers.md).

A handler is a plain function::

    @register(Command.SMB2_READ)
    def smb2_read(ctx: RequestContext, req: ReadRequest) -> Response | AsyncOp:
        ...

It returns a :class:`Response`, raises :class:`~wsd_smb.ntstatus.NtStatusError` (the
core turns it into an SMB2 ERROR response), or returns ``ctx.go_async(...)`` (an
:class:`AsyncOp`) to answer STATUS_PENDING now and complete later.

``blocking=True`` (the default) handlers are run by the driver in a bounded thread pool,
so they may call blocking object-store functions; ``blocking=False`` handlers run on the
event loop (only for handlers that never block).  ``inline_first=True`` blocking handlers
are first tried on the event loop with ``ctx.inline`` set: they must then either finish
without waiting (cached-only object-store calls) or raise ``WouldBlock`` before changing
anything, and the core runs them again in the pool (ServerConfig.inline_metadata).  Requests of one connection are handled
one at a time in arrival order (a request that went async no longer holds the line).

Commands with no registered handler get STATUS_NOT_SUPPORTED.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from ..ntstatus import STATUS_CANCELLED, STATUS_SUCCESS, NtStatusError
from ..wire.base import Structure
from ..wire.header import Smb2Header

if TYPE_CHECKING:  # pragma: no cover
    from .connection import Connection
    from .state import Server, ServerConfig, Session, TreeConnect


@dataclass
class Response:
    """A handler's answer.  ``body`` is the response structure (packed by the core with
    base 64) or already packed bytes.  ``status`` may be a success or warning code
    (STATUS_BUFFER_OVERFLOW with data, STATUS_NOTIFY_ENUM_DIR, ...)."""

    body: Structure | bytes
    status: int = STATUS_SUCCESS


@dataclass
class Handler:
    command: int
    fn: Callable[..., Any]
    blocking: bool = True
    needs_session: bool = True
    needs_tree: bool = True
    inline_first: bool = False


#: The one dispatch table: Command -> Handler.
DISPATCH: dict[int, Handler] = {}


def register(command: int, *, blocking: bool = True, needs_session: bool = True,
             needs_tree: bool = True, inline_first: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator registering a handler for *command* (a later registration replaces an
    earlier one: files.py overrides the core's minimal TREE_CONNECT).

    needs_session: the core rejects requests without a valid session (USER_SESSION_DELETED...).
    needs_tree: the core looks up header.TreeId in Session.TreeConnectTable first
    (STATUS_NETWORK_NAME_DELETED if absent) and passes it as ctx.tree_connect.
    inline_first: a blocking handler that is tried on the event loop first (module docstring).
    """

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        DISPATCH[int(command)] = Handler(int(command), fn, blocking, needs_session, needs_tree, inline_first)
        return fn

    return deco


class AsyncOp:
    """An operation that went async (MS-SMB2 3.3.4.2): the core has sent (or will send)
    an interim STATUS_PENDING response with this AsyncId; :meth:`complete` sends the
    final response.  Thread-safe: complete() may be called from any thread, once.

    on_cancel: called (on the core's thread) when an SMB2 CANCEL targets this operation,
    or its session/connection goes away.  It should arrange for complete() to be called
    (typically ``op.complete(NtStatusError(STATUS_CANCELLED))``).  If on_cancel is None
    the core completes the operation with STATUS_CANCELLED itself.
    """

    def __init__(self, connection: "Connection", header: Smb2Header, async_id: int,
                 on_cancel: Callable[["AsyncOp"], None] | None = None):
        self.connection = connection
        self.header = header
        self.async_id = async_id
        self.message_id = header.message_id
        self.on_cancel = on_cancel
        self.cancelled = False
        self.cancel_reason = ""
        self.done = False
        self._lock = threading.Lock()
        #: filled in by the core: the session/tree the request ran on
        self.session: "Session | None" = None
        self.tree_connect: "TreeConnect | None" = None
        #: the count the request added to its open's channel sequence state (core/replay.py)
        self.counted: Any = None
        self._on_done: list[Callable[[], None]] = []

    def complete(self, result: "Response | NtStatusError") -> bool:
        """Send the final response (or error).  Returns False if already completed."""
        with self._lock:
            if self.done:
                return False
            self.done = True
            hooks, self._on_done = self._on_done, []
        for fn in hooks:
            fn()
        self.connection.async_completed(self, result)
        return True

    def when_done(self, fn: Callable[[], None]) -> None:
        """Call *fn* once the operation completes (at once if it already has)."""
        with self._lock:
            if not self.done:
                self._on_done.append(fn)
                return
        fn()

    def cancel(self, reason: str = "cancel") -> None:
        """Used by the core for SMB2 CANCEL (MS-SMB2 3.3.5.16, reason "cancel") and when
        the operation's session ("session_closed": LOGOFF, failed re-auth, PreviousSessionId)
        or connection ("connection_lost") goes away; ``cancel_reason`` tells on_cancel which
        (CHANGE_NOTIFY answers STATUS_NOTIFY_CLEANUP rather than STATUS_CANCELLED for the latter)."""
        if self.done or self.cancelled:
            return
        self.cancelled = True
        self.cancel_reason = reason
        if self.on_cancel is not None:
            self.on_cancel(self)
        else:
            self.complete(NtStatusError(STATUS_CANCELLED))


@dataclass
class RequestContext:
    """What a handler sees of the server for one request."""

    connection: "Connection"
    server: "Server"
    header: Smb2Header
    now: float  # wall-clock seconds (time.time() scale) of the request
    session: "Session | None" = None
    tree_connect: "TreeConnect | None" = None
    #: set when the request arrived encrypted (TRANSFORM header)
    encrypted: bool = False
    #: scratch for compound processing (FileId of the previous CREATE, etc.)
    chain: Any = None
    #: the attempt on the event loop of an ``inline_first`` handler: finish without
    #: waiting or raise WouldBlock before changing anything
    inline: bool = False
    #: the count the request added to its open's channel sequence state (core/replay.py)
    counted: Any = None
    _async: AsyncOp | None = field(default=None, repr=False)

    @property
    def config(self) -> "ServerConfig":
        return self.server.config

    @property
    def dialect(self) -> int:
        return self.connection.dialect

    def go_async(self, on_cancel: Callable[[AsyncOp], None] | None = None) -> AsyncOp:
        """Make this request async: return the AsyncOp from the handler; the core sends
        the STATUS_PENDING interim response; call op.complete(...) later (any thread)."""
        if self._async is None:
            self._async = self.connection.new_async_op(self, on_cancel)
        else:
            self._async.on_cancel = on_cancel
        return self._async
