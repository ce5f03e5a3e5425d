"""The control-socket protocol of wsd-smbd (sans-IO; the driver is server/control.py).

A local client (``wsd-smbstatus``) connects to the Unix-domain stream socket
``<state_dir>/wsd-smbd.ctl`` and sends requests as JSON lines: one JSON object per line,
UTF-8, ending in ``\\n``.  Each request gets one JSON object as one line back::

    -> {"op": "status"}
    <- {"op": "status", "status": {...}}            (admin/status.py builds the document)
    -> {"op": "ping"}
    <- {"op": "ping", "pong": true}

A line that is not a JSON object, a request whose ``op`` is missing or unknown, a line
longer than :data:`MAX_REQUEST` bytes, or no complete request within the deadline
(:data:`REQUEST_TIMEOUT` seconds after connecting or after the last answer) gets one error
object, and then the connection is closed::

    <- {"error": {"code": "bad_json", "message": "..."}}

Codes: ``bad_json``, ``bad_request`` (not an object / no op), ``unknown_op``,
``request_too_long``, ``timeout``.

The core is fed bytes (:meth:`ControlConnection.receive_data`, ``b""`` for end of stream)
and the clock (``now``); it hands out :class:`Request` events one at a time
(:meth:`next_event`) and the bytes to write (:meth:`data_to_send`).  The driver answers a
Request with :meth:`respond` before asking for the next event, so answers leave in request
order.  It never raises on any input.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

#: the longest request line accepted (bytes, without the newline)
MAX_REQUEST = 4096
#: seconds a client has for each complete request line
REQUEST_TIMEOUT = 5.0
#: the operations a client may ask for
OPS = ("status", "ping")


@dataclass
class Request:
    """A well-formed request: its ``op`` (one of :data:`OPS`) and the whole object."""

    op: str
    args: dict = field(default_factory=dict)


class ControlConnection:
    """One client of the control socket (see the module docstring)."""

    def __init__(self, now: float, timeout: float = REQUEST_TIMEOUT, max_request: int = MAX_REQUEST) -> None:
        self.timeout = timeout
        self.max_request = max_request
        #: when the client must have sent its next complete request
        self.deadline = now + timeout
        #: no more requests are taken; the driver closes once data_to_send() is written
        self.closing = False
        #: why it is closing ("eof", or an error code)
        self.close_reason = ""
        self._buf = bytearray()
        self._out = bytearray()
        self._eof = False
        self._pending: Request | None = None  # handed out, not yet answered

    # ------------------------------------------------------------ input
    def receive_data(self, data: bytes) -> None:
        """Bytes from the client; ``b""`` is the end of its stream."""
        if self.closing:
            return
        if not data:
            self._eof = True
            return
        self._buf += data

    def next_event(self) -> Request | None:
        """The next complete request, or None (nothing complete yet, an answer is still
        owed, or the connection is closing).  A bad line queues its error and closes."""
        if self.closing or self._pending is not None:
            return None
        while True:
            nl = self._buf.find(b"\n")
            if nl < 0:
                if len(self._buf) > self.max_request:
                    self._fail("request_too_long", f"a request line is limited to {self.max_request} bytes")
                elif self._eof:
                    if self._buf.strip():
                        self._fail("bad_json", "end of stream inside a request (no newline)")
                    else:
                        self.closing, self.close_reason = True, "eof"
                return None
            if nl > self.max_request:
                self._fail("request_too_long", f"a request line is limited to {self.max_request} bytes")
                return None
            line = bytes(self._buf[:nl])
            del self._buf[:nl + 1]
            if line.strip():  # blank lines are skipped
                break
        try:
            doc = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as e:
            self._fail("bad_json", f"not a JSON line: {type(e).__name__}")
            return None
        if not isinstance(doc, dict) or not isinstance(doc.get("op"), str):
            self._fail("bad_request", 'a request is a JSON object with a string "op"')
            return None
        if doc["op"] not in OPS:
            self._fail("unknown_op", f"unknown op {doc['op'][:64]!r}; known: {', '.join(OPS)}")
            return None
        self._pending = Request(doc["op"], doc)
        return self._pending

    def on_timer(self, now: float) -> None:
        """The clock: past the deadline without a complete request -> a timeout error."""
        if not self.closing and self._pending is None and now >= self.deadline:
            self._fail("timeout", f"no complete request within {self.timeout:g} s")

    # ------------------------------------------------------------ output
    def respond(self, result: dict, now: float) -> None:
        """Answer the request last handed out by next_event() with *result* (merged into
        ``{"op": op}``); the deadline for the next request starts now."""
        req, self._pending = self._pending, None
        if req is None:
            raise RuntimeError("respond() without a request")  # a driver bug, not client input
        self._write({"op": req.op, **result})
        self.deadline = now + self.timeout

    def data_to_send(self) -> bytes:
        out, self._out = bytes(self._out), bytearray()
        return out

    def _write(self, doc: dict) -> None:
        self._out += json.dumps(doc, separators=(",", ":"), default=str).encode() + b"\n"

    def _fail(self, code: str, message: str) -> None:
        self._write({"error": {"code": code, "message": message}})
        self.closing, self.close_reason = True, code
        self._buf.clear()
