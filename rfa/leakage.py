"""Privacy cost, measured: reconstruction attacks on exactly what the server learned.

The s-privacy audit (Definition 1 (iv) of Pillutla, Kakade and Harchaoui, *Robust Aggregation for
Federated Learning*, IEEE TSP 2022) bounds the largest effective weight ``s`` any client has in a
revealed weighted average. This module measures what that weight costs in the currency of the
gradient-inversion literature (Zhu, Liu and Han, *Deep Leakage from Gradients*, NeurIPS 2019;
Geiping, Bauermeister, Droege and Moeller, *Inverting Gradients - How easy is it to break privacy in
federated learning?*, NeurIPS 2020): how well can the server reconstruct a target client's training
examples from what it saw?

What the server saw is one record, :class:`ServerView`: the broadcast model and the list of
:class:`Revealed` quantities of a round. For aggregators run through a secure average oracle these are
the oracle calls' revealed outputs (each with every client's effective weight in it, which the attack
never reads: only the auditor's metrics do); for plaintext-only aggregators they are the individual
updates (weight 1 for their sender). :func:`view_from_output` builds the record from the aggregator's
list of revealed quantities (each backed by an oracle call record) and :func:`view_from_calls` from the
oracle's call records; nothing else is read, so what the attack sees cannot drift from what the oracle
revealed.

The attack on the linear model (multinomial logistic regression ``softmax(W x + b)``, the default
study's model) is analytic. One local SGD step on a batch ``B`` gives the update
``Delta W_c = -lr/|B| sum_i (p_ic - y_ic) x_i`` and ``Delta b_c = -lr/|B| sum_i (p_ic - y_ic)``, so

    x_hat_c = Delta W_c / Delta b_c = sum_i a_ic x_i / sum_i a_ic,     a_ic = p_ic - y_ic,

an affine mixture of the client's inputs in which examples of class ``c`` carry the (negative, large)
weights ``p_ic - 1`` and the others small positive weights ``p_ic``: exact (``x_hat_c = x``) for one
example and one step, and dominated by the class-``c`` examples in general. Several local steps add
their mixtures; a weighted average over clients mixes every participant's mixtures with their
effective weights, which is what drives the reconstruction quality down as ``s`` falls. Labels: the
classes with ``Delta b_c > 0`` are the ones present in the batch (``p_ic - y_ic < 0`` only when
``y_ic = 1``), the label-inference observation of Zhao, Mopuri and Bilen (*iDLG*, 2020) in its linear
form.

Reconstructions are scored against the target's real examples by the best PSNR and SSIM over pairs
(scikit-image's ``peak_signal_noise_ratio`` and ``structural_similarity``), and *calibrated*: the same
attack on a round in which the target did not take part gives what population knowledge alone
"reconstructs" (a class-mean digit resembles every digit of its class), and leakage is the metric minus
that calibration.

For a non-linear model (the ConvNet) the attack is the gradient matching of Geiping et al.: optimise
dummy images ``x'`` (labels from the last layer's bias, as in iDLG, or given) so that the update they
would produce, simulated through the same local SGD steps, batch size and learning rate from the
broadcast model, points the way the revealed vector ``v`` does,

    min_{x' in [0,1]}  1 - <U(x'), v> / (|U(x')| |v|)  +  lambda TV(x'),

with torch autograd through the unrolled local steps and Adam on (optionally signed) gradients,
:func:`invert_gradients`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

__all__ = [
    "Revealed",
    "ServerView",
    "LeakageError",
    "view_from_calls",
    "view_from_updates",
    "view_from_output",
    "invert_linear",
    "invert_gradients",
    "GradientReconstruction",
    "Reconstruction",
    "score",
    "Score",
]


class LeakageError(ValueError):
    """Bad input to a leakage attack or metric (wrong shapes, nothing revealed, no target examples)."""


@dataclass(frozen=True)
class Revealed:
    """One quantity the server learned in a round.

    Attributes:
        vector: the revealed ``(d,)`` vector (an average output by the secure oracle, or one update
            the server received in the clear), float64 on the CPU.
        kind: ``"average"`` (a secure weighted average) or ``"update"`` (a plaintext update).
        call: index of the oracle call within the round (``0`` for plaintext updates), or ``-1``.
        weights: *auditor's data, never read by an attack*: client id -> effective weight in this
            quantity (``beta_i / sum_{j in U3} beta_j`` for an average; 1 for the sender of a plaintext
            update).
    """

    vector: torch.Tensor
    kind: str
    call: int
    weights: dict[int, float] = field(default_factory=dict, repr=False)

    def weight_of(self, client: int) -> float:
        """The effective weight ``s`` of ``client`` in this quantity (0 when it did not contribute)."""
        return float(self.weights.get(int(client), 0.0))


@dataclass(frozen=True)
class ServerView:
    """Everything the server learned in one round: the model it broadcast and what it was revealed."""

    round: int
    broadcast: torch.Tensor
    revealed: tuple[Revealed, ...]


def view_from_calls(round: int, broadcast: torch.Tensor, calls: Sequence[Any], clients: Sequence[int]) -> ServerView:
    """The server's view of a round run through a secure average oracle, from the oracle's records only.

    ``calls`` are the round's oracle call records (:class:`rfa.oracle.OracleCall`); each must carry the
    revealed ``output``. Row ``j`` of a call is client ``clients[j]``; its effective weight goes into the
    auditor's field of :class:`Revealed`.
    """
    revealed = []
    for k, c in enumerate(calls):
        out = getattr(c, "output", None)
        if out is None:
            raise LeakageError("oracle call record has no revealed output; the server's view is unknown")
        eff = c.effective_weights
        weights = {int(clients[j]): float(eff[j]) for j in range(len(clients)) if float(eff[j]) > 0}
        revealed.append(Revealed(torch.as_tensor(out).detach().to("cpu", torch.float64).reshape(-1), "average", k, weights))
    return ServerView(round, broadcast.detach().to("cpu", torch.float64), tuple(revealed))


def view_from_output(round: int, broadcast: torch.Tensor, out: Any, updates: torch.Tensor,
                     clients: Sequence[int]) -> ServerView:
    """The server's view of one aggregation, from the aggregator's own record of what the server learned
    (:attr:`rfa.aggregators.AggregateOutput.revealed`): each revealed weighted average is its oracle
    call's released ``output``; plaintext-only rules reveal ``updates`` themselves. Vote counts are not
    images and are left out; a revealed average that is not an average of the updates (a different
    length) is an error, since this attack would misread it."""
    d = int(updates.shape[1])
    kinds = [r.kind for r in out.revealed]
    if "plaintext" in kinds:
        return view_from_updates(round, broadcast, updates, clients)
    revealed = []
    for k, r in enumerate(out.revealed):
        if r.kind != "weighted-average":
            continue
        vec = getattr(r.call, "output", None)
        if vec is None:
            raise LeakageError("a revealed average has no released output in its oracle record")
        vec = torch.as_tensor(vec).detach().to("cpu", torch.float64).reshape(-1)
        if vec.shape[0] != d:
            raise LeakageError(f"revealed quantity {r.what!r} has {vec.shape[0]} coordinates, not the update's {d}: "
                               "not an average of the updates, which this attack reads")
        eff = r.effective_weights
        weights = {int(clients[j]): float(eff[j]) for j in range(len(clients)) if float(eff[j]) > 0}
        revealed.append(Revealed(vec, "average", k, weights))
    if not revealed:
        raise LeakageError("the aggregation revealed no average of the updates")
    return ServerView(round, broadcast.detach().to("cpu", torch.float64), tuple(revealed))


def view_from_updates(round: int, broadcast: torch.Tensor, updates: torch.Tensor, clients: Sequence[int]) -> ServerView:
    """The server's view of a round of a plaintext-only aggregator: every update in the clear."""
    if updates.ndim != 2 or updates.shape[0] != len(clients):
        raise LeakageError(f"updates must be (len(clients), d); got {tuple(updates.shape)} for {len(clients)} clients")
    u = updates.detach().to("cpu", torch.float64)
    rev = tuple(Revealed(u[j].clone(), "update", 0, {int(c): 1.0}) for j, c in enumerate(clients))
    return ServerView(round, broadcast.detach().to("cpu", torch.float64), rev)


@dataclass(frozen=True)
class Reconstruction:
    """The analytic attack's output on one revealed vector of a linear model.

    Attributes:
        images: ``(k, d_in)`` one candidate per class, ``x_hat_c = Delta W_c / Delta b_c``, clipped to
            the data range (rows of classes with ``|Delta b_c|`` below the resolution are NaN).
        labels: classes inferred present (``Delta b_c > 0``).
        bias: ``Delta b`` itself (the label signal).
    """

    images: np.ndarray
    labels: np.ndarray
    bias: np.ndarray

    def candidates(self) -> np.ndarray:
        """The reconstructions worth scoring: those of inferred labels, or every finite one if none."""
        ok = ~np.isnan(self.images).any(axis=1)
        pick = ok & np.isin(np.arange(len(self.images)), self.labels)
        if not pick.any():
            pick = ok
        return self.images[pick]


def invert_linear(vector: torch.Tensor | np.ndarray, num_classes: int, input_dim: int, *,
                  lr: float | None = None, batch_size: int | None = None, steps: int = 1,
                  data_range: tuple[float, float] = (0.0, 1.0)) -> Reconstruction:
    """Invert one revealed update (or weighted average of updates) of ``softmax(W x + b)``.

    The flat layout is the model's: ``W`` row-major (``num_classes * input_dim``) then ``b``.

    Without the training hyperparameters, the ratio attack of the module text:
    ``x_hat_c = Delta W_c / Delta b_c``, labels ``{c : Delta b_c > 0}`` (exact for one example, one
    step). With them (the server chose ``lr``, the batch size ``B`` and the ``steps`` tau; it knows
    them), the background-corrected attack, exact for a round from a model whose predictions are
    uniform (the zero-initialised linear model, i.e. the first round): with ``g = B / (lr tau)``,
    ``D_c = -g Delta W_c = sum_i (p_ic - y_ic) x_i`` and ``A_c = -g Delta b_c = P_c - n_c``, where
    ``P_c = sum_i p_ic = B tau / k`` (uniform predictions) and ``n_c`` is the number of class-``c``
    examples. Then ``n_c = B tau / k - A_c``; the classes with ``n_c = 0`` give the batch's mean input
    ``mu = D_c / A_c``; and ``S_c = P_c mu - D_c`` is the *sum* of the class-``c`` examples, so
    ``x_hat_c = S_c / n_c`` is their mean: the example itself when the class occurs once. A weighted
    average of several clients' updates (weights summing to 1) gives the weighted counts and sums, so
    ``x_hat_c`` becomes the ``s``-weighted mean of every participant's class-``c`` examples. Away from
    uniform predictions (later rounds) the same formulas are an approximation.
    """
    v = np.asarray(torch.as_tensor(vector).detach().to("cpu", torch.float64)).reshape(-1)
    k, d_in = int(num_classes), int(input_dim)
    if k < 2 or d_in < 1 or v.shape[0] < k * d_in + k:
        raise LeakageError(f"a linear model with {k} classes and {d_in} inputs needs {k * d_in + k} coordinates, got {v.shape[0]}")
    if not np.isfinite(v).all():
        raise LeakageError("the revealed vector is not finite")
    W = v[: k * d_in].reshape(k, d_in)
    b = v[k * d_in: k * d_in + k]
    lo, hi = float(data_range[0]), float(data_range[1])
    images = np.full((k, d_in), np.nan)
    if lr is None or batch_size is None:
        # |Delta b_c| below the float resolution of the row means the row carries no usable signal
        ok = np.abs(b) > np.abs(W).max(axis=1) * 1e-12 + np.finfo(np.float64).tiny
        images[ok] = np.clip(W[ok] / b[ok, None], lo, hi)
        return Reconstruction(images=images, labels=np.flatnonzero(b > 0), bias=b.copy())
    if not (np.isfinite(lr) and lr > 0) or int(batch_size) < 1 or int(steps) < 1:
        raise LeakageError(f"lr, batch_size and steps must be positive (got {lr}, {batch_size}, {steps})")
    g = int(batch_size) / (float(lr) * int(steps))
    D, A = -g * W, -g * b
    P = int(batch_size) * int(steps) / k
    n = P - A
    present = n >= 0.5
    absent = ~present
    if absent.any():
        mu = (D[absent] / A[absent, None]).mean(axis=0)
    else:  # every class present: the batch mean is unknown; fall back to the ratio attack's rows
        mu = np.zeros(d_in)
    S = P * mu[None, :] - D
    images[present] = np.clip(S[present] / n[present, None], lo, hi)
    return Reconstruction(images=images, labels=np.flatnonzero(present), bias=b.copy())


@dataclass(frozen=True)
class Score:
    """Best similarity of any reconstruction to any of the target's examples."""

    psnr: float
    ssim: float
    label_recall: float  # share of the target's classes among the inferred labels
    label_precision: float  # share of the inferred labels that are the target's classes


def score(rec: Reconstruction, target_x: np.ndarray, target_y: np.ndarray, image_shape: tuple[int, int], *,
          data_range: float = 1.0) -> Score:
    """Best PSNR (``10 log10(range^2 / MSE)``) and SSIM (scikit-image's ``structural_similarity``) over pairs (candidate reconstruction, target example), and
    label recovery of the target's class set."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    tx = np.asarray(target_x, dtype=np.float64).reshape(len(target_x), -1)
    if tx.shape[0] == 0:
        raise LeakageError("the target has no examples to compare with")
    h, w = image_shape
    if h * w != tx.shape[1]:
        raise LeakageError(f"image shape {image_shape} does not match {tx.shape[1]} inputs")
    cand = rec.candidates()
    best_p, best_s = -math.inf, -math.inf
    xs = tx.reshape(-1, h, w)
    stack = np.moveaxis(xs, 0, -1)  # (h, w, examples): one SSIM map per example in one call
    pad = (7 - 1) // 2  # scikit-image's default 7x7 window, and the border it leaves out of the mean
    for c in cand:
        ci = c.reshape(h, w)
        mse = ((xs - ci) ** 2).mean(axis=(1, 2))
        # an exact reconstruction has MSE 0: its PSNR is capped at 300 dB (the float64 resolution)
        j = int(np.argmin(mse))
        p = 300.0 if mse[j] <= (1e-15 * data_range) ** 2 else float(peak_signal_noise_ratio(xs[j], ci, data_range=data_range))
        _, smap = structural_similarity(stack, np.repeat(ci[:, :, None], stack.shape[-1], axis=-1),
                                        data_range=data_range, channel_axis=-1, full=True)
        s = float(smap[pad:h - pad, pad:w - pad].mean(axis=(0, 1)).max())
        best_p, best_s = max(best_p, p), max(best_s, s)
    true = set(np.unique(np.asarray(target_y)).tolist())
    inferred = set(rec.labels.tolist())
    recall = len(true & inferred) / len(true)
    precision = len(true & inferred) / len(inferred) if inferred else 0.0
    return Score(psnr=best_p, ssim=best_s, label_recall=recall, label_precision=precision)


@dataclass(frozen=True)
class GradientReconstruction(Reconstruction):
    """The gradient-matching attack's output: ``images`` ``(n, d_in)`` are the optimised dummy images
    (every one is a candidate), ``labels`` the classes they were given, ``bias`` the revealed
    last-layer bias update, ``matching`` the final cosine similarity of the simulated update to the
    revealed one."""

    matching: float = float("nan")

    def candidates(self) -> np.ndarray:
        ok = ~np.isnan(self.images).any(axis=1)
        return self.images[ok]


def _total_variation(x: torch.Tensor) -> torch.Tensor:
    """Anisotropic total variation ``mean |x_{h+1,w} - x_{h,w}| + mean |x_{h,w+1} - x_{h,w}|``."""
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()


def invert_gradients(vector: torch.Tensor | np.ndarray, broadcast: torch.Tensor, model: Any,
                     image_shape: tuple[int, ...], *, lr: float, steps: int = 1, num_images: int = 1,
                     labels: Sequence[int] | None = None, iterations: int = 300, step_size: float = 0.1,
                     tv: float = 1e-2, signed: bool = True, seed: int = 0,
                     data_range: tuple[float, float] = (0.0, 1.0),
                     device: torch.device | str = "cpu") -> GradientReconstruction:
    """Gradient matching (Geiping, Bauermeister, Droege and Moeller, *Inverting Gradients - How easy is
    it to break privacy in federated learning?*, NeurIPS 2020) against one revealed vector.

    Inputs are only what the server has: the revealed ``vector`` (an update, or an average of
    updates), the ``broadcast`` model it sent, the model architecture (:class:`rfa.fl.models.FlatModel`)
    and the public training hyperparameters (``lr``, local ``steps``). ``num_images`` dummy images
    ``x'`` of ``image_shape`` ``(C, H, W)`` with labels ``y'`` are trained ``steps`` local SGD steps
    from ``broadcast`` (each step on the whole dummy batch, through ``model.forward_batched``, the
    loop's own forward; exact for a client whose batch repeats one example), giving the simulated
    update ``U(x') = w_steps - broadcast``; Adam (``step_size``, ``iterations`` at most, on the sign of
    the gradient when ``signed``, as Geiping et al.) minimises ``1 - cos(U(x'), v) + tv * TV(x')``,
    projecting ``x'`` into ``data_range`` after each step. Labels default to the iDLG reading of the
    last layer's bias update: one SGD step moves ``b_c`` up exactly for the classes present, so the
    ``num_images`` largest entries of the revealed bias update (repeating the largest when fewer are
    positive) are taken. Seeded; deterministic on one machine.
    """
    v = torch.as_tensor(vector).detach().to(device, torch.float32).reshape(-1)
    w0 = torch.as_tensor(broadcast).detach().to(device, torch.float32).reshape(-1)
    d = int(getattr(model, "dim", v.shape[0]))
    if v.shape[0] != d or w0.shape[0] != d:
        raise LeakageError(f"the model has {d} parameters; got a revealed vector of {v.shape[0]} and a broadcast of {w0.shape[0]}")
    if not (torch.isfinite(v).all() and torch.isfinite(w0).all()):
        raise LeakageError("the revealed vector or the broadcast model is not finite")
    if float(v.norm()) == 0.0:
        raise LeakageError("the revealed vector is zero: nothing to match")
    if int(num_images) < 1 or int(iterations) < 1 or int(steps) < 1 or not (np.isfinite(lr) and lr > 0):
        raise LeakageError(f"num_images, iterations, steps and lr must be positive (got {num_images}, {iterations}, {steps}, {lr})")
    shape = tuple(int(s) for s in image_shape)
    n = int(num_images)
    last = model.unflatten(v.unsqueeze(0))
    bias_name = list(last)[-1]
    bias = last[bias_name][0].detach().to("cpu", torch.float64).numpy().copy()
    k = bias.shape[0]
    if labels is None:
        order = np.argsort(-bias, kind="stable")
        pos = [int(c) for c in order if bias[c] > 0] or [int(order[0])]
        lab = [pos[i] if i < len(pos) else pos[0] for i in range(n)]
    else:
        lab = [int(c) for c in labels]
        if len(lab) != n or not all(0 <= c < k for c in lab):
            raise LeakageError(f"labels must be {n} classes in 0..{k - 1}, got {list(labels)}")
    y = torch.as_tensor(lab, dtype=torch.long, device=device).unsqueeze(0)
    lo, hi = float(data_range[0]), float(data_range[1])
    g = torch.Generator().manual_seed(int(seed))
    x = (lo + (hi - lo) * torch.rand((1, n, *shape), generator=g)).to(device).requires_grad_(True)
    opt = torch.optim.Adam([x], lr=float(step_size))
    vn = v / v.norm()

    from torch.func import functional_call

    # the flat model's generic forward (a vmap of functional_call over its module): for one model call
    # the module directly (rfa does not import rfa.fl, hence the duck typing)
    fb = getattr(type(model), "forward_batched", None)
    generic = hasattr(model, "module") and getattr(fb, "__qualname__", "") == "FlatModel.forward_batched"

    def forward(p: torch.Tensor, xd: torch.Tensor) -> torch.Tensor:
        if generic:  # FlatModel.forward_batched for one model, without the vmap (same module, same math)
            return functional_call(model.module, {a: t[0] for a, t in model.unflatten(p).items()}, (xd[0],)).unsqueeze(0)
        return model.forward_batched(p, xd)

    def simulated(xd: torch.Tensor) -> torch.Tensor:
        p = w0.unsqueeze(0).clone().requires_grad_(True)
        start = p
        for _ in range(int(steps)):
            loss = model.per_client_loss(forward(p, xd), y).sum()
            (gr,) = torch.autograd.grad(loss, p, create_graph=True)
            p = p - float(lr) * gr
        return (p - start.detach()).reshape(-1)

    cos = torch.tensor(float("nan"))
    for _ in range(int(iterations)):
        opt.zero_grad()
        u = simulated(x)
        cos = (u @ vn) / u.norm().clamp_min(1e-30)
        obj = 1.0 - cos + float(tv) * _total_variation(x)
        (gx,) = torch.autograd.grad(obj, x)
        x.grad = gx.sign() if signed else gx
        opt.step()
        with torch.no_grad():
            x.clamp_(lo, hi)
    images = x.detach().to("cpu", torch.float64).reshape(n, -1).numpy()
    return GradientReconstruction(images=images, labels=np.asarray(sorted(set(lab))), bias=bias, matching=float(cos.detach()))
