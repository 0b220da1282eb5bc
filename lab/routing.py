"""The cloud gateway's route table: SPD mappings' peers and destination routes.

On kernel-libipsec every CHILD_SA's traffic leaves through one TUN device (`ipsec0`), so each
routed destination goes there, and the CHILD_SA whose selectors match (the VPC against that
destination, see lab.plan) encrypts it towards the right peer; a destination no route leads to
is dropped at the gateway. libipsec also routes each installed CHILD_SA's remote selector over
the TUN device itself (table 220, whatever `install_routes` says), so these main-table entries
make the route table visible and carry traffic before a CHILD_SA exists (traffic-triggered);
what decides which tunnel carries a destination is the selectors derived from the route table.
libipsec cannot tell two tunnels with the same selectors apart (one TUN device, first policy
wins), which is why destination routes are narrowed to per-destination selectors instead of
0.0.0.0/0.

On the kernel dataplane a policy-based SA needs no route of the lab's: strongSwan's kernel-netlink puts
a source route per CHILD_SA into table 220 (the remote selector via the peer's public address,
with a source inside the local selector), so forwarded traffic reaches the XFRM policies, and
a destination no CHILD_SA covers has no route and is dropped at the gateway. Those routes name
the peer as next hop, which the kernel accepts only when the route to the peer has link scope
(lab.netlink.configure_node gives the /32 WAN routes that scope); traffic that matches
no policy never leaves in clear (configs/templates/gateway.nft.j2). Tested in the VM harness
(lab.vm). A destination-route tunnel is route-based there: one 0.0.0.0/0 CHILD_SA bound to an
XFRM interface (lab.plan._route_based), for which strongSwan installs no route (measured), so
its routed destinations are route-table entries over that interface, installed here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lab import netlink
from lab.errors import LabError

if TYPE_CHECKING:
    from lab.running import Lab


def install_route_tables(lab: Lab) -> int:
    """Add every gateway's route-table entries inside its namespace; returns how many."""
    added = 0
    for gw in lab.plan.gateways:
        if not gw.route_table:
            continue
        path = lab.backend.netns_path(lab.state, gw.node)
        with netlink.socket(path) as ipr:
            for route in gw.route_table:
                found = ipr.link_lookup(ifname=route.device)
                if not found:
                    raise LabError(f"{gw.node}: device {route.device} for the route to "
                                   f"{route.destination} does not exist")
                ipr.route("add", dst=str(route.destination), oif=found[0])
                added += 1
    return added
