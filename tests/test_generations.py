"""Tencent's VPN gateway generations (`vpn_gateway.generation`): the newer gateways' menus (AES-GCM,
ESP NULL, DH 15/16/19/20/21) in the spec, the rendered proposals, the cloud API import/export and
the matrix. Pure Python: nothing here starts a daemon."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from lab import catalogue as cat
from lab import profiles
from lab.advise import esp_overhead
from lab.cloudapi import export_tunnel_with_notes, import_tunnel
from lab.dataplane import Dataplane
from lab.errors import LabError
from lab.matrix import cases as mc
from lab.matrix.runner import TUNING, plan_tunnel
from lab.matrix.select import select_cases
from lab.plan import build_plan
from lab.render import render_gateway
from lab.spec import LabSpec, SpecInvalid, dump_spec, load_spec, parse_spec
from lab.spec.rules import check_rules
from lab.swanctl import parse
from lab.verify import algorithm_problems, dh_name
from tests.conftest import EXAMPLES, ROOT
from tests.test_spec import BASE as SPEC_BASE

LIBIPSEC = Dataplane("libipsec", "test")
HINT = "vpn_gateway.generation: newer offers it"
NEWER_MATRIX = ROOT / "configs" / "matrix" / "newer-gateway.yaml"
NEWER_EXAMPLE = EXAMPLES / "newer-gateway.yaml"
# the spec tests' base tunnel, on IKEv2: strongSwan has no GCM IKE cipher in IKEv1
BASE = {**SPEC_BASE, "tunnels": [{**SPEC_BASE["tunnels"][0], "ike": {"version": "v2"}}]}


def spec(generation: str | None = None, profile: str | None = None, **sections) -> dict:
    """BASE with `ike`/`ipsec`/`customer` fields merged in and the gateway's generation set."""
    data = copy.deepcopy(BASE)
    if generation is not None:
        data["vpn_gateway"]["generation"] = generation
    if profile is not None:
        data["vpn_gateway"]["profile"] = profile
    tunnel = data["tunnels"][0]
    for section, fields in sections.items():
        tunnel[section] = {**tunnel.get(section, {}), **fields}
    return data


def problems(data: dict) -> list[str]:
    with pytest.raises(SpecInvalid) as info:
        parse_spec(data)
    return info.value.problems


# Every value newer gateways add, in the spec's section and field, with the console label.
NEWER_VALUES = [
    *(("ike", "encryption", v) for v in ("AES-128-GCM-16", "AES-192-GCM-16", "AES-256-GCM-16")),
    *(("ike", "dh_group", v) for v in ("DH15", "DH16", "DH19", "DH20", "DH21")),
    *(("ipsec", "encryption", v) for v in ("NULL", "AES-128-GCM-16", "AES-192-GCM-16",
                                           "AES-256-GCM-16")),
    *(("ipsec", "pfs", v) for v in ("DH15", "DH16", "DH19", "DH20", "DH21")),
]


# --- the menus ----------------------------------------------------------------------------------

def test_classic_menus_stay_as_they_are():
    classic = profiles.get("tencent", "classic")
    assert classic is profiles.TENCENT is profiles.get(None)
    assert classic.ike_encryption == classic.ipsec_encryption == (
        "AES-128", "AES-192", "AES-256", "3DES", "DES", "SM4")
    assert classic.dh_group == ("DH1", "DH2", "DH5", "DH14", "DH24")
    assert classic.pfs == ("disable", "DH1", "DH2", "DH5", "DH14", "DH24")
    assert mc.default_dimensions() == mc.default_dimensions("tencent", "classic")


def test_newer_menus_add_the_newer_values_to_the_classic_ones():
    newer, classic = profiles.get("tencent", "newer"), profiles.TENCENT
    assert newer is profiles.TENCENT_NEWER and newer.name == "tencent"
    for kind in profiles.MENU_FIELDS:
        assert newer.menu(kind)[:len(classic.menu(kind))] == classic.menu(kind), kind
    added = {(profiles.MENU_FIELDS[k], v) for k in profiles.MENU_FIELDS for v in newer.menu(k)
             if v not in classic.menu(k)}
    assert added == {(f"{section}.{field}", v) for section, field, v in NEWER_VALUES}
    assert "NULL" not in newer.ike_encryption  # ESP only
    assert (newer.ike_lifetime, newer.defaults) == (classic.ike_lifetime, classic.defaults)


def test_new_catalogue_entries():
    gcm192 = cat.lookup(cat.ALL_ENCRYPTION, "AES192GCM128")
    assert (gcm192.console, gcm192.keyword, gcm192.sa_name, gcm192.key_size, gcm192.aead) == (
        "AES-192-GCM-16", "aes192gcm16", "AES_GCM_16", 192, True)
    null = cat.lookup(cat.ALL_ENCRYPTION, "null")
    assert (null.console, null.api, null.keyword, null.sa_name, null.aead, null.esp_only) == (
        "NULL", "NULL", "null", "NULL", False, True)
    # Tencent's API spellings are the API labels; AWS's stay accepted as aliases
    assert [o.api for o in cat.GCM_ENCRYPTION] == ["AES128GCM128", "AES192GCM128", "AES256GCM128"]
    assert cat.lookup(cat.ALL_ENCRYPTION, "AES256-GCM-16").console == "AES-256-GCM-16"
    assert [o.api for o in cat.NEWER_DH_GROUPS] == ["GROUP15", "GROUP16", "GROUP19", "GROUP20",
                                                    "GROUP21"]


# --- the spec -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("section", "field", "value"), NEWER_VALUES,
                         ids=lambda v: str(v))
def test_each_newer_value_needs_a_newer_gateway(section, field, value):
    parsed = parse_spec(spec("newer", **{section: {field: value}}))
    assert getattr(getattr(parsed.tunnels[0], section), field) == value
    assert parsed.vpn_gateway.generation == "newer"
    for generation in (None, "classic"):
        found = problems(spec(generation, **{section: {field: value}}))
        assert len(found) == 1, found
        assert found[0].startswith(f"tunnels[0].{section}.{field}: {value} is not offered by the "
                                   "tencent profile (offers "), found
        assert found[0].endswith(HINT), found


def test_api_spellings_in_the_spec():
    parsed = parse_spec(spec("newer", ike={"encryption": "AES192GCM128", "dh_group": "GROUP21"},
                             ipsec={"encryption": "aes256gcm128", "pfs": "DH-GROUP16"}))
    t = parsed.tunnels[0]
    assert (t.ike.encryption, t.ike.dh_group) == ("AES-192-GCM-16", "DH21")
    assert (t.ipsec.encryption, t.ipsec.pfs) == ("AES-256-GCM-16", "DH16")


def test_newer_gateway_keeps_the_classic_values_and_rules():
    parsed = parse_spec(spec("newer", ike={"encryption": "AES-128", "dh_group": "DH14"}))
    assert parsed.tunnels[0].ike.encryption == "AES-128"
    assert problems(spec("newer", dpd={"timeout": 61})) == [
        "tunnels[0].dpd.timeout: must be 30-60 seconds (got 61)"]
    assert problems(spec("newer", ipsec={"encryption": "AES-512"})) == [
        "tunnels[0].ipsec.encryption: must be one of AES-128, AES-192, AES-256, 3DES, DES, SM4, "
        "NULL, AES-128-GCM-16, AES-192-GCM-16, AES-256-GCM-16 (got 'AES-512')"]
    # what no generation offers gets no hint
    assert problems(spec("newer", ipsec={"pfs": "DH17"})) == [
        "tunnels[0].ipsec.pfs: DH17 is not offered by the tencent profile (newer gateways) (offers "
        "disable, DH1, DH2, DH5, DH14, DH24, DH15, DH16, DH19, DH20, DH21)"]
    assert not problems(spec(None, ipsec={"pfs": "DH17"}))[0].endswith(HINT)


def test_classic_is_the_default_and_may_be_written():
    assert parse_spec(BASE).vpn_gateway.generation is None
    assert parse_spec(spec("classic")).vpn_gateway.generation == "classic"


@pytest.mark.parametrize("generation", ["newer", "classic"])
def test_other_profiles_have_no_generation(generation):
    found = problems(spec(generation, "aws", ike={"sa_lifetime": 28800}, ipsec={"sa_lifetime": 3600}))
    assert found == ["vpn_gateway.generation: the aws profile has no gateway generations (only "
                     "Tencent's VPN gateways come as classic or newer); leave it out"]


def test_other_profiles_refuse_newer_values_without_the_hint():
    found = problems(spec(None, "alibaba", ipsec={"encryption": "NULL"}))
    assert found[0].startswith("tunnels[0].ipsec.encryption: NULL is not offered by the alibaba")
    assert not any(HINT in p for p in found)


def test_unknown_generation():
    assert problems(spec("newest")) == ["vpn_gateway.generation: Input should be 'classic' or 'newer'"]


def test_null_is_esp_only():
    why = "NULL (no encryption) is an ESP cipher only: an IKE SA is always encrypted"
    found = problems(spec("newer", ike={"encryption": "NULL"}))
    assert len(found) == 1 and found[0].startswith(f"tunnels[0].ike.encryption: {why}"), found
    found = problems(spec("newer", customer={"ike": {"encryption": "null"}}))
    assert len(found) == 1 and found[0].startswith(f"tunnels[0].customer.ike.encryption: {why}")


def test_a_bare_yaml_null_is_never_esp_null():
    data = yaml.safe_load("encryption: NULL")
    assert data == {"encryption": None}
    found = problems(spec("newer", ipsec=data))
    assert len(found) == 1 and found[0].startswith("tunnels[0].ipsec.encryption: must be one of")
    assert "write 'NULL' (quoted) for ESP NULL" in found[0]


def test_a_newer_spec_dumps_and_reads_back():
    parsed = parse_spec(spec("newer", ike={"encryption": "AES-256-GCM-16", "dh_group": "DH21"},
                             ipsec={"encryption": "NULL", "pfs": "DH15"}))
    text = yaml.safe_dump(dump_spec(parsed))
    assert "'NULL'" in text  # quoted: YAML would read a bare NULL as no value
    assert parse_spec(yaml.safe_load(text)) == parsed


# --- rendering ------------------------------------------------------------------------------------

PROPOSALS = [
    # (ike encryption, integrity, dh), (esp encryption, integrity, pfs) -> ike, esp proposals
    (("AES-128-GCM-16", "SHA256", "DH19"), ("AES-128-GCM-16", "SHA256", "DH19"),
     "aes128gcm16-prfsha256-ecp256", "aes128gcm16-ecp256"),
    (("AES-192-GCM-16", "SHA384", "DH20"), ("AES-192-GCM-16", "SHA1", "disable"),
     "aes192gcm16-prfsha384-ecp384", "aes192gcm16"),
    (("AES-256-GCM-16", "SHA512", "DH21"), ("AES-256-GCM-16", "SHA512", "DH21"),
     "aes256gcm16-prfsha512-ecp521", "aes256gcm16-ecp521"),
    (("AES-256", "SHA256", "DH15"), ("NULL", "SHA256", "DH16"),
     "aes256-sha256-modp3072", "null-sha256-modp4096"),
    (("AES-128", "SHA1", "DH16"), ("NULL", "SHA512", "disable"),
     "aes128-sha1-modp4096", "null-sha512"),
]


@pytest.mark.parametrize(("ike", "esp", "ike_proposal", "esp_proposal"), PROPOSALS,
                         ids=[p[2] + "--" + p[3] for p in PROPOSALS])
def test_rendered_proposals_are_strongswan_keywords(ike, esp, ike_proposal, esp_proposal):
    data = spec("newer", ike=dict(zip(("encryption", "integrity", "dh_group"), ike, strict=True)),
                ipsec=dict(zip(("encryption", "integrity", "pfs"), esp, strict=True)))
    plan = build_plan(parse_spec(data), "t", LIBIPSEC)
    for gw in plan.gateways:
        files = render_gateway(plan, gw, f"/run/x/{gw.node}")
        conn = parse(files["swanctl.conf"])["connections"]["t1"]
        assert conn["proposals"] == [ike_proposal]
        assert conn["children"]["t1-m1"]["esp_proposals"] == [esp_proposal]
        if "ipsec.conf" in files:  # the customer's legacy config: the same, strict (`!`)
            assert f"ike = {ike_proposal}!" in files["ipsec.conf"]
            assert f"esp = {esp_proposal}!" in files["ipsec.conf"]


def test_ikev1_gcm_ike_is_refused_by_the_endpoints_esp_gcm_is_not():
    from lab.spec.rules import unsupported

    v1 = parse_spec(spec("newer", ike={"version": "v1", "encryption": "AES-128-GCM-16"}))
    assert unsupported(v1) == [
        "tunnels[0].ike.encryption: AES-128-GCM-16 in IKEv1 is not supported by the strongSwan "
        "endpoints (no AEAD cipher for an IKEv1 SA; use IKEv2)"]
    esp = parse_spec(spec("newer", ike={"version": "v1"}, ipsec={"encryption": "AES-192-GCM-16"}))
    assert unsupported(esp) == []


def test_list_sas_names_of_the_newer_values():
    null_child = {"encr-alg": "NULL", "integ-alg": "HMAC_SHA2_256_128"}
    assert algorithm_problems(null_child, "NULL", "SHA256") == []
    assert algorithm_problems({**null_child, "integ-alg": None}, "NULL", "SHA256") == [
        "integrity None, expected SHA256"]
    assert algorithm_problems({"encr-alg": "AES_GCM_16", "encr-keysize": "192"},
                              "AES-192-GCM-16", "SHA1") == []
    assert [dh_name(g) for g in ("DH15", "DH16", "DH19", "DH20", "DH21")] == [
        "MODP_3072", "MODP_4096", "ECP_256", "ECP_384", "ECP_521"]


def test_esp_overhead_of_the_newer_ciphers():
    assert esp_overhead("AES-192-GCM-16", "SHA1") == esp_overhead("AES-128-GCM-16", "SHA1") == 57
    assert esp_overhead("NULL", "SHA256") == 20 + 8 + 0 + 3 + 2 + 16


def test_the_newer_example_is_valid_and_newer():
    parsed = load_spec(NEWER_EXAMPLE)
    assert parsed.vpn_gateway.generation == "newer"
    assert parsed.tunnels[0].ike.encryption == "AES-256-GCM-16"
    data = yaml.safe_load(NEWER_EXAMPLE.read_text())
    del data["vpn_gateway"]["generation"]
    assert all(p.endswith(HINT) for p in problems(data))


# --- the cloud API ----------------------------------------------------------------------------------

def load_api(name: str = "create-vpn-connection.json") -> dict:
    return json.loads((EXAMPLES / "api" / name).read_text())


API_NEWER = [
    ("IKEOptionsSpecification", "PropoEncryAlgorithm", "AES128GCM128", ("ike", "encryption"),
     "AES-128-GCM-16"),
    ("IKEOptionsSpecification", "PropoEncryAlgorithm", "AES192GCM128", ("ike", "encryption"),
     "AES-192-GCM-16"),
    ("IKEOptionsSpecification", "PropoEncryAlgorithm", "AES256GCM128", ("ike", "encryption"),
     "AES-256-GCM-16"),
    *(("IKEOptionsSpecification", "DhGroupName", f"GROUP{n}", ("ike", "dh_group"), f"DH{n}")
      for n in (15, 16, 19, 20, 21)),
    *(("IPSECOptionsSpecification", "EncryptAlgorithm", api, ("ipsec", "encryption"), console)
      for api, console in (("NULL", "NULL"), ("AES128GCM128", "AES-128-GCM-16"),
                           ("AES192GCM128", "AES-192-GCM-16"), ("AES256GCM128", "AES-256-GCM-16"))),
    *(("IPSECOptionsSpecification", "PfsDhGroup", f"DH-GROUP{n}", ("ipsec", "pfs"), f"DH{n}")
      for n in (15, 16, 19, 20, 21)),
]


@pytest.mark.parametrize(("section", "field", "api", "where", "console"), API_NEWER,
                         ids=lambda v: str(v))
def test_import_of_a_newer_value_makes_a_newer_gateway(section, field, api, where, console):
    data = load_api()
    data["IKEOptionsSpecification"]["IKEVersion"] = "IKEV2"
    data[section][field] = api
    imported, notes = import_tunnel(data)
    assert imported["vpn_gateway"]["generation"] == "newer"
    assert imported["tunnels"][0][where[0]][where[1]] == console
    assert [n for n in notes if n.startswith("vpn_gateway.generation")] == [
        f"vpn_gateway.generation: newer, because {section}.{field}={api} is offered only by newer "
        "VPN gateways"]
    parse_spec(imported)
    body, export_notes = export_tunnel_with_notes(parse_spec(imported))
    assert body[section][field] == api
    assert any(n.startswith(f"{section}.{field}={api}: offered only by newer VPN gateways")
               for n in export_notes)


def test_import_of_a_classic_body_stays_classic():
    imported, notes = import_tunnel(load_api())
    assert "generation" not in imported["vpn_gateway"]
    assert not any("generation" in n for n in notes)
    body, export_notes = export_tunnel_with_notes(parse_spec(imported))
    assert not any("newer" in n for n in export_notes)


def test_import_refuses_null_ike_encryption_and_lists_every_api_value():
    data = load_api()
    data["IKEOptionsSpecification"]["PropoEncryAlgorithm"] = "NULL"
    with pytest.raises(SpecInvalid) as exc:
        import_tunnel(data)
    assert exc.value.problems == [
        "IKEOptionsSpecification.PropoEncryAlgorithm: must be one of AES-CBC-128, AES-CBC-192, "
        "AES-CBC-256, 3DES-CBC, DES-CBC, SM4, AES128GCM128, AES192GCM128, AES256GCM128 "
        "(got 'NULL')"]


def test_newer_body_round_trips():
    data = load_api()
    data["IKEOptionsSpecification"].update({"IKEVersion": "IKEV2", "PropoEncryAlgorithm":
                                            "AES256GCM128", "DhGroupName": "GROUP20"})
    data["IPSECOptionsSpecification"].update({"EncryptAlgorithm": "NULL", "PfsDhGroup": "DH-GROUP21"})
    first, notes = import_tunnel(data)
    assert any("PropoEncryAlgorithm=AES256GCM128, IKEOptionsSpecification.DhGroupName=GROUP20, "
               "IPSECOptionsSpecification.EncryptAlgorithm=NULL, IPSECOptionsSpecification."
               "PfsDhGroup=DH-GROUP21 are offered only by newer VPN gateways" in n for n in notes)
    body = export_tunnel_with_notes(parse_spec(first), include_psk=True)[0]
    assert (body["IKEOptionsSpecification"]["PropoEncryAlgorithm"],
            body["IKEOptionsSpecification"]["DhGroupName"],
            body["IPSECOptionsSpecification"]["EncryptAlgorithm"],
            body["IPSECOptionsSpecification"]["PfsDhGroup"]) == (
        "AES256GCM128", "GROUP20", "NULL", "DH-GROUP21")
    second, _ = import_tunnel(copy.deepcopy(body))
    assert dump_spec(parse_spec(first)) == dump_spec(parse_spec(second))
    assert parse_spec(second).vpn_gateway.generation == "newer"


# --- the matrix ---------------------------------------------------------------------------------

def test_the_newer_matrix_file_needs_a_newer_base():
    with pytest.raises(LabError) as exc:
        mc.load_matrix_file(NEWER_MATRIX)
    assert "not offered by the tencent profile" in str(exc.value)
    assert "vpn_gateway.generation: newer offers it" in str(exc.value)
    assert "configs/examples/newer-gateway.yaml" in str(exc.value)


def test_the_newer_matrix_reaches_every_newer_value():
    request = mc.load_matrix_file(NEWER_MATRIX, "tencent", "newer")
    cases = request.cases()
    assert len({c.id for c in cases}) == len(cases)
    assert not any(c.unsupported for c in cases)
    positive = [c for c in cases if c.kind == "positive"]
    seen = {(d, c.params[d]) for c in positive for d in c.params}
    for section, field, value in NEWER_VALUES:
        dimension = {"encryption": f"{section}_encryption", "dh_group": "dh_group",
                     "pfs": "pfs"}[field]
        assert (dimension, value) in seen, (dimension, value)
    assert {c.expect for c in cases if c.kind == "negative"} == set(mc.NEGATIVE_REASONS)
    assert request.base is not None and request.base["ike_encryption"] == "AES-256-GCM-16"


def test_every_newer_matrix_case_plans_on_the_newer_example():
    base = load_spec(NEWER_EXAMPLE)
    for case in mc.load_matrix_file(NEWER_MATRIX, "tencent", "newer").cases():
        lab_spec = LabSpec(vpn_gateway=base.vpn_gateway, tunnels=[plan_tunnel(base, case)])
        assert check_rules(lab_spec) == [], case.id
        plan = build_plan(lab_spec, "t", LIBIPSEC, TUNING)
        cloud = plan.gateways[0].connections[0]
        assert cloud.esp_proposal.split("-")[0] in ("null", "aes128gcm16", "aes192gcm16",
                                                    "aes256gcm16"), case.id


def test_select_cases_and_restrictions_follow_the_generation():
    cases, _ = select_cases(None, Path(NEWER_MATRIX), ["dh_group=GROUP19"], False, None, "tencent",
                            generation="newer")
    assert cases and {c.params["dh_group"] for c in cases} == {"DH19"}
    with pytest.raises(LabError, match=r"DH19 not offered by the tencent profile .*newer offers it"):
        select_cases(None, None, ["dh_group=DH19"], False, None)
    dims = mc.default_dimensions("tencent", "newer")
    assert dims["ipsec_encryption"][-4:] == ("NULL", "AES-128-GCM-16", "AES-192-GCM-16",
                                             "AES-256-GCM-16")
    with pytest.raises(LabError, match="NULL not offered by the tencent profile \\(newer gateways\\)"):
        mc.restrict(dims, {"ike_encryption": ["NULL"]}, "tencent", "newer")


def test_a_bare_yaml_null_in_a_matrix_file_is_explained(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(NEWER_MATRIX.read_text().replace("'NULL'", "NULL"))
    with pytest.raises(LabError, match="quote it"):
        mc.load_matrix_file(path, "tencent", "newer")


@pytest.mark.parametrize(("spec", "refused"), [("newer-gateway.yaml", False), ("default.yaml", True)])
def test_the_customer_config_matrix_takes_the_base_specs_generation(spec, refused):
    """`matrix --customer-config` draws its cases from the base spec's menus, as the lab's own
    matrix does: a newer value is a valid dimension on a newer gateway only."""
    import subprocess
    import sys
    done = subprocess.run([sys.executable, "-m", "lab.cli", "matrix", str(EXAMPLES / spec),
                           "--customer-config", str(EXAMPLES / "customer" / "swanctl.conf"),
                           "--only", "dh_group=DH19", "--limit", "0"],
                          capture_output=True, text=True, cwd=ROOT)
    # no case runs (--limit 0): a usage error (exit 2) is the refusal of the dimension
    assert (done.returncode == 2) == refused, done.stdout + done.stderr
    assert ("vpn_gateway.generation: newer offers it" in done.stderr) == refused
