"""``ood_ensemble``: does the tagger know what it does not know? Disagreement of an ensemble.

Definition (docs/methods.md, "OOD: ensemble"; Lakshminarayanan et al., arXiv:1612.01474):
M members f_1..f_M (ONNX models with the audited model's inputs, option ``members``, paths
relative to the config file; ``include_audited = true`` adds the audited model itself)
score every jet, each through its own :class:`~hepaudit.model.session.Tagger` with the
audited model's output and score settings, so p_m(x) is the same kind of signal score.
Per jet:

- ``std`` = the population standard deviation of p_1..p_M (ddof = 0);
- ``mutual_information`` = H[p̄] − (1/M) Σ_m H[p_m], with p̄ the members' mean and H the
  binary entropy −p ln p − (1 − p) ln(1 − p) in nats (0 ln 0 = 0). It is ≥ 0 and 0 when
  the members agree; unlike the std it weighs disagreement near p = 0 or 1 more.

Both go to per_jet.root (``ood_ensemble_std``, ``ood_ensemble_mi``); option ``score`` picks
which one the threshold, the flags and the AUROC use. Thresholds and fractions follow the
shared scheme of :mod:`hepaudit.explainers.ood.common` (hash split of the reference: fit
half → threshold = ``quantile`` of its scores, held-out half → reference flagged fraction);
members run on reference jets only while they can still enter the bounded subsample.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from hepaudit.errors import ConfigError, HepauditError
from hepaudit.explainers.base import AuditContext, Chunk, Explainer
from hepaudit.explainers.ood import figures
from hepaudit.explainers.ood.common import (
    Reservoir,
    quantile_threshold,
    real_reference,
    resolve_path,
)
from hepaudit.explainers.ood.scored import Kinematics, add_held_out, flag_jets, reference_split, threshold_fields
from hepaudit.metrics import spearman
from hepaudit.model.blocks import for_blocks, shared_rows
from hepaudit.model.session import Tagger
from hepaudit.model.side_by_side import side_by_side
from hepaudit.results import ExplainerResult, Figure


@dataclass(frozen=True)
class OodEnsembleOptions:
    members: list[str] = field(default_factory=list)  # ONNX paths relative to the config file
    include_audited: bool = False  # the audited model is a member too
    # the members' disagreement: the std of their scores, or the mutual information
    score: Literal["std", "mutual_information"] = "std"
    quantile: float = 0.95  # threshold: this quantile of the fit-half reference scores
    max_reference_jets: int = 50_000  # per reference half (fit / held-out)
    reference: dict | None = None  # a reference sample table for this explainer only (the keys of [reference])

    def __post_init__(self) -> None:
        if not 0.0 < self.quantile < 1.0:
            raise ValueError("quantile must be between 0 and 1")
        if self.max_reference_jets < 10:
            raise ValueError("max_reference_jets must be >= 10")


def binary_entropy(p: np.ndarray) -> np.ndarray:
    """−p ln p − (1 − p) ln(1 − p), nats, with 0 ln 0 = 0; p is clipped to [0, 1]."""
    p = np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0)
    q = 1.0 - p
    # p ln max(p, tiny) is 0 at p = 0 and p ln p elsewhere (up to subnormal p), with no masks
    tiny = np.finfo(np.float64).tiny
    return -(p * np.log(np.maximum(p, tiny)) + q * np.log(np.maximum(q, tiny)))


def disagreement(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(std, mutual information) per jet from member probabilities of shape (N, M).

    Computed member row by member row on ``probs.T``, which is contiguous when the scores
    are stored member by member (as ``OodEnsemble._probabilities`` stores them): numpy's
    reductions over a short axis of 5 are several times slower than adding 5 long rows.
    """
    rows = probs.T
    mean = rows.mean(axis=0)
    std = np.sqrt(np.square(rows - mean).mean(axis=0))
    mi = binary_entropy(mean) - binary_entropy(rows).mean(axis=0)
    return std, np.maximum(mi, 0.0)  # rounding can give -1e-17 for identical members


@dataclass
class EnsembleState:
    fit: Reservoir
    held: Reservoir
    n_reference: int = 0
    std: list[np.ndarray] = field(default_factory=list)
    mi: list[np.ndarray] = field(default_factory=list)
    kin: Kinematics = field(default_factory=Kinematics)


class OodEnsemble(Explainer[EnsembleState]):
    name = "ood_ensemble"
    Options = OodEnsembleOptions
    needs = frozenset({"reference", "arrays"})
    description = "Out-of-distribution jets: disagreement (std, mutual information) of an ensemble of taggers"

    def __init__(self, options: OodEnsembleOptions, context: AuditContext) -> None:
        super().__init__(options, context)
        if len(options.members) + int(options.include_audited) < 2:
            raise ConfigError(
                "explainers.ood_ensemble.members: an ensemble needs at least two members "
                "(list ONNX files in members, and/or set include_audited = true)"
            )
        self.paths = [resolve_path(context, m) for m in options.members]
        want = {i.name for i in context.tagger.info.inputs}
        self.members: list[Tagger] = []
        # the members run block by block on this many threads, each with a one-thread session
        # (hepaudit.model.blocks): faster for small models than one session using every core
        self.threads = context.tagger.block_threads
        for i, path in enumerate(self.paths):
            if not Path(path).is_file():
                raise ConfigError(f"explainers.ood_ensemble.members[{i}]: {path}: file not found")
            try:
                # one thread: the members run blocks of ``cached_rows`` rows on several threads
                member = Tagger(replace(context.tagger.config, path=path, threads=1))
            except HepauditError as exc:
                raise ConfigError(f"explainers.ood_ensemble.members[{i}]: {exc}") from None
            have = {t.name for t in member.info.inputs}
            if have != want:
                raise ConfigError(
                    f"explainers.ood_ensemble.members[{i}]: {path} has inputs {sorted(have)}, "
                    f"the audited model {sorted(want)}; members must take the same inputs"
                )
            self.members.append(member)
        # every member in one graph, one call per block for all (None: they run one by one)
        self.side_by_side = side_by_side(self.members)
        self.real_reference = real_reference(context, options)
        self._checked = False

    def _probabilities(self, chunk: Chunk, select: np.ndarray | None = None, disagree: bool = False
                       ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """The members' scores (N, M; a view of an (M, N) array), block by block on
        ``self.threads`` threads; with ``disagree``, also each jet's (std, mutual information),
        computed in the same blocks while their scores are in cache (jet by jet: the same
        numbers as for the whole array)."""
        inputs = chunk.inputs if select is None else {k: v[select] for k, v in chunk.inputs.items()}
        n = len(next(iter(inputs.values())))
        if not self._checked:
            for member in self.members:
                member.check_inputs(inputs)
                if n:
                    member.learn_footprint(inputs)  # its cached_rows, also when it runs side by side
            self._checked = bool(n)
        # member by member (M, N): each member's scores land in one contiguous row
        by_member = np.empty((len(self.members) + int(self.options.include_audited), n))
        if self.options.include_audited:
            by_member[-1] = chunk.score if select is None else chunk.score[select]
        std, mi = (np.empty(n), np.empty(n)) if disagree else (None, None)

        fused = self.side_by_side
        m_own = len(self.members)

        def block(_: int, start: int, stop: int) -> None:
            # every member on one block while its inputs are in cache, then the next block
            rows = {k: v[start:stop] for k, v in inputs.items()}
            if fused is not None:
                fused.scores(rows, by_member[:m_own, start:stop])
            else:
                for m, member in enumerate(self.members):
                    by_member[m, start:stop] = member.run(rows, extra=False).score
            if std is not None and mi is not None:
                std[start:stop], mi[start:stop] = disagreement(by_member[:, start:stop].T)

        cached = min(m.cached_rows for m in self.members)
        # side by side, a call runs each member on rows that keep its tensors in cache, one
        # member after another; one by one, two blocks in flight share the cache
        rows = cached if fused is not None else shared_rows(cached)
        for_blocks(n, rows, self.threads, block)
        return by_member.T, std, mi

    def _chosen(self, std: np.ndarray, mi: np.ndarray) -> np.ndarray:
        return std if self.options.score == "std" else mi

    # -- reference pass ------------------------------------------------------------------------
    def start(self) -> EnsembleState:
        cap = self.options.max_reference_jets
        return EnsembleState(Reservoir(cap), Reservoir(cap))

    def update_reference(self, state: EnsembleState, chunk: Chunk) -> EnsembleState:
        keys, fit, keep = reference_split(chunk, self.context.seed, state.fit, state.held)
        state.n_reference += len(chunk)
        run = fit | keep  # members run only on jets that can still enter one of the two subsamples
        if not run.any():
            return state
        probs = np.empty((len(chunk), len(self.members) + int(self.options.include_audited)))
        probs[run] = self._probabilities(chunk, run)[0]
        state.fit.add(keys[fit], probs=probs[fit])
        add_held_out(state.held, chunk, keys, keep, probs=probs[keep])
        return state

    def prepare(self, state: EnsembleState) -> None:
        fit = state.fit.sorted_columns().get("probs")
        if fit is None or len(fit) == 0:
            raise ValueError("the reference sample has no jets in its fit half; give a larger reference")
        self.threshold = quantile_threshold(self._chosen(*disagreement(fit)), self.options.quantile)
        held = state.held.sorted_columns()
        probs = held.get("probs", np.zeros((0, fit.shape[1])))
        self.reference_std, self.reference_mi = disagreement(probs)
        self.reference_kin: dict[str, np.ndarray] = {k: held[k] for k in ("pt", "mass") if k in held}
        self.n_fit = len(fit)

    # -- audited pass ----------------------------------------------------------------------------
    def update(self, state: EnsembleState, chunk: Chunk) -> EnsembleState:
        _, std, mi = self._probabilities(chunk, disagree=True)
        assert std is not None and mi is not None
        chunk.per_jet["ood_ensemble_std"] = std.astype(np.float32)
        chunk.per_jet["ood_ensemble_mi"] = mi.astype(np.float32)
        flag_jets(chunk, self.name, self._chosen(std, mi), self.threshold)
        state.std.append(std)
        state.mi.append(mi)
        state.kin.add(chunk)
        return state

    def merge(self, a: EnsembleState, b: EnsembleState) -> EnsembleState:
        return EnsembleState(
            a.fit.merged(b.fit),
            a.held.merged(b.held),
            a.n_reference + b.n_reference,
            a.std + b.std,
            a.mi + b.mi,
            a.kin.merged(b.kin),
        )

    def finish(self, state: EnsembleState) -> ExplainerResult:
        std = np.concatenate(state.std) if state.std else np.zeros(0)
        mi = np.concatenate(state.mi) if state.mi else np.zeros(0)
        chosen = self._chosen(std, mi)
        ref_chosen = self._chosen(self.reference_std, self.reference_mi)
        q = self.options.quantile
        members = list(self.paths) + (["(the audited model)"] if self.options.include_audited else [])
        fields: dict[str, Any] = {
            "definition": "std = population std of the members' signal scores; mutual_information = "
            "H[mean p] - mean H[p_m], binary entropy in nats",
            "members": members,
            "score": self.options.score,
            "threshold": self.threshold,
            "threshold_quantile": q,
            "expected_reference_flagged_fraction": 1 - q,
            "reference_jets": state.n_reference,
            "reference_fit_jets": self.n_fit,
            "reference_held_out_jets": int(len(ref_chosen)),
            "audited_jets": int(len(chosen)),
            "mean_std": float(std.mean()) if len(std) else None,
            "mean_mutual_information": float(mi.mean()) if len(mi) else None,
            "reference_mean_std": float(self.reference_std.mean()) if len(self.reference_std) else None,
            "reference_mean_mutual_information": float(self.reference_mi.mean())
            if len(self.reference_mi)
            else None,
            "std_mi_spearman": spearman(std, mi),
        }
        audited = state.kin.with_scores(chosen)
        reference: dict[str, np.ndarray] = {"score": ref_chosen, **self.reference_kin}
        what = self._what()
        shared, warnings = threshold_fields(
            audited, reference, self.threshold, self.real_reference,
            "no reference sample: the audited data is its own reference, so only per-jet disagreement "
            "and its distribution are reported (flagged fractions and AUROC need a [reference] sample)",
        )
        fields.update(shared)
        fraction, ref_fraction = fields["flagged_fraction"], fields["reference_flagged_fraction"]
        auroc = fields["auroc"]
        if self.real_reference:
            summary = (
                f"{fraction:.1%} of audited jets have an {what} above the reference's {q:.0%} quantile "
                f"(held-out reference: {ref_fraction:.1%}); AUROC reference vs audited {auroc:.3f}."
                if fraction is not None and ref_fraction is not None and auroc is not None
                else ""
            )
        else:
            mean = float(chosen.mean()) if len(chosen) else None
            summary = f"No reference: mean {what} over the audited jets {mean:.3g}." if mean is not None else ""
        return self.result(fields=fields, summary=summary, warnings=warnings)

    def draw(self, result: ExplainerResult) -> list[Figure]:
        return figures.ood_figures(self.name, self._what(), result.fields)

    def _what(self) -> str:
        return "ensemble std" if self.options.score == "std" else "ensemble mutual information [nats]"
