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
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

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
    max_uses: int = 0xFFFFFFFF
    current_uses: int = 0


@dataclass
class User:
    """A local account: name plus NT hash (MD4 of the UTF-16LE password, MS-NLMP 3.3.1)."""

    name: str
    nt_hash: bytes
    is_admin: bool = False

    @classmethod
    def with_password(cls, name: str, password: str, is_admin: bool = False) -> "User":
        from ..auth.md4 import md4

        return cls(name, md4(password.encode("utf-16-le")), is_admin)


@dataclass
class SecurityContext:
    """Session.SecurityContext: who authenticated (what the object store evaluates against)."""

    user_name: str
    domain_name: str = ""
    is_admin: bool = False
    is_guest: bool = False
    is_anonymous: bool = False


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
                )
        return None

    def session_infos(self, now: float | None = None) -> list[SessionInfo]:
        """session_info() of every valid session (the SessionList walk of NetrSessionEnum)."""
        out = [self.session_info(g, now) for g in self.session_global_ids()]
        return [i for i in out if i is not None]

    def session_global_ids(self) -> list[int]:
        """The SessionList as MS-SRVS sees it (SessionGlobalIds of valid sessions)."""
        return [s.session_global_id for s in list(self.global_session_table.values())
                if s.state is SessionState.Valid]


def nt_hash_of(password: str) -> bytes:
    from ..auth.md4 import md4

    return md4(password.encode("utf-16-le"))
