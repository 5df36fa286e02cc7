"""Benchmark 5: scale -- a faithful SecAgg+ round at n = 10,000, d = 1e4, and the server's peak memory at
n = 1000, d = 1e6 (full suite only).

* Round time: ``run_secure_aggregation(x, graph="secagg+")`` with (k, t) from the parameter finder, in a
  fresh subprocess (so the measurement is not disturbed by what ran before), every client and the
  server emulated one after another on one core; the sum is checked. Reported beside the keystream
  floor for all the masks the round expands (measured in the same subprocess).
* Server memory: the protocol runs with the **server in its own process** (``multiprocessing`` spawn),
  the clients and the transport in the parent: a proxy ``server_class`` forwards each upload through
  a pipe as the transport delivers it, and the real :class:`secagg.server.Server` in the child
  consumes them one at a time (as it would from a network). The child's peak resident set (``VmHWM``
  of /proc/self/status; ``ru_maxrss`` would be wrong: a spawned child inherits its parent's) is the
  server process's peak memory; minus its resident set before the session started (interpreter,
  numpy, cryptography) it is the server's own; tracemalloc's peak (Python objects and numpy buffers)
  is reported beside it. Every client holds the same input row (a broadcast view) so the parent
  holds one d-vector per client only; the sum is checked (= n x mod M).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import subprocess
import sys
import time
from typing import Any

import numpy as np

from bench import common
from bench.common import goal, keystream_seconds

M = 1 << 32
MMAP_THRESHOLD = 128 * 1024


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _rss_mib() -> float:
    """Current resident set (MiB)."""
    return _status_mib("VmRSS")


def _hwm_mib() -> float:
    """Peak resident set of this address space (MiB). Unlike ``ru_maxrss`` it is not inherited from the
    parent across fork + exec (a spawned child's ``ru_maxrss`` starts at its parent's RSS)."""
    return _status_mib("VmHWM")


# ------------------------------------------------------------------------------------------------
# server in a child process
# ------------------------------------------------------------------------------------------------
_END = None


def _server_child(conn, params: Any, pki: dict[int, bytes]) -> None:  # noqa: ANN001
    from secagg.server import Server

    import tracemalloc

    base_rss = _rss_mib()
    base_max = _hwm_mib()
    tracemalloc.start()
    srv = Server(params, pki=pki)
    while True:
        cmd = conn.recv()
        if cmd == "stop":
            break
        method = cmd

        def uploads():  # noqa: ANN202
            while True:
                item = conn.recv()
                if item is _END:
                    return
                yield item

        try:
            reply = getattr(srv, method)(uploads())
            err = None
        except Exception as exc:  # noqa: BLE001
            reply, err = None, exc
        peak = _hwm_mib()
        traced = tracemalloc.get_traced_memory()[1] / 2**20
        conn.send((reply, err, dict(srv.sets), dict(srv.rejected),
                   {"base_rss_mib": base_rss, "base_maxrss_mib": base_max, "peak_rss_mib": peak, "traced_peak_mib": traced,
                    "malloc_env": os.environ.get("MALLOC_MMAP_THRESHOLD_"), "rss_mib": _rss_mib()}))
    conn.close()


class _ServerProxy:
    """Looks like a Server to the transport; the real one runs in a child process."""

    def __init__(self, params: Any, *, pki: dict[int, bytes] | None = None) -> None:
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_server_child, args=(child, params, dict(pki or {})), daemon=True)
        # glibc: serve every allocation >= 128 KiB by mmap (no dynamic threshold), so buffers the pipe
        # transport frees go back to the OS instead of fragmenting the heap (RSS then tracks live memory)
        old = os.environ.get("MALLOC_MMAP_THRESHOLD_")
        if MMAP_THRESHOLD:
            os.environ["MALLOC_MMAP_THRESHOLD_"] = str(MMAP_THRESHOLD)
        try:
            self._proc.start()
        finally:
            if old is None:
                os.environ.pop("MALLOC_MMAP_THRESHOLD_", None)
            else:
                os.environ["MALLOC_MMAP_THRESHOLD_"] = old
        self.sets: dict = {}
        self.rejected: dict = {}
        self.memory: dict = {}
        self.per_round: dict = {}

    def _call(self, method: str, uploads):  # noqa: ANN001, ANN202
        self._conn.send(method)
        for item in uploads:
            self._conn.send(item)
        self._conn.send(_END)
        reply, err, sets, rejected, mem = self._conn.recv()
        self.sets, self.rejected, self.memory = sets, rejected, mem
        self.per_round[method] = {"peak_rss_mib": mem["peak_rss_mib"], "rss_mib": mem.get("rss_mib"), "traced_peak_mib": mem.get("traced_peak_mib")}
        if err is not None:
            raise err
        return reply

    def advertise_keys(self, uploads):  # noqa: ANN001, ANN201
        return self._call("advertise_keys", uploads)

    def share_keys(self, uploads):  # noqa: ANN001, ANN201
        return self._call("share_keys", uploads)

    def masked_input_collection(self, uploads):  # noqa: ANN001, ANN201
        return self._call("masked_input_collection", uploads)

    def consistency_check(self, uploads):  # noqa: ANN001, ANN201
        return self._call("consistency_check", uploads)

    def unmasking(self, uploads):  # noqa: ANN001, ANN201
        return self._call("unmasking", uploads)

    def close(self) -> None:
        try:
            self._conn.send("stop")
        except Exception:  # noqa: BLE001
            pass
        self._proc.join(timeout=30)


def server_memory(n: int, d: int, graph: str = "secagg+", p_drop: float = 0.1, seed: int = 0) -> dict[str, Any]:
    """Peak RSS of the server process during one session (see module docstring)."""
    from secagg.protocol import Session

    row = np.random.default_rng(seed).integers(0, 1 << 16, size=d).astype(np.uint32)
    x = np.broadcast_to(row, (n, d))
    nd = int(round(p_drop * n))
    drops = {int(u): "masked-input" for u in np.random.default_rng(seed + 1).choice(n, size=nd, replace=False)} if nd else None
    holder: dict[str, _ServerProxy] = {}

    def factory(params: Any, **kw: Any) -> _ServerProxy:
        holder["s"] = _ServerProxy(params, **kw)
        return holder["s"]

    t0 = time.perf_counter()
    try:
        res = Session(x, modulus=M, graph=graph, dropouts=drops, seed=seed, dropout_fraction=max(0.05, p_drop), server_class=factory).run()
    finally:
        if "s" in holder:
            holder["s"].close()
    wall = time.perf_counter() - t0
    ok = bool(np.array_equal(res.sum, ((row.astype(np.uint64) * len(res.included)) % M).astype(res.sum.dtype)))
    mem = holder["s"].memory
    return {
        "n": n, "d": d, "graph": graph, "k": res.graph.k, "t": res.threshold, "dropout": p_drop, "ok": ok, "wall_s": wall,
        "server_base_rss_mib": mem["base_rss_mib"], "server_peak_rss_mib": mem["peak_rss_mib"],
        "server_peak_minus_base_mib": mem["peak_rss_mib"] - mem["base_rss_mib"],
        "server_traced_peak_mib": mem.get("traced_peak_mib"), "malloc_mmap_threshold": mem.get("malloc_env"),
        "accumulator_mib": d * 4 / 2**20, "parent_rss_mib": _rss_mib(), "per_round": holder["s"].per_round,
    }


# ------------------------------------------------------------------------------------------------
# n = 10,000 round
# ------------------------------------------------------------------------------------------------
def big_round(n: int, d: int, seed: int = 0) -> dict[str, Any]:
    """One faithful SecAgg+ round (run this in a fresh process)."""
    from secagg.protocol import run_secure_aggregation

    x = np.random.default_rng(seed).integers(0, 1 << 16, size=(n, d), dtype=np.uint64).astype(np.uint32)
    t0 = time.perf_counter()
    res = run_secure_aggregation(x, modulus=M, graph="secagg+", seed=seed)
    wall = time.perf_counter() - t0
    ok = bool(np.array_equal(res.sum, (x.astype(np.uint64).sum(axis=0) % M).astype(res.sum.dtype)))
    masks = n * (res.graph.k + 1) + n  # every client's k+1 masks, plus the server's self-mask removal
    floor = keystream_seconds(masks * d * 4)
    return {
        "n": n, "d": d, "k": res.graph.k, "t": res.threshold, "ok": ok, "wall_s": wall, "keystream_floor_s": floor,
        "ratio_to_floor": wall / floor, "timings": res.timings,
        "peak_rss_mib": _hwm_mib(),
    }


# ------------------------------------------------------------------------------------------------
# serial vs Ray (secagg.ray_transport): SecAgg+ rounds, crossover, one training round
# ------------------------------------------------------------------------------------------------
def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (children, theirs, ...), read from ``/proc/*/stat`` (Linux)."""
    kids: dict[int, list[int]] = {}
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/stat") as f:
                    kids.setdefault(int(f.read().rsplit(")", 1)[1].split()[1]), []).append(int(p))
            except OSError:
                continue
    out, todo = set(), [pid]
    while todo:
        for c in kids.get(todo.pop(), []):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


def _ray_processes_peak_mib(name: str = "ClientHost") -> float:
    """Sum of the peak resident sets (VmHWM) of the Ray actor processes named ``name`` that this process
    started (its descendants: the local instance's raylet forks the workers)."""
    total = 0.0
    for p in descendants(os.getpid()):
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                if name.encode() not in f.read():
                    continue
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        total += int(line.split()[1]) / 1024
        except OSError:
            continue
    return total


def executor_round(n: int, d: int, executor: str = "local", seed: int = 0, server_process: bool = True) -> dict[str, Any]:
    """One faithful SecAgg+ session (honest-but-curious, parameter finder's (k, t), no dropouts) with the
    clients in this process (``executor="local"``) or in Ray actors on a local instance with this
    machine's cores (``"ray"``); run it in a fresh process. With ``server_process`` the server runs in
    its own process (as in :func:`server_memory`), so its peak resident set is measured on its own.
    Every client holds the same input row (a broadcast view: the driver holds no n x d matrix)."""
    import contextlib

    from secagg.protocol import Session

    row = np.random.default_rng(seed).integers(0, 1 << 16, size=d).astype(np.uint32)
    x = np.broadcast_to(row, (n, d))
    holder: dict[str, _ServerProxy] = {}

    def factory(params: Any, **kw: Any) -> _ServerProxy:
        holder["s"] = _ServerProxy(params, **kw)
        return holder["s"]

    if executor == "ray":
        from secagg.ray_transport import ray_cluster

        ctx = ray_cluster()
    else:
        ctx = contextlib.nullcontext()
    actors_mib = None
    with ctx:
        t0 = time.perf_counter()
        try:
            s = Session(x, modulus=M, graph="secagg+", seed=seed, executor=executor,
                        server_class=factory if server_process else None)
            t_setup = time.perf_counter() - t0
            res = s.run()
        finally:
            if "s" in holder:
                holder["s"].close()
        wall = time.perf_counter() - t0
        if executor == "ray":
            actors_mib = _ray_processes_peak_mib()
    ok = bool(np.array_equal(res.sum, ((row.astype(np.uint64) * len(res.included)) % M).astype(res.sum.dtype)))
    out: dict[str, Any] = {
        "n": n, "d": d, "executor": executor, "k": res.graph.k, "t": res.threshold, "ok": ok, "wall_s": wall,
        "setup_s": t_setup, "timings": res.timings, "driver_peak_rss_mib": _hwm_mib(), "actors_peak_rss_mib_sum": actors_mib,
        "failures": len(res.failures), "ray_startup_s": getattr(s.transport, "startup_s", None),
    }
    if server_process and "s" in holder:
        mem = holder["s"].memory
        out.update(server_peak_rss_mib=mem["peak_rss_mib"], server_peak_minus_base_mib=mem["peak_rss_mib"] - mem["base_rss_mib"],
                   server_per_round=holder["s"].per_round)
    return out


def training_round(m: int = 100, executor: str = "serial", rounds: int = 3, seed: int = 0) -> dict[str, Any]:
    """Local training of ``m`` sampled clients (MNIST-5k split over ``m`` clients, multinomial logistic
    regression, one local epoch of batch 32): the executor's time per round, median over ``rounds``
    rounds after one warm-up round; ``"ray"`` on a local instance with this machine's cores."""
    import contextlib

    import torch

    from rfa.fl.config import FLConfig
    from rfa.fl.executor import LocalTask, make_executor
    from rfa.fl.loop import build_data
    from rfa.fl.models import make_model

    torch.set_num_threads(1)
    cfg = FLConfig(num_clients=m, clients_per_round=m, device="cpu")
    data = build_data(cfg)
    model = make_model(cfg.model, data.input_shape, data.num_classes)
    clients = np.arange(m)
    sizes = (data.offsets[1:] - data.offsets[:-1]).numpy()
    steps = np.maximum(1, np.ceil(sizes / cfg.batch_size)).astype(np.int64)
    w = model.init_vector(seed)
    ctx = contextlib.nullcontext()
    if executor == "ray":
        from secagg.ray_transport import ray_cluster

        ctx = ray_cluster()
    times = []
    with ctx:
        ex = make_executor(executor)
        for r in range(rounds + 1):
            task = LocalTask(model, data, clients, w.unsqueeze(0).expand(m, -1).contiguous(), steps, cfg.batch_size, cfg.lr,
                             seed + r, epochs=True)
            t0 = time.perf_counter()
            out = ex.run(task)
            times.append(time.perf_counter() - t0)
            assert out.shape == (m, model.dim)
        if hasattr(ex, "close"):
            ex.close()
    return {"m": m, "executor": executor, "d": model.dim, "steps_per_client": float(steps.mean()),
            "round_s": float(np.median(times[1:])), "first_round_s": times[0], "cpus": os.cpu_count()}


def executors(quick: bool = False, log=print, big: bool = False) -> dict[str, Any]:  # noqa: ANN001
    """Serial vs Ray: SecAgg+ rounds, the crossover in n, a training round (see :func:`executor_round`)."""
    out: dict[str, Any] = {}
    if common.SMOKE:
        grid, cross, m = [(30, 100)], [], 10
    elif quick:
        grid, cross, m = [(1000, 1000)], [100, 300], 100
    else:
        grid, cross, m = [(10000, 1000), (10000, 10000)], [100, 300, 1000, 3000, 10000], 100
    rows = []
    for n, d in grid:
        for ex in ("local", "ray"):
            r = _subprocess(f"scale.executor_round({n}, {d}, {ex!r})", 3600)
            rows.append(r)
            log(f"  SecAgg+ n={n} d={d} {ex:5s}: {r.get('wall_s', float('nan')):.1f} s, server peak "
                f"{r.get('server_peak_rss_mib', float('nan')):.0f} MiB ({r.get('error', 'ok')})")
    out["rounds"] = rows
    cr = []
    for n in cross:
        pair = {ex: _subprocess(f"scale.executor_round({n}, 1000, {ex!r}, server_process=False)", 900) for ex in ("local", "ray")}
        cr.append({"n": n, "local_s": pair["local"].get("wall_s"), "ray_s": pair["ray"].get("wall_s"),
                   "ray_setup_s": pair["ray"].get("setup_s")})
        log(f"  crossover n={n} d=1e3: serial {cr[-1]['local_s']:.2f} s, ray {cr[-1]['ray_s']:.2f} s")
    out["crossover"] = cr
    tr = {ex: _subprocess(f"scale.training_round({m}, {ex!r})", 900) for ex in ("serial", "ray")}
    out["training"] = tr
    log(f"  training round m={m}: serial {tr['serial'].get('round_s', float('nan')):.2f} s, ray {tr['ray'].get('round_s', float('nan')):.2f} s")
    if big:  # last: the longest run (n = 1e5, d = 1e3, Ray only; serial projected from per-client costs)
        r = _subprocess("scale.executor_round(100000, 1000, 'ray')", 4 * 3600)
        out["big"] = r
        log(f"  SecAgg+ n=100000 d=1000 ray: {r.get('wall_s', float('nan')):.0f} s, server peak "
            f"{r.get('server_peak_rss_mib', float('nan')):.0f} MiB ({r.get('error', 'ok')})")
    return out


def _subprocess(expr: str, timeout: float) -> dict[str, Any]:
    code = f"import json, sys; from bench import scale; r = {expr}; json.dump(r, sys.stdout)"
    try:
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                           cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"timed out after {timeout:.0f} s"}
    if p.returncode != 0:
        return {"ok": False, "error": p.stderr[-800:]}
    return json.loads(p.stdout)


def _ray_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("ray") is not None


def run(quick: bool = False, repeats: int = 1, log=print) -> dict[str, Any]:  # noqa: ANN001
    out: dict[str, Any] = {"name": "scale"}
    ray_ok = _ray_installed()
    if common.SMOKE:
        out["round"] = _subprocess("scale.big_round(20, 100)", 120)
        out["memory"] = _subprocess("scale.server_memory(10, 1000)", 120)
        if ray_ok:
            out["executors"] = executors(log=log)
        out["goals"] = []
        return out
    if quick:
        # a small stand-in so the harness is exercised; the goals need the full suite
        r = _subprocess("scale.big_round(1000, 1000)", 600)
        m = _subprocess("scale.server_memory(100, 100000)", 600)
        out["round"], out["memory"] = r, m
        if ray_ok:
            out["executors"] = executors(quick=True, log=log)
        log(f"  (quick stand-ins) n=1000 d=1e3 round {r.get('wall_s', float('nan')):.1f} s; server peak at n=100, d=1e5: "
            f"{m.get('server_peak_minus_base_mib', float('nan')):.0f} MiB over base")
        out["goals"] = [
            goal("SecAgg+ round at n=10,000, d=1e4 (seconds)", None, 600, unit=" s", note="full suite only"),
            goal("server peak memory at n=1000, d=1e6 (MiB)", None, 1024, unit=" MiB", note="full suite only"),
        ]
        return out
    r = _subprocess("scale.big_round(10000, 10000)", 1500)
    log(f"  n=10,000 d=1e4 SecAgg+ round: {r.get('wall_s', float('nan')):.0f} s ({r.get('error', 'ok')})")
    m = _subprocess("scale.server_memory(1000, 1000000)", 1500)
    log(f"  server peak memory n=1000 d=1e6: {m.get('server_peak_rss_mib', float('nan')):.0f} MiB "
        f"({m.get('server_peak_minus_base_mib', float('nan')):.0f} MiB over the idle interpreter)")
    out["round"], out["memory"] = r, m
    if ray_ok:
        out["executors"] = executors(log=log, big=os.environ.get("BENCH_SCALE_BIG") == "1")
    else:
        log("  serial vs Ray skipped: Ray is not installed (pip install -e '.[ray]')")
    out["goals"] = [
        goal("SecAgg+ round at n=10,000, d=1e4 (seconds)", r.get("wall_s") if r.get("ok") else None, 600, unit=" s",
             note=r.get("error", "") or f"k={r.get('k')}, t={r.get('t')}, {r.get('ratio_to_floor', 0):.1f}x the keystream floor"),
        goal("server peak memory at n=1000, d=1e6 (MiB, whole server process)", m.get("server_peak_rss_mib") if m.get("ok") else None, 1024,
             unit=" MiB", note=m.get("error", "") or f"{m.get('server_peak_minus_base_mib', 0):.0f} MiB over the idle interpreter"),
    ]
    return out
