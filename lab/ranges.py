"""The address ranges the lab's simulated internet may use: the documentation ranges (RFC 5737),
so lab traffic can never be mistaken for, or routed to, a real network."""

from __future__ import annotations

import ipaddress

DOCUMENTATION = tuple(ipaddress.IPv4Network(n) for n in
                      ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24"))
DOCUMENTATION_TEXT = "192.0.2.0/24, 198.51.100.0/24 and 203.0.113.0/24"


# where a WAN address behind NAT lives: RFC 1918 and the carrier-grade NAT range (RFC 6598)
PRIVATE_WAN = tuple(ipaddress.IPv4Network(n) for n in ("10.0.0.0/8", "172.16.0.0/12",
                                                        "192.168.0.0/16", "100.64.0.0/10"))


def is_private_wan(address: ipaddress.IPv4Address) -> bool:
    return any(address in n for n in PRIVATE_WAN)


def is_documentation(address: ipaddress.IPv4Address | ipaddress.IPv4Network) -> bool:
    if isinstance(address, ipaddress.IPv4Network):
        return any(address.subnet_of(n) for n in DOCUMENTATION)
    return any(address in n for n in DOCUMENTATION)
