"""Which tunnel carried the traffic, from the SAs' own counters, sampled all along an experiment.

A route switch by the failover controller is only its intention; what the verdicts judge is
where the packets went. Each sample adds up, per tunnel, the packets its mapping CHILD_SAs
received at both ends (`packets-in`: what arrived through the tunnel, not what was sent into a
cut path); the health-check CHILD_SAs are left out. A counter that went down belongs to a new
CHILD_SA (a rekey or a re-negotiation): its count starts again from zero.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lab.running import Lab

PERIOD = 0.2  # seconds between samples


class Carriers:
    def __init__(self, lab: Lab, tunnels: list[str], period: float = PERIOD):
        self.lab, self.tunnels, self.period = lab, tunnels, period
        self.samples: list[tuple[float, dict[str, int]]] = []  # (time, packets so far per tunnel)
        self._last: dict[tuple[str, str], int] = {}  # (node, CHILD_SA unique id) -> packets-in
        self._total = dict.fromkeys(tunnels, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Carriers:
        self._sample()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            self._sample()

    def _sample(self) -> None:
        plan = self.lab.plan
        for tunnel in self.tunnels:
            for gw in (plan.cloud_of(tunnel), plan.customer_of(tunnel)):
                with self.lab.vici(gw.node) as v:
                    sas = v.sas()
                for sa in sas:
                    if sa["name"] != tunnel:
                        continue
                    for child in (sa.get("child-sas") or {}).values():
                        if child["name"].endswith("-hc"):
                            continue
                        key = (gw.node, str(child.get("uniqueid")))
                        now = int(child.get("packets-in", 0))
                        before = self._last.get(key, 0)
                        self._total[tunnel] += now - before if now >= before else now
                        self._last[key] = now
        self.samples.append((time.time(), dict(self._total)))

    def _at(self, t: float) -> dict[str, int]:
        """The totals of the last sample taken at or before `t`."""
        found = self.samples[0][1]
        for ts, totals in self.samples:
            if ts > t:
                break
            found = totals
        return found

    def carried(self, tunnel: str, start: float, end: float) -> int:
        """Packets that arrived through `tunnel` between `start` and `end` (sample resolution)."""
        return self._at(end)[tunnel] - self._at(start)[tunnel]

    def switches(self, start: float, end: float) -> list[tuple[float, str]]:
        """When the traffic changed tunnels between `start` and `end`: (time, new carrier). A
        sample interval in which exactly one tunnel received packets names that tunnel."""
        changes: list[tuple[float, str]] = []
        current: str | None = None
        previous = self._at(start)
        for ts, totals in self.samples:
            if ts <= start or ts > end:
                continue
            rose = [t for t in self.tunnels if totals[t] > previous[t]]
            previous = totals
            if len(rose) == 1 and rose[0] != current:
                if current is not None:
                    changes.append((ts, rose[0]))
                current = rose[0]
        return changes
