"""Fixtures for the native ring tests: unique shm names and leak checks."""

from __future__ import annotations

import os
import uuid

import pytest

SHM_PREFIX = "wsdtest-ring-"


def shm_entries() -> set[str]:
    return {n for n in os.listdir("/dev/shm") if n.startswith(SHM_PREFIX)}


def open_fds() -> set[int]:
    return {int(n) for n in os.listdir("/proc/self/fd")}


@pytest.fixture(autouse=True)
def no_leaks():
    """Every ring test must leave no fd and no /dev/shm segment behind."""
    fds_before = open_fds()
    shm_before = shm_entries()
    yield
    # os.listdir itself opens (and closes) a directory fd.
    leaked_fds = open_fds() - fds_before
    leaked = {fd: os.readlink(f"/proc/self/fd/{fd}") for fd in leaked_fds
              if os.path.exists(f"/proc/self/fd/{fd}")}
    leaked_shm = shm_entries() - shm_before
    for name in leaked_shm:
        os.unlink(os.path.join("/dev/shm", name))
    assert not leaked, f"fds leaked by the test: {leaked}"
    assert not leaked_shm, f"/dev/shm segments leaked by the test: {leaked_shm}"


@pytest.fixture
def shm_name():
    """A fresh POSIX shm name; removed afterwards if the test left it."""
    name = f"{SHM_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:12]}"
    yield name
    try:
        os.unlink(os.path.join("/dev/shm", name))
    except FileNotFoundError:
        pass
