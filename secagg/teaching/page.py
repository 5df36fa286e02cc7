"""One self-contained HTML page of a trace: inline CSS, JavaScript and SVG, nothing from the network.

The page is a view of the JSON transcript of :func:`secagg.commands.trace.trace` (which carries its
``schema`` number); it embeds that JSON verbatim and draws it, and does no cryptography itself. The
template is the package data file ``secagg/teaching/page.html``.
"""

from __future__ import annotations

import html
import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

from secagg.errors import InvalidInput

__all__ = ["render_html", "write_html"]


def _template() -> str:
    return resources.files("secagg.teaching").joinpath("page.html").read_text(encoding="utf-8")


def render_html(tr: dict[str, Any]) -> str:
    """The page for transcript ``tr`` (the dict :func:`secagg.commands.trace.trace` returns).

    The JSON is embedded in a ``<script type="application/json">`` element with every ``<`` written as
    ``\\u003c``, so no value of the transcript can close the element. Raises
    :class:`secagg.InvalidInput` for a transcript of another schema.
    """
    from secagg.teaching import SCHEMA

    if not isinstance(tr, dict) or tr.get("schema") != SCHEMA:
        raise InvalidInput(f"the page reads trace schema {SCHEMA}, got {tr.get('schema') if isinstance(tr, dict) else tr!r}")
    p = tr["parameters"]
    title = (f"n = {p['clients']}, d = {p['dim']}, t = {p['threshold']}, {p['variant']}, {p['graph']}"
             + (", drops " + ", ".join(f"{u}:{r}" for u, r in p["dropouts"].items()) if p["dropouts"] else ", no dropout"))
    data = json.dumps(tr, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c").replace("&", "\\u0026")
    return _template().replace("__TITLE__", html.escape(title)).replace("__TRACE_JSON__", data)


def write_html(tr: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write :func:`render_html` of ``tr`` to ``path`` atomically (a temporary file, then a rename)."""
    out = Path(path)
    text = render_html(tr)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, out)
    return out
