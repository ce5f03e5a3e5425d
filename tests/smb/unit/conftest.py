"""Fixtures of the SMB unit tests (helpers live in smbunit.py)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from smbunit import ServerThread, make_config  # noqa: E402


@pytest.fixture
def smbd_factory(tmp_path):
    started = []

    def start(**kw) -> ServerThread:
        st = ServerThread(make_config(tmp_path, **kw))
        started.append(st)
        return st

    yield start
    for st in started:
        st.stop()


@pytest.fixture
def smbd(smbd_factory) -> ServerThread:
    return smbd_factory()
