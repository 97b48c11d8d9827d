"""Check that `compress bench` / measure_latency adds no measurable overhead.

Times the same ONNX model two ways in one process, interleaved round by round:
measure_latency (what `compress bench` and every stage evaluation use) and a bare
`session.run` loop with perf_counter_ns. Prints both p50s and their ratio; the
ratio should be within 3% of 1.0.

Usage: python scripts/check_bench_overhead.py MODEL.onnx [--rounds 9] [--repeats 300]
"""

from __future__ import annotations

import argparse
import statistics
import time

from compress.runtime.latency import measure_latency, model_signature
from compress.runtime.sessions import make_session


def bare_p50(session, feed, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        session.run(None, feed)
        times.append(time.perf_counter_ns() - start)
    return statistics.median(times) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--repeats", type=int, default=300)
    args = parser.parse_args()
    signature = model_signature(args.model)
    session = make_session(args.model, "cpu", threads=1)
    feed = signature.random_feed(signature.sizes(1), seed=0)
    for _ in range(50):
        session.run(None, feed)
    ours, bare = [], []
    for _ in range(args.rounds):  # A B A B ...: drift hits both equally
        (stats,) = measure_latency(
            [args.model], signature, warmup=5, repeats=args.repeats, rounds=1
        )
        ours.append(stats.p50_ms)
        bare.append(bare_p50(session, feed, args.repeats))
    ratio = statistics.median(o / b for o, b in zip(ours, bare))
    print(f"measure_latency p50 {statistics.median(ours):.5f} ms")
    print(f"bare loop       p50 {statistics.median(bare):.5f} ms")
    print(
        f"ratio (median of {args.rounds} interleaved rounds): {ratio:.4f} "
        f"({'within' if abs(ratio - 1) <= 0.03 else 'OUTSIDE'} 3%)"
    )


if __name__ == "__main__":
    main()
