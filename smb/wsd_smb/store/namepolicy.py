"""Namespace policy of a share: Samba's ``hide files`` / ``veto files`` name patterns and
the access-based enumeration check (``hide unreadable``).

Patterns (:class:`NamePatterns`) match the *last* component of a name, case-insensitively
unless the share is case sensitive; ``*`` stands for any run of characters (also none),
``?`` for exactly one, every other character for itself.  A pattern list is written in
the configuration either as a TOML list (``["*.tmp", "desktop.ini"]``) or in Samba's
string form, the patterns between slashes (``"/*.tmp/desktop.ini/"``; the leading and
trailing slash may be left out, empty items are skipped).  A component can never hold a
``/``, so a list item with one is refused.

* hide files: a matching name is reported with FILE_ATTRIBUTE_HIDDEN (MS-FSCC 2.6) in
  QUERY_DIRECTORY entries, QUERY_INFO and the CREATE response (store/attrs.py), as Samba's
  ``dos_mode()`` adds it; nothing else changes.
* veto files: a matching name is left out of QUERY_DIRECTORY and cannot be opened, created
  or be a rename target: CREATE answers STATUS_OBJECT_NAME_NOT_FOUND when the last
  component is vetoed and STATUS_OBJECT_PATH_NOT_FOUND when a directory on the way is
  (:func:`check_veto`), what Samba's name conversion answers.
* hide unreadable (Share.DoAccessBasedDirectoryEnumeration, MS-SMB2 3.3.1.6 / 3.3.5.18):
  :data:`ABE_READ_ACCESS` is what an entry's stored descriptor must grant the session's
  token for the entry to be listed (Samba's ``user_can_read_fsp``; smbtorture
  smb2.acls.ACCESSBASED removes each of the four bits in turn and expects the entry gone).
"""
from __future__ import annotations

import re
from typing import Iterable

from .constants import FILE_READ_ATTRIBUTES, FILE_READ_DATA, FILE_READ_EA, READ_CONTROL
from .errors import STATUS_OBJECT_NAME_NOT_FOUND, STATUS_OBJECT_PATH_NOT_FOUND, fail

#: the access a directory entry's descriptor must grant for access-based enumeration to list it
ABE_READ_ACCESS = READ_CONTROL | FILE_READ_DATA | FILE_READ_ATTRIBUTES | FILE_READ_EA


class PatternError(ValueError):
    """A pattern list that cannot be used (wrong type, a '/' in a list item, a NUL)."""


def parse_patterns(value: object) -> tuple[str, ...]:
    """The patterns of a configuration value: a list of strings, or one string in Samba's
    ``/pat1/pat2/`` form.  Raises :class:`PatternError`."""
    if isinstance(value, str):
        items = [p for p in value.split("/") if p]
    elif isinstance(value, (list, tuple)):
        items = []
        for p in value:
            if not isinstance(p, str):
                raise PatternError(f"pattern {p!r} is not a string")
            if "/" in p:
                raise PatternError(f"pattern {p!r}: a name component has no '/'")
            if p:
                items.append(p)
    else:
        raise PatternError(f"expected a list of patterns or a '/a/b/' string, got {type(value).__name__}")
    for p in items:
        if "\0" in p:
            raise PatternError(f"pattern {p!r} holds a NUL")
    return tuple(dict.fromkeys(items))  # in order, without repeats


_NOT_SEP = "[^/]"  # any character but "/", which no component holds (SMB2 names nor Linux ones)


def _translate(pattern: str, any_char: str = ".") -> str:
    return "".join(f"{any_char}*" if c == "*" else any_char if c == "?" else re.escape(c) for c in pattern)


class NamePatterns:
    """A compiled pattern list; :meth:`match` tests one name component.  Use
    :meth:`compile`, which gives None for an empty list, so that a share without
    patterns pays one ``is None`` test."""

    __slots__ = ("patterns", "case_sensitive", "_fullmatch", "_search_path")

    def __init__(self, patterns: Iterable[str], case_sensitive: bool = False) -> None:
        self.patterns = tuple(patterns)
        self.case_sensitive = case_sensitive
        flags = re.DOTALL | (0 if case_sensitive else re.IGNORECASE)
        rx = re.compile("|".join(f"(?:{_translate(p)})" for p in self.patterns), flags)
        self._fullmatch = rx.fullmatch
        # the same patterns as whole components of a "/"-joined path: one search per CREATE
        # instead of one match per component
        alts = "|".join("(?:" + _translate(p, _NOT_SEP) + ")" for p in self.patterns)
        self._search_path = re.compile("(?:^|/)(?:" + alts + ")(?=/|$)", flags).search

    @classmethod
    def compile(cls, patterns: Iterable[str], case_sensitive: bool = False) -> "NamePatterns | None":
        pats = tuple(p for p in patterns if p)
        return cls(pats, case_sensitive) if pats else None

    def match(self, name: str) -> bool:
        """Does the component *name* match one of the patterns?"""
        return self._fullmatch(name) is not None

    def match_any(self, parts: list[str]) -> bool:
        """Does any of the components *parts* match (one regex search over the joined path)?"""
        return self._search_path("/".join(parts)) is not None

    def __repr__(self) -> str:
        return f"NamePatterns({list(self.patterns)!r})"

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, NamePatterns) and self.patterns == other.patterns
                and self.case_sensitive == other.case_sensitive)

    def __hash__(self) -> int:
        return hash((self.patterns, self.case_sensitive))


def check_veto(veto: NamePatterns, parts: list[str]) -> None:
    """Refuse a share-relative name (components) holding a vetoed component:
    STATUS_OBJECT_NAME_NOT_FOUND for the last one, STATUS_OBJECT_PATH_NOT_FOUND for a
    directory on the way (Samba's answers)."""
    if not veto.match_any(parts):
        return
    last = len(parts) - 1
    for i, p in enumerate(parts):
        if veto.match(p):
            raise fail(STATUS_OBJECT_NAME_NOT_FOUND if i == last else STATUS_OBJECT_PATH_NOT_FOUND,
                       f"vetoed name {p!r}")
