"""A numpy backward engine for ONNX graphs: exact gradients and LRP relevance.

``BackwardEngine(model, target)`` analyses the graph once; ``engine.needed`` lists the
hidden tensors whose forward values it reads (expose them from onnxruntime), then
``engine.gradient(values, seed)`` and ``engine.relevance(values, rules)`` run batched.
"""

from hepaudit.model.backward.base import UnsupportedOpError
from hepaudit.model.backward.engine import (
    BackwardEngine,
    LrpOutput,
    ScoreTarget,
    gradient_seed,
    logit_and_gradient,
    relevance_seed,
)
from hepaudit.model.backward.rules import LayerRule, RuleSet

__all__ = [
    "BackwardEngine",
    "LayerRule",
    "LrpOutput",
    "RuleSet",
    "ScoreTarget",
    "UnsupportedOpError",
    "gradient_seed",
    "logit_and_gradient",
    "relevance_seed",
]
