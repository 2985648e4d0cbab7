"""The ``shap`` explainer: Shapley values of v(S) = E_b[f(x_S, b_~S)] for a stratified
subsample of jets, exact or by Kernel SHAP, for features or groups of features.

f is the tagger's signal score; the background b is the mean input x̄ over all audited
jets (or the reference sample) by default, a seeded random sample of N audited jets, or
k-means centres of a seeded sample weighted by cluster size. The jets explained are a
seeded reservoir of ``jets`` jets per class, collected chunk by chunk (mergeable); the
Shapley values are computed in ``finish``: exactly over all 2^M coalitions when the number
of players M ≤ ``max_exact``, otherwise by Kernel SHAP with the additivity constraint
φ_0 + Σφ = f(x) imposed exactly (or by antithetic permutation sampling, ``method``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hepaudit.bootstrap import ranked_with_intervals
from hepaudit.errors import ConfigError
from hepaudit.explainers.base import AuditContext, Chunk, Explainer
from hepaudit.explainers.shap.background import (
    Reservoir,
    add_by_class,
    entry_keys,
    kmeans,
    merge_by_class,
    salt_for,
)
from hepaudit.explainers.shap.coalitions import all_coalitions, exact_shapley
from hepaudit.explainers.shap.evaluate import CoalitionEvaluator, Players
from hepaudit.explainers.shap.figures import player_values
from hepaudit.explainers.shap.kernel import (
    default_budget,
    kernel_design,
    kernel_shap,
    kernel_shap_selected,
    permutation_shap,
)
from hepaudit.explanation import Explanation
from hepaudit.plugins import ExplainerRegistry, hookimpl
from hepaudit.results import CLASS_NAMES, ExplainerResult, FeatureScore, Figure, sorted_scores

#: background jets drawn from the reference sample for ``background = "reference"``
REFERENCE_BACKGROUND = 100


@dataclass(frozen=True)
class ShapOptions:
    # "mean" (x̄), a number N of audited jets drawn at random, "kmeans:K", or "reference" /
    # "reference:N": N jets (default 100) drawn from [reference] (the training sample, as the paper)
    background: str | int = "mean"
    jets: int = 100  # jets explained per class (per label value; all jets when unlabelled)
    # false: every feature is a player; "particle" / "feature": the built-in groups;
    # a table {name = ["glob", ...]}: user groups (features in no group stay single players)
    groups: bool | str | dict[str, list[str]] = False
    max_exact: int = 14  # exact enumeration of all 2^M coalitions up to this many players
    method: str = "kernel"  # "kernel" (Kernel SHAP) or "permutation" (antithetic permutations)
    samples: int | str = "auto"  # model evaluations (coalitions) per jet; "auto" = 2M + 1536
    # Kernel SHAP restricted to the players a Lasso selects, as shap's l1_reg: false, "aic",
    # "bic", N (the first N players on the LAR path) or "auto" (AIC when < 20 % of the
    # coalitions are evaluated and the noise variance can be estimated)
    l1_reg: bool | str | int = False
    seed: int | None = None  # default: the audit's seed

    def __post_init__(self) -> None:
        b = self.background
        if isinstance(b, str) and b != "mean" and not re.fullmatch(r"(kmeans|reference):[1-9][0-9]*|reference", b):
            raise ValueError(f"background: expected \"mean\", a number of jets, \"kmeans:K\", \"reference\" or "
                             f"\"reference:N\", found {b!r}")
        if isinstance(b, int) and b < 1:
            raise ValueError(f"background: the number of background jets must be at least 1, found {b}")
        if self.jets < 1:
            raise ValueError(f"jets: expected at least 1 jet per class, found {self.jets}")
        if self.groups is True:
            raise ValueError("groups: say which groups: \"particle\", \"feature\", or a table of globs")
        if isinstance(self.groups, str) and self.groups not in ("particle", "feature"):
            raise ValueError(f"groups: expected \"particle\", \"feature\", false or a table, "
                             f"found {self.groups!r}")
        if self.method not in ("kernel", "permutation"):
            raise ValueError(f"method: expected \"kernel\" or \"permutation\", found {self.method!r}")
        if isinstance(self.samples, str) and self.samples != "auto":
            raise ValueError(f"samples: expected \"auto\" or a number, found {self.samples!r}")
        if isinstance(self.samples, int) and self.samples < 2:
            raise ValueError(f"samples: expected at least 2, found {self.samples}")
        r = self.l1_reg
        if r is True or (isinstance(r, str) and r not in ("auto", "aic", "bic")) or (
                isinstance(r, int) and not isinstance(r, bool) and r < 1):
            raise ValueError(f"l1_reg: expected false, \"auto\", \"aic\", \"bic\" or a number of players, "
                             f"found {r!r}")
        if r is not False and self.method != "kernel":
            raise ValueError("l1_reg: feature selection applies to method = \"kernel\" only")
        if not 0 <= self.max_exact <= 20:
            raise ValueError(f"max_exact: expected 0..20 (2^M coalitions per jet), found {self.max_exact}")


@dataclass
class ShapState:
    """Per-class reservoirs of jets to explain, and a reservoir for the background."""

    explain: dict[int, Reservoir] = field(default_factory=dict)
    background: Reservoir | None = None


def resolve_players(context: AuditContext, groups: bool | str | dict[str, list[str]], where: str = "shap"
                    ) -> tuple[Players, bool]:
    """The players, and whether any of them is a group of features."""
    n = len(context.features)
    if groups is False:
        return Players(list(context.features), [[k] for k in range(n)]), False
    if isinstance(groups, str):
        pattern = re.compile(r"(^|\.)particle_\d+$" if groups == "particle" else r"^feature_")
        named = {g: ks for g, ks in context.groups.items() if pattern.search(g)}
        if not named:
            raise ConfigError(f"explainers.{where}.groups = {groups!r}: the model has no constituent inputs, "
                              "so there are no such groups")
    else:
        named = {}
        if not isinstance(groups, dict):
            raise ConfigError(f"explainers.{where}.groups: expected false, \"feature\", \"particle\" or a table "
                              f"of group = [patterns], found {groups!r}")
        for name, patterns in groups.items():
            members = context.builder.match(list(patterns))
            if not members:
                raise ConfigError(f"explainers.{where}.groups.{name}: the patterns {list(patterns)} "
                                  "match no feature")
            named[name] = members
    owner: dict[int, str] = {}
    for name, members in named.items():
        for k in members:
            if k in owner:
                raise ConfigError(f"explainers.{where}.groups: feature {context.features[k]!r} is in both "
                                  f"{owner[k]!r} and {name!r}; a feature may be in one group only")
            owner[k] = name
    names = list(named)
    members_list = [sorted(named[g]) for g in names]
    # features in no group stay single players, in model order, after the groups
    for k in range(n):
        if k not in owner:
            names.append(context.features[k])
            members_list.append([k])
    return Players(names, members_list), True


class Shap(Explainer[ShapState]):
    name = "shap"
    Options = ShapOptions
    needs = frozenset({"input_mean"})
    attribution = True
    description = "Shapley values of v(S) = E_b[f(x_S, b_~S)]: exact for few players, Kernel SHAP otherwise"

    def __init__(self, options: ShapOptions, context: AuditContext) -> None:
        super().__init__(options, context)
        self.players, self.grouped = resolve_players(context, options.groups)
        self.seed = context.seed if options.seed is None else options.seed
        self.salt_jets = salt_for(self.seed, "shap-jets")
        self.salt_background = salt_for(self.seed, "shap-background")
        b = options.background
        if isinstance(b, int):
            self.background_pool = b
        elif b.startswith("kmeans:"):
            k = int(b.split(":")[1])
            self.background_pool = max(1000, 50 * k)
        elif b.startswith("reference"):
            self.background_pool = int(b.split(":")[1]) if ":" in b else REFERENCE_BACKGROUND
        else:
            self.background_pool = 0
        self.from_reference = isinstance(b, str) and b.startswith("reference")

    @classmethod
    def needs_for(cls, options: ShapOptions) -> frozenset[str]:
        if isinstance(options.background, str) and options.background.startswith("reference"):
            return cls.needs | {"reference"}
        return cls.needs

    # -- the chunk loop -------------------------------------------------------------------------
    def start(self) -> ShapState:
        return ShapState()

    def update(self, state: ShapState, chunk: Chunk) -> ShapState:
        n = len(chunk)
        if n == 0:
            return state
        inputs = {k: v.reshape(n, -1) for k, v in chunk.inputs.items()}
        labels = np.full(n, 2, np.int8) if chunk.labels is None else chunk.labels.astype(np.int8)
        entries = np.asarray(chunk.entries, np.int64)
        add_by_class(state.explain, self.options.jets, entry_keys(entries, self.salt_jets), entries, inputs,
                     chunk.score, labels)
        if self.background_pool and not self.from_reference:
            self._add_background(state, inputs, entries, chunk.score, labels)
        return state

    def update_reference(self, state: ShapState, chunk: Chunk) -> ShapState:
        """The background drawn from the reference sample (``background = "reference[:N]"``)."""
        n = len(chunk)
        if n and self.from_reference:
            labels = np.full(n, 2, np.int8) if chunk.labels is None else chunk.labels.astype(np.int8)
            self._add_background(state, {k: v.reshape(n, -1) for k, v in chunk.inputs.items()},
                                 np.asarray(chunk.entries, np.int64), chunk.score, labels)
        return state

    def _add_background(self, state: ShapState, inputs: dict[str, np.ndarray], entries: np.ndarray,
                        score: np.ndarray, labels: np.ndarray) -> None:
        if state.background is None:
            state.background = Reservoir(self.background_pool)
        state.background.add(entry_keys(entries, self.salt_background), entries, inputs, score, labels)

    def merge(self, a: ShapState, b: ShapState) -> ShapState:
        explain = merge_by_class(a.explain, b.explain)
        if a.background is None or b.background is None:
            background = a.background or b.background
        else:
            background = a.background.merged(b.background)
        return ShapState(explain, background)

    # -- finish ---------------------------------------------------------------------------------
    def _background(self, state: ShapState) -> tuple[dict[str, np.ndarray], np.ndarray, str]:
        b = self.options.background
        if b == "mean":
            mean = self.context.baseline("mean")
            mean_rows = {k: np.asarray(v, np.float32).reshape(1, -1) for k, v in mean.items()}
            return mean_rows, np.ones(1), "x̄ (mean input)"
        pool = state.background
        if pool is None or len(pool) == 0:
            raise RuntimeError("no jets were collected for the SHAP background")
        if isinstance(b, int) or self.from_reference:
            uniform = np.full(len(pool), 1.0 / len(pool))
            where = "reference" if self.from_reference else "audited"
            return dict(pool.inputs), uniform, f"{len(pool)} {where} jets drawn at random"
        k = int(b.split(":")[1])
        names = list(pool.inputs)
        widths = [pool.inputs[n].shape[1] for n in names]
        data = np.concatenate([pool.inputs[n] for n in names], axis=1)
        # cluster on the features only (masks and other non-feature positions would dominate)
        positions = self._feature_columns(names, widths)
        centres, counts = kmeans(data[:, positions], k, self.seed)
        rows = np.repeat(data.mean(axis=0, keepdims=True), len(centres), axis=0)
        rows[:, positions] = centres
        centred: dict[str, np.ndarray] = {}
        start = 0
        for n, w in zip(names, widths):
            centred[n] = rows[:, start:start + w].astype(np.float32)
            start += w
        described = f"k-means: {len(centres)} centres of {len(pool)} audited jets, weighted by size"
        return centred, counts / counts.sum(), described

    def _feature_columns(self, names: list[str], widths: list[int]) -> np.ndarray:
        offset = dict(zip(names, np.cumsum([0] + widths[:-1])))
        return np.array([offset[s.input] + s.index for s in self.context.builder.slots], np.int64)

    def _budget(self, m: int) -> int:
        return default_budget(m) if self.options.samples == "auto" else int(self.options.samples)

    def compute(self, jets: dict[str, np.ndarray], f_x: np.ndarray, background: dict[str, np.ndarray],
                weights: np.ndarray) -> dict[str, Any]:
        """Shapley values for the given jets (flat rows per input): φ, φ_0, errors, bookkeeping."""
        tagger = self.context.tagger
        shapes = {t.name: self.context.tagger_input_row(t.name) for t in tagger.info.inputs}
        jets_shaped = {k: v.reshape((len(v), *shapes[k])) for k, v in jets.items()}
        # inputs without a background row (none expected) are never replaced: zeros are placeholders
        bg = {k: background.get(k, np.zeros((len(weights), int(np.prod(s))), np.float32))
              for k, s in shapes.items()}
        owners = self.players.owners(self.context.builder.slots, shapes)
        evaluator = CoalitionEvaluator(tagger, owners, jets_shaped, bg, weights)
        m = len(self.players)
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, 0x5A4B]))
        if m <= self.options.max_exact:
            v = evaluator.values(all_coalitions(m))
            phi = exact_shapley(v)
            return {"phi": phi, "v_empty": v[:, 0], "error": np.zeros_like(phi), "exact": True,
                    "method": "exact", "samples": 1 << m, "rows": evaluator.forward_rows}
        v_empty = evaluator.values(np.zeros((1, m), bool))[:, 0]
        budget = self._budget(m)
        if self.options.method == "permutation":
            n_perm = max(2, budget // max(1, m - 1))
            phi, err = permutation_shap(evaluator.values, m, n_perm, v_empty, f_x, rng)
            return {"phi": phi, "v_empty": v_empty, "error": err, "exact": False, "method": "permutation",
                    "samples": n_perm * (m - 1), "rows": evaluator.forward_rows}
        design = kernel_design(m, budget, rng)
        v = evaluator.values(design.coalitions)
        rule = self._l1_rule(m, len(design.coalitions))
        if rule is None:
            phi, err = kernel_shap(design, v, v_empty, f_x)
        else:
            phi, err = kernel_shap_selected(design, v, v_empty, f_x, rule)
        return {"phi": phi, "v_empty": v_empty, "error": err, "exact": False, "method": "kernel",
                "samples": len(design.coalitions), "rows": evaluator.forward_rows, "l1_reg": rule}

    def _l1_rule(self, m: int, coalitions: int) -> str | int | None:
        """The feature selection to apply: shap's rule for "auto" (AIC when under 20 % of the
        2^M − 2 coalitions are evaluated), which also needs more augmented rows than players."""
        r = self.options.l1_reg
        if r is False:
            return None
        if r == "auto":
            sampled_fraction = coalitions / (2.0 ** m - 2)
            return "aic" if sampled_fraction < 0.2 and 2 * coalitions > m + 1 else None
        if isinstance(r, str) and 2 * coalitions <= m + 1:
            raise RuntimeError(f"l1_reg = {r!r} estimates the noise variance from a full fit, which needs more "
                               f"than {(m + 1) // 2} coalitions for {m} players (found {coalitions}); raise samples "
                               "or give l1_reg a number of players")
        return r

    def finish(self, state: ShapState) -> ExplainerResult:
        reservoirs = [state.explain[c] for c in sorted(state.explain)]
        if not reservoirs or sum(len(r) for r in reservoirs) == 0:
            raise RuntimeError("no jets to explain")
        entries = np.concatenate([r.entries for r in reservoirs])
        order = np.argsort(entries, kind="stable")
        entries = entries[order]
        labels = np.concatenate([r.labels for r in reservoirs])[order]
        f_x = np.concatenate([r.score for r in reservoirs])[order]
        jets = {k: np.concatenate([r.inputs[k] for r in reservoirs])[order] for k in reservoirs[0].inputs}
        background, weights, described = self._background(state)
        out = self.compute(jets, f_x, background, weights)
        phi, v_empty, error = out["phi"], out["v_empty"], out["error"]
        additivity = float(np.max(np.abs(v_empty + phi.sum(axis=1) - f_x)))
        warnings = self._check_estimate(phi, error, additivity, f_x, int(out["samples"]))
        names = self.players.names
        absphi = np.abs(phi)
        labelled = bool((labels != 2).any())

        def class_mean(c: int) -> np.ndarray | None:
            sel = labels == c
            return absphi[sel].mean(axis=0) if labelled and sel.any() else None

        overall, sig, bkg = absphi.mean(axis=0), class_mean(1), class_mean(0)
        scores = sorted_scores([FeatureScore(name, float(overall[i]),
                                             None if sig is None else float(sig[i]),
                                             None if bkg is None else float(bkg[i]))
                                for i, name in enumerate(names)])
        boot = self.context.bootstrap_means("shap")
        if boot is not None:  # over the explained jets: their sampling, not the estimator's own error
            boot.add(absphi, labels if labelled else None, None, entries)
        scores, replicates = ranked_with_intervals(scores, boot, list(names),
                                                   "groups" if self.grouped else "features")
        # a group of features has no single value: no colour in the beeswarm, no dependence plot
        values = None if self.grouped else player_values(self.players, self.context.builder.slots, jets)
        explanation = Explanation(phi, list(names), entries, v_empty, values, error, labels if labelled else None,
                                  f_x, output="probability")
        estimated = bool(np.isfinite(error).all())
        mean_error = error.mean(axis=0)
        fields = {
            "base_value": float(v_empty.mean()),
            "jets_explained": int(len(entries)),
            "jets_explained_per_class": {CLASS_NAMES[int(c)]: int((labels == c).sum())
                                         for c in np.unique(labels)},
            "exact": bool(out["exact"]),
            "method": out["method"],
            "l1_reg": out.get("l1_reg"),  # the feature selection applied (None: every player fitted)
            "additivity_max_abs_error": additivity,
            "players": "groups" if self.grouped else "features",
            "groups": ({n: [self.context.features[k] for k in ks] for n, ks in
                        zip(names, self.players.members) if len(ks) > 1} if self.grouped else None),
            "n_players": len(names),
            "coalitions_per_jet": int(out["samples"]),
            "model_rows_evaluated": int(out["rows"]),
            "background_description": described,
            "background_rows": int(len(weights)),
            "error_estimate": ({n: float(mean_error[i]) for i, n in enumerate(names)} if estimated else None),
            "max_error_estimate": (float(error.max()) if error.size else 0.0) if estimated else None,
            "definition": ("Shapley values of v(S) = sum_b w_b f(x_S, b_~S); feature_importance = mean |phi| "
                           "over the explained jets"
                           + (" (players are groups of features)" if self.grouped else "")),
        }
        top = scores[0] if scores else None
        how = "exactly" if out["exact"] else f"by {out['method']} sampling"
        summary = (f"SHAP values of {len(entries)} jets computed {how} over {len(names)} "
                   f"{'groups' if self.grouped else 'features'}; largest mean |φ|: "
                   f"{top.feature} ({top.score:.3g}).") if top else ""
        return self.result(feature_importance=scores, fields=fields, summary=summary, warnings=warnings,
                           replicates=replicates,
                           trees={"shap": explanation.branches("shap", own_tree=True)}, explanation=explanation)

    @staticmethod
    def _check_estimate(phi: np.ndarray, error: np.ndarray, additivity: float, f_x: np.ndarray,
                        samples: int) -> list[str]:
        """Refuse an estimate that is not a result (status failed), warn about a weak one."""
        m = phi.shape[1]
        if not np.isfinite(phi).all():
            raise RuntimeError("the Shapley value estimates are not finite; raise samples")
        if additivity > 1e-6 * (1.0 + float(np.abs(f_x).max())):
            raise RuntimeError(f"the Shapley values do not add up to f(x) - E[f] (largest error {additivity:.3g})")
        if not np.isfinite(error).all():
            return [f"{samples} coalitions for {m} players: the fit is under-determined, so φ is shrunk toward "
                    "the equal split (f(x) − E[f]) / M by a ridge chosen by cross-validation, with Σφ = f(x) − E[f], "
                    f"and has no error estimate; set samples well above {2 * m} for a determined fit"]
        noise, size = float(error.mean()), float(np.abs(phi).mean())
        if noise > size:
            raise RuntimeError(f"the Shapley values are dominated by their sampling error (mean error estimate "
                               f"{noise:.3g} > mean |φ| {size:.3g}); raise samples")
        if noise > 0.25 * size:
            return [f"the sampling error is large (mean error estimate {noise:.3g}, mean |φ| {size:.3g}): "
                    "read the ranking with care or raise samples"]
        return []

    def draw(self, result: ExplainerResult) -> list[Figure]:
        """The shared beeswarm and dependence plots of the explained jets."""
        from hepaudit.report.explanation_figures import Labels, explanation_figures

        return explanation_figures(result.explanation, Labels("shap", "SHAP", "φ", "change of the signal score"))


@hookimpl
def hepaudit_register_explainers(register: ExplainerRegistry) -> None:
    register(Shap)
