"""Rendering: what the templates produce for each side, checked by parsing it back."""

from __future__ import annotations

import stat

import pytest

from lab.dataplane import Dataplane
from lab.dpd import dpd_schedule, retransmit_for, retransmit_total
from lab.errors import LabError
from lab.plan import build_plan
from lab.render import render_gateway, write_configs
from lab.spec import load_spec, parse_spec
from lab.swanctl import parse, secret_bytes, shared_secrets
from tests.conftest import EXAMPLES
from tests.test_spec import spec

LIBIPSEC = Dataplane("libipsec", "test")
KERNEL = Dataplane("kernel", "test")


def rendered(data, dataplane=LIBIPSEC):
    plan = build_plan(parse_spec(data) if isinstance(data, dict) else data, "t", dataplane)
    return plan, {gw.node: render_gateway(plan, gw, f"/run/x/{gw.node}") for gw in plan.gateways}


def test_proposals_hold_exactly_the_spec_algorithms():
    _, files = rendered(spec(ike={"version": "v2", "encryption": "AES-256", "integrity": "SHA512",
                                  "dh_group": "DH24"},
                             ipsec={"encryption": "3DES", "integrity": "MD5", "pfs": "DH5"}))
    for node in ("vpngw", "cgw1"):
        conn = parse(files[node]["swanctl.conf"])["connections"]["t1"]
        assert conn["proposals"] == ["aes256-sha512-modp2048s256"]
        child = conn["children"]["t1-m1"]
        assert child["esp_proposals"] == ["3des-md5-modp1536"]
        assert conn["version"] == "2"


def test_no_pfs_means_no_dh_in_esp():
    _, files = rendered(spec())
    child = parse(files["vpngw"]["swanctl.conf"])["connections"]["t1"]["children"]["t1-m1"]
    assert child["esp_proposals"] == ["aes128-sha1"]


def test_one_child_per_mapping_mirrored_on_the_customer():
    data = spec(spd_rules=[{"local": ["10.0.0.0/24", "10.0.1.0/24"],
                            "peer": ["192.168.0.0/24", "192.168.1.0/24"]}])
    _, files = rendered(data)
    cloud = parse(files["vpngw"]["swanctl.conf"])["connections"]["t1"]["children"]
    customer = parse(files["cgw1"]["swanctl.conf"])["connections"]["t1"]["children"]
    assert list(cloud) == ["t1-m1", "t1-m2", "t1-m3", "t1-m4"]
    assert [(c["local_ts"], c["remote_ts"]) for c in cloud.values()] == [
        (["10.0.0.0/24"], ["192.168.0.0/24"]), (["10.0.0.0/24"], ["192.168.1.0/24"]),
        (["10.0.1.0/24"], ["192.168.0.0/24"]), (["10.0.1.0/24"], ["192.168.1.0/24"])]
    assert [(c["remote_ts"], c["local_ts"]) for c in customer.values()] == \
        [(c["local_ts"], c["remote_ts"]) for c in cloud.values()]


def test_ids_and_psk_mirror_and_secret_is_loadable():
    _, files = rendered(spec(ike={"version": "v1", "exchange_mode": "aggressive",
                                  "local_id": {"type": "fqdn", "value": "vpn.cloud.example"},
                                  "peer_id": {"type": "fqdn", "value": "cgw.example"}},
                             pre_shared_key='tricky "key" # with = chars'))
    cloud = parse(files["vpngw"]["swanctl.conf"])
    customer = parse(files["cgw1"]["swanctl.conf"])
    assert cloud["connections"]["t1"]["local"]["id"] == "vpn.cloud.example"
    assert customer["connections"]["t1"]["remote"]["id"] == "vpn.cloud.example"
    assert cloud["connections"]["t1"]["aggressive"] == "yes"
    secret = shared_secrets(cloud)[0]
    assert secret["data"] == b'tricky "key" # with = chars'
    assert sorted(secret["owners"]) == ["cgw.example", "vpn.cloud.example"]
    assert "tricky" not in files["vpngw"]["swanctl.conf"]
    assert "i_dont_care_about_security_and_use_aggressive_mode_psk = yes" in \
        files["vpngw"]["strongswan.conf"]


def test_customer_legacy_ipsec_conf_uses_also_per_mapping():
    data = spec(spd_rules=[{"local": ["10.0.0.0/24"], "peer": ["192.168.0.0/24", "192.168.1.0/24"]}],
                ike={"local_id": {"type": "fqdn", "value": "vpn.cloud.example"}})
    _, files = rendered(data)
    conf = files["cgw1"]["ipsec.conf"]
    assert conf.count("also = t1") == 2
    assert "rightid = @vpn.cloud.example" in conf
    assert "leftsubnet = 192.168.1.0/24" in conf and "rightsubnet = 10.0.0.0/24" in conf
    assert "ike = 3des-sha1-modp768!" in conf
    assert ": PSK 0s" in files["cgw1"]["ipsec.secrets"]
    assert "ipsec.conf" not in files["vpngw"]


def test_customer_overrides_differ_only_where_asked():
    _, files = rendered(spec(customer={"ike": {"encryption": "AES-256"}, "pre_shared_key": "other"}))
    cloud = parse(files["vpngw"]["swanctl.conf"])
    customer = parse(files["cgw1"]["swanctl.conf"])
    assert cloud["connections"]["t1"]["proposals"] == ["3des-sha1-modp768"]
    assert customer["connections"]["t1"]["proposals"] == ["aes256-sha1-modp768"]
    assert shared_secrets(customer)[0]["data"] == b"other"


@pytest.mark.parametrize("negotiation,dataplane,cloud,customer", [
    ("active", LIBIPSEC, "start", "none"),
    ("passive", LIBIPSEC, "none", "start"),
    ("traffic-triggered", KERNEL, "trap", "none"),
    ("traffic-triggered", LIBIPSEC, "none", "none"),
])
def test_start_action_follows_negotiation_type(negotiation, dataplane, cloud, customer):
    _, files = rendered(spec(negotiation_type=negotiation), dataplane)
    got = [parse(files[n]["swanctl.conf"])["connections"]["t1"]["children"]["t1-m1"]["start_action"]
           for n in ("vpngw", "cgw1")]
    assert got == [cloud, customer]


def test_dataplane_selects_the_kernel_plugin():
    _, lib = rendered(spec(), LIBIPSEC)
    _, ker = rendered(spec(), KERNEL)
    assert "kernel-libipsec" in lib["vpngw"]["strongswan.conf"]
    assert "kernel-libipsec" not in ker["vpngw"]["strongswan.conf"]


def test_dpd_settings():
    _, files = rendered(spec(ike={"version": "v1"}, dpd={"timeout": 45, "action": "retry"}))
    conn = parse(files["vpngw"]["swanctl.conf"])["connections"]["t1"]
    assert (conn["dpd_delay"], conn["dpd_timeout"]) == ("7s", "45s")
    assert conn["children"]["t1-m1"]["dpd_action"] == "restart"
    _, off = rendered(spec(dpd={"enabled": False}))
    conn = parse(off["vpngw"]["swanctl.conf"])["connections"]["t1"]
    assert "dpd_delay" not in conn and conn["children"]["t1-m1"]["dpd_action"] == "none"


@pytest.mark.parametrize("timeout", [30, 45, 60])
def test_ikev2_retransmit_schedule_ends_dpd_at_the_timeout(timeout):
    schedule = dpd_schedule(timeout, "v2")
    first, base, tries = retransmit_for([schedule])
    assert abs(schedule.delay + retransmit_total(first, base, tries) - timeout) < 0.1


def test_ikev2_retransmit_in_strongswan_conf():
    _, files = rendered(spec(ike={"version": "v2"}))
    assert "retransmit_timeout = 3.52" in files["vpngw"]["strongswan.conf"]
    _, v1 = rendered(spec(ike={"version": "v1"}))
    assert "retransmit_timeout" not in v1["vpngw"]["strongswan.conf"]


def test_a_time_scale_scales_the_retransmits_a_reauthentication_must_fit_into():
    """IKEv1 at --time-scale 0.1: IKE_SA 6 s, a tenth of it 1 s; strongSwan's first retransmit
    after 4 s would let one lost Main Mode packet take the SA and its CHILD_SAs down."""
    plan = build_plan(parse_spec(spec(ike={"version": "v1", "sa_lifetime": 60})), "t", LIBIPSEC,
                      time_scale=0.1)
    for gw in plan.gateways:
        assert gw.retransmit == (0.5, 1.8, 5)
    cloud = plan.gateways[0].connections[0]
    assert (cloud.ike_rekey_time, cloud.ike_over_time) == (5, 3)
    assert plan.gateways[0].retransmit[0] < cloud.ike_over_time
    for gw in plan.gateways:
        conf = render_gateway(plan, gw, f"/run/x/{gw.node}")["strongswan.conf"]
        assert "retransmit_timeout = 0.5" in conf and "retransmit_tries = 5" in conf


def test_a_time_scale_keeps_a_margin_a_renegotiation_fits_into():
    """Scaled lifetimes keep 3 s between the rekey and the hard end, and the start's spread stays
    the scaled tenth: a 6 s IKE_SA rekeys at 4-5 s and ends at 8 s, not at 6 s."""
    plan = build_plan(parse_spec(spec(ike={"version": "v2", "sa_lifetime": 60},
                                      ipsec={"sa_lifetime": 180})), "t", LIBIPSEC, time_scale=0.1)
    c = plan.gateways[0].connections[0]
    assert (c.ike_rekey_time, c.ike_over_time, c.ike_rand_time) == (5, 3, 1)
    assert (c.child_rekey_time, c.child_life_time, c.child_rand_time) == (16, 19, 2)
    conf = render_gateway(plan, plan.gateways[0], "/run/x/vpngw")["swanctl.conf"]
    assert "over_time = 3s" in conf and "rand_time = 1s" in conf and "rand_time = 2s" in conf
    unscaled = build_plan(parse_spec(spec()), "t", LIBIPSEC).gateways[0]
    assert unscaled.connections[0].ike_rand_time is None
    assert "rand_time" not in render_gateway(plan, unscaled, "/run/x/vpngw")["swanctl.conf"]


def test_lab_refuses_sm4_with_a_clear_message():
    with pytest.raises(LabError, match="SM4 is not supported by the strongSwan endpoints"):
        rendered(spec(ike={"encryption": "SM4"}))


def test_written_files_are_private(tmp_path):
    plan = build_plan(load_spec(EXAMPLES / "default.yaml"), "t", LIBIPSEC)
    files = write_configs(plan, tmp_path / "out", lambda node: f"/run/x/{node}")
    assert {p.name for p in files} == {"strongswan.conf", "swanctl.conf", "ipsec.conf",
                                       "ipsec.secrets", "gateway.nft"}
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_plan_gives_gateways_an_address_in_each_local_selector():
    plan, _ = rendered(load_spec(EXAMPLES / "spd-multi-mapping.yaml"))
    lan = {str(a) for a in plan.node("vpngw").iface("eth1").addresses}
    assert {"10.0.0.1/16", "10.0.1.1/24", "10.0.2.1/24"} <= lan
    assert [(str(p.vpc_addr), str(p.idc_addr)) for p in plan.probes] == [
        ("10.0.0.10", "192.168.0.10"), ("10.0.0.10", "192.168.1.10"),
        ("10.0.1.10", "192.168.2.10"), ("10.0.2.10", "192.168.2.10")]


def test_swanctl_parser_errors_and_secrets():
    with pytest.raises(LabError, match="not closed"):
        parse("connections {\n a {\n")
    with pytest.raises(LabError, match=":2: cannot read"):
        parse("a {\n what is this\n}\n")
    assert secret_bytes("0x6869") == b"hi" and secret_bytes("plain") == b"plain"
