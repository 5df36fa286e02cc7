"""The counterfactual panels of a trace: what the page shows beside the real run, computed by the tracer.

:func:`build_panels` takes the transcript that :func:`secagg.commands.trace.trace` built, the session it
ran and its result, and returns the keys it adds to the transcript (``schema`` and ``teaching``):

- ``messages``: every message of the run's ledger (round, direction, client, kind, exact size), so a
  view can label each arrow with the size the ledger recorded;
- ``shamir``: which ``t`` shares rebuilt each secret and from whom, and the same construction over the
  toy field ``F_97`` (a polynomial of degree ``t - 1`` cannot be drawn over ``F_p`` with
  ``p = 2^256 + 297``): the points, the secret at ``x = 0``, and ``t - 1`` shares fitting *every* secret
  (Shamir, *How to share a secret*, CACM 1979);
- ``double_masking``: the attack that double masking defeats, on this run (Bonawitz et al., *Practical
  Secure Aggregation for Privacy-Preserving Machine Learning*, CCS 2017, Section 4): a ``y_u`` that
  arrives after the server rebuilt ``s_sk_u`` still hides ``x_u`` behind ``PRG(b_u)``;
- ``equivocation``: the same inputs run again against a lying server. In the active variant the server
  shows different clients different ``U3`` lists and every honest client aborts in the consistency check
  before releasing a share; in the honest-but-curious variant it tells some clients that a live client
  dropped and collects both share kinds of that client;
- ``ledger``: bytes per round and direction, the expansion factor, and the paper's cost model
  (``2 n a_K + (5 n - 4) a_S + d b`` bits per user, Section 7.1) beside this package's closed form
  (:func:`secagg.cost.our_model`).

Everything here is computed in Python from the run; the HTML page only draws it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from secagg import ring
from secagg.errors import SecAggError

__all__ = ["TOY_PRIME", "build_panels", "toy_shamir"]

TOY_PRIME = 97
"""The toy field ``F_97`` of the Shamir drawing (party ``i`` evaluates at ``x = i + 1 <= 64 < 97``)."""

from secagg.rounds import ROUNDS as _ROUNDS  # noqa: E402


def _eval(points: list[tuple[int, int]], x: int, p: int) -> int:
    """The unique polynomial of degree ``< len(points)`` through ``points`` over ``F_p``, at ``x``."""
    from secagg.shamir import lagrange_at_zero

    for xi, yi in points:
        if xi % p == x % p:
            return yi % p
    lam = lagrange_at_zero(tuple((xi - x) % p for xi, _ in points), p)  # shift x to 0
    return sum(li * yi for li, (_, yi) in zip(lam, points)) % p


def toy_shamir(secret: int, threshold: int, holders: list[int], used: list[int], coeffs: list[int],
               p: int = TOY_PRIME) -> dict[str, Any]:
    """A ``threshold``-of-``len(holders)`` Shamir sharing of ``secret`` over ``F_p``, for drawing.

    ``f(x) = secret + sum_j coeffs[j] x^(j+1) mod p``; party ``i`` holds ``(i + 1, f(i + 1))``. Returns the
    shares, the curve ``f(0..X)``, the reconstruction ``f(0) = sum_j lambda_j y_j`` from the ``used``
    parties, and for the first ``t - 1`` used shares the polynomials through them and three other
    secrets, with the count of secrets in ``F_p`` that those ``t - 1`` shares fit (all ``p``: they say
    nothing about the secret).
    """
    from secagg.shamir import _reconstruct_int, _split_int

    it = iter(coeffs)
    shares = _split_int(secret, threshold, holders, lambda _p: next(it), p)
    xmax = max(holders) + 2
    curve = [_eval([(0, secret)] + [(i + 1, shares[i]) for i in holders[: threshold - 1]], x, p) for x in range(xmax + 1)]
    rebuilt = _reconstruct_int({i: shares[i] for i in used}, threshold, p)
    few = [(i + 1, shares[i]) for i in used[: threshold - 1]]
    fits = sum(all(_eval([(0, s)] + few, xi, p) == yi for xi, yi in few) for s in range(p))
    others = []
    for k in (1, 2, 3):
        s2 = (secret + 31 * k) % p
        others.append({"secret": s2, "curve": [_eval([(0, s2)] + few, x, p) for x in range(xmax + 1)]})
    return {
        "prime": p, "secret": secret, "threshold": threshold, "degree": threshold - 1,
        "shares": [{"party": i, "x": i + 1, "y": shares[i]} for i in holders],
        "used": list(used), "curve": curve, "reconstructed": rebuilt,
        "t_minus_1": [i for i in used[: threshold - 1]], "secrets_fitting_t_minus_1": fits, "other_secrets": others,
    }


def _mask_events(tr: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {e["client"]: e for r in tr["rounds"] for e in r["events"] if e["type"] == "mask"}


def _shamir_panel(tr: dict[str, Any], seed_bytes: bytes) -> dict[str, Any] | None:
    un = tr.get("unmasking")
    if not un:
        return None
    t = tr["parameters"]["threshold"]
    holders_of = {e["client"]: sorted(e["to"] + [e["client"]]) for r in tr["rounds"] for e in r["events"]
                  if e["type"] == "up" and e.get("kind") == "share-keys"}
    recons = []
    for st in un["steps"]:
        if "shares_from" not in st:
            continue
        kind = "b" if "b" in st else "s_sk"
        client = int(st["what"].rsplit(" ", 1)[1])
        if any(r["client"] == client and r["secret"] == kind for r in recons):
            continue  # one s_sk reconstruction serves every partner of a dropped client
        recons.append({"client": client, "secret": kind, "shares_from": st["shares_from"]})
    if not recons:
        return None
    # draw the most instructive one: a dropped client's key if there is one, else a survivor's b
    pick = next((r for r in recons if r["secret"] == "s_sk"), recons[0])
    holders = holders_of.get(pick["client"], sorted(pick["shares_from"]))
    rnd = np.random.default_rng(list(seed_bytes[:8]) + [0x5A])
    secret = int(rnd.integers(1, TOY_PRIME))
    coeffs = [int(c) for c in rnd.integers(1, TOY_PRIME, size=max(t - 1, 0))]
    toy = toy_shamir(secret, t, holders, sorted(pick["shares_from"]), coeffs)
    toy.update(client=pick["client"], stands_for=pick["secret"])
    return {"reconstructions": recons, "released": un["released"], "never_both": un["never_both"], "toy": toy}


def _double_masking_panel(tr: dict[str, Any]) -> dict[str, Any] | None:
    un, res = tr.get("unmasking"), tr["result"]
    if not un:
        return None
    m = tr["parameters"]["modulus"]
    masks = _mask_events(tr)
    u3 = res["sets"]["U3"]
    late = [lt["client"] for lt in un["late_arrival"]]
    if late:
        v, real = late[0], True
    elif u3:
        v, real = u3[0], False
    else:  # pragma: no cover - a completed run has U3 of at least t clients
        return None
    e = masks[v]
    left = np.array(e["y"], dtype=object)
    for pr in e["pairwise"]:
        left = (left - pr["sign"] * np.array(pr["mask"], dtype=object)) % m
    left = [int(a) for a in left]
    expect = [(a + b) % m for a, b in zip(e["x"], e["self_mask"])]
    return {
        "client": v, "real_dropout": real, "y": e["y"], "pairwise_removed": [pr["peer"] for pr in e["pairwise"]],
        "left": left, "x": e["x"], "self_mask": e["self_mask"], "left_is_x_plus_self_mask": left == expect,
        "left_equals_x": left == e["x"], # in the hypothetical, honest clients would have given s_sk shares of v *instead of* b shares
        "b_released": real and "b" in un["released"].get(str(v), []),
        "s_sk_released": "s_sk" in un["released"].get(str(v), []) or not real,
    }


def _equivocation_panel(tr: dict[str, Any], session: Any) -> dict[str, Any]:
    """Run the same inputs against a lying server (a counterfactual: not the run above)."""
    from secagg.protocol import Session
    from secagg.server import Server

    p = tr["parameters"]
    n, m = p["clients"], p["modulus"]
    victim = 1 % n
    liars = tuple(u for u in range(n) if u % 2 == 0 and u != victim)

    def drop_victim(msg):  # noqa: ANN001, ANN202
        return dataclasses.replace(msg, survivors=tuple(v for v in msg.survivors if v != victim),
                                   dropped=tuple(sorted(set(msg.dropped) | {victim})))

    class LyingServer(Server):
        """Tells the clients in ``liars`` that the live client ``victim`` dropped, the others the truth."""

        def consistency_request_for(self, u: int):  # noqa: ANN201
            msg = super().consistency_request_for(u)
            if u in liars:
                return dataclasses.replace(msg, survivors=tuple(v for v in msg.survivors if v != victim))
            return msg

        def unmasking_request_for(self, u: int, round: str):  # noqa: ANN201
            msg = super().unmasking_request_for(u, round)
            return drop_victim(msg) if u in liars else msg

    x = [np.array(tr["inputs"][str(u)], dtype=np.uint64).astype(ring.dtype_for(m)) for u in range(n)]
    lied = Session(x, modulus=m, threshold=session.threshold, graph=session.graph_name, variant=session.variant,
                   seed=p["seed"], neighbours=None if session.graph.is_complete else session.graph.k,
                   dropout_fraction=session.params.delta, server_class=LyingServer)
    aborted = None
    try:
        lied.run()
    except SecAggError as exc:
        aborted = {"round": getattr(exc, "round", None), "reason": str(getattr(exc, "reason", exc))}
    released: set[str] = set()
    for c in lied.clients.values():
        released |= c.released.get(victim, set())
    return {
        "variant": session.variant, "victim": victim, "lied_to": list(liars),
        "client_errors": {str(u): type(c.aborted).__name__ for u, c in sorted(lied.clients.items()) if c.aborted is not None},
        "victim_shares_released": sorted(released),
        "server_could_unmask_victim": released == {"b", "s_sk"},
        "aborted": aborted,
    }


def _ledger_panel(tr: dict[str, Any], session: Any, result: Any) -> dict[str, Any] | None:
    from secagg.cost import our_model, paper_model

    if result is None:
        return None
    p = tr["parameters"]
    n, d, m, bits = p["clients"], p["dim"], p["modulus"], p["bits"]
    rounds = [r for r in _ROUNDS if session.variant == "active" or r != "consistency-check"]
    drops: dict[str, int] = {}
    for spec in p["dropouts"].values():
        name, _, when = spec.partition(":")
        i = rounds.index(name) if name in rounds else rounds.index("unmasking")
        if when == "after":
            i += 1
        if i < len(rounds):
            drops[rounds[i]] = drops.get(rounds[i], 0) + 1
    ours = our_model(n, d, m, k=None if session.graph.is_complete else session.graph.k, variant=session.variant,
                     drops=drops, input_bits=bits)
    paper = paper_model(n, d, bits)
    led = result.ledger
    up = led.upload_per_client()
    down = led.download_per_client()
    return {
        "by_round": led.by_round(), "total": led.total(), "input_bits": bits,
        "expansion_factor": led.expansion_factor(d, bits),
        "mean_upload": sum(up.values()) / len(up) if up else 0.0,
        "mean_download": sum(down.values()) / len(down) if down else 0.0,
        "raw_input_bytes": d * bits / 8,
        "ours": {"total_up": ours.total_up, "total_down": ours.total_down, "by_round": ours.by_round, "exact": ours.exact,
                 "expansion_upload": ours.expansion_upload, "expansion_traffic": ours.expansion_traffic},
        "paper": {"traffic_bytes_per_user": paper.traffic_bytes, "expansion": paper.expansion,
                  "element_bits": paper.element_bits},
    }


def build_panels(tr: dict[str, Any], *, session: Any, result: Any, aborted: Any = None) -> dict[str, Any]:
    """The keys :func:`secagg.commands.trace.trace` adds to its transcript: ``schema`` and ``teaching``.

    ``session`` is the :class:`secagg.protocol.Session` that ran, ``result`` its
    :class:`secagg.protocol.AggregationResult` (``None`` when the run aborted), ``aborted`` the
    :class:`secagg.ProtocolAborted` it raised (its ledger holds the messages sent before the abort).
    """
    from secagg.teaching import SCHEMA

    ledger = result.ledger if result is not None else getattr(aborted, "ledger", None)
    messages = [{"round": e.round, "direction": e.direction, "client": e.client, "kind": e.kind, "bytes": e.nbytes}
                for e in (ledger or [])]
    teaching: dict[str, Any] = {
        "messages": messages,
        "shamir": _shamir_panel(tr, session.session),
        "double_masking": _double_masking_panel(tr),
        "ledger": _ledger_panel(tr, session, result),
    }
    try:
        teaching["equivocation"] = _equivocation_panel(tr, session)
    except SecAggError as exc:  # e.g. a configuration too small for the lie to be told
        teaching["equivocation"] = {"unavailable": str(exc)}
    return {"schema": SCHEMA, "teaching": teaching}
