"""Negotiation types from the outside: who sends the first IKE packet, when, and on what cue.

A capture on the internet segment starts before any tunnel is loaded, so it sees the very first
IKE packet. active: the cloud gateway speaks first, right away; passive: the customer gateway
speaks first and the cloud never initiates; traffic-triggered: nothing at all until VPC traffic
matches the tunnel, then the cloud gateway speaks first.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from lab.check import run_check
from lab.probe import Agent
from lab.running import Lab
from lab.scenarios.base import WireWatch, lab_name, running_lab, variant
from lab.scenarios.events import EventRecorder
from lab.scenarios.report import ScenarioResult
from lab.timing import patience

TYPES = ("active", "passive", "traffic-triggered")


def run_negotiation(base: str | Path | None = None, *, backend: str = "netns",
                    negotiation_type: str = "active", version: str = "v2",
                    name: str | None = None) -> ScenarioResult:
    spec = variant(base, negotiation_type=negotiation_type,
                   ike={"version": version, "exchange_mode": "main"})
    name = name or lab_name("neg")
    watch: dict[str, WireWatch] = {}
    t_loaded = {}

    def capture_first(lab: Lab) -> None:
        watch["wire"] = WireWatch(lab, ["ILABneg"])
        t_loaded["t"] = time.time()

    with running_lab(spec, name, backend, libreswan=True, before_establish=capture_first) as lab:
        result = ScenarioResult("negotiation", f"{negotiation_type} (IKE{version})",
                                lab.state.backend, lab.state.dataplane, 1.0)
        tunnel = lab.plan.gateways[0].connections[0].tunnel
        result.metrics["mechanism"] = lab.state.negotiation.get(tunnel, "")
        result.mark(t_loaded["t"], "tunnel loaded")
        try:
            _experiment(lab, result, negotiation_type, t_loaded["t"], watch["wire"])
        finally:
            wire = watch["wire"].finish(result)
        _first_packet(lab, result, negotiation_type, wire, t_loaded["t"])
    return result


def _established(lab: Lab, node: str) -> list[str]:
    """The states of a gateway's IKE_SAs, from either daemon (pluto lists established ones)."""
    return [sa.get("state", "") for sa in lab.sas(node)]


def _experiment(lab: Lab, result: ScenarioResult, kind: str, t_loaded: float, wire: WireWatch) -> None:
    cloud = lab.plan.gateways[0]
    if kind != "traffic-triggered":
        states = _established(lab, cloud.node)
        result.verdict("the tunnel is up once loaded", "ESTABLISHED" in states, f"IKE_SA: {states}")
    else:
        both = [_established(lab, cloud.node), _established(lab, lab.plan.gateways[1].node)]
        result.verdict("nothing negotiated before VPC traffic", both == [[], []],
                       f"IKE_SAs before traffic: cloud {both[0]}, customer {both[1]}")
        probe = lab.plan.probes[0]
        with EventRecorder(lab, ["child-updown"]) as rec:
            sent = Agent(lab, probe.vpc_node, ["send", "--iface", "eth0", "--prefix", "ILABneg"],
                         stdin=json.dumps([{"src": str(probe.vpc_addr), "dst": str(probe.idc_addr),
                                            "proto": "udp", "marker": "ILABneg-trigger"}])).finish()
            t_traffic = sent["t_first"]  # when the first VPC packet left the host
            result.mark(t_traffic, "VPC traffic")
            result.metrics["t_traffic"] = t_traffic
            up = rec.wait_for(lambda e: e.node == cloud.node and e.up, timeout=patience(30))
        result.verdict("VPC traffic brought the tunnel up", up is not None,
                       f"{up.time - t_traffic:.2f} s after the first VPC packet" if up else "not in 30 s")
        if up:
            result.mark(up.time, "tunnel up")
            result.metrics["traffic_to_up_s"] = round(up.time - t_traffic, 3)
    report = run_check(lab)
    failed = [f"{f.plane} {f.check}" for f in report.checks if not f.ok]
    result.verdict("ipsec-lab check passes (control, data, wire)", report.ok,
                   f"{len(report.checks)} checks" + (f"; failed: {failed}" if failed else ""))


def _first_packet(lab: Lab, result: ScenarioResult, kind: str, wire: dict, t_loaded: float) -> None:
    cloud, customer = lab.plan.gateways[0].public_ip, lab.plan.gateways[1].public_ip
    ike = sorted((t, k.split(" ", 1)[1]) for k, t in wire.get("first", {}).items()
                 if k.startswith("udp/500"))
    if not ike:
        result.verdict("an IKE packet was seen on the wire", False, "none captured")
        return
    t_first, flow = ike[0]
    sender = flow.split(">")[0]
    expected = str(customer if kind == "passive" else cloud)
    who = {str(cloud): "cloud gateway", str(customer): "customer gateway"}
    result.verdict(f"the {who[expected]} sent the first IKE packet", sender == expected,
                   f"first IKE packet {flow}, {t_first - t_loaded:.3f} s after loading")
    result.metrics["first_ike_after_load_s"] = round(t_first - t_loaded, 3)
    if kind == "traffic-triggered" and "t_traffic" in result.metrics:
        t_traffic = result.metrics.pop("t_traffic")
        result.verdict("no IKE packet before the VPC traffic", t_first >= t_traffic,
                       f"first IKE packet {t_first - t_traffic:+.3f} s relative to the traffic")
