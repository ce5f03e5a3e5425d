"""Listening and connecting through the right providers (WSD-L1, WSD-C1), descriptors (WSD-A5)."""
import threading

import pytest

from switch_env import SAN
from wsd import errors
from wsd.registry import create_provider

PROV = SAN[0] if SAN else None
pytestmark = pytest.mark.skipif(PROV is None, reason="no SAN provider available")


def listen_steps(sw, host):
    trace = []
    sw.trace_sinks.append(trace.append)
    l = sw.socket()
    l.bind((host, 0))
    l.listen()
    l.close()
    return [(r.step, r.fields.get("provider")) for r in trace if r.step.startswith("listen")]


def test_listen_always_through_tcp_and_san_for_san_address_WSD_L1(switches):
    sw = switches([("127.0.0.0/8", PROV)])
    steps = listen_steps(sw, "127.0.0.1")
    assert steps[0] == ("listen", "tcp")               # TCP/IP first
    assert ("listen", PROV) in steps


def test_listen_on_wildcard_goes_through_every_san_provider_WSD_L1(switches):
    sw = switches([("127.0.0.2/32", PROV)])
    steps = listen_steps(sw, "0.0.0.0")
    assert steps[0] == ("listen", "tcp") and ("listen", PROV) in steps


def test_listen_on_non_san_address_is_tcp_only_WSD_L1(switches):
    sw = switches([("127.0.0.2/32", PROV)])
    steps = listen_steps(sw, "127.0.0.1")
    assert ("listen", "tcp") in steps and ("listen", PROV) not in steps
    assert ("listen_tcp_only", None) in steps


def _pair(switches, server_table, client_table, client_providers=None):
    srv = switches(server_table)
    l = srv.socket()
    l.bind(("127.0.0.1", 0))
    l.listen()
    l.settimeout(20)
    port = l.getsockname()[1]
    cli = switches(client_table, providers=client_providers)
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("a", l.accept()))
    t.start()
    c = cli.socket()
    c.settimeout(20)
    c.connect(("127.0.0.1", port))
    t.join(20)
    a, _ = box["a"]
    c.sendall(b"ping")
    assert a.recv(4) == b"ping"
    return srv, cli, c, a, l


def test_connect_by_san_table_WSD_C1(switches):
    srv, cli, c, a, l = _pair(switches, [("127.0.0.0/8", PROV)], [("127.0.0.0/8", PROV)])
    assert c.path == PROV and a.path == PROV
    for x in (c, a, l):
        x.close()


def test_connect_without_table_match_uses_tcp_WSD_C1(switches):
    srv, cli, c, a, l = _pair(switches, [("127.0.0.0/8", PROV)], [("127.0.0.2/32", PROV)])
    assert c.path == "tcp" and a.path == "tcp"          # the listener also listens through TCP/IP
    for x in (c, a, l):
        x.close()


def test_san_provider_that_cannot_bind_falls_back_to_tcp_WSD_C1(switches):
    cls = type(create_provider(PROV))

    class CannotBind(cls):
        def WSPBind(self, s, addr):
            raise errors.WSAEADDRNOTAVAIL("this NIC has no address")
    srv, cli, c, a, l = _pair(switches, [("127.0.0.0/8", PROV)], [("127.0.0.0/8", PROV)],
                              client_providers={PROV: CannotBind()})
    assert c.path == "tcp"
    for x in (c, a, l):
        x.close()


def test_longest_prefix_routing(switches):
    sw = switches([("127.0.0.0/8", PROV), ("127.0.0.5/32", "tcp")])
    assert sw.route("127.0.0.9").name == PROV
    assert sw.route("::1") is None and sw.route("not-an-ip") is None


def test_descriptor_mapping_WSD_A5(switches):
    srv, cli, c, a, l = _pair(switches, [("127.0.0.0/8", PROV)], [("127.0.0.0/8", PROV)])
    conn = a.connection
    # the provider stored the switch's descriptor; the switch maps it back to the provider's
    assert conn.provider.WSPSwitchSocket(conn.ps) == conn.handle
    assert srv.WPUQuerySocketHandle(conn.handle) == (PROV, conn.ps)
    for x in (c, a, l):
        x.close()
    assert srv.WPUQuerySocketHandle(conn.handle) is None


def test_unknown_provider_is_reported_unavailable(switches):
    sw = switches([("127.0.0.0/8", "no-such-provider")])
    assert "no-such-provider" in sw.unavailable
    assert sw.route("127.0.0.1") is None
