"""Hostile packets on the wire while a tunnel carries the stream.

From the internet segment, the agent sends truncated and oversized IKE headers, bad payload
lengths, unknown exchange types, a bounded IKE_SA_INIT flood from spoofed documentation-range
addresses, ESP with unknown SPIs, and ESP frames captured earlier from the tunnel, replayed.
Pass: both daemons stay up, the tunnel stays established (same IKE_SA), the stream loses
nothing, and no replayed packet reaches a host (the stream would count it as a duplicate).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from lab.check import Agent
from lab.lifecycle import Lab
from lab.scenarios.base import WireWatch, lab_name, running_lab, variant
from lab.scenarios.report import ScenarioResult
from lab.scenarios.stream import Stream


def run_hostile(base: str | Path | None = None, *, backend: str = "netns", version: str = "v2",
                flood: int = 100, name: str | None = None) -> ScenarioResult:
    spec = variant(base, ike={"version": version, "exchange_mode": "main"})
    name = name or lab_name("hos")
    with running_lab(spec, name, backend) as lab:
        result = ScenarioResult("hostile", f"IKE{version}, flood {flood} per gateway",
                                lab.state.backend, lab.state.dataplane, 1.0)
        _experiment(lab, result, flood)
    return result


def _mac(lab: Lab, node: str) -> str:
    out = lab.backend.exec(lab.state, node, ["cat", "/sys/class/net/eth0/address"])
    return out.stdout.strip()


def _ike_ids(lab: Lab) -> dict[str, list[str]]:
    ids = {}
    for gw in lab.plan.gateways:
        with lab.vici(gw.node) as v:
            ids[gw.node] = sorted(f"{sa['uniqueid']}:{sa.get('state')}" for sa in v.sas()
                                  if sa.get("state") == "ESTABLISHED")
    return ids


def _experiment(lab: Lab, result: ScenarioResult, flood: int) -> None:
    cloud, customer = lab.plan.gateways[0], lab.plan.gateways[1]
    targets = [
        {"ip": str(cloud.public_ip), "mac": _mac(lab, cloud.node), "peer": str(customer.public_ip)},
        {"ip": str(customer.public_ip), "mac": _mac(lab, customer.node), "peer": str(cloud.public_ip)},
    ]
    before = _ike_ids(lab)
    pids = {k: v for k, v in lab.state.pids.items() if k.startswith("charon:")}
    stream = Stream(lab)
    wire = WireWatch(lab, [stream.prefix])
    try:
        stream.start()
        time.sleep(1.0)  # stream running, and ESP on the wire for the agent to capture
        t_attack = time.time()
        result.mark(t_attack, "attack starts")
        attack = Agent(lab, lab.plan.internet_node,
                       ["hostile", "--iface", lab.plan.node(lab.plan.internet_node).bridge or "br0",
                        "--flood", str(flood)], stdin=json.dumps(targets)).finish(timeout=300)
        result.mark(time.time(), "attack ends")
        time.sleep(1.5)  # stream after the attack
        flow = stream.stop()
    except BaseException:
        stream.kill()
        wire.kill()
        raise
    wire.finish(result)
    result.metrics["sent"] = attack.get("sent", {})
    result.metrics["esp_captured_for_replay"] = attack.get("captured_esp", 0)
    alive = {}
    for key, pid in pids.items():
        try:
            with open(f"/proc/{pid}/stat") as f:
                alive[key] = f.read().split(") ", 1)[1][0] != "Z"
        except OSError:
            alive[key] = False
    answering = {}
    for gw in lab.plan.gateways:
        try:
            with lab.vici(gw.node) as v:
                v.sas()
            answering[gw.node] = True
        except Exception:  # noqa: BLE001 - any failure means the daemon is not answering
            answering[gw.node] = False
    result.verdict("both daemons stayed up and answer VICI",
                   all(answering.values()) and (not alive or all(alive.values())),
                   f"VICI {answering}, processes {alive or 'not tracked by PID on this backend'}")
    after = _ike_ids(lab)
    result.verdict("the tunnel stayed established (same IKE_SA)", before == after and all(before.values()),
                   f"before {before}, after {after}")
    lost = sum(len(d.lost) for d in flow.directions)
    result.verdict("the stream lost nothing", lost == 0,
                   f"{lost} lost of {sum(len(d.sent) for d in flow.directions)}")
    replayed = attack.get("sent", {}).get("replayed ESP", 0)
    dup = sum(d.duplicates for d in flow.directions)
    result.verdict("replayed ESP was not delivered to the hosts", replayed > 0 and dup == 0,
                   f"{replayed} ESP frames replayed, {dup} duplicates delivered")
    result.attach_stream(flow)
