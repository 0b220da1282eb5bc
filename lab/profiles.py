"""Gateway profiles: which cloud's VPN gateway the lab emulates, its menus and limits as data.

A profile only selects and bounds: every menu entry is a console label of an option in
`lab.catalogue` (the one source of truth for names, API spellings, strongSwan keywords and
list-sas names). Tencent is the default profile and its menus are the catalogue's original
ones, unchanged. Sources: /work/shared/notes/cloud-params.md ("Other clouds"). Where the notes
are silent a profile says so in `assumed` (shown by `ipsec-lab validate`), and takes Tencent's
value unless the cloud's public API documents another.

`lab.spec` accepts any catalogue spelling and applies the profile's defaults to omitted fields;
`lab.spec.rules` checks every menu choice and limit against the gateway's profile.

Tencent's VPN gateways come in two generations (`vpn_gateway.generation`): classic (the default,
the menus above) and newer, whose menus add AES-GCM, ESP NULL and DH 15/16/19/20/21
(`TENCENT_NEWER`). `get(name, generation)` picks one; the other clouds have one set of menus
(Alibaba's current API has one DH menu for every kind of IPsec connection, see `ALIBABA`).

Some settings exist on one cloud only (AWS's rekey margin, rekey fuzz and replay window,
Alibaba's health-check policy): a profile without them refuses them by field name, and the
lab renders them only where they are set, so a spec without them renders as before.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab import catalogue as cat

DEFAULT = "tencent"
GENERATIONS = ("classic", "newer")  # Tencent's VPN gateway generations (vpn_gateway.generation)
EXAMPLES = Path(__file__).resolve().parent.parent / "configs" / "examples"

# Menu kinds: the tunnel field each one constrains (as rules messages name it).
MENU_FIELDS = {
    "ike_version": "ike.version",
    "exchange_mode": "ike.exchange_mode",
    "ike_encryption": "ike.encryption",
    "ike_integrity": "ike.integrity",
    "dh_group": "ike.dh_group",
    "ipsec_encryption": "ipsec.encryption",
    "ipsec_integrity": "ipsec.integrity",
    "pfs": "ipsec.pfs",
    "negotiation_type": "negotiation_type",
    "communication_mode": "communication_mode",
    "dpd_action": "dpd.action",
}
_CATALOGUE_MENUS: dict[str, tuple[cat.Option, ...]] = {
    "ike_encryption": cat.ALL_ENCRYPTION, "ipsec_encryption": cat.ALL_ENCRYPTION,
    "ike_integrity": cat.ALL_INTEGRITY, "ipsec_integrity": cat.ALL_INTEGRITY,
    "dh_group": cat.ALL_DH_GROUPS, "pfs": cat.ALL_DH_GROUPS,
}
_CATALOGUE_TABLES: dict[str, Mapping[str, str]] = {
    "ike_version": cat.IKE_VERSIONS, "exchange_mode": cat.EXCHANGE_MODES,
    "negotiation_type": cat.NEGOTIATION_TYPES, "communication_mode": cat.COMMUNICATION_MODES,
    "dpd_action": cat.ALL_DPD_ACTIONS,
}
# Other clouds' spellings the spec accepts too (AWS StartupAction add/start).
ALIASES: dict[str, dict[str, str]] = {"negotiation_type": {"add": "passive", "start": "active"}}

Range = tuple[int, int | None]  # inclusive; None: no upper bound

# The lab's own floor under every profile's SA lifetimes (seconds): the catalogue's minimum (Tencent's
# API range, 60 s for IKE and 180 s for IPsec SAs), which the spec's models apply to every profile.
# strongSwan renegotiates with a tenth of the lifetime left; below the floor that is less time than a
# negotiation takes on the lab's emulated gateways (see lab.plan._margins), and a lifetime of 0 (which
# Alibaba's API accepts without saying what it does) has no strongSwan equivalent: rekey_time 0
# means never renegotiate. A cloud whose API allows less is refused below it with both ranges named.
LIFETIME_FLOOR = {"ike.sa_lifetime": cat.IKE_LIFETIME_RANGE[0],
                  "ipsec.sa_lifetime": cat.IPSEC_LIFETIME_RANGE[0]}
# Cloud-side rekey settings the lab renders only when set (AWS's names; lab.plan._connection).
REKEY_FIELDS = {"rekey_margin": "rekey margin", "rekey_fuzz": "rekey fuzz",
                "replay_window": "replay window"}


@dataclass(frozen=True)
class Profile:
    """One cloud's tunnel settings. Menus are console labels (catalogue) or lab keywords.

    `negotiation_types` and `dpd_actions` map the lab's keyword to the cloud's own spelling.
    A range of None means the cloud has no such setting: the lab's default value is used and
    a different value is refused.
    """

    name: str
    title: str
    ike_version: tuple[str, ...]
    exchange_mode: tuple[str, ...]
    ike_encryption: tuple[str, ...]
    ike_integrity: tuple[str, ...]
    dh_group: tuple[str, ...]
    ipsec_encryption: tuple[str, ...]
    ipsec_integrity: tuple[str, ...]
    pfs: tuple[str, ...]  # "disable" when PFS may be off
    negotiation_types: dict[str, str]
    dpd_actions: dict[str, str]
    communication_modes: tuple[str, ...]
    dpd_timeout: Range | None
    ike_lifetime: Range
    ipsec_lifetime: Range
    ipsec_lifetime_kb: Range | None
    tunnel_name_max: int
    max_mappings_per_gateway: int | None
    max_mappings_per_tunnel: int | None
    health_check: bool
    health_interval_ms: Range = cat.HEALTH_INTERVAL_MS
    health_threshold: Range = cat.HEALTH_THRESHOLD
    health_timeout_ms: Range = cat.HEALTH_TIMEOUT_MS
    defaults: dict[str, Any] = field(default_factory=dict)  # a tunnel's omitted fields
    assumed: tuple[str, ...] = ()  # what the notes do not say and the profile assumes
    generation: str | None = None  # which of GENERATIONS; None: the cloud has only one
    tunnel_name_min: int = 1
    name_starts_with_letter: bool = False  # a digit first is refused (the lab's own rule allows it)
    # a health-check interval the cloud sets in coarser units (Alibaba: whole seconds), in ms
    health_interval_step_ms: int = 1
    # what a failed health check may do to the routes (cat.HEALTH_POLICIES); (): no choice, they
    # are withdrawn (Tencent's NQA check moves the traffic, lab.health)
    health_policies: tuple[str, ...] = ()
    # cloud-side rekey settings (REKEY_FIELDS); None: the cloud has no such setting. The rekey
    # margin is bounded by half of ipsec.sa_lifetime too (AWS's rule) where the profile has it.
    rekey_margin: Range | None = None  # seconds before the CHILD_SA's end the cloud rekeys
    rekey_fuzz: Range | None = None  # percent of the margin the rekey start is spread over
    replay_window: Range | None = None  # packets of the inbound anti-replay window
    # the cloud initiates IKEv1 too (negotiation_type active); False: IKEv2 only (AWS)
    initiates_ikev1: bool = True
    # the cloud API's name of a spec field, where messages name it (`ipsec.rekey_margin`: ...)
    api_names: dict[str, str] = field(default_factory=dict)
    # the cloud's defaults for settings the lab renders only when set (documented, not applied:
    # unset, strongSwan's own timing is rendered, as it was before the setting existed)
    cloud_defaults: dict[str, int] = field(default_factory=dict)
    cloud: str = "Tencent Cloud"  # whose API, as messages name it

    def menu(self, kind: str) -> tuple[str, ...]:
        """The allowed values of one menu kind (see MENU_FIELDS), in the cloud's order."""
        if kind == "negotiation_type":
            return tuple(self.negotiation_types)
        if kind == "dpd_action":
            return tuple(self.dpd_actions)
        if kind == "communication_mode":
            return self.communication_modes
        return getattr(self, kind)

    def options(self, kind: str) -> tuple[cat.Option, ...]:
        """The catalogue entries of a crypto menu (pfs without `disable`)."""
        return tuple(cat.by_console(_CATALOGUE_MENUS[kind], v) for v in self.menu(kind)
                     if v != "disable")

    def offers(self, kind: str, value: str) -> bool:
        return value in self.menu(kind)

    @property
    def label(self) -> str:
        """How messages name the profile: `the tencent profile`, plus the generation if newer."""
        newer = " (newer gateways)" if self.generation == "newer" else ""
        return f"the {self.name} profile{newer}"

    def newer_offer(self, kind: str, value: str) -> str:
        """`; vpn_gateway.generation: newer offers it` when this classic menu lacks `value` and
        the newer generation's has it, else empty: the message's hint."""
        newer = _GENERATIONS.get(self.name, {}).get("newer")
        if self.generation != "classic" or newer is None or not newer.offers(kind, value):
            return ""
        return "; vpn_gateway.generation: newer offers it"

    def shown(self, kind: str) -> str:
        """The menu as messages list it: `passive (add), active (start)` where spellings differ."""
        spelled = {"negotiation_type": self.negotiation_types, "dpd_action": self.dpd_actions}
        names = spelled.get(kind, {})
        return ", ".join(f"{v} ({names[v]})" if names.get(v, v) != v else v for v in self.menu(kind))

    def where(self) -> str:
        """Suffix for limit messages: empty for the default profile (its messages are the
        console's own), else `on the NAME profile`."""
        return "" if self.name == DEFAULT else f" on the {self.name} profile"

    def lifetime_bounds(self, spec_field: str) -> Range:
        """The lifetime range the lab accepts: the cloud's, raised to the lab's floor."""
        lo, hi = {"ike.sa_lifetime": self.ike_lifetime,
                  "ipsec.sa_lifetime": self.ipsec_lifetime}[spec_field]
        return max(lo, LIFETIME_FLOOR[spec_field]), hi

    def api_name(self, spec_field: str) -> str:
        """How messages name a field in the cloud's API: `Alibaba Cloud's IkeConfig.IkeLifetime`,
        or `Alibaba Cloud's API` where the profile does not name it."""
        return f"{self.cloud}'s {self.api_names.get(spec_field, 'API')}"

    def with_defaults(self, tunnel: Any) -> Any:
        """A tunnel's raw data with this profile's defaults in its omitted fields."""
        if not isinstance(tunnel, dict):
            return tunnel
        return _merge(copy.deepcopy(self.defaults), tunnel)


def _merge(defaults: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    out = dict(given)
    for key, value in defaults.items():
        if key not in out:
            out[key] = value
        elif isinstance(value, dict) and isinstance(out[key], dict):
            out[key] = _merge(value, out[key])
    return out


def _consoles(menu: tuple[cat.Option, ...]) -> tuple[str, ...]:
    return tuple(o.console for o in menu)


def _dh(*numbers: int) -> tuple[str, ...]:
    return tuple(f"DH{n}" for n in numbers)


TENCENT = Profile(
    name="tencent",
    title="Tencent Cloud VPN tunnel (CreateVpnConnection)",
    ike_version=tuple(cat.IKE_VERSIONS),
    exchange_mode=tuple(cat.EXCHANGE_MODES),
    ike_encryption=_consoles(cat.ENCRYPTION),
    ike_integrity=_consoles(cat.INTEGRITY),
    dh_group=_consoles(cat.DH_GROUPS),
    ipsec_encryption=_consoles(cat.ENCRYPTION),
    ipsec_integrity=_consoles(cat.INTEGRITY),
    pfs=("disable", *_consoles(cat.DH_GROUPS)),
    negotiation_types=dict(cat.NEGOTIATION_TYPES),
    dpd_actions=dict(cat.DPD_ACTIONS),
    communication_modes=tuple(cat.COMMUNICATION_MODES),
    dpd_timeout=cat.DPD_TIMEOUT_RANGE,
    ike_lifetime=cat.IKE_LIFETIME_RANGE,
    ipsec_lifetime=cat.IPSEC_LIFETIME_RANGE,
    ipsec_lifetime_kb=cat.IPSEC_LIFETIME_KB_RANGE,
    tunnel_name_max=cat.TUNNEL_NAME_MAX,
    max_mappings_per_gateway=cat.MAX_MAPPINGS_PER_GATEWAY,
    max_mappings_per_tunnel=None,
    health_check=True,
    generation="classic",
    defaults={
        "negotiation_type": "active",
        "dpd": {"timeout": 30, "action": "disconnect"},
        "ike": {"version": "v1", "exchange_mode": "main", "encryption": cat.DEFAULT_IKE_ENCRYPTION,
                "integrity": cat.DEFAULT_IKE_INTEGRITY, "dh_group": cat.DEFAULT_DH_GROUP,
                "sa_lifetime": cat.DEFAULT_IKE_LIFETIME},
        "ipsec": {"encryption": cat.DEFAULT_IPSEC_ENCRYPTION,
                  "integrity": cat.DEFAULT_IPSEC_INTEGRITY, "pfs": "disable",
                  "sa_lifetime": cat.DEFAULT_IPSEC_LIFETIME,
                  "sa_lifetime_kb": cat.DEFAULT_IPSEC_LIFETIME_KB},
    },
)

# Tencent's newer VPN gateways: the classic menus with the catalogue's NEWER_* options added
# (API spellings AES128GCM128, NULL, GROUP19, DH-GROUP19...; lab.cloudapi); all else the same.
TENCENT_NEWER = dataclasses.replace(
    TENCENT,
    title="Tencent Cloud VPN tunnel on a newer VPN gateway (CreateVpnConnection)",
    generation="newer",
    ike_encryption=TENCENT.ike_encryption + _consoles(cat.NEWER_IKE_ENCRYPTION),
    dh_group=TENCENT.dh_group + _consoles(cat.NEWER_DH_GROUPS),
    ipsec_encryption=TENCENT.ipsec_encryption + _consoles(cat.NEWER_IPSEC_ENCRYPTION),
    pfs=TENCENT.pfs + _consoles(cat.NEWER_DH_GROUPS),
)

_AWS_CIPHERS = ("AES-128", "AES-256", "AES-128-GCM-16", "AES-256-GCM-16")
_AWS_HASHES = ("SHA1", "SHA256", "SHA384", "SHA512")
# Sources: EC2 API Reference VpnTunnelOptionsSpecification (CreateVpnConnection) and
# ModifyVpnTunnelOptionsSpecification; Site-to-Site VPN User Guide "Tunnel options for your
# Site-to-Site VPN connection" and "Site-to-Site VPN tunnel initiation options".
AWS = Profile(
    name="aws",
    cloud="AWS",
    title="AWS Site-to-Site VPN tunnel options",
    ike_version=("v1", "v2"),
    exchange_mode=("main",),  # IKEv1 main mode only
    ike_encryption=_AWS_CIPHERS,
    ike_integrity=_AWS_HASHES,
    dh_group=_dh(2, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24),
    ipsec_encryption=_AWS_CIPHERS,
    ipsec_integrity=_AWS_HASHES,
    pfs=_dh(2, 5, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24),  # no "disable": always PFS
    negotiation_types={"passive": "add", "active": "start"},  # StartupAction
    dpd_actions={"disconnect": "clear", "none": "none", "retry": "restart"},  # DPDTimeoutAction
    communication_modes=("spd-policy", "destination-route"),
    dpd_timeout=(30, None),  # DPDTimeoutSeconds >= 30
    ike_lifetime=(900, 28800),
    ipsec_lifetime=(900, 3600),
    ipsec_lifetime_kb=None,  # no volume lifetime on AWS
    tunnel_name_max=255,
    max_mappings_per_gateway=None,
    max_mappings_per_tunnel=1,  # one LocalIpv4NetworkCidr/RemoteIpv4NetworkCidr pair per tunnel
    health_check=False,
    rekey_margin=(60, None),  # RekeyMarginTimeSeconds: 60 to half of Phase2LifetimeSeconds
    rekey_fuzz=(0, 100),  # RekeyFuzzPercentage
    replay_window=(64, 2048),  # ReplayWindowSize
    initiates_ikev1=False,  # StartupAction start: "supported for IKEv2 only"
    api_names={"ipsec.rekey_margin": "RekeyMarginTimeSeconds",
               "ipsec.rekey_fuzz": "RekeyFuzzPercentage",
               "ipsec.replay_window": "ReplayWindowSize",
               "negotiation_type": "StartupAction", "dpd.timeout": "DPDTimeoutSeconds"},
    cloud_defaults={"ipsec.rekey_margin": 270, "ipsec.rekey_fuzz": 100,
                    "ipsec.replay_window": 1024},
    defaults={
        "negotiation_type": "passive",  # StartupAction add
        "dpd": {"timeout": 40, "action": "disconnect"},  # DPDTimeoutAction clear
        "ike": {"version": "v1", "exchange_mode": "main", "encryption": "AES-128",
                "integrity": "SHA1", "dh_group": "DH2", "sa_lifetime": 28800},
        "ipsec": {"encryption": "AES-128", "integrity": "SHA1", "pfs": "DH2", "sa_lifetime": 3600},
    },
    assumed=(
        "one value per menu, where AWS's default is the whole menu (AWS then takes the lowest "
        "value the customer gateway also proposes): a spec field names the one algorithm the "
        "tunnel negotiates, rendered as the cloud side's only proposal and compared by check "
        "with what both daemons report; against a customer proposing one value from the menu "
        "AWS's list negotiates that same value. The defaults are AWS's generic device "
        "configuration's (IKEv1, AES-128, SHA1, DH2, PFS DH2, 28800/3600 s)",
        "DPD timeout default 40 s: the tunnel-options guide and ModifyVpnTunnelOptionsSpecification "
        "say 40 (the guide said 30 before and was changed; both explain 40 as the peer dead 30 s "
        "after the first failed keep-alive), VpnTunnelOptionsSpecification still says 30. The "
        "newer, explained value is taken; both allow 30 and up, so 30 stays valid",
        "StartupAction start (negotiation_type active) only with IKEv2: AWS initiates IKE for "
        "IKEv2 only (tunnel initiation options), so active with IKEv1 is refused",
        "rekey margin, rekey fuzz, replay window: spec fields ipsec.rekey_margin (60 s to half of "
        "ipsec.sa_lifetime), ipsec.rekey_fuzz (0-100 %), ipsec.replay_window (64-2048 packets), "
        "on the cloud side's CHILD_SA (AWS documents them for phase 2). AWS's defaults (270 s, "
        "100 %, 1024; the older guide said a 540 s margin) are not applied: unset, the lab "
        "renders strongSwan's timing (rekey at 90 % of the lifetime) and window (32), as before",
        "replay window: kernel-libipsec keeps a fixed 128-packet window whatever is set, so "
        "ipsec.replay_window takes effect on the kernel dataplane only",
        "route-based: one traffic-selector pair per tunnel (LocalIpv4NetworkCidr/"
        "RemoteIpv4NetworkCidr), as one SPD mapping or destination routes",
        "tunnel name: AWS tunnels have none; the connection's Name tag allows 255 characters",
        "no NQA-style health check; no volume (KB) lifetime",
    ),
)

_ALI_CIPHERS = ("AES-128", "AES-192", "AES-256", "DES", "3DES")  # aes/aes192/aes256/des/3des
_ALI_HASHES = ("MD5", "SHA1", "SHA256", "SHA384", "SHA512")
_ALI_DH = _dh(1, 2, 5, 14)  # group1/2/5/14 (no group24 in the current API)
# Sources: Alibaba Cloud VPC API 2016-04-28 CreateVpnConnection (IkeConfig, IpsecConfig, the
# dual-tunnel TunnelOptionsSpecification, HealthCheckConfig), CreateVpnAttachment and
# DescribeVpnConnections (VcoHealthCheck), as Alibaba's SDKs document them.
ALIBABA = Profile(
    name="alibaba",
    cloud="Alibaba Cloud",
    title="Alibaba Cloud VPN Gateway IPsec connection",
    ike_version=("v1", "v2"),
    exchange_mode=("main", "aggressive"),
    ike_encryption=_ALI_CIPHERS,
    ike_integrity=_ALI_HASHES,
    dh_group=_ALI_DH,
    ipsec_encryption=_ALI_CIPHERS,
    ipsec_integrity=_ALI_HASHES,
    pfs=("disable", *_ALI_DH),
    negotiation_types={"active": "EffectImmediately=true", "traffic-triggered": "EffectImmediately=false"},
    dpd_actions={"disconnect": "disconnect"},
    communication_modes=("spd-policy", "destination-route"),
    dpd_timeout=None,  # DPD is on or off
    ike_lifetime=(0, 86400),  # IkeLifetime; the lab's floor applies (LIFETIME_FLOOR)
    ipsec_lifetime=(0, 86400),  # IpsecLifetime
    ipsec_lifetime_kb=None,
    tunnel_name_max=128,  # Name: 2-128 characters, a letter first (CreateVpnConnection)
    tunnel_name_min=2,
    name_starts_with_letter=True,
    max_mappings_per_gateway=cat.MAX_MAPPINGS_PER_GATEWAY,
    max_mappings_per_tunnel=None,
    health_check=True,
    health_interval_ms=(1000, None),  # Interval, whole seconds; no range documented
    health_threshold=(1, None),  # Retry; no range documented
    health_interval_step_ms=1000,
    health_policies=cat.HEALTH_POLICIES,
    api_names={"ike.sa_lifetime": "IkeConfig.IkeLifetime",
               "ipsec.sa_lifetime": "IpsecConfig.IpsecLifetime",
               "health_check.interval_ms": "HealthCheckConfig.Interval, in seconds",
               "health_check.threshold": "HealthCheckConfig.Retry",
               "health_check.policy": "HealthCheckConfig.Policy"},
    defaults={
        "negotiation_type": "traffic-triggered",  # EffectImmediately defaults to false
        "dpd": {"timeout": 30, "action": "disconnect"},
        "health_check": {"interval_ms": 3000, "threshold": 3, "policy": cat.REVOKE_ROUTE},
        "ike": {"version": "v1", "exchange_mode": "main", "encryption": "AES-128",
                "integrity": "SHA1", "dh_group": "DH2", "sa_lifetime": 86400},
        "ipsec": {"encryption": "AES-128", "integrity": "SHA1", "pfs": "DH2",
                  "sa_lifetime": 86400},
    },
    assumed=(
        "start-up: EffectImmediately (true: active, false: traffic-triggered; default false) "
        "from Alibaba's API, not the notes",
        "DPD: on or off only; the lab uses a 30 s timeout and disconnect (clear)",
        "lifetimes: Alibaba's API allows IkeLifetime/IpsecLifetime 0-86400 s; the lab's floor is "
        "60/180 s (the catalogue's minimum, Tencent's API range, which the spec applies to every "
        "profile: below it a tenth of the lifetime is less than a renegotiation takes on the "
        "lab's gateways, and 0 has no strongSwan equivalent), so lower values are refused",
        "DH groups: group1/2/5/14 for IKE and PFS, as the current API documents them for every "
        "IPsec connection (single- and dual-tunnel CreateVpnConnection, CreateVpnAttachment); "
        "group24 appears only in older documents (the alicloud Terraform provider's). Not a "
        "gateway generation: Alibaba names none and the documents differ by date, not by kind "
        "of gateway, and the lab checks tunnels about to be created, with today's API",
        "health check (HealthCheckConfig): interval_ms is Interval in whole seconds (default 3), "
        "threshold is Retry read as consecutive failed probes (default 3), policy is Policy "
        "(revoke_route, the default, withdraws the routes when the check fails; reserve_route "
        "keeps them: lab.health leaves the traffic where it is). Alibaba documents no range "
        "for Interval or Retry: the lab takes at least 1 s and 1 probe. No probe timeout in "
        "Alibaba's API: timeout_ms is the lab's own reply wait (Tencent's range)",
        "defaults (AES-128, SHA1, DH2, PFS DH2) and the mapping limit: Alibaba's console "
        "defaults / Tencent's limit; the name rule (2-128 characters, a letter first) is "
        "Alibaba's API's",
    ),
)

PROFILES: dict[str, Profile] = {p.name: p for p in (TENCENT, AWS, ALIBABA)}
NAMES = tuple(PROFILES)
_GENERATIONS: dict[str, dict[str, Profile]] = {"tencent": {"classic": TENCENT, "newer": TENCENT_NEWER}}


def get(name: str | None, generation: str | None = None) -> Profile:
    """A profile by name (None: the default) and gateway generation (None: the profile's own
    menus, classic for Tencent); LookupError names the known ones, or says the profile has no
    generations."""
    key = DEFAULT if name is None else str(name).strip().lower()
    if key not in PROFILES:
        raise LookupError(f"unknown gateway profile {name!r}; known: {', '.join(NAMES)}")
    if generation is None:
        return PROFILES[key]
    generations = _GENERATIONS.get(key)
    if generations is None:
        raise LookupError(f"the {key} profile has no gateway generations (only Tencent's VPN "
                          f"gateways come as {' or '.join(GENERATIONS)}); leave it out")
    wanted = str(generation).strip().lower()
    if wanted not in generations:
        raise LookupError(f"unknown gateway generation {generation!r}; known: {', '.join(GENERATIONS)}")
    return generations[wanted]


def example_spec(name: str) -> Path:
    """The example spec of a profile (the matrix's base spec for `--profile NAME`)."""
    return EXAMPLES / ("default.yaml" if get(name).name == DEFAULT else f"{get(name).name}.yaml")


def canonical(kind: str, value: Any) -> str | None:
    """The catalogue's label (or lab keyword) for any spelling of `value`; None if unknown."""
    if kind == "pfs" and cat.normalise(str(value)) in {"disable", "disabled", "off", "null", "none"}:
        return "disable"
    if kind in _CATALOGUE_MENUS:
        try:
            return cat.lookup(_CATALOGUE_MENUS[kind], str(value)).console
        except KeyError:
            return None
    wanted = cat.normalise(str(value))
    for key, api in _CATALOGUE_TABLES[kind].items():
        if wanted in (cat.normalise(key), cat.normalise(api)):
            return key
    for profile in PROFILES.values():
        spelled = {"negotiation_type": profile.negotiation_types,
                   "dpd_action": profile.dpd_actions}.get(kind, {})
        for key, name in spelled.items():
            if wanted == cat.normalise(name):
                return key
    return ALIASES.get(kind, {}).get(wanted)


def _check_menus() -> None:
    """Every profile menu names catalogue options (import-time sanity)."""
    for profile in (*PROFILES.values(), TENCENT_NEWER):
        for kind in MENU_FIELDS:
            for value in profile.menu(kind):
                if canonical(kind, value) != value:
                    raise AssertionError(f"profile {profile.name}: {kind} {value!r} not in the catalogue")


_check_menus()
