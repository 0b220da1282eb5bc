"""The console's rules that span several fields, each reported as `field: rule`.

Kept apart from the pydantic models so that a rule reads like the seed document states it and
can name the exact field it concerns (a model validator could only name the model).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator

from pydantic import ValidationError

from lab import catalogue as cat
from lab import profiles
from lab.ranges import DOCUMENTATION_TEXT, is_documentation, is_private_wan
from lab.spec.model import Cidr, IkeOptions, IpsecOptions, LabSpec, Tunnel, location, message


def check_rules(spec: LabSpec) -> list[str]:
    return list(_gateway_rules(spec)) + [
        p for i, t in enumerate(spec.tunnels) for p in _tunnel_rules(spec, i, t)
    ] + list(_mapping_rules(spec))


def _gateway_rules(spec: LabSpec) -> Iterator[str]:
    gw = spec.vpn_gateway
    if gw.generation is not None:
        try:
            profiles.get(gw.profile, gw.generation)
        except LookupError as exc:
            yield f"vpn_gateway.generation: {exc}"
    if not is_documentation(gw.public_ip):
        yield f"vpn_gateway.public_ip: {gw.public_ip} must be in a documentation range " \
              f"({DOCUMENTATION_TEXT}) so lab traffic stays in the lab"
    names = [t.name for t in spec.tunnels]
    for i, name in enumerate(names):
        if name in names[:i]:
            yield f"tunnels[{i}].name: tunnel name {name!r} is used twice; names must be unique"
    seen = {gw.public_ip: "vpn_gateway.public_ip"}
    if gw.secondary_public_ip is not None:
        if not is_documentation(gw.secondary_public_ip):
            yield f"vpn_gateway.secondary_public_ip: {gw.secondary_public_ip} must be in a " \
                  f"documentation range ({DOCUMENTATION_TEXT})"
        if gw.secondary_public_ip == gw.public_ip:
            yield "vpn_gateway.secondary_public_ip: must differ from vpn_gateway.public_ip"
        seen[gw.secondary_public_ip] = "vpn_gateway.secondary_public_ip"
    for i, t in enumerate(spec.tunnels):
        if t.vpn_gateway == "secondary" and gw.secondary_public_ip is None:
            yield f"tunnels[{i}].vpn_gateway: 'secondary' needs vpn_gateway.secondary_public_ip"
    for i, t in enumerate(spec.tunnels):
        ip = t.customer_gateway.public_ip
        if ip in seen:
            yield f"tunnels[{i}].customer_gateway.public_ip: {ip} is already used by {seen[ip]}; " \
                  "each tunnel needs its own customer gateway address"
        seen.setdefault(ip, f"tunnels[{i}].customer_gateway.public_ip")
    for i, route in enumerate(gw.routes):
        where = f"vpn_gateway.routes[{i}]"
        if route.tunnel not in names:
            yield f"{where}.tunnel: no tunnel named {route.tunnel!r}"
        elif spec.tunnel(route.tunnel).communication_mode != "destination-route":
            yield f"{where}.tunnel: tunnel {route.tunnel!r} uses SPD policy; routes in the " \
                  "gateway's route table apply to destination-route tunnels only"
        if route.destination.overlaps(gw.vpc_cidr):
            yield f"{where}.destination: {route.destination} overlaps the VPC CIDR {gw.vpc_cidr}"
        for j, other in enumerate(gw.routes[:i]):
            if route.destination.overlaps(other.destination):
                yield f"{where}.destination: {route.destination} overlaps vpn_gateway.routes[{j}] " \
                      f"({other.destination}); the lab's route table has no priorities"
        for t_i, t in enumerate(spec.tunnels):
            for local, peer in t.mappings():
                if route.destination.overlaps(peer) and local.overlaps(gw.vpc_cidr):
                    yield f"{where}.destination: {route.destination} overlaps the SPD mapping " \
                          f"{local}-{peer} of tunnels[{t_i}]; traffic to it would match both"



def _nat_rules(spec: LabSpec, at: str, t: Tunnel) -> Iterator[str]:
    nat = t.customer_gateway.behind_nat
    if nat is None:
        return
    if not nat.inbound and t.negotiation_type != "passive":
        yield f"{at}.customer_gateway.behind_nat.inbound: false lets nothing in that the customer " \
              f"gateway did not start, so the cloud cannot initiate; set negotiation_type: passive " \
              f"(got {t.negotiation_type})"
    where = f"{at}.customer_gateway.behind_nat.private_ip"
    ip = nat.private_ip
    if not is_private_wan(ip):
        yield f"{where}: {ip} must be a private address (10/8, 172.16/12, 192.168/16 or the " \
              "carrier-grade NAT range 100.64/10): the address behind the NAT"
        return
    for problem in private_wan_problems(spec, t, ip):
        yield f"{where}: {problem}"


def private_wan_problems(spec: LabSpec, t: Tunnel, ip: ipaddress.IPv4Address,
                         carried: Iterable[ipaddress.IPv4Network] = ()) -> list[str]:
    """What keeps `ip` from being the gateway's WAN behind the lab's NAT router (its /24):
    a network or broadcast address, or a /24 that overlaps a range the tunnel carries (the
    VPC, the IDC ranges, the mappings' peers, and `carried`: e.g. a user's own subnets)."""
    wan = ipaddress.IPv4Network(f"{ip}/24", strict=False)
    out = []
    if ip in (wan.network_address, wan.broadcast_address):
        out.append(f"{ip} is the network or broadcast address of its /24 ({wan}); pick a host "
                   "address")
    inside = [spec.vpn_gateway.vpc_cidr, *t.customer_gateway.idc_cidrs,
              *(peer for _, peer in t.mappings()), *carried]
    clash = next((cidr for cidr in inside if wan.overlaps(cidr)), None)
    if clash is not None:
        out.append(f"its /24 ({wan}) overlaps {clash}, a range the tunnel carries; the WAN behind "
                   "the NAT must be apart from the VPC and IDC ranges")
    return out


def _tunnel_rules(spec: LabSpec, i: int, t: Tunnel) -> Iterator[str]:
    at = f"tunnels[{i}]"
    prof = profile_of(spec)
    if len(t.name) > prof.tunnel_name_max:
        yield f"{at}.name: at most {prof.tunnel_name_max} characters{prof.where()} (got {len(t.name)})"
    if len(t.name) < prof.tunnel_name_min:
        yield f"{at}.name: at least {prof.tunnel_name_min} characters{prof.where()} (got {len(t.name)})"
    if prof.name_starts_with_letter and not t.name[:1].isalpha():
        yield f"{at}.name: must start with a letter{prof.where()} (got {t.name!r})"
    if not is_documentation(t.customer_gateway.public_ip):
        yield f"{at}.customer_gateway.public_ip: {t.customer_gateway.public_ip} must be in a " \
              f"documentation range ({DOCUMENTATION_TEXT})"
    yield from _nat_rules(spec, at, t)
    if t.communication_mode == "spd-policy" and not t.spd_rules:
        yield f"{at}.spd_rules: SPD policy mode needs at least one rule (local and peer CIDRs)"
    if t.communication_mode == "destination-route" and t.spd_rules:
        yield f"{at}.spd_rules: destination-route tunnels take routes in vpn_gateway.routes, " \
              "not SPD rules"
    yield from _profile_rules(prof, at, t)
    if t.ike.version == "v2" and t.ike.exchange_mode == "aggressive":
        yield f"{at}.ike.exchange_mode: aggressive mode exists only in IKEv1"
    # identities (FQDN/address syntax) and the name's characters are the models' rules (lab.spec)
    yield from _customer_rules(prof, at, t)
    yield from _health_rules(spec, at, t)


def _customer_rules(prof: profiles.Profile, at: str, t: Tunnel) -> Iterator[str]:
    """`customer.ike`/`customer.ipsec` are free-form overrides of the tunnel's options: the
    customer side (lab.plan) is the tunnel's options with them applied, so they must make valid
    options (their IDs reach the customer's swanctl.conf, ipsec.conf and ipsec.secrets)."""
    for section, model, own in (("ike", IkeOptions, t.ike), ("ipsec", IpsecOptions, t.ipsec)):
        try:
            model.model_validate({**own.model_dump(), **getattr(t.customer, section)},
                                 context={"profile": prof})
        except ValidationError as exc:
            for e in exc.errors():
                yield f"{at}.customer.{section}.{location(e['loc'])}: {message(e)}"


def profile_of(spec: LabSpec) -> profiles.Profile:
    """The gateway's profile in its generation (a generation the profile lacks is reported by
    `_gateway_rules`; the profile's own menus apply meanwhile)."""
    gw = spec.vpn_gateway
    try:
        return profiles.get(gw.profile, gw.generation)
    except LookupError:
        return profiles.get(gw.profile)


def _profile_rules(prof: profiles.Profile, at: str, t: Tunnel) -> Iterator[str]:
    """Menus, DPD, lifetimes and mapping count against the gateway's profile."""
    pfs_off = t.ipsec.pfs == "disable"
    for kind, value in (
        ("ike_version", t.ike.version), ("exchange_mode", t.ike.exchange_mode),
        ("ike_encryption", t.ike.encryption), ("ike_integrity", t.ike.integrity),
        ("dh_group", t.ike.dh_group), ("ipsec_encryption", t.ipsec.encryption),
        ("ipsec_integrity", t.ipsec.integrity), ("pfs", t.ipsec.pfs),
        ("negotiation_type", t.negotiation_type), ("communication_mode", t.communication_mode),
        ("dpd_action", t.dpd.action),
    ):
        if kind == "exchange_mode" and t.ike.version == "v2":
            continue  # IKEv2 has no exchange mode to choose
        if kind == "dpd_action" and not t.dpd.enabled:
            continue
        if not prof.offers(kind, value):
            what = "PFS disabled" if kind == "pfs" and pfs_off else value
            yield f"{at}.{profiles.MENU_FIELDS[kind]}: {what} is not offered by {prof.label} " \
                  f"(offers {prof.shown(kind)}){prof.newer_offer(kind, value)}"
    default_timeout = prof.defaults.get("dpd", {}).get("timeout", 30)
    if prof.dpd_timeout is None:
        if t.dpd.timeout != default_timeout:
            yield f"{at}.dpd.timeout: the {prof.name} profile has no DPD timeout setting (DPD is " \
                  f"on or off; the lab uses {default_timeout} seconds)"
    else:
        lo, hi = prof.dpd_timeout
        if hi is None and t.dpd.timeout < lo:
            yield f"{at}.dpd.timeout: must be at least {lo} seconds{prof.where()} " \
                  f"(got {t.dpd.timeout})"
        elif hi is not None and not lo <= t.dpd.timeout <= hi:
            yield f"{at}.dpd.timeout: must be {lo}-{hi} seconds{prof.where()} (got {t.dpd.timeout})"
    for field, amount, bounds, unit in (
        ("ike.sa_lifetime", t.ike.sa_lifetime, prof.lifetime_bounds("ike.sa_lifetime"), " seconds"),
        ("ipsec.sa_lifetime", t.ipsec.sa_lifetime, prof.lifetime_bounds("ipsec.sa_lifetime"),
         " seconds"),
        ("ipsec.sa_lifetime_kb", t.ipsec.sa_lifetime_kb, prof.ipsec_lifetime_kb, " KB"),
    ):
        if bounds is None:
            continue  # no such setting: the lab's default applies
        lo, hi = bounds
        if amount < lo or (hi is not None and amount > hi):
            yield f"{at}.{field}: must be {lo}-{hi}{unit}{prof.where()} (got {amount})"
    most = prof.max_mappings_per_tunnel
    if most is not None and len(t.mappings()) > most:
        yield f"{at}.spd_rules: {len(t.mappings())} mappings; the {prof.name} profile negotiates " \
              f"at most {most} traffic-selector pair(s) per tunnel"
    if not prof.initiates_ikev1 and t.negotiation_type == "active" and t.ike.version == "v1":
        yield f"{at}.negotiation_type: active ({prof.negotiation_types['active']}) needs " \
              f"ike.version v2{prof.where()}: {prof.cloud} initiates IKE for IKEv2 only (got " \
              f"ike.version v1); use passive ({prof.negotiation_types['passive']}) or IKEv2"
    yield from _rekey_rules(prof, at, t)


def _rekey_rules(prof: profiles.Profile, at: str, t: Tunnel) -> Iterator[str]:
    """The cloud side's rekey margin, rekey fuzz and replay window (lab.profiles.REKEY_FIELDS):
    refused on a profile without them, within the cloud's ranges where it has them (the margin
    at most half of ipsec.sa_lifetime, AWS's rule), and never customer overrides: they time the
    cloud gateway's rekeys, the customer gateway keeps strongSwan's own."""
    for name, what in profiles.REKEY_FIELDS.items():
        field = f"ipsec.{name}"
        value = getattr(t.ipsec, name)
        if name in t.customer.ipsec:
            yield f"{at}.customer.{field}: a cloud-side setting ({field}); the customer " \
                  f"gateway keeps strongSwan's own {what}"
        if value is None:
            continue
        bounds: profiles.Range | None = getattr(prof, name)
        if bounds is None:
            owners = [p.name for p in profiles.PROFILES.values() if getattr(p, name) is not None]
            yield f"{at}.{field}: {prof.label} has no {what} setting (the " \
                  f"{' and '.join(owners)} profile has); leave it out"
            continue
        lo, hi = bounds
        unit = {"rekey_margin": " seconds", "rekey_fuzz": " %", "replay_window": " packets"}[name]
        why = ""
        if name == "rekey_margin":
            half = t.ipsec.sa_lifetime // 2
            hi, why = (half if hi is None else min(hi, half)), \
                f", at most half of ipsec.sa_lifetime {t.ipsec.sa_lifetime}"
        if not lo <= value <= (value if hi is None else hi):
            yield f"{at}.{field}: must be {lo}-{hi}{unit}{prof.where()} " \
                  f"({prof.api_name(field)}{why}) (got {value})"


def _health_rules(spec: LabSpec, at: str, t: Tunnel) -> Iterator[str]:
    hc = t.health_check
    prof = profile_of(spec)
    if hc.enabled and not prof.health_check:
        yield f"{at}.health_check.enabled: the {prof.name} profile has no health check"
    for field, value, (lo, hi) in (
        ("interval_ms", hc.interval_ms, prof.health_interval_ms),
        ("threshold", hc.threshold, prof.health_threshold),
        ("timeout_ms", hc.timeout_ms, prof.health_timeout_ms),
    ):
        named = f" ({prof.api_name(f'health_check.{field}')})" \
            if f"health_check.{field}" in prof.api_names else ""
        if hi is None and value < lo:
            yield f"{at}.health_check.{field}: must be at least {lo}{prof.where()}{named} " \
                  f"(got {value})"
        elif hi is not None and not lo <= value <= hi:
            yield f"{at}.health_check.{field}: must be {lo}-{hi}{prof.where()} (got {value})"
    step = prof.health_interval_step_ms
    if hc.interval_ms % step:
        whole = "whole seconds" if step == 1000 else f"a multiple of {step} ms"
        yield f"{at}.health_check.interval_ms: must be {whole}{prof.where()} " \
              f"({prof.api_name('health_check.interval_ms')}; got {hc.interval_ms})"
    yield from _health_policy_rules(prof, at, t)
    if not hc.enabled:
        return
    ranges = [("the VPC CIDR", spec.vpn_gateway.vpc_cidr)]
    ranges += [("an IDC CIDR", c) for c in t.idc_ranges()]
    ranges += [("an SPD local CIDR", lo) for lo, _ in t.mappings()]
    for side, other in (("local_ip", "peer_ip"), ("peer_ip", "local_ip")):
        ip = getattr(hc, side)
        if ip is None:
            yield f"{at}.health_check.{side}: required when the health check is enabled"
            continue
        if ip.is_multicast or ip.is_loopback or ip == ipaddress.IPv4Address("255.255.255.255") \
                or ip.is_unspecified:
            yield f"{at}.health_check.{side}: {ip} must not be a multicast, broadcast or " \
                  "loopback address"
        for what, cidr in ranges:
            if ip in cidr:
                yield f"{at}.health_check.{side}: {ip} conflicts with {what} {cidr}"
                break
        if ip == getattr(hc, other):
            yield f"{at}.health_check.{side}: must differ from health_check.{other}"


def _health_policy_rules(prof: profiles.Profile, at: str, t: Tunnel) -> Iterator[str]:
    """What a failed check does to the routes: a choice only where the cloud offers one."""
    policy = t.health_check.policy
    if policy is None or policy in prof.health_policies:
        return
    if not prof.health_policies:
        owners = [p.name for p in profiles.PROFILES.values() if p.health_policies]
        does = "its health check withdraws the tunnel's routes when it fails" \
            if prof.health_check else "it has no health check"
        yield f"{at}.health_check.policy: {prof.label} has no health-check policy ({does}; " \
              f"the {' and '.join(owners)} profile chooses); leave it out"
    else:
        yield f"{at}.health_check.policy: {policy} is not offered by {prof.label} (offers " \
              f"{', '.join(prof.health_policies)})"


def _mapping_rules(spec: LabSpec) -> Iterator[str]:
    """No two mappings of one gateway may overlap (both local and peer ranges); at most 200."""
    for which in ("primary", "secondary"):
        taken: list[tuple[str, Cidr, Cidr]] = []
        for i, t in enumerate(spec.tunnels):
            if t.vpn_gateway != which:
                continue
            for r, rule in enumerate(t.spd_rules):
                for local in rule.local:
                    for peer in rule.peer:
                        where = f"tunnels[{i}].spd_rules[{r}]"
                        clash = next(
                            (w for w, lo, pe in taken if lo.overlaps(local) and pe.overlaps(peer)),
                            None,
                        )
                        if clash:
                            yield f"{where}: mapping {local}-{peer} overlaps a mapping of {clash}; " \
                                  "mappings of one VPN gateway must not overlap"
                        taken.append((f"{where} ({t.name})", local, peer))
        most = profile_of(spec).max_mappings_per_gateway
        if most is not None and len(taken) > most:
            gateway = "one VPN gateway" if which == "primary" else "the secondary VPN gateway"
            yield f"tunnels: {len(taken)} SPD mappings on {gateway}; at most " \
                  f"{most}{profile_of(spec).where()} (use destination-route tunnels for more)"


def unsupported(spec: LabSpec) -> list[str]:
    """Valid cloud settings the strongSwan endpoints cannot run (SM4, SM3), as `field: why`."""
    found = []
    for i, t in enumerate(spec.tunnels):
        for section, options in (("ike", t.ike), ("ipsec", t.ipsec)):
            for field, menu in (("encryption", cat.ENCRYPTION), ("integrity", cat.INTEGRITY)):
                option = cat.by_console(menu, getattr(options, field))
                if not option.supported:
                    found.append(f"tunnels[{i}].{section}.{field}: {cat.unsupported_reason(option)}")
        if t.ike.version == "v1" and cat.by_console(cat.ENCRYPTION, t.ike.encryption).aead:
            found.append(f"tunnels[{i}].ike.encryption: {t.ike.encryption} in IKEv1 is not supported "
                         "by the strongSwan endpoints (no AEAD cipher for an IKEv1 SA; use IKEv2)")
    return found
