"""The robustness matrix behind ``rfa robustness``: aggregator x attack at each corruption level.

The sweep is :class:`rfa.fl.experiments.Sweep` (same runner, same per-run rows, same aggregator
parameters per rho as ``rfa compare``) with the attacks of :data:`DEFAULT_ATTACKS` and
``rho in {0.1, 0.25}``, plus the clean run (rho = 0) of every aggregator as the reference. One
cell is the mean test accuracy over the seeds of one (aggregator, attack, rho); for attacks that
plant a backdoor the cell also carries the backdoor accuracy (Ozdayi et al.: trojaned base-class
test images classified as the target; lower is better). The ``worst`` column is the lowest cell of
the row: the accuracy an aggregator guarantees against every attack of the matrix.

Secure-compatible aggregators (computable from secure averages, Definition 1 of Pillutla, Kakade,
Harchaoui, IEEE TSP 2022) are marked: they are the ones a secure-aggregation deployment can use.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["DEFAULT_ATTACKS", "DEFAULT_RHOS", "matrix", "format_matrix"]

#: the paper's three corruptions, the classic update attacks and the literature's strongest ones
DEFAULT_ATTACKS: tuple[str, ...] = (
    "data-poisoning", "omniscient", "gaussian", "random", "sign-flip", "ipm", "alie", "min-max", "min-sum",
    "fang-median", "fang-krum", "opt-ipm", "opt-alie", "cga", "backdoor", "model-replacement",
)
DEFAULT_RHOS: tuple[float, ...] = (0.1, 0.25)


def _mean(v: list[float]) -> float:
    return sum(v) / len(v) if v else math.nan


def matrix(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The matrix of a sweep's ``rows`` (results.json rows): ``aggregators`` and ``attacks`` in first-seen
    order, ``rhos`` (> 0), ``clean[agg]`` (mean accuracy at rho = 0), ``acc[(agg, attack, rho)]`` and
    ``backdoor[(agg, attack, rho)]`` (means over seeds; backdoor only where measured), ``seeds[(agg,
    attack, rho)]`` (how many runs), ``secure[agg]``, and ``worst[(agg, rho)]`` (lowest accuracy cell)."""
    aggs = list(dict.fromkeys(r["aggregator"] for r in rows))
    attacks = list(dict.fromkeys(r["corruption"] for r in rows if r["corruption"] != "none"))
    rhos = sorted({float(r["rho"]) for r in rows if float(r["rho"]) > 0})
    acc: dict[tuple, float] = {}
    bd: dict[tuple, float] = {}
    n: dict[tuple, int] = {}
    for a in aggs:
        for c in attacks:
            for rho in rhos:
                sel = [r for r in rows if r["aggregator"] == a and r["corruption"] == c and abs(float(r["rho"]) - rho) < 1e-12]
                if not sel:
                    continue
                acc[(a, c, rho)] = _mean([float(r["accuracy"]) for r in sel])
                n[(a, c, rho)] = len(sel)
                b = [float(r["backdoor_accuracy"]) for r in sel if r.get("backdoor_accuracy") not in (None, "")]
                if b:
                    bd[(a, c, rho)] = _mean(b)
    clean = {a: _mean([float(r["accuracy"]) for r in rows if r["aggregator"] == a and float(r["rho"]) == 0.0]) for a in aggs}
    secure = {a: all(bool(r["secure_compatible"]) for r in rows if r["aggregator"] == a) for a in aggs}
    worst = {(a, rho): min((acc[(a, c, rho)] for c in attacks if (a, c, rho) in acc), default=math.nan)
             for a in aggs for rho in rhos}
    return {"aggregators": aggs, "attacks": attacks, "rhos": rhos, "clean": clean, "acc": acc, "backdoor": bd,
            "seeds": n, "secure": secure, "worst": worst}


def _pct(x: float) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def format_matrix(mx: dict[str, Any], rho: float) -> str:
    """Markdown table of the matrix at ``rho``: one row per aggregator (``*`` = secure-compatible),
    the clean accuracy, one column per attack (accuracy %, and ``bd`` = backdoor accuracy % where the
    attack plants one), and the worst cell."""
    attacks = mx["attacks"]
    head = ["aggregator", "secure", "clean"] + attacks + ["worst"]
    lines = [f"accuracy (%) at rho = {rho:g}, mean over seeds; `bd` = backdoor accuracy (%); * = secure-compatible", "",
             "| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for a in mx["aggregators"]:
        cells = [("*" if mx["secure"][a] else "") + a, "yes" if mx["secure"][a] else "no", _pct(mx["clean"][a])]
        for c in attacks:
            k = (a, c, rho)
            cell = _pct(mx["acc"].get(k, math.nan))
            if k in mx["backdoor"]:
                cell += f" (bd {_pct(mx['backdoor'][k])})"
            cells.append(cell)
        cells.append(_pct(mx["worst"].get((a, rho), math.nan)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
