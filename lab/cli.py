"""`ipsec-lab`: a thin command line over spec, lifecycle, check and report.

Every user-facing failure is a LabError printed as one clear message (exit 2); a check that
fails exits 1. Set IPSEC_LAB_DEBUG=1 to see tracebacks of unexpected errors.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from lab import lifecycle
from lab import state as labstate
from lab.errors import LabError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Real strongSwan gateways that check a customer gateway against a cloud "
                       "VPN tunnel's settings.")
# Reports are read in CI logs too: do not wrap them at 80 columns there.
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)

Name = Annotated[str, typer.Option("--name", "-n", help="Lab name (several labs can run at once).")]
SpecPath = Annotated[Path, typer.Argument(help="Tunnel spec (YAML).", show_default=False)]
AsJson = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _progress(message: str) -> None:
    err.print(f"[dim]·[/] {message}")


@app.command()
def validate(spec: SpecPath) -> None:
    """Check a tunnel spec against the console's rules (no pre-shared key needed: an unset
    env: variable is a note here, and an error where the key is used)."""
    from lab.rules import unsupported
    from lab.spec import load_spec, unset_keys

    parsed = load_spec(spec, need_keys=False)
    mappings = sum(len(t.mappings()) for t in parsed.tunnels)
    out.print(f"[green]valid[/]: {spec}: {len(parsed.tunnels)} tunnel(s), {mappings} SPD "
              "mapping(s)")
    from lab.profiles import get as get_profile

    profile = get_profile(parsed.vpn_gateway.profile)
    out.print(f"gateway profile: {profile.name} ({profile.title})", highlight=False)
    for assumption in profile.assumed:
        out.print(f"[dim]  assumed: {assumption}[/]", highlight=False)
    for warning in unsupported(parsed):
        out.print(f"[yellow]warning[/]: {warning} (valid for the cloud; a lab run refuses it)")
    for field, variable in unset_keys(parsed):
        out.print(f"[cyan]note[/]: {field}: environment variable {variable} is not set (not "
                  "needed to validate; up, render, export --include-psk and matrix/scenario runs "
                  "need it)", highlight=False)


@app.command()
def render(
    spec: SpecPath,
    output: Annotated[Path, typer.Option("-o", "--output", help="Directory to write into.")],
    name: Name = "default",
    dataplane: Annotated[str, typer.Option(help="auto, kernel or libipsec.")] = "auto",
) -> None:
    """Write each gateway's strongswan.conf and swanctl.conf (and the customer's ipsec.conf)."""
    from lab.dataplane import Dataplane, detect
    from lab.plan import build_plan
    from lab.render import write_configs
    from lab.spec import load_spec

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


@app.command()
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
        from lab.customer import CustomerRun

        customer = CustomerRun.load(customer_config, customer_secrets, customer_strongswan_conf)
    elif customer_secrets or customer_strongswan_conf:
        raise LabError("--customer-secrets/--customer-strongswan-conf need --customer-config")
    lab = lifecycle.up(spec, name, backend, progress=_progress, customer=customer)
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


@app.command()
def adopt(
    spec: SpecPath,
    name: Name = "default",
    compose: Annotated[bool, typer.Option("--compose", help="Adopt the docker-compose project named "
                                          "like the lab (see compose/README.md).")] = False,
) -> None:
    """Make a lab built outside ipsec-lab a running lab: configure, start daemons, negotiate."""
    if not compose:
        raise LabError("adopt: only --compose is supported (a docker-compose project named --name)")
    from lab.backends.docker import adopt_compose

    lab = adopt_compose(name, spec, progress=_progress)
    out.print(f"[green]lab {name} adopted[/] (docker backend, {lab.state.dataplane} dataplane); "
              f"next: ipsec-lab check --name {name}")


@app.command()
def check(name: Name = "default", as_json: AsJson = False) -> None:
    """Verify every tunnel and mapping: control plane, data plane and wire."""
    from lab.check import run_check
    from lab.report import print_check

    lab = lifecycle.attach(name)
    report = run_check(lab)
    if as_json:
        out.print_json(report.to_json())
    else:
        if lab.customer is not None:  # which customer config ran (lab.customer)
            out.print(f"customer gateway: {lab.customer.describe()}", highlight=False)
            for note in lab.customer.notes:
                out.print(f"  [dim]note[/]: {note}", highlight=False)
        print_check(out, report)
    raise typer.Exit(0 if report.ok else 1)


def _status(name: str) -> dict[str, Any]:
    st = labstate.load(name)
    exec_hint = {"netns": "ip netns exec {h} CMD", "docker": "docker exec -it {h} CMD"}
    return {
        "name": st.name, "phase": st.phase, "backend": st.backend,
        "backend_reason": st.backend_reason, "dataplane": st.dataplane,
        "dataplane_reason": st.dataplane_reason, "negotiation": st.negotiation,
        "nodes": {
            node: {"role": n.role, "handle": n.handle, "addresses": n.addresses,
                   "exec": exec_hint.get(st.backend, "{h}").format(h=n.handle)}
            for node, n in st.nodes.items()
        },
        "pids": st.pids,
    }


@app.command()
def status(
    name: Name = "default",
    all_labs: Annotated[bool, typer.Option("--all", help="Every lab.")] = False,
    as_json: AsJson = False,
) -> None:
    """Show a lab's nodes, roles, addresses and how to run a command in each."""
    from lab.report import dumps, status_table

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
        out.print(f"lab [bold]{lab['name']}[/]: {lab['phase']}; backend {lab['backend']} "
                  f"({lab['backend_reason']}); dataplane {lab['dataplane']} "
                  f"({lab['dataplane_reason']})")
        for tunnel, how in lab["negotiation"].items():
            out.print(f"  tunnel {tunnel}: {how}")


@app.command()
def down(
    name: Name = "default",
    all_labs: Annotated[bool, typer.Option("--all", help="Every lab, also half-built ones.")] = False,
) -> None:
    """Tear a lab down (idempotent; also cleans up after a killed orchestrator)."""
    names = lifecycle.all_names() if all_labs else [name]
    for n in names:
        done = lifecycle.down(n, progress=_progress)
        out.print(f"lab {n}: " + ("; ".join(done) if done else "nothing to remove"))
    if not names:
        out.print("no lab to remove")


engine_app = typer.Typer(help="The Docker engine the docker backend uses.", no_args_is_help=True)
image_app = typer.Typer(help="The strongSwan image of the docker backend.", no_args_is_help=True)
app.add_typer(engine_app, name="engine")
app.add_typer(image_app, name="image")


@engine_app.command("start")
def engine_start() -> None:
    """Use a running engine, or install docker.io and start dockerd (no firewall changes)."""
    from lab.engine import ensure_engine

    client = ensure_engine(progress=_progress)
    out.print(f"Docker engine {client.version().get('Version', '?')} answers")


@engine_app.command("stop")
def engine_stop() -> None:
    """Stop the dockerd that ipsec-lab started (never one it did not start)."""
    from lab.engine import stop_engine

    stopped = stop_engine(progress=_progress)
    out.print("stopped the dockerd ipsec-lab started" if stopped else "no dockerd of ours runs")


@image_app.command("build")
def image_build(
    method: Annotated[str, typer.Option(help="auto, dockerfile or mmdebstrap.")] = "auto",
    force: Annotated[bool, typer.Option(help="Rebuild even when the image exists.")] = False,
) -> None:
    """Build (or reuse) the strongSwan image: Dockerfile with a registry, mmdebstrap without."""
    from lab.engine import ensure_engine
    from lab.image import build_image

    if method not in ("auto", "dockerfile", "mmdebstrap"):
        raise LabError(f"--method: must be auto, dockerfile or mmdebstrap (got {method!r})")
    tag = build_image(ensure_engine(progress=_progress), method, progress=_progress,  # type: ignore[arg-type]
                      force=force)
    out.print(f"image {tag} ready")


vm_app = typer.Typer(help="A guest with a stock kernel that has ESP (the kernel XFRM dataplane "
                          "where the host kernel has none).", no_args_is_help=True)
app.add_typer(vm_app, name="vm")


@vm_app.command("run", context_settings={"allow_interspersed_args": False})
def vm_run(
    command: Annotated[list[str], typer.Argument(help="The command to run in the guest (after --).",
                                                 show_default=False)],
    cpus: Annotated[int, typer.Option(help="Guest vCPUs.")] = 2,
    memory: Annotated[int, typer.Option(help="Guest memory, MiB.")] = 4096,
    timeout: Annotated[float, typer.Option(help="Kill the guest after this many seconds.")] = 3600,
    accel: Annotated[str, typer.Option(help="auto (KVM if a boot probe works, else TCG), kvm "
                                            "or tcg.")] = "auto",
    share: Annotated[list[Path] | None, typer.Option(
        help="A host directory the guest may write to, at the same path (repeatable); the "
             "rest of the guest's writes vanish with it.")] = None,
    quiet: Annotated[bool, typer.Option(help="Say nothing of the guest itself unless it failed "
                                             "to run the command (the command's output stays "
                                             "the last thing printed).")] = False,
) -> None:
    """Boot the guest over this host's root, run COMMAND in the current directory, return its code."""
    from lab import vm

    if accel not in ("auto", "kvm", "tcg"):
        raise LabError(f"--accel: must be auto, kvm or tcg (got {accel!r})")
    if not 1 <= cpus <= 64 or not 256 <= memory <= 262144 or timeout <= 0:
        raise LabError("--cpus must be 1-64, --memory 256-262144 MiB, --timeout > 0")
    guest = vm.Guest(cpus=cpus, memory_mb=memory, timeout=timeout, accel=accel,
                     shares=tuple(share or ()))
    said: list[str] = []
    code = vm.run(command, guest, progress=said.append if quiet else _progress)
    if quiet and code in (vm.EXIT_TIMEOUT, vm.EXIT_NO_RESULT):
        for message in said:
            _progress(message)
    raise typer.Exit(code)


@vm_app.command("kernel")
def vm_kernel() -> None:
    """Fetch (once) and show the guest's kernel: the distribution's, unpacked into a cache."""
    from lab import vm

    kernel = vm.fetch_kernel(progress=_progress)
    out.print(f"{kernel.package}: {kernel.version}, {kernel.vmlinuz}", highlight=False)


@vm_app.command("needed")
def vm_needed() -> None:
    """Exit 0 when kernel-dataplane tests need the guest (the host kernel has no ESP), else 1."""
    from lab import vm

    need, why = vm.needed()
    out.print(f"{'the guest is needed' if need else 'the host can run the kernel dataplane'}: {why}",
              highlight=False)
    raise typer.Exit(0 if need else 1)


def _register_domains() -> None:
    """Command groups that live beside their domain register themselves here."""
    import importlib
    import importlib.util

    for module in ("lab.matrix.commands", "lab.inputs_commands", "lab.scenarios.commands"):
        if importlib.util.find_spec(module) is not None:
            importlib.import_module(module).register(app)


_register_domains()


def main() -> None:
    try:
        code = app(standalone_mode=False)
        if isinstance(code, int) and code:  # non-standalone typer returns Exit's code, not raises
            sys.exit(code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except LabError as exc:
        err.print(f"[bold red]error[/]: {exc}", highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the last line of defence against tracebacks
        if hasattr(exc, "show") and hasattr(exc, "exit_code"):  # click's usage errors
            exc.show()
            sys.exit(exc.exit_code)
        if os.environ.get("IPSEC_LAB_DEBUG"):
            raise
        err.print(f"[bold red]internal error[/]: {type(exc).__name__}: {exc} "
                  "(IPSEC_LAB_DEBUG=1 shows where)", highlight=False)
        sys.exit(3)


if __name__ == "__main__":
    main()
