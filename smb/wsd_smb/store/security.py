"""A minimal self-relative SECURITY_DESCRIPTOR (MS-DTYP 2.4.6) for QUERY_INFO
SMB2_0_INFO_SECURITY: owner and group are the Unix uid/gid mapped the way Samba maps
unmapped Unix ids (S-1-22-1-<uid>, S-1-22-2-<gid>), the DACL grants Everyone
(S-1-1-0) full control.  Only the parts named in AdditionalInformation are included
(MS-SMB2 3.3.5.20.3)."""
from __future__ import annotations

import struct

from ..wire.base import F, Plain, U8, U16, U32
from .constants import (
    DACL_SECURITY_INFORMATION,
    FILE_ALL_ACCESS,
    GROUP_SECURITY_INFORMATION,
    OWNER_SECURITY_INFORMATION,
)

# SECURITY_DESCRIPTOR Control bits (MS-DTYP 2.4.6)
SE_DACL_PRESENT = 0x0004
SE_SELF_RELATIVE = 0x8000
ACCESS_ALLOWED_ACE_TYPE = 0x00
ACL_REVISION = 2


class Sid:
    """MS-DTYP 2.4.2.2 SID: Revision(1)=1, SubAuthorityCount(1), IdentifierAuthority(6,
    big-endian), SubAuthority[n] (4 bytes each, little-endian)."""

    def __init__(self, authority: int, *sub: int) -> None:
        self.authority = authority
        self.sub = tuple(sub)

    @classmethod
    def parse(cls, text: str) -> "Sid":
        parts = text.split("-")
        if parts[0] != "S" or parts[1] != "1":
            raise ValueError(text)
        return cls(int(parts[2]), *(int(p) for p in parts[3:]))

    def pack(self) -> bytes:
        return (
            struct.pack("<BB", 1, len(self.sub))
            + self.authority.to_bytes(6, "big")
            + b"".join(struct.pack("<I", s) for s in self.sub)
        )

    def __str__(self) -> str:
        return "S-1-" + "-".join(str(x) for x in (self.authority, *self.sub))


EVERYONE = Sid(1, 0)


def unix_user_sid(uid: int) -> Sid:
    return Sid(22, 1, uid)


def unix_group_sid(gid: int) -> Sid:
    return Sid(22, 2, gid)


class AceHeader(Plain):
    """MS-DTYP 2.4.4.1 ACE_HEADER + the Mask of ACCESS_ALLOWED_ACE (2.4.4.2); the SID follows."""

    FIELDS = (F("AceType", U8), F("AceFlags", U8), F("AceSize", U16), F("Mask", U32))


class AclHeader(Plain):
    """MS-DTYP 2.4.5 ACL header: AclRevision, Sbz1, AclSize, AceCount, Sbz2."""

    FIELDS = (
        F("AclRevision", U8, ACL_REVISION),
        F("Sbz1", U8, reserved=True),
        F("AclSize", U16),
        F("AceCount", U16),
        F("Sbz2", U16, reserved=True),
    )


class SecurityDescriptorHeader(Plain):
    """MS-DTYP 2.4.6 SECURITY_DESCRIPTOR (self-relative) fixed part, 20 bytes."""

    FIELDS = (
        F("Revision", U8, 1),
        F("Sbz1", U8, reserved=True),
        F("Control", U16),
        F("OffsetOwner", U32),
        F("OffsetGroup", U32),
        F("OffsetSacl", U32),
        F("OffsetDacl", U32),
    )


def access_allowed_ace(sid: Sid, mask: int, flags: int = 0) -> bytes:
    s = sid.pack()
    return AceHeader(ace_type=ACCESS_ALLOWED_ACE_TYPE, ace_flags=flags, ace_size=8 + len(s), mask=mask).pack(0) + s


def acl(aces: list[bytes]) -> bytes:
    body = b"".join(aces)
    return AclHeader(acl_size=8 + len(body), ace_count=len(aces)).pack(0) + body


def security_descriptor(uid: int, gid: int, info: int) -> bytes:
    """Self-relative descriptor with the parts selected by *info* (OWNER/GROUP/DACL)."""
    body = bytearray()
    pos = 20
    off_owner = off_group = off_dacl = 0
    control = SE_SELF_RELATIVE
    if info & OWNER_SECURITY_INFORMATION:
        b = unix_user_sid(uid).pack()
        off_owner = pos
        body += b
        pos += len(b)
    if info & GROUP_SECURITY_INFORMATION:
        b = unix_group_sid(gid).pack()
        off_group = pos
        body += b
        pos += len(b)
    if info & DACL_SECURITY_INFORMATION:
        b = acl([access_allowed_ace(EVERYONE, FILE_ALL_ACCESS)])
        off_dacl = pos
        control |= SE_DACL_PRESENT
        body += b
        pos += len(b)
    hdr = SecurityDescriptorHeader(
        control=control, offset_owner=off_owner, offset_group=off_group, offset_sacl=0, offset_dacl=off_dacl
    )
    return hdr.pack(0) + bytes(body)
