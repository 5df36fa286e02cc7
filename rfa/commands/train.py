"""``rfa train``: run one federated configuration and print/save its metrics."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

NAME = "train"
HELP = "run one federated configuration (Algorithm 1, or Algorithm 4 with --personalized) and print its metrics"


def _kv(s: str) -> dict:
    """``key=value,key=value`` (values parsed as JSON when possible) or a JSON object."""
    s = s.strip()
    if not s:
        return {}
    if s.startswith("{"):
        return json.loads(s)
    out = {}
    for part in s.split(","):
        k, _, v = part.partition("=")
        try:
            out[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            out[k.strip()] = v
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, help="a JSON file with FLConfig fields (flags override it)")
    p.add_argument("--data", default=None, help="mnist5k | digits | fashion-mnist | shakespeare | synthetic-ls | synthetic-cls | leaf:DIR")
    p.add_argument("--data-params", type=_kv, default=None, help="loader options, e.g. max_clients=30")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--model", default=None, help="linear | convnet | lstm")
    p.add_argument("--partition", default=None, help="natural | iid | dirichlet")
    p.add_argument("--dirichlet-alpha", type=float, default=None)
    p.add_argument("--clients", type=int, default=None)
    p.add_argument("--clients-per-round", type=int, default=None)
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--local-steps", type=int, default=None)
    p.add_argument("--local-epochs", type=float, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--server-lr", type=float, default=None)
    p.add_argument("--aggregator", default=None, help="a name of rfa.aggregators.NAMES, e.g. fedavg (default), rfa, rfa-paper, one-step-rfa, rlr, centered-clipping, bucketing, coordinate-median")
    p.add_argument("--aggregator-params", type=_kv, default=None)
    p.add_argument("--oracle", default=None, choices=("ideal", "modular", "secagg"))
    p.add_argument("--oracle-params", type=_kv, default=None)
    p.add_argument("--corruption", default=None)
    p.add_argument("--rho", type=float, default=None)
    p.add_argument("--corruption-params", type=_kv, default=None)
    p.add_argument("--personalized", action="store_true", default=None)
    p.add_argument("--local-test-fraction", type=float, default=None)
    p.add_argument("--eval-every", type=int, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--executor", default=None, choices=("serial", "threads"))
    p.add_argument("--out", default=None, help="write result.json (config, final metrics, history) here")
    p.add_argument("--quiet", action="store_true")


_MAP = {
    "data": "dataset", "data_params": "dataset_params", "data_dir": "data_dir", "model": "model", "partition": "partition",
    "dirichlet_alpha": "dirichlet_alpha", "clients": "num_clients", "clients_per_round": "clients_per_round",
    "rounds": "rounds", "local_steps": "local_steps", "local_epochs": "local_epochs", "batch_size": "batch_size",
    "lr": "lr", "server_lr": "server_lr", "aggregator": "aggregator", "aggregator_params": "aggregator_params",
    "oracle": "oracle", "oracle_params": "oracle_params", "corruption": "corruption", "rho": "rho",
    "corruption_params": "corruption_params", "personalized": "personalized", "local_test_fraction": "local_test_fraction",
    "eval_every": "eval_every", "seed": "seed", "device": "device", "executor": "executor",
}


def config_from_args(args: argparse.Namespace):
    from rfa.fl.config import FLConfig
    from rfa.fl.experiments import quick_config

    cfg = FLConfig.from_dict(json.loads(Path(args.config).read_text())) if args.config else quick_config()
    over = {field: getattr(args, flag) for flag, field in _MAP.items() if getattr(args, flag) is not None}
    if "local_steps" in over:
        over.setdefault("local_epochs", None)
    if over.get("dataset") == "shakespeare":
        over.setdefault("partition", "natural")
        over.setdefault("model", "lstm")
    if over.get("personalized") and "local_test_fraction" not in over and over.get("partition", cfg.partition) != "natural":
        over["local_test_fraction"] = 0.2
    return cfg.replace(**over)


def run(args: argparse.Namespace) -> int:
    from secagg.errors import SecAggError

    from rfa.fl.data import DataUnavailable
    from rfa.fl.loop import run as run_fl

    try:
        cfg = config_from_args(args).validate()
    except (SecAggError, ValueError, OSError, json.JSONDecodeError) as exc:
        print(f"rfa train: {exc}", file=sys.stderr)
        return 2

    def progress(t: int, rec: dict) -> None:
        if not args.quiet and rec.get("accuracy") is not None:
            print(f"  round {t:4d}  acc {100 * rec['accuracy']:.2f}%  loss {rec['test_loss']:.4f}  "
                  f"calls {rec['cumulative_oracle_calls']}  s {rec['max_effective_weight']:.3f}", flush=True)

    t0 = time.perf_counter()
    try:
        res = run_fl(cfg, progress=progress)
    except (SecAggError, DataUnavailable, ValueError) as exc:
        print(f"rfa train: {exc}", file=sys.stderr)
        return 2
    f = res.final
    print(f"rfa train: {cfg.dataset} / {cfg.model} / {cfg.aggregator} via {cfg.oracle} oracle, "
          f"{cfg.corruption} at rho={cfg.rho:g} (realised {f['realised_rho']:.3f}), seed {cfg.seed}")
    for k, v in f.items():
        print(f"  {k}: {v:.4f}" if isinstance(v, float) else f"  {k}: {v}")
    print(f"  wall time: {time.perf_counter() - t0:.1f} s")
    if args.out:
        from rfa.fl.experiments import _json_safe

        out = Path(args.out)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            print(f"rfa train: cannot write results to {out}: {exc}", file=sys.stderr)
            return 2
        (out / "result.json").write_text(json.dumps(_json_safe(res.to_dict()), indent=1))
        print(f"  saved: {out / 'result.json'}")
    return 0
