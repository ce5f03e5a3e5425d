"""The control-socket protocol core (wsd_smb/admin/control.py, sans-IO) and the status
report helpers (admin/status.py): requests in order, each bad input -> one error object
and close, the deadline, and hypothesis: no input makes the core raise or answer with
anything but JSON lines."""
from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from wsd_smb.admin.control import ControlConnection, Request
from wsd_smb.admin.status import build_status, deny_mode, lease_state_name, rw_mode
from wsd_smb.core.state import Server, ServerConfig, Share


def run(conn: ControlConnection, chunks: list[bytes], now: float = 0.0) -> list[dict]:
    """Feed *chunks*, answer every request as a driver would; the JSON lines written."""
    out = b""
    for c in chunks:
        conn.receive_data(c)
        while (req := conn.next_event()) is not None:
            conn.respond({"echo": req.args.get("n")}, now)
        out += conn.data_to_send()
    return [json.loads(line) for line in out.splitlines()]


def test_requests_answered_in_order_across_chunks():
    c = ControlConnection(now=0.0)
    out = run(c, [b'{"op": "ping", "n": 1}\n{"op": "sta', b'tus", "n": 2}\n', b"\n\n", b'{"op":"ping","n":3}\n'])
    assert out == [{"op": "ping", "echo": 1}, {"op": "status", "echo": 2}, {"op": "ping", "echo": 3}]
    assert not c.closing
    c.receive_data(b"")
    assert c.next_event() is None and c.closing and c.close_reason == "eof"


def test_one_request_at_a_time():
    c = ControlConnection(now=0.0)
    c.receive_data(b'{"op": "ping"}\n{"op": "ping"}\n')
    first = c.next_event()
    assert isinstance(first, Request) and first.op == "ping"
    assert c.next_event() is None  # the first is not answered yet
    c.respond({}, 0.0)
    assert c.next_event() is not None


def test_error_after_good_requests_keeps_order_and_closes():
    c = ControlConnection(now=0.0)
    out = run(c, [b'{"op": "ping", "n": 1}\nnope\n{"op": "ping", "n": 2}\n'])
    assert out[0] == {"op": "ping", "echo": 1}
    assert out[1]["error"]["code"] == "bad_json" and len(out) == 2
    assert c.closing and c.close_reason == "bad_json"
    c.receive_data(b'{"op": "ping"}\n')  # nothing more is taken
    assert c.next_event() is None and c.data_to_send() == b""


def test_error_codes():
    cases = {b'{"op": "reboot"}\n': "unknown_op", b'[1, 2]\n': "bad_request", b'{"op": 5}\n': "bad_request",
             b'{"x": 1}\n': "bad_request", b'\xff\n': "bad_json", b'{"op": "ping"': None,
             b"[" * 100000 + b"\n": "request_too_long", b"[" * 3000 + b"]" * 3000 + b"\n": "request_too_long"}
    for data, code in cases.items():
        c = ControlConnection(now=0.0)
        out = run(c, [data])
        if code is None:
            assert out == [] and not c.closing  # incomplete: waits for more
            out = run(c, [b""])
            code = "bad_json"  # the stream ended inside the request
        assert [o["error"]["code"] for o in out] == [code], data[:40]


def test_deeply_nested_json_is_an_error_not_a_crash():
    c = ControlConnection(now=0.0, max_request=1 << 20)
    out = run(c, [b"[" * 200000 + b"\n"])
    assert out[0]["error"]["code"] == "bad_json"


def test_deadline():
    c = ControlConnection(now=100.0, timeout=5.0)
    c.on_timer(104.9)
    assert not c.closing
    c.receive_data(b'{"op": "ping"}\n')
    assert c.next_event() is not None
    c.on_timer(200.0)  # a request being answered is not timed out
    assert not c.closing
    c.respond({}, 200.0)
    assert c.deadline == 205.0
    c.data_to_send()
    c.on_timer(205.0)
    assert c.closing and json.loads(c.data_to_send())["error"]["code"] == "timeout"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=600), st.sampled_from(
    [b'{"op": "status"}\n', b'{"op": "ping"}\n', b"\n", b"{", b'"op"', b"}\n", b"[" * 700, b"\xc3", b"\x00\n"])),
    max_size=30), st.lists(st.floats(min_value=0, max_value=20), max_size=5))
def test_fuzz_never_raises_and_speaks_json_lines(chunks, ticks):
    c = ControlConnection(now=0.0, timeout=5.0, max_request=512)
    out = b""
    for i, data in enumerate(chunks):
        c.receive_data(data)
        while (req := c.next_event()) is not None:
            assert req.op in ("status", "ping")
            c.respond({"ok": True}, 0.0)
        if i < len(ticks):
            c.on_timer(ticks[i])
        out += c.data_to_send()
    c.receive_data(b"")
    while (req := c.next_event()) is not None:
        c.respond({}, 0.0)
    out += c.data_to_send()
    docs = [json.loads(line) for line in out.splitlines()]
    assert all(isinstance(d, dict) and ("op" in d or "error" in d) for d in docs)
    errors = [d for d in docs if "error" in d]
    assert len(errors) <= 1 and (not errors or docs[-1] is errors[0])  # an error is the last word
    assert c.closing or not chunks or len(c._buf) <= 512 + 600


def test_status_helpers():
    assert lease_state_name(0x7) == "RWH" and lease_state_name(0x3) == "RH" and lease_state_name(0) == "NONE"
    assert deny_mode(0x7) == "DENY_NONE" and deny_mode(0x1) == "DENY_WRITE+NODEL" and deny_mode(0x4) == "DENY_ALL"
    assert deny_mode(0x3) == "DENY_NONE+NODEL" and deny_mode(0x6) == "DENY_READ"
    assert rw_mode(0x0012019F) == "RDWR" and rw_mode(0x00120089) == "RDONLY" and rw_mode(0x00100080) == "NONE"
    assert rw_mode(0x00000002) == "WRONLY" and rw_mode(0x10000000) == "RDWR"


def test_build_status_of_an_idle_server(tmp_path):
    cfg = ServerConfig()
    cfg.add_share(Share("data", str(tmp_path)))
    srv = Server(cfg, now=1000.0)
    doc = build_status(srv, 1010.0, version="9.9", listen=["127.0.0.1:4450"], pid=42)
    assert doc["server"] == {"program": "wsd-smbd", "version": "9.9", "pid": 42, "start_time": 1000.0, "now": 1010.0,
                             "listen": ["127.0.0.1:4450"], "server_name": "WSD", "domain": "WORKGROUP",
                             "shares": ["IPC$", "data"]}
    assert doc["sessions"] == doc["tree_connects"] == doc["opens"] == doc["byte_range_locks"] == []
    json.dumps(doc)


def test_config_control_socket_key(tmp_path):
    import pytest

    from wsd_smb.server.config import ConfigError, load

    share = tmp_path / "share"
    share.mkdir()
    conf = tmp_path / "smbd.toml"
    conf.write_text(f'[server]\nstate_dir = "{tmp_path / "st"}"\n')
    st = load(str(conf), shares=[f"data={share}"])
    assert st.control_socket_path() == tmp_path / "st" / "wsd-smbd.ctl"
    conf.write_text('[server]\ncontrol_socket = ""\n')
    assert load(str(conf), shares=[f"data={share}"]).control_socket_path() is None
    conf.write_text(f'[server]\ncontrol_socket = "{tmp_path / "x.sock"}"\n')
    assert load(str(conf), shares=[f"data={share}"]).control_socket_path() == tmp_path / "x.sock"
    conf.write_text('[server]\ncontrol_socket = 5\n')
    with pytest.raises(ConfigError, match="control_socket"):
        load(str(conf), shares=[f"data={share}"])


def test_driver_serves_pipelined_requests_and_cleans_up(tmp_path):
    """server/control.py on a loop of its own, with an idle Server: two requests in one
    write are answered in order; a stale socket file is replaced; the file goes at close."""
    import asyncio
    import os
    import socket as so

    from wsd_smb.server.control import ControlServer

    path = tmp_path / "wsd-smbd.ctl"
    stale = so.socket(so.AF_UNIX, so.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()

    async def main():
        ctl = ControlServer(Server(ServerConfig()), path, listen=lambda: ["127.0.0.1:1"])
        assert await ctl.start()
        assert os.stat(path).st_mode & 0o777 == 0o600
        r, w = await asyncio.open_unix_connection(str(path))
        w.write(b'{"op": "ping"}\n{"op": "status"}\n')
        first, second = json.loads(await r.readline()), json.loads(await r.readline())
        w.write(b"bad\n")
        third = json.loads(await r.readline())
        assert await r.read() == b""  # closed after the error
        w.close()
        await ctl.close()
        return first, second, third, ctl

    first, second, third, ctl = asyncio.run(main())
    assert first == {"op": "ping", "pong": True}
    assert second["op"] == "status" and second["status"]["server"]["listen"] == ["127.0.0.1:1"]
    assert third["error"]["code"] == "bad_json" and ctl.requests == 2 and ctl.errors == 1
    assert not path.exists()
