"""Native ring throughput, side by side with memcpy, pyzmq ipc and TCP loopback.

    python bench/bench_ring.py [--quick]

``run(quick)`` returns a list of {"group", "name", "value", "unit", "note"}
dicts (bench/run.py collects them). All figures come from this run, on this
machine: cross-process numbers use fork (the child produces, this process
consumes) and start timing when the child is released through a pipe, so
process start-up is not counted.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import socket
import sys
import tempfile
import time

import wsd_ring
from wsd_ring import Ring

GROUP = "ring"
SMALL = 64
BIG = 64 * 1024
ctx = multiprocessing.get_context("fork")


def _row(name: str, value: float, unit: str, note: str) -> dict:
    return {"group": GROUP, "name": name, "value": float(value), "unit": unit, "note": note}


def _best(fn, repeat: int) -> float:
    """Best (shortest) of `repeat` timings of fn() -> seconds."""
    return min(fn() for _ in range(repeat))


# ------------------------------------------------------------------ same process


def ring_inproc_single(n: int) -> float:
    msg = b"m" * SMALL
    with Ring.create(1 << 20) as ring:
        push, pop = ring.push, ring.pop
        chunk = 1000
        t0 = time.perf_counter()
        for _ in range(n // chunk):
            for _ in range(chunk):
                push(msg)
            for _ in range(chunk):
                pop()
        return time.perf_counter() - t0


def ring_inproc_batch(n: int, batch: int = 256) -> float:
    msgs = [b"m" * SMALL] * batch
    buf = bytearray(SMALL * batch)
    with Ring.create(1 << 20) as ring:
        t0 = time.perf_counter()
        for _ in range(n // batch):
            ring.push_batch(msgs)
            ring.pop_batch_into(buf)
        return time.perf_counter() - t0


def ring_posted_spans(n: int, span: int = 16384, size: int = SMALL) -> float:
    """The switch's receive-ring pattern (wsd/core/session.py): 32 spans posted, each
    'received' into (a small write), committed with its real length, read in place,
    released in batches when a fresh span does not fit, and posted again."""
    msg = b"m" * size
    with Ring.create(1 << 20, eventfds=False) as ring:
        post, commit, release = ring.post, ring.commit_posted, ring.release
        spans = [post(span) for _ in range(32)]
        done = 0                                  # committed, read, not yet released
        sink = bytearray(size)
        t0 = time.perf_counter()
        for i in range(n):
            v = spans[i & 31]
            v[:size] = msg                        # the NIC's write
            commit((size,))
            sink[:] = v[:size]                    # the application's read, in place
            done += 1
            nv = post(span)
            if nv is None:                        # lazy release, as the session core does
                release(done)
                done = 0
                nv = post(span)
            spans[i & 31] = nv
        return time.perf_counter() - t0


def ring_inproc_big(total: int) -> float:
    msg = os.urandom(BIG)
    buf = bytearray(BIG * 8)
    with Ring.create(1 << 22) as ring:
        t0 = time.perf_counter()
        for _ in range(total // (BIG * 8)):
            for _ in range(8):
                ring.push(msg)
            ring.pop_batch_into(buf)
        return time.perf_counter() - t0


def memcpy_big(total: int) -> float:
    src = ctypes.create_string_buffer(os.urandom(BIG), BIG)
    dst = ctypes.create_string_buffer(BIG)
    memmove = ctypes.memmove
    t0 = time.perf_counter()
    for _ in range(total // BIG):
        memmove(dst, src, BIG)
    return time.perf_counter() - t0


def memcpy_big_cold(total: int, span: int = 64 << 20) -> float:
    """64 KiB copies walking through two 64 MiB buffers (beyond the caches)."""
    src = ctypes.create_string_buffer(span)
    dst = ctypes.create_string_buffer(span)
    ctypes.memset(src, 1, span)
    ctypes.memset(dst, 2, span)
    a, b = ctypes.addressof(src), ctypes.addressof(dst)
    memmove = ctypes.memmove
    blocks = span // BIG
    t0 = time.perf_counter()
    for i in range(total // BIG):
        off = (i % blocks) * BIG
        memmove(b + off, a + off, BIG)
    return time.perf_counter() - t0


# ------------------------------------------------------------------ two processes


def _xproc(child_fn, parent_fn) -> float:
    """Run child_fn(wait_go) in a forked child; it sets up, calls wait_go()
    and then produces. parent_fn(go) returns the elapsed seconds measured from
    the moment it releases the child with go()."""
    r, w = os.pipe()
    p = ctx.Process(target=_child_main, args=(child_fn, r))
    p.start()
    os.close(r)
    try:
        return parent_fn(lambda: os.write(w, b"g"))
    finally:
        os.close(w)
        p.join(60)
        if p.is_alive():
            p.kill()
            p.join()
        p.close()


def _child_main(child_fn, go_fd: int) -> None:
    child_fn(lambda: os.read(go_fd, 1))


def ring_xproc_single(n: int) -> float:
    msg = b"m" * SMALL
    with Ring.create(1 << 20) as ring:
        def child(wait_go):
            wait_go()
            for _ in range(n):
                ring.put(msg)
            ring.close()

        def parent(go):
            get = ring.get
            ring.peek(1)  # take the consumer role before the clock starts
            go()
            t0 = time.perf_counter()
            for _ in range(n):
                get()
            return time.perf_counter() - t0
        return _xproc(child, parent)


def ring_xproc_batch(n: int, batch: int = 256) -> float:
    msgs = [b"m" * SMALL] * batch
    with Ring.create(1 << 20) as ring:
        def child(wait_go):
            wait_go()
            sent = 0
            while sent < n:
                k = ring.push_batch(msgs)
                sent += k
                if k == 0:
                    ring.wait_writable(10, SMALL)
            ring.close()

        def parent(go):
            buf = bytearray(SMALL * 1024)
            got = 0
            ring.peek(1)
            go()
            t0 = time.perf_counter()
            while got < n:
                lens = ring.pop_batch_into(buf)
                if lens:
                    got += len(lens)
                else:
                    ring.wait_readable(10)
            return time.perf_counter() - t0
        return _xproc(child, parent)


def ring_xproc_big(total: int, zero_copy: bool) -> float:
    msg = os.urandom(BIG)
    count = total // BIG
    with Ring.create(1 << 22) as ring:
        def child(wait_go):
            wait_go()
            for _ in range(count):
                ring.put(msg)
            ring.close()

        def parent(go):
            buf = bytearray(BIG * 16)
            got = 0
            ring.peek(1)
            go()
            t0 = time.perf_counter()
            while got < count:
                if zero_copy:
                    views = ring.peek(64)
                    k = len(views)
                    del views
                    if k:
                        ring.release(k)
                else:
                    k = len(ring.pop_batch_into(buf))
                if k:
                    got += k
                else:
                    ring.wait_readable(10)
            return time.perf_counter() - t0
        return _xproc(child, parent)


def zmq_ipc(n: int, size: int) -> float | None:
    try:
        import zmq
    except ImportError:
        return None
    msg = os.urandom(size)
    with tempfile.TemporaryDirectory(prefix="wsd-bench-") as d:
        addr = f"ipc://{d}/pp"
        zc = zmq.Context()
        pull = zc.socket(zmq.PULL)
        pull.bind(addr)

        def child(wait_go):
            c = zmq.Context()
            s = c.socket(zmq.PUSH)
            s.connect(addr)
            s.send(b"hello")  # the connection is up once the parent sees this
            wait_go()
            for _ in range(n):
                s.send(msg)
            s.close(linger=10_000)
            c.term()

        def parent(go):
            recv = pull.recv
            assert recv() == b"hello"
            go()
            t0 = time.perf_counter()
            for _ in range(n):
                recv()
            return time.perf_counter() - t0
        try:
            # The child makes its own context; ours is never used in the child.
            return _xproc(child, parent)
        finally:
            pull.close(linger=0)
            zc.term()


def tcp_loopback(total: int) -> float:
    srv = socket.create_server(("127.0.0.1", 0))
    addr = srv.getsockname()
    block = os.urandom(BIG)

    def child(wait_go):
        with socket.create_connection(addr) as c:
            wait_go()
            for _ in range(total // BIG):
                c.sendall(block)

    def parent(go):
        conn, _ = srv.accept()
        go()
        buf = bytearray(BIG)
        got = 0
        t0 = time.perf_counter()
        with conn:
            while got < total:
                n = conn.recv_into(buf)
                if not n:
                    break
                got += n
        return time.perf_counter() - t0
    try:
        return _xproc(child, parent)
    finally:
        srv.close()


# ------------------------------------------------------------------ run


def run(quick: bool = False) -> list[dict]:
    n_small = 50_000 if quick else 400_000
    n_zmq = 20_000 if quick else 200_000
    big_total = (64 if quick else 1024) * 1024 * 1024
    rep = 1 if quick else 3
    rows: list[dict] = []
    gb = 1e9

    t = _best(lambda: ring_inproc_single(n_small), rep)
    rows.append(_row("ring 64 B, one per call, same process", n_small / t, "msg/s",
                     "push() x1000 then pop() x1000, one Python call per message"))
    t = _best(lambda: ring_inproc_batch(n_small), rep)
    rows.append(_row("ring 64 B, batched 256, same process", n_small / t, "msg/s",
                     "push_batch(256) + pop_batch_into, one C call each"))
    t = _best(lambda: ring_posted_spans(n_small), rep)
    rows.append(_row("receive ring 64 B, posted spans", n_small / t, "msg/s",
                     "post(16 KiB) + write + commit_posted + read in place + lazy release, per message"))
    t = _best(lambda: ring_xproc_single(n_small), rep)
    rows.append(_row("ring 64 B, one per call, two processes", n_small / t, "msg/s",
                     "child put() each, parent get() each; eventfd waits"))
    t = _best(lambda: ring_xproc_batch(n_small), rep)
    rows.append(_row("ring 64 B, batched 256, two processes", n_small / t, "msg/s",
                     "child push_batch(256), parent pop_batch_into"))
    t = _best(lambda: ring_inproc_big(big_total), rep)
    rows.append(_row("ring 64 KiB, same process", big_total / t / gb, "GB/s",
                     "push (copy in) + pop_batch_into (copy out), 8 per batch"))
    t = _best(lambda: ring_xproc_big(big_total, zero_copy=False), rep)
    rows.append(_row("ring 64 KiB, two processes, copy out", big_total / t / gb, "GB/s",
                     "child push (copy in), parent pop_batch_into (copy out)"))
    t = _best(lambda: ring_xproc_big(big_total, zero_copy=True), rep)
    rows.append(_row("ring 64 KiB, two processes, zero-copy read", big_total / t / gb, "GB/s",
                     "child push (copy in), parent peek/release (views, not read)"))
    t = _best(lambda: memcpy_big(big_total), rep)
    rows.append(_row("memcpy 64 KiB, cache-hot", big_total / t / gb, "GB/s",
                     "ctypes.memmove, one thread, same two 64 KiB buffers"))
    t = _best(lambda: memcpy_big_cold(big_total), rep)
    rows.append(_row("memcpy 64 KiB, through 64 MiB", big_total / t / gb, "GB/s",
                     "ctypes.memmove, one thread, walking two 64 MiB buffers"))
    t = zmq_ipc(n_zmq, SMALL)
    if t is not None:
        rows.append(_row("pyzmq ipc PUSH/PULL 64 B", n_zmq / t, "msg/s",
                         "send()/recv() one per call, two processes"))
        n_big = big_total // BIG // (4 if not quick else 1)
        t = zmq_ipc(n_big, BIG)
        rows.append(_row("pyzmq ipc PUSH/PULL 64 KiB", n_big * BIG / t / gb, "GB/s",
                         "send()/recv() one per call, two processes"))
    t = tcp_loopback(big_total)
    rows.append(_row("TCP loopback 64 KiB", big_total / t / gb, "GB/s",
                     "sendall(64 KiB) / recv_into, two processes"))
    return rows


def _table(rows: list[dict]) -> str:
    w = max(len(r["name"]) for r in rows)
    lines = [f"{'benchmark':<{w}}  {'value':>14}  unit   note", "-" * (w + 60)]
    for r in rows:
        v = r["value"]
        vs = f"{v:,.0f}" if v >= 1000 else f"{v:.3f}"
        lines.append(f"{r['name']:<{w}}  {vs:>14}  {r['unit']:<5}  {r['note']}")
    return "\n".join(lines)


if __name__ == "__main__":
    quick = "--quick" in sys.argv[1:]
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"wsd_ring {wsd_ring.__file__}, {os.cpu_count()} CPUs, load average {load}, quick={quick}")
    print(_table(run(quick)))
