"""wsd-accept: the listener's step-by-step trace, exit codes, --json, providers."""
import json
import subprocess
import sys

import pytest

EXE = [sys.executable, "-m", "wsd_tools.accept.cli"]


@pytest.fixture(autouse=True)
def _zmq_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("WSD_ZMQ_DIR", str(tmp_path))


def start_listener(*args):
    p = subprocess.Popen(EXE + ["listen", "--json", "--timeout", "20", *args], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    p.early = []
    for _ in range(20):
        line = p.stdout.readline()
        if not line:
            break
        step = json.loads(line)
        p.early.append(step)
        if step["step"] == "listening":
            return p, int(step["addr"].rsplit(":", 1)[1])
    p.kill()
    raise AssertionError("listener did not start: " + p.stderr.read())


def connect(port, *args, provider="zmq"):
    return subprocess.run(EXE + ["connect", "--provider", provider, "--json", "--timeout", "20",
                                 f"127.0.0.1:{port}", *args], capture_output=True, text=True, timeout=60)


def steps(text):
    return [json.loads(x) for x in text.splitlines() if x.startswith("{")]


def test_listener_traces_every_accept_step_with_timings():
    lp, port = start_listener("--provider", "zmq", "--bind", "127.0.0.1:0", "--count", "1", "--accept-ex", "100")
    cp = connect(port, "--send", "5000")
    assert cp.returncode == 0, cp.stderr
    out, err = lp.communicate(timeout=60)
    assert lp.returncode == 0, err
    st = steps(out)
    names = [s["step"] for s in st]
    for required in ["SetEvent", "WSPEnumNetworkEvents", "WSPAccept", "condition", "WPUCreateSocketHandle",
                     "ResetEvent", "negotiation_in", "negotiation_out", "first_data", "accept_ex_completed"]:
        assert required in names, (required, names)
    cond = next(s for s in st if s["step"] == "condition")
    assert cond["result"] == "CF_ACCEPT" and cond["same_thread_as_WSPAccept"] is True and cond["thread"]
    neg = next(s for s in st if s["step"] == "negotiation_in")
    assert neg["bytes"] <= 256 and neg["posted_receives"] > 0
    ts = [s["t_us"] for s in st[names.index("SetEvent"):]]
    assert all(isinstance(t, float) for t in ts) and ts == sorted(ts)
    # the connector's side of the negotiation, too
    cst = [s["step"] for s in steps(cp.stdout)]
    assert cst.index("WSPConnect") < cst.index("FD_CONNECT") < cst.index("negotiation_out") < cst.index("connected")


def test_rejected_connect_exits_1_with_WSAECONNREFUSED():
    lp, port = start_listener("--provider", "zmq", "--bind", "127.0.0.1:0", "--count", "1", "--reject")
    cp = connect(port)
    out, _ = lp.communicate(timeout=60)
    assert cp.returncode == 1 and "WSAECONNREFUSED" in cp.stderr
    assert "rejected" in [s["step"] for s in steps(out)]
    assert lp.returncode == 0


def test_tcp_provider_says_there_is_no_san_path():
    lp, port = start_listener("--provider", "tcp", "--bind", "127.0.0.1:0", "--count", "1")
    cp = connect(port, "--send", "10", provider="tcp")
    out, _ = lp.communicate(timeout=60)
    assert cp.returncode == 0
    assert "no_san_path" in [s["step"] for s in lp.early]
    assert "WSPAccept" not in [s["step"] for s in steps(out)]
    assert [s for s in steps(cp.stdout) if s["step"] == "connected"][0]["path"] == "tcp"


def test_unavailable_provider_exits_3_with_reason():
    cp = subprocess.run(EXE + ["connect", "--provider", "no-such", "127.0.0.1:9"], capture_output=True, text=True,
                        timeout=30)
    assert cp.returncode == 3 and "not available" in cp.stderr


def test_providers_lists_registered_providers():
    cp = subprocess.run(EXE + ["providers", "--json"], capture_output=True, text=True, timeout=60)
    rows = {r["provider"]: r for r in map(json.loads, cp.stdout.splitlines())}
    assert rows["tcp"]["available"] and rows["zmq"]["available"]


def test_usage_error_exits_2():
    cp = subprocess.run(EXE + ["listen", "--bind", "nonsense"], capture_output=True, text=True, timeout=30)
    assert cp.returncode == 2
