"""Run every benchmark module and print one table.

    .venv/bin/python bench/run.py [--quick] [--only GROUP,...] [--out PATH]

Every ``bench/bench_*.py`` module (in name order) is imported and its
``run(quick)`` called; each returns rows ``{"group", "name", "value", "unit",
"note"}``.  A module that cannot be imported or raises is reported as a
failed row (the traceback goes to stderr) and the others still run.
``--only`` takes group names (``ring``, ``switch``, ``smb``...): a module
runs when its file suffix or its ``GROUP`` matches.  The rows, with the
machine's description and each module's wall time, are written to
``bench/results.json`` (or ``--out``).
"""
from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
# The editable install (scripts/setup.sh) provides the packages; the source
# roots are appended as a fallback so the installed ones take precedence.
for _p in (ROOT, ROOT / "providers", ROOT / "native", ROOT / "tools", ROOT / "smb"):
    if str(_p) not in sys.path:
        sys.path.append(str(_p))
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))


def discover() -> list[str]:
    return sorted(p.stem for p in BENCH.glob("bench_*.py"))


def _failed(group: str, module: str, what: str, exc: BaseException) -> dict:
    return {"group": group, "name": f"{module} {what}", "value": None, "unit": "",
            "note": f"FAILED: {type(exc).__name__}: {exc}"[:300]}


def run_module(module: str, quick: bool, only: set[str] | None) -> tuple[list[dict], float, bool]:
    """(rows, seconds, ran) for one bench module."""
    suffix = module[len("bench_"):]
    t0 = time.perf_counter()
    try:
        mod = importlib.import_module(module)
    except Exception as e:  # noqa: BLE001 -- the runner turns any module failure into a row
        if only is not None and suffix not in only:
            return [], 0.0, False
        traceback.print_exc()
        return [_failed(suffix, module, "import", e)], time.perf_counter() - t0, True
    group = getattr(mod, "GROUP", suffix)
    if only is not None and suffix not in only and group not in only:
        return [], 0.0, False
    print(f"== {module} (quick={quick})", file=sys.stderr, flush=True)
    try:
        rows = list(mod.run(quick))
    except Exception as e:  # noqa: BLE001 -- the runner turns any module failure into a row
        traceback.print_exc()
        return [_failed(group, module, "run", e)], time.perf_counter() - t0, True
    clean = []
    for r in rows:
        clean.append({"group": str(r.get("group", group)), "name": str(r.get("name", "?")),
                      "value": None if r.get("value") is None else float(r["value"]),
                      "unit": str(r.get("unit", "")), "note": str(r.get("note", ""))})
    return clean, time.perf_counter() - t0, True


def fmt_value(v) -> str:
    if v is None:
        return "FAILED"
    if v != v:   # NaN
        return "nan"
    a = abs(v)
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 10:
        return f"{v:.1f}"
    return f"{v:.3g}"


def table(rows: list[dict]) -> str:
    if not rows:
        return "(no rows)"
    cols = [("group", [r["group"] for r in rows]), ("name", [r["name"] for r in rows]),
            ("value", [fmt_value(r["value"]) for r in rows]), ("unit", [r["unit"] for r in rows])]
    widths = [max(len(h), *(len(x) for x in vals)) for h, vals in cols]
    head = "  ".join(h.rjust(w) if h == "value" else h.ljust(w) for (h, _), w in zip(cols, widths)) + "  note"
    lines = [head, "-" * len(head)]
    for i, r in enumerate(rows):
        cells = [vals[i].rjust(w) if h == "value" else vals[i].ljust(w) for (h, vals), w in zip(cols, widths)]
        lines.append("  ".join(cells) + "  " + r["note"])
    return "\n".join(lines)


def machine(quick: bool) -> dict:
    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "quick": quick,
    }
    try:
        info["loadavg"] = os.getloadavg()
    except OSError:
        pass
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        if out.returncode == 0:
            info["git_commit"] = out.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    return info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="short runs (each module about 30 s or less)")
    ap.add_argument("--only", help="comma-separated groups, e.g. switch,ring")
    ap.add_argument("--out", default=str(BENCH / "results.json"), help="where to write the JSON results")
    args = ap.parse_args(argv)
    only = {g.strip() for g in args.only.split(",") if g.strip()} if args.only else None
    info = machine(args.quick)
    rows: list[dict] = []
    modules: dict[str, float] = {}
    t0 = time.perf_counter()
    for module in discover():
        r, secs, ran = run_module(module, args.quick, only)
        if ran:
            modules[module] = round(secs, 2)
            rows.extend(r)
    info["seconds"] = round(time.perf_counter() - t0, 2)
    print(table(rows))
    print(f"\n{info['cpu_count']} CPUs, Python {info['python']}, {info['date']}, quick={args.quick}, "
          f"{info['seconds']} s; modules: " + ", ".join(f"{m} {s} s" for m, s in modules.items()))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": info, "modules": modules, "rows": rows}, indent=1) + "\n")
    print(f"wrote {out}")
    return 1 if any(r["value"] is None for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
