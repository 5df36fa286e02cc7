"""The federated loop: seed 002 Algorithm 1 (RFA and any other aggregator) and Algorithm 4.

One round reads like the algorithm::

    S_t   = sample m of n clients without replacement                       (line 2)
    w_i   = local SGD from w^(t) on each i in S_t  (executor seam)          (lines 3-8)
    D_i   = w_i - w^(t)                       updates, not models (footnote 4)
    D_i   = corruption(D_i) for corrupted i in S_t                          (eq. 4)
    v     = aggregator(D, alpha_S, oracle)    any aggregator, any oracle    (line 9)
    w^(t+1) = w^(t) + server_lr * v

with ``alpha_i = N_i / N``. Everything random derives from ``config.seed``: the same config gives
the same numbers (on the same device and torch version).

Each round records what the privacy/robustness study needs: the secure-average calls the
aggregator made, the bytes per participating client (measured by the oracle, or, for the ideal
oracle, the analytical cost of the secure protocol for the same call shapes), and the largest
effective weight any client had in any revealed average (s of Definition 1 (iv); 1.0 for
plaintext-only aggregators, whose server sees every update in the clear).
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from secagg.errors import InvalidInput

from .attacks import make_corruption, select_corrupted
from .config import ConfigError, FLConfig
from .data import FederatedData, load_pooled
from .executor import Executor, LocalTask, make_executor
from .models import FlatModel, make_model
from .partition import partition
from .personalized import personalized_local_round

__all__ = ["RunResult", "run", "build_data", "make_oracle", "make_aggregator", "resolve_device", "secure_bytes_per_client", "evaluate"]


def resolve_device(spec: str) -> torch.device:
    """``auto`` -> CUDA when available else CPU; otherwise ``torch.device(spec)``."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(spec)
    except RuntimeError as exc:
        raise ConfigError(f"bad device {spec!r}: {exc}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device cuda requested but CUDA is not available")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(f"device {spec!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"device {spec!r} is not supported; use auto, cpu, cuda or cuda:N")
    return dev


@functools.lru_cache(maxsize=8)
def _pooled_cached(name: str, data_dir: str | None, seed: int, params_key: str):
    import json

    return load_pooled(name, data_dir=data_dir, seed=seed, **json.loads(params_key))


def build_data(cfg: FLConfig) -> FederatedData:
    """Load (cached per process) and partition the configured data set."""
    import json

    synthetic = cfg.dataset.startswith("synthetic")
    pooled = _pooled_cached(cfg.dataset, cfg.data_dir, cfg.seed if synthetic else 0, json.dumps(cfg.dataset_params, sort_keys=True))
    scheme = cfg.partition
    if pooled.groups is None and scheme == "natural":
        raise ConfigError(f"data set {cfg.dataset!r} has no natural clients; use --partition iid or dirichlet")
    return partition(
        pooled, name=cfg.dataset, scheme=scheme, num_clients=cfg.num_clients, alpha=cfg.dirichlet_alpha,
        test_fraction=cfg.test_fraction, local_test_fraction=cfg.local_test_fraction, seed=cfg.seed,
    )


def make_oracle(name: str, seed: int, **params: Any):
    """``ideal`` | ``modular`` | ``secagg`` oracle from :mod:`rfa.oracle` (seeded from the run seed)."""
    from rfa import oracle as _o

    if name == "ideal":
        return _o.IdealOracle()
    params = dict(params)
    params.setdefault("seed", seed)
    if name == "modular":
        return _o.ModularOracle(**params)
    if name == "secagg":
        return _o.SecAggOracle(**params)
    raise ConfigError(f"unknown oracle {name!r}; choose ideal, modular or secagg")


def make_aggregator(name: str, **params: Any):
    from rfa import aggregators as _a

    return _a.make(name, **params)


@functools.lru_cache(maxsize=256)
def secure_bytes_per_client(m: int, d: int) -> float:
    """Bytes per client of one secure-average call with ``m`` clients and ``d`` coordinates, from the
    analytical cost model behind :class:`rfa.oracle.ModularOracle` (identical to the faithful
    protocol's ledger). Used to price calls made through the ideal oracle."""
    from rfa.oracle import ModularOracle

    try:
        o = ModularOracle(seed=0)
        o(torch.zeros(m, d, dtype=torch.float64), torch.ones(m, dtype=torch.float64))
        return float(o.calls[0].bytes_per_client)
    except ImportError:  # secagg.average not installed in this checkout: masked-input upload only
        return float(8 * (d + 1))


@dataclass
class RunResult:
    """Outcome of one run: the config (as a dict), per-round history and final metrics."""

    config: dict[str, Any]
    history: list[dict[str, Any]]
    final: dict[str, Any]
    info: dict[str, Any] = field(default_factory=dict)
    w: torch.Tensor | None = field(default=None, repr=False)  # final server model (not serialised)
    u: torch.Tensor | None = field(default=None, repr=False)  # personalized parameters (Algorithm 4)

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config, "final": self.final, "info": self.info, "history": self.history}


@torch.no_grad()
def _predict(model: FlatModel, w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    out = model.forward(w, x)
    return out if model.loss == "mse" else out.argmax(-1)


@torch.no_grad()
def evaluate(model: FlatModel, w: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Accuracy (classification) and mean loss of model ``w`` on ``(x, y)``."""
    if x.is_floating_point():
        x = x.to(w.dtype)
    out = model.forward(w, x)
    if model.loss == "mse":
        yy = y.to(w.dtype)
        return {"accuracy": float("nan"), "loss": float(0.5 * ((out.reshape(yy.shape) - yy) ** 2).mean())}
    loss = torch.nn.functional.cross_entropy(out, y.long())
    return {"accuracy": float((out.argmax(-1) == y).float().mean()), "loss": float(loss)}


@torch.no_grad()
def _local_eval(model: FlatModel, data: FederatedData, w: torch.Tensor, u: torch.Tensor | None,
                honest: np.ndarray | None = None) -> dict[str, float]:
    """Accuracy on every honest client's own held-out data with ``w + u_i`` (``w`` alone when ``u`` is
    None), pooled over clients (so weighted by local test sizes). Corrupted clients are left out: their
    own accuracy is not what the defence protects (their held-out data is clean, their u_i is not)."""
    off = data.local_offsets
    correct, total, loss_sum = 0.0, 0, 0.0
    for i in range(data.num_clients):
        if honest is not None and not honest[i]:
            continue
        a, b = int(off[i]), int(off[i + 1])
        if b <= a:
            continue
        p = w if u is None else w + u[i]
        r = evaluate(model, p, data.local_test_x[a:b], data.local_test_y[a:b])
        if not math.isnan(r["accuracy"]):
            correct += r["accuracy"] * (b - a)
        loss_sum += r["loss"] * (b - a)
        total += b - a
    return {"local_accuracy": correct / max(total, 1) if model.loss != "mse" else float("nan"),
            "local_loss": loss_sum / max(total, 1)}


def _head(model: FlatModel) -> tuple[int, int, int] | None:
    """(offset, classes, fan-in) of the output layer in the flat vector (for the CGA target)."""
    shapes = model._shapes
    if len(shapes) < 2:
        return None
    (_, ws, wn), (_, bs, bn) = shapes[-2], shapes[-1]
    if len(ws) != 2 or len(bs) != 1 or ws[0] != bs[0]:
        return None
    off = sum(n for _, _, n in shapes[:-2])
    return off, int(ws[0]), int(ws[1])


def run(
    cfg: FLConfig, *, data: FederatedData | None = None, executor: Executor | None = None, oracle=None,
    aggregator=None, progress: Callable[[int, dict], None] | None = None,
) -> RunResult:
    """Run one configuration and return its :class:`RunResult`.

    ``data`` / ``executor`` / ``oracle`` / ``aggregator`` override what ``cfg`` would build (tests
    use this to share data or to pass custom objects); ``progress(round, record)`` is called after
    every round.
    """
    cfg.validate()
    t0 = time.perf_counter()
    device = resolve_device(cfg.device)
    if data is None:
        data = build_data(cfg)
    n = data.num_clients
    if cfg.clients_per_round > n:
        raise ConfigError(f"clients_per_round m={cfg.clients_per_round} exceeds the {n} clients of {data.name!r} "
                          "(Algorithm 1 samples m of n without replacement)")
    m = cfg.clients_per_round
    rng = np.random.default_rng([cfg.seed, 1])
    sizes = data.sizes()
    if (sizes <= 0).any():
        raise InvalidInput("every client needs at least one training sample")

    corruption = make_corruption(cfg.corruption, **cfg.corruption_params)
    corrupted, realised_rho = select_corrupted(sizes, cfg.rho if corruption.kind != "none" else 0.0, np.random.default_rng([cfg.seed, 2]))
    data = corruption.poison_data(data, corrupted, np.random.default_rng([cfg.seed, 3])).to(device)
    clean_test = (data.test_x, data.test_y)

    model = make_model(cfg.model, data.input_shape, data.num_classes, **cfg.model_params).to(device)
    dtype = torch.float32
    w = model.init_vector(cfg.seed).to(device=device, dtype=dtype)
    u = torch.zeros(n, model.dim, device=device, dtype=dtype) if cfg.personalized else None
    if aggregator is None:
        aggregator = make_aggregator(cfg.aggregator, **cfg.aggregator_params)
    if oracle is None:
        oracle = make_oracle(cfg.oracle, cfg.seed, **cfg.oracle_params)
    executor = executor or make_executor(cfg.executor)
    oracle_name = str(getattr(oracle, "name", cfg.oracle))
    secure = bool(getattr(aggregator, "secure_compatible", True))
    head = _head(model)
    gen = torch.Generator().manual_seed(cfg.seed * 7919 + 17)
    corrupted_t = torch.as_tensor(corrupted)
    alpha_all = sizes / sizes.sum()

    history: list[dict[str, Any]] = []
    cum_calls = 0
    lr = cfg.lr
    max_eff_seen = 0.0
    epochs = cfg.local_steps is None  # local epochs: passes over the client's data without replacement
    for t in range(cfg.rounds):
        if cfg.lr_decay_every and t > 0 and t % cfg.lr_decay_every == 0:
            lr *= cfg.lr_decay
        clients = np.sort(rng.choice(n, size=m, replace=False))
        if cfg.local_steps is not None:
            steps = np.full(m, cfg.local_steps, dtype=np.int64)
        else:
            steps = np.maximum(1, np.ceil(cfg.local_epochs * sizes[clients] / cfg.batch_size)).astype(np.int64)
        round_seed = int(np.random.default_rng([cfg.seed, 4, t]).integers(0, 2**62))
        if u is None:
            start = w.unsqueeze(0).expand(m, -1).contiguous()
            local = executor.run(LocalTask(model, data, clients, start, steps, cfg.batch_size, lr, round_seed, epochs=epochs))
        else:
            local, u_new = personalized_local_round(executor, model, data, clients, w, u, steps, cfg.batch_size, lr, round_seed,
                                                    epochs=epochs)
            u[torch.as_tensor(clients, device=device)] = u_new
        updates = local - w.unsqueeze(0)
        weights = torch.as_tensor(alpha_all[clients], dtype=torch.float64)
        mask = corrupted_t[torch.as_tensor(clients)]
        updates = corruption.corrupt_updates(updates, weights, mask.to(device), w=w, generator=gen,
                                             server_lr=cfg.server_lr, head=head)
        finite = torch.isfinite(updates).all(dim=1).cpu()
        n_calls_before = len(oracle.calls)
        rec: dict[str, Any] = {"round": t + 1, "lr": lr, "clients": clients.tolist(), "corrupted_selected": int(mask.sum()),
                               "dropped_nonfinite": int((~finite).sum())}
        if bool(finite.any()):
            keep = finite.nonzero().flatten()
            out = aggregator(updates[keep.to(device)], weights[keep], oracle)
            vec = out.vector.to(device=device, dtype=dtype)
            calls = oracle.calls[n_calls_before:]
            rec["oracle_calls"] = int(out.oracle_calls)
            if bool(torch.isfinite(vec).all()):
                w = w + cfg.server_lr * vec
                rec["update_norm"] = float(vec.norm())
            else:
                rec["skipped"] = True
        else:
            calls = []
            rec["oracle_calls"] = 0
            rec["skipped"] = True
        if secure:
            if oracle_name == "ideal":
                bpc = sum(secure_bytes_per_client(c.n_clients, c.dim) for c in calls)
            else:
                bpc = sum(float(c.bytes_per_client) for c in calls)
            eff = max((c.max_effective_weight for c in calls), default=0.0)
        else:
            bpc = float(4 * model.dim)  # each client uploads its float32 update in the clear
            eff = 1.0  # the server sees every update individually
        rec["bytes_per_client"] = bpc
        rec["max_effective_weight"] = eff
        max_eff_seen = max(max_eff_seen, eff)
        cum_calls += rec["oracle_calls"]
        rec["cumulative_oracle_calls"] = cum_calls
        if (t + 1) % cfg.eval_every == 0 or t + 1 == cfg.rounds:
            ev = evaluate(model, w, *clean_test)
            rec["accuracy"], rec["test_loss"] = ev["accuracy"], ev["loss"]
        history.append(rec)
        if progress is not None:
            progress(t + 1, rec)

    final = evaluate(model, w, *clean_test)
    result_final: dict[str, Any] = {"accuracy": final["accuracy"], "test_loss": final["loss"]}
    if data.local_offsets is not None:
        result_final.update(_local_eval(model, data, w, u, ~corrupted))
        if u is not None:
            g = _local_eval(model, data, w, None, ~corrupted)
            result_final["local_accuracy_shared_only"] = g["local_accuracy"]
    bd = corruption.backdoor_accuracy(lambda x: _predict(model, w, x.to(w.dtype)), data)
    if bd is not None:
        result_final["backdoor_accuracy"] = bd
    rounds_done = len(history)
    result_final.update({
        "secure_calls_per_round": sum(h["oracle_calls"] for h in history) / rounds_done,
        "bytes_per_client_per_round": sum(h["bytes_per_client"] for h in history) / rounds_done,
        "max_effective_weight": max_eff_seen,
        "secure_compatible": secure,
        "realised_rho": realised_rho,
        "wall_time_s": time.perf_counter() - t0,
    })
    info = {
        "data": data.describe(), "model_dim": model.dim, "device": str(device),
        "corrupted_clients": np.flatnonzero(corrupted).tolist(), "oracle": oracle_name,
        "aggregator": getattr(aggregator, "name", cfg.aggregator),
        "calls_per_aggregation": getattr(aggregator, "calls_per_aggregation", None),
        "reveals": getattr(aggregator, "reveals", None),
    }
    return RunResult(config=cfg.to_dict(), history=history, final=result_final, info=info, w=w, u=u)
