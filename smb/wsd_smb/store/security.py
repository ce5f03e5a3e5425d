"""Security descriptors (MS-DTYP 2.4.6, self-relative) for SMB2_0_INFO_SECURITY, and
their evaluation (MS-DTYP 2.5.3).

Default (nothing stored): owner is the SMB user who created the file (``user.wsd.owner``)
or, for a file made outside SMB, the Unix uid mapped the way Samba maps unmapped Unix ids
(S-1-22-1-<uid>); group S-1-22-2-<gid>; the DACL grants Everyone (S-1-1-0) full control.
A descriptor a client sets (SET_INFO, the SecD create context) or that a new file inherits
from its parent is kept in the xattr ``user.wsd.sd`` and enforced at CREATE
(:func:`maximum_allowed`, objectstore.py; docs/smb-store.md "Security descriptors").
Only the parts named in AdditionalInformation are returned (MS-SMB2 3.3.5.20.3)."""
from __future__ import annotations

import functools
import hashlib
import struct

from ..wire.base import F, Plain, U8, U16, U32
from .constants import (
    ACCESS_SYSTEM_SECURITY,
    DACL_SECURITY_INFORMATION,
    DELETE,
    FILE_ADD_FILE,
    FILE_ADD_SUBDIRECTORY,
    FILE_ALL_ACCESS,
    FILE_GENERIC_READ,
    FILE_GENERIC_WRITE,
    FILE_TRAVERSE,
    GROUP_SECURITY_INFORMATION,
    OWNER_SECURITY_INFORMATION,
    READ_CONTROL,
    WRITE_DAC,
    WRITE_OWNER,
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
        if info & DACL_SECURITY_INFORMATION and out.dacl is not None:
            out.dacl = map_generic_acl(out.dacl)
        if info & DACL_SECURITY_INFORMATION:
            # a DACL set without SE_DACL_PRESENT is a NULL DACL (as Windows keeps it); the
            # DACL's PROTECTED bit comes with it, AUTO_INHERITED only together with
            # AUTO_INHERIT_REQ (which is not stored; smbtorture smb2.acls.INHERITFLAGS)
            out.control = (out.control & ~(SE_DACL_PROTECTED | SE_DACL_AUTO_INHERITED | SE_DACL_AUTO_INHERIT_REQ)) \
                | SE_DACL_PRESENT | (new.control & SE_DACL_PROTECTED)
            if new.control & SE_DACL_AUTO_INHERITED and new.control & SE_DACL_AUTO_INHERIT_REQ:
                out.control |= SE_DACL_AUTO_INHERITED
        return out


def default_descriptor(uid: int, gid: int) -> Descriptor:
    return Descriptor.parse(security_descriptor(uid, gid, OWNER_SECURITY_INFORMATION | GROUP_SECURITY_INFORMATION
                                                | DACL_SECURITY_INFORMATION))


# ============================================================== evaluation (MS-DTYP 2.5.3)
ACCESS_DENIED_ACE_TYPE = 0x01
# ACE_HEADER AceFlags (MS-DTYP 2.4.4.1)
OBJECT_INHERIT_ACE = 0x01
CONTAINER_INHERIT_ACE = 0x02
NO_PROPAGATE_INHERIT_ACE = 0x04
INHERIT_ONLY_ACE = 0x08
INHERITED_ACE = 0x10
INHERIT_FLAGS = OBJECT_INHERIT_ACE | CONTAINER_INHERIT_ACE | NO_PROPAGATE_INHERIT_ACE | INHERIT_ONLY_ACE
# SECURITY_DESCRIPTOR Control bits (MS-DTYP 2.4.6)
SE_DACL_AUTO_INHERIT_REQ = 0x0100
SE_DACL_AUTO_INHERITED = 0x0400
SID_LOCAL_SYSTEM = Sid(5, 18).pack()
SE_DACL_PROTECTED = 0x1000

# well-known SIDs (MS-DTYP 2.4.2.4), packed
SID_EVERYONE = EVERYONE.pack()
SID_CREATOR_OWNER = Sid(3, 0).pack()
SID_CREATOR_GROUP = Sid(3, 1).pack()
SID_OWNER_RIGHTS = Sid(3, 4).pack()
SID_NETWORK = Sid(5, 2).pack()
SID_ANONYMOUS = Sid(5, 7).pack()
SID_AUTHENTICATED_USERS = Sid(5, 11).pack()
SID_BUILTIN_ADMINISTRATORS = Sid(5, 32, 544).pack()
SID_BUILTIN_USERS = Sid(5, 32, 545).pack()
SID_BUILTIN_GUESTS = Sid(5, 32, 546).pack()
DOMAIN_USER_RID_GUEST = 501
DOMAIN_GROUP_RID_USERS = 513  # "None" on a stand-alone server

#: the xattr that records who created a file over SMB (a packed SID): the owner of the
#: default descriptor of a file that has no stored one
XATTR_OWNER = "user.wsd.owner"


def sid_text(packed: bytes) -> str:
    n = packed[1]
    auth = int.from_bytes(packed[2:8], "big")
    subs = struct.unpack_from(f"<{n}I", packed, 8)
    return str(Sid(auth, *subs))


class Ace:
    """One ACE of an ACL (MS-DTYP 2.4.4): type, flags, access mask and the packed SID.
    Only ACCESS_ALLOWED_ACE and ACCESS_DENIED_ACE are evaluated; other types are kept
    (raw) and take no part in access checks."""

    __slots__ = ("ace_type", "flags", "mask", "sid", "raw")

    def __init__(self, ace_type: int, flags: int, mask: int, sid: bytes, raw: bytes | None = None) -> None:
        self.ace_type, self.flags, self.mask, self.sid, self.raw = ace_type, flags, mask, sid, raw

    def pack(self) -> bytes:
        if self.raw is not None:
            return self.raw[:1] + bytes([self.flags]) + self.raw[2:]
        return AceHeader(ace_type=self.ace_type, ace_flags=self.flags, ace_size=8 + len(self.sid),
                         mask=self.mask).pack(0) + self.sid

    def __repr__(self) -> str:
        return f"Ace(type={self.ace_type}, flags=0x{self.flags:x}, mask=0x{self.mask:x}, sid={sid_text(self.sid)})"


def parse_acl(raw: bytes) -> list[Ace]:
    """The ACEs of a validated ACL (``Descriptor`` has checked the sizes)."""
    _, _, size, count, _ = struct.unpack_from("<BBHHH", raw, 0)
    out, pos = [], 8
    for _ in range(count):
        ace_type, flags, ace_size = struct.unpack_from("<BBH", raw, pos)
        body = bytes(raw[pos:pos + ace_size])
        if ace_type in (ACCESS_ALLOWED_ACE_TYPE, ACCESS_DENIED_ACE_TYPE) and ace_size >= 16:
            mask = struct.unpack_from("<I", body, 4)[0]
            try:
                n = _sid_len(body, 8)
            except ValueError:
                n = 0
            out.append(Ace(ace_type, flags, mask, body[8:8 + n]) if n else Ace(ace_type, flags, mask, b"", body))
        else:
            out.append(Ace(ace_type, flags, 0, b"", body))
        pos += ace_size
    return out


def map_generic_acl(raw: bytes) -> bytes:
    """*raw* with GENERIC_* bits of the effective ACEs mapped to file rights, as Windows
    stores a descriptor it is given (smbtorture smb2.acls.CREATOR/GENERIC); inherit-only
    ACEs keep theirs (they are mapped when inherited)."""
    from .constants import map_generic

    aces = parse_acl(raw)
    changed = False
    for a in aces:
        if a.raw is None and not a.flags & INHERIT_ONLY_ACE and a.mask & 0xF0000000:
            a.mask = map_generic(a.mask)
            changed = True
    return pack_acl(aces, raw[0]) if changed else raw


def pack_acl(aces: list[Ace], revision: int = ACL_REVISION) -> bytes:
    body = b"".join(a.pack() for a in aces)
    return AclHeader(acl_revision=revision, acl_size=8 + len(body), ace_count=len(aces)).pack(0) + body


# ============================================================== privileges
#: Privilege names (MS-LSAD 3.1.1.2.1, the SE_*_NAME constants of winnt.h) that take part
#: in wsd-smbd's access checks (MS-FSA 2.1.5.1.2.1, MS-DTYP 2.5.3.2)
SE_BACKUP_NAME = "SeBackupPrivilege"
SE_RESTORE_NAME = "SeRestorePrivilege"
SE_TAKE_OWNERSHIP_NAME = "SeTakeOwnershipPrivilege"
SE_SECURITY_NAME = "SeSecurityPrivilege"
PRIVILEGE_NAMES = (SE_BACKUP_NAME, SE_RESTORE_NAME, SE_TAKE_OWNERSHIP_NAME, SE_SECURITY_NAME)
#: what an ``admin`` account holds (and a network logon has enabled), as BUILTIN\Administrators
#: on a Windows file server
ADMIN_PRIVILEGES = frozenset(PRIVILEGE_NAMES)


def privilege_name(text: str) -> str:
    """The canonical spelling of a privilege name (compared case-insensitively, as
    LookupPrivilegeValue does); ValueError for a name not in :data:`PRIVILEGE_NAMES`."""
    for name in PRIVILEGE_NAMES:
        if text.lower() == name.lower():
            return name
    raise ValueError(text)


class Token:
    """The security identity of an SMB session (MS-DTYP 2.5.2 Token, reduced): the user's
    SID, its group SIDs, the primary group new objects get (SIDs packed) and the enabled
    privileges (names, :data:`PRIVILEGE_NAMES`)."""

    __slots__ = ("user", "groups", "primary_group", "sids", "privileges")

    def __init__(self, user: bytes, groups: tuple[bytes, ...], primary_group: bytes,
                 privileges: frozenset = frozenset()) -> None:
        self.user, self.groups, self.primary_group = user, groups, primary_group
        self.sids = frozenset((user, *groups))
        self.privileges = frozenset(privileges)

    def __repr__(self) -> str:
        return (f"Token(user={sid_text(self.user)}, groups={[sid_text(g) for g in self.groups]}, "
                f"privileges={sorted(self.privileges)})")


def _h32(text: str, n: int) -> tuple[int, ...]:
    d = hashlib.sha256(text.encode("utf-8")).digest()
    return struct.unpack_from(f"<{n}I", d, 0)


def machine_sid(server_name: str) -> tuple[int, ...]:
    """The S-1-5-21-x-y-z sub-authorities of this server's accounts: derived from the
    server name, so they are the same after a restart."""
    return (21, *_h32("wsd-machine-sid:" + server_name.upper(), 3))


def user_rid(user_name: str) -> int:
    """A stable RID for a configured account: 1000 + 30 bits of a hash of the lower-case
    name (Windows numbers local accounts from 1000)."""
    return 1000 + (_h32("wsd-user-rid:" + user_name.lower(), 1)[0] & 0x3FFFFFFF)


@functools.lru_cache(maxsize=1024)
def token_for(server_name: str, user_name: str, is_admin: bool = False, is_guest: bool = False,
              is_anonymous: bool = False, privileges: frozenset = frozenset()) -> Token:
    """The Token of a session.  An account: S-1-5-21-<machine>-<rid>, with Everyone,
    NETWORK, Authenticated Users, BUILTIN\\Users (and BUILTIN\\Administrators for an
    ``admin`` account).  Guest: the machine's Guest (RID 501) with Everyone, NETWORK and
    BUILTIN\\Guests.  Anonymous: ANONYMOUS LOGON (S-1-5-7) with NETWORK only (Windows
    leaves Everyone out of anonymous tokens by default).

    Privileges: an account's *privileges* (config ``[[user]] privileges``), plus
    :data:`ADMIN_PRIVILEGES` for an ``admin`` account; guest and anonymous hold none."""
    m = machine_sid(server_name)
    primary = Sid(5, *m, DOMAIN_GROUP_RID_USERS).pack()
    if is_anonymous:
        return Token(SID_ANONYMOUS, (SID_NETWORK,), SID_ANONYMOUS)
    if is_guest:
        return Token(Sid(5, *m, DOMAIN_USER_RID_GUEST).pack(), (SID_EVERYONE, SID_NETWORK, SID_BUILTIN_GUESTS),
                     primary)
    groups = [SID_EVERYONE, SID_NETWORK, SID_AUTHENTICATED_USERS, SID_BUILTIN_USERS, primary]
    privs = frozenset(privileges)
    if is_admin:
        groups.append(SID_BUILTIN_ADMINISTRATORS)
        privs |= ADMIN_PRIVILEGES
    return Token(Sid(5, *m, user_rid(user_name)).pack(), tuple(groups), primary, privs)


def has_dacl(sd: Descriptor) -> bool:
    """The descriptor has a DACL that is not NULL (a NULL or absent DACL grants all)."""
    return bool(sd.control & SE_DACL_PRESENT) and sd.dacl is not None


def maximum_allowed(sd: Descriptor, token: Token) -> int:
    """The access mask *token* is granted by *sd* (MS-DTYP 2.5.3.2 with MAXIMUM_ALLOWED):
    the owner's implicit READ_CONTROL | WRITE_DAC (unless an OWNER RIGHTS ACE is present),
    then the DACL in stored order -- a bit allowed before it is denied is granted, a bit
    denied before it is allowed is not.  Inherit-only ACEs take no part; GENERIC_* bits in
    ACE masks are mapped (file generic mapping).  A NULL DACL grants everything, an
    empty one nothing (but the owner's rights).

    A DesiredAccess D (mapped) is granted exactly when ``D & ~maximum_allowed(...) == 0``:
    per bit, both algorithms look for the first ACE that names it."""
    from .constants import READ_CONTROL, WRITE_DAC, map_generic

    if not has_dacl(sd):
        return FILE_ALL_ACCESS
    aces = parse_acl(sd.dacl)
    is_owner = sd.owner is not None and sd.owner in token.sids
    granted = denied = 0
    if is_owner and not any(a.sid == SID_OWNER_RIGHTS and not a.flags & INHERIT_ONLY_ACE for a in aces):
        granted = READ_CONTROL | WRITE_DAC
    for a in aces:
        if a.flags & INHERIT_ONLY_ACE or a.ace_type not in (ACCESS_ALLOWED_ACE_TYPE, ACCESS_DENIED_ACE_TYPE):
            continue
        if not (a.sid in token.sids or (is_owner and a.sid == SID_OWNER_RIGHTS)):
            continue
        mask = map_generic(a.mask) & FILE_ALL_ACCESS
        if a.ace_type == ACCESS_ALLOWED_ACE_TYPE:
            granted |= mask & ~denied
        else:
            denied |= mask & ~granted
    return granted & FILE_ALL_ACCESS


def access_check(sd: Descriptor, token: Token, desired: int) -> int:
    """The bits of *desired* (already generic-mapped, no MAXIMUM_ALLOWED) that *sd*
    does NOT grant to *token* (0: access granted)."""
    return desired & ~maximum_allowed(sd, token)


def _inherited_aces(parent: Descriptor, is_container: bool, owner: bytes, group: bytes) -> list[Ace]:
    aces = _inherited_aces_flagged(parent, is_container, owner, group)
    if not parent.control & SE_DACL_AUTO_INHERITED:
        for a in aces:
            a.flags &= ~INHERITED_ACE
    return aces


def _inherited_aces_flagged(parent: Descriptor, is_container: bool, owner: bytes, group: bytes) -> list[Ace]:
    """MS-DTYP 2.5.3.4.2 ComputeInheritedACLfromParent for the DACL: the ACEs a new file
    (OBJECT_INHERIT) or directory (CONTAINER_INHERIT, or OBJECT_INHERIT kept inherit-only
    for its own children) gets from its parent, flagged INHERITED_ACE when the parent's
    DACL is SE_DACL_AUTO_INHERITED (Windows; smbtorture smb2.acls.INHERITANCE/INHERITFLAGS,
    the flag is dropped again by the wrapper above otherwise).  CREATOR OWNER /
    CREATOR GROUP become the new owner / group and GENERIC_* bits are mapped in the
    effective copy; a directory keeps the original as an inherit-only ACE so that it is
    passed on again (unless NO_PROPAGATE_INHERIT)."""
    from .constants import map_generic

    if not has_dacl(parent):
        return []
    out: list[Ace] = []
    for a in parse_acl(parent.dacl):
        if a.ace_type not in (ACCESS_ALLOWED_ACE_TYPE, ACCESS_DENIED_ACE_TYPE) or not a.sid:
            continue
        oi, ci = bool(a.flags & OBJECT_INHERIT_ACE), bool(a.flags & CONTAINER_INHERIT_ACE)
        no_prop = bool(a.flags & NO_PROPAGATE_INHERIT_ACE)
        sid = owner if a.sid == SID_CREATOR_OWNER else group if a.sid == SID_CREATOR_GROUP else a.sid
        effective = Ace(a.ace_type, INHERITED_ACE, map_generic(a.mask) & 0xFFFFFFFF, sid)
        if not is_container:
            if oi:
                out.append(effective)
            continue
        if ci:
            if no_prop:
                out.append(effective)
            elif sid != a.sid or map_generic(a.mask) != a.mask:
                out.append(effective)  # substituted/mapped copy, then the original for the children
                out.append(Ace(a.ace_type, (a.flags & (OBJECT_INHERIT_ACE | CONTAINER_INHERIT_ACE))
                               | INHERIT_ONLY_ACE | INHERITED_ACE, a.mask, a.sid))
            else:
                out.append(Ace(a.ace_type, (a.flags & (OBJECT_INHERIT_ACE | CONTAINER_INHERIT_ACE))
                               | INHERITED_ACE, a.mask, a.sid))
        elif oi and not no_prop:
            out.append(Ace(a.ace_type, OBJECT_INHERIT_ACE | INHERIT_ONLY_ACE | INHERITED_ACE, a.mask, a.sid))
    return out


def inherit(parent: Descriptor | None, is_container: bool, creator: Descriptor | None,
            owner: bytes, group: bytes) -> Descriptor | None:
    """The descriptor of a new file or directory (MS-DTYP 2.5.3.4.1 CreateSecurityDescriptor,
    no SACL).  *parent*: the parent's stored descriptor, None when it has none -- such a
    directory acts as if it passed on Everyone full control, the default, so nothing is
    stored for its children unless the creator gives a descriptor.

    Owner and group come from *creator* (the SecD create context) where it has them, else
    the creating user's.  DACL: the creator's (GENERIC_* mapped), with the inherited ACEs
    appended when the parent's DACL is SE_DACL_AUTO_INHERITED and the creator's is not
    PROTECTED (a NULL one stays NULL); without one from the creator, the inherited ACEs;
    with nothing inheritable from a stored parent, the default DACL of a Windows token
    (owner and SYSTEM full control).  The new DACL is SE_DACL_AUTO_INHERITED (and its
    inherited ACEs INHERITED_ACE) when the parent's is.  None: nothing to store."""
    own = creator.owner if creator is not None and creator.owner else owner
    grp = creator.group if creator is not None and creator.group else group
    inherited = _inherited_aces(parent, is_container, own, grp) if parent is not None else []
    auto = SE_DACL_AUTO_INHERITED if parent is not None and parent.control & SE_DACL_AUTO_INHERITED else 0
    control = SE_SELF_RELATIVE | SE_DACL_PRESENT
    if creator is not None and creator.control & SE_DACL_PRESENT:
        control |= creator.control & SE_DACL_PROTECTED
        if creator.dacl is None:
            dacl = None  # a NULL DACL stays NULL
        else:
            explicit = parse_acl(map_generic_acl(creator.dacl))
            if auto and not creator.control & SE_DACL_PROTECTED:
                explicit = explicit + inherited
                control |= auto
            dacl = pack_acl(explicit, creator.dacl[0])
    elif inherited:
        control |= auto
        dacl = pack_acl(inherited)
    elif parent is not None:  # nothing inheritable: the token's default DACL
        dacl = pack_acl([Ace(ACCESS_ALLOWED_ACE_TYPE, 0, FILE_ALL_ACCESS, own),
                         Ace(ACCESS_ALLOWED_ACE_TYPE, 0, FILE_ALL_ACCESS, SID_LOCAL_SYSTEM)])
    elif creator is None:
        return None
    else:  # a creator descriptor without a DACL under a parent without one: the default
        dacl = acl([access_allowed_ace(EVERYONE, FILE_ALL_ACCESS)])
    return Descriptor(control, own, grp, None, dacl)


STATUS_INVALID_OWNER = 0xC000005A


def check_owner(token: "Token", owner: bytes | None) -> None:
    """An owner a session may give an object (SET_INFO OWNER, the SecD create context):
    itself, BUILTIN\\Administrators when it is a member (the group Windows lets an
    administrator own objects as), any SID with SeRestorePrivilege (MS-DTYP 2.5.3.4.1,
    the owner check; an ``admin`` account holds it).  Otherwise STATUS_INVALID_OWNER."""
    from .errors import fail

    if owner is None or owner == token.user or SE_RESTORE_NAME in token.privileges \
            or (owner == SID_BUILTIN_ADMINISTRATORS and owner in token.sids):
        return
    raise fail(STATUS_INVALID_OWNER, f"owner {sid_text(owner)} is not the caller")


# ============================================================== privileges in access checks
#: What SeBackupPrivilege grants an open with FILE_OPEN_FOR_BACKUP_INTENT whatever the DACL
#: says (MS-FSA 2.1.5.1.2.1; the "backup" set of Windows' privilege documentation)
BACKUP_ACCESS = READ_CONTROL | ACCESS_SYSTEM_SECURITY | FILE_GENERIC_READ | FILE_TRAVERSE
#: ... and SeRestorePrivilege (FILE_GENERIC_WRITE includes READ_CONTROL)
RESTORE_ACCESS = (WRITE_DAC | WRITE_OWNER | ACCESS_SYSTEM_SECURITY | FILE_GENERIC_WRITE | FILE_ADD_FILE
                  | FILE_ADD_SUBDIRECTORY | DELETE)


def privilege_access(token: "Token", requested: int, *, backup_intent: bool = False,
                     maximum: bool = False) -> int:
    """The access *token*'s privileges grant regardless of the DACL (MS-DTYP 2.5.3.2,
    MS-FSA 2.1.5.1.2.1): of the *requested* bits (mapped, without MAXIMUM_ALLOWED)
    ACCESS_SYSTEM_SECURITY with SeSecurityPrivilege, WRITE_OWNER with
    SeTakeOwnershipPrivilege; with *backup_intent* (CreateOptions
    FILE_OPEN_FOR_BACKUP_INTENT) :data:`BACKUP_ACCESS` with SeBackupPrivilege and
    :data:`RESTORE_ACCESS` with SeRestorePrivilege.  With *maximum* (DesiredAccess has
    MAXIMUM_ALLOWED) the backup/restore sets are granted whole, but ACCESS_SYSTEM_SECURITY
    and take-ownership's WRITE_OWNER only when asked for: a privilege is exercised on
    request (SeAccessCheck makes no privilege checks for MAXIMUM_ALLOWED alone)."""
    p = token.privileges
    if not p:
        return 0
    asked = requested
    explicit = 0
    if SE_SECURITY_NAME in p:
        explicit |= ACCESS_SYSTEM_SECURITY
    if SE_TAKE_OWNERSHIP_NAME in p:
        explicit |= WRITE_OWNER
    by_intent = 0
    if backup_intent:
        if SE_BACKUP_NAME in p:
            by_intent |= BACKUP_ACCESS
        if SE_RESTORE_NAME in p:
            by_intent |= RESTORE_ACCESS
    granted = (explicit | by_intent) & asked
    if maximum:
        granted |= by_intent & ~ACCESS_SYSTEM_SECURITY
    return granted
