"""The other process of the end-to-end tests: a connecting application, or a raw (misbehaving) SAN peer.

Usage: python peer.py JSON  -- JSON holds {"mode": ..., "provider": ..., "addr": [host, port], ...}.
It prints one JSON line with what happened and exits 0 (or 1 when the connect was refused).
"""
import hashlib
import json
import os
import sys
import time

import wsd
from wsd import errors
from wsd.core.wire import NegotiateMessage
from wsd.events import CompletionQueue, EventObject, Overlapped
from wsd.spi import FD_CONNECT


def table(provider):
    return [] if provider == "tcp" else [("127.0.0.0/8", provider)]


def pattern(size: int, seed: int) -> bytes:
    return hashlib.shake_256(f"{seed}:{size}".encode()).digest(size)


def app(cfg):
    sw = wsd.Switch(table(cfg["provider"]), provider_options={cfg["provider"]: cfg.get("opts", {})})
    s = sw.socket()
    s.settimeout(30)
    try:
        s.connect(tuple(cfg["addr"]))
    except errors.WsaError as e:
        print(json.dumps({"connected": False, "error": e.wsa_name, "t": time.monotonic()}), flush=True)
        sw.close()
        return 1
    res = {"connected": True, "path": s.path, "t": time.monotonic()}
    time.sleep(cfg.get("delay_before_send", 0))
    for i, size in enumerate(cfg.get("sizes", [])):
        s.sendall(pattern(size, i))
    if cfg.get("hold"):
        try:
            s.settimeout(cfg["hold"])
            res["recv"] = len(s.recv(10))
        except errors.WsaError as e:
            res["recv_error"] = e.wsa_name
    if cfg.get("expect_reply"):
        reply = b""
        while len(reply) < cfg["expect_reply"]:
            d = s.recv(1 << 16)
            if not d:
                break
            reply += d
        res["reply"] = reply.decode()
    s.close()
    sw.close()
    print(json.dumps(res), flush=True)
    return 0


def raw(cfg):
    """A SAN peer that speaks to the provider directly: used to send what a good switch never would."""
    sw = wsd.Switch(table(cfg["provider"]))
    p = sw.providers[cfg["provider"]]
    ps = p.WSPSocket()
    p.WSPBind(ps, ("0.0.0.0", 0))
    ev = EventObject("raw")
    p.WSPEventSelect(ps, ev, FD_CONNECT)
    try:
        p.WSPConnect(ps, tuple(cfg["addr"]))
    except errors.WSAEWOULDBLOCK:
        pass
    ev.wait(10)
    ne = p.WSPEnumNetworkEvents(ps)
    assert ne.network_events & FD_CONNECT and not ne.error(FD_CONNECT), ne
    print(json.dumps({"connected": True}), flush=True)
    cq = CompletionQueue()
    bufs = [bytearray(16384) for _ in range(4)]
    for i, b in enumerate(bufs):
        p.WSPRecv(ps, [memoryview(b)], Overlapped(cq, i))
    for msg in cfg.get("send", []):
        if msg == "NEG":
            data = NegotiateMessage(posted_receives=4, receive_size=16384).pack()
        elif msg == "BIGNEG":
            data = NegotiateMessage(posted_receives=4, receive_size=16384).pack() + b"\0" * 300
        else:
            data = bytes.fromhex(msg)
        p.WSPSend(ps, [data], Overlapped(cq, "s"))
        if msg == "NEG":           # wait for the answer before going on
            deadline = time.monotonic() + 10
            got = False
            while not got and time.monotonic() < deadline:
                for c in cq.poll():
                    if c.overlapped.context != "s":
                        got = True
                time.sleep(0.01)
    if cfg.get("then") == "sleep":
        time.sleep(cfg.get("seconds", 5))
    elif cfg.get("then") == "die":
        os._exit(0)
    print(json.dumps({"done": True}), flush=True)
    time.sleep(cfg.get("linger", 0.5))
    sw.close()
    return 0


if __name__ == "__main__":
    cfg = json.loads(sys.argv[1])
    sys.exit(raw(cfg) if cfg.get("mode") == "raw" else app(cfg))
