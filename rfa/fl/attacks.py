"""Corruption models: which clients are corrupted, and what they do.

Corrupted set (seed 002 eq. 5, as the RFA reference scripts do it): shuffle the clients with the
run's seed and take the shortest prefix whose share of the data points reaches ``rho``; the realised
level ``sum_{i in C} N_i / N`` is reported. The held-out test data is never corrupted.

Data write (static data poisoning, seed 002 Section V-A(a); seed 004):
  ``image-negation`` x -> 1 - x; ``label-flip`` y -> K - 1 - y; ``text-reversal``
  (c_1..c_21) -> (c_21..c_1); ``data-poisoning`` picks the paper's choice for the data kind
  (images: negation, text: reversal, others: label flip, regression: y -> -y);
  ``backdoor`` (trojan: a plus pattern in the top-left corner on a fraction P of the base-class
  samples, relabelled as the target class) and ``distributed-backdoor`` (the plus split into 4
  parts over the corrupted clients, Xie et al. 2020 as tested in seed 004). Backdoor accuracy is
  measured on the base-class test images with the full trojan: the fraction classified as target.

Model write (update poisoning, applied to the updates ``Delta_i = w_i - w`` of selected corrupted
clients; ``weights`` are the clients' ``alpha_i``):
  ``gaussian``   Delta_i + N(0, sigma_i^2 I), sigma_i^2 the variance of Delta_i's components (V-A(b));
  ``omniscient`` every corrupted client sends c - 2 (N / N_c) a, where a is the weighted mean of
                 all selected updates and c that of the corrupted ones (N, N_c: total weights); the
                 weighted mean becomes exactly -a (V-A(c), reference-code formula);
  ``ipm``        inner-product manipulation (Xie et al. 2020, seed 001): -eps * mean of honest updates;
  ``alie``       "a little is enough" (Baruch et al. 2019): mean - z * std of honest updates per
                 coordinate, z = Phi^{-1}((m - s) / m), s = floor(m / 2 + 1) - f;
  ``random``     random attack (seed 001): N(0, scale^2 I) vectors;
  ``cga``        counter-gradient attack (seed 003 Section 5.1, eqs. 5-6): estimate the honest
                 aggregate from the last global step, then send the update that moves the global
                 model onto the attacker's target theta_s; ``radius`` projects it on an l2 ball
                 (Proposition 1, l2 case). ``target="fixed"`` (default, as in seed 003: theta_s does
                 not change) takes theta_s = the first non-zero global model the attacker observes
                 with its output classes cyclically shifted (k -> k + 1; negated when the model has
                 no classification head); ``target="moving"`` re-derives that shift from the current
                 model every round (a stronger, untargeted class-rotation variant).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np
import torch

from secagg.errors import InvalidInput

from .data import FederatedData

__all__ = [
    "CORRUPTIONS",
    "DATA_CORRUPTIONS",
    "UPDATE_CORRUPTIONS",
    "Corruption",
    "make_corruption",
    "select_corrupted",
    "plus_pattern",
    "omniscient",
]

DATA_CORRUPTIONS = ("data-poisoning", "image-negation", "label-flip", "text-reversal", "backdoor", "distributed-backdoor")
UPDATE_CORRUPTIONS = ("gaussian", "omniscient", "ipm", "alie", "random", "cga")
CORRUPTIONS = ("none",) + DATA_CORRUPTIONS + UPDATE_CORRUPTIONS


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
    """Boolean masks of a ``size`` x ``size`` plus sign at (offset, offset) (seed 004 Figure 1).
    With ``parts=4`` the plus is split into its four arms (the centre goes with the first), as in the
    distributed backdoor of seed 004 Table 2."""
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
    """Seed 002 V-A(c) as coded in the reference implementation: corrupted rows become
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


@dataclass
class Corruption:
    """A corruption model. ``kind`` is ``none``, ``data`` (changes corrupted clients' data once) or
    ``update`` (changes their updates every round)."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    _state: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        if self.name == "none":
            return "none"
        return "data" if self.name in DATA_CORRUPTIONS else "update"

    # ------------------------------------------------------------------ data write
    def poison_data(self, data: FederatedData, corrupted: np.ndarray, rng: np.random.Generator) -> FederatedData:
        """Return a copy of ``data`` whose corrupted clients' training data is poisoned."""
        if self.kind != "data" or not corrupted.any():
            return data
        x, y = data.x.clone(), data.y.clone()
        rows = [np.arange(int(data.offsets[i]), int(data.offsets[i + 1])) for i in np.flatnonzero(corrupted)]
        name = self.name
        if name == "data-poisoning":
            name = {"image": "image-negation", "text": "text-reversal"}.get(data.kind, "label-flip")
        if name in ("backdoor", "distributed-backdoor"):
            self._backdoor(data, x, y, rows, rng, distributed=name == "distributed-backdoor")
        else:
            idx = torch.from_numpy(np.concatenate(rows)).to(x.device)
            if name == "image-negation":
                if data.kind != "image":
                    raise InvalidInput("image negation needs image data")
                x[idx] = 1.0 - x[idx]
            elif name == "label-flip":
                if data.num_classes is None:
                    y[idx] = -y[idx]
                else:
                    y[idx] = data.num_classes - 1 - y[idx]
            elif name == "text-reversal":
                if data.kind != "text":
                    raise InvalidInput("text reversal needs character-sequence data")
                full = torch.cat([x[idx], y[idx].unsqueeze(1)], dim=1).flip(1)
                x[idx] = full[:, :-1]
                y[idx] = full[:, -1]
            else:  # pragma: no cover - guarded by make_corruption
                raise InvalidInput(f"unknown data corruption {name!r}")
        out = data.to(data.x.device)
        out.x, out.y = x, y
        return out

    def _trojan_masks(self, data: FederatedData) -> list[torch.Tensor]:
        if data.kind != "image":
            raise InvalidInput("backdoor trojans need image data")
        _, h, w = data.input_shape
        size = int(self.params.get("pattern_size", 5 if h >= 20 else 3))
        offset = int(self.params.get("offset", 1 if h >= 20 else 0))
        return plus_pattern(h, w, size, offset, parts=4 if self.name == "distributed-backdoor" else 1)

    def _backdoor(self, data, x, y, rows, rng, distributed: bool) -> None:
        base = int(self.params.get("base_class", 1))
        target = int(self.params.get("target_class", 7))
        frac = float(self.params.get("fraction", 0.5))
        value = float(self.params.get("value", 1.0))
        masks = self._trojan_masks(data)
        for j, r in enumerate(rows):
            r = torch.from_numpy(r).to(y.device)  # data may already live on the GPU
            cand = r[(y[r] == base)]
            k = int(round(frac * len(cand)))
            if k == 0:
                continue
            pick = cand[torch.from_numpy(rng.permutation(len(cand))[:k]).to(y.device)]
            pat = masks[j % len(masks)].to(x.device)
            xs = x[pick]
            xs[:, :, pat] = value
            x[pick] = xs
            y[pick] = target

    def backdoor_accuracy(self, predict, data: FederatedData) -> float | None:
        """Seed 004 metric: on the base-class test images with the complete trojan, the fraction
        predicted as the target class. ``predict(x) -> labels``. ``None`` for non-backdoor models."""
        if self.name not in ("backdoor", "distributed-backdoor"):
            return None
        base = int(self.params.get("base_class", 1))
        target = int(self.params.get("target_class", 7))
        value = float(self.params.get("value", 1.0))
        sel = data.test_y == base
        if not bool(sel.any()):
            return None
        xs = data.test_x[sel].clone()
        full = torch.zeros_like(self._trojan_masks(data)[0])
        for m in self._trojan_masks(data):
            full |= m
        xs[:, :, full.to(xs.device)] = value
        return float((predict(xs) == target).float().mean())

    # ------------------------------------------------------------------ model write
    def corrupt_updates(
        self, updates: torch.Tensor, weights: torch.Tensor, mask: torch.Tensor, *, w: torch.Tensor,
        generator: torch.Generator, server_lr: float = 1.0, head: tuple[int, int, int] | None = None,
    ) -> torch.Tensor:
        """Corrupted rows (``mask``) of ``updates`` replaced per the model. Called every round (also
        when no corrupted client is selected) so that stateful attacks (CGA) can follow the model."""
        if self.kind != "update":
            return updates
        name = self.name
        if name == "cga":
            return self._cga(updates, weights, mask, w, server_lr, head)
        if not bool(mask.any()):
            return updates
        out = updates.clone()
        honest = ~mask
        if name == "gaussian":
            var = updates[mask].var(dim=1, keepdim=True)
            noise = torch.randn(out[mask].shape, generator=generator, dtype=out.dtype).to(out.device)
            out[mask] = updates[mask] + noise * var.sqrt() * float(self.params.get("scale", 1.0))
        elif name == "omniscient":
            out = omniscient(updates, weights, mask)
        elif name == "ipm":
            eps = float(self.params.get("eps", 0.5))
            ref = updates[honest].mean(0) if bool(honest.any()) else updates.mean(0)
            out[mask] = -eps * ref
        elif name == "alie":
            m = updates.shape[0]
            f = int(mask.sum())
            ref = updates[honest] if int(honest.sum()) >= 2 else updates
            mu, sd = ref.mean(0), ref.std(0)
            z = self.params.get("z")
            if z is None:
                s = math.floor(m / 2 + 1) - f
                p = (m - s) / m
                z = NormalDist().inv_cdf(min(max(p, 1e-6), 1 - 1e-6))
            out[mask] = mu - float(z) * sd
        elif name == "random":
            scale = float(self.params.get("scale", 1.0))
            out[mask] = torch.randn(out[mask].shape, generator=generator, dtype=out.dtype).to(out.device) * scale
        else:  # pragma: no cover
            raise InvalidInput(f"unknown update corruption {name!r}")
        return out

    def _cga(self, updates, weights, mask, w, server_lr, head):
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
        mode = str(self.params.get("target", "fixed"))
        if mode not in ("fixed", "moving"):
            raise InvalidInput(f"cga target must be 'fixed' or 'moving', got {mode!r}")
        fixed = st.get("target")
        if mode == "fixed" and fixed is not None:
            target = fixed
        else:
            target = self._shifted(w, head)
            if mode == "fixed" and bool((w != 0).any()):
                st["target"] = target  # theta_s: fixed from the first informative model on (seed 003)
        wts = weights.to(device=updates.device, dtype=updates.dtype)
        mask = mask.to(updates.device)
        q = float(wts[mask].sum() / wts.sum())
        a = ((target - w) / server_lr - (1 - q) * est) / q
        radius = self.params.get("radius")
        if radius is not None:
            nrm = float(a.norm())
            if nrm > float(radius):
                a = a * (float(radius) / nrm)
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


def make_corruption(name: str, **params: Any) -> Corruption:
    """A :class:`Corruption` by name (see :data:`CORRUPTIONS`)."""
    if name not in CORRUPTIONS:
        raise InvalidInput(f"unknown corruption {name!r}; choose one of {', '.join(CORRUPTIONS)}")
    return Corruption(name=name, params=dict(params))
