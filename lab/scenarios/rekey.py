"""Rekeying under load: short lifetimes, the stream running through several rekeys.

Each rekey is taken from the daemons' own `ike-rekey` / `child-rekey` events (old and new SPIs,
time). Pass: new SPIs appear, old ones go, and the stream loses nothing around any rekey
(make-before-break). The spec keeps the cloud's minimum lifetimes (IKE 60 s, IPsec 180 s and
2560 KB); `--time-scale` shortens them for quick runs, and the report says so.
"""

from __future__ import annotations

import time
from pathlib import Path

from lab.plan import Connection
from lab.running import Lab
from lab.scenarios.base import WireWatch, lab_name, running_lab, settled_ike_states, variant
from lab.scenarios.events import Event, EventRecorder
from lab.scenarios.report import ScenarioResult
from lab.scenarios.stream import Stream
from lab.timing import patience

WINDOW = (-0.5, 1.0)  # seconds around a rekey in which a lost packet counts against it
SETTLE = 5.0  # s an IKE rekey in progress at the end may take to settle


def ike_settle(conn: Connection) -> float:
    """How long the IKE_SAs at the end may take to show one ESTABLISHED: a whole IKE_SA
    lifetime at least. With short lifetimes a rekey is under way at almost any moment, and one
    that collides (both ends rekeying) stays REKEYING/REKEYED for its retransmits (seen on a
    loaded docker run: 5 s were not enough); IKE_SAs that multiplied stay more than one."""
    return max(SETTLE, float(conn.ike_rekey_time + conn.ike_over_time))
VOLUME_PADDING = 1000  # bytes per UDP packet of the stream when the lifetime is a volume
RATE_SAMPLE = 3.0  # seconds of stream over which the SA's byte rate is measured (volume rekeys)


def run_rekey(base: str | Path | None = None, *, backend: str = "netns", version: str = "v2",
              trigger: str = "time", time_scale: float = 1.0, rekeys: int = 3,
              name: str | None = None) -> ScenarioResult:
    """`trigger`: "time" (IKE 60 s / IPsec 180 s lifetimes) or "volume" (IPsec 2560 KB)."""
    ipsec = ({"sa_lifetime": 180, "sa_lifetime_kb": 4096000000} if trigger == "time"
             else {"sa_lifetime": 604800, "sa_lifetime_kb": 2560})
    spec = variant(base, ike={"version": version, "exchange_mode": "main", "sa_lifetime": 60}
                   if trigger == "time" else {"version": version, "exchange_mode": "main"},
                   ipsec=ipsec, dpd={"enabled": True, "timeout": 30})
    name = name or lab_name("rek")
    with running_lab(spec, name, backend, time_scale) as lab:
        conn = lab.plan.gateways[0].connections[0]
        result = ScenarioResult(
            "rekey", f"IKE{version} {trigger} (IKE SA {conn.ike_rekey_time + conn.ike_over_time} s, "
                     f"CHILD_SA {conn.child_life_time} s / {conn.child_life_bytes // 1024} KB)",
            lab.state.backend, lab.state.dataplane, time_scale)
        _experiment(lab, result, rekeys)
    return result


def _spis(lab: Lab, node: str) -> set[str]:
    with lab.vici(node) as v:
        return {c.get("spi-in", "") for sa in v.sas() for c in sa.get("child-sas", {}).values()
                if c.get("state") == "INSTALLED"}


def _byte_rate(lab: Lab, node: str, seconds: float) -> float:
    """Bytes per second the busier direction of the node's CHILD_SA counts (VICI counters)."""
    def counted() -> int:
        with lab.vici(node) as v:
            return max((max(int(c.get("bytes-in", 0)), int(c.get("bytes-out", 0)))
                        for sa in v.sas() for c in sa.get("child-sas", {}).values()
                        if c.get("state") == "INSTALLED"), default=0)

    first, t0 = counted(), time.monotonic()
    time.sleep(seconds)  # a measurement interval, not a wait for a condition
    return (counted() - first) / (time.monotonic() - t0)


def _settled(lab: Lab, node: str, tunnel: str, children: int, after: float) -> None:
    """Until the last rekey's loss window has closed and its old CHILD_SA is gone (one INSTALLED
    CHILD_SA per mapping, nothing rekeyed or deleting), bounded by SETTLE."""
    deadline = time.monotonic() + patience(SETTLE)
    while time.monotonic() < deadline:
        with lab.vici(node) as v:
            states = [c.get("state") for sa in v.sas() if sa["name"] == tunnel
                      for c in (sa.get("child-sas") or {}).values()]
        if time.time() >= after + WINDOW[1] and states == ["INSTALLED"] * children:
            return
        time.sleep(0.05)


def _experiment(lab: Lab, result: ScenarioResult, rekeys: int) -> None:
    cloud = lab.plan.gateways[0]
    conn = cloud.connections[0]
    first_spis = _spis(lab, cloud.node)
    by_volume = conn.child_life_bytes <= 10**9
    stream = Stream(lab, size=VOLUME_PADDING if by_volume else 0)
    wire = WireWatch(lab, [stream.prefix])
    try:
        # the up/down events too: when no rekey happens they say what did instead
        with EventRecorder(lab, ["child-rekey", "ike-rekey", "ike-updown", "child-updown"]) as rec:
            stream.start()
            # enough stream for `rekeys` CHILD_SA rekeys, bounded: by time, the rekey time; by
            # volume, the rekey bytes at the rate the SA counts them (a slow machine's stream
            # carries fewer bytes a second, and the kernel and libipsec count differently)
            if not by_volume:
                per_rekey = float(conn.child_rekey_time)
            else:
                rate = _byte_rate(lab, cloud.node, RATE_SAMPLE)
                # x3: the rate a loaded machine keeps up later may be well below the sample's
                per_rekey = 3.0 * conn.child_rekey_bytes / rate if rate > 0 else 600.0
                result.metrics["sa_bytes_per_s"] = round(rate)
            budget = min(per_rekey * rekeys + 10, 1800)
            deadline = time.monotonic() + budget
            while time.monotonic() < deadline and len(_child_rekeys(rec, cloud.node)) < rekeys:
                time.sleep(0.2)  # the daemons rekey on their own schedule; we only watch
            _settled(lab, cloud.node, conn.tunnel, len(conn.children),
                     after=max((e.time for e in _child_rekeys(rec, cloud.node)), default=0.0))
            flow = stream.stop()
            events = rec.matching(lambda e: e.node == cloud.node)
    except BaseException:
        stream.kill()
        wire.kill()
        raise
    wire.finish(result)
    children = [e for e in events if e.kind == "child-rekey"]
    ikes = [e for e in events if e.kind == "ike-rekey"]
    result.verdict(f"at least {rekeys} CHILD_SA rekeys happened", len(children) >= rekeys,
                   f"{len(children)} CHILD_SA and {len(ikes)} IKE_SA rekeys in {budget:.0f} s budget"
                   + _downs(events, flow.started))
    rows = []
    for e in sorted(children + ikes, key=lambda e: e.time):
        old, new = _old_new(e)
        lost = sum(d.lost_between(e.time + WINDOW[0], e.time + WINDOW[1]) for d in flow.directions)
        rows.append({"t": round(e.time - flow.started, 2), "kind": e.kind, "old": old, "new": new,
                     "lost": lost})
        result.mark(e.time, "IKE rekey" if e.kind == "ike-rekey" else "CHILD rekey")
    result.metrics["rekeys"] = rows
    final_spis = _spis(lab, cloud.node)
    result.verdict("new SPIs replaced the old ones", bool(final_spis) and not (final_spis & first_spis),
                   f"before {sorted(first_spis)}, after {sorted(final_spis)}")
    ike_states = settled_ike_states(lab, conn.tunnel, [cloud.node], ike_settle(conn))[cloud.node]
    result.metrics["ike_sas_at_end"] = ike_states
    # IKEv1 has no IKE_SA rekey, only reauthentication; when both peers reauthenticate on their own
    # timers strongSwan keeps both new ISAKMP SAs, and every round doubles them.
    result.verdict("IKE_SAs did not multiply (one established IKE_SA at the end)",
                   ike_states.count("ESTABLISHED") == 1,
                   f"{len(ike_states)} IKE_SAs for {conn.tunnel}: {ike_states[:8]}"
                   + ("..." if len(ike_states) > 8 else ""))
    lost = sum(len(d.lost) for d in flow.directions)
    result.verdict("no packet lost across the rekeys (make-before-break)", lost == 0,
                   f"{flow.losses()}; per rekey: "
                   + ", ".join(f"{r['kind']}@{r['t']}s={r['lost']}" for r in rows))
    dup = sum(d.duplicates for d in flow.directions)
    result.verdict("no duplicated packets", dup == 0, f"{dup} duplicated")
    result.attach_stream(flow)
    result.attach_events(events, flow.started)


def _downs(events: list[Event], started: float) -> str:
    """What went down instead of rekeying (an SA at its hard lifetime, a failed negotiation)."""
    said = []
    for kind, what in (("ike-updown", "IKE_SA"), ("child-updown", "CHILD_SA")):
        at = [round(e.time - started, 1) for e in events if e.kind == kind and e.up is False]
        if at:
            said.append(f"{what} down {len(at)}x (t={', '.join(f'{t:g}' for t in at[:6])}"
                        f"{', ...' if len(at) > 6 else ''} s)")
    return "; " + "; ".join(said) if said else ""


def _child_rekeys(rec: EventRecorder, node: str) -> list[Event]:
    return rec.matching(lambda e: e.node == node and e.kind == "child-rekey")


def _old_new(event: Event) -> tuple[str, str]:
    """Old and new SPIs of a rekey event (IKE: initiator_responder SPIs; CHILD: inbound SPI)."""
    if event.kind == "ike-rekey":
        def spi(sa: dict) -> str:
            return f"{sa.get('initiator-spi', '')}_{sa.get('responder-spi', '')}" if sa else ""

        return spi(event.detail.get("old", {})), spi(event.detail.get("new", {}))
    for child in event.detail.get("child-sas", {}).values():
        return child.get("old", {}).get("spi-in", ""), child.get("new", {}).get("spi-in", "")
    return "", ""
