"""``rfa`` command line: one subcommand per module under :mod:`rfa.commands`.

Each command module exposes ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import sys

from secagg.cli import build_parser, run_cli

COMMANDS = ("compare", "train", "leakage")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser("rfa", "rfa.commands", COMMANDS, "Robust federated aggregation over secure aggregation: compare, train, leakage.")
    return run_cli(parser, argv)


if __name__ == "__main__":
    sys.exit(main())
