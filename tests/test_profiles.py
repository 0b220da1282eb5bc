"""Gateway profiles: Tencent (default), AWS and Alibaba menus and limits as data (lab.profiles)."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import yaml

from lab import catalogue as cat
from lab import profiles
from lab.cli.matrix import matrix
from lab.dataplane import Dataplane
from lab.errors import LabError
from lab.health import Failover, Transition, keeps_routes, route_holder
from lab.matrix import cases as mc
from lab.matrix.select import select_cases
from lab.plan import _margins, build_plan, proposal
from lab.render import render_gateway
from lab.spec import parse_spec
from lab.spec.model import HealthCheck
from lab.spec.rules import unsupported
from lab.swanctl import parse
from lab.verify import algorithm_problems, algorithms
from tests.conftest import EXAMPLES
from tests.test_spec import BASE, problems

AWS_CIPHERS = "AES-128, AES-256, AES-128-GCM-16, AES-256-GCM-16"


def spec(profile: str | None = None, **tunnel) -> dict:
    data = copy.deepcopy(BASE)
    if profile:
        data["vpn_gateway"]["profile"] = profile
    data["tunnels"][0].update(tunnel)
    return data


# --- the profiles as data ----------------------------------------------------------------------

def test_tencent_is_the_default_and_keeps_the_catalogue_menus():
    assert profiles.get(None) is profiles.TENCENT
    t = profiles.TENCENT
    assert t.ike_encryption == t.ipsec_encryption == ("AES-128", "AES-192", "AES-256", "3DES", "DES", "SM4")
    assert t.ike_integrity == ("MD5", "SHA1", "SHA256", "SHA384", "SHA512", "SM3")
    assert t.dh_group == ("DH1", "DH2", "DH5", "DH14", "DH24")
    assert t.pfs == ("disable", "DH1", "DH2", "DH5", "DH14", "DH24")
    assert list(t.negotiation_types) == ["active", "passive", "traffic-triggered"]
    assert (t.dpd_timeout, list(t.dpd_actions)) == ((30, 60), ["disconnect", "retry"])
    # the catalogue's Tencent menus did not grow: new options live beside them
    assert [o.console for o in cat.ENCRYPTION] == list(t.ike_encryption)
    assert [o.console for o in cat.DH_GROUPS] == list(t.dh_group)
    assert parse_spec(BASE).vpn_gateway.profile == "tencent"


@pytest.mark.parametrize("name", profiles.NAMES)
def test_every_menu_entry_is_a_catalogue_option(name):
    p = profiles.get(name)
    for kind in ("ike_encryption", "ike_integrity", "dh_group", "ipsec_encryption",
                 "ipsec_integrity", "pfs"):
        for option in p.options(kind):
            assert option.keyword is not None or option.console in ("SM4", "SM3")
    assert profiles.example_spec(name).exists()


def test_new_catalogue_options_and_list_sas_names():
    gcm = cat.by_console(cat.ENCRYPTION, "AES-256-GCM-16")  # found beyond the Tencent menu
    assert (gcm.keyword, gcm.sa_name, gcm.key_size, gcm.aead) == ("aes256gcm16", "AES_GCM_16", 256, True)
    names = {o.console: (o.keyword, o.sa_name) for o in cat.MORE_DH_GROUPS}
    assert names["DH19"] == ("ecp256", "ECP_256") and names["DH20"] == ("ecp384", "ECP_384")
    assert names["DH21"] == ("ecp521", "ECP_521") and names["DH22"] == ("modp1024s160", "MODP_1024_160")
    assert names["DH23"] == ("modp2048s224", "MODP_2048_224") and names["DH15"] == ("modp3072", "MODP_3072")
    assert [o.console for o in cat.ALL_DH_GROUPS][-3:] == ["DH22", "DH23", "DH24"]
    with pytest.raises(KeyError):  # lookup stays strict to the menu given
        cat.lookup(cat.ENCRYPTION, "aes256gcm16")


def test_unknown_profile():
    assert any("vpn_gateway.profile" in p for p in problems(spec("azure")))
    with pytest.raises(LookupError, match="known: tencent, aws, alibaba"):
        profiles.get("azure")


# --- Tencent behaviour unchanged ----------------------------------------------------------------

def test_tencent_messages_unchanged():
    assert problems(spec(ipsec={"encryption": "AES-512"})) == [
        "tunnels[0].ipsec.encryption: must be one of AES-128, AES-192, AES-256, 3DES, DES, SM4 "
        "(got 'AES-512')"]
    assert problems(spec(ipsec={"pfs": "group99"})) == [
        "tunnels[0].ipsec.pfs: must be disable or one of DH1, DH2, DH5, DH14, DH24 (got 'group99')"]
    assert problems(spec(dpd={"timeout": 61})) == [
        "tunnels[0].dpd.timeout: must be 30-60 seconds (got 61)"]
    assert problems(spec(dpd={"action": "none"})) == [
        "tunnels[0].dpd.action: none is not offered by the tencent profile (offers disconnect (clear), "
        "retry (restart))"]


def test_tencent_refuses_other_clouds_options_by_name():
    assert problems(spec(ike={"encryption": "AES256-GCM-16", "version": "v2"}, ipsec={"pfs": "20"})) == [
        "tunnels[0].ike.encryption: AES-256-GCM-16 is not offered by the tencent profile (offers "
        "AES-128, AES-192, AES-256, 3DES, DES, SM4); vpn_gateway.generation: newer offers it",
        "tunnels[0].ipsec.pfs: DH20 is not offered by the tencent profile (offers disable, DH1, DH2, "
        "DH5, DH14, DH24); vpn_gateway.generation: newer offers it",
    ]


# --- AWS --------------------------------------------------------------------------------------

def test_aws_accepts_its_menus_in_aws_spellings():
    t = parse_spec(spec("aws", negotiation_type="start", dpd={"action": "none", "timeout": 3600},
                        ike={"version": "ikev2", "encryption": "AES256-GCM-16", "integrity": "SHA2-384",
                             "dh_group": "20", "sa_lifetime": 900},
                        ipsec={"encryption": "AES128-GCM-16", "integrity": "SHA2-512",
                               "pfs": "24"})).tunnels[0]
    assert (t.negotiation_type, t.dpd.action, t.dpd.timeout) == ("active", "none", 3600)
    assert (t.ike.encryption, t.ike.integrity, t.ike.dh_group) == ("AES-256-GCM-16", "SHA384", "DH20")
    assert (t.ipsec.encryption, t.ipsec.pfs) == ("AES-128-GCM-16", "DH24")


def test_aws_defaults_and_startup_action():
    t = parse_spec(spec("aws")).tunnels[0]
    # DPDTimeoutSeconds: 40 (the tunnel-options guide and ModifyVpnTunnelOptionsSpecification)
    assert (t.negotiation_type, t.dpd.action, t.dpd.timeout) == ("passive", "disconnect", 40)
    assert parse_spec(spec("aws", dpd={"timeout": 30})).tunnels[0].dpd.timeout == 30  # still >= 30
    assert (t.ike.version, t.ike.encryption, t.ike.integrity, t.ike.dh_group, t.ike.sa_lifetime) == \
        ("v1", "AES-128", "SHA1", "DH2", 28800)
    assert (t.ipsec.pfs, t.ipsec.sa_lifetime) == ("DH2", 3600)
    assert parse_spec(spec("aws", negotiation_type="add")).tunnels[0].negotiation_type == "passive"


def test_aws_rejects_with_named_messages():
    found = problems(spec(
        "aws", negotiation_type="flowTrigger", dpd={"timeout": 29, "action": "retry"},
        health_check={"enabled": True, "local_ip": "169.254.128.1", "peer_ip": "169.254.128.2"},
        ike={"encryption": "3DES", "integrity": "MD5", "dh_group": "DH1", "exchange_mode": "aggressive",
             "sa_lifetime": 86400},
        ipsec={"encryption": "AES-192", "pfs": "disable", "sa_lifetime": 3601},
        spd_rules=[{"local": ["10.0.1.0/24"], "peer": ["192.168.1.0/24", "192.168.2.0/24"]}],
    ))
    assert f"tunnels[0].ike.encryption: 3DES is not offered by the aws profile (offers {AWS_CIPHERS})" \
        in found
    assert "tunnels[0].ike.integrity: MD5 is not offered by the aws profile (offers SHA1, SHA256, SHA384, " \
           "SHA512)" in found
    assert any(p.startswith("tunnels[0].ike.dh_group: DH1 is not offered by the aws profile (offers DH2, "
                            "DH14, DH15,") for p in found)
    assert "tunnels[0].ike.exchange_mode: aggressive is not offered by the aws profile (offers main)" in found
    assert f"tunnels[0].ipsec.encryption: AES-192 is not offered by the aws profile (offers {AWS_CIPHERS})" \
        in found
    assert any(p.startswith("tunnels[0].ipsec.pfs: PFS disabled is not offered by the aws profile (offers "
                            "DH2, DH5, DH14,") for p in found)
    assert "tunnels[0].negotiation_type: traffic-triggered is not offered by the aws profile (offers " \
           "passive (add), active (start))" in found
    assert "tunnels[0].dpd.timeout: must be at least 30 seconds on the aws profile (got 29)" in found
    assert "tunnels[0].ike.sa_lifetime: must be 900-28800 seconds on the aws profile (got 86400)" in found
    assert "tunnels[0].ipsec.sa_lifetime: must be 900-3600 seconds on the aws profile (got 3601)" in found
    assert "tunnels[0].health_check.enabled: the aws profile has no health check" in found
    assert "tunnels[0].spd_rules: 2 mappings; the aws profile negotiates at most 1 traffic-selector " \
           "pair(s) per tunnel" in found
    assert "tunnels[0].dpd.action: retry is not offered by the aws profile" not in " ".join(found)  # offered


def test_aws_unknown_value_lists_the_aws_menu():
    assert problems(spec("aws", ike={"encryption": "AES-512"})) == [
        f"tunnels[0].ike.encryption: must be one of {AWS_CIPHERS} (got 'AES-512')"]


def test_gcm_in_ikev1_is_unsupported_by_the_endpoints():
    v1 = parse_spec(spec("aws", ike={"encryption": "AES-128-GCM-16"}, ipsec={"encryption": "AES-256-GCM-16"}))
    assert unsupported(v1) == [
        "tunnels[0].ike.encryption: AES-128-GCM-16 in IKEv1 is not supported by the strongSwan endpoints "
        "(no AEAD cipher for an IKEv1 SA; use IKEv2)"]
    esp_only = spec("aws", ike={"version": "v1"}, ipsec={"encryption": "AES-256-GCM-16"})
    assert unsupported(parse_spec(esp_only)) == []


# --- Alibaba ----------------------------------------------------------------------------------

def test_alibaba_accepts_its_menus():
    t = parse_spec(spec("alibaba", ike={"version": "ikev1", "exchange_mode": "aggressive",
                                        "encryption": "aes", "integrity": "md5", "dh_group": "group14"},
                        ipsec={"encryption": "3des", "integrity": "sha512", "pfs": "disabled"})).tunnels[0]
    assert (t.ike.exchange_mode, t.ike.encryption, t.ike.integrity, t.ike.dh_group) == \
        ("aggressive", "AES-128", "MD5", "DH14")
    assert (t.ipsec.encryption, t.ipsec.pfs) == ("3DES", "disable")
    assert t.negotiation_type == "traffic-triggered"  # EffectImmediately defaults to false
    assert parse_spec(spec("alibaba", negotiation_type="active")).tunnels[0].negotiation_type == "active"


def test_alibaba_rejects_with_named_messages():
    found = problems(spec("alibaba", negotiation_type="passive", dpd={"timeout": 45, "action": "retry"},
                          ike={"encryption": "AES-256-GCM-16", "integrity": "SM3", "dh_group": "DH20",
                               "sa_lifetime": 90000},
                          ipsec={"pfs": "DH19"}, name="n" * 129))
    assert found == [
        "tunnels[0].name: at most 128 characters on the alibaba profile (got 129)",
        "tunnels[0].ike.encryption: AES-256-GCM-16 is not offered by the alibaba profile (offers AES-128, "
        "AES-192, AES-256, DES, 3DES)",
        "tunnels[0].ike.integrity: SM3 is not offered by the alibaba profile (offers MD5, SHA1, SHA256, "
        "SHA384, SHA512)",
        "tunnels[0].ike.dh_group: DH20 is not offered by the alibaba profile (offers DH1, DH2, DH5, DH14)",
        "tunnels[0].ipsec.pfs: DH19 is not offered by the alibaba profile (offers disable, DH1, DH2, DH5, "
        "DH14)",
        "tunnels[0].negotiation_type: passive is not offered by the alibaba profile (offers active "
        "(EffectImmediately=true), traffic-triggered (EffectImmediately=false))",
        "tunnels[0].dpd.action: retry is not offered by the alibaba profile (offers disconnect)",
        "tunnels[0].dpd.timeout: the alibaba profile has no DPD timeout setting (DPD is on or off; the lab "
        "uses 30 seconds)",
        "tunnels[0].ike.sa_lifetime: must be 60-86400 seconds on the alibaba profile (got 90000)",
    ]


def test_health_check_per_profile():
    hc = {"enabled": True, "local_ip": "169.254.128.1", "peer_ip": "169.254.128.2"}
    assert parse_spec(spec("alibaba", health_check=hc)).tunnels[0].health_check.enabled
    assert parse_spec(spec(health_check=hc)).tunnels[0].health_check.enabled


@pytest.mark.parametrize("example", ["aws.yaml", "alibaba.yaml", "default.yaml"])
def test_example_specs_are_valid(example):
    parsed = parse_spec(yaml.safe_load((EXAMPLES / example).read_text()), example)
    assert unsupported(parsed) == []


# --- plan and check: GCM ---------------------------------------------------------------------

def test_proposal_gcm():
    assert proposal("AES-256-GCM-16", "SHA384", "DH20", ike=True) == "aes256gcm16-prfsha384-ecp384"
    assert proposal("AES-256-GCM-16", "SHA384", "DH20") == "aes256gcm16-ecp384"
    assert proposal("AES-128-GCM-16", "SHA1", None) == "aes128gcm16"
    assert proposal("AES-128", "SHA256", "DH14", ike=True) == "aes128-sha256-modp2048"  # unchanged


def test_aws_example_plan():
    data = yaml.safe_load((EXAMPLES / "aws.yaml").read_text())
    data["tunnels"][0]["dpd"]["action"] = "none"
    plan = build_plan(parse_spec(data), "pfplan", Dataplane("kernel", "test"))
    cloud, customer = plan.gateways[0].connections[0], plan.gateways[1].connections[0]
    assert (cloud.ike_proposal, cloud.esp_proposal) == ("aes256gcm16-prfsha384-ecp384", "aes256gcm16-ecp384")
    assert (cloud.start_action, customer.start_action) == ("none", "start")  # StartupAction add
    assert cloud.dpd_action == "none"


def test_check_compares_gcm_without_integrity():
    ike = {"encr-alg": "AES_GCM_16", "encr-keysize": "256", "prf-alg": "PRF_HMAC_SHA2_384",
           "dh-group": "ECP_384"}
    child = {"encr-alg": "AES_GCM_16", "encr-keysize": "256"}
    assert algorithm_problems(ike, "AES-256-GCM-16", "SHA384") == []
    assert algorithm_problems(child, "AES-256-GCM-16", "SHA384") == []
    # the success rows print what the SA negotiated: no integrity algorithm for AEAD
    assert algorithms(ike) == "AES_GCM_16-256/PRF_HMAC_SHA2_384/ECP_384"
    assert algorithms(child) == "AES_GCM_16-256"
    assert algorithm_problems({**ike, "prf-alg": "PRF_HMAC_SHA1"}, "AES-256-GCM-16", "SHA384") == \
        ["PRF PRF_HMAC_SHA1, expected PRF_HMAC_SHA2_384"]
    assert algorithm_problems({**child, "encr-keysize": "128"}, "AES-256-GCM-16", "SHA1") == \
        ["encryption AES_GCM_16/128, expected AES-256-GCM-16"]
    assert algorithm_problems({**child, "integ-alg": "HMAC_SHA1_96"}, "AES-256-GCM-16", "SHA1") == \
        ["integrity HMAC_SHA1_96, expected none (AEAD AES-256-GCM-16)"]
    assert algorithm_problems({"encr-alg": "AES_CBC", "encr-keysize": "128", "integ-alg": "HMAC_SHA1_96"},
                       "AES-128", "SHA1") == []


# --- matrix -----------------------------------------------------------------------------------

def test_matrix_default_dimensions_stay_tencent():
    assert mc.default_dimensions() == mc.default_dimensions("tencent")
    dims = mc.default_dimensions()
    assert dims["ike_encryption"] == ("AES-128", "AES-192", "AES-256", "3DES", "DES", "SM4")
    assert dims["pfs"] == ("disable", "DH1", "DH2", "DH5", "DH14", "DH24")
    assert mc.MatrixRequest().dimensions == dims


def test_matrix_dimensions_per_profile():
    aws = mc.default_dimensions("aws")
    assert aws["ike_encryption"] == aws["ipsec_encryption"] == tuple(AWS_CIPHERS.split(", "))
    assert aws["exchange_mode"] == ("main",)
    assert aws["dh_group"][:3] == ("DH2", "DH14", "DH15") and "DH1" not in aws["dh_group"]
    assert "disable" not in aws["pfs"] and "DH5" in aws["pfs"]
    ali = mc.default_dimensions("alibaba")
    assert ali["ike_encryption"] == ("AES-128", "AES-192", "AES-256", "DES", "3DES")
    assert ali["pfs"][0] == "disable" and ali["exchange_mode"] == ("main", "aggressive")


def test_matrix_aws_pairwise_leaves_out_gcm_in_ikev1():
    dims = mc.default_dimensions("aws")
    cases = mc.pairwise(dims)
    assert cases and not any(c.params["ike_version"] == "v1" and "GCM" in c.params["ike_encryption"]
                             for c in cases)
    assert not any(c.unsupported for c in cases)
    covered = {(c.params["ike_encryption"], c.params["dh_group"]) for c in cases}
    assert {(e, g) for e in dims["ike_encryption"] for g in dims["dh_group"]} <= covered
    assert mc.full_size(dims) == len(mc.full(dims))


def test_matrix_restriction_against_the_profile():
    dims = mc.restrict(mc.default_dimensions("aws"), {"ike_encryption": ["aes256gcm16", "AES128"]}, "aws")
    assert dims["ike_encryption"] == ("AES-128", "AES-256-GCM-16")
    with pytest.raises(LabError, match="3DES not offered by the aws profile"):
        mc.restrict(mc.default_dimensions("aws"), {"ike_encryption": ["3DES"]}, "aws")
    with pytest.raises(LabError, match="AES-128-GCM-16 not offered by the tencent profile"):
        mc.restrict(mc.default_dimensions(), {"ike_encryption": ["AES-128-GCM-16"]})


def test_matrix_select_cases_with_profile():
    cases, strategy = select_cases("sweep", None, ["ike_version=v2"], False, None, "aws")
    assert strategy == "sweep"
    assert {c.params["ike_encryption"] for c in cases} == set(AWS_CIPHERS.split(", "))
    negatives = select_cases(None, None, ["ike_version=v2"], True, None, "aws")[0]
    assert any(c.kind == "negative" for c in negatives)
    assert all(c.params["exchange_mode"] == "main" for c in negatives if c.expect != mc.MODE)


def test_matrix_profile_must_match_the_base_spec():
    with pytest.raises(LabError, match="uses the tencent profile"):
        matrix(spec=EXAMPLES / "default.yaml", profile="aws")
    with pytest.raises(LabError, match="--profile: unknown gateway profile"):
        matrix(profile="azure")


def test_export_refuses_other_profiles():
    from lab.cloudapi import export_tunnel

    with pytest.raises(LabError, match="aws gateway profile"):
        export_tunnel(spec("aws"))


# --- the cloud as its API really is: AWS ----------------------------------------------------------

LIBIPSEC = Dataplane("libipsec", "test")
AWS_V2 = {"version": "v2", "sa_lifetime": 28800}


def aws_children(profile: str = "aws", time_scale: float = 1.0, **ipsec) -> tuple[dict, dict, str, str]:
    """The cloud's and the customer's CHILD_SA sections, and both swanctl.conf texts."""
    plan = build_plan(parse_spec(spec(profile, ike=AWS_V2, ipsec={"sa_lifetime": 3600, **ipsec})),
                      "pfrekey", LIBIPSEC, time_scale=time_scale)
    texts = [render_gateway(plan, gw, f"/run/x/{gw.node}")["swanctl.conf"] for gw in plan.gateways]
    cloud, customer = (parse(text)["connections"]["t1"]["children"]["t1-m1"] for text in texts)
    return cloud, customer, texts[0], texts[1]


def test_aws_start_is_ikev2_only():
    """AWS: "IKE initiation (startup action) from the AWS side ... is supported for IKEv2 only"."""
    assert problems(spec("aws", negotiation_type="start", ike={"version": "v1"})) == [
        "tunnels[0].negotiation_type: active (start) needs ike.version v2 on the aws profile: AWS "
        "initiates IKE for IKEv2 only (got ike.version v1); use passive (add) or IKEv2"]
    # the profile's default IKE version is v1: asking AWS to start needs v2 said
    assert any(p.startswith("tunnels[0].negotiation_type: active (start) needs ike.version v2")
               for p in problems(spec("aws", negotiation_type="active")))
    t = parse_spec(spec("aws", negotiation_type="start", ike={"version": "v2"})).tunnels[0]
    assert (t.negotiation_type, t.ike.version) == ("active", "v2")
    assert parse_spec(spec("aws", ike={"version": "v1"})).tunnels[0].negotiation_type == "passive"
    # other clouds initiate IKEv1 as before
    assert parse_spec(spec(negotiation_type="active", ike={"version": "v1"})).tunnels[0].ike.version == "v1"


def test_aws_rekey_settings_take_the_documented_ranges():
    ok = parse_spec(spec("aws", ike=AWS_V2, ipsec={"rekey_margin": 60, "rekey_fuzz": 0,
                                                   "replay_window": 64})).tunnels[0].ipsec
    assert (ok.rekey_margin, ok.rekey_fuzz, ok.replay_window) == (60, 0, 64)
    top = parse_spec(spec("aws", ipsec={"sa_lifetime": 3600, "rekey_margin": 1800, "rekey_fuzz": 100,
                                        "replay_window": 2048})).tunnels[0].ipsec
    assert (top.rekey_margin, top.rekey_fuzz, top.replay_window) == (1800, 100, 2048)
    assert problems(spec("aws", ipsec={"sa_lifetime": 3600, "rekey_margin": 59, "rekey_fuzz": 101,
                                       "replay_window": 63})) == [
        "tunnels[0].ipsec.rekey_margin: must be 60-1800 seconds on the aws profile (AWS's "
        "RekeyMarginTimeSeconds, at most half of ipsec.sa_lifetime 3600) (got 59)",
        "tunnels[0].ipsec.rekey_fuzz: must be 0-100 % on the aws profile (AWS's RekeyFuzzPercentage) "
        "(got 101)",
        "tunnels[0].ipsec.replay_window: must be 64-2048 packets on the aws profile (AWS's "
        "ReplayWindowSize) (got 63)",
    ]
    # half of Phase2LifetimeSeconds: 900 s allows at most 450
    assert problems(spec("aws", ipsec={"sa_lifetime": 900, "rekey_margin": 451})) == [
        "tunnels[0].ipsec.rekey_margin: must be 60-450 seconds on the aws profile (AWS's "
        "RekeyMarginTimeSeconds, at most half of ipsec.sa_lifetime 900) (got 451)"]
    assert problems(spec("aws", ipsec={"replay_window": 2049}))[0].endswith("(got 2049)")


@pytest.mark.parametrize("profile", ["tencent", "alibaba"])
def test_rekey_settings_are_refused_where_the_cloud_has_none(profile):
    label = "the tencent profile" if profile == "tencent" else "the alibaba profile"
    assert problems(spec(profile, ipsec={"rekey_margin": 270, "rekey_fuzz": 100, "replay_window": 1024})) == [
        f"tunnels[0].ipsec.rekey_margin: {label} has no rekey margin setting (the aws profile has); "
        "leave it out",
        f"tunnels[0].ipsec.rekey_fuzz: {label} has no rekey fuzz setting (the aws profile has); leave "
        "it out",
        f"tunnels[0].ipsec.replay_window: {label} has no replay window setting (the aws profile has); "
        "leave it out",
    ]


def test_rekey_settings_are_the_cloud_sides_only():
    assert problems(spec("aws", ike=AWS_V2, customer={"ipsec": {"rekey_margin": 300}})) == [
        "tunnels[0].customer.ipsec.rekey_margin: a cloud-side setting (ipsec.rekey_margin); the "
        "customer gateway keeps strongSwan's own rekey margin"]


def test_rekey_settings_bad_input_is_a_field_error():
    found = problems(spec("aws", ipsec={"rekey_margin": "soon", "replay_window": [1]}))
    assert [p.split(":")[0] for p in found] == ["tunnels[0].ipsec.rekey_margin",
                                                "tunnels[0].ipsec.replay_window"]


def test_aws_defaults_for_the_rekey_settings_are_recorded_not_applied():
    """Unset, AWS gives 270 s / 100 % / 1024 packets; the lab renders strongSwan's own timing, as
    before the settings existed, so existing specs render unchanged."""
    assert profiles.AWS.cloud_defaults == {"ipsec.rekey_margin": 270, "ipsec.rekey_fuzz": 100,
                                           "ipsec.replay_window": 1024}
    t = parse_spec(spec("aws")).tunnels[0]
    assert (t.ipsec.rekey_margin, t.ipsec.rekey_fuzz, t.ipsec.replay_window) == (None, None, None)
    cloud, customer, cloud_text, customer_text = aws_children()
    assert (cloud["life_time"], cloud["rekey_time"]) == ("3600s", "3240s")
    for text in (cloud_text, customer_text):
        assert "rand_time" not in text and "replay_window" not in text


def test_every_example_renders_without_the_new_settings():
    for path in sorted(EXAMPLES.glob("*.yaml")):
        if "env:" in path.read_text():
            continue
        plan = build_plan(parse_spec(yaml.safe_load(path.read_text()), path.name), "pfex", LIBIPSEC)
        for gw in plan.gateways:
            files = render_gateway(plan, gw, f"/run/x/{gw.node}")
            assert "replay_window" not in files.get("swanctl.conf", files.get("ipsec.conf"))
            for c in gw.connections:
                assert c.replay_window is None
                assert c.child_rekey_time == c.child_life_time * 9 // 10 or c.child_life_time < 30


def test_aws_rekey_margin_fuzz_and_window_are_rendered_on_the_cloud_side():
    cloud, customer, cloud_text, customer_text = aws_children(rekey_margin=540)
    # rekey_time = lifetime - margin; the spread is strongSwan's own (life - rekey), AWS's 100 %
    assert (cloud["life_time"], cloud["rekey_time"]) == ("3600s", "3060s") and "rand_time" not in cloud
    assert (customer["life_time"], customer["rekey_time"]) == ("3600s", "3240s")
    cloud, customer, cloud_text, customer_text = aws_children(rekey_margin=540, rekey_fuzz=50,
                                                              replay_window=1024)
    assert (cloud["rekey_time"], cloud["rand_time"], cloud["replay_window"]) == ("3060s", "270s", "1024")
    assert "rand_time" not in customer and "replay_window" not in customer
    # fuzz alone spreads the lab's own tenth
    cloud, *_ = aws_children(rekey_fuzz=0)
    assert (cloud["rekey_time"], cloud["rand_time"]) == ("3240s", "0s")


def test_rekey_margin_under_a_time_scale_keeps_the_scaled_margin():
    """--time-scale scales the margin like the lifetime; a margin that shrinks below 3 s keeps
    3 s to the hard end (the existing rule) without widening the spread."""
    cloud, *_ = aws_children(time_scale=0.01, rekey_margin=270)  # 36 s life, 2.7 -> 3 s margin
    assert (cloud["life_time"], cloud["rekey_time"], "rand_time" in cloud) == ("36s", "33s", False)
    cloud, *_ = aws_children(time_scale=0.005, rekey_margin=270, rekey_fuzz=100)  # 18 s, 1 s margin
    assert (cloud["rekey_time"], cloud["life_time"], cloud["rand_time"]) == ("17s", "20s", "1s")
    cloud, *_ = aws_children(time_scale=0.005, rekey_margin=270)
    assert (cloud["rekey_time"], cloud["life_time"], cloud["rand_time"]) == ("17s", "20s", "1s")
    cloud, *_ = aws_children(time_scale=0.005, rekey_margin=270, rekey_fuzz=0)
    assert cloud["rand_time"] == "0s"


def test_margins_unchanged_without_a_cloud_margin():
    assert _margins(3600, 1.0) == (3240, 360, None)
    assert _margins(60, 0.1) == (54, 6, None)
    assert _margins(6, 0.1) == (5, 3, 1)
    assert _margins(3600, 1.0, 540) == (3060, 540, None)
    assert _margins(3600, 1.0, 540, 50) == (3060, 540, 270)
    assert _margins(18, 0.005, 1, 0) == (17, 3, 0)
    assert _margins(2, 0.001, 5) == (1, 3, 1)  # never past the lifetime


def test_aws_notes_state_the_decisions():
    notes = " ".join(profiles.AWS.assumed)
    for said in ("DPD timeout default 40 s", "IKEv2 only", "one value per menu", "ipsec.rekey_margin",
                 "kernel-libipsec keeps a fixed 128-packet window"):
        assert said in notes, said


# --- the cloud as its API really is: Alibaba ------------------------------------------------------

@pytest.mark.parametrize(("section", "value", "floor", "api"), [
    ("ike", 30, 60, "IkeConfig.IkeLifetime"), ("ike", 0, 60, "IkeConfig.IkeLifetime"),
    ("ipsec", 179, 180, "IpsecConfig.IpsecLifetime"),
])
def test_alibaba_lifetime_floor_names_the_api_range_and_the_lab_floor(section, value, floor, api):
    assert problems(spec("alibaba", **{section: {"sa_lifetime": value}})) == [
        f"tunnels[0].{section}.sa_lifetime: must be at least {floor} seconds on the alibaba profile, "
        f"the lab's floor (Alibaba Cloud's {api} allows 0-86400; below {floor} s a renegotiation "
        "does not fit into the tenth of the lifetime strongSwan leaves for it, and 0 has no "
        f"strongSwan equivalent) (got {value})"]
    assert parse_spec(spec("alibaba", **{section: {"sa_lifetime": floor}})).tunnels[0]


def test_lifetime_floor_messages_elsewhere_unchanged():
    assert problems(spec(ike={"sa_lifetime": 59})) == [
        "tunnels[0].ike.sa_lifetime: Input should be greater than or equal to 60"]
    assert problems(spec("aws", ike={"sa_lifetime": 59})) == [
        "tunnels[0].ike.sa_lifetime: Input should be greater than or equal to 60"]
    assert problems(spec("aws", ike={"sa_lifetime": 899})) == [
        "tunnels[0].ike.sa_lifetime: must be 900-28800 seconds on the aws profile (got 899)"]
    assert problems(spec("alibaba", customer={"ike": {"sa_lifetime": 10}}))[0].startswith(
        "tunnels[0].customer.ike.sa_lifetime: must be at least 60 seconds on the alibaba profile")


def test_alibaba_dh_groups_are_the_current_apis():
    assert profiles.ALIBABA.dh_group == ("DH1", "DH2", "DH5", "DH14")
    assert profiles.ALIBABA.pfs == ("disable", "DH1", "DH2", "DH5", "DH14")
    assert problems(spec("alibaba", ike={"dh_group": "group24"}, ipsec={"pfs": "group24"})) == [
        "tunnels[0].ike.dh_group: DH24 is not offered by the alibaba profile (offers DH1, DH2, DH5, DH14)",
        "tunnels[0].ipsec.pfs: DH24 is not offered by the alibaba profile (offers disable, DH1, DH2, "
        "DH5, DH14)",
    ]
    with pytest.raises(LookupError, match="the alibaba profile has no gateway generations"):
        profiles.get("alibaba", "newer")
    assert "Not a gateway generation" in " ".join(profiles.ALIBABA.assumed)


HC = {"enabled": True, "local_ip": "169.254.128.1", "peer_ip": "169.254.128.2"}


def test_alibaba_health_check_defaults_are_its_apis():
    hc = parse_spec(spec("alibaba", health_check=HC)).tunnels[0].health_check
    assert (hc.interval_ms, hc.threshold, hc.policy) == (3000, 3, "revoke_route")  # 3 s, Retry 3
    hc = parse_spec(spec("alibaba", health_check={**HC, "policy": "RESERVE_ROUTE", "interval_ms": 10000,
                                                  "threshold": 10})).tunnels[0].health_check
    assert (hc.interval_ms, hc.threshold, hc.policy) == (10000, 10, "reserve_route")  # no upper bound


def test_alibaba_health_check_rules():
    assert problems(spec("alibaba", health_check={**HC, "interval_ms": 2500})) == [
        "tunnels[0].health_check.interval_ms: must be whole seconds on the alibaba profile (Alibaba "
        "Cloud's HealthCheckConfig.Interval, in seconds; got 2500)"]
    assert problems(spec("alibaba", health_check={**HC, "interval_ms": 0, "threshold": 0})) == [
        "tunnels[0].health_check.interval_ms: must be at least 1000 on the alibaba profile (Alibaba "
        "Cloud's HealthCheckConfig.Interval, in seconds) (got 0)",
        "tunnels[0].health_check.threshold: must be at least 1 on the alibaba profile (Alibaba Cloud's "
        "HealthCheckConfig.Retry) (got 0)",
    ]
    assert problems(spec("alibaba", health_check={**HC, "policy": "drop_route"})) == [
        "tunnels[0].health_check.policy: must be one of revoke_route, reserve_route (got 'drop_route')"]


@pytest.mark.parametrize(("profile", "does"), [
    ("tencent", "its health check withdraws the tunnel's routes when it fails"),
    ("aws", "it has no health check"),
])
def test_health_check_policy_only_where_the_cloud_has_one(profile, does):
    assert problems(spec(profile, health_check={"policy": "reserve_route"}, ike=AWS_V2)) == [
        f"tunnels[0].health_check.policy: the {profile} profile has no health-check policy ({does}; "
        "the alibaba profile chooses); leave it out"]
    assert parse_spec(spec(profile, ike=AWS_V2)).tunnels[0].health_check.policy is None


def test_tencent_health_check_unchanged():
    hc = parse_spec(spec(health_check=HC)).tunnels[0].health_check
    assert (hc.interval_ms, hc.threshold, hc.timeout_ms, hc.policy) == (2000, 3, 1000, None)
    assert problems(spec(health_check={**HC, "interval_ms": 999})) == [
        "tunnels[0].health_check.interval_ms: must be 1000-5000 (got 999)"]
    assert parse_spec(spec(health_check={**HC, "interval_ms": 2500})).tunnels[0].health_check.interval_ms \
        == 2500  # Tencent's ProbeInterval is in ms


def test_reserve_route_keeps_the_route_when_the_check_fails():
    assert keeps_routes(True, None) and keeps_routes(True, "revoke_route")
    assert not keeps_routes(False, None)  # Tencent: a failed check moves the traffic
    assert not keeps_routes(False, "revoke_route")
    assert keeps_routes(False, "reserve_route")
    both = {"p": False, "s": True}
    assert route_holder("p", "s", both) == "s"
    assert route_holder("p", "s", {"p": True, "s": True}) == "p"
    assert route_holder("p", "s", {"p": False, "s": False}) == "p"


class _FakeLab:
    """What Failover reads of a lab: each tunnel's health check, its cloud gateway's node."""

    def __init__(self, policies: dict[str, str | None]):
        checks = {name: HealthCheck(policy=policy) for name, policy in policies.items()}
        self.spec = type("Spec", (), {"tunnel": staticmethod(
            lambda name: type("T", (), {"health_check": checks[name]})())})()
        self.plan = type("Plan", (), {"cloud_of": staticmethod(
            lambda name: type("G", (), {"node": f"gw-{name}"})())})()


@pytest.mark.parametrize(("policy", "moved"), [(None, True), ("revoke_route", True),
                                               ("reserve_route", False)])
def test_failover_follows_the_primary_policy(monkeypatch, policy, moved):
    routed: list[str] = []
    monkeypatch.setattr(Failover, "_route_via", lambda self, tunnel: routed.append(tunnel))
    fo = Failover(_FakeLab({"primary": policy, "secondary": policy}), "primary", "secondary")  # type: ignore[arg-type]
    fo.checkers["primary"].healthy = False
    fo._decide(Transition(0.0, "primary", False))
    assert (fo.active, routed) == (("secondary", ["secondary"]) if moved else ("primary", []))
    fo.checkers["primary"].healthy = True
    fo._decide(Transition(1.0, "primary", True))
    assert fo.active == "primary"


# --- integration --------------------------------------------------------------------------------

@pytest.mark.integration
def test_aws_profile_lab_gcm_ecp384(ipsec_lab):
    """An AWS-profile tunnel, IKEv2 AES-256-GCM-16 (PRF SHA384) + DH20 both phases, on netns."""
    if os.geteuid() != 0:
        pytest.skip("needs root: network namespaces and strongSwan daemons")
    lab = ipsec_lab(Path(EXAMPLES / "aws.yaml"), "netns", f"pfaws{os.getpid() % 10000}")
    report = lab.check()
    failed = [f for f in report.findings if not f.ok]
    assert not failed, failed
    assert all("ECP_384 after a CHILD_SA rekey" in f.detail
               for f in report.findings if f.check == "PFS")
    with lab.vici("vpngw") as v:
        ike = next(sa for sa in v.sas() if sa["name"] == "tunnel-aws")
    assert (ike["encr-alg"], ike["encr-keysize"], ike["prf-alg"], ike["dh-group"]) == \
        ("AES_GCM_16", "256", "PRF_HMAC_SHA2_384", "ECP_384")
    assert "integ-alg" not in ike
    child = next(iter(ike["child-sas"].values()))
    assert (child["encr-alg"], child.get("integ-alg")) == ("AES_GCM_16", None)


@pytest.mark.parametrize(("name", "problem"), [
    ("x", "tunnels[0].name: at least 2 characters on the alibaba profile (got 1)"),
    ("1branch", "tunnels[0].name: must start with a letter on the alibaba profile (got '1branch')"),
])
def test_alibaba_names_follow_its_api(name, problem):
    """Alibaba's Name: 2-128 characters, a letter first; Tencent's rule allows both."""
    assert problems(spec("alibaba", name=name)) == [problem]
    assert parse_spec(spec("tencent", name=name)).tunnels[0].name == name
