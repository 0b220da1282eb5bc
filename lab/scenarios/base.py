"""What every scenario shares: a spec variant, a lab that always goes down, the wire watch."""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from lab import lifecycle
from lab.agent import encapsulation, esp_packets
from lab.libreswan.install import not_in
from lab.probe import Agent
from lab.running import Lab
from lab.scenarios.report import ScenarioResult
from lab.spec import DEFAULT_SPEC, LabSpec, dump_spec, load_spec, parse_spec
from lab.timing import patience


def variant(base: str | Path | LabSpec | None, **tunnel_changes: Any) -> LabSpec:
    """The base spec's first tunnel with `tunnel_changes` merged in (nested dicts merged)."""
    spec = base if isinstance(base, LabSpec) else load_spec(base or DEFAULT_SPEC)
    data = dump_spec(spec)
    tunnel = data["tunnels"][0]
    for key, value in tunnel_changes.items():
        if isinstance(value, dict) and isinstance(tunnel.get(key), dict):
            tunnel[key] = {**tunnel[key], **copy.deepcopy(value)}
        else:
            tunnel[key] = copy.deepcopy(value)
    data["tunnels"] = [tunnel]
    return parse_spec(data, "scenario spec")


def lab_name(kind: str) -> str:
    return f"sc{kind[:4]}{os.getpid() % 1000}"


@contextmanager
def running_lab(spec: LabSpec, name: str, backend: str, time_scale: float = 1.0,
                libreswan: bool = False, **kwargs: Any) -> Iterator[Lab]:
    """The scenario's lab, down again afterwards. `libreswan`: the scenario reads the customer
    side through `Lab.sas` (either daemon), so a libreswan customer gateway may run it."""
    if not libreswan:
        not_in(spec, "this scenario")
    lab = lifecycle.up(spec, name, backend, time_scale=time_scale, **kwargs)
    try:
        yield lab
    finally:
        lifecycle.down(name)


class WireWatch:
    """A capture on the internet segment for the whole experiment; `verdict` records the result."""

    def __init__(self, lab: Lab, prefixes: list[str]):
        node = lab.plan.internet_node
        self.prefixes = prefixes
        self.agents = [Agent(lab, node, ["capture", "--iface", lab.plan.node(node).bridge or "br0",
                                         "--prefix", p]) for p in prefixes]
        for agent in self.agents:
            agent.wait_ready()
        self.result: dict[str, Any] = {}

    def finish(self, result: ScenarioResult) -> dict[str, Any]:
        outputs = [a.finish() for a in self.agents]
        leaked = [x for o in outputs for x in o.get("leaked", [])]
        counts = outputs[0].get("counts", {}) if outputs else {}
        self.result = {"counts": counts, "leaked": leaked,
                       "first": outputs[0].get("first", {}) if outputs else {}}
        result.verdict("no payload marker in clear on the wire", not leaked,
                       f"{esp_packets(counts)} {encapsulation(counts)}, "
                       f"{sum(v for k, v in counts.items() if k.endswith('/ike'))} IKE packets; "
                       + ("none leaked" if not leaked else f"{len(leaked)} leaked: {leaked[:2]}"))
        return self.result

    def kill(self) -> None:
        for agent in self.agents:
            agent.kill()


def save_spec(spec: LabSpec, path: Path) -> None:
    path.write_text(yaml.safe_dump(dump_spec(spec), sort_keys=False))


def settled_ike_states(lab: Lab, tunnel: str, nodes: list[str], limit: float) -> dict[str, list[str]]:
    """Each node's IKE_SA states for `tunnel`, once every node lists exactly one ESTABLISHED
    IKE_SA or after `limit` seconds: a snapshot may fall inside an IKE rekey (the old SA
    deleting, the new one not yet listed); IKE_SAs that multiplied stay more than one."""
    deadline = time.monotonic() + patience(limit)
    while True:
        states: dict[str, list[str]] = {}
        for node in nodes:
            with lab.vici(node) as v:
                states[node] = [sa.get("state", "") for sa in v.sas() if sa["name"] == tunnel]
        if all(s == ["ESTABLISHED"] for s in states.values()) or time.monotonic() >= deadline:
            return states
        time.sleep(0.1)
