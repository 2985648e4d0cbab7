"""The sanity check (model-parameter randomisation, Adebayo et al.) on a small trained MLP.

An explanation of what the network learnt (LRP, gradients, ΔAUC) must change once the weights
are randomised; one computed from the inputs alone (a test-only explainer ranking features by
mean |x|) cannot, and the check must say so.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

import hepaudit
from hepaudit.explainers.base import Explainer
from hepaudit.model.randomise import block_name, cascade, randomised, weight_layers
from hepaudit.plugins import hookimpl
from hepaudit.results import FeatureScore, sorted_scores

sys.path.insert(0, str(Path(__file__).parent))
from builders import dense_weights, mlp_model, save, toml_dumps, train_mlp, write_features  # noqa: E402

SHIFTS = np.array([1.5, 1.2, 0.9, 0.6, 0.3, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])


class AbsX(Explainer[np.ndarray]):
    """Ranks features by mean |x| over the jets: depends on the inputs only, never on the model."""

    name = "absx"
    attribution = True

    def start(self) -> np.ndarray:
        return np.zeros(len(self.context.features) + 1)

    def update(self, state: np.ndarray, chunk):  # type: ignore[no-untyped-def]
        x = chunk.inputs["x"]
        return state + np.r_[np.abs(x).sum(axis=0), len(x)]

    def merge(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return a + b

    def finish(self, state: np.ndarray):  # type: ignore[no-untyped-def]
        mean = state[:-1] / state[-1]
        return self.result(feature_importance=sorted_scores(
            [FeatureScore(f, float(v)) for f, v in zip(self.context.features, mean)]))


ABSX_PLUGIN = SimpleNamespace(hepaudit_register_explainers=hookimpl(lambda register: register(AbsX)))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 features of different widths, five of which separate the classes; an MLP trained on them."""
    folder = tmp_path_factory.mktemp("sanity")
    rng = np.random.default_rng(3)
    n = 3000
    labels = (np.arange(n) % 2).astype(np.int32)
    widths = np.linspace(0.5, 2.0, len(SHIFTS))  # |x| ranks the features by width, not by use
    x = (rng.normal(size=(n, len(SHIFTS))) * widths + SHIFTS * labels[:, None]).astype(np.float32)
    save(mlp_model(train_mlp(x, labels, [16, 8], seed=1)), folder / "model.onnx")
    write_features(folder / "jets.root", x, labels)
    return folder


def config(folder: Path, explainers: dict[str, dict[str, object]]) -> Path:
    doc = {"model": {"path": "model.onnx"},
           "data": {"files": ["jets.root"], "tree": "jets", "label": "is_signal"},
           "inputs": [{"name": "x", "kind": "jet", "branches": [f"f{k}" for k in range(len(SHIFTS))]}],
           "execution": {"progress": False, "bootstrap": 16},
           "explainers": {}}
    path = folder / "audit.toml"
    text = toml_dumps({k: v for k, v in doc.items() if k != "explainers"})
    for name, options in explainers.items():
        text += toml_dumps({f"explainers.{name}": options})
    path.write_text(text)
    return path


def test_weight_layers_top_first_with_biases_and_matmul_add() -> None:
    weights = dense_weights([4, 6, 3, 1], seed=2)
    for style in ("gemm", "matmul"):
        layers = weight_layers(mlp_model(weights, style=style))
        assert [layer.parameters for layer in layers] == [("W2", "b2"), ("W1", "b1"), ("W0", "b0")]
        assert [layer.size for layer in layers] == [3 + 1, 6 * 3 + 3, 4 * 6 + 6]
        assert {layer.op for layer in layers} == {"Gemm" if style == "gemm" else "MatMul"}


def test_randomised_redraws_only_the_chosen_layers_from_their_own_values() -> None:
    model = mlp_model(dense_weights([5, 7, 1], seed=4))
    layers = weight_layers(model)
    out = randomised(model, [layers[0]], seed=11)
    before = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    after = {t.name: numpy_helper.to_array(t) for t in out.graph.initializer}
    assert np.array_equal(before["W0"], after["W0"]) and np.array_equal(before["b0"], after["b0"])
    assert not np.array_equal(before["W1"], after["W1"])
    assert after["W1"].shape == before["W1"].shape and after["W1"].dtype == before["W1"].dtype
    assert set(after["W1"].ravel()) <= set(before["W1"].ravel())  # drawn from the layer's own values
    again = {t.name: numpy_helper.to_array(t) for t in randomised(model, layers, seed=11).graph.initializer}
    assert np.array_equal(again["W1"], after["W1"])  # the same draw alone or in a cascade
    assert before["W1"].sum() == numpy_helper.to_array(model.graph.initializer[2]).sum()  # original untouched
    x = np.random.default_rng(0).normal(size=(8, 5)).astype(np.float32)
    a = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    b = ort.InferenceSession(out.SerializeToString()).run(None, {"x": x})[0]
    assert not np.allclose(a, b)


def test_cascade_groups_deep_models_into_at_most_steps_blocks() -> None:
    model = mlp_model(dense_weights([3] * 8 + [1], seed=0))
    layers = weight_layers(model)
    blocks = cascade(layers, 3)
    assert len(blocks) == 3 and [layer for b in blocks for layer in b] == layers
    assert block_name(blocks[0]).endswith("(3 layers)")
    assert cascade(layers, 20) == [[layer] for layer in layers]


def test_sanity_on_a_trained_mlp(trained: Path) -> None:
    cfg = config(trained, {"lrp": {"rule": "epsilon"}, "gradient": {}, "dauc": {}, "absx": {},
                           "sanity": {"jets": 800, "independent": True}})
    report = hepaudit.audit(cfg, out=trained / "report", force=True, plugins=[("absx", ABSX_PLUGIN)])
    result = report.explainers["sanity"]
    assert result.status == "ok", result.error
    fields = result.fields
    assert fields["steps"] == [layer.name for layer in weight_layers(onnx.load(trained / "model.onnx"))]
    checked = fields["explainers"]
    assert set(checked) == {"lrp", "gradient", "dauc", "absx"}
    # ΔAUC is not asserted: a random network still separates jets by the shifted inputs, so
    # its occlusion ranking can keep part of the data's own ordering (ρ ≈ 0.5 here)
    assert all(v is not None for v in checked["dauc"]["spearman"])
    for name in ("lrp", "gradient"):
        rho = checked[name]["spearman"]
        assert len(rho) == 3 and rho[-1] < 0.5, (name, rho)
        assert checked[name]["passed"] is True
        low, high = checked[name]["spearman_ci95"][-1]
        assert low <= rho[-1] <= high
    # |x| does not know the model: the same ranking at every step, and the check says so
    assert checked["absx"]["spearman"] == pytest.approx([1.0, 1.0, 1.0])
    assert checked["absx"]["independent_spearman"] == pytest.approx([1.0, 1.0, 1.0])
    assert checked["absx"]["passed"] is False and checked["absx"]["verdict"] == "failed"
    assert checked["lrp"]["verdict"] == "passed" and checked["lrp"]["units_compared"] == [len(SHIFTS)] * 3
    assert [f.kind for f in report.findings if f.level == "alert"] == ["sanity"]  # absx, and only absx
    assert "absx" in next(f.text for f in report.findings if f.level == "alert")
    assert "absx" in result.summary and "lrp" not in result.summary
    assert (trained / "report" / "figures" / "sanity_curves.png").stat().st_size > 10_000


def test_sanity_names_what_it_cannot_check(trained: Path) -> None:
    cfg = config(trained, {"nap": {}, "sanity": {"explainers": ["nap"]}})
    report = hepaudit.audit(cfg, out=None)
    assert report.explainers["sanity"].status == "failed"
    assert "nap: gives no feature ranking" in (report.explainers["sanity"].error or "")
    cfg = config(trained, {"lrp": {}, "sanity": {"explainers": ["shap"]}})
    report = hepaudit.audit(cfg, out=None)
    assert "shap not in this audit" in (report.explainers["sanity"].error or "")


def test_units_zero_in_both_rankings_do_not_count() -> None:
    """Padded constituents get exactly zero LRP relevance with any weights: thousands of such
    ties would pull ρ towards 1. They are left out, and the count compared is reported."""
    from hepaudit.explainers.sanity import Curve, Ranking, verdict

    names = [f"u{k}" for k in range(1003)]
    trained = np.r_[np.zeros(1000), [3.0, 2.0, 1.0]]
    randomised = np.r_[np.zeros(1000), [1.0, 2.0, 3.0]]
    curve = Curve()
    curve.add(Ranking(names, trained), Ranking(names[::-1], randomised[::-1]))
    assert curve.spearman == [pytest.approx(-1.0)] and curve.compared == [3]
    assert verdict(0.47, [0.06, 0.74], 0.5) == "inconclusive"
    assert verdict(0.2, [0.1, 0.3], 0.5) == "passed" and verdict(0.9, [0.8, 0.95], 0.5) == "failed"
    assert verdict(0.9, None, 0.5) == "failed" and verdict(None, None, 0.5) is None


@pytest.mark.slow
def test_sanity_on_dask_equals_the_local_run(trained: Path) -> None:
    """On Dask the check runs in a worker's finish, with that worker's own peers: the same numbers."""
    cfg = config(trained, {"lrp": {}, "dauc": {}, "sanity": {"jets": 300}})
    local = hepaudit.audit(cfg, out=None).explainers["sanity"]
    dask = hepaudit.audit(cfg, out=None, workers=2).explainers["sanity"]
    assert dask.status == "ok", dask.error
    for name in ("lrp", "dauc"):
        ours, theirs = dask.fields["explainers"][name], local.fields["explainers"][name]
        assert ours["spearman"] == pytest.approx(theirs["spearman"])
        np.testing.assert_allclose(ours["spearman_ci95"], theirs["spearman_ci95"], rtol=1e-9)
