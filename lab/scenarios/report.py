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


CHART_WIDTH, CHART_LEFT = 900, 150  # px of the timeline's bars, and of the lane names left of them
LABEL_CHAR, LABEL_ROW = 5.6, 11  # px per character of a 10 px label, px per row of labels


def mark_labels(marks: list[tuple[float, str]], step: float, bins: int) -> list[dict[str, Any]]:
    """Each event mark's x and the label row it goes in: the lowest row where it overlaps no
    label before it (marks 0.1 s apart, such as both gateways declaring the peer dead, would
    otherwise print over each other)."""
    px = CHART_WIDTH / max(bins, 1)
    row_ends: list[float] = []
    out = []
    for t, label in sorted(marks):
        x = CHART_LEFT + t / step * px
        text = f"{label} ({t:.1f} s)"
        row = next((i for i, end in enumerate(row_ends) if end < x), len(row_ends))
        end = x + 2 + len(text) * LABEL_CHAR + 4
        if row == len(row_ends):
            row_ends.append(end)
        else:
            row_ends[row] = end
        out.append({"x": round(x, 1), "row": row, "text": text})
    return out


def to_html(results: list[ScenarioResult]) -> str:
    labels = []  # per result: its marks laid out, and the height of the label rows above the bars
    for r in results:
        series = r.timeline.get("series", {}) if r.timeline else {}
        bins = max((len(b) for b in series.values()), default=1)
        marks = mark_labels(r.timeline.get("marks", []), r.timeline.get("step", 1.0), bins) \
            if r.timeline else []
        labels.append((marks, 10 + LABEL_ROW * max([1] + [m["row"] + 1 for m in marks])))
    return report_environment().get_template("scenario.html.j2").render(
        results=results, labels=labels, width=CHART_WIDTH, left=CHART_LEFT, label_row=LABEL_ROW)


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
