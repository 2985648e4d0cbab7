"""Canonizers: rewrites of the graph's reading that change how it is walked, not what it computes.

As in zennit, a canonizer puts a network in the form the rules expect. Each has a ``name``
(listed, with what it changed, in the LRP result's ``canonizers`` field) and
``apply(graph)``, which records its rewrite on the
:class:`~hepaudit.model.backward.analysis.GraphAnalysis` and returns how many places it
changed. ``needs_path``: it runs after the path to the seed is traced.

* :class:`FoldConstants` — initializers, ``Constant`` nodes and every node whose inputs are
  all constant (shape arithmetic, transposed weights) become constants, evaluated with
  onnx's reference evaluator;
* :class:`FuseBias` — a MatMul/Gemm/Conv whose only consumer adds a constant that varies
  along the output channels only gets that constant as its bias, so MatMul + Add and Gemm
  graphs of the same weights get the same relevance;
* :class:`SubstituteRelu` — a Gemm/MatMul/Conv whose output z feeds only a Relu, whose output
  in turn feeds only weighted layers, is *rectified*: its z is not exposed and the layer's
  rules read the ReLU output a = max(z, 0) instead. Where z > 0, a is z bit for bit; where
  z <= 0 the next layers gave the unit no relevance (every rule for a hidden layer
  multiplies by the layer input, here 0), so R/(z + ε·sign z) is 0 with either denominator.
  The ReLU's gradient reads a > 0, which is z > 0. So the answer is the same, onnxruntime
  keeps its fused Gemm+Relu kernel, and half the hidden tensors are not copied out.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from hepaudit.model.backward.analysis import WEIGHTED_OPS, GraphAnalysis, fold_constants


class Canonizer:
    """One named rewrite of the graph's reading."""

    name: ClassVar[str]
    needs_path: ClassVar[bool] = True

    def apply(self, graph: GraphAnalysis) -> int:
        raise NotImplementedError


class FoldConstants(Canonizer):
    name = "fold_constants"
    needs_path = False

    def apply(self, graph: GraphAnalysis) -> int:
        consts = fold_constants(graph.model, graph.nodes, graph.protos, set(graph.inputs))
        graph.set_constants(consts)
        return len(consts) - len(graph.model.graph.initializer)


class FuseBias(Canonizer):
    name = "fuse_bias"

    def apply(self, graph: GraphAnalysis) -> int:
        consumers = graph.consumers()
        graph_outputs = {o.name for o in graph.model.graph.output}
        for node in graph.path:
            if node.op not in WEIGHTED_OPS:
                continue
            out = node.outputs[0]
            users = consumers.get(out, [])
            if len(users) != 1 or out in graph_outputs or users[0].op != "Add":
                continue
            add = users[0]
            other = add.inputs[1] if add.inputs[0] == out else add.inputs[0]
            if other not in graph.consts:
                continue
            bias = np.asarray(graph.consts[other])
            if node.op == "Conv":
                ok = _bias_like(bias, 1, np.ndim(graph.consts.get(node.inputs[1], np.zeros((1, 1, 1)))))
            else:
                ok = _bias_like(bias, -1, max(bias.ndim, 2))
            if ok:
                graph.fused[node.name] = (other, add.outputs[0])
                graph.fused_adds.add(add.name)
        return len(graph.fused)


def _bias_like(bias: np.ndarray, channel: int, out_ndim: int) -> bool:
    """A constant that varies along the layer's output-channel axis only (numpy alignment)."""
    if bias.ndim > out_ndim:
        return False
    full = (1,) * (out_ndim - bias.ndim) + tuple(bias.shape)
    return all(d == 1 for i, d in enumerate(full) if i != channel % out_ndim)


class SubstituteRelu(Canonizer):
    name = "relu_substitution"

    def apply(self, graph: GraphAnalysis) -> int:
        consumers = graph.consumers()
        keep = {o.name for o in graph.model.graph.output} | {graph.seed}
        for node in graph.path:
            z = node.outputs[0]
            if node.op not in WEIGHTED_OPS or node.name in graph.fused or z in keep:
                continue
            users = consumers.get(z, [])
            if len(users) != 1 or users[0].op != "Relu" or users[0].outputs[0] in keep:
                continue
            a = users[0].outputs[0]
            readers = consumers.get(a, [])
            # the weight operand must be constant: then a is the layer input every rule multiplies by
            if readers and all(
                r.op in WEIGHTED_OPS and a in r.inputs[:2] and any(i in graph.consts for i in r.inputs[:2])
                for r in readers
            ):
                graph.rectified[node.name] = a
        return len(graph.rectified)


#: Every canonizer, in the order the engine applies them.
CANONIZERS: tuple[Canonizer, ...] = (FoldConstants(), FuseBias(), SubstituteRelu())


def canonize(graph: GraphAnalysis, canonizers: tuple[Canonizer, ...] = CANONIZERS) -> dict[str, int]:
    """Apply ``canonizers`` in order, tracing the path before the first that needs it; what each changed."""
    applied: dict[str, int] = {}
    traced = False
    for canonizer in canonizers:
        if canonizer.needs_path and not traced:
            graph.trace()
            traced = True
        applied[canonizer.name] = canonizer.apply(graph)
    if not traced:
        graph.trace()
    return applied
