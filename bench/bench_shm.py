"""The ``shm`` SAN provider through the switch, side by side with what it stands in for.

    python bench/bench_shm.py [--quick]

Measured in one run, sender and receiver in different processes (a forked
child sends for a time window, this process receives until end of stream and
checks the byte count):

* **64 B messages/s, one per call**: ``sendall(64 B)`` per message.
* **64 B messages/s, batched**: ``sendall`` of a buffer of 255 records of 64 B
  (16,320 B: one session DATA message with the default 16 KiB receive
  buffers); a "message" is a 64 B record.  Raw pyzmq sends the same buffer
  as one message (zmq has no cheaper batching for tiny messages from Python).
* **64 KiB GB/s**: ``sendall(64 KiB)`` per call.  On SAN paths 64 KiB goes by
  RDMA read with the switch's default session (threshold 64 KiB); the
  ``switch shm (inline)`` path raises the session's receive size to 128 KiB and
  the threshold above 64 KiB, so 64 KiB goes inline in one message.

Paths: the switch over ``shm``, the switch over ``tcp``, a plain Python socket
on TCP loopback (``TCP_NODELAY``), raw pyzmq PUSH/PULL over ipc, and memcpy
of the same buffer in this process (``memoryview`` slice assignment).

Every figure is the median over the repetitions (3 quick, 5 full); each
repetition runs every path once, interleaved, because the machine is shared.
``run(quick)`` returns rows {"group": "shm", "name", "value", "unit", "note"}.
"""
from __future__ import annotations

import logging
import os
import socket
import statistics
import sys
import tempfile
import time

import zmq

import wsd
# the forked-child harness, the grace period and the error type are bench_switch's
from bench_switch import GRACE, BenchError, _Child  # noqa: E402

GROUP = "shm"
HOST = "127.0.0.1"
SMALL = 64
BATCH = 255                      # 64 B records per sendall in the batched rows
BIG = 64 * 1024

INLINE_CFG = dict(recv_size=(128 << 10) + 64, rdma_threshold=(128 << 10) + 1)


def _switch(path: str) -> wsd.Switch:
    if path == "switch-tcp":
        return wsd.Switch([])
    if path == "switch-shm-inline":
        cfg = wsd.SwitchConfig(session=wsd.SessionConfig(**INLINE_CFG))
        return wsd.Switch([("127.0.0.0/8", "shm")], config=cfg, provider_options={"shm": {"ring_bytes": 4 << 20}})
    return wsd.Switch([("127.0.0.0/8", "shm")])


def _nodelay(s):
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def _close(*objs):
    for o in objs:
        if o is not None:
            o.close()


# ---------------------------------------------------------------- stream paths (switch, raw TCP)

def _sender(conn, path: str, chunk: int, window: float) -> None:
    port = conn.recv()
    sw = None
    if path == "raw-tcp":
        c = _nodelay(socket.create_connection((HOST, port), timeout=GRACE))
    else:
        sw = _switch(path)
        c = sw.socket()
        c.settimeout(GRACE)
        c.connect((HOST, port))
        want = "tcp" if path == "switch-tcp" else "shm"
        if c.path != want:
            raise BenchError(f"{path}: connection went over {c.path}")
    conn.send("ready")
    conn.recv()
    msg = os.urandom(chunk)
    mask = 15 if chunk >= 4096 else 1023
    deadline = time.perf_counter() + window
    sent = 0
    sendall = c.sendall
    while True:
        sendall(msg)
        sent += 1
        if not sent & mask and time.perf_counter() >= deadline:
            break
    conn.send(sent)
    c.close()
    _close(sw)


def stream(path: str, chunk: int, window: float) -> float:
    """Bytes/s received from a child that sends `chunk`-byte buffers."""
    child = _Child(_sender, path, chunk, window)
    sw = lst = s = None
    try:
        if path == "raw-tcp":
            lst = socket.create_server((HOST, 0))
            port = lst.getsockname()[1]
        else:
            sw = _switch(path)
            lst = sw.socket()
            lst.bind((HOST, 0))
            lst.listen()
            port = lst.getsockname()[1]
        lst.settimeout(GRACE)
        child.pc.send(port)
        s, _ = lst.accept()
        if path == "raw-tcp":
            _nodelay(s)
        s.settimeout(GRACE)
        child.expect()
        buf = bytearray(1 << 20)
        recv_into = s.recv_into
        total = 0
        child.pc.send("go")
        t0 = time.perf_counter()
        while True:
            k = recv_into(buf)
            if not k:
                break
            total += k
        t = time.perf_counter() - t0
        sent = child.expect()
        if total != sent * chunk:
            raise BenchError(f"received {total} bytes, sent {sent * chunk}")
        return total / t
    finally:
        _close(s, lst)
        child.finish()
        _close(sw)


# ---------------------------------------------------------------- raw pyzmq ipc

def _zmq_sender(conn, chunk: int, window: float) -> None:
    addr = conn.recv()
    zc = zmq.Context()
    s = zc.socket(zmq.PUSH)
    s.connect(addr)
    s.send(b"hello")
    conn.send("ready")
    conn.recv()
    msg = os.urandom(chunk)
    mask = 15 if chunk >= 4096 else 1023
    deadline = time.perf_counter() + window
    send = s.send
    sent = 0
    while True:
        send(msg)
        sent += 1
        if not sent & mask and time.perf_counter() >= deadline:
            break
    send(b"")
    conn.send(sent)
    conn.recv()
    s.close(linger=int(GRACE * 1000))
    zc.term()


def zmq_stream(chunk: int, window: float) -> float:
    with tempfile.TemporaryDirectory(prefix="wsd-bench-shm-") as d:
        addr = f"ipc://{d}/push"
        child = _Child(_zmq_sender, chunk, window)
        zc = zmq.Context()
        pull = zc.socket(zmq.PULL)
        try:
            pull.setsockopt(zmq.RCVTIMEO, int(GRACE * 1000))
            pull.bind(addr)
            child.pc.send(addr)
            if pull.recv() != b"hello":
                raise BenchError("unexpected first message")
            child.expect()
            recv = pull.recv
            total = 0
            child.pc.send("go")
            t0 = time.perf_counter()
            while True:
                m = recv(copy=False)
                if not len(m):
                    break
                total += len(m)
            t = time.perf_counter() - t0
            sent = child.expect()
            child.pc.send("done")
            if total != sent * chunk:
                raise BenchError(f"received {total} bytes, sent {sent * chunk}")
            return total / t
        except zmq.Again:
            raise BenchError("pyzmq receive timed out") from None
        finally:
            pull.close(linger=0)
            child.finish()
            zc.term()


def memcpy(chunk: int, window: float) -> float:
    src = memoryview(os.urandom(chunk))
    dst = memoryview(bytearray(chunk))
    n = 0
    t0 = time.perf_counter()
    deadline = t0 + window
    while True:
        for _ in range(256):
            dst[:] = src
        n += 256
        if time.perf_counter() >= deadline:
            break
    return n * chunk / (time.perf_counter() - t0)


# ---------------------------------------------------------------- the table

PATHS = ("switch-shm", "switch-tcp", "raw-tcp", "raw-zmq", "memcpy")
METRICS = {
    # key: (chunk bytes, record size, unit, paths)
    "64 B msg/s, one per call": (SMALL, SMALL, "msg/s", ("switch-shm", "switch-tcp", "raw-tcp", "raw-zmq")),
    "64 B msg/s, batched": (SMALL * BATCH, SMALL, "msg/s", ("switch-shm", "switch-tcp", "raw-tcp", "raw-zmq",
                                                           "memcpy")),
    "64 KiB GB/s": (BIG, BIG, "GB/s", ("switch-shm", "switch-shm-inline", "switch-tcp", "raw-tcp", "raw-zmq",
                                      "memcpy")),
}


def measure(path: str, chunk: int, window: float) -> float:
    if path == "raw-zmq":
        return zmq_stream(chunk, window)
    if path == "memcpy":
        return memcpy(chunk, window)
    return stream(path, chunk, window)


def run(quick: bool = False) -> list[dict]:
    reps = 3 if quick else 5
    window = 0.4 if quick else 1.2
    logging.getLogger("wsd").setLevel(logging.ERROR)
    samples: dict[tuple, list[float]] = {}
    failures: dict[tuple, str] = {}
    for _ in range(reps):
        for metric, (chunk, rec, unit, paths) in METRICS.items():
            for path in paths:
                key = (metric, path)
                try:
                    bps = measure(path, chunk, window)
                except (BenchError, OSError, wsd.WsaError) as e:
                    failures[key] = f"{type(e).__name__}: {e}"
                    continue
                samples.setdefault(key, []).append(bps / rec if unit == "msg/s" else bps / 1e9)
    rows = []
    med = {}
    for metric, (chunk, rec, unit, paths) in METRICS.items():
        for path in paths:
            key = (metric, path)
            v = samples.get(key)
            if not v:
                rows.append(_row(f"{metric}, {path}", None, unit, "FAILED: " + failures.get(key, "no sample")))
                continue
            m = statistics.median(v)
            med[key] = m
            how = {"64 B msg/s, one per call": "sendall(64 B) per call",
                   "64 B msg/s, batched": f"sendall of {BATCH} x 64 B records per call",
                   "64 KiB GB/s": "sendall(64 KiB) per call"}[metric]
            if path == "switch-shm" and metric == "64 KiB GB/s":
                how += " (default session: the shm provider asks for 64 KiB inline, RDMA from 256 KiB)"
            if path == "memcpy":
                how = f"memoryview copy of the same {chunk} B buffer in this process (cache-resident)"
            if path == "switch-shm-inline":
                how += " (session recv_size 128 KiB, 64 KiB inline)"
            note = f"{how}; median of {len(v)}/{reps} (min {_fmt(min(v))}, max {_fmt(max(v))})"
            if key in failures:
                note += f"; a repetition failed: {failures[key]}"
            rows.append(_row(f"{metric}, {path}", m, unit, note))
    for metric, path, goal in (("64 KiB GB/s", "switch-shm", 5.0), ("64 KiB GB/s", "switch-shm-inline", 5.0),
                               ("64 B msg/s, batched", "switch-shm", None),
                               ("64 B msg/s, one per call", "switch-shm", None)):
        a, b = med.get((metric, path)), med.get((metric, "raw-tcp"))
        if a and b:
            rows.append(_row(f"ratio {metric}, {path} / raw TCP", a / b, "x",
                             f"goal >= {goal}" if goal else "higher is better"))
    return rows


def _fmt(v: float) -> str:
    return f"{v:,.3g}" if v < 100 else f"{v:,.0f}"


def _row(name, value, unit, note) -> dict:
    return {"group": GROUP, "name": name, "value": value, "unit": unit, "note": note}


def main() -> None:
    quick = "--quick" in sys.argv
    for r in run(quick):
        v = "FAILED" if r["value"] is None else _fmt(r["value"])
        print(f"{r['name']:<48} {v:>14} {r['unit']:<6} {r['note']}")


if __name__ == "__main__":
    main()
