"""The `docker` backend: each node is a container `ilab-<lab>-<node>` on a real Docker engine.

Same plan, same addresses, same interface names and the same checks as the `netns` backend;
only how the cables are made differs. Decisions (the issue's points a-d):

(a) Docker's host-side bridge. Docker IPAM reserves a gateway address per network and, by default,
    puts it on the bridge in the *root* namespace: it would take the plan's `.1` (the gateway's LAN
    address) and give the host an address and a route into every lab range. Every lab network is
    created with `com.docker.network.bridge.inhibit_ipv4=true` (libnetwork's bridge driver has it
    in 20.10: measured, the bridge gets no IPv4 address and the root namespace no route) and its
    IPAM gateway set to an address of the range the plan does not use (the highest free one), so
    it never collides with a node either. Masquerading is off on every lab network and dockerd is
    run with --iptables=false, so nothing in the root namespace's firewall or ip_forward changes.

(b) What Docker cannot express. Docker gives an endpoint one address with the network's prefix and
    names interfaces in connect order. After the containers start, the orchestrator enters each
    container's network namespace from the host (`/proc/<pid>/ns/net`, pyroute2) and applies the
    plan the way the netns backend does: interfaces are matched by the MAC address Docker reports
    per network and renamed to the plan's names (eth0 = WAN, eth1 = LAN), Docker's addresses and
    routes are replaced by the plan's (the /32 public addresses with host routes, the gateway's .1
    in the VPC range and in every traffic selector, the hosts' extra addresses), the sysctls are
    written (rp_filter 0 also per interface, IPv6 off), multicast is switched off on the internet
    side. Docker keeps the first plan address of each endpoint as its `ipv4_address`, so
    `docker inspect` and the compose file show the real addresses.

(c) The wire capture. A container on a shared Docker bridge does not see unicast between the
    others, and capturing on the host's bridge would run outside the lab. So the internet is not
    one Docker network: each gateway (or group of customer gateways whose public IPs share a /29)
    has its own uplink network `wan-<node>` that holds only that gateway and the `inet` container,
    and `inet` bridges its uplink ports in its own `br0`, exactly as in the netns backend (where
    `br0` in `inet` is the internet). Every IKE/ESP packet between the cloud gateway and a customer
    gateway therefore crosses `inet`'s `br0`, where `ipsec-lab check` captures it; Docker's host
    bridges only carry each frame between one gateway and `inet`. Compose builds the same networks;
    adopting the project (`adopt`, see `compose`) then applies (b) and the bridge. The cloud
    gateway's public IP must not share a /29 with a customer gateway's (traffic between them would
    bypass `inet`): refused with a clear error naming both fields.

(d) Several labs. Names (containers, networks) are prefixed `ilab-<lab>-`, everything carries the
    label `ipsec-lab.lab=<lab>`, and `down` finds what to remove by that label, never by state. One
    Docker engine cannot hold two networks with overlapping ranges (IPAM: "Pool overlaps"), so two
    docker labs need distinct public IPs, VPC and IDC ranges; `deploy` checks before creating
    anything and names the spec field and the network in the way (netns labs have no such limit).

The modules: `topology` (the plan as networks and containers), `wiring` ((b), from the host),
`compose` (the compose file's model, adopting a Compose project), `backend` (DockerBackend),
`engine` (finding or starting a Docker engine) and `image` (building the lab's image).
"""

from __future__ import annotations

from lab.backends.docker.backend import DockerBackend

__all__ = ["DockerBackend"]
