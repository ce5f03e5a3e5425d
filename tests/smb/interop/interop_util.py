"""Helpers for the interop tests (imported by the test modules and conftest)."""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class SmbclientResult:
    argv: list[str]
    returncode: int
    stdout: str  # command output (errors appear here as NT_STATUS_...)
    stderr: str  # debug output (-d 5): negotiated dialect, signing, encryption

    @property
    def dialect(self) -> str | None:
        m = re.search(r"negotiated dialect\[(\w+)\]", self.stderr)
        return m.group(1) if m else None

    @property
    def signed_pdus(self) -> int:
        return self.stderr.count("signed SMB2 message")

    @property
    def encrypted_pdus(self) -> int:
        return self.stderr.count("Encrypted SMB2 message")

    def errors(self) -> list[str]:
        return [ln for ln in self.stdout.splitlines() if "NT_STATUS_" in ln]

    def describe(self) -> str:
        return (f"$ {' '.join(self.argv)}\nrc={self.returncode}\n--- stdout ---\n{self.stdout[-4000:]}"
                f"\n--- stderr (tail) ---\n{self.stderr[-3000:]}")

    def check(self) -> "SmbclientResult":
        assert self.returncode == 0 and not self.errors(), self.describe()
        return self


