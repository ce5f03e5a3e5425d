"""Helpers shared by the interop tests: test payloads and an smbclient runner."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from interop_util import SmbclientResult

SMBCLIENT = shutil.which("smbclient")
HERE = Path(__file__).resolve().parent
KNOWN = {k: v for k, v in json.loads((HERE / "wsd_known_failures.json").read_text()).items() if not k.startswith("_")}


def pytest_collection_modifyitems(config, items):
    """Mark the known wsd-smbd failures (wsd_known_failures.json) as strict xfails."""
    for item in items:
        path = Path(str(item.fspath)).resolve()
        if path.parent != HERE:
            continue
        reason = KNOWN.get(f"{path.name}::{item.name}")
        if reason:
            item.add_marker(pytest.mark.xfail(strict=True, reason=reason + " (remove the entry "
                                              "from tests/smb/interop/wsd_known_failures.json once it passes)"))


@pytest.fixture(scope="session")
def payload(tmp_path_factory) -> Path:
    """A few MiB of random bytes whose length is not a multiple of any I/O size."""
    p = tmp_path_factory.mktemp("payload") / "payload.bin"
    p.write_bytes(os.urandom(9 * 1024 * 1024 + 54321))  # > one 8 MiB multi-credit I/O
    return p


@pytest.fixture(scope="session")
def client_conf(tmp_path_factory) -> Path:
    """An empty smb.conf so the host's /etc/samba/smb.conf cannot steer the clients."""
    p = tmp_path_factory.mktemp("clientconf") / "smb.conf"
    p.write_text("[global]\n")
    return p


@pytest.fixture
def smbclient(client_conf):
    """Run Samba's smbclient against a server; returns an :class:`SmbclientResult`."""
    if SMBCLIENT is None:
        pytest.skip("smbclient not installed (apt-get install smbclient)")

    def run(srv, commands: str | None = None, *, dialect: str | None = None, protection: str | None = None,
            list_shares: bool = False, creds: str | None = None, timeout: float = 120) -> SmbclientResult:
        argv = [SMBCLIENT, "-s", str(client_conf), "-d", "5", "-p", str(srv.port), "-U", creds or srv.creds]
        if dialect:
            argv += [f"--option=clientmaxprotocol={dialect}", f"--option=clientminprotocol={dialect}"]
        if protection:
            argv += [f"--client-protection={protection}"]
        if list_shares:
            argv += ["-L", srv.host]
        else:
            argv += [srv.unc]
        if commands is not None:
            argv += ["-c", commands]
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as e:
            pytest.fail(f"smbclient hung for {timeout}s: $ {' '.join(argv)}\n"
                        f"{(e.stdout or b'')[-2000:]!r}\n{(e.stderr or b'')[-2000:]!r}")
        return SmbclientResult(argv, r.returncode, r.stdout, r.stderr)

    return run


_TORTURE: list = []  # (target, SuiteResult, pinned cases) per smbtorture run this session


@pytest.fixture
def torture_report() -> list:
    return _TORTURE


def pytest_terminal_summary(terminalreporter):
    if not _TORTURE:
        return
    tr = terminalreporter
    tr.section("smbtorture results (pass/total per suite)")
    for target, r, pins in _TORTURE:
        new = sorted(r.passed() - pins)
        tr.write_line(f"[{target}] {r.summary()}; pinned {len(pins)}")
        if new:
            tr.write_line(f"    newly passing, not pinned ({len(new)}): {', '.join(new)}")
