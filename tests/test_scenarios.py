"""Scenario experiments on real daemons, on each backend: assertions on measured behaviour.

Timeouts and lifetimes run at a small time scale so the suite stays short; nothing here asserts a
wall-clock threshold: the DPD tests check who declared the peer dead and what the action did, the
rekey tests that SPIs changed and nothing was lost or duplicated, and so on.
"""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from lab.scenarios.report import ScenarioResult, to_html, to_json, to_junit
from tests.conftest import EXAMPLES

pytestmark = pytest.mark.integration

DPD_SCALE = 0.2  # DPD 30 s -> 6 s
REKEY_SCALE = 0.1  # IKE 60 s -> 6 s, CHILD_SA 180 s -> 18 s
# IPsec 2560 KB -> 256 KB: a rekey every ~30 s of the stream. Not smaller: the scale also shortens
# the DPD timeout the IKEv2 retransmit schedule derives from (0.05 -> ~1 s in all, too short to
# establish reliably on a loaded machine).
VOLUME_SCALE = 0.1


def verdicts(result: ScenarioResult) -> dict[str, tuple[bool, str]]:
    """Every live scenario test reads its verdicts here: its reports are audited on the way."""
    assert_no_key(result)
    return {v.name: (v.ok, v.detail) for v in result.verdicts}


def _example_keys() -> set[str]:
    """Every pre-shared key written in the examples (the specs the scenarios run)."""
    keys: set[str] = set()
    for path in EXAMPLES.rglob("*.yaml"):
        for t in (yaml.safe_load(path.read_text()) or {}).get("tunnels", []) or []:
            for psk in (t.get("pre_shared_key"), (t.get("customer") or {}).get("pre_shared_key")):
                if isinstance(psk, str) and len(psk) >= 6 and not psk.startswith("env:"):
                    keys.add(psk)
    return keys


KEYS = _example_keys()


def assert_no_key(result: ScenarioResult) -> None:
    """The scenario's reports as the CLI writes them (JSON, JUnit, HTML) hold no pre-shared key,
    though they carry the daemons' events and log lines."""
    for text in (to_json([result]), to_junit([result]), to_html([result])):
        leaked = [k for k in KEYS if k in text]
        assert not leaked, f"{result.variant}: a pre-shared key is in its report"


def assert_passed(result: ScenarioResult, *names: str) -> None:
    got = verdicts(result)
    failed = {n: d for n, (ok, d) in got.items() if not ok}
    assert not failed, f"{result.variant} on {result.backend}: {failed}"
    for name in names:
        assert name in got, f"verdict {name!r} missing: {sorted(got)}"


@pytest.mark.kernel
def test_dpd_ikev2_retry(backend: str) -> None:
    from lab.scenarios.dpd import run_dpd

    r = run_dpd(backend=backend, version="v2", action="retry", timeout=30, time_scale=DPD_SCALE)
    assert_passed(r, "cloud gateway declared the peer dead at the configured timeout",
                  "customer gateway declared the peer dead at the configured timeout",
                  "retry: the cloud gateway re-initiates after declaring the peer dead",
                  "retry re-established the tunnel by itself after the path came back",
                  "traffic flows again after recovery", "no payload marker in clear on the wire")
    assert r.metrics["detection_cloud_s"] is not None and r.metrics["detection_customer_s"] is not None
    assert r.time_scale == DPD_SCALE and r.metrics["configured_timeout_s"] == 6
    # the stream saw the outage and then the recovered tunnel
    udp = r.stream[0]
    assert 0 < udp["delivered"] < udp["sent"] and udp["duplicated"] == 0


def test_dpd_detection_window_is_the_timeout_give_or_take_one_delay():
    from lab.dpd import detection_window, dpd_schedule

    assert detection_window(dpd_schedule(30, "v2")) == (23.5, 36.5)  # delay 5, tolerance 1.5
    assert detection_window(dpd_schedule(6, "v1")) == (4.0, 8.0)  # delay 1, tolerance 1


def test_dpd_detection_verdict_fails_when_the_schedule_misses_the_timeout() -> None:
    """A retransmit schedule three times too long (set for the whole daemon, as a misconfigured
    strongswan.conf would): both gateways declare the peer dead, but long after the timeout."""
    from lab.plan import DaemonTuning
    from lab.scenarios.dpd import run_dpd

    r = run_dpd(backend="netns", version="v2", action="retry", timeout=30, time_scale=DPD_SCALE,
                tuning=DaemonTuning(retransmit=(2.0, 1.4, 3)))  # gives up after 14.2 s, not 5
    got = verdicts(r)
    for side in ("cloud", "customer"):
        ok, detail = got[f"{side} gateway declared the peer dead at the configured timeout"]
        assert not ok, detail
        assert "expected 4.0-8.0 s" in detail, detail


def test_dpd_disconnect_verdict_fails_when_something_negotiates_after_the_restore() -> None:
    """Disconnect must leave the tunnel down: an initiation right after the restore (standing in
    for a peer that re-negotiates on its own) makes the verdict fail."""
    from lab.negotiation import initiate_tunnel
    from lab.scenarios.dpd import run_dpd

    r = run_dpd(backend="netns", version="v2", action="disconnect", timeout=30,
                time_scale=DPD_SCALE,
                after_restore=lambda lab: initiate_tunnel(lab, lab.spec.tunnels[0].name))
    ok, detail = verdicts(r)["disconnect leaves the tunnel down after the path came back (3 s watched)"]
    assert not ok and "up" in detail and "after the restore" in detail, detail


@pytest.mark.kernel
def test_dpd_ikev1_disconnect(backend: str) -> None:
    from lab.scenarios.dpd import run_dpd

    r = run_dpd(backend=backend, version="v1", action="disconnect", timeout=30, time_scale=DPD_SCALE)
    assert_passed(r, "cloud gateway declared the peer dead at the configured timeout",
                  "customer gateway declared the peer dead at the configured timeout",
                  "disconnect: the cloud gateway cleared the SAs",
                  "disconnect leaves the tunnel down after the path came back (3 s watched)",
                  "traffic flows again after recovery", "no payload marker in clear on the wire")


@pytest.mark.kernel
def test_dpd_off(backend: str) -> None:
    from lab.scenarios.dpd import run_dpd_off

    r = run_dpd_off(backend=backend, version="v2", timeout=30, time_scale=DPD_SCALE)
    assert_passed(r, "nobody declared the peer dead within the 12 s cut",
                  "both gateways kept the same IKE_SA established through the cut",
                  "the cut really stopped the traffic",
                  "traffic resumes on the same SAs once the path is back")
    assert not [e for e in r.events if e["kind"] == "ike-updown" and e["up"] is False]


@pytest.mark.parametrize("kind", ["active", "passive", "traffic-triggered"])
@pytest.mark.kernel
def test_negotiation(backend: str, kind: str) -> None:
    from lab.scenarios.negotiation import run_negotiation

    r = run_negotiation(backend=backend, negotiation_type=kind)
    sender = "the customer gateway sent the first IKE packet" if kind == "passive" else \
        "the cloud gateway sent the first IKE packet"
    names = [sender, "ipsec-lab check passes (control, data, wire)"]
    if kind == "traffic-triggered":
        names += ["nothing negotiated before VPC traffic", "VPC traffic brought the tunnel up",
                  "no IKE packet before the VPC traffic"]
    assert_passed(r, *names)


@pytest.mark.parametrize(("version", "trigger"), [
    ("v2", "time"),
    ("v1", "time"),  # the customer side leaves IKEv1 reauthentication to the cloud (lab.plan)
    ("v2", "volume"),
])
@pytest.mark.kernel
def test_rekey(backend: str, version: str, trigger: str) -> None:
    from lab.scenarios.rekey import run_rekey

    scale = VOLUME_SCALE if trigger == "volume" else REKEY_SCALE
    r = run_rekey(backend=backend, version=version, trigger=trigger, time_scale=scale, rekeys=2)
    got = verdicts(r)
    for name in ("at least 2 CHILD_SA rekeys happened", "new SPIs replaced the old ones",
                 "IKE_SAs did not multiply (one established IKE_SA at the end)",
                 "no duplicated packets", "no payload marker in clear on the wire"):
        assert got[name][0], f"{name}: {got[name][1]} ({r.variant} on {r.backend})"
    children = [row for row in r.metrics["rekeys"] if row["kind"] == "child-rekey"]
    assert len(children) >= 2 and all(row["old"] != row["new"] for row in children)
    assert all(s["duplicated"] == 0 for s in r.stream)
    if version == "v2":  # IKEv2 makes before it breaks: nothing may be lost
        assert_passed(r, "no packet lost across the rekeys (make-before-break)")
        assert all(s["lost"] == 0 for s in r.stream)
    # IKEv1 quick mode has no make-before-break: the initiator sends on its new outbound SA
    # before the responder installed it (after QM3), and about every second run loses one
    # packet at one rekey here. The scenario reports that as a failed verdict; this test does
    # not hide it, it only does not fail CI on a protocol property (see the issue note).


@pytest.mark.kernel
def test_hostile(backend: str) -> None:
    from lab.scenarios.hostile import run_hostile

    r = run_hostile(backend=backend, flood=50)
    assert_passed(r, "both daemons stayed up and answer VICI", "the tunnel stayed established (same IKE_SA)",
                  "the stream lost nothing", "replayed ESP was not delivered to the hosts",
                  "the replayed ESP reached the gateways (WAN capture) and none got through")
    assert sum(r.metrics["replayed_esp_arrived"].values()) > 0
    # reports render from a real result
    assert json.loads(to_json([r]))["ok"] is True
    assert "<svg" in to_html([r]) and "failures=\"0\"" in to_junit([r])


@pytest.mark.kernel
def test_failover(backend: str) -> None:
    from lab.scenarios.failover import run_failover

    r = run_failover(backend=backend, interval_ms=1000, threshold=3, timeout_ms=500)
    # the outage-against-bound verdict is a timing comparison: reported, not asserted here
    got = verdicts(r)
    for name in ("the health check declared the primary unhealthy", "traffic moved to the secondary",
                 "traffic moved back to the primary after it recovered (damped)",
                 "both tunnels down: traffic stops", "a flapping primary does not flap the traffic",
                 "no payload marker in clear on the wire"):
        assert got[name][0], f"{name}: {got[name][1]} ({r.backend})"
    assert r.metrics["switches"] >= 4  # over, back, (both down: none), flaps: over and back


@pytest.mark.kernel
def test_soak_short(backend: str) -> None:
    """A minute of the soak (bench/bench_soak.py runs it for 20): rekeys under traffic, nothing
    lost outside them, no IKE_SA negotiated anew, one IKE_SA at the end; memory is sampled, and
    its trend, all inside the warm-up of a minute's run, is reported as not judged (no verdict:
    a skipped judgement must not read as a pass)."""
    from lab.scenarios.soak import run_soak

    r = run_soak(backend=backend, minutes=1.0, time_scale=0.1)
    assert_passed(r, "rekeys happened during the soak", "nothing lost outside the rekeys",
                  "no IKE_SA had to be negotiated anew (no DPD death)", "IKE_SAs did not multiply")
    assert r.metrics["ike_rekeys"] >= 2 and r.metrics["child_rekeys"] >= 2
    assert all(v for v in r.metrics["rss_kib_end"].values())
    samples = r.metrics["rss_kib_samples"]
    assert len(samples) == 7  # every 10 s of the minute, both ends included
    assert samples[0][1] == r.metrics["rss_kib_start"] and samples[-1][1] == r.metrics["rss_kib_end"]
    names = set(samples[0][1])
    assert "orchestrator" in names and sum(n.startswith("charon ") for n in names) >= 2
    assert all(kib for _, rss in samples for kib in rss.values())
    trend = r.metrics["memory_trend"]
    assert trend["judged"] is False and trend["ok"] is None
    assert "fewer than 4" in trend["reason"] and "under 300 s" in trend["reason"]
    assert {p["name"] for p in trend["processes"]} == names
    assert all(p["status"] == "not judged" for p in trend["processes"])
    assert "memory does not grow" not in verdicts(r)
    json.dumps(r.metrics)  # the samples and the trend as the JSON report carries them


def _secondary_drops_traffic(lab) -> None:
    """Both secondary gateways drop the stream's forwarded traffic; the health checks (to and from
    the gateways themselves) still pass, so the controller switches and nothing moves."""
    for gw in lab.plan.gateways:
        if gw.node not in ("vpngw2", "cgw2"):
            continue
        for conn in gw.connections:
            for child in conn.children:
                if child.name.endswith("-hc"):
                    continue
                done = lab.backend.exec(lab.state, gw.node, [
                    "nft", "add", "rule", "inet", "ilab_gateway", "transit", "ip", "daddr",
                    str(child.remote_ts), "counter", "drop"])
                assert done.returncode == 0, done.stderr


def test_failover_verdict_fails_when_the_traffic_does_not_move() -> None:
    from lab.scenarios.failover import run_failover

    r = run_failover(backend="netns", interval_ms=1000, threshold=3, timeout_ms=500,
                     fault=_secondary_drops_traffic)
    got = verdicts(r)
    ok, detail = got["traffic moved to the secondary"]
    assert not ok and "secondary carried 0 packets" in detail, detail
    assert "routes switched" in detail  # the controller did its part: only the traffic failed


# -- the command line: argument errors need no lab ------------------------------------------------
@pytest.mark.parametrize(("args", "message"), [
    (["dpd", "--timeout", "20"], "--timeout: the cloud's DPD timeout is 30-60 s (got 20)"),
    (["dpd", "--action", "trap"], "--action: must be one of"),
    (["hostile", "--flood", "5000"], "--flood: must be 0-1000"),
    (["rekey", "--time-scale", "2"], "--time-scale: must be > 0 and <= 1"),
    (["negotiation", "--type", "sometimes"], "--type: must be one of"),
])
def test_cli_rejects_bad_options(args: list[str], message: str) -> None:
    from lab.cli import app
    from lab.errors import LabError

    result = CliRunner().invoke(app, ["scenario", *args])
    assert isinstance(result.exception, LabError) and message in str(result.exception)


def test_cli_failover_checks_the_health_check_ranges() -> None:
    from lab.cli import app
    from lab.errors import LabError

    result = CliRunner().invoke(app, ["scenario", "failover", "--threshold", "9"])
    assert isinstance(result.exception, LabError)
    assert "--threshold: the cloud's health check takes 3-8 (got 9)" in str(result.exception)


def test_event_labels_close_in_time_get_rows_of_their_own():
    """Both gateways declaring the peer dead 0.1 s apart: two labels, two rows; a later mark
    far to the right goes back to the first row (the HTML timeline's layout)."""
    import re

    from lab.scenarios.report import mark_labels

    marks = [(29.6, "vpngw declares peer dead"), (29.7, "cgw1 declares peer dead"),
             (29.8, "cut restored"), (80.0, "traffic back")]
    laid = mark_labels(marks, 0.5, 200)
    assert [m["row"] for m in laid] == [0, 1, 2, 0]
    r = ScenarioResult("dpd", "IKEv2 DPD 30 s disconnect", "netns", "libipsec", 1.0)
    r.timeline = {"t0": 0.0, "step": 0.5, "series": {"vpc->idc udp": [50] * 200},
                  "marks": marks}
    html = to_html([r])
    ys = [float(y) for y in re.findall(r'<text class="mark-label" x="[\d.]+" y="([\d.]+)"', html)]
    assert len(ys) == 4 and len(set(ys[:3])) == 3 and ys[3] == ys[0]


@pytest.mark.parametrize("where", ["verdict", "event"])
def test_the_report_audit_finds_a_key_wherever_it_is(where: str) -> None:
    key = "lab-default-psk-change-me"  # configs/examples/default.yaml
    assert key in KEYS
    r = ScenarioResult("dpd", "ikev2 dpd retry", "netns", "libipsec", 0.2)
    if where == "verdict":
        r.verdict("x", True, f"log: loaded secret {key}")
    else:
        r.events.append({"t": 1.0, "node": "vpngw", "kind": "ike", "up": True, "ike": f"c-{key}"})
    assert_no_key(ScenarioResult("dpd", "clean", "netns", "libipsec", 0.2))
    with pytest.raises(AssertionError, match="pre-shared key is in its report"):
        assert_no_key(r)
