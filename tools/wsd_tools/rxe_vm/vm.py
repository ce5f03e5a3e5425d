"""Booting the rxe guest and running one command in it.

QEMU runs with TCG (KVM cannot boot a stock kernel on the machines this was
made for), no network card (``-nic none``) and three 9p shares: the image's
root (read-only), the project (read-write, at the same path as on the host
unless that path would shadow a system directory, then ``/work``) and a
per-run directory holding stage 2, the command and, afterwards, its exit code.

The command's stdout and stderr arrive merged on the serial console, between
``MARK_BEGIN`` and ``MARK_EXIT<rc>@@``; everything before is boot noise, shown
only with ``verbose`` or when the boot fails.
"""

from __future__ import annotations

import dataclasses
import os
import selectors
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import (EXIT_HARNESS, EXIT_TIMEOUT, GUEST_ADDR, GUEST_GID_INDEX, GUEST_NETDEV, GUEST_RDMA_DEV,
               guest, hostenv)
from .image import Image

# WSD_RXE_VM_APPEND adds kernel parameters (debugging: e.g. "loglevel=7").
KERNEL_CMDLINE = "console=ttyS0 quiet loglevel=1 panic=-1 rdinit=/init"

POWEROFF_GRACE = 20.0     # seconds from the exit marker to QEMU exiting before it is killed

SOURCE_ROOTS = ("", "providers", "native", "tools", "smb")
SYSTEM_DIRS = ("/", "/bin", "/boot", "/dev", "/etc", "/lib", "/lib64", "/proc", "/root", "/run", "/sbin",
               "/sys", "/tmp", "/usr", "/var", "/wsdrun")


@dataclasses.dataclass
class RunResult:
    status: int              # the guest command's exit status, or EXIT_TIMEOUT / EXIT_HARNESS
    harness_error: str | None
    boot_seconds: float | None   # host time from QEMU start to MARK_BEGIN
    total_seconds: float
    output: bytes            # what the command printed (also streamed to `out`)


def guest_project_path(project: Path) -> str:
    p = str(project.resolve())
    if any(p == d or (d != "/" and p.startswith(d + "/")) for d in SYSTEM_DIRS):
        return "/work"
    return p


def guest_env(guest_project: str) -> dict[str, str]:
    roots = [guest_project if not r else f"{guest_project}/{r}" for r in SOURCE_ROOTS]
    return {
        "WSD_RXE_VM": "1",
        "WSD_RDMA_DEV": GUEST_RDMA_DEV,
        "WSD_RDMA_NETDEV": GUEST_NETDEV,
        "WSD_RDMA_ADDR": GUEST_ADDR,
        "WSD_RDMA_GID_INDEX": str(GUEST_GID_INDEX),
        "PYTHONPATH": ":".join(roots),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
    }


def qemu_command(image: Image, project: Path, rundir: Path, smp: int, mem_mib: int,
                 interactive: bool = False) -> list[str]:
    shares = [("root", image.rootfs, guest.TAG_ROOT, True),
              ("proj", project, guest.TAG_PROJECT, False),
              ("run", rundir, guest.TAG_RUN, False)]
    cmd = [hostenv.tool("qemu-system-x86_64"),
           "-nodefaults", "-no-user-config",
           "-machine", "pc,accel=tcg", "-cpu", "max",
           "-smp", str(smp), "-m", str(mem_mib),
           "-display", "none", "-nic", "none", "-no-reboot",
           "-kernel", str(image.boot_kernel), "-initrd", str(image.initrd),
           "-append", " ".join([KERNEL_CMDLINE, os.environ.get("WSD_RXE_VM_APPEND", "")]).strip(),
           "-serial", "mon:stdio" if interactive else "stdio"]
    for ident, path, tag, ro in shares:
        opts = f"local,id=fs{ident},path={path},security_model=none"
        if ro:
            opts += ",readonly=on"
        cmd += ["-fsdev", opts, "-device", f"virtio-9p-pci,fsdev=fs{ident},mount_tag={tag}"]
    return cmd


def _prepare_rundir(rundir: Path, guest_project: str, guest_cwd: str, mode: str,
                    argv: list[str], env: dict[str, str]) -> None:
    (rundir / "stage2.sh").write_text(guest.STAGE2)
    cfg = {"WSD_MODE": mode, "WSD_GUEST_PROJECT": guest_project, "WSD_CWD": guest_cwd,
           "WSD_PROJECT_CACHE": os.environ.get("WSD_RXE_VM_PROJECT_CACHE", "")}
    (rundir / "config").write_text("".join(f"{k}={shlex.quote(v)}\n" for k, v in cfg.items()))
    lines = ["# written by wsd-rxe-vm: the command to run in the guest\n"]
    lines += [f"export {k}={shlex.quote(v)}\n" for k, v in env.items()]
    if argv:
        lines.append("exec " + shlex.join(argv) + "\n")
    (rundir / "cmd.sh").write_text("".join(lines))


def _map_cwd(project: Path, guest_project: str, cwd: Path) -> str:
    try:
        rel = cwd.resolve().relative_to(project.resolve())
    except ValueError:
        return guest_project
    return guest_project if str(rel) == "." else f"{guest_project}/{rel}"


def run(image: Image, project: Path, argv: list[str], *, timeout: float = 900.0,
        extra_env: dict[str, str] | None = None, smp: int = 2, mem_mib: int = 1024,
        verbose: bool = False, out=None, err=None, cwd: Path | None = None) -> RunResult:
    """Boot, run ``argv`` in the guest, power off; stream its output to ``out``."""
    out = out if out is not None else sys.stdout.buffer
    err = err if err is not None else sys.stderr
    gproj = guest_project_path(project)
    env = guest_env(gproj)
    env.update(extra_env or {})
    rundir = Path(tempfile.mkdtemp(prefix="wsd-rxe-vm-"))
    try:
        _prepare_rundir(rundir, gproj, _map_cwd(project, gproj, cwd or Path.cwd()), "run", argv, env)
        cmd = qemu_command(image, project, rundir, smp, mem_mib)
        return _drive(cmd, rundir, timeout, verbose, out, err)
    finally:
        shutil.rmtree(rundir, ignore_errors=True)


def _drive(cmd: list[str], rundir: Path, timeout: float, verbose: bool, out, err) -> RunResult:
    t0 = time.monotonic()
    deadline = t0 + timeout
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ, "out")
    sel.register(proc.stderr, selectors.EVENT_READ, "err")
    boot_log = bytearray()
    qemu_err = bytearray()
    output = bytearray()
    pending = b""
    state = "boot"            # boot -> body -> done
    status: int | None = None
    setup_failed: str | None = None
    boot_s: float | None = None
    timed_out = False
    begin = guest.MARK_BEGIN.encode()
    mexit = guest.MARK_EXIT.encode()
    mfail = guest.MARK_SETUP_FAILED.encode()

    def handle_line(line: bytes) -> None:
        nonlocal state, status, setup_failed, boot_s
        line = line.rstrip(b"\r")
        if state == "boot":
            boot_log.extend(line + b"\n")
            if verbose:
                err.write(line.decode(errors="replace") + "\n")
                err.flush()
            if mfail in line:
                setup_failed = line.split(mfail, 1)[1].decode(errors="replace").strip() or "set-up failed"
                state = "done"
            elif line.endswith(begin):
                state = "body"
                boot_s = time.monotonic() - t0
            return
        if state == "body":
            # The marker follows the command's last byte; if that was not a
            # newline, what precedes the marker is unterminated output.
            head, sep, tail = line.rpartition(mexit)
            if sep and tail.endswith(b"@@") and tail[:-2].isdigit():
                status = int(tail[:-2])
                state = "done"
                if head:
                    output.extend(head)
                    out.write(head)
                    out.flush()
                return
            output.extend(line + b"\n")
            out.write(line + b"\n")
            out.flush()

    open_streams = 2
    done_at: float | None = None
    try:
        while open_streams:
            now = time.monotonic()
            if state == "done":
                done_at = done_at or now
                if proc.poll() is not None or now - done_at > POWEROFF_GRACE:
                    break
            remaining = deadline - now
            if remaining <= 0:
                timed_out = True
                break
            for key, _ in sel.select(timeout=min(remaining, 1.0)):
                chunk = os.read(key.fileobj.fileno(), 65536)
                if not chunk:
                    sel.unregister(key.fileobj)
                    open_streams -= 1
                    continue
                if key.data == "err":
                    qemu_err.extend(chunk)
                    continue
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    handle_line(line)
        if pending and not timed_out:
            handle_line(pending)
        # Give the guest a moment to power off after the exit marker.
        try:
            proc.wait(timeout=0 if timed_out or done_at else POWEROFF_GRACE)
        except subprocess.TimeoutExpired:
            pass
    finally:
        # Also on Ctrl-C: QEMU runs in its own session and would outlive us.
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
    sel.close()
    proc.stdout.close()
    proc.stderr.close()
    total = time.monotonic() - t0
    if status is None:
        rc_file = rundir / "rc"
        if rc_file.exists() and rc_file.read_text().strip().isdigit():
            status = int(rc_file.read_text().strip())
    if timed_out and status is None:
        _dump(err, "hard timeout", boot_log, qemu_err, verbose)
        return RunResult(EXIT_TIMEOUT, f"hard timeout after {total:.0f} s", boot_s, total, bytes(output))
    if setup_failed is not None:
        setup_log = rundir / "setup.log"
        detail = setup_log.read_text(errors="replace") if setup_log.exists() else ""
        _dump(err, f"guest set-up failed: {setup_failed}\n{detail}", boot_log, qemu_err, verbose)
        return RunResult(EXIT_HARNESS, f"guest set-up failed: {setup_failed}", boot_s, total, bytes(output))
    if status is None:
        why = f"VM ended without an exit marker (qemu status {proc.returncode})"
        _dump(err, why, boot_log, qemu_err, verbose)
        return RunResult(EXIT_HARNESS, why, boot_s, total, bytes(output))
    return RunResult(status, None, boot_s, total, bytes(output))


def _dump(err, why: str, boot_log: bytes, qemu_err: bytes, verbose: bool) -> None:
    err.write(f"wsd-rxe-vm: {why}\n")
    if not verbose and boot_log:
        err.write("--- guest console (last 40 lines) ---\n")
        err.write("\n".join(boot_log.decode(errors="replace").splitlines()[-40:]) + "\n")
    if qemu_err:
        err.write("--- qemu stderr ---\n" + qemu_err.decode(errors="replace")[-2000:] + "\n")
    err.flush()


def shell(image: Image, project: Path, *, smp: int = 2, mem_mib: int = 1024,
          extra_env: dict[str, str] | None = None) -> int:
    """Interactive shell in the guest on this terminal (Ctrl-A X quits QEMU)."""
    gproj = guest_project_path(project)
    env = guest_env(gproj)
    env.update(extra_env or {})
    rundir = Path(tempfile.mkdtemp(prefix="wsd-rxe-vm-"))
    try:
        _prepare_rundir(rundir, gproj, _map_cwd(project, gproj, Path.cwd()), "shell", [], env)
        return subprocess.call(qemu_command(image, project, rundir, smp, mem_mib, interactive=True))
    finally:
        shutil.rmtree(rundir, ignore_errors=True)
