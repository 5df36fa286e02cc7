"""Shared plumbing of every long-running command (``rfa compare``, ``rfa train``, sweeps, benchmarks).

Built once so that every command refuses nonsense the same way, reads the same ``--config`` files,
never loses a finished run and stops cleanly on Ctrl-C:

* **validation** -- :func:`check_finite`, :func:`check_range`, :func:`check_int`, :func:`check_probability`
  and their argparse twins (:func:`float_arg`, :func:`int_arg`, :func:`csv_arg`): a bad value raises
  :class:`UsageError` (an :class:`secagg.InvalidInput`), which :func:`main_wrapper` turns into one line
  on stderr and exit status 2;
* **parameters** -- :func:`parse_params` reads ``key=value,key=value`` (or a JSON object) and
  :func:`bind_params` coerces the values to the types of a target's constructor signature; an unknown
  name is an error that lists the accepted ones;
* **config files** -- :func:`parse_args` applies ``--config FILE`` (JSON, or TOML via :mod:`tomllib`):
  the file's keys are the flags' names, unknown keys are errors, explicit flags override the file;
* **output folders** -- :func:`prepare_out_dir` checks the folder before any work: writable, and a
  non-empty folder is refused unless resuming or overwriting; the default is ``runs/<command>-<UTC
  timestamp>``;
* **a run store** -- :class:`RunStore` appends each finished run (a JSON line and a CSV row, each in a
  single ``write`` on an ``O_APPEND`` descriptor followed by ``fsync``) keyed by :func:`config_hash`;
  resuming skips recorded hashes, and tables and plots are re-derived from the records alone;
* **interruption** -- :func:`handle_signals` turns SIGINT/SIGTERM of the main process into
  :class:`Interrupted`; :func:`run_parallel` runs jobs in worker processes that ignore SIGINT and are
  terminated by the parent, cancelling every queued job, so a sweep stops within a few seconds;
  :func:`interrupted_message` is the one line saying what was saved and how to continue (exit 130).

This module knows nothing of machine learning: it imports neither torch nor numpy.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import inspect
import io
import json
import math
import os
import signal
import sys
import tempfile
import time
import types
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from secagg.errors import InvalidInput

__all__ = [
    "UsageError",
    "Interrupted",
    "EXIT_USAGE",
    "EXIT_INTERRUPTED",
    "check_finite",
    "check_range",
    "check_int",
    "check_probability",
    "float_arg",
    "int_arg",
    "csv_arg",
    "params_arg",
    "parse_params",
    "bind_params",
    "accepted_params",
    "load_config_file",
    "config_defaults",
    "parse_args",
    "OneLineErrorParser",
    "default_out_dir",
    "prepare_out_dir",
    "config_hash",
    "atomic_write_text",
    "RunStore",
    "handle_signals",
    "run_parallel",
    "interrupted_message",
    "main_wrapper",
]

EXIT_USAGE = 2
"""Exit status of a command refused for bad input (argparse's convention)."""
EXIT_INTERRUPTED = 130
"""Exit status after SIGINT/SIGTERM (128 + SIGINT, the shell's convention for Ctrl-C)."""


class UsageError(InvalidInput):
    """A flag, parameter, config file or output folder a command cannot accept.

    The message is one line, ready to print after ``<command>: ``."""


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM reached the main process (raised by the handler of :func:`handle_signals`).

    A :class:`KeyboardInterrupt` so that code which already lets Ctrl-C through lets this through too.
    ``signum`` is the signal number, ``name`` its name (``SIGINT``/``SIGTERM``)."""

    def __init__(self, signum: int) -> None:
        self.signum = int(signum)
        self.name = signal.Signals(signum).name
        super().__init__(self.name)


# ----------------------------------------------------------------------------------------------------
# numeric validation


def _num(name: str, value: Any) -> float:
    if isinstance(value, bool):
        raise UsageError(f"{name} must be a number, got {value!r}")
    if not isinstance(value, (int, float)):
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise UsageError(f"{name} must be a number, got {value!r}") from None
    return value


def check_finite(name: str, value: Any) -> float:
    """``value`` as a float, refusing nan, +inf and -inf (``--lr nan`` trains nothing)."""
    v = float(_num(name, value))
    if not math.isfinite(v):
        raise UsageError(f"{name} must be a finite number, got {value}")
    return v


def _interval(lo: float | None, hi: float | None, lo_open: bool, hi_open: bool) -> str:
    left = "(" if lo_open or lo is None else "["
    right = ")" if hi_open or hi is None else "]"
    return f"{left}{'-inf' if lo is None else f'{lo:g}'}, {'inf' if hi is None else f'{hi:g}'}{right}"


def check_range(name: str, value: Any, lo: float | None = None, hi: float | None = None, *,
                lo_open: bool = False, hi_open: bool = False) -> float:
    """``value`` as a finite float inside the interval from ``lo`` to ``hi`` (closed unless ``lo_open``
    / ``hi_open``; ``None`` means unbounded on that side)."""
    v = check_finite(name, value)
    if lo is not None and (v < lo or (lo_open and v == lo)):
        raise UsageError(f"{name} must lie in {_interval(lo, hi, lo_open, hi_open)}, got {value}")
    if hi is not None and (v > hi or (hi_open and v == hi)):
        raise UsageError(f"{name} must lie in {_interval(lo, hi, lo_open, hi_open)}, got {value}")
    return v


def check_int(name: str, value: Any, lo: int | None = 1, hi: int | None = None) -> int:
    """``value`` as an int with ``lo <= value <= hi`` (default: an integer >= 1). Floats with a
    fractional part, bools and non-numeric strings are refused."""
    if isinstance(value, bool):
        raise UsageError(f"{name} must be an integer, got {value!r}")
    if isinstance(value, float):
        if not value.is_integer():
            raise UsageError(f"{name} must be an integer, got {value!r}")
        value = int(value)
    if isinstance(value, str):
        try:
            value = int(value.strip(), 10)
        except ValueError:
            raise UsageError(f"{name} must be an integer, got {value!r}") from None
    if not isinstance(value, int):
        raise UsageError(f"{name} must be an integer, got {value!r}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        bound = f">= {lo}" if hi is None else (f"<= {hi}" if lo is None else f"in [{lo}, {hi}]")
        raise UsageError(f"{name} must be an integer {bound}, got {value}")
    return value


def check_probability(name: str, value: Any, *, allow_one: bool = False) -> float:
    """A probability: a finite float in [0, 1) (or [0, 1] when ``allow_one``)."""
    return check_range(name, value, 0.0, 1.0, hi_open=not allow_one)


def _argtype(fn: Callable[[str], Any], metavar: str) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            return fn(text)
        except UsageError as exc:
            # argparse prefixes "argument --flag: "; drop our own "value must ..." subject
            raise argparse.ArgumentTypeError(str(exc).removeprefix("value ")) from None

    parse.__name__ = metavar  # argparse names the type in "invalid <name> value" messages
    return parse


def float_arg(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
              hi_open: bool = False) -> Callable[[str], float]:
    """An argparse ``type=``: a finite float in the given interval (see :func:`check_range`)."""
    return _argtype(lambda s: check_range("value", s, lo, hi, lo_open=lo_open, hi_open=hi_open), "float")


def int_arg(lo: int | None = 1, hi: int | None = None) -> Callable[[str], int]:
    """An argparse ``type=``: an integer in ``[lo, hi]`` (default >= 1; see :func:`check_int`)."""
    return _argtype(lambda s: check_int("value", s, lo, hi), "int")


def csv_arg(item: Callable[[str], Any] = str, *, choices: Sequence[str] | Callable[[], Sequence[str]] | None = None,
            nonempty: bool = True) -> Callable[[str], list[Any]]:
    """An argparse ``type=``: a comma-separated list, each item parsed by ``item`` (which may be one of
    :func:`float_arg` / :func:`int_arg`) and, for strings, checked against ``choices`` (a sequence, or a
    function returning one so a registry is read when the flag is parsed). Duplicates are refused."""

    def parse(text: str) -> list[Any]:
        parts = [x.strip() for x in text.split(",") if x.strip()]
        if nonempty and not parts:
            raise UsageError("value must be a non-empty comma-separated list")
        allowed = choices() if callable(choices) else choices
        out = []
        for p in parts:
            try:
                v = item(p)
            except argparse.ArgumentTypeError as exc:
                raise UsageError(f"value {p!r}: {exc}") from None
            except (TypeError, ValueError):
                raise UsageError(f"value {p!r} is not a valid {getattr(item, '__name__', 'item')}") from None
            if allowed is not None and v not in allowed:
                raise UsageError(f"value {p!r} is not one of {', '.join(map(str, allowed))}")
            if v in out:
                raise UsageError(f"value {p!r} is listed twice")
            out.append(v)
        return out

    return _argtype(parse, "list")


# ----------------------------------------------------------------------------------------------------
# key=value parameters


def parse_params(text: str | Mapping[str, Any] | None) -> dict[str, Any]:
    """Parse ``key=value,key=value`` (or a JSON object ``{"key": value}``, or a mapping from a config
    file) into a dict. Values stay strings here (JSON values stay typed); :func:`bind_params` coerces
    them to the target's types. Empty text gives ``{}``.

    Raises :class:`UsageError` on a part without ``=``, an empty key or a repeated key."""
    if text is None:
        return {}
    if isinstance(text, Mapping):
        return {str(k): v for k, v in text.items()}
    s = text.strip()
    if not s:
        return {}
    if s.startswith("{"):
        try:
            obj = json.loads(s)
        except json.JSONDecodeError as exc:
            raise UsageError(f"bad JSON object {s!r}: {exc.msg}") from None
        if not isinstance(obj, dict):
            raise UsageError(f"expected a JSON object, got {s!r}")
        return obj
    out: dict[str, Any] = {}
    for part in s.split(","):
        k, eq, v = part.partition("=")
        k = k.strip()
        if not eq or not k:
            raise UsageError(f"expected key=value,key=value, got {part.strip()!r} in {s!r}")
        if k in out:
            raise UsageError(f"parameter {k!r} given twice in {s!r}")
        out[k] = v.strip()
    return out


def params_arg(text: str) -> dict[str, Any]:
    """An argparse ``type=`` for ``*-params`` flags (see :func:`parse_params`)."""
    return _argtype(parse_params, "params")(text)


def _signature(target: Callable[..., Any]) -> inspect.Signature:
    try:
        return inspect.signature(target, eval_str=True)
    except (NameError, TypeError):  # annotations naming something not importable here: untyped
        return inspect.signature(target)


def accepted_params(target: Callable[..., Any]) -> dict[str, Any] | None:
    """The keyword parameters of ``target`` (a class or function) as ``{name: annotation}``, or
    ``None`` when it takes ``**kwargs`` (any name accepted)."""
    out: dict[str, Any] = {}
    for p in _signature(target).parameters.values():
        if p.kind is p.VAR_KEYWORD:
            return None
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self":
            out[p.name] = p.annotation
    return out


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def _coerce(name: str, value: Any, ann: Any, finite: bool = True) -> Any:
    """``value`` converted to annotation ``ann`` (int, float, bool, str, X | None, Literal, unions);
    ``finite=False`` lets a float be ``inf``/``nan`` (an attack's magnitude may legitimately be one)."""
    if ann is inspect.Parameter.empty or ann is Any:
        if isinstance(value, str):
            try:
                return json.loads(value)
            except json.JSONDecodeError:
                return value
        return value
    origin = typing.get_origin(ann)
    if origin is typing.Union or (hasattr(types, "UnionType") and isinstance(ann, types.UnionType)):
        args = typing.get_args(ann)
        if type(None) in args and (value is None or (isinstance(value, str) and value.lower() in ("none", "null"))):
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(name, value, a, finite)
            except UsageError as exc:
                errors.append(str(exc))
        raise UsageError(errors[0] if len(errors) == 1 else f"{name}: {value!r} fits none of {ann}")
    if origin is typing.Literal:
        allowed = typing.get_args(ann)
        for a in allowed:
            if value == a or (isinstance(value, str) and str(a) == value):
                return a
        raise UsageError(f"{name} must be one of {', '.join(map(str, allowed))}, got {value!r}")
    if ann is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        raise UsageError(f"{name} must be true or false, got {value!r}")
    if ann is int:
        return check_int(name, value, lo=None)
    if ann is float:
        return check_finite(name, value) if finite else _num(name, value)
    if ann is str:
        if not isinstance(value, str):
            raise UsageError(f"{name} must be a string, got {value!r}")
        return value
    return value  # an annotation we do not interpret (a class, a container): pass through


def bind_params(params: Mapping[str, Any], target: Callable[..., Any], *, what: str,
                finite: bool = True) -> dict[str, Any]:
    """Check ``params`` against the constructor (or function) signature of ``target`` and coerce each
    value to its annotated type. ``what`` names the target in errors (``"aggregator 'rfa'"``).

    An unknown name raises :class:`UsageError` listing the accepted names (``(none)`` when it takes no
    parameters); a value that does not fit its type raises one naming the parameter. ``finite=False``
    accepts ``inf``/``nan`` for float parameters (corruptions: an attacker of infinite magnitude)."""
    accepted = accepted_params(target)
    if accepted is None:
        return dict(params)
    unknown = [k for k in params if k not in accepted]
    if unknown:
        names = ", ".join(accepted) if accepted else "(none)"
        raise UsageError(f"unknown parameter{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} for {what}; "
                         f"accepted: {names}")
    return {k: _coerce(f"{what} parameter {k}", v, accepted[k], finite) for k, v in params.items()}


# ----------------------------------------------------------------------------------------------------
# --config files and argument parsing


class OneLineErrorParser(argparse.ArgumentParser):
    """An :class:`argparse.ArgumentParser` whose usage errors are one line (``prog: error: message
    (see prog --help)``) with exit status 2, instead of the usage block followed by the message."""

    def error(self, message: str) -> typing.NoReturn:  # noqa: D401 - argparse API
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def load_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a config file: TOML when the name ends in ``.toml``, JSON otherwise. The top level must be
    a table / object. Errors (missing, unreadable, malformed) are :class:`UsageError`."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read config file {p}: {exc.strerror or exc}") from None
    if p.suffix.lower() == ".toml":
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            raise UsageError(f"config file {p}: TOML needs Python 3.11 or later; use a JSON file") from None
        try:
            obj = tomllib.loads(raw.decode("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise UsageError(f"config file {p} is not valid TOML: {exc}") from None
    else:
        try:
            obj = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise UsageError(f"config file {p} is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise UsageError(f"config file {p} must hold a table/object of flag names, got {type(obj).__name__}")
    return obj


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """``{flag name without dashes: action}`` for every long option of ``parser`` (help excluded)."""
    out = {}
    for a in parser._actions:  # argparse keeps no public list of actions
        if isinstance(a, argparse._HelpAction):
            continue
        for s in a.option_strings:
            if s.startswith("--"):
                out[s[2:]] = a
    return out


def _as_flag_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(_as_flag_text(v) for v in value)
    if isinstance(value, Mapping):
        return ",".join(f"{k}={_as_flag_text(v)}" for k, v in value.items())
    return str(value)


def config_defaults(parser: argparse.ArgumentParser, config: Mapping[str, Any], *, source: str = "config",
                    exclude: Iterable[str] = ("config",)) -> dict[str, Any]:
    """Translate a config mapping (keys = flag names, with ``-`` or ``_``) into ``{dest: value}`` for
    ``parser.set_defaults``, parsing each value exactly as the flag would (its ``type=`` and
    ``choices``). Lists may be given as arrays, ``*-params`` as tables, switches as booleans.

    Unknown keys raise :class:`UsageError` listing the accepted ones."""
    opts = _options(parser)
    excluded = set(exclude)
    accepted = sorted(k for k in opts if k not in excluded)
    out: dict[str, Any] = {}
    for key, value in config.items():
        flag = str(key).replace("_", "-")
        action = opts.get(flag)
        if action is None or flag in excluded:
            raise UsageError(f"{source}: unknown key {key!r}; accepted: {', '.join(accepted)}")
        if action.nargs == 0:  # store_true / store_false / store_const switches
            if not isinstance(value, bool):
                raise UsageError(f"{source}: {key} is a switch; give true or false, got {value!r}")
            if value:
                out[action.dest] = action.const
            elif isinstance(action.const, bool):
                out[action.dest] = not action.const
            continue
        if value is None:
            out[action.dest] = None
            continue
        text = _as_flag_text(value)
        try:
            v = action.type(text) if action.type is not None else text
        except (argparse.ArgumentTypeError, UsageError) as exc:
            raise UsageError(f"{source}: {key}: {exc}") from None
        except (TypeError, ValueError):
            raise UsageError(f"{source}: {key}: invalid value {value!r}") from None
        if action.choices is not None and v not in action.choices:
            raise UsageError(f"{source}: {key}: {v!r} is not one of {', '.join(map(str, action.choices))}")
        out[action.dest] = v
    return out


def _chosen_subparser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            name = getattr(args, a.dest, None)
            if name in a.choices:
                return a.choices[name]
    return parser


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """``parser.parse_args(argv)`` with ``--config FILE`` applied: when the chosen (sub)command has a
    ``config`` option and it was given, the file's values become that parser's defaults and ``argv`` is
    parsed again, so explicit flags override the file. Bad config files raise :class:`UsageError`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    path = getattr(args, "config", None)
    if not path:
        return args
    sub = _chosen_subparser(parser, args)
    sub.set_defaults(**config_defaults(sub, load_config_file(path), source=f"config file {path}"))
    return parser.parse_args(argv)


# ----------------------------------------------------------------------------------------------------
# output folders


def default_out_dir(command: str, root: str | os.PathLike = "runs") -> Path:
    """``runs/<command>-<UTC timestamp>`` (a ``-2``, ``-3``, ... suffix when that folder exists)."""
    base = Path(root) / f"{command}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
    p, k = base, 1
    while p.exists():
        k += 1
        p = base.with_name(f"{base.name}-{k}")
    return p


def prepare_out_dir(out: str | os.PathLike | None, command: str, *, resume: str | os.PathLike | None = None,
                    overwrite: bool = False, owned: Iterable[str] = ()) -> Path:
    """Check (and create) the output folder before any work starts; return it.

    * ``resume``: continue the run store in that folder; it must exist and hold a run store
      (:class:`RunStore`); ``out``, if also given, must be the same folder;
    * otherwise ``out`` (default :func:`default_out_dir`) must be missing or empty, unless
      ``overwrite``, which removes the files named in ``owned`` plus the run store's own files (nothing
      else in the folder is touched, so a mistyped folder loses no unrelated file);
    * the folder must be writable (a probe file is created and removed).

    Every refusal is a :class:`UsageError` that names the flag to use instead."""
    if resume is not None and overwrite:
        raise UsageError("--resume and --overwrite exclude each other")
    if resume is not None:
        p = Path(resume)
        if out is not None and Path(out).resolve() != p.resolve():
            raise UsageError(f"--out {out} and --resume {resume} name different folders; give only --resume")
        if not (p / RunStore.MANIFEST).is_file():
            raise UsageError(f"--resume {p}: no interrupted run there (no {RunStore.MANIFEST})")
    else:
        p = Path(out) if out is not None else default_out_dir(command)
        if p.exists() and not p.is_dir():
            raise UsageError(f"output folder {p} exists and is not a folder")
        if p.is_dir() and any(p.iterdir()):
            if not overwrite:
                hint = f"--resume {p} to continue it" if (p / RunStore.MANIFEST).is_file() else "another --out"
                raise UsageError(f"output folder {p} is not empty; pass {hint} or --overwrite to replace its results")
            for name in (*RunStore.FILES, *owned):
                try:
                    (p / name).unlink()
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    raise UsageError(f"--overwrite: cannot remove {p / name}: {exc.strerror or exc}") from None
    try:
        p.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=p, prefix=".write-probe-"):
            pass
    except OSError as exc:
        raise UsageError(f"output folder {p} is not writable: {exc.strerror or exc}") from None
    return p


# ----------------------------------------------------------------------------------------------------
# run store


def config_hash(config: Any) -> str:
    """A stable 16-hex-digit key of a configuration: SHA-256 of its canonical JSON (sorted keys, no
    whitespace; dataclasses via :func:`dataclasses.asdict`). Equal configs give equal keys on every
    machine and Python version; the key does not depend on dict insertion order."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = dataclasses.asdict(config)
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str, allow_nan=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def _append_line(path: Path, line: str) -> None:
    """Append ``line`` (ending in a newline) with one ``write`` on an ``O_APPEND`` descriptor, then
    ``fsync``. Python runs signal handlers between bytecodes, never inside ``os.write``, so Ctrl-C
    cannot leave a partial line; a power loss mid-write can, and :meth:`RunStore.records` drops an
    unterminated last line."""
    data = line.encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        written = os.write(fd, data)
        while written < len(data):  # a short write to a regular file: finish it
            written += os.write(fd, data[written:])
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder and :func:`os.replace`:
    readers see the old file or the new one, never half of one."""
    p = Path(path)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return p


def _csv_line(columns: Sequence[str], row: Mapping[str, Any]) -> str:
    buf = io.StringIO()
    csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n").writerow(
        {k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    return buf.getvalue()


def _json_safe(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, Mapping):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


_defer_depth = 0
_pending_signals: list[int] = []


@contextmanager
def _signals_deferred() -> Iterator[None]:
    """Inside the block, the handler of :func:`handle_signals` only notes a signal; on leaving the
    block it raises :class:`Interrupted` for it. A run store append is therefore never cut in half
    (files written, count not updated). Any thread may receive the C-level signal, so blocking it in
    the main thread would not be enough: the deferral lives in the Python handler."""
    global _defer_depth
    _defer_depth += 1
    try:
        yield
    finally:
        _defer_depth -= 1
        if _defer_depth == 0 and _pending_signals:
            signum = _pending_signals[0]
            _pending_signals.clear()
            raise Interrupted(signum)


class RunStore:
    """The results folder of a sweep: one record per finished run, appended as soon as it finishes.

    Files (all in ``folder``):

    * ``manifest.json`` -- the command, its arguments and the CSV columns (written atomically);
    * ``records.jsonl`` -- one JSON object per finished run: ``{"hash", "row", "record"}`` (``row`` is
      the CSV row as a dict; ``record`` anything else worth keeping, e.g. config and history);
    * ``records.csv`` -- the same rows as CSV, header first.

    Each record is appended with one ``write`` + ``fsync`` (:func:`_append_line`), the JSON line first:
    a crash between the two writes leaves a CSV one row short, and opening the store rebuilds the CSV
    from the JSON lines (which are the source of truth). ``done`` is the set of recorded config hashes:
    a resumed sweep skips them.
    """

    MANIFEST = "manifest.json"
    RECORDS = "records.jsonl"
    CSV = "records.csv"
    FILES = (MANIFEST, RECORDS, CSV)

    def __init__(self, folder: str | os.PathLike, columns: Sequence[str], *, manifest: Mapping[str, Any] | None = None,
                 resume: bool = False) -> None:
        """Open (``resume``) or create the store in ``folder``. On create, ``manifest`` is written; on
        resume, the saved manifest is kept (read it with :attr:`manifest`) and the CSV is rebuilt."""
        self.folder = Path(folder)
        self.columns = tuple(columns)
        mpath = self.folder / self.MANIFEST
        if resume:
            try:
                self.manifest = json.loads(mpath.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise UsageError(f"cannot resume {self.folder}: unreadable {self.MANIFEST} ({exc})") from None
            saved = tuple(self.manifest.get("columns", ()))
            if saved and saved != self.columns:
                raise UsageError(f"cannot resume {self.folder}: it was written with other result columns "
                                 "(a different version of this command)")
        else:
            self.manifest = {"columns": list(self.columns), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                             **dict(manifest or {})}
            atomic_write_text(mpath, json.dumps(_json_safe(self.manifest), indent=1, sort_keys=True) + "\n")
        self._records = self._load()
        self.done: set[str] = {r["hash"] for r in self._records}
        self._rewrite_csv()

    def _load(self) -> list[dict[str, Any]]:
        path = self.folder / self.RECORDS
        if not path.exists():
            return []
        text = path.read_text(encoding="utf-8")
        lines = text.split("\n")
        tail = lines.pop()  # "" when the file ends in a newline; else an unterminated (torn) line
        out = []
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                raise UsageError(f"{path}: line {i + 1} is not a JSON record; the store is damaged") from None
            out.append(rec)
        if tail:
            # drop the torn line so the next append starts on a fresh line
            atomic_write_text(path, "".join(line + "\n" for line in lines))
        return out

    def _rewrite_csv(self) -> None:
        head = ",".join(self.columns) + "\n"
        atomic_write_text(self.folder / self.CSV, head + "".join(_csv_line(self.columns, r["row"]) for r in self._records))

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, key: str) -> bool:
        return key in self.done

    def records(self) -> list[dict[str, Any]]:
        """Every record, in the order they finished (copies of the lists; the dicts are shared)."""
        return list(self._records)

    def rows(self) -> list[dict[str, Any]]:
        """The CSV rows of every record, in the order they finished."""
        return [r["row"] for r in self._records]

    def append(self, key: str, row: Mapping[str, Any], record: Mapping[str, Any] | None = None) -> None:
        """Record one finished run under config hash ``key``: JSON line, then CSV row, each durable
        before this returns. A key already recorded is an error (a sweep runs each config once)."""
        if key in self.done:
            raise ValueError(f"run {key} is already recorded")
        rec = _json_safe({"hash": key, "row": dict(row), "record": dict(record or {})})
        line = json.dumps(rec, sort_keys=True, separators=(",", ":")) + "\n"
        with _signals_deferred():  # files and in-memory count change together: len(self) is what is saved
            _append_line(self.folder / self.RECORDS, line)
            self._records.append(rec)
            self.done.add(key)
            _append_line(self.folder / self.CSV, _csv_line(self.columns, rec["row"]))


# ----------------------------------------------------------------------------------------------------
# interruption


@contextmanager
def handle_signals(signals: Sequence[int] = (signal.SIGINT, signal.SIGTERM)) -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM raise :class:`Interrupted` in the main thread (the previous
    handlers are restored on exit). Outside the main thread this is a no-op (Python only lets the main
    thread install handlers)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_interrupted(signum: int, _frame: Any) -> None:
        if _defer_depth:
            _pending_signals.append(signum)
            return
        raise Interrupted(signum)

    old = {s: signal.signal(s, raise_interrupted) for s in signals}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _worker_start(initializer: Callable[..., None] | None, initargs: tuple[Any, ...]) -> None:
    """Worker process start-up: ignore SIGINT (a Ctrl-C reaches the whole process group; the parent
    decides), restore the default SIGTERM (the parent terminates workers), then the user initializer."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if initializer is not None:
        initializer(*initargs)


def _terminate_pool(pool: Any) -> None:
    """Cancel queued jobs and terminate the worker processes of a ProcessPoolExecutor now."""
    terminate = getattr(pool, "terminate_workers", None)  # public from Python 3.14
    if terminate is not None:
        pool.shutdown(wait=False, cancel_futures=True)
        terminate()
        return
    # older Pythons have no public handle on the workers; shutdown() forgets them, so take them first
    procs = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for p in procs:
        if p.is_alive():
            p.terminate()
    deadline = time.monotonic() + 5.0
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join(1.0)


def run_parallel(fn: Callable[[Any], Any], items: Sequence[Any], *, jobs: int,
                 initializer: Callable[..., None] | None = None, initargs: tuple[Any, ...] = (),
                 start_method: str = "spawn") -> Iterator[tuple[int, Any]]:
    """Yield ``(index, fn(items[index]))`` as each job finishes (completion order).

    ``jobs == 1`` runs in this process, in order. ``jobs > 1`` uses that many worker processes
    (``start_method``, default ``spawn``: no inherited threads or CUDA state) started with
    ``initializer(*initargs)``; workers ignore SIGINT. If the consumer stops early -- an exception,
    :class:`Interrupted` from :func:`handle_signals`, or closing the generator -- every queued job is
    cancelled and the workers are terminated before the exception propagates, so nothing keeps running
    after the command has stopped. ``fn`` and the items must be picklable for ``jobs > 1``."""
    jobs = check_int("jobs", jobs, lo=1)
    if jobs == 1 or len(items) <= 1:
        for i, item in enumerate(items):
            yield i, fn(item)
        return
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    pool = ProcessPoolExecutor(max_workers=min(jobs, len(items)), mp_context=mp.get_context(start_method),
                               initializer=_worker_start, initargs=(initializer, tuple(initargs)))
    finished = False
    # While waiting, a signal only *records* itself; it is raised (as Interrupted) right after ``wait``
    # returns. A handler that raises inside ``wait`` can fire in the middle of threading.Condition's own
    # code and leave its lock broken ("release unlocked lock" instead of a clean stop).
    import threading

    caught: list[int] = []
    watched = (signal.SIGINT, signal.SIGTERM)
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in watched:
            previous[sig] = signal.signal(sig, lambda signum, _frame: caught.append(signum))
    try:
        pending = {pool.submit(fn, item): i for i, item in enumerate(items)}
        while pending:
            # a short timeout keeps the main thread returning to Python, so signals are handled promptly
            done, _ = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            if caught:
                raise Interrupted(caught[0])
            for fut in done:
                i = pending.pop(fut)
                yield i, fut.result()
                if caught:
                    raise Interrupted(caught[0])
        finished = True
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if finished:
            pool.shutdown(wait=True)
        else:
            _terminate_pool(pool)


def interrupted_message(command: str, exc: Interrupted | None, *, saved: int, total: int, out: str | os.PathLike) -> str:
    """The one line printed after an interruption, e.g. ``rfa compare: interrupted (SIGINT): 18 of 168
    runs saved in runs/x; continue with: rfa compare --resume runs/x``."""
    why = exc.name if isinstance(exc, Interrupted) else "SIGINT"
    return (f"{command}: interrupted ({why}): {saved} of {total} runs saved in {out}; "
            f"continue with: {command} --resume {out}")


def main_wrapper(command: str, body: Callable[[], int]) -> int:
    """Run ``body()``; a :class:`UsageError` (or any :class:`secagg.InvalidInput`) becomes one line
    ``<command>: <message>`` on stderr and :data:`EXIT_USAGE`. Other exceptions propagate."""
    try:
        return int(body() or 0)
    except InvalidInput as exc:
        print(f"{command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
