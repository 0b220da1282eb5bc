"""Static advice: a customer's own strongSwan configuration against the cloud tunnel, before any run.

`advise(spec, customer)` compares, in the user's terms, what will decide whether the two gateways
interoperate: IKE version and exchange mode, proposals (in strongSwan's proposal syntax, with
IKEv1's one-algorithm-per-kind rule, ipsec.conf's `!` and strongSwan 5.9's default proposals),
PFS, identities, addresses, SPD mappings against children, negotiation roles, DPD, lifetimes and
the pre-shared key (compared, never shown). Each Advice names the field on both sides and a fix.

Severities: error = will not interoperate (or breaks at the first rekey); warning = works only
in some conditions or loses something; info = differences that do not break the tunnel.
"""

from __future__ import annotations

import hmac
import ipaddress
import re
from dataclasses import asdict, dataclass
from typing import Literal

from lab import catalogue as cat
from lab.cloudapi import pick_tunnel
from lab.ipsecconf import CustomerChild, CustomerConfig, CustomerConnection, effective_ids
from lab.ranges import is_documentation
from lab.spec import LabSpec, Tunnel
from lab.swanctl import secret_bytes

Severity = Literal["error", "warning", "info"]


@dataclass
class Advice:
    severity: Severity
    topic: str
    cloud_field: str
    customer_field: str
    message: str
    fix: str | None = None

    def to_json(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------------------------
# strongSwan proposals

ALIASES = {
    "aes": "aes128", "sha": "sha1", "sha2_256": "sha256", "sha2_384": "sha384",
    "sha2_512": "sha512", "curve25519": "x25519", "curve448": "x448", "aes128gcm128": "aes128gcm16",
    "aes192gcm128": "aes192gcm16", "aes256gcm128": "aes256gcm16", "aes128gcm": "aes128gcm16",
    "aes256gcm": "aes256gcm16", "prfsha": "prfsha1",
}
DH = re.compile(r"^(modp\d+(s\d+)?|ecp\d+(bp)?|x25519|x448|modpnone)$")
INTEGRITY = re.compile(r"^(md5(_128)?|sha1(_160)?|sha(256|384|512)(_96)?|aesxcbc|aescmac|"
                       r"aes(128|192|256)gmac)$")
ENCRYPTION = re.compile(r"^(aes(128|192|256)?(ctr|gcm\d+|ccm\d+)?|3des|des|null|cast128|"
                        r"blowfish\d*|camellia(128|192|256)?(ctr|ccm\d+)?|chacha20poly1305|"
                        r"serpent\d*|twofish\d*)$")


@dataclass(frozen=True)
class Proposal:
    """One strongSwan proposal: the algorithms of each kind it offers, in order."""

    text: str
    encryption: tuple[str, ...] = ()
    integrity: tuple[str, ...] = ()
    prf: tuple[str, ...] = ()
    dh: tuple[str, ...] = ()
    unknown: tuple[str, ...] = ()

    def ikev1(self) -> Proposal:
        """IKEv1 keeps the first algorithm of each kind (strongSwan strips the rest)."""
        return Proposal(self.text, self.encryption[:1], self.integrity[:1], self.prf[:1],
                        self.dh[:1], self.unknown)

    def several(self) -> bool:
        return any(len(k) > 1 for k in (self.encryption, self.integrity, self.dh))


def parse_proposal(text: str) -> Proposal:
    kinds: dict[str, list[str]] = {"encryption": [], "integrity": [], "prf": [], "dh": [],
                                   "unknown": []}
    for raw in text.strip().rstrip("!").lower().split("-"):
        token = ALIASES.get(raw, raw)
        if token in ("esn", "noesn", ""):
            continue
        if token.startswith("prf"):
            kinds["prf"].append(ALIASES.get(token, token))
        elif DH.match(token):
            kinds["dh"].append(token)
        elif INTEGRITY.match(token):
            kinds["integrity"].append(token)
        elif ENCRYPTION.match(token):
            kinds["encryption"].append(token)
        else:
            kinds["unknown"].append(token)
    return Proposal(text.strip(), **{k: tuple(v) for k, v in kinds.items()})


# strongSwan 5.9's default proposals (proposal_create_default / _aead in libstrongswan, with the
# algorithms Debian's openssl/gcrypt plugins register). Left out on purpose by strongSwan: DES,
# MD5, MODP 768/1024/1536 and the RFC 5114 groups (modp2048s256 = the cloud's DH24).
_DEFAULT_DH = ("ecp256", "ecp384", "ecp521", "ecp256bp", "ecp384bp", "ecp512bp", "x25519", "x448",
               "modp3072", "modp4096", "modp6144", "modp8192", "modp2048")
DEFAULT_IKE = (
    Proposal("default (IKE)",
             ("aes128", "aes192", "aes256", "aes128ctr", "aes192ctr", "aes256ctr", "camellia128",
              "camellia192", "camellia256", "3des"),
             ("sha256", "sha384", "sha512", "sha1", "aesxcbc", "aescmac"),
             ("prfsha256", "prfsha384", "prfsha512", "prfaesxcbc", "prfaescmac", "prfsha1"),
             _DEFAULT_DH),
    Proposal("default (IKE, AEAD)", ("aes128gcm16", "aes192gcm16", "aes256gcm16",
                                     "chacha20poly1305"),
             (), ("prfsha256", "prfsha384", "prfsha512", "prfsha1"), _DEFAULT_DH),
)
DEFAULT_ESP = (
    Proposal("default (ESP)", ("aes128", "aes192", "aes256"),
             ("sha256", "sha384", "sha512", "sha1", "aesxcbc")),
    Proposal("default (ESP, AEAD)", ("aes128gcm16", "aes192gcm16", "aes256gcm16")),
)
DEFAULTS_TEXT = {
    "ike": "strongSwan 5.9's default IKE proposal: AES-128/192/256 (CBC, CTR), Camellia, 3DES with "
           "SHA-256/384/512, SHA-1, AES-XCBC/CMAC and DH ECP-256/384/521, Brainpool, X25519, X448, "
           "MODP-2048/3072/4096/6144/8192 (plus AES-GCM); never DES, MD5, MODP-768/1024/1536 or "
           "MODP-2048s256",
    "esp": "strongSwan 5.9's default ESP proposal: AES-128/192/256 with SHA-256/384/512, SHA-1 or "
           "AES-XCBC, and AES-GCM-16; no DH group (no PFS); never 3DES, DES or MD5",
}


def expand(proposals: list[str], kind: str) -> list[Proposal]:
    out: list[Proposal] = []
    for text in proposals:
        if text.strip().lower() == "default":
            out += DEFAULT_IKE if kind == "ike" else DEFAULT_ESP
        else:
            out.append(parse_proposal(text))
    return out


@dataclass(frozen=True)
class CloudProposal:
    encryption: cat.Option
    integrity: cat.Option
    dh: cat.Option | None
    ike: bool = False  # an IKE proposal: with an AEAD cipher the integrity choice is its PRF

    def text(self) -> str:
        """As the lab's cloud gateway proposes it (lab.plan.proposal): an AEAD cipher (GCM)
        takes no integrity algorithm; in IKE it takes the integrity's PRF."""
        integrity = self.integrity.keyword or self.integrity.console.lower()
        if self.encryption.aead:
            integrity = cat.PRF[self.integrity.console][0] if self.ike else ""
        parts = [self.encryption.keyword or self.encryption.console.lower(), integrity]
        if self.dh:
            parts.append(self.dh.keyword or "")
        return "-".join(p for p in parts if p)

    def console(self) -> str:
        dh = f"/{self.dh.console}" if self.dh else ""
        return f"{self.encryption.console}/{self.integrity.console}{dh}"


def _matches(p: Proposal, cloud: CloudProposal, esp: bool, v2: bool) -> tuple[bool, bool]:
    """(algorithms match, DH matches) for one customer proposal."""
    enc, integ = cloud.encryption.keyword, cloud.integrity.keyword
    if cloud.encryption.aead:
        # GCM: ESP has no integrity algorithm (strongSwan drops one written beside it); IKE
        # needs the PRF, written as prfX or taken from the integrity X when no PRF is written
        algs = enc in p.encryption and (esp or f"prf{integ}" in p.prf or
                                        (not p.prf and integ in p.integrity))
    else:
        algs = enc in p.encryption and integ in p.integrity
        if algs and not esp and v2 and p.prf:
            algs = f"prf{integ}" in p.prf
    if esp:
        dh_ok = (cloud.dh is None and not [d for d in p.dh if d != "modpnone"]) or \
                (cloud.dh is not None and cloud.dh.keyword in p.dh)
    else:
        dh_ok = cloud.dh is not None and cloud.dh.keyword in p.dh
    return algs, dh_ok


# --------------------------------------------------------------------------------------------
# Identities and addresses


def _id_kind(value: str) -> tuple[str, str]:
    v = value.strip()
    if v in ("%any", "%any6", ""):
        return "any", ""
    if v.startswith("@"):
        return "fqdn", v.lstrip("@").lower()
    try:
        return "address", str(ipaddress.ip_address(v))
    except ValueError:
        pass
    if "=" in v:
        return "dn", v
    if "@" in v:
        return "email", v.lower()
    return "fqdn", v.lower()


def _cloud_id(ident, default_ip) -> tuple[str, str]:
    return (ident.type, ident.value.lower() if ident.type == "fqdn" else str(ident.value or default_ip))


def _show_id(kind: str, value: str) -> str:
    return {"fqdn": f"FQDN {value}", "address": f"address {value}", "any": "%any"}.get(kind, value)


def _addr(value: str) -> ipaddress.IPv4Address | None:
    try:
        return ipaddress.IPv4Address(value)
    except ValueError:
        return None


# --------------------------------------------------------------------------------------------
# Advice


class _Collector:
    def __init__(self) -> None:
        self.items: list[Advice] = []

    def add(self, severity: Severity, topic: str, cloud_field: str, customer_field: str,
            message: str, fix: str | None = None) -> None:
        for item in self.items:  # the same finding on several conns: one advice, all places
            if (item.severity, item.topic, item.message, item.fix) == (severity, topic, message, fix):
                if customer_field not in item.customer_field.split("; "):
                    item.customer_field += "; " + customer_field
                return
        self.items.append(Advice(severity, topic, cloud_field, customer_field, message, fix))


def _field(conn: CustomerConnection, key: str, child: CustomerChild | None = None) -> str:
    """The customer's own name of a setting, and where it is written."""
    if conn.kind == "swanctl.conf":
        swan = {"ike": "proposals", "esp": "esp_proposals", "keyexchange": "version",
                "left": "local_addrs", "right": "remote_addrs", "leftid": "local.id",
                "rightid": "remote.id", "leftsubnet": "local_ts", "rightsubnet": "remote_ts",
                "dpddelay": "dpd_delay", "dpdtimeout": "dpd_timeout", "dpdaction": "dpd_action",
                "auto": "start_action", "ikelifetime": "rekey_time", "lifetime": "life_time",
                "lifebytes": "life_bytes", "authby": "local.auth", "type": "mode"}.get(key, key)
        path = f"connections.{conn.name}"
        if child is not None:
            path += f".children.{child.name}"
        return f"{path}.{swan}"
    if conn.dialect == "libreswan":  # libreswan's own keywords for the same settings
        key = {"keyexchange": "ikev2", "lifetime": "salifetime"}.get(key, key)
    where = conn.where.get(key)
    if where is None:
        return f"conn {conn.name}: {key}= (not set)"
    if where.startswith(f"conn {conn.name},"):
        return f"conn {conn.name}: {key}="
    return f"conn {conn.name}: {key}= (from {where})"


def connections_to_cloud(config: CustomerConfig, spec: LabSpec,
                         tunnel: int = 0) -> list[CustomerConnection]:
    """The customer's connections meant for the spec's cloud tunnel `tunnel` (the first)."""
    t = spec.tunnels[tunnel]
    gw_ip = str(spec.vpn_gateway.ip_of(t.vpn_gateway))
    return _relevant(config, gw_ip, _cloud_id(t.ike.local_id, gw_ip))


def _relevant(config: CustomerConfig, gw_ip: str,
              cloud_id: tuple[str, str]) -> list[CustomerConnection]:
    """The connections to the cloud gateway (by address or remote ID), else the %any ones, else
    all of them (each then gets an address error)."""
    hits = []
    for conn in config.connections:
        remote_id = _id_kind(conn.remote_id) if conn.remote_id else None
        if gw_ip in conn.remote_addrs or remote_id == cloud_id:
            hits.append(conn)
    anys = [c for c in config.connections if set(c.remote_addrs) <= {"%any", "0.0.0.0/0"}]
    return hits or anys or list(config.connections)


def advise(spec: LabSpec, customer: CustomerConfig, tunnel_name: str | None = None) -> list[Advice]:
    index, t = pick_tunnel(spec, tunnel_name)
    out = _Collector()
    at = f"tunnels[{index}]"
    gw_ip = str(spec.vpn_gateway.ip_of(t.vpn_gateway))
    cgw_ip = str(t.customer_gateway.public_ip)
    cloud_local = _cloud_id(t.ike.local_id, gw_ip)
    cloud_peer = _cloud_id(t.ike.peer_id, cgw_ip)

    if not customer.connections:
        out.add("error", "connections", at, customer.path,
                "no connection is loaded from this file"
                + (f" (auto=ignore: {', '.join(customer.ignored)})" if customer.ignored else ""),
                "give the connection(s) to the cloud auto=add, auto=start or auto=route")
        return out.items
    conns = _relevant(customer, gw_ip, cloud_local)
    for conn in conns:
        _version(out, at, t, conn)
        _ikev1_policy(out, at, t, customer, conn)
        _auth(out, at, conn)
        _addresses(out, at, gw_ip, cgw_ip, t, conn)
        _identities(out, at, t, conn, cloud_local, cloud_peer, cgw_ip)
        _ike_proposals(out, at, t, conn)
        for child in conn.children:
            _esp_proposals(out, at, t, conn, child)
        _dpd(out, at, t, conn)
        _lifetimes(out, at, t, conn)
        _psk(out, at, t, customer, conn)
    _mappings(out, at, t, conns)
    _roles(out, at, t, conns)
    order = {"error": 0, "warning": 1, "info": 2}
    return sorted(out.items, key=lambda a: order[a.severity])


def _version(out: _Collector, at: str, t: Tunnel, conn: CustomerConnection) -> None:
    cloud = 1 if t.ike.version == "v1" else 2
    field = _field(conn, "keyexchange")
    want = f"keyexchange=ikev{cloud}" if conn.kind == "ipsec.conf" else f"version = {cloud}"
    if conn.dialect == "libreswan":
        want = f"ikev2={'yes' if cloud == 2 else 'no'}"
    if conn.version == 0:
        initiates = _initiates(t, conn)
        if cloud == 1:
            out.add("error" if initiates else "warning", "ike-version", f"{at}.ike.version", field,
                    "your side accepts IKEv1 and IKEv2 but initiates with IKEv2; the cloud tunnel "
                    "speaks IKEv1 only" + (", and your side initiates" if initiates else
                                            ": works only while the cloud initiates"), want)
        return
    if conn.version != cloud:
        out.add("error", "ike-version", f"{at}.ike.version", field,
                f"your side speaks IKEv{conn.version}; the cloud tunnel is set to IKEv{cloud}",
                f"{want}, or change the cloud tunnel's IKE version to IKEV{conn.version}")
        return
    if cloud == 1:
        cloud_aggr = t.ike.exchange_mode == "aggressive"
        if conn.aggressive != cloud_aggr:
            mine, theirs = ("aggressive", "main") if conn.aggressive else ("main", "aggressive")
            out.add("error", "exchange-mode", f"{at}.ike.exchange_mode", _field(conn, "aggressive"),
                    f"your side uses IKEv1 {mine} mode; the cloud tunnel uses {theirs} mode",
                    f"aggressive = {'yes' if cloud_aggr else 'no'}, or change the cloud tunnel's "
                    f"exchange mode to {mine}")
        elif cloud_aggr and t.negotiation_type != "passive" and conn.dialect != "libreswan":
            out.add("warning", "exchange-mode", f"{at}.ike.exchange_mode", "strongswan.conf",
                    "IKEv1 aggressive mode with a PSK: a strongSwan responder refuses it unless "
                    "strongswan.conf allows it (the cloud initiates this tunnel)",
                    "charon.i_dont_care_about_security_and_use_aggressive_mode_psk = yes")
    elif conn.aggressive:
        out.add("info", "exchange-mode", f"{at}.ike.exchange_mode", _field(conn, "aggressive"),
                "aggressive=yes has no effect with IKEv2")


def _ikev1_policy(out: _Collector, at: str, t: Tunnel, config: CustomerConfig,
                  conn: CustomerConnection) -> None:
    """libreswan 4.10 drops every IKEv1 packet unless `config setup` accepts IKEv1 (its
    ikev1-policy= defaults to drop): an IKEv1 conn alone is not enough."""
    if conn.dialect != "libreswan" or conn.version != 1 or t.ike.version != "v1":
        return
    policy = config.setup.get("ikev1-policy", "")
    if policy != "accept":
        out.add("error", "ike-version", f"{at}.ike.version", "config setup: ikev1-policy="
                + (f" ({policy})" if policy else " (not set)"),
                "libreswan drops IKEv1 packets unless config setup has ikev1-policy=accept "
                "(its default is drop), so this IKEv1 conn never negotiates",
                "ikev1-policy=accept in config setup (pluto reads it at start-up only)")


def _auth(out: _Collector, at: str, conn: CustomerConnection) -> None:
    if conn.auth != "psk":
        out.add("error", "authentication", f"{at}.pre_shared_key", _field(conn, "authby"),
                f"your side authenticates with {conn.auth}; the cloud tunnel uses a pre-shared key",
                "authby=secret (ipsec.conf) or local/remote auth = psk (swanctl.conf)")
    for child in conn.children:
        if child.mode != "tunnel":
            out.add("error", "mode", f"{at}.ipsec.encapsulation", _field(conn, "type", child),
                    f"child {child.name} uses {child.mode} mode; the cloud tunnel uses tunnel mode",
                    "type=tunnel (ipsec.conf) or mode = tunnel (swanctl.conf)")


def _addresses(out: _Collector, at: str, gw_ip: str, cgw_ip: str, t: Tunnel,
               conn: CustomerConnection) -> None:
    remotes = conn.remote_addrs
    right = "right" if conn.kind == "ipsec.conf" else "remote_addrs"
    left = "left" if conn.kind == "ipsec.conf" else "local_addrs"
    if gw_ip in remotes:
        pass
    elif set(remotes) <= {"%any", "0.0.0.0/0"}:
        if t.negotiation_type == "passive":
            out.add("error", "addresses", "vpn_gateway.public_ip", _field(conn, "right"),
                    f"{right}=%any cannot initiate, and the cloud tunnel is passive (it never "
                    "initiates): nobody starts the negotiation", f"{right}={gw_ip}")
        else:
            out.add("info", "addresses", "vpn_gateway.public_ip", _field(conn, "right"),
                    f"{right}=%any: your side only responds; the cloud gateway {gw_ip} initiates")
    else:
        out.add("error", "addresses", "vpn_gateway.public_ip", _field(conn, "right"),
                f"{right}={','.join(remotes)} is not the cloud gateway's address {gw_ip}",
                f"{right}={gw_ip}")
    for value in conn.local_addrs:
        ip = _addr(value)
        if ip is None or str(ip) == cgw_ip:
            continue
        if ip.is_private:
            out.add("info", "addresses", f"{at}.customer_gateway.public_ip", _field(conn, "left"),
                    f"{left}={value} is a private address: behind NAT the cloud must see your "
                    f"packets come from {cgw_ip} (the customer gateway IP)")
        else:
            out.add("error", "addresses", f"{at}.customer_gateway.public_ip", _field(conn, "left"),
                    f"{left}={value}: the cloud tunnel only accepts the customer gateway {cgw_ip}",
                    f"{left}={cgw_ip}, or change the tunnel's customer gateway")


def _identities(out: _Collector, at: str, t: Tunnel, conn: CustomerConnection,
                cloud_local: tuple[str, str], cloud_peer: tuple[str, str], cgw_ip: str) -> None:
    ipsec = conn.kind == "ipsec.conf"
    # Your local ID against the ID the cloud expects of you.
    if conn.local_id:
        mine = _id_kind(conn.local_id)
        origin = f"{'leftid' if ipsec else 'local.id'}={conn.local_id}"
    else:
        addr = next((a for a in conn.local_addrs if _addr(a)), None)
        mine = ("address", addr) if addr else ("address", cgw_ip)
        origin = f"the default ID, your address {mine[1]}" if addr else \
            f"the default ID, the address you send from (presumably {cgw_ip})"
    if mine != cloud_peer:
        set_to = cloud_peer[1] if cloud_peer[0] == "address" else "@" + cloud_peer[1]
        key = "leftid" if ipsec else "local.id"
        private = mine[0] == "address" and (ip := _addr(mine[1])) is not None and ip.is_private \
            and not is_documentation(ip)
        behind_nat = (": a private address, so your gateway is presumably behind NAT, where its "
                      "default ID is its own address while the cloud sees and expects the public "
                      "one") if private else ""
        out.add("error", "identity", f"{at}.ike.peer_id", _field(conn, "leftid"),
                f"your side identifies as {_show_id(*mine)} ({origin}); the cloud tunnel expects "
                f"the customer ID {_show_id(*cloud_peer)}{behind_nat}",
                f"{key}={set_to}, or change the tunnel's customer ID")
    # Your remote ID against the cloud's local ID.
    if conn.remote_id:
        theirs = _id_kind(conn.remote_id)
        origin = f"{'rightid' if ipsec else 'remote.id'}={conn.remote_id}"
    elif ipsec:
        addr = next((a for a in conn.remote_addrs if _addr(a)), None)
        theirs = ("address", addr) if addr else ("any", "")
        origin = f"the default, right={addr}" if addr else "the default"
    else:
        theirs, origin = ("any", ""), "the default %any"
    key = "rightid" if ipsec else "remote.id"
    if theirs[0] == "any":
        out.add("info", "identity", f"{at}.ike.local_id", _field(conn, "rightid"),
                f"your side accepts any cloud ID ({origin}); the cloud sends "
                f"{_show_id(*cloud_local)}")
    elif theirs != cloud_local:
        set_to = cloud_local[1] if cloud_local[0] == "address" else "@" + cloud_local[1]
        out.add("error", "identity", f"{at}.ike.local_id", _field(conn, "rightid"),
                f"your side expects the cloud to identify as {_show_id(*theirs)} ({origin}); the "
                f"cloud tunnel's local ID is {_show_id(*cloud_local)}",
                f"{key}={set_to}, or change the tunnel's local ID")


def _cloud_ike(t: Tunnel) -> CloudProposal:
    return CloudProposal(cat.by_console(cat.ENCRYPTION, t.ike.encryption),
                         cat.by_console(cat.INTEGRITY, t.ike.integrity),
                         cat.by_console(cat.DH_GROUPS, t.ike.dh_group), ike=True)


def _cloud_esp(t: Tunnel) -> CloudProposal:
    pfs = None if t.ipsec.pfs == "disable" else cat.by_console(cat.DH_GROUPS, t.ipsec.pfs)
    return CloudProposal(cat.by_console(cat.ENCRYPTION, t.ipsec.encryption),
                         cat.by_console(cat.INTEGRITY, t.ipsec.integrity), pfs)


def _unsupported(cloud: CloudProposal) -> list[cat.Option]:
    return [o for o in (cloud.encryption, cloud.integrity) if not o.supported]


def _offered(proposals: list[str], written: str | None, setting: str) -> str:
    name, verb = (f"{setting}=", "offers") if setting in ("ike", "esp") else (setting, "offer")
    if written is None:
        return f"{name} is not set, so strongSwan's defaults apply"
    if "default" in proposals and "default" not in written.lower():
        return f"your {name} {verb} {written}, plus strongSwan's defaults (no `!`)"
    return f"your {name} {verb} {written.rstrip('!')} only"


def _initiates(t: Tunnel, conn: CustomerConnection) -> bool:
    return t.negotiation_type == "passive" or any(
        c.start_action in ("start", "trap") for c in conn.children)


def _ike_proposals(out: _Collector, at: str, t: Tunnel, conn: CustomerConnection) -> None:
    cloud = _cloud_ike(t)
    field = _field(conn, "ike")
    cloud_field = f"{at}.ike (encryption, integrity, dh_group)"
    if (bad := _unsupported(cloud)):
        out.add("error", "ike-proposal", cloud_field, field,
                f"the cloud tunnel's IKE uses {', '.join(o.console for o in bad)}, which strongSwan "
                "does not implement: no strongSwan configuration can match",
                "change the cloud tunnel's IKE algorithms (e.g. AES-128/SHA256)")
        return
    _proposal_advice(out, "ike", cloud, conn.ike_proposals, conn.ike_written, t.ike.version == "v1",
                     t.ike.version == "v2", cloud_field, field, conn, t)


def _esp_proposals(out: _Collector, at: str, t: Tunnel, conn: CustomerConnection,
                   child: CustomerChild) -> None:
    cloud = _cloud_esp(t)
    field = _field(conn, "esp", child)
    cloud_field = f"{at}.ipsec (encryption, integrity, pfs)"
    if (bad := _unsupported(cloud)):
        out.add("error", "esp-proposal", cloud_field, field,
                f"the cloud tunnel's IPsec uses {', '.join(o.console for o in bad)}, which "
                "strongSwan does not implement: no strongSwan configuration can match",
                "change the cloud tunnel's IPsec algorithms (e.g. AES-128/SHA1)")
        return
    _proposal_advice(out, "esp", cloud, child.esp_proposals, child.esp_written,
                     t.ike.version == "v1", t.ike.version == "v2", cloud_field, field, conn, t)


def _proposal_advice(out: _Collector, kind: str, cloud: CloudProposal, offered: list[str],
                     written: str | None, v1: bool, v2: bool, cloud_field: str, field: str,
                     conn: CustomerConnection, t: Tunnel) -> None:
    esp = kind == "esp"
    if conn.dialect == "libreswan" and not written:
        # libreswan's own default list is not strongSwan's: not compared, said so
        out.add("warning", f"{kind}-proposal", cloud_field, field,
                f"{kind}= is not set, so libreswan proposes and accepts its own default list, "
                "which this advice does not compare with the cloud's",
                f"{kind}={cloud.text()}")
        return
    parsed = expand(offered, kind)
    results = [_matches(p, cloud, esp, v2) for p in parsed]
    setting = ("esp" if esp else "ike") if conn.kind == "ipsec.conf" else \
        ("esp_proposals" if esp else "proposals")
    label = "ESP" if esp else "IKE"
    mine = _offered(offered, written, setting)
    cloud_text = f"{cloud.console()} ({cloud.text()})"
    if any(a and d for a, d in results):
        # A responder compares against the whole proposal; an IKEv1 initiator sends only the
        # first algorithm of each kind.
        if v1 and not any(all(_matches(p.ikev1(), cloud, esp, v2)) for p in parsed):
            p = next(p for p in parsed if all(_matches(p, cloud, esp, v2)))
            passive = t.negotiation_type == "passive"
            out.add("error" if passive else "warning", f"{kind}-proposal", cloud_field, field,
                    f"IKEv1 sends only the first algorithm of each kind: your {p.text!r} goes out "
                    f"as {_first(p)}, not the cloud's {cloud_text}; it matches only while the "
                    "cloud initiates" + (" and this cloud tunnel is passive" if passive else ""),
                    f"write one proposal per combination: add {cloud.text()} to {setting}")
        return
    if any(a for a, _ in results):
        # Algorithms match; the DH group (IKE) or PFS group (ESP) does not.
        groups = sorted({d for p in parsed for d in p.dh})
        if esp:
            if cloud.dh is None:
                msg = (f"PFS: the cloud tunnel has PFS disabled; {mine}, each with a DH group "
                       f"({', '.join(groups)})")
                fix = f"add {cloud.text()} (no DH group) to {setting}, or enable PFS on the cloud " \
                      "tunnel with a group you offer"
            else:
                msg = (f"PFS: the cloud tunnel requires PFS {cloud.dh.console} ({cloud.dh.keyword}); "
                       f"{mine}, with DH group(s) {', '.join(groups) or 'none (no PFS)'}")
                fix = f"add {cloud.text()} to {setting}, or set the cloud tunnel's PFS to match"
            if v2:
                msg += " (IKEv2: the first CHILD_SA comes up without DH, then rekeying fails)"
            out.add("error", "pfs", cloud_field.replace("(encryption, integrity, pfs)", "pfs"),
                    field, msg, fix)
        else:
            dh = cloud.dh
            assert dh is not None  # an IKE proposal always carries a DH group
            never = " (strongSwan's defaults never include it)" \
                if "default" in offered and dh.keyword not in _DEFAULT_DH else ""
            out.add("error", "ike-proposal",
                    cloud_field.replace("(encryption, integrity, dh_group)", "dh_group"), field,
                    f"DH group: {mine}; none offers the cloud tunnel's {dh.console} "
                    f"({dh.keyword}){never}",
                    f"add {cloud.text()} to {setting}, or change the cloud tunnel's DH group")
        return
    default_note = f"; {DEFAULTS_TEXT[kind]}" if "default" in [o.lower() for o in offered] else ""
    out.add("error", f"{kind}-proposal", cloud_field, field,
            f"{mine}; the cloud tunnel's {label} is set to {cloud_text}{default_note}",
            f"add {cloud.text()} to {setting} or change the cloud tunnel")


def _first(p: Proposal) -> str:
    return "-".join(k[0] for k in (p.encryption, p.integrity, p.dh) if k)


def _dpd(out: _Collector, at: str, t: Tunnel, conn: CustomerConnection) -> None:
    ipsec = conn.kind == "ipsec.conf"
    delay_key = "dpddelay" if ipsec else "dpd_delay"
    if t.dpd.enabled and conn.dpd_delay == 0:
        out.add("warning", "dpd", f"{at}.dpd.enabled", _field(conn, "dpdaction" if ipsec else
                                                               "dpddelay"),
                f"DPD is off on your side: it never notices a dead cloud gateway (the cloud's DPD, "
                f"{t.dpd.timeout}s, {t.dpd.action}, only covers its own side)",
                "dpdaction=restart and dpddelay=10s" if ipsec else
                "dpd_delay = 10s and children's dpd_action = restart")
    elif not t.dpd.enabled and conn.dpd_delay:
        out.add("info", "dpd", f"{at}.dpd.enabled", _field(conn, delay_key),
                "DPD is disabled on the cloud tunnel but on on your side: the cloud still answers "
                "DPD requests (IKEv1 only when both sides announce DPD)")
    if not conn.dpd_delay:
        return
    cloud_version = t.ike.version
    if cloud_version == "v1" and conn.dpd_timeout and t.dpd.enabled \
            and conn.dpd_timeout != t.dpd.timeout:
        out.add("info", "dpd", f"{at}.dpd.timeout", _field(conn, "dpdtimeout"),
                f"your DPD timeout is {conn.dpd_timeout}s; the cloud's is {t.dpd.timeout}s: each "
                "side declares the other dead on its own schedule")
    if cloud_version == "v2" and conn.dialect == "libreswan":
        if t.dpd.enabled and conn.dpd_timeout and conn.dpd_timeout != t.dpd.timeout:
            out.add("info", "dpd", f"{at}.dpd.timeout", _field(conn, "retransmit-timeout"),
                    f"your side gives up on an unanswered IKEv2 liveness probe after "
                    f"{conn.dpd_timeout}s (retransmit-timeout; libreswan's IKEv2 has no "
                    f"dpdtimeout); the cloud's DPD timeout is {t.dpd.timeout}s",
                    f"retransmit-timeout={t.dpd.timeout}s")
    elif cloud_version == "v2" and ipsec and "dpdtimeout" in conn.where:
        out.add("info", "dpd", f"{at}.dpd.timeout", _field(conn, "dpdtimeout"),
                "dpdtimeout has no effect with IKEv2 (strongSwan gives up after its retransmit "
                "schedule, charon.retransmit_*)")
    for child in conn.children:
        if child.dpd_action in ("clear", "none") and t.negotiation_type == "passive":
            out.add("warning", "dpd", f"{at}.negotiation_type", _field(conn, "dpdaction", child),
                    f"dpd action {child.dpd_action}: after DPD your side drops the tunnel and the "
                    "cloud tunnel is passive (never initiates): it stays down until you restart it",
                    "dpdaction=restart" if ipsec else "dpd_action = restart")


def _lifetimes(out: _Collector, at: str, t: Tunnel, conn: CustomerConnection) -> None:
    if conn.ike_lifetime and conn.ike_lifetime != t.ike.sa_lifetime:
        out.add("info", "lifetime", f"{at}.ike.sa_lifetime", _field(conn, "ikelifetime"),
                f"your IKE SA lifetime is {conn.ike_lifetime}s; the cloud's is {t.ike.sa_lifetime}s "
                "(each side rekeys on its own; not negotiated)")
    for child in conn.children:
        if child.life_time and child.life_time != t.ipsec.sa_lifetime:
            out.add("info", "lifetime", f"{at}.ipsec.sa_lifetime", _field(conn, "lifetime", child),
                    f"your IPsec SA lifetime is {child.life_time}s; the cloud's is "
                    f"{t.ipsec.sa_lifetime}s (the earlier one rekeys first)")
        cloud_bytes = t.ipsec.sa_lifetime_kb * 1024
        if child.life_bytes != cloud_bytes:
            mine = f"{child.life_bytes} bytes" if child.life_bytes else "no volume limit"
            out.add("info", "lifetime", f"{at}.ipsec.sa_lifetime_kb", _field(conn, "lifebytes", child),
                    f"your IPsec SA volume lifetime is {mine}; the cloud's is "
                    f"{t.ipsec.sa_lifetime_kb} KB ({cloud_bytes} bytes)")


# ESP in tunnel mode, per packet (RFC 4303): outer IPv4 20 + SPI/sequence 8 + IV + padding to
# the cipher's block (at most block - 1) + pad length/next header 2 + ICV; NAT-T adds UDP 8.
_ESP_IV_BLOCK = {"AES-128": (16, 16), "AES-192": (16, 16), "AES-256": (16, 16), "3DES": (8, 8),
                 "DES": (8, 8), "SM4": (16, 16), "AES-128-GCM-16": (8, 4),
                 "AES-192-GCM-16": (8, 4), "AES-256-GCM-16": (8, 4),
                 "NULL": (0, 4)}  # ESP NULL: no IV, padding to ESP's own 4-byte alignment
_ESP_ICV = {"MD5": 12, "SHA1": 12, "SHA256": 16, "SHA384": 24, "SHA512": 32, "SM3": 16}
INTERNET_MTU = 1500
NAT_T_UDP = 8


def esp_overhead(encryption: str, integrity: str) -> int:
    """The most bytes ESP in tunnel mode adds to a packet with these algorithms (no NAT-T)."""
    iv, block = _ESP_IV_BLOCK.get(encryption, (16, 16))
    icv = 16 if encryption.endswith("GCM-16") else _ESP_ICV.get(integrity, 32)
    return 20 + 8 + iv + (block - 1) + 2 + icv


def mss_note(spec: LabSpec, tunnel_name: str | None = None) -> Advice:
    """What IPsec's overhead leaves for TCP, for any customer config (so not a finding of
    `advise`): engineers meet it as "ping works, the application does not" when the hosts never
    learn the smaller path MTU."""
    index, t = pick_tunnel(spec, tunnel_name)
    at = f"tunnels[{index}]"
    overhead = esp_overhead(t.ipsec.encryption, t.ipsec.integrity)
    mss = INTERNET_MTU - overhead - NAT_T_UDP - 40
    return Advice("info", "mtu", f"{at}.ipsec.encryption", "your gateway's TCP MSS clamping",
            f"{t.ipsec.encryption}/{t.ipsec.integrity} ESP adds up to {overhead} bytes per packet "
            f"({overhead + NAT_T_UDP} behind NAT), so on a {INTERNET_MTU}-byte internet path a "
            f"packet of up to {INTERNET_MTU - overhead - NAT_T_UDP} bytes crosses the tunnel "
            "whole; hosts that never receive ICMP 'fragmentation needed' (often filtered) stall "
            "on larger TCP segments",
            f"clamp TCP MSS to {mss} on your gateway for traffic into the tunnel (Linux: iptables "
            f"-t mangle -A FORWARD -p tcp --tcp-flags SYN,RST SYN -j TCPMSS --set-mss {mss}; most "
            "appliances: 'tcp adjust-mss' or 'ip tcp adjust-mss')")


def _psk(out: _Collector, at: str, t: Tunnel, config: CustomerConfig,
         conn: CustomerConnection) -> None:
    if not config.secrets_checked:
        out.add("info", "psk", f"{at}.pre_shared_key", "secrets",
                "the pre-shared key was not compared (no secrets given)",
                "pass --secrets PATH (ipsec.secrets), or keep a secrets section in swanctl.conf")
        return
    local, remote = effective_ids(conn)
    if conn.psk is None:
        out.add("error", "psk", f"{at}.pre_shared_key", "secrets",
                f"no PSK in the secrets matches the IDs {local} / {remote}: authentication fails",
                f"add `{local} {remote} : PSK \"...\"` with the cloud tunnel's key")
        return
    theirs = t.pre_shared_key.get_secret_value().encode()
    if not hmac.compare_digest(secret_bytes(conn.psk.get_secret_value()), theirs):
        out.add("error", "psk", f"{at}.pre_shared_key", conn.psk_from or "secrets",
                "the pre-shared key differs from the cloud tunnel's (neither key is shown): "
                "authentication fails", "copy the cloud tunnel's pre-shared key into this entry")


def _net(value: str) -> ipaddress.IPv4Network | None:
    try:
        return ipaddress.IPv4Network(value.split("[")[0].strip(), strict=False)
    except ValueError:
        return None


def _mappings(out: _Collector, at: str, t: Tunnel, conns: list[CustomerConnection]) -> None:
    if t.communication_mode == "destination-route":
        out.add("info", "mappings", f"{at}.communication_mode", "children",
                "destination-route tunnel: the cloud negotiates 0.0.0.0/0 <-> 0.0.0.0/0 and "
                "routes by its route table; selectors are not compared")
        return
    v1 = t.ike.version == "v1"
    pairs: list[tuple[CustomerConnection, CustomerChild, ipaddress.IPv4Network,
                      ipaddress.IPv4Network, bool]] = []  # (..., negotiated)
    for conn in conns:
        for child in conn.children:
            nets_l = [_net(x) for x in child.local_ts]
            nets_r = [_net(x) for x in child.remote_ts]
            if None in nets_l or None in nets_r:
                out.add("error", "mappings", f"{at}.spd_rules", _field(conn, "leftsubnet", child),
                        f"child {child.name} has no subnets (or the tunnel's own address): the cloud "
                        "negotiates subnets from its SPD rules",
                        "leftsubnet=<IDC CIDR> and rightsubnet=<VPC CIDR>")
                continue
            first = True
            for lo in nets_l:
                for re_ in nets_r:
                    pairs.append((conn, child, lo, re_, first or not v1))  # type: ignore[arg-type]
                    first = False
            if v1 and len(nets_l) * len(nets_r) > 1:
                lost = [f"{lo}<->{re_}" for lo in nets_l for re_ in nets_r][1:]
                ipsec = conn.kind == "ipsec.conf"
                out.add("error", "mappings", f"{at}.spd_rules",
                        _field(conn, "leftsubnet", child),
                        f"IKEv1 negotiates only the first subnet pair of child {child.name} "
                        f"({nets_l[0]}<->{nets_r[0]}); {', '.join(lost)} never come up",
                        "one conn per mapping sharing the settings with also= (conn base with "
                        "auto=ignore; conn m1: also=base, leftsubnet=A, rightsubnet=B, auto=...)"
                        if ipsec else "one child per mapping (one local_ts and one remote_ts each)")
    for local, peer in t.mappings():
        exact = [p for p in pairs if p[4] and p[2] == peer and p[3] == local]
        if exact:
            continue
        wider = [p for p in pairs if p[4] and peer.subnet_of(p[2]) and local.subnet_of(p[3])]
        if wider:
            conn, child = wider[0][0], wider[0][1]
            out.add("warning", "mappings", f"{at}.spd_rules", _field(conn, "leftsubnet", child),
                    f"mapping {local}<->{peer} is inside your child {child.name} "
                    f"({wider[0][2]}<->{wider[0][3]}) but not equal: works only by narrowing",
                    f"mirror the cloud's mapping: local {peer}, remote {local}")
            continue
        if any(p for p in pairs if not p[4] and p[2] == peer and p[3] == local):
            continue  # reported above with the IKEv1 multi-subnet child
        name = conns[0].name if conns else "tunnel"
        ipsec = bool(conns) and conns[0].kind == "ipsec.conf"
        out.add("error", "mappings", f"{at}.spd_rules", "children" if not ipsec else
                "conn sections (leftsubnet/rightsubnet)",
                f"no child of yours carries the cloud's mapping {local}<->{peer} (cloud local "
                f"{local}, customer {peer})",
                f"add conn {name}-x with also=<base>, leftsubnet={peer}, rightsubnet={local}"
                if ipsec else f"add a child with local_ts = {peer}, remote_ts = {local}")
    mapped = t.mappings()
    for conn, child, lo, re_, negotiated in pairs:
        if not negotiated:
            continue
        if not any(lo.overlaps(p) and re_.overlaps(lc) for lc, p in mapped):
            out.add("warning", "mappings", f"{at}.spd_rules", _field(conn, "leftsubnet", child),
                    f"your child {child.name} ({lo}<->{re_}) matches no SPD mapping of the cloud "
                    "tunnel: the cloud refuses it", "remove it or add the mapping to the cloud's "
                    "SPD rules")


def _roles(out: _Collector, at: str, t: Tunnel, conns: list[CustomerConnection]) -> None:
    starts = [c for conn in conns for c in conn.children if c.start_action in ("start", "trap")]
    if t.negotiation_type == "passive" and not starts:
        ipsec = bool(conns) and conns[0].kind == "ipsec.conf"
        out.add("error", "negotiation", f"{at}.negotiation_type", "auto=" if ipsec else "start_action",
                "the cloud tunnel is passive (it only responds) and none of your children "
                "initiates: nobody starts the negotiation",
                "auto=start (ipsec.conf) or start_action = start (swanctl.conf), or set the cloud "
                "tunnel's negotiation type to active")
