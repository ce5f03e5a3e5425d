"""Configuration: TOML file (tomllib), command-line overrides, the embedded default.

    [server]
    host = "127.0.0.1"          # listen address
    port = 4450                 # 445 needs root
    server_name = "WSD"
    domain = "WORKGROUP"
    signing_required = true
    encrypt_data = false        # require encryption on every session (SMB 3.x)
    session_lifetime = 0        # seconds; 0 = sessions never expire (else re-auth needed)
    logon_timeout = 60          # seconds a connection may stay without a logged-on session
    allow_guest = false
    allow_anonymous = false
    dialects = ["2.0.2", "2.1", "3.0", "3.0.2", "3.1.1"]
    workers = 8                 # thread pool for blocking file I/O
    inline_metadata = true      # CREATE/CLOSE tried on the event loop when no I/O is needed
    log_format = "kv"           # or "json"
    state_dir = "./state"
    control_socket = "<state_dir>/wsd-smbd.ctl"  # Unix socket wsd-smbstatus asks (mode 0600);
                                # "" turns it off; a relative path is taken from the working folder

    [[share]]
    name = "share"
    path = "/srv/share"
    remark = ""                 # or comment = "" (Samba's name)
    encrypt_data = false
    read_only = false
    # namespace policy (Samba's options of the same names; store/namepolicy.py):
    hide_files = []             # e.g. ["*.tmp", "desktop.ini"] or "/*.tmp/desktop.ini/":
                                #   matching names get FILE_ATTRIBUTE_HIDDEN
    veto_files = []             # same syntax: matching names are not listed, opened or created
    delete_veto_files = false   # rmdir of a directory holding only vetoed names removes them
    hide_dot_files = true       # names beginning with '.' get FILE_ATTRIBUTE_HIDDEN
    hide_unreadable = false     # access-based enumeration (Share.DoAccessBasedDirectoryEnumeration)
    # access policy (Samba's options of the same names; user names case-insensitive)
    valid_users = []            # non-empty: only these users may connect
    invalid_users = []          # never may connect (STATUS_ACCESS_DENIED at TREE_CONNECT)
    read_list = []              # read-only tree connects on a writable share
    write_list = []             # writable tree connects on a read_only share
    guest_ok = false            # guest sessions (allow_guest) may connect
    browseable = true           # listed by NetrShareEnum (smbclient -L, net view)
    access_based_share_enum = false  # NetrShareEnum lists only shares the caller may connect to
    max_connections = 0         # tree connects at once; 0 = unlimited
    csc_policy = "manual"       # client-side caching: manual | documents | programs | disable

An unknown [[share]] key is a ConfigError.

    [[user]]
    name = "alice"
    password = "secret"         # or nt_hash = "<32 hex digits>"
    admin = true                # BUILTIN\\Administrators, srvsvc admin calls, and the privileges
                                #   SeBackup-, SeRestore-, SeTakeOwnership-, SeSecurityPrivilege
    privileges = []             # privileges of a non-admin account, from those four (names as
                                #   Windows/Samba spell them, e.g. "SeBackupPrivilege")

SIGHUP makes wsd-smbd read it again (cli.reload_config, core.state.Server.reload).
"""
from __future__ import annotations

import os
import secrets
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ..core.shareaccess import CSC_POLICIES
from ..core.state import ServerConfig, Share, User, nt_hash_of
from ..store.namepolicy import PatternError, parse_patterns
from ..store.security import PRIVILEGE_NAMES, privilege_name

DIALECT_NAMES = {"2.0.2": 0x0202, "2.1": 0x0210, "3.0": 0x0300, "3.0.2": 0x0302, "3.1.1": 0x0311}


class ConfigError(Exception):
    pass


@dataclass
class Settings:
    server: ServerConfig
    host: str = "127.0.0.1"
    port: int = 4450
    workers: int = 8
    log_format: str = "kv"
    state_dir: Path = field(default_factory=lambda: default_state_dir())
    generated_password: str | None = None  # set when the embedded default user was created
    #: the control socket's path (server/control.py); None: <state_dir>/wsd-smbd.ctl; "": none
    control_socket: str | None = None

    def control_socket_path(self) -> Path | None:
        """Where the control socket is served (None: turned off)."""
        if self.control_socket is None:
            return self.state_dir / "wsd-smbd.ctl"
        return Path(self.control_socket) if self.control_socket else None


def default_state_dir() -> Path:
    xdg = os.environ.get("XDG_STATE_HOME")
    return Path(xdg) / "wsd" if xdg else Path("state")


def _privileges(name: str, value) -> frozenset:
    """A [[user]] ``privileges`` list (a single string is a one-name list): privilege names
    from store/security.py PRIVILEGE_NAMES, any case.  Raises ConfigError."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise ConfigError(f"user {name}: privileges must be a list of privilege names, got {value!r}")
    out = set()
    for p in value:
        try:
            out.add(privilege_name(p))
        except ValueError:
            raise ConfigError(f"user {name}: unknown privilege {p!r} (known: {', '.join(PRIVILEGE_NAMES)})") from None
    return frozenset(out)


def _user(name: str, password: str | None = None, nt_hash: str | None = None, admin: bool = False,
          privileges: frozenset = frozenset()) -> User:
    if not name or ":" in name:
        raise ConfigError(f"bad user name {name!r}")
    if nt_hash:
        try:
            h = bytes.fromhex(nt_hash)
        except ValueError:
            raise ConfigError(f"user {name}: nt_hash is not hex") from None
        if len(h) != 16:
            raise ConfigError(f"user {name}: nt_hash must be 16 bytes")
        return User(name, h, admin, privileges)
    if password is None:
        raise ConfigError(f"user {name}: needs password or nt_hash")
    return User(name, nt_hash_of(password), admin, privileges)


#: [[share]] keys of the namespace policy (Samba: hide files, veto files, delete veto files,
#: hide dot files, hide unreadable)
NAMESPACE_SHARE_KEYS = ("hide_files", "veto_files", "delete_veto_files", "hide_dot_files", "hide_unreadable")


def _share_namespace_options(table: dict) -> dict:
    """The namespace-policy fields of a core Share from a [[share]] table (keys above):
    pattern lists as parsed by store/namepolicy.py (a TOML list or Samba's "/a/b/"
    string), the switches as TOML booleans.  Raises ConfigError."""
    name = table.get("name", "?")
    out: dict = {}
    for key in ("hide_files", "veto_files"):
        if key in table:
            try:
                out[key] = parse_patterns(table[key])
            except PatternError as e:
                raise ConfigError(f"share {name}: {key}: {e}") from None
    for key, attr in (("delete_veto_files", "delete_veto_files"), ("hide_dot_files", "hide_dot_files"),
                      ("hide_unreadable", "do_access_based_directory_enumeration")):
        if key in table:
            if not isinstance(table[key], bool):
                raise ConfigError(f"share {name}: {key} must be true or false")
            out[attr] = table[key]
    return out


#: the [[share]] keys this server knows; any other key is a ConfigError (a typo must not pass
#: silently).  Grouped by who reads them: the basics, the access policy
#: (_share_access_options), the namespace options (hide/veto files)
SHARE_KEYS = frozenset({
    "name", "path", "encrypt_data", "read_only", "remark", "comment",
    # access policy
    "valid_users", "invalid_users", "read_list", "write_list", "guest_ok", "browseable",
    "access_based_share_enum", "max_connections", "csc_policy",
    # namespace options (_share_namespace_options)
    *NAMESPACE_SHARE_KEYS,
})


def _check_share_keys(table: dict) -> None:
    unknown = sorted(set(table) - SHARE_KEYS)
    if unknown:
        raise ConfigError(f"share {table.get('name')}: unknown key{'s' if len(unknown) > 1 else ''} "
                          f"{', '.join(unknown)}")
    if "remark" in table and "comment" in table:
        raise ConfigError(f"share {table.get('name')}: remark and comment are the same option; give one")


def _bool(table: dict, key: str, default: bool) -> bool:
    v = table.get(key, default)
    if not isinstance(v, bool):
        raise ConfigError(f"share {table.get('name')}: {key} must be true or false, got {v!r}")
    return v


def _names(table: dict, key: str) -> frozenset:
    """A list of user names (a single string is a one-name list), lower-cased (user names
    are compared case-insensitively, as Windows and Samba do)."""
    v = table.get(key, [])
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not all(isinstance(n, str) and n for n in v):
        raise ConfigError(f"share {table.get('name')}: {key} must be a list of user names, got {v!r}")
    groups = [n for n in v if n[0] in "@+&"]
    if groups:  # Samba's group syntax: there are no groups here, and a silent no-match would lock people out
        raise ConfigError(f"share {table.get('name')}: {key}: groups ({', '.join(groups)}) are not supported, "
                          "list user names")
    return frozenset(n.lower() for n in v)


def _share_access_options(table: dict) -> dict:
    """The access-policy keys of a [[share]] table (Samba's share options of the same
    names, with '_' for ' ') as Share keyword arguments (core/state.py; applied by
    core/shareaccess.py at TREE_CONNECT, MS-SMB2 3.3.5.7, and by srvsvc NetrShareEnum,
    MS-SRVS 3.1.4.8):

    valid_users / invalid_users / read_list / write_list: lists of user names;
    guest_ok (false), browseable (true), access_based_share_enum (false);
    max_connections: 0 = unlimited (Share.MaxUses 0xFFFFFFFF), else the most tree
    connects at once; csc_policy: "manual" (default) | "documents" | "programs" |
    "disable" -> Share.CscFlags (MS-SRVS 2.2.4.29, SMB2_SHAREFLAG_*_CACHING)."""
    name = table.get("name")
    out: dict = {k: _names(table, k) for k in ("valid_users", "invalid_users", "read_list", "write_list")}
    out["guest_ok"] = _bool(table, "guest_ok", False)
    out["browseable"] = _bool(table, "browseable", True)
    out["access_based_share_enum"] = _bool(table, "access_based_share_enum", False)
    mc = table.get("max_connections", 0)
    if isinstance(mc, bool) or not isinstance(mc, int) or not 0 <= mc < 0xFFFFFFFF:
        raise ConfigError(f"share {name}: max_connections must be an integer from 0 (unlimited), got {mc!r}")
    out["max_uses"] = mc or 0xFFFFFFFF
    policy = table.get("csc_policy", "manual")
    if policy not in CSC_POLICIES:
        raise ConfigError(f"share {name}: csc_policy must be one of {', '.join(CSC_POLICIES)}, got {policy!r}")
    out["csc_flags"] = CSC_POLICIES[policy]
    return out


def load(path: str | None = None, *, host: str | None = None, port: int | None = None,
         shares: list[str] = (), users: list[str] = (), log_format: str | None = None) -> Settings:
    data: dict = {}
    if path:
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise ConfigError(f"{path}: {e}") from None
    srv = data.get("server", {})
    cfg = ServerConfig()
    for key, attr in (("server_name", "server_name"), ("domain", "domain_name"),
                      ("signing_required", "signing_required"), ("encrypt_data", "encrypt_data"),
                      ("session_lifetime", "session_lifetime"), ("allow_guest", "allow_guest"),
                      ("allow_anonymous", "allow_anonymous"), ("reject_unencrypted_access", "reject_unencrypted_access"),
                      ("max_read_size", "max_read_size"), ("max_write_size", "max_write_size"),
                      ("max_transact_size", "max_transact_size"), ("logon_timeout", "logon_timeout"),
                      ("multi_channel", "multi_channel"), ("oplock_break_timeout", "oplock_break_timeout"),
                      ("durable_v1_timeout", "durable_v1_timeout"),
                      ("durable_v2_default_timeout", "durable_v2_default_timeout"),
                      ("max_resiliency_timeout", "max_resiliency_timeout"),
                      ("resiliency_default_timeout", "resiliency_default_timeout"),
                      ("inline_metadata", "inline_metadata"), ("directory_leases", "directory_leases")):
        if key in srv:
            setattr(cfg, attr, type(getattr(cfg, attr))(srv[key]))
    if "dialects" in srv:
        try:
            cfg.dialects = tuple(sorted(DIALECT_NAMES[d] for d in srv["dialects"]))
        except KeyError as e:
            raise ConfigError(f"unknown dialect {e}") from None
    st = Settings(cfg, host=host or srv.get("host", "127.0.0.1"), port=int(port if port is not None else srv.get("port", 4450)),
                  workers=int(srv.get("workers", 8)), log_format=log_format or srv.get("log_format", "kv"))
    if "state_dir" in srv:
        st.state_dir = Path(srv["state_dir"])
    if "control_socket" in srv:
        if not isinstance(srv["control_socket"], str):
            raise ConfigError('control_socket must be a path, or "" for none')
        st.control_socket = srv["control_socket"]
    for sh in data.get("share", []):
        if "name" not in sh or "path" not in sh:
            raise ConfigError("[[share]] needs name and path")
        _check_share_keys(sh)
        cfg.add_share(Share(sh["name"], str(sh["path"]), encrypt_data=bool(sh.get("encrypt_data", False)),
                            read_only=bool(sh.get("read_only", False)),
                            remark=str(sh.get("remark", sh.get("comment", ""))),
                            **_share_access_options(sh), **_share_namespace_options(sh)))
    for u in data.get("user", []):
        user = _user(u.get("name", ""), u.get("password"), u.get("nt_hash"), bool(u.get("admin", False)),
                     _privileges(u.get("name", ""), u.get("privileges", [])))
        cfg.users[user.name.lower()] = user
    for spec in shares:
        name, sep, p = spec.partition("=")
        if not sep or not name or not p:
            raise ConfigError(f"--share wants NAME=PATH, got {spec!r}")
        cfg.add_share(Share(name, p))
    for spec in users:
        name, sep, password = spec.partition(":")  # the password may itself contain ':'
        admin = password.endswith(":admin")
        if admin:
            password = password[: -len(":admin")]
        if not sep or not name or not password:
            raise ConfigError(f"--user wants NAME:PASSWORD[:admin], got {spec!r}")
        user = _user(name, password, admin=admin)
        cfg.users[user.name.lower()] = user
    for sh in cfg.shares.values():
        if sh.type == "disk" and not Path(sh.local_path).is_dir():
            raise ConfigError(f"share {sh.name}: {sh.local_path} is not a directory")
    # the embedded default: a share in the state folder and a generated user
    if not [s for s in cfg.shares.values() if s.type == "disk"]:
        share_dir = st.state_dir / "share"
        share_dir.mkdir(parents=True, exist_ok=True)
        cfg.add_share(Share("share", str(share_dir.resolve()), remark="wsd default share"))
    if not cfg.users:
        pw = secrets.token_urlsafe(12)
        cfg.users["wsd"] = User("wsd", nt_hash_of(pw), True)
        st.generated_password = pw
    return st
