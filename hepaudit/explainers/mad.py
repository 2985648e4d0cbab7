"""MAD: mean absolute differential relevance of each feature, per class and overall.

Δ_k(x) = t(x) − t(x\\k), with t the score f (``target = "probability"``) or its logit z
(``target = "logit"``), and x\\k feature k (or a group) set to the baseline (x̄ by
default). MAD_k = the (weighted) mean of |Δ_k| over jets, overall and per class. The
paper's variant (Khot, Neubauer & Roy, arXiv:2210.04371) is ``target = "logit"``,
``relative = true`` (Δ_k / z(x)) and ``iqr_clip = "signed"``: per feature and class, the
quartiles of the *signed* Δ are taken (NaN ignored), values beyond 1.5 × IQR from them are
set to 0, then |Δ| is averaged. ``iqr_clip = "abs"`` clips |Δ| instead (a different
estimator: the quartiles of |Δ| fence a one-sided distribution); ``true`` means
``"signed"``. A class whose IQR is 0 for a unit (most of its Δ identical, often 0) has every
other Δ clipped: the result names those units instead of reporting a silent 0. Shares its
forward passes with ΔAUC.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from hepaudit.bootstrap import BootstrapMeans, jet_weights, merged, unit_intervals
from hepaudit.explainers.base import AuditContext, Chunk, Explainer
from hepaudit.explainers.columns import SpilledColumns
from hepaudit.explainers.hidden_units import HiddenState, HiddenUnits, hidden_field, hidden_figures, hidden_mad
from hepaudit.explainers.iqr import clipped_class_sums
from hepaudit.explainers.occlusion import OcclusionOptions, Units, occlusion_units
from hepaudit.explanation import Explanation, ExplanationSample
from hepaudit.plugins import ExplainerRegistry, hookimpl
from hepaudit.results import CLASS_NAMES, ExplainerResult, FeatureScore, Figure, sorted_scores
from hepaudit.sampling import salt_for


@dataclass(frozen=True)
class MadOptions(OcclusionOptions):
    target: Literal["probability", "logit"] = "probability"  # Δ of the probability f(x) or of the logit z(x)
    relative: bool = False  # Δ / z(x), as in Khot, Neubauer & Roy
    # the paper's outlier removal per class: "signed" (clip the signed Δ beyond 1.5 IQR; also true) or "abs"
    iqr_clip: bool | Literal["signed", "abs"] = False
    sample_jets: int = 2000  # jets whose per-feature Δ are kept (a seeded sample) for the box plots

    @property
    def clip(self) -> str | None:
        """The IQR clipping variant: "signed" (the paper's; also ``true``), "abs", or None."""
        if self.iqr_clip is True:
            return "signed"
        return self.iqr_clip or None


@dataclass
class MadState:
    """Running sums of w·|Δ| per class (index 0 = background, 1 = signal, 2 = unlabelled).

    With ``iqr_clip`` the per-jet signed Δ are kept instead (clipping needs quartiles): (units, n)
    float32, spilled to a temporary file like ΔAUC's scores (0.75 GB for 94 units at 2M jets)
    and read back one unit at a time; the class and weight per jet stay in memory.
    """

    sums: np.ndarray | None = None  # (3, units)
    weight: np.ndarray = field(default_factory=lambda: np.zeros(3))
    deltas: SpilledColumns | None = None  # (units, n) float32, iqr_clip only
    classes: list[np.ndarray] = field(default_factory=list)
    weights: list[np.ndarray] = field(default_factory=list)
    boot: BootstrapMeans | None = None  # bootstrap replicates of mean |Δ| (unclipped variants)
    entries: list[np.ndarray] = field(default_factory=list)  # iqr_clip: the bootstrap's keys
    hidden: HiddenState | None = None  # the hidden tensor of option ``hidden``, per jet
    sample: ExplanationSample | None = None  # the signed Δ of a seeded sample of jets (box plots)


class MeanAbsoluteDifferentialRelevance(Explainer[MadState]):
    name = "mad"
    Options = MadOptions
    needs = frozenset({"input_mean"})
    attribution = True
    description = "Mean absolute differential relevance: mean |f(x) − f(x\\k)|, per class"

    def __init__(self, options: MadOptions, context: AuditContext) -> None:
        super().__init__(options, context)
        self.units: Units = occlusion_units(context, options.groups, self.name, options.features)
        self.hidden = HiddenUnits(context, options.hidden, self.name) if options.hidden else None

    def start(self) -> MadState:
        clip = self.options.clip
        return MadState(deltas=SpilledColumns(len(self.units.all)) if clip else None,
                        boot=None if clip else self.context.bootstrap_means("mad"),
                        hidden=HiddenState() if self.hidden else None,
                        sample=ExplanationSample(self.options.sample_jets, salt_for(self.context.seed, "mad-sample")))

    def update(self, state: MadState, chunk: Chunk) -> MadState:
        scores, logits = chunk.occluded(self.units.all, self.options.baseline)
        if self.hidden is not None and state.hidden is not None:
            self.hidden.add(state.hidden, chunk)
        if self.options.target == "logit":
            delta = chunk.logit[None, :] - logits
            reference = chunk.logit
        else:
            delta = chunk.score[None, :] - scores
            reference = chunk.score
        if self.options.relative:
            with np.errstate(divide="ignore", invalid="ignore"):
                delta = np.where(reference[None, :] != 0, delta / reference[None, :], 0.0)
        cls = np.full(len(chunk), 2, np.int8) if chunk.labels is None else chunk.labels.astype(np.int8)
        n_feat = len(self.units.features)
        if state.sample is not None and n_feat:
            entries = np.asarray(chunk.entries, np.int64)
            rows = state.sample.wanted(entries)  # most jets of a large audit cannot enter: no copy for them
            if rows.any():
                state.sample.add(Explanation(np.ascontiguousarray(delta[:n_feat, rows].T, np.float32),
                                             list(self.context.features[:n_feat]), entries[rows],
                                             labels=cls[rows], scores=chunk.score[rows], output=self.options.target))
        w = np.ones(len(chunk)) if chunk.weights is None else chunk.weights
        if state.deltas is not None:
            state.deltas.append(delta)
            state.classes.append(cls)
            state.weights.append(w)
            state.entries.append(np.asarray(chunk.entries, np.int64))
            return state
        absdelta = np.abs(delta, out=delta)  # delta is this chunk's own array, no longer needed
        if state.boot is not None:
            state.boot.add(absdelta.T, chunk.labels, chunk.weights, chunk.entries)
        # per class, Σ w|Δ| as one product with a (jets, 3) matrix of each jet's weight in its class's
        # column: one pass over |Δ|, where selecting each class's columns copied it three times
        by_class = np.zeros((len(chunk), 3))
        by_class[np.arange(len(chunk)), cls] = w
        sums = (absdelta @ by_class).T
        state.weight += by_class.sum(axis=0)
        state.sums = sums if state.sums is None else state.sums + sums
        return state

    def merge(self, a: MadState, b: MadState) -> MadState:
        sums = b.sums if a.sums is None else (a.sums if b.sums is None else a.sums + b.sums)
        sample = b.sample if a.sample is None else (a.sample if b.sample is None else a.sample.merged(b.sample))
        deltas = b.deltas if a.deltas is None else (a.deltas if b.deltas is None else a.deltas.merged(b.deltas))
        hidden = None if a.hidden is None or b.hidden is None else HiddenUnits.merge(a.hidden, b.hidden)
        return MadState(sums, a.weight + b.weight, deltas, a.classes + b.classes, a.weights + b.weights,
                        merged(a.boot, b.boot), a.entries + b.entries, hidden, sample)

    def _clipped_sums(self, state: MadState
                      ) -> tuple[np.ndarray, np.ndarray, dict[int, list[int]], np.ndarray | None]:
        """Weighted sums of |Δ| after IQR clipping (explainers/iqr.py), the class weights, per
        class the units whose IQR is 0, and the bootstrap replicates of the means."""
        n_units = len(self.units.all)
        if state.deltas is None or not state.classes:
            return np.zeros((3, n_units)), np.zeros(3), {}, None
        deltas = state.deltas
        weights = np.concatenate(state.weights)
        boot = jet_weights(state.entries, weights, self.context.seed, self.context.bootstrap)
        return clipped_class_sums(lambda k: deltas.row(k), n_units, np.concatenate(state.classes), weights,
                                  None if self.options.clip == "signed" else np.abs, boot)

    def finish(self, state: MadState) -> ExplainerResult:
        flat: dict[int, list[int]] = {}
        reps = state.boot.overall() if state.boot is not None else None
        if self.options.clip:
            sums, weight, flat, reps = self._clipped_sums(state)
        else:
            sums = state.sums if state.sums is not None else np.zeros((3, len(self.units.all)))
            weight = state.weight
        with np.errstate(divide="ignore", invalid="ignore"):
            overall = sums.sum(axis=0) / weight.sum()
            background = sums[0] / weight[0] if weight[0] > 0 else None
            signal = sums[1] / weight[1] if weight[1] > 0 else None

        def scores(names: list[str], offset: int) -> list[FeatureScore]:
            return [FeatureScore(name, float(overall[offset + i]),
                                 None if signal is None else float(signal[offset + i]),
                                 None if background is None else float(background[offset + i]))
                    for i, name in enumerate(names)]

        n_feat = len(self.units.features)
        features = sorted_scores(scores(self.context.features[:n_feat], 0))
        groups = sorted_scores(scores(self.units.group_names, n_feat))
        features, groups, replicates = unit_intervals(features, groups, reps, list(self.context.features[:n_feat]),
                                                      list(self.units.group_names))
        what = "logit" if self.options.target == "logit" else "score"
        summary = (f"Mean |Δ{what}| when a feature is set to its baseline; largest for "
                   f"{features[0].feature} ({features[0].score:.3g})." if features else "")
        names = list(self.context.features[:n_feat]) + list(self.units.group_names)
        iqr_zero = {CLASS_NAMES[c]: [names[k] for k in ks] for c, ks in flat.items()}
        warnings = [f"{cls}: the IQR of Δ is 0 for {len(units)} of {len(names)} units (most Δ equal), so "
                    f"every other Δ is clipped and their MAD is ~0: {', '.join(units[:8])}"
                    f"{' ...' if len(units) > 8 else ''}" for cls, units in iqr_zero.items()]
        extra: dict[str, object] = {}
        if self.hidden is not None and state.hidden is not None:
            hidden = hidden_mad(self.hidden.scores(state.hidden, self.options.baseline), self.options.target,
                                self.options.relative)
            extra["hidden_units"] = hidden_field(self.hidden, self.options.baseline, hidden)
        return self.result(
            feature_importance=features, group_importance=groups or None,
            fields={**extra, "target": self.options.target, "relative": self.options.relative,
                    "iqr_clip": self.options.clip or False, "iqr_zero": iqr_zero or None,
                    "definition": "mean over jets of |t(x) - t(x\\k)|, t = " + what
                    + ({"signed": "; signed Delta clipped beyond 1.5 IQR per class (the paper's)",
                        "abs": "; |Delta| clipped beyond 1.5 IQR per class"}.get(self.options.clip or "", ""))},
            summary=summary, warnings=warnings, replicates=replicates,
            explanation=state.sample.rows if state.sample is not None else None,
        )

    def draw(self, result: ExplainerResult) -> list[Figure]:
        """Box plots of the signed Δ per feature (a seeded sample of jets) and the hidden units' bars."""
        from hepaudit.report.explanation_figures import Labels, box_plot

        what = "logit" if self.options.target == "logit" else "score"
        figures = []
        if result.explanation is not None and len(result.explanation):
            labels = Labels("mad", "MAD", "Δ", f"{what} change when the feature is set to its baseline", "jet")
            boxes = box_plot(result.explanation, labels)
            if boxes is not None:
                figures.append(boxes)
        return figures + hidden_figures(result, f"mean |Δ{what}|")


@hookimpl
def hepaudit_register_explainers(register: ExplainerRegistry) -> None:
    register(MeanAbsoluteDifferentialRelevance)
