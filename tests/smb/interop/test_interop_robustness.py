"""The server under test survives clients that misbehave on the wire.

A client killed in the middle of a transfer, and raw byte streams that are
not SMB at all, must end in a clean disconnect: the server keeps serving
other clients, and (for wsd-smbd) its log has no traceback.
"""
from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import time

import pytest

pytestmark = pytest.mark.interop


def _assert_still_serving(srv, smbclient) -> None:
    assert srv.alive(), f"{srv.kind} server exited"
    smbclient(srv, "ls").check()


def _assert_no_traceback(srv, since: int) -> None:
    if srv.kind == "wsd":
        log = srv.log_tail(since=since)
        assert "Traceback" not in log, log[-4000:]


def test_client_killed_mid_put(smb_server, smbclient, tmp_path, client_conf):
    srv = smb_server
    since = srv.log_size()
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        f.truncate(512 * 1024 * 1024)  # sparse: reads as zeros, costs no disk
    argv = ["smbclient", "-s", str(client_conf), "-p", str(srv.port), "-U", srv.creds, srv.unc,
            "-c", f"put {big} killed.bin"]
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # wait until the upload is under way
            f = srv.share_path / "killed.bin"
            if f.exists() and f.stat().st_size > 0:
                break
            time.sleep(0.02)
        os.killpg(p.pid, signal.SIGKILL)
    finally:
        p.wait(10)
    time.sleep(0.5)
    _assert_still_serving(srv, smbclient)
    smbclient(srv, "del killed.bin").check()
    assert not (srv.share_path / "killed.bin").exists()
    _assert_no_traceback(srv, since)


GARBAGE = {
    "random": os.urandom(4096),
    "huge-netbios-length": struct.pack(">I", 0x00FFFFFF) + b"\xfeSMB" + b"\0" * 60,
    "truncated-smb2-header": struct.pack(">I", 20) + b"\xfeSMB" + b"\0" * 16,
    "smb2-bad-structure-size": struct.pack(">I", 64 + 36) + b"\xfeSMB" + struct.pack("<H", 99) + b"\0" * 58
    + struct.pack("<H", 36) + b"\0" * 34,
    "transform-without-session": struct.pack(">I", 52 + 16) + b"\xfdSMB" + os.urandom(48) + os.urandom(16),
    "netbios-keepalive-then-eof": b"\x85\x00\x00\x00",
}


@pytest.mark.parametrize("name", list(GARBAGE))
def test_garbage_on_the_wire(smb_server, smbclient, name):
    srv = smb_server
    since = srv.log_size()
    with socket.create_connection((srv.host, srv.port), timeout=10) as s:
        s.sendall(GARBAGE[name])
        s.shutdown(socket.SHUT_WR)
        # the server answers with an error or closes; either way the stream must end within the bound
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if not s.recv(65536):
                    break
            except ConnectionResetError:
                break
        else:
            pytest.fail(f"{srv.kind} kept the connection open 10 s after {name!r} and EOF")
    _assert_still_serving(srv, smbclient)
    _assert_no_traceback(srv, since)
