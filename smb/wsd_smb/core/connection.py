"""The sans-IO SMB2 server connection (MS-SMB2 3.3.5).

Feed it transport messages (the payload of one Direct-TCP frame) with
:meth:`Connection.receive_message`; it returns events:

* :class:`Send` - bytes of one SMB2 message (possibly a compound or a TRANSFORM) to frame and send;
* :class:`Work` - a blocking handler call; the driver runs ``work.run()`` in its thread
  pool, then calls :meth:`Connection.work_done` with it;
* :class:`Close` - drop the connection (after sending what came before);
* :class:`Cleanup` - blocking clean-up for the pool that answers no request.

The events live in :mod:`.events`, the compound-chain state in :mod:`.chain`; NEGOTIATE is
in :mod:`.negotiate` and SESSION_SETUP/LOGOFF in :mod:`.sessionsetup` (mixins of
:class:`Connection`).

Async completions arrive from any thread; the connection then calls ``self.wakeup()``
(set by the driver) and the driver collects the output with :meth:`poll`.
"""
from __future__ import annotations

import itertools
import logging
import struct
import threading
import time
from collections import deque
from typing import Any, Callable

from .. import ntstatus
from ..crypto import smbcrypto as cr
from ..ntstatus import (STATUS_ACCESS_DENIED, STATUS_INVALID_PARAMETER,
                        STATUS_NETWORK_NAME_DELETED, STATUS_NETWORK_SESSION_EXPIRED, STATUS_NOT_SUPPORTED,
                        STATUS_PENDING, STATUS_SUCCESS, STATUS_USER_SESSION_DELETED, NtStatusError,
                        is_error, status_name)
from ..store.errors import WouldBlock
from ..wire import commands as w
from ..wire.base import FILEID_RELATED, FileId, Structure
from ..wire.header import (HEADER_SIZE, SMB1_PROTOCOL_ID, SMB2_FLAGS_ASYNC_COMMAND, SMB2_FLAGS_RELATED_OPERATIONS,
                           SMB2_FLAGS_REPLAY_OPERATION, SMB2_FLAGS_SERVER_TO_REDIR, SMB2_FLAGS_SIGNED, SMB2_PROTOCOL_ID,
                           SMB2_TRANSFORM_PROTOCOL_ID, Command, Smb2Header)
from .chain import _Chain, _Element, _in_headroom, _Out  # noqa: F401  (_in_headroom, _Out: tests)
from .credits import CommandSequenceWindow
from . import replay
from .dispatch import DISPATCH, AsyncOp, RequestContext, Response
from .events import Cleanup, Close, ProtocolViolation, Send, Work  # noqa: F401  (the driver's names)
from .negotiate import FSCTL_QUERY_NETWORK_INTERFACE_INFO, FSCTL_VALIDATE_NEGOTIATE_INFO, NegotiateMixin
from .sessionsetup import SessionSetupMixin
from .state import Server, Session, SessionState, TreeConnect

log = logging.getLogger("wsd_smb.core")

_NO_SESSION_CMDS = {Command.SMB2_NEGOTIATE, Command.SMB2_SESSION_SETUP, Command.SMB2_ECHO, Command.SMB2_CANCEL}
_CREDIT_PAYLOAD = 65536


class Connection(NegotiateMixin, SessionSetupMixin):
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
        if self._chain is not None and self._chain.pending is not None:
            replay.release(self._chain.pending[2].counted)  # its answer will not be sent
        for op in ops:
            other = self._surviving_channel(op)
            if other is not None:
                other.adopt_async(op)
            else:
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

    def _surviving_channel(self, op: AsyncOp) -> "Connection | None":
        """For a CREATE waiting for breaks (core/create.py) whose session lives on over
        another channel: that channel's connection.  Such a CREATE is not cancelled when
        its connection is lost: it completes for the session (its answer is lost) and the
        client gets the open by replaying the CREATE on another channel (MS-SMB2
        3.3.5.9.10; smbtorture smb2.replay.dhv2-pending2*); every other operation is
        cancelled."""
        s = op.session
        if op.header.command != Command.SMB2_CREATE or s is None or s.state is not SessionState.Valid:
            return None
        for ch in s.channel_list:
            if ch.connection is not self and not ch.connection.closed:
                return ch.connection
        return None

    def adopt_async(self, op: AsyncOp) -> None:
        """Keep *op* (of a lost channel of the same session) in this connection's
        AsyncCommandList, so that the session's end or this connection's loss reaches it."""
        op.adopted_by = self  # type: ignore[attr-defined]
        with self._lock:
            self.async_command_list[op.async_id] = op
        log.info("event=async_adopted command=%s async_id=%d", _cmd_name(op.header.command), op.async_id)

    # =========================================================== async support
    def new_async_op(self, ctx: RequestContext, on_cancel) -> AsyncOp:
        op = AsyncOp(self, ctx.header, next(self._async_ids), on_cancel)
        op.session = ctx.session
        op.tree_connect = ctx.tree_connect
        op.counted = ctx.counted
        op.encrypted = ctx.encrypted  # type: ignore[attr-defined]
        op.interim_sent = False  # type: ignore[attr-defined]
        op.early_result = None  # type: ignore[attr-defined]
        with self._lock:
            self.async_command_list[op.async_id] = op
        return op

    def async_completed(self, op: AsyncOp, result: Any) -> None:
        replay.release(op.counted)  # answered (or, on a lost connection, never will be)
        adopter = getattr(op, "adopted_by", None)
        if adopter is not None:
            with adopter._lock:
                adopter.async_command_list.pop(op.async_id, None)
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
            if chain.encrypted:
                session.client_encrypts = True
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
        if fid is not None and session is not None and self.dialect >= 0x0300:
            # 3.3.5.2.10: the channel sequence of the open the request names
            o = session.open_table.get(FileId(*req.file_id).volatile)
            if o is not None and o.file_id_persistent == FileId(*req.file_id).persistent:
                try:
                    ctx.counted = replay.verify_channel_sequence(o, h.command, h.channel_sequence,
                                                                 bool(h.flags & SMB2_FLAGS_REPLAY_OPERATION))
                except NtStatusError as e:
                    return self._error(chain, el, e.status, session)
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
        replay.release(ctx.counted)  # the request is answered now (3.3.4.1)
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


def _cmd_name(c: int) -> str:
    try:
        return Command(c).name
    except ValueError:
        return hex(c)
