"""Bad input from the network: a raw SAN peer (another process, speaking to the provider directly).

Each case must end in a clean abort with the right WSA error and a log line, within a deadline:
never a hang, never a traceback.
"""
import json
import logging
import os
import signal
import struct
import subprocess
import sys
import time

import pytest

import wsd
from switch_env import SAN, table_for
from wsd import errors
from wsd.core.wire import MSG_DATA

HERE = os.path.dirname(__file__)
ZMQ = [p for p in SAN if p == "zmq"]   # raw peers use the provider SPI; fault injection is zmq's


def start_raw(cfg):
    return subprocess.Popen([sys.executable, os.path.join(HERE, "peer.py"), json.dumps({"mode": "raw", **cfg})],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def listen(switches, provider, negotiation_timeout=3.0):
    cfg = wsd.SwitchConfig(session=wsd.SessionConfig(negotiation_timeout=negotiation_timeout))
    sw = switches(table_for(provider), config=cfg)
    l = sw.socket()
    l.bind(("127.0.0.1", 0))
    l.listen()
    l.settimeout(20)
    return sw, l, l.getsockname()[1]


def reap(proc):
    try:
        out, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    assert "Traceback" not in err, err
    return out


@pytest.mark.parametrize("provider", SAN)
def test_negotiation_message_over_256_bytes_WSD_N3(provider, switches, caplog):
    sw, l, port = listen(switches, provider)
    peer = start_raw({"provider": provider, "addr": ["127.0.0.1", port], "send": ["BIGNEG"], "then": "sleep",
                      "seconds": 2})
    trace = []
    sw.trace_sinks.append(trace.append)
    with caplog.at_level(logging.WARNING, logger="wsd.session"):
        with pytest.raises(errors.WSAEMSGSIZE):
            l.accept()
    # from the connection request (not from the peer process's start-up) to the abort
    t0 = next(r.t for r in trace if r.step == "WSPAccept")
    assert time.monotonic() - t0 < 5
    assert "exceeds 256" in caplog.text
    reap(peer)


@pytest.mark.parametrize("provider", SAN)
@pytest.mark.parametrize("raw,why", [
    ("0100", "truncated"),
    (struct.pack("<BBHI", 77, 0, 0, 0).hex(), "unknown control message type"),
    (struct.pack("<BBHI", MSG_DATA, 0, 0, 100).hex() + "00" * 10, "length"),
])
def test_bad_control_message_after_negotiation(provider, raw, why, switches, caplog):
    sw, l, port = listen(switches, provider)
    peer = start_raw({"provider": provider, "addr": ["127.0.0.1", port], "send": ["NEG", raw], "then": "sleep",
                      "seconds": 2})
    s, _ = l.accept()
    s.settimeout(10)
    t0 = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="wsd.session"):
        with pytest.raises(errors.WSAECONNABORTED) as ei:
            s.recv(100)
    assert time.monotonic() - t0 < 5
    assert why in str(ei.value) and why in caplog.text
    s.close()
    reap(peer)


@pytest.mark.parametrize("provider", SAN)
def test_credit_overrun(provider, switches, caplog):
    sw, l, port = listen(switches, provider)
    if sw.providers[provider].capabilities.flow_control:
        pytest.skip("with NIC flow control the excess messages wait at the sender's NIC: "
                    "whether they arrive before a grant is a race, not an overrun")
    one = struct.pack("<BBHI", MSG_DATA, 0, 0, 1).hex() + "41"
    posted = wsd.SessionConfig().recv_count
    # the switch posts `posted` receives; more messages than that without any grant overrun the credits
    peer = start_raw({"provider": provider, "addr": ["127.0.0.1", port], "send": ["NEG"] + [one] * (posted + 8),
                      "then": "sleep", "seconds": 2})
    s, _ = l.accept()
    s.settimeout(10)
    time.sleep(0.5)
    got = b""
    with caplog.at_level(logging.WARNING, logger="wsd.session"):
        with pytest.raises(errors.WSAECONNABORTED) as ei:
            while True:
                got += s.recv(1)
    assert "credit overrun" in str(ei.value)
    # what arrived within the credits (the posted ones, plus grants for what the reads freed) is delivered
    assert got == b"A" * len(got) and 0 < len(got) < posted + 8
    s.close()
    reap(peer)


@pytest.mark.parametrize("provider", SAN)
def test_peer_vanishes_mid_negotiation(provider, switches):
    sw, l, port = listen(switches, provider, negotiation_timeout=3.0)
    import threading
    box = {}

    def acc():
        try:
            l.accept()
        except errors.WsaError as e:
            box["error"] = e
            box["at"] = time.monotonic()
    t = threading.Thread(target=acc)
    t.start()                                  # a SAN connect completes only when accept runs
    peer = start_raw({"provider": provider, "addr": ["127.0.0.1", port], "send": [], "then": "sleep", "seconds": 30})
    assert json.loads(peer.stdout.readline())["connected"]
    time.sleep(0.3)
    peer.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    t.join(10)
    assert isinstance(box.get("error"), (errors.WSAECONNRESET, errors.WSAETIMEDOUT)), box
    # noticed within the negotiation deadline (3 s) plus slack: never a hang
    assert box["at"] - killed < 4.0
    peer.wait(5)


@pytest.mark.parametrize("provider", ZMQ)
def test_lost_negotiation_message_times_out_on_both_sides(provider, switches):
    sw, l, port = listen(switches, provider, negotiation_timeout=2.0)
    c = switches(table_for(provider), config=wsd.SwitchConfig(session=wsd.SessionConfig(negotiation_timeout=2.0)),
                 provider_options={provider: {"faults": {"drop": {"kind": "send", "nth": 1}}}})
    s = c.socket()
    import threading
    box = {}

    def acc():
        try:
            l.accept()
        except errors.WsaError as e:
            box["accept"] = e
    t = threading.Thread(target=acc)
    t.start()
    t0 = time.monotonic()
    # whichever side's deadline expires first closes; the other may see that close (a reset) first
    with pytest.raises((errors.WSAETIMEDOUT, errors.WSAECONNRESET)) as ei:
        s.connect(("127.0.0.1", port))
    t.join(10)
    assert isinstance(box["accept"], (errors.WSAETIMEDOUT, errors.WSAECONNRESET))
    assert isinstance(ei.value, errors.WSAETIMEDOUT) or isinstance(box["accept"], errors.WSAETIMEDOUT)
    assert time.monotonic() - t0 < 6
    assert c.providers[provider].stats["dropped_send"] == 1
