"""Servers under test for the SMB interop tests and bench/bench_smb.py.

Two launchers with one interface:

* :class:`SambaServer` -- a real Samba ``smbd`` (plus ``samba-dcerpcd`` for the
  srvsvc pipe that ``smbclient -L`` needs), run in the foreground as a child
  process with a generated ``smb.conf`` whose every state directory lives in a
  temp dir, listening on 127.0.0.1/::1 only on an ephemeral port.  Its user is
  kept in a tdbsam in that temp dir; Samba needs a Unix account behind every
  SMB account, so the SMB name is mapped onto ``root`` with ``username map``
  (which needs root; the launcher refuses to run otherwise).
* :class:`WsdServer` -- our ``wsd-smbd`` (``python -m wsd_smb.server.cli``);
  ``WSD_SMBD_PYTHONPATH=DIR`` runs the wsd_smb found in DIR instead of the
  installed (editable) one.

Both write their log to ``<tmp>/server.log`` and expose ``log_tail()`` so the
pytest hooks in tests/smb/conftest.py can attach the log to a failing test.

This module is plain Python (no pytest) so that the bench can import it too.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

LOOPBACK = "127.0.0.1"

SAMBA_SMBD = shutil.which("smbd") or "/usr/sbin/smbd"
SAMBA_DCERPCD = "/usr/libexec/samba/samba-dcerpcd"
SMBPASSWD = shutil.which("smbpasswd") or "/usr/bin/smbpasswd"


class ServerUnavailable(RuntimeError):
    """The server cannot be started here (binary or module missing, not root)."""


def free_port(host: str = LOOPBACK) -> int:
    """An ephemeral TCP port that was free a moment ago on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_port(host: str, port: int, timeout: float, proc: subprocess.Popen | None = None) -> None:
    """Wait until ``host:port`` accepts a TCP connection (bounded by ``timeout``)."""
    deadline = time.monotonic() + timeout
    last: OSError | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError as e:  # not listening yet
            last = e
            time.sleep(0.05)
    raise TimeoutError(f"{host}:{port} did not accept within {timeout}s ({last})")


def _stop(proc: subprocess.Popen | None, grace: float = 5.0) -> None:
    """Terminate one child we started (its own process group), then kill it."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(grace)


@dataclass
class SmbServer:
    """What a test needs to reach a running server."""

    kind: str  # "samba" or "wsd"
    root: Path  # temp dir holding config, state and log
    host: str = LOOPBACK
    port: int = 0
    share: str = "share"
    user: str = "wsduser"
    password: str = "Wsd-pass-1"
    procs: list[subprocess.Popen] = field(default_factory=list)

    @property
    def share_path(self) -> Path:
        """The directory exported as ``share`` (the server's view of it)."""
        return self.root / "share"

    @property
    def log_path(self) -> Path:
        return self.root / "server.log"

    @property
    def unc(self) -> str:
        return f"//{self.host}/{self.share}"

    @property
    def creds(self) -> str:
        """``USER%PASS`` as smbclient/smbtorture take it."""
        return f"{self.user}%{self.password}"

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def log_tail(self, since: int = 0, max_bytes: int = 20000) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(max(since, self.log_size() - max_bytes))
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return "(no log)"

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.procs)

    def start(self) -> "SmbServer":
        raise NotImplementedError

    def stop(self) -> None:
        for p in reversed(self.procs):
            _stop(p)
        self.procs.clear()

    def __enter__(self) -> "SmbServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


SMB_CONF = """\
[global]
  server role = standalone server
  workgroup = WSDTEST
  netbios name = WSDSAMBA
  smb ports = {port}
  interfaces = lo
  bind interfaces only = yes
  disable netbios = yes
  private dir = {root}/private
  lock directory = {root}/lock
  state directory = {root}/state
  cache directory = {root}/cache
  pid directory = {root}/pid
  ncalrpc dir = {root}/ncalrpc
  binddns dir = {root}/private/bind-dns
  log file = {root}/log.%m
  passdb backend = tdbsam:{root}/private/passdb.tdb
  username map = {root}/users.map
  # smbd would start samba-dcerpcd with the default /etc/samba/smb.conf;
  # we start it ourselves with this file instead.
  rpc start on demand helpers = no
  load printers = no
  printcap name = /dev/null
  disable spoolss = yes
  map to guest = never
  server min protocol = SMB2_02
  server max protocol = SMB3_11
  server signing = auto
  idmap config * : range = 100000-199999
  idmap config * : backend = tdb
[{share}]
  path = {root}/share
  read only = no
  guest ok = no
  # as in Samba's own test environment (smbtorture smb2.dosmode expects it)
  hide files = /hidefile/
"""


class SambaServer(SmbServer):
    """A real smbd on loopback with everything in ``root``."""

    def __init__(self, root: Path, port: int = 0, **kw):
        super().__init__(kind="samba", root=Path(root), port=port, **kw)

    @staticmethod
    def unavailable_reason() -> str | None:
        for b in (SAMBA_SMBD, SAMBA_DCERPCD, SMBPASSWD):
            if not os.access(b, os.X_OK):
                return f"{b} not installed (apt-get install samba)"
        if os.geteuid() != 0:
            return "a private smbd with a mapped user needs root"
        return None

    @property
    def conf(self) -> Path:
        return self.root / "smb.conf"

    def start(self) -> "SambaServer":
        why = self.unavailable_reason()
        if why:
            raise ServerUnavailable(why)
        if not self.port:
            self.port = free_port()
        for d in ("private", "lock", "state", "cache", "pid", "ncalrpc", "share"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        self.conf.write_text(SMB_CONF.format(port=self.port, root=self.root, share=self.share))
        (self.root / "users.map").write_text(f"root = {self.user}\n")
        r = subprocess.run(
            [SMBPASSWD, "-c", str(self.conf), "-a", "-s", "root"],
            input=f"{self.password}\n{self.password}\n", capture_output=True, text=True, timeout=60,
        )
        if r.returncode != 0:
            raise RuntimeError(f"smbpasswd failed: {r.stdout}{r.stderr}")
        log = open(self.log_path, "ab")
        common = ["-F", "--no-process-group", "-s", str(self.conf), "--debug-stdout", "-d", "1"]
        try:
            self.procs.append(subprocess.Popen([SAMBA_DCERPCD, "--libexec-rpcds", *common], stdout=log,
                                               stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                               start_new_session=True))
            self.procs.append(subprocess.Popen([SAMBA_SMBD, *common], stdout=log, stderr=subprocess.STDOUT,
                                               stdin=subprocess.DEVNULL, start_new_session=True))
            wait_port(self.host, self.port, 30, self.procs[-1])
            # smbd listens before samba-dcerpcd has its pipes up: wait for srvsvc (smbclient -L needs it)
            deadline = time.monotonic() + 30
            while not (self.root / "ncalrpc" / "np" / "srvsvc").exists():
                if time.monotonic() > deadline or self.procs[0].poll() is not None:
                    raise TimeoutError("samba-dcerpcd did not create its srvsvc pipe within 30s")
                time.sleep(0.05)
        except BaseException:
            self.stop()
            raise
        finally:
            log.close()
        return self


def wsd_cli_available() -> bool:
    try:
        return importlib.util.find_spec("wsd_smb.server.cli") is not None
    except ModuleNotFoundError:
        return False


class WsdServer(SmbServer):
    """Our wsd-smbd, as a subprocess of the current interpreter."""

    def __init__(self, root: Path, port: int = 0, python: str | None = None, extra_args: list[str] | None = None,
                 server_options: dict | None = None, config_text: str = "", **kw):
        super().__init__(kind="wsd", root=Path(root), port=port, **kw)
        self.python = python or sys.executable
        self.extra_args = list(extra_args or [])
        #: [server] settings of the TOML configuration (e.g. allow_anonymous=True), passed with --config;
        #: the key "share" holds [[share]] tables instead (dicts): one named like the main share
        #: configures it (then it is not given with --share), others are extra shares, each in
        #: root/<name> unless the table has a path; the key "user" holds [[user]] tables (more
        #: accounts next to the admin user)
        self.server_options = dict(server_options or {})
        self.share_tables = [dict(t) for t in self.server_options.pop("share", [])]
        self.user_tables = [dict(t) for t in self.server_options.pop("user", [])]
        #: more TOML after them ([[share]] / [[user]] tables), also passed with --config
        self.config_text = config_text

    @staticmethod
    def unavailable_reason() -> str | None:
        if not wsd_cli_available():
            return "wsd_smb.server.cli is not importable (wsd-smbd not built yet)"
        return None

    def config_path(self) -> Path:
        return self.root / "wsd-smbd.toml"

    def command(self) -> list[str]:
        conf = ["--config", str(self.config_path())] if self._has_config() else []
        main = [] if any(t["name"] == self.share for t in self.share_tables) else \
            ["--share", f"{self.share}={self.share_path}"]
        return [self.python, "-m", "wsd_smb.server.cli", *conf, "--port", str(self.port), *main,
                "--user", f"{self.user}:{self.password}:admin", *self.extra_args]

    def _has_config(self) -> bool:
        return bool(self.server_options or self.share_tables or self.user_tables or self.config_text)

    def share_dir(self, name: str) -> Path:
        """The directory of the share *name* (the main share's, or an extra share's)."""
        if name == self.share:
            return self.share_path
        for t in self.share_tables:
            if t["name"] == name and "path" in t:
                return Path(t["path"])
        return self.root / name

    def start(self) -> "WsdServer":
        why = self.unavailable_reason()
        if why:
            raise ServerUnavailable(why)
        self.share_path.mkdir(parents=True, exist_ok=True)
        if self._has_config():
            lines = ["[server]"] + [f"{k} = {json.dumps(v)}" for k, v in sorted(self.server_options.items())]
            for t in self.share_tables:  # JSON strings, lists and booleans are TOML too
                d = self.share_dir(t["name"])
                d.mkdir(parents=True, exist_ok=True)
                lines += ["", "[[share]]"] + [f"{k} = {json.dumps(v)}" for k, v in
                                              sorted(dict(t, path=str(d)).items())]
            for t in self.user_tables:
                lines += ["", "[[user]]"] + [f"{k} = {json.dumps(v)}" for k, v in sorted(t.items())]
            self.config_path().write_text("\n".join(lines) + "\n\n" + self.config_text)
        if not self.port:
            self.port = free_port()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if os.environ.get("WSD_SMBD_PYTHONPATH"):
            # run another copy of wsd_smb (e.g. `git archive HEAD smb | tar -x -C DIR`, DIR/smb) instead of
            # the working tree, which other people may be editing while a long run goes on
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.environ["WSD_SMBD_PYTHONPATH"],
                                                              env.get("PYTHONPATH")]))
        with open(self.log_path, "ab") as log:
            log.write(("$ " + " ".join(self.command()) + "\n").encode())
            log.flush()
            self.procs.append(subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                               stdin=subprocess.DEVNULL, env=env, start_new_session=True))
        try:
            wait_port(self.host, self.port, 30, self.procs[-1])
        except BaseException:
            self.stop()
            raise
        return self


KINDS = {"samba": SambaServer, "wsd": WsdServer}
