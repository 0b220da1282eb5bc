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
    `adopt_compose` then applies (b) and the bridge. The cloud gateway's public IP must not share a
    /29 with a customer gateway's (traffic between them would bypass `inet`): refused with a clear
    error naming both fields.

(d) Several labs. Names (containers, networks) are prefixed `ilab-<lab>-`, everything carries the
    label `ipsec-lab.lab=<lab>`, and `down` finds what to remove by that label, never by state. One
    Docker engine cannot hold two networks with overlapping ranges (IPAM: "Pool overlaps"), so two
    docker labs need distinct public IPs, VPC and IDC ranges; `deploy` checks before creating
    anything and names the spec field and the network in the way (netns labs have no such limit).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shlex
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
from pyroute2 import IPRoute, netns

from lab import image as labimage
from lab.backends import AGENT, Backend, Progress
from lab.backends.netns import _stop, _sysctls, configure_node
from lab.errors import LabError
from lab.plan import LAN, WAN, LabPlan, Node
from lab.state import LabState, NodeState, lab_dir

CHARON = "/usr/sbin/charon-systemd"
PREFIX = "ilab-"
LABEL = "ipsec-lab.lab"
NODE_LABEL = "ipsec-lab.node"
ROLE_LABEL = "ipsec-lab.role"
COMPOSE_PROJECT = "com.docker.compose.project"
COMPOSE_SERVICE = "com.docker.compose.service"
AGENT_IN_CONTAINER = "/opt/ipsec-lab/agent.py"
PYTHON_IN_CONTAINER = "/usr/bin/python3"
GATEWAY_ROLES = ("vpn-gateway", "customer-gateway")
WAN_BLOCK = 29  # a gateway's uplink network: its public IP's /29 (IP, IPAM gateway, inet's port)
NETWORK_OPTIONS = {
    "com.docker.network.bridge.enable_ip_masquerade": "false",
    "com.docker.network.bridge.inhibit_ipv4": "true",
}
START_PID_TIMEOUT = 5.0
# lab.engine's clients time out after 2 s (a ping); starting or removing containers on a busy
# engine takes longer, so the backend talks to the engine through its own client.
API_TIMEOUT = 120


def container_name(lab: str, node: str) -> str:
    return f"{PREFIX}{lab}-{node}"


# -- the plan as Docker networks ----------------------------------------------------------------
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
    return f"tunnels[{int(node[3:]) - 1}].customer_gateway.public_ip"


def _lan_field(host: str, idc_from_spec: dict[str, bool]) -> str:
    if host == "vpc":
        return "vpn_gateway.vpc_cidr"
    i = int(host[3:]) - 1
    if idc_from_spec.get(host, True):
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


def segments(plan: LabPlan, idc_from_spec: dict[str, bool] | None = None) -> list[Segment]:
    """The Docker networks for a plan, deterministic (the compose file is this, written out)."""
    idc_from_spec = idc_from_spec or {}
    nodes = {n.name: n for n in plan.nodes}
    inet = plan.internet_node
    port_of = {ln.a_node: ln.b_iface for ln in plan.links if ln.b_node == inet}
    gateways = [n for n in plan.nodes if n.role in GATEWAY_ROLES]
    public = {n.name: n.iface(WAN).addresses[0].ip for n in gateways}
    blocks: dict[ipaddress.IPv4Network, list[str]] = {}
    for n in gateways:
        block = ipaddress.IPv4Network(f"{public[n.name]}/{WAN_BLOCK}", strict=False)
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
    switched: dict[str, list] = {}
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
        fld = _lan_field(host.name, idc_from_spec)
        extra = 0 if host_addrs else 1
        free = _free(subnet, used, 1 + extra, fld)
        seg = Segment(f"lan-{host.name}", subnet, free[0], [fld])
        seg.members[gw.name] = (ln.a_iface, first.ip)
        seg.members[host.name] = (ln.b_iface, host_addrs[0] if host_addrs else free[1])
        out.append(seg)
    for switch, lns in switched.items():
        out.append(_switched_segment(nodes, switch, lns, idc_from_spec))
    _check_internal_overlaps(out)
    return out


def _switched_segment(nodes: dict[str, Node], switch: str, lns: list,
                      idc_from_spec: dict[str, bool]) -> Segment:
    """Several gateways and one host on one LAN (primary/secondary): one Docker network."""
    members = [nodes[ln.a_node] for ln in lns]
    gws = [m for m in members if m.role in GATEWAY_ROLES]
    host = next(m for m in members if m.role not in GATEWAY_ROLES)
    subnet = gws[0].iface(LAN).addresses[0].network
    addrs = {m.name: [a.ip for a in m.iface(next(ln.a_iface for ln in lns if ln.a_node == m.name))
                      .addresses if a.ip in subnet] for m in members}
    used = {ip for ips in addrs.values() for ip in ips}
    fld = _lan_field(host.name, idc_from_spec)
    seg = Segment(f"lan-{switch}", subnet, _free(subnet, used, 1, fld)[0], [fld])
    for ln in lns:
        seg.members[ln.a_node] = (ln.a_iface, addrs[ln.a_node][0])
    return seg


def containers(plan: LabPlan) -> list[Node]:
    """Nodes that are containers (a plan's switches are Docker networks, not containers)."""
    return [n for n in plan.nodes if n.role != "switch"]


def _check_internal_overlaps(segs: list[Segment]) -> None:
    for i, a in enumerate(segs):
        for b in segs[i + 1:]:
            if a.subnet.overlaps(b.subnet):
                raise LabError(
                    f"{a.fields[0]} ({a.subnet}) overlaps {b.fields[0]} ({b.subnet}): the docker "
                    "backend makes each a Docker network and Docker refuses overlapping ranges; "
                    "use --backend netns for this lab")


# -- containers -------------------------------------------------------------------------------
def container_sysctls(node: Node) -> dict[str, str]:
    return {
        "net.ipv4.ip_forward": "1" if node.forwarding else "0",
        "net.ipv4.conf.all.rp_filter": "0",
        "net.ipv4.conf.default.rp_filter": "0",
        "net.ipv6.conf.all.disable_ipv6": "1",
        "net.ipv6.conf.default.disable_ipv6": "1",
    }


def labels(lab: str, node: Node) -> dict[str, str]:
    return {LABEL: lab, NODE_LABEL: node.name, ROLE_LABEL: node.role}


@dataclass
class _Running:
    name: str
    pid: int
    macs: dict[str, str]  # docker network name -> MAC of the container's endpoint


class DockerBackend(Backend):
    name = "docker"

    def __init__(self, client: docker.DockerClient | None = None):
        self._client_obj = client
        self._pids: dict[str, int] = {}

    @property
    def client(self) -> docker.DockerClient:
        if self._client_obj is None:
            from lab.engine import ensure_engine

            ensure_engine().close()
            self._client_obj = docker.from_env(timeout=API_TIMEOUT)
        return self._client_obj

    # -- building -------------------------------------------------------------------------
    def deploy(self, plan: LabPlan, state: LabState, progress: Progress) -> None:
        tag = labimage.build_image(self.client, "auto", progress)
        segs = segments(plan, _idc_from_spec(state))
        self._check_free(plan.name, segs)
        if self.leftovers(plan.name):
            raise LabError(f"containers or networks of lab {plan.name} already exist: run "
                           f"`ipsec-lab down --name {plan.name}` first")
        for node in containers(plan):
            state.nodes[node.name] = NodeState(node.role, container_name(plan.name, node.name))
        for node in plan.nodes:
            if node.role == "switch":
                state.nodes[node.name] = NodeState(node.role, f"{PREFIX}{plan.name}-lan-{node.name}")
        state.save()  # before creating: `down` finds everything by label anyway
        for seg in segs:
            self._create_network(plan.name, seg)
        progress(f"{len(segs)} networks created (no masquerading, no host address)")
        nodes = containers(plan)
        with ThreadPoolExecutor(max_workers=len(nodes)) as pool:
            running = list(pool.map(lambda n: self._create_container(plan, n, segs, tag), nodes))
        progress(f"{len(nodes)} containers started from {tag}")
        configure(plan, segs, {r.name: r for r in running})
        for node in containers(plan):
            state.nodes[node.name].addresses = {
                i.name: [str(a) for a in i.addresses] for i in node.interfaces if i.addresses
            }
        state.save()
        progress("interfaces renamed, addresses, routes and the internet bridge set")

    def _check_free(self, lab: str, segs: list[Segment]) -> None:
        """Docker refuses overlapping ranges; say which spec field collides with what."""
        taken = []
        for net in self.client.networks.list():
            owner = (net.attrs.get("Labels") or {}).get(LABEL)
            if owner == lab:
                continue
            for cfg in (net.attrs.get("IPAM") or {}).get("Config") or []:
                with contextlib.suppress(ValueError):
                    taken.append((ipaddress.IPv4Network(cfg.get("Subnet", ""), strict=False),
                                  net.name, owner))
        for seg in segs:  # in plan order: the first field named is the first that collides
            for theirs, net_name, owner in taken:
                if seg.subnet.overlaps(theirs):
                    whose = f"lab {owner}'s network" if owner else "Docker network"
                    raise LabError(
                        f"{' / '.join(seg.fields)}: {seg.subnet} overlaps {whose} {net_name} "
                        f"({theirs}); one Docker engine cannot hold overlapping ranges, so two "
                        "docker labs need different public IPs and LAN ranges: change the spec, "
                        "take that lab down, or use --backend netns")

    def _create_network(self, lab: str, seg: Segment) -> None:
        pool = docker.types.IPAMPool(subnet=str(seg.subnet), gateway=str(seg.gateway))
        try:
            self.client.networks.create(
                seg.network_name(lab), driver="bridge", options=NETWORK_OPTIONS,
                ipam=docker.types.IPAMConfig(pool_configs=[pool]), labels={LABEL: lab},
                check_duplicate=True)
        except docker.errors.APIError as exc:
            if "overlap" in str(exc).lower():
                raise LabError(f"{' / '.join(seg.fields)}: {seg.subnet} overlaps a Docker network "
                               f"created meanwhile ({exc.explanation})") from None
            raise

    def _create_container(self, plan: LabPlan, node: Node, segs: list[Segment],
                          tag: str) -> _Running:
        api = self.client.api
        name = container_name(plan.name, node.name)
        mine = [s for s in segs if node.name in s.members]
        binds = {str(AGENT): {"bind": AGENT_IN_CONTAINER, "mode": "ro"}}
        devices = []
        if node.role in GATEWAY_ROLES:
            directory = self.host_dir(plan.name, node.name)
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            binds[str(directory)] = {"bind": str(directory), "mode": "rw"}
            devices = ["/dev/net/tun:/dev/net/tun:rwm"]
        host_config = api.create_host_config(
            binds=binds, cap_add=["NET_ADMIN", "NET_RAW"], devices=devices,
            sysctls=container_sysctls(node), init=True, privileged=False,
            network_mode=mine[0].network_name(plan.name))
        first = mine[0]
        networking = api.create_networking_config({first.network_name(plan.name):
            api.create_endpoint_config(ipv4_address=str(first.members[node.name][1]))})
        created = api.create_container(
            tag, name=name, hostname=node.name, labels=labels(plan.name, node),
            host_config=host_config, networking_config=networking, detach=True)
        for seg in mine[1:]:
            api.connect_container_to_network(created["Id"], seg.network_name(plan.name),
                                             ipv4_address=str(seg.members[node.name][1]))
        api.start(created["Id"])
        return _inspect(api, name)

    # -- processes -----------------------------------------------------------------------
    def run_dir(self, lab: str, node: str) -> str:
        return str(self.host_dir(lab, node))  # bind-mounted at the same path

    def host_dir(self, lab: str, node: str) -> Path:
        return lab_dir(lab) / node

    def start_daemon(self, state: LabState, node: str) -> None:
        directory = self.run_dir(state.name, node)
        api = self.client.api
        command = (f"exec {CHARON} >{shlex.quote(directory)}/charon.stdout 2>&1 </dev/null")
        created = api.exec_create(state.nodes[node].handle, ["sh", "-c", command],
                                  environment={"STRONGSWAN_CONF": f"{directory}/strongswan.conf"})
        api.exec_start(created["Id"], detach=True)
        deadline = time.monotonic() + START_PID_TIMEOUT
        pid = 0
        while time.monotonic() < deadline:
            info = api.exec_inspect(created["Id"])
            pid = info.get("Pid") or 0
            if pid or not info.get("Running", True):
                break
            time.sleep(0.02)
        if not pid:
            raise LabError(f"charon did not start in {state.nodes[node].handle}: see "
                           f"{directory}/charon.stdout")
        state.pids[f"charon:{node}"] = pid  # the host PID (lifecycle watches it in /proc)
        state.save()

    def exec(self, state: LabState, node: str, argv: list[str],
             timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        container = self.client.containers.get(state.nodes[node].handle)
        result: dict[str, Any] = {}

        def run() -> None:
            result["r"] = container.exec_run(argv, demux=True)

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        worker.join(timeout)
        if worker.is_alive():
            raise subprocess.TimeoutExpired(argv, timeout)
        code, (out, err) = result["r"]
        return subprocess.CompletedProcess(argv, code, (out or b"").decode(errors="replace"),
                                           (err or b"").decode(errors="replace"))

    def spawn(self, state: LabState, node: str, argv: list[str]) -> subprocess.Popen[str]:
        # The docker CLI keeps stdout and stderr apart and passes stdin's EOF on, which is how the
        # orchestrator stops a capture; the process runs in the container with its caps.
        return subprocess.Popen(["docker", "exec", "-i", state.nodes[node].handle, *argv],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def agent(self) -> list[str]:
        return [PYTHON_IN_CONTAINER, AGENT_IN_CONTAINER]

    def netns_path(self, state: LabState, node: str) -> str:
        handle = state.nodes[node].handle
        if handle not in self._pids:
            self._pids[handle] = self.client.api.inspect_container(handle)["State"]["Pid"]
        return f"/proc/{self._pids[handle]}/ns/net"

    # -- tearing down ----------------------------------------------------------------------
    def _engine(self) -> docker.DockerClient | None:
        if self._client_obj is None:
            from lab.engine import engine_client

            probe = engine_client()  # a short ping: no engine means nothing to find
            if probe is None:
                return None
            probe.close()
            self._client_obj = docker.from_env(timeout=API_TIMEOUT)
        return self._client_obj

    def _containers(self, name: str) -> list[Any]:
        client = self._engine()
        if client is None:
            return []
        return client.containers.list(all=True, filters={"label": f"{LABEL}={name}"})

    def undeploy(self, name: str, progress: Progress) -> list[str]:
        client = self._engine()
        if client is None:
            return []
        done: list[str] = []
        containers = self._containers(name)
        # Host-side helpers that entered a container's namespace (the traffic trigger) keep it
        # alive after the container is gone: stop every process in the lab's namespaces first.
        inodes = set()
        for c in containers:
            pid = c.attrs.get("State", {}).get("Pid") or 0
            with contextlib.suppress(OSError):
                if pid:
                    inodes.add(os.stat(f"/proc/{pid}/ns/net").st_ino)
        if inodes:
            stopped = _stop(_host_pids_in(inodes, exclude=_container_pids(containers)))
            if stopped:
                done.append(f"stopped {stopped} host process(es) inside the lab's containers")
        if containers:
            with ThreadPoolExecutor(max_workers=len(containers)) as pool:
                list(pool.map(lambda c: _remove_container(c), containers))
            done.append(f"removed {len(containers)} containers")
            progress(done[-1])
        networks = client.networks.list(filters={"label": f"{LABEL}={name}"})
        for net in networks:
            with contextlib.suppress(docker.errors.NotFound):
                net.remove()
        if networks:
            done.append(f"removed {len(networks)} networks")
            progress(done[-1])
        volumes = client.volumes.list(filters={"label": f"{LABEL}={name}"})
        for vol in volumes:
            with contextlib.suppress(docker.errors.NotFound):
                vol.remove(force=True)
        if volumes:
            done.append(f"removed {len(volumes)} volumes")
        self._pids.clear()
        return done

    def leftovers(self, name: str) -> list[str]:
        client = self._engine()
        if client is None:
            return []
        flt = {"label": f"{LABEL}={name}"}
        return ([f"container {c.name}" for c in client.containers.list(all=True, filters=flt)]
                + [f"network {n.name}" for n in client.networks.list(filters=flt)]
                + [f"volume {v.name}" for v in client.volumes.list(filters=flt)])


def _idc_from_spec(state: LabState) -> dict[str, bool]:
    """Whether each IDC LAN comes from `idc_cidrs` (else from the peer ranges): for messages."""
    try:
        from lab.spec import load_spec

        spec = load_spec(state.spec_file)
    except (LabError, OSError):
        return {}
    return {f"idc{i}": bool(t.customer_gateway.idc_cidrs) for i, t in enumerate(spec.tunnels, 1)}


def _inspect(api: Any, name: str) -> _Running:
    attrs = api.inspect_container(name)
    networks = attrs["NetworkSettings"]["Networks"]
    return _Running(name, attrs["State"]["Pid"],
                    {net: info["MacAddress"] for net, info in networks.items()})


def _remove_container(container: Any) -> None:
    with contextlib.suppress(docker.errors.NotFound):
        container.remove(force=True, v=True)


def _container_pids(containers: list[Any]) -> set[int]:
    """Processes that belong to the containers (Docker ends those itself)."""
    pids: set[int] = set()
    for c in containers:
        cid = c.id
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                if cid in (entry / "cgroup").read_text():
                    pids.add(int(entry.name))
    return pids


def _host_pids_in(inodes: set[int], exclude: set[int]) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in exclude:
            continue
        with contextlib.suppress(OSError):
            if os.stat(entry / "ns" / "net").st_ino in inodes:
                found.append(int(entry.name))
    return found


# -- applying the plan inside the containers ---------------------------------------------------------
def configure(plan: LabPlan, segs: list[Segment], running: dict[str, _Running]) -> None:
    """(b): from the host, in each container's namespace: names, addresses, routes, bridge."""
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
        _run_in(path, ["sh", "-c", _sysctls(node)
                       + "; for f in /proc/sys/net/ipv4/conf/*/rp_filter; do echo 0 > $f; done"])


def _run_in(path: str, argv: list[str]) -> None:
    def enter() -> None:
        netns.setns(path, flags=0)

    result = subprocess.run(argv, preexec_fn=enter, capture_output=True, text=True, timeout=30,
                            check=False)
    if result.returncode != 0:
        raise LabError(f"{' '.join(argv)} failed in {path}: {result.stderr.strip()}")


def _configure_netns(path: str, node: Node, wanted: dict[str, str]) -> None:
    """Same result as NetnsBackend._configure, starting from what Docker made."""
    with IPRoute(netns=path, flags=0) as ipr:
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
        configure_node(ipr, node)


# -- Compose: adopt containers that docker-compose made ------------------------------------------------
def adopt_compose(name: str, spec_path: str | Path, progress: Progress = lambda _: None):
    """Make a `docker-compose -p <name> up -d` lab a running ipsec-lab lab named `name`.

    Finds the containers by compose labels (project = `name`, service = node), checks that their
    networks and addresses are the plan's, writes the lab state, applies (b) and the internet
    bridge, renders the configs, starts the daemons and loads/initiates the tunnels, exactly as
    `up` does after `deploy`. Returns the `Lab`. `ipsec-lab down --name <name>` removes it (by
    label), or `docker-compose down` then `ipsec-lab down` (which then only forgets the state).
    """
    import yaml

    from lab import state as labstate
    from lab.dataplane import detect
    from lab.lifecycle import Lab, start_daemons
    from lab.negotiation import establish
    from lab.plan import build_plan, check_lab_name
    from lab.spec import dump_spec, load_spec

    check_lab_name(name)
    spec = load_spec(spec_path)
    dataplane = detect()
    plan = build_plan(spec, name, dataplane)
    backend = DockerBackend()
    client = backend.client
    found = {c.labels.get(COMPOSE_SERVICE): c for c in client.containers.list(
        all=True, filters={"label": f"{COMPOSE_PROJECT}={name}"})}
    missing = [n.name for n in containers(plan) if n.name not in found]
    if missing:
        raise LabError(f"compose project {name!r} has no service(s) {', '.join(missing)} "
                       "(run `docker-compose -p NAME up -d` with compose/docker-compose.yml)")
    stopped = [n for n, c in found.items() if c.status != "running"]
    if stopped:
        raise LabError(f"compose project {name!r}: {', '.join(sorted(stopped))} not running")
    idc = {f"idc{i}": bool(t.customer_gateway.idc_cidrs) for i, t in enumerate(spec.tunnels, 1)}
    segs = segments(plan, idc)
    running = {}
    for node in containers(plan):
        c = found[node.name]
        if c.name != container_name(name, node.name) or c.labels.get(LABEL) != name:
            raise LabError(f"compose service {node.name}: container {c.name} must be named "
                           f"{container_name(name, node.name)} and labelled {LABEL}={name} "
                           "(export COMPOSE_PROJECT_NAME=NAME before docker-compose up)")
        networks = c.attrs["NetworkSettings"]["Networks"]
        for seg in segs:
            if node.name not in seg.members:
                continue
            net = networks.get(seg.network_name(name))
            want = str(seg.members[node.name][1])
            if net is None or net.get("IPAddress") != want:
                raise LabError(f"compose service {node.name}: expected on network "
                               f"{seg.network_name(name)} with {want} (the plan for {spec_path});"
                               f" got {net.get('IPAddress') if net else 'not connected'}")
        running[c.name] = _inspect(client.api, c.name)
    state = labstate.create(name, "docker", yaml.safe_dump(dump_spec(spec), sort_keys=False))
    state.backend_reason = f"adopted from docker-compose project {name}"
    state.dataplane, state.dataplane_reason = dataplane.name, dataplane.reason
    for node in containers(plan):
        state.nodes[node.name] = NodeState(node.role, container_name(name, node.name))
    state.save()
    lab = Lab(state, plan, spec, backend)
    try:
        configure(plan, segs, running)
        for node in containers(plan):
            state.nodes[node.name].addresses = {
                i.name: [str(a) for a in i.addresses] for i in node.interfaces if i.addresses}
        state.save()
        progress(f"adopted {len(containers(plan))} compose containers; interfaces and bridge set")
        start_daemons(lab, progress)
        establish(lab, progress)
        state.phase = "up"
        state.save()
        return lab
    except BaseException:
        _stop([p for p in state.pids.values() if p])
        labstate.forget(name)
        raise


def compose_model(plan: LabPlan) -> dict[str, Any]:
    """What compose/docker-compose.yml must say for `plan` (used by the parity test)."""
    segs = segments(plan)
    return {
        "networks": {s.key: {"subnet": str(s.subnet), "gateway": str(s.gateway)} for s in segs},
        "services": {
            n.name: {s.key: str(s.members[n.name][1]) for s in segs if n.name in s.members}
            for n in containers(plan)
        },
    }

