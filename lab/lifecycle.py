"""Bringing a lab up and down: spec -> plan -> configs -> backend -> daemons -> tunnels.

`up` records state before it creates anything and tears everything down again if any step
fails, so a failed `up` leaves nothing half-built.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from lab import state as labstate
from lab.backends import Backend, Progress, get_backend
from lab.control import Vici, wait_socket
from lab.dataplane import Dataplane, detect
from lab.errors import LabError
from lab.negotiation import establish
from lab.plan import DaemonTuning, LabPlan, build_plan, check_lab_name
from lab.render import GATEWAY_NFT, render_gateway, write_private
from lab.routing import install_route_tables
from lab.spec import LabSpec, dump_spec, load_spec
from lab.state import LabState
from lab.timing import patience

DAEMON_START_TIMEOUT = patience(20.0)


@dataclass
class Lab:
    """A running lab as the checks and scenarios see it."""

    state: LabState
    plan: LabPlan
    spec: LabSpec
    backend: Backend
    customer: Any = None  # lab.customer.CustomerRun: the customer gateway runs the user's own config

    def vici(self, node: str) -> Vici:
        return Vici(self.backend.host_dir(self.state.name, node) / "charon.vici")

    def log_path(self, node: str) -> Path:
        return self.backend.host_dir(self.state.name, node) / "charon.log"


def choose_backend(requested: str) -> tuple[Backend, str]:
    if requested == "netns":
        return get_backend("netns"), "asked for with --backend netns"
    if requested == "docker":
        return get_backend("docker"), "asked for with --backend docker"
    if requested != "auto":
        raise LabError(f"--backend: must be netns, docker or auto (got {requested!r})")
    try:
        from lab.engine import engine_client

        client = engine_client()
    except ImportError:
        client = None
    if client is not None:
        return get_backend("docker"), "auto: a Docker engine answered"
    return get_backend("netns"), "auto: no Docker engine answered, using network namespaces"


def up(spec_path: str | Path | LabSpec, name: str = "default", backend: str = "auto",
       progress: Progress = lambda _: None, tuning: DaemonTuning | None = None,
       time_scale: float = 1.0, before_establish: Callable[[Lab], None] | None = None,
       customer: Any = None) -> Lab:
    """`tuning` fixes daemon-wide settings (the matrix keeps daemons across cases);
    `time_scale` shortens DPD and lifetimes; `before_establish` runs once the daemons answer
    and before any tunnel is loaded (e.g. to start a capture that must see the first packet);
    `customer` (lab.customer.CustomerRun) runs the user's own config on the customer gateway.
    """
    check_lab_name(name)
    spec = spec_path if isinstance(spec_path, LabSpec) else load_spec(spec_path)
    if customer is not None:  # hook (lab.customer): IDC ranges from the user's config
        spec = customer.fit_spec(spec)
    dataplane = detect()
    plan = build_plan(spec, name, dataplane, tuning, time_scale)
    if customer is not None:  # hook (lab.customer): the gateway at the config's own address
        customer.fit_plan(plan)
    chosen, why = choose_backend(backend)
    progress(f"backend {chosen.name} ({why}); dataplane {dataplane.name}")
    state = labstate.create(name, chosen.name, yaml.safe_dump(dump_spec(spec), sort_keys=False))
    state.backend_reason = why
    state.dataplane, state.dataplane_reason = dataplane.name, dataplane.reason
    state.tuning = asdict(tuning) if tuning else None
    state.time_scale = time_scale
    state.save()
    try:
        lab = Lab(state, plan, spec, chosen, customer)
        if customer is not None:  # hook (lab.customer): remembered for attach/check
            customer.save(state.dir)
        chosen.deploy(plan, state, progress)
        start_daemons(lab, progress)
        if before_establish:
            before_establish(lab)
        if customer is not None:  # hook (lab.customer): failures are recorded for check, not raised
            customer.establish(lab, progress)
        else:
            establish(lab, progress)
        state.phase = "up"
        state.save()
        return lab
    except BaseException:
        progress("bring-up failed: tearing down what was started")
        down(name, progress=lambda _: None)
        raise


def start_daemons(lab: Lab, progress: Progress) -> None:
    for gw in lab.plan.gateways:
        directory = lab.backend.host_dir(lab.state.name, gw.node)
        files = render_gateway(lab.plan, gw, lab.backend.run_dir(lab.state.name, gw.node))
        firewall = files[GATEWAY_NFT]
        if lab.customer is not None and gw.side == "customer":  # hook (lab.customer): user's files
            files = lab.customer.gateway_files(files)
        for filename, text in {**files, GATEWAY_NFT: firewall}.items():
            write_private(directory / filename, text)
        apply_firewall(lab, gw.node)
        lab.backend.start_daemon(lab.state, gw.node)
    deadline = time.monotonic() + DAEMON_START_TIMEOUT
    for gw in lab.plan.gateways:
        directory = lab.backend.host_dir(lab.state.name, gw.node)
        pid = lab.state.pids.get(f"charon:{gw.node}")
        wait_socket(directory / "charon.vici", deadline,
                    alive=lambda pid=pid: pid is None or _alive(pid))
    progress(f"{len(lab.plan.gateways)} strongSwan daemons answering on VICI")
    if routes := install_route_tables(lab):
        progress(f"{routes} route-table entries installed on the cloud gateway(s)")


def apply_firewall(lab: Lab, node: str) -> None:
    """The gateway forwards between LAN and internet only through IPsec (gateway.nft.j2)."""
    path = f"{lab.backend.run_dir(lab.state.name, node)}/{GATEWAY_NFT}"
    done = lab.backend.exec(lab.state, node, ["nft", "-f", path])
    if done.returncode != 0:
        raise LabError(f"{node}: nft -f {GATEWAY_NFT} failed: {done.stderr.strip()}")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def attach(name: str = "default") -> Lab:
    """The running lab `name`, rebuilt from its saved spec (the plan is deterministic)."""
    state = labstate.load(name)
    spec = load_spec(state.spec_file)
    tuning = DaemonTuning(**state.tuning) if state.tuning else None
    if tuning and tuning.retransmit:
        tuning = DaemonTuning(tuning.aggressive_psk, tuple(tuning.retransmit))  # type: ignore[arg-type]
    plan = build_plan(spec, name, Dataplane(state.dataplane, state.dataplane_reason), tuning,
                      state.time_scale)
    from lab.customer import CustomerRun  # hook (lab.customer): a lab run with the user's config

    customer = CustomerRun.restore(state.dir)
    if customer is not None:
        customer.fit_plan(plan)
    return Lab(state, plan, spec, get_backend(state.backend), customer)


def down(name: str = "default", progress: Progress = lambda _: None) -> list[str]:
    """Remove lab `name` on every backend it may have used; idempotent, crash-safe."""
    check_lab_name(name)
    done: list[str] = []
    backends = ["netns"]
    try:
        backends.insert(0, labstate.load(name).backend)
    except LabError:
        backends.append("docker")
    for backend_name in dict.fromkeys(backends):
        try:
            backend = get_backend(backend_name)
        except ImportError:
            continue
        done += backend.undeploy(name, progress)
    if labstate.lab_dir(name).exists():
        labstate.forget(name)
        done.append(f"removed state directory {labstate.lab_dir(name)}")
    return done


def all_names() -> list[str]:
    """Labs with state, plus labs whose state was lost but whose namespaces or containers remain."""
    from pyroute2 import netns

    from lab.backends.netns import PREFIX

    found = set(labstate.names())
    for ns in netns.listnetns():
        if ns.startswith(PREFIX) and not ns.startswith(f"{PREFIX}probe-"):
            found.add(ns[len(PREFIX):].rsplit("-", 1)[0])
    try:
        from lab.engine import engine_client
    except ImportError:
        return sorted(found)
    client = engine_client()
    if client is not None:
        labelled = {"label": "ipsec-lab.lab"}
        found |= {c.labels.get("ipsec-lab.lab", "") for c in client.containers.list(all=True,
                                                                                    filters=labelled)}
        found |= {n.attrs.get("Labels", {}).get("ipsec-lab.lab", "")
                  for n in client.networks.list(filters=labelled)}
        found.discard("")
    return sorted(found)
