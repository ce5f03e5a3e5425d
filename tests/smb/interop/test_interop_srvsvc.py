"""impacket's DCE/RPC srvsvc client and Samba's rpcclient against wsd-smbd's IPC$ pipe
(MS-SRVS, SRVS-* in the spec).  The rpcclient share/server-info cases also run against
Samba as the reference.

Samba is not a reference here: on this harness it refuses NetrSessionEnum
with rpc_s_access_denied (its SMB user is root mapped from another name, not
a member of BUILTIN\\Administrators), so these run against wsd-smbd only.
impacket cannot encode an unknown info level, so ERROR_INVALID_LEVEL (SRVS-1, other levels) is left to the
unit tests.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("impacket")
from impacket.dcerpc.v5 import srvs, transport  # noqa: E402
from impacket.dcerpc.v5.rpcrt import DCERPCException  # noqa: E402
from impacket.nmb import NetBIOSError  # noqa: E402
from impacket.smbconnection import SessionError, SMBConnection  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from sut_servers import WsdServer  # noqa: E402

pytestmark = pytest.mark.interop

NERR_ClientNameNotFound = 2312
NERR_UserNotFound = 2221
NERR_InvalidComputer = 2351
ERROR_MORE_DATA = 234
ERROR_ACCESS_DENIED = 5


def _login(srv) -> SMBConnection:
    c = SMBConnection(srv.host, srv.host, sess_port=srv.port, timeout=30)
    c.login(srv.user, srv.password)
    return c


@pytest.fixture
def srvsvc(wsd_smbd):
    """A bound srvsvc DCE/RPC handle on a session of its own, plus a second, idle session."""
    other = _login(wsd_smbd)
    me = _login(wsd_smbd)
    rpc = transport.SMBTransport(wsd_smbd.host, wsd_smbd.port, filename=r"\srvsvc", smb_connection=me)
    dce = rpc.get_dce_rpc()
    try:
        dce.connect()  # CREATE \srvsvc on IPC$: must succeed now that the pipe exists
        dce.bind(srvs.MSRPC_UUID_SRVS)
        yield dce
        dce.disconnect()
    finally:
        other.close()
        me.close()


def _sessions(dce, level: int, **kw):
    r = srvs.hNetrSessionEnum(dce, kw.pop("client", srvs.NULL), kw.pop("user", srvs.NULL), level, **kw)
    return r, r["InfoStruct"]["SessionInfo"][f"Level{level}"]["Buffer"]


def _code(e: DCERPCException) -> int:
    return e.get_error_code()


def test_srvsvc_share_enum(srvsvc, wsd_smbd):
    r = srvs.hNetrShareEnum(srvsvc, 1)
    names = [s["shi1_netname"][:-1] for s in r["InfoStruct"]["ShareInfo"]["Level1"]["Buffer"]]
    assert wsd_smbd.share in names and "IPC$" in names


@pytest.mark.parametrize("level", [0, 1, 2, 10, 502])
def test_srvsvc_session_enum_levels(srvsvc, wsd_smbd, level):
    """SRVS-1: every supported level lists both of our sessions, with the fields that level carries."""
    r, entries = _sessions(srvsvc, level)
    assert r["TotalEntries"] >= 2 and len(entries) >= 2
    for e in entries:
        assert e[f"sesi{level}_cname"][:-1].lstrip("\\") == "127.0.0.1"
        if level in (1, 2, 10, 502):
            assert e[f"sesi{level}_username"][:-1].lower() == wsd_smbd.user.lower()
        if level in (1, 2, 10, 502):
            assert e[f"sesi{level}_time"] >= e[f"sesi{level}_idle_time"] >= 0


def test_srvsvc_session_enum_qualifiers(srvsvc, wsd_smbd):
    """SRVS-2/3: ClientName must start with \\\\; qualifiers that match nothing give the NERR codes."""
    r, entries = _sessions(srvsvc, 10, client="\\\\127.0.0.1\x00", user=wsd_smbd.user + "\x00")
    assert len(entries) >= 2
    with pytest.raises(DCERPCException) as ei:
        _sessions(srvsvc, 10, client="127.0.0.1\x00")
    assert _code(ei.value) == NERR_InvalidComputer
    with pytest.raises(DCERPCException) as ei:
        _sessions(srvsvc, 10, client="\\\\no-such-client\x00")
    assert _code(ei.value) == NERR_ClientNameNotFound
    with pytest.raises(DCERPCException) as ei:
        _sessions(srvsvc, 10, user="nobody-like-this\x00")
    assert _code(ei.value) == NERR_UserNotFound


def test_srvsvc_session_enum_resume(srvsvc, wsd_smbd):
    """SRVS-4/5/6: a PreferedMaximumLength that fits one entry -> ERROR_MORE_DATA and a resume handle."""
    _, everything = _sessions(srvsvc, 10)
    request = srvs.NetrSessionEnum()
    request["ServerName"] = srvs.NULL
    request["ClientName"] = srvs.NULL
    request["UserName"] = srvs.NULL
    request["InfoStruct"]["Level"] = 10
    request["InfoStruct"]["SessionInfo"]["tag"] = 10
    request["InfoStruct"]["SessionInfo"]["Level10"]["Buffer"] = srvs.NULL
    request["PreferedMaximumLength"] = 1
    request["ResumeHandle"] = 0
    with pytest.raises(DCERPCException) as ei:
        srvsvc.request(request)
    err = ei.value
    assert _code(err) == ERROR_MORE_DATA
    packet = err.get_packet()
    got = packet["InfoStruct"]["SessionInfo"]["Level10"]["Buffer"]
    assert 1 <= len(got) < len(everything)
    assert packet["TotalEntries"] == len(everything)
    assert packet["ResumeHandle"] >= 1


# ====================================================================== rpcclient (Samba's DCE/RPC client)
RPCCLIENT = shutil.which("rpcclient")
needs_rpcclient = pytest.mark.skipif(RPCCLIENT is None, reason="rpcclient not installed (Debian package smbclient)")


def rpcclient(srv, command: str, user: str | None = None, password: str | None = None,
              debug: int = 0) -> subprocess.CompletedProcess:
    """One rpcclient -c command against *srv* (rpcclient's own parser eats one level of
    backslashes: pass ``\\\\\\\\host`` to send ``\\\\host``)."""
    creds = f"{user or srv.user}%{password or srv.password}"
    args = [RPCCLIENT, "-p", str(srv.port), "-U", creds, srv.host, "-c", command]
    if debug:
        args[1:1] = ["-d", str(debug)]
    return subprocess.run(args, capture_output=True, text=True, timeout=60)


@needs_rpcclient
def test_rpcclient_netshareenumall(smb_server):
    """NetrShareEnum (opnum 15) at rpcclient's default level 2 and at level 1."""
    out = rpcclient(smb_server, "netshareenumall").stdout
    assert f"netname: {smb_server.share}\n" in out and "netname: IPC$\n" in out
    assert "path:\tC:" in out
    out = rpcclient(smb_server, "netshareenumall 1").stdout
    assert f"netname: {smb_server.share}\n" in out and "netname: IPC$\n" in out


@needs_rpcclient
def test_rpcclient_netsharegetinfo(smb_server):
    """NetrShareGetInfo (opnum 16)."""
    out = rpcclient(smb_server, f"netsharegetinfo {smb_server.share}").stdout
    assert f"netname: {smb_server.share}\n" in out and "type:\t0x0\n" in out
    out = rpcclient(smb_server, "netsharegetinfo IPC$ 1").stdout
    assert "netname: IPC$\n" in out


@needs_rpcclient
def test_rpcclient_srvinfo(smb_server):
    """NetrServerGetInfo (opnum 21) level 101."""
    out = rpcclient(smb_server, "srvinfo").stdout
    assert "platform_id     :\t500" in out and "os version" in out


@needs_rpcclient
def test_rpcclient_netshareenum_sticky_and_unknown_share(wsd_smbd):
    """NetrShareEnumSticky (opnum 36) lists the ordinary shares only; an unknown share name
    is NERR_NetNameNotFound."""
    out = rpcclient(wsd_smbd, "netshareenum").stdout
    assert f"netname: {wsd_smbd.share}\n" in out and "IPC$" not in out
    res = rpcclient(wsd_smbd, "netsharegetinfo no-such-share")
    assert "WERR_NERR_NETNAMENOTFOUND" in res.stdout + res.stderr


@needs_rpcclient
def test_rpcclient_netsessenum(wsd_smbd):
    """NetrSessionEnum (opnum 12) through Samba's NDR encoder (pidl): levels, qualifiers
    (SRVS-2/3) and an info level impacket cannot send (SRVS-1 ERROR_INVALID_LEVEL)."""
    me = r"\\\\127.0.0.1"
    for level in (0, 1, 2, 10, 502):
        res = rpcclient(wsd_smbd, rf"netsessenum {me} {wsd_smbd.user} {level}")
        m = re.search(r"Received (\d+) entries", res.stdout)
        assert m and int(m.group(1)) >= 1, res.stdout + res.stderr
    cases = {
        rf"netsessenum {me} nobody-like-this 10": "WERR_NERR_USERNOTFOUND",
        rf"netsessenum \\\\no-such-client {wsd_smbd.user} 10": "WERR_NERR_CLIENTNAMENOTFOUND",
        rf"netsessenum 127.0.0.1 {wsd_smbd.user} 10": "WERR_NERR_INVALIDCOMPUTER",
        rf"netsessenum {me} {wsd_smbd.user} 7": "WERR_INVALID_LEVEL",
        rf"netsessenum {me} {wsd_smbd.user} 501": "WERR_INVALID_LEVEL",
    }
    for command, expect in cases.items():
        res = rpcclient(wsd_smbd, command)
        assert expect in res.stdout + res.stderr, (command, res.stdout, res.stderr)


@needs_rpcclient
def test_rpcclient_netremotetod(wsd_smbd):
    """NetrRemoteTOD (opnum 28): rpcclient prints the decoded reply at debug level 10."""
    res = rpcclient(wsd_smbd, "netremotetod", debug=10)
    out = res.stdout + res.stderr
    assert "srvsvc_NetRemoteTOD" in out and "result                   : WERR_OK" in out
    year = re.search(r"year\s+: 0x[0-9a-f]+ \((\d+)\)", out)
    assert year and int(year.group(1)) == time.gmtime().tm_year


# ====================================================================== SRVS-7: a user who is not an administrator
@pytest.fixture(scope="module")
def wsd_with_plain_user(tmp_path_factory):
    """A wsd-smbd of its own with one administrator and one ordinary user."""
    srv = WsdServer(tmp_path_factory.mktemp("srvsvc-users"), extra_args=["--user", f"{PLAIN_USER}:{PLAIN_PASS}"])
    why = srv.unavailable_reason()
    if why:
        pytest.skip(why)
    srv.start()
    yield srv
    srv.stop()


PLAIN_USER, PLAIN_PASS = "plainuser", "Plain-pass-1"


def test_srvsvc_session_enum_non_admin(wsd_with_plain_user):
    """SRVS-7 with impacket: levels 0/10 are open to every user, 1/2/502 are not."""
    srv = wsd_with_plain_user
    c = SMBConnection(srv.host, srv.host, sess_port=srv.port, timeout=30)
    c.login(PLAIN_USER, PLAIN_PASS)
    try:
        rpc = transport.SMBTransport(srv.host, srv.port, filename=r"\srvsvc", smb_connection=c)
        dce = rpc.get_dce_rpc()
        dce.connect()
        dce.bind(srvs.MSRPC_UUID_SRVS)
        for level in (0, 10):
            r = srvs.hNetrSessionEnum(dce, srvs.NULL, srvs.NULL, level)
            assert r["TotalEntries"] >= 1
        for level in (1, 2, 502):
            with pytest.raises(DCERPCException) as ei:
                srvs.hNetrSessionEnum(dce, srvs.NULL, srvs.NULL, level)
            assert _code(ei.value) == ERROR_ACCESS_DENIED
        dce.disconnect()
    finally:
        c.close()


@needs_rpcclient
def test_rpcclient_non_admin(wsd_with_plain_user):
    """SRVS-7 with rpcclient: NetrSessionEnum level 1 and NetrShareEnum level 2 are
    refused, level 10 and share level 1 are served."""
    srv = wsd_with_plain_user
    res = rpcclient(srv, "netsessenum", PLAIN_USER, PLAIN_PASS)
    assert "WERR_ACCESS_DENIED" in res.stdout + res.stderr
    res = rpcclient(srv, rf"netsessenum \\\\127.0.0.1 {PLAIN_USER} 10", PLAIN_USER, PLAIN_PASS)
    assert "Received 1 entries" in res.stdout, res.stdout + res.stderr
    res = rpcclient(srv, "netshareenumall", PLAIN_USER, PLAIN_PASS)
    assert "WERR_ACCESS_DENIED" in res.stdout + res.stderr
    res = rpcclient(srv, "netshareenumall 1", PLAIN_USER, PLAIN_PASS)
    assert "netname: IPC$\n" in res.stdout


# ====================================================================== open files, tree connects, sessions
@needs_rpcclient
def test_rpcclient_netfileenum_netconnenum_netsessdel(wsd_with_plain_user):
    """MS-SRVS 3.1.4.1/3.1.4.2/3.1.4.6 from rpcclient: the file an impacket client holds open
    is listed with its user, the tree connects enumerate per share, and deleting that user's
    sessions ends them (impacket's next request fails) while the administrator's go on."""
    srv = wsd_with_plain_user
    c = SMBConnection(srv.host, srv.host, sess_port=srv.port, timeout=30)
    c.login(PLAIN_USER, PLAIN_PASS)
    try:
        tid = c.connectTree(srv.share)
        fid = c.createFile(tid, "held-open.txt")
        c.writeFile(tid, fid, b"held")
        res = rpcclient(srv, "netfileenum 3")
        out = res.stdout + res.stderr
        assert "held-open.txt" in out and "\\PIPE\\srvsvc" in out, out
        res = rpcclient(srv, f"netconnenum 1 {srv.share}")
        assert "result was" not in res.stdout + res.stderr  # success prints nothing
        res = rpcclient(srv, "netconnenum 1 nosuchshare")
        assert "WERR_NERR_NETNAMENOTFOUND" in (res.stdout + res.stderr).upper()
        res = rpcclient(srv, rf"netsessdel \\\\127.0.0.1 {PLAIN_USER}")
        assert "result was" not in res.stdout + res.stderr, res.stdout + res.stderr
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and "held-open.txt" in rpcclient(srv, "netfileenum 3").stdout:
            time.sleep(0.1)
        assert "held-open.txt" not in rpcclient(srv, "netfileenum 3").stdout  # closed with its session
        # impacket encrypts its 3.1.1 requests: a TRANSFORM for a session that no longer
        # exists ends the connection (MS-SMB2 3.3.5.2.1.1)
        with pytest.raises(NetBIOSError):
            c.readFile(tid, fid, 0, 4)
        res = rpcclient(srv, rf"netsessdel \\\\127.0.0.1 {PLAIN_USER}")
        assert "WERR_NERR_USERNOTFOUND" in (res.stdout + res.stderr).upper()
    finally:
        try:
            c.close()
        except (SessionError, NetBIOSError):  # the session was deleted: its LOGOFF fails
            pass


# ====================================================================== replies longer than one fragment
MANY = 150


@pytest.fixture(scope="module")
def wsd_many_shares(tmp_path_factory):
    """A wsd-smbd exporting MANY + 1 shares: the NetrShareEnum reply (~20 KB at level 2)
    spans several 4280-byte fragments and more than one SMB2 READ/IOCTL."""
    root = tmp_path_factory.mktemp("srvsvc-many")
    extra = []
    for i in range(MANY):
        (root / f"s{i}").mkdir()
        extra += ["--share", f"share_with_a_long_name_{i:03d}={root / f's{i}'}"]
    srv = WsdServer(root, extra_args=extra)
    why = srv.unavailable_reason()
    if why:
        pytest.skip(why)
    srv.start()
    yield srv
    srv.stop()


def test_srvsvc_list_shares_fragmented_reply(wsd_many_shares):
    """impacket, smbclient -L and rpcclient reassemble the multi-fragment reply."""
    srv = wsd_many_shares
    c = SMBConnection(srv.host, srv.host, sess_port=srv.port, timeout=30)
    c.login(srv.user, srv.password)
    try:
        names = {s["shi1_netname"][:-1] for s in c.listShares()}
    finally:
        c.close()
    assert len(names) == MANY + 2 and {"IPC$", "share", "share_with_a_long_name_149"} <= names
    if shutil.which("smbclient"):
        res = subprocess.run(["smbclient", "-p", str(srv.port), "-U", srv.creds, "-L", srv.host],
                             capture_output=True, text=True, timeout=60)
        assert len(re.findall(r"^\s+share_with_a_long_name_\d+\s+Disk", res.stdout, re.M)) == MANY, res.stdout
    if RPCCLIENT:
        out = rpcclient(srv, "netshareenumall").stdout
        assert out.count("netname: ") == MANY + 2
