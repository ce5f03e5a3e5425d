"""The wsd-smbd program: embedded default config, TOML config (nt_hash), SIGTERM drain."""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid

import pytest

from wsd_smb.auth.md4 import md4

EXE = [sys.executable, "-m", "wsd_smb.server.cli"]


def start(args, env=None, cwd=None):
    p = subprocess.Popen(EXE + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)
    lines = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = p.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("reach it with"):
            break
    text = "".join(lines)
    m = re.search(r"listening on 127\.0\.0\.1:(\d+)", text)
    if not m:
        p.kill()
        pytest.fail(f"server did not start: {text}\n{p.stderr.read()}")
    return p, int(m.group(1)), text


def stop(p) -> tuple[int, str]:
    p.send_signal(signal.SIGTERM)
    try:
        rc = p.wait(10)
    except subprocess.TimeoutExpired:
        p.kill()
        pytest.fail("wsd-smbd did not exit on SIGTERM")
    return rc, p.stderr.read()


def logon(port, user, password):
    from smbprotocol.connection import Connection
    from smbprotocol.session import Session
    from smbprotocol.tree import TreeConnect

    c = Connection(uuid.uuid4(), "127.0.0.1", port)
    c.connect()
    s = Session(c, user, password)
    s.connect()
    t = TreeConnect(s, r"\\127.0.0.1\IPC$")
    t.connect()
    return c, s


def test_default_config_generated_user_and_sigterm(tmp_path):
    env = dict(os.environ, XDG_STATE_HOME=str(tmp_path / "xdg"))
    p, port, text = start(["--port", "0"], env=env, cwd=tmp_path)
    m = re.search(r"smbclient //127\.0\.0\.1/share -p (\d+) -U (\w+)%(\S+)", text)
    assert m and int(m.group(1)) == port and "generated user" in text
    user, pw = m.group(2), m.group(3)
    assert (tmp_path / "xdg" / "wsd" / "share").is_dir()
    c, s = logon(port, user, pw)
    if shutil.which("smbclient"):
        conf = tmp_path / "smb.conf"
        conf.write_text("[global]\n")
        r = subprocess.run(["smbclient", "-s", str(conf), "//127.0.0.1/share", "-p", str(port), "-U", f"{user}%{pw}",
                            "-c", "ls"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
    rc, err = stop(p)  # SIGTERM with a client still connected: drains and exits cleanly
    assert rc == 0 and "event=stopped" in err and "Traceback" not in err
    c.disconnect()


def test_toml_config_nt_hash_and_json_logs(tmp_path):
    share = tmp_path / "data"
    share.mkdir()
    cfg = tmp_path / "smbd.toml"
    cfg.write_text(f"""
[server]
host = "127.0.0.1"
port = 0
signing_required = true
session_lifetime = 3600
log_format = "json"
dialects = ["3.0.2", "3.1.1"]

[[share]]
name = "data"
path = "{share}"

[[user]]
name = "carol"
nt_hash = "{md4('Carol-pw'.encode('utf-16-le')).hex()}"
""")
    p, port, _ = start(["--config", str(cfg)])
    c, s = logon(port, "carol", "Carol-pw")
    assert c.dialect == 0x0311
    s.disconnect()
    c.disconnect()
    rc, err = stop(p)
    assert rc == 0
    assert '"event": "logon"' in err and '"user": "carol"' in err


def test_bad_arguments_exit_2(tmp_path):
    r = subprocess.run(EXE + ["--user", "nopassword"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "NAME:PASSWORD" in r.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("[server\n")
    r = subprocess.run(EXE + ["--config", str(bad)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    from wsd_smb.server.config import load
    st = load(None, shares=[f"s={tmp_path}"], users=["eve:pa:ss:admin", "joe:x:y"])
    assert st.server.users["eve"].is_admin and st.server.users["eve"].nt_hash == md4("pa:ss".encode("utf-16-le"))
    assert not st.server.users["joe"].is_admin and st.server.users["joe"].nt_hash == md4("x:y".encode("utf-16-le"))
    r = subprocess.run(EXE + ["--share", f"x={tmp_path / 'missing'}"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "not a directory" in r.stderr
