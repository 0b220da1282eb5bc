"""The customer gateway running the user's own config: parser extensions, ipsec.conf translation,
strongswan.conf merge (unit), and real labs checked against matching and mismatching cloud tunnels
(integration, on each backend)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from lab import lifecycle
from lab.check import run_check
from lab.customer import OwnConfig
from lab.customer.translate import merge_strongswan_conf, settings_text, translate_ipsec_conf
from lab.errors import LabError
from lab.ipsecconf import parse_secrets
from lab.matrix.cases import Case
from lab.matrix.customer import run_matrix, why_not
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
    assert (conn["local_addrs"], conn["remote_addrs"]) == (["%any"], ["%any"])
    assert "id" not in conn["remote"]  # rightid=%any: stroke sets no ID (tests/test_starter.py)
    assert conn["proposals"] == ["aes256-sha256-modp2048", "aes128-sha1-modp1024", "default"]
    assert conn["children"]["tc-1"]["dpd_action"] == "clear"
    assert secret_bytes(tree["secrets"]["ike-1"]["secret"]) == b"shanghai-lab-psk-change-me"
    tree, notes = _translate("ipsec-defaults.conf")
    conn = tree["connections"]["tencent"]
    assert (conn["version"], conn["proposals"], conn["children"]["tencent"]["start_action"]) == \
        ("0", ["aes128-sha256-modp3072", "default"], "start")
    assert conn["remote"]["id"] == "203.0.113.1"  # starter: the peer's ID is its address
    assert conn["local"]["id"] == "198.51.100.2"  # and ours is ours
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
def test_fit_takes_subnets_and_address_from_the_config():
    run = OwnConfig.load(CUSTOMER / "swanctl-mismatch.conf")
    spec = run.fit(load_spec(GUANGZHOU))
    cidrs = [str(c) for c in spec.tunnels[0].customer_gateway.idc_cidrs]
    assert cidrs == ["192.168.0.0/24", "192.168.1.0/24", "192.168.9.0/24"]
    assert run.public_ip == "198.51.100.2"
    assert any(a["topic"] == "ike-version" for a in run.advice)
    run = OwnConfig.load(CUSTOMER / "ipsec-any.conf", CUSTOMER / "ipsec-any.secrets")
    run.fit(load_spec(SHANGHAI))
    assert run.public_ip is None and any("spec's customer_gateway.public_ip" in n for n in run.notes)


# -- swanctl.conf read by strongSwan's own swanctl ---------------------------------------------
# The file of the issue: sections opened with a setting on the same line, closed after a setting.
ONE_LINE = """connections {
  cloud { version = 2
    local_addrs = 198.51.100.2
    remote_addrs = 203.0.113.1
    proposals = aes256-sha256-modp2048
    rekey_time = 86400s
    over_time = 0s
    dpd_delay = 10s
    local { auth = psk
      id = @cgw.idc.example }
    remote { auth = psk
      id = @vpngw.cloud.example }
    children { gz-office { local_ts = 192.168.0.0/24
        remote_ts = 10.0.0.0/24
        esp_proposals = aes256-sha256-modp2048
        life_time = 3600s
        life_bytes = 1887436800 }
      gz-lab { local_ts = 192.168.1.0/24
        remote_ts = 10.0.0.0/24
        esp_proposals = aes256-sha256-modp2048
        life_time = 3600s
        life_bytes = 1887436800 }
      gz-dmz { local_ts = 192.168.2.0/24
        remote_ts = 10.0.1.0/24
        esp_proposals = aes256-sha256-modp2048
        life_time = 3600s
        life_bytes = 1887436800 } }
  }
}
secrets { ike-cloud { id = @vpngw.cloud.example
  secret = "%s" } }
"""


def _one_line(tmp_path):
    psk = load_spec(GUANGZHOU).tunnels[0].pre_shared_key.get_secret_value()
    conf = tmp_path / "swanctl.conf"
    conf.write_text(ONE_LINE % psk)
    return conf


def test_swanctl_conf_is_read_as_swanctl_reads_it(tmp_path):
    """One-line sections, which the lab's own reader refuses, mean to the lab what they mean to
    swanctl: the tree is what swanctl sends over VICI."""
    conf = _one_line(tmp_path)
    with pytest.raises(LabError, match="cannot read 'cloud { version = 2'"):
        parse(conf.read_text(), str(conf))  # the lab's reader, for its own renders only
    run = OwnConfig.load(conf)
    cloud = run.tree["connections"]["cloud"]
    assert cloud["version"] == "2" and cloud["local"] == {"auth": "psk", "id": "@cgw.idc.example"}
    assert cloud["children"]["gz-lab"]["local_ts"] == ["192.168.1.0/24"]
    (secret,) = shared_secrets(run.tree)
    assert secret["owners"] == ["@vpngw.cloud.example"]
    assert secret["data"] == load_spec(GUANGZHOU).tunnels[0].pre_shared_key.get_secret_value().encode()
    assert [c.name for c in run.view.connections] == ["cloud"]


def test_a_file_swanctl_refuses_shows_swanctls_words_with_file_and_line(tmp_path):
    conf = tmp_path / "swanctl.conf"
    conf.write_text("connections {\n  c {\n    remote_addrs = 203.0.113.1\n    = x\n  }\n}\n")
    with pytest.raises(LabError) as caught:
        OwnConfig.load(conf)
    text = str(caught.value)
    assert text.startswith("--customer-config: strongSwan's swanctl refused ")
    assert f"{conf}:4: syntax error, unexpected '='" in text and "invalid config file" in text


def test_advise_reads_a_one_line_section_file_as_its_usual_layout(tmp_path):
    """The same configuration written one setting per line gets the same advice."""
    conf = _one_line(tmp_path)
    usual = tmp_path / "usual.conf"
    usual.write_text(settings_text(OwnConfig.load(conf).tree))
    assert usual.read_text().count("\n") > conf.read_text().count("\n")
    advice = []
    for path in (conf, usual):
        done = subprocess.run([sys.executable, "-c", "from lab.cli import main; main()", "advise",
                               str(GUANGZHOU), "--customer-config", str(path), "--json"],
                              capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode in (0, 1) and "Traceback" not in done.stderr, done.stderr
        advice.append(json.loads(done.stdout)["advice"])
    assert advice[0] == advice[1]


def test_advise_has_a_scratch_daemon_judge_the_values(tmp_path):
    """A value swanctl's parser passes but strongSwan refuses (an unknown cipher) is refused by
    advise with the daemon's words, before any lab runs."""
    if os.geteuid() != 0:
        pytest.skip("needs root: the scratch daemon's network namespace")
    conf = tmp_path / "swanctl.conf"
    conf.write_text(ONE_LINE.replace("esp_proposals = aes256-sha256-modp2048",
                                     "esp_proposals = aes999-sha256", 1) % "k")
    done = subprocess.run([sys.executable, "-c", "from lab.cli import main; main()", "advise",
                           str(GUANGZHOU), "--customer-config", str(conf)],
                          capture_output=True, text=True, timeout=120, check=False)
    said = done.stdout + done.stderr
    assert done.returncode == 2 and "Traceback" not in said, said
    assert "strongSwan's daemon refused what" in said
    assert "connection 'cloud': Command failed: invalid value for: esp_proposals" in said


# -- integration -------------------------------------------------------------------------------
_n = iter(range(1, 100))


def _up(backend, spec, config, secrets=None, strongswan_conf=None):
    name = f"cu{os.getpid() % 1000}-{next(_n)}"
    run = OwnConfig.load(config, secrets, strongswan_conf)
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
    assert "swanctl.conf" in config[0].detail and "read by strongSwan's own swanctl" in \
        config[0].detail
    mine = [f.detail for f in report.findings if f.check == "CHILD_SA installed" and "cgw1" in f.subject]
    assert sorted(d.split("your child ")[1] for d in mine) == \
        ["tencent-gz/gz-dmz)", "tencent-gz/gz-lab)", "tencent-gz/gz-office)"]


@pytest.mark.integration
def test_a_one_line_section_swanctl_conf_interoperates(customer_lab, tmp_path):
    name = customer_lab(GUANGZHOU, _one_line(tmp_path))
    report = run_check(lifecycle.attach(name))
    assert not _failed(report), _failed(report)
    mine = [f.detail for f in report.findings if f.check == "CHILD_SA installed" and "cgw1" in f.subject]
    assert sorted(d.split("your child ")[1] for d in mine) == \
        ["cloud/gz-dmz)", "cloud/gz-lab)", "cloud/gz-office)"]


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


# -- the customer-config matrix judges PFS too ----------------------------------------------------
_PFS_CONF = """connections {
    cloud {
        version = 2
        local_addrs = 198.51.100.2
        remote_addrs = 203.0.113.1
        proposals = aes256-sha256-modp2048
        local {
            auth = psk
        }
        remote {
            auth = psk
        }
        children {
            office {
                local_ts = 192.168.0.0/24
                remote_ts = 10.0.0.0/24
                esp_proposals = aes256-sha256-%s
            }
        }
    }
}
secrets {
    ike-cloud {
        id-1 = 198.51.100.2
        id-2 = 203.0.113.1
        secret = "guangzhou-lab-psk-change-me"
    }
}
"""
_CLOUD_CASE = {"ike_version": "v2", "exchange_mode": "main", "ike_encryption": "AES-256",
               "ike_integrity": "SHA256", "dh_group": "DH14", "local_id_type": "address",
               "peer_id_type": "address", "ipsec_encryption": "AES-256",
               "ipsec_integrity": "SHA256", "pfs": "DH14"}


@pytest.mark.integration
@pytest.mark.parametrize("group, interoperates", [("modp2048", True), ("modp1024", False)])
def test_customer_matrix_judges_ikev2_pfs_from_a_rekey(backend, tmp_path, group, interoperates):
    """IKEv2's first CHILD_SA has no key exchange, so a PFS group mismatch only shows when the
    CHILD_SA is rekeyed: the cell must say so, not report the config as interoperating."""
    spec = yaml.safe_load(GUANGZHOU.read_text())
    spec["tunnels"][0].update(spd_rules=[{"local": ["10.0.0.0/24"], "peer": ["192.168.0.0/24"]}],
                              health_check={"enabled": False})
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    conf = tmp_path / "swanctl.conf"
    conf.write_text(_PFS_CONF % group)
    name = f"cp{os.getpid() % 1000}{group[-2:]}"
    rows = run_matrix([Case("pfs-cell", dict(_CLOUD_CASE))], tmp_path / "spec.yaml",
                      lambda: OwnConfig.load(conf), backend, name)
    assert [r["interoperates"] for r in rows] == [interoperates], rows
    if not interoperates:
        assert rows[0]["why"] == "pfs mismatch", rows
    assert not lifecycle.all_names() or name not in lifecycle.all_names()


@pytest.mark.integration
def test_customer_matrix_reads_a_one_line_section_file(tmp_path):
    """The matrix cell of the PFS test above, its customer file written with one-line sections
    (which swanctl reads and the lab's own reader would refuse)."""
    if os.geteuid() != 0:
        pytest.skip("needs root: network namespaces and strongSwan daemons")
    spec = yaml.safe_load(GUANGZHOU.read_text())
    spec["tunnels"][0].update(spd_rules=[{"local": ["10.0.0.0/24"], "peer": ["192.168.0.0/24"]}],
                              health_check={"enabled": False})
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    psk = load_spec(GUANGZHOU).tunnels[0].pre_shared_key.get_secret_value()
    conf = tmp_path / "swanctl.conf"
    conf.write_text(
        "connections { cloud { version = 2\n  local_addrs = 198.51.100.2\n"
        "  remote_addrs = 203.0.113.1\n  proposals = aes256-sha256-modp2048\n"
        "  local { auth = psk }\n  remote { auth = psk }\n"
        "  children { office { local_ts = 192.168.0.0/24\n    remote_ts = 10.0.0.0/24\n"
        f"    esp_proposals = aes256-sha256-modp2048 }} }} }} }}\n"
        f"secrets {{ ike-cloud {{ secret = \"{psk}\" }} }}\n")
    with pytest.raises(LabError, match="cannot read"):
        parse(conf.read_text(), str(conf))
    name = f"cp{os.getpid() % 1000}ol"
    rows = run_matrix([Case("one-line-cell", dict(_CLOUD_CASE))], tmp_path / "spec.yaml",
                      lambda: OwnConfig.load(conf), "netns", name)
    assert [r["interoperates"] for r in rows] == [True], rows


def test_customer_matrix_says_which_check_failed_when_no_reason_was_found():
    from lab.findings import CheckReport

    report = CheckReport("l", "netns", "kernel")
    report.add("t", "vpngw (cloud)", "control", "IKE_SA established", True)
    report.add("t", "m1 10.0.0.10 -> 192.168.0.10", "data", "udp vpc->idc", False,
               "marker not delivered")
    assert why_not(report) == "data: udp vpc->idc (m1 10.0.0.10 -> 192.168.0.10: marker not delivered)"
