"""Guards against a config that runs "ok" while being wrong.

Each guard looks at numbers the audit has anyway and returns a sentence (or None): inputs on
a scale the model's first layer was not trained for, a label that is one class per file, a
tagger that does not separate the audited jets. The sentences become warnings and findings;
none of them stops the audit, because each can also be what the analyst meant.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import onnx
from onnx import numpy_helper

from hepaudit.model.randomise import weight_layers

if TYPE_CHECKING:  # pragma: no cover
    from hepaudit.data.builders import InputBuilder
    from hepaudit.data.stats import InputStats

#: the first layer's weighted inputs, RMS over units, against its biases' RMS: above this ratio
#: (and above FIRST_LAYER_ABSOLUTE) the inputs are far larger than anything the biases were fitted to
FIRST_LAYER_RATIO = 100.0
FIRST_LAYER_ABSOLUTE = 100.0
_THROUGH = frozenset({"Flatten", "Reshape", "Identity", "Cast"})


def first_layer_scale(model: onnx.ModelProto, builder: InputBuilder, stats: InputStats) -> str | None:
    """A warning when the audited inputs are on a scale the first dense layer was not trained on.

    For a Gemm or MatMul that reads a 2-D model input (directly or through a Flatten/Reshape),
    the size of each unit's weighted input is estimated from the features' second moments,
    sqrt(Σ_k W_jk² E[x_k²]), and compared with the layer's biases: training fits the biases to
    the scale of the weighted inputs it sees, so weighted inputs a hundred times the biases (and
    above 100 in absolute terms) mean the jets reach the model in other units or without the
    preprocessing it was trained with."""
    if stats.count < 2 or stats.feature_sumsq is None:
        return None
    inits = {t.name: t for t in model.graph.initializer}
    inputs = {i.name for i in model.graph.input} - set(inits)
    source = {out: node.input[0] for node in model.graph.node if node.op_type in _THROUGH for out in node.output}
    second = stats.feature_sumsq / stats.count
    for layer in reversed(weight_layers(model)):  # graph order: the first dense layer first
        if layer.op not in ("Gemm", "MatMul"):
            continue
        name = layer.source
        while name in source:
            name = source[name]
        if name not in inputs:
            continue
        weight = numpy_helper.to_array(inits[layer.parameters[0]]).astype(np.float64)
        if weight.ndim != 2:
            return None
        if layer.transposed:
            weight = weight.T  # (in, out)
        columns = {s.index: k for k, s in enumerate(builder.slots) if s.input == name}
        if len(columns) != weight.shape[0]:
            return None  # the input has positions that are not features (a mask): no clean estimate
        moments = np.array([second[columns[i]] for i in range(weight.shape[0])])
        weighted = np.sqrt((weight**2 * moments[:, None]).sum(axis=0))  # per unit
        rms = float(np.sqrt(np.mean(weighted**2)))
        bias = _rms(inits[layer.parameters[1]]) if len(layer.parameters) > 1 else None
        ratio = rms / bias if bias and bias > 0 else float("inf")
        if rms > FIRST_LAYER_ABSOLUTE and ratio > FIRST_LAYER_RATIO:
            k = int(np.argmax(moments * (weight**2).sum(axis=1)))  # the feature adding most to Σ_j
            feature = builder.slots[columns[k]].name
            against = f"{ratio:.0f}× its biases' RMS ({bias:.3g})" if bias else "and it has no bias"
            return (f"input {name!r}: the model's first layer ({layer.name}) sees weighted inputs of "
                    f"RMS {rms:.3g}, {against}; the biggest share comes from {feature!r} (RMS "
                    f"{np.sqrt(moments[k]):.3g}). The jets reach the model on another scale than it was trained on: "
                    "a missing preprocess recipe, or other units (MeV for GeV)?")
        return None
    return None


def _rms(tensor: onnx.TensorProto) -> float | None:
    values = numpy_helper.to_array(tensor).astype(np.float64)
    return float(np.sqrt(np.mean(values**2))) if values.size else None


def one_class_per_file(per_file: Mapping[str, set[float]]) -> str | None:
    """A note when every file holds a single class (and there are both): the tagger's separation
    cannot then be told from any other difference between the files."""
    if len(per_file) < 2 or not all(len(v) == 1 for v in per_file.values()):
        return None
    classes = {next(iter(v)) for v in per_file.values()}
    if classes != {0.0, 1.0}:
        return None
    listed = ", ".join(f"{path.rsplit('/', 1)[-1]}: {'signal' if next(iter(v)) else 'background'}"
                       for path, v in list(per_file.items())[:4]) + (", ..." if len(per_file) > 4 else "")
    return (f"data.label is constant within every file ({listed}): the audit measures how well the tagger tells "
            "the files apart. If each file is one process that is expected; check the files share one "
            "selection, generator set-up and pile-up, or the tagger may be credited with their differences.")


def separation(auc: float | None, ci95: list[float] | None) -> str | None:
    """A loud warning when the baseline AUC is compatible with 0.5 (or significantly below it)."""
    if auc is None:
        return None
    low, high = ci95 if ci95 else (auc - 0.01, auc + 0.01)
    interval = f" [{low:.3f}, {high:.3f}]" if ci95 else ""
    if low <= 0.5 <= high:
        return (f"the tagger does not separate these jets: AUC {auc:.3f}{interval} is compatible with 0.5 (chance). "
                "Every importance below measures noise. Likely causes: inputs not as the model was trained (a "
                "missing or wrong preprocess recipe, variables missing from the data), a wrong model.score column "
                "or class, or data.label not the truth label of this tagger's signal.")
    if high < 0.5:
        return (f"the tagger ranks background above signal: AUC {auc:.3f}{interval} is below 0.5. Likely causes: "
                "data.label inverted (1 must be signal), model.score reading the background class, or inputs far "
                "from what the model was trained on (a missing preprocess recipe, variables missing from the data).")
    return None
