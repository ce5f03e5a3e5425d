"""A small declarative mechanism for fixed-layout little-endian wire structures.

One class per wire structure, fields listed once in ``FIELDS``::

    class Foo(Structure):
        '''What it is; which spec section.'''
        FIELDS = (
            Field("signature", "4s", const=b"WSDN"),
            Field("count", "I"),
            Reserved("reserved", "I"),
        )

gives ``Foo(count=3).pack()``, ``Foo.unpack(buf)`` (checks ``const`` fields and
that reserved fields are zero), ``Foo.SIZE`` and keyword construction with
defaults.  Every format is little-endian (``<``) and unpadded.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, ClassVar

__all__ = ["Field", "Reserved", "Structure", "MalformedStructure"]


class MalformedStructure(ValueError):
    """Bytes that do not form a valid structure (short, wrong constant, non-zero reserved field)."""


@dataclass(frozen=True)
class Field:
    name: str
    fmt: str
    const: Any = None
    default: Any = 0
    reserved: bool = False


def Reserved(name: str, fmt: str) -> Field:
    """A reserved field: packed as zero, must be zero when unpacked."""
    zero = b"\0" * struct.calcsize("<" + fmt) if fmt.endswith("s") else 0
    return Field(name, fmt, default=zero, reserved=True)


class Structure:
    FIELDS: ClassVar[tuple[Field, ...]] = ()
    SIZE: ClassVar[int] = 0
    _struct: ClassVar[struct.Struct]
    _names: ClassVar[tuple[str, ...]]

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        cls._struct = struct.Struct("<" + "".join(f.fmt for f in cls.FIELDS))
        cls.SIZE = cls._struct.size
        cls._names = tuple(f.name for f in cls.FIELDS)
        cls.__slots__ = ()

    def __init__(self, **values: Any):
        for f in self.FIELDS:
            if f.name in values:
                v = values.pop(f.name)
            elif f.const is not None:
                v = f.const
            else:
                v = f.default
            object.__setattr__(self, f.name, v)
        if values:
            raise TypeError(f"{type(self).__name__}: unknown fields {sorted(values)}")

    def pack(self) -> bytes:
        return self._struct.pack(*(getattr(self, n) for n in self._names))

    def pack_into(self, buf, offset: int = 0) -> int:
        self._struct.pack_into(buf, offset, *(getattr(self, n) for n in self._names))
        return offset + self.SIZE

    @classmethod
    def unpack(cls, buf, offset: int = 0):
        if len(buf) - offset < cls.SIZE:
            raise MalformedStructure(f"{cls.__name__}: {len(buf) - offset} bytes, need {cls.SIZE}")
        values = cls._struct.unpack_from(buf, offset)
        obj = cls.__new__(cls)
        for f, v in zip(cls.FIELDS, values):
            if f.const is not None and v != f.const:
                raise MalformedStructure(f"{cls.__name__}.{f.name} = {v!r}, must be {f.const!r}")
            if f.reserved and v != f.default:
                raise MalformedStructure(f"{cls.__name__}.{f.name} (reserved) is not zero")
            object.__setattr__(obj, f.name, v)
        return obj

    def __eq__(self, other):
        return type(self) is type(other) and all(getattr(self, n) == getattr(other, n) for n in self._names)

    def __repr__(self) -> str:
        inner = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in self.FIELDS if not f.reserved)
        return f"{type(self).__name__}({inner})"
