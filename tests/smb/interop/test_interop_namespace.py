"""Samba's smbclient against a wsd-smbd share with namespace options (store/namepolicy.py):
``ls`` leaves out vetoed names and shows hide_files / dot-file matches with the H
attribute; ``get`` of a vetoed name fails as Samba's own server answers
(NT_STATUS_OBJECT_NAME_NOT_FOUND), ``put`` cannot create one."""
from __future__ import annotations

import pytest
from sut_servers import ServerUnavailable, WsdServer  # tests/smb/conftest.py puts tests/smb on sys.path

pytestmark = pytest.mark.interop


@pytest.fixture
def ns_server(tmp_path):
    srv = WsdServer(tmp_path / "wsd", server_options={"share": [
        {"name": "share", "hide_files": ["*.tmp", "desktop.ini"], "veto_files": "/secret*/*.vet/"}]})
    try:
        srv.start()
    except ServerUnavailable as e:
        pytest.skip(str(e))
    yield srv
    srv.stop()


def _ls(r) -> dict[str, str]:
    """name -> attribute letters of smbclient's ``ls`` lines."""
    out = {}
    for ln in r.stdout.splitlines():
        if not ln.startswith("  "):
            continue
        parts = ln.split()
        if len(parts) >= 7 and parts[-6].isdigit():  # name [attrs] size  Day Mon dd hh:mm:ss yyyy
            name_and_attrs = parts[:-6]
            if len(name_and_attrs) >= 2 and set(name_and_attrs[-1]) <= set("DAHSRN"):
                out[" ".join(name_and_attrs[:-1])] = name_and_attrs[-1]
            else:
                out[" ".join(name_and_attrs)] = ""
    return out


def test_smbclient_ls_hides_vetoed_and_marks_hidden(ns_server, smbclient, tmp_path):
    root = ns_server.share_path
    for n in ("plain.txt", "x.tmp", "Desktop.ini", ".profile", "secret.key", "old.vet"):
        (root / n).write_bytes(b"data")
    (root / "secrets").mkdir()
    r = smbclient(ns_server, "ls").check()
    names = _ls(r)
    assert {"plain.txt", "x.tmp", "Desktop.ini", ".profile"} <= set(names), r.describe()
    assert not {"secret.key", "old.vet", "secrets"} & set(names), r.describe()
    for n in ("x.tmp", "Desktop.ini", ".profile"):
        assert "H" in names[n], (n, r.describe())
    assert "H" not in names["plain.txt"], r.describe()

    r = smbclient(ns_server, f"get secret.key {tmp_path / 'got'}")
    assert "NT_STATUS_OBJECT_NAME_NOT_FOUND" in r.stdout + r.stderr, r.describe()
    assert not (tmp_path / "got").exists()
    src = tmp_path / "up.bin"
    src.write_bytes(b"upload")
    r = smbclient(ns_server, f"put {src} new.vet")
    assert "NT_STATUS_OBJECT_NAME_NOT_FOUND" in r.stdout + r.stderr, r.describe()
    assert not (root / "new.vet").exists()
    r = smbclient(ns_server, f"put {src} fine.bin").check()
    assert (root / "fine.bin").read_bytes() == b"upload"
