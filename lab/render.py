"""Plan -> strongSwan (or libreswan) configuration files, through the jinja2 templates in `configs/templates`.

Files holding pre-shared keys are written mode 0600 in 0700 directories.
"""

from __future__ import annotations

import base64
import functools
import ipaddress
import os
from collections.abc import Callable
from pathlib import Path

import jinja2

from lab.files import write_private
from lab.libreswan import algorithms, conf
from lab.plan import WAN, Gateway, LabPlan, Node

GATEWAY_NFT = "gateway.nft"  # the gateway's forwarding rules (applied by lab.lifecycle)
CONFIGS = Path(os.environ.get("IPSEC_LAB_CONFIGS", Path(__file__).resolve().parent.parent / "configs"))


@functools.cache  # compiling the templates costs ~20 ms each; the matrix renders per case
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(CONFIGS / "templates"),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["b64"] = lambda s: base64.b64encode(s.encode()).decode()
    env.filters["libreswan"] = algorithms.translate
    env.filters["has_dh"] = algorithms.has_dh
    env.filters["libreswan_id"] = conf.identity
    env.filters["libreswan_dpd"] = conf.dpd_action
    return env


def render_gateway(plan: LabPlan, gw: Gateway, run_dir: str) -> dict[str, str]:
    """The files one gateway needs; `run_dir` is where they live as the daemon sees them."""
    env = environment()
    context = {"lab": plan.name, "gw": gw, "run_dir": run_dir}
    if gw.pluto:  # libreswan's own dialect; pluto is started with its paths (lab.libreswan)
        sources = {ch.name: source_ip(plan.node(gw.node), ch.local_ts)
                   for c in gw.connections for ch in c.children}
        return {
            "ipsec.conf": env.get_template("libreswan-ipsec.conf.j2").render(
                {**context, "sources": sources}),
            "ipsec.secrets": env.get_template("libreswan-ipsec.secrets.j2").render(context),
            GATEWAY_NFT: env.get_template("gateway.nft.j2").render({**context, "wan": WAN}),
        }
    files = {
        "strongswan.conf": env.get_template("strongswan.conf.j2").render(context),
        "swanctl.conf": env.get_template("swanctl.conf.j2").render(context),
        GATEWAY_NFT: env.get_template("gateway.nft.j2").render({**context, "wan": WAN}),
    }
    if gw.side == "customer":
        files["ipsec.conf"] = env.get_template("ipsec.conf.j2").render(context)
        files["ipsec.secrets"] = env.get_template("ipsec.secrets.j2").render(context)
    return files


def source_ip(node: Node, subnet: object) -> str | None:
    """The gateway's own address inside a mapping's local subnet: libreswan's leftsourceip=,
    without which its updown script routes nothing into the tunnel."""
    net = ipaddress.ip_network(str(subnet), strict=False)
    for iface in node.interfaces:
        for address in iface.addresses:
            if address.ip in net:
                return str(address.ip)
    return None


def render_nat(plan: LabPlan, node: Node) -> str:
    """A NAT router's nftables (its `nat` translation)."""
    return environment().get_template("nat.nft.j2").render({"lab": plan.name, "node": node,
                                                            "wan": WAN})


@functools.cache
def report_environment() -> jinja2.Environment:
    """The HTML reports' templates (`configs/reports/`), kept apart from the gateways' configs:
    autoescaped, since reports carry names and log lines from daemons and users."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(CONFIGS / "reports"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def write_configs(plan: LabPlan, out: Path, run_dir: Callable[[str], str]) -> list[Path]:
    """Render every gateway into `out/<node>/`; returns the files written."""
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    written = []
    for gw in plan.gateways:
        for name, text in render_gateway(plan, gw, run_dir(gw.node)).items():
            path = out / gw.node / name
            write_private(path, text)
            written.append(path)
    return written
