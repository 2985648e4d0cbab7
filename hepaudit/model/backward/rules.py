"""LRP rules for linear layers and the composites that choose a rule per layer type.

A linear layer is given as ``fwd(a, W)`` (the layer without its bias) and ``bwd(s, W)``
(its adjoint with respect to ``a``), so the same rule code serves Gemm, MatMul, Conv,
BatchNormalization (a diagonal map) and pooling. Rules follow methods.md and Montavon et
al. 2019: the bias is the weight of a constant input a_0 = 1, is part of z and is
modified by the rule like any weight (γ: b + γ·b⁺); ``ignore_bias`` leaves it out of z.

    zero         R_j = Σ_k a_j w_jk / z_k R_k
    epsilon      z_k -> z_k + ε·sign(z_k), sign(0) = +1
    gamma        w -> w + γ·w⁺, b -> b + γ·b⁺ (stabilised with ε)
    alphaXbetaY  α·(positive contributions) − β·(negative contributions), α − β = 1
    zplus        positive contributions only, no bias (α1β0 without the bias)
    flat         R_j = R_k / (number of inputs of k): weights and inputs set to 1
    wsquare      R_j = w_jk² / Σ_j w_jk² R_k (inputs ignored)

``flat`` and ``wsquare`` are meant for the first layer (they do not depend on the input).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from hepaudit.errors import ConfigError
from hepaudit.model.backward.base import safe_divide

RULES = ("zero", "epsilon", "gamma", "alpha1beta0", "alpha2beta1", "zplus", "flat", "wsquare")
LAYER_KINDS = ("dense", "conv", "norm", "pool")

Fwd = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class LayerRule:
    """The rule applied to one layer, with its parameters."""

    name: str = "epsilon"
    epsilon: float = 1e-6
    gamma: float = 0.25
    ignore_bias: bool = False

    @property
    def alpha_beta(self) -> tuple[float, float]:
        return {"alpha1beta0": (1.0, 0.0), "alpha2beta1": (2.0, 1.0), "zplus": (1.0, 0.0)}[self.name]

    @property
    def epsilon_used(self) -> float:
        return 0.0 if self.name == "zero" else self.epsilon


@dataclass(frozen=True)
class RuleSet:
    """Which rule each layer gets: one rule everywhere, or a composite by layer kind.

    ``by_kind`` maps "dense" (Gemm, MatMul), "conv" (Conv), "norm" (BatchNormalization)
    and "pool" (AveragePool, GlobalAveragePool, ReduceSum, ReduceMean) to a rule name;
    ``first_layer`` ("same", "flat", "wsquare") overrides the first linear layer(s) after
    the inputs. Pooling uses ε (or 0) whatever the rule: its weights are all positive.
    """

    default: str = "epsilon"
    by_kind: Mapping[str, str] | None = None
    first_layer: str = "same"
    epsilon: float = 1e-6
    gamma: float = 0.25
    ignore_bias: bool = False

    def __post_init__(self) -> None:
        names = [self.default] + list((self.by_kind or {}).values())
        for name in names:
            if name not in RULES:
                raise ConfigError(f"unknown LRP rule {name!r} (rules: {', '.join(RULES)})")
        for kind in self.by_kind or {}:
            if kind not in LAYER_KINDS:
                raise ConfigError(f"composite: unknown layer kind {kind!r} (kinds: {', '.join(LAYER_KINDS)})")
        if self.first_layer not in ("same", "flat", "wsquare"):
            raise ConfigError(f'first_layer must be "same", "flat" or "wsquare", not {self.first_layer!r}')

    def rule(self, kind: str, first: bool = False) -> LayerRule:
        name = (self.by_kind or {}).get(kind, self.default)
        if kind == "pool":
            name = "zero" if name == "zero" else "epsilon"
        elif first and self.first_layer != "same":
            name = self.first_layer
        return LayerRule(name, self.epsilon, self.gamma, self.ignore_bias)


def _pos(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0)


def _neg(x: np.ndarray) -> np.ndarray:
    return np.minimum(x, 0)


def _bias_share(b: np.ndarray | None, s: np.ndarray) -> np.ndarray:
    """Σ_k b_k s_k per jet: the relevance the bias (the constant input) took."""
    n = len(s)
    if b is None:
        return np.zeros(n)
    if b.ndim == 1 and s.shape[-1] == b.shape[0]:  # a dense layer's bias: one matrix-vector product
        return (s.reshape(n, -1, b.shape[0]) @ b.astype(s.dtype)).sum(axis=1).astype(np.float64)
    return (np.broadcast_to(b, s.shape) * s).reshape(n, -1).sum(axis=1)


def _times(a: np.ndarray, c: np.ndarray) -> np.ndarray:
    """a · c, written into c when c is a fresh array of the product's shape and type (saves a pass)."""
    if (
        c.base is None
        and c.flags.writeable
        and c.shape == np.broadcast_shapes(a.shape, c.shape)
        and c.dtype == np.result_type(a, c)
    ):
        return np.multiply(a, c, out=c)
    return a * c


def lrp_linear(
    a: np.ndarray,
    relevance: np.ndarray,
    fwd: Fwd,
    bwd: Fwd,
    weight: np.ndarray,
    bias: np.ndarray | None,
    rule: LayerRule,
    z_known: np.ndarray | None = None,
    z_is_relu: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Relevance of the layer input ``a`` and, per jet, the relevance the bias absorbed.

    ``z_known`` is the layer's forward output (with bias) when the caller has it from the
    forward pass; the zero/ε rules then skip recomputing it. ``z_is_relu``: it is the ReLU
    output standing in for a rectified layer's z (non-negative).
    """
    n = len(relevance)
    if rule.ignore_bias or rule.name in ("zplus", "flat", "wsquare"):
        bias = None
        z_known = None
    if rule.name in ("flat", "wsquare"):
        w = np.ones_like(weight) if rule.name == "flat" else weight * weight
        z = fwd(np.ones_like(a), w)
        return bwd(safe_divide(relevance, z, 0.0), w), np.zeros(n)
    if rule.name in ("zero", "epsilon", "gamma"):
        w, b = weight, bias
        if rule.name == "gamma":
            w = weight + rule.gamma * _pos(weight)
            b = None if bias is None else bias + rule.gamma * _pos(bias)
            z_known = None
        known = z_known is not None
        z = z_known if z_known is not None else (fwd(a, w) if b is None else fwd(a, w) + b)
        s = safe_divide(relevance, z, rule.epsilon_used, nonnegative=known and z_is_relu)
        absorbed = _bias_share(b, s)  # before the product, which may reuse bwd's buffer
        return _times(a, bwd(s, w)), absorbed
    alpha, beta = rule.alpha_beta
    ap, an = _pos(a), _neg(a)
    wp, wn = _pos(weight), _neg(weight)
    zp = fwd(ap, wp) + fwd(an, wn)
    zn = fwd(ap, wn) + fwd(an, wp)
    bp = bn = None
    if bias is not None:
        bp, bn = _pos(bias), _neg(bias)
        zp = zp + bp
        zn = zn + bn
    sp = safe_divide(relevance, zp, rule.epsilon) * alpha
    out = ap * bwd(sp, wp) + an * bwd(sp, wn)
    absorbed = np.zeros(n)
    if bp is not None:
        absorbed += (np.broadcast_to(bp, sp.shape) * sp).reshape(n, -1).sum(axis=1)
    if beta:
        sn = safe_divide(relevance, zn, rule.epsilon) * beta
        out = out - (ap * bwd(sn, wn) + an * bwd(sn, wp))
        if bn is not None:
            absorbed -= (np.broadcast_to(bn, sn.shape) * sn).reshape(n, -1).sum(axis=1)
    return out, absorbed
