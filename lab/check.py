"""`ipsec-lab check`: is every tunnel up, as configured, carrying traffic, and only encrypted?

Three planes, like strongSwan's own test cases, but from VICI dictionaries and scapy instead of
grepped text:
- control: both ends list the IKE_SA established and one CHILD_SA per mapping installed, with
  the spec's algorithms (PFS checked on a CHILD_SA rekey for IKEv2, whose first CHILD_SA has no DH),
  judged by the lab's customer side (`lab.running.CustomerSide`: generated or the user's own);
- data: marked UDP and ICMP from each IDC host to the VPC host and back, per mapping; and per
  tunnel an MTU probe both ways (ICMP echo of MTU_SIZES bytes with DF), which tells a path that
  reports its MTU (ICMP "fragmentation needed": PMTU discovery works) from a black hole;
- wire: a capture on the internet segment sees only IKE/ESP on UDP 500/4500, never a marker.
"""

from __future__ import annotations

import functools
import json
import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from vici.exception import CommandException

from lab import diagnose, liveness
from lab import verify as vf
from lab.agent import ESP_KINDS, FRAGMENT, encapsulation, esp_packets
from lab.errors import LabError
from lab.esp_counters import Counted, EspCounters
from lab.findings import CheckReport
from lab.negotiation import wait_children_up
from lab.probe import Agent
from lab.timing import patience

if TYPE_CHECKING:
    from lab.running import Lab

PROBE_PORT = 33434
PROBE_TIMEOUT = patience(5.0)
PROBE_RETRIES = 2  # probes not confirmed are sent again, spaced over the time-out (lab.agent send)
PROBE_SEND_TIME = 0.005  # generous time to build and send one probe (measured ~0.5 ms here)
# IP packet sizes of the MTU probe: what fits under IPsec's overhead on a 1500-byte internet
# path (1400, the common clamp), and a full-size packet, which must be reported as too big
MTU_SIZES = (1400, 1500)
TCP_IP_HEADERS = 40  # bytes of IPv4 + TCP headers: the MSS is the path MTU less these


# What can go wrong while checking a broken tunnel: the lab's errors, a daemon that does not
# answer its socket (OSError, TimeoutError), strongSwan refusing a VICI command.
CHECK_ERRORS = (LabError, OSError, TimeoutError, CommandException)


def attempt(report: CheckReport, tunnel: str, subject: str, plane: str, check: str,
            step: Callable[[], Any]) -> bool:
    """Run one step of the check; a step that cannot run is a failed row saying why, and the
    check goes on (it exists for the moment a tunnel is broken)."""
    try:
        step()
        return True
    except CHECK_ERRORS as exc:
        report.add(tunnel, subject, plane, check, False, f"could not check: {exc or type(exc).__name__}")
        return False


def run_check(lab: Lab, *, rekey: bool = True) -> CheckReport:
    """Every check that can be made, each step bounded; a failed check ends with a diagnosis."""
    report = CheckReport(lab.state.name, lab.state.backend, lab.state.dataplane)
    prefix = f"ILAB{secrets.token_hex(4)}"
    # Every probe process starts now, in parallel: importing scapy is most of a check's time.
    capture = Agent(lab, lab.plan.internet_node,
                    ["capture", "--iface", lab.plan.node(lab.plan.internet_node).bridge or "br0",
                     "--prefix", prefix])
    data = DataPlane(lab, prefix)
    crossings: dict[tuple[str, str], int] = {}
    counted: list[Counted] = []
    wire: dict[str, Any] | None = None
    capturing = False
    try:
        # a frozen daemon is asked nothing more after this (else every step waits out its time-out)
        lab.silent = liveness.silent_daemons(lab)
        capturing = attempt(report, "*", "internet segment", "wire", "capture", capture.wait_ready)
        attempt(report, "*", lab.plan.gateways[0].node, "control", "traffic-triggered negotiation",
                lambda: trigger_waiting(lab, report, prefix))
        for conn in (c for cloud in lab.plan.cloud_gateways for c in cloud.connections):
            attempt(report, conn.tunnel, "control plane", "control", "control plane",
                    functools.partial(lab.customer.control_plane, lab, report, conn.tunnel, rekey))
        counters = EspCounters(lab, data.tunnels)
        counting = attempt(report, "*", "SA counters", "data", "ESP counted by the SAs",
                           counters.start)
        crossings = data.run(report)
        if counting and attempt(report, "*", "SA counters", "data", "ESP counted by the SAs",
                                lambda: counted.extend(counters.counted())):
            for tunnel in data.tunnels:
                report.add(tunnel, "SA counters", "data", "ESP counted by the SAs", True,
                           "; ".join(c.describe() for c in counted if c.tunnel == tunnel),
                           info=True)
    finally:
        data.stop()
        if capturing:
            try:
                wire = capture.finish()
            except LabError as exc:
                report.add("*", "internet segment", "wire", "capture", False, f"could not check: {exc}")
        else:
            capture.kill()
    if wire is not None:
        wire_check(report, wire, esp_expected(lab, crossings))
    for tunnel in (t.name for t in lab.spec.tunnels if t.customer_gateway.behind_nat):
        attempt(report, tunnel, "NAT", "control", "NAT traversal",
                functools.partial(nat_traversal, lab, report, tunnel, wire))
    if not report.ok:
        cause, evidence = diagnose.check_failure(report.findings, wire, counted)
        report.add("*", "diagnosis", "diagnosis", f"most likely: {cause}", False, evidence,
                   info=True)
    return report


# -- traffic-triggered tunnels -------------------------------------------------------------------
def trigger_waiting(lab: Lab, report: CheckReport, prefix: str) -> None:
    """Send VPC traffic for traffic-triggered tunnels that are not up yet, then wait for them."""
    cloud = lab.plan.gateways[0]
    with lab.vici(cloud.node) as v:
        sas = v.sas()
    waiting = []
    for conn in cloud.connections:
        if lab.spec.tunnel(conn.tunnel).negotiation_type != "traffic-triggered":
            continue
        have = vf.installed_children(vf.find_ike(sas, conn.tunnel))
        waiting += [(conn.tunnel, ch.name) for ch in conn.children if ch.name not in have]
    if not waiting:
        return
    names = {child for _, child in waiting}
    probes = [p for p in lab.plan.probes if p.child in names]
    with lab.vici(cloud.node) as v, v.events(["child-updown"]) as next_event:
        by_node: dict[str, list[dict[str, str]]] = {}
        for p in probes:
            by_node.setdefault(p.vpc_node, []).append(
                {"src": str(p.vpc_addr), "dst": str(p.idc_addr), "proto": "udp",
                 "marker": f"{prefix}-trigger-{p.child}"})
        for node, batch in by_node.items():
            Agent(lab, node, ["send", "--iface", "eth0", "--prefix", prefix,
                              "--port", str(PROBE_PORT)], stdin=json.dumps(batch)).finish()
        try:
            wait_children_up(next_event, names, time.monotonic() + patience(20), cloud.node)
            ok, detail = True, "came up on VPC traffic"
        except LabError as exc:
            ok, detail = False, str(exc)
    for tunnel in dict.fromkeys(t for t, _ in waiting):
        report.add(tunnel, cloud.node, "control", "traffic-triggered negotiation", ok, detail)


# -- data plane -------------------------------------------------------------------------------------
class DataPlane:
    """UDP both ways and ICMP echo both ways, per mapping, all markers accounted for."""

    def __init__(self, lab: Lab, prefix: str):
        sends: dict[str, list[dict[str, Any]]] = {}
        expect: dict[str, dict[str, list[str]]] = {}
        self.meta: dict[str, tuple[str, str, str, bool]] = {}
        # MTU probe marker -> (tunnel, subject, direction, size, the small ICMP probe's marker)
        self.mtu: dict[str, tuple[str, str, str, int, str]] = {}
        mtu_probed: set[str] = set()  # one MTU probe per tunnel: the path is the tunnel's
        self.legs: dict[str, tuple[str, list[str]]] = {}
        # the hosts' routes lead over the primary path: standby tunnels carry traffic only after
        # a failover moved them (ipsec-lab scenario failover); their control plane is checked
        self.standby = sorted({p.tunnel for p in lab.plan.probes if p.standby})
        self.tunnels = sorted({p.tunnel for p in lab.plan.probes if not p.standby})
        for n, p in enumerate(lab.plan.probes):
            if p.standby:
                continue
            for direction, src_node, src, dst_node, dst in (
                ("idc->vpc", p.idc_node, p.idc_addr, p.vpc_node, p.vpc_addr),
                ("vpc->idc", p.vpc_node, p.vpc_addr, p.idc_node, p.idc_addr),
            ):
                if direction not in p.directions:
                    continue
                for proto in ("udp", "icmp"):
                    marker = f"{prefix}-{n}-{direction.replace('->', '2')}-{proto}"
                    sends.setdefault(src_node, []).append(
                        {"src": str(src), "dst": str(dst), "proto": proto, "marker": marker,
                         "expect": p.delivered})
                    if proto == "udp":
                        lists = expect.setdefault(dst_node, {"expect": [], "watch": []})
                        lists["expect" if p.delivered else "watch"].append(marker)
                    subject = f"{p.child} {src} -> {dst}" if p.child else \
                        f"unrouted {src} -> {dst}"
                    self.meta[marker] = (p.tunnel, subject, f"{proto} {direction}", p.delivered)
                    # the tunnel legs a delivered probe crossed: an echo comes back the other way
                    self.legs[marker] = (p.tunnel, ["up", "down"] if proto == "icmp"
                                         else ["up" if direction == "idc->vpc" else "down"])
                if p.delivered and p.tunnel not in mtu_probed:
                    for size in MTU_SIZES:
                        marker = f"{prefix}-{n}-{direction.replace('->', '2')}-mtu{size}"
                        sends[src_node].append({"src": str(src), "dst": str(dst), "proto": "icmp",
                                                "marker": marker, "expect": True, "size": size})
                        self.mtu[marker] = (p.tunnel, f"{p.child} {src} -> {dst}", direction,
                                            size, f"{prefix}-{n}-{direction.replace('->', '2')}-icmp")
            if p.delivered:
                mtu_probed.add(p.tunnel)
        # the time-out covers sending the largest batch too (a 200-mapping gateway's host sends
        # 800 probes per round, and the last ones must still find their listener waiting)
        biggest = max((len(batch) for batch in sends.values()), default=0)
        timeout = PROBE_TIMEOUT + patience(PROBE_SEND_TIME) * biggest * (1 + PROBE_RETRIES)
        common = ["--iface", "eth0", "--prefix", prefix, "--port", str(PROBE_PORT),
                  "--timeout", f"{timeout:.2f}"]
        self.listeners = [Agent(lab, node, ["listen", *common], stdin=json.dumps(markers),
                                keep_open=True)
                          for node, markers in expect.items()]
        # senders import scapy now and block on stdin until `run` hands them their probes
        self.senders = [(Agent(lab, node, ["send", *common, "--retries", str(PROBE_RETRIES)]), batch)
                        for node, batch in sends.items()]

    def run(self, report: CheckReport) -> dict[tuple[str, str], int]:
        """Sends, collects and reports; returns the delivered probes per (tunnel, leg), where
        `up` is customer -> cloud and `down` cloud -> customer."""
        refused: dict[str, str] = {}  # marker -> why it was never sent
        listening = []
        for agent in self.listeners:
            if attempt(report, "*", agent.node, "data", "probe listener", agent.wait_ready):
                agent.feed("")  # their time-out starts now
                listening.append(agent)
        for agent, batch in self.senders:
            agent.feed(json.dumps(batch))
        arrived: set[str] = set()
        too_big: dict[str, list[Any]] = {}
        for agent, batch in self.senders:
            result = self._result(report, agent)
            arrived.update(result.get("echoed", []))
            refused.update(result.get("refused", {}))
            too_big.update(result.get("too_big", {}))
            if "error" in result or result.get("sent") is None:
                refused.update({p["marker"]: result.get("error", "the sender gave no result")
                                for p in batch})
        for agent in listening:
            arrived.update(self._result(report, agent).get("received", []))
        for tunnel in self.standby:
            report.add(tunnel, "standby path", "data", "not probed here", True,
                       "the VPC and IDC routes point at the primary path; `ipsec-lab scenario "
                       "failover` moves traffic onto this tunnel and measures it", info=True)
        for marker, (tunnel, subject, what, wanted) in self.meta.items():
            got = marker in arrived
            if wanted:
                report.add(tunnel, subject, "data", what, got,
                           "marker delivered" if got else f"not sent: {refused[marker]}"
                           if marker in refused else "marker not delivered")
            else:
                report.add(tunnel, subject, "data", f"{what} not delivered (no route)", not got,
                           "dropped, as the route table says" if not got
                           else "delivered although no route leads there")
        self._mtu_rows(report, arrived, too_big, refused)
        crossed: dict[tuple[str, str], int] = {}
        for marker, (tunnel, legs) in self.legs.items():
            if marker in arrived and self.meta[marker][3]:
                for leg in legs:
                    crossed[(tunnel, leg)] = crossed.get((tunnel, leg), 0) + 1
        return crossed

    def _mtu_rows(self, report: CheckReport, arrived: set[str], too_big: dict[str, list[Any]],
                  refused: dict[str, str]) -> None:
        """Per tunnel and direction: each size delivered, reported too big (PMTU discovery
        works), or lost without a word (a black hole: the check fails). Not judged where small
        packets do not cross either."""
        rows: dict[tuple[str, str, str], list[tuple[int, str]]] = {}
        small: dict[tuple[str, str, str], str] = {}
        for marker, (tunnel, subject, direction, size, small_marker) in self.mtu.items():
            rows.setdefault((tunnel, subject, direction), []).append((size, marker))
            small[(tunnel, subject, direction)] = small_marker
        for (tunnel, subject, direction), sizes in rows.items():
            said, lost, delivered, reported = [], [], [], []
            for size, marker in sorted(sizes):
                if marker in arrived:
                    said.append(f"{size} B delivered")
                    delivered.append(size)
                elif marker in too_big:
                    mtu, by = too_big[marker]
                    said.append(f"{size} B too big: {by} reports MTU {mtu}")
                    reported.append(int(mtu))
                elif "EMSGSIZE" in refused.get(marker, ""):
                    said.append(f"{size} B not sent: the host already knows a smaller path MTU")
                else:
                    said.append(f"{size} B lost, no ICMP 'fragmentation needed' came back")
                    lost.append(size)
            judged = small[(tunnel, subject, direction)] in arrived
            path_mtu = min(reported) if reported else max(delivered, default=0)
            if path_mtu and not lost:
                said.append(f"path MTU {path_mtu}: TCP MSS at most {path_mtu - TCP_IP_HEADERS}")
            report.add(tunnel, subject, "data", f"path MTU {direction}", judged and not lost,
                       "; ".join(said) + ("" if judged else " (not judged: small packets do not "
                                                            "cross either)"),
                       info=not judged)

    @staticmethod
    def _result(report: CheckReport, agent: Agent) -> dict[str, Any]:
        """An agent's result; an agent that failed is a row saying why (its markers then count
        as not delivered)."""
        try:
            result = agent.finish()
        except LabError as exc:
            report.add("*", agent.node, "data", f"probe agent ({agent.mode})", False, str(exc))
            return {}
        if "error" in result:
            report.add("*", agent.node, "data", f"probe agent ({agent.mode})", False,
                       result["error"])
        return result

    def stop(self) -> None:
        """Ends agents still running (after a failure before `run`)."""
        for agent in [*self.listeners, *(a for a, _ in self.senders)]:
            agent.kill()


# -- NAT -----------------------------------------------------------------------------------------------
def nat_traversal(lab: Lab, report: CheckReport, tunnel: str, wire: dict[str, Any] | None) -> None:
    """A customer gateway behind NAT: both ends detected it (VICI's nat-local / nat-remote), IKE
    moved to UDP 4500, and the wire carried ESP in UDP 4500, not as IP protocol 50."""
    cloud, customer = lab.plan.cloud_of(tunnel), lab.plan.customer_of(tunnel)
    seen: dict[str, dict[str, Any]] = {}
    for gw in (cloud, customer):
        sas = lab.sas(gw.node)
        ike = vf.find_ike(sas, tunnel)
        if ike is None and gw is customer and lab.customer.kind != "generated":
            # a user's own config names its connections itself: the one with the cloud
            ike = next(reversed(vf.established_ikes(sas, None, str(cloud.public_ip))), None)
        if ike is None:
            report.add(tunnel, f"{gw.node} ({gw.side})", "control", "NAT detected", False,
                       "no IKE_SA to tell")
            continue
        seen[gw.node] = ike
        flag = "nat-remote" if gw is cloud else "nat-local"
        what = "its peer is behind NAT" if gw is cloud else "it is behind NAT"
        if gw.pluto:  # pluto says NAT traversal is in use, not which end is behind the NAT
            flag, what = "nat-any", "NAT traversal in use; pluto does not say which end"
        ports = f"IKE on UDP {ike.get('local-port')}->{ike.get('remote-port')}"
        ok = ike.get(flag) == "yes" and ike.get("local-port") == ike.get("remote-port") == "4500"
        report.add(tunnel, f"{gw.node} ({gw.side})", "control", "NAT detected", ok,
                   f"{flag}={ike.get(flag) or 'no'} ({what}), {ports}" +
                   ("" if gw is cloud else f", its own address {ike.get('local-host')}"))
    if wire is None:
        return
    flows = wire.get("flows", {})
    pair = (str(cloud.public_ip), str(customer.public_ip))
    in_udp = sum(flows.get(f"{ESP_KINDS[0]} {a}>{b}", 0) for a, b in (pair, pair[::-1]))
    raw = sum(flows.get(f"{ESP_KINDS[1]} {a}>{b}", 0) for a, b in (pair, pair[::-1]))
    report.add(tunnel, "internet segment", "wire", "ESP in UDP 4500 through the NAT",
               in_udp > 0 and raw == 0, f"{in_udp} ESP in UDP 4500, {raw} ESP as IP protocol 50 "
               f"between {pair[0]} and {pair[1]}")


# -- wire ---------------------------------------------------------------------------------------------
def esp_expected(lab: Lab, crossings: dict[tuple[str, str], int]) -> dict[tuple[str, str], int]:
    """At least this many ESP packets per (source, destination) public address on the wire:
    one per delivered probe packet that crossed that tunnel leg."""
    out: dict[tuple[str, str], int] = {}
    for (tunnel, leg), n in crossings.items():
        cloud = str(lab.plan.cloud_of(tunnel).public_ip)
        customer = str(lab.plan.customer_of(tunnel).public_ip)
        pair = (customer, cloud) if leg == "up" else (cloud, customer)
        out[pair] = out.get(pair, 0) + n
    return out


def wire_check(report: CheckReport, wire: dict[str, Any],
               expected: dict[tuple[str, str], int]) -> None:
    """Only IKE and ESP on the segment; ESP in both directions of every tunnel at least as often
    as delivered probe packets crossed it (either encapsulation, named); no marker in clear."""
    counts = wire.get("counts", {})
    esp = esp_packets(counts)
    ike = sum(v for k, v in counts.items() if k.endswith("/ike"))
    other = counts.get("other", 0)
    fragments = counts.get(FRAGMENT, 0)  # the rest of IKE or ESP too big for the path (its first
    # fragment, with the UDP or ESP header, is counted as what it is)
    report.add("*", "internet segment", "wire", "only IKE and ESP", other == 0,
               f"{ike} IKE, {esp} {encapsulation(counts)}, {other} other"
               + (f", {fragments} IP fragments of them" if fragments else "")
               + (f": {wire.get('other', [])[:3]}" if other else ""))
    flows = wire.get("flows", {})
    seen: list[str] = []
    short: list[str] = []
    for (src, dst), n in sorted(expected.items()):
        got = sum(flows.get(f"{kind} {src}>{dst}", 0) for kind in ESP_KINDS)
        (short if got < n else seen).append(f"{src}>{dst} {got} ESP for {n} probe packets")
    ok = bool(expected) and not short
    report.add("*", "internet segment", "wire", "ESP carried the probes", ok,
               f"{encapsulation(counts)}: " + "; ".join(short + seen) if expected
               else f"no probe was delivered ({esp} ESP packets seen)")
    leaked = wire.get("leaked", [])
    report.add("*", "internet segment", "wire", "no marker in clear", not leaked,
               "none seen" if not leaked else f"{len(leaked)} packets: {leaked[:3]}")
    readable = wire.get("readable", [])
    if readable:  # inside ESP: ESP NULL authenticates without encrypting (lab.agent.capture)
        report.add("*", "internet segment", "wire", "payload readable inside ESP", True,
                   f"{len(readable)} ESP packets carry the probes' markers readable: ESP NULL "
                   "(integrity only) by the tunnel's settings, or a cipher that does not encrypt",
                   info=True)
