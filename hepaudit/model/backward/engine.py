"""The backward engine: exact gradients and LRP relevance on an ONNX graph, in numpy.

Given the graph, the tensor to start from (the seed: the logit feeding the score's
Sigmoid/Softmax) and the forward values of the tensors it needs (onnxruntime computes
them; the engine lists them in :attr:`BackwardEngine.needed` so the caller can expose
them), the engine walks the nodes between the model inputs and the seed in reverse
topological order and calls one backward function per node (``ops_*`` modules). Batched
over jets; nothing is recomputed in numpy except what an LRP rule needs (modified
weights).

The graph is analysed once:

* constants: initializers, ``Constant`` nodes and every node whose inputs are all
  constant (shape arithmetic, transposed weights) are folded with onnx's reference
  evaluator;
* differentiable tensors: those reached from a model input through inputs that carry a
  gradient (not the ``shape`` of a Reshape, the indices of a Gather, the output of Shape,
  Equal, ArgMax, a Cast to an integer type, ...);
* the path: differentiable nodes from which the seed is reached. Any op on the path the
  engine has no backward for raises :class:`UnsupportedOpError` naming the node and op;
* for LRP, a MatMul/Gemm/Conv whose only consumer adds a constant has that constant
  fused into its bias, so MatMul + Add and Gemm graphs of the same weights agree;
* a Gemm/MatMul/Conv whose output z feeds only a Relu, whose output in turn feeds only
  Gemm/MatMul/Conv layers, is *rectified*: its z is not exposed, the layer's rules read
  the ReLU output a = max(z, 0) instead. Where z > 0, a is z bit for bit; where z <= 0
  the next layers gave the unit no relevance (every rule for a hidden layer multiplies
  by the layer input, here 0), so R/(z + ε·sign z) is 0 with either denominator. The
  ReLU's gradient reads a > 0, which is z > 0. So the answer is the same, onnxruntime
  keeps its fused Gemm+Relu kernel, and half the hidden tensors are not copied out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from hepaudit.errors import ModelError
from hepaudit.model.backward import ops_conv, ops_elementwise, ops_linear, ops_pool, ops_shape  # noqa: F401
from hepaudit.model.backward.base import HANDLERS, Node, Step, UnsupportedOpError, Values
from hepaudit.model.backward.blas import blas_threads
from hepaudit.model.backward.rules import RuleSet

FLOAT_TYPES = frozenset(
    {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}
)
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
}
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


@dataclass(frozen=True)
class ScoreTarget:
    """What the backward pass starts from: the seed tensor and how the score is read from it.

    ``head`` is "Sigmoid" or "Softmax" when ``tensor`` is the logit feeding the score's
    head, None when ``tensor`` is the score output itself. ``column`` picks one column;
    ``signal``/``background`` give the class-sum discriminant S / (S + B).
    """

    tensor: str
    head: str | None = "Sigmoid"
    column: int | None = None
    signal: tuple[int, ...] = ()
    background: tuple[int, ...] = ()

    @classmethod
    def from_score_spec(cls, spec: Any) -> ScoreTarget:
        head = spec.head
        return cls(
            head.logit if head else spec.output,
            head.op if head else None,
            spec.column,
            tuple(spec.signal),
            tuple(spec.background),
        )

    def describe(self) -> str:
        if self.head == "Sigmoid":
            return f"R = z(x), the input {self.tensor!r} of the Sigmoid head (column {self.column or 0})"
        if self.head == "Softmax":
            what = (
                f"z_{self.column} - logsumexp(other logits)"
                if not self.signal
                else "logsumexp(z_signal) - logsumexp(z_background)"
            )
            return (
                f"z(x) = {what}, split over the pre-softmax logits {self.tensor!r} in proportion to "
                "their gradient times value: R_j = z(x) * (dz/dz_j * z_j) / sum_k (dz/dz_k * z_k)"
            )
        return f"R = f(x), the score output {self.tensor!r} itself (the model has no Sigmoid/Softmax head)"


def _lse(z: np.ndarray, cols: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    sub = z[:, list(cols)]
    top = sub.max(axis=1, keepdims=True)
    e = np.exp(sub - top)
    return top[:, 0] + np.log(e.sum(axis=1)), e / e.sum(axis=1, keepdims=True)


def logit_and_gradient(target: ScoreTarget, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """z(x) per jet and ∂z(x)/∂(seed tensor), from the seed tensor's values (N, ...)."""
    t = np.asarray(values, np.float64)
    n = len(t)
    flat = t.reshape(n, -1)
    grad = np.zeros_like(flat)
    if target.head == "Softmax":
        if target.signal:
            ls, ps = _lse(flat, target.signal)
            lb, pb = _lse(flat, target.background)
            grad[:, list(target.signal)] += ps
            grad[:, list(target.background)] -= pb
            return ls - lb, grad.reshape(t.shape)
        c = target.column or 0
        others = [j for j in range(flat.shape[1]) if j != c]
        lo, po = _lse(flat, others)
        grad[:, c] = 1.0
        grad[:, others] -= po
        return flat[:, c] - lo, grad.reshape(t.shape)
    c = target.column or 0
    c = c if flat.shape[1] > c else 0
    grad[:, c] = 1.0
    if target.head == "Sigmoid":
        return flat[:, c], grad.reshape(t.shape)
    if target.signal:
        raise ModelError("a class-sum score without a Softmax head has no logit to start from")
    f = np.clip(flat[:, c], 1e-15, 1 - 1e-15)
    return np.log(f) - np.log1p(-f), (grad / (f * (1 - f))[:, None]).reshape(t.shape)


def gradient_seed(target: ScoreTarget, values: np.ndarray, what: str = "logit") -> np.ndarray:
    """∂(score)/∂(seed tensor): of the logit z(x) or of the probability f = σ(z(x))."""
    z, grad = logit_and_gradient(target, values)
    if what == "logit":
        return grad
    if target.head is None:  # the tensor is the probability itself
        flat = np.zeros_like(np.asarray(values, np.float64).reshape(len(z), -1))
        c = target.column or 0
        flat[:, c if flat.shape[1] > c else 0] = 1.0
        return flat.reshape(np.shape(values))
    f = 1.0 / (1.0 + np.exp(-z))
    return grad * (f * (1 - f)).reshape((-1,) + (1,) * (grad.ndim - 1))


def relevance_seed(target: ScoreTarget, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The LRP seed at the seed tensor and, per jet, the total relevance it carries (methods.md)."""
    t = np.asarray(values, np.float64)
    n = len(t)
    if target.head == "Softmax":
        z, grad = logit_and_gradient(target, t)
        gz = (grad * t).reshape(n, -1)
        total = gz.sum(axis=1, keepdims=True)
        den = np.where(total >= 0, 1.0, -1.0) * np.maximum(np.abs(total), 1e-12)
        return (gz * (z[:, None] / den)).reshape(t.shape), z
    flat = t.reshape(n, -1)
    c = target.column or 0
    c = c if flat.shape[1] > c else 0
    seed = np.zeros_like(flat)
    seed[:, c] = flat[:, c]
    return seed.reshape(t.shape), flat[:, c].copy()


@dataclass
class LrpOutput:
    """Relevance per model input (same shapes), and per jet what the seed and the biases held."""

    relevance: dict[str, np.ndarray]
    seed_total: np.ndarray  # Σ of the seed (z(x) for a head): what conservation compares to
    absorbed_bias: np.ndarray  # relevance the biases (constant inputs a_0 = 1) took

    def total(self) -> np.ndarray:
        n = len(self.seed_total)
        return sum(r.reshape(n, -1).sum(axis=1) for r in self.relevance.values())


class BackwardEngine:
    """Gradients and LRP from ``target.tensor`` back to the model inputs of ``model``."""

    def __init__(
        self,
        model: onnx.ModelProto,
        target: ScoreTarget | str,
        inputs: Sequence[str] | None = None,
        dtype: type = np.float64,
        blas_threads: int | None = None,
        block_rows: int | None = 1024,
    ) -> None:
        """``blas_threads``: numpy's OpenBLAS threads during the backward (None: leave it);
        ``block_rows``: jets per backward block when the graph is row-wise (None: whole batch).
        Neither changes the result, only the speed (see :mod:`hepaudit.model.backward.blas`)."""
        self.model = model
        self.blas_threads = blas_threads
        self.block_rows = block_rows
        self.target = ScoreTarget(target) if isinstance(target, str) else target
        self.opset = _opset(model)
        protos = list(model.graph.node)
        self.nodes = [Node.from_proto(p, i) for i, p in enumerate(protos)]
        init_names = {t.name for t in model.graph.initializer}
        self.inputs = (
            list(inputs)
            if inputs is not None
            else [i.name for i in model.graph.input if i.name not in init_names]
        )
        self.consts = fold_constants(model, self.nodes, protos, set(self.inputs))
        # float constants in the compute precision once, so every product is one BLAS call
        self.dtype = np.dtype(dtype)
        self.consts = {
            k: (v.astype(self.dtype) if np.issubdtype(v.dtype, np.floating) else v)
            for k, v in self.consts.items()
        }
        self.diff = frozenset(self._differentiable())
        seed = self.target.tensor
        if seed not in self.diff:
            raise ModelError(f"tensor {seed!r} does not depend on the model inputs {self.inputs}")
        self.path, self.carrying = self._path(seed)
        for node in self.path:
            if node.op not in HANDLERS:
                raise UnsupportedOpError(
                    f"{node.describe()} lies on the path from the inputs to {seed!r} and the backward engine "
                    "has no "
                    f"gradient or LRP rule for op type {node.op!r}"
                )
        self.fused, self.fused_adds = self._fusions()
        self.rectified = self._rectified()
        self.first_layers = self._first_layers()
        self.needed = self._needed()
        self.row_wise = self._row_wise()
        # per-node constants a backward function derives once (Gemm's alpha·B), not per chunk
        self._cache: dict[str, dict[str, Any]] = {node.name: {} for node in self.path}
        self._session: Any = None

    # -- analysis --------------------------------------------------------------------------------
    def _carries(self, node: Node) -> list[int]:
        if node.op in BLOCKING_OPS or (node.op == "Cast" and node.attrs.get("to") not in FLOAT_TYPES):
            return []
        skip = NON_CARRYING.get(node.op, ())
        return [i for i, name in enumerate(node.inputs) if name and i not in skip]

    def _differentiable(self) -> set[str]:
        diff = set(self.inputs)
        for node in self.nodes:
            if any(node.inputs[i] in diff for i in self._carries(node)):
                diff.update(o for o in node.outputs if o and o not in self.consts)
        return diff

    def _path(self, seed: str) -> tuple[list[Node], set[str]]:
        relevant = {seed}
        path = []
        for node in reversed(self.nodes):
            if any(o in relevant and o in self.diff for o in node.outputs):
                path.append(node)
                relevant.update(node.inputs[i] for i in self._carries(node) if node.inputs[i] in self.diff)
        path.reverse()
        return path, relevant

    def _consumers(self) -> dict[str, list[Node]]:
        consumers: dict[str, list[Node]] = {}
        for node in self.nodes:
            for name in node.inputs:
                consumers.setdefault(name, []).append(node)
        return consumers

    def _rectified(self) -> dict[str, str]:
        """Weighted node name -> the output of the Relu that alone reads its z (see the module doc)."""
        consumers = self._consumers()
        graph_outputs = {o.name for o in self.model.graph.output}
        keep = graph_outputs | {self.target.tensor}
        out: dict[str, str] = {}
        for node in self.path:
            z = node.outputs[0]
            if node.op not in WEIGHTED_OPS or node.name in self.fused or z in keep:
                continue
            users = consumers.get(z, [])
            if len(users) != 1 or users[0].op != "Relu" or users[0].outputs[0] in keep:
                continue
            a = users[0].outputs[0]
            readers = consumers.get(a, [])
            # the weight operand must be constant: then a is the layer input every rule multiplies by
            if readers and all(
                r.op in WEIGHTED_OPS and a in r.inputs[:2] and any(i in self.consts for i in r.inputs[:2])
                for r in readers
            ):
                out[node.name] = a
        return out

    def _fusions(self) -> tuple[dict[str, tuple[str, str]], set[str]]:
        consumers = self._consumers()
        graph_outputs = {o.name for o in self.model.graph.output}
        fused: dict[str, tuple[str, str]] = {}
        adds: set[str] = set()
        for node in self.path:
            if node.op not in WEIGHTED_OPS:
                continue
            out = node.outputs[0]
            users = consumers.get(out, [])
            if len(users) != 1 or out in graph_outputs or users[0].op != "Add":
                continue
            add = users[0]
            other = add.inputs[1] if add.inputs[0] == out else add.inputs[0]
            if other not in self.consts:
                continue
            bias = np.asarray(self.consts[other])
            if node.op == "Conv":
                ok = self._bias_like(bias, 1, np.ndim(self.consts.get(node.inputs[1], np.zeros((1, 1, 1)))))
            else:
                ok = self._bias_like(bias, -1, max(bias.ndim, 2))
            if not ok:
                continue
            fused[node.name] = (other, add.outputs[0])
            adds.add(add.name)
        return fused, adds

    @staticmethod
    def _bias_like(bias: np.ndarray, channel: int, out_ndim: int) -> bool:
        """A constant that varies along the layer's output-channel axis only (numpy alignment)."""
        if bias.ndim > out_ndim:
            return False
        full = (1,) * (out_ndim - bias.ndim) + tuple(bias.shape)
        return all(d == 1 for i, d in enumerate(full) if i != channel % out_ndim)

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

    def _needed(self) -> list[str]:
        needed: list[str] = []
        seen = set(self.inputs) | set(self.consts) | {""}

        def want(name: str) -> None:
            if name not in seen:
                seen.add(name)
                needed.append(name)

        rectified_z = {n.outputs[0] for n in self.path if n.name in self.rectified}
        seen |= rectified_z  # read through the ReLU's output instead
        for node in self.path:
            skip = VALUE_NOT_NEEDED.get(node.op, ())
            for i, name in enumerate(node.inputs):
                if i not in skip:
                    want(name)
            for name in node.outputs if node.op == "Split" else node.outputs[:1]:
                want(name)
        for _bias, add_out in self.fused.values():
            want(add_out)
        want(self.target.tensor)
        return needed

    def _row_wise(self) -> bool:
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

    def _gate(self, node: Node) -> int | None:
        """For a Mul of two computed tensors: the operand that is a raw input (a mask), if exactly one is."""
        if node.op != "Mul" or len(node.inputs) != 2:
            return None
        a, b = (name in self.after_linear for name in node.inputs)
        if a == b:
            return None
        return 1 if a else 0

    @property
    def path_ops(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for node in self.path:
            counts[node.op] = counts.get(node.op, 0) + 1
        return counts

    # -- running ---------------------------------------------------------------------------------
    def forward(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The needed forward values from onnxruntime (for use outside an audit: tests, benchmarks)."""
        if self._session is None:
            import onnxruntime as ort

            from hepaudit.model.graph import with_extra_outputs

            opts = ort.SessionOptions()
            opts.log_severity_level = 3
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")  # numpy runs between calls
            proto = with_extra_outputs(self.model, self.needed)
            self._session = ort.InferenceSession(
                proto.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"]
            )
        values = self._session.run(self.needed, dict(feed))
        out = dict(feed)
        out.update(zip(self.needed, values))
        return out

    def _backward(
        self,
        values: Mapping[str, np.ndarray],
        seed: np.ndarray,
        rules: RuleSet | None,
        absorbed: np.ndarray | None,
    ) -> dict[str, np.ndarray]:
        vals = Values(self.consts, values, self.diff)
        grads: dict[str, np.ndarray] = {self.target.tensor: np.asarray(seed, self.dtype)}
        lrp = rules is not None
        for node in reversed(self.path):
            outs = [grads.pop(o, None) for o in node.outputs]
            if all(g is None for g in outs):
                continue
            rule = None
            if lrp and node.op in LINEAR_KIND:
                assert rules is not None
                rule = rules.rule(LINEAR_KIND[node.op], node.name in self.first_layers)
            fused = self.fused.get(node.name) if lrp else None
            extra = {
                "fused": lrp and node.name in self.fused_adds,
                "gate": self._gate(node),
                "cache": self._cache[node.name],
                "rectified": self.rectified.get(node.name) if lrp else None,
            }
            step = Step(
                node,
                vals,
                lrp,
                rule,
                absorbed,
                fused[0] if fused else None,
                fused[1] if fused else None,
                self.opset,
                extra,
            )
            results = HANDLERS[node.op](step, outs)
            for name, g in zip(node.inputs, results):
                if g is None or name not in self.carrying:
                    continue
                grads[name] = grads[name] + g if name in grads else g
        out = {}
        for name in self.inputs:
            shape = np.shape(values[name]) if name in values else None
            out[name] = (
                grads[name] if name in grads else np.zeros(shape if shape is not None else (len(seed),))
            )
        return out

    def _blocks(self, values: Mapping[str, np.ndarray], n: int) -> list[slice]:
        """Row blocks for one backward call: one block unless the graph is row-wise and every value
        is a 2-D (n, units) batch tensor."""
        rows = self.block_rows
        if not rows or n <= rows or not self.row_wise:
            return [slice(0, n)]
        if any(np.ndim(v) != 2 or len(v) != n for v in values.values()):
            return [slice(0, n)]
        # equal blocks (no small remainder): 10000 jets -> 10 blocks of 1000
        count = -(-n // rows)
        size = -(-n // count)
        return [slice(i, min(i + size, n)) for i in range(0, n, size)]

    def _run(
        self,
        values: Mapping[str, np.ndarray],
        seed: np.ndarray,
        rules: RuleSet | None,
        absorbed: np.ndarray | None,
    ) -> dict[str, np.ndarray]:
        """The backward pass over the batch, block by block of rows when that is possible."""
        seed = np.asarray(seed)
        n = len(seed)
        blocks = self._blocks(values, n)
        with blas_threads(self.blas_threads):
            if len(blocks) == 1:
                return self._backward(values, seed, rules, absorbed)
            out: dict[str, np.ndarray] = {}
            for sl in blocks:
                part = self._backward(
                    {k: v[sl] for k, v in values.items()},
                    seed[sl],
                    rules,
                    None if absorbed is None else absorbed[sl],  # a view: the block adds into it
                )
                for name, r in part.items():
                    if name not in out:
                        out[name] = np.empty((n,) + r.shape[1:], r.dtype)
                    out[name][sl] = r
            return out

    def gradient(self, values: Mapping[str, np.ndarray], seed: np.ndarray) -> dict[str, np.ndarray]:
        """∂(Σ seed · seed tensor)/∂(input) per model input: the exact vector-Jacobian product."""
        return self._run(values, seed, None, None)

    def score_gradient(self, values: Mapping[str, np.ndarray], what: str = "logit") -> dict[str, np.ndarray]:
        """The gradient of the score's logit z(x) (or of its probability) with respect to every input."""
        return self.gradient(values, gradient_seed(self.target, values[self.target.tensor], what))

    def relevance(
        self, values: Mapping[str, np.ndarray], rules: RuleSet, seed: np.ndarray | None = None
    ) -> LrpOutput:
        """LRP relevance per input, seeded with z(x) as methods.md defines (or with ``seed``)."""
        if seed is None:
            seed, total = relevance_seed(self.target, values[self.target.tensor])
        else:
            total = np.asarray(seed, np.float64).reshape(len(seed), -1).sum(axis=1)
        absorbed = np.zeros(len(seed))
        rel = self._run(values, seed, rules, absorbed)
        return LrpOutput(rel, total, absorbed)
