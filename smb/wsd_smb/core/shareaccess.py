"""Per-share access policy: who may connect to a share and with which rights.

MS-SMB2 3.3.5.7 (Receiving an SMB2 TREE_CONNECT Request) has the server check the
session's identity against Share.ConnectSecurity (STATUS_ACCESS_DENIED when it is not
allowed to connect) and compute TreeConnect.MaximalAccess (3.3.1.10), the rights the
user gets on the share, returned in the response (2.2.10).  This server has no share
security descriptors; the configuration speaks Samba's language instead, and this
module maps it onto those two results, as Samba's smbd does:

* ``invalid_users`` never connect; a non-empty ``valid_users`` admits only its users
  (names compared case-insensitively) -> STATUS_ACCESS_DENIED (Samba's answer too).
* a guest session (Session.IsGuest) connects only to shares with ``guest_ok``; IPC$
  stays open to everyone (Samba's IPC$ is "guest ok").  Anonymous (null) sessions are
  not restricted by ``guest_ok`` here.
* MaximalAccess is read-only (FILE_GENERIC_READ | FILE_GENERIC_EXECUTE) on a
  ``read_only`` share unless the user is in ``write_list``, and on a writable share for
  users in ``read_list``; everyone else gets FILE_ALL_ACCESS.  A user in both lists
  gets write access (Samba applies ``read list`` first, then ``write list``).
* Share.MaxUses (``max_connections``; 0xFFFFFFFF unlimited): a TREE_CONNECT when
  Share.CurrentUses has reached it fails with STATUS_REQUEST_NOT_ACCEPTED (3.3.5.7).

Everything here is a pure function of the share, the session's identity and the
server's allow_guest setting (sans-IO; core/files.py calls it at TREE_CONNECT, and
rpc/srvsvc.py for access-based share enumeration).
"""
from __future__ import annotations

from typing import Any

from .. import ntstatus
from ..store.constants import FILE_ALL_ACCESS, FILE_GENERIC_EXECUTE, FILE_GENERIC_READ, FILE_WRITE_DATA

#: TreeConnect.MaximalAccess of a read-only tree connect
READ_ONLY_ACCESS = FILE_GENERIC_READ | FILE_GENERIC_EXECUTE

# Share.CscFlags: the client-side caching policies (MS-SRVS 2.2.4.29 CSC_MASK values,
# the same numbers as MS-SMB2 2.2.10 SMB2_SHAREFLAG_*_CACHING); config csc_policy names
# them as Samba's "csc policy" does
CSC_CACHE_MANUAL_REINT = 0x00000000
CSC_CACHE_AUTO_REINT = 0x00000010
CSC_CACHE_VDO = 0x00000020
CSC_CACHE_NONE = 0x00000030
CSC_MASK = 0x00000030
CSC_POLICIES = {"manual": CSC_CACHE_MANUAL_REINT, "documents": CSC_CACHE_AUTO_REINT,
                "programs": CSC_CACHE_VDO, "disable": CSC_CACHE_NONE}


def _user_of(session: Any) -> tuple[str, bool]:
    """(lower-case user name, is_guest) of a session (Session.SecurityContext)."""
    sc = getattr(session, "security_context", None)
    name = sc.user_name if sc is not None else getattr(session, "user_name", "")
    guest = bool(getattr(session, "is_guest", False) or (sc is not None and sc.is_guest))
    return (name or "").lower(), guest


def connect_refusal(share: Any, session: Any) -> str | None:
    """Why *session* may not connect to *share* (MS-SMB2 3.3.5.7, the Share.ConnectSecurity
    check), or None when it may.  Capacity (MaxUses) is not part of it: see
    :func:`check_tree_connect`."""
    if share.type == "pipe":
        return None  # IPC$: open to every session, guests and anonymous included
    user, guest = _user_of(session)
    if guest and not share.guest_ok:
        return "guest session, share is not guest_ok"
    if user in share.invalid_users:
        return f"user {user!r} is in invalid_users"
    if share.valid_users and user not in share.valid_users:
        return f"user {user!r} is not in valid_users"
    return None


def maximal_access(share: Any, session: Any) -> int:
    """TreeConnect.MaximalAccess (MS-SMB2 3.3.1.10, 2.2.10) of *session* on *share*:
    read-only through ``read_only`` / ``read_list``, writable through ``write_list``."""
    if share.type == "pipe":
        return FILE_ALL_ACCESS
    user, _guest = _user_of(session)
    read_only = share.read_only
    if user in share.read_list:
        read_only = True
    if user in share.write_list:
        read_only = False
    return READ_ONLY_ACCESS if read_only else FILE_ALL_ACCESS


def is_read_only(access: int) -> bool:
    """Whether a tree connect with MaximalAccess *access* may not modify anything."""
    return not access & FILE_WRITE_DATA


def check_tree_connect(share: Any, session: Any) -> int:
    """The TREE_CONNECT checks of MS-SMB2 3.3.5.7 after the share was found: the access
    check (STATUS_ACCESS_DENIED), then Share.MaxUses against Share.CurrentUses
    (STATUS_REQUEST_NOT_ACCEPTED).  Returns TreeConnect.MaximalAccess."""
    why = connect_refusal(share, session)
    if why is not None:
        raise ntstatus.StatusAccessDenied(f"share {share.name}: {why}")
    if share.current_uses >= share.max_uses:
        raise ntstatus.StatusRequestNotAccepted(f"share {share.name}: max_connections {share.max_uses} reached")
    return maximal_access(share, session)


def share_flags(share: Any) -> int:
    """The caching-policy bits of the TREE_CONNECT response's ShareFlags (MS-SMB2 2.2.10):
    Share.CscFlags (SMB2_SHAREFLAG_MANUAL/AUTO/VDO/NO_CACHING)."""
    return share.csc_flags & CSC_MASK
