"""Guards against configs that ran "ok" while wrong: each fires on the wrong config, stays quiet
on the right one, and reaches the findings at the top of the report."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import hepaudit
from hepaudit.errors import ConfigError, DataError

sys.path.insert(0, str(Path(__file__).parent))
from builders import mlp_model, save, toml_dumps, train_mlp, write_features  # noqa: E402

N_FEATURES = 4


def sample(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % 2).astype(np.int32)
    x = rng.normal(size=(n, N_FEATURES)) + np.array([1.2, 0.8, 0.4, 0.0]) * labels[:, None]
    return x, labels


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained MLP and jets: ``jets.root`` as trained, ``scaled.root`` with inputs ×1000 (other
    units), ``shuffled.root`` with labels unrelated to the jets, ``sig.root``/``bkg.root`` one class each."""
    out = tmp_path_factory.mktemp("guards")
    x, labels = sample(2000, 0)
    save(mlp_model(train_mlp(x.astype(np.float32), labels, [8], seed=0, epochs=200)), out / "model.onnx")
    write_features(out / "jets.root", x, labels)
    write_features(out / "scaled.root", 1000 * x, labels)
    write_features(out / "shuffled.root", x, np.random.default_rng(5).permutation(labels))
    write_features(out / "sig.root", x[labels == 1], labels[labels == 1])
    write_features(out / "bkg.root", x[labels == 0], labels[labels == 0])
    return out


def config(folder: Path, files: list[str], explainers: dict[str, dict[str, object]] | None = None,
           name: str = "audit.toml") -> Path:
    doc = {"model": {"path": "model.onnx"},
           "data": {"files": files, "tree": "jets", "label": "is_signal"},
           "inputs": [{"name": "x", "kind": "jet", "branches": [f"f{k}" for k in range(N_FEATURES)]}],
           "execution": {"progress": False}}
    text = toml_dumps(doc)
    for explainer, options in (explainers or {"dauc": {}}).items():
        text += toml_dumps({f"explainers.{explainer}": options})
    path = folder / name
    path.write_text(text)
    return path


def levels(report: hepaudit.AuditReport, kind: str) -> list[str]:
    return [f.level for f in report.findings if f.kind == kind]


def test_the_right_config_is_quiet(folder: Path) -> None:
    report = hepaudit.audit(config(folder, ["jets.root"]), out=None)
    assert "alert" not in [f.level for f in report.findings]
    assert not any("first layer" in w or "constant within" in w or "separate" in w for w in report.warnings)
    first = report.findings[0]
    assert first.kind == "performance" and first.text.startswith("The tagger separates these jets: AUC")
    low, high = first.numbers["auc_ci95"]
    assert low < first.numbers["auc"] < high and high - low < 0.1


def test_same_file_twice_is_refused_by_path_and_as_a_copy(folder: Path) -> None:
    with pytest.raises(ConfigError, match="the same file is listed twice"):
        hepaudit.audit(config(folder, ["jets.root", "./jets.root"]), out=None)
    shutil.copy(folder / "jets.root", folder / "copy.root")
    with pytest.raises(DataError, match="same ROOT file as .*jets.root"):
        hepaudit.audit(config(folder, ["jets.root", "copy.root"]), out=None)
    done = subprocess.run([sys.executable, "-m", "hepaudit", "audit", str(config(folder, ["jets.root", "jets.root"])),
                           "--out", str(folder / "never")], capture_output=True, text=True)
    assert done.returncode == 2 and "listed twice" in done.stderr
    assert not (folder / "never").exists()


def test_auc_compatible_with_chance_is_an_alert_with_causes(folder: Path) -> None:
    report = hepaudit.audit(config(folder, ["shuffled.root"]), out=folder / "chance", force=True)
    first = report.findings[0]
    assert first.level == "alert" and first.kind == "performance"
    low, high = first.numbers["auc_ci95"]
    assert low <= 0.5 <= high
    assert "does not separate" in first.text and "preprocess" in first.text and "model.score" in first.text
    doc = json.loads((folder / "chance" / "report.json").read_text())
    assert doc["findings"][0]["level"] == "alert" and doc["findings"][0]["numbers"]["auc_ci95"] == [low, high]
    html = (folder / "chance" / "report.html").read_text()
    assert html.index('id="findings"') < html.index('id="summary"') and "does not separate" in html


def test_inputs_on_another_scale_than_the_first_layer_expects(folder: Path) -> None:
    report = hepaudit.audit(config(folder, ["scaled.root"]), out=None)
    alerts = [f for f in report.findings if f.kind == "config" and f.level == "alert"]
    assert len(alerts) == 1 and "first layer" in alerts[0].text and "preprocess" in alerts[0].text
    assert "'f0'" in alerts[0].text  # the feature adding most, named


def test_label_constant_within_every_file(folder: Path) -> None:
    report = hepaudit.audit(config(folder, ["sig.root", "bkg.root"]), out=None)
    notes = [f for f in report.findings if f.kind == "config"]
    assert len(notes) == 1 and notes[0].level == "warning"
    assert "constant within every file" in notes[0].text and "sig.root: signal" in notes[0].text
    quiet = hepaudit.audit(config(folder, ["jets.root", "shuffled.root"]), out=None)
    assert not [f for f in quiet.findings if f.kind == "config"]


def test_cli_summary_opens_with_the_findings_and_prints_warnings_whole(folder: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "hepaudit", "audit", str(config(folder, ["shuffled.root"])),
                           "--out", str(folder / "cli"), "--force"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    text = done.stderr
    assert "findings:" in text and "ALERT" in text and "does not separate" in text
    assert text.index("ALERT") < text.index("report:")
