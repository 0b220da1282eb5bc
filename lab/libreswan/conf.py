"""The plan's values in libreswan's ipsec.conf dialect, where it spells them unlike strongSwan."""

from __future__ import annotations

import ipaddress

# strongSwan's dpd_action (what lab.plan writes) -> libreswan's: `none` keeps the SA as it is;
# libreswan's nearest is `hold` (keep the policy, wait for traffic or the peer)
DPD_ACTIONS = {"clear": "clear", "restart": "restart", "none": "hold", "trap": "hold"}


def identity(ident: str) -> str:
    """An IKE identity as leftid=/rightid= and ipsec.secrets want it: an address as it is, a
    user FQDN (user@host) as it is, a host name with libreswan's `@` (else it is resolved)."""
    try:
        ipaddress.ip_address(ident)
    except ValueError:
        return ident if "@" in ident else f"@{ident}"
    return ident


def dpd_action(action: str) -> str:
    return DPD_ACTIONS[action]
