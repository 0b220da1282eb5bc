"""Which cases a matrix run covers: a matrix file or the profile's menus, narrowed by `--only`,
with or without negatives, one shard of them; the command line and tests ask the same question."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lab.errors import LabError
from lab.matrix import cases as mc


def select_cases(strategy: str | None, matrix_file: Path | None, only: Sequence[str],
                 negatives: bool | None, shard_text: str | None,
                 profile: str | None = None, behind_nat: bool = False,
                 generation: str | None = None,
                 implementation: str = mc.DEFAULT_IMPLEMENTATION) -> tuple[list[mc.Case], str]:
    """The run's cases in their stable order (shard applied) and the strategy's name; the
    dimensions are the gateway profile's menus (default: Tencent's) in the base spec's gateway
    `generation` (default: the profile's own, classic for Tencent). `behind_nat`: the base
    spec's customer gateway is behind NAT (its negatives add the NAT identity case).
    `implementation`: the base spec's customer gateway's, which the cases run against unless
    `--only implementation=...` (or the matrix file) names others."""
    request = mc.load_matrix_file(matrix_file, profile, generation) if matrix_file else \
        mc.MatrixRequest(dimensions=mc.default_dimensions(profile, generation))
    if not matrix_file or request.implementations == (mc.DEFAULT_IMPLEMENTATION,):
        request.implementations = (implementation,)
    if strategy is not None:
        if strategy not in mc.STRATEGIES:
            raise LabError(f"--strategy {strategy!r}; allowed: {', '.join(mc.STRATEGIES)}")
        request.strategy = strategy
    wanted = mc.parse_restrictions(only) if only else {}
    if mc.IMPLEMENTATION in wanted:
        request.implementations = mc.check_implementations(wanted.pop(mc.IMPLEMENTATION))
    if wanted:
        request.dimensions = mc.restrict(request.dimensions, wanted, profile, generation)
    if negatives is not None:
        request.negatives = negatives
    elif matrix_file is None:
        request.negatives = True
    if request.strategy == "ikev2-125" and wanted:
        raise LabError("--only does not apply to --strategy ikev2-125 (a fixed set of 125 cases)")
    request.behind_nat = behind_nat
    cases = request.cases()
    if shard_text:
        k, n = mc.parse_shard(shard_text)
        cases = mc.shard(cases, k, n)
    return cases, request.strategy
