"""Latent space: PCA of a hidden tensor and what jet physics its leading components encode.

For a hidden tensor h (option ``tensor``; default: the widest pooled tensor — the output of
a ReduceSum/ReduceMean/global pool on the path to the score, e.g. a deep set's latent
space — else the last hidden layer), each jet's value per channel (other axes summed,
padded particles left out via the mask, as in ``nap``) is a vector of C numbers.

* PCA: chunk by chunk the jet count, Σ (h − K) and Σ (h − K)(h − K)ᵀ are accumulated (K a
  fixed shift, the first chunk's mean, for numerical stability; states with different
  shifts merge exactly). The covariance (population, 1/n) is diagonalised; the report gives
  the variance explained by every component and, for the leading ``components``, their
  per-class means, loadings and correlations. A component's sign is fixed so that its
  largest loading is positive.
* Pearson correlation of each leading component with each jet observable is exact over all
  jets with a finite observable value: the same moments plus Σ (h − K)·o, Σ o, Σ o² are
  accumulated, and the jets where an observable is not finite are subtracted out.
* Spearman correlation needs ranks over jets, and the components are only known at the end,
  so it (and the per-class distributions figure and each component's AUC) uses a uniform
  random sample of at most ``sample`` jets, kept as a bottom-k sample on a hash of the
  jet's entry number and the seed (reproducible, mergeable, independent of chunking). When
  the audit has at most ``sample`` jets, the sample is every jet. Its jets' components and
  observables go to per_jet.root's tree ``latent`` (option ``tree``).

Observables: from the first constituents input's four-momenta (``momentum`` config):
jet ``mass``, ``pt``, ``n_constituents``, and with ``nsubjettiness`` τ1, τ2, τ3, τ21, τ32
(β = 1, R0 = 0.8; axes as documented in :mod:`hepaudit.data.observables`) on a uniform
sample of about ``nsubjettiness_jets`` jets (every jet when the audit has fewer; their
Pearson correlations are over that sample, as for any observable that is not finite
everywhere); and every branch of a ``kind = "jet"`` input, under its branch name. Unweighted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hepaudit.data.observables import constituents_from_arrays, jet_observables
from hepaudit.errors import ConfigError
from hepaudit.explainers.base import AuditContext, Chunk, Explainer
from hepaudit.metrics import average_ranks, spearman
from hepaudit.model.graph import value_types
from hepaudit.model.layers import (
    HiddenLayer,
    find_hidden_layers,
    mask_sources,
    masks_for,
    named_layers,
    per_jet_channels,
    pooled_tensors,
    tensor_exists,
)
from hepaudit.plugins import ExplainerRegistry, hookimpl
from hepaudit.results import ExplainerResult, Figure
from hepaudit.sampling import seeded_keys, to_unit


@dataclass(frozen=True)
class LatentOptions:
    tensor: str | None = None  # ONNX tensor name; default: the widest pooled tensor, else the last hidden layer
    components: int = 3  # leading principal components reported and plotted
    channel_axis: int | None = None  # the tensor's channel axis; default: from the graph
    sample: int = 100_000  # jets kept for Spearman, the figure and the AUCs
    # write the sampled jets' leading components and observables to per_jet.root's tree `latent`
    tree: bool = True
    nsubjettiness: bool = True  # compute τ1, τ2, τ3, τ21, τ32 among the observables
    # τ_N from a uniform sample of about this many jets (every jet when the audit has fewer):
    # its minimisation costs ~0.6 ms a jet on one core, the rest of latent microseconds
    nsubjettiness_jets: int = 2000
    figure: bool = True  # draw the figures

    def __post_init__(self) -> None:
        if self.components < 1:
            raise ValueError("components: expected at least 1")
        if self.sample < 10:
            raise ValueError("sample: expected at least 10 jets")
        if self.nsubjettiness_jets < 1:
            raise ValueError("nsubjettiness_jets: expected at least 1 (nsubjettiness = false turns τ off)")


def _component_histograms(pcs: np.ndarray, labels: np.ndarray | None, bins: int = 40) -> list[dict[str, Any]]:
    """Per leading component, its distribution per class on the jet sample (densities), binned
    from the 0.5 to the 99.5 percentile (outliers in the end bins): what the figure shows."""
    out: list[dict[str, Any]] = []
    if labels is None or not len(pcs):
        return out
    for i in range(pcs.shape[1]):
        values = pcs[:, i]
        finite = values[np.isfinite(values)]
        lo, hi = np.percentile(finite, [0.5, 99.5]) if finite.size else (0.0, 1.0)
        edges = np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)
        entry: dict[str, Any] = {"index": i, "bin_edges": edges.tolist()}
        for cls, name in ((1, "signal"), (0, "background")):
            sel = values[labels == cls]
            if sel.size:
                entry[name] = np.histogram(np.clip(sel, edges[0], edges[-1]), bins=edges, density=True)[0].tolist()
        out.append(entry)
    return out


@dataclass
class Moments:
    """n, Σ (h − K), Σ (h − K)(h − K)ᵀ about a fixed shift K; mergeable across shifts."""

    n: float = 0.0
    shift: np.ndarray | None = None
    s1: np.ndarray | None = None
    s2: np.ndarray | None = None

    def add(self, h: np.ndarray) -> None:
        if self.shift is None:
            self.shift = h.mean(axis=0) if len(h) else np.zeros(h.shape[1])
            self.s1 = np.zeros(h.shape[1])
            self.s2 = np.zeros((h.shape[1], h.shape[1]))
        c = h - self.shift
        self.n += len(h)
        self.s1 = self.s1 + c.sum(axis=0)
        self.s2 = self.s2 + c.T @ c

    def shifted(self, shift: np.ndarray) -> Moments:
        """The same moments about another shift (exact algebra)."""
        if self.shift is None:
            return Moments()
        assert self.s1 is not None and self.s2 is not None
        d = self.shift - shift  # (h − new) = (h − old) + d
        s1 = self.s1 + self.n * d
        s2 = self.s2 + np.outer(self.s1, d) + np.outer(d, self.s1) + self.n * np.outer(d, d)
        return Moments(self.n, shift.copy(), s1, s2)

    def merged(self, other: Moments) -> Moments:
        if self.shift is None:
            return other
        if other.shift is None:
            return self
        o = other.shifted(self.shift)
        return Moments(self.n + o.n, self.shift, self.s1 + o.s1, self.s2 + o.s2)  # type: ignore[operator]

    def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        assert self.shift is not None and self.s1 is not None and self.s2 is not None and self.n > 0
        m = self.s1 / self.n
        return self.shift + m, self.s2 / self.n - np.outer(m, m)


@dataclass
class LatentState:
    all: Moments = field(default_factory=Moments)
    by_class: dict[int, Moments] = field(default_factory=dict)  # 0 background, 1 signal
    # per observable: moments of h over jets where it is NOT finite (subtracted at the end), and
    # Σ o, Σ o², Σ (h − K)·o over jets where it is finite
    excluded: dict[str, Moments] = field(default_factory=dict)
    obs_sums: dict[str, Any] = field(default_factory=dict)  # [n, Σo, Σo²]
    obs_cross: dict[str, np.ndarray] = field(default_factory=dict)  # Σ (h − K)·o, C values
    kept: KeptJets | None = None  # the uniform sample for Spearman, the figure and the latent tree


@dataclass
class KeptJets:
    """A bottom-k sample of jets on a seeded hash of their entry numbers: mergeable in any
    order, the same jets whatever the chunking."""

    keys: np.ndarray  # (k,) in [0, 1)
    entries: np.ndarray  # (k,) int64, the jets' entry numbers
    values: np.ndarray  # (k, C) float32
    observables: np.ndarray  # (k, n_obs) float32
    labels: np.ndarray  # (k,)

    def joined(self, other: KeptJets | None, limit: int) -> KeptJets:
        """This sample and ``other``, cut back to the ``limit`` jets with the lowest keys."""
        parts = [self] if other is None else [self, other]
        joined = KeptJets(*(np.concatenate([getattr(p, f) for p in parts]) for f in _KEPT_FIELDS))
        if len(joined.keys) <= limit:
            return joined
        keep = np.argpartition(joined.keys, limit - 1)[:limit]
        return KeptJets(*(getattr(joined, f)[keep] for f in _KEPT_FIELDS))


_KEPT_FIELDS = ("keys", "entries", "values", "observables", "labels")


class LatentSpace(Explainer[LatentState]):
    name = "latent"
    needs = frozenset({"arrays"})  # jet observables from the raw constituent branches
    Options = LatentOptions
    description = "PCA of a hidden tensor and the correlation of its leading components with jet observables"

    def __init__(self, options: LatentOptions, context: AuditContext) -> None:
        super().__init__(options, context)
        tagger = context.tagger
        proto = tagger.proto
        if options.tensor is not None:
            if not tensor_exists(proto, options.tensor):
                raise ConfigError(
                    f"explainers.latent.tensor: the model has no tensor named {options.tensor!r}"
                )
            layer = named_layers(proto, [options.tensor])[0]
            self.chosen_by = "option tensor"
        else:
            layer, self.chosen_by = self._default_layer()
        if options.channel_axis is not None:
            layer = HiddenLayer(layer.name, layer.op, options.channel_axis, layer.inputs, "option")
        self.layer = layer
        self.masks = mask_sources(context.builder.inputs)
        constituents = [
            c for c in context.builder.inputs if c.kind == "constituents" and c.momentum is not None
        ]
        self.momentum = constituents[0].momentum if constituents else None
        self.branches = [b for c in context.builder.inputs if c.kind == "jet" for b in (c.branches or ())]
        names = []
        if self.momentum is not None:
            names = ["mass", "pt", "n_constituents"]
            if options.nsubjettiness:
                names += ["tau1", "tau2", "tau3", "tau21", "tau32"]
        self.observable_names = names + [b for b in self.branches if b not in names]
        tagger.expose([layer.name])

    def _default_layer(self) -> tuple[HiddenLayer, str]:
        tagger = self.context.tagger
        proto = tagger.proto
        pooled = pooled_tensors(proto, tagger.score_spec.output)
        if pooled:
            types = value_types(proto)

            def width(name: str) -> int:
                dims = types[name].type.tensor_type.shape.dim if name in types else []
                sizes = [d.dim_value for d in dims[1:] if d.HasField("dim_value")]
                return int(np.prod(sizes)) if sizes else 0

            best = max(pooled, key=lambda n: (width(n), pooled.index(n)))
            return named_layers(proto, [best])[0], "widest pooled tensor"
        hidden = find_hidden_layers(proto, tagger.score_spec.output, tagger.score_spec.head)
        if not hidden:
            raise ConfigError(
                "explainers.latent: the model has no pooled tensor and no hidden activation on the "
                'path to the score; name one with tensor = "..."'
            )
        return hidden[-1], "last hidden layer"

    def start(self) -> LatentState:
        return LatentState()

    def _observables(self, chunk: Chunk) -> np.ndarray:
        cols: dict[str, np.ndarray] = {}
        if self.momentum is not None:
            parts = constituents_from_arrays(chunk.arrays, self.momentum)
            # τ on the jets whose seeded key falls below the sampling fraction: a uniform sample,
            # the same jets whatever the chunking, the bottom of the Spearman sample's keys
            fraction = self.options.nsubjettiness_jets / max(self.context.n_jets, 1)
            tau_jets = None if fraction >= 1 else to_unit(seeded_keys(chunk.entries, self.context.seed)) < fraction
            cols.update(jet_observables(parts, tau=self.options.nsubjettiness, tau_jets=tau_jets,
                                        jet=chunk.jet_momentum()))
        for b in self.branches:
            if b not in cols:
                cols[b] = np.asarray(chunk.arrays[b], dtype=np.float64)
        if not self.observable_names:
            return np.zeros((len(chunk), 0))
        return np.stack([cols[n] for n in self.observable_names], axis=1)

    def update(self, state: LatentState, chunk: Chunk) -> LatentState:
        h = per_jet_channels(
            chunk.extra[self.layer.name],
            self.layer.channel_axis,
            masks_for(self.layer, self.masks, chunk.inputs),
        ).astype(np.float64)  # moments in double precision
        state.all.add(h)
        labels = chunk.labels if chunk.labels is not None else np.full(len(chunk), -1, np.int8)
        for c in (0, 1):
            sel = labels == c
            if sel.any():
                state.by_class.setdefault(c, Moments()).add(h[sel])
        obs = self._observables(chunk)
        assert state.all.shift is not None
        centred = h - state.all.shift
        for j, name in enumerate(self.observable_names):
            o = obs[:, j]
            finite = np.isfinite(o)
            if not finite.all():
                state.excluded.setdefault(name, Moments()).add(h[~finite])
            of = np.where(finite, o, 0.0)
            sums = np.array([finite.sum(), of.sum(), (of * of).sum()], dtype=np.float64)
            state.obs_sums[name] = state.obs_sums.get(name, 0.0) + sums
            state.obs_cross[name] = state.obs_cross.get(name, 0.0) + centred.T @ of
        self._sample(state, chunk.entries, h, obs, labels)
        return state

    def _sample(
        self, state: LatentState, entries: np.ndarray, h: np.ndarray, obs: np.ndarray, labels: np.ndarray
    ) -> None:
        entries = np.asarray(entries, dtype=np.int64)
        chunk = KeptJets(to_unit(seeded_keys(entries, self.context.seed)), entries, h.astype(np.float32),
                         obs.astype(np.float32), labels)
        limit = self._limit(h.shape[1])
        state.kept = chunk.joined(None, limit) if state.kept is None else state.kept.joined(chunk, limit)

    def _limit(self, channels: int) -> int:
        return min(self.options.sample, max(10, 16_000_000 // max(1, channels)))  # ≤ 64 MB of latents

    def merge(self, a: LatentState, b: LatentState) -> LatentState:
        out = LatentState(all=a.all.merged(b.all))
        for c in set(a.by_class) | set(b.by_class):
            out.by_class[c] = a.by_class.get(c, Moments()).merged(b.by_class.get(c, Moments()))
        for name in set(a.excluded) | set(b.excluded):
            out.excluded[name] = a.excluded.get(name, Moments()).merged(b.excluded.get(name, Moments()))
        for name in set(a.obs_sums) | set(b.obs_sums):
            out.obs_sums[name] = a.obs_sums.get(name, 0.0) + b.obs_sums.get(name, 0.0)
            # cross sums are about each state's own shift K: Σ (h − K_out)·o = Σ (h − K)·o + (K − K_out) Σ o
            cross = np.zeros(0)
            for part in (a, b):
                if name in part.obs_cross and part.all.shift is not None and out.all.shift is not None:
                    term = part.obs_cross[name] + (part.all.shift - out.all.shift) * part.obs_sums[name][1]
                    cross = term if cross.size == 0 else cross + term
            out.obs_cross[name] = cross
        if a.kept is None or b.kept is None:
            out.kept = a.kept if b.kept is None else b.kept
        else:
            out.kept = a.kept.joined(b.kept, self._limit(a.kept.values.shape[1]))
        return out

    def finish(self, state: LatentState) -> ExplainerResult:
        mean, cov = state.all.mean_cov()
        eigval, eigvec = np.linalg.eigh(cov)
        order = np.argsort(eigval)[::-1]
        eigval = np.clip(eigval[order], 0.0, None)
        eigvec = eigvec[:, order]
        # a deterministic sign: the largest loading of each component is positive
        flip = np.sign(eigvec[np.abs(eigvec).argmax(axis=0), np.arange(eigvec.shape[1])])
        eigvec = eigvec * np.where(flip == 0, 1.0, flip)
        total = float(eigval.sum())
        ratio = eigval / total if total > 0 else np.zeros_like(eigval)
        k = min(self.options.components, len(eigval))
        shift = state.all.shift
        assert shift is not None
        kept = state.kept
        n_obs = len(self.observable_names)
        if kept is None:
            kept = KeptJets(np.zeros(0), np.zeros(0, np.int64), np.zeros((0, len(mean)), np.float32),
                            np.zeros((0, n_obs), np.float32), np.zeros(0, np.int8))
        sample_pcs = (kept.values.astype(np.float64) - mean) @ eigvec[:, :k]
        components = []
        for i in range(k):
            u = eigvec[:, i]
            entry: dict[str, Any] = {
                "index": i,
                "variance": float(eigval[i]),
                "variance_ratio": float(ratio[i]),
                "loadings": u.tolist(),
            }
            for c, label in ((1, "mean_signal"), (0, "mean_background")):
                m = state.by_class.get(c)
                entry[label] = float((m.mean_cov()[0] - mean) @ u) if m is not None and m.n > 0 else None
            entry["pearson"] = {n: self._pearson(state, n, u) for n in self.observable_names}
            entry["spearman"] = {
                n: spearman(sample_pcs[:, i], kept.observables[:, j])
                for j, n in enumerate(self.observable_names)
            }
            entry["auc_sample"] = _auc(sample_pcs[:, i], kept.labels)
            components.append(entry)
        strongest = []
        for n in self.observable_names:
            rs = [
                (abs(c["pearson"][n]) if c["pearson"][n] is not None else -1.0, c["index"])
                for c in components
            ]
            r, i = max(rs)
            if r >= 0:
                strongest.append({"observable": n, "component": i, "pearson": components[i]["pearson"][n]})
        strongest.sort(key=lambda s: -abs(s["pearson"]))
        summary = (
            f"PCA of {self.layer.name} ({len(eigval)} channels, {self.chosen_by}): the first {k} components "
            f"explain {ratio[:k].sum():.1%} of its variance."
        )
        if strongest:
            best = strongest[0]
            summary += (
                f" Strongest link: component {best['component']} with {best['observable']} "
                f"(Pearson {best['pearson']:+.3f})."
            )
        n_sample = len(kept.keys)
        trees = {"latent": self._tree(kept, sample_pcs)} if self.options.tree and n_sample else {}
        return self.result(
            trees=trees,
            fields={
                "tensor": self.layer.name,
                "tensor_chosen_by": self.chosen_by,
                "channel_axis": self.layer.channel_axis,
                "channels": int(len(eigval)),
                "jets": int(state.all.n),
                "variance_explained": ratio.tolist(),
                "components": components,
                "observables": self.observable_names,
                "strongest": strongest,
                "component_histograms": _component_histograms(sample_pcs, kept.labels),
                "spearman_sample": {"jets": n_sample, "method": "bottom-k on a hash of entry and seed"},
                "nsubjettiness_jets": int(state.obs_sums["tau1"][0]) if "tau1" in state.obs_sums else 0,
                "definition": "PCA of the per-jet channel values (population covariance); Pearson over all "
                "jets with a finite observable, Spearman and AUC on a uniform sample",
            },
            summary=summary,
        )

    def _tree(self, kept: KeptJets, pcs: np.ndarray) -> dict[str, np.ndarray]:
        """The sampled jets in entry order: entry, label, the leading components as one array
        branch ``latent_pc[k]``, and the observables they were compared with."""
        order = np.argsort(kept.entries, kind="stable")
        columns: dict[str, np.ndarray] = {
            "entry": kept.entries[order],
            "label": kept.labels[order].astype(np.int32),
            "latent_pc": pcs[order].astype(np.float32),
        }
        for j, name in enumerate(self.observable_names):
            columns.setdefault(name, kept.observables[order, j])
        return columns

    def draw(self, result: ExplainerResult) -> list[Figure]:
        f = result.fields
        if not (self.options.figure and f.get("component_histograms")):
            return []
        from hepaudit.explainers.nap_figures import latent_figures

        ratio = np.array(f["variance_explained"])
        return [Figure(name, caption, png) for name, caption, png in
                latent_figures(f["component_histograms"], ratio, f["components"], f["observables"])]

    def _pearson(self, state: LatentState, name: str, u: np.ndarray) -> float | None:
        """Exact Pearson r of u·h with observable ``name`` over the jets where it is finite."""
        moments = state.all
        excl = state.excluded.get(name)
        if excl is not None and excl.shift is not None:
            e = excl.shifted(moments.shift)  # type: ignore[arg-type]
            n = moments.n - e.n
            s1 = moments.s1 - e.s1  # type: ignore[operator]
            s2 = moments.s2 - e.s2  # type: ignore[operator]
        else:
            n, s1, s2 = moments.n, moments.s1, moments.s2
        sums = state.obs_sums.get(name)
        if sums is None or n < 2 or s1 is None or s2 is None:
            return None
        mean_h = s1 / n
        mean_o = sums[1] / n
        var_p = float(u @ (s2 / n - np.outer(mean_h, mean_h)) @ u)
        var_o = float(sums[2] / n - mean_o**2)
        cov = float(u @ (state.obs_cross[name] / n - mean_h * mean_o))
        if var_p <= 1e-12 * max(1.0, float(np.trace(s2)) / n) or var_o <= 0:
            return None
        return float(np.clip(cov / np.sqrt(var_p * var_o), -1.0, 1.0))


def _auc(score: np.ndarray, labels: np.ndarray) -> float | None:
    """AUC of one component as a signal score (Mann-Whitney with average ranks)."""
    sig, bkg = labels == 1, labels == 0
    if not sig.any() or not bkg.any():
        return None
    sel = sig | bkg
    r = average_ranks(score[sel]) + 1
    s = sig[sel]
    n1, n0 = s.sum(), (~s).sum()
    return float((r[s].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


@hookimpl
def hepaudit_register_explainers(register: ExplainerRegistry) -> None:
    register(LatentSpace)
