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

As in zennit, each rule is a class (:class:`Rule` and its subclasses) registered by name in
:data:`RULE_CLASSES` (a plugin can add one with :func:`register_rule`), and a composite
chooses a rule per layer kind: :class:`RuleSet`, built from a name in :data:`COMPOSITES` or
from a ``{kind: rule}`` table.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from hepaudit.errors import ConfigError
from hepaudit.model.backward.base import safe_divide

LAYER_KINDS = ("dense", "conv", "norm", "pool")

Fwd = Callable[[np.ndarray, np.ndarray], np.ndarray]


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


@dataclass(frozen=True)
class Rule:
    """An LRP rule for one linear layer ``z = fwd(a, W) + b`` with adjoint ``bwd``.

    :meth:`apply` returns the relevance of the layer input ``a`` and, per jet, the relevance
    the bias absorbed. ``z_known`` is the layer's forward output (with bias) when the walk
    has it from the forward pass; rules that use the plain z skip recomputing it.
    ``z_is_relu``: it is the ReLU output standing in for a rectified layer's z (non-negative).
    """

    name: ClassVar[str]
    uses_bias: ClassVar[bool] = True  # False: the bias is left out of z whatever ignore_bias says
    epsilon: float = 1e-6
    gamma: float = 0.25
    ignore_bias: bool = False

    @property
    def epsilon_used(self) -> float:
        return self.epsilon

    def apply(self, a: np.ndarray, relevance: np.ndarray, fwd: Fwd, bwd: Fwd, weight: np.ndarray,
              bias: np.ndarray | None, z_known: np.ndarray | None = None, z_is_relu: bool = False
              ) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError


#: Rule name -> class; :func:`register_rule` adds to it.
RULE_CLASSES: dict[str, type[Rule]] = {}


def register_rule(cls: type[Rule]) -> type[Rule]:
    """Make a rule class available by its ``name`` (a class decorator)."""
    RULE_CLASSES[cls.name] = cls
    return cls


@register_rule
class EpsilonRule(Rule):
    """LRP-ε: z_k -> z_k + ε·sign(z_k), sign(0) = +1."""

    name = "epsilon"

    def weights(self, weight: np.ndarray, bias: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None, bool]:
        """The weights and bias the rule uses, and whether they are the layer's own."""
        return weight, bias, True

    def apply(self, a: np.ndarray, relevance: np.ndarray, fwd: Fwd, bwd: Fwd, weight: np.ndarray,
              bias: np.ndarray | None, z_known: np.ndarray | None = None, z_is_relu: bool = False
              ) -> tuple[np.ndarray, np.ndarray]:
        w, b, own = self.weights(weight, bias)
        if not own:
            z_known = None
        known = z_known is not None
        z = z_known if z_known is not None else (fwd(a, w) if b is None else fwd(a, w) + b)
        s = safe_divide(relevance, z, self.epsilon_used, nonnegative=known and z_is_relu)
        absorbed = _bias_share(b, s)  # before the product, which may reuse bwd's buffer
        return _times(a, bwd(s, w)), absorbed


@register_rule
class ZeroRule(EpsilonRule):
    """LRP-0: R_j = Σ_k a_j w_jk / z_k R_k."""

    name = "zero"

    @property
    def epsilon_used(self) -> float:
        return 0.0


@register_rule
class GammaRule(EpsilonRule):
    """LRP-γ: w -> w + γ·w⁺, b -> b + γ·b⁺, stabilised with ε."""

    name = "gamma"

    def weights(self, weight: np.ndarray, bias: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None, bool]:
        return (weight + self.gamma * _pos(weight),
                None if bias is None else bias + self.gamma * _pos(bias), False)


class AlphaBetaRule(Rule):
    """α·(positive contributions) − β·(negative contributions), α − β = 1."""

    alpha: ClassVar[float] = 1.0
    beta: ClassVar[float] = 0.0

    @property
    def alpha_beta(self) -> tuple[float, float]:
        return self.alpha, self.beta

    def apply(self, a: np.ndarray, relevance: np.ndarray, fwd: Fwd, bwd: Fwd, weight: np.ndarray,
              bias: np.ndarray | None, z_known: np.ndarray | None = None, z_is_relu: bool = False
              ) -> tuple[np.ndarray, np.ndarray]:
        n = len(relevance)
        alpha, beta = self.alpha, self.beta
        ap, an = _pos(a), _neg(a)
        wp, wn = _pos(weight), _neg(weight)
        zp = fwd(ap, wp) + fwd(an, wn)
        zn = fwd(ap, wn) + fwd(an, wp)
        bp = bn = None
        if bias is not None:
            bp, bn = _pos(bias), _neg(bias)
            zp = zp + bp
            zn = zn + bn
        sp = safe_divide(relevance, zp, self.epsilon) * alpha
        out = ap * bwd(sp, wp) + an * bwd(sp, wn)
        absorbed = np.zeros(n)
        if bp is not None:
            absorbed += (np.broadcast_to(bp, sp.shape) * sp).reshape(n, -1).sum(axis=1)
        if beta:
            sn = safe_divide(relevance, zn, self.epsilon) * beta
            out = out - (ap * bwd(sn, wn) + an * bwd(sn, wp))
            if bn is not None:
                absorbed -= (np.broadcast_to(bn, sn.shape) * sn).reshape(n, -1).sum(axis=1)
        return out, absorbed


@register_rule
class Alpha1Beta0Rule(AlphaBetaRule):
    name = "alpha1beta0"


@register_rule
class Alpha2Beta1Rule(AlphaBetaRule):
    name = "alpha2beta1"
    alpha = 2.0
    beta = 1.0


@register_rule
class ZPlusRule(AlphaBetaRule):
    """Positive contributions only, no bias (α1β0 without the bias)."""

    name = "zplus"
    uses_bias = False


class InputIndependentRule(Rule):
    """Rules for the first layer that ignore the input values: flat and w²."""

    uses_bias = False

    def modified(self, weight: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def apply(self, a: np.ndarray, relevance: np.ndarray, fwd: Fwd, bwd: Fwd, weight: np.ndarray,
              bias: np.ndarray | None, z_known: np.ndarray | None = None, z_is_relu: bool = False
              ) -> tuple[np.ndarray, np.ndarray]:
        w = self.modified(weight)
        z = fwd(np.ones_like(a), w)
        return bwd(safe_divide(relevance, z, 0.0), w), np.zeros(len(relevance))


@register_rule
class FlatRule(InputIndependentRule):
    """R_j = R_k / (number of inputs of k): weights and inputs set to 1."""

    name = "flat"

    def modified(self, weight: np.ndarray) -> np.ndarray:
        return np.ones_like(weight)


@register_rule
class WSquareRule(InputIndependentRule):
    """R_j = w_jk² / Σ_j w_jk² R_k."""

    name = "wsquare"

    def modified(self, weight: np.ndarray) -> np.ndarray:
        return weight * weight


#: The rules by name (what ``rule = ...`` accepts), in the order the docs list them.
RULES = ("zero", "epsilon", "gamma", "alpha1beta0", "alpha2beta1", "zplus", "flat", "wsquare")
#: The former name of the rule base class.
LayerRule = Rule

#: Named composites: a rule per layer kind (layers not listed get the composite's default).
COMPOSITES: dict[str, dict[str, str]] = {
    "epsilon_gamma": {"dense": "epsilon", "conv": "gamma"},  # the literature's choice for CNNs
    "epsilon_plus": {"dense": "epsilon", "conv": "zplus"},  # zennit's EpsilonPlus
    "epsilon_alpha2beta1": {"dense": "epsilon", "conv": "alpha2beta1"},  # zennit's EpsilonAlpha2Beta1
}


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
            if name not in RULE_CLASSES:
                raise ConfigError(f"unknown LRP rule {name!r} (rules: {', '.join(RULE_CLASSES)})")
        for kind in self.by_kind or {}:
            if kind not in LAYER_KINDS:
                raise ConfigError(f"composite: unknown layer kind {kind!r} (kinds: {', '.join(LAYER_KINDS)})")
        if self.first_layer not in ("same", "flat", "wsquare"):
            raise ConfigError(f'first_layer must be "same", "flat" or "wsquare", not {self.first_layer!r}')

    @classmethod
    def composite(cls, name: str, **kwargs: object) -> RuleSet:
        """The named composite of :data:`COMPOSITES` (ε for the layer kinds it does not list)."""
        if name not in COMPOSITES:
            from hepaudit.errors import close_matches

            raise ConfigError(f"unknown LRP composite {name!r}{close_matches(name, COMPOSITES)} "
                              f"(composites: {', '.join(COMPOSITES)})")
        return cls("epsilon", dict(COMPOSITES[name]), **kwargs)  # type: ignore[arg-type]

    def rule(self, kind: str, first: bool = False) -> Rule:
        name = (self.by_kind or {}).get(kind, self.default)
        if kind in ("pool", "recurrent"):  # recurrent cells: Arras et al.'s ε rule (ops_recurrent)
            name = "zero" if name == "zero" else "epsilon"
        elif first and self.first_layer != "same":
            name = self.first_layer
        return RULE_CLASSES[name](self.epsilon, self.gamma, self.ignore_bias)


def lrp_linear(
    a: np.ndarray,
    relevance: np.ndarray,
    fwd: Fwd,
    bwd: Fwd,
    weight: np.ndarray,
    bias: np.ndarray | None,
    rule: Rule,
    z_known: np.ndarray | None = None,
    z_is_relu: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """``rule`` applied to one linear layer: the relevance of ``a`` and, per jet, what the bias absorbed."""
    if rule.ignore_bias or not rule.uses_bias:
        bias, z_known = None, None
    return rule.apply(a, relevance, fwd, bwd, weight, bias, z_known, z_is_relu)
