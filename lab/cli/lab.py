"""The lab's own verbs: `validate`, `render`, `up`, `adopt`, `check`, `status`, `down`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from lab import lifecycle, liveness
from lab import state as labstate
from lab.check import run_check
from lab.cli.console import out, progress
from lab.customer import load_own
from lab.dataplane import Dataplane, detect
from lab.errors import LabError
from lab.plan import build_plan
from lab.profiles import get as get_profile
from lab.render import write_configs
from lab.report import dumps, print_check, status_table
from lab.spec import load_spec, unset_keys
from lab.spec.rules import unsupported

Name = Annotated[str, typer.Option("--name", "-n", help="Lab name (several labs can run at once).")]
SpecPath = Annotated[Path, typer.Argument(help="Tunnel spec (YAML).", show_default=False)]
AsJson = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def validate(spec: SpecPath) -> None:
    """Check a tunnel spec against the console's rules (no pre-shared key needed: an unset
    env: variable is a note here, and an error where the key is used)."""
    parsed = load_spec(spec, need_keys=False)
    mappings = sum(len(t.mappings()) for t in parsed.tunnels)
    out.print(f"[green]valid[/]: {spec}: {len(parsed.tunnels)} tunnel(s), {mappings} SPD "
              "mapping(s)")
    profile = get_profile(parsed.vpn_gateway.profile, parsed.vpn_gateway.generation)
    out.print(f"gateway profile: {profile.name} ({profile.title})", highlight=False)
    for assumption in profile.assumed:
        out.print(f"[dim]  assumed: {assumption}[/]", highlight=False)
    for warning in unsupported(parsed):
        out.print(f"[yellow]warning[/]: {warning} (valid for the cloud; a lab run refuses it)")
    for field, variable in unset_keys(parsed):
        out.print(f"[cyan]note[/]: {field}: environment variable {variable} is not set (not "
                  "needed to validate; up, render, export --include-psk and matrix/scenario runs "
                  "need it)", highlight=False)


def render(
    spec: SpecPath,
    output: Annotated[Path, typer.Option("-o", "--output", help="Directory to write into.")],
    name: Name = "default",
    dataplane: Annotated[str, typer.Option(help="auto, kernel or libipsec.")] = "auto",
) -> None:
    """Write each gateway's strongswan.conf and swanctl.conf (and the customer's ipsec.conf)."""
    parsed = load_spec(spec)
    if dataplane == "auto":
        chosen = detect()
    elif dataplane in ("kernel", "libipsec"):
        chosen = Dataplane(dataplane, "chosen with --dataplane")
    else:
        raise LabError(f"--dataplane: must be auto, kernel or libipsec (got {dataplane!r})")
    plan = build_plan(parsed, name, chosen)
    files = write_configs(plan, output, lambda node: str(labstate.lab_dir(name) / node))
    for path in files:
        out.print(str(path))
    out.print(f"[green]{len(files)} files written[/] (mode 0600: they hold pre-shared keys)")


def up(
    spec: SpecPath,
    name: Name = "default",
    backend: Annotated[str, typer.Option(help="netns, docker or auto.")] = "auto",
    # --customer-*: the customer gateway runs the user's own strongSwan config (lab.customer)
    customer_config: Annotated[Path | None, typer.Option(
        help="Run the customer gateway with your own swanctl.conf or ipsec.conf, unmodified.")] = None,
    customer_secrets: Annotated[Path | None, typer.Option(
        help="ipsec.secrets for --customer-config ipsec.conf.")] = None,
    customer_strongswan_conf: Annotated[Path | None, typer.Option(
        help="Your strongswan.conf (merged into the lab's; `check` lists what the lab overrides).")]
    = None,
) -> None:
    """Bring a lab up: namespaces or containers, strongSwan daemons, tunnels."""
    customer = None
    if customer_config is not None:
        customer = load_own(customer_config, customer_secrets, customer_strongswan_conf)
    elif customer_secrets or customer_strongswan_conf:
        raise LabError("--customer-secrets/--customer-strongswan-conf need --customer-config")
    lab = lifecycle.up(spec, name, backend, progress=progress, customer=customer)
    out.print(f"[green]lab {name} is up[/] ({lab.state.backend} backend, "
              f"{lab.state.dataplane} dataplane); next: ipsec-lab check --name {name}")
    if customer is not None:
        out.print(f"customer gateway: {customer.describe()}", highlight=False)
        for note in customer.notes:
            out.print(f"  [dim]note[/]: {note}", highlight=False)
        failed = [a for a in customer.attempts if not a["ok"]]
        if failed:
            out.print(f"[yellow]{len(failed)} initiation(s) failed[/]; ipsec-lab check --name "
                      f"{name} says why", highlight=False)


def adopt(
    spec: SpecPath,
    name: Name = "default",
    compose: Annotated[bool, typer.Option("--compose", help="Adopt the docker-compose project named "
                                          "like the lab (see compose/README.md).")] = False,
) -> None:
    """Make a lab built outside ipsec-lab a running lab: configure, start daemons, negotiate."""
    if not compose:
        raise LabError("adopt: only --compose is supported (a docker-compose project named --name)")
    lab = lifecycle.adopt(name, spec, progress=progress)
    out.print(f"[green]lab {name} adopted[/] (docker backend, {lab.state.dataplane} dataplane); "
              f"next: ipsec-lab check --name {name}")


def check(name: Name = "default", as_json: AsJson = False) -> None:
    """Verify every tunnel and mapping: control plane, data plane and wire."""
    lab = lifecycle.attach(name)
    report = run_check(lab)
    if as_json:
        out.print_json(report.to_json())
    else:
        if lab.customer.kind != "generated":  # the user's own customer config ran (lab.customer)
            out.print(f"customer gateway: {lab.customer.describe()}", highlight=False)
            for note in lab.customer.notes:
                out.print(f"  [dim]note[/]: {note}", highlight=False)
        print_check(out, report)
    raise typer.Exit(0 if report.ok else 1)


def _status(name: str) -> dict[str, Any]:
    st = labstate.load(name)
    exec_hint = {"netns": "ip netns exec {h} CMD", "docker": "docker exec -it {h} CMD"}
    wrong = liveness.problems(lifecycle.attach(name)) if st.phase == "up" else []
    return {
        "name": st.name, "phase": st.phase, "health": "degraded" if wrong else
        ("up" if st.phase == "up" else st.phase), "problems": wrong, "backend": st.backend,
        "backend_reason": st.backend_reason, "dataplane": st.dataplane,
        "dataplane_reason": st.dataplane_reason, "negotiation": st.negotiation,
        "nodes": {
            node: {"role": n.role, "handle": n.handle, "addresses": n.addresses,
                   "exec": exec_hint.get(st.backend, "{h}").format(h=n.handle)}
            for node, n in st.nodes.items()
        },
        "pids": st.pids,
    }


def status(
    name: Name = "default",
    all_labs: Annotated[bool, typer.Option("--all", help="Every lab.")] = False,
    as_json: AsJson = False,
) -> None:
    """Show a lab's nodes, roles, addresses and how to run a command in each."""
    names = labstate.names() if all_labs else [name]
    labs = [_status(n) for n in names]
    if as_json:
        out.print_json(dumps(labs if all_labs else labs[0]))
        return
    if not labs:
        out.print("no lab is up")
        return
    out.print(status_table(labs))
    for lab in labs:
        health = "[red]degraded[/]" if lab["health"] == "degraded" else lab["phase"]
        out.print(f"lab [bold]{lab['name']}[/]: {health}; backend {lab['backend']} "
                  f"({lab['backend_reason']}); dataplane {lab['dataplane']} "
                  f"({lab['dataplane_reason']})")
        for problem in lab["problems"]:
            out.print(f"  [red]degraded[/]: {problem}", highlight=False)
        for tunnel, how in lab["negotiation"].items():
            out.print(f"  tunnel {tunnel}: {how}")


def down(
    name: Name = "default",
    all_labs: Annotated[bool, typer.Option("--all", help="Every lab, also half-built ones.")] = False,
) -> None:
    """Tear a lab down (idempotent; also cleans up after a killed orchestrator)."""
    names = lifecycle.all_names() if all_labs else [name]
    for n in names:
        done = lifecycle.down(n, progress=progress)
        out.print(f"lab {n}: " + ("; ".join(done) if done else "nothing to remove"))
    if not names:
        out.print("no lab to remove")


def register(app: typer.Typer) -> None:
    for command in (validate, render, up, adopt, check, status, down):
        app.command()(command)
