"""wsd-smbstatus against a running wsd-smbd (subprocess) with real clients: smbprotocol
holds a session, a tree connect, an open with an RWH lease and an exclusive byte-range
lock; Samba's smbclient holds a second session (its `-c` commands wait on a pipe from
us); then the tool's tables and its -j document must show exactly that.  Also: no
server -> exit 1; a bad request on the control socket gets an error object and the
server keeps serving; the socket's mode; a stale socket is replaced."""
from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

pytest.importorskip("smbprotocol")
from smbprotocol.connection import Connection  # noqa: E402
from smbprotocol.create_contexts import (  # noqa: E402
    CreateContextName, SMB2CreateContextRequest, SMB2CreateDurableHandleRequestV2, SMB2CreateRequestLeaseV2)
from smbprotocol.open import (  # noqa: E402
    CreateDisposition, CreateOptions, FileAttributes, ImpersonationLevel, LockFlags, Open, RequestedOplockLevel,
    ShareAccess, SMB2LockElement)
from smbprotocol.session import Session  # noqa: E402
from smbprotocol.tree import TreeConnect  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from sut_servers import WsdServer  # noqa: E402

pytestmark = pytest.mark.interop

REPO = HERE.parents[2]
SMBCLIENT = shutil.which("smbclient")


def tool_env() -> dict:
    """The environment for the tool: this checkout's packages first (as the server gets)."""
    paths = [str(REPO / "tools"), str(REPO / "smb"), str(REPO)]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(paths + [os.environ.get("PYTHONPATH", "")]))


def smbstatus(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "wsd_tools.smbstatus.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=tool_env(), stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("smbstatus")
    srv = WsdServer(root, server_options={"state_dir": str(root / "state")}).start()
    try:
        deadline = time.monotonic() + 10
        while not (root / "state" / "wsd-smbd.ctl").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        yield srv
    finally:
        srv.stop()


def state_dir(srv) -> Path:
    return srv.root / "state"


def status_json(srv, *extra: str) -> dict:
    r = smbstatus("--state-dir", str(state_dir(srv)), "-j", *extra)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def lease_context(key: bytes, state: int = 0x07) -> SMB2CreateContextRequest:
    lease = SMB2CreateRequestLeaseV2()
    lease["lease_key"] = key
    lease["lease_state"] = state
    lease["parent_lease_key"] = b"\0" * 16
    lease["epoch"] = b"\0\0"
    ctx = SMB2CreateContextRequest()
    ctx["buffer_name"] = CreateContextName.SMB2_CREATE_REQUEST_LEASE
    ctx["buffer_data"] = lease
    return ctx


@pytest.fixture
def holder(server):
    """smbprotocol: session + tree + an open with a lease (RWH asked) + a byte-range lock."""
    (server.share_path / "dir").mkdir(exist_ok=True)
    (server.share_path / "dir" / "locked.bin").write_bytes(b"x" * 8192)
    conn = Connection(uuid.uuid4(), server.host, server.port, require_signing=True)
    conn.connect(timeout=30)
    sess = Session(conn, server.user, server.password, require_encryption=False)
    sess.connect()
    tree = TreeConnect(sess, rf"\\{server.host}\{server.share}")
    tree.connect()
    ctx = lease_context(bytes(range(1, 17)), 0x07)  # SMB2_LEASE_READ_CACHING | HANDLE | WRITE
    fh = Open(tree, r"dir\locked.bin")
    fh.create(ImpersonationLevel.Impersonation, 0x0012019F,  # FILE_GENERIC_READ | FILE_GENERIC_WRITE
              FileAttributes.FILE_ATTRIBUTE_NORMAL, ShareAccess.FILE_SHARE_READ,
              CreateDisposition.FILE_OPEN, CreateOptions.FILE_NON_DIRECTORY_FILE, create_contexts=[ctx],
              oplock_level=RequestedOplockLevel.SMB2_OPLOCK_LEVEL_LEASE)
    el = SMB2LockElement()
    el["offset"] = 100
    el["length"] = 50
    el["flags"] = LockFlags.SMB2_LOCKFLAG_EXCLUSIVE_LOCK | LockFlags.SMB2_LOCKFLAG_FAIL_IMMEDIATELY
    fh.lock([el])
    try:
        yield {"session_id": sess.session_id, "dialect": conn.dialect, "open": fh}
    finally:
        try:
            fh.close()
            tree.disconnect()
            sess.disconnect()
        finally:
            conn.disconnect()


@pytest.fixture
def smbclient_session(server, tmp_path):
    """Samba's smbclient logged on to the share (encrypting, though the server does not
    require it), waiting for commands on its stdin."""
    if SMBCLIENT is None:
        pytest.skip("smbclient not installed (apt-get install smbclient)")
    conf = tmp_path / "smb.conf"
    conf.write_text("[global]\n")
    p = subprocess.Popen([SMBCLIENT, "-s", str(conf), "-p", str(server.port), "-U", server.creds,
                          "--client-protection=encrypt", server.unc],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # logged on once its tree connect shows up
            trees = [t for t in status_json(server)["tree_connects"] if t["user"] == server.user]
            if any(t["share"] == server.share for t in trees) and p.poll() is None:
                break
            time.sleep(0.2)
        yield p
    finally:
        try:
            p.communicate("quit\n", timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()


def test_status_shows_what_the_clients_hold(server, holder, smbclient_session):
    doc = status_json(server)
    srv = doc["server"]
    assert srv["program"] == "wsd-smbd" and srv["listen"] == [f"{server.host}:{server.port}"]
    assert srv["pid"] == server.procs[-1].pid and srv["start_time"] <= srv["now"]
    # sessions: the smbprotocol one (its id, user, dialect, signing) and smbclient's
    by_id = {s["session_id"]: s for s in doc["sessions"]}
    mine = by_id[holder["session_id"]]
    assert mine["user"] == server.user and mine["client_address"].startswith("127.0.0.1:")
    assert mine["dialect"] == {0x0311: "SMB3_11", 0x0302: "SMB3_02", 0x0300: "SMB3_00"}[holder["dialect"]]
    assert mine["signing"] != "-" and mine["encryption"] == "-"
    assert mine["num_opens"] == 1 and mine["num_tree_connects"] == 1 and len(mine["channels"]) == 1
    others = [s for s in doc["sessions"] if s["session_id"] != holder["session_id"]]
    assert len(others) == 1 and others[0]["user"] == server.user and others[0]["num_tree_connects"] >= 1
    assert others[0]["encryption"].startswith("AES-") and not others[0]["encryption_required"]
    assert others[0]["client_name"]  # smbclient names its workstation in NTLM AUTHENTICATE
    # tree connects: ours on the share
    trees = [t for t in doc["tree_connects"] if t["session_id"] == holder["session_id"]]
    assert [t["share"] for t in trees] == [server.share] and trees[0]["num_opens"] == 1
    assert trees[0]["connected_time"] <= srv["now"] and trees[0]["encryption"] == "-"
    theirs = [t for t in doc["tree_connects"] if t["session_id"] == others[0]["session_id"]]
    assert [t["share"] for t in theirs] == [server.share] and theirs[0]["encryption"] == others[0]["encryption"]
    # opens: the leased file
    opens = [o for o in doc["opens"] if o["session_id"] == holder["session_id"]]
    assert len(opens) == 1
    o = opens[0]
    assert o["share"] == server.share and o["path"] == "dir\\locked.bin" and o["user"] == server.user
    assert o["oplock_level"] == "LEASE" and o["lease_state"] == "RWH" and o["lease_key"] == bytes(range(1, 17)).hex()
    assert o["deny_mode"] == "DENY_WRITE+NODEL" and o["rw"] == "RDWR" and o["lock_count"] == 1
    assert o["open_time"] <= srv["now"] and not o["is_durable"]
    # byte-range locks: [100, 150) exclusive, owned by that open
    assert doc["byte_range_locks"] == [{
        "share": server.share, "path": "dir\\locked.bin", "offset": 100, "length": 50, "exclusive": True,
        "file_global_id": o["file_global_id"], "session_id": holder["session_id"], "user": server.user,
        "client_address": mine["client_address"]}]

    # the tables
    r = smbstatus("--state-dir", str(state_dir(server)))
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert f"listening on {server.host}:{server.port}" in out
    assert "Session ID" in out and "Service" in out and "Locked files:" in out and "Byte-range locks:" in out
    sid = f"0x{holder['session_id']:x}"
    lock_line = [ln for ln in out.splitlines() if "dir\\locked.bin" in ln and "EXCLUSIVE" in ln]
    assert len(lock_line) == 1 and lock_line[0].split()[2:4] == ["100", "50"] and sid in lock_line[0]
    open_line = [ln for ln in out.splitlines() if "dir\\locked.bin" in ln and "LEASE(RWH)" in ln]
    assert len(open_line) == 1 and "DENY_WRITE+NODEL" in open_line[0] and "RDWR" in open_line[0]
    # -b: sessions only; -S: shares only; -L: locks only
    brief = smbstatus("--state-dir", str(state_dir(server)), "-b").stdout
    assert sid in brief and "Service" not in brief and "Locked files" not in brief
    shares = smbstatus("--state-dir", str(state_dir(server)), "-S").stdout
    assert "Service" in shares and "Protocol Version" not in shares and "Locked files" not in shares
    assert sum(1 for ln in shares.splitlines() if ln.startswith(server.share + " ")) == 2
    locks = smbstatus("--state-dir", str(state_dir(server)), "-L").stdout
    assert "LEASE(RWH)" in locks and "Service" not in locks and "Protocol Version" not in locks
    # -j with a section flag keeps that section
    assert set(status_json(server, "-L")) == {"server", "opens", "byte_range_locks"}
    assert set(status_json(server, "-b")) == {"server", "sessions"}


def test_status_follows_close_and_unlock(server, holder):
    fh = holder["open"]
    el = SMB2LockElement()
    el["offset"], el["length"], el["flags"] = 100, 50, LockFlags.SMB2_LOCKFLAG_UNLOCK
    fh.lock([el])
    doc = status_json(server)
    assert doc["byte_range_locks"] == []
    assert [o["lock_count"] for o in doc["opens"] if o["session_id"] == holder["session_id"]] == [0]


def test_socket_and_config_lookup(server, tmp_path):
    ctl = state_dir(server) / "wsd-smbd.ctl"
    st = os.stat(ctl)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    r = smbstatus("--socket", str(ctl), "-j")
    assert r.returncode == 0 and json.loads(r.stdout)["server"]["listen"] == [f"{server.host}:{server.port}"]
    conf = tmp_path / "smbd.toml"
    conf.write_text(f'[server]\nstate_dir = "{state_dir(server)}"\n')
    r = smbstatus("--config", str(conf), "-j")
    assert r.returncode == 0, r.stderr
    conf.write_text('[server]\ncontrol_socket = ""\n')
    r = smbstatus("--config", str(conf))
    assert r.returncode == 2 and "control_socket" in r.stderr


def test_no_server_exits_1(tmp_path):
    r = smbstatus("--state-dir", str(tmp_path / "nothing"))
    assert r.returncode == 1 and "no wsd-smbd is running" in r.stderr and r.stdout == ""
    # a stale socket file (nobody listens): also 1
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(tmp_path / "wsd-smbd.ctl"))
    s.close()
    r = smbstatus("--state-dir", str(tmp_path))
    assert r.returncode == 1 and "no wsd-smbd is running" in r.stderr


def _exchange(path: Path, data: bytes, timeout: float = 10) -> bytes:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(str(path))
    try:
        if data:
            s.sendall(data)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return out
            out += chunk
    finally:
        s.close()


@pytest.mark.parametrize("data,code", [
    (b"this is not json\n", "bad_json"),
    (b'{"op": "shutdown"}\n', "unknown_op"),
    (b'["status"]\n', "bad_request"),
    (b"{" * 5000, "request_too_long"),
    (b'{"op": "ping"}\n\xff\xfe\n', "bad_json"),
])
def test_bad_requests_get_an_error_and_the_server_keeps_serving(server, data, code):
    ctl = state_dir(server) / "wsd-smbd.ctl"
    lines = _exchange(ctl, data).splitlines()  # the server answers, then closes
    err = json.loads(lines[-1])
    assert err["error"]["code"] == code and err["error"]["message"]
    if data.startswith(b'{"op": "ping"}'):
        assert json.loads(lines[0]) == {"op": "ping", "pong": True}
    r = smbstatus("--state-dir", str(state_dir(server)), "-j")
    assert r.returncode == 0 and "sessions" in json.loads(r.stdout)
    assert server.alive()


def test_silent_client_times_out(server):
    ctl = state_dir(server) / "wsd-smbd.ctl"
    t0 = time.monotonic()
    out = _exchange(ctl, b"", timeout=20)
    assert json.loads(out)["error"]["code"] == "timeout" and 3 < time.monotonic() - t0 < 15
    assert smbstatus("--state-dir", str(state_dir(server))).returncode == 0


def test_stale_socket_replaced_and_removed_at_exit(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(state / "wsd-smbd.ctl"))  # left by a server that is gone: nobody listens
    stale.close()
    srv = WsdServer(tmp_path, server_options={"state_dir": str(state)}).start()
    try:
        deadline = time.monotonic() + 10
        while smbstatus("--state-dir", str(state)).returncode != 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert smbstatus("--state-dir", str(state), "-j").returncode == 0
        # a second server on the same state_dir leaves the live socket alone
        other = WsdServer(tmp_path / "b", server_options={"state_dir": str(state)}).start()
        try:
            doc = status_json(srv)
            assert doc["server"]["pid"] == srv.procs[-1].pid
        finally:
            other.stop()
        assert (state / "wsd-smbd.ctl").exists()
        assert "another running server" in other.log_tail()
    finally:
        srv.stop()
    assert not (state / "wsd-smbd.ctl").exists()


def test_control_socket_off(tmp_path):
    state = tmp_path / "state"
    srv = WsdServer(tmp_path, server_options={"state_dir": str(state), "control_socket": ""}).start()
    try:
        assert not (state / "wsd-smbd.ctl").exists()
        assert smbstatus("--state-dir", str(state)).returncode == 1
    finally:
        srv.stop()


def test_disconnected_durable_open_is_listed_without_session(server):
    """A durable v2 open (with an RH lease) whose connection drops stays in the table: listed
    with no session, its DurableOwner as the user, is_durable set."""
    (server.share_path / "durable.txt").write_bytes(b"d" * 100)
    conn = Connection(uuid.uuid4(), server.host, server.port, require_signing=True)
    conn.connect(timeout=30)
    try:
        sess = Session(conn, server.user, server.password)
        sess.connect()
        tree = TreeConnect(sess, rf"\\{server.host}\{server.share}")
        tree.connect()
        dh = SMB2CreateDurableHandleRequestV2()
        dh["timeout"] = 60000
        dh["create_guid"] = uuid.uuid4().bytes
        dctx = SMB2CreateContextRequest()
        dctx["buffer_name"] = CreateContextName.SMB2_CREATE_DURABLE_HANDLE_REQUEST_V2
        dctx["buffer_data"] = dh
        fh = Open(tree, "durable.txt")
        fh.create(ImpersonationLevel.Impersonation, 0x00120089, FileAttributes.FILE_ATTRIBUTE_NORMAL,
                  ShareAccess.FILE_SHARE_READ | ShareAccess.FILE_SHARE_WRITE | ShareAccess.FILE_SHARE_DELETE,
                  CreateDisposition.FILE_OPEN, CreateOptions.FILE_NON_DIRECTORY_FILE,
                  create_contexts=[lease_context(b"D" * 16, 0x03), dctx],
                  oplock_level=RequestedOplockLevel.SMB2_OPLOCK_LEVEL_LEASE)
        live = [o for o in status_json(server)["opens"] if o["path"] == "durable.txt"]
        assert len(live) == 1 and live[0]["is_durable"] and live[0]["session_id"] == sess.session_id
        assert live[0]["lease_state"] == "RH" and live[0]["deny_mode"] == "DENY_NONE" and live[0]["rw"] == "RDONLY"
    finally:
        conn.disconnect(close=False)  # the network goes away: no CLOSE, no LOGOFF
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        gone = [o for o in status_json(server)["opens"] if o["path"] == "durable.txt"]
        if gone and gone[0]["session_id"] is None:
            break
        time.sleep(0.1)
    assert len(gone) == 1 and gone[0]["session_id"] is None and gone[0]["is_durable"]
    assert gone[0]["user"] == server.user
    r = smbstatus("--state-dir", str(state_dir(server)), "-L")
    line = [ln for ln in r.stdout.splitlines() if "durable.txt" in ln]
    assert len(line) == 1 and " - " in line[0] and "durable" in line[0]
