"""The backward engine's exact gradients, op by op, against central finite differences.

Each case is a small real ONNX graph (onnx.helper) run by onnxruntime for the forward
values the engine reads. The independent check evaluates the same graph in float64 with
onnx's reference evaluator and takes central differences of Σ r·y along random
directions v: (F(x + h v) − F(x − h v)) / 2h must equal Σ grad·v.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from builders import as_double
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from hepaudit.model.backward import BackwardEngine, ScoreTarget, UnsupportedOpError

RNG = np.random.default_rng(7)


def graph(
    nodes: list[onnx.NodeProto],
    inputs: dict[str, tuple[int, ...]],
    inits: dict[str, np.ndarray] | None = None,
    opset: int = 13,
) -> onnx.ModelProto:
    g = helper.make_graph(
        nodes,
        "op",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", *s[1:]]) for n, s in inputs.items()],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in (inits or {}).items()],
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def f32(*shape: int, scale: float = 1.0) -> np.ndarray:
    return (RNG.normal(size=shape) * scale).astype(np.float32)


def node(op: str, ins: list[str], out: str = "y", **attrs: object) -> onnx.NodeProto:
    return helper.make_node(op, ins, [out], **attrs)


# onnx's reference evaluator disagrees with onnxruntime on these graphs (BatchNormalization's
# epsilon, the opset-11 Softmax that flattens at ``axis``): differentiate onnxruntime itself
# in float32 there, with a larger step (both functions are smooth)
FD_WITH_ONNXRUNTIME = {"batchnorm", "softmax_opset11_3d"}


def check_gradient(
    model: onnx.ModelProto,
    feed: dict[str, np.ndarray],
    h: float = 1e-5,
    rtol: float = 2e-4,
    use_ort: bool = False,
) -> None:
    engine = BackwardEngine(model, ScoreTarget("y", head=None))
    values = engine.forward(feed)
    r = RNG.normal(size=values["y"].shape)
    grads = engine.gradient(values, r)
    x64 = {k: v.astype(np.float64) for k, v in feed.items()}
    if use_ort:
        import onnxruntime as ort

        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        h, rtol = 1e-2, 3e-3

        def total(inputs: dict[str, np.ndarray]) -> float:
            out = session.run(["y"], {k: v.astype(np.float32) for k, v in inputs.items()})[0]
            return float((out.astype(np.float64) * r).sum())
    else:
        ref = ReferenceEvaluator(as_double(model))

        def total(inputs: dict[str, np.ndarray]) -> float:
            return float((np.asarray(ref.run(["y"], inputs)[0], np.float64) * r).sum())

    assert set(grads) == set(feed)
    for _ in range(3):
        v = {k: RNG.normal(size=x.shape) for k, x in feed.items()}
        fd = (total({k: x64[k] + h * v[k] for k in x64}) - total({k: x64[k] - h * v[k] for k in x64})) / (
            2 * h
        )
        analytic = sum(float((grads[k] * v[k]).sum()) for k in feed)
        assert analytic == pytest.approx(fd, rel=rtol, abs=1e-6)


W = f32(5, 4)
CASES: dict[str, tuple[onnx.ModelProto, dict[str, np.ndarray]]] = {
    "gemm": (
        graph(
            [node("Gemm", ["x", "W", "b"], alpha=0.7, beta=1.3, transB=1)],
            {"x": (3, 5)},
            {"W": f32(4, 5), "b": f32(4)},
        ),
        {"x": f32(3, 5)},
    ),
    "matmul_3d": (graph([node("MatMul", ["x", "W"])], {"x": (3, 6, 5)}, {"W": W}), {"x": f32(3, 6, 5)}),
    "matmul_two_tensors": (
        graph([node("MatMul", ["x", "t"])], {"x": (3, 4, 5), "t": (3, 5, 2)}),
        {"x": f32(3, 4, 5), "t": f32(3, 5, 2)},
    ),
    "add_sub_broadcast": (
        graph(
            [node("Add", ["x", "b"], "a"), node("Sub", ["a", "t"])], {"x": (3, 4), "t": (3, 1)}, {"b": f32(4)}
        ),
        {"x": f32(3, 4), "t": f32(3, 1)},
    ),
    "mul_div_const": (
        graph(
            [node("Mul", ["x", "c"], "a"), node("Div", ["a", "d"])],
            {"x": (3, 4)},
            {"c": f32(4), "d": np.float32(1.7) + np.abs(f32(1, 4))},
        ),
        {"x": f32(3, 4)},
    ),
    "mul_div_tensors": (
        graph(
            [node("Mul", ["x", "t"], "a"), node("Div", ["a", "u"])], {"x": (3, 4), "t": (3, 4), "u": (3, 1)}
        ),
        {"x": f32(3, 4), "t": f32(3, 4), "u": 2 + np.abs(f32(3, 1))},
    ),
    "relu_leaky_elu": (
        graph(
            [
                node("Relu", ["x"], "a"),
                node("LeakyRelu", ["x"], "b", alpha=0.2),
                node("Elu", ["x"], "c", alpha=0.9),
                node("Sum", ["a", "b", "c"]),
            ],
            {"x": (4, 6)},
        ),
        {"x": f32(4, 6)},
    ),
    "sigmoid_tanh": (
        graph([node("Sigmoid", ["x"], "a"), node("Tanh", ["a"])], {"x": (4, 6)}),
        {"x": f32(4, 6)},
    ),
    "softmax": (graph([node("Softmax", ["x"], axis=-1)], {"x": (4, 6)}), {"x": f32(4, 6)}),
    "softmax_opset11_3d": (
        graph([node("Softmax", ["x"], axis=1)], {"x": (2, 3, 4)}, opset=11),
        {"x": f32(2, 3, 4)},
    ),
    "clip_identity_dropout_cast": (
        graph(
            [
                node("Clip", ["x", "lo", "hi"], "a"),
                node("Identity", ["a"], "b"),
                node("Dropout", ["b"], "c"),
                node("Cast", ["c"], "y", to=TensorProto.FLOAT),
            ],
            {"x": (4, 6)},
            {"lo": np.float32(-0.5), "hi": np.float32(0.8)},
        ),
        {"x": f32(4, 6)},
    ),
    "conv1d_groups_pad_stride": (
        graph(
            [node("Conv", ["x", "W", "b"], group=2, pads=[1, 2], strides=[2], kernel_shape=[3])],
            {"x": (2, 4, 9)},
            {"W": f32(6, 2, 3), "b": f32(6)},
        ),
        {"x": f32(2, 4, 9)},
    ),
    "conv2d_groups_pad_stride_dilation": (
        graph(
            [node("Conv", ["x", "W"], group=3, pads=[1, 0, 1, 2], strides=[2, 1], dilations=[1, 2])],
            {"x": (2, 3, 7, 8)},
            {"W": f32(6, 1, 3, 2)},
        ),
        {"x": f32(2, 3, 7, 8)},
    ),
    "conv2d_same_upper": (
        graph(
            [node("Conv", ["x", "W"], auto_pad="SAME_UPPER", strides=[2, 2])],
            {"x": (2, 2, 5, 6)},
            {"W": f32(3, 2, 3, 3)},
        ),
        {"x": f32(2, 2, 5, 6)},
    ),
    "batchnorm": (
        graph(
            [node("BatchNormalization", ["x", "s", "bb", "m", "v"], epsilon=1e-3)],
            {"x": (3, 4, 5)},
            {"s": f32(4), "bb": f32(4), "m": f32(4), "v": 0.5 + np.abs(f32(4))},
        ),
        {"x": f32(3, 4, 5)},
    ),
    "maxpool": (
        graph(
            [node("MaxPool", ["x"], kernel_shape=[3, 2], pads=[1, 0, 1, 1], strides=[2, 2])],
            {"x": (2, 3, 7, 6)},
        ),
        {"x": f32(2, 3, 7, 6)},
    ),
    "averagepool": (
        graph(
            [node("AveragePool", ["x"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 1])],
            {"x": (2, 3, 6, 5)},
        ),
        {"x": f32(2, 3, 6, 5)},
    ),
    "averagepool_1d_include_pad": (
        graph(
            [node("AveragePool", ["x"], kernel_shape=[3], pads=[1, 1], count_include_pad=1)], {"x": (2, 3, 8)}
        ),
        {"x": f32(2, 3, 8)},
    ),
    "global_average_pool": (
        graph([node("GlobalAveragePool", ["x"])], {"x": (2, 3, 4, 5)}),
        {"x": f32(2, 3, 4, 5)},
    ),
    "reduce_sum_axes_input": (
        graph(
            [node("ReduceSum", ["x", "ax"], keepdims=0)], {"x": (2, 6, 4)}, {"ax": np.array([1], np.int64)}
        ),
        {"x": f32(2, 6, 4)},
    ),
    "reduce_mean_opset11_attr": (
        graph([node("ReduceMean", ["x"], axes=[1, 2])], {"x": (2, 6, 4)}, opset=11),
        {"x": f32(2, 6, 4)},
    ),
    "reduce_mean_opset18_input": (
        graph(
            [node("ReduceMean", ["x", "ax"], keepdims=0)],
            {"x": (2, 6, 4)},
            {"ax": np.array([-1], np.int64)},
            opset=18,
        ),
        {"x": f32(2, 6, 4)},
    ),
    "deep_set_mask_sum": (
        graph(
            [
                node("MatMul", ["x", "W"], "h"),
                node("Relu", ["h"], "a"),
                node("Mul", ["a", "m"], "am"),
                node("ReduceSum", ["am", "ax"], keepdims=0),
            ],
            {"x": (3, 6, 5), "m": (3, 6, 1)},
            {"W": W, "ax": np.array([1], np.int64)},
        ),
        {"x": f32(3, 6, 5), "m": (RNG.uniform(size=(3, 6, 1)) > 0.4).astype(np.float32)},
    ),
    "flatten_reshape_transpose": (
        graph(
            [
                node("Transpose", ["x"], "t", perm=[0, 2, 1]),
                node("Flatten", ["t"], "f"),
                node("Reshape", ["f", "shape"]),
            ],
            {"x": (2, 3, 4)},
            {"shape": np.array([-1, 2, 6], np.int64)},
        ),
        {"x": f32(2, 3, 4)},
    ),
    "squeeze_unsqueeze": (
        graph(
            [node("Unsqueeze", ["x", "a1"], "u"), node("Squeeze", ["u", "a1"])],
            {"x": (2, 3)},
            {"a1": np.array([2], np.int64)},
        ),
        {"x": f32(2, 3)},
    ),
    "concat_slice_gather": (
        graph(
            [
                node("Concat", ["x", "t", "c"], "k", axis=1),
                node("Slice", ["k", "st", "en", "axs", "stp"], "s"),
                node("Gather", ["s", "idx"], axis=1),
            ],
            {"x": (2, 4), "t": (2, 3)},
            {
                "c": f32(1, 2).repeat(2, 0),
                "st": np.array([1], np.int64),
                "en": np.array([9], np.int64),
                "axs": np.array([1], np.int64),
                "stp": np.array([2], np.int64),
                "idx": np.array([[0, 2], [3, 0]]),
            },
        ),
        {"x": f32(2, 4), "t": f32(2, 3)},
    ),
    "expand_tile_pad_where": (
        graph(
            [
                node("Expand", ["x", "shp"], "e"),
                node("Tile", ["e", "rep"], "t"),
                node("Pad", ["t", "pads"], "p"),
                node("Where", ["cond", "p", "z"]),
            ],
            {"x": (2, 1, 3)},
            {
                "shp": np.array([2, 2, 3], np.int64),
                "rep": np.array([1, 2, 1], np.int64),
                "pads": np.array([0, 1, 0, 0, 0, 1], np.int64),
                "cond": RNG.uniform(size=(1, 5, 4)) > 0.5,
                "z": f32(1, 5, 4),
            },
        ),
        {"x": f32(2, 1, 3)},
    ),
    "shape_subgraph_flatten": (
        graph(
            [
                node("Shape", ["x"], "sh"),
                node("Gather", ["sh", "zero"], "n", axis=0),
                node("Unsqueeze", ["n", "zax"], "n1"),
                node("Concat", ["n1", "minus1"], "target", axis=0),
                node("Reshape", ["x", "target"], "flat"),
                node("Gemm", ["flat", "W"]),
            ],
            {"x": (2, 3, 4)},
            {
                "zero": np.array(0, np.int64),
                "zax": np.array([0], np.int64),
                "minus1": np.array([-1], np.int64),
                "W": f32(12, 2),
            },
        ),
        {"x": f32(2, 3, 4)},
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_gradient_matches_finite_differences(case: str) -> None:
    model, feed = CASES[case]

    check_gradient(model, feed, use_ort=case in FD_WITH_ONNXRUNTIME)


def test_shape_subgraph_is_folded_or_read_not_on_the_path() -> None:
    model, _ = CASES["shape_subgraph_flatten"]
    engine = BackwardEngine(model, ScoreTarget("y", head=None))
    assert engine.path_ops == {"Reshape": 1, "Gemm": 1}
    assert "sh" not in engine.needed and "target" not in engine.needed


def test_unsupported_op_on_the_path_names_node_and_op() -> None:
    model = graph(
        [
            helper.make_node("TopK", ["x", "k"], ["v", "i"], name="knn_topk"),
            node("ReduceSum", ["v", "ax"], keepdims=0),
        ],
        {"x": (2, 5)},
        {"k": np.array([2], np.int64), "ax": np.array([1], np.int64)},
    )
    with pytest.raises(UnsupportedOpError, match=r"'knn_topk' \(TopK\)"):
        BackwardEngine(model, ScoreTarget("y", head=None))


def test_index_only_use_of_topk_is_off_the_path() -> None:
    """TopK whose indices only feed a Gather carries no gradient (piecewise constant)."""
    model = graph(
        [
            helper.make_node("TopK", ["x", "k"], ["v", "i"]),
            node("Gather", ["x", "i"], "g", axis=1),
            node("Squeeze", ["g"]),
        ],
        {"x": (1, 5)},
        {"k": np.array([2], np.int64)},
    )
    engine = BackwardEngine(model, ScoreTarget("y", head=None))
    assert "TopK" not in engine.path_ops and "i" in engine.needed
    x = np.array([[0.1, 3.0, -1.0, 2.0, 0.5]], np.float32)
    grads = engine.gradient(engine.forward({"x": x}), np.array([1.0, 10.0]))
    np.testing.assert_allclose(grads["x"], [[0, 1.0, 0, 10.0, 0]])
