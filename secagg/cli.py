"""``secagg`` command line: one subcommand per module under :mod:`secagg.commands`.

Each command module exposes ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

COMMANDS = ("simulate", "cost", "trace")
MAX_SEED = 1 << 256


def seed_arg(text: str) -> int:
    """argparse ``type=`` for ``--seed``: an integer in ``[0, 2**256)`` (the range :class:`secagg.drbg.Drbg`
    accepts and numpy's ``SeedSequence`` needs), else a clean usage error instead of a traceback."""
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if not 0 <= value < MAX_SEED:
        raise argparse.ArgumentTypeError(f"seed must lie in [0, 2**256), got {text}")
    return value


def build_parser(prog: str, package: str, commands: Sequence[str], description: str, *,
                 parser_class: type[argparse.ArgumentParser] = argparse.ArgumentParser) -> argparse.ArgumentParser:
    """An argparse parser (of ``parser_class``, its subcommands too) with one subcommand per
    ``{package}.{name}`` module in ``commands``."""
    parser = parser_class(prog=prog, description=description)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in commands:
        try:
            mod = importlib.import_module(f"{package}.{name}")
        except ModuleNotFoundError as exc:  # a command not built yet in this checkout
            if exc.name != f"{package}.{name}":
                raise
            continue
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def run_cli(parser: argparse.ArgumentParser, argv: list[str] | None) -> int:
    args = parser.parse_args(argv)
    return int(args._run(args) or 0)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser("secagg", "secagg.commands", COMMANDS, "Secure aggregation (Bonawitz et al. CCS'17, SecAgg+): simulate, cost, trace.")
    return run_cli(parser, argv)


if __name__ == "__main__":
    sys.exit(main())
