"""``hepaudit diff``: an audit against itself changes nothing; a model with one input's weights
zeroed is named by that input and fails CI with --fail-on-change."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hepaudit.diff import diff_reports

sys.path.insert(0, str(Path(__file__).parent))
from builders import mlp_model, save, toml_dumps, train_mlp, write_features  # noqa: E402

FEATURES = 4


def hepaudit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hepaudit", *args], capture_output=True, text=True)


@pytest.fixture(scope="module")
def audits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Reports of a trained MLP (v1) and of the same MLP with input f0's first-layer weights zeroed (v2)."""
    folder = tmp_path_factory.mktemp("diff")
    rng = np.random.default_rng(2)
    n = 3000
    labels = (np.arange(n) % 2).astype(np.int32)
    x = (rng.normal(size=(n, FEATURES)) + np.array([1.3, 0.9, 0.5, 0.2]) * labels[:, None]).astype(np.float32)
    weights = train_mlp(x, labels, [8], seed=3, epochs=200)
    save(mlp_model(weights), folder / "v1.onnx")
    zeroed = [(w.copy(), b.copy()) for w, b in weights]
    zeroed[0][0][0, :] = 0.0  # (in, out): input f0 reaches no hidden unit
    save(mlp_model(zeroed), folder / "v2.onnx")
    write_features(folder / "jets.root", x, labels)
    for version in ("v1", "v2"):
        doc = {"model": {"path": f"{version}.onnx"},
               "data": {"files": ["jets.root"], "tree": "jets", "label": "is_signal"},
               "inputs": [{"name": "x", "kind": "jet", "branches": [f"f{k}" for k in range(FEATURES)]}],
               "execution": {"progress": False}}
        text = toml_dumps(doc) + toml_dumps({"explainers.dauc": {}}) + toml_dumps({"explainers.mad": {}})
        (folder / f"{version}.toml").write_text(text)
        done = hepaudit("audit", str(folder / f"{version}.toml"), "--out", str(folder / version), "-q")
        assert done.returncode == 0, done.stderr
    return folder


def test_an_audit_against_itself_changes_nothing(audits: Path) -> None:
    done = hepaudit("diff", str(audits / "v1"), str(audits / "v1" / "report.json"), "--out", str(audits / "self"),
                    "--fail-on-change")
    assert done.returncode == 0, done.stderr
    doc = json.loads((audits / "self" / "diff.json").read_text())
    assert doc["changed"] is False and doc["changes"] == []
    assert doc["baseline_auc"]["delta"] == 0.0 and doc["baseline_auc"]["significant"] is False
    for name in ("dauc", "mad"):
        assert doc["explainers"][name]["kendall_tau"] == pytest.approx(1.0)
        assert doc["explainers"][name]["changed"] == [] and doc["explainers"][name]["intervals"] is True
    assert doc["same_data"] is True and doc["same_model"] is True
    assert "no change beyond the intervals" in done.stderr


def test_zeroed_input_is_named_and_fails_ci(audits: Path) -> None:
    done = hepaudit("diff", str(audits / "v1"), str(audits / "v2"), "--out", str(audits / "v1v2"),
                    "--fail-on-change")
    assert done.returncode == 1, done.stderr
    doc = json.loads((audits / "v1v2" / "diff.json").read_text())
    assert doc["changed"] is True and doc["same_data"] is True and doc["same_model"] is False
    for name in ("dauc", "mad"):
        changed = doc["explainers"][name]["changed"]
        assert changed and changed[0]["feature"] == "f0", (name, changed)  # the largest move is the zeroed input
        assert changed[0]["b"] == pytest.approx(0.0, abs=1e-6)  # occluding an unused input changes nothing
    auc = doc["baseline_auc"]
    assert auc["significant"] is True and auc["delta"] < 0
    assert "f0" in done.stderr
    # without --fail-on-change the same diff exits 0
    assert hepaudit("diff", str(audits / "v1"), str(audits / "v2"), "--out", str(audits / "v1v2b")).returncode == 0


def test_diff_html_is_self_contained_with_figures(audits: Path) -> None:
    hepaudit("diff", str(audits / "v1"), str(audits / "v2"), "--out", str(audits / "page"))
    html = (audits / "page" / "diff.html").read_text()
    assert len(re.findall(r'src="data:image/png;base64,', html)) == 3  # rejection + one figure per explainer
    assert not re.search(r'(src|href)="(https?:)?//', html)
    assert "Changed beyond the intervals" in html and "f0" in html


def test_bad_usage_exits_2(audits: Path, tmp_path: Path) -> None:
    done = hepaudit("diff", str(audits / "v1"), str(tmp_path / "missing"))
    assert done.returncode == 2 and "no report.json" in done.stderr
    (tmp_path / "report.json").write_text('{"not": "a report"}')
    done = hepaudit("diff", str(audits / "v1"), str(tmp_path))
    assert done.returncode == 2 and "not a hepaudit report.json" in done.stderr
    assert hepaudit("diff", str(audits / "v1")).returncode == 2  # click: missing argument


def test_features_only_in_one_audit_are_listed_not_compared() -> None:
    def doc(features: dict[str, float], auc: float) -> dict[str, object]:
        ranking = [{"feature": f, "score": s, "score_ci95": [s - 0.01, s + 0.01]} for f, s in features.items()]
        return {"schema_version": 1, "data": {"n_jets": 10, "files": []}, "model": {"sha256": "x"},
                "sections": {"performance": {"auc": auc, "auc_ci95": [auc - 0.01, auc + 0.01]}},
                "explainers": {"dauc": {"status": "ok", "feature_importance": ranking}}}

    # the expert-variable study: the same tagger with and without an extra input (tau32)
    out = diff_reports(doc({"pt": 0.2, "mass": 0.1}, 0.90), doc({"pt": 0.2, "mass": 0.05, "tau32": 0.15}, 0.93))
    ranking = out["explainers"]["dauc"]
    assert ranking["only_in_b"] == ["tau32"] and ranking["only_in_a"] == []
    assert [c["feature"] for c in ranking["changed"]] == ["mass"]
    assert out["baseline_auc"]["significant"] is True  # 0.03 > √2 · 0.01
