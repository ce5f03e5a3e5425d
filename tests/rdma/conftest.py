"""RDMA tests: run where a real verbs device exists (softRoCE in `wsd-rxe-vm test`).

Everything under tests/rdma is skipped with one clear reason when this machine
cannot do RDMA: pyverbs missing, kernel without RDMA (``get_device_list()``
raises), or no device.  The VM harness exports WSD_RDMA_DEV, WSD_RDMA_ADDR and
WSD_RDMA_GID_INDEX; elsewhere the first device and its first IPv4-mapped GID
are used.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import pytest

from rdma_probe import rdma_skip_reason

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.rdma)


@pytest.fixture(autouse=True)
def _require_rdma():
    reason = rdma_skip_reason()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="session")
def rdma_dev() -> str:
    import pyverbs.device as d
    return os.environ.get("WSD_RDMA_DEV") or d.get_device_list()[0].name.decode()


@pytest.fixture(scope="session")
def rdma_gid_index_addr(rdma_dev) -> tuple[int, str]:
    """(GID index, IPv4 address) to use on port 1."""
    if os.environ.get("WSD_RDMA_ADDR"):
        return int(os.environ.get("WSD_RDMA_GID_INDEX", "1")), os.environ["WSD_RDMA_ADDR"]
    import pyverbs.device as d
    from pyverbs.pyverbs_error import PyverbsRDMAError
    ctx = d.Context(name=rdma_dev)
    try:
        for idx in range(ctx.query_port(1).gid_tbl_len):
            try:
                gid = ipaddress.IPv6Address(str(ctx.query_gid(1, idx)))
            except (PyverbsRDMAError, ValueError):
                continue
            if gid.ipv4_mapped is not None:
                return idx, str(gid.ipv4_mapped)
    finally:
        ctx.close()
    pytest.skip(f"{rdma_dev} has no IPv4-mapped GID (set WSD_RDMA_ADDR)")


@pytest.fixture
def peer_script() -> Path:
    return HERE / "cm_peer.py"
