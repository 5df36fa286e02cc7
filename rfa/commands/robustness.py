"""``rfa robustness``: the robustness matrix, aggregator x attack at rho in {0.1, 0.25}.

The same task, runner and flags as ``rfa compare`` (the quick MNIST-5k default, modular oracle), with
every aggregator of :data:`rfa.aggregators.NAMES` against the attacks of
:data:`rfa.fl.robustness.DEFAULT_ATTACKS` (the paper's corruptions and the literature's strongest
attacks), plus each aggregator's clean run. Writes ``results.csv`` / ``results.json`` (one row per
run, as ``rfa compare``), ``matrix.md`` (one table per rho, secure-compatible aggregators marked) and
``robustness_heatmap.png``. Every finished run is saved as it finishes (``records.jsonl``), so an
interrupted matrix continues with ``--resume DIR``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from . import _common
from . import compare as _compare

NAME = "robustness"
HELP = "robustness matrix: every aggregator x attack at rho 0.1 and 0.25 (heat-map table and figure)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    _compare.add_arguments(p)
    p.add_argument("--attacks", dest="corruptions", type=lambda s: [x.strip() for x in s.split(",") if x.strip()], default=None,
                   help="comma list of corruptions (default: the matrix's 16 attacks; same as --corruptions)")
    have = {o for a in p._actions for o in a.option_strings}
    if "--resume" not in have:
        p.add_argument("--resume", default=None, metavar="DIR",
                       help="continue (or extend) the matrix in DIR: its saved flags, changed by any flag given now; "
                            "finished runs whose configuration is unchanged are kept")
    if "--overwrite" not in have:
        p.add_argument("--overwrite", action="store_true", help="replace the results in a non-empty --out folder")
    p.description = __doc__


OUTPUTS = ("results.csv", "results.json", "matrix.md", "robustness_heatmap.png")


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
    from rfa import jobs as J

    return J.main_wrapper("rfa robustness", lambda: _run(args))


def _parser_defaults() -> dict:
    p = argparse.ArgumentParser(add_help=False)
    add_arguments(p)
    return vars(p.parse_args([]))


def run_key(cfg) -> str:
    """The run store's key of one configuration: the hash of the config and of the aggregator and
    corruption objects it builds (their attributes), so that a run is re-done when a default of
    either class changes, not only when the configuration does."""
    from rfa import jobs as J
    from rfa.fl.attacks import make_corruption
    from rfa.fl.loop import make_aggregator

    def state(obj) -> dict:
        return {k: repr(v) for k, v in sorted(vars(obj).items()) if not k.startswith("_")}

    agg = make_aggregator(cfg.aggregator, **cfg.aggregator_params)
    corr = make_corruption(cfg.corruption, **cfg.corruption_params)
    return J.config_hash({"config": cfg.to_dict(), "aggregator": [type(agg).__qualname__, state(agg)],
                          "corruption": [type(corr).__qualname__, state(corr)]})


def _json_args(args: argparse.Namespace) -> dict:
    return {k: v for k, v in vars(args).items() if not k.startswith("_") and k not in ("resume", "overwrite", "ray_address")}


def _run(args: argparse.Namespace) -> int:
    from secagg.errors import SecAggError

    from rfa import jobs as J
    from rfa.fl import experiments as ex
    from rfa.fl import robustness as rb
    from rfa.fl.data import DataUnavailable
    from rfa.fl.loop import RunResult

    t0 = time.perf_counter()
    import torch

    resume = getattr(args, "resume", None)
    if resume is not None:  # the saved sweep's flags, changed by the flags given now
        try:
            saved = _common.resume_manifest(args, NAME, "rfa robustness")[1]["args"]
        except KeyError:
            raise J.UsageError(f"--resume {resume}: no rfa robustness run there") from None
        given = {k: v for k, v in _json_args(args).items() if v != _parser_defaults().get(k)}
        # a flag the saved manifest predates takes its default (a folder written by an earlier version resumes)
        args = argparse.Namespace(**{**_parser_defaults(), **saved, **given, "resume": resume, "overwrite": False,
                                     "out": resume, "ray_address": args.ray_address})  # where it runs: never saved
    args = _defaults(args)
    on_cuda = args.device.startswith("cuda") or (args.device == "auto" and torch.cuda.is_available())
    if not on_cuda:
        torch.set_num_threads(1)
    try:
        jobs = _compare.runs_jobs(args, on_cuda)  # --executor other than serial: runs one after another
        if args.oracle == "auto":
            raise ex.InvalidInput("choose an oracle (modular, ideal or secagg); auto is machine-dependent")
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
        out = J.prepare_out_dir(args.out, "robustness", resume=resume, overwrite=bool(getattr(args, "overwrite", False)),
                                owned=OUTPUTS)
    except (SecAggError, DataUnavailable, ValueError, OSError) as exc:
        print(f"rfa robustness: {exc}", file=sys.stderr)
        return 2
    argv = _compare._argv_of(args)
    store = J.RunStore(out, ex.CSV_COLUMNS, manifest={"command": "rfa robustness " + argv, "args": _json_args(args)},
                       resume=resume is not None)
    if resume is not None:  # the manifest keeps the sweep's current flags
        J.atomic_write_text(out / J.RunStore.MANIFEST, json.dumps(J._json_safe(
            {**store.manifest, "command": "rfa robustness " + argv, "args": _json_args(args)}), indent=1, sort_keys=True) + "\n")
    keys = [run_key(c) for c in configs]
    todo = [i for i, k in enumerate(keys) if k not in store]
    b = sweep.base
    print(f"rfa robustness: {len(configs)} runs ({len(sweep.aggregators)} aggregators x {len(sweep.corruptions)} attacks x "
          f"rho {[r for r in sweep.rhos if r > 0]} x {len(sweep.seeds)} seeds, + clean runs); {len(configs) - len(todo)} "
          f"already saved in {out}")
    print(f"  data {b.dataset}, model {b.model}, {b.rounds} rounds, m={b.clients_per_round}, oracle {args.oracle}, "
          + (f"{jobs} worker process(es)" if b.executor == "serial" else f"local training on the {b.executor} executor"))
    bar = None
    if not args.no_progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc="rfa robustness", unit="run", dynamic_ncols=True)
    try:
        from rfa.fl.executor import executor_cluster

        with J.handle_signals(), executor_cluster(b.executor, args.ray_address):  # one Ray cluster for the command
            for j, res in J.run_parallel(ex._run_one, [configs[i] for i in todo], jobs=jobs,
                                         initializer=ex._worker_init, initargs=(1,)):
                i = todo[j]
                store.append(keys[i], ex._row(res, i), record=res.to_dict())
                if bar is not None:
                    bar.update(1)
    except J.Interrupted as exc:
        if bar is not None:
            bar.close()
        print(J.interrupted_message("rfa robustness", exc, saved=len(store), total=len(configs), out=out), file=sys.stderr)
        return J.EXIT_INTERRUPTED
    except (SecAggError, DataUnavailable, ValueError) as exc:
        print(f"rfa robustness: {exc} ({len(store)} finished runs are saved in {out}; continue with --resume {out})",
              file=sys.stderr)
        return 2
    if bar is not None:
        bar.close()
    # results.csv / results.json in the sweep's order, as rfa compare writes them
    by_key = {r["hash"]: r["record"] for r in store.records()}
    results = [RunResult(config=rec["config"], history=rec["history"], final=rec["final"], info=rec.get("info", {}))
               for rec in (by_key[k] for k in keys)]
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
