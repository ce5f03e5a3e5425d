"""Server-under-test fixtures for the SMB tests (tests/smb/**).

* ``wsd_smbd`` -- our wsd-smbd (python -m wsd_smb.server.cli) on an ephemeral
  loopback port with a temp share and one admin user; one per test session,
  restarted if it died.
* ``samba_smbd`` -- a real Samba smbd on another ephemeral loopback port with
  a generated smb.conf and tdbsam in a temp dir (reference server).
* ``smb_server`` -- parametrised over the targets in ``WSD_SMB_TARGETS``
  (comma separated, default ``wsd,samba``): the same client test runs against
  both, so a failure against wsd that passes against Samba is ours, not the
  harness's.

Every fixture skips with the reason when its server cannot run here (module
or binary missing, not root).  When a test that used a server fails, the
server's log lines written during that test are attached to the report.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sut_servers import KINDS, SambaServer, ServerUnavailable, SmbServer, WsdServer  # noqa: E402

TARGETS = [t.strip() for t in os.environ.get("WSD_SMB_TARGETS", "wsd,samba").split(",") if t.strip()]
for _t in TARGETS:
    if _t not in KINDS:
        raise pytest.UsageError(f"WSD_SMB_TARGETS: unknown target {_t!r} (use {', '.join(KINDS)})")


class _Holder:
    """One session-wide server of a kind, restarted when it has died."""

    def __init__(self, cls: type[SmbServer], root: Path):
        self.cls, self.root, self.server, self.generation = cls, root, None, 0
        self.skip_reason = cls.unavailable_reason()

    def get(self) -> SmbServer:
        if self.skip_reason:
            pytest.skip(self.skip_reason)
        if self.server is not None and not self.server.alive():
            self.server.stop()
            self.server = None
        attempts = 2  # a fresh port and directory once more if the first start fails
        while self.server is None:
            self.generation += 1
            attempts -= 1
            srv = self.cls(self.root / f"run{self.generation}")
            try:
                srv.start()
            except ServerUnavailable as e:
                self.skip_reason = str(e)
                pytest.skip(self.skip_reason)
            except (RuntimeError, TimeoutError) as e:
                if attempts <= 0:
                    pytest.fail(f"{srv.kind} server did not start: {e}\n--- log ---\n{srv.log_tail()}")
                continue
            self.server = srv
        return self.server

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()


@pytest.fixture(scope="session")
def _smb_holders(tmp_path_factory):
    holders = {k: _Holder(cls, tmp_path_factory.mktemp(f"smb-{k}")) for k, cls in KINDS.items()}
    yield holders
    for h in holders.values():
        h.close()


def _use(request, holders, kind: str) -> SmbServer:
    srv = holders[kind].get()
    request.node._smb_servers = getattr(request.node, "_smb_servers", []) + [(srv, srv.log_size())]
    return srv


@pytest.fixture
def wsd_smbd(request, _smb_holders) -> WsdServer:
    """Our server, running; skips when wsd_smb.server.cli is not importable."""
    return _use(request, _smb_holders, "wsd")


@pytest.fixture
def samba_smbd(request, _smb_holders) -> SambaServer:
    """A real Samba smbd, running; skips when samba is missing or not root."""
    return _use(request, _smb_holders, "samba")


@pytest.fixture(params=TARGETS)
def smb_server(request, _smb_holders) -> SmbServer:
    """Each target in WSD_SMB_TARGETS in turn."""
    return _use(request, _smb_holders, request.param)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and call.when in ("setup", "call"):
        for srv, start in getattr(item, "_smb_servers", []):
            state = "running" if srv.alive() else "EXITED"
            rep.sections.append((f"{srv.kind} server log ({state}, port {srv.port}, {srv.log_path})",
                                 srv.log_tail(since=start)))
