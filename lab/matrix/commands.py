"""`ipsec-lab matrix` and `ipsec-lab report merge`: the interop matrix from the command line.

    ipsec-lab matrix [SPEC] --strategy pairwise --only ike_version=v2 --jobs 2 \
        --json m.json --junit m.xml --html m.html
    ipsec-lab matrix --resume RESULTS.jsonl                 # continue an interrupted run
    ipsec-lab matrix --shard 1/2 --results s1.jsonl; ipsec-lab report merge s1.jsonl s2.jsonl --html m.html

Without --results the results file goes under the lab's state root (`RESULTS_DIR`, e.g.
/run/ipsec-lab/matrix_results/), never into the current directory; the run says where.

Exit status: 0 when every case ended as expected, 1 when any did not, 2 on a usage or lab error
(printed without traceback), 130 when interrupted (the labs are torn down, the results file keeps
every finished case for --resume).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from lab.errors import LabError, read_text
from lab.matrix import cases as mc
from lab.matrix import results as mr
from lab.matrix.results import CaseResult

out = Console()
err = Console(stderr=True)

_STATUS_STYLE = {"passed-positive": "green", "passed-negative": "green", "unsupported": "blue",
                 "failed": "red", "error": "bold red"}


RESULTS_DIR = "matrix_results"  # under lab.state.ROOT; no lab can take the name (labs have no '_')
RESULTS_HELP = ("Results file (JSON Lines, one case per line, written as cases finish). Default: "
                f"a new file in {RESULTS_DIR}/ under the lab state root (/run/ipsec-lab, or "
                "$IPSEC_LAB_STATE), never in the current directory; the run prints where. /run is "
                "a tmpfs: pass --results to keep them.")


def default_results_file() -> Path:
    """A new results file under the lab's state root (mode 0700 directory)."""
    from lab import state

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
        read_text(path, "matrix results", f"{option} {path}")


def resolve_backend(requested: str) -> str:
    """`auto` prefers docker when its backend is importable and an engine answers, else netns."""
    if requested not in ("auto", "netns", "docker"):
        raise LabError(f"--backend: must be netns, docker or auto (got {requested!r})")
    if requested != "auto":
        return requested
    try:
        import lab.backends.docker  # noqa: F401
        from lab.engine import engine_client

        return "docker" if engine_client() is not None else "netns"
    except ImportError:
        return "netns"


def select_cases(strategy: str | None, matrix_file: Path | None, only: Sequence[str],
                 negatives: bool | None, shard_text: str | None,
                 profile: str | None = None) -> tuple[list[mc.Case], str]:
    """The run's cases in their stable order (shard applied) and the strategy's name; the
    dimensions are the gateway profile's menus (default: Tencent's)."""
    request = mc.load_matrix_file(matrix_file, profile) if matrix_file else \
        mc.MatrixRequest(dimensions=mc.default_dimensions(profile))
    if strategy is not None:
        if strategy not in mc.STRATEGIES:
            raise LabError(f"--strategy {strategy!r}; allowed: {', '.join(mc.STRATEGIES)}")
        request.strategy = strategy
    if only:
        request.dimensions = mc.restrict(request.dimensions, mc.parse_restrictions(only), profile)
    if negatives is not None:
        request.negatives = negatives
    elif matrix_file is None:
        request.negatives = True
    if request.strategy == "ikev2-125" and only:
        raise LabError("--only does not apply to --strategy ikev2-125 (a fixed set of 125 cases)")
    cases = request.cases()
    if shard_text:
        k, n = mc.parse_shard(shard_text)
        cases = mc.shard(cases, k, n)
    return cases, request.strategy


def write_reports(results: list[CaseResult], meta: dict[str, Any], secrets: Sequence[str],
                  json_path: Path | None, junit_path: Path | None, html_path: Path | None) -> None:
    from lab.matrix.html import render_html

    for path, text in ((json_path, lambda: mr.to_json(results, meta, secrets)),
                       (junit_path, lambda: mr.to_junit(results, secrets=secrets)),
                       (html_path, lambda: render_html(results, meta, secrets))):
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text())
            err.print(f"[dim]·[/] wrote {path}")


def summary_table(results: Sequence[CaseResult]) -> Table:
    s = mr.summary(results)
    table = Table(title=f"matrix: {s['passed']}/{s['total']} as expected", show_lines=False)
    table.add_column("expected")
    table.add_column("outcome")
    table.add_column("cases", justify="right")
    table.add_column("status")
    groups: dict[tuple[str, str, str], int] = {}
    for r in results:
        key = (r.expect, r.outcome, r.status)
        groups[key] = groups.get(key, 0) + 1
    for (expect, outcome, status), n in sorted(groups.items(), key=lambda kv: (kv[0][2], kv[0][0])):
        style = _STATUS_STYLE.get(status, "")
        table.add_row(expect, outcome, str(n), f"[{style}]{status}[/]" if style else status)
    return table


def print_summary(results: Sequence[CaseResult]) -> None:
    out.print(summary_table(results))
    bad = [r for r in results if not r.passed]
    for r in bad[:20]:
        out.print(f"[red]✗[/] {r.id}: expected {r.expect!r}, got {r.outcome!r} — {r.detail[:200]}",
                  highlight=False)
    if len(bad) > 20:
        out.print(f"... and {len(bad) - 20} more (see the JSON/HTML report)")


def matrix(
    spec: Annotated[Path | None, typer.Argument(help="Base spec (its first tunnel is the base); "
                                                     "default configs/examples/default.yaml, or "
                                                     "the --profile's example.",
                                                show_default=False)] = None,
    profile: Annotated[str | None, typer.Option(help="Gateway profile whose menus are the "
                                                     "dimensions: tencent, aws or alibaba "
                                                     "(default: the base spec's).",
                                                show_default=False)] = None,
    strategy: Annotated[str | None, typer.Option(help="full, pairwise, sweep or ikev2-125 "
                                                      "(default: the matrix file's, else pairwise).",
                                                 show_default=False)] = None,
    matrix_file: Annotated[Path | None, typer.Option("--matrix", help="Matrix file (YAML: strategy, "
                                                     "dimensions, negatives, base).")] = None,
    only: Annotated[list[str] | None, typer.Option(help="Restrict a dimension: dim=v1,v2 "
                                                        "(repeatable).")] = None,
    negatives: Annotated[bool | None, typer.Option("--negatives/--no-negatives",
                                                   help="Add one negative case per failure reason "
                                                        "(default: on, or the matrix file's).",
                                                   show_default=False)] = None,
    jobs: Annotated[int | None, typer.Option(help="Labs run in parallel (default: CPU cores).",
                                             show_default=False)] = None,
    shard_text: Annotated[str | None, typer.Option("--shard", help="Run slice K of N (K/N).")] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the JSON report.")] = None,
    junit_path: Annotated[Path | None, typer.Option("--junit", help="Write JUnit XML.")] = None,
    html_path: Annotated[Path | None, typer.Option("--html", help="Write the HTML report.")] = None,
    resume: Annotated[Path | None, typer.Option(help="Results file of an interrupted run: skip "
                                                     "its finished cases and append to it.")] = None,
    results_path: Annotated[Path | None, typer.Option("--results", help=RESULTS_HELP)] = None,
    case_timeout: Annotated[float, typer.Option(help="Seconds before a case counts as timeout.")] = 10.0,
    backend: Annotated[str, typer.Option(help="netns, docker or auto.")] = "auto",
    limit: Annotated[int | None, typer.Option(help="Run at most N pending cases.")] = None,
    name: Annotated[str | None, typer.Option("--name", "-n", help="Lab name prefix (labs are "
                                             "PREFIX-1..N; default mx<pid>).")] = None,
    wire_every: Annotated[int, typer.Option(help="Wire check (capture) on every Nth case per "
                                                 "lab, and its first.")] = 25,
    # hook (lab.customer): every case's cloud side against the user's own customer config
    customer_config: Annotated[Path | None, typer.Option(help="Your swanctl.conf or ipsec.conf on "
                                                         "the customer gateway in every case.")] = None,
    customer_secrets: Annotated[Path | None, typer.Option(help="ipsec.secrets for an ipsec.conf.")] = None,
    customer_strongswan_conf: Annotated[Path | None, typer.Option(help="Your strongswan.conf.")] = None,
) -> None:
    """Run the interop matrix: many cloud settings x the customer gateway, verified per case."""
    if customer_config is not None:  # hook (lab.customer): sequential, one lab per case
        from lab.customer import matrix_command

        cases, _ = select_cases(strategy, matrix_file, only or [], False, shard_text)
        matrix_command(cases[:limit] if limit is not None else cases, spec, customer_config,
                       customer_secrets, customer_strongswan_conf, resolve_backend(backend), name,
                       json_path)
    from lab import profiles
    from lab.matrix.runner import DEFAULT_SPEC, RunInfo, RunOptions, case_secrets, default_jobs, run_matrix
    from lab.spec import load_spec

    try:
        chosen_profile = profiles.get(profile).name if profile is not None else None
    except LookupError as exc:
        raise LabError(f"--profile: {exc}") from None
    spec_path = spec or (profiles.example_spec(chosen_profile) if chosen_profile else DEFAULT_SPEC)
    base = load_spec(spec_path)
    if chosen_profile and base.vpn_gateway.profile != chosen_profile:
        raise LabError(f"--profile {chosen_profile}: the base spec {spec_path} uses the "
                       f"{base.vpn_gateway.profile} profile; give a {chosen_profile} spec (e.g. "
                       f"{profiles.example_spec(chosen_profile)}) or leave out --profile")
    chosen_profile = base.vpn_gateway.profile
    if case_timeout <= 0:
        raise LabError("--case-timeout: must be positive")
    if limit is not None and limit < 0:
        raise LabError("--limit: must be 0 or more")
    jobs = jobs if jobs is not None else default_jobs()
    if jobs < 1:
        raise LabError("--jobs: must be 1 or more")
    chosen = resolve_backend(backend)
    cases, strategy_name = select_cases(strategy, matrix_file, only or [], negatives, shard_text,
                                        chosen_profile)
    if resume is not None and results_path is not None and resume.resolve() != results_path.resolve():
        raise LabError("--resume and --results name different files; --resume appends to its file")
    if resume is not None:
        if not resume.exists():
            raise LabError(f"--resume: {resume} does not exist")
        check_results_file(resume, "--resume")
    done = mr.load_done(resume) if resume is not None else {}
    target = resume or results_path or default_results_file()
    pending = [c for c in cases if c.id not in done]
    if limit is not None:
        pending = pending[:limit]
    secrets = case_secrets(base)
    err.print(f"[dim]·[/] {len(cases)} case(s) ({strategy_name}"
              f"{', shard ' + shard_text if shard_text else ''}); {len(done)} already done, "
              f"{len(pending)} to run on {min(jobs, max(1, len(pending)))} {chosen} lab(s); "
              f"results in {target}")
    started = datetime.now(UTC)
    t0 = time.monotonic()
    info = RunInfo()
    new: list[CaseResult] = []
    failures = [0]
    stop = threading.Event()
    interrupted = False
    progress = Progress(
        TextColumn("[bold]matrix[/]"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:.1f} cases/s"), TimeRemainingColumn(),
        TextColumn("[red]{task.fields[failures]} unexpected[/]"),
        console=err, transient=False,
    )
    with mr.ResultsFile(target, secrets) as sink, progress:
        task = progress.add_task("matrix", total=len(pending), rate=0.0, failures=0)

        def on_result(result: CaseResult) -> None:
            result.shard = shard_text
            sink.write(result)
            new.append(result)
            if not result.passed:
                failures[0] += 1
                progress.console.print(f"[red]✗[/] {result.id}: expected {result.expect!r}, got "
                                       f"{result.outcome!r}", highlight=False)
            elapsed = max(time.monotonic() - t0, 1e-6)
            progress.update(task, advance=1, rate=len(new) / elapsed, failures=failures[0])

        try:
            run_matrix(pending, spec_path=spec_path, backend=chosen, jobs=jobs, name_prefix=name,
                       options=RunOptions(case_timeout=case_timeout, wire_every=wire_every),
                       on_result=on_result, progress=lambda m: progress.console.print(f"[dim]·[/] {m}"),
                       stop=stop, info=info)
        except KeyboardInterrupt:
            interrupted = True
    duration = time.monotonic() - t0
    by_id = {**done, **{r.id: r for r in new}}
    results = [by_id[c.id] for c in cases if c.id in by_id]
    executed = [r for r in new if r.outcome != mc.UNSUPPORTED]
    meta = {
        "strategy": strategy_name, "spec": str(spec_path), "profile": chosen_profile,
        "backend": info.backend or chosen,
        "dataplane": info.dataplane, "jobs": jobs, "shard": shard_text, "labs": info.labs,
        "lab_restarts": info.restarts, "started": started.isoformat(timespec="seconds"),
        "duration_s": round(duration, 2), "cases": len(cases), "ran": len(new),
        # every case run, and the ones that came out as expected, apart (a failed or errored
        # case is run but not verified)
        "cases_per_s": round(len(executed) / duration, 2) if duration > 0 and executed else None,
        "verified_per_s": round(sum(r.passed for r in executed) / duration, 2)
        if duration > 0 and executed else None,
        "results_file": str(target),
    }
    write_reports(results, meta, secrets, json_path, junit_path, html_path)
    print_summary(results)
    rate = (f", {meta['cases_per_s']} cases/s run, {meta['verified_per_s']} verified cases/s"
            if meta["cases_per_s"] else "")
    where = "" if resume or results_path else " (the default place; --results FILE chooses)"
    out.print(f"{len(new)} case(s) run in {duration:.1f}s{rate}; results: {target}{where}",
              highlight=False, soft_wrap=True)  # one line: the path stays whole in CI logs
    if interrupted:
        err.print(f"interrupted: labs torn down; continue with --resume {target}")
        raise KeyboardInterrupt
    missing = len(cases) - len(results)
    if missing:
        out.print(f"{missing} case(s) not run yet (--limit): continue with --resume {target}")
    raise typer.Exit(0 if all(r.passed for r in results) else 1)


def merge_command(
    files: Annotated[list[Path], typer.Argument(help="Results files (JSON Lines) of shards/runs.")],
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the JSON report.")] = None,
    junit_path: Annotated[Path | None, typer.Option("--junit", help="Write JUnit XML.")] = None,
    html_path: Annotated[Path | None, typer.Option("--html", help="Write the HTML report.")] = None,
) -> None:
    """Join matrix results files (shards, resumed runs) into one report."""
    for path in files:
        check_results_file(path, "report merge")
    results = mr.merge(files)
    meta = {"merged": [str(f) for f in files], "cases": len(results),
            "shards": sorted({r.shard for r in results if r.shard})}
    write_reports(results, meta, [], json_path, junit_path, html_path)
    print_summary(results)
    raise typer.Exit(0 if all(r.passed for r in results) else 1)


def register(app: typer.Typer) -> None:
    app.command("matrix")(matrix)
    report_app = typer.Typer(help="Matrix reports: merge shards and resumed runs.", no_args_is_help=True)
    report_app.command("merge")(merge_command)
    app.add_typer(report_app, name="report")
