"""Cloud API JSON <-> spec: import of the samples, API-named errors, round trips."""

from __future__ import annotations

import copy
import json

import pytest

from lab.cloudapi import PSK_PLACEHOLDER, export_tunnel, export_tunnel_with_notes, import_tunnel
from lab.errors import LabError
from lab.spec import SpecInvalid, dump_spec, parse_spec

from .conftest import EXAMPLES

API = EXAMPLES / "api"


def load(name: str) -> dict:
    return json.loads((API / name).read_text())


def test_create_body_imports_with_notes():
    spec, notes = import_tunnel(load("create-vpn-connection.json"))
    parsed = parse_spec(spec)
    t = parsed.tunnels[0]
    assert t.name == "idc-shanghai"
    assert (t.ike.version, t.ike.encryption, t.ike.integrity, t.ike.dh_group) == ("v1", "AES-128",
                                                                                   "SHA1", "DH2")
    assert (t.ipsec.pfs, t.ipsec.sa_lifetime, t.ipsec.sa_lifetime_kb) == ("DH2", 3600, 1843200)
    assert t.dpd.action == "retry" and t.dpd.timeout == 30
    assert len(t.mappings()) == 3
    assert str(parsed.vpn_gateway.public_ip) == "203.0.113.1"
    assert any("vpc_cidr" in n and "lab default" in n for n in notes)
    assert any(n.startswith("customer_gateway.idc_cidrs") for n in notes)


def test_describe_needs_a_choice_when_several():
    with pytest.raises(LabError) as exc:
        import_tunnel(load("describe-vpn-connections.json"))
    assert "idc-guangzhou (vpnx-4kl5mn6o)" in str(exc.value)
    assert "idc-beijing-sm (vpnx-7pq8rs9t)" in str(exc.value)
    with pytest.raises(LabError, match="--connection"):
        import_tunnel(load("describe-vpn-connections.json"), connection="nope")


def test_describe_entry_by_name_fqdn_and_health_check():
    spec, notes = import_tunnel(load("describe-vpn-connections.json"), connection="idc-guangzhou")
    t = parse_spec(spec).tunnels[0]
    assert t.ike.local_id.type == "fqdn" and t.ike.local_id.value == "vpngw.cloud.example"
    assert t.ike.peer_id.value == "cgw.idc.example"
    assert t.health_check.enabled and str(t.health_check.local_ip) == "169.254.128.10"
    assert t.health_check.interval_ms == 5000
    assert any("customer_gateway.public_ip" in n and "CustomerGatewayId cgw-9wx0yz1a" in n
               for n in notes)


def test_describe_entry_by_id_sm_real_addresses_mapped():
    spec, notes = import_tunnel(load("describe-vpn-connections.json"), connection="vpnx-7pq8rs9t",
                                psk="some-psk")
    t = parse_spec(spec).tunnels[0]
    assert (t.ike.encryption, t.ike.integrity, t.ipsec.encryption) == ("SM4", "SM3", "SM4")
    assert t.negotiation_type == "traffic-triggered" and t.ike.exchange_mode == "aggressive"
    assert not t.dpd.enabled and t.ipsec.pfs == "disable"
    assert spec["vpn_gateway"]["public_ip"] == "203.0.113.1"
    assert str(t.customer_gateway.public_ip) == "198.51.100.2"
    text = json.dumps(spec)
    assert "129.226.50.10" not in text and "49.51.60.20" not in text
    assert any("129.226.50.10 is a real public address" in n for n in notes)


def test_describe_without_psk_asks_for_one():
    with pytest.raises(SpecInvalid) as exc:
        import_tunnel(load("describe-vpn-connections.json"), connection="idc-beijing-sm")
    assert any(p.startswith("PreShareKey:") and "--psk-env" in p for p in exc.value.problems)


def test_static_route_with_idc_option_adds_routes():
    spec, notes = import_tunnel(load("create-static-route.json"), idc_cidrs=["192.168.50.0/24"],
                                customer_gateway_ip="198.51.100.7")
    parsed = parse_spec(spec)
    assert parsed.tunnels[0].communication_mode == "destination-route"
    assert [str(r.destination) for r in parsed.vpn_gateway.routes] == ["192.168.50.0/24"]
    assert str(parsed.tunnels[0].customer_gateway.public_ip) == "198.51.100.7"
    assert any("--customer-gateway-ip" in n for n in notes)


def test_real_option_address_is_mapped():
    spec, notes = import_tunnel(load("create-static-route.json"), vpn_gateway_ip="81.70.1.2")
    assert spec["vpn_gateway"]["public_ip"] == "203.0.113.1"
    assert any("81.70.1.2 is a real public address" in n for n in notes)


def test_psk_env_reference(monkeypatch):
    monkeypatch.setenv("LAB_TEST_PSK", "from-env")
    spec, notes = import_tunnel(load("create-vpn-connection.json"), psk="env:LAB_TEST_PSK")
    assert spec["tunnels"][0]["pre_shared_key"] == "env:LAB_TEST_PSK"
    assert any("environment variable LAB_TEST_PSK" in n for n in notes)


@pytest.mark.parametrize(("section", "field", "value", "expected"), [
    ("IKEOptionsSpecification", "DhGroupName", "GROUP3",
     "IKEOptionsSpecification.DhGroupName: must be one of GROUP1, GROUP2, GROUP5, GROUP14, GROUP24, "
     "GROUP15, GROUP16, GROUP19, GROUP20, GROUP21 (got 'GROUP3')"),
    ("IKEOptionsSpecification", "PropoEncryAlgorithm", "AES-128",
     "IKEOptionsSpecification.PropoEncryAlgorithm: must be one of AES-CBC-128"),
    ("IKEOptionsSpecification", "IKESaLifetimeSeconds", 30,
     "IKEOptionsSpecification.IKESaLifetimeSeconds: must be 60-604800 seconds (got 30)"),
    ("IKEOptionsSpecification", "IKEVersion", "IKEV3", "IKEOptionsSpecification.IKEVersion"),
    ("IPSECOptionsSpecification", "PfsDhGroup", "GROUP2",
     "IPSECOptionsSpecification.PfsDhGroup: must be one of NULL, DH-GROUP1"),
    ("IPSECOptionsSpecification", "IntegrityAlgorith", "SHA",
     "IPSECOptionsSpecification.IntegrityAlgorith: must be one of MD5, SHA1"),
    ("IPSECOptionsSpecification", "IPSECSaLifetimeSeconds", 100,
     "IPSECOptionsSpecification.IPSECSaLifetimeSeconds: must be 180-604800 seconds"),
    ("IPSECOptionsSpecification", "IPSECSaLifetimeTraffic", 1000,
     "IPSECOptionsSpecification.IPSECSaLifetimeTraffic: must be 2560-4294967295 KB"),
    (None, "DpdTimeout", "90", "DpdTimeout: must be 30-60 seconds (got '90')"),
    (None, "DpdAction", "hold", "DpdAction: must be one of clear, restart (got 'hold')"),
    (None, "NegotiationType", "auto", "NegotiationType: must be one of active, passive, flowTrigger"),
    (None, "RouteType", "BGP", "RouteType: Bgp (routes learnt over BGP) needs BGP support"),
    (None, "VpnConnectionName", "x" * 61, "VpnConnectionName: at most 60 characters"),
])
def test_out_of_range_values_name_the_api_field(section, field, value, expected):
    data = load("create-vpn-connection.json")
    (data[section] if section else data)[field] = value
    with pytest.raises(SpecInvalid) as exc:
        import_tunnel(data)
    assert any(p.startswith(expected) for p in exc.value.problems), exc.value.problems


def test_health_check_config_ranges_and_spd_cidrs():
    data = load("create-static-route.json")
    data["HealthCheckConfig"]["ProbeInterval"] = 500
    data["HealthCheckConfig"]["ProbeThreshold"] = 9
    with pytest.raises(SpecInvalid) as exc:
        import_tunnel(data)
    assert any(p.startswith("HealthCheckConfig.ProbeInterval: must be 1000-5000") for p in
               exc.value.problems)
    assert any(p.startswith("HealthCheckConfig.ProbeThreshold: must be 3-8") for p in
               exc.value.problems)
    data = load("create-vpn-connection.json")
    data["SecurityPolicyDatabases"][0]["RemoteCidrBlock"][1] = "192.168.2.1/33"
    with pytest.raises(SpecInvalid) as exc:
        import_tunnel(data)
    assert exc.value.problems[0].startswith("SecurityPolicyDatabases[0].RemoteCidrBlock[1]:")


def test_cross_field_rules_come_back_in_api_terms():
    data = load("create-vpn-connection.json")
    data["SecurityPolicyDatabases"].append({"LocalCidrBlock": "10.0.1.0/24",
                                           "RemoteCidrBlock": ["192.168.1.0/25"]})
    with pytest.raises(SpecInvalid) as exc:
        import_tunnel(data)
    assert any(p.startswith("SecurityPolicyDatabases (spd_rules[2])") and "overlaps" in p
               for p in exc.value.problems), exc.value.problems


def test_fqdn_identity_needs_a_name():
    data = load("create-vpn-connection.json")
    data["IKEOptionsSpecification"]["LocalIdentity"] = "FQDN"
    with pytest.raises(SpecInvalid) as exc:
        import_tunnel(data)
    assert any(p.startswith("IKEOptionsSpecification.LocalFqdnName: required") for p in
               exc.value.problems)


def test_defaults_are_noted():
    data = {"VpnConnectionName": "minimal", "PreShareKey": "k",
            "SecurityPolicyDatabases": [{"LocalCidrBlock": "10.0.1.0/24",
                                         "RemoteCidrBlock": ["192.168.1.0/24"]}]}
    spec, notes = import_tunnel(data)
    t = parse_spec(spec).tunnels[0]
    assert (t.ike.encryption, t.ike.dh_group, t.ipsec.encryption) == ("3DES", "DH1", "AES-128")
    defaults = next(n for n in notes if n.startswith("API defaults"))
    assert "IKEOptionsSpecification.PropoEncryAlgorithm=3DES-CBC" in defaults
    assert "IPSECOptionsSpecification.PfsDhGroup=NULL" in defaults
    assert any(n.startswith("RouteType: absent; Policy") for n in notes)


ROUND_TRIPS = [
    ("create-vpn-connection.json", {}),
    ("create-static-route.json", {"idc_cidrs": ["192.168.50.0/24"]}),
    ("describe-vpn-connections.json", {"connection": "idc-guangzhou"}),
    ("describe-vpn-connections.json", {"connection": "idc-beijing-sm", "psk": "sm-psk"}),
]


@pytest.mark.parametrize(("name", "options"), ROUND_TRIPS, ids=lambda v: str(v))
def test_import_export_import_round_trips(name, options):
    first, _ = import_tunnel(load(name), **options)
    options = {k: v for k, v in options.items() if k not in ("connection", "psk")}
    body = export_tunnel(parse_spec(first), include_psk=True)
    assert "IntegrityAlgorith" in body["IPSECOptionsSpecification"]
    second, _ = import_tunnel(copy.deepcopy(body), **options)
    assert dump_spec(parse_spec(first)) == dump_spec(parse_spec(second))
    assert export_tunnel(parse_spec(second), include_psk=True) == body


def test_export_spellings_and_placeholder():
    spec, _ = import_tunnel(load("describe-vpn-connections.json"), connection="vpnx-7pq8rs9t",
                            psk="secret-psk")
    body, notes = export_tunnel_with_notes(parse_spec(spec))
    assert body["PreShareKey"] == PSK_PLACEHOLDER and "secret-psk" not in json.dumps(body)
    assert any("--include-psk" in n for n in notes)
    ike, ipsec = body["IKEOptionsSpecification"], body["IPSECOptionsSpecification"]
    assert (ike["PropoEncryAlgorithm"], ike["PropoAuthenAlgorithm"], ike["DhGroupName"]) == (
        "SM4", "SM3", "GROUP5")
    assert (ipsec["IntegrityAlgorith"], ipsec["PfsDhGroup"]) == ("SM3", "NULL")
    assert body["NegotiationType"] == "flowTrigger" and body["DpdEnable"] == 0
    # a placeholder never becomes a key on re-import
    with pytest.raises(SpecInvalid, match="PreShareKey"):
        import_tunnel(body)


def test_export_of_example_specs():
    from lab.spec import load_spec

    body = export_tunnel(load_spec(EXAMPLES / "default.yaml"))
    assert body["IKEOptionsSpecification"]["PropoAuthenAlgorithm"] == "SHA-256"
    assert body["IPSECOptionsSpecification"]["IntegrityAlgorith"] == "SHA1"
    assert body["IPSECOptionsSpecification"]["PfsDhGroup"] == "DH-GROUP14"
    body = export_tunnel(load_spec(EXAMPLES / "ikev1-aggressive-fqdn.yaml"))
    assert body["IKEOptionsSpecification"]["LocalFqdnName"] == "vpngw.cloud.example"
    assert body["IKEOptionsSpecification"]["ExchangeMode"] == "AGGRESSIVE"


# -- the API as it really is (bodies written here, from the vpc 2017-03-12 models) ------------------
def _body(**fields) -> dict:
    """A CreateVpnConnection body with the required fields, then `fields` (None removes one)."""
    body = {"VpcId": "vpc-gapcv96p", "VpnGatewayId": "vpngw-1w9tue3d",
            "CustomerGatewayId": "cgw-qa9sxpy7", "VpnConnectionName": "branch",
            "PreShareKey": "a-long-enough-key-1", "RouteType": "Policy",
            "SecurityPolicyDatabases": [{"LocalCidrBlock": "10.0.1.0/24",
                                         "RemoteCidrBlock": ["192.168.1.0/24"]}],
            "IKEOptionsSpecification": {"LocalAddress": "203.0.113.1",
                                        "RemoteAddress": "198.51.100.2"}}
    for k, v in fields.items():
        if v is None:
            body.pop(k, None)
        else:
            body[k] = v
    return body


@pytest.mark.parametrize("spelling", ["STATIC", "StaticRoute", "staticroute"])
def test_every_static_route_spelling_is_a_destination_route_tunnel(spelling):
    spec, notes = import_tunnel(_body(RouteType=spelling, SecurityPolicyDatabases=None),
                                idc_cidrs=["192.168.1.0/24"])
    assert spec["tunnels"][0]["communication_mode"] == "destination-route"
    assert spec["vpn_gateway"]["routes"] == [{"destination": "192.168.1.0/24", "tunnel": "branch"}]


def test_the_api_s_own_static_route_shape_0_0_spd_is_imported_as_destination_route():
    body = _body(RouteType="StaticRoute", SecurityPolicyDatabases=[
        {"LocalCidrBlock": "0.0.0.0/0", "RemoteCidrBlock": ["0.0.0.0/0"]}])
    spec, notes = import_tunnel(body, idc_cidrs=["192.168.1.0/24"])
    tunnel = spec["tunnels"][0]
    assert (tunnel["communication_mode"], tunnel["spd_rules"]) == ("destination-route", [])
    assert any("0.0.0.0/0 -> [0.0.0.0/0] is how the API shows a StaticRoute tunnel" in n
               for n in notes), notes


def test_narrow_spd_rules_on_a_static_route_tunnel_are_still_refused():
    body = _body(RouteType="StaticRoute")
    with pytest.raises(SpecInvalid) as exc:
        import_tunnel(body, idc_cidrs=["192.168.1.0/24"])
    assert any("destination-route tunnels take routes" in p for p in exc.value.problems)


def test_bgp_says_what_is_missing():
    with pytest.raises(SpecInvalid) as exc:
        import_tunnel(_body(RouteType="Bgp"))
    assert exc.value.problems == [
        "RouteType: Bgp (routes learnt over BGP) needs BGP support, which the lab does not have "
        "yet; import it as StaticRoute with --idc-cidr for the ranges BGP would announce"]


@pytest.mark.parametrize(("value", "enabled"), [(None, False), (-1, False), (0, False), (1, True)])
def test_dpd_follows_the_api_default_off_when_absent(value, enabled):
    spec, notes = import_tunnel(_body(DpdEnable=value))
    assert spec["tunnels"][0]["dpd"]["enabled"] is enabled
    if value in (None, -1):
        assert any("DpdEnable=0" in n for n in notes), notes


def test_a_hand_written_spec_keeps_the_console_default_dpd_on():
    spec = parse_spec({"tunnels": [{"name": "t", "customer_gateway": {"public_ip": "198.51.100.2"},
                                    "pre_shared_key": "a-long-enough-key-1",
                                    "spd_rules": [{"local": ["10.0.1.0/24"],
                                                   "peer": ["192.168.1.0/24"]}]}]})
    assert spec.tunnels[0].dpd.enabled is True


def test_ike_integrity_sha1_the_older_sdks_spelling():
    body = _body()
    body["IKEOptionsSpecification"]["PropoAuthenAlgorithm"] = "SHA1"
    spec, _ = import_tunnel(body)
    assert spec["tunnels"][0]["ike"]["integrity"] == "SHA1"


@pytest.mark.parametrize("fields", [{"IntegrityAlgorithm": "SHA-256"},
                                    {"IntegrityAlgorith": "SHA-256"},
                                    {"IntegrityAlgorithm": "SHA-256", "IntegrityAlgorith": "SHA-256"}])
def test_both_integrity_field_spellings_are_read(fields):
    spec, _ = import_tunnel(_body(IPSECOptionsSpecification=fields))
    assert spec["tunnels"][0]["ipsec"]["integrity"] == "SHA256"


def test_the_two_integrity_fields_disagreeing_is_an_error_naming_both():
    body = _body(IPSECOptionsSpecification={"IntegrityAlgorithm": "SHA-256",
                                            "IntegrityAlgorith": "MD5"})
    with pytest.raises(SpecInvalid) as exc:
        import_tunnel(body)
    assert exc.value.problems == [
        "IPSECOptionsSpecification.IntegrityAlgorithm: SHA-256 differs from the deprecated "
        "IntegrityAlgorith MD5; keep one of them"]


def test_export_writes_both_integrity_fields_and_imports_back():
    spec, _ = import_tunnel(_body(IPSECOptionsSpecification={"IntegrityAlgorithm": "SHA-512"}))
    body = export_tunnel(parse_spec(spec))
    ipsec = body["IPSECOptionsSpecification"]
    assert ipsec["IntegrityAlgorithm"] == ipsec["IntegrityAlgorith"] == "SHA-512"


def test_a_modify_vpn_connection_attribute_body_is_refused_clearly():
    modify = {"VpnConnectionId": "vpnx-axc13cega", "VpnConnectionName": "renamed",
              "PreShareKey": "a-long-enough-key-2"}
    with pytest.raises(LabError) as exc:
        import_tunnel(modify)
    assert "is a ModifyVpnConnectionAttribute body: a change to an existing connection" in str(exc.value)


# -- CreateVpnConnection's Route (a CreateVpnConnRoute object) --------------------------------------
def test_a_static_route_tunnel_s_route_becomes_its_route_and_idc_range():
    spec, notes = import_tunnel(_body(RouteType="StaticRoute", SecurityPolicyDatabases=None,
                                      Route={"DestinationCidrBlock": "192.168.60.0/24",
                                             "Priority": 100, "Description": "hq"}))
    assert spec["vpn_gateway"]["routes"] == [{"destination": "192.168.60.0/24", "tunnel": "branch"}]
    assert spec["tunnels"][0]["customer_gateway"]["idc_cidrs"] == ["192.168.60.0/24"]
    assert any("Priority 100 is not modelled" in n for n in notes)
    assert any(n.startswith("Route.Description: not kept") for n in notes)


def test_a_route_and_the_same_idc_option_give_one_route():
    spec, _ = import_tunnel(_body(RouteType="StaticRoute", SecurityPolicyDatabases=None,
                                  Route={"DestinationCidrBlock": "192.168.60.0/24"}),
                            idc_cidrs=["192.168.60.0/24", "192.168.61.0/24"])
    assert [r["destination"] for r in spec["vpn_gateway"]["routes"]] == [
        "192.168.60.0/24", "192.168.61.0/24"]


@pytest.mark.parametrize(("fields", "message"), [
    ({"Route": {"DestinationCidrBlock": "192.168.60.0/24", "Priority": 5}},
     "Route.Priority: must be 0 or 100"),
    ({"Route": {"Priority": 0}}, "Route.DestinationCidrBlock: required"),
    ({"Route": {"DestinationCidrBlock": "192.168.600.0/24"}},
     "Route.DestinationCidrBlock: must be an IPv4 CIDR block"),
    ({"Route": ["192.168.60.0/24"]}, "Route: must be an object"),
])
def test_bad_routes_name_the_field(fields, message):
    with pytest.raises(SpecInvalid) as exc:
        import_tunnel(_body(RouteType="StaticRoute", SecurityPolicyDatabases=None, **fields))
    assert message in str(exc.value)


def test_a_policy_tunnel_takes_no_route():
    with pytest.raises(SpecInvalid, match="Route: only a StaticRoute tunnel takes a route"):
        import_tunnel(_body(Route={"DestinationCidrBlock": "192.168.60.0/24"}))


def test_export_writes_the_first_route_and_import_reads_it_back():
    from lab.spec import load_spec

    spec = load_spec(EXAMPLES / "destination-route-mixed.yaml")
    body, notes = export_tunnel_with_notes(spec, "tunnel-route", include_psk=True)
    assert body["Route"] == {"DestinationCidrBlock": "172.16.10.0/24"}
    assert any("add 172.16.20.0/24 with CreateVpnGatewayRoutes" in n for n in notes)
    again, _ = import_tunnel(body)
    assert again["vpn_gateway"]["routes"] == [{"destination": "172.16.10.0/24",
                                               "tunnel": "tunnel-route"}]


def test_a_modification_with_a_customer_gateway_id_is_still_a_modification():
    with pytest.raises(LabError, match="import --onto SPEC"):
        import_tunnel({"VpnConnectionId": "vpnx-1", "CustomerGatewayId": "cgw-2", "DpdTimeout": "40"})
