"""The docker backend's `Backend`: networks and containers on a Docker engine, from the plan.

What each piece decides is in the package's docstring (lab.backends.docker); the networks come
from lab.backends.docker.topology, the configuration inside the containers from ...wiring.
"""

from __future__ import annotations

import contextlib
import ipaddress
import shlex
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests

from lab import netlink, processes
from lab.backends.base import AGENT, Backend, Progress
from lab.backends.docker.compose import project_containers
from lab.backends.docker.engine import engine_client, ensure_engine
from lab.backends.docker.image import build_image
from lab.backends.docker.topology import (
    GATEWAY_ROLES,
    LABEL,
    NETWORK_OPTIONS,
    PREFIX,
    Segment,
    container_name,
    containers,
    labels,
    segments,
)
from lab.backends.docker.wiring import Running, configure, inspect
from lab.errors import LabError
from lab.plan import LabPlan, Node
from lab.state import LabState, NodeState, lab_dir

CHARON = "/usr/sbin/charon-systemd"
AGENT_IN_CONTAINER = "/opt/ipsec-lab/agent.py"
PYTHON_IN_CONTAINER = "/usr/bin/python3"
START_PID_TIMEOUT = 5.0
# The engine module's clients time out after 2 s (a ping); starting or removing containers on a busy
# engine takes longer, so the backend talks to the engine through its own client.
API_TIMEOUT = 120


class DockerBackend(Backend):
    name = "docker"

    def __init__(self, client: docker.DockerClient | None = None):
        self._client_obj = client
        self._pids: dict[str, int] = {}

    @property
    def client(self) -> docker.DockerClient:
        if self._client_obj is None:
            ensure_engine().close()
            self._client_obj = docker.from_env(timeout=API_TIMEOUT)
        return self._client_obj

    # -- building -------------------------------------------------------------------------
    def deploy(self, plan: LabPlan, state: LabState, progress: Progress) -> None:
        tag = build_image(self.client, "auto", progress)
        segs = segments(plan)
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
        _record_addresses(plan, state)
        progress("interfaces renamed, addresses, routes and the internet bridge set")

    def adopt(self, plan: LabPlan, state: LabState, progress: Progress) -> None:
        """The Compose project named like the lab (compose/docker-compose.yml): its containers
        are checked to be the plan's, recorded, and configured as after `deploy`."""
        segs = segments(plan)
        running = project_containers(self.client, plan, segs)
        for node in containers(plan):
            state.nodes[node.name] = NodeState(node.role, container_name(plan.name, node.name))
        state.save()
        configure(plan, segs, running)
        _record_addresses(plan, state)
        progress(f"adopted {len(containers(plan))} compose containers; interfaces and bridge set")

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
                          tag: str) -> Running:
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
            sysctls=netlink.sysctls(node), init=True, privileged=False,
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
        return inspect(api, name)

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
        spaces = [f"/proc/{pid}/ns/net" for c in containers
                  if (pid := c.attrs.get("State", {}).get("Pid") or 0)]
        if spaces:
            stopped = processes.stop(netlink.pids_in(spaces, exclude=_container_pids(containers)))
            if stopped:
                done.append(f"stopped {stopped} host process(es) inside the lab's containers")
        failed: list[str] = []
        if containers:
            with ThreadPoolExecutor(max_workers=len(containers)) as pool:
                failed += [f for f in pool.map(_remove_container, containers) if f]
            done.append(f"removed {len(containers) - len(failed)} containers")
            progress(done[-1])
        networks = client.networks.list(filters={"label": f"{LABEL}={name}"})
        failed += [f for f in map(_remove_network, networks) if f]
        if networks:
            done.append(f"removed {len(networks)} networks")
            progress(done[-1])
        volumes = client.volumes.list(filters={"label": f"{LABEL}={name}"})
        failed += [f for f in map(_remove_volume, volumes) if f]
        if volumes:
            done.append(f"removed {len(volumes)} volumes")
        self._pids.clear()
        if failed:  # all was tried; what the engine refused is named, and `down` can run again
            raise LabError(f"lab {name!r}: the Docker engine did not remove all of it: "
                           + "; ".join(failed) + f" (run `ipsec-lab down --name {name}` again)")
        return done

    def leftovers(self, name: str) -> list[str]:
        client = self._engine()
        if client is None:
            return []
        flt = {"label": f"{LABEL}={name}"}
        return ([f"container {c.name}" for c in client.containers.list(all=True, filters=flt)]
                + [f"network {n.name}" for n in client.networks.list(filters=flt)]
                + [f"volume {v.name}" for v in client.volumes.list(filters=flt)])

    def lab_names(self) -> set[str]:
        client = self._engine()
        if client is None:
            return set()
        labelled = {"label": LABEL}
        found = {c.labels.get(LABEL, "") for c in client.containers.list(all=True,
                                                                         filters=labelled)}
        found |= {n.attrs.get("Labels", {}).get(LABEL, "")
                  for n in client.networks.list(filters=labelled)}
        return found - {""}


REMOVE_BUDGET = 60.0  # seconds the engine gets to finish removing one object


def _retry(what: str, action: Callable[[], object]) -> str:
    """Run a removal until it is done or gone; "" on success, else what the engine last said.

    A busy engine answers "removal already in progress" or "has active endpoints" while it is
    still tearing down: those pass with time, so they are retried within REMOVE_BUDGET."""
    deadline = time.monotonic() + REMOVE_BUDGET
    while True:
        try:
            action()
            return ""
        except docker.errors.NotFound:
            return ""
        except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
            if time.monotonic() > deadline:
                return f"{what}: {getattr(exc, 'explanation', None) or exc}"
        time.sleep(0.5)


def _remove_container(container: Any) -> str:
    return _retry(f"container {container.name}", lambda: container.remove(force=True, v=True))


def _remove_volume(volume: Any) -> str:
    return _retry(f"volume {volume.name}", lambda: volume.remove(force=True))


def _remove_network(net: Any) -> str:
    """A network goes once no endpoint is left on it: any that is, is disconnected first."""
    def remove() -> None:
        with contextlib.suppress(docker.errors.APIError):
            net.reload()
            for endpoint in (net.attrs.get("Containers") or {}):
                with contextlib.suppress(docker.errors.APIError):
                    net.disconnect(endpoint, force=True)
        net.remove()
    return _retry(f"network {net.name}", remove)


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


def _record_addresses(plan: LabPlan, state: LabState) -> None:
    """What `status` shows: each container's addresses as the plan gave them."""
    for node in containers(plan):
        state.nodes[node.name].addresses = {
            i.name: [str(a) for a in i.addresses] for i in node.interfaces if i.addresses}
    state.save()
