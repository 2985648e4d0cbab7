"""Names a module exports without importing their modules until first use (PEP 562).

``hepaudit`` and ``hepaudit.api`` export classes whose modules pull in numpy, onnxruntime or
uproot; with :func:`lazy_exports` importing either costs a few milliseconds, and the first
access to a name imports its module and caches the value in the exporting module.
"""

from __future__ import annotations

import importlib
import sys
import types
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


class LazyModule(types.ModuleType):
    """A stand-in for a module that imports it on first attribute access (and then holds
    its names, so later lookups cost what a module's do). Submodules are found too:
    ``onnx.numpy_helper`` imports ``onnx.numpy_helper`` when ``onnx`` does not."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.__dict__["_lazy_target"] = name

    def __getattr__(self, attr: str) -> Any:
        target = self.__dict__["_lazy_target"]
        module = importlib.import_module(target)
        self.__dict__.update({k: v for k, v in vars(module).items() if k not in ("__name__", "__spec__")})
        try:
            return getattr(module, attr)
        except AttributeError:
            try:
                value = importlib.import_module(f"{target}.{attr}")
            except ImportError:
                raise AttributeError(f"module {target!r} has no attribute {attr!r}") from None
            self.__dict__[attr] = value
            return value


def lazy_module(name: str) -> Any:
    """``name`` if it is imported already, else a :class:`LazyModule` for it: heavy libraries
    (onnx, onnxruntime, awkward) load when a function first uses them, not when hepaudit's
    plugins are registered (``hepaudit --version`` and ``hepaudit plugins`` stay fast)."""
    return sys.modules.get(name) or LazyModule(name)
