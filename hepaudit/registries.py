"""The registry objects handed to the registration hooks, and what they check.

``hepaudit_register_explainers(register)`` gets an :class:`ExplainerRegistry`,
``hepaudit_register_recipes(register)`` a :class:`RecipeRegistry` (tox's pattern: a plugin
calls the registry as often as it likes). An explainer class is checked when it is
registered, so a plugin's mistake is an error naming the plugin when hepaudit starts, not a
surprise in the middle of an audit: its ``name`` must be an identifier not taken by another
plugin, its ``Options`` a dataclass, and each of its ``needs`` one hepaudit provides
(a typo gets the close matches).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from hepaudit.errors import HepauditError, close_matches
from hepaudit.needs import KNOWN_NEEDS

if TYPE_CHECKING:  # pragma: no cover
    from hepaudit.data.recipes import Recipe
    from hepaudit.explainers.base import Explainer


class ExplainerRegistry:
    """Handed to ``hepaudit_register_explainers``; call it with explainer classes."""

    def __init__(self) -> None:
        self.classes: dict[str, type[Explainer[Any]]] = {}
        self.owner: dict[str, str] = {}
        self._current = "?"

    def __call__(self, explainer: type[Explainer[Any]]) -> None:
        who = f"plugin {self._current}"
        name = getattr(explainer, "name", None)
        if not isinstance(name, str) or not name.isidentifier():
            raise HepauditError(f"{who}: explainer {explainer!r} needs a `name` identifier")
        if name in self.classes:
            raise HepauditError(f"explainer {name!r} is registered by both {self.owner[name]} and {self._current}")
        options = getattr(explainer, "Options", None)
        if options is None or not dataclasses.is_dataclass(options):
            raise HepauditError(f"{who}: explainer {name!r}: Options must be a dataclass, found {options!r}")
        needs: Any = getattr(explainer, "needs", frozenset())
        if isinstance(needs, str) or not all(isinstance(n, str) for n in needs):
            raise HepauditError(f"{who}: explainer {name!r}: needs must be a set of names, found {needs!r}")
        for need in sorted(needs):
            if need not in KNOWN_NEEDS:
                raise HepauditError(f"{who}: explainer {name!r} needs {need!r}, which hepaudit does not provide"
                                    f"{close_matches(need, KNOWN_NEEDS)} (known: {', '.join(sorted(KNOWN_NEEDS))})")
        self.classes[name] = explainer
        self.owner[name] = self._current

    def withdraw(self, plugin: str) -> None:
        """Forget what ``plugin`` registered (it raised half-way through its hook)."""
        for name in [n for n, owner in self.owner.items() if owner == plugin]:
            del self.classes[name], self.owner[name]


class RecipeRegistry:
    """Handed to ``hepaudit_register_recipes``; call it with ``(name, recipe)``."""

    def __init__(self) -> None:
        self.recipes: dict[str, Recipe] = {}
        self.owner: dict[str, str] = {}
        self._current = "?"

    def __call__(self, name: str, recipe: Recipe) -> None:
        if name in self.recipes:
            raise HepauditError(f"recipe {name!r} is registered by both {self.owner[name]} and {self._current}")
        if not callable(recipe):
            raise HepauditError(f"plugin {self._current}: recipe {name!r} is not callable")
        self.recipes[name] = recipe
        self.owner[name] = self._current

    def withdraw(self, plugin: str) -> None:
        """Forget what ``plugin`` registered (it raised half-way through its hook)."""
        for name in [n for n, owner in self.owner.items() if owner == plugin]:
            del self.recipes[name], self.owner[name]
