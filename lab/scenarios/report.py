"""Scenario results as people and CI read them: terminal summary, JSON, JUnit, HTML timeline."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from lab.render import report_environment
from lab.scenarios.events import Event
from lab.scenarios.stream import StreamResult


@dataclass
class Verdict:
    name: str
    ok: bool
    detail: str = ""


@dataclass
class ScenarioResult:
    scenario: str
    variant: str  # e.g. "ikev2 dpd retry"
    backend: str
    dataplane: str
    time_scale: float
    verdicts: list[Verdict] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    marks: list[tuple[float, str]] = field(default_factory=list)  # (time, label) for the timeline
    stream: list[dict[str, Any]] = field(default_factory=list)
    timeline: dict[str, Any] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.verdicts) and all(v.ok for v in self.verdicts)

    def verdict(self, name: str, ok: bool, detail: str = "") -> bool:
        self.verdicts.append(Verdict(name, bool(ok), detail))
        return bool(ok)

    def mark(self, t: float, label: str) -> None:
        self.marks.append((t, label))

    def attach_stream(self, result: StreamResult, step: float = 0.5) -> None:
        t0, t1 = result.started, result.stopped + 1
        self.stream = result.summary()
        self.timeline = {
            "t0": t0, "step": step,
            "series": {d.name: d.delivered_per_interval(t0, t1, step) for d in result.directions},
            "marks": [(round(t - t0, 3), label) for t, label in sorted(self.marks)],
        }

    def attach_events(self, events: list[Event], t0: float) -> None:
        self.events = [{"t": round(e.time - t0, 3), "node": e.node, "kind": e.kind, "up": e.up,
                        "ike": e.ike} for e in events]


def to_json(results: list[ScenarioResult]) -> str:
    return json.dumps({"ok": all(r.ok for r in results),
                       "scenarios": [asdict(r) | {"ok": r.ok} for r in results]}, indent=2, default=str)


def to_junit(results: list[ScenarioResult]) -> str:
    suites = ET.Element("testsuites")
    for r in results:
        suite = ET.SubElement(suites, "testsuite", name=f"{r.scenario}: {r.variant}",
                              tests=str(len(r.verdicts)),
                              failures=str(sum(not v.ok for v in r.verdicts)))
        for v in r.verdicts:
            case = ET.SubElement(suite, "testcase", classname=f"scenario.{r.scenario}",
                                 name=f"{r.variant}: {v.name}")
            if not v.ok:
                ET.SubElement(case, "failure", message=v.detail).text = v.detail
            else:
                ET.SubElement(case, "system-out").text = v.detail
    return ET.tostring(suites, encoding="unicode")


def to_html(results: list[ScenarioResult]) -> str:
    return report_environment().get_template("scenario.html.j2").render(results=results)


def write_outputs(results: list[ScenarioResult], json_path: Path | None, junit_path: Path | None,
                  html_path: Path | None) -> None:
    for path, render in ((json_path, to_json), (junit_path, to_junit), (html_path, to_html)):
        if path:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(render(results))


def print_summary(console: Console, results: list[ScenarioResult]) -> None:
    for r in results:
        table = Table(title=f"{r.scenario}: {r.variant} ({r.backend}, {r.dataplane}, "
                            f"time scale {r.time_scale})")
        for column in ("", "check", "detail"):
            table.add_column(column, overflow="fold")
        for v in r.verdicts:
            table.add_row("[green]PASS[/]" if v.ok else "[bold red]FAIL[/]", v.name, v.detail)
        console.print(table)
        if r.metrics:
            console.print("  " + ", ".join(f"{k}={v}" for k, v in r.metrics.items()))
        for s in r.stream:
            console.print(f"  stream {s['direction']}: sent {s['sent']}, delivered {s['delivered']}, "
                          f"lost {s['lost']}, duplicated {s['duplicated']}, reordered {s['reordered']}")
