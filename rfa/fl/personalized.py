"""Personalized RFA (the RFA paper's Algorithm 4): shared parameters ``w`` plus on-device ``u_i``.

Predictions on device ``i`` use ``w + u_i``. Each selected device, starting from the broadcast
``w^(t)`` and its stored ``u_i^(t)``:

1. trains ``u`` for tau steps with ``w`` fixed: ``u_{k+1} = u_k - gamma grad f(w^(t) + u_k; z)``;
2. trains ``w`` for tau steps on the residual, with ``u_{i,tau}`` fixed:
   ``w_{k+1} = w_k - gamma grad f(w_k + u_{i,tau}; z~)``;
3. keeps ``u_i^(t+1) = u_{i,tau}`` and sends ``w_i^(t+1) = w_{i,tau}`` (as an update
   ``w_{i,tau} - w^(t)``) to the robust aggregation, exactly as in Algorithm 1.

Because the loss only sees the sum ``p = w + u``, both phases are plain SGD on ``p`` (the gradient
with respect to ``w`` or ``u`` is the gradient with respect to ``p``): phase 1 runs SGD from
``w + u_i`` and reads ``u = p - w``; phase 2 continues from ``p`` and reads ``w_i = p - u``. Both
phases therefore reuse the batched local trainer through the executor seam, with independent
minibatches (``z`` and ``z~``).
"""

from __future__ import annotations

import numpy as np
import torch

from .data import FederatedData
from .executor import Executor, LocalTask
from .models import FlatModel

__all__ = ["personalized_local_round"]


def personalized_local_round(
    executor: Executor, model: FlatModel, data: FederatedData, clients: np.ndarray, w: torch.Tensor,
    u: torch.Tensor, steps: np.ndarray, batch_size: int, lr: float, seed: int, epochs: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Algorithm 4 lines 1-6 for the selected ``clients``.

    Args:
        w: the server model ``(d,)``; u: all personalized parameters ``(n, d)`` (not modified).
    Returns:
        ``(w_local, u_new)``, both ``(m, d)``: the local shared models to aggregate and the clients'
        new personalized parameters.
    """
    idx = torch.as_tensor(clients, device=u.device, dtype=torch.long)
    u_sel = u[idx]
    start1 = w.unsqueeze(0) + u_sel
    p1 = executor.run(LocalTask(model, data, clients, start1, steps, batch_size, lr, seed=2 * seed, epochs=epochs))
    u_new = p1 - w.unsqueeze(0)
    p2 = executor.run(LocalTask(model, data, clients, p1, steps, batch_size, lr, seed=2 * seed + 1, epochs=epochs))
    w_local = p2 - u_new
    return w_local, u_new
