"""Impairing the simulated internet without touching links: nftables inside the internet node.

A cut drops IPv4 between two public addresses in both directions while every link stays up, so
the daemons learn of it only the way they would in the field: through DPD. The table lives in
the internet node's own namespace; the root namespace's firewall is never touched.
"""

from __future__ import annotations

import ipaddress

from lab.errors import LabError
from lab.lifecycle import Lab

TABLE = "ilab_impair"


def _nft(lab: Lab, *argv: str) -> None:
    result = lab.backend.exec(lab.state, lab.plan.internet_node, ["nft", *argv])
    if result.returncode != 0:
        raise LabError(f"nft {' '.join(argv)} failed in the internet node: {result.stderr.strip()}")


def _family(lab: Lab) -> tuple[str, str]:
    """(nft family, hook) where the internet node forwards: its bridge (br0 on both backends:
    the docker backend's `inet` container bridges the gateways' uplinks too), or routing."""
    bridged = lab.plan.node(lab.plan.internet_node).bridge is not None
    return ("bridge", "forward") if bridged else ("ip", "forward")


def cut(lab: Lab, a: ipaddress.IPv4Address, b: ipaddress.IPv4Address, rule: str = "cut") -> None:
    """Drop everything between public addresses a and b (both directions)."""
    family, hook = _family(lab)
    _nft(lab, "add", "table", family, TABLE)
    _nft(lab, "add", "chain", family, TABLE, rule,
         f"{{ type filter hook {hook} priority 0 ; policy accept ; }}")
    match = "ether type ip " if family == "bridge" else ""
    for src, dst in ((a, b), (b, a)):
        _nft(lab, "add", "rule", family, TABLE, rule, *f"{match}ip saddr {src} ip daddr {dst} drop".split())


def restore(lab: Lab, rule: str = "cut") -> None:
    family, _ = _family(lab)
    result = lab.backend.exec(lab.state, lab.plan.internet_node,
                              ["nft", "delete", "chain", family, TABLE, rule])
    if result.returncode != 0 and "No such file" not in result.stderr:
        # an empty chain must be flushed first on older nft
        _nft(lab, "flush", "chain", family, TABLE, rule)
        _nft(lab, "delete", "chain", family, TABLE, rule)
