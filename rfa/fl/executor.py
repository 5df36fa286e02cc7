"""Local training of the sampled clients (Algorithm 1 lines 3-8), behind one executor seam.

:func:`local_sgd` runs ``tau_i`` minibatch SGD steps for ``m`` clients *at once*: the ``m`` client
models are the rows of an ``(m, d)`` matrix and every step is one batched forward/backward
(``torch.baddbmm`` for the linear model, ``vmap`` otherwise); no Python loop over samples, and for
the linear model none over clients either. Minibatches follow Algorithm 1 line 6 (``z ~ D_i``: drawn
uniformly with replacement from the client's data) for tau local steps, or are passes over fresh
permutations of the client's data for local epochs, from a per-client generator seeded by
``(round seed, client id)``, so the minibatches do not depend on how clients are grouped: the serial
and the threaded executor compute the same steps (equal up to floating-point summation order).

An executor maps a :class:`LocalTask` to the ``(m, d)`` final local models. ``SerialExecutor`` (the
default) runs it in-process; ``ThreadExecutor`` splits the clients over threads (torch releases the
GIL in its kernels); ``ProcessExecutor`` splits them over a pool of worker processes (one torch thread
each); ``"ray"`` (:class:`rfa.fl.ray_executor.RayExecutor`, optional extra, imported only when chosen)
runs each group as a Ray task on a local instance or a cluster. The grouped executors split the ``m``
clients into consecutive groups (``numpy.array_split``) and concatenate the groups' results in client
order; with the same groups and one torch thread per group, the process pool and Ray compute the same
kernels on the same inputs and agree bit for bit. Against serial (one batched kernel over all ``m``
clients) a different grouping changes the batch shapes, hence possibly the rounding of the last bits.
Nothing else in the loop changes.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from secagg.errors import InvalidInput

from .data import FederatedData
from .models import FlatModel

__all__ = ["LocalTask", "Executor", "SerialExecutor", "ThreadExecutor", "ProcessExecutor", "make_executor", "local_sgd",
           "client_groups", "executor_cluster", "EXECUTORS"]

EXECUTORS = ("serial", "threads", "processes", "ray")


@dataclass
class LocalTask:
    """Everything the sampled clients need for one round of local training.

    ``start`` is ``(m, d)``: row ``j`` is where client ``clients[j]`` starts (``w^(t)``, or
    ``w^(t) + u_i`` for personalization). ``steps[j]`` is its number of SGD steps tau_j.
    ``epochs``: minibatches are consecutive chunks of fresh random permutations of the client's data
    (passes without replacement, as the reference scripts' local epochs); otherwise (tau steps,
    Algorithm 1 line 6 ``z ~ D_i``) each minibatch is drawn uniformly with replacement.
    """

    model: FlatModel
    data: FederatedData
    clients: np.ndarray
    start: torch.Tensor
    steps: np.ndarray
    batch_size: int
    lr: float
    seed: int
    epochs: bool = False


class Executor(Protocol):
    def run(self, task: LocalTask) -> torch.Tensor: ...


def _indices(task: LocalTask, rows: np.ndarray, max_steps: int) -> torch.Tensor:
    """Minibatch row indices ``(max_steps, len(rows), B)`` into ``task.data.x`` (padding for clients
    with fewer steps is never used)."""
    b = task.batch_size
    out = torch.zeros(max_steps, len(rows), b, dtype=torch.long)
    off = task.data.offsets
    for j, r in enumerate(rows):
        c = int(task.clients[r])
        n_i = int(off[c + 1] - off[c])
        g = torch.Generator().manual_seed((int(task.seed) * 1_000_003 + c) % (2**63))
        s = int(task.steps[r])
        if task.epochs:
            # ceil(s b / n_i) passes, each a fresh permutation; batches may straddle two passes
            passes = -(-s * b // n_i)
            perm = torch.cat([torch.randperm(n_i, generator=g) for _ in range(passes)])[: s * b]
            out[:s, j] = int(off[c]) + perm.reshape(s, b)
        else:
            out[:s, j] = int(off[c]) + torch.randint(0, n_i, (s, b), generator=g)
    return out


def local_sgd(task: LocalTask, rows: np.ndarray | None = None) -> torch.Tensor:
    """Run eq. (2) of the RFA paper with stochastic gradients for the clients ``rows`` of ``task``
    (all by default): ``w_{i,k+1} = w_{i,k} - gamma * grad f(w_{i,k}; z_{i,k})`` for
    ``k < tau_i``. Returns the final local models ``(len(rows), d)``."""
    rows = np.arange(len(task.clients)) if rows is None else np.asarray(rows)
    if len(rows) == 0:
        return task.start[:0].clone()
    steps = task.steps[rows]
    max_steps = int(steps.max())
    idx = _indices(task, rows, max_steps)
    x, y = task.data.x, task.data.y
    x_flat = x.reshape(x.shape[0], -1)
    dev = task.start.device
    p = task.start[torch.as_tensor(rows, device=dev)].detach().clone()
    steps_t = torch.as_tensor(steps, device=dev)
    model = task.model
    closed_form = hasattr(model, "grad_batched")
    min_steps = int(steps.min())
    for k in range(max_steps):
        bi = idx[k].to(x.device).reshape(-1)
        xb = x_flat.index_select(0, bi).reshape(len(rows), task.batch_size, *x.shape[1:])
        yb = y.index_select(0, bi).reshape(len(rows), task.batch_size)
        if xb.is_floating_point():
            xb = xb.to(p.dtype)
        if model.loss == "mse":
            yb = yb.to(p.dtype)
        if closed_form:
            g = model.grad_batched(p, xb, yb)
        else:
            p.requires_grad_(True)
            out = model.forward_batched(p, xb)
            loss = model.per_client_loss(out, yb).sum()
            (g,) = torch.autograd.grad(loss, p)
        with torch.no_grad():
            if k >= min_steps:
                g = g * (steps_t > k).to(p.dtype).unsqueeze(1)
            p = p.detach() - task.lr * g
    return p.detach()


class SerialExecutor:
    """All sampled clients in this process, batched together (the default)."""

    name = "serial"

    def run(self, task: LocalTask) -> torch.Tensor:
        return local_sgd(task)


def client_groups(m: int, groups: int) -> list[np.ndarray]:
    """The row indices of ``m`` clients in at most ``groups`` consecutive non-empty groups
    (``numpy.array_split``: the first ``m mod groups`` groups one longer)."""
    return [g for g in np.array_split(np.arange(m), max(1, int(groups))) if len(g)]


def _one_thread_sgd(task: LocalTask, rows: np.ndarray) -> torch.Tensor:
    """:func:`local_sgd` on one torch thread (the process-pool and Ray workers' kernel)."""
    torch.set_num_threads(1)
    return local_sgd(task, rows)


class ThreadExecutor:
    """Sampled clients split into ``workers`` groups trained on threads; same minibatches as serial."""

    name = "threads"

    def __init__(self, workers: int = 2) -> None:
        if workers < 1:
            raise InvalidInput("workers must be >= 1")
        self.workers = workers

    def run(self, task: LocalTask) -> torch.Tensor:
        groups = client_groups(len(task.clients), self.workers)
        with ThreadPoolExecutor(max_workers=len(groups)) as pool:
            parts = list(pool.map(lambda g: local_sgd(task, g), groups))
        return torch.cat(parts, dim=0)


class ProcessExecutor:
    """Sampled clients split into ``workers`` groups (:func:`client_groups`), each trained in a worker
    process of a pool (``spawn``; one torch thread per worker), results concatenated in client order.
    The pool starts at the first round and lives until :meth:`close` (or garbage collection)."""

    name = "processes"

    def __init__(self, workers: int = 2) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise InvalidInput(f"workers must be an int >= 1, got {workers!r}")
        self.workers = workers
        self._pool = None

    def run(self, task: LocalTask) -> torch.Tensor:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        groups = client_groups(len(task.clients), self.workers)
        if self._pool is None:
            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=mp.get_context("spawn"))
        parts = list(self._pool.map(_one_thread_sgd, [task] * len(groups), groups))
        return torch.cat([p.to(task.start.device) for p in parts], dim=0)

    def close(self) -> None:
        """Stop the pool (idempotent)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001, S110 - interpreter shutdown
            pass


def executor_cluster(name: str, address: str | None = None):  # noqa: ANN201 - a context manager
    """The context a command runs in: for ``"ray"`` one Ray cluster for the whole command
    (:func:`secagg.ray_transport.ray_cluster`: ``address``, else ``RAY_ADDRESS``, else a local instance
    shut down at the end); a no-op for the other executors. InvalidInput if Ray is missing."""
    import contextlib

    if name != "ray":
        if address is not None:
            raise InvalidInput("--ray-address needs --executor ray")
        return contextlib.nullcontext()
    from secagg.ray_transport import ray_cluster, require_ray

    require_ray()
    return ray_cluster(address)


def make_executor(name: str = "serial", **params) -> Executor:
    """An executor by name (``EXECUTORS``); ``"ray"`` imports :mod:`rfa.fl.ray_executor` (optional extra)."""
    if name == "serial":
        return SerialExecutor()
    if name == "threads":
        return ThreadExecutor(**params)
    if name == "processes":
        return ProcessExecutor(**params)
    if name == "ray":
        from .ray_executor import RayExecutor

        return RayExecutor(**params)
    raise InvalidInput(f"unknown executor {name!r}; choose one of {EXECUTORS}")
