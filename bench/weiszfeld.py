"""Benchmark 3: our smoothed Weiszfeld against the ``geom_median`` package (0.1.0, torch backend).

Same float32 points on the CPU, equal iterations: ``geom_median.torch.compute_geometric_median(points,
weights, eps=nu, maxiter=R, ftol=1e-20)`` starts at the weighted mean and runs ``R`` Weiszfeld steps (its
``ftol`` makes it run all of them); ours is ``rfa.weiszfeld.smoothed_weiszfeld(points, weights,
oracle=IdealOracle(), nu=nu, budget=R + 1)`` (the mean is counted as the first of ``budget`` calls, as in
the paper's scripts). Run with 1 torch thread (on a shared 2-core machine torch's intra-op threads can
stall small operations by ~100 ms; both libraries see the same setting). Both compute the objective after every step (diagnostics). Timings interleaved,
median of repeats; ratio = ours / geom_median.

Objective suboptimality ``(g(v) - g*) / g*`` beside the time, ``g*`` from the float64 reference
``rfa.weiszfeld.geometric_median``. Data: clean = Gaussian cloud around a random centre (not 0); outliers
= the same with 25% of the points replaced by far ones (centre + 100 x noise).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from bench import common
from bench.common import goal, time_paired


def _points(m: int, d: int, outliers: bool, seed: int):  # noqa: ANN202
    import torch

    g = torch.Generator().manual_seed(seed)
    centre = torch.randn(d, generator=g, dtype=torch.float32)
    pts = centre + 0.1 * torch.randn(m, d, generator=g, dtype=torch.float32)
    if outliers:
        k = m // 4
        pts[:k] = centre + 100.0 * torch.randn(k, d, generator=g, dtype=torch.float32)
    return pts


def run(quick: bool = False, repeats: int = 3, log=print) -> dict[str, Any]:  # noqa: ANN001
    out: dict[str, Any] = {"name": "weiszfeld"}
    try:
        import torch
        from geom_median.torch import compute_geometric_median
    except Exception as exc:  # noqa: BLE001
        out["skipped"] = f"geom_median not importable ({exc}); install with: .venv/bin/pip install geom-median==0.1.0"
        log("  " + out["skipped"])
        out["goals"] = [goal("Weiszfeld time / geom_median time", None, 0.6, note="skipped: geom_median missing")]
        return out
    from rfa.oracle import IdealOracle
    from rfa.weiszfeld import geometric_median, smoothed_weiszfeld

    nu = 1e-6
    default_threads = torch.get_num_threads()
    thread_grid = [1]
    sizes = [(50, 100000), (200, 10000)] if quick else [(100, 100000), (1000, 10000), (100, 1000000)]
    iters = [2, 10]
    if common.SMOKE:
        sizes, iters = [(10, 100)], [2]
    rows = []
    for m, d in sizes:
        for outl in (False, True):
            pts = _points(m, d, outl, seed=m + d)
            wts = torch.ones(m, dtype=torch.float32) / m
            ref = geometric_median(pts.double(), wts.double(), tol=1e-10, max_iter=2000)
            pd = pts.double()
            gstar = float((pd - ref).norm(dim=1).mul(wts.double()).sum())
            pts_list = [p for p in pts]

            def g(v) -> float:  # noqa: ANN001
                return float((pd - v.double()).norm(dim=1).mul(wts.double()).sum())

            its = iters if d < 10**6 else iters[:1]
            for r, threads in [(r, th) for r in its for th in thread_grid]:
                torch.set_num_threads(threads)
                res: dict[str, Any] = {}

                def ours() -> None:
                    res["ours"] = smoothed_weiszfeld(pts, wts, oracle=IdealOracle(), nu=nu, budget=r + 1).median

                def theirs() -> None:
                    res["theirs"] = compute_geometric_median(pts_list, wts, eps=nu, maxiter=r, ftol=1e-20).median

                tm = time_paired({"ours": ours, "geom_median": theirs}, repeats)
                row = {
                    "m": m,
                    "d": d,
                    "data": "25% far outliers" if outl else "clean",
                    "iterations": r,
                    "torch_threads": threads,
                    "ours_s": tm["ours"].median,
                    "geom_median_s": tm["geom_median"].median,
                    "ratio": tm["ours"].median / tm["geom_median"].median,
                    "ours_subopt": (g(res["ours"]) - gstar) / gstar,
                    "geom_median_subopt": (g(res["theirs"]) - gstar) / gstar,
                }
                rows.append(row)
                log(f"  m={m} d={d} {row['data']} R={r} threads={threads}: ours {row['ours_s']:.3f} s, geom_median {row['geom_median_s']:.3f} s, ratio {row['ratio']:.2f}")
            del pts, pts_list, pd
    torch.set_num_threads(default_threads)
    out["rows"] = rows
    out["goals"] = []
    for th in thread_grid:
        sel = [r for r in rows if r["torch_threads"] == th]
        worst = max(r["ratio"] for r in sel)
        med = float(np.median([r["ratio"] for r in sel]))
        out["goals"].append(goal(f"Weiszfeld time / geom_median time, torch threads={th} (worst over sizes, data, R)", worst, 0.6,
                                 note=f"median over rows {med:.2f}"))
    return out
