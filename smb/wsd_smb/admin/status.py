"""The status report of a running wsd-smbd (what ``wsd-smbstatus`` shows; Samba's
``smbstatus``): built on the server's loop from the server-application queries of
core/state.py (MS-SMB2 3.3.4.18 session_info, 3.3.4.19 tree_connect_infos, 3.3.4.20
open_infos, and byte_range_lock_infos over MS-FSA 2.1.1.3 ByteRangeLock).

The document (JSON-ready: str, int, float, bool, None, lists, dicts)::

    {"server": {...}, "sessions": [...], "tree_connects": [...], "opens": [...],
     "byte_range_locks": [...]}

Times are seconds since the epoch (``*_time``) or durations in seconds (``*_seconds``).
"""
from __future__ import annotations

import os
from typing import Any

from ..core.state import Server

DIALECTS = {0x0202: "SMB2_02", 0x0210: "SMB2_10", 0x0300: "SMB3_00", 0x0302: "SMB3_02", 0x0311: "SMB3_11"}
#: SMB2_SIGNING_CAPABILITIES SigningAlgorithms (MS-SMB2 2.2.3.1.7)
SIGNING_ALGORITHMS = {0x0000: "HMAC-SHA256", 0x0001: "AES-128-CMAC", 0x0002: "AES-128-GMAC"}
#: SMB2_ENCRYPTION_CAPABILITIES Ciphers (MS-SMB2 2.2.3.1.2)
CIPHERS = {0x0001: "AES-128-CCM", 0x0002: "AES-128-GCM", 0x0003: "AES-256-CCM", 0x0004: "AES-256-GCM"}
#: Open.OplockLevel (MS-SMB2 2.2.13 RequestedOplockLevel)
OPLOCK_LEVELS = {0x00: "NONE", 0x01: "LEVEL_II", 0x08: "EXCLUSIVE", 0x09: "BATCH", 0xFF: "LEASE"}

FILE_SHARE_READ, FILE_SHARE_WRITE, FILE_SHARE_DELETE = 0x1, 0x2, 0x4
FILE_READ_DATA, FILE_WRITE_DATA, FILE_APPEND_DATA = 0x1, 0x2, 0x4
GENERIC_ALL, GENERIC_READ, GENERIC_WRITE = 0x10000000, 0x80000000, 0x40000000


def lease_state_name(state: int | None) -> str:
    """SMB2_LEASE_READ_CACHING / WRITE_CACHING / HANDLE_CACHING (MS-SMB2 2.2.13.2.8) as the
    letters R, W, H in smbstatus' order ("RWH"); "NONE" for none."""
    if state is None:
        return ""
    return "".join(c for bit, c in ((0x1, "R"), (0x4, "W"), (0x2, "H")) if state & bit) or "NONE"


def deny_mode(share_access: int) -> str:
    """Samba smbstatus' DenyMode column from Open.ShareAccess (what the open denies others)."""
    deny = ~share_access & (FILE_SHARE_READ | FILE_SHARE_WRITE)
    base = {0: "DENY_NONE", FILE_SHARE_READ: "DENY_READ", FILE_SHARE_WRITE: "DENY_WRITE",
            FILE_SHARE_READ | FILE_SHARE_WRITE: "DENY_ALL"}[deny]
    return base if share_access & FILE_SHARE_DELETE else base + "+NODEL"


def rw_mode(granted_access: int) -> str:
    """Samba smbstatus' R/W column: RDONLY, WRONLY, RDWR, or NONE (metadata only)."""
    r = bool(granted_access & (FILE_READ_DATA | GENERIC_READ | GENERIC_ALL))
    w = bool(granted_access & (FILE_WRITE_DATA | FILE_APPEND_DATA | GENERIC_WRITE | GENERIC_ALL))
    return {(True, True): "RDWR", (True, False): "RDONLY", (False, True): "WRONLY", (False, False): "NONE"}[(r, w)]


def _signing(required: bool, algorithm: int) -> str:
    return SIGNING_ALGORITHMS.get(algorithm, f"0x{algorithm:04x}") if required else "-"


def _cipher(cipher_id: int, active: bool) -> str:
    return CIPHERS.get(cipher_id, f"0x{cipher_id:04x}") if active and cipher_id else "-"


def build_status(server: Server, now: float, *, version: str = "", listen: list[str] | None = None,
                 pid: int | None = None) -> dict[str, Any]:
    """The whole status document at *now* (call it on the loop that owns *server*)."""
    cfg = server.config
    sessions = []
    for si in server.session_infos(now):
        sessions.append({
            "session_id": si.session_id, "session_global_id": si.session_global_id,
            "user": si.user_name, "domain": si.domain_name, "client_address": si.client_address,
            "client_name": si.workstation, "dialect": DIALECTS.get(si.dialect, f"0x{si.dialect:04x}"),
            "signing": _signing(si.signing_required, si.signing_algorithm_id),
            "encryption": _cipher(si.cipher_id, si.is_encrypted or si.client_encrypts),
            "encryption_required": si.is_encrypted,
            "is_guest": si.is_guest, "is_anonymous": si.is_anonymous,
            "logon_time": si.creation_time, "connected_seconds": round(si.connected_time, 3),
            "idle_seconds": round(si.idle_time, 3), "num_opens": si.num_opens,
            "num_tree_connects": si.num_tree_connects, "channels": list(si.channels)})
    trees = []
    for ti in server.tree_connect_infos(now):
        trees.append({
            "tree_global_id": ti.tree_global_id, "tree_id": ti.tree_id, "share": ti.share.name,
            "share_type": ti.share.type, "session_id": ti.session_id, "user": ti.user_name,
            "client_address": ti.client_address, "client_name": ti.client_name,
            "connected_time": ti.creation_time, "connected_seconds": round(ti.connected_time, 3),
            "encryption": _cipher(ti.cipher_id, ti.encrypt_data),
            "signing": _signing(ti.signing_required, ti.signing_algorithm_id), "num_opens": ti.open_count})
    opens = []
    for oi in server.open_infos():
        opens.append({
            "file_global_id": oi.file_global_id, "share": oi.share_name, "path": oi.path,
            "path_name": oi.path_name, "session_id": oi.session_id,
            # a disconnected durable open: its DurableOwner ("DOMAIN\\user") names the user
            "user": oi.user_name or oi.durable_owner.rpartition("\\")[2], "durable_owner": oi.durable_owner,
            "client_address": oi.client_address, "granted_access": oi.granted_access,
            "share_access": oi.share_access, "deny_mode": deny_mode(oi.share_access),
            "rw": rw_mode(oi.granted_access),
            "oplock_level": OPLOCK_LEVELS.get(oi.oplock_level, f"0x{oi.oplock_level:02x}"),
            "oplock_state": oi.oplock_state,
            "lease_key": oi.lease_key.hex() if oi.lease_key is not None else None,
            "lease_state": lease_state_name(oi.lease_state) if oi.lease_state is not None else None,
            "lease_breaking": oi.lease_breaking, "is_durable": oi.is_durable, "is_persistent": oi.is_persistent,
            "is_directory": oi.is_directory, "is_pipe": oi.is_pipe, "open_time": oi.open_time,
            "lock_count": oi.lock_count})
    locks = [{"share": li.share_name, "path": li.path, "offset": li.offset, "length": li.length,
              "exclusive": li.exclusive, "file_global_id": li.file_global_id, "session_id": li.session_id,
              "user": li.user_name, "client_address": li.client_address}
             for li in server.byte_range_lock_infos()]
    return {
        "server": {"program": "wsd-smbd", "version": version, "pid": os.getpid() if pid is None else pid,
                   "start_time": server.server_start_time, "now": now, "listen": list(listen or []),
                   "server_name": cfg.server_name, "domain": cfg.domain_name,
                   "shares": sorted(s.name for s in list(cfg.shares.values()) if not s.deleted)},
        "sessions": sessions, "tree_connects": trees, "opens": opens, "byte_range_locks": locks}
