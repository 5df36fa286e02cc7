"""Review of the federated layer against the RFA paper's Algorithm 1 and the CLI contract.

Each test pins one finding of the review: Algorithm 1's sampling and weights, the bad-input
contract of ``rfa compare`` / ``rfa train`` (one clear line, exit status 2, nothing written), the
deterministic default oracle, and the GPU path (run only where CUDA exists).
"""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch

from rfa import aggregators as agg_mod
from rfa.cli import main
from rfa.fl.config import ConfigError, FLConfig
from rfa.fl.data import FederatedData, load_digits, synthetic_classification
from rfa.fl.loop import run
from rfa.fl.partition import partition


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits8() -> FederatedData:
    """sklearn digits, Dirichlet label skew over 8 clients (unequal N_i, so alpha_i = N_i / N matters)."""
    return partition(load_digits(), name="digits", scheme="dirichlet", num_clients=8, alpha=1.0, seed=0)


def _cfg(**kw) -> FLConfig:
    base = dict(dataset="digits", model="linear", partition="dirichlet", num_clients=8, clients_per_round=3, rounds=2,
                local_steps=1, local_epochs=None, batch_size=4, lr=0.1, eval_every=1000, seed=3, device="cpu")
    base.update(kw)
    return FLConfig(**base)


class _Recorder:
    """FedAvg that records what the loop hands to the aggregator."""

    name = "fedavg"
    secure_compatible = True
    calls_per_aggregation = 1
    reveals = "mean"

    def __init__(self) -> None:
        self.inner = agg_mod.make("fedavg")
        self.seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __call__(self, updates, weights, oracle):
        self.seen.append((updates.clone(), torch.as_tensor(weights).clone()))
        return self.inner(updates, weights, oracle)


# ------------------------------------------------------------------------------ Algorithm 1
def test_round_aggregates_updates_with_alpha_proportional_to_N_i_and_takes_the_server_step(digits8):
    """Algorithm 1 / footnote 4: the aggregator gets the m sampled clients' *updates* (local model
    minus w^(t), not the models) with weights proportional to N_i, and the server adds
    server_lr * aggregate. Checked exactly against the recorded round."""
    rec = _Recorder()
    cfg = _cfg(rounds=1, server_lr=0.5, clients_per_round=4)
    res = run(cfg, data=digits8, aggregator=rec)
    (updates, weights), = rec.seen
    clients = np.array(res.history[0]["clients"])
    assert len(clients) == 4 == len(set(clients.tolist()))
    sizes = digits8.sizes()[clients].astype(np.float64)
    torch.testing.assert_close(weights / weights.sum(), torch.as_tensor(sizes / sizes.sum()), rtol=0, atol=1e-15)
    # updates are deltas from w^(0) = 0 (linear model): one SGD step of size 0.1 from 0 is small
    assert float(updates.abs().max()) < 1.0
    mean = (weights.to(updates.dtype)[:, None] * updates).sum(0) / weights.sum().to(updates.dtype)
    torch.testing.assert_close(res.w, 0.5 * mean, rtol=1e-5, atol=1e-7)


def test_sampling_is_m_of_n_without_replacement_and_uniform(digits8):
    """Line 2 of Algorithm 1: every round draws m distinct clients; over T rounds each client is
    drawn Binomial(T, m/n) times. Chi-square goodness of fit of the 8 counts (T = 300, m = 3:
    expected 112.5 each) at the 1e-4 level (7 degrees of freedom: critical value 29.88), so the
    false-alarm rate of this deterministic-seed test is below 1e-4. Different seeds sample differently."""
    cfg = _cfg(rounds=300, clients_per_round=3, batch_size=1, seed=11)
    res = run(cfg, data=digits8)
    counts = np.zeros(8)
    for h in res.history:
        c = h["clients"]
        assert len(c) == 3 and len(set(c)) == 3 and all(0 <= i < 8 for i in c)
        counts[c] += 1
    expected = 300 * 3 / 8
    # without replacement the per-client variance is T p (1 - p); the chi-square below uses that
    chi2 = float((((counts - expected) ** 2) / (expected * (1 - 3 / 8))).sum())
    assert chi2 < 29.88, counts
    other = run(cfg.replace(rounds=5, seed=12), data=digits8)
    assert [h["clients"] for h in res.history[:5]] != [h["clients"] for h in other.history]


def test_clients_per_round_above_n_is_an_error_not_a_silent_clamp():
    """Found: m > n was silently clamped to n. Now a typed ConfigError, for iid/dirichlet configs at
    validation and for natural partitions (n known only from the data) at the start of run()."""
    with pytest.raises(ConfigError, match="clients_per_round"):
        _cfg(num_clients=8, clients_per_round=9).validate()
    pooled = synthetic_classification(num_clients=4, dim=3, num_classes=2, samples_per_client=10, seed=0, test_per_client=5)
    data = partition(pooled, name="synthetic-cls", scheme="natural", seed=0)
    cfg = FLConfig(dataset="synthetic-cls", partition="natural", clients_per_round=5, rounds=1, local_steps=1,
                   local_epochs=None, device="cpu")
    with pytest.raises(ConfigError, match="exceeds"):
        run(cfg, data=data)


@pytest.mark.parametrize("field,value", [("rho", 0.5), ("rho", -0.1), ("rho", float("nan")), ("aggregator", "geomed"),
                                         ("corruption", "meteor"), ("model", "resnet"), ("partition", "zipf"),
                                         ("executor", "spark")])
def test_config_rejects_out_of_range_and_unknown_names(field, value):
    """rho must lie in [0, 1/2) (eq. 5 and the breakdown point); names are checked before any data is
    loaded."""
    with pytest.raises(ConfigError):
        _cfg(**{field: value}).validate()


# ------------------------------------------------------------------------------ CLI contract
_TINY = ["--data", "digits", "--partition", "iid", "--clients", "6", "--clients-per-round", "3", "--rounds", "1",
         "--seeds", "1", "--jobs", "1", "--no-progress", "--no-plots"]


@pytest.mark.parametrize("extra,needle", [
    (["--aggregators", "fedavg,geomed"], "geomed"),
    (["--corruptions", "none,meteor"], "meteor"),
    (["--data", "mnist-1m"], "mnist-1m"),
    (["--rhos", "0,0.5"], "rho"),
    (["--rhos", "0,-0.1"], "rho"),
    (["--clients-per-round", "7"], "clients"),
    (["--rounds", "0"], "rounds"),
    (["--model", "resnet"], "resnet"),
    (["--data", "leaf:/nonexistent/leaf"], "leaf"),
    (["--data", "shakespeare", "--data-dir", "/nonexistent/plays"], "--data-dir"),
    (["--device", "cuda:99"], "cuda"),
    (["--device", "meta"], "device"),
])
def test_compare_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, extra, needle):
    """Found: an unknown aggregator or corruption only failed inside the first run, after the output
    folder was created and the header printed; m > n was silently clamped. Now every configuration
    is validated first."""
    out = tmp_path / "o"
    assert main(["compare", *_TINY, *extra, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rfa compare:") and needle.lower() in err.lower() and "Traceback" not in err
    assert not out.exists()


def test_compare_out_path_that_is_a_file_is_a_clear_error(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert main(["compare", *_TINY, "--aggregators", "fedavg", "--corruptions", "none", "--rhos", "0",
                 "--out", str(f / "sub")]) == 2
    assert "rfa compare:" in capsys.readouterr().err


@pytest.mark.parametrize("extra", [["--rho", "0.6"], ["--clients", "4", "--clients-per-round", "5"],
                                   ["--aggregator", "geomed"], ["--corruption", "meteor"],
                                   ["--data", "synthetic-cls", "--partition", "natural", "--clients-per-round", "50"]])
def test_train_bad_input_is_exit_2(capsys, extra):
    """Found: rho in [0.5, 1) was accepted by `rfa train` (the study's range is [0, 1/2))."""
    assert main(["train", "--rounds", "1", "--local-steps", "1", "--data", "digits", "--partition", "iid", *extra]) == 2
    assert "rfa train:" in capsys.readouterr().err


def test_compare_default_oracle_is_modular_and_deterministic(tmp_path, capsys):
    """Found: the default `--oracle auto` chose modular or ideal from a wall-clock probe, so the default
    study's numbers depended on the machine and its load. The default is now the modular oracle
    (bit-identical to the faithful protocol); two runs give identical rows."""
    from secagg.cli import build_parser

    args = build_parser("rfa", "rfa.commands", ("compare",), "").parse_args(["compare"])
    assert args.oracle == "modular"
    rows = []
    for k in range(2):
        out = tmp_path / f"r{k}"
        assert main(["compare", *_TINY, "--aggregators", "fedavg,rfa", "--corruptions", "none,omniscient",
                     "--rhos", "0,0.25", "--out", str(out)]) == 0
        with (out / "results.csv").open() as f:
            rows.append([{k2: v for k2, v in r.items() if k2 != "wall_time_s"} for r in csv.DictReader(f)])
    assert rows[0] == rows[1]
    assert {r["oracle"] for r in rows[0]} == {"modular"}
    assert "oracle: modular" in capsys.readouterr().out
    # config reference: every CSV row points at its run (full FLConfig) in results.json
    blob = json.loads((tmp_path / "r1" / "results.json").read_text())
    for r in rows[1]:
        cfg = blob["runs"][int(r["config_index"])]["config"]
        assert (cfg["aggregator"], cfg["corruption"], cfg["rho"], cfg["seed"]) == (r["aggregator"], r["corruption"],
                                                                                 float(r["rho"]), int(r["seed"]))
        assert json.loads(r["aggregator_params"]) == cfg["aggregator_params"] and r["device"] == "cpu"
    assert blob["meta"]["base_config"]["oracle"] == "modular" and blob["meta"]["args"]["oracle"] == "modular"


def _fake_rows() -> list[dict]:
    rows = []
    for a, drop in (("fedavg", 75.0), ("rfa", 1.0)):
        rows.append({"aggregator": a, "corruption": "none", "rho": 0.0, "accuracy": 0.85})
        for c, acc in (("omniscient", 0.10 if a == "fedavg" else 0.64), ("gaussian", 0.85 - drop / 10000)):
            rows.append({"aggregator": a, "corruption": c, "rho": 0.25, "accuracy": acc})
    return rows


def test_accuracy_vs_rho_panels_have_their_own_y_range():
    """Found: panels shared one y axis, so under Gaussian corruption (all curves within a point of
    each other) the curves were an unreadable band at the top of a 0-90% axis. Each panel now spans
    its own data (padded)."""
    import matplotlib.pyplot as plt

    from rfa.fl.plots import accuracy_vs_rho_figure

    fig = accuracy_vs_rho_figure(_fake_rows())
    try:
        (omni, gauss) = fig.axes[:2]
        assert omni.get_title() == "omniscient" and gauss.get_title() == "gaussian"
        lo, hi = gauss.get_ylim()
        assert hi - lo < 10 and lo > 70  # the 0.85 +- 0.01 curves fill the panel
        lo, hi = omni.get_ylim()
        assert lo <= 10 and hi >= 85
    finally:
        plt.close(fig)


# ------------------------------------------------------------------------------ device
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (the CPU path is covered everywhere else)")
@pytest.mark.parametrize("corruption", ["omniscient", "gaussian", "backdoor", "data-poisoning", "cga", "alie"])
def test_cuda_run_matches_cpu(digits8, corruption):
    """The whole loop on CUDA with the data already on the GPU (no .numpy() of CUDA tensors, masks and
    indices moved to the data's device); accuracy equal to the CPU run up to float rounding."""
    cfg = _cfg(aggregator="rfa", corruption=corruption, rho=0.25, rounds=3, clients_per_round=4, personalized=True)
    cpu = run(cfg, data=digits8)
    gpu = run(cfg.replace(device="cuda"), data=digits8.to("cuda"))
    assert gpu.w.device.type == "cuda" and gpu.info["device"].startswith("cuda")
    assert math.isclose(cpu.final["accuracy"], gpu.final["accuracy"], abs_tol=0.05)
    torch.testing.assert_close(gpu.w.cpu(), cpu.w, rtol=1e-3, atol=1e-4)


# ------------------------------------------------------------------------------ corruptions
def test_cga_default_target_is_fixed_as_in_seed_003():
    """Found: the CGA target was re-derived from the current model every round (a rotating target),
    while the CGA paper (eqs. 5-6) attacks towards one fixed theta_s. With a constant honest update g on
    FedAvg, the default (fixed) CGA lands the global model on theta_s at round 2 and keeps it there;
    theta_s = the first non-zero model seen, classes shifted k -> k + 1 (``target="fixed"``; the default
    theta_s is now trained on relabelled data, see test_fl_literature_attacks)."""
    from rfa.fl.attacks import make_corruption

    d_in, k = 3, 4
    dim = k * d_in + k
    head = (0, k, d_in)
    g = torch.Generator().manual_seed(1)
    honest = torch.randn(dim, generator=g, dtype=torch.float64)
    weights = torch.tensor([1.0, 2.0, 1.0], dtype=torch.float64)
    mask = torch.tensor([False, False, True])
    c = make_corruption("cga", target="fixed")
    w = torch.randn(dim, generator=g, dtype=torch.float64)
    theta = w.clone()
    theta[: k * d_in] = torch.roll(w[: k * d_in].reshape(k, d_in), 1, dims=0).reshape(-1)
    theta[k * d_in:] = torch.roll(w[k * d_in:], 1)
    for t in range(5):
        out = c.corrupt_updates(honest.repeat(3, 1), weights, mask, w=w, generator=g, head=head)
        w = w + (weights[:, None] * out).sum(0) / weights.sum()
        if t >= 1:
            torch.testing.assert_close(w, theta, rtol=1e-9, atol=1e-9)
    with pytest.raises(Exception, match="fixed"):
        make_corruption("cga", target="spiral").corrupt_updates(honest.repeat(3, 1), weights, mask, w=w, generator=g, head=head)


def test_local_epochs_are_passes_without_replacement(digits8):
    """Found: ``local_epochs`` drew every minibatch with replacement, so one "epoch" left about 1/e of
    a client's samples unseen. Epochs are now passes over fresh permutations: with E N_i a multiple
    of B, every sample of the client is used exactly E times in the round. tau local steps keep
    Algorithm 1's with-replacement draws."""
    from rfa.fl.executor import LocalTask, _indices
    from rfa.fl.models import make_model

    model = make_model("linear", digits8.input_shape, digits8.num_classes)
    sizes = digits8.sizes()
    clients = np.array([0, 3, 5])
    b = 1
    steps = 2 * sizes[clients]  # E = 2 epochs of batch size 1
    start = torch.zeros(3, model.dim)
    task = LocalTask(model, digits8, clients, start, steps, b, 0.1, seed=7, epochs=True)
    idx = _indices(task, np.arange(3), int(steps.max()))
    off = digits8.offsets
    for j, c in enumerate(clients):
        used = idx[: int(steps[j]), j].reshape(-1)
        counts = torch.bincount(used - int(off[c]), minlength=int(sizes[c]))
        assert counts.numel() == sizes[c] and bool((counts == 2).all())
    # with replacement (tau steps): repeats are expected (P[no repeat among 2 N_i draws] = 0)
    task2 = LocalTask(model, digits8, clients, start, steps, b, 0.1, seed=7)
    idx2 = _indices(task2, np.arange(3), int(steps.max()))
    used = idx2[: int(steps[0]), 0].reshape(-1)
    assert not bool((torch.bincount(used - int(off[0]), minlength=int(sizes[0])) == 2).all())


def test_omniscient_against_rfa_starts_at_minus_avg_and_moves_back():
    """Seed 002 V-A(c) meets Algorithm 2: the omniscient clients' identical vector c - 2 (N/N_c) a puts
    the weighted mean, RFA's first iterate, at exactly -a; the next Weiszfeld steps down-weight the far
    cluster and move back towards the honest updates. Honest updates N(mu, 0.1^2 I), |mu| = 1,
    d = 200, 5 of 20 clients corrupted (rho = 1/4); deterministic seed."""
    from rfa.fl.attacks import omniscient
    from rfa.oracle import IdealOracle

    g = torch.Generator().manual_seed(0)
    d, m = 200, 20
    mu = torch.randn(d, generator=g, dtype=torch.float64)
    mu /= mu.norm()
    ups = mu + 0.1 * torch.randn(m, d, generator=g, dtype=torch.float64) / math.sqrt(d)
    wts = torch.full((m,), 1.0 / m, dtype=torch.float64)
    mask = torch.zeros(m, dtype=torch.bool)
    mask[:5] = True
    bad = omniscient(ups, wts, mask)
    a = ups.mean(0)
    fed = agg_mod.make("fedavg")(bad, wts, IdealOracle()).vector
    torch.testing.assert_close(fed.to(torch.float64), -a, rtol=1e-9, atol=1e-12)
    rfa = agg_mod.make("rfa", budget=3, nu=1e-6)(bad, wts, IdealOracle()).vector.to(torch.float64)
    honest = ups[~mask].mean(0)
    assert float((rfa - honest).norm()) < 0.5 * float((fed - honest).norm())
