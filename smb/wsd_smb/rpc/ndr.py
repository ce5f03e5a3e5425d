"""A small NDR 2.0 marshaller (C706 chapter 14, "Transfer Syntax NDR"), little-endian only.

Types are declared once, as values (``Struct``, ``Pointer``, ``ConformantArray`` ...), and
both directions are driven by the same declaration.  Marshalling follows the NDR rule for
embedded pointers (C706 14.3.12.3): a construct is written in two passes, first its
*scalars* (inline part; an embedded pointer is its referent id), then its *buffers* (the
pointees, in the order the pointers occur; each pointee is itself written scalars then
buffers, so a pointee's own pointees follow it directly).  A top-level [unique]/[ptr]
parameter is its referent id immediately followed by its pointee; a top-level [ref]
pointer has no wire representation (declare the pointee type as the parameter).

Alignment (C706 14.2.2) is relative to the start of the stub data, which the DCE/RPC PDU
places 8-aligned.  Values: ``Struct`` <-> dict, arrays <-> list, ``Union`` <-> ``(tag, arm)``,
``WString`` <-> str (without the terminating NUL), pointers <-> the pointee or None.

Every unmarshalling error (truncation, a count larger than the data, an unknown union arm,
an unterminated [string], a NULL [ref] pointer) raises :class:`NdrError`; the RPC layer
turns that into a fault with nca_s_fault_ndr.
"""
from __future__ import annotations

import struct
from typing import Any


class NdrError(ValueError):
    """Malformed NDR data (C706 14; the server answers with a fault, nca_s_fault_ndr)."""


# ====================================================================== streams
class Writer:
    """Output stream; referent ids count up from 0x00020000 in steps of 4 (as MIDL does)."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self._next_ref = 0x00020000
        self._full: dict[int, int] = {}  # id(python object) -> referent id (full pointers)
        self._full_pending: set[int] = set()  # full-pointer referents whose pointee is not written yet

    def align(self, n: int) -> None:
        pad = (-len(self.buf)) % n
        if pad:
            self.buf += b"\0" * pad

    def put(self, fmt: str, *v: Any) -> None:
        try:
            self.buf += struct.pack("<" + fmt, *v)
        except struct.error as e:
            raise ValueError(f"NDR: cannot pack {v!r} as {fmt}: {e}") from None

    def new_referent(self) -> int:
        r = self._next_ref
        self._next_ref += 4
        return r

    def getvalue(self) -> bytes:
        return bytes(self.buf)


class Reader:
    """Input stream over the stub data, bounds-checked."""

    def __init__(self, data: bytes) -> None:
        self.data = bytes(data)
        self.pos = 0
        self.full: dict[int, Any] = {}  # referent id -> value (full pointers)

    def align(self, n: int) -> None:
        self.pos += (-self.pos) % n
        if self.pos > len(self.data):
            raise NdrError("truncated (alignment padding)")

    def get(self, fmt: str) -> tuple:
        s = struct.calcsize("<" + fmt)
        if self.pos + s > len(self.data):
            raise NdrError(f"truncated: need {s} bytes at {self.pos}, have {len(self.data) - self.pos}")
        v = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += s
        return v

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise NdrError(f"truncated: need {n} bytes at {self.pos}")
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def remaining(self) -> int:
        return len(self.data) - self.pos


# ====================================================================== types
class NdrType:
    """Base: ``align`` plus the two marshalling passes and their inverses."""

    align: int = 1
    #: smallest number of bytes one value occupies inline (bounds element counts)
    min_size: int = 0

    def write_scalars(self, w: Writer, v: Any) -> None:
        raise NotImplementedError

    def write_buffers(self, w: Writer, v: Any) -> None:
        pass

    def read_scalars(self, r: Reader) -> Any:
        raise NotImplementedError

    def read_buffers(self, r: Reader, v: Any) -> Any:
        return v

    def has_buffers(self) -> bool:
        return False


class Prim(NdrType):
    """A primitive: u8/u16/u32/u64 or signed (C706 14.2)."""

    def __init__(self, fmt: str, name: str) -> None:
        self.fmt, self.name = fmt, name
        self.align = self.min_size = struct.calcsize("<" + fmt)

    def write_scalars(self, w: Writer, v: Any) -> None:
        w.align(self.align)
        w.put(self.fmt, v)

    def read_scalars(self, r: Reader) -> Any:
        r.align(self.align)
        return r.get(self.fmt)[0]

    def __repr__(self) -> str:
        return self.name


U8 = Prim("B", "u8")
U16 = Prim("H", "u16")
U32 = Prim("I", "u32")
I32 = Prim("i", "i32")
U64 = Prim("Q", "u64")
DWORD, LONG = U32, I32


class Enum(NdrType):
    """An enum: 2 bytes (NDR default, values 0..32767) or 4 bytes ([v1_enum])."""

    def __init__(self, values: set[int] | None = None, v1: bool = False) -> None:
        self.values = values
        self.fmt = "I" if v1 else "H"
        self.align = self.min_size = 4 if v1 else 2
        self.limit = 0xFFFFFFFF if v1 else 0x7FFF

    def write_scalars(self, w: Writer, v: int) -> None:
        if not 0 <= v <= self.limit:
            raise ValueError(f"enum value {v} out of range")
        w.align(self.align)
        w.put(self.fmt, v)

    def read_scalars(self, r: Reader) -> int:
        r.align(self.align)
        v = r.get(self.fmt)[0]
        if v > self.limit or (self.values is not None and v not in self.values):
            raise NdrError(f"enum value {v} not allowed")
        return v


class Struct(NdrType):
    """A structure: fields in order, aligned to its largest member (C706 14.3.7)."""

    def __init__(self, name: str, fields: list[tuple[str, NdrType]]) -> None:
        self.name, self.fields = name, fields
        self.align = max((t.align for _, t in fields), default=1)
        self.min_size = sum(t.min_size for _, t in fields)

    def write_scalars(self, w: Writer, v: dict) -> None:
        w.align(self.align)
        for n, t in self.fields:
            t.write_scalars(w, v[n])

    def write_buffers(self, w: Writer, v: dict) -> None:
        for n, t in self.fields:
            t.write_buffers(w, v[n])

    def read_scalars(self, r: Reader) -> dict:
        r.align(self.align)
        return {n: t.read_scalars(r) for n, t in self.fields}

    def read_buffers(self, r: Reader, v: dict) -> dict:
        for n, t in self.fields:
            v[n] = t.read_buffers(r, v[n])
        return v

    def has_buffers(self) -> bool:
        return any(t.has_buffers() for _, t in self.fields)

    def __repr__(self) -> str:
        return self.name


class _Pending:
    """Placeholder for a pointer read in the scalars pass (its referent id)."""

    __slots__ = ("ref",)

    def __init__(self, ref: int) -> None:
        self.ref = ref


class Pointer(NdrType):
    """A pointer (C706 14.3.10).  kind: "unique" (the MIDL default), "full" ([ptr]: the
    same referent may be pointed to twice; its id is reused and the pointee written once)
    or "ref" (never NULL; embedded, it still carries a referent id).  ``target=None``: a
    pointer whose pointee this server never sends or accepts (an IDL arm we do not
    implement): only NULL is allowed."""

    align = min_size = 4

    def __init__(self, target: NdrType | None, kind: str = "unique") -> None:
        if kind not in ("unique", "full", "ref"):
            raise ValueError(kind)
        self.target, self.kind = target, kind

    def write_scalars(self, w: Writer, v: Any) -> None:
        w.align(4)
        if v is None:
            if self.kind == "ref":
                raise ValueError("NULL [ref] pointer")
            w.put("I", 0)
            return
        if self.target is None:
            raise ValueError("pointer without a pointee type must be NULL")
        if self.kind == "full":
            ref = w._full.get(id(v))
            if ref is not None:
                w.put("I", ref)
                return
            ref = w.new_referent()
            w._full[id(v)] = ref
            w.put("I", ref)
            w._full_pending.add(ref)
            return
        w.put("I", w.new_referent())

    def write_buffers(self, w: Writer, v: Any) -> None:
        if v is None:
            return
        if self.kind == "full":
            ref = w._full[id(v)]
            if ref not in w._full_pending:
                return  # pointee already written at the first occurrence
            w._full_pending.discard(ref)
        self.target.write_scalars(w, v)
        self.target.write_buffers(w, v)

    def read_scalars(self, r: Reader) -> Any:
        r.align(4)
        ref = r.get("I")[0]
        if ref == 0:
            if self.kind == "ref":
                raise NdrError("NULL [ref] pointer")
            return None
        if self.target is None:
            raise NdrError("non-NULL pointer where this server accepts only NULL")
        return _Pending(ref)

    def read_buffers(self, r: Reader, v: Any) -> Any:
        if not isinstance(v, _Pending):
            return v
        if self.kind == "full" and v.ref in r.full:
            return r.full[v.ref]
        val = self.target.read_scalars(r)
        val = self.target.read_buffers(r, val)
        if self.kind == "full":
            r.full[v.ref] = val
        return val

    def has_buffers(self) -> bool:
        return True

    # top-level use: referent id immediately followed by the pointee
    def write_top(self, w: Writer, v: Any) -> None:
        self.write_scalars(w, v)
        self.write_buffers(w, v)

    def __repr__(self) -> str:
        return f"Pointer({self.target!r}, {self.kind})"


def _check_count(r: Reader, n: int, elem: NdrType) -> None:
    if n > 0x00FFFFFF or n * max(elem.min_size, 1) > r.remaining():
        raise NdrError(f"array count {n} larger than the remaining {r.remaining()} bytes")


class ConformantArray(NdrType):
    """A conformant array (C706 14.3.3.2): max_count (u32), then the elements.
    As a pointee (the only way MS-SRVS uses it: ``[size_is(n)] T* p``) the count comes
    first; *size_is* names the field that must equal the count (checked by the caller)."""

    def __init__(self, elem: NdrType) -> None:
        self.elem = elem
        self.align = max(4, elem.align)
        self.min_size = 4

    def write_scalars(self, w: Writer, v: list) -> None:
        w.align(4)
        w.put("I", len(v))
        if self.elem is U8 and isinstance(v, (bytes, bytearray)):
            w.buf += v
            return
        for e in v:
            self.elem.write_scalars(w, e)

    def write_buffers(self, w: Writer, v: list) -> None:
        if self.elem.has_buffers():
            for e in v:
                self.elem.write_buffers(w, e)

    def read_scalars(self, r: Reader) -> list:
        r.align(4)
        n = r.get("I")[0]
        _check_count(r, n, self.elem)
        if self.elem is U8:
            return r.take(n)  # type: ignore[return-value]
        return [self.elem.read_scalars(r) for _ in range(n)]

    def read_buffers(self, r: Reader, v: list) -> list:
        if self.elem.has_buffers():
            for i, e in enumerate(v):
                v[i] = self.elem.read_buffers(r, e)
        return v

    def has_buffers(self) -> bool:
        return self.elem.has_buffers()


class ConformantVaryingArray(ConformantArray):
    """A conformant varying array (C706 14.3.3.4): max_count, offset, actual_count, then
    actual_count elements.  Sent with offset 0 and max_count = actual_count."""

    def write_scalars(self, w: Writer, v: list) -> None:
        w.align(4)
        w.put("III", len(v), 0, len(v))
        for e in v:
            self.elem.write_scalars(w, e)

    def read_scalars(self, r: Reader) -> list:
        r.align(4)
        max_count, offset, actual = r.get("III")
        if offset > max_count or actual > max_count - offset:
            raise NdrError(f"varying array offset {offset} + actual {actual} > max {max_count}")
        _check_count(r, actual, self.elem)
        return [self.elem.read_scalars(r) for _ in range(actual)]


class WString(NdrType):
    """``[string] wchar_t*`` pointee (C706 14.3.4): a conformant varying array of UTF-16
    code units including the terminating NUL.  Value: str without the NUL."""

    align = min_size = 4

    def write_scalars(self, w: Writer, v: str) -> None:
        raw = (v + "\0").encode("utf-16-le")
        n = len(raw) // 2
        w.align(4)
        w.put("III", n, 0, n)
        w.buf += raw

    def read_scalars(self, r: Reader) -> str:
        r.align(4)
        max_count, offset, actual = r.get("III")
        if offset != 0 or actual > max_count:
            raise NdrError(f"[string] offset {offset} actual {actual} max {max_count}")
        if actual == 0:
            raise NdrError("[string] without its terminating NUL")
        raw = r.take(2 * actual)
        if raw[-2:] != b"\0\0":
            raise NdrError("[string] not NUL-terminated")
        try:
            return raw[:-2].decode("utf-16-le")
        except UnicodeDecodeError:
            raise NdrError("[string] is not UTF-16") from None


WSTR = WString()
#: ``[string] wchar_t*`` as an embedded or top-level unique pointer (LPWSTR)
LPWSTR = Pointer(WSTR)


class Union(NdrType):
    """A non-encapsulated union with ``switch_is`` (C706 14.3.8): the discriminant (of
    *switch* type) is marshalled first, then the selected arm.  ``arms``: tag -> type, or
    None for an empty arm.  ``default``: the arm for any other tag (``EMPTY`` = an empty
    [default] arm); without a default an unknown tag is an NdrError.  Value: (tag, arm)."""

    EMPTY = object()

    def __init__(self, arms: dict[int, NdrType | None], switch: NdrType = U32, default: Any = None) -> None:
        self.arms, self.switch, self.default = arms, switch, default
        self.align = max([switch.align] + [a.align for a in arms.values() if a is not None])
        self.min_size = switch.min_size

    def _arm(self, tag: int) -> NdrType | None:
        if tag in self.arms:
            return self.arms[tag]
        if self.default is Union.EMPTY:
            return None
        if self.default is None:
            raise NdrError(f"union tag {tag} has no arm")
        return self.default

    def write_scalars(self, w: Writer, v: tuple) -> None:
        tag, val = v
        w.align(self.align)
        self.switch.write_scalars(w, tag)
        try:
            arm = self._arm(tag)
        except NdrError as e:
            raise ValueError(str(e)) from None
        if arm is not None:
            arm.write_scalars(w, val)

    def write_buffers(self, w: Writer, v: tuple) -> None:
        arm = self._arm(v[0])
        if arm is not None:
            arm.write_buffers(w, v[1])

    def read_scalars(self, r: Reader) -> tuple:
        r.align(self.align)
        tag = self.switch.read_scalars(r)
        arm = self._arm(tag)
        return (tag, arm.read_scalars(r) if arm is not None else None)

    def read_buffers(self, r: Reader, v: tuple) -> tuple:
        arm = self._arm(v[0])
        return (v[0], arm.read_buffers(r, v[1]) if arm is not None else None)

    def has_buffers(self) -> bool:
        return any(a is not None and a.has_buffers() for a in self.arms.values())


# ====================================================================== parameters
def _write_param(w: Writer, t: NdrType, v: Any) -> None:
    t.write_scalars(w, v)
    t.write_buffers(w, v)


def marshal(params: list[tuple[NdrType, Any]]) -> bytes:
    """Marshal a parameter list (one direction of an operation): each parameter is a
    complete top-level construct, scalars then its deferred pointees."""
    w = Writer()
    for t, v in params:
        _write_param(w, t, v)
    return w.getvalue()


def unmarshal(types: list[NdrType], data: bytes, allow_trailing: int = 7) -> list[Any]:
    """Inverse of :func:`marshal`.  At most *allow_trailing* bytes (alignment padding)
    may follow the last parameter."""
    r = Reader(data)
    out = []
    for t in types:
        v = t.read_scalars(r)
        out.append(t.read_buffers(r, v))
    if r.remaining() > allow_trailing:
        raise NdrError(f"{r.remaining()} bytes after the last parameter")
    return out


def sizeof_strings(*strings: str | None) -> int:
    """Bytes the strings take as UTF-16 with their NULs (NULL strings take none)."""
    return sum(2 * (len(s) + 1) for s in strings if s is not None)


__all__ = [
    "ConformantArray", "ConformantVaryingArray", "DWORD", "Enum", "I32", "LONG", "LPWSTR", "NdrError",
    "NdrType", "Pointer", "Prim", "Reader", "Struct", "U16", "U32", "U64", "U8", "Union", "WSTR", "WString",
    "Writer", "marshal", "unmarshal", "sizeof_strings",
]
