"""Recording what the daemons say happened, with times: VICI events from every strongSwan gateway,
pluto's log lines (lab.libreswan.events) from a libreswan one."""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from lab.libreswan import events as pluto_events
from lab.running import Lab
from lab.timing import patience

KINDS = ["ike-updown", "child-updown", "ike-rekey", "child-rekey"]  # "log": the daemon's log lines


@dataclass(slots=True)
class Event:
    time: float
    node: str
    kind: str
    up: bool | None
    ike: str
    detail: dict[str, Any] = field(default_factory=dict)


class EventRecorder:
    """One listener thread per gateway, registered before the experiment acts.

    `details=False` keeps no event's `detail` (the decoded VICI message: for a rekey the whole
    IKE_SA with its CHILD_SAs, a few KiB each): a recording whose readers need only the time,
    node, kind, up and IKE_SA name then grows by under 200 bytes an event, not kilobytes
    (a soak at time scale 0.1 records about a hundred events a minute, for hours).
    """

    def __init__(self, lab: Lab, kinds: list[str] | None = None, *, details: bool = True):
        self.lab = lab
        self.kinds = kinds or KINDS
        self.details = details
        self.events: list[Event] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        # a charon's VICI events; a libreswan pluto raises none, its log file is read instead
        # (lab.libreswan.events: its lines' own time stamps are the events' times)
        self._ready = threading.Barrier(len(lab.plan.gateways) + 1)
        self._threads = [threading.Thread(target=self._tail if gw.pluto else self._listen,
                                          args=(gw.node,), daemon=True)
                         for gw in lab.plan.gateways]

    def __enter__(self) -> EventRecorder:
        for t in self._threads:
            t.start()
        self._ready.wait(timeout=patience(10))
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)

    def _listen(self, node: str) -> None:
        with self.lab.vici(node) as v, v.events(self.kinds) as next_event:
            self._ready.wait(timeout=patience(10))
            while not self._stop.is_set():
                got = next_event(time.monotonic() + 0.2)
                if got is not None:
                    self._record(node, *got)

    def _tail(self, node: str) -> None:
        """pluto's log lines from now on as events, the IKE_SA named after the lab's connection
        (pluto's conns are its mappings)."""
        tunnel = {ch.name: c.name for c in self.lab.plan.gateway(node).connections
                  for ch in c.children}
        with self.lab.log_path(node).open("rb") as log:
            log.seek(0, 2)
            self._ready.wait(timeout=patience(10))
            pending = b""
            while not self._stop.is_set():
                chunk = log.read()
                if not chunk:
                    time.sleep(0.05)  # pluto's log is polled: it has no event stream
                    continue
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for raw in lines:
                    event = pluto_events.parse_line(raw.decode(errors="replace"))
                    if event is not None and event.kind in self.kinds:
                        with self._lock:
                            self.events.append(Event(
                                event.time, node, sys.intern(event.kind), event.up,
                                sys.intern(tunnel.get(event.conn, event.conn)),
                                {"pluto": event.message} if self.details else {}))

    def _record(self, node: str, kind: str, msg: dict[str, Any]) -> None:
        """One VICI event of `node` into `events`: one Event per IKE_SA it names (a log
        message is one flat Event). Kind and IKE_SA names are interned: a long recording
        repeats the same few."""
        kind = sys.intern(kind)
        if kind == "log":  # one flat message: group, level, msg, ikesa-name...
            event = Event(time.time(), node, kind, None, sys.intern(str(msg.get("ikesa-name", ""))),
                          msg if self.details else {})
            with self._lock:
                self.events.append(event)
            return
        up = msg.pop("up", None) == "yes" if kind.endswith("updown") else None
        for ike_name, ike in msg.items():
            if not isinstance(ike, dict):
                continue
            event = Event(time.time(), node, kind, up, sys.intern(ike_name),
                          ike if self.details else {})
            with self._lock:
                self.events.append(event)

    def wait_for(self, predicate, timeout: float) -> Event | None:
        """The first recorded event matching `predicate`, waiting up to `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                for event in self.events:
                    if predicate(event):
                        return event
            time.sleep(0.02)
        return None

    def matching(self, predicate) -> list[Event]:
        with self._lock:
            return [e for e in self.events if predicate(e)]
