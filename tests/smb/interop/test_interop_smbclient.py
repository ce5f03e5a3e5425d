"""Samba's smbclient against the server under test (wsd-smbd, and Samba for reference).

Each dialect is forced (client min = max protocol), with no protection, with
signing required and -- SMB 3.x only -- with encryption required.  Every run
checks the negotiated dialect and that the PDUs really were signed/encrypted
(from smbclient's -d 5 trace), the bytes (sha256) on the wire and on the
server's disk, and the namespace effects of mkdir/rename/del/rmdir.
"""
from __future__ import annotations

import pytest

from interop_util import sha256_file

pytestmark = pytest.mark.interop

DIALECTS = ["SMB2_02", "SMB2_10", "SMB3_00", "SMB3_02", "SMB3_11"]
MATRIX = [(d, p) for d in DIALECTS for p in ("off", "sign")] + [(d, "encrypt") for d in DIALECTS if d.startswith("SMB3")]


def _check_protection(r, dialect: str, protection: str) -> None:
    assert r.dialect == dialect, f"negotiated {r.dialect}, wanted {dialect}\n{r.describe()}"
    if protection == "sign":
        # every request after SESSION_SETUP is signed: tree connect, create, write/read, close, ...
        assert r.signed_pdus >= 4, f"only {r.signed_pdus} signed PDUs\n{r.describe()}"
    if protection == "encrypt":
        assert r.encrypted_pdus >= 4, f"only {r.encrypted_pdus} encrypted PDUs\n{r.describe()}"


@pytest.mark.parametrize("dialect,protection", MATRIX, ids=[f"{d}-{p}" for d, p in MATRIX])
def test_smbclient_file_cycle(smb_server, smbclient, payload, tmp_path, dialect, protection):
    srv = smb_server
    d = f"sc_{dialect}_{protection}"
    want = sha256_file(payload)
    size = payload.stat().st_size
    on_disk = srv.share_path / d

    # mkdir + put + ls
    r = smbclient(srv, f"mkdir {d}; put {payload} {d}\\up.bin; ls {d}\\*", dialect=dialect,
                  protection=protection).check()
    _check_protection(r, dialect, protection)
    listing = {ln.split()[0]: ln.split() for ln in r.stdout.splitlines() if ln.startswith("  ") and ln.split()}
    assert "up.bin" in listing and str(size) in listing["up.bin"], r.describe()
    assert on_disk.is_dir() and sha256_file(on_disk / "up.bin") == want

    # rename + get
    out = tmp_path / "got.bin"
    r = smbclient(srv, f"rename {d}\\up.bin {d}\\moved.bin; get {d}\\moved.bin {out}", dialect=dialect,
                  protection=protection).check()
    _check_protection(r, dialect, protection)
    assert not (on_disk / "up.bin").exists() and (on_disk / "moved.bin").exists()
    assert out.stat().st_size == size and sha256_file(out) == want

    # del + rmdir (rmdir only succeeds on an empty directory)
    r = smbclient(srv, f"del {d}\\moved.bin; rmdir {d}", dialect=dialect, protection=protection).check()
    _check_protection(r, dialect, protection)
    assert not on_disk.exists()


def test_smbclient_list_shares(smb_server, smbclient):
    r = smbclient(smb_server, list_shares=True)
    rows = [ln.split() for ln in r.stdout.splitlines() if ln.startswith("\t")]
    assert [smb_server.share, "Disk"] in [row[:2] for row in rows], r.describe()
    assert any(row[:2] == ["IPC$", "IPC"] for row in rows), r.describe()


def test_smbclient_missing_objects(smb_server, smbclient, tmp_path):
    srv = smb_server
    r = smbclient(srv, "get no_such_file.bin " + str(tmp_path / "x"))
    assert "NT_STATUS_OBJECT_NAME_NOT_FOUND" in r.stdout, r.describe()
    r = smbclient(srv, "rmdir no_such_dir")
    assert "NT_STATUS_OBJECT_NAME_NOT_FOUND" in r.stdout, r.describe()
    r = smbclient(srv, "ls no_such_dir\\*")
    assert "NT_STATUS_OBJECT_NAME_NOT_FOUND" in r.stdout or "NT_STATUS_OBJECT_PATH_NOT_FOUND" in r.stdout, \
        r.describe()


def test_smbclient_rmdir_nonempty(smb_server, smbclient, payload):
    srv = smb_server
    r = smbclient(srv, f"mkdir sc_full; put {payload} sc_full\\f.bin; rmdir sc_full")
    assert "NT_STATUS_DIRECTORY_NOT_EMPTY" in r.stdout, r.describe()
    assert (srv.share_path / "sc_full" / "f.bin").exists()
    smbclient(srv, "del sc_full\\f.bin; rmdir sc_full").check()
    assert not (srv.share_path / "sc_full").exists()


@pytest.mark.parametrize("dialect", ["SMB2_02", "SMB3_11"])
def test_smbclient_bad_password(smb_server, smbclient, dialect):
    srv = smb_server
    r = smbclient(srv, "ls", dialect=dialect, creds=f"{srv.user}%wrong-{srv.password}")
    assert r.returncode != 0
    assert "NT_STATUS_LOGON_FAILURE" in r.stdout + r.stderr, r.describe()
