"""A customer's own libreswan ipsec.conf, read by libreswan's own parser, for the static advice.

libreswan's ipsec.conf shares strongSwan's layout (`config setup`, `conn` sections, `also=`,
`%default`, `include`) but not its keywords or their meaning: `ikev2=` instead of
`keyexchange=`, `phase2alg=`/`esp=` with `pfs=`, `salifetime=`, `leftsubnets={a b}`, proposals
without strongSwan's implicit default set, times in seconds by default. So the file is read by
libreswan's `readwriteconf` (the private copy scripts/setup unpacks), which resolves `include`,
`conn %default` and `also=` exactly as pluto's `addconn` does, and prints every conn with its
settings; a file libreswan refuses is refused with libreswan's words. Its warnings become notes.

Its output has every time in milliseconds, and it prints some enumerated settings without their
value (`dpdaction=` on libreswan 4.10): those few are read from the file's own conn and the conns
it includes with `also=` (`_raw_setting`).
"""

from __future__ import annotations

import glob
import re
import subprocess
from pathlib import Path

from lab.errors import LabError, read_text
from lab.ipsecconf import (
    CustomerChild,
    CustomerConfig,
    CustomerConnection,
    attach_secrets,
    parse_secrets,
    split_list,
)
from lab.libreswan.install import tool
from lab.timing import patience

# keywords strongSwan's ipsec.conf does not have (or ignores) and libreswan's does
_LIBRESWAN_KEYS = re.compile(
    r"^[ \t]+(ikev2|phase2alg|pfs|salifetime|ipsec-lifetime|leftsubnets|rightsubnets|"
    r"retransmit-timeout|encapsulation|nat-keepalive|narrowing|ikev1-policy|protostack|"
    r"virtual[-_]private|plutodebug|logfile|nhelpers)[ \t]*=", re.MULTILINE)
_STRONGSWAN_KEYS = re.compile(r"^[ \t]+(keyexchange|charondebug|leftauth|rightauth)[ \t]*=",
                              re.MULTILINE)
_DH = {"dh2": "modp1024", "dh5": "modp1536", "dh14": "modp2048", "dh15": "modp3072",
       "dh16": "modp4096", "dh18": "modp8192", "dh19": "ecp256", "dh20": "ecp384",
       "dh21": "ecp521", "dh31": "x25519", "dh22": "modp1024s160", "dh23": "modp2048s224",
       "dh24": "modp2048s256", "curve25519": "x25519"}
_GCM = re.compile(r"^aes_gcm(?:_[abc])?(128|192|256)?$")
DH_TOKEN = re.compile(r"^(modp\d+(s\d+)?|ecp\d+|x25519|dh\d+|curve25519)$")


def looks_like_libreswan(text: str) -> bool:
    """Whether an ipsec.conf is libreswan's: a keyword only libreswan has, none only strongSwan's."""
    return bool(_LIBRESWAN_KEYS.search(text)) and not _STRONGSWAN_KEYS.search(text)


def read_conns(path: Path) -> tuple[dict[str, dict[str, str]], list[str]]:
    """Every conn (and `config setup`) as libreswan reads the file: {name: {key: value}} (the
    last non-empty value of a key), and libreswan's warnings."""
    try:
        done = subprocess.run([tool("readwriteconf"), "--config", str(path)], capture_output=True,
                              text=True, timeout=patience(30.0), check=False)
    except subprocess.TimeoutExpired:
        raise LabError(f"{path}: libreswan's parser did not finish") from None
    said = [line.strip() for line in done.stderr.splitlines() if line.strip()]
    if done.returncode != 0:
        raise LabError(f"{path}: libreswan's parser refused it: "
                       f"{said[-1] if said else 'exit ' + str(done.returncode)}")
    conns: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for raw in done.stdout.splitlines():
        if raw.startswith("conn ") or raw.startswith("config setup"):
            current = conns.setdefault(raw.split(None, 1)[1] if raw.startswith("conn ") else
                                       "%setup", {})
            continue
        line = raw.strip()
        if current is None or not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        if value.strip() or key.strip() not in current:
            current[key.strip()] = value.strip().strip('"')
    return conns, [f"libreswan: {line}" for line in dict.fromkeys(said)]


_SECTION = re.compile(r"^(conn|config)\s+(\S+)")


def _raw_setting(text: str, conn: str, key: str, seen: frozenset[str] = frozenset()) -> str | None:
    """`key=` as written in conn `conn` or, failing that, the conns it names in `also=` (then
    `conn %default`): for the settings readwriteconf prints without their value."""
    sections: dict[str, list[tuple[str, str]]] = {}
    name = None
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if m := _SECTION.match(line):
            name = m.group(2) if m.group(1) == "conn" else None
            sections.setdefault(name or "", [])
        elif name and line[:1] in (" ", "\t") and "=" in line:
            k, _, v = line.strip().partition("=")
            sections[name].append((k.strip(), v.strip().strip('"')))
    found = None
    for k, v in sections.get(conn, []):
        if k == key:
            found = v
        elif k == "also" and found is None and v not in seen:
            found = _raw_setting(text, v, key, seen | {conn})
    if found is None and conn != "%default":
        found = dict(sections.get("%default", [])).get(key)
    return found


def _raw_setup(text: str, key: str) -> str | None:
    """`key=` as written in `config setup` (the last one), for the enumerated settings
    readwriteconf prints without their value (ikev1-policy=)."""
    found, inside = None, False
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if m := _SECTION.match(line):
            inside = m.group(1) == "config"
        elif inside and line[:1] in (" ", "\t") and "=" in line:
            k, _, v = line.strip().partition("=")
            if k.strip() == key:
                found = v.strip().strip('"')
    return found


def _with_includes(path: Path, depth: int = 0) -> str:
    """The file's text followed by that of the files it includes (as `_raw_setting` reads it)."""
    text = read_text(path, "the customer configuration")
    parts = [text]
    for m in re.finditer(r"^include\s+(\S+)", text, re.MULTILINE):
        pattern = m.group(1) if m.group(1).startswith("/") else str(path.parent / m.group(1))
        for match in sorted(glob.glob(pattern)) if depth < 10 else []:
            parts.append(_with_includes(Path(match), depth + 1))
    return "\n".join(parts)


def proposal(text: str) -> str:
    """One libreswan proposal (`aes128-sha2_256;modp2048`, `aes_gcm256-null;dh19`) in strongSwan's
    syntax, which lab.advise compares (`aes128-sha256-modp2048`, `aes256gcm16-ecp256`)."""
    out = []
    for token in re.split(r"[-;+]", text.strip().lower()):
        if not token or token == "null":
            continue
        if m := _GCM.match(token):
            out.append(f"aes{m.group(1) or '128'}gcm16")
        elif token.startswith("sha2_"):
            out.append("sha" + token[5:])
        elif token == "sha":
            out.append("sha1")
        else:
            out.append(_DH.get(token, token))
    return "-".join(out)


def _seconds(value: str | None) -> int | None:
    """readwriteconf's times are milliseconds."""
    if not value or not value.isdigit():
        return None
    return int(value) // 1000


def _subnets(conn: dict[str, str], side: str) -> list[str]:
    many = conn.get(f"{side}subnets", "").strip("{} ")
    if many:
        return [s for s in re.split(r"[\s,]+", many) if s]
    return split_list(conn.get(f"{side}subnet", "")) or ["dynamic"]


def _connection(name: str, c: dict[str, str], text: str) -> CustomerConnection:
    version = 1 if c.get("ikev2", "yes").lower() in ("no", "never") else 2
    ike_written = c.get("ike") or None
    ike = [proposal(p) for p in split_list(ike_written or "")]
    ike_dh = next((t for p in ike for t in p.split("-") if DH_TOKEN.match(t)), None)
    esp_written = c.get("esp") or c.get("phase2alg") or None
    pfs = c.get("pfs", "yes").lower() in ("yes", "true", "1")
    esp = []
    for p in split_list(esp_written or ""):
        translated = proposal(p)
        tokens = translated.split("-")
        if not pfs:
            translated = "-".join(t for t in tokens if not DH_TOKEN.match(t))
        elif ike_dh and not any(DH_TOKEN.match(t) for t in tokens):
            translated += f"-{ike_dh}"  # pfs=yes without a group: the IKE SA's
        esp.append(translated)
    dpd_delay = _seconds(c.get("dpddelay")) or 0
    action = _raw_setting(text, name, "dpdaction") or ("hold" if dpd_delay else "none")
    children = [
        CustomerChild(
            name=f"{name}/{i}x{j}" if (len(lefts) > 1 or len(rights) > 1) else name,
            local_ts=[left], remote_ts=[right], esp_proposals=esp, esp_written=esp_written,
            start_action={"add": "none", "start": "start", "route": "trap", "ondemand": "trap"}
            .get(c.get("auto", "ignore"), "none"),
            dpd_action={"clear": "clear", "hold": "trap", "restart": "restart"}.get(action, "none"),
            mode=c.get("type", "tunnel") or "tunnel",
            life_time=_seconds(c.get("salifetime")) or 28800,
            where={k: f"conn {name}" for k in ("leftsubnet", "rightsubnet", "esp", "auto",
                                                "dpdaction") if k in c},
        )
        for lefts, rights in [(_subnets(c, "left"), _subnets(c, "right"))]
        for i, left in enumerate(lefts) for j, right in enumerate(rights)
    ]
    timeout = _seconds(c.get("dpdtimeout")) if version == 1 else \
        _seconds(c.get("retransmit-timeout")) or 60
    keys = {*c, "ikev2", "aggressive", "ike", "esp", "dpddelay", "dpdaction", "salifetime"}
    return CustomerConnection(
        name=name, kind="ipsec.conf", version=version,
        aggressive=c.get("aggressive", "no").lower() in ("yes", "true", "1"),
        local_addrs=split_list(c.get("left", "%any")), remote_addrs=split_list(c.get("right", "%any")),
        local_id=c.get("leftid") or None, remote_id=c.get("rightid") or None,
        ike_proposals=ike, ike_written=ike_written,
        auth={"secret": "psk", "psk": "psk"}.get(c.get("authby", "").lower(),
                                                  c.get("authby", "pubkey").lower()),
        dpd_delay=dpd_delay, dpd_timeout=timeout,
        ike_lifetime=_seconds(c.get("ikelifetime")) or 28800,
        children=children,
        where={k: f"conn {name}" for k in keys if k in c},
        dialect="libreswan",
    )


def load(path: Path, secrets_path: Path | None = None) -> CustomerConfig:
    """The conns pluto would load (auto= other than ignore) as the advice's CustomerConfig."""
    conns, notes = read_conns(path)  # libreswan refuses a bad file first
    text = _with_includes(path)
    setup = conns.pop("%setup", {})
    for key in [k for k, v in setup.items() if not v]:  # printed without its value
        setup[key] = _raw_setup(text, key) or ""
    loaded = {n: c for n, c in conns.items() if c.get("auto", "ignore") not in ("ignore", "")}
    config = CustomerConfig(str(path), "ipsec.conf",
                            [_connection(n, c, text) for n, c in loaded.items()],
                            ignored=sorted(set(conns) - set(loaded)), notes=notes,
                            setup=setup, dialect="libreswan")
    config.notes.append(f"{path}: a libreswan ipsec.conf, read by libreswan's own parser "
                        "(readwriteconf: include, %default and also= resolved as pluto does)")
    if secrets_path is not None:
        attach_secrets(config, parse_secrets(read_text(secrets_path, "the secrets"),
                                             str(secrets_path), secrets_path.parent))
    return config
