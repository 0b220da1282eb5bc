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
from tests.test_scenarios import assert_no_key

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
    ({"private_ip": "172.16.0.255"}, "tunnels[0].customer_gateway.behind_nat.private_ip: "
                                     "172.16.0.255 is the network or broadcast address"),
    ({"inbound": False}, "tunnels[0].customer_gateway.behind_nat.inbound: false lets nothing in"),
    ({"udp_timeout": 2}, "tunnels[0].customer_gateway.behind_nat.udp_timeout"),
])
def test_nat_settings_are_checked(nat, problem):
    with pytest.raises(SpecInvalid) as exc:
        parse_spec(_spec(**nat))
    assert any(p.startswith(problem) for p in exc.value.problems), exc.value.problems


def test_a_nat_base_adds_the_nat_identity_negative_case():
    from lab.matrix import cases as mc
    from lab.matrix.runner import plan_tunnel
    from lab.spec import load_spec

    plain = mc.negatives(mc.default_base())
    nat = mc.negatives(mc.default_base(), behind_nat=True)
    assert [c.expect for c in plain] == list(mc.NEGATIVE_REASONS)
    assert [c.expect for c in nat] == list(mc.NAT_NEGATIVE_REASONS)
    case = nat[-1]
    assert case.id.endswith("--neg-nat-id") and case.params["peer_id_type"] == "address"
    tunnel = plan_tunnel(load_spec(NAT), case)
    assert tunnel.customer.ike["local_id"] == {"type": "address", "value": "172.16.0.2"}
    assert mc.to_tunnel_fields(case)["customer"] == {}  # the marker never reaches the spec
    with pytest.raises(LabError, match="needs a base tunnel whose customer gateway is behind NAT"):
        plan_tunnel(load_spec(EXAMPLES / "default.yaml"), case)


NAT_SEEN = "remote host is behind NAT"


@pytest.mark.parametrize(("initiator", "responder", "local_ids", "reason"), [
    # IKEv1, the cloud initiating: it refuses the private ID the customer authenticated with
    (["received AUTHENTICATION_FAILED error notify"],
     [NAT_SEEN, "IDir '172.16.0.2' does not match to '198.51.100.2'"], set(), "id mismatch behind NAT"),
    # the customer initiating: the cloud looks its private ID up
    (["received AUTHENTICATION_FAILED notify error"],
     [NAT_SEEN, "looking for peer configs matching 203.0.113.1[%any]...198.51.100.2[172.16.0.2]",
      "no matching peer config found"], set(), "id mismatch behind NAT"),
    # IKEv2, the cloud initiating: the customer, configured with its private address, is asked
    # for the public one; its log alone is the same as for a mismatch of the other ID
    ([NAT_SEEN, "received AUTHENTICATION_FAILED notify error"],
     ["looking for peer configs matching 172.16.0.2[198.51.100.2]...203.0.113.1[203.0.113.1]",
      "no matching peer config found"], {"172.16.0.2", "203.0.113.1"}, "id mismatch behind NAT"),
    ([NAT_SEEN, "received AUTHENTICATION_FAILED notify error"],
     ["looking for peer configs matching 172.16.0.2[198.51.100.2]...203.0.113.1[203.0.113.1]",
      "no matching peer config found"], set(), "id mismatch"),
    # behind NAT, but the cloud's ID is the wrong one: an ordinary ID mismatch
    ([NAT_SEEN, "received AUTHENTICATION_FAILED notify error"],
     ["looking for peer configs matching 172.17.0.2[198.51.100.10]...203.0.113.9"
      "[vpn.cloud.ipsec-lab.test]", "no matching peer config found"],
     {"198.51.100.10", "vpn.cloud.ipsec-lab.test"}, "id mismatch"),
], ids=["v1-idir", "cloud-looks-up", "v2-asked-configured", "v2-asked-unknown", "other-id"])
def test_the_nat_identity_case_is_told_from_an_ordinary_id_mismatch(initiator, responder,
                                                                     local_ids, reason):
    """Lines in the form the daemons logged them in live NAT runs (the NAT matrix, and `up` with
    the customer initiating); the fourth is the third without the configured IDs, which its log
    alone cannot tell apart from a mismatch of the other ID."""
    from lab.diagnose import classify

    got, evidence = classify(initiator, {"cgw1": [{"msg": m} for m in responder]},
                             local_ids=local_ids)
    assert got == reason, evidence


@pytest.fixture
def nat_lab(request, tmp_path, backend):
    """The behind-nat example on each backend; an `indirect` parameter changes the tunnel (its
    `nat` key: the behind_nat block)."""
    changes = getattr(request, "param", {})
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
@pytest.mark.parametrize("keepalive", [3, 0], ids=["keepalive-3s", "no-keepalive"])
def test_keepalives_hold_an_idle_nat_mapping_open(keepalive):
    """A NAT that forgets idle UDP mappings after 8 s and lets nothing in unasked: after 12 s of
    silence the cloud's ESP reaches the customer gateway only if its keepalives held the
    mapping open; without them it gets through again once the customer has sent."""
    from lab.scenarios.nat import run_nat_keepalive

    if os.geteuid() != 0:
        pytest.skip("needs root: network namespaces and strongSwan daemons")
    r = run_nat_keepalive(NAT, backend="netns", udp_timeout=8, keepalive=keepalive, quiet=QUIET,
                          name=f"nka{os.getpid() % 10000}")
    assert_no_key(r)
    assert r.ok, [(v.name, v.detail) for v in r.verdicts if not v.ok]
    assert r.metrics["delivered_after_quiet"] is bool(keepalive)
    names = [v.name for v in r.verdicts]
    if keepalive:
        assert r.metrics["keepalives_on_the_wire"] >= 2
    else:
        assert r.metrics["keepalives_on_the_wire"] == 0
        assert "once the customer sent again the cloud's traffic got through" in names


@pytest.mark.integration
def test_the_matrix_behind_nat_classifies_every_negative_and_the_nat_identity_case():
    """On a base whose customer gateway is behind NAT every negative reason still fails for its
    reason, and the customer that identifies itself by its private address fails as the NAT
    identity case: IKEv1, the cloud refuses the private ID; IKEv2, the customer is asked for the
    public ID while it is configured with its private address."""
    from lab.matrix import cases as mc
    from lab.matrix.runner import run_matrix

    if os.geteuid() != 0:
        pytest.skip("needs root: network namespaces and strongSwan daemons")
    base = mc.default_base()
    cases = mc._dedupe([
        *mc.negatives({**base, "ike_version": "v2", "ike_encryption": "AES-128"}, behind_nat=True),
        *mc.negatives({**base, "ike_version": "v1"}, behind_nat=True),
    ])
    prefix = f"mn{os.getpid() % 1000}"
    try:
        results = run_matrix(cases, spec_path=NAT, backend="netns", jobs=2, name_prefix=prefix)
    finally:
        for k in (1, 2, 3):
            lifecycle.down(f"{prefix}-{k}")
    bad = [(r.id, r.expect, r.outcome, r.detail) for r in results if not r.passed]
    assert len(results) == len(cases) and not bad, bad
    nat_ids = [r for r in results if r.expect == mc.NAT_ID]
    assert {r.params["ike_version"] for r in nat_ids} == {"v1", "v2"}
    assert all("NAT detected" in r.detail for r in nat_ids)
