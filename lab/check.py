"""`ipsec-lab check`: is every tunnel up, as configured, carrying traffic, and only encrypted?

Three planes, like strongSwan's own test cases, but from VICI dictionaries and scapy instead of
grepped text:
- control: both ends list the IKE_SA established and one CHILD_SA per mapping installed, with
  the spec's algorithms (PFS checked on a CHILD_SA rekey for IKEv2, whose first CHILD_SA has no DH);
- data: marked UDP and ICMP from each IDC host to the VPC host and back, per mapping;
- wire: a capture on the internet segment sees only IKE/ESP on UDP 500/4500, never a marker.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import select
import subprocess
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from lab import catalogue as cat
from lab.agent import ESP_KINDS, encapsulation, esp_packets
from lab.errors import LabError
from lab.lifecycle import Lab
from lab.negotiation import sides, wait_children_up
from lab.spec import IkeOptions, IpsecOptions
from lab.timing import patience

PROBE_PORT = 33434
PROBE_TIMEOUT = patience(5.0)
PROBE_RETRIES = 2  # probes not confirmed are sent again, spaced over the time-out (lab.agent send)
PROBE_SEND_TIME = 0.005  # generous time to build and send one probe (measured ~0.5 ms here)
AGENT_START_TIMEOUT = patience(30.0)


@dataclass
class Finding:
    tunnel: str
    subject: str  # a gateway, a CHILD_SA, a mapping or the wire
    plane: str  # control | data | wire
    check: str
    ok: bool
    detail: str = ""
    info: bool = False  # information, not a check: never counted as passed (nor failed)


@dataclass
class CheckReport:
    lab: str
    backend: str
    dataplane: str
    findings: list[Finding] = field(default_factory=list)

    @property
    def checks(self) -> list[Finding]:
        """The findings that are checks (information rows left out)."""
        return [f for f in self.findings if not f.info]

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(f.ok for f in self.checks)

    def add(self, *args: Any, **kwargs: Any) -> None:
        self.findings.append(Finding(*args, **kwargs))

    def to_json(self) -> str:
        return json.dumps({"lab": self.lab, "backend": self.backend, "dataplane": self.dataplane,
                           "ok": self.ok, "findings": [asdict(f) for f in self.findings]},
                          indent=2)


def run_check(lab: Lab, *, rekey: bool = True) -> CheckReport:
    report = CheckReport(lab.state.name, lab.state.backend, lab.state.dataplane)
    prefix = f"ILAB{secrets.token_hex(4)}"
    # Every probe process starts now, in parallel: importing scapy is most of a check's time.
    capture = Agent(lab, lab.plan.internet_node,
                    ["capture", "--iface", lab.plan.node(lab.plan.internet_node).bridge or "br0",
                     "--prefix", prefix])
    data = DataPlane(lab, prefix)
    try:
        capture.wait_ready()
        trigger_waiting(lab, report, prefix)
        for conn in (c for cloud in lab.plan.cloud_gateways for c in cloud.connections):
            if lab.customer is not None:  # hook (lab.customer): user's config, match CHILD_SAs by TS
                lab.customer.control_plane(lab, report, conn.tunnel, rekey)
            else:
                control_plane(lab, report, conn.tunnel, rekey)
        crossings = data.run(report)
    finally:
        data.stop()
        wire = capture.finish()
    wire_check(report, wire, esp_expected(lab, crossings))
    return report


# -- control plane ----------------------------------------------------------------------------
def expected(lab: Lab, tunnel: str) -> tuple[IkeOptions, IpsecOptions]:
    t = lab.spec.tunnel(tunnel)
    return t.ike, t.ipsec


def _algorithms(sa: dict[str, Any], encryption: str, integrity: str) -> list[str]:
    """Differences between what list-sas reports and the menu entries expected."""
    wrong = []
    enc = cat.by_console(cat.ENCRYPTION, encryption)
    if sa.get("encr-alg") != enc.sa_name or (
        enc.key_size and sa.get("encr-keysize") != str(enc.key_size)
    ):
        got = f"{sa.get('encr-alg')}/{sa.get('encr-keysize', '-')}"
        wrong.append(f"encryption {got}, expected {encryption}")
    integ = cat.by_console(cat.INTEGRITY, integrity)
    if enc.aead:  # GCM: no integ-alg; an IKE_SA (the only SA with prf-alg) uses the hash as PRF
        if sa.get("integ-alg") is not None:
            wrong.append(f"integrity {sa.get('integ-alg')}, expected none (AEAD {encryption})")
        if "prf-alg" in sa and sa["prf-alg"] != cat.PRF[integrity][1]:
            wrong.append(f"PRF {sa['prf-alg']}, expected {cat.PRF[integrity][1]}")
    elif sa.get("integ-alg") != integ.sa_name:
        wrong.append(f"integrity {sa.get('integ-alg')}, expected {integrity}")
    return wrong


def _dh_name(group: str) -> str | None:
    return None if group == "disable" else cat.by_console(cat.DH_GROUPS, group).sa_name


def find_ike(sas: list[dict[str, Any]], tunnel: str) -> dict[str, Any] | None:
    matches = [sa for sa in sas if sa["name"] == tunnel and sa.get("state") == "ESTABLISHED"]
    return matches[-1] if matches else None


def installed_children(ike: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Newest INSTALLED CHILD_SA per name."""
    out: dict[str, dict[str, Any]] = {}
    children = (ike or {}).get("child-sas", {}).values()
    for child in sorted(children, key=lambda c: int(c.get("uniqueid", 0))):
        if child.get("state") == "INSTALLED":
            out[child["name"]] = child
    return out


def find_child(ike: dict[str, Any] | None, local, remote) -> dict[str, Any] | None:
    """The newest INSTALLED CHILD_SA of an IKE_SA with exactly these traffic selectors."""
    wanted = ([str(local)], [str(remote)])
    found = [c for c in (ike or {}).get("child-sas", {}).values()
             if c.get("state") == "INSTALLED" and (c.get("local-ts"), c.get("remote-ts")) == wanted]
    return max(found, key=lambda c: int(c.get("uniqueid", 0))) if found else None


def control_plane(lab: Lab, report: CheckReport, tunnel: str, rekey: bool) -> None:
    ike_opt, ipsec_opt = expected(lab, tunnel)
    conn = lab.plan.connection(tunnel)
    initiator, _ = sides(lab, tunnel)
    if rekey and conn.version == 2:
        rekey_children(lab, initiator, tunnel, [ch.name for ch in conn.children])
    for gw in lab.plan.gateways:
        mine = next((c for c in gw.connections if c.tunnel == tunnel), None)
        if mine is None:
            continue
        with lab.vici(gw.node) as v:
            ike = find_ike(v.sas(), tunnel)
        subject = f"{gw.node} ({gw.side})"
        if ike is None:
            report.add(tunnel, subject, "control", "IKE_SA established", False,
                       "no ESTABLISHED IKE_SA for this tunnel")
            continue
        wrong = _algorithms(ike, ike_opt.encryption, ike_opt.integrity)
        if ike.get("dh-group") != _dh_name(ike_opt.dh_group):
            wrong.append(f"DH {ike.get('dh-group')}, expected {ike_opt.dh_group}")
        if ike.get("version") != str(conn.version):
            wrong.append(f"IKEv{ike.get('version')}, expected IKEv{conn.version}")
        report.add(tunnel, subject, "control", "IKE_SA established", not wrong,
                   "; ".join(wrong) or f"IKEv{ike['version']} {ike_opt.encryption}/"
                   f"{ike_opt.integrity}/{ike_opt.dh_group}, {ike['local-id']} <-> "
                   f"{ike['remote-id']}")
        children = installed_children(ike)
        for ch in mine.children:
            # matched by traffic selectors: the names are the configs', the selectors the SA's
            child = find_child(ike, ch.local_ts, ch.remote_ts) or children.get(ch.name)
            where = f"{subject} {ch.name}"
            if child is None:
                report.add(tunnel, where, "control", "CHILD_SA installed", False,
                           f"no CHILD_SA installed for {ch.local_ts} === {ch.remote_ts}")
                continue
            wrong = _algorithms(child, ipsec_opt.encryption, ipsec_opt.integrity)
            ts = (child.get("local-ts"), child.get("remote-ts"))
            if ts != ([str(ch.local_ts)], [str(ch.remote_ts)]):
                wrong.append(f"TS {ts[0]} === {ts[1]}, expected {ch.local_ts} === {ch.remote_ts}")
            report.add(tunnel, where, "control", "CHILD_SA installed", not wrong,
                       "; ".join(wrong) or f"{ch.local_ts} === {ch.remote_ts} "
                       f"{ipsec_opt.encryption}/{ipsec_opt.integrity}")
            pfs = _dh_name(ipsec_opt.pfs)
            if conn.version == 2 and not rekey:
                continue
            got = child.get("dh-group")
            how = "after a CHILD_SA rekey" if conn.version == 2 else "in quick mode"
            report.add(tunnel, where, "control", "PFS", got == pfs,
                       f"DH {got or 'none'} {how}, expected {ipsec_opt.pfs}")


def rekey_children(lab: Lab, node: str, tunnel: str, children: list[str],
                   timeout: float = patience(15.0)) -> None:
    """Rekey each CHILD_SA once and wait for the new SA (PFS shows only there in IKEv2)."""
    with lab.vici(node) as v, v.events(["child-rekey"]) as next_event:
        for child in children:
            v.rekey_child(child)
        pending = set(children)
        deadline = time.monotonic() + timeout
        while pending:
            event = next_event(deadline)
            if event is None:
                raise LabError(f"tunnel {tunnel}: CHILD_SA rekey did not complete in time "
                               f"({', '.join(sorted(pending))})")
            for ike in event[1].values():
                for child in (ike.get("child-sas", {}) if isinstance(ike, dict) else {}).values():
                    pending.discard(child.get("new", {}).get("name", child.get("name")))


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
        have = installed_children(find_ike(sas, conn.tunnel))
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
        self.legs: dict[str, tuple[str, list[str]]] = {}
        # the hosts' routes lead over the primary path: standby tunnels carry traffic only after
        # a failover moved them (ipsec-lab scenario failover); their control plane is checked
        self.standby = sorted({p.tunnel for p in lab.plan.probes if p.standby})
        for n, p in enumerate(lab.plan.probes):
            if p.standby:
                continue
            for direction, src_node, src, dst_node, dst in (
                ("idc->vpc", p.idc_node, p.idc_addr, p.vpc_node, p.vpc_addr),
                ("vpc->idc", p.vpc_node, p.vpc_addr, p.idc_node, p.idc_addr),
            ):
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
        for agent in self.listeners:
            agent.wait_ready()
            agent.feed("")  # their time-out starts now
        for agent, batch in self.senders:
            agent.feed(json.dumps(batch))
        arrived: set[str] = set()
        for agent, _ in self.senders:
            arrived.update(agent.finish().get("echoed", []))
        for agent in self.listeners:
            arrived.update(agent.finish().get("received", []))
        for tunnel in self.standby:
            report.add(tunnel, "standby path", "data", "not probed here", True,
                       "the VPC and IDC routes point at the primary path; `ipsec-lab scenario "
                       "failover` moves traffic onto this tunnel and measures it", info=True)
        for marker, (tunnel, subject, what, wanted) in self.meta.items():
            got = marker in arrived
            if wanted:
                report.add(tunnel, subject, "data", what, got,
                           "marker delivered" if got else "marker not delivered")
            else:
                report.add(tunnel, subject, "data", f"{what} not delivered (no route)", not got,
                           "dropped, as the route table says" if not got
                           else "delivered although no route leads there")
        crossed: dict[tuple[str, str], int] = {}
        for marker, (tunnel, legs) in self.legs.items():
            if marker in arrived and self.meta[marker][3]:
                for leg in legs:
                    crossed[(tunnel, leg)] = crossed.get((tunnel, leg), 0) + 1
        return crossed

    def stop(self) -> None:
        """Ends agents still running (after a failure before `run`)."""
        for agent in [*self.listeners, *(a for a, _ in self.senders)]:
            agent.kill()


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
    report.add("*", "internet segment", "wire", "only IKE and ESP", other == 0,
               f"{ike} IKE, {esp} {encapsulation(counts)}, {other} other"
               + (f": {wire.get('other', [])[:3]}" if other else ""))
    flows = wire.get("flows", {})
    seen, short = [], []
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


# -- the probe agent, run in a node ------------------------------------------------------------------
class Agent:
    """lab/agent.py running in a node: a `ready` line once listening, then one result line."""

    def __init__(self, lab: Lab, node: str, args: list[str], stdin: str | None = None,
                 keep_open: bool = False):
        self.node, self.mode = node, args[0]
        self.proc = lab.backend.spawn_agent(lab.state, node, args)
        if stdin is not None and keep_open:
            self.say(stdin)
        elif stdin is not None:
            self.feed(stdin)

    def say(self, line: str) -> None:
        """One line to the agent, stdin kept open."""
        assert self.proc.stdin
        self.proc.stdin.write(line.rstrip("\n") + "\n")
        self.proc.stdin.flush()

    def feed(self, text: str) -> None:
        """Hand the agent its input and close stdin (which also stops a capture)."""
        if self.proc.stdin:
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.write(text)
                self.proc.stdin.close()
            self.proc.stdin = None  # communicate() would flush a closed pipe

    def wait_ready(self, timeout: float = AGENT_START_TIMEOUT) -> None:
        assert self.proc.stdout
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if '"ready"' not in line:
            self.kill()
            raise LabError(f"probe agent ({self.mode}) in {self.node} did not start: "
                           f"{self._stderr()}")

    def _stderr(self) -> str:
        try:
            _, err = self.proc.communicate(timeout=5)
        except (subprocess.TimeoutExpired, ValueError):
            err = ""
        return (err or "").strip()[-500:]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired, ValueError):
                self.proc.communicate(timeout=5)

    def finish(self, timeout: float = patience(60.0)) -> dict[str, Any]:
        """Close stdin (stops a capture) and read the result line."""
        self.feed("")
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
        except ValueError:  # already ended and read (killed after a failed start)
            out, err = "", "it had already been stopped"
        lines = [ln for ln in (out or "").splitlines() if ln.startswith("{")]
        results = [json.loads(ln) for ln in lines if '"ready"' not in ln]
        if not results:
            raise LabError(f"probe agent ({self.mode}) in {self.node} gave no result: "
                           f"{(err or '').strip()[-500:]}")
        return results[-1]
