"""The tunnel spec: one cloud VPN gateway with its VPC, and tunnels to customer gateways.

Field names and value sets follow the console (see `catalogue`); API spellings are accepted too.
Types, ranges and menus are checked here by pydantic; rules spanning several fields (mapping
overlap, health-check addresses...) live in `rules`. `load_spec` runs both and raises
`SpecInvalid` with every problem, each naming its field and rule.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticKnownError

from lab import catalogue as cat
from lab import profiles
from lab.errors import LabError

IPv4 = ipaddress.IPv4Address
Cidr = ipaddress.IPv4Network


def _profile(info: ValidationInfo | None) -> profiles.Profile:
    """The gateway profile `parse_spec` validates against (the default one without context)."""
    context = (info.context if info else None) or {}
    return context.get("profile") or profiles.get(None)


def _menu(kind: str):
    """Accept any catalogue spelling (any profile's option; `lab.spec.rules` checks the profile's menu);
    an unknown value's message lists the profile's menu."""

    def pick(value: Any, info: ValidationInfo) -> str:
        found = profiles.canonical(kind, value)
        if found is None:
            raise ValueError(f"must be one of {', '.join(_profile(info).menu(kind))} (got "
                             f"{value!r}){_null_hint(value)}")
        return found

    return BeforeValidator(pick)


def _null_hint(value: Any) -> str:
    """YAML reads a bare `NULL` as no value; never taken as ESP NULL (no encryption) unasked."""
    return "; YAML reads a bare NULL as no value: write 'NULL' (quoted) for ESP NULL" \
        if value is None else ""


def _choice(kind: str):
    """Accept the console keyword or the API's spelling (any profile's), case-insensitively."""
    return _menu(kind)


def _pfs(value: Any, info: ValidationInfo) -> str:
    found = "disable" if value is None else profiles.canonical("pfs", value)
    if found is None:
        menu = _profile(info).menu("pfs")
        groups = ", ".join(g for g in menu if g != "disable")
        either = "disable or one of" if "disable" in menu else "one of"
        raise ValueError(f"must be {either} {groups} (got {value!r})")
    return found


def _ike_cipher(value: str) -> str:
    """ESP NULL (integrity only) is a catalogue option, but an IKE SA always encrypts: refused
    here so no IKE proposal is ever written with it (customer overrides included)."""
    if cat.by_console(cat.ALL_ENCRYPTION, value).esp_only:
        raise ValueError(f"{value} (no encryption) is an ESP cipher only: an IKE SA is always "
                         "encrypted; NULL is offered for ipsec.encryption")
    return value


def _lifetime(spec_field: str) -> AfterValidator:
    """The lab's floor under an SA lifetime (lab.profiles.LIFETIME_FLOOR). Where the profile's
    API allows less (Alibaba: 0-86400 s) the message names both ranges; elsewhere it is the
    plain range error it always was."""
    floor = profiles.LIFETIME_FLOOR[spec_field]

    def check(value: int, info: ValidationInfo) -> int:
        if value >= floor:
            return value
        prof = _profile(info)
        lo, hi = prof.ike_lifetime if spec_field == "ike.sa_lifetime" else prof.ipsec_lifetime
        if lo >= floor:
            raise PydanticKnownError("greater_than_equal", {"ge": floor})
        raise ValueError(f"must be at least {floor} seconds{prof.where()}, the lab's floor "
                         f"({prof.api_name(spec_field)} allows {lo}-{hi}; below {floor} s a "
                         f"renegotiation does not fit into the tenth of the lifetime strongSwan "
                         f"leaves for it, and 0 has no strongSwan equivalent) (got {value})")

    return AfterValidator(check)


def _health_policy(value: Any) -> str | None:
    """Alibaba's HealthCheckConfig.Policy, in any case (lab.catalogue.HEALTH_POLICIES)."""
    if value is None:
        return None
    wanted = cat.normalise(str(value)).replace("-", "_")
    if wanted not in cat.HEALTH_POLICIES:
        raise ValueError(f"must be one of {', '.join(cat.HEALTH_POLICIES)} (got {shown(value)})")
    return wanted


IkeEncryption = Annotated[str, _menu("ike_encryption"), AfterValidator(_ike_cipher)]
IkeIntegrity = Annotated[str, _menu("ike_integrity")]
IpsecEncryption = Annotated[str, _menu("ipsec_encryption")]
IpsecIntegrity = Annotated[str, _menu("ipsec_integrity")]
DhGroup = Annotated[str, _menu("dh_group")]
Pfs = Annotated[str, BeforeValidator(_pfs)]
IkeVersion = Annotated[str, _choice("ike_version")]
ExchangeMode = Annotated[str, _choice("exchange_mode")]
NegotiationType = Annotated[str, _choice("negotiation_type")]
CommunicationMode = Annotated[str, _choice("communication_mode")]
DpdAction = Annotated[str, _choice("dpd_action")]
ProfileName = Literal["tencent", "aws", "alibaba"]  # lab.profiles.NAMES
Generation = Literal["classic", "newer"]  # lab.profiles.GENERATIONS

# Hostname-like (RFC 1123 labels), matched whole (`fullmatch`: `$` would let a final newline in).
FQDN = re.compile(r"(?=.{1,253}\Z)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9]"
                  r"([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")

# Names the user types that become names in generated files (tunnel names: connection, child and
# secret sections of swanctl.conf, conns of ipsec.conf, charon's `<name|1>` log prefix). strongSwan's
# settings syntax ends a name at whitespace, `{ } = # "`, ipsec.conf at whitespace and `=` (and
# reserves `%` names); so a name is one hostname-like word that every one of them reads as itself.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
NAME_RULE = "letters, digits, '.', '_' and '-' only, starting with a letter or digit"
RESERVED_NAMES = ("include",)  # swanctl.conf would read `include {` as an include statement


def shown(value: Any, most: int = 40) -> str:
    """A user's value for a one-line message: repr (control characters escaped), shortened."""
    text = repr(value)
    return text if len(text) <= most else f"{text[:most]}... ({len(str(value))} characters)"


def name_problem(value: Any) -> str | None:
    """Why `value` cannot be a tunnel name in the generated configs, or None."""
    if not isinstance(value, str) or not NAME.fullmatch(value):
        return f"must be {NAME_RULE} (it names swanctl.conf and ipsec.conf sections; got " \
               f"{shown(value)})"
    if value.lower() in RESERVED_NAMES:
        return f"{value!r} is reserved in swanctl.conf (it starts an include statement)"
    return None


def fqdn_problem(value: Any) -> str | None:
    """Why `value` cannot be an FQDN identity, or None: a host name (letters, digits and '-' in
    dot-separated labels of at most 63, 253 in all), not one that reads as an IPv4 address."""
    if not isinstance(value, str) or not FQDN.fullmatch(value):
        return "an FQDN identity needs a domain name: letters, digits and '-' in dot-separated " \
               f"labels (got {shown(value)})"
    if value.rsplit(".", 1)[-1].isdigit():
        return "an FQDN identity must not end in a numeric label: strongSwan would read " \
               f"{value!r} as an IP address (use type address)"
    return None


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Identity(Strict):
    """Local or peer ID. An address ID without a value is the gateway's public IP."""

    type: Literal["address", "fqdn"] = "address"
    value: Annotated[str | None, Field(validate_default=True)] = None

    @field_validator("type", mode="before")
    @classmethod
    def _type(cls, v: Any) -> str:
        return {"ip": "address", "ipaddress": "address"}.get(cat.normalise(str(v)), str(v).lower())

    @field_validator("value")
    @classmethod
    def _value(cls, v: str | None, info: ValidationInfo) -> str | None:
        """The ID is written into swanctl.conf, ipsec.conf and ipsec.secrets as it stands."""
        kind = info.data.get("type")
        if v is None and kind != "fqdn":
            return v  # the gateway's public IP
        if kind == "fqdn":
            problem = fqdn_problem(v)
            if problem:
                raise ValueError(problem)
        elif kind == "address":
            try:
                ipaddress.IPv4Address(v)
            except ValueError:
                raise ValueError(f"an address identity needs an IPv4 address (got {shown(v)})") \
                    from None
        return v


class IkeOptions(Strict):
    version: IkeVersion = "v1"
    encryption: IkeEncryption = cat.DEFAULT_IKE_ENCRYPTION
    integrity: IkeIntegrity = cat.DEFAULT_IKE_INTEGRITY
    exchange_mode: ExchangeMode = "main"
    local_id: Identity = Identity()
    peer_id: Identity = Identity()
    dh_group: DhGroup = cat.DEFAULT_DH_GROUP
    sa_lifetime: Annotated[int, Field(le=cat.IKE_LIFETIME_RANGE[1]), _lifetime("ike.sa_lifetime")] = (
        cat.DEFAULT_IKE_LIFETIME
    )


class IpsecOptions(Strict):
    encryption: IpsecEncryption = cat.DEFAULT_IPSEC_ENCRYPTION
    integrity: IpsecIntegrity = cat.DEFAULT_IPSEC_INTEGRITY
    pfs: Pfs = "disable"
    sa_lifetime: Annotated[
        int, Field(le=cat.IPSEC_LIFETIME_RANGE[1]), _lifetime("ipsec.sa_lifetime")
    ] = cat.DEFAULT_IPSEC_LIFETIME
    sa_lifetime_kb: Annotated[
        int, Field(ge=cat.IPSEC_LIFETIME_KB_RANGE[0], le=cat.IPSEC_LIFETIME_KB_RANGE[1])
    ] = cat.DEFAULT_IPSEC_LIFETIME_KB
    encapsulation: Literal["tunnel"] = "tunnel"
    protocol: Literal["esp"] = "esp"
    # The cloud side's CHILD_SA rekey timing and replay window, where the profile has them (AWS's
    # RekeyMarginTimeSeconds, RekeyFuzzPercentage, ReplayWindowSize; ranges in lab.profiles,
    # checked by lab.spec.rules). None: not set, strongSwan's own (rendered as before).
    rekey_margin: int | None = None  # seconds before the end of the lifetime the rekey starts
    rekey_fuzz: int | None = None  # percent of the margin over which the start is spread
    replay_window: int | None = None  # packets


class SpdRule(Strict):
    """One SPD rule: every local x peer CIDR pair is a mapping."""

    local: Annotated[list[Cidr], Field(min_length=1)]
    peer: Annotated[list[Cidr], Field(min_length=1)]


class Dpd(Strict):
    enabled: bool = True
    timeout: int = 30
    action: DpdAction = "disconnect"


class HealthCheck(Strict):
    """NQA probes from `local_ip` (cloud side) to `peer_ip` (customer side) through the tunnel."""

    enabled: bool = False
    local_ip: IPv4 | None = None
    peer_ip: IPv4 | None = None
    interval_ms: int = 2000
    threshold: int = 3
    timeout_ms: int = 1000
    # what a failed check does to the tunnel's routes, where the profile lets it be chosen
    # (Alibaba's Policy: revoke_route | reserve_route). None: they are withdrawn (Tencent's).
    policy: Annotated[str | None, BeforeValidator(_health_policy)] = None


class UnsetKey(SecretStr):
    """A pre-shared key `env:NAME` whose variable is not set, in a spec read only to be checked:
    reading the key is a LabError naming the field and the variable."""

    def __init__(self, variable: str, where: str = "pre_shared_key"):
        super().__init__("")
        self.variable = variable
        self.where = where

    def get_secret_value(self) -> str:
        raise LabError(f"{self.where}: environment variable {self.variable} is not set (the "
                       "pre-shared key is needed here)")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, UnsetKey) and other.variable == self.variable

    def __hash__(self) -> int:
        return hash(("UnsetKey", self.variable))

    def __repr__(self) -> str:
        return f"UnsetKey(env:{self.variable})"


class BehindNat(Strict):
    """The customer gateway's own WAN address is private; a NAT router in front of it translates
    to `customer_gateway.public_ip` (source NAT), as an IDC firewall or a cloud VM's elastic IP
    does. The cloud sees the public address; the gateway's default ID is its private one."""

    private_ip: IPv4
    # IKE and ESP-in-UDP from the internet forwarded to the gateway (UDP 500/4500: an elastic IP,
    # or a firewall with those ports forwarded), so the cloud can initiate; false: only what the
    # gateway started gets back in (then the cloud must not initiate: negotiation_type passive)
    inbound: bool = True
    # seconds the NAT keeps an idle UDP mapping (conntrack); None: the kernel's (30 s unreplied,
    # 120 s once answered). NAT-T keepalives (strongSwan: every 20 s) hold a shorter one open.
    udp_timeout: Annotated[int, Field(ge=5, le=3600)] | None = None
    # seconds between the customer gateway's NAT-T keepalives when it sends nothing else
    # (strongSwan's charon.keep_alive); None: strongSwan's 20 s; 0: none at all
    keepalive: Annotated[int, Field(ge=0, le=3600)] | None = None


class CustomerGateway(Strict):
    public_ip: IPv4
    behind_nat: BehindNat | None = None
    idc_cidrs: list[Cidr] = []
    # customer gateways naming one site share one IDC (its host behind a switch): the seed's
    # primary/secondary set-up, two customer gateways in front of the same data centre
    site: str | None = None
    # the IKE implementation the lab runs as this customer gateway: strongSwan (charon, over
    # VICI) or libreswan (pluto, over whack; needs the kernel's ESP: lab.libreswan)
    implementation: Literal["strongswan", "libreswan"] = "strongswan"


class CustomerOverrides(Strict):
    """Deliberate differences on the customer side (everything else mirrors the cloud side)."""

    pre_shared_key: SecretStr | None = None
    ike: dict[str, Any] = {}
    ipsec: dict[str, Any] = {}
    swap_selectors: bool = False  # its local and remote traffic selectors swapped (a TS mismatch)


def _tunnel_name(value: str) -> str:
    problem = name_problem(value)
    if problem:
        raise ValueError(problem)
    return value


class Tunnel(Strict):
    name: Annotated[str, Field(min_length=1), AfterValidator(_tunnel_name)]
    customer_gateway: CustomerGateway
    pre_shared_key: SecretStr
    negotiation_type: NegotiationType = "active"
    communication_mode: CommunicationMode = "spd-policy"
    spd_rules: list[SpdRule] = []
    dpd: Dpd = Dpd()
    health_check: HealthCheck = HealthCheck()
    ike: IkeOptions = IkeOptions()
    ipsec: IpsecOptions = IpsecOptions()
    customer: CustomerOverrides = CustomerOverrides()
    # which VPN gateway of the VPC terminates the tunnel (secondary: vpn_gateway.secondary_public_ip)
    vpn_gateway: Literal["primary", "secondary"] = "primary"

    @field_validator("pre_shared_key", mode="before")
    @classmethod
    def _secret_from_env(cls, v: Any, info: ValidationInfo) -> Any:
        """`env:NAME` keeps the key out of the spec file. Unset, it is an error where the key is
        needed (the default); `validate` (need_keys=False) only checks the spec, so the key
        stays unknown (`UnsetKey`) and using it is an error naming the variable."""
        if isinstance(v, str) and v.startswith("env:"):
            name = v[4:]
            if name not in os.environ:
                if not ((info.context or {}).get("need_keys", True)):
                    return UnsetKey(name)
                raise ValueError(f"environment variable {name} is not set")
            return os.environ[name]
        return v

    def mappings(self) -> list[tuple[Cidr, Cidr]]:
        """(local, peer) pairs in the order the gateway negotiates them."""
        return [(lo, pe) for rule in self.spd_rules for lo in rule.local for pe in rule.peer]

    def idc_ranges(self) -> list[Cidr]:
        return list(self.customer_gateway.idc_cidrs) or _unique(p for _, p in self.mappings())


class Route(Strict):
    """A route-table entry of the VPN gateway (destination-route mode)."""

    destination: Cidr
    tunnel: str


class VpnGateway(Strict):
    profile: ProfileName = "tencent"  # whose gateway: its menus and limits (lab.profiles)
    # Tencent's VPN gateway generation: newer ones add AES-GCM, ESP NULL and DH 15/16/19/20/21 to
    # the classic menus. None: classic (the tencent profile); the other profiles have none.
    generation: Generation | None = None
    public_ip: IPv4 = IPv4("203.0.113.1")
    vpc_cidr: Cidr = Cidr("10.0.0.0/16")
    routes: list[Route] = []
    # a second VPN gateway in the same VPC, for primary/secondary disaster recovery: tunnels with
    # `vpn_gateway: secondary` terminate there (mapping rules apply per gateway)
    secondary_public_ip: IPv4 | None = None

    def ip_of(self, which: str) -> IPv4:
        return self.secondary_public_ip if which == "secondary" and self.secondary_public_ip \
            else self.public_ip


class Internet(Strict):
    """The simulated internet between the gateways."""

    # the path MTU between the gateways (both ends of each uplink): 1500 is Ethernet's; PPPoE
    # links have 1492, some carrier paths less. IPv4's minimum for IPsec use is kept at 1280.
    mtu: Annotated[int, Field(ge=1280, le=9000)] = 1500


class LabSpec(Strict):
    vpn_gateway: VpnGateway = VpnGateway()
    internet: Internet = Internet()
    tunnels: Annotated[list[Tunnel], Field(min_length=1)]

    def tunnel(self, name: str) -> Tunnel:
        return next(t for t in self.tunnels if t.name == name)

    def routes_of(self, tunnel: Tunnel) -> list[Cidr]:
        """Destinations the gateway's route table sends into a destination-route tunnel."""
        return [r.destination for r in self.vpn_gateway.routes if r.tunnel == tunnel.name]

    def selectors(self, tunnel: Tunnel) -> list[tuple[Cidr, Cidr]]:
        """(local, peer) pairs a tunnel protects: its SPD mappings, or for a destination-route
        tunnel the VPC against each routed destination (one CHILD_SA each, see lab.plan)."""
        if tunnel.communication_mode == "destination-route":
            return [(self.vpn_gateway.vpc_cidr, d) for d in self.routes_of(tunnel)]
        return tunnel.mappings()


def _unique(items) -> list:
    seen: list = []
    for item in items:
        if item not in seen:
            seen.append(item)
    return seen


class SpecInvalid(LabError):
    """Every problem found in a spec, each as `field: rule`."""

    def __init__(self, source: str, problems: list[str]):
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source}: invalid tunnel spec\n{lines}")


def location(loc: tuple) -> str:
    """pydantic's error location as a spec field path: `tunnels[0].ike.dh_group`."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in {"function-before[pick()]", "function-before[_pfs()]"}:
            continue
        else:
            out += f".{part}" if out else str(part)
    return out


def message(error: Mapping[str, Any]) -> str:
    """pydantic's error message in the spec's words."""
    msg = error["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if error["type"] == "extra_forbidden":
        msg = "unknown field (not part of the tunnel spec)"
    return msg
