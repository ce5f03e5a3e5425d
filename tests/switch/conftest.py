"""Fixtures for the switch tests: providers to parametrize over, a private zmq ipc dir, a switch factory."""
from __future__ import annotations

import os
import sys

import pytest

import wsd

HERE = os.path.dirname(__file__)
sys.path.insert(0, HERE)



@pytest.fixture(autouse=True)
def _zmq_dir(tmp_path_factory, monkeypatch):
    d = tmp_path_factory.mktemp("zmq-ipc")
    monkeypatch.setenv("WSD_ZMQ_DIR", str(d))
    yield d


@pytest.fixture
def switches():
    made = []

    def make(table=(), **kw):
        sw = wsd.Switch(list(table), **kw)
        made.append(sw)
        return sw
    yield make
    for sw in made:
        sw.close()


