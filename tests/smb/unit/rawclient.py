"""A small SMB2 test client built on wsd_smb.wire (packing) and pyspnego (the NTLM
initiator), for requests the high-level clients cannot make: raw compounds, unsigned or
badly signed requests, re-authentication, CANCEL, bad MessageIds."""
from __future__ import annotations

import os
import socket
import struct
import uuid

import spnego

from wsd_smb.crypto import smbcrypto as cr
from wsd_smb.wire import commands as w
from wsd_smb.wire.header import (SMB2_FLAGS_ASYNC_COMMAND, SMB2_FLAGS_RELATED_OPERATIONS, SMB2_FLAGS_SIGNED,
                                 Command, Smb2Header)


class Reply:
    def __init__(self, raw: bytes):
        self.raw = raw
        self.header = Smb2Header.unpack(raw)
        self.status = self.header.status
        self.body = raw[64:]


class RawClient:
    def __init__(self, host: str, port: int, timeout: float = 10):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.mid = 0
        self.dialect = 0
        self.session_id = 0
        self.session_key = b""
        self.signing_key = b""
        self.encryption_key = b""
        self.decryption_key = b""
        self.signing_alg = cr.HMAC_SHA256
        self.cipher = 0
        self.preauth = b"\0" * 64
        self.session_preauth = b""
        self.sign = True
        self.encrypt = False
        self.credits = 1

    # ------------------------------------------------------------ transport
    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(len(data).to_bytes(4, "big") + data)

    def recv_raw(self) -> bytes:
        hdr = self._recv_exact(4)
        n = int.from_bytes(hdr, "big")
        data = self._recv_exact(n)
        self.last_encrypted = data[:4] == b"\xfdSMB"
        if self.last_encrypted:
            data = cr.decrypt_message(self.decryption_key, data, self.cipher or cr.AES_128_CCM)
        return data

    def _recv_exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("closed by server")
            buf += chunk
        return buf

    def closed_by_server(self, timeout: float = 5) -> bool:
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b""
        except ConnectionError:
            return True

    def recv(self) -> list[Reply]:
        data = self.recv_raw()
        out = []
        pos = 0
        while True:
            h = Smb2Header.unpack(data, pos)
            end = pos + h.next_command if h.next_command else len(data)
            out.append(Reply(data[pos:end]))
            if not h.next_command:
                return out
            pos = end

    # ------------------------------------------------------------ messages
    def build(self, command: int, body: bytes, *, tree_id: int = 0, session_id: int | None = None,
              flags: int = 0, credit_charge: int = 1, credit: int = 32, message_id: int | None = None,
              async_id: int = 0, channel_sequence: int = 0) -> bytes:
        """One request; *channel_sequence* goes where SMB 3.x puts it (the first two bytes
        of the header's Status field)."""
        if message_id is None:
            message_id = self.mid
            if command != Command.SMB2_CANCEL:
                self.mid += max(1, credit_charge)
        h = Smb2Header(command, credit_charge=credit_charge, status=channel_sequence & 0xFFFF, credit=credit,
                       flags=flags, message_id=message_id,
                       tree_id=tree_id, session_id=self.session_id if session_id is None else session_id,
                       async_id=async_id)
        return h.pack() + body

    def verify(self, r: Reply) -> bool:
        """Is the reply signed with this client's session signing key?"""
        key = self.signing_key if self.dialect >= 0x0300 else self.session_key
        return bool(r.header.flags & SMB2_FLAGS_SIGNED) and cr.verify_signature(key, r.raw, self.signing_alg)

    def sign_msg(self, raw: bytes) -> bytes:
        key = self.signing_key if self.dialect >= 0x0300 else self.session_key
        return cr.sign(key, raw, self.signing_alg)

    def compound(self, msgs: list[bytes], sign: bool | None = None) -> bytes:
        sign = self.sign if sign is None else sign
        parts = []
        for i, m in enumerate(msgs):
            if i < len(msgs) - 1:
                m += b"\0" * ((-len(m)) % 8)
                m = m[:20] + struct.pack("<I", len(m)) + m[24:]
            if sign and self.session_key and not self.encrypt:
                m = self.sign_msg(m)
            parts.append(m)
        data = b"".join(parts)
        if self.encrypt:
            data = cr.encrypt_message(self.encryption_key, self.session_id, data, self.cipher or cr.AES_128_CCM)
        return data

    def request(self, command: int, body, *, sign: bool | None = None, no_wait_final: bool = False, **kw) -> Reply:
        if not isinstance(body, bytes):
            body = body.pack()
        self.send_raw(self.compound([self.build(command, body, **kw)], sign))
        while True:
            r = self.recv()[0]
            if r.status == 0x103 and r.header.flags & SMB2_FLAGS_ASYNC_COMMAND and command != Command.SMB2_CANCEL:
                self.last_interim = r
                if no_wait_final:
                    return r
                continue
            return r

    # ------------------------------------------------------------ negotiate / session setup
    def negotiate(self, dialects=(0x0202, 0x0210, 0x0300, 0x0302, 0x0311), ciphers=(cr.AES_128_GCM, cr.AES_128_CCM),
                  signing=(cr.AES_CMAC,), security_mode=1, capabilities=0x44, client_guid: bytes | None = None) -> Reply:
        ctxs = []
        if 0x0311 in dialects:
            ctxs = [w.NegotiateContext(context_type=1, data=w.PreauthIntegrityCapabilities(
                hash_algorithms=[1], salt=os.urandom(32)).pack())]
            if ciphers:
                ctxs.append(w.NegotiateContext(context_type=2, data=w.EncryptionCapabilities(ciphers=list(ciphers)).pack()))
            if signing:
                ctxs.append(w.NegotiateContext(context_type=8, data=w.SigningCapabilities(
                    signing_algorithms=list(signing)).pack()))
        self.client_guid = client_guid or uuid.uuid4().bytes
        req = w.NegotiateRequest(security_mode=security_mode, capabilities=capabilities, client_guid=self.client_guid,
                                 dialects=list(dialects), negotiate_contexts=ctxs)
        raw = self.build(Command.SMB2_NEGOTIATE, req.pack(), session_id=0, credit_charge=0)
        self.send_raw(raw)
        rsp_raw = self.recv_raw()
        r = Reply(rsp_raw)
        if r.status != 0:
            return r
        rsp = w.NegotiateResponse.unpack(rsp_raw)
        self.dialect = rsp.dialect_revision
        self.negotiate_response = rsp
        if self.dialect == 0x0311:
            self.preauth = cr.preauth_hash(cr.preauth_hash(b"\0" * 64, raw), rsp_raw)
            self.signing_alg = cr.AES_CMAC
            for c in rsp.negotiate_contexts:
                if c.context_type == 2:
                    self.cipher = w.EncryptionCapabilities.unpack(c.data, 0).ciphers[0]
                if c.context_type == 8:
                    self.signing_alg = w.SigningCapabilities.unpack(c.data, 0).signing_algorithms[0]
        elif self.dialect >= 0x0300:
            self.signing_alg = cr.AES_CMAC
        return r

    def session_setup(self, user: str, password: str, *, session_id: int | None = None,
                      protocol: str = "negotiate") -> Reply:
        """Full NTLM logon (or re-authentication when session_id is given)."""
        ctx = spnego.client(user, password, hostname="wsd", protocol=protocol)
        token = ctx.step()
        sid = self.session_id if session_id is None else session_id
        preauth = self.preauth
        self.setup_replies: list[Reply] = []
        while True:
            req = w.SessionSetupRequest(security_mode=1, security_buffer=token)
            raw = self.build(Command.SMB2_SESSION_SETUP, req.pack(), session_id=sid)
            if session_id and self.session_key:
                raw = self.sign_msg(raw)
            self.send_raw(raw)
            rsp_raw = self.recv_raw()
            r = Reply(rsp_raw)
            self.setup_replies.append(r)
            preauth = cr.preauth_hash(preauth, raw)
            sid = r.header.session_id
            body = w.SessionSetupResponse.unpack(rsp_raw)
            if r.status == 0xC0000016:
                preauth = cr.preauth_hash(preauth, rsp_raw)
                token = ctx.step(body.security_buffer)
                continue
            if r.status != 0:
                return r
            if body.security_buffer:
                ctx.step(body.security_buffer)
            break
        self.session_flags = body.session_flags
        if session_id:
            return r
        self.session_id = sid
        self.session_preauth = preauth
        key = ctx.session_key
        self.session_key = (key[:16] + b"\0" * 16)[:16]
        if self.dialect >= 0x0300:
            keys = cr.derive_session_keys(self.session_key, self.dialect, preauth, self.cipher or cr.AES_128_CCM)
            self.signing_key = keys.signing_key
            self.encryption_key = keys.decryption_key  # client -> server = the server's DecryptionKey
            self.decryption_key = keys.encryption_key
        return r

    def tree_connect(self, share: str = "IPC$", **kw) -> Reply:
        path = f"\\\\127.0.0.1\\{share}".encode("utf-16-le")
        return self.request(Command.SMB2_TREE_CONNECT, w.TreeConnectRequest(path=path), **kw)

    def close(self) -> None:
        self.sock.close()


def echo(c: RawClient, **kw) -> Reply:
    return c.request(Command.SMB2_ECHO, w.EchoRequest(), **kw)


GENERIC_RW = 0x0012019F  # FILE_GENERIC_READ | FILE_GENERIC_WRITE


def create_contexts(*pairs: tuple[bytes, bytes]) -> bytes:
    """(name, data) pairs packed as a CREATE's context chain."""
    return w.pack_create_contexts([w.CreateContext(name=n, data=d) for n, d in pairs])


def create_request(name: str, *, oplock: int = 0, access: int = GENERIC_RW, share: int = 7, disposition: int = 3,
                   options: int = 0x40, attributes: int = 0x80, contexts: bytes = b"") -> w.CreateRequest:
    """A CREATE for a file (FILE_NON_DIRECTORY_FILE, FILE_OPEN_IF, sharing everything by default)."""
    return w.CreateRequest(requested_oplock_level=oplock, impersonation_level=2, desired_access=access,
                           file_attributes=attributes, share_access=share, create_disposition=disposition,
                           create_options=options, name=name.encode("utf-16-le"), create_contexts=contexts)


def open_file(c: RawClient, tid: int, name: str, *, flags: int = 0, **kw) -> tuple[int, w.CreateResponse | None, dict]:
    """CREATE *name*: (status, response or None, {context name: data} of the response)."""
    r = c.request(Command.SMB2_CREATE, create_request(name, **kw), tree_id=tid, flags=flags)
    if r.status != 0:
        return r.status, None, {}
    body = w.CreateResponse.unpack(r.raw)
    out = {bytes(x.name): bytes(x.data) for x in w.unpack_create_contexts(body.create_contexts)} \
        if body.create_contexts else {}
    return 0, body, out


__all__ = ["RawClient", "Reply", "echo", "create_contexts", "create_request", "open_file", "GENERIC_RW", "SMB2_FLAGS_RELATED_OPERATIONS", "SMB2_FLAGS_SIGNED"]
