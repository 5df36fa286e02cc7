"""Benchmark 6: communication -- bytes per client and expansion factors, and RFA's cost relative to FedAvg.

Sources:

* ``secagg.cost.our_model``: the closed-form model of our wire format (exact for the complete graph and
  without dropouts; expected neighbour counts on SecAgg+ graphs with dropouts) across n, d, modulus
  bit-width, graph (complete / SecAgg+ with k from ``find_secagg_plus_params``) and dropout rate
  (clients dropping before the masked input: the costliest case, their keys must be recovered);
* ``secagg.cost.paper_model``: Bonawitz et al.'s accounting (Section 7.1) beside it;
* cross-check: a few small configurations run through the protocol (measured ledger) and through
  ``secagg.cost.model_ledger`` (exact, per message) and ``our_model``, which must agree;
* RFA vs FedAvg: calls per round x bytes per client per call for the default FL setting (m clients
  per round, model dimension d), from the modular oracle's records (same ledger as the protocol).

Expansion = (bytes a completing client sends [+ receives]) / (d x 16 bits), 16-bit inputs, modulus
``2^(16 + ceil(log2 n))`` unless the bit-width sweep says otherwise.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from bench import common
from bench.common import goal


def _k(n: int, graph: str, p: float) -> int | None:
    if graph == "complete":
        return None
    from secagg.graph import find_secagg_plus_params

    params = find_secagg_plus_params(n, 0.05, max(0.05, p))
    if params is None or params[0] >= n - 1:
        return None
    return params[0]


def model_rows(quick: bool) -> list[dict[str, Any]]:
    from secagg import cost

    if common.SMOKE:
        ns, ds = [100], [10**4]
    elif quick:
        ns, ds = [100, 1024, 16384], [10**4, 2**20, 2**24]
    else:
        ns, ds = [10, 100, 1000, 1024, 10000, 16384], [10**3, 10**4, 10**5, 10**6, 2**20, 2**24]
    rows = []
    for n in ns:
        for d in ds:
            for graph in ("complete", "secagg+"):
                for p in (0.0, 0.1, 0.3):
                    k = _k(n, graph, p)
                    if graph == "secagg+" and k is None:
                        continue
                    m = cost.paper_modulus(n, 16)
                    drops = {"masked-input": int(round(p * n))} if p else None
                    c = cost.our_model(n, d, m, k=k, drops=drops, input_bits=16)
                    pm = cost.paper_model(n, d, 16) if graph == "complete" else None
                    rows.append({
                        "n": n, "d": d, "graph": graph, "k": c.k, "dropout": p, "modulus_bits": m.bit_length() - 1,
                        "upload_per_client": c.upload_per_client, "download_per_client": c.download_per_client,
                        "expansion_upload": c.expansion_upload, "expansion_traffic": c.expansion_traffic,
                        "paper_expansion": pm.expansion if pm else None, "exact": c.exact,
                    })
    return rows


def bitwidth_rows() -> list[dict[str, Any]]:
    from secagg import cost

    rows = []
    for bits in (16, 20, 24, 26, 32, 64):
        for n, d in ((100, 10**6), (1000, 10**6)):
            c = cost.our_model(n, d, 1 << bits, input_bits=16)
            rows.append({"n": n, "d": d, "modulus_bits": bits, "upload_per_client": c.upload_per_client,
                         "expansion_upload": c.expansion_upload, "expansion_traffic": c.expansion_traffic})
    return rows


def cross_check(quick: bool) -> list[dict[str, Any]]:
    """Measured ledgers of real runs vs the exact model and the closed form."""
    from secagg import cost
    from secagg.protocol import run_secure_aggregation

    pts = [(10, 1000, "complete", 0.0), (30, 1000, "complete", 0.1), (50, 500, "secagg+", 0.0), (50, 500, "secagg+", 0.3)]
    if common.SMOKE:
        pts = [(6, 50, "complete", 0.0), (12, 50, "complete", 0.25)]
    elif not quick:
        pts += [(100, 2000, "complete", 0.3), (200, 1000, "secagg+", 0.1)]
    rows = []
    m = 1 << 24
    for n, d, graph, p in pts:
        rng = np.random.default_rng(n + d)
        x = rng.integers(0, 1 << 16, size=(n, d)).astype(np.uint32)
        nd = int(round(p * n))
        drops = {int(u): "masked-input" for u in rng.choice(n, size=nd, replace=False)} if nd else None
        res = run_secure_aggregation(x, modulus=m, graph=graph, dropouts=drops, seed=7, dropout_fraction=max(0.05, p))
        model = cost.model_ledger(n, d, m, graph=graph, dropouts=drops, seed=7, dropout_fraction=max(0.05, p))
        closed = cost.our_model(n, d, m, k=res.graph.k, drops={"masked-input": nd} if nd else None)
        up = res.ledger.upload_per_client()
        rows.append({
            "n": n, "d": d, "graph": graph, "k": res.graph.k, "dropout": p,
            "measured_total": res.ledger.total(), "model_total": model.total(), "ledgers_equal": model == res.ledger,
            "measured_expansion": res.ledger.expansion_factor(d, 16), "closed_form_expansion": closed.ledger_expansion,
            "closed_form_exact": closed.exact,
            "measured_upload_mean": sum(up.values()) / len(up), "closed_form_upload_mean": closed.upload_mean,
        })
    return rows


def consistency_rows(quick: bool) -> dict[str, list[dict[str, Any]]]:
    """Active SecAgg+: the U3 each client signs, in full (an n-bit bitmap) or as its window with Merkle
    paths (``consistency_view="window"``). Closed form at scale (the finder's k for the active variant), and
    measured runs of both views (same seed) whose ledgers must equal the model and the modular backend."""
    from secagg import cost
    from secagg.graph import find_secagg_plus_params
    from secagg.messages import consistency_proof_size, consistency_request_size
    from secagg.protocol import run_secure_aggregation

    model = []
    for n in ((1000,) if common.SMOKE else (1000, 10**4, 10**5, 10**6)):
        k, _ = find_secagg_plus_params(n, 0.05, 0.05, "active")
        row: dict[str, Any] = {"n": n, "k": k, "d": 1000}
        for view in ("full", "window"):
            c = cost.our_model(n, 1000, 1 << 32, k=k, variant="active", consistency_view=view)
            row[f"download_{view}"] = c.download_per_client
        row["download_honest_but_curious"] = cost.our_model(n, 1000, 1 << 32, k=k).download_per_client
        row["u3_bitmap_bytes"] = consistency_request_size(0, n)
        row["u3_window_proof_bytes"] = consistency_proof_size(n, k)
        model.append(row)
    measured = []
    pts = [(40, 8)] if common.SMOKE else ([(100, 16), (600, 16)] if quick else [(100, 16), (600, 16), (1200, 24)])
    for n, k in pts:
        rng = np.random.default_rng(n)
        x = rng.integers(0, 1 << 16, size=(n, 50)).astype(np.uint32)
        drops = {int(u): "masked-input" for u in rng.choice(n, size=n // 50, replace=False)}
        kw = dict(modulus=1 << 24, graph="secagg+", neighbours=k, variant="active", seed=3, dropouts=drops)
        row = {"n": n, "k": k, "dropped": len(drops)}
        for view in ("full", "window"):
            t0 = time.perf_counter()
            res = run_secure_aggregation(x, consistency_view=view, **kw)
            row[f"{view}_s"] = time.perf_counter() - t0
            _, _, led = cost.modular_run(x, dim=50, consistency_view=view, **kw)
            kinds = res.ledger.by_kind()
            row[f"{view}_u3_bytes_total"] = kinds.get("consistency-proof" if view == "window" else "consistency-request", 0)
            row[f"{view}_ledger_equals_modular"] = led == res.ledger
        row["window_over_full_time"] = row["window_s"] / row["full_s"]
        measured.append(row)
    return {"model": model, "measured": measured}


def rfa_rows() -> list[dict[str, Any]]:
    """Bytes per participating client per round: FedAvg (plaintext and secure) vs RFA vs one-step RFA."""
    import torch

    from rfa.oracle import ModularOracle

    rows = []
    for m, d in ((4, 100),) if common.SMOKE else ((10, 7850), (100, 7850), (100, 10**6)):
        o = ModularOracle(seed=0)
        o(torch.zeros(m, d, dtype=torch.float32), torch.ones(m, dtype=torch.float64))
        per_call = float(o.calls[0].bytes_per_client)
        plain = 4.0 * (d + 1)
        for name, calls in (("fedavg (plaintext)", 0), ("fedavg (secure)", 1), ("rfa R=3", 3), ("one-step rfa", 1)):
            b = plain if calls == 0 else calls * per_call
            rows.append({"m": m, "d": d, "aggregator": name, "calls": max(calls, 1), "bytes_per_client": b,
                         "ratio_to_secure_fedavg": b / per_call, "ratio_to_plain_fedavg": b / plain})
    return rows


def run(quick: bool = False, repeats: int = 3, log=print) -> dict[str, Any]:  # noqa: ANN001
    t0 = time.perf_counter()
    out: dict[str, Any] = {"name": "communication"}
    out["model"] = model_rows(quick)
    out["bitwidth"] = bitwidth_rows()
    out["cross_check"] = cross_check(quick)
    log(f"  cross-check: {sum(r['ledgers_equal'] for r in out['cross_check'])}/{len(out['cross_check'])} measured ledgers equal the model")
    out["consistency"] = consistency_rows(quick)
    log("  active SecAgg+ U3 view: " + ", ".join(
        f"n={r['n']}: {r['download_full']:.0f} B full, {r['download_window']:.0f} B window" for r in out["consistency"]["model"]))
    try:
        out["rfa"] = rfa_rows()
    except Exception as exc:  # noqa: BLE001
        out["rfa"] = []
        out["rfa_error"] = repr(exc)
    paper_pt = [r for r in out["model"] if r["n"] == 1024 and r["d"] == 2**20 and r["graph"] == "complete" and r["dropout"] == 0.0]
    out["goals"] = [
        goal("measured ledgers == analytical model (cross-check points)", float(all(r["ledgers_equal"] for r in out["cross_check"])), 1.0,
             lower_is_better=False, unit="", note="1 = all equal"),
        goal("active SecAgg+ ledgers == modular backend, both U3 views", float(all(
            r["full_ledger_equals_modular"] and r["window_ledger_equals_modular"] for r in out["consistency"]["measured"])), 1.0,
             lower_is_better=False, unit="", note="1 = all equal"),
    ]
    if paper_pt:
        p = paper_pt[0]
        out["paper_point"] = p
        log(f"  n=2^10, d=2^20: our traffic expansion {p['expansion_traffic']:.3f}x (paper model {p['paper_expansion']:.3f}x)")
    out["seconds"] = time.perf_counter() - t0
    return out
