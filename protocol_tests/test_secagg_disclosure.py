"""What the secure average accepts and what it discloses beyond the average.

* Boolean vectors are refused by ``secure_average`` exactly as ``run_secure_aggregation`` refuses them.
* Parameters computed from the data (the default clip ``max |x_ij|`` and weight bound ``max w_i``) are
  a statistic of every client's input; the result names them in ``data_derived``.
* ``Ledger.expansion_factor`` measures uploads only.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from secagg import InvalidInput, run_secure_aggregation, secure_average


@pytest.mark.parametrize(
    "vectors",
    [
        np.array([[True, False, True], [False, False, True]]),
        torch.tensor([[True, False], [True, True]]),
        [[True, False], [False, True]],
        [[1, True], [0, 1]],
    ],
    ids=["numpy", "torch", "nested-lists", "mixed-list"],
)
def test_booleans_are_refused_by_both_entry_points(vectors) -> None:  # noqa: ANN001
    ints = vectors.numpy() if isinstance(vectors, torch.Tensor) else vectors
    with pytest.raises(InvalidInput):
        run_secure_aggregation(ints, modulus=2**8, seed=0)
    with pytest.raises(InvalidInput):
        secure_average(vectors, seed=0)


def test_boolean_weights_are_refused() -> None:
    with pytest.raises(InvalidInput):
        secure_average(np.ones((3, 2)), np.array([True, True, True]), seed=0)


def test_integers_still_work_in_both() -> None:
    x = [[1, 2], [3, 4], [5, 6]]
    assert secure_average(x, seed=0).average.shape == (2,)
    assert run_secure_aggregation(x, modulus=2**8, seed=0).sum.tolist() == [9, 12]


def test_data_derived_parameters_are_named() -> None:
    x = np.random.default_rng(1).normal(size=(5, 4))
    w = np.arange(1.0, 6.0)
    res = secure_average(x, w, seed=2)
    assert res.data_derived == ("clip", "max_weight")
    assert res.clip == pytest.approx(np.abs(x).max()) and res.weight_bound == 5.0  # the leak, shown
    assert secure_average(x, w, seed=2, clip=3.0).data_derived == ("max_weight",)
    assert secure_average(x, w, seed=2, clip_norm=3.0, max_weight=8.0).data_derived == ()
    assert secure_average(x, w, seed=2, clip=3.0, max_weight=8.0, backend="modular").data_derived == ()


def test_expansion_factor_counts_uploads_only() -> None:
    x = np.random.default_rng(3).integers(0, 2**16, size=(6, 50))
    led = run_secure_aggregation(x, modulus=2**16, seed=4).ledger
    up = led.upload_per_client()
    raw = 50 * 16 / 8
    assert led.expansion_factor(50, 16) == pytest.approx(sum(up.values()) / len(up) / raw, rel=1e-15)
    both = {u: up[u] + led.download_per_client()[u] for u in up}
    assert led.expansion_factor(50, 16) < sum(both.values()) / len(both) / raw
