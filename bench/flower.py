"""Benchmark 2: a full SecAgg+ round, ours against Flower's (flwr 1.42), same (n, d, t, graph) and inputs.

Flower lives in its own virtual environment (its pins conflict with ours, see docs/benchmarks.md), so
each Flower round runs ``bench/flower_driver.py`` under that environment's Python in a subprocess; the
wall time reported is measured *inside* the driver around Flower's workflow call (interpreter start and
imports excluded). Both results are checked against the plaintext sum of the same integer inputs.

Graph mapping: Flower's ``num_shares = 1.0`` (every client shares with all) <-> our complete graph;
Flower's ``num_shares = s`` (odd: s - 1 ring neighbours plus the client itself) <-> our Harary graph of
degree ``k = s - 1`` with the self-edge (``s`` share holders). Same threshold ``t`` on both sides.
Our modulus M = 2**32 = Flower's default ``modulus_range``; inputs are 16-bit integers.

Timings are interleaved ours / Flower's per repeat; the speedup is median(Flower) / median(ours). Flower's
clients run one after another, so the verdict uses ours serial (``workers=1``, one process); where the
engine has its opt-in parallel clients, ours with ``workers=2`` (two forked processes) is timed in the
same interleaved loop and reported beside it (``ours_w2_s``, ``speedup_w2``), never as the verdict.
A goal whose Flower figure was not measured in this run (Flower not installed, the point not in this
mode's grid, or Flower failed) has no verdict: its row says "not measured (...)" and, for the reader,
quotes the committed reference run :data:`REFERENCE` (a results file of this suite, with the command,
machine and time it was measured). A quoted figure never enters a verdict, a row or a plot.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np

from bench import common
from bench.common import goal

INSTALL = """python3 -m venv /tmp/flwr-venv
/tmp/flwr-venv/bin/pip install --no-deps flwr==1.42.0
/tmp/flwr-venv/bin/pip install certifi "numpy<3" "grpcio>=1.70,<2" "grpcio-health-checking>=1.70,<2" \\
    "protobuf>=5.28,<7" "cryptography>=50,<51" "pycryptodome>=3.18,<4" "iterators>=0.0.2,<0.0.3" \\
    "typer>=0.13,<0.21" tomli tomli-w "pathspec>=1.0.4" prompt-toolkit "rich>=14,<15" pyyaml requests httpx click "packaging<26"
(or set FLWR_PYTHON to a Python that can `import flwr`)"""

#: the committed reference run quoted (never as a verdict) where Flower was not measured in this run
REFERENCE = "bench/reference_results/full_2026-11-21.json"
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

DRIVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "flower_driver.py")
M = 1 << 32
Q = 1 << 16


def flower_python() -> tuple[str | None, str]:
    """(python executable that can import flwr, version) or (None, reason)."""
    cands = [os.environ.get("FLWR_PYTHON"), "/tmp/flwr-venv/bin/python"]
    for py in cands:
        if not py or not os.path.exists(py):
            continue
        try:
            r = subprocess.run([py, "-c", "import flwr, flwr.client.mod.secure_aggregation.secaggplus_mod; print(flwr.__version__)"],
                               capture_output=True, text=True, timeout=120)
        except Exception as exc:  # noqa: BLE001
            return None, f"{py}: {exc}"
        if r.returncode == 0:
            return py, r.stdout.strip()
        return None, f"{py} cannot import flwr: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}"
    return None, "no Python with flwr found (FLWR_PYTHON unset and /tmp/flwr-venv absent)"


def run_flower(py: str, x: np.ndarray, num_shares: str, t: int, workdir: str, timeout: float = 1800) -> dict[str, Any]:
    """One Flower round through the driver; returns its JSON result."""
    inp = os.path.join(workdir, "inputs.npy")
    out = os.path.join(workdir, "flower.json")
    if not os.path.exists(inp) or np.load(inp, mmap_mode="r").shape != x.shape:
        np.save(inp, x)
    if os.path.exists(out):
        os.remove(out)
    r = subprocess.run([py, DRIVER, "--inputs", inp, "--num-shares", num_shares, "--threshold", str(t),
                        "--quantization-range", str(Q), "--modulus-range", str(M), "--out", out],
                       capture_output=True, text=True, timeout=timeout)
    if not os.path.exists(out):
        return {"ok": False, "error": f"driver exit {r.returncode}: {r.stderr[-500:]}"}
    with open(out) as f:
        return json.load(f)


def run_ours(x: np.ndarray, graph: str, k: int | None, t: int, seed: int, workers: int = 1) -> dict[str, Any]:
    """One round of ours (``workers > 1``: the engine's opt-in parallel clients in forked processes)."""
    from secagg.protocol import run_secure_aggregation

    kw = {"workers": workers} if workers > 1 else {}
    t0 = time.perf_counter()
    res = run_secure_aggregation(x, modulus=M, threshold=t, graph=graph, neighbours=k, seed=seed, **kw)
    wall = time.perf_counter() - t0
    truth = (x.astype(np.uint64).sum(axis=0) % M).astype(res.sum.dtype)
    ok = bool(np.array_equal(res.sum, truth))
    clients = sum(v["clients"] for v in res.timings.values())
    return {"ok": ok, "wall_s": wall, "clients_s": clients, "server_s": sum(v["server"] for v in res.timings.values()), "k": res.graph.k}


def workers_supported() -> bool:
    """Whether the engine takes ``workers`` (parallel clients); then ours is also timed with 2 processes."""
    from bench.protocol_phases import workers_supported as ws

    return ws()


def points(quick: bool) -> list[dict[str, Any]]:
    """Comparison points: n, d, shares (None = complete), t, Flower repeats, ours repeats."""
    if common.SMOKE:
        return [{"n": 5, "d": 100, "shares": None, "flower_repeats": 1}]
    if quick:
        return [
            {"n": 20, "d": 10000, "shares": None, "flower_repeats": 1},
            {"n": 100, "d": 1000000, "shares": 11, "flower_repeats": 1},
        ]
    return [
        {"n": 20, "d": 10000, "shares": None, "flower_repeats": 3},
        {"n": 50, "d": 10000, "shares": None, "flower_repeats": 1},
        {"n": 100, "d": 10000, "shares": None, "flower_repeats": 1},
        {"n": 100, "d": 1000000, "shares": 11, "flower_repeats": 3},
    ]


def run(quick: bool = False, repeats: int = 3, log=print) -> dict[str, Any]:  # noqa: ANN001
    out: dict[str, Any] = {"name": "flower"}
    py, ver = flower_python()
    rows = []
    goals = []
    if py is None:
        msg = f"Flower not available ({ver}); skipped. Install with:\n{INSTALL}"
        log("  " + msg.replace("\n", "\n  "))
        out["skipped"] = msg
    else:
        out["flwr_version"] = ver
        out["flwr_python"] = py
    # BENCH_FLOWER_POINTS="NxD,..." re-measures only those points; the other points' rows are kept from
    # the earlier results.json named by BENCH_FLOWER_PREVIOUS (each row says when it was measured)
    only = {tuple(int(float(v)) for v in x.split("x")) for x in os.environ.get("BENCH_FLOWER_POINTS", "").split(",") if x.strip()}
    previous: dict[tuple, dict[str, Any]] = {}
    if only and os.environ.get("BENCH_FLOWER_PREVIOUS"):
        with open(os.environ["BENCH_FLOWER_PREVIOUS"]) as f:
            prev = json.load(f).get("flower", {})
        for r in prev.get("rows", []):
            r = dict(r)
            r.setdefault("measured_utc", prev.get("ran", {}).get("started_utc", "earlier run"))
            previous[(r["n"], r["d"], r["graph"])] = r
    for p in points(quick):
        n, d, s = p["n"], p["d"], p["shares"]
        if only and (n, d) not in only:
            key = (n, d, "complete" if s is None else f"{s} share holders (k={s - 1})")
            if key in previous:
                # measured in an earlier run: shown with its provenance, never a verdict of this run
                previous[key]["source"] = f"kept from {os.environ['BENCH_FLOWER_PREVIOUS']} (measured {previous[key]['measured_utc']})"
                rows.append(previous[key])
                log(f"  n={n} d={d}: kept from {previous[key]['measured_utc']}")
            continue
        holders = n if s is None else s
        t = holders // 2 + 1
        graph, k = ("complete", None) if s is None else ("secagg+", s - 1)
        x = np.random.default_rng(n * 31 + d).integers(0, Q, size=(n, d), dtype=np.uint64).astype(np.uint32)
        ours, ours2, flw = [], [], []
        par = workers_supported()
        with tempfile.TemporaryDirectory(prefix="bench-flwr-") as wd:
            fr = p["flower_repeats"] if py else 0
            for r in range(max(repeats, fr)):
                if r < repeats:
                    ours.append(run_ours(x, graph, k, t, seed=r))
                    if par:
                        ours2.append(run_ours(x, graph, k, t, seed=r, workers=2))
                if r < fr:
                    flw.append(run_flower(py, x, "1.0" if s is None else str(s), t, wd))
                    if not flw[-1].get("ok"):
                        log(f"  Flower failed at n={n} d={d}: {flw[-1].get('error')}")
                        break
        our_s = float(np.median([o["wall_s"] for o in ours]))
        row: dict[str, Any] = {
            "n": n, "d": d, "graph": "complete" if s is None else f"{s} share holders (k={s - 1})", "t": t,
            "ours_s": our_s, "ours_ok": all(o["ok"] for o in ours), "ours_repeats": len(ours),
            "measured_utc": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
        }
        if ours2:
            row["ours_w2_s"] = float(np.median([o["wall_s"] for o in ours2]))
            row["ours_w2_ok"] = all(o["ok"] for o in ours2)
        good = [f for f in flw if f.get("ok")]
        if good:
            # Flower's wall time without its protobuf round trips (favours Flower; ours includes its wire format)
            f_s = float(np.median([f["wall_without_transport_s"] for f in good]))
            row.update(flower_s=f_s, flower_ok=True, flower_repeats=len(good), source=MEASURED,
                       flower_clients_s=float(np.median([f["clients_s"] for f in good])),
                       flower_server_s=float(np.median([f["server_s"] for f in good])),
                       flower_transport_s=float(np.median([f["transport_s"] for f in good])),
                       flower_wall_with_protobuf_s=float(np.median([f["wall_s"] for f in good])),
                       flower_stage_clients_s=good[0]["stage_clients_s"], speedup=f_s / our_s)
            if ours2:
                row["speedup_w2"] = f_s / row["ours_w2_s"]
        else:
            row.update(flower_ok=False if flw else None, flower_error=flw[-1].get("error") if flw else out.get("skipped", "")[:80],
                       source="not measured (" + ("Flower failed" if flw else _why_unmeasured(py, ver, [], n, d, s)) + ")")
        rows.append(row)
        log(f"  n={n} d={d} {row['graph']}: ours {our_s:.2f} s" + (f" (workers=2: {row['ours_w2_s']:.2f} s)" if ours2 else "")
            + (f", Flower {row['flower_s']:.2f} s" if "flower_s" in row else ", Flower not measured"))
    out["rows"] = rows
    # goals: n=100, d=1e4 complete (>= 20x); n=100, d=1e6, 11 holders (>= 10x)
    for key, target, label in (((100, 10000, None), 20.0, "n=100, d=1e4, complete"), ((100, 1000000, 11), 10.0, "n=100, d=1e6, 11 neighbours")):
        n, d, s = key
        name = f"speedup vs Flower SecAgg+, {label} (ours serial, one process)"
        meas = [r for r in rows if r["n"] == n and r["d"] == d and r.get("speedup") and r.get("source") == MEASURED
                and ((s is None) == (r["graph"] == "complete"))]
        if meas:
            # the verdict compares like with like: ours serial (one process), Flower's clients one after another
            goals.append(goal(name, meas[0]["speedup"], target,
                              lower_is_better=False, note="verdict; Flower measured in the same run, its clients one after another"))
            if meas[0].get("speedup_w2"):
                g2 = goal(f"speedup vs Flower SecAgg+, {label} (ours workers=2, two processes)", meas[0]["speedup_w2"], target,
                          lower_is_better=False, note="informational, not the verdict: Flower's clients run one after another")
                g2["met"] = None
                goals.append(g2)
            continue
        goals.append(unmeasured_goal(name, target, n, d, s, _why_unmeasured(py, ver, rows, n, d, s)))
    out["goals"] = goals
    return out


MEASURED = "measured (same run)"


def _why_unmeasured(py: str | None, ver: str, rows: list[dict[str, Any]], n: int, d: int, s: int | None) -> str:
    """Why a goal's Flower figure is missing from this run: ``flwr not installed``, not in the grid, failed."""
    if py is None:
        return "flwr not installed" if "no Python with flwr" in ver or "cannot import flwr" in ver else f"flwr unavailable: {ver}"
    row = [r for r in rows if r["n"] == n and r["d"] == d and ((s is None) == (r["graph"] == "complete"))]
    if not row:
        return "this point is not in this mode's grid; run the full suite"
    if row[0].get("source", MEASURED) != MEASURED:
        return f"row {row[0]['source']}"
    return f"Flower failed: {str(row[0].get('flower_error', ''))[:80]}"


def reference_row(n: int, d: int, s: int | None, path: str | None = None) -> dict[str, Any] | None:
    """The Flower row of :data:`REFERENCE` (or ``path``) at ``(n, d, graph)``, with the run's machine and
    date, or None when the file or the row is absent."""
    path = path or os.path.join(_ROOT, REFERENCE)
    try:
        with open(path) as f:
            ref = json.load(f)
    except (OSError, ValueError):
        return None
    for r in ref.get("flower", {}).get("rows", []):
        if r.get("n") == n and r.get("d") == d and ((s is None) == (r.get("graph") == "complete")) and r.get("speedup"):
            runs = ref.get("meta", {}).get("runs") or [ref.get("meta", {})]
            mach = (runs[0] or {}).get("machine", ref.get("meta", {}).get("machine", {}))
            return {**r, "machine": f"{mach.get('Model name', '?')}, {mach.get('cpus', '?')} CPUs"}
    return None


def unmeasured_goal(name: str, target: float, n: int, d: int, s: int | None, why: str) -> dict[str, Any]:
    """A goal row with no value and no verdict; its note says why and quotes the reference run, if any."""
    g = goal(name, None, target, lower_is_better=False, note=f"not measured ({why})")
    ref = reference_row(n, d, s)
    if ref is not None:
        g["note"] += (f"; for reference only, no verdict: {REFERENCE} (measured {str(ref.get('measured_utc', '?'))[:10]} on "
                      f"{ref['machine']}) has Flower {ref['flower_s']:.3g} s vs ours {ref['ours_s']:.3g} s, {ref['speedup']:.3g}x")
        g["reference"] = {"source": REFERENCE, "flower_s": ref["flower_s"], "ours_s": ref["ours_s"], "speedup": ref["speedup"],
                          "measured_utc": ref.get("measured_utc"), "machine": ref["machine"]}
    g["met"] = None
    return g
