"""`ipsec-lab`: a thin command line over spec, lifecycle, check and report.

Every command group lives in its own module and is registered below, in the order `--help`
lists them. Every user-facing failure is a LabError printed as one clear message (exit 2); a
check that fails exits 1. Set IPSEC_LAB_DEBUG=1 to see tracebacks of unexpected errors.
"""

from __future__ import annotations

import os
import sys

import typer

from lab.cli import engine, inputs, matrix, scenario, vm
from lab.cli import lab as lab_commands
from lab.cli.console import err
from lab.errors import LabError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Real strongSwan gateways that check a customer gateway against a cloud "
                       "VPN tunnel's settings.")
lab_commands.register(app)  # validate, render, up, adopt, check, status, down
engine.register(app)        # engine start|stop, image build
vm.register(app)            # vm run|kernel|needed
matrix.register(app)        # matrix, report merge
inputs.register(app)        # import, export, advise
scenario.register(app)      # scenario dpd|failover|negotiation|rekey|hostile


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
