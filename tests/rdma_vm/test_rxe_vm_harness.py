"""Host side of the softRoCE VM harness: build (or reuse) the image, boot it,
and check that the in-VM RDMA suite really passed.

Skipped, with the reason, when this host cannot build or boot the image (no
QEMU and not root to install it, not Debian, the Debian mirror unreachable).
A build that fails for any other reason is a failure.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from wsd_tools.rxe_vm import hostenv, image

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "tests" / "rdma" / "test_rxe_smoke.py"
CLI = [sys.executable, "-m", "wsd_tools.rxe_vm.cli"]

pytestmark = [pytest.mark.slow, pytest.mark.rdma]


def _mirror_unreachable(mirror: hostenv.Mirror) -> str | None:
    url = f"{mirror.uri}/dists/{mirror.suite}/Release"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=15):
            return None
    except (urllib.error.URLError, OSError) as exc:
        return f"Debian mirror unreachable ({url}: {exc})"


@pytest.fixture(scope="module")
def rxe_image() -> image.Image:
    """The cached image, built first if needed; skip when the host can't."""
    try:
        spec = image.resolve_spec(update_if_needed=True)
    except (hostenv.HostError, image.BuildError) as exc:
        cached = image.latest_cached_image()
        if cached is None:
            pytest.skip(f"softRoCE VM image can't be built: {exc}")
        return cached
    cached = image.cached_image(spec)
    if cached is not None and "qemu-system-x86_64" not in hostenv.missing_tools():
        return cached
    reasons = hostenv.host_reasons()
    if reasons:
        pytest.skip("softRoCE VM image can't be built: " + "; ".join(reasons))
    why = _mirror_unreachable(spec.mirror)
    if why:
        pytest.skip(f"softRoCE VM image can't be built: {why}")
    try:
        return image.build(spec, echo=None)
    except hostenv.HostError as exc:
        pytest.skip(f"softRoCE VM image can't be built: {exc}")


def _cli(*args: str, timeout: float) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    return subprocess.run([*CLI, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.mark.timeout(1500)
def test_run_passes_status_and_output_and_guest_is_isolated(rxe_image):
    script = ("echo nets: $(ls /sys/class/net | sort | tr '\\n' ' '); rdma link show; "
              "ip -4 -o addr show dev dummy0; echo pwd: $(pwd); echo marker-$((6*7)); exit 3")
    r = _cli("run", "--no-build", "--timeout", "300", "--", "sh", "-c", script, timeout=400)
    assert r.returncode == 3, r.stderr
    out = r.stdout
    assert "marker-42" in out
    # No network card in the guest: only loopback and the dummy rxe is bound to.
    assert re.search(r"^nets: dummy0 lo\s*$", out, re.M), out
    assert re.search(r"link rxe0/1 state ACTIVE .*netdev dummy0", out), out
    assert "inet 192.0.2.1/24" in out
    assert f"pwd: {ROOT}" in out or "pwd: /work" in out
    assert "@@WSD-RXE-VM" not in out           # markers are the harness's, not output


@pytest.mark.timeout(1500)
def test_in_vm_rdma_suite_passes(rxe_image):
    tree = ast.parse(SMOKE.read_text())
    names = [n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")]
    assert len(names) >= 3
    r = _cli("test", "--no-build", "--timeout", "900", "--", "-rA", "-q", timeout=1000)
    out = r.stdout
    assert r.returncode == 0, out[-4000:] + r.stderr[-2000:]
    for name in names:
        assert f"PASSED tests/rdma/test_rxe_smoke.py::{name}" in out, out[-4000:]
    # the verbs provider: its own tests, and the switch's end-to-end tests over it
    for path in sorted((ROOT / "tests" / "rdma").glob("test_verbs_*.py")):
        tree = ast.parse(path.read_text())
        for n in tree.body:
            if isinstance(n, ast.FunctionDef) and n.name.startswith("test_"):
                assert f"PASSED tests/rdma/{path.name}::{n.name}" in out, out[-4000:]
    for case in ("test_accept_mediation_and_transfer", "test_reject_gives_peer_WSAECONNREFUSED_after_condition"
                 "_WSD_A7_A8", "test_accept_ex_completes_with_first_data_WSD_X1",
                 "test_cancel_closes_the_accepting_san_socket_WSD_X2"):
        assert f"PASSED tests/switch/test_e2e.py::{case}[verbs]" in out, out[-4000:]
    # one data path: verbs receives into the connection's ring like every provider
    for case in ("test_san_provider_delivers_into_the_connection_ring", "test_san_recv_view_is_zero_copy"):
        assert f"PASSED tests/switch/test_recv_ring.py::{case}[verbs]" in out, out[-4000:]
    summary = out.strip().splitlines()[-1]
    assert "passed" in summary and "failed" not in summary and "error" not in summary, summary


def test_status_reports_the_cached_key(rxe_image):
    r = _cli("status", "--json", timeout=120)
    info = json.loads(r.stdout)
    assert info["cached"] is True
    assert info["image"] == str(rxe_image.path)
    assert r.returncode == 0
