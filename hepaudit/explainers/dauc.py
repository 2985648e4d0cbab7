"""ΔAUC: how much the tagger's performance depends on each feature (occlusion).

ΔAUC_k = AUC(f(x)) − AUC(f(x\\k)) over the labelled sample, where x\\k replaces feature k
(or a group) by the baseline (x̄ by default; docs/methods.md). Global only: the signal
and background columns of the ranking are null. AUCs are exact (ties count one half)
and weighted when the data has weights. Needs 1 + (number of units) forward passes,
shared with MAD.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hepaudit.bootstrap import poisson_weights, unit_intervals
from hepaudit.explainers.base import AuditContext, Chunk, Explainer
from hepaudit.explainers.columns import SpilledColumns
from hepaudit.explainers.hidden_units import HiddenState, HiddenUnits, hidden_dauc, hidden_field, hidden_figures
from hepaudit.explainers.occlusion import OcclusionOptions, Units, occlusion_units
from hepaudit.metrics import ReplicateAUC
from hepaudit.plugins import ExplainerRegistry, hookimpl
from hepaudit.results import ExplainerResult, FeatureScore, Figure, sorted_scores


@dataclass
class DaucState:
    """Every jet's scores, float32 (the model's own precision), labels and weights, kept
    until the exact AUCs; spilled to a temporary file (:class:`SpilledColumns`): not in memory."""

    scores: SpilledColumns  # row 0 the tagger's score, row 1 + k with unit k occluded
    labels: SpilledColumns  # (1, jets) bool
    weights: SpilledColumns | None = None  # (1, jets) float64, for weighted data
    entries: SpilledColumns | None = None  # (1, jets) int64: the bootstrap's weights are keyed by them
    hidden: HiddenState | None = None  # the hidden tensor of option ``hidden``, per jet


class DeltaAUC(Explainer[DaucState]):
    name = "dauc"
    Options = OcclusionOptions
    needs = frozenset({"labels", "input_mean"})
    attribution = True
    description = "Occlusion ΔAUC: AUC(f(x)) − AUC(f(x\\k)), feature k replaced by its mean"

    def __init__(self, options: OcclusionOptions, context: AuditContext) -> None:
        super().__init__(options, context)
        self.units: Units = occlusion_units(context, options.groups, self.name, options.features)
        self.hidden = HiddenUnits(context, options.hidden, self.name) if options.hidden else None

    def start(self) -> DaucState:
        return DaucState(SpilledColumns(1 + len(self.units.all)), SpilledColumns(1, bool),
                         entries=SpilledColumns(1, np.int64) if self.context.bootstrap else None,
                         hidden=HiddenState() if self.hidden else None)

    def update(self, state: DaucState, chunk: Chunk) -> DaucState:
        assert chunk.labels is not None
        scores, _ = chunk.occluded(self.units.all, self.options.baseline)
        state.scores.append(chunk.score[None, :], scores)
        state.labels.append(chunk.labels[None, :].astype(bool, copy=False))
        if state.entries is not None:
            state.entries.append(chunk.entries[None, :])
        if chunk.weights is not None:
            if state.weights is None:
                state.weights = SpilledColumns(1, np.float64)
            state.weights.append(chunk.weights[None, :])
        if self.hidden is not None and state.hidden is not None:
            self.hidden.add(state.hidden, chunk)
        return state

    def merge(self, a: DaucState, b: DaucState) -> DaucState:
        weights = b.weights if a.weights is None else (a.weights if b.weights is None else a.weights.merged(b.weights))
        entries = b.entries if a.entries is None else (a.entries if b.entries is None else a.entries.merged(b.entries))
        hidden = None if a.hidden is None or b.hidden is None else HiddenUnits.merge(a.hidden, b.hidden)
        return DaucState(a.scores.merged(b.scores), a.labels.merged(b.labels), weights, entries, hidden)

    def _aucs(self, state: DaucState, labels: np.ndarray, weights: np.ndarray | None
              ) -> tuple[float, np.ndarray, np.ndarray | None]:
        """The baseline AUC, each unit's ΔAUC, and (R, units) the ΔAUC of each bootstrap replicate.

        Replicate 0 is the data's own weights, replicates 1.. the Poisson counts times them:
        one sort of each unit's scores serves the exact AUC and every replicate, units on a
        few threads (metrics.ReplicateAUC)."""
        signal = labels.astype(bool)
        replicates = self.context.bootstrap if state.entries is not None else 0
        entries = state.entries.row(0) if state.entries is not None and replicates else None
        auc = ReplicateAUC(signal, self._multipliers(len(signal), entries, replicates), weights)
        base = auc(state.scores.row(0))
        occluded = auc.each(lambda k: state.scores.row(1 + k), len(self.units.all))  # (units, 1 + R)
        reps = base[1:, None] - occluded[:, 1:].T if replicates else None
        return float(base[0]), base[0] - occluded[:, 0], reps

    def _multipliers(self, n: int, entries: np.ndarray | None, replicates: int) -> np.ndarray:
        """(jets, 1 + R) uint8: a column of ones (the jets' own weights), then each Poisson
        replicate's count (66 MB at 2M jets and 32 replicates)."""
        out = np.empty((n, 1 + replicates), np.uint8)
        out[:, 0] = 1
        if replicates and entries is not None:
            poisson_weights(entries, self.context.seed, replicates, out=out.T[1:])
        return out

    def finish(self, state: DaucState) -> ExplainerResult:
        labels = state.labels.row(0)
        weights = state.weights.row(0) if state.weights is not None else None
        base_auc, deltas, reps = self._aucs(state, labels, weights)
        n_feat = len(self.units.features)
        features = sorted_scores([FeatureScore(name, float(d))
                                  for name, d in zip(self.context.features, deltas[:n_feat])])
        groups = sorted_scores([FeatureScore(name, float(d))
                                for name, d in zip(self.units.group_names, deltas[n_feat:])])
        features, groups, replicates = unit_intervals(features, groups, reps, list(self.context.features[:n_feat]),
                                                      list(self.units.group_names))
        fields: dict[str, object] = {}
        if self.hidden is not None and state.hidden is not None:
            hidden = hidden_dauc(self.hidden.scores(state.hidden, self.options.baseline))
            fields["hidden_units"] = hidden_field(self.hidden, self.options.baseline, hidden)
        top = features[0] if features else None
        summary = f"Baseline AUC {base_auc:.4f}." + (
            f" Occluding {top.feature} costs the most: ΔAUC = {top.score:.4f}." if top else "")
        return self.result(
            feature_importance=features,
            group_importance=groups or None,
            replicates=replicates,
            fields={"baseline_auc": base_auc,
                    "definition": "AUC(f(x)) - AUC(f(x\\k)), x\\k: feature k set to the baseline",
                    "forward_passes_per_jet": 1 + len(self.units.all), **fields},
            summary=summary,
        )

    def draw(self, result: ExplainerResult) -> list[Figure]:
        return hidden_figures(result, "ΔAUC")


@hookimpl
def hepaudit_register_explainers(register: ExplainerRegistry) -> None:
    register(DeltaAUC)
