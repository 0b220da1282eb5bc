"""Faults injected into a running lab: `check` completes, exits 1, names the failed checks and
the most likely cause; `status` says degraded where a daemon or an SA is gone; `down` afterwards
leaves nothing. Each fault on its own lab: netns, the kernel dataplane in the VM harness, and the
docker backend (a "docker:" parameter; skipped where no engine runs, as in the guest)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import yaml

from lab import lifecycle
from lab.backends import get_backend
from lab.check import run_check
from lab.scenarios import impair
from tests.conftest import EXAMPLES, ROOT, _docker_unavailable


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "from lab.cli import main; main()", *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=600, check=False)


@pytest.fixture
def lab(request, tmp_path):
    """The default lab, or the example file an `indirect` parameter names; "no-dpd": the default
    with DPD off, so that a fault the daemons would find by DPD (a one-way cut) lasts the whole
    check, however slow the machine. A "docker:" prefix runs it on the docker backend."""
    if os.geteuid() != 0:
        pytest.skip("needs root: network namespaces and strongSwan daemons")
    param = getattr(request, "param", "default")
    backend, _, param = param.rpartition(":")
    backend = backend or "netns"
    if backend == "docker" and (why := _docker_unavailable()):
        pytest.skip(why)
    name = f"flt{os.getpid() % 10000}"
    lifecycle.down(name)
    spec = EXAMPLES / ("default.yaml" if param in ("default", "no-dpd") else param)
    if param == "no-dpd":
        data = yaml.safe_load(spec.read_text())
        data["tunnels"][0]["dpd"] = {"enabled": False}
        spec = tmp_path / "no-dpd.yaml"
        spec.write_text(yaml.safe_dump(data))
    running = lifecycle.up(spec, name, backend)
    yield running
    lifecycle.down(name)
    assert get_backend(backend).leftovers(name) == []


def _cli_check_fails_cleanly(lab, *unwanted: str) -> None:
    """`ipsec-lab check` on the faulty lab exits 1 with no traceback. What the CLI prints does not
    depend on the dataplane, and under TCG a second check costs minutes: checked on libipsec (the
    host's runs, both backends) only."""
    if lab.state.dataplane != "libipsec":
        return
    done = _cli("check", "--name", lab.state.name)
    assert done.returncode == 1, done.stdout + done.stderr
    for text in ("Traceback", *unwanted):
        assert text not in done.stdout + done.stderr


def _failed(report):
    return {(f.subject, f.check): f.detail for f in report.findings if not f.ok and not f.info}


def _diagnosis(report) -> str:
    rows = [f for f in report.findings if f.plane == "diagnosis"]
    assert len(rows) == 1, report.findings
    return rows[0].check


@pytest.mark.integration
@pytest.mark.kernel
@pytest.mark.parametrize("lab", ["no-dpd", "docker:no-dpd"], indirect=True)
def test_path_cut_both_ways(lab):
    cloud, customer = lab.plan.gateways[0], lab.plan.gateways[1]
    impair.cut(lab, cloud.public_ip, customer.public_ip)
    report = run_check(lab)
    failed = _failed(report)
    assert not report.ok
    assert "did not complete in time" in failed[("vpngw (initiator)", "CHILD_SA rekey")]
    data = [k for k in failed if k[1] in ("udp idc->vpc", "udp vpc->idc", "icmp idc->vpc",
                                          "icmp vpc->idc")]
    assert len(data) == 4
    assert _diagnosis(report).startswith("most likely: nothing gets through between the gateways")
    _cli_check_fails_cleanly(lab)


@pytest.mark.integration
@pytest.mark.kernel
@pytest.mark.parametrize("lab", ["default", "docker:default"], indirect=True)
def test_one_daemon_killed(lab):
    pid = lab.state.pids["charon:cgw1"]
    os.kill(pid, signal.SIGKILL)
    report = run_check(lab)
    failed = _failed(report)
    assert "no answer on VICI" in failed[("cgw1 (customer)", "daemon answers VICI")]
    assert _diagnosis(report) == "most likely: the strongSwan daemon on cgw1 does not answer"
    status = _cli("status", "--name", lab.state.name, "--json")
    assert status.returncode == 0, status.stderr
    seen = json.loads(status.stdout)
    assert seen["health"] == "degraded"
    assert any("cgw1: the strongSwan daemon does not answer VICI" in p for p in seen["problems"])
    _cli_check_fails_cleanly(lab)


@pytest.mark.integration
@pytest.mark.kernel
@pytest.mark.parametrize("lab", ["default", "docker:default"], indirect=True)
def test_a_host_firewall_blocking_the_probes(lab):
    rules = ["add table inet hostfw",
             "add chain inet hostfw out { type filter hook output priority 0 ; policy accept ; }",
             "add rule inet hostfw out udp dport 33434 drop",
             "add rule inet hostfw out icmp type echo-request drop"]
    for rule in rules:
        done = lab.backend.exec(lab.state, "idc1", ["nft", *rule.split()])
        assert done.returncode == 0, done.stderr
    report = run_check(lab)
    failed = _failed(report)
    refused = [d for (subject, check), d in failed.items() if "idc->vpc" in check]
    assert refused and all("not sent: refused by the host: a firewall on the host? (EPERM)" in d
                           for d in refused), failed
    assert _diagnosis(report) == ("most likely: the host refused to send the probes from "
                                  "192.168.1.10: a firewall on the host?")
    _cli_check_fails_cleanly(lab, "PermissionError")


@pytest.mark.integration
def test_a_healthy_lab_is_up_not_degraded(lab):
    seen = json.loads(_cli("status", "--name", lab.state.name, "--json").stdout)
    assert (seen["health"], seen["problems"]) == ("up", [])


@pytest.mark.integration
@pytest.mark.kernel
@pytest.mark.parametrize("lab", ["no-dpd", "docker:no-dpd"], indirect=True)
def test_one_direction_cut(lab):
    cloud, customer = lab.plan.gateways[0], lab.plan.gateways[1]
    impair.cut_one_way(lab, customer.public_ip, cloud.public_ip)
    report = run_check(lab)
    failed = _failed(report)
    assert "did not complete in time" in failed[("vpngw (initiator)", "CHILD_SA rekey")]
    ways = {check for _, check in failed if check.startswith(("udp", "icmp"))}
    assert "udp idc->vpc" in ways and "udp vpc->idc" not in ways, failed  # the cut way only
    assert _diagnosis(report).startswith(
        "most likely: ESP from cgw1 to vpngw is lost on the way (and IKE's answers with it), "
        "the other direction arrives"), report.findings


@pytest.mark.integration
@pytest.mark.kernel
@pytest.mark.parametrize("lab", ["default", "docker:default"], indirect=True)
def test_ike_passes_esp_dropped(lab):
    cloud, customer = lab.plan.gateways[0], lab.plan.gateways[1]
    impair.drop_esp(lab, cloud.public_ip, customer.public_ip)
    report = run_check(lab)
    failed = _failed(report)
    assert ("vpngw (initiator)", "CHILD_SA rekey") not in failed  # IKE still passes
    assert {c for _, c in failed if c.startswith(("udp", "icmp"))} == {
        "udp idc->vpc", "udp vpc->idc", "icmp idc->vpc", "icmp vpc->idc"}
    esp = "ESP (IP protocol 50)" if lab.state.dataplane == "kernel" else "ESP in UDP 4500"
    assert _diagnosis(report) == (
        "most likely: IKE passes between vpngw and cgw1 but ESP does not: each gateway's SA sent "
        f"ESP the other never received: a firewall between them that lets IKE through but drops "
        f"{esp}?")
    impair.restore(lab)
    assert run_check(lab).ok  # the same lab, the filter gone: nothing else was wrong


@pytest.mark.integration
@pytest.mark.kernel
@pytest.mark.parametrize("lab", ["default", "docker:default"], indirect=True)
def test_one_daemon_frozen(lab):
    pid = lab.state.pids["charon:cgw1"]
    os.kill(pid, signal.SIGSTOP)
    try:
        report = run_check(lab)
    finally:
        os.kill(pid, signal.SIGCONT)
    failed = _failed(report)
    assert failed[("cgw1 (customer)", "daemon answers VICI")].endswith(f"its process {pid} is stopped")
    assert _diagnosis(report) == ("most likely: the strongSwan daemon on cgw1 does not answer: its "
                                  "process is stopped (SIGSTOP?)")


@pytest.mark.integration
@pytest.mark.kernel
def test_sa_deleted_on_one_side_only(lab):
    """The kernel's inbound ESP state removed behind charon's back (charon is not told of a
    deleted state): the customer gateway's SAs still list it; ESP for it is dropped."""
    if lab.state.dataplane != "kernel":
        pytest.skip("libipsec keeps its SAs inside charon: none can be deleted behind its back")
    cloud, customer = lab.plan.gateways[0], lab.plan.gateways[1]
    with lab.vici(customer.node) as v:
        spi = next(c["spi-in"] for sa in v.sas() for c in sa["child-sas"].values())
    done = lab.backend.exec(lab.state, customer.node,
                            ["ip", "xfrm", "state", "delete", "src", str(cloud.public_ip), "dst",
                             str(customer.public_ip), "proto", "esp", "spi", f"0x{spi}"])
    assert done.returncode == 0, done.stderr
    report = run_check(lab, rekey=False)  # a rekey would replace the broken SA
    failed = _failed(report)
    assert {c for _, c in failed if c.startswith(("udp", "icmp"))} >= {"udp vpc->idc"}
    assert "udp idc->vpc" not in {c for _, c in failed}
    assert _diagnosis(report).startswith("most likely: cgw1 has no SA for the ESP vpngw sends it "
                                         "(XfrmInNoStates +"), report.findings


@pytest.mark.integration
@pytest.mark.kernel
@pytest.mark.parametrize("lab", ["default", "docker:default"], indirect=True)
def test_probe_agent_killed_mid_check(lab):
    """The VPC host's listener killed once it listens: its markers count as not delivered and
    the check still completes and says why."""
    spawn = lab.backend.spawn_agent

    def spawn_and_kill_listener(state, node, args):
        proc = spawn(state, node, args)
        if args[0] == "listen" and node == "vpc":
            def kill_once_listening() -> None:
                while proc.stdin is not None and proc.poll() is None:  # fed once it listens
                    time.sleep(0.01)
                proc.kill()
            threading.Thread(target=kill_once_listening, daemon=True).start()
        return proc

    lab.backend.spawn_agent = spawn_and_kill_listener
    try:
        report = run_check(lab)
    finally:
        lab.backend.spawn_agent = spawn
    failed = _failed(report)
    assert "gave no result: it " in failed[("vpc", "probe agent (listen)")]
    assert failed[("tunnel-default-m1 192.168.1.10 -> 10.0.1.10", "udp idc->vpc")] == \
        "marker not delivered"
    assert _diagnosis(report).startswith("most likely: the lab's probe agent on vpc ended before "
                                         "it reported")


@pytest.mark.integration
@pytest.mark.kernel
@pytest.mark.parametrize("lab", ["default", "docker:default"], indirect=True)
def test_path_mtu_reported_on_a_healthy_lab_and_a_black_hole_found(lab):
    """A healthy path reports its MTU (1400 bytes cross, a 1500-byte packet is answered with
    'fragmentation needed'); a bridge port with a smaller MTU drops large frames without a word."""
    report = run_check(lab)
    assert report.ok, _failed(report)
    rows = {f.check: f.detail for f in report.findings if f.check.startswith("path MTU")}
    assert set(rows) == {"path MTU idc->vpc", "path MTU vpc->idc"}
    for detail in rows.values():
        assert "1400 B delivered" in detail and "1500 B too big: " in detail, detail
        assert "TCP MSS at most " in detail
    impair.bridge_port_mtu(lab, lab.plan.gateways[1].node, 1300)
    report = run_check(lab)
    failed = _failed(report)
    for way in ("idc->vpc", "vpc->idc"):
        assert "1400 B lost, no ICMP 'fragmentation needed' came back" in \
            failed[("tunnel-default-m1 " + ("192.168.1.10 -> 10.0.1.10" if way == "idc->vpc"
                                            else "10.0.1.10 -> 192.168.1.10"), f"path MTU {way}")]
    assert ("tunnel-default-m1 192.168.1.10 -> 10.0.1.10", "udp idc->vpc") not in failed
    assert _diagnosis(report).startswith("most likely: a path MTU black hole: 1400-byte packets "
                                         "with DF vanish between the sites")


@pytest.mark.integration
@pytest.mark.kernel
@pytest.mark.parametrize("lab", ["default", "docker:default"], indirect=True)
def test_gateway_route_into_the_tunnel_removed(lab):
    """strongSwan's routes (table 220) flushed on the customer gateway: the IDC's traffic no
    longer enters the tunnel there, while the VPC's still arrives."""
    done = lab.backend.exec(lab.state, "cgw1", ["ip", "route", "flush", "table", "220"])
    assert done.returncode == 0, done.stderr
    report = run_check(lab, rekey=False)  # a rekey would install the routes again
    failed = _failed(report)
    assert "udp idc->vpc" in {c for _, c in failed} and "udp vpc->idc" not in {c for _, c in failed}
    assert _diagnosis(report).startswith("most likely: cgw1 does not send the IDC's traffic into "
                                         "the tunnel: its SA counted no packet out"), report.findings


@pytest.mark.integration
@pytest.mark.kernel
@pytest.mark.parametrize("lab", ["internet-mtu.yaml"], indirect=True)
def test_an_internet_mtu_the_gateways_know_is_reported_not_a_black_hole(lab):
    """internet.mtu 1400 on both ends of each uplink: the kernel's XFRM reports the smaller MTU to
    the host (ICMP 'fragmentation needed'); libipsec's TUN device (1400) takes the packet and the
    gateway fragments the ESP-in-UDP datagram instead, which the wire shows as IP fragments."""
    report = run_check(lab)
    assert report.ok, _failed(report)
    rows = [f.detail for f in report.findings if f.check.startswith("path MTU")]
    assert len(rows) == 2
    wire = next(f.detail for f in report.findings if f.check == "only IKE and ESP")
    for detail in rows:
        if lab.state.dataplane == "kernel":
            assert "1400 B too big: " in detail, detail
        else:
            assert "1400 B delivered" in detail and "IP fragments of them" in wire, (detail, wire)
