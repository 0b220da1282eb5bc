"""A soak: one lab, short lifetimes, DPD on, the stream both ways, for a bounded time.

Dozens of IKE and CHILD_SA rekeys happen on the daemons' own schedule (the cloud's minimum
lifetimes, IKE 60 s and IPsec 180 s, shortened by the time scale). Judged at the end: nothing
lost outside the rekeys' windows, the IKE_SAs did not multiply, no IKE_SA negotiated anew, and
the memory of each daemon and of the orchestrator does not grow: their resident memory is sampled
through the soak and its trend after a warm-up judged (`memory_trend`), where the run is long
enough for a trend to mean something.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from lab.running import Lab
from lab.scenarios.base import WireWatch, lab_name, running_lab, settled_ike_states, variant
from lab.scenarios.events import Event, EventRecorder
from lab.scenarios.rekey import WINDOW, ike_settle
from lab.scenarios.report import ScenarioResult
from lab.scenarios.stream import Stream

WARM_UP = 5.0  # seconds of stream before the start figures are taken
SAMPLE_EVERY = 60.0  # s between memory samples at most (a short soak samples every sixth of it)
# The memory trend's warm-up: samples in the first TREND_WARM_UP s (and at least the first
# TREND_WARM_UP_REKEYS rekey periods of the longer-lived SA) are left out. A fresh charon grows
# while its allocator's arenas, thread pool and SA hash tables reach their working size, which
# takes a few replacements of every SA, not a share of the run: a 10-hour soak need not discard
# 2 hours, and a 20-minute one keeps 18 of its minutes (at time scale 0.1 the SAs rekey every
# few seconds, so 2 minutes are a dozen CHILD_SA and dozens of IKE_SA rekeys).
#
# Measured (two 45-minute soaks at time scale 0.1, netns, libipsec): a charon's resident memory
# grows all through the first half of a soak, ever more slowly, and it is all heap (RssAnon; its
# file-backed pages stay flat): its slope over each third of the run was +3.5, +1.5 and +0.8 MiB/h
# (glibc's default arenas) and +2.8, +1.1 and +0.5 MiB/h with MALLOC_ARENA_MAX=1. A leak grows at
# a constant rate per rekey and the rekeys come at a constant rate; this settles. So the first half
# of the run is left out too (TREND_SETTLE_SHARE): a leak shows in the second half at its full
# rate, the allocator's settling hardly does.
TREND_WARM_UP = 120.0
TREND_WARM_UP_REKEYS = 3
TREND_SETTLE_SHARE = 0.5
# Below these a slope is noise with a sign: the trend is then not judged (and says why).
TREND_MIN_SAMPLES = 4
TREND_MIN_SPAN = 300.0  # s between the first and the last sample after the warm-up
# A process fails when its least-squares slope exceeds max(floor, share of its warm RSS) per
# hour: the floor covers allocator jitter (a few hundred KiB either way as arenas are trimmed and
# refilled), and a leak of 4 KiB per rekey exceeds it (at time scale 0.1 a soak sees about 1000
# rekeys an hour: 95 CHILD_SA and 242 IKE_SA rekeys in 20 minutes).
TREND_FLOOR_KIB_PER_HOUR = 2048.0
TREND_SHARE_PER_HOUR = 0.10

Samples = Sequence[tuple[float, Mapping[str, int | None]]]


def sample_offsets(seconds: float, cap: float = SAMPLE_EVERY) -> list[float]:
    """When the soak samples memory, in s after its first sample: every min(cap, seconds / 6),
    so that even a short soak has 7 samples and a long one one a minute, the last at the end."""
    if seconds <= 0:
        return [0.0]
    step = min(cap, seconds / 6)
    count = math.ceil(seconds / step - 1e-9)
    return [min(i * step, seconds) for i in range(count + 1)]


@dataclass(frozen=True)
class ProcessTrend:
    name: str
    status: str  # "flat" (passes), "grows" or "vanished" (fail), "not judged"
    warm_kib: int | None  # its first sample after the warm-up
    slope_kib_per_hour: float | None  # least squares over the samples after the warm-up
    bound_kib_per_hour: float | None
    vanished_at_s: float | None = None  # its first sample without a figure

    def describe(self) -> str:
        if self.status == "vanished":
            return f"{self.name}: vanished (no RSS from {self.vanished_at_s:g} s)"
        if self.warm_kib is None:
            return f"{self.name}: {self.status} (no sample after the warm-up)"
        slope = "no slope" if self.slope_kib_per_hour is None else \
            f"slope {self.slope_kib_per_hour:+.0f} KiB/h"
        return (f"{self.name}: {self.status}, warm RSS {self.warm_kib} KiB, {slope}, "
                f"bound {self.bound_kib_per_hour:.0f} KiB/h")


@dataclass(frozen=True)
class MemoryTrend:
    judged: bool
    ok: bool | None  # None when not judged
    reason: str  # why the growth is not judged; "" when it is
    warm_up_s: float
    samples: int  # after the warm-up
    span_s: float  # from the first to the last sample after the warm-up
    processes: list[ProcessTrend]

    def detail(self) -> str:
        head = f"{self.samples} samples over {self.span_s:.0f} s after a {self.warm_up_s:.0f} s warm-up"
        if self.reason:
            head += f"; growth not judged: {self.reason}"
        return "; ".join([head, *(p.describe() for p in self.processes)])

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of y over x; None without two distinct x."""
    if len(points) < 2:
        return None
    mx = sum(x for x, _ in points) / len(points)
    my = sum(y for _, y in points) / len(points)
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if sxx == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in points) / sxx


def memory_trend(samples: Samples, warm_up_s: float) -> MemoryTrend:
    """Whether each process's resident memory grows, from (s since the first sample, {name: KiB
    or None}) samples.

    The start and end figures alone mistake a garbage collection or an arena trimmed at the wrong
    moment for a trend, and a daemon's first minutes of filling its pools for a leak: so the
    samples inside `warm_up_s` are dropped and the rest fitted by least squares. A process fails
    when its slope exceeds max(TREND_FLOOR_KIB_PER_HOUR, TREND_SHARE_PER_HOUR x its first warm
    sample) per hour, or when it vanished (a sample without its figure). With fewer than
    TREND_MIN_SAMPLES samples or less than TREND_MIN_SPAN s after the warm-up the growth is not
    judged, and the trend says why: that is not a pass.
    """
    ordered = sorted(samples, key=lambda s: s[0])
    names = sorted({n for _, rss in ordered for n in rss})
    warm = [(t, rss) for t, rss in ordered if t >= warm_up_s]
    span = warm[-1][0] - warm[0][0] if warm else 0.0
    reasons = []
    if len(warm) < TREND_MIN_SAMPLES:
        reasons.append(f"{len(warm)} samples after the warm-up, fewer than {TREND_MIN_SAMPLES}")
    if span < TREND_MIN_SPAN:
        reasons.append(f"they span {span:.0f} s, under {TREND_MIN_SPAN:.0f} s")
    reason = "; ".join(reasons)
    processes = []
    for name in names:
        gone = next((t for t, rss in ordered if rss.get(name) is None), None)
        if gone is not None:
            processes.append(ProcessTrend(name, "vanished", None, None, None, gone))
            continue
        points = [(t / 3600, float(rss[name] or 0)) for t, rss in warm]
        warm_kib = warm[0][1][name] if warm else None
        bound = None if warm_kib is None else \
            max(TREND_FLOOR_KIB_PER_HOUR, TREND_SHARE_PER_HOUR * warm_kib)
        slope = _slope(points)
        if reason or slope is None or bound is None:
            status = "not judged"
        else:
            status = "grows" if slope > bound else "flat"
        processes.append(ProcessTrend(name, status, warm_kib, slope, bound))
    vanished = any(p.status == "vanished" for p in processes)
    # a process that vanished fails whatever the span: that needs no trend
    judged = vanished or not reason
    ok = None if not judged else not vanished and all(p.status == "flat" for p in processes)
    if judged and not processes:
        ok, reason, judged = None, "no process was sampled", False
    return MemoryTrend(judged, ok, reason, warm_up_s, len(warm), span, processes)


def trend_warm_up(conn_rekey_times: Sequence[int], seconds: float = 0.0) -> float:
    """The warm-up the soak's memory trend leaves out of a soak of `seconds` (see TREND_WARM_UP
    and TREND_SETTLE_SHARE)."""
    return max(TREND_WARM_UP, TREND_WARM_UP_REKEYS * float(max(conn_rekey_times, default=0)),
               TREND_SETTLE_SHARE * seconds)


def run_soak(base: str | Path | None = None, *, backend: str = "netns", version: str = "v2",
             minutes: float = 20.0, time_scale: float = 0.1, name: str | None = None) -> ScenarioResult:
    spec = variant(base, ike={"version": version, "exchange_mode": "main", "sa_lifetime": 60},
                   ipsec={"sa_lifetime": 180, "sa_lifetime_kb": 4096000000},
                   dpd={"enabled": True, "timeout": 30, "action": "retry"},
                   negotiation_type="active")
    name = name or lab_name("soak")
    with running_lab(spec, name, backend, time_scale) as lab:
        conn = lab.plan.gateways[0].connections[0]
        result = ScenarioResult(
            "soak", f"IKE{version} {minutes:g} min (IKE SA {conn.ike_rekey_time} s, CHILD_SA "
                    f"{conn.child_rekey_time} s, DPD {conn.dpd.timeout if conn.dpd else 0} s)",
            lab.state.backend, lab.state.dataplane, time_scale)
        _experiment(lab, result, minutes * 60)
    return result


def rss_kib(pid: int) -> int | None:
    """A process's resident memory (VmRSS, KiB), None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _memory(lab: Lab) -> dict[str, int | None]:
    pids = {key.split(":", 1)[1]: pid for key, pid in lab.state.pids.items()
            if key.startswith("charon:")}
    return {**{f"charon {node}": rss_kib(pid) for node, pid in pids.items()},
            "orchestrator": rss_kib(os.getpid())}


def _experiment(lab: Lab, result: ScenarioResult, seconds: float) -> None:
    cloud = lab.plan.gateways[0]
    conn = cloud.connections[0]
    stream = Stream(lab)
    wire = WireWatch(lab, [stream.prefix])
    try:
        # only the time, node, kind, up and IKE_SA name of each event are read: their VICI
        # messages (kilobytes a rekey) kept for the whole soak were the orchestrator's growth
        with EventRecorder(lab, ["child-rekey", "ike-rekey", "ike-updown"], details=False) as rec:
            stream.start()
            time.sleep(WARM_UP)  # the soak's own pacing: memory is taken once traffic flows
            samples: list[tuple[float, dict[str, int | None]]] = []
            t0 = time.monotonic()
            for offset in sample_offsets(seconds):
                # the soak's own pacing: the daemons rekey on their own schedule meanwhile; the
                # orchestrator only wakes to sample memory (one sleep to each sample's time, so
                # the time a sample takes does not drift the schedule)
                time.sleep(max(0.0, t0 + offset - time.monotonic()))
                samples.append((round(time.monotonic() - t0, 2), _memory(lab)))
            flow = stream.stop()
            events = rec.matching(lambda e: True)
    except BaseException:
        stream.kill()
        wire.kill()
        raise
    wire.finish(result)
    rekeys = [e for e in events if e.kind in ("child-rekey", "ike-rekey") and e.node == cloud.node]
    # IKE rekeys raise ike-rekey, never ike-updown up: an IKE_SA that comes up during the soak
    # was negotiated anew (after a DPD death, or a rekey that failed); a down alone is the
    # loser of a rekey collision (both peers rekeyed at once), which strongSwan deletes
    anew = [e for e in events if e.kind == "ike-updown" and e.up is True]
    collisions = sum(e.kind == "ike-updown" and e.up is False for e in events)
    for e in rekeys:
        result.mark(e.time, "IKE rekey" if e.kind == "ike-rekey" else "CHILD rekey")
    children = sum(e.kind == "child-rekey" for e in rekeys)
    ikes = sum(e.kind == "ike-rekey" for e in rekeys)
    result.metrics.update({"child_rekeys": children, "ike_rekeys": ikes,
                           "rss_kib_start": samples[0][1], "rss_kib_end": samples[-1][1],
                           "rss_kib_samples": [[t, dict(rss)] for t, rss in samples]})
    result.verdict("rekeys happened during the soak", children >= 1,
                   f"{children} CHILD_SA and {ikes} IKE_SA rekeys in {seconds:.0f} s")

    def near_rekey(ts: float) -> bool:
        return any(e.time + WINDOW[0] <= ts <= e.time + WINDOW[1] for e in rekeys)

    outside = inside = 0
    by_minute: dict[int, int] = {}  # when the losses outside rekeys were: a burst or spread
    for d in flow.directions:
        for seq in d.lost:
            if near_rekey(d.sent[seq]):
                inside += 1
            else:
                outside += 1
                minute = int((d.sent[seq] - flow.started) // 60)
                by_minute[minute] = by_minute.get(minute, 0) + 1
    sent = sum(len(d.sent) for d in flow.directions)
    result.metrics.update({"sent": sent, "lost_outside_rekeys": outside, "lost_in_rekeys": inside,
                           "lost_outside_rekeys_by_minute": dict(sorted(by_minute.items()))})
    result.verdict("nothing lost outside the rekeys", outside == 0,
                   f"{outside} of {sent} packets lost outside the rekeys' windows, {inside} inside"
                   + (f" (outside, by minute of the run: {dict(sorted(by_minute.items()))})"
                      if by_minute else "")
                   + (f"; the captures missed {flow.capture_drops} packets (full buffer)"
                      if flow.capture_drops else ""))
    result.metrics["ike_sas_deleted_after_rekey_collisions"] = collisions
    result.verdict("no IKE_SA had to be negotiated anew (no DPD death)", not anew,
                   f"none; {collisions} IKE_SAs deleted after rekey collisions" if not anew else
                   f"{len(anew)} new IKE_SAs: {[(e.node, round(e.time - flow.started, 1)) for e in anew]}")
    ike_sas = settled_ike_states(lab, conn.tunnel, [gw.node for gw in lab.plan.gateways],
                                 ike_settle(conn))
    result.metrics["ike_sas_at_end"] = ike_sas
    result.verdict("IKE_SAs did not multiply", all(s.count("ESTABLISHED") == 1
                                                   for s in ike_sas.values()), f"{ike_sas}")
    trend = memory_trend(samples, trend_warm_up([conn.ike_rekey_time, conn.child_rekey_time],
                                                samples[-1][0] if samples else 0.0))
    result.metrics["memory_trend"] = trend.as_dict()
    if trend.judged:  # a trend not judged adds no verdict: it must not read as a pass
        result.verdict("memory does not grow", bool(trend.ok), trend.detail())
    result.attach_stream(flow)
    result.attach_events([e for e in events if isinstance(e, Event)], flow.started)
