"""Backward of element-wise ops: arithmetic, activations, Softmax, Where.

Gradients are the analytic derivatives. For LRP:

* activations (Relu, LeakyRelu, Elu, Selu, Sigmoid, Tanh, Softplus, Clip) and Identity,
  Dropout, Cast, Neg pass relevance through unchanged (the identity rule);
* Mul and Div by a constant pass relevance through (a one-input linear map: every rule
  gives R_x = R);
* Add/Sub/Sum split relevance in proportion to the terms, R_i = t_i / (z + ε·sign z) R; a
  constant term is a bias and absorbs its share (``ignore_bias`` passes it all through);
  an Add whose constant the engine folded into the preceding MatMul/Conv passes through;
* Mul of two computed tensors (features × mask in a deep set, x · Φ(x) in a GELU): one
  operand is the gate and gets no relevance, the other gets all of it ("signal-take-all",
  Arras et al. 2017; for GELU as in AttnLRP, Achtibat et al. 2024). The gate is the operand
  made by a gating op (erf, sigmoid, tanh, softmax) when the other is not; else the operand
  that reaches the model inputs without passing a Gemm/MatMul/Conv (the mask) while the
  other went through the network's layers; else the operand whose values are all 0 or 1 in
  this batch. Otherwise LRP stops with :class:`UnsupportedOpError` (the gradient always
  uses the product rule);
* Div by a computed tensor (LayerNorm's standard deviation): the denominator is a
  normaliser held fixed, as the conservative propagation of Ali et al. 2022 does for
  LayerNorm: the numerator gets all the relevance;
* Max and Min (clamps, element-wise maxima) give the gradient and the relevance to the
  operand that was selected (the first on ties); where a constant was selected, its
  relevance is absorbed like a bias's.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from hepaudit.model.backward.base import Step, register, safe_divide, unbroadcast


def _shape(step: Step, i: int) -> tuple[int, ...]:
    return np.shape(step.x(i))


@register("Identity", "Dropout", "Cast")
def identity(step: Step, grads: list[np.ndarray | None]) -> list[np.ndarray | None]:
    return [grads[0]] + [None] * (len(step.node.inputs) - 1)


@register("Neg")
def neg(step: Step, grads: list[np.ndarray | None]) -> list[np.ndarray | None]:
    g = grads[0]
    assert g is not None
    return [g if step.lrp else -g]


def _x64(step: Step) -> np.ndarray:
    return step.x(0).astype(np.float64)


def _elu_slope(x: np.ndarray, alpha: float) -> np.ndarray:
    return np.where(x > 0, 1.0, alpha * np.exp(np.minimum(x, 0)))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _sigmoid_slope(x: np.ndarray) -> np.ndarray:
    s = _sigmoid(x)
    return s * (1 - s)


def _clip_slope(step: Step) -> np.ndarray:
    x = step.x(0)
    lo = step.x(1) if step.has_input(1) else step.attr("min", -np.inf)
    hi = step.x(2) if step.has_input(2) else step.attr("max", np.inf)
    return (x >= lo) & (x <= hi)


#: each activation's derivative f'(x), read from the forward values. Smooth ones are taken
#: from x in float64 rather than from the float32 output, so saturated units keep their slope
SLOPES: dict[str, Callable[[Step], np.ndarray]] = {
    # a > 0 is z > 0: the output, which is always exposed (a rectified layer's z is not)
    "Relu": lambda step: step.y() > 0,
    "LeakyRelu": lambda step: np.where(step.x(0) > 0, 1.0, float(step.attr("alpha", 0.01))),
    "Elu": lambda step: _elu_slope(_x64(step), float(step.attr("alpha", 1.0))),
    "Selu": lambda step: float(step.attr("gamma", 1.05070102214813232421875))
    * _elu_slope(_x64(step), float(step.attr("alpha", 1.67326319217681884765625))),
    "Sigmoid": lambda step: _sigmoid_slope(_x64(step)),
    "Tanh": lambda step: 1 - np.tanh(_x64(step)) ** 2,
    "Softplus": lambda step: _sigmoid(_x64(step)),
    "Clip": _clip_slope,
}


@register(*SLOPES)
def activation(step: Step, grads: list[np.ndarray | None]) -> list[np.ndarray | None]:
    """LRP passes relevance through unchanged (the identity rule); the gradient is g · f'(x)."""
    g = grads[0]
    assert g is not None
    out = g if step.lrp else g * SLOPES[step.node.op](step)
    return [out] + [None] * (len(step.node.inputs) - 1)


#: derivatives of the smooth one-input ops, from x (float64; √x and log x are infinite at 0)
_UNARY: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "Exp": np.exp,
    "Log": lambda x: np.divide(1.0, x, out=np.full_like(x, np.inf), where=x != 0),
    "Sqrt": lambda x: np.divide(0.5, np.sqrt(x), out=np.full_like(x, np.inf), where=x > 0),
    "Erf": lambda x: 2.0 / np.sqrt(np.pi) * np.exp(-x * x),
    "Atan": lambda x: 1.0 / (1.0 + x * x),
    "Abs": np.sign,
    "Reciprocal": lambda x: -1.0 / (x * x),
    "Sin": np.cos,
    "Cos": lambda x: -np.sin(x),
}


@register("Pow", *_UNARY)
def smooth_unary(step: Step, grads: list[np.ndarray | None]) -> list[np.ndarray | None]:
    g = grads[0]
    assert g is not None
    if step.lrp:
        raise step.unsupported("a non-linear op with no LRP rule (relevance reached it: it is not used as a gate)")
    x = step.x(0).astype(np.float64)
    if step.node.op in _UNARY:
        d = _UNARY[step.node.op](x)
    else:
        if step.is_diff(1):
            raise step.unsupported("a Pow with a computed exponent")
        p = np.asarray(step.x(1), np.float64)
        d = p * np.power(x, p - 1)
    with np.errstate(invalid="ignore", over="ignore"):
        # an infinite slope where nothing flows back (√0 for a padded pair's distance) is no slope
        local = np.where(g == 0, 0.0, g * d)
    out = unbroadcast(local, x.shape)
    return [out] + [None] * (len(step.node.inputs) - 1)


@register("Softmax")
def softmax(step: Step, grads: list[np.ndarray | None]) -> list[np.ndarray | None]:
    g = grads[0]
    assert g is not None
    if step.lrp:
        raise step.unsupported("a Softmax inside the network (not the score's head)")
    x = step.x(0).astype(np.float64)
    axis = int(step.attr("axis", -1 if step.opset >= 13 else 1)) % x.ndim
    if step.opset < 13:  # the old Softmax works on the input flattened to 2-D at ``axis``
        x2 = x.reshape(int(np.prod(x.shape[:axis])), -1)
        g2 = g.reshape(x2.shape)
        e = np.exp(x2 - x2.max(axis=1, keepdims=True))
        y = e / e.sum(axis=1, keepdims=True)
        return [(y * (g2 - (g2 * y).sum(axis=1, keepdims=True))).reshape(x.shape)]
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    y = e / e.sum(axis=axis, keepdims=True)
    return [y * (g - (g * y).sum(axis=axis, keepdims=True))]


def _split(step: Step, g: np.ndarray, signs: list[float]) -> list[np.ndarray | None]:
    """Add/Sub/Sum: gradient passes to every term; LRP splits in proportion to the terms."""
    n = len(step.node.inputs)
    diff = [step.is_diff(i) for i in range(n)]
    if not step.lrp:
        return [
            unbroadcast(sign * g, _shape(step, i)) if d else None
            for i, (d, sign) in enumerate(zip(diff, signs))
        ]
    assert step.rule is not None
    if step.extra.get("fused") or (step.rule.ignore_bias and sum(diff) == 1):
        return [unbroadcast(g, _shape(step, i)) if d else None for i, d in enumerate(diff)]
    s = safe_divide(g, step.y().astype(np.float64), step.rule.epsilon_used)
    out: list[np.ndarray | None] = []
    for i, (d, sign) in enumerate(zip(diff, signs)):
        share = sign * step.x(i) * s
        if d:
            out.append(unbroadcast(share, _shape(step, i)))
        else:
            step.add_absorbed(np.broadcast_to(share, s.shape))
            out.append(None)
    return out


@register("Add", "Sum")
def add(step: Step, grads: list[np.ndarray | None]) -> list[np.ndarray | None]:
    assert grads[0] is not None
    return _split(step, grads[0], [1.0] * len(step.node.inputs))


@register("Sub")
def sub(step: Step, grads: list[np.ndarray | None]) -> list[np.ndarray | None]:
    assert grads[0] is not None
    return _split(step, grads[0], [1.0, -1.0])


def _is_mask(x: np.ndarray) -> bool:
    return bool(np.all((x == 0) | (x == 1)))


@register("Mul")
def mul(step: Step, grads: list[np.ndarray | None]) -> list[np.ndarray | None]:
    g = grads[0]
    assert g is not None
    a, b = step.x(0), step.x(1)
    da, db = step.is_diff(0), step.is_diff(1)
    if not step.lrp:
        return [
            unbroadcast(g * b, np.shape(a)) if da else None,
            unbroadcast(g * a, np.shape(b)) if db else None,
        ]
    if da and db:
        gate = step.extra.get("gate")
        if gate is not None:  # one operand went through the network's layers, the other is a raw input
            return [None, unbroadcast(g, np.shape(b))] if gate == 0 else [unbroadcast(g, np.shape(a)), None]
        gate_a, gate_b = _is_mask(a), _is_mask(b)
        if not (gate_a or gate_b):
            raise step.unsupported("a product of two computed tensors, neither of which is a 0/1 mask")
        if gate_a and gate_b:  # both binary: the smaller (broadcast) operand is the mask
            gate_a = np.size(a) < np.size(b)
        return [None, unbroadcast(g, np.shape(b))] if gate_a else [unbroadcast(g, np.shape(a)), None]
    return [unbroadcast(g, np.shape(a)) if da else None, unbroadcast(g, np.shape(b)) if db else None]


@register("Div")
def div(step: Step, grads: list[np.ndarray | None]) -> list[np.ndarray | None]:
    g = grads[0]
    assert g is not None
    a, b = step.x(0), step.x(1)
    da, db = step.is_diff(0), step.is_diff(1)
    if step.lrp:  # a computed denominator is a normaliser held fixed (module docstring)
        return [unbroadcast(g, np.shape(a)) if da else None, None]
    b64 = np.asarray(b, np.float64)
    return [
        unbroadcast(g / b64, np.shape(a)) if da else None,
        unbroadcast(-g * a / (b64 * b64), np.shape(b)) if db else None,
    ]


@register("Where")
def where(step: Step, grads: list[np.ndarray | None]) -> list[np.ndarray | None]:
    g = grads[0]
    assert g is not None
    cond = np.asarray(step.x(0), bool)
    return [
        None,
        unbroadcast(np.where(cond, g, 0.0), _shape(step, 1)) if step.is_diff(1) else None,
        unbroadcast(np.where(cond, 0.0, g), _shape(step, 2)) if step.is_diff(2) else None,
    ]


@register("Max", "Min")
def extremum(step: Step, grads: list[np.ndarray | None]) -> list[np.ndarray | None]:
    """The operand selected at each position takes the gradient or the relevance (first on ties)."""
    g = grads[0]
    assert g is not None
    y = step.y()
    taken = np.zeros(y.shape, bool)
    out: list[np.ndarray | None] = []
    for i in range(len(step.node.inputs)):
        x = step.x(i)
        chosen = (np.broadcast_to(x, y.shape) == y) & ~taken
        taken |= chosen
        part = np.where(chosen, g, 0.0).astype(g.dtype, copy=False)
        if step.is_diff(i):
            out.append(unbroadcast(part, np.shape(x)))
        else:
            if step.lrp:
                step.add_absorbed(part)
            out.append(None)
    return out
