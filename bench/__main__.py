"""Run the benchmark suite: ``python -m bench [--quick] [--out DIR] [--only a,b] [--repeats N]``.

Benchmarks (see each module's docstring): protocol_phases, flower, weiszfeld, training, scale,
communication. Writes ``DIR/results.json`` (atomically, after every benchmark, so a crash loses nothing),
``DIR/summary.md`` and ``DIR/bench_*.png`` (``--images DIR2`` also writes the plots there, e.g.
``docs/images``). With ``--only``, results of other benchmarks already in ``DIR/results.json`` are kept
(the meta records every run). Timings are medians of repeats and are never asserted: the exit status is 0 unless a
benchmark raised. Ctrl-C (SIGINT) or SIGTERM stops the run: one line says which benchmarks were saved and
the command that finishes the rest; exit status 130.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import sys
import time
import traceback
from typing import Any

NAMES = ("protocol_phases", "flower", "weiszfeld", "training", "communication", "scale")


def _load(name: str):  # noqa: ANN202
    import importlib

    return importlib.import_module(f"bench.{name}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small grid (minutes); scale goals need the full suite")
    ap.add_argument("--out", default=None, help="output folder (default bench/results/quick or bench/results/full)")
    ap.add_argument("--only", default=None, help=f"comma-separated subset of {','.join(NAMES)}")
    ap.add_argument("--repeats", type=int, default=None, help="repeats per timing (default 3 full, 2 quick)")
    ap.add_argument("--images", default=None, help="also write the plots into this folder (e.g. docs/images)")
    ap.add_argument("--docs", default=None,
                    help="splice the generated tables into this markdown file between its BEGIN/END GENERATED markers")
    ap.add_argument("--smoke", action="store_true", help="micro grids that only exercise the harness (for tests)")
    ap.add_argument("--torch-threads", type=int, default=1,
                    help="torch intra-op threads (default 1: on a shared 2-core machine more threads stall small ops)")
    args = ap.parse_args(argv)
    here = os.path.dirname(os.path.abspath(__file__))
    out = args.out or os.path.join(here, "results", "quick" if args.quick else "full")
    os.makedirs(out, exist_ok=True)
    names = NAMES if not args.only else tuple(x.strip() for x in args.only.split(",") if x.strip())
    bad = [x for x in names if x not in NAMES]
    if bad:
        ap.error(f"unknown benchmark(s) {bad}; choose from {NAMES}")
    if args.smoke:
        import bench.common

        bench.common.SMOKE = True
        args.quick = True
    repeats = args.repeats or (1 if args.smoke else 2 if args.quick else 3)
    old_threads = None
    try:
        import torch

        old_threads = torch.get_num_threads()
        torch.set_num_threads(max(1, args.torch_threads))
    except Exception:  # noqa: BLE001
        pass
    from rfa.jobs import EXIT_INTERRUPTED, Interrupted, handle_signals

    try:
        with handle_signals():  # SIGINT/SIGTERM raise Interrupted in this (main) thread
            return _run(args, names, out, repeats, argv)
    except Interrupted as why:  # before the first benchmark started (machine description)
        print(f"[bench] interrupted ({why.name}) before any benchmark finished; nothing saved", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    finally:
        if old_threads is not None:
            import torch

            torch.set_num_threads(old_threads)


def _run(args: argparse.Namespace, names: tuple[str, ...], out: str, repeats: int, argv: list[str] | None) -> int:
    from bench.common import machine_info

    results: dict[str, Any] = {
        "meta": {
            "command": "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:]),
            "quick": args.quick, "repeats": repeats, "started_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "machine": machine_info(), "torch_threads": args.torch_threads,
        }
    }
    path = os.path.join(out, "results.json")
    if args.only and os.path.exists(path):
        # --only adds to (or refreshes) the benchmarks of an earlier run in the same folder
        import json

        with open(path) as f:
            earlier = json.load(f)
        runs = earlier.get("meta", {}).get("runs", [earlier.get("meta", {})])
        em = earlier.get("meta", {})
        for k, v in earlier.items():
            # benchmarks of an earlier run without their own record get that run's window and load
            if k != "meta" and isinstance(v, dict) and "ran" not in v and em.get("started_utc"):
                v["ran"] = {"started_utc": em.get("started_utc"), "finished_utc": em.get("finished_utc"),
                            "loadavg_start": em.get("machine", {}).get("loadavg"), "loadavg_end": em.get("loadavg_end"),
                            "command": em.get("command")}
        results = {**{k: v for k, v in earlier.items() if k != "meta"}, **results}
        results["meta"]["runs"] = [r for r in runs if r] + [{k: results["meta"][k] for k in ("command", "started_utc")}]
    failed: list[str] = []
    done: list[str] = []
    from rfa.jobs import EXIT_INTERRUPTED, Interrupted

    try:
        _loop(args, names, results, path, repeats, failed, done)
    except Interrupted as exc:
        why = exc.name
        # one line, no traceback: what finished is already in results.json (written after each benchmark)
        left = [n for n in names if n not in done]
        saved = f"{len(done)} finished benchmark(s) ({', '.join(done)}) in {path}" if done else "nothing finished; nothing saved"
        print(f"[bench] interrupted ({why}): {saved}; to finish: python -m bench --only {','.join(left)} --out {out}"
              + (" --quick" if args.quick and not args.smoke else "") + (" --smoke" if args.smoke else ""),
              file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    return _finish(args, results, out, path, failed)


def _loop(args: argparse.Namespace, names: tuple[str, ...], results: dict[str, Any], path: str, repeats: int,
          failed: list[str], done: list[str]) -> None:
    """Run each benchmark and save ``results.json`` as soon as it finishes (atomically)."""
    from bench.common import write_json

    for name in names:
        print(f"[bench] {name} ...", flush=True)
        t0 = time.perf_counter()
        ran = {"started_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "loadavg_start": list(os.getloadavg()),
               "command": results["meta"]["command"]}
        try:
            results[name] = _load(name).run(quick=args.quick, repeats=repeats, log=lambda s: print(s, flush=True))
        except Exception as exc:  # noqa: BLE001 - record and go on with the next benchmark
            traceback.print_exc()
            results[name] = {"name": name, "error": repr(exc)}
            failed.append(name)
        results[name]["seconds"] = time.perf_counter() - t0
        ran.update(finished_utc=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), loadavg_end=list(os.getloadavg()))
        results[name]["ran"] = ran
        write_json(path, results)
        done.append(name)
        print(f"[bench] {name} done in {results[name]['seconds']:.0f} s", flush=True)


def _finish(args: argparse.Namespace, results: dict[str, Any], out: str, path: str, failed: list[str]) -> int:
    from bench.common import write_json
    from bench.report import write_summary

    results["meta"]["finished_utc"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    results["meta"]["loadavg_end"] = list(os.getloadavg())
    write_json(path, results)
    from bench.plots import plot_all

    imgs = plot_all(results, out)
    if args.images:
        plot_all(results, args.images)
    md = write_summary(results, os.path.join(out, "summary.md"), images=[os.path.basename(p) for p in imgs])
    if args.docs:
        from bench.report import splice_docs

        rel = os.path.relpath(os.path.abspath(args.images or out), os.path.dirname(os.path.abspath(args.docs)))
        splice_docs(results, args.docs, images=[os.path.join(rel, os.path.basename(p)) for p in imgs])
        print(f"[bench] updated the generated section of {args.docs}")
    print(md.split("\n## ")[1] if "\n## " in md else md)
    print(f"[bench] wrote {path}, {os.path.join(out, 'summary.md')} and {len(imgs)} plots")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
