"""Benchmark 1: protocol phases per round (client and server) against the AES-CTR keystream floor.

Two views, both medians of repeated runs:

* **primitives** -- the per-client and per-server work of each phase timed directly on the library's
  primitives: key agreement (X25519 + HKDF per peer), Shamir split / reconstruct, share encryption
  (AES-GCM per peer), mask expansion (one ``prg.add_masks`` for the ``k + 1`` masks of one client,
  ``base = x_u``, as the client calls it; the former one-``add_mask``-per-mask loop beside it), each
  mask-expansion timing interleaved with the raw keystream floor for the same bytes
  (:func:`bench.common.keystream_seconds`).
* **engine** -- full sessions of :func:`secagg.protocol.run_secure_aggregation` over a grid of n, d,
  graph, variant and dropout rate, with the engine's own per-round timings
  (``AggregationResult.timings``). Derived ratios:

  - client masking = (masked-input round time of the clients / clients that ran it) divided by the
    keystream floor of ``(|V2(u)|) * d * bytes`` (``k + 1`` masks of ``d`` words, averaged over clients);
  - server unmasking = server time of the unmasking round divided by the keystream floor for the masks
    it must expand: one self mask per survivor plus, for every client that dropped after sharing,
    one pairwise mask per surviving neighbour.

Configurations whose estimated cost exceeds the budget of the mode (quick / full) are skipped and
listed with their estimate, never silently dropped.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from bench import common
from bench.common import goal, keystream_seconds, time_paired

M_DEFAULT = 1 << 32

# cost model used only to skip configurations that would take too long (calibrated on this machine)
_AGREE_S = 170e-6  # X25519 + HKDF per peer per key pair
_KS_BPS = 3.0e9  # keystream + add, bytes per second
_SHAMIR_S = 1.5e-6  # per (holder x coefficient) big-int op


def _degree(n: int, graph: str, p_drop: float) -> int:
    if graph == "complete":
        return n - 1
    from secagg.graph import find_secagg_plus_params

    params = find_secagg_plus_params(n, 0.05, max(0.05, p_drop))
    if params is None or params[0] >= n - 1 or n < 3:
        return n - 1
    return params[0]


def estimate_seconds(n: int, d: int, graph: str, p_drop: float, variant: str = "honest-but-curious") -> float:
    """Rough wall time of one engine session (used to skip configurations over budget)."""
    k = _degree(n, graph, p_drop)
    t = (k + 1) // 2 + 1
    clients = n * (2 * k * _AGREE_S + (k + 1) * d * 4 / _KS_BPS + 2 * (k + 1) * t * _SHAMIR_S + k * 2e-5)
    drop = int(p_drop * n)
    server = ((n - drop) + drop * k) * d * 4 / _KS_BPS + drop * k * _AGREE_S + n * t * 2 * _SHAMIR_S * 10 + n * d * 4 / 2e9
    if variant == "active":
        clients += n * n * 60e-6  # every client verifies every signature (advertise + consistency)
    return clients + server


# ------------------------------------------------------------------------------------------------
# primitives
# ------------------------------------------------------------------------------------------------
def primitive_rows(grid_d: list[int], grid_k: list[int], repeats: int, modulus: int = M_DEFAULT) -> list[dict[str, Any]]:
    """Client mask expansion as the client does it vs the keystream floor for ``(k+1)*d`` words.

    Timed (``mask_s``, the ratio's numerator): what :meth:`secagg.client.Client` does for ``y_u``:
    ``y = np.empty(d)`` then one ``prg.add_masks(y, k+1 masks, base=x_u)`` (the copy of ``x_u`` fused
    into the first pass, up to ``prg.GROUP_MASKS`` masks per cache-resident chunk). Also timed, in the
    same interleaved run, the previous formulation (``loop_s``: ``y = x_u.copy()`` then one
    ``prg.add_mask`` per mask), so the effect of grouping is a same-run figure. The floor is unchanged:
    the raw AES-256-CTR keystream for ``(k+1) * d * itemsize`` bytes.
    """
    from secagg import prg, ring

    rows = []
    dt = ring.dtype_for(modulus)
    session = b"\x07" * 16
    for d in grid_d:
        for k in grid_k:
            nbytes = (k + 1) * d * dt.itemsize
            if nbytes > (6 << 30):
                continue
            x = np.random.default_rng(d + k).integers(0, 1 << 16, size=d, dtype=np.uint64).astype(dt)
            scratch = prg.new_scratch()
            seeds = [os.urandom(32) for _ in range(k + 1)]
            entries = [(seeds[0], prg.PURPOSE_SELF, 1)] + [(s, prg.PURPOSE_PAIRWISE, 1 if i % 2 else -1) for i, s in enumerate(seeds[1:])]
            outs: dict[str, np.ndarray] = {}

            def masks() -> None:
                y = np.empty(d, dtype=dt)
                prg.add_masks(y, entries, session=session, modulus=modulus, base=x)
                outs["grouped"] = y

            def loop() -> None:
                y = x.copy()
                for s, purpose, sign in entries:
                    prg.add_mask(y, s, session=session, purpose=purpose, modulus=modulus, sign=sign, scratch=scratch)
                outs["loop"] = y

            def floor() -> None:
                keystream_seconds(nbytes)

            tm = time_paired({"mask": masks, "loop": loop, "floor": floor}, repeats)
            if not np.array_equal(outs["grouped"], outs["loop"]):
                raise AssertionError(f"add_masks differs from add_mask per mask at d={d} k={k}")
            rows.append(
                {
                    "d": d,
                    "k": k,
                    "modulus_bits": ring.bit_width(modulus),
                    "keystream_bytes": nbytes,
                    "mask_s": tm["mask"].median,
                    "loop_s": tm["loop"].median,
                    "floor_s": tm["floor"].median,
                    "ratio": tm["mask"].median / tm["floor"].median,
                    "loop_ratio": tm["loop"].median / tm["floor"].median,
                    "mask_gb_per_s": nbytes / tm["mask"].median / 1e9,
                }
            )
    return rows


def phase_primitive_rows(grid_n: list[int], repeats: int) -> list[dict[str, Any]]:
    """Per-client costs of the non-vector phases for a client with n-1 peers (complete graph)."""
    from secagg import keys, shamir
    from secagg.client import channel_keys, pairwise_seed
    from secagg.drbg import Drbg

    rows = []
    session = b"\x07" * 16
    for n in grid_n:
        k = n - 1
        t = n // 2 + 1
        me = keys.AgreementKey.generate(Drbg(1, b"me"))
        peers = [keys.AgreementKey.generate(Drbg(i, b"peer")).public_bytes for i in range(k)]
        drbg = Drbg(5, b"shamir")
        secret = os.urandom(32)
        holders = list(range(n))
        shares = shamir.split(secret, t, holders, drbg)
        chosen = {i: shares[i] for i in holders[:t]}
        ckey = os.urandom(32)
        pt = os.urandom(8 + 16 + 2 * shamir.SHARE_SIZE)

        def agree() -> None:
            for v, pk in enumerate(peers):
                pairwise_seed(me, pk, session=session, u=n, v=v)
                channel_keys(me, pk, session=session, me=n, peer=v)

        def split() -> None:
            shamir.split(secret, t, holders, drbg)
            shamir.split(secret, t, holders, drbg)

        def encrypt() -> None:
            for _ in range(k):
                keys.seal(ckey, pt, aad=b"aad", nonce=os.urandom(12))

        def reconstruct_cold() -> None:
            shamir.lagrange_at_zero.cache_clear() if hasattr(shamir.lagrange_at_zero, "cache_clear") else None
            shamir.reconstruct(chosen, t)

        def reconstruct_warm() -> None:
            shamir.reconstruct(chosen, t)

        tm = time_paired(
            {"agree": agree, "split": split, "encrypt": encrypt, "reconstruct_cold": reconstruct_cold, "reconstruct_warm": reconstruct_warm},
            repeats,
        )
        rows.append(
            {
                "n": n,
                "t": t,
                "client_key_agreement_s": tm["agree"].median,
                "client_shamir_split_s": tm["split"].median,
                "client_share_encryption_s": tm["encrypt"].median,
                "server_reconstruct_one_s": tm["reconstruct_cold"].median,
                "server_reconstruct_one_cached_s": tm["reconstruct_warm"].median,
                "per_peer_agreement_us": tm["agree"].median / k / 2 * 1e6,
            }
        )
    return rows


def survivor_policy_rows(grid_n: list[int], repeats: int) -> list[dict[str, Any]]:
    """Cost of the server's survivor policy (secagg.rules.check_survivor_policy: G[U3] connected and
    |U3| >= min_survivors) with 5% of the clients missing from U3: the finder's Harary graph (gaps on the
    ring) and the complete graph (nothing to search), beside one self-mask expansion of d = 10^4 words
    for scale. Neighbour lists are built before timing (the server has them from round 0)."""
    from secagg import prg, rules
    from secagg.drbg import Drbg
    from secagg.graph import complete_graph, find_secagg_plus_params, harary_graph

    rows = []
    for n in grid_n:
        found = find_secagg_plus_params(n)
        graphs = [("complete", complete_graph(n))]
        if found is not None and found[0] < n - 1:
            graphs.append(("secagg+", harary_graph(n, found[0], Drbg(n, b"bench-graph"))))
        u3 = frozenset(range(n)) - frozenset(range(0, n, 20))
        for name, g in graphs:
            tm = time_paired({"policy": lambda g=g: rules.check_survivor_policy("masked-input", g, u3, 1),
                              "mask": lambda: prg.expand(b"\x01" * 32, session=b"\x02" * 16, purpose=prg.PURPOSE_SELF,
                                                         dim=10_000, modulus=M_DEFAULT)}, repeats)
            rows.append({"n": n, "graph": name, "k": g.k, "survivors": len(u3), "policy_s": tm["policy"].median,
                         "one_mask_d1e4_s": tm["mask"].median})
    return rows


# ------------------------------------------------------------------------------------------------
# engine
# ------------------------------------------------------------------------------------------------
def _dropouts(n: int, p: float, seed: int) -> dict[int, str]:
    m = int(round(p * n))
    if m == 0:
        return {}
    rng = np.random.default_rng(seed)
    return {int(u): "masked-input" for u in rng.choice(n, size=m, replace=False)}


def workers_supported() -> bool:
    """Whether :func:`secagg.protocol.run_secure_aggregation` takes ``workers`` (parallel clients)."""
    import inspect

    from secagg.protocol import run_secure_aggregation

    return "workers" in inspect.signature(run_secure_aggregation).parameters


def engine_row(
    n: int, d: int, graph: str, variant: str, p_drop: float, repeats: int, modulus: int = M_DEFAULT, workers: int = 1
) -> dict[str, Any]:
    """Run ``repeats`` sessions; median per-round timings and the floor-relative ratios.

    ``workers > 1``: the engine's parallel clients (forked worker processes). The round's client time
    is then the wall time of its parallel client phase; the per-client figures (and the client masking
    ratio) use the client seconds summed over clients as measured in the workers (``client_sum``)."""
    from secagg import ring
    from secagg.protocol import ROUNDS, run_secure_aggregation

    rng = np.random.default_rng(n * 7919 + d)
    x = rng.integers(0, 1 << 16, size=(n, d), dtype=np.uint64).astype(ring.dtype_for(modulus))
    drops = _dropouts(n, p_drop, n + d)
    expected = None
    samples: dict[str, list[float]] = {}
    res = None
    floors: dict[str, list[float]] = {"client": [], "server": []}
    wall: list[float] = []
    isz = ring.dtype_for(modulus).itemsize
    for r in range(max(1, repeats)):
        t0 = time.perf_counter()
        kw = {"workers": workers} if workers > 1 else {}
        res = run_secure_aggregation(
            x, modulus=modulus, graph=graph, variant=variant, dropouts=drops, seed=r, dropout_fraction=max(0.05, p_drop), **kw
        )
        wall.append(time.perf_counter() - t0)
        if expected is None:
            inc = list(res.included)
            expected = (x[inc].astype(np.uint64).sum(axis=0) % modulus).astype(res.sum.dtype)
        if not np.array_equal(res.sum, expected):
            raise AssertionError(f"engine sum wrong at n={n} d={d} {graph} {variant} drop={p_drop}")
        for rnd in ROUNDS:
            tmg = res.timings[rnd]
            for who in ("clients", "client_max", "server"):
                samples.setdefault(f"{rnd}/{who}", []).append(tmg[who])
            # summed client seconds: measured in the workers when parallel, == "clients" when serial
            samples.setdefault(f"{rnd}/client_sum", []).append(tmg.get("client_sum", tmg["clients"]))
        # floors (same bytes) measured right after the run
        u2, u3 = res.sets["U2"], res.sets["U3"]
        g = res.graph
        client_masks = sum(len((set(g.neighbours(u)) & u2)) + 1 for u in u3) / max(1, len(u3))
        server_masks = len(u3) + sum(len(set(g.neighbours(v)) & u3) for v in (u2 - u3))
        floors["client"].append(keystream_seconds(int(client_masks * d * isz)))
        floors["server"].append(keystream_seconds(int(server_masks * d * isz)))
    assert res is not None
    med = {k: float(np.median(v)) for k, v in samples.items()}
    u3n = len(res.sets["U3"])
    per_client_mask = med["masked-input/client_sum"] / max(1, u3n)
    fc, fs = float(np.median(floors["client"])), float(np.median(floors["server"]))
    row: dict[str, Any] = {
        "n": n,
        "d": d,
        "graph": graph,
        "k": res.graph.k,
        "t": res.threshold,
        "variant": variant,
        "dropout": p_drop,
        "workers": workers,
        "survivors": u3n,
        "wall_s": float(np.median(wall)),
        "client_masking_s": per_client_mask,
        "client_masking_floor_s": fc,
        "client_masking_ratio": per_client_mask / fc if fc > 0 else None,
        "server_unmasking_s": med["unmasking/server"],
        "server_unmasking_floor_s": fs,
        "server_unmasking_ratio": med["unmasking/server"] / fs if fs > 0 else None,
        "repeats": max(1, repeats),
    }
    n_round = {"advertise-keys": n, "share-keys": n, "masked-input": u3n, "consistency-check": u3n, "unmasking": u3n}
    for rnd in ROUNDS:
        row[f"{rnd}/client_mean_s"] = med[f"{rnd}/client_sum"] / max(1, n_round[rnd])
        row[f"{rnd}/clients_wall_s"] = med[f"{rnd}/clients"]
        row[f"{rnd}/client_max_s"] = med[f"{rnd}/client_max"]
        row[f"{rnd}/server_s"] = med[f"{rnd}/server"]
    return row


def server_unmask_primitive(n: int, d: int, p_drop: float, graph: str, repeats: int, modulus: int = M_DEFAULT) -> dict[str, Any]:
    """The server's unmasking work at (n, d, dropout) timed on the primitives the server calls, as
    :meth:`secagg.server.Server` does it: reconstruct every secret from exactly t shares, derive each
    seed once (X25519 + HKDF per (dropped, survivor) pair), then remove all masks with one
    ``prg.add_masks`` -- interleaved with the keystream floor for the same masks. Cheaper than a full
    session at large n."""
    from secagg import keys, prg, ring, shamir
    from secagg.client import mask_sign, pairwise_seed
    from secagg.drbg import Drbg

    k = _degree(n, graph, p_drop)
    t = (k + 1) // 2 + 1
    drop = int(round(p_drop * n))
    surv = n - drop
    dt = ring.dtype_for(modulus)
    session = b"\x07" * 16
    drbg = Drbg(11, b"bench")
    # one representative dropped client's key, shared to its k+1 holders
    holders = list(range(k + 1))
    sk = keys.AgreementKey.generate(drbg.child(b"sk"))
    sk_shares = shamir.split(sk.private_bytes, t, holders, drbg.child(b"split"))
    b_shares = shamir.split(os.urandom(32), t, holders, drbg.child(b"b"))
    survivors_per_dropped = min(k, surv) if graph == "complete" else int(round(k * surv / n))
    surv_pks = [keys.AgreementKey.generate(drbg.child(b"p" + i.to_bytes(4, "big"))).public_bytes for i in range(survivors_per_dropped)]
    acc = np.zeros(d, dtype=dt)
    chosen_b = {w: b_shares[w] for w in holders[:t]}
    chosen_k = {w: sk_shares[w] for w in holders[:t]}

    def work() -> None:
        masks: list[tuple[bytes, str, int]] = []
        for _ in range(surv):
            b = shamir.reconstruct(chosen_b, t, 32)
            masks.append((b, prg.PURPOSE_SELF, -1))
        for v in range(drop):
            key = keys.AgreementKey.from_private_bytes(shamir.reconstruct(chosen_k, t, 32))
            for w, pk in enumerate(surv_pks):
                seed = pairwise_seed(key, pk, session=session, u=v, v=w)
                masks.append((seed, prg.PURPOSE_PAIRWISE, -mask_sign(w, v)))
        prg.add_masks(acc, masks, session=session, modulus=modulus)

    masks = surv + drop * survivors_per_dropped
    nbytes = masks * d * dt.itemsize

    def floor() -> None:
        keystream_seconds(nbytes)

    tm = time_paired({"work": work, "floor": floor}, repeats)
    return {
        "n": n,
        "d": d,
        "graph": graph,
        "k": k,
        "t": t,
        "dropout": p_drop,
        "masks": masks,
        "pair_agreements": drop * survivors_per_dropped,
        "server_unmasking_s": tm["work"].median,
        "floor_s": tm["floor"].median,
        "ratio": tm["work"].median / tm["floor"].median,
    }


def robust_reconstruction_rows(grid: list[tuple[int, int]], repeats: int, modulus: int = M_DEFAULT) -> list[dict[str, Any]]:
    """The server's round-4 reconstruction of the ``n`` self-mask seeds of a complete-graph session with
    every client answering (``r = n`` shares of each, ``t = floor(n/2) + 1``), as
    :meth:`secagg.server.Server.unmasking` does it, beside the unmasking floor. Interleaved, per (n, d):

    * ``t_only``: the paper's rule, each secret from exactly the ``t`` smallest-id shares (``shamir.reconstruct``);
    * ``consistent``: robust reconstruction, all shares right: the Fiat-Shamir challenge over every
      share, then :func:`secagg.reconstruct.recover_many` (dual-code check plus one interpolation each);
    * ``one_wrong``: the same with one wrong share (client 0's share of the first secret): one Gao
      decode, then client 0 ignored (a second set of check weights for the remaining secrets);
    * ``floor``: the AES-CTR keystream for the ``n`` self masks of ``d`` words (the unmasking floor).

    Every secret uses the same share values (the work per secret does not depend on them).
    """
    from secagg import reconstruct, ring, shamir
    from secagg.drbg import Drbg

    rows = []
    for n, d in grid:
        t = n // 2 + 1
        holders = list(range(n))
        shares = shamir.split(b"\x05" * 32, t, holders, Drbg(3, b"bench/robust"))
        ints = {w: int.from_bytes(sh, "big") for w, sh in shares.items()}
        bad = dict(ints)
        bad[0] = (bad[0] + 1) % shamir.PRIME
        blobs = [w.to_bytes(4, "big") + b"".join(sh for _ in range(n)) for w, sh in sorted(shares.items())]
        isz = ring.dtype_for(modulus).itemsize

        def t_only() -> None:
            chosen = {w: shares[w] for w in holders[:t]}
            for _ in range(n):
                shamir.reconstruct(chosen, t, 32)

        def robust(first: dict[int, int]) -> None:
            reconstruct.check_weights.cache_clear()  # the server meets a new x-set every session
            rho = reconstruct.challenge(b"\x07" * 16, blobs)
            batch = [("b", 0, first)] + [("b", u, ints) for u in range(1, n)]
            reconstruct.recover_many(batch, t, rho)

        def floor() -> None:
            keystream_seconds(n * d * isz)

        tm = time_paired({"t_only": t_only, "consistent": lambda: robust(ints), "one_wrong": lambda: robust(bad), "floor": floor}, repeats)
        f = tm["floor"].median
        rows.append({
            "n": n, "d": d, "t": t, "shares_per_secret": n,
            "t_only_s": tm["t_only"].median, "consistent_s": tm["consistent"].median, "one_wrong_s": tm["one_wrong"].median,
            "floor_s": f,
            "consistent_vs_t_only": tm["consistent"].median / tm["t_only"].median,
            "one_wrong_vs_consistent": tm["one_wrong"].median / tm["consistent"].median,
            "t_only_vs_floor": tm["t_only"].median / f,
            "consistent_vs_floor": tm["consistent"].median / f,
            "one_wrong_vs_floor": tm["one_wrong"].median / f,
        })
    return rows


def engine_grid(quick: bool) -> tuple[list[tuple], float]:
    """(n, d, graph, variant, dropout) configurations and the per-configuration budget in seconds."""
    if common.SMOKE:
        return [(8, 200, "complete", "honest-but-curious", 0.0), (8, 200, "complete", "honest-but-curious", 0.25),
                (8, 200, "secagg+", "active", 0.0)], 5.0
    if quick:
        ns, ds, drops = [10, 50, 100], [1000, 10000, 100000], [0.0, 0.1, 0.3]
        graphs, budget = ["complete", "secagg+"], 4.0
    else:
        ns, ds, drops = [10, 100, 500, 1000], [1000, 10000, 100000, 1000000], [0.0, 0.1, 0.3]
        graphs, budget = ["complete", "secagg+"], 14.0
    grid = [(n, d, g, "honest-but-curious", p) for n in ns for d in ds for g in graphs for p in drops]
    act_n = 50 if quick else 100
    grid += [(act_n, 10000, g, "active", p) for g in graphs for p in (0.0, 0.1)]
    return grid, budget


def workers_grid(quick: bool) -> list[tuple]:
    """Configurations re-run with ``workers=2`` (each must also be in :func:`engine_grid`)."""
    hbc = "honest-but-curious"
    if common.SMOKE:
        return [(8, 200, "complete", hbc, 0.25)]
    if quick:
        return [(100, 100000, "secagg+", hbc, 0.0), (100, 10000, "complete", hbc, 0.0)]
    return [(100, 1000000, "secagg+", hbc, 0.0), (100, 10000, "complete", hbc, 0.0), (500, 100000, "secagg+", hbc, 0.1),
            (1000, 10000, "secagg+", hbc, 0.1)]


def run(quick: bool = False, repeats: int = 3, log=print) -> dict[str, Any]:  # noqa: ANN001
    """Benchmark 1 (see module docstring); returns the JSON-able results with goals."""
    out: dict[str, Any] = {"name": "protocol_phases"}
    t0 = time.perf_counter()
    ds = [1000, 10000, 100000] if quick else [1000, 10000, 100000, 1000000]
    ks = [10, 50] if quick else [10, 30, 100]
    if common.SMOKE:
        ds, ks = [1000], [2]
    out["mask_primitive"] = primitive_rows(ds, ks, repeats)
    log(f"  mask primitive: {len(out['mask_primitive'])} rows ({time.perf_counter() - t0:.0f} s)")
    out["survivor_policy"] = survivor_policy_rows([100] if common.SMOKE else [1000, 10000] if quick else [1000, 10000, 100000], repeats)
    out["phase_primitive"] = phase_primitive_rows([5] if common.SMOKE else [10, 100] if quick else [10, 100, 500], repeats)
    grid, budget = engine_grid(quick)
    rows, skipped = [], []
    for n, d, g, v, p in grid:
        est = estimate_seconds(n, d, g, p, v)
        if est > budget:
            skipped.append({"n": n, "d": d, "graph": g, "variant": v, "dropout": p, "estimate_s": round(est, 1)})
            continue
        reps = repeats if est * repeats < 5.0 else 1
        rows.append(engine_row(n, d, g, v, p, reps))
        log(f"  engine n={n} d={d} {g} {v} drop={p}: {rows[-1]['wall_s']:.2f} s")
    out["engine"] = rows
    out["engine_skipped"] = skipped
    # the same configurations with the engine's opt-in parallel clients (workers=2, forked processes)
    out["engine_workers"] = []
    if workers_supported():
        serial = {(r["n"], r["d"], r["graph"], r["variant"], r["dropout"]): r for r in rows}
        for cfg in workers_grid(quick):
            if cfg not in serial:
                continue
            n, d, g, v, p = cfg
            est = estimate_seconds(n, d, g, p, v)
            w = engine_row(n, d, g, v, p, repeats if est * repeats < 5.0 else 1, workers=2)
            w["serial_wall_s"] = serial[cfg]["wall_s"]
            w["speedup_vs_serial"] = serial[cfg]["wall_s"] / w["wall_s"]
            out["engine_workers"].append(w)
            log(f"  engine workers=2 n={n} d={d} {g} {v} drop={p}: {w['wall_s']:.2f} s (serial {w['serial_wall_s']:.2f} s)")
    else:
        out["engine_workers_skipped"] = "secagg.protocol.run_secure_aggregation has no workers parameter"
    # headline points
    goals = []
    dmax = max((r["d"] for r in out["mask_primitive"]), default=0)
    big = [r["ratio"] for r in out["mask_primitive"] if r["d"] == dmax and dmax >= 100000]
    prim_ratio = float(np.median(big)) if big else None
    # headline: n = 100 at the largest d of the grid, SecAgg+ graph, no dropouts (the masking-dominated regime)
    cand = [r for r in rows if r["n"] == 100 and r["graph"] == "secagg+" and r["dropout"] == 0.0 and r["variant"] == "honest-but-curious"]
    if not cand:
        cand = [r for r in rows if r["variant"] == "honest-but-curious" and r["dropout"] == 0.0]
    cand = sorted(cand, key=lambda r: (r["d"], r["n"]))[-1:]
    eng = cand[0] if cand else None
    goals.append(
        goal(
            "client masking / AES-CTR floor (engine masked-input round, per client)",
            eng["client_masking_ratio"] if eng else None,
            1.6,
            note=(f"n={eng['n']}, d={eng['d']}, {eng['graph']}; includes k X25519+HKDF seed derivations and packing" if eng else ""),
        )
    )
    goals.append(goal(f"client mask expansion / AES-CTR floor (prg.add_masks as the client calls it, k+1 masks, d={dmax:.0e}, median over k)", prim_ratio, 1.6,
                      note=f"range {min(big):.2f}-{max(big):.2f}" if big else ""))
    # server unmasking, 10% dropouts, n=500, d=1e5
    su = [r for r in rows if r["n"] == 500 and r["d"] == 100000 and r["dropout"] == 0.1 and r["variant"] == "honest-but-curious"]
    out["server_unmask_primitive"] = []
    su_n, su_d = (20, 100) if common.SMOKE else (500, 10000) if quick else (500, 100000)
    for g in ("complete", "secagg+"):
        out["server_unmask_primitive"].append(server_unmask_primitive(su_n, su_d, 0.1, g, max(1, repeats if quick else 1)))
    for g in ("complete", "secagg+"):
        eng_su = [r for r in su if r["graph"] == g]
        prim = [r for r in out["server_unmask_primitive"] if r["graph"] == g][0]
        if eng_su:
            goals.append(goal(f"server unmasking / floor, n=500, d=1e5, 10% dropouts, {g} (engine)", eng_su[0]["server_unmasking_ratio"], 1.5))
        goals.append(
            goal(
                f"server unmasking / floor, n={prim['n']}, d={prim['d']:.0e}, 10% dropouts, {g} (server primitives)",
                prim["ratio"],
                1.5,
                note=f"{prim['masks']} masks, {prim['pair_agreements']} X25519 agreements",
            )
        )
    # robust reconstruction (all shares consistent / one wrong share) beside the unmasking floor
    rgrid = [(8, 200)] if common.SMOKE else [(50, 10000), (100, 10000), (100, 100000)] if quick else [
        (100, 10000), (100, 100000), (500, 10000), (500, 100000)]
    out["robust_reconstruction"] = robust_reconstruction_rows(rgrid, repeats)
    log(f"  robust reconstruction: {len(out['robust_reconstruction'])} rows")
    out["goals"] = goals
    out["seconds"] = time.perf_counter() - t0
    return out
