"""The backward engine: exact gradients and LRP relevance on an ONNX graph, in numpy.

Given the graph, the tensor to start from (the seed: the logit feeding the score's
Sigmoid/Softmax) and the forward values of the tensors it needs (onnxruntime computes
them; the engine lists them in :attr:`BackwardEngine.needed` so the caller can expose
them), the engine walks the nodes between the model inputs and the seed in reverse
topological order and calls one backward function per node (``ops_*`` modules), which for
LRP applies the layer's rule (:mod:`.rules`). Batched over jets; nothing is recomputed in
numpy except what an LRP rule needs (modified weights).

Built as zennit is: the graph is analysed once (:mod:`.analysis`: constants, the
differentiable path, first layers, the values read), put in canonical form by named
canonizers (:mod:`.canonizers`: constant folding, bias fusion, ReLU substitution; which
ones changed what is in :attr:`BackwardEngine.canonizers`), walked here, and each linear
layer's relevance comes from a rule class chosen by a composite (:mod:`.rules`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from hepaudit.errors import ModelError
from hepaudit.lazy import lazy_module
from hepaudit.model.backward import (  # noqa: F401  (each registers its ops)
    ops_conv,
    ops_elementwise,
    ops_linear,
    ops_pool,
    ops_recurrent,
    ops_shape,
)
from hepaudit.model.backward.analysis import LINEAR_KIND, GraphAnalysis
from hepaudit.model.backward.base import HANDLERS, Step, Values, jet_sums
from hepaudit.model.backward.blas import blas_threads
from hepaudit.model.backward.canonizers import CANONIZERS, Canonizer, canonize
from hepaudit.model.backward.rules import RuleSet

if TYPE_CHECKING:
    import onnx
else:  # loaded on first use (hepaudit.lazy): registering plugins imports none of them
    onnx = lazy_module("onnx")

#: ops that only move values: relevance they send to a constant operand is absorbed
ROUTING_OPS = frozenset({"Where", "Concat", "ScatterND"})


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
        canonizers: tuple[Canonizer, ...] = CANONIZERS,
    ) -> None:
        """``blas_threads``: numpy's OpenBLAS threads during the backward (None: leave it);
        ``block_rows``: jets per backward block when the graph is row-wise (None: whole batch).
        Both change the speed; the numbers only in the last bits of float rounding (OpenBLAS
        may sum a product's terms in another order on more threads; :mod:`hepaudit.model.backward.blas`)."""
        self.model = model
        self.blas_threads = blas_threads
        self.block_rows = block_rows
        self.target = ScoreTarget(target) if isinstance(target, str) else target
        self.graph = GraphAnalysis(model, self.target.tensor, inputs, dtype)
        #: canonizer name -> how many places it changed
        self.canonizers = canonize(self.graph, canonizers)
        self.inputs = self.graph.inputs
        self.dtype = self.graph.dtype
        self.needed = self.graph.needed()
        self.row_wise = self.graph.row_wise()
        self.rectified = self.graph.rectified
        # per-node constants a backward function derives once (Gemm's alpha·B), not per chunk
        self._cache: dict[str, dict[str, Any]] = {node.name: {} for node in self.graph.path}
        self._session: Any = None

    @property
    def path_ops(self) -> dict[str, int]:
        return self.graph.path_ops()

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

    def _step(self, node: Any, vals: Values, rules: RuleSet | None, absorbed: np.ndarray | None) -> Step:
        """How one node is walked: gradient, or LRP with the rule its composite gives it."""
        graph, lrp = self.graph, rules is not None
        rule = None
        if rules is not None and node.op in LINEAR_KIND:
            rule = rules.rule(LINEAR_KIND[node.op], node.name in graph.first_layers)
        fused = graph.fused.get(node.name) if lrp else None
        extra = {
            "fused": lrp and node.name in graph.fused_adds,
            "gate": graph.gate(node),
            "cache": self._cache[node.name],
            "rectified": graph.rectified.get(node.name) if lrp else None,
        }
        return Step(node, vals, lrp, rule, absorbed, fused[0] if fused else None, fused[1] if fused else None,
                    graph.opset, extra)

    def _backward(
        self,
        values: Mapping[str, np.ndarray],
        seed: np.ndarray,
        rules: RuleSet | None,
        absorbed: np.ndarray | None,
    ) -> dict[str, np.ndarray]:
        graph = self.graph
        vals = Values(graph.consts, values, graph.diff)
        grads: dict[str, np.ndarray] = {self.target.tensor: np.asarray(seed, self.dtype)}
        for node in reversed(graph.path):
            outs = [grads.pop(o, None) for o in node.outputs]
            if all(g is None for g in outs):
                continue
            step = self._step(node, vals, rules, absorbed)
            results = HANDLERS[node.op](step, outs)
            if rules is not None and node.op in ROUTING_OPS:
                # relevance routed to a constant operand (a mask's 0, a CLS token, a padded slot) is
                # absorbed like a bias's share, so Σ R + absorbed still adds up to the seed
                n = len(seed)
                came = np.zeros(n)
                for g in outs:
                    if g is not None:
                        came += jet_sums(g, n)
                for name, g in zip(node.inputs, results):
                    if g is not None and name in graph.carrying:
                        came -= jet_sums(g, n)
                step.add_absorbed_rows(came)
            for name, g in zip(node.inputs, results):
                if g is None or name not in graph.carrying:
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
