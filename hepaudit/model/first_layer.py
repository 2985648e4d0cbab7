"""The first dense layer of a tagger factored out of its occluded passes.

When a graph input goes straight into one dense layer (a ``Gemm``, or a ``MatMul`` by a
constant matrix) and nothing else reads it, replacing features ``k`` of that input changes the
layer's output by ``(x̄_k − x_k) W_k`` and nothing more. The occluded passes (ΔAUC, MAD) then
compute the layer once per block of jets, with onnxruntime's own kernel (the *head*), and run
the rest of the graph (the *tail*) on ``h0 + δ W_k`` for each occlusion: the layer's
multiply-adds — nearly half of every pass of an MLP tagger such as TopoDNN — are done once
instead of once per feature.

Where ``δ`` is zero (a jet whose value already is the baseline, a feature with no weights) the
tail's score is the whole model's, bit for bit; elsewhere the two differ by float32 rounding
of the layer's sum, as two orderings of the same sum do.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["FactoredPasses", "SplitGraph", "split_first_layer"]

#: the shape declared for the cut's new tensors: two axes of any length (old IR versions want one)
MATRIX: list[int | str | None] = [None, None]


@dataclass(frozen=True)
class SplitGraph:
    """A graph cut after the dense layer that reads graph input ``input``."""

    input: str  # the graph input the layer reads, (N, features) float32
    weight: np.ndarray  # (features, units) float32, C-contiguous: row k is feature k's weights
    head: onnx.ModelProto  # input -> the layer's output
    tail: onnx.ModelProto  # the other graph inputs and (h0, delta, w) -> the graph's outputs
    h0: str  # the tail's input names
    delta: str
    w: str


def _attribute(node: onnx.NodeProto, name: str, default: float) -> float:
    for a in node.attribute:
        if a.name == name:
            return float(helper.get_attribute_value(a))
    return default


def _dense_weight(node: onnx.NodeProto, x: str, constants: dict[str, onnx.TensorProto]) -> np.ndarray | None:
    """The (features, units) matrix the node multiplies ``x`` by, when it is a plain dense layer."""
    if node.op_type == "Gemm":
        if (len(node.input) < 2 or node.input[0] != x or node.input[1] not in constants
                or _attribute(node, "transA", 0) or _attribute(node, "alpha", 1.0) != 1.0):
            return None
        weight = numpy_helper.to_array(constants[node.input[1]])
        return weight.T if _attribute(node, "transB", 0) else weight
    if node.op_type == "MatMul" and node.input[0] == x and node.input[1] in constants:
        return numpy_helper.to_array(constants[node.input[1]])
    return None


def _fresh(model: onnx.ModelProto, stem: str) -> str:
    taken = {v for node in model.graph.node for v in (*node.input, *node.output)}
    taken |= {v.name for v in (*model.graph.input, *model.graph.output)}
    name = stem
    while name in taken:
        name += "_"
    return name


def split_first_layer(model: onnx.ModelProto, input_name: str) -> SplitGraph | None:
    """The head and tail of ``model`` around the dense layer reading ``input_name``; None when
    that input is not a float32 (N, features) tensor read by one such layer and nothing else."""
    graph = model.graph
    inputs = {i.name: i for i in graph.input}
    info = inputs.get(input_name)
    if info is None or info.type.tensor_type.elem_type != TensorProto.FLOAT:
        return None
    if len(info.type.tensor_type.shape.dim) != 2 or any(o.name == input_name for o in graph.output):
        return None
    readers = [i for i, n in enumerate(graph.node) if input_name in n.input]
    # a subgraph (If, Loop, Scan) may read the input from the outer scope: not cut
    if len(readers) != 1 or any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
                                for n in graph.node for a in n.attribute):
        return None
    node = graph.node[readers[0]]
    constants = {t.name: t for t in graph.initializer}
    weight = _dense_weight(node, input_name, constants)
    if weight is None or weight.ndim != 2 or weight.dtype != np.float32 or len(node.output) != 1:
        return None
    layer_out = node.output[0]

    head = onnx.ModelProto()
    head.CopyFrom(model)
    del head.graph.node[:]
    head.graph.node.append(node)
    used = set(node.input)
    _keep_initializers(head.graph, used)
    del head.graph.input[:]  # old IR versions list initializers among the inputs too
    head.graph.input.extend([info] + [i for i in graph.input if i.name in constants and i.name in used])
    del head.graph.output[:]
    head.graph.output.append(helper.make_tensor_value_info(layer_out, TensorProto.FLOAT, MATRIX))
    del head.graph.value_info[:]

    tail = onnx.ModelProto()
    tail.CopyFrom(model)
    h0, delta, w, product = (_fresh(model, f"hepaudit_{s}") for s in ("h0", "delta", "w", "dw"))
    nodes = [helper.make_node("MatMul", [delta, w], [product]),
             helper.make_node("Add", [h0, product], [layer_out])]
    rest = [n for i, n in enumerate(graph.node) if i != readers[0]]
    del tail.graph.node[:]
    tail.graph.node.extend(nodes + rest)
    _keep_initializers(tail.graph, {v for n in rest for v in n.input})
    still = {t.name for t in tail.graph.initializer}
    kept = [i for i in tail.graph.input if i.name != input_name and (i.name not in constants or i.name in still)]
    del tail.graph.input[:]
    tail.graph.input.extend(kept + [
        helper.make_tensor_value_info(h0, TensorProto.FLOAT, MATRIX),
        helper.make_tensor_value_info(delta, TensorProto.FLOAT, MATRIX),
        helper.make_tensor_value_info(w, TensorProto.FLOAT, MATRIX),
    ])
    return SplitGraph(input_name, np.ascontiguousarray(weight), head, tail, h0, delta, w)


def _keep_initializers(graph: onnx.GraphProto, used: set[str]) -> None:
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)


@dataclass
class FactoredPasses:
    """The head and tail of a split graph as onnxruntime sessions, for one tagger's occluded passes.

    ``score_and_logit`` turns the tail's outputs (``outputs``, by name) into the tagger's score
    and logit; ``count(t0)`` adds an onnxruntime call that began at ``t0`` to its inference time.
    """

    split: SplitGraph
    head: Any  # onnxruntime.InferenceSession
    tail: Any
    outputs: list[str]
    score_and_logit: Callable[[dict[str, np.ndarray]], tuple[np.ndarray, np.ndarray]]
    count: Callable[[float], None]

    def first(self, x: np.ndarray) -> np.ndarray:
        """The layer's output for a block of jets (float32, (rows, units))."""
        t0 = time.perf_counter()
        try:
            return np.asarray(self.head.run(None, {self.split.input: x})[0])
        finally:
            self.count(t0)

    def rows(self, positions: list[int]) -> np.ndarray:
        """The weight matrix's rows for the input columns ``positions`` (gather once per unit,
        pass to :meth:`occluded` for every block)."""
        return np.ascontiguousarray(self.split.weight[list(positions)])

    def occluded(self, h0: np.ndarray, x: np.ndarray, positions: list[int], value: np.ndarray, w: np.ndarray,
                 others: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Score and logit of the block with ``x``'s columns ``positions`` set to ``value``,
        from the layer's output ``h0`` for the unoccluded block; ``w``: :meth:`rows` of
        ``positions``; ``others``: the other inputs."""
        delta = np.asarray(value, np.float32)[None, :] - x[:, positions]
        feed = {**others, self.split.h0: h0, self.split.delta: delta, self.split.w: w}
        t0 = time.perf_counter()
        try:
            values = self.tail.run(self.outputs, feed)
        finally:
            self.count(t0)
        return self.score_and_logit(dict(zip(self.outputs, values)))
