"""`ipsec-lab scenario ...`: the behaviour experiments from the command line.

    ipsec-lab scenario dpd|failover|negotiation|rekey|hostile|nat [SPEC] [--backend B] [--time-scale S]
                       [--json F] [--junit F] [--html F]

Each command runs one or more variants of an experiment, each on a fresh lab built from SPEC's
first tunnel (default configs/examples/default.yaml) and torn down afterwards, prints a verdict
table per variant, writes the reports asked for and exits 1 if any verdict failed.

`--backend` defaults to netns (not `up`'s auto): scenario labs are throwaway and timing-sensitive,
netns needs no engine and, unlike Docker's address pools, lets several labs with the same addresses
run side by side. `--backend auto` picks docker when an engine answers, like `up`.

`--time-scale` defaults to 1.0: the cloud's real DPD timeouts and SA lifetimes. A smaller value
(0 < S <= 1) shortens them for quick runs; every report states the scale it ran at.

Each command imports its experiment when it runs: together they load the whole verification
stack, which `ipsec-lab --help` and every other command would otherwise pay for at start-up.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Annotated

import typer

from lab import catalogue as cat
from lab.cli.console import out, progress
from lab.errors import LabError
from lab.scenarios.report import ScenarioResult, print_summary, write_outputs
from lab.spec import DEFAULT_SPEC, load_spec

BACKENDS = ("netns", "docker", "auto")
VERSIONS = {"v1": ["v1"], "v2": ["v2"], "both": ["v1", "v2"]}
DPD_ACTIONS = {"disconnect": ["disconnect"], "retry": ["retry"], "both": ["disconnect", "retry"]}
NEGOTIATION_TYPES = tuple(cat.NEGOTIATION_TYPES)
TRIGGERS = {"time": ["time"], "volume": ["volume"], "both": ["time", "volume"]}
FLOOD_MAX = 1000

Spec = Annotated[Path | None, typer.Argument(help="Base tunnel spec (its first tunnel is used); "
                                             "default configs/examples/default.yaml.",
                                             show_default=False)]
BackendOpt = Annotated[str, typer.Option("--backend", help="netns, docker or auto (docker when an "
                                         "engine answers).")]
TimeScale = Annotated[float, typer.Option("--time-scale", help="Multiply DPD timeouts and SA lifetimes "
                                          "(0 < S <= 1); 1.0 = the cloud's real values.")]
JsonOut = Annotated[Path | None, typer.Option("--json", help="Write the results as JSON.")]
JunitOut = Annotated[Path | None, typer.Option("--junit", help="Write the verdicts as JUnit XML.")]
HtmlOut = Annotated[Path | None, typer.Option("--html", help="Write an HTML report with timelines.")]
NameOpt = Annotated[str | None, typer.Option("--name", help="Lab name for the runs (default: derived "
                                             "from the scenario and the process id).")]
VersionOpt = Annotated[str, typer.Option("--version", help="IKE version: v1, v2 or both.")]

Runs = list[tuple[str, Callable[[], ScenarioResult]]]


def _choice(option: str, value: str, allowed: Collection[str]) -> str:
    if value not in allowed:
        raise LabError(f"{option}: must be one of {', '.join(allowed)} (got {value!r})")
    return value


def _common(spec: Path | None, backend: str, time_scale: float) -> Path | None:
    _choice("--backend", backend, BACKENDS)
    if not 0 < time_scale <= 1:
        raise LabError(f"--time-scale: must be > 0 and <= 1 (got {time_scale}); 1.0 runs the "
                       "cloud's real timeouts and lifetimes")
    if spec is not None and not spec.is_file():
        raise LabError(f"spec {spec}: no such file")
    return spec


def _run(runs: Runs, json_path: Path | None, junit_path: Path | None, html_path: Path | None,
         time_scale: float) -> None:
    scale = ("time scale 1.0: the cloud's real timeouts and lifetimes" if time_scale == 1
             else f"time scale {time_scale}: timeouts and lifetimes shortened for a quick run")
    results: list[ScenarioResult] = []
    try:
        for label, run in runs:
            progress(f"{label} ({scale})")
            results.append(run())
            print_summary(out, results[-1:])
    finally:  # what ran is reported even when a later variant raised
        write_outputs(results, json_path, junit_path, html_path)
    failed = [f"{r.scenario}: {r.variant}" for r in results if not r.ok]
    out.print(f"{len(results) - len(failed)} of {len(results)} scenario run(s) passed ({scale})"
              + (f"; failed: {', '.join(failed)}" if failed else ""))
    if failed:
        raise typer.Exit(1)


def dpd(
    spec: Spec = None,
    version: VersionOpt = "both",
    action: Annotated[str, typer.Option("--action", help="DPD action: disconnect (clear), retry "
                                        "(restart) or both.")] = "both",
    timeout: Annotated[int | None, typer.Option("--timeout", help="DPD timeout in seconds, 30-60 "
                                                "(default: the spec's).", show_default=False)] = None,
    dpd_state: Annotated[str, typer.Option("--dpd", help="on: DPD enabled; off: DPD disabled (after a "
                                           "cut nobody may declare the peer dead).")] = "on",
    backend: BackendOpt = "netns",
    time_scale: TimeScale = 1.0,
    name: NameOpt = None,
    json_path: JsonOut = None,
    junit_path: JunitOut = None,
    html_path: HtmlOut = None,
) -> None:
    """Cut the path under traffic: who declares the peer dead, when, and what the action does."""
    from lab.scenarios.dpd import run_dpd, run_dpd_off  # at run time: see the module docstring

    spec = _common(spec, backend, time_scale)
    versions = VERSIONS[_choice("--version", version, VERSIONS)]
    actions = DPD_ACTIONS[_choice("--action", action, DPD_ACTIONS)]
    _choice("--dpd", dpd_state, ("on", "off"))
    if timeout is None:
        timeout = load_spec(spec or DEFAULT_SPEC).tunnels[0].dpd.timeout
    low, high = cat.DPD_TIMEOUT_RANGE
    if not low <= timeout <= high:
        raise LabError(f"--timeout: the cloud's DPD timeout is {low}-{high} s (got {timeout})")
    runs: Runs = []
    for v in versions:
        if dpd_state == "off":
            runs.append((f"IKE{v} DPD off, cut for 2 x {timeout} s",
                         functools.partial(run_dpd_off, spec, backend=backend, version=v, timeout=timeout,
                                           time_scale=time_scale, name=name)))
            continue
        for a in actions:
            runs.append((f"IKE{v} DPD {timeout} s {a}",
                         functools.partial(run_dpd, spec, backend=backend, version=v, action=a,
                                           timeout=timeout, time_scale=time_scale, name=name)))
    _run(runs, json_path, junit_path, html_path, time_scale)


def negotiation(
    spec: Spec = None,
    negotiation_type: Annotated[str, typer.Option("--type", help="active, passive, "
                                                  "traffic-triggered or all.")] = "all",
    version: VersionOpt = "v2",
    backend: BackendOpt = "netns",
    time_scale: TimeScale = 1.0,
    name: NameOpt = None,
    json_path: JsonOut = None,
    junit_path: JunitOut = None,
    html_path: HtmlOut = None,
) -> None:
    """Who sends the first IKE packet, when, and on what cue (from a capture on the wire)."""
    from lab.scenarios.negotiation import run_negotiation  # at run time: see the module docstring

    spec = _common(spec, backend, time_scale)
    if time_scale != 1:
        raise LabError("--time-scale: the negotiation scenario has no timeouts to shorten; run it "
                       "at 1.0")
    types = list(NEGOTIATION_TYPES) if negotiation_type == "all" else [
        _choice("--type", negotiation_type, (*NEGOTIATION_TYPES, "all"))]
    versions = VERSIONS[_choice("--version", version, VERSIONS)]
    runs: Runs = [(f"negotiation {t} IKE{v}",
                   functools.partial(run_negotiation, spec, backend=backend, negotiation_type=t,
                                     version=v, name=name))
                  for v in versions for t in types]
    _run(runs, json_path, junit_path, html_path, time_scale)


def rekey(
    spec: Spec = None,
    version: VersionOpt = "both",
    trigger: Annotated[str, typer.Option("--trigger", help="time (lifetimes), volume (IPsec KB "
                                         "lifetime) or both.")] = "time",
    rekeys: Annotated[int, typer.Option("--rekeys", help="CHILD_SA rekeys to run through (1-20).")] = 3,
    backend: BackendOpt = "netns",
    time_scale: TimeScale = 1.0,
    name: NameOpt = None,
    json_path: JsonOut = None,
    junit_path: JunitOut = None,
    html_path: HtmlOut = None,
) -> None:
    """Rekey under a running stream: SPIs replaced, nothing lost or duplicated."""
    from lab.scenarios.rekey import run_rekey  # at run time: see the module docstring

    spec = _common(spec, backend, time_scale)
    versions = VERSIONS[_choice("--version", version, VERSIONS)]
    triggers = TRIGGERS[_choice("--trigger", trigger, TRIGGERS)]
    if not 1 <= rekeys <= 20:
        raise LabError(f"--rekeys: must be 1-20 (got {rekeys})")
    runs: Runs = [(f"rekey IKE{v} {t}",
                   functools.partial(run_rekey, spec, backend=backend, version=v, trigger=t,
                                     time_scale=time_scale, rekeys=rekeys, name=name))
                  for v in versions for t in triggers]
    _run(runs, json_path, junit_path, html_path, time_scale)


def hostile(
    spec: Spec = None,
    version: VersionOpt = "v2",
    flood: Annotated[int, typer.Option("--flood", help=f"Spoofed IKE_SA_INIT per gateway (0-{FLOOD_MAX})."
                                       )] = 100,
    backend: BackendOpt = "netns",
    time_scale: TimeScale = 1.0,
    name: NameOpt = None,
    json_path: JsonOut = None,
    junit_path: JunitOut = None,
    html_path: HtmlOut = None,
) -> None:
    """Malformed IKE, a bounded spoofed flood, unknown-SPI and replayed ESP at a live tunnel."""
    from lab.scenarios.hostile import run_hostile  # at run time: see the module docstring

    spec = _common(spec, backend, time_scale)
    if time_scale != 1:
        raise LabError("--time-scale: the hostile scenario has no timeouts to shorten; run it at 1.0")
    versions = VERSIONS[_choice("--version", version, VERSIONS)]
    if not 0 <= flood <= FLOOD_MAX:
        raise LabError(f"--flood: must be 0-{FLOOD_MAX} packets per gateway (got {flood})")
    runs: Runs = [(f"hostile IKE{v}, flood {flood}",
                   functools.partial(run_hostile, spec, backend=backend, version=v, flood=flood, name=name))
                  for v in versions]
    _run(runs, json_path, junit_path, html_path, time_scale)


def failover(
    spec: Spec = None,
    backend: BackendOpt = "netns",
    interval_ms: Annotated[int, typer.Option(help="Health-check probe interval (1000-5000 ms).")] = 1000,
    threshold: Annotated[int, typer.Option(help="Failed probes before unhealthy (3-8).")] = 3,
    timeout_ms: Annotated[int, typer.Option(help="Probe timeout (10-5000 ms).")] = 500,
    name: NameOpt = None,
    json_path: JsonOut = None,
    junit_path: JunitOut = None,
    html_path: HtmlOut = None,
) -> None:
    """Primary/secondary failover on the health check: outage against the bound, failback,
    both down, a flapping primary (lab.scenarios.failover). Runs at the cloud's real values."""
    from lab.scenarios.failover import run_failover  # at run time: see the module docstring

    for option, value, (lo, hi) in (("--interval-ms", interval_ms, cat.HEALTH_INTERVAL_MS),
                                    ("--threshold", threshold, cat.HEALTH_THRESHOLD),
                                    ("--timeout-ms", timeout_ms, cat.HEALTH_TIMEOUT_MS)):
        if not lo <= value <= hi:
            raise LabError(f"{option}: the cloud's health check takes {lo}-{hi} (got {value})")
    spec = _common(spec, backend, 1.0)
    _run([("failover", lambda: run_failover(spec, backend=backend, interval_ms=interval_ms,
                                            threshold=threshold, timeout_ms=timeout_ms, name=name))],
         json_path, junit_path, html_path, 1.0)


def nat(
    spec: Spec = None,
    udp_timeout: Annotated[int, typer.Option(help="Seconds the NAT keeps an idle UDP mapping "
                                             "(5-3600).")] = 8,
    keepalive: Annotated[str, typer.Option(help="on, off or both: NAT-T keepalives from the "
                                           "customer gateway.")] = "both",
    interval: Annotated[int | None, typer.Option(help="Seconds between keepalives when on "
                                                 "(default: less than half the NAT's timeout).",
                                                 show_default=False)] = None,
    quiet: Annotated[float | None, typer.Option(help="Seconds of silence on the tunnel (default: "
                                                "1.5 x the NAT's timeout).", show_default=False)] = None,
    version: Annotated[str, typer.Option("--version", help="IKE version: v1 or v2.")] = "v2",
    backend: BackendOpt = "netns",
    name: NameOpt = None,
    json_path: JsonOut = None,
    junit_path: JunitOut = None,
    html_path: HtmlOut = None,
) -> None:
    """Behind a NAT that forgets idle mappings: do NAT-T keepalives keep an idle tunnel alive?"""
    from lab.scenarios.nat import run_nat_keepalive  # at run time: see the module docstring

    spec = _common(spec, backend, 1.0)
    _choice("--version", version, ("v1", "v2"))
    modes = {"on": [True], "off": [False], "both": [True, False]}[
        _choice("--keepalive", keepalive, ("on", "off", "both"))]
    if not 5 <= udp_timeout <= 3600:
        raise LabError(f"--udp-timeout: must be 5-3600 s (got {udp_timeout})")
    every = interval if interval is not None else max(1, (udp_timeout - 1) // 2)
    if not 1 <= every < udp_timeout:
        raise LabError(f"--interval: must be 1 s or more and shorter than --udp-timeout "
                       f"{udp_timeout} s, or the keepalives cannot hold the mapping (got {every})")
    silence = quiet if quiet is not None else udp_timeout * 1.5
    if not udp_timeout < silence <= 3600:
        raise LabError(f"--quiet: must be longer than --udp-timeout {udp_timeout} s (and at most "
                       f"3600), or the NAT never forgets the mapping (got {silence:g})")
    runs: Runs = [(f"NAT timeout {udp_timeout} s, " + (f"keepalive {every} s" if on else "no keepalive"),
                   functools.partial(run_nat_keepalive, spec, backend=backend, udp_timeout=udp_timeout,
                                     keepalive=every if on else 0, quiet=silence, version=version,
                                     name=name))
                  for on in modes]
    _run(runs, json_path, junit_path, html_path, 1.0)


def register(app: typer.Typer) -> None:
    scenario_app = typer.Typer(no_args_is_help=True, help="Behaviour experiments on a throwaway lab: "
                               "DPD, failover, negotiation types, rekey, hostile traffic, NAT.")
    for command in (dpd, failover, negotiation, rekey, hostile, nat):
        scenario_app.command(command.__name__)(command)
    app.add_typer(scenario_app, name="scenario")
