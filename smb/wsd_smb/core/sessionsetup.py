"""SESSION_SETUP (MS-SMB2 3.3.5.5: SPNEGO/NTLM logon, re-authentication, 3.3.5.5.2
binding of further channels), LOGOFF (3.3.5.6) and the tear-down of a session: the part of
:class:`~.connection.Connection` that keeps the session table (SESS-1, SESS-2)."""
from __future__ import annotations

import logging

from .. import ntstatus
from ..auth.ntlm import Credential, NtlmAcceptor, NtlmError, NtlmMalformed
from ..auth.spnego import SpnegoAcceptor, SpnegoError
from ..crypto import smbcrypto as cr
from ..ntstatus import (STATUS_ACCESS_DENIED, STATUS_INVALID_PARAMETER,
                        STATUS_MORE_PROCESSING_REQUIRED, STATUS_NOT_SUPPORTED, STATUS_SUCCESS,
                        STATUS_USER_SESSION_DELETED, NtStatusError, status_name)
from ..wire import commands as w
from ..wire.header import HEADER_SIZE, SMB2_FLAGS_SIGNED, Smb2Header
from .chain import _Chain, _Element, _Out
from .dispatch import RequestContext
from .events import Work
from .state import Channel, SecurityContext, Session, SessionState

log = logging.getLogger("wsd_smb.core")

_MAX_PREAUTH_SESSIONS = 64  # logons in progress per connection (bounds what a client can pin)
_MAX_CHANNELS = 32  # channels per session, as Windows Server 2012 R2/2016 (smbtorture multichannel num_channels)


class SessionSetupMixin:
    """Connection methods for SESSION_SETUP, LOGOFF and session tear-down (mixed into
    :class:`~.connection.Connection`)."""

    # ========================================================= SESSION_SETUP
    def _lookup_user(self, name: str) -> Credential | None:
        u = self.server.config.users.get(name.lower())
        if u is None:
            return None
        return Credential(u.name, u.nt_hash, u.is_admin, u.privileges)

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
                                                   ntlm.is_guest, ntlm.is_anonymous,
                                                   ntlm.privileges if not (ntlm.is_guest or ntlm.is_anonymous)
                                                   else frozenset())
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
