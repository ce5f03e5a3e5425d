"""Fixtures for the object-store unit tests: a real directory per test as the share."""
from __future__ import annotations

import pytest

from wsd_smb.ntstatus import NtStatusError
from wsd_smb.store import ObjectStore, Share
from wsd_smb.store.constants import (
    DELETE,
    FILE_SHARE_DELETE,
    FILE_SHARE_READ,
    FILE_SHARE_WRITE,
    GENERIC_READ,
    GENERIC_WRITE,
    CreateDisposition,
)

SHARE_ALL = FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE
RW = GENERIC_READ | GENERIC_WRITE | DELETE


@pytest.fixture
def root(tmp_path):
    d = tmp_path / "share"
    d.mkdir()
    return d


@pytest.fixture
def share(root):
    return Share("data", str(root))


@pytest.fixture
def store():
    s = ObjectStore()
    yield s
    s.close_all(list(s.opens.values()))
    assert not s.files, "file objects leaked"


def status_of(fn, *a, **kw) -> int:
    """The NTSTATUS an operation raises (fails the test if it succeeds)."""
    try:
        fn(*a, **kw)
    except NtStatusError as e:
        return e.status
    raise AssertionError("operation succeeded")


def create(store, share, name, access=RW, share_access=SHARE_ALL,
           disposition=CreateDisposition.FILE_OPEN_IF, options=0, attributes=0, eas=None, allocation_size=0):
    return store.create(share, name, desired_access=access, share_access=share_access,
                        create_disposition=disposition, create_options=options, file_attributes=attributes,
                        eas=eas, allocation_size=allocation_size)
