"""Bringing a lab up and down: spec -> plan -> configs -> backend -> daemons -> tunnels.

`up` records state before it creates anything and tears everything down again if any step
fails, so a failed `up` leaves nothing half-built.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import yaml

from lab import processes
from lab import state as labstate
from lab.backends import Backend, Progress, choose_backend, get_backend
from lab.control import wait_socket
from lab.customer import LIBRESWAN_KIND, GeneratedCustomer
from lab.customer import restore as restore_customer
from lab.dataplane import Dataplane, detect
from lab.errors import LabError
from lab.files import write_private
from lab.libreswan import algorithms, pluto
from lab.libreswan.install import NEEDS_ESP, tool, version
from lab.plan import DaemonTuning, Gateway, LabPlan, build_plan, check_lab_name
from lab.render import GATEWAY_NFT, render_gateway, render_nat
from lab.routing import install_route_tables
from lab.running import CustomerSide, Lab
from lab.spec import LabSpec, dump_spec, load_spec
from lab.state import LabState
from lab.timing import patience

DAEMON_START_TIMEOUT = patience(20.0)


def up(spec_path: str | Path | LabSpec, name: str = "default", backend: str = "auto",
       progress: Progress = lambda _: None, tuning: DaemonTuning | None = None,
       time_scale: float = 1.0, before_establish: Callable[[Lab], None] | None = None,
       customer: CustomerSide | None = None) -> Lab:
    """`tuning` fixes daemon-wide settings (the matrix keeps daemons across cases);
    `time_scale` shortens DPD and lifetimes; `before_establish` runs once the daemons answer
    and before any tunnel is loaded (e.g. to start a capture that must see the first packet);
    `customer` is what runs on the customer gateway (default: the lab's own, from the spec;
    `lab.customer.OwnConfig`: the user's own config).
    """
    check_lab_name(name)
    customer = customer or GeneratedCustomer()
    spec = customer.fit(spec_path if isinstance(spec_path, LabSpec) else load_spec(spec_path))
    chosen, why = choose_backend(backend)

    def undo(state: LabState) -> None:
        progress("bring-up failed: tearing down what was started")
        down(name, progress=lambda _: None)

    return _bring_up(name, spec, chosen, why, customer, chosen.deploy, undo, progress, tuning,
                     time_scale, before_establish)


def adopt(name: str, spec_path: str | Path, progress: Progress = lambda _: None) -> Lab:
    """Make the docker-compose project `name` (compose/README.md) the running lab `name`.

    `up` with the backend's `adopt` in place of `deploy`: the backend checks the project's
    containers are the plan's and configures them, then the daemons start and the tunnels are
    loaded and initiated. The containers are the project's: a failure stops only what this
    started and forgets the state. `ipsec-lab down --name NAME` removes the lab (by label).
    """
    check_lab_name(name)
    customer = GeneratedCustomer()
    backend = get_backend("docker")

    def undo(state: LabState) -> None:
        processes.stop([p for p in state.pids.values() if p])
        labstate.forget(name)

    return _bring_up(name, customer.fit(load_spec(spec_path)), backend,
                     f"adopted from docker-compose project {name}", customer, backend.adopt, undo,
                     progress)


def _bring_up(name: str, spec: LabSpec, backend: Backend, why: str, customer: CustomerSide,
              materialise: Callable[[LabPlan, LabState, Progress], None],
              undo: Callable[[LabState], None], progress: Progress,
              tuning: DaemonTuning | None = None, time_scale: float = 1.0,
              before_establish: Callable[[Lab], None] | None = None) -> Lab:
    """The stages after the inputs are fixed: plan (once), state (before anything exists), nodes
    (`materialise`: deploy, or adopt), daemons, tunnels; `undo` on any failure."""
    dataplane = detect()
    plan = build_plan(spec, name, dataplane, tuning, time_scale, customer.placement())
    refuse_libreswan(plan, spec, backend, customer)
    progress(f"backend {backend.name} ({why}); dataplane {dataplane.name}")
    state = labstate.create(name, backend.name, yaml.safe_dump(dump_spec(spec), sort_keys=False))
    state.backend_reason = why
    state.dataplane, state.dataplane_reason = dataplane.name, dataplane.reason
    state.tuning = asdict(tuning) if tuning else None
    state.time_scale = time_scale
    state.save()
    try:
        lab = Lab(state, plan, customer.placement().as_placed(spec), backend, customer)
        customer.save(state.dir)
        materialise(plan, state, progress)
        start_nat(lab, progress)
        start_daemons(lab, progress)
        if before_establish:
            before_establish(lab)
        customer.establish(lab, progress)
        state.phase = "up"
        state.save()
        return lab
    except BaseException:
        undo(state)
        raise


def refuse_libreswan(plan: LabPlan, spec: LabSpec, backend: Backend,
                     customer: CustomerSide) -> None:
    """A libreswan customer gateway runs only where it can: before anything is created."""
    plutos = [gw.node for gw in plan.gateways if gw.pluto]
    if not plutos:
        return
    if plan.dataplane.name != "kernel":
        raise LabError(f"{', '.join(plutos)}: {NEEDS_ESP} (this host's dataplane is "
                       f"{plan.dataplane.name}: {plan.dataplane.reason})")
    if customer.kind not in ("generated", LIBRESWAN_KIND):
        raise LabError("customer_gateway.implementation: libreswan runs the lab's own "
                       "generated config or a user's own libreswan ipsec.conf; a strongSwan "
                       "config (--customer-config) runs on strongSwan")
    if backend.name != "netns":
        raise LabError(f"the {backend.name} backend does not run libreswan customer gateways "
                       "yet: use the netns backend (--backend netns)")
    tool("pluto")  # unpacked? (scripts/setup), said before anything is built
    # the lab's own config only: a user's is what it is, and pluto's refusal is the finding
    missing = libreswan_lacks(plan, spec) if customer.kind == "generated" else []
    if missing:
        raise LabError("cannot run this lab with libreswan:\n"
                       + "\n".join(f"  - {m}" for m in missing))


def libreswan_lacks(plan: LabPlan, spec: LabSpec) -> list[str]:
    """What of a libreswan gateway's proposals libreswan does not implement (DH2, DH22-24, DES,
    AES-GCM for an IKEv1 SA), per tunnel: valid cloud settings pluto would refuse to load."""
    found = []
    index = {t.name: i for i, t in enumerate(spec.tunnels)}
    for gw in (g for g in plan.gateways if g.pluto):
        for c in gw.connections:
            lacks = [*algorithms.unsupported(c.ike_proposal, c.version, ike=True),
                     *algorithms.unsupported(c.esp_proposal, c.version, ike=False)]
            if any(ch.if_id is not None for ch in c.children):
                found.append(f"tunnels[{index.get(c.tunnel, '?')}].communication_mode: "
                             "destination-route (route-based) tunnels do not run on libreswan "
                             "yet (its IKE_AUTH answer to 0.0.0.0/0 selectors on an XFRM "
                             "interface was INVALID_SYNTAX): use spd-policy, or strongswan")
            if lacks:
                found.append(f"tunnels[{index.get(c.tunnel, '?')}] ({c.tunnel}): libreswan "
                             f"{version() or ''} does not implement {', '.join(dict.fromkeys(lacks))} "
                             "(customer_gateway.implementation: libreswan): choose other "
                             "algorithms, or implementation strongswan")
    return found


# a NAT router's idle-UDP lifetime: conntrack's two UDP timeouts (before and after a reply)
UDP_TIMEOUTS = ("net/netfilter/nf_conntrack_udp_timeout", "net/netfilter/nf_conntrack_udp_timeout_stream")


def start_nat(lab: Lab, progress: Progress) -> None:
    """Each NAT router's source NAT (configs/templates/nat.nft.j2) and idle-UDP timeout, inside
    its own namespace or container (conntrack's timeouts are per network namespace)."""
    routers = [n for n in lab.plan.nodes if n.nat is not None]
    for node in routers:
        done = lab.backend.exec(lab.state, node.name, ["nft", render_nat(lab.plan, node)])
        if done.returncode != 0:
            raise LabError(f"{node.name}: the NAT rules failed: {done.stderr.strip()}")
        if node.nat is not None and node.nat.udp_timeout is not None:
            script = "; ".join(f"echo {node.nat.udp_timeout} > /proc/sys/{key}" for key in UDP_TIMEOUTS)
            done = lab.backend.exec(lab.state, node.name, ["sh", "-c", script])
            if done.returncode != 0:
                raise LabError(f"{node.name}: cannot set the NAT's UDP timeout: {done.stderr.strip()}")
    if routers:
        progress(f"{len(routers)} NAT router(s) translating")


def start_daemons(lab: Lab, progress: Progress) -> None:
    for gw in lab.plan.gateways:
        directory = lab.backend.host_dir(lab.state.name, gw.node)
        files = render_gateway(lab.plan, gw, lab.backend.run_dir(lab.state.name, gw.node))
        firewall = files[GATEWAY_NFT]
        if gw.side == "customer":
            files = lab.customer.gateway_files(files)
        for filename, text in {**files, GATEWAY_NFT: firewall}.items():
            write_private(directory / filename, text)
        apply_firewall(lab, gw.node)
        if _deferred(lab, gw):
            continue  # started by the customer side, once the cloud is loaded
        if gw.pluto:
            lab.backend.start_pluto(lab.state, gw.node)
        else:
            lab.backend.start_daemon(lab.state, gw.node)
    deadline = time.monotonic() + DAEMON_START_TIMEOUT
    started = [gw for gw in lab.plan.gateways if not _deferred(lab, gw)]
    for gw in started:
        directory = lab.backend.host_dir(lab.state.name, gw.node)
        daemon, socket = ("pluto", pluto.CTL) if gw.pluto else ("charon", "charon.vici")
        pid = lab.state.pids.get(f"{daemon}:{gw.node}")
        wait_socket(directory / socket, deadline,
                    alive=functools.partial(processes.alive, pid) if pid is not None else _always,
                    daemon="libreswan's pluto" if gw.pluto else "strongSwan",
                    log=lab.log_path(gw.node).name)
    plutos = sum(gw.pluto for gw in started)
    progress(f"{len(started) - plutos} strongSwan daemons answering on VICI"
             + (f", {plutos} libreswan pluto(s) on their control sockets" if plutos else ""))
    if routes := install_route_tables(lab):
        progress(f"{routes} route-table entries installed on the cloud gateway(s)")


def _deferred(lab: Lab, gw: Gateway) -> bool:
    return gw.side == "customer" and lab.customer.starts_its_daemon


def _always() -> bool:
    return True


def apply_firewall(lab: Lab, node: str) -> None:
    """The gateway forwards between LAN and internet only through IPsec (gateway.nft.j2)."""
    path = f"{lab.backend.run_dir(lab.state.name, node)}/{GATEWAY_NFT}"
    done = lab.backend.exec(lab.state, node, ["nft", "-f", path])
    if done.returncode != 0:
        raise LabError(f"{node}: nft -f {GATEWAY_NFT} failed: {done.stderr.strip()}")


def attach(name: str = "default") -> Lab:
    """The running lab `name`, rebuilt from its saved spec (the plan is deterministic)."""
    state = labstate.load(name)
    spec = load_spec(state.spec_file)
    tuning = DaemonTuning(**state.tuning) if state.tuning else None
    if tuning and tuning.retransmit:
        tuning = DaemonTuning(tuning.aggressive_psk, tuple(tuning.retransmit))  # type: ignore[arg-type]
    customer = restore_customer(state.dir)
    plan = build_plan(spec, name, Dataplane(state.dataplane, state.dataplane_reason), tuning,
                      state.time_scale, customer.placement())
    return Lab(state, plan, customer.placement().as_placed(spec), get_backend(state.backend),
               customer)


def down(name: str = "default", progress: Progress = lambda _: None) -> list[str]:
    """Remove lab `name` on every backend it may have used; idempotent, crash-safe."""
    check_lab_name(name)
    done: list[str] = []
    backends = ["netns"]
    try:
        backends.insert(0, labstate.load(name).backend)
    except LabError:
        backends.append("docker")
    refused: list[LabError] = []
    for backend_name in dict.fromkeys(backends):
        try:
            backend = get_backend(backend_name)
        except ImportError:
            continue
        try:
            done += backend.undeploy(name, progress)
        except LabError as exc:  # the other backend is still cleaned; the state stays for a rerun
            refused.append(exc)
    if refused:
        raise LabError("; ".join(str(e) for e in refused))
    if labstate.lab_dir(name).exists():
        labstate.forget(name)
        done.append(f"removed state directory {labstate.lab_dir(name)}")
    return done


def all_names() -> list[str]:
    """Labs with state, plus labs whose state was lost but whose namespaces or containers remain."""
    found = set(labstate.names())
    for backend_name in ("netns", "docker"):
        try:
            found |= get_backend(backend_name).lab_names()
        except ImportError:  # the docker SDK is not installed: no docker labs
            continue
    return sorted(found)
