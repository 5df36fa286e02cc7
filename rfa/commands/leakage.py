"""``rfa leakage``: how much of a client's training data the server reconstructs, against ``s``.

Plays the study of :mod:`rfa.fl.leakage` on the embedded MNIST subset: for each aggregator and each
number of clients per round ``m``, rounds with and without the target client, the analytic attack on
every quantity the server learned, and the leakage (best SSIM/PSNR minus the calibration round's).
Each finished (aggregator, m, trial) is saved as it finishes; Ctrl-C stops cleanly and ``--resume DIR``
finishes the study. Writes ``leakage.json`` (one row per revealed quantity), ``leakage_table.md``,
``leakage_vs_s.png`` and ``gallery.png``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from rfa import jobs
from rfa.commands import _common as common

NAME = "leakage"
COMMAND = "rfa leakage"
HELP = "measure the server's reconstruction of a client's training examples against its effective weight s"

QUICK = dict(ms=(2, 5, 20), trials=2)
CSV_COLUMNS = ("aggregator", "m", "trial", "calls", "max_s", "ssim", "psnr", "leakage", "leakage_psnr",
               "label_recall", "calibration_ssim")
OUTPUT_FILES = ("leakage.json", "leakage_table.md", "leakage_vs_s.png", "gallery.png")


def _aggregator_names() -> list[str]:
    from rfa import aggregators as _a

    return list(_a.NAMES)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from rfa.fl.leakage import DEFAULT_AGGREGATORS, DEFAULT_MS, LeakageConfig

    d = LeakageConfig()
    p.add_argument("--config", default=None, help="a JSON or TOML file whose keys are these flags' names")
    p.add_argument("--quick", action="store_true", help=f"a short study: m in {list(QUICK['ms'])}, {QUICK['trials']} trials")
    p.add_argument("--aggregators", type=jobs.csv_arg(choices=_aggregator_names), default=None,
                   help=f"comma-separated (default {','.join(DEFAULT_AGGREGATORS)})")
    p.add_argument("--ms", type=jobs.csv_arg(jobs.int_arg(2)), default=None,
                   help=f"clients per round, each >= 2 (default {','.join(map(str, DEFAULT_MS))})")
    p.add_argument("--trials", type=jobs.int_arg(1), default=None, help=f"rounds per m (default {d.trials})")
    p.add_argument("--oracle", choices=("modular", "secagg", "ideal"), default=d.oracle,
                   help=f"secure average oracle (default {d.oracle})")
    p.add_argument("--local-steps", type=jobs.int_arg(1), default=d.local_steps, help=f"default {d.local_steps}")
    p.add_argument("--batch-size", type=jobs.int_arg(1), default=d.batch_size, help=f"default {d.batch_size}")
    p.add_argument("--lr", type=jobs.float_arg(0, None, lo_open=True), default=d.lr, help=f"default {d.lr}")
    p.add_argument("--examples-per-client", type=jobs.int_arg(1), default=None,
                   help="keep only each client's first N examples (default: all)")
    p.add_argument("--target", type=jobs.int_arg(0), default=None,
                   help="the attacked client (default: the one with the most examples)")
    p.add_argument("--seed", type=jobs.int_arg(0), default=d.seed, help=f"default {d.seed}")
    p.add_argument("--model", choices=("linear", "convnet"), default=d.model,
                   help="linear (the analytic attack, default) or convnet (opt-in gradient matching of Geiping et al.; "
                        "slow on a CPU; needs --examples-per-client 1 or 2)")
    p.add_argument("--attack-iterations", type=jobs.int_arg(1), default=d.attack_iterations,
                   help=f"the ConvNet attack's Adam iterations per revealed quantity (default {d.attack_iterations})")
    p.add_argument("--out", default=None, help="output folder (default runs/leakage-<timestamp>)")
    p.add_argument("--resume", default=None, metavar="DIR", help="finish an interrupted study in DIR")
    p.add_argument("--overwrite", action="store_true", help="replace the results in a non-empty --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _config(args: argparse.Namespace):
    from rfa.fl.leakage import DEFAULT_AGGREGATORS, DEFAULT_MS, LeakageConfig

    ms = tuple(args.ms) if args.ms else (QUICK["ms"] if args.quick else DEFAULT_MS)
    trials = args.trials if args.trials is not None else (QUICK["trials"] if args.quick else LeakageConfig().trials)
    aggs = tuple(args.aggregators) if args.aggregators else DEFAULT_AGGREGATORS
    cfg = LeakageConfig(aggregators=aggs, ms=ms, trials=trials, oracle=args.oracle, local_steps=args.local_steps,
                        batch_size=args.batch_size, lr=args.lr, examples_per_client=args.examples_per_client,
                        target=args.target, seed=args.seed, model=args.model,
                        attack_iterations=args.attack_iterations)
    try:
        cfg.validate()
    except Exception as exc:  # ConfigError / InvalidInput from the registries
        raise jobs.UsageError(str(exc)) from None
    return cfg


def run(args: argparse.Namespace) -> int:
    return jobs.main_wrapper(COMMAND, lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    import torch

    from rfa.fl import leakage as study

    torch.set_num_threads(1)
    out = None
    store = None
    todo: list = []
    try:
        with jobs.handle_signals():
            if args.resume:
                out, saved = common.resume_manifest(args, NAME, COMMAND)
                cfg = study.LeakageConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved["config"].items()})
            else:
                cfg = _config(args)
                out = jobs.prepare_out_dir(args.out, NAME, overwrite=args.overwrite, owned=OUTPUT_FILES)
            store = jobs.RunStore(out, CSV_COLUMNS, resume=bool(args.resume),
                                  manifest={"command": COMMAND, "config": dataclasses.asdict(cfg)})
            units = study.units(cfg)
            todo = [u for u in units if u.key(cfg) not in store]
            print(f"{COMMAND}: {len(cfg.aggregators)} aggregators x m in {list(cfg.ms)} x {cfg.trials} trials "
                  f"= {len(units)} rounds (each with its calibration twin), oracle {cfg.oracle}")
            print(f"  data {cfg.dataset} ({cfg.partition}, {cfg.num_clients} clients), {cfg.model} model, "
                  f"{cfg.local_steps} local step(s) of batch {cfg.batch_size}, lr {cfg.lr}; output: {out}"
                  + (f" (resuming: {len(units) - len(todo)} saved)" if args.resume else ""))
            bar = None
            if not args.no_progress and sys.stderr.isatty():
                from tqdm import tqdm

                bar = tqdm(total=len(units), initial=len(units) - len(todo), desc=COMMAND, file=sys.stderr)
            for u in todo:
                rows = study.run_unit(cfg, u)
                best = max(rows, key=lambda r: r["ssim"])
                store.append(u.key(cfg), {
                    "aggregator": u.aggregator, "m": u.m, "trial": u.trial, "calls": len(rows),
                    "max_s": max(r["s"] for r in rows), "ssim": round(best["ssim"], 6), "psnr": round(best["psnr"], 4),
                    "leakage": round(best["leakage"], 6), "leakage_psnr": round(best["leakage_psnr"], 4),
                    "label_recall": best["label_recall"], "calibration_ssim": round(best["calibration_ssim"], 6),
                }, {"rows": rows})
                if bar is not None:
                    bar.update(1)
            if bar is not None:
                bar.close()
            rows = [r for rec in store.records() for r in rec["record"]["rows"]]
            paths = write_outputs(cfg, rows, out)
    except jobs.Interrupted as exc:
        total = len(study.units(cfg)) if store is not None else 0
        print(jobs.interrupted_message(COMMAND, exc, saved=len(store) if store is not None else 0, total=total,
                                       out=out or "(nothing)"), file=sys.stderr)
        return jobs.EXIT_INTERRUPTED
    print()
    print(paths["table"].read_text().rstrip())
    for k in ("json", "figure", "gallery"):
        print(f"  {k}: {paths[k]}")
    return 0


def write_outputs(cfg, rows: list[dict], out: Path) -> dict[str, Path]:
    """leakage.json, the summary table, the leakage-vs-s figure and the gallery, from the rows alone."""
    from rfa.fl import leakage as study

    out = Path(out)
    summary = study.summarise(rows)
    jpath = jobs.atomic_write_text(out / "leakage.json", json.dumps(
        {"config": dataclasses.asdict(cfg), "rows": rows, "summary": summary}, indent=1, default=list) + "\n")
    lines = ["| aggregator | m | trials | calls | max s | best SSIM | leakage (SSIM) | leakage (PSNR dB) | label recall |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s in summary:
        lines.append(f"| {s['aggregator']} | {s['m']} | {s['trials']} | {s['calls']} | {s['max_s']:.3f} | {s['ssim']:.3f} | "
                     f"{s['leakage']:+.3f} | {s['leakage_psnr']:+.2f} | {s['label_recall']:.2f} |")
    tpath = jobs.atomic_write_text(out / "leakage_table.md", "\n".join(lines) + "\n")
    fig = _figure(cfg, rows, out / "leakage_vs_s.png")
    gal = _gallery(cfg, summary, out / "gallery.png")
    return {"json": jpath, "table": tpath, "figure": fig, "gallery": gal}


def _caption(cfg) -> str:
    return (f"{cfg.dataset}, {cfg.model} model, {cfg.num_clients} clients ({cfg.partition}), {cfg.local_steps} local step(s) "
            f"of batch {cfg.batch_size}, first round, {cfg.trials} trial(s) per m, oracle {cfg.oracle}, seed {cfg.seed}")


def _figure(cfg, rows: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), constrained_layout=True)
    markers = "osD^vP*Xh<>"
    names = sorted({r["aggregator"] for r in rows})
    for i, name in enumerate(names):
        rs = [r for r in rows if r["aggregator"] == name]
        for ax, key, lab in ((axes[0], "leakage", "leakage: best SSIM minus calibration"),
                             (axes[1], "leakage_psnr", "leakage: best PSNR minus calibration (dB)")):
            ax.scatter([r["s"] for r in rs], [r[key] for r in rs], marker=markers[i % len(markers)], s=28, alpha=0.75,
                       label=name)
            ax.set_ylabel(lab)
    for ax in axes:
        ax.axhline(0.0, color="0.5", lw=0.8, ls="--")
        ax.set_xscale("log")
        ax.set_xlabel("s: the target's effective weight in the revealed quantity (log scale)")
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=8, title="aggregator (plaintext rules: s = 1)", title_fontsize=8)
    fig.suptitle("What the server reconstructs of one client's examples, per revealed quantity\n" + _caption(cfg), fontsize=9)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def _gallery(cfg, summary: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rfa.fl import leakage as study

    ms = sorted({s["m"] for s in summary})
    aggs = sorted({s["aggregator"] for s in summary})
    picks = [(a, m) for a in aggs for m in (ms[0], ms[-1])]
    picks = list(dict.fromkeys(picks))
    shown = study.gallery(cfg, picks)
    cols = len(shown)
    fig, axes = plt.subplots(2, cols, figsize=(1.45 * cols + 0.6, 3.9), constrained_layout=True, squeeze=False)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    for j, (label, rec, example, ssim) in enumerate(shown):
        axes[0, j].imshow(example, cmap="gray", vmin=0, vmax=1)
        axes[0, j].set_title(label.replace(", ", "\n"), fontsize=6.5)
        axes[1, j].imshow(rec, cmap="gray", vmin=0, vmax=1)
        axes[1, j].set_xlabel(f"SSIM {ssim:.2f}", fontsize=7)
    axes[0, 0].set_ylabel("target's\nexample", fontsize=7)
    axes[1, 0].set_ylabel("server's\nreconstruction", fontsize=7)
    fig.suptitle("The target's example closest to the server's best reconstruction, from the revealed quantity that "
                 "weighs the target most (trial 0)\n" + _caption(cfg), fontsize=7)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path
