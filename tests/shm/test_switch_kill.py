"""Through the switch: a SIGKILLed peer application ends the connection quickly, nothing leaks (shm)."""
import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest

import wsd
from wsd import errors
from wsd_shm import segments_of

PEER = os.path.join(os.path.dirname(os.path.dirname(__file__)), "switch", "peer.py")


def pattern(size: int, seed: int) -> bytes:
    return hashlib.shake_256(f"{seed}:{size}".encode()).digest(size)


@pytest.mark.parametrize("sizes", [[100, 5000], [100, 200_000]])   # inline only / an RDMA-registered region too
def test_sigkilled_switch_peer(sizes, shm_dir, monkeypatch):
    monkeypatch.setenv("WSD_SHM_DIR", shm_dir)
    sw = wsd.Switch([("127.0.0.0/8", "shm")])
    try:
        l = sw.socket()
        l.bind(("127.0.0.1", 0))
        l.listen()
        l.settimeout(20)
        port = l.getsockname()[1]
        peer = subprocess.Popen([sys.executable, PEER, json.dumps(
            {"provider": "shm", "addr": ["127.0.0.1", port], "sizes": sizes, "hold": 60})],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
        try:
            s, _ = l.accept()
            s.settimeout(10)
            want = b"".join(pattern(n, i) for i, n in enumerate(sizes))
            got = bytearray()
            while len(got) < len(want):
                got += s.recv(1 << 20)
            assert got == want
            os.kill(peer.pid, signal.SIGKILL)
            t0 = time.monotonic()
            with pytest.raises(errors.WSAECONNRESET):
                s.recv(100)
            assert time.monotonic() - t0 < 2
            peer.wait(5)
            deadline = time.monotonic() + 2
            while segments_of(peer.pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            assert not segments_of(peer.pid)
            s.close()
        finally:
            if peer.poll() is None:
                peer.kill()
            peer.communicate()
        l.close()
    finally:
        sw.close()
