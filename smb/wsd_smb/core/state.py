"""Server abstract data model (MS-SMB2 3.3.1): global server state, shares, users,
sessions (3.3.1.8, requirement SESS-1/SESS-2), channels and tree connects.

Field names are the MS-SMB2 names in snake case (Session.OpenTable -> session.open_table).
"""
from __future__ import annotations

import enum
import itertools
import os
import threading
import time
import uuid
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # pragma: no cover
    from .connection import Connection


class SessionState(enum.Enum):
    """Session.State, MS-SMB2 3.3.1.8."""

    InProgress = "InProgress"
    Valid = "Valid"
    Expired = "Expired"


@dataclass
class Share:
    """A share, MS-SMB2 3.3.1.6 (the subset this server uses).

    type: "disk" or "pipe" (IPC$).  encrypt_data: Share.EncryptData.
    """

    name: str
    local_path: str = ""
    type: str = "disk"
    remark: str = ""
    encrypt_data: bool = False
    read_only: bool = False
    max_uses: int = 0xFFFFFFFF  # Share.MaxUses (MS-SRVS shi2_max_uses; 0xFFFFFFFF = unlimited)
    current_uses: int = 0
    # access policy (config: valid_users, invalid_users, read_list, write_list, guest_ok,
    # browseable, access_based_share_enum, max_connections -> max_uses, csc_policy; see
    # core/shareaccess.py and server/config.py:_share_access_options)
    #: lower-case user names; non-empty: only these may connect (Share.ConnectSecurity's role)
    valid_users: frozenset = frozenset()
    #: lower-case user names that may never connect
    invalid_users: frozenset = frozenset()
    #: users whose tree connects are read-only on a writable share
    read_list: frozenset = frozenset()
    #: users whose tree connects are writable on a read_only share
    write_list: frozenset = frozenset()
    #: guest sessions may connect (Samba "guest ok")
    guest_ok: bool = False
    #: listed by NetrShareEnum / NetrShareEnumSticky (Samba "browseable")
    browseable: bool = True
    #: NetrShareEnum lists the share only to callers that could connect to it
    access_based_share_enum: bool = False
    #: Share.CscFlags (MS-SRVS 2.2.4.29 CSC_CACHE_*, the SMB2_SHAREFLAG_*_CACHING values)
    csc_flags: int = 0x00000000
    #: taken out of the configuration (a reload without it, or with another path): its
    #: tree connects are being disconnected and answer STATUS_NETWORK_NAME_DELETED meanwhile
    deleted: bool = False
    # namespace policy (config: hide_files, veto_files, delete_veto_files, hide_dot_files,
    # hide_unreadable; Samba's options of the same names, store/namepolicy.py)
    hide_files: tuple[str, ...] = ()  # names reported with FILE_ATTRIBUTE_HIDDEN
    veto_files: tuple[str, ...] = ()  # names neither listed nor openable
    delete_veto_files: bool = False  # rmdir removes a directory holding only vetoed names
    hide_dot_files: bool = True  # names beginning with '.' are HIDDEN
    do_access_based_directory_enumeration: bool = False  # Share.DoAccessBasedDirectoryEnumeration

    def namespace_policy(self) -> tuple:
        """The namespace-policy settings, compared by a configuration reload."""
        return (self.hide_files, self.veto_files, self.delete_veto_files, self.hide_dot_files,
                self.do_access_based_directory_enumeration)


def share_settings(share: Share) -> tuple:
    """Every configured attribute of *share* (all fields but the run-time CurrentUses and
    deleted): what a configuration reload compares to tell a changed share."""
    return tuple(getattr(share, f.name) for f in fields(share) if f.name not in ("current_uses", "deleted"))


@dataclass
class User:
    """A local account: name plus NT hash (MD4 of the UTF-16LE password, MS-NLMP 3.3.1).
    *privileges*: privilege names (store/security.py PRIVILEGE_NAMES) the account holds
    besides those an admin account has anyway (security.ADMIN_PRIVILEGES)."""

    name: str
    nt_hash: bytes
    is_admin: bool = False
    privileges: frozenset = frozenset()

    @classmethod
    def with_password(cls, name: str, password: str, is_admin: bool = False,
                      privileges: frozenset = frozenset()) -> "User":
        from ..auth.md4 import md4

        return cls(name, md4(password.encode("utf-16-le")), is_admin, frozenset(privileges))


@dataclass
class SecurityContext:
    """Session.SecurityContext: who authenticated (what the object store evaluates against)."""

    user_name: str
    domain_name: str = ""
    is_admin: bool = False
    is_guest: bool = False
    is_anonymous: bool = False
    privileges: frozenset = frozenset()  # the account's configured ones (User.privileges)


@dataclass
class ServerConfig:
    """Configuration (TOML / command line).  Times in seconds."""

    shares: dict[str, Share] = field(default_factory=dict)  # key: upper-case share name
    users: dict[str, User] = field(default_factory=dict)  # key: lower-case user name
    server_name: str = "WSD"
    domain_name: str = "WORKGROUP"
    dialects: tuple[int, ...] = (0x0202, 0x0210, 0x0300, 0x0302, 0x0311)
    signing_required: bool = True  # RequireMessageSigning
    encrypt_data: bool = False  # Server-wide EncryptData
    reject_unencrypted_access: bool = True
    allow_guest: bool = False
    allow_anonymous: bool = False
    guest_user: str = "guest"
    session_lifetime: float = 0.0  # 0 = sessions never expire; else Session.ExpirationTime = logon + lifetime
    logon_timeout: float = 60.0  # a connection without a valid session after this long is dropped (0 = never)
    max_transact_size: int = 8 * 1024 * 1024
    max_read_size: int = 8 * 1024 * 1024
    max_write_size: int = 8 * 1024 * 1024
    max_credits: int = 8192
    #: CREATE/CLOSE are first tried on the event loop, cached-only (openat2 RESOLVE_CACHED on
    #: local file systems; anything that would wait goes to the worker threads)
    inline_metadata: bool = True
    max_message_size: int = 16 * 1024 * 1024 + 4096
    server_guid: bytes = field(default_factory=lambda: uuid.uuid4().bytes_le)
    #: Open.OplockTimeout / Lease.LeaseBreakTimeout after a break notification (MS-SMB2
    #: 3.3.2.1, 3.3.2.5; Windows uses 35 s)
    oplock_break_timeout: float = 35.0
    #: Open.DurableOpenTimeout of a durable v1 open (MS-SMB2 3.3.5.9.6; <331> Windows: 16 min)
    durable_v1_timeout: float = 960.0
    #: Open.DurableOpenTimeout of a durable v2 open whose request asks for 0 (3.3.5.9.10)
    durable_v2_default_timeout: float = 60.0
    #: upper bound of a requested durable v2 timeout (<349> Windows: 300 s)
    durable_v2_max_timeout: float = 300.0
    #: MaxResiliencyTimeout (MS-SMB2 3.3.1.5): a NETWORK_RESILIENCY_REQUEST asking for more
    #: is refused with STATUS_INVALID_PARAMETER (3.3.5.15.9); seconds (Windows: 300 s)
    max_resiliency_timeout: float = 300.0
    #: Open.ResiliencyTimeout when the request asks for 0 (3.3.5.15.9 <389>; Windows: 120 s)
    resiliency_default_timeout: float = 120.0
    #: grant oplocks / leases (SMB2_GLOBAL_CAP_LEASING is advertised from 2.1 when set)
    oplocks: bool = True
    leasing: bool = True
    #: directory leases (SMB 3.x): SMB2_GLOBAL_CAP_DIRECTORY_LEASING is offered on 3.x
    #: connections when this and `leasing` are set; R / RH leases on directories
    directory_leases: bool = True
    #: IsMultiChannelCapable: SMB2_GLOBAL_CAP_MULTI_CHANNEL from 3.0, sessions can be bound to
    #: further connections (MS-SMB2 3.3.5.5.2, Session.ChannelList)
    multi_channel: bool = True

    def share(self, name: str) -> Share | None:
        return self.shares.get(name.upper())

    def add_share(self, share: Share) -> None:
        self.shares[share.name.upper()] = share


@dataclass(eq=False)
class TreeConnect:
    """Per tree connect, MS-SMB2 3.3.1.10."""

    tree_id: int
    session: "Session"
    share: Share
    open_count: int = 0
    tree_global_id: int = 0
    creation_time: float = 0.0
    maximal_access: int = 0x001F01FF
    remoted_identity_security_context: Any = None
    #: free slot for the file-command layer (B): anything it wants to keep per tree
    store: Any = None

    @property
    def encrypt_data(self) -> bool:
        return self.share.encrypt_data


@dataclass(eq=False)
class Channel:
    """Per channel, MS-SMB2 3.3.1.14."""

    signing_key: bytes
    connection: "Connection"


@dataclass(eq=False)
class Session:
    """Per session, MS-SMB2 3.3.1.8 (SESS-1; SESS-2 for the 3.x/3.1.1 fields)."""

    session_id: int
    connection: "Connection"
    session_global_id: int
    creation_time: float
    state: SessionState = SessionState.InProgress
    security_context: SecurityContext | None = None
    is_anonymous: bool = False
    is_guest: bool = False
    session_key: bytes = b"\0" * 16
    signing_required: bool = False
    open_table: dict[int, Any] = field(default_factory=dict)  # Open.FileId.Volatile -> Open
    tree_connect_table: dict[int, TreeConnect] = field(default_factory=dict)  # TreeId -> TreeConnect
    expiration_time: float = float("inf")
    idle_time: float = 0.0
    user_name: str = ""
    # SMB 3.x
    channel_list: list[Channel] = field(default_factory=list)
    encrypt_data: bool = False
    encryption_key: bytes = b""
    decryption_key: bytes = b""
    signing_key: bytes = b""
    application_key: bytes = b""
    # SMB 3.1.1
    preauth_integrity_hash_value: bytes = b""
    #: Connection.Dialect / signing algorithm / CipherId of the connection that first
    #: authenticated the session: what a later bind (MS-SMB2 3.3.5.5.2) is checked against,
    #: and the algorithm the session's own SigningKey signs with
    dialect: int = 0
    signing_algorithm_id: int = 0
    cipher_id: int = 0
    # implementation state
    domain_name: str = ""
    client_name: str = ""  # workstation name the client gave in NTLM AUTHENTICATE
    auth: Any = None  # the in-progress security exchange (NTLM acceptor)
    #: the first logon produced a session key (not guest/anonymous): the session can sign.
    #: Re-authentication never changes keys, so this stays as the first logon left it.
    has_session_key: bool = False
    #: the client has sent encrypted requests on it (SMB 3.x: it encrypts even where the
    #: server does not require it; the status report shows the cipher then)
    client_encrypts: bool = False
    _next_tree_id: Any = field(default_factory=lambda: itertools.count(1))

    def add_tree_connect(self, share: Share, now: float, maximal_access: int = 0x001F01FF) -> TreeConnect:
        """Create a TreeConnect (MS-SMB2 3.3.5.7) with a fresh TreeId and insert it in
        Session.TreeConnectTable."""
        tid = next(self._next_tree_id)
        server = self.connection.server
        tc = TreeConnect(tree_id=tid, session=self, share=share, creation_time=now,
                         tree_global_id=server.allocate_global_id(), maximal_access=maximal_access)
        self.tree_connect_table[tid] = tc
        share.current_uses += 1
        return tc

    def remove_tree_connect(self, tree_id: int) -> TreeConnect | None:
        tc = self.tree_connect_table.pop(tree_id, None)
        if tc is not None:
            tc.share.current_uses = max(0, tc.share.current_uses - 1)
        return tc


@dataclass
class SessionInfo:
    """Answer of the server's session-information query (MS-SMB2 3.3.4.18), read by srvsvc
    (MS-SRVS NetrSessionEnum, SRVS-2b) to build SESSION_INFO_502."""

    session_global_id: int
    user_name: str
    client_name: str  # the client's address (sesi502_cname is the computer name or address)
    client_address: str
    workstation: str
    num_opens: int
    connected_time: float  # seconds since the session was created
    idle_time: float  # seconds since its last request
    is_guest: bool
    is_encrypted: bool
    transport: str = "tcp"
    # --- for the status report (wsd-smbstatus, admin/status.py): more Session fields
    session_id: int = 0  # Session.SessionId
    domain_name: str = ""  # the domain the client authenticated in (NTLM AUTHENTICATE DomainName)
    dialect: int = 0  # Session.Dialect (the connection that first authenticated it)
    signing_required: bool = False  # Session.SigningRequired
    signing_algorithm_id: int = 0  # Session.SigningAlgorithmId (meaningful when it signs)
    cipher_id: int = 0  # the CipherId its encryption keys are for (0: none)
    is_anonymous: bool = False
    client_encrypts: bool = False  # the client has sent encrypted requests (Session.EncryptData or not)
    creation_time: float = 0.0  # Session.CreationTime (seconds since the epoch)
    num_tree_connects: int = 0  # len(Session.TreeConnectTable)
    channels: tuple[str, ...] = ()  # the client addresses of Session.ChannelList's connections


@dataclass
class OpenInfo:
    """Answer of the server's open query (MS-SMB2 3.3.4.20), read by srvsvc
    (MS-SRVS NetrFileEnum / NetrFileGetInfo) as FILE_INFO_3."""

    file_global_id: int  # fi3_id: Open.FileGlobalId
    granted_access: int  # fi3_permissions: Open.GrantedAccess
    lock_count: int  # fi3_num_locks: Open.LockCount
    path_name: str  # fi3_path_name: Open.PathName, as a path on the server ("C:\\srv\\dir\\f", "\\PIPE\\srvsvc")
    user_name: str  # fi3_username: Open.Session.UserName, "" when Open.Session is NULL
    client_address: str  # the session's client (the UserName qualifier "\\\\host" matches it)
    # --- for the status report (wsd-smbstatus, admin/status.py): more Open fields
    share_name: str = ""  # Open.TreeConnect.Share.Name (or the share it was opened on)
    path: str = ""  # the share-relative name (follows renames); "\\PIPE\\name" for a pipe
    session_id: int | None = None  # Open.Session.SessionId; None when Open.Session is NULL
    share_access: int = 0  # Open.ShareAccess (MS-FSA 2.1.1.6; FILE_SHARE_READ/WRITE/DELETE)
    oplock_level: int = 0  # Open.OplockLevel (SMB2_OPLOCK_LEVEL_*; 0xFF = lease)
    oplock_state: str = "None"  # Open.OplockState
    lease_key: bytes | None = None  # Open.Lease.LeaseKey
    lease_state: int | None = None  # Open.Lease.LeaseState (SMB2_LEASE_* bits)
    lease_breaking: bool = False  # Open.Lease.Breaking
    is_durable: bool = False  # Open.IsDurable
    is_persistent: bool = False  # Open.IsPersistent
    is_directory: bool = False
    is_pipe: bool = False
    open_time: float = 0.0  # when the CREATE made it (seconds since the epoch; 0 = unknown)
    durable_owner: str = ""  # Open.DurableOwner (who may reconnect a disconnected durable open)


@dataclass
class ByteRangeLockInfo:
    """A byte-range lock (MS-FSA 2.1.1.3 ByteRangeLock: LockOffset, LockLength, IsExclusive,
    OwnerOpen) with what the status report shows of its OwnerOpen."""

    path: str  # the share-relative name of the locked file (Open.File's current name)
    share_name: str
    offset: int  # LockOffset
    length: int  # LockLength
    exclusive: bool  # IsExclusive
    file_global_id: int  # OwnerOpen.FileGlobalId
    session_id: int | None  # OwnerOpen.Session.SessionId (None: a disconnected durable open)
    user_name: str
    client_address: str


@dataclass
class TreeConnectInfo:
    """Answer of the server's tree-connect query (MS-SMB2 3.3.4.19), read by srvsvc
    (MS-SRVS NetrConnectionEnum) as CONNECTION_INFO_1."""

    tree_global_id: int  # coni1_id
    share: "Share"  # coni1_type from its type; the share-name qualifier and coni1_netname
    open_count: int  # coni1_num_opens
    connected_time: float  # coni1_time: seconds since TreeConnect.CreationTime
    user_name: str  # coni1_username
    client_address: str  # the computer-name qualifier and coni1_netname
    # --- for the status report (wsd-smbstatus, admin/status.py): more TreeConnect fields
    tree_id: int = 0  # TreeConnect.TreeId
    session_id: int = 0  # TreeConnect.Session.SessionId
    creation_time: float = 0.0  # TreeConnect.CreationTime (seconds since the epoch)
    encrypt_data: bool = False  # TreeConnect.Share.EncryptData, Session.EncryptData, or the client encrypts
    cipher_id: int = 0  # the session's CipherId
    signing_required: bool = False  # the session's SigningRequired
    signing_algorithm_id: int = 0
    client_name: str = ""  # the session's workstation name


def open_path_name(o: Any) -> str:
    """Open.PathName as a server path: the share's directory in DOS form plus the file's
    current name inside it (it follows renames); named pipes are ``\\PIPE\\name``."""
    endpoint = getattr(o, "endpoint", None)
    if endpoint is not None:
        return "\\PIPE\\" + endpoint.name
    share = getattr(o, "share", None)
    root = getattr(share, "path", "") or ""
    rel = getattr(o, "path", "") or ""
    full = root.rstrip("/") + ("/" + rel if rel else "")
    return "C:" + full.replace("/", "\\")


class Server:
    """Global server state (MS-SMB2 3.3.1.5): GlobalSessionTable, GlobalOpenTable,
    ConnectionList, ServerStartTime, the configuration."""

    def __init__(self, config: ServerConfig | None = None, now: float | None = None):
        self.config = config or ServerConfig()
        if "IPC$" not in self.config.shares:
            self.config.add_share(Share("IPC$", type="pipe", remark="IPC Service"))
        self.global_session_table: dict[int, Session] = {}
        self.global_open_table: dict[int, Any] = {}  # Open.FileId.Persistent -> Open (for B / durable handles)
        self.connection_list: list["Connection"] = []
        self.server_start_time = time.time() if now is None else now
        self._lock = threading.Lock()
        self._global_ids = itertools.count(1)
        #: inline_first handlers: attempts finished on the loop / sent to the pool (WouldBlock)
        self.inline_done = 0
        self.inline_would_block = 0
        # SessionId: a random 8-bit prefix keeps ids distinct across restarts; ids stay
        # within 32 bits because some clients (smbtorture's smb2.session-id) keep them in
        # a uint32 and expect them to work.
        self._session_prefix = os.urandom(1)[0] | 1
        self._session_counter = itertools.count(1)
        #: capabilities the file layer adds to the NEGOTIATE response (e.g. SMB2_GLOBAL_CAP_LEASING)
        self.extra_capabilities = 0x00000002 if self.config.leasing else 0  # SMB2_GLOBAL_CAP_LEASING
        #: set by the file layer (B) if it wants to be told about closed sessions/tree connects
        self.on_session_closed: list = []
        self.on_tree_disconnected: list = []
        #: timer sources (oplock break, lease break ack, durable scavenger): objects with
        #: ``next_deadline() -> float | None`` and ``on_timer(now)``; the driver calls
        #: :meth:`handle_timers` once :meth:`next_deadline` has passed (sans-IO: the core
        #: never reads the clock for these)
        self.timer_sources: list = []
        #: set by the file layer: closes an Open from outside its own requests (MS-SMB2 3.3.4.17)
        self.open_closer: Callable[[Any], None] | None = None

    def next_deadline(self) -> float | None:
        """The earliest deadline of any timer source (None: nothing pending)."""
        ds = [d for d in (t.next_deadline() for t in list(self.timer_sources)) if d is not None]
        return min(ds) if ds else None

    def handle_timers(self, now: float) -> None:
        """Fire what is due at *now* (blocking: object-store closes may run; the driver
        calls this in its thread pool)."""
        for t in list(self.timer_sources):
            t.on_timer(now)

    def allocate_global_id(self) -> int:
        with self._lock:
            return next(self._global_ids) & 0xFFFFFFFF

    def new_session_id(self) -> int:
        with self._lock:
            while True:
                sid = (self._session_prefix << 24) | (next(self._session_counter) & 0xFFFFFF)
                if sid not in self.global_session_table and sid not in (0, 0xFFFFFFFFFFFFFFFF):
                    return sid

    # ----------------------------------------------------- MS-SMB2 3.3.4.18
    def session_info(self, session_global_id: int, now: float | None = None) -> SessionInfo | None:
        """Server application queries session information (MS-SMB2 3.3.4.18): look the
        session up by SessionGlobalId; None if there is none."""
        now = time.time() if now is None else now
        for s in list(self.global_session_table.values()):
            if s.session_global_id == session_global_id:
                return self._session_info(s, now)
        return None

    @staticmethod
    def _session_info(s: Session, now: float) -> SessionInfo:
        addr = s.connection.client_address
        return SessionInfo(
            session_global_id=s.session_global_id,
            user_name=s.user_name,
            client_name=addr,
            client_address=addr,
            workstation=s.client_name,
            num_opens=len(s.open_table),
            connected_time=max(0.0, now - s.creation_time),
            idle_time=max(0.0, now - s.idle_time),
            is_guest=s.is_guest,
            is_encrypted=s.encrypt_data,
            client_encrypts=s.client_encrypts,
            session_id=s.session_id,
            domain_name=s.domain_name,
            dialect=s.dialect or getattr(s.connection, "dialect", 0),
            signing_required=s.signing_required,
            signing_algorithm_id=s.signing_algorithm_id,
            cipher_id=s.cipher_id if s.encryption_key else 0,
            is_anonymous=s.is_anonymous,
            creation_time=s.creation_time,
            num_tree_connects=len(s.tree_connect_table),
            channels=tuple(ch.connection.client_address for ch in list(s.channel_list)
                           if not getattr(ch.connection, "closed", False)) or (addr,),
        )

    def session_infos(self, now: float | None = None) -> list[SessionInfo]:
        """session_info() of every valid session (the SessionList walk of NetrSessionEnum)."""
        now = time.time() if now is None else now
        return [self._session_info(s, now) for s in list(self.global_session_table.values())
                if s.state is SessionState.Valid]

    # ----------------------------------------------------- configuration reload
    #: ServerConfig fields a reload changes in place (read per request, logon or
    #: connection); the others (sizes negotiated per connection, max_credits, server_guid)
    #: need a restart
    RELOADABLE = ("server_name", "domain_name", "dialects", "signing_required", "encrypt_data",
                  "reject_unencrypted_access", "allow_guest", "allow_anonymous", "guest_user", "session_lifetime",
                  "logon_timeout", "inline_metadata", "oplock_break_timeout", "durable_v1_timeout",
                  "durable_v2_default_timeout", "durable_v2_max_timeout", "multi_channel")

    def reload(self, new: ServerConfig) -> dict[str, list[str]]:
        """Apply a re-read configuration (what Samba does on SIGHUP / ``smbcontrol
        reload-config``), from the server's loop: users are replaced (sessions already
        logged on stay), shares added; a share whose attributes changed is replaced (new tree
        connects get the new settings, MS-SMB2 3.3.5.7 computes them at TREE_CONNECT); a
        share that is gone, or now has another path, is deregistered: its tree connects are
        disconnected on their connections' loops (their opens closed, as TREE_DISCONNECT
        would) and answer STATUS_NETWORK_NAME_DELETED until then.  Returns what changed."""
        cfg = self.config
        changes: dict[str, list[str]] = {"added": [], "changed": [], "removed": [], "options": [], "restart": []}
        for f in self.RELOADABLE:
            if getattr(cfg, f) != getattr(new, f):
                setattr(cfg, f, getattr(new, f))
                changes["options"].append(f)
        for f in ("max_transact_size", "max_read_size", "max_write_size", "max_credits", "max_message_size",
                  "oplocks", "leasing", "directory_leases"):
            if getattr(cfg, f) != getattr(new, f):
                changes["restart"].append(f)
        cfg.users.clear()
        cfg.users.update(new.users)
        for key, old in list(cfg.shares.items()):
            if old.type == "pipe":
                continue
            nxt = new.shares.get(key)
            if nxt is None or nxt.type != old.type or os.path.realpath(nxt.local_path) != os.path.realpath(
                    old.local_path):
                del cfg.shares[key]
                self._deregister_share(old)
                changes["removed"].append(old.name)
        for key, nxt in new.shares.items():
            if nxt.type == "pipe":
                continue
            old = cfg.shares.get(key)
            if old is None:
                cfg.shares[key] = nxt
                changes["added"].append(nxt.name)
            elif share_settings(old) != share_settings(nxt):
                nxt.current_uses = old.current_uses
                cfg.shares[key] = nxt  # tree connects made before keep the old object and its settings
                changes["changed"].append(nxt.name)
        return changes

    def _deregister_share(self, share: Share) -> None:
        share.deleted = True
        for s in list(self.global_session_table.values()):
            for tc in list(s.tree_connect_table.values()):
                if tc.share is share and s.connection is not None:
                    s.connection.request_tree_disconnect(s, tc)

    # ----------------------------------------------------- MS-SMB2 3.3.4.12, 3.3.4.17, 3.3.4.19, 3.3.4.20
    def close_session(self, session_global_id: int) -> bool:
        """Server application requests closing a session (MS-SMB2 3.3.4.12): the session's
        connection tears it down on its own loop (its opens closed, tree connects
        disconnected); later requests on it get STATUS_USER_SESSION_DELETED.  False if
        no such session."""
        for s in list(self.global_session_table.values()):
            if s.session_global_id == session_global_id and s.connection is not None:
                s.connection.request_session_close(s)
                return True
        return False

    def open_info(self, o: Any) -> OpenInfo:
        """Server application queries an open (MS-SMB2 3.3.4.20)."""
        file = getattr(o, "file", None)
        locks = sum(1 for lk in list(file.locks) if lk.owner is o) if file is not None else 0
        session = o.session
        lease = getattr(o, "lease", None)
        tc = getattr(o, "tree_connect", None)
        pipe = getattr(o, "endpoint", None) is not None
        share = tc.share.name if tc is not None else getattr(getattr(o, "share", None), "name", "")
        return OpenInfo(file_global_id=o.file_global_id, granted_access=o.granted_access, lock_count=locks,
                        path_name=open_path_name(o), user_name=session.user_name if session is not None else "",
                        client_address=session.connection.client_address
                        if session is not None and session.connection is not None else "",
                        share_name=share or ("IPC$" if pipe else ""),
                        path="\\PIPE\\" + o.endpoint.name if pipe else (getattr(o, "path", "") or ""),
                        session_id=session.session_id if session is not None else None,
                        share_access=getattr(o, "share_access", 0x7),
                        oplock_level=getattr(o, "oplock_level", 0), oplock_state=getattr(o, "oplock_state", "None"),
                        lease_key=lease.lease_key if lease is not None else None,
                        lease_state=lease.lease_state if lease is not None else None,
                        lease_breaking=bool(lease.breaking) if lease is not None else False,
                        is_durable=bool(getattr(o, "is_durable", False)),
                        is_persistent=bool(getattr(o, "is_persistent", False)),
                        is_directory=bool(file.is_directory) if file is not None else False, is_pipe=pipe,
                        open_time=getattr(o, "open_time", 0.0), durable_owner=getattr(o, "durable_owner", ""))

    def open_infos(self) -> list[OpenInfo]:
        """open_info() of every Open in GlobalOpenTable, in FileGlobalId order."""
        opens = sorted(list(self.global_open_table.values()), key=lambda o: o.file_global_id)
        return [self.open_info(o) for o in opens if o.file_global_id and not getattr(o, "closed", False)]

    def close_open(self, file_global_id: int) -> bool:
        """Server application requests closing an open (MS-SMB2 3.3.4.17); blocking (the
        object store closes the file).  False if no open has that FileGlobalId."""
        for o in list(self.global_open_table.values()):
            if o.file_global_id == file_global_id and not getattr(o, "closed", False):
                if self.open_closer is None:
                    return False
                self.open_closer(o)
                return True
        return False

    def tree_connect_infos(self, now: float | None = None) -> list[TreeConnectInfo]:
        """Server application queries a tree connect (MS-SMB2 3.3.4.19), for every tree
        connect of every valid session, in TreeGlobalId order."""
        now = time.time() if now is None else now
        out = []
        for s in list(self.global_session_table.values()):
            if s.state is not SessionState.Valid:
                continue
            addr = s.connection.client_address if s.connection is not None else ""
            for tc in list(s.tree_connect_table.values()):
                out.append(TreeConnectInfo(tree_global_id=tc.tree_global_id, share=tc.share,
                                           open_count=tc.open_count, connected_time=max(0.0, now - tc.creation_time),
                                           user_name=s.user_name, client_address=addr, tree_id=tc.tree_id,
                                           session_id=s.session_id, creation_time=tc.creation_time,
                                           encrypt_data=bool(tc.encrypt_data or s.encrypt_data
                                                             or s.client_encrypts),
                                           cipher_id=s.cipher_id if s.encryption_key else 0,
                                           signing_required=s.signing_required,
                                           signing_algorithm_id=s.signing_algorithm_id, client_name=s.client_name))
        return sorted(out, key=lambda t: t.tree_global_id)

    def byte_range_lock_infos(self) -> list[ByteRangeLockInfo]:
        """Every byte-range lock (MS-FSA 2.1.1.3) held by an Open in GlobalOpenTable, by
        file then LockOffset: the File.LockList of each file with an open, once per file."""
        files: dict[int, Any] = {}
        for o in sorted(list(self.global_open_table.values()), key=lambda o: o.file_global_id):
            f = getattr(o, "file", None)
            if f is not None and not getattr(o, "closed", False):
                files.setdefault(id(f), f)
        out = []
        for f in files.values():
            for lk in sorted(list(f.locks), key=lambda lk: (lk.offset, lk.length)):
                o = lk.owner
                session = getattr(o, "session", None)
                tc = getattr(o, "tree_connect", None)
                out.append(ByteRangeLockInfo(
                    path=f.path, share_name=tc.share.name if tc is not None else getattr(f.share, "name", ""),
                    offset=lk.offset, length=lk.length, exclusive=lk.exclusive,
                    file_global_id=getattr(o, "file_global_id", 0),
                    session_id=session.session_id if session is not None else None,
                    user_name=session.user_name if session is not None
                    else getattr(o, "durable_owner", "").rpartition("\\")[2],  # DurableOwner "DOMAIN\\user"
                    client_address=session.connection.client_address
                    if session is not None and session.connection is not None else ""))
        return out

    def session_global_ids(self) -> list[int]:
        """The SessionList as MS-SRVS sees it (SessionGlobalIds of valid sessions)."""
        return [s.session_global_id for s in list(self.global_session_table.values())
                if s.state is SessionState.Valid]


def nt_hash_of(password: str) -> bytes:
    from ..auth.md4 import md4

    return md4(password.encode("utf-16-le"))
