"""Loading tunnels into the daemons and starting them the way the cloud's negotiation type says.

- active: the cloud gateway initiates as soon as the tunnel is loaded (over VICI, so the result
  and the daemon's log of the attempt come back to the orchestrator);
- passive: the cloud never initiates; the customer gateway does;
- traffic-triggered: nothing is negotiated until VPC traffic matches the tunnel. On the kernel
  dataplane that is strongSwan's trap policy; kernel-libipsec never fires traps (strongSwan
  5.9.8), so there the lab runs its own trigger (`lab.trigger`) on the cloud gateway's VPC side.
"""

from __future__ import annotations

import subprocess
import sys
import time
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any

from lab import diagnose
from lab import verify as vf
from lab.control import InitiateFailed
from lab.errors import LabError
from lab.swanctl import parse
from lab.timing import patience

if TYPE_CHECKING:
    from lab.backends import Progress
    from lab.running import Lab

ESTABLISH_TIMEOUT = patience(20.0)


def lab_config(lab: Lab, node: str) -> dict[str, Any]:
    """A gateway's rendered swanctl.conf, as loaded into the lab.

    `start_action = start` is loaded as `none`: the orchestrator initiates right after loading
    instead, which is the same moment but returns the outcome and log over VICI.
    """
    directory = lab.backend.host_dir(lab.state.name, node)
    config = parse((directory / "swanctl.conf").read_text(), str(directory / "swanctl.conf"))
    for conn in config.get("connections", {}).values():
        for child in conn.get("children", {}).values():
            if child.get("start_action") == "start":
                child["start_action"] = "none"
    return config


def mechanism(negotiation_type: str, trap_policies: bool) -> str:
    if negotiation_type == "active":
        return "active: the cloud gateway initiates over VICI as soon as the tunnel is loaded"
    if negotiation_type == "passive":
        return "passive: the cloud gateway only responds; the customer gateway initiates"
    if trap_policies:
        return "traffic-triggered: strongSwan trap policy on the cloud gateway (kernel dataplane)"
    return ("traffic-triggered: the lab's trigger watches the cloud gateway's VPC side and "
            "initiates over VICI on the first matching packet (libipsec has no trap policies)")


def establish(lab: Lab, progress: Progress) -> None:
    for gw in lab.plan.gateways:
        if gw.pluto:
            lab.whack(gw.node).load()
            continue
        with lab.vici(gw.node) as v:
            v.load(lab_config(lab, gw.node))
    plutos = sum(gw.pluto for gw in lab.plan.gateways)
    progress("connections and secrets loaded over VICI"
             + (f" and into {plutos} pluto(s) with addconn" if plutos else ""))
    triggered = []
    for conn in (c for cloud in lab.plan.cloud_gateways for c in cloud.connections):
        tunnel = lab.spec.tunnel(conn.tunnel)
        lab.state.negotiation[conn.tunnel] = mechanism(
            tunnel.negotiation_type, lab.plan.dataplane.trap_policies)
        if tunnel.negotiation_type == "traffic-triggered":
            triggered.append(conn.tunnel)
            continue
        initiate_tunnel(lab, conn.tunnel)
        progress(f"tunnel {conn.tunnel}: {len(conn.children)} CHILD_SA(s) installed "
                 f"({tunnel.negotiation_type})")
    if triggered and not lab.plan.dataplane.trap_policies:
        start_trigger(lab)
    for name in triggered:
        progress(f"tunnel {name}: waiting for VPC traffic (traffic-triggered)")
    lab.state.save()


def sides(lab: Lab, tunnel: str) -> tuple[str, str]:
    """(initiator node, responder node) for a tunnel, by its negotiation type."""
    customer, cloud = lab.plan.customer_of(tunnel).node, lab.plan.cloud_of(tunnel).node
    if lab.spec.tunnel(tunnel).negotiation_type == "passive":
        return customer, cloud
    return cloud, customer


def initiate_tunnel(lab: Lab, tunnel: str, timeout: float = ESTABLISH_TIMEOUT) -> None:
    """Initiate every mapping's CHILD_SA and wait until the responder has installed each.

    charon initiates over VICI, pluto with whack (which returns once the SA is up or failed); a
    charon responder's events tell when it installed each mapping, a pluto responder (which has
    no events) is asked its status until every mapping is installed."""
    initiator, responder = sides(lab, tunnel)
    children = [ch.name for ch in lab.plan.connection(tunnel).children]
    with ExitStack() as stack:
        next_event = None
        if not lab.plan.gateway(responder).pluto:
            resp = stack.enter_context(lab.vici(responder))
            next_event = stack.enter_context(resp.events(["child-updown"]))
        if lab.plan.gateway(initiator).pluto:
            whack = lab.whack(initiator)

            def start(child: str) -> object:
                return whack.initiate(child, timeout)
        else:
            ini = stack.enter_context(lab.vici(initiator))

            def start(child: str) -> object:
                return ini.initiate(child, tunnel, timeout)
        for child in children:
            try:
                start(child)
            except InitiateFailed as exc:
                raise TunnelFailed(tunnel, child, initiator, str(exc), exc.log,
                                   diagnose.log_messages(lab.log_path(responder)),
                                   identity_hint(lab, tunnel), lab.plan.local_ids()) from None
        if next_event is not None:
            wait_children_up(next_event, set(children), time.monotonic() + timeout, responder)
        else:
            wait_pluto_installed(lab, responder, tunnel, time.monotonic() + timeout)


def wait_pluto_installed(lab: Lab, node: str, tunnel: str, deadline: float) -> None:
    """Until pluto lists one installed IPsec SA per mapping of `tunnel` (it has no events to
    wait on): its status is asked every 50 ms."""
    mine = next(c for c in lab.plan.gateway(node).connections if c.tunnel == tunnel)
    while True:
        ike = vf.find_ike(lab.sas(node), tunnel)
        missing = [ch.name for ch in mine.children
                   if vf.find_child(ike, ch.local_ts, ch.remote_ts) is None]
        if not missing:
            return
        if time.monotonic() > deadline:
            raise LabError(f"{node}: libreswan installed no IPsec SA for {', '.join(missing)} "
                           "in time")
        time.sleep(0.05)  # pluto's status is polled: whack offers no event stream


def wait_children_up(next_event, names: set[str], deadline: float, where: str) -> None:
    pending = set(names)
    while pending:
        event = next_event(deadline)
        if event is None:
            raise LabError(f"{where}: CHILD_SA(s) {', '.join(sorted(pending))} not installed "
                           "in time")
        _, msg = event
        if msg.get("up") != "yes":
            continue
        for key, ike in msg.items():
            if key == "up" or not isinstance(ike, dict):
                continue
            for child in ike.get("child-sas", {}).values():
                pending.discard(child.get("name"))


def rekey_children(lab: Lab, node: str, tunnel: str, children: list[str],
                   timeout: float = patience(15.0)) -> None:
    """Rekey each CHILD_SA once and wait for the new SA (PFS shows only there in IKEv2); a
    libreswan initiator rekeys with whack, and its peer's events tell when it is done."""
    whack = lab.whack(node) if lab.plan.gateway(node).pluto else None
    listen = lab.plan.cloud_of(tunnel).node if whack else node
    with lab.vici(listen) as v, v.events(["child-rekey"]) as next_event:
        for child in children:
            (whack or v).rekey_child(child)
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


class TunnelFailed(LabError):
    """A tunnel did not establish; carries the initiator's log of the attempt and the reason the
    diagnoser found in it and in the responder's log."""

    def __init__(self, tunnel: str, child: str, node: str, message: str, log: list[str],
                 responder_log: list[str] | None = None, hint: str | None = None,
                 local_ids: set[str] | None = None):
        self.tunnel, self.child, self.node, self.log = tunnel, child, node, log
        reason, evidence = diagnose.classify(log, {"responder": [{"msg": m} for m in
                                                                 responder_log or []]}, message,
                                             local_ids=local_ids or set())
        self.reason = reason or "negotiation failed"
        tail = "\n".join(f"    {line}" for line in log[-8:])
        why = f": {evidence}" if reason else ""
        self.hint = hint if self.reason in (diagnose.ID, diagnose.NAT_ID, diagnose.PSK) else None
        advice = f"\n  {self.hint}" if self.hint else ""
        super().__init__(f"tunnel {tunnel}: {self.reason}{why} ({message}; initiator {node})"
                         f"{advice}\n{tail}")


def identity_hint(lab: Lab, tunnel: str) -> str | None:
    """Where the two ends' identities disagree, in the user's terms: behind NAT the classic
    case is a customer gateway whose ID is its private address while the cloud expects the
    public one."""
    cloud = lab.plan.connection(tunnel)
    customer = next(c for c in lab.plan.customer_of(tunnel).connections if c.tunnel == tunnel)
    nat = lab.spec.tunnel(tunnel).customer_gateway.behind_nat
    index = next(i for i, t in enumerate(lab.spec.tunnels) if t.name == tunnel)
    if customer.local_id != cloud.remote_id:
        private = " (its private address behind the NAT)" if nat and \
            customer.local_id == str(nat.private_ip) else ""
        return (f"the customer gateway identifies itself as {customer.local_id}{private}, but the "
                f"cloud expects {cloud.remote_id} (tunnels[{index}].ike.peer_id): set the customer's "
                f"local ID (leftid= in ipsec.conf, local.id in swanctl.conf) to {cloud.remote_id}")
    if customer.remote_id != cloud.local_id:
        return (f"the customer gateway expects the cloud to be {customer.remote_id}, but the cloud "
                f"identifies itself as {cloud.local_id} (tunnels[{index}].ike.local_id): set the "
                f"customer's remote ID (rightid= / remote.id) to {cloud.local_id}")
    return None


def start_trigger(lab: Lab) -> None:
    """The libipsec stand-in for trap policies: a watcher on the cloud gateway's VPC side.

    It runs on the host, entering the gateway's network namespace itself, so it works the same
    for namespaces and containers; it outlives `up` and logs to `trigger.log`.
    """
    node = lab.plan.gateways[0].node
    log = lab.state.dir / "trigger.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "lab.trigger", "--lab", lab.state.name],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=out, text=True,
            start_new_session=True,
        )
    line = proc.stdout.readline() if proc.stdout else ""
    if proc.stdout:
        proc.stdout.close()
    if "ready" not in line:
        proc.kill()
        raise LabError(f"traffic trigger did not start: {log.read_text().strip()[-500:]}")
    lab.state.pids[f"trigger:{node}"] = proc.pid
