"""``rfa robustness``: the robustness matrix, aggregator x attack at rho in {0.1, 0.25}.

The same task, runner and flags as ``rfa compare`` (the quick MNIST-5k default, modular oracle), with
every aggregator of :data:`rfa.aggregators.NAMES` against the attacks of
:data:`rfa.fl.robustness.DEFAULT_ATTACKS` (the paper's corruptions and the literature's strongest
attacks), plus each aggregator's clean run. Writes ``results.csv`` / ``results.json`` (one row per
run, as ``rfa compare``), ``matrix.md`` (one table per rho, secure-compatible aggregators marked) and
``robustness_heatmap.png``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from . import compare as _compare

NAME = "robustness"
HELP = "robustness matrix: every aggregator x attack at rho 0.1 and 0.25 (heat-map table and figure)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    _compare.add_arguments(p)
    p.add_argument("--attacks", dest="corruptions", type=_compare._csv, default=None,
                   help="comma list of corruptions (default: the matrix's 16 attacks; same as --corruptions)")
    p.description = __doc__


def _defaults(args: argparse.Namespace) -> argparse.Namespace:
    from rfa.aggregators import NAMES
    from rfa.fl.robustness import DEFAULT_ATTACKS, DEFAULT_RHOS

    args = argparse.Namespace(**vars(args))
    args.aggregators = args.aggregators or list(NAMES)
    args.corruptions = args.corruptions or list(DEFAULT_ATTACKS)
    rhos = list(args.rhos) if args.rhos is not None else list(DEFAULT_RHOS)
    args.rhos = sorted(set([0.0] + [float(r) for r in rhos]))  # the clean run is every row's reference
    if args.seeds is None:
        args.seeds = 3 if args.full else 2
    return args


def run(args: argparse.Namespace) -> int:
    from secagg.errors import SecAggError

    from rfa.fl import experiments as ex
    from rfa.fl import robustness as rb
    from rfa.fl.data import DataUnavailable

    t0 = time.perf_counter()
    import os

    import torch

    args = _defaults(args)
    on_cuda = args.device.startswith("cuda") or (args.device == "auto" and torch.cuda.is_available())
    jobs = args.jobs if args.jobs is not None else (1 if on_cuda else max(1, min(4, os.cpu_count() or 1)))
    if not on_cuda:
        torch.set_num_threads(1)
    try:
        if args.oracle == "auto":
            raise ex.InvalidInput("rfa robustness: choose an oracle (modular, ideal or secagg); auto is machine-dependent")
        sweep = _compare.build_sweep(args)
        configs = [c.replace(oracle=args.oracle) for c in ex.expand(sweep)]
        from rfa.fl.loop import build_data, make_aggregator, resolve_device

        resolve_device(sweep.base.device)
        seen: set[str] = set()
        for c in configs:
            c.validate()
            key = json.dumps([c.aggregator, c.aggregator_params], sort_keys=True, default=str)
            if key not in seen:
                seen.add(key)
                make_aggregator(c.aggregator, **c.aggregator_params)
        data = build_data(sweep.base)
        if sweep.base.clients_per_round > data.num_clients:
            raise ex.InvalidInput(f"--clients-per-round {sweep.base.clients_per_round} exceeds the {data.num_clients} clients")
        out = Path(args.out) if args.out else Path("runs") / time.strftime("robustness-%Y%m%d-%H%M%S", time.gmtime())
        out.mkdir(parents=True, exist_ok=True)
    except (SecAggError, DataUnavailable, ValueError, OSError) as exc:
        print(f"rfa robustness: {exc}", file=sys.stderr)
        return 2
    b = sweep.base
    print(f"rfa robustness: {len(configs)} runs ({len(sweep.aggregators)} aggregators x {len(sweep.corruptions)} attacks x "
          f"rho {[r for r in sweep.rhos if r > 0]} x {len(sweep.seeds)} seeds, + clean runs)")
    print(f"  data {b.dataset}, model {b.model}, {b.rounds} rounds, m={b.clients_per_round}, oracle {args.oracle}, "
          f"{jobs} worker process(es)")
    try:
        results = ex.run_sweep(configs, progress=not args.no_progress, jobs=jobs)
    except (SecAggError, DataUnavailable, ValueError) as exc:
        print(f"rfa robustness: {exc}", file=sys.stderr)
        return 2
    argv = _compare._argv_of(args)
    meta = {"command": "rfa robustness " + argv, "aggregators": list(sweep.aggregators), "attacks": list(sweep.corruptions),
            "rhos": list(sweep.rhos), "seeds": list(sweep.seeds), "base_config": b.replace(oracle=args.oracle).to_dict(),
            "wall_time_s": time.perf_counter() - t0, "jobs": jobs}
    paths = ex.write_results(out, results, meta=meta)
    rows = json.loads(paths["json"].read_text())["rows"]
    mx = rb.matrix(rows)
    text = "\n\n".join(rb.format_matrix(mx, rho) for rho in mx["rhos"])
    (out / "matrix.md").write_text(text + "\n")
    print()
    print(text)
    print()
    if not args.no_plots:
        from rfa.fl.plots import plot_robustness_heatmap

        print(f"  plot: {plot_robustness_heatmap(mx, out / 'robustness_heatmap.png')}")
    print(f"  results: {paths['csv']} and {paths['json']}; matrix: {out / 'matrix.md'}")
    print(f"  wall time: {time.perf_counter() - t0:.1f} s")
    return 0
