"""impacket's DCE/RPC srvsvc client against wsd-smbd's IPC$ pipe (MS-SRVS, SRVS-* in the spec).

Samba is not a reference here: on this harness it refuses NetrSessionEnum
with rpc_s_access_denied (its SMB user is root mapped from another name, not
a member of BUILTIN\\Administrators), so these run against wsd-smbd only.
impacket cannot encode an unknown info level, so ERROR_INVALID_LEVEL (SRVS-1, other levels) is left to the
unit tests.
"""
from __future__ import annotations

import pytest

pytest.importorskip("impacket")
from impacket.dcerpc.v5 import srvs, transport  # noqa: E402
from impacket.dcerpc.v5.rpcrt import DCERPCException  # noqa: E402
from impacket.smbconnection import SMBConnection  # noqa: E402

pytestmark = pytest.mark.interop

NERR_ClientNameNotFound = 2312
NERR_UserNotFound = 2221
NERR_InvalidComputer = 2351
ERROR_MORE_DATA = 234


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
