"""`import --onto SPEC`: a ModifyVpnConnectionAttribute body changes only what it names.

Bodies are written here from the vpc 2017-03-12 model of ModifyVpnConnectionAttributeRequest.
"""

from __future__ import annotations

import copy
import json
import os
import stat

import pytest
import yaml
from typer.testing import CliRunner

from lab.cli import app
from lab.cloudmodify import apply_modification
from lab.errors import LabError, read_yaml
from lab.spec import SpecInvalid, parse_spec

from .conftest import EXAMPLES

CONN = "vpnx-axc13cega"


def spec(name: str = "default.yaml") -> dict:
    return read_yaml(EXAMPLES / name, "spec")


def modify(**fields) -> dict:
    return {"VpnConnectionId": CONN, **fields}


def test_only_the_named_fields_change_and_the_rest_of_the_spec_stays_as_written():
    before = spec()
    after, notes = apply_modification(modify(
        IKEOptionsSpecification={"PropoEncryAlgorithm": "AES-CBC-256"},
        IPSECOptionsSpecification={"IntegrityAlgorithm": "SHA-256"},
        DpdTimeout="45"), copy.deepcopy(before))
    t0, t1 = before["tunnels"][0], after["tunnels"][0]
    assert t1["ike"] == {**t0["ike"], "encryption": "AES-256"}
    assert t1["ipsec"] == {**t0["ipsec"], "integrity": "SHA256"}
    assert t1["dpd"] == {**t0.get("dpd", {}), "timeout": 45}
    untouched = {k: v for k, v in t1.items() if k not in ("ike", "ipsec", "dpd")}
    assert untouched == {k: v for k, v in t0.items() if k not in ("ike", "ipsec", "dpd")}
    assert after["vpn_gateway"] == before["vpn_gateway"]
    assert "changed dpd.timeout 30 -> 45, ike.encryption AES-128 -> AES-256, " \
           "ipsec.integrity SHA1 -> SHA256" in notes[0]
    parse_spec(after)


def test_a_body_that_repeats_the_spec_changes_nothing():
    before = spec()
    after, notes = apply_modification(modify(NegotiationType="active", DpdEnable=1),
                                      copy.deepcopy(before))
    assert after == before and notes[0].endswith("the body changes nothing")


def test_a_rename_moves_the_tunnel_s_routes_with_it():
    after, _ = apply_modification(modify(VpnConnectionName="branch-route"),
                                  spec("destination-route-mixed.yaml"), tunnel="tunnel-route")
    assert [t["name"] for t in after["tunnels"]] == ["branch-route", "tunnel-spd"]
    assert {r["tunnel"] for r in after["vpn_gateway"]["routes"]} == {"branch-route"}
    parse_spec(after)


def test_a_rename_onto_another_tunnel_s_name_is_refused():
    with pytest.raises(LabError, match="VpnConnectionName: 'tunnel-spd' is already the name"):
        apply_modification(modify(VpnConnectionName="tunnel-spd"),
                           spec("destination-route-mixed.yaml"), tunnel="tunnel-route")


def test_several_tunnels_need_a_choice():
    with pytest.raises(LabError, match="--tunnel: .* has several tunnels.*tunnel-route, tunnel-spd"):
        apply_modification(modify(DpdTimeout="40"), spec("destination-route-mixed.yaml"))


def test_spd_rules_are_replaced_as_a_whole():
    rules = [{"LocalCidrBlock": "10.0.2.0/24", "RemoteCidrBlock": ["192.168.7.0/24"]}]
    after, notes = apply_modification(modify(SecurityPolicyDatabases=rules), spec())
    assert after["tunnels"][0]["spd_rules"] == [{"local": ["10.0.2.0/24"],
                                                 "peer": ["192.168.7.0/24"]}]
    assert "changed spd_rules" in notes[0]


def test_an_identity_changes_only_on_the_side_the_body_names():
    base = spec()
    after, _ = apply_modification(modify(IKEOptionsSpecification={
        "LocalIdentity": "FQDN", "LocalFqdnName": "vpn.cloud.example"}), copy.deepcopy(base))
    ike = after["tunnels"][0]["ike"]
    assert ike["local_id"] == {"type": "fqdn", "value": "vpn.cloud.example"}
    assert ike.get("peer_id") == base["tunnels"][0]["ike"].get("peer_id")


def test_the_key_from_the_body_is_written_but_never_shown():
    after, notes = apply_modification(modify(PreShareKey="a-new-long-key-77"), spec())
    assert after["tunnels"][0]["pre_shared_key"] == "a-new-long-key-77"
    assert "pre_shared_key" in notes[0] and "a-new-long-key-77" not in " ".join(notes)


def test_an_env_key_stays_a_reference(monkeypatch):
    monkeypatch.delenv("IPSEC_LAB_PSK_V1MAIN", raising=False)
    after, notes = apply_modification(modify(DpdTimeout="50"), spec("ikev1-main.yaml"))
    assert after["tunnels"][0]["pre_shared_key"] == "env:IPSEC_LAB_PSK_V1MAIN"
    after, _ = apply_modification(modify(PreShareKey="x-long-enough-key"), spec("ikev1-main.yaml"),
                                  psk="env:OTHER_KEY")
    assert after["tunnels"][0]["pre_shared_key"] == "env:OTHER_KEY"


def test_what_the_api_does_not_model_stays():
    before = spec("behind-nat.yaml")
    after, _ = apply_modification(modify(DpdTimeout="40"), copy.deepcopy(before))
    assert after["tunnels"][0]["customer_gateway"] == before["tunnels"][0]["customer_gateway"]


@pytest.mark.parametrize(("fields", "message"), [
    ({"RouteType": "StaticRoute"}, "RouteType: ModifyVpnConnectionAttribute cannot change"),
    ({"BgpConfig": {"TunnelCidr": "169.254.1.0/30"}}, "BgpConfig: BGP tunnels need BGP support"),
    ({"IKEOptionsSpecification": "AES"}, "IKEOptionsSpecification: must be an object"),
    ({"DpdTimeout": "5"}, "DpdTimeout: must be 30-60 seconds"),
    ({"IKEOptionsSpecification": {"DhGroupName": "GROUP99"}},
     "IKEOptionsSpecification.DhGroupName: must be one of"),
])
def test_bad_fields_are_errors_naming_the_api_field(fields, message):
    with pytest.raises(SpecInvalid) as exc:
        apply_modification(modify(**fields), spec())
    assert message in str(exc.value)


def test_a_whole_connection_is_not_a_modification():
    body = {"VpnConnectionName": "x", "VpnGatewayId": "vpngw-1", "VpcId": "vpc-1",
            "CustomerGatewayId": "cgw-1", "PreShareKey": "k-long-enough"}
    with pytest.raises(LabError, match="--onto applies a ModifyVpnConnectionAttribute body"):
        apply_modification(body, spec())


def test_the_command_writes_a_private_spec_and_refuses_options_it_would_ignore(tmp_path):
    body = tmp_path / "modify.json"
    body.write_text(json.dumps({"VpnConnectionId": CONN, "DpdTimeout": "40",
                                "PreShareKey": "k-long-key-1"}))
    out = tmp_path / "changed.yaml"
    runner = CliRunner()
    result = runner.invoke(app, ["import", str(body), "--onto", str(EXAMPLES / "default.yaml"),
                                 "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "k-long-key-1" not in result.output and "written into" in result.output
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    written = yaml.safe_load(out.read_text())
    assert written["tunnels"][0]["dpd"]["timeout"] == 40
    result = runner.invoke(app, ["import", str(body), "--onto", str(EXAMPLES / "default.yaml"),
                                 "-o", str(out), "--vpc-cidr", "10.9.0.0/16"])
    # the command's errors are LabErrors (`ipsec-lab` prints them as one line, exit code 2)
    assert isinstance(result.exception, LabError)
    assert "--vpc-cidr: not with --onto" in str(result.exception)
    result = runner.invoke(app, ["import", str(body), "-o", str(out)])
    assert isinstance(result.exception, LabError)
    assert "import --onto SPEC" in str(result.exception)
