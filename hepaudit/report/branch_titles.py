"""Titles for per_jet.root's branches: what each one holds and in which units.

ROOT shows a branch's title in ``TTree::Print`` and ``TBrowser``, and uproot gives it as
``tree["lrp_x"].title``; by default a writer puts the leaf list there (``score/F``), which
says nothing a reader does not already know. The titles come from the naming rules of
per_jet.root (docs/report.md): a branch no rule knows (a third-party explainer's) keeps the
default.
"""

from __future__ import annotations

import re

_OOD = "OOD"

# (pattern on the branch name, title); ``{0}`` is the pattern's first group. The first match wins,
# so the longer prefixes (``lrp_std_``) come before the shorter ones (``lrp_``).
_RULES: tuple[tuple[str, str], ...] = (
    (r"entry", "entry number of the jet in the input tree (or chain): the friend-tree index"),
    (r"score", "tagger score: the model's signal output for this jet"),
    (r"label", "truth label from the data: 1 signal, 0 background"),
    (r"base_value", "SHAP base value: the mean score over SHAP's reference jets, what the values add up from "
     "[score units]"),
    (r"shap_std_(.+)", "standard error of the SHAP value of {0} [score units]"),
    (r"shap_input_(.+)", "model input {0} of this jet, as the model saw it (after preprocessing)"),
    (r"shap_(.+)", "SHAP value of {0}: its additive contribution to the score [score units]"),
    (r"lrp_(.+)", "LRP relevance of {0}: its share of the explained logit [logit units]"),
    (r"grad_std_(.+)", "standard error of the gradient attribution of {0} (SmoothGrad spread)"),
    (r"grad_(.+)", "gradient attribution of {0} [units of the explained output: logit or score]"),
    (r"input_(.+)", "model input {0}, as the model saw it (after preprocessing)"),
    (r"ood_ae_score", f"{_OOD}: autoencoder reconstruction error, mean over the inputs of the squared error "
     "(standardised inputs unless ood_ae.standardise = false)"),
    (r"ood_ae_flag", f"{_OOD}: reconstruction error above ood_ae's threshold"),
    (r"ood_ensemble_std", f"{_OOD}: standard deviation of the ensemble members' scores"),
    (r"ood_ensemble_mi", f"{_OOD}: mutual information between the score and the ensemble member [nats]"),
    (r"ood_ensemble_flag", f"{_OOD}: ensemble disagreement above ood_ensemble's threshold"),
    (r"ood_flag", f"{_OOD}: flagged by any OOD explainer (logical or)"),
    (r"latent_pc", "latent: the jet's leading principal components of the hidden tensor (index: component)"),
    (r"mass", "jet mass from the constituents' four-momenta [units of the input momenta, usually GeV]"),
    (r"pt", "jet transverse momentum from the constituents [units of the input momenta, usually GeV]"),
    (r"n_constituents", "number of constituents in the jet"),
    (r"tau(\d)", "N-subjettiness tau_{0} (beta = 1, R0 = 0.8); NaN where it was not computed"),
    (r"tau(\d\d)", "N-subjettiness ratio tau_{0} (beta = 1, R0 = 0.8); NaN where it was not computed"),
)
_COMPILED = tuple((re.compile(pattern), title) for pattern, title in _RULES)


def branch_title(name: str, shape: tuple[int, ...] = ()) -> str | None:
    """The title of branch ``name`` whose per-jet values have ``shape``; None where no rule knows
    the name. An array branch of a per-particle input says how it is indexed."""
    for pattern, title in _COMPILED:
        match = pattern.fullmatch(name)
        if match:
            text = title.format(*match.groups())
            if len(shape) == 2 and not name.startswith("latent_"):
                text += f"; [particle][feature], {shape[0]} x {shape[1]}"
            return text
    return None
