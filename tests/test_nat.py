"""A customer gateway behind NAT: the spec's rules, NAT-T proven from both daemons and the wire,
the cloud's expected ID against the gateway's private one, and a NAT that lets nothing in."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from lab import lifecycle
from lab.backends import get_backend
from lab.check import run_check
from lab.errors import LabError
from lab.spec import SpecInvalid, parse_spec
from tests.conftest import EXAMPLES, ROOT

NAT = EXAMPLES / "behind-nat.yaml"


def _spec(**nat) -> dict:
    data = yaml.safe_load(NAT.read_text())
    data["tunnels"][0]["customer_gateway"]["behind_nat"].update(nat)
    return data


@pytest.mark.parametrize(("nat", "problem"), [
    ({"private_ip": "203.0.113.7"}, "tunnels[0].customer_gateway.behind_nat.private_ip: 203.0.113.7 "
                                    "must be a private address"),
    ({"private_ip": "192.168.1.5"}, "tunnels[0].customer_gateway.behind_nat.private_ip: its /24 "
                                    "(192.168.1.0/24) overlaps 192.168.1.0/24, a range the tunnel "
                                    "carries"),
    ({"private_ip": "172.16.0.1"}, "tunnels[0].customer_gateway.behind_nat.private_ip: 172.16.0.1 "
                                   "is the network, broadcast or NAT router address"),
    ({"inbound": False}, "tunnels[0].customer_gateway.behind_nat.inbound: false lets nothing in"),
    ({"udp_timeout": 2}, "tunnels[0].customer_gateway.behind_nat.udp_timeout"),
])
def test_nat_settings_are_checked(nat, problem):
    with pytest.raises(SpecInvalid) as exc:
        parse_spec(_spec(**nat))
    assert any(p.startswith(problem) for p in exc.value.problems), exc.value.problems


@pytest.fixture
def nat_lab(request, tmp_path, backend):
    """The behind-nat example on each backend; an `indirect` parameter changes the tunnel (its
    `nat` key: the behind_nat block)."""
    changes = getattr(request, "param", {})
    if backend == "docker" and "udp_timeout" in changes.get("nat", {}):
        pytest.skip("the docker backend cannot set the NAT's timeout (refused: tested below)")
    name = f"nat{os.getpid() % 10000}"
    lifecycle.down(name)
    data = yaml.safe_load(NAT.read_text())
    for key, value in changes.items():
        if key == "nat":
            data["tunnels"][0]["customer_gateway"]["behind_nat"].update(value)
        else:
            data["tunnels"][0][key] = value
    spec = tmp_path / "nat.yaml"
    spec.write_text(yaml.safe_dump(data))
    running = lifecycle.up(spec, name, backend)
    yield running
    lifecycle.down(name)
    assert get_backend(backend).leftovers(name) == []


def _rows(report, check):
    return {f.subject: (f.ok, f.detail) for f in report.findings if f.check == check}


@pytest.mark.integration
@pytest.mark.kernel
def test_behind_nat_the_tunnel_runs_in_udp_4500_and_both_ends_know(nat_lab):
    report = run_check(nat_lab)
    assert report.ok, [f for f in report.findings if not f.ok]
    detected = _rows(report, "NAT detected")
    assert detected["vpngw (cloud)"] == (True, "nat-remote=yes (its peer is behind NAT), IKE on UDP "
                                                "4500->4500")
    assert detected["cgw1 (customer)"] == (True, "nat-local=yes (it is behind NAT), IKE on UDP "
                                                  "4500->4500, its own address 172.16.0.2")
    ok, detail = _rows(report, "ESP in UDP 4500 through the NAT")["internet segment"]
    assert ok and detail.endswith("0 ESP as IP protocol 50 between 203.0.113.1 and 198.51.100.2")
    # the NAT really translated: the customer gateway has no public address of its own
    done = nat_lab.backend.exec(nat_lab.state, "cgw1", ["ip", "-4", "-o", "addr", "show"])
    assert "198.51.100.2" not in done.stdout and "172.16.0.2/24" in done.stdout


@pytest.mark.integration
@pytest.mark.parametrize("nat_lab", [{"nat": {"inbound": False}, "negotiation_type": "passive"}],
                         indirect=True)
def test_a_nat_that_lets_nothing_in_works_when_the_customer_initiates(nat_lab):
    report = run_check(nat_lab)
    assert report.ok, [f for f in report.findings if not f.ok]
    assert _rows(report, "NAT detected")["cgw1 (customer)"][0]


@pytest.mark.integration
def test_the_private_address_as_id_fails_and_says_what_to_set(tmp_path):
    """The classic NAT pitfall: the gateway's default ID is its own (private) address."""
    if os.geteuid() != 0:
        pytest.skip("needs root: network namespaces and strongSwan daemons")
    data = yaml.safe_load(NAT.read_text())
    data["tunnels"][0]["customer"] = {"ike": {"local_id": {"type": "address",
                                                           "value": "172.16.0.2"}}}
    spec = tmp_path / "nat-id.yaml"
    spec.write_text(yaml.safe_dump(data))
    name = f"nid{os.getpid() % 10000}"
    lifecycle.down(name)
    try:
        with pytest.raises(LabError) as exc:
            lifecycle.up(spec, name, "netns")
        assert "id mismatch" in str(exc.value)
        assert ("the customer gateway identifies itself as 172.16.0.2 (its private address behind "
                "the NAT), but the cloud expects 198.51.100.2 (tunnels[0].ike.peer_id): set the "
                "customer's local ID (leftid= in ipsec.conf, local.id in swanctl.conf) to "
                "198.51.100.2") in str(exc.value)
        assert get_backend("netns").leftovers(name) == []  # nothing left half-built
        cli = subprocess.run([sys.executable, "-c", "from lab.cli import main; main()", "up",
                              str(spec), "--name", name, "--backend", "netns"],
                             capture_output=True, text=True, cwd=ROOT, timeout=300, check=False)
        assert cli.returncode != 0 and "Traceback" not in cli.stderr
        assert "set the customer's local ID" in " ".join(cli.stderr.split())
    finally:
        lifecycle.down(name)


def test_docker_refuses_a_nat_timeout_it_cannot_set(backend, tmp_path):
    if backend != "docker":
        pytest.skip("the docker backend's limit")
    data = _spec(udp_timeout=30)
    spec_path = tmp_path / "nat-timeout.yaml"
    spec_path.write_text(yaml.safe_dump(data))
    name = f"ntd{os.getpid() % 10000}"
    with pytest.raises(LabError) as exc:
        lifecycle.up(spec_path, name, "docker")
    assert str(exc.value).startswith("tunnels[0].customer_gateway.behind_nat.udp_timeout: the docker "
                                     "backend cannot set a container's conntrack timeouts")
    assert get_backend("docker").leftovers(name) == []


QUIET = 12.0  # s of silence after the tunnel is up: longer than the NAT's idle timeout below


@pytest.mark.integration  # the NAT's conntrack and charon's timer: the same on both dataplanes
@pytest.mark.parametrize(("nat_lab", "delivered"), [
    ({"nat": {"inbound": False, "udp_timeout": 8, "keepalive": 3}, "negotiation_type": "passive",
      "dpd": {"enabled": False}}, True),
    ({"nat": {"inbound": False, "udp_timeout": 8, "keepalive": 0}, "negotiation_type": "passive",
      "dpd": {"enabled": False}}, False),
], indirect=["nat_lab"], ids=["keepalive-3s", "no-keepalive"])
def test_keepalives_hold_an_idle_nat_mapping_open(nat_lab, delivered):
    """A NAT that forgets idle UDP mappings after 8 s and lets nothing in unasked: after 12 s of
    silence the cloud's ESP reaches the customer gateway only if its keepalives held the
    mapping open."""
    import json
    import secrets
    import time

    from lab.probe import Agent

    probe = nat_lab.plan.probes[0]
    prefix = f"ILAB{secrets.token_hex(4)}"
    marker = f"{prefix}-nat-v2i"
    common = ["--iface", "eth0", "--prefix", prefix, "--port", "33434", "--timeout", "5"]
    listener = Agent(nat_lab, probe.idc_node, ["listen", *common], stdin=json.dumps([marker]),
                     keep_open=True)
    sender = Agent(nat_lab, probe.vpc_node, ["send", *common])
    listener.wait_ready()
    time.sleep(QUIET)  # the experiment: nothing crosses the tunnel meanwhile
    listener.feed("")
    sender.feed(json.dumps([{"src": str(probe.vpc_addr), "dst": str(probe.idc_addr),
                             "proto": "udp", "marker": marker}]))
    sender.finish()
    got = marker in listener.finish().get("received", [])
    assert got is delivered
