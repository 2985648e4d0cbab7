"""ΔAUC: how much the tagger's performance depends on each feature (occlusion).

ΔAUC_k = AUC(f(x)) − AUC(f(x\\k)) over the labelled sample, where x\\k replaces feature k
(or a group) by the baseline (x̄ by default; docs/methods.md). Global only: the signal
and background columns of the ranking are null. AUCs are exact (ties count one half)
and weighted when the data has weights. Needs 1 + (number of units) forward passes,
shared with MAD.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hepaudit.explainers.base import AuditContext, Chunk, Explainer
from hepaudit.explainers.occlusion import OcclusionOptions, Units, occlusion_units
from hepaudit.metrics import roc_auc, roc_auc_each
from hepaudit.plugins import ExplainerRegistry, hookimpl
from hepaudit.results import ExplainerResult, FeatureScore, sorted_scores


@dataclass
class DaucState:
    """Scores per chunk, kept as float32 (the model's own precision) until the exact AUCs."""

    base: list[np.ndarray] = field(default_factory=list)
    occluded: list[np.ndarray] = field(default_factory=list)  # (units, n) per chunk
    labels: list[np.ndarray] = field(default_factory=list)
    weights: list[np.ndarray] = field(default_factory=list)


class DeltaAUC(Explainer[DaucState]):
    name = "dauc"
    Options = OcclusionOptions
    needs = frozenset({"labels", "input_mean"})
    attribution = True
    description = "Occlusion ΔAUC: AUC(f(x)) − AUC(f(x\\k)), feature k replaced by its mean"

    def __init__(self, options: OcclusionOptions, context: AuditContext) -> None:
        super().__init__(options, context)
        self.units: Units = occlusion_units(context, options.groups, self.name, options.features)

    def start(self) -> DaucState:
        return DaucState()

    def update(self, state: DaucState, chunk: Chunk) -> DaucState:
        assert chunk.labels is not None
        scores, _ = chunk.occluded(self.units.all, self.options.baseline)
        state.base.append(chunk.score.astype(np.float32))
        state.occluded.append(scores.astype(np.float32))
        state.labels.append(chunk.labels)
        if chunk.weights is not None:
            state.weights.append(chunk.weights)
        return state

    def merge(self, a: DaucState, b: DaucState) -> DaucState:
        return DaucState(a.base + b.base, a.occluded + b.occluded, a.labels + b.labels, a.weights + b.weights)

    def finish(self, state: DaucState) -> ExplainerResult:
        labels = np.concatenate(state.labels)
        weights = np.concatenate(state.weights) if state.weights else None
        base_auc = roc_auc(np.concatenate(state.base), labels, weights)
        # one unit's scores at a time (a unit per thread): concatenating the whole (units, jets)
        # matrix would double the explainer's memory at the end of a large audit
        deltas = base_auc - roc_auc_each(lambda k: np.concatenate([chunk[k] for chunk in state.occluded]),
                                         len(self.units.all), labels, weights)
        n_feat = len(self.units.features)
        features = [FeatureScore(name, float(d)) for name, d in zip(self.context.features, deltas[:n_feat])]
        groups = [FeatureScore(name, float(d)) for name, d in zip(self.units.group_names, deltas[n_feat:])]
        top = sorted_scores(features)[0] if features else None
        summary = f"Baseline AUC {base_auc:.4f}." + (
            f" Occluding {top.feature} costs the most: ΔAUC = {top.score:.4f}." if top else "")
        return self.result(
            feature_importance=sorted_scores(features),
            group_importance=sorted_scores(groups) if groups else None,
            fields={"baseline_auc": base_auc,
                    "definition": "AUC(f(x)) - AUC(f(x\\k)), x\\k: feature k set to the baseline",
                    "forward_passes_per_jet": 1 + len(self.units.all)},
            summary=summary,
        )


@hookimpl
def hepaudit_register_explainers(register: ExplainerRegistry) -> None:
    register(DeltaAUC)
