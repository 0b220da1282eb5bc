"""Benchmark: a soak (lab.scenarios.soak): one lab for N minutes with short lifetimes, DPD on and
the stream both ways; prints the rekeys, the loss outside and inside rekeys, the IKE_SAs at the
end, and each daemon's and the orchestrator's resident memory at the start and the end.

Usage: python -m bench.bench_soak [--minutes 20] [--time-scale 0.1] [--backend netns] [--version v2]
"""

from __future__ import annotations

import argparse
import json

from lab.scenarios.soak import run_soak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--time-scale", type=float, default=0.1)
    parser.add_argument("--backend", default="netns")
    parser.add_argument("--version", default="v2")
    args = parser.parse_args()
    r = run_soak(backend=args.backend, version=args.version, minutes=args.minutes,
                 time_scale=args.time_scale)
    print(f"soak {r.variant} on {r.backend}/{r.dataplane}")
    for v in r.verdicts:
        print(f"  {'PASS' if v.ok else 'FAIL'} {v.name}: {v.detail}")
    keys = ("child_rekeys", "ike_rekeys", "sent", "lost_outside_rekeys", "lost_in_rekeys",
            "rss_kib_start", "rss_kib_end", "ike_sas_at_end")
    print(json.dumps({k: r.metrics.get(k) for k in keys}, indent=2))


if __name__ == "__main__":
    main()
