"""smbtorture suites against the server under test, held to the pin file.

For each target (``WSD_SMB_TARGETS``) and suite, every case pinned in
smbtorture_pins.json must still pass; cases that pass but are not pinned are
listed in the terminal summary ("newly passing") so they can be pinned with
``smbtorture_runner.py --update-pins``.  Against Samba the pins are Samba's own
passing cases, which keeps the runner honest.  The server must survive every
suite (a crash or a dropped listener is a failure even with nothing pinned).

Knobs (environment):
  WSD_SMBTORTURE=full|pinned|off  full (default): whole suites; pinned: only the
                                  pinned cases (quick CI mode); off: skip.
  WSD_SMBTORTURE_BUDGET=S         seconds per suite (default 150)
  WSD_SMBTORTURE_STALL=S          kill smbtorture after S s without output (default 30)
  WSD_SMBTORTURE_SUITES=all       also the slow suites (smb2.replay, smb2.multichannel: minutes
                                  each) and smb2.lease / smb2.oplock against Samba too

smb2.lease and smb2.oplock (about 3 and 2 minutes: they wait out break timeouts) run by
default against wsd-smbd only, so that their pinned cases (oplocks, leases, breaks: the core
of the server's caching) are held in every run; against Samba they are reference figures.
"""
from __future__ import annotations

import os
import socket

import pytest

from smbtorture_runner import (PASS, SLOW_SUITES, SMBTORTURE, SUITES, load_pins, run_suite, server_options,
                               torture_options)

pytestmark = [pytest.mark.interop, pytest.mark.slow]

MODE = os.environ.get("WSD_SMBTORTURE", "full")
BUDGET = float(os.environ.get("WSD_SMBTORTURE_BUDGET", "150"))
STALL = float(os.environ.get("WSD_SMBTORTURE_STALL", "30"))
ALL_SUITES = os.environ.get("WSD_SMBTORTURE_SUITES") == "all"
#: slow suites that run by default, against wsd-smbd only
WSD_SLOW_SUITES = ["smb2.lease", "smb2.oplock"]
RUN_SUITES = SUITES + (SLOW_SUITES if ALL_SUITES else WSD_SLOW_SUITES)


@pytest.fixture(scope="module")
def suite_servers(tmp_path_factory):
    """Servers of their own for suites with per-suite options (SUITE_SERVER_OPTIONS), by (kind, suite)."""
    servers: dict = {}
    yield servers
    for srv in servers.values():
        srv.stop()


def _server_for(smb_server, suite, suite_servers, tmp_path_factory):
    opts = server_options(smb_server.kind, suite)
    if not opts:
        return smb_server
    key = (smb_server.kind, suite)
    if key not in suite_servers:
        from sut_servers import KINDS
        srv = KINDS[smb_server.kind](tmp_path_factory.mktemp(f"torture-{smb_server.kind}-{suite}"),
                                     server_options=opts)
        srv.start()
        suite_servers[key] = srv
    return suite_servers[key]


@pytest.mark.timeout(int(max(BUDGET, 400)) + 120)
@pytest.mark.parametrize("suite", RUN_SUITES)
def test_smbtorture(smb_server, suite, client_conf, torture_report, suite_servers, tmp_path_factory):
    if MODE == "off":
        pytest.skip("WSD_SMBTORTURE=off")
    if SMBTORTURE is None:
        pytest.skip("smbtorture not installed (apt-get install samba-testsuite)")
    if suite in WSD_SLOW_SUITES and smb_server.kind != "wsd" and not ALL_SUITES:
        pytest.skip(f"{suite} is slow: against {smb_server.kind} only with WSD_SMBTORTURE_SUITES=all")
    srv = _server_for(smb_server, suite, suite_servers, tmp_path_factory)
    pins = set(load_pins().get(srv.kind, {}).get(suite, []))
    if MODE == "pinned" and not pins:
        pytest.skip(f"WSD_SMBTORTURE=pinned and nothing of {suite} is pinned for {srv.kind}")
    r = run_suite(srv.host, srv.port, srv.share, srv.creds, suite, cases=sorted(pins) if MODE == "pinned" else None,
                  budget=max(BUDGET, 400) if suite in SLOW_SUITES else BUDGET,
                  # slow suites wait out a 35 s break timeout without output (lease.timeout, batch22a)
                  stall=max(STALL, 60) if suite in SLOW_SUITES else STALL,
                  client_conf=str(client_conf), extra=torture_options(srv.kind, suite))
    torture_report.append((srv.kind, r, pins))

    assert srv.alive(), f"{srv.kind} server exited during {suite}"
    with socket.create_connection((srv.host, srv.port), timeout=5):
        pass  # still accepting

    lost = {c: r.results.get(c, "absent") for c in sorted(pins) if r.results.get(c) not in PASS}
    assert not lost, (f"{suite} on {srv.kind}: pinned cases no longer pass: {lost}\n"
                      + "\n".join(f"--- {c}: {r.details.get(c, '')}" for c in lost)
                      + f"\n--- smbtorture output (tail) ---\n{r.log[-6000:]}")
    if not pins:
        pytest.skip(f"nothing of {suite} pinned for {srv.kind} yet; now: {r.summary()}")


def test_smbtorture_runner_kills_a_stalled_suite(tmp_path, client_conf):
    """The runner's stall guard, against a real listener that accepts and never answers."""
    if SMBTORTURE is None:
        pytest.skip("smbtorture not installed (apt-get install samba-testsuite)")
    import threading
    import time

    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(8)
    held = []
    stop = threading.Event()

    def accept_and_hold():
        lsock.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(lsock.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=accept_and_hold, daemon=True)
    t.start()
    try:
        t0 = time.monotonic()
        r = run_suite("127.0.0.1", lsock.getsockname()[1], "share", "u%p", "smb2.connect", budget=20, stall=3,
                      client_conf=str(client_conf))
        took = time.monotonic() - t0
    finally:
        stop.set()
        t.join(5)
        for s in held:
            s.close()
        lsock.close()
    assert held, "smbtorture never connected"
    assert took < 20 + 5
    assert r.results == {"smb2.connect": "timeout"}, r.results
