"""The declarative structure mechanism used by every SMB2 wire structure.

A structure is a class with

* ``FIELDS``: the fixed part, in wire order, each an :class:`F` (MS-SMB2 field name,
  ``struct`` format code; all little-endian);
* ``BUFFERS``: the variable part, each a :class:`Buf` naming the offset field and the
  length field that locate it (offsets are relative to the start of the SMB2 header,
  as MS-SMB2 2.2 says for every command);
* ``STRUCTURE_SIZE``: the value of the StructureSize field (declared automatically as
  the first field, checked on receipt).

Attribute names are the MS-SMB2 field names in snake case (``CreditCharge`` ->
``credit_charge``).  Reserved fields are not attributes: they are packed as their
default and checked on receipt (a mismatch raises STATUS_INVALID_PARAMETER), unless the
field is marked ``ignore`` (MS-SMB2 says "MUST be ignored on receipt" and real clients
put values there).  Offset and length fields of buffers are computed by ``pack``.

``unpack(msg, start, end)`` parses the structure at ``msg[start:]``: ``msg`` begins at
the SMB2 header (offset 0), ``end`` is where this message (compound element) ends.
Every offset/length pair is bounds-checked; a malformed structure raises
:class:`~wsd_smb.ntstatus.NtStatusError` (STATUS_INVALID_PARAMETER).
"""
from __future__ import annotations

import functools
import re
import struct
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

from ..ntstatus import StatusInvalidParameter

U8, U16, U32, U64 = "B", "H", "I", "Q"


def Bytes(n: int) -> str:
    return f"{n}s"


GUID = Bytes(16)
FILEID = "FILEID"  # 16 bytes on the wire: Persistent (8) + Volatile (8), MS-SMB2 2.2.14.1


class FileId(NamedTuple):
    """SMB2_FILEID (MS-SMB2 2.2.14.1)."""

    persistent: int
    volatile: int

    def pack(self) -> bytes:
        return struct.pack("<QQ", self.persistent, self.volatile)

    @classmethod
    def unpack(cls, b: bytes) -> "FileId":
        p, v = struct.unpack("<QQ", b)
        return cls(p, v)


#: The FileId a related compound request uses to mean "the previous FileId" (MS-SMB2 3.3.5.2.7.2).
FILEID_RELATED = FileId(0xFFFFFFFFFFFFFFFF, 0xFFFFFFFFFFFFFFFF)
FILEID_ZERO = FileId(0, 0)

#: Buffers at least this long are handed out as memoryviews of the message (no copy).
ZERO_COPY_MIN = 64 * 1024

_snake_re = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


@functools.lru_cache(maxsize=None)
def snake(name: str) -> str:
    """MS-SMB2 field name -> attribute name (``CreateDisposition`` -> ``create_disposition``); cached:
    it runs for every field of every structure packed or parsed."""
    return _snake_re.sub("_", name).lower()


@dataclass(frozen=True)
class F:
    """A fixed-part field: MS-SMB2 name, struct code, default.

    reserved: not an attribute; packed as *default*; on receipt must equal *default*.
    ignore:   (with reserved) packed as *default*, never checked on receipt.
    """

    name: str
    fmt: str
    default: Any = 0
    reserved: bool = False
    ignore: bool = False


@dataclass(frozen=True)
class Buf:
    """A variable-length buffer located by an offset field and a length field.

    offset: name of the offset field (relative to the SMB2 header), or None when the
            buffer directly follows the fixed part (ERROR response ErrorData).
    length: name of the length field.
    align:  alignment (relative to the header) of the buffer when packed.
    offset_if_empty: what the offset field holds for an empty buffer when packed:
            "zero" or "here" (the position it would have had, as Windows sends for
            READ/IOCTL responses).
    """

    name: str
    offset: str | None
    length: str
    align: int = 8
    offset_if_empty: str = "zero"


def _pad(n: int, align: int) -> int:
    return (-n) % align


class Structure:
    """Base class; see the module docstring."""

    FIELDS: ClassVar[tuple[F, ...]] = ()
    BUFFERS: ClassVar[tuple[Buf, ...]] = ()
    STRUCTURE_SIZE: ClassVar[int | None] = None
    #: size of the fixed part (StructureSize rounded down to even, MS-SMB2 2.2 convention)
    FIXED_SIZE: ClassVar[int]
    _all: ClassVar[tuple[F, ...]]
    _st: ClassVar[struct.Struct]
    _attrs: ClassVar[tuple[str, ...]]
    _computed: ClassVar[frozenset[str]]

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        fields = tuple(cls.FIELDS)
        if cls.STRUCTURE_SIZE is not None:
            fields = (F("StructureSize", U16, cls.STRUCTURE_SIZE, reserved=True),) + fields
        cls._all = fields
        cls._st = struct.Struct("<" + "".join("16s" if f.fmt == FILEID else f.fmt for f in fields))
        cls.FIXED_SIZE = cls._st.size
        computed = set()
        for b in cls.BUFFERS:
            if b.offset:
                computed.add(b.offset)
            computed.add(b.length)
        cls._computed = frozenset(computed)
        cls._attrs = tuple(snake(f.name) for f in fields if not f.reserved and f.name not in computed) + tuple(
            snake(b.name) for b in cls.BUFFERS
        )
        if cls.STRUCTURE_SIZE is not None and cls.__dict__.get("CHECK_SIZE", True):
            expect = cls.STRUCTURE_SIZE & ~1
            if cls.FIXED_SIZE != expect and cls.STRUCTURE_SIZE != cls.FIXED_SIZE:
                raise TypeError(f"{cls.__name__}: fixed part {cls.FIXED_SIZE} != StructureSize {cls.STRUCTURE_SIZE}")

    def __init__(self, **kw: Any) -> None:
        for f in self._all:
            if f.reserved or f.name in self._computed:
                continue
            a = snake(f.name)
            if a in kw:
                setattr(self, a, kw.pop(a))
            else:
                d = f.default
                setattr(self, a, FILEID_ZERO if f.fmt == FILEID and d == 0 else d)
        for b in self.BUFFERS:
            setattr(self, snake(b.name), kw.pop(snake(b.name), b""))
        self._init_extra(kw)
        if kw:
            raise TypeError(f"{type(self).__name__}: unknown fields {sorted(kw)}")

    # hooks for structures with a non-generic tail (lists of contexts, lock arrays...)
    def _init_extra(self, kw: dict) -> None:
        pass

    def __repr__(self) -> str:
        parts = []
        for a in self._attrs:
            v = getattr(self, a)
            if isinstance(v, (bytes, bytearray, memoryview)) and len(v) > 32:
                v = f"<{len(v)} bytes>"
            parts.append(f"{a}={v!r}")
        return f"{type(self).__name__}({', '.join(parts)})"

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, a) == getattr(other, a) for a in self._attrs) and self._eq_extra(other)

    def _eq_extra(self, other: "Structure") -> bool:
        return True

    # ------------------------------------------------------------------ pack
    def pack(self, base: int = 64) -> bytes:
        """Pack; *base* is the offset of this structure from the SMB2 header start."""
        return b"".join(self._pack_parts(base))

    def pack_parts(self, base: int = 64) -> list:
        """The packed structure as a list of buffers whose concatenation is :meth:`pack`'s
        result: the fixed part, padding, and each variable buffer as it is (a large READ
        payload is not copied here; the message assembly copies it once).  A structure
        that overrides :meth:`pack` (to compute counts first) comes back in one piece."""
        if type(self).pack is not Structure.pack:
            return [self.pack(base)]
        return self._pack_parts(base)

    def _pack_parts(self, base: int) -> list:
        values: dict[str, Any] = {}
        tail: list[bytes] = []
        pos = self.FIXED_SIZE
        for b in self.BUFFERS:
            data = getattr(self, snake(b.name))
            n = len(data)
            if b.offset is None:
                values[b.length] = n
                tail.append(data)
                pos += n
                continue
            pad = _pad(base + pos, b.align)
            if n:
                if pad:
                    tail.append(b"\0" * pad)
                pos += pad
                values[b.offset] = base + pos
                tail.append(data)
                pos += n
            else:
                values[b.offset] = 0 if b.offset_if_empty == "zero" else base + pos + pad
            values[b.length] = n
        extra = self._pack_extra(base, pos)
        if extra:
            tail.append(extra)
        args = []
        for f in self._all:
            if f.name in values:
                v = values[f.name]
            elif f.reserved:
                v = f.default
            else:
                v = getattr(self, snake(f.name))
            if f.fmt == FILEID:
                v = FileId(*v).pack()
            args.append(v)
        try:
            head = self._st.pack(*args)
        except struct.error as e:
            raise ValueError(f"{type(self).__name__}.pack: {e}") from None
        out = [head, *tail]
        if self.STRUCTURE_SIZE is not None:
            n = sum(len(p) for p in out)
            if n < self.STRUCTURE_SIZE:
                out.append(b"\0" * (self.STRUCTURE_SIZE - n))
        return out

    def _pack_extra(self, base: int, pos: int) -> bytes:
        return b""

    # ---------------------------------------------------------------- unpack
    @classmethod
    def unpack(cls, msg: bytes | memoryview, start: int = 64, end: int | None = None):
        msg = bytes(msg) if isinstance(msg, memoryview) else msg
        end = len(msg) if end is None else min(end, len(msg))
        if start < 0 or start + cls.FIXED_SIZE > end:
            raise StatusInvalidParameter(f"{cls.__name__}: truncated ({end - start} bytes)")
        raw = cls._st.unpack_from(msg, start)
        obj = cls.__new__(cls)
        fields: dict[str, Any] = {}
        for f, v in zip(cls._all, raw):
            if f.fmt == FILEID:
                v = FileId.unpack(v)
            fields[f.name] = v
            if f.reserved:
                if not f.ignore and v != f.default:
                    raise StatusInvalidParameter(f"{cls.__name__}.{f.name}={v!r}, expected {f.default!r}")
                continue
            if f.name in cls._computed:
                continue
            setattr(obj, snake(f.name), v)
        fixed_end = start + cls.FIXED_SIZE
        for b in cls.BUFFERS:
            length = fields[b.length]
            if b.offset is None:
                off = fixed_end
            else:
                off = fields[b.offset]
            if length == 0:
                data = b""
            else:
                if off < fixed_end or off + length > end:
                    raise StatusInvalidParameter(
                        f"{cls.__name__}.{b.name}: offset {off} length {length} outside [{fixed_end}, {end})"
                    )
                # a big buffer (WRITE data) is a view of the received message, not a copy
                data = msg[off : off + length] if length < ZERO_COPY_MIN else memoryview(msg)[off : off + length]
            setattr(obj, snake(b.name), data)
        obj._unpack_extra(msg, start, end, fields)
        return obj

    def _unpack_extra(self, msg: bytes, start: int, end: int, fields: dict[str, Any]) -> None:
        pass


class Plain(Structure):
    """A structure that is not located by an SMB2 header (contexts, elements): offsets,
    if any, are relative to its own start; pack(base=0)/unpack(b, 0)."""
