"""Where a running lab is remembered: `/run/ipsec-lab/<name>/` (mode 0700).

It holds the spec as given (it may carry pre-shared keys), the rendered configs, each daemon's
socket and log, and `state.json`: backend, dataplane, nodes and the PIDs the lab started.
Written before anything is created, so `down` can always find what to remove.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lab.errors import LabError
from lab.files import write_private

ROOT = Path(os.environ.get("IPSEC_LAB_STATE", "/run/ipsec-lab"))


@dataclass
class NodeState:
    role: str
    handle: str  # netns name or container id: how to run a command in the node
    addresses: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class LabState:
    name: str
    backend: str
    backend_reason: str = ""
    dataplane: str = ""
    dataplane_reason: str = ""
    phase: str = "starting"  # starting -> up
    nodes: dict[str, NodeState] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)
    negotiation: dict[str, str] = field(default_factory=dict)  # tunnel -> how it was initiated
    tuning: dict | None = None  # DaemonTuning fixed by the caller (matrix), else derived
    time_scale: float = 1.0  # < 1 shortens DPD timeouts and lifetimes (quick experiments)

    @property
    def dir(self) -> Path:
        return lab_dir(self.name)

    @property
    def spec_file(self) -> Path:
        return self.dir / "spec.yaml"

    def save(self) -> None:
        write_private(self.dir / "state.json", json.dumps(asdict(self), indent=2))


def lab_dir(name: str) -> Path:
    return ROOT / name


def create(name: str, backend: str, spec_text: str) -> LabState:
    directory = lab_dir(name)
    if (directory / "state.json").exists():
        raise LabError(f"lab {name!r} is already up (ipsec-lab status --name {name}; "
                       f"ipsec-lab down --name {name})")
    ROOT.mkdir(parents=True, exist_ok=True, mode=0o755)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(directory, 0o700)
    state = LabState(name=name, backend=backend)
    # The claim: of two `up`s of one name at once, exactly one creates state.json. A whole file is
    # linked into place (link fails on an existing name), so a reader never sees it half-written.
    draft = directory / f".state.json.{os.getpid()}.claim"
    write_private(draft, json.dumps(asdict(state), indent=2))
    try:
        os.link(draft, directory / "state.json")
    except FileExistsError:
        raise LabError(f"lab {name!r} is already up, or being brought up by another process "
                       f"(ipsec-lab status --name {name}; ipsec-lab down --name {name})") from None
    finally:
        draft.unlink(missing_ok=True)
    write_private(state.spec_file, spec_text)
    return state


def load(name: str) -> LabState:
    path = lab_dir(name) / "state.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise LabError(f"no lab named {name!r} is up (start one with `ipsec-lab up SPEC`)") from None
    data["nodes"] = {k: NodeState(**v) for k, v in data["nodes"].items()}
    return LabState(**data)


def names() -> list[str]:
    if not ROOT.is_dir():
        return []
    return sorted(p.name for p in ROOT.iterdir() if (p / "state.json").exists())


def forget(name: str) -> None:
    shutil.rmtree(lab_dir(name), ignore_errors=True)
