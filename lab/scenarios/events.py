"""Recording what the daemons say happened, with times: VICI events from every gateway."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from lab.running import Lab
from lab.timing import patience

KINDS = ["ike-updown", "child-updown", "ike-rekey", "child-rekey"]  # "log": the daemon's log lines


@dataclass
class Event:
    time: float
    node: str
    kind: str
    up: bool | None
    ike: str
    detail: dict[str, Any] = field(default_factory=dict)


class EventRecorder:
    """One listener thread per gateway, registered before the experiment acts."""

    def __init__(self, lab: Lab, kinds: list[str] | None = None):
        self.lab = lab
        self.kinds = kinds or KINDS
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
                if got is None:
                    continue
                kind, msg = got
                if kind == "log":  # one flat message: group, level, msg, ikesa-name...
                    with self._lock:
                        self.events.append(Event(time.time(), node, kind, None,
                                                 str(msg.get("ikesa-name", "")), msg))
                    continue
                up = msg.pop("up", None) == "yes" if kind.endswith("updown") else None
                for ike_name, ike in msg.items():
                    if not isinstance(ike, dict):
                        continue
                    with self._lock:
                        self.events.append(Event(time.time(), node, kind, up, ike_name, ike))

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
