"""The `netns` backend: each node is a network namespace `ilab-<lab>-<node>`, built with pyroute2.

Nothing is created in the root namespace: veth pairs are made inside one node with their peer
placed straight into the other, and the simulated internet is a bridge inside the `inet` node.
Every process the lab starts lives in one of its namespaces, so `down` finds them all by
namespace (also after the orchestrator was killed) and never signals anything else.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from pyroute2 import NetNS, netns

from lab import forkserver
from lab.backends import AGENT, Backend, Progress
from lab.errors import LabError
from lab.plan import WAN, LabPlan, Node
from lab.state import LabState, NodeState, lab_dir
from lab.timing import patience

CHARON = "/usr/sbin/charon-systemd"
PREFIX = "ilab-"


def ns_name(lab: str, node: str) -> str:
    return f"{PREFIX}{lab}-{node}"


def _enter(ns: str):
    def enter() -> None:
        netns.setns(ns, flags=0)  # never create: a missing namespace is an error

    return enter


def _sysctls(node: Node) -> str:
    """Shell lines run inside the namespace: /proc/sys/net is per namespace."""
    lines = [
        "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6",
        "echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6",
        "echo 0 > /proc/sys/net/ipv4/conf/all/rp_filter",
        "echo 0 > /proc/sys/net/ipv4/conf/default/rp_filter",
        f"echo {1 if node.forwarding else 0} > /proc/sys/net/ipv4/ip_forward",
    ]
    return "; ".join(lines)


class NetnsBackend(Backend):
    name = "netns"

    # -- building -------------------------------------------------------------------------
    def deploy(self, plan: LabPlan, state: LabState, progress: Progress) -> None:
        existing = set(netns.listnetns())
        for node in plan.nodes:
            ns = ns_name(plan.name, node.name)
            if ns in existing:
                raise LabError(f"namespace {ns} already exists: run `ipsec-lab down --name "
                               f"{plan.name}` first")
            state.nodes[node.name] = NodeState(node.role, ns)
            state.save()  # before creating, so a failure half-way can be undone
            netns.create(ns)
            self._run(ns, ["sh", "-c", _sysctls(node)])
        progress(f"{len(plan.nodes)} namespaces created")
        for link in plan.links:
            with NetNS(ns_name(plan.name, link.a_node)) as ipr:
                ipr.link("add", ifname=link.a_iface, kind="veth",
                         peer={"ifname": link.b_iface,
                               "net_ns_fd": ns_name(plan.name, link.b_node)})
        for node in plan.nodes:
            self._configure(plan, node)
            state.nodes[node.name].addresses = {
                i.name: [str(a) for a in i.addresses] for i in node.interfaces if i.addresses
            }
        state.save()
        progress(f"{len(plan.links)} links cabled, addresses and routes set")

    def _configure(self, plan: LabPlan, node: Node) -> None:
        with NetNS(ns_name(plan.name, node.name)) as ipr:
            configure_node(ipr, node)

    # -- processes -----------------------------------------------------------------------
    def run_dir(self, lab: str, node: str) -> str:
        return str(self.host_dir(lab, node))

    def host_dir(self, lab: str, node: str) -> Path:
        return lab_dir(lab) / node

    def start_daemon(self, state: LabState, node: str) -> None:
        directory = self.host_dir(state.name, node)
        out = open(directory / "charon.stdout", "w")  # noqa: SIM115 - handed to the child
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
               "STRONGSWAN_CONF": str(directory / "strongswan.conf")}
        proc = subprocess.Popen(
            [CHARON], env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            preexec_fn=_enter(state.nodes[node].handle), start_new_session=True,
        )
        out.close()
        state.pids[f"charon:{node}"] = proc.pid
        state.save()

    def _run(self, ns: str, argv: list[str], timeout: float = patience(30.0)) -> subprocess.CompletedProcess:
        result = subprocess.run(argv, preexec_fn=_enter(ns), capture_output=True, text=True,
                                timeout=timeout, check=False)
        if result.returncode != 0:
            raise LabError(f"{' '.join(argv)} failed in {ns}: {result.stderr.strip()}")
        return result

    def exec(self, state: LabState, node: str, argv: list[str],
             timeout: float = patience(30.0)) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, preexec_fn=_enter(state.nodes[node].handle),
                              capture_output=True, text=True, timeout=timeout, check=False)

    def spawn(self, state: LabState, node: str, argv: list[str]) -> subprocess.Popen[str]:
        return subprocess.Popen(argv, preexec_fn=_enter(state.nodes[node].handle),
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def agent(self) -> list[str]:
        return [sys.executable, str(AGENT)]

    def spawn_agent(self, state: LabState, node: str, args: list[str]):  # type: ignore[override]
        """Forked from a server that imported scapy once (lab.forkserver), not a new Python."""
        return forkserver.spawn(self.netns_path(state, node), args)

    def netns_path(self, state: LabState, node: str) -> str:
        return f"/run/netns/{state.nodes[node].handle}"

    # -- tearing down ----------------------------------------------------------------------
    def _namespaces(self, name: str) -> list[str]:
        return sorted(ns for ns in netns.listnetns() if ns.startswith(f"{PREFIX}{name}-"))

    def undeploy(self, name: str, progress: Progress) -> list[str]:
        done: list[str] = []
        spaces = self._namespaces(name)
        if spaces:
            pids = netns.ns_pids()
            ours = [pid for ns in spaces for pid in pids.get(ns, [])]
            stopped = _stop(ours)
            if stopped:
                done.append(f"stopped {stopped} process(es) inside the lab's namespaces")
            for ns in spaces:
                netns.remove(ns)
            done.append(f"removed {len(spaces)} namespaces")
            progress(done[-1])
        return done

    def leftovers(self, name: str) -> list[str]:
        return [f"namespace {ns}" for ns in self._namespaces(name)]


IFF_MULTICAST = 0x1000


def configure_node(ipr, node: Node) -> None:
    """Addresses, bridge, links up and routes of one node, inside its network namespace.

    Shared by both backends (docker runs it after renaming docker's interfaces to the plan's).
    The internet bridge is created with neither multicast nor snooping: a bridge that comes up
    with either joins groups and repeats IGMPv3 reports for seconds, which the wire check would
    count as non-IKE traffic.
    """
    ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
    bridge = None
    if node.bridge:
        ipr.link("add", ifname=node.bridge, kind="bridge", br_mcast_snooping=0)
        bridge = ipr.link_lookup(ifname=node.bridge)[0]
        _no_multicast(ipr, bridge)
    for iface in node.interfaces:
        found = ipr.link_lookup(ifname=iface.name)
        if not found:
            continue  # docker: an inet port of a gateway sharing its uplink network with another
        index = found[0]
        for addr in iface.addresses:
            ipr.addr("add", index=index, address=str(addr.ip), prefixlen=addr.network.prefixlen)
        if bridge is not None:
            ipr.link("set", index=index, master=bridge)
        if iface.name == WAN or bridge is not None:
            _no_multicast(ipr, index)
        ipr.link("set", index=index, state="up")
    if bridge is not None:
        ipr.link("set", index=bridge, state="up")
    for route in node.routes:
        spec: dict = {"dst": str(route.destination)}
        if route.via:
            spec["gateway"] = str(route.via)
        if route.device:
            spec["oif"] = ipr.link_lookup(ifname=route.device)[0]
            if not route.via:
                # link scope, as `ip route add ... dev` gives it: a gateway reached over such a
                # route is then a valid next hop, which the kernel dataplane's source routes
                # (strongSwan's table 220: peer subnet via the peer) need
                spec["scope"] = 253
        ipr.route("add", **spec)


def _no_multicast(ipr: NetNS, index: int) -> None:
    """No IGMP reports on the internet segment: the wire check expects IKE and ESP only."""
    ipr.link("set", index=index, flags=0, change=IFF_MULTICAST)


def _stop(pids: list[int], grace: float = 5.0) -> int:
    """SIGTERM, then SIGKILL what is left after `grace` seconds; returns how many existed."""
    alive = []
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
            alive.append(pid)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if _exists(p)]
        if alive:
            time.sleep(0.05)
    for pid in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return len(pids)


def _exists(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie whose parent is not us still counts as gone
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False
