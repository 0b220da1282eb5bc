"""Reading a spec: YAML -> pydantic models (types, ranges, menus) -> the rules spanning several
fields (`lab.spec.rules`), every problem reported as `field: rule` in one `SpecInvalid`."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

from pydantic import SecretStr, ValidationError

from lab import profiles
from lab.errors import read_yaml
from lab.spec.model import LabSpec, SpecInvalid, UnsetKey, location, message
from lab.spec.rules import check_rules

DEFAULT_SPEC = Path(__file__).resolve().parents[2] / "configs" / "examples" / "default.yaml"


def parse_spec(data: Any, source: str = "spec", *, need_keys: bool = True) -> LabSpec:
    """Validate a spec already loaded from YAML/JSON.

    `need_keys=False` checks the spec without its pre-shared keys: an `env:NAME` whose variable
    is not set becomes an `UnsetKey` (see `unset_keys`) instead of an error.
    """
    if not isinstance(data, dict):
        raise SpecInvalid(source, ["(top level): must be a mapping with vpn_gateway and tunnels"])
    profile = _profile_of(data)
    if profile.name != profiles.DEFAULT and isinstance(data.get("tunnels"), list):
        data = {**data, "tunnels": [profile.with_defaults(t) for t in data["tunnels"]]}
    try:
        spec = LabSpec.model_validate(data, context={"profile": profile, "need_keys": need_keys})
    except ValidationError as exc:
        problems = [f"{location(e['loc'])}: {message(e)}" for e in exc.errors()]
        raise SpecInvalid(source, problems) from None
    for i, t in enumerate(spec.tunnels):
        if isinstance(t.pre_shared_key, UnsetKey):
            t.pre_shared_key.where = f"tunnels[{i}].pre_shared_key"
    problems = check_rules(spec)
    if problems:
        raise SpecInvalid(source, problems)
    return spec


def _profile_of(data: dict) -> profiles.Profile:
    """The profile (and gateway generation) named in raw spec data; the default one when absent
    or unknown (pydantic, or `lab.spec.rules` for a generation, then reports the bad value)."""
    gateway = data.get("vpn_gateway")
    name = gateway.get("profile") if isinstance(gateway, dict) else None
    generation = gateway.get("generation") if isinstance(gateway, dict) else None
    for tried in ((name, generation), (name, None), (None, None)):
        try:
            return profiles.get(*tried)
        except LookupError:
            continue
    raise AssertionError("the default profile always exists")


def dump_spec(spec: LabSpec) -> dict[str, Any]:
    """The spec as plain YAML/JSON data, with pre-shared keys revealed (env: resolved).

    For files the lab keeps privately (mode 0600): a running lab must not depend on the
    environment of whoever brought it up.
    """

    def plain(value: Any) -> Any:
        if isinstance(value, SecretStr):
            return value.get_secret_value()
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [plain(v) for v in value]
        if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv4Network):
            return str(value)
        return value

    return plain(spec.model_dump())


def unset_keys(spec: LabSpec) -> list[tuple[str, str]]:
    """(field, variable) of every `env:` pre-shared key whose variable is not set (need_keys=False)."""
    return [(t.pre_shared_key.where, t.pre_shared_key.variable) for t in spec.tunnels
            if isinstance(t.pre_shared_key, UnsetKey)]


def load_spec(path: str | Path, *, need_keys: bool = True) -> LabSpec:
    """Read and validate a spec file (UTF-8 YAML); `need_keys` as in `parse_spec`."""
    return parse_spec(read_yaml(path, "spec"), str(path), need_keys=need_keys)
