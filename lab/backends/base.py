"""The interface every backend implements, apart from the package that picks one, so that a
backend imports only this and never the factory that imports it (`lab.backends.get_backend`)."""

from __future__ import annotations

import subprocess
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import IO, Protocol

from lab.errors import LabError
from lab.plan import LabPlan
from lab.state import LabState

Progress = Callable[[str], None]
AGENT = Path(__file__).resolve().parent.parent / "agent.py"


class AgentProcess(Protocol):
    """A running probe agent: what `subprocess.Popen` offers and a forked agent offers too."""

    pid: int
    returncode: int | None
    stdin: IO[str] | None
    stdout: IO[str] | None

    def poll(self) -> int | None: ...

    def kill(self) -> None: ...

    def communicate(self, input: str | None = None,  # noqa: A002 - Popen's own name
                    timeout: float | None = None) -> tuple[str, str]: ...


class Backend(ABC):
    name: str

    @abstractmethod
    def deploy(self, plan: LabPlan, state: LabState, progress: Progress) -> None:
        """Create nodes, links, addresses and routes; record handles in `state` as it goes."""

    def adopt(self, plan: LabPlan, state: LabState, progress: Progress) -> None:
        """Take over nodes someone else created for `plan` (docker: a Compose project named
        like the lab): check they are the plan's, record their handles in `state` and configure
        them as `deploy` would. Taking the lab down again is `undeploy`'s, as after `deploy`."""
        raise LabError(f"the {self.name} backend cannot adopt nodes it did not create")

    @abstractmethod
    def run_dir(self, lab: str, node: str) -> str:
        """A gateway's config/socket/log directory as its daemon sees it."""

    @abstractmethod
    def host_dir(self, lab: str, node: str) -> Path:
        """The same directory as this orchestrator sees it (for VICI sockets and logs)."""

    @abstractmethod
    def start_daemon(self, state: LabState, node: str) -> None:
        """Start strongSwan in a gateway node with the configs already written to host_dir."""

    def start_pluto(self, state: LabState, node: str) -> None:
        """Start libreswan's pluto in a customer gateway node (lab.libreswan.pluto)."""
        raise LabError(f"the {self.name} backend does not run libreswan customer gateways yet: "
                       "use the netns backend (--backend netns)")

    @abstractmethod
    def exec(self, state: LabState, node: str, argv: list[str],
             timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run a command in a node and wait for it."""

    @abstractmethod
    def spawn(self, state: LabState, node: str, argv: list[str]) -> subprocess.Popen[str]:
        """Start a command in a node with pipes (probe listeners, captures)."""

    @abstractmethod
    def agent(self) -> list[str]:
        """argv prefix that runs lab/agent.py (the scapy probe) inside a node."""

    def spawn_agent(self, state: LabState, node: str, args: list[str]) -> AgentProcess:
        """Start the probe agent in a node with pipes (a backend may start it faster)."""
        return self.spawn(state, node, self.agent() + args)

    @abstractmethod
    def netns_path(self, state: LabState, node: str) -> str:
        """A path to the node's network namespace, for host-side helpers that setns into it."""

    @abstractmethod
    def undeploy(self, name: str, progress: Progress) -> list[str]:
        """Remove everything of lab `name`, also after a crash; idempotent. Returns what it did."""

    @abstractmethod
    def leftovers(self, name: str) -> list[str]:
        """What of lab `name` still exists (empty after a clean `down`)."""

    @abstractmethod
    def lab_names(self) -> set[str]:
        """Names of the labs this backend has nodes of (also labs whose state was lost)."""
