"""The switch side by side with the plain transports it stands in for.

    python bench/bench_switch.py [--quick]

Four things are measured, each over several paths, all in this one run:

* **accept rate** (connections/s): a child process does connect + close in a
  loop; this process accepts and closes.  Paths: the switch over ``tcp``, the
  switch over ``zmq`` (emulated SAN over ipc, so every connection is a SAN
  connection request, the switch's condition function, and the session
  negotiation), and a plain Python socket accept loop on loopback.
* **64 B throughput** (messages/s) and **64 KiB throughput** (MB/s): a child
  sends for a fixed time, this process receives until end of stream.  Paths:
  switch ``tcp``, switch ``zmq``, raw TCP loopback, raw pyzmq PUSH/PULL over
  ipc.
* **ping-pong latency** (µs, median and p99) with 64 B: this process sends and
  waits for the child's echo.  Same four paths; raw pyzmq is REQ/REP over ipc.
* **ratios**: switch-zmq / raw-pyzmq and switch-tcp / raw-TCP for each metric
  (the accept rate has no raw-pyzmq counterpart: its zmq ratio is against raw
  TCP).

The machine is shared and noisy: every repetition runs every path once,
interleaved, and the figures are medians over the repetitions.  Each
measurement is bounded by a time window (the child stops sending/connecting
when it ends) plus a grace period after which it is abandoned and reported as
failed.  Children are forked before this process builds the measurement's
Switch or ZeroMQ context, build their own after the fork, and are released
through a pipe once set up, so process and switch start-up are not timed.  Loopback and ipc only.

``run(quick)`` returns rows {"group", "name", "value", "unit", "note"} for
bench/run.py; a measurement that fails gives ``value`` None and the reason in
``note``.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import socket
import statistics
import sys
import tempfile
import time

import zmq

import wsd

GROUP = "switch"
SMALL = 64
BIG = 64 * 1024
SAN_TABLE = [("127.0.0.0/8", "zmq")]
HOST = "127.0.0.1"
GRACE = 20.0          # seconds past a window before a measurement is abandoned
CTX = multiprocessing.get_context("fork")

SWITCH_PATHS = ("switch-tcp", "switch-zmq")


class BenchError(RuntimeError):
    """A measurement could not be completed (child died, timed out, bytes lost)."""


# ---------------------------------------------------------------- helpers


def _switch(path: str) -> wsd.Switch:
    return wsd.Switch(SAN_TABLE if path == "switch-zmq" else [])


def _provider(path: str) -> str:
    return "zmq" if path == "switch-zmq" else "tcp"


def _nodelay(s: socket.socket) -> socket.socket:
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def _listen(path: str):
    """(switch or None, listening socket, port) for a stream path."""
    if path == "raw-tcp":
        s = socket.create_server((HOST, 0), backlog=4096)
        return None, s, s.getsockname()[1]
    sw = _switch(path)
    lst = sw.socket()
    lst.bind((HOST, 0))
    lst.listen(4096)
    return sw, lst, lst.getsockname()[1]


def _connect(path: str, port: int):
    """(switch or None, connected socket) for a stream path; checks the path taken."""
    if path == "raw-tcp":
        return None, _nodelay(socket.create_connection((HOST, port), timeout=GRACE))
    sw = _switch(path)
    c = sw.socket()
    c.settimeout(GRACE)
    c.connect((HOST, port))
    if c.path != _provider(path):
        raise BenchError(f"{path}: connection went over {c.path!r}")
    return sw, c


def _accept(path: str, lst):
    lst.settimeout(GRACE)
    s, _ = lst.accept()
    if path == "raw-tcp":
        _nodelay(s)
        s.settimeout(GRACE)
    else:
        if s.path != _provider(path):
            raise BenchError(f"{path}: accepted connection is on {s.path!r}")
        s.settimeout(GRACE)
    return s


def _recv_exact(sock, view) -> bool:
    """Fill view; False at end of stream."""
    got, n = 0, len(view)
    while got < n:
        k = sock.recv_into(view[got:])
        if not k:
            return False
        got += k
    return True


def _child_main(fn, conn, args) -> None:
    try:
        fn(conn, *args)
    except (EOFError, BrokenPipeError):
        os._exit(3)         # the parent gave up on this measurement and closed the pipe


class _Child:
    """A forked child running fn(conn, *args), with a pipe to this process.

    Created before this process makes its switch or ZeroMQ context for the
    measurement, so the fork never copies their threads' state; the child is
    told the port or endpoint through the pipe (``conn.recv()``)."""

    def __init__(self, fn, *args):
        self.pc, cc = CTX.Pipe()
        self.p = CTX.Process(target=_child_main, args=(fn, cc, args), daemon=True)
        self.p.start()
        cc.close()

    def expect(self, timeout: float = GRACE):
        if not self.pc.poll(timeout):
            raise BenchError(f"child said nothing for {timeout:.0f} s (exit code {self.p.exitcode})")
        try:
            return self.pc.recv()
        except EOFError:
            self.p.join(1)
            raise BenchError(f"child exited (code {self.p.exitcode})") from None

    def go(self) -> None:
        self.pc.send("go")

    def finish(self) -> None:
        self.p.join(10)
        if self.p.is_alive():
            self.p.kill()
            self.p.join()
        self.pc.close()
        self.p.close()


def _close_all(*objs) -> None:
    for o in objs:
        if o is not None:
            o.close()


# ---------------------------------------------------------------- accept rate


def _accept_child(conn, path: str, limit: int, window: float) -> None:
    port = conn.recv()
    sw = _switch(path) if path != "raw-tcp" else None
    addr = (HOST, port)
    conn.send("ready")
    conn.recv()
    deadline = time.perf_counter() + window
    done = resets = 0
    while done < limit and time.perf_counter() < deadline:
        c = socket.socket() if sw is None else sw.socket()
        c.settimeout(GRACE)
        try:
            c.connect(addr)
        except ConnectionResetError:
            # The server accepts and closes at once; on the SAN path the close can
            # overtake the end of connect (reported to the lead): the server did
            # accept this connection, so it counts, and the count is reported.
            resets += 1
        c.close()
        done += 1
    conn.send((done, resets))
    if sw is not None:
        sw.close()


def accept_rate(path: str, limit: int, window: float) -> tuple[float, float]:
    """(connections/s, fraction of connects that raised ConnectionResetError)."""
    child = _Child(_accept_child, path, limit, window)
    sw = lst = None
    try:
        sw, lst, port = _listen(path)
        child.pc.send(port)
        child.expect()
        lst.settimeout(0.05)
        child.go()
        t0 = time.perf_counter()
        t_last = t0
        hard = t0 + window + GRACE
        accepted, target, resets = 0, None, 0
        while target is None or accepted < target:
            if time.perf_counter() > hard:
                raise BenchError(f"accepted {accepted} of {target} within {window + GRACE:.0f} s")
            try:
                s, _ = lst.accept()
            except TimeoutError:
                if target is None and child.pc.poll():
                    target, resets = child.expect()
                continue
            t_last = time.perf_counter()
            accepted += 1
            s.close()
            if target is None and not accepted & 63 and child.pc.poll():
                target, resets = child.expect()
        if accepted < 2:
            raise BenchError("fewer than 2 connections in the window")
        return accepted / (t_last - t0), resets / accepted
    finally:
        _close_all(lst)
        child.finish()
        _close_all(sw)


# ---------------------------------------------------------------- throughput


def _stream_sender(conn, path: str, size: int, limit: int, window: float) -> None:
    sw, c = _connect(path, conn.recv())
    conn.send("ready")
    conn.recv()
    msg = os.urandom(size)
    mask = 15 if size >= 4096 else 1023
    deadline = time.perf_counter() + window
    sent = 0
    sendall = c.sendall
    while sent < limit:
        sendall(msg)
        sent += 1
        if not sent & mask and time.perf_counter() >= deadline:
            break
    conn.send(sent)
    c.close()
    _close_all(sw)


def stream_throughput(path: str, size: int, limit: int, window: float) -> tuple[float, float]:
    """(messages/s, bytes/s) from a child sending `size`-byte messages on a stream path."""
    child = _Child(_stream_sender, path, size, limit, window)
    sw = lst = s = None
    try:
        sw, lst, port = _listen(path)
        child.pc.send(port)
        s = _accept(path, lst)
        child.expect()
        buf = bytearray(1 << 20)
        recv_into = s.recv_into
        total = 0
        child.go()
        t0 = time.perf_counter()
        while True:
            k = recv_into(buf)
            if not k:
                break
            total += k
        t = time.perf_counter() - t0
        sent = child.expect()
        if total != sent * size:
            raise BenchError(f"received {total} bytes, sent {sent * size}")
        return sent / t, total / t
    finally:
        _close_all(s, lst)
        child.finish()
        _close_all(sw)


def _zmq_sender(conn, size: int, limit: int, window: float) -> None:
    addr = conn.recv()
    zc = zmq.Context()
    s = zc.socket(zmq.PUSH)
    s.connect(addr)
    s.send(b"hello")            # the connection is up once the receiver has this
    conn.send("ready")
    conn.recv()
    msg = os.urandom(size)
    mask = 15 if size >= 4096 else 1023
    deadline = time.perf_counter() + window
    send = s.send
    sent = 0
    while sent < limit:
        send(msg)
        sent += 1
        if not sent & mask and time.perf_counter() >= deadline:
            break
    send(b"")
    conn.send(sent)
    # Close only once the receiver has everything: libzmq can drop queued ipc
    # messages at close even with LINGER set (zeromq/libzmq#4660, #1922).
    conn.recv()
    s.close(linger=int(GRACE * 1000))
    zc.term()


def zmq_throughput(size: int, limit: int, window: float) -> tuple[float, float]:
    with tempfile.TemporaryDirectory(prefix="wsd-bench-") as d:
        addr = f"ipc://{d}/push"
        child = _Child(_zmq_sender, size, limit, window)
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
            n = total = 0
            child.go()
            t0 = time.perf_counter()
            while True:
                m = recv()
                if not m:
                    break
                n += 1
                total += len(m)
            t = time.perf_counter() - t0
            sent = child.expect()
            child.pc.send("done")
            if n != sent or total != sent * size:
                raise BenchError(f"received {n} messages, sent {sent}")
            return n / t, total / t
        except zmq.Again:
            raise BenchError(f"pyzmq receive timed out after {GRACE:.0f} s") from None
        finally:
            pull.close(linger=0)
            child.finish()
            zc.term()


# ---------------------------------------------------------------- latency


def _stream_echo(conn, path: str) -> None:
    sw, c = _connect(path, conn.recv())
    conn.send("ready")
    buf = bytearray(SMALL)
    view = memoryview(buf)
    while _recv_exact(c, view):
        c.sendall(buf)
    c.close()
    _close_all(sw)


def _percentiles(samples: list[float]) -> tuple[float, float]:
    samples.sort()
    med = statistics.median(samples)
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
    return med, p99


def stream_latency(path: str, limit: int, window: float, warmup: int = 50) -> tuple[float, float]:
    """(median, p99) round trip in µs for 64 B ping-pong on a stream path."""
    child = _Child(_stream_echo, path)
    sw = lst = s = None
    try:
        sw, lst, port = _listen(path)
        child.pc.send(port)
        s = _accept(path, lst)
        child.expect()
        msg = os.urandom(SMALL)
        view = memoryview(bytearray(SMALL))
        clock = time.perf_counter
        samples: list[float] = []
        for _ in range(warmup):
            s.sendall(msg)
            if not _recv_exact(s, view):
                raise BenchError("echo child closed early")
        deadline = clock() + window
        while len(samples) < limit:
            t0 = clock()
            s.sendall(msg)
            if not _recv_exact(s, view):
                raise BenchError("echo child closed early")
            t1 = clock()
            samples.append(t1 - t0)
            if t1 >= deadline:
                break
        if bytes(view) != msg:
            raise BenchError("echo returned other bytes")
        return tuple(x * 1e6 for x in _percentiles(samples))
    finally:
        _close_all(s, lst)
        child.finish()
        _close_all(sw)


def _zmq_echo(conn) -> None:
    addr = conn.recv()
    zc = zmq.Context()
    s = zc.socket(zmq.REP)
    s.setsockopt(zmq.RCVTIMEO, int(GRACE * 1000))
    s.connect(addr)
    conn.send("ready")
    try:
        while True:
            m = s.recv()
            s.send(m)
            if not m:
                break
    except zmq.Again:
        pass
    s.close(linger=1000)
    zc.term()


def zmq_latency(limit: int, window: float, warmup: int = 50) -> tuple[float, float]:
    with tempfile.TemporaryDirectory(prefix="wsd-bench-") as d:
        addr = f"ipc://{d}/rep"
        child = _Child(_zmq_echo)
        zc = zmq.Context()
        req = zc.socket(zmq.REQ)
        try:
            req.setsockopt(zmq.RCVTIMEO, int(GRACE * 1000))
            req.bind(addr)
            child.pc.send(addr)
            child.expect()
            msg = os.urandom(SMALL)
            send, recv = req.send, req.recv
            clock = time.perf_counter
            for _ in range(warmup):
                send(msg)
                recv()
            samples: list[float] = []
            deadline = clock() + window
            while len(samples) < limit:
                t0 = clock()
                send(msg)
                r = recv()
                t1 = clock()
                samples.append(t1 - t0)
                if t1 >= deadline:
                    break
            if r != msg:
                raise BenchError("echo returned other bytes")
            send(b"")
            recv()
            return tuple(x * 1e6 for x in _percentiles(samples))
        except zmq.Again:
            raise BenchError(f"pyzmq echo timed out after {GRACE:.0f} s") from None
        finally:
            req.close(linger=0)
            child.finish()
            zc.term()


# ---------------------------------------------------------------- run


class _CountWarnings(logging.Handler):
    """Counts (and keeps off the terminal) the switch's log lines during the bench."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.count = 0
        self.last = ""

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        self.last = record.getMessage()


PATH_LABEL = {"switch-tcp": "switch tcp", "switch-zmq": "switch zmq", "raw-tcp": "raw TCP",
              "raw-zmq": "raw pyzmq"}


def _measurements(quick: bool):
    """(key, path, fn) for one repetition, in interleaved order."""
    w = 0.3 if quick else 1.2
    out = []
    for path in ("switch-tcp", "switch-zmq", "raw-tcp"):
        out.append(("accept", path, lambda p=path: dict(zip(("rate", "resets"), accept_rate(p, 50_000, w)))))
    for size, key in ((SMALL, "tput64"), (BIG, "tput64k")):
        limit = 5_000_000 if size == SMALL else 200_000
        for path in ("switch-tcp", "switch-zmq", "raw-tcp"):
            out.append((key, path, lambda p=path, s=size, n=limit: dict(
                zip(("msgs", "bytes"), stream_throughput(p, s, n, w)))))
        out.append((key, "raw-zmq", lambda s=size, n=limit: dict(
            zip(("msgs", "bytes"), zmq_throughput(s, n, w)))))
    for path in ("switch-tcp", "switch-zmq", "raw-tcp"):
        out.append(("latency", path, lambda p=path: dict(zip(("med", "p99"), stream_latency(p, 200_000, w)))))
    out.append(("latency", "raw-zmq", lambda: dict(zip(("med", "p99"), zmq_latency(200_000, w)))))
    return out


def run(quick: bool = False) -> list[dict]:
    reps = 3 if quick else 5
    results: dict[tuple[str, str], list[dict]] = {}
    failures: dict[tuple[str, str], str] = {}
    wsd_log = logging.getLogger("wsd")
    counter = _CountWarnings()
    saved = wsd_log.propagate
    wsd_log.addHandler(counter)
    wsd_log.propagate = False
    try:
        for _ in range(reps):
            for key, path, fn in _measurements(quick):
                try:
                    results.setdefault((key, path), []).append(fn())
                except (OSError, EOFError, zmq.ZMQError, BenchError) as e:
                    failures[(key, path)] = f"{type(e).__name__}: {e}"
    finally:
        wsd_log.removeHandler(counter)
        wsd_log.propagate = saved
    return _rows(results, failures, reps, counter)


def _rows(results, failures, reps, counter) -> list[dict]:
    rows: list[dict] = []
    med: dict[tuple[str, str, str], float] = {}

    def add(key, path, field, name, unit, note, scale=1.0):
        vals = [r[field] * scale for r in results.get((key, path), [])]
        if not vals:
            rows.append(_row(name, None, unit, "FAILED: " + failures.get((key, path), "no result")))
            return
        m = statistics.median(vals)
        med[(key, path, field)] = m
        spread = f"median of {len(vals)}/{reps} (min {_fmt(min(vals))}, max {_fmt(max(vals))})"
        if (key, path) in failures:
            spread += "; a repetition failed: " + failures[(key, path)]
        rows.append(_row(name, m, unit, f"{note}; {spread}"))

    for path in ("switch-tcp", "switch-zmq", "raw-tcp"):
        runs = results.get(("accept", path), [])
        resets = max((r["resets"] for r in runs), default=0.0)
        add("accept", path, "rate", f"accept rate, {PATH_LABEL[path]}", "conn/s",
            "child connect+close loop, here accept+close" +
            (", incl. SAN connect request + session negotiation" if path == "switch-zmq" else "") +
            (f"; up to {resets:.1%} of connects raised WSAECONNRESET after the accept" if resets else ""))
    for path in ("switch-tcp", "switch-zmq", "raw-tcp", "raw-zmq"):
        add("tput64", path, "msgs", f"64 B throughput, {PATH_LABEL[path]}", "msg/s",
            "child sendall(64 B) per message, here recv into 1 MiB" if path != "raw-zmq"
            else "PUSH/PULL ipc, send()/recv() per message")
    for path in ("switch-tcp", "switch-zmq", "raw-tcp", "raw-zmq"):
        add("tput64k", path, "bytes", f"64 KiB throughput, {PATH_LABEL[path]}", "MB/s",
            ("child sendall(64 KiB), here recv into 1 MiB" +
             (" (64 KiB goes by RDMA read in the session)" if path == "switch-zmq" else ""))
            if path != "raw-zmq" else "PUSH/PULL ipc, send()/recv() per message", scale=1e-6)
    for path in ("switch-tcp", "switch-zmq", "raw-tcp", "raw-zmq"):
        note = "REQ/REP ipc" if path == "raw-zmq" else "sendall 64 B, read 64 B echo"
        add("latency", path, "med", f"64 B ping-pong median, {PATH_LABEL[path]}", "us", note)
        add("latency", path, "p99", f"64 B ping-pong p99, {PATH_LABEL[path]}", "us", note)

    def ratio(name, a, b, note):
        if a in med and b in med and med[b]:
            rows.append(_row(name, med[a] / med[b], "x", note))
        else:
            rows.append(_row(name, None, "x", "FAILED: a side has no result"))

    ratio("ratio accept, switch tcp / raw TCP", ("accept", "switch-tcp", "rate"), ("accept", "raw-tcp", "rate"),
          "conn/s ratio, higher is better")
    ratio("ratio accept, switch zmq / raw TCP", ("accept", "switch-zmq", "rate"), ("accept", "raw-tcp", "rate"),
          "conn/s ratio, higher is better (pyzmq has no accept to compare with)")
    for key, field, label in (("tput64", "msgs", "64 B msg/s"), ("tput64k", "bytes", "64 KiB MB/s")):
        ratio(f"ratio {label}, switch tcp / raw TCP", (key, "switch-tcp", field), (key, "raw-tcp", field),
              "higher is better")
        ratio(f"ratio {label}, switch zmq / raw pyzmq", (key, "switch-zmq", field), (key, "raw-zmq", field),
              "higher is better")
    for field in ("med", "p99"):
        label = "median" if field == "med" else "p99"
        ratio(f"ratio latency {label}, switch tcp / raw TCP", ("latency", "switch-tcp", field),
              ("latency", "raw-tcp", field), "lower is better")
        ratio(f"ratio latency {label}, switch zmq / raw pyzmq", ("latency", "switch-zmq", field),
              ("latency", "raw-zmq", field), "lower is better")
    if counter.count:
        rows.append(_row("switch log lines (warnings) during the run", counter.count, "lines",
                         f"in this process; last: {counter.last[:120]}"))
    return rows


def _fmt(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"


def _row(name: str, value, unit: str, note: str) -> dict:
    return {"group": GROUP, "name": name, "value": None if value is None else float(value),
            "unit": unit, "note": note}


if __name__ == "__main__":
    quick = "--quick" in sys.argv[1:]
    t = time.perf_counter()
    for r in run(quick):
        v = "FAILED" if r["value"] is None else _fmt(r["value"])
        print(f"{r['name']:<48} {v:>12} {r['unit']:<6} {r['note']}")
    print(f"({time.perf_counter() - t:.1f} s, quick={quick}, {os.cpu_count()} CPUs)")
