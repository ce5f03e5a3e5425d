"""DCE/RPC over SMB named pipes: PDUs (``pdu``), NDR 2.0 (``ndr``), the sans-IO pipe
association (``pipe``), Win32/NERR error codes (``win32``) and the MS-SRVS interface
(``srvsvc``).

Importing the package registers the IPC$ pipes in ``wsd_smb.core.files.PIPES`` (the
server's start-up does it through ``server.driver.load_file_handlers``).  The SMB
layer lower-cases the name and strips a leading ``pipe\\``; the other spellings
clients send (``\\srvsvc``, ``\\pipe\\srvsvc``) are registered too.
"""
from __future__ import annotations

from ..core.files import PIPES
from .srvsvc import srvsvc_pipe

PIPE_NAMES = {"srvsvc": srvsvc_pipe}


def register_pipes() -> None:
    for name, factory in PIPE_NAMES.items():
        for spelling in (name, "\\" + name, "\\pipe\\" + name):
            PIPES[spelling] = factory


register_pipes()

__all__ = ["PIPE_NAMES", "register_pipes"]
