"""The other process of the shm tests: a connecting SAN peer at the provider SPI level.

Usage: python child.py JSON  ({"mode": ..., "port": ..., "dir": ...}); it prints JSON lines and reads
commands from stdin.  Modes:

* ``rdma``: register a MEM_READ region (known bytes) and a MEM_WRITE region, send both descriptors,
  wait for "done", deregister (the write region is copied back) and print the written bytes' digest.
* ``die``: register a region, send a few messages, print "ready", then sleep (the test SIGKILLs it).
"""
import hashlib
import json
import os
import sys
import time

import wsd
from wsd import errors
from wsd.events import CompletionQueue, EventObject, Overlapped
from wsd.spi import FD_CONNECT, MEM_READ, MEM_WRITE
from wsd_shm import ShmProvider


def pattern(n: int, seed: int) -> bytes:
    return hashlib.shake_256(f"{seed}:{n}".encode()).digest(n)


def say(**kw):
    print(json.dumps(kw), flush=True)


def connect(cfg):
    sw = wsd.Switch()
    p = ShmProvider(shm_dir=cfg["dir"])
    p.WSPStartup(sw)
    s = p.WSPSocket()
    p.WSPBind(s, ("0.0.0.0", 0))
    ev = EventObject("child")
    p.WSPEventSelect(s, ev, FD_CONNECT)
    try:
        p.WSPConnect(s, ("127.0.0.1", cfg["port"]))
    except errors.WSAEWOULDBLOCK:
        pass
    ev.wait(10)
    ne = p.WSPEnumNetworkEvents(s)
    assert ne.network_events & FD_CONNECT and not ne.error(FD_CONNECT), ne
    return sw, p, s


def send(p, s, cq, data):
    p.WSPSend(s, [data], Overlapped(cq, "send"))


def main(cfg):
    sw, p, s = connect(cfg)
    cq = CompletionQueue()
    if cfg["mode"] == "rdma":
        size = cfg["size"]
        src = bytearray(pattern(size, 1))
        dst = bytearray(size)
        d_read = p.WSPRegisterRdmaMemory(s, src, MEM_READ)
        d_write = p.WSPRegisterRdmaMemory(s, dst, MEM_WRITE)
        send(p, s, cq, d_read)
        send(p, s, cq, d_write)
        say(sent=True, segments=sorted(n for n in os.listdir("/dev/shm") if n.startswith(f"wsd-shm-{os.getpid()}-")))
        assert sys.stdin.readline().strip() == "done"
        p.WSPDeregisterRdmaMemory(s, d_read)
        p.WSPDeregisterRdmaMemory(s, d_write)
        say(written=hashlib.sha256(dst).hexdigest())
    elif cfg["mode"] == "die":
        region = bytearray(pattern(4096, 2))
        p.WSPRegisterRdmaMemory(s, region, MEM_READ)
        for i in range(cfg.get("messages", 5)):
            send(p, s, cq, b"m%d" % i)
        say(ready=True, pid=os.getpid())
        time.sleep(60)
    sys.stdin.readline()
    p.WSPCloseSocket(s)
    p.WSPCleanup()
    sw.close()


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
