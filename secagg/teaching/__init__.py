"""Teaching views of one protocol run: the counterfactual panels and the interactive HTML page.

``secagg trace`` runs one small session of Bonawitz et al., *Practical Secure Aggregation for
Privacy-Preserving Machine Learning* (CCS 2017), and records it as a JSON transcript. This package adds
to that transcript what a lecture needs and no real party could show (:mod:`secagg.teaching.panels`:
a Shamir reconstruction over a toy prime field, the double-masking attack on the same run, what an
equivocating server would be caught doing, the ledger beside the paper's cost model), and renders the
transcript as one self-contained HTML page (:mod:`secagg.teaching.page`) that does no cryptography:
it only draws what the JSON says.

``python -m secagg.teaching DIR`` regenerates the scenario pages shipped with the documentation.
"""

from __future__ import annotations

from secagg._lazy import lazy_exports

SCHEMA = 1
"""Version of the JSON transcript that the page reads (``trace["schema"]``); bumped on any
incompatible change of the transcript's layout."""

__all__ = ["SCHEMA", "build_panels", "render_html", "SCENARIOS", "write_pages"]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "build_panels": "secagg.teaching.panels",
        "render_html": "secagg.teaching.page",
        "SCENARIOS": "secagg.teaching.pages",
        "write_pages": "secagg.teaching.pages",
    },
    globals(),
)
