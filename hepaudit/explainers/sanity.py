"""Sanity check (Adebayo et al.): does each explanation depend on what the model learnt?

Model-parameter randomisation on the ONNX graph itself (:mod:`hepaudit.model.randomise`):
the weights of the Gemm/MatMul/Conv layers are redrawn from each layer's own values, from the
output down. *Cascading*: step k randomises the top k layers (blocks of layers on deep
models, at most ``steps`` steps). *Independent* (``independent = true``): step k randomises
layer k alone. At every step the audit's other attribution explainers (ΔAUC, MAD, SHAP, LRP,
gradients and any plugin's) are re-run, with their own options, on a seeded sample of the
audited jets, and their ranking is compared with the ranking the same explainer gives on the
same jets with the trained weights: Spearman's ρ, with a 95 % interval from the audit's
Poisson bootstrap (both runs see the same jets with the same weights).

An explanation *passes* when its ranking has changed once every layer is randomised
(ρ below ``threshold``). One that does not change explains the inputs, not the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from hepaudit.bootstrap import Replicates, centred_interval
from hepaudit.explainers.base import AuditContext, Chunk, Explainer
from hepaudit.explainers.ood.common import Reservoir
from hepaudit.metrics import spearman
from hepaudit.model.randomise import WeightLayer, block_name, cascade, randomised, weight_layers
from hepaudit.model.session import Tagger
from hepaudit.plugins import ExplainerRegistry, hookimpl
from hepaudit.results import ExplainerResult, FeatureScore, Figure
from hepaudit.run.lifecycle import describe_error
from hepaudit.sampling import salt_for, seeded_keys


@dataclass(frozen=True)
class SanityOptions:
    # the explainers to check (default: every attribution explainer of the audit it can re-run)
    explainers: list[str] | None = None
    jets: int = 1000  # jets re-explained at every step (a seeded sample of the audited jets)
    steps: int = 12  # at most this many cascading steps: deep models randomise blocks of layers
    independent: bool = False  # also randomise each layer (block) alone
    threshold: float = 0.5  # an explanation passes when ρ with every layer randomised is below this
    seed: int | None = None  # the weights' draw (default: execution.seed)

    def __post_init__(self) -> None:
        if self.jets < 10:
            raise ValueError(f"jets: at least 10 jets are needed to rank features, found {self.jets}")
        if self.steps < 1:
            raise ValueError(f"steps: expected at least 1, found {self.steps}")
        if not -1.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold: a rank correlation lies in [-1, 1], found {self.threshold}")


@dataclass
class Ranking:
    """One explainer's ranking on the sample: scores by unit name, and their bootstrap replicates."""

    names: list[str]
    scores: np.ndarray
    replicates: np.ndarray | None = None  # (R, units), same order


@dataclass
class Curve:
    """One explainer's ρ per step (and its interval), against its ranking with trained weights."""

    spearman: list[float | None] = field(default_factory=list)
    ci95: list[list[float] | None] = field(default_factory=list)
    errors: list[str | None] = field(default_factory=list)
    compared: list[int] = field(default_factory=list)  # units ranked, less those zero in both rankings

    def add(self, original: Ranking, ranking: Ranking | str) -> None:
        if isinstance(ranking, str):
            self.spearman.append(None)
            self.ci95.append(None)
            self.errors.append(ranking)
            self.compared.append(0)
            return
        position = {n: i for i, n in enumerate(ranking.names)}
        index = np.array([position[n] for n in original.names], dtype=np.intp)
        a, b = original.scores, ranking.scores[index]
        # a unit scored exactly 0 by both (a padded constituent's LRP, a constant input's ΔAUC)
        # carries no ranking: thousands of such ties would pull ρ towards 1 whatever the weights
        live = ~((a == 0) & (b == 0))
        rho = spearman(a[live], b[live])
        ci = None
        if rho is not None and original.replicates is not None and ranking.replicates is not None:
            reps = [spearman(x[live], y[index][live]) for x, y in zip(original.replicates, ranking.replicates)]
            ci = centred_interval(rho, np.array([np.nan if r is None else r for r in reps]))
        self.spearman.append(rho)
        self.ci95.append(ci)
        self.errors.append(None)
        self.compared.append(int(live.sum()))


class Sanity(Explainer[Reservoir]):
    name = "sanity"
    Options = SanityOptions
    needs = frozenset({"input_mean"})
    description = "Sanity check: re-randomise the weights layer by layer and see whether each explanation changes"
    reference_option = None

    def __init__(self, options: SanityOptions, context: AuditContext) -> None:
        super().__init__(options, context)
        self.layers: list[WeightLayer] = weight_layers(context.tagger.proto)
        self.salt = salt_for(context.seed, "sanity")

    # -- the sample ----------------------------------------------------------------------------
    def start(self) -> Reservoir:
        return Reservoir(self.options.jets)

    def update(self, state: Reservoir, chunk: Chunk) -> Reservoir:
        keys = seeded_keys(chunk.entries, self.salt)
        keep = state.candidates(keys)
        if not keep.any():
            return state
        n = int(keep.sum())
        columns = {f"x/{k}": v[keep].copy() for k, v in chunk.inputs.items()}
        columns["entry"] = chunk.entries[keep]
        columns["label"] = (np.full(n, -1, np.int8) if chunk.labels is None
                            else chunk.labels[keep].astype(np.int8))
        columns["weight"] = np.ones(n) if chunk.weights is None else chunk.weights[keep].astype(np.float64)
        state.add(keys[keep], **columns)
        return state

    def merge(self, a: Reservoir, b: Reservoir) -> Reservoir:
        return a.merged(b)

    # -- the check -----------------------------------------------------------------------------
    def checked(self) -> tuple[dict[str, Explainer[Any]], dict[str, str]]:
        """The peers to re-run, and why the others are not."""
        peers = self.context.peers
        wanted = self.options.explainers
        if wanted is not None:
            unknown = [n for n in wanted if n not in peers]
            if unknown:
                raise ValueError(f"explainers: {', '.join(unknown)} not in this audit (it runs "
                                 f"{', '.join(n for n in peers if n != self.name) or 'nothing else'})")
        out: dict[str, Explainer[Any]] = {}
        skipped: dict[str, str] = {}
        for name, peer in peers.items():
            if name == self.name or (wanted is not None and name not in wanted):
                continue
            if not type(peer).attribution:
                if wanted is not None:
                    skipped[name] = "gives no feature ranking"
                continue
            needs = type(peer).needs_for(peer.options)
            if "reference" in needs or "arrays" in needs:
                skipped[name] = "needs a reference pass or the raw branches, which the check does not repeat"
                continue
            out[name] = peer
        return out, skipped

    def finish(self, state: Reservoir) -> ExplainerResult:
        peers, skipped = self.checked()
        if not self.layers:
            raise ValueError("the model has no Gemm, MatMul or Conv layer with initializer weights to randomise")
        if not peers:
            reasons = "; ".join(f"{n}: {why}" for n, why in skipped.items())
            raise ValueError("no attribution explainer of this audit to check: add lrp, gradient, dauc, mad or "
                             "shap" + (f" ({reasons})" if reasons else ""))
        sample = state.sorted_columns()
        order = np.argsort(sample["entry"], kind="stable")  # entry order, as the audit sees jets
        sample = {k: v[order] for k, v in sample.items()}
        seed = self.context.seed if self.options.seed is None else self.options.seed
        blocks = cascade(self.layers, self.options.steps)
        original = self._rankings(peers, sample, self.context.tagger.proto)
        curves: dict[str, Curve] = {n: Curve() for n in peers}
        proto = self.context.tagger.proto
        for k in range(len(blocks)):
            model = randomised(proto, [layer for block in blocks[:k + 1] for layer in block], seed)
            for name, ranking in self._rankings(peers, sample, model).items():
                self._add(curves[name], original[name], ranking)
        independent: dict[str, Curve] = {}
        if self.options.independent:
            independent = {n: Curve() for n in peers}
            for block in blocks:
                for name, ranking in self._rankings(peers, sample, randomised(proto, block, seed)).items():
                    self._add(independent[name], original[name], ranking)
        return self._result(blocks, original, curves, independent, skipped, len(sample["entry"]), seed)

    @staticmethod
    def _add(curve: Curve, original: Ranking | str, ranking: Ranking | str) -> None:
        if isinstance(original, str):
            curve.add(Ranking([], np.zeros(0)), original)
        else:
            curve.add(original, ranking)

    def _rankings(self, peers: dict[str, Explainer[Any]], sample: dict[str, np.ndarray], model: Any
                  ) -> dict[str, Ranking | str]:
        """Each peer re-run on the sample with ``model``'s weights: its ranking, or its error."""
        base = self.context
        tagger = Tagger(base.tagger.config, proto=model, info=base.tagger.info)
        labels = sample["label"]
        has_labels = bool((labels >= 0).all()) and base.has_labels
        context = replace(base, tagger=tagger, warnings=[], peers={}, output_dir=None, write_dir=None,
                          n_jets=len(labels), n_signal=int((labels == 1).sum()), n_background=int((labels == 0).sum()),
                          _baselines=dict(base._baselines))
        inputs = {k[2:]: v for k, v in sample.items() if k.startswith("x/")}
        out = tagger.run(inputs)
        chunk = Chunk(sample["entry"], inputs, out.score, out.logit, context,
                      labels if has_labels else None,
                      sample["weight"] if base.has_weights else None, out.extra)
        rankings: dict[str, Ranking | str] = {}
        for name, peer in peers.items():
            try:
                explainer = type(peer)(peer.options, context)
                result = explainer.finish(explainer.update(explainer.start(), chunk))
                rankings[name] = _ranking(result)
            except Exception as exc:  # that explainer's curve gets a gap, the others go on
                rankings[name] = describe_error(exc)
        return rankings

    def _result(self, blocks: list[list[WeightLayer]], original: dict[str, Ranking | str],
                curves: dict[str, Curve], independent: dict[str, Curve], skipped: dict[str, str], n_jets: int,
                seed: int) -> ExplainerResult:
        threshold = self.options.threshold
        explainers: dict[str, Any] = {}
        failing: list[str] = []
        for name, curve in curves.items():
            last = curve.spearman[-1] if curve.spearman else None
            passed = None if last is None else bool(last < threshold)
            entry: dict[str, Any] = {"spearman": curve.spearman, "spearman_ci95": curve.ci95, "passed": passed,
                                     "verdict": verdict(last, curve.ci95[-1] if curve.ci95 else None, threshold),
                                     "units_compared": curve.compared}
            first_error = next((e for e in curve.errors if e), None)
            if isinstance(original[name], str):
                entry["error"] = original[name]
            elif first_error:
                entry["error"] = first_error
            if name in independent:
                entry["independent_spearman"] = independent[name].spearman
                entry["independent_spearman_ci95"] = independent[name].ci95
            explainers[name] = entry
            if entry["verdict"] == "failed":
                failing.append(name)
        fields: dict[str, Any] = {
            "steps": [block_name(b) for b in blocks],
            "layers": [{"name": layer.name, "op": layer.op, "parameters": layer.size, "step": k}
                       for k, block in enumerate(blocks) for layer in block],
            "explainers": explainers,
            "threshold": threshold,
            "jets": n_jets,
            "seed": seed,
            "randomisation": "each Gemm/MatMul/Conv weight and bias redrawn from its own values (with replacement)",
            "independent": self.options.independent,
        }
        if skipped:
            fields["skipped"] = skipped
        return self.result(fields=fields, summary=_summary(explainers, threshold, failing))

    def draw(self, result: ExplainerResult) -> list[Figure]:
        from hepaudit.explainers.sanity_figures import sanity_curves

        png = sanity_curves(result.fields)
        if png is None:
            return []
        return [Figure("sanity_curves.png", "Spearman ρ between each explanation with the trained weights and with "
                       "the top layers randomised (cascading, output first); bands: 95 % bootstrap intervals; "
                       "dashed: the pass threshold", png)]


def verdict(rho: float | None, ci: list[float] | None, threshold: float) -> str | None:
    """``passed`` or ``failed`` when ρ's 95 % interval lies wholly below or at and above the
    threshold; ``inconclusive`` when it straddles it (without an interval: ρ decides)."""
    if rho is None:
        return None
    low, high = ci if ci else (rho, rho)
    if high < threshold:
        return "passed"
    if low >= threshold:
        return "failed"
    return "inconclusive"


def _ranking(result: ExplainerResult) -> Ranking:
    """The feature ranking of a result (its group ranking when it scores groups only)."""
    scores: list[FeatureScore] | None = result.feature_importance or result.group_importance
    if not scores:
        raise ValueError(f"{result.name} returned no ranking ({result.error or result.status})")
    units = "features" if result.feature_importance else "groups"
    names = [s.feature for s in scores]
    rep: Replicates | None = next((r for r in result.replicates if r.units == units), None)
    values = None
    if rep is not None and len(rep.values):
        index = [rep.names.index(n) for n in names]
        values = np.asarray(rep.values)[:, index]
    return Ranking(names, np.array([s.score for s in scores], np.float64), values)


def _summary(explainers: dict[str, Any], threshold: float, failing: list[str]) -> str:
    def value(name: str) -> str:
        entry = explainers[name]
        rho, ci = entry["spearman"][-1], entry["spearman_ci95"][-1]
        return f"ρ = {rho:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")

    checked = [n for n, e in explainers.items() if e["passed"] is not None]
    if not checked:
        return "No explanation could be compared under randomisation (see each explainer's error)."
    if failing:
        names = ", ".join(f"{n} ({value(n)})" for n in failing)
        return (f"{names}: the ranking barely changes with every layer randomised (ρ ≥ {threshold:g}): "
                "it reflects the inputs, not what the tagger learnt.")
    unsure = [n for n in checked if explainers[n]["verdict"] == "inconclusive"]
    if unsure:
        return ("With every layer randomised " + ", ".join(f"{n} {value(n)}" for n in checked)
                + f"; the intervals of {', '.join(unsure)} straddle {threshold:g}: inconclusive on these jets.")
    return ("Every checked explanation depends on the trained weights: with every layer randomised "
            + ", ".join(f"{n} {value(n)}" for n in checked) + f" (below {threshold:g}).")


@hookimpl
def hepaudit_register_explainers(register: ExplainerRegistry) -> None:
    register(Sanity)
