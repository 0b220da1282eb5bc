"""Dead peer detection: cut the path under traffic, measure who declares the peer dead and when.

The cut is an nftables drop on the internet segment (links stay up). Detection time is measured
from the cut to each daemon's `ike-updown` down event and compared with the configured timeout:
IKEv1 has a per-connection `dpd_timeout`; IKEv2 gives up after the daemon's retransmit schedule,
which the plan derives from the timeout (lab.dpd), so both aim at the configured value.
Each daemon's detection time is judged against `lab.dpd.detection_window`. Then the action:
disconnect (clear) leaves the tunnel down, watched for a while after the path is restored (no up
event, no SA on either end), before the lab itself initiates it again (its own step, labelled
so); retry (restart) re-initiates, and the tunnel comes back by itself once the path is back.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from lab.dpd import detection_window
from lab.negotiation import initiate_tunnel
from lab.plan import DaemonTuning
from lab.running import Lab
from lab.scenarios import impair
from lab.scenarios.base import WireWatch, lab_name, running_lab, variant
from lab.scenarios.events import EventRecorder
from lab.scenarios.report import ScenarioResult
from lab.scenarios.stream import Stream

STEADY = 2.0  # seconds of undisturbed stream before the cut
POST = 2.0  # seconds of stream after the tunnel is back
QUIET = 3.0  # at least this long after the restore, nothing may re-negotiate a disconnected tunnel


def run_dpd(base: str | Path | None = None, *, backend: str = "netns", version: str = "v2",
            action: str = "retry", timeout: int = 30, time_scale: float = 1.0,
            name: str | None = None, tuning: DaemonTuning | None = None,
            after_restore: Callable[[Lab], None] | None = None) -> ScenarioResult:
    """`tuning`: daemon-wide settings instead of those derived from the timeout (a retransmit
    schedule that misses the timeout shows the detection verdict failing); `after_restore` runs
    right after the path is restored (a re-negotiation there shows the disconnect verdict
    failing)."""
    spec = variant(base, ike={"version": version, "exchange_mode": "main"},
                   dpd={"enabled": True, "timeout": timeout, "action": action},
                   negotiation_type="active")
    name = name or lab_name("dpd")
    with running_lab(spec, name, backend, time_scale, libreswan=True, tuning=tuning) as lab:
        result = ScenarioResult("dpd", f"IKE{version} DPD {timeout}s {action}", lab.state.backend,
                                lab.state.dataplane, time_scale)
        _experiment(lab, result, action, after_restore)
    return result


def _experiment(lab: Lab, result: ScenarioResult, action: str,
                after_restore: Callable[[Lab], None] | None = None) -> None:
    cloud, customer = lab.plan.gateways[0], lab.plan.gateways[1]
    conn = cloud.connections[0]
    assert conn.dpd is not None  # run_dpd enables DPD
    configured = conn.dpd.timeout
    low, high = detection_window(conn.dpd)
    quiet = max(QUIET, 2 * conn.dpd.delay)
    stream = Stream(lab)
    wire = WireWatch(lab, [stream.prefix])
    try:
        with EventRecorder(lab) as rec:
            stream.start()
            time.sleep(STEADY)  # an experiment's own pacing, not a wait for a condition
            t_cut = impair.cut(lab, cloud.public_ip, customer.public_ip)
            result.mark(t_cut, "cut")
            dead = {}
            for gw in (cloud, customer):
                event = rec.wait_for(lambda e, n=gw.node: e.node == n and e.kind == "ike-updown"
                                     and e.up is False and e.time >= t_cut, timeout=configured * 3 + 30)
                dead[gw.side] = event.time - t_cut if event else None
                if event:
                    result.mark(event.time, f"DPD: {gw.side} declares peer dead")
            for side, seconds in dead.items():
                result.verdict(f"{side} gateway declared the peer dead at the configured timeout",
                               seconds is not None and low <= seconds <= high,
                               f"after {seconds:.1f} s; configured {configured} s, expected "
                               f"{low:.1f}-{high:.1f} s (the timeout, give or take one DPD delay "
                               f"of {conn.dpd.delay} s and max(1 s, 5 %))"
                               if seconds is not None else "no ike-updown down event")
            detected = [s for s in dead.values() if s is not None]
            if detected:
                result.metrics.update({
                    "configured_timeout_s": configured, "expected_detection_s": [low, high],
                    "detection_cloud_s": _r(dead["cloud"]), "detection_customer_s": _r(dead["customer"]),
                    "detection_error_s": _r(max(detected) - configured),
                })
            _action_verdict(lab, result, action, cloud.node)
            t_restore = impair.restore(lab)
            result.mark(t_restore, "restore")
            if after_restore is not None:
                after_restore(lab)
            if action == "retry":
                back = rec.wait_for(lambda e: e.node == cloud.node and e.kind == "child-updown"
                                    and e.up and e.time >= t_restore, timeout=configured * 3 + 30)
                result.verdict("retry re-established the tunnel by itself after the path came back",
                               back is not None,
                               f"{back.time - t_restore:.1f} s after restore" if back else "not within "
                               f"{configured * 3 + 30} s")
                if back:
                    result.metrics["recovery_s"] = _r(back.time - t_restore)
            else:
                # nothing may negotiate by itself for a while after the path is back: no up event
                # on either gateway, no SA on either at the end of the period
                up = rec.wait_for(lambda e: e.kind in ("ike-updown", "child-updown") and e.up
                                  and e.time >= t_restore, timeout=quiet)
                leftover = {gw.side: len(lab.sas(gw.node)) for gw in (cloud, customer)}
                result.verdict(f"disconnect leaves the tunnel down after the path came back "
                               f"({quiet:.0f} s watched)", up is None and not any(leftover.values()),
                               f"{up.node} brought {up.kind[:-7]} up {up.time - t_restore:.1f} s after "
                               "the restore" if up else f"no SA re-negotiated; IKE_SAs now {leftover}")
                back = up
                if up is None and not any(leftover.values()):
                    t_lab = time.time()
                    initiate_tunnel(lab, conn.tunnel)  # the lab's own step, not the cloud's
                    result.mark(t_lab, "the lab initiates the tunnel again")
                    back = rec.wait_for(lambda e: e.node == cloud.node and e.kind == "child-updown"
                                        and e.up and e.time >= t_lab, timeout=5)
                    if back:
                        result.metrics["lab_reinitiation_s"] = _r(back.time - t_lab)
            if back:
                result.mark(back.time, "tunnel up again")
            time.sleep(POST)  # let the stream show the recovered tunnel
            flow = stream.stop()
            rec_events = rec.matching(lambda e: True)
    except BaseException:
        stream.kill()
        wire.kill()
        raise
    wire.finish(result)
    result.attach_stream(flow)
    result.attach_events(rec_events, flow.started)
    udp = flow.directions[0]
    last, first = udp.outage_around(t_cut)
    if last and first:
        result.metrics["outage_s"] = _r(first - last)
    result.verdict("traffic flows again after recovery", first is not None and first > t_restore,
                   f"first packet delivered {first - t_restore:.2f} s after restore" if first
                   else "no packet delivered after the cut")


def _action_verdict(lab: Lab, result: ScenarioResult, action: str, node: str) -> None:
    states = [sa.get("state") for sa in lab.sas(node)]
    if action == "retry":
        result.verdict("retry: the cloud gateway re-initiates after declaring the peer dead",
                       any(s in ("CONNECTING", "ESTABLISHED") for s in states),
                       f"IKE_SA states now: {states or 'none'}")
    else:
        result.verdict("disconnect: the cloud gateway cleared the SAs", not states,
                       f"IKE_SA states now: {states or 'none'}")


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 2)


def run_dpd_off(base: str | Path | None = None, *, backend: str = "netns", version: str = "v2",
                timeout: int = 30, time_scale: float = 1.0, name: str | None = None) -> ScenarioResult:
    """DPD disabled: the same cut, held for twice the timeout DPD would have used.

    Pass: neither gateway declares the peer dead (no ike-updown down event) and both still list
    the same IKE_SA established when the cut ends, although nothing got through during it; once
    the path is back, traffic resumes on those very SAs without any negotiation.
    """
    spec = variant(base, ike={"version": version, "exchange_mode": "main"},
                   dpd={"enabled": False, "timeout": timeout}, negotiation_type="active")
    name = name or lab_name("dpd")
    with running_lab(spec, name, backend, time_scale, libreswan=True) as lab:
        hold = 2 * max(2, round(timeout * time_scale))  # the plan's scaling of the DPD timeout
        result = ScenarioResult("dpd", f"IKE{version} DPD off (cut held {hold} s = 2 x the "
                                f"{timeout} s timeout{' scaled' if time_scale != 1 else ''})",
                                lab.state.backend, lab.state.dataplane, time_scale)
        _experiment_off(lab, result, hold)
    return result


def _established(lab: Lab) -> dict[str, list[str]]:
    ids: dict[str, list[str]] = {}
    for gw in lab.plan.gateways:
        ids[gw.side] = sorted(f"{sa['uniqueid']}:{sa.get('state')}" for sa in lab.sas(gw.node))
    return ids


def _experiment_off(lab: Lab, result: ScenarioResult, hold: int) -> None:
    cloud, customer = lab.plan.gateways[0], lab.plan.gateways[1]
    stream = Stream(lab)
    wire = WireWatch(lab, [stream.prefix])
    try:
        with EventRecorder(lab) as rec:
            before = _established(lab)
            stream.start()
            time.sleep(STEADY)  # an experiment's own pacing, not a wait for a condition
            t_cut = impair.cut(lab, cloud.public_ip, customer.public_ip)
            result.mark(t_cut, "cut")
            # the experiment: hold the cut for twice the timeout and record what the daemons do
            dead = rec.wait_for(lambda e: e.kind == "ike-updown" and e.up is False and e.time >= t_cut,
                                timeout=hold)
            during = _established(lab)
            t_restore = impair.restore(lab)
            result.mark(t_restore, "restore")
            time.sleep(POST + 1.0)  # let the stream show whether traffic resumes
            flow = stream.stop()
            down_events = rec.matching(lambda e: e.kind in ("ike-updown", "child-updown")
                                       and e.up is False and e.time >= t_cut)
            after = _established(lab)
            rec_events = rec.matching(lambda e: True)
    except BaseException:
        stream.kill()
        wire.kill()
        raise
    result.metrics["cut_held_s"] = round(t_restore - t_cut, 2)
    result.verdict(f"nobody declared the peer dead within the {hold} s cut", dead is None and not down_events,
                   "no ike-updown/child-updown down event" if dead is None and not down_events else
                   "; ".join(f"{e.node} {e.kind} down after {e.time - t_cut:.1f} s" for e in down_events))
    result.verdict("both gateways kept the same IKE_SA established through the cut",
                   before == during == after and all(before.values())
                   and all(s.endswith(":ESTABLISHED") for ids in before.values() for s in ids),
                   f"before {before}, at the end of the cut {during}, after {after}")
    wire.finish(result)
    result.attach_stream(flow)
    result.attach_events(rec_events, flow.started)
    udp = flow.directions[0]
    lost_in_cut = sum(d.lost_between(t_cut + 1.0, t_restore - 0.5) for d in flow.directions)
    sent_in_cut = sum(1 for d in flow.directions for ts in d.sent.values()
                      if t_cut + 1.0 <= ts < t_restore - 0.5)
    result.verdict("the cut really stopped the traffic", sent_in_cut > 0 and lost_in_cut == sent_in_cut,
                   f"{lost_in_cut} of {sent_in_cut} packets sent during the cut lost")
    last, first = udp.outage_around(t_cut)
    if last and first:
        result.metrics["outage_s"] = _r(first - last)
    result.verdict("traffic resumes on the same SAs once the path is back",
                   first is not None and first > t_restore,
                   f"first packet delivered {first - t_restore:.2f} s after restore" if first
                   else "no packet delivered after the cut")
