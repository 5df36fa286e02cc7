"""Benchmark 4: one training round, FedAvg vs RFA (R = 3) vs one-step RFA, with each secure-average oracle.

The default federated setting of ``rfa.fl`` (``FLConfig()``: MNIST-5k, multinomial logistic regression,
d = 7850, 50 clients, 10 per round, 1 local epoch) run through ``rfa.fl.loop.run`` on the CPU with a
fixed prebuilt data set. A round's time is read from the loop's ``progress`` callback (time between
consecutive callbacks); the first round (warm-up) and the last (it evaluates) are dropped, and the
median is taken over the remaining rounds of every repeat. Baseline: a plaintext FedAvg round (ideal
oracle) measured in the same run; every configuration is also reported as a ratio to it.

Oracles: ``ideal`` (plaintext weighted mean), ``modular`` (identical discretisation and modular sum, the
protocol's ledger from the analytical model), ``secagg`` (the faithful protocol, every mask expanded).
Communication per client per round (bytes) comes from the oracle's records.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from bench import common
from bench.common import goal

CONFIGS = [
    ("fedavg", "ideal"),
    ("fedavg", "modular"),
    ("fedavg", "secagg"),
    ("rfa", "modular"),
    ("rfa", "secagg"),
    ("one-step-rfa", "modular"),
    ("one-step-rfa", "secagg"),
]


def run(quick: bool = False, repeats: int = 3, log=print) -> dict[str, Any]:  # noqa: ANN001
    out: dict[str, Any] = {"name": "training"}
    try:
        from rfa.fl import loop
        from rfa.fl.config import FLConfig
    except Exception as exc:  # noqa: BLE001
        out["skipped"] = f"rfa.fl not importable: {exc!r}"
        out["goals"] = [goal("RFA (modular oracle) round / FedAvg round", None, 1.2, note="skipped")]
        return out
    rounds = 3 if common.SMOKE else 5 if quick else 8
    configs = [("fedavg", "ideal"), ("rfa", "modular")] if common.SMOKE else CONFIGS
    reps = max(1, repeats - 1) if quick else repeats
    cfg = FLConfig(rounds=rounds, eval_every=10**6, device="cpu", aggregator_params={})
    data = loop.build_data(cfg)
    per: dict[tuple[str, str], list[float]] = {c: [] for c in configs}
    info: dict[tuple[str, str], dict[str, Any]] = {}
    for _ in range(reps):
        for agg, orc in configs:  # interleaved: every configuration once per repeat
            stamps: list[float] = []
            t0 = time.perf_counter()
            res = loop.run(cfg.replace(aggregator=agg, oracle=orc), data=data, progress=lambda t, rec: stamps.append(time.perf_counter()))
            times = np.diff([t0] + stamps)
            per[(agg, orc)].extend(times[1:-1].tolist())
            info[(agg, orc)] = {
                "calls_per_round": res.final["secure_calls_per_round"],
                "bytes_per_client_per_round": res.final["bytes_per_client_per_round"],
                "accuracy": res.final["accuracy"],
                "model_dim": res.info["model_dim"],
            }
    base = float(np.median(per[("fedavg", "ideal")]))
    rows = []
    for agg, orc in configs:
        med = float(np.median(per[(agg, orc)]))
        i = info[(agg, orc)]
        rows.append({
            "aggregator": agg, "oracle": orc, "round_s": med, "ratio_to_fedavg": med / base,
            "calls_per_round": i["calls_per_round"], "bytes_per_client_per_round": i["bytes_per_client_per_round"],
            "accuracy_after": i["accuracy"], "rounds_timed": len(per[(agg, orc)]),
        })
        log(f"  {agg:13s} {orc:8s}: {med * 1e3:.0f} ms/round ({med / base:.2f}x FedAvg)")
    out["rows"] = rows
    out["setting"] = {"dataset": cfg.dataset, "model": cfg.model, "clients": cfg.num_clients, "per_round": cfg.clients_per_round,
                      "local_epochs": cfg.local_epochs, "d": rows[0] and info[configs[0]]["model_dim"], "rounds_per_run": rounds}
    r = {(x["aggregator"], x["oracle"]): x for x in rows}
    out["goals"] = [
        goal("RFA (R=3, modular oracle) round / plaintext FedAvg round", r[("rfa", "modular")]["ratio_to_fedavg"], 1.2),
    ]
    return out
