"""Impairing the simulated internet without touching links: nftables inside the internet node.

A cut drops IPv4 between two public addresses in both directions while every link stays up, so
the daemons learn of it only the way they would in the field: through DPD. The table lives in
the internet node's own namespace; the root namespace's firewall is never touched.
"""

from __future__ import annotations

import ipaddress
import time

from lab.errors import LabError
from lab.running import Lab

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
    commands = []
    for a, b, rule in cuts:
        commands += _chain(lab, rule, [f"ip saddr {src} ip daddr {dst} drop"
                                       for src, dst in ((a, b), (b, a))])
    return _nft(lab, commands)[1]


def cut_one_way(lab: Lab, src: ipaddress.IPv4Address, dst: ipaddress.IPv4Address,
                rule: str = "cut") -> float:
    """Drop everything from `src` to `dst` only (an asymmetric cut); returns when it began."""
    return _rules(lab, rule, [f"ip saddr {src} ip daddr {dst} drop"])


def drop_esp(lab: Lab, a: ipaddress.IPv4Address, b: ipaddress.IPv4Address,
             rule: str = "cut") -> float:
    """Drop ESP between a and b both ways and let IKE pass, like a firewall that opens UDP 500
    and 4500 for IKE only: IP protocol 50, and UDP 4500 datagrams whose first four bytes are
    not the non-ESP marker (RFC 3948: IKE on port 4500 starts with four zero bytes)."""
    rules = []
    for src, dst in ((a, b), (b, a)):
        pair = f"ip saddr {src} ip daddr {dst}"
        rules += [f"{pair} ip protocol esp drop",
                  f"{pair} udp dport 4500 @th,64,32 != 0 drop"]
    return _rules(lab, rule, rules)


def _rules(lab: Lab, rule: str, matches: list[str]) -> float:
    return _nft(lab, _chain(lab, rule, matches))[1]


def _chain(lab: Lab, rule: str, matches: list[str]) -> list[str]:
    """nft commands for a chain named `rule` in the lab's table, holding the drops `matches`."""
    family, hook = _family(lab)
    match = "ether type ip " if family == "bridge" else ""
    return [f"add table {family} {TABLE}",
            f"add chain {family} {TABLE} {rule} "
            f"{{ type filter hook {hook} priority 0 ; policy accept ; }}",
            *(f"add rule {family} {TABLE} {rule} {match}{m}" for m in matches)]


def bridge_port_mtu(lab: Lab, node: str, mtu: int) -> None:
    """Set the MTU of the internet bridge's port toward `node` (its uplink): frames larger than
    that are dropped there without an ICMP, as a switch with a smaller MTU does (a black hole
    for the gateway, whose own link still says 1500)."""
    port = next((link.b_iface for link in lab.plan.links
                 if link.a_node == node and link.b_node == lab.plan.internet_node), None)
    if port is None:
        raise LabError(f"{node} has no link to the internet node")
    done = lab.backend.exec(lab.state, lab.plan.internet_node,
                            ["ip", "link", "set", "dev", port, "mtu", str(mtu)])
    if done.returncode != 0:
        raise LabError(f"cannot set the MTU of {port} in the internet node: {done.stderr.strip()}")


def restore(lab: Lab, *rules: str) -> float:
    """Remove the cuts named (default: "cut"); returns the moment from which traffic may have
    passed again (taken just before the change)."""
    family, _ = _family(lab)
    return _nft(lab, [f"delete chain {family} {TABLE} {rule}" for rule in rules or ("cut",)])[0]
