"""The lab's private copy of libreswan (scripts/setup unpacks Debian's .deb into PREFIX)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from lab.errors import LabError

if TYPE_CHECKING:
    from lab.spec import LabSpec

PREFIX = Path(os.environ.get("IPSEC_LAB_LIBRESWAN", "/var/cache/ipsec-lab/libreswan"))
LIBEXEC = "usr/libexec/ipsec"
NEEDS_ESP = ("libreswan needs the kernel's ESP: run it in the VM harness (ipsec-lab vm run -- ...) "
             "or on a host whose kernel has ESP")


def not_in(spec: LabSpec, where: str) -> None:
    """Where libreswan customer gateways are not run yet (the scenarios that read both ends'
    VICI events): said by field before anything is built, never a VICI error from a daemon that
    is not charon."""
    for i, t in enumerate(spec.tunnels):
        if t.customer_gateway.implementation != "strongswan":
            raise LabError(f"tunnels[{i}].customer_gateway.implementation: {where} reads both "
                           "ends' VICI events, which libreswan's pluto has not; a libreswan "
                           "customer gateway runs in `up`, `check`, `matrix` and the negotiation "
                           "and DPD scenarios")


def tool(name: str) -> str:
    """A libreswan program (pluto, whack, addconn, algparse) by absolute path."""
    path = PREFIX / LIBEXEC / name
    if not os.access(path, os.X_OK):
        raise LabError(f"libreswan is not unpacked here ({path} missing): run scripts/setup, "
                       "which unpacks it into a private prefix")
    return str(path)


def version() -> str | None:
    """The unpacked package's version (4.10-2+deb12u1), None when there is none."""
    try:
        return (PREFIX / "VERSION").read_text().strip() or None
    except OSError:
        return None
