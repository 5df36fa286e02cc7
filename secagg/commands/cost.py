"""``secagg cost``: per-client bytes and expansion factors of one secure aggregation, without running it.

Prints the paper's accounting (Bonawitz et al. CCS'17, Section 7.1) beside the closed-form model of our
wire format (:func:`secagg.cost.our_model`), instantly for any size (``n = 2^14, d = 2^24`` included).
"""

from __future__ import annotations

import argparse
import json
import math
import sys

from secagg.cost import our_model, paper_model, paper_modulus
from secagg.errors import InvalidInput, SecAggError

NAME = "cost"
HELP = "per-client bytes and expansion factor: the paper's model beside ours (no protocol run)"
from secagg.rounds import ROUNDS as _ROUNDS  # noqa: E402


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--clients", "-n", type=int, required=True, help="number of clients n")
    p.add_argument("--dim", "-d", type=int, required=True, help="vector length d")
    p.add_argument("--input-bits", "-b", type=int, default=16, help="bits per input element (default 16)")
    p.add_argument("--modulus-bits", type=int, default=None,
                   help="ring Z_M with M = 2^bits (default input-bits + ceil(log2 n): the sum cannot wrap)")
    p.add_argument("--graph", choices=("complete", "secagg+"), default="complete")
    p.add_argument("--neighbours", "-k", type=int, default=None, help="SecAgg+ degree k (default: parameter finder)")
    p.add_argument("--corrupt-fraction", type=float, default=0.05, help="SecAgg+ gamma (default 0.05)")
    p.add_argument("--dropout-rate", type=float, default=0.0, help="fraction of clients that drop (default 0)")
    p.add_argument("--drop-round", choices=_ROUNDS, default="masked-input",
                   help="round at which they drop (default masked-input: after sharing keys, the costly case)")
    p.add_argument("--variant", choices=("honest-but-curious", "active"), default="honest-but-curious")
    p.add_argument("--consistency-view", choices=("full", "window"), default="full",
                   help="active SecAgg+: the U3 each client signs, in full (an n-bit bitmap) or as its window of the "
                        "ring with Merkle paths (O(k + log n) bytes)")
    p.add_argument("--protocol", choices=("bonawitz", "plaintext"), default="bonawitz",
                   help="bonawitz (default) or plaintext: the clients send their inputs in the clear (the baseline "
                        "the expansion factor is measured against)")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _fmt_bytes(x: float) -> str:
    for unit, f in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if x >= f:
            return f"{x / f:,.2f} {unit}"
    return f"{x:,.0f} B"


def run(args: argparse.Namespace) -> int:
    n, d, b = args.clients, args.dim, args.input_bits
    try:
        if n < 2 or d < 1 or b < 1:
            raise ValueError("need --clients >= 2, --dim >= 1, --input-bits >= 1")
        if not 0.0 <= args.dropout_rate < 1.0:
            raise ValueError("--dropout-rate must be in [0, 1)")
        mbits = args.modulus_bits if args.modulus_bits is not None else b + (n - 1).bit_length()
        if not 1 <= mbits <= 64:
            raise ValueError(f"modulus bits {mbits} outside [1, 64]")
        modulus = 1 << mbits
        k = n - 1
        graph = "complete"
        threshold_note = ""
        if args.protocol == "plaintext" and (args.graph != "complete" or args.variant != "honest-but-curious"
                                             or args.neighbours is not None):
            raise InvalidInput("--protocol plaintext has no --graph, --neighbours or --variant (clients send in the clear)")
        if args.graph == "secagg+":
            if args.neighbours is not None:
                k = args.neighbours
                if k % 2 or not 2 <= k < n:  # the protocol's Harary graph needs the same (secagg.graph)
                    raise InvalidInput(f"Harary degree k must be even with 2 <= k < n = {n}, got {k}")
                graph = "secagg+"
            else:
                from secagg.graph import find_secagg_plus_params

                adversary = "active" if args.variant == "active" else "semi-honest"
                found = find_secagg_plus_params(n, args.corrupt_fraction, args.dropout_rate, adversary)
                if found is None:
                    threshold_note = " (no sparse k qualifies: complete graph)"
                else:
                    k, t = found
                    graph = "secagg+"
                    threshold_note = f" (t = {t})"
        dropped = int(math.floor(args.dropout_rate * n))
        view = getattr(args, "consistency_view", "full")
        if view == "window" and (args.variant != "active" or graph != "secagg+"):
            raise InvalidInput("--consistency-view window applies to --variant active on a SecAgg+ graph"
                               + (threshold_note if graph != "secagg+" else ""))
        ours = our_model(n, d, modulus, k=k, variant=args.variant, drops={args.drop_round: dropped}, input_bits=b,
                         protocol=args.protocol, consistency_view=view)
        paper = paper_model(n, d, b)
    except (SecAggError, ValueError) as exc:
        print(f"secagg cost: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({
            "clients": n, "dim": d, "input_bits": b, "modulus_bits": mbits, "graph": graph, "k": k,
            "variant": args.variant, "protocol": args.protocol, "dropped": dropped, "drop_round": args.drop_round,
            "consistency_view": view,
            "paper": {"traffic_bytes_per_client": paper.traffic_bytes, "element_bits": paper.element_bits,
                      "expansion": paper.expansion, "expansion_upload_download": paper.expansion},
            "ours": {"upload_per_client": ours.upload_per_client, "download_per_client": ours.download_per_client,
                     "expansion_upload": ours.expansion_upload, "expansion_traffic": ours.expansion_traffic,
                     "expansion_upload_download": ours.expansion_traffic,
                     "exact": ours.exact, "total_up": ours.total_up, "total_down": ours.total_down,
                     "by_round": ours.by_round},
        }, indent=2))
        return 0
    raw = d * b / 8
    setting = (f"{graph} graph, k = {k}{threshold_note}, {args.variant}" if args.protocol == "bonawitz"
               else "plaintext protocol (inputs sent in the clear)")
    print(f"configuration: n = {n} clients, d = {d}, {b}-bit inputs ({_fmt_bytes(raw)} raw), M = 2^{mbits}, "
          f"{setting}, {dropped} dropped at {args.drop_round if dropped else '-'}")
    print()
    head = f"{'model':<34}{'upload':>12}{'download':>12}{'up+down':>12}{'expansion up+down':>19}{'expansion upload':>18}"
    print(head)
    print("-" * len(head))
    print(f"{'paper (Bonawitz et al. 2017, 7.1)':<34}{'-':>12}{'-':>12}{_fmt_bytes(paper.traffic_bytes):>12}"
          f"{paper.expansion:>18.2f}x{'-':>18}")
    tot = ours.upload_per_client + ours.download_per_client
    label = ("ours (plaintext baseline)" if args.protocol == "plaintext" else
             "ours (exact wire format)" if ours.exact else "ours (expected, sparse + drops)")
    print(f"{label:<34}{_fmt_bytes(ours.upload_per_client):>12}{_fmt_bytes(ours.download_per_client):>12}"
          f"{_fmt_bytes(tot):>12}{ours.expansion_traffic:>18.2f}x{ours.expansion_upload:>17.2f}x")
    print()
    print(f"paper: the cost model's own figure, Bonawitz et al.'s accounting: 2n a_K + (5n-4) a_S + d b bits per user "
          f"(upload and download together), a_K = a_S = 256, b = {b} + ceil(log2 n) = {paper.element_bits}; "
          f"expansion = that / ({b} d) bits.")
    print("ours: bytes of a client that completes every round (messages of secagg.messages, headers, ids, "
          "AES-GCM nonces/tags, 33-byte shares included); expansion up+down = (upload + download) / raw input, "
          "expansion upload = upload / raw input.")
    return 0
