"""The customer gateway running the user's own strongSwan configuration, unmodified.

`ipsec-lab up SPEC --customer-config PATH` puts the user's file on the customer gateway instead of
the configuration the lab would generate; the cloud side still comes from SPEC. `check` and
`matrix` then answer: does this exact customer config interoperate with this cloud tunnel?

Which path runs the user's file:
- swanctl.conf: read by strongSwan's own `swanctl --load-all` (`lab.swanctl_load`: includes,
  one-line sections, quoting, all as swanctl reads them), and what swanctl sends over VICI is
  what the lab loads into the customer gateway's daemon; the only change is that
  `start_action = start` children are initiated by the lab over VICI right after loading (the
  same moment, but the outcome and the daemon's log come back). Nothing is rewritten.
- ipsec.conf (+ ipsec.secrets): translated faithfully into swanctl/VICI form
  (`lab.customer.translate`, which says why starter/stroke is not used). The translated
  swanctl.conf is written beside the user's ipsec.conf in the gateway's directory.

strongswan.conf: the daemon still gets the lab's own strongswan.conf (VICI socket, log file,
dataplane plugins, per-lab paths). The user's strongswan.conf, when given, is written first in
that file, minus the settings the lab owns (`translate.LAB_OWNED`, each with its reason); the
lab's sections follow, so for any key both set, the lab's wins; the lab then sets no daemon-wide
setting of its own on the customer gateway.

Topology: the customer gateway's public address comes from the config (local_addrs / left=), or
from the spec when the config says %any / %defaultroute; its protected subnets (local_ts /
leftsubnet) become the IDC host's ranges. A config that disagrees with the spec (another cloud
address, other subnets, wrong IDs...) still gets its lab: the disagreement is what `check` reports
(`lab.customer.own_check`), with the static advice of `lab.advise` that matches the failure.
"""

from __future__ import annotations

import ipaddress
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from vici.exception import CommandException

from lab import ipsecconf as ic
from lab.advise import advise, connections_to_cloud
from lab.control import InitiateFailed
from lab.customer import own_check
from lab.customer.addresses import ConfigAddresses, place
from lab.customer.translate import merge_strongswan_conf, settings_text, translate_ipsec_conf
from lab.errors import LabError, read_text
from lab.files import write_private
from lab.ipsecconf import swanctl_view
from lab.libreswan.userconf import looks_like_libreswan
from lab.negotiation import lab_config, mechanism, start_trigger
from lab.plan import CustomerPlacement
from lab.spec import LabSpec
from lab.starter import checked as starter_checked
from lab.swanctl import parse, shared_secrets
from lab.swanctl_load import read as read_swanctl
from lab.timing import patience
from lab.verify import find_ike, installed, ts_network

if TYPE_CHECKING:
    from lab.backends import Progress
    from lab.findings import CheckReport
    from lab.running import Lab

STATE_FILE = "customer.json"
INITIATE_TIMEOUT = patience(10.0)  # per CHILD_SA; a failed IKE_SA stops the remaining initiations
RESPONDER_SETTLE = patience(1.0)  # for the responder's CHILD_SAs after the initiator's
HOW = {
    "swanctl.conf": "swanctl.conf read by strongSwan's own swanctl; what it sends over VICI "
                    "is loaded as is",
    "ipsec.conf": "ipsec.conf + ipsec.secrets translated to swanctl/VICI by ipsec-lab "
                  "(strongSwan's starter/stroke path is not used)",
}


# --------------------------------------------------------------------------------------------
# the run


@dataclass
class OwnConfig:
    """The user's configuration on the customer gateway of one lab, and what the lab made of it."""

    kind: str  # swanctl.conf | ipsec.conf
    starts_its_daemon: ClassVar[bool] = False  # charon is started with the others
    config_path: str
    secrets_path: str | None = None
    strongswan_conf_path: str | None = None
    how: str = ""
    public_ip: str | None = None  # the customer gateway's address taken from the config
    # real addresses of the config, run as written (lab.plan.CustomerPlacement)
    customer_ip: str | None = None
    private_ip: str | None = None
    cloud_ip: str | None = None
    spec_cloud_ip: str = ""  # the spec's addresses they stand for, for reports
    spec_customer_ip: str = ""
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
             strongswan_conf: str | Path | None = None) -> OwnConfig:
        path = Path(config)
        text = read_user_file(path, "--customer-config")
        if looks_like_libreswan(text):
            raise LabError(f"--customer-config: {path} is a libreswan ipsec.conf, which runs on "
                           "libreswan's pluto (lab.customer.load_own), not on strongSwan")
        run = cls("swanctl.conf" if ic.looks_like_swanctl(text) else "ipsec.conf",
                  str(path.resolve()), str(Path(secrets).resolve()) if secrets else None,
                  str(Path(strongswan_conf).resolve()) if strongswan_conf else None)
        run.how = HOW[run.kind]
        if run.kind == "swanctl.conf":
            run.tree = read_swanctl(path, "--customer-config")
            run.files["your-swanctl.conf"] = text
            run.files["swanctl.conf"] = text if "include" not in text else (
                f"# {path}, its includes merged (ipsec-lab)\n" + settings_text(run.tree))
            run.view = swanctl_view(run.tree, str(path))
            if secrets is not None:
                sp = Path(secrets)
                parsed = ic.parse_secrets(read_user_file(sp, "--customer-secrets"), str(sp), sp.parent)
                ic.attach_secrets(run.view, parsed)
                run.notes.append(f"{sp}: ipsec.secrets given with a swanctl.conf: used for the "
                                 "static advice only (swanctl.conf's own secrets are loaded)")
        else:
            parsed = None
            if secrets is not None:
                sp = Path(secrets)
                secrets_text = read_user_file(sp, "--customer-secrets")
                parsed = ic.parse_secrets(secrets_text, str(sp), sp.parent)
                run.files["ipsec.secrets"] = secrets_text
            (run.tree, notes), judged = starter_checked(
                path, lambda: translate_ipsec_conf(text, str(path), path.parent, parsed))
            run.notes += judged + notes
            run.files["ipsec.conf"] = text
            run.files["swanctl.conf"] = (f"# Translated by ipsec-lab from {path}"
                                         f"{' and ' + str(secrets) if secrets else ''}\n"
                                         "# (loaded over VICI on this gateway)\n"
                                         + settings_text(run.tree))
            run.view = ic.parse_ipsec_conf(text, str(path), path.parent, parsed)
        if strongswan_conf is not None:
            sp = Path(strongswan_conf)
            ss_text = read_user_file(sp, "--customer-strongswan-conf")
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
        """The config's connections to the cloud tunnel, at the addresses the lab runs."""
        assert self.view is not None
        return connections_to_cloud(self.view, self.placement().as_placed(spec))

    def fit(self, spec: LabSpec) -> LabSpec:
        """The spec with the IDC ranges the config protects (the address is the placement's).
        Also records the static advice (lab.advise) for `check`."""
        if len(spec.tunnels) != 1:
            raise LabError("--customer-config: the spec must hold exactly one tunnel (the cloud "
                           f"tunnel this customer config is for); it has {len(spec.tunnels)}")
        t = spec.tunnels[0]
        assert self.view is not None
        found = place(spec, self.view, self.config_path)
        self.public_ip, self.customer_ip = found.public_ip, found.customer_ip
        self.private_ip, self.cloud_ip = found.private_ip, found.cloud_ip
        self.notes += found.notes
        self.spec_cloud_ip = str(spec.vpn_gateway.ip_of(t.vpn_gateway))
        self.spec_customer_ip = str(t.customer_gateway.public_ip)
        conns = self.relevant(spec)
        ranges: list[ipaddress.IPv4Network] = list(t.customer_gateway.idc_cidrs)
        for conn in conns:
            for child in conn.children:
                for ts in child.local_ts:
                    net = ts_network(ts)
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
        self.advice = [a.to_json() for a in advise(self.placement().as_placed(fitted), self.view)]
        return fitted

    def placement(self) -> CustomerPlacement:
        """The gateway at the config's own address (real ones on both ends); daemon-wide
        settings left to the user's strongswan.conf."""
        return self._found().placement(own_daemon_settings=True)

    def _found(self) -> ConfigAddresses:
        return ConfigAddresses(self.public_ip, self.customer_ip, self.private_ip, self.cloud_ip)

    def addresses(self, lab: Lab) -> str | None:
        """For reports: the addresses as the user's config has them beside the spec's, when the
        lab runs the config's own."""
        if not self._found().real:
            return None
        t = lab.spec.tunnels[0]
        cloud, cust = lab.plan.cloud_of(t.name), lab.plan.customer_of(t.name)
        parts = [f"cloud gateway {cloud.public_ip} (spec: {self.spec_cloud_ip})"]
        if self.private_ip is not None:
            parts.append(f"customer gateway {self.private_ip} behind NAT, seen as "
                         f"{cust.public_ip} (spec: {self.spec_customer_ip})")
        else:
            parts.append(f"customer gateway {cust.public_ip} (spec: {self.spec_customer_ip})")
        return "your config's addresses, in the lab's own namespaces only: " + "; ".join(parts)

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
    def restore(cls, state_dir: Path) -> OwnConfig | None:
        path = state_dir / STATE_FILE
        if not path.exists():
            return None
        return cls(**json.loads(path.read_text()))

    def describe(self) -> str:
        extra = [p for p in (self.secrets_path, self.strongswan_conf_path) if p]
        return f"{self.kind} {self.config_path}" + (f" (+ {', '.join(extra)})" if extra else "") \
            + f": {self.how}"

    # -- negotiation -------------------------------------------------------------------------
    def establish(self, lab: Lab, progress: Progress) -> None:
        """Load both ends, then initiate the way the cloud tunnel's negotiation type and the
        user's start actions say. Failures are recorded for `check`, never raised: a config
        that does not interoperate still gets its lab."""
        tunnel = lab.spec.tunnels[0]
        cloud, cust = lab.plan.cloud_of(tunnel.name), lab.plan.customer_of(tunnel.name)
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
                    self.attempts.append(attempt(cust.node, secret["id"], False,
                                                 f"strongSwan refused secret {secret['id']}: {exc}"))
            for cname, conn in config.get("connections", {}).items():
                try:
                    v.session.load_conn({cname: conn})
                except CommandException as exc:
                    self.attempts.append(attempt(cust.node, cname, False,
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
            self.attempts.append(attempt(cust.node, "-", False,
                                         "the cloud tunnel is passive and none of your children "
                                         "initiates (start_action/auto): nobody starts the "
                                         "negotiation"))
        if starts:
            pending = self._not_installed(lab, cust.node, config, starts)
            # the cloud initiated: the customer installs its CHILD_SAs just after the cloud did
            deadline = time.monotonic() + RESPONDER_SETTLE
            while pending and tunnel.negotiation_type == "active" and time.monotonic() < deadline:
                time.sleep(0.05)
                pending = self._not_installed(lab, cust.node, config, starts)
            if pending:
                if any(a == "trap" for _, _, a in pending):
                    self.notes.append("your trap (auto=route / start_action = trap) children are "
                                      "initiated once by the lab at start-up, standing in for the "
                                      "first packet")
                self._initiate(lab, cust.node, [(c, ch) for c, ch, _ in pending])
        self._settle(lab, tunnel.name, progress)

    def _settle(self, lab: Lab, tunnel: str, progress: Progress) -> None:
        """Say how the initiations went and keep them for `check` (in the lab state)."""
        ok = [a for a in self.attempts if a["ok"]]
        progress(f"tunnel {tunnel}: {len(ok)} of {len(self.attempts)} initiation(s) succeeded"
                 if self.attempts else f"tunnel {tunnel}: waiting (nothing initiates at "
                 "start-up)")
        lab.state.save()
        self.save(lab.state.dir)

    def _initiate(self, lab: Lab, node: str, children: list[tuple[str, str]]) -> None:
        with lab.vici(node) as v:
            for ike, child in children:
                try:
                    log = v.initiate(child, ike, INITIATE_TIMEOUT)
                    self.attempts.append(attempt(node, f"{ike}/{child}", True, "installed", log))
                except InitiateFailed as exc:
                    self.attempts.append(attempt(node, f"{ike}/{child}", False, str(exc), exc.log))
                    if find_ike(v.sas(), ike) is None:
                        break  # no IKE_SA: the other children would fail the same way

    def _not_installed(self, lab: Lab, node: str, config: dict[str, Any],
                       starts: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
        with lab.vici(node) as v:
            have = [(frozenset(ch.get("local-ts", [])), frozenset(ch.get("remote-ts", [])))
                    for _, ch in installed(v.sas())]
        out = []
        for cname, chname, action in starts:
            child = config["connections"][cname]["children"][chname]
            key = (frozenset(child.get("local_ts", [])), frozenset(child.get("remote_ts", [])))
            if key not in have:
                out.append((cname, chname, action))
        return out

    def control_plane(self, lab: Lab, report: CheckReport, tunnel: str, rekey: bool) -> None:
        """Both ends, CHILD_SAs matched by traffic selectors (the user's names are theirs);
        failures explained from the daemons' logs and the static advice."""
        own_check.control_plane(lab, report, tunnel, rekey, described=self.describe(),
                                attempts=self.attempts, advice=self.advice,
                                addresses=self.addresses(lab))


def attempt(node: str, what: str, ok: bool, message: str, log: list[str] | None = None) -> dict:
    return {"node": node, "child": what, "ok": ok, "message": message, "log": (log or [])[-40:]}


def read_user_file(path: Path, option: str) -> str:
    """A file the user named with `option`: unreadable or not UTF-8 is a LabError naming it."""
    return read_text(path, "the file", f"{option} {path}")
