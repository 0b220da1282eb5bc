"""`ipsec-lab matrix` and `ipsec-lab report merge`: the interop matrix from the command line.

    ipsec-lab matrix [SPEC] --strategy pairwise --only ike_version=v2 --jobs 2 \
        --json m.json --junit m.xml --html m.html
    ipsec-lab matrix --resume RESULTS.jsonl                 # continue an interrupted run
    ipsec-lab matrix --shard 1/2 --results s1.jsonl; ipsec-lab report merge s1.jsonl s2.jsonl --html m.html
    ipsec-lab matrix [SPEC] --customer-config swanctl.conf  # your own config against each case

Without --results the results file goes under the lab's state root (`RESULTS_DIR`, e.g.
/run/ipsec-lab/matrix_results/), never into the current directory; the run says where.

The runner, the HTML report and the customer-config matrix are imported when a run needs them:
they load the whole verification stack, which `ipsec-lab --help` and every other command would
otherwise pay for at start-up.

Exit status: 0 when every case ended as expected, 1 when any did not, 2 on a usage or lab error
(printed without traceback), 130 when interrupted (the labs are torn down, the results file keeps
every finished case for --resume).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from lab import profiles
from lab.backends import choose_backend
from lab.cli.console import err, out, progress
from lab.customer import load_own
from lab.errors import LabError
from lab.matrix import cases as mc
from lab.matrix import results as mr
from lab.matrix.results import RESULTS_DIR, CaseResult, check_results_file, default_results_file
from lab.matrix.select import select_cases
from lab.spec import DEFAULT_SPEC, load_spec

_STATUS_STYLE = {"passed-positive": "green", "passed-negative": "green", "unsupported": "blue",
                 "failed": "red", "error": "bold red"}

RESULTS_HELP = ("Results file (JSON Lines, one case per line, written as cases finish). Default: "
                f"a new file in {RESULTS_DIR}/ under the lab state root (/run/ipsec-lab, or "
                "$IPSEC_LAB_STATE), never in the current directory; the run prints where. /run is "
                "a tmpfs: pass --results to keep them.")

JsonOut = Annotated[Path | None, typer.Option("--json", help="Write the JSON report.")]
JunitOut = Annotated[Path | None, typer.Option("--junit", help="Write JUnit XML.")]
HtmlOut = Annotated[Path | None, typer.Option("--html", help="Write the HTML report.")]


def write_reports(results: list[CaseResult], meta: dict[str, Any], secrets: Sequence[str],
                  json_path: Path | None, junit_path: Path | None, html_path: Path | None) -> None:
    from lab.matrix.html import render_html  # at run time: see the module docstring

    for path, text in ((json_path, lambda: mr.to_json(results, meta, secrets)),
                       (junit_path, lambda: mr.to_junit(results, secrets=secrets)),
                       (html_path, lambda: render_html(results, meta, secrets))):
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text())
            progress(f"wrote {path}")


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


def differences_table(results: Sequence[CaseResult]) -> Table | None:
    """The cloud settings whose outcome depends on the customer's IKE implementation."""
    rows = mr.implementation_differences(results)
    if not rows:
        return None
    impls = list(dict.fromkeys(i for row in rows for i in row["outcomes"]))
    table = Table(title=f"{len(rows)} cloud setting(s) where the customer implementations differ")
    table.add_column("case")
    for impl in impls:
        table.add_column(impl)
    for row in rows:
        table.add_row(row["case"], *(row["outcomes"].get(i, "-") for i in impls))
    return table


def print_summary(results: Sequence[CaseResult]) -> None:
    out.print(summary_table(results))
    if (differences := differences_table(results)) is not None:
        out.print(differences)
    bad = [r for r in results if not r.passed]
    for r in bad[:20]:
        out.print(f"[red]✗[/] {r.id}: expected {r.expect!r}, got {r.outcome!r} — {r.detail[:200]}",
                  highlight=False)
    if len(bad) > 20:
        out.print(f"... and {len(bad) - 20} more (see the JSON/HTML report)")


def customer_matrix(cases: list[mc.Case], spec: Path | None, config: Path, secrets: Path | None,
                    strongswan_conf: Path | None, backend: str, name: str | None,
                    json_path: Path | None) -> NoReturn:
    """`matrix --customer-config`: a table of cloud settings x "does your config interoperate,
    and if not why"; exit 0 when every case interoperates."""
    from lab.matrix.customer import run_matrix  # at run time: see the module docstring

    load_own(config, secrets, strongswan_conf)  # fail early on an unreadable config
    rows = run_matrix(cases, spec or DEFAULT_SPEC,
                      lambda: load_own(config, secrets, strongswan_conf), backend,
                      name or "mxcust", lambda m: progress(m, highlight=False))
    table = Table(title=f"matrix: your {config} against {len(rows)} cloud setting(s)")
    for column in ("case", "cloud", "interoperates", "why / advice"):
        table.add_column(column, overflow="fold")
    for r in rows:
        table.add_row(r["id"], ", ".join(f"{k}={v}" for k, v in r["cloud"].items()),
                      "[green]yes[/]" if r["interoperates"] else "[red]no[/]",
                      "\n".join([r["why"], *r["advice"]]).strip())
    out.print(table)
    if json_path is not None:
        json_path.write_text(json.dumps(rows, indent=2))
    raise typer.Exit(0 if rows and all(r["interoperates"] for r in rows) else 1)


def _base_spec(spec: Path | None, profile: str | None) -> tuple[Path, Any, str]:
    """The base spec's path, the spec and its profile; `--profile` picks its example spec, and
    must match the spec given."""
    try:
        chosen = profiles.get(profile).name if profile is not None else None
    except LookupError as exc:
        raise LabError(f"--profile: {exc}") from None
    spec_path = spec or (profiles.example_spec(chosen) if chosen else DEFAULT_SPEC)
    base = load_spec(spec_path)
    if chosen and base.vpn_gateway.profile != chosen:
        raise LabError(f"--profile {chosen}: the base spec {spec_path} uses the "
                       f"{base.vpn_gateway.profile} profile; give a {chosen} spec (e.g. "
                       f"{profiles.example_spec(chosen)}) or leave out --profile")
    return spec_path, base, base.vpn_gateway.profile


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
                                                        "(repeatable); implementation=strongswan,"
                                                        "libreswan runs every case against each "
                                                        "customer implementation.")] = None,
    negatives: Annotated[bool | None, typer.Option("--negatives/--no-negatives",
                                                   help="Add one negative case per failure reason "
                                                        "(default: on, or the matrix file's).",
                                                   show_default=False)] = None,
    jobs: Annotated[int | None, typer.Option(help="Labs run in parallel (default: CPU cores).",
                                             show_default=False)] = None,
    shard_text: Annotated[str | None, typer.Option("--shard", help="Run slice K of N (K/N).")] = None,
    json_path: JsonOut = None,
    junit_path: JunitOut = None,
    html_path: HtmlOut = None,
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
    from lab.matrix import runner  # at run time: see the module docstring

    spec_path, base, chosen_profile = _base_spec(spec, profile)
    if customer_config is not None:  # hook (lab.customer): sequential, one lab per case
        # the base spec's menus: its profile and gateway generation, as for the lab's own side
        cases, _ = select_cases(strategy, matrix_file, only or [], False, shard_text,
                                chosen_profile, False, base.vpn_gateway.generation)
        if any(mc.implementation_of(c) != mc.DEFAULT_IMPLEMENTATION for c in cases):
            raise LabError("--customer-config: the customer side is your own config, so the "
                           "implementation dimension does not apply (drop --only "
                           "implementation=...)")
        customer_matrix(cases[:limit] if limit is not None else cases, spec_path, customer_config,
                        customer_secrets, customer_strongswan_conf, choose_backend(backend)[0].name,
                        name, json_path)
    if case_timeout <= 0:
        raise LabError("--case-timeout: must be positive")
    if limit is not None and limit < 0:
        raise LabError("--limit: must be 0 or more")
    jobs = jobs if jobs is not None else runner.default_jobs()
    if jobs < 1:
        raise LabError("--jobs: must be 1 or more")
    chosen = choose_backend(backend)[0].name
    cases, strategy_name = select_cases(strategy, matrix_file, only or [], negatives, shard_text,
                                        chosen_profile,
                                        base.tunnels[0].customer_gateway.behind_nat is not None,
                                        base.vpn_gateway.generation,
                                        base.tunnels[0].customer_gateway.implementation)
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
    secrets = runner.case_secrets(base)
    progress(f"{len(cases)} case(s) ({strategy_name}{', shard ' + shard_text if shard_text else ''}); "
             f"{len(done)} already done, {len(pending)} to run on "
             f"{min(jobs, max(1, len(pending)))} {chosen} lab(s); results in {target}")
    started = datetime.now(UTC)
    t0 = time.monotonic()
    info = runner.RunInfo()
    new: list[CaseResult] = []
    failures = [0]
    stop = threading.Event()
    interrupted = False
    bar = Progress(
        TextColumn("[bold]matrix[/]"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:.1f} cases/s"), TimeRemainingColumn(),
        TextColumn("[red]{task.fields[failures]} unexpected[/]"),
        console=err, transient=False,
    )
    with mr.ResultsFile(target, secrets) as sink, bar:
        task = bar.add_task("matrix", total=len(pending), rate=0.0, failures=0)

        def on_result(result: CaseResult) -> None:
            result.shard = shard_text
            sink.write(result)
            new.append(result)
            if not result.passed:
                failures[0] += 1
                err.print(f"[red]✗[/] {result.id}: expected {result.expect!r}, got "
                          f"{result.outcome!r}", highlight=False)
            elapsed = max(time.monotonic() - t0, 1e-6)
            bar.update(task, advance=1, rate=len(new) / elapsed, failures=failures[0])

        try:
            runner.run_matrix(pending, spec_path=spec_path, backend=chosen, jobs=jobs, name_prefix=name,
                              options=runner.RunOptions(case_timeout=case_timeout, wire_every=wire_every),
                              on_result=on_result, progress=progress, stop=stop, info=info)
        except KeyboardInterrupt:
            interrupted = True
    duration = time.monotonic() - t0
    by_id = {**done, **{r.id: r for r in new}}
    results = [by_id[c.id] for c in cases if c.id in by_id]
    executed = [r for r in new if r.outcome not in (mc.UNSUPPORTED, mc.UNSUPPORTED_LIBRESWAN)]
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
    json_path: JsonOut = None,
    junit_path: JunitOut = None,
    html_path: HtmlOut = None,
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
