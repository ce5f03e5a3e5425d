"""The C API under two real threads, built from native/ring.c with gcc:
plain -O2, ThreadSanitizer (data races / ordering on the record bytes) and
AddressSanitizer+UBSan (bounds). See tests/ring/c/ring_stress.c."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NATIVE = os.path.join(ROOT, "native")
STRESS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "c", "ring_stress.c")

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc (build-essential)")

VARIANTS = {
    "O2": (["-O2"], 600_000),
    "tsan": (["-O1", "-g", "-fsanitize=thread", "-Wno-tsan"], 120_000),
    "asan-ubsan": (["-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all"], 120_000),
}


@pytest.mark.parametrize(("variant", "capacity"), [
    ("O2", 4096), ("O2", 1 << 16), ("tsan", 4096), ("tsan", 1 << 16), ("asan-ubsan", 4096)])
def test_two_threads_every_message_intact(tmp_path, variant, capacity):
    flags, messages = VARIANTS[variant]
    if capacity < 1 << 16:
        messages //= 3  # a tiny ring means a sleep/wake every few messages: slow on a busy box
    exe = tmp_path / f"ring_stress_{variant}"
    build = subprocess.run(
        ["gcc", "-std=c11", "-Wall", "-Wextra", "-Werror", *flags, "-pthread", f"-I{NATIVE}",
         STRESS, os.path.join(NATIVE, "ring.c"), "-o", str(exe)],
        capture_output=True, text=True, timeout=120)
    assert build.returncode == 0, build.stderr
    env = dict(os.environ, TSAN_OPTIONS="halt_on_error=1 exitcode=66",
               ASAN_OPTIONS="detect_leaks=1")
    run = subprocess.run([str(exe), str(messages), str(capacity)], capture_output=True, text=True,
                         timeout=110, env=env)
    assert run.returncode == 0, f"exit {run.returncode}\n{run.stdout}\n{run.stderr[-4000:]}"
    assert run.stdout.startswith(f"ok {messages} messages")
    assert "WARNING" not in run.stderr, run.stderr[-4000:]
