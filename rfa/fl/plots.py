"""Plots of the study (matplotlib, Agg backend; PNG files).

* :func:`plot_accuracy_vs_rho` -- seed 002 Figure 2/5 style: one panel per corruption, test accuracy
  against rho, mean over seeds with the min/max band shaded;
* :func:`plot_accuracy_vs_calls` -- Figure 4 style: accuracy against the cumulative number of
  secure-average oracle calls, for the clean setting and each corruption at the largest rho
  (secure-compatible aggregators only: plaintext ones make no oracle call);
* :func:`plot_privacy_vs_robustness` -- one point per aggregator: bytes per client per round (the
  communication price of keeping updates private) against worst-case accuracy at the largest rho;
  plaintext-only aggregators are drawn hollow (they keep nothing private).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["plot_accuracy_vs_rho", "plot_accuracy_vs_calls", "plot_privacy_vs_robustness", "plot_all",
           "accuracy_vs_rho_figure", "accuracy_vs_calls_figure"]

_MARKERS = "osD^v<>pPX*h"


def _style(aggs: list[str]) -> dict[str, dict[str, Any]]:
    cmap = plt.get_cmap("tab10")
    return {a: {"color": cmap(i % 10), "marker": _MARKERS[i % len(_MARKERS)]} for i, a in enumerate(aggs)}


def _bottom_legend(fig, axes) -> None:
    """One legend for all panels, below them (never over a curve)."""
    handles, labels = {}, []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in handles:
                handles[lab] = h
                labels.append(lab)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    if labels:
        fig.legend([handles[lab] for lab in labels], labels, loc="lower center", ncol=min(len(labels), 8), fontsize=8,
                   frameon=False)


def _fit_ylim(ax, lo: float, hi: float) -> None:
    """Each panel gets its own y range (padded, within [0, 100]): with a shared axis the panels where
    every aggregator stays near the clean accuracy collapse into one unreadable line."""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return
    half = 0.54 * max(hi - lo, 8.0)  # at least 8 points tall: never magnify sub-point differences
    mid = 0.5 * (lo + hi)
    ax.set_ylim(max(0.0, mid - half), min(100.0, mid + half))



def _finish_panel(ax, ylo: float, yhi: float, title: str, xlabel: str) -> None:
    """Shared panel finish of the accuracy figures: own y range, title, axis labels, grid."""
    _fit_ylim(ax, ylo, yhi)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)


def _finish_figure(fig, axes, title: str):
    _bottom_legend(fig, axes[0])
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def _save(fig, path: str | Path) -> Path:
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)

def accuracy_vs_rho_figure(rows: list[dict[str, Any]], title: str = ""):
    """The figure of :func:`plot_accuracy_vs_rho` (returned open, for tests and notebooks)."""
    aggs = list(dict.fromkeys(r["aggregator"] for r in rows))
    corrs = list(dict.fromkeys(r["corruption"] for r in rows if r["corruption"] != "none")) or ["none"]
    st = _style(aggs)
    fig, axes = plt.subplots(1, len(corrs), figsize=(4.2 * len(corrs), 3.6), squeeze=False, sharey=False)
    for ax, c in zip(axes[0], corrs):
        ylo, yhi = np.inf, -np.inf
        for a in aggs:
            by_rho: dict[float, list[float]] = defaultdict(list)
            for r in rows:
                if r["aggregator"] == a and (r["corruption"] == c or r["rho"] == 0.0):
                    by_rho[float(r["rho"])].append(100 * float(r["accuracy"]))
            if not by_rho:
                continue
            xs = sorted(by_rho)
            mean = [np.mean(by_rho[x]) for x in xs]
            lo = [np.min(by_rho[x]) for x in xs]
            hi = [np.max(by_rho[x]) for x in xs]
            ax.plot(xs, mean, label=a, **st[a], lw=1.5, ms=4)
            ax.fill_between(xs, lo, hi, color=st[a]["color"], alpha=0.15)
            ylo, yhi = min(ylo, min(lo)), max(yhi, max(hi))
        _finish_panel(ax, ylo, yhi, c, "corruption level rho")
    return _finish_figure(fig, axes, title)


def plot_accuracy_vs_rho(rows: list[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Seed 002 Figure 2/5 layout: one panel per corruption (own y range), mean over seeds, min/max shaded."""
    return _save(accuracy_vs_rho_figure(rows, title), path)


def accuracy_vs_calls_figure(runs: list[dict[str, Any]], title: str = ""):
    """The figure of :func:`plot_accuracy_vs_calls` (returned open)."""
    secure_runs = [r for r in runs if r["final"].get("secure_compatible")]
    rmax = max((r["config"]["rho"] for r in runs), default=0.0)
    settings = [("none", 0.0)] + [(c, rmax) for c in dict.fromkeys(r["config"]["corruption"] for r in runs) if c != "none"]
    aggs = list(dict.fromkeys(r["config"]["aggregator"] for r in secure_runs))
    st = _style(aggs)
    fig, axes = plt.subplots(1, len(settings), figsize=(4.2 * len(settings), 3.6), squeeze=False, sharey=False)
    for ax, (c, rho) in zip(axes[0], settings):
        ylo, yhi = np.inf, -np.inf
        for a in aggs:
            curves = []
            for r in secure_runs:
                cf = r["config"]
                if cf["aggregator"] != a or cf["corruption"] != c or abs(cf["rho"] - rho) > 1e-12:
                    continue
                pts = [(h["cumulative_oracle_calls"], 100 * h["accuracy"]) for h in r["history"] if h.get("accuracy") is not None]
                if pts:
                    curves.append(pts)
            if not curves:
                continue
            n = min(len(p) for p in curves)
            xs = np.array([p[0] for p in curves[0][:n]], dtype=float)
            ys = np.array([[p[1] for p in cv[:n]] for cv in curves], dtype=float)
            ax.plot(xs, ys.mean(0), label=a, **st[a], lw=1.5, ms=3)
            ax.fill_between(xs, ys.min(0), ys.max(0), color=st[a]["color"], alpha=0.15)
            ylo, yhi = min(ylo, float(ys.min())), max(yhi, float(ys.max()))
        _finish_panel(ax, ylo, yhi, f"{c} (rho={rho:g})", "cumulative secure-average calls")
    return _finish_figure(fig, axes, title)


def plot_accuracy_vs_calls(runs: list[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Figure 4 layout. ``runs``: the ``runs`` list of results.json (config + history)."""
    return _save(accuracy_vs_calls_figure(runs, title), path)


def plot_privacy_vs_robustness(rows: list[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    aggs = list(dict.fromkeys(r["aggregator"] for r in rows))
    st = _style(aggs)
    rmax = max((r["rho"] for r in rows), default=0.0)
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for a in aggs:
        ra = [r for r in rows if r["aggregator"] == a]
        at_max = defaultdict(list)
        for r in ra:
            if r["rho"] == rmax:
                at_max[r["corruption"]].append(100 * r["accuracy"])
        if not at_max:
            at_max["none"] = [100 * r["accuracy"] for r in ra]
        worst = min(np.mean(v) for v in at_max.values())
        cost = np.mean([r["bytes_per_client_per_round"] for r in ra])
        secure = all(r["secure_compatible"] for r in ra)
        s = max(r["max_effective_weight"] for r in ra)
        ax.scatter([cost / 1024], [worst], s=70, marker=st[a]["marker"], edgecolors=st[a]["color"],
                   facecolors=st[a]["color"] if secure else "none", linewidths=1.6,
                   label=f"{a} ({'secure' if secure else 'plaintext'}, s={s:.2f})")
        ax.annotate(a, (cost / 1024, worst), textcoords="offset points", xytext=(5, 4), fontsize=7)
    ax.set_xscale("log")
    from matplotlib.ticker import FuncFormatter, LogLocator

    fmt = FuncFormatter(lambda v, _pos: f"{v:g}")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 3.0, 5.0)))
    ax.xaxis.set_minor_locator(LogLocator(base=10, subs=(4.0, 6.0, 7.0, 8.0, 9.0)))
    ax.xaxis.set_major_formatter(fmt)
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _pos: ""))
    lo, hi = ax.get_xlim()
    ax.set_xlim(lo / 1.15, hi * 1.15)
    ax.set_xlabel("bytes per client per round (KiB, log scale)")
    ax.set_ylabel(f"worst-case test accuracy at rho={rmax:g} (%)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=6.5, loc="best")
    ax.set_title(title or "privacy cost vs robustness (hollow: updates revealed to the server)", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def plot_all(results_json: dict[str, Any], out_dir: str | Path, prefix: str = "") -> list[Path]:
    """The three plots from a loaded ``results.json`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows, runs = results_json["rows"], results_json["runs"]
    return [
        plot_accuracy_vs_rho(rows, out / f"{prefix}accuracy_vs_rho.png"),
        plot_accuracy_vs_calls(runs, out / f"{prefix}accuracy_vs_calls.png"),
        plot_privacy_vs_robustness(rows, out / f"{prefix}privacy_vs_robustness.png"),
    ]
