"""The sans-IO SMB2 server connection (MS-SMB2 3.3.5).

Feed it transport messages (the payload of one Direct-TCP frame) with
:meth:`Connection.receive_message`; it returns events:

* :class:`Send` - bytes of one SMB2 message (possibly a compound or a TRANSFORM) to frame and send;
* :class:`Work` - a blocking handler call; the driver runs ``work.run()`` in its thread
  pool, then calls :meth:`Connection.work_done` with it;
* :class:`Close` - drop the connection (after sending what came before).

Async completions arrive from any thread; the connection then calls ``self.wakeup()``
(set by the driver) and the driver collects the output with :meth:`poll`.
"""
from __future__ import annotations

import errno
import itertools
import logging
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from .. import ntstatus
from ..auth.ntlm import Credential, NtlmAcceptor, NtlmError, NtlmMalformed
from ..auth.spnego import SpnegoAcceptor, SpnegoError, neg_token_init_server
from ..crypto import smbcrypto as cr
from ..ntstatus import (STATUS_ACCESS_DENIED, STATUS_INVALID_PARAMETER,
                        STATUS_MORE_PROCESSING_REQUIRED, STATUS_NETWORK_NAME_DELETED, STATUS_NETWORK_SESSION_EXPIRED,
                        STATUS_NOT_SUPPORTED, STATUS_PENDING, STATUS_SUCCESS, STATUS_USER_SESSION_DELETED,
                        NtStatusError, is_error, status_name)
from ..buffers import HeadroomBuffer
from ..store.errors import WouldBlock
from ..wire import commands as w
from ..wire.base import FILEID_RELATED, FileId, Structure
from ..wire.header import (HEADER_SIZE, SMB1_PROTOCOL_ID, SMB2_FLAGS_ASYNC_COMMAND, SMB2_FLAGS_RELATED_OPERATIONS,
                           SMB2_FLAGS_SERVER_TO_REDIR, SMB2_FLAGS_SIGNED, SMB2_PROTOCOL_ID,
                           SMB2_TRANSFORM_PROTOCOL_ID, Command, Smb2Header)
from .credits import CommandSequenceWindow
from .dispatch import DISPATCH, AsyncOp, RequestContext, Response
from .state import Channel, SecurityContext, Server, Session, SessionState, TreeConnect

log = logging.getLogger("wsd_smb.core")


# ------------------------------------------------------------------ events
@dataclass
class Send:
    data: bytes


@dataclass
class Close:
    reason: str


@dataclass
class Cleanup:
    """Blocking clean-up for the driver's thread pool that answers no request (the
    file layer's hooks after a session was closed from outside, MS-SMB2 3.3.4.12)."""

    fn: Callable[[], Any]


@dataclass
class Work:
    """A blocking call for the driver's thread pool.  run() never raises for the
    exceptions a handler is expected to raise; it stores the outcome."""

    fn: Callable[[], Any]
    result: Any = None
    error: NtStatusError | None = None
    token: Any = None

    def run(self) -> None:
        try:
            self.result = self.fn()
        except NtStatusError as e:
            self.error = e
        except OSError as e:
            self.error = NtStatusError(_errno_status(e))
        except (ValueError, KeyError, TypeError, AttributeError, LookupError, ArithmeticError, struct.error,
                UnicodeError, NotImplementedError, AssertionError, RuntimeError) as e:
            log.error("event=handler_bug error=%r", e, exc_info=True)
            self.error = NtStatusError(ntstatus.STATUS_INTERNAL_ERROR)


def _errno_status(e: OSError) -> int:
    return {
        errno.ENOENT: ntstatus.STATUS_OBJECT_NAME_NOT_FOUND,
        errno.EEXIST: ntstatus.STATUS_OBJECT_NAME_COLLISION,
        errno.EACCES: ntstatus.STATUS_ACCESS_DENIED,
        errno.EPERM: ntstatus.STATUS_ACCESS_DENIED,
        errno.ENOTDIR: ntstatus.STATUS_NOT_A_DIRECTORY,
        errno.EISDIR: ntstatus.STATUS_FILE_IS_A_DIRECTORY,
        errno.ENOTEMPTY: ntstatus.STATUS_DIRECTORY_NOT_EMPTY,
        errno.ENOSPC: ntstatus.STATUS_DISK_FULL,
        errno.EROFS: ntstatus.STATUS_MEDIA_WRITE_PROTECTED,
        errno.ENAMETOOLONG: ntstatus.STATUS_NAME_TOO_LONG,
    }.get(e.errno or 0, ntstatus.STATUS_UNEXPECTED_IO_ERROR)


class ProtocolViolation(Exception):
    """Input after which MS-SMB2 says to disconnect."""


# ------------------------------------------------------------------ chain state
@dataclass
class _Element:
    header: Smb2Header  # request header (session/tree ids after inheritance)
    raw: bytes | bytearray  # request bytes of this element (header .. end incl. padding)
    start: int
    end: int


def _in_headroom(o: "_Out") -> bytearray | None:
    """The whole message built in place when the body ends with a payload read into a
    :class:`HeadroomBuffer` whose headroom fits the header and the rest of the body exactly
    (a READ response): header and fixed part go into the headroom, the payload is not copied."""
    body = o.body
    if type(body) is not list or not body:
        return None
    payload = body[-1]
    if type(payload) is not memoryview or not isinstance(payload.obj, HeadroomBuffer):
        return None
    buf = payload.obj
    front = b"".join([o.header.pack(), *body[:-1]])
    if len(front) != buf.headroom or len(buf) != buf.headroom + len(payload):
        return None
    buf[:len(front)] = front
    return buf


@dataclass
class _Out:
    """One response element before compound assembly."""

    header: Smb2Header
    body: bytes
    session: Session | None = None
    sign: bool = False
    after_pack: Callable[[bytes], None] | None = None  # preauth hash update of SESSION_SETUP
    sign_key: bytes | None = None  # sign with this key instead of the session's (failed binds)
    sign_algorithm: int | None = None  # ... and with this algorithm (a refused bind: the session's)


@dataclass
class _Chain:
    elements: list[_Element]
    encrypted: bool
    encrypt_session: Session | None = None
    index: int = 0
    out: list[_Out] = field(default_factory=list)
    last_session_id: int | None = 0  # None: the previous element had no valid session
    last_tree_id: int | None = 0  # None: the previous element had no valid tree connect
    last_file_id: FileId | None = None
    create_error: int = STATUS_SUCCESS  # status of the chain's last failed CREATE
    last_status: int = STATUS_SUCCESS
    pending: tuple | None = None  # (element, handler, ctx, req) while a Work is outstanding


_NO_SESSION_CMDS = {Command.SMB2_NEGOTIATE, Command.SMB2_SESSION_SETUP, Command.SMB2_ECHO, Command.SMB2_CANCEL}
_CREDIT_PAYLOAD = 65536
FSCTL_VALIDATE_NEGOTIATE_INFO = 0x00140204
FSCTL_QUERY_NETWORK_INTERFACE_INFO = 0x001401FC
_MAX_PREAUTH_SESSIONS = 64  # logons in progress per connection (bounds what a client can pin)
_MAX_CHANNELS = 32  # channels per session, as Windows Server 2012 R2/2016 (smbtorture multichannel num_channels)


class Connection:
    """Per connection, MS-SMB2 3.3.1.7, plus the request pipeline."""

    _async_ids = itertools.count(1)

    def __init__(self, server: Server, client_address: str = "", now: float | None = None,
                 transport_name: str = "tcp"):
        self.server = server
        self.client_address = client_address
        #: (host, port) this connection arrived on (set by the driver): the interface
        #: FSCTL_QUERY_NETWORK_INTERFACE_INFO reports
        self.server_address: tuple | None = None
        self.transport_name = transport_name
        self.creation_time = time.time() if now is None else now
        self.command_sequence_window = CommandSequenceWindow(server.config.max_credits)
        self.session_table: dict[int, Session] = {}
        self.preauth_session_table: dict[int, Session] = {}
        self.async_command_list: dict[int, AsyncOp] = {}
        self.negotiate_dialect = 0xFFFF  # none yet
        self.dialect = 0  # Connection.Dialect once negotiated (0x0202 ...)
        self.client_capabilities = 0
        self.client_security_mode = 0
        self.client_guid = b"\0" * 16
        self.client_dialects: list[int] = []
        self.server_capabilities = 0
        self.server_security_mode = 0
        self.supports_multi_credit = False
        self.max_transact_size = 65536
        self.max_read_size = 65536
        self.max_write_size = 65536
        self.preauth_integrity_hash_id = 0
        self.preauth_integrity_hash_value = b"\0" * 64
        self.cipher_id = 0
        self.signing_algorithm_id = cr.HMAC_SHA256
        self.should_sign = False
        self.closed = False
        self.wakeup: Callable[[], None] = lambda: None
        #: request_session_close() / request_tree_disconnect(), done by poll() on the loop
        self._server_requests: list[tuple[str, Session, Any]] = []
        self._queue: deque[tuple[bytes, float]] = deque()
        self._chain: _Chain | None = None
        self._lock = threading.Lock()
        self._completions: deque[tuple[AsyncOp, Any]] = deque()
        #: session binds in progress on this connection (MS-SMB2 3.3.5.5.2): SessionId ->
        #: [security exchange, channel PreauthIntegrityHashValue]
        self._binds: dict[int, list] = {}
        #: MessageIds named by an SMB2 CANCEL before their request went async (still queued
        #: or in a worker): cancelled as soon as they do (MS-SMB2 3.3.5.16); bounded
        self._early_cancels: dict[int, None] = {}
        server.connection_list.append(self)

    # ================================================================ public API
    def receive_message(self, data: bytes, now: float | None = None) -> list:
        """One transport message in; events out."""
        now = time.time() if now is None else now
        if self.closed:
            return []
        out: list = []
        # CANCEL is acted on at once, even while a blocking request is in progress.
        if len(data) >= HEADER_SIZE and data[:4] == SMB2_PROTOCOL_ID and \
                struct.unpack_from("<H", data, 12)[0] == Command.SMB2_CANCEL and \
                struct.unpack_from("<I", data, 20)[0] == 0:
            self._cancel(data, now)
            out += self.poll(now)
            return out
        self._queue.append((data, now))
        out += self._pump()
        return out

    def work_done(self, work: Work, now: float | None = None) -> list:
        now = time.time() if now is None else now
        chain = self._chain
        if chain is None or chain.pending is None or self.closed:
            return []
        el, handler, ctx, req = chain.pending
        chain.pending = None
        ctx.now = now
        if handler is None:
            pass  # LOGOFF clean-up hooks: the response is already queued
        elif work.error is not None:
            self._finish_element(chain, el, ctx, None, work.error, now)
        else:
            self._finish_element(chain, el, ctx, work.result, None, now)
        out = self._continue_chain(now)
        return out + self._pump()

    def request_session_close(self, session: Session) -> None:
        """Server application requests closing a session (MS-SMB2 3.3.4.12), from any
        thread: queued, and done by :meth:`poll` on this connection's own loop."""
        with self._lock:
            self._server_requests.append(("session", session, None))
        self.wakeup()

    def request_tree_disconnect(self, session: Session, tc: TreeConnect) -> None:
        """Disconnect *tc* for the server (its share was deregistered), from any thread:
        done by :meth:`poll` on this connection's loop, as a TREE_DISCONNECT would."""
        with self._lock:
            self._server_requests.append(("tree", session, tc))
        self.wakeup()

    def _server_request(self, kind: str, session: Session, tc: TreeConnect | None) -> list:
        if self.closed or self.session_table.get(session.session_id) is not session:
            return []  # gone already (LOGOFF, connection lost)
        if kind == "session":
            log.info("event=session_closed_by_server session_id=0x%x user=%s", session.session_id,
                     session.user_name)
            return [Cleanup(w.fn) for w in self._teardown_session(session, run_hooks=True)]
        if session.tree_connect_table.get(tc.tree_id) is not tc:
            return []
        session.remove_tree_connect(tc.tree_id)
        log.info("event=tree_disconnected_by_server session_id=0x%x share=%s", session.session_id, tc.share.name)
        hooks = list(self.server.on_tree_disconnected)
        if not hooks:
            return []

        def run() -> None:
            for hk in hooks:
                hk(tc)
        return [Cleanup(run)]

    def poll(self, now: float | None = None) -> list:
        """Final responses of async operations completed since the last call, and what the
        server asked for meanwhile (session closes, tree disconnects; their file-layer
        hooks as Cleanup events)."""
        out: list = []
        with self._lock:
            requests, self._server_requests = self._server_requests, []
        for kind, session, tc in requests:
            out += self._server_request(kind, session, tc)
        while True:
            with self._lock:
                if not self._completions:
                    break
                op, result = self._completions.popleft()
            if self.closed:
                continue
            out += self._send_final(op, result, now)
        return out

    def connection_lost(self, now: float | None = None) -> list:
        """Tear down: cancel async operations, remove sessions (MS-SMB2 3.3.7.1).
        Returns Work events for the file layer's cleanup hooks."""
        if self.closed:
            return []
        self.closed = True
        with self._lock:
            ops = list(self.async_command_list.values())
            self.async_command_list.clear()
        for op in ops:
            op.cancel("connection_lost")
        works = []
        for s in list(self.session_table.values()):
            if self._unbind_channel(s):
                continue  # the session lives on over its other channels (MS-SMB2 3.3.7.1)
            works += self._teardown_session(s, run_hooks=True)
        self.session_table.clear()
        self._binds.clear()
        if self in self.server.connection_list:
            self.server.connection_list.remove(self)
        return works

    # =========================================================== async support
    def new_async_op(self, ctx: RequestContext, on_cancel) -> AsyncOp:
        op = AsyncOp(self, ctx.header, next(self._async_ids), on_cancel)
        op.session = ctx.session
        op.tree_connect = ctx.tree_connect
        op.encrypted = ctx.encrypted  # type: ignore[attr-defined]
        op.interim_sent = False  # type: ignore[attr-defined]
        op.early_result = None  # type: ignore[attr-defined]
        with self._lock:
            self.async_command_list[op.async_id] = op
        return op

    def async_completed(self, op: AsyncOp, result: Any) -> None:
        with self._lock:
            if not op.interim_sent:  # type: ignore[attr-defined]
                op.early_result = result  # type: ignore[attr-defined]
                return
            self.async_command_list.pop(op.async_id, None)
            self._completions.append((op, result))
        self.wakeup()

    def send_notification(self, command: int, body: Structure | bytes, session: Session | None = None) -> bool:
        """Queue a server-initiated message (Oplock/Lease Break Notification, MS-SMB2
        2.2.23 / 3.3.4.6 / 3.3.4.7 LB-4): MessageId 0xFFFFFFFFFFFFFFFF, SessionId 0,
        TreeId 0, not signed; encrypted when *session* requires encryption.  Thread-safe;
        returns False if the connection is gone (the caller then takes the 'cannot
        send' branch, LB-8)."""
        if self.closed:
            return False
        raw = body.pack(HEADER_SIZE) if isinstance(body, Structure) else bytes(body)
        h = Smb2Header(command, flags=SMB2_FLAGS_SERVER_TO_REDIR, message_id=0xFFFFFFFFFFFFFFFF)
        with self._lock:
            self._completions.append((None, (h, raw, session)))
        self.wakeup()
        return True

    def _send_final(self, op: AsyncOp | None, result: Any, now: float | None) -> list:
        if op is None:  # a notification queued by send_notification
            h, raw, session = result
            encrypt = session is not None and self._must_encrypt(session)
            return [Send(self._assemble([_Out(h, raw, None)], session if encrypt else None))]
        h = op.header
        session = op.session
        rh = Smb2Header(h.command, credit_charge=h.credit_charge, credit=0,
                        flags=SMB2_FLAGS_SERVER_TO_REDIR | SMB2_FLAGS_ASYNC_COMMAND,
                        message_id=h.message_id, async_id=op.async_id, session_id=h.session_id)
        status, body = self._result_to_body(result)
        rh.status = status
        o = _Out(rh, body, session, sign=self._should_sign_response(session, h))
        encrypt = op.encrypted or self._must_encrypt(session, op.tree_connect)  # type: ignore[attr-defined]
        return [Send(self._assemble([o], session if encrypt else None))]

    def _cancel(self, data: bytes, now: float) -> None:
        """SMB2 CANCEL (MS-SMB2 3.3.5.16): no response; find the request and cancel it."""
        try:
            h = Smb2Header.unpack(data)
        except NtStatusError:
            return
        target = None
        with self._lock:
            if h.is_async:
                target = self.async_command_list.get(h.async_id)
            else:
                for op in self.async_command_list.values():
                    if op.message_id == h.message_id:
                        target = op
                        break
        log.debug("event=cancel message_id=%d async_id=%d found=%s", h.message_id, h.async_id, target is not None)
        if target is not None:
            target.cancel()
        elif not h.is_async:
            self._early_cancels[h.message_id] = None
            while len(self._early_cancels) > 256:
                self._early_cancels.pop(next(iter(self._early_cancels)))

    # ============================================================ the pipeline
    def _pump(self) -> list:
        out: list = []
        while self._chain is None and self._queue and not self.closed:
            data, now = self._queue.popleft()
            try:
                chain = self._start_chain(data, now, out)
            except ProtocolViolation as e:
                log.warning("event=disconnect client=%s reason=%r", self.client_address, str(e))
                out.append(Close(str(e)))
                self.closed = True
                return out
            if chain is None:
                continue
            self._chain = chain
            out += self._continue_chain(now)
        return out

    def _start_chain(self, data: bytes, now: float, out: list) -> _Chain | None:
        if len(data) < 4:
            raise ProtocolViolation("message too short")
        proto = data[:4]
        encrypted = False
        enc_session = None
        if proto == SMB1_PROTOCOL_ID:
            out.extend(self._smb1_negotiate(data, now))
            return None
        if proto == SMB2_TRANSFORM_PROTOCOL_ID:
            data, enc_session = self._decrypt(data)
            encrypted = True
        elif proto != SMB2_PROTOCOL_ID:
            raise ProtocolViolation(f"unknown protocol id {proto!r}")
        elements = []
        pos = 0
        while True:
            if pos + HEADER_SIZE > len(data):
                raise ProtocolViolation("truncated SMB2 header")
            try:
                h = Smb2Header.unpack(data, pos)
            except NtStatusError as e:
                raise ProtocolViolation(str(e)) from None
            if h.next_command:
                if h.next_command % 8 or h.next_command < HEADER_SIZE or pos + h.next_command > len(data):
                    raise ProtocolViolation(f"bad NextCommand {h.next_command}")
                end = pos + h.next_command
            else:
                end = len(data)
            # a lone request is the message itself (an 8 MiB WRITE is not copied again)
            elements.append(_Element(h, data if pos == 0 and end == len(data) else data[pos:end], pos, end))
            if not h.next_command:
                break
            pos = end
            if len(elements) > 512:
                raise ProtocolViolation("compound too long")
        if encrypted:
            for el in elements:
                if el.header.session_id not in (enc_session.session_id, 0xFFFFFFFFFFFFFFFF) and \
                        not el.header.is_related:
                    raise ProtocolViolation("encrypted compound names another session")
        return _Chain(elements, encrypted, enc_session)

    def _decrypt(self, data: bytes) -> tuple[bytes, Session]:
        if self.dialect < 0x0300:
            raise ProtocolViolation("TRANSFORM before SMB 3.x")
        if len(data) < 52:
            raise ProtocolViolation("TRANSFORM truncated")
        sid = struct.unpack_from("<Q", data, 44)[0]
        s = self.session_table.get(sid)
        if s is None or not s.decryption_key:
            raise ProtocolViolation("TRANSFORM for unknown session")
        try:
            plain = cr.decrypt_message(s.decryption_key, data, self.cipher_id or cr.AES_128_CCM)
        except cr.DecryptError as e:
            raise ProtocolViolation(str(e)) from None
        return plain, s

    def _continue_chain(self, now: float) -> list:
        chain = self._chain
        assert chain is not None
        while chain.index < len(chain.elements):
            el = chain.elements[chain.index]
            try:
                started = self._process_element(chain, el, now)
            except ProtocolViolation as e:
                log.warning("event=disconnect client=%s reason=%r", self.client_address, str(e))
                self.closed = True
                self._chain = None
                return [Close(str(e))]
            chain.index += 1
            if isinstance(started, Work):
                return [started]  # resumed by work_done
        self._chain = None
        if not chain.out:
            return []
        enc_session = None
        if chain.encrypted:
            enc_session = chain.encrypt_session
        else:
            for o in chain.out:
                # a SESSION_SETUP response is never encrypted unless its request was (3.3.4.1.4)
                if o.header.command == Command.SMB2_SESSION_SETUP:
                    continue
                if o.session is not None and self._must_encrypt(o.session, None, o.header):
                    enc_session = o.session
                    break
        return [Send(self._assemble(chain.out, enc_session))]

    # ---------------------------------------------------------- one element
    def _process_element(self, chain: _Chain, el: _Element, now: float):
        h = el.header
        first = chain.index == 0
        if h.flags & SMB2_FLAGS_SERVER_TO_REDIR:
            raise ProtocolViolation("response flag in a request")
        # --- credits / MessageId (3.3.5.2.3)
        if h.command != Command.SMB2_CANCEL:
            charge = h.credit_charge if self.supports_multi_credit else 1
            if not self.command_sequence_window.consume(h.message_id, charge):
                raise ProtocolViolation(f"MessageId {h.message_id} (charge {charge}) outside the window")
        # --- related operations (3.3.5.2.7.2)
        # A related request takes SessionId, TreeId and FileId from the previous one; when
        # those could not be established there, it fails with STATUS_INVALID_PARAMETER, and
        # a FileId that a failed CREATE should have produced fails with that CREATE's
        # status (MS-SMB2 3.3.5.2.7.2 and its Windows notes; what smbtorture checks).
        if h.is_related:
            if first or chain.last_session_id is None:
                chain.last_session_id = None  # nothing later in the chain can inherit from here
                return self._error(chain, el, STATUS_INVALID_PARAMETER, None)
            h.session_id = chain.last_session_id
            h.tree_id = 0xFFFFFFFF if chain.last_tree_id is None else chain.last_tree_id
        chain.last_session_id = h.session_id
        chain.last_tree_id = h.tree_id

        if self.negotiate_dialect in (0xFFFF, 0x02FF) and h.command != Command.SMB2_NEGOTIATE:
            raise ProtocolViolation(f"{h!r} before NEGOTIATE")
        if h.command == Command.SMB2_NEGOTIATE:
            return self._negotiate(chain, el, now)
        if h.command == Command.SMB2_CANCEL:
            self._cancel(el.raw, now)  # a CANCEL inside a compound
            return None
        if h.command == Command.SMB2_SESSION_SETUP:
            return self._session_setup(chain, el, now)
        handler = DISPATCH.get(h.command)
        if h.command > Command.SMB2_OPLOCK_BREAK:
            return self._error(chain, el, STATUS_INVALID_PARAMETER, None)

        session = None
        if h.command != Command.SMB2_ECHO and (handler is None or handler.needs_session
                                              or h.command == Command.SMB2_LOGOFF):
            session = self.session_table.get(h.session_id)
            if session is None:
                chain.last_session_id = None
                return self._error(chain, el, STATUS_USER_SESSION_DELETED, None)
            if session.state is SessionState.Valid and now >= session.expiration_time:
                session.state = SessionState.Expired
                log.info("event=session_expired session_id=0x%x user=%s", session.session_id, session.user_name)
            if session.state is not SessionState.Valid:
                if session.state is SessionState.Expired and h.command not in (Command.SMB2_LOGOFF, Command.SMB2_CLOSE):
                    return self._error(chain, el, STATUS_NETWORK_SESSION_EXPIRED, session)  # signed: keys still valid
                if session.state is SessionState.InProgress:
                    return self._error(chain, el, STATUS_USER_SESSION_DELETED, None)
            session.idle_time = now
            # --- signing (3.3.5.2.4)
            if not chain.encrypted:
                if h.is_signed and not session.has_session_key:
                    pass  # no key to verify with: guest/anonymous sessions are not signed
                elif h.is_signed:
                    if not self._verify(session, el.raw):
                        log.warning("event=bad_signature session_id=0x%x command=%s", session.session_id,
                                    Command(h.command).name)
                        return self._error(chain, el, STATUS_ACCESS_DENIED, None)
                elif session.signing_required:
                    return self._error(chain, el, STATUS_ACCESS_DENIED, None)
                elif (self.dialect >= 0x0311 and h.command == Command.SMB2_TREE_CONNECT
                      and session.has_session_key):
                    # 3.1.1: TREE_CONNECT must be signed (MS-SMB2 3.3.5.7)
                    return self._error(chain, el, STATUS_ACCESS_DENIED, None)
                if session.encrypt_data and self.dialect >= 0x0300 and self.server.config.reject_unencrypted_access:
                    return self._error(chain, el, STATUS_ACCESS_DENIED, None)
            elif chain.encrypt_session is not session and not h.is_related:
                return self._error(chain, el, STATUS_ACCESS_DENIED, None)
        ctx = RequestContext(self, self.server, h, now, session=session, encrypted=chain.encrypted, chain=chain)
        if h.command == Command.SMB2_LOGOFF:
            return self._logoff(chain, el, ctx)
        if h.command == Command.SMB2_ECHO:
            try:
                w.EchoRequest.unpack(el.raw, HEADER_SIZE)
            except NtStatusError as e:
                return self._error(chain, el, e.status, session)
            return self._respond(chain, el, ctx, w.EchoResponse().pack(), STATUS_SUCCESS)
        if handler is None and h.command != Command.SMB2_IOCTL:
            return self._error(chain, el, STATUS_NOT_SUPPORTED, session)
        if handler is None or handler.needs_tree:
            tc = session.tree_connect_table.get(h.tree_id)
            if tc is None or tc.share.deleted:
                chain.last_tree_id = None
                if h.is_related and h.tree_id == 0xFFFFFFFF:
                    return self._error(chain, el, STATUS_INVALID_PARAMETER, session)
                return self._error(chain, el, STATUS_NETWORK_NAME_DELETED, session)
            ctx.tree_connect = tc
            if (tc.share.encrypt_data and self.dialect >= 0x0300 and not chain.encrypted
                    and self.server.config.reject_unencrypted_access):
                return self._error(chain, el, STATUS_ACCESS_DENIED, session)
        try:
            req = w.parse_request(h.command, el.raw, HEADER_SIZE, len(el.raw))
            self._check_credit_charge(h, req)
        except NtStatusError as e:
            return self._error(chain, el, e.status, session)
        fid = getattr(req, "file_id", None)
        if fid is not None:
            if fid == FILEID_RELATED and h.is_related:
                if chain.last_file_id is None:
                    status = chain.create_error if is_error(chain.create_error) else STATUS_INVALID_PARAMETER
                    return self._error(chain, el, status, session)
                req.file_id = chain.last_file_id
            chain.last_file_id = req.file_id  # what the next related request inherits
        if h.command == Command.SMB2_IOCTL and req.ctl_code == FSCTL_VALIDATE_NEGOTIATE_INFO:
            return self._validate_negotiate_info(chain, el, ctx, req)
        if h.command == Command.SMB2_IOCTL and req.ctl_code == FSCTL_QUERY_NETWORK_INTERFACE_INFO \
                and self.server.config.multi_channel and self.server_address:
            return self._network_interface_info(chain, el, ctx, req)
        if handler is None:
            return self._error(chain, el, STATUS_NOT_SUPPORTED, session)
        if handler.blocking:
            if handler.inline_first and self.server.config.inline_metadata:
                # tried on the loop first: done without waiting, or WouldBlock before any change
                attempt = Work(lambda: handler.fn(ctx, req))
                ctx.inline = True
                try:
                    attempt.run()
                except WouldBlock:
                    ctx.inline = False
                    self.server.inline_would_block += 1
                else:
                    ctx.inline = False
                    self.server.inline_done += 1
                    self._finish_element(chain, el, ctx, attempt.result, attempt.error, now)
                    return None
            chain.pending = (el, handler, ctx, req)
            return Work(lambda: handler.fn(ctx, req))
        inline = Work(lambda: handler.fn(ctx, req))
        inline.run()
        self._finish_element(chain, el, ctx, inline.result, inline.error, now)
        return None

    def _check_credit_charge(self, h: Smb2Header, req: Structure) -> None:
        """MS-SMB2 3.3.5.2.5: CreditCharge must cover the payload in 64 KiB units."""
        if not self.supports_multi_credit:
            size = 0
            if isinstance(req, w.ReadRequest):
                size = req.length
            elif isinstance(req, w.WriteRequest):
                size = len(req.data)
            if size > 65536:
                raise ntstatus.StatusInvalidParameter("payload over 64 KiB without multi-credit")
            return
        if isinstance(req, w.ReadRequest):
            size = req.length
        elif isinstance(req, w.WriteRequest):
            size = len(req.data)
        elif isinstance(req, w.IoctlRequest):
            size = max(len(req.input) + len(req.output), req.max_output_response + req.max_input_response)
        elif isinstance(req, (w.QueryDirectoryRequest, w.ChangeNotifyRequest)):
            size = req.output_buffer_length
        elif isinstance(req, w.QueryInfoRequest):
            size = max(len(req.input_buffer), req.output_buffer_length)
        elif isinstance(req, w.SetInfoRequest):
            size = len(req.buffer)
        else:
            return
        need = max(1, (size - 1) // _CREDIT_PAYLOAD + 1) if size else 1
        if max(1, h.credit_charge) < need:
            raise ntstatus.StatusInvalidParameter(f"CreditCharge {h.credit_charge} < {need}")

    def _finish_element(self, chain: _Chain, el: _Element, ctx: RequestContext, result: Any,
                        error: NtStatusError | None, now: float) -> None:
        h = el.header
        session = ctx.session
        if isinstance(result, AsyncOp) and error is None:
            op = result
            with self._lock:
                early = op.early_result  # type: ignore[attr-defined]
                last = el is chain.elements[-1]
                if early is None and last:
                    op.interim_sent = True  # type: ignore[attr-defined]
                else:
                    self.async_command_list.pop(op.async_id, None)
            if early is not None:
                result = early
            elif not last:
                # An operation that would go async in the middle of a compound fails with
                # STATUS_INTERNAL_ERROR (MS-SMB2 3.3.5.2.7, Windows behaviour smbtorture checks).
                op.cancel()
                op.done = True
                error = NtStatusError(ntstatus.STATUS_INTERNAL_ERROR)
            else:
                # interim response (MS-SMB2 3.3.4.2)
                op.header = h
                rh = self._response_header(h, STATUS_PENDING)
                rh.flags |= SMB2_FLAGS_ASYNC_COMMAND
                rh.async_id = op.async_id
                chain.out.append(_Out(rh, w.ErrorResponse().pack(), session,
                                      sign=self._should_sign_response(session, h)))
                chain.last_status = STATUS_SUCCESS
                if self._early_cancels.pop(h.message_id, 1) is None:
                    op.cancel()  # the CANCEL came first; the final response follows the interim one
                return
        if error is not None:
            status, body = error.status, w.ErrorResponse().pack()
        else:
            status, body = self._result_to_body(result)
        if h.command == Command.SMB2_CREATE:
            if is_error(status):
                chain.create_error = status
                chain.last_file_id = None
            else:
                chain.create_error = STATUS_SUCCESS
                fid = getattr(result.body, "file_id", None) if isinstance(result, Response) else None
                if fid is not None:
                    chain.last_file_id = FileId(*fid)
        if h.command == Command.SMB2_TREE_CONNECT:
            chain.last_tree_id = None if is_error(status) else h.tree_id
        if is_error(status):
            log.debug("event=error command=%s status=%s", _cmd_name(h.command), status_name(status))
        self._respond(chain, el, ctx, body, status)

    def _result_to_body(self, result: Any) -> tuple[int, bytes | list]:
        if isinstance(result, NtStatusError):
            return result.status, w.ErrorResponse().pack()
        if isinstance(result, Response):
            # a list of buffers: a READ payload is copied once, into the assembled message
            body = result.body.pack_parts(HEADER_SIZE) if isinstance(result.body, Structure) else bytes(result.body)
            return result.status, body
        log.error("event=handler_bug result=%r", type(result).__name__)
        return ntstatus.STATUS_INTERNAL_ERROR, w.ErrorResponse().pack()

    def _response_header(self, h: Smb2Header, status: int) -> Smb2Header:
        charge = max(1, h.credit_charge) if self.supports_multi_credit else 1
        granted = self.command_sequence_window.grant(h.credit if h.credit else 1, charge)
        flags = SMB2_FLAGS_SERVER_TO_REDIR | (h.flags & SMB2_FLAGS_RELATED_OPERATIONS)
        return Smb2Header(h.command, credit_charge=h.credit_charge, status=status, credit=granted, flags=flags,
                          message_id=h.message_id, process_id=h.process_id, tree_id=h.tree_id,
                          session_id=h.session_id)

    def _respond(self, chain: _Chain, el: _Element, ctx: RequestContext | None, body: bytes, status: int,
                 *, session: Session | None = None, sign: bool | None = None,
                 after_pack: Callable[[bytes], None] | None = None) -> None:
        h = el.header
        if ctx is not None:
            session = ctx.session if session is None else session
        rh = self._response_header(h, status)
        if sign is None:
            sign = self._should_sign_response(session, h)
        if not sign and h.is_signed and h.command != Command.SMB2_SESSION_SETUP:
            # An error found before the signature could be checked (no session, bad
            # signature...): keep SMB2_FLAGS_SIGNED with an all-zero signature, as Windows
            # and Samba do; clients accept such errors only when the flag is echoed.
            rh.flags |= SMB2_FLAGS_SIGNED
        chain.out.append(_Out(rh, body, session, sign, after_pack))
        chain.last_status = status

    def _error(self, chain: _Chain, el: _Element, status: int, session: Session | None, sign: bool | None = None):
        log.debug("event=error command=%s status=%s", _cmd_name(el.header.command), status_name(status))
        self._respond(chain, el, None, w.ErrorResponse().pack(), status, session=session, sign=sign)
        return None

    # ---------------------------------------------------------- signing
    def _signing_algorithm(self) -> int:
        if self.dialect >= 0x0311:
            return self.signing_algorithm_id
        return cr.AES_CMAC if self.dialect >= 0x0300 else cr.HMAC_SHA256

    def _signing_key(self, session: Session) -> bytes:
        """Channel.SigningKey of this connection's channel (MS-SMB2 3.3.1.14; Session.SigningKey
        on the connection that authenticated the session), SessionKey before 3.0."""
        if self.dialect < 0x0300:
            return session.session_key
        for ch in session.channel_list:
            if ch.connection is self:
                return ch.signing_key
        return session.signing_key

    def _verify(self, session: Session, raw: bytes) -> bool:
        key = self._signing_key(session)
        if not key or not session.has_session_key:
            return False
        return cr.verify_signature(key, raw, self._signing_algorithm())

    def _should_sign_response(self, session: Session | None, h: Smb2Header) -> bool:
        if session is None or not session.has_session_key:
            return False
        if not self._signing_key(session) or session.state is SessionState.InProgress:
            return False
        return bool(session.signing_required or h.is_signed)

    def _must_encrypt(self, session: Session | None, tree=None, h: Smb2Header | None = None) -> bool:
        if session is None or self.dialect < 0x0300 or not session.encryption_key:
            return False
        if session.encrypt_data:
            return True
        if tree is None and h is not None:
            if h.command == Command.SMB2_TREE_CONNECT:
                return False  # the client learns Share.EncryptData from this very response
            tree = session.tree_connect_table.get(h.tree_id)
        return bool(tree is not None and tree.share.encrypt_data)

    def _assemble(self, outs: list[_Out], enc_session: Session | None) -> bytes:
        """Compound the responses (each 8-aligned, NextCommand set; a lone response is not
        padded), sign each, then encrypt the whole (MS-SMB2 3.3.4.1)."""
        parts = []
        for i, o in enumerate(outs):
            last = i == len(outs) - 1
            raw = _in_headroom(o) if len(outs) == 1 else None
            if raw is None:
                raw = bytearray(o.header.pack())
                if type(o.body) is list:
                    for part in o.body:
                        raw += part
                else:
                    raw += o.body
            if len(outs) > 1:
                # every element of a compound response is 8-byte aligned, the last one too
                # (as Windows and Samba send it; smbtorture smb2.compound.compound-padding)
                raw += b"\0" * ((-len(raw)) % 8)
                if not last:
                    struct.pack_into("<I", raw, 20, len(raw))
            if o.sign and enc_session is None and o.sign_key:
                cr.sign_in_place(o.sign_key, raw, self._signing_algorithm() if o.sign_algorithm is None else o.sign_algorithm)
            elif o.sign and enc_session is None and o.session is not None:
                cr.sign_in_place(self._signing_key(o.session), raw, self._signing_algorithm())
            if o.after_pack is not None:
                o.after_pack(bytes(raw))  # the preauth hash covers the message as sent (signed)
            parts.append(raw)
        msg = parts[0] if len(parts) == 1 else b"".join(parts)
        if enc_session is not None:
            msg = cr.encrypt_message(enc_session.encryption_key, enc_session.session_id, msg,
                                     self.cipher_id or cr.AES_128_CCM)
        return msg

    # ========================================================= NEGOTIATE
    def _smb1_negotiate(self, data: bytes, now: float) -> list:
        """SMB2 multi-protocol negotiate from an SMB1 NEGOTIATE (MS-SMB2 3.3.5.3.1)."""
        if self.negotiate_dialect != 0xFFFF:
            raise ProtocolViolation("SMB1 message after negotiation")
        if len(data) < 35 or data[4] != 0x72:
            raise ProtocolViolation("SMB1 message other than NEGOTIATE")
        bc = struct.unpack_from("<H", data, 33 + 2 * data[32])[0] if len(data) >= 35 + 2 * data[32] else 0
        start = 35 + 2 * data[32]
        blob = data[start : start + bc]
        dialects = [d.lstrip(b"\x02").decode("ascii", "replace") for d in blob.split(b"\0") if d]
        if "SMB 2.???" in dialects and any(d > 0x0202 for d in self.server.config.dialects):
            dialect = 0x02FF
        elif "SMB 2.002" in dialects and 0x0202 in self.server.config.dialects:
            dialect = 0x0202
        else:
            raise ProtocolViolation(f"SMB1 NEGOTIATE without an SMB2 dialect: {dialects}")
        if not self.command_sequence_window.consume(0, 1):
            raise ProtocolViolation("SMB1 NEGOTIATE out of sequence")
        body = self._negotiate_response_body(dialect, now, [])
        rh = Smb2Header(Command.SMB2_NEGOTIATE, credit=self.command_sequence_window.grant(1),
                        flags=SMB2_FLAGS_SERVER_TO_REDIR, message_id=0)
        if dialect == 0x0202:
            self._set_dialect(0x0202)
        else:
            self.negotiate_dialect = 0x02FF
        log.info("event=negotiate client=%s smb1=1 dialect=0x%04x", self.client_address, dialect)
        return [Send(rh.pack() + body)]

    def _set_dialect(self, dialect: int) -> None:
        cfg = self.server.config
        self.dialect = dialect
        self.negotiate_dialect = dialect
        # MS-SMB2 3.3.5.4: multi-credit when 2.1+ and the client has SMB2_GLOBAL_CAP_LARGE_MTU
        self.supports_multi_credit = dialect >= 0x0210 and bool(self.client_capabilities & w.SMB2_GLOBAL_CAP_LARGE_MTU)
        if not self.supports_multi_credit:
            self.max_transact_size = self.max_read_size = self.max_write_size = 65536
        else:
            self.max_transact_size, self.max_read_size, self.max_write_size = (
                cfg.max_transact_size, cfg.max_read_size, cfg.max_write_size)

    def _negotiate_response_body(self, dialect: int, now: float, contexts: list) -> bytes:
        cfg = self.server.config
        mode = w.SMB2_NEGOTIATE_SIGNING_ENABLED | (w.SMB2_NEGOTIATE_SIGNING_REQUIRED if cfg.signing_required else 0)
        self.server_security_mode = mode
        caps = 0
        if dialect != 0x0202:
            caps |= w.SMB2_GLOBAL_CAP_LARGE_MTU | getattr(self.server, "extra_capabilities", 0)
        # MS-SMB2 3.3.5.4: the ENCRYPTION capability is for 3.0/3.0.2; 3.1.1 negotiates a cipher
        if dialect in (0x0300, 0x0302) and self.client_capabilities & w.SMB2_GLOBAL_CAP_ENCRYPTION:
            caps |= w.SMB2_GLOBAL_CAP_ENCRYPTION
        if dialect < 0x0210:
            caps &= ~w.SMB2_GLOBAL_CAP_LEASING
        if dialect >= 0x0300 and dialect != 0x02FF and cfg.multi_channel:
            caps |= w.SMB2_GLOBAL_CAP_MULTI_CHANNEL  # session binding, MS-SMB2 3.3.5.5.2
        self.server_capabilities = caps
        big = dialect == 0x02FF or (dialect >= 0x0210 and bool(self.client_capabilities & w.SMB2_GLOBAL_CAP_LARGE_MTU))
        rsp = w.NegotiateResponse(
            security_mode=mode, dialect_revision=dialect, server_guid=cfg.server_guid, capabilities=caps,
            max_transact_size=cfg.max_transact_size if big else 65536,
            max_read_size=cfg.max_read_size if big else 65536,
            max_write_size=cfg.max_write_size if big else 65536,
            system_time=int(now * 10_000_000) + 116444736000000000, server_start_time=0,
            security_buffer=neg_token_init_server(), negotiate_contexts=contexts)
        return rsp.pack(HEADER_SIZE)

    def _negotiate(self, chain: _Chain, el: _Element, now: float):
        """MS-SMB2 3.3.5.4."""
        if self.negotiate_dialect not in (0xFFFF, 0x02FF) or len(chain.elements) > 1:
            raise ProtocolViolation("second NEGOTIATE or compounded NEGOTIATE")
        try:
            req = w.NegotiateRequest.unpack(el.raw, HEADER_SIZE)
        except NtStatusError as e:
            return self._error(chain, el, e.status, None)
        cfg = self.server.config
        common = [d for d in cfg.dialects if d in req.dialects]
        if not common:
            log.info("event=negotiate_failed client=%s dialects=%s", self.client_address,
                     [hex(d) for d in req.dialects])
            return self._error(chain, el, STATUS_NOT_SUPPORTED, None)
        dialect = max(common)
        self.client_dialects = list(req.dialects)
        self.client_capabilities = req.capabilities
        self.client_security_mode = req.security_mode
        self.client_guid = req.client_guid
        contexts = []
        if dialect == 0x0311:
            try:
                contexts = self._negotiate_contexts(req)
            except NtStatusError as e:
                return self._error(chain, el, e.status, None)
            self.preauth_integrity_hash_value = cr.preauth_hash(b"\0" * 64, el.raw)
        self._set_dialect(dialect)
        body = self._negotiate_response_body(dialect, now, contexts)
        log.info("event=negotiate client=%s dialect=0x%04x cipher=%d signing_alg=%d", self.client_address,
                 dialect, self.cipher_id, self.signing_algorithm_id)

        def after(raw: bytes) -> None:
            if dialect == 0x0311:
                self.preauth_integrity_hash_value = cr.preauth_hash(self.preauth_integrity_hash_value, raw)

        self._respond(chain, el, None, body, STATUS_SUCCESS, sign=False, after_pack=after)
        return None

    def _negotiate_contexts(self, req: w.NegotiateRequest) -> list:
        preauth = enc = sign = None
        for c in req.negotiate_contexts:
            if c.context_type == w.SMB2_PREAUTH_INTEGRITY_CAPABILITIES:
                if preauth is not None:
                    raise ntstatus.StatusInvalidParameter("two preauth contexts")
                preauth = w.PreauthIntegrityCapabilities.unpack(c.data, 0)
            elif c.context_type == w.SMB2_ENCRYPTION_CAPABILITIES:
                if enc is not None:
                    raise ntstatus.StatusInvalidParameter("two encryption contexts")
                enc = w.EncryptionCapabilities.unpack(c.data, 0)
            elif c.context_type == w.SMB2_SIGNING_CAPABILITIES:
                sign = w.SigningCapabilities.unpack(c.data, 0)
        if preauth is None or w.SHA_512 not in preauth.hash_algorithms:
            raise ntstatus.StatusInvalidParameter("no SHA-512 preauth integrity context")
        self.preauth_integrity_hash_id = w.SHA_512
        out = [w.NegotiateContext(context_type=w.SMB2_PREAUTH_INTEGRITY_CAPABILITIES,
                                  data=w.PreauthIntegrityCapabilities(hash_algorithms=[w.SHA_512],
                                                                      salt=_random(32)).pack())]
        if enc is not None:
            self.cipher_id = 0
            for c in (w.AES_128_GCM, w.AES_128_CCM, w.AES_256_GCM, w.AES_256_CCM):
                if c in enc.ciphers:
                    self.cipher_id = c
                    break
            out.append(w.NegotiateContext(context_type=w.SMB2_ENCRYPTION_CAPABILITIES,
                                          data=w.EncryptionCapabilities(ciphers=[self.cipher_id]).pack()))
        self.signing_algorithm_id = cr.AES_CMAC
        if sign is not None:
            for a in (cr.AES_GMAC, cr.AES_CMAC, cr.HMAC_SHA256):
                if a in sign.signing_algorithms:
                    self.signing_algorithm_id = a
                    break
            out.append(w.NegotiateContext(context_type=w.SMB2_SIGNING_CAPABILITIES,
                                          data=w.SigningCapabilities(signing_algorithms=[self.signing_algorithm_id])
                                          .pack()))
        return out

    # ========================================================= SESSION_SETUP
    def _lookup_user(self, name: str) -> Credential | None:
        u = self.server.config.users.get(name.lower())
        if u is None:
            return None
        return Credential(u.name, u.nt_hash, u.is_admin)

    def _session_setup(self, chain: _Chain, el: _Element, now: float):
        """MS-SMB2 3.3.5.5."""
        h = el.header
        cfg = self.server.config
        try:
            req = w.SessionSetupRequest.unpack(el.raw, HEADER_SIZE)
        except NtStatusError as e:
            return self._error(chain, el, e.status, None)
        if req.flags & w.SMB2_SESSION_FLAG_BINDING and self.dialect >= 0x0300 and \
                h.session_id in self.session_table and h.session_id not in self._binds:
            # a bind on a connection that is already a channel of the session
            return self._refuse_bind(chain, el, self.session_table[h.session_id], STATUS_ACCESS_DENIED)
        if req.flags & w.SMB2_SESSION_FLAG_BINDING:
            return self._session_bind(chain, el, req, now)
        reauth = False
        if h.session_id == 0:
            if len(self.preauth_session_table) >= _MAX_PREAUTH_SESSIONS:
                return self._error(chain, el, ntstatus.STATUS_REQUEST_NOT_ACCEPTED, None)
            sid = self.server.new_session_id()
            session = Session(session_id=sid, connection=self, session_global_id=self.server.allocate_global_id(),
                              creation_time=now, idle_time=now)
            if self.dialect >= 0x0311:
                session.preauth_integrity_hash_value = self.preauth_integrity_hash_value
            self.session_table[sid] = session
            self.preauth_session_table[sid] = session
            self.server.global_session_table[sid] = session
            h.session_id = sid
            chain.last_session_id = sid
        else:
            session = self.session_table.get(h.session_id)
            if session is None:
                # not a session of this connection (perhaps of another one, MS-SMB2 3.3.5.5):
                # the error echoes SMB2_FLAGS_SIGNED so that a client that signed it accepts it
                chain.last_session_id = None
                self._error(chain, el, STATUS_USER_SESSION_DELETED, None)
                if h.is_signed:
                    chain.out[-1].header.flags |= SMB2_FLAGS_SIGNED
                return None
            if session.state is SessionState.Valid and session.auth is None and session.has_session_key:
                # re-authentication: signed with this channel's key (3.3.5.2.4)
                if (h.is_signed and not self._verify(session, el.raw)) or \
                        (not h.is_signed and session.signing_required):
                    log.warning("event=reauth_refused session_id=0x%x signed=%d", session.session_id,
                                h.is_signed)
                    # answered like a refused bind: signed (if the request was) with Session.SigningKey
                    return self._refuse_bind(chain, el, session, STATUS_ACCESS_DENIED)
            if session.state is not SessionState.InProgress and session.auth is None:
                reauth = True
                if session.state is SessionState.Expired:
                    session.state = SessionState.InProgress
        session.idle_time = now
        if session.auth is None:
            session.auth = SpnegoAcceptor(NtlmAcceptor(
                self._lookup_user, server_name=cfg.server_name, domain_name=cfg.domain_name,
                allow_anonymous=cfg.allow_anonymous, allow_guest=cfg.allow_guest, guest_user=cfg.guest_user,
                now=now))
            session._reauth = reauth  # type: ignore[attr-defined]
        reauth = getattr(session, "_reauth", reauth)
        track_hash = self.dialect >= 0x0311 and not reauth
        if track_hash:
            session.preauth_integrity_hash_value = cr.preauth_hash(session.preauth_integrity_hash_value, el.raw)
        try:
            token, done = session.auth.step(req.security_buffer)
        except (NtlmError, SpnegoError) as e:
            log.warning("event=logon_failed client=%s session_id=0x%x reauth=%d reason=%r", self.client_address,
                        session.session_id, reauth, str(e))
            session.auth = None
            return self._fail_logon(chain, el, session, reauth, now,
                                    STATUS_INVALID_PARAMETER if isinstance(e, NtlmMalformed) else None)
        # During re-authentication the session has keys: its SESSION_SETUP responses are
        # signed (clients that sign the request insist on a signed answer).
        reauth_sign = reauth and session.has_session_key and (h.is_signed or session.signing_required)
        if not done:
            def after(raw: bytes, s=session) -> None:
                if track_hash:
                    s.preauth_integrity_hash_value = cr.preauth_hash(s.preauth_integrity_hash_value, raw)

            self._respond(chain, el, None, w.SessionSetupResponse(security_buffer=token).pack(HEADER_SIZE),
                          STATUS_MORE_PROCESSING_REQUIRED, session=session, sign=reauth_sign, after_pack=after)
            return None
        ntlm = session.auth.ntlm
        session.auth = None
        if not ntlm.complete:  # SPNEGO reject
            return self._fail_logon(chain, el, session, reauth, now)
        # Re-authentication (MS-SMB2 3.3.5.5.3) may change the identity (smbtorture's
        # reauth2-5 switch to anonymous and back); the keys of the first logon stay.
        session.is_anonymous = ntlm.is_anonymous
        session.is_guest = ntlm.is_guest
        if not reauth:
            session.has_session_key = not (ntlm.is_guest or ntlm.is_anonymous)
            key = ntlm.session_key
            session.session_key = (key[:16] + b"\0" * 16)[:16]
            session.signing_required = bool(
                (cfg.signing_required or self.client_security_mode & w.SMB2_NEGOTIATE_SIGNING_REQUIRED)
                and not (session.is_guest or session.is_anonymous))
            if self.dialect >= 0x0300 and not (session.is_guest or session.is_anonymous):
                keys = cr.derive_session_keys(session.session_key, self.dialect, session.preauth_integrity_hash_value,
                                              self.cipher_id or cr.AES_128_CCM, full_session_key=key)
                session.signing_key = keys.signing_key
                session.encryption_key = keys.encryption_key
                session.decryption_key = keys.decryption_key
                session.application_key = keys.application_key
                session.channel_list = [Channel(keys.signing_key, self)]
                can_encrypt = (self.dialect >= 0x0311 and self.cipher_id) or (
                    self.dialect < 0x0311 and self.client_capabilities & w.SMB2_GLOBAL_CAP_ENCRYPTION)
                session.encrypt_data = bool(cfg.encrypt_data and can_encrypt)
                if cfg.encrypt_data and not can_encrypt and cfg.reject_unencrypted_access:
                    self._teardown_session(session, run_hooks=False)
                    return self._error(chain, el, STATUS_ACCESS_DENIED, None)
            session.creation_time = now
            session.dialect = self.dialect
            session.signing_algorithm_id = self._signing_algorithm()
            session.cipher_id = self.cipher_id
        session.user_name = ntlm.user_name
        session.domain_name = ntlm.domain_name_client
        session.client_name = ntlm.workstation
        session.security_context = SecurityContext(ntlm.user_name, ntlm.domain_name_client, ntlm.is_admin,
                                                   ntlm.is_guest, ntlm.is_anonymous)
        session.expiration_time = now + cfg.session_lifetime if cfg.session_lifetime > 0 else float("inf")
        session.state = SessionState.Valid
        self.preauth_session_table.pop(session.session_id, None)
        old_works: list = []
        if req.previous_session_id and req.previous_session_id != session.session_id and not reauth:
            old = self.server.global_session_table.get(req.previous_session_id)
            if old is not None and old.user_name.lower() == session.user_name.lower():
                log.info("event=previous_session_closed session_id=0x%x", old.session_id)
                old_works = self._teardown_session(old, run_hooks=True)
        flags = 0
        if session.is_guest:
            flags |= w.SMB2_SESSION_FLAG_IS_GUEST
        if session.is_anonymous:
            flags |= w.SMB2_SESSION_FLAG_IS_NULL
        if session.encrypt_data:
            flags |= w.SMB2_SESSION_FLAG_ENCRYPT_DATA
        log.info("event=logon client=%s session_id=0x%x user=%s guest=%d anonymous=%d reauth=%d dialect=0x%04x "
                 "signing=%d encrypt=%d", self.client_address, session.session_id, session.user_name,
                 session.is_guest, session.is_anonymous, reauth, self.dialect, session.signing_required,
                 session.encrypt_data)
        # The final SESSION_SETUP response is signed when there is a key (MS-SMB2 3.3.5.5.3).
        sign = session.has_session_key and (self.dialect >= 0x0300 or session.signing_required or h.is_signed)
        self._respond(chain, el, None, w.SessionSetupResponse(session_flags=flags, security_buffer=token)
                      .pack(HEADER_SIZE), STATUS_SUCCESS, session=session, sign=sign)
        if old_works:
            # the previous session's opens are closed (durable ones kept, DH-*) before the
            # response goes out (MS-SMB2 3.3.5.5.3)
            chain.pending = (el, None, RequestContext(self, self.server, h, now), None)
            return Work(old_works[0].fn)
        return None

    def _fail_logon(self, chain: _Chain, el: _Element, session: Session, reauth: bool, now: float,
                    status: int | None = None):
        """STATUS_LOGON_FAILURE; the session is deleted (MS-SMB2 3.3.5.5.3; a failed
        re-authentication deletes it too, closing its opens through the file layer's hooks).
        A failed re-authentication is answered signed with the session's key.  *status*:
        STATUS_INVALID_PARAMETER for a malformed NTLM response (NtlmMalformed)."""
        h = el.header
        status = ntstatus.STATUS_LOGON_FAILURE if status is None else status
        key = self._signing_key(session) if (reauth and session.has_session_key
                                             and (h.is_signed or session.signing_required)) else b""
        works = self._teardown_session(session, run_hooks=reauth)
        if key:
            rh = self._response_header(h, status)
            chain.out.append(_Out(rh, w.ErrorResponse().pack(), None, True, None, key))
            chain.last_status = status
        else:
            self._error(chain, el, status, None)
        if works:
            chain.pending = (el, None, RequestContext(self, self.server, h, now), None)
            return Work(works[0].fn)
        return None

    def _bind_refusal(self, gs: Session) -> int:
        """Why SESSION_SETUP with SMB2_SESSION_FLAG_BINDING may not bind this connection to
        *gs* (MS-SMB2 3.3.5.5.2), as a status; STATUS_SUCCESS when it may.  The order of the
        checks is the one Windows and Samba follow (smbtorture's bind_negative_* cases):
        a GMAC-signed session binds only GMAC channels (REQUEST_OUT_OF_SEQUENCE) and a GMAC
        channel only GMAC sessions (NOT_SUPPORTED); no binding below 3.0
        (REQUEST_NOT_ACCEPTED, also when this server does not do multichannel); the dialect
        and the cipher must be the session's (INVALID_PARAMETER); guest and anonymous
        sessions have no key to bind with (NOT_SUPPORTED); at most 32 channels per session
        (INSUFFICIENT_RESOURCES)."""
        mine = self._signing_algorithm()
        if gs.signing_algorithm_id == cr.AES_GMAC and mine != cr.AES_GMAC:
            return ntstatus.STATUS_REQUEST_OUT_OF_SEQUENCE
        if mine == cr.AES_GMAC and gs.signing_algorithm_id != cr.AES_GMAC:
            return STATUS_NOT_SUPPORTED
        if self.dialect < 0x0300 or not self.server.config.multi_channel:
            return ntstatus.STATUS_REQUEST_NOT_ACCEPTED
        if gs.dialect != self.dialect:
            return STATUS_INVALID_PARAMETER
        if self.dialect >= 0x0311 and gs.cipher_id != self.cipher_id:
            return STATUS_INVALID_PARAMETER
        if gs.is_guest or gs.is_anonymous or not gs.has_session_key:
            return STATUS_NOT_SUPPORTED
        if len(gs.channel_list) >= _MAX_CHANNELS:
            return ntstatus.STATUS_INSUFFICIENT_RESOURCES
        return STATUS_SUCCESS

    def _session_bind(self, chain: _Chain, el: _Element, req: w.SessionSetupRequest, now: float):
        """SESSION_SETUP with SMB2_SESSION_FLAG_BINDING (MS-SMB2 3.3.5.5 / 3.3.5.5.2): add this
        connection to Session.ChannelList of a session established on another connection.

        The session is looked up in GlobalSessionTable.  A refused bind is answered, when the
        request was signed, signed with the session's own key and algorithm (what Windows
        does; smbtorture's bind_negative_* cases verify it).  An accepted bind runs its own
        authentication on this connection; it must authenticate the session's user
        (else STATUS_ACCESS_DENIED, the session untouched); Channel.SigningKey is derived
        from that exchange's session key and, for 3.1.1, from this connection's preauth
        integrity hash over the bind's SESSION_SETUP messages (3.3.5.5.3)."""
        h = el.header
        cfg = self.server.config
        sid = h.session_id
        if sid == 0:
            return self._error(chain, el, STATUS_INVALID_PARAMETER, None)
        pending = self._binds.get(sid)
        gs = self.server.global_session_table.get(sid)
        if gs is None or gs.state is not SessionState.Valid:
            self._binds.pop(sid, None)
            self._error(chain, el, STATUS_USER_SESSION_DELETED, None)
            if h.is_signed:
                chain.out[-1].header.flags |= SMB2_FLAGS_SIGNED
            return None
        if pending is None:
            status = self._bind_refusal(gs)
            if status == STATUS_SUCCESS and not self._verify_with_session_key(gs, el.raw):
                status = STATUS_ACCESS_DENIED  # a bind request is signed with Session.SigningKey
            if status != STATUS_SUCCESS:
                return self._refuse_bind(chain, el, gs, status)
            if len(self._binds) >= _MAX_PREAUTH_SESSIONS:
                return self._error(chain, el, ntstatus.STATUS_REQUEST_NOT_ACCEPTED, None)
            acceptor = SpnegoAcceptor(NtlmAcceptor(
                self._lookup_user, server_name=cfg.server_name, domain_name=cfg.domain_name,
                allow_anonymous=cfg.allow_anonymous, allow_guest=cfg.allow_guest, guest_user=cfg.guest_user,
                now=now))
            pending = [acceptor, self.preauth_integrity_hash_value]
            self._binds[sid] = pending
        if self.dialect >= 0x0311:
            pending[1] = cr.preauth_hash(pending[1], el.raw)
        try:
            token, done = pending[0].step(req.security_buffer)
        except (NtlmError, SpnegoError) as e:
            log.warning("event=bind_failed client=%s session_id=0x%x reason=%r", self.client_address, sid, str(e))
            self._binds.pop(sid, None)
            return self._refuse_bind(chain, el, gs, ntstatus.STATUS_LOGON_FAILURE)
        if not done:
            # until the channel has its key, the bind's responses are signed with Session.SigningKey
            def after(raw: bytes, p=pending) -> None:
                if self.dialect >= 0x0311:
                    p[1] = cr.preauth_hash(p[1], raw)

            rh = self._response_header(h, STATUS_MORE_PROCESSING_REQUIRED)
            chain.out.append(_Out(rh, w.SessionSetupResponse(security_buffer=token).pack(HEADER_SIZE), None,
                                  h.is_signed, after, gs.signing_key, gs.signing_algorithm_id))
            chain.last_status = STATUS_MORE_PROCESSING_REQUIRED
            return None
        self._binds.pop(sid, None)
        ntlm = pending[0].ntlm
        if not ntlm.complete:
            return self._refuse_bind(chain, el, gs, ntstatus.STATUS_LOGON_FAILURE)
        if (ntlm.is_guest or ntlm.is_anonymous or ntlm.user_name.lower() != gs.user_name.lower()
                or ntlm.domain_name_client.lower() != gs.domain_name.lower()):
            log.info("event=bind_refused client=%s session_id=0x%x reason=other_user user=%s", self.client_address,
                     sid, ntlm.user_name)
            return self._refuse_bind(chain, el, gs, STATUS_ACCESS_DENIED)
        key = ntlm.session_key
        keys = cr.derive_session_keys((key[:16] + b"\0" * 16)[:16], self.dialect, pending[1],
                                      self.cipher_id or cr.AES_128_CCM, full_session_key=key)
        gs.channel_list.append(Channel(keys.signing_key, self))
        self.session_table[sid] = gs
        gs.idle_time = now
        flags = w.SMB2_SESSION_FLAG_ENCRYPT_DATA if gs.encrypt_data else 0
        log.info("event=bind client=%s session_id=0x%x user=%s channels=%d dialect=0x%04x", self.client_address,
                 sid, gs.user_name, len(gs.channel_list), self.dialect)
        self._respond(chain, el, None, w.SessionSetupResponse(session_flags=flags, security_buffer=token)
                      .pack(HEADER_SIZE), STATUS_SUCCESS, session=gs, sign=True)
        return None

    def _verify_with_session_key(self, gs: Session, raw: bytes) -> bool:
        """The signature of a binding request, made with Session.SigningKey (MS-SMB2 3.3.5.2.4)
        by the algorithm of the session's first connection (or, for a client that signs
        with this connection's algorithm, that one)."""
        if not Smb2Header.unpack(raw).is_signed or not gs.signing_key:
            return False
        algs = {gs.signing_algorithm_id, self._signing_algorithm()}
        return any(cr.verify_signature(gs.signing_key, raw, a) for a in algs)

    def _refuse_bind(self, chain: _Chain, el: _Element, gs: Session, status: int):
        h = el.header
        key = (gs.signing_key if gs.dialect >= 0x0300 else gs.session_key) if gs.has_session_key else b""
        rh = self._response_header(h, status)
        sign = bool(key) and h.is_signed
        if h.is_signed and not sign:
            rh.flags |= SMB2_FLAGS_SIGNED
        chain.out.append(_Out(rh, w.ErrorResponse().pack(), None, sign, None, key or None,
                              gs.signing_algorithm_id))
        chain.last_status = status
        log.info("event=bind_refused client=%s session_id=0x%x status=%s", self.client_address, h.session_id,
                 status_name(status))
        return None

    def _unbind_channel(self, session: Session) -> bool:
        """This connection goes away: drop its channel from Session.ChannelList.  True if
        the session still has other channels (then it stays, moved to one of them)."""
        others = [ch for ch in session.channel_list if ch.connection is not self and not ch.connection.closed]
        if not others:
            return False
        session.channel_list = others
        self.session_table.pop(session.session_id, None)
        if session.connection is self:
            session.connection = others[0].connection
        log.info("event=channel_closed session_id=0x%x channels=%d", session.session_id, len(others))
        return True

    # ========================================================= FSCTL_VALIDATE_NEGOTIATE_INFO
    def _validate_negotiate_info(self, chain: _Chain, el: _Element, ctx: RequestContext, req: w.IoctlRequest):
        """MS-SMB2 3.3.5.15.12: compare the client's view of the negotiation with ours;
        any difference means tampering -> drop the connection."""
        data = req.input
        if len(data) < 24:
            raise ProtocolViolation("short VALIDATE_NEGOTIATE_INFO")
        caps, guid, mode, count = struct.unpack_from("<I16sHH", data, 0)
        if len(data) < 24 + 2 * count or count == 0:
            raise ProtocolViolation("bad VALIDATE_NEGOTIATE_INFO dialect count")
        dialects = list(struct.unpack_from(f"<{count}H", data, 24))
        if self.dialect >= 0x0311:
            raise ProtocolViolation("VALIDATE_NEGOTIATE_INFO on SMB 3.1.1")
        if self.dialect < 0x0300:
            # SMB 2.x: answered like a server without secure negotiate; the (signed) error is
            # what clients expect from such servers
            return self._error(chain, el, STATUS_NOT_SUPPORTED, ctx.session)
        if (caps != self.client_capabilities or guid != self.client_guid or mode != self.client_security_mode
                or dialects != self.client_dialects):
            raise ProtocolViolation(
                f"VALIDATE_NEGOTIATE_INFO mismatch: caps 0x{caps:x}/0x{self.client_capabilities:x} "
                f"mode {mode}/{self.client_security_mode} dialects {dialects}/{self.client_dialects} "
                f"guid_equal={guid == self.client_guid}")
        cfg = self.server.config
        out = struct.pack("<I16sHH", self.server_capabilities, cfg.server_guid, self.server_security_mode, self.dialect)
        body = w.IoctlResponse(ctl_code=FSCTL_VALIDATE_NEGOTIATE_INFO, file_id=req.file_id, output=out).pack()
        self._respond(chain, el, ctx, body, STATUS_SUCCESS)
        return None

    # ========================================================= FSCTL_QUERY_NETWORK_INTERFACE_INFO
    def _network_interface_info(self, chain: _Chain, el: _Element, ctx: RequestContext, req: w.IoctlRequest):
        """MS-SMB2 3.3.5.15.11: the interfaces a multichannel client may open further
        channels to -- here the address this connection arrived on (one NETWORK_INTERFACE_INFO,
        2.2.32.5; no RSS/RDMA capability, LinkSpeed 10 Gbit/s)."""
        if tuple(req.file_id) != (0xFFFFFFFFFFFFFFFF, 0xFFFFFFFFFFFFFFFF):
            return self._error(chain, el, STATUS_INVALID_PARAMETER, ctx.session)  # a server-level FSCTL
        host = str(self.server_address[0])
        try:
            entry = w.NetworkInterfaceInfo(next=0, if_index=1, capability=0, link_speed=10_000_000_000,
                                           sock_addr_storage=w.sockaddr_storage(host)).pack(0)
        except ValueError:  # not an IP address (e.g. a switch endpoint name)
            return self._error(chain, el, STATUS_NOT_SUPPORTED, ctx.session)
        if req.max_output_response < len(entry):
            return self._error(chain, el, ntstatus.STATUS_BUFFER_TOO_SMALL, ctx.session)
        body = w.IoctlResponse(ctl_code=FSCTL_QUERY_NETWORK_INTERFACE_INFO, file_id=req.file_id, output=entry).pack()
        self._respond(chain, el, ctx, body, STATUS_SUCCESS)
        return None

    # ========================================================= LOGOFF
    def _logoff(self, chain: _Chain, el: _Element, ctx: RequestContext):
        """MS-SMB2 3.3.5.6: the response is built (and signed) with the session's keys,
        then the session is torn down; file-layer hooks run in the thread pool."""
        session = ctx.session
        try:
            w.LogoffRequest.unpack(el.raw, HEADER_SIZE)
        except NtStatusError as e:
            return self._error(chain, el, e.status, session)
        self._respond(chain, el, ctx, w.LogoffResponse().pack(), STATUS_SUCCESS)
        works = self._teardown_session(session, run_hooks=True)
        log.info("event=logoff session_id=0x%x user=%s", session.session_id, session.user_name)
        if works:
            chain.pending = (el, None, ctx, None)
            hooks = works[0].fn

            def run():
                hooks()
                return None
            return Work(run)
        return None

    def _teardown_session(self, session: Session, run_hooks: bool) -> list:
        self.session_table.pop(session.session_id, None)
        self.preauth_session_table.pop(session.session_id, None)
        self.server.global_session_table.pop(session.session_id, None)
        if session.connection is not self and session.connection is not None:
            session.connection.session_table.pop(session.session_id, None)
        for ch in session.channel_list:
            ch.connection.session_table.pop(session.session_id, None)
        session.state = SessionState.Expired
        with self._lock:
            ops = [op for op in self.async_command_list.values() if op.session is session]
        for op in ops:
            op.cancel("session_closed")
        if not run_hooks:
            return []
        server = self.server
        trees = list(session.tree_connect_table.values())

        def hooks() -> None:
            for tc in trees:
                session.remove_tree_connect(tc.tree_id)
                for hk in list(server.on_tree_disconnected):
                    hk(tc)
            for hk in list(server.on_session_closed):
                hk(session)

        if not trees and not server.on_session_closed:
            session.tree_connect_table.clear()
            return []
        return [Work(hooks)]


def _random(n: int) -> bytes:
    import os

    return os.urandom(n)


def _cmd_name(c: int) -> str:
    try:
        return Command(c).name
    except ValueError:
        return hex(c)
