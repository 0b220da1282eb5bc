"""pluto's log lines as the lab's events (VICI's kinds: ike-updown, child-updown, ike-rekey,
child-rekey), so a scenario times what a libreswan customer gateway did as it times charon.

pluto has no event stream; its log file (`--logfile`, one line per event, written as it happens)
says when it established, rekeyed or gave up an SA. Each line carries pluto's own time stamp
(local time, microseconds, no year), which is the event's time: when pluto did it, not when the
lab read it. Every pattern comes from libreswan 4.10's log in the lab's runs
(tests/data/libreswan/).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

_LINE = re.compile(r'^(\w{3} [ \d]\d \d\d:\d\d:\d\d(?:\.\d+)?): "([^"]+)"(?:\[\d+\])? #(\d+): (.*)$')

# (kind, up, pattern on the message): the first that matches
RULES: tuple[tuple[str, bool | None, re.Pattern[str]], ...] = tuple(
    (kind, up, re.compile(p)) for kind, up, p in (
        ("ike-rekey", None, r"^(initiator|responder) rekeyed IKE SA"),
        ("child-rekey", None, r"^(initiator|responder) rekeyed Child SA"),
        ("ike-updown", True, r"^(initiator|responder) established IKE SA|^IKE SA established"),
        ("child-updown", True, r"^(initiator|responder) established Child SA|"
                               r"^IPsec SA established"),
        # giving up on the peer: IKEv2's liveness probe unanswered past retransmit-timeout
        # ("liveness action - clearing connection kind CK_PERMANENT"), IKEv1's DPD past
        # dpdtimeout ("DPD action - restarting all connections that share this peer")
        ("ike-updown", False, r"^liveness action - |^DPD action - "),
    ))


@dataclass(frozen=True, slots=True)
class PlutoEvent:
    time: float  # epoch seconds, from pluto's stamp
    kind: str
    up: bool | None
    conn: str  # pluto's conn (one per mapping in the lab's configs)
    serial: int
    message: str


def stamp_time(stamp: str, now: float | None = None) -> float:
    """`Dec  4 01:12:06.810455` (local time, no year) as epoch seconds: the year is the one that
    puts the stamp nearest `now` (a log read just after New Year)."""
    now = time.time() if now is None else now
    whole, _, fraction = stamp.partition(".")
    year = time.localtime(now).tm_year
    best: float | None = None
    for y in (year - 1, year, year + 1):
        try:
            t = time.mktime(time.strptime(f"{y} {whole}", "%Y %b %d %H:%M:%S"))
        except ValueError:  # Feb 29 of another year
            continue
        if best is None or abs(t - now) < abs(best - now):
            best = t
    if best is None:
        raise ValueError(f"not a pluto time stamp: {stamp!r}")
    return best + (float(f"0.{fraction}") if fraction else 0.0)


def parse_line(line: str, now: float | None = None) -> PlutoEvent | None:
    """One pluto log line as an event, None for lines that are none."""
    m = _LINE.match(line)
    if not m:
        return None
    stamp, conn, serial, message = m.groups()
    for kind, up, pattern in RULES:
        if pattern.search(message):
            return PlutoEvent(stamp_time(stamp, now), kind, up, conn, int(serial), message)
    return None
