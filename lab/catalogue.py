"""The cloud tunnel's menus, as data: the one source of truth for names and value sets.

Each option carries the console's label (what the spec and reports show), the API's label
(CreateVpnConnection), strongSwan's proposal keyword, and how strongSwan names it in `list-sas`.
Validation, rendering, the control-plane check and the matrix all read these tables.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Option:
    """One menu entry. `keyword` is None where strongSwan has no implementation (SM4, SM3)."""

    console: str
    api: str
    keyword: str | None
    sa_name: str | None = None  # as list-sas reports it (encr-alg, integ-alg or dh-group)
    key_size: int | None = None  # encr-keysize reported by list-sas
    aliases: tuple[str, ...] = field(default=())
    aead: bool = False  # combined-mode cipher (GCM): no integrity algorithm; IKE needs a PRF
    esp_only: bool = False  # ESP NULL: integrity without encryption, never for an IKE SA

    @property
    def supported(self) -> bool:
        return self.keyword is not None

    def names(self) -> set[str]:
        """Every spelling a user may write for this option, normalised."""
        spelled = {self.console, self.api, *(self.aliases)}
        if self.keyword:
            spelled.add(self.keyword)
        return {normalise(s) for s in spelled}


def normalise(text: str) -> str:
    return text.strip().lower().replace("_", "-").replace(" ", "")


ENCRYPTION = (
    Option("AES-128", "AES-CBC-128", "aes128", "AES_CBC", 128, ("aes",)),
    Option("AES-192", "AES-CBC-192", "aes192", "AES_CBC", 192),
    Option("AES-256", "AES-CBC-256", "aes256", "AES_CBC", 256),
    Option("3DES", "3DES-CBC", "3des", "3DES_CBC"),
    Option("DES", "DES-CBC", "des", "DES_CBC"),
    Option("SM4", "SM4", None),
)

INTEGRITY = (
    Option("MD5", "MD5", "md5", "HMAC_MD5_96"),
    Option("SHA1", "SHA", "sha1", "HMAC_SHA1_96", aliases=("SHA-1",)),
    Option("SHA256", "SHA-256", "sha256", "HMAC_SHA2_256_128", aliases=("SHA2-256",)),
    Option("SHA384", "SHA-384", "sha384", "HMAC_SHA2_384_192", aliases=("SHA2-384",)),
    Option("SHA512", "SHA-512", "sha512", "HMAC_SHA2_512_256", aliases=("SHA2-512",)),
    Option("SM3", "SM3", None),
)

# IPsec integrity in the API spells SHA1 as "SHA1"; the IKE menu spells it "SHA". Both accepted.
DH_GROUPS = (
    Option("DH1", "GROUP1", "modp768", "MODP_768", aliases=("1", "DH-GROUP1", "group1")),
    Option("DH2", "GROUP2", "modp1024", "MODP_1024", aliases=("2", "DH-GROUP2")),
    Option("DH5", "GROUP5", "modp1536", "MODP_1536", aliases=("5", "DH-GROUP5")),
    Option("DH14", "GROUP14", "modp2048", "MODP_2048", aliases=("14", "DH-GROUP14")),
    Option("DH24", "GROUP24", "modp2048s256", "MODP_2048_256", aliases=("24", "DH-GROUP24")),
)

# Options other gateway profiles (and Tencent's newer gateways) offer, see `lab.profiles`; not in
# the classic Tencent menus above, which stay as the console shows them. `by_console` finds these
# too; `lookup` only in the menu given. The API label is Tencent's (AES128GCM128: GCM with a
# 128-bit ICV, strongSwan's gcm16); AWS's spelling (AES128-GCM-16) is an alias.
GCM_ENCRYPTION = (
    Option("AES-128-GCM-16", "AES128GCM128", "aes128gcm16", "AES_GCM_16", 128,
           ("AES128-GCM-16", "GCMAES128", "aes128gcm"), aead=True),
    Option("AES-192-GCM-16", "AES192GCM128", "aes192gcm16", "AES_GCM_16", 192,
           ("AES192-GCM-16", "GCMAES192", "aes192gcm"), aead=True),
    Option("AES-256-GCM-16", "AES256GCM128", "aes256gcm16", "AES_GCM_16", 256,
           ("AES256-GCM-16", "GCMAES256", "aes256gcm"), aead=True),
)
# ESP without encryption (RFC 2410): only for IPsec SAs, and only with an integrity algorithm,
# which every INTEGRITY entry is (none is AEAD), so `lab.plan.proposal` writes e.g. null-sha256.
ESP_ONLY_ENCRYPTION = (
    Option("NULL", "NULL", "null", "NULL", esp_only=True),
)
MORE_DH_GROUPS = (
    Option("DH15", "GROUP15", "modp3072", "MODP_3072", aliases=("15", "DH-GROUP15")),
    Option("DH16", "GROUP16", "modp4096", "MODP_4096", aliases=("16", "DH-GROUP16")),
    Option("DH17", "GROUP17", "modp6144", "MODP_6144", aliases=("17", "DH-GROUP17")),
    Option("DH18", "GROUP18", "modp8192", "MODP_8192", aliases=("18", "DH-GROUP18")),
    Option("DH19", "GROUP19", "ecp256", "ECP_256", aliases=("19", "DH-GROUP19", "ECP256")),
    Option("DH20", "GROUP20", "ecp384", "ECP_384", aliases=("20", "DH-GROUP20", "ECP384")),
    Option("DH21", "GROUP21", "ecp521", "ECP_521", aliases=("21", "DH-GROUP21", "ECP521")),
    Option("DH22", "GROUP22", "modp1024s160", "MODP_1024_160", aliases=("22", "DH-GROUP22")),
    Option("DH23", "GROUP23", "modp2048s224", "MODP_2048_224", aliases=("23", "DH-GROUP23")),
)
# What Tencent's newer VPN gateways add to the classic menus above (`vpn_gateway.generation:
# newer`, see lab.profiles.TENCENT_NEWER); lab.cloudapi reads their API labels from here.
NEWER_IKE_ENCRYPTION = GCM_ENCRYPTION
NEWER_IPSEC_ENCRYPTION = ESP_ONLY_ENCRYPTION + GCM_ENCRYPTION
NEWER_DH_GROUPS = tuple(o for o in MORE_DH_GROUPS if o.console in ("DH15", "DH16", "DH19", "DH20",
                                                                   "DH21"))
ALL_ENCRYPTION = ENCRYPTION + GCM_ENCRYPTION + ESP_ONLY_ENCRYPTION
ALL_INTEGRITY = INTEGRITY
ALL_DH_GROUPS = (*DH_GROUPS[:4], *MORE_DH_GROUPS, DH_GROUPS[4])  # in group-number order

# The PRF an IKE proposal with an AEAD cipher takes, from the integrity choice: keyword and the
# prf-alg list-sas reports.
PRF = {
    "MD5": ("prfmd5", "PRF_HMAC_MD5"),
    "SHA1": ("prfsha1", "PRF_HMAC_SHA1"),
    "SHA256": ("prfsha256", "PRF_HMAC_SHA2_256"),
    "SHA384": ("prfsha384", "PRF_HMAC_SHA2_384"),
    "SHA512": ("prfsha512", "PRF_HMAC_SHA2_512"),
}

IKE_VERSIONS = {"v1": "IKEV1", "v2": "IKEV2"}
EXCHANGE_MODES = {"main": "MAIN", "aggressive": "AGGRESSIVE"}
NEGOTIATION_TYPES = {"active": "active", "passive": "passive", "traffic-triggered": "flowTrigger"}
COMMUNICATION_MODES = {"spd-policy": "Policy", "destination-route": "StaticRoute"}
DPD_ACTIONS = {"disconnect": "clear", "retry": "restart"}
# AWS's DPDTimeoutAction `none`: nothing after the timeout (strongSwan's dpd_action = none).
ALL_DPD_ACTIONS = {**DPD_ACTIONS, "none": "none"}

# Console limits (seed document and API ranges).
TUNNEL_NAME_MAX = 60
DPD_TIMEOUT_RANGE = (30, 60)
MAX_MAPPINGS_PER_GATEWAY = 200
IKE_LIFETIME_RANGE = (60, 604800)
IPSEC_LIFETIME_RANGE = (180, 604800)
IPSEC_LIFETIME_KB_RANGE = (2560, 4294967295)
HEALTH_INTERVAL_MS = (1000, 5000)
HEALTH_THRESHOLD = (3, 8)
HEALTH_TIMEOUT_MS = (10, 5000)
# What a failed health check does to the tunnel's routes (Alibaba's HealthCheckConfig.Policy):
# revoke_route withdraws them (the default, and what Tencent's health check always does),
# reserve_route keeps them, so traffic stays on the tunnel whose check failed.
REVOKE_ROUTE, RESERVE_ROUTE = "revoke_route", "reserve_route"
HEALTH_POLICIES = (REVOKE_ROUTE, RESERVE_ROUTE)

# API defaults (CreateVpnConnection).
DEFAULT_IKE_ENCRYPTION = "3DES"
DEFAULT_IKE_INTEGRITY = "SHA1"
DEFAULT_DH_GROUP = "DH1"
DEFAULT_IPSEC_ENCRYPTION = "AES-128"
DEFAULT_IPSEC_INTEGRITY = "SHA1"
DEFAULT_IKE_LIFETIME = 86400
DEFAULT_IPSEC_LIFETIME = 14400
DEFAULT_IPSEC_LIFETIME_KB = 4096000000


def lookup(menu: tuple[Option, ...], value: str) -> Option:
    """Find a menu entry by any of its spellings; KeyError lists the console labels."""
    wanted = normalise(str(value))
    for option in menu:
        if wanted in option.names():
            return option
    raise KeyError(", ".join(o.console for o in menu))


def by_console(menu: tuple[Option, ...], console: str) -> Option:
    """The entry labelled `console`: in `menu`, else anywhere in the catalogue (labels are unique)."""
    everywhere = (*menu, *ALL_ENCRYPTION, *ALL_INTEGRITY, *ALL_DH_GROUPS)
    return next(o for o in everywhere if o.console == console)


def unsupported_reason(option: Option) -> str:
    return f"{option.console} is not supported by the strongSwan endpoints"
