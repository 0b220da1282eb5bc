"""Where a user's own config puts the two gateways, read from its addresses and IDs.

A spec keeps to documentation ranges (hand-written, or imported with real addresses mapped); a
user's config carries its real ones. The lab runs the config's as written, inside its own
namespaces only (`lab.plan.CustomerPlacement.as_placed`):
- a documentation address other than the spec's stays a disagreement `check` reports;
- a private WAN address (RFC 1918, 100.64/10) goes behind the lab's NAT router, whose public
  side is the config's own address ID when that is a real public address, else the spec's;
- a real public address (the gateway's, or the cloud's the config names as its peer) is used
  as written, on both ends (the cloud expects it, and address IDs follow it).
Shared by `up --customer-config` (lab.customer.own) and `advise`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from lab import ipsecconf as ic
from lab.advise import connections_to_cloud
from lab.errors import LabError
from lab.plan import CustomerPlacement
from lab.ranges import is_documentation, is_private_wan
from lab.spec import LabSpec
from lab.spec.rules import private_wan_problems
from lab.verify import ts_network

ANY = ("%any", "%defaultroute", "%any4", "0.0.0.0/0", "0.0.0.0")


@dataclass
class ConfigAddresses:
    """What `place` found: the placement's addresses (strings, as the lab state keeps them)."""

    public_ip: str | None = None  # the gateway's address as the config writes it, if it does
    customer_ip: str | None = None  # a real public address: the gateway (or its NAT) there
    private_ip: str | None = None  # a private WAN address: behind the lab's NAT router
    cloud_ip: str | None = None  # a real address of the cloud gateway the config names
    notes: list[str] = field(default_factory=list)
    tunnel: int = 0  # the spec's tunnel they are for

    @property
    def real(self) -> bool:
        return any((self.customer_ip, self.private_ip, self.cloud_ip))

    def placement(self, own_daemon_settings: bool = False,
                  default_route: bool = False) -> CustomerPlacement:
        address = _ipv4(self.public_ip) if self.public_ip and not (
            self.customer_ip or self.private_ip) else None
        return CustomerPlacement(address=address, own_daemon_settings=own_daemon_settings,
                                 customer_ip=_ipv4(self.customer_ip),
                                 private_ip=_ipv4(self.private_ip),
                                 cloud_ip=_ipv4(self.cloud_ip), tunnel=self.tunnel,
                                 default_route=default_route)


def place(spec: LabSpec, view: ic.CustomerConfig, origin: str, tunnel: int = 0) -> ConfigAddresses:
    """The config's addresses for the spec's tunnel `tunnel`; `origin` names the file in errors."""
    found = ConfigAddresses(tunnel=tunnel)
    _cloud(found, spec, view, origin)
    placed = found.placement().as_placed(spec)
    _local(found, placed, connections_to_cloud(view, placed, tunnel), origin)
    return found


def _cloud(found: ConfigAddresses, spec: LabSpec, view: ic.CustomerConfig, origin: str) -> None:
    """The cloud gateway's address as the config names it, when that is a real address the
    spec cannot hold."""
    t = spec.tunnels[found.tunnel]
    spec_ip = spec.vpn_gateway.ip_of(t.vpn_gateway)
    named: list[tuple[str, ipaddress.IPv4Address]] = []
    for conn in view.connections:
        for value in [*conn.remote_addrs, *([conn.remote_id] if conn.remote_id else [])]:
            ip = _ipv4(value)
            if ip == spec_ip:
                return
            if ip is not None:
                named.append((conn.name, ip))
    real = [(c, ip) for c, ip in named if not is_documentation(ip)]
    if not real:
        return
    conn_name, ip = real[0]
    if not ip.is_global:
        raise LabError(
            f"{origin}: connection {conn_name}: the cloud gateway's address {ip} is not a public "
            "address; the lab emulates a cloud VPN gateway on the internet (a private-network "
            "gateway is not emulated)")
    others = sorted({str(o) for _, o in real} - {str(ip)})
    found.cloud_ip = str(ip)
    found.notes.append(
        f"the cloud gateway is at {ip} as your connection {conn_name} names it (the spec has "
        f"{spec_ip}): in the lab that address exists only inside the lab's own namespaces"
        + (f"; other peers your config names ({', '.join(others)}) are not emulated (the spec "
           "holds one tunnel)" if others else ""))


def _local(found: ConfigAddresses, spec: LabSpec, conns: list[ic.CustomerConnection],
           origin: str) -> None:
    """The gateway's own address from the config (the first connection that writes one)."""
    t = spec.tunnels[found.tunnel]
    spec_ip = t.customer_gateway.public_ip
    cloud_ip = spec.vpn_gateway.ip_of(t.vpn_gateway)
    for conn in conns:
        for value in conn.local_addrs:
            if value in ANY:
                continue
            ip = _ipv4(value)
            said = f"{origin}: connection {conn.name}: your local address"
            if ip is None:
                raise LabError(
                    f"{said} {value!r} is not an IPv4 address the lab can give your gateway; "
                    "write the address, or %any/%defaultroute and set "
                    f"tunnels[{found.tunnel}].customer_gateway.public_ip in the spec")
            if ip == cloud_ip:
                raise LabError(f"{said} {ip} is the cloud gateway's")
            found.public_ip = str(ip)
            if is_documentation(ip):
                if ip != spec_ip:
                    found.notes.append(
                        f"your gateway is at {ip} (from connection {conn.name}); the cloud tunnel "
                        f"expects the customer gateway at {spec_ip} (spec): the lab keeps both "
                        "as written")
                return
            if is_private_wan(ip):
                _behind_nat(found, spec, conn, ip, said)
                return
            if not ip.is_global:
                raise LabError(f"{said} {ip} is not an address a gateway's WAN can have "
                               "(loopback, link-local, multicast or reserved)")
            found.customer_ip = str(ip)
            found.notes.append(
                f"your gateway keeps its address {ip} (from connection {conn.name}; the spec has "
                f"{spec_ip}) and the cloud tunnel expects it there: in the lab that address "
                "exists only inside the lab's own namespaces")
            return
    id_ip = _public_id(conns)
    if id_ip is not None:
        found.customer_ip = str(id_ip)
        found.notes.append(f"your config does not name its own address; its ID {id_ip} is a "
                           "real public address: the customer gateway is there")
        return
    found.notes.append(f"your config does not name its own address: the customer gateway is at "
                       f"{spec_ip} (the spec's customer_gateway.public_ip)")


def _public_id(conns: list[ic.CustomerConnection]) -> ipaddress.IPv4Address | None:
    """A real public address the config uses as its own ID (what a gateway behind NAT
    identifies as when its owner set leftid to the public address)."""
    for conn in conns:
        ip = _ipv4(conn.local_id)
        if ip is not None and ip.is_global and not is_documentation(ip):
            return ip
    return None


def _behind_nat(found: ConfigAddresses, spec: LabSpec, conn: ic.CustomerConnection,
                ip: ipaddress.IPv4Address, said: str) -> None:
    t = spec.tunnels[found.tunnel]
    # the spec's own rule for behind_nat.private_ip, with the config's subnets carried too
    problems = private_wan_problems(
        spec, t, ip, (ts for child in conn.children for ts in map(ts_network, child.local_ts) if ts))
    if problems:
        raise LabError(f"{said} {ip} is private, so the lab puts your gateway behind a NAT router "
                       f"on its /24: {problems[0]} (a gateway whose one interface sits inside "
                       "its protected subnet is not modelled)")
    found.private_ip = str(ip)
    public = _public_id([conn])
    if public is not None:
        found.customer_ip = str(public)
    outside = public or t.customer_gateway.public_ip
    whose = "your config's ID" if public else "the spec's customer_gateway.public_ip"
    was = t.customer_gateway.behind_nat
    found.notes.append(
        f"your gateway's WAN address {ip} (from connection {conn.name}) is private: the lab puts "
        f"it behind a NAT router whose public address is {outside} ({whose}), the address the "
        "cloud sees"
        + (f"; it replaces the spec's behind_nat.private_ip {was.private_ip}"
           if was is not None and was.private_ip != ip else ""))


def _ipv4(value: str | None) -> ipaddress.IPv4Address | None:
    try:
        return ipaddress.IPv4Address((value or "").strip())
    except ValueError:
        return None
