"""``rfa train``: run one federated configuration, print its metrics and save them.

Shares its flags, defaults and validation with ``rfa compare`` (:mod:`rfa.commands._common`): the
quick study's configuration, the ``modular`` oracle, results always saved (``result.json`` with the
config, final metrics and per-round history, and ``results.csv``, one row in ``rfa compare``'s
columns) under ``--out`` (default ``runs/train-<UTC timestamp>``), which is checked before training.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from rfa import jobs

from . import _common as common

NAME = "train"
HELP = "run one federated configuration (Algorithm 1, or Algorithm 4 with --personalized) and print its metrics"
COMMAND = "rfa train"
OUTPUT_FILES = ("result.json", "results.csv")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from rfa.fl.experiments import quick_config

    base = quick_config()
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = common.names_epilog()
    p.add_argument("--config", default=None, metavar="FILE",
                   help="JSON or TOML file whose keys are these flags' names (e.g. rounds = 5, aggregator = \"rfa\"); "
                        "explicit flags override it")
    common.add_config_arguments(p, base)
    g = p.add_argument_group("this run")
    g.add_argument("--aggregator", default=base.aggregator, type=common._name_arg(common.aggregator_names, "aggregator"),
                   help=f"aggregator (default {base.aggregator}; names below)")
    g.add_argument("--aggregator-params", type=jobs.params_arg, default=None, metavar="K=V,...",
                   help=f"aggregator parameters, {common.PARAMS_FORMAT}, e.g. budget=3,nu=1e-6 for rfa")
    g.add_argument("--oracle-params", type=jobs.params_arg, default=None, metavar="K=V,...",
                   help=f"secure average oracle options, {common.PARAMS_FORMAT}, e.g. graph=secagg+,variant=active")
    g.add_argument("--corruption", default=base.corruption, type=common._name_arg(common.corruption_names, "corruption"),
                   help=f"corruption model (default {base.corruption}; names below)")
    g.add_argument("--rho", type=jobs.float_arg(0, 0.5, hi_open=True), default=base.rho,
                   help=f"corruption level in [0, 0.5), the corrupted clients' share of the data (default {base.rho:g})")
    g.add_argument("--corruption-params", type=jobs.params_arg, default=None, metavar="K=V,...",
                   help=f"corruption parameters, {common.PARAMS_FORMAT}, e.g. target=moving for cga")
    g.add_argument("--data-params", type=jobs.params_arg, default=None, metavar="K=V,...",
                   help=f"data loader options, {common.PARAMS_FORMAT}, e.g. max_clients=30 for shakespeare")
    g.add_argument("--server-lr", type=jobs.float_arg(0, None, lo_open=True), default=None,
                   help=f"server step size > 0 (default {base.server_lr:g})")
    g.add_argument("--personalized", action="store_true", help="Algorithm 4: shared model plus per-client parameters")
    g.add_argument("--local-test-fraction", type=jobs.float_arg(0, 1, hi_open=True), default=None,
                   help="fraction in [0, 1) of each client's data held out for local accuracy "
                        "(default 0, or 0.2 with --personalized)")
    g.add_argument("--seed", type=jobs.int_arg(0), default=base.seed, help=f"seed of everything (default {base.seed})")
    g.add_argument("--executor", default=base.executor, choices=("serial", "threads", "processes", "ray"),
                   help=f"local-training executor (default {base.executor}; ray: Ray tasks on one cluster for the command)")
    g.add_argument("--ray-address", default=None, metavar="HOST:PORT",
                   help="with --executor ray: join this Ray cluster (default: RAY_ADDRESS, else a local instance on 127.0.0.1)")
    g.add_argument("--quiet", action="store_true", help="no per-round log")
    common.add_output_arguments(p, NAME, resumable=False)


def config_from_args(args: argparse.Namespace, warn=None):
    """The :class:`FLConfig` of ``args`` (the quick study's configuration with the flags applied).
    Flags that do nothing here are refused (``--rho`` without a corruption) or announced via ``warn``."""
    from rfa.fl.experiments import quick_config

    warn = warn or (lambda msg: None)
    cfg = quick_config()
    if args.local_steps is not None and args.local_epochs is not None:
        raise jobs.UsageError("give --local-steps or --local-epochs, not both")
    over = common.config_overrides(args)
    partition = over.get("partition", cfg.partition)
    if args.dirichlet_alpha is not None and partition != "dirichlet":
        warn(f"--dirichlet-alpha does nothing with the {partition} partition")
    if args.corruption == "none" and args.rho > 0:
        raise jobs.UsageError(f"--rho {args.rho:g} does nothing without --corruption (choose one of "
                              f"{', '.join(c for c in common.corruption_names() if c != 'none')})")
    if args.corruption == "none" and args.corruption_params:
        raise jobs.UsageError("--corruption-params does nothing without --corruption")
    if args.corruption != "none" and args.rho == 0:
        warn(f"--corruption {args.corruption} at rho = 0 corrupts no client (give --rho)")
    secure = common.aggregator_is_secure(args.aggregator)
    if args.dropout_rate and not secure:
        warn(f"--dropout-rate does nothing: {args.aggregator} is plaintext-only and makes no secure call")
    if args.oracle == "ideal" and args.oracle_params:
        raise jobs.UsageError("the ideal oracle takes no --oracle-params")
    oracle_params = common.oracle_params(args, args.oracle_params)
    if oracle_params and args.oracle != "ideal":
        oracle_params = common.bind_oracle_params(args.oracle, oracle_params)
    over.update(
        aggregator=args.aggregator,
        aggregator_params=common.bind_aggregator_params(args.aggregator, args.aggregator_params or {}),
        oracle=args.oracle, oracle_params=oracle_params, corruption=args.corruption, rho=args.rho,
        corruption_params=common.bind_corruption_params(args.corruption, args.corruption_params or {}),
        seed=args.seed, executor=args.executor, personalized=bool(args.personalized),
    )
    if args.data_params:
        over["dataset_params"] = dict(args.data_params)
    if args.server_lr is not None:
        over["server_lr"] = args.server_lr
    if args.local_test_fraction is not None:
        over["local_test_fraction"] = args.local_test_fraction
    elif args.personalized and partition != "natural":
        over["local_test_fraction"] = 0.2
    return cfg.replace(**over).validate()


def _fmt(k: str, v) -> str:
    if isinstance(v, float) and k.startswith("bytes"):
        return f"{round(v)}"  # bytes: integers (means over rounds and clients, rounded)
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


def run(args: argparse.Namespace) -> int:
    return jobs.main_wrapper(COMMAND, lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    from secagg.errors import InvalidInput, SecAggError

    from rfa.fl.data import DataUnavailable
    from rfa.fl.experiments import _json_safe, _row, _write_csv
    from rfa.fl.loop import make_aggregator, run as run_fl

    out = None
    try:
        with jobs.handle_signals():
            cfg = config_from_args(args, warn=lambda msg: common.warn(COMMAND, msg))
            make_aggregator(cfg.aggregator, **cfg.aggregator_params)  # parameter ranges, before any work
            out = jobs.prepare_out_dir(args.out, NAME, overwrite=args.overwrite, owned=OUTPUT_FILES)
            drop = cfg.oracle_params.get("dropout_rate", 0.0)
            print(f"{COMMAND}: {cfg.dataset} / {cfg.model} / {cfg.aggregator} via the {cfg.oracle} oracle"
                  + (f" (client dropout rate {drop:g})" if drop else "")
                  + f", corruption {cfg.corruption} at rho={cfg.rho:g}, {cfg.rounds} rounds, m={cfg.clients_per_round}, "
                  f"seed {cfg.seed}", flush=True)
            print(f"  output: {out}", flush=True)

            def progress(t: int, rec: dict) -> None:
                if not args.quiet and rec.get("accuracy") is not None:
                    print(f"  round {t:4d}  acc {100 * rec['accuracy']:.2f}%  loss {rec['test_loss']:.4f}  "
                          f"calls {rec['cumulative_oracle_calls']}  s {rec['max_effective_weight']:.3f}", flush=True)

            t0 = time.perf_counter()
            from rfa.fl.executor import executor_cluster

            with executor_cluster(cfg.executor, args.ray_address):  # --executor ray: one cluster for the command
                res = run_fl(cfg, progress=progress)
            f = res.final
            print(f"  realised rho {f['realised_rho']:.3f}; final metrics:")
            for k, v in f.items():
                print(f"  {k}: {_fmt(k, v)}")
            print(f"  wall time: {time.perf_counter() - t0:.1f} s")
            jobs.atomic_write_text(out / "result.json", json.dumps(_json_safe(res.to_dict()), indent=1))
            _write_csv(out / "results.csv", [_json_safe(_row(res, 0))])
            print(f"  saved: {out / 'result.json'} and {out / 'results.csv'}")
            return 0
    except jobs.Interrupted as exc:
        where = f" in {out}" if out is not None else ""
        print(f"{COMMAND}: interrupted ({exc.name}) before the run finished; nothing saved{where} "
              "(one run has no partial results: run the command again)", file=sys.stderr)
        return jobs.EXIT_INTERRUPTED
    except DataUnavailable as exc:
        print(f"{COMMAND}: {exc}", file=sys.stderr)
        return jobs.EXIT_USAGE
    except SecAggError as exc:
        if isinstance(exc, InvalidInput):
            raise
        print(f"{COMMAND}: the run failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
