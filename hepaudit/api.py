"""The supported surface for plugin authors: everything a plugin needs, and nothing else.

Import from here (or the package root for the most common names), not from hepaudit's
internal modules, which may move::

    from hepaudit.api import Explainer, ExplainerResult, FeatureScore, hookimpl, roc_auc

What is here, by purpose (docs/plugins.md has a section on each):

* hooks: :data:`hookimpl`; the registries the registration hooks receive
  (:class:`ExplainerRegistry`, :class:`RecipeRegistry`);
* explainers: :class:`Explainer`, :class:`Chunk`, :class:`AuditContext`, :class:`AuditFacts`,
  :class:`NoOptions`; what ``needs`` may hold (:data:`Need`, :data:`LABELS`,
  :data:`INPUT_MEAN`, :data:`REFERENCE`, :data:`ARRAYS`);
* results: :class:`ExplainerResult`, :class:`FeatureScore`, :class:`Figure`,
  :class:`ReportSection`, :class:`AuditReport`, :func:`sorted_scores`; per-jet attributions
  in one container, :class:`Explanation` (and :class:`ExplanationSample`, a seeded sample of
  its rows that merges exactly);
* numbers: :func:`roc_auc` (exact, weighted), :func:`feature_matrix` (a chunk's inputs as
  one (jets, features) matrix in the report's feature order) and its inverse
  :func:`with_features` (input tensors with the features set from such a matrix);
* sampling that merges exactly: :func:`seeded_keys`, :func:`salted_uniform`, :func:`salt_for`,
  :func:`to_unit`, :class:`Reservoir` (per class: :func:`add_by_class`,
  :func:`merge_by_class`); large per-jet state on disk: :class:`SpilledColumns`;
* figures: :mod:`hepaudit.plotting`;
* errors: :class:`HepauditError`, :class:`ConfigError`, :class:`DataError`, :class:`ModelError`.

Each name loads its module on first use: importing this module costs nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hepaudit.lazy import lazy_exports

_WHERE = {
    "hookimpl": "hepaudit.hookspecs",
    "ExplainerRegistry": "hepaudit.registries", "RecipeRegistry": "hepaudit.registries",
    "Explainer": "hepaudit.explainers.base", "Chunk": "hepaudit.explainers.base",
    "AuditContext": "hepaudit.explainers.base", "AuditFacts": "hepaudit.explainers.base",
    "NoOptions": "hepaudit.explainers.base",
    "Need": "hepaudit.needs", "LABELS": "hepaudit.needs", "INPUT_MEAN": "hepaudit.needs",
    "REFERENCE": "hepaudit.needs", "ARRAYS": "hepaudit.needs", "KNOWN_NEEDS": "hepaudit.needs",
    "ExplainerResult": "hepaudit.results", "FeatureScore": "hepaudit.results", "Figure": "hepaudit.results",
    "ReportSection": "hepaudit.results", "AuditReport": "hepaudit.results", "sorted_scores": "hepaudit.results",
    "roc_auc": "hepaudit.metrics", "feature_matrix": "hepaudit.data.builders",
    "with_features": "hepaudit.data.builders",
    "seeded_keys": "hepaudit.sampling", "salted_uniform": "hepaudit.sampling", "salt_for": "hepaudit.sampling",
    "to_unit": "hepaudit.sampling", "Reservoir": "hepaudit.explainers.shap.background",
    "add_by_class": "hepaudit.explainers.shap.background", "merge_by_class": "hepaudit.explainers.shap.background",
    "SpilledColumns": "hepaudit.explainers.columns",
    "HepauditError": "hepaudit.errors", "ConfigError": "hepaudit.errors", "DataError": "hepaudit.errors",
    "ModelError": "hepaudit.errors",
    "ProgressEvent": "hepaudit.run.progress",
    "Explanation": "hepaudit.explanation", "ExplanationSample": "hepaudit.explanation",
}

__all__ = [
    "hookimpl", "ExplainerRegistry", "RecipeRegistry", "Explainer", "Chunk", "AuditContext", "AuditFacts",
    "NoOptions", "Need", "LABELS", "INPUT_MEAN", "REFERENCE", "ARRAYS", "KNOWN_NEEDS", "ExplainerResult",
    "FeatureScore", "Figure", "ReportSection", "AuditReport", "sorted_scores", "roc_auc", "feature_matrix",
    "with_features", "seeded_keys", "salted_uniform", "salt_for", "to_unit", "Reservoir", "add_by_class",
    "merge_by_class", "SpilledColumns", "HepauditError", "ConfigError", "DataError", "ModelError",
    "ProgressEvent", "Explanation", "ExplanationSample",
]

if TYPE_CHECKING:  # pragma: no cover
    from hepaudit.data.builders import feature_matrix, with_features
    from hepaudit.errors import ConfigError, DataError, HepauditError, ModelError
    from hepaudit.explainers.base import AuditContext, AuditFacts, Chunk, Explainer, NoOptions
    from hepaudit.explainers.columns import SpilledColumns
    from hepaudit.explainers.shap.background import Reservoir, add_by_class, merge_by_class
    from hepaudit.explanation import Explanation, ExplanationSample
    from hepaudit.hookspecs import hookimpl
    from hepaudit.metrics import roc_auc
    from hepaudit.needs import ARRAYS, INPUT_MEAN, KNOWN_NEEDS, LABELS, REFERENCE, Need
    from hepaudit.registries import ExplainerRegistry, RecipeRegistry
    from hepaudit.results import AuditReport, ExplainerResult, FeatureScore, Figure, ReportSection, sorted_scores
    from hepaudit.run.progress import ProgressEvent
    from hepaudit.sampling import salt_for, salted_uniform, seeded_keys, to_unit

__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
