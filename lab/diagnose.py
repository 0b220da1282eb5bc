"""The one diagnoser: why a negotiation failed, from what strongSwan 5.9.8 said about it.

Used wherever a tunnel fails: `up` (the initiator's answer and the responder's log), `check` of a
user's own config, and every matrix case.

Evidence: the initiator's `initiate` log (VICI control-log) and the VICI `log` events of BOTH
daemons during the case (each `{"group", "level", "ikesa-name", "msg"}`). The initiator mostly
learns only a notify (NO_PROPOSAL_CHOSEN, AUTHENTICATION_FAILED...) that several causes share; the
daemon that refused says why, so rules look at every line of both daemons, most specific first.

Every pattern below comes from real runs of the lab (lab/matrix/runner.py against charon 5.9.8,
IKEv1 and IKEv2); tests/test_matrix_run.py keeps those lines as fixtures:

  ike proposal    v1: "received proposals: IKE:..." / "configured proposals: IKE:..." / "no proposal found"
                  v2: the same two lines, then "received proposals unacceptable"
  ipsec proposal  v1: "received proposals: ESP:..." ... "no matching proposal found, sending NO_PROP..."
                  v2: "received proposals: ESP:..." ... "no acceptable proposal found"
  pfs             v1: "received proposals: ESP:.../MODP_2048/..." / "configured proposals: ESP:.../
                  MODP_1536/..." from the daemon that refused (quick mode carries the PFS group in
                  the ESP proposal): received and configured differ only in the DH group
  ike version     "no IKE config found for A...B, sending NO_PROPOSAL_CHOSEN" (either direction)
  exchange mode   "found 1 matching config, but none allows pre-shared key authentication using
                  Main Mode" (or Aggressive Mode)
  authentication  v2: "tried 1 shared key for 'A' - 'B', but MAC mismatched";
                  v1: "invalid ID_V1 payload length, decryption failed?" / "could not decrypt payloads"
                  (main mode: the peer's encrypted ID payload does not decrypt under a wrong key);
                  v1 aggressive: "calculated HASH does not match HASH payload"
  id              v2: "no matching peer config found"; v1: "no peer config found" (after "looking
                  for pre-shared key peer configs matching ...[<the unexpected ID>]")
  ts              v2: "traffic selectors A === B unacceptable" / "received TS_UNACCEPTABLE notify";
                  v1: "no matching CHILD_SA config found for A === B" / "received INVALID_ID_INFORMATION"
  timeout         "giving up after N retransmits" / "peer not responding" with none of the above

libreswan 4.10's pluto (the customer gateway on `implementation: libreswan`; its log lines reach
the rules as the events of its node, lab/matrix/pluto_peer.py), from the matrix's runs against it
in the VM guest; tests/test_libreswan_diagnose.py keeps them as fixtures:

  ike proposal    v2: "no local proposal matches remote proposals 1:IKE:..."; v1: "Oakley
                  Transform [...] refused" / "no acceptable Oakley Transform"
  ipsec proposal  v2: "no local proposal matches remote proposals 1:ESP:..."; v1: "no acceptable
                  Proposal in IPsec SA"
  id              "Peer ID '@x' mismatched on first found connection and no better connection
                  found" (v2 answers AUTHENTICATION_FAILED, which alone reads as a wrong key; v1
                  INVALID_ID_INFORMATION, which alone reads as a selector refusal)
  authentication  v2: "authentication failed: computed hash does not match hash received from
                  peer"; v1 Main Mode: the peer's ID payload decrypted under the wrong key is
                  garbage, so pluto's complaint is about its parse: "51044-byte length of ISAKMP
                  Identification Payload is larger than can fit" (seen), or "probable
                  authentication failure (mismatch of preshared secrets?)"
  ike version     "ignoring IKEv1 packet as policy is set to silently drop all IKEv1 packets";
                  "ISAKMP_v2_IKE_SA_INIT message received on A but no suitable connection found
                  with IKEv2 policy" (pluto has IKEv1 conns only)
  exchange mode   "initial Main Mode message received but no connection has been authorized with
                  authby=PSK and xauth=no" (or Aggressive): pluto answers nothing, the initiator
                  times out; it is the version that differs when the case's conn pluto loaded
                  ("added IKEv2 connection") is IKEv2

Nothing here depends on the order of the lines or of the daemons: a rule matches any line of any
source, and received and configured proposals are compared in every combination within the daemon
that logged them (strongSwan logs both only when its selection failed). The runner hands over all
of a case's lines and no other case's (see LabRig.case_logs in lab/matrix/runner.py).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from lab.ranges import is_private_wan

# The reasons, in a network engineer's words (the matrix's expected outcomes use the same).
PROPOSAL_IKE = "ike proposal mismatch"
PROPOSAL_IPSEC = "ipsec proposal mismatch"
PFS = "pfs mismatch"
VERSION = "ike version mismatch"
MODE = "exchange mode mismatch"
PSK = "authentication failed"
ID = "id mismatch"
NAT_ID = "id mismatch behind NAT"  # the customer's ID is its private address, the NAT's hidden
TS = "traffic selector mismatch"
TIMEOUT = "timeout"

Events = Mapping[str, Sequence[Mapping[str, Any]]]

_PROPOSALS = re.compile(r"^(received|configured) proposals: (.*)$")
_DH = re.compile(r"^(MODP_|ECP_|CURVE_|MODP_NONE)")

_PLUTO_MODE = r"initial (Main|Aggressive) Mode message received but no connection has been " \
    r"authorized with authby=PSK"
_PLUTO_V2_ONLY = re.compile(r"added IKEv2 connection$")
_PLUTO_V1 = re.compile(r"added IKEv1 connection$")

# (reason, pattern) in priority order: the daemon that refused names the cause; the notify the
# other side received is only a fallback.
RULES: tuple[tuple[str, re.Pattern[str]], ...] = tuple((reason, re.compile(p)) for reason, p in (
    # pluto's (libreswan 4.10) own words first: they are the refusing daemon's
    (VERSION, r"ignoring IKEv1 packet as policy is set to silently drop all IKEv1 packets"),
    (PROPOSAL_IKE, r"no local proposal matches remote proposals \d+:IKE:|"
                   r"no acceptable Oakley Transform"),
    (PROPOSAL_IPSEC, r"no local proposal matches remote proposals \d+:ESP:|"
                     r"no acceptable Proposal in IPsec SA"),
    (ID, r"Peer ID '[^']*' mismatched on first found connection and no better connection found"),
    (VERSION, r"message received on \S+ but no suitable connection found with IKEv2 policy"),
    (MODE, _PLUTO_MODE),
    (PSK, r"authentication failed: computed hash does not match hash received from peer|"
          r"length of ISAKMP Identification Payload is larger than can fit|"
          r"probable authentication failure \(mismatch of preshared secrets\?\)"),
    (VERSION, r"no IKE config found for \S+, sending NO_PROPOSAL_CHOSEN"),
    (MODE, r"none allows pre-shared key authentication using (Main|Aggressive) Mode"),
    (PSK, r"but MAC mismatched|decryption failed\?|could not decrypt payloads|"
          r"calculated HASH does not match HASH payload|verification of .* failed"),
    (ID, r"no matching peer config found|no peer config found|constraint check failed|"
         r"identity '.*' does not match|IDir '.*' does not match to"),
    (TS, r"traffic selectors .* unacceptable|no matching CHILD_SA config found for|"
         r"received TS_UNACCEPTABLE|no acceptable traffic selectors"),
    (PROPOSAL_IKE, r"^received proposals unacceptable$|^no proposal found$"),
    (PROPOSAL_IPSEC, r"no acceptable proposal found|no matching proposal found, sending "
                     r"NO_PROPOSAL_CHOSEN|received NO_PROPOSAL_CHOSEN notify, no CHILD_SA built"),
    (TS, r"received INVALID_ID_INFORMATION error notify"),  # v1 quick mode: selectors refused
    (PSK, r"received AUTHENTICATION_FAILED"),  # nothing more specific from the peer
    (TIMEOUT, r"giving up after \d+ retransmits|peer not responding|timed? ?out"),
))


_GENERIC_IKE = {"received proposals unacceptable", "no proposal found"}


def _sources(initiate_log: Iterable[str], events: Events) -> list[list[str]]:
    """The lines of each source: the initiate log, then each daemon's `log` events."""
    out = [[m for m in initiate_log if m]]
    for evs in events.values():
        out.append([str(e.get("msg", "")) for e in evs if e.get("msg")])
    return out


def _proposal_pairs(sources: Sequence[Sequence[str]]) -> list[tuple[str, str]]:
    """(received, configured) proposal lists, every combination of the two within each source.

    A daemon logs both lists when its proposal selection failed; they are compared where they
    came from (the configured list is that daemon's), whatever their order or position among the
    other lines.
    """
    pairs = []
    for lines in sources:
        got: dict[str, list[str]] = {"received": [], "configured": []}
        for line in lines:
            m = _PROPOSALS.match(line)
            if m:
                got[m.group(1)].append(m.group(2))
        pairs += [(r, c) for r in got["received"] for c in got["configured"]]
    return pairs


def _split(proposals: str) -> list[tuple[str, frozenset[str], frozenset[str]]]:
    """`ESP:AES_CBC_128/HMAC_SHA1_96/MODP_2048/NO_EXT_SEQ, ...` -> (protocol, algorithms, DH)."""
    out = []
    for one in proposals.split(", "):
        proto, _, algs = one.partition(":")
        parts = [a for a in algs.split("/") if a]
        dh = frozenset(a for a in parts if _DH.match(a))
        out.append((proto.strip(), frozenset(a for a in parts if not _DH.match(a)), dh))
    return out


def pfs_only(received: str, configured: str) -> bool:
    """ESP proposals that would match but for the DH group (PFS on one side, or other groups)."""
    got, have = _split(received), _split(configured)
    if not got or not have or any(p != "ESP" for p, _, _ in got + have):
        return False
    same_algs = any(g[1] == h[1] for g in got for h in have)
    same_full = any(g[1:] == h[1:] for g in got for h in have)
    return same_algs and not same_full


_NAT_SEEN = re.compile(r"(local|remote) host is behind NAT")
# a responder's config lookup: its address[the ID asked of it]...the peer's address[the peer's ID]
_LOOKUP = re.compile(r"looking for (?:pre-shared key )?peer configs matching (\S+?)(?:\[([^\]]+)\])?"
                     r"\.\.\.(\S+?)\[([^\]]+)\]")
# an initiator that authenticated the peer under an ID other than the one it expects (IKEv1)
_ID_REFUSED = re.compile(r"IDir '([^']+)' does not match to '([^']+)'")


def _address(value: str | None) -> ipaddress.IPv4Address | None:
    try:
        return ipaddress.IPv4Address(value or "")
    except ValueError:
        return None


def _private(value: str | None) -> bool:
    """An address ID behind NAT (the gateway's private WAN address)."""
    ip = _address(value)
    return ip is not None and is_private_wan(ip)


def private_id_behind_nat(lines: Sequence[str], local_ids: Collection[str] = ()) -> str | None:
    """How the logs show the classic NAT identity pitfall, if they do (NAT detected as well).

    Behind NAT a gateway's default ID is its own private WAN address while the other end
    expects the public one the NAT shows. The logs show it one of three ways: a responder got
    the private address as the peer's ID; an IKEv1 initiator refused the private ID the peer
    authenticated with; or a responder on a private address, configured (`local_ids`: the IDs
    the gateways are configured with) to identify by that address, was asked for another one.
    The log of the last alone cannot tell it from a mismatch of the other ID.
    """
    if not any(_NAT_SEEN.search(line) for line in lines):
        return None
    for line in lines:
        if m := _LOOKUP.search(line):
            own, asked, _, peer = m.groups()
            if _private(peer):
                return f"the peer's ID {peer} is a private address"
            if _private(own) and own in local_ids and asked and \
                    _address(asked) not in (None, _address(own)):
                return (f"the gateway at the private address {own} identifies itself by it, but "
                        f"was asked to be {asked}")
        if (m := _ID_REFUSED.search(line)) and _private(m.group(1)):
            return f"the peer authenticated as {m.group(1)}, a private address, not {m.group(2)}"
    return None


def classify(initiate_log: Iterable[str], events: Events, failure: str = "",
             timed_out: bool = False, local_ids: Collection[str] = ()) -> tuple[str | None, str]:
    """(reason from lab.matrix.cases, the log line that shows it), or (None, why not).
    `local_ids`: the IDs the gateways are configured with (see `private_id_behind_nat`)."""
    sources = _sources(initiate_log, events)
    lines = [line for source in sources for line in source]
    pairs = _proposal_pairs(sources)
    for reason, pattern in RULES:
        for line in lines:
            if not pattern.search(line):
                continue
            if reason == PROPOSAL_IPSEC:
                for received, configured in pairs:
                    if pfs_only(received, configured):
                        return PFS, f"received {received}, configured {configured}"
            # strongSwan's bare lines say it of IKE only with the IKE proposals it logged
            if line in _GENERIC_IKE and not any(r.startswith("IKE:") for r, _ in pairs):
                continue
            if reason == MODE and pattern.pattern == _PLUTO_MODE and \
                    any(_PLUTO_V2_ONLY.search(x) for x in lines) and \
                    not any(_PLUTO_V1.search(x) for x in lines):
                return VERSION, f"{line} (pluto's conns are IKEv2)"
            if reason == ID and (how := private_id_behind_nat(lines, local_ids)):
                return NAT_ID, f"{line}; NAT detected, and {how}"
            return reason, line
    if timed_out or "timeout" in failure.lower() or "timed out" in failure.lower():
        return TIMEOUT, failure or "no answer within the case's time"
    return None, failure or "no recognised reason in the daemons' logs"


def transcript(initiate_log: Sequence[str], events: Events, initiator: str, responder: str,
               limit: int = 80) -> list[str]:
    """The lines worth keeping in a report: both daemons' log of the attempt, packet noise out."""
    noise = re.compile(r"^(sending packet|received packet|generating |parsing |received .* vendor ID|"
                       r"received (FRAGMENTATION|XAuth|DPD|NAT-T))")
    out = [] if events.get(initiator) else [
        f"{initiator} (initiator) {m}" for m in initiate_log if m and not noise.match(m)]
    for node, evs in events.items():
        role = "initiator" if node == initiator else "responder" if node == responder else "peer"
        out += [f"{node} ({role}) [{e.get('group', '')}] {e.get('msg', '')}" for e in evs
                if e.get("msg") and not noise.match(str(e.get("msg")))]
    return out[-limit:]


LOG_LINE = re.compile(r"^\S+ \S+ \d+\[\w+\] (?:<[^>]*> )?(.*)$")


def log_messages(path: Path, limit: int = 4000) -> list[str]:
    """The messages of a lab daemon's charon.log (time, thread and IKE_SA name stripped)."""
    try:
        lines = path.read_text(errors="replace").splitlines()[-limit:]
    except OSError:
        return []
    return [m.group(1) for line in lines if (m := LOG_LINE.match(line))]


def check_failure(findings: Sequence[Any], wire: Mapping[str, Any] | None,
                  counted: Sequence[Any] = ()) -> tuple[str, str]:
    """The most likely cause of a failed check, from what it gathered: its rows (lab.findings),
    what each gateway's SAs counted (lab.esp_counters) and the internet segment's capture. In
    the order a network engineer rules causes out: a daemon down, probes refused by a host, an
    IKE_SA on one side only, a path cut, ESP lost on the way (the SAs' counters), what the wire
    saw, CHILD_SAs on one side only, traffic one way only; else the first failed check."""
    failed = [f for f in findings if not f.ok and not f.info]
    for f in failed:
        if "VICI" in f.detail or "does not answer" in f.detail or "Connection refused" in f.detail:
            frozen = ": its process is stopped (SIGSTOP?)" if " is stopped" in f.detail else ""
            return (f"the strongSwan daemon on {f.subject.split()[0]} does not answer{frozen}",
                    f.detail)
    for f in failed:
        if "refused by the host" in f.detail:
            source = f.subject.split(" -> ")[0].split()[-1]
            return (f"the host refused to send the probes from {source}: a firewall on the "
                    "host?", f"{f.subject}: {f.detail}")
    for f in failed:
        if f.check.startswith("path MTU") and "lost, no ICMP" in f.detail:
            sizes = [s.split()[0] for s in f.detail.split("; ") if "lost, no ICMP" in s]
            return (f"a path MTU black hole: {' and '.join(sizes)}-byte packets with DF vanish "
                    "between the sites and no ICMP 'fragmentation needed' comes back, while small "
                    "packets pass (ping works, large transfers stall): a link on the path has a "
                    "smaller MTU than the gateways know; lower the gateways' MTU to it or clamp "
                    "TCP MSS on them", f"{f.subject}: {f.detail}")
    for f in failed:
        if f.check.startswith("probe agent") and "gave no result" in f.detail:
            return (f"the lab's probe agent on {f.subject} ended before it reported: its probes "
                    "count as not delivered, which is no fault of the tunnel: check again", f.detail)
    ike_rows = [f for f in findings if f.plane == "control" and f.check == "IKE_SA established"]
    by_tunnel: dict[str, list[Any]] = {}
    for f in ike_rows:
        by_tunnel.setdefault(f.tunnel, []).append(f)
    for tunnel, rows in by_tunnel.items():
        up = [f.subject for f in rows if f.ok]
        down = [f.subject for f in rows if not f.ok]
        if up and down:
            return (f"tunnel {tunnel} is up on one side only: {', '.join(up)} has it, "
                    f"{', '.join(down)} does not (restarted, or its SAs deleted?)",
                    next(f.detail for f in rows if not f.ok))
    flows: Mapping[str, int] = (wire or {}).get("flows", {})
    data = [f for f in findings if f.plane == "data" and not f.info]
    unanswered = [f for f in failed if f.check == "CHILD_SA rekey" and "in time" in f.detail]
    if data and all(not f.ok for f in data) and unanswered:
        return ("nothing gets through between the gateways: the path between them is cut, or the "
                "peer stopped answering", f"no probe delivered either way; {unanswered[0].detail}")

    esp_lost = _esp_lost(counted, bool(unanswered), "udp/4500/esp" in " ".join(flows))
    if esp_lost:
        return esp_lost
    held = _not_sent_into_tunnel(counted, data)
    if held:
        return held

    def seen(kind: str, src: str, dst: str) -> int:
        return sum(n for k, n in flows.items() if k.startswith(kind) and k.endswith(f" {src}>{dst}"))

    pairs = {tuple(k.split(" ", 1)[1].split(">")) for k in flows if " " in k}
    for src, dst in sorted(pairs):
        if seen("udp/500", src, dst) + seen("udp/4500/ike", src, dst) and \
                not seen("udp/500", dst, src) + seen("udp/4500/ike", dst, src):
            return (f"IKE from {src} gets no answer from {dst}: the path between them is cut, or "
                    f"{dst}'s daemon is down", f"on the wire: IKE {src}>{dst}, none back")
    for src, dst in sorted(pairs):
        esp_out = seen("udp/4500/esp", src, dst) + seen("ip/50/esp", src, dst)
        esp_back = seen("udp/4500/esp", dst, src) + seen("ip/50/esp", dst, src)
        if esp_out and not esp_back and (src, dst) < (dst, src):
            return (f"ESP leaves {src} for {dst} but none comes back: an asymmetric cut, or "
                    f"{dst} has no SA for it", f"on the wire: {esp_out} ESP {src}>{dst}, 0 back")
    child_rows = [f for f in findings if f.plane == "control" and f.check == "CHILD_SA installed"]
    if any(f.ok for f in child_rows) and any(not f.ok for f in child_rows):
        bad = next(f for f in child_rows if not f.ok)
        return f"CHILD_SAs on one side only ({bad.subject})", bad.detail
    ways = {w: [f for f in data if w in f.check] for w in ("idc->vpc", "vpc->idc")}
    good = [w for w, rows in ways.items() if rows and all(f.ok for f in rows)]
    bad_ways = [w for w, rows in ways.items() if any(not f.ok for f in rows)]
    if good and bad_ways:
        return (f"traffic flows {good[0]} only, not {bad_ways[0]}: an asymmetric cut, a route or "
                "a firewall on one side", next(f.detail for f in ways[bad_ways[0]] if not f.ok))
    if failed and all(f.plane in ("data", "wire") for f in failed) and not flows:
        return "nothing crossed the internet segment", failed[0].detail
    first = failed[0] if failed else None
    return ((f"{first.plane}: {first.check} failed ({first.subject})", first.detail) if first
            else ("no check could run", ""))


def _ends(counted: Sequence[Any]) -> Iterator[tuple[str, Any, Any]]:
    """(tunnel, cloud's count, customer's count) from lab.esp_counters, which lists each
    tunnel's cloud gateway first, then its customer gateway."""
    by_tunnel: dict[str, list[Any]] = {}
    for c in counted:
        by_tunnel.setdefault(c.tunnel, []).append(c)
    for tunnel, ends in by_tunnel.items():
        if len(ends) >= 2:
            yield tunnel, ends[0], ends[1]


def _esp_lost(counted: Sequence[Any], ike_unanswered: bool, in_udp: bool) -> tuple[str, str] | None:
    """ESP one gateway's SA sent and the peer's SA never counted, per tunnel."""
    for tunnel, cloud, customer in _ends(counted):
        lost = [(a, b) for a, b in ((cloud, customer), (customer, cloud))
                if a.packets_out > 0 and b.packets_in == 0]
        evidence = "; ".join(c.describe() for c in (cloud, customer))
        if len(lost) == 2 and not ike_unanswered:
            esp = "ESP in UDP 4500" if in_udp else "ESP (IP protocol 50)"
            return (f"IKE passes between {cloud.node} and {customer.node} but ESP does not: each "
                    f"gateway's SA sent ESP the other never received: a firewall between them that "
                    f"lets IKE through but drops {esp}?", f"tunnel {tunnel}: {evidence}")
        if len(lost) == 1:
            src, dst = lost[0]
            if dst.xfrm.get("XfrmInNoStates"):
                return (f"{dst.node} has no SA for the ESP {src.node} sends it (XfrmInNoStates "
                        f"+{dst.xfrm['XfrmInNoStates']}): the SA is gone on {dst.node}'s side only "
                        "(deleted or expired there without the peer knowing)",
                        f"tunnel {tunnel}: {evidence}")
            also = " (and IKE's answers with it)" if ike_unanswered else ""
            return (f"ESP from {src.node} to {dst.node} is lost on the way{also}, the other "
                    f"direction arrives: a one-way cut or filter between the gateways, or "
                    f"{dst.node} drops it",
                    f"tunnel {tunnel}: {evidence}")
    return None


def _not_sent_into_tunnel(counted: Sequence[Any], data: Sequence[Any]) -> tuple[str, str] | None:
    """A gateway whose SA counted nothing out while its side's probes failed: the traffic never
    entered the tunnel there (a route or policy on that gateway), whatever the path does."""
    for tunnel, cloud, customer in _ends(counted):
        for gw, way, side in ((customer, "idc->vpc", "IDC"), (cloud, "vpc->idc", "VPC")):
            rows = [f for f in data if f.tunnel == tunnel and f.check.endswith(way)]
            if gw.packets_out == 0 and any(not f.ok for f in rows):
                return (f"{gw.node} does not send the {side}'s traffic into the tunnel: its SA "
                        f"counted no packet out while the {side} host's probes were sent: a route "
                        f"on {gw.node} that does not lead into the tunnel (strongSwan's table "
                        "220), or a missing policy",
                        f"tunnel {tunnel}: " + "; ".join(c.describe() for c in (cloud, customer)))
    return None
