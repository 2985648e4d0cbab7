"""Names a module exports without importing their modules until first use (PEP 562).

``hepaudit`` and ``hepaudit.api`` export classes whose modules pull in numpy, onnxruntime or
uproot; with :func:`lazy_exports` importing either costs a few milliseconds, and the first
access to a name imports its module and caches the value in the exporting module.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any


def lazy_exports(module: str, where: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``module``: each name of ``where`` comes from the
    module ``where[name]`` names, imported when the name is first used."""

    def __getattr__(name: str) -> Any:
        source = where.get(name)
        if source is None:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(source), name)
        setattr(sys.modules[module], name, value)  # cached: __getattr__ is not asked again
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[module])) | set(where))

    return __getattr__, __dir__
