"""What runs on the customer gateway (`lab.running.CustomerSide`): the lab's own strongSwan or
libreswan config generated from the spec (`generated`), or the user's own config (`own`:
loading and running a strongSwan one; `own_libreswan`: a libreswan one, on pluto; `translate`:
ipsec.conf and strongswan.conf into what the lab loads; `own_check`: verifying it)."""

from __future__ import annotations

from pathlib import Path

from lab.customer.generated import GeneratedCustomer
from lab.customer.own import OwnConfig
from lab.customer.own_libreswan import KIND as LIBRESWAN_KIND
from lab.customer.own_libreswan import OwnLibreswan
from lab.errors import read_text
from lab.libreswan.userconf import looks_like_libreswan
from lab.running import CustomerSide


def load_own(config: str | Path, secrets: str | Path | None = None,
             strongswan_conf: str | Path | None = None) -> OwnConfig:
    """The user's own config, run by the daemon of its dialect: a libreswan ipsec.conf on
    pluto, a strongSwan ipsec.conf or swanctl.conf on charon."""
    text = read_text(Path(config), "the file", f"--customer-config {config}")
    if looks_like_libreswan(text):
        return OwnLibreswan.load_libreswan(config, secrets, strongswan_conf)
    return OwnConfig.load(config, secrets, strongswan_conf)


def restore(state_dir: Path) -> CustomerSide:
    """The customer side a running lab was brought up with (`attach`)."""
    own = OwnConfig.restore(state_dir)
    if own is not None and own.kind == LIBRESWAN_KIND:
        return OwnLibreswan(**own.to_state())  # the same saved fields, run on pluto
    return own or GeneratedCustomer()


__all__ = ["LIBRESWAN_KIND", "GeneratedCustomer", "OwnConfig", "OwnLibreswan", "load_own", "restore"]
