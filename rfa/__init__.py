"""rfa: robust federated aggregation through a secure average oracle.

Pillutla, Kakade, Harchaoui, "Robust Aggregation for Federated Learning" (IEEE TSP 2022): the secure
average oracle, smoothed Weiszfeld (Algorithm 2), one-step RFA (Algorithm 3), the s-privacy audit
(Definition 1, Proposition 3), baselines, and the federated loop (``rfa.fl``). Torch tensors in and out.

Public names are resolved lazily (PEP 562).
"""

from __future__ import annotations

from secagg._lazy import lazy_exports

__version__ = "0.1.0"

_LAZY = {
    "SecureAverageOracle": "rfa.oracle",
    "IdealOracle": "rfa.oracle",
    "SecAggOracle": "rfa.oracle",
    "ModularOracle": "rfa.oracle",
    "OracleCall": "rfa.oracle",
    "Deviation": "rfa.oracle",
    "DeviatingOracle": "rfa.oracle",
    "smoothed_weiszfeld": "rfa.weiszfeld",
    "one_step_rfa": "rfa.weiszfeld",
    "geometric_median": "rfa.weiszfeld",
    "WeiszfeldResult": "rfa.weiszfeld",
    "PrivacyAuditor": "rfa.privacy",
    "proposition3_bound": "rfa.privacy",
    "PrivacyViolation": "rfa.privacy",
    "aggregators": "rfa.aggregators",
}

__all__ = list(_LAZY)


__getattr__, __dir__ = lazy_exports("rfa", _LAZY, globals())
