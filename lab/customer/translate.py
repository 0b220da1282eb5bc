"""Pure translation of a user's files into what the lab loads: ipsec.conf (+ ipsec.secrets) into
the swanctl/VICI tree strongSwan's starter/stroke would have set up, a settings tree back into
swanctl.conf/strongswan.conf text, and the user's strongswan.conf merged under the lab's own.

Why ipsec.conf is translated here rather than run through starter: strongswan-starter 5.9.8 is in
Debian's repository, but starter spawns `/usr/lib/ipsec/charon` (another package), which, like
starter, hard-codes /var/run/charon.pid, /var/run/starter.charon.pid and the stroke socket:
several labs side by side would need a private mount namespace with its own /run per gateway,
and the Docker image two more packages. The translation keeps one daemon (charon-systemd over
VICI) for both forms, on both backends. Every translated setting and everything not translated
is listed in the lab's notes.
"""

from __future__ import annotations

import base64
import ipaddress
import json
from pathlib import Path
from typing import Any

from lab import ipsecconf as ic
from lab.errors import LabError

# strongswan.conf settings the lab owns on the customer gateway, and why (paths below charon or
# charon-systemd, whose settings fall back to charon's; `swanctl` is the whole section).
LAB_OWNED = {
    "load_modular": "the lab loads an explicit plugin list (its dataplane plugin and vici)",
    "load": "the lab loads an explicit plugin list (its dataplane plugin and vici)",
    "plugins.vici": "the lab drives the daemon over its own VICI socket in the lab's directory",
    "filelog": "the daemon logs to the lab's charon.log (your log targets would write on the host)",
    "syslog": "the daemon logs to the lab's charon.log only",
    "journal": "the daemon logs to the lab's charon.log only",
    "port": "the lab's gateways talk IKE on UDP 500",
    "port_nat_t": "the lab's gateways talk NAT-T/ESP on UDP 4500",
    "install_routes": "the lab's dataplane needs strongSwan's routes",
    "install_virtual_ip": "the lab hands out no virtual IPs",
    "interfaces_use": "the lab's interfaces are named eth0/eth1",
    "interfaces_ignore": "the lab's interfaces are named eth0/eth1",
    "start-scripts": "commands in strongswan.conf would run on the lab's host",
    "stop-scripts": "commands in strongswan.conf would run on the lab's host",
    "pid_file": "the lab tracks the daemon by its PID",
}
LAB_OWNED_PLUGIN_LOAD = "plugins are loaded from the lab's explicit list (load_modular = no)"


# --------------------------------------------------------------------------------------------
# settings trees <-> text


def _quote(value: str) -> str:
    if value == "" or value != value.strip() or any(c in value for c in '#{}"'):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return value


def settings_text(tree: dict[str, Any], indent: int = 0) -> str:
    """A parsed settings tree (swanctl.conf/strongswan.conf syntax) back into text."""
    pad = "  " * indent
    out = []
    for key, value in tree.items():
        if isinstance(value, dict):
            out.append(f"{pad}{key} {{\n{settings_text(value, indent + 1)}{pad}}}\n")
        elif isinstance(value, list):
            out.append(f"{pad}{key} = {', '.join(value)}\n")
        else:
            out.append(f"{pad}{key} = {_quote(str(value))}\n")
    return "".join(out)


# --------------------------------------------------------------------------------------------
# ipsec.conf -> swanctl (VICI)

# ipsec.conf's defaults (strongSwan 5.9 starter) are lab.ipsecconf's IPSEC_CONF_* constants.
CLOSE_ACTIONS = {"none": "none", "clear": "clear", "hold": "trap", "restart": "start"}
UNIQUE = {"yes": "replace", "replace": "replace", "no": "no", "never": "never", "keep": "keep"}
TRANSLATED = {
    "also", "auto", "keyexchange", "aggressive", "left", "right", "leftid", "rightid", "authby",
    "leftauth", "rightauth", "ike", "esp", "ah", "mobike", "fragmentation", "forceencaps",
    "keyingtries", "dpdaction", "dpddelay", "dpdtimeout", "ikelifetime", "ikelife", "lifetime",
    "keylife", "margintime", "rekeymargin", "rekeyfuzz", "reauth", "rekey", "lifebytes",
    "marginbytes", "lifepackets", "marginpackets", "leftsubnet", "rightsubnet", "leftprotoport",
    "rightprotoport", "type", "closeaction", "compress", "leftikeport", "rightikeport", "reqid",
    "installpolicy", "inactivity",
}
DROPPED = {
    "leftupdown": "an updown script would run on the lab's host",
    "rightupdown": "an updown script would run on the lab's host",
    "leftfirewall": "iptables rules of the updown script would change the lab's host",
    "rightfirewall": "iptables rules of the updown script would change the lab's host",
    "leftsourceip": "virtual IPs are not part of a site-to-site tunnel to the cloud",
    "rightsourceip": "virtual IPs are not part of a site-to-site tunnel to the cloud",
}


def _addrs(value: str | None) -> list[str]:
    items = ic.split_list(value or "%any")
    out = ["%any" if v in ("%defaultroute", "%any", "%any4", "") else v.lstrip("%") for v in items]
    return list(dict.fromkeys(out))


def _percent(value: str | None, default: int) -> int:
    if not value:
        return default
    return int(value.rstrip("%"))


def _ts(subnets: str | None, protoport: str | None) -> list[str] | None:
    if protoport and "/" in protoport:  # ipsec.conf's %any / %opaque ports in swanctl's words
        proto, port = protoport.split("/", 1)
        protoport = proto if port == "%any" else f"{proto}/{port.lstrip('%')}"
    nets = ic.split_list(subnets or "")
    if not nets:
        return [f"dynamic[{protoport}]"] if protoport else None
    return [f"{n}[{protoport}]" if protoport else n for n in nets]


def translate_ipsec_conf(text: str, source: str, base: Path | None,
                         secrets: list[ic.Secret] | None) -> tuple[dict[str, Any], list[str]]:
    """ipsec.conf (+ ipsec.secrets) as the swanctl tree strongSwan's starter/stroke would have set
    up: one child per conn that is not auto=ignore, named like the conn; conns with identical IKE
    settings share one connection (named after the first), as stroke merges them. Returns
    (tree, notes)."""
    sections = ic.parse_sections(text, source, base)
    setup = {k: v for s in sections if s.kind == "config" for k, v, _ in s.settings}
    notes: list[str] = []
    connections: dict[str, Any] = {}
    for name, settings in ic.resolve(sections, source).items():
        auto = settings.get("auto", ic.Setting("ignore", "default")).value
        if auto not in ic.START_ACTIONS:
            raise LabError(f"{source}: conn {name}: auto={auto}: must be ignore, add, start or route")
        if auto == "ignore":
            continue  # starter never loads it (an also= template)
        conn = _translate_conn(name, settings, setup, source, notes)
        # stroke: a conn whose IKE settings equal an earlier one's adds its child to that
        # connection ("added child to existing configuration"), so one IKE_SA carries both and an
        # IKEv1 responder finds every conn's subnets in quick mode.
        ike_part = json.dumps({k: v for k, v in conn.items() if k != "children"}, sort_keys=True)
        existing = next((c for c in connections.values() if json.dumps(
            {k: v for k, v in c.items() if k != "children"}, sort_keys=True) == ike_part), None)
        if existing is not None:
            existing["children"].update(conn["children"])
        else:
            connections[name] = conn
    for key in setup:
        if key == "uniqueids":
            continue
        notes.append(f"config setup: {key}= is not translated (starter/charon logging and "
                     "daemon options; strongswan.conf holds the daemon's settings)")
    tree: dict[str, Any] = {"connections": connections, "secrets": {}}
    for i, secret in enumerate(secrets or [], start=1):
        if secret.kind not in ("PSK", "IKE"):
            notes.append(f"{secret.where}: {secret.kind} secret not translated (the cloud "
                         "tunnel authenticates with a pre-shared key)")
            continue
        entry = {f"id-{j}": sel for j, sel in enumerate(secret.selectors, start=1)}
        entry["secret"] = "0s" + base64.b64encode(secret.value()).decode()
        tree["secrets"][f"ike-{i}"] = entry
    if secrets is None:
        notes.append("no ipsec.secrets given: no pre-shared key is loaded on the customer gateway "
                     "(pass --customer-secrets PATH)")
    return tree, list(dict.fromkeys(notes))


def _translate_conn(name: str, s: dict[str, ic.Setting], setup: dict[str, str], source: str,
                    notes: list[str]) -> dict[str, Any]:
    def get(key: str, default: str | None = None) -> str | None:
        return s[key].value if key in s else default

    def secs(key: str, default: int) -> int:
        value = get(key)
        return ic.seconds(value, key) if value else default

    keyexchange = get("keyexchange", "ike") or "ike"
    version = {"ike": "0", "ikev1": "1", "ikev2": "2"}.get(keyexchange)
    if version is None:
        raise LabError(f"{source}: conn {name}: keyexchange={keyexchange}: must be ike, ikev1 or "
                       "ikev2")
    conn: dict[str, Any] = {"version": version}
    if (get("aggressive", "no") or "no").lower() in ("yes", "true", "1"):
        conn["aggressive"] = "yes"
    conn["local_addrs"] = _addrs(get("left"))
    conn["remote_addrs"] = _addrs(get("right"))
    for key, target in (("leftikeport", "local_port"), ("rightikeport", "remote_port")):
        if get(key):
            conn[target] = get(key)
    conn["proposals"] = ic.proposals(get("ike"), ic.IPSEC_CONF_DEFAULT_IKE)[0]
    if get("mobike"):
        conn["mobike"] = get("mobike")
    if get("fragmentation"):
        conn["fragmentation"] = get("fragmentation")
    if get("forceencaps", "no") == "yes":
        conn["encap"] = "yes"
    tries = get("keyingtries", ic.IPSEC_CONF_KEYINGTRIES) or ic.IPSEC_CONF_KEYINGTRIES
    conn["keyingtries"] = "0" if tries == "%forever" else tries
    conn["unique"] = UNIQUE.get(setup.get("uniqueids", "yes"), "replace")
    dpdaction = get("dpdaction", "none") or "none"
    if dpdaction not in ic.DPD_ACTIONS:
        raise LabError(f"{source}: conn {name}: dpdaction={dpdaction}: must be none, clear, hold "
                       "or restart")
    if dpdaction != "none":
        conn["dpd_delay"] = f"{secs('dpddelay', ic.IPSEC_CONF_DPD_DELAY)}s"
    # stroke always sets it (IKEv1 uses it with a DPD delay; IKEv2 never): so the daemon lists it
    conn["dpd_timeout"] = f"{secs('dpdtimeout', ic.IPSEC_CONF_DPD_TIMEOUT)}s"
    margin = secs("margintime", secs("rekeymargin", ic.IPSEC_CONF_MARGINTIME))
    fuzz = _percent(get("rekeyfuzz"), ic.IPSEC_CONF_REKEYFUZZ)
    rekey = (get("rekey", "yes") or "yes") != "no"
    ike_life = secs("ikelifetime", secs("ikelife", ic.IPSEC_CONF_IKE_LIFETIME))
    if not rekey:
        conn.update(rekey_time="0s", reauth_time="0s", over_time=f"{ike_life}s")
    else:
        key = "reauth_time" if (get("reauth", "yes") or "yes") != "no" else "rekey_time"
        conn[key] = f"{max(ike_life - margin, 0)}s"
        if key == "reauth_time":
            conn["rekey_time"] = "0s"
        conn["over_time"] = f"{margin}s"
        conn["rand_time"] = f"{margin * fuzz // 100}s"
    authby = (get("authby", "pubkey") or "pubkey").lower()
    auth = {"secret": "psk", "psk": "psk", "xauthpsk": "psk", "rsasig": "pubkey",
            "ecdsasig": "pubkey", "pubkey": "pubkey", "never": "never"}.get(authby, authby)
    if authby == "xauthpsk":
        notes.append(f"conn {name}: authby=xauthpsk: XAuth is not translated (the cloud tunnel "
                     "uses a pre-shared key without XAuth)")
    local: dict[str, Any] = {"auth": get("leftauth") or auth}
    remote: dict[str, Any] = {"auth": get("rightauth") or auth}
    # an ID of %any is no ID to stroke (the daemon then lists none), so it is none here too
    left = get("left", "%any") or "%any"
    right = get("right", "%any") or "%any"
    for auth_round, written, address in ((local, get("leftid"), left),
                                         (remote, get("rightid"), right)):
        if (identity := _stroke_id(written, address)) is not None:
            auth_round["id"] = identity
    conn["local"], conn["remote"] = local, remote
    child: dict[str, Any] = {}
    for key, target, proto in (("leftsubnet", "local_ts", "leftprotoport"),
                               ("rightsubnet", "remote_ts", "rightprotoport")):
        ts = _ts(get(key), get(proto))
        if ts:
            child[target] = ts
    if get("ah"):
        child["ah_proposals"] = ic.proposals(get("ah"), ic.IPSEC_CONF_DEFAULT_ESP)[0]
    else:
        child["esp_proposals"] = ic.proposals(get("esp"), ic.IPSEC_CONF_DEFAULT_ESP)[0]
    mode = get("type", "tunnel") or "tunnel"
    child["mode"] = "pass" if mode == "passthrough" else mode
    child["start_action"] = ic.START_ACTIONS[get("auto", "ignore") or "ignore"]
    child["dpd_action"] = ic.DPD_ACTIONS[dpdaction]
    if get("closeaction"):
        child["close_action"] = CLOSE_ACTIONS.get(get("closeaction") or "none", "none")
    life = secs("lifetime", secs("keylife", ic.IPSEC_CONF_LIFETIME))
    child["life_time"] = f"{life}s"
    child["rekey_time"] = f"{max(life - margin, 0)}s" if rekey else "0s"
    child["rand_time"] = f"{margin * fuzz // 100}s"
    for life_key, margin_key, target in (("lifebytes", "marginbytes", "bytes"),
                                         ("lifepackets", "marginpackets", "packets")):
        if get(life_key):
            total = ic.byte_count(get(life_key) or "", life_key)
            child[f"life_{target}"] = str(total)
            marg = ic.byte_count(get(margin_key) or "0", margin_key)
            child[f"rekey_{target}"] = str(max(total - marg, 0)) if rekey else "0"
    if get("compress", "no") == "yes":
        child["ipcomp"] = "yes"
    if get("reqid"):
        child["reqid"] = get("reqid")
    if get("installpolicy"):
        child["policies"] = get("installpolicy")
    if get("inactivity"):
        child["inactivity"] = f"{secs('inactivity', 0)}s"
    conn["children"] = {name: child}
    for key, setting in s.items():
        if key in DROPPED:
            notes.append(f"conn {name}: {key}= ({setting.where}) not translated: {DROPPED[key]}")
        elif key not in TRANSLATED:
            notes.append(f"conn {name}: {key}= ({setting.where}) has no translation in the lab")
    return conn


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        return False


# --------------------------------------------------------------------------------------------
# strongswan.conf


def merge_strongswan_conf(tree: dict[str, Any], source: str) -> tuple[str, list[str]]:
    """The user's strongswan.conf minus what the lab owns, as text to put before the lab's own
    settings; returns (text, notes naming every setting removed and why)."""
    notes: list[str] = []
    kept: dict[str, Any] = {}
    for section, body in tree.items():
        if section == "swanctl":
            notes.append(f"{source}: swanctl {{...}} overridden: the lab's swanctl.socket")
            continue
        if section not in ("charon", "charon-systemd") or not isinstance(body, dict):
            kept[section] = body
            continue
        body = json.loads(json.dumps(body))  # a copy to prune
        for key, why in LAB_OWNED.items():
            parent, _, leaf = key.rpartition(".")
            holder = body
            for part in parent.split(".") if parent else []:
                holder = holder.get(part) if isinstance(holder, dict) else None
            if isinstance(holder, dict) and leaf in holder:
                del holder[leaf]
                notes.append(f"{source}: {section}.{key} overridden: {why}")
        for plugin, settings in (body.get("plugins") or {}).items():
            if isinstance(settings, dict) and "load" in settings:
                del settings["load"]
                notes.append(f"{source}: {section}.plugins.{plugin}.load overridden: "
                             f"{LAB_OWNED_PLUGIN_LOAD}")
        kept[section] = body
    text = (f"# From the customer's {source} (kept as written, minus the settings the lab owns;\n"
            "# the lab's sections below win for any key both set).\n" + settings_text(kept))
    return text, notes


def _stroke_id(written: str | None, address: str) -> str | None:
    """An end's ID as stroke gives it: the one written (none for %any), else its address when
    that is an IP (starter's default, on both ends), else none."""
    if written == "%any":
        return None
    if written:
        return written
    return address if _is_ip(address) else None
