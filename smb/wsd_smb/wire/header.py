"""SMB2 packet header (MS-SMB2 2.2.1), TRANSFORM header (2.2.41), command codes and flags."""
from __future__ import annotations

import enum
import struct

from ..ntstatus import StatusInvalidParameter
from .base import F, U16, U32, U64, Bytes, Structure

SMB2_PROTOCOL_ID = b"\xfeSMB"
SMB2_TRANSFORM_PROTOCOL_ID = b"\xfdSMB"
SMB2_COMPRESSION_PROTOCOL_ID = b"\xfcSMB"
SMB1_PROTOCOL_ID = b"\xffSMB"
HEADER_SIZE = 64


class Command(enum.IntEnum):
    """MS-SMB2 2.2.1.2 Command."""

    SMB2_NEGOTIATE = 0x0000
    SMB2_SESSION_SETUP = 0x0001
    SMB2_LOGOFF = 0x0002
    SMB2_TREE_CONNECT = 0x0003
    SMB2_TREE_DISCONNECT = 0x0004
    SMB2_CREATE = 0x0005
    SMB2_CLOSE = 0x0006
    SMB2_FLUSH = 0x0007
    SMB2_READ = 0x0008
    SMB2_WRITE = 0x0009
    SMB2_LOCK = 0x000A
    SMB2_IOCTL = 0x000B
    SMB2_CANCEL = 0x000C
    SMB2_ECHO = 0x000D
    SMB2_QUERY_DIRECTORY = 0x000E
    SMB2_CHANGE_NOTIFY = 0x000F
    SMB2_QUERY_INFO = 0x0010
    SMB2_SET_INFO = 0x0011
    SMB2_OPLOCK_BREAK = 0x0012


# Flags, MS-SMB2 2.2.1.2
SMB2_FLAGS_SERVER_TO_REDIR = 0x00000001
SMB2_FLAGS_ASYNC_COMMAND = 0x00000002
SMB2_FLAGS_RELATED_OPERATIONS = 0x00000004
SMB2_FLAGS_SIGNED = 0x00000008
SMB2_FLAGS_PRIORITY_MASK = 0x00000070
SMB2_FLAGS_DFS_OPERATIONS = 0x10000000
SMB2_FLAGS_REPLAY_OPERATION = 0x20000000


class Smb2Header:
    """SMB2 Packet Header, MS-SMB2 2.2.1.1 (ASYNC) and 2.2.1.2 (SYNC).

    Layout (64 bytes, little-endian): ProtocolId(4)=0xFE 'SMB', StructureSize(2)=64,
    CreditCharge(2), Status/ChannelSequence+Reserved(4), Command(2),
    CreditRequest/CreditResponse(2), Flags(4), NextCommand(4), MessageId(8),
    then ASYNC: AsyncId(8) | SYNC: Reserved(4) (ProcessId by convention, ignored) + TreeId(4),
    SessionId(8), Signature(16).

    ``status`` holds the 4-byte Status field (in requests of SMB 3.x it is
    ChannelSequence(2)+Reserved(2)); ``credit`` is CreditRequest/CreditResponse.
    """

    _st = struct.Struct("<4sHHIHHIIQQQ16s")
    __slots__ = (
        "credit_charge", "status", "command", "credit", "flags", "next_command",
        "message_id", "async_id", "process_id", "tree_id", "session_id", "signature",
    )

    def __init__(self, command: int = 0, *, credit_charge: int = 0, status: int = 0, credit: int = 0,
                 flags: int = 0, next_command: int = 0, message_id: int = 0, async_id: int = 0,
                 process_id: int = 0, tree_id: int = 0, session_id: int = 0, signature: bytes = b"\0" * 16):
        self.command = command
        self.credit_charge = credit_charge
        self.status = status
        self.credit = credit
        self.flags = flags
        self.next_command = next_command
        self.message_id = message_id
        self.async_id = async_id
        self.process_id = process_id
        self.tree_id = tree_id
        self.session_id = session_id
        self.signature = signature

    @property
    def is_async(self) -> bool:
        return bool(self.flags & SMB2_FLAGS_ASYNC_COMMAND)

    @property
    def is_related(self) -> bool:
        return bool(self.flags & SMB2_FLAGS_RELATED_OPERATIONS)

    @property
    def is_signed(self) -> bool:
        return bool(self.flags & SMB2_FLAGS_SIGNED)

    @property
    def channel_sequence(self) -> int:
        return self.status & 0xFFFF

    def pack(self) -> bytes:
        if self.flags & SMB2_FLAGS_ASYNC_COMMAND:
            tail = self.async_id
        else:
            tail = (self.process_id & 0xFFFFFFFF) | ((self.tree_id & 0xFFFFFFFF) << 32)
        return self._st.pack(SMB2_PROTOCOL_ID, 64, self.credit_charge, self.status, self.command, self.credit,
                             self.flags, self.next_command, self.message_id, tail, self.session_id, self.signature)

    @classmethod
    def unpack(cls, msg: bytes | memoryview, start: int = 0) -> "Smb2Header":
        if len(msg) - start < HEADER_SIZE:
            raise StatusInvalidParameter("SMB2 header truncated")
        (pid, size, cc, status, cmd, credit, flags, nxt, mid, tail, sid, sig) = cls._st.unpack_from(msg, start)
        if pid != SMB2_PROTOCOL_ID:
            raise StatusInvalidParameter(f"bad ProtocolId {pid!r}")
        if size != 64:
            raise StatusInvalidParameter(f"bad header StructureSize {size}")
        h = cls(cmd, credit_charge=cc, status=status, credit=credit, flags=flags, next_command=nxt,
                message_id=mid, session_id=sid, signature=bytes(sig))
        if flags & SMB2_FLAGS_ASYNC_COMMAND:
            h.async_id = tail
        else:
            h.process_id = tail & 0xFFFFFFFF
            h.tree_id = tail >> 32
        return h

    def __repr__(self) -> str:
        try:
            name = Command(self.command).name
        except ValueError:
            name = hex(self.command)
        return (f"Smb2Header({name}, mid={self.message_id}, flags=0x{self.flags:x}, sid=0x{self.session_id:x}, "
                f"tid={self.tree_id}, status=0x{self.status:08x}, credit={self.credit}, cc={self.credit_charge}, "
                f"next={self.next_command})")


class TransformHeader(Structure):
    """SMB2 TRANSFORM_HEADER, MS-SMB2 2.2.41 (52 bytes).

    ProtocolId(4)=0xFD 'SMB', Signature(16), Nonce(16) (AES-CCM uses the first 11 bytes,
    AES-GCM the first 12; the rest are zero), OriginalMessageSize(4), Reserved(2),
    Flags/EncryptionAlgorithm(2) (0x0001 = Encrypted), SessionId(8).
    The AAD for encryption is the 32 bytes from Nonce to the end.
    """

    FIELDS = (
        F("ProtocolId", Bytes(4), SMB2_TRANSFORM_PROTOCOL_ID, reserved=True),
        F("Signature", Bytes(16), b"\0" * 16),
        F("Nonce", Bytes(16), b"\0" * 16),
        F("OriginalMessageSize", U32),
        F("Reserved", U16, 0, reserved=True, ignore=True),
        F("Flags", U16, 0x0001),
        F("SessionId", U64),
    )


SMB2_TRANSFORM_HEADER_SIZE = 52
