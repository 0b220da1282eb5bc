"""Matrix results: JSON Lines resume/merge, JSON and JUnit reports, HTML page, redaction."""

from __future__ import annotations

import base64
import json
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import pytest

from lab.errors import LabError
from lab.matrix import cases as mc
from lab.matrix.html import render_html
from lab.matrix.results import (
    CaseResult,
    ResultsFile,
    load_done,
    merge,
    read_results,
    redact,
    to_json,
    to_junit,
)

SECRET = "s3cr3t-Psk!value"
META = {"strategy": "pairwise", "backend": "netns", "dataplane": "kernel",
        "started": "2024-01-01T00:00:00Z", "duration": 12.5}


def _results() -> list[CaseResult]:
    """A bit of everything: passes, expected failures, a mismatch, an error, unsupported cells."""
    cases = mc.pairwise()[:12] + mc.negatives()
    out = []
    for i, c in enumerate(cases):
        outcome = c.expect
        if i == 3:
            outcome = mc.PROPOSAL_IKE  # a positive that did not establish
        if i == 5:
            outcome = "error"
        out.append(CaseResult.of(
            c, outcome,
            negotiated={"ike": "AES_CBC-128/HMAC_SHA1_96/MODP_2048"} if outcome == mc.ESTABLISHED else {},
            timings={"ike": 12.5, "child": 3.0},
            detail=f"<b>detail</b> & psk {SECRET}",
            log=[f"charon: psk={SECRET}", "0s" + base64.b64encode(SECRET.encode()).decode(),
                 "<script>alert(1)</script>"],
        ))
    cases_sm = [c for c in mc.pairwise() if c.expect == mc.UNSUPPORTED][:2]
    out += [CaseResult.of(c, mc.UNSUPPORTED, detail="SM4 is not supported") for c in cases_sm]
    return out


def test_passed_is_outcome_equals_expect():
    results = _results()
    assert not results[3].passed and results[3].status == "failed"
    assert not results[5].passed and results[5].status == "error"
    assert results[0].passed and results[0].status == "passed-positive"
    assert [r.status for r in results if r.kind == "negative"] == ["passed-negative"] * 8
    assert results[-1].status == "unsupported" and results[-1].passed


def test_redact_hides_secrets_and_their_base64():
    b64 = base64.b64encode(SECRET.encode()).decode()
    lines = [f"psk {SECRET} end", f"0s{b64}", f"0x{SECRET.encode().hex()}", "nothing here", ""]
    out = redact(lines, [SECRET, None, ""])
    assert out == ["psk *** end", "0s***", "0x***", "nothing here", ""]
    assert redact(["a"], []) == ["a"]


def test_results_file_append_resume_and_redaction(tmp_path):
    path = tmp_path / "run" / "results.jsonl"
    results = _results()
    with ResultsFile(path, secrets=[SECRET]) as f:
        for r in results[:6]:
            f.write(r)
    text = path.read_text()
    assert SECRET not in text and base64.b64encode(SECRET.encode()).decode() not in text
    assert len(text.splitlines()) == 6
    done = load_done(path)
    assert set(done) == {r.id for r in results[:6] if r.outcome != "error"}  # errors run again
    # A run killed mid-line: the fragment is ignored, then dropped when the file is reopened.
    with path.open("a") as f:
        f.write('{"id": "half')
    assert len(read_results(path)) == 6
    with ResultsFile(path, secrets=[SECRET]) as f:
        for r in results[6:]:
            f.write(r)
    back = read_results(path)
    assert [r.id for r in back] == [r.id for r in results]
    assert back[0].params == results[0].params and back[0].timings == results[0].timings
    assert load_done(tmp_path / "missing.jsonl") == {}


def test_corrupt_line_is_an_error(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('not json\n{"id": "x"}\n')
    with pytest.raises(LabError, match=r"r.jsonl:1"):
        read_results(path)


def test_merge_dedupes_and_reports_conflicts(tmp_path):
    results = _results()
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    with ResultsFile(a) as f:
        for r in results[:8]:
            f.write(r)
    fixed = CaseResult.from_dict({**results[5].to_dict(), "outcome": results[5].expect})
    with ResultsFile(b) as f:
        for r in [*results[6:], results[0], fixed]:
            f.write(r)
    merged = merge([a, b])
    assert [r.id for r in merged] == [r.id for r in results]
    assert merged[5].passed  # a real outcome replaces an error
    c = tmp_path / "c.jsonl"
    with ResultsFile(c) as f:
        f.write(CaseResult.from_dict({**results[0].to_dict(), "outcome": mc.TIMEOUT}))
    with pytest.raises(LabError, match="conflicting"):
        merge([a, c])


def test_json_report():
    results = _results()
    report = json.loads(to_json(results, META))
    assert report["meta"] == META
    assert report["summary"]["total"] == len(results)
    assert report["summary"]["failed"] == 1 and report["summary"]["errors"] == 1
    assert report["summary"]["unsupported"] == 2
    assert report["summary"]["passed"] == len(results) - 2
    assert [c["id"] for c in report["cases"]] == [r.id for r in results]


def test_junit_report():
    results = _results()
    root = ET.fromstring(to_junit(results))
    cases = root.findall(".//testcase")
    assert [c.get("name") for c in cases] == [r.id for r in results]
    assert root.get("tests") == str(len(results))
    assert root.get("failures") == "1" and root.get("errors") == "1"
    failed = cases[3]
    assert "expected 'established'" in failed.find("failure").get("message")
    assert mc.PROPOSAL_IKE in failed.find("failure").get("message")
    assert cases[5].find("error") is not None
    unsupported = cases[-1]
    assert unsupported.find("failure") is None and unsupported.find("skipped") is None
    assert "unsupported" in unsupported.find("system-out").text
    assert {c.get("classname") for c in cases} >= {"matrix.ikev1.main", "matrix.ikev2"}


def test_junit_survives_control_characters():
    case = mc.pairwise()[0]
    r = CaseResult.of(case, mc.TIMEOUT, detail="bad \x01 byte", log=["\x1b[31mred\x1b[0m"])
    ET.fromstring(to_junit([r]))


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids: set[str] = set()
        self.tags: list[str] = []
        self.urls: list[str] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self._in_script = tag == "script"
        for name, value in attrs:
            if name == "data-id":
                self.ids.add(value)
            if name in ("src", "href") or (value and "://" in value):
                self.urls.append(value)

    def handle_endtag(self, tag):
        self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.scripts.append(data)


def test_html_report():
    results = _results()
    page = render_html(results, META)
    parser = _Collect()
    parser.feed(page)
    assert {r.id for r in results} <= parser.ids
    assert not parser.urls and "http://" not in page and "https://" not in page
    assert "<script>alert(1)</script>" not in page and "<b>detail</b>" not in page
    assert parser.tags.count("script") == 2  # the data island and the page's own script
    data = json.loads(parser.scripts[0])
    assert set(data) == {r.id for r in results}
    assert data[results[0].id]["log"][-1] == "<script>alert(1)</script>"
    assert "passed-negative" in page and "unsupported" in page and "c-failed" in page


def test_reports_redact_again_when_given_secrets():
    results = _results()
    for text in (to_json(results, META, secrets=[SECRET]), to_junit(results, secrets=[SECRET]),
                 render_html(results, META, secrets=[SECRET])):
        assert SECRET not in text and base64.b64encode(SECRET.encode()).decode() not in text
