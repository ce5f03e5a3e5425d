"""SMB2 wire structures (MS-SMB2 2.2): one declarative definition per structure."""
from .base import FILEID_RELATED, FILEID_ZERO, Buf, F, FileId, Plain, Structure  # noqa: F401
from .commands import *  # noqa: F401,F403
from .contexts import *  # noqa: F401,F403
from .header import *  # noqa: F401,F403
