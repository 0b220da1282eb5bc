"""The plan as Docker networks and containers: which networks, their ranges and reserved
gateways, who is on each with which address, and how containers are named and labelled.

Pure data from the plan (no engine): the compose file is this, written out (lab.backends.docker.
compose), and every check of a range that Docker would refuse names the spec field behind it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from lab.errors import LabError
from lab.plan import LAN, WAN, LabPlan, Link, Node

PREFIX = "ilab-"
LABEL = "ipsec-lab.lab"
NODE_LABEL = "ipsec-lab.node"
ROLE_LABEL = "ipsec-lab.role"
GATEWAY_ROLES = ("vpn-gateway", "customer-gateway")
WAN_BLOCK = 29  # a gateway's uplink network: its public IP's /29 (IP, IPAM gateway, inet's port)
NETWORK_OPTIONS = {
    "com.docker.network.bridge.enable_ip_masquerade": "false",
    "com.docker.network.bridge.inhibit_ipv4": "true",
}


def container_name(lab: str, node: str) -> str:
    return f"{PREFIX}{lab}-{node}"


def labels(lab: str, node: Node) -> dict[str, str]:
    return {LABEL: lab, NODE_LABEL: node.name, ROLE_LABEL: node.role}


def containers(plan: LabPlan) -> list[Node]:
    """Nodes that are containers (a plan's switches are Docker networks, not containers)."""
    return [n for n in plan.nodes if n.role != "switch"]


@dataclass
class Segment:
    """One Docker network: a gateway's uplink to `inet`, or a LAN between a gateway and a host."""

    key: str  # wan-<node> | lan-<host>
    subnet: ipaddress.IPv4Network
    gateway: ipaddress.IPv4Address  # IPAM's reserved address: unused by the plan, never configured
    fields: list[str]  # the spec fields that decide the range (for error messages)
    # node -> (the plan's interface name, the address Docker assigns it)
    members: dict[str, tuple[str, ipaddress.IPv4Address]] = field(default_factory=dict)

    def network_name(self, lab: str) -> str:
        return f"{PREFIX}{lab}-{self.key}"


def _gateway_field(node: str) -> str:
    if node == "vpngw":
        return "vpn_gateway.public_ip"
    if node == "vpngw2":
        return "vpn_gateway.secondary_public_ip"
    return f"tunnels[{int(node[3:]) - 1}].customer_gateway.public_ip"  # cgwN, or natN before it


def _lan_field(host: Node) -> str:
    if host.name == "vpc":
        return "vpn_gateway.vpc_cidr"
    if host.role == "customer-gateway":  # its private WAN, behind its NAT router
        return f"tunnels[{int(host.name[3:]) - 1}].customer_gateway.behind_nat.private_ip"
    i = int(host.name[3:]) - 1
    if host.lan_from_idc_cidrs:
        return f"tunnels[{i}].customer_gateway.idc_cidrs"
    return f"tunnels[{i}].spd_rules (peer ranges)"


def _free(subnet: ipaddress.IPv4Network, used: set[ipaddress.IPv4Address], count: int,
          what: str) -> list[ipaddress.IPv4Address]:
    """The `count` highest addresses of `subnet` the plan does not use."""
    out: list[ipaddress.IPv4Address] = []
    top = int(subnet.broadcast_address) - 1
    for value in range(top, int(subnet.network_address), -1):
        addr = ipaddress.IPv4Address(value)
        if addr not in used:
            out.append(addr)
            if len(out) == count:
                return out
    raise LabError(f"{what}: {subnet} has no free address left for Docker's reserved gateway")


def wan_block(ip: ipaddress.IPv4Address) -> ipaddress.IPv4Network:
    """A gateway's uplink range: its /29, or the narrowest wider block in which it is a host
    address (a real address can be the network or broadcast address of its /29, which Docker
    cannot assign)."""
    for prefix in range(WAN_BLOCK, 7, -1):
        block = ipaddress.IPv4Network(f"{ip}/{prefix}", strict=False)
        if ip not in (block.network_address, block.broadcast_address):
            return block
    raise LabError(f"{ip}: no uplink range holds it as a host address")


def segments(plan: LabPlan) -> list[Segment]:
    """The Docker networks for a plan, deterministic (the compose file is this, written out)."""
    nodes = {n.name: n for n in plan.nodes}
    for n in plan.nodes:
        if n.nat is not None and n.nat.udp_timeout is not None:
            raise LabError(f"{_gateway_field(n.name).replace('public_ip', 'behind_nat.udp_timeout')}"
                           ": the docker backend cannot set a container's conntrack timeouts "
                           "(/proc/sys is read-only there); use --backend netns")
    inet = plan.internet_node
    port_of = {ln.a_node: ln.b_iface for ln in plan.links if ln.b_node == inet}
    # the nodes with an uplink to the internet: the gateways, or a NAT router in front of one
    gateways = [nodes[ln.a_node] for ln in plan.links if ln.b_node == inet]
    public = {n.name: n.iface(WAN).addresses[0].ip for n in gateways}
    blocks: dict[ipaddress.IPv4Network, list[str]] = {}
    for n in gateways:
        block = wan_block(public[n.name])
        near = next((b for b in blocks if b.overlaps(block)), block)
        if near != block:  # a wider block around a real address takes the other in
            wider = near if near.prefixlen <= block.prefixlen else block
            blocks[wider] = blocks.pop(near)
            block = wider
        blocks.setdefault(block, []).append(n.name)
    out: list[Segment] = []
    for block, members in blocks.items():
        roles = {nodes[m].role for m in members}
        if len(roles) > 1:
            cloud = next(m for m in members if nodes[m].role == "vpn-gateway")
            other = next(m for m in members if m != cloud)
            raise LabError(
                f"{_gateway_field(cloud)} {public[cloud]} and {_gateway_field(other)} "
                f"{public[other]} share the /{WAN_BLOCK} block {block}: the docker backend gives "
                f"the cloud gateway its own /{WAN_BLOCK} uplink through the internet node (so the "
                "wire capture sees their traffic); pick addresses in different blocks, or use "
                "--backend netns")
        used = {public[m] for m in public}
        what = " and ".join(_gateway_field(m) for m in members)
        reserved, inet_addr = _free(block, used, 2, what)
        seg = Segment(f"wan-{members[0]}", block, reserved, [_gateway_field(m) for m in members])
        for m in members:
            seg.members[m] = (WAN, public[m])
        seg.members[inet] = (port_of[members[0]], inet_addr)
        out.append(seg)
    switched: dict[str, list[Link]] = {}
    for ln in plan.links:
        if ln.b_node == inet:
            continue
        if nodes[ln.b_node].role == "switch":  # a Docker network is itself the switch
            switched.setdefault(ln.b_node, []).append(ln)
            continue
        gw, host = nodes[ln.a_node], nodes[ln.b_node]
        first = gw.iface(ln.a_iface).addresses[0]
        subnet = first.network
        host_addrs = [a.ip for a in host.iface(ln.b_iface).addresses if a.ip in subnet]
        used = {a.ip for a in gw.iface(ln.a_iface).addresses + host.iface(ln.b_iface).addresses}
        fld = _lan_field(host)
        extra = 0 if host_addrs else 1
        free = _free(subnet, used, 1 + extra, fld)
        seg = Segment(f"lan-{host.name}", subnet, free[0], [fld])
        seg.members[gw.name] = (ln.a_iface, first.ip)
        seg.members[host.name] = (ln.b_iface, host_addrs[0] if host_addrs else free[1])
        out.append(seg)
    for switch, lns in switched.items():
        out.append(_switched_segment(nodes, switch, lns))
    _check_internal_overlaps(out)
    return out


def _switched_segment(nodes: dict[str, Node], switch: str, lns: list[Link]) -> Segment:
    """Several gateways and one host on one LAN (primary/secondary): one Docker network."""
    members = [nodes[ln.a_node] for ln in lns]
    gws = [m for m in members if m.role in GATEWAY_ROLES]
    host = next(m for m in members if m.role not in GATEWAY_ROLES)
    subnet = gws[0].iface(LAN).addresses[0].network
    addrs = {m.name: [a.ip for a in m.iface(next(ln.a_iface for ln in lns if ln.a_node == m.name))
                      .addresses if a.ip in subnet] for m in members}
    used = {ip for ips in addrs.values() for ip in ips}
    fld = _lan_field(host)
    seg = Segment(f"lan-{switch}", subnet, _free(subnet, used, 1, fld)[0], [fld])
    for ln in lns:
        seg.members[ln.a_node] = (ln.a_iface, addrs[ln.a_node][0])
    return seg


def _check_internal_overlaps(segs: list[Segment]) -> None:
    for i, a in enumerate(segs):
        for b in segs[i + 1:]:
            if a.subnet.overlaps(b.subnet):
                raise LabError(
                    f"{a.fields[0]} ({a.subnet}) overlaps {b.fields[0]} ({b.subnet}): the docker "
                    "backend makes each a Docker network and Docker refuses overlapping ranges; "
                    "use --backend netns for this lab")
