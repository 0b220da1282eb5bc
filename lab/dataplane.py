"""Which ESP dataplane the gateways use: the kernel's XFRM, or strongSwan's userland libipsec.

Detected, not assumed: a kernel without ESP (this project's CI machines) rejects an ESP state,
which is tried in a scratch network namespace so the host's XFRM database is never touched.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from dataclasses import dataclass

from pyroute2 import netns

from lab.errors import LabError


@dataclass(frozen=True)
class Dataplane:
    name: str  # "kernel" or "libipsec"
    reason: str

    @property
    def trap_policies(self) -> bool:
        """libipsec in strongSwan 5.9.8 never fires trap policies (platform notes)."""
        return self.name == "kernel"

    @property
    def xfrm_interfaces(self) -> bool:
        """Route-based tunnels (0.0.0.0/0 selectors bound to an interface ID): the kernel's XFRM
        interfaces. kernel-libipsec has one TUN device and routes every CHILD_SA's remote
        selector over it itself (lab.routing), so a 0.0.0.0/0 SA would take all traffic."""
        return self.name == "kernel"

    @property
    def plugin(self) -> str:
        return "kernel-netlink" if self.name == "kernel" else "kernel-libipsec"


def kernel_has_esp() -> tuple[bool, str]:
    scratch = f"ilab-probe-{uuid.uuid4().hex[:8]}"
    netns.create(scratch)
    try:
        result = subprocess.run(
            ["ip", "-n", scratch, "xfrm", "state", "add", "src", "192.0.2.1", "dst", "192.0.2.2",
             "proto", "esp", "spi", "0x100", "enc", "cbc(aes)", "0x" + "00" * 16],
            capture_output=True, text=True, check=False,
        )
    finally:
        netns.remove(scratch)
    if result.returncode == 0:
        return True, "the kernel accepted an ESP state in a scratch namespace"
    return False, f"the kernel refused an ESP state ({result.stderr.strip() or 'no ESP support'})"


def detect() -> Dataplane:
    """`IPSEC_LAB_DATAPLANE=kernel|libipsec` forces a choice (e.g. to test libipsec anywhere)."""
    forced = os.environ.get("IPSEC_LAB_DATAPLANE")
    if forced:
        if forced not in ("kernel", "libipsec"):
            raise LabError(f"IPSEC_LAB_DATAPLANE: must be kernel or libipsec (got {forced!r})")
        return Dataplane(forced, "forced by IPSEC_LAB_DATAPLANE")
    esp, why = kernel_has_esp()
    if esp:
        return Dataplane("kernel", why)
    if not os.path.exists("/dev/net/tun"):
        raise LabError(f"no usable ESP dataplane: {why}, and /dev/net/tun (libipsec) is missing")
    return Dataplane("libipsec", f"{why}; using strongSwan's kernel-libipsec over TUN")
