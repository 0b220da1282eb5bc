"""Health-check failover between a primary and a secondary tunnel, under traffic.

Set-up (the seed's primary/secondary disaster recovery): two VPN gateways in the VPC, each with
one tunnel to its own customer gateway, both customer gateways in front of the same IDC; the
VPC's and the IDC's routes choose the path. Why two of each: kernel-libipsec sends all CHILD_SAs
through one TUN device and picks the first policy whose selectors match, so two tunnels with the
same selectors on one daemon cannot be steered by routes; separate gateways can. The cloud's NQA
health check is emulated by lab.health (ICMP through each tunnel between its health-check
addresses); lab.health.Failover moves the routes.

Phases: cut the primary's path (detection, outage against interval x threshold + timeout, the
secondary carries the traffic); restore it (failback after the damping); cut both (traffic stops,
nothing in clear); flap the primary (the damping keeps the traffic from flapping with it).
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from pathlib import Path

from lab.health import HOLD_DOWN_PROBES, Failover, bound
from lab.running import Lab
from lab.scenarios import impair
from lab.scenarios.base import WireWatch, lab_name, running_lab
from lab.scenarios.carriers import Carriers
from lab.scenarios.report import ScenarioResult
from lab.scenarios.stream import Stream
from lab.spec import DEFAULT_SPEC, LabSpec, dump_spec, load_spec, parse_spec

SECONDARY_CLOUD_IP = "203.0.113.9"
SECONDARY_CUSTOMER_IP = "198.51.100.10"
HC = {"primary": ("169.254.128.1", "169.254.128.2"), "secondary": ("169.254.128.5", "169.254.128.6")}
FLAPS = 5
IN_FLIGHT = 1.0  # s after a cut in which packets already on their way may still arrive


def failover_spec(base: str | Path | LabSpec | None, interval_ms: int, threshold: int,
                  timeout_ms: int) -> LabSpec:
    """The base spec's first tunnel twice: primary and secondary, each with its health check."""
    spec = base if isinstance(base, LabSpec) else load_spec(base or DEFAULT_SPEC)
    data = dump_spec(spec)
    tunnel = data["tunnels"][0]
    tunnel["dpd"] = {"enabled": True, "timeout": 60, "action": "retry"}  # outlives every cut here
    tunnels = []
    for role, cgw_ip in (("primary", tunnel["customer_gateway"]["public_ip"]),
                         ("secondary", SECONDARY_CUSTOMER_IP)):
        local, peer = HC[role]
        t = {**tunnel, "name": f"{tunnel['name'][:50]}-{role[:3]}", "vpn_gateway": role,
             "negotiation_type": "active",
             "customer_gateway": {**tunnel["customer_gateway"], "public_ip": cgw_ip, "site": "idc"},
             "health_check": {"enabled": True, "local_ip": local, "peer_ip": peer,
                              "interval_ms": interval_ms, "threshold": threshold,
                              "timeout_ms": timeout_ms}}
        tunnels.append(t)
    data["tunnels"] = tunnels
    data["vpn_gateway"]["secondary_public_ip"] = SECONDARY_CLOUD_IP
    return parse_spec(data, "failover spec")


def run_failover(base: str | Path | None = None, *, backend: str = "netns", interval_ms: int = 1000,
                 threshold: int = 3, timeout_ms: int = 500, name: str | None = None,
                 fault: Callable[[Lab], None] | None = None) -> ScenarioResult:
    """`fault` runs once the lab is up, before the experiment (a test breaks what a verdict
    judges with it, e.g. a secondary path that drops the traffic but answers health checks)."""
    spec = failover_spec(base, interval_ms, threshold, timeout_ms)
    name = name or lab_name("fo")
    with running_lab(spec, name, backend) as lab:
        if fault is not None:
            fault(lab)
        primary, secondary = (t.name for t in spec.tunnels)
        result = ScenarioResult(
            "failover", f"health check every {interval_ms} ms, threshold {threshold}, timeout "
                        f"{timeout_ms} ms", lab.state.backend, lab.state.dataplane, 1.0)
        _experiment(lab, result, primary, secondary)
    return result


def _path(lab: Lab, tunnel: str) -> tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]:
    return lab.plan.cloud_of(tunnel).public_ip, lab.plan.customer_of(tunnel).public_ip


def _wait(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def _experiment(lab: Lab, result: ScenarioResult, primary: str, secondary: str) -> None:
    limit = bound(lab, primary)
    hc = lab.spec.tunnel(primary).health_check
    interval = hc.interval_ms / 1000
    settle = limit + (max(HOLD_DOWN_PROBES, hc.threshold) + 2) * interval  # enough for a failback
    result.metrics["bound_s"] = limit
    stream = Stream(lab)
    wire = WireWatch(lab, [stream.prefix])
    failover = Failover(lab, primary, secondary)
    carriers = Carriers(lab, [primary, secondary])
    try:
        failover.start()
        carriers.start()
        stream.start()
        time.sleep(2 * interval)  # both checks healthy, the stream on the primary
        # 1. the primary's path breaks
        t_cut = impair.cut(lab, *_path(lab, primary), rule="primary")
        result.mark(t_cut, "primary cut")
        moved = _wait(lambda: failover.active == secondary, limit * 3 + 5)
        time.sleep(2 * interval)  # traffic on the secondary for a while
        # 2. the primary comes back
        t_restore = impair.restore(lab, "primary")
        result.mark(t_restore, "primary restored")
        back = _wait(lambda: failover.active == primary, settle * 2)
        time.sleep(2 * interval)
        # 3. both break
        t_both = impair.cut_all(lab, [(*_path(lab, primary), "primary"),
                                      (*_path(lab, secondary), "secondary")])
        result.mark(t_both, "both cut")
        time.sleep(limit + 3 * interval)
        t_both_end = impair.restore(lab, "primary", "secondary")
        result.mark(t_both_end, "both restored")
        _wait(lambda: failover.active == primary and failover.checkers[primary].healthy, settle * 2)
        time.sleep(2 * interval)
        # 4. the primary flaps: down for a threshold's worth of probes, up again, repeatedly
        switches_before = len(failover.switches)
        t_flap = time.time()
        result.mark(t_flap, "primary flapping")
        for _ in range(FLAPS):
            impair.cut(lab, *_path(lab, primary), rule="primary")
            time.sleep((hc.threshold + 1) * interval)
            impair.restore(lab, "primary")
            time.sleep(2 * interval)
        t_flap_end = time.time()
        result.mark(t_flap_end, "flapping ends")
        _wait(lambda: failover.active == primary, settle * 2)
        time.sleep(2 * interval)
        flow = stream.stop()
    except BaseException:
        stream.kill()
        wire.kill()
        raise
    finally:
        carriers.stop()
        failover.stop()
    wire.finish(result)
    for t, active in failover.switches:
        result.mark(t, f"traffic via {'secondary' if active == secondary else 'primary'}")
    for tunnel, checker in failover.checkers.items():
        for tr in checker.transitions:
            result.mark(tr.time, f"{'secondary' if tunnel == secondary else 'primary'} "
                                 f"{'healthy' if tr.healthy else 'unhealthy'}")

    down = next((tr for tr in failover.checkers[primary].transitions if not tr.healthy
                 and tr.time >= t_cut), None)
    result.verdict("the health check declared the primary unhealthy", down is not None,
                   f"{down.time - t_cut:.2f} s after the cut ({hc.threshold} failed probes every "
                   f"{hc.interval_ms} ms)" if down else "never")
    switch = next((t for t, active in failover.switches if active == secondary and t >= t_cut), None)
    # judged by where the packets went (both ends' CHILD_SA counters), not by the controller
    on_secondary = carriers.carried(secondary, switch, t_restore) if switch else 0
    on_primary = carriers.carried(primary, switch + IN_FLIGHT, t_restore) if switch else 0
    result.verdict("traffic moved to the secondary", moved and on_secondary > 0 and on_primary == 0,
                   f"routes switched {switch - t_cut:.2f} s after the cut; until the restore the "
                   f"secondary carried {on_secondary} packets, the primary {on_primary}"
                   if switch else "the routes never switched")
    udp = flow.directions[0]
    last, first = udp.outage_around(t_cut)
    if last and first:
        outage = first - last
        result.metrics.update({"detection_s": round(down.time - t_cut, 2) if down else None,
                               "outage_s": round(outage, 2)})
        result.verdict("outage within interval x threshold + timeout (+1 interval for the switch)",
                       outage <= limit + interval, f"outage {outage:.2f} s, bound {limit:.2f} s")
    else:
        result.verdict("outage within interval x threshold + timeout (+1 interval for the switch)",
                       False, "no outage measured: " + ("no packet delivered after the cut"
                                                        if last else "no packet delivered at all"))
    failback = next((t for t, active in failover.switches if active == primary and t >= t_restore),
                    None)
    back_on_primary = carriers.carried(primary, failback + IN_FLIGHT, t_both) if failback else 0
    still_secondary = carriers.carried(secondary, failback + IN_FLIGHT, t_both) if failback else 0
    result.verdict("traffic moved back to the primary after it recovered (damped)",
                   back and back_on_primary > 0 and still_secondary == 0,
                   f"routes switched back {failback - t_restore:.2f} s after the restore (after "
                   f"{max(hc.threshold, HOLD_DOWN_PROBES)} good probes in a row); then the primary "
                   f"carried {back_on_primary} packets, the secondary {still_secondary}"
                   if failback else "the routes never switched back")
    if failback:
        result.metrics["failback_s"] = round(failback - t_restore, 2)
    late = sorted(ts - t_both for d in flow.directions for ts in d.arrived.values()
                  if t_both + IN_FLIGHT <= ts <= t_both_end)
    result.verdict("both tunnels down: traffic stops", not late,
                   f"{len(late)} packets delivered while both paths were cut"
                   + (f", {late[0]:.2f}-{late[-1]:.2f} s after the cut" if late else ""))
    flaps = [s for s in failover.switches[switches_before:] if t_flap <= s[0] <= t_flap_end + settle * 2]
    moves = carriers.switches(t_flap, t_flap_end + settle * 2)
    result.verdict("a flapping primary does not flap the traffic", len(moves) <= 2,
                   f"the traffic changed tunnels {len(moves)} times during {FLAPS} flaps (the "
                   f"routes {len(flaps)} times; damping: back only after "
                   f"{max(hc.threshold, HOLD_DOWN_PROBES)} good probes in a row)")
    result.metrics["switches"] = len(failover.switches)
    result.attach_stream(flow)
