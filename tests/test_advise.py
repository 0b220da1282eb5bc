"""The ipsec.conf parser and static advice on customer configurations (no daemons)."""

from __future__ import annotations

import json

import pytest
import yaml

from lab.advise import Advice, advise, parse_proposal
from lab.cloudapi import import_tunnel
from lab.errors import LabError
from lab.ipsecconf import (
    find_psk,
    from_swanctl,
    load_customer_config,
    parse_ipsec_conf,
    parse_secrets,
)
from lab.spec import LabSpec, parse_spec

from .conftest import EXAMPLES

CUSTOMER = EXAMPLES / "customer"


def cloud(name: str, **options) -> LabSpec:
    data = json.loads((EXAMPLES / "api" / name).read_text())
    return parse_spec(import_tunnel(data, **options)[0])


@pytest.fixture
def shanghai() -> LabSpec:
    return cloud("create-vpn-connection.json")


@pytest.fixture
def guangzhou() -> LabSpec:
    return cloud("describe-vpn-connections.json", connection="idc-guangzhou")


def customer(name: str, secrets: str | None = None):
    return load_customer_config(CUSTOMER / name, CUSTOMER / secrets if secrets else None)


def find(items: list[Advice], topic: str, severity: str | None = None) -> list[Advice]:
    return [a for a in items if a.topic == topic and (severity is None or a.severity == severity)]


# ---------------------------------------------------------------- ipsec.conf parser


def test_ipsec_conf_also_chains_default_and_ignore():
    config = customer("ipsec.conf", "ipsec.secrets")
    assert config.kind == "ipsec.conf"
    assert config.ignored == ["tencent-shanghai"]
    assert [c.name for c in config.connections] == ["shanghai-office", "shanghai-lab", "shanghai-dmz"]
    dmz = config.connection("shanghai-dmz")  # also=shanghai-office -> also=tencent-shanghai
    assert dmz.remote_addrs == ["203.0.113.1"] and dmz.local_id == "198.51.100.2"
    assert dmz.children[0].local_ts == ["192.168.3.0/24"]
    assert dmz.children[0].remote_ts == ["10.0.2.0/24"]
    assert dmz.children[0].start_action == "none"  # auto=add inherited from shanghai-office
    assert dmz.version == 1 and dmz.auth == "psk"  # from conn %default
    assert dmz.ike_proposals == ["aes128-sha1-modp1024"]  # `!`: nothing appended
    assert dmz.dpd_delay == 5 and dmz.dpd_timeout == 30 and dmz.children[0].dpd_action == "restart"
    assert dmz.ike_lifetime == 86400 and dmz.children[0].life_time == 3600
    assert dmz.where["ike"].startswith("conn tencent-shanghai")
    assert dmz.where["keyexchange"].startswith("conn %default")
    assert dmz.psk is not None and "psk-change-me" not in repr(dmz)  # never printed


def test_ipsec_conf_tabs_comments_and_defaults():
    config = customer("ipsec-defaults.conf")
    conn = config.connection("tencent")
    assert conn.version == 0  # keyexchange defaults to ike
    assert conn.ike_proposals == ["aes128-sha256-modp3072", "default"]
    assert conn.children[0].esp_written is None
    assert conn.children[0].esp_proposals == ["aes128-sha256", "default"]
    assert conn.dpd_delay == 0  # dpdaction defaults to none
    assert conn.children[0].start_action == "start"
    lab = customer("ipsec.conf").connection("shanghai-lab")  # tab-indented section
    assert lab.children[0].local_ts == ["192.168.2.0/24"]


def test_ipsec_conf_any_and_secrets_without_selectors():
    config = customer("ipsec-any.conf", "ipsec-any.secrets")
    conn = config.connection("tc-1")
    assert conn.remote_addrs == ["%any"] and conn.remote_id == "%any"
    assert conn.local_addrs == ["%defaultroute"]
    assert conn.ike_proposals == ["aes256-sha256-modp2048", "aes128-sha1-modp1024", "default"]
    assert conn.psk is not None


def test_ipsec_conf_errors():
    with pytest.raises(LabError, match="also=missing: no conn section"):
        parse_ipsec_conf("conn a\n    also=missing\n    auto=add\n")
    with pytest.raises(LabError, match="also= loop"):
        parse_ipsec_conf("conn a\n    also=b\n    auto=add\nconn b\n    also=a\n")
    with pytest.raises(LabError, match="not a section header"):
        parse_ipsec_conf("conn a\nleft=1.2.3.4\n")
    with pytest.raises(LabError, match="outside a section"):
        parse_ipsec_conf("    left=1.2.3.4\n")


def test_ipsec_conf_later_settings_override_and_empty_unsets():
    text = """
conn base
    esp=aes128-sha1!
    rightid=@old.example
    auto=ignore
conn child
    rightid=@first.example
    also=base
    leftsubnet="192.168.1.0/24, 192.168.5.0/24"
    esp=
    auto=route
"""
    conn = parse_ipsec_conf(text).connection("child")
    assert conn.remote_id == "@old.example"  # also= is expanded in place, after rightid
    assert conn.children[0].esp_written is None  # esp= unset
    assert conn.children[0].local_ts == ["192.168.1.0/24", "192.168.5.0/24"]
    assert conn.children[0].start_action == "trap"


def test_secrets_parsing_and_lookup():
    secrets = parse_secrets('# c\n1.2.3.4 5.6.7.8 : PSK "a b"\n@x.example\n  @y.example : PSK 0x6162\n'
                            ": PSK fallback\n")
    assert find_psk(secrets, "1.2.3.4", "5.6.7.8").value() == b"a b"
    assert find_psk(secrets, "x.example", "@y.example").value() == b"ab"
    assert find_psk(secrets, "9.9.9.9", "8.8.8.8").value() == b"fallback"


def test_swanctl_config():
    config = customer("swanctl.conf")
    conn = config.connection("tencent-gz")
    assert conn.kind == "swanctl.conf" and conn.version == 2
    assert conn.local_id == "@cgw.idc.example" and conn.remote_id == "@vpngw.cloud.example"
    assert [c.name for c in conn.children] == ["gz-office", "gz-lab", "gz-dmz"]
    assert conn.ike_lifetime == 86400 and conn.dpd_delay == 10
    assert config.secrets_checked and conn.psk is not None
    bare = from_swanctl("connections {\n c {\n  children {\n   x {\n   }\n  }\n }\n}\n")
    assert bare.connections[0].ike_proposals == ["default"]
    assert bare.connections[0].children[0].esp_proposals == ["default"]
    assert bare.connections[0].remote_id is None and not bare.secrets_checked


# ---------------------------------------------------------------- proposals


def test_proposal_syntax():
    p = parse_proposal("aes128-aes256-sha1-sha256-modp2048-modp1024!")
    assert p.encryption == ("aes128", "aes256") and p.integrity == ("sha1", "sha256")
    assert p.dh == ("modp2048", "modp1024")
    assert p.ikev1().encryption == ("aes128",) and p.ikev1().dh == ("modp2048",)
    q = parse_proposal("aes-sha-prfsha256-curve25519-esn")
    assert (q.encryption, q.integrity, q.prf, q.dh) == (("aes128",), ("sha1",), ("prfsha256",),
                                                        ("x25519",))
    assert parse_proposal("aes256gcm16-ecp384").encryption == ("aes256gcm16",)


# ---------------------------------------------------------------- advice


def test_matching_configs_give_no_errors(shanghai, guangzhou):
    assert advise(shanghai, customer("ipsec.conf", "ipsec.secrets")) == []
    assert advise(guangzhou, customer("swanctl.conf")) == []
    items = advise(shanghai, customer("ipsec-any.conf", "ipsec-any.secrets"))
    assert not [a for a in items if a.severity != "info"], items
    assert find(items, "addresses", "info") and find(items, "identity", "info")


def test_ipsec_mismatch_classes(shanghai):
    items = advise(shanghai, customer("ipsec-mismatch.conf", "ipsec-mismatch.secrets"))
    for topic in ("exchange-mode", "addresses", "identity", "ike-proposal", "esp-proposal", "psk",
                  "mappings"):
        assert find(items, topic, "error"), topic
    assert all(a.fix for a in items if a.severity != "info")
    esp = find(items, "esp-proposal")[0]
    assert "your esp= offers aes256-sha256 only" in esp.message
    assert "AES-128/SHA1/DH2 (aes128-sha1-modp1024)" in esp.message
    assert "add aes128-sha1-modp1024 to esp" in esp.fix
    assert esp.customer_field == "conn tencent: esp= (from conn %default, line 10)"
    multi = [a for a in find(items, "mappings", "error") if "only the first subnet pair" in a.message]
    assert multi and "also=" in multi[0].fix
    missing = [a for a in find(items, "mappings", "error") if "192.168.3.0/24" in a.message]
    assert missing and "leftsubnet=192.168.3.0/24, rightsubnet=10.0.2.0/24" in missing[0].fix
    ids = find(items, "identity", "error")
    assert any("leftid=198.51.100.2" in a.fix for a in ids)
    assert any("rightid=203.0.113.1" in a.fix for a in ids)
    assert find(items, "dpd", "warning")
    assert find(items, "lifetime", "info")
    psk = find(items, "psk")[0]
    assert "not-the-cloud-key" not in json.dumps([a.to_json() for a in items])
    assert "shanghai-lab-psk" not in psk.message


def test_swanctl_mismatch_classes(guangzhou):
    items = advise(guangzhou, customer("swanctl-mismatch.conf"))
    for topic in ("ike-version", "addresses", "identity", "ike-proposal", "pfs", "psk", "mappings"):
        assert find(items, topic, "error"), topic
    pfs = find(items, "pfs")[0]
    assert "requires PFS DH14 (modp2048)" in pfs.message and "rekeying fails" in pfs.message
    assert find(items, "mappings", "warning")  # gz-extra: no such cloud mapping
    assert find(items, "dpd", "warning")


def test_defaults_are_treated_honestly(shanghai):
    items = advise(shanghai, customer("ipsec-defaults.conf", "ipsec.secrets"))
    version = find(items, "ike-version", "error")[0]
    assert "initiates with IKEv2" in version.message and version.fix == "keyexchange=ikev1"
    dh = find(items, "ike-proposal", "error")[0]
    assert "DH2 (modp1024)" in dh.message and "defaults never include it" in dh.message
    assert "PFS DH2" in find(items, "pfs", "error")[0].message


def test_default_proposal_matches_modern_cloud_settings():
    spec = parse_spec({"tunnels": [{
        "name": "modern", "customer_gateway": {"public_ip": "198.51.100.2"},
        "pre_shared_key": "k", "spd_rules": [{"local": ["10.0.1.0/24"], "peer": ["192.168.1.0/24"]}],
        "ike": {"version": "v2", "encryption": "AES-256", "integrity": "SHA256", "dh_group": "DH14"},
        "ipsec": {"encryption": "AES-128", "integrity": "SHA256"},
    }]})
    text = """connections {
  c {
    version = 2
    remote_addrs = 203.0.113.1
    local {
      auth = psk
    }
    remote {
      auth = psk
    }
    dpd_delay = 10s
    children {
      m1 {
        local_ts = 192.168.1.0/24
        remote_ts = 10.0.1.0/24
      }
    }
  }
}
"""
    items = advise(spec, from_swanctl(text))
    assert not [a for a in items if a.severity == "error"], items


def test_ikev1_multi_algorithm_proposal_and_pfs_disabled(shanghai):
    data = shanghai.model_dump()
    base = """conn %default
    keyexchange=ikev1
    authby=secret
    left=198.51.100.2
    right=203.0.113.1
    dpdaction=restart
    auto=add
conn m1
    leftsubnet=192.168.1.0/24
    rightsubnet=10.0.1.0/24
    ike=aes256-aes128-sha256-sha1-modp2048-modp1024!
    esp=aes128-sha1-modp1024!
"""
    items = advise(shanghai, parse_ipsec_conf(base))
    stripped = find(items, "ike-proposal")
    assert stripped and stripped[0].severity == "warning"  # works while the cloud initiates
    assert "goes out as aes256-sha256-modp2048" in stripped[0].message
    # the same with a passive cloud tunnel is an error
    data["tunnels"][0]["negotiation_type"] = "passive"
    data["tunnels"][0]["pre_shared_key"] = "k"
    passive = parse_spec(data)
    assert find(advise(passive, parse_ipsec_conf(base)), "ike-proposal", "error")
    assert find(advise(passive, parse_ipsec_conf(base)), "negotiation", "error")
    # PFS disabled on the cloud, DH in the customer's esp
    data["tunnels"][0]["negotiation_type"] = "active"
    data["tunnels"][0]["ipsec"]["pfs"] = "disable"
    no_pfs = parse_spec(data)
    pfs = find(advise(no_pfs, parse_ipsec_conf(base)), "pfs", "error")
    assert pfs and "PFS disabled" in pfs[0].message


def test_sm4_cannot_be_matched():
    spec = cloud("describe-vpn-connections.json", connection="idc-beijing-sm", psk="k")
    items = advise(spec, customer("ipsec.conf"))
    ike = find(items, "ike-proposal", "error")
    assert ike and "SM4" in ike[0].message and "does not implement" in ike[0].message


def test_psk_missing_and_unchecked(shanghai):
    items = advise(shanghai, customer("ipsec.conf"))
    assert find(items, "psk", "info")  # no secrets given
    config = load_customer_config(CUSTOMER / "ipsec.conf", CUSTOMER / "ipsec-mismatch.secrets")
    missing = find(advise(shanghai, config), "psk", "error")
    assert missing and "no PSK" in missing[0].message


def test_tunnel_selection(shanghai):
    with pytest.raises(LabError, match="no tunnel named"):
        advise(shanghai, customer("ipsec.conf"), "other")


def test_commands(tmp_path):
    import typer
    from typer.testing import CliRunner

    from lab.cli.inputs import register

    app = typer.Typer()
    register(app)
    runner = CliRunner()
    spec = tmp_path / "gz.yaml"
    result = runner.invoke(app, ["import", str(EXAMPLES / "api" / "describe-vpn-connections.json"),
                                 "-o", str(spec), "--connection", "idc-guangzhou"])
    assert result.exit_code == 0, result.output
    assert "lab default" in result.output and (spec.stat().st_mode & 0o777) == 0o600
    ok = runner.invoke(app, ["advise", str(spec), "--customer-config", str(CUSTOMER / "swanctl.conf")])
    assert ok.exit_code == 0 and "no findings" in ok.output
    bad = runner.invoke(app, ["advise", str(spec), "--customer-config",
                              str(CUSTOMER / "swanctl-mismatch.conf"), "--json"])
    assert bad.exit_code == 1 and json.loads(bad.stdout)["ok"] is False
    exported = runner.invoke(app, ["export", str(spec)])
    assert exported.exit_code == 0 and '"IntegrityAlgorith": "SHA-256"' in exported.stdout


@pytest.mark.parametrize("example", ["default.yaml", "spd-multi-mapping.yaml",
                                     "ikev1-aggressive-fqdn.yaml"])
def test_the_labs_own_customer_configs_advise_clean(example):
    """What the lab renders for its customer gateway parses and gets no error or warning."""
    from lab.dataplane import Dataplane
    from lab.ipsecconf import attach_secrets
    from lab.plan import build_plan
    from lab.render import render_gateway
    from lab.spec import load_spec

    spec = load_spec(EXAMPLES / example)
    plan = build_plan(spec, "advise", Dataplane("kernel", "test"))
    files = render_gateway(plan, plan.gateway("cgw1"), "/tmp/unused")
    for config in (from_swanctl(files["swanctl.conf"]), parse_ipsec_conf(files["ipsec.conf"])):
        if config.kind == "ipsec.conf":
            attach_secrets(config, parse_secrets(files["ipsec.secrets"]))
        items = advise(spec, config)
        assert not [a for a in items if a.severity == "error"], (config.kind, items)
        warnings = [a for a in items if a.severity == "warning"]
        # the lab mirrors the cloud's DPD action (disconnect -> clear) on the customer side, which
        # leaves a passive tunnel down after DPD: a finding about the rendering, kept visible here
        expected = ["dpd"] if spec.tunnels[0].negotiation_type == "passive" else []
        assert sorted({a.topic for a in warnings}) == expected, warnings


@pytest.mark.parametrize(("encryption", "integrity", "overhead"), [
    ("AES-128", "SHA1", 73),  # 20 IP + 8 ESP + 16 IV + 15 padding + 2 + 12 ICV
    ("3DES", "MD5", 57),
    ("AES-256", "SHA256", 77),
    ("AES-128-GCM-16", "SHA1", 57),  # an AEAD's own 16-byte ICV, no HMAC
])
def test_the_mss_note_follows_the_cloud_esp_overhead(encryption, integrity, overhead):
    from lab.advise import esp_overhead, mss_note

    assert esp_overhead(encryption, integrity) == overhead
    import yaml

    data = yaml.safe_load((EXAMPLES / "default.yaml").read_text())
    data.setdefault("vpn_gateway", {})["profile"] = "aws" if "GCM" in encryption else "tencent"
    data["tunnels"][0]["ipsec"] = {"encryption": encryption, "integrity": integrity}
    if "GCM" in encryption:  # the aws profile's own IKE and IPsec lifetime limits
        data["tunnels"][0]["ike"] = {**data["tunnels"][0].get("ike", {}), "sa_lifetime": 28800}
        data["tunnels"][0]["ipsec"]["sa_lifetime"] = 3600
    spec = parse_spec(data)
    note = mss_note(spec)
    assert f"adds up to {overhead} bytes per packet ({overhead + 8} behind NAT)" in note.message
    assert f"--set-mss {1500 - overhead - 8 - 40}" in (note.fix or "")


def test_advise_prints_the_mss_note_after_its_findings(tmp_path):
    import subprocess
    import sys

    from .conftest import ROOT

    done = subprocess.run([sys.executable, "-c", "from lab.cli import main; main()", "advise",
                           str(EXAMPLES / "default.yaml"), "--customer-config",
                           str(CUSTOMER / "swanctl.conf")], capture_output=True, text=True,
                          cwd=ROOT, check=False)
    assert "clamp TCP MSS to 1379" in " ".join(done.stdout.split()), done.stdout + done.stderr


def test_a_private_left_address_as_id_is_called_the_nat_pitfall(tmp_path):
    """A gateway behind NAT, configured the way strongSwan's own examples are (left= its own
    address, no leftid): its ID is the private address; the cloud expects the public one."""
    conf = tmp_path / "ipsec.conf"
    conf.write_text("conn %default\n    keyexchange=ikev2\n    ike=aes128-sha256-modp2048!\n"
                    "    esp=aes128-sha1!\n    authby=secret\n\n"
                    "conn cloud\n    left=172.16.0.2\n    leftsubnet=192.168.1.0/24\n"
                    "    right=203.0.113.1\n    rightsubnet=10.0.1.0/24\n    auto=start\n")
    secrets = tmp_path / "ipsec.secrets"
    secrets.write_text(": PSK \"lab-default-psk-change-me\"\n")
    secrets.chmod(0o600)
    spec = parse_spec(yaml.safe_load((EXAMPLES / "behind-nat.yaml").read_text()))
    items = advise(spec, load_customer_config(conf, secrets))
    ident = [a for a in items if a.topic == "identity" and a.severity == "error"]
    assert len(ident) == 1, items
    assert ident[0].message.startswith("your side identifies as address 172.16.0.2 (the default ID, "
                                       "your address 172.16.0.2); the cloud tunnel expects the "
                                       "customer ID address 198.51.100.2: a private address, so "
                                       "your gateway is presumably behind NAT")
    assert ident[0].fix == "leftid=198.51.100.2, or change the tunnel's customer ID"


GCM_CONF = """conn cloud
    keyexchange=ikev2
    authby=secret
    left=198.51.100.2
    right=203.0.113.1
    leftsubnet=192.168.1.0/24
    rightsubnet=10.0.1.0/24
    ike={ike}
    esp={esp}
    auto=add
"""


@pytest.mark.parametrize(("ike", "esp", "wrong"), [
    # the lab's own render of the newer-gateway example: AEAD IKE with its PRF, ESP without integrity
    ("aes256gcm16-prfsha256-ecp256!", "aes128gcm16-ecp384!", set()),
    ("aes256gcm16-sha256-ecp256!", "aes128gcm16-ecp384!", set()),  # the integrity as PRF
    ("aes256gcm16-sha256-ecp256!", "aes128gcm16-sha256-ecp384!", set()),  # dropped by strongSwan
    ("default", "aes128gcm16-ecp384!", set()),  # strongSwan's AEAD default proposal
    ("aes256gcm16-prfsha384-ecp256!", "aes128gcm16-ecp384!", {"ike-proposal"}),  # another PRF
    ("aes256-sha256-ecp256!", "aes128gcm16-ecp384!", {"ike-proposal"}),  # CBC, not GCM
    ("aes256gcm16-prfsha256-ecp256!", "aes128-sha256-ecp384!", {"esp-proposal"}),
    ("aes256gcm16-prfsha256-ecp256!", "aes128gcm16-modp2048!", {"pfs"}),
])
def test_gcm_proposals_are_judged_as_strongswan_reads_them(tmp_path, ike, esp, wrong):
    path = tmp_path / "ipsec.conf"
    path.write_text(GCM_CONF.format(ike=ike, esp=esp))
    spec = parse_spec(yaml.safe_load((EXAMPLES / "newer-gateway.yaml").read_text()))
    items = advise(spec, load_customer_config(path))
    topics = {a.topic for a in items if a.severity == "error"} & {"ike-proposal", "esp-proposal",
                                                                   "pfs"}
    assert topics == wrong, [a.message for a in items if a.severity == "error"]
    for a in find(items, "ike-proposal", "error"):
        assert "(aes256gcm16-prfsha256-ecp256)" in a.message  # the cloud's, as it proposes it
