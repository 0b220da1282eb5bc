"""An idle tunnel behind a NAT that forgets idle mappings: do NAT-T keepalives keep it alive?

The customer gateway sits behind a NAT router that lets nothing in it did not ask for
(`behind_nat.inbound: false`, the customer initiates) and drops an idle UDP mapping after
`udp_timeout` seconds. The tunnel comes up, then nothing crosses it for `quiet` seconds, longer
than the timeout. Then the cloud side sends: its ESP reaches the customer gateway only if the
NAT still maps the customer's UDP 4500, that is only if the customer's keepalives (RFC 3948,
every `keepalive` seconds) held the mapping open. Without them the tunnel is up on both daemons
and still black-holes the cloud's traffic, until the customer sends again; the scenario shows
that recovery too. DPD is off so that nothing but the keepalives crosses the NAT meanwhile.
"""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import Any

from lab.agent import NAT_KEEPALIVE
from lab.probe import Agent
from lab.running import Lab
from lab.scenarios.base import WireWatch, lab_name, running_lab, variant
from lab.scenarios.report import ScenarioResult
from lab.spec import DEFAULT_SPEC, load_spec
from lab.timing import patience

PRIVATE_IP = "172.16.0.2"  # the customer's WAN address when the base spec has no NAT of its own
PORT = 33434
PROBE_WAIT = patience(5.0)  # s a probe has to arrive


def run_nat_keepalive(base: str | Path | None = None, *, backend: str = "netns",
                      udp_timeout: int = 8, keepalive: int = 3, quiet: float = 12.0,
                      version: str = "v2", name: str | None = None) -> ScenarioResult:
    """`keepalive` 0: none at all. `quiet` must outlast `udp_timeout` for the experiment to say
    anything (the command checks it)."""
    spec = load_spec(base or DEFAULT_SPEC)
    nat: dict[str, Any] = {"private_ip": PRIVATE_IP}
    if spec.tunnels[0].customer_gateway.behind_nat is not None:
        nat = {"private_ip": str(spec.tunnels[0].customer_gateway.behind_nat.private_ip)}
    nat |= {"inbound": False, "udp_timeout": udp_timeout, "keepalive": keepalive}
    customer_gateway = {**spec.tunnels[0].customer_gateway.model_dump(mode="json"),
                        "behind_nat": nat}
    lab_spec = variant(spec, customer_gateway=customer_gateway, negotiation_type="passive",
                       dpd={"enabled": False},
                       ike={"version": version, "exchange_mode": "main"})
    label = f"keepalive every {keepalive} s" if keepalive else "no keepalives"
    with running_lab(lab_spec, name or lab_name("nat"), backend) as lab:
        result = ScenarioResult("nat", f"IKE{version} NAT idle timeout {udp_timeout} s, {label}, "
                                       f"{quiet:g} s quiet", lab.state.backend,
                                lab.state.dataplane, 1.0)
        _experiment(lab, result, udp_timeout, keepalive, quiet)
    return result


def _experiment(lab: Lab, result: ScenarioResult, udp_timeout: int, keepalive: int,
                quiet: float) -> None:
    probe = lab.plan.probes[0]
    prefix = f"ILAB{secrets.token_hex(4)}"
    common = ["--iface", "eth0", "--prefix", prefix, "--port", str(PORT),
              "--timeout", str(PROBE_WAIT)]
    wire = WireWatch(lab, [prefix])
    vpc = (probe.vpc_node, str(probe.vpc_addr))
    idc = (probe.idc_node, str(probe.idc_addr))
    try:
        # the experiment: nothing crosses the tunnel for `quiet` seconds, then the cloud sends
        first, silent = _crosses(lab, common, vpc, idc, f"{prefix}-v2i", quiet)
        again = None
        if not first:  # the customer sends: a new mapping, and the cloud's traffic gets in again
            _crosses(lab, common, idc, vpc, f"{prefix}-i2v")
            again, _ = _crosses(lab, common, vpc, idc, f"{prefix}-v2i-again")
    except BaseException:
        wire.kill()
        raise
    counts = wire.finish(result).get("counts", {})
    seen = counts.get(NAT_KEEPALIVE, 0)
    result.metrics.update({"udp_timeout_s": udp_timeout, "keepalive_s": keepalive,
                           "quiet_s": round(silent, 1), "keepalives_on_the_wire": seen,
                           "delivered_after_quiet": first})
    if keepalive:
        expected = int(silent // keepalive) - 1  # a keepalive is sent only after `keepalive` s idle
        result.verdict(f"the customer sent NAT-T keepalives through the silence (every {keepalive} s)",
                       seen >= max(1, expected),
                       f"{seen} keepalive(s) on the internet segment in {silent:.1f} s")
        result.verdict("the cloud's ESP reached the customer gateway after the silence (the "
                       "keepalives held the NAT mapping open)", first,
                       "delivered" if first else f"lost: the NAT dropped the mapping despite "
                                                 f"{seen} keepalive(s)")
        return
    result.verdict("no NAT-T keepalive crossed the NAT during the silence", seen == 0,
                   f"{seen} keepalive(s) on the internet segment")
    result.verdict(f"without keepalives the NAT forgot the mapping: the cloud's ESP after "
                   f"{silent:.0f} s of silence did not arrive", not first,
                   "lost, though both daemons kept their SAs" if not first else
                   f"delivered: the NAT kept the mapping longer than its {udp_timeout} s timeout")
    if again is not None:
        result.verdict("once the customer sent again the cloud's traffic got through", again,
                       "delivered" if again else "still lost after the customer's packet")


def _crosses(lab: Lab, common: list[str], sender: tuple[str, str], receiver: tuple[str, str],
             marker: str, wait: float = 0.0) -> tuple[bool, float]:
    """Whether one UDP marker from `sender` reached `receiver` (node, address), sent after
    `wait` seconds of listening; and how long that wait really was."""
    listener = Agent(lab, receiver[0], ["listen", *common], stdin=json.dumps([marker]),
                     keep_open=True)
    listener.wait_ready()
    started = time.monotonic()
    time.sleep(wait)  # a silence the experiment needs, not a wait for a condition
    waited = time.monotonic() - started
    listener.feed("")
    probe = Agent(lab, sender[0], ["send", *common])
    probe.feed(json.dumps([{"src": sender[1], "dst": receiver[1], "proto": "udp", "marker": marker}]))
    probe.finish()
    return marker in listener.finish().get("received", []), waited
