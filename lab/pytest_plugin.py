"""pytest plugin (entry point `pytest11`): a fixture that runs a real lab for a test.

    def test_my_gateway(ipsec_lab):
        lab = ipsec_lab("configs/examples/default.yaml")        # or a spec dict
        assert lab.check().ok
        print(lab.exec("idc1", ["ip", "route"]).stdout)
        with lab.capture() as wire:                              # on the internet segment
            lab.send("idc1", [{"src": "192.168.1.10", "dst": "10.0.1.10",
                               "proto": "icmp", "marker": wire.prefix + "-1"}])
        assert esp_packets(wire.result["counts"]) > 0           # lab.agent.esp_packets

Every lab the fixture started is torn down after the test, whatever happened in it.
Options: `--ipsec-lab-backend netns|docker|auto` (default netns).
"""

from __future__ import annotations

import itertools
import json
import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from lab import lifecycle
from lab.check import run_check
from lab.control import Vici
from lab.findings import CheckReport
from lab.probe import Agent
from lab.running import Lab

_counter = itertools.count(1)


@dataclass
class Capture:
    prefix: str
    result: dict[str, Any] = field(default_factory=dict)


class LabHandle:
    """What a test gets: the running lab plus the probes, with the lab's own machinery."""

    def __init__(self, lab: Lab):
        self.lab = lab
        self.name = lab.state.name

    def check(self, rekey: bool = True) -> CheckReport:
        return run_check(self.lab, rekey=rekey)

    def exec(self, node: str, argv: list[str], timeout: float = 30.0):
        return self.lab.backend.exec(self.lab.state, node, argv, timeout)

    def vici(self, node: str) -> Vici:
        return self.lab.vici(node)

    def send(self, node: str, probes: list[dict[str, str]], prefix: str = "ILAB") -> dict[str, Any]:
        """Send probes ({src, dst, proto: udp|icmp, marker}) from a host node; ICMP echoes return."""
        return Agent(self.lab, node, ["send", "--iface", "eth0", "--prefix", prefix],
                     stdin=json.dumps(probes)).finish()

    @contextmanager
    def capture(self) -> Iterator[Capture]:
        """Capture on the internet segment; `.result` holds the summary after the block."""
        cap = Capture(f"ILAB{secrets.token_hex(4)}")
        node = self.lab.plan.internet_node
        agent = Agent(self.lab, node, ["capture", "--iface",
                                       self.lab.plan.node(node).bridge or "br0",
                                       "--prefix", cap.prefix])
        agent.wait_ready()
        try:
            yield cap
        finally:
            cap.result = agent.finish()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--ipsec-lab-backend", default=os.environ.get("IPSEC_LAB_BACKEND", "netns"),
                     help="backend for the ipsec_lab fixture: netns, docker or auto")


@pytest.fixture
def ipsec_lab(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., LabHandle]]:
    """A factory: `ipsec_lab(spec, backend=None, name=None)` brings a lab up; all go down after."""
    started: list[str] = []

    def start(spec: str | Path | dict[str, Any], backend: str | None = None,
              name: str | None = None) -> LabHandle:
        if isinstance(spec, dict):
            path = tmp_path / f"spec{len(started)}.yaml"
            path.write_text(yaml.safe_dump(spec))
            spec = path
        name = name or f"pt{os.getpid() % 10000}-{next(_counter)}"
        started.append(name)
        chosen = backend or request.config.getoption("--ipsec-lab-backend")
        return LabHandle(lifecycle.up(spec, name, chosen))

    yield start
    for name in started:
        lifecycle.down(name)
