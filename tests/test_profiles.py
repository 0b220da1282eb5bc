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
from lab.matrix import cases as mc
from lab.matrix.select import select_cases
from lab.plan import build_plan, proposal
from lab.spec import parse_spec
from lab.spec.rules import unsupported
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
    assert (t.negotiation_type, t.dpd.action, t.dpd.timeout) == ("passive", "disconnect", 30)
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
                                        "encryption": "aes", "integrity": "md5", "dh_group": "group24"},
                        ipsec={"encryption": "3des", "integrity": "sha512", "pfs": "disabled"})).tunnels[0]
    assert (t.ike.exchange_mode, t.ike.encryption, t.ike.integrity, t.ike.dh_group) == \
        ("aggressive", "AES-128", "MD5", "DH24")
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
        "tunnels[0].ike.dh_group: DH20 is not offered by the alibaba profile (offers DH1, DH2, DH5, DH14, "
        "DH24)",
        "tunnels[0].ipsec.pfs: DH19 is not offered by the alibaba profile (offers disable, DH1, DH2, DH5, "
        "DH14, DH24)",
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
