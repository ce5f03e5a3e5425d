"""The ``verbs`` provider next to perftest on the same softRoCE device, in one VM run.

    python bench/bench_verbs.py [--quick]          # on the host: boots the VM once
    python3 bench/bench_verbs.py --guest [--quick] [--only provider_bw:64,provider_lat] [--count N]  # guest
    WSD_VERBS_BENCH_OPTS='{"signal_every": 1}' ...   # VerbsProvider options for the provider runs
    WSD_VERBS_BENCH_DEPTH=64 WSD_VERBS_BENCH_WINDOW=32 ...   # receive depth / send window (128 / 128)

Inside one ``wsd-rxe-vm run`` (rxe0 on a dummy netdev, TCG guest), in order:

1. perftest ``ib_send_bw`` and ``ib_send_lat`` at 64 B and 64 KiB (the
   harness's script: server and client in the guest, GID index 1, MTU 1024);
2. the verbs provider through its SPI, two processes (this one sends, a
   child receives): **SEND throughput** -- the receiver keeps ``DEPTH``
   registered buffers posted and reposts each on completion, the sender keeps
   ``WINDOW`` SENDs outstanding from a registered buffer; messages/s and Gb/s
   from the first post to the last send completion; the rows note the RNR
   NAKs (rxe's port counters), fences and unsignalled SENDs -- and **latency**: 64 B
   and 64 KiB ping-pong (the child echoes), reported as half the median round
   trip, which is what ``ib_send_lat`` reports;
3. the whole switch over verbs (socket API: ``sendall`` / ``recv``): 64 KiB
   throughput (RDMA READ of the sender's buffers) and 64 B ping-pong.

Ratios provider / perftest are rows too (goal >= 0.8 for SEND bandwidth).
Process and switch start-up are not timed: the child reports "ready" and the
sender starts after it.  ``run(quick)`` returns rows {"group": "verbs", ...};
when no VM can run here the rows say why (value None).
"""
from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

GROUP = "verbs"
ROOT = Path(__file__).resolve().parent.parent
MARK = "@@WSD-VERBS-BENCH "
# perftest's ib_send_bw keeps tx_depth = 128 SENDs in flight; the provider's queues are 128 deep by default
DEPTH = int(os.environ.get("WSD_VERBS_BENCH_DEPTH", "128"))     # receives posted by the receiver
WINDOW = int(os.environ.get("WSD_VERBS_BENCH_WINDOW", "128"))   # SENDs in flight at the sender
SIZES = (64, 64 << 10)


def _row(name: str, value, unit: str, note: str = "") -> dict:
    return {"group": GROUP, "name": name, "value": None if value is None else float(value), "unit": unit,
            "note": note}


# ====================================================================== guest side
def _say(**kw) -> None:
    sys.stdout.write(json.dumps(kw) + "\n")
    sys.stdout.flush()


class _Upcalls:
    def WPUCreateSocketHandle(self, provider_name, provider_socket):
        return provider_socket

    def WPUCloseSocketHandle(self, h):
        pass

    def SetEvent(self, ev):
        ev.set()

    def ResetEvent(self, ev):
        ev.reset()


def _wait(cq, deadline: float) -> list:
    from wsd.events import wait_any
    while True:
        got = cq.poll(256)
        if got:
            return got
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no completion before the deadline")
        wait_any([cq], min(left, 1.0))


def _provider_pair_side(role: str, port: int):
    """(provider, connected socket) for the SPI benchmark."""
    from wsd import errors
    from wsd.events import EventObject
    from wsd.spi import FD_ACCEPT, FD_CONNECT
    from wsd_verbs import VerbsProvider
    p = VerbsProvider(**json.loads(os.environ.get("WSD_VERBS_BENCH_OPTS") or "{}"))
    p.WSPStartup(_Upcalls())
    s = p.WSPSocket()
    ev = EventObject(role)
    if role == "server":
        p.WSPBind(s, ("127.0.0.1", port))
        p.WSPListen(s, 4)
        p.WSPEventSelect(s, ev, FD_ACCEPT)
        _say(event="listening")
        if not ev.wait(120):
            raise TimeoutError("no connection request")
        p.WSPEnumNetworkEvents(s)
        return p, p.WSPAccept(s, None, None)
    p.WSPBind(s, ("0.0.0.0", 0))
    p.WSPEventSelect(s, ev, FD_CONNECT)
    try:
        p.WSPConnect(s, ("127.0.0.1", port))
    except errors.WSAEWOULDBLOCK:
        pass
    if not ev.wait(120):
        raise TimeoutError("connect timed out")
    ne = p.WSPEnumNetworkEvents(s)
    if ne.error(FD_CONNECT):
        raise errors.from_code(ne.error(FD_CONNECT))
    return p, s


def guest_server(port: int, mode: str, size: int, count: int) -> int:
    """The child: receive ``count`` messages (mode bw) or echo them (mode lat)."""
    from wsd.events import CompletionQueue, Overlapped
    from wsd.spi import MEM_READ, MEM_WRITE
    p, s = _provider_pair_side("server", port)
    cq = CompletionQueue("server")
    pool = bytearray(DEPTH * size)
    p.WSPRegisterMemory(s, pool, MEM_WRITE)
    views = [memoryview(pool)[i * size:(i + 1) * size] for i in range(DEPTH)]
    for i, v in enumerate(views):
        p.WSPRecv(s, [v], Overlapped(cq, i))
    echo = bytearray(size)
    p.WSPRegisterMemory(s, echo, MEM_READ)
    got = 0
    deadline = time.monotonic() + 600
    cpu0 = None
    while got < count:
        for c in _wait(cq, deadline):
            if cpu0 is None:
                cpu0 = os.times()           # CPU of the receiving loop, from the first completion on
            if c.overlapped.context == "echo":
                continue
            if c.error:
                raise OSError(f"receive failed: {c.error}")
            got += 1
            i = c.overlapped.context
            if mode == "lat":
                echo[:c.transferred] = views[i][:c.transferred]
                p.WSPSend(s, [memoryview(echo)[:c.transferred]], Overlapped(cq, "echo"))
            p.WSPRecv(s, [views[i]], Overlapped(cq, i))
    t = os.times()
    time.sleep(0.5)                          # let the last echo's ACK go out before the QP is torn down
    _say(event="done", received=got, stats=dict(p.stats), cpu_user=t.user - cpu0.user,
         cpu_sys=t.system - cpu0.system)
    p.WSPCleanup()
    return 0


_HW_COUNTERS = "/sys/class/infiniband/{dev}/ports/1/hw_counters"


def _hw_counters() -> dict:
    """rxe's port counters (RNR NAKs, retries, sequence errors), {} where there are none."""
    d = Path(_HW_COUNTERS.format(dev=os.environ.get("WSD_RDMA_DEV", "rxe0")))
    out = {}
    try:
        for f in d.iterdir():
            try:
                out[f.name] = int(f.read_text())
            except (OSError, ValueError):
                pass
    except OSError:
        pass
    return out


def _cpu_stat() -> dict:
    """The machine's CPU time (s) from /proc/stat: user, system, softirq, idle."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return {}
    hz = os.sysconf("SC_CLK_TCK")
    return {"user": (v[0] + v[1]) / hz, "system": v[2] / hz, "idle": (v[3] + v[4]) / hz,
            "irq": (v[5] + v[6]) / hz}


def _finish_child(child: subprocess.Popen, res: dict, hw0: dict) -> dict:
    """Wait for the child; add its provider stats and the device counters that moved."""
    child.wait(120)
    for line in child.stdout.read().splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if msg.get("event") == "done":
            res["peer_stats"] = msg.get("stats", {})
            res["peer_cpu"] = (msg.get("cpu_user"), msg.get("cpu_sys"))
    hw1 = _hw_counters()
    res["hw"] = {k: v - hw0.get(k, 0) for k, v in hw1.items()
                 if v != hw0.get(k, 0) and k in ("rcvd_rnr_err", "send_rnr_err", "completer_retry_err",
                                                 "out_of_seq_request", "duplicate_request", "rcvd_seq_err")}
    return res


def _spawn(args: list[str]) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), *args], stdout=subprocess.PIPE,
                            text=True, env=os.environ.copy())
    line = proc.stdout.readline()
    if not line or json.loads(line).get("event") not in ("listening", "ready"):
        proc.kill()
        raise RuntimeError(f"child did not start: {line!r}")
    return proc


def guest_provider_bw(size: int, count: int) -> dict:
    from wsd.events import CompletionQueue, Overlapped
    from wsd.spi import MEM_READ
    port = random.randrange(20000, 60000)
    hw0 = _hw_counters()
    child = _spawn(["--child", "provider", str(port), "bw", str(size), str(count)])
    p, s = _provider_pair_side("client", port)
    cq = CompletionQueue("client")
    buf = bytearray(os.urandom(size))
    p.WSPRegisterMemory(s, buf, MEM_READ)
    view = memoryview(buf)
    posted = done = 0
    deadline = time.monotonic() + 600
    cpu0, stat0 = os.times(), _cpu_stat()
    t0 = time.perf_counter()
    while done < count:
        while posted < count and posted - done < WINDOW:
            p.WSPSend(s, [view], Overlapped(cq, posted))
            posted += 1
        for c in _wait(cq, deadline):
            if c.error:
                raise OSError(f"send failed: {c.error}")
            done += 1
    dt = time.perf_counter() - t0
    cpu1, stat1 = os.times(), _cpu_stat()
    res = {"kind": "provider_bw", "bytes": size, "count": count, "seconds": dt,
           "msg_per_s": count / dt, "gbps": count * size * 8 / dt / 1e9, "stats": dict(p.stats),
           "cpu": (cpu1.user - cpu0.user, cpu1.system - cpu0.system),
           "vm_cpu": {k: stat1[k] - stat0[k] for k in stat0}}
    _finish_child(child, res, hw0)
    p.WSPCleanup()
    return res


def guest_provider_lat(size: int, count: int) -> dict:
    from wsd.events import CompletionQueue, Overlapped
    from wsd.spi import MEM_READ, MEM_WRITE
    port = random.randrange(20000, 60000)
    child = _spawn(["--child", "provider", str(port), "lat", str(size), str(count)])
    p, s = _provider_pair_side("client", port)
    cq = CompletionQueue("client")
    out = bytearray(os.urandom(size))
    back = bytearray(size)
    p.WSPRegisterMemory(s, out, MEM_READ)
    p.WSPRegisterMemory(s, back, MEM_WRITE)
    rtts = []
    deadline = time.monotonic() + 600
    for _ in range(count):
        p.WSPRecv(s, [memoryview(back)], Overlapped(cq, "r"))
        t0 = time.perf_counter()
        p.WSPSend(s, [memoryview(out)], Overlapped(cq, "s"))
        seen = set()
        while "r" not in seen:
            for c in _wait(cq, deadline):
                if c.error:
                    raise OSError(f"ping-pong failed: {c.error}")
                seen.add(c.overlapped.context)
        rtts.append(time.perf_counter() - t0)
    child.wait(120)
    p.WSPCleanup()
    rtts.sort()
    return {"kind": "provider_lat", "bytes": size, "count": count,
            "half_rtt_median_us": statistics.median(rtts) / 2 * 1e6,
            "half_rtt_p99_us": rtts[min(len(rtts) - 1, int(len(rtts) * 0.99))] / 2 * 1e6}


def guest_switch_server(port: int, mode: str, size: int, count: int) -> int:
    import wsd
    sw = wsd.Switch([("127.0.0.0/8", "verbs")])
    l = sw.socket()
    l.bind(("127.0.0.1", port))
    l.listen()
    l.settimeout(300)
    _say(event="listening")
    s, _ = l.accept()
    s.settimeout(300)
    total = size * count
    got = 0
    buf = bytearray(1 << 20)
    while got < total:
        n = s.recv_into(buf, size if mode == "lat" else len(buf))
        if not n:
            break
        got += n
        if mode == "lat" and got % size == 0:
            s.sendall(bytes(size))
    _say(event="done", received=got)
    s.close()
    l.close()
    sw.close()
    return 0


def guest_switch(mode: str, size: int, count: int) -> dict:
    import wsd
    port = random.randrange(20000, 60000)
    child = _spawn(["--child", "switch", str(port), mode, str(size), str(count)])
    sw = wsd.Switch([("127.0.0.0/8", "verbs")])
    s = sw.socket()
    s.settimeout(300)
    s.connect(("127.0.0.1", port))
    assert s.path == "verbs"
    data = os.urandom(size)
    res = {"kind": f"switch_{mode}", "bytes": size, "count": count}
    if mode == "bw":
        t0 = time.perf_counter()
        for _ in range(count):
            s.sendall(data)
        s.close()
        child.wait(300)        # the receiver has everything once it exits
        dt = time.perf_counter() - t0
        res.update(seconds=dt, msg_per_s=count / dt, gbps=count * size * 8 / dt / 1e9)
    else:
        rtts = []
        buf = bytearray(size)
        for _ in range(count):
            t0 = time.perf_counter()
            s.sendall(data)
            got = 0
            while got < size:
                n = s.recv_into(memoryview(buf)[got:])
                if not n:
                    raise ConnectionError("echo ended early")
                got += n
            rtts.append(time.perf_counter() - t0)
        s.close()
        child.wait(300)
        rtts.sort()
        res.update(half_rtt_median_us=statistics.median(rtts) / 2 * 1e6,
                   half_rtt_p99_us=rtts[min(len(rtts) - 1, int(len(rtts) * 0.99))] / 2 * 1e6)
    sw.close()
    return res


def guest_main(quick: bool, only: list[str] | None = None, count: int | None = None) -> int:
    n_small, n_big, n_lat = (2000, 300, 200) if quick else (10000, 1000, 1000)
    plan = [
        ("provider_bw", guest_provider_bw, 64, n_small), ("provider_bw", guest_provider_bw, 64 << 10, n_big),
        ("provider_lat", guest_provider_lat, 64, n_lat),
        ("provider_lat", guest_provider_lat, 64 << 10, max(50, n_lat // 4)),
        ("switch_bw", lambda size, n: guest_switch("bw", size, n), 64 << 10, n_big),
        ("switch_lat", lambda size, n: guest_switch("lat", size, n), 64, n_lat),
    ]
    for kind, fn, size, n in plan:
        if only and kind not in only and f"{kind}:{size}" not in only:
            continue
        n = count or n
        try:
            res = fn(size, n)
        except (OSError, RuntimeError, TimeoutError, AssertionError, subprocess.SubprocessError) as e:
            res = {"kind": getattr(fn, "__name__", "switch"), "bytes": size, "error": f"{type(e).__name__}: {e}"}
        sys.stdout.write(MARK + json.dumps(res) + "\n")
        sys.stdout.flush()
    return 0


# ====================================================================== host side
def run(quick: bool = False) -> list[dict]:
    try:
        from wsd_tools.rxe_vm import GUEST_ADDR, GUEST_GID_INDEX, GUEST_RDMA_DEV, cli
    except ImportError as e:
        return [_row("verbs bench", None, "", f"not run: the VM harness cannot be imported ({e})")]
    iters = 300 if quick else 1000
    perf = cli.PERF_SCRIPT.format(dev=GUEST_RDMA_DEV, gidx=GUEST_GID_INDEX, addr=GUEST_ADDR, iters=iters,
                                  sizes=" ".join(str(s) for s in SIZES), tools="ib_send_bw ib_send_lat")
    # perftest's script ends with `exit 0`: run it in a subshell, then the provider's half
    script = f"( {perf} ) && python3 bench/bench_verbs.py --guest{' --quick' if quick else ''}"
    cmd = [sys.executable, "-m", "wsd_tools.rxe_vm", "run", "--timeout", "1500", "--", "sh", "-c", script]
    t0 = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as e:
        return [_row("verbs bench", None, "", f"not run: {type(e).__name__}: {e}")]
    wall = time.monotonic() - t0
    if proc.returncode in (3,):
        return [_row("verbs bench", None, "", "not run: this host cannot boot the softRoCE VM: "
                     + (proc.stderr.strip().splitlines() or ["?"])[-1])]
    out = proc.stdout
    perf_rows = cli.parse_perftest(out)
    ours = [json.loads(line[len(MARK):]) for line in out.splitlines() if line.startswith(MARK)]
    rows: list[dict] = []
    if proc.returncode != 0 or not ours:
        tail = (out + proc.stderr).strip().splitlines()[-5:]
        rows.append(_row("verbs bench", None, "", f"VM run failed (status {proc.returncode}): {' | '.join(tail)}"
                         [:400]))
    note_vm = "softRoCE rxe0 in the TCG guest (one VM run, both ends in the guest)"
    for r in perf_rows:
        if r["tool"] == "ib_send_bw":
            rows.append(_row(f"perftest ib_send_bw {r['bytes']} B", r["bw_avg_gbps"], "Gb/s",
                             f"{r['msg_rate_mpps'] * 1e3:.1f} kmsg/s; {note_vm}"))
        elif r["tool"] == "ib_send_lat":
            rows.append(_row(f"perftest ib_send_lat {r['bytes']} B", r["t_typical_us"], "us",
                             f"typical; avg {r['t_avg_us']:.1f} us, p99 {r['p99_us']:.1f} us"))
    base_bw = {r["bytes"]: r for r in perf_rows if r["tool"] == "ib_send_bw"}
    base_lat = {r["bytes"]: r for r in perf_rows if r["tool"] == "ib_send_lat"}
    for r in ours:
        size = r.get("bytes")
        label = {"provider_bw": "provider SEND", "provider_lat": "provider ping-pong",
                 "switch_bw": "switch sendall", "switch_lat": "switch ping-pong"}.get(r["kind"], r["kind"])
        if "error" in r:
            rows.append(_row(f"{label} {size} B", None, "", f"FAILED: {r['error']}"))
            continue
        if "gbps" in r:
            extra = ""
            if r["kind"] == "provider_bw":
                hw, st = r.get("hw", {}), r.get("stats", {})
                extra = (f"; {hw.get('rcvd_rnr_err', 0)} RNR NAKs, {st.get('fence', 0)} fences, "
                         f"{st.get('unsignaled', 0)} unsignalled")
            rows.append(_row(f"{label} {size} B", r["gbps"], "Gb/s",
                             f"{r['msg_per_s'] / 1e3:.1f} kmsg/s over {r['count']} messages{extra}"))
            b = base_bw.get(size)
            if b and b["bw_avg_gbps"]:
                rows.append(_row(f"{label} {size} B / ib_send_bw", r["gbps"] / b["bw_avg_gbps"], "x",
                                 "goal >= 0.8" if r["kind"] == "provider_bw" else "switch incl. session protocol"))
        else:
            rows.append(_row(f"{label} {size} B latency", r["half_rtt_median_us"], "us",
                             f"half round trip, median; p99 {r['half_rtt_p99_us']:.1f} us; {r['count']} round trips"))
            b = base_lat.get(size)
            if b and b["t_typical_us"]:
                rows.append(_row(f"{label} {size} B latency / ib_send_lat", r["half_rtt_median_us"]
                                 / b["t_typical_us"], "x", "lower is better"))
    rows.append(_row("VM run wall time", wall, "s", "boot + perftest + provider + switch runs"))
    return rows


def main(argv: list[str]) -> int:
    if argv[:1] == ["--child"]:
        kind, port, mode, size, count = argv[1], int(argv[2]), argv[3], int(argv[4]), int(argv[5])
        if kind == "provider":
            return guest_server(port, mode, size, count)
        return guest_switch_server(port, mode, size, count)
    if "--guest" in argv:
        # --only provider_bw,provider_lat:64 (kinds, or kind:size) narrows a guest run
        only = argv[argv.index("--only") + 1].split(",") if "--only" in argv else None
        count = int(argv[argv.index("--count") + 1]) if "--count" in argv else None
        return guest_main("--quick" in argv, only, count)
    for r in run("--quick" in argv):
        v = "-" if r["value"] is None else f"{r['value']:.4g}"
        print(f"{r['name']:<44} {v:>10} {r['unit']:<5} {r['note']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
