"""Matrix cases: which cloud-tunnel settings to try, and what each try should end in.

A case is data (console labels, like the spec), so the executor turns it into a `Tunnel` with
`to_tunnel_fields` and nothing here starts a daemon. Value sets come from `lab.catalogue`, the one
source of truth for the menus. Every generator returns cases in a stable order with unique ids, so
`shard` and `--resume` can rely on it across runs and machines.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lab import catalogue as cat
from lab import profiles
from lab.diagnose import ID, MODE, NAT_ID, PFS, PROPOSAL_IKE, PROPOSAL_IPSEC, PSK, TIMEOUT, TS, VERSION
from lab.errors import LabError, read_yaml

# What a case is expected to end in (and what the executor reports as its outcome): the
# diagnoser's reasons (TIMEOUT is observed only: no negative case provokes it), and these.
ESTABLISHED = "established"
UNSUPPORTED = "unsupported by the strongSwan endpoints"
# a cloud setting a libreswan customer gateway cannot take: libreswan 4.10 does not implement one
# of its algorithms (lab.libreswan.algorithms); the runner confirms it by planning the case
UNSUPPORTED_LIBRESWAN = "unsupported by libreswan"
ERROR = "error"  # the lab itself failed; never expected

NEGATIVE_REASONS = (PROPOSAL_IKE, PROPOSAL_IPSEC, PFS, VERSION, MODE, PSK, ID, TS)
NAT_NEGATIVE_REASONS = (*NEGATIVE_REASONS, NAT_ID)  # a base whose customer gateway is behind NAT
REASONS = (*NAT_NEGATIVE_REASONS, TIMEOUT, UNSUPPORTED, UNSUPPORTED_LIBRESWAN)
_NEG_SLUG = {
    PROPOSAL_IKE: "ike-proposal", PROPOSAL_IPSEC: "ipsec-proposal", PFS: "pfs", VERSION: "version",
    MODE: "mode", PSK: "psk", ID: "id", TS: "ts", NAT_ID: "nat-id",
}
# a negative case's customer change: identify by the private WAN address behind the NAT (the
# base tunnel's behind_nat.private_ip, filled in where the case is planned)
PRIVATE_ID = "private_id"
# the customer side's IKE implementation, a customer deviation of its own: cases run with each
# one asked for (`across_implementations`), the same cloud settings, to set them side by side
IMPLEMENTATION = "implementation"
IMPLEMENTATIONS = ("strongswan", "libreswan")
DEFAULT_IMPLEMENTATION = "strongswan"
IMPLEMENTATION_SUFFIX = "--cgw-"  # a non-default implementation's case id: <cloud case id>--cgw-<name>

# Identities used when a case asks for FQDN IDs (address IDs are the gateways' public IPs).
CLOUD_FQDN = "vpn.cloud.ipsec-lab.test"
CUSTOMER_FQDN = "cgw.customer.ipsec-lab.test"
WRONG_FQDN = "not-the-cloud.ipsec-lab.test"
WRONG_PSK = "matrix-negative-wrong-pre-shared-key"  # deliberately not the tunnel's key

Kind = Literal["positive", "negative"]
Dimensions = dict[str, tuple[str, ...]]

# Dimension order = id order = pairwise fill order.
CORE_DIMENSIONS = (
    "ike_version", "exchange_mode", "ike_encryption", "ike_integrity", "dh_group",
    "local_id_type", "peer_id_type", "ipsec_encryption", "ipsec_integrity", "pfs",
)
LIFETIME_DIMENSIONS = ("ike_sa_lifetime", "ipsec_sa_lifetime")  # only when asked for
ALL_DIMENSIONS = CORE_DIMENSIONS + LIFETIME_DIMENSIONS
ID_TYPES = ("address", "fqdn")
STRATEGIES = ("pairwise", "full", "sweep", "ikev2-125")


# --- value spellings -------------------------------------------------------------------------

def _consoles(menu: tuple[cat.Option, ...]) -> tuple[str, ...]:
    return tuple(o.console for o in menu)


def _menu_value(menu: tuple[cat.Option, ...]) -> Callable[[str], str]:
    def pick(value: str) -> str:
        return cat.lookup(menu, value).console

    return pick


def _table_value(table: dict[str, str]) -> Callable[[str], str]:
    def pick(value: str) -> str:
        wanted = cat.normalise(value)
        for key, api in table.items():
            if wanted in (cat.normalise(key), cat.normalise(api)):
                return key
        raise KeyError(", ".join(table))

    return pick


def _pfs_value(value: str) -> str:
    if cat.normalise(value) in {"disable", "disabled", "off", "none", "null"}:
        return "disable"
    return cat.lookup(cat.ALL_DH_GROUPS, value).console


def _id_type_value(value: str) -> str:
    wanted = {"ip": "address", "ipaddress": "address"}.get(cat.normalise(value), cat.normalise(value))
    if wanted not in ID_TYPES:
        raise KeyError(", ".join(ID_TYPES))
    return wanted


def _lifetime_value(bounds: tuple[int, int]) -> Callable[[str], str]:
    def pick(value: str) -> str:
        try:
            seconds = int(str(value).strip())
        except ValueError:
            seconds = -1
        if not bounds[0] <= seconds <= bounds[1]:
            raise KeyError(f"seconds in {bounds[0]}..{bounds[1]}")
        return str(seconds)

    return pick


_CANONICAL: dict[str, Callable[[str], str]] = {
    "ike_version": _table_value(cat.IKE_VERSIONS),
    "exchange_mode": _table_value(cat.EXCHANGE_MODES),
    "ike_encryption": _menu_value(cat.ALL_ENCRYPTION),
    "ike_integrity": _menu_value(cat.ALL_INTEGRITY),
    "dh_group": _menu_value(cat.ALL_DH_GROUPS),
    "local_id_type": _id_type_value,
    "peer_id_type": _id_type_value,
    "ipsec_encryption": _menu_value(cat.ALL_ENCRYPTION),
    "ipsec_integrity": _menu_value(cat.ALL_INTEGRITY),
    "pfs": _pfs_value,
    "ike_sa_lifetime": _lifetime_value(cat.IKE_LIFETIME_RANGE),
    "ipsec_sa_lifetime": _lifetime_value(cat.IPSEC_LIFETIME_RANGE),
}
_MENUS = {
    "ike_encryption": cat.ALL_ENCRYPTION, "ike_integrity": cat.ALL_INTEGRITY,
    "dh_group": cat.ALL_DH_GROUPS, "ipsec_encryption": cat.ALL_ENCRYPTION,
    "ipsec_integrity": cat.ALL_INTEGRITY, "pfs": cat.ALL_DH_GROUPS,
}
_PROFILE_MENUS = ("ike_version", "exchange_mode", "ike_encryption", "ike_integrity", "dh_group",
                  "ipsec_encryption", "ipsec_integrity", "pfs")  # dimension = profile menu kind


def canonical(dimension: str, value: Any, profile: str | None = None,
              generation: str | None = None) -> str:
    """The console label for `value` in any spelling the catalogue accepts; LabError otherwise
    (listing the gateway profile's menu, in its generation)."""
    if dimension not in _CANONICAL:
        raise LabError(f"unknown matrix dimension {dimension!r}; known: {', '.join(ALL_DIMENSIONS)}")
    try:
        return _CANONICAL[dimension](str(value))
    except KeyError as allowed:
        listed = ", ".join(profiles.get(profile, generation).menu(dimension)) \
            if dimension in _PROFILE_MENUS else allowed.args[0]
        null = "; YAML reads a bare NULL as no value: quote it ('NULL')" \
            if value is None or value == "None" else ""
        raise LabError(
            f"matrix dimension {dimension}: {value!r} is not a value; allowed: {listed}{null}"
        ) from None


def is_supported(dimension: str, value: str) -> bool:
    """False for menu entries strongSwan cannot run (SM4, SM3)."""
    menu = _MENUS.get(dimension)
    if menu is None or (dimension == "pfs" and value == "disable"):
        return True
    return cat.by_console(menu, value).supported


def default_dimensions(profile: str | None = None, generation: str | None = None) -> Dimensions:
    """Every menu value of every core dimension of a gateway profile (default: Tencent's menus)
    in a gateway generation (default: the profile's own, classic for Tencent), in the profile's
    order (SM4/SM3 included)."""
    menus = profiles.get(profile, generation)
    dims = {d: menus.menu(d) for d in _PROFILE_MENUS}
    return {d: dims.get(d, ID_TYPES) for d in CORE_DIMENSIONS}


# --- cases -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    """One cell of the matrix: cloud settings (`params`), customer deviations, and the expectation."""

    id: str
    params: dict[str, str]
    kind: Kind = "positive"
    expect: str = ESTABLISHED
    customer: dict[str, Any] = field(default_factory=dict)

    def __hash__(self) -> int:  # dict fields are not hashable; the id is unique by construction
        return hash(self.id)

    @property
    def unsupported(self) -> bool:
        return self.expect == UNSUPPORTED or any(not is_supported(d, v) for d, v in self.params.items())


@functools.cache
def _token(dimension: str, value: str) -> str:
    menu = _MENUS.get(dimension)
    if dimension == "pfs":
        return "nopfs" if value == "disable" else f"pfs-{value.lower()}"
    if dimension == "dh_group":
        return value.lower()
    if menu is not None:
        return cat.by_console(menu, value).keyword or value.lower()
    return value


def case_id(params: Mapping[str, str], negative: str | None = None) -> str:
    """Readable and deterministic, e.g. `v2-main-aes128-sha256-dh14--esp-aes128-sha1-pfs-dh14`."""
    ike = [params["ike_version"], params["exchange_mode"]] + [
        _token(d, params[d]) for d in ("ike_encryption", "ike_integrity", "dh_group")
    ]
    ids = (params.get("local_id_type", "address"), params.get("peer_id_type", "address"))
    if ids != ("address", "address"):
        ike.append("id-" + "-".join("addr" if t == "address" else t for t in ids))
    if "ike_sa_lifetime" in params:
        ike.append(f"life-{params['ike_sa_lifetime']}")
    esp = ["esp"] + [_token(d, params[d]) for d in ("ipsec_encryption", "ipsec_integrity", "pfs")]
    if "ipsec_sa_lifetime" in params:
        esp.append(f"life-{params['ipsec_sa_lifetime']}")
    text = "-".join(ike) + "--" + "-".join(esp)
    return f"{text}--neg-{_NEG_SLUG[negative]}" if negative else text


def _valid(params: Mapping[str, str]) -> bool:
    """Aggressive mode exists only in IKEv1 (v2 cases are always `main`); an AEAD (GCM) IKE
    cipher only in IKEv2 (strongSwan's IKEv1 has none)."""
    v2_aggressive = params.get("ike_version") == "v2" and params.get("exchange_mode") == "aggressive"
    v1_aead = params.get("ike_version") == "v1" and _aead(params.get("ike_encryption"))
    return not (v2_aggressive or v1_aead)


def _aead(encryption: str | None) -> bool:
    return encryption is not None and cat.by_console(cat.ALL_ENCRYPTION, encryption).aead


_UNRUNNABLE = {d: {o.console for o in menu if not o.supported} for d, menu in _MENUS.items()}


def _build(params: dict[str, str]) -> Case:
    """A positive case from canonical params; SM4/SM3 cells are kept, expected to be refused."""
    if params["ike_version"] == "v2":
        params["exchange_mode"] = "main"
    refused = any(v in _UNRUNNABLE.get(d, ()) for d, v in params.items()) or (
        params["ike_version"] == "v1" and _aead(params.get("ike_encryption")))
    return Case(case_id(params), params, expect=UNSUPPORTED if refused else ESTABLISHED)


def make_case(params: Mapping[str, str]) -> Case:
    """A positive case from params in any catalogue spelling (v2 cases are always `main`)."""
    clean = {d: canonical(d, params[d]) for d in ALL_DIMENSIONS if d in params}
    missing = [d for d in CORE_DIMENSIONS if d not in clean]
    if missing:
        raise LabError(f"matrix case: missing dimension(s) {', '.join(missing)}")
    return _build(clean)


def check_dimensions(dims: Mapping[str, Sequence[str]]) -> Dimensions:
    """`dims` with canonical values, in dimension order; LabError on unknown or missing ones."""
    unknown = [d for d in dims if d not in _CANONICAL]
    if unknown:
        raise LabError(f"unknown matrix dimension {unknown[0]!r}; known: {', '.join(ALL_DIMENSIONS)}")
    missing = [d for d in CORE_DIMENSIONS if not dims.get(d)]
    if missing:
        raise LabError(f"matrix dimension(s) {', '.join(missing)}: need at least one value")
    return {
        d: tuple(dict.fromkeys(canonical(d, v) for v in dims[d])) for d in ALL_DIMENSIONS if d in dims
    }


def _dedupe(cases: Iterable[Case]) -> list[Case]:
    seen: set[str] = set()
    out = []
    for c in cases:
        if c.id not in seen:
            seen.add(c.id)
            out.append(c)
    return out


def to_tunnel_fields(case: Case) -> dict[str, Any]:
    """`ike`, `ipsec` and `customer` for the spec's Tunnel.

    `customer` fits `CustomerOverrides` (its ike/ipsec are the customer's own settings, in the
    customer's perspective: `peer_id` is the ID the customer expects of the cloud); the case's
    `swap_ts` becomes its `swap_selectors`.
    """
    p = case.params
    ike: dict[str, Any] = {
        "version": p["ike_version"],
        "exchange_mode": p["exchange_mode"],
        "encryption": p["ike_encryption"],
        "integrity": p["ike_integrity"],
        "dh_group": p["dh_group"],
        "local_id": _identity(p["local_id_type"], CLOUD_FQDN),
        "peer_id": _identity(p["peer_id_type"], CUSTOMER_FQDN),
    }
    ipsec: dict[str, Any] = {
        "encryption": p["ipsec_encryption"], "integrity": p["ipsec_integrity"], "pfs": p["pfs"],
    }
    if "ike_sa_lifetime" in p:
        ike["sa_lifetime"] = int(p["ike_sa_lifetime"])
    if "ipsec_sa_lifetime" in p:
        ipsec["sa_lifetime"] = int(p["ipsec_sa_lifetime"])
    customer = {("swap_selectors" if k == "swap_ts" else k): v for k, v in case.customer.items()
                if k not in (PRIVATE_ID, IMPLEMENTATION)}
    return {"ike": ike, "ipsec": ipsec, "customer": customer}


def _identity(kind: str, fqdn: str) -> dict[str, str | None]:
    return {"type": "fqdn", "value": fqdn} if kind == "fqdn" else {"type": "address", "value": None}


def implementation_of(case: Case) -> str:
    """The customer gateway's IKE implementation the case runs against."""
    return str(case.customer.get(IMPLEMENTATION, DEFAULT_IMPLEMENTATION))


def libreswan_lacks(params: Mapping[str, str]) -> list[str]:
    """What of a case's cloud settings libreswan 4.10 does not implement (by the menu's names),
    from the proposal keywords the plan would give the customer gateway."""
    from lab.libreswan import algorithms  # libreswan's own view, kept out of the case model

    def keyword(menu: tuple[cat.Option, ...], value: str) -> str:
        return cat.by_console(menu, value).keyword or value.lower()

    version = 1 if params["ike_version"] == "v1" else 2
    ike = [keyword(cat.ALL_ENCRYPTION, params["ike_encryption"]),
           keyword(cat.ALL_DH_GROUPS, params["dh_group"])]
    esp = [keyword(cat.ALL_ENCRYPTION, params["ipsec_encryption"])]
    if params["pfs"] != "disable":
        esp.append(keyword(cat.ALL_DH_GROUPS, params["pfs"]))
    return list(dict.fromkeys([*algorithms.unsupported("-".join(ike), version, ike=True),
                               *algorithms.unsupported("-".join(esp), version, ike=False)]))


def check_implementations(values: Iterable[str]) -> tuple[str, ...]:
    """The implementations asked for, in IMPLEMENTATIONS order; LabError naming the allowed."""
    picked = {str(v).strip().lower() for v in values if str(v).strip()}
    wrong = sorted(picked - set(IMPLEMENTATIONS))
    if wrong or not picked:
        raise LabError(f"matrix dimension {IMPLEMENTATION}: {', '.join(wrong) or 'no value'}; "
                       f"allowed: {', '.join(IMPLEMENTATIONS)}")
    return tuple(i for i in IMPLEMENTATIONS if i in picked)


def across_implementations(cases: Sequence[Case], implementations: Sequence[str]) -> list[Case]:
    """Each case once per customer implementation, in that order per case (so shards keep the
    pairs together). strongSwan's keep their ids; the others' ids end in `--cgw-<name>`, and a
    cloud setting libreswan lacks is expected to be refused (UNSUPPORTED_LIBRESWAN)."""
    out: list[Case] = []
    for case in cases:
        for impl in implementations:
            if impl == DEFAULT_IMPLEMENTATION:
                out.append(case)
                continue
            expect = case.expect
            if expect != UNSUPPORTED and impl == "libreswan" and libreswan_lacks(case.params):
                expect = UNSUPPORTED_LIBRESWAN
            out.append(Case(f"{case.id}{IMPLEMENTATION_SUFFIX}{impl}", dict(case.params), case.kind, expect,
                            {**case.customer, IMPLEMENTATION: impl}))
    return out


# --- dimensions from the command line and matrix files ---------------------------------------

def restrict(dims: Dimensions, wanted: Mapping[str, Sequence[str] | str],
             profile: str | None = None, generation: str | None = None) -> Dimensions:
    """`dims` with some dimensions narrowed (or lifetime dimensions added), in the order of the
    gateway profile's menus (in `generation`); values the profile does not offer are refused."""
    out = dict(dims)
    for dimension, values in wanted.items():
        if dimension not in _CANONICAL:
            raise LabError(
                f"unknown matrix dimension {dimension!r}; known: {', '.join(ALL_DIMENSIONS)}"
            )
        items = [v.strip() for v in values.split(",")] if isinstance(values, str) else list(values)
        picked = {canonical(dimension, v, profile, generation) for v in items if str(v).strip()}
        if not picked:
            raise LabError(f"matrix dimension {dimension}: needs at least one value")
        reference = default_dimensions(profile, generation).get(dimension)
        foreign = sorted(v for v in picked if reference is not None and v not in reference)
        if foreign:
            raise LabError(f"matrix dimension {dimension}: {', '.join(foreign)} not offered by "
                           f"{_foreign(dimension, foreign, profiles.get(profile, generation))}")
        if reference is None:  # lifetimes: numeric order
            out[dimension] = tuple(sorted(picked, key=int))
        else:
            out[dimension] = tuple(v for v in reference if v in picked)
    return {d: out[d] for d in ALL_DIMENSIONS if d in out}


def _foreign(dimension: str, values: Sequence[str], profile: profiles.Profile) -> str:
    """`the tencent profile (offers ...)`, and where a newer gateway offers `values`, how to get
    one: the generation is the base spec's (`case_plan` runs every case on its gateway)."""
    hint = profile.newer_offer(dimension, values[0]) if all(
        profile.newer_offer(dimension, v) for v in values) else ""
    if hint:
        hint += " (a base spec with it: configs/examples/newer-gateway.yaml)"
    return f"{profile.label} (offers {', '.join(profile.menu(dimension))}){hint}"


def parse_restrictions(args: Iterable[str]) -> dict[str, list[str]]:
    """CLI strings like `ike_encryption=AES-128,AES-256` (repeatable) as a restriction mapping."""
    wanted: dict[str, list[str]] = {}
    for arg in args:
        name, sep, values = arg.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not name:
            raise LabError(
                f"matrix restriction {arg!r}: expected DIMENSION=VALUE[,VALUE...], "
                f"dimensions: {', '.join(ALL_DIMENSIONS)}"
            )
        wanted.setdefault(name, []).extend(v.strip() for v in values.split(",") if v.strip())
        if not wanted[name]:
            raise LabError(f"matrix dimension {name}: needs at least one value")
    return wanted


@dataclass
class MatrixRequest:
    """What a matrix file (or the CLI) asks for; `cases()` generates it."""

    strategy: str = "pairwise"
    dimensions: Dimensions = field(default_factory=default_dimensions)
    negatives: bool = False
    base: dict[str, str] | None = None
    behind_nat: bool = False  # the base spec's customer gateway is: its negatives add NAT_ID
    implementations: tuple[str, ...] = (DEFAULT_IMPLEMENTATION,)

    def cases(self) -> list[Case]:
        cases = generate(self.strategy, self.dimensions, with_negatives=self.negatives,
                         base=self.base, behind_nat=self.behind_nat)
        return across_implementations(cases, self.implementations)


def load_matrix_file(path: str | Path, profile: str | None = None,
                     generation: str | None = None) -> MatrixRequest:
    """`{strategy: pairwise, dimensions: {ike_version: [v2], ...}, negatives: true, base: {...}}`,
    against the menus of the base spec's gateway (`profile` in `generation`)."""
    path = Path(path)
    data = read_yaml(path, "matrix file")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise LabError(f"{path}: a matrix file is a mapping of strategy, dimensions, negatives, base")
    unknown = sorted(set(data) - {"strategy", "dimensions", "negatives", "base"})
    if unknown:
        raise LabError(f"{path}: unknown key(s) {', '.join(unknown)}; "
                       "allowed: strategy, dimensions, negatives, base")
    strategy = str(data.get("strategy", "pairwise"))
    if strategy not in STRATEGIES:
        raise LabError(f"{path}: strategy {strategy!r}; allowed: {', '.join(STRATEGIES)}")
    dims_in = data.get("dimensions") or {}
    if not isinstance(dims_in, dict):
        raise LabError(f"{path}: dimensions must map a dimension to a list of values")
    wanted = {str(k): ([str(x) for x in v] if isinstance(v, list) else str(v)) for k, v in dims_in.items()}
    impls = wanted.pop(IMPLEMENTATION, None)
    negatives = data.get("negatives", False)
    if not isinstance(negatives, bool):
        raise LabError(f"{path}: negatives must be true or false")
    base = data.get("base")
    if base is not None and not isinstance(base, dict):
        raise LabError(f"{path}: base must map a dimension to one value")
    try:
        dims = restrict(default_dimensions(profile, generation), wanted, profile, generation)
        base_params = _base_params(dims, {str(k): str(v) for k, v in base.items()}) if base else None
        implementations = check_implementations(
            impls.split(",") if isinstance(impls, str) else impls) if impls is not None else None
    except LabError as exc:
        raise LabError(f"{path}: {exc}") from None
    request = MatrixRequest(strategy, dims, negatives, base_params)
    if implementations:
        request.implementations = implementations
    return request


# --- strategies ------------------------------------------------------------------------------

def full_size(dims: Dimensions) -> int:
    """How many cases `full(dims)` yields, without generating them."""
    linked = ("ike_version", "exchange_mode", "ike_encryption")  # what `_valid` constrains
    n = 1
    for d, values in dims.items():
        if d not in linked:
            n *= len(values)
    combos = itertools.product(*(dims[d] for d in linked))
    return n * sum(1 for combo in combos if _valid(dict(zip(linked, combo, strict=True))))


def full(dims: Mapping[str, Sequence[str]] | None = None,
         restriction: Mapping[str, Sequence[str] | str] | None = None) -> list[Case]:
    """The cartesian product (optionally restricted), v2 x aggressive left out."""
    dims = _prepare(dims, restriction)
    names = list(dims)
    rows = (dict(zip(names, combo, strict=True)) for combo in itertools.product(*dims.values()))
    return [_build(r) for r in rows if _valid(r)]


def _prepare(dims: Mapping[str, Sequence[str]] | None,
             restriction: Mapping[str, Sequence[str] | str] | None) -> Dimensions:
    checked = check_dimensions(dims) if dims else default_dimensions()
    return restrict(checked, restriction) if restriction else checked


def _completable(dims: Dimensions, partial: Mapping[str, str]) -> bool:
    """Whether some valid full row extends `partial` (only version x mode x IKE cipher are
    constrained)."""
    linked = ("ike_version", "exchange_mode", "ike_encryption")
    choices = [[partial[d]] if d in partial else dims[d] for d in linked]
    return any(_valid(dict(zip(linked, combo, strict=True))) for combo in itertools.product(*choices))


Pair = tuple[tuple[str, str], tuple[str, str]]


def _pairs_of(names: Sequence[str], row: Mapping[str, str]) -> set[Pair]:
    return {((a, row[a]), (b, row[b])) for a, b in itertools.combinations(names, 2)}


def required_pairs(dims: Dimensions) -> list[Pair]:
    """Every value pair of every two dimensions that some valid case can hold, in stable order."""
    names = list(dims)
    out = []
    for a, b in itertools.combinations(names, 2):
        for va in dims[a]:
            for vb in dims[b]:
                if _completable(dims, {a: va, b: vb}):
                    out.append(((a, va), (b, vb)))
    return out


def _cover(dims: Dimensions, wanted: list[Pair], uncovered: set[Pair]) -> list[dict[str, str]]:
    """Greedy all-pairs rows (AETG-like, deterministic): seed with the first uncovered pair, then
    give each further dimension the value covering most uncovered pairs (first value on ties)."""
    names = list(dims)
    rows = []
    for seed in wanted:
        if seed not in uncovered:
            continue
        row = dict(seed)
        for name in names:
            if name in row:
                continue
            best, best_score = None, -1
            for value in dims[name]:
                candidate = {**row, name: value}
                if not _completable(dims, candidate):
                    continue
                score = sum(
                    1 for other, ov in row.items()
                    if _ordered(names, (name, value), (other, ov)) in uncovered
                )
                if score > best_score:
                    best, best_score = value, score
            assert best is not None  # the row was completable before this dimension
            row[name] = best
        row = {n: row[n] for n in names}
        rows.append(row)
        uncovered -= _pairs_of(names, row)
    return rows


def _ordered(names: Sequence[str], x: tuple[str, str], y: tuple[str, str]) -> Pair:
    return (x, y) if names.index(x[0]) < names.index(y[0]) else (y, x)


def pairwise(dims: Mapping[str, Sequence[str]] | None = None,
             restriction: Mapping[str, Sequence[str] | str] | None = None) -> list[Case]:
    """An all-pairs covering set, deterministic.

    Own greedy generator rather than allpairspy: we need the v1-only constraint on aggressive mode
    and, above all, that no pair of runnable values is covered only by a SM4/SM3 cell (which the
    endpoints refuse, so its other pairs would go untested). So: first cover every pair of
    supported values with supported rows, then cover the pairs involving SM4/SM3.
    """
    dims = _prepare(dims, restriction)
    runnable = {d: tuple(v for v in vals if is_supported(d, v)) for d, vals in dims.items()}
    rows: list[dict[str, str]] = []
    if all(runnable.values()):
        wanted = required_pairs(runnable)
        rows = _cover(runnable, wanted, set(wanted))
    wanted = required_pairs(dims)
    uncovered = set(wanted)
    for row in rows:
        uncovered -= _pairs_of(list(dims), row)
    rows += _cover(dims, wanted, uncovered)
    return _dedupe(_build(r) for r in rows)


def default_base(dims: Dimensions | None = None) -> dict[str, str]:
    """The cloud's API defaults where `dims` allows them, else the first runnable value."""
    dims = dims or default_dimensions()
    defaults = {
        "ike_version": "v1", "exchange_mode": "main",
        "ike_encryption": cat.DEFAULT_IKE_ENCRYPTION, "ike_integrity": cat.DEFAULT_IKE_INTEGRITY,
        "dh_group": cat.DEFAULT_DH_GROUP, "local_id_type": "address", "peer_id_type": "address",
        "ipsec_encryption": cat.DEFAULT_IPSEC_ENCRYPTION,
        "ipsec_integrity": cat.DEFAULT_IPSEC_INTEGRITY, "pfs": "disable",
    }
    base: dict[str, str] = {}
    for d in ALL_DIMENSIONS:
        values = dims.get(d, ())
        runnable = [v for v in values if is_supported(d, v)]
        if d in defaults and defaults[d] in values:
            base[d] = defaults[d]
        elif runnable:
            base[d] = runnable[0]
        elif d in defaults:
            base[d] = defaults[d]
    if not _valid(base):
        base["exchange_mode"] = "main"
    return base


def _base_params(dims: Dimensions, given: Mapping[str, str]) -> dict[str, str]:
    base = default_base(dims)
    for d, v in given.items():
        base[d] = canonical(d, v)
    return make_case(base).params


def _params_of(base: Case | Mapping[str, str] | None, dims: Dimensions | None = None) -> dict[str, str]:
    if base is None:
        return make_case(default_base(dims)).params
    if isinstance(base, Case):
        return dict(base.params)
    return _base_params(dims or default_dimensions(), base)


def sweep(base: Case | Mapping[str, str] | None = None,
          dims: Mapping[str, Sequence[str]] | None = None) -> list[Case]:
    """The base case, then one factor at a time: each other value of each dimension.

    Setting v2 on an aggressive base turns the mode to main (v2 has none); setting aggressive on
    a v2 base is not a valid cell and is skipped.
    """
    dims = _prepare(dims, None)
    params = _params_of(base, dims)
    cases = [make_case(params)]
    for d, values in dims.items():
        for v in values:
            if v == params.get(d):
                continue
            changed = {**params, d: v}
            if d == "ike_version" and v == "v2":
                changed["exchange_mode"] = "main"
            if _valid(changed):
                cases.append(make_case(changed))
    return _dedupe(cases)


def ikev2_crypto_125() -> list[Case]:
    """The 125 IKEv2 proposals (5 ciphers x 5 hashes x 5 groups) with ESP fixed to AES-128/SHA1."""
    dims = restrict(default_dimensions(), {
        "ike_version": ["v2"], "exchange_mode": ["main"],
        "ike_encryption": ["AES-128", "AES-192", "AES-256", "3DES", "DES"],
        "ike_integrity": ["MD5", "SHA1", "SHA256", "SHA384", "SHA512"],
        "dh_group": ["DH1", "DH2", "DH5", "DH14", "DH24"],
        "local_id_type": ["address"], "peer_id_type": ["address"],
        "ipsec_encryption": ["AES-128"], "ipsec_integrity": ["SHA1"], "pfs": ["disable"],
    })
    return full(dims)


# --- negatives -------------------------------------------------------------------------------

# Alternatives a negative case switches to: strong, widely built ones first, so the failure is
# the mismatch under test and not a missing plugin.
_PREFERRED = {
    "encryption": ("AES-256", "AES-128", "AES-192", "3DES", "DES"),
    "integrity": ("SHA256", "SHA1", "SHA512", "SHA384", "MD5"),
    "dh": ("DH14", "DH5", "DH2", "DH24", "DH1"),
}


def _other(kind: str, current: str) -> str:
    return next(v for v in _PREFERRED[kind] if v != current)


def _negative(params: Mapping[str, str], reason: str, customer: dict[str, Any]) -> Case:
    clean = make_case(params).params
    return Case(case_id(clean, reason), clean, "negative", reason, customer)


def negatives(base: Case | Mapping[str, str] | None = None, *,
              behind_nat: bool = False) -> list[Case]:
    """One case per reason in NEGATIVE_REASONS (NAT_NEGATIVE_REASONS when the base tunnel's
    customer gateway is behind NAT), each with the customer-side change provoking it."""
    p = _params_of(base)
    if make_case(p).unsupported:
        raise LabError(f"negative cases need a runnable base; {case_id(p)} uses SM4/SM3")
    v1 = {**p, "ike_version": "v1"}
    if _aead(v1["ike_encryption"]):  # IKEv1 takes no GCM IKE cipher: the non-AEAD strength
        v1["ike_encryption"] = "AES-256"
    out = [
        _negative(p, PROPOSAL_IKE, {"ike": {"encryption": _other("encryption", p["ike_encryption"])}}),
        _negative(p, PROPOSAL_IPSEC, {"ipsec": {
            "encryption": _other("encryption", p["ipsec_encryption"]),
            "integrity": _other("integrity", p["ipsec_integrity"]),
        }}),
    ]
    # PFS is forced to IKEv1: IKEv2 creates the first CHILD_SA inside IKE_AUTH with the IKE SA's
    # keys (no KE payload), so a PFS group mismatch would only show at the first CHILD_SA rekey;
    # IKEv1 runs the DH of PFS in quick mode, so the mismatch fails establishment. Both sides use
    # PFS with different groups, so the proposals differ whichever side initiates.
    cloud_pfs = p["pfs"] if p["pfs"] != "disable" else _other("dh", "")
    out.append(_negative({**v1, "pfs": cloud_pfs}, PFS, {"ipsec": {"pfs": _other("dh", cloud_pfs)}}))
    other_version = "v1" if p["ike_version"] == "v2" else "v2"
    out.append(_negative(p, VERSION, {"ike": {"version": other_version, "exchange_mode": "main"}}))
    mode = v1["exchange_mode"]
    out.append(_negative(v1, MODE, {"ike": {
        "exchange_mode": "aggressive" if mode == "main" else "main",
    }}))
    out.append(_negative(p, PSK, {"pre_shared_key": WRONG_PSK}))
    # The cloud identifies itself by FQDN; the customer expects another name.
    out.append(_negative({**p, "local_id_type": "fqdn"}, ID, {"ike": {
        "peer_id": {"type": "fqdn", "value": WRONG_FQDN},
    }}))
    out.append(_negative(p, TS, {"swap_ts": True}))
    if behind_nat:  # the cloud expects the public address; the customer sends its private one
        out.append(_negative({**p, "peer_id_type": "address"}, NAT_ID, {PRIVATE_ID: True}))
    return out


def generate(
    strategy: str,
    dims: Mapping[str, Sequence[str]] | None = None,
    *,
    with_negatives: bool = False,
    base: Case | Mapping[str, str] | None = None,
    behind_nat: bool = False,
) -> list[Case]:
    """One strategy's cases, optionally followed by the negative cases of `base`."""
    dims = _prepare(dims, None)
    if strategy == "pairwise":
        cases = pairwise(dims)
    elif strategy == "full":
        cases = full(dims)
    elif strategy == "sweep":
        cases = sweep(base, dims)
    elif strategy == "ikev2-125":
        cases = ikev2_crypto_125()
    else:
        raise LabError(f"matrix strategy {strategy!r}; allowed: {', '.join(STRATEGIES)}")
    if with_negatives:
        cases += negatives(_params_of(base, dims), behind_nat=behind_nat)
    return _dedupe(cases)


# --- sharding --------------------------------------------------------------------------------

def parse_shard(text: str) -> tuple[int, int]:
    """`K/N` with 1 <= K <= N."""
    k_text, sep, n_text = text.partition("/")
    try:
        k, n = int(k_text), int(n_text)
    except ValueError:
        k = n = 0
    if not sep or n < 1 or not 1 <= k <= n:
        raise LabError(f"--shard {text!r}: expected K/N with whole numbers and 1 <= K <= N (e.g. 2/4)")
    return k, n


def shard(cases: Sequence[Case], k: int, n: int) -> list[Case]:
    """Round-robin slice K of N: the N shards partition `cases`, and neighbours (similar cost)
    spread over shards."""
    if n < 1 or not 1 <= k <= n:
        raise LabError(f"shard {k}/{n}: need 1 <= K <= N")
    return list(cases[k - 1 :: n])
