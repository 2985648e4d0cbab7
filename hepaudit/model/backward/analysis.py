"""Graph analysis for the backward engine: what the walk visits and which values it reads.

Read once per model: the constants (initializers, ``Constant`` nodes and everything computed
from constants only, folded by :class:`~hepaudit.model.backward.canonizers.FoldConstants`),
the differentiable tensors (reached from a model input through inputs that carry a
gradient: not the ``shape`` of a Reshape, the indices of a Gather, the output of Shape,
Equal, ArgMax, a Cast to an integer type, ...), the path (the differentiable nodes from
which the seed is reached; an op on it without a backward raises
:class:`~hepaudit.model.backward.base.UnsupportedOpError` naming node and op), the first
linear layers (for first-layer rules), whether every node treats each jet's row on its own
(row-wise blocks), and the forward values the walk reads (:meth:`GraphAnalysis.needed`).
The canonizers (:mod:`.canonizers`) record their rewrites here too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from hepaudit.errors import ModelError
from hepaudit.lazy import lazy_module
from hepaudit.model.backward.base import HANDLERS, Node, UnsupportedOpError

if TYPE_CHECKING:
    import onnx
    from onnx import helper, numpy_helper
else:  # loaded on first use (hepaudit.lazy): registering plugins imports none of them
    onnx = lazy_module("onnx")
    helper = lazy_module("onnx.helper")
    numpy_helper = lazy_module("onnx.numpy_helper")

#: TensorProto.FLOAT, DOUBLE, FLOAT16, BFLOAT16: fixed by the ONNX standard (onnx.proto), written
#: as numbers so that importing this module does not import onnx
FLOAT_TYPES = frozenset({1, 11, 10, 16})
#: ops whose outputs never carry a gradient (shapes, comparisons, indices, random draws)
BLOCKING_OPS = frozenset(
    {
        "Shape",
        "Size",
        "Equal",
        "Greater",
        "Less",
        "GreaterOrEqual",
        "LessOrEqual",
        "Not",
        "And",
        "Or",
        "Xor",
        "ArgMax",
        "ArgMin",
        "NonZero",
        "ConstantOfShape",
        "Range",
        "IsNaN",
        "IsInf",
        "Sign",
        "Floor",
        "Ceil",
        "Round",
        "EyeLike",
        "Constant",
        "RandomNormalLike",
        "RandomUniformLike",
        "Bernoulli",
        "NonMaxSuppression",
    }
)
#: input positions that are indices, shapes or axes, never a gradient path
NON_CARRYING: dict[str, tuple[int, ...]] = {
    "Reshape": (1,),
    "Expand": (1,),
    "Tile": (1,),
    "Slice": (1, 2, 3, 4),
    "Gather": (1,),
    "GatherElements": (1,),
    "Squeeze": (1,),
    "Unsqueeze": (1,),
    "Pad": (1, 2, 3),
    "ReduceSum": (1,),
    "ReduceMean": (1,),
    "ReduceMax": (1,),
    "ReduceMin": (1,),
    "Where": (0,),
    "Resize": (1, 2, 3),
    "Dropout": (1, 2),
    "TopK": (1,),
    "Split": (1,),
    "Clip": (1, 2),
    "GatherND": (1,),
    "ScatterND": (1,),
    "ScatterElements": (1,),
    "Trilu": (1,),
    "If": (0,),
    "LSTM": (4,),
    "GRU": (4,),
}
#: ops whose output gates another tensor (a Mul or MatMul by it) rather than carrying a signal:
#: GELU's erf, the sigmoid gates of GLUs, attention's softmax (LRP gives a gate no relevance)
GATING_OPS = frozenset({"Erf", "Sigmoid", "HardSigmoid", "Tanh", "Softmax"})
#: ops walked through when looking for a gate's origin (the GELU formula, attention masks, reshapes)
_GATE_PASS = frozenset({"Add", "Sub", "Mul", "Div", "Cast", "Identity", "Dropout", "Reshape", "Transpose",
                        "Squeeze", "Unsqueeze", "Expand", "Where", "Flatten", "Slice", "Tile"})
#: inputs whose values the backward does not read (it uses the input activation's shape instead)
VALUE_NOT_NEEDED: dict[str, tuple[int, ...]] = {
    "Relu": (0,),  # its backward reads its output
    "Reshape": (1,),
    "Expand": (1,),
    "Squeeze": (1,),
    "Unsqueeze": (1,),
}
LINEAR_KIND = {
    "Gemm": "dense",
    "MatMul": "dense",
    "Conv": "conv",
    "BatchNormalization": "norm",
    "AveragePool": "pool",
    "GlobalAveragePool": "pool",
    "ReduceSum": "pool",
    "ReduceMean": "pool",
    "Add": "dense",
    "Sub": "dense",
    "Sum": "dense",
    "LSTM": "recurrent",  # the ε rule of the layer's rule, always (ops_recurrent)
    "GRU": "recurrent",
}
WEIGHTED_OPS = frozenset({"Gemm", "MatMul", "Conv"})
#: ops whose backward treats each row of a 2-D (jets, units) tensor on its own (see _row_wise)
ROW_WISE_OPS = frozenset(
    {
        "Gemm",
        "MatMul",
        "Add",
        "Sub",
        "Relu",
        "LeakyRelu",
        "Elu",
        "Selu",
        "Sigmoid",
        "Tanh",
        "Softplus",
        "Identity",
        "Dropout",
        "Neg",
    }
)


def _opset(model: onnx.ModelProto) -> int:
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=13)


def fold_constants(
    model: onnx.ModelProto, nodes: Sequence[Node], protos: Sequence[onnx.NodeProto], graph_inputs: set[str]
) -> dict[str, np.ndarray]:
    """Values of the initializers and of every tensor computed from constants only."""
    consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    foldable = []
    known = set(consts)
    for node, proto in zip(nodes, protos):
        if node.op in ("RandomNormal", "RandomUniform", "Multinomial"):
            continue
        if all(i == "" or (i in known and i not in graph_inputs) for i in node.inputs):
            foldable.append(proto)
            known.update(o for o in node.outputs if o)
    if not foldable:
        return consts
    from onnx.reference import ReferenceEvaluator

    outputs = [o for p in foldable for o in p.output if o]
    needed_inits = {i for p in foldable for i in p.input if i in consts}
    graph = helper.make_graph(
        list(foldable),
        "folded",
        [],
        [helper.make_empty_tensor_value_info(o) for o in outputs],
        [t for t in model.graph.initializer if t.name in needed_inits],
    )
    sub = helper.make_model(graph, opset_imports=list(model.opset_import))
    sub.ir_version = model.ir_version
    try:
        values = ReferenceEvaluator(sub).run(None, {})
    except Exception as exc:
        raise ModelError(
            f"cannot fold the model's constant subgraphs ({type(exc).__name__}: {exc})"
        ) from None
    consts.update({o: np.asarray(v) for o, v in zip(outputs, values)})
    return consts


class GraphAnalysis:
    """One model's graph as the backward walk sees it, from the model ``inputs`` to ``seed``."""

    def __init__(self, model: onnx.ModelProto, seed: str, inputs: Sequence[str] | None, dtype: type) -> None:
        self.model = model
        self.seed = seed
        self.dtype = np.dtype(dtype)
        self.opset = _opset(model)
        self.protos = list(model.graph.node)
        self.nodes = [Node.from_proto(p, i) for i, p in enumerate(self.protos)]
        init_names = {t.name for t in model.graph.initializer}
        self.inputs = list(inputs) if inputs is not None else [
            i.name for i in model.graph.input if i.name not in init_names]
        self.consts: dict[str, np.ndarray] = {}
        # what the canonizers rewrote (empty until they run)
        self.fused: dict[str, tuple[str, str]] = {}  # weighted node -> (bias constant, the Add's output)
        self.fused_adds: set[str] = set()  # the Add nodes folded into a layer's bias
        self.rectified: dict[str, str] = {}  # weighted node -> the Relu output its rules read
        self.diff: frozenset[str] = frozenset()
        self.path: list[Node] = []
        self.carrying: set[str] = set()
        self.first_layers: set[str] = set()
        self.after_linear: set[str] = set()

    def set_constants(self, consts: dict[str, np.ndarray]) -> None:
        """The folded constants, float ones in the compute precision (every product one BLAS call)."""
        self.consts = {k: (v.astype(self.dtype) if np.issubdtype(v.dtype, np.floating) else v)
                       for k, v in consts.items()}

    def trace(self) -> None:
        """Differentiable tensors, the path to the seed, and the first linear layers."""
        self.diff = frozenset(self._differentiable())
        if self.seed not in self.diff:
            raise ModelError(f"tensor {self.seed!r} does not depend on the model inputs {self.inputs}")
        self.path, self.carrying = self._path(self.seed)
        for node in self.path:
            if node.op not in HANDLERS:
                raise UnsupportedOpError(
                    f"{node.describe()} lies on the path from the inputs to {self.seed!r} and the backward engine "
                    f"has no gradient or LRP rule for op type {node.op!r}")
        self.first_layers = self._first_layers()

    def carries(self, node: Node) -> list[int]:
        """The input positions of ``node`` that carry a gradient."""
        if node.op in BLOCKING_OPS or (node.op == "Cast" and node.attrs.get("to") not in FLOAT_TYPES):
            return []
        skip = NON_CARRYING.get(node.op, ())
        return [i for i, name in enumerate(node.inputs) if name and i not in skip]

    def _differentiable(self) -> set[str]:
        diff = set(self.inputs)
        for node in self.nodes:
            if any(node.inputs[i] in diff for i in self.carries(node)):
                diff.update(o for o in node.outputs if o and o not in self.consts)
        return diff

    def _path(self, seed: str) -> tuple[list[Node], set[str]]:
        relevant = {seed}
        path = []
        for node in reversed(self.nodes):
            if any(o in relevant and o in self.diff for o in node.outputs):
                path.append(node)
                relevant.update(node.inputs[i] for i in self.carries(node) if node.inputs[i] in self.diff)
        path.reverse()
        return path, relevant

    def consumers(self) -> dict[str, list[Node]]:
        """Tensor name -> the nodes that read it."""
        consumers: dict[str, list[Node]] = {}
        for node in self.nodes:
            for name in node.inputs:
                consumers.setdefault(name, []).append(node)
        return consumers

    def _first_layers(self) -> set[str]:
        after_linear: set[str] = set()
        first: set[str] = set()
        for node in self.path:
            upstream = any(i in after_linear for i in node.inputs)
            if node.op in WEIGHTED_OPS:
                if not upstream:
                    first.add(node.name)
                after_linear.update(node.outputs)
            elif upstream:
                after_linear.update(node.outputs)
        self.after_linear = after_linear
        return first

    def needed(self) -> list[str]:
        """The forward values the walk reads, in first-use order (expose them from onnxruntime)."""
        needed: list[str] = []
        seen = set(self.inputs) | set(self.consts) | {""}

        def want(name: str) -> None:
            if name not in seen:
                seen.add(name)
                needed.append(name)

        seen |= {n.outputs[0] for n in self.path if n.name in self.rectified}  # read through the ReLU's output
        for node in self.path:
            skip = VALUE_NOT_NEEDED.get(node.op, ())
            for i, name in enumerate(node.inputs):
                if i not in skip:
                    want(name)
            for name in node.outputs if node.op == "Split" else node.outputs[:1]:
                want(name)
        for _bias, add_out in self.fused.values():
            want(add_out)
        want(self.seed)
        return needed

    def row_wise(self) -> bool:
        """Whether every jet's backward only reads that jet's row of 2-D (jets, units) tensors.

        Then a batch can be cut into blocks of rows that stay in the CPU cache, with the same
        result. Only plain dense networks qualify: Gemm (no transA) and MatMul by a constant
        2-D weight, Add/Sub of constant row vectors, element-wise activations. Anything that
        reshapes, reduces over jets or decides from the whole batch (a Mul gate) does not.
        """
        for node in self.path:
            if node.op not in ROW_WISE_OPS:
                return False
            consts = [np.ndim(self.consts[name]) for name in node.inputs if name in self.consts]
            if node.op == "Gemm" and (node.attrs.get("transA", 0) or node.inputs[1] in self.diff):
                return False
            if node.op == "MatMul" and (node.inputs[1] not in self.consts or consts[0] != 2):
                return False
            if node.op in ("Add", "Sub"):
                for name in node.inputs:
                    if name in self.consts and not (
                        np.ndim(self.consts[name]) <= 1 or np.shape(self.consts[name])[0] == 1
                    ):
                        return False
        return True

    def gate(self, node: Node) -> int | None:
        """For a Mul or MatMul of two computed tensors, the operand that gates the other, if one does:
        the one made by a gating op (:data:`GATING_OPS`: GELU's erf, attention's softmax) when the
        other is not; else, for a Mul, the one that is a raw input (a mask) when the other went
        through the network's layers."""
        if node.op not in ("Mul", "MatMul") or len(node.inputs) != 2:
            return None
        gated = [self._gated(name) for name in node.inputs]
        if gated[0] != gated[1]:
            return 0 if gated[0] else 1
        if node.op != "Mul":
            return None
        a, b = (name in self.after_linear for name in node.inputs)
        if a == b:
            return None
        return 1 if a else 0

    def _gated(self, name: str, depth: int = 6) -> bool:
        """Whether ``name`` is made by a gating op, through at most ``depth`` pass-through ops."""
        made_by = self._made_by()
        frontier = [name]
        for _ in range(depth):
            nxt = []
            for tensor in frontier:
                node = made_by.get(tensor)
                if node is None:
                    continue
                if node.op in GATING_OPS:
                    return True
                if node.op in _GATE_PASS:
                    nxt += [i for i in node.inputs if i in self.diff]
            frontier = nxt
        return False

    def _made_by(self) -> dict[str, Node]:
        if not hasattr(self, "_producers"):
            self._producers = {o: n for n in self.nodes for o in n.outputs if o}
        return self._producers

    def path_ops(self) -> dict[str, int]:
        """How many nodes of each op type lie on the path."""
        counts: dict[str, int] = {}
        for node in self.path:
            counts[node.op] = counts.get(node.op, 0) + 1
        return counts
