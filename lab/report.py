"""What people read: tables for `check` and `status` (rich), and their JSON twins."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.table import Table

from lab.findings import CheckReport


def check_table(report: CheckReport) -> Table:
    table = Table(title=f"lab {report.lab}: {report.backend} backend, {report.dataplane} dataplane",
                  show_lines=False)
    for column in ("", "tunnel", "plane", "subject", "check", "detail"):
        table.add_column(column, overflow="fold")
    for f in report.findings:
        mark = "[dim]INFO[/]" if f.info else "[green]PASS[/]" if f.ok else "[bold red]FAIL[/]"
        table.add_row(mark, f.tunnel, f.plane, f.subject, f.check, f.detail)
    return table


def print_check(console: Console, report: CheckReport) -> None:
    console.print(check_table(report))
    checks = report.checks
    failed = [f for f in checks if not f.ok]
    if report.ok:
        console.print(f"[bold green]all {len(checks)} checks passed[/]")
    else:
        console.print(f"[bold red]{len(failed)} of {len(checks)} checks failed[/]")


def status_table(labs: list[dict[str, Any]]) -> Table:
    table = Table(title="ipsec-lab status")
    for column in ("lab", "node", "role", "addresses", "run a command with"):
        table.add_column(column, overflow="fold")
    for lab in labs:
        for name, node in lab["nodes"].items():
            addresses = ", ".join(a for addrs in node["addresses"].values() for a in addrs)
            table.add_row(lab["name"], name, node["role"], addresses, node["exec"])
    return table


def dumps(data: Any) -> str:
    return json.dumps(data, indent=2, default=str)
