"""What the scenarios' event recording keeps, and how much of it: EventRecorder fed synthetic VICI
events (the shape strongSwan sends for rekeys and up/downs) through a fake lab. No lab, no daemon.

A soak records about a hundred events a minute for its whole run; with `details=False` each one
keeps its time, node, kind, up and IKE_SA name but not the decoded message (kilobytes a rekey).
"""

from __future__ import annotations

import gc
import queue
import time
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import pytest

from lab.scenarios.events import Event, EventRecorder


def _sa_fields(i: int) -> dict[str, Any]:
    """The fields strongSwan lists for an SA, decoded to str as lab.control.decode leaves them."""
    return {
        "uniqueid": str(i), "version": "2", "state": "ESTABLISHED", "local-host": "198.51.100.10",
        "local-port": "4500", "local-id": "198.51.100.10", "remote-host": "203.0.113.20",
        "remote-port": "4500", "remote-id": "203.0.113.20", "initiator": "yes",
        "initiator-spi": f"{i:016x}", "responder-spi": f"{i * 7:016x}", "encr-alg": "AES_CBC",
        "encr-keysize": "256", "integ-alg": "HMAC_SHA2_256_128", "prf-alg": "PRF_HMAC_SHA2_256",
        "dh-group": "MODP_2048", "established": "3", "rekey-time": "2", "life-time": "5",
    }


def child_rekey(i: int) -> dict[str, Any]:
    def child(n: int) -> dict[str, Any]:
        return {"name": "vpc-1", "uniqueid": str(n), "reqid": "1", "state": "INSTALLED",
                "mode": "TUNNEL", "protocol": "ESP", "encap": "yes", "spi-in": f"c{n:07x}",
                "spi-out": f"d{n:07x}", "encr-alg": "AES_CBC", "encr-keysize": "256",
                "integ-alg": "HMAC_SHA2_256_128", "bytes-in": str(n * 1000), "packets-in": str(n),
                "bytes-out": str(n * 1000), "packets-out": str(n), "rekey-time": "10",
                "life-time": "16", "install-time": "6", "local-ts": ["10.1.0.0/24"],
                "remote-ts": ["10.2.0.0/24"]}

    return {"tunnel1": {**_sa_fields(i), "child-sas": {f"vpc-1-{i}": {"old": child(2 * i),
                                                                       "new": child(2 * i + 1)}}}}


def ike_updown(i: int, up: bool) -> dict[str, Any]:
    return {"up": "yes" if up else "no", "tunnel1": _sa_fields(i)}


def recorder(details: bool = True) -> EventRecorder:
    lab: Any = SimpleNamespace(plan=SimpleNamespace(gateways=[]))
    return EventRecorder(lab, details=details)


@pytest.mark.parametrize("details", [True, False])
def test_events_keep_what_the_scenarios_read(details: bool) -> None:
    rec = recorder(details)
    rec._record("vpngw", "child-rekey", child_rekey(1))
    rec._record("cgw1", "ike-updown", ike_updown(2, up=False))
    rec._record("cgw1", "log", {"group": "IKE", "level": "1", "msg": "replay", "ikesa-name": "tunnel1"})
    got = [(e.node, e.kind, e.up, e.ike) for e in rec.events]
    assert got == [("vpngw", "child-rekey", None, "tunnel1"), ("cgw1", "ike-updown", False, "tunnel1"),
                   ("cgw1", "log", None, "tunnel1")]
    assert all(isinstance(e, Event) and abs(e.time - time.time()) < 5 for e in rec.events)
    if details:  # as before: the IKE_SA's own dict ("up" taken out), the log message whole
        assert rec.events[0].detail == child_rekey(1)["tunnel1"]
        assert rec.events[1].detail == _sa_fields(2)
        assert rec.events[2].detail["msg"] == "replay"
    else:
        assert all(e.detail == {} for e in rec.events)


def test_events_without_details_stay_small() -> None:
    """Thousands of rekeys: bytes retained per event, with and without the messages."""
    count = 2000

    def retained(details: bool) -> float:
        rec = recorder(details)
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for i in range(count):
                rec._record("vpngw", "child-rekey" if i % 3 else "ike-updown",
                            child_rekey(i) if i % 3 else ike_updown(i, up=False))
            gc.collect()
            after = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        assert len(rec.events) == count
        return (after - before) / count

    lean, full = retained(False), retained(True)
    assert lean < 250, f"{lean:.0f} B an event without details"
    assert full > 5 * lean, f"{full:.0f} B an event with details, {lean:.0f} B without"


def test_recorder_listens_through_vici() -> None:
    """The listener threads hand what VICI yields to the recording, details or not."""
    feeds: dict[str, queue.Queue[tuple[str, dict[str, Any]]]] = {"vpngw": queue.Queue(),
                                                                 "cgw1": queue.Queue()}

    class FakeVici:
        def __init__(self, node: str):
            self.node = node

        def __enter__(self) -> FakeVici:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        @contextmanager
        def events(self, kinds: list[str]) -> Iterator[Any]:
            def next_event(deadline: float) -> tuple[str, dict[str, Any]] | None:
                try:
                    return feeds[self.node].get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    return None

            yield next_event

    gateways = [SimpleNamespace(node=n, pluto=False) for n in feeds]
    lab: Any = SimpleNamespace(plan=SimpleNamespace(gateways=gateways),
                               vici=FakeVici)
    with EventRecorder(lab, ["child-rekey", "ike-updown"], details=False) as rec:
        feeds["vpngw"].put(("child-rekey", child_rekey(1)))
        feeds["cgw1"].put(("ike-updown", ike_updown(2, up=True)))
        up = rec.wait_for(lambda e: e.kind == "ike-updown" and e.up, timeout=5)
        assert up is not None and up.node == "cgw1" and up.detail == {}
        assert rec.wait_for(lambda e: e.kind == "child-rekey", timeout=5) is not None
    assert sorted((e.node, e.kind) for e in rec.matching(lambda e: True)) == [
        ("cgw1", "ike-updown"), ("vpngw", "child-rekey")]
