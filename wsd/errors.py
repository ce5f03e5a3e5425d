"""Winsock error codes as exceptions.

Every error the switch or a provider reports is an exception carrying its WSA
error code (``err.wsa_code``), with one class per code registered in
:data:`REGISTRY` so that a code read from anywhere (a provider's completion, a
network event's ``iErrorCode``) turns back into the same class with
:func:`from_code`.  Values are the Winsock ones (MS-ERREF / winerror.h).

The classes also derive from the matching Python ``OSError`` subclass where
one exists, so ``except ConnectionRefusedError`` works for users of the
socket-like API as it would with the standard library.
"""
from __future__ import annotations

import errno as _errno

__all__ = ["WsaError", "REGISTRY", "from_code", "from_errno", "code_name"]


class WsaError(OSError):
    """Base class: an error carrying a Winsock error code."""

    wsa_code: int = 0
    wsa_name: str = "WSA_UNKNOWN"

    def __init__(self, message: str | None = None):
        text = f"{self.wsa_name} ({self.wsa_code})"
        if message:
            text = f"{text}: {message}"
        super().__init__(self.wsa_code, text)
        self.message = message

    def __reduce__(self):  # picklable across processes (multiprocessing tests)
        return (type(self), (self.message,))

    def __str__(self) -> str:
        return self.args[1]


REGISTRY: dict[int, type[WsaError]] = {}


def _define(name: str, code: int, *bases: type, doc: str) -> type[WsaError]:
    cls = type(name, (WsaError, *bases), {"wsa_code": code, "wsa_name": name, "__doc__": doc})
    REGISTRY[code] = cls
    globals()[name] = cls
    __all__.append(name)
    return cls


_define("WSA_OPERATION_ABORTED", 995, doc="The overlapped operation was cancelled (e.g. a cancelled accept).")
_define("WSAEINTR", 10004, InterruptedError, doc="A blocking call was interrupted.")
_define("WSAEBADF", 10009, doc="The descriptor is not valid.")
_define("WSAEACCES", 10013, PermissionError, doc="Permission denied.")
_define("WSAEFAULT", 10014, doc="A buffer or address argument is not valid.")
_define("WSAEINVAL", 10022, doc="An argument or the socket's state is not valid for the call.")
_define("WSAEMFILE", 10024, doc="Too many open sockets.")
_define("WSAEWOULDBLOCK", 10035, BlockingIOError, doc="The operation would block (non-blocking socket).")
_define("WSAEINPROGRESS", 10036, doc="A blocking operation is in progress.")
_define("WSAEALREADY", 10037, doc="An operation is already in progress on this socket.")
_define("WSAENOTSOCK", 10038, doc="The descriptor is not a socket.")
_define("WSAEMSGSIZE", 10040, doc="A message is larger than allowed.")
_define("WSAEOPNOTSUPP", 10045, doc="The operation is not supported by this provider or socket.")
_define("WSAEAFNOSUPPORT", 10047, doc="The address family is not supported.")
_define("WSAEADDRINUSE", 10048, doc="The address is already in use.")
_define("WSAEADDRNOTAVAIL", 10049, doc="The address is not available on this host.")
_define("WSAENETDOWN", 10050, doc="The network (or the SAN provider) is down.")
_define("WSAENETUNREACH", 10051, doc="The network is unreachable.")
_define("WSAENETRESET", 10052, doc="The connection was broken by a network reset.")
_define("WSAECONNABORTED", 10053, ConnectionAbortedError,
        doc="The connection was aborted locally (e.g. a session-protocol violation by the peer).")
_define("WSAECONNRESET", 10054, ConnectionResetError, doc="The peer reset the connection (or vanished).")
_define("WSAENOBUFS", 10055, doc="No buffer space: memory could not be allocated or registered.")
_define("WSAEISCONN", 10056, doc="The socket is already connected.")
_define("WSAENOTCONN", 10057, doc="The socket is not connected.")
_define("WSAESHUTDOWN", 10058, BrokenPipeError, doc="The socket has been shut down.")
_define("WSAETIMEDOUT", 10060, TimeoutError, doc="The operation did not complete within its deadline.")
_define("WSAECONNREFUSED", 10061, ConnectionRefusedError, doc="The peer refused the connection request.")
_define("WSAEHOSTUNREACH", 10065, doc="The host is unreachable.")
_define("WSAEPROVIDERFAILEDINIT", 10106, doc="A service provider failed to initialise (see the reason).")
_define("WSASYSCALLFAILURE", 10107, doc="A system call that should never fail failed.")


def from_code(code: int, message: str | None = None) -> WsaError:
    """The exception instance for a WSA error code (unknown codes get a generic class)."""
    cls = REGISTRY.get(code)
    if cls is None:
        cls = type(f"WSA_{code}", (WsaError,), {"wsa_code": code, "wsa_name": f"WSA_{code}"})
    return cls(message)


def code_name(code: int) -> str:
    cls = REGISTRY.get(code)
    return cls.wsa_name if cls else f"WSA_{code}"


_ERRNO_MAP = {
    _errno.ECONNREFUSED: 10061,
    _errno.ECONNRESET: 10054,
    _errno.ECONNABORTED: 10053,
    _errno.EPIPE: 10058,
    _errno.ETIMEDOUT: 10060,
    _errno.EADDRINUSE: 10048,
    _errno.EADDRNOTAVAIL: 10049,
    _errno.ENETUNREACH: 10051,
    _errno.EHOSTUNREACH: 10065,
    _errno.ENOTCONN: 10057,
    _errno.EISCONN: 10056,
    _errno.EAGAIN: 10035,
    _errno.EINPROGRESS: 10035,
    _errno.EALREADY: 10037,
    _errno.EINVAL: 10022,
    _errno.EBADF: 10009,
    _errno.EMFILE: 10024,
    _errno.ENOBUFS: 10055,
    _errno.ENOMEM: 10055,
    _errno.EACCES: 10013,
    _errno.EAFNOSUPPORT: 10047,
    _errno.EMSGSIZE: 10040,
    _errno.EINTR: 10004,
}


def from_errno(exc: OSError) -> WsaError:
    """Translate a kernel ``OSError`` (TCP provider) into the WSA exception."""
    if isinstance(exc, WsaError):
        return exc
    code = _ERRNO_MAP.get(exc.errno or 0, 10107)
    err = from_code(code, exc.strerror or str(exc))
    err.__cause__ = exc
    return err
