"""Check reports: information rows are shown but never counted as passed checks."""

from __future__ import annotations

from rich.console import Console

from lab.findings import CheckReport
from lab.report import print_check


def test_information_rows_are_not_passed_checks():
    report = CheckReport("l", "netns", "kernel")
    report.add("t", "standby path", "data", "not probed here", True, "routes elsewhere", info=True)
    assert not report.ok  # information alone proves nothing
    report.add("t", "vpngw", "control", "IKE_SA established", True, "IKEv2")
    assert report.ok and len(report.checks) == 1
    console = Console(record=True, width=200)
    print_check(console, report)
    text = console.export_text()
    assert "INFO" in text and "all 1 checks passed" in text
    report.add("t", "vpngw", "control", "CHILD_SA installed", False, "none")
    print_check(console, report)
    assert "1 of 2 checks failed" in console.export_text()
