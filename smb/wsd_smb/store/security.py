"""Security descriptors (MS-DTYP 2.4.6, self-relative) for SMB2_0_INFO_SECURITY.

Default (nothing set by a client): owner and group are the Unix uid/gid mapped the way
Samba maps unmapped Unix ids (S-1-22-1-<uid>, S-1-22-2-<gid>), the DACL grants Everyone
(S-1-1-0) full control.  A descriptor a client sets (SET_INFO, or the SecD create
context) is validated, merged part by part and kept in the xattr ``user.wsd.sd``; it is
returned by later queries but NOT evaluated: access checks use the share's rules only
(docs/smb-store.md).  Only the parts named in AdditionalInformation are returned
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


# ============================================================== stored descriptors
SE_SACL_PRESENT = 0x0010
SACL_SECURITY_INFORMATION = 0x00000008
STATUS_INVALID_SECURITY_DESCR = 0xC0000079
XATTR_SD = "user.wsd.sd"


def _sid_len(buf: bytes, off: int) -> int:
    if off + 8 > len(buf) or buf[off] != 1 or buf[off + 1] > 15:
        raise ValueError("bad SID")
    n = 8 + 4 * buf[off + 1]
    if off + n > len(buf):
        raise ValueError("SID overruns the descriptor")
    return n


def _acl_len(buf: bytes, off: int) -> int:
    if off + 8 > len(buf):
        raise ValueError("ACL header overruns the descriptor")
    rev, _, size, count, _ = struct.unpack_from("<BBHHH", buf, off)
    if rev not in (2, 4) or size < 8 or off + size > len(buf):
        raise ValueError("bad ACL")
    pos = off + 8
    for _ in range(count):  # each ACE: type, flags, size
        if pos + 4 > off + size:
            raise ValueError("ACE overruns the ACL")
        ace_size = struct.unpack_from("<H", buf, pos + 2)[0]
        if ace_size < 4 or pos + ace_size > off + size:
            raise ValueError("bad ACE size")
        pos += ace_size
    return size


class Descriptor:
    """A parsed self-relative SECURITY_DESCRIPTOR (MS-DTYP 2.4.6): the raw owner, group,
    SACL and DACL (None when absent; a present NULL DACL is ``dacl=None`` with
    SE_DACL_PRESENT in ``control``)."""

    def __init__(self, control: int, owner: bytes | None, group: bytes | None,
                 sacl: bytes | None, dacl: bytes | None) -> None:
        self.control, self.owner, self.group, self.sacl, self.dacl = control, owner, group, sacl, dacl

    @classmethod
    def parse(cls, buf: bytes) -> "Descriptor":
        """Raises STATUS_INVALID_SECURITY_DESCR (as NtStatusError) on a malformed buffer."""
        from .errors import fail

        try:
            if len(buf) < 20:
                raise ValueError("shorter than the header")
            h = SecurityDescriptorHeader.unpack(buf, 0)
            if h.revision != 1 or not h.control & SE_SELF_RELATIVE:
                raise ValueError("not a self-relative revision 1 descriptor")

            def part(off: int, fn) -> bytes | None:
                if not off:
                    return None
                if off < 20:
                    raise ValueError("offset inside the header")
                return bytes(buf[off:off + fn(buf, off)])

            return cls(h.control, part(h.offset_owner, _sid_len), part(h.offset_group, _sid_len),
                       part(h.offset_sacl, _acl_len), part(h.offset_dacl, _acl_len))
        except (ValueError, struct.error) as e:
            raise fail(STATUS_INVALID_SECURITY_DESCR, str(e)) from None

    def pack(self, info: int = 0xF) -> bytes:
        """Self-relative form with the parts selected by *info*."""
        body = bytearray()
        pos = 20
        offs = {"owner": 0, "group": 0, "sacl": 0, "dacl": 0}
        control = (self.control | SE_SELF_RELATIVE) & ~(SE_DACL_PRESENT | SE_SACL_PRESENT)
        for name, bit, present in (("owner", OWNER_SECURITY_INFORMATION, None),
                                   ("group", GROUP_SECURITY_INFORMATION, None),
                                   ("sacl", SACL_SECURITY_INFORMATION, SE_SACL_PRESENT),
                                   ("dacl", DACL_SECURITY_INFORMATION, SE_DACL_PRESENT)):
            if not info & bit:
                continue
            if present is not None and self.control & present:
                control |= present
            data = getattr(self, name)
            if data is None:
                continue
            offs[name] = pos
            body += data
            pos += len(data)
        hdr = SecurityDescriptorHeader(control=control, offset_owner=offs["owner"], offset_group=offs["group"],
                                       offset_sacl=offs["sacl"], offset_dacl=offs["dacl"])
        return hdr.pack(0) + bytes(body)

    def merge(self, new: "Descriptor", info: int) -> "Descriptor":
        """This descriptor with the parts named by *info* taken from *new* (SET_INFO)."""
        out = Descriptor(self.control, self.owner, self.group, self.sacl, self.dacl)
        if info & OWNER_SECURITY_INFORMATION:
            out.owner = new.owner
        if info & GROUP_SECURITY_INFORMATION:
            out.group = new.group
        for bit, present, name in ((DACL_SECURITY_INFORMATION, SE_DACL_PRESENT, "dacl"),
                                   (SACL_SECURITY_INFORMATION, SE_SACL_PRESENT, "sacl")):
            if info & bit:
                setattr(out, name, getattr(new, name))
                out.control = (out.control & ~present) | (new.control & present)
        return out


def default_descriptor(uid: int, gid: int) -> Descriptor:
    return Descriptor.parse(security_descriptor(uid, gid, OWNER_SECURITY_INFORMATION | GROUP_SECURITY_INFORMATION
                                                | DACL_SECURITY_INFORMATION))
