"""The spec's rules, as the console states them (seed document) and the API ranges."""

from __future__ import annotations

import copy

import pytest
import yaml

from lab.spec import SpecInvalid, dump_spec, load_spec, parse_spec, unset_keys
from lab.spec.rules import unsupported
from tests.conftest import EXAMPLES

BASE = {
    "vpn_gateway": {"public_ip": "203.0.113.1", "vpc_cidr": "10.0.0.0/16"},
    "tunnels": [{
        "name": "t1",
        "customer_gateway": {"public_ip": "198.51.100.2"},
        "pre_shared_key": "k",
        "spd_rules": [{"local": ["10.0.1.0/24"], "peer": ["192.168.1.0/24"]}],
    }],
}

SEED_EXISTING = [
    {"local": ["10.0.0.0/24"], "peer": ["192.168.0.0/24", "192.168.1.0/24"]},
    {"local": ["10.0.1.0/24"], "peer": ["192.168.2.0/24"]},
    {"local": ["10.0.2.0/24"], "peer": ["192.168.2.0/24"]},
]


def spec(**tunnel_changes) -> dict:
    data = copy.deepcopy(BASE)
    data["tunnels"][0].update(tunnel_changes)
    return data


def problems(data: dict) -> list[str]:
    with pytest.raises(SpecInvalid) as info:
        parse_spec(data)
    return info.value.problems


def with_second_tunnel(mapping: dict) -> dict:
    data = spec(spd_rules=SEED_EXISTING)
    data["tunnels"].append({"name": "t2", "customer_gateway": {"public_ip": "198.51.100.3"},
                            "pre_shared_key": "k2", "spd_rules": [mapping]})
    return data


def test_seed_example_rejects_the_overlapping_mapping():
    found = problems(with_second_tunnel({"local": ["10.0.0.0/24"], "peer": ["192.168.1.0/24"]}))
    assert len(found) == 1
    assert found[0].startswith("tunnels[1].spd_rules[0]: mapping 10.0.0.0/24-192.168.1.0/24 overlaps")


def test_seed_example_accepts_the_disjoint_mapping():
    parsed = parse_spec(with_second_tunnel({"local": ["10.0.1.0/24"], "peer": ["192.168.1.0/24"]}))
    assert len(parsed.tunnels[0].mappings()) == 4


def test_overlap_within_one_tunnel_and_partial_overlap():
    found = problems(spec(spd_rules=[{"local": ["10.0.0.0/16"], "peer": ["192.168.0.0/16"]},
                                     {"local": ["10.0.3.0/24"], "peer": ["192.168.9.0/24"]}]))
    assert "tunnels[0].spd_rules[1]" in found[0]


def test_every_local_peer_pair_is_a_mapping_in_order():
    parsed = parse_spec(spec(spd_rules=SEED_EXISTING))
    assert [f"{lo}-{pe}" for lo, pe in parsed.tunnels[0].mappings()] == [
        "10.0.0.0/24-192.168.0.0/24", "10.0.0.0/24-192.168.1.0/24",
        "10.0.1.0/24-192.168.2.0/24", "10.0.2.0/24-192.168.2.0/24",
    ]


def test_at_most_200_mappings_per_gateway():
    rules = [{"local": [f"10.{i}.0.0/24"], "peer": [f"192.168.{j}.0/24" for j in range(10)]}
             for i in range(21)]
    found = problems(spec(spd_rules=rules))
    assert found == ["tunnels: 210 SPD mappings on one VPN gateway; at most 200 (use "
                     "destination-route tunnels for more)"]
    parse_spec(spec(spd_rules=rules[:20]))  # exactly 200 is fine


@pytest.mark.parametrize("timeout,ok", [(29, False), (30, True), (60, True), (61, False)])
def test_dpd_timeout_range(timeout, ok):
    data = spec(dpd={"timeout": timeout})
    if ok:
        assert parse_spec(data).tunnels[0].dpd.timeout == timeout
    else:
        assert problems(data) == [f"tunnels[0].dpd.timeout: must be 30-60 seconds (got {timeout})"]


def test_name_length():
    parse_spec(spec(name="n" * 60))
    assert problems(spec(name="n" * 61)) == ["tunnels[0].name: at most 60 characters (got 61)"]


@pytest.mark.parametrize("local,peer,needle", [
    ("10.0.9.9", "169.254.128.2", "conflicts with the VPC CIDR"),
    ("169.254.128.1", "192.168.1.7", "conflicts with an IDC CIDR"),
    ("169.254.128.1", "169.254.128.1", "must differ from health_check.peer_ip"),
    ("224.0.0.1", "169.254.128.2", "multicast, broadcast or loopback"),
    ("255.255.255.255", "169.254.128.2", "multicast, broadcast or loopback"),
    ("127.0.0.1", "169.254.128.2", "multicast, broadcast or loopback"),
])
def test_health_check_addresses(local, peer, needle):
    found = problems(spec(health_check={"enabled": True, "local_ip": local, "peer_ip": peer}))
    assert any(needle in p for p in found), found


def test_health_check_needs_addresses_and_ranges():
    found = problems(spec(health_check={"enabled": True, "interval_ms": 999, "threshold": 9}))
    assert "tunnels[0].health_check.local_ip: required when the health check is enabled" in found
    assert "tunnels[0].health_check.interval_ms: must be 1000-5000 (got 999)" in found
    assert "tunnels[0].health_check.threshold: must be 3-8 (got 9)" in found


def test_health_check_valid():
    parsed = parse_spec(spec(health_check={"enabled": True, "local_ip": "169.254.128.1",
                                           "peer_ip": "169.254.128.2"}))
    assert parsed.tunnels[0].health_check.enabled


def test_console_and_api_spellings_are_one_value():
    parsed = parse_spec(spec(ike={"encryption": "AES-CBC-256", "integrity": "SHA",
                                  "dh_group": "GROUP14", "version": "IKEV2"},
                             ipsec={"pfs": "DH-GROUP2", "integrity": "SHA-256"},
                             negotiation_type="flowTrigger", dpd={"action": "restart"}))
    t = parsed.tunnels[0]
    assert (t.ike.encryption, t.ike.integrity, t.ike.dh_group, t.ike.version) == \
        ("AES-256", "SHA1", "DH14", "v2")
    assert (t.ipsec.pfs, t.ipsec.integrity) == ("DH2", "SHA256")
    assert (t.negotiation_type, t.dpd.action) == ("traffic-triggered", "retry")


def test_api_defaults():
    t = parse_spec(BASE).tunnels[0]
    assert (t.ike.version, t.ike.encryption, t.ike.integrity, t.ike.dh_group) == \
        ("v1", "3DES", "SHA1", "DH1")
    assert (t.ipsec.encryption, t.ipsec.integrity, t.ipsec.pfs, t.ipsec.sa_lifetime) == \
        ("AES-128", "SHA1", "disable", 14400)
    assert (t.dpd.enabled, t.dpd.timeout, t.health_check.enabled) == (True, 30, False)
    assert t.negotiation_type == "active"


def test_menu_error_names_field_and_allowed_values():
    assert problems(spec(ipsec={"encryption": "AES-512"})) == [
        "tunnels[0].ipsec.encryption: must be one of AES-128, AES-192, AES-256, 3DES, DES, SM4 "
        "(got 'AES-512')"]


def test_lifetime_ranges_and_unknown_fields():
    found = problems(spec(ike={"sa_lifetime": 59}, ipsec={"sa_lifetime_kb": 1}, colour="red"))
    assert any(p.startswith("tunnels[0].ike.sa_lifetime: Input should be greater than or equal "
                            "to 60") for p in found)
    assert any(p.startswith("tunnels[0].ipsec.sa_lifetime_kb:") for p in found)
    assert "tunnels[0].colour: unknown field (not part of the tunnel spec)" in found


def test_identity_rules():
    found = problems(spec(ike={"local_id": {"type": "fqdn"},
                               "peer_id": {"type": "address", "value": "not-an-ip"}}))
    assert any(p.startswith("tunnels[0].ike.local_id.value: an FQDN identity") for p in found)
    assert any(p.startswith("tunnels[0].ike.peer_id.value: an address identity") for p in found)


def test_public_addresses_stay_in_documentation_ranges():
    data = spec(customer_gateway={"public_ip": "10.1.1.1"})
    assert problems(data)[0].startswith("tunnels[0].customer_gateway.public_ip: 10.1.1.1 must be "
                                        "in a documentation range")


def test_duplicate_names_and_gateways():
    data = copy.deepcopy(BASE)
    data["tunnels"].append(copy.deepcopy(data["tunnels"][0]))
    data["tunnels"][1]["spd_rules"] = [{"local": ["10.0.7.0/24"], "peer": ["192.168.7.0/24"]}]
    found = problems(data)
    assert any("tunnels[1].name: tunnel name 't1' is used twice" in p for p in found)
    assert any(p.startswith("tunnels[1].customer_gateway.public_ip: 198.51.100.2 is already used")
               for p in found)


def test_sm4_sm3_are_valid_but_unsupported():
    parsed = parse_spec(spec(ike={"encryption": "SM4"}, ipsec={"integrity": "SM3"}))
    assert unsupported(parsed) == [
        "tunnels[0].ike.encryption: SM4 is not supported by the strongSwan endpoints",
        "tunnels[0].ipsec.integrity: SM3 is not supported by the strongSwan endpoints",
    ]


def test_psk_from_environment(monkeypatch):
    monkeypatch.setenv("MY_PSK", "from-env")
    assert parse_spec(spec(pre_shared_key="env:MY_PSK")).tunnels[0].pre_shared_key \
        .get_secret_value() == "from-env"
    monkeypatch.delenv("MY_PSK")
    assert problems(spec(pre_shared_key="env:MY_PSK")) == [
        "tunnels[0].pre_shared_key: environment variable MY_PSK is not set"]


def test_psk_not_in_repr():
    parsed = parse_spec(spec(pre_shared_key="super-secret-key"))
    assert "super-secret-key" not in repr(parsed)


def test_dump_round_trips():
    parsed = parse_spec(spec(spd_rules=SEED_EXISTING))
    assert parse_spec(yaml.safe_load(yaml.safe_dump(dump_spec(parsed)))) == parsed


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_examples_are_valid(path, monkeypatch):
    monkeypatch.setenv("IPSEC_LAB_PSK_V1MAIN", "x")
    assert load_spec(path).tunnels


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_examples_check_without_their_keys(path, monkeypatch):
    """What `validate` does: no environment needed, an unset env: key is only reported."""
    monkeypatch.delenv("IPSEC_LAB_PSK_V1MAIN", raising=False)
    parsed = load_spec(path, need_keys=False)
    expected = [("tunnels[0].pre_shared_key", "IPSEC_LAB_PSK_V1MAIN")] \
        if path.name == "ikev1-main.yaml" else []
    assert unset_keys(parsed) == expected


def test_tunnel_name_and_fqdn_rules():
    assert problems(spec(name="a\nb; rm -rf /"))[0].startswith(
        "tunnels[0].name: must be letters, digits, '.', '_' and '-' only")
    assert problems(spec(name="include")) == [
        "tunnels[0].name: 'include' is reserved in swanctl.conf (it starts an include statement)"]
    parse_spec(spec(name="idc-shanghai.v2_a"))
    for fqdn in ("cgw.example\n", "1.2.3.4", "a b.example"):
        found = problems(spec(ike={"local_id": {"type": "fqdn", "value": fqdn}}))
        assert found[0].startswith("tunnels[0].ike.local_id.value: an FQDN identity"), found


@pytest.mark.parametrize("path", sorted((EXAMPLES / "invalid").glob("*.yaml")), ids=lambda p: p.name)
def test_invalid_examples_fail_with_one_named_rule(path):
    with pytest.raises(SpecInvalid) as info:
        load_spec(path)
    assert len(info.value.problems) == 1
    assert info.value.problems[0].startswith("tunnels")


def route_spec(routes, **tunnel):
    data = spec(communication_mode="destination-route", spd_rules=[], **tunnel)
    data["vpn_gateway"]["routes"] = routes
    return data


def test_destination_route_tunnel_takes_routes_from_the_route_table():
    parsed = parse_spec(route_spec([{"destination": "172.16.1.0/24", "tunnel": "t1"},
                                    {"destination": "172.16.2.0/24", "tunnel": "t1"}]))
    assert [f"{lo}-{pe}" for lo, pe in parsed.selectors(parsed.tunnels[0])] == [
        "10.0.0.0/16-172.16.1.0/24", "10.0.0.0/16-172.16.2.0/24"]


def test_a_destination_route_tunnel_without_routes_is_valid_but_not_runnable():
    from lab.dataplane import Dataplane
    from lab.errors import LabError
    from lab.plan import build_plan

    parsed = parse_spec(route_spec([]))
    with pytest.raises(LabError, match="tunnels\\[0\\]: destination-route tunnel 't1' has no route"):
        build_plan(parsed, "t", Dataplane("libipsec", "test"))


@pytest.mark.parametrize("routes,needle", [
    ([{"destination": "172.16.0.0/16", "tunnel": "t1"}, {"destination": "172.16.1.0/24", "tunnel": "t1"}],
     "vpn_gateway.routes[1].destination: 172.16.1.0/24 overlaps vpn_gateway.routes[0]"),
    ([{"destination": "10.0.5.0/24", "tunnel": "t1"}], "overlaps the VPC CIDR 10.0.0.0/16"),
    ([{"destination": "172.16.1.0/24", "tunnel": "nope"}],
     "vpn_gateway.routes[0].tunnel: no tunnel named 'nope'"),
])
def test_route_table_rules(routes, needle):
    assert any(needle in p for p in problems(route_spec(routes))), problems(route_spec(routes))


def test_route_must_not_overlap_an_spd_mapping():
    data = copy.deepcopy(BASE)
    data["tunnels"].append({"name": "r", "customer_gateway": {"public_ip": "198.51.100.3"},
                            "pre_shared_key": "k", "communication_mode": "destination-route"})
    data["vpn_gateway"]["routes"] = [{"destination": "192.168.1.0/25", "tunnel": "r"}]
    assert any("overlaps the SPD mapping 10.0.1.0/24-192.168.1.0/24" in p for p in problems(data))
