"""LRP on real ONNX graphs: hand-worked rules, conservation, exporter styles, audits, real models.

Independent checks: the LRP formulas of methods.md written out as explicit loops over
units for a 2-layer network; LRP-0 = gradient × input on bias-free ReLU networks;
Σ R = z(x) for bias-free LRP-0; per_jet.root columns recomputed by those loops.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import uproot
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).parent))
from builders import dense_weights, make_flat_jets, mlp_model, save, toml_dumps, write_jets  # noqa: E402

import hepaudit  # noqa: E402
from hepaudit.model.backward import BackwardEngine, RuleSet, ScoreTarget, relevance_seed  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
EXTERNAL = REPO.parent / "shared" / "external-models"
RESNET = EXTERNAL / "cms-DeepBoostedJet-V02-full" / "resnet.onnx"
PARTICLENET = EXTERNAL / "cms-ParticleNetAK8-General-V00" / "ParticleNet.onnx"


def loops_lrp(
    weights: list[tuple[np.ndarray, np.ndarray]],
    x: np.ndarray,
    rule: str,
    eps: float = 0.0,
    gamma: float = 0.0,
    first: str = "same",
    use_bias: bool = True,
) -> np.ndarray:
    """LRP by its definition, unit by unit, for a ReLU MLP with a Sigmoid head (seed R = z)."""
    out = np.zeros(x.shape)
    for n in range(len(x)):
        acts = [x[n].astype(np.float64)]
        for i, (w, b) in enumerate(weights):
            z = acts[-1] @ w.astype(np.float64) + b
            acts.append(np.maximum(z, 0) if i < len(weights) - 1 else z)
        rel = acts[-1].copy()  # R = z at the logit
        for i in range(len(weights) - 1, -1, -1):
            w, b = weights[i][0].astype(np.float64), weights[i][1].astype(np.float64)
            a = acts[i]
            layer_rule = first if (i == 0 and first != "same") else rule
            new = np.zeros(len(a))
            for k in range(w.shape[1]):
                if layer_rule == "flat":
                    for j in range(len(a)):
                        new[j] += rel[k] / len(a)
                    continue
                if layer_rule == "wsquare":
                    den = sum(w[j, k] ** 2 for j in range(len(a)))
                    for j in range(len(a)):
                        new[j] += w[j, k] ** 2 / den * rel[k]
                    continue
                if layer_rule in ("alpha2beta1", "alpha1beta0"):
                    alpha, beta = (2.0, 1.0) if layer_rule == "alpha2beta1" else (1.0, 0.0)
                    contrib = [a[j] * w[j, k] for j in range(len(a))]
                    bias = b[k] if use_bias else 0.0
                    zp = sum(c for c in contrib if c > 0) + max(bias, 0)
                    zn = sum(c for c in contrib if c < 0) + min(bias, 0)
                    for j, c in enumerate(contrib):
                        if c > 0:
                            new[j] += alpha * c / (zp + eps) * rel[k]
                        elif c < 0:
                            new[j] -= beta * c / (zn - eps) * rel[k]
                    continue
                wk = [w[j, k] + gamma * max(w[j, k], 0) for j in range(len(a))]
                bk = (b[k] + gamma * max(b[k], 0)) if use_bias else 0.0
                z = sum(a[j] * wk[j] for j in range(len(a))) + bk
                z = z + eps * (1 if z >= 0 else -1)
                for j in range(len(a)):
                    new[j] += a[j] * wk[j] / z * rel[k]
            rel = new
        out[n] = rel
    return out


WEIGHTS = dense_weights([4, 3, 1], seed=3)
X = np.random.default_rng(11).normal(size=(6, 4)).astype(np.float32)


def engine_for(weights: list[tuple[np.ndarray, np.ndarray]], style: str = "gemm") -> BackwardEngine:
    return BackwardEngine(mlp_model(weights, style), ScoreTarget("logits", "Sigmoid"))


@pytest.mark.parametrize(
    "rule, kwargs, loops",
    [
        ("zero", {}, {"rule": "zero"}),
        ("epsilon", {"epsilon": 0.05}, {"rule": "epsilon", "eps": 0.05}),
        ("gamma", {"gamma": 0.5, "epsilon": 1e-9}, {"rule": "gamma", "gamma": 0.5, "eps": 1e-9}),
        ("alpha2beta1", {"epsilon": 1e-9}, {"rule": "alpha2beta1", "eps": 1e-9}),
        ("alpha1beta0", {"epsilon": 1e-9}, {"rule": "alpha1beta0", "eps": 1e-9}),
        (
            "epsilon",
            {"epsilon": 1e-9, "first_layer": "flat"},
            {"rule": "epsilon", "eps": 1e-9, "first": "flat"},
        ),
        (
            "epsilon",
            {"epsilon": 1e-9, "first_layer": "wsquare"},
            {"rule": "epsilon", "eps": 1e-9, "first": "wsquare"},
        ),
        (
            "epsilon",
            {"epsilon": 1e-9, "ignore_bias": True},
            {"rule": "epsilon", "eps": 1e-9, "use_bias": False},
        ),
    ],
)
def test_two_layer_network_by_hand(rule: str, kwargs: dict, loops: dict) -> None:
    engine = engine_for(WEIGHTS)
    out = engine.relevance(engine.forward({"x": X}), RuleSet(rule, **kwargs))
    np.testing.assert_allclose(out.relevance["x"], loops_lrp(WEIGHTS, X, **loops), rtol=1e-4, atol=1e-6)


def test_gemm_and_matmul_add_graphs_give_the_same_relevance() -> None:
    weights = dense_weights([7, 6, 5, 1], seed=5)
    x = np.random.default_rng(1).normal(size=(20, 7)).astype(np.float32)
    for rules in (
        RuleSet("epsilon", epsilon=0.01),
        RuleSet("gamma", gamma=0.3),
        RuleSet("alpha2beta1"),
        RuleSet("zplus"),
    ):
        a = engine_for(weights, "gemm")
        b = engine_for(weights, "matmul")
        ra = a.relevance(a.forward({"x": x}), rules).relevance["x"]
        rb = b.relevance(b.forward({"x": x}), rules).relevance["x"]
        np.testing.assert_allclose(ra, rb, rtol=1e-5, atol=1e-7)


def bias_free(weights: list[tuple[np.ndarray, np.ndarray]]) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(w, np.zeros_like(b)) for w, b in weights]


def test_lrp0_is_gradient_times_input_and_conserves_without_bias() -> None:
    weights = bias_free(dense_weights([8, 10, 6, 1], seed=9))
    engine = engine_for(weights)
    x = np.random.default_rng(2).normal(size=(30, 8)).astype(np.float32)
    values = engine.forward({"x": x})
    rel = engine.relevance(values, RuleSet("zero"))
    grad = engine.score_gradient(values)["x"]
    np.testing.assert_allclose(rel.relevance["x"], grad * x, rtol=1e-5, atol=1e-7)
    z = values["logits"][:, 0].astype(np.float64)
    np.testing.assert_allclose(rel.relevance["x"].sum(axis=1), z, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rel.absorbed_bias, 0.0)


def test_with_bias_relevance_plus_bias_share_is_z() -> None:
    engine = engine_for(dense_weights([8, 10, 6, 1], seed=4))
    x = np.random.default_rng(3).normal(size=(30, 8)).astype(np.float32)
    values = engine.forward({"x": x})
    out = engine.relevance(values, RuleSet("zero"))
    np.testing.assert_allclose(out.total() + out.absorbed_bias, values["logits"][:, 0], rtol=1e-4, atol=1e-5)


def conv_net(bias: bool) -> onnx.ModelProto:
    """Conv → BN → Relu → MaxPool → Conv(group 2) → Relu → GlobalAveragePool → Flatten → Gemm → Softmax."""
    rng = np.random.default_rng(0)
    inits = {
        "W1": rng.normal(0, 0.5, (4, 2, 3, 3)),
        "W2": rng.normal(0, 0.5, (6, 2, 3, 1)),
        "Wd": rng.normal(0, 0.5, (3, 6)),
        "s": rng.uniform(0.5, 1.5, 4),
        "t": rng.normal(0, 0.1, 4),
        "m": rng.normal(0, 0.1, 4),
        "v": rng.uniform(0.5, 1.5, 4),
        "b1": rng.normal(0, 0.1, 4),
        "b2": rng.normal(0, 0.1, 6),
        "bd": rng.normal(0, 0.1, 3),
    }
    if not bias:
        for k in ("b1", "b2", "bd", "t", "m"):
            inits[k] = np.zeros_like(inits[k])
    nodes = [
        helper.make_node("Conv", ["x", "W1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "s", "t", "m", "v"], ["bn"]),
        helper.make_node("Relu", ["bn"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "W2", "b2"], ["c2"], group=2, pads=[1, 0, 1, 0]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "Wd", "bd"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["prob"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "convnet",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 6, 6])],
        [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_conv_net_lrp0_gradient_times_input_and_softmax_seed() -> None:
    x = np.random.default_rng(5).normal(size=(5, 2, 6, 6)).astype(np.float32)
    target = ScoreTarget("logits", "Softmax", column=2)
    engine = BackwardEngine(conv_net(bias=False), target)
    values = engine.forward({"x": x})
    logits = values["logits"].astype(np.float64)
    seed, z = relevance_seed(target, logits)
    # the seed by hand: R_j = z(x) · g_j z_j / Σ_k g_k z_k with g = ∂z(x)/∂z_j, z(x) = z_2 − lse(z_0, z_1)
    others = np.exp(logits[:, :2]) / np.exp(logits[:, :2]).sum(axis=1, keepdims=True)
    g = np.concatenate([-others, np.ones((5, 1))], axis=1)
    zx = logits[:, 2] - np.log(np.exp(logits[:, :2]).sum(axis=1))
    np.testing.assert_allclose(seed, g * logits * (zx / (g * logits).sum(axis=1))[:, None], rtol=1e-10)
    np.testing.assert_allclose(seed.sum(axis=1), zx, rtol=1e-10)
    out = engine.relevance(values, RuleSet("zero"))
    np.testing.assert_allclose(out.total(), zx, rtol=1e-4, atol=1e-5)  # bias-free LRP-0 conserves
    # LRP-0 = gradient × input on a bias-free ReLU net, with the same seed at the logits
    grad = engine.gradient(values, seed / np.where(logits == 0, 1, logits))["x"]
    np.testing.assert_allclose(out.relevance["x"], grad * x, rtol=1e-4, atol=1e-6)


def test_conv_net_with_bias_conserves_up_to_the_bias_share() -> None:
    x = np.random.default_rng(6).normal(size=(5, 2, 6, 6)).astype(np.float32)
    engine = BackwardEngine(conv_net(bias=True), ScoreTarget("logits", "Softmax", column=0))
    values = engine.forward({"x": x})
    for rules in (RuleSet("zero"), RuleSet("epsilon", {"dense": "epsilon", "conv": "gamma"}, epsilon=1e-9)):
        out = engine.relevance(values, rules)
        assert np.all(np.isfinite(out.relevance["x"]))
        np.testing.assert_allclose(out.total() + out.absorbed_bias, out.seed_total, rtol=1e-4, atol=1e-5)


def deep_set(path: Path) -> Path:
    """features (N,6,3) → per-particle Dense+Relu → × mask (N,6,1) → ReduceSum → Dense → Sigmoid."""
    rng = np.random.default_rng(8)
    inits = {
        "W1": rng.normal(0, 0.6, (3, 5)),
        "b1": np.zeros(5),
        "W2": rng.normal(0, 0.6, (5, 1)),
        "b2": np.zeros(1),
        "ax": np.array([1]),
    }
    nodes = [
        helper.make_node("MatMul", ["features", "W1"], ["h"]),
        helper.make_node("Add", ["h", "b1"], ["hb"]),
        helper.make_node("Relu", ["hb"], ["a"]),
        helper.make_node("Unsqueeze", ["mask", "ax2"], ["m3"]),
        helper.make_node("Mul", ["a", "m3"], ["am"]),
        helper.make_node("ReduceSum", ["am", "ax"], ["pooled"], keepdims=0),
        helper.make_node("MatMul", ["pooled", "W2"], ["o"]),
        helper.make_node("Add", ["o", "b2"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], ["score"]),
    ]
    graph = helper.make_graph(
        nodes,
        "deepset",
        [
            helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 6, 3]),
            helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["N", 6]),
        ],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", 1])],
        [
            numpy_helper.from_array(v.astype(np.float32 if k != "ax" else np.int64), k)
            for k, v in inits.items()
        ]
        + [numpy_helper.from_array(np.array([2], np.int64), "ax2")],
    )
    return save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)


def test_deep_set_mask_is_a_gate(tmp_path: Path) -> None:
    model = onnx.load(str(deep_set(tmp_path / "ds.onnx")))
    engine = BackwardEngine(model, ScoreTarget("logits", "Sigmoid"))
    rng = np.random.default_rng(4)
    feats = rng.normal(size=(7, 6, 3)).astype(np.float32)
    mask = (np.arange(6)[None, :] < rng.integers(1, 6, (7, 1))).astype(np.float32)
    values = engine.forward({"features": feats, "mask": mask})
    out = engine.relevance(values, RuleSet("zero"))
    np.testing.assert_allclose(out.relevance["mask"], 0.0)
    np.testing.assert_allclose(out.relevance["features"][mask == 0], 0.0)
    np.testing.assert_allclose(out.total(), values["logits"][:, 0], rtol=1e-4, atol=1e-6)
    # the gradient follows the product rule: it reaches the mask
    grad = engine.score_gradient(values)
    assert np.abs(grad["mask"]).sum() > 0
    # for a fractional mask (the mean jet x̄) the mask is still recognised by its place in the graph
    values = engine.forward({"features": feats, "mask": np.full_like(mask, 0.4)})
    assert np.isfinite(engine.relevance(values, RuleSet("epsilon")).total()).all()


# -- audits ------------------------------------------------------------------------------------


def audit_folder(tmp_path: Path, model: onnx.ModelProto, explainers: dict, n: int = 400) -> Path:
    save(model, tmp_path / "m.onnx")
    write_jets(tmp_path / "jets.root", make_flat_jets(n, 4, seed=2))
    doc = {
        "model": {"path": "m.onnx"},
        "data": {"files": ["jets.root"], "tree": "jets", "label": "is_signal", "step_size": 150},
        "inputs": [{"name": "x", "kind": "jet", "branches": ["f0", "f1", "f2", "f3"]}],
        "explainers": explainers,
    }
    (tmp_path / "audit.toml").write_text(toml_dumps(doc))
    return tmp_path / "audit.toml"


def test_audit_writes_lrp_columns_equal_to_the_definition(tmp_path: Path) -> None:
    weights = dense_weights([4, 5, 3, 1], seed=12)
    cfg = audit_folder(tmp_path, mlp_model(weights, "matmul"), {"lrp": {"rule": "epsilon", "epsilon": 1e-6}})
    report = hepaudit.audit(cfg, out=tmp_path / "out")
    result = report.explainers["lrp"]
    assert result.status == "ok", result.error
    with uproot.open(tmp_path / "out" / "per_jet.root") as f:
        cols = f["hepaudit"].arrays(library="np")
    with uproot.open(tmp_path / "jets.root") as f:
        raw = f["jets"].arrays(["f0", "f1", "f2", "f3"], library="np")
    x = np.stack([raw[f"f{k}"] for k in range(4)], axis=1)[cols["entry"]].astype(np.float32)
    expected = loops_lrp(weights, x, "epsilon", eps=1e-6)
    got = np.stack([cols[f"lrp_f{k}"] for k in range(4)], axis=1)
    np.testing.assert_allclose(got, expected, rtol=2e-4, atol=1e-6)
    data = json.loads((tmp_path / "out" / "report.json").read_text())["explainers"]["lrp"]
    assert data["seed_tensor"] == "logits" and data["rule"] == "epsilon" and data["epsilon"] == 1e-6
    # conservation: |ΣR − z| is what the biases took (ε = 1e-6 adds nothing visible)
    assert data["conservation_with_bias_mean_abs_error"] < 1e-4
    assert data["conservation_mean_abs_error"] == pytest.approx(
        data["bias_absorbed_mean_abs"], rel=1e-3, abs=1e-6
    )
    mean_abs = np.abs(expected).mean(axis=0)
    ranking = {s["feature"]: s["score"] for s in data["feature_importance"]}
    np.testing.assert_allclose([ranking[f"f{k}"] for k in range(4)], mean_abs, rtol=2e-4)
    assert any(f.name == "lrp_relevance_by_class.png" for f in result.figures)


def test_unsupported_op_fails_the_explainer_with_node_and_op(tmp_path: Path) -> None:
    nodes = [
        helper.make_node("TopK", ["x", "k"], ["top", "idx"], name="leading_two"),
        helper.make_node("Gemm", ["top", "W", "b"], ["logits"], transB=1),
        helper.make_node("Sigmoid", ["logits"], ["score"]),
    ]
    graph = helper.make_graph(
        nodes,
        "topk",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", 1])],
        [
            numpy_helper.from_array(np.array([2], np.int64), "k"),
            numpy_helper.from_array(np.ones((1, 2), np.float32), "W"),
            numpy_helper.from_array(np.zeros(1, np.float32), "b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    cfg = audit_folder(tmp_path, model, {"lrp": {}, "gradient": {}, "mad": {}})
    report = hepaudit.audit(cfg, out=None)
    for name in ("lrp", "gradient"):
        result = report.explainers[name]
        assert result.status == "failed"
        assert "'leading_two' (TopK)" in result.error and "UnsupportedOpError" in result.error
    assert report.explainers["mad"].status == "ok"


# -- real models -------------------------------------------------------------------------------


def directional_check(engine: BackwardEngine, feed: dict[str, np.ndarray], h: float, rtol: float) -> None:
    from hepaudit.model.backward import logit_and_gradient

    values = engine.forward(feed)
    grads = engine.score_gradient(values)
    rng = np.random.default_rng(0)
    v = {k: rng.normal(size=x.shape).astype(np.float32) for k, x in feed.items()}
    zp, _ = logit_and_gradient(
        engine.target, engine.forward({k: feed[k] + h * v[k] for k in feed})[engine.target.tensor]
    )
    zm, _ = logit_and_gradient(
        engine.target, engine.forward({k: feed[k] - h * v[k] for k in feed})[engine.target.tensor]
    )
    n = len(zp)
    analytic = sum((grads[k] * v[k]).reshape(n, -1).sum(axis=1) for k in feed)
    np.testing.assert_allclose(analytic, (zp - zm) / (2 * h), rtol=rtol, atol=rtol * np.abs(analytic).max())


@pytest.mark.skipif(not RESNET.exists(), reason="external CMS models not present")
def test_deepak8_resnet_gradients_and_conservation() -> None:
    from hepaudit.model.graph import find_head

    model = onnx.load(str(RESNET))
    head = find_head(model, model.graph.output[0].name)
    assert head is not None and head.op == "Softmax"
    engine = BackwardEngine(model, ScoreTarget(head.logit, "Softmax", column=0))
    assert {"Conv", "BatchNormalization", "Add", "GlobalAveragePool", "Concat"} <= set(engine.path_ops)
    rng = np.random.default_rng(1)
    feed = {
        "pfcand": rng.normal(0, 0.3, (3, 42, 100, 1)).astype(np.float32),
        "sv": rng.normal(0, 0.3, (3, 15, 7, 1)).astype(np.float32),
    }
    directional_check(engine, feed, h=1e-4, rtol=3e-2)  # small h: few ReLU kinks crossed
    values = engine.forward(feed)
    out = engine.relevance(values, RuleSet("zero"))
    np.testing.assert_allclose(
        out.total() + out.absorbed_bias, out.seed_total, rtol=1e-3, atol=1e-3 * np.abs(out.seed_total).max()
    )
    eps = engine.relevance(values, RuleSet("epsilon", {"dense": "epsilon", "conv": "gamma"}))
    assert all(np.isfinite(r).all() for r in eps.relevance.values())


@pytest.mark.skipif(not PARTICLENET.exists(), reason="external CMS models not present")
def test_particlenet_topk_is_off_the_path_and_lrp0_conserves() -> None:
    """ParticleNet's TopK only feeds Gather indices (the kNN graph): the engine runs on it."""
    from hepaudit.model.graph import find_head

    model = onnx.load(str(PARTICLENET))
    head = find_head(model, model.graph.output[0].name)
    assert head is not None
    engine = BackwardEngine(model, ScoreTarget(head.logit, "Softmax", column=0))
    assert "TopK" not in engine.path_ops and "Gather" in engine.path_ops
    rng = np.random.default_rng(2)
    mask = np.zeros((2, 1, 100))
    mask[:, :, :30] = 1
    svm = np.zeros((2, 1, 7))
    svm[:, :, :3] = 1
    feed = {
        "pf_points": rng.normal(0, 0.3, (2, 2, 100)) * mask,
        "pf_features": rng.normal(0, 0.1, (2, 25, 100)) * mask,
        "pf_mask": mask,
        "sv_points": rng.normal(0, 0.3, (2, 2, 7)) * svm,
        "sv_features": rng.normal(0, 0.1, (2, 12, 7)) * svm,
        "sv_mask": svm,
    }
    feed = {k: v.astype(np.float32) for k, v in feed.items()}
    values = engine.forward(feed)
    out = engine.relevance(values, RuleSet("zero"))
    np.testing.assert_allclose(out.total() + out.absorbed_bias, out.seed_total, rtol=1e-4)
    grads = engine.score_gradient(values)
    assert all(np.isfinite(g).all() for g in grads.values())
    np.testing.assert_allclose(grads["pf_points"], 0.0)  # points only choose neighbours (TopK)


EXAMPLES = REPO / "examples" / "models"


def _dense_relu_logit_gradient(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """d(logit)/dx for a Gemm/ReLU/.../Sigmoid graph, forward-mode in float64 from the weights."""
    weights = {t.name: onnx.numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer}
    h = x.astype(np.float64)
    jac = np.broadcast_to(np.eye(x.shape[1]), (len(x), x.shape[1], x.shape[1])).copy()  # dh/dx
    for node in model.graph.node:
        if node.op_type == "Gemm":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            w = weights[node.input[1]]
            w = w.T if attrs.get("transB", 0) else w
            h = attrs.get("alpha", 1.0) * h @ w + attrs.get("beta", 1.0) * weights[node.input[2]]
            jac = attrs.get("alpha", 1.0) * jac @ w
        elif node.op_type == "Relu":
            on = (h > 0).astype(np.float64)
            h, jac = h * on, jac * on[:, None, :]
        elif node.op_type == "Sigmoid":
            break
        else:
            raise AssertionError(f"unexpected op {node.op_type} in the example TopoDNN")
    return jac[:, :, 0]


@pytest.mark.skipif(not (EXAMPLES / "topodnn.onnx").exists(), reason="example TopoDNN not built yet")
def test_example_topodnn() -> None:
    from hepaudit.model.graph import find_head

    model = onnx.load(str(EXAMPLES / "topodnn.onnx"))
    head = find_head(model, "score")
    engine = BackwardEngine(model, ScoreTarget(head.logit, "Sigmoid"))
    x = np.random.default_rng(3).uniform(0, 0.3, (16, 90)).astype(np.float32)
    # A trained ReLU net is piecewise linear with large first-layer weights (the input
    # standardisation is folded in): float32 finite differences either cross kinks or drown
    # in rounding. Check against the chain rule written out in float64 from the weights.
    grads = engine.score_gradient(engine.forward({"x": x}))["x"]
    np.testing.assert_allclose(grads, _dense_relu_logit_gradient(model, x), rtol=2e-3,
                               atol=2e-3 * np.abs(grads).max())
    out = engine.relevance(engine.forward({"x": x}), RuleSet("zero"))
    np.testing.assert_allclose(out.total() + out.absorbed_bias, out.seed_total, rtol=1e-3, atol=1e-4)


@pytest.mark.skipif(not (EXAMPLES / "pfn.onnx").exists(), reason="example PFN not built yet")
def test_example_pfn() -> None:
    from hepaudit.model.graph import find_head

    model = onnx.load(str(EXAMPLES / "pfn.onnx"))
    head = find_head(model, "prob")
    engine = BackwardEngine(model, ScoreTarget(head.logit, head.op, column=1))
    rng = np.random.default_rng(4)
    mask = (np.arange(60)[None, :] < rng.integers(5, 60, (8, 1))).astype(np.float32)
    feats = (rng.normal(0, 0.2, (8, 60, 3)) * mask[..., None]).astype(np.float32)
    values = engine.forward({"features": feats, "mask": mask})
    out = engine.relevance(values, RuleSet("epsilon"))
    np.testing.assert_allclose(out.relevance["features"][mask == 0], 0.0, atol=1e-12)
    np.testing.assert_allclose(out.total() + out.absorbed_bias, out.seed_total, rtol=1e-3, atol=1e-4)


def test_paper_post_processing_signed_sum_and_iqr_clip(tmp_path: Path) -> None:
    """The paper's LRP table, written out in numpy from LRP's definition: each jet's relevance
    divided by its signed sum, per feature and class values beyond 1.5 IQR from the quartiles
    set to 0, then the mean |R| per feature (overall and per class)."""
    weights = dense_weights([4, 5, 3, 1], seed=12)
    cfg = audit_folder(tmp_path, mlp_model(weights, "matmul"),
                       {"lrp": {"rule": "epsilon", "epsilon": 1e-6, "normalize": "signed_sum", "iqr_clip": True}})
    report = hepaudit.audit(cfg, out=tmp_path / "out")
    result = report.explainers["lrp"]
    assert result.status == "ok", result.error
    with uproot.open(tmp_path / "jets.root") as f:
        raw = f["jets"].arrays(["f0", "f1", "f2", "f3", "is_signal"], library="np")
    x = np.stack([raw[f"f{k}"] for k in range(4)], axis=1).astype(np.float32)
    y = raw["is_signal"]
    r = loops_lrp(weights, x, "epsilon", eps=1e-6)
    total = r.sum(axis=1, keepdims=True)  # a jet whose relevance sums to 0 (all of it in biases) keeps 0
    r = np.divide(r, total, out=np.zeros_like(r), where=total != 0)

    def clipped_mean_abs(v: np.ndarray) -> float:
        q1, q3 = np.percentile(v, [25, 75])
        fence = 1.5 * (q3 - q1)
        return float(np.abs(np.where((v < q1 - fence) | (v > q3 + fence), 0.0, v)).mean())

    got = {s.feature: s for s in result.feature_importance}
    clipped_any = False
    for k in range(4):
        sig, bkg = clipped_mean_abs(r[y == 1, k]), clipped_mean_abs(r[y == 0, k])
        n_sig, n_bkg = int((y == 1).sum()), int((y == 0).sum())
        assert got[f"f{k}"].score_signal == pytest.approx(sig, rel=1e-6, abs=1e-9)
        assert got[f"f{k}"].score_background == pytest.approx(bkg, rel=1e-6, abs=1e-9)
        assert got[f"f{k}"].score == pytest.approx((sig * n_sig + bkg * n_bkg) / (n_sig + n_bkg), rel=1e-6)
        clipped_any |= not np.isclose(sig, np.abs(r[y == 1, k]).mean())
    assert clipped_any  # the clipping changed something on this sample
    assert result.fields["normalize"] == "signed_sum" and result.fields["iqr_clip"] is True


def test_box_plot_of_per_jet_relevance_is_drawn(tmp_path: Path) -> None:
    weights = dense_weights([4, 5, 3, 1], seed=12)
    cfg = audit_folder(tmp_path, mlp_model(weights, "matmul"), {"lrp": {}})
    hepaudit.audit(cfg, out=tmp_path / "out")
    assert (tmp_path / "out" / "figures" / "lrp_boxes.png").stat().st_size > 1000


def test_eta_phi_image_shows_more_than_the_leading_constituent() -> None:
    """One bin (the jet axis) with most of the relevance and many small ones around: on the
    symmetric log scale the small bins are coloured, not white (issue 23)."""
    import io

    import matplotlib.image

    from hepaudit.explainers.lrp_figures import eta_phi_image

    rng = np.random.default_rng(3)
    image = rng.uniform(0.05, 0.5, (40, 40)) * rng.choice([-1, 1], (40, 40))  # 1e-3..1e-2 of the peak
    image[20, 20] = 100.0
    pixels = matplotlib.image.imread(io.BytesIO(eta_phi_image(image * 10, 1.0, 10, "t")), format="png")
    coloured = (pixels[..., :3].min(axis=2) < 0.85).mean()  # not white, not near-white
    assert coloured > 0.2, coloured


def test_eta_phi_image_equals_the_per_jet_relevance_binned(monkeypatch: pytest.MonkeyPatch) -> None:
    """The η–φ relevance image is each constituent's relevance (summed over its features) binned
    at its (η, φ) as the model saw them: rebuilt here from per_jet's lrp_x and input_x."""
    import tomllib

    examples = Path(__file__).resolve().parents[1] / "examples"
    doc = tomllib.loads((examples / "audit_topodnn.toml").read_text())
    doc["explainers"] = {"lrp": {}}
    doc["data"]["max_jets"] = 600
    doc["per_jet"] = {"inputs": True}
    doc["execution"] = {"progress": False}
    monkeypatch.chdir(examples)
    report = hepaudit.audit(doc, out=None, warn=False)
    image = report.explainers["lrp"].fields["eta_phi_image"]
    x, r = report.per_jet["input_x"].astype(np.float64), report.per_jet["lrp_x"].astype(np.float64)
    assert x.shape == r.shape == (600, 30, 3)
    present = np.abs(x).sum(axis=2) > 0
    extent = image["range"]
    expected, _, _ = np.histogram2d(x[..., 1][present], x[..., 2][present], bins=image["bins"],
                                    range=[[-extent, extent], [-extent, extent]], weights=r.sum(axis=2)[present])
    got = np.asarray(image["relevance_sum"])
    assert np.abs(expected).sum() > 0
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())
    # the seeded sample behind the beeswarm and dependence plots: those jets' inputs and relevance
    sample = report.explainers["lrp"].explanation
    assert sample is not None and len(sample) == 500
    row = {int(e): i for i, e in enumerate(report.per_jet["entry"])}
    at = [row[int(e)] for e in sample.entries]
    np.testing.assert_array_equal(sample.data, x.reshape(600, 90)[at])
    np.testing.assert_array_equal(sample.values, r.reshape(600, 90)[at].astype(np.float32))


def test_sums_taken_block_by_block_do_not_depend_on_the_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every sum over jets is taken per backward block on the block's thread and merged in block
    order: one thread or two, the ranking, its intervals, the profiles and the image are the same
    to the bit, and the ranking is each feature's mean |R| over the per-jet relevance."""
    import tomllib

    examples = Path(__file__).resolve().parents[1] / "examples"
    doc = tomllib.loads((examples / "audit_topodnn.toml").read_text())
    doc["explainers"] = {"lrp": {}}
    doc["data"]["max_jets"] = 2500  # three blocks of the engine's 1024 rows
    doc["execution"] = {"progress": False}
    monkeypatch.chdir(examples)
    results = []
    for threads in (1, 2):
        doc["model"]["threads"] = threads
        report = hepaudit.audit(doc, out=None, warn=False)
        results.append((report.explainers["lrp"], report.per_jet, report.features))
    (one, per_jet, features), (two, _, _) = results
    assert one.status == two.status == "ok"
    assert [(s.feature, s.score, s.score_std, s.score_ci95) for s in one.feature_importance] == \
        [(s.feature, s.score, s.score_std, s.score_ci95) for s in two.feature_importance]
    for key in ("eta_phi_image", "profiles", "mean_behaviour", "conservation_mean_abs_error"):
        assert one.fields[key] == two.fields[key], key
    r = per_jet["lrp_x"].astype(np.float64).reshape(2500, -1)  # model order: the report's features
    assert len(features) == r.shape[1]
    score = {s.feature: s.score for s in one.feature_importance}
    np.testing.assert_allclose([score[f] for f in features], np.abs(r).mean(axis=0), rtol=1e-5)


def test_evenly_spaced_columns_are_slices() -> None:
    """The η–φ image reads a per-particle input's columns as views where they are evenly spaced,
    and as the indices themselves elsewhere: the same columns either way."""
    from hepaudit.data.builders import column_selection

    x = np.arange(60.0).reshape(2, 30)
    for index in ([1, 4, 7, 10], [5], [0, 1, 2], [3, 2, 1], [0, 2, 3], [4, 4]):
        got = column_selection(np.asarray(index))
        assert isinstance(got, slice) == (index in ([1, 4, 7, 10], [5], [0, 1, 2]))
        np.testing.assert_array_equal(x[:, got], x[:, index])
