"""A running lab as every layer sees it: its state, plan, spec, backend and customer side.

Low in the stack (like a model object) so that checks, scenarios, probes and the matrix use a
lab without importing the orchestrator that brings it up (`lab.lifecycle`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from lab.control import Vici
from lab.errors import LabError
from lab.libreswan import pluto, status
from lab.libreswan.whack import Whack

if TYPE_CHECKING:
    from lab.backends import Backend, Progress
    from lab.findings import CheckReport
    from lab.plan import CustomerPlacement, LabPlan
    from lab.spec import LabSpec
    from lab.state import LabState


class CustomerSide(Protocol):
    """What runs on the customer gateway: the lab's own strongSwan config generated from the
    spec, or the user's own config. `lab.lifecycle` and `lab.check` call only these methods, so
    another kind of customer gateway is one more implementation (`lab.customer`)."""

    kind: str  # "generated" (the lab's own), "swanctl.conf" or "ipsec.conf" (the user's)
    notes: list[str]  # what the lab made of the user's files (empty for the lab's own)
    # True: `establish` starts the customer gateway's daemon itself, after the cloud is loaded
    # (pluto initiates a user's auto=start conns as it starts, so the cloud must be ready)
    starts_its_daemon: ClassVar[bool]

    def describe(self) -> str:
        """One line for reports: what runs on the customer gateway and how it was loaded."""
        ...

    def fit(self, spec: LabSpec) -> LabSpec:
        """The spec the lab is planned from (e.g. the IDC ranges a user's config protects)."""
        ...

    def placement(self) -> CustomerPlacement:
        """Where the customer gateway sits: with the fitted spec, all the plan is built from
        (once: a plan is never edited afterwards)."""
        ...

    def gateway_files(self, rendered: dict[str, str]) -> dict[str, str]:
        """The customer gateway's directory, given what the lab rendered for it."""
        ...

    def establish(self, lab: Lab, progress: Progress) -> None:
        """Load both ends and start the tunnels the way the cloud's negotiation type says."""
        ...

    def control_plane(self, lab: Lab, report: CheckReport, tunnel: str, rekey: bool) -> None:
        """Both ends' SAs judged against the spec, as rows of `report`."""
        ...

    def save(self, state_dir: Path) -> None:
        """Remember what `attach` needs to rebuild this side for a later command."""
        ...


@dataclass
class Lab:
    """A running lab as the checks and scenarios see it."""

    state: LabState
    plan: LabPlan
    spec: LabSpec
    backend: Backend
    customer: CustomerSide
    # daemons found connected but silent (frozen, hung), and why: a check asks them nothing more
    # instead of waiting out a VICI time-out at every step (lab.liveness.silent_daemons)
    silent: dict[str, str] = field(default_factory=dict)

    def vici(self, node: str) -> Vici:
        if node in self.silent:
            raise LabError(self.silent[node])
        return Vici(self.vici_path(node))

    def vici_path(self, node: str) -> Path:
        return self.backend.host_dir(self.state.name, node) / "charon.vici"

    def log_path(self, node: str) -> Path:
        log = pluto.LOG if self.plan.gateway(node).pluto else "charon.log"
        return self.backend.host_dir(self.state.name, node) / log

    def whack(self, node: str) -> Whack:
        """libreswan's pluto on a customer gateway that runs it (`Gateway.pluto`)."""
        return Whack(self.backend.host_dir(self.state.name, node))

    def sas(self, node: str) -> list[dict[str, Any]]:
        """A gateway's SAs as VICI's `list-sas` gives them, from either daemon: pluto's own
        status read into the same shape (lab.libreswan.status), so one verifier judges both."""
        gw = self.plan.gateway(node)
        if not gw.pluto:
            with self.vici(node) as v:
                return v.sas()
        report = self.whack(node).text("--status")
        xfrm = self.backend.exec(self.state, node, ["ip", "-s", "xfrm", "state"])
        if xfrm.returncode != 0:
            raise LabError(f"{node}: cannot read the kernel's XFRM states: {xfrm.stderr.strip()}")
        mappings = {ch.name: c.name for c in gw.connections for ch in c.children}
        try:
            log = self.log_path(node).read_text(errors="replace")
        except OSError:
            log = ""
        return status.parse(report, xfrm.stdout, mappings, log)
