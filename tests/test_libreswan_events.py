"""pluto's log lines read as the lab's events (lab.libreswan.events), from libreswan 4.10's own
lines recorded in the lab's runs (tests/data/libreswan/)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from lab.libreswan.events import parse_line, stamp_time

DATA = Path(__file__).parent / "data" / "libreswan"
NOW = time.mktime(time.strptime("2026 Dec 04 02:00:00", "%Y %b %d %H:%M:%S"))


def test_a_stamp_is_local_time_with_its_microseconds() -> None:
    t = stamp_time("Dec  4 01:12:06.810455", NOW)
    assert time.localtime(t)[:6] == (2026, 12, 4, 1, 12, 6)
    assert t % 1 == pytest.approx(0.810455, abs=1e-6)


def test_a_stamp_just_before_new_year_read_just_after_it_is_last_year() -> None:
    now = time.mktime(time.strptime("2027 Jan 01 00:00:05", "%Y %b %d %H:%M:%S"))
    assert time.localtime(stamp_time("Dec 31 23:59:59.5", now)).tm_year == 2026


def test_the_recorded_rekey_log_reads_as_up_then_rekey() -> None:
    events = [e for line in (DATA / "v2-rekey.log").read_text().splitlines()
              if (e := parse_line(line, NOW)) is not None]
    assert [(e.kind, e.up, e.conn, e.serial) for e in events] == [
        ("child-updown", True, "tunnel-default-m1", 2),
        ("child-rekey", None, "tunnel-default-m1", 3)]
    assert events[0].time < events[1].time


@pytest.mark.parametrize(("line", "kind", "up"), [
    ('Dec  4 01:12:06.1: "t-m1" #1: responder established IKE SA; authenticated peer using '
     "authby=secret and ID_IPV4_ADDR '203.0.113.9'", "ike-updown", True),
    ('Dec  4 01:12:06.1: "t-m1" #25: IKE SA established {auth=PRESHARED_KEY cipher=AES_CBC_128 '
     "integ=HMAC_SHA1 group=MODP2048}", "ike-updown", True),
    ('Dec  4 01:12:06.1: "t-m1" #26: IPsec SA established tunnel mode {ESP=>0xc35b3051 '
     "<0x4b74e365 xfrm=AES_CBC_128-HMAC_SHA1_96 DPD=active}", "child-updown", True),
    ('Dec  4 04:49:03.272578: "tunnel-default-m1" #1: liveness action - clearing connection kind '
     "CK_PERMANENT", "ike-updown", False),
    ('Dec  4 04:46:34.564148: "tunnel-default-m1" #1: DPD action - restarting all connections '
     "that share this peer", "ike-updown", False),
])
def test_lines_from_the_matrix_and_dpd_runs(line: str, kind: str, up: bool | None) -> None:
    event = parse_line(line, NOW)
    assert event is not None and (event.kind, event.up) == (kind, up)


def test_other_lines_are_no_events() -> None:
    for line in ('Dec  4 01:12:06.1: "t-m1" #21: sent IKE_SA_INIT reply {cipher=AES_CBC_128}',
                 "Dec  4 01:12:06.1: listening for IKE messages", "garbage"):
        assert parse_line(line, NOW) is None
