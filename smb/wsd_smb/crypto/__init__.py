"""SMB2 key derivation (SP800-108), signing and encryption (MS-SMB2 3.1.4)."""
from .smbcrypto import *  # noqa: F401,F403
