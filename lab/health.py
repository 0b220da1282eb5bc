"""The cloud's health check (NQA) and the primary/secondary failover it drives.

`HealthChecker` probes from a tunnel's health-check local IP (on its cloud gateway) to the peer
IP (on the customer gateway) through the tunnel: ICMP echo every `interval_ms`, each answered
within `timeout_ms` or failed. After `threshold` consecutive failures the tunnel is unhealthy.

Damping (so a flapping primary cannot flap the traffic): an unhealthy tunnel is healthy again only
after max(`threshold`, `HOLD_DOWN_PROBES`) consecutive successful probes, so a path that keeps
failing within that window stays out of service. `Failover` moves the VPC's and the IDC's routes
onto the secondary while the primary is unhealthy and the secondary healthy, and back once the
primary is healthy again; the worst-case outage is interval x threshold + timeout (plus the route
change).

A tunnel's health-check policy (Alibaba's HealthCheckConfig.Policy) says what its failed check does
to its routes: revoke_route withdraws them, as Tencent's check always does (policy None);
reserve_route keeps them, so a tunnel whose check failed still holds the traffic and nothing is
moved away from it (`keeps_routes`, `route_holder`).

Probes run in threads that enter the gateway's network namespace (setns is per thread), so the
same code serves namespaces and containers.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pyroute2 import IPRoute, netns

from lab import catalogue as cat
from lab.plan import LAN
from lab.running import Lab

HOLD_DOWN_PROBES = 5


def keeps_routes(healthy: bool, policy: str | None) -> bool:
    """Whether a tunnel's routes stay in place: while its check passes, and after it failed
    only under reserve_route (revoke_route, or no policy as on Tencent, withdraws them)."""
    return healthy or policy == cat.RESERVE_ROUTE


def route_holder(primary: str, secondary: str, keeps: dict[str, bool]) -> str:
    """The tunnel the VPC's and IDC's routes point at: the primary while it keeps its routes or
    the secondary has none to offer either, else the secondary."""
    return primary if keeps[primary] or not keeps[secondary] else secondary


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


@dataclass
class Transition:
    time: float
    tunnel: str
    healthy: bool


@dataclass
class HealthChecker:
    lab: Lab
    tunnel: str
    on_change: Callable[[Transition], None] = lambda _: None
    healthy: bool = True
    probes: list[tuple[float, bool]] = field(default_factory=list)
    transitions: list[Transition] = field(default_factory=list)

    def __post_init__(self) -> None:
        t = self.lab.spec.tunnel(self.tunnel)
        self.hc = t.health_check
        self.node = self.lab.plan.cloud_of(self.tunnel).node
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"nqa-{self.tunnel}")
        self._ident = (os.getpid() + hash(self.tunnel)) & 0xFFFF

    def start(self) -> HealthChecker:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        netns.setns(self.lab.backend.netns_path(self.lab.state, self.node), flags=0)
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        sock.bind((str(self.hc.local_ip), 0))
        fails = oks = 0
        recover = max(self.hc.threshold, HOLD_DOWN_PROBES)
        seq = 0
        interval = self.hc.interval_ms / 1000
        next_at = time.monotonic()
        try:
            while not self._stop.is_set():
                seq = (seq + 1) & 0xFFFF
                ok = self._probe(sock, seq)
                now = time.time()
                self.probes.append((now, ok))
                fails, oks = (0, oks + 1) if ok else (fails + 1, 0)
                if self.healthy and fails >= self.hc.threshold:
                    self._change(False, now)
                elif not self.healthy and oks >= recover:
                    self._change(True, now)
                next_at += interval
                self._stop.wait(max(0.0, next_at - time.monotonic()))
        finally:
            sock.close()

    def _change(self, healthy: bool, now: float) -> None:
        self.healthy = healthy
        transition = Transition(now, self.tunnel, healthy)
        self.transitions.append(transition)
        self.on_change(transition)

    def _probe(self, sock: socket.socket, seq: int) -> bool:
        body = b"ipsec-lab NQA"
        header = struct.pack("!BBHHH", 8, 0, 0, self._ident, seq)
        packet = struct.pack("!BBHHH", 8, 0, _checksum(header + body), self._ident, seq) + body
        deadline = time.monotonic() + self.hc.timeout_ms / 1000
        sock.sendto(packet, (str(self.hc.peer_ip), 0))
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                data, (src, _) = sock.recvfrom(2048)
            except TimeoutError:
                return False
            ihl = (data[0] & 0x0F) * 4
            kind, _, _, ident, rseq = struct.unpack("!BBHHH", data[ihl:ihl + 8])
            if kind == 0 and ident == self._ident and rseq == seq and src == str(self.hc.peer_ip):
                return True
        return False


class Failover:
    """Primary/secondary: the VPC's and IDC's routes follow the health checks."""

    def __init__(self, lab: Lab, primary: str, secondary: str):
        self.lab, self.primary, self.secondary = lab, primary, secondary
        self.active = primary
        self.switches: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self.checkers = {
            name: HealthChecker(lab, name, on_change=self._decide) for name in (primary, secondary)
        }

    def start(self) -> Failover:
        for checker in self.checkers.values():
            checker.start()
        return self

    def stop(self) -> None:
        for checker in self.checkers.values():
            checker.stop()

    def _decide(self, _: Transition) -> None:
        with self._lock:
            keeps = {name: keeps_routes(c.healthy, c.hc.policy) for name, c in self.checkers.items()}
            want = route_holder(self.primary, self.secondary, keeps)
            if want != self.active:
                self._route_via(want)
                self.active = want
                self.switches.append((time.time(), want))

    def _route_via(self, tunnel: str) -> None:
        """Point the VPC host and the IDC host at the gateways of `tunnel`."""
        plan = self.lab.plan
        for gw, host in ((plan.cloud_of(tunnel), "vpc"),
                         (plan.customer_of(tunnel), self._idc_host(tunnel))):
            via = plan.node(gw.node).iface(LAN).addresses[0].ip
            path = self.lab.backend.netns_path(self.lab.state, host)
            with IPRoute(netns=path, flags=0) as ipr:
                ipr.route("replace", dst="0.0.0.0/0", gateway=str(via))

    def _idc_host(self, tunnel: str) -> str:
        return next(p.idc_node for p in self.lab.plan.probes if p.tunnel == tunnel)


def bound(lab: Lab, tunnel: str) -> float:
    """The outage bound the cloud's settings give: interval x threshold + timeout (seconds)."""
    hc = lab.spec.tunnel(tunnel).health_check
    return (hc.interval_ms * hc.threshold + hc.timeout_ms) / 1000
