"""``secagg simulate``: run one secure aggregation session on random inputs and check the result.

Inputs are uniform in Z_M (numpy generator seeded with ``--seed``; data only, never masks), the
dropout schedule combines ``--dropout-rate`` (each client independently, with probability P, drops at
a round drawn uniformly from the rounds the variant runs, before sending) with explicit ``--drop
ID:ROUND`` entries (``ROUND`` a round name, optionally ``:after``). The protocol's randomness comes
from the same seed through :class:`secagg.drbg.Drbg`.

:func:`simulate` returns a plain dict (JSON-serialisable) and :func:`format_report` renders it; the
exit code is 0 iff the protocol completed and its sum equals the plaintext sum over U3.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import numpy as np

from secagg import ring
from secagg.cli import seed_arg
from secagg.errors import InvalidInput, ProtocolAborted, SecAggError
from secagg.messages import ROUNDS

NAME = "simulate"
HELP = "Run one emulated secure aggregation (Bonawitz et al. / SecAgg+) on random inputs and check the sum."

__all__ = ["NAME", "HELP", "add_arguments", "run", "simulate", "format_report", "random_inputs", "sample_dropouts",
           "simulate_real", "format_real_report", "parse_weights", "bytes_report"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clients", "-n", type=int, default=10, help="number of clients n (default 10)")
    parser.add_argument("--dim", "-d", type=int, default=1000, help="vector length d (default 1000)")
    parser.add_argument("--modulus-bits", "-b", type=int, default=32, help="M = 2^B (default 32)")
    parser.add_argument("--modulus", type=int, default=None, help="explicit modulus M (overrides --modulus-bits)")
    parser.add_argument("--threshold", "-t", type=int, default=None, help="Shamir threshold t (default: safe default)")
    parser.add_argument("--protocol", choices=("bonawitz", "plaintext"), default="bonawitz",
                        help="bonawitz (default) or plaintext: inputs in the clear, the expansion factor's baseline")
    parser.add_argument("--graph", choices=("complete", "secagg+"), default="complete")
    parser.add_argument("--neighbours", "-k", type=int, default=None, help="SecAgg+ degree k (default: parameter finder)")
    parser.add_argument("--variant", choices=("honest-but-curious", "active"), default="honest-but-curious")
    parser.add_argument("--dropout-rate", "-p", type=float, default=0.0, help="probability that a client drops (random round)")
    parser.add_argument(
        "--drop",
        action="append",
        default=[],
        metavar="ID:ROUND",
        help=f"drop client ID from ROUND on (one of {', '.join(ROUNDS)}; append ':after' to drop after sending); repeatable",
    )
    parser.add_argument("--seed", "-s", type=seed_arg, default=0, help="seed of inputs, dropouts and protocol randomness (default 0)")
    parser.add_argument("--real", action="store_true",
                        help="real-valued Gaussian inputs: one secure weighted average (secagg.secure_average), "
                             "checked against the plaintext weighted average over U3 within the stated bound")
    parser.add_argument("--weights", default=None, metavar="W1,W2,...|random",
                        help="client weights for --real (comma-separated, or 'random'; default all 1); implies --real")
    parser.add_argument("--clip", type=float, default=None, help="per-coordinate clip c for --real (default: max |x|)")
    parser.add_argument("--backend", choices=("protocol", "modular"), default="protocol",
                        help="--real: run the protocol, or the bit-identical modular sum without cryptography")
    parser.add_argument("--adaptive", action="store_true",
                        help="SecAgg+: the survivor policy also withstands floor(gamma n) corrupt clients placed after "
                             "the graph is known (refused where no survivor check can certify it)")
    parser.add_argument("--consistency-view", choices=("full", "window"), default="full",
                        help="active SecAgg+: clients see all of U3 (full, an n-bit bitmap) or only their window of "
                             "the ring with Merkle paths to a root they all sign (window: O(k + log n) bytes; the "
                             "global survivor policy is then checked by the server only)")
    parser.add_argument("--commit-self-masks", action="store_true",
                        help="clients commit to their self-mask seeds in round 1 (opt-in; +32 bytes per client, "
                             "+64 signed in the active variant): wrong shares can then only abort, never change the sum")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--workers", "-w", type=int, default=1,
                        help="run the clients in W forked worker processes (default 1: in-process; same result)")
    parser.add_argument("--executor", choices=("local", "ray"), default="local",
                        help="where the clients compute: local (default: this process, or --workers forks) or ray "
                             "(Ray actors on a local instance or a cluster; replaces --workers; same result)")
    parser.add_argument("--ray-address", default=None, metavar="HOST:PORT",
                        help="with --executor ray: join this Ray cluster (default: RAY_ADDRESS, else a local "
                             "instance on 127.0.0.1 with this machine's cores, shut down at the end)")


def random_inputs(n: int, dim: int, modulus: int, seed: int) -> list[np.ndarray]:
    """``n`` uniform vectors of Z_M^dim from a numpy generator seeded with ``seed`` (data only)."""
    m = ring.check_modulus(modulus)
    rng = np.random.default_rng([seed, 0x5EC466])
    dt = ring.dtype_for(m)
    if m <= 1 << 63:
        return [rng.integers(0, m, dim, dtype=np.uint64).astype(dt) for _ in range(n)]
    out = []
    for _ in range(n):  # M in (2^63, 2^64]: rejection from 64 random bits
        v = rng.integers(0, 1 << 64, dim, dtype=np.uint64, endpoint=False)
        while m < 1 << 64 and (v >= np.uint64(m)).any():
            bad = v >= np.uint64(m)
            v[bad] = rng.integers(0, 1 << 64, int(bad.sum()), dtype=np.uint64, endpoint=False)
        out.append(v.astype(dt))
    return out


def sample_dropouts(n: int, rate: float, variant: str, seed: int) -> dict[int, str]:
    """Each client drops with probability ``rate`` at a uniformly chosen round of the variant."""
    if not 0.0 <= rate <= 1.0:
        raise InvalidInput(f"--dropout-rate must be in [0, 1], got {rate}")
    from secagg.protocol import rounds_for

    rounds = rounds_for(variant)
    rng = np.random.default_rng([seed, 0xD209])
    drops = rng.random(n) < rate
    which = rng.integers(0, len(rounds), n)
    return {u: rounds[int(which[u])] for u in range(n) if drops[u]}


def _check_seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 1 << 256:
        raise InvalidInput(f"seed must be an int in [0, 2**256), got {seed!r}")
    return seed


def _parse_drop(spec: str) -> tuple[int, str]:
    from secagg.protocol import parse_drop_spec

    return parse_drop_spec(spec)


def _declared_delta(graph: str, dropout_rate: float) -> float | None:
    """The dropout fraction a SecAgg+ graph is designed for: the declared ``--dropout-rate`` (the
    parameter finder and the survivor bound follow it), None (the default 0.05) when none is declared."""
    return float(dropout_rate) if graph == "secagg+" and dropout_rate > 0 else None


def _plain_sum(inputs: list[np.ndarray], ids, modulus: int) -> np.ndarray:  # noqa: ANN001
    acc = ring.zeros(inputs[0].shape[0], modulus)
    for u in ids:
        ring.add_into(acc, inputs[u], modulus)
    return acc


def _schedule(clients: object, dim: object, dropout_rate: float, variant: str, seed: object,
              drops: list[str] | tuple[str, ...]) -> dict[int, str]:
    """The checks every mode of ``secagg simulate`` shares (sizes, seed) and its dropout schedule: the
    sampled ``--dropout-rate`` dropouts, then the explicit ``--drop ID:ROUND[:after]`` ones."""
    if isinstance(clients, bool) or not isinstance(clients, int) or clients < 2:
        raise InvalidInput(f"--clients must be an int >= 2, got {clients!r}")
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise InvalidInput(f"--dim must be an int >= 1, got {dim!r}")
    schedule = sample_dropouts(clients, dropout_rate, variant, _check_seed(seed))
    for spec in drops or ():
        u, rnd = _parse_drop(spec)
        schedule[u] = rnd
    return schedule


def _modulus(modulus: int | None, modulus_bits: object) -> int:
    if modulus is None:
        if isinstance(modulus_bits, bool) or not isinstance(modulus_bits, int) or not 1 <= modulus_bits <= 64:
            raise InvalidInput(f"--modulus-bits must be in [1, 64], got {modulus_bits!r}")
        modulus = 1 << modulus_bits
    return ring.check_modulus(modulus)


def _aborted(exc: ProtocolAborted) -> dict[str, Any]:
    """The ``aborted`` field of a report (both modes): the round, reason and aborting party."""
    return {"round": exc.round, "reason": exc.reason, "party": exc.party}


def simulate(
    *,
    clients: int = 10,
    dim: int = 1000,
    modulus: int | None = None,
    modulus_bits: int = 32,
    threshold: int | None = None,
    graph: str = "complete",
    neighbours: int | None = None,
    variant: str = "honest-but-curious",
    dropout_rate: float = 0.0,
    drops: list[str] | tuple[str, ...] = (),
    seed: int = 0,
    workers: int = 1,
    protocol: str = "bonawitz",
    commit_self_masks: bool = False,
    executor: str = "local",
    ray_address: str | None = None,
    adaptive: bool = False,
    consistency_view: str = "full",
) -> dict[str, Any]:
    """Run one session and return a JSON-friendly report (``ok``, ``matches_plaintext``, ``aborted``,
    ``sets``, ``timings``, ``bytes``, parameters). InvalidInput for bad parameters. ``workers > 1`` runs
    the clients in forked worker processes, ``executor="ray"`` in Ray actors (same report apart from timings)."""
    from secagg.protocol import SessionParams

    m = _modulus(modulus, modulus_bits)
    schedule = _schedule(clients, dim, dropout_rate, variant, seed, drops)
    params = SessionParams.create(clients, dim, m, threshold=threshold, graph=graph, variant=variant, dropouts=schedule,
                                  seed=seed, neighbours=neighbours, dropout_fraction=_declared_delta(graph, dropout_rate),
                                  protocol=protocol, commit_self_masks=commit_self_masks, adaptive=adaptive,
                                  consistency_view=consistency_view)
    return simulate_session(params, seed, workers=workers, executor=executor, ray_address=ray_address)


def simulate_session(params: Any, seed: int, *, workers: int = 1, executor: str = "local",
                     ray_address: str | None = None) -> dict[str, Any]:
    """:func:`simulate` for prepared :class:`~secagg.protocol.SessionParams` (``secagg simulate`` builds
    them once with :meth:`~secagg.protocol.SessionParams.from_args`); ``seed`` draws the inputs."""
    from secagg.protocol import run_secure_aggregation

    m, clients, dim = params.modulus, params.n, params.dim
    inputs = random_inputs(clients, dim, m, seed)
    report: dict[str, Any] = {
        "clients": clients,
        "dim": dim,
        "modulus": m,
        "bit_width": ring.bit_width(m),
        "graph": params.graph_name,
        "variant": params.variant.value,
        "commit_self_masks": params.commit_self_masks,
        "consistency_view": params.consistency_view,
        "seed": seed,
        "dropouts": {str(u): r for u, r in sorted(params.dropouts.items())},
    }
    try:
        res = run_secure_aggregation(inputs, modulus=m, params=params, workers=workers, executor=executor,
                                     ray_address=ray_address)
    except ProtocolAborted as exc:
        report.update(
            ok=False,
            matches_plaintext=None,
            aborted=_aborted(exc),
            sets={k: sorted(v) for k, v in exc.sets.items()},
            client_errors={str(u): f"{type(e).__name__}: {e}" for u, e in sorted(exc.client_errors.items())},
            bytes=bytes_report(exc.ledger),
        )
        return report
    expected = _plain_sum(inputs, res.included, m)
    match = bool(np.array_equal(res.sum, expected))
    report.update(
        ok=match,
        matches_plaintext=match,
        aborted=None,
        threshold=res.threshold,
        neighbours=res.graph.k,
        complete_graph=res.graph.is_complete,
        session=res.session.hex(),
        included=list(res.included),
        sets={k: sorted(v) for k, v in res.sets.items()},
        timings={r: dict(v) for r, v in res.timings.items()},
        client_errors={str(u): f"{type(e).__name__}: {e}" for u, e in sorted(res.client_errors.items())},
        bytes=bytes_report(res.ledger, res.sets["U3"], dim, ring.bit_width(m)),
    )
    return report


def bytes_report(ledger: Any, senders: Any = None, dim: int | None = None, input_bits: int | None = None) -> dict[str, Any]:
    """Bytes of a session's ledger, upload and download apart (JSON-friendly).

    ``upload_total`` / ``download_total``: every message client -> server / server -> client;
    ``by_round``: the same per round. With ``senders`` (U3: the clients whose masked input reached the
    server and is in the sum) and the raw input size ``dim * input_bits / 8`` bytes, the per-client means
    over those senders and two expansion factors, each averaged over them:

    * ``expansion_upload`` = mean upload of a sender / raw input size;
    * ``expansion_upload_download`` = mean (upload + download) of a sender / raw input size.

    Averaging over U3 rather than over every client that sent anything keeps a client that vanished
    after advertising its keys (a few dozen bytes) from pulling the factor below 1. This is our wire
    format measured; the paper's accounting (Bonawitz et al., Section 7.1) is the cost model's figure,
    :func:`secagg.cost.paper_model`, which ``secagg cost`` prints beside ours.
    """
    if ledger is None:
        return {"upload_total": 0, "download_total": 0, "total": 0, "by_round": {}}
    by = ledger.by_round()
    out: dict[str, Any] = {
        "upload_total": sum(v["up"] for v in by.values()),
        "download_total": sum(v["down"] for v in by.values()),
        "total": ledger.total(),
        "by_round": by,
    }
    if senders is None or not dim or not input_bits:
        return out
    ids = sorted(senders)
    up, down = ledger.upload_per_client(), ledger.download_per_client()
    raw = dim * input_bits / 8
    mu = sum(up.get(u, 0) for u in ids) / len(ids) if ids else 0.0
    md = sum(down.get(u, 0) for u in ids) / len(ids) if ids else 0.0
    out.update(
        senders=len(ids),
        raw_input_bytes=raw,
        mean_upload_per_sender=mu,
        mean_download_per_sender=md,
        expansion_upload=mu / raw if ids else None,
        expansion_upload_download=(mu + md) / raw if ids else None,
    )
    return out


def _bytes_lines(b: dict[str, Any], raw_name: str) -> list[str]:
    """Text lines for :func:`bytes_report`'s dict (upload and download apart, both expansion factors named)."""
    if not b:
        return []
    lines = [f"bytes on the wire: upload {b['upload_total']:,} B, download {b['download_total']:,} B "
             f"(total {b['total']:,} B)"]
    if b.get("senders"):
        lines.append(f"  per client in U3 ({b['senders']} clients whose masked input is in the sum): mean upload "
                     f"{b['mean_upload_per_sender']:,.0f} B, mean download {b['mean_download_per_sender']:,.0f} B")
        lines.append(f"  expansion over the {raw_name} ({b['raw_input_bytes']:,.0f} B), averaged over U3: "
                     f"upload only {b['expansion_upload']:.3f}x, upload + download {b['expansion_upload_download']:.3f}x")
    return lines


def _fmt_set(ids: list[int], n: int) -> str:
    missing = sorted(set(range(n)) - set(ids))
    return f"{len(ids)}/{n}" + (f" (missing {missing})" if missing else "")


def format_report(rep: dict[str, Any]) -> str:
    """Human-readable rendering of :func:`simulate`'s report."""
    n = rep["clients"]
    lines = [
        f"secure aggregation: n={n} d={rep['dim']} M={rep['modulus']} ({rep['bit_width']} bits) "
        f"graph={rep['graph']} variant={rep['variant']} seed={rep['seed']}",
    ]
    if rep["dropouts"]:
        lines.append("dropouts: " + ", ".join(f"{u}@{r}" for u, r in rep["dropouts"].items()))
    if rep["aborted"] is not None:
        a = rep["aborted"]
        who = "server" if a["party"] is None else f"client {a['party']}"
        lines.append(f"ABORTED in round {a['round']!r} by {who}: {a['reason']} (nothing released)")
    else:
        kind = "complete" if rep["complete_graph"] else f"Harary k={rep['neighbours']}"
        lines.append(f"threshold t={rep['threshold']}, graph {kind}")
        lines.append(f"result equals the plaintext sum over U3: {'YES' if rep['matches_plaintext'] else 'NO'}")
    for k, ids in rep.get("sets", {}).items():
        lines.append(f"  {k}: {_fmt_set(ids, n)}")
    for u, e in rep.get("client_errors", {}).items():
        lines.append(f"  client {u} aborted: {e}")
    if rep.get("timings"):
        lines.append(f"  {'round':<18} {'clients (s, sum)':>17} {'client max (s)':>15} {'server (s)':>11}")
        for r, t in rep["timings"].items():
            lines.append(f"  {r:<18} {t['clients']:>17.4f} {t['client_max']:>15.4f} {t['server']:>11.4f}")
    lines += _bytes_lines(rep.get("bytes", {}), f"raw input, d x {rep['bit_width']}-bit elements")
    return "\n".join(lines + _ledger_lines(rep))


def run(args: argparse.Namespace) -> int:
    if (args.real or args.weights is not None) and (args.executor != "local" or args.ray_address is not None):
        print("secagg simulate: error: --executor/--ray-address apply to the protocol run, not to --real", file=sys.stderr)
        return 2
    if args.real or args.weights is not None:
        try:
            rep = simulate_real(
                clients=args.clients, dim=args.dim, modulus_bits=args.modulus_bits, threshold=args.threshold,
                graph=args.graph, neighbours=args.neighbours, variant=args.variant, dropout_rate=args.dropout_rate,
                drops=args.drop, seed=args.seed, weights=args.weights, clip=args.clip, backend=args.backend,
                protocol=args.protocol,
                commit_self_masks=args.commit_self_masks, adaptive=args.adaptive,
                consistency_view=args.consistency_view,
            )
        except SecAggError as exc:
            print(f"secagg simulate: error: {exc}", file=sys.stderr)
            return 2
        print(json.dumps(rep, indent=2) if args.json else format_real_report(rep))
        return 0 if rep["ok"] else 1
    if args.executor != "ray" and args.ray_address is not None:
        print("secagg simulate: error: --ray-address needs --executor ray", file=sys.stderr)
        return 2
    if args.executor == "ray" and args.workers != 1:
        print("secagg simulate: error: --executor ray replaces --workers (the clients use the cluster's CPUs)", file=sys.stderr)
        return 2
    try:
        with _cluster(args) as where:
            if where:
                print(f"secagg simulate: executor ray, {where}", file=sys.stderr, flush=True)
            rep = _simulate(args)
    except SecAggError as exc:
        print(f"secagg simulate: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("secagg simulate: interrupted (client tasks cancelled, Ray shut down)", file=sys.stderr)
        return 130
    print(json.dumps(rep, indent=2) if args.json else format_report(rep))
    return 0 if rep["ok"] else 1


def _cluster(args: argparse.Namespace):  # noqa: ANN202 - context manager yielding a description or None
    """One Ray cluster for the whole command with ``--executor ray`` (else a no-op context)."""
    import contextlib

    if args.executor != "ray":
        return contextlib.nullcontext(None)

    @contextlib.contextmanager
    def joined():  # noqa: ANN202
        from secagg.ray_transport import ray_cluster

        with ray_cluster(args.ray_address) as ray:
            cpus = int(ray.cluster_resources().get("CPU", 0))
            nodes = len([n for n in ray.nodes() if n.get("Alive")])
            addr = args.ray_address or os.environ.get("RAY_ADDRESS")
            yield f"{cpus} CPUs on {nodes} node(s) ({'cluster at ' + addr if addr else 'local instance on 127.0.0.1'})"

    return joined()


def _simulate(args: argparse.Namespace) -> dict[str, Any]:
    """The command line's session: its parameters built once from the flags (SessionParams.from_args)."""
    from secagg.protocol import SessionParams

    m = _modulus(args.modulus, args.modulus_bits)
    schedule = _schedule(args.clients, args.dim, args.dropout_rate, args.variant, args.seed, args.drop)
    params = SessionParams.from_args(args, args.clients, args.dim, m, dropouts=schedule)
    return simulate_session(params, args.seed, workers=args.workers, executor=args.executor,
                            ray_address=args.ray_address)


# --------------------------------------------------------------------------------------------------
# real-valued inputs (secure weighted average through secagg.secure_average)
# --------------------------------------------------------------------------------------------------
def parse_weights(spec: str | None, n: int, seed: int) -> np.ndarray | None:
    """``--weights``: ``None`` (all 1), ``"random"`` (log-uniform in [1e-3, 1], seeded) or ``n`` comma-separated
    positive numbers (InvalidInput otherwise)."""
    if spec is None:
        return None
    if spec == "random":
        rng = np.random.default_rng([seed, 0x3E16])
        return 10.0 ** rng.uniform(-3.0, 0.0, n)
    try:
        w = np.array([float(v) for v in spec.split(",")])
    except ValueError:
        raise InvalidInput(f"--weights expects 'random' or {n} comma-separated numbers, got {spec!r}") from None
    if w.shape != (n,):
        raise InvalidInput(f"--weights has {w.shape[0]} values, expected {n}")
    return w


def simulate_real(
    *,
    clients: int = 10,
    dim: int = 1000,
    modulus_bits: int = 32,
    threshold: int | None = None,
    graph: str = "complete",
    neighbours: int | None = None,
    variant: str = "honest-but-curious",
    dropout_rate: float = 0.0,
    drops: list[str] | tuple[str, ...] = (),
    seed: int = 0,
    weights: str | None = None,
    clip: float | None = None,
    backend: str = "protocol",
    protocol: str = "bonawitz",
    commit_self_masks: bool = False,
    adaptive: bool = False,
    consistency_view: str = "full",
) -> dict[str, Any]:
    """One secure weighted average of real Gaussian vectors (``secagg.secure_average``); the report says
    whether the result is within the stated error bound of the plaintext weighted average over U3."""
    from secagg.average import secure_average

    schedule = _schedule(clients, dim, dropout_rate, variant, seed, drops)
    rng = np.random.default_rng([seed, 0x4EA1])
    x = rng.normal(size=(clients, dim))
    w = parse_weights(weights, clients, seed)
    report: dict[str, Any] = {
        "mode": "real", "clients": clients, "dim": dim, "bits": modulus_bits, "graph": graph, "variant": variant,
        "seed": seed, "backend": backend, "dropouts": {str(u): r for u, r in sorted(schedule.items())},
        "weights": None if w is None else [float(v) for v in w],
    }
    try:
        res = secure_average(x, w, seed=seed, clip=clip, bits=modulus_bits, threshold=threshold, graph=graph,
                             variant=variant, dropouts=schedule, neighbours=neighbours, backend=backend,
                             dropout_fraction=_declared_delta(graph, dropout_rate), protocol=protocol,
                             commit_self_masks=commit_self_masks, adaptive=adaptive,
                             consistency_view=consistency_view)
    except ProtocolAborted as exc:
        report.update(ok=False, within_bound=None, aborted=_aborted(exc), bytes=bytes_report(exc.ledger))
        return report
    idx = list(res.included)
    ww = np.ones(clients) if w is None else w
    xc = np.clip(x, -res.clip, res.clip)
    exact = (ww[idx, None] * xc[idx]).sum(0) / ww[idx].sum()
    err = float(np.max(np.abs(res.average - exact)))
    report.update(
        ok=err <= res.error_bound, within_bound=err <= res.error_bound, aborted=None,
        included=idx, max_abs_error=err, error_bound=res.error_bound, total_weight=res.total_weight,
        modulus=res.modulus, scale=res.scale, clip=res.clip, clipped=res.clipped,
        average_head=[float(v) for v in res.average[:5]],
        bytes=bytes_report(res.ledger, idx, dim, 32),
    )
    return report


def format_real_report(rep: dict[str, Any]) -> str:
    """Human-readable rendering of :func:`simulate_real`'s report."""
    n = rep["clients"]
    lines = [f"secure weighted average of real vectors: n={n} d={rep['dim']} bits={rep['bits']} graph={rep['graph']} "
             f"variant={rep['variant']} backend={rep['backend']} seed={rep['seed']}"]
    if rep["dropouts"]:
        lines.append("dropouts: " + ", ".join(f"{u}@{r}" for u, r in rep["dropouts"].items()))
    if rep["aborted"] is not None:
        a = rep["aborted"]
        lines.append(f"ABORTED in round {a['round']!r}: {a['reason']} (nothing released)")
    else:
        lines.append(f"average over U3 = {_fmt_set(rep['included'], n)}; total weight {rep['total_weight']:.6g}")
        lines.append(f"  M = 2^{rep['modulus'].bit_length() - 1}, scale s = {rep['scale']:.6g}, clip c = {rep['clip']:.4g}, "
                     f"clipped coordinates: {rep['clipped']}")
        lines.append(f"  max |average - plaintext weighted average| = {rep['max_abs_error']:.3e} <= stated bound "
                     f"{rep['error_bound']:.3e}: {'YES' if rep['within_bound'] else 'NO'}")
        lines.append(f"  first coordinates: {[round(v, 6) for v in rep['average_head']]}")
    lines += _bytes_lines(rep.get("bytes", {}), "float32 input, d x 32 bits")
    return "\n".join(lines + _ledger_lines(rep))


def _ledger_lines(rep: dict[str, Any]) -> list[str]:
    """The ledger summary table (bytes per round and direction) of a report."""
    b = rep.get("bytes") or {}
    by = b.get("by_round") or {}
    if not by:
        return []
    out = ["ledger:", f"  {'round':<18}{'up bytes':>14}{'down bytes':>14}"]
    for r in ROUNDS:
        if r in by:
            out.append(f"  {r:<18}{by[r]['up']:>14,}{by[r]['down']:>14,}")
    out.append(f"  {'total':<18}{sum(v['up'] for v in by.values()):>14,}{sum(v['down'] for v in by.values()):>14,}")
    return out
