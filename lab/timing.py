"""How long the lab waits for its own processes, on machines slower than the one it was tuned on.

The lab's waits (a probe agent's start, a packet's arrival, a daemon's VICI socket, an initiate)
are bounded so that a broken lab fails instead of hanging. Their bounds suit a normal host; an
emulated guest (the VM harness under TCG runs Python ~20x slower) or a loaded CI runner needs
them stretched. `IPSEC_LAB_SLOWDOWN=N` multiplies every such bound by N. Protocol timers (DPD,
lifetimes, retransmits, health checks) are the tunnel's own settings and never scaled.
"""

from __future__ import annotations

import os

from lab.errors import LabError


def slowdown() -> float:
    raw = os.environ.get("IPSEC_LAB_SLOWDOWN", "1")
    try:
        factor = float(raw)
    except ValueError:
        factor = 0.0
    if not 1 <= factor <= 100:
        raise LabError(f"IPSEC_LAB_SLOWDOWN: must be a number from 1 to 100 (got {raw!r})")
    return factor


def patience(seconds: float) -> float:
    """A wait's bound on this machine."""
    return seconds * slowdown()
