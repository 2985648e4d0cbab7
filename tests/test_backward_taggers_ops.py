"""The ops of the collaboration taggers (issue 18), against independent references.

Gradients: central finite differences of Σ r·y on onnxruntime (float32 with a larger step
for LSTM/GRU, whose float64 reference implementations differ between onnx and
onnxruntime) or onnx's float64 reference evaluator. LRP: the rules that promise
conservation (LSTM/GRU after Arras et al., attention with the softmax as a gate, GELU,
LayerNorm with its standard deviation held fixed) keep Σ R(inputs) + absorbed = seed.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from test_backward_ops import check_gradient, f32, graph, node

from hepaudit.model.backward import BackwardEngine, RuleSet, ScoreTarget, UnsupportedOpError

RNG = np.random.default_rng(18)


def recurrent(op: str, hidden: int = 3, features: int = 4, steps: int = 5, scale: float = 0.6,
              **attrs: object) -> onnx.ModelProto:
    """x (N, T, F) -> Transpose -> LSTM/GRU (T, dirs, N, H) -> Y and Y_h summed into y (N, H·k)."""
    dirs = 2 if attrs.get("direction") == "bidirectional" else 1
    gates = 4 if op == "LSTM" else 3
    inits = {"W": f32(dirs, gates * hidden, features, scale=scale), "R": f32(dirs, gates * hidden, hidden, scale=scale),
             "B": f32(dirs, 2 * gates * hidden, scale=0.3)}
    ins = ["xt", "W", "R", "B", "", "h0"]
    if op == "LSTM":
        ins += ["c0"]
        if attrs.pop("peepholes", False):
            ins += ["P"]
            inits["P"] = f32(dirs, 3 * hidden, scale=0.3)
    outs = ["Y", "Yh"] + (["Yc"] if op == "LSTM" else [])
    nodes = [
        node("Transpose", ["x"], "xt", perm=[1, 0, 2]),
        helper.make_node(op, ins, outs, hidden_size=hidden, **attrs),
        node("Transpose", ["Y"], "Yn", perm=[2, 0, 1, 3]),
        node("Reshape", ["Yn", "flat"], "Yf"),
        node("Transpose", ["Yh"], "Yhn", perm=[1, 0, 2]),
        node("Reshape", ["Yhn", "flat"], "Yhf"),
        node("Concat", ["Yf", "Yhf"], "y", axis=1),
    ]
    inits["flat"] = np.array([0, -1], np.int64)
    model = graph(nodes, {"x": (2, steps, features), "h0": (dirs, 2, hidden)} | (
        {"c0": (dirs, 2, hidden)} if op == "LSTM" else {}), inits, opset=14)
    # the initial states have no batch axis first: declare them as they are
    for inp in model.graph.input:
        if inp.name in ("h0", "c0"):
            inp.type.tensor_type.shape.dim[0].dim_value = dirs
            inp.type.tensor_type.shape.dim[1].dim_param = "N"
    return model


RECURRENT = {
    "lstm_forward": ("LSTM", {}),
    "lstm_reverse_peepholes": ("LSTM", {"direction": "reverse", "peepholes": True}),
    "lstm_bidirectional": ("LSTM", {"direction": "bidirectional"}),
    "gru_forward": ("GRU", {}),
    # small weights: the hard sigmoid's kinks (at |x| = 2.5) stay out of the finite differences
    "gru_reverse_hardsigmoid": ("GRU", {"direction": "reverse", "activations": ["HardSigmoid", "Tanh"],
                                        "activation_alpha": [0.2], "activation_beta": [0.5], "scale": 0.25}),
    "gru_linear_before_reset": ("GRU", {"linear_before_reset": 1, "direction": "bidirectional"}),
}


def _recurrent_case(name: str) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    op, attrs = RECURRENT[name]
    model = recurrent(op, **dict(attrs))
    dirs = 2 if attrs.get("direction") == "bidirectional" else 1
    feed = {"x": f32(2, 5, 4), "h0": f32(dirs, 2, 3, scale=0.5)}
    if op == "LSTM":
        feed["c0"] = f32(dirs, 2, 3, scale=0.5)
    return model, feed


@pytest.mark.parametrize("case", sorted(RECURRENT))
def test_recurrent_gradient_matches_finite_differences(case: str) -> None:
    model, feed = _recurrent_case(case)
    # onnx's reference GRU ignores the activations attribute: differentiate onnxruntime there
    check_gradient(model, feed, h=1e-4, use_ort="hardsigmoid" in case)


@pytest.mark.parametrize("case", sorted(RECURRENT))
def test_recurrent_lrp_conserves_relevance(case: str) -> None:
    """Arras et al.'s rule loses nothing: Σ R_x + R(initial states) + bias shares = seed (ε → 0)."""
    model, feed = _recurrent_case(case)
    if "hardsigmoid" in case:
        pytest.skip("same rule; conservation is checked on the other cases")
    engine = BackwardEngine(model, ScoreTarget("y", head=None), dtype=np.float64)
    values = engine.forward(feed)
    values = {k: np.asarray(v, np.float64) for k, v in values.items()}
    seed = RNG.normal(size=values["y"].shape)
    out = engine.relevance(values, RuleSet("epsilon", epsilon=1e-9), seed=seed)
    total = out.relevance["x"].reshape(2, -1).sum(axis=1) + out.relevance["h0"].sum(axis=(0, 2))
    if "c0" in out.relevance:
        total += out.relevance["c0"].sum(axis=(0, 2))
    np.testing.assert_allclose(total + out.absorbed_bias, seed.sum(axis=1), rtol=1e-6, atol=1e-9)


def test_recurrent_forward_is_checked_against_onnxruntime() -> None:
    """The numpy recomputation must reproduce onnxruntime's Y, or the engine says so."""
    model, feed = _recurrent_case("lstm_forward")
    engine = BackwardEngine(model, ScoreTarget("y", head=None))
    values = engine.forward(feed)
    values["Y"] = values["Y"] + 1.0  # as if onnxruntime ran a variant the engine does not know
    with pytest.raises(UnsupportedOpError, match="differs from onnxruntime"):
        engine.gradient(values, np.ones_like(values["y"]))


def _if_squeeze() -> onnx.ModelProto:
    """A traced squeeze: If(shape[1] == 1) then Squeeze(t, 1) else Identity(t), t from the outer graph."""
    then = helper.make_graph([node("Constant", [], "ax", value=numpy_helper.from_array(np.array([1], np.int64))),
                              node("Squeeze", ["t", "ax"], "s")], "then", [],
                             [helper.make_tensor_value_info("s", TensorProto.FLOAT, None)])
    other = helper.make_graph([node("Identity", ["t"], "i")], "else", [],
                              [helper.make_tensor_value_info("i", TensorProto.FLOAT, None)])
    nodes = [node("Gemm", ["x", "W"], "g"), node("Unsqueeze", ["g", "one"], "t"),
             node("Shape", ["t"], "sh"), node("Gather", ["sh", "one_s"], "d"), node("Equal", ["d", "one_s"], "c"),
             helper.make_node("If", ["c"], ["picked"], then_branch=then, else_branch=other),
             node("Tanh", ["picked"])]
    return graph(nodes, {"x": (2, 4)}, {"W": f32(4, 3), "one": np.array([1], np.int64),
                                         "one_s": np.array(1, np.int64)}, opset=14)


CASES = {
    "max_min_clamp": (graph([node("Max", ["x", "t", "lo"], "m"), node("Min", ["m", "hi"])],
                            {"x": (3, 5), "t": (3, 5)}, {"lo": np.float32(-0.5), "hi": np.float32(0.7)}),
                      {"x": f32(3, 5), "t": f32(3, 5)}),
    "erf_atan_abs_reciprocal": (graph([node("Erf", ["x"], "e"), node("Atan", ["e"], "a"), node("Abs", ["a"], "b"),
                                       node("Add", ["b", "one"], "c"), node("Reciprocal", ["c"])],
                                      {"x": (3, 4)}, {"one": np.float32(1.0)}),
                                {"x": f32(3, 4)}),
    "gather_nd": (graph([node("GatherND", ["x", "idx"])], {"x": (2, 4, 3)},
                        {"idx": np.array([[0, 1], [1, 3], [0, 1]], np.int64)}),
                  {"x": f32(2, 4, 3)}),
    "gather_nd_batch_dims": (graph([node("GatherND", ["x", "bidx"], batch_dims=1)], {"x": (2, 4, 3)},
                                   {"bidx": np.array([[[2], [0]], [[1], [1]]], np.int64)}),
                             {"x": f32(2, 4, 3)}),
    "scatter_nd": (graph([node("Mul", ["x", "two"], "m"), node("ReduceSum", ["m", "ax"], "u", keepdims=0),
                          node("ScatterND", ["x", "idx", "u"])],
                         {"x": (2, 4)}, {"idx": np.array([[0, 1], [1, 3]], np.int64),
                                         "two": np.float32(2.0), "ax": np.array([1], np.int64)}),
                   {"x": f32(2, 4)}),
    "trilu": (graph([node("Trilu", ["x", "k"], upper=0)], {"x": (2, 4, 4)}, {"k": np.array(1, np.int64)}, opset=14),
              {"x": f32(2, 4, 4)}),
    "if_traced_squeeze": (_if_squeeze(), {"x": f32(2, 4)}),
}


def test_scatter_nd_case_scatters() -> None:
    """(The scatter case writes two of x's entries from the updates, so both paths are checked.)"""
    model, feed = CASES["scatter_nd"]
    y = ort.InferenceSession(model.SerializeToString()).run(["y"], feed)[0]
    assert not np.array_equal(y, feed["x"])


@pytest.mark.parametrize("case", sorted(CASES))
def test_gradient_matches_finite_differences(case: str) -> None:
    model, feed = CASES[case]
    # h = 1e-3: onnx's reference evaluator computes some ops (Erf) to float32 precision only
    check_gradient(model, feed, h=1e-3, use_ort=case in ("if_traced_squeeze", "erf_atan_abs_reciprocal"))


def test_if_that_computes_is_refused_by_name() -> None:
    then = helper.make_graph([node("Relu", ["t"], "s")], "then", [],
                             [helper.make_tensor_value_info("s", TensorProto.FLOAT, None)])
    other = helper.make_graph([node("Identity", ["t"], "i")], "else", [],
                              [helper.make_tensor_value_info("i", TensorProto.FLOAT, None)])
    model = graph([node("Gemm", ["x", "W"], "t"), node("ReduceSum", ["t"], "c0", keepdims=0),
                   node("Greater", ["c0", "zero"], "c"),
                   helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other, name="branchy")],
                  {"x": (2, 4)}, {"W": f32(4, 3), "zero": np.float32(0.0)}, opset=14)
    engine = BackwardEngine(model, ScoreTarget("y", head=None))
    values = engine.forward({"x": f32(2, 4)})
    with pytest.raises(UnsupportedOpError, match=r"'branchy' \(If\)"):
        engine.gradient(values, np.ones_like(values["y"]))


def _transformer_block() -> onnx.ModelProto:
    """x (N, P, D): one attention head with a residual, decomposed LayerNorm, a GELU MLP, mean pool."""
    d = 4
    inits = {k: f32(d, d, scale=0.5) for k in ("Wq", "Wk", "Wv", "W1", "W2")}
    inits |= {"scale": np.float32(0.5), "two": np.float32(2.0), "eps": np.float32(1e-5), "half": np.float32(0.5),
              "one": np.float32(1.0), "rt2": np.float32(np.sqrt(2.0)), "ax": np.array([-1], np.int64),
              "ax1": np.array([1], np.int64), "gamma": f32(d), "beta": f32(d, scale=0.1), "b1": f32(d, scale=0.1)}
    nodes = [
        node("MatMul", ["x", "Wq"], "q"), node("MatMul", ["x", "Wk"], "k"), node("MatMul", ["x", "Wv"], "v"),
        node("Transpose", ["k"], "kt", perm=[0, 2, 1]), node("MatMul", ["q", "kt"], "qk"),
        node("Mul", ["qk", "scale"], "logits"), node("Softmax", ["logits"], "att", axis=-1),
        node("MatMul", ["att", "v"], "ctx"), node("Add", ["x", "ctx"], "res"),
        node("ReduceMean", ["res", "ax"], "mu"), node("Sub", ["res", "mu"], "cen"),
        node("Pow", ["cen", "two"], "sq"), node("ReduceMean", ["sq", "ax"], "var"),
        node("Add", ["var", "eps"], "var_e"), node("Sqrt", ["var_e"], "sd"), node("Div", ["cen", "sd"], "nrm"),
        node("Mul", ["nrm", "gamma"], "nrm_g"), node("Add", ["nrm_g", "beta"], "ln"),
        node("MatMul", ["ln", "W1"], "h1"), node("Add", ["h1", "b1"], "h1b"),
        node("Div", ["h1b", "rt2"], "h1s"), node("Erf", ["h1s"], "erf"), node("Add", ["erf", "one"], "erf1"),
        node("Mul", ["h1b", "erf1"], "gx"), node("Mul", ["gx", "half"], "gelu"),
        node("MatMul", ["gelu", "W2"], "h2"), node("ReduceMean", ["h2", "ax1"], "y", keepdims=0),
    ]
    return graph(nodes, {"x": (2, 5, d)}, inits, opset=18)


def test_transformer_block_gradient_matches_finite_differences() -> None:
    # onnx's reference Erf is float32-precise: a step of 1e-3 and a tolerance to match
    check_gradient(_transformer_block(), {"x": f32(2, 5, 4)}, h=1e-3, rtol=3e-3)


def test_transformer_block_lrp_conserves_relevance() -> None:
    """Softmax as a gate, σ of LayerNorm held fixed, GELU's erf as a gate: nothing is lost."""
    engine = BackwardEngine(_transformer_block(), ScoreTarget("y", head=None), dtype=np.float64)
    values = {k: np.asarray(v, np.float64) for k, v in engine.forward({"x": f32(2, 5, 4)}).items()}
    seed = RNG.normal(size=values["y"].shape)
    out = engine.relevance(values, RuleSet("epsilon", epsilon=1e-12), seed=seed)
    total = out.relevance["x"].reshape(2, -1).sum(axis=1)
    np.testing.assert_allclose(total + out.absorbed_bias, seed.sum(axis=1), rtol=1e-6, atol=1e-9)
