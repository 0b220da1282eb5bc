"""Why a matrix case did not establish, from what strongSwan 5.9.8 said about it.

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

Nothing here depends on the order of the lines or of the daemons: a rule matches any line of any
source, and received and configured proposals are compared in every combination within the daemon
that logged them (strongSwan logs both only when its selection failed). The runner hands over all
of a case's lines and no other case's (see LabRig.case_logs in lab/matrix/runner.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from lab.matrix.cases import ID, MODE, PFS, PROPOSAL_IKE, PROPOSAL_IPSEC, PSK, TIMEOUT, TS, VERSION

Events = Mapping[str, Sequence[Mapping[str, Any]]]

_PROPOSALS = re.compile(r"^(received|configured) proposals: (.*)$")
_DH = re.compile(r"^(MODP_|ECP_|CURVE_|MODP_NONE)")

# (reason, pattern) in priority order: the daemon that refused names the cause; the notify the
# other side received is only a fallback.
RULES: tuple[tuple[str, re.Pattern[str]], ...] = tuple((reason, re.compile(p)) for reason, p in (
    (VERSION, r"no IKE config found for \S+, sending NO_PROPOSAL_CHOSEN"),
    (MODE, r"none allows pre-shared key authentication using (Main|Aggressive) Mode"),
    (PSK, r"but MAC mismatched|decryption failed\?|could not decrypt payloads|"
          r"calculated HASH does not match HASH payload|verification of .* failed"),
    (ID, r"no matching peer config found|no peer config found|constraint check failed|"
         r"identity '.*' does not match"),
    (TS, r"traffic selectors .* unacceptable|no matching CHILD_SA config found for|"
         r"received TS_UNACCEPTABLE|no acceptable traffic selectors"),
    (PROPOSAL_IKE, r"^received proposals unacceptable$|^no proposal found$"),
    (PROPOSAL_IPSEC, r"no acceptable proposal found|no matching proposal found, sending "
                     r"NO_PROPOSAL_CHOSEN|received NO_PROPOSAL_CHOSEN notify, no CHILD_SA built"),
    (TS, r"received INVALID_ID_INFORMATION error notify"),  # v1 quick mode: selectors refused
    (PSK, r"received AUTHENTICATION_FAILED"),  # nothing more specific from the peer
    (TIMEOUT, r"giving up after \d+ retransmits|peer not responding|timed? ?out"),
))


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


def classify(initiate_log: Iterable[str], events: Events, failure: str = "",
             timed_out: bool = False) -> tuple[str | None, str]:
    """(reason from lab.matrix.cases, the log line that shows it), or (None, why not)."""
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
            if reason == PROPOSAL_IKE and not any(r.startswith("IKE:") for r, _ in pairs):
                continue
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
