"""Destination-route tunnels as the cloud negotiates them: on the kernel dataplane one CHILD_SA
0.0.0.0/0 === 0.0.0.0/0 bound to an XFRM interface per tunnel, the routed destinations over it;
on kernel-libipsec one CHILD_SA per routed destination (it has no XFRM interfaces)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lab import lifecycle
from lab.backends import get_backend
from lab.backends.docker.topology import segments
from lab.check import run_check
from lab.customer import OwnConfig
from lab.dataplane import Dataplane
from lab.plan import build_plan
from lab.render import render_gateway
from lab.spec import load_spec, parse_spec
from lab.swanctl import parse
from tests.conftest import EXAMPLES

KERNEL = Dataplane("kernel", "test")
LIBIPSEC = Dataplane("libipsec", "test")
MIXED = EXAMPLES / "destination-route-mixed.yaml"


def render_plan(plan):
    return {gw.node: render_gateway(plan, gw, f"/run/x/{gw.node}") for gw in plan.gateways}


def test_on_the_kernel_a_destination_route_tunnel_is_one_0_0_sa_on_an_xfrm_interface():
    plan = build_plan(load_spec(MIXED), "rb", KERNEL)
    files = render_plan(plan)
    for node, routed in (("vpngw", ["172.16.10.0/24", "172.16.20.0/24"]),
                         ("cgw1", ["10.0.0.0/16"])):
        conf = parse(files[node]["swanctl.conf"])
        conn = next(c for name, c in conf["connections"].items() if name == "tunnel-route")
        assert list(conn["children"]) == ["tunnel-route-r1"]
        child = conn["children"]["tunnel-route-r1"]
        assert (child["local_ts"], child["remote_ts"]) == (["0.0.0.0/0"], ["0.0.0.0/0"])
        assert (child["if_id_in"], child["if_id_out"]) == ("1", "1")
        n = next(x for x in plan.nodes if x.name == node)
        assert [i.if_id for i in n.interfaces if i.name == "xfrm1"] == [1]
        gw = next(g for g in plan.gateways if g.node == node)
        assert [(str(r.destination), r.device) for r in gw.route_table] == \
            [(d, "xfrm1") for d in routed]
    # the SPD tunnel beside it is policy-based as before, with no interface ID
    spd = parse(files["vpngw"]["swanctl.conf"])["connections"]["tunnel-spd"]["children"]
    assert "if_id_in" not in spd["tunnel-spd-m1"]
    # every probe of the route-based tunnel goes through its one CHILD_SA; the unrouted
    # destination is probed towards it only (a 0/0 SA takes any source from the IDC side)
    mine = [p for p in plan.probes if p.tunnel == "tunnel-route"]
    assert {p.child for p in mine if p.delivered} == {"tunnel-route-r1"}
    assert [p.directions for p in mine if not p.delivered] == [("vpc->idc",)]


def test_on_libipsec_destinations_stay_one_sa_each():
    plan = build_plan(load_spec(MIXED), "rb", LIBIPSEC)
    conf = parse(render_plan(plan)["vpngw"]["swanctl.conf"])
    children = conf["connections"]["tunnel-route"]["children"]
    assert {k: (c["local_ts"], c["remote_ts"]) for k, c in children.items()} == {
        "tunnel-route-r1": (["10.0.0.0/16"], ["172.16.10.0/24"]),
        "tunnel-route-r2": (["10.0.0.0/16"], ["172.16.20.0/24"])}
    assert not any(i.if_id for n in plan.nodes for i in n.interfaces)


def test_the_customer_ipsec_conf_says_how_to_make_the_interface():
    files = render_plan(build_plan(load_spec(MIXED), "rb", KERNEL))
    text = files["cgw1"]["ipsec.conf"]
    assert "leftsubnet = 0.0.0.0/0" in text and "if_id_in = 1" in text
    assert "ip link add xfrm1 type xfrm dev <wan> if_id 1" in text


def test_docker_networks_leave_the_xfrm_interfaces_out():
    plan = build_plan(load_spec(MIXED), "rb", KERNEL)
    assert not [s for s in segments(plan) if any(i == "xfrm1" for i, _ in s.members.values())]


def _spec(tmp_path: Path, version: int) -> Path:
    data = {"vpn_gateway": {"public_ip": "203.0.113.1", "vpc_cidr": "10.0.0.0/16",
                            "routes": [{"destination": "172.16.10.0/24", "tunnel": "rt"}]},
            "tunnels": [{"name": "rt", "pre_shared_key": "route-based-psk",
                         "customer_gateway": {"public_ip": "198.51.100.2",
                                              "idc_cidrs": ["172.16.10.0/24"]},
                         "communication_mode": "destination-route", "negotiation_type": "passive",
                         "ike": {"version": f"v{version}", "encryption": "AES-128",
                                 "integrity": "SHA256", "dh_group": "DH14"},
                         "ipsec": {"encryption": "AES-128", "integrity": "SHA256", "pfs": "DH14"}}]}
    parse_spec(data)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


NARROW = """connections {{
  cloud {{
    version = {version}
    local_addrs = 198.51.100.2
    remote_addrs = 203.0.113.1
    proposals = aes128-sha256-modp2048
    local {{
      auth = psk
    }}
    remote {{
      auth = psk
    }}
    children {{
      lan {{
        local_ts = 172.16.10.0/24
        remote_ts = 10.0.0.0/16
        esp_proposals = aes128-sha256-modp2048
        start_action = start
      }}
    }}
  }}
}}
secrets {{
  ike {{
    secret = route-based-psk
  }}
}}
"""


@pytest.mark.integration
@pytest.mark.kernel
@pytest.mark.parametrize("version", [2, 1])
def test_a_policy_based_customer_against_the_0_0_cloud_is_narrowed(backend, tmp_path, version):
    """A customer proposing its subnets (policy-based) to the cloud's 0/0: the lab's cloud is
    strongSwan, which narrows to the proposal as responder in IKEv2 and in IKEv1 alike."""
    conf = tmp_path / "swanctl.conf"
    conf.write_text(NARROW.format(version=version))
    name = f"rb{version}"
    lifecycle.down(name)
    try:
        lifecycle.up(_spec(tmp_path, version), name, backend, customer=OwnConfig.load(conf))
        lab = lifecycle.attach(name)
        report = run_check(lab)
        assert report.ok, [f for f in report.findings if not f.ok]
        with lab.vici("vpngw") as v:
            installed = [(c["local-ts"], c["remote-ts"]) for sa in v.sas()
                         for c in sa["child-sas"].values() if c["state"] == "INSTALLED"]
        assert installed == [(["10.0.0.0/16"], ["172.16.10.0/24"])], installed
        rows = [f for f in report.findings if f.check == "CHILD_SA installed"]
        assert len(rows) == 2 and all(f.ok for f in rows)
    finally:
        lifecycle.down(name)
        assert get_backend(backend).leftovers(name) == []
