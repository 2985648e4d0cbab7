"""The hepaudit plugin template: copy this module to write a plugin of your own.

This module is what the ``hepaudit`` entry point in pyproject.toml names
(``example = "hepaudit_example.plugin"``). hepaudit imports it and registers every function
marked with :data:`hepaudit.hookimpl` whose name is a hook from :mod:`hepaudit.hookspecs`;
a misspelled hook name is an error when hepaudit starts, not a silent no-op. It shows one
hook of each kind:

* ``hepaudit_register_explainers`` adds :class:`PermutationImportance` (``permutation``),
  run by an ``[explainers.permutation]`` table in the audit config;
* ``hepaudit_report_sections`` adds a section to report.json and report.html;
* ``hepaudit_register_commands`` adds the command ``hepaudit example-hello``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import click
import numpy as np
from hepaudit.api import (
    AuditContext,
    Chunk,
    Explainer,
    ExplainerResult,
    FeatureScore,
    ReportSection,
    hookimpl,
    roc_auc,
    sorted_scores,
)

from hepaudit_example import __version__

if TYPE_CHECKING:  # pragma: no cover
    from hepaudit.api import AuditReport, ExplainerRegistry

#: How many top features of each method the report section compares.
TOP = 5


# -- the explainer ------------------------------------------------------------------------------

@dataclass(frozen=True)
class PermutationOptions:
    """Options of ``[explainers.permutation]``; hepaudit validates the table against these fields.

    Unknown keys and wrong types are rejected by hepaudit with the key named; range checks
    go in ``__post_init__`` and raise ValueError, which hepaudit reports as a config error.
    """

    repeats: int = 1  # independent permutations per feature; the AUC drop is averaged over them
    per_jet: bool = False  # write permutation_max_abs_shift to per_jet.root

    def __post_init__(self) -> None:
        if self.repeats < 1:
            raise ValueError(f"repeats: expected an integer >= 1, found {self.repeats}")


@dataclass
class PermutationState:
    """The mergeable partial state: per-chunk scores as float32 (the model's own precision).

    The AUC is not additive over chunks, so the scores are kept until ``finish``, as the
    built-in ``dauc`` does: memory is (1 + repeats × features) × 4 bytes per jet.
    """

    base: list[np.ndarray] = field(default_factory=list)  # (n,) per chunk
    permuted: list[np.ndarray] = field(default_factory=list)  # (repeats, features, n) per chunk
    labels: list[np.ndarray] = field(default_factory=list)
    weights: list[np.ndarray] = field(default_factory=list)


class PermutationImportance(Explainer[PermutationState]):
    """Permutation importance: the AUC lost when one feature's values are shuffled among jets.

    For each feature k and each repeat r, the values of feature k are permuted at random
    among the jets of a chunk (every other feature of each jet is kept), and the chunk is
    scored again. Then, over the whole sample,

        ΔAUC_k = (1/R) Σ_r [AUC(f(x)) − AUC(f(x with feature k permuted, permutation r))]

    with exact AUCs (ties count one half), weighted when the data has weights. A feature
    the model ignores scores exactly 0; unlike occlusion with the mean, permuting keeps the
    feature's marginal distribution. Permutations are drawn with
    ``numpy.random.default_rng([seed, first entry of the chunk, jets in the chunk])`` in the
    order repeat, then feature (model order), so results do not depend on how chunks are
    scheduled. Global only: the signal and background columns are null. Costs
    repeats × features forward passes per jet.
    """

    name = "permutation"
    Options = PermutationOptions
    needs = frozenset({"labels"})
    attribution = True
    description = "Permutation importance: AUC(f(x)) − AUC(f(x with feature k shuffled among jets))"

    def __init__(self, options: PermutationOptions, context: AuditContext) -> None:
        super().__init__(options, context)
        self.slots = context.builder.slots  # which input tensor and flat position holds each feature

    def start(self) -> PermutationState:
        return PermutationState()

    def rng(self, chunk: Chunk) -> np.random.Generator:
        first = int(chunk.entries[0]) if len(chunk) else 0
        return np.random.default_rng([self.context.seed, first, len(chunk)])

    def update(self, state: PermutationState, chunk: Chunk) -> PermutationState:
        assert chunk.labels is not None  # needs = {"labels"}: the audit skips us without labels
        n = len(chunk)
        rng = self.rng(chunk)
        scores = np.empty((self.options.repeats, len(self.slots), n), np.float32)
        for r in range(self.options.repeats):
            for k, slot in enumerate(self.slots):
                perm = rng.permutation(n)
                feed = dict(chunk.inputs)
                flat = chunk.inputs[slot.input].reshape(n, -1).copy()
                flat[:, slot.index] = flat[perm, slot.index]
                feed[slot.input] = flat.reshape(chunk.inputs[slot.input].shape)
                scores[r, k] = chunk.context.tagger.run(feed, extra=False).score
        if self.options.per_jet:  # per-jet columns go to per_jet.root, one value per jet
            shift = np.abs(scores - chunk.score.astype(np.float32)).reshape(-1, n)
            chunk.per_jet["permutation_max_abs_shift"] = shift.max(axis=0) if len(shift) else np.zeros(n, np.float32)
        state.base.append(chunk.score.astype(np.float32))
        state.permuted.append(scores)
        state.labels.append(chunk.labels)
        if chunk.weights is not None:
            state.weights.append(chunk.weights)
        return state

    def merge(self, a: PermutationState, b: PermutationState) -> PermutationState:
        return PermutationState(a.base + b.base, a.permuted + b.permuted, a.labels + b.labels,
                                a.weights + b.weights)

    def finish(self, state: PermutationState) -> ExplainerResult:
        labels = np.concatenate(state.labels)
        weights = np.concatenate(state.weights) if state.weights else None
        base_auc = roc_auc(np.concatenate(state.base), labels, weights)
        permuted = np.concatenate(state.permuted, axis=2)  # (repeats, features, jets)
        aucs = np.array([[roc_auc(row, labels, weights) for row in rep] for rep in permuted])
        deltas = (base_auc - aucs).mean(axis=0)  # a feature the model ignores: exactly 0
        features = sorted_scores([FeatureScore(name, float(d)) for name, d in zip(self.context.features, deltas)])
        fields = {
            "baseline_auc": base_auc,
            "repeats": self.options.repeats,
            "definition": "AUC(f(x)) - mean over repeats of AUC(f(x with feature k permuted among the jets of a chunk))",
            "forward_passes_per_jet": self.options.repeats * len(self.slots),
        }
        if self.options.repeats > 1:
            fields["delta_auc_std"] = {name: float(s) for name, s in zip(self.context.features, aucs.std(axis=0))}
        top = features[0] if features else None
        summary = f"Baseline AUC {base_auc:.4f}." + (
            f" Permuting {top.feature} costs the most: ΔAUC = {top.score:.4f}." if top else "")
        return self.result(feature_importance=features, fields=fields, summary=summary)


# -- the hooks ----------------------------------------------------------------------------------

@hookimpl
def hepaudit_register_explainers(register: ExplainerRegistry) -> None:
    """Add the ``permutation`` explainer."""
    register(PermutationImportance)


@hookimpl
def hepaudit_report_sections(report: AuditReport) -> list[ReportSection] | None:
    """The features in the top 5 of every attribution method that finished, by mean rank."""
    ranked = {name: [s.feature for s in result.feature_importance[:TOP]]
              for name, result in report.explainers.items()
              if result.status == "ok" and result.feature_importance}
    if not ranked:
        return None
    agreed = set.intersection(*(set(top) for top in ranked.values()))
    agreed_sorted = sorted(agreed, key=lambda f: (sum(top.index(f) for top in ranked.values()), f))
    methods = ", ".join(sorted(ranked))
    if agreed_sorted:
        text = (f"{len(agreed_sorted)} feature(s) are in the top {TOP} of every attribution method "
                f"({methods}): {', '.join(agreed_sorted)}.")
    else:
        text = f"No feature is in the top {TOP} of every attribution method ({methods})."
    return [ReportSection(
        key="example",
        title="Example plugin: top features agreed by every method",
        text=text,
        data={"top": TOP, "methods": sorted(ranked), "top_features": ranked, "agreed": agreed_sorted,
              "plugin_version": __version__},
    )]


@hookimpl
def hepaudit_register_commands(cli: click.Group) -> None:
    """Add ``hepaudit example-hello``."""

    @cli.command(name="example-hello")
    def example_hello() -> None:
        """Print the example plugin's version (a demonstration of hepaudit_register_commands)."""
        click.echo(f"hepaudit-example {__version__}")
