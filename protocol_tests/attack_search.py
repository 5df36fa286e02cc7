"""A model of what a lying server (no corrupt client) can make active SecAgg+ clients release, and an
exhaustive SAT search for partial sums it could then compute.

Run from the repository root (needs python-sat: ``pip install python-sat``, or the ``search`` extra)::

    python -m protocol_tests.attack_search 20 4 4 full 15 --roots 2          # UNSAT: no such server
    python -m protocol_tests.attack_search 20 4 3 full 20 --roots 1          # SAT: the island split
    python -m protocol_tests.attack_search 24 4 4 window 24 --goal small-sum

Arguments: ``n k t view min_survivors``; ``--roots R`` (how many different U3 the server may show),
``--goal`` (``two-sums``: two disjoint computable sets; ``small-sum``: one computable set below
``min_survivors``; ``split-view``: a client whose ``b`` and ``s_sk`` are both known). UNSAT means no
server in the model achieves the goal at these parameters; SAT prints one that does.

:func:`evaluate` is the model in pure Python (the test suite uses it, protocol_tests/test_attack_model.py);
:func:`sat_search` encodes the same rules for the solver. The model mirrors the checks of
:mod:`secagg.client` and :mod:`secagg.rules`; the tests hold the real protocol to the attacks the
model finds (protocol_tests/test_active_splus_window.py).

Model (ring positions = client ids, Harary H(k, n), h = k/2, N[v] = v and the k positions within h):

* routing ``e[u][v]`` (v in N(u)): v's round-1 ciphertext reaches u, so u holds v's shares and masks
  with v (one-sided when e[v][u] is false). ``alive[u]``: u got its round-2 message (|V2(u)| >= t)
  and uploaded y_u; a client starved there holds nothing and masks nothing.
* roots: ``u3[j]`` (a set of clients), ``root[u]`` in {None, 0..R-1}: the U3 shown to u. u *signs*
  if its checks pass (client._consistency_check / _consistency_check_window): itself in U3, every
  neighbour in U3 is in V2(u) (stray rule); full view: |U3| >= min_survivors and G[U3] connected;
  window view: |U3 ∩ N2[u]| >= t and no h consecutive positions of its window without a survivor.
* u *reveals* (client._unmasking with every same-root signature of N2[u] forwarded) iff it signed
  and every v in V2(u) has >= t signers of u's root in N[v] (rules.check_signers); it then releases
  a b-share of every v in V2(u) ∩ U3 and an s_sk-share of every v in V2(u) - U3.
* b_v (s_sk_v) is known iff >= t distinct holders released a b (s_sk) share of v.
* a set X is *computable* (its inputs' sum) iff every x in X is alive with b_x known, and every mask
  partner w of x (w in V2(x), x masked with w) is in X with x in V2(w), or s_sk_w (or s_sk_x) known.
  Two disjoint non-empty computable sets = two partial sums (a break).
"""

from __future__ import annotations

import sys


def nbrs(n: int, k: int, u: int) -> list[int]:
    h = k // 2
    return sorted({(u + d) % n for d in range(-h, h + 1) if d})


def closed(n: int, k: int, u: int) -> list[int]:
    return sorted(set(nbrs(n, k, u)) | {u})


def window(n: int, k: int, u: int) -> list[int]:
    """Ring positions of N2[u] in the order the client reads them (survivor_tree.window_positions)."""
    if 2 * k + 1 >= n:
        return list(range(n))
    return [(u + d) % n for d in range(-k, k + 1)]


def connected(n: int, k: int, members: frozenset[int]) -> bool:
    """G[members] on the Harary ring: connected iff at most one cyclic run of >= h non-members."""
    h = k // 2
    if len(members) <= 1:
        return True
    pos = sorted(members)
    gaps = [pos[i + 1] - pos[i] - 1 for i in range(len(pos) - 1)] + [pos[0] + n - pos[-1] - 1]
    return sum(g >= h for g in gaps) <= 1


def longest_run(members, positions) -> int:  # noqa: ANN001
    best = run = 0
    for p in positions:
        run = 0 if p in members else run + 1
        best = max(best, run)
    return best


def evaluate(n: int, k: int, t: int, view: str, min_survivors: int, routing: dict[int, set[int]],
             alive: set[int] | frozenset[int], u3s: list[frozenset[int]], root: dict[int, int | None]) -> tuple:
    """The model above. routing: {u: set of senders}; alive: set; u3s: list of frozensets; root: {u: j}.
    Returns (signers, revealers, b_known, s_known, components) where components are the minimal
    computable sets (the partial sums the server can compute)."""
    h = k // 2
    V2 = {u: (set(routing.get(u, ())) | {u}) if u in alive else set() for u in range(n)}
    signers = set()
    for u, j in root.items():
        if u not in alive or j is None:
            continue
        U = u3s[j]
        if u not in U or any(v in U and v not in V2[u] for v in nbrs(n, k, u)):
            continue
        if view == "full":
            if len(U) < min_survivors or not connected(n, k, U):
                continue
        else:
            w = window(n, k, u)
            if sum(v in U for v in w) < t or longest_run(U, w) >= h:
                continue
        signers.add(u)
    sig_by = {}
    for u in signers:
        sig_by.setdefault(root[u], set()).add(u)
    revealers = set()
    bsh, ssh = {}, {}
    for u in signers:
        S = sig_by[root[u]]
        if all(len(S & set(closed(n, k, v))) >= t for v in V2[u]):
            revealers.add(u)
            for v in V2[u]:
                (bsh if v in u3s[root[u]] else ssh).setdefault(v, set()).add(u)
    bK = {v for v, hs in bsh.items() if len(hs) >= t}
    sK = {v for v, hs in ssh.items() if len(hs) >= t}
    # computable sets: start from all alive b-known clients, remove any x with an uncancellable mask
    X = {x for x in bK if x in alive}
    changed = True
    while changed:
        changed = False
        for x in sorted(X):
            ok = True
            for w in V2[x] - {x}:
                if w in sK or x in sK:
                    continue
                if w in X and x in V2[w]:
                    continue
                ok = False
            if not ok:
                X.discard(x)
                changed = True
    # split X into mask components (edges: uncancelled two-sided masks)
    comps, seen = [], set()
    for x in sorted(X):
        if x in seen:
            continue
        comp, stack = set(), [x]
        while stack:
            y = stack.pop()
            if y in comp:
                continue
            comp.add(y)
            for w in V2[y] - {y}:
                if w in X and w not in comp and not (w in sK or y in sK):
                    stack.append(w)
        seen |= comp
        comps.append(frozenset(comp))
    return signers, revealers, bK, sK, comps


# ------------------------------------------------------------------------------------------------ SAT
def sat_search(n: int, k: int, t: int, view: str, min_survivors: int, roots: int = 2, goal: str = "two-sums",
               max_x: int | None = None, extra=None) -> dict | None:  # noqa: ANN001
    """Exhaustive search (python-sat) over routing, alive sets, roots and assignments for ``goal``:

    * ``"two-sums"``: two disjoint non-empty computable sets;
    * ``"small-sum"``: one non-empty computable set of at most ``max_x`` clients (default min_survivors - 1);
    * ``"split-view"``: a client with b and s_sk both known.

    Returns None (UNSAT: no such server exists in the model) or a dict describing the configuration."""
    from pysat.card import CardEnc, EncType
    from pysat.solvers import Solver

    h = k // 2
    R = roots
    cnt = [0]

    def new():
        cnt[0] += 1
        return cnt[0]

    clauses = []

    def atleast(lits, bound, cond=None):
        """cond -> sum(lits) >= bound (cond None: unconditional)."""
        lits = list(lits)
        if bound <= 0:
            return
        if bound > len(lits):
            clauses.append([-cond] if cond is not None else [])
            return
        enc = CardEnc.atleast(lits=lits, bound=bound, top_id=cnt[0], encoding=EncType.seqcounter)
        cnt[0] = max(cnt[0], enc.nv)
        for c in enc.clauses:
            clauses.append(c + ([-cond] if cond is not None else []))

    def atmost(lits, bound):
        lits = list(lits)
        if bound >= len(lits):
            return
        enc = CardEnc.atmost(lits=lits, bound=bound, top_id=cnt[0], encoding=EncType.seqcounter)
        cnt[0] = max(cnt[0], enc.nv)
        clauses.extend(enc.clauses)

    N = {u: nbrs(n, k, u) for u in range(n)}
    Nc = {u: closed(n, k, u) for u in range(n)}
    e = {(u, v): new() for u in range(n) for v in N[u]}  # v's ciphertext routed to u
    a = {u: new() for u in range(n)}
    r = {(u, j): new() for u in range(n) for j in range(R)}
    m = {(j, v): new() for j in range(R) for v in range(n)}
    sj = {(u, j): new() for u in range(n) for j in range(R)}
    rv = {(u, j): new() for u in range(n) for j in range(R)}
    cn = {(v, j): new() for v in range(n) for j in range(R)}

    for u in range(n):
        for v in N[u]:
            clauses.append([-e[u, v], a[u]])
        atleast([e[u, v] for v in N[u]], t - 1, a[u])
        atmost([r[u, j] for j in range(R)], 1)
        for j in range(R):
            clauses.append([-r[u, j], a[u]])
            clauses.append([-sj[u, j], r[u, j]])
            clauses.append([-sj[u, j], m[j, u]])
            for v in N[u]:
                clauses.append([-sj[u, j], -m[j, v], e[u, v]])  # stray rule
            if view == "window":
                w = window(n, k, u)
                atleast([m[j, v] for v in w], t, sj[u, j])
                for s in range(len(w) - h + 1):
                    clauses.append([-sj[u, j]] + [m[j, w[s + i]] for i in range(h)])
            clauses.append([-rv[u, j], sj[u, j]])
            clauses.append([-rv[u, j], cn[u, j]])
            for v in N[u]:
                clauses.append([-rv[u, j], -e[u, v], cn[v, j]])
    for v in range(n):
        for j in range(R):
            atleast([sj[w, j] for w in Nc[v]], t, cn[v, j])
    if view == "full":
        for j in range(R):
            atmost([-m[j, v] for v in range(n)], n - min_survivors)
            big = []
            for i in range(n):
                g = new()
                big.append(g)
                clauses.append([-m[j, (i - 1) % n]] + [m[j, (i + d) % n] for d in range(h)] + [g])
            atmost(big, 1)
    # released shares
    bs, ss = {}, {}
    for v in range(n):
        for u in Nc[v]:
            b = bs[u, v] = new()
            opts = []
            for j in range(R):
                o = new()
                opts.append(o)
                clauses.append([-o, rv[u, j]])
                clauses.append([-o, m[j, v]])
                if u != v:
                    clauses.append([-o, e[u, v]])
            clauses.append([-b] + opts)
            if u != v:
                s = ss[u, v] = new()
                opts = []
                for j in range(R):
                    o = new()
                    opts.append(o)
                    clauses.append([-o, rv[u, j]])
                    clauses.append([-o, -m[j, v]])
                    clauses.append([-o, e[u, v]])
                clauses.append([-s] + opts)
    bK = {v: new() for v in range(n)}
    sK = {v: new() for v in range(n)}
    for v in range(n):
        atleast([bs[u, v] for u in Nc[v]], t, bK[v])
        atleast([ss[u, v] for u in N[v]], t, sK[v])

    def computable(x):
        for v in range(n):
            clauses.append([-x[v], a[v]])
            clauses.append([-x[v], bK[v]])
            for w in N[v]:
                # x[v] and e[v][w] -> (x[w] and e[w][v]) or sK[w] or sK[v]
                clauses.append([-x[v], -e[v, w], x[w], sK[w], sK[v]])
                clauses.append([-x[v], -e[v, w], e[w, v], sK[w], sK[v]])

    if goal == "two-sums":
        x1 = {v: new() for v in range(n)}
        x2 = {v: new() for v in range(n)}
        computable(x1)
        computable(x2)
        for v in range(n):
            clauses.append([-x1[v], -x2[v]])
        clauses.append([x1[v] for v in range(n)])
        clauses.append([x2[v] for v in range(n)])
        clauses.append([x1[0]])  # rotation symmetry
    elif goal == "small-sum":
        x1 = {v: new() for v in range(n)}
        computable(x1)
        clauses.append([x1[v] for v in range(n)])
        atmost([x1[v] for v in range(n)], min_survivors - 1 if max_x is None else max_x)
        clauses.append([x1[0]])
    elif goal == "split-view":
        x1 = None
        clauses.append([bK[0]])
        clauses.append([sK[0]])
    else:
        raise ValueError(goal)
    if extra:
        extra(clauses, dict(e=e, a=a, r=r, m=m, sj=sj, rv=rv, bK=bK, sK=sK))
    with Solver(name="cadical153", bootstrap_with=clauses) as s:
        if not s.solve():
            return None
        model = set(l for l in s.get_model() if l > 0)
    val = lambda var: var in model  # noqa: E731
    out = dict(
        routing={u: {v for v in N[u] if val(e[u, v])} for u in range(n)},
        alive={u for u in range(n) if val(a[u])},
        u3s=[frozenset(v for v in range(n) if val(m[j, v])) for j in range(R)],
        root={u: j for u in range(n) for j in range(R) if val(r[u, j])},
        claimed_signers={u for u in range(n) for j in range(R) if val(sj[u, j])},
        claimed_bK={v for v in range(n) if val(bK[v])},
        claimed_sK={v for v in range(n) if val(sK[v])},
    )
    if goal == "two-sums":
        out["X1"] = {v for v in range(n) if val(x1[v])}
        out["X2"] = {v for v in range(n) if val(x2[v])}
    elif goal == "small-sum":
        out["X1"] = {v for v in range(n) if val(x1[v])}
    return out


def show(n: int, cfg: dict) -> str:
    """A found configuration, one line per client."""
    lines = []
    for u in range(n):
        j = cfg["root"].get(u)
        lines.append(f"{u:3d} alive={int(u in cfg['alive'])} root={j} V2={sorted(cfg['routing'][u])} "
                     f"sig={int(u in cfg['claimed_signers'])} bK={int(u in cfg['claimed_bK'])} "
                     f"sK={int(u in cfg['claimed_sK'])}")
    for j, U in enumerate(cfg["u3s"]):
        lines.append(f"root {j}: missing {sorted(set(range(n)) - U)}")
    for key in ("X1", "X2"):
        if key in cfg:
            lines.append(f"{key} = {sorted(cfg[key])}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """The command line (module docstring)."""
    import argparse
    import time

    ap = argparse.ArgumentParser(prog="python -m protocol_tests.attack_search", description=__doc__.split("\n\n")[0])
    ap.add_argument("n", type=int)
    ap.add_argument("k", type=int)
    ap.add_argument("t", type=int)
    ap.add_argument("view", choices=("full", "window"))
    ap.add_argument("min_survivors", type=int)
    ap.add_argument("--roots", type=int, default=2, help="how many different U3 the server may show (default 2)")
    ap.add_argument("--goal", choices=("two-sums", "small-sum", "split-view"), default="two-sums")
    args = ap.parse_args(argv)
    if args.k % 2 or not 2 <= args.k < args.n - 1 or not 2 <= args.t <= args.k + 1:
        ap.error("need an even k with 2 <= k < n - 1 and 2 <= t <= k + 1")
    try:
        import pysat  # noqa: F401
    except ImportError:
        print("attack_search: the SAT search needs python-sat (pip install python-sat)", file=sys.stderr)
        return 2
    t0 = time.time()
    cfg = sat_search(args.n, args.k, args.t, args.view, args.min_survivors, roots=args.roots, goal=args.goal)
    dt = time.time() - t0
    head = (f"n={args.n} k={args.k} t={args.t} view={args.view} min_survivors={args.min_survivors} "
            f"roots={args.roots} goal={args.goal}")
    if cfg is None:
        print(f"{head}: UNSAT ({dt:.1f} s): no server in the model achieves the goal")
        return 0
    print(f"{head}: SAT ({dt:.1f} s)")
    print(show(args.n, cfg))
    return 0


if __name__ == "__main__":  # pragma: no cover - the command line
    raise SystemExit(main())
