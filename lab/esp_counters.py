"""What each gateway's SAs counted while the check's probes ran: the evidence that tells where ESP
was lost when the internet segment's capture cannot (it sees frames before a cut drops them).

Per tunnel and gateway, the packets its mapping CHILD_SAs sent out and received in (VICI
`packets-out` / `packets-in`; for libreswan the kernel's XFRM states), as a difference between
two samples; a CHILD_SA that appeared in between counts from zero. On the kernel dataplane also
the XFRM error counters of the gateway's namespace (/proc/net/xfrm_stat): `XfrmInNoStates`
rises when ESP arrives for an SPI the kernel has no state for, the mark of an SA gone on one
side only.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lab.errors import LabError

if TYPE_CHECKING:
    from lab.running import Lab

XFRM_ERRORS = ("XfrmInNoStates", "XfrmInStateProtoError", "XfrmInStateMismatch", "XfrmInNoPols",
               "XfrmInPolBlock", "XfrmOutNoStates", "XfrmOutPolBlock")


@dataclass
class Counted:
    """What one gateway counted for one tunnel between two samples."""

    node: str
    tunnel: str
    packets_in: int = 0
    packets_out: int = 0
    xfrm: dict[str, int] = field(default_factory=dict)  # XFRM error counters that rose

    def describe(self) -> str:
        rose = ", ".join(f"{k} +{v}" for k, v in self.xfrm.items())
        return f"{self.node}: {self.packets_out} out, {self.packets_in} in" + (
            f" ({rose})" if rose else "")


Sample = dict[tuple[str, str, str], tuple[int, int]]  # (node, tunnel, CHILD_SA id) -> (in, out)


class EspCounters:
    """Two samples around the probes; `counted()` is the difference per tunnel and gateway."""

    def __init__(self, lab: Lab, tunnels: list[str]):
        self.lab, self.tunnels = lab, tunnels
        self.nodes = list(dict.fromkeys(
            gw.node for t in tunnels for gw in (lab.plan.cloud_of(t), lab.plan.customer_of(t))))
        self.kernel = lab.state.dataplane == "kernel"
        # a user's own config names its connections itself: its IKE_SAs are the tunnel's by peer
        self.by_peer = {} if lab.customer.kind == "generated" else {
            (lab.plan.customer_of(t).node, str(lab.plan.cloud_of(t).public_ip)): t for t in tunnels}
        self._before: Sample = {}
        self._xfrm_before: dict[str, dict[str, int]] = {}

    def start(self) -> None:
        self._before, self._xfrm_before = self._sample(), self._xfrm()

    def counted(self) -> list[Counted]:
        after, xfrm_after = self._sample(), self._xfrm()
        out = {(node, t): Counted(node, t) for t in self.tunnels
               for node in (self.lab.plan.cloud_of(t).node, self.lab.plan.customer_of(t).node)}
        for (node, tunnel, uid), (pin, pout) in after.items():
            bin_, bout = self._before.get((node, tunnel, uid), (0, 0))
            c = out[(node, tunnel)]
            c.packets_in += pin - bin_ if pin >= bin_ else pin
            c.packets_out += pout - bout if pout >= bout else pout
        for c in out.values():
            before = self._xfrm_before.get(c.node, {})
            c.xfrm = {k: v - before.get(k, 0) for k, v in xfrm_after.get(c.node, {}).items()
                      if v > before.get(k, 0)}
        return list(out.values())

    def _sample(self) -> Sample:
        sample: Sample = {}
        for node in self.nodes:
            try:
                sas = self.lab.sas(node)
            except (LabError, OSError, TimeoutError, ValueError):
                continue  # a daemon that does not answer is a row of its own in the check
            for sa in sas:
                tunnel = sa.get("name") if sa.get("name") in self.tunnels else \
                    self.by_peer.get((node, str(sa.get("remote-host"))))
                if tunnel is None:
                    continue
                for child in (sa.get("child-sas") or {}).values():
                    if str(child.get("name", "")).endswith("-hc"):
                        continue  # the health check's own CHILD_SA carries no probe
                    key = (node, str(tunnel), str(child.get("uniqueid")))
                    sample[key] = (int(child.get("packets-in", 0)), int(child.get("packets-out", 0)))
        return sample

    def _xfrm(self) -> dict[str, dict[str, int]]:
        if not self.kernel:
            return {}
        found: dict[str, dict[str, int]] = {}
        for node in self.nodes:
            try:
                done = self.lab.backend.exec(self.lab.state, node,
                                             ["cat", "/proc/net/xfrm_stat"], timeout=10)
            except (OSError, subprocess.SubprocessError):
                continue
            if done.returncode != 0:
                continue
            found[node] = {k: int(v) for k, v in (line.split() for line in done.stdout.splitlines()
                                                  if len(line.split()) == 2)
                           if k in XFRM_ERRORS}
        return found
