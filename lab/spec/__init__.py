"""The tunnel spec: the models (`model`), the rules spanning several fields (`rules`), reading a
spec file (`load`). Callers import from here."""

from lab.spec.load import DEFAULT_SPEC, dump_spec, load_spec, parse_spec, unset_keys
from lab.spec.model import (
    Cidr,
    CustomerOverrides,
    IkeOptions,
    IpsecOptions,
    LabSpec,
    SpecInvalid,
    Tunnel,
    UnsetKey,
    fqdn_problem,
    location,
    message,
    name_problem,
    shown,
)

__all__ = ["DEFAULT_SPEC", "Cidr", "CustomerOverrides", "IkeOptions", "IpsecOptions", "LabSpec",
           "SpecInvalid", "Tunnel", "UnsetKey", "dump_spec", "fqdn_problem", "load_spec",
           "location", "message", "name_problem", "parse_spec", "shown", "unset_keys"]
