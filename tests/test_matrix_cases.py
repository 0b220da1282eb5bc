"""Matrix case generation: counts, all-pairs coverage, determinism, sharding, negatives, restriction."""

from __future__ import annotations

import itertools
import math

import pytest

from lab import catalogue as cat
from lab.errors import LabError
from lab.matrix import cases as mc
from lab.spec import CustomerOverrides, IkeOptions, IpsecOptions


def _valid_pair(dims: mc.Dimensions, a: str, va: str, b: str, vb: str) -> bool:
    """Independent statement of the constraint: aggressive mode needs IKEv1."""
    row = {a: va, b: vb}
    versions = [row["ike_version"]] if "ike_version" in row else dims["ike_version"]
    modes = [row["exchange_mode"]] if "exchange_mode" in row else dims["exchange_mode"]
    return any(not (v == "v2" and m == "aggressive") for v in versions for m in modes)


def _assert_all_pairs(dims: mc.Dimensions, cases: list[mc.Case], *, runnable_only: bool) -> None:
    missing = []
    for a, b in itertools.combinations(dims, 2):
        for va in dims[a]:
            for vb in dims[b]:
                if not _valid_pair(dims, a, va, b, vb):
                    continue
                if runnable_only and not (mc.is_supported(a, va) and mc.is_supported(b, vb)):
                    continue
                if not any(
                    c.params[a] == va and c.params[b] == vb
                    and (not runnable_only or c.expect != mc.UNSUPPORTED)
                    for c in cases
                ):
                    missing.append((a, va, b, vb))
    assert not missing, missing[:10]


def test_default_dimensions_come_from_the_catalogue():
    dims = mc.default_dimensions()
    assert dims["ike_encryption"] == tuple(o.console for o in cat.ENCRYPTION)
    assert dims["ipsec_integrity"] == tuple(o.console for o in cat.INTEGRITY)
    assert dims["pfs"] == ("disable", *(o.console for o in cat.DH_GROUPS))
    assert dims["ike_version"] == ("v1", "v2")
    assert "SM4" in dims["ike_encryption"] and "SM3" in dims["ike_integrity"]


def test_full_product_size():
    dims = mc.default_dimensions()
    others = math.prod(len(v) for d, v in dims.items() if d not in ("ike_version", "exchange_mode"))
    assert mc.full_size(dims) == 3 * others  # v1-main, v1-aggressive, v2-main

    small = mc.restrict(dims, {
        "ike_encryption": ["AES-128", "SM4"], "ike_integrity": ["SHA1"], "dh_group": ["DH14", "DH2"],
        "ipsec_encryption": ["aes256"], "ipsec_integrity": ["sha-256"], "pfs": ["disable", "group14"],
    })
    cases = mc.full(small)
    assert len(cases) == mc.full_size(small) == 3 * 2 * 1 * 2 * 2 * 2 * 1 * 1 * 2
    assert len({c.id for c in cases}) == len(cases)
    assert not any(c.params["ike_version"] == "v2" and c.params["exchange_mode"] == "aggressive"
                   for c in cases)


def test_ikev2_125():
    cases = mc.ikev2_crypto_125()
    assert len(cases) == 125 == len({c.id for c in cases})
    assert {c.params["ike_version"] for c in cases} == {"v2"}
    assert {(c.params["ipsec_encryption"], c.params["ipsec_integrity"], c.params["pfs"])
            for c in cases} == {("AES-128", "SHA1", "disable")}
    combos = {(c.params["ike_encryption"], c.params["ike_integrity"], c.params["dh_group"]) for c in cases}
    assert len(combos) == 125
    assert all(c.expect == mc.ESTABLISHED for c in cases)


def test_case_id_is_readable():
    case = mc.make_case({
        "ike_version": "IKEV2", "exchange_mode": "MAIN", "ike_encryption": "AES-CBC-128",
        "ike_integrity": "SHA-256", "dh_group": "GROUP14", "local_id_type": "address",
        "peer_id_type": "address", "ipsec_encryption": "aes128", "ipsec_integrity": "SHA",
        "pfs": "DH-GROUP14",
    })
    assert case.id == "v2-main-aes128-sha256-dh14--esp-aes128-sha1-pfs-dh14"
    assert case.params["ike_encryption"] == "AES-128" and case.params["pfs"] == "DH14"


def test_pairwise_covers_every_valid_pair():
    dims = mc.default_dimensions()
    cases = mc.pairwise(dims)
    _assert_all_pairs(dims, cases, runnable_only=False)
    # No pair of runnable values relies on an SM4/SM3 cell the endpoints would refuse.
    _assert_all_pairs(dims, cases, runnable_only=True)
    assert len(cases) < 100  # far below the full product
    assert len({c.id for c in cases}) == len(cases)


def test_pairwise_with_restriction_and_lifetimes():
    dims = mc.restrict(mc.default_dimensions(), {
        "ike_version": ["v2"], "ike_sa_lifetime": ["3600", "86400"], "pfs": ["disable", "DH14"],
    })
    cases = mc.pairwise(dims)
    _assert_all_pairs(dims, cases, runnable_only=True)
    assert {c.params["exchange_mode"] for c in cases} == {"main"}
    assert {c.params["ike_sa_lifetime"] for c in cases} == {"3600", "86400"}


def test_generation_is_deterministic():
    assert [c.id for c in mc.pairwise()] == [c.id for c in mc.pairwise()]
    assert mc.pairwise() == mc.pairwise()
    assert mc.sweep() == mc.sweep()
    assert mc.negatives() == mc.negatives()
    assert mc.generate("pairwise", with_negatives=True) == mc.generate("pairwise", with_negatives=True)


def test_unsupported_cells_are_kept_and_expected_refused():
    cases = mc.pairwise()
    sm = [c for c in cases if {"SM4", "SM3"} & set(c.params.values())]
    assert sm and all(c.expect == mc.UNSUPPORTED for c in sm)
    assert all(c.expect == mc.ESTABLISHED for c in cases if c not in sm)
    for dimension in ("ike_encryption", "ipsec_encryption"):
        assert any(c.params[dimension] == "SM4" for c in sm)
    for dimension in ("ike_integrity", "ipsec_integrity"):
        assert any(c.params[dimension] == "SM3" for c in sm)
    full = mc.full(mc.restrict(mc.default_dimensions(), {
        "ike_version": ["v2"], "ike_encryption": ["SM4"], "ike_integrity": ["SHA1"], "dh_group": ["DH2"],
        "local_id_type": ["address"], "peer_id_type": ["address"], "ipsec_encryption": ["AES-128"],
        "ipsec_integrity": ["SHA1"], "pfs": ["disable"],
    }))
    assert [c.expect for c in full] == [mc.UNSUPPORTED]


def test_sweep_changes_one_factor_at_a_time():
    base = mc.make_case(mc.default_base())
    cases = mc.sweep(base)
    assert cases[0] == base
    for c in cases[1:]:
        changed = {d for d in c.params if c.params[d] != base.params[d]}
        assert len(changed) == 1 or changed == {"ike_version", "exchange_mode"}
    v2 = mc.sweep({**base.params, "ike_version": "v2"})
    assert not any(c.params["exchange_mode"] == "aggressive" and c.params["ike_version"] == "v2"
                   for c in v2)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 10, 200])
def test_shards_partition_the_cases(n):
    cases = mc.pairwise()
    shards = [mc.shard(cases, k, n) for k in range(1, n + 1)]
    ids = [c.id for s in shards for c in s]
    assert len(ids) == len(set(ids)) == len(cases)
    assert set(ids) == {c.id for c in cases}
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    assert shards == [mc.shard(cases, k, n) for k in range(1, n + 1)]


@pytest.mark.parametrize("text", ["0/3", "4/3", "1/0", "a/b", "3", "", "1/2/3", "-1/2"])
def test_parse_shard_rejects(text):
    with pytest.raises(LabError, match="K/N"):
        mc.parse_shard(text)


def test_parse_shard():
    assert mc.parse_shard("2/4") == (2, 4)
    assert mc.parse_shard("1/1") == (1, 1)


def test_negatives_cover_every_reason():
    base = mc.make_case({**mc.default_base(), "ike_version": "v2", "ike_encryption": "AES-256"})
    negs = mc.negatives(base)
    assert [c.expect for c in negs] == list(mc.NEGATIVE_REASONS)
    assert all(c.kind == "negative" and c.id.endswith(f"--neg-{mc._NEG_SLUG[c.expect]}") for c in negs)
    assert len({c.id for c in negs}) == len(negs)
    by = {c.expect: c for c in negs}
    assert by[mc.PROPOSAL_IKE].customer["ike"]["encryption"] != "AES-256"
    ipsec = by[mc.PROPOSAL_IPSEC].customer["ipsec"]
    assert ipsec["encryption"] != base.params["ipsec_encryption"]
    assert ipsec["integrity"] != base.params["ipsec_integrity"]
    pfs = by[mc.PFS]
    assert pfs.params["ike_version"] == "v1"  # fails at establishment only in IKEv1 quick mode
    assert pfs.params["pfs"] != "disable"
    assert pfs.customer["ipsec"]["pfs"] not in ("disable", pfs.params["pfs"])
    assert by[mc.VERSION].customer["ike"]["version"] == "v1"
    mode = by[mc.MODE]
    assert mode.params["ike_version"] == "v1"
    assert mode.customer["ike"]["exchange_mode"] != mode.params["exchange_mode"]
    assert by[mc.PSK].customer["pre_shared_key"] == mc.WRONG_PSK
    ident = by[mc.ID]
    assert ident.params["local_id_type"] == "fqdn"
    assert ident.customer["ike"]["peer_id"]["value"] != mc.CLOUD_FQDN
    assert by[mc.TS].customer == {"swap_ts": True}


def test_negatives_refuse_an_unsupported_base():
    with pytest.raises(LabError, match="SM4/SM3"):
        mc.negatives({**mc.default_base(), "ike_encryption": "SM4"})


def test_tunnel_fields_validate_against_the_spec():
    for case in [*mc.pairwise()[:20], *mc.negatives(), *mc.sweep()[:5]]:
        fields = mc.to_tunnel_fields(case)
        ike = IkeOptions.model_validate(fields["ike"])
        ipsec = IpsecOptions.model_validate(fields["ipsec"])
        customer = CustomerOverrides.model_validate(fields["customer"])
        assert ike.encryption == case.params["ike_encryption"]
        assert ipsec.pfs == case.params["pfs"]
        assert customer.swap_selectors == (case.expect == mc.TS)
        if case.expect != mc.TS:
            merged = {**ike.model_dump(), **fields["customer"].get("ike", {})}
            IkeOptions.model_validate(merged)


def test_restrict_accepts_any_catalogue_spelling():
    dims = mc.restrict(mc.default_dimensions(), mc.parse_restrictions([
        "ike_encryption=AES-CBC-256,aes128", "dh-group=GROUP14,2", "ike_version=IKEV2", "pfs=NULL,DH-GROUP5",
    ]))
    assert dims["ike_encryption"] == ("AES-128", "AES-256")  # catalogue order
    assert dims["dh_group"] == ("DH2", "DH14")
    assert dims["ike_version"] == ("v2",)
    assert dims["pfs"] == ("disable", "DH5")


@pytest.mark.parametrize("arg, words", [
    ("ike_encryption=AES-512", ["ike_encryption", "AES-128", "SM4"]),
    ("dh_group=DH99", ["dh_group", "DH14"]),
    ("pfs=group99", ["pfs", "disable"]),
    ("colour=red", ["colour", "ike_encryption"]),
    ("ike_encryption", ["DIMENSION=VALUE"]),
    ("ike_encryption=", ["ike_encryption", "at least one"]),
    ("ike_sa_lifetime=5", ["ike_sa_lifetime", "60"]),
])
def test_restriction_errors_name_the_dimension(arg, words):
    with pytest.raises(LabError) as err:
        mc.restrict(mc.default_dimensions(), mc.parse_restrictions([arg]))
    for word in words:
        assert word in str(err.value)


def test_load_matrix_file(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(
        "strategy: pairwise\n"
        "dimensions:\n  ike_version: [v2]\n  ike_encryption: AES-128,AES-256\n  pfs: [disable]\n"
        "negatives: true\n"
    )
    request = mc.load_matrix_file(path)
    assert request.strategy == "pairwise" and request.negatives
    assert request.dimensions["ike_encryption"] == ("AES-128", "AES-256")
    cases = request.cases()
    assert {c.expect for c in cases if c.kind == "negative"} == set(mc.NEGATIVE_REASONS)
    assert all(c.params["ike_version"] == "v2" for c in cases if c.kind == "positive")
    assert cases == mc.load_matrix_file(path).cases()


@pytest.mark.parametrize("text, words", [
    ("strategy: random\n", ["strategy", "pairwise"]),
    ("dimensions:\n  ike_integrity: [SHA3]\n", ["ike_integrity", "SHA256"]),
    ("dimension: {}\n", ["unknown key", "dimension"]),
    ("negatives: maybe\n", ["negatives"]),
    ("- a\n", ["mapping"]),
    ("a: [\n", ["YAML"]),
])
def test_load_matrix_file_errors(tmp_path, text, words):
    path = tmp_path / "m.yaml"
    path.write_text(text)
    with pytest.raises(LabError) as err:
        mc.load_matrix_file(path)
    for word in words:
        assert word in str(err.value)


def test_sweep_strategy_with_base_from_file(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("strategy: sweep\nbase: {ike_version: v2, ike_encryption: AES-256}\n"
                    "dimensions: {dh_group: [DH14, DH24]}\n")
    cases = mc.load_matrix_file(path).cases()
    assert cases[0].params["ike_encryption"] == "AES-256" and cases[0].params["ike_version"] == "v2"
    assert len(cases) == len({c.id for c in cases})


def test_strategies_take_a_restriction_directly():
    restriction = {"ike_version": "v2", "ike_encryption": ["AES-128"], "ike_integrity": ["SHA1"],
                   "dh_group": ["DH14"], "ipsec_encryption": ["AES-256"], "ipsec_integrity": ["SHA256"]}
    cases = mc.full(None, restriction)
    assert len(cases) == 2 * 2 * 6  # id types x pfs
    assert mc.pairwise(restriction=restriction) == mc.pairwise(restriction=restriction)


def test_hand_written_dimensions_are_checked():
    dims = {**mc.default_dimensions(), "ike_encryption": ("aes-cbc-128",)}
    assert {c.params["ike_encryption"] for c in mc.pairwise(dims)} == {"AES-128"}
    with pytest.raises(LabError, match="colour"):
        mc.full({**mc.default_dimensions(), "colour": ("red",)})
    with pytest.raises(LabError, match="dh_group"):
        mc.full({**mc.default_dimensions(), "dh_group": ()})
