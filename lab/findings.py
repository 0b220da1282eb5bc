"""What a check found: one row per thing checked, in the plane it belongs to.

Low in the stack so that every verifier (the lab's own customer gateway, a user's own config,
later other IKE stacks) writes the same rows the report prints.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Finding:
    tunnel: str
    subject: str  # a gateway, a CHILD_SA, a mapping or the wire
    plane: str  # control | data | wire | config
    check: str
    ok: bool
    detail: str = ""
    info: bool = False  # information, not a check: never counted as passed (nor failed)


@dataclass
class CheckReport:
    lab: str
    backend: str
    dataplane: str
    findings: list[Finding] = field(default_factory=list)

    @property
    def checks(self) -> list[Finding]:
        """The findings that are checks (information rows left out)."""
        return [f for f in self.findings if not f.info]

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(f.ok for f in self.checks)

    def add(self, *args: Any, **kwargs: Any) -> None:
        self.findings.append(Finding(*args, **kwargs))

    def to_json(self) -> str:
        return json.dumps({"lab": self.lab, "backend": self.backend, "dataplane": self.dataplane,
                           "ok": self.ok, "findings": [asdict(f) for f in self.findings]},
                          indent=2)
