"""Self-relative security descriptors (MS-DTYP 2.4.6), ACLs (2.4.5) and ACEs (2.4.4.2),
built and read byte by byte for the tests -- on purpose not with the server's own code
(store/security.py), so that a shared mistake cannot hide."""
from __future__ import annotations

import struct

SE_DACL_PRESENT, SE_SACL_PRESENT, SE_SELF_RELATIVE = 0x0004, 0x0010, 0x8000


def ace(kind: int, flags: int, mask: int, sid: bytes) -> bytes:
    """An ACCESS_ALLOWED (0) / ACCESS_DENIED (1) / SYSTEM_AUDIT (2) ACE."""
    return struct.pack("<BBHI", kind, flags, 8 + len(sid), mask) + sid


def acl(*aces: bytes) -> bytes:
    body = b"".join(aces)
    return struct.pack("<BBHHH", 2, 0, 8 + len(body), len(aces), 0) + body


def sd(owner: bytes | None = None, dacl: bytes | None = None, sacl: bytes | None = None,
       control: int = 0) -> bytes:
    """Owner, SACL, DACL (each if given) after the 20-byte header; SE_SELF_RELATIVE and
    the *_PRESENT bits of the ACLs given, OR *control*."""
    ctl = SE_SELF_RELATIVE | (SE_DACL_PRESENT if dacl is not None else 0) \
        | (SE_SACL_PRESENT if sacl is not None else 0) | control
    pos, body, offs = 20, b"", {}
    for name, part in (("owner", owner), ("sacl", sacl), ("dacl", dacl)):
        offs[name] = pos if part is not None else 0
        if part is not None:
            body += part
            pos += len(part)
    return struct.pack("<BBHIIII", 1, 0, ctl, offs["owner"], 0, offs["sacl"], offs["dacl"]) + body


def dacl_sd(*aces: bytes, owner: bytes | None = None, control: int = 0) -> bytes:
    """A descriptor with a DACL of *aces* (and an owner if given)."""
    return sd(owner=owner, dacl=acl(*aces), control=control)


def parse(buf: bytes) -> tuple[int, bytes | None, bytes | None, bytes | None]:
    """(control, owner SID, SACL, DACL) of a self-relative descriptor (None: absent)."""
    _, _, control, o_owner, _, o_sacl, o_dacl = struct.unpack_from("<BBHIIII", buf, 0)
    owner = bytes(buf[o_owner:o_owner + 8 + 4 * buf[o_owner + 1]]) if o_owner else None
    sacl = bytes(buf[o_sacl:o_sacl + struct.unpack_from("<H", buf, o_sacl + 2)[0]]) if o_sacl else None
    dacl = bytes(buf[o_dacl:o_dacl + struct.unpack_from("<H", buf, o_dacl + 2)[0]]) if o_dacl else None
    return control, owner, sacl, dacl


def aces_of(acl_bytes: bytes | None) -> list[tuple[int, int, int, bytes]]:
    """[(type, flags, mask, SID)] of an ACL ([] for None)."""
    if not acl_bytes:
        return []
    _, _, _, count, _ = struct.unpack_from("<BBHHH", acl_bytes, 0)
    out, pos = [], 8
    for _ in range(count):
        t, f, size, mask = struct.unpack_from("<BBHI", acl_bytes, pos)
        out.append((t, f, mask, bytes(acl_bytes[pos + 8:pos + size])))
        pos += size
    return out


def parse_sd(buf: bytes) -> tuple[int, bytes | None, list[tuple[int, int, int, bytes]]]:
    """(control, owner SID, the DACL's ACEs) of a self-relative descriptor."""
    control, owner, _, dacl = parse(buf)
    return control, owner, aces_of(dacl)
