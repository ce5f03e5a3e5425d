"""Fixtures for the switch tests: providers to parametrize over, a private zmq ipc dir, a switch factory."""
from __future__ import annotations

import os
import sys

import pytest

import wsd
from wsd.registry import create_provider, provider_entry_points

HERE = os.path.dirname(__file__)
sys.path.insert(0, HERE)


def available_san_providers() -> list[str]:
    """Every registered SAN provider that can run on this machine (zmq; shm and verbs where present)."""
    out = []
    for name in sorted(provider_entry_points()):
        if name == "tcp":
            continue
        try:
            p = create_provider(name)
        except wsd.WsaError:
            continue
        if p.is_san and p.availability().ok:
            out.append(name)
    return out


SAN = available_san_providers()
ALL = ["tcp"] + SAN


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


def table_for(provider: str):
    return [] if provider == "tcp" else [("127.0.0.0/8", provider)]
