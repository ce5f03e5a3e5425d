"""MS-SRVS, the Server Service Remote Protocol (interface srvsvc,
4b324fc8-1670-01d3-1278-5a47bf6ee188 v3.0) on the IPC$ pipe ``\\srvsvc``.

Methods: NetrConnectionEnum (opnum 8, 3.1.4.1), NetrFileEnum (9, 3.1.4.2), NetrFileGetInfo
(10, 3.1.4.3), NetrFileClose (11, 3.1.4.4), NetrSessionEnum (12, 3.1.4.5, SRVS-1 ... SRVS-7),
NetrSessionDel (13, 3.1.4.6), NetrShareEnum (15, 3.1.4.8), NetrShareEnumSticky (36, 3.1.4.9),
NetrShareGetInfo (16, 3.1.4.10), NetrServerGetInfo (21, 3.1.4.17), NetrRemoteTOD (28,
3.1.4.21).  Any other opnum is answered with a fault
nca_s_op_rng_error by the RPC layer.  Errors are Win32/NERR codes in the NET_API_STATUS
return value (:mod:`.win32`), never faults.

Implementation choices where MS-SRVS leaves room:

* SessionList order is the order of the server's session table; a ResumeHandle is the
  1-based position in that list of the last session returned (so 0 keeps meaning "from
  the start"), and the next call continues after it.
* PreferedMaximumLength counts, per entry, 4 bytes per fixed field (pointers included)
  plus the UTF-16 strings with their NULs; at least one entry is returned per call so an
  enumeration always makes progress.
* Callers that are not administrators (``admin`` in the user configuration) get
  ERROR_ACCESS_DENIED at the levels Windows restricts to Administrators/Server Operators:
  NetrSessionEnum 1, 2, 502; NetrShareEnum/NetrShareGetInfo 2, 502, 503;
  NetrServerGetInfo 102 (MS-SRVS 3.1.4.5 <52>, NetSessionEnum/NetShareEnum/NetServerGetInfo
  documentation).  Levels 0 and 10 of NetrSessionEnum are open to every user.
* Open files (NetrFileEnum/GetInfo/Close) and tree connects (NetrConnectionEnum) come from
  the SMB2 server's queries (MS-SMB2 3.3.4.20, 3.3.4.19): fi3_id is Open.FileGlobalId,
  fi3_path_name the file's current path on the server in DOS form (``C:\\srv\\dir\\f``;
  pipes ``\\PIPE\\srvsvc``), listed in FileGlobalId order; BasePath keeps the opens whose
  fi3_path_name starts with it (case-insensitive); UserName ``\\\\host`` keeps a client's
  opens, any other value a user's; no match is success with no entries.  The ResumeHandle is
  a position, as for sessions.  NetrConnectionEnum needs a Qualifier (share name, or
  ``\\\\host`` for a client's connections; ERROR_INVALID_PARAMETER without one,
  NERR_NetNameNotFound / NERR_ClientNameNotFound for an unknown one); coni1_netname is the
  other side (the client for a share qualifier, the share for a client qualifier).
* NetrFileClose closes the open as MS-SMB2 3.3.4.17 (its client's next request on it gets
  STATUS_FILE_CLOSED); NetrSessionDel closes every session matching ClientName and
  UserName (at least one given, else ERROR_INVALID_PARAMETER) as MS-SMB2 3.3.4.12: the
  session's connection tears it down on its own loop right after the call.  All four
  file/connection/session-deletion methods are for administrators only (Windows: members of
  Administrators or Server Operators).
* sesi502_cname is the client's IP address (no port, no leading backslashes);
  sesi502_cltype_name is empty (as Windows Vista and later report); sesi502_transport
  names the transport the session came over.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

from ..core import shareaccess as sa
from .ndr import DWORD, LONG, LPWSTR, U8, WSTR, ConformantArray, Pointer, Struct, Union
from .pdu import SyntaxId
from .pipe import Interface, Operation, RpcPipe
from .win32 import (
    ERROR_MORE_DATA,
    NERR_Success,
    ErrorAccessDenied,
    NerrFileIdNotFound,
    ErrorInvalidLevel,
    ErrorInvalidParameter,
    NerrClientNameNotFound,
    NerrInvalidComputer,
    NerrNetNameNotFound,
    NerrUserNotFound,
)

log = logging.getLogger("wsd_smb.rpc.srvsvc")

SRVSVC_SYNTAX = SyntaxId.of("4b324fc8-1670-01d3-1278-5a47bf6ee188", 3, 0)
MAX_PREFERRED_LENGTH = 0xFFFFFFFF
#: ClientName / UserName limit including the terminating NUL (3.1.4.5)
MAX_NAME_CHARS = 1024

# share types (2.2.2.4)
STYPE_DISKTREE = 0x00000000
STYPE_PRINTQ = 0x00000001
STYPE_DEVICE = 0x00000002
STYPE_IPC = 0x00000003
STYPE_TEMPORARY = 0x40000000
STYPE_SPECIAL = 0x80000000
# shi1005 / shi501 flags (2.2.4.29)
SHI1005_FLAGS_ENCRYPT_DATA = 0x00008000
SHI1005_FLAGS_ACCESS_BASED_DIRECTORY_ENUM = 0x00000800
# session user flags (2.2.4.13)
SESS_GUEST = 0x00000001
SESS_NOENCRYPTION = 0x00000002
# server info (2.2.4.40, 2.2.2.7)
PLATFORM_ID_NT = 500
SV_TYPE_WORKSTATION = 0x00000001
SV_TYPE_SERVER = 0x00000002
SV_TYPE_NT = 0x00001000
SV_TYPE_SERVER_NT = 0x00008000
SV_VISIBLE = 0
SERVER_TYPE = SV_TYPE_WORKSTATION | SV_TYPE_SERVER | SV_TYPE_NT | SV_TYPE_SERVER_NT
SERVER_COMMENT = "wsd-smbd"

# ====================================================================== IDL types (MS-SRVS 2.2.4, 6)
LPBYTE_SD = Pointer(ConformantArray(U8))  # [size_is(reserved)] unsigned char* security_descriptor


def _info(name: str, fields: list[tuple[str, Any]]) -> Struct:
    return Struct(name, fields)


SESSION_INFO = {
    0: _info("SESSION_INFO_0", [("sesi0_cname", LPWSTR)]),
    1: _info("SESSION_INFO_1", [("sesi1_cname", LPWSTR), ("sesi1_username", LPWSTR), ("sesi1_num_opens", DWORD),
                                ("sesi1_time", DWORD), ("sesi1_idle_time", DWORD), ("sesi1_user_flags", DWORD)]),
    2: _info("SESSION_INFO_2", [("sesi2_cname", LPWSTR), ("sesi2_username", LPWSTR), ("sesi2_num_opens", DWORD),
                                ("sesi2_time", DWORD), ("sesi2_idle_time", DWORD), ("sesi2_user_flags", DWORD),
                                ("sesi2_cltype_name", LPWSTR)]),
    10: _info("SESSION_INFO_10", [("sesi10_cname", LPWSTR), ("sesi10_username", LPWSTR), ("sesi10_time", DWORD),
                                  ("sesi10_idle_time", DWORD)]),
    502: _info("SESSION_INFO_502", [("sesi502_cname", LPWSTR), ("sesi502_username", LPWSTR),
                                    ("sesi502_num_opens", DWORD), ("sesi502_time", DWORD),
                                    ("sesi502_idle_time", DWORD), ("sesi502_user_flags", DWORD),
                                    ("sesi502_cltype_name", LPWSTR), ("sesi502_transport", LPWSTR)]),
}

_SHARE_2 = [("permissions", DWORD), ("max_uses", DWORD), ("current_uses", DWORD), ("path", LPWSTR),
            ("passwd", LPWSTR)]


def _share(level: int, fields: list[tuple[str, Any]]) -> Struct:
    return Struct(f"SHARE_INFO_{level}", [(f"shi{level}_{n}", t) for n, t in fields])


_BASE = [("netname", LPWSTR), ("type", DWORD), ("remark", LPWSTR)]
SHARE_INFO = {
    0: _share(0, [("netname", LPWSTR)]),
    1: _share(1, _BASE),
    2: _share(2, _BASE + _SHARE_2),
    501: _share(501, _BASE + [("flags", DWORD)]),
    502: _share(502, _BASE + _SHARE_2 + [("reserved", DWORD), ("security_descriptor", LPBYTE_SD)]),
    503: _share(503, _BASE + _SHARE_2 + [("servername", LPWSTR), ("reserved", DWORD),
                                         ("security_descriptor", LPBYTE_SD)]),
    1004: _share(1004, [("remark", LPWSTR)]),
    1005: _share(1005, [("flags", DWORD)]),
    1006: _share(1006, [("max_uses", DWORD)]),
}
SHARE_ENUM_LEVELS = (0, 1, 2, 501, 502, 503)
SHARE_GETINFO_LEVELS = (0, 1, 2, 501, 502, 503, 1004, 1005, 1006)
SESSION_LEVELS = (0, 1, 2, 10, 502)


def _container(name: str, elem: Struct) -> Struct:
    """*_INFO_*_CONTAINER: EntriesRead + [size_is(EntriesRead)] pointer to the array."""
    return Struct(name, [("EntriesRead", DWORD), ("Buffer", Pointer(ConformantArray(elem)))])


SESSION_ENUM_STRUCT = Struct("SESSION_ENUM_STRUCT", [
    ("Level", DWORD),
    ("SessionInfo", Union({lv: Pointer(_container(f"SESSION_INFO_{lv}_CONTAINER", SESSION_INFO[lv]))
                           for lv in SESSION_LEVELS}, default=Union.EMPTY)),
])
SHARE_ENUM_STRUCT = Struct("SHARE_ENUM_STRUCT", [
    ("Level", DWORD),
    ("ShareInfo", Union({lv: Pointer(_container(f"SHARE_INFO_{lv}_CONTAINER", SHARE_INFO[lv]))
                         for lv in SHARE_ENUM_LEVELS}, default=Union.EMPTY)),
])
#: LPSHARE_INFO (2.2.3.6): the out union of NetrShareGetInfo; 1501 exists in the IDL but is not served
SHARE_INFO_UNION = Union({**{lv: Pointer(SHARE_INFO[lv]) for lv in SHARE_GETINFO_LEVELS}, 1501: Pointer(None)},
                         default=Union.EMPTY)

SERVER_INFO = {
    100: Struct("SERVER_INFO_100", [("sv100_platform_id", DWORD), ("sv100_name", LPWSTR)]),
    101: Struct("SERVER_INFO_101", [("sv101_platform_id", DWORD), ("sv101_name", LPWSTR),
                                    ("sv101_version_major", DWORD), ("sv101_version_minor", DWORD),
                                    ("sv101_type", DWORD), ("sv101_comment", LPWSTR)]),
    102: Struct("SERVER_INFO_102", [("sv102_platform_id", DWORD), ("sv102_name", LPWSTR),
                                    ("sv102_version_major", DWORD), ("sv102_version_minor", DWORD),
                                    ("sv102_type", DWORD), ("sv102_comment", LPWSTR), ("sv102_users", DWORD),
                                    ("sv102_disc", LONG), ("sv102_hidden", DWORD), ("sv102_announce", DWORD),
                                    ("sv102_anndelta", DWORD), ("sv102_licenses", DWORD),
                                    ("sv102_userpath", LPWSTR)]),
}
#: levels of the LPSERVER_INFO union (2.2.3.7) this server does not serve: NULL arm on error
_SERVER_IDL_LEVELS = (103, 502, 503, 599, 1005, 1107, 1010, 1016, 1017, 1018, 1501, 1502, 1503, 1506,
                      *range(1510, 1517), 1518, 1523, 1528, 1529, 1530, *range(1533, 1537),
                      *range(1538, 1551), *range(1552, 1557))
SERVER_INFO_UNION = Union({**{lv: Pointer(t) for lv, t in SERVER_INFO.items()},
                           **{lv: Pointer(None) for lv in _SERVER_IDL_LEVELS}}, default=Union.EMPTY)

TIME_OF_DAY_INFO = Struct("TIME_OF_DAY_INFO", [
    ("tod_elapsedt", DWORD), ("tod_msecs", DWORD), ("tod_hours", DWORD), ("tod_mins", DWORD), ("tod_secs", DWORD),
    ("tod_hunds", DWORD), ("tod_timezone", LONG), ("tod_tinterval", DWORD), ("tod_day", DWORD),
    ("tod_month", DWORD), ("tod_year", DWORD), ("tod_weekday", DWORD),
])

#: FILE_INFO_2 / FILE_INFO_3 (MS-SRVS 2.2.4.6, 2.2.4.7); FILE_ENUM_STRUCT (2.2.4.10), LPFILE_INFO (2.2.3.3)
FILE_INFO = {
    2: Struct("FILE_INFO_2", [("fi2_id", DWORD)]),
    3: Struct("FILE_INFO_3", [("fi3_id", DWORD), ("fi3_permissions", DWORD), ("fi3_num_locks", DWORD),
                              ("fi3_path_name", LPWSTR), ("fi3_username", LPWSTR)]),
}
FILE_LEVELS = (2, 3)
FILE_ENUM_STRUCT = Struct("FILE_ENUM_STRUCT", [
    ("Level", DWORD),
    ("FileInfo", Union({lv: Pointer(_container(f"FILE_INFO_{lv}_CONTAINER", FILE_INFO[lv])) for lv in FILE_LEVELS},
                       default=Union.EMPTY)),
])
FILE_INFO_UNION = Union({lv: Pointer(FILE_INFO[lv]) for lv in FILE_LEVELS}, default=Union.EMPTY)

#: CONNECTION_INFO_0 / _1 (MS-SRVS 2.2.4.1, 2.2.4.2); CONNECT_ENUM_STRUCT (2.2.4.5)
CONNECTION_INFO = {
    0: Struct("CONNECTION_INFO_0", [("coni0_id", DWORD)]),
    1: Struct("CONNECTION_INFO_1", [("coni1_id", DWORD), ("coni1_type", DWORD), ("coni1_num_opens", DWORD),
                                    ("coni1_num_users", DWORD), ("coni1_time", DWORD), ("coni1_username", LPWSTR),
                                    ("coni1_netname", LPWSTR)]),
}
CONNECTION_LEVELS = (0, 1)
CONNECT_ENUM_STRUCT = Struct("CONNECT_ENUM_STRUCT", [
    ("Level", DWORD),
    ("ConnectInfo", Union({lv: Pointer(_container(f"CONNECT_INFO_{lv}_CONTAINER", CONNECTION_INFO[lv]))
                           for lv in CONNECTION_LEVELS}, default=Union.EMPTY)),
])

SRVSVC_HANDLE = LPWSTR  # [in, string, unique] SRVSVC_HANDLE ServerName
PDWORD = Pointer(DWORD)  # [in, out, unique] DWORD* ResumeHandle


# ====================================================================== the caller
@dataclass
class Caller:
    """Who called through this pipe: the server (SessionList, shares) and the SMB session
    that opened the pipe (its SecurityContext decides the permission checks)."""

    server: Any
    session: Any = None
    clock: Callable[[], float] = time.time

    @property
    def is_admin(self) -> bool:
        sc = getattr(self.session, "security_context", None)
        return bool(sc is not None and sc.is_admin and not sc.is_guest and not sc.is_anonymous)


def _require_admin(caller: Caller, what: str) -> None:
    """SRVS-7: the caller's permission (MS-SRVS 3.1.4.5 <52>)."""
    if not caller.is_admin:
        raise ErrorAccessDenied(f"{what}: administrators only")


# ====================================================================== SESSION_INFO_502 records
def host_of(address: str) -> str:
    """'127.0.0.1:51234' -> '127.0.0.1', '::1:51234' -> '::1', '[::1]:5' -> '::1'."""
    host = address.rsplit(":", 1)[0] if ":" in address else address
    return host.strip("[]")


def session_502(info: Any) -> dict:
    """The SESSION_INFO_502 the SMB2 server's session-information query (MS-SMB2 3.3.4.18)
    answers for one session (SRVS-2b)."""
    return {
        "sesi502_cname": host_of(info.client_address or info.client_name),
        "sesi502_username": info.user_name,
        "sesi502_num_opens": int(info.num_opens),
        "sesi502_time": int(max(0.0, info.connected_time)) & 0xFFFFFFFF,
        "sesi502_idle_time": int(max(0.0, info.idle_time)) & 0xFFFFFFFF,
        "sesi502_user_flags": SESS_GUEST if info.is_guest else 0,
        "sesi502_cltype_name": "",
        "sesi502_transport": info.transport,
    }


def session_level(level: int, s: dict) -> dict:
    """Fill SESSION_INFO_<level> from a SESSION_INFO_502 record as 3.1.4.5 maps it (SRVS-1)."""
    p = f"sesi{level}_"
    fields = [n[len(f"sesi{level}_"):] for n, _ in SESSION_INFO[level].fields]
    return {p + f: s["sesi502_" + f] for f in fields}


def _entry_size(t: Struct, entry: dict) -> int:
    """What one entry counts against PreferedMaximumLength (module docstring)."""
    return 4 * len(t.fields) + sum(2 * (len(v) + 1) for v in entry.values() if isinstance(v, str))


def _fit(items: list[tuple[int, dict]], t: Struct, pref: int) -> list[tuple[int, dict]]:
    """SRVS-4: as many entries as fit in *pref* bytes (at least one); all for MAX_PREFERRED_LENGTH."""
    if pref == MAX_PREFERRED_LENGTH:
        return items
    out, used = [], 0
    for idx, e in items:
        size = _entry_size(t, e)
        if out and used + size > pref:
            break
        out.append((idx, e))
        used += size
    return out


def _check_level(level: int, tag: int, levels: tuple[int, ...]) -> None:
    if level != tag:
        raise ErrorInvalidParameter(f"Level {level} != union tag {tag}")
    if level not in levels:
        raise ErrorInvalidLevel(f"level {level}")


# ====================================================================== NetrSessionEnum (opnum 12)
def netr_session_enum(caller: Caller, ins: list) -> tuple[list, int]:
    """MS-SRVS 3.1.4.5 (SRVS-1 ... SRVS-7)."""
    _server_name, client_name, user_name, info, pref, resume = ins
    level, tag = info["Level"], info["SessionInfo"][0]
    _check_level(level, tag, SESSION_LEVELS)  # SRVS-1
    client_name = client_name or None  # a NULL (zero-length) string is no qualifier
    user_name = user_name or None
    if client_name is not None:  # SRVS-2
        if not client_name.startswith("\\\\"):
            raise NerrInvalidComputer(repr(client_name[:40]))
        if len(client_name) + 1 > MAX_NAME_CHARS:
            raise ErrorInvalidParameter("ClientName longer than 1024 characters")
    if user_name is not None and len(user_name) + 1 > MAX_NAME_CHARS:
        raise ErrorInvalidParameter("UserName longer than 1024 characters")
    if level in (1, 2, 502):  # SRVS-7
        _require_admin(caller, f"NetrSessionEnum level {level}")
    server = caller.server
    now = caller.clock()
    # SRVS-2b: query every session of the SessionList by its SessionGlobalId (MS-SMB2 3.3.4.18)
    session_list = []
    for gid in server.session_global_ids():
        si = server.session_info(gid, now)
        if si is not None:
            session_list.append(session_502(si))
    start = resume or 0  # SRVS-6: NULL or 0 -> from the beginning
    if start >= len(session_list) and start != 0:
        return [_session_out(level, []), 0, resume], NERR_Success  # SRVS-6: past the end
    candidates = list(enumerate(session_list[start:], start))
    want_client = client_name[2:].lower() if client_name else None
    by_client = [(i, s) for i, s in candidates if want_client is None or s["sesi502_cname"].lower() == want_client]
    matching = [(i, s) for i, s in by_client
                if user_name is None or s["sesi502_username"].lower() == user_name.lower()]
    if not matching and (client_name or user_name):  # SRVS-3
        if client_name and not by_client:
            raise NerrClientNameNotFound(client_name)
        raise NerrUserNotFound(user_name or client_name)
    t = SESSION_INFO[level]
    shaped = [(i, session_level(level, s)) for i, s in matching]
    chosen = _fit(shaped, t, pref)  # SRVS-4
    total = len(matching)  # SRVS-5
    status = ERROR_MORE_DATA if len(chosen) < total else NERR_Success
    new_resume = resume
    if resume is not None:
        new_resume = chosen[-1][0] + 1 if status == ERROR_MORE_DATA else 0  # SRVS-6
    return [_session_out(level, [e for _, e in chosen]), total, new_resume], status


def _session_out(level: int, entries: list[dict]) -> dict:
    if level not in SESSION_LEVELS:
        return {"Level": level, "SessionInfo": (level, None)}
    return {"Level": level, "SessionInfo": (level, {"EntriesRead": len(entries), "Buffer": entries or None})}


def _session_error_outs(ins: list) -> list:
    info = ins[3]
    return [_session_out(info["Level"], []), 0, ins[5]]


def _page(items: list[dict], t: Struct, pref: int, resume: int | None) -> tuple[list[dict], int, int | None, int]:
    """One page of an enumeration from position *resume* (as SRVS-4/5/6 for sessions):
    (entries, TotalEntries, the new ResumeHandle, status)."""
    start = resume or 0
    if start >= len(items) and start != 0:
        return [], 0, resume, NERR_Success
    chosen = _fit(list(enumerate(items[start:], start)), t, pref)
    total = len(items) - start
    status = ERROR_MORE_DATA if len(chosen) < total else NERR_Success
    new_resume = resume
    if resume is not None:
        new_resume = chosen[-1][0] + 1 if status == ERROR_MORE_DATA else 0
    return [e for _, e in chosen], total, new_resume, status


def _check_name(name: str | None, what: str) -> None:
    if name is not None and len(name) + 1 > MAX_NAME_CHARS:
        raise ErrorInvalidParameter(f"{what} longer than 1024 characters")


# ====================================================================== open files (3.1.4.2 - 3.1.4.4)
def file_level(level: int, info: Any) -> dict:
    """FILE_INFO_<level> from the SMB2 server's open query (MS-SMB2 3.3.4.20)."""
    if level == 2:
        return {"fi2_id": info.file_global_id}
    return {"fi3_id": info.file_global_id, "fi3_permissions": info.granted_access & 0xFFFFFFFF,
            "fi3_num_locks": info.lock_count, "fi3_path_name": info.path_name, "fi3_username": info.user_name}


def _file_out(level: int, entries: list[dict]) -> dict:
    if level not in FILE_LEVELS:
        return {"Level": level, "FileInfo": (level, None)}
    return {"Level": level, "FileInfo": (level, {"EntriesRead": len(entries), "Buffer": entries or None})}


def netr_file_enum(caller: Caller, ins: list) -> tuple[list, int]:
    """MS-SRVS 3.1.4.2 NetrFileEnum (levels 2, 3)."""
    _server_name, base_path, user_name, info, pref, resume = ins
    level, tag = info["Level"], info["FileInfo"][0]
    _check_level(level, tag, FILE_LEVELS)
    base_path, user_name = base_path or None, user_name or None
    _check_name(base_path, "BasePath")
    _check_name(user_name, "UserName")
    _require_admin(caller, "NetrFileEnum")
    opens = caller.server.open_infos()
    if base_path is not None:
        opens = [o for o in opens if o.path_name.lower().startswith(base_path.lower())]
    if user_name is not None:
        if user_name.startswith("\\\\"):
            host = user_name[2:].lower()
            opens = [o for o in opens if host_of(o.client_address).lower() == host]
        else:
            opens = [o for o in opens if o.user_name.lower() == user_name.lower()]
    entries, total, new_resume, status = _page([file_level(level, o) for o in opens], FILE_INFO[level], pref,
                                               resume)
    return [_file_out(level, entries), total, new_resume], status


def _find_open(caller: Caller, file_id: int) -> Any:
    for o in caller.server.open_infos():
        if o.file_global_id == file_id:
            return o
    raise NerrFileIdNotFound(f"FileId {file_id}")


def netr_file_get_info(caller: Caller, ins: list) -> tuple[list, int]:
    """MS-SRVS 3.1.4.3 NetrFileGetInfo (levels 2, 3)."""
    _server_name, file_id, level = ins
    if level not in FILE_LEVELS:
        raise ErrorInvalidLevel(f"level {level}")
    _require_admin(caller, "NetrFileGetInfo")
    return [(level, file_level(level, _find_open(caller, file_id)))], NERR_Success


def netr_file_close(caller: Caller, ins: list) -> tuple[list, int]:
    """MS-SRVS 3.1.4.4 NetrFileClose: the open is closed as MS-SMB2 3.3.4.17."""
    _server_name, file_id = ins
    _require_admin(caller, "NetrFileClose")
    if not caller.server.close_open(file_id):
        raise NerrFileIdNotFound(f"FileId {file_id}")
    log.info("event=file_closed_by_admin file_global_id=%d", file_id)
    return [], NERR_Success


# ====================================================================== NetrSessionDel (3.1.4.6)
def netr_session_del(caller: Caller, ins: list) -> tuple[list, int]:
    """MS-SRVS 3.1.4.6 NetrSessionDel: every session from ClientName of UserName (either may
    be NULL, not both) is closed as MS-SMB2 3.3.4.12."""
    _server_name, client_name, user_name = ins
    client_name, user_name = client_name or None, user_name or None
    if client_name is None and user_name is None:
        raise ErrorInvalidParameter("neither ClientName nor UserName")
    if client_name is not None and not client_name.startswith("\\\\"):
        raise NerrInvalidComputer(repr(client_name[:40]))
    _check_name(client_name, "ClientName")
    _check_name(user_name, "UserName")
    _require_admin(caller, "NetrSessionDel")
    server = caller.server
    infos = [server.session_info(g) for g in server.session_global_ids()]
    infos = [i for i in infos if i is not None]
    by_client = [i for i in infos if client_name is None or host_of(i.client_address).lower() == client_name[2:].lower()]
    matching = [i for i in by_client if user_name is None or i.user_name.lower() == user_name.lower()]
    if not matching:
        if client_name is not None and not by_client:
            raise NerrClientNameNotFound(client_name)
        raise NerrUserNotFound(user_name or client_name)
    for i in matching:
        server.close_session(i.session_global_id)
        log.info("event=session_deleted_by_admin user=%s client=%s", i.user_name, i.client_address)
    return [], NERR_Success


# ====================================================================== NetrConnectionEnum (3.1.4.1)
def connection_level(level: int, tc: Any, by_share: bool) -> dict:
    """CONNECTION_INFO_<level> from the SMB2 server's tree-connect query (MS-SMB2 3.3.4.19)."""
    if level == 0:
        return {"coni0_id": tc.tree_global_id}
    return {"coni1_id": tc.tree_global_id, "coni1_type": _share_type(tc.share), "coni1_num_opens": tc.open_count,
            "coni1_num_users": 1, "coni1_time": int(tc.connected_time) & 0xFFFFFFFF,
            "coni1_username": tc.user_name,
            "coni1_netname": host_of(tc.client_address) if by_share else tc.share.name}


def _connection_out(level: int, entries: list[dict]) -> dict:
    if level not in CONNECTION_LEVELS:
        return {"Level": level, "ConnectInfo": (level, None)}
    return {"Level": level, "ConnectInfo": (level, {"EntriesRead": len(entries), "Buffer": entries or None})}


def netr_connection_enum(caller: Caller, ins: list) -> tuple[list, int]:
    """MS-SRVS 3.1.4.1 NetrConnectionEnum (levels 0, 1): the tree connects to a share, or
    from a client (Qualifier ``\\\\host``)."""
    _server_name, qualifier, info, pref, resume = ins
    level, tag = info["Level"], info["ConnectInfo"][0]
    _check_level(level, tag, CONNECTION_LEVELS)
    if not qualifier:
        raise ErrorInvalidParameter("no Qualifier")
    _check_name(qualifier, "Qualifier")
    _require_admin(caller, "NetrConnectionEnum")
    trees = caller.server.tree_connect_infos(caller.clock())
    by_share = not qualifier.startswith("\\\\")
    if by_share:
        if caller.server.config.share(qualifier) is None:
            raise NerrNetNameNotFound(qualifier)
        trees = [t for t in trees if t.share.name.lower() == qualifier.lower()]
    else:
        host = qualifier[2:].lower()
        trees = [t for t in trees if host_of(t.client_address).lower() == host]
        if not trees:
            raise NerrClientNameNotFound(qualifier)
    entries, total, new_resume, status = _page([connection_level(level, t, by_share) for t in trees],
                                               CONNECTION_INFO[level], pref, resume)
    return [_connection_out(level, entries), total, new_resume], status


# ====================================================================== shares
def _shares(caller: Caller) -> list[Any]:
    """The shares NetrShareEnum lists (MS-SRVS 3.1.4.8; the server chooses which of its
    ShareList to show, as Samba does): every configured share, IPC$ included, except
    the ones with ``browseable = false`` (still reachable by name and by
    NetrShareGetInfo) and, for a share with ``access_based_share_enum``, unless the
    caller's session could connect to it (core/shareaccess.py, the TREE_CONNECT check
    without MaxUses)."""
    return [s for s in caller.server.config.shares.values()
            if getattr(s, "browseable", True)
            and not (getattr(s, "access_based_share_enum", False) and sa.connect_refusal(s, caller.session))]


def _share_type(share: Any) -> int:
    t = STYPE_IPC if share.type == "pipe" else STYPE_DISKTREE
    if share.type == "pipe" or share.name.endswith("$"):
        t |= STYPE_SPECIAL
    return t


def _dos_path(share: Any) -> str:
    if share.type == "pipe" or not share.local_path:
        return ""
    return "C:" + share.local_path.replace("/", "\\")


def share_level(level: int, share: Any) -> dict:
    """SHARE_INFO_<level> of *share* (MS-SRVS 2.2.4.22 ff.)."""
    flags = SHI1005_FLAGS_ENCRYPT_DATA if share.encrypt_data else 0
    if getattr(share, "do_access_based_directory_enumeration", False):  # namespace policy: hide_unreadable
        flags |= SHI1005_FLAGS_ACCESS_BASED_DIRECTORY_ENUM
    if share.type != "pipe":
        flags |= getattr(share, "csc_flags", 0) & sa.CSC_MASK  # CSC_MASK: the caching policy (2.2.4.29)
    values = {
        "netname": share.name, "type": _share_type(share), "remark": share.remark or "",
        "permissions": 0, "max_uses": share.max_uses & 0xFFFFFFFF, "current_uses": share.current_uses,
        "path": _dos_path(share), "passwd": None, "flags": flags, "reserved": 0, "security_descriptor": None,
        "servername": "*",
    }
    return {n: values[n[len(f"shi{level}_"):]] for n, _ in SHARE_INFO[level].fields}


def netr_share_enum(caller: Caller, ins: list, sticky: bool = False) -> tuple[list, int]:
    """MS-SRVS 3.1.4.8 NetrShareEnum; with *sticky* 3.1.4.9 NetrShareEnumSticky (only the
    persistent shares: here every configured share that is not special, i.e. not IPC$
    and not a name ending in $).  Both leave out what :func:`_shares` leaves out
    (``browseable = false``; ``access_based_share_enum`` shares the caller may not
    connect to), TotalEntries included."""
    _server_name, info, pref, resume = ins
    level, tag = info["Level"], info["ShareInfo"][0]
    _check_level(level, tag, SHARE_ENUM_LEVELS)
    if level in (2, 502, 503):
        _require_admin(caller, f"NetrShareEnum level {level}")
    shares = _shares(caller)
    if sticky:
        shares = [s for s in shares if not _share_type(s) & STYPE_SPECIAL]
    start = resume or 0
    items = [(i, share_level(level, s)) for i, s in enumerate(shares[start:], start)]
    chosen = _fit(items, SHARE_INFO[level], pref)
    status = ERROR_MORE_DATA if len(chosen) < len(items) else NERR_Success
    new_resume = resume
    if resume is not None:
        new_resume = chosen[-1][0] + 1 if status == ERROR_MORE_DATA else 0
    return [_share_out(level, [e for _, e in chosen]), len(items), new_resume], status


def _share_out(level: int, entries: list[dict]) -> dict:
    if level not in SHARE_ENUM_LEVELS:
        return {"Level": level, "ShareInfo": (level, None)}
    return {"Level": level, "ShareInfo": (level, {"EntriesRead": len(entries), "Buffer": entries or None})}


def netr_share_get_info(caller: Caller, ins: list) -> tuple[list, int]:
    """MS-SRVS 3.1.4.10 NetrShareGetInfo."""
    _server_name, net_name, level = ins
    if level not in SHARE_GETINFO_LEVELS:
        raise ErrorInvalidLevel(f"level {level}")
    share = caller.server.config.share(net_name)
    if share is None:
        raise NerrNetNameNotFound(net_name)
    if level in (2, 502, 503):
        _require_admin(caller, f"NetrShareGetInfo level {level}")
    return [(level, share_level(level, share))], NERR_Success


# ====================================================================== server info, time of day
def netr_server_get_info(caller: Caller, ins: list) -> tuple[list, int]:
    """MS-SRVS 3.1.4.17 NetrServerGetInfo (levels 100, 101, 102)."""
    _server_name, level = ins
    if level not in SERVER_INFO:
        raise ErrorInvalidLevel(f"level {level}")
    if level == 102:
        _require_admin(caller, "NetrServerGetInfo level 102")
    cfg = caller.server.config
    v = {"platform_id": PLATFORM_ID_NT, "name": cfg.server_name, "version_major": 10, "version_minor": 0,
         "type": SERVER_TYPE, "comment": SERVER_COMMENT, "users": len(cfg.users), "disc": -1,
         "hidden": SV_VISIBLE, "announce": 240, "anndelta": 3000, "licenses": 0, "userpath": "c:\\"}
    p = f"sv{level}_"
    return [(level, {n: v[n[len(p):]] for n, _ in SERVER_INFO[level].fields})], NERR_Success


def netr_remote_tod(caller: Caller, ins: list) -> tuple[list, int]:
    """MS-SRVS 3.1.4.21 NetrRemoteTOD (TIME_OF_DAY_INFO, 2.2.4.105), times in UTC."""
    now = caller.clock()
    t = time.gmtime(now)
    offset = time.localtime(now).tm_gmtoff
    up_ms = int((now - caller.server.server_start_time) * 1000) & 0xFFFFFFFF
    tod = {"tod_elapsedt": int(now) & 0xFFFFFFFF, "tod_msecs": up_ms, "tod_hours": t.tm_hour, "tod_mins": t.tm_min,
           "tod_secs": t.tm_sec, "tod_hunds": int((now % 1) * 100), "tod_timezone": -offset // 60,
           "tod_tinterval": 310, "tod_day": t.tm_mday, "tod_month": t.tm_mon, "tod_year": t.tm_year,
           "tod_weekday": (t.tm_wday + 1) % 7}
    return [tod], NERR_Success


# ====================================================================== the interface
SRVSVC = Interface("srvsvc", SRVSVC_SYNTAX, [
    Operation(8, "NetrConnectionEnum",
              [SRVSVC_HANDLE, LPWSTR, CONNECT_ENUM_STRUCT, DWORD, PDWORD],
              [CONNECT_ENUM_STRUCT, DWORD, PDWORD], netr_connection_enum,
              lambda ins: [_connection_out(ins[2]["Level"], []), 0, ins[4]]),
    Operation(9, "NetrFileEnum",
              [SRVSVC_HANDLE, LPWSTR, LPWSTR, FILE_ENUM_STRUCT, DWORD, PDWORD],
              [FILE_ENUM_STRUCT, DWORD, PDWORD], netr_file_enum,
              lambda ins: [_file_out(ins[3]["Level"], []), 0, ins[5]]),
    Operation(10, "NetrFileGetInfo",
              [SRVSVC_HANDLE, DWORD, DWORD],
              [FILE_INFO_UNION], netr_file_get_info, lambda ins: [(ins[2], None)]),
    Operation(11, "NetrFileClose", [SRVSVC_HANDLE, DWORD], [], netr_file_close, lambda ins: []),
    Operation(13, "NetrSessionDel", [SRVSVC_HANDLE, LPWSTR, LPWSTR], [], netr_session_del, lambda ins: []),
    Operation(12, "NetrSessionEnum",
              [SRVSVC_HANDLE, LPWSTR, LPWSTR, SESSION_ENUM_STRUCT, DWORD, PDWORD],
              [SESSION_ENUM_STRUCT, DWORD, PDWORD], netr_session_enum, _session_error_outs),
    Operation(15, "NetrShareEnum",
              [SRVSVC_HANDLE, SHARE_ENUM_STRUCT, DWORD, PDWORD],
              [SHARE_ENUM_STRUCT, DWORD, PDWORD], netr_share_enum,
              lambda ins: [_share_out(ins[1]["Level"], []), 0, ins[3]]),
    Operation(36, "NetrShareEnumSticky",
              [SRVSVC_HANDLE, SHARE_ENUM_STRUCT, DWORD, PDWORD],
              [SHARE_ENUM_STRUCT, DWORD, PDWORD], lambda c, ins: netr_share_enum(c, ins, sticky=True),
              lambda ins: [_share_out(ins[1]["Level"], []), 0, ins[3]]),
    Operation(16, "NetrShareGetInfo",
              [SRVSVC_HANDLE, WSTR, DWORD],
              [SHARE_INFO_UNION], netr_share_get_info, lambda ins: [(ins[2], None)]),
    Operation(21, "NetrServerGetInfo",
              [SRVSVC_HANDLE, DWORD],
              [SERVER_INFO_UNION], netr_server_get_info, lambda ins: [(ins[1], None)]),
    Operation(28, "NetrRemoteTOD",
              [SRVSVC_HANDLE],
              [Pointer(TIME_OF_DAY_INFO)], netr_remote_tod, lambda ins: [None]),
])


def srvsvc_pipe(ctx: Any) -> RpcPipe:
    """PIPES factory: a fresh association for the session that opened ``\\srvsvc``."""
    return RpcPipe("srvsvc", [SRVSVC], caller=Caller(ctx.server, ctx.session))


__all__ = ["Caller", "SRVSVC", "SRVSVC_SYNTAX", "host_of", "session_502", "session_level", "srvsvc_pipe"]
