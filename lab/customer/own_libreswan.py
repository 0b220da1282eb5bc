"""The customer gateway running the user's own libreswan ipsec.conf (+ ipsec.secrets) on
libreswan's pluto, unmodified.

`ipsec-lab up SPEC --customer-config ipsec.conf` with a file in libreswan's dialect
(`lab.libreswan.userconf.looks_like_libreswan`): the file is read by libreswan's own parser for
the topology and the advice (`userconf.load`), copied as it is into the gateway's directory, and
run there by pluto (`--config` names it: its `config setup` applies, except the paths the lab
gives after it on pluto's command line, which win: lab.libreswan.pluto). pluto loads the file
itself as it starts, as in production (libreswan 4.10's server.c runs `addconn --autoall`:
auto=add/start/route conns added, auto=route ones routed, auto=start ones initiated), so the lab
starts pluto only once the cloud side is loaded over VICI, then waits for those initiations.
The cloud initiates (an active tunnel) where pluto's did not bring the tunnel up; an auto=route
conn is initiated once by the lab with whack, standing in for the first packet. `check` judges
both ends as for a user's strongSwan config (`lab.customer.own_check`), pluto's side read from
its own status.

The gateway gets a default route (`CustomerPlacement.default_route`), as a real one has:
libreswan resolves `left=%defaultroute` (and `leftnexthop=`'s default) from it.

Relative `include` paths are refused: libreswan 4.10 resolves them from the working directory
of whoever reads the file (lib/libipsecconf/parser.lex), not from the file's directory, so the
lab could not say which files they name. Absolute ones are read where they are.
"""

from __future__ import annotations

import functools
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from lab import processes
from lab.control import wait_socket
from lab.customer.own import (
    INITIATE_TIMEOUT,
    OwnConfig,
    attempt,
    read_user_file,
)
from lab.errors import LabError
from lab.libreswan import pluto, status, userconf
from lab.negotiation import lab_config, mechanism, start_trigger
from lab.plan import CustomerPlacement
from lab.spec import LabSpec
from lab.timing import patience
from lab.verify import installed

if TYPE_CHECKING:
    from lab.backends import Progress
    from lab.running import Lab

KIND = "libreswan ipsec.conf"
HOW = ("libreswan ipsec.conf + ipsec.secrets run unmodified by libreswan's pluto, which loads "
       "them itself at start-up (addconn --autoall) and initiates its auto=start conns")
_INCLUDE = re.compile(r"^\s*include\s+(\S+)", re.MULTILINE)
PLUTO_START = patience(20.0)  # to its control socket, then to its own addconn having loaded
NO_SECRETS = "# ipsec-lab: no --customer-secrets was given, so pluto has no secret\n"


class OwnLibreswan(OwnConfig):
    """A user's libreswan ipsec.conf on the customer gateway: pluto, not charon, runs it."""

    starts_its_daemon: ClassVar[bool] = True  # after the cloud is loaded (`establish`)

    @classmethod
    def load_libreswan(cls, config: str | Path, secrets: str | Path | None = None,
                       strongswan_conf: str | Path | None = None) -> OwnLibreswan:
        path = Path(config)
        if strongswan_conf is not None:
            raise LabError(f"--customer-strongswan-conf: {path} is a libreswan ipsec.conf, run by "
                           "libreswan's pluto: a strongswan.conf does not apply (pluto's "
                           "daemon-wide settings are the file's own `config setup`)")
        text = read_user_file(path, "--customer-config")
        for m in _INCLUDE.finditer(text):
            if not m.group(1).startswith("/"):
                raise LabError(f"--customer-config: {path}: `include {m.group(1)}` is a relative "
                               "path, which libreswan 4.10 resolves from the working directory "
                               "of the program reading the file, not from the file's directory: "
                               "write it as an absolute path")
        view = userconf.load(path, Path(secrets) if secrets is not None else None)
        run = cls(KIND, str(path.resolve()), str(Path(secrets).resolve()) if secrets else None)
        run.how, run.view = HOW, view
        run.notes += view.notes
        run.files["ipsec.conf"] = text
        run.files["ipsec.secrets"] = read_user_file(Path(secrets), "--customer-secrets") \
            if secrets is not None else NO_SECRETS
        if not view.connections:
            raise LabError(f"{path}: no conn to load (libreswan loads conns with auto=add, "
                           "start, route or ondemand; every conn here is auto=ignore or has no "
                           "auto=)")
        return run

    def fit(self, spec: LabSpec) -> LabSpec:
        """As for a strongSwan config, and the customer gateway runs pluto."""
        fitted = super().fit(spec)
        t = fitted.tunnels[0]
        cg = t.customer_gateway.model_copy(update={"implementation": "libreswan"})
        return fitted.model_copy(update={"tunnels": [t.model_copy(
            update={"customer_gateway": cg})]})

    def placement(self) -> CustomerPlacement:
        """As for a strongSwan config, with a default route: libreswan resolves
        left=%defaultroute (the default of leftnexthop= too) from it."""
        return self._found().placement(own_daemon_settings=True, default_route=True)

    def gateway_files(self, rendered: dict[str, str]) -> dict[str, str]:
        """The user's ipsec.conf and ipsec.secrets in place of the lab's (its firewall stays)."""
        return {**rendered, **self.files}

    def establish(self, lab: Lab, progress: Progress) -> None:
        """Load the cloud side, then start pluto, which loads the user's file itself as it
        does in production (`addconn --autoall` at start-up: auto=add/start/route conns added,
        auto=route routed, auto=start initiated); then the lab waits for those initiations, and
        initiates where the cloud tunnel's negotiation type or an auto=route conn says.
        Failures are recorded for `check`, never raised: a config that does not interoperate
        still gets its lab."""
        assert self.view is not None
        tunnel = lab.spec.tunnels[0]
        cloud, cust = lab.plan.cloud_of(tunnel.name), lab.plan.customer_of(tunnel.name)
        with lab.vici(cloud.node) as v:
            v.load(lab_config(lab, cloud.node))
        self._start_pluto(lab, cust.node)
        relevant = {c.name for c in self.relevant(lab.spec)}
        actions = {c.name: c.children[0].start_action if c.children else "none"
                   for c in self.view.connections if c.name in relevant}
        missing = self._loaded(lab, cust.node, [c.name for c in self.view.connections])
        for name in missing:
            self.attempts.append(attempt(cust.node, name, False,
                                         f"libreswan refused your conn {name}: "
                                         f"{self._said(lab, cust.node)}"))
        starts = [n for n, a in actions.items() if a == "start" and n not in missing]
        routes = [n for n, a in actions.items() if a == "trap" and n not in missing]
        progress(f"cloud tunnel loaded over VICI; pluto loaded your libreswan ipsec.conf itself "
                 f"({len(self.view.connections) - len(missing)} conn(s))")
        lab.state.negotiation[tunnel.name] = (
            mechanism(tunnel.negotiation_type, lab.plan.dataplane.trap_policies)
            + f"; customer gateway: {self.describe()}; pluto initiates its auto=start conns as "
            "it starts, before the cloud does")
        whack = lab.whack(cust.node)
        pending = self._waiting(lab, cust.node, starts)
        deadline = time.monotonic() + INITIATE_TIMEOUT
        while pending and time.monotonic() < deadline:
            time.sleep(0.1)  # pluto's status is polled: whack has no event stream
            pending = self._waiting(lab, cust.node, starts)
        log = self._log(lab, cust.node)
        for name in starts:
            said = [line for line in log if f'"{name}' in line]
            self.attempts.append(attempt(cust.node, name, name not in pending,
                                         "established" if name not in pending else
                                         f"libreswan did not establish {name!r} (auto=start)",
                                         said))
        if tunnel.negotiation_type == "traffic-triggered" and not lab.plan.dataplane.trap_policies:
            start_trigger(lab)
        elif tunnel.negotiation_type == "active" and (not starts or pending):
            children = cloud.connections[0].children
            self._initiate(lab, cloud.node, [(tunnel.name, ch.name) for ch in children])
        if tunnel.negotiation_type == "passive" and not starts and not routes:
            self.attempts.append(attempt(cust.node, "-", False,
                                         "the cloud tunnel is passive and none of your conns "
                                         "initiates (auto=start/route): nobody starts the "
                                         "negotiation"))
        waiting = self._waiting(lab, cust.node, routes)
        if waiting:
            self.notes.append("your auto=route/ondemand conns are initiated once by the lab "
                              "at start-up, standing in for the first packet")
        for name in waiting:
            try:
                self.attempts.append(attempt(cust.node, name, True, "established",
                                             whack.initiate(name, INITIATE_TIMEOUT)))
            except LabError as exc:  # InitiateFailed, or pluto not answering
                self.attempts.append(attempt(cust.node, name, False, str(exc),
                                             getattr(exc, "log", None)))
        self._settle(lab, tunnel.name, progress)

    @staticmethod
    def _start_pluto(lab: Lab, node: str) -> None:
        lab.backend.start_pluto(lab.state, node)
        pid = lab.state.pids.get(f"pluto:{node}")
        wait_socket(lab.backend.host_dir(lab.state.name, node) / pluto.CTL,
                    time.monotonic() + PLUTO_START,
                    alive=functools.partial(processes.alive, pid) if pid is not None
                    else lambda: True, daemon="libreswan's pluto", log=pluto.LOG)

    @staticmethod
    def _loaded(lab: Lab, node: str, names: list[str]) -> list[str]:
        """Waits for pluto's own `addconn --autoall` to add the conns; returns those it did not
        (a `leftsubnets=` conn is loaded as `conn/NxM`)."""
        deadline = time.monotonic() + PLUTO_START
        while True:
            try:
                have = status.conn_names(lab.whack(node).text("--status"))
            except LabError:
                have = set()
            missing = [n for n in names if not any(h == n or h.startswith(f"{n}/")
                                                   for h in have)]
            if not missing or time.monotonic() >= deadline:
                return missing
            time.sleep(0.1)

    @staticmethod
    def _said(lab: Lab, node: str) -> str:
        """What addconn (pluto's child: its output is pluto's) said, last lines."""
        try:
            text = (lab.backend.host_dir(lab.state.name, node) / "pluto.stdout").read_text(
                errors="replace")
        except OSError:
            text = ""
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        return "; ".join(lines[-3:]) or f"not loaded (see {pluto.LOG})"

    @staticmethod
    def _log(lab: Lab, node: str) -> list[str]:
        try:
            return lab.log_path(node).read_text(errors="replace").splitlines()
        except OSError:
            return []

    @staticmethod
    def _waiting(lab: Lab, node: str, names: list[str]) -> list[str]:
        """The conns of `names` with no IPsec SA installed yet (a `leftsubnets=` conn's SAs are
        named `conn/NxM` by libreswan)."""
        if not names:
            return []
        try:
            have = {ch.get("name", "") for _, ch in installed(lab.sas(node))}
        except LabError:
            have = set()
        return [n for n in names if not any(h == n or h.startswith(f"{n}/") for h in have)]
