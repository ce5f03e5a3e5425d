"""SMB server throughput: wsd-smbd next to a real Samba smbd, both on loopback, in one run.

    python bench/bench_smb.py [--quick] [--only samba|wsd]

``run(quick)`` returns rows {"group": "smb", "name", "value", "unit", "note"}.
The bench starts Samba itself (private smb.conf, tdbsam and state in a temp
dir, ephemeral port on 127.0.0.1 -- tests/smb/sut_servers.py; installs the
samba packages with apt-get when missing and root) and wsd-smbd
(``python -m wsd_smb.server.cli``), then measures for each:

Both servers run at once and every figure is taken in rounds that alternate them
(A B, B A, A B), so that both see the same state of this noisy machine:

* smbclient ``put`` / ``get`` of a 1 GiB file of random bytes (--quick: 64 MiB),
  median of 3 (--quick: 1), rate as smbclient reports it (transfer only,
  KiB/s -> MB/s); default dialect (SMB 3.1.1), no encryption, signing offered
  but not required on both servers (Samba's default; wsd-smbd's default requires
  it, so the bench starts it with ``signing_required = false``); ``get`` writes
  into /dev/null (a local 1 GiB file write measured the client's disk, 3-7x
  slower than the transfer here); sizes are checked;
* open+close pairs/s of one existing path: smbtorture
  ``smb2.bench.path-contention-shared`` (the share's root directory, 4 connections,
  queue depth 1; 3 runs of 4 s, median of their per-second figures), and the same
  loop on a file with smbprotocol's low-level API on one persistent connection (one
  Python client; bounded by the client);
* ratio rows wsd/Samba.

Files live in a temp dir, never in the repo.  The machine is shared (2 cores):
expect run-to-run noise of tens of percent.
"""
from __future__ import annotations

import functools
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "smb"))
from sut_servers import SambaServer, ServerUnavailable, WsdServer  # noqa: E402

try:
    from smbprotocol.exceptions import SMBException
except ImportError:  # smbprotocol missing: the smbprotocol row reports the ImportError
    SMBException = ImportError

GROUP = "smb"
APT = ["samba", "smbclient", "samba-testsuite"]


def _row(name: str, value: float, unit: str, note: str) -> dict:
    return {"group": GROUP, "name": name, "value": float(value), "unit": unit, "note": note}


def ensure_samba() -> str | None:
    """Install the Samba packages if they are missing (root only); return why Samba cannot run, or None."""
    if SambaServer.unavailable_reason() and os.geteuid() == 0 and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=False, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *APT], env=env, check=False,
                       timeout=1200, stdout=subprocess.DEVNULL)
    import sut_servers
    sut_servers.SAMBA_SMBD = shutil.which("smbd") or sut_servers.SAMBA_SMBD
    sut_servers.SMBPASSWD = shutil.which("smbpasswd") or sut_servers.SMBPASSWD
    return SambaServer.unavailable_reason()


def _make_payload(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        left = size
        while left > 0:
            n = min(left, 4 << 20)
            f.write(os.urandom(n))
            left -= n


_RATE = re.compile(r"\((\d+(?:\.\d+)?) (?:kb/s|KiloBytes/sec)\)")


def _smbclient(srv, conf: Path, command: str, timeout: float = 900, with_output: bool = False):
    """Run one smbclient command; return the transfer rate it reports, in MB/s (and its output)."""
    argv = ["smbclient", "-s", str(conf), "-p", str(srv.port), "-U", srv.creds, srv.unc, "-c", command]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    out = r.stdout + r.stderr
    m = _RATE.search(out)
    if r.returncode != 0 or "NT_STATUS_" in out or not m:
        raise RuntimeError(f"smbclient {command!r} failed (rc={r.returncode}): {out.strip()[-400:]}")
    rate = float(m.group(1)) * 1024 / 1e6  # smbclient's "kb/s" are KiB per second
    return (rate, out) if with_output else rate


def put_get_once(srv, conf: Path, payload: Path, i: int) -> tuple[float, float]:
    """One smbclient put and get of *payload* (sizes checked); (put MB/s, get MB/s)."""
    size = payload.stat().st_size
    put = _smbclient(srv, conf, f"put {payload} bench_{i}.bin")
    if (srv.share_path / f"bench_{i}.bin").stat().st_size != size:
        raise RuntimeError(f"put stored {(srv.share_path / f'bench_{i}.bin').stat().st_size} bytes, want {size}")
    # into /dev/null: writing 1 GiB into the local page cache and disk costs more than the transfer
    # on this machine and would measure the client's disk, not the server
    get, out = _smbclient(srv, conf, f"get bench_{i}.bin /dev/null", with_output=True)
    if f"of size {size} as" not in out:
        raise RuntimeError(f"get did not report {size} bytes: {out.strip()[-300:]}")
    (srv.share_path / f"bench_{i}.bin").unlink(missing_ok=True)
    return put, get


_OPS = re.compile(r"open\[num/s=(\d+),")


_TICK = os.sysconf("SC_CLK_TCK")


def _tree_cpu(root: int) -> float:
    """CPU seconds (user + system) of process *root*, its live descendants and the children
    they have reaped (Samba forks an smbd per connection; they exit when it ends)."""
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(d))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
        todo += kids.get(pid, [])
    return total / _TICK


def torture_open_close(srv, conf: Path, seconds: int) -> tuple[list[int], float, float]:
    """(per-second open rates, server CPU seconds, client CPU seconds) of one run."""
    argv = ["smbtorture", f"//{srv.host}/{srv.share}", "-p", str(srv.port), "-U", srv.creds, "-s", str(conf),
            "smb2.bench.path-contention-shared", f"--option=torture:timelimit={seconds}"]
    root = srv.procs[-1].pid
    cpu0, kid0 = _tree_cpu(root), resource.getrusage(resource.RUSAGE_CHILDREN)
    with tempfile.TemporaryDirectory(prefix="wsd-torture-") as scratch:  # it leaves temp dirs in its cwd
        r = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 120, stdin=subprocess.DEVNULL,
                           cwd=scratch)
    cpu1, kid1 = _tree_cpu(root), resource.getrusage(resource.RUSAGE_CHILDREN)
    out = r.stdout + r.stderr
    per_sec = [int(x) for x in _OPS.findall(out)]
    if "success: path-contention-shared" not in out or not per_sec:
        raise RuntimeError(f"smbtorture bench failed (rc={r.returncode}): {out.strip()[-600:]}")
    client = (kid1.ru_utime - kid0.ru_utime) + (kid1.ru_stime - kid0.ru_stime)
    return per_sec, cpu1 - cpu0, client


def smbprotocol_open_close(srv, seconds: float) -> float:
    from smbprotocol.connection import Connection
    from smbprotocol.open import (CreateDisposition, CreateOptions, FileAttributes, FilePipePrinterAccessMask,
                                  ImpersonationLevel, Open, ShareAccess)
    from smbprotocol.session import Session
    from smbprotocol.tree import TreeConnect

    (srv.share_path / "oc.bin").write_bytes(b"x" * 4096)
    conn = Connection(uuid.uuid4(), srv.host, srv.port, require_signing=True)
    conn.connect(timeout=30)
    try:
        session = Session(conn, srv.user, srv.password, require_encryption=False)
        session.connect()
        tree = TreeConnect(session, rf"\\{srv.host}\{srv.share}")
        tree.connect()
        n = 0
        t0 = time.perf_counter()
        end = t0 + seconds
        while time.perf_counter() < end:
            f = Open(tree, "oc.bin")
            f.create(ImpersonationLevel.Impersonation, FilePipePrinterAccessMask.FILE_READ_ATTRIBUTES,
                     FileAttributes.FILE_ATTRIBUTE_NORMAL, ShareAccess.FILE_SHARE_READ | ShareAccess.FILE_SHARE_WRITE,
                     CreateDisposition.FILE_OPEN, CreateOptions.FILE_NON_DIRECTORY_FILE)
            f.close()
            n += 1
        rate = n / (time.perf_counter() - t0)
        tree.disconnect()
        session.disconnect()
    finally:
        conn.disconnect()
    return rate


def _interleaved(servers: dict, conf: Path, payload: Path, quick: bool) -> dict[str, dict]:
    """Every figure measured in rounds that alternate the servers (A B, then B A, ...), so
    that both see the same state of this noisy machine (page cache, other jobs)."""
    runs = 1 if quick else 3
    res: dict[str, dict] = {label: {"put": [], "get": [], "oc_torture": [], "_runs": runs, "_oc_pairs": 0,
                                    "_oc_server_cpu": 0.0, "_oc_client_cpu": 0.0,
                                    "_mib": payload.stat().st_size >> 20} for label in servers}
    order = list(servers)

    def rounds(key: str, measure) -> None:
        """*runs* rounds, servers alternating; measure(server, round) adds to res[label][key]
        (a failure replaces the list with its text and ends that server's rounds)."""
        for r in range(runs):
            for label in (order if r % 2 == 0 else order[::-1]):
                rr = res[label]
                if isinstance(rr[key], str):
                    continue
                try:
                    measure(rr, servers[label], r)
                except (RuntimeError, subprocess.TimeoutExpired, OSError) as e:
                    rr[key] = f"failed: {e}"
                    if key == "put":
                        rr["get"] = rr[key]

    def transfer(rr: dict, srv, r: int) -> None:
        p, g = put_get_once(srv, conf, payload, r)
        rr["put"].append(p)
        rr["get"].append(g)

    def open_close(rr: dict, srv, r: int) -> None:
        per_sec, server_cpu, client_cpu = torture_open_close(srv, conf, 3 if quick else 4)
        rr["oc_torture"] += per_sec
        rr["_oc_pairs"] += sum(per_sec)  # one figure per second of the run
        rr["_oc_server_cpu"] += server_cpu
        rr["_oc_client_cpu"] += client_cpu

    rounds("put", transfer)
    rounds("oc_torture", open_close)
    for label in order:
        rr = res[label]
        if isinstance(rr["oc_torture"], list) and rr["_oc_pairs"]:
            rr["oc_server_cpu"] = 1e6 * rr["_oc_server_cpu"] / rr["_oc_pairs"]
            rr["oc_client_cpu"] = 1e6 * rr["_oc_client_cpu"] / rr["_oc_pairs"]
        for key in ("put", "get", "oc_torture"):
            if isinstance(rr[key], list):
                rr[key] = float(statistics.median(rr[key]))
        try:
            rr["oc_smbprotocol"] = smbprotocol_open_close(servers[label], 2 if quick else 5)
        except (SMBException, OSError, ValueError) as e:
            rr["oc_smbprotocol"] = f"failed: {type(e).__name__}: {e}"
    return res


def run(quick: bool = False, only: str | None = None) -> list[dict]:
    size = (64 if quick else 1024) << 20
    rows: list[dict] = []
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench-smb-") as tmp:
        tmp = Path(tmp)
        conf = tmp / "client.conf"
        conf.write_text("[global]\n")
        payload = tmp / "payload.bin"
        _make_payload(payload, size)
        targets = []
        if only in (None, "samba"):
            why = ensure_samba()
            if why:
                print(f"bench_smb: Samba skipped: {why}", file=sys.stderr)
            else:
                targets.append(("samba", SambaServer))
        if only in (None, "wsd"):
            why = WsdServer.unavailable_reason()
            if why:
                print(f"bench_smb: wsd-smbd skipped: {why}", file=sys.stderr)
            else:
                # the same signing policy as the Samba side ("server signing = auto": offered, not
                # required), so smbclient signs neither server's data; wsd-smbd's own default is
                # signing required
                targets.append(("wsd", functools.partial(WsdServer, server_options={"signing_required": False})))
        servers = {}
        try:
            for label, cls in targets:
                srv = cls(tmp / label)
                try:
                    srv.start()
                except (ServerUnavailable, RuntimeError, TimeoutError) as e:
                    print(f"bench_smb: {label} did not start: {e}", file=sys.stderr)
                    continue
                servers[label] = srv
            if servers:
                results = _interleaved(servers, conf, payload, quick)
        finally:
            for srv in servers.values():
                srv.stop()

    names = {"samba": "Samba 4.17 smbd", "wsd": "wsd-smbd"}
    for label, res in results.items():
        mib, runs = res["_mib"], res["_runs"]
        spec = [
            ("put", f"smbclient put {mib} MiB", "MB/s", f"median of {runs}; SMB 3.1.1, unsigned data, no encryption"),
            ("get", f"smbclient get {mib} MiB", "MB/s",
             f"median of {runs}; into /dev/null; SMB 3.1.1, unsigned data, no encryption"),
            ("oc_torture", "open+close, smbtorture path-contention-shared", "pairs/s",
             f"4 connections, qdepth 1, median of the per-second figures of {runs} runs"),
            ("oc_smbprotocol", "open+close, smbprotocol 1 connection", "pairs/s",
             "one Python client on a persistent signed connection (client-bound)"),
            ("oc_server_cpu", "open+close, server CPU per pair", "us",
             "smbtorture runs: user+system CPU of the server's processes / pairs (lower is better)"),
            ("oc_client_cpu", "open+close, smbtorture CPU per pair", "us",
             "the client's own CPU in the same runs"),
        ]
        for key, name, unit, note in spec:
            if key not in res:
                continue
            v = res[key]
            if isinstance(v, str):
                rows.append(_row(f"{names[label]}: {name}", 0.0, unit, v[:300]))
            else:
                rows.append(_row(f"{names[label]}: {name}", v, unit, note))
    if "samba" in results and "wsd" in results:
        for key, name in [("put", "put"), ("get", "get"), ("oc_torture", "open+close (smbtorture)"),
                          ("oc_smbprotocol", "open+close (smbprotocol)")]:
            a, b = results["wsd"][key], results["samba"][key]
            if isinstance(a, float) and isinstance(b, float) and b > 0:
                rows.append(_row(f"ratio wsd/Samba: {name}", a / b, "x", "above 1: wsd-smbd faster"))
        a, b = results["wsd"].get("oc_server_cpu"), results["samba"].get("oc_server_cpu")
        if a and b:
            rows.append(_row("ratio wsd/Samba: server CPU per open+close pair", a / b, "x",
                             "above 1: wsd-smbd spends more CPU per pair"))
    return rows


def _table(rows: list[dict]) -> str:
    w = max(len(r["name"]) for r in rows) if rows else 10
    lines = [f"{'name':<{w}}  {'value':>12}  {'unit':<8}  note"]
    for r in rows:
        lines.append(f"{r['name']:<{w}}  {r['value']:>12.2f}  {r['unit']:<8}  {r['note']}")
    return "\n".join(lines)


if __name__ == "__main__":
    args = sys.argv[1:]
    quick = "--quick" in args
    only = args[args.index("--only") + 1] if "--only" in args else None
    print(f"bench_smb: {os.cpu_count()} CPUs, quick={quick}")
    print(_table(run(quick, only)))
