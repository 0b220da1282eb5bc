"""A soak: one lab, short lifetimes, DPD on, the stream both ways, for a bounded time.

Dozens of IKE and CHILD_SA rekeys happen on the daemons' own schedule (the cloud's minimum
lifetimes, IKE 60 s and IPsec 180 s, shortened by the time scale). Judged at the end: nothing
lost outside the rekeys' windows, the IKE_SAs did not multiply, no IKE_SA negotiated anew;
and measured: each daemon's and the orchestrator's resident memory at the start and the end.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from lab.running import Lab
from lab.scenarios.base import WireWatch, lab_name, running_lab, settled_ike_states, variant
from lab.scenarios.events import Event, EventRecorder
from lab.scenarios.rekey import WINDOW, ike_settle
from lab.scenarios.report import ScenarioResult
from lab.scenarios.stream import Stream

WARM_UP = 5.0  # seconds of stream before the start figures are taken


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
        with EventRecorder(lab, ["child-rekey", "ike-rekey", "ike-updown"]) as rec:
            stream.start()
            time.sleep(WARM_UP)  # the soak's own pacing: memory is taken once traffic flows
            before = _memory(lab)
            time.sleep(seconds)  # the soak itself: the daemons rekey on their own schedule
            after = _memory(lab)
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
    result.metrics.update({"child_rekeys": children, "ike_rekeys": ikes, "rss_kib_start": before,
                           "rss_kib_end": after})
    result.verdict("rekeys happened during the soak", children >= 1,
                   f"{children} CHILD_SA and {ikes} IKE_SA rekeys in {seconds:.0f} s")

    def near_rekey(ts: float) -> bool:
        return any(e.time + WINDOW[0] <= ts <= e.time + WINDOW[1] for e in rekeys)

    outside = inside = 0
    for d in flow.directions:
        for seq in d.lost:
            if near_rekey(d.sent[seq]):
                inside += 1
            else:
                outside += 1
    sent = sum(len(d.sent) for d in flow.directions)
    result.metrics.update({"sent": sent, "lost_outside_rekeys": outside, "lost_in_rekeys": inside})
    result.verdict("nothing lost outside the rekeys", outside == 0,
                   f"{outside} of {sent} packets lost outside the rekeys' windows, {inside} inside"
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
    result.attach_stream(flow)
    result.attach_events([e for e in events if isinstance(e, Event)], flow.started)
