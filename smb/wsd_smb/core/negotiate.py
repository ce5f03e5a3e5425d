"""NEGOTIATE (MS-SMB2 3.3.5.3, 3.3.5.4; the SMB1 multi-protocol negotiate of 3.3.5.3.1),
FSCTL_VALIDATE_NEGOTIATE_INFO (3.3.5.15.12) and FSCTL_QUERY_NETWORK_INTERFACE_INFO
(3.3.5.15.11): the part of :class:`~.connection.Connection` that settles the dialect and the
connection's capabilities."""
from __future__ import annotations

import logging
import os
import struct

from .. import ntstatus
from ..auth.spnego import neg_token_init_server
from ..crypto import smbcrypto as cr
from ..ntstatus import STATUS_INVALID_PARAMETER, STATUS_NOT_SUPPORTED, STATUS_SUCCESS, NtStatusError
from ..wire import commands as w
from ..wire.header import HEADER_SIZE, SMB2_FLAGS_SERVER_TO_REDIR, Command, Smb2Header
from .chain import _Chain, _Element
from .dispatch import RequestContext
from .events import ProtocolViolation, Send

log = logging.getLogger("wsd_smb.core")

FSCTL_VALIDATE_NEGOTIATE_INFO = 0x00140204
FSCTL_QUERY_NETWORK_INTERFACE_INFO = 0x001401FC


class NegotiateMixin:
    """Connection methods for NEGOTIATE and the negotiate-related FSCTLs (mixed into
    :class:`~.connection.Connection`; they use its state and its response helpers)."""

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
        if (dialect >= 0x0300 and dialect != 0x02FF and caps & w.SMB2_GLOBAL_CAP_LEASING and cfg.directory_leases
                and self.client_capabilities & w.SMB2_GLOBAL_CAP_DIRECTORY_LEASING):
            # MS-SMB2 3.3.5.4: 3.x and directory leasing implemented; only to a client that
            # says it does directory leasing (as Windows: impacket 0.13, which does not,
            # fails every CREATE on a 3.x connection that offers it -- smb3.py create())
            caps |= w.SMB2_GLOBAL_CAP_DIRECTORY_LEASING
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
                                                                      salt=os.urandom(32)).pack())]
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
