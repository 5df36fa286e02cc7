"""The federated loop: Algorithm 1 of Pillutla, Kakade, Harchaoui (RFA and any other aggregator) and
Algorithm 4 (personalization).

One round reads like the algorithm, one call per step (:class:`Round`)::

    S_t   = sample m of n clients without replacement             sample()        (line 2)
    w_i   = local SGD from w^(t) on each i in S_t                 local_train()   (lines 3-8)
    D_i   = w_i - w^(t)       updates, not models (footnote 4)
    D_i   = corruption(D_i) for corrupted i in S_t                corrupt()       (eq. 4)
    v     = aggregator(D, alpha_S, oracle)                        aggregate()     (line 9)
    w^(t+1) = w^(t) + server_lr * v                               server_step()
    bytes per client of the secure calls                          price_bytes()
    accuracy / loss every eval_every rounds                       evaluate_round()

with ``alpha_i = N_i / N``. Everything random derives from ``config.seed``: the same config gives
the same numbers (on the same device and torch version).

Never dies because of one client: a client whose update has NaN/Inf refuses (the aggregator's clients
leave it out), a finite update of any size is clipped by its own client to the public bound of the
secure oracle (``oracle_params["value_bound"]``, default :data:`DEFAULT_VALUE_BOUND`, fixed before the
run), and a call that still cannot complete (:class:`~secagg.errors.ProtocolAborted`: too few
survivors) makes the round *skipped* (``skipped``, ``skip_reason`` in its record) and training goes on.

Each round records what the privacy/robustness study needs, each metric one function of
:data:`ROUND_METRICS` (``metric(round_state) -> dict``): the secure-average calls made, the bytes per
participating client (measured by the oracle, or, for the ideal oracle, the analytical cost of the
secure protocol for the same call shapes), the largest effective weight any client had in any revealed
average (``s`` of Definition 1 (iv), read from the aggregator's ``revealed`` record; 1.0 for
plaintext-only aggregators, whose server sees every update in the clear) and, for revealed sign votes,
the share of coordinates where every client's sign is exposed.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from secagg.errors import InvalidInput, ProtocolAborted

from .attacks import AttackContext, make_corruption, select_corrupted
from .config import ConfigError, FLConfig
from .data import FederatedData, load_pooled
from .executor import Executor, LocalTask, make_executor
from .models import FlatModel, make_model
from .partition import partition
from .personalized import personalized_local_round

__all__ = ["RunResult", "run", "build_data", "make_oracle", "make_aggregator", "resolve_device", "secure_bytes_per_client",
           "evaluate", "Round", "ROUND_METRICS", "DEFAULT_VALUE_BOUND"]

DEFAULT_VALUE_BOUND = 10.0
"""The public per-coordinate bound ``c`` of the secure oracles in a run (``oracle_params["value_bound"]``
overrides it): each client clips its vector to ``[-c, c]`` before encoding, and the discretization grid is
fixed by it and by the configuration, never by a call's data. Model updates of the shipped tasks stay far
below it (their largest coordinate is ~1e-1); an aggregator with its own public clip passes that instead."""


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
    params.setdefault("value_bound", DEFAULT_VALUE_BOUND)
    if name == "modular":
        return _o.ModularOracle(**params)
    if name == "secagg":
        return _o.SecAggOracle(**params)
    raise ConfigError(f"unknown oracle {name!r}; choose ideal, modular or secagg")


def make_aggregator(name: str, **params: Any):
    from rfa import aggregators as _a

    return _a.make(name, **params)


@functools.lru_cache(maxsize=256)
def secure_bytes_split_per_client(m: int, d: int) -> tuple[float, float]:
    """(upload, download) bytes per client of one secure-average call with ``m`` clients and ``d``
    coordinates, from the same cost model as :func:`secure_bytes_per_client`."""
    from rfa.oracle import ModularOracle

    try:
        o = ModularOracle(seed=0)
        o(torch.zeros(m, d, dtype=torch.float64), torch.ones(m, dtype=torch.float64))
        return _split(o.calls[0])
    except ImportError:  # secagg.average not installed in this checkout: masked-input upload only
        return float(8 * (d + 1)), 0.0


def _split(call: Any) -> tuple[float, float]:
    """(upload, download) bytes per participating client of one oracle call: its mean
    ``bytes_per_client`` divided in the ratio of the call's total upload and download bytes."""
    up, down = float(call.bytes_up), float(call.bytes_down)
    per = float(call.bytes_per_client)
    if up + down <= 0:
        return 0.0, 0.0
    return per * up / (up + down), per * down / (up + down)


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
    # an exact fraction of the test examples (correct / total in float64), not a float32 mean
    correct, total = int((out.argmax(-1) == y).sum()), int(y.numel())
    return {"accuracy": correct / total if total else float("nan"), "loss": float(loss), "correct": correct, "total": total}


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
        if "correct" in r:
            correct += r["correct"]
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


ROUND_METRICS: list[Callable[["Round"], dict[str, Any]]] = []
"""Per-round metrics: each ``metric(round) -> dict`` adds its keys to the round's record (after the server
step). A new metric is one function appended here (or passed to :func:`run` as ``metrics=``)."""


def _metric(fn: Callable[["Round"], dict[str, Any]]) -> Callable[["Round"], dict[str, Any]]:
    ROUND_METRICS.append(fn)
    return fn


@dataclass
class Round:
    """The state of one round of Algorithm 1 as its steps fill it in."""

    t: int
    lr: float
    clients: np.ndarray | None = None
    updates: torch.Tensor | None = None
    weights: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    out: Any = None
    skip_reason: str | None = None
    record: dict[str, Any] = field(default_factory=dict)
    run: Any = field(default=None, repr=False)


class _Trainer:
    """One run's state and the steps of Algorithm 1, one method each."""

    def __init__(self, cfg: FLConfig, data: FederatedData, executor: Executor, oracle, aggregator,
                 device: torch.device, deviation=None) -> None:
        self.cfg, self.device, self.deviation = cfg, device, deviation
        n = data.num_clients
        self.n, self.m = n, cfg.clients_per_round
        self.rng = np.random.default_rng([cfg.seed, 1])
        self.sizes = data.sizes()
        if (self.sizes <= 0).any():
            raise InvalidInput("every client needs at least one training sample")
        self.corruption = make_corruption(cfg.corruption, **cfg.corruption_params)
        self.corrupted, self.realised_rho = select_corrupted(
            self.sizes, cfg.rho if self.corruption.kind != "none" else 0.0, np.random.default_rng([cfg.seed, 2]))
        self.data = self.corruption.poison_data(data, self.corrupted, np.random.default_rng([cfg.seed, 3])).to(device)
        self.model = make_model(cfg.model, self.data.input_shape, self.data.num_classes, **cfg.model_params).to(device)
        self.dtype = torch.float32
        self.w = self.model.init_vector(cfg.seed).to(device=device, dtype=self.dtype)
        self.u = torch.zeros(n, self.model.dim, device=device, dtype=self.dtype) if cfg.personalized else None
        self.aggregator = aggregator if aggregator is not None else make_aggregator(cfg.aggregator, **cfg.aggregator_params)
        self.oracle = oracle if oracle is not None else make_oracle(cfg.oracle, cfg.seed, **cfg.oracle_params)
        self.executor = executor
        self.oracle_name = str(getattr(self.oracle, "name", cfg.oracle))
        self.secure = bool(self.aggregator.secure_compatible)
        self.head = _head(self.model)
        self.gen = torch.Generator().manual_seed(cfg.seed * 7919 + 17)
        self.corrupted_t = torch.as_tensor(self.corrupted)
        self.alpha_all = self.sizes / self.sizes.sum()
        self.corruption.prepare(AttackContext(model=self.model, data=self.data, corrupted=self.corrupted, seed=cfg.seed,
                                              device=device, aggregator=self.aggregator, config=cfg))

    # ---- the steps of Algorithm 1 -------------------------------------------------------------
    def sample(self, r: Round) -> None:
        """Line 2: ``m`` of ``n`` clients without replacement (sorted)."""
        r.clients = np.sort(self.rng.choice(self.n, size=self.m, replace=False))

    def local_train(self, r: Round) -> None:
        """Lines 3-8: local SGD from ``w^(t)`` on each sampled client; ``r.updates = w_i - w^(t)``."""
        cfg, clients = self.cfg, r.clients
        if cfg.local_steps is not None:
            steps = np.full(self.m, cfg.local_steps, dtype=np.int64)
        else:
            steps = np.maximum(1, np.ceil(cfg.local_epochs * self.sizes[clients] / cfg.batch_size)).astype(np.int64)
        round_seed = int(np.random.default_rng([cfg.seed, 4, r.t]).integers(0, 2**62))
        epochs = cfg.local_steps is None  # local epochs: passes over the client's data without replacement
        if self.u is None:
            start = self.w.unsqueeze(0).expand(self.m, -1).contiguous()
            local = self.executor.run(LocalTask(self.model, self.data, clients, start, steps, cfg.batch_size, r.lr,
                                                round_seed, epochs=epochs))
        else:
            local, u_new = personalized_local_round(self.executor, self.model, self.data, clients, self.w, self.u, steps,
                                                    cfg.batch_size, r.lr, round_seed, epochs=epochs)
            self.u[torch.as_tensor(clients, device=self.device)] = u_new
        r.updates = local - self.w.unsqueeze(0)
        r.weights = torch.as_tensor(self.alpha_all[clients], dtype=torch.float64)

    def corrupt(self, r: Round) -> None:
        """Eq. 4: the corrupted clients among ``S_t`` replace their updates."""
        r.mask = self.corrupted_t[torch.as_tensor(r.clients)]
        r.updates = self.corruption.corrupt_updates(r.updates, r.weights, r.mask.to(self.device), w=self.w,
                                                    generator=self.gen, server_lr=self.cfg.server_lr, head=self.head)

    def aggregate(self, r: Round) -> None:
        """Line 9: the aggregator through the oracle. A call that cannot complete skips the round. With a
        ``deviation``, the round's corrupted clients also deviate from the protocol in every call."""
        oracle = self.oracle
        if self.deviation is not None and bool(r.mask.any()):
            from rfa.oracle import DeviatingOracle

            oracle = DeviatingOracle(self.oracle, r.mask.nonzero().flatten().tolist(), self.deviation, self.m)
        try:
            r.out = self.aggregator(r.updates, r.weights, oracle)
        except ProtocolAborted as exc:
            r.out, r.skip_reason = None, f"{type(exc).__name__}: {exc}"

    def server_step(self, r: Round) -> None:
        """``w^(t+1) = w^(t) + server_lr * v`` (skipped, with its reason, if ``v`` is not finite)."""
        if r.out is None:
            return
        vec = r.out.vector.to(device=self.device, dtype=self.dtype)
        if bool(torch.isfinite(vec).all()):
            self.w = self.w + self.cfg.server_lr * vec
            r.record["update_norm"] = float(vec.norm())
        else:
            r.skip_reason = "the aggregate is not finite"

    def price_bytes(self, r: Round) -> float:
        """Bytes per participating client of the round's secure calls (a call over ``k`` of the ``m``
        clients counts ``k / m`` of its per-client bytes); plaintext: the float32 update in the clear."""
        if not self.secure:
            return float(4 * self.model.dim)
        calls = r.out.calls if r.out is not None else []
        if self.oracle_name == "ideal":
            return sum(secure_bytes_per_client(c.n_clients, c.dim) * c.n_clients for c in calls) / self.m
        return sum(float(c.bytes_per_client) * c.n_clients for c in calls) / self.m

    def price_bytes_split(self, r: Round) -> tuple[float, float]:
        """:meth:`price_bytes` split into (upload, download) per participating client; plaintext:
        the float32 update uploaded in the clear, nothing down."""
        if not self.secure:
            return float(4 * self.model.dim), 0.0
        calls = r.out.calls if r.out is not None else []
        parts = [(secure_bytes_split_per_client(c.n_clients, c.dim) if self.oracle_name == "ideal" else _split(c), c.n_clients)
                 for c in calls]
        return (sum(p[0] * k for p, k in parts) / self.m, sum(p[1] * k for p, k in parts) / self.m)

    def evaluate_round(self, r: Round) -> None:
        if (r.t + 1) % self.cfg.eval_every == 0 or r.t + 1 == self.cfg.rounds:
            ev = evaluate(self.model, self.w, self.data.test_x, self.data.test_y)
            r.record["accuracy"], r.record["test_loss"] = ev["accuracy"], ev["loss"]
            r.record.update(self.corruption.metrics(lambda x: _predict(self.model, self.w, x.to(self.w.dtype)), self.data))

    def round(self, t: int, lr: float, metrics: list[Callable[[Round], dict[str, Any]]]) -> dict[str, Any]:
        r = Round(t=t, lr=lr, run=self)
        self.sample(r)
        self.local_train(r)
        self.corrupt(r)
        r.record.update({"round": t + 1, "lr": lr, "clients": r.clients.tolist(),
                         "corrupted_selected": int(r.mask.sum())})
        self.aggregate(r)
        self.server_step(r)
        for metric in metrics:
            r.record.update(metric(r))
        if r.out is not None:  # the released outputs are in the model now: keep the oracle's records light
            for c in r.out.calls:
                c.output = None
        if r.skip_reason is not None:
            r.record["skipped"] = True
            r.record["skip_reason"] = r.skip_reason
        self.evaluate_round(r)
        return r.record


@_metric
def _calls_metric(r: Round) -> dict[str, Any]:
    return {"oracle_calls": int(r.out.oracle_calls) if r.out is not None else 0,
            "dropped_nonfinite": len(r.out.info.get("refused", [])) if r.out is not None
            else int((~torch.isfinite(r.updates).all(dim=1)).sum())}


@_metric
def _bytes_metric(r: Round) -> dict[str, Any]:
    up, down = r.run.price_bytes_split(r)
    rec = {"bytes_per_client": r.run.price_bytes(r), "bytes_up_per_client": up, "bytes_down_per_client": down}
    calls = r.out.calls if (r.out is not None and r.run.secure) else []
    if calls:  # the smallest fraction of a call's clients whose inputs reached the average
        rec["survivor_fraction"] = min(len(c.survivors) / c.n_clients for c in calls)
    return rec


@_metric
def _privacy_metric(r: Round) -> dict[str, Any]:
    from rfa.aggregators import max_effective_weight, vote_exposure

    if r.out is None:
        return {"max_effective_weight": 0.0 if r.run.secure else 1.0}
    rec: dict[str, Any] = {"max_effective_weight": max_effective_weight(r.out)}
    votes = vote_exposure(r.out)
    if votes is not None:
        rec["vote_exposure"] = votes
    return rec


def run(
    cfg: FLConfig, *, data: FederatedData | None = None, executor: Executor | None = None, oracle=None,
    aggregator=None, progress: Callable[[int, dict], None] | None = None,
    metrics: list[Callable[[Round], dict[str, Any]]] | None = None, deviation=None,
) -> RunResult:
    """Run one configuration and return its :class:`RunResult`.

    ``data`` / ``executor`` / ``oracle`` / ``aggregator`` override what ``cfg`` would build (tests
    use this to share data or to pass custom objects); ``progress(round, record)`` is called after
    every round; ``metrics`` extends :data:`ROUND_METRICS` for this run. ``deviation`` (an
    :class:`rfa.oracle.Deviation`, or the corruption's ``deviation`` attribute when it has one) makes the
    corrupted clients of each round deviate from the protocol in every call over all ``m`` clients (the
    second threat model; the corruption of their updates applies as well).
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
    tr = _Trainer(cfg, data, executor or make_executor(cfg.executor), oracle, aggregator, device, deviation)
    if tr.deviation is None:
        tr.deviation = tr.corruption.deviation
    all_metrics = list(ROUND_METRICS) + list(metrics or [])
    history: list[dict[str, Any]] = []
    cum_calls = 0
    lr = cfg.lr
    max_eff_seen = 0.0
    votes_seen: float | None = None
    for t in range(cfg.rounds):
        if cfg.lr_decay_every and t > 0 and t % cfg.lr_decay_every == 0:
            lr *= cfg.lr_decay
        rec = tr.round(t, lr, all_metrics)
        max_eff_seen = max(max_eff_seen, rec["max_effective_weight"])
        if "vote_exposure" in rec:
            votes_seen = max(votes_seen or 0.0, rec["vote_exposure"])
        cum_calls += rec["oracle_calls"]
        rec["cumulative_oracle_calls"] = cum_calls
        history.append(rec)
        if progress is not None:
            progress(t + 1, rec)

    model, w, u, data = tr.model, tr.w, tr.u, tr.data
    final = evaluate(model, w, data.test_x, data.test_y)
    result_final: dict[str, Any] = {"accuracy": final["accuracy"], "test_loss": final["loss"]}
    if "correct" in final:
        result_final.update(test_correct=final["correct"], test_total=final["total"])
    if data.local_offsets is not None:
        result_final.update(_local_eval(model, data, w, u, ~tr.corrupted))
        if u is not None:
            g = _local_eval(model, data, w, None, ~tr.corrupted)
            result_final["local_accuracy_shared_only"] = g["local_accuracy"]
    result_final.update(tr.corruption.metrics(lambda x: _predict(model, w, x.to(w.dtype)), data))
    rounds_done = len(history)
    result_final.update({
        "secure_calls_per_round": sum(h["oracle_calls"] for h in history) / rounds_done,
        "bytes_per_client_per_round": sum(h["bytes_per_client"] for h in history) / rounds_done,
        "bytes_up_per_client_per_round": sum(h["bytes_up_per_client"] for h in history) / rounds_done,
        "bytes_down_per_client_per_round": sum(h["bytes_down_per_client"] for h in history) / rounds_done,
        "min_survivor_fraction": min((h["survivor_fraction"] for h in history if "survivor_fraction" in h), default=None),
        "max_effective_weight": max_eff_seen,
        "secure_compatible": tr.secure,
        "realised_rho": tr.realised_rho,
        "skipped_rounds": sum(1 for h in history if h.get("skipped")),
        "wall_time_s": time.perf_counter() - t0,
    })
    if votes_seen is not None:
        result_final["vote_exposure"] = votes_seen
    agg = tr.aggregator
    info = {
        "data": data.describe(), "model_dim": model.dim, "device": str(device),
        "corrupted_clients": np.flatnonzero(tr.corrupted).tolist(), "oracle": tr.oracle_name,
        "aggregator": agg.name, "calls_per_aggregation": agg.calls_per_aggregation, "reveals": agg.reveals,
    }
    return RunResult(config=cfg.to_dict(), history=history, final=result_final, info=info, w=w, u=u)
