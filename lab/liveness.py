"""Is a running lab still what `up` made it? Each daemon answers VICI within a short time, and
each tunnel that should be up has its IKE_SA and one CHILD_SA per mapping on both ends. `status`
shows a lab with a dead daemon or a one-sided SA as degraded, with the reasons."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lab import processes
from lab import verify as vf
from lab.control import Vici
from lab.errors import LabError
from lab.timing import patience

if TYPE_CHECKING:
    from lab.running import Lab

ANSWER_TIMEOUT = patience(3.0)  # a daemon that answers nothing in this long counts as down


def silent_daemons(lab: Lab) -> dict[str, str]:
    """Daemons that accept a VICI connection but answer nothing within ANSWER_TIMEOUT (frozen,
    hung), each with the reason in words; a daemon that is gone is not silent (its socket
    refuses at once, and the steps that ask it say so)."""
    found: dict[str, str] = {}
    for gw in lab.plan.gateways:
        if gw.pluto:
            continue  # whack's every call is bounded (lab.libreswan.whack)
        try:
            with Vici(lab.vici_path(gw.node), timeout=ANSWER_TIMEOUT) as v:
                v.session.version()
        except TimeoutError:
            pid = lab.state.pids.get(f"charon:{gw.node}")
            how = processes.state(pid) if pid else None
            found[gw.node] = (f"the strongSwan daemon on {gw.node} takes VICI connections but "
                              f"answers nothing in {ANSWER_TIMEOUT:.0f} s"
                              + (f": its process {pid} is {how}" if how else ": hung or frozen?"))
        except Exception:  # noqa: BLE001 - gone, or answering oddly: the steps that ask it say so
            continue
    return found


def problems(lab: Lab) -> list[str]:
    """What is wrong with the running lab, in words; empty when it is healthy."""
    found: list[str] = []
    sas: dict[str, list[dict[str, Any]]] = {}
    for gw in lab.plan.gateways:
        try:
            if gw.pluto:
                sas[gw.node] = lab.sas(gw.node)
                continue
            with Vici(lab.vici_path(gw.node), timeout=ANSWER_TIMEOUT) as v:
                sas[gw.node] = v.sas()
        except (LabError, OSError, TimeoutError) as exc:
            daemon = "libreswan's pluto does not answer whack" if gw.pluto else \
                "the strongSwan daemon does not answer VICI"
            found.append(f"{gw.node}: {daemon} ({exc or 'timeout'})")
    for cloud in lab.plan.cloud_gateways:
        for conn in cloud.connections:
            if lab.spec.tunnel(conn.tunnel).negotiation_type == "traffic-triggered":
                continue  # down until traffic asks for it
            customer = lab.plan.customer_of(conn.tunnel)
            ends = [g for g in (cloud, customer) if g.node in sas]
            ikes = {g.node: vf.find_ike(sas[g.node], conn.tunnel) for g in ends}
            if ikes and not any(ikes.values()):
                found.append(f"tunnel {conn.tunnel}: no IKE_SA on either end")
                continue
            for node, ike in ikes.items():
                if ike is None:
                    found.append(f"tunnel {conn.tunnel}: IKE_SA on one side only (none on {node})")
            for g in ends:
                ike = ikes[g.node]
                have = vf.installed_children(ike)
                mine = next(c for c in g.connections if c.tunnel == conn.tunnel)
                missing = [ch.name for ch in mine.children
                           if vf.find_child(ike, ch.local_ts, ch.remote_ts) is None
                           and ch.name not in have]
                if ike is not None and missing:
                    found.append(f"tunnel {conn.tunnel}: {g.node} has no CHILD_SA for "
                                 f"{', '.join(missing)}")
    return found
