"""The matrix's customer-implementation dimension: cases per implementation, what libreswan is
expected to refuse, and the report of the cloud settings whose outcome depends on it.

The live runs against pluto are in tests/test_libreswan.py (kernel dataplane, in the VM guest)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab.errors import LabError
from lab.matrix import cases as mc
from lab.matrix.html import render_html
from lab.matrix.results import CaseResult, implementation_differences, summary, to_json, to_junit
from lab.matrix.runner import libreswan_refusal, with_implementation
from lab.matrix.select import select_cases
from lab.spec import DEFAULT_SPEC, load_spec

DIMS = ["ike_version=v1,v2", "ike_encryption=AES-128", "ike_integrity=SHA1",
        "dh_group=DH2,DH14", "ipsec_encryption=AES-128", "ipsec_integrity=SHA1",
        "pfs=disable,DH24", "local_id_type=address", "peer_id_type=address"]


def test_each_case_runs_once_per_implementation_next_to_each_other() -> None:
    cases, _ = select_cases("sweep", None, ["implementation=libreswan,strongswan", *DIMS], False,
                            None)
    plain, _ = select_cases("sweep", None, DIMS, False, None)
    assert len(cases) == 2 * len(plain)
    for i, case in enumerate(plain):
        ours, theirs = cases[2 * i], cases[2 * i + 1]
        assert ours == case and mc.implementation_of(ours) == "strongswan"
        assert theirs.id == f"{case.id}--cgw-libreswan"
        assert mc.implementation_of(theirs) == "libreswan" and theirs.params == case.params
    assert len({c.id for c in cases}) == len(cases)


def test_libreswan_is_expected_to_refuse_what_it_lacks() -> None:
    cases, _ = select_cases("sweep", None, ["implementation=libreswan", *DIMS], False, None)
    expect = {c.id: c.expect for c in cases}
    assert expect["v1-main-aes128-sha1-dh2--esp-aes128-sha1-nopfs--cgw-libreswan"] == \
        mc.UNSUPPORTED_LIBRESWAN
    assert expect["v1-main-aes128-sha1-dh14--esp-aes128-sha1-nopfs--cgw-libreswan"] == mc.ESTABLISHED
    assert expect["v1-main-aes128-sha1-dh2--esp-aes128-sha1-pfs-dh24--cgw-libreswan"] == \
        mc.UNSUPPORTED_LIBRESWAN


def test_the_expectation_agrees_with_what_the_plan_refuses() -> None:
    """The static expectation (cases.libreswan_lacks) against the lab's own refusal of the
    planned libreswan gateway (lifecycle.libreswan_lacks, which start-up uses), every case of
    the tencent menus' pairwise set."""
    base = with_implementation(load_spec(DEFAULT_SPEC), "libreswan")
    cases = mc.across_implementations(mc.pairwise(), ["libreswan"])
    checked = 0
    for case in cases:
        if case.unsupported:
            continue
        refused = libreswan_refusal(base, case)
        assert (refused is not None) == (case.expect == mc.UNSUPPORTED_LIBRESWAN), case.id
        if refused is not None:
            assert refused.passed and "does not implement" in refused.detail
        checked += 1
    assert checked > 20


def test_the_base_specs_implementation_is_the_default() -> None:
    cases, _ = select_cases("sweep", None, DIMS, False, None, implementation="libreswan")
    assert cases and all(mc.implementation_of(c) == "libreswan" for c in cases)


@pytest.mark.parametrize("value", ["racoon", ""])
def test_an_unknown_implementation_is_refused_by_name(value: str) -> None:
    with pytest.raises(LabError, match="matrix dimension implementation: .*allowed: strongswan, "
                                       "libreswan"):
        mc.check_implementations([value])


def test_a_matrix_file_names_implementations(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text("strategy: sweep\ndimensions:\n  implementation: [strongswan, libreswan]\n"
                    "  ike_version: [v2]\n  dh_group: [DH14]\n")
    request = mc.load_matrix_file(path)
    assert request.implementations == ("strongswan", "libreswan")
    path.write_text("dimensions:\n  implementation: [strongswan, openswan]\n")
    with pytest.raises(LabError, match=r"m.yaml: matrix dimension implementation: openswan"):
        mc.load_matrix_file(path)


def _result(case_id: str, impl: str, outcome: str, expect: str = mc.ESTABLISHED) -> CaseResult:
    return CaseResult(case_id, {"ike_version": "v2"}, "positive", expect, outcome,
                      detail=f"{impl} said so", implementation=impl)


def test_differences_between_implementations_are_the_headline() -> None:
    base = "v2-main-aes128-sha1-dh2--esp-aes128-sha1-nopfs"
    same = "v2-main-aes128-sha1-dh14--esp-aes128-sha1-nopfs"
    results = [_result(base, "strongswan", mc.ESTABLISHED),
               _result(f"{base}--cgw-libreswan", "libreswan", mc.UNSUPPORTED_LIBRESWAN,
                       mc.UNSUPPORTED_LIBRESWAN),
               _result(same, "strongswan", mc.ESTABLISHED),
               _result(f"{same}--cgw-libreswan", "libreswan", mc.ESTABLISHED)]
    rows = implementation_differences(results)
    assert [r["case"] for r in rows] == [base]
    assert rows[0]["outcomes"] == {"strongswan": mc.ESTABLISHED,
                                   "libreswan": mc.UNSUPPORTED_LIBRESWAN}
    assert summary(results)["implementation_differences"] == 1
    assert summary(results)["unsupported"] == 1  # expected to be refused: not a failure
    report = json.loads(to_json(results, {}))
    assert report["implementation_differences"][0]["details"]["libreswan"] == "libreswan said so"
    assert 'name="implementation" value="libreswan"' in to_junit(results)
    html = render_html(results, {})
    assert 'id="implementation-differences"' in html and base in html
    assert 'id="implementation-differences"' not in render_html(results[2:], {})


def test_results_of_older_runs_read_as_strongswan() -> None:
    data = _result("x", "strongswan", mc.ESTABLISHED).to_dict()
    del data["implementation"]
    assert CaseResult.from_dict(data).implementation == "strongswan"


def test_the_users_own_customer_config_takes_no_implementation_dimension(tmp_path: Path) -> None:
    """With --customer-config the customer side is the user's file: refused by option, before a
    lab is built."""
    from typer.testing import CliRunner

    from lab.cli import app

    config = tmp_path / "swanctl.conf"
    config.write_text("connections {}\n")
    result = CliRunner().invoke(app, ["matrix", "--customer-config", str(config), "--only",
                                      "implementation=libreswan", "--strategy", "sweep"])
    assert result.exit_code != 0
    assert isinstance(result.exception, LabError)
    assert "implementation dimension does not apply" in str(result.exception)
