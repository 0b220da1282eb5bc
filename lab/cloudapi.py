"""The cloud API's view of a tunnel: CreateVpnConnection / DescribeVpnConnections JSON <-> the spec.

`import_tunnel` reads the JSON body of a CreateVpnConnection request, a DescribeVpnConnections
response (one entry of `VpnConnectionSet`, chosen by name or ID) or a single `VpnConnection`
object, checks every field against the API's ranges and menus (problems name the API field), and
returns the tunnel spec as plain data together with notes: every value that did not come from the
JSON (options, API defaults, lab defaults, real addresses mapped into documentation ranges).

`export_tunnel` writes a spec's tunnel back as a CreateVpnConnection body, with the API's
spellings taken from `lab.catalogue`. import -> export -> import gives the same spec.

The API's names (cloud-params.md): VpnConnectionName, PreShareKey, RouteType, NegotiationType,
SecurityPolicyDatabases (DescribeVpnConnections: SecurityPolicyDatabaseSet), Dpd*, health check
fields, IKEOptionsSpecification, IPSECOptionsSpecification (`IntegrityAlgorithm`, or the deprecated
`IntegrityAlgorith`).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from lab import catalogue as cat
from lab.errors import LabError
from lab.ranges import is_documentation
from lab.spec import LabSpec, SpecInvalid, Tunnel, fqdn_problem, name_problem, parse_spec, shown

IKE = "IKEOptionsSpecification"
IPSEC = "IPSECOptionsSpecification"
SPD = "SecurityPolicyDatabases"
SPD_DESCRIBED = "SecurityPolicyDatabaseSet"  # DescribeVpnConnections' spelling of the same list

PSK_PLACEHOLDER = "<pre-shared key not exported: set it here>"

# Lab defaults for what a VPN connection's JSON does not carry (documentation ranges only).
LAB_VPN_GATEWAY_IP = ipaddress.IPv4Address("203.0.113.1")
LAB_CUSTOMER_GATEWAY_IP = ipaddress.IPv4Address("198.51.100.2")
LAB_OTHER_ADDRESSES = ipaddress.IPv4Network("192.0.2.0/24")  # for further real addresses (IDs)
LAB_VPC_CIDR = ipaddress.IPv4Network("10.0.0.0/16")
LAB_HEALTH_LOCAL_IP = "169.254.128.1"
LAB_HEALTH_REMOTE_IP = "169.254.128.2"

# API values only newer VPN gateways offer (API spelling -> console label, from the catalogue): a
# body using one imports with `vpn_gateway.generation: newer` (lab.profiles.TENCENT_NEWER).
NEWER_IKE_ENCRYPTION = {o.api: o.console for o in cat.NEWER_IKE_ENCRYPTION}
NEWER_DH_GROUPS = {o.api: o.console for o in cat.NEWER_DH_GROUPS}
NEWER_IPSEC_ENCRYPTION = {o.api: o.console for o in cat.NEWER_IPSEC_ENCRYPTION}
NEWER_PFS_GROUPS = {f"DH-{o.api}": o.console for o in cat.NEWER_DH_GROUPS}


def newer_values(ike_encryption: object, dh_group: object, ipsec_encryption: object,
                 pfs: object) -> list[str]:
    """`Field=API value` for each choice (console labels) only a newer VPN gateway offers: what
    makes an import `generation: newer`, and what an export's note names."""
    return [f"{field}={api}" for field, chosen, table in (
        (f"{IKE}.PropoEncryAlgorithm", ike_encryption, NEWER_IKE_ENCRYPTION),
        (f"{IKE}.DhGroupName", dh_group, NEWER_DH_GROUPS),
        (f"{IPSEC}.EncryptAlgorithm", ipsec_encryption, NEWER_IPSEC_ENCRYPTION),
        (f"{IPSEC}.PfsDhGroup", pfs, NEWER_PFS_GROUPS),
    ) for api, console in table.items() if console == chosen]


# Fields of a DescribeVpnConnections entry that say nothing about how the tunnel negotiates.
DESCRIBE_ONLY = {
    "VpnConnectionId", "VpcId", "VpnGatewayId", "CustomerGatewayId", "VpnProto", "EncryptProto",
    "CreatedTime", "State", "NetStatus", "HealthCheckStatus", "TagSet", "Tags", "BgpConfig",
    "Zone", "RouteTableId", "VpnGatewayType", "EnableRouteCheck",
}
KNOWN = {
    "VpnConnectionName", "PreShareKey", SPD, SPD_DESCRIBED, "RouteType", "NegotiationType",
    "DpdEnable", "DpdTimeout", "DpdAction", "EnableHealthCheck", "HealthCheckLocalIp",
    "HealthCheckRemoteIp", "HealthCheckConfig", IKE, IPSEC, "Route",
}
ROUTE_PRIORITIES = ("0", "100")  # CreateVpnConnRoute.Priority: the API's only two values


def _reverse(table: dict[str, str]) -> dict[str, str]:
    return {api: console for console, api in table.items()}


def ipsec_integrity_api(option: cat.Option) -> str:
    """The IPsec menu spells SHA1 `SHA1` where the IKE menu says `SHA` (catalogue keeps `SHA`)."""
    return "SHA1" if option.console == "SHA1" else option.api


def pfs_api(console: str) -> str:
    return "NULL" if console == "disable" else "DH-" + cat.by_console(cat.DH_GROUPS, console).api


IKE_ENCRYPTION = {o.api: o.console for o in cat.ENCRYPTION}
IPSEC_ENCRYPTION = IKE_ENCRYPTION
IKE_INTEGRITY = {o.api: o.console for o in cat.INTEGRITY}
IPSEC_INTEGRITY = {ipsec_integrity_api(o): o.console for o in cat.INTEGRITY}
DH_GROUP = {o.api: o.console for o in cat.DH_GROUPS}
PFS_GROUP = {"NULL": "disable", **{pfs_api(o.console): o.console for o in cat.DH_GROUPS}}
IKE_VERSION = _reverse(cat.IKE_VERSIONS)
EXCHANGE_MODE = _reverse(cat.EXCHANGE_MODES)
NEGOTIATION = _reverse(cat.NEGOTIATION_TYPES)
ROUTE_TYPE = _reverse(cat.COMMUNICATION_MODES)
# DescribeVpnConnections and older SDKs spell a destination-route tunnel STATIC
ROUTE_TYPE_SPELLINGS = {"STATIC": "destination-route"}
# IKE's menu says SHA where older SDKs (and the IPsec menu) say SHA1
IKE_INTEGRITY_SPELLINGS = {"SHA1": "SHA1"}
EVERYTHING = ipaddress.IPv4Network("0.0.0.0/0")
DPD_ACTION = _reverse(cat.DPD_ACTIONS)
IDENTITY = {"ADDRESS": "address", "FQDN": "fqdn"}

# Spec paths (relative to the tunnel) -> API fields, to put spec-level problems in API terms.
SPEC_TO_API = {
    "name": "VpnConnectionName",
    "pre_shared_key": "PreShareKey",
    "negotiation_type": "NegotiationType",
    "communication_mode": "RouteType",
    "spd_rules": SPD,
    "dpd.enabled": "DpdEnable",
    "dpd.timeout": "DpdTimeout",
    "dpd.action": "DpdAction",
    "health_check.enabled": "EnableHealthCheck",
    "health_check.local_ip": "HealthCheckLocalIp",
    "health_check.peer_ip": "HealthCheckRemoteIp",
    "health_check.interval_ms": "HealthCheckConfig.ProbeInterval",
    "health_check.threshold": "HealthCheckConfig.ProbeThreshold",
    "health_check.timeout_ms": "HealthCheckConfig.ProbeTimeout",
    "ike.version": f"{IKE}.IKEVersion",
    "ike.encryption": f"{IKE}.PropoEncryAlgorithm",
    "ike.integrity": f"{IKE}.PropoAuthenAlgorithm",
    "ike.exchange_mode": f"{IKE}.ExchangeMode",
    "ike.local_id": f"{IKE}.LocalIdentity",
    "ike.peer_id": f"{IKE}.RemoteIdentity",
    "ike.dh_group": f"{IKE}.DhGroupName",
    "ike.sa_lifetime": f"{IKE}.IKESaLifetimeSeconds",
    "ipsec.encryption": f"{IPSEC}.EncryptAlgorithm",
    "ipsec.integrity": f"{IPSEC}.IntegrityAlgorith",
    "ipsec.pfs": f"{IPSEC}.PfsDhGroup",
    "ipsec.sa_lifetime": f"{IPSEC}.IPSECSaLifetimeSeconds",
    "ipsec.sa_lifetime_kb": f"{IPSEC}.IPSECSaLifetimeTraffic",
}


def plain(value: Any) -> str:
    """A JSON value for a note or message: as written when it is a short printable string, else
    quoted with control characters escaped (a note becomes a comment line of the spec written)."""
    if isinstance(value, str) and value.isprintable() and len(value) <= 80:
        return value
    return shown(value, 80)


# --------------------------------------------------------------------------------------------
# Which object of the JSON is the tunnel


def select_connection(data: Any, connection: str | None = None) -> tuple[dict[str, Any], str]:
    """The VPN connection object in `data` and where it came from (for messages).

    Accepts a CreateVpnConnection body, a DescribeVpnConnections response (with or without the
    `Response` wrapper) or one `VpnConnection` entry.
    """
    if not isinstance(data, dict):
        raise LabError("API JSON: expected an object (a CreateVpnConnection body or a "
                       "DescribeVpnConnections response)")
    body = data.get("Response", data) if isinstance(data.get("Response"), dict) else data
    if "VpnConnectionSet" in body:
        entries = body["VpnConnectionSet"]
        if not isinstance(entries, list) or not entries:
            raise LabError("VpnConnectionSet: the DescribeVpnConnections response lists no VPN "
                           "connection")
        for i, e in enumerate(entries):
            if not isinstance(e, dict):
                raise LabError(f"VpnConnectionSet[{i}]: must be an object (a VPN connection)")
        labels = [f"{plain(e.get('VpnConnectionName', '?'))} "
                  f"({plain(e.get('VpnConnectionId', 'no id'))})" for e in entries]
        if connection is None:
            if len(entries) == 1:
                return entries[0], "VpnConnectionSet[0]"
            raise LabError("VpnConnectionSet: the response lists several VPN connections; choose "
                           "one with --connection NAME|ID: " + ", ".join(labels))
        hits = [i for i, e in enumerate(entries)
                if connection in (e.get("VpnConnectionName"), e.get("VpnConnectionId"))]
        if len(hits) != 1:
            why = "no" if not hits else "more than one"
            raise LabError(f"--connection: {why} VPN connection named or with ID {connection!r} "
                           "in VpnConnectionSet: " + ", ".join(labels))
        return entries[hits[0]], f"VpnConnectionSet[{hits[0]}]"
    if connection is not None and connection not in (
        body.get("VpnConnectionName"), body.get("VpnConnectionId")
    ):
        raise LabError(f"--connection: the JSON holds one VPN connection, "
                       f"{body.get('VpnConnectionName')!r}, not {connection!r}")
    if "VpnConnectionName" not in body and IKE not in body and "VpnConnectionId" not in body:
        raise LabError("API JSON: neither a CreateVpnConnection body nor a DescribeVpnConnections "
                       "response (no VpnConnectionName, VpnConnectionSet or "
                       "IKEOptionsSpecification)")
    if modification_body(body) is not None:
        raise LabError("API JSON: a VpnConnectionId without VpnGatewayId or VpcId is a "
                       "ModifyVpnConnectionAttribute body: a change to an existing connection, "
                       "not the connection; apply it to the connection's spec with "
                       "`import --onto SPEC`, or import the connection itself (its "
                       "CreateVpnConnection body or DescribeVpnConnections output)")
    kind = "VpnConnection" if "VpnConnectionId" in body else "CreateVpnConnection"
    return body, kind


def modification_body(data: Any) -> dict[str, Any] | None:
    """The body if `data` is a ModifyVpnConnectionAttribute request, else None.

    Such a body names the connection by VpnConnectionId and carries only what changes; a
    connection (created or described) also carries its VpnGatewayId or VpcId. A modification
    may carry CustomerGatewayId (gateways of version 4.0 and later move a tunnel to another).
    """
    if not isinstance(data, dict) or "VpnConnectionSet" in data or "Response" in data:
        return None
    if "VpnConnectionId" in data and not {"VpnGatewayId", "VpcId"} & set(data):
        return data
    return None


# --------------------------------------------------------------------------------------------
# Reading fields


class _Reader:
    """Reads API fields, collecting problems (each naming its API field) and defaulted fields."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.defaulted: list[str] = []

    def menu(self, obj: dict, field: str, table: dict[str, str], default: str | None,
             where: str = "", spellings: dict[str, str] | None = None) -> str | None:
        """`spellings`: other API spellings of a menu value (older SDKs, DescribeVpnConnections
        output) and the console value each means."""
        name = f"{where}.{field}" if where else field
        value = obj.get(field)
        if value is None or value == "":
            if default is not None:
                api = next(a for a, c in table.items() if c == default)
                self.defaulted.append(f"{name}={api}")
            return default
        for api, console in (*table.items(), *(spellings or {}).items()):
            if str(value).strip().upper() == api.upper():
                return console
        self.problems.append(f"{name}: must be one of {', '.join(table)} (got {value!r})")
        return None

    def number(self, obj: dict, field: str, lo: int, hi: int, default: int | None,
               where: str = "", unit: str = "") -> int | None:
        name = f"{where}.{field}" if where else field
        value = obj.get(field)
        if value is None or value == "":
            if default is not None:
                self.defaulted.append(f"{name}={default}")
            return default
        try:
            number = int(str(value).strip()) if not isinstance(value, bool) else None
        except ValueError:
            number = None
        if number is None:
            self.problems.append(f"{name}: must be a whole number {lo}-{hi}{unit} (got {value!r})")
            return None
        if not lo <= number <= hi:
            self.problems.append(f"{name}: must be {lo}-{hi}{unit} (got {value!r})")
            return None
        return number

    def flag(self, obj: dict, field: str, default: bool) -> bool:
        value = obj.get(field)
        if value is None or value == "" or (field == "DpdEnable" and str(value).strip() == "-1"):
            # DescribeVpnConnections reports an unset DpdEnable as -1
            self.defaulted.append(f"{field}={int(default) if field == 'DpdEnable' else default}")
            return default
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true"):
            return True
        if text in ("0", "false"):
            return False
        self.problems.append(f"{field}: must be 0 or 1 / true or false (got {value!r})")
        return default

    def ipv4(self, obj: dict, field: str, where: str = "") -> ipaddress.IPv4Address | None:
        name = f"{where}.{field}" if where else field
        value = obj.get(field)
        if value is None or value == "":
            return None
        try:
            return ipaddress.IPv4Address(str(value).strip())
        except ValueError:
            self.problems.append(f"{name}: must be an IPv4 address (got {value!r})")
            return None

    def cidr(self, value: Any, name: str) -> str | None:
        try:
            return str(ipaddress.IPv4Network(str(value).strip()))
        except ValueError:
            self.problems.append(f"{name}: must be an IPv4 CIDR block such as 10.0.1.0/24 "
                                 f"(got {value!r})")
            return None




class _Addresses:
    """Real public addresses of the JSON mapped to documentation addresses, one to one."""

    def __init__(self, notes: list[str]) -> None:
        self.notes = notes
        self.mapped: dict[ipaddress.IPv4Address, ipaddress.IPv4Address] = {}
        self.used: set[ipaddress.IPv4Address] = set()

    def gateway(self, role: str, option: str | None, option_name: str,
                json_ip: ipaddress.IPv4Address | None, json_field: str,
                default: ipaddress.IPv4Address, json_names: str) -> ipaddress.IPv4Address:
        spec_field = f"{role}.public_ip"
        if option:
            try:
                ip = ipaddress.IPv4Address(option.strip())
            except ValueError:
                raise LabError(f"{option_name}: must be an IPv4 address (got {option!r})") from None
            if is_documentation(ip):
                self.notes.append(f"{spec_field}: {ip} from {option_name}")
                return self._use(ip)
            self.mapped[ip] = default
            self.notes.append(f"{spec_field}: {option_name} {ip} is a real public address; the lab "
                              f"only uses documentation ranges and puts this gateway at {default}")
            return self._use(default)
        if json_ip is not None and is_documentation(json_ip):
            self.notes.append(f"{spec_field}: {json_ip}, taken from {json_field} (the address ID "
                              "is the gateway's public IP); pass " + option_name + " if it is not")
            return self._use(json_ip)
        if json_ip is not None and json_ip.is_global:
            self.mapped[json_ip] = default
            self.notes.append(f"{spec_field}: {json_field} {json_ip} is a real public address; the "
                              f"lab puts this gateway (and that address ID) at {default}, a "
                              "documentation address")
            return self._use(default)
        self.notes.append(f"{spec_field}: {default} is a lab default ({json_names}); pass "
                          f"{option_name} to set it")
        return self._use(default)

    def identity(self, ip: ipaddress.IPv4Address, field: str) -> ipaddress.IPv4Address:
        if ip in self.mapped:
            return self.mapped[ip]
        if is_documentation(ip) or not ip.is_global:
            return ip
        spare = next(a for a in LAB_OTHER_ADDRESSES.hosts()
                     if int(a) - int(LAB_OTHER_ADDRESSES.network_address) >= 10 and a not in self.used)
        self.mapped[ip] = self._use(spare)
        self.notes.append(f"{field}: {ip} is a real public address; the lab uses {spare} for this "
                          "address ID")
        return spare

    def _use(self, ip: ipaddress.IPv4Address) -> ipaddress.IPv4Address:
        self.used.add(ip)
        return ip


def _covering(cidrs: list[ipaddress.IPv4Network]) -> ipaddress.IPv4Network:
    net = cidrs[0]
    while not all(c.subnet_of(net) for c in cidrs):
        net = net.supernet()
    return net


# --------------------------------------------------------------------------------------------
# Import


def import_tunnel(
    data: Any,
    *,
    connection: str | None = None,
    vpn_gateway_ip: str | None = None,
    vpc_cidr: str | None = None,
    customer_gateway_ip: str | None = None,
    idc_cidrs: list[str] | None = None,
    psk: str | None = None,
    source: str = "API JSON",
    need_keys: bool = True,
) -> tuple[dict[str, Any], list[str]]:
    """The spec (plain data, validated by parse_spec) of one VPN connection, and notes.

    `psk` (e.g. `env:NAME`) replaces the JSON's PreShareKey; without either the import fails.
    `need_keys=False` accepts an `env:` key whose variable is unset (as `parse_spec`).
    Raises SpecInvalid (a LabError) naming API fields for values outside the API's menus/ranges.
    """
    entry, where = select_connection(data, connection)
    source = f"{source} ({where})"
    notes: list[str] = []
    r = _Reader()

    unknown = sorted(plain(k) for k in entry if k not in KNOWN | DESCRIBE_ONLY)
    if unknown:
        notes.append("ignored unknown fields: " + ", ".join(unknown))
    ids = {k: plain(entry[k]) for k in ("VpnConnectionId", "VpnGatewayId", "CustomerGatewayId",
                                         "VpcId") if entry.get(k)}

    name = entry.get("VpnConnectionName")
    if not isinstance(name, str) or not name.strip():
        r.problems.append("VpnConnectionName: required (a name of at most "
                          f"{cat.TUNNEL_NAME_MAX} characters)")
        name = "unnamed"
    elif len(name) > cat.TUNNEL_NAME_MAX:
        r.problems.append(f"VpnConnectionName: at most {cat.TUNNEL_NAME_MAX} characters "
                          f"(got {len(name)})")
    elif problem := name_problem(name):
        r.problems.append(f"VpnConnectionName: {problem}")

    key = entry.get("PreShareKey")
    if key == PSK_PLACEHOLDER:
        key = None
    if isinstance(key, str) and key.startswith("env:") and psk is None:
        r.problems.append("PreShareKey: starts with 'env:', which a spec reads as an environment "
                          "variable's name, not as the key; pass --psk-env NAME")
    if psk is not None:
        where_from = f"environment variable {psk[4:]}" if psk.startswith("env:") else "an option"
        notes.append(f"pre_shared_key: from {where_from}" + (" (replaces the JSON's PreShareKey)"
                                                             if key else ""))
        key = psk
    elif not key:
        r.problems.append("PreShareKey: not in the JSON (DescribeVpnConnections output may omit "
                          "it, and `export` writes a placeholder); pass --psk-env NAME")

    # Communication mode and SPD rules.
    spd_field = SPD if SPD in entry else SPD_DESCRIBED
    raw_rules = entry.get(spd_field) or []
    rules: list[dict[str, list[str]]] = []
    if not isinstance(raw_rules, list):
        r.problems.append(f"{spd_field}: must be a list of {{LocalCidrBlock, RemoteCidrBlock}}")
        raw_rules = []
    for i, rule in enumerate(raw_rules):
        at = f"{spd_field}[{i}]"
        if not isinstance(rule, dict):
            r.problems.append(f"{at}: must be an object with LocalCidrBlock and RemoteCidrBlock")
            continue
        local = rule.get("LocalCidrBlock")
        locals_ = local if isinstance(local, list) else [local] if local else []
        remote = rule.get("RemoteCidrBlock")
        remotes = remote if isinstance(remote, list) else [remote] if remote else []
        if not locals_:
            r.problems.append(f"{at}.LocalCidrBlock: required (the VPC side's CIDR block)")
        if not remotes:
            r.problems.append(f"{at}.RemoteCidrBlock: at least one CIDR block (the IDC side)")
        lo = [r.cidr(c, f"{at}.LocalCidrBlock") for c in locals_]
        pe = [r.cidr(c, f"{at}.RemoteCidrBlock[{j}]") for j, c in enumerate(remotes)]
        if lo and pe and None not in lo and None not in pe:
            rules.append({"local": lo, "peer": pe})  # type: ignore[dict-item]
    route_type = entry.get("RouteType")
    if route_type in (None, ""):
        mode = "spd-policy" if raw_rules else "destination-route"
        notes.append(f"RouteType: absent; {cat.COMMUNICATION_MODES[mode]} assumed because the JSON "
                     f"{'has' if raw_rules else 'has no'} SPD rules")
    elif str(route_type).strip().upper() == "BGP":
        r.problems.append("RouteType: Bgp (routes learnt over BGP) needs BGP support, which the lab "
                          "does not have yet; import it as StaticRoute with --idc-cidr for the "
                          "ranges BGP would announce")
        mode = "destination-route"
    else:
        mode = r.menu(entry, "RouteType", ROUTE_TYPE, None,
                      spellings=ROUTE_TYPE_SPELLINGS) or "spd-policy"
    if mode == "destination-route" and rules and all(
            ipaddress.IPv4Network(c) == EVERYTHING for rule in rules
            for c in (*rule["local"], *rule["peer"])):
        notes.append(f"{spd_field}: 0.0.0.0/0 -> [0.0.0.0/0] is how the API shows a StaticRoute "
                     "tunnel (its traffic is chosen by the route table): imported as a "
                     "destination-route tunnel, routes from --idc-cidr")
        rules = []

    route = _route(entry, r, mode, notes)
    negotiation = r.menu(entry, "NegotiationType", NEGOTIATION, "active")
    dpd = {
        # the API's default is 0 (DPD off); a hand-written spec follows the console's (on)
        "enabled": r.flag(entry, "DpdEnable", False),
        "timeout": r.number(entry, "DpdTimeout", *cat.DPD_TIMEOUT_RANGE, 30, unit=" seconds"),
        "action": r.menu(entry, "DpdAction", DPD_ACTION, "disconnect"),
    }

    health = _health(entry, r, notes)
    ike_obj = entry.get(IKE) or {}
    ipsec_obj = entry.get(IPSEC) or {}
    for obj, label in ((ike_obj, IKE), (ipsec_obj, IPSEC)):
        if not isinstance(obj, dict):
            r.problems.append(f"{label}: must be an object")
    if not isinstance(ike_obj, dict):
        ike_obj = {}
    if not isinstance(ipsec_obj, dict):
        ipsec_obj = {}
    if not entry.get(IKE):
        notes.append(f"{IKE}: absent; every IKE option takes the API default")
    if not entry.get(IPSEC):
        notes.append(f"{IPSEC}: absent; every IPsec option takes the API default")

    ike: dict[str, Any] = {
        "version": r.menu(ike_obj, "IKEVersion", IKE_VERSION, "v1", IKE),
        "encryption": r.menu(ike_obj, "PropoEncryAlgorithm", IKE_ENCRYPTION | NEWER_IKE_ENCRYPTION,
                             cat.DEFAULT_IKE_ENCRYPTION, IKE),
        "integrity": r.menu(ike_obj, "PropoAuthenAlgorithm", IKE_INTEGRITY,
                            cat.DEFAULT_IKE_INTEGRITY, IKE, spellings=IKE_INTEGRITY_SPELLINGS),
        "exchange_mode": r.menu(ike_obj, "ExchangeMode", EXCHANGE_MODE, "main", IKE),
        "dh_group": r.menu(ike_obj, "DhGroupName", DH_GROUP | NEWER_DH_GROUPS, cat.DEFAULT_DH_GROUP,
                           IKE),
        "sa_lifetime": r.number(ike_obj, "IKESaLifetimeSeconds", *cat.IKE_LIFETIME_RANGE,
                                cat.DEFAULT_IKE_LIFETIME, IKE, " seconds"),
    }
    if ike["version"] == "v2" and ike["exchange_mode"] == "aggressive":
        notes.append(f"{IKE}.ExchangeMode: AGGRESSIVE has no meaning with IKEV2 (IKEv2 has no "
                     "aggressive mode); imported as MAIN")
        ike["exchange_mode"] = "main"
    # IntegrityAlgorithm is the current field; IntegrityAlgorith (sic) the deprecated one
    integrity_field = "IntegrityAlgorithm" if ipsec_obj.get("IntegrityAlgorithm") not in (None, "") \
        else "IntegrityAlgorith"
    ipsec = {
        "encryption": r.menu(ipsec_obj, "EncryptAlgorithm", IPSEC_ENCRYPTION | NEWER_IPSEC_ENCRYPTION,
                             cat.DEFAULT_IPSEC_ENCRYPTION, IPSEC),
        "integrity": r.menu(ipsec_obj, integrity_field, IPSEC_INTEGRITY,
                            cat.DEFAULT_IPSEC_INTEGRITY, IPSEC),
        "pfs": r.menu(ipsec_obj, "PfsDhGroup", PFS_GROUP | NEWER_PFS_GROUPS, "disable", IPSEC),
        "sa_lifetime": r.number(ipsec_obj, "IPSECSaLifetimeSeconds", *cat.IPSEC_LIFETIME_RANGE,
                                cat.DEFAULT_IPSEC_LIFETIME, IPSEC, " seconds"),
        "sa_lifetime_kb": r.number(ipsec_obj, "IPSECSaLifetimeTraffic",
                                   *cat.IPSEC_LIFETIME_KB_RANGE, cat.DEFAULT_IPSEC_LIFETIME_KB,
                                   IPSEC, " KB"),
    }
    if {"IntegrityAlgorithm", "IntegrityAlgorith"} <= set(ipsec_obj) and \
            str(ipsec_obj["IntegrityAlgorithm"]).upper() != str(ipsec_obj["IntegrityAlgorith"]).upper():
        r.problems.append(f"{IPSEC}.IntegrityAlgorithm: {plain(ipsec_obj['IntegrityAlgorithm'])} "
                          f"differs from the deprecated IntegrityAlgorith "
                          f"{plain(ipsec_obj['IntegrityAlgorith'])}; keep one of them")

    # Identities and addresses.
    local_kind = r.menu(ike_obj, "LocalIdentity", IDENTITY, "address", IKE)
    peer_kind = r.menu(ike_obj, "RemoteIdentity", IDENTITY, "address", IKE)
    local_ip = r.ipv4(ike_obj, "LocalAddress", IKE) if local_kind == "address" else None
    peer_ip = r.ipv4(ike_obj, "RemoteAddress", IKE) if peer_kind == "address" else None
    addresses = _Addresses(notes)
    gw_names = (f"the JSON names VpnGatewayId {ids['VpnGatewayId']} only"
                if "VpnGatewayId" in ids else "the JSON carries no gateway address")
    cgw_names = (f"the JSON names CustomerGatewayId {ids['CustomerGatewayId']} only"
                 if "CustomerGatewayId" in ids else "the JSON carries no customer gateway address")
    gw_ip = addresses.gateway("vpn_gateway", vpn_gateway_ip, "--vpn-gateway-ip", local_ip,
                              f"{IKE}.LocalAddress", LAB_VPN_GATEWAY_IP, gw_names)
    cgw_ip = addresses.gateway("customer_gateway", customer_gateway_ip, "--customer-gateway-ip",
                               peer_ip, f"{IKE}.RemoteAddress", LAB_CUSTOMER_GATEWAY_IP, cgw_names)
    ike["local_id"] = _identity(ike_obj, r, addresses, "Local", local_kind, local_ip, gw_ip)
    ike["peer_id"] = _identity(ike_obj, r, addresses, "Remote", peer_kind, peer_ip, cgw_ip)

    if r.defaulted:
        notes.append("API defaults for absent fields: " + ", ".join(r.defaulted))
    if r.problems:
        raise SpecInvalid(source, r.problems)

    # What the JSON never carries: the VPC and IDC ranges.
    local_cidrs = [ipaddress.IPv4Network(c) for rule in rules for c in rule["local"]]
    if vpc_cidr:
        vpc = str(_cidr_option(vpc_cidr, "--vpc-cidr"))
        notes.append(f"vpn_gateway.vpc_cidr: {vpc} from --vpc-cidr")
    else:
        net = LAB_VPC_CIDR if all(c.subnet_of(LAB_VPC_CIDR) for c in local_cidrs) \
            else _covering(local_cidrs)
        vpc = str(net)
        notes.append(f"vpn_gateway.vpc_cidr: {vpc} is a lab default (a VPN connection does not "
                     "carry its VPC's CIDR); pass --vpc-cidr to set it")
    idc = [str(_cidr_option(c, "--idc-cidr")) for c in idc_cidrs or []]
    if idc:
        notes.append(f"customer_gateway.idc_cidrs: {', '.join(idc)} from --idc-cidr")
    if route and route not in idc:
        idc.append(route)
        notes.append(f"customer_gateway.idc_cidrs: {route} from Route.DestinationCidrBlock")
    routes = []
    if idc:
        if mode == "destination-route":
            routes = [{"destination": c, "tunnel": name} for c in idc]
            notes.append("vpn_gateway.routes: one route per IDC range to this tunnel (further "
                         "routes are set with CreateVpnGatewayRoutes, not in the VPN connection)")
    elif mode == "spd-policy":
        notes.append("customer_gateway.idc_cidrs: not set; the lab's IDC host uses the SPD rules' "
                     "RemoteCidrBlock ranges (pass --idc-cidr to add more)")
    else:
        notes.append("customer_gateway.idc_cidrs: none; a StaticRoute tunnel's IDC ranges live in "
                     "the gateway's route table, and the JSON has no Route: pass --idc-cidr")

    tunnel: dict[str, Any] = {
        "name": name,
        "customer_gateway": {"public_ip": str(cgw_ip), "idc_cidrs": idc},
        "pre_shared_key": key,
        "negotiation_type": negotiation,
        "communication_mode": mode,
        "spd_rules": rules,
        "dpd": dpd,
        "health_check": health,
        "ike": ike,
        "ipsec": ipsec,
    }
    gateway: dict[str, Any] = {"public_ip": str(gw_ip), "vpc_cidr": vpc, "routes": routes}
    newer = newer_values(ike["encryption"], ike["dh_group"], ipsec["encryption"], ipsec["pfs"])
    if newer:
        gateway["generation"] = "newer"
        notes.append(f"vpn_gateway.generation: newer, because {', '.join(newer)} "
                     f"{'is' if len(newer) == 1 else 'are'} offered only by newer VPN gateways")
    spec = {"vpn_gateway": gateway, "tunnels": [tunnel]}
    try:
        parse_spec(spec, source, need_keys=need_keys)
    except SpecInvalid as exc:
        raise SpecInvalid(source, [api_terms(p) for p in exc.problems]) from None
    return spec, notes


def _cidr_option(value: str, option: str) -> ipaddress.IPv4Network:
    try:
        return ipaddress.IPv4Network(value.strip())
    except ValueError:
        raise LabError(f"{option}: must be an IPv4 CIDR block such as 10.0.0.0/16 "
                       f"(got {value!r})") from None


def _route(entry: dict, r: _Reader, mode: str, notes: list[str]) -> str | None:
    """The destination of CreateVpnConnection's `Route` (a CreateVpnConnRoute object).

    A StaticRoute tunnel's traffic is chosen by the route table; `Route` is the one entry the
    API lets the create call add. The lab's route table has no priorities, so Priority is
    checked against the API's values and noted, not modelled.
    """
    raw = entry.get("Route")
    if raw is None or raw == {} or raw == "":
        return None
    if not isinstance(raw, dict):
        r.problems.append("Route: must be an object {DestinationCidrBlock, Priority, Description} "
                          "(CreateVpnConnRoute)")
        return None
    if mode != "destination-route":
        r.problems.append("Route: only a StaticRoute tunnel takes a route; a Policy tunnel's "
                          f"traffic is chosen by its {SPD}")
    dest = raw.get("DestinationCidrBlock")
    cidr = r.cidr(dest, "Route.DestinationCidrBlock") if dest not in (None, "") else None
    if dest in (None, ""):
        r.problems.append("Route.DestinationCidrBlock: required (the IDC range the route leads "
                          "to this tunnel)")
    priority = raw.get("Priority")
    if priority not in (None, "") and str(priority).strip() not in ROUTE_PRIORITIES:
        r.problems.append(f"Route.Priority: must be 0 or 100 (got {plain(priority)!r})")
    elif cidr:
        notes.append(f"vpn_gateway.routes: {cidr} from Route.DestinationCidrBlock"
                     + (f"; Priority {plain(priority)} is not modelled (the lab's route table has "
                        "no priorities, and one tunnel's route has no rival)"
                        if priority not in (None, "") else ""))
    unknown = sorted(plain(k) for k in raw if k not in ("DestinationCidrBlock", "Priority",
                                                         "Description"))
    if unknown:
        notes.append("Route: ignored unknown fields: " + ", ".join(unknown))
    if raw.get("Description"):
        notes.append("Route.Description: not kept (the spec has no place for a route's remark)")
    return cidr


def _health(entry: dict, r: _Reader, notes: list[str]) -> dict[str, Any]:
    enabled = entry.get("EnableHealthCheck")
    on = r.flag(entry, "EnableHealthCheck", False) if enabled is not None else False
    config = entry.get("HealthCheckConfig") or {}
    if not isinstance(config, dict):
        r.problems.append("HealthCheckConfig: must be an object")
        config = {}
    probe = config.get("ProbeType")
    if probe not in (None, "") and str(probe).upper() != "NQA":
        r.problems.append(f"HealthCheckConfig.ProbeType: must be NQA (got {probe!r})")
    where = "HealthCheckConfig"
    health: dict[str, Any] = {
        "enabled": on,
        "interval_ms": r.number(config, "ProbeInterval", *cat.HEALTH_INTERVAL_MS, 2000, where,
                                " ms") if config else 2000,
        "threshold": r.number(config, "ProbeThreshold", *cat.HEALTH_THRESHOLD, 3, where)
        if config else 3,
        "timeout_ms": r.number(config, "ProbeTimeout", *cat.HEALTH_TIMEOUT_MS, 1000, where, " ms")
        if config else 1000,
    }
    for field, spec_field, default in (("HealthCheckLocalIp", "local_ip", LAB_HEALTH_LOCAL_IP),
                                       ("HealthCheckRemoteIp", "peer_ip", LAB_HEALTH_REMOTE_IP)):
        ip = r.ipv4(entry, field)
        if ip is not None:
            health[spec_field] = str(ip)
        elif on:
            health[spec_field] = default
            notes.append(f"health_check.{spec_field}: {default} is a lab default ({field} absent; "
                         "the cloud picks a random address in 169.254.128.0/17)")
    return health


def _identity(ike: dict, r: _Reader, addresses: _Addresses, side: str, kind: str | None,
              ip: ipaddress.IPv4Address | None, gateway: ipaddress.IPv4Address) -> dict[str, Any]:
    if kind == "fqdn":
        name = ike.get(f"{side}FqdnName")
        if not name:
            r.problems.append(f"{IKE}.{side}FqdnName: required when {side}Identity is FQDN")
        elif problem := fqdn_problem(name):
            r.problems.append(f"{IKE}.{side}FqdnName: {problem}")
        return {"type": "fqdn", "value": name}
    if ip is None:
        return {"type": "address"}
    lab_ip = addresses.identity(ip, f"{IKE}.{side}Address")
    return {"type": "address"} if lab_ip == gateway else {"type": "address", "value": str(lab_ip)}


def api_terms(problem: str) -> str:
    """`tunnels[0].ike.dh_group: ...` -> `IKEOptionsSpecification.DhGroupName (ike.dh_group): ...`."""
    path, sep, rest = problem.partition(": ")
    if not sep:
        return problem
    relative = path.split(".", 1)[1] if path.startswith("tunnels[") and "." in path else path
    for spec_path, api in sorted(SPEC_TO_API.items(), key=lambda kv: -len(kv[0])):
        if relative == spec_path or relative.startswith(spec_path + ".") \
                or relative.startswith(spec_path + "["):
            return f"{api} ({relative}): {rest}"
    return problem


# --------------------------------------------------------------------------------------------
# Export


def pick_tunnel(spec: LabSpec, tunnel_name: str | None) -> tuple[int, Tunnel]:
    names = [t.name for t in spec.tunnels]
    if tunnel_name is None:
        if len(names) == 1:
            return 0, spec.tunnels[0]
        raise LabError("--tunnel: the spec has several tunnels; choose one of " + ", ".join(names))
    if tunnel_name not in names:
        raise LabError(f"--tunnel: no tunnel named {tunnel_name!r}; the spec has " + ", ".join(names))
    i = names.index(tunnel_name)
    return i, spec.tunnels[i]


def export_tunnel(spec: LabSpec | dict, tunnel_name: str | None = None, *,
                  include_psk: bool = False) -> dict[str, Any]:
    """The tunnel as a CreateVpnConnection body (API spellings; PSK only with include_psk)."""
    return export_tunnel_with_notes(spec, tunnel_name, include_psk=include_psk)[0]


def export_tunnel_with_notes(spec: LabSpec | dict, tunnel_name: str | None = None, *,
                             include_psk: bool = False) -> tuple[dict[str, Any], list[str]]:
    if not isinstance(spec, LabSpec):
        spec = parse_spec(spec)
    if spec.vpn_gateway.profile != "tencent":
        raise LabError(f"export writes Tencent's CreateVpnConnection; this spec uses the "
                       f"{spec.vpn_gateway.profile} gateway profile")
    _, t = pick_tunnel(spec, tunnel_name)
    notes = ["VpcId, VpnGatewayId and CustomerGatewayId are not part of the lab spec: add them "
             "before sending this body to CreateVpnConnection"]
    if include_psk:
        key = t.pre_shared_key.get_secret_value()
    else:
        key = PSK_PLACEHOLDER
        notes.append("PreShareKey: a placeholder; pass --include-psk to write the key itself")
    ike, ipsec = t.ike, t.ipsec
    newer = newer_values(ike.encryption, ike.dh_group, ipsec.encryption, ipsec.pfs)
    if newer:
        notes.append(f"{', '.join(newer)}: offered only by newer VPN gateways (the spec's "
                     "vpn_gateway.generation: newer); a classic gateway refuses this body")
    ike_api: dict[str, Any] = {
        "IKEVersion": cat.IKE_VERSIONS[ike.version],
        "PropoEncryAlgorithm": cat.by_console(cat.ALL_ENCRYPTION, ike.encryption).api,
        "PropoAuthenAlgorithm": cat.by_console(cat.INTEGRITY, ike.integrity).api,
        "ExchangeMode": cat.EXCHANGE_MODES[ike.exchange_mode],
        "LocalIdentity": ike.local_id.type.upper(),
        "RemoteIdentity": ike.peer_id.type.upper(),
        "DhGroupName": cat.by_console(cat.ALL_DH_GROUPS, ike.dh_group).api,
        "IKESaLifetimeSeconds": ike.sa_lifetime,
    }
    for side, ident, default in (("Local", ike.local_id, spec.vpn_gateway.public_ip),
                                 ("Remote", ike.peer_id, t.customer_gateway.public_ip)):
        if ident.type == "fqdn":
            ike_api[f"{side}FqdnName"] = ident.value
        else:
            ike_api[f"{side}Address"] = ident.value or str(default)
    notes.append(f"{IKE}.LocalAddress/RemoteAddress hold the lab's documentation addresses where "
                 "the identity is ADDRESS: put the real gateway addresses there")
    body: dict[str, Any] = {
        "VpnConnectionName": t.name,
        "PreShareKey": key,
        "RouteType": cat.COMMUNICATION_MODES[t.communication_mode],
        "NegotiationType": cat.NEGOTIATION_TYPES[t.negotiation_type],
    }
    if t.communication_mode == "spd-policy":
        body[SPD] = [{"LocalCidrBlock": str(lo), "RemoteCidrBlock": [str(p) for p in rule.peer]}
                     for rule in t.spd_rules for lo in rule.local]
    elif routes := spec.routes_of(t):
        # CreateVpnConnection takes one route (a CreateVpnConnRoute object); import reads it back
        body["Route"] = {"DestinationCidrBlock": str(routes[0])}
        if len(routes) > 1:
            notes.append("vpn_gateway.routes: Route holds the first of this tunnel's routes; add "
                         + ", ".join(str(r) for r in routes[1:]) + " with CreateVpnGatewayRoutes")
    body |= {
        "DpdEnable": 1 if t.dpd.enabled else 0,
        "DpdTimeout": str(t.dpd.timeout),
        "DpdAction": cat.DPD_ACTIONS[t.dpd.action],
        "EnableHealthCheck": t.health_check.enabled,
    }
    hc = t.health_check
    if hc.local_ip is not None:
        body["HealthCheckLocalIp"] = str(hc.local_ip)
    if hc.peer_ip is not None:
        body["HealthCheckRemoteIp"] = str(hc.peer_ip)
    body["HealthCheckConfig"] = {"ProbeType": "NQA", "ProbeInterval": hc.interval_ms,
                                 "ProbeThreshold": hc.threshold, "ProbeTimeout": hc.timeout_ms}
    body[IKE] = ike_api
    body[IPSEC] = {
        "EncryptAlgorithm": cat.by_console(cat.ALL_ENCRYPTION, ipsec.encryption).api,
        # the current field and the deprecated one, the same value: readers of either agree
        "IntegrityAlgorithm": ipsec_integrity_api(cat.by_console(cat.INTEGRITY, ipsec.integrity)),
        "IntegrityAlgorith": ipsec_integrity_api(cat.by_console(cat.INTEGRITY, ipsec.integrity)),
        "PfsDhGroup": pfs_api(ipsec.pfs),
        "IPSECSaLifetimeSeconds": ipsec.sa_lifetime,
        "IPSECSaLifetimeTraffic": ipsec.sa_lifetime_kb,
    }
    if t.customer.pre_shared_key or t.customer.ike or t.customer.ipsec:
        notes.append("customer: the tunnel's customer-side overrides are not part of the cloud "
                     "API and are not exported")
    return body, notes
