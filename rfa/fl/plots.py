"""Plots of the study (matplotlib, Agg backend; PNG files), derived from ``results.json`` alone.

* :func:`plot_accuracy_vs_rho` -- the layout of Pillutla et al., *Robust Aggregation for Federated
  Learning*, Figures 2 and 5: one panel per corruption, test accuracy against rho, mean over seeds with
  the min-max band over seeds shaded;
* :func:`plot_accuracy_vs_calls` -- their Figure 4: accuracy against the cumulative number of
  secure-average oracle calls, for the clean setting and each corruption at the largest rho.
  Plaintext-only aggregators make no oracle call: they are not drawn, and a note under the panels
  names them;
* :func:`plot_privacy_vs_robustness` -- one point per aggregator: upload bytes per client per round
  (the communication price of keeping updates private) against worst-case accuracy at the largest rho;
  the legend gives each one's download bytes; plaintext-only aggregators are drawn hollow (they keep
  nothing private).

Every figure's subtitle names the data set, model, rounds, clients (n and m per round), seeds, oracle
and what the band is. Aggregators differ in colour, marker and line style, so overlapping curves stay
distinguishable; panels wrap onto rows of at most three.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["plot_accuracy_vs_rho", "plot_accuracy_vs_calls", "plot_privacy_vs_robustness", "plot_all",
           "accuracy_vs_rho_figure", "accuracy_vs_calls_figure", "privacy_vs_robustness_figure", "describe_study",
           "BAND", "plot_robustness_heatmap"]

_MARKERS = "osD^v<>pPX*h"
_LINESTYLES = ("-", "--", "-.", ":", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1)))
BAND = "shaded band: min-max over seeds"
MAX_COLS = 3


def _secure_of(rows: list[dict[str, Any]]) -> dict[str, bool]:
    out: dict[str, bool] = {}
    for r in rows:
        out[r["aggregator"]] = out.get(r["aggregator"], True) and bool(r.get("secure_compatible", True))
    return out


def _style(aggs: list[str], secure: dict[str, bool] | None = None) -> dict[str, dict[str, Any]]:
    """Colour, marker and line style per aggregator (all three differ between neighbours); plaintext-only
    aggregators get hollow markers."""
    cmap = plt.get_cmap("tab10")
    out = {}
    for i, a in enumerate(aggs):
        c = cmap(i % 10)
        # markers shrink along the list, so a curve drawn over an equal one leaves the earlier one's rim visible
        st = {"color": c, "marker": _MARKERS[i % len(_MARKERS)], "linestyle": _LINESTYLES[i % len(_LINESTYLES)],
              "ms": max(3.0, 7.0 - 0.5 * i)}
        if secure is not None and not secure.get(a, True):
            st["markerfacecolor"] = "white"
        out[a] = st
    return out


def _label(a: str, secure: dict[str, bool]) -> str:
    return a if secure.get(a, True) else f"{a} (plaintext-only)"


def describe_study(rows: list[dict[str, Any]], meta: dict[str, Any] | None = None) -> str:
    """One line naming what the figures show: data set, model, rounds, clients, seeds, oracle, dropout."""
    meta = meta or {}
    if not rows:
        return ""
    r0 = rows[0]
    seeds = len({r.get("seed") for r in rows})
    n = meta.get("num_clients", r0.get("num_clients"))
    text = (f"{r0.get('dataset')} / {r0.get('model')} model, {r0.get('rounds')} rounds, {n} clients "
            f"({r0.get('clients_per_round')} per round), {seeds} seed{'s' if seeds != 1 else ''}, {r0.get('oracle')} oracle")
    drop = max((float(r.get("dropout_rate") or 0.0) for r in rows), default=0.0)
    if drop:
        text += f", client dropout {drop:g}"
    return text


def _grid(n_panels: int, width: float = 4.4, height: float = 3.5):
    ncols = 2 if n_panels == 4 else min(MAX_COLS, n_panels)  # four panels as 2 x 2, not 3 + 1
    nrows = math.ceil(n_panels / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols + 0.4, height * nrows + 1.2), squeeze=False)
    flat = list(axes.flat)
    for ax in flat[n_panels:]:
        ax.set_visible(False)
    return fig, flat[:n_panels]


def _finish(fig, axes, title: str, subtitle: str, note: str = "") -> Any:
    """Title and (wrapped) subtitle on top, one legend for all panels below them (never over a curve),
    then a note. Space is reserved in inches, so every figure size gets the same margins."""
    import textwrap

    handles: dict[str, Any] = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    w_in, h_in = fig.get_figwidth(), fig.get_figheight()
    sub_lines = textwrap.wrap(subtitle, width=int(w_in * 15)) if subtitle else []
    note_lines = textwrap.wrap(note, width=int(w_in * 16)) if note else []
    longest = max((len(lab) for lab in handles), default=1)
    ncol = max(1, min(len(handles), 4, int(w_in * 13 / (longest + 6))))
    legend_in = 0.2 * math.ceil(len(handles) / ncol) + 0.1 if handles else 0.0
    note_in = 0.16 * len(note_lines)
    top_in = 0.45 + 0.17 * len(sub_lines)
    fig.tight_layout(rect=(0, (0.15 + legend_in + note_in + 0.1) / h_in, 1, 1 - top_in / h_in))
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=ncol, fontsize=8, frameon=False,
                   bbox_to_anchor=(0.5, (0.05 + note_in) / h_in))
    if note_lines:
        fig.text(0.5, 0.05 / h_in, "\n".join(note_lines), ha="center", va="bottom", fontsize=7.5, style="italic")
    fig.suptitle(title, fontsize=11, y=1 - 0.08 / h_in, va="top")
    if sub_lines:
        fig.text(0.5, 1 - 0.36 / h_in, "\n".join(sub_lines), ha="center", va="top", fontsize=8.5)
    return fig


def _fit_ylim(ax, lo: float, hi: float) -> None:
    """Each panel gets its own y range (padded, within [0, 100]): with a shared axis the panels where
    every aggregator stays near the clean accuracy collapse into one unreadable line."""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return
    half = 0.54 * max(hi - lo, 8.0)  # at least 8 points tall: never magnify sub-point differences
    mid = 0.5 * (lo + hi)
    ax.set_ylim(max(0.0, mid - half), min(100.0, mid + half))


def _panel(ax, ylo: float, yhi: float, title: str, xlabel: str) -> None:
    _fit_ylim(ax, ylo, yhi)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)


def _save(fig, path: str | Path) -> Path:
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def accuracy_vs_rho_figure(rows: list[dict[str, Any]], title: str = "", meta: dict[str, Any] | None = None):
    """The figure of :func:`plot_accuracy_vs_rho` (returned open, for tests and notebooks)."""
    aggs = list(dict.fromkeys(r["aggregator"] for r in rows))
    corrs = list(dict.fromkeys(r["corruption"] for r in rows if r["corruption"] != "none")) or ["none"]
    secure = _secure_of(rows)
    st = _style(aggs, secure)
    fig, axes = _grid(len(corrs))
    rhos = sorted({float(r["rho"]) for r in rows})
    for ax, c in zip(axes, corrs):
        ylo, yhi = np.inf, -np.inf
        for a in aggs:
            by_rho: dict[float, list[float]] = defaultdict(list)
            for r in rows:
                if r["aggregator"] == a and (r["corruption"] == c or float(r["rho"]) == 0.0):
                    by_rho[float(r["rho"])].append(100 * float(r["accuracy"]))
            if not by_rho:
                continue
            xs = sorted(by_rho)
            mean = [float(np.mean(by_rho[x])) for x in xs]
            lo = [float(np.min(by_rho[x])) for x in xs]
            hi = [float(np.max(by_rho[x])) for x in xs]
            ax.plot(xs, mean, label=_label(a, secure), **st[a], lw=1.5)
            ax.fill_between(xs, lo, hi, color=st[a]["color"], alpha=0.12, lw=0)
            ylo, yhi = min(ylo, min(lo)), max(yhi, max(hi))
        ax.set_xticks(rhos)  # ticks at the levels run, never at negative rho
        pad = 0.05 * (rhos[-1] - rhos[0]) if len(rhos) > 1 else 0.05
        ax.set_xlim(rhos[0] - pad, rhos[-1] + pad)
        _panel(ax, ylo, yhi, c if c != "none" else "no corruption", "corruption level rho")
    subtitle = "; ".join(x for x in (describe_study(rows, meta), f"mean over seeds, {BAND}") if x)
    return _finish(fig, axes, title or "test accuracy vs corruption level", subtitle)


def plot_accuracy_vs_rho(rows: list[dict[str, Any]], path: str | Path, title: str = "",
                         meta: dict[str, Any] | None = None) -> Path:
    """One panel per corruption (own y range), mean over seeds, min-max over seeds shaded."""
    return _save(accuracy_vs_rho_figure(rows, title, meta), path)


def accuracy_vs_calls_figure(runs: list[dict[str, Any]], title: str = "", rows: list[dict[str, Any]] | None = None,
                             meta: dict[str, Any] | None = None):
    """The figure of :func:`plot_accuracy_vs_calls` (returned open)."""
    secure_runs = [r for r in runs if r["final"].get("secure_compatible")]
    plain = list(dict.fromkeys(r["config"]["aggregator"] for r in runs if not r["final"].get("secure_compatible")))
    rmax = max((r["config"]["rho"] for r in runs), default=0.0)
    settings = [("none", 0.0)] + [(c, rmax) for c in dict.fromkeys(r["config"]["corruption"] for r in runs) if c != "none"]
    aggs = list(dict.fromkeys(r["config"]["aggregator"] for r in runs))
    st = _style(aggs)  # the same colours as the other figures
    desc = describe_study(rows, meta) if rows else ""
    if not secure_runs:  # only plaintext-only aggregators: say so instead of drawing empty axes
        fig, axes = _grid(1, width=6.0, height=2.0)
        axes[0].axis("off")
        axes[0].text(0.5, 0.5, "no secure-compatible aggregator in this study; not drawn (plaintext-only, no "
                     f"secure-average call): {', '.join(plain)}", ha="center", va="center", wrap=True, fontsize=9)
        return _finish(fig, axes, title or "test accuracy vs secure-average calls", desc)
    fig, axes = _grid(len(settings))
    for ax, (c, rho) in zip(axes, settings):
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
            ax.plot(xs, ys.mean(0), label=a, **st[a], lw=1.5)
            ax.fill_between(xs, ys.min(0), ys.max(0), color=st[a]["color"], alpha=0.12, lw=0)
            ylo, yhi = min(ylo, float(ys.min())), max(yhi, float(ys.max()))
        _panel(ax, ylo, yhi, "no corruption" if c == "none" else f"{c} (rho={rho:g})", "cumulative secure-average calls")
    note = (f"not drawn: {', '.join(plain)} (plaintext-only: they see every update and make no secure-average call)"
            if plain else "")
    subtitle = "; ".join(x for x in (desc, f"mean over seeds, {BAND}") if x)
    return _finish(fig, axes, title or "test accuracy vs secure-average calls", subtitle, note)


def plot_accuracy_vs_calls(runs: list[dict[str, Any]], path: str | Path, title: str = "",
                           rows: list[dict[str, Any]] | None = None, meta: dict[str, Any] | None = None) -> Path:
    """``runs``: the ``runs`` list of results.json (config + history); ``rows`` name the study."""
    return _save(accuracy_vs_calls_figure(runs, title, rows, meta), path)


def _kib(b: float) -> str:
    return f"{b / 1024:.1f} KiB" if b >= 1024 else f"{b:.0f} B"


def _worst_at(rows_of_one: list[dict[str, Any]], rho: float) -> float:
    """Accuracy (%) of one aggregator at ``rho`` under its worst corruption (mean over seeds); over every
    row when none is at ``rho``."""
    at = defaultdict(list)
    for r in rows_of_one:
        if float(r["rho"]) == rho:
            at[r["corruption"]].append(100 * float(r["accuracy"]))
    if not at:
        at["none"] = [100 * float(r["accuracy"]) for r in rows_of_one]
    return min(float(np.mean(v)) for v in at.values())


def privacy_vs_robustness_figure(rows: list[dict[str, Any]], title: str = "", meta: dict[str, Any] | None = None):
    """The figure of :func:`plot_privacy_vs_robustness` (returned open)."""
    aggs = list(dict.fromkeys(r["aggregator"] for r in rows))
    secure_of = _secure_of(rows)
    st = _style(aggs, secure_of)
    rmax = max((float(r["rho"]) for r in rows), default=0.0)
    fig, ax = plt.subplots(figsize=(7.2, 4.6 + 0.2 * len(aggs)))  # room for a one-column legend
    for a in aggs:
        ra = [r for r in rows if r["aggregator"] == a]
        worst = _worst_at(ra, rmax)
        up = float(np.mean([float(r.get("bytes_up_per_client_per_round") or r["bytes_per_client_per_round"]) for r in ra]))
        down = float(np.mean([float(r.get("bytes_down_per_client_per_round") or 0.0) for r in ra]))
        secure = secure_of[a]
        s = max(float(r["max_effective_weight"]) for r in ra)
        ax.scatter([up / 1024], [worst], s=80, marker=st[a]["marker"], edgecolors=st[a]["color"],  # noqa: E501
                   facecolors=st[a]["color"] if secure else "none", linewidths=1.6,
                   label=f"{a} ({'secure' if secure else 'plaintext-only'}, s={s:.2f}, down {_kib(down)})")
        ax.annotate(a, (up / 1024, worst), textcoords="offset points", xytext=(6, 4), fontsize=7)
    ax.set_xscale("log")
    from matplotlib.ticker import FuncFormatter, LogLocator

    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 3.0, 5.0)))
    ax.xaxis.set_minor_locator(LogLocator(base=10, subs=(4.0, 6.0, 7.0, 8.0, 9.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _pos: ""))
    lo, hi = ax.get_xlim()
    ax.set_xlim(lo / 1.2, hi * 1.2)
    ax.set_xlabel("upload bytes per client per round (KiB, log scale)")
    corr_note = "worst corruption" if rmax > 0 else "no corruption"
    ax.set_ylabel(f"accuracy at rho={rmax:g}, {corr_note} (%)")
    ax.grid(alpha=0.3, which="both")
    desc = describe_study(rows, meta)
    subtitle = "; ".join(x for x in (desc, "mean over seeds; hollow: plaintext-only (updates revealed to the server)") if x)
    return _finish(fig, [ax], title or "privacy cost vs robustness", subtitle)


def plot_privacy_vs_robustness(rows: list[dict[str, Any]], path: str | Path, title: str = "",
                               meta: dict[str, Any] | None = None) -> Path:
    return _save(privacy_vs_robustness_figure(rows, title, meta), path)


def leakage_vs_robustness_figure(rows: list[dict[str, Any]], leakage: dict[str, Any], title: str = "",
                                 meta: dict[str, Any] | None = None):
    """Measured privacy cost (reconstruction leakage, ``rfa leakage``'s attack at the study's m) against
    robustness (accuracy at the largest rho under the worst corruption), one point per aggregator."""
    aggs = [a for a in dict.fromkeys(r["aggregator"] for r in rows) if a in leakage]
    secure_of = _secure_of(rows)
    st = _style(aggs, secure_of)
    rmax = max((float(r["rho"]) for r in rows), default=0.0)
    fig, ax = plt.subplots(figsize=(7.2, 4.6 + 0.2 * len(aggs)))
    for a in aggs:
        ra = [r for r in rows if r["aggregator"] == a]
        worst = _worst_at(ra, rmax)
        lk = leakage[a]
        secure = secure_of[a]
        ax.scatter([lk["leakage"]], [worst], s=80, marker=st[a]["marker"], edgecolors=st[a]["color"],
                   facecolors=st[a]["color"] if secure else "none", linewidths=1.6,
                   label=f"{a} ({'secure' if secure else 'plaintext-only'}, target's s={lk['max_s']:.2f})")
        ax.annotate(a, (lk["leakage"], worst), textcoords="offset points", xytext=(6, 4), fontsize=7)
    ax.axvline(0.0, color="0.5", lw=0.8, ls="--")
    m = next(iter(leakage.values()))["m"] if leakage else "?"
    trials = next(iter(leakage.values()))["trials"] if leakage else "?"
    ax.set_xlabel(f"measured leakage: best SSIM of the server's reconstruction minus calibration (m={m}, {trials} trials)")
    corr_note = "worst corruption" if rmax > 0 else "no corruption"
    ax.set_ylabel(f"accuracy at rho={rmax:g}, {corr_note} (%)")
    ax.grid(alpha=0.3)
    desc = describe_study(rows, meta)
    subtitle = "; ".join(x for x in (desc, "hollow: plaintext-only (updates revealed); leakage from one local step "
                                           "of batch 8 in the first round") if x)
    return _finish(fig, [ax], title or "measured privacy cost vs robustness", subtitle)


def plot_all(results_json: dict[str, Any], out_dir: str | Path, prefix: str = "") -> list[Path]:
    """The plots from a loaded ``results.json`` into ``out_dir`` (three, plus the measured-leakage figure
    when the study measured leakage)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows, runs, meta = results_json["rows"], results_json["runs"], results_json.get("meta", {})
    paths = [
        plot_accuracy_vs_rho(rows, out / f"{prefix}accuracy_vs_rho.png", meta=meta),
        plot_accuracy_vs_calls(runs, out / f"{prefix}accuracy_vs_calls.png", rows=rows, meta=meta),
        plot_privacy_vs_robustness(rows, out / f"{prefix}privacy_vs_robustness.png", meta=meta),
    ]
    if meta.get("leakage"):
        paths.append(_save(leakage_vs_robustness_figure(rows, meta["leakage"], meta=meta),
                           out / f"{prefix}leakage_vs_robustness.png"))
    return paths


def plot_robustness_heatmap(mx: dict[str, Any], path: str | Path, title: str = "") -> Path:
    """Heat map of the robustness matrix (:func:`rfa.fl.robustness.matrix`): one panel per rho, rows =
    aggregators (``*`` and bold = secure-compatible), columns = the clean run, every attack and the
    worst cell; colour and number = mean test accuracy (%), a second line ``bd`` = backdoor accuracy
    (%) where the attack plants one."""
    aggs, attacks, rhos = mx["aggregators"], mx["attacks"], mx["rhos"]
    cols = ["clean"] + attacks + ["worst"]
    fig, axes = plt.subplots(len(rhos), 1, figsize=(max(6.0, 2.2 + 0.62 * len(cols)), 0.6 + (0.34 * len(aggs) + 1.3) * len(rhos)),
                             squeeze=False, layout="constrained")
    im = None
    for ax, rho in zip(axes[:, 0], rhos):
        grid = np.full((len(aggs), len(cols)), np.nan)
        for i, a in enumerate(aggs):
            grid[i, 0] = mx["clean"][a]
            for j, c in enumerate(attacks, start=1):
                grid[i, j] = mx["acc"].get((a, c, rho), np.nan)
            grid[i, -1] = mx["worst"].get((a, rho), np.nan)
        im = ax.imshow(100 * grid, cmap="RdYlGn", vmin=0, vmax=100, aspect="auto")
        for i, a in enumerate(aggs):
            for j, c in enumerate(cols):
                v = grid[i, j]
                if np.isnan(v):
                    continue
                txt = f"{100 * v:.0f}"
                if (a, c, rho) in mx["backdoor"]:
                    txt += f"\nbd {100 * mx['backdoor'][(a, c, rho)]:.0f}"
                ax.text(j, i, txt, ha="center", va="center", fontsize=6.5 if "\n" in txt else 7.5,
                        color="black" if 25 < 100 * v < 85 else "white" if 100 * v <= 25 else "black")
        ax.axvline(0.5, color="black", lw=0.8)
        ax.axvline(len(cols) - 1.5, color="black", lw=0.8)
        ax.set_xticks(range(len(cols)))
        ax.set_xticklabels(cols, rotation=40, ha="right", fontsize=7.5)
        ax.set_yticks(range(len(aggs)))
        ax.set_yticklabels([("* " if mx["secure"][a] else "") + a for a in aggs], fontsize=8)
        for lab, a in zip(ax.get_yticklabels(), aggs):
            if mx["secure"][a]:
                lab.set_fontweight("bold")
        ax.set_title(f"rho = {rho:g} (clean column: rho = 0)", fontsize=9)
    if im is not None:
        fig.colorbar(im, ax=axes[:, 0].tolist(), fraction=0.03, pad=0.01, label="test accuracy (%)")
    fig.suptitle(title or "test accuracy (%) per aggregator and attack  (* bold = secure-compatible)", fontsize=9)
    return _save(fig, path)
