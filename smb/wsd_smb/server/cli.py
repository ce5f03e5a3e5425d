"""`wsd-smbd`: the SMB2/3 server program."""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys

from ..core.state import Server
from .config import ConfigError, load
from .control import ControlServer
from .driver import SmbServer

log = logging.getLogger("wsd_smb.server")


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        base = f"ts={self.formatTime(record, '%Y-%m-%dT%H:%M:%S')} level={record.levelname.lower()} " \
               f"logger={record.name} {record.getMessage()}"
        if record.exc_info:
            base += "\n" + self.formatException(record.exc_info)
        return base


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {"ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"), "level": record.levelname.lower(),
               "logger": record.name}
        msg = record.getMessage()
        for tok in msg.split(" "):
            k, sep, v = tok.partition("=")
            if sep:
                doc[k] = v.strip("'\"")
            else:
                doc.setdefault("msg", "")
                doc["msg"] = (doc["msg"] + " " + tok).strip()
        return json.dumps(doc)


def setup_logging(fmt: str, verbose: int) -> None:
    h = logging.StreamHandler(sys.stderr)
    h.setFormatter(JsonFormatter() if fmt == "json" else KeyValueFormatter())
    root = logging.getLogger("wsd_smb")
    root.handlers[:] = [h]
    root.setLevel(logging.DEBUG if verbose > 1 else logging.INFO)
    root.propagate = False


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="wsd-smbd", description="SMB2/3 file server (wsd)")
    p.add_argument("--config", help="TOML configuration file")
    p.add_argument("--host", help="listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="listen port (default 4450; 445 needs root)")
    p.add_argument("--share", action="append", default=[], metavar="NAME=PATH", help="export PATH as NAME")
    p.add_argument("--user", action="append", default=[], metavar="NAME:PASSWORD[:admin]", help="add an account")
    p.add_argument("--log-format", choices=["kv", "json"])
    p.add_argument("-v", "--verbose", action="count", default=0)
    return p.parse_args(argv)


def reload_config(server: Server, settings, reread) -> None:
    """SIGHUP: read the configuration again (*reread* returns new Settings or raises
    ConfigError) and apply it (Server.reload); on an error the running configuration
    stays.  The embedded default's generated account is kept when there still is no
    [[user]]."""
    try:
        new = reread()
    except ConfigError as e:
        log.warning("event=reload_failed error=%r (the running configuration stays)", str(e))
        return
    if new.generated_password is not None and settings.generated_password is not None:
        new.server.users = dict(settings.server.users)
    changes = server.reload(new.server)
    for what in ("host", "port", "workers", "log_format", "state_dir", "control_socket"):
        if getattr(new, what) != getattr(settings, what):
            changes["restart"].append(what)
    log.info("event=reloaded users=%d shares_added=%s shares_changed=%s shares_removed=%s options=%s",
             len(server.config.users), ",".join(changes["added"]) or "-", ",".join(changes["changed"]) or "-",
             ",".join(changes["removed"]) or "-", ",".join(changes["options"]) or "-")
    if changes["restart"]:
        log.warning("event=reload_needs_restart settings=%s", ",".join(changes["restart"]))


def _addr_text(sockname) -> str:
    host, port = sockname[0], sockname[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def _serve(settings, reread=None) -> int:
    server = Server(settings.server)
    smb = SmbServer(server, workers=settings.workers)
    await smb.start(settings.host, settings.port)
    port = smb.port
    control = None
    ctl_path = settings.control_socket_path()
    if ctl_path is not None:
        control = ControlServer(server, ctl_path, listen=lambda: [_addr_text(s.getsockname()) for s in smb.sockets])
        if not await control.start():
            control = None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    if reread is not None:
        try:
            loop.add_signal_handler(signal.SIGHUP, reload_config, server, settings, reread)
        except (NotImplementedError, RuntimeError):
            pass
    shares = ", ".join(f"{s.name}={s.local_path}" for s in settings.server.shares.values() if s.type == "disk")
    log.info("event=listening host=%s port=%d shares=%s", settings.host, port, shares)
    user = next(iter(settings.server.users.values()))
    pw = settings.generated_password or "<password>"
    share = next(s.name for s in settings.server.shares.values() if s.type == "disk")
    print(f"wsd-smbd listening on {settings.host}:{port}", flush=True)
    if settings.generated_password:
        print(f"generated user: {user.name}  password: {pw}", flush=True)
    print(f"reach it with: smbclient //{settings.host}/{share} -p {port} -U {user.name}%{pw}", flush=True)
    await stop.wait()
    log.info("event=stopping reason=signal")
    if control is not None:
        await control.close()
    await smb.close()
    log.info("event=stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def reread():
        return load(args.config, host=args.host, port=args.port, shares=args.share, users=args.user,
                    log_format=args.log_format)
    try:
        settings = reread()
    except ConfigError as e:
        print(f"wsd-smbd: {e}", file=sys.stderr)
        return 2
    setup_logging(settings.log_format, args.verbose)
    try:
        return asyncio.run(_serve(settings, reread))
    except OSError as e:
        print(f"wsd-smbd: cannot listen on {settings.host}:{settings.port}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
