"""Hostile packets on the wire while a tunnel carries the stream.

From the internet segment, the agent sends truncated and oversized IKE headers, bad payload
lengths, unknown exchange types, a bounded IKE_SA_INIT flood from spoofed documentation-range
addresses, ESP with unknown SPIs, and ESP frames captured earlier from the tunnel, replayed.
Pass: both daemons stay up, the tunnel stays established (same IKE_SA), the stream loses
nothing, and no replayed packet reaches a host (the stream would count it as a duplicate).
That last verdict must not pass vacuously: a capture on each gateway's WAN interface has to show
the replayed frames arriving there (byte-identical copies of ESP frames seen before: legitimate ESP
never repeats, its sequence number grows). The daemons' log, streamed over VICI during the attack,
is searched for libipsec's anti-replay message as well and the count reported.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections import Counter
from pathlib import Path

from lab.agent import ESP_KINDS, wire_kind
from lab.errors import LabError
from lab.probe import Agent
from lab.processes import alive
from lab.running import Lab
from lab.scenarios.base import WireWatch, lab_name, running_lab, variant
from lab.scenarios.events import EventRecorder
from lab.scenarios.report import ScenarioResult
from lab.scenarios.stream import Stream
from lab.timing import patience

# What an ESP dataplane logs when the anti-replay window rejects a packet: libipsec's
# esp_packet.c ("ESP sequence number verification failed:\n src ..., dst ..., SPI ... [seq N]").
REPLAY_LOG = "ESP sequence number verification failed"


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
    """eth0's MAC as the node's own network stack reports it. Not /sys/class/net: a netns backend
    exec enters only the network namespace, and the host's /sys then shows the host's eth0."""
    out = lab.backend.exec(lab.state, node, ["ip", "-o", "link", "show", "dev", "eth0"])
    words = out.stdout.split()
    if out.returncode != 0 or "link/ether" not in words:
        raise LabError(f"no MAC address for eth0 in {node}: {out.stderr.strip() or out.stdout.strip()}")
    return words[words.index("link/ether") + 1]


class _WanCapture:
    """tcpdump of ESP (in UDP 4500, or IP protocol 50) on every gateway's eth0 into its lab
    directory, stopped by closing stdin (which a `docker exec -i` passes on, so it works on both
    backends)."""

    FILE = "hostile-esp.pcap"

    def __init__(self, lab: Lab):
        self.lab = lab
        self.procs = {}
        for gw in lab.plan.gateways:
            path = f"{lab.backend.run_dir(lab.state.name, gw.node)}/{self.FILE}"
            script = (f"tcpdump -U -s 256 -i eth0 -w {path} 'udp port 4500 or ip proto 50' "
                      "2>/dev/null & "
                      "t=$!; read _; kill $t; wait $t")
            self.procs[gw.node] = lab.backend.spawn(lab.state, gw.node, ["sh", "-c", script])

    def finish(self) -> dict[str, int]:
        """Per gateway: ESP frames that arrived more than once, byte for byte."""
        # scapy costs a second to import: only this step of the scenario needs it here
        from scapy.layers.inet import IP, UDP
        from scapy.plist import PacketList
        from scapy.utils import rdpcap

        for proc in self.procs.values():
            with contextlib.suppress(BrokenPipeError, OSError):
                proc.communicate("\n", timeout=10)
        repeated = {}
        for gw in self.lab.plan.gateways:
            path = self.lab.backend.host_dir(self.lab.state.name, gw.node) / self.FILE
            try:
                frames = rdpcap(str(path))
            except (OSError, EOFError):
                frames = PacketList()
            seen = Counter(bytes(f[IP].payload) for f in frames
                           if f.haslayer(IP) and str(f[IP].dst) == str(gw.public_ip)
                           and wire_kind(f, IP, UDP) in ESP_KINDS)
            repeated[gw.node] = sum(n - 1 for n in seen.values() if n > 1)
            with contextlib.suppress(OSError):
                path.unlink()
        return repeated

    def kill(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()


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
    pcaps = _WanCapture(lab)
    try:
        with EventRecorder(lab, ["log"]) as rec:
            stream.start()
            time.sleep(1.0)  # stream running, and ESP on the wire for the agent to capture
            t_attack = time.time()
            result.mark(t_attack, "attack starts")
            attack = Agent(lab, lab.plan.internet_node,
                           ["hostile", "--iface", lab.plan.node(lab.plan.internet_node).bridge or "br0",
                            "--flood", str(flood),
                            "--esp", "udp" if lab.plan.dataplane.name == "libipsec" else "raw"],
                           stdin=json.dumps(targets)).finish(timeout=patience(300))
            result.mark(time.time(), "attack ends")
            time.sleep(1.5)  # stream after the attack (and the daemons' last log lines)
            flow = stream.stop()
            rejected = rec.matching(lambda e: e.time >= t_attack and REPLAY_LOG in
                                    str(e.detail.get("msg", "")))
        arrived = pcaps.finish()
    except BaseException:
        stream.kill()
        wire.kill()
        pcaps.kill()
        raise
    wire.finish(result)
    result.metrics["sent"] = attack.get("sent", {})
    result.metrics["esp_captured_for_replay"] = attack.get("captured_esp", 0)
    running = {key: alive(pid) for key, pid in pids.items()}
    answering = {}
    for gw in lab.plan.gateways:
        try:
            with lab.vici(gw.node) as v:
                v.sas()
            answering[gw.node] = True
        except Exception:  # noqa: BLE001 - any failure means the daemon is not answering
            answering[gw.node] = False
    result.verdict("both daemons stayed up and answer VICI",
                   all(answering.values()) and (not running or all(running.values())),
                   f"VICI {answering}, processes {running or 'not tracked by PID on this backend'}")
    after = _ike_ids(lab)
    result.verdict("the tunnel stayed established (same IKE_SA)", before == after and all(before.values()),
                   f"before {before}, after {after}")
    lost = sum(len(d.lost) for d in flow.directions)
    result.verdict("the stream lost nothing", lost == 0, flow.losses())
    replayed = attack.get("sent", {}).get("replayed ESP", 0)
    dup = sum(d.duplicates for d in flow.directions)
    result.verdict("replayed ESP was not delivered to the hosts", replayed > 0 and dup == 0,
                   f"{replayed} ESP frames replayed, {dup} duplicates delivered")
    per_node = {gw.node: sum(e.node == gw.node for e in rejected) for gw in lab.plan.gateways}
    result.metrics["replayed_esp_arrived"] = arrived
    result.metrics["replay_rejections_logged"] = per_node
    result.verdict("the replayed ESP reached the gateways (WAN capture) and none got through",
                   replayed > 0 and sum(arrived.values()) > 0 and dup == 0,
                   f"{sum(arrived.values())} byte-identical repeated ESP frames arrived on the gateways' "
                   f"eth0 ({arrived}) for {replayed} replayed; {dup} delivered to the hosts; "
                   f"'{REPLAY_LOG}' logged {sum(per_node.values())} times")
    result.attach_stream(flow)
