"""The matrix as one self-contained HTML page (inline CSS and JS, no external URLs).

Rows are IKE proposals, columns IPsec proposals; a cell holds one chip per case that fell there
(ID types, lifetimes and negatives share a cell). The page comes from the jinja2 template
`configs/reports/matrix.html.j2` with autoescaping; case data rides along as JSON that the
script reads with `textContent`, so nothing from a log is ever parsed as markup.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from markupsafe import Markup

from lab import catalogue as cat
from lab.matrix.results import CaseResult, implementation_differences, redact_all, summary
from lab.render import report_environment

# A cell takes the colour of its most alarming case.
_SEVERITY = ("error", "failed", "passed-positive", "passed-negative", "unsupported")


def _index(menu: tuple[cat.Option, ...], console: str) -> int:
    return next((i for i, o in enumerate(menu) if o.console == console), len(menu))


def _row_key(p: dict[str, str]) -> tuple:
    return (
        list(cat.IKE_VERSIONS).index(p.get("ike_version", "v1")) if p.get("ike_version") in
        cat.IKE_VERSIONS else 9,
        0 if p.get("exchange_mode") == "main" else 1,
        _index(cat.ENCRYPTION, p.get("ike_encryption", "")),
        _index(cat.INTEGRITY, p.get("ike_integrity", "")),
        _index(cat.DH_GROUPS, p.get("dh_group", "")),
    )


def _col_key(p: dict[str, str]) -> tuple:
    pfs = p.get("pfs", "disable")
    return (
        _index(cat.ENCRYPTION, p.get("ipsec_encryption", "")),
        _index(cat.INTEGRITY, p.get("ipsec_integrity", "")),
        -1 if pfs == "disable" else _index(cat.DH_GROUPS, pfs),
    )


def _row_label(p: dict[str, str]) -> str:
    version = "IKEv1 " + p.get("exchange_mode", "main") if p.get("ike_version") == "v1" else "IKEv2"
    return " · ".join([version, p.get("ike_encryption", "?"), p.get("ike_integrity", "?"),
                       p.get("dh_group", "?")])


def _col_label(p: dict[str, str]) -> str:
    pfs = p.get("pfs", "disable")
    return " · ".join([p.get("ipsec_encryption", "?"), p.get("ipsec_integrity", "?"),
                       "no PFS" if pfs == "disable" else f"PFS {pfs}"])


def _json_for_script(data: Any) -> Markup:
    """JSON safe inside <script>: no `<`, `>` or `&` survives literally."""
    text = json.dumps(data, sort_keys=True, default=str)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return Markup(text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def render_html(
    results: Sequence[CaseResult], meta: dict[str, Any], secrets: Iterable[str | None] = (),
) -> str:
    """The report page: summary, filters, the IKE x IPsec grid, and every case in a table."""
    results = redact_all(results, secrets)
    rows: dict[tuple, str] = {}
    cols: dict[tuple, str] = {}
    cells: dict[tuple[tuple, tuple], list[CaseResult]] = {}
    for r in results:
        rk, ck = _row_key(r.params), _col_key(r.params)
        rows.setdefault(rk, _row_label(r.params))
        cols.setdefault(ck, _col_label(r.params))
        cells.setdefault((rk, ck), []).append(r)
    row_keys, col_keys = sorted(rows), sorted(cols)
    grid = []
    for rk in row_keys:
        line = []
        for ck in col_keys:
            members = cells.get((rk, ck), [])
            worst = min((_SEVERITY.index(m.status) for m in members), default=None)
            line.append({"status": _SEVERITY[worst] if worst is not None else "empty", "cases": members})
        grid.append({"label": rows[rk], "cells": line})
    data = {
        r.id: {**r.to_dict(), "status": r.status} for r in results
    }
    differences = implementation_differences(results)
    context = {
        "meta": meta,
        "differences": differences,
        "implementations": list(dict.fromkeys(i for d in differences for i in d["outcomes"])),
        "summary": summary(results),
        "columns": [cols[c] for c in col_keys],
        "grid": grid,
        "results": list(results),
        "versions": sorted({r.params.get("ike_version", "?") for r in results}),
        "outcomes": sorted({r.outcome for r in results}),
        "data_json": _json_for_script(data),
        "search_text": _search_text,
    }
    return report_environment().get_template("matrix.html.j2").render(context)


def _search_text(r: CaseResult) -> str:
    return " ".join([r.id, r.kind, r.expect, r.outcome, r.detail, *r.params.values()]).lower()
