"""``wsd-smbstatus``: report on a running wsd-smbd, like Samba's ``smbstatus``.

    wsd-smbstatus [--state-dir DIR | --socket PATH | --config FILE] [-b | -S | -L] [-j]

It asks the server's control socket (``<state_dir>/wsd-smbd.ctl``, see
smb/wsd_smb/admin/control.py) for ``{"op": "status"}`` and prints the sessions, the share
connections (tree connects) and the locked files (opens, then byte-range locks) as aligned
tables, or the whole answer as JSON with ``-j``.  ``-b`` prints the sessions only, ``-S`` the
shares only, ``-L`` the locks only (``-S -L`` both).

The socket: ``--socket PATH``; else ``--state-dir DIR`` -> DIR/wsd-smbd.ctl; else the
``[server]`` table of ``--config FILE`` (``control_socket``, else ``state_dir``) as
wsd-smbd reads it; else wsd-smbd's default state folder ($XDG_STATE_HOME/wsd, else
./state).  Relative paths are taken from the current folder, as wsd-smbd takes them from its own.

Exit codes: 0 report printed; 1 no server answers there (the message says where it looked);
2 usage or configuration error.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
import tomllib
from pathlib import Path

SOCKET_NAME = "wsd-smbd.ctl"
EXIT_OK, EXIT_NO_SERVER, EXIT_USAGE = 0, 1, 2
#: the answer of a status request is bounded (a few MB even with thousands of opens)
MAX_ANSWER = 64 * 1024 * 1024


class NoServer(Exception):
    """No wsd-smbd answers on the socket."""


class UsageError(Exception):
    pass


def default_state_dir() -> Path:
    """wsd-smbd's default state folder (server/config.py default_state_dir)."""
    xdg = os.environ.get("XDG_STATE_HOME")
    return Path(xdg) / "wsd" if xdg else Path("state")


def socket_path(args: argparse.Namespace) -> Path:
    if args.socket:
        return Path(args.socket)
    if args.state_dir:
        return Path(args.state_dir) / SOCKET_NAME
    if args.config:
        try:
            with open(args.config, "rb") as f:
                srv = tomllib.load(f).get("server", {})
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise UsageError(f"{args.config}: {e}") from None
        if not isinstance(srv, dict):
            raise UsageError(f"{args.config}: [server] is not a table")
        ctl = srv.get("control_socket")
        if ctl is not None:
            if not isinstance(ctl, str):
                raise UsageError(f"{args.config}: control_socket must be a path")
            if not ctl:
                raise UsageError(f'{args.config}: control_socket = "" (the server runs without a control socket)')
            return Path(ctl)
        if "state_dir" in srv:
            return Path(str(srv["state_dir"])) / SOCKET_NAME
    return default_state_dir() / SOCKET_NAME


def request(path: Path, op: str = "status", timeout: float = 10.0) -> dict:
    """Send one request, return the answer object (raises NoServer, or RuntimeError for an
    error answer)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        try:
            s.connect(os.fspath(path))
        except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError) as e:
            raise NoServer(f"no wsd-smbd is running with the control socket {path} ({e.strerror})") from None
        except PermissionError as e:
            raise NoServer(f"cannot reach {path}: {e.strerror} (the socket is mode 0600: run as the server's "
                           "user)") from None
        except OSError as e:
            raise NoServer(f"cannot reach {path}: {e}") from None
        s.sendall(json.dumps({"op": op}).encode() + b"\n")
        buf = bytearray()
        deadline = time.monotonic() + timeout
        while b"\n" not in buf:
            if len(buf) > MAX_ANSWER or time.monotonic() > deadline:
                raise NoServer(f"{path}: the answer is too long or too slow")
            try:
                chunk = s.recv(1 << 20)
            except socket.timeout:
                raise NoServer(f"{path}: the server did not answer within {timeout:g} s") from None
            except OSError as e:
                raise NoServer(f"{path}: {e}") from None
            if not chunk:
                raise NoServer(f"{path}: the server closed the connection without an answer")
            buf += chunk
    finally:
        s.close()
    try:
        doc = json.loads(bytes(buf[:buf.index(b"\n")]))
    except ValueError:
        raise NoServer(f"{path}: the answer is not JSON (is this a wsd-smbd control socket?)") from None
    if not isinstance(doc, dict):
        raise NoServer(f"{path}: the answer is not a JSON object")
    if "error" in doc:
        err = doc["error"] if isinstance(doc["error"], dict) else {"message": str(doc["error"])}
        raise RuntimeError(f"the server refused the request: {err.get('code', '?')}: {err.get('message', '')}")
    return doc


# ------------------------------------------------------------------ human output
def table(headers: list[str], rows: list[list]) -> str:
    """Aligned columns, a dashed line under the headers (smbstatus' look)."""
    cells = [[str(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(vals):
        return "  ".join(v.ljust(w) for v, w in zip(vals, widths)).rstrip()
    head = line(headers)
    return "\n".join([head, "-" * len(head)] + [line(r) for r in cells])


def when(t: float | None) -> str:
    if not t:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def duration(sec: float) -> str:
    sec = int(sec)
    d, rem = divmod(sec, 86400)
    h, rem = divmod(rem, 3600)
    m, s = divmod(rem, 60)
    return (f"{d}d" if d else "") + f"{h:02d}:{m:02d}:{s:02d}"


def sid(v) -> str:
    return "-" if v is None else f"0x{v:x}"


def machine(d: dict) -> str:
    name, addr = d.get("client_name") or "", d.get("client_address") or ""
    return f"{name} ({addr})" if name and addr else (addr or name or "-")


def oplock_text(o: dict) -> str:
    if o.get("lease_state") is not None:
        return f"LEASE({o['lease_state']})" + (" BREAKING" if o.get("lease_breaking") else "")
    level = o.get("oplock_level") or "NONE"
    return level + (" BREAKING" if o.get("oplock_state") == "Breaking" else "")


def render(status: dict, sessions: bool, shares: bool, locks: bool) -> str:
    srv = status.get("server", {})
    out = [f"wsd-smbd version {srv.get('version', '?')}  pid {srv.get('pid', '?')}  "
           f"listening on {', '.join(srv.get('listen') or ['?'])}  started {when(srv.get('start_time'))}", ""]
    if sessions:
        rows = [[sid(s["session_id"]), s["user"] or "-", s["domain"] or "-", machine(s), s["dialect"],
                 s["encryption"], s["signing"], s["num_tree_connects"], s["num_opens"], len(s["channels"]),
                 duration(s["connected_seconds"]), duration(s["idle_seconds"])]
                for s in status.get("sessions", [])]
        out += [table(["Session ID", "Username", "Domain", "Machine", "Protocol Version", "Encryption", "Signing",
                       "Trees", "Opens", "Channels", "Connected", "Idle"], rows), ""]
    if shares:
        rows = [[t["share"], sid(t["session_id"]), t["user"] or "-", machine(t), when(t["connected_time"]),
                 t["encryption"], t["signing"], t["num_opens"]] for t in status.get("tree_connects", [])]
        out += [table(["Service", "Session ID", "Username", "Machine", "Connected at", "Encryption", "Signing",
                       "Opens"], rows), ""]
    if locks:
        opens = status.get("opens", [])
        if not opens:
            out += ["No locked files", ""]
        else:
            rows = [[o["file_global_id"], sid(o["session_id"]), o["user"] or "-", o["deny_mode"],
                     f"0x{o['granted_access']:x}", o["rw"], oplock_text(o),
                     ("durable" if o["is_durable"] else "") + (" persistent" if o["is_persistent"] else "") or "-",
                     o["share"], o["path"] or ".", when(o["open_time"])] for o in opens]
            out += ["Locked files:",
                    table(["File ID", "Session ID", "User", "DenyMode", "Access", "R/W", "Oplock", "Durable",
                           "SharePath", "Name", "Time"], rows), ""]
        brl = status.get("byte_range_locks", [])
        if brl:
            rows = [[b["share"], b["path"], b["offset"], b["length"], "EXCLUSIVE" if b["exclusive"] else "SHARED",
                     b["file_global_id"], sid(b["session_id"]), b["user"] or "-"] for b in brl]
            out += ["Byte-range locks:",
                    table(["SharePath", "Name", "Offset", "Length", "Type", "File ID", "Session ID", "User"], rows),
                    ""]
    return "\n".join(out)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="wsd-smbstatus", description="Report on a running wsd-smbd (like smbstatus).")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--state-dir", metavar="DIR", help="the server's state_dir (socket DIR/wsd-smbd.ctl)")
    where.add_argument("--socket", metavar="PATH", help="the control socket itself")
    where.add_argument("--config", metavar="FILE", help="wsd-smbd's TOML configuration (finds state_dir / "
                                                        "control_socket)")
    p.add_argument("-b", "--brief", action="store_true", help="sessions only")
    p.add_argument("-S", "--shares", action="store_true", help="share connections (tree connects) only")
    p.add_argument("-L", "--locks", action="store_true", help="locked files (opens, byte-range locks) only")
    p.add_argument("-j", "--json", action="store_true", help="the whole status as JSON")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the server (default 10)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        path = socket_path(args)
        answer = request(path, "status", args.timeout)
    except UsageError as e:
        print(f"wsd-smbstatus: {e}", file=sys.stderr)
        return EXIT_USAGE
    except NoServer as e:
        print(f"wsd-smbstatus: {e}", file=sys.stderr)
        return EXIT_NO_SERVER
    except RuntimeError as e:
        print(f"wsd-smbstatus: {e}", file=sys.stderr)
        return EXIT_NO_SERVER
    status = answer.get("status")
    if not isinstance(status, dict):
        print("wsd-smbstatus: the answer has no status", file=sys.stderr)
        return EXIT_NO_SERVER
    if args.json:
        keep = {"server"}
        if args.brief:
            keep.add("sessions")
        if args.shares:
            keep.add("tree_connects")
        if args.locks:
            keep |= {"opens", "byte_range_locks"}
        doc = status if keep == {"server"} else {k: v for k, v in status.items() if k in keep}
        print(json.dumps(doc, indent=2, sort_keys=True))
        return EXIT_OK
    everything = not (args.brief or args.shares or args.locks)
    print(render(status, sessions=everything or args.brief, shares=everything or args.shares,
                 locks=everything or args.locks))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
