"""`ipsec-lab vm run|kernel|needed`: the guest that has a kernel with ESP (lab.vm)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lab import vm
from lab.cli.console import out, progress
from lab.errors import LabError

vm_app = typer.Typer(help="A guest with a stock kernel that has ESP (the kernel XFRM dataplane "
                          "where the host kernel has none).", no_args_is_help=True)


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
    if accel not in ("auto", "kvm", "tcg"):
        raise LabError(f"--accel: must be auto, kvm or tcg (got {accel!r})")
    if not 1 <= cpus <= 64 or not 256 <= memory <= 262144 or timeout <= 0:
        raise LabError("--cpus must be 1-64, --memory 256-262144 MiB, --timeout > 0")
    guest = vm.Guest(cpus=cpus, memory_mb=memory, timeout=timeout, accel=accel,
                     shares=tuple(share or ()))
    said: list[str] = []
    code = vm.run(command, guest, progress=said.append if quiet else progress)
    if quiet and code in (vm.EXIT_TIMEOUT, vm.EXIT_NO_RESULT):
        for message in said:
            progress(message)
    raise typer.Exit(code)


@vm_app.command("kernel")
def vm_kernel() -> None:
    """Fetch (once) and show the guest's kernel: the distribution's, unpacked into a cache."""
    kernel = vm.fetch_kernel(progress=progress)
    out.print(f"{kernel.package}: {kernel.version}, {kernel.vmlinuz}", highlight=False)


@vm_app.command("needed")
def vm_needed() -> None:
    """Exit 0 when kernel-dataplane tests need the guest (the host kernel has no ESP), else 1."""
    need, why = vm.needed()
    out.print(f"{'the guest is needed' if need else 'the host can run the kernel dataplane'}: {why}",
              highlight=False)
    raise typer.Exit(0 if need else 1)


def register(app: typer.Typer) -> None:
    app.add_typer(vm_app, name="vm")
