"""``rfa`` command line: one subcommand per module under :mod:`rfa.commands`.

Each command module exposes ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``.
Usage errors are one line with exit status 2 (:class:`rfa.jobs.OneLineErrorParser`); ``--config FILE``
is applied by :func:`rfa.jobs.parse_args` for every command that has that flag.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from rfa import jobs
from secagg import cli as secagg_cli

COMMANDS = ("compare", "train", "leakage", "robustness")


def build_parser(commands: Sequence[str] = COMMANDS) -> argparse.ArgumentParser:
    """The ``rfa`` parser with one subcommand per ``rfa.commands.<name>`` module in ``commands``."""
    return secagg_cli.build_parser("rfa", "rfa.commands", commands, "Robust federated aggregation over secure aggregation.",
                                   parser_class=jobs.OneLineErrorParser)


def main(argv: list[str] | None = None) -> int:
    """Run ``rfa`` with ``argv`` (default ``sys.argv[1:]``) and return the exit status (0 ok, 2 usage
    error, 130 interrupted); usage errors and ``--help`` return instead of raising SystemExit."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = jobs.parse_args(parser, argv)
    except SystemExit as exc:  # --help, or a usage error already printed as one line: the status, no exit
        return int(exc.code or 0) if not isinstance(exc.code, str) else jobs.EXIT_USAGE
    except jobs.UsageError as exc:  # a bad --config file
        prog = "rfa " + argv[0] if argv and argv[0] in COMMANDS else "rfa"
        print(f"{prog}: {exc}", file=sys.stderr)
        return jobs.EXIT_USAGE
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
