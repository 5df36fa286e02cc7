"""Corruption models: which clients are corrupted, and what they do.

Every corruption is one class registered under its name in :data:`REGISTRY` (this module is the one
place); :func:`make_corruption` builds one from its name and typed keyword parameters, and an unknown
parameter name is an :class:`~secagg.errors.InvalidInput` that lists the accepted ones. A new attack is
one class with ``@register`` (see :mod:`rfa.fl.literature_attacks` for examples).

Threat model of every corruption here: a corrupted client changes its *data* (data write) or its
*update* ``Delta_i = w_i - w`` (model write) before the honest client code computes its weight,
clips and encodes it for the secure average; the protocol itself is followed.

Corrupted set (Pillutla, Kakade, Harchaoui, "Robust Aggregation for Federated Learning", eq. 5, as
their reference scripts do it): shuffle the clients with the run's seed and take the shortest prefix
whose share of the data points reaches ``rho``; the realised level ``sum_{i in C} N_i / N`` is
reported. The held-out test data is never corrupted.

Data write (static data poisoning, Pillutla et al. Section V-A(a); Ozdayi, Kantarcioglu, Gel,
"Defending against Backdoors in Federated Learning with Robust Learning Rate", AAAI 2021):
  ``image-negation`` x -> 1 - x; ``label-flip`` y -> K - 1 - y; ``text-reversal``
  (c_1..c_21) -> (c_21..c_1); ``data-poisoning`` picks the paper's choice for the data kind
  (images: negation, text: reversal, others: label flip, regression: y -> -y);
  ``backdoor`` (trojan: a plus pattern in the top-left corner on a fraction P of the base-class
  samples, relabelled as the target class) and ``distributed-backdoor`` (the plus split into 4
  parts over the corrupted clients, Xie et al. 2020 as tested by Ozdayi et al.). Backdoor metrics
  (Ozdayi et al. Section 4): validation accuracy, base-class accuracy (clean base-class test
  images classified correctly) and backdoor accuracy (base-class test images with the full trojan
  classified as the target).

Model write (update poisoning, applied to the updates of selected corrupted clients; ``weights``
are the clients' ``alpha_i``):
  ``gaussian``   Delta_i + N(0, sigma_i^2 I), sigma_i^2 the variance of Delta_i's components (V-A(b));
  ``omniscient`` every corrupted client sends c - 2 (N / N_c) a, where a is the weighted mean of
                 all selected updates and c that of the corrupted ones (N, N_c: total weights); the
                 weighted mean becomes exactly -a (V-A(c), reference-code formula);
  ``ipm``        inner-product manipulation (Xie, Koyejo, Gupta, "Fall of Empires", UAI 2019):
                 -eps * mean of honest updates;
  ``alie``       "a little is enough" (Baruch, Baruch, Goldberg, NeurIPS 2019): mean - z * std of
                 honest updates per coordinate, z = Phi^{-1}((m - s) / m), s = floor(m / 2 + 1) - f;
  ``random``     random attack (Shen, Li, Zheng, "Learning to Attack Distributionally Robust FL"):
                 N(0, scale^2 I) vectors;
  ``cga``        counter-gradient attack ("An equivalence between data poisoning and Byzantine
                 gradient attacks", Section 5.1, eqs. 5-6): estimate the honest aggregate from the
                 last global step, then send the update that moves the global model onto the
                 attacker's target theta_s; ``radius`` projects it on an l2 ball (Proposition 1,
                 l2 case). ``target="trained"`` (default, as the paper's Appendix G does it):
                 theta_s is a model trained on the whole training set relabelled k -> k + 1
                 (y -> -y for regression), cached per configuration; ``target="fixed"`` takes the
                 first non-zero global model with its output classes cyclically shifted (negated
                 without a classification head); ``target="moving"`` re-derives that shift from the
                 current model every round (an untargeted class-rotation variant).

The literature's strongest attacks (sign flipping, Min-Max, Min-Sum, Fang et al.'s attacks on
median and Krum, model replacement, aggregator-aware Opt-IPM / Opt-ALIE) live in
:mod:`rfa.fl.literature_attacks` and register here.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any, Callable, ClassVar

import numpy as np
import torch

from secagg.errors import InvalidInput

from .data import FederatedData

__all__ = [
    "CORRUPTIONS",
    "DATA_CORRUPTIONS",
    "UPDATE_CORRUPTIONS",
    "REGISTRY",
    "AttackContext",
    "Corruption",
    "register",
    "make_corruption",
    "select_corrupted",
    "plus_pattern",
    "omniscient",
]


def select_corrupted(sizes: np.ndarray, rho: float, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """Corrupted clients: the shortest prefix of a random permutation whose share of the data points
    reaches ``rho`` (eq. 5 with alpha_i = N_i / N). Returns (boolean mask, realised rho)."""
    sizes = np.asarray(sizes, dtype=np.float64)
    mask = np.zeros(len(sizes), dtype=bool)
    if rho <= 0:
        return mask, 0.0
    total = sizes.sum()
    share = 0.0
    for i in rng.permutation(len(sizes)):
        if share >= rho:
            break
        mask[i] = True
        share += sizes[i] / total
    if mask.all():
        raise InvalidInput(f"rho={rho} corrupts every client")
    return mask, float(share)


def plus_pattern(h: int, w: int, size: int = 5, offset: int = 1, parts: int = 1) -> list[torch.Tensor]:
    """Boolean masks of a ``size`` x ``size`` plus sign at (offset, offset) (Ozdayi et al., Figure 1).
    With ``parts=4`` the plus is split into its four arms (the centre goes with the first), as in the
    distributed backdoor of Ozdayi et al., Table 2."""
    size = max(3, min(size, h - offset, w - offset))
    c = size // 2
    full = torch.zeros(h, w, dtype=torch.bool)
    arms = [torch.zeros(h, w, dtype=torch.bool) for _ in range(4)]
    for r in range(size):
        full[offset + r, offset + c] = True
        full[offset + c, offset + r] = True
        (arms[0] if r <= c else arms[1])[offset + r, offset + c] = True  # top (with centre), bottom
    for r in range(size):
        if r < c:
            arms[2][offset + c, offset + r] = True  # left
        elif r > c:
            arms[3][offset + c, offset + r] = True  # right
    return [full] if parts == 1 else arms


def omniscient(updates: torch.Tensor, weights: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Pillutla et al. V-A(c) as coded in their reference implementation: corrupted rows become
    ``c - 2 (N / N_c) a`` with ``a = sum_i N_i Delta_i / N`` over all rows and
    ``c = sum_{i in C} N_i Delta_i / N_c``; then ``sum_i N_i Delta'_i / N = -a`` exactly (in exact
    arithmetic). Rows outside ``mask`` are returned unchanged."""
    if not bool(mask.any()):
        return updates
    w = weights.to(device=updates.device, dtype=updates.dtype)
    mask = mask.to(updates.device)
    n_tot = w.sum()
    n_c = w[mask].sum()
    a = (w[:, None] * updates).sum(0) / n_tot
    c = (w[mask][:, None] * updates[mask]).sum(0) / n_c
    out = updates.clone()
    out[mask] = c - 2.0 * (n_tot / n_c) * a
    return out


# ---------------------------------------------------------------------------------------- registry
@dataclass
class AttackContext:
    """What the loop tells a corruption once, before the first round (:meth:`Corruption.prepare`):
    the model, the (clean) federated data, the corrupted mask, the run seed, the device and the
    aggregator the server runs (an aggregator-aware attack such as Opt-IPM simulates it)."""

    model: Any
    data: FederatedData
    corrupted: np.ndarray
    seed: int
    device: torch.device
    aggregator: Any = None
    config: Any = None


REGISTRY: dict[str, type["Corruption"]] = {}


def register(cls: type["Corruption"]) -> type["Corruption"]:
    """Class decorator: add ``cls`` to :data:`REGISTRY` under ``cls.name`` (names are unique)."""
    if not getattr(cls, "name", None) or cls.kind not in ("none", "data", "update", "data+update"):
        raise TypeError(f"{cls.__name__} needs a name and a kind")
    if cls.name in REGISTRY and REGISTRY[cls.name] is not cls:
        raise TypeError(f"corruption name {cls.name!r} registered twice")
    REGISTRY[cls.name] = cls
    return cls


def _coerce(cname: str, pname: str, hint: Any, value: Any) -> Any:
    """``value`` converted to the field type ``hint`` (float, int, str, bool, or one of them | None);
    anything else is an InvalidInput naming the corruption and the parameter."""
    args = typing.get_args(hint)
    if type(hint) is types.UnionType or typing.get_origin(hint) is typing.Union:
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        hint = inner[0] if len(inner) == 1 else hint
    bad = InvalidInput(f"corruption {cname!r}: parameter {pname} must be {getattr(hint, '__name__', hint)}, got {value!r}")
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if hint is int:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise bad
    if hint is float:
        if isinstance(value, str):  # the command line's key=value text: "inf", "1e8", "nan"
            try:
                return float(value)
            except ValueError:
                raise bad from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise bad
        return value
    return value


class Corruption:
    """Base of every corruption model (subclasses are frozen-parameter dataclasses).

    ``kind``: ``none``, ``data`` (changes the corrupted clients' data once, :meth:`poison_data`),
    ``update`` (changes their updates every round, :meth:`corrupt_updates`) or ``data+update``
    (both). ``params`` are the constructor's typed fields; per-run state lives in ``_state``."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = "none"

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            setattr(self, f.name, _coerce(self.name, f.name, hints[f.name], getattr(self, f.name)))
        self._state: dict[str, Any] = {}
        self.validate()

    def validate(self) -> None:
        """Range checks of the parameters (InvalidInput); the base accepts everything."""

    @classmethod
    def accepted(cls) -> tuple[str, ...]:
        """The parameter names the constructor accepts."""
        return tuple(f.name for f in dataclasses.fields(cls)) if dataclasses.is_dataclass(cls) else ()

    @property
    def params(self) -> dict[str, Any]:
        """The parameters as a dict (every field, defaults included)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)} if dataclasses.is_dataclass(self) else {}

    @property
    def deviation(self):  # noqa: ANN201 - rfa.oracle.Deviation | None
        """How the corrupted clients deviate from the secure aggregation protocol itself (the second
        threat model, :class:`rfa.oracle.Deviation`); None (default): they run the protocol honestly."""
        return None

    # ------------------------------------------------------------------ hooks
    def prepare(self, ctx: AttackContext) -> None:
        """Called once by the loop before the first round (default: nothing)."""

    def poison_data(self, data: FederatedData, corrupted: np.ndarray, rng: np.random.Generator) -> FederatedData:
        """A copy of ``data`` whose corrupted clients' training data is poisoned (default: ``data``)."""
        return data

    def corrupt_updates(
        self, updates: torch.Tensor, weights: torch.Tensor, mask: torch.Tensor, *, w: torch.Tensor,
        generator: torch.Generator, server_lr: float = 1.0, head: tuple[int, int, int] | None = None,
    ) -> torch.Tensor:
        """Corrupted rows (``mask``) of ``updates`` replaced per the model. Called every round (also
        when no corrupted client is selected) so that stateful attacks (CGA) can follow the model.
        Default: ``updates`` unchanged."""
        return updates

    def metrics(self, predict: Callable[[torch.Tensor], torch.Tensor], data: FederatedData) -> dict[str, float]:
        """Attack-specific metrics of the model ``predict(x) -> labels`` (default: none)."""
        return {}

    def backdoor_accuracy(self, predict: Callable[[torch.Tensor], torch.Tensor], data: FederatedData) -> float | None:
        """Ozdayi et al.'s backdoor accuracy, ``None`` when the corruption plants no backdoor."""
        return self.metrics(predict, data).get("backdoor_accuracy")


def _names(kinds: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(n for n, c in REGISTRY.items() if c.kind in kinds)


def make_corruption(name: str, **params: Any) -> Corruption:
    """The corruption ``name`` (see :data:`CORRUPTIONS`) with its typed parameters, e.g.
    ``make_corruption("ipm", eps=0.5)``; unknown names or parameter names are InvalidInput."""
    cls = REGISTRY.get(name)
    if cls is None:
        raise InvalidInput(f"unknown corruption {name!r}; choose one of {', '.join(REGISTRY)}")
    unknown = sorted(set(params) - set(cls.accepted()))
    if unknown:
        ok = ", ".join(cls.accepted()) or "none"
        raise InvalidInput(f"corruption {name!r} has no parameter {', '.join(unknown)}; accepted: {ok}")
    return cls(**params)


# ---------------------------------------------------------------------------------------- none
@register
@dataclass
class NoCorruption(Corruption):
    """No corruption (every client honest)."""

    name: ClassVar[str] = "none"
    kind: ClassVar[str] = "none"


# ---------------------------------------------------------------------------------------- data write
def _client_rows(data: FederatedData, corrupted: np.ndarray) -> list[np.ndarray]:
    return [np.arange(int(data.offsets[i]), int(data.offsets[i + 1])) for i in np.flatnonzero(corrupted)]


def _with(data: FederatedData, x: torch.Tensor, y: torch.Tensor) -> FederatedData:
    out = data.to(data.x.device)
    out.x, out.y = x, y
    return out


@dataclass
class _RowPoisoning(Corruption):
    """A data write applied to every training row of the corrupted clients."""

    kind: ClassVar[str] = "data"

    def poison_data(self, data, corrupted, rng):
        if not corrupted.any():
            return data
        x, y = data.x.clone(), data.y.clone()
        idx = torch.from_numpy(np.concatenate(_client_rows(data, corrupted))).to(x.device)
        self._apply(data, x, y, idx)
        return _with(data, x, y)

    def _apply(self, data: FederatedData, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> None:
        raise NotImplementedError


@register
@dataclass
class ImageNegation(_RowPoisoning):
    """Pillutla et al. V-A(a), images: ``x -> 1 - x`` (labels kept)."""

    name: ClassVar[str] = "image-negation"

    def _apply(self, data, x, y, idx):
        if data.kind != "image":
            raise InvalidInput("image negation needs image data")
        x[idx] = 1.0 - x[idx]


@register
@dataclass
class LabelFlip(_RowPoisoning):
    """Label flip ``y -> K - 1 - y`` (``y -> -y`` for regression)."""

    name: ClassVar[str] = "label-flip"

    def _apply(self, data, x, y, idx):
        if data.num_classes is None:
            y[idx] = -y[idx]
        else:
            y[idx] = data.num_classes - 1 - y[idx]


@register
@dataclass
class TextReversal(_RowPoisoning):
    """Pillutla et al. V-A(a), text: the 21 characters (20 inputs and the next-character label) reversed."""

    name: ClassVar[str] = "text-reversal"

    def _apply(self, data, x, y, idx):
        if data.kind != "text":
            raise InvalidInput("text reversal needs character-sequence data")
        full = torch.cat([x[idx], y[idx].unsqueeze(1)], dim=1).flip(1)
        x[idx] = full[:, :-1]
        y[idx] = full[:, -1]


_BY_KIND = {"image": ImageNegation, "text": TextReversal}


@register
@dataclass
class DataPoisoning(_RowPoisoning):
    """The paper's data poisoning for the data kind: image negation, text reversal, else label flip."""

    name: ClassVar[str] = "data-poisoning"

    def _apply(self, data, x, y, idx):
        _BY_KIND.get(data.kind, LabelFlip)()._apply(data, x, y, idx)


@dataclass
class _Trojan(Corruption):
    """Trojan backdoor of Ozdayi et al.: a fraction ``fraction`` of every corrupted client's
    base-class samples gets the plus pattern (pixel value ``value``) and the target label.
    ``pattern_size`` / ``offset`` default to 5 / 1 on images of height >= 20, else 3 / 0."""

    kind: ClassVar[str] = "data"
    parts: ClassVar[int] = 1
    base_class: int = 1
    target_class: int = 7
    fraction: float = 0.5
    value: float = 1.0
    pattern_size: int | None = None
    offset: int | None = None

    def validate(self) -> None:
        if not 0.0 <= self.fraction <= 1.0:
            raise InvalidInput(f"corruption {self.name!r}: fraction must lie in [0, 1], got {self.fraction}")
        if self.base_class == self.target_class:
            raise InvalidInput(f"corruption {self.name!r}: base_class and target_class must differ")

    def _trojan_masks(self, data: FederatedData) -> list[torch.Tensor]:
        if data.kind != "image":
            raise InvalidInput("backdoor trojans need image data")
        _, h, w = data.input_shape
        size = self.pattern_size if self.pattern_size is not None else (5 if h >= 20 else 3)
        offset = self.offset if self.offset is not None else (1 if h >= 20 else 0)
        return plus_pattern(h, w, size, offset, parts=self.parts)

    def poison_data(self, data, corrupted, rng):
        if not corrupted.any():
            return data
        x, y = data.x.clone(), data.y.clone()
        masks = self._trojan_masks(data)
        for j, r in enumerate(_client_rows(data, corrupted)):
            r = torch.from_numpy(r).to(y.device)  # data may already live on the GPU
            cand = r[(y[r] == self.base_class)]
            k = int(round(self.fraction * len(cand)))
            if k == 0:
                continue
            pick = cand[torch.from_numpy(rng.permutation(len(cand))[:k]).to(y.device)]
            pat = masks[j % len(masks)].to(x.device)
            xs = x[pick]
            xs[:, :, pat] = self.value
            x[pick] = xs
            y[pick] = self.target_class
        return _with(data, x, y)

    def metrics(self, predict, data):
        """Ozdayi et al. Section 4, on the held-out data: ``base_class_accuracy`` (clean base-class
        images classified as the base class) and ``backdoor_accuracy`` (the same images with the
        complete trojan classified as the target class). Validation accuracy is the loop's
        ``accuracy``. Empty when the test set has no base-class image."""
        sel = data.test_y == self.base_class
        if not bool(sel.any()):
            return {}
        clean = data.test_x[sel]
        xs = clean.clone()
        full = torch.zeros_like(self._trojan_masks(data)[0])
        for m in self._trojan_masks(data):
            full |= m
        xs[:, :, full.to(xs.device)] = self.value
        return {"backdoor_accuracy": float((predict(xs) == self.target_class).float().mean()),
                "base_class_accuracy": float((predict(clean) == self.base_class).float().mean())}


@register
@dataclass
class Backdoor(_Trojan):
    """Trojan backdoor (Ozdayi et al.): the full plus on every corrupted client."""

    name: ClassVar[str] = "backdoor"


@register
@dataclass
class DistributedBackdoor(_Trojan):
    """Distributed backdoor (Xie et al., ICLR 2020, as tested by Ozdayi et al. Table 2): the plus is
    split into its 4 arms, corrupted client j plants arm j mod 4; tested with the full plus."""

    name: ClassVar[str] = "distributed-backdoor"
    parts: ClassVar[int] = 4


# ---------------------------------------------------------------------------------------- model write
@dataclass
class _UpdateCorruption(Corruption):
    """A model write that acts only when a corrupted client is selected (rows ``mask``)."""

    kind: ClassVar[str] = "update"

    def corrupt_updates(self, updates, weights, mask, *, w, generator, server_lr=1.0, head=None):
        if not bool(mask.any()):
            return updates
        return self._corrupt(updates, weights, mask, generator)

    def _corrupt(self, updates: torch.Tensor, weights: torch.Tensor, mask: torch.Tensor,
                 generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError


def _honest_or_all(updates: torch.Tensor, mask: torch.Tensor, min_rows: int = 1) -> torch.Tensor:
    honest = ~mask
    return updates[honest] if int(honest.sum()) >= min_rows else updates


@register
@dataclass
class Gaussian(_UpdateCorruption):
    """Pillutla et al. V-A(b): ``Delta_i + N(0, sigma_i^2 I)`` with ``sigma_i^2`` the variance of the
    components of ``Delta_i``, times ``scale``."""

    name: ClassVar[str] = "gaussian"
    scale: float = 1.0

    def _corrupt(self, updates, weights, mask, generator):
        out = updates.clone()
        var = updates[mask].var(dim=1, keepdim=True)
        noise = torch.randn(out[mask].shape, generator=generator, dtype=out.dtype).to(out.device)
        out[mask] = updates[mask] + noise * var.sqrt() * self.scale
        return out


@register
@dataclass
class Omniscient(_UpdateCorruption):
    """Pillutla et al. V-A(c), reference-code formula (:func:`omniscient`): the weighted mean becomes
    minus itself."""

    name: ClassVar[str] = "omniscient"

    def _corrupt(self, updates, weights, mask, generator):
        return omniscient(updates, weights, mask)


@register
@dataclass
class IPM(_UpdateCorruption):
    """Inner-product manipulation (Xie, Koyejo, Gupta, UAI 2019): every corrupted client sends
    ``-eps * mean(honest updates)``; for small ``eps`` the aggregate keeps a negative inner product
    with the true gradient while staying close to the honest cloud."""

    name: ClassVar[str] = "ipm"
    eps: float = 0.5

    def _corrupt(self, updates, weights, mask, generator):
        out = updates.clone()
        out[mask] = -self.eps * _honest_or_all(updates, mask).mean(0)
        return out


@register
@dataclass
class ALIE(_UpdateCorruption):
    """"A little is enough" (Baruch, Baruch, Goldberg, NeurIPS 2019): ``mu - z sigma`` per coordinate
    over the honest updates, with ``z = Phi^{-1}((m - s) / m)``, ``s = floor(m / 2 + 1) - f`` (the
    number of honest clients the attackers need as "supporters"), unless ``z`` is given."""

    name: ClassVar[str] = "alie"
    z: float | None = None

    def _corrupt(self, updates, weights, mask, generator):
        out = updates.clone()
        m = updates.shape[0]
        f = int(mask.sum())
        ref = _honest_or_all(updates, mask, min_rows=2)
        mu, sd = ref.mean(0), ref.std(0)
        z = self.z
        if z is None:
            s = math.floor(m / 2 + 1) - f
            p = (m - s) / m
            z = NormalDist().inv_cdf(min(max(p, 1e-6), 1 - 1e-6))
        out[mask] = mu - float(z) * sd
        return out


@register
@dataclass
class RandomAttack(_UpdateCorruption):
    """Random attack (Shen, Li, Zheng): every corrupted client sends ``N(0, scale^2 I)``."""

    name: ClassVar[str] = "random"
    scale: float = 1.0

    def _corrupt(self, updates, weights, mask, generator):
        out = updates.clone()
        out[mask] = torch.randn(out[mask].shape, generator=generator, dtype=out.dtype).to(out.device) * self.scale
        return out


# ---------------------------------------------------------------------------------------- CGA
_CGA_TARGETS: dict[tuple, torch.Tensor] = {}


def relabelled_target(model: Any, data: FederatedData, *, seed: int, epochs: int, lr: float, batch_size: int,
                      device: torch.device) -> torch.Tensor:
    """The CGA target theta_s of "An equivalence between data poisoning and Byzantine gradient
    attacks" (Appendix G): a model trained with Adam on the whole training set relabelled
    ``k -> (k + 1) mod K`` (``y -> -y`` for regression), from the model's initialisation ``seed``.
    Deterministic in its arguments; cached per process per configuration (data fingerprint, model,
    seed, training parameters, device)."""
    x, y = data.x.to(device), data.y.to(device)
    key = (data.name, tuple(x.shape), float(x.double().sum()), float(y.double().sum()), type(model).__name__, model.dim,
           int(seed), int(epochs), float(lr), int(batch_size), str(device))
    hit = _CGA_TARGETS.get(key)
    if hit is not None:
        return hit.clone()
    if data.num_classes is None:
        y_s = -y
    else:
        y_s = (y.long() + 1) % data.num_classes
    theta = model.init_vector(seed).to(device=device, dtype=torch.float32).clone().requires_grad_(True)
    opt = torch.optim.Adam([theta], lr=lr)
    g = torch.Generator().manual_seed(int(seed) * 104729 + 3)
    n = x.shape[0]
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g).to(device)
        for lo in range(0, n, batch_size):
            b = perm[lo:lo + batch_size]
            xb = x[b].to(torch.float32) if x.is_floating_point() else x[b]
            out = model.forward_batched(theta.unsqueeze(0), xb.unsqueeze(0))
            yb = y_s[b].to(torch.float32) if model.loss == "mse" else y_s[b]
            loss = model.per_client_loss(out, yb.unsqueeze(0)).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
    out = theta.detach().clone()
    _CGA_TARGETS[key] = out
    return out.clone()


@register
@dataclass
class CGA(Corruption):
    """Counter-gradient attack ("An equivalence between data poisoning and Byzantine gradient
    attacks", Section 5.1). With the other clients' aggregate estimated from the last global step
    (``g_hat = (step - q a_prev) / (1 - q)``, ``q`` the attackers' weight share) the attackers send

        a = ((theta_s - w) / eta_server - (1 - q) g_hat) / q                     (eq. 6)

    so that the FedAvg step lands the global model on ``theta_s``; ``radius`` projects ``a`` on the
    l2 ball of that radius (Proposition 1). ``target``: ``trained`` (theta_s trained on relabelled
    data, :func:`relabelled_target`; ``target_epochs``/``target_lr``/``target_batch`` set that
    training), ``fixed`` (the first non-zero global model, classes shifted k -> k + 1) or
    ``moving`` (that shift re-derived every round)."""

    name: ClassVar[str] = "cga"
    kind: ClassVar[str] = "update"
    TARGETS: ClassVar[tuple[str, ...]] = ("trained", "fixed", "moving")
    target: str = "trained"
    radius: float | None = None
    target_epochs: int = 5
    target_lr: float = 0.01
    target_batch: int = 64

    def validate(self) -> None:
        if self.target not in self.TARGETS:
            raise InvalidInput(f"cga target must be 'trained', 'fixed' or 'moving', got {self.target!r}")
        if self.radius is not None and not self.radius > 0:
            raise InvalidInput(f"cga radius must be positive, got {self.radius}")
        if self.target_epochs < 1 or self.target_batch < 1 or not self.target_lr > 0:
            raise InvalidInput("cga target_epochs and target_batch must be >= 1 and target_lr > 0")

    def prepare(self, ctx: AttackContext) -> None:
        if self.target == "trained":
            self._state["target"] = relabelled_target(ctx.model, ctx.data, seed=ctx.seed, epochs=self.target_epochs,
                                                      lr=self.target_lr, batch_size=self.target_batch, device=ctx.device)

    def corrupt_updates(self, updates, weights, mask, *, w, generator, server_lr=1.0, head=None):
        st = self._state
        prev_w = st.get("prev_w")
        if prev_w is not None:
            step = (w - prev_w) / server_lr
            q, a = st.get("prev_q", 0.0), st.get("prev_a")
            est = step if (a is None or q <= 0 or q >= 1) else (step - q * a) / (1 - q)
        else:
            est = torch.zeros_like(w)
        st["prev_w"] = w.detach().clone()
        if not bool(mask.any()):
            st["prev_q"], st["prev_a"] = 0.0, None
            return updates
        fixed = st.get("target")
        if self.target == "trained":
            if fixed is None:
                raise InvalidInput("cga target='trained' needs prepare() (the loop calls it) to train theta_s")
            target = fixed.to(device=w.device, dtype=w.dtype)
        elif self.target == "fixed" and fixed is not None:
            target = fixed
        else:
            target = self._shifted(w, head)
            if self.target == "fixed" and bool((w != 0).any()):
                st["target"] = target  # theta_s: fixed from the first informative model on
        wts = weights.to(device=updates.device, dtype=updates.dtype)
        mask = mask.to(updates.device)
        q = float(wts[mask].sum() / wts.sum())
        a = ((target - w) / server_lr - (1 - q) * est) / q
        if self.radius is not None:
            nrm = float(a.norm())
            if nrm > self.radius:
                a = a * (self.radius / nrm)
        st["prev_q"], st["prev_a"] = q, a
        out = updates.clone()
        out[mask] = a
        return out

    @staticmethod
    def _shifted(w: torch.Tensor, head: tuple[int, int, int] | None) -> torch.Tensor:
        """``w`` with its output classes cyclically shifted (k -> k + 1), or ``-w`` without a head."""
        target = w.detach().clone()
        if head is not None:
            off, k, fan = head  # flat offset of the output layer weight (k x fan) followed by bias (k)
            wt = target[off : off + k * fan].reshape(k, fan)
            target[off : off + k * fan] = torch.roll(wt, 1, dims=0).reshape(-1)
            target[off + k * fan : off + k * fan + k] = torch.roll(target[off + k * fan : off + k * fan + k], 1)
        else:
            target = -target
        return target


from . import literature_attacks as _literature  # noqa: E402,F401  (registers the literature's attacks)

#: every registered corruption name, and the names by kind
CORRUPTIONS: tuple[str, ...] = tuple(REGISTRY)
DATA_CORRUPTIONS: tuple[str, ...] = _names(("data", "data+update"))
UPDATE_CORRUPTIONS: tuple[str, ...] = _names(("update", "data+update"))
