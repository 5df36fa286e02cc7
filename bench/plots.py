"""Plots of the suite's JSON results (matplotlib, Agg backend): ``bench_*.png``."""

from __future__ import annotations

import os
from typing import Any


def _plt():  # noqa: ANN202
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_all(results: dict[str, Any], outdir: str) -> list[str]:
    """Write every plot the results allow into ``outdir``; return the paths written."""
    os.makedirs(outdir, exist_ok=True)
    written = []
    for fn in (_time_vs_nd, _ratio_to_floor, _flower, _expansion):
        try:
            p = fn(results, outdir)
        except Exception as exc:  # noqa: BLE001 - a plot must never sink the suite
            print(f"  plot {fn.__name__} failed: {exc!r}")
            p = None
        if p:
            written.append(p)
    return written


def _time_vs_nd(results: dict[str, Any], outdir: str) -> str | None:
    rows = results.get("protocol_phases", {}).get("engine", [])
    rows = [r for r in rows if r["variant"] == "honest-but-curious" and r["dropout"] == 0.0]
    if not rows:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for graph, ls in (("complete", "-"), ("secagg+", "--")):
        for n in sorted({r["n"] for r in rows}):
            sel = sorted((r for r in rows if r["n"] == n and r["graph"] == graph), key=lambda r: r["d"])
            if sel:
                axes[0].plot([r["d"] for r in sel], [r["wall_s"] for r in sel], ls, marker="o", label=f"n={n} {graph}")
        for d in sorted({r["d"] for r in rows}):
            sel = sorted((r for r in rows if r["d"] == d and r["graph"] == graph), key=lambda r: r["n"])
            if len(sel) > 1:
                axes[1].plot([r["n"] for r in sel], [r["wall_s"] for r in sel], ls, marker="o", label=f"d={d:.0e} {graph}")
    for ax, xl in zip(axes, ("d (vector length)", "n (clients)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(xl)
        ax.set_ylabel("full round wall time (s)")
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6)
    fig.suptitle("Faithful SecAgg / SecAgg+ round, all clients and the server emulated on one core (no dropouts)")
    fig.tight_layout()
    p = os.path.join(outdir, "bench_time_vs_n_d.png")
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return p


def _ratio_to_floor(results: dict[str, Any], outdir: str) -> str | None:
    pp = results.get("protocol_phases", {})
    prim = pp.get("mask_primitive", [])
    eng = [r for r in pp.get("engine", []) if r["variant"] == "honest-but-curious"]
    if not prim and not eng:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for k in sorted({r["k"] for r in prim}):
        sel = sorted((r for r in prim if r["k"] == k), key=lambda r: r["d"])
        axes[0].plot([r["d"] for r in sel], [r["ratio"] for r in sel], marker="o", label=f"prg.add_masks (client), k+1={k + 1} masks")
    for n in sorted({r["n"] for r in eng}):
        sel = sorted((r for r in eng if r["n"] == n and r["dropout"] == 0.0 and r["graph"] == "secagg+"), key=lambda r: r["d"])
        if sel:
            axes[0].plot([r["d"] for r in sel], [r["client_masking_ratio"] for r in sel], "--", marker="s", label=f"engine masked-input, n={n}, SecAgg+")
    for p_drop in (0.1, 0.3):
        for graph in ("complete", "secagg+"):
            sel = sorted((r for r in eng if r["dropout"] == p_drop and r["graph"] == graph and r["n"] >= 100), key=lambda r: (r["d"], r["n"]))
            if sel:
                axes[1].plot([r["d"] for r in sel], [r["server_unmasking_ratio"] for r in sel], marker="o", ls="-" if graph == "complete" else "--",
                             label=f"{graph}, {int(p_drop * 100)}% dropouts, n in {sorted({r['n'] for r in sel})}")
    axes[0].axhline(1.6, color="k", lw=0.8, ls=":", label="goal 1.6x")
    axes[1].axhline(1.5, color="k", lw=0.8, ls=":", label="goal 1.5x")
    axes[0].set_title("client masking / AES-CTR keystream floor")
    axes[1].set_title("server unmasking / AES-CTR keystream floor")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("d")
        ax.set_ylabel("ratio (median time / median floor)")
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6)
    fig.tight_layout()
    p = os.path.join(outdir, "bench_ratio_to_floor.png")
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return p


def measured_flower_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The Flower comparison rows measured in this run, both sides (the only rows the plot draws: a row
    kept from an earlier run, quoted from the reference results or without a Flower figure has no bar)."""
    from bench.flower import MEASURED

    return [r for r in results.get("flower", {}).get("rows", [])
            if r.get("source") == MEASURED and r.get("speedup") and r.get("flower_s") and r.get("ours_s")]


def _flower(results: dict[str, Any], outdir: str) -> str | None:
    fig = flower_figure(results)
    if fig is None:
        return None
    p = os.path.join(outdir, "bench_vs_flower.png")
    fig.savefig(p, dpi=110)
    _plt().close(fig)
    return p


def flower_figure(results: dict[str, Any]):  # noqa: ANN201 - a matplotlib Figure, or None
    """Bars of the Flower comparison, one group per row measured in this run (:func:`measured_flower_rows`);
    None when no row was measured (then no ``bench_vs_flower.png`` is written)."""
    rows = measured_flower_rows(results)
    if not rows:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 4))
    labels = [f"n={r['n']}, d={r['d']:.0e}\n{r['graph'].split(' (')[0]}" for r in rows]
    xs = range(len(rows))
    w2 = any(r.get("ours_w2_s") for r in rows)
    wd = 0.27 if w2 else 0.4
    ax.bar([x - wd for x in xs] if w2 else [x - 0.2 for x in xs], [r["flower_s"] for r in rows], width=wd, label="Flower 1.42 SecAgg+ (clients serial)")
    ax.bar(list(xs) if w2 else [x + 0.2 for x in xs], [r["ours_s"] for r in rows], width=wd, label="ours, serial (one process)")
    if w2:
        w2x = [(x, r["ours_w2_s"]) for x, r in zip(xs, rows) if r.get("ours_w2_s")]  # no bar where not measured
        ax.bar([x + wd for x, _ in w2x], [v for _, v in w2x], width=wd, label="ours, workers=2 (two processes)")
    for x, r in zip(xs, rows):
        txt = f"{r['speedup']:.0f}x" + (f" / {r['speedup_w2']:.0f}x" if r.get("speedup_w2") else "")
        ax.text(x, max(r["flower_s"], r["ours_s"]) * 1.15, txt, ha="center", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylim(top=max(r["flower_s"] for r in rows) * 30)  # room for the labels above the legend
    ax.set_xticks(list(xs))
    ax.set_xticklabels(labels, fontsize=7)
    ax.set_ylabel("full round wall time (s)")
    ax.set_title("Full SecAgg+ round: ours vs Flower, both measured in this run (same n, d, t, graph, inputs)"
                 + ("\nspeedup: serial / workers=2" if w2 else ""), fontsize=9)
    ax.legend(fontsize=7, loc="upper left", ncol=3)
    fig.tight_layout()
    return fig


def _expansion(results: dict[str, Any], outdir: str) -> str | None:
    rows = [r for r in results.get("communication", {}).get("model", []) if r["dropout"] == 0.0]
    if not rows:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for graph, ls in (("complete", "-"), ("secagg+", "--")):
        for n in sorted({r["n"] for r in rows}):
            sel = sorted((r for r in rows if r["n"] == n and r["graph"] == graph), key=lambda r: r["d"])
            if sel:
                ax.plot([r["d"] for r in sel], [r["expansion_traffic"] for r in sel], ls, marker="o", label=f"n={n} {graph}")
    pap = sorted((r for r in rows if r["graph"] == "complete" and r["paper_expansion"] and r["n"] == max(x["n"] for x in rows)), key=lambda r: r["d"])
    if pap:
        ax.plot([r["d"] for r in pap], [r["paper_expansion"] for r in pap], ":", color="k", label=f"paper model, n={pap[0]['n']}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("d")
    ax.set_ylabel("(upload + download) per client / 16-bit input")
    ax.set_title("Communication expansion (our wire format, 16-bit inputs)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    p = os.path.join(outdir, "bench_expansion.png")
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return p
