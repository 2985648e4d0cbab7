"""Can I trust this tagger on my data? Out-of-distribution checks, ensembles and calibration.

Three built-in explainers, registered by this plugin (``ood``):

- ``ood_ae`` (:mod:`.autoencoder`): autoencoder reconstruction error of the model inputs
  against a reference sample; the user's ONNX autoencoder or one fitted here (:mod:`.fit`);
- ``ood_ensemble`` (:mod:`.ensemble`): disagreement of an ensemble of taggers (std and
  mutual information of their signal scores);
- ``calibration`` (:mod:`.calibration`): reliability diagram, ECE, and Platt / isotonic
  recalibration.

Reference sampling, thresholds, flagged fractions and the kinematic binning they share live
in :mod:`.common`; their figures in :mod:`.figures`. Per jet, every OOD explainer writes its
own flag (``ood_ae_flag``, ``ood_ensemble_flag``) and ORs it into ``ood_flag``.
"""

from __future__ import annotations

from hepaudit.plugins import ExplainerRegistry, hookimpl


@hookimpl
def hepaudit_register_explainers(register: ExplainerRegistry) -> None:
    from hepaudit.explainers.ood.autoencoder import OodAutoencoder
    from hepaudit.explainers.ood.calibration import Calibration
    from hepaudit.explainers.ood.ensemble import OodEnsemble

    register(OodAutoencoder)
    register(OodEnsemble)
    register(Calibration)
