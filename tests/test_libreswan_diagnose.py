"""The diagnoser on libreswan's side: each negative case of the matrix against pluto, replayed
from what charon (the cloud) and pluto (the customer) logged in the lab's runs in the VM guest
(tests/data/libreswan/matrix-negatives.jsonl, from `ipsec-lab matrix --only
implementation=libreswan`; pluto's lines with their time stamps cut, as lab.matrix.pluto_peer
hands them over)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab import diagnose
from lab.matrix.cases import ESTABLISHED

RECORDED = [json.loads(line) for line in
            (Path(__file__).parent / "data" / "libreswan" / "matrix-negatives.jsonl")
            .read_text().splitlines()]


@pytest.mark.parametrize("case", [c for c in RECORDED if c["outcome"] != ESTABLISHED],
                         ids=lambda c: c["id"])
def test_each_recorded_refusal_is_classified_as_the_case_expects(case: dict) -> None:
    events = {"vpngw": [{"msg": m} for m in case["charon"]],
              "cgw1": [{"group": "pluto", "msg": m} for m in case["pluto"]]}
    reason, evidence = diagnose.classify([], events)
    assert reason == case["expect"], evidence
    assert any(line in evidence for line in case["charon"] + case["pluto"]), evidence


def test_the_recorded_cases_cover_every_reason_on_both_versions() -> None:
    got = {(c["expect"], c["id"][:2]) for c in RECORDED if c["outcome"] != ESTABLISHED}
    reasons = {"ike proposal mismatch", "ipsec proposal mismatch", "ike version mismatch",
               "exchange mode mismatch", "authentication failed", "id mismatch",
               "traffic selector mismatch"}
    assert {r for r, _ in got} == reasons
    assert {v for _, v in got} == {"v1", "v2"}


def test_pluto_on_ikev2_only_sees_main_mode_as_another_version() -> None:
    """pluto says the same of a Main Mode packet it has no conn for whatever the cause: the
    conn it loaded for the case tells the version from the mode."""
    refusal = ("packet from 203.0.113.9:500: initial Main Mode message received but no "
               "connection has been authorized with authby=PSK and xauth=no")
    for added, reason in (("added IKEv2 connection", diagnose.VERSION),
                          ("added IKEv1 connection", diagnose.MODE)):
        events = {"cgw1": [{"msg": f'"t-m1": {added}'}, {"msg": refusal}]}
        assert diagnose.classify(["giving up after 2 retransmits"], events)[0] == reason
