"""Built-in plugin registering the ``topodnn`` and ``pfn`` preprocessing recipes."""

from __future__ import annotations

from hepaudit.data.recipes import BUILTIN_RECIPES
from hepaudit.plugins import RecipeRegistry, hookimpl


@hookimpl
def hepaudit_register_recipes(register: RecipeRegistry) -> None:
    for name, recipe in BUILTIN_RECIPES.items():
        register(name, recipe)
