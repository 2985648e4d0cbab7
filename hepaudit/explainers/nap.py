"""NAP: neural activation patterns — relative neural activity (RNA) and sparsity per layer.

Definition (docs/methods.md; Khot, Neubauer & Roy, arXiv:2210.04371): for node j of hidden
layer k over the jets S of one class,

    RNA(j, k; S) = Σ_i a_jk(s_i) / max_j Σ_i a_jk(s_i)

Hidden layers are the outputs of activation nodes on the path to the score, without the
score's own Sigmoid/Softmax head (:func:`hepaudit.model.layers.find_hidden_layers`), or
the tensors named in ``layers``. A node is one entry of the channel axis (Conv: axis 1;
MatMul/Gemm: last; override with ``channel_axis``); other axes (particles, positions) are
summed per jet, leaving out padded particles when a mask input matches the axis.

Sparsity is the fraction of nodes with RNA < ``threshold`` (0.2), per layer and pooled over
every node of every layer, per class and overall (a node is sparse overall when
max(RNA_sig, RNA_bkg) < threshold). Sums are unweighted: they describe what the network
does with the jets it sees. Activations are used as they are (``values = "as_is"``): for
activations that can be negative (Tanh, LeakyRelu, Elu, ...) a node's RNA can be negative
and then counts as sparse; the result warns when that happens. ``values = "absolute"``
sums |a| instead, measuring how strongly a node responds regardless of sign. A layer whose
largest sum is not positive (a layer that never activates) gets RNA 0 for every node.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from hepaudit.errors import ConfigError, ModelError
from hepaudit.explainers.base import AuditContext, Chunk, Explainer
from hepaudit.model.layers import (
    HiddenLayer,
    class_sums,
    find_hidden_layers,
    mask_sources,
    masks_for,
    named_layers,
    per_jet_channels,
    tensor_exists,
)
from hepaudit.plugins import ExplainerRegistry, hookimpl
from hepaudit.results import ExplainerResult, Figure


@dataclass(frozen=True)
class NapOptions:
    layers: list[str] | None = None  # tensor names; default: every hidden activation on the score path
    threshold: float = 0.2  # relative activity below which a node counts as sparse (0 < t < 1)
    channel_axis: int | dict[str, int] | None = None  # for every layer, or per tensor name
    values: Literal["as_is", "absolute"] = "as_is"  # activations as they are, or their absolute values
    figure: bool = True  # draw the NAP diagram

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold: expected a number between 0 and 1, found {self.threshold}")


@dataclass
class NapState:
    """Per layer, the (2, C) sums Σ_i a_jk over background (row 0) and signal (row 1) jets."""

    sums: dict[str, np.ndarray] = field(default_factory=dict)
    jets: np.ndarray = field(default_factory=lambda: np.zeros(2))


def relative_activity(sums: np.ndarray) -> tuple[np.ndarray, bool]:
    """RNA = sums / max(sums) along the last axis; (zeros, False) when the max is not positive."""
    top = float(np.max(sums)) if sums.size else 0.0
    if not top > 0.0:
        return np.zeros_like(sums, dtype=np.float64), False
    return sums / top, True


class NeuralActivationPatterns(Explainer[NapState]):
    name = "nap"
    Options = NapOptions
    needs = frozenset({"labels"})
    description = "Relative neural activity of every hidden node per class, NAP diagram and sparsity"

    def __init__(self, options: NapOptions, context: AuditContext) -> None:
        super().__init__(options, context)
        tagger = context.tagger
        proto = tagger.proto
        if options.layers:
            missing = [n for n in options.layers if not tensor_exists(proto, n)]
            if missing:
                raise ConfigError(f"explainers.nap.layers: the model has no tensor named {missing[0]!r}")
            layers = named_layers(proto, options.layers)
        else:
            layers = find_hidden_layers(proto, tagger.score_spec.output, tagger.score_spec.head)
            if not layers:  # this explainer fails, the audit goes on
                raise ModelError(
                    "found no activation nodes (Relu, Gelu, Tanh, ...) on the path to the score; "
                    "name the hidden tensors with explainers.nap.layers = [...]"
                )
        axis = options.channel_axis
        if axis is not None:
            if isinstance(axis, dict):
                unknown = [n for n in axis if n not in {layer.name for layer in layers}]
                if unknown:
                    raise ConfigError(f"explainers.nap.channel_axis: {unknown[0]!r} is not one of the layers")
            layers = [
                HiddenLayer(
                    la.name,
                    la.op,
                    _override(axis, la.name, la.channel_axis),
                    la.inputs,
                    "option" if isinstance(axis, int) or la.name in axis else la.channel_axis_from,
                )
                for la in layers
            ]
        self.layers: list[HiddenLayer] = layers
        self.masks = mask_sources(context.builder.inputs)
        self._by_name = {la.name: la for la in layers}
        # each onnxruntime call's activations are summed per jet and channel at once: a chunk
        # never holds ParticleNet's (N, 64, 100, 16) EdgeConv tensors, only (N, 64)
        tagger.expose([la.name for la in layers], reduce=self._per_jet_channels)

    def _per_jet_channels(self, name: str, values: np.ndarray, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """(m, C): each jet's activation per channel (|a| with values = "absolute")."""
        if values.ndim <= 2:
            return values  # already one value per channel: kept as it is (abs in update)
        layer = self._by_name[name]
        if self.options.values == "absolute":
            values = np.abs(values)
        return per_jet_channels(values, layer.channel_axis, masks_for(layer, self.masks, inputs))

    def start(self) -> NapState:
        return NapState()

    def update(self, state: NapState, chunk: Chunk) -> NapState:
        assert chunk.labels is not None
        counted = False
        for layer in self.layers:
            values = chunk.extra.get(layer.name)
            if values is None:  # the tagger found no per-jet view of it
                raise ModelError(self.context.tagger.no_jet_axis.get(layer.name, f"no values for {layer.name!r}"))
            if values.ndim <= 2:  # (N, C): a dense layer, or summed per jet by _per_jet_channels
                per_jet = np.abs(values) if self.options.values == "absolute" else values
                per_jet = per_jet.reshape(len(values), -1)
            else:
                per_jet = per_jet_channels(np.abs(values) if self.options.values == "absolute" else values,
                                           layer.channel_axis, masks_for(layer, self.masks, chunk.inputs))
            sums, jets = class_sums(per_jet, chunk.labels)
            previous = state.sums.get(layer.name)
            state.sums[layer.name] = sums if previous is None else previous + sums
            if not counted:
                state.jets = state.jets + jets
                counted = True
        return state

    def merge(self, a: NapState, b: NapState) -> NapState:
        sums = dict(a.sums)
        for name, value in b.sums.items():
            sums[name] = value if name not in sums else sums[name] + value
        return NapState(sums, a.jets + b.jets)

    def finish(self, state: NapState) -> ExplainerResult:
        t = self.options.threshold
        rows: list[dict[str, Any]] = []
        warnings: list[str] = []
        pooled_sig, pooled_bkg, pooled_all = [], [], []
        for layer in self.layers:
            sums = state.sums.get(layer.name)
            if sums is None:
                continue
            rna_bkg, ok_bkg = relative_activity(sums[0])
            rna_sig, ok_sig = relative_activity(sums[1])
            both = np.maximum(rna_sig, rna_bkg)
            if (rna_sig < 0).any() or (rna_bkg < 0).any():
                warnings.append(
                    f"layer {layer.name} ({layer.op}) has nodes with a negative activation sum, so a "
                    'negative RNA; they count as sparse (set values = "absolute" to use |a|)'
                )
            if layer.channel_axis_from == "default":
                warnings.append(
                    f"layer {layer.name}: no Conv/MatMul/Gemm found next to it; took the last axis as "
                    "the channel axis (override with channel_axis)"
                )
            dead = np.flatnonzero((sums[0] == 0) & (sums[1] == 0))
            rows.append(
                {
                    "name": layer.name,
                    "op": layer.op,
                    "channel_axis": layer.channel_axis,
                    "nodes": int(sums.shape[1]),
                    "rna_signal": rna_sig.tolist(),
                    "rna_background": rna_bkg.tolist(),
                    "drna": np.abs(rna_sig - rna_bkg).tolist(),  # the dNAP diagram's values
                    "sparsity_signal": float(np.mean(rna_sig < t)),
                    "sparsity_background": float(np.mean(rna_bkg < t)),
                    "sparsity": float(np.mean(both < t)),
                    "active_nodes": int(np.sum(both >= t)),
                    "dead_nodes": dead.tolist(),
                    "never_active": not (ok_sig or ok_bkg),
                }
            )
            pooled_sig.append(rna_sig < t)
            pooled_bkg.append(rna_bkg < t)
            pooled_all.append(both < t)
        overall = float(np.mean(np.concatenate(pooled_all))) if pooled_all else None
        sparsity_signal = float(np.mean(np.concatenate(pooled_sig))) if pooled_sig else None
        sparsity_background = float(np.mean(np.concatenate(pooled_bkg))) if pooled_bkg else None
        findings = self._findings(rows, t)
        total = sum(r["nodes"] for r in rows)
        summary = (
            f"{len(rows)} hidden layers, {total} nodes; overall sparsity {overall:.3f} (fraction of nodes "
            f"with RNA < {t} for both classes; signal {sparsity_signal:.3f}, background "
            f"{sparsity_background:.3f}). "
            if overall is not None
            else ""
        ) + " ".join(findings)
        return self.result(
            fields={
                "layers": rows,
                "threshold": t,
                "sparsity": overall,
                "sparsity_signal": sparsity_signal,
                "sparsity_background": sparsity_background,
                "values": self.options.values,
                "jets": {"signal": int(state.jets[1]), "background": int(state.jets[0])},
                "findings": findings,
                "definition": "RNA(j,k;S) = sum_i a_jk(s_i) / max_j sum_i a_jk(s_i) per class; sparsity = "
                f"fraction of nodes with RNA < {t} (overall: max(RNA_sig, RNA_bkg) < {t})",
            },
            summary=summary,
            warnings=warnings,
        )

    def draw(self, result: ExplainerResult) -> list[Figure]:
        rows = result.fields.get("layers") or []
        if not (self.options.figure and rows):
            return []
        from hepaudit.explainers.nap_figures import dnap_diagram, nap_diagram

        png = nap_diagram(rows, result.fields["threshold"])
        if not png:
            return []
        figures = [Figure("nap_diagram.png", "NAP diagram: relative neural activity of every hidden node, signal "
                          "(red, right half) and background (blue, left half); one column per layer, input side "
                          "on the left", png)]
        difference = dnap_diagram(rows)
        if difference:
            figures.append(Figure("nap_difference.png", "dNAP diagram: |RNA signal − RNA background| of every "
                                  "hidden node, the nodes whose activity tells the classes apart", difference))
        return figures

    def _findings(self, rows: list[dict[str, Any]], t: float) -> list[str]:
        out = []
        silent = [r["name"] for r in rows if r["active_nodes"] == 0]
        if silent:
            out.append(
                f"Layer(s) {', '.join(silent)} never activate for either class (every node below {t}): "
                "the information passes around them or not at all."
            )
        dead = [(r["name"], len(r["dead_nodes"]), r["nodes"]) for r in rows if r["dead_nodes"]]
        if dead:
            out.append(
                "Nodes that are exactly zero for every jet of both classes: "
                + ", ".join(f"{name} {n}/{total}" for name, n, total in dead)
                + "."
            )
        widths = [r["active_nodes"] for r in rows]
        if rows and any(w < r["nodes"] for w, r in zip(widths, rows)):
            current = ", ".join(str(r["nodes"]) for r in rows)
            slim = ", ".join(str(max(w, 1)) for w in widths)
            out.append(
                f"Suggestion, not a guarantee: the layers have ({current}) nodes, of which ({slim}) reach "
                f"RNA >= {t} for at least one class; a network of about that size may perform as well. "
                "Retrain it and verify its AUC and background rejection on held-out jets before using it"
                + (
                    "; layers joined by residual connections must keep equal widths."
                    if any(r["channel_axis"] == 1 for r in rows)
                    else "."
                )
            )
        return out


def _override(axis: int | dict[str, int], name: str, default: int) -> int:
    if isinstance(axis, int):
        return axis
    return axis.get(name, default)


@hookimpl
def hepaudit_register_explainers(register: ExplainerRegistry) -> None:
    register(NeuralActivationPatterns)
