"""The matrix against the user's own customer config: the cloud side varied per case, the
customer side always the user's file, one whole lab per case (`up`, `check`, `down`): the user's
daemon settings must stand as written, so no daemon is reused across cases.

A cell interoperates only when the whole check passes, PFS included: IKEv2's first CHILD_SAs come
from IKE_AUTH without a key exchange, so the check rekeys them (as the cloud gateway would after
the SA lifetime) and judges the group the rekey negotiated on both ends."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lab import lifecycle
from lab.check import run_check
from lab.customer import OwnConfig
from lab.errors import LabError
from lab.findings import CheckReport
from lab.matrix.cases import Case
from lab.matrix.runner import plan_tunnel
from lab.spec import CustomerOverrides, LabSpec, load_spec


def run_matrix(cases: Sequence[Case], spec_path: Path, load: Callable[[], OwnConfig],
               backend: str, name: str,
               progress: Callable[[str], None] = lambda _: None) -> list[dict[str, Any]]:
    """Each case's cloud tunnel (base spec + the case's cloud settings) against the user's config
    (`load` reads it afresh per case). Negative cases (customer deviations) do not apply.
    Returns one row per case: id, cloud settings, interoperates, why, advice."""
    base = load_spec(spec_path)
    rows = []
    for case in cases:
        tunnel = plan_tunnel(base, case).model_copy(update={"customer": CustomerOverrides()})
        spec = LabSpec(vpn_gateway=base.vpn_gateway, tunnels=[tunnel])
        row: dict[str, Any] = {"id": case.id, "cloud": dict(case.params)}
        lifecycle.down(name)
        try:
            lab = lifecycle.up(spec, name, backend, customer=load())
            report = run_check(lab, rekey=True)
            row.update(interoperates=report.ok, why=why_not(report),
                       advice=[f.detail for f in report.findings if f.check.startswith("advice")])
        except LabError as exc:
            row.update(interoperates=False, why="lab refused the case", advice=[str(exc)])
        finally:
            lifecycle.down(name)
        progress(f"{case.id}: " + ("interoperates" if row["interoperates"] else row["why"]))
        rows.append(row)
    return rows


def why_not(report: CheckReport) -> str:
    """The diagnoser's reason when the negotiation failed; else the checks that failed, named."""
    if report.ok:
        return ""
    reasons = [f.check[5:] for f in report.findings if f.check.startswith("why:")]
    if reasons:
        return reasons[0]
    failed = [f for f in report.checks if not f.ok]
    return "; ".join(f"{f.plane}: {f.check} ({f.subject}: {f.detail})" for f in failed[:3]) + (
        f"; and {len(failed) - 3} more" if len(failed) > 3 else "")
