"""The customer gateway running the user's own strongSwan configuration, unmodified.

`ipsec-lab up SPEC --customer-config PATH` puts the user's file on the customer gateway instead of
the configuration the lab would generate; the cloud side still comes from SPEC. `check` and
`matrix` then answer: does this exact customer config interoperate with this cloud tunnel?

Which path runs the user's file:
- swanctl.conf: parsed with `lab.swanctl.parse` (with `include`) and loaded as written over VICI,
  which is what `swanctl --load-all` does; the only change is that `start_action = start` children
  are initiated by the lab over VICI right after loading (the same moment, but the outcome and the
  daemon's log come back). Nothing is rewritten.
- ipsec.conf (+ ipsec.secrets): translated faithfully into swanctl/VICI form here
  (`translate_ipsec_conf`), never through strongSwan's starter/stroke. strongswan-starter 5.9.8 is
  in Debian's repository, but starter spawns `/usr/lib/ipsec/charon` (another package), which,
  like starter, hard-codes /var/run/charon.pid, /var/run/starter.charon.pid and the stroke socket:
  several labs side by side would need a private mount namespace with its own /run per gateway
  (hiding /run/ipsec-lab and /run/netns from it), and the Docker image would need two more
  packages. The translation keeps one daemon (charon-systemd over VICI) for both forms, on both
  backends. Every translated setting and everything not translated is listed in the lab's notes
  (`status`/`check`), and the translated swanctl.conf is written beside the user's ipsec.conf in
  the gateway's directory.

strongswan.conf: the daemon still gets the lab's own strongswan.conf (VICI socket, log file,
dataplane plugins, per-lab paths). The user's strongswan.conf, when given, is parsed (with its
includes) and written first in that file, minus the settings the lab owns (`LAB_OWNED`, each with
its reason); the lab's sections follow, so for any key both set, the lab's wins. Everything else of
theirs (retransmit_*, aggressive-mode PSK, make_before_break, plugin settings...) stays in force,
and the lab then sets no daemon-wide setting of its own on the customer gateway.

Topology: the customer gateway's public address comes from the config (local_addrs / left=), or
from the spec when the config says %any / %defaultroute; its protected subnets (local_ts /
leftsubnet) become the IDC host's ranges. A config that disagrees with the spec (another cloud
address, other subnets, wrong IDs...) still gets its lab: the disagreement is what `check` reports,
with the static advice of `lab.advise` that matches the dynamic failure.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lab import ipsecconf as ic
from lab.errors import LabError, read_text
from lab.render import write_private
from lab.spec import LabSpec
from lab.timing import patience

if TYPE_CHECKING:
    from lab.check import CheckReport
    from lab.lifecycle import Lab
    from lab.plan import LabPlan

STATE_FILE = "customer.json"
INITIATE_TIMEOUT = patience(10.0)  # per CHILD_SA; a failed IKE_SA stops the remaining initiations
SETTLE = 3.0  # the responder installs its CHILD_SA just after the initiator
DOCUMENTATION = tuple(ipaddress.IPv4Network(n) for n in
                      ("203.0.113.0/24", "198.51.100.0/24", "192.0.2.0/24"))
HOW = {
    "swanctl.conf": "swanctl.conf loaded as written over VICI (what `swanctl --load-all` sends)",
    "ipsec.conf": "ipsec.conf + ipsec.secrets translated to swanctl/VICI by ipsec-lab "
                  "(strongSwan's starter/stroke path is not used)",
}

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

# ipsec.conf defaults (strongSwan 5.9 starter) that differ from swanctl's.
MARGINTIME = "9m"
REKEYFUZZ = 100
KEYINGTRIES = "3"
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

    def secs(key: str, default: str) -> int:
        return ic.seconds(get(key) or default, key)

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
    tries = get("keyingtries", KEYINGTRIES) or KEYINGTRIES
    conn["keyingtries"] = "0" if tries == "%forever" else tries
    conn["unique"] = UNIQUE.get(setup.get("uniqueids", "yes"), "replace")
    dpdaction = get("dpdaction", "none") or "none"
    if dpdaction not in ic.DPD_ACTIONS:
        raise LabError(f"{source}: conn {name}: dpdaction={dpdaction}: must be none, clear, hold "
                       "or restart")
    if dpdaction != "none":
        conn["dpd_delay"] = f"{secs('dpddelay', '30s')}s"
        if version != "2":
            conn["dpd_timeout"] = f"{secs('dpdtimeout', '150s')}s"
    margin = ic.seconds(get("margintime") or get("rekeymargin") or MARGINTIME, "margintime")
    fuzz = _percent(get("rekeyfuzz"), REKEYFUZZ)
    rekey = (get("rekey", "yes") or "yes") != "no"
    ike_life = ic.seconds(get("ikelifetime") or get("ikelife") or "3h", "ikelifetime")
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
    if get("leftid"):
        local["id"] = get("leftid")
    right = get("right", "%any") or "%any"
    if get("rightid"):
        remote["id"] = get("rightid")
    elif _is_ip(right):
        remote["id"] = right  # starter: the peer's ID defaults to its address
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
    life = ic.seconds(get("lifetime") or get("keylife") or "1h", "lifetime")
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
        child["inactivity"] = f"{secs('inactivity', '0')}s"
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


# --------------------------------------------------------------------------------------------
# the run


@dataclass
class CustomerRun:
    """The user's configuration on the customer gateway of one lab, and what the lab made of it."""

    kind: str  # swanctl.conf | ipsec.conf
    config_path: str
    secrets_path: str | None = None
    strongswan_conf_path: str | None = None
    how: str = ""
    public_ip: str | None = None  # the customer gateway's address taken from the config
    notes: list[str] = field(default_factory=list)
    advice: list[dict[str, Any]] = field(default_factory=list)  # lab.advise at `up`
    attempts: list[dict[str, Any]] = field(default_factory=list)  # initiations at `up`
    # Not kept in the lab state: the loaded trees and the files for the gateway's directory.
    tree: dict[str, Any] = field(default_factory=dict, repr=False)
    files: dict[str, str] = field(default_factory=dict, repr=False)
    strongswan_text: str = field(default="", repr=False)
    view: ic.CustomerConfig | None = field(default=None, repr=False)

    # -- loading ---------------------------------------------------------------------------
    @classmethod
    def load(cls, config: str | Path, secrets: str | Path | None = None,
             strongswan_conf: str | Path | None = None) -> CustomerRun:
        path = Path(config)
        text = _read(path, "--customer-config")
        run = cls("swanctl.conf" if ic.looks_like_swanctl(text) else "ipsec.conf",
                  str(path.resolve()), str(Path(secrets).resolve()) if secrets else None,
                  str(Path(strongswan_conf).resolve()) if strongswan_conf else None)
        run.how = HOW[run.kind]
        from lab.swanctl import parse

        if run.kind == "swanctl.conf":
            run.tree = parse(text, str(path), path.parent)
            run.files["your-swanctl.conf"] = text
            run.files["swanctl.conf"] = text if "include" not in text else (
                f"# {path}, its includes merged (ipsec-lab)\n" + settings_text(run.tree))
            run.view = _swanctl_view(run.tree, str(path))
            if secrets is not None:
                sp = Path(secrets)
                parsed = ic.parse_secrets(_read(sp, "--customer-secrets"), str(sp), sp.parent)
                ic.attach_secrets(run.view, parsed)
                run.notes.append(f"{sp}: ipsec.secrets given with a swanctl.conf: used for the "
                                 "static advice only (swanctl.conf's own secrets are loaded)")
        else:
            parsed = None
            if secrets is not None:
                sp = Path(secrets)
                secrets_text = _read(sp, "--customer-secrets")
                parsed = ic.parse_secrets(secrets_text, str(sp), sp.parent)
                run.files["ipsec.secrets"] = secrets_text
            run.tree, notes = translate_ipsec_conf(text, str(path), path.parent, parsed)
            run.notes += notes
            run.files["ipsec.conf"] = text
            run.files["swanctl.conf"] = (f"# Translated by ipsec-lab from {path}"
                                         f"{' and ' + str(secrets) if secrets else ''}\n"
                                         "# (loaded over VICI on this gateway)\n"
                                         + settings_text(run.tree))
            run.view = ic.parse_ipsec_conf(text, str(path), path.parent, parsed)
        if strongswan_conf is not None:
            sp = Path(strongswan_conf)
            ss_text = _read(sp, "--customer-strongswan-conf")
            run.files["your-strongswan.conf"] = ss_text
            run.strongswan_text, notes = merge_strongswan_conf(parse(ss_text, str(sp), sp.parent),
                                                               str(sp))
            run.notes += notes
        for section in set(run.tree) - {"connections", "secrets"}:
            run.notes.append(f"{path}: {section} {{...}} is not loaded (the lab loads connections "
                             "and secrets)")
        if not run.tree.get("connections"):
            raise LabError(f"{path}: no connection to load (ipsec.conf: every conn is "
                           "auto=ignore; swanctl.conf: no connections section)")
        return run

    # -- topology --------------------------------------------------------------------------
    def relevant(self, spec: LabSpec) -> list[ic.CustomerConnection]:
        from lab.advise import _cloud_id, _relevant

        t = spec.tunnels[0]
        gw_ip = str(spec.vpn_gateway.public_ip)
        assert self.view is not None
        return _relevant(self.view, gw_ip, _cloud_id(t.ike.local_id, gw_ip))

    def fit_spec(self, spec: LabSpec) -> LabSpec:
        """The spec with the IDC ranges the config protects; the address is applied by fit_plan.
        Also records the static advice (lab.advise) for `check`."""
        from lab.advise import advise

        if len(spec.tunnels) != 1:
            raise LabError("--customer-config: the spec must hold exactly one tunnel (the cloud "
                           f"tunnel this customer config is for); it has {len(spec.tunnels)}")
        t = spec.tunnels[0]
        conns = self.relevant(spec)
        self.public_ip = self._public_ip(spec, conns)
        ranges: list[ipaddress.IPv4Network] = list(t.customer_gateway.idc_cidrs)
        for conn in conns:
            for child in conn.children:
                for ts in child.local_ts:
                    net = _network(ts)
                    if net is None:
                        continue
                    if net.prefixlen < 8 or net.overlaps(spec.vpn_gateway.vpc_cidr) or \
                            not net.is_private:
                        self.notes.append(f"{conn.name}/{child.name}: local subnet {net} is not "
                                          "given to the lab's IDC host (not a private range apart "
                                          "from the VPC)")
                        continue
                    ranges.append(net)
        ranges = list(dict.fromkeys(ranges))
        ranges = [r for r in ranges if not any(r != o and r.subnet_of(o) for o in ranges)]
        data = t.model_dump()
        data["customer_gateway"] = {**data["customer_gateway"], "idc_cidrs": ranges}
        fitted = LabSpec(vpn_gateway=spec.vpn_gateway, tunnels=[type(t).model_validate(data)])
        assert self.view is not None
        self.advice = [a.to_json() for a in advise(fitted, self.view)]
        return fitted

    def _public_ip(self, spec: LabSpec, conns: list[ic.CustomerConnection]) -> str | None:
        spec_ip = spec.tunnels[0].customer_gateway.public_ip
        for conn in conns:
            for value in conn.local_addrs:
                if value in ("%any", "%defaultroute", "%any4", "0.0.0.0/0", "0.0.0.0"):
                    continue
                try:
                    ip = ipaddress.IPv4Address(value)
                except ValueError:
                    raise LabError(
                        f"{self.config_path}: connection {conn.name}: local address {value!r} is "
                        "not an IPv4 address the lab can give your gateway; write the address, or "
                        "%any/%defaultroute and set tunnels[0].customer_gateway.public_ip in the "
                        "spec") from None
                if ip == spec.vpn_gateway.public_ip:
                    raise LabError(f"{self.config_path}: connection {conn.name}: your local address "
                                   f"{ip} is the cloud gateway's (vpn_gateway.public_ip)")
                if not any(ip in n for n in DOCUMENTATION):
                    kind = "a private address (behind NAT?)" if ip.is_private else \
                        "not in a documentation range"
                    raise LabError(
                        f"{self.config_path}: connection {conn.name}: your local address {ip} is "
                        f"{kind}; the lab only puts 203.0.113.0/24, 198.51.100.0/24 and "
                        "192.0.2.0/24 on its links (and has no NAT). Use such an address in a copy "
                        "of the config (and in the spec's customer_gateway.public_ip), or "
                        "left=%defaultroute / local_addrs = %any to take the spec's")
                if ip != spec_ip:
                    self.notes.append(
                        f"your gateway is at {ip} (from connection {conn.name}); the cloud tunnel "
                        f"expects the customer gateway at {spec_ip} (spec): the lab keeps both as "
                        "written")
                return str(ip)
        self.notes.append(f"your config does not name its own address: the customer gateway is at "
                          f"{spec_ip} (the spec's customer_gateway.public_ip)")
        return None

    def fit_plan(self, plan: LabPlan) -> None:
        """The customer gateway at the config's address; daemon-wide settings left to the user."""
        from lab.plan import WAN, Route

        gw = next(g for g in plan.gateways if g.side == "customer")
        gw.aggressive_psk, gw.retransmit = False, None  # the user's strongswan.conf decides
        if self.public_ip is None or str(gw.public_ip) == self.public_ip:
            return
        new = ipaddress.IPv4Address(self.public_ip)
        node = plan.node(gw.node)
        node.iface(WAN).addresses = [ipaddress.IPv4Interface(f"{new}/32")]
        node.routes = [r for r in node.routes if r.destination != ipaddress.IPv4Network(f"{new}/32")]
        for other in plan.nodes:
            if other is not node and any(i.name == WAN for i in other.interfaces):
                other.routes.append(Route(ipaddress.IPv4Network(f"{new}/32"), device=WAN))
        gw.public_ip = new
        for conn in gw.connections:
            conn.local_addr = new

    # -- files and state ---------------------------------------------------------------------
    def gateway_files(self, rendered: dict[str, str]) -> dict[str, str]:
        """The customer gateway's directory: the lab's strongswan.conf with the user's settings
        merged in, the loaded swanctl.conf, and copies of the user's files."""
        files = {k: v for k, v in self.files.items()}
        ours = rendered["strongswan.conf"]
        files["strongswan.conf"] = (self.strongswan_text + "\n" + ours) if self.strongswan_text \
            else ours
        return files

    def to_state(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("tree", "files", "strongswan_text", "view"):
            data.pop(key)
        return data

    def save(self, state_dir: Path) -> None:
        write_private(state_dir / STATE_FILE, json.dumps(self.to_state(), indent=2))

    @classmethod
    def restore(cls, state_dir: Path) -> CustomerRun | None:
        path = state_dir / STATE_FILE
        if not path.exists():
            return None
        return cls(**json.loads(path.read_text()))

    def describe(self) -> str:
        extra = [p for p in (self.secrets_path, self.strongswan_conf_path) if p]
        return f"{self.kind} {self.config_path}" + (f" (+ {', '.join(extra)})" if extra else "") \
            + f": {self.how}"

    # -- negotiation -------------------------------------------------------------------------
    def establish(self, lab: Lab, progress) -> None:  # noqa: ANN001 - lab.backends.Progress
        """Load both ends, then initiate the way the cloud tunnel's negotiation type and the
        user's start actions say. Failures are recorded for `check`, never raised: a config
        that does not interoperate still gets its lab."""
        from vici.exception import CommandException

        from lab.negotiation import lab_config, mechanism, start_trigger
        from lab.swanctl import shared_secrets

        cloud, cust = lab.plan.gateways[0], _customer_gw(lab.plan)
        tunnel = lab.spec.tunnels[0]
        with lab.vici(cloud.node) as v:
            v.load(lab_config(lab, cloud.node))
        config = json.loads(json.dumps(self.tree))
        starts: list[tuple[str, str, str]] = []  # (conn, child, start_action as written)
        relevant = {c.name for c in self.relevant(lab.spec)}
        for cname, conn in config.get("connections", {}).items():
            for chname, child in (conn.get("children") or {}).items():
                action = child.get("start_action", "none")
                if action in ("start", "trap") and cname in relevant:
                    starts.append((cname, chname, action))
                if action == "start":
                    child["start_action"] = "none"  # initiated below, over VICI
        with lab.vici(cust.node) as v:
            for secret in shared_secrets(config):
                try:
                    v.session.load_shared(secret)
                except CommandException as exc:
                    self.attempts.append(_attempt(cust.node, secret["id"], False,
                                                  f"strongSwan refused secret {secret['id']}: {exc}"))
            for cname, conn in config.get("connections", {}).items():
                try:
                    v.session.load_conn({cname: conn})
                except CommandException as exc:
                    self.attempts.append(_attempt(cust.node, cname, False,
                                                  f"strongSwan refused your connection {cname}: {exc}"))
        progress(f"cloud tunnel and your {self.kind} loaded over VICI")
        lab.state.negotiation[tunnel.name] = (
            mechanism(tunnel.negotiation_type, lab.plan.dataplane.trap_policies)
            + f"; customer gateway: {self.describe()}")
        if tunnel.negotiation_type == "traffic-triggered":
            if not lab.plan.dataplane.trap_policies:
                start_trigger(lab)
        elif tunnel.negotiation_type == "active":
            conn = cloud.connections[0]
            self._initiate(lab, cloud.node, [(tunnel.name, ch.name) for ch in conn.children])
        if tunnel.negotiation_type == "passive" and not starts:
            self.attempts.append(_attempt(cust.node, "-", False,
                                          "the cloud tunnel is passive and none of your children "
                                          "initiates (start_action/auto): nobody starts the "
                                          "negotiation"))
        if starts:
            time.sleep(0.2 if tunnel.negotiation_type == "active" else 0)
            pending = self._not_installed(lab, cust.node, config, starts)
            if pending:
                if any(a == "trap" for _, _, a in pending):
                    self.notes.append("your trap (auto=route / start_action = trap) children are "
                                      "initiated once by the lab at start-up, standing in for the "
                                      "first packet")
                self._initiate(lab, cust.node, [(c, ch) for c, ch, _ in pending])
        ok = [a for a in self.attempts if a["ok"]]
        progress(f"tunnel {tunnel.name}: {len(ok)} of {len(self.attempts)} initiation(s) "
                 "succeeded" if self.attempts else f"tunnel {tunnel.name}: waiting "
                 "(nothing initiates at start-up)")
        lab.state.save()
        self.save(lab.state.dir)

    def _initiate(self, lab: Lab, node: str, children: list[tuple[str, str]]) -> None:
        from lab.check import find_ike
        from lab.control import InitiateFailed

        with lab.vici(node) as v:
            for ike, child in children:
                try:
                    log = v.initiate(child, ike, INITIATE_TIMEOUT)
                    self.attempts.append(_attempt(node, f"{ike}/{child}", True, "installed", log))
                except InitiateFailed as exc:
                    self.attempts.append(_attempt(node, f"{ike}/{child}", False, str(exc), exc.log))
                    if find_ike(v.sas(), ike) is None:
                        break  # no IKE_SA: the other children would fail the same way

    def _not_installed(self, lab: Lab, node: str, config: dict[str, Any],
                       starts: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
        with lab.vici(node) as v:
            installed = [(frozenset(ch.get("local-ts", [])), frozenset(ch.get("remote-ts", [])))
                         for _, ch in _children(v.sas())]
        out = []
        for cname, chname, action in starts:
            child = config["connections"][cname]["children"][chname]
            key = (frozenset(child.get("local_ts", [])), frozenset(child.get("remote_ts", [])))
            if key not in installed:
                out.append((cname, chname, action))
        return out

    # -- check -------------------------------------------------------------------------------
    def control_plane(self, lab: Lab, report: CheckReport, tunnel: str, rekey: bool) -> None:
        """Both ends, CHILD_SAs matched by traffic selectors (the user's names are theirs);
        failures explained from the daemons' logs and the static advice."""
        from lab import check as ck

        t = lab.spec.tunnel(tunnel)
        cloud, cust = lab.plan.gateways[0], _customer_gw(lab.plan)
        conn = next(c for c in cloud.connections if c.tunnel == tunnel)
        mappings = t.mappings()
        report.add("*", f"{cust.node} (customer)", "config", "customer configuration", True,
                   self.describe(), info=True)
        sas = self._settled(lab, cloud.node, cust.node, mappings)
        before = len(report.findings)
        if rekey and conn.version == 2:
            names = [ch["name"] for _, ch in _children(sas[cloud.node], tunnel)]
            if names:
                try:
                    ck.rekey_children(lab, cloud.node, tunnel, sorted(set(names)))
                except LabError as exc:
                    report.add(tunnel, f"{cloud.node} (cloud)", "control", "CHILD_SA rekey", False,
                               str(exc))
                sas = self._settled(lab, cloud.node, cust.node, mappings)
        peer_of = {cloud.node: str(cust.public_ip), cust.node: str(lab.spec.vpn_gateway.public_ip)}
        for gw, name in ((cloud, tunnel), (cust, None)):
            ikes = _ikes(sas[gw.node], name, peer_of[gw.node])
            subject = f"{gw.node} ({gw.side})"
            if not ikes:
                report.add(tunnel, subject, "control", "IKE_SA established", False,
                           "no ESTABLISHED IKE_SA " + ("for this tunnel" if name else
                                                       f"with the cloud gateway {peer_of[gw.node]}"))
            else:
                ike = ikes[-1]
                wrong = ck._algorithms(ike, t.ike.encryption, t.ike.integrity)
                if ike.get("dh-group") != ck._dh_name(t.ike.dh_group):
                    wrong.append(f"DH {ike.get('dh-group')}, expected {t.ike.dh_group}")
                if ike.get("version") != str(conn.version):
                    wrong.append(f"IKEv{ike.get('version')}, expected IKEv{conn.version}")
                label = "" if name else f" (your connection {ike['name']})"
                report.add(tunnel, subject, "control", "IKE_SA established", not wrong,
                           "; ".join(wrong) or f"IKEv{ike['version']} {t.ike.encryption}/"
                           f"{t.ike.integrity}/{t.ike.dh_group}, {ike.get('local-id')} <-> "
                           f"{ike.get('remote-id')}{label}")
            children = [(ike, ch) for ike in ikes for ch in ck.installed_children(ike).values()]
            for vpc, idc in mappings:
                local, remote = (vpc, idc) if gw is cloud else (idc, vpc)
                want = ([str(local)], [str(remote)])
                hit = [(i, ch) for i, ch in children
                       if (ch.get("local-ts"), ch.get("remote-ts")) == want]
                where = f"{subject} {local} === {remote}"
                if not hit:
                    near = [ch for _, ch in children if _overlaps(ch, local, remote)]
                    detail = "no CHILD_SA with these traffic selectors" + (
                        f" (installed instead: {near[0].get('local-ts')} === "
                        f"{near[0].get('remote-ts')})" if near else "")
                    report.add(tunnel, where, "control", "CHILD_SA installed", False, detail)
                    continue
                ike, child = hit[-1]
                wrong = ck._algorithms(child, t.ipsec.encryption, t.ipsec.integrity)
                owner = "" if gw is cloud else f" (your child {ike['name']}/{child.get('name')})"
                report.add(tunnel, where, "control", "CHILD_SA installed", not wrong,
                           "; ".join(wrong) or f"{t.ipsec.encryption}/{t.ipsec.integrity}{owner}")
                if conn.version == 2 and not rekey:
                    continue
                pfs, got = ck._dh_name(t.ipsec.pfs), child.get("dh-group")
                how = "after a CHILD_SA rekey" if conn.version == 2 else "in quick mode"
                report.add(tunnel, where, "control", "PFS", got == pfs,
                           f"DH {got or 'none'} {how}, expected {t.ipsec.pfs}")
        if any(not f.ok for f in report.findings[before:]):
            self.explain(lab, report, tunnel)

    def _settled(self, lab: Lab, cloud: str, cust: str, mappings: list) -> dict[str, list]:
        deadline = time.monotonic() + SETTLE
        while True:
            with lab.vici(cloud) as a, lab.vici(cust) as b:
                sas = {cloud: a.sas(), cust: b.sas()}
            have = {node: {(tuple(ch.get("local-ts", [])), tuple(ch.get("remote-ts", [])))
                           for _, ch in _children(s)} for node, s in sas.items()}
            done = all(((str(v),), (str(i),)) in have[cloud] and ((str(i),), (str(v),)) in have[cust]
                       for v, i in mappings)
            if done or time.monotonic() >= deadline:
                return sas
            time.sleep(0.1)

    def explain(self, lab: Lab, report: CheckReport, tunnel: str) -> None:
        """Why, in the user's terms: the daemons' own reason, then the matching static advice."""
        from lab.matrix.classify import classify

        events = {node: [{"msg": m} for m in log_messages(lab.log_path(node))]
                  for node in (lab.plan.gateways[0].node, _customer_gw(lab.plan).node)}
        initiate_log = [line for a in self.attempts for line in a.get("log", [])]
        refused = [a for a in self.attempts if not a["ok"] and "refused" in a["message"]]
        for a in refused:
            report.add(tunnel, f"{a['node']} (customer)", "control", "your config loads", False,
                       a["message"])
        reason, evidence = classify(initiate_log, events,
                                    "; ".join(a["message"] for a in self.attempts if not a["ok"]))
        if reason is None and any("nobody starts" in a["message"] for a in self.attempts):
            reason, evidence = "nobody initiates", next(
                a["message"] for a in self.attempts if "nobody starts" in a["message"])
        report.add(tunnel, "negotiation", "control", f"why: {reason or 'not recognised'}", False,
                   evidence[:300])
        topics = REASON_TOPICS.get(reason or "", ())
        matched = [a for a in self.advice if a["topic"] in topics
                   and a["severity"] in ("error", "warning")]
        label = "advice"
        if not matched:
            matched = [a for a in self.advice if a["severity"] == "error"]
            label = "static finding"
        for a in matched:
            fix = f" Fix: {a['fix']}." if a.get("fix") else ""
            report.add(tunnel, f"your config: {a['customer_field']}", "control",
                       f"{label} ({a['topic']})", False,
                       f"{a['message']} (cloud: {a['cloud_field']}).{fix}")


def _customer_gw(plan: LabPlan):  # noqa: ANN202 - lab.plan.Gateway
    return next(g for g in plan.gateways if g.side == "customer")


REASON_TOPICS: dict[str, tuple[str, ...]] = {
    "ike proposal mismatch": ("ike-proposal",),
    "ipsec proposal mismatch": ("esp-proposal", "pfs"),
    "pfs mismatch": ("pfs", "esp-proposal"),
    "ike version mismatch": ("ike-version", "addresses", "identity"),
    "exchange mode mismatch": ("exchange-mode",),
    "authentication failed": ("psk", "identity", "authentication"),
    "id mismatch": ("identity",),
    "traffic selector mismatch": ("mappings",),
    "timeout": ("addresses", "negotiation", "ike-version", "exchange-mode"),
    "nobody initiates": ("negotiation", "addresses"),
}

LOG_LINE = re.compile(r"^\S+ \S+ \d+\[\w+\] (?:<[^>]*> )?(.*)$")


def log_messages(path: Path, limit: int = 4000) -> list[str]:
    """The messages of a lab daemon's charon.log (time, thread and IKE_SA name stripped)."""
    try:
        lines = path.read_text(errors="replace").splitlines()[-limit:]
    except OSError:
        return []
    return [m.group(1) for line in lines if (m := LOG_LINE.match(line))]


def _attempt(node: str, what: str, ok: bool, message: str, log: list[str] | None = None) -> dict:
    return {"node": node, "child": what, "ok": ok, "message": message, "log": (log or [])[-40:]}


def _children(sas: list[dict[str, Any]], name: str | None = None):
    for ike in sas:
        if ike.get("state") != "ESTABLISHED" or (name and ike["name"] != name):
            continue
        for child in (ike.get("child-sas") or {}).values():
            if child.get("state") == "INSTALLED":
                yield ike, child


def _ikes(sas: list[dict[str, Any]], name: str | None, peer: str) -> list[dict[str, Any]]:
    out = [s for s in sas if s.get("state") == "ESTABLISHED"
           and (s["name"] == name if name else s.get("remote-host") == peer)]
    return sorted(out, key=lambda s: int(s.get("uniqueid", 0)))


def _network(ts: str) -> ipaddress.IPv4Network | None:
    try:
        return ipaddress.IPv4Network(ts.split("[")[0].strip(), strict=False)
    except ValueError:
        return None


def _overlaps(child: dict[str, Any], local, remote) -> bool:  # noqa: ANN001
    nets = [_network(x) for x in child.get("local-ts", [])], [_network(x) for x in
                                                               child.get("remote-ts", [])]
    return any(n and n.overlaps(local) for n in nets[0]) and any(n and n.overlaps(remote)
                                                                 for n in nets[1])


def _swanctl_view(tree: dict[str, Any], source: str) -> ic.CustomerConfig:
    """lab.ipsecconf's normalised view of an already parsed swanctl tree (includes resolved)."""
    from pydantic import SecretStr

    conns = [ic._swanctl_connection(n, c, source) for n, c in (tree.get("connections") or {}).items()]
    view = ic.CustomerConfig(source, "swanctl.conf", conns)
    if "secrets" in tree:
        ic.attach_secrets(view, [ic.Secret(owners, "IKE", SecretStr(secret), f"{source}: secrets.{sid}")
                                 for sid, owners, secret in ic._swanctl_secrets(tree)])
    return view


def _read(path: Path, option: str) -> str:
    """A file the user named with `option`: unreadable or not UTF-8 is a LabError naming it."""
    return read_text(path, "the file", f"{option} {path}")


# --------------------------------------------------------------------------------------------
# matrix: the cloud side varied per case, the customer side always the user's config


def run_matrix(cases: list, spec_path: Path, load: Any, backend: str, name: str,
               progress: Any = lambda _: None) -> list[dict[str, Any]]:
    """Each case's cloud tunnel (base spec + the case's cloud settings) against the user's config,
    one full lab per case (up, check without rekey, down): the user's daemon settings must stand
    as written, so no daemon is reused across cases. Negative cases (customer deviations) do not
    apply. Returns one row per case: id, cloud settings, interoperates, why, advice."""
    from lab.matrix.runner import plan_tunnel
    from lab.spec import LabSpec as Spec

    base = load_spec_path(spec_path)
    rows = []
    for case in cases:
        tunnel = plan_tunnel(base, case).model_copy(update={"customer": type(base.tunnels[0].customer)()})
        spec = Spec(vpn_gateway=base.vpn_gateway, tunnels=[tunnel])
        row: dict[str, Any] = {"id": case.id, "cloud": dict(case.params)}
        from lab import lifecycle
        from lab.check import run_check

        lifecycle.down(name)
        try:
            lab = lifecycle.up(spec, name, backend, customer=load())
            report = run_check(lab, rekey=False)
            why = [f for f in report.findings if f.check.startswith("why:")]
            row.update(interoperates=report.ok,
                       why=why[0].check[5:] if why else ("" if report.ok else "data or wire"),
                       advice=[f.detail for f in report.findings if f.check.startswith("advice")])
        except LabError as exc:
            row.update(interoperates=False, why="lab refused the case", advice=[str(exc)])
        finally:
            lifecycle.down(name)
        progress(f"{case.id}: " + ("interoperates" if row["interoperates"] else row["why"]))
        rows.append(row)
    return rows


def load_spec_path(path: Path) -> LabSpec:
    from lab.spec import load_spec

    return load_spec(path)


def matrix_command(cases: list, spec: Path | None, config: Path, secrets: Path | None,
                   strongswan_conf: Path | None, backend: str, name: str | None,
                   json_path: Path | None) -> None:
    """`ipsec-lab matrix [SPEC] --customer-config PATH ...`: a table of cloud settings x "does
    your config interoperate, and if not why"; exit 0 when every case interoperates."""
    import sys

    import typer
    from rich.console import Console
    from rich.table import Table

    from lab.matrix.runner import DEFAULT_SPEC

    CustomerRun.load(config, secrets, strongswan_conf)  # fail early on an unreadable config
    err = Console(stderr=True)
    rows = run_matrix(cases, spec or DEFAULT_SPEC,
                      lambda: CustomerRun.load(config, secrets, strongswan_conf), backend,
                      name or "mxcust", lambda m: err.print(f"[dim]·[/] {m}", highlight=False))
    table = Table(title=f"matrix: your {config} against {len(rows)} cloud setting(s)")
    for column in ("case", "cloud", "interoperates", "why / advice"):
        table.add_column(column, overflow="fold")
    for r in rows:
        table.add_row(r["id"], ", ".join(f"{k}={v}" for k, v in r["cloud"].items()),
                      "[green]yes[/]" if r["interoperates"] else "[red]no[/]",
                      "\n".join([r["why"], *r["advice"]]).strip())
    Console(width=None if sys.stdout.isatty() else 160).print(table)
    if json_path is not None:
        json_path.write_text(json.dumps(rows, indent=2))
    raise typer.Exit(0 if rows and all(r["interoperates"] for r in rows) else 1)
