"""The LIME plugin distribution (plugins/hepaudit-lime), installed as a package and run for real.

It is written against hepaudit.api alone; here it is listed by the real CLI, audited through
it, checked whole against split-and-merged, and its surrogates checked against a case solved
by hand: for a tagger whose logit is linear, w·x + b, the surrogate of every jet is that
plane, so β_k = w_k σ_k (σ_k the feature's standard deviation) with R² = 1.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import uproot
from onnx import numpy_helper

sys.path.insert(0, str(Path(__file__).parent))

from conftest import run_cli  # noqa: E402

import hepaudit  # noqa: E402
from hepaudit.testing import check_explainer, tiny_audit, tiny_mlp  # noqa: E402

pytest.importorskip("hepaudit_lime", reason="install ./plugins/hepaudit-lime (the README's test command does)")


@pytest.fixture(scope="module")
def linear(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny audit whose model is one Gemm and a Sigmoid: the logit is linear in the features."""
    folder = tmp_path_factory.mktemp("lime")
    config = tiny_audit(folder, {"lime": {"jets": 8, "samples": 300}}, n=400, features=5)
    tiny_mlp(folder / "model.onnx", n_inputs=5, hidden=(), seed=9)
    return config


def test_lime_listed_by_the_cli() -> None:
    out = run_cli("plugins", "--json")
    assert out.returncode == 0, out.stderr
    plugins = {p["name"]: p for p in json.loads(out.stdout)}
    assert plugins["lime"]["explainers"] == ["lime"] and plugins["lime"]["version"] == "0.1.0"


def test_lime_recovers_a_linear_logit(linear: Path) -> None:
    report = hepaudit.audit(linear, out=None)
    result = report.explainers["lime"]
    assert result.status == "ok", result.error
    weights = numpy_helper.to_array(onnx.load(linear.parent / "model.onnx").graph.initializer[0])[0]
    with uproot.open(linear.parent / "jets.root") as handle:
        x = np.stack([handle["jets"][f"f{k}"].array(library="np") for k in range(5)], axis=1).astype(np.float64)
    expected = np.abs(weights * x.std(axis=0))
    got = {s.feature: s.score for s in result.feature_importance}
    np.testing.assert_allclose([got[f"f{k}"] for k in range(5)], expected, rtol=1e-4)
    assert result.fields["fidelity_r2_mean"] == pytest.approx(1.0, abs=1e-6)
    tree = result.trees["lime"]
    assert len(tree["entry"]) == 16 and np.all(np.diff(tree["entry"]) > 0)


def test_lime_sparse_surrogate_keeps_the_largest_coefficients(linear: Path) -> None:
    report = hepaudit.audit(linear, out=None, explainers=["lime"], seed=1)
    dense = {s.feature: s.score for s in report.explainers["lime"].feature_importance}
    doc = linear.read_text().replace("[explainers.lime]", "[explainers.lime]\nmax_features = 2")
    sparse_cfg = linear.parent / "sparse.toml"
    sparse_cfg.write_text(doc)
    sparse = hepaudit.audit(sparse_cfg, out=None, explainers=["lime"], seed=1).explainers["lime"]
    top2 = sorted(dense, key=lambda f: -dense[f])[:2]
    assert {s.feature for s in sparse.feature_importance if s.score > 0} == set(top2)
    tree = sparse.trees["lime"]
    nonzero = np.stack([tree[f"lime_f{k}"] for k in range(5)], axis=1) != 0
    assert (nonzero.sum(axis=1) == 2).all()


def test_lime_merges_exactly(linear: Path) -> None:
    runs = check_explainer(linear, "lime")
    assert runs.results["tree"].fields["jets_explained"] == 16


def test_lime_through_the_cli(linear: Path, tmp_path: Path) -> None:
    out = run_cli("audit", linear, "--out", tmp_path / "report", "-q")
    assert out.returncode == 0, out.stderr
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["explainers"]["lime"]["plugin"] == {"name": "lime", "version": "0.1.0"}
    figures = {p.name for p in (tmp_path / "report" / "figures").iterdir()}
    assert {"lime_coefficients.png", "lime_fidelity.png"} <= figures
    with uproot.open(tmp_path / "report" / "per_jet.root") as handle:
        assert handle["lime"].num_entries == 16
