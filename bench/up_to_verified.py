"""Benchmark: `up` to a verified tunnel (control, data and wire checks passed), per backend.

Prints one line per run and a summary; speed lives here, never in tests.
Usage: python -m bench.up_to_verified [--runs N] [--backend netns,docker] [--spec PATH]
"""

from __future__ import annotations

import argparse
import statistics
import time

from lab import lifecycle
from lab.check import run_check

DEFAULT_SPEC = "configs/examples/default.yaml"


def one_run(spec: str, backend: str, name: str) -> tuple[float, float, bool]:
    start = time.perf_counter()
    try:
        lab = lifecycle.up(spec, name, backend)
        up_done = time.perf_counter()
        ok = run_check(lab).ok
        return up_done - start, time.perf_counter() - start, ok
    finally:
        lifecycle.down(name)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--backend", default="netns")
    parser.add_argument("--spec", default=DEFAULT_SPEC)
    args = parser.parse_args()
    for backend in args.backend.split(","):
        ups, totals = [], []
        for i in range(args.runs):
            up_s, total_s, ok = one_run(args.spec, backend, f"bench{i}")
            ups.append(up_s)
            totals.append(total_s)
            print(f"{backend} run {i + 1}: up {up_s:.2f}s, up+check {total_s:.2f}s, "
                  f"check {'passed' if ok else 'FAILED'}")
        print(f"{backend}: up median {statistics.median(ups):.2f}s, up to verified median "
              f"{statistics.median(totals):.2f}s (min {min(totals):.2f}s, max {max(totals):.2f}s, "
              f"{args.runs} runs)")


if __name__ == "__main__":
    main()
