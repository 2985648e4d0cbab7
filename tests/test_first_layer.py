"""Occluded passes with the first dense layer factored out (hepaudit/model/first_layer.py).

Real ONNX graphs (built with onnx.helper, and the example TopoDNN) run by onnxruntime: the
cut graph's head and tail against the whole graph on occluded inputs, the numpy forward pass
in float64 as the independent reference, and whole dauc + mad audits with the factoring on
and off.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from builders import dense_weights, mlp_forward, mlp_model, save
from conftest import FEATURES, make_setup
from onnx import TensorProto, helper, numpy_helper

from hepaudit.audit import audit
from hepaudit.config import ModelConfig
from hepaudit.model.first_layer import split_first_layer
from hepaudit.model.session import Tagger

REPO = Path(__file__).resolve().parents[1]


def occlude(x: np.ndarray, positions: list[int], value: np.ndarray) -> np.ndarray:
    out = x.copy()
    out[:, positions] = value
    return out


@pytest.mark.parametrize("style", ["gemm", "matmul"])
def test_head_and_tail_give_the_whole_graph(tmp_path: Path, style: str) -> None:
    """Unoccluded rows (δ = 0) score bit for bit as the whole graph; occluded ones as the whole
    graph on the occluded input within float32 rounding, and as numpy's float64 forward pass."""
    weights = dense_weights([6, 16, 8, 1], seed=2)
    path = save(mlp_model(weights, style), tmp_path / "m.onnx")
    tagger = Tagger(ModelConfig(str(path), threads=1))
    passes = tagger.factored("x")
    assert passes is not None and passes.split.weight.shape == (6, 16)
    rng = np.random.default_rng(7)
    x = rng.normal(size=(300, 6)).astype(np.float32)
    value = np.array([0.25, -1.5], np.float32)
    x[::3, 2] = value[0]  # these jets already hold the baseline in one of the two features
    whole = tagger.run({"x": x}, extra=False)
    h0 = passes.first(x)
    for positions in ([4], [2, 5]):
        v = value[:len(positions)]
        score, logit = passes.occluded(h0, x, positions, v, passes.rows(positions), {})
        want = tagger.run({"x": occlude(x, positions, v)}, extra=False)
        np.testing.assert_allclose(score, want.score, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(logit, want.logit, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(score, mlp_forward(weights, occlude(x, positions, v))[:, 0], rtol=1e-5, atol=1e-6)
    unchanged, _ = passes.occluded(h0, x, [2], value[:1], passes.rows([2]), {})
    np.testing.assert_array_equal(unchanged[::3], whole.score[::3])
    zero, _ = passes.occluded(h0, x, [1], x[:, 1][:1] * 0, passes.rows([1]), {})
    assert not np.array_equal(zero, whole.score)  # a real occlusion moves the scores


def test_the_example_topodnn_splits_after_its_first_gemm() -> None:
    """The bundled TopoDNN (Gemm 90 → 300 first): occluding one constituent's three inputs."""
    tagger = Tagger(ModelConfig(str(REPO / "examples" / "models" / "topodnn.onnx"), threads=1))
    passes = tagger.factored("x")
    assert passes is not None and passes.split.weight.shape == (90, 300)
    x = np.random.default_rng(3).normal(size=(256, 90)).astype(np.float32)
    positions, value = [3, 4, 5], np.zeros(3, np.float32)
    score, _ = passes.occluded(passes.first(x), x, positions, value, passes.rows(positions), {})
    want = tagger.run({"x": occlude(x, positions, value)}, extra=False).score
    # unscaled random inputs: the layer's float32 sums of 90 terms round differently by up to ~1e-5
    np.testing.assert_allclose(score, want, rtol=1e-4, atol=1e-5)
    assert np.abs(score - want).max() < 1e-3 * np.abs(want - tagger.run({"x": x}, extra=False).score).max()


def _model(nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto], x_type: int = TensorProto.FLOAT,
           x_shape: tuple[object, ...] = ("N", 4)) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", x_type, list(x_shape))],
                              [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", 1])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


W = numpy_helper.from_array(np.ones((4, 1), np.float32), "W")


@pytest.mark.parametrize("case", ["read twice", "alpha", "transA", "weight from input", "rank 3", "integer"])
def test_graphs_that_are_not_cut(case: str) -> None:
    """An input also read elsewhere, a scaled or transposed product, a weight that is not a
    constant, a rank-3 or an integer input: no split (the whole graph runs, as before)."""
    sig = helper.make_node("Sigmoid", ["z"], ["score"])
    if case == "read twice":
        nodes = [helper.make_node("MatMul", ["x", "W"], ["m"]),
                 helper.make_node("ReduceMax", ["x"], ["s"], axes=[1], keepdims=1),
                 helper.make_node("Add", ["m", "s"], ["z"]), sig]
        model = _model(nodes, [W])
    elif case in ("alpha", "transA"):
        attrs = {"alpha": 2.0} if case == "alpha" else {"transA": 1}
        model = _model([helper.make_node("Gemm", ["x", "W"], ["z"], **attrs), sig], [W])
    elif case == "weight from input":
        model = _model([helper.make_node("MatMul", ["W", "x"], ["z"]), sig], [W])
    elif case == "rank 3":
        model = _model([helper.make_node("MatMul", ["x", "W"], ["z"]), sig], [W], x_shape=("N", 2, 4))
    else:
        model = _model([helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT),
                        helper.make_node("MatMul", ["xf", "W"], ["z"]), sig], [W], x_type=TensorProto.INT64)
    assert split_first_layer(model, "x") is None


def test_switched_off_or_fixed_batch_runs_the_whole_graph(tmp_path: Path) -> None:
    weights = dense_weights([4, 8, 1], seed=1)
    path = save(mlp_model(weights), tmp_path / "m.onnx")
    assert Tagger(ModelConfig(str(path))).factored("x") is not None
    assert Tagger(ModelConfig(str(path), factor_first_layer=False)).factored("x") is None
    fixed = save(mlp_model(weights, batch=16), tmp_path / "fixed.onnx")
    assert Tagger(ModelConfig(str(fixed))).factored("x") is None


@pytest.mark.parametrize("style", ["gemm", "matmul"])
def test_audits_with_and_without_factoring_agree(tmp_path: Path, style: str) -> None:
    """dauc and mad on the same jets, factored and whole-graph passes (blocks of 64 rows on
    several threads): the same ranking and numbers within float32 rounding of the scores."""
    setup = make_setup(tmp_path / "a", n=600)
    save(mlp_model(setup.weights, style), setup.model)
    reports = {}
    for factored in (True, False):
        doc = setup.doc()
        doc["model"]["factor_first_layer"] = factored
        doc["model"]["batch_size"] = 7
        doc["explainers"] = {"dauc": {}, "mad": {}}
        reports[factored] = audit(setup.write(doc, f"audit_{factored}.toml"), out=None, progress=False)
    for name in ("dauc", "mad"):
        on = {s.feature: s.score for s in reports[True].explainers[name].feature_importance}
        off = {s.feature: s.score for s in reports[False].explainers[name].feature_importance}
        assert set(on) == set(off) == set(FEATURES)
        for feature in FEATURES:
            assert on[feature] == pytest.approx(off[feature], abs=1e-6), (name, feature)
        assert any(off[f] != 0 for f in FEATURES)



def test_the_hls4ml_tagger_is_cut_but_its_fixed_batch_runs_whole() -> None:
    """hls4ml's three-layer jet tagger (a real collaboration MLP, Gemm first, its weights also
    listed among the graph inputs as old exporters do): the graph is cut into a valid head and
    tail, but its input declares a fixed batch (789444 rows), so its passes run the whole graph.
    Skipped without the external models."""
    from taggers import EXTERNAL

    path = EXTERNAL / "hls4ml-three-layer-pytorch" / "three_layer_pytorch.onnx"
    if not path.exists():
        pytest.skip(f"{path} is not here")
    tagger = Tagger(ModelConfig(str(path), score=0))
    split = split_first_layer(tagger.proto, "0")
    assert split is not None and split.weight.shape == (16, 64)
    onnx.checker.check_model(split.head)
    onnx.checker.check_model(split.tail)
    assert tagger.fixed_batch == 789444 and tagger.factored("0") is None
