"""Matrix results: one record per case, kept as JSON Lines while running, reported as JSON and JUnit.

The JSON Lines file is append-only and flushed per case, so an interrupted run loses at most the
case in flight and `--resume` reads back what is done; shards write their own files and `merge`
joins them. Logs were redacted by the executor; every writer here redacts again, defensively.
"""

from __future__ import annotations

import base64
import json
import os
import re
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lab import state
from lab.errors import LabError, read_text
from lab.matrix.cases import (
    DEFAULT_IMPLEMENTATION,
    ERROR,
    IMPLEMENTATION_SUFFIX,
    UNSUPPORTED,
    UNSUPPORTED_LIBRESWAN,
    Case,
    implementation_of,
)

MASK = "***"


def _secret_forms(secret: str) -> list[str]:
    """The secret as written, and the encodings it may appear in (ipsec.secrets' 0s/0x forms)."""
    raw = secret.encode()
    b64 = base64.b64encode(raw).decode()
    forms = {secret, b64, b64.rstrip("="), base64.urlsafe_b64encode(raw).decode().rstrip("="),
             raw.hex(), raw.hex().upper()}
    return sorted((f for f in forms if f), key=len, reverse=True)


def redact(lines: Iterable[str], secrets: Iterable[str | None]) -> list[str]:
    """`lines` with every secret, and its base64/hex forms, replaced by `***`."""
    forms = sorted({f for s in secrets if s for f in _secret_forms(s)}, key=len, reverse=True)
    if not forms:
        return list(lines)
    pattern = re.compile("|".join(re.escape(f) for f in forms))
    return [pattern.sub(MASK, line) for line in lines]


@dataclass
class CaseResult:
    """What one case ended in. `passed` is derived: the outcome is what the case expected."""

    id: str
    params: dict[str, str]
    kind: str
    expect: str
    outcome: str  # "established", a reason from lab.matrix.cases, or "error"
    negotiated: dict[str, Any] = field(default_factory=dict)  # ike/esp algorithms as list-sas says
    timings: dict[str, float] = field(default_factory=dict)  # ms per phase
    detail: str = ""
    log: list[str] = field(default_factory=list)
    shard: str | None = None
    implementation: str = DEFAULT_IMPLEMENTATION  # the customer gateway's IKE implementation
    passed: bool = field(init=False)

    def __post_init__(self) -> None:
        self.passed = self.outcome == self.expect

    @classmethod
    def of(cls, case: Case, outcome: str, **kwargs: Any) -> CaseResult:
        return cls(case.id, dict(case.params), case.kind, case.expect, outcome,
                   implementation=implementation_of(case), **kwargs)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CaseResult:
        if not isinstance(data, dict):
            raise ValueError("a result is a JSON object")
        names = {f.name for f in fields(cls) if f.init}
        missing = {"id", "params", "kind", "expect", "outcome"} - set(data)
        if missing:
            raise ValueError(f"missing {', '.join(sorted(missing))}")
        return cls(**{k: v for k, v in data.items() if k in names})

    def redacted(self, secrets: Iterable[str | None]) -> CaseResult:
        secrets = list(secrets)
        out = CaseResult.from_dict(self.to_dict())
        out.log = redact(self.log, secrets)
        out.detail = redact([self.detail], secrets)[0]
        return out

    @property
    def status(self) -> str:
        """For reports: passed-positive, passed-negative, unsupported, failed or error."""
        if self.passed:
            return "unsupported" if self.expect in (UNSUPPORTED, UNSUPPORTED_LIBRESWAN) \
                else f"passed-{self.kind}"
        return "error" if self.outcome == ERROR else "failed"


class ResultsFile:
    """Append-only JSON Lines: one finished case per line, flushed (and synced) as it is written."""

    def __init__(self, path: str | Path, secrets: Iterable[str | None] = ()):
        self.path = Path(path)
        self.secrets = [s for s in secrets if s]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _drop_torn_line(self.path)
        self._file = self.path.open("a", encoding="utf-8")

    def write(self, result: CaseResult) -> None:
        line = json.dumps(result.redacted(self.secrets).to_dict(), sort_keys=True)
        self._file.write(line + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> ResultsFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _drop_torn_line(path: Path) -> None:
    """A run killed mid-write leaves a fragment after the last newline: cut it, so appends stay
    one record per line (that case simply runs again)."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with path.open("r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)


def read_results(path: str | Path) -> list[CaseResult]:
    """Every record in file order. A torn last line (killed run) is ignored; other bad lines fail."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise LabError(f"{path}: cannot read results ({exc.strerror})") from None
    lines = text.split("\n")
    torn = len(lines) - 1 if not text.endswith("\n") else -1
    out = []
    for number, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(CaseResult.from_dict(json.loads(line)))
        except (ValueError, TypeError) as exc:
            if number == torn:
                continue
            raise LabError(f"{path}:{number + 1}: not a matrix result ({exc})") from None
    return out


def load_done(path: str | Path) -> dict[str, CaseResult]:
    """Cases already finished, for --resume: the latest record per id; `error` ones are not done
    (the lab failed, not the case), so they run again."""
    path = Path(path)
    if not path.exists():
        return {}
    latest: dict[str, CaseResult] = {}
    for r in read_results(path):
        latest[r.id] = r
    return {i: r for i, r in latest.items() if r.outcome != ERROR}


def merge(paths: Sequence[str | Path]) -> list[CaseResult]:
    """Join shard files: one result per id, in first-seen order. A real outcome replaces `error`;
    two different real outcomes for one id are a conflict."""
    merged: dict[str, CaseResult] = {}
    origin: dict[str, str] = {}
    for path in paths:
        latest: dict[str, CaseResult] = {}
        for r in read_results(path):
            latest[r.id] = r
        for i, r in latest.items():
            seen = merged.get(i)
            if seen is None or (seen.outcome == ERROR and r.outcome != ERROR):
                merged[i], origin[i] = r, str(path)
            elif r.outcome != ERROR and (r.outcome, r.expect) != (seen.outcome, seen.expect):
                raise LabError(
                    f"case {i}: conflicting results, {seen.outcome!r} in {origin[i]} "
                    f"and {r.outcome!r} in {path}"
                )
    return list(merged.values())


def implementation_differences(results: Sequence[CaseResult]) -> list[dict[str, Any]]:
    """The cloud settings run against more than one customer implementation whose outcomes
    differ: the interop findings that only a second IKE stack shows, in the results' order."""
    groups: dict[str, dict[str, CaseResult]] = {}
    for r in results:
        groups.setdefault(r.id.split(IMPLEMENTATION_SUFFIX)[0], {})[r.implementation] = r
    out = []
    for case, by_impl in groups.items():
        if len(by_impl) > 1 and len({r.outcome for r in by_impl.values()}) > 1:
            first = next(iter(by_impl.values()))
            out.append({"case": case, "kind": first.kind, "params": first.params,
                        "outcomes": {i: r.outcome for i, r in by_impl.items()},
                        "details": {i: r.detail for i, r in by_impl.items()}})
    return out


def summary(results: Sequence[CaseResult]) -> dict[str, Any]:
    statuses = Counter(r.status for r in results)
    kinds = {
        kind: {"total": sum(r.kind == kind for r in results),
               "passed": sum(r.kind == kind and r.passed for r in results)}
        for kind in ("positive", "negative")
    }
    return {
        "total": len(results),
        "passed": sum(r.passed for r in results),
        "failed": statuses["failed"],
        "errors": statuses["error"],
        "unsupported": statuses["unsupported"],
        "by_kind": kinds,
        "by_outcome": dict(sorted(Counter(r.outcome for r in results).items())),
        "by_implementation": dict(sorted(Counter(r.implementation for r in results).items())),
        "implementation_differences": len(implementation_differences(results)),
    }


def redact_all(results: Sequence[CaseResult], secrets: Iterable[str | None]) -> list[CaseResult]:
    secrets = [s for s in secrets if s]
    return [r.redacted(secrets) for r in results] if secrets else list(results)


def to_json(results: Sequence[CaseResult], meta: dict[str, Any], secrets: Iterable[str | None] = ()) -> str:
    """The full report: meta (strategy, backend, dataplane, started, duration), summary, cases."""
    results = redact_all(results, secrets)
    return json.dumps(
        {"meta": meta, "summary": summary(results),
         "implementation_differences": implementation_differences(results),
         "cases": [r.to_dict() for r in results]},
        indent=2, default=str,
    )


_XML_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _xml(text: str) -> str:
    """XML 1.0 cannot carry most control characters; daemon logs sometimes do."""
    return _XML_BAD.sub("?", text)


def junit_classname(params: dict[str, str]) -> str:
    version = params.get("ike_version", "?")
    if version == "v1":
        return f"matrix.ikev1.{params.get('exchange_mode', 'main')}"
    return f"matrix.ike{version}"


def to_junit(
    results: Sequence[CaseResult], name: str = "ipsec-lab matrix", secrets: Iterable[str | None] = (),
) -> str:
    """JUnit XML: one testcase per case; unsupported cells that were refused as expected pass,
    with a property and system-out saying so."""
    results = redact_all(results, secrets)
    s = summary(results)
    total_s = sum(sum(r.timings.values()) for r in results) / 1000
    root = ET.Element("testsuites", name=name, tests=str(s["total"]), failures=str(s["failed"]),
                      errors=str(s["errors"]), time=f"{total_s:.3f}")
    suite = ET.SubElement(root, "testsuite", name=name, tests=str(s["total"]),
                          failures=str(s["failed"]), errors=str(s["errors"]), skipped="0",
                          time=f"{total_s:.3f}")
    for r in results:
        case = ET.SubElement(suite, "testcase", classname=junit_classname(r.params), name=_xml(r.id),
                             time=f"{sum(r.timings.values()) / 1000:.3f}")
        props = ET.SubElement(case, "properties")
        for key, value in [("kind", r.kind), ("expect", r.expect), ("outcome", r.outcome),
                           ("implementation", r.implementation), *sorted(r.params.items())]:
            ET.SubElement(props, "property", name=key, value=_xml(str(value)))
        message = f"expected {r.expect!r}, got {r.outcome!r}"
        if r.status == "failed":
            failure = ET.SubElement(case, "failure", message=_xml(message), type="OutcomeMismatch")
            failure.text = _xml(r.detail)
        elif r.status == "error":
            error = ET.SubElement(case, "error", message=_xml(message), type="LabError")
            error.text = _xml(r.detail)
        out = []
        if r.status == "unsupported":
            ET.SubElement(props, "property", name="note", value="refused as expected: " + r.expect)
            out.append(f"unsupported cell, refused as expected ({r.expect})")
        if r.negotiated:
            out.append("negotiated: " + json.dumps(r.negotiated, sort_keys=True))
        if r.detail and r.passed:
            out.append(r.detail)
        out += r.log
        if out:
            ET.SubElement(case, "system-out").text = _xml("\n".join(out))
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


RESULTS_DIR = "matrix_results"  # under lab.state.ROOT; no lab can take the name (labs have no '_')


def default_results_file() -> Path:
    """A new results file under the lab's state root (mode 0700 directory)."""
    directory = state.ROOT / RESULTS_DIR
    try:
        state.ROOT.mkdir(parents=True, exist_ok=True, mode=0o755)
        directory.mkdir(exist_ok=True, mode=0o700)
    except OSError as exc:
        raise LabError(f"{directory}: cannot create the default results directory "
                       f"({exc.strerror}); pass --results FILE") from None
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return directory / f"matrix-results-{stamp}-{os.getpid()}.jsonl"


def check_results_file(path: Path, option: str) -> None:
    """A results file the user gave (--resume, report merge) must be UTF-8 text if it exists."""
    if path.exists():
        read_text(path, "matrix results", f"{option} {path}", limit=None)
