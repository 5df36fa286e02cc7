"""Shared helpers: median-of-repeats timers (interleaved with their baseline), the AES-CTR floor,
machine description, JSON / markdown writers.

Every figure the suite reports is ``median(samples)`` over ``repeats`` runs; when a figure is a ratio,
its baseline is timed in the same process, interleaved run by run with the thing measured
(A, B, A, B, ...) so that load from other processes on the shared machine hits both alike.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Mapping
from typing import Any

__all__ = [
    "Timing",
    "time_call",
    "time_paired",
    "keystream_seconds",
    "keystream_floor",
    "machine_info",
    "write_json",
    "md_table",
    "fmt_s",
    "goal",
]

#: set by ``python -m bench --smoke``: micro grids that only exercise the harness (tests)
SMOKE = False

KEYSTREAM_CHUNK = 1 << 18  # bytes per update_into call (fastest size measured on this machine)


class Timing(dict):
    """``{"median": s, "min": s, "max": s, "samples": [s, ...]}`` (a dict so it serialises as JSON)."""

    @property
    def median(self) -> float:
        return float(self["median"])


def _timing(samples: list[float]) -> Timing:
    return Timing(median=statistics.median(samples), min=min(samples), max=max(samples), samples=samples)


def time_call(fn: Callable[[], Any], repeats: int = 3, setup: Callable[[], Any] | None = None) -> Timing:
    """Median of ``repeats`` wall-clock timings of ``fn()`` (``setup()`` runs untimed before each)."""
    samples = []
    for _ in range(max(1, repeats)):
        if setup is not None:
            setup()
        gc.collect()
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return _timing(samples)


def time_paired(fns: Mapping[str, Callable[[], Any]], repeats: int = 3) -> dict[str, Timing]:
    """Time several callables interleaved (a, b, c, a, b, c, ...); ``name -> Timing``."""
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(max(1, repeats)):
        for k, fn in fns.items():
            gc.collect()
            t0 = time.perf_counter()
            fn()
            samples[k].append(time.perf_counter() - t0)
    return {k: _timing(v) for k, v in samples.items()}


def keystream_seconds(nbytes: int, *, chunk: int = KEYSTREAM_CHUNK) -> float:
    """Seconds to produce ``nbytes`` of raw AES-256-CTR keystream through ``cryptography``.

    ``update_into`` over a zero buffer into one preallocated output buffer of ``chunk`` bytes (reused:
    it stays in cache), i.e. the cheapest way to get keystream out of ``cryptography``: the floor for
    any PRG that must produce those bytes.
    """
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    zeros = bytes(chunk)
    out = bytearray(chunk + 16)
    t0 = time.perf_counter()
    enc = Cipher(algorithms.AES(b"\x01" * 32), modes.CTR(bytes(16))).encryptor()
    left = int(nbytes)
    while left > 0:
        c = min(chunk, left)
        enc.update_into(zeros if c == chunk else zeros[:c], out)
        left -= c
    return time.perf_counter() - t0


def keystream_floor(nbytes: int, repeats: int = 3) -> Timing:
    """Median over ``repeats`` of :func:`keystream_seconds`."""
    return _timing([keystream_seconds(nbytes) for _ in range(max(1, repeats))])


def _cmd(args: list[str]) -> str:
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=10).stdout
    except Exception:  # noqa: BLE001 - informational only
        return ""


def machine_info() -> dict[str, Any]:
    """CPU model, cores, memory, load, and library versions (for the write-up)."""
    info: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()}
    for line in _cmd(["lscpu"]).splitlines():
        k, _, v = line.partition(":")
        if k.strip() in ("Model name", "CPU(s)", "Thread(s) per core", "L2 cache", "L3 cache", "Hypervisor vendor"):
            info[k.strip()] = v.strip()
    for line in _cmd(["free", "-m"]).splitlines():
        if line.startswith("Mem:"):
            parts = line.split()
            info["mem_total_mib"] = int(parts[1])
            info["mem_available_mib"] = int(parts[-1])
    try:
        info["loadavg"] = list(os.getloadavg())
    except OSError:
        pass
    import cryptography
    import numpy

    info["numpy"] = numpy.__version__
    info["cryptography"] = cryptography.__version__
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    except Exception:  # noqa: BLE001
        pass
    nb = (16 << 20) if SMOKE else (256 << 20)
    info["aes_ctr_gb_per_s"] = round(nb / min(keystream_seconds(nb) for _ in range(3)) / 1e9, 2)
    return info


def _default(o: Any) -> Any:
    try:
        import numpy as np

        if isinstance(o, np.integer):
            return int(o)
        if isinstance(o, np.floating):
            return float(o)
        if isinstance(o, np.ndarray):
            return o.tolist()
    except Exception:  # noqa: BLE001
        pass
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    return str(o)


def write_json(path: str, data: Any) -> None:
    """Write ``data`` as indented JSON (numpy scalars converted), atomically (:func:`rfa.jobs.atomic_write_text`:
    a temporary file in the same folder renamed over ``path``), so an interrupted write never leaves a
    truncated file."""
    from rfa.jobs import atomic_write_text

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write_text(path, json.dumps(data, indent=1, default=_default) + "\n")


def fmt_s(x: float | None) -> str:
    """Seconds in a readable unit."""
    if x is None:
        return "-"
    if x >= 100:
        return f"{x:.0f} s"
    if x >= 1:
        return f"{x:.2f} s"
    if x >= 1e-3:
        return f"{x * 1e3:.1f} ms"
    return f"{x * 1e6:.0f} µs"


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if v != v:
            return "-"
        if abs(v) >= 1000 or (abs(v) < 1e-3 and v != 0):
            return f"{v:.3g}"
        return f"{v:.3f}".rstrip("0").rstrip(".") if abs(v) < 10 else f"{v:.1f}"
    return str(v)


def md_table(rows: list[Mapping[str, Any]], columns: list[str] | None = None, headers: Mapping[str, str] | None = None) -> str:
    """A GitHub markdown table of ``rows`` (selected ``columns``; ``headers`` renames them)."""
    if not rows:
        return "_(no rows)_\n"
    cols = columns or list(rows[0].keys())
    hd = headers or {}
    out = ["| " + " | ".join(hd.get(c, c) for c in cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in rows:
        out.append("| " + " | ".join(_cell(r.get(c)) for c in cols) + " |")
    return "\n".join(out) + "\n"


def goal(name: str, value: float | None, target: float, *, lower_is_better: bool = True, unit: str = "x", note: str = "") -> dict[str, Any]:
    """A goal record: ``met`` is None when ``value`` could not be measured."""
    met = None if value is None else (value <= target if lower_is_better else value >= target)
    return {"goal": name, "value": value, "target": ("<= " if lower_is_better else ">= ") + f"{target}{unit}", "met": met, "note": note}
