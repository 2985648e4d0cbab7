"""hepaudit: audit ONNX jet taggers on ROOT data.

The public API: :func:`audit` runs an audit from a TOML config and returns an
:class:`AuditReport`; :data:`hookimpl` marks plugin hook implementations; subclass
:class:`Explainer` to write an explainer; every explainer returns an
:class:`ExplainerResult`. Plugin authors find everything they need in :mod:`hepaudit.api`.

Importing the package is light: the names below load their modules on first use, so a
plugin or a notebook pays for onnxruntime, uproot and matplotlib only when it runs an audit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hepaudit.lazy import lazy_exports

__version__ = "0.1.0"

# hepaudit.audit is both a submodule and the function in it. The module is tiny (its imports
# happen inside the function), so it is imported here: the function is bound over the module
# attribute once and for all, whoever imports the submodule later.
from hepaudit.audit import audit  # noqa: E402

_LAZY = {
    "hookimpl": "hepaudit.hookspecs",
    "Explainer": "hepaudit.explainers.base", "Chunk": "hepaudit.explainers.base",
    "AuditContext": "hepaudit.explainers.base",
    "ExplainerResult": "hepaudit.results", "FeatureScore": "hepaudit.results", "Figure": "hepaudit.results",
    "ReportSection": "hepaudit.results", "AuditReport": "hepaudit.results", "Finding": "hepaudit.results",
    "HepauditError": "hepaudit.errors", "ConfigError": "hepaudit.errors", "DataError": "hepaudit.errors",
    "ModelError": "hepaudit.errors",
    "ProgressEvent": "hepaudit.run.progress", "AuditCancelled": "hepaudit.run.progress",
}

__all__ = [
    "__version__", "audit", "hookimpl", "Explainer", "Chunk", "AuditContext", "ExplainerResult", "FeatureScore",
    "Figure", "ReportSection", "AuditReport", "Finding", "HepauditError", "ConfigError", "DataError", "ModelError",
    "ProgressEvent", "AuditCancelled",
]

if TYPE_CHECKING:  # pragma: no cover
    from hepaudit.errors import ConfigError, DataError, HepauditError, ModelError
    from hepaudit.explainers.base import AuditContext, Chunk, Explainer
    from hepaudit.hookspecs import hookimpl
    from hepaudit.results import AuditReport, ExplainerResult, FeatureScore, Figure, Finding, ReportSection
    from hepaudit.run.progress import AuditCancelled, ProgressEvent

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
