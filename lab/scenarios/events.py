"""Recording what the daemons say happened, with times: VICI events from every gateway."""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

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
        self._ready = threading.Barrier(len(lab.plan.gateways) + 1)
        self._threads = [threading.Thread(target=self._listen, args=(gw.node,), daemon=True)
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
