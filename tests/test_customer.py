"""The customer gateway running the user's own config: parser extensions, ipsec.conf translation,
strongswan.conf merge (unit), and real labs checked against matching and mismatching cloud tunnels
(integration, on each backend)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from lab import lifecycle
from lab.check import run_check
from lab.customer import CustomerRun, merge_strongswan_conf, translate_ipsec_conf
from lab.errors import LabError
from lab.ipsecconf import parse_secrets
from lab.spec import load_spec
from lab.swanctl import parse, secret_bytes, shared_secrets
from tests.conftest import EXAMPLES

CUSTOMER = EXAMPLES / "customer"
SHANGHAI = CUSTOMER / "tencent-shanghai.yaml"
GUANGZHOU = CUSTOMER / "tencent-guangzhou.yaml"


# -- lab.swanctl.parse extensions -------------------------------------------------------------
def test_include_is_resolved_relative_to_the_file_and_merged(tmp_path):
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "a.conf").write_text("connections {\n  a {\n    version = 2\n  }\n}\n")
    (tmp_path / "conf.d" / "b.conf").write_text("connections {\n  a {\n    version = 1\n  }\n"
                                                "  b {\n    local_addrs = 192.0.2.1, 192.0.2.2\n"
                                                "  }\n}\n")
    text = "connections {\n  z {\n    version = 2\n  }\n}\ninclude conf.d/*.conf\n"
    tree = parse(text, "swanctl.conf", tmp_path)
    assert tree["connections"]["a"] == {"version": "1"}  # later values win, sections merge
    assert tree["connections"]["b"]["local_addrs"] == ["192.0.2.1", "192.0.2.2"]
    assert "z" in tree["connections"]


def test_include_inside_a_section_and_without_base(tmp_path):
    (tmp_path / "vici.conf").write_text("vici {\n  socket = unix:///x\n}\n")
    tree = parse("charon {\n  plugins {\n    include vici.conf\n  }\n}\n", "s.conf", tmp_path)
    assert tree == {"charon": {"plugins": {"vici": {"socket": "unix:///x"}}}}
    with pytest.raises(LabError, match="include"):
        parse("include conf.d/*.conf\n")


def test_section_names_may_be_paths_and_old_syntax_still_parses():
    tree = parse("charon {\n  filelog {\n    /var/log/charon.log {\n      default = 2\n    }\n  }\n}\n")
    assert tree["charon"]["filelog"]["/var/log/charon.log"] == {"default": "2"}
    assert parse((CUSTOMER / "swanctl.conf").read_text())["connections"]["tencent-gz"]["version"] == "2"
    with pytest.raises(LabError, match="cannot read"):
        parse("what is this\n")


# -- ipsec.conf -> swanctl ---------------------------------------------------------------------
def _translate(name: str, secrets: str | None = None):
    parsed = parse_secrets((CUSTOMER / secrets).read_text()) if secrets else None
    return translate_ipsec_conf((CUSTOMER / name).read_text(), name, CUSTOMER, parsed)


def test_ipsec_conf_translation_merges_conns_like_stroke():
    tree, notes = _translate("ipsec.conf", "ipsec.secrets")
    conns = tree["connections"]
    assert list(conns) == ["shanghai-office"]  # identical IKE settings: one connection
    conn = conns["shanghai-office"]
    assert list(conn["children"]) == ["shanghai-office", "shanghai-lab", "shanghai-dmz"]
    assert (conn["version"], conn["proposals"], conn["local_addrs"], conn["remote_addrs"]) == \
        ("1", ["aes128-sha1-modp1024"], ["198.51.100.2"], ["203.0.113.1"])
    assert conn["local"] == {"auth": "psk", "id": "198.51.100.2"}
    assert conn["remote"] == {"auth": "psk", "id": "203.0.113.1"}
    assert (conn["dpd_delay"], conn["dpd_timeout"], conn["unique"]) == ("5s", "30s", "replace")
    assert (conn["reauth_time"], conn["over_time"]) == (f"{86400 - 540}s", "540s")
    dmz = conn["children"]["shanghai-dmz"]  # also= chain: leftsubnet overridden, auto inherited
    assert (dmz["local_ts"], dmz["remote_ts"], dmz["esp_proposals"], dmz["start_action"]) == \
        (["192.168.3.0/24"], ["10.0.2.0/24"], ["aes128-sha1-modp1024"], "none")
    assert (dmz["life_time"], dmz["life_bytes"], dmz["dpd_action"]) == ("3600s", "1887436800",
                                                                        "restart")
    [secret] = shared_secrets(tree)
    assert secret["owners"] == ["198.51.100.2", "203.0.113.1"]
    assert secret["data"] == b"shanghai-lab-psk-change-me"
    assert any("charondebug" in n for n in notes)


def test_ipsec_conf_any_defaultroute_and_defaults():
    tree, _ = _translate("ipsec-any.conf", "ipsec-any.secrets")
    conn = tree["connections"]["tc-1"]
    assert (conn["local_addrs"], conn["remote_addrs"], conn["remote"]["id"]) == \
        (["%any"], ["%any"], "%any")
    assert conn["proposals"] == ["aes256-sha256-modp2048", "aes128-sha1-modp1024", "default"]
    assert conn["children"]["tc-1"]["dpd_action"] == "clear"
    assert secret_bytes(tree["secrets"]["ike-1"]["secret"]) == b"shanghai-lab-psk-change-me"
    tree, notes = _translate("ipsec-defaults.conf")
    conn = tree["connections"]["tencent"]
    assert (conn["version"], conn["proposals"], conn["children"]["tencent"]["start_action"]) == \
        ("0", ["aes128-sha256-modp3072", "default"], "start")
    assert conn["remote"]["id"] == "203.0.113.1"  # starter: the peer's ID is its address
    assert any("no ipsec.secrets" in n for n in notes)


def test_ipsec_conf_dropped_settings_are_named():
    text = ("conn a\n  left=198.51.100.2\n  right=203.0.113.1\n  authby=secret\n"
            "  leftupdown=/etc/hook.sh\n  leftsubnet=192.168.1.0/24\n  rightsubnet=10.0.1.0/24\n"
            "  auto=route\n  strangekey=1\n")
    tree, notes = translate_ipsec_conf(text, "x.conf", None, None)
    assert tree["connections"]["a"]["children"]["a"]["start_action"] == "trap"
    assert any("leftupdown" in n and "host" in n for n in notes)
    assert any("strangekey" in n and "no translation" in n for n in notes)


# -- strongswan.conf ---------------------------------------------------------------------------
def test_strongswan_conf_merge_keeps_theirs_minus_what_the_lab_owns():
    path = CUSTOMER / "strongswan.conf"
    text, notes = merge_strongswan_conf(parse(path.read_text(), str(path), CUSTOMER), "theirs")
    merged = parse(text)
    assert merged["charon"]["retransmit_tries"] == "3"
    assert merged["charon"]["make_before_break"] == "yes"
    for owned in ("load_modular", "filelog", "syslog"):
        assert owned not in merged["charon"]
    assert "vici" not in merged["charon"].get("plugins", {})
    assert any("charon.plugins.vici overridden" in n for n in notes)
    assert any("charon.filelog overridden" in n for n in notes)


# -- topology ----------------------------------------------------------------------------------
def test_fit_spec_takes_subnets_and_address_from_the_config():
    run = CustomerRun.load(CUSTOMER / "swanctl-mismatch.conf")
    spec = run.fit_spec(load_spec(GUANGZHOU))
    cidrs = [str(c) for c in spec.tunnels[0].customer_gateway.idc_cidrs]
    assert cidrs == ["192.168.0.0/24", "192.168.1.0/24", "192.168.9.0/24"]
    assert run.public_ip == "198.51.100.2"
    assert any(a["topic"] == "ike-version" for a in run.advice)
    run = CustomerRun.load(CUSTOMER / "ipsec-any.conf", CUSTOMER / "ipsec-any.secrets")
    run.fit_spec(load_spec(SHANGHAI))
    assert run.public_ip is None and any("spec's customer_gateway.public_ip" in n for n in run.notes)


def test_a_real_public_or_private_address_is_refused_with_what_to_do(tmp_path):
    conf = tmp_path / "ipsec.conf"
    conf.write_text("conn a\n  left=10.20.30.40\n  right=203.0.113.1\n  authby=secret\n"
                    "  leftsubnet=192.168.1.0/24\n  rightsubnet=10.0.1.0/24\n  auto=add\n")
    run = CustomerRun.load(conf)
    with pytest.raises(LabError, match="private address.*%defaultroute"):
        run.fit_spec(load_spec(SHANGHAI))


# -- integration -------------------------------------------------------------------------------
_n = iter(range(1, 100))


def _up(backend, spec, config, secrets=None, strongswan_conf=None):
    name = f"cu{os.getpid() % 1000}-{next(_n)}"
    run = CustomerRun.load(config, secrets, strongswan_conf)
    lifecycle.down(name)
    try:
        lifecycle.up(spec, name, backend, customer=run)
    except BaseException:
        lifecycle.down(name)
        raise
    return name


@pytest.fixture
def customer_lab(backend):
    names: list[str] = []

    def start(*args, **kwargs):
        names.append(_up(backend, *args, **kwargs))
        return names[-1]

    yield start
    for name in names:
        lifecycle.down(name)


def _failed(report):
    return [f for f in report.findings if not f.ok]


def _why(report):
    return [f for f in report.findings if f.check.startswith("why:")]


@pytest.mark.integration
@pytest.mark.kernel
def test_swanctl_conf_as_written_interoperates(customer_lab):
    name = customer_lab(GUANGZHOU, CUSTOMER / "swanctl.conf")
    report = run_check(lifecycle.attach(name))  # as `ipsec-lab check` does after `up`
    assert not _failed(report), _failed(report)
    config = [f for f in report.findings if f.plane == "config"]
    assert "swanctl.conf" in config[0].detail and "loaded as written" in config[0].detail
    mine = [f.detail for f in report.findings if f.check == "CHILD_SA installed" and "cgw1" in f.subject]
    assert sorted(d.split("your child ")[1] for d in mine) == \
        ["tencent-gz/gz-dmz)", "tencent-gz/gz-lab)", "tencent-gz/gz-office)"]


@pytest.mark.integration
@pytest.mark.kernel
def test_ipsec_conf_with_also_interoperates_and_strongswan_conf_is_merged(customer_lab):
    name = customer_lab(SHANGHAI, CUSTOMER / "ipsec.conf", CUSTOMER / "ipsec.secrets",
                        CUSTOMER / "strongswan.conf")
    lab = lifecycle.attach(name)
    report = run_check(lab)
    assert not _failed(report), _failed(report)
    assert "translated" in lab.customer.describe()
    directory = lab.backend.host_dir(name, "cgw1")
    merged = parse((directory / "strongswan.conf").read_text())
    assert merged["charon"]["retransmit_tries"] == "3"  # theirs
    assert "charon.vici" in merged["charon"]["plugins"]["vici"]["socket"]  # ours
    assert "/var/log/charon.log" not in merged["charon"].get("filelog", {})
    assert (directory / "ipsec.conf").read_text() == (CUSTOMER / "ipsec.conf").read_text()


@pytest.mark.integration
def test_ipsec_conf_any_responder_interoperates(customer_lab):
    name = customer_lab(SHANGHAI, CUSTOMER / "ipsec-any.conf", CUSTOMER / "ipsec-any.secrets")
    report = run_check(lifecycle.attach(name))
    assert not _failed(report), _failed(report)


@pytest.mark.integration
def test_ipsec_conf_against_a_mismatching_cloud_tunnel_says_why(customer_lab):
    name = customer_lab(CUSTOMER / "tencent-shanghai-esp-aes256.yaml", CUSTOMER / "ipsec.conf",
                        CUSTOMER / "ipsec.secrets")
    report = run_check(lifecycle.attach(name))
    assert not report.ok
    assert [f.check for f in _why(report)] == ["why: ipsec proposal mismatch"]
    advice = [f.detail for f in report.findings if f.check == "advice (esp-proposal)"]
    assert advice and "your esp= offers aes128-sha1-modp1024 only; the cloud tunnel's ESP is set " \
        "to AES-256/SHA256/DH2" in advice[0]


@pytest.mark.integration
def test_swanctl_conf_mismatch_says_why_in_the_users_terms(customer_lab):
    name = customer_lab(GUANGZHOU, CUSTOMER / "swanctl-mismatch.conf")
    report = run_check(lifecycle.attach(name))
    assert not report.ok
    assert [f.check for f in _why(report)] == ["why: ike version mismatch"]
    advice = {f.check: f for f in report.findings if f.check.startswith("advice")}
    assert "your side speaks IKEv1; the cloud tunnel is set to IKEv2" in \
        advice["advice (ike-version)"].detail
    assert advice["advice (ike-version)"].subject == "your config: connections.tencent-gz.version"


@pytest.mark.integration
def test_cli_up_and_check_report_the_customer_config(backend):
    name = f"cu{os.getpid() % 1000}-cli"
    cli = [sys.executable, "-m", "lab.cli"]
    try:
        up = subprocess.run([*cli, "up", str(GUANGZHOU), "--name", name, "--backend", backend,
                             "--customer-config", str(CUSTOMER / "swanctl.conf")],
                            capture_output=True, text=True, timeout=180)
        assert up.returncode == 0, up.stderr
        check = subprocess.run([*cli, "check", "--name", name], capture_output=True, text=True,
                               timeout=180)
        assert check.returncode == 0, check.stdout
        assert "customer gateway: swanctl.conf" in check.stdout
    finally:
        lifecycle.down(name)
