"""Time the lab image build on each path this machine allows.

Usage: .venv/bin/python bench/bench_image.py [--runs N] [--skip-build]

Figures: engine check/start, a cached ``build_image`` call (must be ~instant), and a
forced build through mmdebstrap and, when the base image can be had, the Dockerfile.
A forced build replaces the image under the same tag, so the lab keeps working.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lab.backends.docker import engine, image  # noqa: E402  (runs from a checkout without install)


def _timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _summary(name: str, times: list[float], note: str = "") -> str:
    if not times:
        return f"{name:<34} {'-':>9}  {note}"
    spread = f" (min {min(times):.3f}, max {max(times):.3f}, n={len(times)})" if len(times) > 1 else ""
    return f"{name:<34} {statistics.median(times):>8.3f}s{spread}  {note}".rstrip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1, help="forced builds per path")
    parser.add_argument("--skip-build", action="store_true", help="only engine and cached call")
    parser.add_argument("-v", "--verbose", action="store_true", help="print build progress")
    args = parser.parse_args()
    progress = print if args.verbose else (lambda _m: None)

    rows: list[str] = []
    started = time.perf_counter()
    client = engine.ensure_engine(progress)
    rows.append(_summary("ensure_engine", [time.perf_counter() - started]))

    tag = image.image_tag()
    if image.find_image(client) is None:
        rows.append(
            _summary("first build (auto)", [_timed(lambda: image.build_image(client, "auto", progress))])
        )
    cached = [_timed(lambda: image.build_image(client, "auto", progress)) for _ in range(5)]
    rows.append(_summary("cached build_image (no rebuild)", cached))

    if not args.skip_build:
        mm = [
            _timed(lambda: image.build_image(client, "mmdebstrap", progress, force=True))
            for _ in range(args.runs)
        ]
        rows.append(_summary("forced build: mmdebstrap + import", mm))

        if image.base_image_available(client, progress):
            df = [
                _timed(lambda: image.build_image(client, "dockerfile", progress, force=True))
                for _ in range(args.runs)
            ]
            rows.append(_summary("forced build: Dockerfile", df))
        else:
            rows.append(
                _summary(
                    "forced build: Dockerfile",
                    [],
                    f"not measured: {image.BASE_IMAGE} is not local and cannot be pulled here",
                )
            )

    img = client.images.get(tag)
    print(
        f"image {tag}  id {img.short_id}  size {img.attrs['Size'] / 1e6:.0f} MB  "
        f"method {img.labels.get(image.METHOD_LABEL, '?')}"
    )
    for row in rows:
        print(row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
