"""rfa.fl: the federated loop of the RFA paper (Algorithm 1, personalized Algorithm 4) and the study.

``for round: sample clients -> local training (executor) -> corruption -> aggregator(oracle) -> server step``

Modules: :mod:`~rfa.fl.config` (``FLConfig``), :mod:`~rfa.fl.data` (offline data sets),
:mod:`~rfa.fl.partition`, :mod:`~rfa.fl.models`, :mod:`~rfa.fl.executor`, :mod:`~rfa.fl.attacks`,
:mod:`~rfa.fl.personalized`, :mod:`~rfa.fl.loop` (``run``), :mod:`~rfa.fl.experiments` (sweeps),
:mod:`~rfa.fl.plots`. Public names resolve lazily (PEP 562) so that importing the package stays cheap.
"""

from __future__ import annotations

from secagg._lazy import lazy_exports

_LAZY = {
    "FLConfig": "rfa.fl.config",
    "ConfigError": "rfa.fl.config",
    "run": "rfa.fl.loop",
    "RunResult": "rfa.fl.loop",
    "build_data": "rfa.fl.loop",
    "evaluate": "rfa.fl.loop",
    "FederatedData": "rfa.fl.data",
    "DataUnavailable": "rfa.fl.data",
    "load_pooled": "rfa.fl.data",
    "make_model": "rfa.fl.models",
    "make_corruption": "rfa.fl.attacks",
    "select_corrupted": "rfa.fl.attacks",
    "make_executor": "rfa.fl.executor",
    "Sweep": "rfa.fl.experiments",
    "quick_config": "rfa.fl.experiments",
    "run_sweep": "rfa.fl.experiments",
}

__all__ = list(_LAZY)


__getattr__, __dir__ = lazy_exports("rfa.fl", _LAZY, globals())
