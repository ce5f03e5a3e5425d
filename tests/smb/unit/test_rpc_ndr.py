"""NDR 2.0 marshaller (wsd_smb.rpc.ndr, C706 chapter 14): golden bytes for every
construct srvsvc uses, the deferred-pointer order, and malformed input -> NdrError."""
from __future__ import annotations

import pytest

from wsd_smb.rpc.ndr import (
    DWORD,
    LPWSTR,
    U8,
    U16,
    U32,
    U64,
    WSTR,
    ConformantArray,
    ConformantVaryingArray,
    Enum,
    NdrError,
    Pointer,
    Struct,
    Union,
    marshal,
    unmarshal,
)

H = bytes.fromhex


def rt(params):
    """marshal, then unmarshal with the same types: must give the values back."""
    data = marshal(params)
    assert unmarshal([t for t, _ in params], data) == [v for _, v in params]
    return data


# ---------------------------------------------------------------- primitives and alignment (C706 14.2.2)
def test_ndr_primitive_alignment_golden():
    s = Struct("S", [("a", U8), ("b", U32), ("c", U16), ("d", U64)])
    data = rt([(s, {"a": 1, "b": 0x11223344, "c": 0x5566, "d": 0x0102030405060708})])
    # a, pad to 4, b, c, pad to 8, d
    assert data == H("01000000" "44332211" "6655" "000000000000" "0807060504030201")


def test_ndr_enum_is_two_bytes_and_range_checked():
    e = Enum()
    assert marshal([(U8, 7), (e, 3)]) == H("07" "00" "0300")
    assert unmarshal([U8, e], H("07000300")) == [7, 3]
    with pytest.raises(NdrError):
        unmarshal([e], H("0080"))  # NDR enums are 0..32767
    assert marshal([(Enum(v1=True), 0x10000)]) == H("00000100")
    with pytest.raises(NdrError):
        unmarshal([Enum({1, 2})], H("0300"))


# ---------------------------------------------------------------- strings and pointers (C706 14.3.4, 14.3.10)
def test_ndr_top_level_unique_string_golden():
    data = rt([(LPWSTR, "ab"), (DWORD, 5)])
    assert data == H("00000200"              # referent id
                     "03000000" "00000000" "03000000"  # max_count, offset, actual_count (with NUL)
                     "61006200" "0000"       # "ab\0"
                     "0000"                  # pad to 4
                     "05000000")


def test_ndr_null_unique_pointer_and_ref_string():
    assert rt([(LPWSTR, None), (WSTR, "x")]) == H("00000000" "02000000" "00000000" "02000000" "78000000")


def test_ndr_embedded_pointers_are_deferred_in_order():
    """C706 14.3.12.3: an array of structures carries the referent ids inline; the pointees
    follow the whole array, element by element, each element's strings in field order."""
    si1 = Struct("SHARE_INFO_1", [("netname", LPWSTR), ("type", DWORD), ("remark", LPWSTR)])
    container = Struct("C", [("EntriesRead", DWORD), ("Buffer", Pointer(ConformantArray(si1)))])
    value = {"EntriesRead": 2, "Buffer": [{"netname": "a", "type": 0, "remark": ""},
                                          {"netname": "I$", "type": 0x80000003, "remark": "r"}]}
    data = rt([(Pointer(container), value)])
    assert data == H(
        "00000200"                       # top-level pointer to the container
        "02000000" "04000200"            # EntriesRead, Buffer referent
        "02000000"                       # conformant array max_count
        "08000200" "00000000" "0c000200"  # [0] netname ref, type, remark ref
        "10000200" "03000080" "14000200"  # [1]
        "02000000" "00000000" "02000000" "61000000"             # [0].netname "a"
        "01000000" "00000000" "01000000" "0000" "0000"          # [0].remark "" (+pad)
        "03000000" "00000000" "03000000" "490024000000" "0000"  # [1].netname "I$" (+pad)
        "02000000" "00000000" "02000000" "72000000")            # [1].remark "r"


def test_ndr_pointee_of_pointee_follows_its_parent():
    inner = Struct("In", [("s", LPWSTR)])
    outer = Struct("Out", [("p", Pointer(inner)), ("q", LPWSTR)])
    data = rt([(outer, {"p": {"s": "a"}, "q": "b"})])
    assert data == H("00000200" "04000200"                        # p ref, q ref
                     "08000200"                                   # *p: s ref
                     "02000000" "00000000" "02000000" "61000000"  # *p->s
                     "02000000" "00000000" "02000000" "62000000")  # *q


def test_ndr_full_pointer_same_referent_written_once():
    shared = "same"
    s = Struct("S", [("a", Pointer(WSTR, "full")), ("b", Pointer(WSTR, "full"))])
    data = marshal([(s, {"a": shared, "b": shared})])
    assert data[:8] == H("00000200" "00000200")
    assert data.count("same".encode("utf-16-le")) == 1
    assert unmarshal([s], data) == [{"a": "same", "b": "same"}]


def test_ndr_ref_pointer_cannot_be_null():
    with pytest.raises(NdrError):
        unmarshal([Struct("S", [("p", Pointer(DWORD, "ref"))])], H("00000000"))
    with pytest.raises(ValueError):
        marshal([(Pointer(DWORD, "ref"), None)])


def test_ndr_null_only_pointer_refuses_a_referent():
    assert marshal([(Pointer(None), None)]) == H("00000000")
    with pytest.raises(NdrError):
        unmarshal([Pointer(None)], H("00000200"))


# ---------------------------------------------------------------- arrays (C706 14.3.3)
def test_ndr_conformant_byte_array_and_varying_array():
    assert rt([(Pointer(ConformantArray(U8)), b"\x01\x02\x03")]) == H("00000200" "03000000" "010203")
    assert rt([(ConformantVaryingArray(U16), [1, 2])]) == H("02000000" "00000000" "02000000" "01000200")
    with pytest.raises(NdrError):  # offset + actual_count > max_count
        unmarshal([ConformantVaryingArray(U16)], H("01000000" "00000000" "02000000" "01000200"))


def test_ndr_count_larger_than_data_is_refused_without_allocating():
    with pytest.raises(NdrError):
        unmarshal([ConformantArray(DWORD)], H("ffffff7f" "00000000"))
    with pytest.raises(NdrError):
        unmarshal([WSTR], H("ffffffff" "00000000" "ffffffff" "6100"))


# ---------------------------------------------------------------- strings: malformed
@pytest.mark.parametrize("raw", [
    "02000000" "00000000" "02000000" "61006200",   # no terminating NUL
    "02000000" "01000000" "01000000" "0000",       # [string] with an offset
    "01000000" "00000000" "02000000" "61000000",   # actual_count > max_count
    "00000000" "00000000" "00000000",              # zero-length: not even the NUL
    "02000000" "00000000" "02000000" "00d8",       # truncated
])
def test_ndr_bad_strings_raise(raw):
    with pytest.raises(NdrError):
        unmarshal([WSTR], H(raw))


def test_ndr_string_that_is_not_utf16_raises():
    with pytest.raises(NdrError):
        unmarshal([WSTR], H("02000000" "00000000" "02000000" "00dc0000"))  # lone low surrogate


# ---------------------------------------------------------------- unions (C706 14.3.8)
def test_ndr_union_discriminant_then_arm():
    u = Union({1: DWORD, 2: LPWSTR, 3: None})
    assert rt([(u, (1, 9))]) == H("01000000" "09000000")
    assert rt([(u, (2, "z"))]) == H("02000000" "00000200" "02000000" "00000000" "02000000" "7a000000")
    assert rt([(u, (3, None))]) == H("03000000")
    with pytest.raises(NdrError):
        unmarshal([u], H("07000000"))
    with pytest.raises(ValueError):
        marshal([(u, (7, None))])


def test_ndr_union_with_empty_default_arm():
    u = Union({1: DWORD}, default=Union.EMPTY)
    assert unmarshal([u, DWORD], H("07000000" "05000000")) == [(7, None), 5]
    assert marshal([(u, (7, None))]) == H("07000000")


# ---------------------------------------------------------------- parameter lists
def test_ndr_trailing_bytes():
    assert unmarshal([DWORD], H("01000000" "00000000")) == [1]  # alignment padding tolerated
    with pytest.raises(NdrError):
        unmarshal([DWORD], H("01000000") + b"\0" * 8)
    with pytest.raises(NdrError):
        unmarshal([DWORD, DWORD], H("01000000"))


def test_ndr_struct_alignment_of_pointer_only_struct_after_u16():
    s = Struct("S", [("p", LPWSTR)])
    assert marshal([(U16, 1), (s, {"p": None})]) == H("0100" "0000" "00000000")
