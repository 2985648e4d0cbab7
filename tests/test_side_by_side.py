"""Taggers side by side in one ONNX graph (hepaudit.model.side_by_side): each member's scores
are, bit for bit, the ones its own session gives; members that cannot share a graph are left
to run one by one, and the ensemble explainer still gives the numpy numbers then."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

sys.path.insert(0, str(Path(__file__).resolve().parent))
from builders import dense_weights, mlp_model, save  # noqa: E402

from hepaudit.config import ClassSumScore, ModelConfig  # noqa: E402
from hepaudit.model.graph import describe_model, load_model  # noqa: E402
from hepaudit.model.session import Tagger  # noqa: E402
from hepaudit.model.side_by_side import fuse, side_by_side  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
ENSEMBLE = [REPO / "examples" / "models" / "ensemble" / f"topodnn_seed{i}.onnx" for i in range(1, 6)]


def own_scores(members: list[Tagger], x: np.ndarray) -> np.ndarray:
    return np.stack([m.run({"x": x}, extra=False).score for m in members])


def fused_scores(members: list[Tagger], x: np.ndarray) -> np.ndarray:
    together = side_by_side(members)
    assert together is not None
    out = np.full((len(members), len(x)), np.nan)
    together.scores({"x": x}, out)
    return out


def test_members_of_every_style_and_score_keep_their_own_scores(tmp_path: Path) -> None:
    """Gemm and MatMul graphs, Sigmoid and Softmax heads, a column and a class sum, and a
    graph whose tensor names all collide with the others': the same scores bit for bit."""
    k = 7
    x = np.random.default_rng(0).normal(size=(333, k)).astype(np.float32)
    specs = [
        ("gemm", "sigmoid", [k, 16, 1], {}),
        ("matmul", "sigmoid", [k, 12, 8, 1], {}),
        ("gemm", "softmax", [k, 10, 3], {"score": 2}),
        ("matmul", "softmax", [k, 9, 4], {"score": ClassSumScore(signal=(0, 1), background=(3,))}),
    ]
    members = []
    for i, (style, head, sizes, score) in enumerate(specs):
        path = save(mlp_model(dense_weights(sizes, seed=i), style=style, head=head), tmp_path / f"m{i}.onnx")
        members.append(Tagger(ModelConfig(path=str(path), threads=1, **score)))
    own = own_scores(members, x)
    np.testing.assert_array_equal(fused_scores(members, x), own)
    assert not np.allclose(own[0], own[1])  # different members, different scores
    # the softmax class sum is the members' own: (p0 + p1) / (p0 + p1 + p3)
    assert np.all((own[3] > 0) & (own[3] < 1))


@pytest.mark.skipif(not all(p.exists() for p in ENSEMBLE), reason="examples/models/ensemble absent")
def test_the_example_ensemble_fused_gives_each_members_scores() -> None:
    members = [Tagger(ModelConfig(path=str(p), threads=1)) for p in ENSEMBLE]
    x = np.random.default_rng(1).normal(size=(1000, 90)).astype(np.float32)
    np.testing.assert_array_equal(fused_scores(members, x), own_scores(members, x))


def test_initializers_listed_as_inputs_stay_each_members_own(tmp_path: Path) -> None:
    """IR 3 graphs list their weights among the inputs, under the same names in both members:
    each member must keep its own weights."""
    x = np.random.default_rng(2).normal(size=(50, 5)).astype(np.float32)
    members = []
    for i in range(2):
        model = mlp_model(dense_weights([5, 6, 1], seed=10 + i))
        for init in model.graph.initializer:
            model.graph.input.append(helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
        model.ir_version = 3
        members.append(Tagger(ModelConfig(path=str(save(model, tmp_path / f"ir3_{i}.onnx")), threads=1)))
    np.testing.assert_array_equal(fused_scores(members, x), own_scores(members, x))


def test_members_on_different_opsets_are_not_fused(tmp_path: Path) -> None:
    models = [mlp_model(dense_weights([5, 4, 1], seed=s)) for s in (1, 2)]
    models[1].opset_import[0].version = 17
    assert fuse(models, [["score"], ["score"]]) is None
    members = [Tagger(ModelConfig(path=str(save(m, tmp_path / f"o{i}.onnx")), threads=1))
               for i, m in enumerate(models)]
    assert side_by_side(members) is None
    # the same opset: fused, and the fused graph is a valid ONNX model
    same = fuse([models[0], mlp_model(dense_weights([5, 4, 1], seed=3))], [["score"], ["score"]])
    assert same is not None
    onnx.checker.check_model(same)
    assert [o.name for o in same.graph.output] == ["hepaudit_member0/score", "hepaudit_member1/score"]
    assert [i.name for i in same.graph.input] == ["x"]


EXTERNAL = REPO.parent / "shared" / "external-models"


def _external_models() -> list[Path]:
    return sorted(EXTERNAL.glob("*/*.onnx")) if EXTERNAL.is_dir() else []


@pytest.mark.skipif(not _external_models(), reason="../shared/external-models absent")
@pytest.mark.parametrize("path", _external_models(), ids=lambda p: p.parent.name + "/" + p.name)
def test_a_real_tagger_beside_itself_scores_as_alone(path: Path) -> None:
    """Two members from one collaboration tagger's file (the same names in both, every op its
    graph has): side by side, each gives the tagger's own scores bit for bit; a fixed batch
    is not fused."""
    output = describe_model(load_model(path), path).outputs[0]
    columns = output.shape[-1] if len(output.shape) >= 2 else None
    config = ModelConfig(path=str(path), threads=1, score=0 if columns not in (None, 1) else None)
    members = [Tagger(config), Tagger(config)]
    if members[0].fixed_batch:
        assert side_by_side(members) is None
        return
    rng = np.random.default_rng(3)
    inputs = {}
    for info in members[0].info.inputs:
        shape = [7] + [d if isinstance(d, int) else 32 for d in info.shape[1:]]  # 32: above k of a k-NN
        inputs[info.name] = rng.normal(size=shape).astype(np.float32 if "float" in info.dtype else np.int64)
    own = np.stack([m.run(inputs, extra=False).score for m in members])
    together = side_by_side(members)
    assert together is not None
    out = np.full_like(own, np.nan)
    together.scores(inputs, out)
    np.testing.assert_array_equal(out, own)
