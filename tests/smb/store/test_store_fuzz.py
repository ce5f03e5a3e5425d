"""Malformed client input reaching the store: SET_INFO buffers of every class, EA lists,
FILE_GET_EA_INFORMATION lists, security descriptors, names and search patterns.  Each
must end in an NTSTATUS error (or be accepted), never another exception, and the store
must stay consistent (no leaked file objects, nothing written outside the share)."""
from __future__ import annotations

import os

from conftest import create
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wsd_smb.ntstatus import NtStatusError
from wsd_smb.store.constants import FileInformationClass as FIC
from wsd_smb.store.eas import parse_full, parse_get
from wsd_smb.store.info import query_directory, set_file_info
from wsd_smb.store.paths import split_name_stream
from wsd_smb.store.security import Descriptor
from wsd_smb.store.wildcard import is_name_in_expression

SETTABLE = [FIC.FileBasicInformation, FIC.FileEndOfFileInformation, FIC.FileAllocationInformation,
            FIC.FilePositionInformation, FIC.FileModeInformation, FIC.FileDispositionInformation,
            FIC.FileDispositionInformationEx, FIC.FileRenameInformation, FIC.FileFullEaInformation,
            FIC.FileValidDataLengthInformation, FIC.FileLinkInformation, 200]
_names = iter(range(10**9))
FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _ok_or_status(fn, *a):
    try:
        fn(*a)
    except NtStatusError as e:
        assert isinstance(e.status, int) and e.status >> 30 in (2, 3)  # warning or error code


@FUZZ
@given(klass=st.sampled_from(SETTABLE), buf=st.binary(max_size=96))
def test_set_info_buffers(store, share, root, klass, buf):
    o = create(store, share, f"victim{next(_names)}", disposition=2).open  # a fresh file each time
    try:
        _ok_or_status(set_file_info, store, o, int(klass), buf)
    finally:
        if not o.closed:
            store.close(o)
    # whatever the buffer asked for (renames, deletes, truncation), it stayed in the share
    assert all(p == root or str(p).startswith(str(root)) for p in root.rglob("*"))
    assert not store.files


@FUZZ
@given(buf=st.binary(max_size=64))
def test_ea_and_descriptor_parsers(buf):
    _ok_or_status(parse_full, buf)
    _ok_or_status(parse_get, buf)
    _ok_or_status(Descriptor.parse, buf)


@FUZZ
@given(name=st.text(max_size=40))
def test_names(store, share, name):
    try:
        parts, stream = split_name_stream(name)
    except NtStatusError:
        return
    assert all(p and p not in (".", "..") and "/" not in p and "\\" not in p for p in parts)


@FUZZ
@given(pattern=st.text(alphabet="ab.*?<>\"", max_size=8), name=st.text(alphabet="ab.", max_size=8))
def test_wildcards_total(pattern, name):
    assert is_name_in_expression(name, pattern) in (True, False)


@FUZZ
@given(pattern=st.text(max_size=20), cls=st.sampled_from([1, 2, 3, 12, 37, 38, 4, 0, 99]),
       flags=st.integers(0, 255), size=st.integers(0, 600))
def test_query_directory_inputs(store, share, root, pattern, cls, flags, size):
    (root / "a.txt").write_bytes(b"x")
    d = create(store, share, "", access=0x81, disposition=1, options=1).open
    try:
        _ok_or_status(query_directory, store, d, cls, flags, pattern, size)
    finally:
        store.close(d)
    os.unlink(root / "a.txt")
