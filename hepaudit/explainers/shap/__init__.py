"""SHAP for any ONNX tagger: exact Shapley values over all coalitions when the players are
few, Kernel SHAP (or antithetic permutation sampling) otherwise.

Modules: :mod:`.explainer` (the explainer: options, mergeable state, finish),
:mod:`.coalitions` (exact enumeration, Shapley kernel weights), :mod:`.kernel` (Kernel SHAP
sampling and the constrained weighted least squares; the permutation sampler),
:mod:`.background` (mean / sample / k-means backgrounds, seeded reservoirs),
:mod:`.evaluate` (batched v(S) through the tagger), :mod:`.figures` (beeswarm, dependence).
"""

# The package is the plugin (registered as "shap" in DEFAULT_PLUGINS): re-export its hook.
from hepaudit.explainers.shap.explainer import hepaudit_register_explainers

__all__ = ["hepaudit_register_explainers"]
