"""Backends materialise a lab plan: `netns` (Linux network namespaces) or `docker` (containers).

One interface, several engines (Kathara's manager split): the orchestrator, checks and scenarios
only talk to `Backend`, never to namespaces or containers directly.
"""

from __future__ import annotations

import subprocess
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

from lab.plan import LabPlan
from lab.state import LabState

Progress = Callable[[str], None]
AGENT = Path(__file__).resolve().parent.parent / "agent.py"


class Backend(ABC):
    name: str

    @abstractmethod
    def deploy(self, plan: LabPlan, state: LabState, progress: Progress) -> None:
        """Create nodes, links, addresses and routes; record handles in `state` as it goes."""

    @abstractmethod
    def run_dir(self, lab: str, node: str) -> str:
        """A gateway's config/socket/log directory as its daemon sees it."""

    @abstractmethod
    def host_dir(self, lab: str, node: str) -> Path:
        """The same directory as this orchestrator sees it (for VICI sockets and logs)."""

    @abstractmethod
    def start_daemon(self, state: LabState, node: str) -> None:
        """Start strongSwan in a gateway node with the configs already written to host_dir."""

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

    def spawn_agent(self, state: LabState, node: str, args: list[str]) -> subprocess.Popen[str]:
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


def get_backend(name: str) -> Backend:
    if name == "netns":
        from lab.backends.netns import NetnsBackend

        return NetnsBackend()
    if name == "docker":
        from lab.backends.docker import DockerBackend

        return DockerBackend()
    raise ValueError(name)
