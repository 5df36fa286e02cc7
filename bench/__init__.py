"""Benchmarks of secagg/rfa against the physical floor (AES-CTR keystream) and public implementations
(Flower's SecAgg+, ``geom_median``); run ``python -m bench [--quick]``.

Not an installed package: run from the repository root. Every timing is the median of repeated runs
and is reported as a ratio against a baseline measured in the same run (the machine is shared).
"""
