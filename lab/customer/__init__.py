"""What runs on the customer gateway (`lab.running.CustomerSide`): the lab's own strongSwan
config generated from the spec (`generated`), or the user's own config (`own`: loading and
running it; `translate`: ipsec.conf and strongswan.conf into what the lab loads; `own_check`:
verifying it)."""

from __future__ import annotations

from pathlib import Path

from lab.customer.generated import GeneratedCustomer
from lab.customer.own import OwnConfig
from lab.running import CustomerSide


def restore(state_dir: Path) -> CustomerSide:
    """The customer side a running lab was brought up with (`attach`)."""
    return OwnConfig.restore(state_dir) or GeneratedCustomer()


__all__ = ["GeneratedCustomer", "OwnConfig", "restore"]
