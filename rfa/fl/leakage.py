"""The leakage study: how much of a target client's data the server reconstructs, against ``s``.

For each number ``m`` of clients per round and each trial, one round is played twice from the same
broadcast model: once with the target among the ``m`` sampled clients, once without it (the
calibration round). The clients train locally (the loop's own :func:`rfa.fl.executor.local_sgd`), each
aggregator combines their updates through a fresh secure average oracle, and the server's view of the
round (:class:`rfa.leakage.ServerView`, built only from the oracle's call records, or from the
updates themselves for plaintext-only aggregators) is attacked with :func:`rfa.leakage.invert_linear`
(the linear model, the default) or, opt-in, :func:`rfa.leakage.invert_gradients` (the ConvNet:
gradient matching of Geiping et al. through the same local steps, on 1-2 target examples).
Every revealed quantity gives one row: the target's effective weight ``s`` in it, the best PSNR/SSIM of a
reconstruction against the target's real examples, the label recovery, and the leakage, i.e. the metric
minus the best the same attack achieves on the calibration round (what population knowledge alone gives).

The default setting is the one gradient inversion is usually shown in (one local step on a small batch,
as in FedSGD): the regime where a single update leaks most. ``local_steps``/``batch_size`` change it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from rfa import leakage as lk

from .config import ConfigError
from .data import FederatedData, load_pooled
from .executor import LocalTask, local_sgd
from .models import make_model
from .partition import partition

__all__ = ["LeakageConfig", "LeakageUnit", "units", "run_unit", "summarise"]

DEFAULT_AGGREGATORS = ("coordinate-median", "fedavg", "rfa", "rfa-paper", "one-step-rfa")
DEFAULT_MS = (2, 3, 5, 10, 20)


@dataclass(frozen=True)
class LeakageConfig:
    """One leakage study (all of it is saved in every record so a row can be repeated).

    Attributes:
        dataset, partition, num_clients, dirichlet_alpha: the federated data, as in :class:`FLConfig`
            (an image data set: the attack compares images).
        model: ``linear`` (the analytic attack) or ``convnet`` (gradient matching, opt-in: heavy on a
            CPU, so it needs ``examples_per_client`` of 1 or 2, which is also its number of dummy
            images).
        attack_iterations: the gradient-matching attack's Adam iterations (``convnet`` only).
        aggregators: registry names (:func:`rfa.aggregators.make`); plaintext-only ones reveal every
            update.
        ms: clients per round (a secure aggregation needs at least 2).
        trials: rounds played per ``m`` (each with fresh co-participants and SGD noise).
        local_steps, batch_size, lr: local training (one step on a small batch by default: FedSGD).
        oracle: ``modular`` (bit-identical to the full protocol) or ``ideal`` or ``secagg``.
        examples_per_client: keep only each client's first so many training examples (clients with
            little data are the most exposed: fewer examples share each reconstructed row).
        target: the attacked client (default: the client with the most examples, whose weight
            alpha_i = N_i / N, and so whose ``s``, is the largest).
        seed: everything random derives from it.
    """

    dataset: str = "mnist5k"
    partition: str = "dirichlet"
    num_clients: int = 50
    dirichlet_alpha: float = 1.0
    model: str = "linear"
    aggregators: tuple[str, ...] = DEFAULT_AGGREGATORS
    ms: tuple[int, ...] = DEFAULT_MS
    trials: int = 3
    local_steps: int = 1
    batch_size: int = 8
    lr: float = 0.1
    oracle: str = "modular"
    target: int | None = None
    examples_per_client: int | None = None
    seed: int = 0
    device: str = "cpu"
    attack_iterations: int = 300

    def validate(self) -> None:
        if self.model not in ("linear", "convnet"):
            raise ConfigError(f"the leakage study attacks model='linear' (analytic) or 'convnet' (gradient matching); got {self.model!r}")
        if self.model == "convnet":
            if self.examples_per_client not in (1, 2):
                raise ConfigError("the ConvNet attack reconstructs 1-2 target examples: set examples_per_client to 1 or 2")
            if int(self.attack_iterations) < 1:
                raise ConfigError(f"attack_iterations must be >= 1, got {self.attack_iterations}")
        if not self.ms or any(int(m) < 2 for m in self.ms):
            raise ConfigError(f"clients per round must all be >= 2 (a secure aggregation needs two); got {list(self.ms)}")
        if max(self.ms) > self.num_clients - 1:
            raise ConfigError(f"m = {max(self.ms)} needs at least {max(self.ms) + 1} clients (the calibration round leaves the target out)")
        for name, v in (("trials", self.trials), ("local_steps", self.local_steps), ("batch_size", self.batch_size)):
            if int(v) < 1:
                raise ConfigError(f"{name} must be >= 1, got {v}")
        if self.examples_per_client is not None and int(self.examples_per_client) < 1:
            raise ConfigError(f"examples_per_client must be >= 1, got {self.examples_per_client}")
        if not (np.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"lr must be a positive finite number, got {self.lr}")
        if not self.aggregators:
            raise ConfigError("no aggregators given")
        from rfa import aggregators as _a

        for a in self.aggregators:
            _a.make(a)  # raises on an unknown name


@dataclass(frozen=True)
class LeakageUnit:
    """One saved piece of work: one aggregator, one ``m``, one trial."""

    aggregator: str
    m: int
    trial: int

    def key(self, cfg: LeakageConfig) -> str:
        blob = json.dumps({"cfg": _config_dict(cfg), "unit": asdict(self)}, sort_keys=True, default=list)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _config_dict(cfg: LeakageConfig) -> dict[str, Any]:
    """The config as saved keys see it; the linear study's keys are those it had before the ConvNet
    attack's options existed, so its saved runs still resume."""
    d = asdict(cfg)
    if cfg.model == "linear":
        d.pop("attack_iterations")
    return d


def units(cfg: LeakageConfig) -> list[LeakageUnit]:
    return [LeakageUnit(a, int(m), t) for m in cfg.ms for t in range(cfg.trials) for a in cfg.aggregators]


@dataclass
class _Setup:
    data: FederatedData
    model: Any
    w: torch.Tensor
    target: int
    target_x: np.ndarray
    target_y: np.ndarray
    image_shape: tuple[int, int]


_SETUPS: dict[str, _Setup] = {}


def _setup(cfg: LeakageConfig) -> _Setup:
    key = json.dumps(_config_dict(cfg), sort_keys=True, default=list)
    if key in _SETUPS:
        return _SETUPS[key]
    pooled = load_pooled(cfg.dataset, seed=cfg.seed)
    if pooled.kind != "image":
        raise ConfigError(f"the leakage study compares images; {cfg.dataset!r} is {pooled.kind}")
    data = partition(pooled, name=cfg.dataset, scheme=cfg.partition, num_clients=cfg.num_clients,
                     alpha=cfg.dirichlet_alpha, test_fraction=0.2, local_test_fraction=0.0, seed=cfg.seed)
    if cfg.examples_per_client is not None:
        data = _cap(data, int(cfg.examples_per_client))
    sizes = data.sizes()
    target = int(np.argmax(sizes)) if cfg.target is None else int(cfg.target)
    if not 0 <= target < data.num_clients:
        raise ConfigError(f"target {target} is not a client (0..{data.num_clients - 1})")
    model = make_model(cfg.model, data.input_shape, data.num_classes)
    w = model.init_vector(cfg.seed).to(torch.float32)
    if cfg.model == "convnet":
        model.to(cfg.device)
        w = w.to(cfg.device)
    tx, ty = data.client(target)
    shape = tuple(int(s) for s in data.input_shape[-2:])
    s = _Setup(data, model, w, target, tx.reshape(len(tx), -1).double().numpy(), ty.numpy(), shape)  # type: ignore[arg-type]
    _SETUPS[key] = s
    return s


def _cap(data: FederatedData, k: int) -> FederatedData:
    """The same clients with only their first ``k`` training examples each."""
    import dataclasses

    off = data.offsets.tolist()
    rows = [i for c in range(data.num_clients) for i in range(off[c], min(off[c + 1], off[c] + k))]
    sizes = [min(off[c + 1] - off[c], k) for c in range(data.num_clients)]
    idx = torch.as_tensor(rows, dtype=torch.long)
    new_off = torch.as_tensor(np.concatenate([[0], np.cumsum(sizes)]), dtype=data.offsets.dtype)
    return dataclasses.replace(data, x=data.x[idx], y=data.y[idx], offsets=new_off)


def _round(cfg: LeakageConfig, st: _Setup, clients: np.ndarray, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Local training of ``clients`` from the broadcast model: their updates and weights alpha_i."""
    m = len(clients)
    start = st.w.unsqueeze(0).expand(m, -1).contiguous()
    steps = np.full(m, cfg.local_steps, dtype=np.int64)
    local = local_sgd(LocalTask(st.model, st.data, clients, start, steps, cfg.batch_size, cfg.lr, seed))
    sizes = st.data.sizes()
    return local - st.w.unsqueeze(0), torch.as_tensor(sizes[clients] / sizes.sum(), dtype=torch.float64)


def _views(cfg: LeakageConfig, st: _Setup, name: str, clients: np.ndarray, seed: int) -> lk.ServerView:
    from rfa import aggregators as _a
    from rfa.fl.loop import make_oracle

    updates, weights = _round(cfg, st, clients, seed)
    agg = _a.make(name)
    oracle = make_oracle(cfg.oracle, seed) if agg.secure_compatible else None
    out = agg(updates, weights, oracle)
    return lk.view_from_output(0, st.w, out, updates, clients.tolist())


def _attack(cfg: LeakageConfig, view: lk.ServerView, r: lk.Revealed, st: _Setup) -> lk.Reconstruction:
    """The study's attack on one revealed quantity: it reads ``r.vector``, the broadcast model and the
    public hyperparameters, never ``r.weights`` (the auditor's) nor the target's data."""
    if cfg.model == "convnet":
        return lk.invert_gradients(r.vector, view.broadcast, st.model, tuple(st.data.input_shape), lr=cfg.lr,
                                   steps=cfg.local_steps, num_images=int(cfg.examples_per_client or 1),
                                   iterations=int(cfg.attack_iterations), seed=cfg.seed, device=cfg.device)
    return lk.invert_linear(r.vector, st.model.k, st.model.d_in, lr=cfg.lr, batch_size=cfg.batch_size,
                            steps=cfg.local_steps)


def _best(cfg: LeakageConfig, view: lk.ServerView, st: _Setup, only: int | None = None) -> list[tuple[lk.Revealed, lk.Score]]:
    """Attack every revealed quantity (``only``: skip plaintext updates that are not that client's,
    the rows :func:`run_unit` drops anyway, which the costly ConvNet attack need not run on)."""
    out = []
    for r in view.revealed:
        if only is not None and r.kind == "update" and r.weight_of(only) == 0.0:
            continue
        out.append((r, lk.score(_attack(cfg, view, r, st), st.target_x, st.target_y, st.image_shape)))
    return out


def _rounds(cfg: LeakageConfig, st: _Setup, m: int, trial: int) -> tuple[np.ndarray, np.ndarray, int]:
    """The round with the target (it and ``m - 1`` others) and its calibration twin: the same others,
    the target replaced by one more client, the same SGD seed. Pairing them leaves the target's
    contribution as the only difference, so the calibration removes what the co-participants (and the
    population) give the attack."""
    others = np.array([c for c in range(st.data.num_clients) if c != st.target])
    rng = np.random.default_rng([cfg.seed, 11, m, trial])
    pick = rng.choice(others, size=m, replace=False)
    with_t = np.sort(np.append(pick[: m - 1], st.target))
    without = np.sort(pick)
    return with_t, without, int(rng.integers(0, 2**62))


def run_unit(cfg: LeakageConfig, unit: LeakageUnit) -> list[dict[str, Any]]:
    """Play one (aggregator, m, trial): the rows of every revealed quantity, calibrated."""
    st = _setup(cfg)
    with_t, without, seed = _rounds(cfg, st, unit.m, unit.trial)
    cal = _best(cfg, _views(cfg, st, unit.aggregator, without, seed), st)
    cal_psnr = max(s.psnr for _, s in cal)
    cal_ssim = max(s.ssim for _, s in cal)
    cal_recall = max(s.label_recall for _, s in cal)
    rows = []
    only = st.target if cfg.model == "convnet" else None
    for r, s in _best(cfg, _views(cfg, st, unit.aggregator, with_t, seed), st, only):
        w_t = r.weight_of(st.target)
        if r.kind == "update" and w_t == 0.0:
            continue  # another client's plaintext update: not the target's
        rows.append({
            "aggregator": unit.aggregator, "m": unit.m, "trial": unit.trial, "round": 0, "call": r.call,
            "kind": r.kind, "target": st.target, "s": w_t, "psnr": s.psnr, "ssim": s.ssim,
            "label_recall": s.label_recall, "label_precision": s.label_precision,
            "calibration_psnr": cal_psnr, "calibration_ssim": cal_ssim, "calibration_label_recall": cal_recall,
            "leakage": s.ssim - cal_ssim, "leakage_psnr": s.psnr - cal_psnr,
        })
    return rows


def gallery(cfg: LeakageConfig, picks: Sequence[tuple[str, int]], *, trial: int = 0) -> list[tuple[str, np.ndarray, np.ndarray, float]]:
    """For each (aggregator, m): from the call that weighs the target most, the reconstruction closest
    (by SSIM) to one of the target's examples, that example, and the SSIM: ``(label, recon, example, ssim)``."""
    from skimage.metrics import structural_similarity

    st = _setup(cfg)
    h, w = st.image_shape
    out = []
    for name, m in picks:
        with_t, _, seed = _rounds(cfg, st, m, trial)
        view = _views(cfg, st, name, with_t, seed)
        r = max(view.revealed, key=lambda q: q.weight_of(st.target))
        cand = _attack(cfg, view, r, st).candidates()
        best = (-np.inf, cand[0], st.target_x[0])
        for c in cand:
            for x in st.target_x:
                sc = structural_similarity(x.reshape(h, w), c.reshape(h, w), data_range=1.0)
                if sc > best[0]:
                    best = (sc, c, x)
        out.append((f"{name}, m={m}, s={r.weight_of(st.target):.2f}", best[1].reshape(h, w), best[2].reshape(h, w), float(best[0])))
    return out


def summarise(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (aggregator, m): mean s, the best (over calls) SSIM/PSNR/leakage averaged over trials."""
    groups: dict[tuple[str, int], dict[int, list[dict]]] = {}
    for r in rows:
        groups.setdefault((r["aggregator"], int(r["m"])), {}).setdefault(int(r["trial"]), []).append(r)
    out = []
    for (a, m), trials in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        best = [max(rs, key=lambda r: r["ssim"]) for rs in trials.values()]
        mx = [max(r["s"] for r in rs) for rs in trials.values()]
        out.append({
            "aggregator": a, "m": m, "trials": len(best), "max_s": float(np.mean(mx)),
            "ssim": float(np.mean([b["ssim"] for b in best])), "psnr": float(np.mean([b["psnr"] for b in best])),
            "leakage": float(np.mean([b["leakage"] for b in best])),
            "leakage_psnr": float(np.mean([b["leakage_psnr"] for b in best])),
            "label_recall": float(np.mean([b["label_recall"] for b in best])),
            "calls": int(np.mean([len(rs) for rs in trials.values()])),
        })
    return out
