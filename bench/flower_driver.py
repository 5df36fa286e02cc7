"""Drive one round of Flower's SecAgg+ (flwr 1.42) in process, unchanged, and time it.

Run with the Python of the environment where ``flwr`` is installed (``/tmp/flwr-venv/bin/python``,
see docs/benchmarks.md); it does not import this project. Usage::

    python bench/flower_driver.py --inputs X.npy --num-shares 1.0 --threshold 51 --out result.json

What runs (all of it Flower's own code):

* server: ``SecAggPlusWorkflow(num_shares, reconstruction_threshold, clipping_range, quantization_range,
  modulus_range, max_weight)`` called as Flower calls it, ``workflow(grid, LegacyContext)``, i.e. its
  four stages setup / share keys / collect masked vectors / unmask, the FedAvg strategy's
  ``configure_fit`` / ``aggregate_fit`` included;
* clients: ``secaggplus_mod(msg, ctxt, call_next)`` for every message, with a per-client ``Context``
  holding the mod's state between stages, and ``call_next`` the ClientApp's fit returning the client's
  vector with ``num_examples = 1``;
* transport: a stand-in ``Grid`` whose ``send_and_receive`` hands each message to the addressed
  client's mod and collects the replies, **clients one after another** (as ours runs serially). No gRPC
  and no protobuf serialization: this favours Flower.

Exactness: client ``u`` holds integers ``x_u`` in ``[0, Q)``; Flower gets the floats ``x_u - Q/2`` with
``clipping_range = Q/2`` and ``quantization_range = Q``, so its quantizer is the identity, its
stochastic rounding is exact (the fractional part is 0) and ``num_examples = max_weight`` makes its
weight factor 1. The integer sum is then read back from the dequantized mean:
``sum = n * (mean + Q/2)``, checked against the plaintext sum. The global model Flower sends with the
fit instruction is one float (the clients ignore it), so no model download is added to Flower's time.

Timing: wall-clock of the whole ``workflow(grid, context)`` call; time inside client mods (summed over
clients, per stage); server = wall - clients.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

import numpy as np


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--inputs", required=True, help=".npy (n, d) integer array, values in [0, Q)")
    ap.add_argument("--num-shares", required=True, help="int (share holders incl. self) or float fraction of n")
    ap.add_argument("--threshold", required=True, type=int)
    ap.add_argument("--quantization-range", type=int, default=1 << 16)
    ap.add_argument("--modulus-range", type=int, default=1 << 32)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    try:
        import flwr  # noqa: F401
        from flwr.app import ConfigRecord, Context, Message, RecordDict  # noqa: F401
        from flwr.client.mod.secure_aggregation.secaggplus_mod import secaggplus_mod
        from flwr.common import FitRes, Parameters, Status, Code, ndarrays_to_parameters, parameters_to_ndarrays
        from flwr.common import ArrayRecord
        from flwr.compat.common import recorddict_compat as compat
        from flwr.server.client_manager import SimpleClientManager
        from flwr.server.client_proxy import ClientProxy
        from flwr.server.compat.legacy_context import LegacyContext
        from flwr.server.strategy import FedAvg
        from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
        from flwr.server.workflow.constant import Key as WorkflowKey
        from flwr.server.workflow.secure_aggregation.secaggplus_workflow import SecAggPlusWorkflow
        from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key
    except Exception as exc:  # noqa: BLE001
        json.dump({"ok": False, "error": f"flwr import failed: {exc!r}"}, open(args.out, "w"))
        return 2
    logging.getLogger("flwr").setLevel(logging.ERROR)
    from flwr.supercore.task_identity import TaskIdentity

    # what flwr.server.compat.app sets before running a ServerApp (SUPERLINK node id 1)
    TaskIdentity.task_id = 1
    TaskIdentity.run_id = 1
    TaskIdentity.node_id = 1
    import random

    random.seed(args.seed)
    np.random.seed(args.seed)

    x = np.load(args.inputs)
    n, d = x.shape
    q = int(args.quantization_range)
    clip = q / 2.0
    floats = x.astype(np.float64) - clip
    ns = args.num_shares
    num_shares: int | float = float(ns) if "." in ns else int(ns)

    class Proxy(ClientProxy):
        def __init__(self, nid: int) -> None:
            super().__init__(str(nid))
            self.node_id = nid

        def get_properties(self, ins, timeout, group_id):  # noqa: ANN001, ANN201
            raise NotImplementedError

        def get_parameters(self, ins, timeout, group_id):  # noqa: ANN001, ANN201
            raise NotImplementedError

        def fit(self, ins, timeout, group_id):  # noqa: ANN001, ANN201
            raise NotImplementedError

        def evaluate(self, ins, timeout, group_id):  # noqa: ANN001, ANN201
            raise NotImplementedError

        def reconnect(self, ins, timeout, group_id):  # noqa: ANN001, ANN201
            raise NotImplementedError

    node_ids = [1000 + u for u in range(n)]
    row_of = {nid: u for u, nid in enumerate(node_ids)}
    cm = SimpleClientManager()
    for nid in node_ids:
        cm.register(Proxy(nid))

    def make_ctx(nid: int) -> Context:
        return Context(run_id=1, node_id=nid, node_config={}, state=RecordDict(), run_config={})

    contexts = {nid: make_ctx(nid) for nid in node_ids}

    def call_next(msg, ctxt):  # noqa: ANN001, ANN202 - the ClientApp's fit
        u = row_of[msg.metadata.dst_node_id]
        fitres = FitRes(status=Status(code=Code.OK, message=""), parameters=ndarrays_to_parameters([floats[u]]), num_examples=1, metrics={})
        return Message(compat.fitres_to_recorddict(fitres, False), reply_to=msg)

    stage_client: dict[str, float] = {}
    per_client_max = {"t": 0.0}

    from flwr.common.serde import message_from_proto, message_to_proto

    transport = {"s": 0.0}

    def wire(msg):  # noqa: ANN001, ANN202 - what gRPC does to a message: protobuf out and back in
        t0 = time.perf_counter()
        proto = message_to_proto(msg)
        out = message_from_proto(type(proto).FromString(proto.SerializeToString()))
        transport["s"] += time.perf_counter() - t0
        return out

    class Grid:
        _msg_id = 0

        def send_and_receive(self, messages, *, timeout=None):  # noqa: ANN001, ANN202
            out = []
            for msg in messages:
                Grid._msg_id += 1
                # what the SuperLink does on push: give the message an id (needed by reply_to)
                msg.metadata.__dict__["_message_id"] = f"m{Grid._msg_id}"
                delivered = wire(msg)
                nid = delivered.metadata.dst_node_id
                stage = str(delivered.content.config_records[RECORD_KEY_CONFIGS][Key.STAGE])
                t0 = time.perf_counter()
                reply = secaggplus_mod(delivered, contexts[nid], call_next)
                dt = time.perf_counter() - t0
                stage_client[stage] = stage_client.get(stage, 0.0) + dt
                per_client_max["t"] = max(per_client_max["t"], dt)
                out.append(wire(reply))
            return out

    strategy = FedAvg(fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=n, min_available_clients=n)
    base = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={})
    context = LegacyContext(base, strategy=strategy, client_manager=cm)
    context.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord({WorkflowKey.CURRENT_ROUND: 1})
    context.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(ndarrays_to_parameters([np.zeros(1)]), True)
    workflow = SecAggPlusWorkflow(
        num_shares=num_shares,
        reconstruction_threshold=int(args.threshold),
        clipping_range=clip,
        quantization_range=q,
        modulus_range=int(args.modulus_range),
        max_weight=1.0,
    )
    grid = Grid()
    t0 = time.perf_counter()
    error = None
    try:
        workflow(grid, context)
    except Exception as exc:  # noqa: BLE001
        error = repr(exc)
    wall = time.perf_counter() - t0
    ok = False
    max_err = None
    if error is None:
        params = compat.arrayrecord_to_parameters(context.state.array_records[MAIN_PARAMS_RECORD], keep_input=True)
        arrs = parameters_to_ndarrays(params)
        if len(arrs) == 1 and arrs[0].shape == (d,):
            recovered = n * (arrs[0].astype(np.float64) + clip)
            truth = x.astype(np.float64).sum(axis=0) % args.modulus_range
            max_err = float(np.max(np.abs(recovered - truth)))
            ok = bool(max_err < 1e-3 * max(1.0, n))
        else:
            error = f"aggregate has shapes {[a.shape for a in arrs]} (round did not complete?)"
    clients = sum(stage_client.values())
    wall_no_transport = wall - transport["s"]
    res = {
        "ok": ok and error is None,
        "error": error,
        "n": int(n),
        "d": int(d),
        "num_shares": num_shares,
        "threshold": int(args.threshold),
        "wall_s": wall,
        "clients_s": clients,
        "client_max_s": per_client_max["t"],
        "server_s": max(0.0, wall_no_transport - clients),
        "transport_s": transport["s"],
        "wall_without_transport_s": wall_no_transport,
        "stage_clients_s": stage_client,
        "max_abs_error": max_err,
        "flwr_version": getattr(sys.modules.get("flwr"), "__version__", "?"),
        "pid": os.getpid(),
    }
    with open(args.out, "w") as f:
        json.dump(res, f)
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
