"""Occlusion of hidden units: ΔAUC and MAD of the channels of a hidden tensor.

The paper (arXiv:2210.04371) ranks a PFN's latent dimensions as it ranks inputs: channel k
of a hidden tensor h is replaced by its mean over the audited jets (or a constant
``baseline``) and the rest of the network is run from there. The rest of the network is the
part of the ONNX graph between h and the score, cut out as a model of its own whose one
input is h, so h must separate the inputs from the score (a deep set's pooled latent does;
a tensor beside a skip connection does not, and is refused with the inputs that go around it).

Each chunk's h is kept, spilled to a temporary file, until ``finish``: the mean needs every
jet first. The tensor must hold one row per jet (axis 0) and at most ``MAX_ELEMENTS`` numbers
per jet.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from hepaudit.errors import ConfigError
from hepaudit.explainers.base import AuditContext, Chunk
from hepaudit.explainers.columns import SpilledColumns
from hepaudit.lazy import lazy_module
from hepaudit.metrics import roc_auc
from hepaudit.model.layers import channel_axis_of, graph_inputs_of, normalised_axis, tensor_exists
from hepaudit.results import ExplainerResult, FeatureScore, Figure, sorted_scores

if TYPE_CHECKING:
    import onnx
    import onnxruntime as ort
    from onnx import utils as onnx_utils
else:  # loaded on first use (hepaudit.lazy): registering plugins imports none of them
    onnx = lazy_module("onnx")
    ort = lazy_module("onnxruntime")
    onnx_utils = lazy_module("onnx.utils")

#: numbers per jet of a hidden tensor kept for occlusion (a pooled latent holds tens to hundreds)
MAX_ELEMENTS = 4096


@dataclass
class HiddenState:
    """The kept h of every jet, spilled, with its label and weight (same jet order)."""

    values: SpilledColumns | None = None  # (elements, jets) float32
    shape: tuple[int, ...] = ()
    labels: list[np.ndarray] = field(default_factory=list)
    weights: list[np.ndarray] = field(default_factory=list)


@dataclass
class HiddenScores:
    """The rest of the network's score and logit per jet, plain and with each channel occluded."""

    channels: list[str]
    score: np.ndarray  # (jets,)
    logit: np.ndarray
    scores: np.ndarray  # (channels, jets)
    logits: np.ndarray
    labels: np.ndarray  # (jets,) int8, 2 = unlabelled
    weights: np.ndarray | None


class HiddenUnits:
    """The rest of the network from hidden tensor ``tensor``, and its channels' occlusion."""

    def __init__(self, context: AuditContext, tensor: str, where: str) -> None:
        tagger = context.tagger
        proto = tagger.proto
        if not tensor_exists(proto, tensor):
            raise ConfigError(f"explainers.{where}.hidden: the model has no tensor named {tensor!r}")
        spec = tagger.score_spec
        outputs = [spec.output] + ([spec.head.logit] if spec.head else [])
        around = set().union(*(graph_inputs_of(proto, o, stop={tensor}) for o in outputs)) - {tensor}
        if around:
            raise ConfigError(f"explainers.{where}.hidden = {tensor!r}: the score also depends on the inputs "
                              f"{sorted(around)} by a path that avoids this tensor; choose a tensor that "
                              "separates the inputs from the score (e.g. a deep set's pooled latent)")
        head = onnx_utils.Extractor(_typed(proto, tensor)).extract_model([tensor], list(dict.fromkeys(outputs)))
        self.session = ort.InferenceSession(head.SerializeToString(), providers=["CPUExecutionProvider"])
        self.outputs = list(dict.fromkeys(outputs))
        self.tensor = tensor
        self.channel_axis, _ = channel_axis_of(proto, tensor)
        self.context = context
        self.where = where
        tagger.expose([tensor])

    # -- the chunk loop -----------------------------------------------------------------------
    def add(self, state: HiddenState, chunk: Chunk) -> None:
        if self.tensor not in chunk.extra:
            why = self.context.tagger.no_jet_axis.get(self.tensor, "it was not returned")
            raise RuntimeError(f"hidden tensor {self.tensor!r} cannot be occluded per jet: {why}")
        axis = self.context.tagger.jet_axes.get(self.tensor)
        if axis is not None and not axis.is_rows:
            raise RuntimeError(f"hidden tensor {self.tensor!r} does not hold one row per jet ({axis.describe()}); "
                               "its channels cannot be occluded jet by jet")
        h = chunk.extra[self.tensor]
        n = len(chunk)
        size = int(np.prod(h.shape[1:]))
        if size > MAX_ELEMENTS:
            raise RuntimeError(f"hidden tensor {self.tensor!r} has {size} numbers per jet (at most {MAX_ELEMENTS} "
                               "are kept for occlusion); choose a pooled tensor")
        if state.values is None:
            state.values, state.shape = SpilledColumns(size), tuple(h.shape[1:])
        state.values.append(np.ascontiguousarray(h.reshape(n, size).T, np.float32))
        state.labels.append(np.full(n, 2, np.int8) if chunk.labels is None else chunk.labels.astype(np.int8))
        if chunk.weights is not None:
            state.weights.append(np.asarray(chunk.weights, np.float64))

    @staticmethod
    def merge(a: HiddenState, b: HiddenState) -> HiddenState:
        if a.values is None:
            return b
        if b.values is None:
            return a
        return HiddenState(a.values.merged(b.values), a.shape, a.labels + b.labels, a.weights + b.weights)

    # -- finish -------------------------------------------------------------------------------
    def channels(self, state: HiddenState) -> list[str]:
        if not state.shape:
            return []
        axis = normalised_axis(self.channel_axis, len(state.shape) + 1) - 1
        return [f"{self.tensor}[{k}]" for k in range(state.shape[axis])]

    def scores(self, state: HiddenState, baseline: str | float) -> HiddenScores:
        """Run the rest of the network on every kept jet, plain and with each channel set to the
        baseline (its mean over the audited jets, or the constant)."""
        if state.values is None:
            raise RuntimeError(f"no jets reached hidden tensor {self.tensor!r}")
        n = len(state.values)
        flat = np.stack([state.values.row(i) for i in range(state.values.rows)], axis=1)  # (jets, elements)
        h = flat.reshape((n, *state.shape))
        axis = normalised_axis(self.channel_axis, h.ndim)
        if baseline == "mean":
            fill = h.mean(axis=0, keepdims=True, dtype=np.float64).astype(np.float32)
        else:
            fill = np.full((1, *h.shape[1:]), float(baseline), np.float32)
        score, logit = self._run(h)
        k_all = int(h.shape[axis])
        scores, logits = np.empty((k_all, n)), np.empty((k_all, n))
        work = h.copy()
        for k in range(k_all):
            index = [slice(None)] * h.ndim
            index[axis] = slice(k, k + 1)
            at = tuple(index)
            work[at] = fill[at]
            scores[k], logits[k] = self._run(work)
            work[at] = h[at]
        weights = np.concatenate(state.weights) if state.weights else None
        return HiddenScores(self.channels(state), score, logit, scores, logits, np.concatenate(state.labels),
                            weights)

    def _run(self, h: np.ndarray, rows: int = 65536) -> tuple[np.ndarray, np.ndarray]:
        name = self.session.get_inputs()[0].name
        parts = []
        for start in range(0, len(h), rows):
            out = self.session.run(self.outputs, {name: h[start:start + rows]})
            parts.append(self.context.tagger.score_from(dict(zip(self.outputs, out))))
        return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))


def _typed(proto: onnx.ModelProto, tensor: str) -> onnx.ModelProto:
    """The model with value infos (the extractor needs the cut tensor's type): inferred where
    onnx can, else the tensor declared float32 of unknown shape."""
    try:
        typed = onnx.shape_inference.infer_shapes(proto)
    except Exception:  # noqa: BLE001 - inference is a convenience; the fallback below always works
        typed = onnx.ModelProto()
        typed.CopyFrom(proto)
    known = {v.name for v in list(typed.graph.value_info) + list(typed.graph.input) + list(typed.graph.output)}
    if tensor not in known:
        typed.graph.value_info.append(onnx.helper.make_tensor_value_info(tensor, onnx.TensorProto.FLOAT, None))
    return typed


def hidden_dauc(hs: HiddenScores) -> list[FeatureScore]:
    """ΔAUC_k = AUC(score) − AUC(score with channel k at the baseline), labelled jets only."""
    known = hs.labels != 2
    labels = hs.labels[known] == 1
    weights = hs.weights[known] if hs.weights is not None else None
    base = roc_auc(hs.score[known], labels, weights)
    return sorted_scores([FeatureScore(name, float(base - roc_auc(hs.scores[k][known], labels, weights)))
                          for k, name in enumerate(hs.channels)])


def hidden_mad(hs: HiddenScores, target: str, relative: bool) -> list[FeatureScore]:
    """Mean |t − t_k| per channel, overall and per class (weighted), t the score or its logit."""
    t, tk = (hs.logit, hs.logits) if target == "logit" else (hs.score, hs.scores)
    delta = t[None, :] - tk
    if relative:
        with np.errstate(divide="ignore", invalid="ignore"):
            delta = np.where(t[None, :] != 0, delta / t[None, :], 0.0)
    w = np.ones(len(t)) if hs.weights is None else hs.weights
    absdelta = np.abs(delta)

    def mean(sel: np.ndarray) -> np.ndarray | None:
        return absdelta[:, sel] @ w[sel] / w[sel].sum() if sel.any() and w[sel].sum() > 0 else None

    overall, sig, bkg = mean(np.ones(len(t), bool)), mean(hs.labels == 1), mean(hs.labels == 0)
    assert overall is not None
    return sorted_scores([FeatureScore(name, float(overall[k]), None if sig is None else float(sig[k]),
                                       None if bkg is None else float(bkg[k]))
                          for k, name in enumerate(hs.channels)])


def hidden_field(units: HiddenUnits, baseline: str | float, ranking: list[FeatureScore]) -> dict[str, object]:
    """``fields.hidden_units`` of the report."""
    return {"tensor": units.tensor, "channels": len(ranking),
            "baseline": "mean over the audited jets" if baseline == "mean" else float(baseline),
            "importance": [s.to_dict() for s in ranking]}


def hidden_figures(result: ExplainerResult, xlabel: str) -> list[Figure]:
    """A bar chart of the hidden channels' scores, when the result has them."""
    from hepaudit.report.figures import hidden_bar_chart

    field_ = result.fields.get("hidden_units")
    if not field_:
        return []
    ranking = [FeatureScore(**d) for d in field_["importance"]]
    png = hidden_bar_chart(ranking, f"{result.name}: channels of {field_['tensor']}", xlabel)
    if png is None:
        return []
    return [Figure(f"{result.name}_hidden.png", f"{result.name} of the channels of hidden tensor "
                   f"{field_['tensor']} (each set to the baseline and the rest of the network run)", png)]
