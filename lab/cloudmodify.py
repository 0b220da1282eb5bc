"""A ModifyVpnConnectionAttribute body applied to an existing spec (`import --onto SPEC`).

A modification names only what it changes, so it cannot be read like a CreateVpnConnection
body, whose absent fields take the API's defaults. The tunnel is exported to the API's form,
the body is laid over it, and both the unchanged export and the overlaid one are imported the
same way: what differs between those two imports is exactly what the body changed, and only
that is written into the spec, field by field. Everything the API does not model (addresses,
the customer side's overrides, a NAT router, routes) stays as the spec has it.
"""

from __future__ import annotations

from typing import Any

from lab.cloudapi import IKE, IPSEC, SPD, export_tunnel, import_tunnel, modification_body, plain
from lab.errors import LabError
from lab.spec import LabSpec, SpecInvalid, parse_spec

# ModifyVpnConnectionAttributeRequest's fields (vpc 2017-03-12)
CHANGEABLE = {
    "VpnConnectionName", "PreShareKey", SPD, IKE, IPSEC, "EnableHealthCheck",
    "HealthCheckLocalIp", "HealthCheckRemoteIp", "HealthCheckConfig", "NegotiationType",
    "DpdEnable", "DpdTimeout", "DpdAction",
}
MERGED = (IKE, IPSEC, "HealthCheckConfig")  # objects whose absent members stay unchanged
INTEGRITY_FIELDS = ("IntegrityAlgorithm", "IntegrityAlgorith")  # current and deprecated
# the tunnel fields the API describes, each compared as a whole or member by member
SECTIONS = ("name", "pre_shared_key", "negotiation_type", "spd_rules", "dpd", "health_check",
            "ike", "ipsec")
# what a change to an IKE identity field moves: the spec's local_id or peer_id
IDENTITY_FIELDS = {"local_id": ("LocalIdentity", "LocalAddress", "LocalFqdnName"),
                   "peer_id": ("RemoteIdentity", "RemoteAddress", "RemoteFqdnName")}


def apply_modification(data: Any, spec_data: dict[str, Any], *, tunnel: str | None = None,
                       psk: str | None = None, source: str = "API JSON",
                       spec_source: str = "spec") -> tuple[dict[str, Any], list[str]]:
    """The spec (plain data) with the body's changes, and notes naming each change.

    `psk` (`env:NAME`) replaces the body's PreShareKey. Raises LabError / SpecInvalid naming
    the API field or the spec field; the input spec is not modified.
    """
    body = modification_body(data)
    if body is None:
        raise LabError(f"{source}: --onto applies a ModifyVpnConnectionAttribute body (a "
                       "VpnConnectionId and the fields to change); this JSON is a whole "
                       "connection: import it without --onto")
    spec = parse_spec(spec_data, spec_source, need_keys=False)
    if spec.vpn_gateway.profile != "tencent":
        raise LabError(f"{spec_source}: --onto applies Tencent's ModifyVpnConnectionAttribute; "
                       f"this spec uses the {spec.vpn_gateway.profile} gateway profile")
    index, t = _pick(spec, tunnel, spec_source)
    notes, problems = _screen(body, spec, index)
    if problems:
        raise SpecInvalid(source, problems)

    raw = [dict(x) for x in spec_data["tunnels"]]
    raw_tunnel = raw[index]
    key = raw_tunnel.get("pre_shared_key")

    def imported(connection: dict[str, Any], key: str | None) -> dict[str, Any]:
        """The connection read as `import` reads it, at the spec's own addresses and ranges."""
        spec_part, _ = import_tunnel(
            connection, psk=key, source=source, need_keys=False,
            vpn_gateway_ip=str(spec.vpn_gateway.ip_of(t.vpn_gateway)),
            customer_gateway_ip=str(t.customer_gateway.public_ip),
            vpc_cidr=str(spec.vpn_gateway.vpc_cidr),
            idc_cidrs=[str(c) for c in t.customer_gateway.idc_cidrs])
        return spec_part["tunnels"][0]

    before = export_tunnel(spec, t.name)
    old = imported(before, str(key))
    new = imported(_overlay(before, body),
                   psk if psk is not None else None if body.get("PreShareKey") else str(key))

    changed: list[str] = []
    for section in SECTIONS:
        if section == "ike":
            _ike_changes(raw_tunnel, old["ike"], new["ike"], body.get(IKE) or {}, changed)
        elif isinstance(new[section], dict):
            fields = {f: v for f, v in new[section].items() if old[section].get(f) != v}
            if fields:
                raw_tunnel[section] = {**(raw_tunnel.get(section) or {}), **fields}
                changed += [f"{section}.{f}" for f in fields]
        elif old[section] != new[section]:
            raw_tunnel[section] = new[section]
            changed.append(section)
    if "name" in changed and [x.get("name") for x in raw].count(new["name"]) > 1:
        raise LabError(f"VpnConnectionName: {new['name']!r} is already the name of another "
                       f"tunnel in {spec_source}")

    result = {**spec_data, "tunnels": raw}
    if "vpn_gateway" in spec_data and "name" in changed:
        result["vpn_gateway"] = _renamed_gateway(spec_data["vpn_gateway"], t.name, new["name"])
    parse_spec(result, f"{spec_source} with {source} applied", need_keys=False)
    at = f"tunnels[{index}]"
    notes.insert(0, (f"{at} ({t.name}): changed " + ", ".join(_shown(c, old, new) for c in changed))
                 if changed else f"{at} ({t.name}): the body changes nothing")
    return result, notes


def _pick(spec: LabSpec, tunnel: str | None, spec_source: str) -> tuple[int, Any]:
    names = [t.name for t in spec.tunnels]
    if tunnel is None:
        if len(names) == 1:
            return 0, spec.tunnels[0]
        raise LabError(f"--tunnel: {spec_source} has several tunnels; choose the one the body "
                       "modifies: " + ", ".join(names))
    if tunnel not in names:
        raise LabError(f"--tunnel: no tunnel named {tunnel!r} in {spec_source}; it has "
                       + ", ".join(names))
    return names.index(tunnel), spec.tunnels[names.index(tunnel)]


def _screen(body: dict[str, Any], spec: LabSpec, index: int) -> tuple[list[str], list[str]]:
    """Notes and problems of the fields a modification carries that the spec cannot take."""
    notes: list[str] = []
    problems: list[str] = []
    for obj in MERGED:
        if obj in body and not isinstance(body[obj], dict):
            problems.append(f"{obj}: must be an object")
    if "BgpConfig" in body:
        problems.append("BgpConfig: BGP tunnels need BGP support, which the lab does not have yet")
    if "RouteType" in body:
        problems.append("RouteType: ModifyVpnConnectionAttribute cannot change a tunnel's type "
                        "(StaticRoute or Policy); create the connection again")
    if body.get("CustomerGatewayId"):
        ip = spec.tunnels[index].customer_gateway.public_ip
        notes.append(f"CustomerGatewayId {plain(body['CustomerGatewayId'])}: the spec keeps the "
                     f"customer gateway's address, not its ID; customer_gateway.public_ip stays "
                     f"{ip} (edit it if the new customer gateway has another address)")
    unknown = sorted(plain(k) for k in body
                     if k not in CHANGEABLE | {"VpnConnectionId", "CustomerGatewayId", "BgpConfig",
                                               "RouteType"})
    if unknown:
        notes.append("ignored fields ModifyVpnConnectionAttribute does not have: "
                     + ", ".join(unknown))
    return notes, problems


def _overlay(before: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """The exported connection with the body's fields laid over it (objects member by member)."""
    after = dict(before)
    for field in CHANGEABLE & set(body):
        value = body[field]
        if field in MERGED and isinstance(value, dict):
            merged = {**(before.get(field) or {}), **value}
            if field == IPSEC:  # one integrity field given: the other follows it
                given = [f for f in INTEGRITY_FIELDS if value.get(f) not in (None, "")]
                if len(given) == 1:
                    for f in INTEGRITY_FIELDS:
                        merged[f] = value[given[0]]
            after[field] = merged
        else:
            after[field] = value
    return after


def _ike_changes(raw: dict[str, Any], old: dict[str, Any], new: dict[str, Any],
                 body_ike: dict[str, Any], changed: list[str]) -> None:
    """IKE fields into the raw tunnel; an identity only where the body touched that side."""
    fields = {f: v for f, v in new.items() if old.get(f) != v
              and (f not in IDENTITY_FIELDS or set(IDENTITY_FIELDS[f]) & set(body_ike))}
    if fields:
        raw["ike"] = {**(raw.get("ike") or {}), **fields}
        changed += [f"ike.{f}" for f in fields]


def _renamed_gateway(gateway: dict[str, Any], old: str, new: str) -> dict[str, Any]:
    """vpn_gateway with its routes to the renamed tunnel following the new name."""
    routes = [{**r, "tunnel": new} if isinstance(r, dict) and r.get("tunnel") == old else r
              for r in gateway.get("routes") or []]
    return {**gateway, "routes": routes} if "routes" in gateway else dict(gateway)


def _shown(change: str, old: dict[str, Any], new: dict[str, Any]) -> str:
    """`ike.encryption AES-128 -> AES-256`; a key is never shown."""
    if change == "pre_shared_key":
        return "pre_shared_key"
    section, _, field = change.partition(".")
    before = old[section].get(field) if field else old[section]
    after = new[section].get(field) if field else new[section]
    if isinstance(after, (dict, list)):
        return change
    return f"{change} {before} -> {after}"
