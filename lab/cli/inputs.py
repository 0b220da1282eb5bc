"""Commands for real-world inputs: `import` cloud API JSON, `export` it back, `advise` on a
customer's own strongSwan configuration."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.table import Table

from lab.advise import advise, mss_note
from lab.cli.console import err, out
from lab.cloudapi import export_tunnel_with_notes, import_tunnel, modification_body, pick_tunnel
from lab.cloudmodify import apply_modification
from lab.customer.addresses import place
from lab.errors import LabError, read_text, read_yaml
from lab.files import write_private
from lab.ipsecconf import load_customer_config
from lab.libreswan import userconf
from lab.spec import load_spec

STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}


def _comment(text: str) -> str:
    """One YAML comment line: a line break (or any control character) in `text`, e.g. from the
    JSON or a file name, is escaped, so it cannot end the comment and add spec lines."""
    return "# " + "".join(c if c.isprintable() else repr(c)[1:-1] for c in text) + "\n"


def _read_json(path: Path) -> object:
    text = read_text(path, "the API JSON")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise LabError(f"{path}: not valid JSON ({exc})") from None


def import_command(
    path: Annotated[Path, typer.Argument(help="CreateVpnConnection body or DescribeVpnConnections "
                                             "response (JSON).", show_default=False)],
    output: Annotated[Path, typer.Option("-o", "--output", help="Spec file to write (YAML).")],
    connection: Annotated[str | None, typer.Option(help="VPN connection name or ID, when the JSON "
                                                        "lists several.")] = None,
    vpn_gateway_ip: Annotated[str | None, typer.Option(help="The VPN gateway's public IP.")] = None,
    customer_gateway_ip: Annotated[str | None, typer.Option(help="The customer gateway's public "
                                                                 "IP.")] = None,
    vpc_cidr: Annotated[str | None, typer.Option(help="The VPC's CIDR block.")] = None,
    idc_cidr: Annotated[list[str] | None, typer.Option(help="An IDC CIDR block (repeatable).")] = None,
    psk_env: Annotated[str | None, typer.Option(help="Environment variable holding the pre-shared "
                                                     "key; the spec keeps env:NAME, not the key.")
                       ] = None,
    onto: Annotated[Path | None, typer.Option(help="Apply a ModifyVpnConnectionAttribute body to "
                                                   "this spec (written to --output).")] = None,
    tunnel: Annotated[str | None, typer.Option(help="With --onto: the spec's tunnel the body "
                                                    "modifies (when it has several).")] = None,
) -> None:
    """Turn a tunnel's cloud API JSON into a lab spec, and say what did not come from the JSON."""
    psk = None
    if psk_env:
        if psk_env not in os.environ:
            raise LabError(f"--psk-env: environment variable {psk_env} is not set")
        psk = f"env:{psk_env}"
    if onto is not None:
        given = [name for name, value in (
            ("--connection", connection), ("--vpn-gateway-ip", vpn_gateway_ip),
            ("--customer-gateway-ip", customer_gateway_ip), ("--vpc-cidr", vpc_cidr),
            ("--idc-cidr", idc_cidr)) if value]
        if given:
            raise LabError(f"{given[0]}: not with --onto (the spec keeps its own addresses and "
                           "ranges; a modification changes only what the API lets it change)")
        _modify(path, onto, output, tunnel, psk)
        return
    if tunnel is not None:
        raise LabError("--tunnel: only with --onto (an import writes a new spec of one tunnel)")
    spec, notes = import_tunnel(
        _read_json(path), connection=connection, vpn_gateway_ip=vpn_gateway_ip,
        vpc_cidr=vpc_cidr, customer_gateway_ip=customer_gateway_ip, idc_cidrs=idc_cidr, psk=psk,
        source=str(path),
    )
    if psk is None:
        notes.append(f"pre_shared_key: taken from the JSON's PreShareKey and written into {output} "
                     "(mode 0600); --psk-env NAME keeps it out of the file")
    header = _comment(f"Imported by ipsec-lab from {path.name}; notes on values not taken from it:")
    header += "".join(_comment(f" - {n}") for n in notes)
    write_private(output, header + yaml.safe_dump(spec, sort_keys=False))
    out.print(f"[green]wrote[/] {output}: tunnel {spec['tunnels'][0]['name']}")
    for note in notes:
        out.print(f"  [dim]note[/]: {note}", highlight=False)


def _modify(path: Path, onto: Path, output: Path, tunnel: str | None, psk: str | None) -> None:
    """`import --onto`: the spec with a ModifyVpnConnectionAttribute body's changes."""
    data = _read_json(path)
    spec, notes = apply_modification(data, _spec_data(onto), tunnel=tunnel, psk=psk,
                                     source=str(path), spec_source=str(onto))
    if psk is None and (modification_body(data) or {}).get("PreShareKey"):
        notes.append(f"pre_shared_key: taken from the JSON's PreShareKey and written into {output} "
                     "(mode 0600); --psk-env NAME keeps it out of the file")
    header = _comment(f"{onto.name} with {path.name} applied by ipsec-lab (the original file's "
                      "comments are not kept):")
    header += "".join(_comment(f" - {n}") for n in notes)
    write_private(output, header + yaml.safe_dump(spec, sort_keys=False))
    out.print(f"[green]wrote[/] {output}")
    for note in notes:
        out.print(f"  [dim]note[/]: {note}", highlight=False)


def _spec_data(path: Path) -> dict:
    data = read_yaml(path, "spec")
    if not isinstance(data, dict) or not isinstance(data.get("tunnels"), list):
        raise LabError(f"{path}: a spec is a mapping with a list of tunnels")
    return data


def export_command(
    spec: Annotated[Path, typer.Argument(help="Tunnel spec (YAML).", show_default=False)],
    tunnel: Annotated[str | None, typer.Option(help="Tunnel name (when the spec has several).")
                      ] = None,
    include_psk: Annotated[bool, typer.Option("--include-psk", help="Write the pre-shared key "
                                                                    "itself.")] = False,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="File to write (default: "
                                                                       "stdout).")] = None,
) -> None:
    """Write a spec's tunnel as a CreateVpnConnection request body (JSON)."""
    # the key itself only with --include-psk: without it an unset env: variable is no error
    body, notes = export_tunnel_with_notes(load_spec(spec, need_keys=include_psk), tunnel,
                                           include_psk=include_psk)
    text = json.dumps(body, indent=2) + "\n"
    if output is None:
        sys.stdout.write(text)
    else:
        write_private(output, text)
        out.print(f"[green]wrote[/] {output}")
    for note in notes:
        err.print(f"[dim]note[/]: {note}", highlight=False)


def advise_command(
    spec: Annotated[Path, typer.Argument(help="Tunnel spec (YAML).", show_default=False)],
    customer_config: Annotated[Path, typer.Option(help="The customer's ipsec.conf (strongSwan's "
                                                       "or libreswan's) or swanctl.conf.")],
    secrets: Annotated[Path | None, typer.Option(help="ipsec.secrets (to compare the pre-shared "
                                                      "key; never printed).")] = None,
    tunnel: Annotated[str | None, typer.Option(help="Tunnel name (when the spec has several).")
                      ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Compare a customer's strongSwan or libreswan configuration with the cloud tunnel, before
    anything runs."""
    loaded = load_spec(spec)
    if userconf.looks_like_libreswan(read_text(customer_config, "--customer-config")):
        config = userconf.load(customer_config, secrets)  # libreswan's parser reads it
    else:
        config = load_customer_config(customer_config, secrets)
    index, _ = pick_tunnel(loaded, tunnel)
    try:  # the config's real addresses stand for the spec's, as `up --customer-config` runs them
        found = place(loaded, config, str(customer_config), index)
        config.notes += found.notes
        loaded = found.placement().as_placed(loaded)
    except LabError as exc:
        config.notes.append(f"{exc} (compared with the spec's addresses)")
    items = advise(loaded, config, tunnel)
    note = mss_note(loaded, tunnel)
    errors = sum(a.severity == "error" for a in items)
    if as_json:
        out.print_json(json.dumps({"ok": errors == 0, "advice": [a.to_json() for a in items],
                                   "notes": [note.to_json(), *config.notes]}))
    elif not items:
        out.print(f"[green]no findings[/]: {customer_config} matches the cloud tunnel")
    else:
        table = Table(show_lines=True)
        for column in ("severity", "topic", "cloud", "your config", "finding", "fix"):
            table.add_column(column, overflow="fold")
        for a in items:
            table.add_row(f"[{STYLE[a.severity]}]{a.severity}[/]", a.topic, a.cloud_field,
                          a.customer_field, a.message, a.fix or "")
        out.print(table)
        warnings = sum(a.severity == "warning" for a in items)
        out.print(f"{errors} error(s), {warnings} warning(s), {len(items) - errors - warnings} "
                  "info")
    if not as_json:
        out.print(f"[dim]note[/] (any gateway): {note.message}. Fix: {note.fix}", highlight=False)
        for text in config.notes:
            err.print(f"[dim]note[/]: {text}", highlight=False)
    raise typer.Exit(1 if errors else 0)


def register(app: typer.Typer) -> None:
    app.command("import")(import_command)
    app.command("export")(export_command)
    app.command("advise")(advise_command)
