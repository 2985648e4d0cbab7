"""The backward engine's parts: canonizers named and counted, rules as registered classes,
named composites — on real ONNX graphs built with onnx.helper and run by onnxruntime."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from builders import dense_weights, mlp_model  # noqa: E402

from hepaudit.errors import ConfigError  # noqa: E402
from hepaudit.model.backward import BackwardEngine, RuleSet  # noqa: E402
from hepaudit.model.backward.canonizers import FoldConstants, FuseBias  # noqa: E402
from hepaudit.model.backward.rules import COMPOSITES, RULE_CLASSES, RULES, AlphaBetaRule, Rule  # noqa: E402


def test_every_rule_name_is_a_registered_class() -> None:
    assert set(RULES) == set(RULE_CLASSES)
    for name in RULES:
        rule = RuleSet(name).rule("dense")
        assert isinstance(rule, Rule) and rule.name == name
    assert RULE_CLASSES["alpha2beta1"]().alpha_beta == (2.0, 1.0)  # type: ignore[attr-defined]
    assert issubclass(RULE_CLASSES["zplus"], AlphaBetaRule) and not RULE_CLASSES["zplus"].uses_bias


def test_named_composite_is_its_table() -> None:
    for name, table in COMPOSITES.items():
        assert RuleSet.composite(name, epsilon=1e-3) == RuleSet("epsilon", table, epsilon=1e-3)
    assert type(RuleSet.composite("epsilon_plus").rule("conv")).__name__ == "ZPlusRule"
    assert RuleSet.composite("epsilon_plus").rule("pool").name == "epsilon"  # pooling stays ε
    with pytest.raises(ConfigError, match="close matches: epsilon_plus"):
        RuleSet.composite("epsilon_plu")


def test_canonizers_say_what_they_changed() -> None:
    weights = dense_weights([6, 5, 4, 1], seed=3)
    matmul = BackwardEngine(mlp_model(weights, "matmul"), "logits")
    gemm = BackwardEngine(mlp_model(weights, "gemm"), "logits")
    assert matmul.canonizers["fuse_bias"] == 3  # every MatMul + Add read as one layer
    assert gemm.canonizers["fuse_bias"] == 0
    assert gemm.canonizers["relu_substitution"] == 2  # both hidden layers read through their ReLU
    x = np.random.default_rng(1).normal(size=(32, 6)).astype(np.float32)
    rules = RuleSet("epsilon")
    a = matmul.relevance(matmul.forward({"x": x}), rules).relevance["x"]
    b = gemm.relevance(gemm.forward({"x": x}), rules).relevance["x"]
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)  # the canonical forms agree


def test_without_bias_fusion_the_add_is_its_own_layer() -> None:
    """Leaving a canonizer out is possible, and it is what makes the two exporters' graphs agree."""
    weights = dense_weights([6, 5, 1], seed=4)
    model = mlp_model(weights, "matmul")
    plain = BackwardEngine(model, "logits", canonizers=(FoldConstants(),))
    fused = BackwardEngine(model, "logits", canonizers=(FoldConstants(), FuseBias()))
    assert plain.canonizers == {"fold_constants": 0} and fused.canonizers["fuse_bias"] == 2
    x = np.random.default_rng(2).normal(size=(16, 6)).astype(np.float32)
    g_plain = plain.score_gradient(plain.forward({"x": x}))["x"]
    g_fused = fused.score_gradient(fused.forward({"x": x}))["x"]
    np.testing.assert_allclose(g_plain, g_fused, rtol=1e-12)  # gradients never depend on canonizers


def test_lrp_result_lists_canonizers_and_a_named_composite(tmp_path: Path) -> None:
    import hepaudit
    from hepaudit.testing import tiny_audit

    config = tiny_audit(tmp_path, {"lrp": {"rule": "composite", "composite": "epsilon_plus"}}, n=200)
    fields = hepaudit.audit(config, out=None).explainers["lrp"].fields
    assert fields["composite"] == COMPOSITES["epsilon_plus"] and fields["composite_name"] == "epsilon_plus"
    assert fields["canonizers"] == {"fold_constants": 0, "fuse_bias": 0, "relu_substitution": 1}
    bad = tiny_audit(tmp_path / "bad", {"lrp": {"rule": "composite", "composite": "epsilon_plu"}}, n=200)
    with pytest.raises(ConfigError, match="unknown LRP composite"):
        hepaudit.audit(bad, out=None)
