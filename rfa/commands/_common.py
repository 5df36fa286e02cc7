"""What ``rfa compare`` and ``rfa train`` share: the flags of one federated configuration, their
validation and defaults, the registries' names for ``--help``, and the mapping onto :class:`FLConfig`.

Names (aggregators, corruptions, data sets, models, partitions) are read from the registries through
the small accessors below, never from a copied list, so a new aggregator or corruption appears in
``--help`` and in validation without touching the commands.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable

from rfa import jobs

DEFAULT_ORACLE = "modular"
ORACLES = ("modular", "ideal", "secagg")
PARAMS_FORMAT = "key=value,key=value (or a JSON object)"
# flags that change how a command runs, never what it computes (a resumed sweep may change them)
OPERATIONAL = frozenset({"jobs", "no_progress", "no_plots", "out", "resume", "overwrite", "config", "quiet", "ray_address"})


# ---------------------------------------------------------------------------------- registry accessors
def aggregator_names() -> tuple[str, ...]:
    from rfa import aggregators

    return tuple(aggregators.NAMES)


def aggregator_target(name: str) -> Callable[..., Any] | None:
    """The constructor whose signature defines ``name``'s parameters (None: unknown, accept any)."""
    from rfa import aggregators

    return aggregators.REGISTRY.get(name)


def aggregator_is_secure(name: str) -> bool:
    """Whether ``name`` runs through the secure average oracle (read from the class)."""
    cls = aggregator_target(name)
    if cls is None:
        raise jobs.UsageError(f"unknown aggregator {name!r} (choose one of {', '.join(aggregator_names())})")
    return bool(cls.secure_compatible)


def corruption_names() -> tuple[str, ...]:
    from rfa.fl import attacks

    return tuple(attacks.CORRUPTIONS)


def corruption_target(name: str) -> Callable[..., Any] | None:
    """The constructor of corruption ``name`` when the corruptions are one class each (None: accept any)."""
    from rfa.fl import attacks

    return attacks.REGISTRY.get(name)


def dataset_names() -> tuple[str, ...]:
    from rfa.fl import data

    return tuple(data.DATASETS)


def model_names() -> tuple[str, ...]:
    from rfa.fl import models

    return tuple(models.MODELS)


def partition_names() -> tuple[str, ...]:
    from rfa.fl import partition

    return tuple(partition.PARTITIONS)


def names_epilog() -> str:
    """The valid names for ``--help`` (read from the registries)."""
    secure = [a for a in aggregator_names() if aggregator_is_secure(a)]
    plain = [a for a in aggregator_names() if not aggregator_is_secure(a)]
    return "\n".join([
        "valid names:",
        f"  aggregators (secure):          {', '.join(secure)}",
        f"  aggregators (plaintext-only):  {', '.join(plain)}",
        f"  corruptions:                   {', '.join(corruption_names())}",
        f"  data sets:                     {', '.join(dataset_names())}",
        f"  models:                        {', '.join(model_names())}",
        f"  partitions:                    {', '.join(partition_names())}",
        f"  oracles:                       {', '.join(ORACLES)}",
        f"*-params flags take {PARAMS_FORMAT}; an unknown name is an error listing the accepted ones.",
    ])


# ---------------------------------------------------------------------------------- the shared flags
def _name_arg(names: Callable[[], tuple[str, ...]], what: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        allowed = names()
        if text not in allowed and not (what == "data set" and text.startswith("leaf:")):
            raise argparse.ArgumentTypeError(f"unknown {what} {text!r}; choose one of {', '.join(allowed)}")
        return text

    parse.__name__ = what
    return parse


def add_config_arguments(p: argparse.ArgumentParser, base: Any) -> None:
    """The flags of one federated configuration, shared by ``compare`` and ``train``, validated when
    parsed. ``base`` (an :class:`FLConfig`) supplies the defaults shown in ``--help``; ``None`` means
    "the base configuration's value"."""
    g = p.add_argument_group("configuration (defaults: the quick study)")
    g.add_argument("--data", type=_name_arg(dataset_names, "data set"), default=None,
                   help=f"data set (default {base.dataset}; leaf:DIR for LEAF JSON)")
    g.add_argument("--data-dir", default=None, help="folder of an optional data set (Fashion-MNIST idx files, LEAF)")
    g.add_argument("--model", type=_name_arg(model_names, "model"), default=None, help=f"model (default {base.model})")
    g.add_argument("--partition", type=_name_arg(partition_names, "partition"), default=None,
                   help=f"client partition (default {base.partition})")
    g.add_argument("--dirichlet-alpha", type=jobs.float_arg(0, None, lo_open=True), default=None,
                   help=f"Dirichlet label-skew concentration > 0 (default {base.dirichlet_alpha:g}; dirichlet partition only)")
    g.add_argument("--clients", type=jobs.int_arg(1), default=None,
                   help=f"n, clients of an iid/dirichlet partition (default {base.num_clients})")
    g.add_argument("--clients-per-round", type=jobs.int_arg(1), default=None,
                   help=f"m <= n, clients sampled per round (default {base.clients_per_round})")
    g.add_argument("--rounds", type=jobs.int_arg(1), default=None, help=f"T, rounds (default {base.rounds})")
    g.add_argument("--local-epochs", type=jobs.float_arg(0, None, lo_open=True), default=None,
                   help=f"local passes over each client's data (default {base.local_epochs:g})")
    g.add_argument("--local-steps", type=jobs.int_arg(1), default=None,
                   help="tau, local SGD steps per round instead of epochs (default: use --local-epochs)")
    g.add_argument("--batch-size", type=jobs.int_arg(1), default=None, help=f"minibatch size (default {base.batch_size})")
    g.add_argument("--lr", type=jobs.float_arg(0, None, lo_open=True), default=None,
                   help=f"gamma, local step size > 0 (default {base.lr:g})")
    g.add_argument("--eval-every", type=jobs.int_arg(1), default=None,
                   help=f"evaluate every so many rounds (default {base.eval_every})")
    g.add_argument("--oracle", default=DEFAULT_ORACLE, choices=ORACLES,
                   help=f"secure average oracle (default {DEFAULT_ORACLE}: bit-identical to the faithful secagg protocol "
                        "and the same on every machine; ideal: plain weighted mean, bytes priced by the cost model; "
                        "secagg: the real protocol, slow)")
    g.add_argument("--dropout-rate", type=jobs.float_arg(0, 1, hi_open=True), default=0.0,
                   help="each client of a secure average drops out with this probability, in a protocol round drawn "
                        "uniformly (default 0; modular and secagg oracles; reported in the results)")
    g.add_argument("--device", default="auto", help="auto (CUDA when available, default) | cpu | cuda | cuda:N")


def add_output_arguments(p: argparse.ArgumentParser, command: str, *, resumable: bool) -> None:
    g = p.add_argument_group("output")
    g.add_argument("--out", default=None,
                   help=f"output folder (default runs/{command}-<UTC timestamp>); must be new or empty")
    if resumable:
        g.add_argument("--resume", default=None, metavar="DIR",
                       help="finish the interrupted sweep saved in DIR (its saved flags are reused; runs already "
                            "recorded are skipped)")
    g.add_argument("--overwrite", action="store_true",
                   help="replace the results in a non-empty --out (other files there are left alone)")


_FIELDS = (("data", "dataset"), ("data_dir", "data_dir"), ("model", "model"), ("partition", "partition"),
           ("dirichlet_alpha", "dirichlet_alpha"), ("clients", "num_clients"), ("clients_per_round", "clients_per_round"),
           ("rounds", "rounds"), ("local_epochs", "local_epochs"), ("local_steps", "local_steps"),
           ("batch_size", "batch_size"), ("lr", "lr"), ("eval_every", "eval_every"), ("device", "device"))


def config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """FLConfig fields set by the shared flags (``None`` flags keep the base value)."""
    over = {field: getattr(args, flag) for flag, field in _FIELDS if getattr(args, flag, None) is not None}
    if "local_steps" in over:
        over["local_epochs"] = None
    if over.get("dataset") == "shakespeare":
        over.setdefault("partition", "natural")
        over.setdefault("model", "lstm")
    return over


def oracle_params(args: argparse.Namespace, user: dict[str, Any] | None = None) -> dict[str, Any]:
    """The oracle's parameters: ``dropout_rate`` from ``--dropout-rate`` (refused with the ideal oracle,
    which has no protocol to drop out of), then any user parameters."""
    out: dict[str, Any] = {}
    if args.dropout_rate:
        if args.oracle == "ideal":
            raise jobs.UsageError("--dropout-rate needs a secure protocol; the ideal oracle has none "
                                  "(use --oracle modular or secagg)")
        out["dropout_rate"] = float(args.dropout_rate)
    out.update(user or {})
    return out


def warn(command: str, message: str) -> None:
    """A one-line warning on stderr (a flag that does nothing in this configuration)."""
    print(f"{command}: warning: {message}", file=sys.stderr)


def bind_aggregator_params(name: str, params: dict[str, Any]) -> dict[str, Any]:
    target = aggregator_target(name)
    return params if target is None else jobs.bind_params(params, target, what=f"aggregator {name!r}")


def bind_corruption_params(name: str, params: dict[str, Any]) -> dict[str, Any]:
    target = corruption_target(name)
    return params if target is None else jobs.bind_params(params, target, what=f"corruption {name!r}", finite=False)


def bind_oracle_params(oracle: str, params: dict[str, Any]) -> dict[str, Any]:
    """Check ``params`` against the oracle's constructor and, for the options it passes on, the
    keyword parameters of :func:`secagg.average.secure_average` that the oracle does not set itself."""
    import inspect

    from secagg.average import secure_average

    from rfa.oracle import ModularOracle, SecAggOracle

    cls = SecAggOracle if oracle == "secagg" else ModularOracle
    sig = inspect.signature(cls, eval_str=True)
    own = [p for p in sig.parameters.values() if p.kind is p.KEYWORD_ONLY]
    if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        taken = {p.name for p in own} | {"vectors", "weights", "max_weight", "backend", "clip", "dropouts"}
        own += [p for p in inspect.signature(secure_average, eval_str=True).parameters.values()
                if p.kind is p.KEYWORD_ONLY and p.name not in taken]

    def target(**kw: Any) -> None: ...

    target.__signature__ = inspect.Signature([p.replace(kind=p.KEYWORD_ONLY) for p in own])  # type: ignore[attr-defined]
    return jobs.bind_params(params, target, what=f"the {oracle} oracle")


def resolve_resume(args: argparse.Namespace, saved: dict[str, Any], defaults: dict[str, Any]) -> argparse.Namespace:
    """For ``--resume``: take every result-affecting flag from the saved arguments; one the user also
    gave with a different value is an error (the sweep would no longer be the one saved)."""
    differing = []
    for k, v in saved.items():
        if k in OPERATIONAL or k.startswith("_") or not hasattr(args, k):
            continue
        cur = getattr(args, k)
        if cur != defaults.get(k) and _plain(cur) != v:
            differing.append(k.replace("_", "-"))
        setattr(args, k, v)
    if differing:
        raise jobs.UsageError(f"--resume continues the saved sweep; drop --{', --'.join(differing)} "
                              "(or start a new one with --out)")
    return args


def resume_manifest(args: argparse.Namespace, name: str, command: str) -> tuple[Any, dict[str, Any]]:
    """``--resume DIR``: the folder (checked by :func:`rfa.jobs.prepare_out_dir`) and its manifest, refused
    with a :class:`~rfa.jobs.UsageError` when the folder holds another command's run (``command`` is the
    manifest's command, or its first words)."""
    import json

    out = jobs.prepare_out_dir(getattr(args, "out", None), name, resume=args.resume)
    try:
        saved = json.loads((out / jobs.RunStore.MANIFEST).read_text())
    except (OSError, ValueError):
        raise jobs.UsageError(f"--resume {out}: its {jobs.RunStore.MANIFEST} cannot be read") from None
    held = str(saved.get("command", ""))
    if held != command and not held.startswith(command + " "):
        raise jobs.UsageError(f"--resume {out}: that folder holds a {held!r} run, not {command!r}")
    return out, saved


def _plain(v: Any) -> Any:
    """A flag value as stored in a manifest (JSON: tuples become lists)."""
    if isinstance(v, tuple):
        return list(v)
    return v


def saved_args(args: argparse.Namespace) -> dict[str, Any]:
    """The arguments to keep in a manifest (everything but internals and operational flags)."""
    return {k: _plain(v) for k, v in vars(args).items() if not k.startswith("_") and k not in OPERATIONAL}
