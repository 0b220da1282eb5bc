"""`check` of a lab whose customer gateway runs the user's own config: both ends' SAs judged
against the cloud tunnel (CHILD_SAs matched by traffic selectors: the user's connection and
child names are theirs), and a failure explained in the user's terms: the diagnoser's reason
from both daemons' logs, then the static advice (`lab.advise`) that matches it."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from lab import diagnose
from lab import verify as vf
from lab.errors import LabError
from lab.negotiation import rekey_children

if TYPE_CHECKING:
    from lab.findings import CheckReport
    from lab.running import Lab
    from lab.spec import Cidr

SETTLE = 3.0  # the responder installs its CHILD_SA just after the initiator
NOBODY = "nobody initiates"
# The advice topics (lab.advise) that can explain each reason of the diagnoser.
REASON_TOPICS: dict[str, tuple[str, ...]] = {
    diagnose.PROPOSAL_IKE: ("ike-proposal",),
    diagnose.PROPOSAL_IPSEC: ("esp-proposal", "pfs"),
    diagnose.PFS: ("pfs", "esp-proposal"),
    diagnose.VERSION: ("ike-version", "addresses", "identity"),
    diagnose.MODE: ("exchange-mode",),
    diagnose.PSK: ("psk", "identity", "authentication"),
    diagnose.ID: ("identity",),
    diagnose.NAT_ID: ("identity",),
    diagnose.TS: ("mappings",),
    diagnose.TIMEOUT: ("addresses", "negotiation", "ike-version", "exchange-mode"),
    NOBODY: ("negotiation", "addresses"),
}


def control_plane(lab: Lab, report: CheckReport, tunnel: str, rekey: bool, *, described: str,
                  attempts: list[dict[str, Any]], advice: list[dict[str, Any]],
                  addresses: str | None = None) -> None:
    """`described`: the user's config in one line; `attempts`: the initiations made at `up`;
    `advice`: the static advice recorded at `up`; `addresses`: the config's real addresses
    beside the spec's, when the lab runs those."""
    t = lab.spec.tunnel(tunnel)
    cloud, cust = lab.plan.cloud_of(tunnel), lab.plan.customer_of(tunnel)
    conn = next(c for c in cloud.connections if c.tunnel == tunnel)
    # what the tunnel carries: its SPD mappings, or the VPC against each routed destination
    mappings = lab.spec.selectors(t)
    report.add("*", f"{cust.node} (customer)", "config", "customer configuration", True,
               described, info=True)
    if addresses:
        report.add("*", f"{cust.node} (customer)", "config", "addresses", True, addresses,
                   info=True)
    sas = _settled(lab, cloud.node, cust.node, mappings)
    before = len(report.findings)
    if rekey and conn.version == 2:
        names = [ch["name"] for _, ch in vf.installed(sas[cloud.node], tunnel)]
        if names:
            try:
                rekey_children(lab, cloud.node, tunnel, sorted(set(names)))
            except LabError as exc:
                report.add(tunnel, f"{cloud.node} (cloud)", "control", "CHILD_SA rekey", False,
                           str(exc))
            sas = _settled(lab, cloud.node, cust.node, mappings)
    peer_of = {cloud.node: str(cust.public_ip), cust.node: str(cloud.public_ip)}
    for gw, name in ((cloud, tunnel), (cust, None)):
        ikes = vf.established_ikes(sas[gw.node], name, peer_of[gw.node])
        subject = f"{gw.node} ({gw.side})"
        if not ikes:
            report.add(tunnel, subject, "control", "IKE_SA established", False,
                       "no ESTABLISHED IKE_SA " + ("for this tunnel" if name else
                                                   f"with the cloud gateway {peer_of[gw.node]}"))
        else:
            ike = ikes[-1]
            wrong = vf.ike_problems(ike, t.ike.encryption, t.ike.integrity, t.ike.dh_group,
                                    conn.version)
            label = "" if name else f" (your connection {ike['name']})"
            report.add(tunnel, subject, "control", "IKE_SA established", not wrong,
                       "; ".join(wrong) or f"IKEv{ike['version']} {vf.algorithms(ike)}, "
                       f"{ike.get('local-id')} <-> {ike.get('remote-id')}{label}")
        children = [(ike, ch) for ike in ikes for ch in vf.installed_children(ike).values()]
        for vpc, idc in mappings:
            local, remote = (vpc, idc) if gw is cloud else (idc, vpc)
            want = ([str(local)], [str(remote)])
            hit = [(i, ch) for i, ch in children
                   if (ch.get("local-ts"), ch.get("remote-ts")) == want] or \
                [(i, ch) for i, ch in children if t.communication_mode == "destination-route"
                 and vf.covers(ch, local, remote)]  # a route-based SA (0/0) holds the route
            where = f"{subject} {local} === {remote}"
            if not hit:
                near = [ch for _, ch in children if vf.overlaps(ch, local, remote)]
                detail = "no CHILD_SA with these traffic selectors" + (
                    f" (installed instead: {near[0].get('local-ts')} === "
                    f"{near[0].get('remote-ts')})" if near else "")
                report.add(tunnel, where, "control", "CHILD_SA installed", False, detail)
                continue
            ike, child = hit[-1]
            wrong = vf.algorithm_problems(child, t.ipsec.encryption, t.ipsec.integrity)
            owner = "" if gw is cloud else f" (your child {ike['name']}/{child.get('name')})"
            report.add(tunnel, where, "control", "CHILD_SA installed", not wrong,
                       "; ".join(wrong) or f"{vf.algorithms(child)}{owner}")
            if conn.version == 2 and not rekey:
                continue
            how = "after a CHILD_SA rekey" if conn.version == 2 else "in quick mode"
            problem = vf.pfs_problem(child, t.ipsec.pfs)
            report.add(tunnel, where, "control", "PFS", problem is None,
                       f"DH {child.get('dh-group') or 'none'} {how}, expected {t.ipsec.pfs}")
    if any(not f.ok for f in report.findings[before:]):
        explain(lab, report, tunnel, attempts, advice)


def _settled(lab: Lab, cloud: str, cust: str,
             mappings: list[tuple[Cidr, Cidr]]) -> dict[str, list[dict[str, Any]]]:
    """Both daemons' SAs once every mapping's CHILD_SA is on both ends, or after SETTLE."""
    deadline = time.monotonic() + SETTLE
    while True:
        sas = {cloud: lab.sas(cloud), cust: lab.sas(cust)}  # charon or pluto alike
        have = {node: {(tuple(ch.get("local-ts", [])), tuple(ch.get("remote-ts", [])))
                       for _, ch in vf.installed(s)} for node, s in sas.items()}
        done = all(((str(v),), (str(i),)) in have[cloud] and ((str(i),), (str(v),)) in have[cust]
                   for v, i in mappings)
        if done or time.monotonic() >= deadline:
            return sas
        time.sleep(0.1)


def explain(lab: Lab, report: CheckReport, tunnel: str, attempts: list[dict[str, Any]],
            advice: list[dict[str, Any]]) -> None:
    """Why, in the user's terms: the daemons' own reason, then the matching static advice."""
    events = {node: [{"msg": m} for m in diagnose.log_messages(lab.log_path(node))]
              for node in (lab.plan.cloud_of(tunnel).node, lab.plan.customer_of(tunnel).node)}
    initiate_log = [line for a in attempts for line in a.get("log", [])]
    for a in attempts:
        if not a["ok"] and "refused" in a["message"]:
            report.add(tunnel, f"{a['node']} (customer)", "control", "your config loads", False,
                       a["message"])
    reason, evidence = diagnose.classify(
        initiate_log, events, "; ".join(a["message"] for a in attempts if not a["ok"]))
    if reason is None and any("nobody starts" in a["message"] for a in attempts):
        reason, evidence = NOBODY, next(a["message"] for a in attempts
                                        if "nobody starts" in a["message"])
    report.add(tunnel, "negotiation", "control", f"why: {reason or 'not recognised'}", False,
               evidence[:300])
    topics = REASON_TOPICS.get(reason or "", ())
    matched = [a for a in advice if a["topic"] in topics and a["severity"] in ("error", "warning")]
    label = "advice"
    if not matched:
        matched = [a for a in advice if a["severity"] == "error"]
        label = "static finding"
    for a in matched:
        fix = f" Fix: {a['fix']}." if a.get("fix") else ""
        report.add(tunnel, f"your config: {a['customer_field']}", "control",
                   f"{label} ({a['topic']})", False,
                   f"{a['message']} (cloud: {a['cloud_field']}).{fix}")
