"""Fixtures of the shm provider tests: a private rendezvous dir, provider pairs, the leak check."""
from __future__ import annotations

import os

import pytest

import wsd
from wsd_shm import ShmProvider, segments_of


def _fds() -> set[int]:
    return {int(x) for x in os.listdir("/proc/self/fd")}


@pytest.fixture(scope="module", autouse=True)
def no_leaks():
    """After every test of a module: no fd and no /dev/shm segment of ours left behind."""
    fds_before = _fds()
    segs_before = set(segments_of())
    yield
    import gc
    gc.collect()
    leaked_fds = {fd: os.readlink(f"/proc/self/fd/{fd}") for fd in _fds() - fds_before
                  if os.path.exists(f"/proc/self/fd/{fd}")}
    leaked_segs = set(segments_of()) - segs_before
    assert not leaked_segs, f"shm segments left: {sorted(leaked_segs)}"
    assert not leaked_fds, f"fds left open: {leaked_fds}"


@pytest.fixture
def shm_dir(tmp_path):
    d = tmp_path / "rdv"
    d.mkdir()
    return str(d)


@pytest.fixture
def providers(shm_dir):
    """make(**options) -> a started ShmProvider (its upcalls: a real wsd.Switch); all cleaned up after."""
    made = []

    def make(**options):
        sw = wsd.Switch()
        p = ShmProvider(shm_dir=shm_dir, **options)
        p.WSPStartup(sw)
        made.append((sw, p))
        return p
    yield make
    for sw, p in made:
        p.WSPCleanup()
        sw.close()
