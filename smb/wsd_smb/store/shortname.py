"""8.3 short names (MS-FSCC 2.1.5.2.1), generated the way Samba's ``mangled names``
does it in spirit: a name that already is a valid 8.3 name has itself (in upper case)
as short name; any other name gets a deterministic mangled one,
``PPHHHH~N.EXT``: up to two legal characters of the name, four base-36 characters of a
CRC32 of the full name, ``~`` and one digit, and up to three legal characters of the
last extension.  Short names are not stored; a lookup by a mangled name scans the
directory (see paths.py)."""
from __future__ import annotations

import zlib

_LEGAL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'()-@^_`{}~")
_B36 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def is_8_3(name: str) -> bool:
    """True if *name* (case-insensitively) is a valid 8.3 name."""
    if name in (".", ".."):
        return True
    base, dot, ext = name.partition(".")
    if not base or len(base) > 8 or len(ext) > 3 or "." in ext or (dot and not ext):
        return False
    return all(c in _LEGAL for c in (base + ext).upper())


def _legal(s: str) -> str:
    return "".join(c if c in _LEGAL else "_" for c in s.upper() if c not in " .")


def short_name(name: str) -> str:
    """The 8.3 name of *name*."""
    if is_8_3(name):
        return name.upper()
    base, dot, ext = name.rpartition(".")
    if not dot or not base:
        base, ext = name, ""
    h = zlib.crc32(name.encode("utf-8", "surrogatepass")) & 0xFFFFFFFF
    digits = ""
    for _ in range(4):
        h, r = divmod(h, 36)
        digits += _B36[r]
    prefix = (_legal(base)[:2] or "_") + digits
    e = _legal(ext)[:3]
    return f"{prefix}~{1 + zlib.crc32(name[::-1].encode('utf-8', 'surrogatepass')) % 9}" + (f".{e}" if e else "")


def looks_mangled(name: str) -> bool:
    return "~" in name and is_8_3(name)
