"""hepaudit: audit ONNX jet taggers on ROOT data.

The public API: :func:`audit` runs an audit from a TOML config and returns an
:class:`AuditReport`; :data:`hookimpl` marks plugin hook implementations; subclass
:class:`Explainer` to write an explainer; every explainer returns an
:class:`ExplainerResult`.
"""

from __future__ import annotations

__version__ = "0.1.0"

# Importing the submodule hepaudit.audit sets the package attribute `audit` to the module;
# this import runs after it and binds the name to the function for good.
from hepaudit.audit import audit  # noqa: E402
from hepaudit.errors import ConfigError, DataError, HepauditError, ModelError  # noqa: E402
from hepaudit.explainers.base import AuditContext, Chunk, Explainer  # noqa: E402
from hepaudit.plugins import hookimpl  # noqa: E402
from hepaudit.results import AuditReport, ExplainerResult, FeatureScore, Figure, ReportSection  # noqa: E402

__all__ = [
    "__version__", "audit", "hookimpl", "Explainer", "Chunk", "AuditContext", "ExplainerResult",
    "FeatureScore", "Figure", "ReportSection", "AuditReport", "HepauditError", "ConfigError", "DataError",
    "ModelError",
]
