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
(`TENCENT_NEWER`). `get(name, generation)` picks one; the other clouds have one set of menus.
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
AWS = Profile(
    name="aws",
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
    defaults={
        "negotiation_type": "passive",  # StartupAction add
        "dpd": {"timeout": 30, "action": "disconnect"},  # DPDTimeoutAction clear
        "ike": {"version": "v1", "exchange_mode": "main", "encryption": "AES-128",
                "integrity": "SHA1", "dh_group": "DH2", "sa_lifetime": 28800},
        "ipsec": {"encryption": "AES-128", "integrity": "SHA1", "pfs": "DH2", "sa_lifetime": 3600},
    },
    assumed=(
        "defaults for one choice per menu: AWS's generic configuration (IKEv1, AES-128, SHA1, "
        "DH2, PFS DH2, 28800/3600 s); AWS itself offers the whole menu by default",
        "route-based: one traffic-selector pair per tunnel (LocalIpv4NetworkCidr/"
        "RemoteIpv4NetworkCidr), as one SPD mapping or destination routes",
        "tunnel name: AWS tunnels have none; the connection's Name tag allows 255 characters",
        "no NQA-style health check; no volume (KB) lifetime",
    ),
)

_ALI_CIPHERS = ("AES-128", "AES-192", "AES-256", "DES", "3DES")  # aes/aes192/aes256/des/3des
_ALI_HASHES = ("MD5", "SHA1", "SHA256", "SHA384", "SHA512")
ALIBABA = Profile(
    name="alibaba",
    title="Alibaba Cloud VPN Gateway IPsec connection",
    ike_version=("v1", "v2"),
    exchange_mode=("main", "aggressive"),
    ike_encryption=_ALI_CIPHERS,
    ike_integrity=_ALI_HASHES,
    dh_group=_dh(1, 2, 5, 14, 24),
    ipsec_encryption=_ALI_CIPHERS,
    ipsec_integrity=_ALI_HASHES,
    pfs=("disable", *_dh(1, 2, 5, 14, 24)),
    negotiation_types={"active": "EffectImmediately=true", "traffic-triggered": "EffectImmediately=false"},
    dpd_actions={"disconnect": "disconnect"},
    communication_modes=("spd-policy", "destination-route"),
    dpd_timeout=None,  # DPD is on or off
    ike_lifetime=(60, 86400),
    ipsec_lifetime=(180, 86400),
    ipsec_lifetime_kb=None,
    tunnel_name_max=128,  # Name: 2-128 characters, a letter first (CreateVpnConnection)
    tunnel_name_min=2,
    name_starts_with_letter=True,
    max_mappings_per_gateway=cat.MAX_MAPPINGS_PER_GATEWAY,
    max_mappings_per_tunnel=None,
    health_check=True,
    defaults={
        "negotiation_type": "traffic-triggered",  # EffectImmediately defaults to false
        "dpd": {"timeout": 30, "action": "disconnect"},
        "ike": {"version": "v1", "exchange_mode": "main", "encryption": "AES-128",
                "integrity": "SHA1", "dh_group": "DH2", "sa_lifetime": 86400},
        "ipsec": {"encryption": "AES-128", "integrity": "SHA1", "pfs": "DH2",
                  "sa_lifetime": 86400},
    },
    assumed=(
        "start-up: EffectImmediately (true: active, false: traffic-triggered; default false) "
        "from Alibaba's API, not the notes",
        "DPD: on or off only; the lab uses a 30 s timeout and disconnect (clear)",
        "lifetimes: IkeLifetime/IpsecLifetime up to 86400 s (Alibaba's API), lab floor 60/180 s",
        "defaults (AES-128, SHA1, DH2, PFS DH2), mapping limit and health-check ranges: not in "
        "the notes (Alibaba's console defaults / Tencent's limits); the name rule (2-128 "
        "characters, a letter first) is Alibaba's API's",
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
