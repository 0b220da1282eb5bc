"""The customer's own gateway configuration, normalised: legacy ipsec.conf (+ ipsec.secrets) or
swanctl.conf, read into one `CustomerConfig` that `lab.advise` compares with the cloud tunnel.

ipsec.conf as strongSwan 5.9's starter reads it: `config setup`, `ca` and `conn` sections start at
column 0 and hold indented `key=value` lines until the next non-indented line; `conn %default`
applies to every conn wherever it stands; `also=` includes another conn's settings (recursively) as
though written at that point, so later lines override earlier ones; `key=` (empty) unsets; `auto`
defaults to `ignore`, and an ignored conn is never loaded (`also=` templates). Values keep what the
daemon would use when a key is absent (documented per field below), and every setting remembers
where it was written (`conn base, line 12`) so advice can point at the line to change.

Pre-shared keys are held as SecretStr and compared, never printed.
"""

from __future__ import annotations

import glob
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import SecretStr

from lab import swanctl
from lab.errors import LabError, read_text
from lab.starter import checked as starter_checked
from lab.swanctl_load import judge as judge_swanctl
from lab.swanctl_load import read as read_swanctl

# strongSwan 5.9 defaults when a value is absent.
IPSEC_CONF_DEFAULT_IKE = "aes128-sha256-modp3072"  # + the daemon's default proposal (no `!`)
IPSEC_CONF_DEFAULT_ESP = "aes128-sha256"  # + the daemon's default proposal (no `!`)
IPSEC_CONF_IKE_LIFETIME = 3 * 3600
IPSEC_CONF_LIFETIME = 3600
IPSEC_CONF_DPD_DELAY = 30
IPSEC_CONF_DPD_TIMEOUT = 150
IPSEC_CONF_MARGINTIME = 9 * 60
IPSEC_CONF_REKEYFUZZ = 100  # percent
IPSEC_CONF_KEYINGTRIES = "3"
SWANCTL_REKEY_TIME = 4 * 3600
SWANCTL_CHILD_REKEY_TIME = 3600

START_ACTIONS = {"add": "none", "start": "start", "route": "trap", "ignore": "ignore"}
DPD_ACTIONS = {"none": "none", "clear": "clear", "hold": "trap", "restart": "restart",
               "trap": "trap"}


@dataclass
class Setting:
    """One value and where it was written (file, section, line), for messages."""

    value: str
    where: str


@dataclass
class CustomerChild:
    """One CHILD_SA config: a swanctl child, or the child of an ipsec.conf conn."""

    name: str
    local_ts: list[str]  # CIDRs; ["dynamic"] = the gateway's own address
    remote_ts: list[str]
    esp_proposals: list[str]  # strongSwan proposal strings; "default" = the daemon's default set
    esp_written: str | None  # as configured (None: nothing configured)
    start_action: str  # none | start | trap
    dpd_action: str  # none | clear | trap | restart
    mode: str = "tunnel"
    life_time: int | None = None  # hard lifetime, seconds
    life_bytes: int | None = None
    where: dict[str, str] = field(default_factory=dict)  # setting -> where it is written


@dataclass
class CustomerConnection:
    """One IKE connection (an ipsec.conf conn or a swanctl `connections` entry)."""

    name: str
    kind: Literal["ipsec.conf", "swanctl.conf"]
    version: int  # 0 = either (initiates IKEv2), 1, 2
    aggressive: bool
    local_addrs: list[str]  # [] or ["%any"] = any; "%defaultroute" kept as written
    remote_addrs: list[str]
    local_id: str | None  # None: the daemon's default (the local address)
    remote_id: str | None  # None: the default (ipsec.conf: the right address; swanctl: %any)
    ike_proposals: list[str]
    ike_written: str | None
    auth: str  # psk, pubkey, ...
    dpd_delay: int  # seconds, 0 = DPD off
    dpd_timeout: int | None  # IKEv1 only
    ike_lifetime: int | None  # seconds until the IKE SA is gone
    children: list[CustomerChild]
    psk: SecretStr | None = field(default=None, repr=False)
    psk_from: str | None = None  # which secret matched (never the key)
    where: dict[str, str] = field(default_factory=dict)
    # whose ipsec.conf: strongSwan's, or libreswan's (lab.libreswan.userconf), whose keywords
    # differ (ikev2=, salifetime=, retransmit-timeout=)
    dialect: Literal["strongswan", "libreswan"] = "strongswan"

    def at(self, key: str) -> str:
        """The user's own name for a setting, with where it is written."""
        if self.kind == "swanctl.conf":
            return f"connections.{self.name}.{key}"
        where = self.where.get(key)
        return f"conn {self.name}: {key}=" + (f" ({where})" if where and
                                               where != f"conn {self.name}" else "")


@dataclass
class CustomerConfig:
    path: str
    kind: Literal["ipsec.conf", "swanctl.conf"]
    connections: list[CustomerConnection]
    ignored: list[str] = field(default_factory=list)  # ipsec.conf conns with auto=ignore
    setup: dict[str, str] = field(default_factory=dict)
    secrets_checked: bool = False
    notes: list[str] = field(default_factory=list)
    dialect: Literal["strongswan", "libreswan"] = "strongswan"

    def connection(self, name: str) -> CustomerConnection:
        return next(c for c in self.connections if c.name == name)


# --------------------------------------------------------------------------------------------
# Values


def seconds(value: str, key: str) -> int:
    """strongSwan time values: 3600, 3600s, 60m, 3h, 1d."""
    m = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", value)
    if not m:
        raise LabError(f"{key}={value}: not a time value (such as 3600s, 60m, 3h, 1d)")
    return int(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def byte_count(value: str, key: str) -> int:
    m = re.fullmatch(r"\s*(\d+)\s*([kmg]?)\s*", value.lower())
    if not m:
        raise LabError(f"{key}={value}: not a byte count")
    return int(m.group(1)) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[m.group(2)]


def split_list(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def proposals(value: str | None, default: str) -> tuple[list[str], str | None]:
    """ipsec.conf's `ike=`/`esp=`: without a trailing `!` the daemon appends its default proposal."""
    if value is None or not value.strip():
        return [default, "default"], None
    strict = value.rstrip().endswith("!")
    items = [p.rstrip("!").strip() for p in split_list(value)]
    return (items if strict else [*items, "default"]), value.strip()


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


# --------------------------------------------------------------------------------------------
# ipsec.conf


@dataclass
class Section:
    kind: str  # config | conn | ca
    name: str
    where: str
    settings: list[tuple[str, str, int]] = field(default_factory=list)


HEADER = re.compile(r"^(conn|ca|config)\s+(\S+)\s*$")
ASSIGN = re.compile(r"^([A-Za-z0-9_.-]+)\s*=\s*(.*)$")


def parse_sections(text: str, source: str = "ipsec.conf", base: Path | None = None,
                   _depth: int = 0) -> list[Section]:
    """ipsec.conf's sections in file order; a section ends at the next non-indented line."""
    if _depth > 10:
        raise LabError(f"{source}: include nesting deeper than 10")
    sections: list[Section] = []
    current: Section | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = swanctl.strip_comment(raw).rstrip()
        if not line.strip():
            continue
        if not line[0].isspace():
            current = None
            words = line.split()
            if words[0] == "include" and len(words) == 2:
                sections += _include(words[1], source, number, base, _depth)
                continue
            if words[0] == "version":
                continue
            m = HEADER.match(line)
            if not m:
                raise LabError(f"{source}:{number}: {line.strip()!r} starts at column 0 but is "
                               "not a section header (conn NAME, config setup, ca NAME); "
                               "settings must be indented")
            current = Section(m.group(1), m.group(2), f"{source}:{number}")
            sections.append(current)
            continue
        if current is None:
            raise LabError(f"{source}:{number}: indented setting {line.strip()!r} outside a "
                           "section")
        m = ASSIGN.match(line.strip())
        if not m:
            raise LabError(f"{source}:{number}: cannot read {line.strip()!r} (expected key=value)")
        current.settings.append((m.group(1), _unquote(m.group(2)), number))
    return sections


def _include(pattern: str, source: str, number: int, base: Path | None,
             depth: int) -> list[Section]:
    if base is None:
        raise LabError(f"{source}:{number}: include {pattern}: read the file from a path so that "
                       "includes can be resolved")
    path = Path(pattern)
    matches = sorted(glob.glob(str(path if path.is_absolute() else base / path)))
    out: list[Section] = []
    for match in matches:
        p = Path(match)
        text = read_text(p, "the included file", f"{source}:{number}: include {match}")
        out += parse_sections(text, str(p), p.parent, depth + 1)
    return out


def resolve(sections: list[Section], source: str = "ipsec.conf") -> dict[str, dict[str, Setting]]:
    """Every conn's effective settings (%default, then also= chains in place, then its own)."""
    conns: dict[str, Section] = {}
    defaults: dict[str, Setting] = {}
    for sec in sections:
        if sec.kind != "conn":
            continue
        if sec.name == "%default":
            for key, value, number in sec.settings:
                defaults[key] = Setting(value, f"conn %default, line {number}")
            continue
        if sec.name in conns:
            raise LabError(f"{sec.where}: conn {sec.name} is defined twice")
        conns[sec.name] = sec

    def expand(name: str, chain: list[str]) -> dict[str, Setting]:
        out: dict[str, Setting] = {}
        for key, value, number in conns[name].settings:
            if key == "also":
                for ref in value.split():
                    if ref not in conns:
                        raise LabError(f"{source}: conn {name}, line {number}: also={ref}: no conn "
                                       f"section named {ref}")
                    if ref in chain:
                        raise LabError(f"{source}: conn {name}: also= loop "
                                       f"{' -> '.join([*chain, ref])}")
                    out.update(expand(ref, [*chain, ref]))
            else:
                out[key] = Setting(value, f"conn {name}, line {number}")
        return out

    resolved = {}
    for name in conns:
        settings = {**defaults, **expand(name, [name])}
        resolved[name] = {k: s for k, s in settings.items() if s.value != ""}
    return resolved


def parse_ipsec_conf(text: str, source: str = "ipsec.conf", base: Path | None = None,
                     secrets: list[Secret] | None = None) -> CustomerConfig:
    sections = parse_sections(text, source, base)
    setup = {k: v for s in sections if s.kind == "config" for k, v, _ in s.settings}
    connections, ignored = [], []
    for name, settings in resolve(sections, source).items():
        auto = settings.get("auto", Setting("ignore", "default")).value
        if auto not in START_ACTIONS:
            raise LabError(f"{source}: conn {name}: auto={auto}: must be ignore, add, start or route")
        if auto == "ignore":
            ignored.append(name)
            continue
        connections.append(_ipsec_connection(name, settings, source))
    config = CustomerConfig(source, "ipsec.conf", connections, ignored, setup)
    if secrets is not None:
        attach_secrets(config, secrets)
    return config


def _ipsec_connection(name: str, s: dict[str, Setting], source: str) -> CustomerConnection:
    def get(key: str, default: str | None = None) -> str | None:
        return s[key].value if key in s else default

    where = {k: v.where for k, v in s.items()}
    keyexchange = get("keyexchange", "ike")
    version = {"ike": 0, "ikev1": 1, "ikev2": 2}.get(keyexchange or "")
    if version is None:
        raise LabError(f"{source}: conn {name}: keyexchange={keyexchange}: must be ike, ikev1 or "
                       "ikev2")
    authby = get("authby", "pubkey")
    auth = {"secret": "psk", "psk": "psk"}.get(authby or "", authby or "pubkey")
    if "leftauth" in s:
        auth = get("leftauth") or auth
    left, right = get("left", "%any"), get("right", "%any")
    ike, ike_written = proposals(get("ike"), IPSEC_CONF_DEFAULT_IKE)
    esp, esp_written = proposals(get("esp"), IPSEC_CONF_DEFAULT_ESP)
    dpdaction = get("dpdaction", "none") or "none"
    if dpdaction not in DPD_ACTIONS:
        raise LabError(f"{source}: conn {name}: dpdaction={dpdaction}: must be none, clear, hold or "
                       "restart")
    dpd_on = dpdaction != "none"
    lifetime = get("lifetime") or get("keylife")
    child = CustomerChild(
        name=name,
        local_ts=split_list(get("leftsubnet") or "") or ["dynamic"],
        remote_ts=split_list(get("rightsubnet") or "") or ["dynamic"],
        esp_proposals=esp,
        esp_written=esp_written,
        start_action=START_ACTIONS[get("auto", "ignore") or "ignore"],
        dpd_action=DPD_ACTIONS[dpdaction],
        mode=get("type", "tunnel") or "tunnel",
        life_time=seconds(lifetime, "lifetime") if lifetime else IPSEC_CONF_LIFETIME,
        life_bytes=byte_count(get("lifebytes") or "", "lifebytes") if "lifebytes" in s else None,
        where={k: where[k] for k in ("leftsubnet", "rightsubnet", "esp", "auto", "dpdaction")
               if k in where},
    )
    ikelifetime = get("ikelifetime") or get("ikelife")
    return CustomerConnection(
        name=name,
        kind="ipsec.conf",
        version=version,
        aggressive=(get("aggressive", "no") or "no").lower() in ("yes", "true", "1"),
        local_addrs=split_list(left or "%any"),
        remote_addrs=split_list(right or "%any"),
        local_id=get("leftid"),
        remote_id=get("rightid") or (None if right not in ("%any", "") else "%any"),
        ike_proposals=ike,
        ike_written=ike_written,
        auth=auth,
        dpd_delay=seconds(get("dpddelay") or "", "dpddelay") if dpd_on and "dpddelay" in s
        else (IPSEC_CONF_DPD_DELAY if dpd_on else 0),
        dpd_timeout=seconds(get("dpdtimeout") or "", "dpdtimeout") if "dpdtimeout" in s
        else IPSEC_CONF_DPD_TIMEOUT,
        ike_lifetime=seconds(ikelifetime, "ikelifetime") if ikelifetime else IPSEC_CONF_IKE_LIFETIME,
        children=[child],
        where=where,
    )


# --------------------------------------------------------------------------------------------
# ipsec.secrets


@dataclass
class Secret:
    selectors: list[str]
    kind: str
    secret: SecretStr = field(repr=False)
    where: str = ""

    def value(self) -> bytes:
        return swanctl.secret_bytes(self.secret.get_secret_value())


SECRET_LINE = re.compile(r"^(?P<ids>.*?)(?:^|\s):\s*(?P<kind>[A-Za-z0-9]+)\s+(?P<value>.+)$")


def parse_secrets(text: str, source: str = "ipsec.secrets", base: Path | None = None) -> list[Secret]:
    """ipsec.secrets entries (`ids : PSK secret`; indented lines continue the entry)."""
    entries: list[tuple[str, int]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = swanctl.strip_comment(raw).rstrip()
        if not line.strip():
            continue
        if line[0].isspace() and entries:
            entries[-1] = (entries[-1][0] + " " + line.strip(), entries[-1][1])
        else:
            entries.append((line.strip(), number))
    out: list[Secret] = []
    for line, number in entries:
        words = line.split()
        if words[0] == "include":
            if base is None:
                raise LabError(f"{source}:{number}: include needs the secrets file's path")
            for match in sorted(glob.glob(str(base / words[1]))):
                p = Path(match)
                text = read_text(p, "the included file", f"{source}:{number}: include {match}")
                out += parse_secrets(text, str(p), p.parent)
            continue
        m = SECRET_LINE.match(line)
        if not m:
            raise LabError(f"{source}:{number}: cannot read this entry (expected `IDS : PSK secret`)")
        value = m.group("value").strip()
        out.append(Secret([_unquote(i) for i in m.group("ids").split()], m.group("kind").upper(),
                          SecretStr(_unquote(value)), f"{source}:{number}"))
    return out


def _same_id(a: str, b: str) -> bool:
    return a.lstrip("@").lower() == b.lstrip("@").lower()


def find_psk(secrets: list[Secret], local_id: str, remote_id: str) -> Secret | None:
    """The PSK strongSwan would pick: the entry matching the most of the two IDs.

    An entry without selectors matches any pair (lowest priority); `%any` matches any ID; one
    selector may match either side. A simplification of strongSwan's ranking, stated as such.
    """
    best, best_score = None, 0
    for secret in secrets:
        if secret.kind not in ("PSK", "IKE"):
            continue
        if not secret.selectors:
            score = 1
        else:
            hit_local = any(_same_id(s, local_id) for s in secret.selectors)
            hit_remote = any(_same_id(s, remote_id) for s in secret.selectors)
            wildcard = any(s == "%any" for s in secret.selectors)
            score = 3 * hit_local + 3 * hit_remote + wildcard
            if len(secret.selectors) > 1 and not (hit_local or hit_remote) and not wildcard:
                score = 0
        if score > best_score:
            best, best_score = secret, score
    return best


def effective_ids(conn: CustomerConnection) -> tuple[str, str]:
    local = conn.local_id or (conn.local_addrs[0] if conn.local_addrs else "%any")
    remote = conn.remote_id or (conn.remote_addrs[0] if conn.kind == "ipsec.conf"
                                and conn.remote_addrs else "%any")
    return local, remote


def attach_secrets(config: CustomerConfig, secrets: list[Secret]) -> None:
    config.secrets_checked = True
    for conn in config.connections:
        local, remote = effective_ids(conn)
        hit = find_psk(secrets, local, remote)
        if hit is not None:
            conn.psk, conn.psk_from = hit.secret, hit.where


# --------------------------------------------------------------------------------------------
# swanctl.conf


def from_swanctl(text: str, source: str = "swanctl.conf") -> CustomerConfig:
    """A swanctl.conf the lab wrote itself (its renders) via lab.swanctl.parse; users' files
    are read by strongSwan's swanctl (load_customer_config, lab.swanctl_load)."""
    return swanctl_view(swanctl.parse(text, source), source)


def swanctl_view(tree: dict[str, Any], source: str) -> CustomerConfig:
    """The normalised view of an already parsed swanctl tree (includes resolved)."""
    connections = []
    for name, c in (tree.get("connections") or {}).items():
        connections.append(_swanctl_connection(name, c, source))
    config = CustomerConfig(source, "swanctl.conf", connections)
    shared = [Secret(owners, "IKE", SecretStr(section_secret), f"{source}: secrets.{sid}")
              for sid, owners, section_secret in _swanctl_secrets(tree)]
    if "secrets" in tree:
        attach_secrets(config, shared)
    return config


def _swanctl_secrets(tree: dict[str, Any]) -> list[tuple[str, list[str], str]]:
    out = []
    for name, section in (tree.get("secrets") or {}).items():
        if name.startswith("ike") and isinstance(section, dict) and "secret" in section:
            owners = [v for k, v in section.items() if k.startswith("id")]
            out.append((name, owners, section["secret"]))
    return out


def _round(sections: dict[str, Any], prefix: str) -> dict[str, Any]:
    names = sorted(k for k, v in sections.items() if isinstance(v, dict)
                   and (k == prefix or k.startswith(prefix + "-")))
    return sections[names[0]] if names else {}


def _swanctl_connection(name: str, c: dict[str, Any], source: str) -> CustomerConnection:
    local, remote = _round(c, "local"), _round(c, "remote")
    version = int(c.get("version", 0) or 0)
    rekey = seconds(c["rekey_time"], "rekey_time") if "rekey_time" in c else SWANCTL_REKEY_TIME
    reauth = seconds(c["reauth_time"], "reauth_time") if "reauth_time" in c else 0
    over = seconds(c["over_time"], "over_time") if "over_time" in c else max(rekey, reauth) // 10
    dpd_delay = seconds(c["dpd_delay"], "dpd_delay") if "dpd_delay" in c else 0
    children = []
    for child_name, ch in (c.get("children") or {}).items():
        child_rekey = seconds(ch["rekey_time"], "rekey_time") if "rekey_time" in ch \
            else SWANCTL_CHILD_REKEY_TIME
        esp = ch.get("esp_proposals") or ["default"]
        children.append(CustomerChild(
            name=child_name,
            local_ts=ch.get("local_ts") or ["dynamic"],
            remote_ts=ch.get("remote_ts") or ["dynamic"],
            esp_proposals=list(esp),
            esp_written=", ".join(ch["esp_proposals"]) if "esp_proposals" in ch else None,
            start_action=ch.get("start_action", "none"),
            dpd_action=ch.get("dpd_action", "clear"),
            mode=ch.get("mode", "tunnel"),
            life_time=seconds(ch["life_time"], "life_time") if "life_time" in ch
            else child_rekey + child_rekey // 10,
            life_bytes=byte_count(ch["life_bytes"], "life_bytes") if "life_bytes" in ch else None,
        ))
    return CustomerConnection(
        name=name,
        kind="swanctl.conf",
        version=version,
        aggressive=str(c.get("aggressive", "no")).lower() in ("yes", "true", "1"),
        local_addrs=c.get("local_addrs") or ["%any"],
        remote_addrs=c.get("remote_addrs") or ["%any"],
        local_id=local.get("id"),
        remote_id=remote.get("id"),
        ike_proposals=c.get("proposals") or ["default"],
        ike_written=", ".join(c["proposals"]) if "proposals" in c else None,
        auth=local.get("auth", "pubkey"),
        dpd_delay=dpd_delay,
        dpd_timeout=seconds(c["dpd_timeout"], "dpd_timeout") if "dpd_timeout" in c else None,
        ike_lifetime=rekey + over if rekey else None,
        children=children,
    )


# --------------------------------------------------------------------------------------------
# Loading


def load_customer_config(path: str | Path, secrets_path: str | Path | None = None) -> CustomerConfig:
    """Read a customer's strongSwan ipsec.conf or swanctl.conf (detected from the content); a
    libreswan ipsec.conf is lab.libreswan.userconf's (`advise` tells them apart)."""
    path = Path(path)
    text = read_text(path, "the customer configuration")
    secrets = None
    if secrets_path is not None:
        sp = Path(secrets_path)
        secrets = parse_secrets(read_text(sp, "the secrets"), str(sp), sp.parent)
    if looks_like_swanctl(text):  # read by strongSwan's own swanctl, as on the user's gateway
        tree = read_swanctl(path, "the customer configuration")
        note = judge_swanctl(tree, path, "the customer configuration")
        config = swanctl_view(tree, str(path))
        config.notes += [note] if note else []
        if secrets is not None:
            attach_secrets(config, secrets)
        return config
    # ipsec.conf: starter, as on the user's gateway, judges the file before the lab reads it
    config, notes = starter_checked(path, lambda: parse_ipsec_conf(text, str(path), path.parent,
                                                                   secrets))
    config.notes += notes
    return config


def looks_like_swanctl(text: str) -> bool:
    return bool(re.search(r"^\s*connections\s*\{", text, re.MULTILINE))
