"""Dead peer detection: cut the path under traffic, measure who declares the peer dead and when.

The cut is an nftables drop on the internet segment (links stay up). Detection time is measured
from the cut to each daemon's `ike-updown` down event and compared with the configured timeout:
IKEv1 has a per-connection `dpd_timeout`; IKEv2 gives up after the daemon's retransmit schedule,
which the plan derives from the timeout (lab.dpd), so both aim at the configured value.
Then the action: disconnect (clear) leaves the tunnel down; retry (restart) re-initiates, and the
tunnel comes back by itself once the path is restored.
"""

from __future__ import annotations

import time
from pathlib import Path

from lab.lifecycle import Lab
from lab.negotiation import initiate_tunnel
from lab.scenarios import impair
from lab.scenarios.base import WireWatch, lab_name, running_lab, variant
from lab.scenarios.events import EventRecorder
from lab.scenarios.report import ScenarioResult
from lab.scenarios.stream import Stream

STEADY = 2.0  # seconds of undisturbed stream before the cut
POST = 2.0  # seconds of stream after the tunnel is back


def run_dpd(base: str | Path | None = None, *, backend: str = "netns", version: str = "v2",
            action: str = "retry", timeout: int = 30, time_scale: float = 1.0,
            name: str | None = None) -> ScenarioResult:
    spec = variant(base, ike={"version": version, "exchange_mode": "main"},
                   dpd={"enabled": True, "timeout": timeout, "action": action},
                   negotiation_type="active")
    name = name or lab_name("dpd")
    with running_lab(spec, name, backend, time_scale) as lab:
        result = ScenarioResult("dpd", f"IKE{version} DPD {timeout}s {action}", lab.state.backend,
                                lab.state.dataplane, time_scale)
        _experiment(lab, result, action)
    return result


def _experiment(lab: Lab, result: ScenarioResult, action: str) -> None:
    cloud, customer = lab.plan.gateways[0], lab.plan.gateways[1]
    conn = cloud.connections[0]
    configured = conn.dpd.timeout if conn.dpd else 0
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
                result.verdict(f"{side} gateway declared the peer dead", seconds is not None,
                               f"after {seconds:.1f} s (configured {configured} s, error "
                               f"{seconds - configured:+.1f} s)" if seconds is not None
                               else "no ike-updown down event")
            detected = [s for s in dead.values() if s is not None]
            if detected:
                result.metrics.update({
                    "configured_timeout_s": configured,
                    "detection_cloud_s": _r(dead["cloud"]), "detection_customer_s": _r(dead["customer"]),
                    "detection_error_s": _r(max(detected) - configured),
                })
            _action_verdict(lab, result, action, cloud.node)
            t_restore = impair.restore(lab)
            result.mark(t_restore, "restore")
            if action == "retry":
                back = rec.wait_for(lambda e: e.node == cloud.node and e.kind == "child-updown"
                                    and e.up and e.time >= t_restore, timeout=configured * 3 + 30)
                result.verdict("retry re-established the tunnel by itself after the path came back",
                               back is not None,
                               f"{back.time - t_restore:.1f} s after restore" if back else "not within "
                               f"{configured * 3 + 30} s")
            else:
                with lab.vici(cloud.node) as v:
                    leftover = [sa for sa in v.sas() if sa["name"] == conn.tunnel]
                result.verdict("disconnect leaves the tunnel down after the path came back",
                               not leftover, "no IKE_SA" if not leftover else f"{len(leftover)} IKE_SA")
                initiate_tunnel(lab, conn.tunnel)  # the active cloud gateway negotiates anew
                back = rec.wait_for(lambda e: e.node == cloud.node and e.kind == "child-updown"
                                    and e.up and e.time >= t_restore, timeout=5)
            if back:
                result.mark(back.time, "tunnel up again")
                result.metrics["recovery_s"] = _r(back.time - t_restore)
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
    with lab.vici(node) as v:
        states = [sa.get("state") for sa in v.sas()]
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
    with running_lab(spec, name, backend, time_scale) as lab:
        hold = 2 * max(2, round(timeout * time_scale))  # the plan's scaling of the DPD timeout
        result = ScenarioResult("dpd", f"IKE{version} DPD off (cut held {hold} s = 2 x the "
                                f"{timeout} s timeout{' scaled' if time_scale != 1 else ''})",
                                lab.state.backend, lab.state.dataplane, time_scale)
        _experiment_off(lab, result, hold)
    return result


def _established(lab: Lab) -> dict[str, list[str]]:
    ids = {}
    for gw in lab.plan.gateways:
        with lab.vici(gw.node) as v:
            ids[gw.side] = sorted(f"{sa['uniqueid']}:{sa.get('state')}" for sa in v.sas())
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
