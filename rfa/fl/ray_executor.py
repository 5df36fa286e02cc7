"""Local training on Ray: the ``"ray"`` executor of :mod:`rfa.fl.executor` (optional ``ray`` extra).

:class:`RayExecutor` splits the sampled clients of a round into consecutive groups
(:func:`rfa.fl.executor.client_groups`, by default one per CPU of the cluster), trains each group as one
Ray task (:func:`rfa.fl.executor.local_sgd` on one torch thread, ``num_cpus=1``; with the models on CUDA,
``num_gpus`` per task, by default the cluster's GPUs shared evenly over the groups) and returns the
groups' final models concatenated in client order. The client data set goes to Ray's object store once
(cached across rounds); per round only the start models, steps and seeds travel.

Same results: with the same groups each task runs exactly the kernels the process-pool executor
(``"processes"``) runs, on one thread, on the same inputs, so the two agree bit for bit on one machine.
Against ``"serial"`` (all clients in one batched kernel) the groups change the batch shapes and so
possibly the rounding of the last bits (the loop's tests state the tolerance).

The loop has no dropout model for local training: a group whose task fails (an exception, or its worker
or node dies) raises :class:`LocalTrainingFailed` naming the clients, and the remaining tasks are
cancelled; so does Ctrl-C or SIGTERM (while the driver waits on Ray the signal is only recorded, then
handed to the caller's own handler from Python code, so a command learns which signal stopped it). Ray
is joined or started as in :func:`secagg.ray_transport.ray_cluster`; a local instance this executor had
to start itself is shut down by :meth:`RayExecutor.close` (the CLIs wrap a whole command in one
:func:`~secagg.ray_transport.ray_cluster` instead).
"""

from __future__ import annotations

import copy
import sys
from contextlib import ExitStack

import numpy as np
import torch

from secagg.errors import InvalidInput
from secagg.ray_transport import ray_cluster, require_ray

from .executor import LocalTask, _one_thread_sgd, client_groups

__all__ = ["RayExecutor", "LocalTrainingFailed"]


class LocalTrainingFailed(RuntimeError):
    """A Ray task of local training failed; ``clients`` are the ids of its group."""

    def __init__(self, clients: list[int], reason: str) -> None:
        super().__init__(f"local training of clients {clients[:8]}{'...' if len(clients) > 8 else ''} failed on Ray: {reason}")
        self.clients = clients
        self.reason = reason


def _train_group(task: LocalTask, data, rows: np.ndarray, cuda: bool) -> torch.Tensor:  # noqa: ANN001
    """One Ray task: ``local_sgd`` of the group ``rows`` on one torch thread (on the task's GPU if ``cuda``)."""
    task.data = data
    if cuda:
        dev = torch.device("cuda")  # Ray sets CUDA_VISIBLE_DEVICES to this task's GPU(s)
        task.data = data.to(dev)
        task.start = task.start.to(dev)
        task.model = copy.deepcopy(task.model)
        if hasattr(task.model, "to"):
            task.model = task.model.to(dev)
    return _one_thread_sgd(task, rows).cpu()


def _gather(ray, refs: list, clients: list[list[int]], poll_s: float = 0.2) -> list[torch.Tensor]:  # noqa: ANN001
    """The results of ``refs`` in order; the first failed task found raises :class:`LocalTrainingFailed`
    naming its group ``clients[i]``.

    While Ray blocks, SIGINT and SIGTERM are only recorded (when the caller has installed Python
    handlers for them); every ``poll_s`` seconds a recorded signal is delivered again to the caller's
    handler, from Python code. Inside ``ray.get`` a handler's exception would be replaced by Ray's own
    bare ``KeyboardInterrupt``, losing which signal it was (a command that stops cleanly on SIGTERM
    must learn that it was SIGTERM)."""
    import signal
    import threading

    out: dict[int, torch.Tensor] = {}
    index = {ref: i for i, ref in enumerate(refs)}
    pending = list(refs)
    main = threading.current_thread() is threading.main_thread()
    while pending:
        caught: list[int] = []
        previous = {}
        if main:
            for sig in (signal.SIGINT, signal.SIGTERM):
                if callable(signal.getsignal(sig)):
                    previous[sig] = signal.signal(sig, lambda signum, _frame: caught.append(signum))
        try:
            while pending and not caught:
                ready, pending = ray.wait(pending, num_returns=len(pending), timeout=poll_s)
                for ref in sorted(ready, key=index.__getitem__):
                    try:
                        out[index[ref]] = ray.get(ref)
                    except ray.exceptions.RayError as exc:
                        msg = str(exc).strip().splitlines()
                        raise LocalTrainingFailed(clients[index[ref]], f"{type(exc).__name__}: {msg[-1] if msg else ''}") from None
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if caught:
            signal.raise_signal(caught[0])  # the caller's handler, now outside Ray (it may raise)
    return [out[i] for i in range(len(refs))]


class RayExecutor:
    """Each group of sampled clients as a Ray task (module docstring).

    Args:
        groups: number of groups per round (default: the cluster's CPUs, at most one per client). Use the
            process-pool executor's ``workers`` to get its grouping (and its results, bit for bit).
        num_gpus: GPUs (fractions allowed) reserved per task when the models are on CUDA (default: the
            cluster's GPUs divided by the number of groups, at most 1).
        address: cluster to join when Ray is not initialized (else ``RAY_ADDRESS``, else a local instance).
    """

    name = "ray"

    def __init__(self, groups: int | None = None, num_gpus: float | None = None, address: str | None = None) -> None:
        if groups is not None and (isinstance(groups, bool) or not isinstance(groups, int) or groups < 1):
            raise InvalidInput(f"groups must be an int >= 1, got {groups!r}")
        if num_gpus is not None and (isinstance(num_gpus, bool) or not isinstance(num_gpus, (int, float)) or not num_gpus > 0):
            raise InvalidInput(f"num_gpus must be a positive number, got {num_gpus!r}")
        require_ray()
        self.groups, self.num_gpus, self.address = groups, num_gpus, address
        self._stack: ExitStack | None = None
        self._data = None  # (FederatedData, its object ref): one upload per data set
        self._fn = None

    def _ray(self):  # noqa: ANN202
        require_ray()
        if "ray" not in sys.modules or not sys.modules["ray"].is_initialized():
            self._stack = ExitStack()
            self._stack.enter_context(ray_cluster(self.address))
        import ray

        if self._fn is None:
            self._fn = ray.remote(max_retries=0)(_train_group)
        return ray

    def run(self, task: LocalTask) -> torch.Tensor:
        """The ``(m, d)`` final local models of ``task.clients``, in client order."""
        ray = self._ray()
        dev = task.start.device
        cuda = dev.type == "cuda"
        res = ray.cluster_resources()
        groups = client_groups(len(task.clients), self.groups or int(res.get("CPU", 1)) or 1)
        gpus = 0.0
        if cuda:
            have = float(res.get("GPU", 0.0))
            if have <= 0:
                raise InvalidInput("the models are on CUDA but the Ray cluster has no GPU; use device cpu or add GPU nodes")
            gpus = self.num_gpus if self.num_gpus is not None else min(1.0, have / len(groups))
        if self._data is None or self._data[0] is not task.data:
            self._data = (task.data, ray.put(task.data.to(torch.device("cpu")) if cuda else task.data))
        light = copy.copy(task)
        light.data = None  # travels once, through the object store
        if cuda:
            light.start = task.start.cpu()
        fn = self._fn.options(num_cpus=1, num_gpus=gpus)
        refs = [fn.remote(light, self._data[1], g, cuda) for g in groups]
        try:
            parts = _gather(ray, refs, [[int(task.clients[i]) for i in g] for g in groups])
        except BaseException:
            # Cancel only the tasks not yet finished: cancelling one whose reply is already being processed
            # hits Ray 2.60's race between a cancellation and a task's reply, which aborts the driver
            # ("Tried to complete task that was not pending", ray-project/ray PR 54798); the finished
            # ones hold no CPU anyway.
            try:
                _, left = ray.wait(list(refs), num_returns=len(refs), timeout=0)
            except Exception:  # noqa: BLE001 - the cluster is going away: nothing to cancel
                left = []
            for ref in left:
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # noqa: BLE001, S110 - finished in the meantime
                    pass
            raise
        return torch.cat(parts, dim=0).to(dev)

    def close(self) -> None:
        """Shut down the local Ray instance this executor started (if any). Idempotent."""
        self._data = None
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.close()
