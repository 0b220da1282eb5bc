"""The traffic stream every scenario runs: sequence-numbered UDP (and ICMP) both ways.

The agents in the IDC and VPC hosts record every packet sent and received with its time; this
module turns that into what an engineer reads: lost, duplicated and reordered packets, outage
windows around events, and packets delivered per interval for the timeline.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from lab.plan import MappingProbe
from lab.probe import Agent
from lab.running import Lab

DEFAULT_RATE = 50.0


@dataclass
class Direction:
    """One direction of the stream: what was sent, and what arrived (first arrival per seq)."""

    name: str  # e.g. "idc->vpc"
    sent: dict[int, float] = field(default_factory=dict)
    arrived: dict[int, float] = field(default_factory=dict)
    duplicates: int = 0
    reordered: int = 0

    @property
    def lost(self) -> list[int]:
        return sorted(set(self.sent) - set(self.arrived))

    def gaps(self, rate: float, factor: float = 5.0) -> list[tuple[float, float]]:
        """Receive-time gaps longer than `factor` packet intervals: the outages (scheduling
        jitter on a loaded 2-core machine reaches a few intervals without any loss)."""
        times = sorted(self.arrived.values())
        limit = factor / rate
        return [(a, b) for a, b in zip(times, times[1:], strict=False) if b - a > limit]

    def outage_around(self, t: float, in_flight: float = 1.0) -> tuple[float | None, float | None]:
        """The longest delivery gap that spans `t`: (last delivery before, first delivery after).

        Packets already in flight at `t` may still arrive shortly after it, hence `in_flight`.
        """
        times = sorted(self.arrived.values())
        spans = [(a, b) for a, b in zip(times, times[1:], strict=False) if a <= t + in_flight and b > t]
        if not spans:
            before = [x for x in times if x <= t + in_flight]
            return (max(before) if before else None, None)
        return max(spans, key=lambda ab: ab[1] - ab[0])

    def lost_between(self, start: float, end: float) -> int:
        """Packets sent in [start, end) that never arrived."""
        return sum(1 for seq, ts in self.sent.items() if start <= ts < end and seq not in self.arrived)

    def delivered_per_interval(self, t0: float, t1: float, step: float) -> list[int]:
        bins = [0] * max(1, int((t1 - t0) / step) + 1)
        for ts in self.arrived.values():
            if t0 <= ts <= t1:
                bins[min(len(bins) - 1, int((ts - t0) / step))] += 1
        return bins

    def summary(self) -> dict[str, Any]:
        return {"direction": self.name, "sent": len(self.sent), "delivered": len(self.arrived),
                "lost": len(self.lost), "duplicated": self.duplicates, "reordered": self.reordered}


def _direction(name: str, sent: list, received: list, kind: str) -> Direction:
    d = Direction(name, sent={seq: t for seq, t in sent})
    highest = 0
    for k, seq, t in sorted(received, key=lambda r: r[2]):
        if k != kind:
            continue
        if seq in d.arrived:
            d.duplicates += 1
            continue
        d.arrived[seq] = t
        if seq < highest:
            d.reordered += 1
        highest = max(highest, seq)
    return d


@dataclass
class StreamResult:
    rate: float
    directions: list[Direction]
    started: float
    stopped: float
    capture_drops: int = 0  # packets the receiving ends' captures missed (full buffer)

    def summary(self) -> list[dict[str, Any]]:
        return [d.summary() for d in self.directions]

    def losses(self) -> str:
        """The lost packets in words: how many, when (s into the stream), and whether the
        captures themselves missed packets (then a loss may be the measurement's)."""
        lost = sorted((ts - self.started, d.name) for d in self.directions for seq, ts in d.sent.items()
                      if seq not in d.arrived)
        text = f"{len(lost)} lost of {sum(len(d.sent) for d in self.directions)} sent"
        if lost:
            text += " (" + ", ".join(f"{name} at {t:.2f} s" for t, name in lost[:6]) + (
                ", ..." if len(lost) > 6 else "") + ")"
        if self.capture_drops:
            text += (f"; the receiving captures missed {self.capture_drops} packets (full buffer):"
                     " some losses may be the capture's")
        return text


class Stream:
    """Both ends of a stream over one mapping: idc host <-> vpc host."""

    def __init__(self, lab: Lab, probe: MappingProbe | None = None, rate: float = DEFAULT_RATE,
                 icmp: bool = True, size: int = 0):
        """`size`: padding bytes per UDP packet (byte-lifetime rekeys need volume, not rate)."""
        self.lab, self.rate = lab, rate
        self.probe = probe or lab.plan.probes[0]
        self.prefix = f"ILAB{secrets.token_hex(4)}"
        p = self.probe
        common = ["--iface", "eth0", "--prefix", self.prefix, "--rate", str(rate),
                  "--size", str(size)]
        if icmp:
            common.append("--icmp")
        self.ends = {
            "i2v": Agent(lab, p.idc_node, ["stream", *common, "--tag", "i2v", "--src", str(p.idc_addr),
                                           "--dst", str(p.vpc_addr)]),
            "v2i": Agent(lab, p.vpc_node, ["stream", *common, "--tag", "v2i", "--src", str(p.vpc_addr),
                                           "--dst", str(p.idc_addr)]),
        }
        self.started = 0.0

    def start(self) -> None:
        for agent in self.ends.values():
            agent.wait_ready()
        self.started = time.time()
        for agent in self.ends.values():
            assert agent.proc.stdin
            agent.proc.stdin.write("go\n")
            agent.proc.stdin.flush()

    def stop(self) -> StreamResult:
        """Both ends stop sending, and only once both have stopped do they stop listening: the
        last packets of one end are not lost to the other's capture closing first."""
        stopped = time.time()
        for agent in self.ends.values():
            agent.say("stop")
        for agent in self.ends.values():
            agent.expect("stopped")
        results = {tag: agent.finish() for tag, agent in self.ends.items()}
        i2v, v2i = results["i2v"], results["v2i"]
        directions = [
            _direction("idc->vpc udp", i2v["sent"], v2i["received"], "udp"),
            _direction("vpc->idc udp", v2i["sent"], i2v["received"], "udp"),
        ]
        if any(r[0] == "echo" for r in i2v["received"] + v2i["received"]):
            directions += [
                _direction("idc->vpc->idc icmp", i2v["sent"], i2v["received"], "echo"),
                _direction("vpc->idc->vpc icmp", v2i["sent"], v2i["received"], "echo"),
            ]
        drops = sum(int(r.get("capture_drops", 0)) for r in results.values())
        return StreamResult(self.rate, directions, self.started, stopped, drops)

    def kill(self) -> None:
        for agent in self.ends.values():
            agent.kill()


def dumps(result: StreamResult) -> str:
    return json.dumps({"rate": result.rate, "summary": result.summary()})
