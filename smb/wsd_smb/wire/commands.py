"""Request and response structures of every SMB2 command (MS-SMB2 2.2.2 - 2.2.40).

One class per structure; the docstring names the MS-SMB2 section.  Bodies are packed
with ``pack(base=64)`` (the body follows the 64-byte header) and parsed with
``unpack(msg, start, end)`` where ``msg`` starts at the SMB2 header.
"""
from __future__ import annotations

import struct
from typing import Any

from ..ntstatus import StatusInvalidParameter
from .base import FILEID, GUID, U8, U16, U32, U64, Buf, F, FileId, Plain, Structure, _pad
from .header import Command

# --------------------------------------------------------------------- constants
# Dialects, MS-SMB2 2.2.3
SMB2_DIALECT_202 = 0x0202
SMB2_DIALECT_210 = 0x0210
SMB2_DIALECT_300 = 0x0300
SMB2_DIALECT_302 = 0x0302
SMB2_DIALECT_311 = 0x0311
SMB2_DIALECT_WILDCARD = 0x02FF

# SecurityMode
SMB2_NEGOTIATE_SIGNING_ENABLED = 0x0001
SMB2_NEGOTIATE_SIGNING_REQUIRED = 0x0002

# Capabilities
SMB2_GLOBAL_CAP_DFS = 0x00000001
SMB2_GLOBAL_CAP_LEASING = 0x00000002
SMB2_GLOBAL_CAP_LARGE_MTU = 0x00000004
SMB2_GLOBAL_CAP_MULTI_CHANNEL = 0x00000008
SMB2_GLOBAL_CAP_PERSISTENT_HANDLES = 0x00000010
SMB2_GLOBAL_CAP_DIRECTORY_LEASING = 0x00000020
SMB2_GLOBAL_CAP_ENCRYPTION = 0x00000040

# Negotiate context types, MS-SMB2 2.2.3.1
SMB2_PREAUTH_INTEGRITY_CAPABILITIES = 0x0001
SMB2_ENCRYPTION_CAPABILITIES = 0x0002
SMB2_COMPRESSION_CAPABILITIES = 0x0003
SMB2_NETNAME_NEGOTIATE_CONTEXT_ID = 0x0005
SMB2_TRANSPORT_CAPABILITIES = 0x0006
SMB2_RDMA_TRANSFORM_CAPABILITIES = 0x0007
SMB2_SIGNING_CAPABILITIES = 0x0008

SHA_512 = 0x0001
AES_128_CCM, AES_128_GCM, AES_256_CCM, AES_256_GCM = 0x0001, 0x0002, 0x0003, 0x0004
HMAC_SHA256, AES_CMAC, AES_GMAC = 0x0000, 0x0001, 0x0002

# SESSION_SETUP, MS-SMB2 2.2.5 / 2.2.6
SMB2_SESSION_FLAG_BINDING = 0x01
SMB2_SESSION_FLAG_IS_GUEST = 0x0001
SMB2_SESSION_FLAG_IS_NULL = 0x0002
SMB2_SESSION_FLAG_ENCRYPT_DATA = 0x0004

# TREE_CONNECT response, MS-SMB2 2.2.10
SMB2_SHARE_TYPE_DISK = 0x01
SMB2_SHARE_TYPE_PIPE = 0x02
SMB2_SHARE_TYPE_PRINT = 0x03
SMB2_SHAREFLAG_MANUAL_CACHING = 0x00000000
SMB2_SHAREFLAG_AUTO_CACHING = 0x00000010
SMB2_SHAREFLAG_VDO_CACHING = 0x00000020
SMB2_SHAREFLAG_NO_CACHING = 0x00000030
SMB2_SHAREFLAG_CSC_MASK = 0x00000030  # the caching-policy bits (MS-SRVS 2.2.4.29 CSC_MASK)
SMB2_SHAREFLAG_ENCRYPT_DATA = 0x00008000
SMB2_SHAREFLAG_ACCESS_BASED_DIRECTORY_ENUM = 0x00000800
SMB2_SHARE_CAP_DFS = 0x00000008
SMB2_SHARE_CAP_CONTINUOUS_AVAILABILITY = 0x00000010

# Oplock levels, MS-SMB2 2.2.13
SMB2_OPLOCK_LEVEL_NONE = 0x00
SMB2_OPLOCK_LEVEL_II = 0x01
SMB2_OPLOCK_LEVEL_EXCLUSIVE = 0x08
SMB2_OPLOCK_LEVEL_BATCH = 0x09
SMB2_OPLOCK_LEVEL_LEASE = 0xFF

# CLOSE
SMB2_CLOSE_FLAG_POSTQUERY_ATTRIB = 0x0001
# READ
SMB2_READFLAG_READ_UNBUFFERED = 0x01
# WRITE
SMB2_WRITEFLAG_WRITE_THROUGH = 0x00000001
# LOCK element flags, MS-SMB2 2.2.26.1
SMB2_LOCKFLAG_SHARED_LOCK = 0x00000001
SMB2_LOCKFLAG_EXCLUSIVE_LOCK = 0x00000002
SMB2_LOCKFLAG_UNLOCK = 0x00000004
SMB2_LOCKFLAG_FAIL_IMMEDIATELY = 0x00000010
# IOCTL
SMB2_0_IOCTL_IS_FSCTL = 0x00000001
# QUERY_DIRECTORY flags, MS-SMB2 2.2.33
SMB2_RESTART_SCANS = 0x01
SMB2_RETURN_SINGLE_ENTRY = 0x02
SMB2_INDEX_SPECIFIED = 0x04
SMB2_REOPEN = 0x10
# CHANGE_NOTIFY
SMB2_WATCH_TREE = 0x0001
# QUERY_INFO InfoType, MS-SMB2 2.2.37
SMB2_0_INFO_FILE = 0x01
SMB2_0_INFO_FILESYSTEM = 0x02
SMB2_0_INFO_SECURITY = 0x03
SMB2_0_INFO_QUOTA = 0x04
# Lease break, MS-SMB2 2.2.23.2
SMB2_NOTIFY_BREAK_LEASE_FLAG_ACK_REQUIRED = 0x01
SMB2_LEASE_NONE = 0x00
SMB2_LEASE_READ_CACHING = 0x01
SMB2_LEASE_HANDLE_CACHING = 0x02
SMB2_LEASE_WRITE_CACHING = 0x04


# --------------------------------------------------------------------- 2.2.2
class ErrorResponse(Structure):
    """SMB2 ERROR Response, MS-SMB2 2.2.2 (StructureSize 9; ErrorData follows, at least 1 byte)."""

    STRUCTURE_SIZE = 9
    FIELDS = (
        F("ErrorContextCount", U8),
        F("Reserved", U8, 0, reserved=True),
        F("ByteCount", U32),
    )
    BUFFERS = (Buf("ErrorData", None, "ByteCount"),)


# --------------------------------------------------------------------- 2.2.3
class NegotiateContext(Plain):
    """SMB2 NEGOTIATE_CONTEXT, MS-SMB2 2.2.3.1: ContextType(2), DataLength(2), Reserved(4), Data."""

    FIELDS = (
        F("ContextType", U16),
        F("DataLength", U16),
        F("Reserved", U32, 0, reserved=True, ignore=True),
    )
    BUFFERS = (Buf("Data", None, "DataLength"),)


def pack_negotiate_contexts(contexts: list[NegotiateContext], base: int) -> bytes:
    """Pack a NegotiateContextList starting at *base* (8-aligned); each context 8-aligned."""
    out = bytearray()
    for i, c in enumerate(contexts):
        if i:
            out += b"\0" * _pad(base + len(out), 8)
        out += c.pack(0)
    return bytes(out)


def unpack_negotiate_contexts(msg: bytes, offset: int, count: int, end: int) -> list[NegotiateContext]:
    out = []
    pos = offset
    for i in range(count):
        if i:
            pos += _pad(pos, 8)
        if pos + 8 > end:
            raise StatusInvalidParameter("negotiate context list truncated")
        c = NegotiateContext.unpack(msg, pos, end)
        out.append(c)
        pos += 8 + len(c.data)
    return out


class PreauthIntegrityCapabilities(Plain):
    """SMB2_PREAUTH_INTEGRITY_CAPABILITIES, MS-SMB2 2.2.3.1.1 (context data)."""

    FIELDS = (F("HashAlgorithmCount", U16), F("SaltLength", U16))

    def _init_extra(self, kw):
        self.hash_algorithms = list(kw.pop("hash_algorithms", []))
        self.salt = bytes(kw.pop("salt", b""))

    def _pack_extra(self, base, pos):
        return struct.pack(f"<{len(self.hash_algorithms)}H", *self.hash_algorithms) + self.salt

    def pack(self, base: int = 0) -> bytes:
        self.hash_algorithm_count = len(self.hash_algorithms)
        self.salt_length = len(self.salt)
        return super().pack(base)

    def _unpack_extra(self, msg, start, end, fields):
        n, s = fields["HashAlgorithmCount"], fields["SaltLength"]
        p = start + 4
        if n == 0 or p + 2 * n + s > end:
            raise StatusInvalidParameter("bad SMB2_PREAUTH_INTEGRITY_CAPABILITIES")
        self.hash_algorithms = list(struct.unpack_from(f"<{n}H", msg, p))
        self.salt = msg[p + 2 * n : p + 2 * n + s]

    def _eq_extra(self, o):
        return self.hash_algorithms == o.hash_algorithms and self.salt == o.salt


class _IdList(Plain):
    """Count(2) followed by Count 16-bit ids."""

    FIELDS = (F("Count", U16),)
    IDS = "ids"

    def _init_extra(self, kw):
        setattr(self, self.IDS, list(kw.pop(self.IDS, [])))

    def pack(self, base: int = 0) -> bytes:
        ids = getattr(self, self.IDS)
        self.count = len(ids)
        return super().pack(base)

    def _pack_extra(self, base, pos):
        ids = getattr(self, self.IDS)
        return struct.pack(f"<{len(ids)}H", *ids)

    def _unpack_extra(self, msg, start, end, fields):
        n = fields["Count"]
        if n == 0 or start + 2 + 2 * n > end:
            raise StatusInvalidParameter(f"bad {type(self).__name__}")
        setattr(self, self.IDS, list(struct.unpack_from(f"<{n}H", msg, start + 2)))

    def _eq_extra(self, o):
        return getattr(self, self.IDS) == getattr(o, self.IDS)


class EncryptionCapabilities(_IdList):
    """SMB2_ENCRYPTION_CAPABILITIES, MS-SMB2 2.2.3.1.2: CipherCount(2), Ciphers."""

    FIELDS = (F("CipherCount", U16),)
    IDS = "ciphers"

    def pack(self, base: int = 0) -> bytes:
        self.cipher_count = len(self.ciphers)
        return Plain.pack(self, base)

    def _unpack_extra(self, msg, start, end, fields):
        fields["Count"] = fields["CipherCount"]
        super()._unpack_extra(msg, start, end, fields)


class SigningCapabilities(_IdList):
    """SMB2_SIGNING_CAPABILITIES, MS-SMB2 2.2.3.1.7: SigningAlgorithmCount(2), SigningAlgorithms."""

    FIELDS = (F("SigningAlgorithmCount", U16),)
    IDS = "signing_algorithms"

    def pack(self, base: int = 0) -> bytes:
        self.signing_algorithm_count = len(self.signing_algorithms)
        return Plain.pack(self, base)

    def _unpack_extra(self, msg, start, end, fields):
        fields["Count"] = fields["SigningAlgorithmCount"]
        super()._unpack_extra(msg, start, end, fields)


class NegotiateRequest(Structure):
    """SMB2 NEGOTIATE Request, MS-SMB2 2.2.3 (StructureSize 36).

    Dialects (DialectCount x 2 bytes) follow the fixed part; for 3.1.1 the
    NegotiateContextList is at NegotiateContextOffset (8-aligned).  The last 8 bytes of
    the fixed part are NegotiateContextOffset/Count/Reserved2 for 3.1.1 and
    ClientStartTime otherwise: both are exposed (``client_start_time`` is the raw 8 bytes
    as an integer).
    """

    STRUCTURE_SIZE = 36
    FIELDS = (
        F("DialectCount", U16),
        F("SecurityMode", U16),
        F("Reserved", U16, 0, reserved=True, ignore=True),
        F("Capabilities", U32),
        F("ClientGuid", GUID, b"\0" * 16),
        F("NegotiateContextOffset", U32),
        F("NegotiateContextCount", U16),
        F("Reserved2", U16, 0, reserved=True, ignore=True),
    )

    def _init_extra(self, kw):
        self.dialects = list(kw.pop("dialects", []))
        self.negotiate_contexts = list(kw.pop("negotiate_contexts", []))

    def pack(self, base: int = 64) -> bytes:
        self.dialect_count = len(self.dialects)
        self.negotiate_context_count = len(self.negotiate_contexts)
        if self.negotiate_contexts:
            pos = base + self.FIXED_SIZE + 2 * len(self.dialects)
            self.negotiate_context_offset = pos + _pad(pos, 8)
        return super().pack(base)

    def _pack_extra(self, base, pos):
        out = struct.pack(f"<{len(self.dialects)}H", *self.dialects)
        if self.negotiate_contexts:
            out += b"\0" * _pad(base + pos + len(out), 8)
            out += pack_negotiate_contexts(self.negotiate_contexts, base + pos + len(out))
        return out

    def _unpack_extra(self, msg, start, end, fields):
        n = fields["DialectCount"]
        p = start + self.FIXED_SIZE
        if n == 0 or p + 2 * n > end:
            raise StatusInvalidParameter("NEGOTIATE: bad DialectCount")
        self.dialects = list(struct.unpack_from(f"<{n}H", msg, p))
        self.negotiate_contexts = []
        if SMB2_DIALECT_311 in self.dialects and fields["NegotiateContextCount"]:
            off = fields["NegotiateContextOffset"]
            if off < p + 2 * n or off >= end:
                raise StatusInvalidParameter("NEGOTIATE: bad NegotiateContextOffset")
            self.negotiate_contexts = unpack_negotiate_contexts(msg, off, fields["NegotiateContextCount"], end)

    @property
    def client_start_time(self) -> int:
        return self.negotiate_context_offset | (self.negotiate_context_count << 32)

    def _eq_extra(self, o):
        return self.dialects == o.dialects and self.negotiate_contexts == o.negotiate_contexts


class NegotiateResponse(Structure):
    """SMB2 NEGOTIATE Response, MS-SMB2 2.2.4 (StructureSize 65).

    SecurityBuffer at SecurityBufferOffset; for 3.1.1 the NegotiateContextList follows at
    NegotiateContextOffset (8-aligned); NegotiateContextCount/Offset are 0 otherwise.
    """

    STRUCTURE_SIZE = 65
    FIELDS = (
        F("SecurityMode", U16),
        F("DialectRevision", U16),
        F("NegotiateContextCount", U16),
        F("ServerGuid", GUID, b"\0" * 16),
        F("Capabilities", U32),
        F("MaxTransactSize", U32),
        F("MaxReadSize", U32),
        F("MaxWriteSize", U32),
        F("SystemTime", U64),
        F("ServerStartTime", U64),
        F("SecurityBufferOffset", U16),
        F("SecurityBufferLength", U16),
        F("NegotiateContextOffset", U32),
    )
    BUFFERS = (Buf("SecurityBuffer", "SecurityBufferOffset", "SecurityBufferLength", offset_if_empty="here"),)

    def _init_extra(self, kw):
        self.negotiate_contexts = list(kw.pop("negotiate_contexts", []))

    def pack(self, base: int = 64) -> bytes:
        self.negotiate_context_count = len(self.negotiate_contexts)
        if self.negotiate_contexts:
            pos = base + self.FIXED_SIZE
            pos += _pad(pos, 8) + len(self.security_buffer)
            self.negotiate_context_offset = pos + _pad(pos, 8)
        else:
            self.negotiate_context_offset = 0
        return super().pack(base)

    def _pack_extra(self, base, pos):
        if not self.negotiate_contexts:
            return b""
        pad = _pad(base + pos, 8)
        return b"\0" * pad + pack_negotiate_contexts(self.negotiate_contexts, base + pos + pad)

    def _unpack_extra(self, msg, start, end, fields):
        self.negotiate_contexts = []
        if fields["DialectRevision"] == SMB2_DIALECT_311 and fields["NegotiateContextCount"]:
            self.negotiate_contexts = unpack_negotiate_contexts(
                msg, fields["NegotiateContextOffset"], fields["NegotiateContextCount"], end)

    def _eq_extra(self, o):
        return self.negotiate_contexts == o.negotiate_contexts


# --------------------------------------------------------------------- 2.2.5/6
class SessionSetupRequest(Structure):
    """SMB2 SESSION_SETUP Request, MS-SMB2 2.2.5 (StructureSize 25)."""

    STRUCTURE_SIZE = 25
    FIELDS = (
        F("Flags", U8),
        F("SecurityMode", U8),
        F("Capabilities", U32),
        F("Channel", U32, 0, reserved=True, ignore=True),
        F("SecurityBufferOffset", U16),
        F("SecurityBufferLength", U16),
        F("PreviousSessionId", U64),
    )
    BUFFERS = (Buf("SecurityBuffer", "SecurityBufferOffset", "SecurityBufferLength"),)


class SessionSetupResponse(Structure):
    """SMB2 SESSION_SETUP Response, MS-SMB2 2.2.6 (StructureSize 9)."""

    STRUCTURE_SIZE = 9
    FIELDS = (
        F("SessionFlags", U16),
        F("SecurityBufferOffset", U16),
        F("SecurityBufferLength", U16),
    )
    BUFFERS = (Buf("SecurityBuffer", "SecurityBufferOffset", "SecurityBufferLength", offset_if_empty="here"),)


# --------------------------------------------------------------------- 2.2.7 - 2.2.8, 2.2.11/12, 2.2.18, 2.2.27-30
class _Reserved4(Structure):
    STRUCTURE_SIZE = 4
    FIELDS = (F("Reserved", U16, 0, reserved=True, ignore=True),)


class LogoffRequest(_Reserved4):
    """SMB2 LOGOFF Request, MS-SMB2 2.2.7 (StructureSize 4)."""


class LogoffResponse(_Reserved4):
    """SMB2 LOGOFF Response, MS-SMB2 2.2.8 (StructureSize 4)."""


class TreeDisconnectRequest(_Reserved4):
    """SMB2 TREE_DISCONNECT Request, MS-SMB2 2.2.11 (StructureSize 4)."""


class TreeDisconnectResponse(_Reserved4):
    """SMB2 TREE_DISCONNECT Response, MS-SMB2 2.2.12 (StructureSize 4)."""


class FlushResponse(_Reserved4):
    """SMB2 FLUSH Response, MS-SMB2 2.2.18 (StructureSize 4)."""


class LockResponse(_Reserved4):
    """SMB2 LOCK Response, MS-SMB2 2.2.27 (StructureSize 4)."""


class EchoRequest(_Reserved4):
    """SMB2 ECHO Request, MS-SMB2 2.2.28 (StructureSize 4)."""


class EchoResponse(_Reserved4):
    """SMB2 ECHO Response, MS-SMB2 2.2.29 (StructureSize 4)."""


class CancelRequest(_Reserved4):
    """SMB2 CANCEL Request, MS-SMB2 2.2.30 (StructureSize 4)."""


# --------------------------------------------------------------------- 2.2.9/10
class TreeConnectRequest(Structure):
    """SMB2 TREE_CONNECT Request, MS-SMB2 2.2.9 (StructureSize 9).

    ``flags`` is Flags (3.1.1: SMB2_TREE_CONNECT_FLAG_*) / Reserved (earlier dialects).
    ``path`` is the UTF-16LE share path (\\\\server\\share).
    """

    STRUCTURE_SIZE = 9
    FIELDS = (
        F("Flags", U16),
        F("PathOffset", U16),
        F("PathLength", U16),
    )
    BUFFERS = (Buf("Path", "PathOffset", "PathLength"),)


class TreeConnectResponse(Structure):
    """SMB2 TREE_CONNECT Response, MS-SMB2 2.2.10 (StructureSize 16)."""

    STRUCTURE_SIZE = 16
    FIELDS = (
        F("ShareType", U8),
        F("Reserved", U8, 0, reserved=True),
        F("ShareFlags", U32),
        F("Capabilities", U32),
        F("MaximalAccess", U32),
    )


# --------------------------------------------------------------------- 2.2.13/14 CREATE
class CreateContext(Plain):
    """SMB2_CREATE_CONTEXT, MS-SMB2 2.2.13.2: Next(4), NameOffset(2), NameLength(2),
    Reserved(2), DataOffset(2), DataLength(4), Buffer (Name, padding to 8, Data).
    Offsets are relative to the start of the context; ``name`` is raw bytes (b"MxAc",
    b"DH2Q", b"RqLs", ...)."""

    FIELDS = (
        F("Next", U32),
        F("NameOffset", U16),
        F("NameLength", U16),
        F("Reserved", U16, 0, reserved=True, ignore=True),
        F("DataOffset", U16),
        F("DataLength", U32),
    )
    BUFFERS = (Buf("Name", "NameOffset", "NameLength"), Buf("Data", "DataOffset", "DataLength"))


def pack_create_contexts(contexts: list[CreateContext]) -> bytes:
    """Pack a create context chain (each 8-aligned, Next = offset of the next one, 0 for the last)."""
    chunks = []
    for c in contexts:
        c.next = 0
        chunks.append(c.pack(0))
    out = bytearray()
    for i, raw in enumerate(chunks):
        if i < len(chunks) - 1:
            raw += b"\0" * _pad(len(raw), 8)
            raw = struct.pack("<I", len(raw)) + raw[4:]
        out += raw
    return bytes(out)


def unpack_create_contexts(buf: bytes) -> list[CreateContext]:
    """Parse a create context chain (MS-SMB2 2.2.13.2); bad chain -> STATUS_INVALID_PARAMETER."""
    out: list[CreateContext] = []
    pos = 0
    while True:
        if len(out) > 64:
            raise StatusInvalidParameter("too many create contexts")
        nxt = struct.unpack_from("<I", buf, pos)[0] if pos + 4 <= len(buf) else None
        if nxt is None:
            raise StatusInvalidParameter("create context truncated")
        end = pos + nxt if nxt else len(buf)
        if end > len(buf) or (nxt and nxt < 16):
            raise StatusInvalidParameter("bad create context Next")
        c = CreateContext.unpack(buf[pos:end], 0)
        out.append(c)
        if not nxt:
            return out
        if nxt % 8:
            raise StatusInvalidParameter("create context not 8-aligned")
        pos = end


class CreateRequest(Structure):
    """SMB2 CREATE Request, MS-SMB2 2.2.13 (StructureSize 57).

    ``name`` is the UTF-16LE path relative to the share; ``create_contexts`` the raw chain
    (parse with :func:`unpack_create_contexts`; the ``contexts`` property does that).
    """

    STRUCTURE_SIZE = 57
    FIELDS = (
        F("SecurityFlags", U8, 0, reserved=True, ignore=True),
        F("RequestedOplockLevel", U8),
        F("ImpersonationLevel", U32),
        F("SmbCreateFlags", U64, 0, reserved=True, ignore=True),
        F("Reserved", U64, 0, reserved=True, ignore=True),
        F("DesiredAccess", U32),
        F("FileAttributes", U32),
        F("ShareAccess", U32),
        F("CreateDisposition", U32),
        F("CreateOptions", U32),
        F("NameOffset", U16),
        F("NameLength", U16),
        F("CreateContextsOffset", U32),
        F("CreateContextsLength", U32),
    )
    BUFFERS = (
        Buf("Name", "NameOffset", "NameLength", offset_if_empty="here"),
        Buf("CreateContexts", "CreateContextsOffset", "CreateContextsLength"),
    )

    @property
    def contexts(self) -> list[CreateContext]:
        return unpack_create_contexts(self.create_contexts) if self.create_contexts else []


class CreateResponse(Structure):
    """SMB2 CREATE Response, MS-SMB2 2.2.14 (StructureSize 89)."""

    STRUCTURE_SIZE = 89
    FIELDS = (
        F("OplockLevel", U8),
        F("Flags", U8),
        F("CreateAction", U32),
        F("CreationTime", U64),
        F("LastAccessTime", U64),
        F("LastWriteTime", U64),
        F("ChangeTime", U64),
        F("AllocationSize", U64),
        F("EndOfFile", U64),
        F("FileAttributes", U32),
        F("Reserved2", U32, 0, reserved=True, ignore=True),
        F("FileId", FILEID),
        F("CreateContextsOffset", U32),
        F("CreateContextsLength", U32),
    )
    BUFFERS = (Buf("CreateContexts", "CreateContextsOffset", "CreateContextsLength"),)


# --------------------------------------------------------------------- 2.2.15/16 CLOSE
class CloseRequest(Structure):
    """SMB2 CLOSE Request, MS-SMB2 2.2.15 (StructureSize 24)."""

    STRUCTURE_SIZE = 24
    FIELDS = (
        F("Flags", U16),
        F("Reserved", U32, 0, reserved=True, ignore=True),
        F("FileId", FILEID),
    )


class CloseResponse(Structure):
    """SMB2 CLOSE Response, MS-SMB2 2.2.16 (StructureSize 60)."""

    STRUCTURE_SIZE = 60
    FIELDS = (
        F("Flags", U16),
        F("Reserved", U32, 0, reserved=True),
        F("CreationTime", U64),
        F("LastAccessTime", U64),
        F("LastWriteTime", U64),
        F("ChangeTime", U64),
        F("AllocationSize", U64),
        F("EndOfFile", U64),
        F("FileAttributes", U32),
    )


# --------------------------------------------------------------------- 2.2.17 FLUSH
class FlushRequest(Structure):
    """SMB2 FLUSH Request, MS-SMB2 2.2.17 (StructureSize 24)."""

    STRUCTURE_SIZE = 24
    FIELDS = (
        F("Reserved1", U16, 0, reserved=True, ignore=True),
        F("Reserved2", U32, 0, reserved=True, ignore=True),
        F("FileId", FILEID),
    )


# --------------------------------------------------------------------- 2.2.19/20 READ
class ReadRequest(Structure):
    """SMB2 READ Request, MS-SMB2 2.2.19 (StructureSize 49)."""

    STRUCTURE_SIZE = 49
    FIELDS = (
        F("Padding", U8),
        F("Flags", U8),
        F("Length", U32),
        F("Offset", U64),
        F("FileId", FILEID),
        F("MinimumCount", U32),
        F("Channel", U32),
        F("RemainingBytes", U32),
        F("ReadChannelInfoOffset", U16),
        F("ReadChannelInfoLength", U16),
    )
    BUFFERS = (Buf("ReadChannelInfo", "ReadChannelInfoOffset", "ReadChannelInfoLength"),)


class ReadResponse(Structure):
    """SMB2 READ Response, MS-SMB2 2.2.20 (StructureSize 17). DataOffset is one byte."""

    STRUCTURE_SIZE = 17
    FIELDS = (
        F("DataOffset", U8),
        F("Reserved", U8, 0, reserved=True, ignore=True),
        F("DataLength", U32),
        F("DataRemaining", U32),
        F("Reserved2", U32, 0, reserved=True, ignore=True),
    )
    BUFFERS = (Buf("Data", "DataOffset", "DataLength", align=16, offset_if_empty="here"),)


# --------------------------------------------------------------------- 2.2.21/22 WRITE
class WriteRequest(Structure):
    """SMB2 WRITE Request, MS-SMB2 2.2.21 (StructureSize 49)."""

    STRUCTURE_SIZE = 49
    FIELDS = (
        F("DataOffset", U16),
        F("Length", U32),
        F("Offset", U64),
        F("FileId", FILEID),
        F("Channel", U32),
        F("RemainingBytes", U32),
        F("WriteChannelInfoOffset", U16),
        F("WriteChannelInfoLength", U16),
        F("Flags", U32),
    )
    BUFFERS = (
        Buf("Data", "DataOffset", "Length", align=16, offset_if_empty="here"),
        Buf("WriteChannelInfo", "WriteChannelInfoOffset", "WriteChannelInfoLength"),
    )


class WriteResponse(Structure):
    """SMB2 WRITE Response, MS-SMB2 2.2.22 (StructureSize 17)."""

    STRUCTURE_SIZE = 17
    FIELDS = (
        F("Reserved", U16, 0, reserved=True, ignore=True),
        F("Count", U32),
        F("Remaining", U32),
        F("WriteChannelInfoOffset", U16),
        F("WriteChannelInfoLength", U16),
    )


# --------------------------------------------------------------------- 2.2.23 - 2.2.25 OPLOCK_BREAK
class OplockBreakNotification(Structure):
    """Oplock Break Notification, MS-SMB2 2.2.23.1 (StructureSize 24); also the
    Oplock Break Acknowledgment (2.2.24.1) and Response (2.2.25.1), same layout."""

    STRUCTURE_SIZE = 24
    FIELDS = (
        F("OplockLevel", U8),
        F("Reserved", U8, 0, reserved=True, ignore=True),
        F("Reserved2", U32, 0, reserved=True, ignore=True),
        F("FileId", FILEID),
    )


class OplockBreakAcknowledgment(OplockBreakNotification):
    """Oplock Break Acknowledgment, MS-SMB2 2.2.24.1 (StructureSize 24)."""


class OplockBreakResponse(OplockBreakNotification):
    """Oplock Break Response, MS-SMB2 2.2.25.1 (StructureSize 24)."""


class LeaseBreakNotification(Structure):
    """Lease Break Notification, MS-SMB2 2.2.23.2 (StructureSize 44)."""

    STRUCTURE_SIZE = 44
    FIELDS = (
        F("NewEpoch", U16),
        F("Flags", U32),
        F("LeaseKey", GUID, b"\0" * 16),
        F("CurrentLeaseState", U32),
        F("NewLeaseState", U32),
        F("BreakReason", U32, 0, reserved=True, ignore=True),
        F("AccessMaskHint", U32, 0, reserved=True, ignore=True),
        F("ShareMaskHint", U32, 0, reserved=True, ignore=True),
    )


class LeaseBreakAcknowledgment(Structure):
    """Lease Break Acknowledgment, MS-SMB2 2.2.24.2 (StructureSize 36); the Lease Break
    Response (2.2.25.2) has the same layout."""

    STRUCTURE_SIZE = 36
    FIELDS = (
        F("Reserved", U16, 0, reserved=True, ignore=True),
        F("Flags", U32, 0, reserved=True, ignore=True),
        F("LeaseKey", GUID, b"\0" * 16),
        F("LeaseState", U32),
        F("LeaseDuration", U64, 0, reserved=True, ignore=True),
    )


class LeaseBreakResponse(LeaseBreakAcknowledgment):
    """Lease Break Response, MS-SMB2 2.2.25.2 (StructureSize 36)."""


# --------------------------------------------------------------------- 2.2.26 LOCK
class LockElement(Plain):
    """SMB2_LOCK_ELEMENT, MS-SMB2 2.2.26.1 (24 bytes)."""

    FIELDS = (
        F("Offset", U64),
        F("Length", U64),
        F("Flags", U32),
        F("Reserved", U32, 0, reserved=True, ignore=True),
    )


class LockRequest(Structure):
    """SMB2 LOCK Request, MS-SMB2 2.2.26 (StructureSize 48: 24 fixed + LockCount x 24).

    ``lock_sequence`` is LockSequenceNumber (low 4 bits) / LockSequenceIndex (high 28 bits).
    """

    STRUCTURE_SIZE = 48
    CHECK_SIZE = False
    FIELDS = (
        F("LockCount", U16),
        F("LockSequence", U32),
        F("FileId", FILEID),
    )

    def _init_extra(self, kw):
        self.locks = list(kw.pop("locks", []))

    def pack(self, base: int = 64) -> bytes:
        self.lock_count = len(self.locks)
        return super().pack(base)

    def _pack_extra(self, base, pos):
        return b"".join(lk.pack(0) for lk in self.locks)

    def _unpack_extra(self, msg, start, end, fields):
        n = fields["LockCount"]
        p = start + 24
        if n == 0 or p + 24 * n > end:
            raise StatusInvalidParameter("LOCK: bad LockCount")
        self.locks = [LockElement.unpack(msg, p + 24 * i, end) for i in range(n)]

    def _eq_extra(self, o):
        return self.locks == o.locks


# LockRequest's fixed part is 24 bytes while StructureSize is 48 (it counts one element).
LockRequest.FIXED_SIZE = 24


# --------------------------------------------------------------------- 2.2.31/32 IOCTL
class IoctlRequest(Structure):
    """SMB2 IOCTL Request, MS-SMB2 2.2.31 (StructureSize 57)."""

    STRUCTURE_SIZE = 57
    FIELDS = (
        F("Reserved", U16, 0, reserved=True, ignore=True),
        F("CtlCode", U32),
        F("FileId", FILEID),
        F("InputOffset", U32),
        F("InputCount", U32),
        F("MaxInputResponse", U32),
        F("OutputOffset", U32),
        F("OutputCount", U32),
        F("MaxOutputResponse", U32),
        F("Flags", U32),
        F("Reserved2", U32, 0, reserved=True, ignore=True),
    )
    BUFFERS = (
        Buf("Input", "InputOffset", "InputCount"),
        Buf("Output", "OutputOffset", "OutputCount"),
    )


class IoctlResponse(Structure):
    """SMB2 IOCTL Response, MS-SMB2 2.2.32 (StructureSize 49)."""

    STRUCTURE_SIZE = 49
    FIELDS = (
        F("Reserved", U16, 0, reserved=True, ignore=True),
        F("CtlCode", U32),
        F("FileId", FILEID),
        F("InputOffset", U32),
        F("InputCount", U32),
        F("OutputOffset", U32),
        F("OutputCount", U32),
        F("Flags", U32),
        F("Reserved2", U32, 0, reserved=True, ignore=True),
    )
    BUFFERS = (
        Buf("Input", "InputOffset", "InputCount", offset_if_empty="here"),
        Buf("Output", "OutputOffset", "OutputCount", offset_if_empty="here"),
    )


class NetworkInterfaceInfo(Plain):
    """NETWORK_INTERFACE_INFO, MS-SMB2 2.2.32.5 (152 bytes): one entry of the
    FSCTL_QUERY_NETWORK_INTERFACE_INFO output, chained by Next.  SockAddr_Storage is the
    128-byte SOCKADDR_STORAGE of 2.2.32.5.1 (see :func:`sockaddr_storage`)."""

    FIELDS = (
        F("Next", U32),
        F("IfIndex", U32),
        F("Capability", U32),  # RSS_CAPABLE 0x1, RDMA_CAPABLE 0x2
        F("Reserved", U32, 0, reserved=True, ignore=True),
        F("LinkSpeed", U64),  # bits per second
        F("SockAddrStorage", "128s"),
    )


def sockaddr_storage(host: str) -> bytes:
    """SOCKADDR_STORAGE (MS-SMB2 2.2.32.5.1): Family 0x0002 + Port 0 + IPv4Address + 8 zero
    bytes, or Family 0x0017 + Port 0 + FlowInfo 0 + IPv6Address + ScopeId 0; zero-padded to 128."""
    import ipaddress

    ip = ipaddress.ip_address(host.split("%")[0])
    if ip.version == 4:
        raw = struct.pack("<HH", 0x0002, 0) + ip.packed + b"\0" * 8
    else:
        raw = struct.pack("<HHI", 0x0017, 0, 0) + ip.packed + b"\0" * 4
    return raw + b"\0" * (128 - len(raw))


# --------------------------------------------------------------------- 2.2.33/34 QUERY_DIRECTORY
class QueryDirectoryRequest(Structure):
    """SMB2 QUERY_DIRECTORY Request, MS-SMB2 2.2.33 (StructureSize 33)."""

    STRUCTURE_SIZE = 33
    FIELDS = (
        F("FileInformationClass", U8),
        F("Flags", U8),
        F("FileIndex", U32),
        F("FileId", FILEID),
        F("FileNameOffset", U16),
        F("FileNameLength", U16),
        F("OutputBufferLength", U32),
    )
    BUFFERS = (Buf("FileName", "FileNameOffset", "FileNameLength"),)


class _OutputBufferResponse(Structure):
    STRUCTURE_SIZE = 9
    FIELDS = (
        F("OutputBufferOffset", U16),
        F("OutputBufferLength", U32),
    )
    BUFFERS = (Buf("OutputBuffer", "OutputBufferOffset", "OutputBufferLength", offset_if_empty="here"),)


class QueryDirectoryResponse(_OutputBufferResponse):
    """SMB2 QUERY_DIRECTORY Response, MS-SMB2 2.2.34 (StructureSize 9)."""


# --------------------------------------------------------------------- 2.2.35/36 CHANGE_NOTIFY
class ChangeNotifyRequest(Structure):
    """SMB2 CHANGE_NOTIFY Request, MS-SMB2 2.2.35 (StructureSize 32)."""

    STRUCTURE_SIZE = 32
    FIELDS = (
        F("Flags", U16),
        F("OutputBufferLength", U32),
        F("FileId", FILEID),
        F("CompletionFilter", U32),
        F("Reserved", U32, 0, reserved=True, ignore=True),
    )


class ChangeNotifyResponse(_OutputBufferResponse):
    """SMB2 CHANGE_NOTIFY Response, MS-SMB2 2.2.36 (StructureSize 9)."""


# --------------------------------------------------------------------- 2.2.37/38 QUERY_INFO
class QueryInfoRequest(Structure):
    """SMB2 QUERY_INFO Request, MS-SMB2 2.2.37 (StructureSize 41)."""

    STRUCTURE_SIZE = 41
    FIELDS = (
        F("InfoType", U8),
        F("FileInfoClass", U8),
        F("OutputBufferLength", U32),
        F("InputBufferOffset", U16),
        F("Reserved", U16, 0, reserved=True, ignore=True),
        F("InputBufferLength", U32),
        F("AdditionalInformation", U32),
        F("Flags", U32),
        F("FileId", FILEID),
    )
    BUFFERS = (Buf("InputBuffer", "InputBufferOffset", "InputBufferLength"),)


class QueryInfoResponse(_OutputBufferResponse):
    """SMB2 QUERY_INFO Response, MS-SMB2 2.2.38 (StructureSize 9)."""


# --------------------------------------------------------------------- 2.2.39/40 SET_INFO
class SetInfoRequest(Structure):
    """SMB2 SET_INFO Request, MS-SMB2 2.2.39 (StructureSize 33)."""

    STRUCTURE_SIZE = 33
    FIELDS = (
        F("InfoType", U8),
        F("FileInfoClass", U8),
        F("BufferLength", U32),
        F("BufferOffset", U16),
        F("Reserved", U16, 0, reserved=True, ignore=True),
        F("AdditionalInformation", U32),
        F("FileId", FILEID),
    )
    BUFFERS = (Buf("Buffer", "BufferOffset", "BufferLength"),)


class SetInfoResponse(Structure):
    """SMB2 SET_INFO Response, MS-SMB2 2.2.40 (StructureSize 2)."""

    STRUCTURE_SIZE = 2
    FIELDS = ()


# --------------------------------------------------------------------- tables
#: Command -> request structure (OPLOCK_BREAK: see parse_oplock_break_ack).
REQUESTS: dict[int, type[Structure]] = {
    Command.SMB2_NEGOTIATE: NegotiateRequest,
    Command.SMB2_SESSION_SETUP: SessionSetupRequest,
    Command.SMB2_LOGOFF: LogoffRequest,
    Command.SMB2_TREE_CONNECT: TreeConnectRequest,
    Command.SMB2_TREE_DISCONNECT: TreeDisconnectRequest,
    Command.SMB2_CREATE: CreateRequest,
    Command.SMB2_CLOSE: CloseRequest,
    Command.SMB2_FLUSH: FlushRequest,
    Command.SMB2_READ: ReadRequest,
    Command.SMB2_WRITE: WriteRequest,
    Command.SMB2_LOCK: LockRequest,
    Command.SMB2_IOCTL: IoctlRequest,
    Command.SMB2_CANCEL: CancelRequest,
    Command.SMB2_ECHO: EchoRequest,
    Command.SMB2_QUERY_DIRECTORY: QueryDirectoryRequest,
    Command.SMB2_CHANGE_NOTIFY: ChangeNotifyRequest,
    Command.SMB2_QUERY_INFO: QueryInfoRequest,
    Command.SMB2_SET_INFO: SetInfoRequest,
    Command.SMB2_OPLOCK_BREAK: OplockBreakAcknowledgment,
}

RESPONSES: dict[int, type[Structure]] = {
    Command.SMB2_NEGOTIATE: NegotiateResponse,
    Command.SMB2_SESSION_SETUP: SessionSetupResponse,
    Command.SMB2_LOGOFF: LogoffResponse,
    Command.SMB2_TREE_CONNECT: TreeConnectResponse,
    Command.SMB2_TREE_DISCONNECT: TreeDisconnectResponse,
    Command.SMB2_CREATE: CreateResponse,
    Command.SMB2_CLOSE: CloseResponse,
    Command.SMB2_FLUSH: FlushResponse,
    Command.SMB2_READ: ReadResponse,
    Command.SMB2_WRITE: WriteResponse,
    Command.SMB2_LOCK: LockResponse,
    Command.SMB2_IOCTL: IoctlResponse,
    Command.SMB2_ECHO: EchoResponse,
    Command.SMB2_QUERY_DIRECTORY: QueryDirectoryResponse,
    Command.SMB2_CHANGE_NOTIFY: ChangeNotifyResponse,
    Command.SMB2_QUERY_INFO: QueryInfoResponse,
    Command.SMB2_SET_INFO: SetInfoResponse,
    Command.SMB2_OPLOCK_BREAK: OplockBreakResponse,
}


def parse_request(command: int, msg: bytes, start: int = 64, end: int | None = None) -> Any:
    """Parse the body of a request of *command*.  OPLOCK_BREAK distinguishes the oplock
    (StructureSize 24) and lease (36) acknowledgments."""
    if command == Command.SMB2_OPLOCK_BREAK:
        if len(msg) >= start + 2 and struct.unpack_from("<H", msg, start)[0] == 36:
            return LeaseBreakAcknowledgment.unpack(msg, start, end)
        return OplockBreakAcknowledgment.unpack(msg, start, end)
    cls = REQUESTS.get(command)
    if cls is None:
        raise StatusInvalidParameter(f"unknown command 0x{command:x}")
    return cls.unpack(msg, start, end)


__all__ = [n for n in dir() if not n.startswith("_")] + ["FileId"]
