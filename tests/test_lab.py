"""Integration: real strongSwan daemons, real packets, on each backend."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from lab import diagnose, lifecycle
from lab import state as labstate
from lab.backends import get_backend
from lab.errors import LabError
from lab.negotiation import TunnelFailed
from tests.conftest import EXAMPLES
from tests.test_spec import spec

pytestmark = pytest.mark.integration


def findings(report, plane, check=None):
    return [f for f in report.findings if f.plane == plane and (check is None or f.check == check)]


def probes(report):
    """The data plane's marker probes (the MTU probe and the SA counters are rows of their own)."""
    return [f for f in findings(report, "data") if f.check.startswith(("udp ", "icmp "))]


def assert_all_pass(report):
    failed = [f for f in report.findings if not f.ok]
    assert not failed, failed


def assert_gone(name, backend):
    assert get_backend(backend).leftovers(name) == []
    assert not labstate.lab_dir(name).exists()


@pytest.mark.kernel
def test_default_ikev2(ipsec_lab, backend):
    lab = ipsec_lab(EXAMPLES / "default.yaml", backend)
    report = lab.check()
    assert_all_pass(report)
    pfs = findings(report, "control", "PFS")
    assert len(pfs) == 2 and all("MODP_2048 after a CHILD_SA rekey" in f.detail for f in pfs)
    assert len(probes(report)) == 4  # udp + icmp, both directions
    assert len(findings(report, "data", "path MTU idc->vpc")) == 1
    wire = {f.check: f for f in findings(report, "wire")}
    assert wire["no marker in clear"].ok and wire["ESP carried the probes"].ok
    # the kernel's ESP is IP protocol 50 without NAT; libipsec always encapsulates in UDP 4500
    encapsulation = "ESP (IP protocol 50)" if lab.lab.plan.dataplane.name == "kernel" \
        else "ESP in UDP 4500"
    assert wire["ESP carried the probes"].detail.startswith(encapsulation + ":")
    for leg in ("198.51.100.2>203.0.113.1", "203.0.113.1>198.51.100.2"):  # both directions
        assert leg in wire["ESP carried the probes"].detail
    with lab.vici("vpngw") as v:
        ike = next(sa for sa in v.sas() if sa["name"] == "tunnel-default")
    assert (ike["version"], ike["initiator"], ike["encr-alg"], ike["dh-group"]) == \
        ("2", "yes", "AES_CBC", "MODP_2048")


@pytest.mark.kernel
@pytest.mark.parametrize("example", ["aws.yaml", "alibaba.yaml"])
def test_other_clouds_examples_pass_check(ipsec_lab, backend, example):
    """The examples no other test here brings up: every check passes on this dataplane."""
    lab = ipsec_lab(EXAMPLES / example, backend)
    report = lab.check()
    assert_all_pass(report)
    assert {f.plane for f in report.findings} == {"control", "data", "wire"}


@pytest.mark.kernel
def test_ikev1_main_with_psk_from_environment(ipsec_lab, backend, monkeypatch):
    monkeypatch.setenv("IPSEC_LAB_PSK_V1MAIN", "v1-main-test-key")
    lab = ipsec_lab(EXAMPLES / "ikev1-main.yaml", backend)
    report = lab.check()
    assert_all_pass(report)
    assert all("MODP_1024 in quick mode" in f.detail for f in findings(report, "control", "PFS"))
    with lab.vici("cgw1") as v:
        ike = next(sa for sa in v.sas() if sa["name"] == "tunnel-ikev1-main")
    assert (ike["version"], ike["encr-alg"], ike["integ-alg"]) == ("1", "3DES_CBC", "HMAC_SHA1_96")


@pytest.mark.kernel
def test_ikev1_aggressive_fqdn_passive(ipsec_lab, backend):
    lab = ipsec_lab(EXAMPLES / "ikev1-aggressive-fqdn.yaml", backend)
    with lab.vici("vpngw") as v:
        ike = next(sa for sa in v.sas() if sa["name"] == "tunnel-ikev1-aggr")
    # passive: the customer gateway initiated; the IDs are the FQDNs
    assert (ike.get("initiator", "no"), ike["local-id"], ike["remote-id"]) == \
        ("no", "vpngw.cloud.example", "cgw.idc.example")
    report = lab.check()
    assert_all_pass(report)
    assert all("DH none in quick mode" in f.detail for f in findings(report, "control", "PFS"))


@pytest.mark.kernel
def test_multi_mapping_spd(ipsec_lab, backend):
    lab = ipsec_lab(EXAMPLES / "spd-multi-mapping.yaml", backend)
    report = lab.check()
    assert_all_pass(report)
    installed = findings(report, "control", "CHILD_SA installed")
    assert len(installed) == 8  # 4 mappings x 2 gateways
    assert len(probes(report)) == 16
    with lab.vici("cgw1") as v:
        children = [c for sa in v.sas() for c in sa["child-sas"].values()
                    if c["state"] == "INSTALLED"]
    assert sorted((c["local-ts"][0], c["remote-ts"][0]) for c in children) == [
        ("192.168.0.0/24", "10.0.0.0/24"), ("192.168.1.0/24", "10.0.0.0/24"),
        ("192.168.2.0/24", "10.0.1.0/24"), ("192.168.2.0/24", "10.0.2.0/24")]


@pytest.mark.kernel
def test_traffic_triggered_waits_for_vpc_traffic(ipsec_lab, backend):
    lab = ipsec_lab(spec(negotiation_type="traffic-triggered", ike={"version": "v2"}), backend)
    with lab.vici("vpngw") as v:
        assert v.sas() == []  # nothing negotiated before traffic
    with lab.capture() as wire:
        lab.send("vpc", [{"src": "10.0.1.10", "dst": "192.168.1.10", "proto": "udp",
                          "marker": wire.prefix + "-go"}])
        deadline = time.monotonic() + 20
        installed = False
        while not installed and time.monotonic() < deadline:
            with lab.vici("vpngw") as v:
                installed = any(c["state"] == "INSTALLED" for sa in v.sas()
                                for c in sa["child-sas"].values())
            time.sleep(0.1)
        assert installed, "no CHILD_SA came up on VPC traffic within 20 s"
    first_ike = min((t, k) for k, t in wire.result["first"].items() if k.startswith("udp/500"))
    assert first_ike[1].endswith("203.0.113.1>198.51.100.2")  # the cloud gateway spoke first
    assert wire.result["leaked"] == []
    assert_all_pass(lab.check())


@pytest.mark.kernel
def test_wrong_psk_fails_with_authentication_error_and_leaves_nothing(backend, tmp_path):
    path = tmp_path / "wrong.yaml"
    import yaml

    path.write_text(yaml.safe_dump(spec(ike={"version": "v2"},
                                        customer={"pre_shared_key": "not-the-cloud-key"})))
    name = f"wpsk{os.getpid() % 10000}"
    with pytest.raises(TunnelFailed) as info:
        lifecycle.up(path, name, backend)
    assert info.value.reason == diagnose.PSK  # the diagnoser, from both daemons' logs
    assert "not-the-cloud-key" not in str(info.value)
    assert_gone(name, backend)


def test_proposal_mismatch_is_named(backend, tmp_path):
    import yaml

    path = tmp_path / "mismatch.yaml"
    path.write_text(yaml.safe_dump(spec(ike={"version": "v2", "encryption": "AES-128"},
                                        customer={"ike": {"encryption": "AES-256"}})))
    name = f"prop{os.getpid() % 10000}"
    with pytest.raises(TunnelFailed) as info:
        lifecycle.up(path, name, backend)
    assert info.value.reason == diagnose.PROPOSAL_IKE  # named by the responder that refused
    assert_gone(name, backend)


def test_up_twice_is_refused(ipsec_lab, backend):
    lab = ipsec_lab(EXAMPLES / "default.yaml", backend)
    with pytest.raises(LabError, match="already up"):
        lifecycle.up(EXAMPLES / "default.yaml", lab.name, backend)
    assert lab.check().ok  # the running lab was not disturbed


def test_down_after_the_orchestrator_is_killed(backend):
    name = f"kill{os.getpid() % 10000}"
    proc = subprocess.Popen([sys.executable, "-m", "lab.cli", "up", str(EXAMPLES / "default.yaml"),
                             "--name", name, "--backend", backend],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state_file = labstate.lab_dir(name) / "state.json"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:  # kill it as soon as it has started a daemon
            if state_file.exists() and any(k.startswith("charon:") for k in
                                           json.loads(state_file.read_text() or "{}").get("pids", {})):
                break
            assert proc.poll() is None, "up finished before it could be killed"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert get_backend(backend).leftovers(name)  # it left something behind
    finally:
        result = subprocess.run([sys.executable, "-m", "lab.cli", "down", "--name", name],
                                capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert_gone(name, backend)
    assert subprocess.run(["pgrep", "-f", f"ipsec-lab/{name}/"], capture_output=True).stdout == b""
    again = subprocess.run([sys.executable, "-m", "lab.cli", "down", "--name", name],
                           capture_output=True, text=True)
    assert again.returncode == 0 and "nothing to remove" in again.stdout


@pytest.mark.kernel
def test_destination_route_beside_spd_policy(ipsec_lab, backend):
    lab = ipsec_lab(EXAMPLES / "destination-route-mixed.yaml", backend)
    report = lab.check()
    assert_all_pass(report)
    unrouted = [f for f in findings(report, "data") if f.subject.startswith("unrouted")]
    kernel = lab.lab.state.dataplane == "kernel"
    # route-based on the kernel: towards the unrouted range only (a 0/0 SA takes any source)
    assert len(unrouted) == (2 if kernel else 4)
    assert all("172.16.30.10" in f.subject for f in unrouted)
    assert all(f.detail.startswith("dropped") for f in unrouted if "vpc->idc" in f.check)
    with lab.vici("vpngw") as v:
        children = {c["name"]: (c["local-ts"], c["remote-ts"]) for sa in v.sas()
                    for c in sa["child-sas"].values() if c["state"] == "INSTALLED"}
    spd = {"tunnel-spd-m1": (["10.0.1.0/24"], ["192.168.1.0/24"])}
    if kernel:  # as the cloud negotiates it: 0/0, routes over an XFRM interface decide
        assert children == {"tunnel-route-r1": (["0.0.0.0/0"], ["0.0.0.0/0"]), **spd}
        routes = lab.exec("vpngw", ["ip", "-4", "route", "show"]).stdout
        assert "172.16.10.0/24 dev xfrm1" in routes and "172.16.20.0/24 dev xfrm1" in routes
        assert "172.16.30.0" not in routes
        link = lab.exec("vpngw", ["ip", "-d", "link", "show", "xfrm1"]).stdout
        assert "if_id 0x1" in link
    else:  # kernel-libipsec: one CHILD_SA per routed destination (lab.dataplane.xfrm_interfaces)
        assert children == {"tunnel-route-r1": (["10.0.0.0/16"], ["172.16.10.0/24"]),
                            "tunnel-route-r2": (["10.0.0.0/16"], ["172.16.20.0/24"]), **spd}


@pytest.mark.kernel
def test_a_gateway_at_the_200_mapping_limit(ipsec_lab, backend):
    tunnels = []
    for k in range(4):  # 4 tunnels x (10 local x 5 peer ranges) = 200 mappings
        tunnels.append({
            "name": f"t{k}", "customer_gateway": {"public_ip": f"198.51.100.{k + 2}"},
            "pre_shared_key": f"k{k}", "ike": {"version": "v2", "encryption": "AES-128",
                                                 "integrity": "SHA256", "dh_group": "DH14"},
            "spd_rules": [{"local": [f"10.{k + 1}.{j}.0/24" for j in range(10)],
                           "peer": [f"192.168.{5 * k + m}.0/24" for m in range(5)]}],
        })
    lab = ipsec_lab({"vpn_gateway": {"public_ip": "203.0.113.1", "vpc_cidr": "10.0.0.0/8"},
                     "tunnels": tunnels}, backend)
    report = lab.check(rekey=False)
    assert_all_pass(report)
    assert len(findings(report, "control", "CHILD_SA installed")) == 400  # 200 on each side
    assert len(probes(report)) == 800
