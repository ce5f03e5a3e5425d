"""Can this machine run the RDMA tests?  One clear reason when it cannot.

Kept free of module-level pyverbs imports so that test modules can call it
before importing anything that needs pyverbs:

    reason = rdma_skip_reason()
    if reason:
        pytest.skip(reason, allow_module_level=True)
"""

from __future__ import annotations

import functools
import os

HINT = "run them in the softRoCE VM: `wsd-rxe-vm test`"


@functools.lru_cache(maxsize=None)
def rdma_skip_reason() -> str | None:
    try:
        import pyverbs.device as d
        from pyverbs.pyverbs_error import PyverbsRDMAError
    except ImportError as exc:
        return f"pyverbs not importable ({exc}); {HINT}"
    try:
        devs = d.get_device_list()
    except PyverbsRDMAError as exc:
        return f"kernel lacks RDMA support ({exc}); {HINT}"
    if not devs:
        return f"no RDMA device (ib_uverbs loaded, no device registered); {HINT}"
    want = os.environ.get("WSD_RDMA_DEV")
    names = [dev.name.decode() for dev in devs]
    if want and want not in names:
        return f"RDMA device {want} not found (have {', '.join(names)})"
    if not os.path.exists("/dev/infiniband/rdma_cm"):
        return "no /dev/infiniband/rdma_cm (modprobe rdma_ucm)"
    return None
