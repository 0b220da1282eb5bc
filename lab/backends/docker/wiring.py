"""Applying the plan inside containers Docker made, from the host (decision (b) of the package).

Docker gives an endpoint one address and names interfaces in connect order; this enters each
container's network namespace, matches interfaces by the MAC Docker reports per network, renames
them to the plan's names, replaces Docker's addresses and routes by the plan's, and writes the
sysctls: then a container is configured exactly like a netns node (lab.netlink.configure_node).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lab import netlink
from lab.backends.docker.topology import Segment, container_name, containers
from lab.errors import LabError
from lab.plan import LabPlan, Node

RUN_TIMEOUT = 30.0
# rp_filter 0 also on every interface Docker made before the plan's were named
ALL_RP_FILTERS = "for f in /proc/sys/net/ipv4/conf/*/rp_filter; do echo 0 > $f; done"


@dataclass
class Running:
    """A started container as the wiring needs it."""

    name: str
    pid: int
    macs: dict[str, str]  # docker network name -> MAC of the container's endpoint


def inspect(api: Any, name: str) -> Running:
    attrs = api.inspect_container(name)
    networks = attrs["NetworkSettings"]["Networks"]
    return Running(name, attrs["State"]["Pid"],
                   {net: info["MacAddress"] for net, info in networks.items()})


def configure(plan: LabPlan, segs: list[Segment], running: dict[str, Running]) -> None:
    """From the host, in each container's namespace: names, addresses, routes, bridge."""
    for node in containers(plan):
        run = running[container_name(plan.name, node.name)]
        wanted = {}
        for seg in segs:
            if node.name in seg.members:
                mac = run.macs.get(seg.network_name(plan.name))
                if not mac:
                    raise LabError(f"{run.name} is not on network {seg.network_name(plan.name)}")
                wanted[mac.lower()] = seg.members[node.name][0]
        path = f"/proc/{run.pid}/ns/net"
        _configure_netns(path, node, wanted)
        netlink.run_checked(path, ["sh", "-c", f"{netlink.sysctl_script(node)}; {ALL_RP_FILTERS}"],
                            RUN_TIMEOUT)


def _configure_netns(path: str, node: Node, wanted: dict[str, str]) -> None:
    """Same result as the netns backend's, starting from what Docker made."""
    with netlink.socket(path) as ipr:
        by_mac = {link.get("IFLA_ADDRESS"): link["index"] for link in ipr.get_links()}
        for n, mac in enumerate(wanted):
            if mac not in by_mac:
                raise LabError(f"no interface with MAC {mac} in {path}")
            ipr.link("set", index=by_mac[mac], state="down")
            ipr.link("set", index=by_mac[mac], ifname=f"ilabtmp{n}")
        for mac, ifname in wanted.items():
            index = by_mac[mac]
            ipr.link("set", index=index, ifname=ifname)
            for addr in ipr.get_addr(family=2, index=index):
                ipr.addr("del", index=index, address=addr.get("IFA_ADDRESS"),
                         prefixlen=addr["prefixlen"])
        ipr.flush_routes(table=254, family=2)
        netlink.configure_node(ipr, node)
