"""Benchmark: matrix cases per second, each case verified (control plane both ends + ICMP echo).

(a) the 125 IKEv2 enc x integ x DH combos, (b) pairwise over the whole menu for IKEv1 and IKEv2,
on netns, and on docker when its backend imports and an engine answers (else it says why not).
`sustained` counts from the first finished case to the last (lab bring-up excluded); `overall`
includes bringing the labs up and down. SM4/SM3 cells are resolved without running and left out.

Usage: python -m bench.bench_matrix [--jobs 2] [--backend netns,docker] [--only a,b] [--profile F]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time
from collections import Counter

from lab.matrix import cases as mc
from lab.matrix.runner import RunOptions, run_matrix


def docker_unavailable() -> str | None:
    try:
        import lab.backends.docker  # noqa: F401
    except ImportError as exc:
        return f"lab.backends.docker does not import ({exc})"
    from lab.backends.docker.engine import engine_client

    return None if engine_client() is not None else "no Docker engine answers"


def bench(label: str, cases: list[mc.Case], backend: str, jobs: int) -> dict:
    runnable = [c for c in cases if not c.unsupported]
    stamps: list[float] = []
    start = time.monotonic()
    results = run_matrix(runnable, backend=backend, jobs=jobs, options=RunOptions(),
                         on_result=lambda _: stamps.append(time.monotonic()))
    overall = time.monotonic() - start
    sustained = (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else 0.0
    outcomes = Counter(r.outcome for r in results)
    passed = sum(r.passed for r in results)
    phases: Counter[str] = Counter()
    for r in results:
        phases.update(r.timings)
    per_case = {k: round(v / max(len(results), 1), 1) for k, v in phases.items()}
    print(f"{backend} {label}: {len(results)} cases, {passed} as expected, jobs {jobs}: "
          f"sustained {sustained:.1f} cases/s, overall {len(results) / overall:.1f} cases/s run, "
          f"{passed / overall:.1f} verified/s ({overall:.1f}s); mean ms per phase {per_case}; "
          f"outcomes {dict(outcomes)}")
    return {"sustained": sustained, "overall": len(results) / overall,
            "verified": passed / overall}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--backend", default="netns,docker")
    parser.add_argument("--only", default="ikev2-125,pairwise")
    parser.add_argument("--profile", help="cProfile the orchestrator into this file")
    args = parser.parse_args()
    suites = {
        "ikev2-125": mc.ikev2_crypto_125(),
        "pairwise": mc.pairwise(mc.restrict(mc.default_dimensions(), {"ike_version": ["v1", "v2"]})),
    }
    for backend in args.backend.split(","):
        if backend == "docker" and (why := docker_unavailable()):
            print(f"docker: skipped, {why}")
            continue
        for label in args.only.split(","):
            if args.profile:
                profiler = cProfile.Profile()
                profiler.enable()
            bench(label, suites[label], backend, args.jobs)
            if args.profile:
                profiler.disable()
                profiler.dump_stats(f"{args.profile}.{backend}.{label}")
                pstats.Stats(profiler).sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    main()
