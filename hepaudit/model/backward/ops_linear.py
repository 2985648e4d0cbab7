"""Backward of the dense linear ops: Gemm, MatMul and (inference) BatchNormalization.

A MatMul of two computed tensors is attention's A·V for LRP: the operand made by the softmax
gates and the other takes the relevance (see :mod:`.ops_elementwise`). A MatMul (or Gemm)
followed by an Add of a constant is one dense layer for LRP: the
engine fuses the Add's constant into the layer's bias, so a tf2onnx-style MatMul + Add
graph gets exactly the relevance of the PyTorch-style Gemm graph with the same weights.
BatchNormalization is the diagonal affine map y = s·x + t with s = scale/√(var + ε_bn)
and t = B − mean·s; the rule treats s and t as weight and bias.
"""

from __future__ import annotations

import numpy as np

from hepaudit.model.backward.base import Step, register, unbroadcast
from hepaudit.model.backward.rules import lrp_linear


def _swap(x: np.ndarray) -> np.ndarray:
    return np.swapaxes(x, -1, -2)


def _right(a: np.ndarray, w: np.ndarray) -> np.ndarray:
    return a @ w


def _right_t(s: np.ndarray, w: np.ndarray) -> np.ndarray:
    return s @ _swap(w)


def _left(b: np.ndarray, w: np.ndarray) -> np.ndarray:
    return w @ b


def _left_t(s: np.ndarray, w: np.ndarray) -> np.ndarray:
    return _swap(w) @ s


def _fused_bias(step: Step, bias: np.ndarray | None) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The layer's bias including a fused following Add, and the forward z if known."""
    if step.fused_bias is not None:
        extra = step.values[step.fused_bias]
        bias = extra if bias is None else bias + extra
    return bias, step.linear_output()


def _dense(
    step: Step, a: np.ndarray, w: np.ndarray, bias: np.ndarray | None, grad: np.ndarray, right: bool
) -> np.ndarray:
    fwd, bwd = (_right, _right_t) if right else (_left, _left_t)
    if not step.lrp:
        return unbroadcast(bwd(grad, w), a.shape)
    assert step.rule is not None
    bias, z_known = _fused_bias(step, bias)
    if z_known is not None and z_known.shape != grad.shape:
        z_known = None
    rel, absorbed = lrp_linear(
        a, grad, fwd, lambda s, ww: unbroadcast(bwd(s, ww), a.shape), w, bias, step.rule, z_known,
        z_is_relu=bool(step.extra.get("rectified")),
    )
    step.add_absorbed_rows(absorbed)
    return rel


def _gemm_weights(
    step: Step, alpha: float, beta: float, b_eff: np.ndarray
) -> tuple[np.ndarray, np.ndarray | None]:
    """alpha·B and beta·C, computed once per engine when both are constants (not per chunk)."""
    cache = step.extra.get("cache")
    if cache is not None and "gemm" in cache:
        return cache["gemm"]
    weights = (alpha * b_eff, beta * step.x(2) if step.has_input(2) else None)
    consts = step.values.consts
    if cache is not None and all(name in consts for name in step.node.inputs[1:] if name):
        cache["gemm"] = weights
    return weights


@register("Gemm")
def gemm(step: Step, grads: list[np.ndarray | None]) -> list[np.ndarray | None]:
    g = grads[0]
    assert g is not None
    alpha, beta = float(step.attr("alpha", 1.0)), float(step.attr("beta", 1.0))
    a, b = step.x(0), step.x(1)
    a_eff = a.T if step.attr("transA", 0) else a
    b_eff = b.T if step.attr("transB", 0) else b
    if step.is_diff(1) or step.attr("transA", 0):
        if step.lrp:
            raise step.unsupported("a Gemm whose second operand is not a constant weight (or with transA)")
        ga = alpha * g @ b_eff.T
        gb = alpha * a_eff.T @ g
        return [
            ga.T if step.attr("transA", 0) else ga,
            (gb.T if step.attr("transB", 0) else gb) if step.is_diff(1) else None,
            unbroadcast(beta * g, step.x(2).shape) if step.is_diff(2) else None,
        ]
    w, bias = _gemm_weights(step, alpha, beta, b_eff)
    out: list[np.ndarray | None] = [_dense(step, a, w, bias, g, right=True), None]
    if step.is_diff(2):
        if step.lrp:
            raise step.unsupported("a Gemm whose bias is computed from the inputs")
        out.append(unbroadcast(beta * g, step.x(2).shape))
    return out


@register("MatMul")
def matmul(step: Step, grads: list[np.ndarray | None]) -> list[np.ndarray | None]:
    g = grads[0]
    assert g is not None
    a, b = step.x(0), step.x(1)
    if a.ndim < 2 or b.ndim < 2:
        raise step.unsupported("a MatMul with a 1-D operand")
    da, db = step.is_diff(0), step.is_diff(1)
    if da and db:
        if not step.lrp:
            return [unbroadcast(g @ _swap(b), a.shape), unbroadcast(_swap(a) @ g, b.shape)]
        # attention's A·V: the softmax A gates, the values V take the relevance with A as the
        # weights (the conservative propagation of Ali et al. 2022; AttnLRP's CP-LRP variant)
        gate = step.extra.get("gate")
        if gate == 0:
            return [None, _dense(step, b, a, None, g, right=False)]
        if gate == 1:
            return [_dense(step, a, b, None, g, right=True), None]
        raise step.unsupported("a MatMul of two computed tensors, neither made by a softmax or another gate")
    if da:
        return [_dense(step, a, b, None, g, right=True), None]
    return [None, _dense(step, b, a, None, g, right=False)]


@register("BatchNormalization")
def batch_norm(step: Step, grads: list[np.ndarray | None]) -> list[np.ndarray | None]:
    g = grads[0]
    assert g is not None
    if any(step.is_diff(i) for i in range(1, 5)):
        raise step.unsupported("a BatchNormalization with computed parameters")
    x = step.x(0)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    scale, shift, mean, var = (np.asarray(step.x(i), np.float64).reshape(shape) for i in range(1, 5))
    s = scale / np.sqrt(var + float(step.attr("epsilon", 1e-5)))
    t = shift - mean * s
    if not step.lrp:
        return [g * s] + [None] * (len(step.node.inputs) - 1)
    assert step.rule is not None
    rel, absorbed = lrp_linear(x, g, lambda a, w: a * w, lambda r, w: r * w, s, t, step.rule, step.y())
    step.add_absorbed_rows(absorbed)
    return [rel] + [None] * (len(step.node.inputs) - 1)
