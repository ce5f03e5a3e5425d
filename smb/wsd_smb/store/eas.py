"""Extended attributes (MS-FSCC 2.4.15 FILE_FULL_EA_INFORMATION, 2.4.15.1
FILE_GET_EA_INFORMATION) kept in Linux user xattrs ``user.wsd.ea.<NAME>``: the value
is one byte of Flags followed by the EA value.  EA names are case-insensitive and
reported in upper case, as NTFS does; an empty value deletes the EA (MS-FSA 2.1.5.14.4).
"""
from __future__ import annotations

import errno
import os
import struct
from dataclasses import dataclass

from ..wire.base import Buf, F, Plain, U8, U16, U32
from .errors import STATUS_INVALID_PARAMETER, fail

PREFIX = "user.wsd.ea."
STATUS_INVALID_EA_NAME = 0x80000013
STATUS_EA_LIST_INCONSISTENT = 0x80000014
_BAD_NAME = frozenset('"*+,/:;<=>?[\\]|') | frozenset(chr(c) for c in range(0x20))
_NO_XATTR = {errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENODATA, errno.EPERM, errno.EACCES}


class FileFullEaInformation(Plain):
    """MS-FSCC 2.4.15 FILE_FULL_EA_INFORMATION entry header (8 bytes); EaName (with its
    terminating NUL, not counted in EaNameLength) and EaValue follow."""

    FIELDS = (
        F("NextEntryOffset", U32),
        F("Flags", U8),
        F("EaNameLength", U8),
        F("EaValueLength", U16),
    )


class FileGetEaInformation(Plain):
    """MS-FSCC 2.4.15.1 FILE_GET_EA_INFORMATION entry (5 bytes + EaName + NUL)."""

    FIELDS = (F("NextEntryOffset", U32), F("EaNameLength", U8))
    BUFFERS = (Buf("EaName", None, "EaNameLength"),)


@dataclass
class Ea:
    name: str  # upper case
    value: bytes
    flags: int = 0


def check_name(name: str) -> str:
    if not name or len(name) > 255 or any(c in _BAD_NAME for c in name) or not name.isascii():
        raise fail(STATUS_INVALID_EA_NAME, f"EA name {name!r}")
    return name.upper()


def entry_size(ea: Ea) -> int:
    return 8 + len(ea.name) + 1 + len(ea.value)


def pack_full(eas: list[Ea], limit: int | None = None) -> tuple[bytes, int]:
    """FILE_FULL_EA_INFORMATION chain (entries 4-byte aligned); as many as fit."""
    out = bytearray()
    last = -1
    n = 0
    for ea in eas:
        name = ea.name.encode("ascii")
        body = FileFullEaInformation(flags=ea.flags, ea_name_length=len(name),
                                     ea_value_length=len(ea.value)).pack(0) + name + b"\0" + ea.value
        start = len(out) + ((-len(out)) % 4)
        if limit is not None and start + len(body) > limit:
            break
        out += b"\0" * (start - len(out))
        if last >= 0:
            struct.pack_into("<I", out, last, start - last)
        out += body
        last = start
        n += 1
    return bytes(out), n


def parse_full(buf: bytes) -> list[Ea]:
    """Parse a FILE_FULL_EA_INFORMATION chain (bad chain: STATUS_EA_LIST_INCONSISTENT)."""
    out = []
    pos = 0
    while True:
        if pos + 8 > len(buf):
            raise fail(STATUS_EA_LIST_INCONSISTENT, "EA entry truncated")
        h = FileFullEaInformation.unpack(buf, pos)
        name_end = pos + 8 + h.ea_name_length
        end = name_end + 1 + h.ea_value_length
        if end > len(buf) or buf[name_end] != 0:
            raise fail(STATUS_EA_LIST_INCONSISTENT, "EA entry overruns the buffer")
        try:
            name = bytes(buf[pos + 8:name_end]).decode("ascii")
        except UnicodeDecodeError:
            raise fail(STATUS_INVALID_EA_NAME, "EA name not ASCII") from None
        out.append(Ea(check_name(name), bytes(buf[name_end + 1:end]), h.flags))
        if not h.next_entry_offset:
            return out
        if h.next_entry_offset % 4 or pos + h.next_entry_offset < end:
            raise fail(STATUS_EA_LIST_INCONSISTENT, "bad NextEntryOffset")
        pos += h.next_entry_offset


def parse_get(buf: bytes) -> list[str]:
    """Names from a FILE_GET_EA_INFORMATION chain."""
    out = []
    pos = 0
    while pos < len(buf):
        e = FileGetEaInformation.unpack(buf, pos, len(buf))
        out.append(check_name(bytes(e.ea_name).decode("ascii", "replace")))
        if not e.next_entry_offset:
            break
        if e.next_entry_offset < 5:
            raise fail(STATUS_INVALID_PARAMETER, "bad FILE_GET_EA_INFORMATION chain")
        pos += e.next_entry_offset
    return out


def read_eas(path: str | int, follow: bool = True) -> list[Ea]:
    """The EAs of *path* (an open fd, an fd_path, or a directory entry path with follow=False)."""
    from .attrs import xattr_call

    try:
        names = [n for n in xattr_call(os.listxattr, path, follow=follow) if n.startswith(PREFIX)]
    except OSError as e:
        if e.errno in _NO_XATTR or e.errno == errno.ENOENT:
            return []
        raise
    out = []
    for n in sorted(names):
        try:
            raw = xattr_call(os.getxattr, path, n, follow=follow)
        except OSError as e:
            if e.errno in _NO_XATTR:
                continue
            raise
        if raw:
            out.append(Ea(n[len(PREFIX):], raw[1:], raw[0]))
    return out


def write_eas(path: str, eas: list[Ea]) -> None:
    """Set (or, with an empty value, remove) each EA on *path* (an fd_path)."""
    for ea in eas:
        key = PREFIX + check_name(ea.name)
        try:
            if ea.value:
                os.setxattr(path, key, bytes([ea.flags & 0xFF]) + ea.value)
            else:
                try:
                    os.removexattr(path, key)
                except OSError as e:
                    if e.errno != errno.ENODATA:
                        raise
        except OSError as e:
            if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
                raise fail(0xC000004F, "the file system has no user xattrs") from None  # EAS_NOT_SUPPORTED
            raise


def ea_size(eas: list[Ea]) -> int:
    """EaSize as FileEaInformation and the directory classes report it: the packed
    FILE_FULL_EA_INFORMATION size (0 without EAs)."""
    return len(pack_full(eas)[0]) if eas else 0
