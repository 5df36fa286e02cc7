"""PEP 562 lazy public names, shared by the ``secagg``, ``rfa`` and ``rfa.fl`` packages."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, names: Mapping[str, str], namespace: dict[str, Any],
                 eager: tuple[str, ...] = ()) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Module-level ``__getattr__`` and ``__dir__`` for ``package``.

    ``names`` maps a public name to the module defining it; a name mapped to ``f"{package}.{name}"``
    is that submodule itself. A resolved value is cached in ``namespace`` (the package's globals).
    ``eager`` lists names already bound in the package, reported by ``__dir__`` beside the lazy ones.
    """

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        mod = importlib.import_module(module)
        value = mod if module == f"{package}.{name}" else getattr(mod, name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*eager, *names})

    return __getattr__, __dir__
