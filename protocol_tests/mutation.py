"""Mutation check of the security-critical lines: do the tests notice when a guard is broken?

Run from the repository root (a few minutes on two cores; not part of the test suite)::

    python -m protocol_tests.mutation            # every mutation, then the kill rate
    python -m protocol_tests.mutation --list     # what each mutation breaks
    python -m protocol_tests.mutation --only client-first-signature-only,prg-accepts-M

Each mutation replaces one exact snippet of ``secagg/`` (signature checks, share selection,
reconstruction, domain separation, PRG rejection, DRBG) in a scratch copy of the repository (a
temporary directory; the checkout is never touched) and runs the tests that should catch it. A
mutation is *killed* when those tests fail, *survives* when they pass. A snippet that no longer occurs
exactly once is reported as *stale* (the code moved: update the list) and counts as not killed. A
mutation marked *equivalent* (provably unable to change behaviour; the reason is listed) is run and
reported but left out of the kill rate. The unmutated copy is run first: if its tests fail, nothing is
measured.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Mutation", "MUTATIONS", "run_mutation", "main"]

ROOT = Path(__file__).resolve().parent.parent

_ADV = "protocol_tests/test_secagg_adversary.py"
_MUT = "protocol_tests/test_secagg_mutants.py"
_ROB = "protocol_tests/test_secagg_robust.py"
_REV = "protocol_tests/test_secagg_review.py"
_KEYS = "protocol_tests/test_secagg_keys.py"
_PRG = "protocol_tests/test_secagg_prg.py"
_PROTO = "protocol_tests/test_secagg_protocol.py"
_MSG = "protocol_tests/test_secagg_messages.py"
_SHAMIR = "protocol_tests/test_secagg_shamir.py"
_SPLUS = "protocol_tests/test_active_splus_consistency.py"
_WINDOW = "protocol_tests/test_active_splus_window.py"


@dataclass(frozen=True)
class Mutation:
    """Replace ``old`` (must occur exactly once in ``path``) by ``new``; ``tests`` should then fail."""

    name: str
    what: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]
    equivalent: str = ""  # why the mutant cannot change behaviour (then it is reported, not scored)


MUTATIONS: tuple[Mutation, ...] = (
    # --- signature checks -------------------------------------------------------------------------
    Mutation("client-first-signature-only", "client verifies only the first forwarded round-3 signature",
             "secagg/client.py", "for v, sig in msg.signatures:", "for v, sig in msg.signatures[:1]:", (_MUT, _ADV, _SPLUS)),
    Mutation("consistency-not-session-bound", "the round-3 signed payload omits the session",
             "secagg/messages.py", 'return b"secagg/consistency/v1" + session + _ids_bytes',
             'return b"secagg/consistency/v1" + _ids_bytes', (_MUT, _ADV)),
    Mutation("client-skips-key-signatures", "client does not verify the signatures in the key list",
             "secagg/client.py", "keys.verify_signature(pk, e.signature, advertise_payload(self.session, e.id, e.c_pk, e.s_pk))",
             "pass", (_ADV, _MUT)),
    Mutation("server-skips-advertise-signatures", "server forwards round-0 keys without verifying their signature",
             "secagg/server.py",
             'keys.verify_signature(self.pki.get(cid, b""), msg.signature, advertise_payload(self.session, cid, msg.c_pk, msg.s_pk))',
             "pass", (_ROB,)),
    Mutation("server-skips-consistency-signatures", "server accepts round-3 signatures without verifying them",
             "secagg/server.py", 'keys.verify_signature(self.pki.get(cid, b""), msg.signature, self._signed_u3_for(cid))',
             "pass", (_MUT, _ADV)),
    Mutation("server-skips-commitment-signature", "server accepts a commitment without verifying its signature",
             "secagg/server.py",
             'keys.verify_signature(self.pki.get(cid, b""), msg.commitment_signature, commitment_payload(self.session, cid, msg.commitment))',
             "pass", (_ROB,)),
    # --- share selection --------------------------------------------------------------------------
    Mutation("same-sharing-randomness", "s_sk and b are shared with the same polynomial coefficients",
             "secagg/client.py", 'self._drbg.child(b"shamir-b")', 'self._drbg.child(b"shamir-s_sk")', (_MUT, _SHAMIR)),
    Mutation("client-reveals-both-shares", "client answers a request for both shares of one peer",
             "secagg/client.py", "        if both:\n", "        if False:\n", (_ADV,)),
    Mutation("client-accepts-declared-dead", "client accepts a request that declares it dropped",
             "secagg/client.py", "if self.id in drop or self.id not in surv:", "if False:", (_MUT, _ADV)),
    Mutation("client-ignores-signed-u3", "client does not compare the request with the U3 it signed",
             "secagg/client.py", "if surv != u3 & u2:", "if False:", (_MUT, _ADV)),
    Mutation("no-early-reconstructibility-check", "server asks for shares of secrets it can no longer reconstruct",
             "secagg/server.py", '(else abort now, before asking)."""\n', '(else abort now, before asking)."""\n        return\n',
             (_MUT, _PROTO)),
    Mutation("server-accepts-mismatched-response", "server accepts a response that does not answer its request",
             "secagg/server.py", "if tuple(v for v, _ in msg.b_shares) != req.survivors", "if False and tuple(v for v, _ in msg.b_shares) != req.survivors",
             (_MUT, _ADV, _ROB)),
    Mutation("server-skips-low-order-probe", "server forwards small-order public keys",
             "secagg/server.py", "_low_order_probe().agree(pk)", "pass", (_ROB,)),
    Mutation("server-skips-duplicate-keys", "server forwards duplicated public keys",
             "secagg/server.py", "if count[c_pk] > 1 or count[s_pk] > 1:", "if False:", (_ROB,)),
    # --- active SecAgg+: the consistency round in two-hop neighbourhoods -------------------------
    Mutation("splus-client-skips-per-peer-count", "client reveals without t signers among each peer's closed neighbourhood",
             "secagg/client.py", 'rules.check_signers("unmasking", self.graph, u2, signers, self.threshold, self.id)', "pass",
             (_SPLUS,)),
    Mutation("splus-signer-outside-closed-neighbourhood", "a signer anywhere counts for every peer (not only N(v) ∪ {v})",
             "secagg/rules.py", "c = len(graph.closed_neighbourhood(v) & signers)", "c = len(signers)", (_SPLUS,)),
    Mutation("splus-client-accepts-far-signers", "client accepts signatures from outside its two-hop neighbourhood",
             "secagg/client.py", "                if outside:\n                    raise ProtocolViolation(f\"signatures of clients",
             "                if False:\n                    raise ProtocolViolation(f\"signatures of clients", (_SPLUS,)),
    Mutation("splus-server-forwards-all-signatures", "server forwards every signature of U4 (a Theta(n) download)",
             "secagg/server.py", 'signers = rules.signers_for(self.graph, u, self.sets["U4"])', 'signers = self.sets["U4"]',
             (_SPLUS,)),
    Mutation("splus-bitmap-ignores-padding", "the U3 bitmap parser accepts nonzero padding bits (two encodings)",
             "secagg/messages.py", "if bits[n:].any():", "if False:", (_SPLUS, _MSG)),
    # --- active SecAgg+, window view: U3 as a Merkle root -------------------------------------------
    Mutation("window-leaves-may-disagree", "client accepts leaves whose paths lead to different roots (signs the first)",
             "secagg/survivor_tree.py", "        elif h != root:\n", "        elif False:\n", (_WINDOW,)),
    Mutation("window-client-skips-gap-rule", "client signs a window with k/2 positions and no survivor",
             "secagg/client.py", 'rules.check_window_policy("consistency-check", self.graph, self.id, s3, self.threshold)',
             "pass", (_WINDOW,)),
    Mutation("window-tree-not-session-bound", "the Merkle leaves are hashed without the session",
             "secagg/survivor_tree.py", 'return _h(_LEAF_DOMAIN, session, j.to_bytes(4, "big"), leaf)',
             'return _h(_LEAF_DOMAIN, j.to_bytes(4, "big"), leaf)', (_WINDOW,)),
    Mutation("splus-threshold-allows-interleaving", "active SecAgg+ accepts t = k/2 + 1 (2t > k + 1 only)",
             "secagg/rules.py", "    if 2 * int(threshold) <= int(k) + 2:", "    if 2 * int(threshold) <= int(k) + 1:",
             (_WINDOW, _REV)),
    Mutation("window-padding-accepted", "client accepts bits set past the last ring position",
             "secagg/survivor_tree.py", 'if int.from_bytes(leaf, "little") >> used:', "if False:", (_WINDOW,)),
    Mutation("window-leaf-index-not-hashed", "a leaf's hash does not bind its index (leaves can be swapped)",
             "secagg/survivor_tree.py", 'return _h(_LEAF_DOMAIN, session, j.to_bytes(4, "big"), leaf)',
             "return _h(_LEAF_DOMAIN, session, leaf)", (_WINDOW,),
             equivalent="a leaf's position is already bound by its path (left/right order of every node hash) and "
                        "leaf and node hashes are domain-separated; the index in the leaf hash is defence in depth"),
    # --- reconstruction ---------------------------------------------------------------------------
    Mutation("reconstruct-from-t-only", "server reconstructs from the t smallest ids, ignoring the others",
             "secagg/reconstruct.py", "    if r > t:\n", "    if False:\n", (_ROB,)),
    Mutation("reconstruct-check-always-passes", "the dual-code consistency check never fires",
             "secagg/reconstruct.py", "if sum(wi * yi for wi, yi in zip(w, ys)) % prime != 0:", "if False:", (_ROB,)),
    Mutation("decoder-radius-too-wide", "the decoder accepts more than floor((r - t) / 2) disagreements",
             "secagg/reconstruct.py", "if wrong > (r - t) // 2:", "if wrong > r - t:", (_ROB,),
             equivalent="Gao's exact division g = f v forces v(x_i) = 0 at every disagreement and deg v <= (r - t) / 2, "
                        "so the explicit count is a defensive re-check"),
    Mutation("challenge-ignores-shares", "the check's challenge does not depend on the shares",
             "secagg/reconstruct.py", "    for part in shares:\n        h.update(part)\n", "", (_ROB,)),
    Mutation("no-s_pk-check", "a reconstructed s_sk is not checked against s_pk",
             "secagg/server.py", "if sk.public_bytes != self.keys[v][1]:", "if False:", (_ROB, _ADV)),
    Mutation("no-commitment-check", "a reconstructed b_u is not checked against its commitment",
             "secagg/server.py", "if self.commit_self_masks and reconstruct.self_mask_commitment(", "if False and reconstruct.self_mask_commitment(",
             (_ROB,)),
    Mutation("shamir-wrong-lagrange", "Lagrange coefficients drop the x_j factor",
             "secagg/shamir.py", "dens = [xj * math.prod(", "dens = [1 * math.prod(", (_SHAMIR,)),
    # --- domain separation ------------------------------------------------------------------------
    Mutation("prg-self-equals-pairwise", "self masks and pairwise masks share a PRG domain",
             "secagg/prg.py", 'PURPOSE_SELF = "self-mask"', 'PURPOSE_SELF = "pairwise"', (_PRG, _PROTO)),
    Mutation("kdf-ignores-purpose", "HKDF info omits the purpose (channel key == mask seed)",
             "secagg/keys.py", 'return _lp(_KDF_LABEL) + _lp(purpose.encode("utf-8")) + _lp(session)',
             "return _lp(_KDF_LABEL) + _lp(session)", (_KEYS, _PROTO)),
    Mutation("kdf-ignores-session", "HKDF info omits the session (keys repeat across sessions)",
             "secagg/keys.py", 'return _lp(_KDF_LABEL) + _lp(purpose.encode("utf-8")) + _lp(session)',
             'return _lp(_KDF_LABEL) + _lp(purpose.encode("utf-8"))', (_KEYS, _PROTO)),
    Mutation("share-aad-ignores-receiver", "share ciphertexts are not bound to their receiver",
             "secagg/messages.py", 'b"secagg/share/v1" + _SHARE_HDR.pack(sender, receiver, session)',
             'b"secagg/share/v1" + _SHARE_HDR.pack(sender, sender, session)',
             (_MUT, _ADV, _MSG)),
    # --- PRG rejection and DRBG -------------------------------------------------------------------
    Mutation("prg-accepts-M", "PRG rejection sampling accepts the value M",
             "secagg/prg.py", "np.greater_equal(words, mm, out=rej)", "np.greater(words, mm, out=rej)", (_PRG,)),
    Mutation("drbg-randbelow-off-by-one", "Drbg.randbelow may return n",
             "secagg/drbg.py", "            if v < n:\n                return v", "            if v <= n:\n                return v",
             (_SHAMIR, _KEYS, _PROTO)),
    Mutation("drbg-child-ignores-label", "every Drbg child is the same stream",
             "secagg/drbg.py", "c._init(_TAG_CHILD + self._key, label)", 'c._init(_TAG_CHILD + self._key, b"")', (_KEYS, _PROTO, _MUT)),
)


def _copy_tree(dst: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis", ".pytest_cache")
    for name in ("secagg", "protocol_tests", "docs"):  # docs: tests hold its tables to the code
        shutil.copytree(ROOT / name, dst / name, ignore=ignore)
    shutil.copy2(ROOT / "pyproject.toml", dst / "pyproject.toml")


def _pytest(dst: Path, tests: tuple[str, ...], timeout: float) -> tuple[int, str]:
    env = dict(os.environ, PYTHONPATH=str(dst), PYTHONDONTWRITEBYTECODE="1", HYPOTHESIS_PROFILE="ci")
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", *tests]
    try:
        out = subprocess.run(cmd, cwd=dst, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return -1, "timeout"
    lines = [ln for ln in out.stdout.splitlines() if ln.strip()]
    return out.returncode, lines[-1] if lines else out.stderr.strip()[-200:]


def _check_isolated(dst: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(dst))
    got = subprocess.run([sys.executable, "-c", "import secagg; print(secagg.__file__)"], cwd=dst, env=env,
                         capture_output=True, text=True, check=True).stdout.strip()
    if not Path(got).resolve().is_relative_to(dst.resolve()):
        raise SystemExit(f"the scratch copy is not the one imported ({got}); cannot measure mutations")


def run_mutation(m: Mutation, dst: Path, timeout: float = 300.0) -> tuple[str, str]:
    """Apply ``m`` in the scratch copy ``dst``, run its tests, restore; -> (outcome, pytest summary)."""
    path = dst / m.path
    original = path.read_text()
    if original.count(m.old) != 1:
        return "stale", f"snippet occurs {original.count(m.old)} times in {m.path}"
    path.write_text(original.replace(m.old, m.new))
    try:
        rc, summary = _pytest(dst, m.tests, timeout)
    finally:
        path.write_text(original)
    if rc == 0:
        return "survived", summary
    return "killed", summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m protocol_tests.mutation", description=__doc__.split("\n\n")[0])
    ap.add_argument("--list", action="store_true", help="list the mutations and exit")
    ap.add_argument("--only", default=None, help="comma-separated mutation names")
    args = ap.parse_args(argv)
    chosen = MUTATIONS
    if args.only:
        names = set(args.only.split(","))
        unknown = names - {m.name for m in MUTATIONS}
        if unknown:
            ap.error(f"unknown mutations: {sorted(unknown)}")
        chosen = tuple(m for m in MUTATIONS if m.name in names)
    if args.list:
        for m in chosen:
            print(f"{m.name:38s} {m.path:22s} {m.what}{' (equivalent)' if m.equivalent else ''}")
        return 0
    with tempfile.TemporaryDirectory(prefix="secagg-mutation-") as tmp:
        dst = Path(tmp)
        _copy_tree(dst)
        _check_isolated(dst)
        tests = tuple(sorted({t for m in chosen for t in m.tests}))
        rc, summary = _pytest(dst, tests, 900.0)
        if rc != 0:
            print(f"the unmutated tests fail ({summary}); fix them first", file=sys.stderr)
            return 2
        killed = scored = 0
        for m in chosen:
            t0 = time.perf_counter()
            outcome, summary = run_mutation(m, dst)
            if m.equivalent:
                summary = f"{summary} [equivalent: {m.equivalent}]"
            else:
                scored += 1
                killed += outcome == "killed"
            print(f"{outcome:9s} {m.name:38s} {time.perf_counter() - t0:6.1f} s  {summary}", flush=True)
    rate = 100.0 * killed / scored if scored else 100.0
    print(f"kill rate: {killed}/{scored} = {rate:.0f}% ({len(chosen) - scored} equivalent mutants not scored)")
    return 0 if killed == scored else 1


if __name__ == "__main__":
    sys.exit(main())
