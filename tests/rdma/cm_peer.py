"""Passive side of the rdma_cm smoke tests, run as its own process.

    python3 cm_peer.py --addr 192.0.2.1 --port 20001 --mode accept|reject --size 4096 --seed 7

Reports progress as JSON lines on stdout (``listening``, ``established``,
``recv_ok``, ``write_ok``, ``disconnected`` / ``rejected``) and exits 0 when
every check passed.  Every wait is poll()-based with a deadline.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import pyverbs.cm_enums as ce  # noqa: E402
import pyverbs.enums as e  # noqa: E402
from pyverbs.cmid import CMID  # noqa: E402

import rxe_verbs as rv  # noqa: E402

REJECT_DATA = b"wsd-reject"


def say(**kw) -> None:
    sys.stdout.write(json.dumps(kw) + "\n")
    sys.stdout.flush()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--addr", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--mode", choices=("accept", "reject"), required=True)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=60.0)
    a = ap.parse_args()
    n = a.size

    ch = rv.EventChannel()
    lid = CMID(creator=ch.channel, port_space=ce.RDMA_PS_TCP)
    lid.bind_addr(rv.addr_info(a.addr, a.port, passive=True))
    lid.listen(4)
    say(event="listening")

    ev = ch.expect(ce.RDMA_CM_EVENT_CONNECT_REQUEST, a.timeout)
    child = CMID(creator=ev, listen_id=lid)
    ev.close()
    if a.mode == "reject":
        child.reject(REJECT_DATA)
        say(event="rejected")
        return 0

    ep = rv.Endpoint(child, n)
    ep.mr.write(rv.pattern(a.seed + 1, n), n)      # what the connector will RDMA READ
    ep.post_recv(1, 0, n)                          # the connector's SEND
    ep.post_recv(2, n, n)                          # its "done" after RDMA READ + WRITE
    ep.to_rtr_rts()
    child.accept(ep.conn_param())
    ch.expect(ce.RDMA_CM_EVENT_ESTABLISHED, a.timeout).close()
    say(event="established", qp_num=ep.qp.qp_num)
    ep.post_send(9, ep.mr_info())                  # address, rkey, length of ep.mr
    (wc,) = ep.completions(1, a.timeout)
    if wc.status != e.IBV_WC_SUCCESS or wc.wr_id != 9:
        say(event="error", what="mr-info send", status=wc.status)
        return 1

    (wc,) = ep.completions(1, a.timeout)
    ok = (wc.status == e.IBV_WC_SUCCESS and wc.opcode == e.IBV_WC_RECV and wc.wr_id == 1
          and wc.byte_len == n and ep.recv_mr.read(n, 0) == rv.pattern(a.seed, n))
    say(event="recv_ok", ok=ok, status=wc.status, byte_len=wc.byte_len)

    (wc,) = ep.completions(1, a.timeout)
    done = wc.status == e.IBV_WC_SUCCESS and wc.wr_id == 2 and ep.recv_mr.read(wc.byte_len, n) == b"done"
    written = ep.mr.read(n, 0) == rv.pattern(a.seed + 2, n)
    say(event="write_ok", ok=done and written, done=done, written=written)

    ep.post_send(3, b"verified" if (ok and done and written) else b"mismatch")
    (wc,) = ep.completions(1, a.timeout)
    say(event="sent_verdict", ok=wc.status == e.IBV_WC_SUCCESS)

    ch.expect(ce.RDMA_CM_EVENT_DISCONNECTED, a.timeout).close()
    say(event="disconnected")
    return 0 if (ok and done and written) else 1


if __name__ == "__main__":
    rc = main()
    sys.stdout.flush()
    # Skip pyverbs' finalisers: closing a CMID made from an event clears the
    # listener's shared Context/PD pointers, and teardown order at exit is arbitrary.
    os._exit(rc)
