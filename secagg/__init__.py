"""secagg: a faithful emulation of pairwise-masked secure aggregation.

Bonawitz et al., "Practical Secure Aggregation for Privacy-Preserving Machine Learning" (CCS 2017),
rounds 0-4 in the honest-but-curious and active variants, on the complete graph or the sparse SecAgg+
graph of Bell et al. (CCS 2020). This package depends on numpy and ``cryptography`` only; it knows
nothing about machine learning and never imports torch.

Public names are resolved lazily (PEP 562) so ``import secagg`` stays cheap and each submodule can be
used on its own.
"""

from __future__ import annotations

from secagg._lazy import lazy_exports
from secagg.errors import (
    DecryptionFailed,
    InconsistentShares,
    InconsistentView,
    InvalidInput,
    MalformedMessage,
    OverflowRisk,
    ProtocolAborted,
    ProtocolViolation,
    SecAggError,
    SignatureInvalid,
    StateError,
)

__version__ = "0.1.0"

# public name -> submodule that defines it
_LAZY = {
    "run_secure_aggregation": "secagg.protocol",
    "AggregationResult": "secagg.protocol",
    "ROUNDS": "secagg.protocol",
    "Round": "secagg.rounds",
    "Variant": "secagg.rounds",
    "SessionParams": "secagg.protocol",
    "PROTOCOLS": "secagg.protocol",
    "Ledger": "secagg.ledger",
    "secure_average": "secagg.average",
    "SecureAverageResult": "secagg.average",
    "Quantizer": "secagg.discretize",
    "choose_modulus": "secagg.discretize",
    "find_secagg_plus_params": "secagg.graph",
    "WrongShare": "secagg.reconstruct",
}

__all__ = [
    "DecryptionFailed",
    "InconsistentShares",
    "InconsistentView",
    "InvalidInput",
    "MalformedMessage",
    "OverflowRisk",
    "ProtocolAborted",
    "ProtocolViolation",
    "SecAggError",
    "SignatureInvalid",
    "StateError",
    *_LAZY,
]


__getattr__, __dir__ = lazy_exports("secagg", _LAZY, globals(), tuple(__all__))
