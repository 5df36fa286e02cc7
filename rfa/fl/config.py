"""The configuration of one federated run: a dataclass serialised into every results file.

Field names follow the RFA paper's Algorithm 1: ``num_clients`` = n, ``clients_per_round`` = m,
``rounds`` = T, ``local_steps`` = tau (or ``local_epochs``), ``lr`` = gamma; ``rho`` is the
corruption level of eq. (5) (fraction of total weight held by corrupted clients).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from secagg.errors import InvalidInput

__all__ = ["FLConfig", "ConfigError"]


class ConfigError(InvalidInput):
    """An inconsistent or out-of-range configuration."""


@dataclass
class FLConfig:
    """One run of Algorithm 1 (or Algorithm 4 when ``personalized``).

    Attributes:
        dataset: ``mnist5k`` | ``digits`` | ``fashion-mnist`` | ``shakespeare`` | ``synthetic-ls`` |
            ``synthetic-cls`` | ``leaf:<dir>``.
        dataset_params: extra loader arguments (e.g. ``{"max_clients": 30}`` for Shakespeare).
        model: ``linear`` | ``convnet`` | ``lstm``; ``model_params`` go to its constructor.
        partition: ``natural`` | ``iid`` | ``dirichlet``; ``dirichlet_alpha`` its concentration.
        num_clients: n for iid/dirichlet partitions (natural partitions use the data's groups).
        clients_per_round: m <= n, sampled without replacement each round (an error when m > n).
        rounds: T outer iterations.
        local_steps: tau minibatch SGD steps per client per round, minibatches drawn with replacement
            (Algorithm 1 line 6); when ``None``, ``local_epochs`` passes over the client's data
            (ceil(E N_i / B) steps over fresh permutations, so steps differ between clients).
        batch_size, lr: minibatch size and local step size gamma; ``lr_decay_every``/``lr_decay`` halve
            (multiply) gamma every so many rounds, as in the paper's Shakespeare script.
        server_lr: the server step ``w <- w + server_lr * aggregate(updates)``.
        aggregator, aggregator_params: a name of ``rfa.aggregators.NAMES`` and its parameters.
        oracle, oracle_params: ``ideal`` | ``modular`` | ``secagg`` and their options (``seed`` is
            derived from ``seed`` when not given).
        corruption, rho, corruption_params: the corruption model (see ``rfa.fl.attacks``) and level
            rho in [0, 1/2) (eq. 5: the share of the total weight held by corrupted clients).
        personalized: run Algorithm 4 (shared w + per-client u_i).
        test_fraction: held-out fraction when the data set has no test split.
        local_test_fraction: fraction of each client's data held out for local (personalized) accuracy.
        eval_every: evaluate the server model every so many rounds (and at the end).
        seed: one seed for everything (data split, corrupted set, sampling, init, SGD noise, oracle).
        device: ``auto`` (CUDA when available) | ``cpu`` | ``cuda`` | ``cuda:N``.
        executor: ``serial`` | ``threads`` | ``processes`` | ``ray`` (local-training seam, see
            ``rfa.fl.executor``; ``ray`` needs the ``ray`` extra).
    """

    dataset: str = "mnist5k"
    dataset_params: dict[str, Any] = field(default_factory=dict)
    data_dir: str | None = None
    model: str = "linear"
    model_params: dict[str, Any] = field(default_factory=dict)
    partition: str = "dirichlet"
    dirichlet_alpha: float = 1.0
    num_clients: int = 50
    clients_per_round: int = 10
    rounds: int = 30
    local_steps: int | None = None
    local_epochs: float | None = 1.0
    batch_size: int = 32
    lr: float = 0.1
    lr_decay_every: int | None = None
    lr_decay: float = 0.5
    server_lr: float = 1.0
    aggregator: str = "fedavg"
    aggregator_params: dict[str, Any] = field(default_factory=dict)
    oracle: str = "ideal"
    oracle_params: dict[str, Any] = field(default_factory=dict)
    corruption: str = "none"
    rho: float = 0.0
    corruption_params: dict[str, Any] = field(default_factory=dict)
    personalized: bool = False
    test_fraction: float = 0.2
    local_test_fraction: float = 0.0
    eval_every: int = 5
    seed: int = 0
    device: str = "auto"
    executor: str = "serial"

    def validate(self) -> "FLConfig":
        """Raise :class:`ConfigError` on an impossible setting; return ``self``."""
        if self.rounds < 1:
            raise ConfigError("rounds must be >= 1")
        if self.clients_per_round < 1:
            raise ConfigError("clients_per_round must be >= 1")
        if self.num_clients < 1:
            raise ConfigError("num_clients must be >= 1")
        if not 0.0 <= self.rho < 0.5:
            raise ConfigError(f"rho (eq. 5) must lie in [0, 0.5) (the geometric median's breakdown point is 1/2), got {self.rho}")
        if self.partition != "natural" and self.clients_per_round > self.num_clients:
            raise ConfigError(f"clients_per_round m={self.clients_per_round} exceeds the number of clients n={self.num_clients} "
                              "(Algorithm 1 samples m of n without replacement)")
        if self.local_steps is None and (self.local_epochs is None or self.local_epochs <= 0):
            raise ConfigError("set local_steps >= 1 or local_epochs > 0")
        if self.local_steps is not None and self.local_steps < 1:
            raise ConfigError("local_steps must be >= 1")
        if self.batch_size < 1 or self.lr <= 0 or self.server_lr <= 0:
            raise ConfigError("batch_size, lr and server_lr must be positive")
        if self.oracle not in ("ideal", "modular", "secagg"):
            raise ConfigError(f"unknown oracle {self.oracle!r}; choose ideal, modular or secagg")
        if self.eval_every < 1:
            raise ConfigError("eval_every must be >= 1")
        self._check_names()
        if not 0.0 <= self.test_fraction < 1.0 or not 0.0 <= self.local_test_fraction < 1.0:
            raise ConfigError("test fractions must lie in [0, 1)")
        return self

    def _check_names(self) -> None:
        """Unknown aggregator / corruption / model / partition / executor names are typed errors here,
        before any data is loaded or any run starts (the CLIs validate every config of a sweep first)."""
        from rfa.aggregators import NAMES as aggregators

        from .attacks import CORRUPTIONS
        from .executor import EXECUTORS
        from .models import MODELS
        from .partition import PARTITIONS

        for what, value, allowed in (("aggregator", self.aggregator, aggregators), ("corruption", self.corruption, CORRUPTIONS),
                                     ("model", self.model, MODELS), ("partition", self.partition, PARTITIONS),
                                     ("executor", self.executor, EXECUTORS)):
            if value not in allowed:
                raise ConfigError(f"unknown {what} {value!r}; choose one of {', '.join(allowed)}")
        from .attacks import make_corruption

        try:  # typed corruption parameters: an unknown or ill-typed one fails here, before any run
            make_corruption(self.corruption, **self.corruption_params)
        except ConfigError:
            raise
        except InvalidInput as exc:
            raise ConfigError(str(exc)) from exc

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FLConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ConfigError(f"unknown config fields: {sorted(unknown)}")
        return cls(**d)

    def replace(self, **changes: Any) -> "FLConfig":
        return dataclasses.replace(self, **changes)
