"""Configuration reload (SIGHUP, Server.reload): users replaced, shares added, changed or
deregistered while clients stay connected.

In-process cases drive a wsd-smbd (its own loop thread) with the raw client and call
Server.reload on the server's loop; the program case edits a TOML file, sends SIGHUP to a
real wsd-smbd and looks with Samba's smbclient."""
from __future__ import annotations

import shutil
import signal
import subprocess
import time

import pytest
from rawclient import RawClient
from smbunit import PASSWORD, USER, make_config
from test_cli import start, stop

from wsd_smb.core.state import Share, User
from wsd_smb.wire import commands as w
from wsd_smb.wire.header import Command

STATUS_ACCESS_DENIED = 0xC0000022
STATUS_LOGON_FAILURE = 0xC000006D
STATUS_BAD_NETWORK_NAME = 0xC00000CC
STATUS_NETWORK_NAME_DELETED = 0xC00000C9
GENERIC_ALL = 0x10000000


def _connect(smbd, user=USER, password=PASSWORD):
    c = RawClient(smbd.host, smbd.port)
    c.negotiate(dialects=(0x0311,))
    assert c.session_setup(user, password).status == 0
    return c


def _create(c, tid, name, access=GENERIC_ALL, disposition=3):
    return c.request(Command.SMB2_CREATE, w.CreateRequest(
        requested_oplock_level=0, impersonation_level=2, desired_access=access, file_attributes=0x80,
        share_access=7, create_disposition=disposition, create_options=0x40, name=name.encode("utf-16-le")),
        tree_id=tid)


def _reload(smbd, cfg):
    return smbd.call(lambda: smbd.server.reload(cfg))


def _new_config(tmp_path, **shares):
    """make_config's users and share, plus *shares* (NAME=Share)."""
    cfg = make_config(tmp_path)
    for name, sh in shares.items():
        cfg.add_share(sh)
    return cfg


def test_reload_adds_a_share_and_a_user_and_drops_a_user(smbd, tmp_path):
    (tmp_path / "more").mkdir()
    old = _connect(smbd, "bob", "bobpw")  # bob logs on before the reload
    cfg = _new_config(tmp_path, more=Share("more", str(tmp_path / "more")))
    del cfg.users["bob"]
    cfg.users["carol"] = User.with_password("carol", "carolpw")
    changes = _reload(smbd, cfg)
    assert changes["added"] == ["more"] and not changes["removed"]
    c = _connect(smbd, "carol", "carolpw")
    tid = c.tree_connect("more").header.tree_id
    assert _create(c, tid, "new.txt").status == 0
    assert (tmp_path / "more" / "new.txt").exists()
    late = RawClient(smbd.host, smbd.port)
    late.negotiate(dialects=(0x0311,))
    assert late.session_setup("bob", "bobpw").status == STATUS_LOGON_FAILURE
    # a session that logged on before keeps working (as in Samba: a reload logs nobody off)
    assert old.tree_connect("share").status == 0
    for x in (c, late, old):
        x.close()


def test_reload_deregisters_a_removed_share_and_closes_its_opens(smbd, tmp_path):
    (tmp_path / "gone").mkdir()
    _reload(smbd, _new_config(tmp_path, gone=Share("gone", str(tmp_path / "gone"))))
    c = _connect(smbd)
    tid = c.tree_connect("gone").header.tree_id
    assert _create(c, tid, "held.txt").status == 0
    opens = lambda: smbd.call(lambda: [i.path_name for i in smbd.server.open_infos()  # noqa: E731
                                       if i.path_name.endswith("held.txt")])
    assert opens()
    changes = _reload(smbd, _new_config(tmp_path))
    assert changes["removed"] == ["gone"]
    deadline = time.monotonic() + 10
    while opens() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not opens()  # closed as a TREE_DISCONNECT would
    assert _create(c, tid, "held.txt", disposition=1).status == STATUS_NETWORK_NAME_DELETED
    assert c.tree_connect("gone").status == STATUS_BAD_NETWORK_NAME
    assert c.tree_connect("share").status == 0  # the session itself goes on
    c.close()


def test_reload_changes_a_share_for_new_tree_connects(smbd, tmp_path):
    c = _connect(smbd)
    before = c.tree_connect("share").header.tree_id
    cfg = make_config(tmp_path)
    cfg.shares["SHARE"].read_only = True
    assert _reload(smbd, cfg)["changed"] == ["share"]
    after = c.tree_connect("share").header.tree_id
    assert _create(c, after, "ro.txt").status == STATUS_ACCESS_DENIED  # the new tree connect is read-only
    assert _create(c, before, "rw.txt").status == 0  # TreeConnect.MaximalAccess was set at TREE_CONNECT
    assert not (tmp_path / "share" / "ro.txt").exists()
    c.close()


def test_reload_of_a_share_to_another_path_is_remove_and_add(smbd, tmp_path):
    (tmp_path / "elsewhere").mkdir()
    c = _connect(smbd)
    tid = c.tree_connect("share").header.tree_id
    cfg = make_config(tmp_path)
    cfg.shares["SHARE"] = Share("share", str(tmp_path / "elsewhere"))
    changes = _reload(smbd, cfg)
    assert changes["removed"] == ["share"] and changes["added"] == ["share"]
    assert _create(c, tid, "x.txt").status == STATUS_NETWORK_NAME_DELETED
    tid2 = c.tree_connect("share").header.tree_id
    assert _create(c, tid2, "x.txt").status == 0
    assert (tmp_path / "elsewhere" / "x.txt").exists() and not (tmp_path / "share" / "x.txt").exists()
    c.close()


SMBCLIENT = shutil.which("smbclient")


@pytest.mark.skipif(SMBCLIENT is None, reason="smbclient not installed (Debian package smbclient)")
def test_sighup_rereads_the_config_file(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    conf = tmp_path / "wsd.toml"
    base = f'[server]\nport = 0\nstate_dir = "{tmp_path / "state"}"\n\n[[share]]\nname = "alpha"\npath = "{a}"\n\n' \
           '[[user]]\nname = "admin"\npassword = "Adm-pass-1"\nadmin = true\n'
    conf.write_text(base)
    p, port, _ = start(["--config", str(conf)])

    def shares() -> str:
        r = subprocess.run([SMBCLIENT, "-L", "//127.0.0.1", "-p", str(port), "-U", "admin%Adm-pass-1"],
                           capture_output=True, text=True, timeout=30)
        return r.stdout

    try:
        assert "alpha" in shares() and "beta" not in shares()
        conf.write_text(base + f'\n[[share]]\nname = "beta"\npath = "{b}"\n')
        p.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 15
        while "beta" not in shares() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "beta" in shares()
        r = subprocess.run([SMBCLIENT, "//127.0.0.1/beta", "-p", str(port), "-U", "admin%Adm-pass-1", "-c",
                            "mkdir made-after-reload"], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stdout + r.stderr
        assert (b / "made-after-reload").is_dir()
        conf.write_text("this is not TOML [")  # a broken file: the running configuration stays
        p.send_signal(signal.SIGHUP)
        time.sleep(1)
        assert "beta" in shares()
    finally:
        rc, err = stop(p)
    assert rc == 0
    assert "event=reloaded" in err and "shares_added=beta" in err
    assert "event=reload_failed" in err
