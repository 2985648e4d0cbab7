"""Every hook a hepaudit plugin can implement.

Implement them in a module or class decorated with :data:`hepaudit.hookimpl` and expose
it through the ``hepaudit`` entry-point group::

    [project.entry-points.hepaudit]
    my_plugin = "my_package.plugin"

Registration hooks receive a registry object to call (tox's pattern), so a plugin adds
as many things as it likes and the core never scatters ``pm.hook`` calls around. Every hook
is called through pluggy, with the arguments passed by name: an implementation may take
fewer arguments than its hook offers (none at all, even), never others.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:  # pragma: no cover
    import click

    from hepaudit.registries import ExplainerRegistry, RecipeRegistry
    from hepaudit.results import AuditReport, ReportSection

#: Marks a hook specification (hepaudit's own, below).
hookspec = pluggy.HookspecMarker("hepaudit")
#: Marks a plugin's hook implementation: ``@hookimpl def hepaudit_register_explainers(register): ...``.
hookimpl = pluggy.HookimplMarker("hepaudit")


@hookspec
def hepaudit_register_explainers(register: ExplainerRegistry) -> None:
    """Register explainer classes.

    Call ``register(MyExplainer)`` for each :class:`hepaudit.Explainer` subclass; its
    ``name`` becomes the ``[explainers.NAME]`` table and the report key. Registering a
    name twice is an error that names both plugins.

    :param register: the explainer registry of this audit.

    .. versionadded:: 0.1
    """


@hookspec
def hepaudit_register_recipes(register: RecipeRegistry) -> None:
    """Register named preprocessing recipes for constituents inputs.

    Call ``register("name", recipe)`` where ``recipe(parts, jet, max_particles)`` returns a
    :class:`hepaudit.data.recipes.RecipeOutput`; configs use it as ``preprocess = "name"``.

    :param register: the recipe registry of this audit.

    .. versionadded:: 0.1
    """


@hookspec
def hepaudit_report_sections(report: AuditReport) -> list[ReportSection] | None:
    """Add sections to the report once all explainers have finished.

    Return a list of :class:`hepaudit.ReportSection` (or None). Each appears in report.html
    and under ``sections`` in report.json.

    :param report: the finished audit report (read it, do not change it).

    .. versionadded:: 0.1
    """


@hookspec
def hepaudit_register_commands(cli: click.Group) -> None:
    """Add commands to the ``hepaudit`` command line.

    :param cli: the top-level click group; use ``@cli.command()`` to add to it.

    .. versionadded:: 0.1
    """
