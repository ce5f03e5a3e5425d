"""Hypothesis property tests: random message sizes, batch sizes and
interleavings against a plain deque model, with wrap-around, full and empty
rings; and the same across two processes with a slow consumer."""

from __future__ import annotations

import collections
import multiprocessing
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wsd_ring import Ring

from ring_helpers import check_msg, make_msg

REC_HDR = 8


def rec(n: int) -> int:
    return REC_HDR + ((n + 7) & ~7)


def payload(seq: int, n: int) -> bytes:
    return (seq.to_bytes(4, "little") * (n // 4 + 1))[:n]


# An operation is (kind, argument).
ops = st.lists(
    st.one_of(
        st.tuples(st.just("push"), st.integers(0, 300)),
        st.tuples(st.just("push_batch"), st.lists(st.integers(0, 200), min_size=1, max_size=12)),
        st.tuples(st.just("reserve"), st.tuples(st.integers(0, 300), st.floats(0, 1))),
        st.tuples(st.just("reserve_batch"), st.tuples(st.lists(st.integers(0, 120), min_size=1, max_size=8),
                                                      st.integers(0, 8))),
        st.tuples(st.just("post"), st.tuples(st.lists(st.tuples(st.integers(0, 200), st.floats(0, 1)),
                                                       min_size=1, max_size=8), st.integers(0, 8))),
        st.tuples(st.just("peek_release"), st.tuples(st.integers(1, 10), st.integers(0, 10))),
        st.tuples(st.just("pop"), st.none()),
        st.tuples(st.just("pop_batch_into"), st.tuples(st.integers(0, 700), st.integers(1, 10))),
    ),
    max_size=80,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(capacity=st.sampled_from([64, 128, 256, 512, 1024]), script=ops)
def test_ring_matches_fifo_model(capacity, script):
    model: collections.deque[bytes] = collections.deque()
    seq = 0
    with Ring.create(capacity) as ring:
        maxmsg = ring.max_message
        for kind, arg in script:
            if kind == "push":
                n = min(arg, maxmsg)
                m = payload(seq, n)
                if ring.push(m):
                    model.append(m)
                    seq += 1
                else:
                    # Full means: not even after the consumer's side is empty
                    # would the bytes in flight leave room here.
                    assert ring.used > 0
            elif kind == "push_batch":
                msgs = [payload(seq + i, min(n, maxmsg)) for i, n in enumerate(arg)]
                k = ring.push_batch(msgs)
                assert 0 <= k <= len(msgs)
                model.extend(msgs[:k])
                seq += k
            elif kind == "reserve":
                n, frac = arg
                n = min(n, maxmsg)
                view = ring.reserve(n)
                if view is not None:
                    assert len(view) == n
                    real = int(n * frac)
                    m = payload(seq, real)
                    view[:real] = m
                    del view
                    ring.commit(real)
                    model.append(m)
                    seq += 1
            elif kind == "reserve_batch":
                sizes, k = arg
                sizes = [min(n, maxmsg) for n in sizes]
                views = ring.reserve_batch(sizes)
                k = min(k, len(views))
                msgs = [payload(seq + i, n) for i, n in enumerate(sizes[:len(views)])]
                for v, m in zip(views, msgs):
                    v[:] = m
                del views
                ring.commit_batch(k)
                model.extend(msgs[:k])
                seq += k
            elif kind == "post":
                # a receive ring: spans posted first, filled, then committed (in two steps)
                # with real lengths shorter than the spans; the rest must never show
                spans, split = arg
                views, msgs = [], []
                for n, frac in spans:
                    n = min(n, maxmsg)
                    v = ring.post(n)
                    if v is None:
                        break
                    assert len(v) == n
                    v[:] = b"\xee" * n          # stale bytes a FILL record must hide
                    m = payload(seq + len(msgs), int(n * frac))
                    v[:len(m)] = m
                    views.append(v)
                    msgs.append(m)
                assert ring.posted == len(msgs)
                del views
                split = min(split, len(msgs))
                ring.commit_posted([len(m) for m in msgs[:split]])
                ring.commit_posted([len(m) for m in msgs[split:]])
                assert ring.posted == 0
                model.extend(msgs)
                seq += len(msgs)
            elif kind == "peek_release":
                max_n, rel = arg
                views = ring.peek(max_n)
                assert [bytes(v) for v in views] == list(model)[:max_n]
                rel = min(rel, len(views))
                del views
                ring.release(rel)
                for _ in range(rel):
                    model.popleft()
            elif kind == "pop":
                got = ring.pop()
                assert got == (model.popleft() if model else None)
            elif kind == "pop_batch_into":
                size, max_n = arg
                buf = bytearray(size)
                if model and len(model[0]) > size:
                    continue  # MessageTooLarge, covered in the unit tests
                lens = ring.pop_batch_into(buf, max_n)
                off = 0
                for ln in lens:
                    assert bytes(buf[off:off + ln]) == model.popleft()
                    off += ln
            # Invariants after every step.
            assert 0 <= ring.used <= capacity
            assert sum(rec(len(m)) for m in model) <= ring.used
        assert ring.pop_batch(10_000) == list(model)


@settings(max_examples=60, deadline=None)
@given(capacity=st.sampled_from([64, 256, 1024]), sizes=st.lists(st.integers(0, 56), max_size=200))
def test_fill_then_drain_counts_exactly(capacity, sizes):
    """push until full: the ring holds exactly as many records as fit
    contiguously without splitting, and returns them all."""
    with Ring.create(capacity) as ring:
        pushed = []
        pos = 0
        for i, n in enumerate(sizes):
            m = payload(i, n)
            r = rec(n)
            off = pos % capacity
            need = r if off + r <= capacity else (capacity - off) + r
            fits = pos + need <= capacity  # tail stays 0 while nobody consumes
            assert ring.push(m) == fits
            if not fits:
                break
            pos += need
            pushed.append(m)
        assert ring.pop_batch(10_000) == pushed


ctx = multiprocessing.get_context("fork")


def _producer(ring: Ring, sizes: list[int], batches: list[int]) -> None:
    seq = 0
    bi = 0
    while seq < len(sizes):
        b = batches[bi % len(batches)]
        bi += 1
        chunk = [make_msg(s, sizes[s]) for s in range(seq, min(seq + b, len(sizes)))]
        while chunk:
            k = ring.push_batch(chunk)
            seq += k
            chunk = chunk[k:]
            if chunk:
                assert ring.wait_writable(20, len(chunk[0]))
    ring.close()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    capacity=st.sampled_from([512, 2048, 8192]),
    sizes=st.lists(st.integers(16, 480), min_size=1, max_size=400),
    batches=st.lists(st.integers(1, 20), min_size=1, max_size=5),
    reads=st.lists(st.integers(1, 30), min_size=1, max_size=5),
    pauses=st.lists(st.sampled_from([0, 0, 0, 0.001]), min_size=1, max_size=5),
)
def test_cross_process_random_sizes_and_batches_slow_consumer(capacity, sizes, batches, reads, pauses):
    with Ring.create(capacity) as ring:
        p = ctx.Process(target=_producer, args=(ring, sizes, batches))
        p.start()
        try:
            got = 0
            i = 0
            while True:
                views = ring.peek(reads[i % len(reads)])
                if not views:
                    if ring.eof:
                        break
                    assert ring.wait_readable(20)
                    continue
                for v in views:
                    assert len(v) == max(sizes[got], 16)
                    check_msg(v, got)
                    got += 1
                n = len(views)
                del views, v
                ring.release(n)
                time.sleep(pauses[i % len(pauses)])  # a slow consumer
                i += 1
            assert got == len(sizes)
        finally:
            p.join(20)
            code = p.exitcode
            p.close()
        assert code == 0
