"""Run Samba's smbtorture suites against a server and parse the per-case results.

Used by test_interop_smbtorture.py, and as a command line tool to measure and
re-pin (see docs/interop.md)::

    .venv/bin/python tests/smb/interop/smbtorture_runner.py --target wsd [--suite smb2.read]... \
        [--update-pins] [--json results.json]

smbtorture prints subunit v1 with ``--format=subunit``: ``test: NAME`` when a
case starts, then ``success: NAME`` / ``failure: NAME [`` ... ``]`` /
``error:`` / ``skip:`` / ``xfail:`` / ``uxsuccess:``.  The runner watches the
output; when nothing new arrives for ``stall`` seconds (a hung request) or the
suite's budget is spent it kills smbtorture, records the running case as
``timeout`` and carries on with the cases not yet run, by name.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

SMBTORTURE = shutil.which("smbtorture")
HERE = Path(__file__).resolve().parent
PINS = HERE / "smbtorture_pins.json"

SUITES = [
    "smb2.connect", "smb2.read", "smb2.rw", "smb2.session", "smb2.getinfo", "smb2.setinfo", "smb2.dir",
    "smb2.rename", "smb2.delete-on-close-perms", "smb2.lock", "smb2.create",
    # beyond the first list, still fast (seconds): durable handles (DH-*), compounds, credits, FSCTLs
    "smb2.durable-open", "smb2.durable-v2-open", "smb2.compound", "smb2.credits", "smb2.ioctl",
    # CHANGE_NOTIFY (core/notify.py); ~85 s, most of it smb2.notify.mask's own 200 ms sleeps
    "smb2.notify",
    # NT ACLs: stored descriptors, access checks, inheritance (store/security.py); ~1 s
    "smb2.acls",
    # small object-store suites, each under a second: file ids, share modes, open attributes,
    # named streams, names and charsets, DOS attributes, security-descriptor reads
    "smb2.fileid", "smb2.sharemode", "smb2.deny", "smb2.mkdir", "smb2.openattr", "smb2.session-id",
    "smb2.tcon", "smb2.ioctl-on-stream", "smb2.durable-open-disconnect", "smb2.streams", "smb2.charset",
    "smb2.winattr", "smb2.sdread",
    # a few seconds each, most of it the suites' own sleeps: async compounds (4 s), compound
    # QUERY_DIRECTORY (13 s), durable v2 reconnect delay (10 s), timestamps (14 s)
    "smb2.compound_async", "smb2.compound_find", "smb2.durable-v2-delay", "smb2.timestamps",
    # DOS attributes incl. a `hide_files` match (its own server, SUITE_SERVER_OPTIONS); 0.2 s
    "smb2.dosmode",
]
#: Slow on Samba (lease 3 min, oplock 2 min: they wait out break timeouts); run with WSD_SMBTORTURE_SUITES=all.
SLOW_SUITES = ["smb2.lease", "smb2.oplock",
               # session binding across connections; most cases need a transport the test can
               # block (iptables or Samba's private FSCTL), one waits out a 30 s stall
               "smb2.multichannel",
               # replay detection (core/replay.py): ~140 s against wsd-smbd and Samba alike, the
               # test's own waits for breaks that must not come; the dhv2-pending3* cases need
               # a transport the test can block
               "smb2.replay"]

#: Per-suite [server] options of wsd-smbd (MS-SMB2 leaves them to configuration): such a suite
#: runs against its own wsd-smbd started with these.  smb2.session re-authenticates as anonymous
#: (reauth2-4) -- guest/anonymous are refused unless configured, then behave as MS-SMB2 says.
#: "share" holds [[share]] tables (tests/smb/sut_servers.py WsdServer): smb2.acls.ACCESSBASED
#: connects to a share `hideunread` with access-based enumeration (Samba's test environment:
#: `hide unreadable = yes`); smb2.dosmode expects `hide files = /hidefile/` on its share.
#: "user" holds [[user]] tables: smb2.session.bind_different_user binds a second user's session
#: setup to the first user's session (SUITE_TORTURE_OPTIONS gives smbtorture that user).
SUITE_SERVER_OPTIONS: dict[str, dict[str, dict]] = {
    "smb2.session": {"wsd": {"allow_anonymous": True,
                             "user": [{"name": "wsduser2", "password": "Wsd-pass-2"}]}},
    "smb2.acls": {"wsd": {"share": [{"name": "hideunread", "hide_unreadable": True}]}},
    "smb2.dosmode": {"wsd": {"share": [{"name": "share", "hide_files": "/hidefile/"}]}},
}


#: Suites with a case that is silent for long (no smbtorture output while it works): the
#: stall guard waits at least this long for them.  smb2.compound_find.compound_find_close
#: creates 5000 files one by one and lists them (13-26 s without a line: each CREATE of a new
#: name scans the directory for another case of it, as Samba's does), smb2.dir.many and
#: large-files likewise; on a loaded machine that passed a 30 s guard.
SUITE_MIN_STALL: dict[str, float] = {"smb2.compound_find": 120.0, "smb2.dir": 120.0}

#: Per-suite smbtorture options that go with SUITE_SERVER_OPTIONS.
SUITE_TORTURE_OPTIONS: dict[str, dict[str, list[str]]] = {
    "smb2.session": {"wsd": ["--option=torture:user2name=wsduser2", "--option=torture:user2password=Wsd-pass-2"]},
}


def server_options(target: str, suite: str) -> dict:
    return SUITE_SERVER_OPTIONS.get(suite, {}).get(target, {})


def torture_options(target: str, suite: str) -> list[str]:
    return list(SUITE_TORTURE_OPTIONS.get(suite, {}).get(target, []))


PASS = {"success", "xfail"}
_RESULT = re.compile(r"^(success|successful|failure|fail|error|skip|xfail|uxsuccess): (.+?)( \[)?$")
_NORMALIZE = {"successful": "success", "fail": "failure"}


@dataclass
class SuiteResult:
    suite: str
    results: dict[str, str] = field(default_factory=dict)  # case -> success/failure/error/skip/timeout/...
    details: dict[str, str] = field(default_factory=dict)  # case -> failure text
    seconds: float = 0.0
    runs: int = 0
    log: str = ""

    def passed(self) -> set[str]:
        return {c for c, s in self.results.items() if s in PASS}

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.results.values():
            out[s] = out.get(s, 0) + 1
        return out

    def summary(self) -> str:
        c = self.counts()
        return (f"{self.suite}: {len(self.passed())}/{len(self.results)} pass"
                + "".join(f", {n} {k}" for k, n in sorted(c.items()) if k not in PASS) + f" ({self.seconds:.1f}s)")


def list_cases(suite: str) -> list[str]:
    """Case names as ``--fullname`` reports them (``smb2.read.eof``; ``smb2.connect`` for a lone test)."""
    r = subprocess.run([SMBTORTURE, "--list", suite], capture_output=True, text=True, timeout=60)
    out = []
    for ln in r.stdout.splitlines()[1:]:
        parts = ln.strip().split(".")
        if len(parts) >= 2 and parts[-1] == parts[-2]:
            parts = parts[:-1]
        name = ".".join(parts)
        if name and (name == suite or name.startswith(suite + ".")):
            out.append(name)
    return out


def parse_subunit(text: str) -> tuple[dict[str, str], dict[str, str], str | None]:
    """(results, details, the case that started but never finished)."""
    results: dict[str, str] = {}
    details: dict[str, str] = {}
    running = None
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        ln = lines[i]
        if ln.startswith("test: "):
            running = ln[6:].strip()
        else:
            m = _RESULT.match(ln)
            if m:
                status, name = _NORMALIZE.get(m.group(1), m.group(1)), m.group(2).strip()
                results[name] = status
                if running == name:
                    running = None
                if m.group(3):  # multi-line detail up to a lone "]"
                    buf = []
                    i += 1
                    while i < len(lines) and lines[i] != "]":
                        buf.append(lines[i])
                        i += 1
                    details[name] = "\n".join(buf)
        i += 1
    return results, details, running


def _run_once(argv: list[str], budget: float, stall: float) -> tuple[str, bool]:
    """Run smbtorture with its output in a file; kill it when stalled or over budget.

    It runs in a scratch directory: smbtorture makes its local temp dirs ("smbtortureXXXXXX")
    in its working directory and leaves them behind."""
    with tempfile.TemporaryFile("w+b") as out, tempfile.TemporaryDirectory(prefix="wsd-torture-") as scratch:
        p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True, cwd=scratch)
        start = last_change = time.monotonic()
        size = 0
        killed = False
        while p.poll() is None:
            time.sleep(0.2)
            now = time.monotonic()
            cur = os.fstat(out.fileno()).st_size
            if cur != size:
                size, last_change = cur, now
            if now - last_change > stall or now - start > budget:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
                killed = True
        out.seek(0)
        return out.read().decode("utf-8", "replace"), killed


def run_suite(host: str, port: int, share: str, creds: str, suite: str, *, cases: list[str] | None = None,
              budget: float = 300.0, stall: float = 60.0, client_conf: str | None = None,
              extra: list[str] | None = None) -> SuiteResult:
    """Run ``suite`` (or just ``cases`` of it) within ``budget`` seconds in all."""
    if SMBTORTURE is None:
        raise FileNotFoundError("smbtorture not installed (apt-get install samba-testsuite)")
    stall = max(stall, SUITE_MIN_STALL.get(suite, 0.0))
    res = SuiteResult(suite)
    conf = client_conf
    tmp = None
    if conf is None:
        tmp = tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False)
        tmp.write("[global]\n")
        tmp.close()
        conf = tmp.name
    base = [SMBTORTURE, f"//{host}/{share}", "-p", str(port), "-U", creds, "-s", conf, "--fullname",
            "--format=subunit", *(extra or [])]
    all_cases = cases or list_cases(suite)
    todo: list[str] | None = list(cases) if cases else None  # None: the whole suite by its name
    t0 = time.monotonic()
    try:
        while True:
            left = budget - (time.monotonic() - t0)
            if left <= 1:
                break
            text, killed = _run_once(base + (todo if todo else [suite]), left, stall)
            res.runs += 1
            res.log += text
            results, details, running = parse_subunit(text)
            res.results.update(results)
            res.details.update(details)
            if not killed:
                break
            if running:
                res.results[running] = "timeout"
                res.details[running] = f"no output for {stall:.0f}s or suite budget spent; killed"
            todo = [c for c in all_cases if c not in res.results]
            if not todo:
                break
    finally:
        if tmp is not None:
            os.unlink(tmp.name)
    for c in all_cases:
        res.results.setdefault(c, "not-run")
    res.seconds = time.monotonic() - t0
    return res


def load_pins(path: Path = PINS) -> dict:
    if path.exists():
        return json.loads(path.read_text())
    return {}


def merge_pins(target: str, updates: dict[str, list[str]], path: Path = PINS) -> None:
    """Write *updates* (suite -> pinned cases) for *target* into the pin file, re-read under
    an exclusive lock: runners of other suites that finish meanwhile keep their pins."""
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        pins = load_pins(path)
        pins.setdefault(target, {}).update(updates)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(pins, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", choices=["wsd", "samba"], default="wsd")
    ap.add_argument("--suite", action="append", help="suite(s) to run (default: all of SUITES)")
    ap.add_argument("--budget", type=float, default=300.0, help="seconds per suite")
    ap.add_argument("--stall", type=float, default=60.0, help="kill after this many seconds without output")
    ap.add_argument("--update-pins", action="store_true", help="write the passing cases into the pin file")
    ap.add_argument("--add-only", action="store_true",
                    help="with --update-pins: add newly passing cases, never drop a pinned one (regressions stay visible)")
    ap.add_argument("--json", help="write all per-case results here")
    ap.add_argument("--show-failures", action="store_true")
    ap.add_argument("--repeat", type=int, default=1,
                    help="run each suite N times; only cases passing every time are pinned")
    a = ap.parse_args(argv)

    sys.path.insert(0, str(HERE.parent))
    from sut_servers import KINDS  # noqa: E402

    suites = a.suite or SUITES
    root = Path(tempfile.mkdtemp(prefix=f"smbtorture-{a.target}-"))
    srv = KINDS[a.target](root)
    srv.start()
    all_results = {}
    updates: dict[str, list[str]] = {}
    try:
        pins = load_pins()
        for s in suites:
            stable: set[str] | None = None
            opts = server_options(a.target, s)
            own = None
            if opts:  # this suite gets a server of its own, configured for it
                own = KINDS[a.target](root / f"suite-{s}", server_options=opts)
                own.start()
            use = own or srv
            for _ in range(max(1, a.repeat)):
                r = run_suite(use.host, use.port, use.share, use.creds, s, budget=a.budget, stall=a.stall,
                              extra=torture_options(a.target, s))
                stable = r.passed() if stable is None else stable & r.passed()
                print(r.summary(), flush=True)
            all_results[s] = {"results": r.results, "details": r.details, "seconds": r.seconds}
            if stable != r.passed():
                print(f"  flaky (not pinned): {sorted(r.passed() - stable)}")
            if a.show_failures:
                for c, st in sorted(r.results.items()):
                    if st not in PASS and st != "skip":
                        print(f"  {st}: {c}: {r.details.get(c, '').strip()[:300]}")
            if a.update_pins:
                old = set(pins.setdefault(a.target, {}).get(s, [])) if a.add_only else set()
                lost = old - stable
                if lost:
                    print(f"  REGRESSION, pinned but not passing: {sorted(lost)}")
                updates[s] = sorted(stable | old)
            if own is not None:
                if not own.alive():
                    print(f"!! {a.target} server died during {s}; log tail:\n{own.log_tail()[-3000:]}")
                own.stop()
            elif not srv.alive():
                print(f"!! {a.target} server died during {s}; log tail:\n{srv.log_tail()[-3000:]}")
                srv.stop()
                srv = KINDS[a.target](root / f"restart-{s}")
                srv.start()
        if a.update_pins:
            merge_pins(a.target, updates)
        if a.json:
            Path(a.json).write_text(json.dumps(all_results, indent=1, sort_keys=True))
    finally:
        srv.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
