"""Split pooled samples over clients: natural groups, IID, or Dirichlet label skew.

The held-out test set is carved out first (stratified by label when the data set has no split of
its own) and is never given to any client, hence never corrupted.
"""

from __future__ import annotations

import numpy as np
import torch

from secagg.errors import InvalidInput

from .data import FederatedData, Pooled

__all__ = ["PARTITIONS", "partition", "iid_split", "dirichlet_split"]

PARTITIONS = ("natural", "iid", "dirichlet")


def _stratified_holdout(y: np.ndarray, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    train, test = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        k = int(round(fraction * len(idx)))
        test.append(idx[:k]); train.append(idx[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def iid_split(n_samples: int, num_clients: int, rng: np.random.Generator) -> list[np.ndarray]:
    """A uniformly random permutation cut into ``num_clients`` nearly equal parts."""
    if num_clients < 1 or num_clients > n_samples:
        raise InvalidInput(f"cannot split {n_samples} samples over {num_clients} clients")
    return [np.sort(p) for p in np.array_split(rng.permutation(n_samples), num_clients)]


def dirichlet_split(y: np.ndarray, num_clients: int, alpha: float, rng: np.random.Generator, min_size: int = 2) -> list[np.ndarray]:
    """Label skew: for every class, the shares of its samples given to the clients are drawn from
    ``Dirichlet(alpha * 1_n)`` (small alpha: each client sees few classes; large alpha: near IID).
    Redrawn (at most 100 times) until every client holds at least ``min_size`` samples."""
    if alpha <= 0:
        raise InvalidInput("dirichlet alpha must be > 0")
    if num_clients * min_size > len(y):
        raise InvalidInput(f"cannot give {num_clients} clients {min_size} samples each out of {len(y)}")
    classes = np.unique(y)
    for _ in range(100):
        parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
        for c in classes:
            idx = rng.permutation(np.flatnonzero(y == c))
            p = rng.dirichlet(np.full(num_clients, alpha))
            cuts = (np.cumsum(p)[:-1] * len(idx)).astype(np.int64)
            for i, chunk in enumerate(np.split(idx, cuts)):
                parts[i].append(chunk)
        out = [np.sort(np.concatenate(p)) for p in parts]
        if min(len(o) for o in out) >= min_size:
            return out
    # fall back: top up the smallest clients from the largest ones
    out.sort(key=len)
    pool = list(out[-1])
    for i in range(num_clients):
        while len(out[i]) < min_size:
            out[i] = np.append(out[i], pool.pop())
    out[-1] = np.array(pool)
    return [np.sort(o) for o in out]


def _as_tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))


def partition(
    pooled: Pooled, *, name: str, scheme: str = "dirichlet", num_clients: int = 50, alpha: float = 0.5,
    test_fraction: float = 0.2, local_test_fraction: float = 0.0, seed: int = 0,
) -> FederatedData:
    """Build :class:`FederatedData` from ``pooled``.

    ``scheme``: ``natural`` (one client per group id; requires ``pooled.groups``), ``iid`` or
    ``dirichlet`` (label skew with concentration ``alpha``). When the data set has no test split,
    ``test_fraction`` of the samples (stratified by class) is held out first. ``local_test_fraction``
    > 0 additionally holds out that fraction of every client's samples as its local test data (used
    for personalized accuracy); natural splits with their own per-group test data use that instead.
    """
    if scheme not in PARTITIONS:
        raise InvalidInput(f"unknown partition {scheme!r}; choose one of {PARTITIONS}")
    rng = np.random.default_rng(seed)
    x, y, groups = pooled.x, pooled.y, pooled.groups
    test_x, test_y, test_groups = pooled.test_x, pooled.test_y, pooled.test_groups
    if test_x is None:
        if pooled.kind == "regression" or pooled.num_classes is None:
            perm = rng.permutation(len(y)); k = int(round(test_fraction * len(y)))
            tr, te = np.sort(perm[k:]), np.sort(perm[:k])
        else:
            tr, te = _stratified_holdout(y, test_fraction, rng)
        test_x, test_y = x[te], y[te]
        test_groups = groups[te] if groups is not None else None
        x, y = x[tr], y[tr]
        groups = groups[tr] if groups is not None else None
    if scheme == "natural":
        if groups is None:
            raise InvalidInput(f"data set {name!r} has no natural clients; use --partition iid or dirichlet")
        ids = np.unique(groups)
        parts = [np.flatnonzero(groups == g) for g in ids]
        names = [pooled.group_names[g] for g in ids] if pooled.group_names else [str(g) for g in ids]
        group_index = {int(g): i for i, g in enumerate(ids)}
    elif scheme == "iid":
        parts = iid_split(len(y), num_clients, rng); names = None; group_index = None
    else:
        if pooled.num_classes is None:
            raise InvalidInput("dirichlet label skew needs a classification data set")
        parts = dirichlet_split(y, num_clients, alpha, rng); names = None; group_index = None

    local_parts: list[np.ndarray] | None = None
    lx = ly = None
    if scheme == "natural" and test_groups is not None and local_test_fraction == 0.0:
        local_parts = [np.flatnonzero(test_groups == g) for g in np.unique(groups)]
        lx, ly = test_x, test_y
    elif local_test_fraction > 0:
        train_parts, local_parts = [], []
        for p in parts:
            p = rng.permutation(p)
            k = min(len(p) - 1, max(1, int(round(local_test_fraction * len(p)))))
            local_parts.append(np.sort(p[:k])); train_parts.append(np.sort(p[k:]))
        parts = train_parts
        lx, ly = x, y
    del group_index

    order = np.concatenate(parts)
    offsets = np.concatenate([[0], np.cumsum([len(p) for p in parts])]).astype(np.int64)
    fd = FederatedData(
        name=name, x=_as_tensor(x[order]), y=_as_tensor(y[order]), offsets=_as_tensor(offsets),
        test_x=_as_tensor(test_x), test_y=_as_tensor(test_y), kind=pooled.kind, num_classes=pooled.num_classes,
        input_shape=tuple(x.shape[1:]), vocab=pooled.vocab, client_names=names, meta=dict(pooled.meta),
    )
    if local_parts is not None:
        lorder = np.concatenate(local_parts)
        fd.local_test_x = _as_tensor(lx[lorder]); fd.local_test_y = _as_tensor(ly[lorder])
        fd.local_offsets = _as_tensor(np.concatenate([[0], np.cumsum([len(p) for p in local_parts])]).astype(np.int64))
    fd.meta.update({"partition": scheme, "dirichlet_alpha": alpha if scheme == "dirichlet" else None})
    return fd
