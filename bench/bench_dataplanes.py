"""Benchmark: the kernel's XFRM dataplane against strongSwan's kernel-libipsec, in one run.

Both need a kernel with ESP for the kernel side, so on this project's machines it runs inside the
VM harness (`make bench-kernel`); there TCG makes absolute times meaningless, so the figures to
read are the ratios, measured back to back on the same guest. Per dataplane: up to a verified
tunnel (`up` + every check passing) on the default example, and the IKEv2-125 matrix suite's
verified cases per second.

Usage: python -m bench.bench_dataplanes [--runs N] [--cases N] [--jobs J]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from bench.bench_matrix import bench as bench_matrix
from bench.up_to_verified import DEFAULT_SPEC, one_run
from lab.dataplane import kernel_has_esp
from lab.matrix import cases as mc

DATAPLANES = ("kernel", "libipsec")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3, help="up-to-verified runs per dataplane")
    parser.add_argument("--cases", type=int, default=0, help="first N IKEv2-125 cases (0: all)")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    esp, why = kernel_has_esp()
    if not esp:
        raise SystemExit(f"this kernel has no ESP ({why}): run it in the VM harness "
                         "(make bench-kernel)")
    where = f"VM guest ({os.environ['IPSEC_LAB_VM']})" if os.environ.get("IPSEC_LAB_VM") else "host"
    print(f"kernel {os.uname().release} on the {where}")
    suite = mc.ikev2_crypto_125()
    if args.cases:
        suite = suite[: args.cases]
    verified: dict[str, float] = {}
    rates: dict[str, float] = {}
    for dataplane in DATAPLANES:
        os.environ["IPSEC_LAB_DATAPLANE"] = dataplane  # lab.dataplane.detect honours it
        totals = []
        for i in range(args.runs):
            up_s, total_s, ok = one_run(DEFAULT_SPEC, "netns", f"bdp{i}")
            totals.append(total_s)
            print(f"{dataplane} run {i + 1}: up {up_s:.2f}s, up to verified {total_s:.2f}s, "
                  f"check {'passed' if ok else 'FAILED'}")
        verified[dataplane] = statistics.median(totals)
        start = time.monotonic()
        rates[dataplane] = bench_matrix("ikev2-125", suite, "netns", args.jobs)["overall"]
        print(f"{dataplane}: up to verified median {verified[dataplane]:.2f}s; ikev2-125 "
              f"{rates[dataplane]:.2f} cases/s overall ({time.monotonic() - start:.0f}s)")
    os.environ.pop("IPSEC_LAB_DATAPLANE")
    print(f"ratio kernel/libipsec: up to verified {verified['kernel'] / verified['libipsec']:.2f}x "
          f"the time; matrix {rates['kernel'] / rates['libipsec']:.2f}x the cases/s")


if __name__ == "__main__":
    main()
