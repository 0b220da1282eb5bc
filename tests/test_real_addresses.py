"""A user's own config with its real addresses, run unmodified: a private WAN address goes behind
the lab's NAT router, a real public one (the gateway's, or the cloud's the config names as its
peer) is used as written, inside the lab's own namespaces only. The configs are written here in
strongSwan's own styles (ipsec.conf with `conn %default` and @fqdn IDs; swanctl.conf)."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lab import lifecycle
from lab.backends import get_backend
from lab.check import run_check
from lab.customer import OwnConfig
from lab.errors import LabError
from lab.plan import build_plan, nat_router_address
from lab.running import Lab
from lab.spec import load_spec
from tests.conftest import EXAMPLES

SHANGHAI = EXAMPLES / "customer" / "tencent-shanghai.yaml"
CLOUD = "129.226.30.40"  # what a real Tencent VPN gateway's address looks like
PUBLIC = "52.80.1.2"  # a real public address of a customer gateway
PSK = "shanghai-lab-psk-change-me"

# ipsec.conf as strongSwan's own docs write it: %default, a private left=, FQDN IDs
IPSEC_FQDN = f"""config setup
    uniqueids=yes

conn %default
    keyexchange=ikev1
    authby=secret
    ikelifetime=24h
    lifetime=1h
    ike=aes128-sha1-modp1024!
    esp=aes128-sha1-modp1024!
    dpddelay=10s
    dpdtimeout=30s
    dpdaction=restart

conn tencent
    left=192.168.0.2
    leftid=@cgw.idc.example
    leftsubnet=192.168.1.0/24
    right={CLOUD}
    rightid=@vpn.cloud.example
    rightsubnet=10.0.1.0/24
    auto=start
"""
SECRETS_FQDN = f'@cgw.idc.example @vpn.cloud.example : PSK "{PSK}"\n'

# swanctl.conf: a real public local address, the cloud at its real address, address IDs
SWANCTL_PUBLIC = f"""connections {{
  tencent {{
    version = 1
    local_addrs = {PUBLIC}
    remote_addrs = {CLOUD}
    proposals = aes128-sha1-modp1024
    local {{
      auth = psk
    }}
    remote {{
      auth = psk
    }}
    children {{
      office {{
        local_ts = 192.168.1.0/24
        remote_ts = 10.0.1.0/24
        esp_proposals = aes128-sha1-modp1024
        start_action = start
      }}
    }}
  }}
}}
secrets {{
  ike-cloud {{
    id-a = {PUBLIC}
    id-b = {CLOUD}
    secret = "{PSK}"
  }}
}}
"""


def _spec(tmp_path: Path, **ids: dict) -> Path:
    """The Shanghai tunnel with one mapping (10.0.1.0/24 <-> 192.168.1.0/24), passive: the
    user's config initiates, as it would against the real cloud."""
    data = yaml.safe_load(SHANGHAI.read_text())
    t = data["tunnels"][0]
    t["spd_rules"] = [{"local": ["10.0.1.0/24"], "peer": ["192.168.1.0/24"]}]
    t["negotiation_type"] = "passive"
    t["ike"].update(ids)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _fqdn_spec(tmp_path: Path) -> Path:
    return _spec(tmp_path, local_id={"type": "fqdn", "value": "vpn.cloud.example"},
                 peer_id={"type": "fqdn", "value": "cgw.idc.example"})


def _config(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _ipsec(tmp_path: Path, text: str = IPSEC_FQDN, secrets: str = SECRETS_FQDN) -> OwnConfig:
    return OwnConfig.load(_config(tmp_path, "ipsec.conf", text),
                          _config(tmp_path, "ipsec.secrets", secrets))


# -- where the lab puts the config's addresses -------------------------------------------------
def test_a_private_address_goes_behind_nat_and_the_real_cloud_address_is_kept(tmp_path):
    run = _ipsec(tmp_path)
    spec = run.fit(load_spec(_fqdn_spec(tmp_path)))
    assert (run.private_ip, run.customer_ip, run.cloud_ip) == ("192.168.0.2", None, CLOUD)
    plan = build_plan(spec, "ra", _dataplane(), placement=run.placement())
    cloud, cust = plan.gateways
    assert str(cloud.public_ip) == CLOUD
    assert str(cust.public_ip) == "198.51.100.2"  # the NAT's public side: the spec's address
    nat = next(n for n in plan.nodes if n.role == "nat-router").nat
    assert nat is not None and (str(nat.private), str(nat.public)) == ("192.168.0.2", "198.51.100.2")
    assert any("behind a NAT router whose public address is 198.51.100.2" in n for n in run.notes)
    assert not [a for a in run.advice if a["severity"] == "error"], run.advice


def test_behind_nat_an_address_id_that_is_public_is_what_the_cloud_sees(tmp_path):
    text = IPSEC_FQDN.replace("leftid=@cgw.idc.example", f"leftid={PUBLIC}").replace(
        "rightid=@vpn.cloud.example\n", "")
    run = _ipsec(tmp_path, text, f'{PUBLIC} {CLOUD} : PSK "{PSK}"\n')
    spec = run.fit(load_spec(_spec(tmp_path)))
    cloud, cust = build_plan(spec, "ra", _dataplane(), placement=run.placement()).gateways
    assert (str(cloud.public_ip), str(cust.public_ip)) == (CLOUD, PUBLIC)
    # the cloud's address IDs follow its addresses, as on the real cloud
    assert cloud.connections[0].remote_id == PUBLIC and cloud.connections[0].local_id == CLOUD
    assert not [a for a in run.advice if a["severity"] == "error"], run.advice


def test_a_real_public_address_is_used_as_written_on_both_ends(tmp_path):
    run = OwnConfig.load(_config(tmp_path, "swanctl.conf", SWANCTL_PUBLIC))
    spec = run.fit(load_spec(_spec(tmp_path)))
    assert (run.private_ip, run.customer_ip, run.cloud_ip) == (None, PUBLIC, CLOUD)
    plan = build_plan(spec, "ra", _dataplane(), placement=run.placement())
    assert not [n for n in plan.nodes if n.role == "nat-router"]
    cgw = next(n for n in plan.nodes if n.name == "cgw1")
    assert [str(a) for a in cgw.iface("eth0").addresses] == [f"{PUBLIC}/32"]
    assert not [a for a in run.advice if a["severity"] == "error"], run.advice


def test_the_default_id_behind_nat_is_the_private_address_and_advise_says_so(tmp_path):
    text = IPSEC_FQDN.replace("    leftid=@cgw.idc.example\n", "")
    run = _ipsec(tmp_path, text, f'%any @vpn.cloud.example : PSK "{PSK}"\n')
    run.fit(load_spec(_fqdn_spec(tmp_path)))
    identity = [a for a in run.advice if a["topic"] == "identity" and a["severity"] == "error"]
    assert identity and "your side identifies as address 192.168.0.2" in identity[0]["message"]
    assert identity[0]["fix"].startswith("leftid=@cgw.idc.example")


@pytest.mark.parametrize(("left", "problem"), [
    ("127.0.0.2", "127.0.0.2 is not an address a gateway's WAN can have"),
    ("169.254.0.9", "169.254.0.9 is not an address a gateway's WAN can have"),
    ("192.168.1.2", "overlaps 192.168.1.0/24, a range the tunnel carries"),
    ("10.0.1.7", "overlaps 10.0.0.0/16, a range the tunnel carries"),
    ("192.168.0.0", "192.168.0.0 is the network or broadcast address"),
])
def test_an_address_the_lab_cannot_give_a_gateway_is_refused_naming_it(tmp_path, left, problem):
    run = _ipsec(tmp_path, IPSEC_FQDN.replace("left=192.168.0.2", f"left={left}"))
    with pytest.raises(LabError, match="connection tencent: your local address") as exc:
        run.fit(load_spec(_fqdn_spec(tmp_path)))
    assert problem in str(exc.value)


def test_a_private_peer_address_is_refused(tmp_path):
    run = _ipsec(tmp_path, IPSEC_FQDN.replace(f"right={CLOUD}", "right=10.200.0.1"))
    with pytest.raises(LabError, match="10.200.0.1 is not a public address"):
        run.fit(load_spec(_fqdn_spec(tmp_path)))


def test_a_router_style_first_address_moves_the_nat_router_to_the_last():
    assert str(nat_router_address(ipaddress.IPv4Address("192.168.0.1"))) == "192.168.0.254"
    assert str(nat_router_address(ipaddress.IPv4Address("192.168.0.2"))) == "192.168.0.1"


def _dataplane():
    from lab.dataplane import detect
    return detect()


# -- real labs -----------------------------------------------------------------------------
@pytest.fixture
def own_lab(backend, tmp_path):
    names: list[str] = []

    def start(spec: Path, run: OwnConfig) -> Lab:
        name = f"ra{os.getpid() % 10000}{len(names)}"
        lifecycle.down(name)
        names.append(name)
        lifecycle.up(spec, name, backend, customer=run)
        return lifecycle.attach(name)

    yield start
    for name in names:
        lifecycle.down(name)
        assert get_backend(backend).leftovers(name) == []


def _root_namespace() -> str:
    addrs = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True)
    routes = subprocess.run(["ip", "-4", "route", "show", "table", "all"], capture_output=True,
                            text=True)
    return addrs.stdout + routes.stdout


def _failed(report):
    return [f for f in report.findings if not f.ok]


@pytest.mark.integration
@pytest.mark.kernel
def test_an_ipsec_conf_with_its_private_address_and_fqdn_ids_runs_unmodified(own_lab, tmp_path):
    before = _root_namespace()
    lab = own_lab(_fqdn_spec(tmp_path), _ipsec(tmp_path))
    report = run_check(lab)
    assert not _failed(report), _failed(report)
    rows = {f.check: f for f in report.findings}
    assert rows["NAT detected"].ok
    assert rows["addresses"].detail == (
        f"your config's addresses, in the lab's own namespaces only: cloud gateway {CLOUD} "
        "(spec: 203.0.113.1); customer gateway 192.168.0.2 behind NAT, seen as 198.51.100.2 "
        "(spec: 198.51.100.2)")
    # the user's file is on the gateway as written, and nothing of it reached the root namespace
    cgw = lab.backend.host_dir(lab.state.name, "cgw1")
    assert (cgw / "ipsec.conf").read_text() == IPSEC_FQDN
    assert CLOUD not in _root_namespace() and _root_namespace() == before


@pytest.mark.integration
@pytest.mark.kernel
def test_a_swanctl_conf_with_real_public_addresses_runs_unmodified(own_lab, tmp_path):
    lab = own_lab(_spec(tmp_path), OwnConfig.load(_config(tmp_path, "swanctl.conf",
                                                          SWANCTL_PUBLIC)))
    report = run_check(lab)
    assert not _failed(report), _failed(report)
    ike = [f.detail for f in report.findings if f.check == "IKE_SA established"]
    assert any(f"{PUBLIC} <-> {CLOUD}" in d for d in ike) and \
        any(f"{CLOUD} <-> {PUBLIC}" in d for d in ike), ike
    assert not any(f.check == "NAT detected" and f.ok for f in report.findings
                   if "customer" in f.subject and "nat-local=yes" in f.detail)
    assert PUBLIC not in _root_namespace() and CLOUD not in _root_namespace()


@pytest.mark.integration
def test_behind_nat_the_private_address_as_id_fails_and_check_says_what_to_set(own_lab, tmp_path):
    text = IPSEC_FQDN.replace("    leftid=@cgw.idc.example\n", "")
    lab = own_lab(_fqdn_spec(tmp_path),
                  _ipsec(tmp_path, text, f'%any @vpn.cloud.example : PSK "{PSK}"\n'))
    report = run_check(lab)
    assert not report.ok
    why = [f.check for f in report.findings if f.check.startswith("why:")]
    assert why == ["why: id mismatch behind NAT"], why
    advice = [f.detail for f in report.findings if f.check == "advice (identity)"]
    assert advice and "your side identifies as address 192.168.0.2" in advice[0] and \
        "Fix: leftid=@cgw.idc.example" in advice[0]


def test_advise_compares_at_the_configs_own_addresses(tmp_path):
    spec = _fqdn_spec(tmp_path)
    _ipsec(tmp_path)
    done = subprocess.run([sys.executable, "-m", "lab.cli", "advise", str(spec), "--customer-config",
                           str(tmp_path / "ipsec.conf"), "--secrets", str(tmp_path / "ipsec.secrets"),
                           "--json"], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert result["ok"] and not [a for a in result["advice"] if a["topic"] == "addresses"
                                 and a["severity"] == "error"]
    assert any(f"the cloud gateway is at {CLOUD}" in n for n in result["notes"]
               if isinstance(n, str))
    assert PSK not in done.stdout + done.stderr
