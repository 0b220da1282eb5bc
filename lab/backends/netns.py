"""The `netns` backend: each node is a network namespace `ilab-<lab>-<node>`, built with pyroute2.

Nothing is created in the root namespace: veth pairs are made inside one node with their peer
placed straight into the other, and the simulated internet is a bridge inside the `inet` node.
Every process the lab starts lives in one of its namespaces, so `down` finds them all by
namespace (also after the orchestrator was killed) and never signals anything else.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pyroute2 import netns

from lab import forkserver, netlink, processes
from lab.backends.base import AGENT, Backend, Progress
from lab.errors import LabError
from lab.libreswan import pluto
from lab.plan import LabPlan, Node
from lab.state import LabState, NodeState, lab_dir
from lab.timing import patience

netlink.patient_pyroute2()  # netns.create below waits on a forked child too

CHARON = "/usr/sbin/charon-systemd"
PREFIX = "ilab-"
NETNS_DIR = "/run/netns"  # where `ip netns` and pyroute2 keep named namespaces


def ns_name(lab: str, node: str) -> str:
    return f"{PREFIX}{lab}-{node}"


def ns_path(ns: str) -> str:
    return f"{NETNS_DIR}/{ns}"


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
            self._run(ns, ["sh", "-c", netlink.sysctl_script(node)])
        progress(f"{len(plan.nodes)} namespaces created")
        for link in plan.links:
            with netlink.socket(ns_path(ns_name(plan.name, link.a_node))) as ipr:
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
        with netlink.socket(ns_path(ns_name(plan.name, node.name))) as ipr:
            netlink.configure_node(ipr, node)

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
        proc = netlink.popen(self.netns_path(state, node), [CHARON], env=env,
                             stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                             start_new_session=True)
        out.close()
        state.pids[f"charon:{node}"] = proc.pid
        state.save()

    def start_pluto(self, state: LabState, node: str) -> None:
        directory = self.host_dir(state.name, node)
        pluto.init_nss(directory)
        out = open(directory / "pluto.stdout", "w")  # noqa: SIM115 - handed to the child
        proc = netlink.popen(self.netns_path(state, node), pluto.argv(directory),
                             env=pluto.environment(),
                             stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                             start_new_session=True)
        out.close()
        state.pids[f"pluto:{node}"] = proc.pid
        state.save()

    def _run(self, ns: str, argv: list[str], timeout: float = patience(30.0)) -> subprocess.CompletedProcess:
        return netlink.run_checked(ns_path(ns), argv, timeout, where=ns)

    def exec(self, state: LabState, node: str, argv: list[str],
             timeout: float = patience(30.0)) -> subprocess.CompletedProcess[str]:
        return netlink.run(self.netns_path(state, node), argv, timeout)

    def spawn(self, state: LabState, node: str, argv: list[str]) -> subprocess.Popen[str]:
        return netlink.popen(self.netns_path(state, node), argv, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def agent(self) -> list[str]:
        return [sys.executable, str(AGENT)]

    def spawn_agent(self, state: LabState, node: str, args: list[str]) -> forkserver.ForkedAgent:
        """Forked from a server that imported scapy once (lab.forkserver), not a new Python."""
        return forkserver.spawn(self.netns_path(state, node), args)

    def netns_path(self, state: LabState, node: str) -> str:
        return ns_path(state.nodes[node].handle)

    # -- tearing down ----------------------------------------------------------------------
    def _namespaces(self, name: str) -> list[str]:
        return sorted(ns for ns in netns.listnetns() if ns.startswith(f"{PREFIX}{name}-"))

    def undeploy(self, name: str, progress: Progress) -> list[str]:
        done: list[str] = []
        spaces = self._namespaces(name)
        if spaces:
            stopped = processes.stop(netlink.pids_in(ns_path(ns) for ns in spaces))
            if stopped:
                done.append(f"stopped {stopped} process(es) inside the lab's namespaces")
            for ns in spaces:
                netns.remove(ns)
            done.append(f"removed {len(spaces)} namespaces")
            progress(done[-1])
        return done

    def leftovers(self, name: str) -> list[str]:
        return [f"namespace {ns}" for ns in self._namespaces(name)]

    def lab_names(self) -> set[str]:
        return {ns[len(PREFIX):].rsplit("-", 1)[0] for ns in netns.listnetns()
                if ns.startswith(PREFIX) and not ns.startswith(f"{PREFIX}probe-")}

