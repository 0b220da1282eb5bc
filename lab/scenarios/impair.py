"""Impairing the simulated internet without touching links: nftables inside the internet node.

A cut drops IPv4 between two public addresses in both directions while every link stays up, so
the daemons learn of it only the way they would in the field: through DPD. The table lives in
the internet node's own namespace; the root namespace's firewall is never touched.
"""

from __future__ import annotations

import ipaddress
import time

from lab.errors import LabError
from lab.lifecycle import Lab

TABLE = "ilab_impair"


def _nft(lab: Lab, commands: list[str]) -> tuple[float, float]:
    """One nft transaction (all commands or none); returns (before, after) it ran (time.time()).

    One process, not one per command: spawning nft costs ~0.1 s here and seconds in an emulated
    guest, and an experiment must know when the drop rules really began (a cut: `after`) and
    when traffic may first have passed again (a restore: `before`)."""
    script = " ; ".join(commands)
    before = time.time()
    result = lab.backend.exec(lab.state, lab.plan.internet_node, ["nft", script])
    after = time.time()
    if result.returncode != 0:
        raise LabError(f"nft {script} failed in the internet node: {result.stderr.strip()}")
    return before, after


def _family(lab: Lab) -> tuple[str, str]:
    """(nft family, hook) where the internet node forwards: its bridge (br0 on both backends:
    the docker backend's `inet` container bridges the gateways' uplinks too), or routing."""
    bridged = lab.plan.node(lab.plan.internet_node).bridge is not None
    return ("bridge", "forward") if bridged else ("ip", "forward")


Cut = tuple[ipaddress.IPv4Address, ipaddress.IPv4Address, str]  # (a, b, rule)


def cut(lab: Lab, a: ipaddress.IPv4Address, b: ipaddress.IPv4Address, rule: str = "cut") -> float:
    """Drop everything between public addresses a and b (both directions); returns when the
    drop began."""
    return cut_all(lab, [(a, b, rule)])


def cut_all(lab: Lab, cuts: list[Cut]) -> float:
    """Several cuts at one instant (one transaction); returns when they began."""
    family, hook = _family(lab)
    match = "ether type ip " if family == "bridge" else ""
    commands = [f"add table {family} {TABLE}"]
    for a, b, rule in cuts:
        commands.append(f"add chain {family} {TABLE} {rule} "
                        f"{{ type filter hook {hook} priority 0 ; policy accept ; }}")
        commands += [f"add rule {family} {TABLE} {rule} {match}ip saddr {src} ip daddr {dst} drop"
                     for src, dst in ((a, b), (b, a))]
    return _nft(lab, commands)[1]


def restore(lab: Lab, *rules: str) -> float:
    """Remove the cuts named (default: "cut"); returns the moment from which traffic may have
    passed again (taken just before the change)."""
    family, _ = _family(lab)
    return _nft(lab, [f"delete chain {family} {TABLE} {rule}" for rule in rules or ("cut",)])[0]
