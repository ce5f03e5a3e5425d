"""pyverbs names the verbs provider uses on the data path, bound once at WSPStartup (an
import statement per work request costs ~0.1 ms in the TCG guest).  ``PV`` is filled in
place, so every module of the provider sees it after :func:`load_pv`."""
from __future__ import annotations

import types

#: MR, PyverbsError, PyverbsRDMAError, SGE, RecvWR, SendWR and _pyverbs_glue's work-request
#: layouts (SGE_LAYOUT, SEND_LAYOUT, RECV_LAYOUT); ``loaded`` once bound
PV = types.SimpleNamespace(loaded=False)


def load_pv() -> None:
    if PV.loaded:
        return
    from pyverbs.mr import MR
    from pyverbs.pyverbs_error import PyverbsError, PyverbsRDMAError
    from pyverbs.wr import SGE, RecvWR, SendWR

    from . import _pyverbs_glue as glue
    PV.SGE_LAYOUT, PV.SEND_LAYOUT, PV.RECV_LAYOUT = glue.SGE_LAYOUT, glue.SEND_LAYOUT, glue.RECV_LAYOUT
    PV.MR, PV.PyverbsError, PV.PyverbsRDMAError = MR, PyverbsError, PyverbsRDMAError
    PV.SGE, PV.RecvWR, PV.SendWR = SGE, RecvWR, SendWR
    PV.loaded = True
