"""``wsd-accept``: watch the switch accept, reject and negotiate, step by step.

Commands::

    wsd-accept listen  --provider P --bind IP:PORT [--reject] [--count N] [--accept-ex N] [--json]
    wsd-accept connect --provider P IP:PORT [--send BYTES] [--json]
    wsd-accept providers [--json]
    wsd-accept demo [--provider P]

``--provider`` puts the address's subnet (/24, or /64 for IPv6) in the
switch's SAN table for that provider; with ``tcp`` there is no SAN path and
the trace says so.  Provider options: ``--opt key=value`` (repeatable; values
are parsed as JSON when they can be, e.g. ``--opt flow_control=true``).

Exit codes: 0 success; 1 the connection was refused (WSAECONNREFUSED);
2 usage error; 3 the provider is not available here (the reason is printed);
4 any other Winsock error (timeout, reset, aborted negotiation).
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import os
import subprocess
import sys
import threading
import time

import wsd
from wsd import errors
from wsd.registry import create_provider, provider_entry_points
from wsd.spi import CF_ACCEPT, CF_REJECT

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_UNAVAILABLE, EXIT_WSA = 0, 1, 2, 3, 4


def _addr(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep:
        raise argparse.ArgumentTypeError(f"{text!r} is not IP:PORT")
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
        return host, int(port)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not IP:PORT") from None


def _opts(items: list[str]) -> dict:
    out = {}
    for item in items or []:
        k, _, v = item.partition("=")
        try:
            out[k] = json.loads(v)
        except ValueError:
            out[k] = v
    return out


class Printer:
    """Prints trace records relative to the start of the current sequence, in microseconds."""

    SEQUENCE_START = {"SetEvent", "tcp_accept", "WSPConnect", "connect"}

    def __init__(self, as_json: bool, out=sys.stdout):
        self.json = as_json
        self.out = out
        self.t0 = None
        self.lock = threading.Lock()

    def __call__(self, rec: wsd.TraceRecord) -> None:
        with self.lock:
            # each accept (or connect) sequence is timed from its first step
            starts = (rec.step in ("WSPConnect", "connect", "tcp_FD_ACCEPT")
                      or (rec.step == "SetEvent" and ":listen:" in str(rec.fields.get("event", ""))))
            if self.t0 is None or starts:
                self.t0 = rec.t
            us = (rec.t - self.t0) * 1e6
            if self.json:
                obj = {"t_us": round(us, 1), "step": rec.step, "thread": rec.thread}
                obj.update({k: v for k, v in rec.fields.items()})
                print(json.dumps(obj, default=str), file=self.out, flush=True)
            else:
                fields = " ".join(f"{k}={v}" for k, v in rec.fields.items())
                print(f"{us:>12.1f} µs  [{rec.thread}] {rec.step:<22} {fields}", file=self.out, flush=True)

    def note(self, step: str, **fields) -> None:
        self(wsd.TraceRecord(time.monotonic(), step, fields, threading.current_thread().name))


def _san_table(provider: str, host: str) -> list[tuple[str, str]]:
    ip = ipaddress.ip_address(host)
    if ip.is_unspecified:
        return [("0.0.0.0/0" if ip.version == 4 else "::/0", provider)]
    return [(str(ipaddress.ip_network(f"{host}/{24 if ip.version == 4 else 64}", strict=False)), provider)]


def _make_switch(args, printer: Printer, host: str) -> wsd.Switch:
    sw = wsd.Switch()
    sw.trace_sinks.append(printer)
    if args.provider == "tcp":
        printer.note("no_san_path", provider="tcp", reason="tcp is the TCP/IP provider: no SAN path, "
                     "requests go through the kernel's TCP (WSD-A1)")
        return sw
    sw.add_san_route(_san_table(args.provider, host)[0][0], args.provider, **_opts(args.opt))
    if args.provider in sw.unavailable:
        raise ProviderUnavailable(f"provider {args.provider} is not available: {sw.unavailable[args.provider]}")
    return sw


class ProviderUnavailable(Exception):
    pass


def cmd_listen(args) -> int:
    printer = Printer(args.json)
    sw = _make_switch(args, printer, args.bind[0])
    lst = sw.socket()
    lst.bind(args.bind)
    lst.listen(args.backlog)
    host, port = lst.getsockname()[:2]
    printer.note("listening", addr=f"{host}:{port}", provider=args.provider, pid=os.getpid())
    if args.timeout:
        lst.settimeout(args.timeout)

    def condition(caller_id, caller_data, callee_id, callee_data, callback_data):
        return CF_REJECT if args.reject else CF_ACCEPT

    done = 0
    rc = EXIT_OK
    try:
        while args.count == 0 or done < args.count:
            try:
                if args.accept_ex:
                    s, peer, first = lst.accept_ex(args.accept_ex, condition)
                    printer.note("accept_ex_completed", peer=f"{peer[0]}:{peer[1]}", initial_bytes=len(first))
                else:
                    s, peer = lst.accept(condition)
                    first = None
            except errors.WSAECONNREFUSED:
                printer.note("rejected", result="WSAECONNREFUSED")
                done += 1
                continue
            except errors.WSAETIMEDOUT:
                printer.note("timeout")
                rc = EXIT_WSA
                break
            except errors.WsaError as e:
                printer.note("accept_failed", error=e.wsa_name, reason=str(e))
                done += 1
                rc = EXIT_WSA
                continue
            total = len(first or b"")
            try:
                s.settimeout(args.timeout or 30)
                while True:
                    d = s.recv(1 << 20)
                    if not d:
                        break
                    total += len(d)
            except errors.WsaError as e:
                printer.note("connection_error", error=e.wsa_name)
            printer.note("connection_done", path=s.path, bytes_received=total)
            s.close()
            done += 1
    finally:
        lst.close()
        sw.close()
    return rc


def cmd_connect(args) -> int:
    printer = Printer(args.json)
    sw = _make_switch(args, printer, args.addr[0])
    s = sw.socket()
    if args.timeout:
        s.settimeout(args.timeout)
    try:
        try:
            s.connect(args.addr)
        except errors.WSAECONNREFUSED as e:
            printer.note("connect_failed", error="WSAECONNREFUSED")
            print(f"wsd-accept: connection refused: {e}", file=sys.stderr)
            return EXIT_REFUSED
        except errors.WsaError as e:
            printer.note("connect_failed", error=e.wsa_name)
            print(f"wsd-accept: connect failed: {e}", file=sys.stderr)
            return EXIT_WSA
        printer.note("connected", path=s.path)
        if args.send:
            payload = os.urandom(args.send)
            s.sendall(payload)
            printer.note("sent", bytes=len(payload))
        s.close()
        printer.note("closed")
        return EXIT_OK
    finally:
        sw.close()


def cmd_providers(args) -> int:
    rows = []
    for name, target in sorted(provider_entry_points().items()):
        try:
            p = create_provider(name)
            av = p.availability()
            ok, reason = av.ok, av.reason
        except errors.WsaError as e:
            ok, reason = False, str(e)
        rows.append({"provider": name, "entry_point": target, "available": ok, "reason": reason})
    for r in rows:
        if args.json:
            print(json.dumps(r))
        else:
            print(f"{r['provider']:<8} {'available' if r['available'] else 'UNAVAILABLE':<12} {r['reason']}"
                  f"  ({r['entry_point']})")
    return EXIT_OK


def cmd_demo(args) -> int:
    """Listener and connector on loopback (two processes): accept, first data; then a rejected request."""
    exe = [sys.executable, "-m", "wsd_tools.accept.cli"]
    rc = EXIT_OK
    for provider in args.provider or ["zmq", "tcp"]:
        for reject in (False, True):
            if provider == "tcp" and reject:
                continue
            title = f"{provider}: {'rejected' if reject else 'accepted'} connection"
            print(f"\n=== {title} ===", flush=True)
            lcmd = exe + ["listen", "--provider", provider, "--bind", "127.0.0.1:0", "--count", "1",
                          "--timeout", "20"] + (["--reject"] if reject else ["--accept-ex", "4096"])
            lp = subprocess.Popen(lcmd, stdout=subprocess.PIPE, text=True)
            port = None
            for _ in range(50):
                line = lp.stdout.readline()
                if not line:
                    break
                print("listener:", line.rstrip(), flush=True)
                if " listening " in line:
                    port = int(line.split("addr=")[1].split()[0].rsplit(":", 1)[1])
                    break
            if port is None:
                print("wsd-accept demo: the listener did not start", file=sys.stderr)
                lp.kill()
                return EXIT_WSA
            cp = subprocess.run(exe + ["connect", "--provider", provider, f"127.0.0.1:{port}", "--send", "65536",
                                       "--timeout", "20"], capture_output=True, text=True, timeout=60)
            for line in cp.stdout.splitlines():
                print("connector:", line)
            if cp.stderr.strip():
                print("connector (stderr):", cp.stderr.strip())
            print(f"connector exit code: {cp.returncode}")
            out, _ = lp.communicate(timeout=60)
            print(f"listener exit code: {lp.returncode}")
            for line in out.splitlines():
                print("listener:", line)
            expected = EXIT_REFUSED if reject else EXIT_OK
            if cp.returncode != expected or lp.returncode != 0:
                rc = EXIT_WSA
    return rc


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="wsd-accept", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="exit codes: 0 ok, 1 refused (WSAECONNREFUSED), 2 usage, "
                                        "3 provider unavailable, 4 other Winsock error")
    sub = ap.add_subparsers(dest="cmd", required=True)

    def common(p):
        p.add_argument("--provider", default="zmq", help="provider whose SAN table entry to add (default zmq)")
        p.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE", help="provider option")
        p.add_argument("--json", action="store_true", help="one JSON object per step")
        p.add_argument("--timeout", type=float, default=None, help="seconds before giving up (default: none)")

    p = sub.add_parser("listen", help="listen and trace every accept")
    common(p)
    p.add_argument("--bind", type=_addr, required=True, metavar="IP:PORT")
    p.add_argument("--reject", action="store_true", help="the condition function returns CF_REJECT")
    p.add_argument("--count", type=int, default=0, help="stop after N connection requests (0 = forever)")
    p.add_argument("--accept-ex", type=int, default=0, metavar="N",
                   help="AcceptEx with an N-byte initial receive buffer (completes on first data)")
    p.add_argument("--backlog", type=int, default=16)
    p.set_defaults(fn=cmd_listen)

    p = sub.add_parser("connect", help="connect (and send) with a trace")
    common(p)
    p.add_argument("addr", type=_addr, metavar="IP:PORT")
    p.add_argument("--send", type=int, default=0, metavar="BYTES", help="send that many random bytes")
    p.set_defaults(fn=cmd_connect)

    p = sub.add_parser("providers", help="list the registered providers and whether they can run here")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_providers)

    p = sub.add_parser("demo", help="listener + connector on loopback: accepted and rejected requests")
    p.add_argument("--provider", action="append", help="provider(s) to show (default: zmq and tcp)")
    p.set_defaults(fn=cmd_demo)
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except ProviderUnavailable as e:
        print(f"wsd-accept: {e}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except errors.WsaError as e:
        print(f"wsd-accept: {e}", file=sys.stderr)
        return EXIT_WSA
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
