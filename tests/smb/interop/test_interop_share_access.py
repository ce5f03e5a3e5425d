"""Per-share access policy of wsd-smbd as Samba's own clients see it: smbclient refused
(NT_STATUS_ACCESS_DENIED) on a valid_users share and admitted with the right user, a
write_list user writing to a read_only share, ``smbclient -L`` without the
non-browseable share (still reachable by name), and rpcclient ``netshareenumall`` with
access-based share enumeration (MS-SRVS 3.1.4.8).  One wsd-smbd per module, configured
with a TOML file of [[share]] / [[user]] tables."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from sut_servers import ServerUnavailable, WsdServer  # noqa: E402

pytestmark = pytest.mark.interop

SMBCLIENT = shutil.which("smbclient")
RPCCLIENT = shutil.which("rpcclient")
ALICE, ALICEPW = "alice", "Alice-pass-1"
BOB, BOBPW = "bob", "Bob-pass-1"


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    if SMBCLIENT is None or RPCCLIENT is None:
        pytest.skip("smbclient/rpcclient not installed (Debian package smbclient)")
    root = tmp_path_factory.mktemp("wsd-share-access")
    for d in ("vonly", "hidden", "abse", "ro"):
        (root / d).mkdir()
    (root / "hidden" / "inside.txt").write_text("hidden but there\n")
    shares = "".join(f'[[share]]\nname = "{name}"\npath = "{root / name}"\n{extra}\n' for name, extra in (
        ("vonly", f'valid_users = ["{ALICE.upper()}"]\ncomment = "alice only"\n'),
        ("hidden", "browseable = false\n"),
        ("abse", 'access_based_share_enum = true\nvalid_users = ["wsduser"]\n'),
        ("ro", f'read_only = true\nwrite_list = ["{ALICE}"]\n'),
    ))
    users = "".join(f'[[user]]\nname = "{u}"\npassword = "{p}"\n\n' for u, p in ((ALICE, ALICEPW), (BOB, BOBPW)))
    s = WsdServer(root / "srv", config_text=shares + users)
    try:
        s.start()
    except ServerUnavailable as e:
        pytest.skip(str(e))
    yield s
    s.stop()


def smbclient(srv, client_conf, share: str | None, user: str, password: str, commands: str | None = None,
              cwd: Path | None = None) -> subprocess.CompletedProcess:
    argv = [SMBCLIENT, "-s", str(client_conf), "-p", str(srv.port), "-U", f"{user}%{password}"]
    argv += ["-L", srv.host] if share is None else [f"//{srv.host}/{share}"]
    if commands is not None:
        argv += ["-c", commands]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, cwd=cwd)


def rpcclient(srv, command: str, user: str, password: str) -> str:
    r = subprocess.run([RPCCLIENT, "-p", str(srv.port), "-U", f"{user}%{password}", srv.host, "-c", command],
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    return r.stdout + r.stderr


def test_smbclient_valid_users(srv, client_conf):
    r = smbclient(srv, client_conf, "vonly", BOB, BOBPW, "ls")
    assert r.returncode != 0 and "NT_STATUS_ACCESS_DENIED" in r.stdout + r.stderr, r.stdout + r.stderr
    r = smbclient(srv, client_conf, "vonly", srv.user, srv.password, "ls")  # the administrator is not listed either
    assert r.returncode != 0 and "NT_STATUS_ACCESS_DENIED" in r.stdout + r.stderr
    r = smbclient(srv, client_conf, "vonly", ALICE, ALICEPW, "ls")  # "ALICE" in the list: names are case-blind
    assert r.returncode == 0 and "blocks available" in r.stdout, r.stdout + r.stderr


def test_smbclient_write_list_on_a_read_only_share(srv, client_conf, tmp_path):
    (tmp_path / "up.txt").write_text("from alice\n")
    r = smbclient(srv, client_conf, "ro", BOB, BOBPW, "put up.txt", cwd=tmp_path)
    assert "NT_STATUS_ACCESS_DENIED" in r.stdout + r.stderr, r.stdout + r.stderr
    assert not (srv.root.parent / "ro" / "up.txt").exists()
    r = smbclient(srv, client_conf, "ro", ALICE, ALICEPW, "put up.txt", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (srv.root.parent / "ro" / "up.txt").read_text() == "from alice\n"


def test_smbclient_list_leaves_out_a_hidden_share(srv, client_conf):
    r = smbclient(srv, client_conf, None, BOB, BOBPW)
    assert r.returncode == 0, r.stdout + r.stderr
    listed = {line.split()[0] for line in r.stdout.splitlines() if line.startswith("\t") and line.split()}
    assert {"vonly", "ro", "IPC$", "share"} <= listed and "hidden" not in listed
    assert "alice only" in r.stdout  # comment = remark
    r = smbclient(srv, client_conf, "hidden", BOB, BOBPW, "get inside.txt -")
    assert r.returncode == 0 and "hidden but there" in r.stdout, r.stdout + r.stderr


def test_rpcclient_netshareenumall_access_based(srv):
    admin = rpcclient(srv, "netshareenumall 1", srv.user, srv.password)
    bob = rpcclient(srv, "netshareenumall 1", BOB, BOBPW)
    assert "netname: abse\n" in admin and "netname: share\n" in admin and "netname: hidden\n" not in admin
    assert "netname: abse\n" not in bob and "netname: share\n" in bob, bob
    assert "netname: vonly\n" in bob  # no access-based enumeration there: listed although bob may not connect
    out = rpcclient(srv, "netsharegetinfo hidden 1", BOB, BOBPW)
    assert "netname: hidden\n" in out
