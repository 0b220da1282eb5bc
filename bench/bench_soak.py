"""Benchmark: a soak (lab.scenarios.soak): one lab for N minutes with short lifetimes, DPD on and
the stream both ways; prints the rekeys, the loss outside and inside rekeys, the IKE_SAs at the
end, each daemon's and the orchestrator's resident memory at the start and the end, and the
memory trend after the warm-up (per process: warm RSS, slope in KiB/h, bound, verdict), or why
it was not judged. The JSON holds the memory samples and the trend too.

Usage: python -m bench.bench_soak [--minutes 20] [--time-scale 0.1] [--backend netns] [--version v2]
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from lab.scenarios.soak import run_soak


def _figure(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def print_trend(trend: dict[str, Any]) -> None:
    verdict = "not judged" if not trend["judged"] else "PASS" if trend["ok"] else "FAIL"
    print(f"memory trend: {verdict} ({trend['samples']} samples over {trend['span_s']:.0f} s after "
          f"a {trend['warm_up_s']:.0f} s warm-up)")
    if trend["reason"]:
        print(f"  growth not judged: {trend['reason']}")
    print(f"  {'process':<20} {'warm RSS KiB':>12} {'slope KiB/h':>12} {'bound KiB/h':>12}  verdict")
    for p in trend["processes"]:
        print(f"  {p['name']:<20} {_figure(p['warm_kib'], 'd'):>12} "
              f"{_figure(p['slope_kib_per_hour'], '+.0f'):>12} "
              f"{_figure(p['bound_kib_per_hour'], '.0f'):>12}  {p['status']}"
              + (f" at {p['vanished_at_s']:g} s" if p["vanished_at_s"] is not None else ""))


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
    print_trend(r.metrics["memory_trend"])
    keys = ("child_rekeys", "ike_rekeys", "sent", "lost_outside_rekeys", "lost_in_rekeys",
            "lost_outside_rekeys_by_minute",
            "rss_kib_start", "rss_kib_end", "ike_sas_at_end", "memory_trend", "rss_kib_samples")
    print(json.dumps({k: r.metrics.get(k) for k in keys}, indent=2))


if __name__ == "__main__":
    main()
