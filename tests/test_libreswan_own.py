"""A user's own libreswan ipsec.conf run unmodified by pluto on the customer gateway (`up
--customer-config`), against the cloud tunnel of the spec, and judged by `check` as a user's
strongSwan config is. The live labs need the kernel's ESP: `make test-kernel` runs them in the
VM guest; here the lab's refusal is asserted instead."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lab import lifecycle
from lab import state as labstate
from lab.backends import get_backend
from lab.check import run_check
from lab.customer import LIBRESWAN_KIND, OwnLibreswan, load_own, restore
from lab.dataplane import detect
from lab.errors import LabError
from lab.libreswan import status
from lab.libreswan.install import NEEDS_ESP
from lab.matrix.cases import Case
from lab.matrix.customer import run_matrix as run_customer_matrix
from lab.spec import load_spec
from tests.conftest import EXAMPLES
from tests.test_real_addresses import CLOUD, IPSEC_FQDN
from tests.test_real_addresses import PSK as SHANGHAI_PSK

CUSTOMER = EXAMPLES / "customer"
CONF, SECRETS = CUSTOMER / "libreswan.conf", CUSTOMER / "libreswan.secrets"
MISMATCH = CUSTOMER / "libreswan-mismatch.conf"
DEFAULT = EXAMPLES / "default.yaml"
PSK = "lab-default-psk-change-me"


def test_a_libreswan_file_is_run_by_pluto_as_written():
    """Told apart by its dialect; its two files go to the gateway byte for byte; the fitted
    spec makes the customer gateway pluto; the lab state brings the same side back."""
    run = load_own(CONF, SECRETS)
    assert isinstance(run, OwnLibreswan) and run.kind == LIBRESWAN_KIND
    files = run.gateway_files({"ipsec.conf": "lab's", "ipsec.secrets": "lab's",
                               "gateway.nft": "firewall"})
    assert files == {"ipsec.conf": CONF.read_text(), "ipsec.secrets": SECRETS.read_text(),
                     "gateway.nft": "firewall"}
    fitted = run.fit(load_spec(DEFAULT))
    assert fitted.tunnels[0].customer_gateway.implementation == "libreswan"
    assert [str(c) for c in fitted.tunnels[0].customer_gateway.idc_cidrs] == ["192.168.1.0/24"]
    assert run.advice and not [a for a in run.advice if a["severity"] == "error"]
    assert "libreswan's pluto" in run.describe()


def test_the_state_restores_the_libreswan_side(tmp_path):
    run = load_own(CONF, SECRETS)
    run.fit(load_spec(DEFAULT))
    run.save(tmp_path)
    back = restore(tmp_path)
    assert isinstance(back, OwnLibreswan) and back.config_path == run.config_path
    assert PSK not in (tmp_path / "customer.json").read_text()


@pytest.mark.parametrize(("text", "problem"), [
    ("include ipsec.d/*.conf\n", "relative path, which libreswan 4.10 resolves from the working"),
    ("conn a\n    ikev2=yes\n    left=%defaultroute\n    right=203.0.113.1\n    auto=ignore\n",
     "no conn to load"),
    ("conn a\n    ikev2=yes\n    left=%defaultroute\n    right=203.0.113.1\n    bogus=1\n"
     "    auto=add\n", "libreswan's parser refused it"),
])
def test_what_the_lab_cannot_run_is_refused_naming_it(tmp_path, text, problem):
    path = tmp_path / "ipsec.conf"
    path.write_text("config setup\n    uniqueids=yes\n\n" + text
                    + "conn b\n    salifetime=1h\n    also=a\n" * ("include" in text))
    with pytest.raises(LabError, match=problem):
        load_own(path)


def test_a_strongswan_conf_does_not_apply_to_pluto():
    with pytest.raises(LabError, match="--customer-strongswan-conf: .* a strongswan.conf does not"):
        load_own(CONF, SECRETS, CUSTOMER / "strongswan.conf")


# -- live ------------------------------------------------------------------------------------
@pytest.fixture
def lab_name():
    if os.geteuid() != 0:
        pytest.skip("needs root: network namespaces and IKE daemons")
    name = f"lso{os.getpid() % 10000}"
    lifecycle.down(name)
    yield name
    lifecycle.down(name)
    assert get_backend("netns").leftovers(name) == []
    assert not labstate.lab_dir(name).exists()


def _up(name: str, config: Path, secrets: Path = SECRETS, spec: Path = DEFAULT):
    lifecycle.up(spec, name, "netns", customer=load_own(config, secrets))
    return lifecycle.attach(name)


@pytest.mark.integration
@pytest.mark.kernel
def test_a_users_libreswan_config_passes_check(lab_name):
    """The example, as written, against the default lab's cloud tunnel (the cloud initiates,
    the user's auto=start conn is already up then): both ends, the data plane and PFS after a
    CHILD_SA rekey pass; pluto runs the gateway, not charon. Without ESP: refused first."""
    if detect().name != "kernel":
        with pytest.raises(LabError, match="libreswan needs the kernel's ESP"):
            _up(lab_name, CONF)
        assert NEEDS_ESP and not labstate.lab_dir(lab_name).exists()
        return
    lab = _up(lab_name, CONF)
    assert lab.state.pids.get("pluto:cgw1") and "charon:cgw1" not in lab.state.pids
    cgw = lab.backend.host_dir(lab.state.name, "cgw1")
    assert (cgw / "ipsec.conf").read_text() == CONF.read_text()
    report = run_check(lab)
    failed = [f for f in report.findings if not f.ok]
    assert not failed, failed
    rows = [f for f in report.findings if f.subject.startswith("cgw1 (customer)")]
    ike = next(f for f in rows if f.check == "IKE_SA established")
    assert ike.detail.startswith("IKEv2 ") and "(your connection tencent)" in ike.detail
    pfs = [f for f in report.findings if f.check == "PFS"]
    assert len(pfs) == 2 and all("MODP_2048 after a CHILD_SA rekey" in f.detail for f in pfs)
    data = [f for f in report.findings if f.plane == "data" and not f.info]
    assert data and all(f.ok for f in data), data  # probes crossed the tunnel both ways


@pytest.mark.integration
@pytest.mark.kernel
def test_a_mismatched_libreswan_config_fails_check_in_its_own_keywords(lab_name, tmp_path):
    """esp= the cloud does not accept: the lab still comes up, `check` fails with the reason
    read from both daemons' logs and the advice naming libreswan's esp=."""
    if detect().name != "kernel":
        pytest.skip("libreswan needs the kernel's ESP: `make test-kernel` runs this in the guest")
    lab = _up(lab_name, MISMATCH)
    report = run_check(lab)
    assert not report.ok
    why = [f.check for f in report.findings if f.check.startswith("why:")]
    assert why == ["why: ipsec proposal mismatch"], why
    advice = [f.detail for f in report.findings if f.check == "advice (esp-proposal)"]
    assert advice and "your esp= offers aes256-sha2_256 only" in advice[0], advice


@pytest.mark.integration
@pytest.mark.kernel
def test_the_cli_runs_a_libreswan_config_or_says_why_not(lab_name):
    """`ipsec-lab up --customer-config` with a libreswan file: up where the kernel has ESP,
    a clear refusal (no traceback, nothing built) where it has not."""
    done = subprocess.run([sys.executable, "-m", "lab.cli", "up", str(DEFAULT), "--name",
                           lab_name, "--backend", "netns", "--customer-config", str(CONF),
                           "--customer-secrets", str(SECRETS)],
                          capture_output=True, text=True, timeout=600, check=False)
    out = done.stdout + done.stderr
    assert "Traceback" not in out and PSK not in out
    if detect().name != "kernel":
        assert done.returncode != 0 and "libreswan needs the kernel's ESP" in out, out
        assert not labstate.lab_dir(lab_name).exists()
        return
    assert done.returncode == 0, out
    saved = yaml.safe_load((labstate.lab_dir(lab_name) / "spec.yaml").read_text())
    assert saved["tunnels"][0]["customer_gateway"]["implementation"] == "libreswan"
    assert lifecycle.attach(lab_name).plan.gateway("cgw1").pluto


# IKEv1 Main Mode behind NAT with FQDN IDs and the real cloud address, as a customer's libreswan
# gateway at a private address writes it (libreswan 4.10 needs ikev1-policy=accept for IKEv1);
# its conn is word for word the strongSwan one of test_real_addresses

BEHIND_NAT = """config setup
    ikev1-policy=accept

conn %default
    ikev2=no
    authby=secret
    ike=aes128-sha1;modp2048
    esp=aes128-sha1
    pfs=yes
    ikelifetime=24h
    salifetime=1h
    dpddelay=10
    dpdtimeout=30
    dpdaction=restart

""" + IPSEC_FQDN[IPSEC_FQDN.index("conn tencent"):]  # the same conn as strongSwan's


def _shanghai(tmp_path: Path) -> Path:
    """The Shanghai tunnel, one mapping, passive (the user's conn initiates), DH14 (libreswan
    4.10 has no DH2), FQDN IDs."""
    data = yaml.safe_load((CUSTOMER / "tencent-shanghai.yaml").read_text())
    t = data["tunnels"][0]
    t["spd_rules"] = [{"local": ["10.0.1.0/24"], "peer": ["192.168.1.0/24"]}]
    t["negotiation_type"] = "passive"
    t["ike"].update(dh_group="DH14", local_id={"type": "fqdn", "value": "vpn.cloud.example"},
                    peer_id={"type": "fqdn", "value": "cgw.idc.example"})
    t["ipsec"]["pfs"] = "DH14"
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_behind_nat_the_libreswan_config_is_placed_where_it_says(tmp_path):
    conf, secrets = tmp_path / "ipsec.conf", tmp_path / "ipsec.secrets"
    conf.write_text(BEHIND_NAT)
    secrets.write_text(f'@cgw.idc.example @vpn.cloud.example : PSK "{SHANGHAI_PSK}"\n')
    run = load_own(conf, secrets)
    run.fit(load_spec(_shanghai(tmp_path)))
    assert (run.private_ip, run.customer_ip, run.cloud_ip) == ("192.168.0.2", None, CLOUD)
    assert not [a for a in run.advice if a["severity"] == "error"], run.advice


@pytest.mark.integration
@pytest.mark.kernel
def test_a_libreswan_config_behind_nat_with_the_real_cloud_address_passes(lab_name, tmp_path):
    if detect().name != "kernel":
        pytest.skip("libreswan needs the kernel's ESP: `make test-kernel` runs this in the guest")
    conf, secrets = tmp_path / "ipsec.conf", tmp_path / "ipsec.secrets"
    conf.write_text(BEHIND_NAT)
    secrets.write_text(f'@cgw.idc.example @vpn.cloud.example : PSK "{SHANGHAI_PSK}"\n')
    lab = _up(lab_name, conf, secrets, _shanghai(tmp_path))
    report = run_check(lab)
    failed = [f for f in report.findings if not f.ok]
    assert not failed, failed
    rows = {f.check: f for f in report.findings}
    assert "ESP in UDP 4500 through the NAT" in rows
    ike = [f.detail for f in report.findings if f.check == "IKE_SA established"]
    assert any(d.startswith("IKEv1 ") and "cgw.idc.example" in d for d in ike), ike


def test_an_ikev1_conn_without_ikev1_policy_accept_is_an_error(tmp_path):
    """libreswan 4.10 drops IKEv1 by default: the advice says what to set, in config setup."""
    conf = tmp_path / "ipsec.conf"
    conf.write_text(BEHIND_NAT.replace("    ikev1-policy=accept\n", "    uniqueids=yes\n"))
    run = load_own(conf)
    run.fit(load_spec(_shanghai(tmp_path)))
    errors = [a for a in run.advice if a["severity"] == "error"]
    assert [a["customer_field"] for a in errors] == ["config setup: ikev1-policy= (not set)"]
    assert errors[0]["fix"].startswith("ikev1-policy=accept in config setup")


_CASE = {"ike_version": "v2", "exchange_mode": "main", "ike_encryption": "AES-128",
         "ike_integrity": "SHA256", "dh_group": "DH14", "local_id_type": "address",
         "peer_id_type": "address", "ipsec_encryption": "AES-128", "ipsec_integrity": "SHA1",
         "pfs": "DH14"}


@pytest.mark.integration
@pytest.mark.kernel
def test_the_customer_matrix_runs_a_libreswan_config(lab_name):
    """`matrix --customer-config` with a libreswan file: the cell the file is written for
    interoperates, a cloud tunnel in another DH group does not, and says why."""
    if detect().name != "kernel":
        pytest.skip("libreswan needs the kernel's ESP: `make test-kernel` runs this in the guest")
    rows = run_customer_matrix(
        [Case("as-written", dict(_CASE)),
         Case("dh19", {**_CASE, "dh_group": "DH19", "pfs": "DH19"})],
        DEFAULT, lambda: load_own(CONF, SECRETS), "netns", lab_name)
    assert [(r["id"], r["interoperates"]) for r in rows] == [("as-written", True),
                                                             ("dh19", False)], rows
    assert rows[1]["why"] == "ike proposal mismatch", rows


def test_pluto_status_behind_nat_read_into_vicis_shape():
    """Recorded in the guest (the NAT test's lab): IKEv1 on UDP 4500 with ESP in UDP reads as
    VICI's nat-any; Quick Mode's PFS with `pfsgroup=<Phase1>` (esp= without a group, pfs=yes)
    is the ISAKMP SA's group."""
    data = Path(__file__).parent / "data" / "libreswan"
    (ike,) = status.parse((data / "v1-nat-status.txt").read_text(),
                          (data / "v1-nat-xfrm.txt").read_text(), {})
    assert (ike["name"], ike["version"], ike["remote-port"], ike["nat-any"], ike["dh-group"]) == \
        ("tencent", "1", "4500", "yes", "MODP_2048")
    assert (ike["local-id"], ike["remote-id"]) == ("@cgw.idc.example", "@vpn.cloud.example")
    (child,) = ike["child-sas"].values()
    assert (child["dh-group"], child["encap"], child["packets-in"], child["packets-out"]) == \
        ("MODP_2048", "yes", "10", "10")
    without_pfs = (data / "v1-nat-status.txt").read_text().replace("TUNNEL+PFS+", "TUNNEL+")
    (ike,) = status.parse(without_pfs, (data / "v1-nat-xfrm.txt").read_text(), {})
    assert "dh-group" not in next(iter(ike["child-sas"].values()))
