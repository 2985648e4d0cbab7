"""The plugin manager: built-ins, third-party entry points, blocking, and typed calls.

Each audit (and each CLI invocation) makes its own :class:`PluginHost`; there is no
module-global plugin manager. Built-ins are registered from :data:`DEFAULT_PLUGINS`, a
tuple of in-package module names, so a source checkout works without installed
metadata; third-party plugins come from the ``hepaudit`` entry-point group. A plugin is
blocked by name with ``--disable NAME`` or ``HEPAUDIT_DISABLE_PLUGINS=NAME,NAME``.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import metadata
from typing import TYPE_CHECKING, Any

import pluggy

from hepaudit import __version__, hookspecs
from hepaudit.errors import ConfigError, HepauditError
from hepaudit.hookspecs import hookimpl
from hepaudit.registries import ExplainerRegistry, RecipeRegistry

if TYPE_CHECKING:  # pragma: no cover
    from hepaudit.explainers.base import Explainer

__all__ = ["DEFAULT_PLUGINS", "ExplainerRegistry", "PluginHost", "PluginInfo", "RecipeRegistry", "hookimpl"]

ENTRY_POINT_GROUP = "hepaudit"
DISABLE_ENV = "HEPAUDIT_DISABLE_PLUGINS"

#: The built-in plugins, by module name, registered under these short names.
DEFAULT_PLUGINS: tuple[str, ...] = (
    "hepaudit.data.builtin_recipes",
    "hepaudit.explainers.dauc",
    "hepaudit.explainers.mad",
    "hepaudit.explainers.lrp",
    "hepaudit.explainers.gradient",
    "hepaudit.explainers.shap",
    "hepaudit.explainers.nap",
    "hepaudit.explainers.latent",
    "hepaudit.explainers.ood",
    "hepaudit.explainers.sanity",
)

def _short(module: str) -> str:
    return module.rsplit(".", 1)[-1]


@dataclass
class PluginInfo:
    name: str
    version: str
    module: str
    builtin: bool
    hooks: list[str] = field(default_factory=list)
    explainers: list[str] = field(default_factory=list)
    recipes: list[str] = field(default_factory=list)
    # per explainer: its description, whether it ranks features, what it needs
    explainer_details: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "module": self.module, "builtin": self.builtin,
                "hooks": self.hooks, "explainers": self.explainers, "recipes": self.recipes,
                "explainer_details": self.explainer_details}


def disabled_from_env() -> list[str]:
    return [n.strip() for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip()]


class PluginHost:
    """A fresh pluggy manager with hepaudit's hooks and typed wrappers for calling them."""

    def __init__(self, disable: Iterable[str] = (), entry_points: bool = True,
                 extra: Iterable[tuple[str, object]] = ()) -> None:
        self.pm = pluggy.PluginManager("hepaudit")
        self.pm.add_hookspecs(hookspecs)
        self.disabled = sorted(set(disable) | set(disabled_from_env()))
        for name in self.disabled:
            self.pm.set_blocked(name)
        self._versions: dict[str, str] = {}
        self._modules: dict[str, str] = {}
        self._builtin: set[str] = set()
        #: what went wrong in a plugin, one line each: that plugin is left out, everything else
        #: runs, and the audit report lists these among its warnings
        self.problems: list[str] = []
        self.broken: dict[str, str] = {}  # plugin name -> why it was left out
        for module in DEFAULT_PLUGINS:
            name = _short(module)
            if self.pm.is_blocked(name):
                continue
            self._register(importlib.import_module(module), name, __version__, module)
            self._builtin.add(name)
        if entry_points:
            self._load_entry_points()
        for name, plugin in extra:
            self._register(plugin, name, "local", getattr(plugin, "__name__", name))
        self._check_pending()
        self._explainers: ExplainerRegistry | None = None
        self._recipes: RecipeRegistry | None = None

    def _check_pending(self) -> None:
        """Like pytest: a ``hepaudit_*`` function matching no hook is an error naming plugin and hook."""
        from hepaudit.errors import close_matches

        known = [name for name in dir(hookspecs) if name.startswith("hepaudit_")]
        for name, caller in vars(self.pm.hook).items():
            if not name.startswith("hepaudit_") or getattr(caller, "spec", None) is not None:
                continue
            for impl in caller.get_hookimpls():
                if not impl.optionalhook:
                    raise HepauditError(f"plugin {impl.plugin_name}: {name} is not a hepaudit hook"
                                        f"{close_matches(name, known)}")
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            raise HepauditError(f"a plugin implements a hook hepaudit does not have: {exc}") from None

    def _register(self, plugin: object, name: str, version: str, module: str) -> None:
        if self.pm.is_blocked(name) or self.pm.get_plugin(name) is not None:
            return
        try:
            self.pm.register(plugin, name=name)
        except pluggy.PluginValidationError as exc:
            raise HepauditError(f"plugin {name}: {exc}") from None
        self._versions[name] = version
        self._modules[name] = module

    def _load_entry_points(self) -> None:
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            if self.pm.is_blocked(ep.name) or self.pm.get_plugin(ep.name) is not None:
                continue
            try:
                plugin = ep.load()
            except Exception as exc:  # a broken plugin must not stop hepaudit: it is left out, and said so
                self._left_out(ep.name, f"failed to import ({ep.value}): {type(exc).__name__}: {exc}")
                continue
            version = ep.dist.version if ep.dist is not None else "?"
            self._register(plugin, ep.name, version, ep.value)

    def _left_out(self, name: str, why: str) -> None:
        self.broken.setdefault(name, why)
        self.problems.append(f"plugin {name} {why}; it is left out (silence this with --disable {name} "
                             f"or {DISABLE_ENV}={name})")

    def _each_plugin(self, hook: str, registry: ExplainerRegistry | RecipeRegistry) -> None:
        """Call one registration hook plugin by plugin, so the registry knows who registered what.

        As pluggy calls an implementation: by name, with only the arguments it declares."""
        for impl in getattr(self.pm.hook, hook).get_hookimpls():
            name = impl.plugin_name
            if name in self.broken:
                continue
            registry._current = name
            offered = {"register": registry}
            try:
                impl.function(**{arg: offered[arg] for arg in impl.argnames})
            except Exception as exc:  # its registrations are withdrawn, the other plugins' stand
                if isinstance(exc, HepauditError) and "registered by both" in str(exc):
                    raise  # two plugins claim one name: the user must choose (--disable)
                registry.withdraw(name)
                self._left_out(name, f"raised in {hook}: {type(exc).__name__}: {exc}")

    # -- typed calls -----------------------------------------------------------------------------
    def explainers(self) -> ExplainerRegistry:
        if self._explainers is None:
            registry = ExplainerRegistry()
            self._each_plugin("hepaudit_register_explainers", registry)
            self._explainers = registry
        return self._explainers

    def recipes(self) -> RecipeRegistry:
        if self._recipes is None:
            registry = RecipeRegistry()
            self._each_plugin("hepaudit_register_recipes", registry)
            self._recipes = registry
        return self._recipes

    def explainer_class(self, name: str) -> type[Explainer[Any]]:
        classes = self.explainers().classes
        if name not in classes:
            from hepaudit.errors import close_matches

            broken = "".join(f"; plugin {p} {why}" for p, why in self.broken.items())
            raise ConfigError(f"unknown explainer {name!r}{close_matches(name, classes)} "
                              f"(available: {', '.join(sorted(classes))}){broken}")
        return classes[name]

    def plugin_of(self, explainer: str) -> dict[str, str]:
        owner = self.explainers().owner.get(explainer, "?")
        return {"name": owner, "version": self._versions.get(owner, "?")}

    def report_sections(self, report: Any) -> list[Any]:
        """Every plugin's sections; a plugin that raises loses its section, with a report warning."""
        sections: list[Any] = []
        for impl in reversed(self.pm.hook.hepaudit_report_sections.get_hookimpls()):  # registration order
            try:
                result: Any = impl.function(**{arg: report for arg in impl.argnames if arg == "report"})
                sections.extend(result or [])
            except Exception as exc:
                report.warnings.append(f"plugin {impl.plugin_name}: its report section could not be made: "
                                       f"{type(exc).__name__}: {exc}")
        return sections

    def register_commands(self, cli: Any) -> list[str]:
        """Every plugin's commands; the problems of plugins whose hook raised (they add none)."""
        problems = []
        for impl in reversed(self.pm.hook.hepaudit_register_commands.get_hookimpls()):
            try:
                impl.function(**{arg: cli for arg in impl.argnames if arg == "cli"})
            except Exception as exc:
                problems.append(f"plugin {impl.plugin_name}: its commands could not be added: "
                                f"{type(exc).__name__}: {exc}")
        return problems

    def info(self) -> list[PluginInfo]:
        explainers = self.explainers()
        recipes = self.recipes()
        out = []
        for name, plugin in self.pm.list_name_plugin():
            if plugin is None:
                continue
            hooks = sorted(h.name for h in self.pm.get_hookcallers(plugin) or [])
            out.append(PluginInfo(
                name=name, version=self._versions.get(name, "?"), module=self._modules.get(name, "?"),
                builtin=name in self._builtin, hooks=hooks,
                explainers=sorted(e for e, o in explainers.owner.items() if o == name),
                recipes=sorted(r for r, o in recipes.owner.items() if o == name),
                explainer_details={e: _details(explainers.classes[e]) for e, o in sorted(explainers.owner.items())
                                   if o == name},
            ))
        return sorted(out, key=lambda p: (not p.builtin, p.name))




def _details(cls: type[Explainer[Any]]) -> dict[str, Any]:
    """What ``hepaudit plugins --all`` says of one explainer class."""
    return {"description": cls.description or (cls.__doc__ or "").strip().split("\n")[0],
            "attribution": bool(cls.attribution), "needs": sorted(cls.needs)}
