"""Benchmark: DPD detection error, rekey loss and (when available) failover outage vs the bound.

DPD: a path cut under traffic (lab.scenarios.dpd); detection = cut -> each daemon's ike-updown
down event; error = slowest detection - the configured (scaled) timeout. Runs at the cloud's real
timeout (time scale 1.0) and at the scale the tests use. Rekey: packets lost across time-based
rekeys at a short scale. Failover: outage vs the module's bound, if lab.scenarios.failover exists.
Numbers live here, never in tests.

Usage: python -m bench.bench_scenarios [--backend netns] [--timeout 30] [--scales 1.0,0.2]
                                       [--versions v1,v2] [--runs 1] [--skip-rekey] [--json FILE]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
from pathlib import Path
from typing import Any

from lab.scenarios.dpd import run_dpd
from lab.scenarios.rekey import run_rekey
from lab.scenarios.report import ScenarioResult

REKEY_SCALE = 0.1


def _dpd_rows(backend: str, versions: list[str], scales: list[float], timeout: int,
              runs: int) -> list[dict[str, Any]]:
    rows = []
    for scale in scales:
        for version in versions:
            errors, detections = [], []
            for i in range(runs):
                r = run_dpd(backend=backend, version=version, action="retry", timeout=timeout,
                            time_scale=scale, name=f"bsdpd{i}")
                m = r.metrics
                if m.get("detection_error_s") is not None:
                    errors.append(m["detection_error_s"])
                    detections.append(max(m["detection_cloud_s"], m["detection_customer_s"]))
                _fail_note(r)
            rows.append({"what": f"DPD IKE{version} retry", "scale": scale,
                         "configured_s": max(2, round(timeout * scale)),
                         "detected_s": _med(detections), "error_s": _med(errors),
                         "error_pct": None if not errors else
                         round(100 * _med(errors) / max(2, round(timeout * scale)), 1),
                         "runs": f"{len(errors)}/{runs}"})
    return rows


def _rekey_rows(backend: str, versions: list[str]) -> list[dict[str, Any]]:
    rows = []
    for version in versions:
        r = run_rekey(backend=backend, version=version, trigger="time", time_scale=REKEY_SCALE,
                      rekeys=2, name="bsrek")
        _fail_note(r)
        children = [x for x in r.metrics.get("rekeys", []) if x["kind"] == "child-rekey"]
        rows.append({"what": f"rekey IKE{version} time", "scale": REKEY_SCALE,
                     "child_rekeys": len(children),
                     "lost": sum(s["lost"] for s in r.stream), "sent": sum(s["sent"] for s in r.stream),
                     "duplicated": sum(s["duplicated"] for s in r.stream),
                     "ike_sas_at_end": len(r.metrics.get("ike_sas_at_end", [])), "ok": r.ok})
    return rows


def _failover_rows(backend: str) -> list[dict[str, Any]]:
    if importlib.util.find_spec("lab.scenarios.failover") is None:
        print("failover: lab.scenarios.failover is not available yet; skipped")
        return []
    from lab.scenarios.failover import run_failover  # type: ignore[import-not-found]

    r = run_failover(backend=backend)
    _fail_note(r)
    return [{"what": "failover", "scale": r.time_scale,
             **{k: v for k, v in r.metrics.items() if "outage" in k or "bound" in k}, "ok": r.ok}]


def _fail_note(r: ScenarioResult) -> None:
    for v in r.verdicts:
        if not v.ok:
            print(f"  note: {r.variant} ({r.backend}, scale {r.time_scale}): FAIL {v.name}: {v.detail}")


def _med(values: list[float]) -> float | None:
    return round(statistics.median(values), 2) if values else None


def _table(rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    keys = list(dict.fromkeys(k for row in rows for k in row))
    widths = {k: max(len(k), *(len(str(row.get(k, ""))) for row in rows)) for k in keys}
    print("  ".join(k.ljust(widths[k]) for k in keys))
    for row in rows:
        print("  ".join(str(row.get(k, "")).ljust(widths[k]) for k in keys))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", default="netns")
    parser.add_argument("--timeout", type=int, default=30, help="the cloud DPD timeout (30-60 s)")
    parser.add_argument("--scales", default="1.0,0.2", help="time scales for DPD (1.0 = real values)")
    parser.add_argument("--versions", default="v1,v2")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--skip-rekey", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    versions = args.versions.split(",")
    scales = [float(s) for s in args.scales.split(",")]
    rows = {"dpd": _dpd_rows(args.backend, versions, scales, args.timeout, args.runs)}
    print(f"\nDPD detection ({args.backend}; error = slowest detection - configured timeout)")
    _table(rows["dpd"])
    if not args.skip_rekey:
        rows["rekey"] = _rekey_rows(args.backend, versions)
        print(f"\nRekey loss ({args.backend}, time scale {REKEY_SCALE})")
        _table(rows["rekey"])
    rows["failover"] = _failover_rows(args.backend)
    if rows["failover"]:
        print(f"\nFailover outage vs bound ({args.backend})")
        _table(rows["failover"])
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
