"""``secagg trace``: a round-by-round transcript of one small secure aggregation, for students.

The transcript comes from a real run of the protocol (:class:`secagg.protocol.Session`): every message
is captured on the wire (its kind, sender/recipient and exact size) and parsed with
:mod:`secagg.messages`. The *teaching values* that no real party could print -- each client's input,
self mask ``p_u = PRG(b_u)``, pairwise masks ``p_{u,v} = PRG(s_{u,v})`` -- are **recomputed by the
tracer**, which plays an all-seeing auditor (not the server): it re-derives each client's key pair and
self-mask seed from the run seed exactly as the clients did (:mod:`secagg.drbg` children), checks the
recomputed public keys against the ones advertised on the wire and the recomputed masked vectors
against the bytes the server received, and only then prints them.

Then it replays the server's unmasking in the open: which shares it collected and why, the
reconstruction of each survivor's ``b_u`` (to strip self masks) and of each dropped client's ``s_sk_v``
(to cancel the pairwise masks that survivors added for ``v``), and checks the protocol's output against
the plaintext sum over U3. The last line says whether the sums match.

Colour (ANSI) when stdout is a terminal and ``NO_COLOR`` is unset; ``--json`` prints the transcript as
JSON for machines (the text is rendered from the same structure).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
from typing import Any

import numpy as np

from secagg.cli import seed_arg
from secagg.errors import InvalidInput, ProtocolAborted, SecAggError

NAME = "trace"
HELP = "round-by-round transcript of a small secure aggregation (inputs, masks, shares, unmasking)"

__all__ = ["NAME", "HELP", "add_arguments", "run", "trace", "render", "wrap_line", "MIN_WIDTH", "DEFAULT_WIDTH"]

#: narrowest ``--width`` accepted (a continuation line keeps a short indent and still holds a few words)
MIN_WIDTH = 40
#: ``--width`` when stdout is not a terminal and ``COLUMNS`` is unset
DEFAULT_WIDTH = 100

from secagg.rounds import ROUNDS as _ROUNDS  # noqa: E402

_PAPER = {
    "advertise-keys": "Round 0 (AdvertiseKeys)",
    "share-keys": "Round 1 (ShareKeys)",
    "masked-input": "Round 2 (MaskedInputCollection)",
    "consistency-check": "Round 3 (ConsistencyCheck, active variant)",
    "unmasking": "Round 4 (Unmasking)",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--clients", "-n", type=int, default=4, help="number of clients (default 4)")
    p.add_argument("--dim", "-d", type=int, default=3, help="vector length (default 3)")
    p.add_argument("--threshold", "-t", type=int, default=None, help="Shamir threshold t (default: protocol default)")
    p.add_argument("--drop", action="append", default=[], metavar="ID:ROUND",
                   help="client ID drops at ROUND (a round name, optionally ':after'); repeatable")
    p.add_argument("--modulus-bits", "-b", type=int, default=8, help="M = 2^B, small so numbers stay readable (default 8)")
    p.add_argument("--variant", choices=("honest-but-curious", "active"), default="honest-but-curious")
    p.add_argument("--graph", choices=("complete", "secagg+"), default="complete")
    p.add_argument("--neighbours", "-k", type=int, default=None, help="SecAgg+ degree k")
    p.add_argument("--protocol", choices=("bonawitz", "plaintext"), default="bonawitz",
                   help="bonawitz (default) or plaintext: the clients send their inputs in the clear (the baseline; "
                        "no masks, so no --html page)")
    p.add_argument("--seed", "-s", type=seed_arg, default=0, help="seed of inputs and protocol randomness (default 0)")
    p.add_argument("--width", type=int, default=None,
                   help="wrap text lines at N characters (default: the terminal width, or 100 when not a terminal; "
                        f"at least {MIN_WIDTH})")
    p.add_argument("--json", action="store_true", help="print the transcript as JSON (never wrapped)")
    p.add_argument("--html", metavar="FILE", default=None,
                   help="also write the transcript as one self-contained interactive HTML page to FILE")


# ------------------------------------------------------------------------------------------ build
def _ints(v: np.ndarray) -> list[int]:
    return [int(a) for a in np.asarray(v).tolist()]


def _hex(b: bytes, n: int = 6) -> str:
    return b[:n].hex() + "…"


def trace(
    *,
    clients: int = 4,
    dim: int = 3,
    threshold: int | None = None,
    drops: dict[int, str] | None = None,
    modulus_bits: int = 8,
    variant: str = "honest-but-curious",
    graph: str = "complete",
    neighbours: int | None = None,
    seed: int = 0,
    dropout_fraction: float | None = None,
    protocol: str = "bonawitz",
) -> dict[str, Any]:
    """Run one session and return its transcript (a JSON-serialisable dict; see module docstring).
    ``dropout_fraction``: the delta a SecAgg+ graph is designed for (its survivor bound; default 0.05).
    ``protocol="plaintext"``: the baseline without masks (one round; threshold, graph and variant do not apply)."""
    from secagg.protocol import SessionParams

    _check_size(clients, dim, modulus_bits)
    params = SessionParams.create(clients, dim, 1 << modulus_bits, threshold=threshold, graph=graph, variant=variant,
                                  dropouts=dict(drops or {}), seed=seed, neighbours=neighbours,
                                  dropout_fraction=dropout_fraction, protocol=protocol)
    return trace_session(params, seed)


def _check_size(clients: object, dim: object, modulus_bits: object) -> None:
    if isinstance(modulus_bits, bool) or not isinstance(modulus_bits, int) or not 1 <= modulus_bits <= 64:
        raise InvalidInput(f"--modulus-bits must be in [1, 64], got {modulus_bits!r}")
    if isinstance(clients, bool) or not isinstance(clients, int) or not 2 <= clients <= 64:
        raise InvalidInput(f"--clients must be in [2, 64] for a readable trace, got {clients!r}")
    if isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= 64:
        raise InvalidInput(f"--dim must be in [1, 64] for a readable trace, got {dim!r}")


def trace_session(params, seed: int) -> dict[str, Any]:  # noqa: ANN001 - secagg.protocol.SessionParams
    """:func:`trace` for prepared :class:`~secagg.protocol.SessionParams` (built from ``seed``, which the
    tracer also uses to recompute the clients' secrets; ``secagg trace`` builds them once with
    :meth:`~secagg.protocol.SessionParams.from_args`)."""
    from secagg import keys, prg, ring, shamir
    from secagg.client import mask_sign, pairwise_seed
    from secagg.drbg import Drbg
    from secagg.messages import parse
    from secagg.protocol import Session

    clients, dim, m, variant = params.n, params.dim, params.modulus, params.variant.value
    clear = params.protocol == "plaintext"
    drops = dict(params.dropouts)
    rng = np.random.default_rng([seed, 0x7ACE])
    x = [rng.integers(0, min(m, 16), dim, dtype=np.uint64).astype(ring.dtype_for(m)) for _ in range(clients)]
    wire: list[tuple[str, str, int, bytes]] = []

    def tap(rnd: str, direction: str, client: int, data: bytes) -> bytes:
        wire.append((rnd, direction, client, data))
        return data

    session = Session(x, params=params, interceptor=tap)
    g, t, sess = session.graph, session.threshold, session.session
    out: dict[str, Any] = {
        "parameters": {
            "clients": clients, "dim": dim, "modulus": m, "bits": ring.bit_width(m), "threshold": t,
            "variant": variant, "graph": "complete" if g.is_complete else f"secagg+ (Harary, k = {g.k})",
            "seed": seed, "session": sess.hex(), "dropouts": {str(u): r for u, r in sorted(drops.items())},
            "neighbours": {str(u): list(g.neighbours(u)) for u in range(clients)} if not g.is_complete else None,
            **({"protocol": params.protocol} if clear else {}),
        },
        "inputs": {str(u): _ints(x[u]) for u in range(clients)},
        "rounds": [],
    }
    aborted = None
    result = None
    try:
        result = session.run()
    except ProtocolAborted as exc:
        aborted = exc
    # -- auditor: recompute the clients' secrets from the seed, as the clients derived them
    root = Drbg(seed, b"secagg/run/v1")
    cdrbg = {u: root.child(b"client/" + u.to_bytes(4, "big")) for u in range(clients)}
    s_key = {u: keys.AgreementKey.generate(cdrbg[u].child(b"s-key")) for u in range(clients)}
    b_seed = {u: cdrbg[u].child(b"self-mask-seed").bytes(32) for u in range(clients)}
    msgs = [(r, dr, c, parse(data), len(data)) for r, dr, c, data in wire]
    advertised = {c: mm for r, dr, c, mm, _ in msgs if r == "advertise-keys" and dr == "up"}
    for u, mm in advertised.items():
        if mm.s_pk != s_key[u].public_bytes:  # pragma: no cover - would mean the derivation changed
            raise SecAggError(f"tracer could not recompute client {u}'s keys from the seed")
    pmask = lambda seed_: prg.expand(seed_, session=sess, purpose=prg.PURPOSE_PAIRWISE, dim=dim, modulus=m)  # noqa: E731
    smask = lambda seed_: prg.expand(seed_, session=sess, purpose=prg.PURPOSE_SELF, dim=dim, modulus=m)  # noqa: E731

    def events(rnd: str, direction: str):  # noqa: ANN202
        return [(c, mm, nb) for r, dr, c, mm, nb in msgs if r == rnd and dr == direction]

    def sched_note(rnd: str) -> list[dict[str, Any]]:
        notes = []
        for u, spec in sorted(drops.items()):
            name, _, when = spec.partition(":")
            if name == rnd or (rnd == "unmasking" and name == "consistency-check" and variant != "active"):
                notes.append({"type": "drop", "client": u,
                              "text": f"client {u} drops " + ("after sending its message" if when == "after" else "and sends nothing from here on")})
        return notes

    rounds_run = ["masked-input"] if clear else [r for r in _ROUNDS if variant == "active" or r != "consistency-check"]
    u2_view: dict[int, list[int]] = {}
    for rnd in rounds_run:
        # the plaintext baseline has one round: every scheduled dropout is noted there
        ev: list[dict[str, Any]] = [e for r in _ROUNDS for e in sched_note(r)] if clear else sched_note(rnd)
        ups, downs = events(rnd, "up"), events(rnd, "down")
        if not ups and not downs and not ev:
            continue
        if rnd == "advertise-keys":
            for c, mm, nb in ups:
                ev.append({"type": "up", "client": c, "kind": mm.KIND, "bytes": nb, "c_pk": _hex(mm.c_pk), "s_pk": _hex(mm.s_pk),
                           "signed": mm.signature is not None})
            for c, mm, nb in downs:
                ev.append({"type": "down", "client": c, "kind": mm.KIND, "bytes": nb, "ids": [e.id for e in mm.entries]})
        elif rnd == "share-keys":
            for c, mm, nb in ups:
                ev.append({"type": "up", "client": c, "kind": mm.KIND, "bytes": nb,
                           "to": [v for v, _ in mm.ciphertexts], "ciphertext_bytes": [len(ct) for _, ct in mm.ciphertexts],
                           "b_seed": _hex(b_seed[c])})
            for c, mm, nb in downs:
                u2_view[c] = [v for v, _ in mm.ciphertexts]
                ev.append({"type": "down", "client": c, "kind": mm.KIND, "bytes": nb, "from": [v for v, _ in mm.ciphertexts]})
        elif rnd == "masked-input" and clear:  # the plaintext baseline: x_u itself goes on the wire
            sent = {c: (mm, nb) for c, mm, nb in ups}
            for u in range(clients):
                e = {"type": "plain", "client": u, "x": _ints(x[u]), "sent": u in sent}
                if u in sent:
                    e.update(bytes=sent[u][1], matches_wire=bool(np.array_equal(sent[u][0].vector(m), x[u])))
                ev.append(e)
            if sent:
                acc = ring.zeros(dim, m)
                for c in sorted(sent):
                    ring.add_into(acc, sent[c][0].vector(m), m)
                ev.append({"type": "server-sum", "U3": sorted(sent), "sum_y": _ints(acc), "clear": True})
        elif rnd == "masked-input":
            sent = {c: (mm, nb) for c, mm, nb in ups}
            for u in sorted(u2_view):
                peers = u2_view[u]
                p_self = smask(b_seed[u])
                y = x[u].copy()
                ring.add_into(y, p_self, m)
                pair = []
                for v in peers:
                    pv = pmask(pairwise_seed(s_key[u], advertised[v].s_pk, session=sess, u=u, v=v))
                    sg = mask_sign(u, v)
                    (ring.add_into if sg > 0 else ring.sub_into)(y, pv, m)
                    pair.append({"peer": v, "sign": sg, "mask": _ints(pv)})
                e = {"type": "mask", "client": u, "x": _ints(x[u]), "self_mask": _ints(p_self), "pairwise": pair, "y": _ints(y)}
                if u in sent:
                    mm, nb = sent[u]
                    wire_y = mm.vector(m)
                    e.update(sent=True, bytes=nb, matches_wire=bool(np.array_equal(wire_y, y)))
                else:
                    e.update(sent=False)
                ev.append(e)
            if sent:
                acc = ring.zeros(dim, m)
                for c in sorted(sent):
                    ring.add_into(acc, sent[c][0].vector(m), m)
                ev.append({"type": "server-sum", "U3": sorted(sent), "sum_y": _ints(acc)})
        elif rnd == "consistency-check":
            for c, mm, nb in ups:
                ev.append({"type": "up", "client": c, "kind": mm.KIND, "bytes": nb})
        elif rnd == "unmasking":
            for c, mm, nb in ups:
                ev.append({"type": "up", "client": c, "kind": mm.KIND, "bytes": nb,
                           "b_shares_for": [v for v, _ in mm.b_shares], "key_shares_for": [v for v, _ in mm.key_shares]})
        # requests/consistency lists travel down at the end of rounds 2/3
        for c, mm, nb in downs:
            if mm.KIND == "unmasking-request":
                ev.append({"type": "down", "client": c, "kind": mm.KIND, "bytes": nb, "survivors": list(mm.survivors),
                           "dropped": list(mm.dropped), "signatures": len(mm.signatures)})
            elif mm.KIND == "consistency-request":
                ev.append({"type": "down", "client": c, "kind": mm.KIND, "bytes": nb, "U3": list(mm.survivors)})
        out["rounds"].append({"round": rnd, "paper": _PAPER[rnd], "events": ev})

    # -- the server's unmasking, replayed in the open
    unmask: dict[str, Any] = {}
    resp = {c: mm for r, dr, c, mm, _ in msgs if r == "unmasking" and dr == "up"}
    masked = {c: mm.vector(m) for r, dr, c, mm, _ in msgs if r == "masked-input" and dr == "up"}
    if result is not None:
        u2, u3 = result.sets["U2"], result.sets["U3"]
        acc = ring.zeros(dim, m)
        for u in sorted(u3):
            ring.add_into(acc, masked[u], m)
        steps = [{"what": "sum of the inputs over U3, sent in the clear (nothing to unmask)" if clear
                  else "sum of masked inputs over U3", "value": _ints(acc)}]
        for u in ([] if clear else sorted(u3)):
            holders = sorted(w for w, mm in resp.items() if u in [v for v, _ in mm.b_shares])
            chosen = holders[:t]
            b = shamir.reconstruct({w: dict(resp[w].b_shares)[u] for w in chosen}, t, 32)
            ps = smask(b)
            ring.sub_into(acc, ps, m)
            steps.append({"what": f"remove self mask of client {u}", "shares_from": chosen, "b": _hex(b),
                          "b_matches": b == b_seed[u], "mask": _ints(ps), "value": _ints(acc)})
        for v in ([] if clear else sorted(u2 - u3)):
            holders = sorted(w for w, mm in resp.items() if v in [a for a, _ in mm.key_shares])
            partners = sorted(w for w in u3 if v in u2_view.get(w, []))
            if not partners:
                continue
            chosen = holders[:t]
            sk = shamir.reconstruct({w: dict(resp[w].key_shares)[v] for w in chosen}, t, 32)
            key = keys.AgreementKey.from_private_bytes(sk)
            for w in partners:
                pv = pmask(pairwise_seed(key, advertised[w].s_pk, session=sess, u=v, v=w))
                sg = mask_sign(w, v)
                (ring.sub_into if sg > 0 else ring.add_into)(acc, pv, m)
                steps.append({"what": f"cancel the pairwise mask client {w} added for dropped client {v}",
                              "shares_from": chosen, "s_pk_matches": key.public_bytes == advertised[v].s_pk,
                              "sign_added_by_survivor": sg, "mask": _ints(pv), "value": _ints(acc)})
        released = {}
        for w, mm in resp.items():
            for v, _ in mm.b_shares:
                released.setdefault(v, set()).add("b")
            for v, _ in mm.key_shares:
                released.setdefault(v, set()).add("s_sk")
        unmask = {
            "steps": steps,
            "released": {str(v): sorted(k) for v, k in sorted(released.items())},
            "never_both": all(len(k) == 1 for k in released.values()),
        }
        # hypothetical: what a late y_v of a client dropped before masked-input would reveal
        late = []
        for v in ([] if clear else sorted(u2 - u3)):
            hv = x[v].copy()
            ring.add_into(hv, smask(b_seed[v]), m)
            late.append({"client": v, "x_plus_self_mask": _ints(hv), "x": _ints(x[v])})
        unmask["late_arrival"] = late
        plain = ring.zeros(dim, m)
        for u in sorted(u3):
            ring.add_into(plain, x[u], m)
        match = bool(np.array_equal(result.sum, plain)) and bool(np.array_equal(acc, result.sum))
        out["unmasking"] = unmask
        out["result"] = {
            "sets": {k: sorted(v) for k, v in result.sets.items()},
            "protocol_sum": _ints(result.sum),
            "replayed_sum": _ints(acc),
            "plaintext_sum_U3": _ints(plain),
            "match": match,
            "bytes_total": result.ledger.total(),
            "by_round": result.ledger.by_round(),
            "aborted": None,
        }
    else:
        assert aborted is not None
        out["result"] = {"sets": {k: sorted(v) for k, v in getattr(aborted, "sets", {}).items()},
                         "aborted": {"round": aborted.round, "reason": aborted.reason, "party": aborted.party},
                         "match": None}
    if clear:  # the teaching page's counterfactual panels are about masks; the baseline has none
        return out
    from secagg.teaching.panels import build_panels  # the page's counterfactual panels, computed here

    out.update(build_panels(out, session=session, result=result, aborted=aborted))
    return out


# ------------------------------------------------------------------------------------------ render
class _Style:
    def __init__(self, on: bool) -> None:
        self.on = on

    def __call__(self, text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.on else text

    def h(self, t: str) -> str:
        return self(t, "1;36")

    def up(self, t: str) -> str:
        return self(t, "33")

    def down(self, t: str) -> str:
        return self(t, "35")

    def ok(self, t: str) -> str:
        return self(t, "1;32")

    def bad(self, t: str) -> str:
        return self(t, "1;31")

    def dim(self, t: str) -> str:
        return self(t, "2")


_SGR = re.compile(r"\x1b\[[0-9;]*m")


def wrap_line(line: str, width: int) -> list[str]:
    """Wrap one rendered line to at most ``width`` visible characters (ANSI colour codes do not count).

    Breaks at spaces (a word longer than the room left is cut); continuation lines are indented by the
    line's own leading spaces plus four, so a wrapped message reads as one block. Colour is closed at the
    end of every piece and reopened at the start of the next, so each output line is self-contained.
    """
    chars: list[tuple[str, str]] = []  # (visible character, active SGR sequence)
    code, pos = "", 0
    for mo in _SGR.finditer(line):
        chars += [(c, code) for c in line[pos:mo.start()]]
        code = "" if mo.group(0) == "\x1b[0m" else mo.group(0)
        pos = mo.end()
    chars += [(c, code) for c in line[pos:]]
    plain = "".join(c for c, _ in chars)
    if len(plain) <= width:
        return [line]
    lead = len(plain) - len(plain.lstrip(" "))
    cont = min(lead + 4, width // 2)
    pieces: list[tuple[int, int, int]] = []  # (indent, start, end) into chars
    i, indent = lead, lead
    n = len(plain)
    while i < n:
        room = width - indent
        if n - i <= room:
            pieces.append((indent, i, n))
            break
        cut = plain.rfind(" ", i, i + room + 1)
        if cut <= i:  # no space in reach: cut the word
            cut, nxt = i + room, i + room
        else:
            nxt = cut
        while nxt < n and plain[nxt] == " ":
            nxt += 1
        end = cut
        while end > i and plain[end - 1] == " ":
            end -= 1
        pieces.append((indent, i, end))
        i, indent = nxt, cont
    out = []
    for ind, a, b in pieces:
        buf, cur = [" " * ind], ""
        for c, cd in chars[a:b]:
            if cd != cur:
                buf.append(cd if cd else "\x1b[0m")
                cur = cd
            buf.append(c)
        if cur:
            buf.append("\x1b[0m")
        out.append("".join(buf))
    return out


def render(tr: dict[str, Any], color: bool = False, width: int | None = None) -> str:
    """The transcript as text (a student's walk through the rounds), every line wrapped to at most
    ``width`` visible characters (:func:`wrap_line`; ``None``: lines are not wrapped)."""
    text = _render(tr, color)
    if width is None:
        return text
    if isinstance(width, bool) or not isinstance(width, int) or width < MIN_WIDTH:
        raise InvalidInput(f"--width must be an int >= {MIN_WIDTH}, got {width!r}")
    return "\n".join(piece for line in text.split("\n") for piece in wrap_line(line, width))


def terminal_width() -> int:
    """The terminal's width (``COLUMNS`` or the terminal of stdout), else :data:`DEFAULT_WIDTH`; never
    below :data:`MIN_WIDTH`."""
    return max(MIN_WIDTH, shutil.get_terminal_size((DEFAULT_WIDTH, 24)).columns)


def _render(tr: dict[str, Any], color: bool = False) -> str:
    s = _Style(color)
    p = tr["parameters"]
    m = p["modulus"]
    L: list[str] = []
    setting = ("plaintext protocol: every client sends its input in the clear (the baseline)"
               if p.get("protocol") == "plaintext" else f"threshold t = {p['threshold']}, {p['variant']}, {p['graph']} graph")
    L.append(s.h(f"Secure aggregation trace: n = {p['clients']} clients, d = {p['dim']}, Z_M with M = {m} "
                 f"({p['bits']}-bit elements), {setting}, seed {p['seed']}"))
    if p["dropouts"]:
        L.append("dropout schedule: " + ", ".join(f"client {u} at {r}" for u, r in p["dropouts"].items()))
    if p.get("neighbours"):
        L.append("neighbours: " + "; ".join(f"N({u}) = {v}" for u, v in p["neighbours"].items()))
    L.append(s.dim("(values marked 'auditor' are recomputed by this tracer from the run seed; no real party sees them)"))
    L.append("")
    L.append(s.h("Inputs (auditor)"))
    for u, v in tr["inputs"].items():
        L.append(f"  x_{u} = {v}")
    explained = False
    for rd in tr["rounds"]:
        L.append("")
        L.append(s.h(f"== {rd['paper']}: {rd['round']} =="))
        for e in rd["events"]:
            t = e["type"]
            if t == "drop":
                L.append(s.bad(f"  ✗ {e['text']}"))
            elif t == "up" and e["kind"] == "advertise-keys":
                L.append(s.up(f"  client {e['client']} → server  advertise-keys ({e['bytes']} B): c_pk = {e['c_pk']}, "
                              f"s_pk = {e['s_pk']}" + (", signed (Ed25519)" if e["signed"] else "")))
            elif t == "down" and e["kind"] == "key-list":
                L.append(s.down(f"  server → client {e['client']}  key-list ({e['bytes']} B): public keys of clients {e['ids']}"))
            elif t == "up" and e["kind"] == "share-keys":
                L.append(s.up(f"  client {e['client']} → server  share-keys ({e['bytes']} B): draws self-mask seed b_{e['client']} = "
                              f"{e['b_seed']} (auditor); Shamir-shares s_sk_{e['client']} and b_{e['client']} ({p['threshold']}-of-"
                              f"{len(e['to']) + 1}, keeps its own share); encrypted shares for clients {e['to']} "
                              f"({e['ciphertext_bytes'][0] if e['ciphertext_bytes'] else 0} B each, AES-GCM: u‖v‖session‖share(s_sk)‖share(b))"))
            elif t == "down" and e["kind"] == "ciphertexts":
                L.append(s.down(f"  server → client {e['client']}  ciphertexts ({e['bytes']} B): from clients {e['from']} "
                                f"(the server routes them; it cannot read them)"))
            elif t == "mask":
                u = e["client"]
                L.append(f"  client {u}: x_{u} = {e['x']}")
                L.append(f"     self mask   p_{u} = PRG(b_{u}) = {e['self_mask']}  (auditor)")
                for pr in e["pairwise"]:
                    sign = "+" if pr["sign"] > 0 else "-"
                    L.append(f"     pairwise  {sign}p_{u},{pr['peer']} = {sign}PRG(s_{min(u, pr['peer'])},{max(u, pr['peer'])}) = "
                             f"{sign}{pr['mask']}  ({'u > v: add' if pr['sign'] > 0 else 'u < v: subtract'})  (auditor)")
                if e["sent"]:
                    chk = s.ok("matches the bytes on the wire ✓") if e["matches_wire"] else s.bad("DOES NOT match the wire ✗")
                    L.append(s.up(f"     y_{u} = x_{u} + p_{u} ± pairwise (mod {m}) = {e['y']}  → server masked-input ({e['bytes']} B), {chk}"))
                else:
                    L.append(s.bad(f"     y_{u} would be {e['y']}, but client {u} never sends it"))
            elif t == "plain":
                u = e["client"]
                if e["sent"]:
                    chk = s.ok("matches the bytes on the wire ✓") if e["matches_wire"] else s.bad("DOES NOT match the wire ✗")
                    L.append(s.up(f"  client {u} → server  masked-input ({e['bytes']} B): x_{u} = {e['x']} in the clear "
                                  f"(no masks), {chk}"))
                else:
                    L.append(s.bad(f"  client {u} never sends x_{u}"))
            elif t == "server-sum" and e.get("clear"):
                L.append(f"  server sees every input of U3 = {e['U3']} in the clear; their sum mod {m} = {e['sum_y']}")
            elif t == "server-sum":
                L.append(f"  server sees only the masked vectors of U3 = {e['U3']}; their sum mod {m} = {e['sum_y']} "
                         "(still hidden by the masks)")
            elif t == "down" and e["kind"] == "consistency-request":
                L.append(s.down(f"  server → client {e['client']}  consistency-request ({e['bytes']} B): U3 = {e['U3']}, sign it"))
            elif t == "up" and e["kind"] == "consistency-signature":
                L.append(s.up(f"  client {e['client']} → server  consistency-signature ({e['bytes']} B): Ed25519 signature over (session, U3)"))
            elif t == "down" and e["kind"] == "unmasking-request":
                if not explained:
                    explained = True
                    L.append("  the server now asks every live client for shares: of b_u for each survivor u in U3 (to strip "
                             "the self masks), of s_sk_v for each client v that shared keys but sent no y_v (U2 \\ U3: to "
                             "recompute and cancel the pairwise masks the survivors added for v); never both for one client")
                sig = f", {e['signatures']} signatures of U3 to verify" if e["signatures"] else ""
                L.append(s.down(f"  server → client {e['client']}  unmasking-request ({e['bytes']} B): b-shares for survivors "
                                f"{e['survivors']}, s_sk-shares for dropped {e['dropped']}{sig}"))
            elif t == "up" and e["kind"] == "unmasking-response":
                L.append(s.up(f"  client {e['client']} → server  unmasking-response ({e['bytes']} B): its shares of b for "
                              f"{e['b_shares_for']}, of s_sk for {e['key_shares_for']} (never both for one client)"))
    res = tr["result"]
    L.append("")
    if res.get("aborted"):
        a = res["aborted"]
        who = "server" if a["party"] is None else f"client {a['party']}"
        L.append(s.bad(f"ABORTED in round {a['round']} by {who}: {a['reason']}. Nothing is released."))
        L.append(s.bad("CHECK: no sum was released (the protocol aborted), so there is nothing to compare."))
        return "\n".join(L)
    un = tr["unmasking"]
    clear = p.get("protocol") == "plaintext"
    L.append(s.h("== The server sums (nothing to unmask) ==" if clear else "== The server unmasks (replayed in the open) =="))
    for st in un["steps"]:
        if "shares_from" not in st:
            L.append(f"  {st['what']}: {st['value']}")
        elif "b" in st:
            ok = s.ok("= the b the client drew ✓") if st["b_matches"] else s.bad("≠ client's b ✗")
            L.append(f"  {st['what']}: b reconstructed from the shares of clients {st['shares_from']} (Lagrange at 0) {ok};")
            L.append(f"     subtract PRG(b) = {st['mask']}  →  {st['value']}")
        else:
            ok = s.ok("matches its advertised s_pk ✓") if st["s_pk_matches"] else s.bad("mismatch ✗")
            op = "subtract" if st["sign_added_by_survivor"] > 0 else "add back"
            L.append(f"  {st['what']}: s_sk rebuilt from the shares of clients {st['shares_from']}, {ok};")
            L.append(f"     recompute the mask from s_sk and the survivor's s_pk, {op} {st['mask']}  →  {st['value']}")
    rel = ", ".join(f"client {v}: {'+'.join(k)}" for v, k in un["released"].items())
    if not clear:
        L.append(f"  shares revealed per client: {rel}  — " + (s.ok("never both b and s_sk for one client ✓") if un["never_both"]
                                                              else s.bad("BOTH revealed for some client ✗")))
    for lt in un["late_arrival"]:
        L.append(s.dim(f"  why double masking: had y_{lt['client']} arrived late, removing its pairwise masks (the server holds s_sk_"
                       f"{lt['client']}) would leave x_{lt['client']} + p_{lt['client']} = {lt['x_plus_self_mask']}, still hidden by the "
                       f"self mask because nobody revealed b_{lt['client']} (x_{lt['client']} = {lt['x']}, auditor)"))
    L.append("")
    L.append(f"  sets: " + ", ".join(f"{k} = {v}" for k, v in res["sets"].items()))
    L.append(f"  bytes on the wire: {res['bytes_total']:,} in total")
    L.append(f"  protocol output        = {res['protocol_sum']}")
    L.append(f"  plaintext sum over U3  = {res['plaintext_sum_U3']}  (auditor)")
    if res["match"]:
        L.append(s.ok(f"CHECK: protocol sum == plaintext sum over U3 = {res['sets']['U3']}: the sums match ✓"))
    else:
        L.append(s.bad("CHECK: protocol sum != plaintext sum over U3: the sums DO NOT match ✗"))
    return "\n".join(L)


def _use_color() -> bool:
    return sys.stdout.isatty() and "NO_COLOR" not in os.environ


def run(args: argparse.Namespace) -> int:
    width = terminal_width() if args.width is None else args.width
    if width < MIN_WIDTH:
        print(f"secagg trace: error: --width must be >= {MIN_WIDTH}, got {width}", file=sys.stderr)
        return 2
    try:
        from secagg.protocol import SessionParams

        _check_size(args.clients, args.dim, args.modulus_bits)
        if args.html and args.protocol == "plaintext":
            raise InvalidInput("--html shows the masking protocol step by step; --protocol plaintext has no masks to show "
                               "(drop --html)")
        tr = trace_session(SessionParams.from_args(args, args.clients, args.dim, 1 << args.modulus_bits), args.seed)
    except SecAggError as exc:
        print(f"secagg trace: error: {exc}", file=sys.stderr)
        return 2
    if args.html:
        from secagg.teaching.page import write_html

        try:
            write_html(tr, args.html)
        except OSError as exc:
            print(f"secagg trace: error: cannot write {args.html}: {exc}", file=sys.stderr)
            return 2
    if args.json:
        print(json.dumps(tr, indent=2))
    else:
        print(render(tr, color=_use_color(), width=width))
    res = tr["result"]
    return 0 if res.get("match") else 1
