"""The scenario pages shipped with the documentation, and the one command that regenerates them.

``python -m secagg.teaching docs/trace`` writes one page per entry of :data:`SCENARIOS`; each is exactly
what ``secagg trace ARGS --html FILE`` writes for the scenario's arguments (a test checks that the
committed pages are current).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

__all__ = ["SCENARIOS", "write_pages", "main"]

SCENARIOS: dict[str, tuple[str, list[str]]] = {
    "no-dropout": ("No dropout: every mask cancels", ["--clients", "4", "--dim", "3", "--threshold", "3"]),
    "drop-before-masked-input": (
        "Client 2 drops before sending its masked input: its pairwise masks are rebuilt",
        ["--clients", "4", "--dim", "3", "--threshold", "3", "--drop", "2:masked-input"],
    ),
    "drop-after-masked-input": (
        "Client 2 drops after sending its masked input (active variant): it is in the sum",
        ["--clients", "5", "--dim", "3", "--threshold", "3", "--variant", "active", "--drop", "2:masked-input:after"],
    ),
    "secagg-plus-20": (
        "SecAgg+ with 20 clients on a Harary graph, one dropout after sharing keys",
        ["--clients", "20", "--dim", "3", "--graph", "secagg+", "--drop", "5:share-keys:after"],
    ),
}
"""``name -> (description, secagg trace arguments)``; the page is ``NAME.html``."""


def write_pages(directory: str | os.PathLike[str]) -> list[Path]:
    """Write every scenario page into ``directory`` (created if missing); returns the paths."""
    import contextlib
    import io

    from secagg.cli import main as secagg_main
    from secagg.errors import SecAggError

    out_dir = Path(directory)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, (_, argv) in SCENARIOS.items():
        path = out_dir / f"{name}.html"
        with contextlib.redirect_stdout(io.StringIO()):  # the text transcript is not wanted here
            rc = secagg_main(["trace", *argv, "--html", str(path)])
        if rc != 0:
            raise SecAggError(f"secagg trace {' '.join(argv)} failed (exit status {rc})")
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m secagg.teaching", description="regenerate the documentation's trace pages")
    p.add_argument("directory", nargs="?", default="docs/trace", help="where to write the pages (default docs/trace)")
    args = p.parse_args(argv)
    for path in write_pages(args.directory):
        print(path)
    return 0
